"""Second factor (TOTP, RFC 6238) over real HTTPS.

Secrets are enrolled with the real `postern user totp`, which prints an
otpauth:// URI; the codes are computed here, independently of the gateway,
with HMAC-SHA-1 over 30-second steps (postern_fixtures.totp_code).
"""

import os
import secrets
import shutil
import unittest

from postern_fixtures import (
    ApiClient, UsersFile, checked_gateway, make_temp_dir, postern,
    session_cookie, ssh_vm, totp_code, totp_secret_from_uri, totp_step,
)

ROLES = {
    "ops": {"vms": ["web*"], "actions": ["ssh-login"]},
    "secure": {"vms": ["db*"], "actions": ["ssh-login"], "mfa_required": True},
}
VMS = [ssh_vm("web01"), ssh_vm("db01")]
LENIENT = {"free_failures": 1000, "max_delay_seconds": 0,
           "lock_failures": 1000, "lock_seconds": 1}
LOGIN_FAILED = {"error": "invalid user name or password"}


def code_outside_window(secret, step):
    """A 6-digit code valid at none of the steps around `step`."""
    valid = {totp_code(secret, step=s) for s in range(step - 3, step + 4)}
    n = int(totp_code(secret, step=step))
    while "%06d" % n in valid:
        n = (n + 1) % 1000000
    return "%06d" % n


class MfaTestCase(unittest.TestCase):

    # name -> (roles, enrol TOTP?)
    USERS = {
        "alice": (("ops",), True),
        "bob": (("secure",), False),
        "carol": (("secure",), True),
        "dave": (("ops",), False),
    }

    @classmethod
    def setUpClass(cls):
        cls._dir = make_temp_dir(None, prefix="postern-mfa-users-")
        uf = UsersFile(os.path.join(cls._dir, "users.json"))
        cls.passwords, cls.secrets = {}, {}
        for name, (roles, totp) in cls.USERS.items():
            cls.passwords[name] = "pw-" + secrets.token_urlsafe(12)
            uf.add(name, cls.passwords[name], roles)
            if totp:
                cls.secrets[name] = uf.enrol_totp(name)
        cls._template = uf.path

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls._dir, ignore_errors=True)

    def setUp(self):
        d = make_temp_dir(self)
        self.users = UsersFile(os.path.join(d, "users.json"))
        shutil.copy(self._template, self.users.path)
        self.state_dir = os.path.join(d, "state")
        os.mkdir(self.state_dir, 0o700)

    def start_gateway(self):
        self.gw = checked_gateway(self, {
            "users_file": self.users.path, "state_dir": self.state_dir,
            "roles": ROLES, "vms": VMS, "auth": {"throttle": LENIENT}})
        return self.gw

    def client(self, **kw):
        return ApiClient(self.gw, **kw)

    def login(self, user, code=None, password=None):
        return self.client().login(
            user, self.passwords[user] if password is None else password,
            totp=code)

    def assert_refused(self, r, status=401):
        self.assertEqual(r.status, status, r)
        self.assertIsNone(session_cookie(r), r)
        body = r.json()
        self.assertIsInstance(body.get("error"), str, r)
        return body


