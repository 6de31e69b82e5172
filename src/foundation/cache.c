/*
 * cache.c: the L1 cache (see cache.h for the contract, docs/cache.md for the model).
 *
 * Layout. The key hash picks a shard; a shard is an independent small cache behind one mutex: a chained
 * hash table of entries, three intrusive LRU lists (window, probation, protected), a frequency sketch,
 * the list of loads in flight and a small array of invalidation epochs. Shards never talk to each other,
 * so two threads only contend when their keys land in the same shard.
 *
 * Policy (W-TinyLFU, after Caffeine). New entries enter the window (1% of the shard's bytes). When the
 * window overflows, its LRU entry becomes a candidate for the main area. While the shard is over budget
 * the candidate duels with the main area's victim (see pick_victim, else protected LRU): the one with the
 * lower sketch frequency is evicted, ties go to the victim (admission = candidate freq > victim freq).
 * A hit in probation promotes the entry to protected (80% of the main area); protected overflow is
 * demoted back to probation's MRU end. The victim is the least frequent of the 16 entries at probation's
 * LRU end (plain SLRU picks the LRU one, which on a stationary workload is often a popular key that was
 * unlucky lately). The sketch is a count-min sketch of 4 rows of 4-bit counters, updated conservatively
 * on every lookup (hit or miss) and halved after 20 x capacity updates so that old popularity fades. The
 * window lets a new key prove itself before it faces the sketch; the sketch keeps scans and one-hit wonders
 * out of the main area, which is why it beats LRU on skewed workloads. The sketch is sized from the shard
 * budget and grows (and restarts) when the shard holds more entries than it was sized for.
 *
 * Values are refcounted and immutable: the cache holds one reference per entry, a get adds one for the
 * caller. A hit therefore costs a hash, a lock, a list move, four counter bumps and one atomic increment;
 * it allocates nothing.
 *
 * Single-flight and exact invalidation. A miss in pk_cache_get_or_load registers a flight for the key in
 * its shard; later callers for the same key wait on the flight's condvar (with the shard mutex). Every
 * invalidation of a key (pk_cache_invalidate, pk_cache_put) under the shard lock (1) removes the entry,
 * (2) bumps the key's epoch slot and (3) detaches the key's flight, so later callers start a new load.
 * The leader inserts its result only if its flight is still attached and the epoch slot is unchanged,
 * both checked under the same lock as the insertion, so a load that raced with a write never re-inserts
 * stale data. Waiters that joined before the invalidation still receive the leader's value: their reads
 * began before the invalidation returned, so that is a legal (linearizable) answer.
 */
#include "foundation/cache.h"
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define DEFAULT_MAX_BYTES ((size_t)64 << 20)
#define DEFAULT_SHARDS 16u
#define MAX_SHARDS 1024u
#define DEFAULT_TTL_NS (60LL * 1000000000LL)
#define DEFAULT_NEGATIVE_TTL_NS (5LL * 1000000000LL)
#define DEFAULT_ENTRY_BYTES 1024u
#define EPOCH_SLOTS 64
#define SKETCH_ROWS 4
#define SKETCH_WIDTH_MULT 4   /* counters per row = next_pow2(4 x capacity in entries) */
#define SKETCH_COUNTER_MAX 15 /* 4-bit counters (one per byte, for simplicity) */
#define SKETCH_SAMPLE_MULT 20 /* halve after 20 x capacity updates (Caffeine: 10; see docs/cache.md) */
#define VICTIM_SAMPLE 16      /* the victim is the least frequent of this many probation LRU entries */
#define WINDOW_PCT 1

enum { Q_WINDOW, Q_PROBATION, Q_PROTECTED };

typedef struct lnode {
    struct lnode *prev, *next;
} lnode;

typedef struct entry {
    lnode lru; /* first member: a lnode * is an entry * */
    struct entry *hnext;
    uint64_t hash;
    pk_cache_val *val; /* the cache's reference */
    int64_t expire_at;
    size_t charge;
    uint32_t klen;
    uint8_t queue;
    char key[];
} entry;

typedef struct queue {
    lnode head; /* head.next = MRU, head.prev = LRU */
    size_t bytes;
    size_t count;
} queue;

