/*
 * Redis in the server: L2 note cache, cross-instance invalidation of L1, shared rate limits, health.
 * docs/redis.md has the full argument; in short:
 *
 * L2 (notes by id). Keys: <prefix>n:<id> = "<version> <json>" (TTL --redis-l2-ttl-ms) and
 * <prefix>e:<id> = a write epoch (INCR on every write, TTL 1 day). A reader's GET script returns the
 * value, or the epoch when there is none; after reading the store the reader stores the value with a
 * script that compares the epoch first (SET only if unchanged). A writer, after the store committed and
 * before acknowledging, runs one script: INCR epoch, DEL value, PUBLISH an invalidation. So a reader that
 * read the store before the commit read the epoch before the INCR and its SET is refused, and a reader
 * whose SET landed before the INCR is undone by the DEL.
 *
 * L1 of every instance. Each process runs a subscriber thread (own connection) that drops the L1 entry
 * and bumps the query generation for every invalidation message, and acknowledges it (RPUSH
 * <prefix>ack:<token> <instance>). It PINGs every --redis-ping-ms; a PONG proves that every message
 * published before the PING was handled, and then the instance renews its entry in the registry
 * (<prefix>instances, a sorted set scored by Redis time + lease) and its local lease (PING send time +
 * --redis-lease-ms). L1 lookups on the loop are served only while the lease is live. The writer's script
 * returns the live registry; the writer waits (BLPOP) for an ack from each other live instance, at most
 * lease + 50 ms: an instance that did not ack by then cannot hold a lease that predates the write. When
 * the script fails (Redis down, breaker open) the writer waits the lease out instead. A lost subscription
 * drops the lease at once; a new one clears L1 before the lease is renewed (messages may have been
 * missed). A registry that Redis lost (restart, flush) is detected by a boot marker younger than a
 * lease: the writer then waits the lease out as well.
 *
 * Query pages stay in L1 only (no L2): their generation is bumped by every invalidation message, i.e.
 * "publish bumps", which keeps the loop's key computation free of Redis round trips.
 *
 * Rate limits: GCRA in a Lua script with Redis's clock (EVALSHA), behind pk_limiter; see services.c for
 * the stage that offloads it and falls back to the local limiter.
 */
#include "core/clock.h"
#include "core/id.h"
#include "core/log.h"
#include "foundation/breaker.h"
#include "foundation/cache.h"
#include "foundation/metrics.h"
#include "foundation/ratelimit.h"
#include "redis/redis.h"
#include "server/services.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EPOCH_TTL_MS "86400000"

static pk_redis_script S_GET = {.src = "local v = redis.call('GET', KEYS[1])\n"
                                       "if v then return {v, ''} end\n"
                                       "return {false, redis.call('GET', KEYS[2]) or '0'}\n"};
static pk_redis_script S_PUT = {.src = "if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then return 0 end\n"
                                       "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])\n"
                                       "return 1\n"};
/* KEYS: epoch, value, registry, boot. ARGV: channel, message, epoch ttl, lease ms. */
static pk_redis_script S_WRITE = {
    .src = "redis.call('INCR', KEYS[1])\n"
           "redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
           "redis.call('DEL', KEYS[2])\n"
           "local t = redis.call('TIME')\n"
           "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
           "local boot = redis.call('GET', KEYS[4])\n"
           "if not boot then redis.call('SET', KEYS[4], now); boot = now end\n"
           "redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)\n"
           "redis.call('PUBLISH', ARGV[1], ARGV[2])\n"
           "local young = 0\n"
           "if now - tonumber(boot) < tonumber(ARGV[4]) + 50 then young = 1 end\n"
           "local live = redis.call('ZRANGE', KEYS[3], 0, -1)\n"
           "table.insert(live, 1, young)\n"
           "return live\n"};
/* KEYS: registry, boot. ARGV: instance, lease ms. */
static const char S_RENEW[] = "local t = redis.call('TIME')\n"
                              "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
                              "redis.call('SET', KEYS[2], now, 'NX')\n"
                              "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])\n"
                              "redis.call('PEXPIRE', KEYS[1], 600000)\n"
                              "return now\n";
/* GCRA (see foundation/ratelimit.h), microseconds, Redis's clock. ARGV: T (us), burst. Returns
 * {allowed, remaining, reset_after_us, retry_after_us}. */
