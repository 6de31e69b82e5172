/*
 * store_pg: the PostgreSQL knowledge store (the pk_store vtable over libpq; contract in store_pg.h).
 *
 * It mirrors store_sqlite.c operation by operation (read that first): the same input checks and
 * cursors (store_common.c), the same JSON writer over the row, the same audit and confidence rows.
 * What changes is the shape of the round trips:
 *  - every operation is one pipeline where it can be (pg_pool.c): a create is BEGIN; INSERT note
 *    RETURNING the row; INSERT tags; INSERT audit; INSERT confidence; COMMIT in one round trip, and
 *    the note comes back from RETURNING, so the caller gets exactly what was committed;
 *  - an update or a delete needs the current version first (If-Match, the old confidence for the
 *    history): BEGIN + SELECT .. FOR UPDATE, then the writes + COMMIT: two round trips; the row lock
 *    serialises concurrent writers of one note (SQLite serialises all writers);
 *  - idempotency claims use INSERT .. ON CONFLICT DO NOTHING, so two processes racing for one key
 *    cannot both win.
 * Search builds a tsquery from the same terms as the embedded store (phraseto_tsquery per word or
 * phrase, to_tsquery for a prefix, ANDed): user text never reaches tsquery syntax unescaped. The page
 * (seq + rank) is selected first, then ts_headline runs for those rows only (it re-parses the text and
 * is the expensive part).
 *
 * Routing: reads may use the replica pool; a principal that wrote within read_your_writes_ms is sent
 * to the primary (a small table of principal hashes -> time of last write; a hash collision only
 * sends a read to the primary, which is always correct).
 */
#include "store/store_pg.h"
#include "core/clock.h"
#include "core/id.h"
#include "core/json.h"
#include "store/pg_pool.h"
#include "store/pg_schema.h"
#include "store/store_internal.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IDEM_KEY_MAX 255
#define RYW_SLOTS 1024
#define MIGRATE_LOCK "7245812011"
#define HEADLINE_OPTS                                                                                        \
    "'StartSel=\"<mark>\", StopSel=\"</mark>\", MaxWords=24, MinWords=8, ShortWord=2, MaxFragments=1, "      \
    "FragmentDelimiter=\"...\"'"

typedef struct pg_store {
    pk_store base;
    pk_pg_pool *primary, *replica;
    const pk_clock *wall;
    int idem_ttl_s, idem_lease_s;
    int64_t ryw_ns;
    pthread_mutex_t ryw_mu;
    struct {
        uint64_t hash;
        int64_t at;
    } ryw[RYW_SLOTS];
} pg_store;

static const pk_store_ops pg_ops;

static int64_t wall_now(pg_store *s)
{
    return pk_clock_now(s->wall);
}
static const char *ctx_principal(const pk_op_ctx *c)
{
    return c ? c->principal : NULL;
}
static const char *ctx_request(const pk_op_ctx *c)
{
    return c ? c->request_id : NULL;
}
static int64_t dl(const pk_op_ctx *c)
{
    return c ? c->deadline_ns : 0;
}

/* ---- read-your-writes routing ---- */

static uint64_t principal_hash(const char *p)
{
    uint64_t h = 1469598103934665603ULL;
    for (p = p ? p : ""; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

static void ryw_mark(pg_store *s, const pk_op_ctx *c)
{
    if (!s->replica) return;
    uint64_t h = principal_hash(ctx_principal(c));
    pthread_mutex_lock(&s->ryw_mu);
    s->ryw[h % RYW_SLOTS].hash = h;
    s->ryw[h % RYW_SLOTS].at = pk_mono_ns();
    pthread_mutex_unlock(&s->ryw_mu);
}

/* True when the principal (or one sharing its slot) wrote recently. */
static bool ryw_recent(pg_store *s, const pk_op_ctx *c)
{
    uint64_t h = principal_hash(ctx_principal(c));
    pthread_mutex_lock(&s->ryw_mu);
    int64_t at = s->ryw[h % RYW_SLOTS].at;
    pthread_mutex_unlock(&s->ryw_mu);
    return at && pk_mono_ns() - at < s->ryw_ns;
}

/* ---- operation frame ---- */

static pk_err *op_begin(pg_store *s, const pk_op_ctx *c, bool write, pk_pg_conn **k)
{
    *k = NULL;
    int64_t deadline = dl(c);
    if (deadline && pk_mono_ns() >= deadline)
        return pk_err_new("deadline_exceeded", 504,
                          "the request deadline passed before the store was called");
    const char *rid = ctx_request(c);
    if (!write && s->replica && !ryw_recent(s, c)) {
        pk_err *e = pk_pg_pool_acquire(s->replica, deadline, rid, k);
        if (!e || !pk_err_is(e, "store_unavailable")) return e;
        pk_err_free(e); /* the replica is down: the primary can serve the read */
    }
    return pk_pg_pool_acquire(s->primary, deadline, rid, k);
}

static pk_err *op_end(pg_store *s, const pk_op_ctx *c, const char *op, bool write, int64_t t0, pk_pg_conn *k,
                      pk_err *e)
{
    pk_pg_pool_release(k);
    if (write) ryw_mark(s, c);
    if (s->base.observer)
        s->base.observer(s->base.observer_ud, op, (double)(pk_mono_ns() - t0) / 1e9, !e || e->status < 500);
    return e;
}

/* ---- parameters ---- */

/* Parameter list of a statement; numbers and copies are owned here. */
typedef struct params {
    const char *v[96];
    char *own[96];
    int n;
} params;

static int par_text(params *p, const char *v)
{
    if (p->n >= (int)(sizeof p->v / sizeof p->v[0])) abort(); /* bounded by the query limits */
    p->v[p->n] = v;
    p->own[p->n] = NULL;
    return ++p->n;
}
static int par_own(params *p, char *v)
{
    int i = par_text(p, v);
    p->own[i - 1] = v;
    return i;
}
static int par_int(params *p, int64_t v)
{
    char *b = malloc(24);
    if (!b) abort();
    snprintf(b, 24, "%lld", (long long)v);
    return par_own(p, b);
}
static int par_dbl(params *p, double v)
{
    char *b = malloc(32);
    if (!b) abort();
    snprintf(b, 32, "%.17g", v);
    return par_own(p, b);
}
static int par_bool(params *p, bool v)
{
    return par_text(p, v ? "true" : "false");
}
static void par_free(params *p)
{
    for (int i = 0; i < p->n; i++)
        free(p->own[i]);
    p->n = 0;
}

/* SQL text with numbered parameters: $n::type. */
typedef struct qb {
    pk_buf sql;
    params p;
} qb;

static void qb_sql(qb *b, const char *s)
{
    pk_buf_puts(&b->sql, s);
}
static void qb_text(qb *b, const char *v)
{
    pk_buf_printf(&b->sql, "$%d::text", par_text(&b->p, v));
}
static void qb_int(qb *b, int64_t v)
{
    pk_buf_printf(&b->sql, "$%d::bigint", par_int(&b->p, v));
}
static void qb_dbl(qb *b, double v)
{
    pk_buf_printf(&b->sql, "$%d::float8", par_dbl(&b->p, v));
}
static void qb_bool(qb *b, bool v)
{
    pk_buf_printf(&b->sql, "$%d::boolean", par_bool(&b->p, v));
}
static void qb_free(qb *b)
{
    pk_buf_free(&b->sql);
    par_free(&b->p);
}

/* ---- column helpers ---- */

static bool isnull(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col);
}
static const char *val(const PGresult *r, int row, int col)
{
    return PQgetvalue(r, row, col);
}
static int64_t val_i64(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}
static double val_dbl(const PGresult *r, int row, int col)
{
    return strtod(PQgetvalue(r, row, col), NULL);
}
static void col_str(pk_jw *w, const PGresult *r, int row, int col)
{
    if (isnull(r, row, col))
        pk_jw_null(w);
    else
        pk_jw_strn(w, val(r, row, col), (size_t)PQgetlength(r, row, col));
}
static void col_raw(pk_jw *w, const PGresult *r, int row, int col)
{
    if (isnull(r, row, col))
        pk_jw_null(w);
    else
        pk_jw_raw(w, val(r, row, col), (size_t)PQgetlength(r, row, col));
}
static void col_time(pk_jw *w, const PGresult *r, int row, int col)
{
    char ts[PK_RFC3339_LEN];
    pk_rfc3339(val_i64(r, row, col), ts);
    pk_jw_str(w, ts);
}

/* ---- notes as JSON ---- */

#define NOTE_COLS(a)                                                                                         \
    a ".seq, " a ".id, " a ".title, " a ".content, " a ".type, " a ".status, " a ".verification_status, " a  \
      ".source_uri, " a ".tags, " a ".metadata, " a ".confidence_score, " a ".ai_summary, " a                \
      ".human_notes, " a ".guard, " a ".created_at, " a ".updated_at, " a ".version"
#define RETURNING_NOTE                                                                                       \
    " RETURNING seq, id, title, content, type, status, verification_status, source_uri, tags, metadata,"     \
    " confidence_score, ai_summary, human_notes, guard, created_at, updated_at, version"
enum {
    C_SEQ,
    C_ID,
    C_TITLE,
    C_CONTENT,
    C_TYPE,
    C_STATUS,
    C_VERIF,
    C_SOURCE,
    C_TAGS,
    C_META,
    C_CONF,
    C_SUMMARY,
    C_HUMAN,
    C_GUARD,
    C_CREATED,
    C_UPDATED,
    C_VERSION,
    C_NCOLS
};

/* Writes the note's members (same keys and order as the embedded store); the caller closes it. */
static void note_open(pk_jw *w, const PGresult *r, int row)
{
    static const char *const keys[C_NCOLS] = {NULL,
                                              "id",
                                              "title",
                                              "content",
                                              "type",
                                              "status",
                                              "verification_status",
                                              "source_uri",
                                              "tags",
                                              "metadata",
                                              "confidence_score",
                                              "ai_summary",
                                              "human_notes",
                                              "guard",
                                              "created_at",
                                              "updated_at",
                                              "version"};
    pk_jw_obj_open(w);
    for (int i = C_ID; i < C_NCOLS; i++) {
        pk_jw_key(w, keys[i]);
        switch (i) {
        case C_TAGS:
        case C_META:
        case C_GUARD:
            col_raw(w, r, row, i);
            break;
        case C_CONF:
            pk_jw_num(w, val_dbl(r, row, i));
            break;
        case C_CREATED:
        case C_UPDATED:
            col_time(w, r, row, i);
            break;
        case C_VERSION:
            pk_jw_int(w, val_i64(r, row, i));
            break;
        default:
            col_str(w, r, row, i);
        }
    }
}

static void note_json(const PGresult *r, int row, pk_buf *out)
{
    pk_jw w;
    pk_jw_init(&w, out);
    note_open(&w, r, row);
    pk_jw_obj_close(&w);
}

static void clear_all(PGresult **res, size_t n)
{
    for (size_t i = 0; i < n; i++)
        PQclear(res[i]);
}

/* ---- shared write statements ---- */

static const char SQL_AUDIT[] =
    "INSERT INTO audit_log(note_id, action, version, fields, at, request_id, principal,"
    " outcome, guard) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
static const char SQL_CONFIDENCE[] =
    "INSERT INTO confidence_history(note_id, version, old_score, new_score, at,"
    " request_id, principal) VALUES ($1, $2, $3, $4, $5, $6, $7)";
static const char SQL_TAGS_INSERT[] =
    "INSERT INTO note_tags(tag, note_seq) SELECT t, $2::bigint FROM json_array_elements_text($1::json) AS t"
    " ON CONFLICT DO NOTHING";
static const char SQL_TAGS_DELETE[] = "DELETE FROM note_tags WHERE note_seq = $1::bigint";

static void fields_json(unsigned set, pk_buf *out)
{
    static const char *const names[] = {
        "title",       "content", "type",     "status",           "verification_status",
        "source_uri",  "tags",    "metadata", "confidence_score", "ai_summary",
        "human_notes", "guard"};
    pk_jw w;
    pk_jw_init(&w, out);
    pk_jw_arr_open(&w);
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++)
        if (set & (1u << i)) pk_jw_str(&w, names[i]);
    pk_jw_arr_close(&w);
}

