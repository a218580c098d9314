"""TLS on the gateway's listener: versions, ALPN, the generated and the
configured certificate, and connections that misbehave before or during the
handshake."""

import os
import re
import socket
import ssl
import subprocess
import time
import unittest

import postern_fixtures as pf

FINGERPRINT_RE = r"^(?:[0-9A-F]{2}:){31}[0-9A-F]{2}$"


def logged_fingerprint(gw, since=0):
    line = gw.log.wait_for_event("tls.certificate", since=since, alive=gw.alive)
    fp = pf.parse_log_fields(line).get("sha256")
    if fp is None or not re.match(FINGERPRINT_RE, fp):
        raise AssertionError("tls.certificate line without a proper sha256=: %r"
                             % line)
    return fp


def openssl_fingerprint(cert_path):
    out = pf.run(["openssl", "x509", "-in", cert_path, "-noout", "-fingerprint",
                  "-sha256"]).stdout
    return out.strip().split("=", 1)[1]


class GeneratedCertificateTest(unittest.TestCase):
    def test_generated_on_first_start_and_reused_after(self):
        pf.require_tool("openssl")
        tmp = pf.make_temp_dir(self)
        state = os.path.join(tmp, "state")
        os.mkdir(state, 0o700)
        cert = os.path.join(state, "tls", "cert.pem")
        key = os.path.join(state, "tls", "key.pem")
        self.assertFalse(os.path.exists(cert))

        gw = pf.Gateway.started(self, {"state_dir": state})
        self.assertTrue(os.path.isfile(cert), "no %s" % cert)
        self.assertTrue(os.path.isfile(key), "no %s" % key)
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600,
                         "key.pem mode is %o" % (os.stat(key).st_mode & 0o777))

        text = pf.run(["openssl", "x509", "-in", cert, "-noout", "-text"]).stdout
        self.assertIn("id-ecPublicKey", text)
        self.assertRegex(text, r"prime256v1|P-256")
        # The key file holds the private half of that certificate.
        pub_cert = pf.run(["openssl", "x509", "-in", cert, "-noout",
                           "-pubkey"]).stdout
        pub_key = pf.run(["openssl", "pkey", "-in", key, "-pubout"]).stdout
        self.assertEqual(pub_cert, pub_key)

        file_fp = pf.cert_file_fingerprint(cert)
        self.assertEqual(file_fp, openssl_fingerprint(cert))
        seen = pf.s_client(gw.host, gw.port)
        self.assertTrue(seen.handshake_ok, seen)
        self.assertEqual(seen.fingerprint, file_fp)
        self.assertEqual(logged_fingerprint(gw), file_fp)

        with open(cert, "rb") as f:
            cert_bytes = f.read()
        with open(key, "rb") as f:
            key_bytes = f.read()
        self.assertEqual(gw.stop(), 0, gw.stderr_text())

        gw2 = pf.Gateway.started(self, {"state_dir": state})
        seen2 = pf.s_client(gw2.host, gw2.port)
        self.assertTrue(seen2.handshake_ok, seen2)
        self.assertEqual(seen2.fingerprint, file_fp, "a new certificate was made")
        self.assertEqual(logged_fingerprint(gw2), file_fp)
        with open(cert, "rb") as f:
            self.assertEqual(f.read(), cert_bytes)
        with open(key, "rb") as f:
            self.assertEqual(f.read(), key_bytes)


