"""`posternd --check-config` and start-up with good and bad configs.

Each error must name the file and the JSON path of the offending value; the
wording after the path is the daemon's to choose.
"""

import json
import os
import re
import unittest

import postern_fixtures as pf


# A VM needs at least one way in ("ssh" or "rdp").
SSH_TOFU = {"port": 22, "trust_on_first_use": True}


def vm(name, address="127.0.0.1", **more):
    return dict({"name": name, "address": address, "ssh": dict(SSH_TOFU)},
                **more)


def minimal(tmp):
    state = os.path.join(tmp, "state")
    os.makedirs(state, exist_ok=True)
    return {"listen": "127.0.0.1:%d" % pf.free_port(), "state_dir": state}


class CheckConfigTest(unittest.TestCase):
    def setUp(self):
        pf.posternd_path()
        self.tmp = pf.make_temp_dir(self)
        self.n = 0

    def write(self, config=None, text=None):
        self.n += 1
        path = os.path.join(self.tmp, "cfg%d.json" % self.n)
        with open(path, "w") as f:
            f.write(text if text is not None else json.dumps(config, indent=2))
        return path

    def assert_valid(self, config):
        path = self.write(config)
        r = pf.check_config(path)
        self.assertEqual(r.returncode, 0, "%r\nconfig: %s" % (r, json.dumps(config)))
        self.assertEqual(r.stdout.strip(), "%s: OK" % path, r)
        return r

    def assert_invalid(self, config=None, json_path=None, text=None,
                       also=()):
        """Exit 2, and one stderr line holding `FILE: JSON_PATH` (plus the
        strings in `also`)."""
        path = self.write(config, text)
        r = pf.check_config(path)
        self.assertEqual(r.returncode, 2,
                         "%r\nconfig: %s" % (r, text or json.dumps(config)))
        self.assertNotIn(": OK", r.stdout)
        lines = [ln for ln in r.stderr.splitlines() if path in ln]
        self.assertTrue(lines, "stderr does not name %s: %r" % (path, r.stderr))
        if json_path is not None:
            want = "%s: %s" % (path, json_path)
            match = [ln for ln in lines if want in ln
                     and all(a in ln for a in also)]
            self.assertTrue(match, "no stderr line with %r %r: %r"
                            % (want, also, r.stderr))
            # The path must be the whole JSON path, not a prefix of another
            # key (vms[1].address, not vms[1].addresses).
            rest = match[0].split(want, 1)[1]
            self.assertRegex(rest, r"^(:|\s|$)",
                             "path %r is followed by %r" % (json_path, rest))
        return r

    # -- valid ----------------------------------------------------------------

    def test_minimal_config_is_valid(self):
        self.assert_valid(minimal(self.tmp))

    def test_every_key_is_accepted(self):
        cfg = minimal(self.tmp)
        cert, key = pf.make_self_signed_cert(self.tmp)
        ssh_key = os.path.join(self.tmp, "vm_key")
        pf.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", ssh_key])
        rdp_pw = os.path.join(self.tmp, "rdp_password")
        with open(rdp_pw, "w") as f:
            f.write("secret\n")
        os.chmod(rdp_pw, 0o600)
        cfg.update({
            "listen": ["127.0.0.1:%d" % pf.free_port(), "[::1]:8443",
                       "127.0.0.2:8443"],
            "http_redirect": "127.0.0.1:%d" % pf.free_port(),
            "tls": {"cert": cert, "key": key},
            "origins": ["https://gw.example.test", "https://127.0.0.1:8443"],
            "log_level": "debug",
            "users_file": os.path.join(self.tmp, "users.json"),
            "roles": {
                "ops": {"vms": ["web*", "tag:linux"],
                        "actions": ["ssh-login", "ssh-admin-login", "rdp-login",
                                    "rdp-admin-login", "tunnel", "auditor",
                                    "approver", "admin"]},
                "viewer": {"vms": ["*"], "actions": ["auditor"]},
            },
            "limits": {"max_sessions": 100, "max_sessions_per_user": 5,
                       "shutdown_grace_seconds": 5,
                       "handshake_timeout_seconds": 3},
            "vms": [
                {"name": "web01", "address": "127.0.0.1", "tags": ["linux"],
                 "max_sessions": 0, "recording": "required",
                 "ssh": {"port": 22, "host_key_sha256":
                         "SHA256:" + "A" * 43,
                         "username": "deploy", "key_file": ssh_key},
                 "jit": {"required": True, "ports": [22, 3389],
                         "default_duration": 3600, "max_duration": 28800}},
                {"name": "Win-2022_a.b", "address": "127.0.0.3",
                 "recording": "on",
                 "rdp": {"port": 3389, "trust_on_first_use": True,
                         "username": "Administrator",
                         "password_file": rdp_pw}},
                {"name": "x" * 64, "address": "127.0.0.4", "recording": "off",
                 "ssh": {"port": 2222, "trust_on_first_use": True},
                 "rdp": {"port": 3390, "cert_sha256": "B" * 64}},
            ],
        })
        self.assert_valid(cfg)

    def test_single_listen_and_empty_lists_are_valid(self):
        cfg = minimal(self.tmp)
        cfg.update({"vms": [], "roles": {}, "origins": [], "limits": {}})
        self.assert_valid(cfg)

    def test_each_log_level_is_valid(self):
        for level in ("debug", "info", "warn", "error"):
            cfg = minimal(self.tmp)
            cfg["log_level"] = level
            with self.subTest(level=level):
                self.assert_valid(cfg)

    # -- JSON syntax ----------------------------------------------------------

    def test_bad_json_names_line_and_column(self):
        text = ('{\n  "listen": "127.0.0.1:8443",\n'
                '  "state_dir": "/tmp" "oops"\n}\n')
        path = self.write(text=text)
        r = pf.check_config(path)
        self.assertEqual(r.returncode, 2, r)
        m = re.search(re.escape(path) + r":(\d+):(\d+): invalid JSON", r.stderr)
        self.assertTrue(m, r)
        self.assertEqual(int(m.group(1)), 3, r)
        self.assertGreater(int(m.group(2)), 0, r)

    def test_empty_file_is_invalid_json(self):
        r = self.assert_invalid(text="")
        self.assertIn("invalid JSON", r.stderr)

    def test_top_level_must_be_an_object(self):
        self.assert_invalid(text='["127.0.0.1:8443"]\n')

    def test_missing_file(self):
        path = os.path.join(self.tmp, "does-not-exist.json")
        r = pf.check_config(path)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn(path, r.stderr)

    # -- required keys --------------------------------------------------------

    def test_listen_is_required(self):
        cfg = minimal(self.tmp)
        del cfg["listen"]
        r = self.assert_invalid(cfg)
        self.assertIn('"listen"', r.stderr)

    def test_state_dir_is_required(self):
        cfg = minimal(self.tmp)
        del cfg["state_dir"]
        r = self.assert_invalid(cfg)
        self.assertIn('"state_dir"', r.stderr)

    # -- unknown keys anywhere --------------------------------------------------

    def test_unknown_keys(self):
        cases = [
            ("lisen", lambda c: c.update(lisen="127.0.0.1:1")),
            ("limits.max_sesions",
             lambda c: c.update(limits={"max_sesions": 3})),
            ("tls.certificate",
             lambda c: c.update(tls={"certificate": "/x"})),
            ("roles.ops.vm",
             lambda c: c.update(roles={"ops": {"vm": ["*"],
                                               "actions": ["ssh-login"]}})),
            ("vms[0].adress",
             lambda c: c.update(vms=[vm("a", adress="x")])),
            ("vms[0].ssh.hostkey",
             lambda c: c.update(vms=[{"name": "a", "address": "127.0.0.1",
                                      "ssh": {"port": 22, "hostkey": "x",
                                              "trust_on_first_use": True}}])),
            ("vms[0].jit.requird",
             lambda c: c.update(vms=[vm("a", jit={"required": True,
                                                  "requird": "x"})])),
        ]
        for json_path, mutate in cases:
            cfg = minimal(self.tmp)
            mutate(cfg)
            with self.subTest(path=json_path):
                self.assert_invalid(cfg, json_path)

    # -- types and values -----------------------------------------------------

    def test_bad_values_name_their_path(self):
        def vms(*items):
            def mutate(c):
                c["vms"] = []
                for i, it in enumerate(items):
                    v = vm("v%d" % i)
                    v.update(it)
                    c["vms"].append(v)
            return mutate
        cases = [
            ("listen", lambda c: c.update(listen=8443)),
            ("listen", lambda c: c.update(listen="no-port-here")),
            ("listen[1]", lambda c: c.update(listen=["127.0.0.1:1", 7])),
            ("http_redirect", lambda c: c.update(http_redirect=80)),
            ("state_dir", lambda c: c.update(state_dir=["x"])),
            ("log_level", lambda c: c.update(log_level="verbose")),
            ("origins", lambda c: c.update(origins="https://x")),
            ("origins[0]", lambda c: c.update(origins=[1])),
            ("users_file", lambda c: c.update(users_file=True)),
            ("limits", lambda c: c.update(limits=[])),
            ("limits.max_sessions",
             lambda c: c.update(limits={"max_sessions": "ten"})),
            ("limits.shutdown_grace_seconds",
             lambda c: c.update(limits={"shutdown_grace_seconds": "5"})),
            ("limits.handshake_timeout_seconds",
             lambda c: c.update(limits={"handshake_timeout_seconds": -1})),
            ("roles.ops.actions[1]",
             lambda c: c.update(roles={"ops": {"vms": ["*"],
                                               "actions": ["ssh-login", "fly"]}})),
            ("roles.ops.vms",
             lambda c: c.update(roles={"ops": {"vms": "web*",
                                               "actions": ["ssh-login"]}})),
            ("vms", lambda c: c.update(vms={"name": "a"})),
            ("vms[1].address", vms({}, {"address": 12})),
            ("vms[0].name", vms({"name": "bad name!"})),
            ("vms[0].name", vms({"name": ""})),
            ("vms[0].name", vms({"name": "x" * 65})),
            ("vms[0].name", vms({"name": "a/b"})),
            ("vms[0].tags", vms({"tags": "linux"})),
            ("vms[0].tags[0]", vms({"tags": [3]})),
            ("vms[0].max_sessions", vms({"max_sessions": -1})),
            ("vms[0].max_sessions", vms({"max_sessions": 1.5})),
            ("vms[0].recording", vms({"recording": "sometimes"})),
            ("vms[0].ssh.port", vms({"ssh": {"port": "22",
                                              "trust_on_first_use": True}})),
            ("vms[0].ssh.port", vms({"ssh": {"port": 70000,
                                              "trust_on_first_use": True}})),
            ("vms[0].ssh.trust_on_first_use",
             vms({"ssh": {"port": 22, "trust_on_first_use": "yes"}})),
            ("vms[0].rdp.port", vms({"rdp": {"port": -3,
                                              "trust_on_first_use": True}})),
            ("vms[0].jit.required", vms({"jit": {"required": "true"}})),
            ("vms[0].jit.ports[1]", vms({"jit": {"required": True,
                                                  "ports": [22, "3389"]}})),
            ("vms[0].jit.max_duration",
             vms({"jit": {"required": True, "max_duration": "1h"}})),
        ]
        for json_path, mutate in cases:
            cfg = minimal(self.tmp)
            mutate(cfg)
            with self.subTest(path=json_path, config=json.dumps(cfg)):
                self.assert_invalid(cfg, json_path)

    def test_missing_vm_keys(self):
        cfg = minimal(self.tmp)
        nameless = vm("a")
        del nameless["name"]
        cfg["vms"] = [nameless]
        self.assert_invalid(cfg, "vms[0]", also=('"name"',))
        addressless = vm("b")
        del addressless["address"]
        cfg["vms"] = [vm("a"), addressless]
        self.assert_invalid(cfg, "vms[1]", also=('"address"',))

    def test_duplicate_vm_names(self):
        cfg = minimal(self.tmp)
        cfg["vms"] = [vm("web01"), vm("web02", "127.0.0.2"),
                      vm("web01", "127.0.0.3")]
        self.assert_invalid(cfg, "vms[2].name")

    def test_tls_needs_both_cert_and_key(self):
        cert, key = pf.make_self_signed_cert(self.tmp)
        for tls in ({"cert": cert}, {"key": key}):
            cfg = minimal(self.tmp)
            cfg["tls"] = tls
            with self.subTest(tls=tls):
                self.assert_invalid(cfg, "tls")

    def test_error_is_one_line_on_stderr(self):
        cfg = minimal(self.tmp)
        cfg["vms"] = [vm("a"), vm("b", address=["127.0.0.1"])]
        r = self.assert_invalid(cfg, "vms[1].address")
        self.assertEqual(r.stdout, "", r)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        self.assertEqual(len(lines), 1, r)


