"""Identity over real HTTPS: login and its cookie, who-am-I and what may I
reach, logout, idle and absolute session expiry, disabled accounts, login
throttling, API tokens, malformed requests and broken users files.

Each test starts its own posternd (users made with the real `postern user`
command) and talks to it on 127.0.0.1.
"""

import json
import os
import re
import secrets
import shutil
import time
import unittest

from postern_fixtures import (
    ApiClient, ConnectionClosed, Gateway, HealthPoller, SESSION_COOKIE,
    UsersFile, checked_gateway, gateway_metrics, make_temp_dir,
    parse_set_cookie, rdp_vm, session_cookie, ssh_vm, wait_until,
)

# ops reaches web* by name and anything tagged linux; dba reaches db* only;
# watch may audit every VM (an action that is not per-VM in /api/me).
ROLES = {
    "ops": {"vms": ["web*", "tag:linux"], "actions": ["ssh-login", "tunnel"]},
    "dba": {"vms": ["db*"], "actions": ["ssh-login"]},
    "watch": {"vms": ["*"], "actions": ["auditor"]},
}
VMS = [
    ssh_vm("web01", tags=["prod"]),
    ssh_vm("app01", tags=["linux"]),
    ssh_vm("db01", tags=["prod"]),
    rdp_vm("win01", tags=["windows"]),
]
# Lenient throttle for tests that fail on purpose but are not about it: all
# requests come from 127.0.0.1, whose address key counts every failure.
LENIENT = {"free_failures": 1000, "max_delay_seconds": 0,
           "lock_failures": 1000, "lock_seconds": 1}

LOGIN_FAILED = {"error": "invalid user name or password"}


# Hashed once for the module (argon2id is slow on purpose, more so under
# ASan); each test works on its own copy of the file.
USERS = {"alice": ("ops",), "bob": ("ops",), "carol": ("dba", "watch"),
         "dan": ("ops",)}
DISABLED = ("dan",)
_module = {}


def setUpModule():
    d = make_temp_dir(None, prefix="postern-users-")
    unittest.addModuleCleanup(shutil.rmtree, d, ignore_errors=True)
    uf = UsersFile(os.path.join(d, "users.json"))
    passwords = {}
    for name, roles in USERS.items():
        passwords[name] = "pw-" + secrets.token_urlsafe(12)
        uf.add(name, passwords[name], roles)
    for name in DISABLED:
        uf.disable(name)
    _module.update(template=uf.path, passwords=passwords)


class IdentityTestCase(unittest.TestCase):

    # Not None: the tests of the class share one gateway with this `auth`
    # (each start costs, more so under ASan); they must then not change
    # the users file or depend on counters.
    SHARED_AUTH = None

    @classmethod
    def setUpClass(cls):
        if cls.SHARED_AUTH is None:
            return
        d = make_temp_dir(None)
        cls.addClassCleanup(shutil.rmtree, d, ignore_errors=True)
        path = os.path.join(d, "users.json")
        shutil.copy(_module["template"], path)
        cls.shared_users = UsersFile(path)
        cls.shared_gw = checked_gateway(
            cls, {"users_file": path, "roles": ROLES, "vms": VMS,
                  "auth": cls.SHARED_AUTH}, cleanup=cls.addClassCleanup)

    @property
    def passwords(self):
        return _module["passwords"]

    def users_file(self):
        d = make_temp_dir(self)
        path = os.path.join(d, "users.json")
        shutil.copy(_module["template"], path)
        return UsersFile(path)

    def start_gateway(self, users=None, auth=None, **extra):
        if self.SHARED_AUTH is not None:
            assert users is None and auth is None and not extra
            self.users, self.gw = self.shared_users, self.shared_gw
            self.assertTrue(self.gw.alive(), "the shared gateway died")
            return self.gw
        self.users = users or self.users_file()
        cfg = {"users_file": self.users.path, "roles": ROLES, "vms": VMS,
               "auth": auth or {"throttle": LENIENT}}
        cfg.update(extra)
        self.gw = checked_gateway(self, cfg)
        return self.gw

    def client(self, **kw):
        return ApiClient(self.gw, **kw)

    def logged_in(self, user, **kw):
        c = self.client(**kw)
        r = c.login(user, self.passwords[user])
        self.assertEqual(r.status, 200, r)
        self.assertTrue(c.cookie, r)
        return c

    def assert_json_error(self, r, status):
        self.assertEqual(r.status, status, r)
        self.assertTrue((r.header("Content-Type") or "").startswith(
            "application/json"), r)
        body = r.json()
        self.assertIsInstance(body, dict, r)
        self.assertIsInstance(body.get("error"), str, r)
        self.assertTrue(body["error"], r)
        return body

    def reload_and_wait(self, result="ok"):
        mark = self.gw.log.mark()
        self.gw.reload()
        return self.gw.log.wait_for_event("config.reload", since=mark,
                                          result=result, alive=self.gw.alive)