/* Parameters of one audit row ($1..$9 of SQL_AUDIT); `fields` must outlive the statement. */
static void audit_params(pg_store *s, params *p, const pk_op_ctx *c, const char *note_id, const char *action,
                         int64_t version, const pk_buf *fields, const char *outcome, const char *guard)
{
    par_text(p, note_id);
    par_text(p, action);
    par_int(p, version);
    par_text(p, fields->data);
    par_int(p, wall_now(s));
    par_text(p, ctx_request(c));
    par_text(p, ctx_principal(c));
    par_text(p, outcome);
    par_text(p, guard);
}

static void confidence_params(pg_store *s, params *p, const pk_op_ctx *c, const char *note_id,
                              int64_t version, const double *old, double now_score)
{
    par_text(p, note_id);
    par_int(p, version);
    if (old)
        par_dbl(p, *old);
    else
        par_text(p, NULL);
    par_dbl(p, now_score);
    par_int(p, wall_now(s));
    par_text(p, ctx_request(c));
    par_text(p, ctx_principal(c));
}

/* A refused write (unknown note, stale If-Match) is audited in its own statement after the rollback;
 * a failure to audit it does not change the answer. */
static void audit_refusal(pg_store *s, pk_pg_conn *k, const pk_op_ctx *c, const char *id, const char *action,
                          unsigned set, const pk_err *e)
{
    if (!e || !k || (!pk_err_is(e, "not_found") && !pk_err_is(e, "precondition_failed"))) return;
    pk_buf f = PK_BUF_INIT;
    fields_json(set, &f);
    params p = {0};
    audit_params(s, &p, c, id, action, 0, &f, e->code, NULL);
    PGresult *r = NULL;
    pk_err_free(pk_pg_query(k, "audit_refusal", SQL_AUDIT, p.n, p.v, dl(c), &r));
    PQclear(r);
    par_free(&p);
    pk_buf_free(&f);
}

/* ---- migrate, ping ---- */

static pk_err *schema_version(pk_pg_conn *k, int64_t deadline, int *v)
{
    PGresult *r = NULL;
    pk_err *e =
        pk_pg_query(k, "schema_version", "SELECT coalesce(max(version), 0) FROM pake_schema_migrations", 0,
                    NULL, deadline, &r);
    if (e && !strcmp(pk_pg_sqlstate(k), "42P01")) { /* no table yet: version 0 */
        pk_err_free(e);
        *v = 0;
        return NULL;
    }
    if (!e) *v = (int)val_i64(r, 0, 0);
    PQclear(r);
    return e;
}

static pk_err *migrate_impl(pk_pg_conn *k, int *from, int *to)
{
    int64_t deadline = pk_mono_ns() + 120 * 1000000000LL;
    pk_err *e =
        pk_pg_exec_simple(k,
                          "BEGIN; SELECT pg_advisory_xact_lock(" MIGRATE_LOCK ");"
                          "CREATE TABLE IF NOT EXISTS pake_schema_migrations (version integer PRIMARY KEY,"
                          " applied_at timestamptz NOT NULL DEFAULT now())",
                          deadline);
    int v = 0;
    if (!e) e = schema_version(k, deadline, &v);
    if (e) {
        pk_err_free(pk_pg_exec_simple(k, "ROLLBACK", deadline));
        return e;
    }
    if (from) *from = v;
    if (to) *to = v;
    if (v > pk_pg_migration_count) {
        pk_err_free(pk_pg_exec_simple(k, "ROLLBACK", deadline));
        return pk_err_new("store_error", 500,
                          "the database schema (version %d) is newer than this binary supports (%d)", v,
                          pk_pg_migration_count);
    }
    for (; v < pk_pg_migration_count && !e; v++) {
        char bump[96];
        snprintf(bump, sizeof bump, "INSERT INTO pake_schema_migrations(version) VALUES (%d)", v + 1);
        e = pk_pg_exec_simple(k, pk_pg_migrations[v], deadline);
        if (!e) e = pk_pg_exec_simple(k, bump, deadline);
    }
    if (!e) e = pk_pg_exec_simple(k, "COMMIT", deadline);
    if (e) {
        pk_err_free(pk_pg_exec_simple(k, "ROLLBACK", deadline));
        return e;
    }
    if (to) *to = v;
    return NULL;
}

