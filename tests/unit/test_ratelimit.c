/* Rate limiting: GCRA arithmetic over a fake clock, the local limiter (independent keys and classes,
 * bounded memory under a flood of keys, sweeps), exact totals under 8 threads, and the headers. */
#include "foundation/ratelimit.h"
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define MS 1000000LL
#define SEC 1000000000LL

void pk__siphash128(const uint64_t key[2], const void *data, size_t n, uint64_t out[2]);

static int64_t now_ns;
static pk_clock fake = {pk_fake_clock_now, &now_ns};
static const pk_rate_class read_cls = {"read", 100, SEC, 10}; /* T = 10 ms, burst 10 */

static void setup(void)
{
    now_ns = 1000 * SEC;
}
TestSuite(ratelimit, .init = setup);

static pk_rate_decision decide(pk_limiter *l, const char *key, const pk_rate_class *c)
{
    pk_rate_decision d;
    memset(&d, 0xab, sizeof d);
    pk_err *e = pk_limiter_decide(l, key, strlen(key), c, now_ns, &d);
    cr_assert_null(e, "%s", e ? e->message : "");
    return d;
}

Test(ratelimit, siphash_reference_vectors)
{
    /* SipHash-2-4 128-bit reference (Aumasson & Bernstein): key 00..0f, messages 00..(n-1). */
    static const unsigned char v0[16] = {0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6,
                                         0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55, 0x02, 0x93};
    unsigned char k[16];
    for (int i = 0; i < 16; i++)
        k[i] = (unsigned char)i;
    uint64_t key[2];
    memcpy(key, k, 16); /* little-endian host */
    uint64_t out[2];
    pk__siphash128(key, "", 0, out);
    cr_assert_eq(memcmp(out, v0, 16), 0, "%016llx %016llx", (unsigned long long)out[0],
                 (unsigned long long)out[1]);
}

Test(ratelimit, gcra_pure_function)
{
    pk_rate_class c = {"x", 1, SEC, 3};
    int64_t tat = INT64_MIN;
    pk_rate_decision d;
    for (int i = 0; i < 3; i++) {
        pk_gcra(&c, &tat, 0, &d);
        cr_assert(d.allowed);
        cr_assert_eq(d.remaining, 2 - i);
        cr_assert_eq(d.reset_after_ns, (i + 1) * SEC);
        cr_assert_eq(d.retry_after_ns, 0);
        cr_assert_eq(d.limit, 3);
    }
    int64_t before = tat;
    pk_gcra(&c, &tat, 0, &d);
    cr_assert_not(d.allowed);
    cr_assert_eq(tat, before, "a denied request leaves the TAT alone");
    cr_assert_eq(d.retry_after_ns, SEC);
    cr_assert_eq(d.reset_after_ns, 3 * SEC);
    pk_gcra(&c, &tat, SEC - 1, &d);
    cr_assert_not(d.allowed);
    cr_assert_eq(d.retry_after_ns, 1);
    pk_gcra(&c, &tat, SEC, &d);
    cr_assert(d.allowed);
    cr_assert_eq(d.remaining, 0);
}

