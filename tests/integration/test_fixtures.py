"""Self-check of the fixtures: the Sshd really accepts what it claims to, and
the small helpers behave."""

import json
import os
import socket
import subprocess
import unittest

import postern_fixtures as pf


class SshdTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        pf.require_root()
        pf.require_tool("ssh")
        cls.sshd = pf.Sshd()
        cls.addClassCleanup(cls.sshd.close)
        cls.sshd.start()

    def test_password_login_runs_command(self):
        r = self.sshd.run_ssh_with_password("echo ok")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.stdout.strip(), "ok")

    def test_key_login_runs_command(self):
        r = self.sshd.run_ssh_with_key("echo ok; id -un")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.stdout.split(), ["ok", pf.TEST_USER])

    def test_wrong_password_is_refused(self):
        r = self.sshd.run_ssh_with_password("echo ok",
                                            password=self.sshd.password + "x")
        self.assertEqual(r.returncode, 255, r)
        self.assertNotIn("ok", r.stdout)
        self.assertIn("Permission denied", r.stderr)

    def test_unknown_key_is_refused(self):
        with pf.TempDir() as d:
            key = os.path.join(d, "other")
            pf.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
            r = self.sshd.run_ssh_with_key("echo ok", key=key)
        self.assertEqual(r.returncode, 255, r)
        self.assertNotIn("ok", r.stdout)

    def test_host_key_fingerprints_match_what_the_server_presents(self):
        # ssh-keyscan reads the key the server actually sends.
        out = pf.run(["ssh-keyscan", "-p", str(self.sshd.port), "-t", "ed25519",
                      self.sshd.host]).stdout
        line = [ln for ln in out.splitlines() if "ssh-ed25519" in ln][0]
        blob = line.split()[2]
        self.assertEqual(blob, self.sshd.host_keys["ed25519"].public_line.split()[1])
        self.assertRegex(self.sshd.host_key_sha256, r"^SHA256:[A-Za-z0-9+/]{43}$")
        self.assertRegex(self.sshd.host_key_sha256_hex, r"^[0-9a-f]{64}$")
        self.assertRegex(self.sshd.host_keys["rsa"].fingerprint, r"^SHA256:")

    def test_vm_config_is_accepted_by_the_gateway(self):
        # Later tests hand this entry to posternd; it must stay valid.
        binary = pf.posternd_path()
        with pf.TempDir() as d:
            path = os.path.join(d, "c.json")
            with open(path, "w") as f:
                json.dump({"listen": "127.0.0.1:%d" % pf.free_port(),
                           "state_dir": d, "vms": [self.sshd.vm_config()]}, f)
            r = pf.run([binary, "--check-config", path], check=False)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_only_loopback(self):
        self.assertTrue(self.sshd.host.startswith("127."))
        with self.assertRaises(ValueError):
            pf.Sshd(host="0.0.0.0")


class SshdStopTest(unittest.TestCase):
    def test_stop_frees_the_port_and_leaves_no_process(self):
        pf.require_root()
        sshd = pf.Sshd()
        self.addCleanup(sshd.close)
        sshd.start()
        pid = sshd.proc.pid
        self.assertTrue(pf.port_is_listening(sshd.host, sshd.port))
        sshd.close()
        self.assertFalse(pf.port_is_listening(sshd.host, sshd.port))
        self.assertTrue(pf.process_group_gone(pid), "sshd survived close()")
        self.assertIsNone(sshd.dir)


class HelperTest(unittest.TestCase):
    def test_free_port_is_bindable(self):
        port = pf.free_port()
        with socket.socket() as s:
            s.bind((pf.LOOPBACK, port))

    def test_prometheus_parser(self):
        good = ('# HELP a_total Things.\n# TYPE a_total counter\n'
                'a_total 3\nb{protocol="ssh",x="y"} 0\nc 1.5e3\n')
        self.assertEqual(pf.metric_sum(pf.parse_prometheus(good), "a_total"), 3)
        for bad in ("a b c\n", "a{x=1} 2\n", "# TYPE a bogus\n", "a\n"):
            with self.assertRaises(AssertionError, msg=bad):
                pf.parse_prometheus(bad)

    def test_log_field_parser(self):
        f = pf.parse_log_fields(
            'ts=x level=info event=http.request path="/a b\\"c" status=200')
        self.assertEqual(f["event"], "http.request")
        self.assertEqual(f["path"], '/a b"c')
        self.assertEqual(f["status"], "200")

    def test_stop_process_kills_the_group(self):
        # A parent that ignores SIGTERM, with a child in its group.
        code = ("import signal, subprocess\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "c = subprocess.Popen(['sleep', '600'])\n"
                "print('ready', flush=True)\n"
                "c.wait()\n")
        p = subprocess.Popen(["/usr/bin/python3", "-c", code],
                             stdout=subprocess.PIPE, start_new_session=True)
        self.addCleanup(p.stdout.close)
        self.assertEqual(p.stdout.readline().strip(), b"ready")
        rc = pf.stop_process(p, timeout=0.5)
        self.assertEqual(rc, -9)

        self.assertTrue(pf.process_group_gone(p.pid), "the child survived")


if __name__ == "__main__":
    unittest.main()
