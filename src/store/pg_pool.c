/*
 * pg_pool: libpq connections, pipelines and deadlines (see pg_pool.h for the contract).
 *
 * Why a pipeline for everything: a PAKE write is BEGIN + 3..5 statements + COMMIT. Sent one by one
 * that is 5..7 round trips, each paying the network and a wake-up of the server process; in pipeline
 * mode the whole batch (with the Parse of statements this connection has not prepared yet) goes out
 * in one write and the results come back in one read. A single read statement is a pipeline of one,
 * so there is one code path for results, errors and deadlines.
 *
 * Why deadlines on the client: statement_timeout only bounds server CPU time; a server that is
 * stopped, or a network that drops packets, leaves a blocking libpq call hanging. Every wait here is
 * poll() on the connection's socket bounded by the caller's deadline; past it the query is cancelled
 * and the connection closed (its protocol state is unknown).
 *
 * Connections are kept on a LIFO stack of idle ones: the hot few stay warm and the cold tail ages out
 * through idle_timeout. All state is under one mutex; libpq calls never run under it.
 */
#include "store/pg_pool.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/log.h"
#include "foundation/metrics.h"
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PREPARED_MAX 512 /* per connection; statements beyond run unnamed */
#define BACKOFF_MIN_MS 50
#define LEAK_LOG_MAX 8

struct pk_pg_conn {
    pk_pg_pool *pool;
    PGconn *pg;
    int64_t opened_ns, idle_since_ns, acquired_ns;
    bool in_use, broken, leak_reported;
    char request_id[64];
    char sqlstate[6];
    uint64_t prepared[PREPARED_MAX]; /* open addressing; 0 = empty */
    int nprepared;
    pk_pg_conn *next; /* all connections of the pool */
};

typedef struct gauge_ctx {
    pk_pg_pool *p;
    int what;
} gauge_ctx;

struct pk_pg_pool {
    pk_pg_pool_config cfg;
    char *name, *conninfo;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* a connection came back, or the pool shrank */
    pthread_cond_t stop_cv; /* wakes the maintenance thread */
    pk_pg_conn *all;
    pk_pg_conn **idle; /* stack: idle[nidle-1] is the most recently used */
    int nidle, size, in_use, waiters;
    int64_t backoff_until_ns, suspect_before_ns;
    int backoff_ms;
    pk_pg_pool_stats st;
    bool stopping;
    pthread_t thread;
    bool has_thread;
    _Atomic(pk_metric *) wait_hist;
    _Atomic(pk_metric_family *) query_hist;
    gauge_ctx gctx[10];
};

/* ---- small helpers ---- */

static int64_t now_ns(void)
{
    return pk_mono_ns();
}

static void timespec_at(int64_t mono_ns, struct timespec *ts)
{
    ts->tv_sec = (time_t)(mono_ns / 1000000000LL);
    ts->tv_nsec = (long)(mono_ns % 1000000000LL);
}

static uint64_t sql_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h ? h : 1;
}

static bool prepared_has(const pk_pg_conn *k, uint64_t h)
{
    for (unsigned i = (unsigned)(h % PREPARED_MAX), n = 0; n < PREPARED_MAX;
         i = (i + 1) % PREPARED_MAX, n++) {
        if (k->prepared[i] == h) return true;
        if (!k->prepared[i]) return false;
    }
    return false;
}

static void prepared_add(pk_pg_conn *k, uint64_t h)
{
    if (k->nprepared >= PREPARED_MAX * 3 / 4) return;
    unsigned i = (unsigned)(h % PREPARED_MAX);
    while (k->prepared[i] && k->prepared[i] != h)
        i = (i + 1) % PREPARED_MAX;
    if (!k->prepared[i]) k->nprepared++;
    k->prepared[i] = h;
}

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* "NOTICE: text-search query doesn't contain lexemes" and the like */
}

static pk_err *unavailable(const char *pool, const char *why)
{
    return pk_err_wrap(pk_err_new("postgres", 503, "%s", why), "store_unavailable", 503,
                       "the database (%s) is unavailable; try again later", pool);
}