Test(ratelimit, class_validation)
{
    pk_limiter *l = pk_limiter_local_new(0, &fake);
    pk_rate_class bad[] = {
        {"x", 0, SEC, 1}, {"x", 1, 0, 1}, {"x", 1, SEC, 0}, {NULL, 1, SEC, 1}, {"x", 10, 5, 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        pk_rate_decision d;
        pk_err *e = pk_limiter_decide(l, "k", 1, &bad[i], now_ns, &d);
        cr_assert_not_null(e, "class %zu", i);
        cr_assert_str_eq(e->code, "invalid_config");
        pk_err_free(e);
    }
    cr_assert_null(pk_rate_class_check(&read_cls));
    pk_limiter_free(l);
}

Test(ratelimit, burst_exactly_then_limited_with_retry_after)
{
    pk_limiter *l = pk_limiter_local_new(0, &fake);
    cr_assert_str_eq(l->ops->kind, "local");
    for (int i = 0; i < 10; i++) {
        pk_rate_decision d = decide(l, "alice", &read_cls);
        cr_assert(d.allowed, "request %d of the burst", i);
        cr_assert_eq(d.limit, 10);
        cr_assert_eq(d.remaining, 9 - i);
        cr_assert_eq(d.reset_after_ns, (i + 1) * 10 * MS);
    }
    pk_rate_decision d = decide(l, "alice", &read_cls);
    cr_assert_not(d.allowed);
    cr_assert_eq(d.remaining, 0);
    cr_assert_eq(d.retry_after_ns, 10 * MS);
    cr_assert_eq(d.reset_after_ns, 100 * MS);
    cr_assert_eq(pk_rate_retry_after_s(&d), 1);
    now_ns += 4 * MS;
    d = decide(l, "alice", &read_cls);
    cr_assert_not(d.allowed);
    cr_assert_eq(d.retry_after_ns, 6 * MS);
    now_ns += 6 * MS;
    d = decide(l, "alice", &read_cls);
    cr_assert(d.allowed, "exactly at retry_after");
    cr_assert_eq(d.remaining, 0);
    cr_assert_not(decide(l, "alice", &read_cls).allowed);
    pk_limiter_free(l);
}

Test(ratelimit, refills_at_configured_rate)
{
    pk_limiter *l = pk_limiter_local_new(0, &fake);
    for (int i = 0; i < 10; i++)
        decide(l, "k", &read_cls);
    /* 1 s later exactly 100 more would have accrued, but the bucket holds at most 10 */
    now_ns += SEC;
    int allowed = 0;
    for (int i = 0; i < 50; i++)
        allowed += decide(l, "k", &read_cls).allowed;
    cr_assert_eq(allowed, 10);
    /* steady state: 1 request per 10 ms passes, the second in the same instant does not */
    for (int step = 0; step < 100; step++) {
        now_ns += 10 * MS;
        cr_assert(decide(l, "k", &read_cls).allowed, "step %d", step);
        cr_assert_not(decide(l, "k", &read_cls).allowed);
    }
    /* half a second idle refills 50 -> capped at the burst */
    now_ns += 500 * MS;
    pk_rate_decision d = decide(l, "k", &read_cls);
    cr_assert_eq(d.remaining, 9);
    pk_limiter_free(l);
}

Test(ratelimit, keys_and_classes_are_independent)
{
    pk_limiter *l = pk_limiter_local_new(0, &fake);
    pk_rate_class write_cls = {"write", 10, SEC, 2};
    for (int i = 0; i < 10; i++)
        decide(l, "a", &read_cls);
    cr_assert_not(decide(l, "a", &read_cls).allowed);
    cr_assert(decide(l, "b", &read_cls).allowed, "another key has its own burst");
    cr_assert_eq(decide(l, "b", &read_cls).remaining, 8);
    cr_assert(decide(l, "a", &write_cls).allowed, "another class on the same key too");
    cr_assert(decide(l, "a", &write_cls).allowed);
    cr_assert_not(decide(l, "a", &write_cls).allowed);
    /* keys that differ only in length or binary content */
    pk_rate_decision d;
    cr_assert_null(pk_limiter_decide(l, "a\0b", 3, &read_cls, now_ns, &d));
    cr_assert(d.allowed);
    cr_assert_eq(d.remaining, 9);
    pk_limiter_local_stats st;
    pk_limiter_local_stats_get(l, &st);
    cr_assert_eq(st.entries, 4);
    pk_limiter_free(l);
}

Test(ratelimit, idle_keys_swept_and_behave_fresh)
{
    pk_limiter *l = pk_limiter_local_new(1000, &fake);
    char key[32];
    for (int i = 0; i < 500; i++) {
        snprintf(key, sizeof key, "k%d", i);
        decide(l, key, &read_cls);
    }
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof key, "k%d", i);
        for (int j = 0; j < 9; j++)
            decide(l, key, &read_cls); /* 100 keys fully used: TAT = now + 100 ms */
    }
    pk_limiter_local_stats st;
    pk_limiter_local_stats_get(l, &st);
    cr_assert_eq(st.entries, 500);
    cr_assert_eq(pk_limiter_local_sweep(l), 0, "nothing idle yet");
    now_ns += 10 * MS; /* single-use keys now idle */
    cr_assert_eq(pk_limiter_local_sweep(l), 400);
    pk_limiter_local_stats_get(l, &st);
    cr_assert_eq(st.entries, 100);
    cr_assert_eq(st.expired, 400);
    pk_rate_decision d = decide(l, "k0", &read_cls); /* 10 ms refilled exactly one */
    cr_assert(d.allowed);
    cr_assert_eq(d.remaining, 0, "live state survived the sweep");
    cr_assert_not(decide(l, "k0", &read_cls).allowed);
    cr_assert_eq(decide(l, "k200", &read_cls).remaining, 9, "swept key = fresh key");
    now_ns += SEC;
    cr_assert_eq(pk_limiter_local_sweep(l), 101);
    pk_limiter_local_stats_get(l, &st);
    cr_assert_eq(st.entries, 0);
    pk_limiter_free(l);
}

