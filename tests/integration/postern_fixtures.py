"""Fixtures for Postern's integration tests: real servers on loopback ports.

Every fixture starts its process in a new session (its own process group) and
stops the whole group when the test ends, passing or failing: use
``Fixture.started(testcase, ...)``, which registers the stop with
``testcase.addCleanup``, or use the fixture as a context manager.

Only addresses in 127.0.0.0/8 are ever used. Standard library only, run by
Debian's /usr/bin/python3.
"""

import base64
import contextlib
import errno
import fcntl
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

LOOPBACK = "127.0.0.1"

# Generous: the suite also runs under AddressSanitizer on two shared cores.
START_TIMEOUT = 20.0


# ---------------------------------------------------------------------------
# Small helpers


def free_port(host=LOOPBACK):
    """A TCP port on host that nothing listened on a moment ago.

    The kernel picks it; there is a small window before the caller binds it,
    which is acceptable for tests (the fixtures fail loudly if it is lost).
    """
    if not _is_loopback(host):
        raise ValueError("tests use 127.0.0.0/8 only, not %r" % (host,))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _is_loopback(host):
    return host.startswith("127.") and host.count(".") == 3


def make_temp_dir(testcase=None, prefix="postern-itest-"):
    """A fresh directory removed when the test ends (or use TempDir)."""
    path = tempfile.mkdtemp(prefix=prefix)
    if testcase is not None:
        testcase.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


class TempDir:
    """Context manager around make_temp_dir()."""

    def __init__(self, prefix="postern-itest-"):
        self.prefix = prefix
        self.path = None

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix=self.prefix)
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)
        return False


def missing_prerequisite(reason):
    """A skip when run by hand; under ctest (POSTERN_REQUIRE_ALL=1) a
    failure, so that a missing package or binary can never turn the suite
    green by skipping what it was meant to test."""
    if os.environ.get("POSTERN_REQUIRE_ALL") == "1":
        return AssertionError("prerequisite missing: " + reason)
    return unittest.SkipTest(reason)


def require_root():
    if os.geteuid() != 0:
        raise missing_prerequisite(
            "needs root: creates the system user postern-test and runs sshd")


def require_tool(path):
    if shutil.which(path) is None:
        raise missing_prerequisite("needs %s (not installed)" % path)
    return shutil.which(path)


def wait_until(predicate, timeout, interval=0.05, message="condition"):
    """Calls predicate until it returns a true value, which is returned.

    Raises AssertionError naming `message` when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                                 % (timeout, message))
        time.sleep(interval)


def port_is_listening(host, port, timeout=1.0):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def stop_process(proc, sig=signal.SIGTERM, timeout=10.0):
    """Sends sig to proc's process group, waits, SIGKILLs the group if it
    outlives timeout. Returns the exit status (negative: killed by signal)."""
    if proc is None:
        return None
    if proc.poll() is None:
        _signal_group(proc, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    # Children the process left behind die with the group either way.
    _signal_group(proc, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout=10)
    return proc.returncode


def process_group_gone(pgid, timeout=5.0):
    """True once no process of group pgid is left (orphans are reaped by
    init a moment after they die)."""
    def gone():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False
    try:
        wait_until(gone, timeout)
        return True
    except AssertionError:
        return False


def _signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def run(argv, timeout=30, check=True, **kw):
    """subprocess.run with captured text output and a timeout."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    proc = subprocess.run(argv, capture_output=True, text=True,
                          timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError("%s exited %d\nstdout: %s\nstderr: %s"
                             % (argv, proc.returncode, proc.stdout, proc.stderr))
    return proc


def _log_tail(path, lines=40):
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------
# Certificates


def pem_to_der(pem_text):
    """DER bytes of the first certificate in a PEM string."""
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                  pem_text, re.S)
    if not m:
        raise ValueError("no PEM certificate found")
    return ssl.PEM_cert_to_DER_cert(m.group(0))


def der_fingerprint(der):
    """Uppercase colon-separated SHA-256, as `openssl x509 -fingerprint
    -sha256` prints it."""
    return ":".join("%02X" % b for b in hashlib.sha256(der).digest())


def cert_file_fingerprint(path):
    with open(path) as f:
        return der_fingerprint(pem_to_der(f.read()))


def make_self_signed_cert(directory, cn="postern-itest.invalid",
                          key_type="ec"):
    """Writes cert.pem and key.pem with the openssl command; returns both
    paths. key_type: "ec" (P-256) or "rsa" (2048 bits)."""
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    if key_type == "ec":
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    else:
        newkey = ["-newkey", "rsa:2048"]
    run(["openssl", "req", "-x509", *newkey, "-nodes", "-days", "2",
         "-subj", "/CN=" + cn, "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", key, "-out", cert])
    os.chmod(key, 0o600)
    return cert, key


def peer_certificate(host, port, timeout=10.0):
    """DER certificate the TLS server at host:port presents."""
    with tls_connect(host, port, timeout=timeout) as s:
        return s.getpeercert(binary_form=True)


# ---------------------------------------------------------------------------
# TLS and HTTP clients


def client_tls_context(alpn=("http/1.1",)):
    """Client context without verification: the test certificate is
    self-signed; tests that care compare fingerprints explicitly."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def tls_connect(host, port, timeout=10.0, alpn=("http/1.1",), context=None):
    """A connected, handshaken TLS socket (caller closes it)."""
    ctx = context or client_tls_context(alpn)
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=None)
    except BaseException:
        raw.close()
        raise


class Response:
    """One HTTP response: status, reason, headers (case-insensitive), body."""

    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers          # list of (name, value)
        self.body = body                # bytes

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def text(self):
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Response %d %s headers=%r body=%r>" % (
            self.status, self.reason, self.headers, self.body[:200])


def https_request(host, port, method, path, headers=None, body=None,
                  timeout=10.0):
    """One request on a fresh TLS connection, via http.client."""
    conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                       context=client_tls_context())
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, r.reason, r.getheaders(), data)
    finally:
        conn.close()


def http_request(host, port, method, path, headers=None, timeout=10.0):
    """One plain-HTTP request (for the redirect listener)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, headers=dict(headers or {}))
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, r.reason, r.getheaders(), data)
    finally:
        conn.close()


class ConnectionClosed(Exception):
    """The peer closed (or reset) before a whole response arrived."""


def read_http_response(sock, deadline, method="GET"):
    """Reads one HTTP/1.x response from sock (plain or TLS) and returns a
    Response. Raises ConnectionClosed if the peer closes first and
    socket.timeout at the deadline."""
    buf = bytearray()

    def more():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline passed reading response")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError) as e:
            raise ConnectionClosed(str(e)) from e
        except ssl.SSLError as e:
            raise ConnectionClosed("TLS error: %s" % e) from e
        if not chunk:
            raise ConnectionClosed("closed after %d bytes: %r"
                                   % (len(buf), bytes(buf[:200])))
        buf.extend(chunk)

    while b"\r\n\r\n" not in buf:
        if len(buf) > 1 << 20:
            raise AssertionError("response head larger than 1 MiB")
        more()
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})(?: (.*))?$", lines[0])
    if not m:
        raise AssertionError("bad status line %r" % lines[0])
    status, reason = int(m.group(1)), m.group(2) or ""
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise AssertionError("bad header line %r" % line)
        headers.append((name.strip(), value.strip()))
    resp = Response(status, reason, headers, b"")

    buf = bytearray(rest)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return resp
    te = (resp.header("Transfer-Encoding") or "").lower()
    length = resp.header("Content-Length")
    if "chunked" in te:
        body = bytearray()
        while True:
            while b"\r\n" not in buf:
                more()
            size_line, _, tail = bytes(buf).partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            buf = bytearray(tail)
            while len(buf) < size + 2:
                more()
            body.extend(buf[:size])
            buf = buf[size + 2:]
            if size == 0:
                break
        resp.body = bytes(body)
    elif length is not None:
        n = int(length)
        while len(buf) < n:
            more()
        resp.body = bytes(buf[:n])
    else:
        # Body ends when the connection does.
        with contextlib.suppress(ConnectionClosed):
            while True:
                more()
        resp.body = bytes(buf)
    return resp


def wait_closed(sock, timeout):
    """Reads and discards until the peer closes; returns (closed, data).

    closed is True if EOF or a reset arrived before the timeout. A TLS alert
    followed by the close counts as closed.
    """
    deadline = time.monotonic() + timeout
    data = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False, bytes(data)
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return False, bytes(data)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError,
                ssl.SSLZeroReturnError):
            return True, bytes(data)
        except ssl.SSLError:
            return True, bytes(data)
        except OSError as e:
            if e.errno in (errno.ECONNRESET, errno.EPIPE):
                return True, bytes(data)
            raise
        if not chunk:
            return True, bytes(data)
        data.extend(chunk)


def raw_https_request(host, port, request, timeout=10.0, method="GET"):
    """Sends request bytes exactly as given over TLS (nothing rewrites the
    path) and returns the Response. Raises ConnectionClosed if the server
    closes without answering."""
    deadline = time.monotonic() + timeout
    with tls_connect(host, port, timeout=timeout) as s:
        s.sendall(request)
        return read_http_response(s, deadline, method=method)


# ---------------------------------------------------------------------------
# openssl s_client


class SClientResult:
    def __init__(self, proc):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        out = proc.stdout + "\n" + proc.stderr
        # "Protocol  :" sits in the SSL-Session block, which s_client skips
        # for TLS 1.3 when it hangs up before a session ticket arrives; then
        # "New, TLSv1.3, Cipher is ..." tells (for older versions that line
        # names the cipher's version, not the protocol's).
        m = (re.search(r"^\s*Protocol\s*:\s*(\S+)", out, re.M)
             or re.search(r"^New, (TLSv1\.3), Cipher is (?!\(NONE\))", out, re.M))
        self.protocol = m.group(1) if m else None
        m = re.search(r"^ALPN protocol:\s*(\S+)", out, re.M)
        self.alpn = m.group(1) if m else None
        try:
            self.cert_der = pem_to_der(proc.stdout)
        except ValueError:
            self.cert_der = None

    @property
    def handshake_ok(self):
        # s_client prints "Cipher is (NONE)" / no protocol when it failed.
        return (self.returncode == 0 and self.cert_der is not None
                and self.protocol not in (None, "", "(NONE)"))

    @property
    def fingerprint(self):
        return der_fingerprint(self.cert_der) if self.cert_der else None

    def __repr__(self):
        return ("<s_client rc=%s protocol=%s alpn=%s>\nstdout:\n%s\nstderr:\n%s"
                % (self.returncode, self.protocol, self.alpn,
                   self.stdout[-3000:], self.stderr[-3000:]))


