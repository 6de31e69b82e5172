#!/usr/bin/env python3
"""Process lifecycle: graceful shutdown under concurrent writes loses nothing acknowledged, readiness
turns 503 while draining, `pake migrate` is idempotent, `pake serve --help` documents every flag,
bad flags exit 2, PAKE_* variables configure the server."""
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pake_harness import SLOW, Server, main, run_pake  # noqa: E402


def must_stop_clean(test, srv):
    code, problems = srv.stop()
    test.assertEqual(problems, [], srv.stderr()[-3000:])
    test.assertEqual(code, 0)


class Shutdown(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="pake-itest-life-")
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)

    def server(self, *args, **kw):
        s = Server(args, data_dir=self.dir, **kw)
        self.servers.append(s)
        return s.start()

    def test_no_acknowledged_write_lost(self):
        srv = self.server("--shutdown-timeout-ms", "5000")
        acked, errors = [], []
        lock = threading.Lock()
        stop = threading.Event()

        def writer(w):
            i = 0
            while not stop.is_set():
                try:
                    r = srv.request("POST", "/v1/notes", json_body={"title": "w%d-%d" % (w, i)}, timeout=5)
                except OSError:
                    # the server closed the connection (draining): try a new one until refused
                    try:
                        r = srv.request("POST", "/v1/notes", json_body={"title": "w%d-%d" % (w, i)}, timeout=5,
                                        new_conn=True)
                    except OSError:
                        return
                i += 1
                with lock:
                    if r.status == 201:
                        acked.append(r.json["data"]["id"])
                    elif r.status != 503:
                        errors.append(r)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.8 * SLOW)
        with lock:
            before = len(acked)
        srv.signal(signal.SIGTERM)
        code = srv.wait(30)
        stop.set()
        for t in threads:
            t.join(30)
        self.assertEqual(code, 0, srv.stderr()[-3000:])
        self.assertEqual(srv.sanitizer_reports(), [])
        self.assertEqual(errors, [])
        self.assertGreater(before, 10, "the writers made progress before SIGTERM")
        self.assertEqual(len(acked), len(set(acked)))
        log = srv.log_lines()
        self.assertTrue(any(l.get("msg") == "stopped" for l in log), "no 'stopped' log line")

        # restart on the same data dir: every acknowledged note is there
        srv2 = self.server()
        missing = [i for i in acked if srv2.get("/v1/notes/" + i).status != 200]
        self.assertEqual(missing, [], "%d of %d acknowledged notes lost" % (len(missing), len(acked)))
        must_stop_clean(self, srv2)

    def test_readiness_503_while_draining(self):
        srv = self.server("--drain-delay-ms", str(int(1000 * SLOW)))
        self.assertEqual(srv.get("/health/ready").status, 200)
        srv.signal(signal.SIGTERM)
        seen = None
        deadline = time.monotonic() + 0.9 * SLOW
        while time.monotonic() < deadline:
            try:
                r = srv.request("GET", "/health/ready", new_conn=True, timeout=2)
            except OSError:
                break
            if r.status == 503:
                seen = r
                break
            time.sleep(0.02)
        self.assertIsNotNone(seen, "readiness never turned 503 during the drain delay")
        self.assertEqual(seen.content_type, "application/health+json")
        self.assertEqual(seen.json["status"], "fail")
        self.assertTrue(seen.header("x-request-id"))
        # liveness still passes and requests are still served while draining
        r = srv.request("GET", "/health/live", new_conn=True, timeout=2)
        self.assertEqual(r.status, 200)
        self.assertEqual(srv.wait(30), 0, srv.stderr()[-3000:])
        self.assertEqual(srv.sanitizer_reports(), [])

    def test_env_configures_server(self):
        srv = self.server(env={"PAKE_MAX_BODY_BYTES": "64", "PAKE_SERVER_HEADER": "pake"})
        # 65 bytes: one over the limit, read in full by h2o (no early close), refused by our limit stage
        r = srv.post("/v1/notes", {"title": "x" * 52}, new_conn=True)
        self.assertEqual(r.status, 413, r)
        self.assertEqual(srv.post("/v1/notes", {"title": "short"}).status, 201)
        must_stop_clean(self, srv)


