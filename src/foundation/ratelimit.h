/*
 * ratelimit: request rate limits with GCRA (the Generic Cell Rate Algorithm, as in redis-cell), behind
 * a small interface so the in-process limiter and a Redis limiter (shared by all instances) are
 * interchangeable.
 *
 * Model (GCRA). A class allows `rate` requests per `period` with a burst of `burst`:
 *   T   = period / rate          emission interval (integer ns, rounded down)
 *   tau = T * burst              burst tolerance
 * Each key has one number, its theoretical arrival time TAT (a fresh or idle key has TAT <= now).
 * A request at `now` computes tat = max(TAT, now) and new = tat + T; it is allowed iff
 * new - tau <= now, and then TAT := new. So a fresh key can make exactly `burst` requests at once and
 * then one every T; over any interval of length d starting from a full bucket at most
 * burst + floor(d / T) requests pass. The decision reports:
 *   limit          = burst (the most requests possible at once)
 *   remaining      = floor((tau - (TAT - now)) / T)  requests that would pass right now
 *   reset_after    = TAT - now  until the key is back to a full burst (equivalent to a fresh key)
 *   retry_after    = when denied: new - tau - now, until the next request would pass; 0 when allowed
 *
 * Headers (draft-ietf-httpapi-ratelimit-headers-09, structured fields, RFC 8941 lists of items whose
 * value is an sf-string naming the policy):
 *   RateLimit-Policy: "read";q=100;w=1     quota q requests per window of w seconds (the class's
 *                                           sustained rate: q = rate, w = period in seconds; a period
 *                                           that is not a whole number of seconds is rounded up to
 *                                           w and q scaled down proportionally)
 *   RateLimit: "read";r=42;t=1             r = remaining, t = ceil(reset_after) seconds (time until the
 *                                           quota is fully restored)
 * A denied request also gets Retry-After: ceil(retry_after) seconds (>= 1), see pk_rate_retry_after_s.
 *
 * Keys: a limiter keeps state per (class name, key), so one key (an IP, a principal) can be limited in
 * several classes independently.
 *
 * Thread-safety: decide may be called from any thread concurrently; destroy only when no call is in
 * flight. Implementations never log.
 */
#ifndef PAKE_FOUNDATION_RATELIMIT_H
#define PAKE_FOUNDATION_RATELIMIT_H
#include "core/clock.h"
#include "core/err.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pk_rate_class {
    const char *name;  /* policy name in the headers, e.g. "read"; not copied */
    int64_t rate;      /* requests per period, >= 1 */
    int64_t period_ns; /* > 0, at most 1 year */
    int64_t burst;     /* requests allowed at once, >= 1, <= 1e9 */
} pk_rate_class;

typedef struct pk_rate_decision {
    bool allowed;
    int64_t limit;
    int64_t remaining;
    int64_t reset_after_ns;
    int64_t retry_after_ns;
} pk_rate_decision;

/* Checks a class's numbers. Errors: "invalid_config" (500). */
pk_err *pk_rate_class_check(const pk_rate_class *cls);

/* One GCRA step on a stored TAT (pass INT64_MIN, or any value <= now, for a fresh key). Updates *tat
 * only when allowed. Pure function; the class must be valid. Shared by every implementation. */
void pk_gcra(const pk_rate_class *cls, int64_t *tat, int64_t now_ns, pk_rate_decision *out);

/* ---- the limiter interface ---- */

/* An implementation embeds `pk_limiter` as its first member and points ops at its table. */
typedef struct pk_limiter_ops pk_limiter_ops;
typedef struct pk_limiter {
    const pk_limiter_ops *ops;
} pk_limiter;

struct pk_limiter_ops {
    const char *kind; /* "local", "redis" */
    /* Decides one request for `key` in class `cls` at `now_ns` (monotonic for the local limiter; a
     * Redis limiter may use the Redis server's clock instead). Errors (backend unreachable, invalid
     * class) leave *out unspecified: the caller chooses to fail open or closed. */
    pk_err *(*decide)(pk_limiter *l, const char *key, size_t keylen, const pk_rate_class *cls, int64_t now_ns,
                      pk_rate_decision *out);
    void (*destroy)(pk_limiter *l);
};

static inline pk_err *pk_limiter_decide(pk_limiter *l, const char *key, size_t keylen,
                                        const pk_rate_class *cls, int64_t now_ns, pk_rate_decision *out)
{
    return l->ops->decide(l, key, keylen, cls, now_ns, out);
}

static inline void pk_limiter_free(pk_limiter *l)
{
    if (l) l->ops->destroy(l);
}

/* ---- in-process implementation ---- */

#define PK_LIMITER_DEFAULT_MAX_KEYS 100000

/*
 * A sharded hash table (16 shards, each with its own mutex) from a 128-bit keyed hash of
 * (class name, key) to the key's TAT. Keys themselves are not stored: an entry is 24 bytes, and the
 * table is allocated once, so memory is fixed at creation (pk_limiter_local_memory). The hash is
 * SipHash-2-4 with a random key per limiter, so clients cannot craft colliding keys; an accidental
 * collision of 128-bit hashes is negligible.
 *
 * Bounded: at most max_keys entries (0 = PK_LIMITER_DEFAULT_MAX_KEYS; values below 16 are raised to
 * 16), max_keys / 16 per shard. An entry whose TAT is in the past is in the same state as a fresh key,
 * so it can be dropped at any time without changing any decision: such entries are removed lazily (an
 * insert into a full shard first sweeps a few slots) and by pk_limiter_local_sweep. When a shard is
 * full of live entries, the entry with the oldest TAT among a small random sample is evicted. An
 * evicted key then behaves like a fresh key and gets a full burst again: eviction can only make the
 * limiter more permissive, never block a client that should pass, and only happens under a flood of
 * distinct keys (size max_keys above the real client population).
 *
 * The clock is used by pk_limiter_local_sweep only; decide uses its now_ns argument.
 */
pk_limiter *pk_limiter_local_new(size_t max_keys, const pk_clock *clock);

/* Introspection for tests and metrics (all zero for a limiter that is not local). Thread-safe. */
typedef struct pk_limiter_local_stats {
    size_t entries;     /* keys with state */
    size_t max_keys;    /* effective bound */
    size_t memory;      /* bytes allocated, constant after creation */
    uint64_t evictions; /* live entries evicted because a shard was full */
    uint64_t expired;   /* idle entries removed (lazily or by sweeps) */
} pk_limiter_local_stats;

void pk_limiter_local_stats_get(pk_limiter *l, pk_limiter_local_stats *out);
/* Removes every entry whose TAT <= clock now; returns how many (0 for a non-local limiter). Meant for
 * a periodic timer; holds one shard lock at a time. */
size_t pk_limiter_local_sweep(pk_limiter *l);

/* ---- headers ---- */

typedef struct pk_rate_headers {
    char policy[192]; /* value of RateLimit-Policy */
    char state[192];  /* value of RateLimit */
} pk_rate_headers;

/* Formats both header values (see the syntax above). The class name is rendered as an sf-string:
 * '"' and '\' are escaped, bytes outside 0x20..0x7E become '_', and it is cut at 64 bytes. */
void pk_rate_headers_format(const pk_rate_class *cls, const pk_rate_decision *d, pk_rate_headers *out);
/* Seconds for a Retry-After header: ceil(retry_after_ns / 1 s), at least 1 when denied, 0 when allowed. */
int64_t pk_rate_retry_after_s(const pk_rate_decision *d);
#endif
