/* Unit tests of the L1 cache (src/foundation/cache.h). Time is a fake clock except for the waiter
 * deadline and the multithreaded tests, which are bounded by iteration counts. */
#include "foundation/cache.h"
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define SEC 1000000000LL

static int64_t now;
static pk_clock fake = {pk_fake_clock_now, &now};

static pk_cache *new_cache(size_t max_bytes, unsigned shards)
{
    now = 1000 * SEC;
    pk_cache_config cfg = {.max_bytes = max_bytes,
                           .shards = shards,
                           .default_ttl_ns = 10 * SEC,
                           .negative_ttl_ns = 1 * SEC,
                           .expected_entry_bytes = 200,
                           .clock = &fake,
                           .seed = 12345};
    return pk_cache_new(&cfg);
}

static pk_cache_put_result put_str(pk_cache *c, const char *k, const char *v, int64_t version)
{
    return pk_cache_put(c, k, strlen(k), v, strlen(v), version, 0);
}

static pk_cache_val *get_str(pk_cache *c, const char *k)
{
    return pk_cache_get(c, k, strlen(k));
}

static bool cached(pk_cache *c, const char *k)
{
    pk_cache_val *v = get_str(c, k);
    pk_cache_val_release(v);
    return v != NULL;
}

Test(cache, put_get_miss_and_stats)
{
    pk_cache *c = new_cache(0, 0);
    cr_assert_eq(put_str(c, "note:1", "hello", 7), PK_CACHE_STORED);
    pk_cache_val *v = get_str(c, "note:1");
    cr_assert_not_null(v);
    cr_assert_eq(v->len, 5);
    cr_assert_str_eq(v->data, "hello");
    cr_assert_eq(v->version, 7);
    cr_assert(!v->negative);
    pk_cache_val_release(v);
    cr_assert_null(get_str(c, "note:2"));
    cr_assert_null(get_str(c, "note:"), "a prefix is another key");
    pk_cache_counters st;
    pk_cache_stats(c, &st);
    cr_assert_eq(st.hits, 1);
    cr_assert_eq(st.misses, 2);
    cr_assert_eq(st.entries, 1);
    cr_assert_eq(st.bytes, pk_cache_charge(6, 5));
    cr_assert_eq(st.max_bytes, 64u << 20);
    pk_cache_free(c);
}

Test(cache, ttl_expiry_by_fake_clock)
{
    pk_cache *c = new_cache(0, 4);
    put_str(c, "a", "1", 1);
    pk_cache_put(c, "b", 1, "2", 1, 1, 30 * SEC);
    now += 9 * SEC;
    cr_assert(cached(c, "a"));
    now += 1 * SEC; /* exactly at expiry: never returned */
    cr_assert(!cached(c, "a"));
    cr_assert(cached(c, "b"));
    now += 25 * SEC;
    cr_assert(!cached(c, "b"));
    pk_cache_counters st;
    pk_cache_stats(c, &st);
    cr_assert_eq(st.expirations, 2);
    cr_assert_eq(st.entries, 0);
    cr_assert_eq(st.bytes, 0);
    pk_cache_free(c);
}

Test(cache, negative_entries_use_the_short_ttl)
{
    pk_cache *c = new_cache(0, 4);
    pk_cache_put_opts o = {.negative = true, .version = 3};
    cr_assert_eq(pk_cache_put_ex(c, "gone", 4, NULL, 0, &o), PK_CACHE_STORED);
    put_str(c, "here", "x", 1);
    pk_cache_val *v = get_str(c, "gone");
    cr_assert_not_null(v);
    cr_assert(v->negative);
    cr_assert_eq(v->len, 0);
    cr_assert_str_eq(v->data, "");
    pk_cache_val_release(v);
    now += 1 * SEC;
    cr_assert(!cached(c, "gone"));
    cr_assert(cached(c, "here"));
    pk_cache_counters st;
    pk_cache_stats(c, &st);
    cr_assert_eq(st.negative_hits, 1);
    cr_assert_eq(st.hits, 2);
    pk_cache_free(c);
}