class Cli(unittest.TestCase):
    def test_migrate_idempotent(self):
        d = tempfile.mkdtemp(prefix="pake-itest-mig-")
        try:
            p = run_pake(["migrate", "--data-dir", d])
            self.assertEqual(p.returncode, 0, p.stderr)
            first = json.loads(p.stdout.strip().splitlines()[-1])
            self.assertEqual(first["from_version"], 0)
            self.assertGreaterEqual(first["to_version"], 1)
            p = run_pake(["migrate", "--data-dir", d])
            self.assertEqual(p.returncode, 0, p.stderr)
            second = json.loads(p.stdout.strip().splitlines()[-1])
            self.assertEqual(second["from_version"], first["to_version"])
            self.assertEqual(second["to_version"], first["to_version"])
            # the server starts on a migrated store
            s = Server(data_dir=d).start()
            try:
                self.assertEqual(s.post("/v1/notes", {"title": "after migrate"}).status, 201)
                must_stop_clean(self, s)
            finally:
                s.cleanup()
            p = run_pake(["migrate", "--data-dir", d])
            self.assertEqual(json.loads(p.stdout.strip().splitlines()[-1])["from_version"], first["to_version"])
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_serve_help_lists_every_flag(self):
        p = run_pake(["serve", "--help"])
        self.assertEqual(p.returncode, 0, p.stderr)
        text = p.stdout + p.stderr
        rows = re.findall(r"^\s+--([a-z0-9-]+)\s+(PAKE_[A-Z0-9_]+)\s+default: (.*)$", text, re.M)
        flags = {f: (env, d.strip()) for f, env, d in rows}
        for f, (env, d) in flags.items():
            self.assertEqual(env, "PAKE_" + f.upper().replace("-", "_"), f)
            self.assertTrue(d, f)
        required = ["listen", "data-dir", "threads", "log-level", "max-body-bytes", "json-max-depth",
                    "read-timeout-ms", "idle-timeout-ms", "shutdown-timeout-ms", "drain-delay-ms", "tls-cert",
                    "tls-key", "http2", "server-header", "idempotency-ttl-s"]
        for f in required:
            self.assertIn(f, flags, "--%s missing from --help" % f)
        self.assertEqual(flags["listen"][1], "127.0.0.1:8080")
        self.assertEqual(flags["data-dir"][1], "./data")
        self.assertEqual(flags["max-body-bytes"][1], "1048576")
        # every --flag mentioned in the text is a documented row
        mentioned = set(re.findall(r"^\s+--([a-z0-9-]+)", text, re.M))
        self.assertEqual(mentioned, set(flags))

    def test_bad_flags_exit_2(self):
        for args in (["serve", "--bogus"], ["serve", "--threads", "abc"], ["serve", "--listen", "nope"],
                     ["serve", "--max-body-bytes"], ["serve", "--json-max-depth", "0"], ["bogus-command"],
                     ["serve", "stray"]):
            with self.subTest(args=args):
                p = run_pake(args, timeout=10)
                self.assertEqual(p.returncode, 2, (p.stdout, p.stderr))
                self.assertTrue(p.stderr.strip(), "an explanation on stderr")
        p = run_pake(["serve"], env={"PAKE_THREADS": "many"}, timeout=10)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("PAKE_THREADS", p.stderr)

    def test_version_and_routes(self):
        p = run_pake(["version"])
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout, r"\d+\.\d+\.\d+")
        routes = json.loads(run_pake(["routes"]).stdout)
        self.assertEqual(len({(r["method"], r["path"]) for r in routes}), len(routes), "duplicate routes")


if __name__ == "__main__":
    main()
