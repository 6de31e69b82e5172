#!/usr/bin/env python3
"""Error paths and limits over HTTP: 404/405/413/415/400 as problem+json, exact routing, JSON limits
(depth, UTF-8, trailing data), malformed HTTP, slowloris, keep-alive, h2c, health, OpenAPI, metrics."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pake_harness import PROBLEM_FIELDS, SLOW, STORE_BACKEND, ServerTestCase, main, parse_raw_response, run_pake  # noqa: E402

MAX_BODY = 4096
MAX_DEPTH = 8
READ_TIMEOUT_MS = 1000
JSON = {"Content-Type": "application/json"}


def nested(depth):
    """A note whose JSON document nests `depth` levels (the top object counts as 1)."""
    inner = "1"
    for _ in range(depth - 1):
        inner = '{"k":%s}' % inner
    return ('{"title":"deep","metadata":%s}' % inner).encode()


class Errors(ServerTestCase):
    SERVER_ARGS = ("--max-body-bytes", str(MAX_BODY), "--json-max-depth", str(MAX_DEPTH),
                   "--read-timeout-ms", str(READ_TIMEOUT_MS))

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.note = cls.srv.create_note(title="target")

    # ---- routing ----------------------------------------------------------------------------
    def test_unknown_routes_404(self):
        nid = self.note["id"]
        for path in ("/nope", "/v1", "/v1/", "/v1/notes/%s/extra" % nid, "/v1/notes/%s/" % nid,
                     "/v1/notes/%s/links/x" % nid, "/v1/notes//links", "/v1/searchx", "/health",
                     "/v1/notes/%F0%9F%98%80", "/openapi.json/x", "/v1/admin/breakers/a/b/reset"):
            with self.subTest(path=path):
                r = self.srv.get(path)
                self.assertIn(r.status, (404,), r)
                p = self.assertProblem(r, 404)
                self.assertIn(p["code"], ("route_not_found", "not_found"))
        p = self.assertProblem(self.srv.get("/v1/notes/%s/extra" % nid), 404, "route_not_found")
        self.assertEqual(p["instance"], "/v1/notes/%s/extra" % nid)

    def test_wrong_method_405(self):
        nid = self.note["id"]
        cases = [("PUT", "/v1/notes/" + nid, {"GET", "PATCH", "DELETE"}), ("DELETE", "/v1/notes", {"GET", "POST"}),
                 ("POST", "/v1/search", {"GET"}), ("GET", "/search_notes", {"POST"}),
                 ("PATCH", "/health/live", {"GET"}), ("POST", "/v1/notes/%s/history" % nid, {"GET"}),
                 ("BREW", "/v1/notes", {"GET", "POST"})]
        for method, path, allowed in cases:
            with self.subTest(method=method, path=path):
                r = self.srv.request(method, path, body=b"{}", headers=JSON)
                self.assertProblem(r, 405, "method_not_allowed")
                allow = {m.strip() for m in r.header("allow").split(",")}
                self.assertTrue(allowed <= allow, (allowed, allow))
                self.assertNotIn(method, allow)

    def test_head_is_get_without_body(self):
        r = self.srv.request("HEAD", "/v1/notes/" + self.note["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"")
        self.assertCorrelation(r)
        # the connection is still usable afterwards
        self.assertEnvelope(self.srv.get("/v1/notes/" + self.note["id"]))

    # ---- bodies -----------------------------------------------------------------------------
    def test_413_content_length(self):
        before = self.srv.get("/v1/notes?limit=100").data
        # one byte over: h2o reads the body and our limit stage answers
        body = b'{"title":"x","content":"' + b"a" * (MAX_BODY - 25) + b'"}'
        self.assertEqual(len(body), MAX_BODY + 1)
        r = self.srv.request("POST", "/v1/notes", body=body, headers=dict(JSON, **{"X-Request-ID": "big-1"}),
                             new_conn=True)
        p = self.assertProblem(r, 413, "payload_too_large")
        self.assertEqual(p["request_id"], "big-1")
        # further over: h2o refuses on the declared length alone (our filter rewrites its answer). Only the
        # head is sent: h2o answers and closes without reading a body, and unread bytes would make the
        # kernel reset the connection before the client read the answer.
        for size in (MAX_BODY + 2, 10 * MAX_BODY, 1 << 30):
            with self.subTest(size=size):
                head = ("POST /v1/notes HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                        "X-Request-ID: big-%d\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
                        "Content-Length: %d\r\n\r\n" % (size, size)).encode()
                status, hdrs, rbody = parse_raw_response(self.srv.raw(head))
                self.assertEqual(status, 413, rbody)
                self.assertEqual(hdrs.get("content-type"), "application/problem+json")
                self.assertEqual(hdrs.get("server"), "pake")
                self.assertEqual(hdrs.get("x-request-id"), "big-%d" % size)
                self.assertIn("-4bf92f3577b34da6a3ce929d0e0e4736-", hdrs.get("traceparent", ""))
                p = json.loads(rbody)
                for k in PROBLEM_FIELDS:
                    self.assertIn(k, p)
                self.assertEqual((p["status"], p["code"], p["request_id"], p["trace_id"], p["instance"]),
                                 (413, "payload_too_large", "big-%d" % size, "4bf92f3577b34da6a3ce929d0e0e4736",
                                  "/v1/notes"))
        self.assertEqual(len(self.srv.get("/v1/notes?limit=100").data), len(before))
        # exactly at the limit is accepted
        body = b'{"title":"x","content":"' + b"a" * (MAX_BODY - 26) + b'"}'
        self.assertEqual(len(body), MAX_BODY)
        self.assertEnvelope(self.srv.request("POST", "/v1/notes", body=body, headers=JSON), 201)

    def chunked(self, body, chunk=1000):
        out = b""
        for i in range(0, len(body), chunk):
            c = body[i:i + chunk]
            out += b"%x\r\n%s\r\n" % (len(c), c)
        return out + b"0\r\n\r\n"

    def test_413_chunked(self):
        body = b'{"title":"x","content":"' + b"a" * (3 * MAX_BODY) + b'"}'
        req = (b"POST /v1/notes HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"X-Request-ID: chunky\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n") + self.chunked(body)
        status, hdrs, rbody = parse_raw_response(self.srv.raw(req))
        self.assertEqual(status, 413, rbody)
        self.assertEqual(hdrs.get("content-type"), "application/problem+json")
        p = json.loads(rbody)
        self.assertEqual(p["status"], 413)
        self.assertEqual(p["request_id"], "chunky")
        self.assertEqual(hdrs.get("x-request-id"), "chunky")
        self.assertTrue(p["trace_id"])
        # a small chunked body is fine
        small = self.chunked(b'{"title":"chunked ok"}', 5)
        req = (b"POST /v1/notes HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n") + small
        status, hdrs, rbody = parse_raw_response(self.srv.raw(req))
        self.assertEqual(status, 201, rbody)
        self.assertEqual(json.loads(rbody)["data"]["title"], "chunked ok")

    def test_415(self):
        for ct in (None, "text/plain", "application/jsonx", "application/x-www-form-urlencoded", "json"):
            with self.subTest(ct=ct):
                h = {"Content-Type": ct} if ct else {}
                r = self.srv.request("POST", "/v1/notes", body=b'{"title":"x"}', headers=h)
                self.assertProblem(r, 415, "unsupported_media_type")
        for ct in ("application/json; charset=utf-8", "Application/JSON", "application/json;charset=UTF-8"):
            with self.subTest(ct=ct):
                r = self.srv.request("POST", "/v1/notes", body=b'{"title":"ct ok"}', headers={"Content-Type": ct})
                self.assertEnvelope(r, 201)

    def test_400_bad_json(self):
        cases = [b"{", b"", b"   ", b'{"title": "x",}', b"{'title': 'x'}", b'{"title":"x"} x', b'{"title":"x"}{}',
                 b'{"title":"x"}\x00', b'{"title":"\xff\xfe"}', b'{"title":"\xc3"}', b'{"title":"\xed\xa0\x80"}',
                 b'{"title":"\xf8\x88\x80\x80\x80"}', b'{"title":"x", "content": "\xc0\xaf"}', b"nul\x00l",
                 b'{"title":NaN}', b'{"title":"x","confidence_score":Infinity}', b'{"title":"x"\x00}',
                 nested(MAX_DEPTH + 1), nested(50), b"[" * 2000 + b"]" * 2000, b'{"title":"a","title":"b"}',
                 b'{"title":"x","metadata":{"k":1,"j":2,"k":3}}', b'{"title":"a\\u0000b"}',
                 b'{"title":"x","tags":["a\\u0000"]}', b'{"title":"x","metadata":{"\\u0000":1}}']
        for body in cases:
            with self.subTest(body=body[:40]):
                r = self.srv.request("POST", "/v1/notes", body=body, headers=JSON)
                self.assertProblem(r, 400)
        # exactly at the depth limit is accepted
        self.assertEnvelope(self.srv.request("POST", "/v1/notes", body=nested(MAX_DEPTH), headers=JSON), 201)

    def test_json_edge_values(self):
        # escapes that decode to invalid text (lone surrogates) must not be stored silently altered
        for raw in (b'{"title":"a\\ud800b"}', b'{"title":"a\\udc00"}'):
            with self.subTest(raw=raw):
                r = self.srv.request("POST", "/v1/notes", body=raw, headers=JSON)
                self.assertIn(r.status, (400, 422), r)
                self.assertProblem(r, r.status)
        # an escaped backslash followed by "u0000" is ordinary text
        r = self.srv.request("POST", "/v1/notes", body=b'{"title":"a\\\\u0000b"}', headers=JSON)
        self.assertEqual(self.assertEnvelope(r, 201)["title"], "a\\u0000b")
        # valid escaped astral character
        r = self.srv.request("POST", "/v1/notes", body=b'{"title":"\\ud83d\\ude00"}', headers=JSON)
        self.assertEqual(self.assertEnvelope(r, 201)["title"], "\U0001F600")

    # ---- malformed HTTP ---------------------------------------------------------------------
    def test_malformed_http(self):
        # Protocol-level garbage is answered by h2o itself (it writes a fixed "400 Bad Request" text/plain
        # straight to the socket, before any filter runs) and the connection is closed.
        for raw in (b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET /v1/notes HTTP/1.1\r\nHost t\r\n\r\n",
                    b"GET /v1/notes HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                    b"POST /v1/notes HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                    b"GET /v1/notes HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 600000 + b"\r\n\r\n",
                    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64):
            with self.subTest(raw=raw[:50]):
                try:
                    out = self.srv.raw(raw, timeout=5)
                except (ConnectionResetError, BrokenPipeError):
                    continue
                if out:
                    status, hdrs, body = parse_raw_response(out)
                    self.assertGreaterEqual(status, 400, out[:300])
                    self.assertLess(status, 500, out[:300])
                    if hdrs.get("content-type", "").startswith("application/"):
                        self.assertEqual(hdrs["content-type"], "application/problem+json", out[:300])
                        self.assertEqual(json.loads(body)["status"], status)
        # still serving
        self.assertEnvelope(self.srv.get("/v1/notes/" + self.note["id"]))

    def test_header_too_large_431(self):
        r = self.srv.get("/v1/notes", headers={"X-Big": "a" * 70000, "X-Request-ID": "big-head"})
        p = self.assertProblem(r, 431)
        self.assertEqual(p["request_id"], "big-head")
        r = self.srv.get("/v1/notes", headers={"X-Ok": "a" * 30000})
        self.assertEnvelope(r, pagination=True)

    def test_server_header_everywhere(self):
        for r in (self.srv.get("/health/live"), self.srv.get("/nope"),
                  self.srv.request("POST", "/v1/notes", body=b"x" * (MAX_BODY + 1), headers=JSON, new_conn=True)):
            self.assertEqual(r.header("server"), "pake", r)
            self.assertEqual(len(r.all_headers("server")), 1, r.header_list)

    # ---- connections ------------------------------------------------------------------------
    def test_slowloris_disconnected(self):
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=10 * SLOW)
        req = b"GET /v1/notes HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
        start = time.monotonic()
        closed_at = None
        try:
            for i in range(len(req)):
                s.sendall(req[i:i + 1])
                time.sleep(0.1)
                if time.monotonic() - start > 6 * SLOW:
                    break
        except (BrokenPipeError, ConnectionResetError):
            closed_at = time.monotonic() - start
        if closed_at is None:
            try:
                s.settimeout(2 * SLOW)
                data = s.recv(65536)
                closed_at = time.monotonic() - start
                # h2o may answer 408 before closing; it must not have served the request
                self.assertFalse(data.startswith(b"HTTP/1.1 200"), data[:200])
            except socket.timeout:
                self.fail("slow client still connected after %.1f s" % (time.monotonic() - start))
            except ConnectionResetError:
                closed_at = time.monotonic() - start
        s.close()
        self.assertLess(closed_at, READ_TIMEOUT_MS / 1000 * 3 * SLOW + 2, "disconnected too late")

    def test_keep_alive(self):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=10 * SLOW)
        c.connect()
        sock = c.sock
        for i in range(6):
            if i % 2:
                c.request("POST", "/v1/notes", body=json.dumps({"title": "ka %d" % i}), headers=JSON)
            else:
                c.request("GET", "/v1/notes/" + self.note["id"])
            res = c.getresponse()
            res.read()
            self.assertIn(res.status, (200, 201))
            self.assertIs(c.sock, sock, "the connection was not kept alive")
            self.assertNotEqual((res.getheader("connection") or "").lower(), "close")
        # an error answer keeps the connection too
        c.request("GET", "/nope")
        res = c.getresponse()
        res.read()
        self.assertEqual(res.status, 404)
        c.request("GET", "/health/live")
        self.assertEqual(c.getresponse().status, 200)
        self.assertIs(c.sock, sock)
        c.close()
        # pipelined requests are answered in order
        req = b"GET /health/live HTTP/1.1\r\nHost: p\r\nX-Request-ID: p1\r\n\r\n" \
              b"GET /nope HTTP/1.1\r\nHost: p\r\nX-Request-ID: p2\r\nConnection: close\r\n\r\n"
        out = self.srv.raw(req)
        self.assertEqual(out.count(b"HTTP/1.1 "), 2, out)
        self.assertLess(out.index(b"p1"), out.index(b"p2"))

    def test_h2c(self):
        curl = shutil.which("curl")
        if not curl:
            self.skipTest("curl is not installed")
        features = subprocess.run([curl, "--version"], capture_output=True, text=True).stdout
        if "HTTP2" not in features:
            self.skipTest("curl lacks HTTP/2 support")
        for flag in ("--http2-prior-knowledge", "--http2"):
            with self.subTest(flag=flag):
                p = subprocess.run([curl, "-sS", flag, "-o", "-", "-D", "-", "-w", "\n%{http_version}",
                                    "-H", "X-Request-ID: h2c-test", "%s/v1/notes/%s" % (self.srv.base, self.note["id"])],
                                   capture_output=True, text=True, timeout=20 * SLOW)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(p.stdout.strip().splitlines()[-1], "2", p.stdout[-500:])
                self.assertIn("x-request-id: h2c-test", p.stdout.lower())
                self.assertIn('"id":"%s"' % self.note["id"], p.stdout)
        p = subprocess.run([curl, "-sS", "--http2-prior-knowledge", "-X", "POST", "-H", "Content-Type: application/json",
                            "--data-binary", '{"title":"over h2"}', "-w", "\n%{http_code}", self.srv.base + "/v1/notes"],
                           capture_output=True, text=True, timeout=20 * SLOW)
        self.assertEqual(p.stdout.strip().splitlines()[-1], "201", p.stdout)

    # ---- ops endpoints ----------------------------------------------------------------------
    def test_health(self):
        r = self.srv.get("/health/live")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.content_type, "application/health+json")
        self.assertEqual(r.json["status"], "pass")
        self.assertCorrelation(r)
        r = self.srv.get("/health/ready")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.content_type, "application/health+json")
        self.assertCorrelation(r)
        h = r.json
        self.assertEqual(h["status"], "pass")
        self.assertTrue(h["checks"])
        for name, checks in h["checks"].items():
            for c in checks:
                self.assertIn(c["status"], ("pass", "warn", "fail"), c)
        store = h["checks"]["store:responseTime"][0]
        self.assertEqual(store["status"], "pass")
        self.assertEqual(store["componentId"], STORE_BACKEND)

    def test_openapi(self):
        r = self.srv.get("/openapi.json")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.content_type, "application/json")
        doc = r.json
        self.assertTrue(doc["openapi"].startswith("3.1"), doc["openapi"])
        routes = json.loads(run_pake(["routes"]).stdout)
        for route in routes:
            self.assertIn(route["path"], doc["paths"], route)
            self.assertIn(route["method"].lower(), doc["paths"][route["path"]], route)

    def test_metrics(self):
        r = self.srv.get("/metrics")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.content_type, "text/plain")
        self.assertCorrelation(r)


if __name__ == "__main__":
    main()
