/*
 * bulkhead: caps the number of concurrent calls into one dependency, so that a slow dependency ties up
 * at most max_concurrent offload threads instead of all of them.
 *
 * Model: a counting semaphore with a bounded wait. pk_bulkhead_enter takes a slot if one is free;
 * otherwise it waits on a condition variable for up to min(max_wait, time left to the deadline). If no
 * slot frees up in time it fails with "bulkhead_full" (503, retryable, Retry-After: 1). max_wait 0
 * means fail at once when full. Every successful enter must be paired with exactly one
 * pk_bulkhead_leave. Waiters are woken one per freed slot; the order is not strictly FIFO (a newcomer
 * can take a slot before a waiter wakes up), which is fine for load shedding.
 *
 * Time: waiting is real (pthread_cond_timedwait on CLOCK_MONOTONIC); deadlines are pk_mono_ns()
 * values (PK_DEADLINE_NONE for none). No I/O, no logging.
 *
 * Thread-safety: all functions are thread-safe. The bulkhead owns a copy of its name. Free it only
 * when no thread is inside or waiting.
 */
#ifndef PAKE_FOUNDATION_BULKHEAD_H
#define PAKE_FOUNDATION_BULKHEAD_H
#include "core/err.h"
#include <stdint.h>

#ifndef PK_DEADLINE_NONE
#define PK_DEADLINE_NONE INT64_MAX /* same as in retry.h */
#endif

typedef struct pk_bulkhead pk_bulkhead;

typedef struct pk_bulkhead_snapshot {
    int max_concurrent;
    int in_use;
    int waiting;
    uint64_t entered_total;  /* successful enters since creation */
    uint64_t rejected_total; /* bulkhead_full errors since creation */
} pk_bulkhead_snapshot;

/* max_concurrent >= 1, max_wait_ms >= 0; returns NULL on invalid arguments. */
pk_bulkhead *pk_bulkhead_new(const char *name, int max_concurrent, int64_t max_wait_ms);
void pk_bulkhead_free(pk_bulkhead *b);
const char *pk_bulkhead_name(const pk_bulkhead *b);

/* Takes a slot, waiting up to min(max_wait, deadline_ns - now) (deadline on pk_mono_ns). NULL on
 * success; otherwise a "bulkhead_full" error (503, retryable, retry_after_s 1) the caller owns. */
pk_err *pk_bulkhead_enter(pk_bulkhead *b, int64_t deadline_ns);
/* Gives the slot back and wakes one waiter. */
void pk_bulkhead_leave(pk_bulkhead *b);
void pk_bulkhead_snapshot_get(pk_bulkhead *b, pk_bulkhead_snapshot *out);
#endif
