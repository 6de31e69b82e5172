/*
 * Foundation services as the server uses them: the single call site of each foundation module on the
 * request path.
 *
 *  - metrics: one registry; HTTP, store, rate-limit, breaker, cache, guard and process families.
 *  - rate limits: GCRA per principal and route class (in process; the Redis limiter plugs in behind
 *    pk_limiter). Every response carries RateLimit-Policy and RateLimit; a refusal is 429 + Retry-After.
 *  - store calls: bulkhead (max concurrent, bounded wait) -> breaker (fail fast while open) -> call ->
 *    record outcome; retryable failures are retried with full-jitter backoff inside a retry budget and
 *    never past the deadline. Test builds can inject failures and delays (PAKE_FAULT_STORE_*).
 *  - L1 cache: notes by id (served on the loop on a hit), search and list pages keyed by a generation
 *    that every write bumps; writes invalidate exactly (see foundation/cache.h).
 *  - Redis (--redis-url, redis_service.c): L2 under L1, cross-instance invalidation, shared rate limits.
 *    The shared limiter is a blocking call, so with Redis the rate-limit stage offloads its decision
 *    and resumes the chain from the job's `done` (PK_CHAIN_SUSPENDED); while the "redis" breaker is
 *    open it decides locally on the loop as without Redis. L1 hits need the instance's invalidation
 *    lease (pk_redis_svc_l1_trusted).
 */
#include "server/services.h"
#include "ai/ai.h"
#include "api/api.h"
#include "core/clock.h"
#include "core/fmt.h"
#include "core/id.h"
#include "core/log.h"
#include "foundation/breaker.h"
#include "foundation/bulkhead.h"
#include "foundation/cache.h"
#include "foundation/metrics.h"
#include "foundation/ratelimit.h"
#include "foundation/retry.h"
#include "server/offload.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CACHE_GROUP_QUERIES 0

/* Principals that keep sending blocked input: penalised on their own for a while. */
#define PENALTY_SLOTS 1024
typedef struct penalty {
    uint64_t hash;
    int64_t until_ns;
} penalty;

typedef struct breaker_stat {
    pk_breaker *b;
    int what; /* 0 state, 1 success, 2 failure, 3 slow, 4 rejected */
} breaker_stat;

struct pk_services {
    int deadline_ms[PK_RC__COUNT];
    pk_metrics *metrics;
    pk_metric_family *http_requests, *http_duration, *store_duration, *store_errors, *rl_decisions,
        *breaker_transitions, *guard_decisions, *guard_scan, *retries;
    pk_limiter *limiter;
    pk_rate_class classes[PK_RC__COUNT];
    pk_rate_class abuse_class;
    pthread_mutex_t penalty_mu;
    penalty penalties[PENALTY_SLOTS];
    pk_breaker_registry *breakers;
    pk_breaker *store_breaker;
    pk_bulkhead *store_bulkhead;
    pk_retry_budget *store_budget;
    pk_retry_policy store_retry;
    breaker_stat store_breaker_stats[5];
    pk_cache *cache;
    int64_t cache_ttl_ns, cache_negative_ttl_ns;
    double fault_fail_rate;
    int fault_delay_ms;
    struct {
        pk_note_observer fn;
        void *ud;
    } note_observers[4];
    int nnote_observers;
    /* Redis (distributed mode): NULL / unused without --redis-url */
    pk_redis_svc *redis;
    pk_limiter *redis_limiter;
    breaker_stat redis_breaker_stats[5];
    pk_metric_family *rl_backend;
    struct pk_tasks *tasks; /* the task service (pake serve), or NULL */
    /* breakers of other modules (pk_services_breaker_add) and their metric bindings */
    breaker_stat extra_breaker_stats[8][5];
    int nextra_breakers;
    pk_ai *ai; /* AI providers (embeddings, chat) */
};

/* ---- metrics --------------------------------------------------------------------------------- */

static double inflight_fn(void *ctx)
{
    return (double)atomic_load(&((pk_server *)ctx)->inflight);
}
static double queue_fn(void *ctx)
{
    pk_server *s = ctx;
    return s->pool ? (double)pk_offload_pool_depth(s->pool) : 0;
}
static double draining_fn(void *ctx)
{
    return atomic_load(&((pk_server *)ctx)->draining) ? 1 : 0;
}

#define CACHE_STAT_FN(field)                                                                                 \
    static double cache_##field##_fn(void *ctx)                                                              \
    {                                                                                                        \
        pk_cache_counters c;                                                                                 \
        pk_cache_stats(ctx, &c);                                                                             \
        return (double)c.field;                                                                              \
    }
CACHE_STAT_FN(hits)
CACHE_STAT_FN(misses)
CACHE_STAT_FN(evictions)
CACHE_STAT_FN(bytes)
CACHE_STAT_FN(entries)
CACHE_STAT_FN(negative_hits)
CACHE_STAT_FN(invalidations)
static double cache_load_seconds_fn(void *ctx)
{
    pk_cache_counters c;
    pk_cache_stats(ctx, &c);
    return (double)c.load_ns_total / 1e9;
}