typedef struct sketch {
    uint8_t *counters; /* SKETCH_ROWS rows of `width` counters */
    size_t width;      /* counters per row, a power of two */
    size_t capacity;   /* entries it was sized for */
    uint64_t updates;  /* since the last halving */
} sketch;

typedef struct flight {
    struct flight *next;
    uint64_t hash;
    pthread_cond_t cond;
    unsigned refs; /* the leader + waiters not yet gone */
    bool done, detached, failed;
    pk_cache_val *val; /* result, one reference owned by the flight */
    const char *err_code;
    int err_status;
    bool err_retryable;
    char *err_msg;
    uint32_t klen;
    char key[];
} flight;

typedef struct counters {
    atomic_uint_fast64_t hits, negative_hits, misses, loads, load_errors, load_ns, load_waits, evictions,
        rejections, expirations, invalidations, stale_puts;
} counters;

typedef struct shard {
    pthread_mutex_t mu;
    entry **buckets;
    size_t nbuckets;
    queue q[3];
    size_t bytes, max_bytes, window_max, protected_max;
    size_t entries;
    sketch sk;
    flight *flights;
    uint64_t epochs[EPOCH_SLOTS];
    counters st;
} shard;

struct pk_cache {
    shard *shards;
    unsigned nshards;
    const pk_clock *clock;
    int64_t default_ttl, negative_ttl;
    uint64_t seed;
    size_t max_bytes;
    size_t entry_hint;
    pthread_condattr_t condattr;
    atomic_uint_fast64_t gens[PK_CACHE_GROUPS];
};

/* ---- small helpers ---- */

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) abort();
    return p;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) abort();
    return p;
}