class LoginTests(IdentityTestCase):

    SHARED_AUTH = {"session_max_seconds": 3600, "throttle": LENIENT}

    def test_login_sets_session_cookie_with_all_flags(self):
        self.start_gateway()
        c = self.client()
        r = c.login("alice", self.passwords["alice"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"user": "alice", "roles": ["ops"],
                                    "mfa": False})
        cookies = r.header_all("Set-Cookie")
        self.assertEqual(len(cookies), 1, cookies)
        name, value, attrs = parse_set_cookie(cookies[0])
        self.assertEqual(name, SESSION_COOKIE)
        self.assertRegex(value, r"^[A-Za-z0-9_-]{43}$")
        self.assertEqual(attrs.get("path"), "/")
        self.assertIs(attrs.get("secure"), True, cookies[0])
        self.assertIs(attrs.get("httponly"), True, cookies[0])
        self.assertEqual(attrs.get("samesite"), "Strict", cookies[0])
        self.assertEqual(attrs.get("max-age"), "3600", cookies[0])
        self.assertEqual(r.header("Cache-Control"), "no-store")
        # Two logins are two sessions.
        c2 = self.logged_in("alice")
        self.assertNotEqual(c2.cookie, value)
        self.assertEqual(c.me().status, 200)
        self.assertEqual(c2.me().status, 200)

    def test_me_shows_user_roles_and_reachable_vms_by_role(self):
        self.start_gateway()
        alice = self.logged_in("alice")
        r = alice.me()
        self.assertEqual(r.status, 200, r)
        me = r.json()
        self.assertEqual(me["user"], "alice")
        self.assertEqual(me["roles"], ["ops"])
        self.assertEqual(me["auth"], "session")
        self.assertIs(me["mfa"], False)
        self.assertEqual(me["actions"], [])
        vms = {v["name"]: v for v in me["vms"]}
        # web01 by the name glob, app01 by tag:linux; db01 and win01 match
        # no selector of ops.
        self.assertEqual(sorted(vms), ["app01", "web01"], me)
        self.assertEqual(sorted(vms["web01"]["actions"]), ["ssh-login", "tunnel"])
        self.assertEqual(vms["web01"]["protocols"], ["ssh"])
        self.assertEqual(vms["web01"]["tags"], ["prod"])
        self.assertEqual(vms["app01"]["tags"], ["linux"])
        r = alice.get("/api/vms")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"vms": me["vms"]})

        carol = self.logged_in("carol")
        me = carol.me().json()
        self.assertEqual(me["user"], "carol")
        self.assertEqual(sorted(me["roles"]), ["dba", "watch"])
        # auditor is a global action here; per VM only db01 has a login.
        self.assertEqual(me["actions"], ["auditor"])
        self.assertEqual([v["name"] for v in me["vms"]], ["db01"], me)
        self.assertEqual(me["vms"][0]["actions"], ["ssh-login"])

    def test_without_a_valid_session_the_api_answers_401_json(self):
        self.start_gateway()
        self.logged_in("alice")
        anon = self.client()
        forged = "A" * 43  # well-formed, never issued
        for label, kw in [("no cookie", {}),
                          ("garbage cookie", {"cookie": "garbage"}),
                          ("unknown cookie", {"cookie": forged}),
                          ("bad bearer", {"token": "pst_0000000000000000_x"})]:
            for path in ("/api/me", "/api/vms", "/api/tokens"):
                with self.subTest(label, path=path):
                    r = anon.get(path, **kw)
                    self.assert_json_error(r, 401)

    def test_logout_ends_the_session(self):
        self.start_gateway()
        alice = self.logged_in("alice")
        other = self.logged_in("alice")
        # State-changing on a cookie: Origin required, and ours.
        r = alice.logout(origin=None)
        self.assert_json_error(r, 403)
        r = alice.logout(origin="https://evil.example")
        self.assert_json_error(r, 403)
        self.assertEqual(alice.me().status, 200, "a refused logout ended the session")

        r = alice.logout()
        self.assertEqual(r.status, 200, r)
        cleared = [parse_set_cookie(v) for v in r.header_all("Set-Cookie")]
        self.assertTrue(any(n == SESSION_COOKIE and a.get("max-age") == "0"
                            for n, _, a in cleared), cleared)
        self.assert_json_error(alice.me(), 401)
        self.assert_json_error(alice.logout(), 401)
        # Only that session ended.
        self.assertEqual(other.me().status, 200)

    def test_login_origin(self):
        self.start_gateway()
        r = self.client(origin="https://evil.example").login(
            "alice", self.passwords["alice"])
        self.assert_json_error(r, 403)
        self.assertIsNone(session_cookie(r))
        r = self.client(origin="https://127.0.0.1:1").login(
            "alice", self.passwords["alice"])
        self.assert_json_error(r, 403)
        # A browser on our origin, and the CLI (no Origin at all).
        self.assertEqual(self.client().login(
            "alice", self.passwords["alice"]).status, 200)
        self.assertEqual(self.client(origin=None).login(
            "alice", self.passwords["alice"]).status, 200)

    def test_wrong_password_unknown_and_disabled_user_answer_alike(self):
        self.start_gateway()
        answers = {
            "wrong password": self.client().login("alice", "not-the-password"),
            "unknown user": self.client().login("nobody", "not-the-password"),
            "disabled user": self.client().login("dan", self.passwords["dan"]),
            "empty password": self.client().login("alice", ""),
        }
        for label, r in answers.items():
            with self.subTest(label):
                self.assertEqual(r.status, 401, r)
                self.assertEqual(r.json(), LOGIN_FAILED)
                self.assertIsNone(session_cookie(r))
        bodies = {r.body for r in answers.values()}
        self.assertEqual(len(bodies), 1, bodies)
        ctypes = {r.header("Content-Type") for r in answers.values()}
        self.assertEqual(len(ctypes), 1, ctypes)

    def test_api_paths_and_methods(self):
        self.start_gateway()
        alice = self.logged_in("alice")
        for path in ("/api/nothing", "/api/me/x", "/api/tokensx", "/api"):
            with self.subTest(path):
                self.assert_json_error(alice.get(path), 404)
                self.assert_json_error(self.client().get(path), 404)
        self.assert_json_error(self.client().get("/api/login"), 405)
        self.assert_json_error(alice.post("/api/me", {}), 405)
        self.assert_json_error(alice.get("/api/logout"), 405)