/* ---- connections ---- */

static PGconn *connect_one(pk_pg_pool *p, pk_buf *why)
{
    char timeout[16], options[64];
    int secs = (p->cfg.connect_timeout_ms + 999) / 1000;
    snprintf(timeout, sizeof timeout, "%d", secs < 2 ? 2 : secs); /* libpq's minimum is 2 s */
    snprintf(options, sizeof options, "-c statement_timeout=%d", p->cfg.statement_timeout_ms);
    /* ours first: the URL (expanded from dbname) overrides them */
    const char *keys[] = {"connect_timeout", "application_name", "client_encoding",
                          "options",         "dbname",           NULL};
    const char *vals[] = {timeout, "pake", "UTF8", options, p->conninfo, NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (!pg || PQstatus(pg) != CONNECTION_OK) {
        pk_buf_puts(why, pg ? PQerrorMessage(pg) : "out of memory");
        while (why->len && (why->data[why->len - 1] == '\n' || why->data[why->len - 1] == ' '))
            why->data[--why->len] = '\0';
        PQfinish(pg);
        return NULL;
    }
    PQsetNoticeProcessor(pg, quiet_notice, NULL);
    return pg;
}

/* Opens a connection for a slot the caller already counted in p->size. */
static pk_err *open_conn(pk_pg_pool *p, pk_pg_conn **out)
{
    pk_buf why = PK_BUF_INIT;
    PGconn *pg = connect_one(p, &why);
    int64_t now = now_ns();
    pthread_mutex_lock(&p->mu);
    if (!pg) {
        p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : BACKOFF_MIN_MS;
        if (p->backoff_ms > p->cfg.backoff_max_ms) p->backoff_ms = p->cfg.backoff_max_ms;
        p->backoff_until_ns = now + (int64_t)p->backoff_ms * 1000000;
        p->st.connect_failures++;
        p->size--;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        pk_err *e = unavailable(p->name, why.data ? why.data : "connection failed");
        pk_buf_free(&why);
        return e;
    }
    pk_pg_conn *k = calloc(1, sizeof *k);
    if (!k) abort();
    k->pool = p;
    k->pg = pg;
    k->opened_ns = k->idle_since_ns = now;
    k->next = p->all;
    p->all = k;
    p->backoff_ms = 0;
    p->backoff_until_ns = 0;
    p->st.connects++;
    pthread_mutex_unlock(&p->mu);
    pk_buf_free(&why);
    *out = k;
    return NULL;
}

/* Unlinks and frees a connection whose slot is still counted; the caller holds the lock and
 * decrements p->size. PQfinish runs outside the lock (returned for the caller). */
static PGconn *unlink_locked(pk_pg_pool *p, pk_pg_conn *k)
{
    for (pk_pg_conn **pp = &p->all; *pp; pp = &(*pp)->next)
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    PGconn *pg = k->pg;
    free(k);
    p->st.discarded++;
    return pg;
}

static void discard(pk_pg_conn *k, bool was_in_use)
{
    pk_pg_pool *p = k->pool;
    pthread_mutex_lock(&p->mu);
    if (was_in_use) p->in_use--;
    p->size--;
    PGconn *pg = unlink_locked(p, k);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    PQfinish(pg);
}

/* ---- waiting on the socket ---- */

/* 1 when the socket is readable, 0 at limit_ns (0 = wait forever), -1 on error. */
static int wait_readable(PGconn *pg, int64_t limit_ns)
{
    struct pollfd pfd = {.fd = PQsocket(pg), .events = POLLIN};
    if (pfd.fd < 0) return -1;
    for (;;) {
        int ms = -1;
        if (limit_ns) {
            int64_t left = limit_ns - now_ns();
            if (left <= 0) return 0;
            ms = (int)((left + 999999) / 1000000);
        }
        int rc = poll(&pfd, 1, ms);
        if (rc > 0) return 1;
        if (rc == 0) continue; /* re-check the limit */
        if (errno != EINTR) return -1;
    }
}

static void cancel_query(PGconn *pg)
{
    PGcancel *c = PQgetCancel(pg);
    if (!c) return;
    char buf[256];
    PQcancel(c, buf, (int)sizeof buf);
    PQfreeCancel(c);
}

static pk_err *timed_out(pk_pg_conn *k)
{
    cancel_query(k->pg);
    k->broken = true; /* the protocol state is unknown after an abandoned query */
    return pk_err_new("deadline_exceeded", 504, "the database did not answer before the request deadline");
}

static pk_err *lost(pk_pg_conn *k)
{
    k->broken = true;
    const char *m = PQerrorMessage(k->pg);
    return unavailable(k->pool->name, m && *m ? m : "connection lost");
}

/* Next result, waiting until deadline. *r = NULL is a legitimate end-of-query marker. */
static pk_err *next_result(pk_pg_conn *k, int64_t deadline_ns, PGresult **r)
{
    *r = NULL;
    while (PQisBusy(k->pg)) {
        int w = wait_readable(k->pg, deadline_ns);
        if (w == 0) return timed_out(k);
        if (w < 0 || !PQconsumeInput(k->pg)) return lost(k);
    }
    *r = PQgetResult(k->pg);
    return NULL;
}

/* Maps a failed result to a PAKE error (see pg_pool.h). */
static pk_err *result_err(pk_pg_conn *k, const PGresult *r)
{
    const char *ss = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    snprintf(k->sqlstate, sizeof k->sqlstate, "%s", ss ? ss : "");
    const char *msg = r ? PQresultErrorMessage(r) : PQerrorMessage(k->pg);
    if (!msg || !*msg) msg = "unknown error";
    bool dead = PQstatus(k->pg) == CONNECTION_BAD || !ss || !strncmp(ss, "08", 2) || !strcmp(ss, "57P01") ||
                !strcmp(ss, "57P02") || !strcmp(ss, "57P03") || !strcmp(ss, "53300");
    if (dead) {
        k->broken = true;
        return unavailable(k->pool->name, msg);
    }
    if (!strcmp(ss, "57014"))
        return pk_err_wrap(pk_err_new("postgres", 504, "%s: %s", ss, msg), "deadline_exceeded", 504,
                           "the database statement ran past its time limit");
    if (!strcmp(ss, "40001") || !strcmp(ss, "40P01") || !strcmp(ss, "55P03"))
        return pk_err_wrap(pk_err_new("postgres", 503, "%s: %s", ss, msg), "store_busy", 503,
                           "the database is busy; try again");
    return pk_err_wrap(pk_err_new("postgres", 500, "%s: %s", ss, msg), "store_error", 500,
                       "the database failed to run the operation");
}

/* Reads results until the end-of-query NULL; keeps the first. */
static pk_err *query_results(pk_pg_conn *k, int64_t deadline_ns, PGresult **first)
{
    *first = NULL;
    for (;;) {
        PGresult *r;
        pk_err *e = next_result(k, deadline_ns, &r);
        if (e) return e;
        if (!r) return NULL;
        if (!*first)
            *first = r;
        else
            PQclear(r);
        if (PQresultStatus(*first) == PGRES_PIPELINE_SYNC) return NULL; /* no NULL follows a sync */
    }
}

static void rollback_quietly(pk_pg_conn *k)
{
    if (k->broken) return;
    PGTransactionStatusType ts = PQtransactionStatus(k->pg);
    if (ts == PQTRANS_IDLE) return;
    if (ts != PQTRANS_INTRANS && ts != PQTRANS_INERROR) {
        k->broken = true;
        return;
    }
    char saved[6];
    memcpy(saved, k->sqlstate, sizeof saved);
    pk_err *e = pk_pg_exec_simple(k, "ROLLBACK", now_ns() + 2000000000LL);
    memcpy(k->sqlstate, saved, sizeof saved);
    if (e) k->broken = true;
    pk_err_free(e);
}

static void observe_query(pk_pg_pool *p, const char *label, int64_t t0)
{
    pk_metric_family *f = atomic_load_explicit(&p->query_hist, memory_order_acquire);
    if (!f || !label) return;
    const char *lv[] = {p->name, label};
    pk_metric_histogram_observe(f, lv, 2, (double)(now_ns() - t0) / 1e9);
}

pk_err *pk_pg_exec_simple(pk_pg_conn *k, const char *sql, int64_t deadline_ns)
{
    if (k->broken) return unavailable(k->pool->name, "connection already broken");
    if (!PQsendQuery(k->pg, sql)) return lost(k);
    pk_err *e = NULL;
    for (;;) {
        PGresult *r;
        pk_err *we = next_result(k, deadline_ns, &r);
        if (we) return we;
        if (!r) break;
        ExecStatusType s = PQresultStatus(r);
        if (!e && s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && s != PGRES_EMPTY_QUERY)
            e = result_err(k, r);
        PQclear(r);
        if (k->broken) return e;
    }
    return e;
}

pk_err *pk_pg_run(pk_pg_conn *k, const char *label, const pk_pg_stmt *st, size_t n, PGresult **res,
                  int64_t deadline_ns)
{
    pk_pg_pool *p = k->pool;
    int64_t t0 = now_ns();
    k->sqlstate[0] = '\0';
    for (size_t i = 0; i < n; i++)
        res[i] = NULL;
    if (k->broken) return unavailable(p->name, "connection already broken");
    if (deadline_ns && t0 >= deadline_ns)
        return pk_err_new("deadline_exceeded", 504, "the request deadline passed before the query was sent");
    if (PQenterPipelineMode(k->pg) != 1) return lost(k);
    enum { MAXN = 16 };
    if (n > MAXN) abort(); /* batches are fixed in the store code */
    bool prep[MAXN] = {0};
    uint64_t hash[MAXN];
    for (size_t i = 0; i < n; i++) {
        char name[24];
        hash[i] = sql_hash(st[i].sql);
        snprintf(name, sizeof name, "pk_%016llx", (unsigned long long)hash[i]);
        bool named = prepared_has(k, hash[i]);
        if (!named && k->nprepared < PREPARED_MAX * 3 / 4) {
            if (!PQsendPrepare(k->pg, name, st[i].sql, st[i].nparams, NULL)) return lost(k);
            prep[i] = named = true;
        }
        int ok = named
                     ? PQsendQueryPrepared(k->pg, name, st[i].nparams, st[i].params, NULL, NULL, 0)
                     : PQsendQueryParams(k->pg, st[i].sql, st[i].nparams, NULL, st[i].params, NULL, NULL, 0);
        if (!ok) return lost(k);
    }
    if (!PQpipelineSync(k->pg)) return lost(k);
    pk_err *e = NULL, *we = NULL;
    for (size_t i = 0; i < n && !k->broken; i++) {
        PGresult *r;
        if (prep[i]) {
            if ((we = query_results(k, deadline_ns, &r))) break;
            if (r && PQresultStatus(r) == PGRES_COMMAND_OK)
                prepared_add(k, hash[i]);
            else if (r && PQresultStatus(r) == PGRES_FATAL_ERROR && !e)
                e = result_err(k, r);
            PQclear(r);
            if (k->broken) break;
        }
        if ((we = query_results(k, deadline_ns, &r))) break;
        ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        if (s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK) {
            res[i] = r;
            continue;
        }
        if (s == PGRES_FATAL_ERROR && !e) e = result_err(k, r);
        PQclear(r);
        if (k->broken) break;
        if (!e) e = pk_err_new("store_error", 500, "unexpected database result (%s)", PQresStatus(s));
    }
    if (we) { /* lost or timed out: the connection is broken, nothing more to read */
        pk_err_free(e);
        e = we;
    } else if (!k->broken && !e) {
        PGresult *r;
        e = query_results(k, deadline_ns, &r); /* the sync */
        PQclear(r);
    } else if (!k->broken) {
        /* drain what is left up to the sync (aborted statements) */
        for (;;) {
            PGresult *r;
            pk_err *de = query_results(k, deadline_ns, &r);
            if (de) {
                pk_err_free(de);
                break;
            }
            bool sync = r && PQresultStatus(r) == PGRES_PIPELINE_SYNC;
            PQclear(r);
            if (sync) break;
        }
    }
    if (!k->broken && PQexitPipelineMode(k->pg) != 1) k->broken = true;
    observe_query(p, label, t0);
    if (e) {
        for (size_t i = 0; i < n; i++) {
            PQclear(res[i]);
            res[i] = NULL;
        }
        rollback_quietly(k);
    }
    return e;
}

pk_err *pk_pg_query(pk_pg_conn *k, const char *label, const char *sql, int nparams, const char *const *params,
                    int64_t deadline_ns, PGresult **res)
{
    pk_pg_stmt st = {sql, nparams, params};
    return pk_pg_run(k, label, &st, 1, res, deadline_ns);
}

const char *pk_pg_sqlstate(const pk_pg_conn *k)
{
    return k->sqlstate;
}

/* ---- acquire / release ---- */

static bool validate(pk_pg_conn *k, int64_t limit_ns)
{
    int64_t lim = now_ns() + 1000000000LL;
    if (limit_ns && limit_ns < lim) lim = limit_ns;
    pk_err *e = pk_pg_exec_simple(k, "SELECT 1", lim);
    bool ok = !e && !k->broken;
    pk_err_free(e);
    return ok;
}

pk_err *pk_pg_pool_acquire(pk_pg_pool *p, int64_t deadline_ns, const char *request_id, pk_pg_conn **out)
{
    *out = NULL;
    int64_t t0 = now_ns();
    int64_t limit = t0 + (int64_t)p->cfg.acquire_timeout_ms * 1000000;
    bool by_deadline = false;
    if (deadline_ns && deadline_ns < limit) limit = deadline_ns, by_deadline = true;
    pk_pg_conn *k = NULL;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        int64_t now = now_ns();
        if (p->nidle > 0) {
            k = p->idle[--p->nidle];
            k->in_use = true;
            p->in_use++;
            bool old =
                p->cfg.max_lifetime_ms > 0 && now - k->opened_ns > (int64_t)p->cfg.max_lifetime_ms * 1000000;
            bool check = k->idle_since_ns <= p->suspect_before_ns ||
                         now - k->idle_since_ns > (int64_t)p->cfg.validate_after_ms * 1000000;
            pthread_mutex_unlock(&p->mu);
            if (!old && (!check || validate(k, limit))) break;
            if (!old) {
                pthread_mutex_lock(&p->mu);
                p->suspect_before_ns = now_ns(); /* one dead: check the others too */
                pthread_mutex_unlock(&p->mu);
            }
            discard(k, true);
            k = NULL;
            pthread_mutex_lock(&p->mu);
            continue;
        }
        if (p->size < p->cfg.max_size) {
            if (now < p->backoff_until_ns) {
                int64_t wait_ms = (p->backoff_until_ns - now) / 1000000 + 1;
                pthread_mutex_unlock(&p->mu);
                pk_err *e = unavailable(p->name, "reconnecting (backing off after a failed connection)");
                e->retry_after_s = (int)((wait_ms + 999) / 1000);
                return e;
            }
            p->size++;
            pthread_mutex_unlock(&p->mu);
            pk_err *e = open_conn(p, &k);
            if (e) return e;
            pthread_mutex_lock(&p->mu);
            k->in_use = true;
            p->in_use++;
            pthread_mutex_unlock(&p->mu);
            break;
        }
        if (now >= limit) {
            p->st.timeouts++;
            pthread_mutex_unlock(&p->mu);
            if (by_deadline)
                return pk_err_new("deadline_exceeded", 504,
                                  "no database connection before the request deadline");
            return pk_err_new("store_busy", 503, "no database connection (%s) free within %d ms", p->name,
                              p->cfg.acquire_timeout_ms);
        }
        struct timespec ts;
        timespec_at(limit, &ts);
        p->waiters++;
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        p->waiters--;
    }
    int64_t now = now_ns();
    k->acquired_ns = now;
    k->leak_reported = false;
    k->sqlstate[0] = '\0';
    snprintf(k->request_id, sizeof k->request_id, "%s", request_id ? request_id : "");
    pthread_mutex_lock(&p->mu);
    p->st.acquired++;
    pthread_mutex_unlock(&p->mu);
    pk_metric_observe(atomic_load_explicit(&p->wait_hist, memory_order_acquire), (double)(now - t0) / 1e9);
    *out = k;
    return NULL;
}

