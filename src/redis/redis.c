/*
 * Redis pool and subscriber over blocking hiredis. Model (see redis.h): breaker -> bulkhead -> slot ->
 * command with a deadline-derived socket timeout. hiredis contexts cannot be reused after any error,
 * so an error closes the connection and the slot backs off before it reconnects; this keeps a dead
 * Redis from being hammered with connects while the breaker is still closed, and the breaker (a few
 * failures in its window) then makes every caller fail fast until its half-open probes succeed.
 *
 * Why blocking hiredis on offload threads instead of the async API on the loops: the rest of PAKE's
 * dependencies (SQLite, PostgreSQL) are blocking calls on the offload pool already, with deadlines,
 * bulkheads and breakers around them; Redis gets the same treatment and the same failure semantics.
 */
#include "redis/redis.h"
#include "core/clock.h"
#include "core/id.h"
#include "foundation/bulkhead.h"
#include <errno.h>
#include <openssl/sha.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct slot {
    redisContext *c;
    int64_t tmo_ms; /* the socket timeout last set on c (0: unknown): set again only when it changes */
    bool busy;
    int fails;
    int64_t next_try_ns;
} slot;

struct pk_redis {
    pk_redis_url url;
    int pool_size, connect_timeout_ms, command_timeout_ms;
    pk_breaker *breaker;
    pk_bulkhead *bulkhead;
    pthread_mutex_t mu;
    slot *slots;
    atomic_uint_fast64_t ok, error_reply, io_error, timeout, rejected, connects, connect_failures,
        script_loads;
};

/* ---- URL ------------------------------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%') {
            if (i + 2 >= n) return false;
            int a = hexval(s[i + 1]), b = hexval(s[i + 2]);
            if (a < 0 || b < 0) return false;
            ch = (char)(a * 16 + b);
            i += 2;
        }
        if (o + 1 >= cap) return false;
        out[o++] = ch;
    }
    out[o] = '\0';
    return true;
}

pk_err *pk_redis_url_parse(const char *url, pk_redis_url *out)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (!url || strncmp(url, "redis://", 8) != 0)
        return pk_err_new("bad_config", 2,
                          "--redis-url must start with redis:// (rediss:// is not supported)");
    const char *p = url + 8;
    const char *end = p + strlen(p);
    const char *slash = strchr(p, '/');
    const char *auth_end = NULL;
    for (const char *q = p; q < (slash ? slash : end); q++)
        if (*q == '@') auth_end = q; /* the last '@' before the path ends the credentials */
    if (auth_end) {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));
        if (!colon) {
            /* "redis://secret@host": a password alone (what redis-cli accepts too) */
            if (!pct_decode(p, (size_t)(auth_end - p), out->password, sizeof out->password))
                return pk_err_new("bad_config", 2, "--redis-url: bad credentials encoding");
        } else {
            if (!pct_decode(p, (size_t)(colon - p), out->user, sizeof out->user) ||
                !pct_decode(colon + 1, (size_t)(auth_end - colon - 1), out->password, sizeof out->password))
                return pk_err_new("bad_config", 2, "--redis-url: bad credentials encoding");
        }
        p = auth_end + 1;
    }
    const char *hend = slash ? slash : end;
    const char *hostp = p, *colon = NULL;
    size_t hl;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(hend - p));
        if (!rb) return pk_err_new("bad_config", 2, "--redis-url: unterminated [IPv6] host");
        hostp = p + 1;
        hl = (size_t)(rb - hostp);
        if (rb + 1 < hend && rb[1] == ':') colon = rb + 1;
    } else {
        colon = memchr(p, ':', (size_t)(hend - p));
        hl = (size_t)((colon ? colon : hend) - p);
    }
    if (hl == 0 || hl >= sizeof out->host) return pk_err_new("bad_config", 2, "--redis-url: missing host");
    memcpy(out->host, hostp, hl);
    if (colon) {
        char *e;
        long port = strtol(colon + 1, &e, 10);
        if (e != hend || port < 1 || port > 65535)
            return pk_err_new("bad_config", 2, "--redis-url: port must be 1..65535");
        out->port = (int)port;
    }
    if (slash && slash[1]) {
        char *e;
        long db = strtol(slash + 1, &e, 10);
        if (*e || db < 0 || db > 100000)
            return pk_err_new("bad_config", 2, "--redis-url: db must be a number");
        out->db = (int)db;
    }
    return NULL;
}

