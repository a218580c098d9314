"""The gateway's lifecycle with live SSH console sessions, and the
WebSocket admission checks: SIGTERM stops new sessions and turns /healthz
to 503 while live ones go on; when the grace period ends they are told why
(a message and a close frame with code 1001) and the gateway exits 0;
SIGHUP keeps them; upgrades from a foreign or missing Origin, or without a
login, are refused before the WebSocket opens. Real sshd, real gateway."""

import json
import os
import signal
import ssl
import time
import unittest

import websocket

import postern_fixtures as pf

PASSWORD = "drain-test-password"


def open_console(gw, api, vm):
    ws = websocket.create_connection(
        "wss://%s:%d/ws/ssh?vm=%s" % (gw.host, gw.port, vm),
        sslopt={"cert_reqs": ssl.CERT_NONE}, origin=gw.origin,
        header=["Cookie: %s=%s" % (pf.SESSION_COOKIE, api.cookie)], timeout=15)
    first = json.loads(ws.recv())
    return ws, first


def read_until(ws, predicate, timeout=15.0):
    """Reads frames until predicate(opcode, data) is true; returns them."""
    frames = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op, data = ws.recv_data(control_frame=True)
        frames.append((op, data))
        if predicate(op, data):
            return frames
    raise AssertionError("condition not met; frames: %r" % frames[-5:])


class ConsoleLifetimeTest(unittest.TestCase):
    """A console lives no longer than what it was opened on: the login
    session (logout, absolute expiry) and the account (disabled); and the
    gateway-held key logs in only for ssh-admin-login."""

    def setUp(self):
        self.sshd = pf.Sshd.started(self)
        tmp = pf.TempDir()
        path = tmp.__enter__()
        self.addCleanup(tmp.__exit__, None, None, None)
        self.users_path = os.path.join(path, "users.jsonl")
        users = pf.UsersFile(self.users_path)
        users.add("alice", PASSWORD, roles=("ops",))
        users.add("root-ish", PASSWORD, roles=("admins",))
        self.users = users
        injected = self.sshd.vm_config("keyed")
        injected["ssh"]["key_file"] = self.sshd.client_key
        injected["ssh"]["username"] = self.sshd.user
        self.gw = pf.Gateway.started(self, {
            "users_file": self.users_path,
            "roles": {"ops": {"vms": ["*"], "actions": ["ssh-login"]},
                      "admins": {"vms": ["keyed"], "actions": ["ssh-admin-login"]}},
            "vms": [self.sshd.vm_config("web01"), injected],
            "auth": {"session_max_seconds": 12},
        })

    def login(self, user):
        api = pf.ApiClient(self.gw)
        self.assertEqual(api.login(user, PASSWORD).status, 200)
        return api

    def shell(self, api, vm="web01", creds=True):
        ws, first = open_console(self.gw, api, vm)
        self.addCleanup(ws.close)
        self.assertEqual(first.get("type"), "status", first)
        msg = {"type": "connect", "cols": 80, "rows": 24}
        if creds:
            msg.update(username=self.sshd.user, password=self.sshd.password)
        ws.send(json.dumps(msg))
        return ws

    def wait_text(self, ws, pattern, timeout=20.0):
        frames = read_until(ws, lambda op, d: op == websocket.ABNF.OPCODE_TEXT and
                            __import__("re").search(pattern, json.loads(d).get("message", "")),
                            timeout=timeout)
        return json.loads(frames[-1][1])

    def test_logout_ends_the_consoles_of_that_login_only(self):
        a1, a2 = self.login("alice"), self.login("alice")
        ws1, ws2 = self.shell(a1), self.shell(a2)
        self.wait_text(ws1, "^connected$")
        self.wait_text(ws2, "^connected$")
        self.assertEqual(a1.logout().status, 200)
        self.assertIn("logged out", self.wait_text(ws1, "logged out")["message"])
        marker = "other-login-%d" % os.getpid()
        ws2.send_binary(("echo %s\n" % marker).encode())
        read_until(ws2, lambda op, d: op == websocket.ABNF.OPCODE_BINARY
                   and marker.encode() + b"\r\n" in d)

    def test_console_ends_with_its_login_session(self):
        api = self.login("alice")
        ws = self.shell(api)
        self.wait_text(ws, "^connected$")
        # session_max_seconds is 12: the console is warned, then cut.
        self.wait_text(ws, "maximum duration", timeout=25)

    def test_disabling_the_account_ends_its_consoles(self):
        ws = self.shell(self.login("alice"))
        self.wait_text(ws, "^connected$")
        self.users.disable("alice")
        self.gw.reload()
        self.assertIn("disabled", self.wait_text(ws, "disabled")["message"])

    def test_gateway_held_key_needs_admin_login(self):
        ws = self.shell(self.login("root-ish"), vm="keyed", creds=False)
        self.wait_text(ws, "^connected$")
        ws.send_binary(b"echo injected-$((40+2))\n")
        read_until(ws, lambda op, d: op == websocket.ABNF.OPCODE_BINARY and b"injected-42" in d)
        # A user with ssh-login only may not borrow the gateway's key, and
        # on a VM without one the user must bring credentials.
        ws2 = self.shell(self.login("alice"), vm="web01", creds=False)
        self.assertRegex(self.wait_text(ws2, "may not|give a password")["message"],
                         "may not|give a password")


