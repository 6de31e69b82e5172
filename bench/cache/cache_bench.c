/*
 * cache_bench: hit rates of the L1 cache (src/foundation/cache.c) against a plain LRU and the ideal
 * static cache on seeded synthetic traces, plus get-hit throughput. Build and run: bench/cache/run.sh.
 *
 * Traces (100,000 keys, 2,000,000 requests, popularity ranks shuffled over key ids):
 *   zipf-0.80, zipf-0.99   independent Zipf draws
 *   scan-0.99              blocks of 100,000 requests: 80,000 Zipf-0.99 draws, then a sequential scan
 *                          of 20,000 keys that appear nowhere else in the trace (20% of requests)
 *   shift-0.99             Zipf-0.99 whose popularity order is reshuffled every 1/8 of the trace (a
 *                          policy must forget: checks that decay and window tuning do not overfit the
 *                          stationary traces)
 * Every trace is replayed with a capacity of 1%, 10% and 20% of the key space, in entries: the L1 cache
 * gets capacity x pk_cache_charge(key, value) bytes (all entries have the same size), the LRU and the
 * ideal static cache (the k most requested keys of the trace, preloaded) hold the same k entries, as
 * does the exact LFU (the learning bound, see lfu_hit_rate).
 * The L1 cache runs exactly as the server configures it (default shard count) and is replayed through
 * pk_cache_get_or_load, the server's load path.
 *
 * Usage: cache_bench [--quick] [--no-throughput] [--seed N] [--shards N]
 */
#include "foundation/cache.h"
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NKEYS 100000u
#define NREQ 2000000u
#define VALUE_LEN 100u

static uint64_t rng_next(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) / 9007199254740992.0;
}

typedef struct zipf {
    double *cdf;
    uint32_t *perm; /* rank -> key id */
    uint32_t n;
} zipf;

static void zipf_shuffle(zipf *z, uint64_t *rng);

static void zipf_init(zipf *z, uint32_t n, double s, uint64_t *rng)
{
    z->n = n;
    z->cdf = malloc(n * sizeof *z->cdf);
    z->perm = malloc(n * sizeof *z->perm);
    double sum = 0;
    for (uint32_t i = 0; i < n; i++)
        sum += 1.0 / pow(i + 1, s);
    double acc = 0;
    for (uint32_t i = 0; i < n; i++) {
        acc += 1.0 / pow(i + 1, s) / sum;
        z->cdf[i] = acc;
        z->perm[i] = i;
    }
    zipf_shuffle(z, rng);
}