/* ---- connections ----------------------------------------------------------------------------- */

static struct timeval tv_ms(int64_t ms)
{
    if (ms < 1) ms = 1;
    return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

static pk_err *reply_err(redisReply *rep)
{
    return pk_err_new("redis_error", 500, "redis: %.*s", (int)(rep->len > 300 ? 300 : rep->len), rep->str);
}

static pk_err *handshake(pk_redis *r, redisContext *c)
{
    redisReply *rep = NULL;
    if (r->url.password[0]) {
        if (r->url.user[0])
            rep = redisCommand(c, "AUTH %s %s", r->url.user, r->url.password);
        else
            rep = redisCommand(c, "AUTH %s", r->url.password);
        if (!rep) return pk_err_new("redis_unavailable", 503, "redis AUTH: %s", c->errstr);
        if (rep->type == REDIS_REPLY_ERROR) {
            pk_err *e = pk_err_new("redis_auth", 503, "redis refused AUTH%s%s: %.*s",
                                   r->url.user[0] ? " as " : "", r->url.user, (int)rep->len, rep->str);
            freeReplyObject(rep);
            return e;
        }
        freeReplyObject(rep);
    }
    /* PING proves the session is usable (a server with requirepass answers NOAUTH to a client that
     * gave no password) */
    rep = redisCommand(c, "PING");
    if (!rep) return pk_err_new("redis_unavailable", 503, "redis PING: %s", c->errstr);
    if (rep->type == REDIS_REPLY_ERROR) {
        pk_err *e = rep->len >= 6 && !strncmp(rep->str, "NOAUTH", 6)
                        ? pk_err_new("redis_auth", 503, "redis requires a password (AUTH): %.*s",
                                     (int)rep->len, rep->str)
                        : reply_err(rep);
        freeReplyObject(rep);
        return e;
    }
    freeReplyObject(rep);
    if (r->url.db) {
        rep = redisCommand(c, "SELECT %d", r->url.db);
        if (!rep) return pk_err_new("redis_unavailable", 503, "redis SELECT: %s", c->errstr);
        if (rep->type == REDIS_REPLY_ERROR) {
            pk_err *e = rep->len >= 6 && !strncmp(rep->str, "NOAUTH", 6)
                            ? pk_err_new("redis_auth", 503, "redis requires a password: %.*s", (int)rep->len,
                                         rep->str)
                            : reply_err(rep);
            freeReplyObject(rep);
            return e;
        }
        freeReplyObject(rep);
    }
    return NULL;
}

pk_err *pk_redis_connect(pk_redis *r, int timeout_ms, redisContext **out)
{
    *out = NULL;
    redisContext *c = redisConnectWithTimeout(r->url.host, r->url.port, tv_ms(timeout_ms));
    if (!c || c->err) {
        pk_err *e = pk_err_new("redis_unavailable", 503, "cannot connect to redis at %s:%d: %s", r->url.host,
                               r->url.port, c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        atomic_fetch_add(&r->connect_failures, 1);
        return e;
    }
    redisSetTimeout(c, tv_ms(timeout_ms));
    pk_err *e = handshake(r, c);
    if (e) {
        redisFree(c);
        atomic_fetch_add(&r->connect_failures, 1);
        return e;
    }
    atomic_fetch_add(&r->connects, 1);
    *out = c;
    return NULL;
}

pk_err *pk_redis_new(const pk_redis_config *cfg, pk_redis **out)
{
    *out = NULL;
    pk_redis *r = calloc(1, sizeof *r);
    pk_err *e = pk_redis_url_parse(cfg->url, &r->url);
    if (e) {
        free(r);
        return e;
    }
    r->pool_size = cfg->pool_size > 0 ? cfg->pool_size : 8;
    r->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 500;
    r->command_timeout_ms = cfg->command_timeout_ms > 0 ? cfg->command_timeout_ms : 250;
    r->breaker = cfg->breaker;
    r->bulkhead =
        pk_bulkhead_new("redis", r->pool_size, cfg->bulkhead_wait_ms > 0 ? cfg->bulkhead_wait_ms : 50);
    pthread_mutex_init(&r->mu, NULL);
    r->slots = calloc((size_t)r->pool_size, sizeof *r->slots);
    *out = r;
    return NULL;
}

void pk_redis_free(pk_redis *r)
{
    if (!r) return;
    for (int i = 0; i < r->pool_size; i++)
        if (r->slots[i].c) redisFree(r->slots[i].c);
    free(r->slots);
    pk_bulkhead_free(r->bulkhead);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

const pk_redis_url *pk_redis_get_url(const pk_redis *r)
{
    return &r->url;
}

void pk_redis_stats_get(pk_redis *r, pk_redis_stats *o)
{
    memset(o, 0, sizeof *o);
    o->pool_size = r->pool_size;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->pool_size; i++) {
        if (r->slots[i].c || r->slots[i].busy) o->connected += r->slots[i].c != NULL;
        o->in_use += r->slots[i].busy;
    }
    pthread_mutex_unlock(&r->mu);
    o->ok = atomic_load(&r->ok);
    o->error_reply = atomic_load(&r->error_reply);
    o->io_error = atomic_load(&r->io_error);
    o->timeout = atomic_load(&r->timeout);
    o->rejected = atomic_load(&r->rejected);
    o->connects = atomic_load(&r->connects);
    o->connect_failures = atomic_load(&r->connect_failures);
    o->script_loads = atomic_load(&r->script_loads);
}

static int64_t backoff_ns(int fails)
{
    int64_t cap = 1000000000LL, base = 50000000LL;
    int64_t b = base << (fails > 5 ? 5 : fails);
    if (b > cap) b = cap;
    return b / 2 + (int64_t)(pk_rand_unit() * (double)(b / 2)); /* equal jitter: never 0 */
}

/* Takes a slot with a live connection (connecting it when its backoff allows). */
static pk_err *acquire(pk_redis *r, int64_t deadline_ns, slot **out)
{
    int64_t now = pk_mono_ns();
    pthread_mutex_lock(&r->mu);
    slot *pick = NULL;
    for (int i = 0; i < r->pool_size && !pick; i++)
        if (!r->slots[i].busy && r->slots[i].c) pick = &r->slots[i];
    for (int i = 0; i < r->pool_size && !pick; i++)
        if (!r->slots[i].busy && r->slots[i].next_try_ns <= now) pick = &r->slots[i];
    if (pick) pick->busy = true;
    pthread_mutex_unlock(&r->mu);
    if (!pick)
        return pk_err_new("redis_unavailable", 503, "redis is unreachable (reconnecting with backoff)");
    if (pick->c) {
        *out = pick;
        return NULL;
    }
    int64_t left_ms = deadline_ns ? (deadline_ns - now) / 1000000 : r->connect_timeout_ms;
    int tmo = (int)(left_ms < r->connect_timeout_ms ? left_ms : r->connect_timeout_ms);
    pk_err *e = tmo > 0 ? pk_redis_connect(r, tmo, &pick->c)
                        : pk_err_new("redis_timeout", 504, "no time left to connect to redis");
    pthread_mutex_lock(&r->mu);
    if (e) {
        pick->fails++;
        pick->next_try_ns = pk_mono_ns() + backoff_ns(pick->fails);
        pick->busy = false;
    } else {
        pick->fails = 0;
        pick->tmo_ms = 0; /* the new connection has the connect timeout */
    }
    pthread_mutex_unlock(&r->mu);
    if (!e) *out = pick;
    return e;
}

static void release(pk_redis *r, slot *s, bool broken)
{
    pthread_mutex_lock(&r->mu);
    if (broken && s->c) {
        redisFree(s->c);
        s->c = NULL;
        s->tmo_ms = 0;
        s->fails++;
        s->next_try_ns = pk_mono_ns() + backoff_ns(s->fails);
    }
    s->busy = false;
    pthread_mutex_unlock(&r->mu);
}

/* Runs one command on a slot's connection. *broken tells whether the connection must be dropped. */
static pk_err *run(pk_redis *r, slot *s, int64_t deadline_ns, int timeout_ms, redisReply **out, int argc,
                   const char **argv, const size_t *lens, bool *broken)
{
    *broken = false;
    int64_t tmo = timeout_ms > 0 ? timeout_ms : r->command_timeout_ms;
    if (deadline_ns) {
        int64_t left = (deadline_ns - pk_mono_ns()) / 1000000;
        if (left < 1) {
            atomic_fetch_add(&r->timeout, 1);
            return pk_err_new("redis_timeout", 504, "no time left for a redis command");
        }
        if (timeout_ms <= 0 && left < tmo) tmo = left;
    }
    if (s->tmo_ms != tmo) { /* two setsockopt calls: not once per command when the timeout is the same */
        redisSetTimeout(s->c, tv_ms(tmo));
        s->tmo_ms = tmo;
    }
    redisReply *rep = redisCommandArgv(s->c, argc, argv, lens);
    if (!rep) {
        *broken = true;
        bool to = s->c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
        atomic_fetch_add(to ? &r->timeout : &r->io_error, 1);
        return to ? pk_err_new("redis_timeout", 504, "redis command timed out after %lld ms", (long long)tmo)
                  : pk_err_new("redis_unavailable", 503, "redis connection failed: %s", s->c->errstr);
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        atomic_fetch_add(&r->error_reply, 1);
        pk_err *e = reply_err(rep);
        /* a restarted Redis that requires AUTH, or is still loading: the connection is useless */
        if ((rep->len >= 6 && !strncmp(rep->str, "NOAUTH", 6)) ||
            (rep->len >= 7 && !strncmp(rep->str, "LOADING", 7)))
            *broken = true;
        freeReplyObject(rep);
        return e;
    }
    atomic_fetch_add(&r->ok, 1);
    *out = rep;
    return NULL;
}

typedef struct call_ctx {
    pk_breaker_permit bp;
    bool has_permit;
    int64_t t0;
} call_ctx;

static pk_err *enter(pk_redis *r, int64_t deadline_ns, call_ctx *cc)
{
    cc->has_permit = false;
    if (r->breaker) {
        if (!pk_breaker_allow(r->breaker, &cc->bp)) {
            atomic_fetch_add(&r->rejected, 1);
            pk_err *e = pk_err_new("redis_unavailable", 503, "redis circuit breaker is open");
            e->retry_after_s = (int)((cc->bp.retry_after_ms + 999) / 1000);
            return e;
        }
        cc->has_permit = true;
    }
    pk_err *e = pk_bulkhead_enter(r->bulkhead, deadline_ns ? deadline_ns : INT64_MAX);
    if (e) {
        atomic_fetch_add(&r->rejected, 1);
        /* a full bulkhead says nothing about Redis's health */
        if (cc->has_permit) pk_breaker_record(r->breaker, &cc->bp, PK_OUTCOME_IGNORED, 0);
        return e;
    }
    cc->t0 = pk_mono_ns();
    return NULL;
}

static void leave(pk_redis *r, call_ctx *cc, const pk_err *e)
{
    pk_bulkhead_leave(r->bulkhead);
    if (cc->has_permit) {
        pk_breaker_outcome o = !e || pk_err_is(e, "redis_error") ? PK_OUTCOME_SUCCESS : PK_OUTCOME_FAILURE;
        pk_breaker_record(r->breaker, &cc->bp, o, pk_mono_ns() - cc->t0);
    }
}

pk_err *pk_redis_call(pk_redis *r, int64_t deadline_ns, int timeout_ms, redisReply **out, int argc,
                      const char **argv, const size_t *lens)
{
    *out = NULL;
    call_ctx cc;
    pk_err *e = enter(r, deadline_ns, &cc);
    if (e) return e;
    slot *s = NULL;
    e = acquire(r, deadline_ns, &s);
    if (!e) {
        bool broken;
        e = run(r, s, deadline_ns, timeout_ms, out, argc, argv, lens, &broken);
        release(r, s, broken);
    }
    leave(r, &cc, e);
    return e;
}

void pk_redis_script_init(pk_redis_script *s)
{
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)s->src, strlen(s->src), md);
    pk_hex(md, sizeof md, s->sha);
}

