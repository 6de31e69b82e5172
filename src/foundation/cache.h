/*
 * cache: the in-process L1 cache. A bounded, sharded map from byte-string keys to immutable byte-string
 * values, with per-entry TTL, versions, negative caching, single-flight loading and exact invalidation.
 * docs/cache.md describes the model and how the server uses it.
 *
 * Policy: W-TinyLFU (as in Caffeine) inside each shard: a 1% LRU admission window, a segmented LRU main
 * area (probation 20% / protected 80%) and a count-min sketch of 4-bit counters with periodic halving.
 * An entry leaving the window enters the main area only if its estimated frequency is higher than the
 * frequency of the main area's victim (the least frequent of the 16 LRU-most probation entries). This
 * keeps hot keys through scans and one-hit wonders. Counters are halved every 20 x capacity lookups.
 *
 * Sizing: bounded by bytes. The total budget (default 64 MiB) is split evenly across the shards (default
 * 16, a power of two); an entry is charged pk_cache_charge(klen, vlen) = klen + vlen + fixed overhead.
 * An entry larger than a shard's budget is never stored.
 *
 * Values: pk_cache_get returns a reference-counted, immutable pk_cache_val. The caller owns one reference
 * and must drop it with pk_cache_val_release; the value stays valid after it was evicted, replaced or
 * invalidated, on any thread.
 *
 * Time: TTLs use the pk_clock of the config (fake clocks in tests). Deadlines of waiters in
 * pk_cache_get_or_load are absolute CLOCK_MONOTONIC nanoseconds (pk_mono_ns), as every request deadline.
 *
 * Exact invalidation: once pk_cache_invalidate(k) (or pk_cache_put(k)) returns, no get on any thread
 * returns the previous value; a load that started before it (pk_cache_get_or_load, or a manual load
 * bracketed by pk_cache_load_ticket / pk_cache_put_ex) does not insert its result, and callers of
 * pk_cache_get_or_load that arrive afterwards start a new load instead of joining the old one.
 *
 * Thread-safety: every function may be called from any thread. pk_cache_get never waits on anything but
 * its shard mutex (held only for a lookup) and never allocates; it is safe on event-loop threads.
 * pk_cache_get_or_load may block (it runs the loader or waits for another thread's load): call it off the
 * loop. pk_cache_free requires that no other thread uses the cache (outstanding values stay valid).
 *
 * Errors: allocation failure aborts (as everywhere in PAKE). pk_cache_get_or_load returns the loader's
 * error (waiters get a copy with the same code, status and message) or a "timeout" (504) error when the
 * deadline passes while waiting for another thread's load.
 */
#ifndef PAKE_FOUNDATION_CACHE_H
#define PAKE_FOUNDATION_CACHE_H
#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pk_cache pk_cache;

/* An immutable cached value. Fields are read-only for users; `refs_` is private. */
typedef struct pk_cache_val {
    const char *data; /* `len` bytes followed by a NUL (not counted in len) */
    size_t len;
    int64_t version; /* the version the value was stored with (0 if unversioned) */
    bool negative;   /* a cached "does not exist" (e.g. a 404): data is usually empty */
    atomic_uint refs_;
} pk_cache_val;

typedef struct pk_cache_config {
    size_t max_bytes;            /* total budget; 0 = 64 MiB */
    unsigned shards;             /* rounded up to a power of two; 0 = 16 */
    int64_t default_ttl_ns;      /* TTL when a call passes ttl_ns = 0; 0 = 60 s */
    int64_t negative_ttl_ns;     /* TTL of negative entries when a call passes 0; 0 = 5 s */
    size_t expected_entry_bytes; /* sizing hint for the frequency sketch; 0 = 1024 (it grows as needed) */
    const pk_clock *clock;       /* NULL = pk_clock_real() */
    uint64_t seed;               /* hash seed; 0 = random (keys may be attacker-chosen) */
} pk_cache_config;

/* Number of groups for generation-based invalidation (pk_cache_bump_generation). */
#define PK_CACHE_GROUPS 32

/* Fixed per-entry overhead added to key + value length when charging an entry. */
#define PK_CACHE_ENTRY_OVERHEAD 128

typedef struct pk_cache_counters {
    uint64_t hits;          /* includes negative hits */
    uint64_t negative_hits; /* hits on negative entries */
    uint64_t misses;        /* lookups that found nothing (or an expired entry) */
    uint64_t loads;         /* loader calls made by pk_cache_get_or_load */
    uint64_t load_errors;   /* loader calls that returned an error */
    uint64_t load_ns_total; /* total loader time, by the cache's clock */
    uint64_t load_waits;    /* callers that waited for another thread's load (single-flight joins) */
    uint64_t evictions;     /* entries removed to stay within the byte budget (incl. rejections) */
    uint64_t rejections;    /* admission rejections: a candidate lost against the main area's victim */
    uint64_t expirations;   /* entries removed because their TTL passed */
    uint64_t invalidations; /* entries removed by pk_cache_invalidate / replaced by pk_cache_put */
    uint64_t stale_puts;    /* inserts refused: newer version present or invalidated during the load */
    uint64_t bytes;         /* current charge of all entries */
    uint64_t entries;       /* current number of entries */
    uint64_t max_bytes;     /* configured budget (after defaults) */
} pk_cache_counters;

/* Result of a put. */
typedef enum {
    PK_CACHE_STORED,    /* the entry is in the cache (it may still be rejected later by admission) */
    PK_CACHE_STALE,     /* not stored: a newer-or-equal version is cached, or the key was invalidated
                           after the ticket was taken */
    PK_CACHE_TOO_LARGE, /* not stored: the entry's charge exceeds a shard's budget */
} pk_cache_put_result;

