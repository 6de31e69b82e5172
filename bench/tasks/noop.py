#!/usr/bin/env python3
"""End-to-end no-op task throughput and latency on the embedded queue, quick and without references
(the comparison with BullMQ and Celery against one Redis is bench/tasks/run.sh). Starts `pake serve` on a free loopback port with
a temporary data dir, enqueues N noop tasks over one keep-alive HTTP connection (enqueue rate), waits
until all succeeded (end-to-end throughput), and prints the queue latency from the tasks' own
timestamps (created -> started, created -> finished).

usage: bench/tasks/noop.py [N] [workers]     (PAKE_BIN defaults to build/pake)"""
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))
from pake_harness import Server  # noqa: E402
from datetime import datetime, timezone  # noqa: E402


def ts(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    workers = sys.argv[2] if len(sys.argv) > 2 else "2"
    srv = Server(["--workers", workers, "--no-access-log", "--no-task-auto-embed"]).start()
    try:
        t0 = time.monotonic()
        for _ in range(n):
            r = srv.post("/v1/tasks", json_body={"type": "noop"})
            assert r.status == 201, r
        t1 = time.monotonic()
        while True:
            q = srv.get("/v1/queues").json["data"]["queues"]
            done = sum(row["states"]["succeeded"] for row in q)
            if done >= n:
                break
            time.sleep(0.01)
        t2 = time.monotonic()
        waits, totals, cursor = [], [], None
        while True:
            page = srv.get("/v1/tasks?limit=100" + ("&cursor=" + cursor if cursor else "")).json
            for t in page["data"]:
                waits.append(ts(t["started_at"]) - ts(t["created_at"]))
                totals.append(ts(t["finished_at"]) - ts(t["created_at"]))
            cursor = page["meta"]["pagination"]["next_cursor"]
            if not cursor:
                break
        print("tasks %d, workers %s: enqueue %.0f/s (one client, sequential HTTP); end to end %.0f tasks/s "
              "(first enqueue to last success)" % (n, workers, n / (t1 - t0), n / (t2 - t0)))
        print("created->started ms: p50 %.1f p99 %.1f; created->finished ms: p50 %.1f p99 %.1f" % (
            statistics.median(waits) * 1e3, sorted(waits)[int(len(waits) * 0.99) - 1] * 1e3,
            statistics.median(totals) * 1e3, sorted(totals)[int(len(totals) * 0.99) - 1] * 1e3))
    finally:
        srv.stop()
        srv.cleanup()


if __name__ == "__main__":
    main()