static pk_err *pg_migrate(pk_store *ps, int *from, int *to)
{
    pg_store *s = (pg_store *)ps;
    int64_t t0 = pk_mono_ns();
    pk_pg_conn *k = NULL;
    pk_err *e = pk_pg_pool_acquire(s->primary, 0, "migrate", &k);
    if (!e) e = migrate_impl(k, from, to);
    return op_end(s, NULL, "migrate", false, t0, k, e);
}

static pk_err *pg_ping(pk_store *ps, const pk_op_ctx *c)
{
    pg_store *s = (pg_store *)ps;
    int64_t t0 = pk_mono_ns();
    pk_pg_conn *k;
    pk_err *e = pk_pg_pool_acquire(s->primary, dl(c), ctx_request(c), &k); /* the primary is what matters */
    int v = 0;
    if (!e) e = schema_version(k, dl(c), &v);
    if (!e && v != pk_pg_migration_count)
        e = pk_err_new("store_error", 503,
                       "the database schema is at version %d, expected %d: run `pake migrate`", v,
                       pk_pg_migration_count);
    return op_end(s, c, "ping", false, t0, k, e);
}

/* ---- notes: create, get, update, delete ---- */

static const char *or_default(const pk_note_input *in, unsigned bit, const char *v, const char *def)
{
    return (in->set & bit) ? v : def;
}

static const char SQL_INSERT_NOTE[] =
    "INSERT INTO notes(id, title, content, type, status, verification_status, source_uri, tags, metadata,"
    " confidence_score, ai_summary, human_notes, guard, flagged, created_at, updated_at, version)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, 1)" RETURNING_NOTE;

static pk_err *create_impl(pg_store *s, pk_pg_conn *k, const pk_op_ctx *c, const pk_note_input *in,
                           const pk_note_canon *cn, pk_buf *out)
{
    char id[PK_UUID_LEN];
    pk_uuid7(id);
    double conf = (in->set & PK_NF_CONFIDENCE) ? in->confidence_score : 0.5;
    params pn = {0}, pt = {0}, pa = {0}, pc = {0};
    par_text(&pn, id);
    par_text(&pn, in->title);
    par_text(&pn, or_default(in, PK_NF_CONTENT, in->content, ""));
    par_text(&pn, or_default(in, PK_NF_TYPE, in->type, "note"));
    par_text(&pn, or_default(in, PK_NF_STATUS, in->status, "active"));
    par_text(&pn, or_default(in, PK_NF_VERIFICATION, in->verification_status, "pending"));
    par_text(&pn, or_default(in, PK_NF_SOURCE_URI, in->source_uri, NULL));
    par_text(&pn, cn->tags_json ? cn->tags_json : "[]");
    par_text(&pn, cn->metadata_json ? cn->metadata_json : "{}");
    par_dbl(&pn, conf);
    par_text(&pn, or_default(in, PK_NF_AI_SUMMARY, in->ai_summary, NULL));
    par_text(&pn, or_default(in, PK_NF_HUMAN_NOTES, in->human_notes, NULL));
    par_text(&pn, cn->guard_json);
    par_bool(&pn, cn->flagged);
    par_int(&pn, wall_now(s));
    pk_buf f = PK_BUF_INIT;
    fields_json(in->set, &f);
    audit_params(s, &pa, c, id, "create", 1, &f, cn->flagged ? "flagged" : "ok",
                 cn->flagged ? cn->guard_json : NULL);
    confidence_params(s, &pc, c, id, 1, NULL, conf);
    /* tags need the new row's seq: a scalar subquery on the id inserted just before, same transaction */
    static const char SQL_TAGS_BY_ID[] =
        "INSERT INTO note_tags(tag, note_seq) SELECT t, (SELECT seq FROM notes WHERE id = $2)"
        " FROM json_array_elements_text($1::json) AS t ON CONFLICT DO NOTHING";
    par_text(&pt, cn->tags_json ? cn->tags_json : "[]");
    par_text(&pt, id);
    pk_pg_stmt st[6];
    size_t n = 0;
    st[n++] = (pk_pg_stmt){"BEGIN", 0, NULL};
    st[n++] = (pk_pg_stmt){SQL_INSERT_NOTE, pn.n, pn.v};
    size_t note_at = 1;
    if (cn->ntags) st[n++] = (pk_pg_stmt){SQL_TAGS_BY_ID, pt.n, pt.v};
    st[n++] = (pk_pg_stmt){SQL_AUDIT, pa.n, pa.v};
    st[n++] = (pk_pg_stmt){SQL_CONFIDENCE, pc.n, pc.v};
    st[n++] = (pk_pg_stmt){"COMMIT", 0, NULL};
    PGresult *res[6];
    pk_err *e = pk_pg_run(k, "note_create", st, n, res, dl(c));
    if (!e) {
        if (PQntuples(res[note_at]) == 1)
            note_json(res[note_at], 0, out);
        else
            e = pk_err_new("store_error", 500, "the inserted note was not returned");
        clear_all(res, n);
    }
    par_free(&pn), par_free(&pt), par_free(&pa), par_free(&pc);
    pk_buf_free(&f);
    return e;
}

static pk_err *pg_note_create(pk_store *ps, const pk_op_ctx *c, const pk_note_input *in, pk_buf *out)
{
    pg_store *s = (pg_store *)ps;
    int64_t t0 = pk_mono_ns();
    pk_note_canon cn;
    pk_err *e = pk_note_input_check(in, true, &cn);
    pk_pg_conn *k = NULL;
    if (!e) e = op_begin(s, c, true, &k);
    if (!e) e = create_impl(s, k, c, in, &cn, out);
    pk_note_canon_free(&cn); /* empty after a failed check */
    return op_end(s, c, "note_create", true, t0, k, e);
}

static pk_err *pg_note_get(pk_store *ps, const pk_op_ctx *c, const char *id, pk_buf *out, int64_t *version)
{
    pg_store *s = (pg_store *)ps;
    int64_t t0 = pk_mono_ns();
    pk_pg_conn *k;
    pk_err *e = op_begin(s, c, false, &k);
    if (!e) {
        const char *p[] = {id};
        PGresult *r = NULL;
        e = pk_pg_query(k, "note_get", "SELECT " NOTE_COLS("n") " FROM notes n WHERE n.id = $1", 1, p, dl(c),
                        &r);
        if (!e && PQntuples(r) == 0) e = pk_err_not_found("note %s not found", id);
        if (!e) {
            note_json(r, 0, out);
            if (version) *version = val_i64(r, 0, C_VERSION);
        }
        PQclear(r);
    }
    return op_end(s, c, "note_get", false, t0, k, e);
}

/* BEGIN and lock the note; checks If-Match. On success *row holds the note (NOTE_COLS) and a
 * transaction is open; on failure the transaction is rolled back. */
static pk_err *lock_note(pk_pg_conn *k, const pk_op_ctx *c, const char *id, int64_t if_version,
                         PGresult **row)
{
    const char *p[] = {id};
    pk_pg_stmt st[2] = {{"BEGIN", 0, NULL},
                        {"SELECT " NOTE_COLS("n") " FROM notes n WHERE n.id = $1 FOR UPDATE", 1, p}};
    PGresult *res[2];
    pk_err *e = pk_pg_run(k, "note_lock", st, 2, res, dl(c));
    if (e) return e;
    PQclear(res[0]);
    *row = res[1];
    if (PQntuples(*row) == 0)
        e = pk_err_not_found("note %s not found", id);
    else if (if_version > 0 && if_version != val_i64(*row, 0, C_VERSION)) {
        long long cur = (long long)val_i64(*row, 0, C_VERSION);
        e = pk_err_new("precondition_failed", 412, "the note is at version %lld, not %lld", cur,
                       (long long)if_version);
        pk_buf x = PK_BUF_INIT;
        pk_buf_printf(&x, "\"current_version\":%lld", cur);
        e->extra_json = pk_buf_steal(&x, NULL);
    }
    if (e) {
        PQclear(*row);
        *row = NULL;
        pk_err *re = pk_pg_exec_simple(k, "ROLLBACK", dl(c));
        if (re) {
            pk_err_free(e);
            return re;
        }
    }
    return e;
}