class ExpiryTests(IdentityTestCase):
    """The waits that need the clock, in one gateway so that they overlap:
    idle expiry, absolute expiry and token expiry."""

    IDLE, MAX, TOKEN = 5, 12, 5

    def test_idle_absolute_and_token_expiry(self):
        self.start_gateway(auth={"session_idle_seconds": self.IDLE,
                                 "session_max_seconds": self.MAX,
                                 "throttle": LENIENT})
        idle = self.client()
        r = idle.login("alice", self.passwords["alice"])
        self.assertEqual(r.status, 200, r)
        _, _, attrs = parse_set_cookie(r.header("Set-Cookie"))
        self.assertEqual(attrs.get("max-age"), str(self.MAX))
        busy = self.logged_in("alice")
        r = busy.create_token(expires_in=self.TOKEN)
        self.assertEqual(r.status, 201, r)
        token = r.json()
        self.assertLessEqual(token["expires"], time.time() + self.TOKEN + 2)
        bearer = self.client(token=token["token"], origin=None)
        self.assertEqual(bearer.me().status, 200)
        t0 = time.monotonic()

        # busy is used every second for longer than the idle limit (the
        # store refreshes last_seen every idle/2 s at most); idle and the
        # token are left alone for IDLE + 2 s (past their limits whatever
        # second the clock ticks on, still short of MAX).
        uses = 0
        while time.monotonic() < t0 + self.IDLE + 2:
            r = busy.me()
            self.assertEqual(r.status, 200,
                             "a session in use expired after %d uses: %r" % (uses, r))
            uses += 1
            time.sleep(1.0)
        with self.subTest("idle session expired"):
            self.assert_json_error(idle.me(), 401)
            self.assert_json_error(idle.me(), 401)  # and stays so
        with self.subTest("token expired"):
            self.assert_json_error(bearer.me(), 401)
            self.assertNotIn(token["id"], busy.get("/api/tokens").text)

        # busy is still in use, but MAX s after its login it ends.
        statuses = []

        def ended():
            s = busy.me().status
            statuses.append(s)
            if s == 200:
                time.sleep(0.5)
            return s == 401

        with self.subTest("absolute expiry of a session in use"):
            wait_until(ended, timeout=self.MAX + 15, interval=0,
                       message="the session to end at session_max_seconds")
            self.assertEqual(busy.me().status, 401)
        # A fresh login works.
        self.assertEqual(self.logged_in("alice").me().status, 200)