def s_client(host, port, *args, timeout=20):
    """Runs `openssl s_client -connect host:port ARGS` with stdin closed
    (so it hangs up right after the handshake)."""
    require_tool("openssl")
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", "%s:%d" % (host, port),
         "-showcerts", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout)
    return SClientResult(proc)


# ---------------------------------------------------------------------------
# Log lines: "ts=... level=info event=x.y key=value key="quoted value""

_FIELD_RE = re.compile(r'([A-Za-z0-9_.\-]+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_log_fields(line):
    """key=value fields of one log line as a dict; quoted values unescaped."""
    fields = {}
    for m in _FIELD_RE.finditer(line):
        key, value = m.group(1), m.group(2)
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(x[0-9a-fA-F]{2}|.)", _unescape, value[1:-1])
        fields[key] = value
    return fields


def _unescape(m):
    s = m.group(1)
    if s == "n":
        return "\n"
    if s.startswith("x") and len(s) == 3:
        return chr(int(s[1:], 16))
    return s


class LogFile:
    """Lines a process wrote to a file, read as it grows."""

    def __init__(self, path):
        self.path = path

    def lines(self):
        try:
            with open(self.path, "r", errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def mark(self):
        """Position to pass as `since` to only see later lines."""
        return len(self.lines())

    def find(self, pattern, since=0):
        rx = re.compile(pattern)
        return [ln for ln in self.lines()[since:] if rx.search(ln)]

    def find_events(self, event, since=0, **fields):
        """Lines whose event= is `event` and whose fields equal `fields`
        (values compared after unquoting)."""
        out = []
        for ln in self.lines()[since:]:
            f = parse_log_fields(ln)
            if f.get("event") != event:
                continue
            if all(f.get(k) == str(v) for k, v in fields.items()):
                out.append(ln)
        return out

    def wait_for(self, pattern, timeout=10.0, since=0, alive=None):
        """First line (after `since`) matching regex `pattern`; raises
        AssertionError with the log tail at the deadline or if `alive()`
        turns false first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for ln in self.lines()[since:]:
                if rx.search(ln):
                    return ln
            if alive is not None and not alive():
                # One last look: the line may have been written on the way out.
                for ln in self.lines()[since:]:
                    if rx.search(ln):
                        return ln
                raise AssertionError("process exited before logging /%s/\n%s"
                                     % (pattern, _log_tail(self.path)))
            if time.monotonic() >= deadline:
                raise AssertionError("no log line matching /%s/ within %.1fs\n%s"
                                     % (pattern, timeout, _log_tail(self.path)))
            time.sleep(0.05)

    def wait_for_event(self, event, timeout=10.0, since=0, alive=None,
                       **fields):
        deadline = time.monotonic() + timeout
        while True:
            found = self.find_events(event, since=since, **fields)
            if found:
                return found[0]
            if alive is not None and not alive():
                found = self.find_events(event, since=since, **fields)
                if found:
                    return found[0]
                raise AssertionError("process exited before logging event=%s %r\n%s"
                                     % (event, fields, _log_tail(self.path)))
            if time.monotonic() >= deadline:
                raise AssertionError("no event=%s %r within %.1fs\n%s"
                                     % (event, fields, timeout,
                                        _log_tail(self.path)))
            time.sleep(0.05)


# ---------------------------------------------------------------------------
# Fixture base


class _Fixture:
    @classmethod
    def started(cls, testcase, *args, **kwargs):
        """Creates and starts the fixture; stops it when the test ends."""
        fx = cls(*args, **kwargs)
        testcase.addCleanup(fx.close)
        fx.start()
        return fx

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# ---------------------------------------------------------------------------
# The postern-test system account
#
# Test processes may run in parallel (ctest -j) and each Sshd needs to know the
# account's password. Two flock()ed files coordinate them: "gate" serialises
# acquire/release, "holders" is held shared by every live user of the account.
# The first holder (nobody else holds "holders") sets a fresh random password;
# later ones read it from a root-only file. A crashed process drops its locks
# with its descriptors, so nothing goes stale. The last holder locks the
# password again on release.

TEST_USER = "postern-test"
_ACCOUNT_DIR = "/run/postern-itest"


class TestAccount:
    def __init__(self):
        self.user = TEST_USER
        self.password = None
        self.uid = None
        self.home = None
        self._holders_fd = None

    def acquire(self, timeout=60.0):
        require_root()
        for tool in ("useradd", "chpasswd", "usermod"):
            if shutil.which(tool) is None and not os.path.exists(
                    "/usr/sbin/" + tool):
                raise missing_prerequisite("needs %s" % tool)
        os.makedirs(_ACCOUNT_DIR, mode=0o700, exist_ok=True)
        os.chmod(_ACCOUNT_DIR, 0o700)
        gate = os.open(os.path.join(_ACCOUNT_DIR, "gate"),
                       os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _flock_deadline(gate, fcntl.LOCK_EX, timeout)
            holders = os.open(os.path.join(_ACCOUNT_DIR, "holders"),
                              os.O_RDWR | os.O_CREAT, 0o600)
            pw_path = os.path.join(_ACCOUNT_DIR, "password")
            try:
                fcntl.flock(holders, fcntl.LOCK_EX | fcntl.LOCK_NB)
                first = True
            except BlockingIOError:
                first = False
            try:
                if first:
                    self._ensure_user()
                    self.password = secrets.token_urlsafe(18)
                    _run_sbin(["chpasswd"], input_text="%s:%s\n"
                              % (self.user, self.password))
                    fd = os.open(pw_path + ".new",
                                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "w") as f:
                        f.write(self.password)
                    os.replace(pw_path + ".new", pw_path)
                    fcntl.flock(holders, fcntl.LOCK_SH)
                else:
                    fcntl.flock(holders, fcntl.LOCK_SH)
                    with open(pw_path) as f:
                        self.password = f.read().strip()
            except BaseException:
                os.close(holders)
                raise
            self._holders_fd = holders
        finally:
            os.close(gate)  # also drops the gate lock
        import pwd
        pw = pwd.getpwnam(self.user)
        self.uid, self.home = pw.pw_uid, pw.pw_dir
        return self

    def release(self):
        if self._holders_fd is None:
            return
        gate = os.open(os.path.join(_ACCOUNT_DIR, "gate"),
                       os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _flock_deadline(gate, fcntl.LOCK_EX, 60.0)
            holders, self._holders_fd = self._holders_fd, None
            try:
                fcntl.flock(holders, fcntl.LOCK_EX | fcntl.LOCK_NB)
                last = True
            except BlockingIOError:
                last = False
            if last:
                # Nobody can log in with a password we printed nowhere.
                with contextlib.suppress(Exception):
                    _run_sbin(["usermod", "-L", self.user])
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(_ACCOUNT_DIR, "password"))
            os.close(holders)
        finally:
            os.close(gate)

    def _ensure_user(self):
        import pwd
        try:
            pwd.getpwnam(self.user)
            return
        except KeyError:
            pass
        proc = _run_sbin(["useradd", "--create-home", "--shell", "/bin/sh",
                          "--comment", "Postern integration tests", self.user],
                         check=False)
        # Another process may have won the race to create it.
        if proc.returncode not in (0, 9):
            raise AssertionError("useradd failed: %s" % proc.stderr)


def _run_sbin(argv, input_text=None, check=True):
    exe = shutil.which(argv[0]) or os.path.join("/usr/sbin", argv[0])
    proc = subprocess.run([exe, *argv[1:]], input=input_text,
                          capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (%d): %s"
                             % (argv[0], proc.returncode, proc.stderr))
    return proc


def _flock_deadline(fd, op, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise AssertionError("could not lock the test account within %ss"
                                     % timeout)
            time.sleep(0.05)


# ---------------------------------------------------------------------------
# OpenSSH server


class HostKey:
    """One sshd host key: paths and fingerprints."""

    def __init__(self, key_type, path):
        self.type = key_type
        self.path = path
        self.pub_path = path + ".pub"
        with open(self.pub_path) as f:
            self.public_line = f.read().strip()
        blob = base64.b64decode(self.public_line.split()[1])
        digest = hashlib.sha256(blob).digest()
        # Hex of SHA-256 over the key blob.
        self.sha256_hex = digest.hex()
        # What `ssh-keygen -lf` prints: "SHA256:" + unpadded base64.
        out = run(["ssh-keygen", "-lf", self.pub_path]).stdout.split()
        self.fingerprint = out[1]
        expected = "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
        if self.fingerprint != expected:
            raise AssertionError("ssh-keygen says %s, computed %s"
                                 % (self.fingerprint, expected))

    def __repr__(self):
        return "<HostKey %s %s>" % (self.type, self.fingerprint)


class Sshd(_Fixture):
    """A real OpenSSH server on 127.0.0.1:<free port> for the postern-test
    account, which logs in with `password` or the ed25519 key at
    `client_key` (public half at client_key + ".pub").

    Attributes after start(): host, port, user, password, client_key,
    host_keys {"ed25519": HostKey, "rsa": HostKey}, host_key_sha256 (the
    ed25519 "SHA256:..." fingerprint), host_key_sha256_hex, log (LogFile).
    """

    SSHD = "/usr/sbin/sshd"

    def __init__(self, host=LOOPBACK, extra_config=""):
        if not _is_loopback(host):
            raise ValueError("tests use 127.0.0.0/8 only")
        self.host = host
        self.port = None
        self.extra_config = extra_config
        self.dir = None
        self.proc = None
        self.account = None
        self.user = TEST_USER
        self.password = None
        self.client_key = None
        self.host_keys = {}
        self.log = None

    def start(self):
        require_root()
        if not os.access(self.SSHD, os.X_OK):
            raise missing_prerequisite("needs %s (openssh-server)" % self.SSHD)
        require_tool("ssh-keygen")
        self.account = TestAccount().acquire()
        self.password = self.account.password

        self.dir = tempfile.mkdtemp(prefix="postern-sshd-")
        # sshd opens AuthorizedKeysFile as the target user: it must be able
        # to walk into the directory.
        os.chmod(self.dir, 0o755)
        for kt in ("ed25519", "rsa"):
            path = os.path.join(self.dir, "ssh_host_%s_key" % kt)
            args = ["-b", "3072"] if kt == "rsa" else []
            run(["ssh-keygen", "-q", "-t", kt, *args, "-N", "", "-C",
                 "postern-itest-host", "-f", path])
            self.host_keys[kt] = HostKey(kt, path)

        self.client_key = os.path.join(self.dir, "client_ed25519")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
             "postern-itest-client", "-f", self.client_key])
        auth_keys = os.path.join(self.dir, "authorized_keys")
        shutil.copyfile(self.client_key + ".pub", auth_keys)
        os.chmod(auth_keys, 0o644)

        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

        self.port = free_port(self.host)
        self.config_path = os.path.join(self.dir, "sshd_config")
        with open(self.config_path, "w") as f:
            f.write(self._config(auth_keys))
        self.log = LogFile(os.path.join(self.dir, "sshd.log"))
        with open(self.log.path, "wb") as logf:
            self.proc = subprocess.Popen(
                [self.SSHD, "-D", "-e", "-f", self.config_path],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                start_new_session=True)
        self._wait_banner()
        return self

    def _config(self, auth_keys):
        lines = [
            "ListenAddress %s:%d" % (self.host, self.port),
            "HostKey %s" % self.host_keys["ed25519"].path,
            "HostKey %s" % self.host_keys["rsa"].path,
            "PidFile %s" % os.path.join(self.dir, "sshd.pid"),
            "AuthorizedKeysFile %s" % auth_keys,
            "StrictModes no",
            "UsePAM no",
            "PasswordAuthentication yes",
            "PubkeyAuthentication yes",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            "AllowUsers %s" % self.user,
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "AllowTcpForwarding yes",
            "MaxStartups 50:30:100",
            "MaxAuthTries 6",
            "LoginGraceTime 30",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
        ]
        return "\n".join(lines) + "\n" + self.extra_config + "\n"

    def _wait_banner(self):
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("sshd exited with %s\n%s"
                                     % (self.proc.returncode,
                                        _log_tail(self.log.path)))
            try:
                with socket.create_connection((self.host, self.port),
                                              timeout=2) as s:
                    s.settimeout(2)
                    data = b""
                    while b"\n" not in data and len(data) < 1024:
                        chunk = s.recv(256)
                        if not chunk:
                            break
                        data += chunk
                    if data.startswith(b"SSH-2.0-"):
                        self.banner = data.split(b"\r\n")[0].decode()
                        return
                    last = data
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise AssertionError("sshd on %s:%d sent no SSH-2.0 banner (%r)\n%s"
                             % (self.host, self.port, last,
                                _log_tail(self.log.path)))

    @property
    def host_key_sha256(self):
        return self.host_keys["ed25519"].fingerprint

    @property
    def host_key_sha256_hex(self):
        return self.host_keys["ed25519"].sha256_hex

    def vm_config(self, name="linux01", **more):
        """A gateway `vms` entry pointing at this server, host key pinned."""
        vm = {"name": name, "address": self.host,
              "ssh": {"port": self.port,
                      "host_key_sha256": self.host_key_sha256}}
        vm.update(more)
        return vm

    def ssh_argv(self, *remote, key=None, batch=True, extra=()):
        """argv for the real ssh client towards this server."""
        argv = ["ssh", "-F", "/dev/null", "-p", str(self.port),
                "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=10",
                "-o", "BatchMode=%s" % ("yes" if batch else "no")]
        if key:
            argv += ["-i", key, "-o", "IdentitiesOnly=yes",
                     "-o", "PreferredAuthentications=publickey",
                     "-o", "PasswordAuthentication=no"]
        argv += list(extra)
        argv += ["%s@%s" % (self.user, self.host), *remote]
        return argv

    def run_ssh_with_key(self, command, key=None, timeout=30):
        return run(self.ssh_argv(command, key=key or self.client_key),
                   timeout=timeout, check=False)

    def run_ssh_with_password(self, command, password=None, timeout=30):
        """Password login through SSH_ASKPASS (or sshpass when present)."""
        password = self.password if password is None else password
        extra = ["-o", "PreferredAuthentications=password",
                 "-o", "PubkeyAuthentication=no",
                 "-o", "NumberOfPasswordPrompts=1"]
        argv = self.ssh_argv(command, batch=False, extra=extra)
        env = dict(os.environ)
        env.pop("SSH_AUTH_SOCK", None)
        if shutil.which("sshpass"):
            env["SSHPASS"] = password
            return run(["sshpass", "-e", *argv], env=env, timeout=timeout,
                       check=False)
        askpass = os.path.join(self.dir, "askpass.sh")
        if not os.path.exists(askpass):
            with open(askpass, "w") as f:
                f.write('#!/bin/sh\nprintf "%s\\n" "$POSTERN_ITEST_PASSWORD"\n')
            os.chmod(askpass, 0o700)
        env.update(SSH_ASKPASS=askpass, SSH_ASKPASS_REQUIRE="force",
                   POSTERN_ITEST_PASSWORD=password)
        # A new session: no controlling terminal for ssh to prompt on.
        return run(argv, env=env, timeout=timeout, check=False,
                   start_new_session=True)

    def stop(self, timeout=10.0):
        rc = stop_process(self.proc, signal.SIGTERM, timeout)
        self.proc = None
        return rc

    def close(self):
        try:
            self.stop()
        finally:
            if self.account is not None:
                self.account.release()
                self.account = None
            if self.dir:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None


# ---------------------------------------------------------------------------
# The gateway daemon


def posternd_path():
    """The daemon under test: $POSTERND, else $POSTERN_BUILD_DIR/posternd.

    Skips the test when neither is set (running a file by hand without a
    build); fails when the named file is missing.
    """
    path = os.environ.get("POSTERND")
    if not path and os.environ.get("POSTERN_BUILD_DIR"):
        path = os.path.join(os.environ["POSTERN_BUILD_DIR"], "posternd")
    if not path:
        raise missing_prerequisite("set POSTERND to the posternd binary")
    if not os.access(path, os.X_OK):
        raise AssertionError("POSTERND=%s is not an executable file" % path)
    return path


def split_host_port(value):
    """"127.0.0.1:8443" or "[::1]:8443" -> (host, port)."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", value)
    if not m:
        raise ValueError("not host:port: %r" % value)
    if m.group(1):
        return m.group(1), int(m.group(2))
    return m.group(3), int(m.group(4))


class CheckResult:
    def __init__(self, proc):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def __repr__(self):
        return "<exit %s stdout=%r stderr=%r>" % (
            self.returncode, self.stdout, self.stderr)


def check_config(path, timeout=30):
    """Runs `posternd --check-config path`."""
    return CheckResult(run([posternd_path(), "--check-config", path],
                           timeout=timeout, check=False))


class Gateway(_Fixture):
    """posternd with a JSON config built from a dict.

    Defaults fill what the test leaves out: `listen` 127.0.0.1:<free port>,
    `state_dir` a temp dir, `log_level` "info" (defaults=False writes the
    dict as given; config_text= writes raw text, e.g. broken JSON).

    After start(): host, port, base_url, pid, config_path, log (LogFile of
    stderr), state_dir. start(wait=False) returns right after the spawn, for
    tests that expect the daemon to exit; see wait_exit().
    """

    def __init__(self, config=None, *, config_text=None, defaults=True,
                 binary=None, env=None, tmp=None, args=None):
        self.binary = binary
        self.dir = tmp
        self._own_dir = tmp is None
        self.config = dict(config or {})
        self.config_text = config_text
        self.defaults = defaults
        self.env = env
        self.extra_args = list(args or [])
        self.proc = None
        self.log = None
        self.host = self.port = None
        self.returncode = None

    # -- config --------------------------------------------------------------

    def _fill_defaults(self):
        if not self.defaults:
            return
        self.config.setdefault("listen", "%s:%d" % (LOOPBACK, free_port()))
        if "state_dir" not in self.config:
            state = os.path.join(self.dir, "state")
            os.makedirs(state, mode=0o700, exist_ok=True)
            self.config["state_dir"] = state
        self.config.setdefault("log_level", "info")

    def write_config(self, config=None, text=None):
        """(Re)writes the config file atomically, from a dict or raw text."""
        if config is not None:
            self.config = dict(config)
        if text is None:
            text = json.dumps(self.config, indent=2) + "\n"
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)

    @property
    def state_dir(self):
        return self.config.get("state_dir")

    @property
    def origin(self):
        """The Origin a browser sends for the first listener (what the
        default `origins` accepts)."""
        return gateway_origin(self)

    @property
    def audit_log_path(self):
        return os.path.join(self.state_dir, "audit.log")

    def listen_addresses(self):
        lst = self.config.get("listen")
        if isinstance(lst, str):
            lst = [lst]
        return [split_host_port(v) for v in (lst or [])]

    # -- process -------------------------------------------------------------

    def start(self, wait=True, timeout=START_TIMEOUT):
        self.binary = self.binary or posternd_path()
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="postern-gw-")
        self.config_path = os.path.join(self.dir, "posternd.json")
        if self.config_text is None:
            self._fill_defaults()
            self.write_config()
        else:
            self.write_config(text=self.config_text)
        addrs = []
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            addrs = self.listen_addresses()
        if addrs:
            self.host, self.port = addrs[0]
        self.log = LogFile(os.path.join(self.dir, "posternd.stderr"))
        self.stdout_path = os.path.join(self.dir, "posternd.stdout")
        env = dict(os.environ)
        env.update(self.env or {})
        with open(self.log.path, "ab") as errf, \
                open(self.stdout_path, "ab") as outf:
            self.proc = subprocess.Popen(
                [self.binary, "--config", self.config_path, *self.extra_args],
                stdin=subprocess.DEVNULL, stdout=outf, stderr=errf,
                env=env, start_new_session=True)
        if wait:
            self.wait_healthy(timeout)
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def base_url(self):
        return "https://%s:%d" % (self.host, self.port)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_healthy(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if not self.alive():
                raise AssertionError(
                    "posternd exited with %s before answering /healthz\n%s"
                    % (self.proc.returncode, _log_tail(self.log.path)))
            try:
                r = https_request(self.host, self.port, "GET", "/healthz",
                                  timeout=5)
                if r.status == 200:
                    return
                last = r
            except (OSError, http.client.HTTPException) as e:
                last = e
            if time.monotonic() >= deadline:
                raise AssertionError(
                    "posternd on %s:%s did not answer /healthz 200 within "
                    "%.0fs (last: %r)\n%s" % (self.host, self.port, timeout,
                                              last, _log_tail(self.log.path)))
            time.sleep(0.05)

    def wait_exit(self, timeout=15.0):
        """Waits for the process to end on its own; returns its exit code.
        Fails (and kills it) at the deadline."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(self.proc, signal.SIGKILL)
            raise AssertionError("posternd still running after %.1fs\n%s"
                                 % (timeout, _log_tail(self.log.path)))
        return self.returncode

    def stderr_text(self):
        with open(self.log.path, "r", errors="replace") as f:
            return f.read()

    def stdout_text(self):
        with open(self.stdout_path, "r", errors="replace") as f:
            return f.read()

    def reload(self):
        """SIGHUP: re-read the config."""
        os.kill(self.proc.pid, signal.SIGHUP)

    def send_signal(self, sig):
        os.kill(self.proc.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Sends sig to the daemon, waits up to timeout for it to exit and
        returns its exit code. If it does not exit in time it is killed and
        the test fails."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                stop_process(self.proc, signal.SIGKILL)
                raise AssertionError("posternd ignored %s for %.1fs\n%s"
                                     % (signal.Signals(sig).name, timeout,
                                        _log_tail(self.log.path)))
        self.returncode = self.proc.returncode
        # Reap anything the daemon left in its group.
        _signal_group(self.proc, signal.SIGKILL)
        return self.returncode

    def close(self):
        try:
            if self.proc is not None:
                stop_process(self.proc, signal.SIGTERM, timeout=10)
                self.returncode = self.proc.returncode
        finally:
            if self._own_dir and self.dir:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    # -- clients -------------------------------------------------------------

    def request(self, method, path, headers=None, body=None, timeout=10.0,
                port=None, host=None):
        return https_request(host or self.host, port or self.port, method,
                             path, headers=headers, body=body, timeout=timeout)

    def https_get(self, path, headers=None, timeout=10.0):
        return self.request("GET", path, headers=headers, timeout=timeout)

    def raw_request(self, request_bytes, timeout=10.0, method="GET"):
        """Bytes sent verbatim over TLS; see raw_https_request()."""
        return raw_https_request(self.host, self.port, request_bytes,
                                 timeout=timeout, method=method)

    def raw_get(self, target, timeout=10.0, extra_headers=""):
        """GET with the request target sent byte for byte (no client-side
        normalisation or quoting)."""
        if isinstance(target, str):
            target = target.encode("latin-1")
        req = (b"GET " + target + b" HTTP/1.1\r\nHost: " +
               ("%s:%d" % (self.host, self.port)).encode() +
               b"\r\n" + extra_headers.encode() + b"Connection: close\r\n\r\n")
        return self.raw_request(req, timeout=timeout)

    def tls_socket(self, timeout=10.0, alpn=("http/1.1",)):
        return tls_connect(self.host, self.port, timeout=timeout, alpn=alpn)

    def tcp_socket(self, timeout=10.0):
        return socket.create_connection((self.host, self.port), timeout=timeout)


class HealthPoller:
    """Requests /healthz over and over on a thread while a test misbehaves on
    other connections; records every outcome.

        with HealthPoller(gw) as hp:
            ...abuse...
        hp.assert_healthy(testcase)
    """

    def __init__(self, gateway, interval=0.05, timeout=5.0):
        self.gw = gateway
        self.interval = interval
        self.timeout = timeout
        self.ok = 0
        self.failures = []
        self._stop = threading.Event()
        self._thread = None

    def _run(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                r = self.gw.https_get("/healthz", timeout=self.timeout)
                if r.status == 200:
                    self.ok += 1
                else:
                    self.failures.append("status %d" % r.status)
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.failures.append("%s after %.2fs: %s"
                                     % (type(e).__name__,
                                        time.monotonic() - t0, e))
            self._stop.wait(self.interval)

    def wait_for_successes(self, n, timeout=10.0):
        start = self.ok
        wait_until(lambda: self.ok >= start + n or self.failures, timeout,
                   message="%d /healthz answers" % n)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)
        return False

    def assert_healthy(self, testcase, minimum=1):
        testcase.assertEqual(self.failures, [],
                             "/healthz failed while other connections misbehaved")
        testcase.assertGreaterEqual(self.ok, minimum,
                                    "too few /healthz answers during the test")


# ---------------------------------------------------------------------------
# Prometheus text format

_METRIC_LINE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*,?)?\})?'
    r' ([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|NaN|[-+]?Inf))'
    r'(?: -?[0-9]+)?$')
_COMMENT_LINE = re.compile(
    r'^# (?:HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*|HELP [a-zA-Z_:][a-zA-Z0-9_:]*'
    r'|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (?:counter|gauge|histogram|summary|untyped))$'
    r'|^#(?! HELP| TYPE).*$')


def parse_prometheus(text):
    """[(name, labels_text, value)] from the exposition text; raises
    AssertionError naming the first line that is not valid."""
    samples = []
    for i, line in enumerate(text.split("\n"), 1):
        if line == "":
            continue
        if line.startswith("#"):
            if not _COMMENT_LINE.match(line):
                raise AssertionError("metrics line %d is not a valid comment: %r"
                                     % (i, line))
            continue
        m = _METRIC_LINE.match(line)
        if not m:
            raise AssertionError("metrics line %d does not parse: %r" % (i, line))
        samples.append((m.group(1), m.group(2) or "", float(m.group(3))))
    return samples


def metric_sum(samples, name):
    return sum(v for n, _, v in samples if n == name)


# ---------------------------------------------------------------------------
# Identity: the `postern` command, users files, TOTP, an API client, the
# audit log. Used by test_identity.py, test_mfa.py and test_audit.py.

import hmac  # noqa: E402  (kept with the helpers that need them)
import struct  # noqa: E402
import urllib.parse  # noqa: E402


def postern_path():
    """The command under test: $POSTERN, else $POSTERN_BUILD_DIR/postern
    (a skip by hand, a failure under ctest, when neither is set)."""
    path = os.environ.get("POSTERN")
    if not path and os.environ.get("POSTERN_BUILD_DIR"):
        path = os.path.join(os.environ["POSTERN_BUILD_DIR"], "postern")
    if not path:
        raise missing_prerequisite("set POSTERN to the postern binary")
    if not os.access(path, os.X_OK):
        raise AssertionError("POSTERN=%s is not an executable file" % path)
    return path


def postern(*args, input=None, check=True, timeout=60):
    """Runs `postern ARGS` (stdin: `input`, or nothing) and returns the
    CompletedProcess (text). check=True fails the test on a non-zero exit."""
    argv = [postern_path(), *args]
    proc = subprocess.run(argv, input=input if input is not None else "",
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError("%s exited %d\nstdout: %s\nstderr: %s"
                             % (argv, proc.returncode, proc.stdout, proc.stderr))
    return proc


class UsersFile:
    """A users file edited with the real `postern user ...` commands."""

    def __init__(self, path):
        self.path = path

    def add(self, name, password, roles=("ops",)):
        argv = ["user", "add", name]
        for r in roles:
            argv += ["--role", r]
        postern(*argv, "--users-file", self.path, "--password-stdin",
                input=password + "\n")

    def passwd(self, name, password):
        postern("user", "passwd", name, "--users-file", self.path,
                "--password-stdin", input=password + "\n")

    def disable(self, name):
        postern("user", "disable", name, "--users-file", self.path)

    def enable(self, name):
        postern("user", "enable", name, "--users-file", self.path)

    def enrol_totp(self, name):
        """Enrols a TOTP secret; returns the base32 secret from the
        otpauth:// URI the command prints."""
        out = postern("user", "totp", name, "--users-file", self.path).stdout
        return totp_secret_from_uri(out.strip())

    def list(self):
        return postern("user", "list", "--users-file", self.path).stdout

    def lines(self):
        with open(self.path) as f:
            return f.read().splitlines()

    def append_raw(self, text):
        """Appends a line as given (for broken entries); returns its line
        number."""
        with open(self.path, "a") as f:
            f.write(text + "\n")
        return len(self.lines())


def totp_secret_from_uri(uri):
    """The `secret` parameter of an otpauth://totp/... URI."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme != "otpauth" or parsed.netloc != "totp":
        raise AssertionError("not an otpauth://totp URI: %r" % uri)
    secret = urllib.parse.parse_qs(parsed.query).get("secret")
    if not secret:
        raise AssertionError("no secret in %r" % uri)
    return secret[0]


def totp_code(secret_b32, at=None, step=None, period=30, digits=6):
    """RFC 6238 TOTP (HMAC-SHA-1) of a base32 secret, for the time `at`
    (default now) or the time step `step`."""
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    if step is None:
        step = int((time.time() if at is None else at) // period)
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return "%0*d" % (digits, value % (10 ** digits))


def totp_step(at=None, period=30):
    return int((time.time() if at is None else at) // period)


def parse_set_cookie(value):
    """"name=value; Attr; Attr=x" -> (name, value, {attr_lower: value|True})."""
    parts = [p.strip() for p in value.split(";")]
    name, _, val = parts[0].partition("=")
    attrs = {}
    for p in parts[1:]:
        if not p:
            continue
        k, sep, v = p.partition("=")
        attrs[k.strip().lower()] = v.strip() if sep else True
    return name.strip(), val.strip(), attrs


SESSION_COOKIE = "postern_session"


class ApiClient:
    """A client of the gateway's REST API, holding what a browser or the
    CLI would: the session cookie (set by a successful login) and/or an API
    token. Every call is one request on a fresh TLS connection.

    origin: the Origin header sent on every request ("default": the
    gateway's own origin, None: no Origin header)."""

    DEFAULT = "default"

    def __init__(self, gateway, origin=DEFAULT, cookie=None, token=None):
        self.gw = gateway
        self.origin = gateway.origin if origin == self.DEFAULT else origin
        self.cookie = cookie
        self.token = token

    def request(self, method, path, body=None, headers=None, origin=DEFAULT,
                cookie=DEFAULT, token=DEFAULT, timeout=20.0):
        """body: a dict/list (sent as JSON), bytes or str (sent as is)."""
        h = {}
        origin = self.origin if origin == self.DEFAULT else origin
        cookie = self.cookie if cookie == self.DEFAULT else cookie
        token = self.token if token == self.DEFAULT else token
        if origin is not None:
            h["Origin"] = origin
        if cookie is not None:
            h["Cookie"] = "%s=%s" % (SESSION_COOKIE, cookie)
        if token is not None:
            h["Authorization"] = "Bearer " + token
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        if body is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        return self.gw.request(method, path, headers=h, body=body,
                               timeout=timeout)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def login(self, user, password, totp=None, **kw):
        """POST /api/login; on 200 keeps the session cookie."""
        body = {"user": user, "password": password}
        if totp is not None:
            body["totp"] = totp
        r = self.post("/api/login", body, cookie=None, token=None, **kw)
        if r.status == 200:
            self.cookie = session_cookie(r)
        return r

    def logout(self, **kw):
        return self.post("/api/logout", **kw)

    def me(self, **kw):
        return self.get("/api/me", **kw)

    def create_token(self, **fields):
        """POST /api/tokens with the given JSON fields (cookie session)."""
        return self.post("/api/tokens", fields or None)


def session_cookie(response):
    """The postern_session value a response sets (None if it sets none)."""
    for v in response.header_all("Set-Cookie"):
        name, val, _ = parse_set_cookie(v)
        if name == SESSION_COOKIE:
            return val
    return None


def gateway_origin(gw):
    """The origin a browser sends for gw's first listener."""
    if gw.port == 443:
        return "https://%s" % gw.host
    return "https://%s:%d" % (gw.host, gw.port)




def gateway_metrics(gw):
    """/metrics parsed: {(name, labels_text): value}."""
    r = gw.https_get("/metrics")
    if r.status != 200:
        raise AssertionError("/metrics answered %r" % r)
    return {(n, l): v for n, l, v in parse_prometheus(r.text)}


def read_audit_log(path):
    """The audit log's events as dicts, in file order."""
    with open(path, "rb") as f:
        return [json.loads(line) for line in f.read().splitlines() if line]


def audit_events(gw, event=None, since=0, **fields):
    """The gateway's audit events from index `since` on, named `event` (any
    when None), whose fields equal `fields`."""
    return [e for e in read_audit_log(gw.audit_log_path)[since:]
            if (event is None or e.get("event") == event)
            and all(e.get(k) == v for k, v in fields.items())]


def audit_mark(gw):
    """Where the gateway's audit log ends now: a `since` for audit_events."""
    return len(read_audit_log(gw.audit_log_path))


def identity_config(users_file, **extra):
    """A gateway config dict naming a users file, plus extra keys."""
    cfg = {"users_file": users_file}
    cfg.update(extra)
    return cfg


def ssh_vm(name, tags=(), port=22):
    """A VM entry with SSH on a trust-on-first-use key (enough for
    permission tests that never connect)."""
    return {"name": name, "address": LOOPBACK, "tags": list(tags),
            "ssh": {"port": port, "trust_on_first_use": True}}


def rdp_vm(name, tags=(), port=3389):
    return {"name": name, "address": LOOPBACK, "tags": list(tags),
            "rdp": {"port": port, "trust_on_first_use": True}}


# ---------------------------------------------------------------------------
# Sanitizer reports (the suite also runs against an ASan/UBSan build)

_SANITIZER_RE = re.compile(
    r"ERROR: (?:AddressSanitizer|LeakSanitizer)"
    r"|SUMMARY: (?:AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)"
    r"|: runtime error: ")


def sanitizer_findings(path):
    """Lines of a process's stderr that are sanitizer reports."""
    try:
        with open(path, "r", errors="replace") as f:
            return [ln for ln in f.read().splitlines() if _SANITIZER_RE.search(ln)]
    except FileNotFoundError:
        return []


def checked_gateway(testcase, config=None, start=True, cleanup=None, **kwargs):
    """Gateway.started(testcase, config), plus: when the test ends and the
    daemon has stopped (so that LeakSanitizer has reported), its stderr must
    hold no sanitizer report. cleanup: the function that registers cleanups
    (testcase.addCleanup by default; cls.addClassCleanup in setUpClass)."""
    add = cleanup or testcase.addCleanup
    d = tempfile.mkdtemp(prefix="postern-gw-")
    add(shutil.rmtree, d, ignore_errors=True)       # runs last
    gw = Gateway(config, tmp=d, **kwargs)

    def check():
        found = sanitizer_findings(os.path.join(d, "posternd.stderr"))
        if found:
            raise AssertionError("posternd reported sanitizer errors:\n%s\n%s"
                                 % ("\n".join(found[:20]),
                                    _log_tail(os.path.join(d, "posternd.stderr"), 80)))
    add(check)                                      # after the stop
    add(gw.close)                                   # runs first
    if start:
        gw.start()
    return gw


# ---------------------------------------------------------------------------
# The browser console's WebSocket (/ws/ssh): a small RFC 6455 client of our
# own, used by test_ssh_console.py.
#
# Not python3-websocket: that library rejects close code 1013 ("try again
# later", which the gateway sends when a cap is reached) as invalid, and
# tests here need byte-level control (stop reading to fill the socket, send
# oversized or out-of-order frames).

import struct as _ws_struct  # noqa: E402
from urllib.parse import quote as _ws_quote  # noqa: E402


class WsRefused(Exception):
    """The gateway answered the upgrade with something other than 101."""

    def __init__(self, response):
        super().__init__("upgrade refused: %d %s %r" % (
            response.status, response.reason, response.body[:300]))
        self.response = response
        self.status = response.status


class WsConsole:
    """One /ws/ssh session as the browser console holds it.

        c = WsConsole(gw, "linux01", cookie=alice.cookie).open()
        c.connect(sshd.user, password=sshd.password)
        c.type("echo hi\\r"); c.wait_output(b"hi")
        c.resize(100, 30)
        msg, code, reason = c.wait_end()

    What the gateway sent is kept: `output` (bytearray of every binary
    frame, in order), `messages` (every text frame, parsed JSON objects, or
    the raw string when not JSON), `close_code` / `close_reason` (its close
    frame), `eof` (the connection ended). Nothing is read unless a method
    is called: a test that wants the gateway's buffers to fill simply stops
    calling.

    origin: the Origin header (default: the gateway's own; None: none).
    """

    DEFAULT = "default"
    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    TEXT, BINARY, CLOSE, PING, PONG, CONT = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0

    def __init__(self, gateway, vm, cookie=None, token=None, origin=DEFAULT,
                 path="/ws/ssh", query=None, timeout=10.0):
        self.gw = gateway
        self.vm = vm
        self.cookie = cookie
        self.token = token
        self.origin = gateway.origin if origin == self.DEFAULT else origin
        self.path = path
        self.query = query
        self.timeout = timeout
        self.sock = None
        self._buf = bytearray()
        self._frag = None          # (opcode, bytearray) of a fragmented message
        self.output = bytearray()
        self.messages = []
        self.close_code = None
        self.close_reason = None
        self.close_sent = False
        self.eof = False
        self.keys_sent = 0         # bytes of keystrokes sent (binary frames)
        self.response_headers = []

    # -- connection ------------------------------------------------------------

    @property
    def target(self):
        if self.query is not None:
            q = self.query
        else:
            q = "vm=" + _ws_quote(self.vm, safe="")
        return self.path + ("?" + q if q else "")

    def open(self, expect_ready=True):
        """TLS, the upgrade, and (expect_ready) the gateway's first message
        "ready: send connect". Raises WsRefused when the upgrade is refused.
        Returns self."""
        deadline = time.monotonic() + self.timeout
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % self.target,
                 "Host: %s:%d" % (self.gw.host, self.gw.port),
                 "Upgrade: websocket", "Connection: Upgrade",
                 "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
        if self.origin is not None:
            lines.append("Origin: " + self.origin)
        if self.cookie is not None:
            lines.append("Cookie: %s=%s" % (SESSION_COOKIE, self.cookie))
        if self.token is not None:
            lines.append("Authorization: Bearer " + self.token)
        self.sock = tls_connect(self.gw.host, self.gw.port, timeout=self.timeout)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self._buf:
            if not self._fill(deadline):
                raise ConnectionClosed("closed during the upgrade: %r"
                                       % bytes(self._buf[:300]))
        head, _, rest = bytes(self._buf).partition(b"\r\n\r\n")
        self._buf = bytearray(rest)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        status = int(parts[1])
        headers = [tuple(s.strip() for s in h.split(":", 1))
                   for h in header_lines if ":" in h]
        self.response_headers = headers
        if status != 101:
            resp = Response(status, parts[2] if len(parts) > 2 else "",
                            headers, b"")
            length = int(resp.header("Content-Length") or -1)
            while length < 0 or len(self._buf) < length:
                try:
                    if not self._fill(deadline):
                        break
                except (socket.timeout, OSError):
                    break
            resp.body = bytes(self._buf[:length] if length >= 0 else self._buf)
            self._shutdown()
            raise WsRefused(resp)
        accept = dict((k.lower(), v) for k, v in headers).get("sec-websocket-accept")
        want = base64.b64encode(hashlib.sha1(key.encode() + self.GUID).digest()).decode()
        if accept != want:
            self._shutdown()
            raise AssertionError("bad Sec-WebSocket-Accept %r (want %r)" % (accept, want))
        if expect_ready:
            self.wait_message(type="status", timeout=self.timeout,
                              match=lambda m: m.get("message") == "ready: send connect")
        return self

    def _fill(self, deadline):
        """One recv into the buffer; False at EOF. socket.timeout at the
        deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline passed")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(262144)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError,
                ssl.SSLZeroReturnError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self._buf += chunk
        return True

    def _shutdown(self):
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    # -- frames ------------------------------------------------------------------

    @staticmethod
    def _mask(data, mask):
        n = len(data)
        if not n:
            return b""
        key = (mask * (n // 4 + 1))[:n]
        return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")

    def send_frame(self, opcode, payload, fin=True):
        """One client frame (masked, as RFC 6455 requires)."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        n = len(payload)
        b0 = (0x80 if fin else 0) | opcode
        if n < 126:
            head = bytes([b0, 0x80 | n])
        elif n < 65536:
            head = bytes([b0, 0x80 | 126]) + _ws_struct.pack("!H", n)
        else:
            head = bytes([b0, 0x80 | 127]) + _ws_struct.pack("!Q", n)
        mask = os.urandom(4)
        self.sock.settimeout(self.timeout)
        self.sock.sendall(head + mask + self._mask(payload, mask))

    def _next_frame(self, deadline):
        """(fin, opcode, payload) of the next frame, or None at EOF."""
        while True:
            b = self._buf
            if len(b) >= 2:
                n = b[1] & 0x7F
                pos = 2
                if n == 126 and len(b) >= 4:
                    n = _ws_struct.unpack("!H", b[2:4])[0]
                    pos = 4
                elif n == 127 and len(b) >= 10:
                    n = _ws_struct.unpack("!Q", b[2:10])[0]
                    pos = 10
                if b[1] & 0x80:
                    raise AssertionError("the gateway sent a masked frame")
                if (b[1] & 0x7F) < 126 or pos > 2:
                    if len(b) >= pos + n:
                        fin, opcode = bool(b[0] & 0x80), b[0] & 0x0F
                        payload = bytes(b[pos:pos + n])
                        del b[:pos + n]
                        return fin, opcode, payload
            if not self._fill(deadline):
                return None

    def recv_event(self, timeout=None):
        """Reads one message or control frame and records it. Returns
        ("text", obj), ("binary", bytes), ("close", code, reason),
        ("ping"/"pong", data), ("eof",); socket.timeout when nothing
        arrives in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if self.eof or self.sock is None:
                return ("eof",)
            fr = self._next_frame(deadline)
            if fr is None:
                self._shutdown()
                return ("eof",)
            fin, opcode, payload = fr
            if opcode == self.CLOSE:
                code = _ws_struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self.close_code = code
                self.close_reason = payload[2:].decode("utf-8", errors="replace")
                if not self.close_sent:
                    with contextlib.suppress(OSError):
                        self.send_frame(self.CLOSE, payload[:2])
                    self.close_sent = True
                return ("close", code, self.close_reason)
            if opcode == self.PING:
                with contextlib.suppress(OSError):
                    self.send_frame(self.PONG, payload)
                return ("ping", payload)
            if opcode == self.PONG:
                return ("pong", payload)
            if opcode == self.CONT:
                if self._frag is None:
                    raise AssertionError("continuation frame without a start")
                self._frag[1].extend(payload)
            elif opcode in (self.TEXT, self.BINARY):
                if self._frag is not None:
                    raise AssertionError("new message inside a fragmented one")
                self._frag = (opcode, bytearray(payload))
            else:
                raise AssertionError("unknown opcode %d from the gateway" % opcode)
            if not fin:
                continue
            opcode, data = self._frag[0], bytes(self._frag[1])
            self._frag = None
            if opcode == self.BINARY:
                self.output += data
                return ("binary", data)
            text = data.decode("utf-8")
            try:
                obj = json.loads(text)
            except ValueError:
                obj = text
            self.messages.append(obj)
            return ("text", obj)

    # -- waiting -----------------------------------------------------------------

    def describe(self, tail=600):
        return ("messages=%r close=%r %r eof=%s output(%d bytes, tail)=%r"
                % (self.messages[-12:], self.close_code, self.close_reason,
                   self.eof, len(self.output), bytes(self.output[-tail:])))

    def wait(self, predicate, timeout=None, what="condition"):
        """Reads until predicate() is true (returned). AssertionError at the
        deadline or when the connection ends first, with what arrived."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            v = predicate()
            if v:
                return v
            if self.close_code is not None or self.eof or self.sock is None:
                raise AssertionError("connection ended before %s: %s"
                                     % (what, self.describe()))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("timed out waiting for %s: %s"
                                     % (what, self.describe()))
            try:
                self.recv_event(remaining)
            except socket.timeout:
                pass

    def wait_message(self, type=None, match=None, since=0, timeout=None):
        """The first text message (index >= since) of `type` for which
        match(msg) is true."""
        def find():
            for m in self.messages[since:]:
                if isinstance(m, dict) and (type is None or m.get("type") == type) \
                        and (match is None or match(m)):
                    return m
            return None
        return self.wait(find, timeout, "a %s message" % (type or "text"))

    def wait_output(self, pattern, since=0, timeout=None):
        """Waits until `pattern` (bytes, or a compiled bytes regex) appears in
        output at or after `since`; returns the offset just past it."""
        state = {"scan": since}

        def find():
            if isinstance(pattern, bytes):
                i = self.output.find(pattern, state["scan"])
                if i >= 0:
                    return i + len(pattern)
                state["scan"] = max(since, len(self.output) - len(pattern) + 1)
                return None
            m = pattern.search(self.output, since)
            return m.end() if m else None
        return self.wait(find, timeout, "output %r" % (pattern,))

    # -- the protocol ------------------------------------------------------------

    def send_json(self, obj):
        self.send_frame(self.TEXT, json.dumps(obj))

    def connect(self, username, password=None, private_key=None,
                passphrase=None, cols=80, rows=24, wait=True, timeout=None,
                **extra):
        """Sends the connect message; with wait, waits for "connected" and
        returns it (AssertionError with the gateway's words otherwise)."""
        msg = {"type": "connect", "cols": cols, "rows": rows}
        if username is not None:
            msg["username"] = username
        if password is not None:
            msg["password"] = password
        if private_key is not None:
            msg["private_key"] = private_key
        if passphrase is not None:
            msg["passphrase"] = passphrase
        msg.update(extra)
        since = len(self.messages)
        self.send_json(msg)
        if not wait:
            return None
        return self.wait_message(
            "status", match=lambda m: m.get("message") == "connected",
            since=since, timeout=timeout or max(self.timeout, 20.0))

    def type(self, keys):
        """Keystrokes, as one binary frame."""
        data = keys.encode() if isinstance(keys, str) else bytes(keys)
        self.send_frame(self.BINARY, data)
        self.keys_sent += len(data)

    def resize(self, cols, rows):
        self.send_json({"type": "resize", "cols": cols, "rows": rows})

    def run(self, command, timeout=None):
        """Types `command` and a marker echo at the shell, waits for the
        marker, returns the output (bytes) from after the typed line to the
        marker. The marker is written so that the terminal's echo of the
        typed line does not contain it."""
        tok = secrets.token_hex(4)
        marker = ("@%s@" % tok).encode()
        start = len(self.output)
        self.type("%s; echo @%s''%s@\r" % (command, tok[:4], tok[4:]))
        end = self.wait_output(marker, since=start, timeout=timeout)
        return bytes(self.output[start:end - len(marker)])

    def wait_end(self, timeout=None):
        """Reads until the gateway's close frame (or EOF); returns (the last
        "closed"/"error" message or None, close code, close reason)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while self.close_code is None and not self.eof and self.sock is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no close from the gateway within the "
                                     "deadline: %s" % self.describe())
            try:
                self.recv_event(remaining)
            except socket.timeout:
                pass
        last = None
        for m in self.messages:
            if isinstance(m, dict) and m.get("type") in ("closed", "error"):
                last = m
        return last, self.close_code, self.close_reason

    def close(self, code=1000, wait=2.0):
        """Client-side close: a close frame, a short wait for the answer,
        then the socket goes. Safe to call twice."""
        if self.sock is None:
            return
        if not self.close_sent and self.close_code is None and not self.eof:
            with contextlib.suppress(OSError):
                self.send_frame(self.CLOSE, _ws_struct.pack("!H", code))
            self.close_sent = True
            deadline = time.monotonic() + wait
            while self.close_code is None and not self.eof and self.sock is not None:
                try:
                    self.recv_event(max(0.01, deadline - time.monotonic()))
                except (socket.timeout, OSError, AssertionError):
                    break
                if time.monotonic() >= deadline:
                    break
        self._shutdown()

    def abort(self, reset=False):
        """Drops the TCP connection without a close frame. reset: with a
        TCP reset (SO_LINGER 0), as a crashed host or a middlebox does; a
        plain close (a killed process) sends its FIN after any unsent
        bytes."""
        if reset and self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     _ws_struct.pack("ii", 1, 0))
        self._shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def process_rss_kib(pid):
    """VmRSS of a process, in KiB (from /proc/PID/status)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


class SilentTcpServer:
    """A TCP server on 127.0.0.1:<free port> that accepts connections and
    never sends a byte (a VM whose port is open but whose service hangs).

        with SilentTcpServer() as srv: ... srv.port ... srv.accepted
    """

    def __init__(self, host=LOOPBACK):
        if not _is_loopback(host):
            raise ValueError("tests use 127.0.0.0/8 only")
        self.host = host
        self.port = None
        self.accepted = 0
        self._lsock = None
        self._conns = []
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.bind((self.host, 0))
        self._lsock.listen(16)
        self._lsock.settimeout(0.2)
        self.port = self._lsock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._conns.append(conn)   # held open, never written to
            self.accepted += 1

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for s in [self._lsock, *self._conns]:
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        self._conns = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False


# ---------------------------------------------------------------------------
# RDP test target: FreeRDP's shadow server sharing an Xvfb display
#
# Verified on Debian 12 (FreeRDP 2.11.7):
# - `freerdp-shadow-cli /bind-address:127.0.0.1 /port:P +auth /sec:nla
#   /sam-file:FILE` checks NLA (NTLM) logins against FILE, one line per user
#   from `winpr-hash -u USER -p PASS -f sam`; /etc/winpr/SAM is not needed or
#   touched. With /sec:tls it accepts any password, so refusals need NLA.
# - It makes its certificate on first start in
#   $XDG_CONFIG_HOME/freerdp/shadow/shadow.crt (CN "vm", RSA, self-signed).
# - xfreerdp needs an X display even for /help and +auth-only; it creates
#   $XDG_CONFIG_HOME/freerdp even with /cert:ignore, hence a private HOME.
#   `/cert:fingerprint:sha256:AA:BB:...` (colons required, any case) pins.
# - Exit codes: 0 success, 143 TLS failed (certificate refused), 147
#   transport failed (the shadow server drops a failed NLA login), 131
#   nothing listening.
# - SIGTERM makes xfreerdp print a backtrace; destroying its window gives an
#   X error and exit 1. WM_DELETE_WINDOW (sent by x11_close_window, there is
#   no window manager to do it) ends the session with exit 0.

XF_EXIT_TLS_CONNECT_FAILED = 143
XF_EXIT_CONNECT_TRANSPORT_FAILED = 147
RDP_TOOLS = {"Xvfb": "xvfb", "xterm": "xterm", "xdotool": "xdotool",
             "freerdp-shadow-cli": "freerdp2-shadow-x11",
             "xfreerdp": "freerdp2-x11", "winpr-hash": "winpr-utils"}


def require_rdp_tools():
    for tool, package in RDP_TOOLS.items():
        if shutil.which(tool) is None:
            raise missing_prerequisite("needs %s (package %s)" % (tool, package))


def _x11_socket(display):
    return "/tmp/.X11-unix/X%d" % display


def _x_env(display, home=None):
    """Environment for an X client on :display (with a private HOME)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "XAUTHORITY", "WAYLAND_DISPLAY",
                        "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR")}
    env["DISPLAY"] = ":%d" % display
    if home is not None:
        env["HOME"] = home
        env["XDG_CONFIG_HOME"] = os.path.join(home, ".config")
    return env


def x11_find_window(display, name_regex, timeout=START_TIMEOUT, alive=None):
    """Id of the first window on :display whose name matches (xdotool
    search). Raises AssertionError at the deadline or once alive() is
    false."""
    require_tool("xdotool")
    env = _x_env(display)
    deadline = time.monotonic() + timeout
    while True:
        r = run(["xdotool", "search", "--name", name_regex], env=env,
                check=False, timeout=10)
        ids = r.stdout.split()
        if ids:
            return int(ids[0])
        if alive is not None and not alive():
            raise AssertionError("process gone before a window /%s/ "
                                 "appeared on :%d" % (name_regex, display))
        if time.monotonic() >= deadline:
            raise AssertionError("no window /%s/ on :%d within %.1fs"
                                 % (name_regex, display, timeout))
        time.sleep(0.05)


class Xvfb(_Fixture):
    """A virtual X server on a display number it picks itself (-displayfd:
    the first free one, arbitrated by the X lock files, so parallel tests
    do not collide). Local unix socket only (-nolisten tcp).

    Attributes after start(): display (int), name (":N"), proc, log.
    """

    def __init__(self, screen="1280x800x24"):
        self.screen = screen
        self.display = None
        self.proc = None
        self.dir = None
        self.log = None

    @property
    def name(self):
        return ":%d" % self.display

    def start(self):
        require_tool("Xvfb")
        self.dir = tempfile.mkdtemp(prefix="postern-xvfb-")
        self.log = LogFile(os.path.join(self.dir, "xvfb.log"))
        rfd, wfd = os.pipe()
        try:
            with open(self.log.path, "wb") as logf:
                self.proc = subprocess.Popen(
                    ["Xvfb", "-displayfd", str(wfd), "-screen", "0",
                     self.screen, "-nolisten", "tcp", "-noreset"],
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                    pass_fds=(wfd,), start_new_session=True)
            os.close(wfd)
            wfd = None
            self.display = self._read_display(rfd)
        except BaseException:
            self.close()
            raise
        finally:
            if wfd is not None:
                os.close(wfd)
            os.close(rfd)
        return self

    def _read_display(self, rfd):
        # Xvfb writes "N\n" once it accepts connections.
        import select
        deadline = time.monotonic() + START_TIMEOUT
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("Xvfb gave no display number within %ss\n%s"
                                     % (START_TIMEOUT, _log_tail(self.log.path)))
            ready, _, _ = select.select([rfd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(rfd, 64)
                if not chunk:   # closed: Xvfb died
                    break
                data += chunk
        if b"\n" not in data:
            self.proc.wait(timeout=5)
            raise AssertionError("Xvfb exited with %s\n%s"
                                 % (self.proc.returncode,
                                    _log_tail(self.log.path)))
        return int(data.strip())

    def find_window(self, name_regex, timeout=START_TIMEOUT, alive=None):
        return x11_find_window(self.display, name_regex, timeout, alive)

    def close(self):
        pid = self.proc.pid if self.proc is not None else None
        try:
            stop_process(self.proc)
        finally:
            self.proc = None
            # Killed hard, Xvfb leaves its lock and socket: drop them when
            # the lock is still ours.
            if self.display is not None and pid is not None:
                lock = "/tmp/.X%d-lock" % self.display
                try:
                    with open(lock) as f:
                        owner = int(f.read().strip() or 0)
                except (OSError, ValueError):
                    owner = None
                if owner == pid:
                    for p in (lock, _x11_socket(self.display)):
                        with contextlib.suppress(OSError):
                            os.unlink(p)
            if self.dir:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None


def x11_close_window(display, window):
    """Sends WM_DELETE_WINDOW to `window` on :display, as a window manager's
    close button would (speaks the X11 protocol itself: stdlib only, no
    window manager on an Xvfb). Returns once the server has processed it."""
    import struct

    def recv_exact(s, n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise AssertionError("X server :%d closed the connection"
                                     % display)
            buf += chunk
        return buf

    def reply(s):
        while True:
            head = recv_exact(s, 32)
            if head[0] == 0:
                raise AssertionError("X error %d from :%d" % (head[1], display))
            if head[0] == 1:
                extra = struct.unpack("<I", head[4:8])[0]
                return head + recv_exact(s, extra * 4)
            # an event: not for us

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(_x11_socket(display))
        # Connection setup, little-endian, protocol 11.0, no authorisation
        # (an Xvfb started without -auth accepts local clients).
        s.sendall(struct.pack("<BxHHHHxx", 0x6C, 11, 0, 0, 0))
        head = recv_exact(s, 8)
        recv_exact(s, struct.unpack("<H", head[6:8])[0] * 4)
        if head[0] != 1:
            raise AssertionError("X server :%d refused the connection (%d)"
                                 % (display, head[0]))
        atoms = []
        for name in (b"WM_PROTOCOLS", b"WM_DELETE_WINDOW"):
            pad = (4 - len(name) % 4) % 4
            s.sendall(struct.pack("<BBHHxx", 16, 0,   # InternAtom
                                  2 + (len(name) + pad) // 4, len(name))
                      + name + b"\0" * pad)
            atoms.append(struct.unpack("<I", reply(s)[8:12])[0])
        event = struct.pack("<BBHII5I", 33, 32, 0, window,   # ClientMessage
                            atoms[0], atoms[1], 0, 0, 0, 0)
        s.sendall(struct.pack("<BBHII", 25, 0, 11, window, 0) + event)
        s.sendall(struct.pack("<BxH", 43, 1))   # GetInputFocus: a round trip
        reply(s)


def _colon_sha256(fingerprint):
    """"aabb.." or "AA:BB:.." -> "AA:BB:..", the form xfreerdp accepts."""
    hexstr = fingerprint.replace(":", "").upper()
    if not re.fullmatch(r"[0-9A-F]{64}", hexstr):
        raise ValueError("not a SHA-256 fingerprint: %r" % (fingerprint,))
    return ":".join(hexstr[i:i + 2] for i in range(0, 64, 2))


def _xfreerdp_argv(host, port, user, password, cert):
    if not _is_loopback(host):
        raise ValueError("tests use 127.0.0.0/8 only, not %r" % (host,))
    argv = ["xfreerdp", "/v:%s:%d" % (host, port), "/u:" + user,
            "/p:" + password, "/log-level:INFO"]
    if cert is None:
        argv.append("/cert:ignore")
    else:
        argv.append("/cert:fingerprint:sha256:" + _colon_sha256(cert))
    return argv


@contextlib.contextmanager
def _client_display(display):
    """The given display number, or a private Xvfb for the duration."""
    if display is not None:
        yield display
        return
    with Xvfb(screen="1024x768x24") as x:
        yield x.display


def _communicate_or_kill(proc, timeout, what):
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        stop_process(proc)
        out = proc.communicate()[0]
        raise AssertionError("%s still running after %ss\n%s"
                             % (what, timeout, out[-4000:]))


def xfreerdp_auth_only(host, port, user, password, timeout=30, display=None,
                       cert=None):
    """`xfreerdp +auth-only` towards host:port: (returncode, output).

    0 when the login is accepted; 147 when the shadow server refuses the
    NLA credentials; 143 when `cert` (a SHA-256 fingerprint to pin; None:
    /cert:ignore) does not match. xfreerdp opens an X display even here:
    `display` (a number), else a private Xvfb is started for the call.
    Runs with a throwaway HOME, so nothing lands in the real one.
    """
    argv = _xfreerdp_argv(host, port, user, password, cert) + ["+auth-only"]
    with _client_display(display) as disp, TempDir("postern-xfreerdp-") as home:
        proc = subprocess.Popen(argv, env=_x_env(disp, home),
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                errors="replace", start_new_session=True)
        try:
            out = _communicate_or_kill(proc, timeout, "xfreerdp +auth-only")
        finally:
            stop_process(proc)
        return proc.returncode, out


class RdpSessionResult:
    """What xfreerdp_session saw.

    connected: xfreerdp's session window appeared (it is made after the
      connection sequence, NLA included, has finished);
    held: the client was still connected when `seconds` had passed;
    clean: it then exited 0 on WM_DELETE_WINDOW;
    connect_seconds: launch to window; returncode, output: xfreerdp's.
    """

    def __init__(self):
        self.connected = False
        self.held = False
        self.clean = False
        self.connect_seconds = None
        self.returncode = None
        self.output = ""

    @property
    def ok(self):
        return self.connected and self.held and self.clean

    def __repr__(self):
        return ("<RdpSessionResult connected=%s held=%s clean=%s rc=%s "
                "connect=%ss>\n%s" % (self.connected, self.held, self.clean,
                                      self.returncode, self.connect_seconds,
                                      self.output[-3000:]))


def xfreerdp_session(host, port, user, password, seconds=3.0, display=None,
                     cert=None, timeout=30, size="1024x768"):
    """Holds a real xfreerdp session for `seconds`, then closes its window
    like a user would. Returns an RdpSessionResult (never raises for a
    session that fails: look at .connected / .returncode / .output).

    The client draws on `display` (a number), else on a private Xvfb. Do
    not use the display the server shares: the client would film itself.
    """
    argv = _xfreerdp_argv(host, port, user, password, cert) + ["/size:" + size]
    title = r"^FreeRDP: %s:%d$" % (re.escape(host), port)
    res = RdpSessionResult()
    with _client_display(display) as disp, TempDir("postern-xfreerdp-") as home:
        logpath = os.path.join(home, "xfreerdp.log")
        proc = None
        try:
            with open(logpath, "wb") as logf:
                started = time.monotonic()
                proc = subprocess.Popen(argv, env=_x_env(disp, home),
                                        stdin=subprocess.DEVNULL, stdout=logf,
                                        stderr=logf, start_new_session=True)
            try:
                window = x11_find_window(disp, title, timeout=timeout,
                                         alive=lambda: proc.poll() is None)
            except AssertionError:
                window = None
            if window is not None:
                res.connected = True
                res.connect_seconds = round(time.monotonic() - started, 2)
                try:
                    proc.wait(timeout=seconds)   # ends early: not held
                except subprocess.TimeoutExpired:
                    res.held = True
                if res.held:
                    x11_close_window(disp, window)
                    try:
                        proc.wait(timeout=10)
                        res.clean = proc.returncode == 0
                    except subprocess.TimeoutExpired:
                        pass
        finally:
            stop_process(proc)
            if proc is not None:
                res.returncode = proc.returncode
            res.output = _log_tail(logpath, lines=200)
    return res


def _listening_inodes(host, port):
    """Socket inodes listening on host:port (IPv4), from /proc/net/tcp."""
    want = "%s:%04X" % ("".join("%02X" % b for b in
                                reversed(socket.inet_aton(host))), port)
    found = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[1] == want and parts[3] == "0A":   # TCP_LISTEN
                found.add(parts[9])
    return found


def _tcp_listeners_on_port(port):
    """Local addresses (hex, as in /proc/net/tcp{,6}) listening on port."""
    out = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(path) as f:
            next(f)
            for line in f:
                parts = line.split()
                addr, _, p = parts[1].rpartition(":")
                if int(p, 16) == port and parts[3] == "0A":
                    out.append(addr)
    return out


def _process_socket_inodes(pid):
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                target = os.readlink(os.path.join(fd_dir, fd))
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


class RdpShadow(_Fixture):
    """A real RDP server: FreeRDP's shadow server on 127.0.0.1:<free port>,
    sharing an Xvfb screen (1280x800x24) with an xterm on it, NLA logins
    checked against a SAM file of its own (one random-password user).

    Attributes after start(): host, port, user, password, password_file
    (0600, the password alone, for the gateway's rdp.password_file),
    display (server's X display number), client_display (a second Xvfb for
    xfreerdp), cert_path, cert_der, cert_sha256 ("AA:BB:..", as `rdp.
    cert_sha256` and xfreerdp's pin take it), cert_sha256_hex, sam_path,
    log (the shadow server's output), typed_path (what the xterm got typed:
    it runs `cat` into that file).

    Helpers: auth_only(...), session(...), vm_config(name).
    sec="tls" drops NLA: then any password is accepted.
    """

    XTERM_TITLE = "postern-itest-rdp"

    def __init__(self, host=LOOPBACK, user="postern-rdp", password=None,
                 sec="nla"):
        if not _is_loopback(host):
            raise ValueError("tests use 127.0.0.0/8 only")
        if sec not in ("nla", "tls"):
            raise ValueError("sec must be nla or tls")
        self.host = host
        self.port = None
        self.user = user
        self.password = password
        self.sec = sec
        self.dir = None
        self.server_x = None
        self.client_x = None
        self.xterm = None
        self.proc = None
        self.log = None
        self.cert_path = self.cert_der = None
        self.cert_sha256 = self.cert_sha256_hex = None

    @property
    def display(self):
        return self.server_x.display if self.server_x else None

    @property
    def client_display(self):
        return self.client_x.display if self.client_x else None

    def start(self):
        require_rdp_tools()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self):
        if self.password is None:
            self.password = secrets.token_urlsafe(18)
        self.dir = tempfile.mkdtemp(prefix="postern-rdp-")
        home = os.path.join(self.dir, "home")
        os.makedirs(home)

        self.sam_path = os.path.join(self.dir, "SAM")
        line = run(["winpr-hash", "-u", self.user, "-p", self.password,
                    "-f", "sam"]).stdout.strip()
        if not line.startswith(self.user + ":"):
            raise AssertionError("unexpected winpr-hash output %r" % line)
        fd = os.open(self.sam_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(line + "\n")
        self.password_file = os.path.join(self.dir, "password")
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                     0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password)

        self.server_x = Xvfb(screen="1280x800x24").start()
        self.typed_path = os.path.join(self.dir, "typed.txt")
        with open(os.path.join(self.dir, "xterm.log"), "wb") as logf:
            self.xterm = subprocess.Popen(
                ["xterm", "-T", self.XTERM_TITLE, "-geometry", "120x40+40+40",
                 "-e", "/bin/sh", "-c",
                 'echo "Postern RDP test target"; exec cat > "$0"',
                 self.typed_path],
                env=_x_env(self.server_x.display, home),
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                start_new_session=True)
        self.server_x.find_window("^%s$" % self.XTERM_TITLE,
                                  alive=lambda: self.xterm.poll() is None)

        self.port = free_port(self.host)
        self.log = LogFile(os.path.join(self.dir, "shadow.log"))
        argv = ["freerdp-shadow-cli", "/bind-address:" + self.host,
                "/port:%d" % self.port, "/sec:" + self.sec]
        if self.sec == "nla":
            argv += ["+auth", "/sam-file:" + self.sam_path]
        with open(self.log.path, "wb") as logf:
            self.proc = subprocess.Popen(
                argv, env=_x_env(self.server_x.display, home),
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                start_new_session=True)
        self._wait_listening()

        self.cert_path = os.path.join(home, ".config", "freerdp", "shadow",
                                      "shadow.crt")
        with open(self.cert_path) as f:
            self.cert_der = pem_to_der(f.read())
        self.cert_sha256 = der_fingerprint(self.cert_der)
        self.cert_sha256_hex = hashlib.sha256(self.cert_der).hexdigest()

        self.client_x = Xvfb(screen="1024x768x24").start()

    def _wait_listening(self):
        # Read the kernel's table instead of connecting (a probe connection
        # is a failed RDP login in the server's log), and make sure the
        # listener is this process's, not whoever won a race for the port.
        def ours():
            if self.proc.poll() is not None:
                raise AssertionError("freerdp-shadow-cli exited with %s\n%s"
                                     % (self.proc.returncode,
                                        _log_tail(self.log.path)))
            listening = _listening_inodes(self.host, self.port)
            return listening and listening & _process_socket_inodes(
                self.proc.pid)
        try:
            wait_until(ours, START_TIMEOUT,
                       message="freerdp-shadow-cli listening on %s:%d"
                       % (self.host, self.port))
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, _log_tail(self.log.path)))

    def auth_only(self, password=None, user=None, cert=None, timeout=30):
        return xfreerdp_auth_only(
            self.host, self.port, self.user if user is None else user,
            self.password if password is None else password, timeout=timeout,
            display=self.client_display, cert=cert)

    def session(self, seconds=3.0, password=None, user=None, cert=None,
                timeout=30):
        return xfreerdp_session(
            self.host, self.port, self.user if user is None else user,
            self.password if password is None else password, seconds=seconds,
            display=self.client_display, cert=cert, timeout=timeout)

    def vm_config(self, name="win01", **more):
        """A gateway `vms` entry pointing at this server, certificate
        pinned (add username=/password_file= as the test needs)."""
        vm = {"name": name, "address": self.host,
              "rdp": {"port": self.port, "cert_sha256": self.cert_sha256}}
        vm.update(more)
        return vm

    def stop(self, timeout=10.0):
        rc = stop_process(self.proc, signal.SIGTERM, timeout)
        self.proc = None
        return rc

    def close(self):
        # Each step runs whatever the one before it did.
        try:
            if self.client_x is not None:
                self.client_x.close()
        finally:
            self.client_x = None
            try:
                self.stop()
            finally:
                try:
                    stop_process(self.xterm)
                finally:
                    self.xterm = None
                    try:
                        if self.server_x is not None:
                            self.server_x.close()
                    finally:
                        self.server_x = None
                        if self.dir:
                            shutil.rmtree(self.dir, ignore_errors=True)
                            self.dir = None
