"""Distributed mode with a real redis-server (scripts/redis-test-server.sh): two `pake serve` processes
share one SQLite data directory (WAL works across processes) and one Redis.

  * no stale read after an acknowledged write on any instance (B's L1 warm, writers on A, readers on B)
  * one shared rate limit for two processes (budget N in total, not 2N)
  * kill -9 of Redis under read/write load, then a restart on the same port: no 5xx, readiness "warn"
    (200) then "pass", the redis breaker opens and closes, limits fall back and come back, recovery
    within 5 s of Redis returning, still no stale read
  * AUTH: a password and an ACL user work; a wrong password is a start-up error (exit 1, clear message)
  * NOSCRIPT: a flushed script cache is reloaded transparently
Stdlib only; direct Redis commands go through redis-cli."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pake_harness import SLOW, SOURCE_DIR, Server, main, run_pake  # noqa: E402

SCRIPT = os.path.join(SOURCE_DIR, "scripts", "redis-test-server.sh")
HAVE_REDIS = shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


class Redis:
    """A redis-server started by the project's script; stopped (or crashed) by pid."""

    def __init__(self, password=None):
        self.password = password
        self.port = None
        self.dir = None
        self.pid = None
        self.url = None

    def start(self):
        args = [SCRIPT]
        if self.port:
            args += ["--port", str(self.port), "--dir", self.dir]
        if self.password:
            args += ["--password", self.password]
        out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True).stdout.split()
        self.url, self.pid, self.dir = out[0], int(out[1]), out[2]
        self.port = int(re.search(r":(\d+)/", self.url).group(1))
        return self

    def kill9(self):
        os.kill(self.pid, 9)
        _reap(self.pid)

    def stop(self):
        try:
            os.kill(self.pid, 15)
            _reap(self.pid)
        except ProcessLookupError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def cli(self, *args):
        a = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port)]
        if self.password:
            a += ["--no-auth-warning", "-a", self.password]
        return subprocess.run(a + list(args), capture_output=True, text=True, timeout=10).stdout.strip()


def _reap(pid):
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def pake(redis_url, data_dir=None, extra=()):
    args = ["--redis-url", redis_url, "--redis-breaker-wait-ms", "500"] + list(extra)
    return Server(args, data_dir=data_dir).start()


def stop_all(test, *servers):
    problems = []
    for s in servers:
        _, p = s.stop()
        problems += p
        s.cleanup()
    test.assertEqual(problems, [])


def version_of(r):
    return r.json["data"]["version"]