static pk_redis_script S_GCRA = {
    .src = "local t = redis.call('TIME')\n"
           "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
           "local T = tonumber(ARGV[1])\n"
           "local tau = T * tonumber(ARGV[2])\n"
           "local tat = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
           "if tat < now then tat = now end\n"
           "local nxt = tat + T\n"
           "if nxt - tau > now then return {0, 0, tat - now, nxt - tau - now} end\n"
           "redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.floor((nxt - now) / 1000) + 1)\n"
           "return {1, math.floor((tau - (nxt - now)) / T), nxt - now, 0}\n"};

typedef struct wrap_store {
    pk_store base;
    pk_store *inner;
    pk_redis_svc *rs;
} wrap_store;

typedef struct redis_limiter {
    pk_limiter base;
    pk_redis_svc *rs;
} redis_limiter;

struct pk_redis_svc {
    pk_server *srv;
    pk_redis *redis;
    pk_breaker *breaker;
    pk_cache *cache;
    pk_redis_sub *sub;
    redisContext *ack_c; /* subscriber thread only */
    char prefix[64];
    char channel[160];
    char self[33];
    char k_registry[96], k_boot[96];
    int lease_ms, l2_ttl_ms;
    atomic_int_fast64_t lease_until;
    atomic_bool subscribed;
    wrap_store *wrap;
    redis_limiter limiter;
    bool limiter_on;
    atomic_uint_fast64_t l2_hits, l2_misses, l2_puts, l2_stale, l2_errors, inval_sent, inval_failed,
        inval_waited_out, inval_received, ack_timeouts, resubscribes, lease_lost;
};

/* ---- subscriber callbacks (subscriber thread) ------------------------------------------------ */

static bool ack_conn(pk_redis_svc *rs)
{
    if (rs->ack_c) return true;
    pk_err *e = pk_redis_connect(rs->redis, 500, &rs->ack_c);
    if (e) {
        pk_err_free(e);
        return false;
    }
    return true;
}

static void ack_drop(pk_redis_svc *rs)
{
    if (rs->ack_c) redisFree(rs->ack_c);
    rs->ack_c = NULL;
}

static void on_subscribed(void *ud)
{
    pk_redis_svc *rs = ud;
    /* we may have missed invalidations while unsubscribed: nothing in L1 can be trusted */
    if (rs->cache) pk_cache_clear(rs->cache);
    atomic_store(&rs->subscribed, true);
    atomic_fetch_add(&rs->resubscribes, 1);
    pk_log_info("redis: subscribed to %s; L1 cleared", rs->channel);
}

static void on_lost(void *ud)
{
    pk_redis_svc *rs = ud;
    atomic_store(&rs->lease_until, 0);
    if (atomic_exchange(&rs->subscribed, false)) {
        atomic_fetch_add(&rs->lease_lost, 1);
        pk_log_warn("redis: invalidation subscription lost; L1 bypassed until it is back");
    }
    ack_drop(rs);
}

static void on_message(void *ud, const char *msg, size_t len)
{
    pk_redis_svc *rs = ud;
    /* "<token> <writer> <note id or ->" */
    char buf[160];
    if (len >= sizeof buf) return;
    memcpy(buf, msg, len);
    buf[len] = '\0';
    char *tok = buf, *writer = strchr(buf, ' ');
    if (!writer) return;
    *writer++ = '\0';
    char *id = strchr(writer, ' ');
    if (!id) return;
    *id++ = '\0';
    atomic_fetch_add(&rs->inval_received, 1);
    if (rs->cache) {
        if (strlen(id) == 36) pk_cache_invalidate(rs->cache, id, 36);
        pk_cache_bump_generation(rs->cache, 0);
    }
    if (!strcmp(writer, rs->self)) return; /* the writer invalidated its own L1 */
    if (!ack_conn(rs)) return;
    char key[256];
    snprintf(key, sizeof key, "%sack:%.32s", rs->prefix, tok);
    redisAppendCommand(rs->ack_c, "RPUSH %s %s", key, rs->self);
    redisAppendCommand(rs->ack_c, "PEXPIRE %s 10000", key);
    for (int i = 0; i < 2; i++) {
        void *rep = NULL;
        if (redisGetReply(rs->ack_c, &rep) != REDIS_OK) {
            ack_drop(rs);
            return;
        }
        freeReplyObject(rep);
    }
}

