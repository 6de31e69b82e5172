#!/usr/bin/env python3
"""Load notes into a running PAKE server over HTTP (stdlib only).

Reads a JSON-lines file (one note per line: {title, content, tags, confidence_score}), sends each line
as is with `POST /v1/notes` over a few keep-alive connections in parallel, expects 201 with
{"data": {"id": ...}}, and writes the created ids (one per line, in input order) to --out.

Retries a request on a dropped connection (reconnects) up to --retries times; any non-201 answer is a
failure. Exit status: 0 when every note was created, 1 otherwise (the ids file then holds the ones that
were). Prints one summary line: created, failed, seconds, notes/s.
"""
import argparse
import http.client
import json
import queue
import sys
import threading
import time
import urllib.parse


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--input", required=True, help="notes JSON-lines file")
    p.add_argument("--out", required=True, help="file to write created ids to")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--limit", type=int, default=0, help="load only the first N notes (0: all)")
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    p.add_argument("--path", default="/v1/notes")
    return p.parse_args()


class Loader:
    def __init__(self, args, lines):
        u = urllib.parse.urlsplit(args.base)
        if u.scheme != "http" or not u.hostname:
            raise SystemExit(f"--base must be http://host:port, got {args.base!r}")
        self.host, self.port = u.hostname, u.port or 80
        self.args = args
        self.lines = lines
        self.ids = [None] * len(lines)
        self.errors = []
        self.lock = threading.Lock()
        self.work = queue.SimpleQueue()
        for i in range(len(lines)):
            self.work.put(i)

    def connect(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=self.args.timeout)

    def post(self, conn, body):
        conn.request("POST", self.args.path, body=body,
                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data

    def worker(self):
        holder = [self.connect()]  # the connection, replaced after a failure
        try:
            while True:
                try:
                    i = self.work.get_nowait()
                except queue.Empty:
                    return
                self.one(holder, i)
        finally:
            holder[0].close()

    def one(self, holder, i):
        body = self.lines[i].encode("utf-8")
        last = None
        for _attempt in range(self.args.retries + 1):
            try:
                status, data = self.post(holder[0], body)
            except (OSError, http.client.HTTPException) as e:
                last = f"{type(e).__name__}: {e}"
                holder[0].close()
                holder[0] = self.connect()
                continue
            if status != 201:
                last = f"HTTP {status}: {data[:200]!r}"
                break
            try:
                note_id = json.loads(data)["data"]["id"]
            except (ValueError, KeyError, TypeError) as e:
                last = f"bad 201 body ({e}): {data[:200]!r}"
                break
            self.ids[i] = str(note_id)
            return
        with self.lock:
            self.errors.append((i, last))

    def run(self):
        threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(max(1, self.args.threads))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def main():
    args = parse_args()
    with open(args.input, encoding="utf-8") as f:
        lines = [ln.rstrip("\n") for ln in f if ln.strip()]
    if args.limit > 0:
        lines = lines[: args.limit]
    loader = Loader(args, lines)
    t0 = time.monotonic()
    loader.run()
    secs = time.monotonic() - t0
    created = [x for x in loader.ids if x is not None]
    with open(args.out, "w", encoding="utf-8") as f:
        for x in created:
            f.write(x + "\n")
    for i, err in sorted(loader.errors)[:5]:
        print(f"load_notes: line {i + 1}: {err}", file=sys.stderr)
    rate = len(created) / secs if secs > 0 else 0.0
    print(f"load_notes: created={len(created)} failed={len(loader.errors)} seconds={secs:.2f} notes_per_s={rate:.0f}")
    return 0 if not loader.errors else 1


if __name__ == "__main__":
    sys.exit(main())
