"""Celery reference of bench/tasks/run.sh (Debian python3-celery 5.2 and python3-redis: run it with
/usr/bin/python3, not a virtualenv's interpreter).

The module is both the Celery app (the worker imports it: `celery -A celery_noop worker ...`) and the
producer (`python3 celery_noop.py N THREADS DEADLINE_S`). Broker: Redis at $BENCH_REDIS_URL; result
backend: none (task_ignore_result). The task `bench.noop(sent_ms)` does no work; it RPUSHes
"<sent_ms> <finish_ms>" to the Redis list "bench:done", which stands in for the result backend and lets
the producer know when all tasks ran and how long each took (the same RPUSH a Redis result backend
would do, minus the PUBLISH). Everything else is Celery's default (prefetch multiplier 4, early ack).

The producer sends N tasks with apply_async from THREADS threads (Celery's producer pool is shared
by the threads; under the GIL more threads do not send faster), stamping each with time.time() in ms
just before the send; then it polls LLEN every 50 ms until N entries are in (bounded by DEADLINE_S),
creates the file $BENCH_DONE_MARK when set (run.sh stops counting CPU there), reads them and prints one JSON object with the figures of stats.py. A worker that finished starting
RPUSHes its pid to "bench:ready" (worker_ready signal); the driver waits for those."""
import json
import os
import sys
import threading
import time

import redis
from celery import Celery
from celery.signals import worker_ready

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("bench_noop", broker=REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    task_default_queue="bench-noop",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_client = {"pid": None, "r": None}


def _redis():
    """One client per process (prefork children get their own after the fork); thread-safe."""
    if _client["pid"] != os.getpid():
        _client["r"] = redis.Redis.from_url(REDIS_URL)
        _client["pid"] = os.getpid()
    return _client["r"]


@app.task(name="bench.noop")
def noop(sent_ms):
    _redis().rpush("bench:done", "%.3f %.3f" % (sent_ms, time.time() * 1e3))


@worker_ready.connect
def _ready(**_):
    _redis().rpush("bench:ready", str(os.getpid()))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    from stats import summary

    n, threads, deadline_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    deadline = time.monotonic() + deadline_s
    r = _redis()
    out = {"n": n, "ok": False}
    errors = []

    def send(count):
        try:
            for _ in range(count):
                noop.apply_async(args=[time.time() * 1e3])
        except Exception as e:  # reported, the run then fails on the count
            errors.append(repr(e))

    t0 = time.monotonic()
    parts = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
    ths = [threading.Thread(target=send, args=(c,)) for c in parts]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    out["client_enqueue_s"] = time.monotonic() - t0
    if errors:
        out["error"] = "send failed: " + errors[0]
    done = 0
    while time.monotonic() < deadline:
        done = r.llen("bench:done")
        if done >= n:
            break
        time.sleep(0.05)
    out["done"] = done
    if os.environ.get("BENCH_DONE_MARK"):
        open(os.environ["BENCH_DONE_MARK"], "w").close()
    if done < n:
        out.setdefault("error", "only %d of %d tasks ran before the deadline" % (done, n))
    else:
        sent, fin = [], []
        for item in r.lrange("bench:done", 0, -1):
            a, b = item.split()
            sent.append(float(a))
            fin.append(float(b))
        out.update(summary(sent, fin))
        out["ok"] = out["count"] == n and not errors
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
