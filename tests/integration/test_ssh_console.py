"""The browser SSH console, /ws/ssh, end to end.

A real OpenSSH server on 127.0.0.1 (the Sshd fixture) stands for the VM, a
real posternd sits in between, and WsConsole (postern_fixtures) plays the
browser: the session cookie from POST /api/login, the Origin header, the
connect message, keystrokes in binary frames, resize messages.

One sshd and one users file serve the whole module. ConsoleTests share one
gateway that carries every VM the tests need (pinned, wrong pin, trust on
first use, capped, down, silent, another team's); GatewayCapTests start
their own, because per-user and per-gateway caps would cap every test.
"""

import base64
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import socket
import stat
import time
import unittest

from postern_fixtures import (
    LOOPBACK, ApiClient, HealthPoller, SilentTcpServer, Sshd, UsersFile,
    WsConsole, WsRefused, checked_gateway, free_port, gateway_metrics,
    audit_events, audit_mark, make_temp_dir, postern, process_rss_kib, run, wait_until,
)

# ops reaches the VMs tagged lab; dba reaches db* only.
ROLES = {
    "ops": {"vms": ["tag:lab"], "actions": ["ssh-login"]},
    "dba": {"vms": ["db*"], "actions": ["ssh-login"]},
}
USERS = {"alice": ("ops",), "bob": ("ops",), "carol": ("dba",)}
LENIENT = {"free_failures": 1000, "max_delay_seconds": 0,
           "lock_failures": 1000, "lock_seconds": 1}
# The gateway's connect timeout (TCP + SSH handshake + authentication).
CONNECT_TIMEOUT = 10.0
# Generous: the suite also runs under AddressSanitizer on two shared cores.
SLACK = 10.0
SSH_ACTIVE = ("postern_sessions_active", '{protocol="ssh"}')
BYTES_OUT = ("postern_bytes_total", '{direction="out"}')
READY_ORDER = ["ready: send connect", "connecting", "negotiating",
               "authenticating", "connected"]

_m = {}


def setUpModule():
    sshd = Sshd()
    unittest.addModuleCleanup(sshd.close)
    sshd.start()
    d = make_temp_dir(None, prefix="postern-console-")
    unittest.addModuleCleanup(shutil.rmtree, d, ignore_errors=True)
    # A second client key, protected by a passphrase, authorised as well.
    pass_key = os.path.join(d, "client_pass_ed25519")
    passphrase = "pp-" + secrets.token_urlsafe(12)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C",
         "postern-itest-pass", "-f", pass_key])
    with open(pass_key + ".pub") as src, \
            open(os.path.join(sshd.dir, "authorized_keys"), "a") as dst:
        dst.write(src.read())
    users = UsersFile(os.path.join(d, "users.json"))
    passwords = {}
    for name, roles in USERS.items():
        passwords[name] = "pw-" + secrets.token_urlsafe(12)
        users.add(name, passwords[name], roles)
    _m.update(sshd=sshd, dir=d, users=users, passwords=passwords,
              pass_key=pass_key, passphrase=passphrase)


def wrong_fingerprint():
    """A well-formed SHA256 fingerprint of no key at all."""
    return "SHA256:" + base64.b64encode(os.urandom(32)).decode().rstrip("=")


def read_text(path):
    with open(path) as f:
        return f.read()