static double breaker_fn(void *ctx)
{
    breaker_stat *bs = ctx;
    pk_breaker_snapshot s;
    pk_breaker_snapshot_get(bs->b, &s);
    switch (bs->what) {
    case 0:
        return (double)s.state;
    case 1:
        return (double)s.successful;
    case 2:
        return (double)s.failed;
    case 3:
        return (double)s.slow;
    default:
        return (double)s.rejected;
    }
}

static void store_observer(void *ud, const char *op, double seconds, bool ok)
{
    struct pk_services *v = ud;
    const char *lv[] = {op};
    pk_metric_histogram_observe(v->store_duration, lv, 1, seconds);
    if (!ok) pk_metric_counter_add(v->store_errors, lv, 1, 1);
}

static void on_breaker_transition(void *ud, const char *name, pk_breaker_state from, pk_breaker_state to)
{
    struct pk_services *v = ud;
    const char *lv[] = {name, pk_breaker_state_name(from), pk_breaker_state_name(to)};
    pk_metric_counter_add(v->breaker_transitions, lv, 3, 1);
    char f[160];
    snprintf(f, sizeof f, "\"breaker\":\"%s\",\"from\":\"%s\",\"to\":\"%s\"", name,
             pk_breaker_state_name(from), pk_breaker_state_name(to));
    pk_log_write(to == PK_BREAKER_CLOSED ? PK_LOG_INFO : PK_LOG_WARN, NULL, f, "circuit breaker %s: %s -> %s",
                 name, pk_breaker_state_name(from), pk_breaker_state_name(to));
}

static void register_metrics(pk_server *s, struct pk_services *v)
{
    pk_metrics *m = v->metrics = pk_metrics_new();
    pk_metrics_register_build_info(m, PAKE_VERSION);
    pk_metrics_register_process(m);
    const char *mrs[] = {"method", "route", "status"};
    v->http_requests = pk_metrics_counter(m, "pake_http_requests_total", "HTTP requests answered.", 3, mrs);
    v->http_duration = pk_metrics_histogram(m, "pake_http_request_duration_seconds",
                                            "Time from request start to response, by route.", 2, mrs,
                                            pk_metrics_latency_buckets, pk_metrics_latency_buckets_len);
    pk_metric_family *g =
        pk_metrics_gauge(m, "pake_http_requests_in_flight", "Requests being processed.", 0, NULL);
    pk_metric_bind_fn(g, NULL, 0, inflight_fn, s);
    g = pk_metrics_gauge(m, "pake_offload_queue_depth", "Blocking jobs waiting for a worker.", 0, NULL);
    pk_metric_bind_fn(g, NULL, 0, queue_fn, s);
    g = pk_metrics_gauge(m, "pake_draining", "1 while the server drains for shutdown.", 0, NULL);
    pk_metric_bind_fn(g, NULL, 0, draining_fn, s);
    const char *op[] = {"operation"};
    v->store_duration = pk_metrics_histogram(m, "pake_store_query_duration_seconds",
                                             "Store operation duration, by operation.", 1, op,
                                             pk_metrics_latency_buckets, pk_metrics_latency_buckets_len);
    v->store_errors =
        pk_metrics_counter(m, "pake_store_errors_total", "Store operations that failed.", 1, op);
    const char *dep[] = {"dependency"};
    v->retries = pk_metrics_counter(m, "pake_retries_total", "Retries of failed dependency calls.", 1, dep);
    const char *rl[] = {"class", "decision"};
    v->rl_decisions = pk_metrics_counter(m, "pake_ratelimit_decisions_total", "Rate-limit decisions.", 2, rl);
    const char *bt[] = {"name", "from", "to"};
    v->breaker_transitions =
        pk_metrics_counter(m, "pake_breaker_transitions_total", "Circuit breaker state transitions.", 3, bt);
    const char *gd[] = {"surface", "decision", "category"};
    v->guard_decisions =
        pk_metrics_counter(m, "pake_guard_decisions_total", "Security guard decisions on user input.", 3, gd);
    const char *gs[] = {"surface"};
    static const double scan_buckets[] = {1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2};
    v->guard_scan = pk_metrics_histogram(m, "pake_guard_scan_duration_seconds", "Security guard scan time.",
                                         1, gs, scan_buckets, sizeof scan_buckets / sizeof *scan_buckets);
}

static void register_breaker_metrics(struct pk_services *v, pk_breaker *b, breaker_stat stats[5])
{
    const char *nm[] = {"name"};
    const char *nmo[] = {"name", "outcome"};
    pk_metric_family *st = pk_metrics_gauge(
        v->metrics, "pake_breaker_state",
        "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 forced-open, 4 disabled.", 1, nm);
    pk_metric_family *calls = pk_metrics_counter(v->metrics, "pake_breaker_calls_total",
                                                 "Calls through a circuit breaker by outcome.", 2, nmo);
    const char *name = pk_breaker_name(b);
    static const char *outcomes[] = {"success", "failure", "slow", "rejected"};
    for (int i = 0; i < 5; i++) {
        breaker_stat *bs = &stats[i];
        bs->b = b;
        bs->what = i;
        if (i == 0) {
            const char *lv[] = {name};
            pk_metric_bind_fn(st, lv, 1, breaker_fn, bs);
        } else {
            const char *lv[] = {name, outcomes[i - 1]};
            pk_metric_bind_fn(calls, lv, 2, breaker_fn, bs);
        }
    }
}