class TotpLoginTests(MfaTestCase):

    def test_secret_from_the_cli_is_a_standard_totp_uri(self):
        out = self.users.list()
        self.assertRegex(out, r"(?m)^alice\troles=ops\tpassword=set\tmfa=totp$")
        self.assertRegex(out, r"(?m)^dave\troles=ops\tpassword=set\tmfa=none$")
        uri = postern("user", "totp", "dave", "--users-file",
                      self.users.path).stdout.strip()
        self.assertRegex(uri, r"^otpauth://totp/Postern:dave\?")
        for param in ("algorithm=SHA1", "digits=6", "period=30", "issuer=Postern"):
            self.assertIn(param, uri)
        self.assertRegex(totp_secret_from_uri(uri), r"^[A-Z2-7]{32}$")  # 160 bits
        self.assertNotIn(totp_secret_from_uri(uri), self.users.list())

    def test_login_without_code_asks_for_one(self):
        self.start_gateway()
        body = self.assert_refused(self.login("alice"))
        self.assertIs(body.get("mfa_required"), True, body)
        # Only the right password reveals that a code is needed.
        body = self.assert_refused(self.login("alice", password="wrong-password"))
        self.assertEqual(body, LOGIN_FAILED)
        body = self.assert_refused(
            self.login("alice", password="wrong-password",
                       code=totp_code(self.secrets["alice"])))
        self.assertEqual(body, LOGIN_FAILED)

    def test_wrong_code_is_refused(self):
        self.start_gateway()
        secret = self.secrets["alice"]
        now = totp_step()
        window = {totp_code(secret, step=s) for s in range(now - 2, now + 3)}
        cases = [("outside the window", code_outside_window(secret, now)),
                 ("letters", "abcdef"),
                 ("empty", ""),
                 ("five digits", totp_code(secret)[:5]),
                 ("seven digits", totp_code(secret) + "0")]
        other = totp_code(self.secrets["carol"])
        if other not in window:  # else the two codes collide (1 in ~200000)
            cases.append(("another user's code", other))
        for label, code in cases:
            with self.subTest(label):
                body = self.assert_refused(self.login("alice", code=code))
                self.assertNotIn("mfa_required", body)
                self.assertNotEqual(body, LOGIN_FAILED,
                                    "a wrong code must not look like a wrong password")
        # None of that burnt the current code.
        r = self.login("alice", code=totp_code(secret))
        self.assertEqual(r.status, 200, r)

    def test_right_code_logs_in_with_mfa(self):
        self.start_gateway()
        c = self.client()
        r = c.login("alice", self.passwords["alice"],
                    totp=totp_code(self.secrets["alice"]))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"user": "alice", "roles": ["ops"], "mfa": True})
        me = c.me().json()
        self.assertIs(me["mfa"], True)
        self.assertIs(me["mfa_enrolled"], True)
        self.assertEqual([v["name"] for v in me["vms"]], ["web01"])
        r = c.create_token()
        self.assertEqual(r.status, 201, r)
        me = self.client(token=r.json()["token"], origin=None).me().json()
        self.assertIs(me["mfa"], True)

    def test_a_code_is_accepted_once(self):
        self.start_gateway()
        secret = self.secrets["alice"]
        step = totp_step()
        code = totp_code(secret, step=step)
        self.assertEqual(self.login("alice", code=code).status, 200)

        body = self.assert_refused(self.login("alice", code=code))
        self.assertNotIn("mfa_required", body)
        # A fresh attempt (the password alone, then the code) does not make
        # the used code good again; nor does an older one.
        body = self.assert_refused(self.login("alice"))
        self.assertIs(body.get("mfa_required"), True)
        self.assert_refused(self.login("alice", code=code))
        self.assert_refused(self.login("alice", code=totp_code(secret, step=step - 1)))
        # The replay check is what refused them: the next step's code (within
        # the +-1 step window) is still good, once.
        self.assertLessEqual(totp_step(), step + 1, "the test took over 30 s")
        nxt = totp_code(secret, step=step + 1)
        if nxt != code:
            self.assertEqual(self.login("alice", code=nxt).status, 200)
            self.assert_refused(self.login("alice", code=nxt))
        # Used codes are per user: carol's own code works.
        self.assertEqual(self.login("carol", code=totp_code(self.secrets["carol"])).status,
                         200)

    def test_a_used_code_stays_used_across_a_restart(self):
        gw = self.start_gateway()
        secret = self.secrets["alice"]
        step = totp_step()
        code = totp_code(secret, step=step)
        self.assertEqual(self.login("alice", code=code).status, 200)
        self.assertEqual(gw.stop(), 0)

        self.start_gateway()  # same state_dir, same users file
        self.assertLessEqual(totp_step(), step + 1, "the restart took over 30 s")
        body = self.assert_refused(self.login("alice", code=code))
        self.assertNotIn("mfa_required", body)
        nxt = totp_code(secret, step=step + 1)
        if nxt != code:
            self.assertEqual(self.login("alice", code=nxt).status, 200)


class MfaRequiredTests(MfaTestCase):

    def test_role_requiring_mfa_without_enrolment_is_403(self):
        self.start_gateway()
        r = self.login("bob")
        body = self.assert_refused(r, 403)
        self.assertRegex(body["error"], r"second factor")
        # A code sent anyway changes nothing.
        self.assert_refused(self.login("bob", code="123456"), 403)
        # A wrong password still gets the common answer: the 403 is only for
        # whoever knows the password.
        body = self.assert_refused(self.login("bob", password="wrong-password"))
        self.assertEqual(body, LOGIN_FAILED)

    def test_role_requiring_mfa_with_enrolment(self):
        self.start_gateway()
        body = self.assert_refused(self.login("carol"))
        self.assertIs(body.get("mfa_required"), True)
        c = self.client()
        r = c.login("carol", self.passwords["carol"],
                    totp=totp_code(self.secrets["carol"]))
        self.assertEqual(r.status, 200, r)
        me = c.me().json()
        self.assertIs(me["mfa"], True)
        self.assertEqual([v["name"] for v in me["vms"]], ["db01"])

    def test_without_totp_mfa_is_false(self):
        self.start_gateway()
        c = self.client()
        r = c.login("dave", self.passwords["dave"])
        self.assertEqual(r.status, 200, r)
        self.assertIs(r.json()["mfa"], False)
        me = c.me().json()
        self.assertIs(me["mfa"], False)
        self.assertIs(me["mfa_enrolled"], False)

    def test_enrolment_after_login_needs_the_code_for_tokens(self):
        self.start_gateway()
        c = self.client()
        self.assertEqual(c.login("dave", self.passwords["dave"]).status, 200)
        secret = self.users.enrol_totp("dave")
        mark = self.gw.log.mark()
        self.gw.reload()
        self.gw.log.wait_for_event("config.reload", since=mark, result="ok")
        # A new second factor ends the sessions made without it: the old
        # cookie neither reads nor mints tokens.
        self.assert_refused(c.me(), 401)
        self.assert_refused(c.create_token(), 401)
        # The password alone no longer logs in; with the code it does.
        body = self.assert_refused(self.login("dave"))
        self.assertIs(body.get("mfa_required"), True)
        c2 = self.client()
        self.assertEqual(c2.login("dave", self.passwords["dave"],
                                  totp=totp_code(secret)).status, 200)
        self.assertEqual(c2.create_token().status, 201)


if __name__ == "__main__":
    unittest.main()
