"""`pake worker` processes next to a `pake serve --workers 0` (the API enqueues, the workers run).

Each backend runs the same checks with real processes on one data directory (few process starts:
an ASan start costs seconds on a loaded machine, so test 1 runs (a), (e), (b), (c) on one pair):
  1 (a) tasks enqueued over REST are run by the worker processes (results name their pids); a note
        written on the server becomes a note.embed task a worker runs (semantic search finds it);
        note.summarize writes the note through the store; GET /v1/queues lists both processes
        (workers_seen, kind worker, 2 threads, a recent beat)
    (e) 40 short tasks over the two processes: every task ran exactly once (attempts 1, no errors)
        and both processes took part
    (b) kill -9 of the process running a task: after the short lease the other one reclaims it and
        it succeeds exactly once more (attempt 2, one "lease expired" in its history)
    (c) SIGTERM with two tasks in flight: the one that can finish by the deadline finishes, the other
        is released (queued, attempt not counted); exit 0; the process leaves the registry
  2 (f) --task-limits noop=concurrency:1 in two processes: the runs (start/finish in the results)
        never overlap
  4 delayed tasks (delay_ms) start in a worker process within 100 ms of their time (300 ms on the
    ASan build)
  0 bad worker settings are start-up errors (exit 2) with a clear message; --help
  5 120 concurrent POST /v1/tasks from 12 threads (the server coalesces concurrent creations into one
    queue call): each gets its own task with its own payload; 24 of them share an idempotency key:
    exactly one 201, one task
The Redis variant (when src/queue/queue_redis.c is built in and redis-server is installed) adds:
  3 (d) Redis restarts on the same port, without and then with persistence, while two workers run: they
        resume on their own and new tasks complete (with persistence, those waiting in Redis at the
        restart complete too).
Stdlib only."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pake_harness import PAKE_BIN, SANITIZER_MARKERS, SLOW, SOURCE_DIR, Server, main, wait_for  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(SOURCE_DIR, "scripts", "redis-test-server.sh")
HAVE_REDIS = shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None
REDIS_QUEUE = os.path.exists(os.path.join(SOURCE_DIR, "src", "queue", "queue_redis.c"))
LEASE_MS = 1500


class Worker:
    """One `pake worker` process; stderr kept in a file (JSON logs)."""

    def __init__(self, data_dir, args=()):
        self.args = [PAKE_BIN, "worker", "--data-dir", data_dir] + list(args)
        fd, self.log = tempfile.mkstemp(prefix="pake-worker-", suffix=".log")
        os.close(fd)
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:fast_unwind_on_malloc=0")
        env.setdefault("LSAN_OPTIONS", "suppressions=%s:print_suppressions=0" % os.path.join(HERE, "..", "lsan.supp"))
        self._errf = open(self.log, "wb")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self._errf, env=env)
        self.pid = self.proc.pid
        wait_for("worker %d to start" % self.pid, self._started, 30)

    def _started(self):
        if self.proc.poll() is not None:
            raise AssertionError("pake worker exited %s:\n%s" % (self.proc.returncode, self.stderr()))
        return any(l.get("msg", "").startswith("task workers started") for l in self.lines())

    def stderr(self):
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def lines(self):
        out = []
        for line in self.stderr().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def terminate(self, timeout=30):
        """SIGTERM; returns the exit code (raises when it does not exit in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout * SLOW)
        finally:
            self._errf.close()

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self._errf.close()

    def problems(self):
        text = self.stderr()
        found = [m for m in SANITIZER_MARKERS if m in text]
        return ["sanitizer report in worker stderr:\n" + text[:4000]] if found else []

    def cleanup(self):
        if self.proc.poll() is None:
            self.kill9()
        if not os.environ.get("PAKE_KEEP_LOGS"):
            os.unlink(self.log)