/* `verb name nkeys argv...` (EVALSHA or FCALL). When Redis answers that it does not know the code
 * (`missing` in its error: a new or restarted Redis, SCRIPT/FUNCTION FLUSH), runs `load` and calls once
 * more, on the same connection. */
static pk_err *call_code(pk_redis *r, int64_t deadline_ns, const char *verb, const char *name, int nkeys,
                         int argc, const char **argv, const size_t *lens, const char *missing,
                         const char **load, int nload, redisReply **out)
{
    *out = NULL;
    const char *av_small[24];
    size_t al_small[24];
    const char **av = av_small;
    size_t *al = al_small;
    if (argc + 3 > 24) { /* long argument lists (group commits): on the heap */
        av = malloc((size_t)(argc + 3) * sizeof *av);
        al = malloc((size_t)(argc + 3) * sizeof *al);
    }
    char nk[16];
    snprintf(nk, sizeof nk, "%d", nkeys);
    av[0] = verb, al[0] = strlen(verb);
    av[1] = name, al[1] = strlen(name);
    av[2] = nk, al[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[3 + i] = argv[i];
        al[3 + i] = lens ? lens[i] : strlen(argv[i]);
    }
    call_ctx cc;
    pk_err *e = enter(r, deadline_ns, &cc);
    if (e) goto done;
    slot *s = NULL;
    e = acquire(r, deadline_ns, &s);
    if (!e) {
        bool broken;
        e = run(r, s, deadline_ns, 0, out, argc + 3, av, al, &broken);
        if (e && !broken && pk_err_is(e, "redis_error") && strstr(e->message, missing)) {
            pk_err_free(e);
            redisReply *lr = NULL;
            e = run(r, s, deadline_ns, 0, &lr, nload, load, NULL, &broken);
            if (lr) freeReplyObject(lr);
            atomic_fetch_add(&r->script_loads, 1);
            if (!e) e = run(r, s, deadline_ns, 0, out, argc + 3, av, al, &broken);
        }
        release(r, s, broken);
    }
    leave(r, &cc, e);
done:
    if (av != av_small) {
        free(av);
        free(al);
    }
    return e;
}

