/*
 * GCRA rate limiting and the in-process limiter (see ratelimit.h for the model).
 *
 * Why GCRA: one integer of state per key (the theoretical arrival time), O(1) per decision, exact
 * burst and refill, and the same arithmetic runs in a Redis Lua script for the shared limiter. Token
 * buckets need two numbers and a refill step; fixed windows allow 2x bursts at window edges.
 *
 * Why the table looks like this: the limiter sits on the request path of every loop thread, and a
 * flood of distinct keys (spoofed API keys, many IPs) must not grow memory. So the table is allocated
 * once: 16 shards (a mutex each, cache-line aligned, so threads on different keys rarely contend),
 * each an open-addressing array with linear probing at load <= 1/2 and backward-shift deletion (no
 * tombstones, so probe chains never rot). An entry is the 128-bit SipHash of (class, key) and the TAT;
 * no key bytes are stored, no allocation happens after creation.
 *
 * Forgetting state is safe in one direction only: a key whose TAT is in the past is indistinguishable
 * from a fresh key, so dropping it changes nothing. Dropping a live key makes it fresh again (a new
 * full burst): more permissive, never less, so a flood can at worst dilute limits for keys it pushes
 * out, never lock out a legitimate client.
 */
#include "foundation/ratelimit.h"
#include "core/fmt.h"
#include "core/id.h"
#include <pthread.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_S 1000000000LL
#define SHARDS 16
#define SWEEP_STEP 64 /* slots examined per insert into a full shard */
#define SAMPLE 8      /* live entries compared when evicting */
#define MAX_PERIOD_NS (366LL * 86400 * NS_PER_S)
#define MAX_BURST 1000000000LL

/* ---- GCRA ---- */

pk_err *pk_rate_class_check(const pk_rate_class *c)
{
    const char *why = NULL;
    if (!c->name || !*c->name)
        why = "name is required";
    else if (c->rate < 1)
        why = "rate must be >= 1";
    else if (c->period_ns < 1 || c->period_ns > MAX_PERIOD_NS)
        why = "period must be in (0, 1 year]";
    else if (c->period_ns / c->rate < 1)
        why = "rate too high for the period (interval below 1 ns)";
    else if (c->burst < 1 || c->burst > MAX_BURST)
        why = "burst must be in [1, 1e9]";
    else if (c->period_ns / c->rate > INT64_MAX / 4 / c->burst)
        why = "burst * interval too large";
    if (!why) return NULL;
    return pk_err_new("invalid_config", 500, "rate class %s: %s", c->name ? c->name : "?", why);
}

void pk_gcra(const pk_rate_class *cls, int64_t *tat_io, int64_t now, pk_rate_decision *out)
{
    int64_t t = cls->period_ns / cls->rate;
    int64_t tau = t * cls->burst;
    int64_t tat = *tat_io > now ? *tat_io : now;
    int64_t next = tat + t;
    out->limit = cls->burst;
    if (next - tau > now) {
        out->allowed = false;
        out->remaining = 0;
        out->reset_after_ns = tat - now;
        out->retry_after_ns = next - tau - now;
        return;
    }
    *tat_io = next;
    out->allowed = true;
    out->remaining = (tau - (next - now)) / t;
    out->reset_after_ns = next - now;
    out->retry_after_ns = 0;
}

/* ---- SipHash-2-4, 128-bit output, streaming ---- */

typedef struct sip {
    uint64_t v0, v1, v2, v3;
    uint64_t tail;
    unsigned ntail;
    uint64_t len;
} sip;

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

