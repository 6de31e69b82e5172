"""Observability with the official tools: `promtool check metrics` on a live /metrics after traffic,
`promtool check rules` on the shipped alert rules, and the JSON log lines (one object per line with
ts, level, msg, request_id, trace_id, span_id; access lines with route, status, duration)."""
import json
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from test_foundation import Server  # noqa: E402

ROOT = os.environ.get("PAKE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


@unittest.skipUnless(shutil.which("promtool"), "promtool (Debian package prometheus) is not installed")
class Promtool(unittest.TestCase):
    def test_live_metrics_are_clean(self):
        s = Server()
        try:
            st, _, doc = s.request("POST", "/v1/notes", {"title": "metrics \"quoted\" \\ title", "tags": ["x"]})
            self.assertEqual(st, 201)
            nid = doc["data"]["id"]
            s.request("GET", "/v1/notes/" + nid)
            s.request("GET", "/v1/notes/" + nid)
            s.request("GET", "/v1/search?q=metrics")
            s.request("GET", "/v1/nope")
            s.request("PUT", "/v1/notes")
            st, h, text = s.request("GET", "/metrics")
            self.assertEqual(st, 200)
            self.assertTrue(h["content-type"].startswith("text/plain; version=0.0.4"))
            p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertEqual(p.stdout.strip() + p.stderr.strip(), b"")
            body = text.decode()
            for needle in ('pake_build_info{version=', 'pake_http_requests_total{method="GET",route="/v1/notes/{id}",status="200"} 2',
                           'route="unmatched"', 'pake_http_request_duration_seconds_bucket', 'pake_http_requests_in_flight',
                           'pake_store_query_duration_seconds_bucket{operation="note_create"', 'process_cpu_seconds_total',
                           'process_resident_memory_bytes', 'process_open_fds', 'process_start_time_seconds',
                           'pake_cache_hits_total', 'pake_breaker_state{name="store"} 0'):
                self.assertIn(needle, body)
            self.assertNotIn(nid, body)  # route labels are templates, never raw paths
        finally:
            s.stop()

    def test_alert_rules(self):
        p = subprocess.run(["promtool", "check", "rules", os.path.join(ROOT, "ops/prometheus/alerts.yml")],
                           capture_output=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)


class Logs(unittest.TestCase):
    def test_json_lines_with_correlation(self):
        s = Server()
        rid = "trace-me-123"
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        s.request("GET", "/v1/notes", headers={"X-Request-ID": rid, "traceparent": tp})
        rc, out = s.stop()
        self.assertEqual(rc, 0)
        lines = [l for l in out.splitlines() if l.startswith("{")]
        self.assertTrue(lines)
        objs = [json.loads(l) for l in lines]  # every line is one JSON object
        for o in objs:
            for k in ("ts", "level", "msg"):
                self.assertIn(k, o)
        access = [o for o in objs if o.get("request_id") == rid]
        self.assertEqual(len(access), 1, access)
        a = access[0]
        self.assertEqual(a["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736")
        self.assertEqual(len(a["span_id"]), 16)
        self.assertEqual((a["route"], a["status"]), ("/v1/notes", 200))
        self.assertIn("duration_ms", a)
        self.assertTrue(any(o["msg"] == "listening" for o in objs))
        self.assertTrue(any(o["msg"] == "stopped" for o in objs))


if __name__ == "__main__":
    unittest.main(verbosity=2)