class AccountChangeTests(IdentityTestCase):

    def test_disabled_user_loses_session_and_tokens_at_reload(self):
        self.start_gateway()
        alice = self.logged_in("alice")
        bob = self.logged_in("bob")
        r = alice.create_token(name="script")
        self.assertEqual(r.status, 201, r)
        token = r.json()["token"]
        self.assertEqual(self.client(token=token, origin=None).me().status, 200)

        self.users.disable("alice")
        self.reload_and_wait("ok")
        self.assert_json_error(alice.me(), 401)
        self.assert_json_error(self.client(token=token, origin=None).me(), 401)
        # The right password now answers exactly like a wrong one.
        right = self.client().login("alice", self.passwords["alice"])
        wrong = self.client().login("alice", "not-the-password")
        self.assertEqual(right.status, 401, right)
        self.assertEqual(right.body, wrong.body)
        self.assertIsNone(session_cookie(right))
        # Nobody else is touched.
        self.assertEqual(bob.me().status, 200)

    def test_reenabled_user_does_not_get_the_old_session_back(self):
        """Disabling an account ends its sessions (auth.h:
        auth_session_delete_user "Ends every session of user (password
        changed, account disabled)"): enabling it again must not revive a
        cookie issued before."""
        self.start_gateway()
        alice = self.logged_in("alice")
        self.users.disable("alice")
        self.reload_and_wait("ok")
        self.assert_json_error(alice.me(), 401)
        self.users.enable("alice")
        self.reload_and_wait("ok")
        r = alice.me()
        self.assertEqual(r.status, 401,
                         "a session from before the account was disabled works "
                         "again after it is re-enabled: %r" % r)
        # The account itself works again.
        self.assertEqual(self.logged_in("alice").me().status, 200)

    def test_password_change_ends_existing_sessions(self):
        """`postern user passwd` + SIGHUP: sessions opened with the old
        password end (auth.h: sessions end when the password changed)."""
        self.start_gateway()
        alice = self.logged_in("alice")
        new_password = "new-" + secrets.token_urlsafe(12)
        self.users.passwd("alice", new_password)
        self.reload_and_wait("ok")
        self.assertEqual(self.client().login("alice", self.passwords["alice"]).status,
                         401)
        self.assertEqual(self.client().login("alice", new_password).status, 200)
        r = alice.me()
        self.assertEqual(r.status, 401,
                         "a session opened with the old password still works "
                         "after the password was changed: %r" % r)