Test(cache, put_if_newer_never_goes_back)
{
    pk_cache *c = new_cache(0, 0);
    put_str(c, "k", "v5", 5);
    cr_assert_eq(pk_cache_put_if_newer(c, "k", 1, "v4", 2, 4, 0), PK_CACHE_STALE);
    cr_assert_eq(pk_cache_put_if_newer(c, "k", 1, "v5b", 3, 5, 0), PK_CACHE_STALE);
    pk_cache_val *v = get_str(c, "k");
    cr_assert_str_eq(v->data, "v5");
    pk_cache_val_release(v);
    cr_assert_eq(pk_cache_put_if_newer(c, "k", 1, "v6", 2, 6, 0), PK_CACHE_STORED);
    v = get_str(c, "k");
    cr_assert_str_eq(v->data, "v6");
    cr_assert_eq(v->version, 6);
    pk_cache_val_release(v);
    /* an expired newer entry does not block an older live one */
    now += 11 * SEC;
    cr_assert_eq(pk_cache_put_if_newer(c, "k", 1, "v1", 2, 1, 0), PK_CACHE_STORED);
    pk_cache_counters st;
    pk_cache_stats(c, &st);
    cr_assert_eq(st.stale_puts, 2);
    pk_cache_free(c);
}

Test(cache, values_outlive_invalidation_and_replacement)
{
    pk_cache *c = new_cache(0, 0);
    put_str(c, "k", "first value", 1);
    pk_cache_val *old = get_str(c, "k");
    cr_assert(pk_cache_invalidate(c, "k", 1));
    cr_assert(!pk_cache_invalidate(c, "k", 1), "already gone");
    cr_assert(!cached(c, "k"));
    put_str(c, "k", "second", 2);
    pk_cache_val *cur = get_str(c, "k");
    pk_cache_free(c); /* even the cache may go away */
    cr_assert_str_eq(old->data, "first value");
    cr_assert_str_eq(cur->data, "second");
    pk_cache_val_release(old);
    pk_cache_val_release(cur);
}

Test(cache, replacement_updates_byte_accounting)
{
    pk_cache *c = new_cache(0, 0);
    char big[1000];
    memset(big, 'x', sizeof big);
    put_str(c, "k", "small", 1);
    pk_cache_put(c, "k", 1, big, sizeof big, 2, 0);
    pk_cache_counters st;
    pk_cache_stats(c, &st);
    cr_assert_eq(st.entries, 1);
    cr_assert_eq(st.bytes, pk_cache_charge(1, sizeof big));
    pk_cache_free(c);
}

Test(cache, stays_within_the_byte_budget)
{
    size_t charge = pk_cache_charge(8, 64);
    size_t budget = 4 * 25 * charge; /* 4 shards x 25 entries */
    pk_cache *c = new_cache(budget, 4);
    char val[64];
    memset(val, 'v', sizeof val);
    for (int i = 0; i < 2000; i++) {
        char key[9];
        snprintf(key, sizeof key, "k%07d", i % 700);
        pk_cache_val *v = pk_cache_get(c, key, 8);
        if (v)
            pk_cache_val_release(v);
        else
            pk_cache_put_if_newer(c, key, 8, val, sizeof val, 1, 0);
        pk_cache_counters st;
        pk_cache_stats(c, &st);
        cr_assert_leq(st.bytes, budget);
        cr_assert_eq(st.bytes, st.entries * charge);
    }
    pk_cache_counters st;
    pk_cache_stats(c, &st);
    cr_assert_geq(st.entries, 90, "the budget is used (%llu entries)", (unsigned long long)st.entries);
    cr_assert_gt(st.evictions, 0);
    cr_assert_gt(st.rejections, 0);
    cr_assert_leq(st.rejections, st.evictions);
    pk_cache_free(c);
}