/* Metrics for a breaker of another module (AI providers, n8n), from a fixed pool of bindings. */
static pk_err *track_breaker(struct pk_services *v, pk_breaker *b)
{
    if (v->nextra_breakers == (int)(sizeof v->extra_breaker_stats / sizeof v->extra_breaker_stats[0]))
        return pk_err_internal("too many circuit breakers");
    register_breaker_metrics(v, b, v->extra_breaker_stats[v->nextra_breakers++]);
    return NULL;
}

static void register_cache_metrics(struct pk_services *v)
{
    struct {
        const char *name, *help;
        bool counter;
        pk_metric_fn fn;
    } defs[] = {
        {"pake_cache_hits_total", "L1 cache hits (including negative hits).", true, cache_hits_fn},
        {"pake_cache_negative_hits_total", "L1 cache hits on cached 404s.", true, cache_negative_hits_fn},
        {"pake_cache_misses_total", "L1 cache misses.", true, cache_misses_fn},
        {"pake_cache_evictions_total", "L1 cache evictions.", true, cache_evictions_fn},
        {"pake_cache_invalidations_total", "L1 cache entries removed by writes.", true,
         cache_invalidations_fn},
        {"pake_cache_load_seconds_total", "Time spent loading L1 cache misses.", true, cache_load_seconds_fn},
        {"pake_cache_bytes", "L1 cache bytes in use.", false, cache_bytes_fn},
        {"pake_cache_entries", "L1 cache entries.", false, cache_entries_fn},
    };
    for (size_t i = 0; i < sizeof defs / sizeof *defs; i++) {
        pk_metric_family *f = defs[i].counter
                                  ? pk_metrics_counter(v->metrics, defs[i].name, defs[i].help, 0, NULL)
                                  : pk_metrics_gauge(v->metrics, defs[i].name, defs[i].help, 0, NULL);
        pk_metric_bind_fn(f, NULL, 0, defs[i].fn, v->cache);
    }
}

/* ---- init ------------------------------------------------------------------------------------ */

/* The AI providers: their breakers join the registry (admin endpoints, breaker metrics). */
static pk_err *ai_init(struct pk_services *v, const pk_config *c)
{
    pk_ai_config ac = {.embed_provider = c->embed_provider,
                       .embed_url = c->embed_url,
                       .embed_model = c->embed_model,
                       .embed_api_key = c->embed_api_key,
                       .embed_dims = c->embed_dims,
                       .chat_url = c->chat_url,
                       .chat_model = c->chat_model,
                       .chat_api_key = c->chat_api_key,
                       .timeout_ms = c->ai_timeout_ms,
                       .breakers = v->breakers,
                       .on_transition = on_breaker_transition,
                       .on_transition_ud = v,
                       .metrics = v->metrics};
    pk_err *e = pk_ai_new(&ac, &v->ai);
    if (e) return e;
    static const char *ops[] = {"embeddings", "chat"};
    for (int i = 0; i < 2 && !e; i++) {
        pk_breaker *b = pk_ai_breaker(v->ai, ops[i]);
        if (b) e = track_breaker(v, b);
    }
    return e;
}

static void set_class(pk_rate_class *c, const char *name, double rate, int burst)
{
    /* rates are per second; fractional rates are expressed over a longer period */
    c->name = name;
    c->period_ns = 1000000000LL;
    c->rate = (int64_t)rate;
    if (rate < 1) {
        c->rate = 1;
        c->period_ns = (int64_t)(1e9 / (rate > 0 ? rate : 1e-9));
    }
    c->burst = burst > 0 ? burst : 1;
}