Test(ratelimit, flood_of_distinct_keys_stays_bounded, .timeout = 60)
{
    pk_limiter *l = pk_limiter_local_new(10000, &fake);
    pk_limiter_local_stats st0;
    pk_limiter_local_stats_get(l, &st0);
    cr_assert_eq(st0.max_keys, 10000);
    char key[32];
    /* a persistent heavy user, refreshed along the flood: its TAT stays the newest */
    for (int i = 0; i < 1000000; i++) {
        int n = snprintf(key, sizeof key, "ip-%d", i);
        pk_rate_decision d;
        cr_assert_null(pk_limiter_decide(l, key, (size_t)n, &read_cls, now_ns, &d));
        cr_assert(d.allowed);
        if (i % 1000 == 0) {
            now_ns += 10 * MS; /* time passes slowly: keys stay live for 10 ms, i.e. 1000 keys */
            pk_limiter_local_stats st;
            pk_limiter_local_stats_get(l, &st);
            cr_assert_leq(st.entries, 10000);
        }
    }
    pk_limiter_local_stats st;
    pk_limiter_local_stats_get(l, &st);
    cr_assert_leq(st.entries, 10000);
    cr_assert_geq(st.entries, 9000, "a full table stays nearly full");
    cr_assert_eq(st.memory, st0.memory, "no allocation after creation");
    cr_assert_lt(st.memory, 2u * 1024 * 1024, "%zu bytes", st.memory);
    cr_assert_gt(st.expired, 900000, "idle keys go first");
    /* frozen clock flood: nothing is idle, live entries are evicted */
    for (int i = 0; i < 100000; i++) {
        int n = snprintf(key, sizeof key, "frozen-%d", i);
        pk_rate_decision d;
        cr_assert_null(pk_limiter_decide(l, key, (size_t)n, &read_cls, now_ns, &d));
    }
    pk_limiter_local_stats_get(l, &st);
    cr_assert_leq(st.entries, 10000);
    cr_assert_gt(st.evictions, 0);
    printf("flood: entries %zu, memory %zu bytes, expired %llu, evictions %llu\n", st.entries, st.memory,
           (unsigned long long)st.expired, (unsigned long long)st.evictions);
    pk_limiter_free(l);
}

Test(ratelimit, eviction_prefers_oldest_and_is_permissive)
{
    pk_limiter *l = pk_limiter_local_new(16, &fake); /* 1 entry per shard */
    pk_rate_class one = {"one", 1, 3600 * SEC, 1};
    char key[32];
    for (int i = 0; i < 64; i++) {
        snprintf(key, sizeof key, "k%d", i);
        cr_assert(decide(l, key, &one).allowed);
    }
    pk_limiter_local_stats st;
    pk_limiter_local_stats_get(l, &st);
    cr_assert_leq(st.entries, 16);
    cr_assert_geq(st.evictions, 48);
    /* evicted keys are fresh again: at least some of the first keys pass a second time */
    int again = 0;
    for (int i = 0; i < 64; i++) {
        snprintf(key, sizeof key, "k%d", i);
        again += decide(l, key, &one).allowed;
    }
    cr_assert_gt(again, 0);
    pk_limiter_free(l);
}

/* ---- concurrency ---- */

#define THREADS 8
static pthread_barrier_t barrier;
static _Atomic int64_t shared_now;
static atomic_long total_allowed, total_denied;
static pk_limiter *shared;
static const pk_rate_class conc_cls = {"conc", 1000, SEC, 50}; /* T = 1 ms */
#define STEPS 300
#define CALLS_PER_STEP 3