Test(cache, entry_larger_than_a_shard_is_not_stored)
{
    pk_cache *c = new_cache(4 * 1000, 4); /* 1000 bytes per shard */
    static char big[2000];
    put_str(c, "k", "small", 1);
    cr_assert_eq(pk_cache_put(c, "k", 1, big, sizeof big, 2, 0), PK_CACHE_TOO_LARGE);
    cr_assert(!cached(c, "k"), "the superseded value must not survive");
    pk_cache_counters st;
    pk_cache_stats(c, &st);
    cr_assert_eq(st.bytes, 0);
    pk_cache_free(c);
}

/* The frequency sketch keeps a hot set through a scan of one-hit keys; an LRU would lose all of it. */
Test(cache, hot_keys_survive_a_scan)
{
    size_t charge = pk_cache_charge(8, 16);
    pk_cache *c = new_cache(100 * charge, 1);
    char key[9], val[16] = {0};
    for (int round = 0; round < 10; round++)
        for (int i = 0; i < 50; i++) {
            snprintf(key, sizeof key, "h%07d", i);
            pk_cache_val *v = pk_cache_get(c, key, 8);
            if (!v) pk_cache_put_if_newer(c, key, 8, val, sizeof val, 1, 0);
            pk_cache_val_release(v);
        }
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "s%07d", i);
        pk_cache_val *v = pk_cache_get(c, key, 8);
        if (!v) pk_cache_put_if_newer(c, key, 8, val, sizeof val, 1, 0);
        pk_cache_val_release(v);
    }
    int kept = 0;
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "h%07d", i);
        kept += cached(c, key);
    }
    cr_assert_geq(kept, 48, "only %d of 50 hot keys kept", kept);
    pk_cache_counters st;
    pk_cache_stats(c, &st);
    cr_assert_geq(st.rejections, 800, "%llu rejections, %llu evictions", (unsigned long long)st.rejections,
                  (unsigned long long)st.evictions);
    pk_cache_free(c);
}

Test(cache, load_ticket_refuses_puts_after_invalidation)
{
    pk_cache *c = new_cache(0, 0);
    uint64_t t = pk_cache_load_ticket(c, "k", 1);
    cr_assert_neq(t, 0);
    pk_cache_invalidate(c, "k", 1); /* a write happened while we were reading the store */
    pk_cache_put_opts o = {.version = 1, .if_newer = true, .ticket = t};
    cr_assert_eq(pk_cache_put_ex(c, "k", 1, "old", 3, &o), PK_CACHE_STALE);
    cr_assert(!cached(c, "k"));
    o.ticket = pk_cache_load_ticket(c, "k", 1);
    put_str(c, "k", "new", 2); /* a writer's put also invalidates */
    cr_assert_eq(pk_cache_put_ex(c, "k", 1, "old", 3, &o), PK_CACHE_STALE);
    o.ticket = pk_cache_load_ticket(c, "k", 1);
    o.version = 3;
    cr_assert_eq(pk_cache_put_ex(c, "k", 1, "v3", 2, &o), PK_CACHE_STORED);
    pk_cache_free(c);
}

Test(cache, generations)
{
    pk_cache *c = new_cache(0, 0);
    cr_assert_eq(pk_cache_generation(c, 0), 1);
    cr_assert_eq(pk_cache_bump_generation(c, 0), 2);
    cr_assert_eq(pk_cache_bump_generation(c, 0), 3);
    cr_assert_eq(pk_cache_generation(c, 0), 3);
    cr_assert_eq(pk_cache_generation(c, PK_CACHE_GROUPS - 1), 1);
    pk_cache_free(c);
}

Test(cache, purge_expired)
{
    pk_cache *c = new_cache(0, 4);
    char k[8];
    for (int i = 0; i < 5; i++) {
        snprintf(k, sizeof k, "k%d", i);
        pk_cache_put(c, k, strlen(k), "v", 1, 1, i < 3 ? 1 * SEC : 20 * SEC);
    }
    now += 2 * SEC;
    cr_assert_eq(pk_cache_purge_expired(c), 3);
    pk_cache_counters st;
    pk_cache_stats(c, &st);
    cr_assert_eq(st.entries, 2);
    cr_assert_eq(st.expirations, 3);
    pk_cache_free(c);
}