class StaleChecker:
    """Writers PATCH one note on A; readers GET it on B. A read that starts after a write was
    acknowledged must see that write's version or a later one."""

    def __init__(self, a, b, note_id, writers=1, readers=2):
        self.a, self.b, self.id = a, b, note_id
        self.acked = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.violations = []
        self.statuses = {}
        self.reads = self.writes = self.hits = 0
        self.threads = [threading.Thread(target=self.writer) for _ in range(writers)]
        self.threads += [threading.Thread(target=self.reader) for _ in range(readers)]

    def count(self, where, status):
        with self.lock:
            k = (where, status)
            self.statuses[k] = self.statuses.get(k, 0) + 1

    def writer(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                r = self.a.request("PATCH", "/v1/notes/" + self.id, json_body={"title": "t%d" % n}, timeout=15)
            except OSError as e:
                self.count("write", type(e).__name__)
                continue
            self.count("write", r.status)
            if r.status == 200:
                v = version_of(r)
                with self.lock:
                    self.acked = max(self.acked, v)
                    self.writes += 1

    def reader(self):
        while not self.stop.is_set():
            with self.lock:
                floor = self.acked
            try:
                r = self.b.get("/v1/notes/" + self.id, timeout=15)
            except OSError as e:
                self.count("read", type(e).__name__)
                continue
            self.count("read", r.status)
            if r.status != 200:
                continue
            v = version_of(r)
            with self.lock:
                self.reads += 1
                if "desc=hit" in (r.header("server-timing") or ""):
                    self.hits += 1
                if v < floor:
                    self.violations.append((floor, v))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def server_errors(self):
        return {k: v for k, v in self.statuses.items() if not isinstance(k[1], int) or k[1] >= 500}


def metric(srv, name):
    text = srv.get("/metrics").body.decode()
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def breaker_state(srv, name="redis"):
    r = srv.get("/v1/admin/breakers")
    for b in r.json["data"] if "data" in r.json else r.json:
        if b["name"] == name:
            return b["state"]
    return None


def ready(srv):
    r = srv.get("/health/ready", timeout=5)
    return r.status, r.json.get("status"), r.json["checks"].get("redis:connection", [{}])[0]


@unittest.skipUnless(HAVE_REDIS, "redis-server / redis-cli not installed (scripts/install-deps.sh)")
class TwoInstances(unittest.TestCase):
    def setUp(self):
        self.redis = Redis().start()
        self.dir = tempfile.mkdtemp(prefix="pake-redis-itest-")

    def tearDown(self):
        self.redis.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_no_stale_read_across_instances(self):
        a = pake(self.redis.url, self.dir)
        b = pake(self.redis.url, self.dir)
        try:
            note = a.create_note(title="t0", content="x")
            for _ in range(3):  # warm B's L1 (and L2)
                self.assertEqual(b.get("/v1/notes/" + note["id"]).status, 200)
            self.assertIn("desc=hit", b.get("/v1/notes/" + note["id"]).header("server-timing"))
            with StaleChecker(a, b, note["id"]) as chk:
                time.sleep(3 * SLOW)
            self.assertEqual(chk.server_errors(), {})
            self.assertEqual(chk.violations[:5], [], "stale reads on B after acknowledged writes on A")
            self.assertGreater(chk.writes, 20, chk.statuses)
            self.assertGreater(chk.reads, 50, chk.statuses)
            self.assertGreater(chk.hits, 0, "B never served from L1: the test would prove nothing")
            # the final version is what both instances serve
            final = version_of(a.get("/v1/notes/" + note["id"]))
            self.assertEqual(version_of(b.get("/v1/notes/" + note["id"])), final)
            # L2: a third read path (B's L1 cleared by the invalidation, value from Redis or the store)
            self.assertGreater(metric(b, "pake_redis_invalidations_received_total"), 0)
            # query pages: a create on A is visible in B's (previously cached) list at once
            self.assertEqual(b.get("/v1/notes?limit=100").status, 200)
            self.assertIn("desc=hit", b.get("/v1/notes?limit=100").header("server-timing"))
            n2 = a.create_note(title="fresh", content="y")
            ids = [n["id"] for n in b.get("/v1/notes?limit=100").json["data"]]
            self.assertIn(n2["id"], ids)
            # delete on A: B answers 404 right after the ack
            self.assertEqual(a.request("DELETE", "/v1/notes/" + n2["id"]).status, 204)
            self.assertEqual(b.get("/v1/notes/" + n2["id"]).status, 404)
        finally:
            stop_all(self, a, b)

    def test_one_rate_limit_budget_for_two_processes(self):
        extra = ["--rate-read", "1", "--burst-read", "10"]
        a = pake(self.redis.url, self.dir, extra)
        b = pake(self.redis.url, self.dir, extra)
        try:
            missing = "/v1/notes/01900000-0000-7000-8000-000000000000"
            results = {"a": [], "b": []}
            t0 = time.monotonic()
            for i in range(30):
                name, srv = ("a", a) if i % 2 == 0 else ("b", b)
                r = srv.get(missing)
                results[name].append(r.status)
                if r.status == 429:
                    self.assertTrue(r.header("retry-after"), r)
                self.assertTrue(r.header("ratelimit-policy").startswith('"read";q=1;w=1'), r.header("ratelimit-policy"))
            elapsed = time.monotonic() - t0
            allowed = sum(1 for v in results.values() for s in v if s != 429)
            # 10 at once plus what refilled meanwhile (1/s); two local limiters would allow 20
            self.assertGreaterEqual(allowed, 10, results)
            self.assertLessEqual(allowed, 10 + int(elapsed) + 1, results)
            self.assertGreater(sum(1 for s in results["a"] if s != 429), 0)
            self.assertGreater(sum(1 for s in results["b"] if s != 429), 0)
            self.assertGreater(metric(a, 'pake_ratelimit_backend_total{backend="redis"}'), 0)
            # NOSCRIPT: a flushed script cache is reloaded on the next call
            before = metric(a, "pake_redis_script_loads_total")
            self.assertEqual(self.redis.cli("SCRIPT", "FLUSH"), "OK")
            a.get(missing)
            self.assertGreater(metric(a, "pake_redis_script_loads_total"), before)
        finally:
            stop_all(self, a, b)

    def test_redis_crash_and_restart_under_load(self):
        a = pake(self.redis.url, self.dir)
        b = pake(self.redis.url, self.dir)
        try:
            note = a.create_note(title="t0", content="x")
            for _ in range(3):
                b.get("/v1/notes/" + note["id"])
            self.assertEqual(ready(a)[:2], (200, "pass"))
            with StaleChecker(a, b, note["id"], writers=1, readers=2) as chk:
                time.sleep(1 * SLOW)
                self.redis.kill9()
                killed = time.monotonic()
                # degraded, not down: readiness 200 + warn, breaker opens, limits are local
                seen_warn = seen_open = False
                while time.monotonic() - killed < 8 * SLOW and not (seen_warn and seen_open):
                    st, overall, check = ready(b)
                    self.assertEqual(st, 200)
                    if overall == "warn" and check.get("observedValue") == "degraded":
                        seen_warn = True
                    if breaker_state(b) in ("open", "half_open") or breaker_state(a) in ("open", "half_open"):
                        seen_open = True
                    b.get("/v1/notes?limit=5")  # traffic through the limiter
                    time.sleep(0.05)
                self.assertTrue(seen_warn, "readiness never reported degraded")
                self.assertTrue(seen_open, "the redis breaker never opened")
                fallback_a = metric(a, 'pake_ratelimit_backend_total{backend="local"}') or 0
                time.sleep(1 * SLOW)
                self.assertGreater(metric(a, 'pake_ratelimit_backend_total{backend="local"}') or 0, fallback_a)
                writes_during = chk.writes
                self.redis.start()  # same port, empty
                back = time.monotonic()
                recovered = {}
                while time.monotonic() - back < 10 * SLOW and len(recovered) < 2:
                    for name, srv in (("a", a), ("b", b)):
                        if name not in recovered and ready(srv)[:2] == (200, "pass") and breaker_state(srv) == "closed":
                            recovered[name] = time.monotonic() - back
                    b.get("/v1/notes?limit=5")
                    a.get("/v1/notes?limit=5")
                    time.sleep(0.05)
                self.assertEqual(set(recovered), {"a", "b"}, "did not recover")
                self.assertLessEqual(max(recovered.values()), 5.0 * SLOW, recovered)
                redis_rl = metric(a, 'pake_ratelimit_backend_total{backend="redis"}')
                time.sleep(0.5 * SLOW)
                self.assertGreater(metric(a, 'pake_ratelimit_backend_total{backend="redis"}'), redis_rl)
            print("recovery after redis restart: %s s; writes %d (%d before restart), reads %d, L1 hits %d"
                  % ({k: round(v, 2) for k, v in recovered.items()}, chk.writes, writes_during, chk.reads,
                     chk.hits), file=sys.stderr)
            self.assertEqual(chk.server_errors(), {})
            self.assertEqual(chk.violations[:5], [])
            self.assertGreater(chk.writes, writes_during)
            self.assertGreater(metric(a, "pake_redis_lease_waits_total"), 0)
        finally:
            stop_all(self, a, b)


@unittest.skipUnless(HAVE_REDIS, "redis-server / redis-cli not installed (scripts/install-deps.sh)")
class Auth(unittest.TestCase):
    def setUp(self):
        self.redis = Redis(password="s3cret-pw").start()

    def tearDown(self):
        self.redis.stop()

    def test_password_and_acl_user(self):
        s = pake(self.redis.url)
        try:
            n = s.create_note(title="auth", content="x")
            self.assertEqual(s.get("/v1/notes/" + n["id"]).status, 200)
            self.assertEqual(ready(s)[:2], (200, "pass"))
            self.assertEqual(self.redis.cli("EXISTS", "pake:n:" + n["id"]), "1")
        finally:
            stop_all(self, s)
        self.assertEqual(self.redis.cli("ACL", "SETUSER", "pakeuser", "on", ">u-pw", "~pake:*", "&pake:*", "+@all"), "OK")
        s = pake("redis://pakeuser:u-pw@127.0.0.1:%d/0" % self.redis.port, extra=["--redis-prefix", "pake:acl:"])
        try:
            n = s.create_note(title="acl", content="x")
            self.assertEqual(s.get("/v1/notes/" + n["id"]).status, 200)
            self.assertEqual(ready(s)[:2], (200, "pass"))
        finally:
            stop_all(self, s)

    def test_wrong_password_is_a_startup_error(self):
        d = tempfile.mkdtemp(prefix="pake-redis-itest-")
        try:
            url = "redis://:wrong@127.0.0.1:%d/0" % self.redis.port
            p = run_pake(["serve", "--listen", "127.0.0.1:0", "--data-dir", d, "--redis-url", url], timeout=20)
            self.assertEqual(p.returncode, 1, p.stderr[-2000:])
            self.assertIn("AUTH", p.stderr)
            self.assertNotIn("wrong", p.stderr.replace("WRONGPASS", ""))  # the password is never logged
            p = run_pake(["serve", "--listen", "127.0.0.1:0", "--data-dir", d, "--redis-url",
                          "redis://127.0.0.1:%d/0" % self.redis.port], timeout=20)
            self.assertEqual(p.returncode, 1, p.stderr[-2000:])
            self.assertIn("password", p.stderr)
        finally:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