class ConfiguredCertificateTest(unittest.TestCase):
    def test_configured_certificate_is_presented(self):
        pf.require_tool("openssl")
        tmp = pf.make_temp_dir(self)
        cert, key = pf.make_self_signed_cert(tmp, cn="configured.postern.test",
                                             key_type="rsa")
        gw = pf.Gateway.started(self, {"tls": {"cert": cert, "key": key}})
        want = pf.cert_file_fingerprint(cert)
        seen = pf.s_client(gw.host, gw.port)
        self.assertTrue(seen.handshake_ok, seen)
        self.assertEqual(seen.fingerprint, want)
        self.assertEqual(pf.der_fingerprint(pf.peer_certificate(gw.host, gw.port)),
                         want)
        self.assertEqual(logged_fingerprint(gw), want)
        r = gw.https_get("/healthz")
        self.assertEqual(r.status, 200)

    def test_unreadable_certificate_fails_start(self):
        tmp = pf.make_temp_dir(self)
        cert, key = pf.make_self_signed_cert(tmp)
        missing = os.path.join(tmp, "nope.pem")
        gw = pf.Gateway({"tls": {"cert": missing, "key": key}})
        self.addCleanup(gw.close)
        gw.start(wait=False)
        rc = gw.wait_exit(15)
        self.assertIn(rc, (1, 2), gw.stderr_text())
        self.assertIn(missing, gw.stderr_text())
        self.assertFalse(pf.port_is_listening(gw.host, gw.port))

    def test_key_not_matching_certificate_fails_start(self):
        tmp = pf.make_temp_dir(self)
        os.mkdir(os.path.join(tmp, "a"))
        os.mkdir(os.path.join(tmp, "b"))
        cert, _ = pf.make_self_signed_cert(os.path.join(tmp, "a"))
        _, other_key = pf.make_self_signed_cert(os.path.join(tmp, "b"))
        gw = pf.Gateway({"tls": {"cert": cert, "key": other_key}})
        self.addCleanup(gw.close)
        gw.start(wait=False)
        rc = gw.wait_exit(15)
        self.assertIn(rc, (1, 2), gw.stderr_text())
        self.assertFalse(pf.port_is_listening(gw.host, gw.port))