class ThrottleTests(IdentityTestCase):

    FREE, LOCK_FAILURES, LOCK_SECONDS = 1, 3, 3

    def _metric(self, m, name, labels=""):
        return m.get((name, labels), 0.0)

    def test_delay_then_lock_then_unlock(self):
        self.start_gateway(auth={"throttle": {
            "free_failures": self.FREE, "max_delay_seconds": 1,
            "lock_failures": self.LOCK_FAILURES,
            "lock_seconds": self.LOCK_SECONDS}})
        before = gateway_metrics(self.gw)
        c = self.client()
        pw = self.passwords["alice"]

        # Failures up to free_failures + 1 are all checked (401): no wait
        # before the free ones, and the first wait starts only after the
        # failure that passes free_failures.
        for i in range(self.FREE + 1):
            r = c.login("alice", "wrong-%d" % i)
            self.assertEqual(r.status, 401, "attempt %d: %r" % (i + 1, r))
            self.assertEqual(r.json(), LOGIN_FAILED)
        failures = self.FREE + 1

        # Keep failing until the lock: throttled attempts (429) are not
        # checked and do not count; exactly lock_failures failures lock.
        first_429 = None
        throttled = 0

        def locked():
            nonlocal failures, first_429, throttled
            m = gateway_metrics(self.gw)
            if (self._metric(m, "postern_login_lockouts_total")
                    > self._metric(before, "postern_login_lockouts_total")):
                return True
            r = c.login("alice", "wrong-again")
            if r.status == 401:
                failures += 1
                self.assertEqual(r.json(), LOGIN_FAILED)
            else:
                self.assertEqual(r.status, 429, r)
                throttled += 1
                first_429 = first_429 or r
                time.sleep(0.2)
            return False

        wait_until(locked, timeout=20, interval=0, message="a lockout")
        self.assertEqual(failures, self.LOCK_FAILURES)
        # The wait after failure FREE+1 is 2^1 s capped at max_delay 1 s:
        # whether the next attempt fell in it depends on the clock, but the
        # lock (now) certainly answers 429.
        during = {"right": c.login("alice", pw),
                  "wrong": c.login("alice", "wrong-during-lock")}
        for label, r in during.items():
            with self.subTest(label):
                self.assertEqual(r.status, 429, r)
                self.assertIsNone(session_cookie(r))
                retry = r.header("Retry-After")
                self.assertIsNotNone(retry, r)
                self.assertRegex(retry, r"^[0-9]+$")
                self.assertTrue(1 <= int(retry) <= self.LOCK_SECONDS, retry)
                body = r.json()
                self.assertEqual(set(body), {"error", "retry_after"}, body)
                self.assertEqual(body["retry_after"], int(retry))
        # Same answer whether the password was right: only the seconds left
        # may differ, if the clock ticked between the two.
        norm = [re.sub(rb"[0-9]+", b"N", r.body) for r in during.values()]
        self.assertEqual(norm[0], norm[1])
        self.assertEqual({r.header("Content-Type") for r in during.values()},
                         {"application/json"})

        m = gateway_metrics(self.gw)
        self.assertEqual(
            self._metric(m, "postern_logins_total", '{result="failure"}')
            - self._metric(before, "postern_logins_total", '{result="failure"}'),
            self.LOCK_FAILURES)
        self.assertEqual(self._metric(m, "postern_login_lockouts_total")
                         - self._metric(before, "postern_login_lockouts_total"), 1)
        self.assertGreaterEqual(
            self._metric(m, "postern_logins_total", '{result="throttled"}')
            - self._metric(before, "postern_logins_total", '{result="throttled"}'),
            throttled + 2)
        self.assertGreaterEqual(self._metric(m, "postern_login_locked"), 1)
        self.assertEqual(self._metric(m, "postern_logins_total", '{result="success"}'),
                         self._metric(before, "postern_logins_total",
                                      '{result="success"}'))

        # Polling a locked key does not extend the lock: the right password
        # gets in once lock_seconds have passed.
        attempts = []

        def unlocked():
            r = c.login("alice", pw)
            attempts.append(r.status)
            if r.status == 429:
                time.sleep(0.25)
                return False
            self.assertEqual(r.status, 200, r)
            return True

        wait_until(unlocked, timeout=self.LOCK_SECONDS + 15, interval=0,
                   message="the lock to lift")
        self.assertEqual(c.me().status, 200)
        m = gateway_metrics(self.gw)
        self.assertEqual(self._metric(m, "postern_logins_total", '{result="success"}')
                         - self._metric(before, "postern_logins_total",
                                        '{result="success"}'), 1)
        # A success clears the counters: the next wrong password is a plain
        # 401 again, not a wait.
        r = c.login("alice", "wrong-after")
        self.assertEqual(r.status, 401, r)

    def test_failures_spread_over_accounts_lock_the_address(self):
        self.start_gateway(auth={"throttle": {
            "free_failures": 5, "max_delay_seconds": 1, "lock_failures": 3,
            "lock_seconds": 60}})
        c = self.client()
        # One failure per account name: no account reaches the limit, the
        # address (127.0.0.1) does.
        for name in ("mallory", "alice", "trudy"):
            r = c.login(name, "guess")
            self.assertEqual(r.status, 401, r)
            self.assertEqual(r.json(), LOGIN_FAILED)
        r = c.login("bob", self.passwords["bob"])
        self.assertEqual(r.status, 429, r)
        self.assertIsNone(session_cookie(r))
        self.assertIsNotNone(r.header("Retry-After"))
        m = gateway_metrics(self.gw)
        self.assertEqual(self._metric(m, "postern_login_lockouts_total"), 1)
        self.assertGreaterEqual(self._metric(m, "postern_login_locked"), 1)