static uint32_t zipf_draw(const zipf *z, uint64_t *rng)
{
    double u = rng_unit(rng);
    uint32_t lo = 0, hi = z->n - 1;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (z->cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return z->perm[lo];
}

static void zipf_free(zipf *z)
{
    free(z->cdf);
    free(z->perm);
}

typedef struct trace {
    const char *name;
    uint32_t *req;
    uint32_t n;
    uint32_t key_space; /* ids are < key_space */
    uint32_t phase_len; /* requests per popularity phase (the whole trace if it never shifts) */
    uint32_t nphases;
    uint32_t *rank; /* [phase][key id] -> popularity rank in the generating distribution */
} trace;

/* Shuffles the rank -> key id map (a new popularity order over the same keys). */
static void zipf_shuffle(zipf *z, uint64_t *rng)
{
    for (uint32_t i = z->n - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(rng_next(rng) % (i + 1));
        uint32_t t = z->perm[i];
        z->perm[i] = z->perm[j];
        z->perm[j] = t;
    }
}

/* `shift` > 0: the popularity order is reshuffled every `shift` requests (scan keys are not ranked). */
static trace make_zipf_trace(const char *name, double s, uint64_t seed, uint32_t nreq, bool scans,
                             uint32_t shift)
{
    uint64_t rng = seed;
    zipf z;
    zipf_init(&z, NKEYS, s, &rng);
    uint32_t phase_len = shift ? shift : nreq;
    uint32_t nphases = (nreq + phase_len - 1) / phase_len;
    trace t = {name,
               malloc(nreq * sizeof(uint32_t)),
               nreq,
               NKEYS,
               phase_len,
               nphases,
               malloc((size_t)nphases * NKEYS * sizeof(uint32_t))};
    uint32_t next_scan = NKEYS;
    for (uint32_t i = 0; i < nreq; i++) {
        if (i % phase_len == 0) {
            if (i) zipf_shuffle(&z, &rng);
            for (uint32_t r = 0; r < NKEYS; r++)
                t.rank[(size_t)(i / phase_len) * NKEYS + z.perm[r]] = r;
        }
        if (scans && i % 100000 >= 80000)
            t.req[i] = next_scan++;
        else
            t.req[i] = zipf_draw(&z, &rng);
    }
    t.key_space = next_scan;
    zipf_free(&z);
    return t;
}

/* ---- ideal static cache: the k most requested keys ---- */

static int cmp_desc(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static double ideal_hit_rate(const trace *t, uint32_t k)
{
    uint32_t *count = calloc(t->key_space, sizeof *count);
    for (uint32_t i = 0; i < t->n; i++)
        count[t->req[i]]++;
    qsort(count, t->key_space, sizeof *count, cmp_desc);
    uint64_t hits = 0;
    for (uint32_t i = 0; i < k && i < t->key_space; i++)
        hits += count[i];
    free(count);
    return (double)hits / t->n;
}

/* Online oracle: holds the k most popular keys of the generating distribution (it knows the
 * distribution, not the trace; on a shifting trace it switches to the new top k at each shift) and pays
 * one compulsory miss per key it holds. No online policy can learn popularity faster, so ideal - oracle
 * is the part of the gap that no cache can close. */
static double oracle_hit_rate(const trace *t, uint32_t k)
{
    unsigned char *seen = calloc(t->key_space, 1);
    uint64_t hits = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        const uint32_t *rank = t->rank + (size_t)(i / t->phase_len) * NKEYS;
        if (i && i % t->phase_len == 0) /* keys leaving the top k are dropped */
            for (uint32_t id = 0; id < NKEYS; id++)
                if (rank[id] >= k) seen[id] = 0;
        uint32_t id = t->req[i];
        if (id >= NKEYS || rank[id] >= k) continue;
        hits += seen[id];
        seen[id] = 1;
    }
    free(seen);
    return (double)hits / t->n;
}

/* ---- exact LFU: the learning bound ----
 * Exact, unbounded request counts of every key ever seen (no decay, no sketch error, no sharding), the
 * cache holding the k keys with the highest counts (a miss replaces the least counted entry if its count
 * is strictly higher). On a stationary trace this is the best a policy that learns popularity from
 * counts can do (count rank = posterior rank), so L1 - LFU is the cost of the sketch, the decay and the
 * W-TinyLFU structure; on a shifting trace its infinite memory makes it slow to follow. */
typedef struct lfu_heap {
    uint32_t *key, *pos, *count; /* heap of cached ids; pos[id] = heap index; count[id] = requests */
    uint32_t n;
} lfu_heap;

static void lfu_swap(lfu_heap *h, uint32_t a, uint32_t b)
{
    uint32_t t = h->key[a];
    h->key[a] = h->key[b];
    h->key[b] = t;
    h->pos[h->key[a]] = a;
    h->pos[h->key[b]] = b;
}

static void lfu_down(lfu_heap *h, uint32_t p)
{
    for (;;) {
        uint32_t l = 2 * p + 1, r = l + 1, m = p;
        if (l < h->n && h->count[h->key[l]] < h->count[h->key[m]]) m = l;
        if (r < h->n && h->count[h->key[r]] < h->count[h->key[m]]) m = r;
        if (m == p) return;
        lfu_swap(h, p, m);
        p = m;
    }
}

static double lfu_hit_rate(const trace *t, uint32_t k)
{
    lfu_heap h = {malloc(k * sizeof(uint32_t)), malloc(t->key_space * sizeof(uint32_t)),
                  calloc(t->key_space, sizeof(uint32_t)), 0};
    unsigned char *in = calloc(t->key_space, 1);
    uint64_t hits = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        uint32_t id = t->req[i];
        h.count[id]++;
        if (in[id]) {
            hits++;
            lfu_down(&h, h.pos[id]);
        } else if (h.n < k) {
            uint32_t p = h.n++;
            h.key[p] = id;
            h.pos[id] = p;
            in[id] = 1;
            while (p && h.count[h.key[(p - 1) / 2]] > h.count[h.key[p]]) {
                lfu_swap(&h, p, (p - 1) / 2);
                p = (p - 1) / 2;
            }
        } else if (h.count[id] > h.count[h.key[0]]) {
            in[h.key[0]] = 0;
            h.key[0] = id;
            h.pos[id] = 0;
            in[id] = 1;
            lfu_down(&h, 0);
        }
    }
    free(h.key);
    free(h.pos);
    free(h.count);
    free(in);
    return (double)hits / t->n;
}