pk_err *pk_services_init(pk_server *s)
{
    struct pk_services *v = calloc(1, sizeof *v);
    const pk_config *c = &s->cfg;
    s->svc = v;
    for (int i = 0; i < PK_RC__COUNT; i++)
        v->deadline_ms[i] = c->deadline_ms;
    if (c->deadline_read_ms) v->deadline_ms[PK_RC_READ] = c->deadline_read_ms;
    if (c->deadline_write_ms) v->deadline_ms[PK_RC_WRITE] = c->deadline_write_ms;
    if (c->deadline_search_ms) v->deadline_ms[PK_RC_SEARCH] = c->deadline_search_ms;
    if (c->deadline_admin_ms) v->deadline_ms[PK_RC_ADMIN] = c->deadline_admin_ms;

    register_metrics(s, v);
    s->store->observer = store_observer;
    s->store->observer_ud = v;

    v->limiter = pk_limiter_local_new((size_t)c->rl_max_keys, pk_clock_real());
    set_class(&v->classes[PK_RC_READ], "read", c->rl_read_rate, c->rl_read_burst);
    set_class(&v->classes[PK_RC_WRITE], "write", c->rl_write_rate, c->rl_write_burst);
    set_class(&v->classes[PK_RC_SEARCH], "search", c->rl_search_rate, c->rl_search_burst);
    set_class(&v->classes[PK_RC_MCP], "mcp", c->rl_mcp_rate, c->rl_mcp_burst);
    set_class(&v->classes[PK_RC_ADMIN], "admin", c->rl_admin_rate, c->rl_admin_burst);
    set_class(&v->classes[PK_RC_OPS], "ops", 1000, 2000);
    /* 10 blocked inputs at once, then one per 6 s; past that the principal is refused for a while */
    set_class(&v->abuse_class, "abuse", 10.0 / 60.0, 10);
    pthread_mutex_init(&v->penalty_mu, NULL);
    for (int i = 0; i < PK_RC__COUNT; i++) {
        pk_err *e = pk_rate_class_check(&v->classes[i]);
        if (e) return pk_err_wrap(e, "bad_config", 2, "rate limit of class %s", v->classes[i].name);
    }

    v->breakers = pk_breaker_registry_new();
    pk_breaker_config bc;
    pk_breaker_config_init(&bc, "store");
    bc.minimum_calls = c->breaker_min_calls;
    bc.window_size = c->breaker_window;
    bc.failure_rate_threshold = c->breaker_failure_rate;
    bc.slow_call_rate_threshold = c->breaker_slow_rate;
    bc.slow_call_duration_ns = (int64_t)c->breaker_slow_ms * 1000000;
    bc.wait_in_open_ns = (int64_t)c->breaker_wait_ms * 1000000;
    bc.permitted_calls_in_half_open = c->breaker_half_open_calls;
    bc.on_transition = on_breaker_transition;
    bc.on_transition_ud = v;
    pk_err *e = pk_breaker_new(&bc, pk_clock_real(), &v->store_breaker);
    if (e) return pk_err_wrap(e, "bad_config", 2, "store circuit breaker");
    pk_breaker_registry_add(v->breakers, v->store_breaker);
    register_breaker_metrics(v, v->store_breaker, v->store_breaker_stats);
    v->store_bulkhead = pk_bulkhead_new("store", c->bulkhead_store, c->bulkhead_wait_ms);
    pk_retry_budget_config rbc = PK_RETRY_BUDGET_DEFAULT;
    v->store_budget = pk_retry_budget_new(&rbc, pk_clock_real());
    v->store_retry = (pk_retry_policy){.max_attempts = 3, .base_ms = 10, .cap_ms = 200};
    if ((e = ai_init(v, c))) return e;

    if (c->cache_bytes > 0) {
        pk_cache_config cc = {.max_bytes = (size_t)c->cache_bytes};
        v->cache = pk_cache_new(&cc);
        register_cache_metrics(v);
    }
    v->cache_ttl_ns = (int64_t)c->cache_ttl_ms * 1000000;
    v->cache_negative_ttl_ns = (int64_t)c->cache_negative_ttl_ms * 1000000;
    if (c->redis_url && *c->redis_url) {
        pk_breaker_config rb;
        pk_breaker_config_init(&rb, "redis");
        rb.minimum_calls = 5;
        rb.window_size = 20;
        rb.failure_rate_threshold = 50;
        rb.slow_call_duration_ns = 1000000000LL;
        rb.wait_in_open_ns =
            (int64_t)(c->redis_breaker_wait_ms > 0 ? c->redis_breaker_wait_ms : 1000) * 1000000;
        rb.permitted_calls_in_half_open = 2;
        rb.on_transition = on_breaker_transition;
        rb.on_transition_ud = v;
        pk_breaker *redis_breaker = NULL;
        e = pk_breaker_new(&rb, pk_clock_real(), &redis_breaker);
        if (e) return pk_err_wrap(e, "bad_config", 2, "redis circuit breaker");
        pk_breaker_registry_add(v->breakers, redis_breaker);
        register_breaker_metrics(v, redis_breaker, v->redis_breaker_stats);
        pk_redis_svc_env env = {.cache = v->cache, .breaker = redis_breaker, .metrics = v->metrics};
        e = pk_redis_svc_init(s, &env, &v->redis);
        if (e) return e;
        v->redis_limiter = pk_redis_svc_limiter(v->redis);
        const char *bk[] = {"backend"};
        v->rl_backend =
            pk_metrics_counter(v->metrics, "pake_ratelimit_backend_total",
                               "Rate-limit decisions by backend (redis, local, local_fallback).", 1, bk);
    }
#ifdef PAKE_FAULT_INJECTION
    if (c->fault_store_fail_rate && *c->fault_store_fail_rate)
        v->fault_fail_rate = atof(c->fault_store_fail_rate);
    if (c->fault_store_delay_ms && *c->fault_store_delay_ms)
        v->fault_delay_ms = atoi(c->fault_store_delay_ms);
#endif
    return pk_services_guard_init(s);
}

