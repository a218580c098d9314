"""Self-check of the fixtures: the Sshd really accepts what it claims to, and
the small helpers behave."""

import json
import os
import socket
import subprocess
import time
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


class RdpShadowTest(unittest.TestCase):
    """The RDP target: FreeRDP's shadow server on an Xvfb, NLA logins
    against its own SAM file, driven with the real xfreerdp."""

    @classmethod
    def setUpClass(cls):
        cls.rdp = pf.RdpShadow()
        cls.addClassCleanup(cls.rdp.close)
        cls.rdp.start()

    def test_auth_only_with_the_right_password(self):
        rc, out = self.rdp.auth_only()
        self.assertEqual(rc, 0, out)

    def test_auth_only_with_a_wrong_password_is_refused(self):
        mark = self.rdp.log.mark()
        rc, out = self.rdp.auth_only(password=self.rdp.password + "x")
        self.assertEqual(rc, pf.XF_EXIT_CONNECT_TRANSPORT_FAILED, out)
        # Refused by NLA, not lost some other way.
        self.rdp.log.wait_for(r"client authentication failure", since=mark)

    def test_unknown_user_is_refused(self):
        rc, out = self.rdp.auth_only(user="nobody-" + self.rdp.user)
        self.assertEqual(rc, pf.XF_EXIT_CONNECT_TRANSPORT_FAILED, out)

    def test_auth_only_on_a_private_display(self):
        # Without display=, the helper brings its own Xvfb.
        rc, out = pf.xfreerdp_auth_only(self.rdp.host, self.rdp.port,
                                        self.rdp.user, self.rdp.password,
                                        timeout=30)
        self.assertEqual(rc, 0, out)

    def test_cert_fingerprint_is_what_the_server_presents(self):
        self.assertRegex(self.rdp.cert_sha256, r"^([0-9A-F]{2}:){31}[0-9A-F]{2}$")
        self.assertRegex(self.rdp.cert_sha256_hex, r"^[0-9a-f]{64}$")
        self.assertEqual(self.rdp.cert_sha256.replace(":", "").lower(),
                         self.rdp.cert_sha256_hex)
        rc, out = self.rdp.auth_only(cert=self.rdp.cert_sha256)
        self.assertEqual(rc, 0, out)
        wrong = "%02X" % (int(self.rdp.cert_sha256[:2], 16) ^ 1) \
            + self.rdp.cert_sha256[2:]
        rc, out = self.rdp.auth_only(cert=wrong)
        self.assertEqual(rc, pf.XF_EXIT_TLS_CONNECT_FAILED, out)

    def test_session_is_held_and_ends_cleanly(self):
        t0 = time.monotonic()
        res = self.rdp.session(seconds=3)
        elapsed = time.monotonic() - t0
        self.assertTrue(res.connected, res)
        self.assertTrue(res.held, res)
        self.assertTrue(res.clean, res)
        self.assertEqual(res.returncode, 0, res)
        self.assertGreaterEqual(elapsed, 3.0)
        # The server is still there for the next client.
        rc, out = self.rdp.auth_only()
        self.assertEqual(rc, 0, out)

    def test_session_with_a_wrong_password_does_not_connect(self):
        res = self.rdp.session(seconds=1, password=self.rdp.password + "x")
        self.assertFalse(res.connected, res)
        self.assertEqual(res.returncode, pf.XF_EXIT_CONNECT_TRANSPORT_FAILED,
                         res)

    def test_files_and_loopback_only(self):
        self.assertEqual(self.rdp.host, "127.0.0.1")
        self.assertEqual(pf._tcp_listeners_on_port(self.rdp.port),
                         ["0100007F"])   # 127.0.0.1, nothing else
        self.assertEqual(os.stat(self.rdp.sam_path).st_mode & 0o777, 0o600)
        self.assertTrue(self.rdp.sam_path.startswith(self.rdp.dir))
        with open(self.rdp.password_file) as f:
            self.assertEqual(f.read(), self.rdp.password)
        for bad in ("0.0.0.0", "192.0.2.1"):
            with self.assertRaises(ValueError):
                pf.RdpShadow(host=bad)
            with self.assertRaises(ValueError):
                pf.xfreerdp_auth_only(bad, self.rdp.port, "u", "p")

    def test_vm_config_is_accepted_by_the_gateway(self):
        binary = pf.posternd_path()
        with pf.TempDir() as d:
            path = os.path.join(d, "c.json")
            vm = self.rdp.vm_config()
            vm["rdp"].update(username=self.rdp.user,
                             password_file=self.rdp.password_file)
            with open(path, "w") as f:
                json.dump({"listen": "127.0.0.1:%d" % pf.free_port(),
                           "state_dir": d, "vms": [vm]}, f)
            r = pf.run([binary, "--check-config", path], check=False)
        self.assertEqual(r.returncode, 0, r.stderr)


class RdpShadowStopTest(unittest.TestCase):
    def test_close_leaves_no_process_port_display_or_file(self):
        rdp = pf.RdpShadow()
        self.addCleanup(rdp.close)
        rdp.start()
        pids = [rdp.proc.pid, rdp.xterm.pid, rdp.server_x.proc.pid,
                rdp.client_x.proc.pid]
        displays = [rdp.display, rdp.client_display]
        self.assertNotEqual(displays[0], displays[1])
        host, port, d = rdp.host, rdp.port, rdp.dir
        self.assertTrue(pf.port_is_listening(host, port))
        rdp.close()
        self.assertFalse(pf.port_is_listening(host, port))
        for pid in pids:
            self.assertTrue(pf.process_group_gone(pid), "pid %d survived" % pid)
        for n in displays:
            self.assertFalse(os.path.exists("/tmp/.X11-unix/X%d" % n))
            self.assertFalse(os.path.exists("/tmp/.X%d-lock" % n))
        self.assertFalse(os.path.exists(d))
        self.assertIsNone(rdp.dir)


if __name__ == "__main__":
    unittest.main()