typedef struct pk_cache_put_opts {
    int64_t ttl_ns;  /* 0 = default TTL (negative TTL if `negative`) */
    int64_t version; /* stored with the value */
    bool negative;   /* negative entry (value usually empty) */
    bool if_newer;   /* keep a cached entry whose version >= `version` (result PK_CACHE_STALE) */
    bool writer;     /* a write path: counts as an invalidation of the key (bumps its epoch, detaches
                        in-flight loads) before storing; used by pk_cache_put */
    uint64_t ticket; /* nonzero: from pk_cache_load_ticket; refuse if the key was invalidated since */
} pk_cache_put_opts;

/* What a loader produces. The cache owns and frees `value`. */
typedef struct pk_cache_loaded {
    pk_buf value;    /* the value bytes (append to it) */
    int64_t version; /* the version of what was read */
    bool negative;   /* the thing does not exist: cache it as a negative entry */
    int64_t ttl_ns;  /* 0 = the ttl_ns given to get_or_load (negative default if `negative`) */
    bool no_store;   /* hand the value to this call's waiters but do not cache it */
} pk_cache_loaded;

/* Loads the value of `key` (e.g. from the store). Runs on the calling thread of pk_cache_get_or_load,
 * without any cache lock held; it may call the cache. Returns NULL and fills `out`, or an error (then
 * `out` is ignored and nothing is cached). */
typedef pk_err *(*pk_cache_loader)(void *ud, const void *key, size_t klen, pk_cache_loaded *out);

/* Creates a cache; `cfg` may be NULL for all defaults. */
pk_cache *pk_cache_new(const pk_cache_config *cfg);
/* Frees the cache and drops its references to values (values still held by callers stay valid). */
void pk_cache_free(pk_cache *c);

/* The charge of an entry with these key and value lengths (what counts against max_bytes). */
static inline size_t pk_cache_charge(size_t klen, size_t vlen)
{
    return klen + vlen + PK_CACHE_ENTRY_OVERHEAD;
}

/* Non-blocking lookup: a new reference to the live (unexpired) value, or NULL on a miss. Never waits for
 * loads and never allocates. */
pk_cache_val *pk_cache_get(pk_cache *c, const void *key, size_t klen);

/* Lookup, or load on a miss with single-flight: of N concurrent callers missing on one key, the first
 * runs `loader` on its own thread and the others wait for its result until `deadline_ns` (absolute
 * pk_mono_ns; 0 = no deadline). The result is cached with `ttl_ns` (0 = default) unless the key was
 * invalidated during the load or a newer version was stored meanwhile. On success returns NULL and
 * `*out` holds a reference to the value (possibly negative); on failure returns the error, *out = NULL. */
pk_err *pk_cache_get_or_load(pk_cache *c, const void *key, size_t klen, int64_t ttl_ns, int64_t deadline_ns,
                             pk_cache_loader loader, void *ud, pk_cache_val **out);

/* Write path: stores the value unconditionally and invalidates the key first (a load in flight will not
 * overwrite it). Copies key and data. */
pk_cache_put_result pk_cache_put(pk_cache *c, const void *key, size_t klen, const void *data, size_t len,
                                 int64_t version, int64_t ttl_ns);
/* Load path: stores the value unless a cached entry has a version >= `version`. */
pk_cache_put_result pk_cache_put_if_newer(pk_cache *c, const void *key, size_t klen, const void *data,
                                          size_t len, int64_t version, int64_t ttl_ns);
/* General form of the two above (`opts` may be NULL: unconditional, unversioned, default TTL). */
pk_cache_put_result pk_cache_put_ex(pk_cache *c, const void *key, size_t klen, const void *data, size_t len,
                                    const pk_cache_put_opts *opts);

/* For manual cache-aside loads: take a ticket before reading the source and pass it in
 * pk_cache_put_opts.ticket; the put is refused if the key was invalidated in between. Tickets are per
 * epoch slot (a few keys share one), so an invalidation of another key may refuse a put (never the
 * reverse). Never returns 0. */
uint64_t pk_cache_load_ticket(pk_cache *c, const void *key, size_t klen);

/* Removes the key; returns true if an entry was present. Exact: see the top of this header. */
bool pk_cache_invalidate(pk_cache *c, const void *key, size_t klen);

/* Invalidates everything: as pk_cache_invalidate on every key (entries removed, in-flight loads
 * detached, tickets taken before refused) plus a bump of every generation group. For a process that
 * may have missed invalidations (e.g. a lost pub/sub subscription). Holds one shard lock at a time. */
void pk_cache_clear(pk_cache *c);
/* Generation-based group invalidation: callers embed pk_cache_generation(c, group) in the keys of
 * derived results (lists, searches); a write calls pk_cache_bump_generation, which returns the new
 * generation, so every older key becomes unreachable at once (old entries age out). `group` <
 * PK_CACHE_GROUPS. Generations start at 1. */
uint64_t pk_cache_bump_generation(pk_cache *c, unsigned group);
uint64_t pk_cache_generation(pk_cache *c, unsigned group);

/* Removes all expired entries (O(entries); for a periodic timer). Returns how many were removed. */
size_t pk_cache_purge_expired(pk_cache *c);

/* A snapshot of the counters (each read atomically; the set is not one consistent cut). */
void pk_cache_stats(pk_cache *c, pk_cache_counters *out);

/* Adds a reference (for handing a value to another owner). */
static inline pk_cache_val *pk_cache_val_retain(pk_cache_val *v)
{
    atomic_fetch_add_explicit(&v->refs_, 1, memory_order_relaxed);
    return v;
}
/* Drops a reference; the last one frees the value. NULL is ignored. */
void pk_cache_val_release(pk_cache_val *v);

#endif
