"""Signals and start-up failures: SIGHUP reload, SIGTERM/SIGINT shutdown, a
busy port, a broken config."""

import http.client
import json
import os
import re
import signal
import time
import unittest

import postern_fixtures as pf

GRACE = 5
MARGIN = 5.0   # slack for a loaded machine and the sanitizer build


def http_request_lines(gw, since):
    return gw.log.find_events("http.request", since=since)


class ReloadTest(unittest.TestCase):
    def setUp(self):
        self.gw = pf.Gateway.started(self, {"log_level": "info"})

    def tearDown(self):
        self.assertTrue(self.gw.alive(), "posternd died:\n" + self.gw.stderr_text())

    def reload_and_wait(self, result):
        mark = self.gw.log.mark()
        self.gw.reload()
        return self.gw.log.wait_for_event("config.reload", since=mark,
                                          alive=self.gw.alive, result=result)

    def test_sighup_applies_a_new_log_level(self):
        mark = self.gw.log.mark()
        for _ in range(3):
            self.assertEqual(self.gw.https_get("/healthz").status, 200)
        self.assertEqual(http_request_lines(self.gw, mark), [],
                         "http.request logged at level info")

        cfg = dict(self.gw.config, log_level="debug")
        self.gw.write_config(cfg)
        self.reload_and_wait("ok")
        mark = self.gw.log.mark()
        self.assertEqual(self.gw.https_get("/healthz").status, 200)
        line = self.gw.log.wait_for_event("http.request", since=mark,
                                          alive=self.gw.alive, path="/healthz")
        self.assertIn("/healthz", line)

        # And back: info silences it again.
        self.gw.write_config(dict(cfg, log_level="info"))
        self.reload_and_wait("ok")
        mark = self.gw.log.mark()
        self.assertEqual(self.gw.https_get("/healthz").status, 200)
        self.assertEqual(http_request_lines(self.gw, mark), [])

    def test_sighup_with_a_broken_config_keeps_the_old_one(self):
        good = dict(self.gw.config)
        broken = [
            # Would switch on debug if anything of it were applied.
            ("unknown key", json.dumps(dict(good, log_level="debug",
                                            limits={"max_sesions": 1}))),
            ("bad JSON", '{"listen": "%s", "log_level": "debug",\n'
             % good["listen"]),
            ("bad value", json.dumps(dict(good, log_level="loud"))),
        ]
        for what, text in broken:
            with self.subTest(what=what):
                self.gw.write_config(text=text)
                line = self.reload_and_wait("failed")
                self.assertIn(self.gw.config_path, line)
                mark = self.gw.log.mark()
                r = self.gw.https_get("/healthz")
                self.assertEqual(r.status, 200)
                self.assertEqual(http_request_lines(self.gw, mark), [],
                                 "the broken config's log level was applied")
        # A good config afterwards is applied.
        self.gw.write_config(dict(good, log_level="debug"))
        self.reload_and_wait("ok")
        mark = self.gw.log.mark()
        self.assertEqual(self.gw.https_get("/healthz").status, 200)
        self.gw.log.wait_for_event("http.request", since=mark,
                                   alive=self.gw.alive, path="/healthz")


class ShutdownTest(unittest.TestCase):
    def check_signal_stops(self, sig):
        gw = pf.Gateway.started(self, {"limits": {"shutdown_grace_seconds": GRACE}})
        # An idle keep-alive client must not hold the daemon past the grace.
        conn = http.client.HTTPSConnection(gw.host, gw.port, timeout=GRACE + MARGIN,
                                           context=pf.client_tls_context())
        self.addCleanup(conn.close)
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        resp.read()
        # And one that never finished its handshake.
        stalled = gw.tcp_socket()
        self.addCleanup(stalled.close)

        t0 = time.monotonic()
        rc = gw.stop(sig, timeout=GRACE + MARGIN)
        elapsed = time.monotonic() - t0
        self.assertEqual(rc, 0, "exit %s after %s\n%s"
                         % (rc, signal.Signals(sig).name, gw.stderr_text()))
        self.assertLess(elapsed, GRACE + MARGIN)
        self.assertFalse(pf.port_is_listening(gw.host, gw.port))

    def test_sigterm_exits_0_within_the_grace_period(self):
        self.check_signal_stops(signal.SIGTERM)

    def test_sigint_exits_0_within_the_grace_period(self):
        self.check_signal_stops(signal.SIGINT)


class StartFailureTest(unittest.TestCase):
    def test_second_instance_on_a_busy_port_exits_1(self):
        first = pf.Gateway.started(self)
        second = pf.Gateway({"listen": first.config["listen"]})
        self.addCleanup(second.close)
        second.start(wait=False)
        rc = second.wait_exit(15)
        err = second.stderr_text()
        self.assertEqual(rc, 1, err)
        self.assertIn("event=listen.failed", err)
        self.assertRegex(err.lower(), r"address already in use")
        line = [ln for ln in err.splitlines() if "event=listen.failed" in ln][0]
        self.assertIn("address already in use", line.lower())
        # The first one never noticed.
        self.assertTrue(first.alive())
        self.assertEqual(first.https_get("/healthz").status, 200)

    def test_busy_redirect_port_exits_1(self):
        first = pf.Gateway.started(self)
        busy = pf.Gateway({"http_redirect": first.config["listen"]})
        self.addCleanup(busy.close)
        busy.start(wait=False)
        rc = busy.wait_exit(15)
        self.assertEqual(rc, 1, busy.stderr_text())
        self.assertIn("event=listen.failed", busy.stderr_text())
        self.assertFalse(pf.port_is_listening(busy.host, busy.port),
                         "the HTTPS listener was left up")
        self.assertEqual(first.https_get("/healthz").status, 200)

    def test_broken_config_exits_2_and_listens_nowhere(self):
        port = pf.free_port()
        tmp = pf.make_temp_dir(self)
        text = ('{\n  "listen": "127.0.0.1:%d",\n  "state_dir": "%s",\n'
                '  "log_level": "info",,\n}\n' % (port, tmp))
        gw = pf.Gateway(config_text=text)
        self.addCleanup(gw.close)
        gw.start(wait=False)
        rc = gw.wait_exit(15)
        err = gw.stderr_text()
        self.assertEqual(rc, 2, err)
        self.assertRegex(err, re.escape(gw.config_path) + r":4:\d+: invalid JSON")
        self.assertFalse(pf.port_is_listening("127.0.0.1", port))
        self.assertEqual(os.listdir(tmp), [])


if __name__ == "__main__":
    unittest.main()