static void set_text(qb *b, const char *col, const char *v)
{
    pk_buf_printf(&b->sql, ", %s = ", col);
    qb_text(b, v);
}

static pk_err *update_impl(pg_store *s, pk_pg_conn *k, const pk_op_ctx *c, const char *id, int64_t if_version,
                           const pk_note_input *in, const pk_note_canon *cn, pk_buf *out)
{
    PGresult *row;
    pk_err *e = lock_note(k, c, id, if_version, &row);
    if (e) return e;
    unsigned set = in->set;
    if (set == 0) {
        note_json(row, 0, out);
        PQclear(row);
        return pk_pg_exec_simple(k, "COMMIT", dl(c));
    }
    int64_t seq = val_i64(row, 0, C_SEQ), version = val_i64(row, 0, C_VERSION);
    double old_conf = val_dbl(row, 0, C_CONF);
    PQclear(row);
    qb b = {0};
    qb_sql(&b, "UPDATE notes SET version = version + 1, updated_at = ");
    qb_int(&b, wall_now(s));
    if (set & PK_NF_TITLE) set_text(&b, "title", in->title);
    if (set & PK_NF_CONTENT) set_text(&b, "content", in->content);
    if (set & PK_NF_TYPE) set_text(&b, "type", in->type);
    if (set & PK_NF_STATUS) set_text(&b, "status", in->status);
    if (set & PK_NF_VERIFICATION) set_text(&b, "verification_status", in->verification_status);
    if (set & PK_NF_SOURCE_URI) set_text(&b, "source_uri", in->source_uri);
    if (set & PK_NF_TAGS) set_text(&b, "tags", cn->tags_json);
    if (set & PK_NF_METADATA) set_text(&b, "metadata", cn->metadata_json);
    if (set & PK_NF_AI_SUMMARY) set_text(&b, "ai_summary", in->ai_summary);
    if (set & PK_NF_HUMAN_NOTES) set_text(&b, "human_notes", in->human_notes);
    if (set & PK_NF_GUARD) {
        set_text(&b, "guard", cn->guard_json);
        qb_sql(&b, ", flagged = ");
        qb_bool(&b, cn->flagged);
    }
    if (set & PK_NF_CONFIDENCE) {
        qb_sql(&b, ", confidence_score = ");
        qb_dbl(&b, in->confidence_score);
    }
    qb_sql(&b, " WHERE seq = ");
    qb_int(&b, seq);
    qb_sql(&b, RETURNING_NOTE);
    params pd = {0}, pt = {0}, pa = {0}, pc = {0};
    par_int(&pd, seq);
    par_text(&pt, cn->tags_json ? cn->tags_json : "[]");
    par_int(&pt, seq);
    pk_buf f = PK_BUF_INIT;
    fields_json(set, &f);
    audit_params(s, &pa, c, id, "update", version + 1, &f, cn->flagged ? "flagged" : "ok",
                 cn->flagged ? cn->guard_json : NULL);
    pk_pg_stmt st[6];
    size_t n = 0;
    st[n++] = (pk_pg_stmt){b.sql.data, b.p.n, b.p.v};
    if (set & PK_NF_TAGS) {
        st[n++] = (pk_pg_stmt){SQL_TAGS_DELETE, pd.n, pd.v};
        st[n++] = (pk_pg_stmt){SQL_TAGS_INSERT, pt.n, pt.v};
    }
    st[n++] = (pk_pg_stmt){SQL_AUDIT, pa.n, pa.v};
    if ((set & PK_NF_CONFIDENCE) && in->confidence_score != old_conf) {
        confidence_params(s, &pc, c, id, version + 1, &old_conf, in->confidence_score);
        st[n++] = (pk_pg_stmt){SQL_CONFIDENCE, pc.n, pc.v};
    }
    st[n++] = (pk_pg_stmt){"COMMIT", 0, NULL};
    PGresult *res[6];
    e = pk_pg_run(k, "note_update", st, n, res, dl(c));
    if (!e) {
        if (PQntuples(res[0]) == 1)
            note_json(res[0], 0, out);
        else
            e = pk_err_new("store_error", 500, "the updated note was not returned");
        clear_all(res, n);
    }
    qb_free(&b);
    par_free(&pd), par_free(&pt), par_free(&pa), par_free(&pc);
    pk_buf_free(&f);
    return e;
}

static pk_err *pg_note_update(pk_store *ps, const pk_op_ctx *c, const char *id, int64_t if_version,
                              const pk_note_input *in, pk_buf *out)
{
    pg_store *s = (pg_store *)ps;
    int64_t t0 = pk_mono_ns();
    pk_note_canon cn;
    pk_err *e = pk_note_input_check(in, false, &cn);
    pk_pg_conn *k = NULL;
    if (!e) e = op_begin(s, c, true, &k);
    if (!e) {
        pk_buf tmp = PK_BUF_INIT;
        e = update_impl(s, k, c, id, if_version, in, &cn, &tmp);
        if (e)
            audit_refusal(s, k, c, id, "update", in->set, e);
        else
            pk_buf_append(out, tmp.data, tmp.len);
        pk_buf_free(&tmp);
    }
    pk_note_canon_free(&cn);
    return op_end(s, c, "note_update", true, t0, k, e);
}

static pk_err *delete_impl(pg_store *s, pk_pg_conn *k, const pk_op_ctx *c, const char *id, int64_t if_version)
{
    PGresult *row;
    pk_err *e = lock_note(k, c, id, if_version, &row);
    if (e) return e;
    int64_t seq = val_i64(row, 0, C_SEQ), version = val_i64(row, 0, C_VERSION);
    PQclear(row);
    params pd = {0}, pa = {0};
    par_int(&pd, seq);
    pk_buf f = PK_BUF_INIT;
    fields_json(0, &f);
    audit_params(s, &pa, c, id, "delete", version, &f, "ok", NULL);
    pk_pg_stmt st[3] = {{"DELETE FROM notes WHERE seq = $1::bigint", pd.n, pd.v},
                        {SQL_AUDIT, pa.n, pa.v},
                        {"COMMIT", 0, NULL}};
    PGresult *res[3];
    e = pk_pg_run(k, "note_delete", st, 3, res, dl(c));
    if (!e) clear_all(res, 3);
    par_free(&pd), par_free(&pa);
    pk_buf_free(&f);
    return e;
}

static pk_err *pg_note_delete(pk_store *ps, const pk_op_ctx *c, const char *id, int64_t if_version)
{
    pg_store *s = (pg_store *)ps;
    int64_t t0 = pk_mono_ns();
    pk_pg_conn *k;
    pk_err *e = op_begin(s, c, true, &k);
    if (!e) {
        e = delete_impl(s, k, c, id, if_version);
        if (e) audit_refusal(s, k, c, id, "delete", 0, e);
    }
    return op_end(s, c, "note_delete", true, t0, k, e);
}

/* ---- list and search ---- */

typedef struct sort_spec {
    const char *expr; /* SQL over alias n; NULL: relevance */
    int colidx;
    bool asc;
    char kind[3];
} sort_spec;

static pk_err *sort_of(const pk_note_query *q, bool search, sort_spec *sp)
{
    memset(sp, 0, sizeof *sp);
    pk_sort_key key;
    pk_err *e = pk_note_query_prepare(q, search, &key, sp->kind);
    if (e) return e;
    sp->asc = q->ascending;
    switch (key) {
    case PK_SORT_CREATED:
        sp->expr = "n.created_at", sp->colidx = C_CREATED;
        break;
    case PK_SORT_UPDATED:
        sp->expr = "n.updated_at", sp->colidx = C_UPDATED;
        break;
    case PK_SORT_TITLE:
        sp->expr = "lower(n.title) COLLATE \"C\"", sp->colidx = C_TITLE;
        break;
    case PK_SORT_CONFIDENCE:
        sp->expr = "n.confidence_score", sp->colidx = C_CONF;
        break;
    default: /* relevance */
        break;
    }
    return NULL;
}