static inline void sip_round(sip *s)
{
    s->v0 += s->v1;
    s->v1 = ROTL(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = ROTL(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = ROTL(s->v3, 16);
    s->v3 ^= s->v2;
    s->v0 += s->v3;
    s->v3 = ROTL(s->v3, 21);
    s->v3 ^= s->v0;
    s->v2 += s->v1;
    s->v1 = ROTL(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = ROTL(s->v2, 32);
}

static void sip_init(sip *s, uint64_t k0, uint64_t k1)
{
    s->v0 = k0 ^ 0x736f6d6570736575ULL;
    s->v1 = k1 ^ 0x646f72616e646f6dULL ^ 0xee;
    s->v2 = k0 ^ 0x6c7967656e657261ULL;
    s->v3 = k1 ^ 0x7465646279746573ULL;
    s->tail = 0;
    s->ntail = 0;
    s->len = 0;
}

static inline void sip_block(sip *s, uint64_t m)
{
    s->v3 ^= m;
    sip_round(s);
    sip_round(s);
    s->v0 ^= m;
}

static void sip_update(sip *s, const void *data, size_t n)
{
    const unsigned char *p = data;
    s->len += n;
    for (size_t i = 0; i < n; i++) {
        s->tail |= (uint64_t)p[i] << (8 * s->ntail);
        if (++s->ntail == 8) {
            sip_block(s, s->tail);
            s->tail = 0;
            s->ntail = 0;
        }
    }
}

static void sip_final(sip *s, uint64_t *h1, uint64_t *h2)
{
    sip_block(s, s->tail | (s->len << 56));
    s->v2 ^= 0xee;
    for (int i = 0; i < 4; i++)
        sip_round(s);
    *h1 = s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
    s->v1 ^= 0xdd;
    for (int i = 0; i < 4; i++)
        sip_round(s);
    *h2 = s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

/* Exposed for the test against the reference vectors (not in the header: internal). */
void pk__siphash128(const uint64_t key[2], const void *data, size_t n, uint64_t out[2]);
void pk__siphash128(const uint64_t key[2], const void *data, size_t n, uint64_t out[2])
{
    sip s;
    sip_init(&s, key[0], key[1]);
    sip_update(&s, data, n);
    sip_final(&s, &out[0], &out[1]);
}

/* ---- the local limiter ---- */

typedef struct slot {
    uint64_t h1; /* 0 = empty; live entries always have bit 0 set */
    uint64_t h2;
    int64_t tat;
} slot;

typedef struct shard {
    alignas(64) pthread_mutex_t mu;
    slot *slots;
    size_t mask;
    size_t count, max;
    size_t cursor; /* sweep position */
    uint64_t rng;
    uint64_t evictions, expired;
} shard;

typedef struct local_limiter {
    pk_limiter base;
    const pk_clock *clock;
    uint64_t key[2];
    size_t max_keys;
    size_t memory;
    shard shards[SHARDS];
} local_limiter;

static inline size_t home(const shard *s, uint64_t h1)
{
    return (size_t)(h1 >> 1) & s->mask;
}

static ptrdiff_t find(const shard *s, uint64_t h1, uint64_t h2)
{
    for (size_t i = home(s, h1);; i = (i + 1) & s->mask) {
        if (s->slots[i].h1 == 0) return -1;
        if (s->slots[i].h1 == h1 && s->slots[i].h2 == h2) return (ptrdiff_t)i;
    }
}

/* Backward-shift deletion: pulls later members of the probe run into the hole so that every entry
 * stays reachable from its home slot without tombstones. */
static void remove_at(shard *s, size_t hole)
{
    size_t j = hole;
    for (;;) {
        j = (j + 1) & s->mask;
        if (s->slots[j].h1 == 0) break;
        size_t k = home(s, s->slots[j].h1);
        /* the entry at j may move to the hole only if its home is not in (hole, j] (cyclically) */
        bool stays = hole <= j ? (hole < k && k <= j) : (hole < k || k <= j);
        if (stays) continue;
        s->slots[hole] = s->slots[j];
        hole = j;
    }
    s->slots[hole] = (slot){0, 0, 0};
    s->count--;
}

/* Examines up to `budget` slots from the sweep cursor, removing idle entries (TAT <= now). */
static size_t sweep_some(shard *s, int64_t now, size_t budget)
{
    size_t removed = 0;
    for (size_t n = 0; n < budget && s->count > 0; n++) {
        slot *e = &s->slots[s->cursor];
        if (e->h1 != 0 && e->tat <= now) {
            remove_at(s, s->cursor); /* a shifted entry may now sit at the cursor: look again */
            removed++;
        } else {
            s->cursor = (s->cursor + 1) & s->mask;
        }
    }
    s->expired += removed;
    return removed;
}

static uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* Makes room in a full shard: idle entries first, else the oldest TAT of a random sample. */
static void make_room(shard *s, int64_t now)
{
    if (sweep_some(s, now, SWEEP_STEP) > 0) return;
    size_t i = (size_t)xorshift(&s->rng) & s->mask, victim = SIZE_MAX;
    for (int seen = 0; seen < SAMPLE; i = (i + 1) & s->mask) {
        if (s->slots[i].h1 == 0) continue;
        if (victim == SIZE_MAX || s->slots[i].tat < s->slots[victim].tat) victim = i;
        seen++;
    }
    remove_at(s, victim);
    s->evictions++;
}

static void insert(shard *s, uint64_t h1, uint64_t h2, int64_t tat)
{
    size_t i = home(s, h1);
    while (s->slots[i].h1 != 0)
        i = (i + 1) & s->mask;
    s->slots[i] = (slot){h1, h2, tat};
    s->count++;
}

static pk_err *local_decide(pk_limiter *l, const char *key, size_t keylen, const pk_rate_class *cls,
                            int64_t now, pk_rate_decision *out)
{
    local_limiter *ll = (local_limiter *)l;
    pk_err *e = pk_rate_class_check(cls);
    if (e) return e;
    sip h;
    sip_init(&h, ll->key[0], ll->key[1]);
    sip_update(&h, cls->name, strlen(cls->name) + 1); /* the NUL separates class from key */
    sip_update(&h, key, keylen);
    uint64_t h1, h2;
    sip_final(&h, &h1, &h2);
    h1 |= 1;
    shard *s = &ll->shards[h2 % SHARDS];

    pthread_mutex_lock(&s->mu);
    ptrdiff_t i = find(s, h1, h2);
    int64_t tat = i >= 0 ? s->slots[i].tat : INT64_MIN;
    pk_gcra(cls, &tat, now, out);
    if (out->allowed) {
        if (i >= 0) {
            s->slots[i].tat = tat;
        } else {
            if (s->count >= s->max) make_room(s, now);
            insert(s, h1, h2, tat);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void local_destroy(pk_limiter *l)
{
    local_limiter *ll = (local_limiter *)l;
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_destroy(&ll->shards[i].mu);
        free(ll->shards[i].slots);
    }
    free(ll);
}

static const pk_limiter_ops local_ops = {"local", local_decide, local_destroy};

pk_limiter *pk_limiter_local_new(size_t max_keys, const pk_clock *clock)
{
    if (max_keys == 0) max_keys = PK_LIMITER_DEFAULT_MAX_KEYS;
    if (max_keys < SHARDS) max_keys = SHARDS;
    local_limiter *ll = aligned_alloc(64, (sizeof *ll + 63) / 64 * 64);
    if (!ll) abort();
    memset(ll, 0, sizeof *ll);
    ll->base.ops = &local_ops;
    ll->clock = clock;
    pk_random_bytes(ll->key, sizeof ll->key);
    size_t per = max_keys / SHARDS, cap = 4;
    while (cap < per * 2)
        cap *= 2;
    ll->max_keys = per * SHARDS;
    ll->memory = sizeof *ll;
    for (int i = 0; i < SHARDS; i++) {
        shard *s = &ll->shards[i];
        pthread_mutex_init(&s->mu, NULL);
        s->slots = calloc(cap, sizeof *s->slots);
        if (!s->slots) abort();
        s->mask = cap - 1;
        s->max = per;
        s->rng = pk_rand64() | 1;
        ll->memory += cap * sizeof *s->slots;
    }
    return &ll->base;
}

void pk_limiter_local_stats_get(pk_limiter *l, pk_limiter_local_stats *out)
{
    local_limiter *ll = (local_limiter *)l;
    memset(out, 0, sizeof *out);
    if (l->ops != &local_ops) return;
    out->max_keys = ll->max_keys;
    out->memory = ll->memory;
    for (int i = 0; i < SHARDS; i++) {
        shard *s = &ll->shards[i];
        pthread_mutex_lock(&s->mu);
        out->entries += s->count;
        out->evictions += s->evictions;
        out->expired += s->expired;
        pthread_mutex_unlock(&s->mu);
    }
}

size_t pk_limiter_local_sweep(pk_limiter *l)
{
    local_limiter *ll = (local_limiter *)l;
    if (l->ops != &local_ops) return 0;
    int64_t now = pk_clock_now(ll->clock);
    size_t removed = 0;
    for (int i = 0; i < SHARDS; i++) {
        shard *s = &ll->shards[i];
        pthread_mutex_lock(&s->mu);
        /* one full pass plus the length of the run that may wrap around past the start */
        removed += sweep_some(s, now, 2 * (s->mask + 1));
        pthread_mutex_unlock(&s->mu);
    }
    return removed;
}

/* ---- headers ---- */

static size_t sf_string(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    out[n++] = '"';
    for (size_t i = 0; s[i] && i < 64 && n + 3 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') out[n++] = '\\';
        out[n++] = c >= 0x20 && c <= 0x7e ? (char)c : '_';
    }
    out[n++] = '"';
    out[n] = 0;
    return n;
}

static int64_t ceil_s(int64_t ns)
{
    return ns <= 0 ? 0 : (ns + NS_PER_S - 1) / NS_PER_S;
}

void pk_rate_headers_format(const pk_rate_class *cls, const pk_rate_decision *d, pk_rate_headers *out)
{
    char name[140];
    sf_string(name, sizeof name, cls->name);
    int64_t w = ceil_s(cls->period_ns);
    if (w < 1) w = 1;
    /* q requests in w seconds at the class's sustained rate: rate * w / period */
    int64_t q = (int64_t)((__int128)cls->rate * w * NS_PER_S / cls->period_ns);
    /* hand-formatted: this runs on every request (name is at most 139 bytes, numbers 20 each) */
    char *p = pk_fmt_str(out->policy, name);
    p = pk_fmt_i64(pk_fmt_str(p, ";q="), q);
    p = pk_fmt_i64(pk_fmt_str(p, ";w="), w);
    *p = '\0';
    p = pk_fmt_str(out->state, name);
    p = pk_fmt_i64(pk_fmt_str(p, ";r="), d->remaining);
    p = pk_fmt_i64(pk_fmt_str(p, ";t="), ceil_s(d->reset_after_ns));
    *p = '\0';
}

int64_t pk_rate_retry_after_s(const pk_rate_decision *d)
{
    if (d->allowed) return 0;
    int64_t s = ceil_s(d->retry_after_ns);
    return s < 1 ? 1 : s;
}