/* ---- plain LRU over key ids (exact, unsharded) ---- */

static double lru_hit_rate(const trace *t, uint32_t k)
{
    uint32_t none = UINT32_MAX;
    uint32_t *prev = malloc(t->key_space * sizeof *prev), *next = malloc(t->key_space * sizeof *next);
    unsigned char *in = calloc(t->key_space, 1);
    uint32_t head = none, tail = none, size = 0; /* head = MRU */
    uint64_t hits = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        uint32_t id = t->req[i];
        if (in[id]) {
            hits++;
            if (head == id) continue;
            next[prev[id]] = next[id]; /* unlink */
            if (next[id] != none)
                prev[next[id]] = prev[id];
            else
                tail = prev[id];
        } else {
            if (size == k) { /* evict the LRU */
                uint32_t v = tail;
                in[v] = 0;
                tail = prev[v];
                if (tail != none)
                    next[tail] = none;
                else
                    head = none;
                size--;
            }
            in[id] = 1;
            size++;
        }
        prev[id] = none;
        next[id] = head;
        if (head != none) prev[head] = id;
        head = id;
        if (tail == none) tail = id;
    }
    free(prev);
    free(next);
    free(in);
    return (double)hits / t->n;
}

/* ---- the L1 cache ---- */

static pk_err *load_value(void *ud, const void *key, size_t klen, pk_cache_loaded *out)
{
    (void)key;
    (void)klen;
    pk_buf_append(&out->value, ud, VALUE_LEN);
    out->version = 1;
    return NULL;
}

static double l1_hit_rate(const trace *t, uint32_t k, unsigned shards, uint64_t seed, pk_cache_counters *st)
{
    int64_t now = 0;
    pk_clock clk = {pk_fake_clock_now, &now};
    size_t charge = pk_cache_charge(sizeof(uint64_t), VALUE_LEN);
    pk_cache_config cfg = {.max_bytes = (size_t)k * charge,
                           .shards = shards,
                           .expected_entry_bytes = charge,
                           .clock = &clk,
                           .seed = seed};
    pk_cache *c = pk_cache_new(&cfg);
    char value[VALUE_LEN];
    memset(value, 'v', sizeof value);
    for (uint32_t i = 0; i < t->n; i++) {
        uint64_t key = t->req[i];
        pk_cache_val *v = NULL;
        pk_err *e =
            pk_cache_get_or_load(c, &key, sizeof key, 3600LL * 1000000000LL, 0, load_value, value, &v);
        if (e) abort();
        pk_cache_val_release(v);
    }
    pk_cache_stats(c, st);
    pk_cache_free(c);
    return (double)st->hits / t->n;
}

/* ---- throughput of get hits ---- */

typedef struct tp_arg {
    pk_cache *c;
    uint32_t *keys;
    uint32_t nkeys;
    uint64_t ops;
    double secs;
} tp_arg;

static void *tp_run(void *p)
{
    tp_arg *a = p;
    int64_t t0 = pk_mono_ns(), deadline = t0 + 1000000000LL;
    uint64_t ops = 0;
    uint32_t i = 0;
    while (1) {
        for (int j = 0; j < 4096; j++) {
            uint64_t key = a->keys[i];
            if (++i == a->nkeys) i = 0;
            pk_cache_val *v = pk_cache_get(a->c, &key, sizeof key);
            if (!v) abort();
            pk_cache_val_release(v);
        }
        ops += 4096;
        if (pk_mono_ns() >= deadline) break;
    }
    a->ops = ops;
    a->secs = (double)(pk_mono_ns() - t0) / 1e9;
    return NULL;
}

