/*
 * breaker: a circuit breaker per dependency (store, Redis, AI provider, webhook target), with the
 * semantics of Resilience4j's CircuitBreaker.
 *
 * Model
 *   CLOSED     every call is permitted; outcomes go into a sliding window. Once the window holds at
 *              least `minimum_calls` outcomes and the failure rate >= failure_rate_threshold or the
 *              slow-call rate >= slow_call_rate_threshold, the breaker trips to OPEN.
 *   OPEN       every call is rejected (the caller answers 503 with Retry-After) until wait_in_open has
 *              passed; the next pk_breaker_allow then moves to HALF_OPEN (lazy: driven by the clock
 *              when somebody asks, no timer thread).
 *   HALF_OPEN  at most permitted_calls_in_half_open probes are handed out. When all of them have
 *              reported, the probe rates decide: over a threshold -> OPEN again, else CLOSED with a
 *              fresh window. With max_wait_in_half_open > 0, a breaker still half-open after that long
 *              (probes hanging or never reported) goes back to OPEN; 0 waits for all probes.
 *   FORCED_OPEN operator state: rejects everything until pk_breaker_reset.
 *   DISABLED    operator state: permits everything and records nothing until pk_breaker_reset.
 *
 * Windows: COUNT keeps the outcomes of the last `window_size` calls (a ring); TIME keeps the calls of
 * the last `window_size` seconds in one bucket per second, whole buckets expiring as the clock moves.
 * For a COUNT window the effective minimum is min(minimum_calls, window_size), as in Resilience4j.
 *
 * Outcomes: SUCCESS and FAILURE are recorded; IGNORED (client errors that say nothing about the
 * dependency's health: 4xx, validation, not found) is not recorded, and in HALF_OPEN it gives the probe
 * permit back. A call is slow when its duration is > slow_call_duration; slowness is tracked for
 * successes and failures alike. slow_call_rate_threshold defaults to 100%, i.e. it only trips when
 * every call in a full window is slow (Resilience4j's default; set it lower to use it).
 *
 * Permits: pk_breaker_allow fills a pk_breaker_permit that must be passed back to pk_breaker_record
 * exactly once when allowed. A permit remembers the state epoch it was issued in: a result that
 * arrives after the breaker changed state (e.g. a slow call issued while CLOSED finishing while
 * HALF_OPEN) is counted in the totals but does not touch the current window or the probes. This is a
 * deliberate improvement over Resilience4j, where such late results count as probes.
 *
 * Time: every decision uses the injected pk_clock (tests use a fake clock). No I/O, no logging: state
 * changes are reported through the on_transition callback, called after the internal lock has been
 * released (so the callback may call back into the breaker; transitions from concurrent threads may be
 * reported slightly out of order).
 *
 * Thread-safety: all functions on a pk_breaker are thread-safe (one mutex, short critical sections).
 * A breaker owns a copy of its name; the clock must outlive it.
 */
#ifndef PAKE_FOUNDATION_BREAKER_H
#define PAKE_FOUNDATION_BREAKER_H
#include "core/clock.h"
#include "core/err.h"
#include "core/json.h"
#include <stdbool.h>
#include <stdint.h>

typedef enum {
    PK_BREAKER_CLOSED,
    PK_BREAKER_OPEN,
    PK_BREAKER_HALF_OPEN,
    PK_BREAKER_FORCED_OPEN,
    PK_BREAKER_DISABLED,
} pk_breaker_state;

typedef enum { PK_WINDOW_COUNT, PK_WINDOW_TIME } pk_breaker_window;

typedef enum { PK_OUTCOME_SUCCESS, PK_OUTCOME_FAILURE, PK_OUTCOME_IGNORED } pk_breaker_outcome;

typedef void (*pk_breaker_transition_fn)(void *ud, const char *name, pk_breaker_state from,
                                         pk_breaker_state to);

typedef struct pk_breaker_config {
    const char *name;                       /* copied; [A-Za-z0-9_.-]+ recommended (used in URLs) */
    pk_breaker_window window_type;          /* default COUNT */
    int window_size;                        /* calls (COUNT) or seconds (TIME); default 100; max 100000 */
    int minimum_calls;                      /* default 20 */
    double failure_rate_threshold;          /* percent, (0, 100]; default 50 */
    int64_t slow_call_duration_ns;          /* default 2 s */
    double slow_call_rate_threshold;        /* percent, (0, 100]; default 100 */
    int64_t wait_in_open_ns;                /* default 10 s */
    int permitted_calls_in_half_open;       /* default 5 */
    int64_t max_wait_in_half_open_ns;       /* default 0 = wait for all probes */
    pk_breaker_transition_fn on_transition; /* optional */
    void *on_transition_ud;
} pk_breaker_config;

/* Fills `cfg` with the defaults above and the given name (not copied until pk_breaker_new). */
void pk_breaker_config_init(pk_breaker_config *cfg, const char *name);

typedef struct pk_breaker pk_breaker;

/* Handed out by pk_breaker_allow, given back to pk_breaker_record. Plain value, no ownership. */
typedef struct pk_breaker_permit {
    uint64_t epoch;         /* state epoch the permit was issued in */
    pk_breaker_state state; /* state it was issued in */
    int64_t retry_after_ms; /* when rejected: how long the caller should wait (>= 0) */
} pk_breaker_permit;