void pk_pg_pool_release(pk_pg_conn *k)
{
    if (!k) return;
    pk_pg_pool *p = k->pool;
    if (!k->broken && PQstatus(k->pg) != CONNECTION_OK) k->broken = true;
    if (!k->broken && PQpipelineStatus(k->pg) != PQ_PIPELINE_OFF) k->broken = true;
    rollback_quietly(k);
    if (k->broken) {
        pthread_mutex_lock(&p->mu);
        p->suspect_before_ns = now_ns();
        pthread_mutex_unlock(&p->mu);
        discard(k, true);
        return;
    }
    pthread_mutex_lock(&p->mu);
    k->in_use = false;
    p->in_use--;
    if (p->stopping) {
        p->size--;
        PGconn *pg = unlink_locked(p, k);
        pthread_mutex_unlock(&p->mu);
        PQfinish(pg);
        return;
    }
    k->idle_since_ns = now_ns();
    p->idle[p->nidle++] = k;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* ---- maintenance ---- */

void pk_pg_pool_maintain(pk_pg_pool *p)
{
    PGconn *to_close[64];
    int nclose = 0;
    struct {
        char rid[64];
        int64_t held_ms;
    } leaks[LEAK_LOG_MAX];
    int nleaks = 0;
    bool top_up = false;
    pthread_mutex_lock(&p->mu);
    int64_t now = now_ns();
    for (pk_pg_conn *k = p->all; k; k = k->next) {
        if (!k->in_use || k->leak_reported) continue;
        int64_t held = now - k->acquired_ns;
        if (p->cfg.leak_threshold_ms > 0 && held > (int64_t)p->cfg.leak_threshold_ms * 1000000) {
            k->leak_reported = true;
            p->st.leaks++;
            if (nleaks < LEAK_LOG_MAX) {
                memcpy(leaks[nleaks].rid, k->request_id, sizeof leaks[nleaks].rid);
                leaks[nleaks++].held_ms = held / 1000000;
            }
        }
    }
    /* the oldest idle connections sit at the bottom of the stack */
    int keep = 0;
    for (int i = 0; i < p->nidle; i++) {
        pk_pg_conn *k = p->idle[i];
        bool idle_long =
            p->size > p->cfg.min_size && now - k->idle_since_ns > (int64_t)p->cfg.idle_timeout_ms * 1000000;
        bool old =
            p->cfg.max_lifetime_ms > 0 && now - k->opened_ns > (int64_t)p->cfg.max_lifetime_ms * 1000000;
        if ((idle_long || old) && nclose < 64) {
            p->size--;
            to_close[nclose++] = unlink_locked(p, k);
        } else {
            p->idle[keep++] = k;
        }
    }
    p->nidle = keep;
    if (p->size < p->cfg.min_size && now >= p->backoff_until_ns && !p->stopping) {
        p->size++;
        top_up = true;
    }
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < nclose; i++)
        PQfinish(to_close[i]);
    for (int i = 0; i < nleaks; i++) {
        pk_buf f = PK_BUF_INIT;
        pk_buf_printf(&f, "\"pool\":\"%s\",\"held_ms\":%lld", p->name, (long long)leaks[i].held_ms);
        pk_log_ctx ctx = {.request_id = leaks[i].rid[0] ? leaks[i].rid : NULL};
        pk_log_write(PK_LOG_WARN, &ctx, f.data, "database connection held longer than the leak threshold");
        pk_buf_free(&f);
    }
    if (top_up) {
        pk_pg_conn *k;
        pk_err *e = open_conn(p, &k);
        if (e) {
            pk_err_free(e);
            return;
        }
        pthread_mutex_lock(&p->mu);
        if (p->stopping) {
            p->size--;
            PGconn *pg = unlink_locked(p, k);
            pthread_mutex_unlock(&p->mu);
            PQfinish(pg);
            return;
        }
        p->idle[p->nidle++] = k;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

static void *maintain_main(void *arg)
{
    pk_pg_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        struct timespec ts;
        timespec_at(now_ns() + (int64_t)p->cfg.maintain_interval_ms * 1000000, &ts);
        pthread_cond_timedwait(&p->stop_cv, &p->mu, &ts);
        if (p->stopping) break;
        pthread_mutex_unlock(&p->mu);
        pk_pg_pool_maintain(p);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- open / close ---- */

static int def(int v, int d)
{
    return v > 0 ? v : d;
}

pk_err *pk_pg_pool_open(const pk_pg_pool_config *cfg, pk_pg_pool **out)
{
    *out = NULL;
    if (!cfg || !cfg->conninfo || !cfg->conninfo[0])
        return pk_err_new("store_error", 500, "the PostgreSQL pool needs a connection URL");
    pk_pg_pool *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->cfg = *cfg;
    p->cfg.max_size = def(cfg->max_size, 10);
    p->cfg.min_size = cfg->min_size < 0                 ? 0
                      : cfg->min_size > p->cfg.max_size ? p->cfg.max_size
                                                        : cfg->min_size;
    p->cfg.acquire_timeout_ms = def(cfg->acquire_timeout_ms, 2000);
    p->cfg.max_lifetime_ms = def(cfg->max_lifetime_ms, 30 * 60 * 1000);
    p->cfg.idle_timeout_ms = def(cfg->idle_timeout_ms, 10 * 60 * 1000);
    p->cfg.validate_after_ms = def(cfg->validate_after_ms, 5000);
    p->cfg.leak_threshold_ms = def(cfg->leak_threshold_ms, 10000);
    p->cfg.connect_timeout_ms = def(cfg->connect_timeout_ms, 3000);
    p->cfg.backoff_max_ms = def(cfg->backoff_max_ms, 1000);
    if (p->cfg.backoff_max_ms < BACKOFF_MIN_MS) p->cfg.backoff_max_ms = BACKOFF_MIN_MS;
    p->cfg.statement_timeout_ms = cfg->statement_timeout_ms >= 0 ? def(cfg->statement_timeout_ms, 30000) : 0;
    p->cfg.maintain_interval_ms = cfg->maintain_interval_ms < 0 ? -1 : def(cfg->maintain_interval_ms, 500);
    p->name = strdup(cfg->name ? cfg->name : "primary");
    p->conninfo = strdup(cfg->conninfo);
    p->idle = calloc((size_t)p->cfg.max_size, sizeof *p->idle);
    if (!p->name || !p->conninfo || !p->idle) abort();
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_cond_init(&p->stop_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (p->cfg.maintain_interval_ms > 0) {
        if (pthread_create(&p->thread, NULL, maintain_main, p) != 0) abort();
        p->has_thread = true;
    }
    *out = p;
    return NULL;
}

void pk_pg_pool_close(pk_pg_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->stop_cv);
    pthread_mutex_unlock(&p->mu);
    if (p->has_thread) pthread_join(p->thread, NULL);
    pthread_mutex_lock(&p->mu);
    while (p->nidle > 0) {
        pk_pg_conn *k = p->idle[--p->nidle];
        p->size--;
        PGconn *pg = unlink_locked(p, k);
        PQfinish(pg);
    }
    if (p->all)
        pk_log_warn("closing the %s database pool with %d connection(s) still in use", p->name, p->in_use);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_cond_destroy(&p->stop_cv);
    free(p->idle);
    free(p->name);
    free(p->conninfo);
    free(p);
}

/* ---- stats and metrics ---- */

void pk_pg_pool_stats_get(pk_pg_pool *p, pk_pg_pool_stats *out)
{
    pthread_mutex_lock(&p->mu);
    *out = p->st;
    out->size = p->size;
    out->idle = p->nidle;
    out->in_use = p->in_use;
    out->waiters = p->waiters;
    pthread_mutex_unlock(&p->mu);
}

const char *pk_pg_pool_name(const pk_pg_pool *p)
{
    return p->name;
}

static double gauge_fn(void *ctx)
{
    gauge_ctx *g = ctx;
    pk_pg_pool_stats s;
    pk_pg_pool_stats_get(g->p, &s);
    switch (g->what) {
    case 0:
        return s.size;
    case 1:
        return s.idle;
    case 2:
        return s.in_use;
    case 9:
        return s.size - s.idle - s.in_use; /* counted in size, connect still in progress */
    case 3:
        return s.waiters;
    case 4:
        return g->p->cfg.max_size;
    case 5:
        return (double)s.timeouts;
    case 6:
        return (double)s.connect_failures;
    case 7:
        return (double)s.leaks;
    default:
        return (double)s.connects;
    }
}

void pk_pg_pool_bind_metrics(pk_pg_pool *p, struct pk_metrics *m)
{
    if (!m) return;
    static const char *const pool_l[] = {"pool"};
    static const char *const state_l[] = {"pool", "state"};
    static const char *const query_l[] = {"pool", "statement"};
    for (int i = 0; i < 10; i++)
        p->gctx[i] = (gauge_ctx){p, i};
    const char *pv[] = {p->name};
    pk_metric_family *conns = pk_metrics_gauge(
        m, "pake_pg_pool_connections", "Database connections by state (idle, in_use, opening).", 2, state_l);
    const char *idle_v[] = {p->name, "idle"}, *used_v[] = {p->name, "in_use"},
               *open_v[] = {p->name, "opening"};
    pk_metric_bind_fn(conns, idle_v, 2, gauge_fn, &p->gctx[1]);
    pk_metric_bind_fn(conns, used_v, 2, gauge_fn, &p->gctx[2]);
    pk_metric_bind_fn(conns, open_v, 2, gauge_fn, &p->gctx[9]);
    pk_metric_bind_fn(
        pk_metrics_gauge(m, "pake_pg_pool_size", "Open (or opening) database connections.", 1, pool_l), pv, 1,
        gauge_fn, &p->gctx[0]);
    pk_metric_bind_fn(
        pk_metrics_gauge(m, "pake_pg_pool_max_size", "Configured maximum pool size.", 1, pool_l), pv, 1,
        gauge_fn, &p->gctx[4]);
    pk_metric_bind_fn(
        pk_metrics_gauge(m, "pake_pg_pool_waiters", "Threads waiting for a database connection.", 1, pool_l),
        pv, 1, gauge_fn, &p->gctx[3]);
    pk_metric_bind_fn(pk_metrics_counter(m, "pake_pg_pool_acquire_timeouts_total",
                                         "Acquisitions that found no connection in time.", 1, pool_l),
                      pv, 1, gauge_fn, &p->gctx[5]);
    pk_metric_bind_fn(pk_metrics_counter(m, "pake_pg_pool_connect_failures_total",
                                         "Failed attempts to open a database connection.", 1, pool_l),
                      pv, 1, gauge_fn, &p->gctx[6]);
    pk_metric_bind_fn(pk_metrics_counter(m, "pake_pg_pool_leaks_total",
                                         "Connections held past the leak threshold.", 1, pool_l),
                      pv, 1, gauge_fn, &p->gctx[7]);
    pk_metric_bind_fn(
        pk_metrics_counter(m, "pake_pg_pool_connects_total", "Database connections opened.", 1, pool_l), pv,
        1, gauge_fn, &p->gctx[8]);
    pk_metric_family *wait = pk_metrics_histogram(
        m, "pake_pg_pool_acquire_wait_seconds", "Time to get a database connection from the pool.", 1, pool_l,
        pk_metrics_latency_buckets, pk_metrics_latency_buckets_len);
    atomic_store_explicit(&p->wait_hist, pk_metric_series(wait, pv, 1), memory_order_release);
    pk_metric_family *q = pk_metrics_histogram(m, "pake_pg_query_duration_seconds",
                                               "Database round trips by named statement batch.", 2, query_l,
                                               pk_metrics_latency_buckets, pk_metrics_latency_buckets_len);
    atomic_store_explicit(&p->query_hist, q, memory_order_release);
}