static double throughput(unsigned nthreads, unsigned shards, uint64_t seed)
{
    pk_cache_config cfg = {.shards = shards, .seed = seed}; /* default 64 MiB budget */
    pk_cache *c = pk_cache_new(&cfg);
    char value[VALUE_LEN];
    memset(value, 'v', sizeof value);
    enum { RESIDENT = 10000, SEQ = 1 << 20 };
    for (uint64_t k = 0; k < RESIDENT; k++)
        pk_cache_put(c, &k, sizeof k, value, sizeof value, 1, 0);
    tp_arg args[2];
    pthread_t th[2];
    uint64_t rng = seed;
    zipf z;
    zipf_init(&z, RESIDENT, 0.99, &rng);
    for (unsigned t = 0; t < nthreads; t++) {
        args[t] = (tp_arg){.c = c, .keys = malloc(SEQ * sizeof(uint32_t)), .nkeys = SEQ};
        for (uint32_t i = 0; i < SEQ; i++)
            args[t].keys[i] = zipf_draw(&z, &rng);
    }
    for (unsigned t = 0; t < nthreads; t++)
        pthread_create(&th[t], NULL, tp_run, &args[t]);
    double total = 0;
    for (unsigned t = 0; t < nthreads; t++) {
        pthread_join(th[t], NULL);
        total += (double)args[t].ops / args[t].secs;
        free(args[t].keys);
    }
    zipf_free(&z);
    pk_cache_free(c);
    return total;
}

int main(int argc, char **argv)
{
    uint64_t seed = 42;
    unsigned shards = 0; /* 0 = the cache's default, as the server uses it */
    uint32_t nreq = NREQ;
    bool no_tp = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            nreq = NREQ / 10;
        else if (!strcmp(argv[i], "--no-throughput"))
            no_tp = true;
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--shards") && i + 1 < argc)
            shards = (unsigned)strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: %s [--quick] [--no-throughput] [--seed N] [--shards N]\n", argv[0]);
            return 2;
        }
    }
    enum { NTRACES = 4 };
    trace traces[NTRACES] = {
        make_zipf_trace("zipf-0.80", 0.80, seed, nreq, false, 0),
        make_zipf_trace("zipf-0.99", 0.99, seed + 1, nreq, false, 0),
        make_zipf_trace("scan-0.99", 0.99, seed + 2, nreq, true, 0),
        make_zipf_trace("shift-0.99", 0.99, seed + 3, nreq, false, nreq / 8),
    };
    const double pcts[3] = {0.01, 0.10, 0.20};
    printf("keys %u, requests %u per trace, seed %llu, L1 shards %u%s, entry charge %zu bytes\n\n", NKEYS,
           nreq, (unsigned long long)seed, shards ? shards : 16, shards ? "" : " (default)",
           pk_cache_charge(8, VALUE_LEN));
    printf("| trace | capacity | entries | L1 (W-TinyLFU) | LRU | exact LFU | ideal static | online oracle | "
           "L1 - LRU | ideal - L1 | oracle - L1 |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int ti = 0; ti < NTRACES; ti++) {
        for (int pi = 0; pi < 3; pi++) {
            uint32_t k = (uint32_t)(pcts[pi] * NKEYS + 0.5);
            pk_cache_counters st;
            double l1 = l1_hit_rate(&traces[ti], k, shards, seed, &st);
            double lru = lru_hit_rate(&traces[ti], k);
            double lfu = lfu_hit_rate(&traces[ti], k);
            double ideal = ideal_hit_rate(&traces[ti], k);
            double oracle = oracle_hit_rate(&traces[ti], k);
            printf(
                "| %s | %.0f%% | %u | %.1f%% | %.1f%% | %.1f%% | %.1f%% | %.1f%% | %+.1f | %.1f | %.1f |\n",
                traces[ti].name, pcts[pi] * 100, k, l1 * 100, lru * 100, lfu * 100, ideal * 100, oracle * 100,
                (l1 - lru) * 100, (ideal - l1) * 100, (oracle - l1) * 100);
            fflush(stdout);
        }
    }
    for (int ti = 0; ti < NTRACES; ti++) {
        free(traces[ti].req);
        free(traces[ti].rank);
    }
    if (no_tp) return 0;
    printf("\nget (hit) throughput, 10,000 resident keys, Zipf-0.99 lookups, default config:\n");
    printf("  1 thread : %.2f M ops/s\n", throughput(1, shards, seed) / 1e6);
    printf("  2 threads: %.2f M ops/s (total)\n", throughput(2, shards, seed) / 1e6);
    return 0;
}