void pk_services_dispose(pk_server *s)
{
    struct pk_services *v = s->svc;
    if (!v) return;
    pk_services_guard_dispose(s);
    pk_redis_svc_dispose(v->redis); /* before the cache and the breakers it uses */
    if (v->cache) pk_cache_free(v->cache);
    pk_ai_free(v->ai); /* before the registry that owns its breakers */
    pk_retry_budget_free(v->store_budget);
    pk_bulkhead_free(v->store_bulkhead);
    pk_breaker_registry_free(v->breakers);
    pk_limiter_free(v->limiter);
    pthread_mutex_destroy(&v->penalty_mu);
    pk_metrics_free(v->metrics);
    free(v);
    s->svc = NULL;
}

int pk_services_deadline_ms(pk_server *s, pk_route_class c)
{
    return s->svc->deadline_ms[c];
}

pk_metrics *pk_services_metrics(pk_server *s)
{
    return s->svc->metrics;
}

/* ---- rate limiting --------------------------------------------------------------------------- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h ? h : 1;
}

static int64_t penalty_until(struct pk_services *v, const char *principal)
{
    uint64_t h = hash_str(principal);
    pthread_mutex_lock(&v->penalty_mu);
    penalty *p = &v->penalties[h % PENALTY_SLOTS];
    int64_t until = p->hash == h ? p->until_ns : 0;
    pthread_mutex_unlock(&v->penalty_mu);
    return until;
}

/* A blocked input costs the principal from its abuse budget; when that is spent it is refused on
 * every route until the budget refills. Other principals are unaffected. */
void pk_services_note_blocked(pk_req *r)
{
    struct pk_services *v = r->srv->svc;
    pk_rate_decision d;
    char key[96];
    int n = snprintf(key, sizeof key, "abuse|%s", r->principal);
    pk_err *e = pk_limiter_decide(v->limiter, key, (size_t)n, &v->abuse_class, pk_mono_ns(), &d);
    pk_err_free(e);
    if (!e && !d.allowed) {
        uint64_t h = hash_str(r->principal);
        pthread_mutex_lock(&v->penalty_mu);
        penalty *p = &v->penalties[h % PENALTY_SLOTS];
        p->hash = h;
        p->until_ns = pk_mono_ns() + (d.retry_after_ns > 60000000000LL ? d.retry_after_ns : 60000000000LL);
        pthread_mutex_unlock(&v->penalty_mu);
    }
}

static pk_err *ratelimit_apply(pk_req *r, const pk_rate_class *cls, const pk_rate_decision *dp);

/* The shared limiter: the decision is a Redis call, made on an offload thread; the chain resumes in
 * rl_done. A failed call falls back to the local limiter for that request. */
typedef struct rl_job {
    const pk_rate_class *cls;
    pk_rate_decision d;
    bool fallback, failed;
} rl_job;

static void rl_work(pk_job *j)
{
    struct pk_services *v = j->srv->svc;
    rl_job *q = j->data;
    pk_err *e =
        pk_limiter_decide(v->redis_limiter, j->principal, strlen(j->principal), q->cls, pk_mono_ns(), &q->d);
    if (!e) return;
    pk_err_free(e);
    q->fallback = true;
    e = pk_limiter_decide(v->limiter, j->principal, strlen(j->principal), q->cls, pk_mono_ns(), &q->d);
    if (e) {
        pk_err_free(e);
        q->failed = true;
    }
}

static void rl_done(pk_req *r, pk_job *j)
{
    struct pk_services *v = r->srv->svc;
    rl_job *q = j->data;
    const char *bl[] = {q->fallback ? "local_fallback" : "redis"};
    pk_metric_counter_add(v->rl_backend, bl, 1, 1);
    pk_err *e = q->failed ? NULL : ratelimit_apply(r, q->cls, &q->d);
    if (e)
        pk_respond_error(r, e);
    else
        pk_request_resume(r);
}

static pk_err *ratelimit_shared(pk_req *r, const pk_rate_class *cls)
{
    rl_job *q = calloc(1, sizeof *q);
    q->cls = cls;
    r->deadline_ns = r->start_ns + (int64_t)pk_services_deadline_ms(r->srv, r->route->cls) * 1000000;
    pk_offload(r, rl_work, rl_done, q, free); /* on a full queue it answered 503 itself */
    return PK_CHAIN_SUSPENDED;
}

pk_err *pk_services_ratelimit(pk_req *r)
{
    struct pk_services *v = r->srv->svc;
    int64_t now = pk_mono_ns();
    int64_t until = penalty_until(v, r->principal);
    if (until > now) {
        pk_err *e = pk_err_new("abuse_rate_limited", 429,
                               "too many requests from this client were rejected by the security guard; "
                               "try again later");
        e->retry_after_s = (int)((until - now) / 1000000000LL) + 1;
        const char *lv[] = {"abuse", "limited"};
        pk_metric_counter_add(v->rl_decisions, lv, 2, 1);
        return e;
    }
    const pk_rate_class *cls = &v->classes[r->route->cls];
    if (v->redis_limiter && r->route->cls != PK_RC_OPS && pk_redis_svc_usable(v->redis))
        return ratelimit_shared(r, cls);
    pk_rate_decision d;
    pk_err *e = pk_limiter_decide(v->limiter, r->principal, strlen(r->principal), cls, now, &d);
    if (e) { /* a failing limiter must not take the API down: allow, and say so in the logs */
        pk_log_write(PK_LOG_WARN, NULL, NULL, "rate limiter failed: %s", e->message);
        pk_err_free(e);
        return NULL;
    }
    if (v->rl_backend) {
        const char *bl[] = {"local"};
        pk_metric_counter_add(v->rl_backend, bl, 1, 1);
    }
    return ratelimit_apply(r, cls, &d);
}

