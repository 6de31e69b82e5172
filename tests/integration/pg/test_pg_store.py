#!/usr/bin/env python3
"""PostgreSQL store, behaviour the shared REST suite cannot show (it runs the same files against both
stores): the database stopped during writes and started again, read-replica routing with
read-your-writes, and the pool's metrics.

Each test class starts its own PostgreSQL (scripts/pg-test-server.sh) because the fault test stops it.
Skipped when PostgreSQL 15 is not installed.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pake_harness import SLOW, SOURCE_DIR, Server, main, pg_create_database, wait_for  # noqa: E402

PG_SCRIPT = os.path.join(SOURCE_DIR, "scripts", "pg-test-server.sh")
HAVE_PG = os.path.exists("/usr/lib/postgresql/15/bin/postgres")


def pg_server(cmd, d, *extra):
    r = subprocess.run([PG_SCRIPT, cmd, d] + list(extra), capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("pg-test-server.sh %s failed: %s" % (cmd, r.stderr))
    return r.stdout.strip()


def metric(text, mname, **labels):
    """Sum of the samples of `mname` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(mname):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != mname:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


@unittest.skipUnless(HAVE_PG, "PostgreSQL 15 is not installed")
class PgCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="pake-pg-")
        cls.url = pg_server("start", cls.dir)
        cls.port = cls.url.rsplit(":", 1)[1].split("/")[0]

    @classmethod
    def tearDownClass(cls):
        pg_server("destroy", cls.dir)
        shutil.rmtree(cls.dir, ignore_errors=True)

    def start_pake(self, *args):
        db = pg_create_database(self.url)
        s = Server(["--database-url", db] + list(args))
        self.addCleanup(s.cleanup)
        return s.start(), db

    def stop_clean(self, s):
        code, problems = s.stop()
        self.assertEqual(problems, [], s.stderr()[-3000:])


class Outage(PgCase):
    def test_database_stopped_during_writes(self):
        srv, _ = self.start_pake("--breaker-min-calls", "5", "--breaker-window", "10", "--breaker-wait-ms", "500",
                                 "--breaker-half-open-calls", "2", "--pg-backoff-max-ms", "500",
                                 "--deadline-ms", "3000", "--pg-pool-min", "2")
        acked, statuses, ready = [], [], []
        lock = threading.Lock()
        stop = threading.Event()

        def writer(w):
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = srv.post("/v1/notes", {"title": "outage %d-%d" % (w, i)}, timeout=10)
                except OSError:
                    continue
                with lock:
                    statuses.append((time.monotonic(), r.status))
                    if r.status == 201:
                        acked.append(r.data["id"])
                    elif r.status not in (503, 504):
                        self.fail_reason = "unexpected status %r" % r
                if r.status != 201:
                    time.sleep(0.02)

        def prober():
            while not stop.is_set():
                try:
                    st = srv.get("/health/ready", timeout=5).status
                except OSError:
                    st = None
                with lock:
                    ready.append((time.monotonic(), st))
                time.sleep(0.05)

        self.fail_reason = None
        threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)] + [threading.Thread(target=prober)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0 * SLOW)
            with lock:
                before = len(acked)
            pg_server("stop", self.dir)
            t_down = time.monotonic()
            time.sleep(2.0 * SLOW)
            t_up_begin = time.monotonic()
            pg_server("start", self.dir, self.port)
            t_up = time.monotonic()
            # the service must write again, and say it is ready, within 5 s of the database returning
            recovered_write = recovered_ready = None
            while time.monotonic() < t_up + 10 and (recovered_write is None or recovered_ready is None):
                with lock:
                    recovered_write = next((t for t, s in statuses if t > t_up and s == 201), None)
                    recovered_ready = next((t for t, s in ready if t > t_up and s == 200), None)
                time.sleep(0.05)
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertIsNone(self.fail_reason)
        self.assertGreater(before, 0, "no write succeeded before the outage")
        self.assertIsNotNone(recovered_write, "no write succeeded after the database came back")
        self.assertIsNotNone(recovered_ready, "readiness did not come back")
        self.assertLess(recovered_write - t_up, 5.0, "writes recovered %.2f s after the database" % (recovered_write - t_up))
        self.assertLess(recovered_ready - t_up, 5.0)
        # while the database was down (after a short grace for in-flight probes), readiness said so
        down = [s for t, s in ready if t_down + 0.3 < t < t_up_begin]
        self.assertTrue(down, "no readiness probe while the database was down")
        self.assertEqual(set(down), {503}, "readiness while down: %r" % down)
        failed_writes = [s for t, s in statuses if t_down + 0.3 < t < t_up_begin]
        self.assertTrue(failed_writes and all(s in (503, 504) for s in failed_writes), failed_writes[:20])
        # the breaker opened during the outage and closed again
        m = srv.get("/metrics").body.decode()
        self.assertGreaterEqual(metric(m, "pake_breaker_transitions_total", name="store", to="open"), 1, m[:2000])
        self.assertGreaterEqual(metric(m, "pake_breaker_transitions_total", name="store", to="closed"), 1)
        self.assertEqual(metric(m, "pake_breaker_state", name="store"), 0)
        self.assertGreaterEqual(metric(m, "pake_pg_pool_connect_failures_total", pool="primary"), 1)
        # no acknowledged write was lost
        missing = [i for i in acked if srv.get("/v1/notes/" + i).status != 200]
        self.assertEqual(missing, [], "%d of %d acknowledged writes lost" % (len(missing), len(acked)))
        print("outage: %d writes acknowledged; write recovered %.2f s and readiness %.2f s after the database"
              % (len(acked), recovered_write - t_up, recovered_ready - t_up), file=sys.stderr)
        self.stop_clean(srv)