class TokenTests(IdentityTestCase):

    def test_token_creation_needs_our_origin_on_a_cookie(self):
        self.start_gateway()
        alice = self.logged_in("alice")
        self.assert_json_error(
            alice.post("/api/tokens", {}, origin="https://evil.example"), 403)
        self.assert_json_error(alice.post("/api/tokens", {}, origin=None), 403)
        self.assert_json_error(
            alice.post("/api/tokens", {}, origin="null"), 403)
        r = alice.get("/api/tokens")
        self.assertEqual(r.json(), {"tokens": []}, "a refused request issued a token")
        r = alice.post("/api/tokens", {})
        self.assertEqual(r.status, 201, r)

    def test_token_use_list_and_revoke(self):
        self.start_gateway()
        alice = self.logged_in("alice")
        bob = self.logged_in("bob")
        r = alice.create_token(name="ci-job", expires_in=3600)
        self.assertEqual(r.status, 201, r)
        t = r.json()
        self.assertRegex(t["id"], r"^[0-9a-f]{16}$")
        self.assertTrue(t["token"].startswith("pst_"), t)
        self.assertEqual(t["name"], "ci-job")
        self.assertIsInstance(t["expires"], int)
        self.assertLessEqual(t["expires"], time.time() + 3600 + 5)
        self.assertGreater(t["expires"], time.time() + 3000)

        # Bearer: no cookie, no Origin needed.
        user = self.client(token=t["token"], origin=None)
        r = user.me()
        self.assertEqual(r.status, 200, r)
        me = r.json()
        self.assertEqual(me["user"], "alice")
        self.assertEqual(me["auth"], "token")
        self.assertEqual(sorted(v["name"] for v in me["vms"]), ["app01", "web01"])

        r = alice.get("/api/tokens")
        self.assertEqual(r.status, 200, r)
        listed = r.json()["tokens"]
        self.assertEqual([x["id"] for x in listed], [t["id"]])
        self.assertEqual(listed[0]["name"], "ci-job")
        self.assertNotIn(t["token"], r.text, "the listing shows the secret")
        self.assertEqual(bob.get("/api/tokens").json(), {"tokens": []})

        # Another user cannot revoke it; a malformed id is just unknown.
        self.assert_json_error(bob.delete("/api/tokens/" + t["id"]), 404)
        self.assertEqual(user.me().status, 200)
        self.assert_json_error(alice.delete("/api/tokens/0123456789abcdef"), 404)
        self.assert_json_error(alice.delete("/api/tokens/nothex"), 404)
        # Revoking on a cookie needs our Origin too.
        self.assert_json_error(alice.delete("/api/tokens/" + t["id"], origin=None), 403)
        self.assertEqual(user.me().status, 200)

        r = alice.delete("/api/tokens/" + t["id"])
        self.assertEqual(r.status, 200, r)
        self.assert_json_error(user.me(), 401)
        self.assertEqual(alice.get("/api/tokens").json(), {"tokens": []})
        self.assert_json_error(alice.delete("/api/tokens/" + t["id"]), 404)
        # A session outlives its tokens.
        self.assertEqual(alice.me().status, 200)

    def test_a_token_cannot_mint_a_token(self):
        self.start_gateway()
        alice = self.logged_in("alice")
        token = alice.create_token().json()["token"]
        bearer = self.client(token=token, origin=None)
        self.assert_json_error(bearer.post("/api/tokens", {}), 403)
        self.assert_json_error(
            bearer.post("/api/tokens", {}, origin=self.gw.origin), 403)
        # Nor with the session's cookie riding along as well.
        both = self.client(token=token, cookie=alice.cookie)
        self.assert_json_error(both.post("/api/tokens", {}), 403)
        self.assertEqual(len(alice.get("/api/tokens").json()["tokens"]), 1)

    def test_token_restricted_to_actions(self):
        self.start_gateway()
        alice = self.logged_in("alice")
        r = alice.create_token(actions=["tunnel"])
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["actions"], ["tunnel"])
        me = self.client(token=r.json()["token"], origin=None).me().json()
        self.assertEqual(sorted(v["name"] for v in me["vms"]), ["app01", "web01"])
        for v in me["vms"]:
            self.assertEqual(v["actions"], ["tunnel"], me)
        # An action alice has nowhere: the token reaches nothing.
        r = alice.create_token(actions=["rdp-login"])
        self.assertEqual(r.status, 201, r)
        me = self.client(token=r.json()["token"], origin=None).me().json()
        self.assertEqual(me["vms"], [])

    def test_bad_token_requests(self):
        self.start_gateway(auth={"token_max_seconds": 600, "throttle": LENIENT})
        alice = self.logged_in("alice")
        bad = [
            {"expires_in": 4},
            {"expires_in": 601},
            {"expires_in": "60"},
            {"expires_in": 60.5},
            {"actions": []},
            {"actions": ["fly"]},
            {"actions": "tunnel"},
            {"name": "has space"},
            {"name": "x" * 65},
        ]
        for body in bad:
            with self.subTest(body=body):
                self.assert_json_error(alice.post("/api/tokens", body), 400)
        self.assert_json_error(alice.post("/api/tokens", "[]"), 400)
        self.assert_json_error(alice.post("/api/tokens", "{"), 400)
        self.assertEqual(alice.get("/api/tokens").json(), {"tokens": []})
        r = alice.create_token(expires_in=600)
        self.assertEqual(r.status, 201, r)


