#!/usr/bin/env python3
"""Every route of `pake routes` answers over HTTP with X-Request-ID and traceparent; request ids and
trace context are accepted when valid and replaced when not; the body's ids match the headers."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pake_harness import (TRACEPARENT_RE, UUID_RE, ServerTestCase, main, run_pake)  # noqa: E402

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class Correlation(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.note = cls.srv.create_note(title="correlation", content="body text searchable")
        cls.other = cls.srv.create_note(title="other")

    def route_request(self, route):
        """A plausible request for a route of the table (path parameters filled in)."""
        path = route["path"].replace("{id}", self.walk_note["id"]).replace("{name}", "no-such-breaker")
        if route["path"].startswith("/v1/tasks/"):
            path = route["path"].replace("{id}", self.walk_task["id"])
        body = None
        if route["method"] == "POST" and route["path"] == "/v1/tasks":
            body = {"type": "noop"}
        if route["method"] in ("POST", "PATCH"):
            if route["path"] == "/v1/notes" or route["path"] == "/notes_from_schema":
                body = {"title": "from route walk"}
            elif route["path"].endswith("/links"):
                body = {"target_id": self.other["id"], "type": "walk"}
            elif route["path"] == "/search_notes":
                body = {"query": "searchable"}
            elif route["path"] == "/get_note_by_id":
                body = {"note_id": self.walk_note["id"]}
            elif route["method"] == "PATCH":
                body = {"human_notes": "walked"}
        if route["path"] == "/v1/search":
            path += "?q=searchable"
        return route["method"], path, body

    def test_every_route_answers_with_correlation(self):
        p = run_pake(["routes"])
        self.assertEqual(p.returncode, 0, p.stderr)
        routes = json.loads(p.stdout)
        self.walk_note = self.srv.create_note(title="walked", content="searchable walk")
        self.walk_task = self.srv.post("/v1/tasks", json_body={"type": "noop"}).json["data"]
        self.assertGreaterEqual(len(routes), 15)
        # DELETE last so the note still exists for the others
        routes.sort(key=lambda r: r["method"] == "DELETE")
        for route in routes:
            with self.subTest(route="%s %s" % (route["method"], route["path"])):
                method, path, body = self.route_request(route)
                rid = "walk-%s-%s" % (route["method"], route["operation_id"])
                hdrs = {"X-Request-ID": rid, "traceparent": "00-%s-%s-01" % (TRACE, PARENT)}
                r = self.srv.request(method, path, json_body=body, headers=hdrs)
                self.assertLess(r.status, 500, r)
                self.assertNotEqual(r.status, 405, r)
                if route["path"] not in ("/v1/admin/breakers/{name}/force-open", "/v1/admin/breakers/{name}/disable",
                                         "/v1/admin/breakers/{name}/reset"):
                    self.assertNotEqual(r.status, 404, r)
                got_rid, got_trace = self.assertCorrelation(r)
                self.assertEqual(got_rid, rid)
                self.assertEqual(got_trace, TRACE)
                span = TRACEPARENT_RE.match(r.header("traceparent")).group(2)
                self.assertNotEqual(span, PARENT, "the server must start its own span")
                if r.content_type == "application/json" and isinstance(r.json, dict) and "meta" in r.json:
                    self.assertEqual(r.json["meta"]["request_id"], rid)
                    self.assertEqual(r.json["meta"]["trace_id"], TRACE)
                if r.content_type == "application/problem+json":
                    self.assertEqual(r.json["request_id"], rid)
                    self.assertEqual(r.json["trace_id"], TRACE)
                if route["deprecated"]:
                    self.assertTrue(r.header("deprecation"), r)

    def test_request_id_generated_when_absent(self):
        r = self.srv.get("/v1/notes/" + self.note["id"])
        d = self.assertEnvelope(r)
        self.assertEqual(d["id"], self.note["id"])
        self.assertTrue(UUID_RE.match(r.header("x-request-id")), r.header("x-request-id"))
        r2 = self.srv.get("/v1/notes/" + self.note["id"])
        self.assertNotEqual(r.header("x-request-id"), r2.header("x-request-id"))
        self.assertNotEqual(r.json["meta"]["trace_id"], r2.json["meta"]["trace_id"])

    def test_valid_request_id_passes_through(self):
        for rid in ("abc", "req-123_4.5:6", "A" * 128):
            r = self.srv.get("/v1/notes", headers={"X-Request-ID": rid})
            self.assertEnvelope(r, pagination=True)
            self.assertEqual(r.header("x-request-id"), rid)
            self.assertEqual(r.json["meta"]["request_id"], rid)

    def test_invalid_request_id_replaced(self):
        for rid in ("has space", "semi;colon", "A" * 129, "quote\"d", "é"):
            with self.subTest(rid=rid):
                hdrs = {"X-Request-ID": rid.encode("utf-8").decode("latin-1")}
                r = self.srv.get("/v1/notes", headers=hdrs)
                self.assertEnvelope(r, pagination=True)
                got = r.header("x-request-id")
                self.assertNotEqual(got, rid)
                self.assertTrue(UUID_RE.match(got), got)
                self.assertEqual(r.json["meta"]["request_id"], got)

    def test_invalid_request_id_on_error_path(self):
        r = self.srv.get("/nope", headers={"X-Request-ID": "bad id"})
        p = self.assertProblem(r, 404, "route_not_found")
        self.assertTrue(UUID_RE.match(p["request_id"]))

    def test_traceparent_continued(self):
        r = self.srv.get("/v1/notes/" + self.note["id"], headers={"traceparent": "00-%s-%s-01" % (TRACE, PARENT)})
        self.assertEnvelope(r)
        m = TRACEPARENT_RE.match(r.header("traceparent"))
        self.assertEqual(m.group(1), TRACE)
        self.assertEqual(r.json["meta"]["trace_id"], TRACE)
        self.assertNotEqual(m.group(2), PARENT)
        self.assertEqual(int(m.group(3), 16) & 1, 1, "sampled flag kept")

    def test_traceparent_invalid_starts_new_trace(self):
        bad = [
            "00-%s-%s-01" % ("0" * 32, PARENT),      # all-zero trace id
            "00-%s-%s-01" % (TRACE, "0" * 16),       # all-zero parent id
            "00-%s-%s-01" % (TRACE.upper(), PARENT),  # upper case
            "ff-%s-%s-01" % (TRACE, PARENT),         # forbidden version
            "00-%s-%s" % (TRACE, PARENT),            # missing flags
            "garbage",
        ]
        for tp in bad:
            with self.subTest(tp=tp):
                r = self.srv.get("/v1/notes", headers={"traceparent": tp})
                self.assertEnvelope(r, pagination=True)
                m = TRACEPARENT_RE.match(r.header("traceparent"))
                self.assertNotEqual(m.group(1), TRACE.lower())
                self.assertNotEqual(m.group(1), "0" * 32)
                self.assertEqual(r.json["meta"]["trace_id"], m.group(1))

    def test_problem_ids_match_headers(self):
        r = self.srv.request("POST", "/v1/notes", body=b"{", headers={"Content-Type": "application/json",
                                                                      "X-Request-ID": "err-1",
                                                                      "traceparent": "00-%s-%s-00" % (TRACE, PARENT)})
        p = self.assertProblem(r, 400)
        self.assertEqual(p["request_id"], "err-1")
        self.assertEqual(p["trace_id"], TRACE)

    def test_access_log_carries_ids(self):
        self.srv.get("/v1/notes", headers={"X-Request-ID": "logged-id-42"})
        lines = [l for l in self.srv.log_lines() if l.get("request_id") == "logged-id-42"]
        self.assertTrue(lines, "no log line with the request id")
        self.assertTrue(lines[-1].get("trace_id"))
        self.assertEqual(lines[-1].get("route"), "/v1/notes")


if __name__ == "__main__":
    main()