pk_err *pk_redis_eval(pk_redis *r, int64_t deadline_ns, pk_redis_script *sc, int nkeys, int argc,
                      const char **argv, const size_t *lens, redisReply **out)
{
    const char *load[] = {"SCRIPT", "LOAD", sc->src};
    return call_code(r, deadline_ns, "EVALSHA", sc->sha, nkeys, argc, argv, lens, "NOSCRIPT", load, 3, out);
}

/* Redis answers "ERR Function not found" for a function no library defines: the library is loaded with
 * REPLACE (another process may load it at the same time; the same name always carries the same code). */
pk_err *pk_redis_fcall(pk_redis *r, int64_t deadline_ns, const char *library, const char *fn, int nkeys,
                       int argc, const char **argv, const size_t *lens, redisReply **out)
{
    const char *load[] = {"FUNCTION", "LOAD", "REPLACE", library};
    return call_code(r, deadline_ns, "FCALL", fn, nkeys, argc, argv, lens, "Function not found", load, 4,
                     out);
}

/* ---- subscriber ------------------------------------------------------------------------------ */

struct pk_redis_sub {
    pk_redis *r;
    char *channel;
    int ping_ms;
    pk_redis_sub_callbacks cb;
    pthread_t th;
    atomic_bool stop;
};

static void sleep_ms_interruptible(pk_redis_sub *s, int64_t ms)
{
    while (ms > 0 && !atomic_load(&s->stop)) {
        int64_t step = ms > 50 ? 50 : ms;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = step * 1000000};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

static bool is_msg(redisReply *rep, const char *kind)
{
    return rep->type == REDIS_REPLY_ARRAY && rep->elements >= 1 &&
           rep->element[0]->type == REDIS_REPLY_STRING && !strcasecmp(rep->element[0]->str, kind);
}

/* One subscribed session; returns when the connection is lost or stop is set. */
static void sub_session(pk_redis_sub *s, redisContext *c)
{
    const char *argv[] = {"SUBSCRIBE", s->channel};
    redisReply *rep = redisCommandArgv(c, 2, argv, NULL);
    if (!rep || !is_msg(rep, "subscribe")) {
        if (rep) freeReplyObject(rep);
        return;
    }
    freeReplyObject(rep);
    s->cb.on_subscribed(s->cb.ud);
    int64_t ping_sent = 0, last_ping = 0;
    while (!atomic_load(&s->stop)) {
        int64_t now = pk_mono_ns();
        if (!ping_sent && now - last_ping >= (int64_t)s->ping_ms * 1000000) {
            const char *pv[] = {"PING"};
            redisAppendCommandArgv(c, 1, pv, NULL);
            int done = 0;
            while (!done)
                if (redisBufferWrite(c, &done) != REDIS_OK) return;
            ping_sent = last_ping = now;
        }
        if (ping_sent && now - ping_sent > 4LL * s->ping_ms * 1000000) return; /* PONG overdue */
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, s->ping_ms / 2 > 0 ? s->ping_ms / 2 : 1);
        if (pr < 0 && errno != EINTR) return;
        if (pr <= 0) continue;
        if (redisBufferRead(c) != REDIS_OK) return;
        for (;;) {
            void *rv = NULL;
            if (redisGetReplyFromReader(c, &rv) != REDIS_OK) return;
            if (!rv) break;
            rep = rv;
            if (is_msg(rep, "message") && rep->elements == 3 && rep->element[2]->type == REDIS_REPLY_STRING)
                s->cb.on_message(s->cb.ud, rep->element[2]->str, rep->element[2]->len);
            else if (is_msg(rep, "pong") && ping_sent) {
                s->cb.on_pong(s->cb.ud, ping_sent);
                ping_sent = 0;
            }
            freeReplyObject(rep);
        }
    }
}

