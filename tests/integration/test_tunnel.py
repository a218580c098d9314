"""The `postern` CLI end to end: login, status, logout, and real ssh, scp
and xfreerdp through `postern tunnel` (--stdio and --listen), `postern
ssh` and `postern rdp`, against a real gateway, a real sshd and FreeRDP's
shadow server on Xvfb. Every refusal is checked for its exit code, its
words, and that nothing reached the VM.

The WebSocket-level contract of /ws/tunnel is in test_ws_tunnel.py.
"""

import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from postern_fixtures import (
    LOOPBACK, RdpShadow, Sshd, TempDir, UsersFile, _x_env, audit_events, audit_mark,
    checked_gateway, der_fingerprint, gateway_metrics, make_temp_dir, peer_certificate,
    postern_path, stop_process, wait_until, xfreerdp_auth_only, xfreerdp_session,
)
from test_ws_tunnel import TcpVm

ROLES = {
    "eng": {"vms": ["tag:lab"], "actions": ["tunnel", "ssh-login"]},
    "console-only": {"vms": ["tag:lab"], "actions": ["ssh-login"]},
}
USERS = {"alice": ("eng",), "bob": ("eng",), "carol": ("console-only",)}
LENIENT = {"free_failures": 1000, "max_delay_seconds": 0,
           "lock_failures": 1000, "lock_seconds": 1}
TUNNEL_ACTIVE = ("postern_sessions_active", '{protocol="tunnel"}')
BIG = 100 * 1000 * 1000  # the 100 MB

_m = {}


def setUpModule():
    sshd = Sshd()
    unittest.addModuleCleanup(sshd.close)
    sshd.start()
    d = make_temp_dir(None, prefix="postern-cli-")
    unittest.addModuleCleanup(shutil.rmtree, d, ignore_errors=True)
    users = UsersFile(os.path.join(d, "users.json"))
    passwords = {}
    for name, roles in USERS.items():
        passwords[name] = "pw-" + secrets.token_urlsafe(12)
        users.add(name, passwords[name], roles)
    vms = {}
    for mode, size in (("echo", 0), ("reset", 300000)):
        vms[mode] = TcpVm(mode, size)
        unittest.addModuleCleanup(vms[mode].close)
    # known_hosts naming the VM as ssh sees it through ProxyCommand: the
    # real host key is checked end to end.
    known_hosts = os.path.join(d, "known_hosts")
    with open(sshd.host_keys["ed25519"].path + ".pub") as f:
        key = " ".join(f.read().split()[:2])
    with open(known_hosts, "w") as f:
        f.write("web01 %s\n[web01]:%d %s\n" % (key, sshd.port, key))
    _m.update(sshd=sshd, users=users, passwords=passwords, vms=vms, dir=d,
              known_hosts=known_hosts)