/* Headers, metrics and the 429 for one decision (loop thread). */
static pk_err *ratelimit_apply(pk_req *r, const pk_rate_class *cls, const pk_rate_decision *dp)
{
    struct pk_services *v = r->srv->svc;
    pk_rate_decision d = *dp;
    pk_err *e;
    pk_rate_headers h;
    pk_rate_headers_format(cls, &d, &h);
    memcpy(r->ratelimit_policy, h.policy, strnlen(h.policy, sizeof r->ratelimit_policy - 1) + 1);
    memcpy(r->ratelimit, h.state, strnlen(h.state, sizeof r->ratelimit - 1) + 1);
    const char *lv[] = {cls->name, d.allowed ? "allowed" : "limited"};
    pk_metric_counter_add(v->rl_decisions, lv, 2, 1);
    if (d.allowed) return NULL;
    e = pk_err_new("rate_limited", 429, "rate limit of the '%s' class exceeded for this client", cls->name);
    e->retry_after_s = (int)pk_rate_retry_after_s(&d);
    return e;
}

/* ---- store calls ----------------------------------------------------------------------------- */

typedef struct store_permit {
    pk_breaker_permit bp;
    int64_t started_ns;
} store_permit;

pk_err *pk_api_store_begin(pk_job *j, void **permit)
{
    struct pk_services *v = j->srv->svc;
    pk_err *e = pk_bulkhead_enter(v->store_bulkhead, j->deadline_ns ? j->deadline_ns : PK_DEADLINE_NONE);
    if (e) return e;
    store_permit *p = calloc(1, sizeof *p);
    if (!pk_breaker_allow(v->store_breaker, &p->bp)) {
        pk_bulkhead_leave(v->store_bulkhead);
        e = pk_err_new("dependency_unavailable", 503,
                       "the store is unavailable (circuit breaker open); try again later");
        e->retry_after_s = (int)((p->bp.retry_after_ms + 999) / 1000);
        if (e->retry_after_s < 1) e->retry_after_s = 1;
        free(p);
        return e;
    }
    p->started_ns = pk_mono_ns();
    *permit = p;
#ifdef PAKE_FAULT_INJECTION
    if (v->fault_delay_ms > 0) usleep((useconds_t)v->fault_delay_ms * 1000);
    if (v->fault_fail_rate > 0 && pk_rand_unit() < v->fault_fail_rate) {
        e = pk_err_new("store_unavailable", 503, "injected store failure (PAKE_FAULT_STORE_FAIL_RATE)");
        pk_api_store_end(j, p, e, p->started_ns);
        *permit = NULL;
        return e;
    }
#endif
    return NULL;
}

void pk_api_store_end(pk_job *j, void *permit, const pk_err *e, int64_t started_ns)
{
    struct pk_services *v = j->srv->svc;
    store_permit *p = permit;
    if (!p) return;
    pk_breaker_record(v->store_breaker, &p->bp, pk_breaker_outcome_of(e), pk_mono_ns() - p->started_ns);
    pk_bulkhead_leave(v->store_bulkhead);
    free(p);
}

bool pk_api_store_retry(pk_job *j, const pk_err *e, int attempt)
{
    struct pk_services *v = j->srv->svc;
    if (attempt == 0) pk_retry_budget_note_request(v->store_budget);
    int64_t sleep_ns = 0;
    if (!pk_retry_should(&v->store_retry, v->store_budget, e, attempt, pk_mono_ns(),
                         j->deadline_ns ? j->deadline_ns : INT64_MAX, &sleep_ns))
        return false;
    /* an open breaker or full bulkhead is not worth retrying inside one request */
    if (pk_err_is(e, "dependency_unavailable") || pk_err_is(e, "bulkhead_full")) return false;
    const char *lv[] = {"store"};
    pk_metric_counter_add(v->retries, lv, 1, 1);
    if (sleep_ns > 0) usleep((useconds_t)(sleep_ns / 1000));
    return true;
}

/* ---- cache ----------------------------------------------------------------------------------- */

bool pk_services_cache_lookup_note(pk_server *s, const char *id, pk_services_cached_note *out)
{
    pk_cache *c = s->svc->cache;
    if (!c || !pk_redis_svc_l1_trusted(s->svc->redis)) return false;
    pk_cache_val *v = pk_cache_get(c, id, 36);
    if (!v) return false;
    out->data = v->data;
    out->len = v->len;
    out->version = v->version;
    out->missing = v->negative;
    out->handle = v;
    return true;
}

void pk_services_cache_note_release(pk_services_cached_note *n)
{
    pk_cache_val_release(n->handle);
}

uint64_t pk_services_cache_ticket(pk_server *s, const char *key, size_t klen)
{
    return s->svc->cache ? pk_cache_load_ticket(s->svc->cache, key, klen) : 0;
}

