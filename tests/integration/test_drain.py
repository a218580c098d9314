"""Graceful shutdown with a live SSH console session: SIGTERM stops new
sessions and turns /healthz to 503 while the live one goes on; when the
grace period ends the session is told why (a message and a close frame
with code 1001) and the gateway exits 0. Real sshd, real gateway."""

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

    def test_sigterm_exits_when_the_last_session_ends(self):
        ws = self.connect_shell()
        os.kill(self.gw.pid, signal.SIGTERM)
        self.gw.log.wait_for(r"event=drain\.start live_sessions=1", timeout=10)
        ws.send_binary(b"exit 0\n")
        self.gw.log.wait_for(r"event=drain\.complete", timeout=10)
        self.assertEqual(self.gw.wait_exit(timeout=10), 0, self.gw.stderr_text()[-3000:])


if __name__ == "__main__":
    unittest.main()