class Redis:
    """A redis-server from scripts/redis-test-server.sh; restarted on the same port and directory."""

    def __init__(self, persist=False):
        self.persist = persist
        self.port = self.dir = self.pid = self.url = None

    def start(self):
        args = [SCRIPT] + (["--persist"] if self.persist else [])
        if self.port:
            args += ["--port", str(self.port), "--dir", self.dir]
        out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True).stdout.split()
        self.url, self.pid, self.dir = out[0], int(out[1]), out[2]
        self.port = int(re.search(r":(\d+)/", self.url).group(1))
        return self

    def stop_process(self):
        """SIGTERM by pid (a clean shutdown: with persistence the AOF is complete), wait until gone."""
        os.kill(self.pid, signal.SIGTERM)
        for _ in range(500):
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        raise AssertionError("redis-server %d did not stop" % self.pid)

    def cleanup(self):
        try:
            self.stop_process()
        except (ProcessLookupError, AssertionError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class WorkerCase:
    """The checks shared by the backends. Subclasses set queue_args() and start/stop the backend."""

    srv = None
    data_dir = None

    @classmethod
    def queue_args(cls):
        return []

    @classmethod
    def start_server(cls):
        cls.data_dir = tempfile.mkdtemp(prefix="pake-wtest-")
        cls.srv = Server(["--workers", "0", "--task-leases", "noop=%d" % LEASE_MS] + cls.queue_args(),
                         data_dir=cls.data_dir).start()
        # the workers use the server's store (PostgreSQL when the harness gave it one)
        a = cls.srv.extra_args
        cls.store_args = a[a.index("--database-url"):a.index("--database-url") + 2] if "--database-url" in a else []

    @classmethod
    def stop_server(cls):
        try:
            code, problems = cls.srv.stop()
            if problems:
                raise AssertionError("server: " + "; ".join(problems))
        finally:
            cls.srv.cleanup()
            shutil.rmtree(cls.data_dir, ignore_errors=True)

    def setUp(self):
        self.workers = []

    def tearDown(self):
        for w in self.workers:
            w.cleanup()

    def worker(self, *args, threads=2):
        w = Worker(self.data_dir, ["--workers", str(threads), "--task-leases", "noop=%d" % LEASE_MS,
                                   "--log-level", "info"] + self.queue_args() + self.store_args + list(args))
        self.workers.append(w)
        return w

    def stop_worker(self, w):
        code = w.terminate()
        self.assertEqual(code, 0, w.stderr()[-2000:])
        self.assertEqual(w.problems(), [])

    def enqueue(self, payload=None, type_="noop", **extra):
        body = dict({"type": type_, "payload": payload or {}}, **extra)
        r = self.srv.post("/v1/tasks", body)
        self.assertEqual(r.status, 201, r)
        return r.data["id"]

    def task(self, tid):
        r = self.srv.get("/v1/tasks/" + tid)
        self.assertEqual(r.status, 200, r)
        return r.data

    def wait_state(self, tid, states, timeout=20):
        states = (states,) if isinstance(states, str) else states
        return wait_for("task %s to be %s" % (tid, states),
                        lambda: (lambda t: t if t["state"] in states else None)(self.task(tid)), timeout)

    def wait_all(self, ids, timeout=30):
        return [self.wait_state(i, ("succeeded", "failed", "dead", "cancelled"), timeout) for i in ids]

    def workers_seen(self):
        r = self.srv.get("/v1/queues")
        self.assertEqual(r.status, 200, r)
        return r.data.get("workers_seen", [])

    # ---- (a) and (e), then (b) and (c) -----------------------------------------------------------
    def test_1_workers_run_rest_tasks_survive_kill9_and_stop_on_sigterm(self):
        # one pair of processes for (a), (e), (b) and (c): an ASan start costs seconds on a busy machine
        deadline_ms = int(800 * SLOW)
        args = ("--log-level", "debug", "--shutdown-timeout-ms", str(deadline_ms))
        w1, w2 = self.worker(*args), self.worker(*args)
        pids = {w1.pid, w2.pid}
        # (a) the server runs no workers: every result names one of the worker processes
        ids = [self.enqueue({"ms": 15}) for _ in range(40)]
        ran = set()
        for t in self.wait_all(ids):
            self.assertEqual(t["state"], "succeeded", t)
            self.assertIn(t["result"]["pid"], pids, t)
            # (e) one claim per task: no other worker ever started it, not even after a lease expiry
            self.assertEqual(t["attempts"], 1, t)
            self.assertEqual(t["errors"], [], t)
            ran.add(t["result"]["pid"])
        self.assertEqual(ran, pids)  # both processes took part
        seen = wait_for("both workers in workers_seen",
                        lambda: (lambda s: s if {x["pid"] for x in s} >= pids else None)(self.workers_seen()), 10)
        for x in seen:
            if x["pid"] in pids:
                self.assertEqual((x["kind"], x["threads"]), ("worker", 2), x)
                self.assertLess(x["age_ms"], 5000 * SLOW, x)
        # a note written over REST: the server's hook enqueues note.embed, a worker runs it
        note = self.srv.create_note(title="Photosynthesis",
                                    content="Green leaves absorb red and blue light. Chlorophyll makes sugar.")
        wait_for("a worker's embedding of the note", lambda: [
            h for h in self.srv.get("/v1/search?q=leaves+absorbing+light&mode=semantic").data
            if h["id"] == note["id"]], 20)
        # note.summarize writes the note through the store from a worker process
        t = self.wait_state(self.enqueue({"note_id": note["id"]}, "note.summarize"), ("succeeded", "failed", "dead"))
        self.assertEqual(t["state"], "succeeded", t)
        self.assertEqual(self.srv.get("/v1/notes/" + note["id"]).data.get("ai_summary"), t["result"]["summary"])
        self.kill9_then_sigterm([w1, w2], deadline_ms)

    # ---- (b) and (c), on the processes of test 1 ------------------------------------------------
    def holder(self, tid, workers):
        """The worker process that runs task tid (from its debug log line)."""
        def find():
            for w in workers:
                if any(tid in l.get("msg", "") and "started on" in l.get("msg", "") for l in w.lines()):
                    return w
        return wait_for("the worker that runs " + tid, find, 10)

    def kill9_then_sigterm(self, ws, deadline_ms):
        # (b) kill -9 the process that runs a task: the other reclaims it after the lease, runs it once
        tid = self.enqueue({"ms": 3000})
        self.wait_state(tid, "running")
        gone = self.holder(tid, ws)
        survivor = ws[1] if gone is ws[0] else ws[0]
        gone.kill9()
        t0 = time.monotonic()
        t = self.wait_state(tid, ("succeeded", "failed", "dead"), timeout=20)
        self.assertEqual(t["state"], "succeeded", t)
        self.assertEqual(t["attempts"], 2, t)
        self.assertEqual((t["result"]["pid"], t["result"]["attempt"]), (survivor.pid, 2), t)
        self.assertEqual([e["error"] for e in t["errors"]], ["lease expired"], t)
        self.assertGreaterEqual(time.monotonic() - t0, 3.0)  # the second run took its whole 3 s
        # (c) SIGTERM with two tasks in flight: one finishes by the deadline, one cannot and is released
        short = self.enqueue({"ms": 300})
        long_ = self.enqueue({"ms": 60000})
        self.wait_state(short, "running")
        self.wait_state(long_, "running")
        t0 = time.monotonic()
        self.stop_worker(survivor)
        self.assertLess(time.monotonic() - t0, deadline_ms / 1000.0 + 3 * SLOW)
        t = self.task(short)
        self.assertEqual((t["state"], t["result"]["pid"]), ("succeeded", survivor.pid), t)
        t = self.task(long_)
        self.assertEqual((t["state"], t["attempts"]), ("queued", 0), t)  # released, attempt not counted
        self.assertNotIn(survivor.pid, {x["pid"] for x in self.workers_seen()})
        self.assertEqual(self.srv.request("DELETE", "/v1/tasks/" + long_).status, 200)

    # ---- (f) -------------------------------------------------------------------------------------
    def test_2_concurrency_limit_is_shared_by_processes(self):
        lim = ("--task-limits", "noop=concurrency:1")
        w1, w2 = self.worker(*lim), self.worker(*lim)
        ids = [self.enqueue({"ms": 60}) for _ in range(10)]
        runs = []
        for t in self.wait_all(ids):
            self.assertEqual(t["state"], "succeeded", t)
            runs.append((t["result"]["started_us"], t["result"]["finished_us"], t["result"]["pid"]))
        runs.sort()
        for a, b in zip(runs, runs[1:]):
            self.assertLessEqual(a[1], b[0], "two noop runs overlapped: %r %r" % (a, b))
        # (which process runs them is not fixed: the thread that just finished one usually claims the
        # next at once, while the other process polls every 10 ms; both keep trying all along)
        self.stop_worker(w1)
        self.stop_worker(w2)

    def test_4_delayed_tasks_start_on_time_in_worker_processes(self):
        w = self.worker()
        wait_for("the worker to check in", lambda: len(self.workers_seen()) >= 1, 20)
        ids = [self.enqueue({"ms": 0}, delay_ms=d) for d in (300, 500, 700)]
        lates = []
        for t in self.wait_all(ids):
            self.assertEqual(t["state"], "succeeded", t)
            started, due = parse_time(t["started_at"]), parse_time(t["not_before"])
            self.assertGreaterEqual(started, due, t)
            lates.append(started - due)
        print("%s: delayed start late by %s ms" % (type(self).__name__, [round(x * 1000, 1) for x in lates]),
              file=sys.stderr)
        self.assertLess(max(lates), 0.1 * SLOW, lates)
        self.stop_worker(w)

    # ---- concurrent creations (the server coalesces them: pk_offload_many + enqueue_each) ----------
    def test_5_concurrent_creations_each_get_their_own_answer(self):
        threads, each = 12, 10
        results = [[] for _ in range(threads)]

        def client(k):
            for j in range(each):
                shared = j % 5 == 4
                body = {"type": "noop", "payload": {"k": k, "j": j}}
                hdrs = {"Idempotency-Key": "cc-shared-%s" % type(self).__name__} if shared else None
                r = self.srv.post("/v1/tasks", body, headers=hdrs)
                results[k].append((j, shared, r.status, r.data if r.status in (200, 201) else repr(r)))

        ts = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        ids, shared_ids, shared_created = set(), set(), 0
        for k in range(threads):
            self.assertEqual(len(results[k]), each)
            for j, shared, status, doc in results[k]:
                self.assertIn(status, (200, 201), doc)
                if shared:
                    shared_ids.add(doc["id"])
                    shared_created += status == 201
                    continue
                self.assertEqual(status, 201, doc)
                self.assertEqual(doc["payload"], {"k": k, "j": j}, "each request gets its own task back")
                self.assertEqual(self.task(doc["id"])["payload"], {"k": k, "j": j})
                ids.add(doc["id"])
        self.assertEqual(len(ids), threads * (each - each // 5), "distinct tasks")
        self.assertEqual(len(shared_ids), 1, "one task per idempotency key")
        self.assertEqual(shared_created, 1, "exactly one request created it")
        self.assertNotIn(shared_ids.pop(), ids)


def parse_time(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


class SqliteWorkers(WorkerCase, unittest.TestCase):
    """The embedded queue: DATA_DIR/queue.db shared by the server and the worker processes."""

    @classmethod
    def setUpClass(cls):
        cls.start_server()

    @classmethod
    def tearDownClass(cls):
        cls.stop_server()

    def test_0_bad_settings_are_startup_errors(self):
        for args, needle in ((["--queue-backend", "redis"], "--redis-url"),
                             (["--queue-backend", "kafka"], "sqlite or redis"),
                             (["--task-limits", "noop=concurrency:x"], "--task-limits"),
                             (["--task-limits", "noop=burst:2"], "burst needs a rate"),
                             (["--workers", "0"], "at least 1")):
            r = subprocess.run([PAKE_BIN, "worker", "--data-dir", self.data_dir] + args, capture_output=True,
                               text=True, timeout=30 * SLOW)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(needle, r.stderr, args)
        h = subprocess.run([PAKE_BIN, "worker", "--help"], capture_output=True, text=True, timeout=30 * SLOW)
        self.assertEqual(h.returncode, 0)
        self.assertIn("SIGTERM", h.stdout)
        self.assertIn("--queue-backend", h.stdout)
        self.assertIn("worker", subprocess.run([PAKE_BIN, "help"], capture_output=True, text=True).stdout)


@unittest.skipUnless(HAVE_REDIS and REDIS_QUEUE, "needs redis-server and the Redis queue backend")
class RedisWorkers(WorkerCase, unittest.TestCase):
    """Redis Streams: the server and the workers share one redis-server (and the data directory, for the
    store and the embeddings)."""

    redis = None

    @classmethod
    def queue_args(cls):
        return ["--queue-backend", "redis", "--redis-url", cls.redis.url, "--redis-breaker-wait-ms", "300"]

    @classmethod
    def setUpClass(cls):
        cls.redis = Redis().start()
        try:
            cls.start_server()
        except Exception:
            cls.redis.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.stop_server()
        finally:
            cls.redis.cleanup()

    def enqueue_when_up(self, payload):
        """Enqueues, retrying while the server's Redis connection recovers (503 is the honest answer
        during the outage)."""
        def attempt():
            r = self.srv.post("/v1/tasks", {"type": "noop", "payload": payload})
            return r.data["id"] if r.status == 201 else None
        return wait_for("an enqueue to succeed after the Redis restart", attempt, 20)

    def make_persistent(self):
        """Turns the AOF on in the running server (it rewrites the dataset into it) and waits until the
        rewrite is done, so a clean stop leaves everything on disk."""
        r = self.redis
        subprocess.run(["redis-cli", "-p", str(r.port), "CONFIG", "SET", "appendonly", "yes"], check=True,
                       capture_output=True, timeout=10)
        subprocess.run(["redis-cli", "-p", str(r.port), "CONFIG", "SET", "appendfsync", "always"], check=True,
                       capture_output=True, timeout=10)

        def rewritten():
            info = subprocess.run(["redis-cli", "-p", str(r.port), "INFO", "persistence"], capture_output=True,
                                  text=True, timeout=10).stdout
            return "aof_enabled:1" in info and "aof_rewrite_in_progress:0" in info and \
                "aof_rewrite_scheduled:0" in info
        wait_for("the AOF rewrite", rewritten, 20)
        r.persist = True

    def test_3_redis_restarts_without_then_with_persistence(self):
        w1, w2 = self.worker(), self.worker()
        for persist in (False, True):
            waiting = []
            if persist:
                # tasks that sit in Redis across the restart (delayed, so no worker claims them before)
                waiting = [self.enqueue({"ms": 5}, delay_ms=int(1500 * SLOW)) for _ in range(3)]
                self.make_persistent()
            self.redis.stop_process()
            self.redis.start()  # the same port and directory; empty unless persistent
            ids = [self.enqueue_when_up({"ms": 5}) for _ in range(5)]
            for t in self.wait_all(ids + waiting, timeout=30):
                self.assertEqual(t["state"], "succeeded", (persist, t))
                self.assertIn(t["result"]["pid"], (w1.pid, w2.pid))
            # both processes are back in the registry
            wait_for("both workers in workers_seen", lambda: {w1.pid, w2.pid} <= {
                x["pid"] for x in self.workers_seen()}, 10)
        self.stop_worker(w1)
        self.stop_worker(w2)


if __name__ == "__main__":
    main()