static void on_pong(void *ud, int64_t sent_ns)
{
    pk_redis_svc *rs = ud;
    if (!ack_conn(rs)) return;
    char lease[24];
    snprintf(lease, sizeof lease, "%d", rs->lease_ms);
    const char *argv[] = {"EVAL", S_RENEW, "2", rs->k_registry, rs->k_boot, rs->self, lease};
    redisReply *rep = redisCommandArgv(rs->ack_c, 7, argv, NULL);
    if (!rep) {
        ack_drop(rs);
        return;
    }
    bool ok = rep->type == REDIS_REPLY_INTEGER;
    freeReplyObject(rep);
    if (ok && atomic_load(&rs->subscribed))
        atomic_store(&rs->lease_until, sent_ns + (int64_t)rs->lease_ms * 1000000);
}

/* ---- invalidation on writes (offload thread) ------------------------------------------------- */

static void sleep_ns(int64_t ns)
{
    if (ns <= 0) return;
    struct timespec ts = {.tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL};
    nanosleep(&ts, NULL);
}

/* Runs after the store committed a write of `id` (NULL: no single note, e.g. a link), before the
 * request is acknowledged. Never fails the write: at worst it waits the lease out. */
static void invalidate(pk_redis_svc *rs, const pk_op_ctx *c, const char *id)
{
    int64_t t0 = pk_mono_ns();
    int64_t wait_ns = ((int64_t)rs->lease_ms + 50) * 1000000;
    unsigned char rnd[8];
    pk_random_bytes(rnd, sizeof rnd);
    char token[17];
    pk_hex(rnd, sizeof rnd, token);
    char kv[160], ke[160], msg[160], lease[24];
    const char *nid = id && *id ? id : "-";
    snprintf(kv, sizeof kv, "%sn:%s", rs->prefix, nid);
    snprintf(ke, sizeof ke, "%se:%s", rs->prefix, nid);
    snprintf(msg, sizeof msg, "%s %s %s", token, rs->self, nid);
    snprintf(lease, sizeof lease, "%d", rs->lease_ms);
    const char *argv[] = {ke, kv, rs->k_registry, rs->k_boot, rs->channel, msg, EPOCH_TTL_MS, lease};
    redisReply *rep = NULL;
    /* the invalidation gets its own budget: a write near its deadline must still try it */
    pk_err *e = pk_redis_eval(rs->redis, t0 + wait_ns, &S_WRITE, 4, 8, argv, NULL, &rep);
    if (e || rep->type != REDIS_REPLY_ARRAY || rep->elements < 1) {
        atomic_fetch_add(&rs->inval_failed, 1);
        atomic_fetch_add(&rs->inval_waited_out, 1);
        pk_log_write(PK_LOG_WARN, NULL, NULL,
                     "redis: invalidation of %s failed (%s); waiting the L1 lease out", nid,
                     e ? e->message : "bad reply");
        pk_err_free(e);
        if (rep) freeReplyObject(rep);
        sleep_ns(t0 + wait_ns - pk_mono_ns());
        return;
    }
    atomic_fetch_add(&rs->inval_sent, 1);
    bool young = rep->element[0]->type == REDIS_REPLY_INTEGER && rep->element[0]->integer == 1;
    char pending[16][33];
    int npending = 0;
    for (size_t i = 1; i < rep->elements && npending < 16; i++) {
        redisReply *m = rep->element[i];
        if (m->type != REDIS_REPLY_STRING || m->len >= 33 || !strcmp(m->str, rs->self)) continue;
        memcpy(pending[npending], m->str, m->len + 1);
        npending++;
    }
    bool many = rep->elements > 17;
    freeReplyObject(rep);
    if (young || many) { /* the registry may be incomplete: wait the lease out */
        atomic_fetch_add(&rs->inval_waited_out, 1);
        sleep_ns(t0 + wait_ns - pk_mono_ns());
        return;
    }
    char ackkey[128];
    snprintf(ackkey, sizeof ackkey, "%sack:%s", rs->prefix, token);
    while (npending > 0) {
        int64_t left = t0 + wait_ns - pk_mono_ns();
        if (left <= 1000000) break;
        char tmo[32];
        snprintf(tmo, sizeof tmo, "%.3f", (double)left / 1e9);
        const char *bv[] = {"BLPOP", ackkey, tmo};
        redisReply *br = NULL;
        e = pk_redis_call(rs->redis, 0, (int)(left / 1000000) + 200, &br, 3, bv, NULL);
        if (e) {
            pk_err_free(e);
            sleep_ns(t0 + wait_ns - pk_mono_ns());
            return;
        }
        if (br->type == REDIS_REPLY_ARRAY && br->elements == 2) {
            for (int i = 0; i < npending; i++)
                if (!strcmp(pending[i], br->element[1]->str)) {
                    memcpy(pending[i], pending[npending - 1], 33);
                    npending--;
                    break;
                }
        }
        freeReplyObject(br);
    }
    if (npending > 0) {
        atomic_fetch_add(&rs->ack_timeouts, 1);
        sleep_ns(t0 + wait_ns - pk_mono_ns());
    }
    (void)c;
}

