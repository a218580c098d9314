"""HTTP on the gateway: static files from the embedded web root, security
headers on every response, path traversal, /healthz, /metrics, errors, and
the plain-HTTP redirect listener."""

import re
import unittest

import postern_fixtures as pf


def media_type(resp):
    return (resp.header("Content-Type") or "").split(";")[0].strip().lower()


class HttpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.gw = pf.Gateway()
        cls.addClassCleanup(cls.gw.close)
        cls.gw.start()

    def tearDown(self):
        self.assertTrue(self.gw.alive(), "posternd died:\n" + self.gw.stderr_text())

    # -- security headers -------------------------------------------------------

    def assert_security_headers(self, resp, what):
        msg = "%s: %r" % (what, resp)
        hsts = resp.header("Strict-Transport-Security")
        self.assertIsNotNone(hsts, msg)
        m = re.search(r"max-age=(\d+)", hsts)
        self.assertTrue(m and int(m.group(1)) > 0, msg)
        csp = resp.header("Content-Security-Policy")
        self.assertIsNotNone(csp, msg)
        self.assertIn("frame-ancestors 'none'", csp, msg)
        self.assertIn("default-src", csp, msg)
        self.assertEqual((resp.header("X-Content-Type-Options") or "").lower(),
                         "nosniff", msg)
        self.assertTrue(resp.header("Referrer-Policy"), msg)

    def test_security_headers_on_every_response(self):
        cases = [
            ("GET", "/", 200),
            ("GET", "/index.html", 200),
            ("GET", "/app.js", 200),
            ("GET", "/app.css", 200),
            ("GET", "/favicon.svg", 200),
            ("HEAD", "/", 200),
            ("GET", "/healthz", 200),
            ("GET", "/metrics", 200),
            ("GET", "/no-such-file.html", 404),
            ("GET", "/api/no-such-endpoint", 404),
            ("POST", "/index.html", 405),
        ]
        for method, path, status in cases:
            with self.subTest(method=method, path=path):
                r = self.gw.request(method, path, timeout=5)
                self.assertEqual(r.status, status, r)
                self.assert_security_headers(r, "%s %s" % (method, path))
        # Error answers to hostile paths, sent raw: whoever produces them
        # (our routes or libwebsockets' own checks) must add the headers.
        statuses = set()
        for target in ("/static/..\\..\\etc\\passwd",
                       "/%2e%2e/%2e%2e/etc/passwd", "/%uff0e%uff0e/etc/passwd",
                       "/%zz", "/a%"):
            with self.subTest(target=target):
                try:
                    r = self.gw.raw_get(target, timeout=5)
                except pf.ConnectionClosed:
                    continue
                statuses.add(r.status)
                self.assert_security_headers(r, "%s -> %d" % (target, r.status))
        self.assertIn(400, statuses, "no 400 seen to check the headers on")

    # -- static files -----------------------------------------------------------

    def test_root_serves_index_html(self):
        root = self.gw.https_get("/")
        self.assertEqual(root.status, 200, root)
        ctype = re.sub(r"\s+", "", (root.header("Content-Type") or "").lower())
        self.assertEqual(ctype, "text/html;charset=utf-8", root)
        self.assertRegex(root.text.lower(), r"<!doctype html|<html")
        index = self.gw.https_get("/index.html")
        self.assertEqual(index.status, 200, index)
        self.assertEqual(index.body, root.body)

    def test_media_types(self):
        for path, want in (("/app.js", "text/javascript"),
                           ("/app.css", "text/css"),
                           ("/favicon.svg", "image/svg+xml"),
                           ("/index.html", "text/html")):
            with self.subTest(path=path):
                r = self.gw.https_get(path)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(media_type(r), want, r)
                self.assertGreater(len(r.body), 0)
                length = r.header("Content-Length")
                if length is not None:
                    self.assertEqual(int(length), len(r.body))
        svg = self.gw.https_get("/favicon.svg")
        self.assertIn(b"<svg", svg.body)

    def test_head_has_headers_but_no_body(self):
        get = self.gw.https_get("/app.js")
        head = self.gw.request("HEAD", "/app.js")
        self.assertEqual(head.status, 200, head)
        self.assertEqual(head.body, b"")
        self.assertEqual(media_type(head), "text/javascript")
        if head.header("Content-Length") is not None:
            self.assertEqual(int(head.header("Content-Length")), len(get.body))

    def test_other_methods_on_static_files_are_405(self):
        for method, path in (("POST", "/index.html"), ("PUT", "/app.js"),
                             ("DELETE", "/"), ("PATCH", "/app.css"),
                             ("OPTIONS", "/favicon.svg")):
            with self.subTest(method=method, path=path):
                r = self.gw.request(method, path, body=b"x" if method in
                                    ("POST", "PUT", "PATCH") else None,
                                    timeout=5)
                self.assertEqual(r.status, 405, r)

    def test_unknown_paths_are_404(self):
        r = self.gw.https_get("/definitely-not-here.js")
        self.assertEqual(r.status, 404, r)
        r = self.gw.https_get("/index.htm")
        self.assertEqual(r.status, 404, r)

    def test_unknown_api_path_is_json_404(self):
        r = self.gw.https_get("/api/definitely-not-here")
        self.assertEqual(r.status, 404, r)
        self.assertEqual(media_type(r), "application/json", r)
        body = r.json()
        self.assertIsInstance(body, dict)
        self.assertIsInstance(body.get("error"), str, body)
        self.assertTrue(body["error"])

    # -- traversal -------------------------------------------------------------

    TRAVERSALS = [
        "/../etc/passwd",
        "/../../../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
        "/%252e%252e/etc/passwd",
        "/..%2fetc/passwd",
        "/..%2Fetc%2Fpasswd",
        "/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/static/..\\..\\etc\\passwd",
        "/..%5c..%5c..%5cetc%5cpasswd",
        "/index.html/../../../../etc/passwd",
        "/....//....//....//etc/passwd",
        "/.%2e/.%2e/etc/passwd",
        "/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
        "//etc/passwd",
        "/etc/passwd",
        "/./../etc/passwd",
        "/app.js/..%2f..%2f..%2fetc/passwd",
        "/proc/self/environ",
        "/../../../../proc/self/environ",
    ]

    def test_traversal_attempts_never_escape(self):
        for target in self.TRAVERSALS:
            with self.subTest(target=target):
                try:
                    r = self.gw.raw_get(target)
                except pf.ConnectionClosed as e:
                    self.fail("%s: closed without an answer (%s)" % (target, e))
                self.assertIn(r.status, (400, 404), "%s: %r" % (target, r))
                self.assertNotIn(b"root:", r.body)
                self.assertNotIn(b"PATH=", r.body)
        self.assertEqual(self.gw.https_get("/healthz").status, 200)

    # libwebsockets decodes %XX before the gateway sees the path. A NUL it
    # decodes either ends the request (the connection closes unanswered) or,
    # as the path's last byte, is dropped ("/%00" is "/"). Either way
    # nothing outside the web root may come back.
    NUL_PATHS = ["/index.html%00.js", "/index.html%00", "/%00", "/%00/etc/passwd",
                 "/ab%00cd"]

    def test_nul_in_path_never_escapes(self):
        index = self.gw.https_get("/").body
        for target in self.NUL_PATHS:
            with self.subTest(target=target):
                try:
                    r = self.gw.raw_get(target)
                except pf.ConnectionClosed:
                    continue
                if r.status == 200:
                    self.assertEqual(r.body, index, target)
                else:
                    self.assertIn(r.status, (400, 404), "%s: %r" % (target, r))
                self.assertNotIn(b"root:", r.body)
        self.assertEqual(self.gw.https_get("/healthz").status, 200)

    # Malformed escapes are refused by libwebsockets' parser with its own
    # 403 page before routing; that page must still carry our headers.
    MALFORMED = ["/%uff0e%uff0e/etc/passwd", "/%zz", "/a%", "/%2"]

    def test_malformed_escapes_are_refused_with_security_headers(self):
        for target in self.MALFORMED:
            with self.subTest(target=target):
                r = self.gw.raw_get(target)
                self.assertIn(r.status, (400, 403, 404), "%s: %r" % (target, r))
                self.assertNotIn(b"root:", r.body)
                for h in ("Strict-Transport-Security", "Content-Security-Policy",
                          "X-Content-Type-Options"):
                    self.assertTrue(r.header(h), "%s: no %s" % (target, h))

    def test_raw_control_bytes_in_path_are_rejected(self):
        for target in (b"/index.html\x00.js", b"/\x01", b"/a\x7fb"):
            with self.subTest(target=target):
                try:
                    r = self.gw.raw_get(target)
                except pf.ConnectionClosed:
                    continue  # dropping such a request is fine too
                self.assertIn(r.status, (400, 404), r)
                self.assertNotIn(b"root:", r.body)

    # -- health and metrics ------------------------------------------------------

    def test_healthz(self):
        r = self.gw.https_get("/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body.strip(), b"ok")

    def test_metrics(self):
        r = self.gw.https_get("/metrics")
        self.assertEqual(r.status, 200, r)
        ctype = re.sub(r"\s+", "", (r.header("Content-Type") or "").lower())
        self.assertTrue(ctype.startswith("text/plain;"), ctype)
        self.assertIn("version=0.0.4", ctype)
        samples = pf.parse_prometheus(r.text)
        names = {n for n, _, _ in samples}
        for name in ("postern_connections_total", "postern_http_requests_total",
                     "postern_sessions_active"):
            self.assertIn(name, names, r.text)
        ssh_active = [v for n, labels, v in samples
                      if n == "postern_sessions_active"
                      and re.search(r'\bprotocol="ssh"', labels)]
        self.assertEqual(ssh_active, [0.0], r.text)

    def test_metrics_counters_move(self):
        before = pf.parse_prometheus(self.gw.https_get("/metrics").text)
        for _ in range(5):   # each on a new connection
            self.assertEqual(self.gw.https_get("/healthz").status, 200)
        after = pf.parse_prometheus(self.gw.https_get("/metrics").text)
        for name in ("postern_connections_total", "postern_http_requests_total"):
            with self.subTest(metric=name):
                self.assertGreaterEqual(pf.metric_sum(after, name)
                                        - pf.metric_sum(before, name), 5)


class RedirectListenerTest(unittest.TestCase):
    def test_plain_http_redirects_to_https_keeping_the_path(self):
        rport = pf.free_port()
        gw = pf.Gateway.started(self, {"http_redirect": "127.0.0.1:%d" % rport})
        pf.wait_until(lambda: pf.port_is_listening("127.0.0.1", rport), 10,
                      message="the redirect listener")
        for path in ("/x", "/some/deeper/path", "/"):
            with self.subTest(path=path):
                r = pf.http_request("127.0.0.1", rport, "GET", path)
                self.assertEqual(r.status, 308, r)
                loc = r.header("Location") or ""
                self.assertTrue(loc.startswith("https://"), loc)
                self.assertTrue(loc.endswith(path), loc)
                # Not back to the plain port: that would loop.
                self.assertNotIn(":%d/" % rport, loc)
        # The redirect listener serves nothing itself.
        r = pf.http_request("127.0.0.1", rport, "GET", "/healthz")
        self.assertEqual(r.status, 308, r)
        self.assertEqual(gw.https_get("/healthz").status, 200)


if __name__ == "__main__":
    unittest.main()