static void *one_key_worker(void *arg)
{
    (void)arg;
    long ok = 0, no = 0;
    for (int step = 0; step < STEPS; step++) {
        int64_t now = atomic_load(&shared_now);
        for (int c = 0; c < CALLS_PER_STEP; c++) {
            pk_rate_decision d;
            pk_limiter_decide(shared, "hot", 3, &conc_cls, now, &d);
            d.allowed ? ok++ : no++;
        }
        /* the last thread through the barrier moves the fake clock one interval */
        if (pthread_barrier_wait(&barrier) == PTHREAD_BARRIER_SERIAL_THREAD)
            atomic_fetch_add(&shared_now, 1 * MS);
        pthread_barrier_wait(&barrier);
    }
    atomic_fetch_add(&total_allowed, ok);
    atomic_fetch_add(&total_denied, no);
    return NULL;
}

Test(ratelimit, eight_threads_one_key_exact_total, .timeout = 60)
{
    shared = pk_limiter_local_new(0, &fake);
    atomic_store(&shared_now, 1000 * SEC);
    atomic_store(&total_allowed, 0);
    atomic_store(&total_denied, 0);
    pthread_barrier_init(&barrier, NULL, THREADS);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, one_key_worker, NULL);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
    /* decisions at t = 0 .. (STEPS-1) ms: elapsed (STEPS-1) ms at one request per ms, plus the burst;
     * 8 x 3 = 24 attempts per ms keep the key saturated. */
    long expected = 50 + (STEPS - 1);
    cr_assert_eq(total_allowed, expected, "allowed %ld", (long)total_allowed);
    cr_assert_eq(total_allowed + total_denied, (long)THREADS * STEPS * CALLS_PER_STEP);
    pk_limiter_free(shared);
}

#define HAMMER_CALLS 100000
#define HAMMER_KEYS 64

static void *hammer_worker(void *arg)
{
    long id = (long)arg, ok = 0, no = 0;
    char key[16];
    for (int i = 0; i < HAMMER_CALLS; i++) {
        int n = snprintf(key, sizeof key, "u%d", (int)((i * 7 + id) % HAMMER_KEYS));
        pk_rate_decision d;
        pk_limiter_decide(shared, key, (size_t)n, &read_cls, 5 * SEC, &d);
        d.allowed ? ok++ : no++;
    }
    atomic_fetch_add(&total_allowed, ok);
    atomic_fetch_add(&total_denied, no);
    return NULL;
}

Test(ratelimit, hammer_8_threads_counters_add_up, .timeout = 60)
{
    shared = pk_limiter_local_new(0, &fake);
    atomic_store(&total_allowed, 0);
    atomic_store(&total_denied, 0);
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, hammer_worker, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    /* time frozen: every key gets exactly its burst */
    cr_assert_eq(total_allowed, HAMMER_KEYS * 10);
    cr_assert_eq(total_allowed + total_denied, (long)THREADS * HAMMER_CALLS);
    pk_limiter_local_stats st;
    pk_limiter_local_stats_get(shared, &st);
    cr_assert_eq(st.entries, HAMMER_KEYS);
    pk_limiter_free(shared);
}

/* ---- headers ---- */

Test(ratelimit, header_values)
{
    pk_rate_decision d = {true, 10, 42, 1500 * MS, 0};
    pk_rate_class c = {"read", 100, SEC, 100};
    pk_rate_headers h;
    pk_rate_headers_format(&c, &d, &h);
    cr_assert_str_eq(h.policy, "\"read\";q=100;w=1");
    cr_assert_str_eq(h.state, "\"read\";r=42;t=2");
    pk_rate_class per_min = {"write", 30, 60 * SEC, 5};
    d.remaining = 0;
    d.reset_after_ns = 0;
    pk_rate_headers_format(&per_min, &d, &h);
    cr_assert_str_eq(h.policy, "\"write\";q=30;w=60");
    cr_assert_str_eq(h.state, "\"write\";r=0;t=0");
    pk_rate_class odd = {"we\"ird\\\n", 3, 1500 * MS, 1};
    pk_rate_headers_format(&odd, &d, &h);
    cr_assert_str_eq(h.policy, "\"we\\\"ird\\\\_\";q=4;w=2");
    pk_rate_decision denied = {false, 10, 0, 100 * MS, 1};
    cr_assert_eq(pk_rate_retry_after_s(&denied), 1);
    denied.retry_after_ns = 2 * SEC + 1;
    cr_assert_eq(pk_rate_retry_after_s(&denied), 3);
    cr_assert_eq(pk_rate_retry_after_s(&d), 0);
}
