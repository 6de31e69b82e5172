"""Figures shared by the drivers of bench/tasks/run.sh, computed the same way for every system from
per-task enqueue and finish times in milliseconds (epoch):

  enqueue_per_s = N / (last enqueue - first enqueue)
  e2e_per_s     = N / (last finish - first enqueue)        (first task in to last task done)
  p50_ms/p99_ms = nearest-rank percentiles of (finish - enqueue) over the N tasks"""
import math


def pct(sorted_values, p):
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(p * len(sorted_values)) - 1)]


def summary(enqueued_ms, finished_ms):
    n = len(enqueued_ms)
    if n == 0 or len(finished_ms) != n:
        return {"count": n}
    first, last_in, last_out = min(enqueued_ms), max(enqueued_ms), max(finished_ms)
    lat = sorted(f - e for e, f in zip(enqueued_ms, finished_ms))
    return {
        "count": n,
        "enqueue_s": (last_in - first) / 1e3,
        "e2e_s": (last_out - first) / 1e3,
        "enqueue_per_s": n / max(last_in - first, 1.0) * 1e3,
        "e2e_per_s": n / max(last_out - first, 1.0) * 1e3,
        "p50_ms": pct(lat, 0.50),
        "p99_ms": pct(lat, 0.99),
        "max_ms": lat[-1],
    }