class ConsoleCase(unittest.TestCase):
    """Helpers; subclasses set cls.gw and cls.cookies in setUpClass."""

    @classmethod
    def start_gateway(cls, vms, **extra):
        cls.sshd = _m["sshd"]
        cfg = {"users_file": _m["users"].path, "roles": ROLES, "vms": vms,
               "auth": {"throttle": LENIENT}}
        cfg.update(extra)
        cls.gw = checked_gateway(cls, cfg, cleanup=cls.addClassCleanup)
        cls.cookies = {}
        for name in USERS:
            c = ApiClient(cls.gw)
            r = c.login(name, _m["passwords"][name])
            if r.status != 200 or not c.cookie:
                raise AssertionError("login %s: %r" % (name, r))
            cls.cookies[name] = c.cookie

    def setUp(self):
        self.assertTrue(self.gw.alive(), "the gateway died in an earlier test")

    def console(self, vm="linux01", user="alice", ready=True, **kw):
        """An open WebSocket (closed when the test ends)."""
        c = WsConsole(self.gw, vm, cookie=self.cookies[user], **kw)
        self.addCleanup(c.close)
        return c.open(expect_ready=ready)

    def shell(self, vm="linux01", user="alice", **connect):
        """A console connected to the VM's shell with the sshd account."""
        c = self.console(vm, user)
        if not connect:
            connect = {"password": self.sshd.password}
        c.connect(self.sshd.user, **connect)
        return c

    def refused_connect(self, c, timeout=None, **connect):
        """Sends connect, expects the session to end; returns (message,
        close code, close reason) and checks they agree."""
        if not connect:
            connect = {"password": self.sshd.password}
        c.connect(self.sshd.user, wait=False, **connect)
        return self.ended(c, timeout)

    def ended(self, c, timeout=None):
        msg, code, reason = c.wait_end(timeout=timeout or 15.0)
        self.assertIsNotNone(msg, "no closed/error message before the close: "
                             + c.describe())
        self.assertIsNotNone(code, "the connection ended without a close "
                             "frame: " + c.describe())
        self.assertEqual(reason, msg["message"].encode()[:123].decode(
            errors="ignore"), "the close reason repeats the message")
        return msg, code, reason

    def audit(self, event=None, since=0, **fields):
        return audit_events(self.gw, event, since, **fields)

    def audit_mark(self):
        return audit_mark(self.gw)

    def metric(self, key):
        return gateway_metrics(self.gw).get(key)

    def statuses(self, c):
        return [m.get("message") for m in c.messages
                if isinstance(m, dict) and m.get("type") == "status"]

    def assert_serving(self, vm="linux01"):
        """/healthz answers and a new session reaches the shell."""
        self.assertEqual(self.gw.https_get("/healthz").status, 200)
        c = self.shell(vm)
        self.assertIn(b"still-serving", c.run("echo still-''serving"))
        c.close()