def closed_port():
    """A loopback port with nothing listening (bound, then released)."""
    import socket
    s = socket.socket()
    s.bind((LOOPBACK, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def vm(name, port=None, **more):
    e = {"name": name, "address": LOOPBACK, "tags": ["lab"],
         "ssh": {"port": _m["sshd"].port, "host_key_sha256": _m["sshd"].host_key_sha256}}
    if port is not None:
        e["tunnel_ports"] = [port]
    e.update(more)
    return e


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_random_file(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n


class CliCase(unittest.TestCase):
    """A gateway, and helpers that run the CLI as one of its users, each
    with a private config directory (where `postern login` stores the
    token)."""

    VMS = None  # list of vm() entries; set by subclasses

    @classmethod
    def setUpClass(cls):
        cfg = {"users_file": _m["users"].path, "roles": ROLES, "vms": cls.vms(),
               "auth": {"throttle": LENIENT}}
        cls.gw = checked_gateway(cls, cfg, cleanup=cls.addClassCleanup)
        cls.url = "https://%s:%d" % (cls.gw.host, cls.gw.port)
        cls.pin = "SHA256:" + der_fingerprint(peer_certificate(cls.gw.host, cls.gw.port))
        cls.homes = {}

    @classmethod
    def vms(cls):
        return []

    def setUp(self):
        self.assertTrue(self.gw.alive(), "the gateway died in an earlier test")

    @classmethod
    def home(cls, user):
        if user not in cls.homes:
            h = tempfile.mkdtemp(prefix="postern-cli-%s-" % user, dir=_m["dir"])
            cls.homes[user] = h
        return cls.homes[user]

    @classmethod
    def env(cls, user="alice", **extra):
        env = {k: v for k, v in os.environ.items()
               if k not in ("POSTERN_TOKEN", "POSTERN_GATEWAY", "SSH_AUTH_SOCK")}
        env["HOME"] = cls.home(user)
        env["XDG_CONFIG_HOME"] = os.path.join(cls.home(user), "config")
        env.update(extra)
        return env

    def cli(self, *args, user="alice", input="", env=None, timeout=60):
        return subprocess.run([postern_path(), *args], input=input, capture_output=True,
                              text=True, timeout=timeout, env=env or self.env(user))

    def login(self, user="alice", *more, pin=True):
        args = ["login", "--gateway", self.url, "--user", user, "--password-stdin", *more]
        if pin:
            args += ["--pin", self.pin]
        r = self.cli(*args, user=user, input=_m["passwords"][user] + "\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def stored(self, user="alice"):
        import json
        with open(os.path.join(self.home(user), "config", "postern", "credentials.json")) as f:
            return json.load(f)

    def proxy_command(self, *extra):
        return "%s tunnel --vm %%h --port %%p --stdio %s" % (postern_path(), " ".join(extra))

    def ssh_argv(self, *remote, proxy=None, program="ssh"):
        sshd = _m["sshd"]
        port_flag = "-P" if program == "scp" else "-p"
        argv = [program, "-F", "/dev/null", "-i", sshd.client_key,
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "UserKnownHostsFile=" + _m["known_hosts"],
                "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
                port_flag, str(sshd.port),
                "-o", "ProxyCommand=" + (proxy or self.proxy_command())]
        return argv + list(remote)

    def ssh(self, command, user="alice", timeout=60, **kw):
        return subprocess.run(self.ssh_argv("%s@web01" % _m["sshd"].user, command, **kw),
                              capture_output=True, text=True, timeout=timeout,
                              env=self.env(user))

    def metric(self, key):
        return gateway_metrics(self.gw).get(key) or 0


class Listener:
    """`postern tunnel --listen 127.0.0.1:0` in the background; port is
    read from the line it prints."""

    def __init__(self, case, vm_name, port, user="alice", extra=()):
        self.proc = subprocess.Popen(
            [postern_path(), "tunnel", "--vm", vm_name, "--port", str(port),
             "--listen", "127.0.0.1:0", *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=case.env(user), start_new_session=True)
        case.addCleanup(self.close)
        self.lines = []
        self.port = None
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.lines.append(line)
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(30) or self.port is None:
            raise AssertionError("postern tunnel --listen did not start:\n" + "".join(self.lines))

    def close(self):
        if self.proc.poll() is None:
            stop_process(self.proc, signal.SIGTERM)
        self.proc.stderr.close()
        return self.proc.returncode


# ---------------------------------------------------------------------------

class LoginTests(CliCase):
    @classmethod
    def vms(cls):
        return [vm("web01"), vm("echo01", _m["vms"]["echo"].port)]

    def test_login_stores_a_private_token_and_status_says_who(self):
        r = self.login("alice")
        self.assertIn("logged in to %s as alice" % self.url, r.stdout)
        path = os.path.join(self.home("alice"), "config", "postern", "credentials.json")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(os.path.dirname(path)).st_mode & 0o777, 0o700)
        with open(path) as f:
            text = f.read()
        self.assertNotIn(_m["passwords"]["alice"], text)
        creds = self.stored("alice")
        self.assertEqual(creds["gateway"], self.url)
        self.assertEqual(creds["user"], "alice")
        self.assertTrue(creds["token"].strip())
        self.assertGreater(creds["expires"], time.time())
        s = self.cli("status")
        self.assertEqual(s.returncode, 0, s.stderr)
        self.assertIn("user:    alice", s.stdout)
        self.assertIn(self.url, s.stdout)
        self.assertIn("echo01", s.stdout)
        self.assertNotIn(creds["token"], s.stdout + s.stderr)

    def test_a_wrong_password_stores_nothing(self):
        r = self.cli("login", "--gateway", self.url, "--pin", self.pin, "--user", "bob",
                     "--password-stdin", user="bob", input="not-the-password\n")
        self.assertEqual(r.returncode, 1)
        self.assertIn("invalid user name or password", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.home("bob"), "config", "postern",
                                                     "credentials.json")))

    def test_logout_revokes_the_token(self):
        self.login("bob")
        token = self.stored("bob")["token"]
        r = self.cli("logout", user="bob")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("revoked", r.stdout)
        s = self.cli("status", user="bob")
        self.assertEqual(s.returncode, 3, s.stderr)
        self.assertIn("not logged in", s.stderr)
        # The revoked token no longer opens anything, and nothing connects.
        echo = _m["vms"]["echo"]
        before = echo.accepted
        t = self.cli("tunnel", "--gateway", self.url, "--pin", self.pin, "--vm", "echo01",
                     "--port", str(echo.port), "--stdio",
                     env=self.env("bob", POSTERN_TOKEN=token))
        self.assertEqual(t.returncode, 5, t.stderr)
        self.assertIn("refused the token", t.stderr)
        self.assertEqual(echo.accepted, before)
        r = self.cli("logout", user="bob")
        self.assertEqual(r.returncode, 3)

    def test_an_expired_token(self):
        self.login("carol", "--expires-in", "5")
        time.sleep(6.5)
        echo = _m["vms"]["echo"]
        before = echo.accepted
        t = self.cli("tunnel", "--vm", "echo01", "--port", str(echo.port), "--stdio",
                     user="carol")
        self.assertEqual(t.returncode, 4, t.stderr)
        self.assertIn("expired", t.stderr)
        s = self.cli("status", user="carol")
        self.assertEqual(s.returncode, 4, s.stderr)
        self.assertEqual(echo.accepted, before)

    def test_no_credentials(self):
        t = self.cli("tunnel", "--vm", "echo01", "--port", "22", "--stdio", user="nobody")
        self.assertEqual(t.returncode, 3, t.stderr)
        self.assertIn("not logged in", t.stderr)
        t = self.cli("tunnel", "--gateway", self.url, "--vm", "echo01", "--port", "22",
                     "--stdio", user="nobody")
        self.assertEqual(t.returncode, 3, t.stderr)

    def test_the_certificate_is_verified(self):
        # No --pin, no --ca: the system's CAs do not know a self-signed
        # gateway, and the user is told its fingerprint.
        r = self.cli("login", "--gateway", self.url, "--user", "bob", "--password-stdin",
                     user="bob", input=_m["passwords"]["bob"] + "\n")
        self.assertEqual(r.returncode, 12, r.stderr)
        self.assertIn("not trusted", r.stderr)
        self.assertIn(self.pin, r.stderr)
        # A wrong pin: refused before anything is sent.
        mark = audit_mark(self.gw)
        wrong = "SHA256:" + ":".join(["00"] * 32)
        r = self.cli("login", "--gateway", self.url, "--pin", wrong, "--user", "bob",
                     "--password-stdin", user="bob", input=_m["passwords"]["bob"] + "\n")
        self.assertEqual(r.returncode, 12, r.stderr)
        self.assertIn("does not match the pinned fingerprint", r.stderr)
        self.assertEqual(audit_events(self.gw, since=mark, user="bob"), [])

    def test_the_gateway_certificate_as_ca(self):
        import ssl
        pem = ssl.DER_cert_to_PEM_cert(peer_certificate(self.gw.host, self.gw.port))
        ca = os.path.join(self.home("alice"), "gateway-ca.pem")
        with open(ca, "w") as f:
            f.write(pem)
        r = self.cli("status", "--gateway", self.url, "--ca", ca,
                     env=self.env("nobody2", POSTERN_TOKEN="not-a-token"))
        # The TLS check passed (the gateway answered): the token is refused.
        self.assertEqual(r.returncode, 5, r.stderr)

    def test_help_version_and_unknown_commands(self):
        for cmd in ("login", "logout", "status", "tunnel", "ssh", "rdp"):
            r = self.cli(cmd, "--help")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(r.stdout.startswith("usage: postern %s" % cmd), r.stdout)
            self.assertGreater(len(r.stdout.splitlines()), 3)
            v = self.cli(cmd, "--version")
            self.assertEqual(v.returncode, 0, v.stderr)
            self.assertRegex(v.stdout, r"^postern \d+\.\d+\.\d+")
        r = self.cli("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^postern \d+\.\d+\.\d+")
        r = self.cli("frobnicate")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command 'frobnicate'", r.stderr)
        r = self.cli("tunnel", "--vm", "x", "--port", "22", "--stdio", "--bogus")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown option '--bogus'", r.stderr)
        r = self.cli("tunnel", "--vm", "x", "--port", "22")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--stdio or --listen", r.stderr)


class ChangedCertificateTests(CliCase):
    """The pin of one gateway, presented another's certificate (what a
    replaced certificate, or an impostor, looks like)."""

    @classmethod
    def vms(cls):
        return [vm("echo01", _m["vms"]["echo"].port)]

    def test_a_changed_certificate_under_pin_is_refused(self):
        self.login("alice")
        other = checked_gateway(self, {"users_file": _m["users"].path, "roles": ROLES,
                                       "vms": self.vms()})
        other_url = "https://%s:%d" % (other.host, other.port)
        token = self.stored("alice")["token"]
        echo = _m["vms"]["echo"]
        before = echo.accepted
        mark = audit_mark(other)
        t = self.cli("tunnel", "--gateway", other_url, "--pin", self.pin, "--vm", "echo01",
                     "--port", str(echo.port), "--stdio",
                     env=self.env("alice", POSTERN_TOKEN=token))
        self.assertEqual(t.returncode, 12, t.stderr)
        self.assertIn("does not match the pinned fingerprint", t.stderr)
        self.assertEqual(echo.accepted, before)
        self.assertEqual(audit_events(other, since=mark), [])
        # And the stored login is never sent to another gateway.
        t = self.cli("tunnel", "--gateway", other_url, "--vm", "echo01",
                     "--port", str(echo.port), "--stdio")
        self.assertEqual(t.returncode, 3, t.stderr)
        self.assertIn("not logged in to %s" % other_url, t.stderr)


class SshThroughTunnelTests(CliCase):
    @classmethod
    def vms(cls):
        echo = _m["vms"]["echo"]
        return [vm("web01"),
                vm("echo01", echo.port),
                vm("capped01", echo.port, max_sessions=2),
                vm("jit01", echo.port, jit={"required": True}),
                vm("reset01", _m["vms"]["reset"].port),
                vm("dead01", closed_port())]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for user in ("alice", "carol"):
            r = subprocess.run([postern_path(), "login", "--gateway", cls.url, "--pin",
                                cls.pin, "--user", user, "--password-stdin"],
                               input=_m["passwords"][user] + "\n", capture_output=True,
                               text=True, timeout=60, env=cls.env(user))
            if r.returncode != 0:
                raise AssertionError("login %s: %s" % (user, r.stderr))

    def test_ssh_with_proxycommand_runs_a_command(self):
        r = self.ssh("echo hello-through-postern; exit 3")
        self.assertEqual(r.stdout.strip(), "hello-through-postern", r.stderr)
        self.assertEqual(r.returncode, 3, r.stderr)

    def test_postern_ssh_starts_ssh_through_a_tunnel(self):
        sshd = _m["sshd"]
        r = self.cli("ssh", "web01", "--", "-F", "/dev/null", "-i", sshd.client_key,
                     "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                     "-o", "UserKnownHostsFile=" + _m["known_hosts"],
                     "-o", "StrictHostKeyChecking=yes", "-l", sshd.user,
                     "echo via-postern-ssh")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "via-postern-ssh")

    def scp_both_ways(self, proxy=None, port_args=None):
        sshd = _m["sshd"]
        with TempDir("postern-scp-") as d:
            src = os.path.join(d, "up.bin")
            back = os.path.join(d, "down.bin")
            write_random_file(src, BIG)
            want = sha256_file(src)
            remote = "/tmp/postern-itest-%s.bin" % secrets.token_hex(6)
            self.addCleanup(subprocess.run, self.ssh_argv("%s@web01" % sshd.user,
                                                         "rm -f " + remote, proxy=proxy),
                            capture_output=True, timeout=60, env=self.env())
            argv = self.ssh_argv(proxy=proxy, program="scp")
            if port_args:
                argv = [a for a in argv]
            up = subprocess.run(argv + ["-q", src, "%s@web01:%s" % (sshd.user, remote)],
                                capture_output=True, text=True, timeout=240, env=self.env())
            self.assertEqual(up.returncode, 0, up.stderr)
            got = subprocess.run(self.ssh_argv("%s@web01" % sshd.user, "sha256sum " + remote,
                                               proxy=proxy),
                                 capture_output=True, text=True, timeout=60, env=self.env())
            self.assertEqual(got.stdout.split()[0], want, got.stderr)
            down = subprocess.run(argv + ["-q", "%s@web01:%s" % (sshd.user, remote), back],
                                  capture_output=True, text=True, timeout=240,
                                  env=self.env())
            self.assertEqual(down.returncode, 0, down.stderr)
            self.assertEqual(os.path.getsize(back), BIG)
            self.assertEqual(sha256_file(back), want)

    def test_scp_100mb_both_ways_through_stdio(self):
        mark = audit_mark(self.gw)
        self.scp_both_ways()
        ends = wait_until(lambda: [e for e in audit_events(self.gw, "session.end", since=mark,
                                                           vm="web01")
                                   if e.get("bytes_in", 0) > BIG], 20,
                          message="session.end of the upload with its bytes")
        self.assertEqual(ends[0]["protocol"], "tunnel")

    def test_scp_100mb_both_ways_through_listen(self):
        lis = Listener(self, "web01", _m["sshd"].port)
        # ssh to the local listener: a plain TCP connection, no ProxyCommand.
        proxy = "nc 127.0.0.1 %d" % lis.port if shutil.which("nc") else None
        if proxy is None:
            proxy = ("/usr/bin/python3 -c 'import socket,sys,threading;"
                     "s=socket.create_connection((\"127.0.0.1\",%d));"
                     "t=threading.Thread(target=lambda:[s.sendall(b) for b in "
                     "iter(lambda:sys.stdin.buffer.raw.read(65536),b\"\")] or "
                     "s.shutdown(1),daemon=True);t.start();"
                     "[sys.stdout.buffer.write(b) or sys.stdout.flush() for b in "
                     "iter(lambda:s.recv(65536),b\"\")]'" % lis.port)
        self.scp_both_ways(proxy=proxy)
        self.assertIsNone(lis.proc.poll(), "the listener ended: " + "".join(lis.lines))

    def test_twenty_ssh_at_once_through_one_listener(self):
        lis = Listener(self, "web01", _m["sshd"].port, extra=("--quiet",))
        sshd = _m["sshd"]
        argv = ["ssh", "-F", "/dev/null", "-i", sshd.client_key, "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=" + _m["known_hosts"],
                "-o", "StrictHostKeyChecking=no", "-o", "LogLevel=ERROR",
                "-o", "HostKeyAlias=web01", "-p", str(lis.port),
                "%s@127.0.0.1" % sshd.user]
        procs = [subprocess.Popen(argv + ["echo ssh-%d; sleep 1" % i], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=self.env())
                 for i in range(20)]
        outs = [p.communicate(timeout=120) for p in procs]
        for i, (p, (out, err)) in enumerate(zip(procs, outs)):
            self.assertEqual(p.returncode, 0, "ssh %d: %s" % (i, err))
            self.assertEqual(out.strip(), "ssh-%d" % i)
        wait_until(lambda: self.metric(TUNNEL_ACTIVE) == 0, 20, message="all tunnels ended")

    def test_the_cap_refuses_exactly_the_ones_over_it(self):
        echo = _m["vms"]["echo"]
        held = []
        for _ in range(2):
            p = subprocess.Popen([postern_path(), "tunnel", "--vm", "capped01", "--port",
                                  str(echo.port), "--stdio"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=self.env(), start_new_session=True)
            self.addCleanup(stop_process, p)
            p.stdin.write(b"ping\n")
            p.stdin.flush()
            self.assertEqual(p.stdout.readline(), b"ping\n")  # echoed: connected
            held.append(p)
        r = self.cli("tunnel", "--vm", "capped01", "--port", str(echo.port), "--stdio")
        self.assertEqual(r.returncode, 8, r.stderr)
        self.assertIn("maximum of 2 sessions", r.stderr)
        for p in held:
            self.assertIsNone(p.poll(), "a tunnel within the cap ended")
            p.stdin.close()  # EOF: the tunnel half-closes, the echo VM closes
            self.assertEqual(p.wait(timeout=20), 0, p.stderr.read())

    def refused(self, vm_name, port, code, words, user="alice"):
        echo = _m["vms"]["echo"]
        before = echo.accepted
        r = self.cli("tunnel", "--vm", vm_name, "--port", str(port), "--stdio", user=user,
                     input="hello\n")
        self.assertEqual(r.returncode, code, r.stderr)
        self.assertIn(words, r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertEqual(echo.accepted, before, "the VM was reached")

    def test_refusals_have_their_exit_code_and_words(self):
        echo = _m["vms"]["echo"].port
        self.refused("echo01", 25, 9, "port 25 is not a management port of echo01")
        self.refused("nosuch01", echo, 11, "nosuch01")
        self.refused("echo01", echo, 6, "", user="carol")
        self.refused("jit01", echo, 7, "just-in-time")

    def test_an_unreachable_vm(self):
        r = self.cli("tunnel", "--vm", "dead01", "--port",
                     str(self.gw.config["vms"][5]["tunnel_ports"][0]), "--stdio")
        self.assertEqual(r.returncode, 10, r.stderr)
        self.assertIn("refused", r.stderr)

    def test_a_vm_that_resets_mid_transfer(self):
        mark = audit_mark(self.gw)
        r = self.cli("tunnel", "--vm", "reset01", "--port", str(_m["vms"]["reset"].port),
                     "--stdio", input="x" * (1 << 20), timeout=60)
        self.assertEqual(r.returncode, 10, r.stderr)
        self.assertIn("reset", r.stderr)
        end = wait_until(lambda: audit_events(self.gw, "session.end", since=mark,
                                              vm="reset01"), 10, message="session.end")
        self.assertEqual(end[0]["reason"], "reset")
        self.assertGreaterEqual(end[0]["bytes_in"], 300000)

    def test_a_client_killed_mid_transfer(self):
        mark = audit_mark(self.gw)
        echo = _m["vms"]["echo"]
        p = subprocess.Popen([postern_path(), "tunnel", "--vm", "echo01", "--port",
                              str(echo.port), "--stdio"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env(),
                             start_new_session=True)
        self.addCleanup(stop_process, p)
        before = echo.accepted
        p.stdin.write(os.urandom(100000))
        p.stdin.flush()
        got = p.stdout.read1(65536)
        self.assertTrue(got)
        wait_until(lambda: echo.accepted > before, 10, message="the VM connected")
        echo.peer_closed.clear()
        p.kill()
        p.wait()
        wait_until(lambda: echo.peer_closed.is_set(), 20, message="the VM saw the close")
        end = wait_until(lambda: audit_events(self.gw, "session.end", since=mark,
                                              vm="echo01"), 20, message="session.end")
        self.assertGreater(end[0]["bytes_in"], 0)
        self.assertGreater(end[0]["bytes_out"], 0)
        wait_until(lambda: self.metric(TUNNEL_ACTIVE) == 0, 20, message="no tunnel active")


class RdpThroughTunnelTests(CliCase):
    @classmethod
    def setUpClass(cls):
        cls.rdp = RdpShadow()
        cls.addClassCleanup(cls.rdp.close)
        cls.rdp.start()
        super().setUpClass()
        r = subprocess.run([postern_path(), "login", "--gateway", cls.url, "--pin", cls.pin,
                            "--user", "alice", "--password-stdin"],
                           input=_m["passwords"]["alice"] + "\n", capture_output=True,
                           text=True, timeout=60, env=cls.env("alice"))
        if r.returncode != 0:
            raise AssertionError("login: %s" % r.stderr)

    @classmethod
    def vms(cls):
        v = cls.rdp.vm_config("win01", tags=["lab"])
        return [v]

    def test_xfreerdp_auth_only_through_postern_rdp(self):
        rdp = self.rdp
        with TempDir("postern-xfreerdp-") as home:
            env = _x_env(rdp.client_display, home)
            env["XDG_CONFIG_HOME"] = os.path.join(self.home("alice"), "config")
            args = ["/u:" + rdp.user, "/log-level:INFO",
                    "/cert:fingerprint:sha256:" + rdp.cert_sha256.lower(), "+auth-only"]
            ok = subprocess.run([postern_path(), "rdp", "win01", "--",
                                 "/p:" + rdp.password, *args],
                                capture_output=True, text=True, timeout=60, env=env)
            self.assertEqual(ok.returncode, 0, ok.stdout[-2000:] + ok.stderr[-2000:])
            bad = subprocess.run([postern_path(), "rdp", "win01", "--", "/p:wrong", *args],
                                 capture_output=True, text=True, timeout=60, env=env)
            self.assertNotEqual(bad.returncode, 0)

    def test_a_held_rdp_session_through_listen(self):
        rdp = self.rdp
        lis = Listener(self, "win01", rdp.port)
        rc, out = xfreerdp_auth_only(LOOPBACK, lis.port, rdp.user, rdp.password,
                                     display=rdp.client_display, cert=rdp.cert_sha256)
        self.assertEqual(rc, 0, out[-3000:])
        res = xfreerdp_session(LOOPBACK, lis.port, rdp.user, rdp.password, seconds=3.0,
                               display=rdp.client_display, cert=rdp.cert_sha256)
        self.assertTrue(res.ok, repr(res))
        self.assertIsNone(lis.proc.poll())


if __name__ == "__main__":
    unittest.main()