/* Millisecond-precision time filters, exactly as the embedded store (see store_sqlite.c). */
static void time_filter(qb *b, const char *col, const char *op, int64_t v)
{
    if (!v) return;
    const int64_t ms = 1000000;
    int64_t fl = v / ms - (v % ms < 0 ? 1 : 0);
    bool after = op[0] == '>';
    int64_t bound = after ? (fl + 1) * ms : (v % ms ? fl + 1 : fl) * ms;
    pk_buf_printf(&b->sql, " AND n.%s %s ", col, after ? ">=" : "<");
    qb_int(b, bound);
}

static void filters(qb *b, const pk_note_query *q)
{
    if (q->type) qb_sql(b, " AND n.type = "), qb_text(b, q->type);
    if (q->status) qb_sql(b, " AND n.status = "), qb_text(b, q->status);
    if (q->verification_status)
        qb_sql(b, " AND n.verification_status = "), qb_text(b, q->verification_status);
    for (size_t i = 0; i < q->ntags_all; i++) {
        qb_sql(b, " AND EXISTS (SELECT 1 FROM note_tags t WHERE t.tag = ");
        qb_text(b, q->tags_all[i]);
        qb_sql(b, " AND t.note_seq = n.seq)");
    }
    if (q->ntags_any) {
        qb_sql(b, " AND EXISTS (SELECT 1 FROM note_tags t WHERE t.note_seq = n.seq AND t.tag IN (");
        for (size_t i = 0; i < q->ntags_any; i++) {
            if (i) qb_sql(b, ", ");
            qb_text(b, q->tags_any[i]);
        }
        qb_sql(b, "))");
    }
    if (q->has_min_confidence) qb_sql(b, " AND n.confidence_score >= "), qb_dbl(b, q->min_confidence);
    time_filter(b, "created_at", ">", q->created_after);
    time_filter(b, "created_at", "<", q->created_before);
    time_filter(b, "updated_at", ">", q->updated_after);
    time_filter(b, "updated_at", "<", q->updated_before);
    if (q->flagged >= 0) qb_sql(b, " AND n.flagged = "), qb_bool(b, q->flagged != 0);
}

/* Adds "AND (sort expr, n.seq) < (value, seq)" for the cursor. */
static pk_err *keyset(qb *b, const sort_spec *sp, const char *cursor)
{
    if (!cursor) return NULL;
    int64_t seq;
    char *value = NULL;
    pk_err *e = pk_cursor_decode(cursor, sp->kind, &seq, &value);
    if (e) return e;
    pk_buf_printf(&b->sql, " AND (%s, n.seq) %s (", sp->expr, sp->asc ? ">" : "<");
    char *end = NULL;
    errno = 0;
    if (sp->colidx == C_TITLE) {
        qb_sql(b, "lower(");
        pk_buf_printf(&b->sql, "$%d::text", par_own(&b->p, value));
        value = NULL;
        qb_sql(b, ") COLLATE \"C\"");
    } else if (sp->colidx == C_CONF) {
        double d = strtod(value, &end);
        if (end == value || *end || !isfinite(d))
            e = pk_note_query_invalid("cursor", "is malformed");
        else
            qb_dbl(b, d);
    } else {
        long long v = strtoll(value, &end, 10);
        if (end == value || *end || errno)
            e = pk_note_query_invalid("cursor", "is malformed");
        else
            qb_int(b, v);
    }
    free(value);
    if (e) return e;
    qb_sql(b, ", ");
    qb_int(b, seq);
    qb_sql(b, ")");
    return NULL;
}

static void order_by(qb *b, const sort_spec *sp)
{
    const char *dir = sp->asc ? "ASC" : "DESC";
    if (sp->expr)
        pk_buf_printf(&b->sql, " ORDER BY %s %s, n.seq %s", sp->expr, dir, dir);
    else
        qb_sql(b, " ORDER BY score DESC, n.seq ASC");
}

static int page_limit(const pk_note_query *q)
{
    return q->limit <= 0 ? 20 : q->limit > 100 ? 100 : q->limit;
}

static void cursor_value(const PGresult *r, int row, const sort_spec *sp, pk_buf *v)
{
    pk_buf_reset(v);
    if (sp->colidx == C_CONF)
        pk_buf_printf(v, "%.17g", val_dbl(r, row, C_CONF));
    else
        pk_buf_append(v, val(r, row, sp->colidx), (size_t)PQgetlength(r, row, sp->colidx));
}

/* Builds the page from up to limit+1 rows; search rows carry snippet and score after the note. */
static void page_fill(const PGresult *r, const pk_note_query *q, const sort_spec *sp, bool search,
                      int64_t offset, pk_page *out)
{
    int limit = page_limit(q), rows = PQntuples(r);
    pk_buf items = PK_BUF_INIT, last = PK_BUF_INIT;
    pk_jw w;
    pk_jw_init(&w, &items);
    pk_jw_arr_open(&w);
    size_t count = 0;
    int64_t last_seq = 0;
    for (int i = 0; i < rows && i < limit; i++) {
        note_open(&w, r, i);
        if (search) {
            pk_jw_key(&w, "snippet");
            col_str(&w, r, i, C_NCOLS);
            pk_jw_key(&w, "score");
            pk_jw_num(&w, val_dbl(r, i, C_NCOLS + 1));
        }
        pk_jw_obj_close(&w);
        count++;
        last_seq = val_i64(r, i, C_SEQ);
        if (sp->expr) cursor_value(r, i, sp, &last);
    }
    pk_jw_arr_close(&w);
    pk_page_free(out);
    out->items = items;
    out->count = count;
    if (rows > limit && sp->expr) {
        out->next_cursor = pk_cursor_encode(sp->kind, last_seq, last.data ? last.data : "");
    } else if (rows > limit) {
        char off[32];
        snprintf(off, sizeof off, "%lld", (long long)(offset + limit));
        out->next_cursor = pk_cursor_encode(sp->kind, 0, off);
    }
    pk_buf_free(&last);
}

static pk_err *list_impl(pk_pg_conn *k, const pk_op_ctx *c, const pk_note_query *q, pk_page *out)
{
    sort_spec sp;
    pk_err *e = sort_of(q, false, &sp);
    if (e) return e;
    qb b = {0};
    qb_sql(&b, "SELECT " NOTE_COLS("n") " FROM notes n WHERE true");
    filters(&b, q);
    e = keyset(&b, &sp, q->cursor);
    if (!e) {
        order_by(&b, &sp);
        qb_sql(&b, " LIMIT ");
        qb_int(&b, page_limit(q) + 1);
        PGresult *r = NULL;
        e = pk_pg_query(k, "note_list", b.sql.data, b.p.n, b.p.v, dl(c), &r);
        if (!e) page_fill(r, q, &sp, false, 0, out);
        PQclear(r);
    }
    qb_free(&b);
    return e;
}

/* tsquery prefix term: 'text':* with quotes and backslashes escaped (tsquery's quoting rules). */
static char *prefix_lexeme(const pk_search_term *t)
{
    pk_buf b = PK_BUF_INIT;
    pk_buf_putc(&b, '\'');
    for (size_t i = 0; i < t->len; i++) {
        char ch = t->text[i];
        if (ch == '\'' || ch == '\\') pk_buf_putc(&b, ch == '\'' ? '\'' : '\\');
        pk_buf_putc(&b, ch);
    }
    pk_buf_puts(&b, "':*");
    return pk_buf_steal(&b, NULL);
}

/* (phraseto_tsquery('pake', $a) && to_tsquery('pake', $b) && ...) into `expr`; each term is a parameter
 * of b, so the expression can be pasted wherever the query needs it. */