static size_t next_pow2(size_t n)
{
    size_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* Seeded 64-bit hash: a multiply-xorshift over 8-byte words with a murmur3 finaliser. Not a PRF, but
 * with a random seed an attacker cannot aim many keys at one bucket or shard offline. */
static uint64_t hash_key(uint64_t seed, const void *key, size_t n)
{
    const unsigned char *p = key;
    uint64_t h = seed ^ (n * 0x9e3779b97f4a7c15ULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w ^ ((uint64_t)n << 56)) * 0xbf58476d1ce4e5b9ULL;
    return mix64(h);
}

static shard *shard_of(pk_cache *c, uint64_t h)
{
    return &c->shards[(h >> 40) & (c->nshards - 1)];
}
static size_t epoch_slot(uint64_t h)
{
    return (size_t)(h >> 24) & (EPOCH_SLOTS - 1);
}

#define STAT_ADD(s, field, n) atomic_fetch_add_explicit(&(s)->st.field, (n), memory_order_relaxed)

/* ---- values ---- */

static pk_cache_val *val_new(const void *data, size_t len, int64_t version, bool negative)
{
    pk_cache_val *v = xmalloc(sizeof *v + len + 1);
    char *bytes = (char *)(v + 1);
    if (len) memcpy(bytes, data, len);
    bytes[len] = '\0';
    v->data = bytes;
    v->len = len;
    v->version = version;
    v->negative = negative;
    atomic_init(&v->refs_, 1);
    return v;
}

void pk_cache_val_release(pk_cache_val *v)
{
    if (!v) return;
    if (atomic_fetch_sub_explicit(&v->refs_, 1, memory_order_acq_rel) == 1) free(v);
}

/* ---- intrusive lists ---- */

static void queue_init(queue *q)
{
    q->head.prev = q->head.next = &q->head;
    q->bytes = q->count = 0;
}

static void link_remove(lnode *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
}

static void queue_push_mru(shard *s, int qi, entry *e)
{
    queue *q = &s->q[qi];
    lnode *l = &e->lru;
    l->next = q->head.next;
    l->prev = &q->head;
    q->head.next->prev = l;
    q->head.next = l;
    q->bytes += e->charge;
    q->count++;
    e->queue = (uint8_t)qi;
}

static void queue_remove(shard *s, entry *e)
{
    queue *q = &s->q[e->queue];
    link_remove(&e->lru);
    q->bytes -= e->charge;
    q->count--;
}

static entry *queue_lru(shard *s, int qi)
{
    queue *q = &s->q[qi];
    return q->count ? (entry *)q->head.prev : NULL;
}

/* ---- frequency sketch ---- */

static void sketch_init(sketch *sk, size_t capacity)
{
    sk->capacity = capacity < 16 ? 16 : capacity;
    sk->width = next_pow2(sk->capacity * SKETCH_WIDTH_MULT);
    sk->counters = xcalloc(SKETCH_ROWS * sk->width, 1);
    sk->updates = 0;
}

static void sketch_free(sketch *sk)
{
    free(sk->counters);
}

/* Double hashing over an independent mix of the key hash gives the row indexes. */
static void sketch_index(const sketch *sk, uint64_t h, size_t idx[SKETCH_ROWS])
{
    uint64_t m = mix64(h ^ 0x6a09e667f3bcc909ULL);
    uint32_t a = (uint32_t)m, b = (uint32_t)(m >> 32) | 1u;
    for (size_t r = 0; r < SKETCH_ROWS; r++)
        idx[r] = r * sk->width + ((a + (uint32_t)r * b) & (sk->width - 1));
}

static unsigned sketch_min(const sketch *sk, const size_t idx[SKETCH_ROWS])
{
    unsigned f = SKETCH_COUNTER_MAX;
    for (size_t r = 0; r < SKETCH_ROWS; r++)
        if (sk->counters[idx[r]] < f) f = sk->counters[idx[r]];
    return f;
}

static unsigned sketch_frequency(const sketch *sk, uint64_t h)
{
    size_t idx[SKETCH_ROWS];
    sketch_index(sk, h, idx);
    return sketch_min(sk, idx);
}

/* Halving ("reset"): every counter divided by two, so popularity decays with a half-life of one sample. */
static void sketch_halve(sketch *sk)
{
    size_t n = SKETCH_ROWS * sk->width;
    for (size_t i = 0; i < n; i++)
        sk->counters[i] >>= 1;
    sk->updates /= 2;
}

/* Conservative update: only the counters equal to the current minimum grow (less over-estimation). */
static void sketch_increment(sketch *sk, uint64_t h)
{
    size_t idx[SKETCH_ROWS];
    sketch_index(sk, h, idx);
    unsigned f = sketch_min(sk, idx);
    if (f < SKETCH_COUNTER_MAX) {
        for (size_t r = 0; r < SKETCH_ROWS; r++)
            if (sk->counters[idx[r]] == f) sk->counters[idx[r]]++;
    }
    if (++sk->updates >= SKETCH_SAMPLE_MULT * sk->capacity) sketch_halve(sk);
}

/* ---- hash table ---- */

static entry *table_find(shard *s, uint64_t h, const void *key, size_t klen)
{
    for (entry *e = s->buckets[h & (s->nbuckets - 1)]; e; e = e->hnext)
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0) return e;
    return NULL;
}