void pk_services_cache_note(pk_server *s, const char *id, int64_t version, const char *json, size_t len,
                            uint64_t ticket)
{
    struct pk_services *v = s->svc;
    if (!v->cache) return;
    pk_cache_put_opts o = {.ttl_ns = v->cache_ttl_ns, .version = version, .if_newer = true, .ticket = ticket};
    pk_cache_put_ex(v->cache, id, 36, json, len, &o);
}

void pk_services_cache_note_missing(pk_server *s, const char *id, uint64_t ticket)
{
    struct pk_services *v = s->svc;
    if (!v->cache) return;
    pk_cache_put_opts o = {.ttl_ns = v->cache_negative_ttl_ns, .negative = true, .ticket = ticket};
    pk_cache_put_ex(v->cache, id, 36, "", 0, &o);
}

void pk_services_note_changed(pk_server *s, const char *id)
{
    struct pk_services *v = s->svc;
    if (v->cache) {
        if (id && *id) pk_cache_invalidate(v->cache, id, 36);
        pk_cache_bump_generation(v->cache, CACHE_GROUP_QUERIES);
    }
    for (int i = 0; i < v->nnote_observers; i++)
        v->note_observers[i].fn(v->note_observers[i].ud, id);
}

/* The request whose write is being announced, for the observers it calls (loop thread). */
static _Thread_local struct {
    pk_req *r;
    bool created;
} tl_change;

void pk_services_note_changed_req(pk_req *r, const char *id, bool created)
{
    tl_change.r = r;
    tl_change.created = created;
    pk_services_note_changed(r->srv, id);
    tl_change.r = NULL;
    tl_change.created = false;
}

pk_req *pk_services_note_change_req(bool *created)
{
    if (created) *created = tl_change.r && tl_change.created;
    return tl_change.r;
}

pk_err *pk_services_breaker_add(pk_server *s, pk_breaker_config *cfg, pk_breaker **out)
{
    struct pk_services *v = s->svc;
    if (v->nextra_breakers == (int)(sizeof v->extra_breaker_stats / sizeof v->extra_breaker_stats[0]))
        return pk_err_internal("too many circuit breakers");
    cfg->on_transition = on_breaker_transition;
    cfg->on_transition_ud = v;
    pk_breaker *b = NULL;
    pk_err *e = pk_breaker_new(cfg, pk_clock_real(), &b);
    if (e) return pk_err_wrap(e, "bad_config", 2, "%s circuit breaker", cfg->name);
    if ((e = pk_breaker_registry_add(v->breakers, b))) return e; /* the registry freed b */
    *out = b;
    return track_breaker(v, b);
}

void pk_services_on_note_changed(pk_server *s, pk_note_observer fn, void *ud)
{
    struct pk_services *v = s->svc;
    if (v->nnote_observers == (int)(sizeof v->note_observers / sizeof v->note_observers[0])) return;
    v->note_observers[v->nnote_observers].fn = fn;
    v->note_observers[v->nnote_observers++].ud = ud;
}

/* Query results (lists, searches): the key embeds the current generation, so one bump on any write
 * makes every older page unreachable; the entries then age out. The value is "meta\0data". */
bool pk_services_cache_query_key(pk_server *s, pk_req *r, pk_buf *key)
{
    if (!s->svc->cache) return false;
    h2o_req_t *req = r->h2o;
    pk_buf_printf(key, "q%llu|%s|",
                  (unsigned long long)pk_cache_generation(s->svc->cache, CACHE_GROUP_QUERIES),
                  r->route->operation_id);
    if (req->query_at != SIZE_MAX)
        pk_buf_append(key, req->path.base + req->query_at, req->path.len - req->query_at);
    if (req->entity.base) pk_buf_append(key, req->entity.base, req->entity.len);
    return true;
}

bool pk_services_cache_query_key_for(pk_server *s, const char *op, const char *args, size_t n, pk_buf *key)
{
    if (!s->svc->cache) return false;
    pk_buf_printf(key, "q%llu|%s|",
                  (unsigned long long)pk_cache_generation(s->svc->cache, CACHE_GROUP_QUERIES), op);
    pk_buf_append(key, args, n);
    return true;
}

bool pk_services_cache_query_get(pk_server *s, const pk_buf *key, pk_services_cached_note *out)
{
    if (!pk_redis_svc_l1_trusted(s->svc->redis)) return false;
    pk_cache_val *v = pk_cache_get(s->svc->cache, key->data, key->len);
    if (!v) return false;
    out->data = v->data;
    out->len = v->len;
    out->handle = v;
    out->missing = false;
    out->version = 0;
    return true;
}

void pk_services_cache_query_put(pk_server *s, const pk_buf *key, const char *meta, const char *data,
                                 size_t len)
{
    struct pk_services *v = s->svc;
    pk_buf val = PK_BUF_INIT;
    pk_buf_puts(&val, meta ? meta : "");
    pk_buf_putc(&val, '\0');
    pk_buf_append(&val, data, len);
    pk_cache_put_opts o = {.ttl_ns = v->cache_ttl_ns};
    pk_cache_put_ex(v->cache, key->data, key->len, val.data, val.len, &o);
    pk_buf_free(&val);
}

