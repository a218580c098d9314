"""The native tunnel's endpoint, /ws/tunnel, at the WebSocket level.

The gateway side alone, with our own RFC 6455 client (WsConsole on the
tunnel path) standing for `postern tunnel`: bytes both ways, half-close,
back-pressure, every refusal with its reason code and close code, the
audit events and metrics. The CLI end to end (real ssh, scp, xfreerdp)
is in test_tunnel.py.

The VMs are small TCP servers of our own on loopback ports (echo, a
source that floods, a sink that never reads, one that resets), each port
listed in the VM's tunnel_ports; the real sshd stands behind ssh.port.
"""

import hashlib
import os
import secrets
import shutil
import socket
import struct
import threading
import time
import unittest

from postern_fixtures import (
    LOOPBACK, ApiClient, Sshd, UsersFile, WsConsole, WsRefused, audit_events, audit_mark,
    checked_gateway, free_port, gateway_metrics, make_temp_dir, process_rss_kib, wait_until,
)

ROLES = {
    "eng": {"vms": ["tag:lab"], "actions": ["tunnel", "ssh-login"]},
    "console-only": {"vms": ["tag:lab"], "actions": ["ssh-login"]},
}
USERS = {"alice": ("eng",), "bob": ("eng",), "carol": ("console-only",)}
LENIENT = {"free_failures": 1000, "max_delay_seconds": 0,
           "lock_failures": 1000, "lock_seconds": 1}
TUNNEL_ACTIVE = ("postern_sessions_active", '{protocol="tunnel"}')
TUNNEL_TOTAL = ("postern_sessions_total", '{protocol="tunnel"}')

_m = {}


class TcpVm:
    """A loopback TCP server standing for a VM's port. mode: "echo" (sends
    back what it reads; closes its side after the client's EOF), "source"
    (sends `size` bytes of a known stream, then closes), "sink" (accepts
    and never reads), "reset" (reads `size` bytes, then resets)."""

    def __init__(self, mode, size=0):
        self.mode = mode
        self.size = size
        self.accepted = 0
        self.received = 0
        self.sent = 0              # bytes the kernel took from us (source)
        self.peer_closed = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            if self.mode == "echo":
                while True:
                    b = c.recv(65536)
                    if not b:
                        break
                    self.received += len(b)
                    c.sendall(b)
                c.shutdown(socket.SHUT_WR)
            elif self.mode == "source":
                data = memoryview(stream_bytes(self.size))
                while self.sent < self.size:
                    self.sent += c.send(data[self.sent:self.sent + 65536])
                c.shutdown(socket.SHUT_WR)
                while c.recv(65536):
                    pass
            elif self.mode == "sink":
                while not self.stopping:
                    time.sleep(0.05)
            elif self.mode == "reset":
                while self.received < self.size:
                    b = c.recv(65536)
                    if not b:
                        break
                    self.received += len(b)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        finally:
            if self.mode != "sink":
                self.peer_closed.set()
                c.close()

    def close(self):
        self.stopping = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def stream_bytes(n):
    """n bytes of a stream anyone can recompute."""
    block = hashlib.sha256(b"postern-tunnel").digest() * 2048  # 64 KiB
    reps = n // len(block) + 1
    return (block * reps)[:n]


def setUpModule():
    sshd = Sshd()
    unittest.addModuleCleanup(sshd.close)
    sshd.start()
    d = make_temp_dir(None, prefix="postern-wstunnel-")
    unittest.addModuleCleanup(shutil.rmtree, d, ignore_errors=True)
    users = UsersFile(os.path.join(d, "users.json"))
    passwords = {}
    for name, roles in USERS.items():
        passwords[name] = "pw-" + secrets.token_urlsafe(12)
        users.add(name, passwords[name], roles)
    vms = {}
    for mode, size in (("echo", 0), ("source", 48 << 20), ("sink", 0), ("reset", 300000)):
        vms[mode] = TcpVm(mode, size)
        unittest.addModuleCleanup(vms[mode].close)
    _m.update(sshd=sshd, users=users, passwords=passwords, vms=vms)


def vm_entry(name, port, **more):
    e = {"name": name, "address": LOOPBACK, "tags": ["lab"],
         "ssh": {"port": _m["sshd"].port, "host_key_sha256": _m["sshd"].host_key_sha256},
         "tunnel_ports": [port]}
    e.update(more)
    return e