/* ---- the store decorator --------------------------------------------------------------------- */

#define INNER(s) (((wrap_store *)(s))->inner)
#define RS(s) (((wrap_store *)(s))->rs)

static void w_close(pk_store *s)
{
    pk_store_close(INNER(s));
}
static pk_err *w_migrate(pk_store *s, int *a, int *b)
{
    return INNER(s)->ops->migrate(INNER(s), a, b);
}
static pk_err *w_ping(pk_store *s, const pk_op_ctx *c)
{
    return INNER(s)->ops->ping(INNER(s), c);
}
static pk_err *w_note_create(pk_store *s, const pk_op_ctx *c, const pk_note_input *in, pk_buf *out)
{
    pk_err *e = INNER(s)->ops->note_create(INNER(s), c, in, out);
    if (!e) invalidate(RS(s), c, NULL); /* a new id: only query pages can be stale */
    return e;
}
static pk_err *w_note_get(pk_store *s, const pk_op_ctx *c, const char *id, pk_buf *out, int64_t *v)
{
    return INNER(s)->ops->note_get(INNER(s), c, id, out, v);
}
static pk_err *w_note_update(pk_store *s, const pk_op_ctx *c, const char *id, int64_t iv,
                             const pk_note_input *in, pk_buf *out)
{
    pk_err *e = INNER(s)->ops->note_update(INNER(s), c, id, iv, in, out);
    if (!e) invalidate(RS(s), c, id);
    return e;
}
static pk_err *w_note_delete(pk_store *s, const pk_op_ctx *c, const char *id, int64_t iv)
{
    pk_err *e = INNER(s)->ops->note_delete(INNER(s), c, id, iv);
    if (!e) invalidate(RS(s), c, id);
    return e;
}
static pk_err *w_note_list(pk_store *s, const pk_op_ctx *c, const pk_note_query *q, pk_page *out)
{
    return INNER(s)->ops->note_list(INNER(s), c, q, out);
}
static pk_err *w_note_search(pk_store *s, const pk_op_ctx *c, const pk_note_query *q, pk_page *out)
{
    return INNER(s)->ops->note_search(INNER(s), c, q, out);
}
static pk_err *w_note_history(pk_store *s, const pk_op_ctx *c, const char *id, pk_buf *out)
{
    return INNER(s)->ops->note_history(INNER(s), c, id, out);
}
static pk_err *w_link_create(pk_store *s, const pk_op_ctx *c, const char *a, const char *b, const char *type,
                             double strength, const char *md, pk_buf *out)
{
    pk_err *e = INNER(s)->ops->link_create(INNER(s), c, a, b, type, strength, md, out);
    if (!e) invalidate(RS(s), c, a);
    return e;
}
static pk_err *w_link_list(pk_store *s, const pk_op_ctx *c, const char *id, pk_buf *out)
{
    return INNER(s)->ops->link_list(INNER(s), c, id, out);
}
static pk_err *w_idem_begin(pk_store *s, const pk_op_ctx *c, const char *k, const char *h, pk_idem_state *st,
                            int *status, pk_buf *body)
{
    return INNER(s)->ops->idem_begin(INNER(s), c, k, h, st, status, body);
}
static pk_err *w_idem_finish(pk_store *s, const pk_op_ctx *c, const char *k, int status, const char *body,
                             size_t n)
{
    return INNER(s)->ops->idem_finish(INNER(s), c, k, status, body, n);
}
static pk_err *w_idem_abort(pk_store *s, const pk_op_ctx *c, const char *k)
{
    return INNER(s)->ops->idem_abort(INNER(s), c, k);
}