static pk_err *tsquery_expr(qb *b, const char *text, pk_buf *expr)
{
    pk_search_term t[PK_SEARCH_TERMS_MAX];
    size_t n = 0;
    pk_err *e = pk_search_terms(text, t, &n);
    if (e) return e;
    pk_buf_puts(expr, "(");
    for (size_t i = 0; i < n; i++) {
        if (i) pk_buf_puts(expr, " && ");
        if (t[i].prefix)
            pk_buf_printf(expr, "to_tsquery('pake', $%d::text)", par_own(&b->p, prefix_lexeme(&t[i])));
        else
            pk_buf_printf(expr, "phraseto_tsquery('pake', $%d::text)",
                          par_own(&b->p, pk_strndup(t[i].text, t[i].len)));
    }
    pk_buf_puts(expr, ")");
    return NULL;
}

static pk_err *search_impl(pk_pg_conn *k, const pk_op_ctx *c, const pk_note_query *q, pk_page *out)
{
    sort_spec sp;
    pk_err *e = sort_of(q, true, &sp);
    if (e) return e;
    if (!q->text) return pk_note_query_invalid("q", "a search needs query text");
    qb b = {0};
    pk_buf tsq = PK_BUF_INIT;
    int64_t offset = 0;
    e = tsquery_expr(&b, q->text, &tsq);
    if (e) {
        qb_free(&b);
        pk_buf_free(&tsq);
        return e;
    }
    /* the tsquery is inline (not a CTE) so the planner sees a constant for the GIN index */
    pk_buf_printf(
        &b.sql,
        "WITH page AS (SELECT n.seq, ts_rank_cd('{0.1, 0.1, 0.5, 1.0}', n.search, %s)::float8 AS score"
        " FROM notes n WHERE n.search @@ %s",
        tsq.data, tsq.data);
    filters(&b, q);
    if (sp.expr) {
        e = keyset(&b, &sp, q->cursor);
    } else if (q->cursor) {
        int64_t zero;
        char *cur = NULL, *end = NULL;
        e = pk_cursor_decode(q->cursor, sp.kind, &zero, &cur);
        if (!e) offset = strtoll(cur, &end, 10);
        if (!e && (end == cur || *end || offset < 0 || offset > 100000))
            e = pk_note_query_invalid("cursor", "is malformed");
        free(cur);
    }
    if (!e) {
        order_by(&b, &sp);
        qb_sql(&b, " LIMIT ");
        qb_int(&b, page_limit(q) + 1);
        qb_sql(&b, " OFFSET ");
        qb_int(&b, offset);
        pk_buf_printf(&b.sql,
                      ") SELECT " NOTE_COLS("n") ", ts_headline('pake', concat_ws(' ', n.title, n.content,"
                                                 " (SELECT string_agg(t, ' ') FROM json_array_elements_text("
                                                 "n.tags::json) AS t)), %s, " HEADLINE_OPTS
                                                 "), page.score FROM page JOIN notes n ON n.seq = page.seq",
                      tsq.data);
        if (sp.expr)
            order_by(&b, &sp);
        else
            qb_sql(&b, " ORDER BY page.score DESC, n.seq ASC");
        PGresult *r = NULL;
        e = pk_pg_query(k, "note_search", b.sql.data, b.p.n, b.p.v, dl(c), &r);
        if (!e) page_fill(r, q, &sp, true, offset, out);
        PQclear(r);
    }
    qb_free(&b);
    pk_buf_free(&tsq);
    return e;
}

static pk_err *pg_note_list(pk_store *ps, const pk_op_ctx *c, const pk_note_query *q, pk_page *out)
{
    pg_store *s = (pg_store *)ps;
    int64_t t0 = pk_mono_ns();
    pk_pg_conn *k;
    pk_err *e = op_begin(s, c, false, &k);
    if (!e) e = list_impl(k, c, q, out);
    return op_end(s, c, "note_list", false, t0, k, e);
}

static pk_err *pg_note_search(pk_store *ps, const pk_op_ctx *c, const pk_note_query *q, pk_page *out)
{
    pg_store *s = (pg_store *)ps;
    int64_t t0 = pk_mono_ns();
    pk_pg_conn *k;
    pk_err *e = op_begin(s, c, false, &k);
    if (!e) e = search_impl(k, c, q, out);
    return op_end(s, c, "note_search", false, t0, k, e);
}

/* ---- history ---- */

static void history_json(const char *id, const PGresult *ev, const PGresult *ch, pk_buf *out)
{
    pk_jw w;
    pk_jw_init(&w, out);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "note_id");
    pk_jw_str(&w, id);
    pk_jw_key(&w, "events");
    pk_jw_arr_open(&w);
    for (int i = 0; i < PQntuples(ev); i++) {
        pk_jw_obj_open(&w);
        pk_jw_key(&w, "action");
        col_str(&w, ev, i, 0);
        pk_jw_key(&w, "version");
        pk_jw_int(&w, val_i64(ev, i, 1));
        pk_jw_key(&w, "fields");
        col_raw(&w, ev, i, 2);
        pk_jw_key(&w, "at");
        col_time(&w, ev, i, 3);
        pk_jw_key(&w, "request_id");
        col_str(&w, ev, i, 4);
        pk_jw_key(&w, "principal");
        col_str(&w, ev, i, 5);
        pk_jw_key(&w, "outcome");
        col_str(&w, ev, i, 6);
        if (!isnull(ev, i, 7)) {
            pk_jw_key(&w, "guard");
            col_raw(&w, ev, i, 7);
        }
        pk_jw_obj_close(&w);
    }
    pk_jw_arr_close(&w);
    pk_jw_key(&w, "confidence_history");
    pk_jw_arr_open(&w);
    for (int i = 0; i < PQntuples(ch); i++) {
        pk_jw_obj_open(&w);
        pk_jw_key(&w, "version");
        pk_jw_int(&w, val_i64(ch, i, 0));
        pk_jw_key(&w, "from");
        if (isnull(ch, i, 1))
            pk_jw_null(&w);
        else
            pk_jw_num(&w, val_dbl(ch, i, 1));
        pk_jw_key(&w, "to");
        pk_jw_num(&w, val_dbl(ch, i, 2));
        pk_jw_key(&w, "at");
        col_time(&w, ch, i, 3);
        pk_jw_key(&w, "request_id");
        col_str(&w, ch, i, 4);
        pk_jw_key(&w, "principal");
        col_str(&w, ch, i, 5);
        pk_jw_obj_close(&w);
    }
    pk_jw_arr_close(&w);
    pk_jw_obj_close(&w);
}

