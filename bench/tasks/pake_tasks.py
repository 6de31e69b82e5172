#!/usr/bin/env python3
"""PAKE half of bench/tasks/run.sh (stdlib only): enqueue N no-op tasks over HTTP, wait until all
succeeded, and compute the figures from the tasks' own timestamps.

usage: pake_tasks.py BASE_URL N CONNS DEADLINE_S WRK_BIN LUA_SCRIPT

1. Enqueue: wrk (one thread, CONNS keep-alive connections, enqueue.lua) POSTs exactly N
   `{"type":"noop","payload":{"ms":0}}` to /v1/tasks; the script writes a mark file once the N
   answers are in and this driver then interrupts wrk (wrk always runs for its -d duration).
2. Completion: GET /v1/queues every 100 ms until the succeeded count reaches N (or failed/dead tasks
   make that impossible, or the deadline passes). The polling only decides when to stop: no figure
   depends on its period. Then the file $BENCH_DONE_MARK (when set) is created: run.sh stops counting
   CPU there, before the tasks are read.
3. Figures, from the tasks (GET /v1/tasks?state=succeeded, pages of 100 through the cursor):
   enqueue/s = N / (last created_at - first created_at); e2e tasks/s = N / (last finished_at - first
   created_at); latency = finished_at - created_at per task (p50, p99). The timestamps are the
   server's, with millisecond resolution.
Prints one JSON object on stdout; exit status 1 when the run is incomplete."""
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import datetime, timezone

from stats import summary


def ts_ms(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp() * 1e3


class Client:
    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.conn = None

    def get(self, path):
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                self.conn.request("GET", path)
                r = self.conn.getresponse()
                body = r.read()
                if r.status != 200:
                    raise RuntimeError("GET %s: HTTP %d %s" % (path, r.status, body[:200]))
                return json.loads(body)
            except (OSError, http.client.HTTPException):
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def counts(c):
    q = c.get("/v1/queues")["data"]["queues"]
    total = {}
    for row in q:
        for k, v in row["states"].items():
            total[k] = total.get(k, 0) + v
    return total


def main():
    base, n, conns, deadline_s, wrk, lua = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(
        sys.argv[4]), sys.argv[5], sys.argv[6]
    c = Client(base)
    deadline = time.monotonic() + deadline_s
    mark = tempfile.NamedTemporaryFile(prefix="pake-bench-tasks-mark.", delete=False).name
    os.unlink(mark)
    out = {"n": n, "ok": False}
    w = subprocess.Popen([wrk, "-t1", "-c%d" % conns, "-d%ds" % int(deadline_s + 5), "--timeout", "10s", "-s", lua,
                          base, "--", str(n), mark], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # enqueue phase: until the script wrote its mark (all N answers in) or wrk died
        while not os.path.exists(mark) and w.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if w.poll() is None:
            w.send_signal(signal.SIGINT)
        try:
            wrk_out = w.communicate(timeout=15)[0]
        except subprocess.TimeoutExpired:
            w.kill()
            wrk_out = w.communicate()[0]
        line = next((ln for ln in wrk_out.splitlines() if ln.startswith("BENCH ")), "")
        fields = dict(kv.split("=", 1) for kv in line.split()[1:])
        out["wrk"] = line
        if not os.path.exists(mark) or fields.get("ok") != str(n):
            out["error"] = "enqueue incomplete: %s" % (line or wrk_out[-500:])
            print(json.dumps(out))
            return 1
        # completion phase
        done = {}
        while time.monotonic() < deadline:
            done = counts(c)
            if done.get("succeeded", 0) >= n or done.get("succeeded", 0) + done.get("dead", 0) + done.get(
                    "failed", 0) + done.get("cancelled", 0) >= n:
                break
            time.sleep(0.1)
        out["states"] = done
        if os.environ.get("BENCH_DONE_MARK"):
            open(os.environ["BENCH_DONE_MARK"], "w").close()
        if sum(done.values()) != n:
            out["error"] = "the server holds %d tasks, not %d (a fresh data dir / Redis is expected)" % (
                sum(done.values()), n)
            print(json.dumps(out))
            return 1
        if done.get("succeeded", 0) < n:
            out["error"] = "only %d of %d tasks succeeded before the deadline" % (done.get("succeeded", 0), n)
            print(json.dumps(out))
            return 1
        # figures from the tasks' timestamps
        created, finished, cursor = [], [], None
        while True:
            page = c.get("/v1/tasks?state=succeeded&limit=100" + ("&cursor=" + urllib.parse.quote(cursor)
                                                                    if cursor else ""))
            for t in page["data"]:
                created.append(ts_ms(t["created_at"]))
                finished.append(ts_ms(t["finished_at"]))
            cursor = page["meta"]["pagination"]["next_cursor"]
            if not cursor:
                break
        out.update(summary(created, finished))
        out["ok"] = out["count"] == n
        print(json.dumps(out))
        return 0 if out["ok"] else 1
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
        if os.path.exists(mark):
            os.unlink(mark)


if __name__ == "__main__":
    sys.exit(main())