static const pk_store_ops WRAP_OPS = {
    .close = w_close,
    .migrate = w_migrate,
    .ping = w_ping,
    .note_create = w_note_create,
    .note_get = w_note_get,
    .note_update = w_note_update,
    .note_delete = w_note_delete,
    .note_list = w_note_list,
    .note_search = w_note_search,
    .note_history = w_note_history,
    .link_create = w_link_create,
    .link_list = w_link_list,
    .idem_begin = w_idem_begin,
    .idem_finish = w_idem_finish,
    .idem_abort = w_idem_abort,
};

/* ---- L2 -------------------------------------------------------------------------------------- */

static pk_redis_svc *svc_of(pk_server *s);

bool pk_services_l2_get_note(pk_job *j, const char *id, pk_buf *out, int64_t *version, pk_l2_ticket *t)
{
    t->valid = false;
    pk_redis_svc *rs = svc_of(j->srv);
    if (!rs) return false;
    char kv[160], ke[160];
    snprintf(kv, sizeof kv, "%sn:%s", rs->prefix, id);
    snprintf(ke, sizeof ke, "%se:%s", rs->prefix, id);
    const char *argv[] = {kv, ke};
    redisReply *rep = NULL;
    pk_err *e = pk_redis_eval(rs->redis, j->deadline_ns, &S_GET, 2, 2, argv, NULL, &rep);
    if (e) {
        atomic_fetch_add(&rs->l2_errors, 1);
        pk_err_free(e);
        return false;
    }
    bool hit = false;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2) {
        redisReply *v = rep->element[0], *ep = rep->element[1];
        if (v->type == REDIS_REPLY_STRING) {
            char *sp = memchr(v->str, ' ', v->len);
            if (sp) {
                *version = strtoll(v->str, NULL, 10);
                pk_buf_append(out, sp + 1, v->len - (size_t)(sp + 1 - v->str));
                hit = true;
            }
        } else if (ep->type == REDIS_REPLY_STRING && ep->len < sizeof t->epoch) {
            memcpy(t->epoch, ep->str, ep->len);
            t->epoch[ep->len] = '\0';
            t->valid = true;
        }
    }
    freeReplyObject(rep);
    atomic_fetch_add(hit ? &rs->l2_hits : &rs->l2_misses, 1);
    return hit;
}

void pk_services_l2_put_note(pk_job *j, const char *id, const pk_buf *json, int64_t version,
                             const pk_l2_ticket *t)
{
    pk_redis_svc *rs = svc_of(j->srv);
    if (!rs || !t->valid || !json->len) return;
    char kv[160], ke[160], ttl[24];
    snprintf(kv, sizeof kv, "%sn:%s", rs->prefix, id);
    snprintf(ke, sizeof ke, "%se:%s", rs->prefix, id);
    snprintf(ttl, sizeof ttl, "%d", rs->l2_ttl_ms);
    pk_buf val = PK_BUF_INIT;
    pk_buf_printf(&val, "%lld ", (long long)version);
    pk_buf_append(&val, json->data, json->len);
    const char *argv[] = {kv, ke, t->epoch, val.data, ttl};
    size_t lens[] = {strlen(kv), strlen(ke), strlen(t->epoch), val.len, strlen(ttl)};
    redisReply *rep = NULL;
    pk_err *e = pk_redis_eval(rs->redis, j->deadline_ns, &S_PUT, 2, 5, argv, lens, &rep);
    pk_buf_free(&val);
    if (e) {
        atomic_fetch_add(&rs->l2_errors, 1);
        pk_err_free(e);
        return;
    }
    atomic_fetch_add(rep->type == REDIS_REPLY_INTEGER && rep->integer == 1 ? &rs->l2_puts : &rs->l2_stale, 1);
    freeReplyObject(rep);
}

/* ---- the shared limiter ---------------------------------------------------------------------- */