static void *sub_main(void *p)
{
    pk_redis_sub *s = p;
    int fails = 0;
    while (!atomic_load(&s->stop)) {
        redisContext *c = NULL;
        pk_err *e = pk_redis_connect(s->r, s->r->connect_timeout_ms, &c);
        if (e) {
            pk_err_free(e);
            fails++;
            sleep_ms_interruptible(s, backoff_ns(fails) / 1000000);
            continue;
        }
        /* blocking reads only for the SUBSCRIBE reply; the session then polls */
        redisSetTimeout(c, tv_ms(s->r->connect_timeout_ms));
        sub_session(s, c);
        redisFree(c);
        s->cb.on_lost(s->cb.ud);
        fails = 1; /* a session that worked restarts quickly, then backs off if connects fail */
        sleep_ms_interruptible(s, backoff_ns(0) / 1000000);
    }
    return NULL;
}

pk_redis_sub *pk_redis_sub_start(pk_redis *r, const char *channel, int ping_ms,
                                 const pk_redis_sub_callbacks *cb)
{
    pk_redis_sub *s = calloc(1, sizeof *s);
    s->r = r;
    s->channel = strdup(channel);
    s->ping_ms = ping_ms > 0 ? ping_ms : 100;
    s->cb = *cb;
    atomic_init(&s->stop, false);
    if (pthread_create(&s->th, NULL, sub_main, s) != 0) {
        free(s->channel);
        free(s);
        return NULL;
    }
    return s;
}

void pk_redis_sub_stop(pk_redis_sub *s)
{
    if (!s) return;
    atomic_store(&s->stop, true);
    pthread_join(s->th, NULL);
    free(s->channel);
    free(s);
}