class DrainTest(unittest.TestCase):
    def setUp(self):
        self.sshd = pf.Sshd.started(self)
        tmp = pf.TempDir()
        path = tmp.__enter__()
        self.addCleanup(tmp.__exit__, None, None, None)
        users = os.path.join(path, "users.jsonl")
        pf.UsersFile(users).add("alice", PASSWORD, roles=("ops",))
        self.gw = pf.Gateway.started(self, {
            "users_file": users,
            "roles": {"ops": {"vms": ["*"], "actions": ["ssh-login"]}},
            "vms": [self.sshd.vm_config("web01")],
            "limits": {"shutdown_grace_seconds": 3},
        })
        self.api = pf.ApiClient(self.gw)
        self.assertEqual(self.api.login("alice", PASSWORD).status, 200)

    def connect_shell(self):
        ws, first = open_console(self.gw, self.api, "web01")
        self.addCleanup(ws.close)
        self.assertEqual(first.get("type"), "status", first)
        ws.send(json.dumps({"type": "connect", "username": self.sshd.user,
                            "password": self.sshd.password, "cols": 80, "rows": 24}))
        read_until(ws, lambda op, d: op == websocket.ABNF.OPCODE_TEXT
                   and json.loads(d).get("message") == "connected")
        return ws

    def test_sigterm_waits_for_sessions_then_tells_them(self):
        ws = self.connect_shell()
        self.assertEqual(self.gw.https_get("/healthz").status, 200)
        os.kill(self.gw.pid, signal.SIGTERM)
        self.gw.log.wait_for(r"event=drain\.start live_sessions=1", timeout=10)

        # Draining: health says so, new sessions are refused, the live one
        # still carries keystrokes.
        self.assertEqual(self.gw.https_get("/healthz").status, 503)
        with self.assertRaises(websocket.WebSocketBadStatusException) as cm:
            open_console(self.gw, self.api, "web01")
        self.assertEqual(cm.exception.status_code, 503)
        marker = "still-alive-%d" % os.getpid()
        ws.send_binary(("echo %s\n" % marker).encode())
        out = b"".join(d for op, d in read_until(
            ws, lambda op, d: marker.encode() + b"\r\n" in d or
            (op == websocket.ABNF.OPCODE_BINARY and d.count(marker.encode()) >= 1
             and b"\n" in d.split(marker.encode())[-1]))
            if op == websocket.ABNF.OPCODE_BINARY)
        self.assertIn(marker.encode(), out)

        # Grace over: the session is told, with a message and close 1001.
        frames = read_until(ws, lambda op, d: op == websocket.ABNF.OPCODE_CLOSE,
                            timeout=15)
        texts = [json.loads(d) for op, d in frames if op == websocket.ABNF.OPCODE_TEXT]
        self.assertTrue(any("shutting down" in t.get("message", "") for t in texts), texts)
        close = [d for op, d in frames if op == websocket.ABNF.OPCODE_CLOSE][0]
        self.assertEqual(int.from_bytes(close[:2], "big"), 1001, close)
        self.assertEqual(self.gw.wait_exit(timeout=15), 0, self.gw.stderr_text()[-3000:])

    def test_sighup_keeps_live_sessions(self):
        ws = self.connect_shell()
        mark = self.gw.log.mark()
        self.gw.reload()
        self.gw.log.wait_for_event("config.reload", since=mark, result="ok")
        marker = "after-reload-%d" % os.getpid()
        ws.send_binary(("echo %s\n" % marker).encode())
        out = b""
        deadline = time.monotonic() + 10
        while out.count(marker.encode()) < 2 and time.monotonic() < deadline:
            op, data = ws.recv_data()
            if op == websocket.ABNF.OPCODE_BINARY:
                out += data
        self.assertGreaterEqual(out.count(marker.encode()), 2, out[-300:])

    def upgrade_status(self, origin="default", cookie=True):
        """Sends a raw upgrade request (so that a refusal's JSON body can be
        read, which WebSocket clients hide); returns (status, body)."""
        lines = ["GET /ws/ssh?vm=web01 HTTP/1.1", "Host: %s:%d" % (self.gw.host, self.gw.port),
                 "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
        if origin is not None:
            lines.append("Origin: " + (self.gw.origin if origin == "default" else origin))
        if cookie:
            lines.append("Cookie: %s=%s" % (pf.SESSION_COOKIE, self.api.cookie))
        r = self.gw.raw_request(("\r\n".join(lines) + "\r\n\r\n").encode())
        body = {}
        if r.status != 101 and r.body:
            body = json.loads(r.body)
        return r.status, body

    def test_websocket_upgrade_checks_origin_and_login(self):
        status, body = self.upgrade_status(origin="https://evil.example")
        self.assertEqual(status, 403, body)
        self.assertIn("Origin", body.get("error", ""))
        status, body = self.upgrade_status(origin=None)
        self.assertEqual(status, 403, body)
        status, body = self.upgrade_status(cookie=False)
        self.assertEqual(status, 401, body)
        status, _ = self.upgrade_status()
        self.assertEqual(status, 101)
        denied = [e for e in pf.read_audit_log(self.gw.audit_log_path)
                  if e["event"] == "access.denied"]
        self.assertGreaterEqual(len(denied), 2, denied)

    def test_sigterm_exits_when_the_last_session_ends(self):
        ws = self.connect_shell()
        os.kill(self.gw.pid, signal.SIGTERM)
        self.gw.log.wait_for(r"event=drain\.start live_sessions=1", timeout=10)
        ws.send_binary(b"exit 0\n")
        self.gw.log.wait_for(r"event=drain\.complete", timeout=10)
        self.assertEqual(self.gw.wait_exit(timeout=10), 0, self.gw.stderr_text()[-3000:])


if __name__ == "__main__":
    unittest.main()