static pk_err *rl_decide(pk_limiter *l, const char *key, size_t keylen, const pk_rate_class *cls,
                         int64_t now_ns, pk_rate_decision *out)
{
    pk_redis_svc *rs = ((redis_limiter *)l)->rs;
    int64_t t_us = cls->period_ns / cls->rate / 1000;
    if (t_us < 1) t_us = 1;
    char k[256], ts[24], bs[24];
    int kl =
        snprintf(k, sizeof k, "%srl:%s:%.*s", rs->prefix, cls->name, (int)(keylen > 160 ? 160 : keylen), key);
    snprintf(ts, sizeof ts, "%lld", (long long)t_us);
    snprintf(bs, sizeof bs, "%lld", (long long)cls->burst);
    const char *argv[] = {k, ts, bs};
    size_t lens[] = {(size_t)kl, strlen(ts), strlen(bs)};
    redisReply *rep = NULL;
    pk_err *e = pk_redis_eval(rs->redis, pk_mono_ns() + 1000000000LL, &S_GCRA, 1, 3, argv, lens, &rep);
    if (e) return e;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 4) {
        freeReplyObject(rep);
        return pk_err_new("redis_error", 500, "unexpected reply from the rate-limit script");
    }
    out->allowed = rep->element[0]->integer == 1;
    out->limit = cls->burst;
    out->remaining = rep->element[1]->integer;
    out->reset_after_ns = rep->element[2]->integer * 1000;
    out->retry_after_ns = rep->element[3]->integer * 1000;
    freeReplyObject(rep);
    (void)now_ns;
    return NULL;
}

static void rl_destroy(pk_limiter *l)
{
    (void)l; /* embedded in pk_redis_svc */
}

static const pk_limiter_ops RL_OPS = {.kind = "redis", .decide = rl_decide, .destroy = rl_destroy};

pk_limiter *pk_redis_svc_limiter(pk_redis_svc *rs)
{
    return rs && rs->limiter_on ? &rs->limiter.base : NULL;
}

/* ---- state ----------------------------------------------------------------------------------- */

bool pk_redis_svc_l1_trusted(pk_redis_svc *rs)
{
    return !rs || atomic_load(&rs->lease_until) > pk_mono_ns();
}

bool pk_redis_svc_usable(pk_redis_svc *rs)
{
    if (!rs) return false;
    pk_breaker_state st = pk_breaker_get_state(rs->breaker);
    if (st == PK_BREAKER_CLOSED || st == PK_BREAKER_HALF_OPEN || st == PK_BREAKER_DISABLED) return true;
    if (st == PK_BREAKER_OPEN) return pk_breaker_retry_after_ms(rs->breaker) == 0;
    return false;
}

bool pk_redis_svc_degraded(pk_redis_svc *rs, const char **why)
{
    if (!rs) return false;
    pk_breaker_state st = pk_breaker_get_state(rs->breaker);
    if (st != PK_BREAKER_CLOSED && st != PK_BREAKER_DISABLED) {
        *why = "redis circuit breaker is not closed";
        return true;
    }
    if (!atomic_load(&rs->subscribed)) {
        *why = "redis invalidation subscription is down";
        return true;
    }
    if (!pk_redis_svc_l1_trusted(rs)) {
        *why = "L1 lease not renewed (redis slow or unreachable)";
        return true;
    }
    pk_redis_stats st2;
    pk_redis_stats_get(rs->redis, &st2);
    *why = "ok";
    return false;
}

/* ---- metrics --------------------------------------------------------------------------------- */

typedef struct stat_ref {
    pk_redis_svc *rs;
    int what;
} stat_ref;
static stat_ref STAT_REFS[32];

static double stat_fn(void *ctx)
{
    stat_ref *r = ctx;
    pk_redis_svc *rs = r->rs;
    pk_redis_stats st;
    pk_redis_stats_get(rs->redis, &st);
    switch (r->what) {
    case 0:
        return (double)st.ok;
    case 1:
        return (double)st.error_reply;
    case 2:
        return (double)st.io_error;
    case 3:
        return (double)st.timeout;
    case 4:
        return (double)st.rejected;
    case 5:
        return (double)st.pool_size;
    case 6:
        return (double)st.connected;
    case 7:
        return (double)st.in_use;
    case 8:
        return (double)atomic_load(&rs->l2_hits);
    case 9:
        return (double)atomic_load(&rs->l2_misses);
    case 10:
        return (double)atomic_load(&rs->l2_puts);
    case 11:
        return (double)atomic_load(&rs->l2_stale);
    case 12:
        return (double)atomic_load(&rs->l2_errors);
    case 13:
        return (double)atomic_load(&rs->inval_sent);
    case 14:
        return (double)atomic_load(&rs->inval_failed);
    case 15:
        return (double)atomic_load(&rs->inval_received);
    case 16:
        return (double)atomic_load(&rs->ack_timeouts);
    case 17:
        return (double)atomic_load(&rs->inval_waited_out);
    case 18:
        return pk_redis_svc_l1_trusted(rs) ? 1 : 0;
    case 19:
        return atomic_load(&rs->subscribed) ? 1 : 0;
    case 20:
        return (double)atomic_load(&rs->resubscribes);
    case 21:
        return (double)st.connects;
    case 22:
        return (double)st.connect_failures;
    case 23:
        return (double)st.script_loads;
    default:
        return 0;
    }
}

