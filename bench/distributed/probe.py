#!/usr/bin/env python3
"""Snapshots for bench/distributed/run.sh (stdlib only).

  probe.py cpu NAME=PID[,PID...] ...   CPU clock ticks used so far by each group, one "NAME TICKS" line.
      A group's ticks = utime+stime of each listed process (all its threads) and of all its live
      descendants, plus cutime+cstime of each listed process (descendants that already exited and were
      reaped, e.g. PostgreSQL backends that closed). Take one snapshot before and one after a run: the
      difference is the CPU the group used meanwhile (a descendant that starts and exits within the run
      is counted once reaped; one still alive counts from 0, which is right for a new process).
  probe.py metrics URL [URL...]        sums a few counters of the /metrics pages of several servers and
      prints "NAME VALUE" lines: L1 (pake_cache_*), L2 (pake_l2_*), store reads
      (pake_store_query_duration_seconds_count{operation="note_get"}), cache bytes and entries.
  probe.py warm BASE IDS WORDS         GET every note of IDS and every search of WORDS (as dist.lua sends
      them) once, over 4 keep-alive connections, so that a server's L1 (and Redis L2) holds all of them
      before a measured run; fails on any answer but 200.
"""
import http.client
import os
import sys
import threading
import urllib.parse
import urllib.request


def read_stat(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()  # fields from 3 (state) on; comm may hold spaces
    # rest[0] = field 3; utime = field 14, stime 15, cutime 16, cstime 17, ppid = field 4
    return {"ppid": int(rest[1]), "utime": int(rest[11]), "stime": int(rest[12]),
            "cutime": int(rest[13]), "cstime": int(rest[14])}


def cpu(groups):
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st is not None:
                stats[int(name)] = st
    children = {}
    for pid, st in stats.items():
        children.setdefault(st["ppid"], []).append(pid)
    for spec in groups:
        name, _, pids = spec.partition("=")
        total = 0
        for root in (int(p) for p in pids.split(",") if p):
            if root not in stats:
                continue
            total += stats[root]["cutime"] + stats[root]["cstime"]
            todo = [root]
            while todo:
                pid = todo.pop()
                total += stats[pid]["utime"] + stats[pid]["stime"]
                todo.extend(children.get(pid, []))
        print(f"{name} {total}")


WANTED = {
    "pake_cache_hits_total": "l1_hits",
    "pake_cache_misses_total": "l1_misses",
    "pake_cache_evictions_total": "l1_evictions",
    "pake_cache_bytes": "l1_bytes",
    "pake_cache_entries": "l1_entries",
    "pake_l2_hits_total": "l2_hits",
    "pake_l2_misses_total": "l2_misses",
    "pake_l2_errors_total": "l2_errors",
    'pake_store_query_duration_seconds_count{operation="note_get"}': "store_note_get",
}


def metrics(urls):
    sums = {v: 0.0 for v in WANTED.values()}
    for url in urls:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode("utf-8")
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            if key in WANTED:
                sums[WANTED[key]] += float(value)
    for k, v in sums.items():
        print(f"{k} {v:.0f}")


def warm(base, ids_file, words_file):
    u = urllib.parse.urlsplit(base)
    with open(ids_file, encoding="utf-8") as f:
        paths = ["/v1/notes/" + ln.strip() for ln in f if ln.strip()]
    with open(words_file, encoding="utf-8") as f:
        paths += ["/v1/search?q=" + urllib.parse.quote(ln.strip(), safe="-._~") + "&limit=20"
                  for ln in f if ln.strip()]
    failures = []

    def worker(part):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        for path in part:
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                failures.append(f"{path}: HTTP {r.status}")
        conn.close()

    threads = [threading.Thread(target=worker, args=(paths[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for msg in failures[:5]:
        print(f"warm: {msg}", file=sys.stderr)
    return 1 if failures or len(paths) == 0 else 0


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("cpu", "metrics", "warm"):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "cpu":
        cpu(sys.argv[2:])
    elif sys.argv[1] == "metrics":
        metrics(sys.argv[2:])
    else:
        if len(sys.argv) != 5:
            print(__doc__, file=sys.stderr)
            return 2
        return warm(*sys.argv[2:5])
    return 0


if __name__ == "__main__":
    sys.exit(main())