class ConsoleTests(ConsoleCase):

    @classmethod
    def setUpClass(cls):
        sshd = _m["sshd"]
        cls.silent = SilentTcpServer().start()
        cls.addClassCleanup(cls.silent.close)
        cls.down_port = free_port()
        cls.bad_pin = wrong_fingerprint()

        def vm(name, port=None, **ssh):
            """A lab VM at `port` (default: the sshd), pinned to the sshd's
            key unless the keyword arguments say otherwise."""
            if "trust_on_first_use" not in ssh:
                ssh.setdefault("host_key_sha256", sshd.host_key_sha256)
            return {"name": name, "address": LOOPBACK, "tags": ["lab"],
                    "ssh": {"port": port or sshd.port, **ssh}}

        vms = [
            sshd.vm_config("linux01", tags=["lab"]),
            sshd.vm_config("capped", tags=["lab"], max_sessions=2),
            vm("badpin", host_key_sha256=cls.bad_pin),
            vm("tofu01", trust_on_first_use=True),
            vm("down", port=cls.down_port),
            vm("silent", port=cls.silent.port),
            sshd.vm_config("db01", tags=["prod"]),
        ]
        cls.start_gateway(vms)

    # -- the terminal ------------------------------------------------------------

    def test_echo_round_trip_with_password(self):
        c = self.shell()
        statuses = self.statuses(c)
        self.assertEqual([s for s in statuses if s in READY_ORDER], READY_ORDER,
                         "status messages out of order: %r" % statuses)
        # The typed line shows "$((6*7))"; only the shell prints 42.
        out = c.run("echo po''stern-$((6*7)); id -un")
        self.assertIn(b"postern-42\r\n", out)
        self.assertIn(self.sshd.user.encode() + b"\r\n", out)
        self.assertIn(b"echo po''stern-$((6*7))", out, "no echo of the typed line")
        self.gw.log.wait_for_event("session.start", user="alice", vm="linux01")

    def test_large_output_arrives_intact(self):
        # 1,000,000 random bytes as one base64 line (no newline, so the
        # terminal's \n -> \r\n translation cannot touch it), measured on the
        # VM, then printed between two markers and measured here.
        c = self.shell()
        out = c.run('f=$(mktemp) && head -c 1000000 /dev/urandom | base64 -w0 > "$f"'
                    ' && wc -c < "$f" && sha256sum < "$f"', timeout=60)
        m = re.search(rb"(?<![0-9])(\d+)\r\n([0-9a-f]{64})  -\r\n", out)
        self.assertIsNotNone(m, "no size and hash in %r" % out[-300:])
        size, digest = int(m.group(1)), m.group(2).decode()
        self.assertEqual(size, 1333336)
        start = len(c.output)
        c.type('echo S$((40+2))S; cat "$f"; echo; echo E$((40+3))E; rm -f "$f"\r')
        begin = c.wait_output(b"S42S\r\n", since=start, timeout=30)
        end = c.wait_output(b"\r\nE43E\r\n", since=begin, timeout=60)
        got = bytes(c.output[begin:end - len(b"\r\nE43E\r\n")])
        self.assertEqual(len(got), size, "bytes lost or added on the way")
        self.assertEqual(hashlib.sha256(got).hexdigest(), digest)

    def test_resize_reaches_the_terminal(self):
        c = self.shell()
        self.assertRegex(c.run("stty size"), rb"(?<![0-9])24 80\r\n")
        c.resize(132, 43)
        # The resize and the next keystrokes travel in order; poll anyway so
        # that only a resize that never arrives fails.
        wait_until(lambda: re.search(rb"(?<![0-9])43 132\r\n", c.run("stty size")), 15,
                   interval=0.2, message="stty size to show 43 132")
        c.resize(61, 17)
        wait_until(lambda: re.search(rb"(?<![0-9])17 61\r\n", c.run("stty size")), 15,
                   interval=0.2, message="stty size to show 17 61")

    def test_exit_status_and_normal_close(self):
        # Whether sshd's EOF and exit-status reach the gateway in one read or
        # two is timing; the next test forces two.
        c = self.shell()
        c.run("true")
        mark = self.audit_mark()
        c.type("exit 7\r")
        msg, code, _ = self.ended(c)
        self.assertEqual(msg["type"], "closed", msg)
        self.assertEqual(msg.get("exit_status"), 7, msg)
        self.assertIn("exit status 7", msg["message"])
        self.assertEqual(code, 1000)
        end = self.audit("session.end", since=mark, vm="linux01")
        self.assertEqual(len(end), 1, end)
        self.assertEqual(end[0]["reason"], "closed")

    def test_exit_after_the_terminal_closed_first(self):
        # The shell's terminal goes away a second before the shell exits:
        # sshd sends the channel EOF first and exit-status + close later, in
        # another packet. The gateway must still read them and end the
        # session with the exit status (real `ssh -tt` does).
        c = self.shell()
        c.run("true")
        c.type("exec sh -c 'exec </dev/null >/dev/null 2>&1; sleep 1; exit 7'\r")
        msg, code, _ = self.ended(c, timeout=10)
        self.assertEqual(msg["type"], "closed", msg)
        self.assertEqual(msg.get("exit_status"), 7, msg)
        self.assertEqual(code, 1000)

    # -- logging in --------------------------------------------------------------

    def test_private_key_login(self):
        key = read_text(self.sshd.client_key)
        c = self.shell(private_key=key)
        self.assertIn(b"key-login", c.run("echo key-''login"))
        c.close()
        self.assertNotIn(key.split("\n")[1], read_text(self.gw.audit_log_path))
        self.assertNotIn(key.split("\n")[1], self.gw.stderr_text())

    def test_private_key_with_passphrase(self):
        key = read_text(_m["pass_key"])
        c = self.shell(private_key=key, passphrase=_m["passphrase"])
        self.assertIn(b"pass-login", c.run("echo pass-''login"))
        c.close()
        c = self.console()
        msg, code, _ = self.refused_connect(c, private_key=key,
                                            passphrase="not-" + _m["passphrase"])
        self.assertEqual(msg["type"], "error", msg)
        self.assertIn("authentication", msg["message"])
        self.assertEqual(code, 1008)
        self.assertNotIn(_m["passphrase"], self.gw.stderr_text())

    def test_wrong_password_then_the_gateway_keeps_serving(self):
        wrong = "wrong-" + secrets.token_urlsafe(10)
        mark = self.gw.log.mark()
        c = self.console()
        msg, code, _ = self.refused_connect(c, timeout=CONNECT_TIMEOUT + SLACK,
                                            password=wrong)
        self.assertEqual(msg["type"], "error", msg)
        self.assertIn("authentication", msg["message"])
        self.assertEqual(code, 1008)
        self.assertEqual(bytes(c.output), b"", "terminal output without a login")
        self.gw.log.wait_for_event("ssh.end", since=mark, vm="linux01",
                                   why="auth_failed")
        self.assertNotIn(wrong, self.gw.stderr_text())
        self.assertNotIn(wrong, read_text(self.gw.audit_log_path))
        self.assert_serving()

    # -- host keys ---------------------------------------------------------------

    def offered(self):
        return {k.fingerprint for k in self.sshd.host_keys.values()}

    def test_pinned_host_key_mismatch_is_refused(self):
        mark = self.audit_mark()
        c = self.console("badpin")
        msg, code, _ = self.refused_connect(c, timeout=CONNECT_TIMEOUT + SLACK)
        self.assertEqual(msg["type"], "error", msg)
        self.assertIn("host key", msg["message"])
        self.assertEqual(code, 1008)
        self.assertEqual(bytes(c.output), b"")
        self.assertNotIn("authenticating", self.statuses(c),
                         "credentials were offered to an impostor")
        ev = self.audit("hostkey.mismatch", since=mark, vm="badpin")
        self.assertEqual(len(ev), 1, self.audit(since=mark))
        self.assertEqual(ev[0]["user"], "alice")
        m = re.fullmatch(r"expected (\S+), the VM offered (\S+)", ev[0]["detail"])
        self.assertIsNotNone(m, ev[0])
        self.assertEqual(m.group(1), self.bad_pin)
        self.assertIn(m.group(2), self.offered())

    def test_trust_on_first_use(self):
        path = os.path.join(self.gw.state_dir, "known_hosts", "tofu01.ssh")
        self.assertFalse(os.path.exists(path))
        mark = self.audit_mark()
        c = self.shell("tofu01")
        self.assertIn(b"first-use", c.run("echo first-''use"))
        c.close()
        learned = read_text(path).strip()
        self.assertIn(learned, self.offered())
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode) & 0o077, 0,
                         "known_hosts file readable by others")
        ev = self.audit("hostkey.learned", since=mark, vm="tofu01")
        self.assertEqual([e["sha256"] for e in ev], [learned])

        # Known now: used again, not learned again.
        c = self.shell("tofu01")
        self.assertIn(b"second-use", c.run("echo second-''use"))
        c.close()
        self.assertEqual(read_text(path).strip(), learned)
        self.assertEqual(len(self.audit("hostkey.learned", since=mark)), 1)

        # The stored key is enforced: a different one is refused.
        other = wrong_fingerprint()
        with open(path, "w") as f:
            f.write(other + "\n")
        mark = self.audit_mark()
        c = self.console("tofu01")
        msg, code, _ = self.refused_connect(c, timeout=CONNECT_TIMEOUT + SLACK)
        self.assertEqual(msg["type"], "error", msg)
        self.assertIn("host key", msg["message"])
        self.assertEqual(code, 1008)
        self.assertEqual(bytes(c.output), b"")
        ev = self.audit("hostkey.mismatch", since=mark, vm="tofu01")
        self.assertEqual(len(ev), 1, self.audit(since=mark))
        self.assertIn(other, ev[0]["detail"])
        self.assertEqual(read_text(path).strip(), other,
                         "a mismatch must not overwrite the stored key")

    # -- caps and permissions ----------------------------------------------------

    def test_vm_cap(self):
        c1 = self.shell("capped")
        c2 = self.shell("capped")
        mark = self.audit_mark()
        c3 = self.console("capped")
        msg, code, reason = self.refused_connect(c3)
        self.assertEqual(msg, {"type": "error", "state": "closed", "reason": "cap_reached",
                               "message": "VM capped already has its maximum of 2 sessions"})
        self.assertEqual(code, 1013)
        self.assertNotIn("connecting", self.statuses(c3), "the VM was contacted")
        denied = self.audit("access.denied", since=mark, vm="capped")
        self.assertEqual([e["reason"] for e in denied], [msg["message"]])
        self.assertEqual(self.audit("session.start", since=mark), [])

        log_mark = self.gw.log.mark()
        c1.close()
        self.gw.log.wait_for_event("session.end", since=log_mark, vm="capped")
        c4 = self.shell("capped")
        self.assertIn(b"cap-ok", c4.run("echo cap-''ok"))
        self.assertIn(b"still-2", c2.run("echo still-''2"))

    def test_user_without_a_role_on_the_vm_is_told_over_the_websocket(self):
        for user, vm in (("carol", "linux01"), ("alice", "db01")):
            with self.subTest(user=user, vm=vm):
                mark = self.audit_mark()
                c = self.console(vm, user, ready=False)   # the upgrade succeeds
                msg, code, _ = self.ended(c)
                self.assertEqual(msg["type"], "error", msg)
                self.assertIn("may not", msg["message"])
                self.assertIn(vm, msg["message"])
                self.assertEqual(code, 1008)
                self.assertNotIn("ready: send connect", self.statuses(c))
                ev = self.audit("access.denied", since=mark, user=user, vm=vm)
                self.assertEqual(len(ev), 1, self.audit(since=mark))
        c = self.console("nosuchvm", ready=False)
        msg, code, _ = self.ended(c)
        self.assertEqual(msg["type"], "error", msg)
        self.assertIn("nosuchvm", msg["message"])
        self.assertEqual(code, 1008)

    def test_upgrade_refusals(self):
        cookie = self.cookies["alice"]
        cases = [
            ("foreign Origin", dict(cookie=cookie, origin="https://evil.example"), 403),
            ("no Origin", dict(cookie=cookie, origin=None), 403),
            ("no cookie", dict(), 401),
            ("unknown cookie", dict(cookie=secrets.token_hex(32)), 401),
            ("no vm=", dict(cookie=cookie, query=""), 400),
        ]
        for name, kw, status in cases:
            with self.subTest(name):
                c = WsConsole(self.gw, "linux01", **kw)
                with self.assertRaises(WsRefused) as cm:
                    c.open()
                self.assertEqual(cm.exception.status, status, cm.exception)
                body = cm.exception.response.json()
                self.assertIsInstance(body.get("error"), str, body)
        self.assert_serving()

    # -- flow control ------------------------------------------------------------

    def test_slow_reader_bounds_gateway_memory(self):
        # `yes` writes as fast as the pty lets it (about 7 MB/s here) while
        # this client stops reading for STALL seconds. With back-pressure the
        # gateway queues at most 128 KiB, then stops reading the channel;
        # the kernel buffers fill and the VM waits. Without it every byte is
        # queued: with the pause switched off in a scratch build, RSS grew by
        # 99 MiB over the stall and was still growing at 7 MB/s.
        #
        # Bound: RSS at most baseline + 48 MiB. Measured with back-pressure:
        # +0.1 MiB (Debug), +24 MiB (ASan: allocator quarantine during the
        # first fill, flat after). And after the first half of the stall
        # neither RSS nor the gateway's bytes-out counter may keep growing
        # (measured: +0.4 MiB and 0 bytes).
        STALL = 10.0
        BOUND_KIB = 48 * 1024
        c = self.shell()
        c.run("true")
        baseline = process_rss_kib(self.gw.pid)
        c.type("yes\r")
        c.wait_output(b"y\r\ny\r\ny\r\n", timeout=15)
        # From here on nothing is read until the stall is over.
        t0 = time.monotonic()
        samples = []
        mid_rss = mid_out = None
        while time.monotonic() - t0 < STALL:
            samples.append(process_rss_kib(self.gw.pid))
            if mid_out is None and time.monotonic() - t0 >= STALL / 2:
                mid_rss, mid_out = samples[-1], self.metric(BYTES_OUT)
            time.sleep(0.2)
        end_rss, end_out = process_rss_kib(self.gw.pid), self.metric(BYTES_OUT)
        peak = max(samples + [end_rss])
        detail = ("baseline %d KiB, peak %d KiB, mid %d KiB, end %d KiB, "
                  "bytes out mid %d end %d" % (baseline, peak, mid_rss, end_rss,
                                               mid_out, end_out))
        print("\nflow control: " + detail)
        self.assertLess(peak - baseline, BOUND_KIB, detail)
        self.assertLess(end_rss - mid_rss, 4 * 1024, "RSS still growing: " + detail)
        self.assertLess(end_out - mid_out, 1 << 20,
                        "the gateway kept reading the VM: " + detail)
        self.assertEqual(self.gw.https_get("/healthz").status, 200)

        # Reading again: the backlog drains, Ctrl-C stops yes, the shell
        # answers.
        resume = len(c.output)
        c.type(b"\x03")
        c.wait_output(b"^C", since=resume, timeout=60)
        self.assertIn(b"after-stall", c.run("echo after-''stall", timeout=30))

    # -- VMs that do not answer ----------------------------------------------------

    def test_vm_refusing_connections(self):
        mark = self.gw.log.mark()
        c = self.console("down")
        msg, code, _ = self.refused_connect(c, timeout=CONNECT_TIMEOUT)
        self.assertEqual(msg["type"], "error", msg)
        self.assertRegex(msg["message"], "refused|unreachable")
        self.assertEqual(code, 1008)
        self.gw.log.wait_for_event("ssh.end", since=mark, vm="down")
        self.assert_serving()

    def test_vm_that_never_speaks_ssh_times_out(self):
        accepted = self.silent.accepted
        mark = self.gw.log.mark()
        with HealthPoller(self.gw) as hp:
            c = self.console("silent")
            c.connect(self.sshd.user, password=self.sshd.password, wait=False)
            t0 = time.monotonic()
            c.wait_message("status", match=lambda m: m["message"] == "negotiating",
                           timeout=CONNECT_TIMEOUT)
            # Meanwhile another session works and /healthz answers.
            other = self.shell()
            self.assertIn(b"meanwhile", other.run("echo mean''while"))
            other.close()
            hp.wait_for_successes(2)
            msg, code, _ = self.ended(
                c, timeout=max(1.0, CONNECT_TIMEOUT + SLACK - (time.monotonic() - t0)))
        hp.assert_healthy(self)
        self.assertEqual(msg["type"], "error", msg)
        self.assertRegex(msg["message"], "time")
        self.assertEqual(code, 1008)
        self.assertGreater(self.silent.accepted, accepted, "the silent VM was not reached")
        self.gw.log.wait_for_event("ssh.end", since=mark, vm="silent", why="timeout")

    # -- malformed client messages -------------------------------------------------

    def test_malformed_client_messages(self):
        big = {"type": "connect", "username": "x", "password": "x" * (100 << 10),
               "cols": 80, "rows": 24}
        cases = [
            ("not JSON", lambda c: c.send_frame(c.TEXT, "hello gateway"),
             "JSON", 1007),
            ("JSON but not an object", lambda c: c.send_json(["connect"]),
             "JSON", 1007),
            ("keystrokes before connect", lambda c: c.type(b"ls\r"),
             "connect", 1008),
            ("connect without a size", lambda c: c.send_json(
                {"type": "connect", "username": "x", "password": "y"}), "cols", 1007),
            ("100 KiB message", lambda c: c.send_json(big), "too large", 1009),
            ("100 KiB in fragments", self.send_fragmented, "too large", 1009),
        ]
        for name, send, words, want_code in cases:
            with self.subTest(name):
                c = self.console()
                with contextlib.suppress(OSError):
                    send(c)
                msg, code, _ = self.ended(c)
                self.assertEqual(msg["type"], "error", msg)
                self.assertIn(words, msg["message"])
                self.assertEqual(code, want_code)

        with self.subTest("unknown type"):
            c = self.console()
            c.send_json({"type": "launch"})
            msg = c.wait_message("error")
            self.assertIn("unknown", msg["message"])

        with self.subTest("bad resize in a session"):
            c = self.shell()
            since = len(c.messages)
            c.resize(0, 5000)
            msg = c.wait_message("error", since=since)
            self.assertIn("resize", msg["message"])
            self.assertIn(b"after-bad-resize", c.run("echo after-bad-''resize"))

        self.assert_serving()

    @staticmethod
    def send_fragmented(c):
        part = b"x" * (40 << 10)
        c.send_frame(c.TEXT, b'{"type":"connect","password":"' + part, fin=False)
        c.send_frame(c.CONT, part, fin=False)
        c.send_frame(c.CONT, part + b'"}', fin=True)

    # -- audit and metrics ---------------------------------------------------------

    def test_audit_and_metrics_of_a_session(self):
        wait_until(lambda: self.metric(SSH_ACTIVE) == 0, 10,
                   message="no ssh session left from earlier tests")
        mark = self.audit_mark()
        log_mark = self.gw.log.mark()
        c = self.shell()
        self.assertEqual(self.metric(SSH_ACTIVE), 1)
        c.run("echo au''dit")
        # Wait for the prompt: then the shell is idle and every byte the VM
        # sent has reached this client.
        c.wait_output(re.compile(rb"\$ \Z"), since=len(c.output) - 2)
        c.close()
        self.gw.log.wait_for_event("session.end", since=log_mark, vm="linux01")
        wait_until(lambda: self.metric(SSH_ACTIVE) == 0, 10,
                   message="sessions_active back to 0")

        start = self.audit("session.start", since=mark)
        end = self.audit("session.end", since=mark)
        self.assertEqual(len(start), 1, self.audit(since=mark))
        self.assertEqual(len(end), 1, self.audit(since=mark))
        s, e = start[0], end[0]
        self.assertEqual(
            {k: s.get(k) for k in ("user", "vm", "protocol", "action", "login", "source")},
            {"user": "alice", "vm": "linux01", "protocol": "ssh", "action": "ssh-login",
             "login": self.sshd.user, "source": "127.0.0.1"})
        self.assertRegex(s["session"], r"^[0-9a-f]{32}$")
        self.assertEqual(e["session"], s["session"])
        self.assertEqual((e["user"], e["vm"], e["protocol"]), ("alice", "linux01", "ssh"))
        self.assertEqual(e["bytes_in"], c.keys_sent, "bytes_in is what was typed")
        self.assertEqual(e["bytes_out"], len(c.output), "bytes_out is what arrived")
        self.assertIsInstance(e["duration"], int)
        self.assertGreaterEqual(e["duration"], 0)
        self.assertEqual(e["reason"], "client closed")
        self.assertLess(self.audit(since=mark).index(s), self.audit(since=mark).index(e))

        log = read_text(self.gw.audit_log_path) + self.gw.stderr_text()
        self.assertNotIn(self.sshd.password, log)
        r = postern("audit", "verify", self.gw.audit_log_path, check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


class GatewayCapTests(ConsoleCase):
    """limits.max_sessions_per_user and limits.max_sessions."""

    @classmethod
    def setUpClass(cls):
        cls.start_gateway([_m["sshd"].vm_config("linux01", tags=["lab"])],
                          limits={"max_sessions_per_user": 2, "max_sessions": 3})

    def test_per_user_and_gateway_caps(self):
        a1 = self.shell(user="alice")
        self.shell(user="alice")
        a3 = self.console(user="alice")
        msg, code, _ = self.refused_connect(a3)
        self.assertEqual(msg, {"type": "error", "state": "closed", "reason": "cap_reached",
                               "message": "you already have your maximum of 2 sessions"})
        self.assertEqual(code, 1013)

        # bob is under his own cap; his first session fills the gateway.
        self.shell(user="bob")
        b2 = self.console(user="bob")
        msg, code, _ = self.refused_connect(b2)
        self.assertEqual(msg, {"type": "error", "state": "closed", "reason": "cap_reached",
                               "message": "this gateway already carries its maximum of 3 sessions"})
        self.assertEqual(code, 1013)
        self.assertEqual(self.metric(SSH_ACTIVE), 3)

        mark = self.gw.log.mark()
        a1.close()
        self.gw.log.wait_for_event("session.end", since=mark, user="alice")
        a4 = self.shell(user="alice")
        self.assertIn(b"room-again", a4.run("echo room-''again"))



class MaxDurationTests(ConsoleCase):
    """limits.max_session_seconds: warned, then cut, typing or not."""

    @classmethod
    def setUpClass(cls):
        cls.start_gateway([_m["sshd"].vm_config("linux01", tags=["lab"])],
                          limits={"max_session_seconds": 4, "idle_timeout_seconds": 0})

    def test_warned_then_ended_while_typing(self):
        c = self.shell()
        started = time.monotonic()
        mark = self.audit_mark()

        def warning():
            return next((m for m in c.messages if isinstance(m, dict)
                         and m.get("warning") == "max_duration"), None)

        # Keep typing while reading: activity does not extend the maximum.
        next_key = 0.0
        while warning() is None and c.close_code is None and not c.eof \
                and time.monotonic() - started < 4 + SLACK:
            if time.monotonic() >= next_key:
                c.type("x")
                next_key = time.monotonic() + 0.3
            with contextlib.suppress(socket.timeout):
                c.recv_event(0.1)
        warning = warning()
        self.assertIsNotNone(warning, "no max_duration warning: " + c.describe())
        self.assertEqual(warning["type"], "status")
        # Half of a 4 s maximum is left when the warning goes out.
        self.assertRegex(warning["message"], r"^the session will end in [12] s: maximum duration$")
        msg, code, _ = self.ended(c)
        elapsed = time.monotonic() - started
        self.assertEqual(msg, {"type": "closed", "state": "closed", "reason": "max_duration",
                               "message": "the session reached its maximum duration of 4 s"})
        self.assertEqual(code, 1008)
        self.assertGreaterEqual(elapsed, 3.0, "cut before the maximum")
        end = self.audit("session.end", since=mark, vm="linux01")
        self.assertEqual([e["reason"] for e in end], ["max_duration"])
        self.assertEqual(self.metric(SSH_ACTIVE), 0)
        self.assert_serving()


class IdleTimeoutTests(ConsoleCase):
    """limits.idle_timeout_seconds: warned, typing resets it, then cut."""

    @classmethod
    def setUpClass(cls):
        cls.start_gateway([_m["sshd"].vm_config("linux01", tags=["lab"])],
                          limits={"idle_timeout_seconds": 3, "max_session_seconds": 0})

    def idle_warnings(self, c):
        return [m for m in c.messages if isinstance(m, dict) and m.get("warning") == "idle"]

    def test_warned_reset_by_typing_then_ended(self):
        c = self.shell()
        mark = self.audit_mark()
        c.wait(lambda: self.idle_warnings(c), timeout=3 + SLACK, what="an idle warning")
        first = self.idle_warnings(c)[0]
        self.assertEqual(first["type"], "status")
        self.assertRegex(first["message"], r"^the session will close in [12] s unless you type$")
        # A key typed after the warning restarts the clock: the session
        # outlives the first deadline and is warned again later.
        typed = time.monotonic()
        self.assertIn(b"still-here", c.run("echo still-''here"))
        c.wait(lambda: len(self.idle_warnings(c)) >= 2, timeout=3 + SLACK,
               what="a second idle warning")
        msg, code, _ = self.ended(c)
        self.assertGreaterEqual(time.monotonic() - typed, 2.5, "cut before the idle time")
        self.assertEqual(msg, {"type": "closed", "state": "closed", "reason": "idle",
                               "message": "the session was idle for 3 s and has been closed"})
        self.assertEqual(code, 1008)
        end = self.audit("session.end", since=mark, vm="linux01")
        self.assertEqual([e["reason"] for e in end], ["idle"])
        self.assert_serving()


if __name__ == "__main__":
    unittest.main()