class ProtocolTest(unittest.TestCase):
    """One gateway for all the version and ALPN probes."""

    @classmethod
    def setUpClass(cls):
        pf.require_tool("openssl")
        cls.gw = pf.Gateway()
        cls.addClassCleanup(cls.gw.close)
        cls.gw.start()

    def test_tls_1_1_and_1_0_are_refused(self):
        for flag in ("-tls1_1", "-tls1"):
            with self.subTest(flag=flag):
                r = pf.s_client(self.gw.host, self.gw.port, flag,
                                "-cipher", "DEFAULT@SECLEVEL=0")
                self.assertFalse(r.handshake_ok, r)
                self.assertNotEqual(r.returncode, 0, r)

    def test_control_the_client_can_speak_tls_1_1(self):
        # Proves the refusal above comes from the gateway, not from this
        # machine's OpenSSL: the same client reaches a TLS 1.1 server.
        tmp = pf.make_temp_dir(self)
        cert, key = pf.make_self_signed_cert(tmp)
        port = pf.free_port()
        srv = subprocess.Popen(
            ["openssl", "s_server", "-accept", "127.0.0.1:%d" % port,
             "-cert", cert, "-key", key, "-cipher", "DEFAULT@SECLEVEL=0",
             "-tls1_1", "-quiet"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        self.addCleanup(pf.stop_process, srv)
        # Retry until s_server is up (a refused connect is not a TLS answer).
        deadline = time.monotonic() + 10
        while True:
            r = pf.s_client("127.0.0.1", port, "-tls1_1",
                            "-cipher", "DEFAULT@SECLEVEL=0")
            if r.handshake_ok or time.monotonic() > deadline:
                break
            self.assertIsNone(srv.poll(), "s_server exited")
            time.sleep(0.1)
        self.assertTrue(r.handshake_ok, r)
        self.assertEqual(r.protocol, "TLSv1.1", r)

    def test_tls_1_2_is_accepted(self):
        r = pf.s_client(self.gw.host, self.gw.port, "-tls1_2")
        self.assertTrue(r.handshake_ok, r)
        self.assertEqual(r.protocol, "TLSv1.2", r)

    def test_tls_1_3_is_accepted(self):
        r = pf.s_client(self.gw.host, self.gw.port, "-tls1_3")
        self.assertTrue(r.handshake_ok, r)
        self.assertEqual(r.protocol, "TLSv1.3", r)

    def test_tls_1_3_is_preferred(self):
        r = pf.s_client(self.gw.host, self.gw.port)
        self.assertTrue(r.handshake_ok, r)
        self.assertEqual(r.protocol, "TLSv1.3", r)

    def test_alpn_offers_http_1_1_only(self):
        with self.gw.tls_socket(alpn=("h2", "http/1.1")) as s:
            self.assertEqual(s.selected_alpn_protocol(), "http/1.1")
        r = pf.s_client(self.gw.host, self.gw.port, "-alpn", "h2,http/1.1")
        self.assertEqual(r.alpn, "http/1.1", r)
        # A client that only speaks h2 must not be told it got h2.
        try:
            with self.gw.tls_socket(alpn=("h2",)) as s:
                self.assertNotEqual(s.selected_alpn_protocol(), "h2")
        except (ssl.SSLError, ConnectionError):
            pass  # refusing the handshake (no_application_protocol) is fine


class HostileClientTest(unittest.TestCase):
    """Misbehaving connections are closed; /healthz keeps answering."""

    HANDSHAKE_TIMEOUT = 2
    MARGIN = 4.0   # scheduling slack, also under AddressSanitizer

    @classmethod
    def setUpClass(cls):
        cls.gw = pf.Gateway({"limits": {
            "handshake_timeout_seconds": cls.HANDSHAKE_TIMEOUT}})
        cls.addClassCleanup(cls.gw.close)
        cls.gw.start()

    def tearDown(self):
        self.assertTrue(self.gw.alive(), "posternd died:\n" + self.gw.stderr_text())

    def test_garbage_bytes_are_closed(self):
        junk = [os.urandom(4096),
                b"\x16\x03\x01\xff\xff" + os.urandom(2000),   # huge record length
                b"\x16\x03\x01\x00\x10" + b"\x00" * 16,        # empty hello
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]          # plain HTTP
        with pf.HealthPoller(self.gw) as hp:
            for data in junk:
                with self.subTest(data=data[:8]):
                    with self.gw.tcp_socket() as s:
                        with_suppressed_reset(s.sendall, data)
                        closed, got = pf.wait_closed(
                            s, self.HANDSHAKE_TIMEOUT + self.MARGIN)
                    self.assertTrue(closed, "still open after junk %r" % data[:8])
                    self.assertNotIn(b"HTTP/1.1 200", got)
            hp.wait_for_successes(2)
        hp.assert_healthy(self)

    def test_stalled_handshake_is_closed_after_the_timeout(self):
        # One client sends nothing, one stops halfway through a ClientHello.
        with pf.HealthPoller(self.gw) as hp:
            silent = self.gw.tcp_socket()
            self.addCleanup(silent.close)
            half = self.gw.tcp_socket()
            self.addCleanup(half.close)
            t0 = time.monotonic()
            half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
                         + os.urandom(20))
            # While both hang, the gateway answers others.
            hp.wait_for_successes(3)
            limit = self.HANDSHAKE_TIMEOUT + self.MARGIN
            for name, s in (("silent", silent), ("half", half)):
                remaining = max(0.1, t0 + limit - time.monotonic())
                closed, _ = pf.wait_closed(s, remaining)
                self.assertTrue(closed, "%s client still open %.1fs after connect"
                                % (name, time.monotonic() - t0))
        hp.assert_healthy(self, minimum=3)

    def test_many_stalled_handshakes_do_not_block_others(self):
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        with pf.HealthPoller(self.gw) as hp:
            for _ in range(30):
                socks.append(self.gw.tcp_socket())
            t0 = time.monotonic()
            hp.wait_for_successes(3)
            for s in socks:
                remaining = max(0.1, t0 + self.HANDSHAKE_TIMEOUT + self.MARGIN
                                - time.monotonic())
                closed, _ = pf.wait_closed(s, remaining)
                self.assertTrue(closed, "a stalled client is still open")
        hp.assert_healthy(self, minimum=3)

    def test_one_mebibyte_request_line_is_closed(self):
        line = b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        with pf.HealthPoller(self.gw) as hp:
            with self.gw.tls_socket(timeout=10) as s:
                sent_all = with_suppressed_reset(s.sendall, line)
                closed, got = pf.wait_closed(s, 10)
            self.assertTrue(closed, "connection still open after a 1 MiB "
                                    "request line (sent all: %s)" % sent_all)
            m = re.match(rb"HTTP/1\.[01] (\d{3})", got)
            if m:
                self.assertGreaterEqual(int(m.group(1)), 400, got[:200])
            hp.wait_for_successes(2)
        hp.assert_healthy(self)
        self.assertEqual(self.gw.https_get("/healthz").status, 200)


def with_suppressed_reset(fn, *args):
    """Runs a send; the peer closing on us is an allowed outcome. Returns
    True if everything was sent."""
    try:
        fn(*args)
        return True
    except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError,
            ssl.SSLZeroReturnError):
        return False
    except ssl.SSLError:
        return False
    except socket.timeout:
        raise AssertionError("the gateway neither read nor closed the "
                             "connection for the socket timeout")


if __name__ == "__main__":
    unittest.main()