class MalformedRequestTests(IdentityTestCase):

    SHARED_AUTH = {"throttle": LENIENT}

    def post_raw(self, head_lines, body=b"", timeout=20.0):
        req = ("POST /api/login HTTP/1.1\r\nHost: %s:%d\r\n"
               % (self.gw.host, self.gw.port)).encode()
        req += b"".join(h.encode() + b"\r\n" for h in head_lines)
        req += b"Connection: close\r\n\r\n" + body
        return self.gw.raw_request(req, timeout=timeout, method="POST")

    def test_malformed_login_bodies_are_400_json(self):
        self.start_gateway()
        pw = self.passwords["alice"]
        cases = [
            ("not JSON", b"user=alice&password=x"),
            ("truncated JSON", b'{"user":"alice","password":'),
            ("JSON array", json.dumps(["alice", pw]).encode()),
            ("JSON string", b'"alice"'),
            ("JSON null", b"null"),
            ("empty object", b"{}"),
            ("missing password", json.dumps({"user": "alice"}).encode()),
            ("missing user", json.dumps({"password": pw}).encode()),
            ("user not a string", json.dumps({"user": 7, "password": pw}).encode()),
            ("password not a string",
             json.dumps({"user": "alice", "password": ["x"]}).encode()),
            ("password null", json.dumps({"user": "alice", "password": None}).encode()),
            ("totp not a string",
             json.dumps({"user": "alice", "password": pw, "totp": 123456}).encode()),
            ("totp too long",
             json.dumps({"user": "alice", "password": pw, "totp": "1" * 11}).encode()),
            ("control character in user",
             json.dumps({"user": "ali\u0001ce", "password": pw}).encode()),
            ("newline in user",
             json.dumps({"user": "alice\nevent=forged", "password": pw}).encode()),
            ("NUL in user", json.dumps({"user": "alice\u0000", "password": pw}).encode()),
            ("space in user", json.dumps({"user": "al ice", "password": pw}).encode()),
            ("empty user", json.dumps({"user": "", "password": pw}).encode()),
            ("65-character user",
             json.dumps({"user": "a" * 65, "password": pw}).encode()),
            ("NUL in password",
             json.dumps({"user": "alice", "password": pw + "\u0000x"}).encode()),
            ("1025-byte password",
             json.dumps({"user": "alice", "password": "p" * 1025}).encode()),
            ("duplicate key",
             b'{"user":"nobody","user":"alice","password":"' + pw.encode() + b'"}'),
            ("invalid UTF-8", b'{"user":"alice","password":"\xff\xfe"}'),
            ("empty body", b""),
        ]
        with HealthPoller(self.gw) as hp:
            for label, body in cases:
                with self.subTest(label):
                    r = self.client(origin=None).post("/api/login", body)
                    self.assert_json_error(r, 400)
                    self.assertIsNone(session_cookie(r))
            with self.subTest("no body at all"):
                self.assert_json_error(self.post_raw([]), 400)
        hp.assert_healthy(self)
        # Boundary values are fine: a 64-character unknown user is an
        # ordinary failed login, a 1024-byte password an ordinary wrong one.
        r = self.client().login("a" * 64, "x")
        self.assertEqual(r.status, 401, r)
        r = self.client().login("alice", "p" * 1024)
        self.assertEqual(r.status, 401, r)
        self.assertEqual(self.client().login("alice", pw).status, 200)

    def test_deeply_nested_json_is_400(self):
        self.start_gateway()
        pw = self.passwords["alice"]
        cases = [
            ("3000 nested arrays", b"[" * 3000 + b"]" * 3000),
            ("unclosed nesting", b"[" * 6000),
            ("nested objects", b'{"a":' * 1000 + b"1" + b"}" * 1000),
            ("nesting inside a valid login",
             ('{"user":"alice","password":"%s","x":' % pw).encode()
             + b"[" * 1000 + b"]" * 1000 + b"}"),
            ("nested strings do not hide it",
             ('{"user":"alice","password":"%s","x":' % pw).encode()
             + b'["[",' * 1000 + b"1" + b"]" * 1000 + b"}"),
        ]
        with HealthPoller(self.gw) as hp:
            for label, body in cases:
                with self.subTest(label):
                    r = self.client(origin=None).post("/api/login", body)
                    err = self.assert_json_error(r, 400)
                    self.assertIn("nested", err["error"])
                    self.assertIsNone(session_cookie(r))
        hp.assert_healthy(self)
        # Brackets inside strings are not nesting; a little nesting is fine.
        body = json.dumps({"user": "alice", "password": pw,
                           "note": "[" * 500, "x": [[1], {"y": [2]}]})
        self.assertEqual(self.client().post("/api/login", body).status, 200)

    def test_body_over_64_kib_is_413(self):
        self.start_gateway()
        pw = self.passwords["alice"]
        # Announced too large: refused before a byte of it is read.
        r = self.post_raw(["Content-Type: application/json",
                           "Content-Length: %d" % (64 * 1024 + 1)])
        self.assert_json_error(r, 413)
        # Sent whole: a valid login padded past the limit. The answer may
        # come (and the connection close) while we are still sending.
        before = gateway_metrics(self.gw)
        body = json.dumps({"user": "alice", "password": pw,
                           "pad": "x" * (64 * 1024)}).encode()
        try:
            r = self.post_raw(["Content-Type: application/json",
                               "Content-Length: %d" % len(body)], body)
            self.assert_json_error(r, 413)
            self.assertIsNone(session_cookie(r))
        except (ConnectionClosed, OSError):  # ssl.SSLError is an OSError
            pass
        after = gateway_metrics(self.gw)
        key = ("postern_logins_total", '{result="success"}')
        self.assertEqual(after[key], before[key], "the oversized login succeeded")
        self.assertEqual(self.gw.https_get("/healthz").status, 200)
        self.assertEqual(self.client().login("alice", pw).status, 200)

    def test_bodies_up_to_64_kib_are_answered(self):
        """Any body within the 64 KiB limit gets an answer: here a valid
        login padded to the size (so 200)."""
        self.start_gateway()
        pw = self.passwords["alice"]
        base = len(json.dumps({"user": "alice", "password": pw, "pad": ""}))
        # (Stops at the first size without an answer: each costs a
        # timeout.)
        for size in (6000, 12000, 30000, 64 * 1024):
            body = json.dumps({"user": "alice", "password": pw,
                               "pad": "x" * (size - base)})
            self.assertEqual(len(body), size)
            try:
                r = self.client(origin=None).post("/api/login", body, timeout=10)
            except (OSError, ConnectionClosed) as e:
                self.fail("a %d-byte login body got no answer: %s: %s"
                          % (size, type(e).__name__, e))
            self.assertEqual(r.status, 200, "%d bytes: %r" % (size, r))


