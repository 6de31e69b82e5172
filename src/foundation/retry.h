/*
 * retry: when and how long to wait before trying an outbound call again.
 *
 * Policy: at most max_attempts attempts in total (the first call included). After attempt `a` fails
 * (attempts are numbered from 0), the caller sleeps a "full jitter" backoff drawn uniformly from
 * [0, min(cap, base * 2^a)): the spread keeps a fleet of clients from retrying in lock-step.
 * Defaults: max_attempts 3, base 50 ms, cap 2000 ms.
 *
 * A retry happens only when all hold: the error is retryable (err->retryable: 503, 504, 429 ... as set
 * by the layer that made it), attempts remain, the retry budget allows it, and the call can still
 * start before the deadline (now + sleep < deadline).
 *
 * Retry budget (Envoy's retry budgets / gRPC retry throttling): per dependency, counts the requests
 * (first attempts) and retries of the last `window` (default 10 s, 10 buckets, driven by the injected
 * clock). A retry is admitted only while, counting it, retries <= ratio * requests + min_retries
 * (defaults 0.2 and 10 per window). When a dependency is down, this caps the extra load that retries
 * add at ~20% instead of multiplying it by max_attempts.
 *
 * Thread-safety: policies are plain values; a budget is thread-safe (one mutex). No I/O, no logging.
 */
#ifndef PAKE_FOUNDATION_RETRY_H
#define PAKE_FOUNDATION_RETRY_H
#include "core/clock.h"
#include "core/err.h"
#include <stdbool.h>
#include <stdint.h>

/* A deadline that never expires. */
#ifndef PK_DEADLINE_NONE
#define PK_DEADLINE_NONE INT64_MAX
#endif

typedef struct pk_retry_policy {
    int max_attempts; /* total attempts, >= 1 */
    int64_t base_ms;
    int64_t cap_ms;
} pk_retry_policy;

#define PK_RETRY_POLICY_DEFAULT ((pk_retry_policy){3, 50, 2000})

/* Backoff after attempt `attempt` (0-based) failed: unit_random * min(cap, base * 2^attempt), with
 * unit_random in [0, 1). Returns nanoseconds; saturates instead of overflowing. */
int64_t pk_retry_backoff_ns(const pk_retry_policy *p, int attempt, double unit_random);

typedef struct pk_retry_budget pk_retry_budget;

typedef struct pk_retry_budget_config {
    int64_t window_ns; /* default 10 s */
    double ratio;      /* default 0.2 */
    int min_retries;   /* per window, default 10 */
} pk_retry_budget_config;

#define PK_RETRY_BUDGET_DEFAULT ((pk_retry_budget_config){10000000000LL, 0.2, 10})

typedef struct pk_retry_budget_snapshot {
    uint64_t requests, retries; /* in the current window */
    uint64_t denied_total;      /* retries refused since creation */
} pk_retry_budget_snapshot;

/* The clock must outlive the budget. Returns NULL on an invalid config (window <= 0, ratio < 0,
 * min_retries < 0). */
pk_retry_budget *pk_retry_budget_new(const pk_retry_budget_config *cfg, const pk_clock *clock);
void pk_retry_budget_free(pk_retry_budget *b);
/* Counts one request (a first attempt). */
void pk_retry_budget_note_request(pk_retry_budget *b);
/* Asks for one retry: true and counted when within budget, false (and counted as denied) otherwise. */
bool pk_retry_budget_try_retry(pk_retry_budget *b);
void pk_retry_budget_snapshot_get(pk_retry_budget *b, pk_retry_budget_snapshot *out);

/* The decision, deterministic: `attempt` is the 0-based attempt that just failed with `err`.
 * Returns true and sets *sleep_ns when the caller should sleep and try again; the budget (may be NULL =
 * unlimited) is charged one retry only when everything else allows it. */
bool pk_retry_decide(const pk_retry_policy *p, pk_retry_budget *budget, const pk_err *err, int attempt,
                     int64_t now_ns, int64_t deadline_ns, double unit_random, int64_t *sleep_ns);
/* Same with unit_random from pk_rand_unit(). */
bool pk_retry_should(const pk_retry_policy *p, pk_retry_budget *budget, const pk_err *err, int attempt,
                     int64_t now_ns, int64_t deadline_ns, int64_t *sleep_ns);

/* Runs fn(ud, attempt) until it returns NULL (success) or pk_retry_should says stop; returns NULL or
 * the last error (ownership passes to the caller; earlier errors are freed). Notes one request in the
 * budget (may be NULL). sleep_fn (NULL = nanosleep) performs the backoff; time comes from `clock`. */
pk_err *pk_retry_run(const pk_retry_policy *p, pk_retry_budget *budget, const pk_clock *clock,
                     int64_t deadline_ns, pk_err *(*fn)(void *ud, int attempt), void *ud,
                     void (*sleep_fn)(int64_t ns));
#endif