class StartWithConfigTest(unittest.TestCase):
    """The same validation guards `--config` at start."""

    def test_invalid_config_exits_2_without_listening(self):
        tmp = pf.make_temp_dir(self)
        cfg = minimal(tmp)
        cfg["limits"] = {"max_sesions": 3}
        host, port = pf.split_host_port(cfg["listen"])
        gw = pf.Gateway(cfg, defaults=False)
        self.addCleanup(gw.close)
        gw.start(wait=False)
        self.assertEqual(gw.wait_exit(15), 2, gw.stderr_text())
        self.assertIn("%s: limits.max_sesions" % gw.config_path, gw.stderr_text())
        self.assertFalse(pf.port_is_listening(host, port))
        # Nothing was created in the state directory either.
        self.assertEqual(os.listdir(cfg["state_dir"]), [])

    def test_list_of_listeners_all_serve(self):
        p1, p2 = pf.free_port("127.0.0.1"), pf.free_port("127.0.0.2")
        gw = pf.Gateway.started(self, {"listen": ["127.0.0.1:%d" % p1,
                                                  "127.0.0.2:%d" % p2]})
        for host, port in (("127.0.0.1", p1), ("127.0.0.2", p2)):
            r = gw.request("GET", "/healthz", host=host, port=port)
            self.assertEqual((r.status, r.body.strip()), (200, b"ok"),
                             "%s:%d" % (host, port))


if __name__ == "__main__":
    unittest.main()