/* ---- loading ---- */

typedef struct loader_ctl {
    pk_cache *c;
    atomic_int calls;
    atomic_int started;
    atomic_int go; /* the loader blocks until go != 0 (when wait_go) */
    bool wait_go;
    unsigned wait_for_waiters; /* the loader blocks until this many callers wait on it */
    int64_t version;
    const char *fail_code; /* return this error */
} loader_ctl;

static void sleep_us(long us)
{
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

static pk_err *test_loader(void *ud, const void *key, size_t klen, pk_cache_loaded *out)
{
    loader_ctl *l = ud;
    atomic_fetch_add(&l->calls, 1);
    atomic_store(&l->started, 1);
    for (int i = 0; l->wait_for_waiters && i < 5000; i++) {
        pk_cache_counters st;
        pk_cache_stats(l->c, &st);
        if (st.load_waits >= l->wait_for_waiters) break;
        sleep_us(1000);
    }
    while (l->wait_go && !atomic_load(&l->go))
        sleep_us(200);
    if (l->fail_code) return pk_err_new(l->fail_code, 503, "store down");
    pk_buf_append(&out->value, key, klen);
    out->version = l->version;
    return NULL;
}

typedef struct caller {
    loader_ctl *l;
    const char *key;
    int64_t deadline;
    pk_cache_val *val;
    pk_err *err;
} caller;

static void *call_get_or_load(void *p)
{
    caller *a = p;
    a->err =
        pk_cache_get_or_load(a->l->c, a->key, strlen(a->key), 0, a->deadline, test_loader, a->l, &a->val);
    return NULL;
}

Test(cache, single_flight_one_load_for_concurrent_misses)
{
    enum { N = 8 };
    loader_ctl l = {.c = new_cache(0, 0), .wait_for_waiters = N - 1, .version = 9};
    caller a[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        a[i] = (caller){.l = &l, .key = "note:42"};
        pthread_create(&th[i], NULL, call_get_or_load, &a[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&l.calls), 1);
    for (int i = 0; i < N; i++) {
        cr_assert_null(a[i].err);
        cr_assert_eq(a[i].val, a[0].val, "every caller shares the one loaded value");
        cr_assert_str_eq(a[i].val->data, "note:42");
        cr_assert_eq(a[i].val->version, 9);
        pk_cache_val_release(a[i].val);
    }
    pk_cache_counters st;
    pk_cache_stats(l.c, &st);
    cr_assert_eq(st.loads, 1);
    cr_assert_eq(st.load_waits, N - 1);
    cr_assert(cached(l.c, "note:42"));
    pk_cache_free(l.c);
}

Test(cache, loader_error_reaches_waiters_and_is_not_cached)
{
    enum { N = 4 };
    loader_ctl l = {.c = new_cache(0, 0), .wait_for_waiters = N - 1, .fail_code = "unavailable"};
    caller a[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        a[i] = (caller){.l = &l, .key = "k"};
        pthread_create(&th[i], NULL, call_get_or_load, &a[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&l.calls), 1);
    for (int i = 0; i < N; i++) {
        cr_assert_not_null(a[i].err);
        cr_assert_null(a[i].val);
        cr_assert_str_eq(a[i].err->code, "unavailable");
        cr_assert_eq(a[i].err->status, 503);
        cr_assert(a[i].err->retryable);
        cr_assert_str_eq(a[i].err->message, "store down");
        pk_err_free(a[i].err);
    }
    cr_assert(!cached(l.c, "k"));
    l.fail_code = NULL;
    l.wait_for_waiters = 0;
    caller b = {.l = &l, .key = "k"};
    call_get_or_load(&b);
    cr_assert_null(b.err);
    cr_assert_eq(atomic_load(&l.calls), 2, "an error is not cached: the next call loads again");
    pk_cache_val_release(b.val);
    pk_cache_counters st;
    pk_cache_stats(l.c, &st);
    cr_assert_eq(st.load_errors, 1);
    pk_cache_free(l.c);
}

Test(cache, waiter_gives_up_at_its_deadline)
{
    loader_ctl l = {.c = new_cache(0, 0), .wait_go = true};
    caller leader = {.l = &l, .key = "slow"};
    pthread_t th;
    pthread_create(&th, NULL, call_get_or_load, &leader);
    while (!atomic_load(&l.started))
        sleep_us(100);
    caller w = {.l = &l, .key = "slow", .deadline = pk_mono_ns() + 20 * 1000000LL};
    int64_t t0 = pk_mono_ns();
    call_get_or_load(&w);
    cr_assert_not_null(w.err);
    cr_assert_str_eq(w.err->code, "timeout");
    cr_assert_eq(w.err->status, 504);
    cr_assert_geq(pk_mono_ns() - t0, 19 * 1000000LL);
    pk_err_free(w.err);
    atomic_store(&l.go, 1);
    pthread_join(th, NULL);
    cr_assert_null(leader.err);
    pk_cache_val_release(leader.val);
    cr_assert_eq(atomic_load(&l.calls), 1);
    pk_cache_free(l.c);
}

static pk_err *fast_loader(void *ud, const void *key, size_t klen, pk_cache_loaded *out)
{
    pk_buf_puts(&out->value, "fresh");
    out->version = *(int64_t *)ud;
    return NULL;
}

/* A load that started before an invalidation must not insert its result, and callers arriving after
 * the invalidation must not join it. */
Test(cache, invalidation_during_a_load_is_exact)
{
    loader_ctl l = {.c = new_cache(0, 0), .wait_go = true, .version = 1};
    caller slow = {.l = &l, .key = "k"};
    pthread_t th;
    pthread_create(&th, NULL, call_get_or_load, &slow);
    while (!atomic_load(&l.started))
        sleep_us(100);
    pk_cache_invalidate(l.c, "k", 1); /* the write committed version 2 */
    int64_t v2 = 2;
    pk_cache_val *v = NULL;
    /* a new caller starts its own load (joining the old one would block until the deadline) */
    pk_err *e = pk_cache_get_or_load(l.c, "k", 1, 0, pk_mono_ns() + 5 * SEC, fast_loader, &v2, &v);
    cr_assert_null(e);
    cr_assert_eq(v->version, 2);
    pk_cache_val_release(v);
    atomic_store(&l.go, 1);
    pthread_join(th, NULL);
    cr_assert_eq(slow.val->version, 1, "the old caller gets its own (concurrent) read");
    pk_cache_val_release(slow.val);
    v = get_str(l.c, "k");
    cr_assert_not_null(v);
    cr_assert_eq(v->version, 2, "the stale load did not overwrite the newer value");
    pk_cache_val_release(v);
    pk_cache_invalidate(l.c, "k", 1);
    /* and with nothing cached, a stale load does not insert at all */
    atomic_store(&l.go, 0);
    atomic_store(&l.started, 0);
    pthread_create(&th, NULL, call_get_or_load, &slow);
    while (!atomic_load(&l.started))
        sleep_us(100);
    pk_cache_invalidate(l.c, "k", 1);
    atomic_store(&l.go, 1);
    pthread_join(th, NULL);
    pk_cache_val_release(slow.val);
    cr_assert(!cached(l.c, "k"));
    pk_cache_counters st;
    pk_cache_stats(l.c, &st);
    cr_assert_eq(st.stale_puts, 2);
    pk_cache_free(l.c);
}

/* ---- the invalidation race, many threads ----
 * A "store" of versions; writers commit version+1, invalidate, then publish the version as committed.
 * A reader notes the published version before its get starts and must never see anything older. */

enum { RACE_KEYS = 8, RACE_ITERS = 20000 };

typedef struct race {
    pk_cache *c;
    atomic_llong store[RACE_KEYS];
    atomic_llong published[RACE_KEYS];
    pthread_mutex_t key_mu[RACE_KEYS];
    atomic_int violations;
    atomic_int stop;
} race;

typedef struct race_arg {
    race *r;
    uint64_t rng;
    int key; /* for the loader */
} race_arg;

static uint32_t rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*s >> 33);
}

static pk_err *store_loader(void *ud, const void *key, size_t klen, pk_cache_loaded *out)
{
    race_arg *a = ud;
    out->version = atomic_load(&a->r->store[a->key]);
    if (rnd(&a->rng) % 4 == 0) sched_yield(); /* widen the window between the read and the insert */
    pk_buf_append(&out->value, key, klen);
    return NULL;
}

static void *race_writer(void *p)
{
    race_arg *a = p;
    race *r = a->r;
    for (int i = 0; i < RACE_ITERS / 4; i++) {
        int k = (int)(rnd(&a->rng) % RACE_KEYS);
        char key[4] = {'k', (char)('0' + k), 0, 0};
        pthread_mutex_lock(&r->key_mu[k]); /* one write per key at a time, as a store row lock */
        long long v = atomic_fetch_add(&r->store[k], 1) + 1;
        if (rnd(&a->rng) % 2)
            pk_cache_invalidate(r->c, key, 2);
        else
            pk_cache_put(r->c, key, 2, key, 2, v, 0); /* write-through */
        atomic_store(&r->published[k], v);
        pthread_mutex_unlock(&r->key_mu[k]);
        if (i % 8 == 0) sched_yield();
    }
    return NULL;
}

static void *race_reader(void *p)
{
    race_arg *a = p;
    race *r = a->r;
    for (int i = 0; i < RACE_ITERS; i++) {
        int k = (int)(rnd(&a->rng) % RACE_KEYS);
        char key[4] = {'k', (char)('0' + k), 0, 0};
        long long min = atomic_load(&r->published[k]);
        pk_cache_val *v = NULL;
        if (rnd(&a->rng) % 2) {
            v = pk_cache_get(r->c, key, 2);
        } else {
            a->key = k;
            pk_err *e = pk_cache_get_or_load(r->c, key, 2, 0, 0, store_loader, a, &v);
            if (e) pk_err_free(e);
        }
        if (v && v->version < min) atomic_fetch_add(&r->violations, 1);
        pk_cache_val_release(v);
    }
    return NULL;
}

Test(cache, no_reader_sees_a_version_older_than_committed_before_its_get)
{
    race *r = calloc(1, sizeof *r);
    pk_cache_config cfg = {.shards = 2, .seed = 7}; /* real clock, few shards: more contention */
    r->c = pk_cache_new(&cfg);
    for (int k = 0; k < RACE_KEYS; k++)
        pthread_mutex_init(&r->key_mu[k], NULL);
    enum { W = 2, R = 3 };
    pthread_t th[W + R];
    race_arg args[W + R];
    for (int i = 0; i < W + R; i++) {
        args[i] = (race_arg){.r = r, .rng = 1000 + (uint64_t)i};
        pthread_create(&th[i], NULL, i < W ? race_writer : race_reader, &args[i]);
    }
    for (int i = 0; i < W + R; i++)
        pthread_join(th[i], NULL);
    pk_cache_counters st;
    pk_cache_stats(r->c, &st);
    cr_log_info("race: loads %llu, waits %llu, stale puts %llu, hits %llu", (unsigned long long)st.loads,
                (unsigned long long)st.load_waits, (unsigned long long)st.stale_puts,
                (unsigned long long)st.hits);
    cr_assert_eq(atomic_load(&r->violations), 0, "%d stale reads", atomic_load(&r->violations));
    cr_assert_gt(st.loads, 0);
    cr_assert_gt(st.hits, 0);
    for (int k = 0; k < RACE_KEYS; k++)
        pthread_mutex_destroy(&r->key_mu[k]);
    pk_cache_free(r->c);
    free(r);
}
