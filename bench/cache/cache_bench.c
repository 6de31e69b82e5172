/*
 * cache_bench: hit rates of the L1 cache (src/foundation/cache.c) against a plain LRU and the ideal
 * static cache on seeded synthetic traces, plus get-hit throughput. Build and run: bench/cache/run.sh.
 *
 * Traces (100,000 keys, 2,000,000 requests, popularity ranks shuffled over key ids):
 *   zipf-0.80, zipf-0.99   independent Zipf draws
 *   scan-0.99              blocks of 100,000 requests: 80,000 Zipf-0.99 draws, then a sequential scan
 *                          of 20,000 keys that appear nowhere else in the trace (20% of requests)
 * Every trace is replayed with a capacity of 1%, 10% and 20% of the key space, in entries: the L1 cache
 * gets capacity x pk_cache_charge(key, value) bytes (all entries have the same size), the LRU and the
 * ideal static cache (the k most requested keys of the trace, preloaded) hold the same k entries.
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
    for (uint32_t i = n - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(rng_next(rng) % (i + 1));
        uint32_t t = z->perm[i];
        z->perm[i] = z->perm[j];
        z->perm[j] = t;
    }
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
    uint32_t *rank;     /* key id -> popularity rank in the generating distribution (scan keys: none) */
} trace;

static trace make_zipf_trace(const char *name, double s, uint64_t seed, uint32_t nreq, bool scans)
{
    uint64_t rng = seed;
    zipf z;
    zipf_init(&z, NKEYS, s, &rng);
    trace t = {name, malloc(nreq * sizeof(uint32_t)), nreq, NKEYS, malloc(NKEYS * sizeof(uint32_t))};
    for (uint32_t r = 0; r < NKEYS; r++)
        t.rank[z.perm[r]] = r;
    uint32_t next_scan = NKEYS;
    for (uint32_t i = 0; i < nreq; i++) {
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
 * distribution, not the trace) and pays one compulsory miss per key. No online policy can learn
 * popularity faster, so ideal - oracle is the part of the gap that no cache can close. */
static double oracle_hit_rate(const trace *t, uint32_t k)
{
    unsigned char *seen = calloc(t->key_space, 1);
    uint64_t hits = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        uint32_t id = t->req[i];
        if (id >= NKEYS || t->rank[id] >= k) continue;
        hits += seen[id];
        seen[id] = 1;
    }
    free(seen);
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
    trace traces[3] = {
        make_zipf_trace("zipf-0.80", 0.80, seed, nreq, false),
        make_zipf_trace("zipf-0.99", 0.99, seed + 1, nreq, false),
        make_zipf_trace("scan-0.99", 0.99, seed + 2, nreq, true),
    };
    const double pcts[3] = {0.01, 0.10, 0.20};
    printf("keys %u, requests %u per trace, seed %llu, L1 shards %u%s, entry charge %zu bytes\n\n", NKEYS,
           nreq, (unsigned long long)seed, shards ? shards : 16, shards ? "" : " (default)",
           pk_cache_charge(8, VALUE_LEN));
    printf("| trace | capacity | entries | L1 (W-TinyLFU) | LRU | ideal static | online oracle | L1 - LRU | "
           "ideal - L1 | oracle - L1 |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    for (int ti = 0; ti < 3; ti++) {
        for (int pi = 0; pi < 3; pi++) {
            uint32_t k = (uint32_t)(pcts[pi] * NKEYS + 0.5);
            pk_cache_counters st;
            double l1 = l1_hit_rate(&traces[ti], k, shards, seed, &st);
            double lru = lru_hit_rate(&traces[ti], k);
            double ideal = ideal_hit_rate(&traces[ti], k);
            double oracle = oracle_hit_rate(&traces[ti], k);
            printf("| %s | %.0f%% | %u | %.1f%% | %.1f%% | %.1f%% | %.1f%% | %+.1f | %.1f | %.1f |\n",
                   traces[ti].name, pcts[pi] * 100, k, l1 * 100, lru * 100, ideal * 100, oracle * 100,
                   (l1 - lru) * 100, (ideal - l1) * 100, (oracle - l1) * 100);
            fflush(stdout);
        }
    }
    for (int ti = 0; ti < 3; ti++)
        free(traces[ti].req);
    if (no_tp) return 0;
    printf("\nget (hit) throughput, 10,000 resident keys, Zipf-0.99 lookups, default config:\n");
    printf("  1 thread : %.2f M ops/s\n", throughput(1, shards, seed) / 1e6);
    printf("  2 threads: %.2f M ops/s (total)\n", throughput(2, shards, seed) / 1e6);
    return 0;
}