static void register_metrics(pk_redis_svc *rs, pk_metrics *m)
{
    for (int i = 0; i < 32; i++)
        STAT_REFS[i] = (stat_ref){rs, i};
    const char *outcome[] = {"outcome"};
    pk_metric_family *cmds =
        pk_metrics_counter(m, "pake_redis_commands_total", "Redis commands by outcome.", 1, outcome);
    static const char *outcomes[] = {"ok", "error_reply", "io_error", "timeout", "rejected"};
    for (int i = 0; i < 5; i++) {
        const char *lv[] = {outcomes[i]};
        pk_metric_bind_fn(cmds, lv, 1, stat_fn, &STAT_REFS[i]);
    }
    const char *state[] = {"state"};
    pk_metric_family *pool =
        pk_metrics_gauge(m, "pake_redis_pool_connections", "Redis pool slots by state.", 1, state);
    static const char *states[] = {"size", "connected", "in_use"};
    for (int i = 0; i < 3; i++) {
        const char *lv[] = {states[i]};
        pk_metric_bind_fn(pool, lv, 1, stat_fn, &STAT_REFS[5 + i]);
    }
    struct {
        const char *name, *help;
        bool counter;
        int what;
    } defs[] = {
        {"pake_l2_hits_total", "L2 (Redis) note cache hits.", true, 8},
        {"pake_l2_misses_total", "L2 (Redis) note cache misses.", true, 9},
        {"pake_l2_puts_total", "Notes stored into L2.", true, 10},
        {"pake_l2_stale_puts_total", "L2 stores refused because a write happened during the load.", true, 11},
        {"pake_l2_errors_total", "L2 operations that failed (served from the store instead).", true, 12},
        {"pake_redis_invalidations_sent_total", "Write invalidations published.", true, 13},
        {"pake_redis_invalidations_failed_total", "Write invalidations that could not be published.", true,
         14},
        {"pake_redis_invalidations_received_total", "Invalidation messages handled by the subscriber.", true,
         15},
        {"pake_redis_ack_timeouts_total", "Writes that waited the lease out for a missing ack.", true, 16},
        {"pake_redis_lease_waits_total", "Writes that waited the L1 lease out.", true, 17},
        {"pake_redis_l1_lease_valid", "1 while this instance may serve L1 hits.", false, 18},
        {"pake_redis_subscribed", "1 while the invalidation subscription is up.", false, 19},
        {"pake_redis_subscriptions_total", "Invalidation subscriptions established (L1 cleared each time).",
         true, 20},
        {"pake_redis_connects_total", "Redis connections opened by the pool.", true, 21},
        {"pake_redis_connect_failures_total", "Redis connection attempts that failed.", true, 22},
        {"pake_redis_script_loads_total", "Lua scripts (re)loaded after NOSCRIPT.", true, 23},
    };
    for (size_t i = 0; i < sizeof defs / sizeof *defs; i++) {
        pk_metric_family *f = defs[i].counter ? pk_metrics_counter(m, defs[i].name, defs[i].help, 0, NULL)
                                              : pk_metrics_gauge(m, defs[i].name, defs[i].help, 0, NULL);
        pk_metric_bind_fn(f, NULL, 0, stat_fn, &STAT_REFS[defs[i].what]);
    }
}

/* ---- init ------------------------------------------------------------------------------------ */

static pk_redis_svc *g_rs; /* one per process (the server is a process-wide singleton) */
static pk_redis_svc *svc_of(pk_server *s)
{
    (void)s;
    return g_rs;
}