class Replica(PgCase):
    def test_reads_go_to_the_replica_except_after_a_write(self):
        db = pg_create_database(self.url)
        # the same database serves as the "replica": routing is what is under test
        srv = Server(["--database-url", db, "--database-replica-url", db, "--pg-read-your-writes-ms", "800",
                      "--cache-bytes", "0", "--no-task-auto-embed"])  # no background note reads
        self.addCleanup(srv.cleanup)
        srv.start()

        def acquisitions(pool):
            return metric(srv.get("/metrics").body.decode(), "pake_pg_pool_acquire_wait_seconds_count", pool=pool)

        note = srv.create_note(title="replica routing", content="read your writes")
        p0, r0 = acquisitions("primary"), acquisitions("replica")
        for _ in range(5):
            self.assertEqual(srv.get("/v1/notes/" + note["id"]).status, 200)
        p1, r1 = acquisitions("primary"), acquisitions("replica")
        self.assertGreaterEqual(p1 - p0, 5, "reads right after a write go to the primary")
        self.assertEqual(r1 - r0, 0)
        time.sleep(1.0)
        for _ in range(5):
            self.assertEqual(srv.get("/v1/search?q=replica").status, 200)
        p2, r2 = acquisitions("primary"), acquisitions("replica")
        self.assertGreaterEqual(r2 - r1, 5, "later reads go to the replica")
        self.assertLessEqual(p2 - p1, 1)  # readiness probes ping the primary; nothing else
        self.stop_clean(srv)


class PoolMetrics(PgCase):
    def test_pool_gauges_and_histograms(self):
        srv, _ = self.start_pake("--pg-pool-min", "2", "--pg-pool-max", "6")
        for i in range(10):
            srv.create_note(title="metrics %d" % i)
        self.assertEqual(srv.get("/v1/search?q=metrics").status, 200)

        def settled():
            # Each gauge is read on its own, and the maintenance thread may be opening a connection
            # (min_size top-up) while we scrape: wait for a scrape where every counted connection has
            # a state. Accounting that leaks a slot never settles and fails here.
            m = srv.get("/metrics").body.decode()
            size = metric(m, "pake_pg_pool_size", pool="primary")
            states = [metric(m, "pake_pg_pool_connections", pool="primary", state=s)
                      for s in ("idle", "in_use", "opening")]
            return m if size >= 1 and sum(states) == size and states[2] == 0 else None

        m = wait_for("a pool whose idle + in_use connections add up to its size", settled)
        self.assertEqual(metric(m, "pake_pg_pool_max_size", pool="primary"), 6)
        self.assertLessEqual(metric(m, "pake_pg_pool_size", pool="primary"), 6)
        self.assertEqual(metric(m, "pake_pg_pool_waiters", pool="primary"), 0)
        self.assertGreaterEqual(metric(m, "pake_pg_pool_acquire_wait_seconds_count", pool="primary"), 11)
        self.assertGreaterEqual(metric(m, "pake_pg_query_duration_seconds_count", statement="note_create"), 10)
        self.assertGreaterEqual(metric(m, "pake_pg_query_duration_seconds_count", statement="note_search"), 1)
        h = srv.get("/health/ready").json
        self.assertEqual(h["checks"]["store:responseTime"][0]["componentId"], "postgres")
        self.stop_clean(srv)

    def test_migrate_command(self):
        db = pg_create_database(self.url)
        from pake_harness import run_pake
        import json
        p = run_pake(["migrate", "--database-url", db])
        self.assertEqual(p.returncode, 0, p.stderr)
        first = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual((first["store"], first["from_version"]), ("postgres", 0))
        self.assertGreaterEqual(first["to_version"], 1)
        p = run_pake(["migrate", "--database-url", db])
        second = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertEqual(second["from_version"], first["to_version"])
        # a server that cannot reach its database does not start
        p = run_pake(["migrate", "--database-url", "postgres://pake@127.0.0.1:1/none"])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("unavailable", p.stderr)


if __name__ == "__main__":
    main()