/* ---- ops endpoints --------------------------------------------------------------------------- */

void pk_services_health_checks(pk_server *s, pk_jw *w)
{
    struct pk_services *v = s->svc;
    pk_breaker_snapshot bs;
    pk_breaker_snapshot_get(v->store_breaker, &bs);
    pk_jw_key(w, "store:circuitBreaker");
    pk_jw_arr_open(w);
    pk_jw_obj_open(w);
    pk_jw_key(w, "componentType");
    pk_jw_str(w, "component");
    pk_jw_key(w, "status");
    pk_jw_str(w, bs.state == PK_BREAKER_CLOSED || bs.state == PK_BREAKER_DISABLED ? "pass" : "warn");
    pk_jw_key(w, "observedValue");
    pk_jw_str(w, pk_breaker_state_name(bs.state));
    pk_jw_obj_close(w);
    pk_jw_arr_close(w);
    if (v->redis) {
        const char *why = "ok";
        bool degraded = pk_redis_svc_degraded(v->redis, &why);
        pk_jw_key(w, "redis:connection");
        pk_jw_arr_open(w);
        pk_jw_obj_open(w);
        pk_jw_key(w, "componentType");
        pk_jw_str(w, "datastore");
        pk_jw_key(w, "componentId");
        pk_jw_str(w, "redis");
        pk_jw_key(w, "status");
        pk_jw_str(w, degraded ? "warn" : "pass");
        pk_jw_key(w, "observedValue");
        pk_jw_str(w, degraded ? "degraded" : "ok");
        if (degraded) {
            pk_jw_key(w, "output");
            pk_jw_str(w, why);
        }
        pk_jw_obj_close(w);
        pk_jw_arr_close(w);
    }
    if (v->cache) {
        pk_cache_counters cc;
        pk_cache_stats(v->cache, &cc);
        pk_jw_key(w, "cache:utilization");
        pk_jw_arr_open(w);
        pk_jw_obj_open(w);
        pk_jw_key(w, "componentType");
        pk_jw_str(w, "component");
        pk_jw_key(w, "status");
        pk_jw_str(w, "pass");
        pk_jw_key(w, "observedValue");
        pk_jw_num(w, cc.max_bytes ? 100.0 * (double)cc.bytes / (double)cc.max_bytes : 0);
        pk_jw_key(w, "observedUnit");
        pk_jw_str(w, "percent");
        pk_jw_obj_close(w);
        pk_jw_arr_close(w);
    }
}

bool pk_services_degraded(pk_server *s)
{
    const char *why;
    return pk_redis_svc_degraded(s->svc->redis, &why);
}

void pk_services_render_metrics(pk_server *s, pk_buf *out)
{
    pk_metrics_render(s->svc->metrics, out);
}

void pk_services_breakers_json(pk_server *s, pk_buf *out)
{
    pk_jw w;
    pk_jw_init(&w, out);
    pk_breaker_registry_write_json(s->svc->breakers, &w);
}

pk_err *pk_services_breaker_action(pk_server *s, const char *name, const char *action, pk_buf *out)
{
    pk_err *e = pk_breaker_registry_apply(s->svc->breakers, name, strlen(name), action);
    if (e) return e;
    pk_breaker *b = pk_breaker_registry_get(s->svc->breakers, name, strlen(name));
    pk_log_write(PK_LOG_WARN, NULL, NULL, "operator action on circuit breaker %s: %s", name, action);
    pk_jw w;
    pk_jw_init(&w, out);
    pk_breaker_write_json(b, &w);
    return NULL;
}

void pk_services_observe(pk_req *r, int status, int64_t duration_ns)
{
    struct pk_services *v = r->srv->svc;
    char st[24];
    *pk_fmt_i64(st, status) = '\0';
    const char *route = r->route ? r->route->pattern : "unmatched";
    const char *method = r->route ? r->route->method : "other";
    const char *lv[] = {method, route, st};
    pk_metric_counter_add(v->http_requests, lv, 3, 1);
    pk_metric_histogram_observe(v->http_duration, lv, 2, (double)duration_ns / 1e9);
}

/* ---- guard metrics helpers (guard wiring in guard_service.c) ---------------------------------- */

void pk_services_guard_metrics(pk_server *s, const char *surface, const char *decision, const char *category,
                               double seconds)
{
    struct pk_services *v = s->svc;
    const char *lv[] = {surface, decision, category};
    pk_metric_counter_add(v->guard_decisions, lv, 3, 1);
    const char *sv[] = {surface};
    pk_metric_histogram_observe(v->guard_scan, sv, 1, seconds);
}

void pk_services_set_tasks(pk_server *s, struct pk_tasks *t)
{
    s->svc->tasks = t;
}

struct pk_tasks *pk_services_tasks(pk_server *s)
{
    return s->svc ? s->svc->tasks : NULL;
}

pk_ai *pk_services_ai(pk_server *s)
{
    return s->svc ? s->svc->ai : NULL;
}