class UsersFileTests(IdentityTestCase):

    def test_broken_users_file_at_start_exits_2_naming_file_and_line(self):
        users = self.users_file()
        line = users.append_raw('{"name":"eve","roles":"ops"}')
        users.append_raw('{"name":"zed"}')
        gw = Gateway({"users_file": users.path, "roles": ROLES, "vms": VMS})
        self.addCleanup(gw.close)
        gw.start(wait=False)
        self.assertEqual(gw.wait_exit(timeout=20), 2, gw.stderr_text())
        self.assertIn("%s:%d:" % (users.path, line), gw.stderr_text())

    def test_users_file_with_invalid_json_at_start(self):
        users = self.users_file()
        line = users.append_raw('{"name":"eve",')
        gw = Gateway({"users_file": users.path, "roles": ROLES, "vms": VMS})
        self.addCleanup(gw.close)
        gw.start(wait=False)
        self.assertEqual(gw.wait_exit(timeout=20), 2, gw.stderr_text())
        self.assertIn("%s:%d:" % (users.path, line), gw.stderr_text())

    def test_broken_users_file_on_reload_keeps_the_old_users(self):
        self.start_gateway()
        alice = self.logged_in("alice")
        before = gateway_metrics(self.gw)
        # A user added together with the broken line must not appear.
        dave_pw = "dave-" + secrets.token_urlsafe(10)
        self.users.add("dave", dave_pw, ("ops",))
        line = self.users.append_raw('{"name":"eve","roles":["ops"],"password":"plain"}')
        ln = self.reload_and_wait("failed")
        self.assertIn("%s:%d:" % (self.users.path, line), ln)
        self.assertRegex(ln, r"level=error")
        self.assertEqual(alice.me().status, 200)
        self.assertEqual(self.client().login("alice", self.passwords["alice"]).status,
                         200)
        self.assertEqual(self.client().login("dave", dave_pw).status, 401)
        m = gateway_metrics(self.gw)
        key = ("postern_errors_total", '{kind="config_reload"}')
        self.assertEqual(m[key] - before[key], 1)

        # Fixed: the next reload takes it, dave included.
        with open(self.users.path) as f:
            lines = f.read().splitlines()
        del lines[line - 1]
        with open(self.users.path, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.reload_and_wait("ok")
        self.assertEqual(self.client().login("dave", dave_pw).status, 200)
        self.assertEqual(alice.me().status, 200)


if __name__ == "__main__":
    unittest.main()