class TunnelCase(unittest.TestCase):
    @classmethod
    def start_gateway(cls, vms, **extra):
        cfg = {"users_file": _m["users"].path, "roles": ROLES, "vms": vms,
               "auth": {"throttle": LENIENT}}
        cfg.update(extra)
        cls.gw = checked_gateway(cls, cfg, cleanup=cls.addClassCleanup)
        cls.tokens = {}
        cls.cookies = {}
        for name in USERS:
            c = ApiClient(cls.gw)
            r = c.login(name, _m["passwords"][name])
            if r.status != 200:
                raise AssertionError("login %s: %r" % (name, r))
            cls.cookies[name] = c.cookie
            t = c.create_token()
            if t.status != 201:
                raise AssertionError("token %s: %r" % (name, t))
            cls.tokens[name] = t.json()["token"]

    def setUp(self):
        self.assertTrue(self.gw.alive(), "the gateway died in an earlier test")

    def tunnel(self, vm, port, user="alice", token=None, **kw):
        kw.setdefault("origin", None)  # the CLI sends none
        c = WsConsole(self.gw, vm, token=token or self.tokens[user], path="/ws/tunnel",
                      query="vm=%s&port=%d" % (vm, port), **kw)
        self.addCleanup(c.close)
        return c.open(expect_ready=False)

    def send(self, c, data, chunk=60000):
        for i in range(0, len(data), chunk):
            c.send_frame(c.BINARY, data[i:i + chunk])

    def metric(self, key):
        return gateway_metrics(self.gw).get(key)

    def refused(self, c, reason, code):
        msg, close_code, close_reason = c.wait_end()
        self.assertIsNotNone(msg, "no last message: %s" % c.describe())
        self.assertEqual(msg.get("type"), "error", msg)
        self.assertEqual(msg.get("reason"), reason, msg)
        self.assertEqual(close_code, code)
        self.assertTrue(close_reason, "the close frame has no reason")
        self.assertEqual(len(c.output), 0, "bytes came through a refused tunnel")
        return msg