typedef struct pk_breaker_snapshot {
    pk_breaker_state state;
    double failure_rate;       /* percent over the current window, -1 below minimum_calls */
    double slow_call_rate;     /* percent, -1 below minimum_calls */
    int buffered_calls;        /* outcomes in the current window (or probes recorded when HALF_OPEN) */
    int failed_calls;          /* failures in the current window */
    int slow_calls;            /* slow calls in the current window */
    int half_open_outstanding; /* probes handed out and not yet reported */
    /* Totals since creation (never reset; fit for Prometheus counters). successful + failed + ignored
     * = results reported; slow counts the subset of successful + failed that was slow. */
    uint64_t successful, failed, slow, ignored, rejected;
    uint64_t transitions;
    int64_t time_in_state_ns;
} pk_breaker_snapshot;

/* Validates the config and creates a breaker in CLOSED. Errors: "invalid_config" (500). */
pk_err *pk_breaker_new(const pk_breaker_config *cfg, const pk_clock *clock, pk_breaker **out);
void pk_breaker_free(pk_breaker *b);

const char *pk_breaker_name(const pk_breaker *b);
const pk_breaker_config *pk_breaker_get_config(const pk_breaker *b); /* name points at the copy */

/* Asks to make a call. true: go ahead, then report with pk_breaker_record(b, permit, ...). false:
 * rejected (counted); permit->retry_after_ms says when to come back. May move OPEN -> HALF_OPEN or
 * HALF_OPEN -> OPEN (max wait exceeded). */
bool pk_breaker_allow(pk_breaker *b, pk_breaker_permit *permit);

/* Reports the result of a permitted call; duration_ns decides slowness. */
void pk_breaker_record(pk_breaker *b, const pk_breaker_permit *permit, pk_breaker_outcome outcome,
                       int64_t duration_ns);

/* Maps an error to an outcome: NULL -> SUCCESS; client-side categories (client, conflict, limit)
 * -> IGNORED; unavailable, timeout and internal -> FAILURE. */
pk_breaker_outcome pk_breaker_outcome_of(const pk_err *err);

/* Milliseconds a rejected caller should wait, for the current state: remaining open time in OPEN,
 * wait_in_open in FORCED_OPEN, 1000 in HALF_OPEN (probes busy), 0 otherwise. */
int64_t pk_breaker_retry_after_ms(pk_breaker *b);

/* Operator actions. Each counts as a transition when the state changes; the window is cleared. */
void pk_breaker_force_open(pk_breaker *b);
void pk_breaker_disable(pk_breaker *b);
void pk_breaker_reset(pk_breaker *b); /* back to CLOSED with an empty window */

pk_breaker_state pk_breaker_get_state(pk_breaker *b);
void pk_breaker_snapshot_get(pk_breaker *b, pk_breaker_snapshot *out);
/* "closed", "open", "half_open", "forced_open", "disabled". */
const char *pk_breaker_state_name(pk_breaker_state s);

/* Writes one breaker as a JSON object: {"name","state","failure_rate","slow_call_rate",
 * "buffered_calls","failed_calls","slow_calls","time_in_state_ms","transitions",
 * "calls":{"success","failure","slow","ignored","rejected"},"config":{...}}. Rates below the minimum
 * are written as null. */
void pk_breaker_write_json(pk_breaker *b, pk_jw *w);

/*
 * Registry: breakers by name, for the admin endpoints (GET /v1/admin/breakers,
 * POST /v1/admin/breakers/{name}/force-open|disable|reset) and metrics. The registry owns the breakers
 * added to it and frees them in pk_breaker_registry_free. Thread-safe; breakers are never removed, so a
 * pointer returned by _get stays valid until the registry is freed.
 */
typedef struct pk_breaker_registry pk_breaker_registry;

pk_breaker_registry *pk_breaker_registry_new(void);
void pk_breaker_registry_free(pk_breaker_registry *r);
/* Takes ownership of `b` even on error. Errors: "conflict" (409) when the name is taken. */
pk_err *pk_breaker_registry_add(pk_breaker_registry *r, pk_breaker *b);
pk_breaker *pk_breaker_registry_get(pk_breaker_registry *r, const char *name, size_t namelen);
size_t pk_breaker_registry_count(pk_breaker_registry *r);
/* Calls fn for each breaker in insertion order (under the registry lock: do not add from fn). */
void pk_breaker_registry_each(pk_breaker_registry *r, void (*fn)(void *ud, pk_breaker *b), void *ud);
/* Writes a JSON array of pk_breaker_write_json objects, in insertion order. */
void pk_breaker_registry_write_json(pk_breaker_registry *r, pk_jw *w);
/* Applies an admin action ("force-open", "disable", "reset") to the named breaker.
 * Errors: "not_found" (404) for an unknown breaker, "bad_request" (400) for an unknown action. */
pk_err *pk_breaker_registry_apply(pk_breaker_registry *r, const char *name, size_t namelen,
                                  const char *action);
#endif