static pk_err *pg_note_history(pk_store *ps, const pk_op_ctx *c, const char *id, pk_buf *out)
{
    pg_store *s = (pg_store *)ps;
    int64_t t0 = pk_mono_ns();
    pk_pg_conn *k;
    pk_err *e = op_begin(s, c, false, &k);
    if (!e) {
        const char *p[] = {id};
        pk_pg_stmt st[4] = {
            {"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL}, /* both tables from one snapshot */
            {"SELECT action, version, fields, at, request_id, principal, outcome, guard FROM audit_log"
             " WHERE note_id = $1 ORDER BY seq",
             1, p},
            {"SELECT version, old_score, new_score, at, request_id, principal FROM confidence_history"
             " WHERE note_id = $1 ORDER BY seq",
             1, p},
            {"COMMIT", 0, NULL}};
        PGresult *res[4];
        e = pk_pg_run(k, "note_history", st, 4, res, dl(c));
        if (!e) {
            if (PQntuples(res[1]) == 0)
                e = pk_err_not_found("note %s not found", id);
            else
                history_json(id, res[1], res[2], out);
            clear_all(res, 4);
        }
    }
    return op_end(s, c, "note_history", false, t0, k, e);
}

/* ---- links ---- */

static pk_err *link_check(const char *src, const char *dst, const char *type, double strength,
                          const char *meta, char **meta_canon)
{
    pk_err *e = pk_err_invalid("the link has invalid fields");
    if (!pk_link_type_valid(type))
        pk_err_add_field(e, "type", "must be 1 to 64 characters of a-z, 0-9, _ and -");
    if (!(isfinite(strength) && strength >= 0.0 && strength <= 1.0))
        pk_err_add_field(e, "strength", "must be a number between 0 and 1");
    if (!dst || !dst[0])
        pk_err_add_field(e, "target_id", "is required");
    else if (src && strcmp(src, dst) == 0)
        pk_err_add_field(e, "target_id", "a note cannot link to itself");
    if (meta) {
        pk_note_input in = {.set = PK_NF_METADATA, .metadata_json = meta};
        pk_note_canon cn;
        pk_err *me = pk_note_input_check(&in, false, &cn);
        if (me) {
            pk_err_add_field(e, "metadata", "must be a JSON object");
            pk_err_free(me);
        } else {
            *meta_canon = cn.metadata_json;
            cn.metadata_json = NULL;
            pk_note_canon_free(&cn);
        }
    }
    if (e->nfields == 0) {
        pk_err_free(e);
        return NULL;
    }
    return e;
}

/* One round trip: both notes are checked and the link inserted (only when both exist) in one
 * transaction; ON CONFLICT turns a duplicate into zero rows instead of an aborted pipeline. */
static pk_err *link_create_impl(pg_store *s, pk_pg_conn *k, const pk_op_ctx *c, const char *src,
                                const char *dst, const char *type, double strength, const char *meta,
                                pk_buf *out)
{
    char id[PK_UUID_LEN];
    pk_uuid7(id);
    int64_t now = wall_now(s);
    const char *pe[] = {src, dst};
    params pi = {0};
    par_text(&pi, id);
    par_text(&pi, src);
    par_text(&pi, dst);
    par_text(&pi, type);
    par_dbl(&pi, strength);
    par_text(&pi, meta);
    par_int(&pi, now);
    pk_pg_stmt st[4] = {
        {"BEGIN", 0, NULL},
        {"SELECT EXISTS (SELECT 1 FROM notes WHERE id = $1), EXISTS (SELECT 1 FROM notes WHERE id = $2)", 2,
         pe},
        {"INSERT INTO links(id, source_id, target_id, type, strength, metadata, created_at)"
         " SELECT $1::text, $2::text, $3::text, $4::text, $5::float8, $6::text, $7::bigint"
         " WHERE EXISTS (SELECT 1 FROM notes WHERE id = $2) AND EXISTS (SELECT 1 FROM notes WHERE id = $3)"
         " ON CONFLICT (source_id, target_id, type) DO NOTHING",
         pi.n, pi.v},
        {"COMMIT", 0, NULL}};
    PGresult *res[4];
    pk_err *e = pk_pg_run(k, "link_create", st, 4, res, dl(c));
    par_free(&pi);
    if (e) {
        if (!strcmp(pk_pg_sqlstate(k), "23503")) { /* a note was deleted meanwhile */
            pk_err_free(e);
            return pk_err_not_found("note %s not found", src);
        }
        return e;
    }
    bool src_ok = val(res[1], 0, 0)[0] == 't', dst_ok = val(res[1], 0, 1)[0] == 't';
    bool inserted = strcmp(PQcmdTuples(res[2]), "1") == 0;
    clear_all(res, 4);
    if (!src_ok) return pk_err_not_found("note %s not found", src);
    if (!dst_ok) {
        e = pk_err_invalid("the link target does not exist");
        pk_err_add_field(e, "target_id", "no note has this id");
        return e;
    }
    if (!inserted)
        return pk_err_new("conflict", 409, "a link of type %s from %s to %s already exists", type, src, dst);
    pk_jw w;
    pk_jw_init(&w, out);
    pk_store_link_json(&w, id, src, dst, type, strength, meta, strlen(meta), now);
    return NULL;
}

static pk_err *pg_link_create(pk_store *ps, const pk_op_ctx *c, const char *src, const char *dst,
                              const char *type, double strength, const char *metadata_json, pk_buf *out)
{
    pg_store *s = (pg_store *)ps;
    int64_t t0 = pk_mono_ns();
    char *meta = NULL;
    pk_pg_conn *k = NULL;
    pk_err *e = link_check(src, dst, type, strength, metadata_json, &meta);
    if (!e) e = op_begin(s, c, true, &k);
    if (!e) e = link_create_impl(s, k, c, src, dst, type, strength, meta ? meta : "{}", out);
    free(meta);
    return op_end(s, c, "link_create", true, t0, k, e);
}

static pk_err *pg_link_list(pk_store *ps, const pk_op_ctx *c, const char *id, pk_buf *out)
{
    pg_store *s = (pg_store *)ps;
    int64_t t0 = pk_mono_ns();
    pk_pg_conn *k;
    pk_err *e = op_begin(s, c, false, &k);
    if (!e) {
        const char *p[] = {id};
        pk_pg_stmt st[4] = {
            {"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL},
            {"SELECT 1 FROM notes WHERE id = $1", 1, p},
            {"SELECT id, source_id, target_id, type, strength, metadata, created_at FROM links"
             " WHERE source_id = $1 OR target_id = $1 ORDER BY seq LIMIT 1000",
             1, p},
            {"COMMIT", 0, NULL}};
        PGresult *res[4];
        e = pk_pg_run(k, "link_list", st, 4, res, dl(c));
        if (!e) {
            if (PQntuples(res[1]) == 0) {
                e = pk_err_not_found("note %s not found", id);
            } else {
                const PGresult *r = res[2];
                pk_jw w;
                pk_jw_init(&w, out);
                pk_jw_arr_open(&w);
                for (int i = 0; i < PQntuples(r); i++)
                    pk_store_link_json(&w, val(r, i, 0), val(r, i, 1), val(r, i, 2), val(r, i, 3),
                                       val_dbl(r, i, 4), val(r, i, 5), (size_t)PQgetlength(r, i, 5),
                                       val_i64(r, i, 6));
                pk_jw_arr_close(&w);
            }
            clear_all(res, 4);
        }
    }
    return op_end(s, c, "link_list", false, t0, k, e);
}

/* ---- idempotency ---- */

static pk_err *idem_key_check(const char *key)
{
    size_t n = key ? strlen(key) : 0;
    if (n >= 1 && n <= IDEM_KEY_MAX) return NULL;
    pk_err *e = pk_err_invalid("the idempotency key is invalid");
    pk_err_add_field(e, "Idempotency-Key", "must be 1 to %d characters", IDEM_KEY_MAX);
    return e;
}

static pk_err *idem_begin_impl(pg_store *s, pk_pg_conn *k, const pk_op_ctx *c, const char *key,
                               const char *hash, pk_idem_state *state, int *status, pk_buf *body)
{
    int64_t now = wall_now(s);
    const char *who = ctx_principal(c) ? ctx_principal(c) : "";
    params pd = {0}, pi = {0};
    par_int(&pd, now - (int64_t)s->idem_ttl_s * 1000000000LL);
    par_text(&pi, who);
    par_text(&pi, key);
    par_text(&pi, hash);
    par_int(&pi, now);
    const char *pk[] = {who, key};
    pk_pg_stmt st[4] = {{"BEGIN", 0, NULL},
                        {"DELETE FROM idempotency WHERE created_at < $1::bigint", pd.n, pd.v},
                        {"INSERT INTO idempotency(principal, key, request_hash, state, created_at)"
                         " VALUES ($1, $2, $3, 0, $4) ON CONFLICT DO NOTHING",
                         pi.n, pi.v},
                        {"SELECT request_hash, state, status, body, created_at FROM idempotency"
                         " WHERE principal = $1 AND key = $2 FOR UPDATE",
                         2, pk}};
    PGresult *res[4];
    pk_err *e = pk_pg_run(k, "idem_claim", st, 4, res, dl(c));
    par_free(&pd);
    if (e) {
        par_free(&pi);
        return e;
    }
    bool claimed = strcmp(PQcmdTuples(res[2]), "1") == 0;
    const PGresult *r = res[3];
    bool take = claimed;
    if (!claimed && PQntuples(r) == 1) {
        bool same = strcmp(val(r, 0, 0), hash) == 0;
        bool done = val_i64(r, 0, 1) == 1;
        bool abandoned = val_i64(r, 0, 4) < now - (int64_t)s->idem_lease_s * 1000000000LL;
        if (!same) {
            *state = PK_IDEM_MISMATCH;
        } else if (done) {
            *state = PK_IDEM_REPLAY;
            *status = (int)val_i64(r, 0, 2);
            pk_buf_append(body, val(r, 0, 3), (size_t)PQgetlength(r, 0, 3));
        } else if (abandoned) {
            take = true;
        } else {
            *state = PK_IDEM_IN_PROGRESS;
        }
        if (!same && !done && abandoned) take = true; /* a stale claim does not block a new request */
    }
    clear_all(res, 4);
    if (take && !claimed) {
        pk_pg_stmt up[2] = {
            {"UPDATE idempotency SET request_hash = $3, state = 0, status = NULL, body = NULL,"
             " created_at = $4 WHERE principal = $1 AND key = $2",
             pi.n, pi.v},
            {"COMMIT", 0, NULL}};
        PGresult *ur[2];
        e = pk_pg_run(k, "idem_take", up, 2, ur, dl(c));
        if (!e) clear_all(ur, 2);
    } else {
        e = pk_pg_exec_simple(k, "COMMIT", dl(c));
    }
    par_free(&pi);
    if (!e && take) *state = PK_IDEM_NEW;
    return e;
}

static pk_err *pg_idem_begin(pk_store *ps, const pk_op_ctx *c, const char *key, const char *hash,
                             pk_idem_state *state, int *status, pk_buf *body)
{
    pg_store *s = (pg_store *)ps;
    int64_t t0 = pk_mono_ns();
    pk_pg_conn *k = NULL;
    pk_err *e = idem_key_check(key);
    if (!e) e = op_begin(s, c, true, &k);
    if (!e) {
        pk_buf tmp = PK_BUF_INIT;
        pk_idem_state st = PK_IDEM_NEW;
        int code = 0;
        e = idem_begin_impl(s, k, c, key, hash ? hash : "", &st, &code, &tmp);
        if (!e) {
            *state = st;
            if (status) *status = code;
            if (st == PK_IDEM_REPLAY) pk_buf_append(body, tmp.data, tmp.len);
        }
        pk_buf_free(&tmp);
    }
    return op_end(s, c, "idem_begin", true, t0, k, e);
}

static pk_err *idem_change(pg_store *s, const pk_op_ctx *c, const char *op, const char *sql, const char *key,
                           int status, const char *body, size_t body_len)
{
    int64_t t0 = pk_mono_ns();
    pk_pg_conn *k = NULL;
    pk_err *e = idem_key_check(key);
    if (!e) e = op_begin(s, c, true, &k);
    if (!e) {
        params p = {0};
        par_text(&p, ctx_principal(c) ? ctx_principal(c) : "");
        par_text(&p, key);
        if (body) {
            par_int(&p, status);
            par_own(&p, pk_strndup(body, body_len));
        }
        PGresult *r = NULL;
        e = pk_pg_query(k, op, sql, p.n, p.v, dl(c), &r);
        if (!e && strcmp(PQcmdTuples(r), "0") == 0)
            e = pk_err_not_found("no idempotency record in progress for this key");
        PQclear(r);
        par_free(&p);
    }
    return op_end(s, c, op, true, t0, k, e);
}

static pk_err *pg_idem_finish(pk_store *ps, const pk_op_ctx *c, const char *key, int status, const char *body,
                              size_t body_len)
{
    if (body_len > INT_MAX) return pk_err_new("store_error", 500, "the response is too large to record");
    if (body && memchr(body, '\0', body_len))
        return pk_err_new("store_error", 500, "the response cannot be recorded (NUL byte)");
    return idem_change((pg_store *)ps, c, "idem_finish",
                       "UPDATE idempotency SET state = 1, status = $3::integer, body = $4"
                       " WHERE principal = $1 AND key = $2 AND state = 0",
                       key, status, body ? body : "", body_len);
}

static pk_err *pg_idem_abort(pk_store *ps, const pk_op_ctx *c, const char *key)
{
    return idem_change((pg_store *)ps, c, "idem_abort",
                       "DELETE FROM idempotency WHERE principal = $1 AND key = $2 AND state = 0", key, 0,
                       NULL, 0);
}

/* ---- open, close ---- */

static void pg_close(pk_store *ps)
{
    pg_store *s = (pg_store *)ps;
    if (!s) return;
    pk_pg_pool_close(s->replica);
    pk_pg_pool_close(s->primary);
    pthread_mutex_destroy(&s->ryw_mu);
    free(s);
}

static const pk_store_ops pg_ops = {
    .close = pg_close,
    .migrate = pg_migrate,
    .ping = pg_ping,
    .note_create = pg_note_create,
    .note_get = pg_note_get,
    .note_update = pg_note_update,
    .note_delete = pg_note_delete,
    .note_list = pg_note_list,
    .note_search = pg_note_search,
    .note_history = pg_note_history,
    .link_create = pg_link_create,
    .link_list = pg_link_list,
    .idem_begin = pg_idem_begin,
    .idem_finish = pg_idem_finish,
    .idem_abort = pg_idem_abort,
};

int pk_store_pg_schema_version_latest(void)
{
    return pk_pg_migration_count;
}

bool pk_store_is_pg(const pk_store *s)
{
    return s && s->ops == &pg_ops;
}

struct pk_pg_pool *pk_store_pg_primary_pool(pk_store *s)
{
    return pk_store_is_pg(s) ? ((pg_store *)s)->primary : NULL;
}

void pk_store_pg_bind_metrics(pk_store *ps, struct pk_metrics *m)
{
    if (!pk_store_is_pg(ps)) return;
    pg_store *s = (pg_store *)ps;
    pk_pg_pool_bind_metrics(s->primary, m);
    if (s->replica) pk_pg_pool_bind_metrics(s->replica, m);
}

static pk_pg_pool_config pool_config(const pk_pg_config *cfg, const char *name, const char *url)
{
    return (pk_pg_pool_config){.name = name,
                               .conninfo = url,
                               .min_size = cfg->pool_min,
                               .max_size = cfg->pool_max,
                               .acquire_timeout_ms = cfg->acquire_timeout_ms,
                               .max_lifetime_ms = cfg->max_lifetime_ms,
                               .idle_timeout_ms = cfg->idle_timeout_ms,
                               .validate_after_ms = cfg->validate_after_ms,
                               .leak_threshold_ms = cfg->leak_threshold_ms,
                               .connect_timeout_ms = cfg->connect_timeout_ms,
                               .backoff_max_ms = cfg->backoff_max_ms,
                               .statement_timeout_ms = cfg->statement_timeout_ms};
}

pk_err *pk_store_open_pg(const pk_pg_config *cfg, bool no_migrate, pk_store **out)
{
    *out = NULL;
    if (!cfg || !cfg->url || !cfg->url[0])
        return pk_err_new("store_error", 500, "the PostgreSQL store needs a database URL");
    pg_store *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->base.ops = &pg_ops;
    s->base.backend = "postgres";
    s->wall = cfg->wall_clock ? cfg->wall_clock : pk_clock_wall();
    s->idem_ttl_s = cfg->idem_ttl_s > 0 ? cfg->idem_ttl_s : 86400;
    s->idem_lease_s = cfg->idem_lease_s > 0 ? cfg->idem_lease_s : 60;
    s->ryw_ns = (int64_t)(cfg->read_your_writes_ms > 0 ? cfg->read_your_writes_ms : 5000) * 1000000;
    pthread_mutex_init(&s->ryw_mu, NULL);
    pk_pg_pool_config pc = pool_config(cfg, "primary", cfg->url);
    pk_err *e = pk_pg_pool_open(&pc, &s->primary);
    if (!e && cfg->replica_url && cfg->replica_url[0]) {
        pc = pool_config(cfg, "replica", cfg->replica_url);
        e = pk_pg_pool_open(&pc, &s->replica);
    }
    if (!e && !no_migrate) e = pg_migrate(&s->base, NULL, NULL);
    if (e) {
        pg_close(&s->base);
        return e;
    }
    *out = &s->base;
    return NULL;
}