pk_err *pk_redis_svc_init(pk_server *s, const pk_redis_svc_env *env, pk_redis_svc **out)
{
    *out = NULL;
    const pk_config *c = &s->cfg;
    if (!c->redis_url || !*c->redis_url) return NULL;
    pk_redis_script_init(&S_GET);
    pk_redis_script_init(&S_PUT);
    pk_redis_script_init(&S_WRITE);
    pk_redis_script_init(&S_GCRA);
    pk_redis_svc *rs = calloc(1, sizeof *rs);
    rs->srv = s;
    rs->cache = env->cache;
    rs->breaker = env->breaker;
    rs->lease_ms = c->redis_lease_ms;
    rs->l2_ttl_ms = c->redis_l2_ttl_ms > 0 ? c->redis_l2_ttl_ms : 300000;
    pk_redis_config rc = {.url = c->redis_url,
                          .pool_size = c->redis_pool_size,
                          .connect_timeout_ms = c->redis_connect_timeout_ms,
                          .command_timeout_ms = c->redis_timeout_ms,
                          .breaker = env->breaker};
    pk_err *e = pk_redis_new(&rc, &rs->redis);
    if (e) {
        free(rs);
        return e;
    }
    snprintf(rs->prefix, sizeof rs->prefix, "%.60s", c->redis_prefix);
    const pk_redis_url *u = pk_redis_get_url(rs->redis);
    /* pub/sub ignores the db number: the channel names the db */
    snprintf(rs->channel, sizeof rs->channel, "%sinval:%d", rs->prefix, u->db);
    snprintf(rs->k_registry, sizeof rs->k_registry, "%sinstances", rs->prefix);
    snprintf(rs->k_boot, sizeof rs->k_boot, "%sboot", rs->prefix);
    unsigned char rnd[16];
    pk_random_bytes(rnd, sizeof rnd);
    pk_hex(rnd, sizeof rnd, rs->self);
    /* One probe at start: a refused AUTH is a configuration error worth failing loudly for; an
     * unreachable Redis is an outage the process rides out (degraded). */
    redisContext *probe = NULL;
    e = pk_redis_connect(rs->redis, c->redis_connect_timeout_ms, &probe);
    if (e && (pk_err_is(e, "redis_auth") || pk_err_is(e, "redis_error"))) {
        e = pk_err_wrap(e, "bad_config", 2, "--redis-url %s:%d: %s", u->host, u->port, e->message);
        pk_redis_free(rs->redis);
        free(rs);
        return e;
    }
    if (e) {
        pk_log_warn("redis: %s; starting degraded (local rate limits, no L1 hits until it is reachable)",
                    e->message);
        pk_err_free(e);
    } else {
        redisFree(probe);
        pk_log_info("redis: connected to %s:%d db %d", u->host, u->port, u->db);
    }
    rs->limiter.base.ops = &RL_OPS;
    rs->limiter.rs = rs;
    rs->limiter_on = c->redis_ratelimit;
    rs->wrap = calloc(1, sizeof *rs->wrap);
    rs->wrap->base = *s->store;
    rs->wrap->base.ops = &WRAP_OPS;
    rs->wrap->inner = s->store;
    rs->wrap->rs = rs;
    s->store = &rs->wrap->base;
    register_metrics(rs, env->metrics);
    g_rs = rs;
    pk_redis_sub_callbacks cb = {.on_subscribed = on_subscribed,
                                 .on_message = on_message,
                                 .on_pong = on_pong,
                                 .on_lost = on_lost,
                                 .ud = rs};
    rs->sub = pk_redis_sub_start(rs->redis, rs->channel, c->redis_ping_ms, &cb);
    *out = rs;
    return NULL;
}

struct pk_redis *pk_services_redis_pool(pk_server *s)
{
    pk_redis_svc *rs = svc_of(s);
    return rs ? rs->redis : NULL;
}

void pk_redis_svc_dispose(pk_redis_svc *rs)
{
    if (!rs) return;
    pk_redis_sub_stop(rs->sub);
    /* leave the registry so that writers do not wait for this instance */
    if (ack_conn(rs)) {
        redisReply *rep = redisCommand(rs->ack_c, "ZREM %s %s", rs->k_registry, rs->self);
        if (rep) freeReplyObject(rep);
    }
    ack_drop(rs);
    pk_server *s = rs->srv;
    if (s->store == &rs->wrap->base) s->store = rs->wrap->inner;
    free(rs->wrap);
    pk_redis_free(rs->redis);
    if (g_rs == rs) g_rs = NULL;
    free(rs);
}