static void table_unlink(shard *s, entry *e)
{
    entry **pp = &s->buckets[e->hash & (s->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
}

static void table_grow(shard *s)
{
    size_t n = s->nbuckets * 2;
    entry **b = xcalloc(n, sizeof *b);
    for (size_t i = 0; i < s->nbuckets; i++) {
        entry *e = s->buckets[i];
        while (e) {
            entry *next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

/* ---- entries ---- */

static void entry_remove(shard *s, entry *e)
{
    table_unlink(s, e);
    queue_remove(s, e);
    s->bytes -= e->charge;
    s->entries--;
    pk_cache_val_release(e->val);
    free(e);
}

static void evict(shard *s, entry *e, int64_t now)
{
    if (e->expire_at <= now)
        STAT_ADD(s, expirations, 1);
    else
        STAT_ADD(s, evictions, 1);
    entry_remove(s, e);
}

/* Protected overflow goes back to probation (MRU end), where it may be chosen as a victim again. */
static void rebalance_protected(shard *s)
{
    while (s->q[Q_PROTECTED].bytes > s->protected_max && s->q[Q_PROTECTED].count > 1) {
        entry *e = queue_lru(s, Q_PROTECTED);
        queue_remove(s, e);
        queue_push_mru(s, Q_PROBATION, e);
    }
}

static void on_hit(shard *s, entry *e)
{
    queue_remove(s, e);
    if (e->queue == Q_WINDOW) {
        queue_push_mru(s, Q_WINDOW, e);
    } else {
        queue_push_mru(s, Q_PROTECTED, e);
        rebalance_protected(s);
    }
}

/* The main area's victim: the least frequent of the VICTIM_SAMPLE entries at probation's LRU end (the
 * LRU-most on ties), else protected's LRU. Only probation entries that were not hit since they were
 * admitted or demoted are looked at, so this stays an SLRU, with a better guess of its least useful entry. */
static entry *pick_victim(shard *s, int64_t now)
{
    entry *v = queue_lru(s, Q_PROBATION);
    if (!v) return queue_lru(s, Q_PROTECTED);
    if (v->expire_at <= now) return v;
    unsigned best = sketch_frequency(&s->sk, v->hash);
    lnode *end = &s->q[Q_PROBATION].head;
    lnode *l = v->lru.prev;
    for (int i = 1; i < VICTIM_SAMPLE && l != end && best > 0; i++, l = l->prev) {
        if (((entry *)l)->expire_at <= now) return (entry *)l; /* an expired entry goes first */
        unsigned f = sketch_frequency(&s->sk, ((entry *)l)->hash);
        if (f < best) {
            best = f;
            v = (entry *)l;
        }
    }
    return v;
}

/* A candidate leaving the window enters probation only if it beats the victims it needs to displace.
 * `c` is in no queue here but its bytes still count in s->bytes. */
static void admit_candidate(shard *s, entry *c, int64_t now)
{
    while (s->bytes > s->max_bytes) {
        entry *v = pick_victim(s, now);
        if (!v) break;
        if (c->expire_at <= now ||
            (v->expire_at > now && sketch_frequency(&s->sk, c->hash) <= sketch_frequency(&s->sk, v->hash))) {
            if (c->expire_at > now) STAT_ADD(s, rejections, 1);
            queue_push_mru(s, Q_PROBATION, c); /* entry_remove expects it in a queue */
            evict(s, c, now);
            return;
        }
        evict(s, v, now);
    }
    queue_push_mru(s, Q_PROBATION, c);
}

static void shard_evict(shard *s, int64_t now)
{
    while (s->q[Q_WINDOW].bytes > s->window_max && s->q[Q_WINDOW].count > 1) {
        entry *c = queue_lru(s, Q_WINDOW);
        queue_remove(s, c);
        admit_candidate(s, c, now);
    }
    while (s->bytes > s->max_bytes) { /* the window alone is over budget (one big entry) */
        entry *v = queue_lru(s, Q_PROBATION);
        if (!v) v = queue_lru(s, Q_PROTECTED);
        if (!v) v = queue_lru(s, Q_WINDOW);
        if (!v) break;
        evict(s, v, now);
    }
}

/* Stores `v` (taking a new reference) under the shard lock. */
static pk_cache_put_result shard_store(shard *s, uint64_t h, const void *key, size_t klen, pk_cache_val *v,
                                       int64_t expire_at, bool if_newer, int64_t now)
{
    size_t charge = pk_cache_charge(klen, v->len);
    entry *e = table_find(s, h, key, klen);
    if (e && e->expire_at <= now) {
        evict(s, e, now);
        e = NULL;
    }
    if (if_newer && e && e->val->version >= v->version) {
        STAT_ADD(s, stale_puts, 1);
        return PK_CACHE_STALE;
    }
    if (charge > s->max_bytes || klen > UINT32_MAX) {
        if (e) entry_remove(s, e); /* the old value is superseded even though the new one does not fit */
        return PK_CACHE_TOO_LARGE;
    }
    if (e) {
        pk_cache_val_release(e->val);
        e->val = pk_cache_val_retain(v);
        e->expire_at = expire_at;
        s->bytes = s->bytes - e->charge + charge;
        queue_remove(s, e);
        e->charge = charge;
        queue_push_mru(s, e->queue, e);
        if (e->queue == Q_PROTECTED) rebalance_protected(s);
    } else {
        e = xmalloc(sizeof *e + klen);
        e->hash = h;
        e->val = pk_cache_val_retain(v);
        e->expire_at = expire_at;
        e->charge = charge;
        e->klen = (uint32_t)klen;
        memcpy(e->key, key, klen);
        e->hnext = s->buckets[h & (s->nbuckets - 1)];
        s->buckets[h & (s->nbuckets - 1)] = e;
        queue_push_mru(s, Q_WINDOW, e);
        s->bytes += charge;
        if (++s->entries > s->nbuckets) table_grow(s);
        if (s->entries > s->sk.capacity) {
            size_t cap = s->sk.capacity * 2;
            sketch_free(&s->sk);
            sketch_init(&s->sk, cap);
        }
    }
    shard_evict(s, now);
    return PK_CACHE_STORED;
}

/* Looks the key up under the lock, counting the access; expired entries are removed. */
static entry *shard_lookup(shard *s, uint64_t h, const void *key, size_t klen, int64_t now)
{
    sketch_increment(&s->sk, h);
    entry *e = table_find(s, h, key, klen);
    if (e && e->expire_at <= now) {
        evict(s, e, now);
        e = NULL;
    }
    if (!e) {
        STAT_ADD(s, misses, 1);
        return NULL;
    }
    on_hit(s, e);
    STAT_ADD(s, hits, 1);
    if (e->val->negative) STAT_ADD(s, negative_hits, 1);
    return e;
}

/* ---- flights ---- */

static flight *flight_find(shard *s, uint64_t h, const void *key, size_t klen)
{
    for (flight *f = s->flights; f; f = f->next)
        if (f->hash == h && f->klen == klen && memcmp(f->key, key, klen) == 0) return f;
    return NULL;
}

static void flight_unlink(shard *s, flight *f)
{
    if (f->detached) return;
    flight **pp = &s->flights;
    while (*pp != f)
        pp = &(*pp)->next;
    *pp = f->next;
    f->detached = true;
}

static void flight_unref(flight *f)
{
    if (--f->refs) return;
    pk_cache_val_release(f->val);
    free(f->err_msg);
    pthread_cond_destroy(&f->cond);
    free(f);
}

/* Invalidation under the shard lock: remove the entry, bump the epoch slot, detach the flight. */
static bool invalidate_locked(shard *s, uint64_t h, const void *key, size_t klen)
{
    s->epochs[epoch_slot(h)]++;
    flight *f = flight_find(s, h, key, klen);
    if (f) flight_unlink(s, f);
    entry *e = table_find(s, h, key, klen);
    if (!e) return false;
    entry_remove(s, e);
    STAT_ADD(s, invalidations, 1);
    return true;
}

/* ---- public API ---- */

pk_cache *pk_cache_new(const pk_cache_config *cfg)
{
    pk_cache_config d = {0};
    if (cfg) d = *cfg;
    pk_cache *c = xcalloc(1, sizeof *c);
    c->max_bytes = d.max_bytes ? d.max_bytes : DEFAULT_MAX_BYTES;
    unsigned n = d.shards ? d.shards : DEFAULT_SHARDS;
    c->nshards = (unsigned)next_pow2(n > MAX_SHARDS ? MAX_SHARDS : n);
    c->clock = d.clock ? d.clock : pk_clock_real();
    c->default_ttl = d.default_ttl_ns > 0 ? d.default_ttl_ns : DEFAULT_TTL_NS;
    c->negative_ttl = d.negative_ttl_ns > 0 ? d.negative_ttl_ns : DEFAULT_NEGATIVE_TTL_NS;
    c->entry_hint = d.expected_entry_bytes ? d.expected_entry_bytes : DEFAULT_ENTRY_BYTES;
    c->seed = d.seed;
    if (!c->seed && getrandom(&c->seed, sizeof c->seed, 0) != (ssize_t)sizeof c->seed)
        c->seed = (uint64_t)pk_mono_ns() ^ (uint64_t)(uintptr_t)c;
    pthread_condattr_init(&c->condattr);
    pthread_condattr_setclock(&c->condattr, CLOCK_MONOTONIC);
    for (size_t g = 0; g < PK_CACHE_GROUPS; g++)
        atomic_init(&c->gens[g], 1);

    c->shards = xcalloc(c->nshards, sizeof *c->shards);
    size_t per_shard = c->max_bytes / c->nshards;
    for (unsigned i = 0; i < c->nshards; i++) {
        shard *s = &c->shards[i];
        pthread_mutex_init(&s->mu, NULL);
        s->nbuckets = 16;
        s->buckets = xcalloc(s->nbuckets, sizeof *s->buckets);
        for (int q = 0; q < 3; q++)
            queue_init(&s->q[q]);
        s->max_bytes = per_shard;
        s->window_max = per_shard * WINDOW_PCT / 100;
        s->protected_max = (per_shard - s->window_max) / 5 * 4;
        sketch_init(&s->sk, per_shard / c->entry_hint);
        for (int k = 0; k < EPOCH_SLOTS; k++)
            s->epochs[k] = 1;
    }
    return c;
}

void pk_cache_free(pk_cache *c)
{
    if (!c) return;
    for (unsigned i = 0; i < c->nshards; i++) {
        shard *s = &c->shards[i];
        for (size_t b = 0; b < s->nbuckets; b++) {
            entry *e = s->buckets[b];
            while (e) {
                entry *next = e->hnext;
                pk_cache_val_release(e->val);
                free(e);
                e = next;
            }
        }
        free(s->buckets);
        sketch_free(&s->sk);
        pthread_mutex_destroy(&s->mu);
    }
    pthread_condattr_destroy(&c->condattr);
    free(c->shards);
    free(c);
}

pk_cache_val *pk_cache_get(pk_cache *c, const void *key, size_t klen)
{
    uint64_t h = hash_key(c->seed, key, klen);
    shard *s = shard_of(c, h);
    int64_t now = pk_clock_now(c->clock);
    pthread_mutex_lock(&s->mu);
    entry *e = shard_lookup(s, h, key, klen, now);
    pk_cache_val *v = e ? pk_cache_val_retain(e->val) : NULL;
    pthread_mutex_unlock(&s->mu);
    return v;
}

static int64_t ttl_for(const pk_cache *c, int64_t ttl_ns, bool negative)
{
    if (ttl_ns > 0) return ttl_ns;
    return negative ? c->negative_ttl : c->default_ttl;
}

pk_cache_put_result pk_cache_put_ex(pk_cache *c, const void *key, size_t klen, const void *data, size_t len,
                                    const pk_cache_put_opts *opts)
{
    pk_cache_put_opts o = {0};
    if (opts) o = *opts;
    uint64_t h = hash_key(c->seed, key, klen);
    shard *s = shard_of(c, h);
    int64_t now = pk_clock_now(c->clock);
    pk_cache_val *v = val_new(data, len, o.version, o.negative);
    pk_cache_put_result r;
    pthread_mutex_lock(&s->mu);
    if (o.writer) invalidate_locked(s, h, key, klen);
    if (o.ticket && s->epochs[epoch_slot(h)] != o.ticket) {
        STAT_ADD(s, stale_puts, 1);
        r = PK_CACHE_STALE;
    } else {
        r = shard_store(s, h, key, klen, v, now + ttl_for(c, o.ttl_ns, o.negative), o.if_newer, now);
    }
    pthread_mutex_unlock(&s->mu);
    pk_cache_val_release(v);
    return r;
}

pk_cache_put_result pk_cache_put(pk_cache *c, const void *key, size_t klen, const void *data, size_t len,
                                 int64_t version, int64_t ttl_ns)
{
    pk_cache_put_opts o = {.ttl_ns = ttl_ns, .version = version, .writer = true};
    return pk_cache_put_ex(c, key, klen, data, len, &o);
}

pk_cache_put_result pk_cache_put_if_newer(pk_cache *c, const void *key, size_t klen, const void *data,
                                          size_t len, int64_t version, int64_t ttl_ns)
{
    pk_cache_put_opts o = {.ttl_ns = ttl_ns, .version = version, .if_newer = true};
    return pk_cache_put_ex(c, key, klen, data, len, &o);
}

uint64_t pk_cache_load_ticket(pk_cache *c, const void *key, size_t klen)
{
    uint64_t h = hash_key(c->seed, key, klen);
    shard *s = shard_of(c, h);
    pthread_mutex_lock(&s->mu);
    uint64_t t = s->epochs[epoch_slot(h)];
    pthread_mutex_unlock(&s->mu);
    return t;
}

bool pk_cache_invalidate(pk_cache *c, const void *key, size_t klen)
{
    uint64_t h = hash_key(c->seed, key, klen);
    shard *s = shard_of(c, h);
    pthread_mutex_lock(&s->mu);
    bool found = invalidate_locked(s, h, key, klen);
    pthread_mutex_unlock(&s->mu);
    return found;
}

void pk_cache_clear(pk_cache *c)
{
    for (unsigned i = 0; i < c->nshards; i++) {
        shard *s = &c->shards[i];
        pthread_mutex_lock(&s->mu);
        for (int k = 0; k < EPOCH_SLOTS; k++)
            s->epochs[k]++;
        while (s->flights)
            flight_unlink(s, s->flights);
        for (size_t b = 0; b < s->nbuckets; b++)
            while (s->buckets[b]) {
                entry_remove(s, s->buckets[b]);
                STAT_ADD(s, invalidations, 1);
            }
        pthread_mutex_unlock(&s->mu);
    }
    for (unsigned g = 0; g < PK_CACHE_GROUPS; g++)
        atomic_fetch_add(&c->gens[g], 1);
}

/* The loader's TTL wins; a negative result gets the negative TTL, anything else the caller's TTL. */
static int64_t load_ttl(const pk_cache *c, int64_t ttl_ns, const pk_cache_loaded *ld)
{
    if (ld->ttl_ns > 0) return ld->ttl_ns;
    return ttl_for(c, ld->negative ? 0 : ttl_ns, ld->negative);
}

/* A waiter's copy of the leader's error (an error has exactly one owner). */
static pk_err *flight_error(const flight *f)
{
    pk_err *e = pk_err_new(f->err_code, f->err_status, "%s", f->err_msg ? f->err_msg : "cache load failed");
    e->retryable = f->err_retryable;
    return e;
}

static void deadline_timespec(int64_t deadline_ns, struct timespec *ts)
{
    ts->tv_sec = (time_t)(deadline_ns / 1000000000LL);
    ts->tv_nsec = (long)(deadline_ns % 1000000000LL);
}

/* Joins the flight `f` (shard lock held): waits for its result or the deadline. */
static pk_err *flight_wait(shard *s, flight *f, int64_t deadline_ns, pk_cache_val **out)
{
    f->refs++;
    STAT_ADD(s, load_waits, 1);
    struct timespec ts;
    if (deadline_ns) deadline_timespec(deadline_ns, &ts);
    bool timed_out = false;
    while (!f->done && !timed_out) {
        if (!deadline_ns)
            pthread_cond_wait(&f->cond, &s->mu);
        else if (pthread_cond_timedwait(&f->cond, &s->mu, &ts) == ETIMEDOUT)
            timed_out = !f->done;
    }
    pk_err *err = NULL;
    if (timed_out)
        err = pk_err_new("timeout", 504, "deadline exceeded while waiting for a cache load");
    else if (f->failed)
        err = flight_error(f);
    else
        *out = pk_cache_val_retain(f->val);
    flight_unref(f);
    return err;
}

pk_err *pk_cache_get_or_load(pk_cache *c, const void *key, size_t klen, int64_t ttl_ns, int64_t deadline_ns,
                             pk_cache_loader loader, void *ud, pk_cache_val **out)
{
    *out = NULL;
    if (klen > UINT32_MAX) return pk_err_invalid("cache key too long");
    uint64_t h = hash_key(c->seed, key, klen);
    shard *s = shard_of(c, h);
    int64_t now = pk_clock_now(c->clock);
    pthread_mutex_lock(&s->mu);
    entry *e = shard_lookup(s, h, key, klen, now);
    if (e) {
        *out = pk_cache_val_retain(e->val);
        pthread_mutex_unlock(&s->mu);
        return NULL;
    }
    flight *f = flight_find(s, h, key, klen);
    if (f) {
        pk_err *err = flight_wait(s, f, deadline_ns, out);
        pthread_mutex_unlock(&s->mu);
        return err;
    }
    /* Leader: register the flight and the epoch, then load without the lock. */
    f = xcalloc(1, sizeof *f + klen);
    f->hash = h;
    f->klen = (uint32_t)klen;
    memcpy(f->key, key, klen);
    f->refs = 1;
    pthread_cond_init(&f->cond, &c->condattr);
    f->next = s->flights;
    s->flights = f;
    uint64_t ticket = s->epochs[epoch_slot(h)];
    pthread_mutex_unlock(&s->mu);

    pk_cache_loaded ld = {.value = PK_BUF_INIT};
    int64_t t0 = pk_clock_now(c->clock);
    pk_err *err = loader(ud, key, klen, &ld);
    int64_t t1 = pk_clock_now(c->clock);
    STAT_ADD(s, loads, 1);
    STAT_ADD(s, load_ns, (uint64_t)(t1 > t0 ? t1 - t0 : 0));
    pk_cache_val *v = NULL;
    if (err) {
        STAT_ADD(s, load_errors, 1);
        f->failed = true;
        f->err_code = err->code;
        f->err_status = err->status;
        f->err_retryable = err->retryable;
        f->err_msg = err->message ? pk_strndup(err->message, strlen(err->message)) : NULL;
    } else {
        v = val_new(ld.value.data, ld.value.len, ld.version, ld.negative);
    }
    pk_buf_free(&ld.value);

    pthread_mutex_lock(&s->mu);
    bool current = !f->detached && s->epochs[epoch_slot(h)] == ticket;
    flight_unlink(s, f);
    if (v && !ld.no_store) {
        if (current)
            shard_store(s, h, key, klen, v, t1 + load_ttl(c, ttl_ns, &ld), true, t1);
        else
            STAT_ADD(s, stale_puts, 1);
    }
    f->val = v;
    f->done = true;
    if (f->refs > 1) pthread_cond_broadcast(&f->cond);
    if (v) *out = pk_cache_val_retain(v);
    flight_unref(f);
    pthread_mutex_unlock(&s->mu);
    return err;
}

uint64_t pk_cache_bump_generation(pk_cache *c, unsigned group)
{
    if (group >= PK_CACHE_GROUPS) abort();
    return atomic_fetch_add_explicit(&c->gens[group], 1, memory_order_acq_rel) + 1;
}

uint64_t pk_cache_generation(pk_cache *c, unsigned group)
{
    if (group >= PK_CACHE_GROUPS) abort();
    return atomic_load_explicit(&c->gens[group], memory_order_acquire);
}

size_t pk_cache_purge_expired(pk_cache *c)
{
    size_t n = 0;
    int64_t now = pk_clock_now(c->clock);
    for (unsigned i = 0; i < c->nshards; i++) {
        shard *s = &c->shards[i];
        pthread_mutex_lock(&s->mu);
        for (size_t b = 0; b < s->nbuckets; b++) {
            entry *e = s->buckets[b];
            while (e) {
                entry *next = e->hnext;
                if (e->expire_at <= now) {
                    evict(s, e, now);
                    n++;
                }
                e = next;
            }
        }
        pthread_mutex_unlock(&s->mu);
    }
    return n;
}

#define LOAD(s, f) atomic_load_explicit(&(s)->st.f, memory_order_relaxed)

void pk_cache_stats(pk_cache *c, pk_cache_counters *out)
{
    memset(out, 0, sizeof *out);
    out->max_bytes = c->max_bytes;
    for (unsigned i = 0; i < c->nshards; i++) {
        shard *s = &c->shards[i];
        out->hits += LOAD(s, hits);
        out->negative_hits += LOAD(s, negative_hits);
        out->misses += LOAD(s, misses);
        out->loads += LOAD(s, loads);
        out->load_errors += LOAD(s, load_errors);
        out->load_ns_total += LOAD(s, load_ns);
        out->load_waits += LOAD(s, load_waits);
        out->evictions += LOAD(s, evictions);
        out->rejections += LOAD(s, rejections);
        out->expirations += LOAD(s, expirations);
        out->invalidations += LOAD(s, invalidations);
        out->stale_puts += LOAD(s, stale_puts);
        pthread_mutex_lock(&s->mu);
        out->bytes += s->bytes;
        out->entries += s->entries;
        pthread_mutex_unlock(&s->mu);
    }
}