class TunnelTests(TunnelCase):
    @classmethod
    def setUpClass(cls):
        vms = _m["vms"]
        cls.start_gateway([
            vm_entry("echo01", vms["echo"].port),
            vm_entry("source01", vms["source"].port),
            vm_entry("sink01", vms["sink"].port),
            vm_entry("reset01", vms["reset"].port),
            vm_entry("rec01", vms["echo"].port, recording="required"),
            vm_entry("jit01", vms["echo"].port, jit={"required": True}),
            vm_entry("capped", vms["echo"].port, max_sessions=1),
            dict(vm_entry("other", vms["echo"].port), tags=["prod"]),
            {"name": "down", "address": LOOPBACK, "tags": ["lab"],
             "ssh": {"port": free_port(), "trust_on_first_use": True}},
        ])

    def test_bytes_both_ways_half_close_and_the_audit(self):
        mark = audit_mark(self.gw)
        c = self.tunnel("echo01", _m["vms"]["echo"].port)
        c.wait_message("status", match=lambda m: m.get("state") == "connected")
        data = os.urandom(1 << 20)
        self.send(c, data)
        c.wait(lambda: len(c.output) >= len(data), timeout=30, what="the echo")
        self.assertEqual(hashlib.sha256(bytes(c.output)).hexdigest(),
                         hashlib.sha256(data).hexdigest())
        # Our EOF reaches the VM as a half-close: it closes its side, which
        # comes back as the gateway's eof, then the end.
        c.send_json({"type": "eof"})
        c.wait_message("eof")
        msg, code, _ = c.wait_end()
        self.assertEqual(code, 1000)
        self.assertEqual(msg["type"], "closed")
        self.assertEqual(msg["bytes_in"], len(data))
        self.assertEqual(msg["bytes_out"], len(data))
        end = wait_until(lambda: audit_events(self.gw, "session.end", since=mark,
                                              vm="echo01"), 10, message="session.end")
        self.assertEqual(end[0]["protocol"], "tunnel")
        self.assertEqual(end[0]["bytes_in"], len(data))
        self.assertEqual(end[0]["bytes_out"], len(data))
        self.assertEqual(end[0]["reason"], "closed")
        self.assertEqual(end[0]["port"], _m["vms"]["echo"].port)
        start = audit_events(self.gw, "session.start", since=mark, vm="echo01")
        self.assertEqual([(s["protocol"], s["action"], s["user"]) for s in start],
                         [("tunnel", "tunnel", "alice")])

    def test_the_ssh_port_reaches_the_real_sshd(self):
        c = self.tunnel("echo01", _m["sshd"].port)
        c.wait_output(b"SSH-2.0-", timeout=15)
        c.close()

    def test_metrics_count_tunnels(self):
        total = self.metric(TUNNEL_TOTAL) or 0
        active = self.metric(TUNNEL_ACTIVE) or 0
        c = self.tunnel("echo01", _m["vms"]["echo"].port)
        c.wait_message("status", match=lambda m: m.get("state") == "connected")
        self.assertEqual(self.metric(TUNNEL_ACTIVE), active + 1)
        self.assertEqual(self.metric(TUNNEL_TOTAL), total + 1)
        c.close()
        wait_until(lambda: self.metric(TUNNEL_ACTIVE) == active, 10,
                   message="the tunnel no longer active")

    def test_a_slow_client_holds_the_vm_back_with_bounded_memory(self):
        # 48 MiB from the VM, nobody reading: the gateway must stop reading
        # the VM rather than buffer it. The direct measure is the VM's own
        # count of bytes the kernel took: once the socket buffers on the way
        # are full it must stop growing. Loopback buffers grow to a few MiB
        # each (tcp_rmem/tcp_wmem), so the count plateaus well below 48 MiB;
        # without back-pressure it would reach 48 MiB in a second.
        # RSS gets a loose bound too (ASan's quarantine keeps freed buffers).
        vm = _m["vms"]["source"]
        baseline = process_rss_kib(self.gw.pid)
        c = self.tunnel("source01", vm.port)
        time.sleep(2.0)
        first = vm.sent
        time.sleep(2.0)
        second = vm.sent
        held = process_rss_kib(self.gw.pid) - baseline
        detail = "VM sent %d then %d bytes; gateway RSS +%d KiB" % (first, second, held)
        print("\nback-pressure: " + detail)
        self.assertEqual(first, second, "the gateway kept reading: " + detail)
        self.assertLess(second, 24 << 20, detail)
        self.assertLess(held, 48 * 1024, detail)
        c.wait(lambda: len(c.output) >= vm.size, timeout=120, what="the 48 MiB")
        self.assertEqual(hashlib.sha256(bytes(c.output)).hexdigest(),
                         hashlib.sha256(stream_bytes(vm.size)).hexdigest())
        c.wait_message("eof")

    def test_a_vm_that_takes_nothing_stops_the_client(self):
        # The VM never reads: the gateway holds at most its input bound,
        # then stops reading the WebSocket, so our sends block. A client
        # that then goes with a reset must still end the session though the
        # gateway is not reading it (the probe). A killed process's FIN
        # waits behind its unsent bytes; TCP keepalive finds that one once
        # its kernel drops the orphan (minutes, not tested here).
        mark = audit_mark(self.gw)
        active = self.metric(TUNNEL_ACTIVE) or 0
        baseline = process_rss_kib(self.gw.pid)
        c = self.tunnel("sink01", _m["vms"]["sink"].port)
        c.wait_message("status", match=lambda m: m.get("state") == "connected")
        c.sock.settimeout(1.0)
        sent = 0
        block = os.urandom(60000)
        try:
            while sent < (64 << 20):
                c.send_frame(c.BINARY, block)
                sent += len(block)
        except (socket.timeout, BlockingIOError):
            pass
        self.assertLess(sent, 32 << 20, "the gateway kept reading a tunnel whose VM "
                        "takes nothing (%d bytes)" % sent)
        held = process_rss_kib(self.gw.pid) - baseline
        self.assertLess(held, 48 * 1024, "the gateway buffered %d KiB" % held)
        c.abort(reset=True)
        end = wait_until(lambda: audit_events(self.gw, "session.end", since=mark,
                                              vm="sink01"), 20,
                         message="session.end of a tunnel whose client died unread")
        self.assertEqual(end[0]["reason"], "client closed")
        wait_until(lambda: (self.metric(TUNNEL_ACTIVE) or 0) == active, 10,
                   message="the dead tunnel no longer active")

    def test_a_vm_reset_mid_transfer_ends_the_tunnel_with_the_bytes_audited(self):
        mark = audit_mark(self.gw)
        c = self.tunnel("reset01", _m["vms"]["reset"].port)
        c.wait_message("status", match=lambda m: m.get("state") == "connected")
        try:
            self.send(c, os.urandom(1 << 20))
        except OSError:
            pass  # the gateway may close before we are done
        msg, code, _ = c.wait_end(timeout=20)
        self.assertEqual(msg["type"], "error", msg)
        self.assertEqual(msg["reason"], "reset", msg)
        self.assertEqual(code, 1000)
        end = wait_until(lambda: audit_events(self.gw, "session.end", since=mark,
                                              vm="reset01"), 10, message="session.end")
        self.assertEqual(end[0]["reason"], "reset")
        self.assertGreaterEqual(end[0]["bytes_in"], 300000)

    def test_a_client_killed_mid_transfer_closes_the_vm_side(self):
        mark = audit_mark(self.gw)
        vm = _m["vms"]["echo"]
        before = vm.accepted
        c = self.tunnel("echo01", vm.port)
        c.wait_message("status", match=lambda m: m.get("state") == "connected")
        self.send(c, os.urandom(200000))
        c.wait(lambda: len(c.output) >= 100000, timeout=20, what="some echo")
        c.abort()  # no close frame, no EOF: the process died
        end = wait_until(lambda: audit_events(self.gw, "session.end", since=mark,
                                              vm="echo01"), 10, message="session.end")
        self.assertEqual(end[0]["reason"], "client closed")
        self.assertGreater(end[0]["bytes_in"], 0)
        self.assertGreater(end[0]["bytes_out"], 0)
        self.assertGreater(vm.accepted, before)
        # The VM's side was closed: its echo loop ended.
        wait_until(lambda: vm.peer_closed.is_set(), 10, message="the VM saw the close")

    def test_refusals_after_the_upgrade(self):
        echo = _m["vms"]["echo"]
        cases = [
            ("a port that is not a management port", "echo01", 25, "alice",
             "port_not_allowed", 1008, "port 25 is not a management port of echo01"),
            ("an unknown VM", "nosuchvm", echo.port, "alice", "unknown_vm", 1008,
             "no VM named nosuchvm"),
            ("another team's VM", "other", echo.port, "alice", "not_permitted", 1008,
             "you may not use tunnel on other"),
            ("a role without tunnel", "echo01", echo.port, "carol", "not_permitted", 1008,
             "you may not use tunnel on echo01"),
            ("recording required", "rec01", echo.port, "alice", "recording_required", 1008,
             "requires session recording"),
            ("JIT required", "jit01", echo.port, "alice", "jit_required", 1008,
             "requires just-in-time access for port %d" % echo.port),
        ]
        for what, vm, port, user, reason, code, words in cases:
            with self.subTest(what):
                mark = audit_mark(self.gw)
                before = echo.accepted
                c = self.tunnel(vm, port, user=user)
                msg = self.refused(c, reason, code)
                self.assertIn(words, msg["message"])
                self.assertEqual(echo.accepted, before, "the VM was contacted")
                self.assertTrue(audit_events(self.gw, "access.denied", since=mark),
                                "no access.denied event")

    def test_the_vm_cap_refuses_the_extra_tunnel(self):
        first = self.tunnel("capped", _m["vms"]["echo"].port)
        first.wait_message("status", match=lambda m: m.get("state") == "connected")
        second = self.tunnel("capped", _m["vms"]["echo"].port)
        msg = self.refused(second, "cap_reached", 1013)
        self.assertEqual(msg["message"], "VM capped already has its maximum of 1 sessions")

    def test_an_unreachable_vm_port(self):
        port = _m["sshd"].port
        # "down" names a closed port as its ssh.port.
        down = [v for v in self.gw.config["vms"] if v["name"] == "down"][0]
        c = self.tunnel("down", down["ssh"]["port"])
        msg, code, _ = c.wait_end(timeout=20)
        self.assertEqual((msg["type"], msg["reason"], code), ("error", "unreachable", 1008))
        self.assertIn("refused the connection on port", msg["message"])
        self.assertNotEqual(port, down["ssh"]["port"])

    def test_refusals_before_the_upgrade(self):
        echo = _m["vms"]["echo"]
        q = "vm=echo01&port=%d" % echo.port
        cases = [
            ("no credentials", dict(token=None, cookie=None), q, 401),
            ("an unknown token", dict(token=secrets.token_urlsafe(32)), q, 401),
            ("a foreign Origin with a token", dict(origin="https://evil.example"), q, 403),
            ("a cookie without Origin", dict(token=None, cookie=self.cookies["alice"],
                                             origin=None), q, 403),
            ("no port", {}, "vm=echo01", 400),
            ("port 0", {}, "vm=echo01&port=0", 400),
            ("port not a number", {}, "vm=echo01&port=22x", 400),
            ("port too large", {}, "vm=echo01&port=70000", 400),
        ]
        for what, kw, query, status in cases:
            with self.subTest(what):
                args = dict(token=self.tokens["alice"], origin=None)
                args.update(kw)
                c = WsConsole(self.gw, "echo01", path="/ws/tunnel", query=query, **args)
                self.addCleanup(c.close)
                with self.assertRaises(WsRefused) as cm:
                    c.open(expect_ready=False)
                self.assertEqual(cm.exception.status, status)

    def test_a_cookie_with_our_origin_is_accepted(self):
        c = WsConsole(self.gw, "echo01", cookie=self.cookies["alice"], path="/ws/tunnel",
                      query="vm=echo01&port=%d" % _m["vms"]["echo"].port)
        self.addCleanup(c.close)
        c.open(expect_ready=False)
        c.wait_message("status", match=lambda m: m.get("state") == "connected")

    def test_a_revoked_token_is_refused(self):
        api = ApiClient(self.gw, cookie=self.cookies["bob"])
        t = api.create_token().json()
        c = self.tunnel("echo01", _m["vms"]["echo"].port, token=t["token"])
        c.wait_message("status", match=lambda m: m.get("state") == "connected")
        c.close()
        self.assertEqual(ApiClient(self.gw, token=t["token"], origin=None)
                         .delete("/api/tokens/" + t["id"]).status, 200)
        c2 = WsConsole(self.gw, "echo01", token=t["token"], origin=None, path="/ws/tunnel",
                       query="vm=echo01&port=%d" % _m["vms"]["echo"].port)
        self.addCleanup(c2.close)
        with self.assertRaises(WsRefused) as cm:
            c2.open(expect_ready=False)
        self.assertEqual(cm.exception.status, 401)

    def test_jit_required_also_closes_the_console(self):
        # The fail-open this closes: a JIT-only VM was open to anyone with
        # the role.
        mark = audit_mark(self.gw)
        c = WsConsole(self.gw, "jit01", cookie=self.cookies["alice"])
        self.addCleanup(c.close)
        c.open()
        c.connect(_m["sshd"].user, password=_m["sshd"].password, wait=False)
        msg, code, _ = c.wait_end()
        self.assertEqual((msg["type"], msg["reason"], code), ("error", "jit_required", 1008))
        self.assertNotIn("connecting", [m.get("state") for m in c.messages
                                        if isinstance(m, dict)])
        denied = audit_events(self.gw, "access.denied", since=mark, vm="jit01")
        self.assertTrue(denied and "just-in-time" in denied[0]["reason"], denied)


class IdleTunnelTests(TunnelCase):
    @classmethod
    def setUpClass(cls):
        cls.start_gateway([vm_entry("echo01", _m["vms"]["echo"].port)],
                          limits={"idle_timeout_seconds": 3})

    def test_an_idle_tunnel_is_cut_but_traffic_either_way_keeps_it(self):
        c = self.tunnel("echo01", _m["vms"]["echo"].port)
        c.wait_message("status", match=lambda m: m.get("state") == "connected")
        started = time.monotonic()
        for i in range(4):  # 4 x 1 s of traffic: longer than the idle time
            c.send_frame(c.BINARY, b"x" * 10)
            c.wait(lambda: len(c.output) >= 10 * (i + 1), timeout=5, what="echo")
            time.sleep(1.0)
        self.assertIsNone(c.close_code, "cut while busy")
        msg, code, _ = c.wait_end(timeout=15)
        self.assertGreaterEqual(time.monotonic() - started, 5.5)
        self.assertEqual((msg["type"], msg["reason"], code), ("closed", "idle", 1008))


if __name__ == "__main__":
    unittest.main()
