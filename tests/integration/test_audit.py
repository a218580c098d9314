"""The audit log after a real session of logins, and its hash chain.

A gateway is driven through successful and failed logins, a lockout, a
throttled attempt, a token issued and revoked and a logout; then the file
<state_dir>/audit.log is read as it is, checked independently here (JSON
lines, seq, prev = SHA-256 of the line before) and by `postern audit
verify`, including on tampered copies.
"""

import hashlib
import json
import os
import re
import secrets
import shutil
import time
import unittest

from postern_fixtures import (
    ApiClient, Gateway, UsersFile, checked_gateway, make_temp_dir, postern, read_audit_log,
    ssh_vm, wait_until,
)

ROLES = {"ops": {"vms": ["web*"], "actions": ["ssh-login"]}}
VMS = [ssh_vm("web01")]
LOCK_SECONDS = 2
# Two failures lock a key (there is no slowed-down phase before that).
THROTTLE = {"free_failures": 5, "max_delay_seconds": 1, "lock_failures": 2,
            "lock_seconds": LOCK_SECONDS}
ZERO_HASH = "0" * 64
TS_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


def raw_lines(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data.endswith(b"\n"), "audit log does not end with a newline"
    return data[:-1].split(b"\n")


def chain_errors(lines):
    """Checks the chain independently of postern; returns a list of
    problems (empty when the chain holds)."""
    problems = []
    prev, seq = ZERO_HASH, None
    for i, line in enumerate(lines, 1):
        ev = json.loads(line)
        if ev.get("prev") != prev:
            problems.append("line %d: prev %s, expected %s" % (i, ev.get("prev"), prev))
        if seq is not None and ev.get("seq") != seq + 1:
            problems.append("line %d: seq %s after %s" % (i, ev.get("seq"), seq))
        seq = ev.get("seq")
        prev = hashlib.sha256(line).hexdigest()
    return problems


def verify(path):
    return postern("audit", "verify", path, check=False)


def write_lines(path, lines):
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")


def make_identity(testcase=None):
    """A temp dir with a users file (alice, bob: role ops) and a state dir;
    returns (dir, users, passwords, state_dir)."""
    d = make_temp_dir(testcase, prefix="postern-audit-")
    users = UsersFile(os.path.join(d, "users.json"))
    passwords = {}
    for name in ("alice", "bob"):
        passwords[name] = "pw-" + secrets.token_urlsafe(12)
        users.add(name, passwords[name], ("ops",))
    state = os.path.join(d, "state")
    os.mkdir(state, 0o700)
    return d, users, passwords, state


class AuditSessionTests(unittest.TestCase):
    """One gateway, one scripted session; the tests read what it left."""

    @classmethod
    def setUpClass(cls):
        cls.dir, cls.users, cls.passwords, cls.state = make_identity()
        cls.addClassCleanup(shutil.rmtree, cls.dir, ignore_errors=True)
        cls.gw = checked_gateway(cls, {
            "users_file": cls.users.path, "state_dir": cls.state,
            "roles": ROLES, "vms": VMS, "auth": {"throttle": THROTTLE}},
            cleanup=cls.addClassCleanup)
        cls.secrets_seen = [cls.passwords["alice"], cls.passwords["bob"]]
        cls.wrong = "wrong-" + secrets.token_urlsafe(12)
        cls.secrets_seen.append(cls.wrong)
        cls._run_session()
        cls.gw.stop()
        cls.log = cls.gw.audit_log_path

    @classmethod
    def _run_session(cls):
        gw = cls.gw

        def check(cond, what):
            if not cond:
                raise AssertionError(what)

        alice = ApiClient(gw)
        r = alice.login("alice", cls.passwords["alice"])
        check(r.status == 200, "alice login: %r" % r)
        cls.secrets_seen.append(alice.cookie)
        r = alice.create_token(name="deploy")
        check(r.status == 201, "token: %r" % r)
        cls.token = r.json()
        cls.secrets_seen.append(cls.token["token"])
        r = alice.delete("/api/tokens/" + cls.token["id"])
        check(r.status == 200, "revoke: %r" % r)
        r = alice.logout()
        check(r.status == 200, "logout: %r" % r)

        bob = ApiClient(gw, origin=None)  # the CLI sends no Origin
        for _ in range(2):
            r = bob.login("bob", cls.wrong)
            check(r.status == 401, "bob wrong: %r" % r)
        r = bob.login("bob", cls.passwords["bob"])
        check(r.status == 429, "bob during the lock: %r" % r)

        def unlocked():
            r = bob.login("bob", cls.passwords["bob"])
            if r.status == 429:
                time.sleep(0.25)
                return False
            check(r.status == 200, "bob after the lock: %r" % r)
            return True

        wait_until(unlocked, timeout=LOCK_SECONDS + 15, interval=0,
                   message="bob's lock to lift")
        cls.secrets_seen.append(bob.cookie)
        r = ApiClient(gw).login("mallory", cls.wrong)
        check(r.status == 401, "unknown user: %r" % r)

    def events(self):
        return read_audit_log(self.log)

    def test_events_of_the_session_are_recorded(self):
        evs = self.events()
        expected = [
            ("login.success", "alice", {"mfa": False}),
            ("token.issued", "alice", {"token_id": self.token["id"], "name": "deploy"}),
            ("token.revoked", "alice", {"token_id": self.token["id"]}),
            ("logout", "alice", {}),
            ("login.failure", "bob", {"reason": "bad_password"}),
            ("login.failure", "bob", {"reason": "bad_password"}),
            ("login.lockout", "bob", {"seconds": LOCK_SECONDS}),
            ("login.throttled", "bob", {"locked": True}),
            ("login.success", "bob", {}),
            ("login.failure", "mallory", {}),
        ]
        # In this order (throttled polls while waiting for the lock may
        # repeat login.throttled in between).
        it = iter(evs)
        for event, user, fields in expected:
            for ev in it:
                if ev["event"] == event and ev.get("user") == user and all(
                        ev.get(k) == v for k, v in fields.items()):
                    break
            else:
                self.fail("no %s for %s with %r in order in:\n%s"
                          % (event, user, fields,
                             "\n".join(json.dumps(e) for e in evs)))
        for ev in evs:
            with self.subTest(seq=ev.get("seq"), event=ev.get("event")):
                self.assertRegex(ev["ts"], TS_RE)
                self.assertEqual(ev.get("source"), "127.0.0.1", ev)
                self.assertIsInstance(ev.get("user"), str, ev)
        lock = [e for e in evs if e["event"] == "login.lockout"]
        self.assertEqual(len(lock), 1, lock)
        self.assertIn(lock[0]["key"], ("user", "address"))
        self.assertEqual(
            [e["reason"] for e in evs if e["event"] == "login.failure"
             and e["user"] == "mallory"], ["unknown_user_or_disabled"])
        exp = [e for e in evs if e["event"] == "token.issued"][0]["expires"]
        self.assertEqual(exp, self.token["expires"])

    def test_seq_and_chain(self):
        evs = self.events()
        self.assertEqual([e["seq"] for e in evs], list(range(1, len(evs) + 1)))
        self.assertEqual(evs[0]["prev"], ZERO_HASH)
        self.assertEqual(chain_errors(raw_lines(self.log)), [])
        for e in evs:
            self.assertEqual(list(e)[:3], ["ts", "seq", "event"])
            self.assertEqual(list(e)[-1], "prev")

    def test_no_secret_in_the_audit_log_or_the_daemon_log(self):
        with open(self.log, "rb") as f:
            audit = f.read()
        with open(self.gw.log.path, "rb") as f:
            stderr = f.read()
        for secret in self.secrets_seen:
            self.assertTrue(secret)
            with self.subTest(secret=secret[:6] + "..."):
                self.assertNotIn(secret.encode(), audit)
                self.assertNotIn(secret.encode(), stderr)
        # The token's secret part alone, too.
        tail = self.token["token"].rsplit("_", 1)[-1]
        self.assertNotIn(tail.encode(), audit)
        self.assertNotIn(b"argon2", audit)
        for ev in read_audit_log(self.log):
            self.assertFalse([k for k in ev if "password" in k or "token" == k], ev)

    def test_log_file_mode(self):
        self.assertEqual(os.stat(self.log).st_mode & 0o777, 0o600)

    def test_verify_ok(self):
        p = verify(self.log)
        self.assertEqual(p.returncode, 0, p)
        n = len(raw_lines(self.log))
        self.assertIn("OK", p.stdout)
        self.assertNotIn("FAILED", p.stdout)
        self.assertIn("%d events" % n, p.stdout)
        last = hashlib.sha256(raw_lines(self.log)[-1]).hexdigest()
        self.assertIn(last, p.stdout)

    def tampered_copy(self):
        d = make_temp_dir(self)
        path = os.path.join(d, "audit.log")
        shutil.copy(self.log, path)
        return path, raw_lines(path)

    def assert_verify_fails_at(self, path, line_no, *, also=None):
        p = verify(path)
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("FAILED", p.stdout, p)
        self.assertNotRegex(p.stdout, r"\bOK\b")
        self.assertRegex(p.stdout, r"\bline %d\b" % line_no, p)
        if also:
            self.assertRegex(p.stdout, also, p)
        return p

    def test_one_byte_edited_in_a_middle_line(self):
        path, lines = self.tampered_copy()
        k = len(lines) // 2  # 1-based line number of the edited line
        self.assertGreater(k, 1)
        line = bytearray(lines[k - 1])
        # A digit of the timestamp: the line stays valid JSON.
        m = re.search(rb'"ts":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d\d(\d)', line)
        i = m.start(1)
        line[i] = ord("0") + (line[i] - ord("0") + 1) % 10
        lines[k - 1] = bytes(line)
        write_lines(path, lines)
        self.assertTrue(chain_errors(lines))
        self.assert_verify_fails_at(path, k)

    def test_one_byte_edited_in_a_field_value(self):
        path, lines = self.tampered_copy()
        k = next(i for i, ln in enumerate(lines, 1) if b'"user":"bob"' in ln
                 and i < len(lines))
        lines[k - 1] = lines[k - 1].replace(b'"user":"bob"', b'"user":"bot"', 1)
        write_lines(path, lines)
        self.assert_verify_fails_at(path, k)

    def test_edit_that_breaks_the_json_of_a_line(self):
        path, lines = self.tampered_copy()
        k = len(lines) // 2
        lines[k - 1] = b"x" + lines[k - 1][1:]
        write_lines(path, lines)
        self.assert_verify_fails_at(path, k)

    def test_deleted_middle_line(self):
        path, lines = self.tampered_copy()
        k = len(lines) // 2
        del lines[k - 1]
        write_lines(path, lines)
        self.assert_verify_fails_at(path, k)

    def test_swapped_lines(self):
        path, lines = self.tampered_copy()
        k = len(lines) // 2
        lines[k - 1], lines[k] = lines[k], lines[k - 1]
        write_lines(path, lines)
        self.assert_verify_fails_at(path, k)

    def test_inserted_forged_line(self):
        path, lines = self.tampered_copy()
        k = len(lines) // 2
        # A forged event that even carries the right prev for its place.
        prev = hashlib.sha256(lines[k - 2]).hexdigest()
        ev = json.loads(lines[k - 1])
        forged = json.dumps({"ts": ev["ts"], "seq": ev["seq"], "event": "logout",
                             "user": "mallory", "source": "127.0.0.1", "prev": prev},
                            separators=(",", ":")).encode()
        lines.insert(k - 1, forged)
        write_lines(path, lines)
        self.assert_verify_fails_at(path, k + 1)

    def test_first_line_removed(self):
        path, lines = self.tampered_copy()
        write_lines(path, lines[1:])
        self.assert_verify_fails_at(path, 1)


class AuditRestartTests(unittest.TestCase):

    def start(self, users, state):
        return checked_gateway(self, {"users_file": users.path, "state_dir": state,
                                      "roles": ROLES, "vms": VMS})

    def test_chain_continues_after_a_restart(self):
        _, users, passwords, state = make_identity(self)
        gw = self.start(users, state)
        c = ApiClient(gw)
        self.assertEqual(c.login("alice", passwords["alice"]).status, 200)
        self.assertEqual(c.login("alice", "wrong-password").status, 401)
        self.assertEqual(gw.stop(), 0)
        log = gw.audit_log_path
        before = raw_lines(log)
        last = json.loads(before[-1])

        gw2 = self.start(users, state)
        c = ApiClient(gw2)
        self.assertEqual(c.login("bob", passwords["bob"]).status, 200)
        self.assertEqual(c.logout().status, 200)
        after = raw_lines(log)
        self.assertEqual(after[:len(before)], before, "old lines were rewritten")
        new = [json.loads(x) for x in after[len(before):]]
        self.assertGreaterEqual(len(new), 2)
        self.assertEqual(new[0]["seq"], last["seq"] + 1)
        self.assertEqual(new[0]["prev"], hashlib.sha256(before[-1]).hexdigest())
        self.assertEqual([e["event"] for e in new][-2:], ["login.success", "logout"])
        self.assertEqual(chain_errors(after), [])
        p = verify(log)
        self.assertEqual(p.returncode, 0, p)
        self.assertIn("%d events" % len(after), p.stdout)

        # A third start on a log whose last line was torn (a crash mid-write
        # would look like this) must not chain onto half a line.
        self.assertEqual(gw2.stop(), 0)
        with open(log, "ab") as f:
            f.write(b'{"ts":"2026-01-01T00:00:00.000Z","seq":')
        gw3 = Gateway({"users_file": users.path, "state_dir": state,
                       "roles": ROLES, "vms": VMS})
        self.addCleanup(gw3.close)
        gw3.start(wait=False)
        rc = gw3.wait_exit(timeout=20)
        self.assertNotEqual(rc, 0, gw3.stderr_text())
        self.assertIn(log, gw3.stderr_text())
        p = verify(log)
        self.assertEqual(p.returncode, 1, p)
        self.assertRegex(p.stdout, r"line %d is incomplete" % (len(after) + 1))


if __name__ == "__main__":
    unittest.main()
