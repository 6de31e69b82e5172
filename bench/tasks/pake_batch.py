#!/usr/bin/env python3
"""bench/tasks/pake_batch.py URL N BULK: the enqueue-only batch figure of bench/tasks/run.sh, PAKE's
analogue of BullMQ's addBulk: N no-op tasks POSTed to /v1/tasks/batch in batches of BULK, one request
in flight (like produce.mjs's addBulk loop), on one keep-alive connection; the rate is client-side,
first request sent to last answer in. run.sh stops the worker processes first, so that, like
BullMQ's, the tasks are only enqueued. Every answer must be 201 with BULK tasks. Prints one JSON
object: {"bulk", "bulk_enqueue_per_s", "ok"} (stdlib only)."""
import http.client
import json
import sys
import time
import urllib.parse


def main():
    url, n, bulk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    out = {"bulk": bulk, "ok": False}
    t0 = time.monotonic()
    sent = 0
    while sent < n:
        k = min(bulk, n - sent)
        body = json.dumps({"tasks": [{"type": "noop", "queue": "bench-bulk", "payload": {"ms": 0}}] * k})
        conn.request("POST", "/v1/tasks/batch", body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status != 201 or len(json.loads(data)["data"]) != k:
            out["error"] = "status %d: %s" % (r.status, data[:200].decode("utf-8", "replace"))
            print(json.dumps(out))
            return 1
        sent += k
    out["bulk_enqueue_per_s"] = n / (time.monotonic() - t0)
    out["ok"] = True
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
