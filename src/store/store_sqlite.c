/*
 * store_sqlite: the embedded knowledge store (the pk_store vtable over one SQLite file in WAL mode).
 *
 * Shape of every operation: check the deadline, take a connection from the pool (the writer for
 * writes, a reader otherwise), run the statements, give the connection back, report to the observer.
 * A write is one BEGIN IMMEDIATE transaction that changes the note, its tags, the audit log and the
 * confidence history together, then reads the note back as JSON inside the same transaction, so the
 * caller gets exactly what was committed. Output buffers are filled from a local buffer only after
 * COMMIT succeeded, so a failed call leaves them untouched.
 *
 * Notes are serialised straight from the row into JSON (tags, metadata and guard are stored as the
 * compact JSON they are served as), so a read is one indexed lookup and one pass of string copying.
 *
 * Lists are keyset pages ordered by (sort column, seq), which stay correct while notes are inserted
 * and cost the same on page 1 and page 1000. Relevance search orders by the FTS5 `rank` column, which
 * FTS5 sorts itself and stops at LIMIT, so snippet() runs only for the rows returned; its pages are
 * offsets (rank is a float that ties). A search sorted by another column first selects the page of
 * row ids without snippets, then computes snippets for those rows only (snippet() over every match of
 * a common word costs milliseconds).
 */
#include "core/clock.h"
#include "core/id.h"
#include "core/json.h"
#include "store/sqlite_pool.h"
#include "store/sqlite_schema.h"
#include "store/sqlite_search.h"
#include "store/store_internal.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define IDEM_KEY_MAX 255
#define SNIPPET "snippet(notes_fts, -1, '<mark>', '</mark>', '...', 24)"

typedef struct sq_store {
    pk_store base;
    pk_sqlite_pool *pool;
    pk_sqlite_search *search; /* in-memory relevance index; NULL when off */
    const pk_clock *clock;
    const pk_clock *wall;
    int idem_ttl_s, idem_lease_s;
} sq_store;

static int64_t wall_now(sq_store *s)
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

/* ---- operation frame ---- */

static pk_err *op_begin(sq_store *s, const pk_op_ctx *c, bool write, pk_sqlite_conn **k)
{
    *k = NULL;
    int64_t deadline = c ? c->deadline_ns : 0;
    if (deadline && pk_clock_now(s->clock) >= deadline)
        return pk_err_new("deadline_exceeded", 504,
                          "the request deadline passed before the store was called");
    return pk_sqlite_pool_acquire(s->pool, write, deadline, k);
}

static pk_err *op_end(sq_store *s, const char *op, int64_t t0, pk_sqlite_conn *k, pk_err *e)
{
    pk_sqlite_pool_release(k);
    if (s->base.observer)
        s->base.observer(s->base.observer_ud, op, (double)(pk_clock_now(s->clock) - t0) / 1e9,
                         !e || e->status < 500);
    return e;
}

/* ---- binding and column helpers ---- */

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* sqlite3_column_text is NULL for an SQL NULL (the text columns hold text or NULL), so one call tells
 * both: the type check costs as much as the read. */
static void col_str(pk_jw *w, sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    if (!t) {
        pk_jw_null(w);
        return;
    }
    pk_jw_strn(w, t, (size_t)sqlite3_column_bytes(st, i));
}

static void col_raw(pk_jw *w, sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    if (!t) {
        pk_jw_null(w);
        return;
    }
    pk_jw_raw(w, t, (size_t)sqlite3_column_bytes(st, i));
}

static void col_time(pk_jw *w, sqlite3_stmt *st, int i)
{
    char ts[PK_RFC3339_LEN];
    pk_rfc3339(sqlite3_column_int64(st, i), ts);
    pk_jw_str(w, ts);
}

static void col_num_or_null(pk_jw *w, sqlite3_stmt *st, int i)
{
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        pk_jw_null(w);
    else
        pk_jw_num(w, sqlite3_column_double(st, i));
}

/* ---- notes as JSON ---- */

#define NOTE_COLS(a)                                                                                         \
    a ".seq, " a ".id, " a ".title, " a ".content, " a ".type, " a ".status, " a ".verification_status, " a  \
      ".source_uri, " a ".tags, " a ".metadata, " a ".confidence_score, " a ".ai_summary, " a                \
      ".human_notes, " a ".guard, " a ".created_at, " a ".updated_at, " a ".version"
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

/* Writes the note's members; the caller closes the object (search adds snippet and score first).
 * spans (may be NULL) gets where the values of title, content and tags start and end in w's buffer
 * (inside the quotes for the strings). */
static void note_open_spans(pk_jw *w, sqlite3_stmt *st, size_t spans[PK_SEARCH_COLS][2])
{
#define K(s)                                                                                                 \
    {                                                                                                        \
        s, sizeof s - 1                                                                                      \
    }
    static const struct {
        const char *s;
        size_t n;
    } keys[C_NCOLS] = {{NULL, 0},
                       K("id"),
                       K("title"),
                       K("content"),
                       K("type"),
                       K("status"),
                       K("verification_status"),
                       K("source_uri"),
                       K("tags"),
                       K("metadata"),
                       K("confidence_score"),
                       K("ai_summary"),
                       K("human_notes"),
                       K("guard"),
                       K("created_at"),
                       K("updated_at"),
                       K("version")};
#undef K
    pk_jw_obj_open(w);
    for (int i = C_ID; i < C_NCOLS; i++) {
        pk_jw_key_plain(w, keys[i].s, keys[i].n);
        size_t at = w->out->len;
        int sc = i == C_TITLE ? 0 : i == C_CONTENT ? 1 : i == C_TAGS ? 2 : -1;
        switch (i) {
        case C_TAGS:
        case C_META:
        case C_GUARD:
            col_raw(w, st, i);
            break;
        case C_CONF:
            pk_jw_num(w, sqlite3_column_double(st, i));
            break;
        case C_CREATED:
        case C_UPDATED:
            col_time(w, st, i);
            break;
        case C_VERSION:
            pk_jw_int(w, sqlite3_column_int64(st, i));
            break;
        default:
            col_str(w, st, i);
        }
        if (spans && sc >= 0) {
            bool quoted = i != C_TAGS;
            spans[sc][0] = at + quoted;
            spans[sc][1] = w->out->len - quoted;
        }
    }
}

static void note_open(pk_jw *w, sqlite3_stmt *st)
{
    note_open_spans(w, st, NULL);
}

static pk_err *note_read(pk_sqlite_conn *k, const char *where, sqlite3_int64 seq, const char *id, pk_buf *out,
                         int64_t *version)
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT " NOTE_COLS("n") " FROM notes n WHERE %s", where);
    sqlite3_stmt *st;
    pk_err *e = pk_sqlite_prepare(k, sql, &st);
    if (e) return e;
    if (id)
        bind_text(st, 1, id);
    else
        sqlite3_bind_int64(st, 1, seq);
    int rc = pk_sqlite_step(k, st);
    if (rc == SQLITE_ROW) {
        pk_jw w;
        pk_jw_init(&w, out);
        note_open(&w, st);
        pk_jw_obj_close(&w);
        if (version) *version = sqlite3_column_int64(st, C_VERSION);
        e = NULL;
    } else if (rc == SQLITE_DONE) {
        e = pk_err_not_found("note %s not found", id ? id : "");
    } else {
        e = pk_sqlite_err(k, rc, "reading a note");
    }
    sqlite3_reset(st);
    return e;
}

/* ---- shared write steps ---- */

static pk_err *exec_stmt(pk_sqlite_conn *k, sqlite3_stmt *st, const char *what)
{
    int rc = pk_sqlite_step(k, st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? NULL : pk_sqlite_err(k, rc, what);
}

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

/* One audit row. `outcome` is "ok", "flagged" (the guard flagged the text; `guard` holds its verdict)
 * or the code of a refusal that reached the store. */
static pk_err *audit_row(sq_store *s, pk_sqlite_conn *k, const pk_op_ctx *c, const char *note_id,
                         const char *action, int64_t version, unsigned set, const char *outcome,
                         const char *guard)
{
    sqlite3_stmt *st;
    pk_err *e =
        pk_sqlite_prepare(k,
                          "INSERT INTO audit_log(note_id, action, version, fields, at, request_id, principal,"
                          " outcome, guard) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                          &st);
    if (e) return e;
    pk_buf f = PK_BUF_INIT;
    fields_json(set, &f);
    bind_text(st, 1, note_id);
    bind_text(st, 2, action);
    sqlite3_bind_int64(st, 3, version);
    bind_text(st, 4, f.data);
    sqlite3_bind_int64(st, 5, wall_now(s));
    bind_text(st, 6, ctx_request(c));
    bind_text(st, 7, ctx_principal(c));
    bind_text(st, 8, outcome);
    bind_text(st, 9, guard);
    e = exec_stmt(k, st, "writing the audit log");
    pk_buf_free(&f);
    return e;
}

static pk_err *audit(sq_store *s, pk_sqlite_conn *k, const pk_op_ctx *c, const char *note_id,
                     const char *action, int64_t version, unsigned set)
{
    return audit_row(s, k, c, note_id, action, version, set, "ok", NULL);
}

/* A write the store refused (unknown note, stale If-Match) is audited too, after the rollback, in
 * its own statement; a failure to audit it does not change the answer. */
static void audit_refusal(sq_store *s, pk_sqlite_conn *k, const pk_op_ctx *c, const char *note_id,
                          const char *action, unsigned set, const pk_err *e)
{
    if (!e || !k || (!pk_err_is(e, "not_found") && !pk_err_is(e, "precondition_failed"))) return;
    pk_err_free(audit_row(s, k, c, note_id, action, 0, set, e->code, NULL));
}

static pk_err *confidence_log(sq_store *s, pk_sqlite_conn *k, const pk_op_ctx *c, const char *note_id,
                              int64_t version, const double *old, double now_score)
{
    sqlite3_stmt *st;
    pk_err *e = pk_sqlite_prepare(k,
                                  "INSERT INTO confidence_history(note_id, version, old_score, new_score, at,"
                                  " request_id, principal) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                                  &st);
    if (e) return e;
    bind_text(st, 1, note_id);
    sqlite3_bind_int64(st, 2, version);
    if (old)
        sqlite3_bind_double(st, 3, *old);
    else
        sqlite3_bind_null(st, 3);
    sqlite3_bind_double(st, 4, now_score);
    sqlite3_bind_int64(st, 5, wall_now(s));
    bind_text(st, 6, ctx_request(c));
    bind_text(st, 7, ctx_principal(c));
    return exec_stmt(k, st, "writing the confidence history");
}

static pk_err *tags_write(pk_sqlite_conn *k, sqlite3_int64 seq, const pk_note_canon *cn, bool replace)
{
    sqlite3_stmt *st;
    pk_err *e;
    if (replace) {
        if ((e = pk_sqlite_prepare(k, "DELETE FROM note_tags WHERE note_seq = ?1", &st))) return e;
        sqlite3_bind_int64(st, 1, seq);
        if ((e = exec_stmt(k, st, "replacing tags"))) return e;
    }
    if ((e = pk_sqlite_prepare(k, "INSERT OR IGNORE INTO note_tags(tag, note_seq) VALUES (?1, ?2)", &st)))
        return e;
    for (size_t i = 0; i < cn->ntags; i++) {
        bind_text(st, 1, cn->tags[i]);
        sqlite3_bind_int64(st, 2, seq);
        if ((e = exec_stmt(k, st, "writing tags"))) return e;
    }
    return NULL;
}

/* ---- migrate, ping ---- */

static pk_err *user_version(pk_sqlite_conn *k, int *v)
{
    int64_t x;
    pk_err *e = pk_sqlite_scalar(k, "PRAGMA user_version", &x, "reading the schema version");
    *v = (int)x;
    return e;
}

static pk_err *migrate_impl(pk_sqlite_conn *k, int *from, int *to)
{
    int v;
    pk_err *e = user_version(k, &v);
    if (e) return e;
    if (from) *from = v;
    if (to) *to = v;
    if (v > pk_sqlite_migration_count)
        return pk_err_new("store_error", 500,
                          "the database schema (version %d) is newer than this binary supports (%d)", v,
                          pk_sqlite_migration_count);
    for (; v < pk_sqlite_migration_count; v++) {
        if ((e = pk_sqlite_begin(k, true))) return e;
        char bump[64];
        snprintf(bump, sizeof bump, "PRAGMA user_version = %d", v + 1);
        int rc = pk_sqlite_exec(k, pk_sqlite_migrations[v]);
        if (rc == SQLITE_OK) rc = pk_sqlite_exec(k, bump);
        if (rc != SQLITE_OK) {
            e = pk_sqlite_err(k, rc, "applying a schema migration");
            pk_sqlite_rollback(k);
            return e;
        }
        if ((e = pk_sqlite_commit(k))) {
            pk_sqlite_rollback(k);
            return e;
        }
        if (to) *to = v + 1;
    }
    return NULL;
}

static pk_err *sq_migrate(pk_store *ps, int *from, int *to)
{
    sq_store *s = (sq_store *)ps;
    int64_t t0 = pk_clock_now(s->clock);
    pk_sqlite_conn *k;
    pk_err *e = op_begin(s, NULL, true, &k);
    if (!e) e = migrate_impl(k, from, to);
    return op_end(s, "migrate", t0, k, e);
}

static pk_err *sq_ping(pk_store *ps, const pk_op_ctx *c)
{
    sq_store *s = (sq_store *)ps;
    int64_t t0 = pk_clock_now(s->clock);
    pk_sqlite_conn *k;
    pk_err *e = op_begin(s, c, false, &k);
    int v = 0;
    if (!e) e = user_version(k, &v);
    if (!e && v != pk_sqlite_migration_count)
        e = pk_err_new("store_error", 503,
                       "the database schema is at version %d, expected %d: run `pake migrate`", v,
                       pk_sqlite_migration_count);
    return op_end(s, "ping", t0, k, e);
}

/* ---- notes: create, get, update, delete ---- */

static const char *or_default(const pk_note_input *in, unsigned bit, const char *v, const char *def)
{
    return (in->set & bit) ? v : def;
}

static pk_err *create_impl(sq_store *s, pk_sqlite_conn *k, const pk_op_ctx *c, const pk_note_input *in,
                           const pk_note_canon *cn, pk_buf *out)
{
    char id[PK_UUID_LEN];
    pk_uuid7(id);
    double conf = (in->set & PK_NF_CONFIDENCE) ? in->confidence_score : 0.5;
    int64_t now = wall_now(s);
    sqlite3_stmt *st;
    pk_err *e = pk_sqlite_prepare(
        k,
        "INSERT INTO notes(id, title, content, type, status, verification_status,"
        " source_uri, tags, metadata, confidence_score, ai_summary, human_notes, guard,"
        " flagged, created_at, updated_at, version)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15, 1)",
        &st);
    if (e) return e;
    bind_text(st, 1, id);
    bind_text(st, 2, in->title);
    bind_text(st, 3, or_default(in, PK_NF_CONTENT, in->content, ""));
    bind_text(st, 4, or_default(in, PK_NF_TYPE, in->type, "note"));
    bind_text(st, 5, or_default(in, PK_NF_STATUS, in->status, "active"));
    bind_text(st, 6, or_default(in, PK_NF_VERIFICATION, in->verification_status, "pending"));
    bind_text(st, 7, or_default(in, PK_NF_SOURCE_URI, in->source_uri, NULL));
    bind_text(st, 8, cn->tags_json ? cn->tags_json : "[]");
    bind_text(st, 9, cn->metadata_json ? cn->metadata_json : "{}");
    sqlite3_bind_double(st, 10, conf);
    bind_text(st, 11, or_default(in, PK_NF_AI_SUMMARY, in->ai_summary, NULL));
    bind_text(st, 12, or_default(in, PK_NF_HUMAN_NOTES, in->human_notes, NULL));
    bind_text(st, 13, cn->guard_json);
    sqlite3_bind_int(st, 14, cn->flagged);
    sqlite3_bind_int64(st, 15, now);
    if ((e = exec_stmt(k, st, "inserting a note"))) return e;
    sqlite3_int64 seq = sqlite3_last_insert_rowid(pk_sqlite_db(k));
    if ((e = tags_write(k, seq, cn, false))) return e;
    if ((e = audit_row(s, k, c, id, "create", 1, in->set, cn->flagged ? "flagged" : "ok",
                       cn->flagged ? cn->guard_json : NULL)))
        return e;
    if ((e = confidence_log(s, k, c, id, 1, NULL, conf))) return e;
    return note_read(k, "n.seq = ?1", seq, NULL, out, NULL);
}

static pk_err *sq_note_create(pk_store *ps, const pk_op_ctx *c, const pk_note_input *in, pk_buf *out)
{
    sq_store *s = (sq_store *)ps;
    int64_t t0 = pk_clock_now(s->clock);
    pk_note_canon cn;
    pk_err *e = pk_note_input_check(in, true, &cn);
    pk_sqlite_conn *k = NULL;
    if (!e) e = op_begin(s, c, true, &k);
    if (!e) e = pk_sqlite_begin(k, true);
    if (!e) {
        pk_buf tmp = PK_BUF_INIT;
        e = create_impl(s, k, c, in, &cn, &tmp);
        if (!e) e = pk_sqlite_commit(k);
        if (e)
            pk_sqlite_rollback(k);
        else
            pk_buf_append(out, tmp.data, tmp.len);
        pk_buf_free(&tmp);
    }
    pk_note_canon_free(&cn);
    return op_end(s, "note_create", t0, k, e);
}

static pk_err *sq_note_get(pk_store *ps, const pk_op_ctx *c, const char *id, pk_buf *out, int64_t *version)
{
    sq_store *s = (sq_store *)ps;
    int64_t t0 = pk_clock_now(s->clock);
    pk_sqlite_conn *k;
    pk_err *e = op_begin(s, c, false, &k);
    if (!e) {
        pk_buf tmp = PK_BUF_INIT;
        e = note_read(k, "n.id = ?1", 0, id, &tmp, version);
        if (!e) pk_buf_append(out, tmp.data, tmp.len);
        pk_buf_free(&tmp);
    }
    return op_end(s, "note_get", t0, k, e);
}

typedef struct note_head {
    sqlite3_int64 seq;
    int64_t version;
    double confidence;
} note_head;

/* Finds the note and checks If-Match. */
static pk_err *head_read(pk_sqlite_conn *k, const char *id, int64_t if_version, note_head *h)
{
    sqlite3_stmt *st;
    pk_err *e = pk_sqlite_prepare(k, "SELECT seq, version, confidence_score FROM notes WHERE id = ?1", &st);
    if (e) return e;
    bind_text(st, 1, id);
    int rc = pk_sqlite_step(k, st);
    if (rc == SQLITE_ROW) {
        h->seq = sqlite3_column_int64(st, 0);
        h->version = sqlite3_column_int64(st, 1);
        h->confidence = sqlite3_column_double(st, 2);
    }
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) return pk_err_not_found("note %s not found", id);
    if (rc != SQLITE_ROW) return pk_sqlite_err(k, rc, "reading a note");
    if (if_version > 0 && if_version != h->version) {
        e = pk_err_new("precondition_failed", 412, "the note is at version %lld, not %lld",
                       (long long)h->version, (long long)if_version);
        pk_buf x = PK_BUF_INIT;
        pk_buf_printf(&x, "\"current_version\":%lld", (long long)h->version);
        e->extra_json = pk_buf_steal(&x, NULL);
        return e;
    }
    return NULL;
}

/* Growable list of bound values for SQL built at run time; parameters are numbered ?1, ?2, ... */
typedef struct qb {
    pk_buf sql;
    struct {
        int type; /* SQLITE_TEXT, SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_NULL */
        const char *s;
        int64_t i;
        double d;
    } v[96];
    int n;
} qb;

static void qb_sql(qb *b, const char *s)
{
    pk_buf_puts(&b->sql, s);
}
static int qb_next(qb *b)
{
    if (b->n >= (int)(sizeof b->v / sizeof b->v[0])) abort(); /* bounded by the query limits below */
    pk_buf_printf(&b->sql, "?%d", b->n + 1);
    return b->n++;
}
static void qb_text(qb *b, const char *s)
{
    int i = qb_next(b);
    b->v[i].type = s ? SQLITE_TEXT : SQLITE_NULL;
    b->v[i].s = s;
}
static void qb_int(qb *b, int64_t v)
{
    int i = qb_next(b);
    b->v[i].type = SQLITE_INTEGER;
    b->v[i].i = v;
}
static void qb_double(qb *b, double v)
{
    int i = qb_next(b);
    b->v[i].type = SQLITE_FLOAT;
    b->v[i].d = v;
}

static pk_err *qb_prepare(qb *b, pk_sqlite_conn *k, sqlite3_stmt **st)
{
    pk_err *e = pk_sqlite_prepare(k, b->sql.data, st);
    if (e) return e;
    for (int i = 0; i < b->n; i++) {
        switch (b->v[i].type) {
        case SQLITE_TEXT:
            sqlite3_bind_text(*st, i + 1, b->v[i].s, -1, SQLITE_STATIC);
            break;
        case SQLITE_INTEGER:
            sqlite3_bind_int64(*st, i + 1, b->v[i].i);
            break;
        case SQLITE_FLOAT:
            sqlite3_bind_double(*st, i + 1, b->v[i].d);
            break;
        default:
            sqlite3_bind_null(*st, i + 1);
        }
    }
    return NULL;
}

static void set_text(qb *b, const char *col, const char *v)
{
    pk_buf_printf(&b->sql, ", %s = ", col);
    qb_text(b, v);
}

static pk_err *update_impl(sq_store *s, pk_sqlite_conn *k, const pk_op_ctx *c, const char *id,
                           int64_t if_version, const pk_note_input *in, const pk_note_canon *cn, pk_buf *out)
{
    note_head h;
    pk_err *e = head_read(k, id, if_version, &h);
    if (e) return e;
    unsigned set = in->set;
    if (set == 0) return note_read(k, "n.seq = ?1", h.seq, NULL, out, NULL);
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
        qb_int(&b, cn->flagged);
    }
    if (set & PK_NF_CONFIDENCE) {
        qb_sql(&b, ", confidence_score = ");
        qb_double(&b, in->confidence_score);
    }
    qb_sql(&b, " WHERE seq = ");
    qb_int(&b, h.seq);
    sqlite3_stmt *st;
    e = qb_prepare(&b, k, &st);
    if (!e) e = exec_stmt(k, st, "updating a note");
    pk_buf_free(&b.sql);
    if (e) return e;
    if ((set & PK_NF_TAGS) && (e = tags_write(k, h.seq, cn, true))) return e;
    if ((e = audit_row(s, k, c, id, "update", h.version + 1, set, cn->flagged ? "flagged" : "ok",
                       cn->flagged ? cn->guard_json : NULL)))
        return e;
    if ((set & PK_NF_CONFIDENCE) && in->confidence_score != h.confidence &&
        (e = confidence_log(s, k, c, id, h.version + 1, &h.confidence, in->confidence_score)))
        return e;
    return note_read(k, "n.seq = ?1", h.seq, NULL, out, NULL);
}

static pk_err *sq_note_update(pk_store *ps, const pk_op_ctx *c, const char *id, int64_t if_version,
                              const pk_note_input *in, pk_buf *out)
{
    sq_store *s = (sq_store *)ps;
    int64_t t0 = pk_clock_now(s->clock);
    pk_note_canon cn;
    pk_err *e = pk_note_input_check(in, false, &cn);
    pk_sqlite_conn *k = NULL;
    if (!e) e = op_begin(s, c, true, &k);
    if (!e) e = pk_sqlite_begin(k, true);
    if (!e) {
        pk_buf tmp = PK_BUF_INIT;
        e = update_impl(s, k, c, id, if_version, in, &cn, &tmp);
        if (!e) e = pk_sqlite_commit(k);
        if (e) {
            pk_sqlite_rollback(k);
            audit_refusal(s, k, c, id, "update", in->set, e);
        } else
            pk_buf_append(out, tmp.data, tmp.len);
        pk_buf_free(&tmp);
    }
    pk_note_canon_free(&cn);
    return op_end(s, "note_update", t0, k, e);
}

static pk_err *delete_impl(sq_store *s, pk_sqlite_conn *k, const pk_op_ctx *c, const char *id,
                           int64_t if_version)
{
    note_head h;
    pk_err *e = head_read(k, id, if_version, &h);
    if (e) return e;
    sqlite3_stmt *st;
    if ((e = pk_sqlite_prepare(k, "DELETE FROM notes WHERE seq = ?1", &st))) return e;
    sqlite3_bind_int64(st, 1, h.seq);
    if ((e = exec_stmt(k, st, "deleting a note"))) return e;
    return audit(s, k, c, id, "delete", h.version, 0);
}

static pk_err *sq_note_delete(pk_store *ps, const pk_op_ctx *c, const char *id, int64_t if_version)
{
    sq_store *s = (sq_store *)ps;
    int64_t t0 = pk_clock_now(s->clock);
    pk_sqlite_conn *k;
    pk_err *e = op_begin(s, c, true, &k);
    if (!e) e = pk_sqlite_begin(k, true);
    if (!e) {
        e = delete_impl(s, k, c, id, if_version);
        if (!e) e = pk_sqlite_commit(k);
        if (e) {
            pk_sqlite_rollback(k);
            audit_refusal(s, k, c, id, "delete", 0, e);
        }
    }
    return op_end(s, "note_delete", t0, k, e);
}

/* ---- list and search ---- */

typedef struct sort_spec {
    const char *col; /* NULL: relevance */
    int colidx;      /* column of the sort value in NOTE_COLS */
    bool asc;
    char kind[3]; /* cursor kind: column letter + direction */
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
        sp->col = "created_at", sp->colidx = C_CREATED;
        break;
    case PK_SORT_UPDATED:
        sp->col = "updated_at", sp->colidx = C_UPDATED;
        break;
    case PK_SORT_TITLE:
        sp->col = "title", sp->colidx = C_TITLE;
        break;
    case PK_SORT_CONFIDENCE:
        sp->col = "confidence_score", sp->colidx = C_CONF;
        break;
    default: /* relevance */
        break;
    }
    return NULL;
}

/* Time filters compare at the precision the API shows (milliseconds: timestamps are stored in ns but
 * rendered as RFC 3339 with 3 decimals). Comparing raw ns made created_after=<a note's created_at>
 * return that very note (its hidden sub-millisecond part is greater). With ms = 1e6 ns:
 *   shown(col) > v  <=>  col >= (floor(v/ms) + 1) * ms        shown(col) < v  <=>  col < ceil(v/ms) * ms */
static void time_filter(qb *b, const char *a, const char *col, const char *op, int64_t v)
{
    if (!v) return;
    const int64_t ms = 1000000;
    int64_t fl = v / ms - (v % ms < 0 ? 1 : 0); /* floor(v / ms) */
    bool after = op[0] == '>';
    int64_t bound = after ? (fl + 1) * ms : (v % ms ? fl + 1 : fl) * ms;
    pk_buf_printf(&b->sql, " AND %s.%s %s ", a, col, after ? ">=" : "<");
    qb_int(b, bound);
}

static void filters(qb *b, const pk_note_query *q, const char *a)
{
    if (q->type) pk_buf_printf(&b->sql, " AND %s.type = ", a), qb_text(b, q->type);
    if (q->status) pk_buf_printf(&b->sql, " AND %s.status = ", a), qb_text(b, q->status);
    if (q->verification_status)
        pk_buf_printf(&b->sql, " AND %s.verification_status = ", a), qb_text(b, q->verification_status);
    for (size_t i = 0; i < q->ntags_all; i++) {
        qb_sql(b, " AND EXISTS (SELECT 1 FROM note_tags t WHERE t.tag = ");
        qb_text(b, q->tags_all[i]);
        pk_buf_printf(&b->sql, " AND t.note_seq = %s.seq)", a);
    }
    if (q->ntags_any) {
        pk_buf_printf(&b->sql,
                      " AND EXISTS (SELECT 1 FROM note_tags t WHERE t.note_seq = %s.seq AND t.tag IN (", a);
        for (size_t i = 0; i < q->ntags_any; i++) {
            if (i) qb_sql(b, ", ");
            qb_text(b, q->tags_any[i]);
        }
        qb_sql(b, "))");
    }
    if (q->has_min_confidence)
        pk_buf_printf(&b->sql, " AND %s.confidence_score >= ", a), qb_double(b, q->min_confidence);
    time_filter(b, a, "created_at", ">", q->created_after);
    time_filter(b, a, "created_at", "<", q->created_before);
    time_filter(b, a, "updated_at", ">", q->updated_after);
    time_filter(b, a, "updated_at", "<", q->updated_before);
    if (q->flagged >= 0) pk_buf_printf(&b->sql, " AND %s.flagged = ", a), qb_int(b, q->flagged ? 1 : 0);
}

/* Adds "AND (a.col, a.seq) < (value, seq)" for the cursor; `value` must outlive the statement. */
static pk_err *keyset(qb *b, const sort_spec *sp, const char *a, const char *cursor, char **value)
{
    if (!cursor) return NULL;
    int64_t seq;
    pk_err *e = pk_cursor_decode(cursor, sp->kind, &seq, value);
    if (e) return e;
    pk_buf_printf(&b->sql, " AND (%s.%s, %s.seq) %s (", a, sp->col, a, sp->asc ? ">" : "<");
    char *end = NULL;
    errno = 0;
    if (sp->colidx == C_TITLE) {
        qb_text(b, *value);
    } else if (sp->colidx == C_CONF) {
        double d = strtod(*value, &end);
        if (end == *value || *end || !isfinite(d)) return pk_note_query_invalid("cursor", "is malformed");
        qb_double(b, d);
    } else {
        long long v = strtoll(*value, &end, 10);
        if (end == *value || *end || errno) return pk_note_query_invalid("cursor", "is malformed");
        qb_int(b, v);
    }
    qb_sql(b, ", ");
    qb_int(b, seq);
    qb_sql(b, ")");
    return NULL;
}

static void order_by(qb *b, const sort_spec *sp, const char *a)
{
    const char *dir = sp->asc ? "ASC" : "DESC";
    pk_buf_printf(&b->sql, " ORDER BY %s.%s %s, %s.seq %s", a, sp->col, dir, a, dir);
}

static void cursor_value(sqlite3_stmt *st, const sort_spec *sp, pk_buf *v)
{
    pk_buf_reset(v);
    if (sp->colidx == C_TITLE)
        pk_buf_append(v, sqlite3_column_text(st, C_TITLE), (size_t)sqlite3_column_bytes(st, C_TITLE));
    else if (sp->colidx == C_CONF)
        pk_buf_printf(v, "%.17g", sqlite3_column_double(st, C_CONF));
    else
        pk_buf_printf(v, "%lld", (long long)sqlite3_column_int64(st, sp->colidx));
}

static int page_limit(const pk_note_query *q)
{
    return q->limit <= 0 ? 20 : q->limit > 100 ? 100 : q->limit;
}

/* Steps through up to limit+1 rows; search rows carry snippet and rank after the note columns. */
static pk_err *page_fill(pk_sqlite_conn *k, sqlite3_stmt *st, const pk_note_query *q, const sort_spec *sp,
                         bool search, int64_t offset, pk_page *out)
{
    int limit = page_limit(q);
    pk_buf items = PK_BUF_INIT, last = PK_BUF_INIT;
    pk_jw w;
    pk_jw_init(&w, &items);
    pk_jw_arr_open(&w);
    size_t count = 0;
    sqlite3_int64 last_seq = 0;
    bool more = false;
    int rc;
    while ((rc = pk_sqlite_step(k, st)) == SQLITE_ROW) {
        if (count == (size_t)limit) {
            more = true;
            break;
        }
        note_open(&w, st);
        if (search) {
            pk_jw_key(&w, "snippet");
            col_str(&w, st, C_NCOLS);
            pk_jw_key(&w, "score");
            pk_jw_num(&w, -sqlite3_column_double(st, C_NCOLS + 1));
        }
        pk_jw_obj_close(&w);
        count++;
        last_seq = sqlite3_column_int64(st, C_SEQ);
        if (sp->col) cursor_value(st, sp, &last);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        pk_buf_free(&items);
        pk_buf_free(&last);
        return pk_sqlite_err(k, rc, search ? "searching notes" : "listing notes");
    }
    pk_jw_arr_close(&w);
    pk_page_free(out);
    out->items = items;
    out->count = count;
    if (more && sp->col) {
        out->next_cursor = pk_cursor_encode(sp->kind, last_seq, last.data);
    } else if (more) {
        char off[32];
        snprintf(off, sizeof off, "%lld", (long long)(offset + limit));
        out->next_cursor = pk_cursor_encode(sp->kind, 0, off);
    }
    pk_buf_free(&last);
    return NULL;
}

static pk_err *list_impl(pk_sqlite_conn *k, const pk_note_query *q, pk_page *out)
{
    sort_spec sp;
    pk_err *e = sort_of(q, false, &sp);
    if (e) return e;
    qb b = {0};
    char *cur = NULL;
    qb_sql(&b, "SELECT " NOTE_COLS("n") " FROM notes n WHERE 1");
    filters(&b, q, "n");
    e = keyset(&b, &sp, "n", q->cursor, &cur);
    if (!e) {
        order_by(&b, &sp, "n");
        qb_sql(&b, " LIMIT ");
        qb_int(&b, page_limit(q) + 1);
        sqlite3_stmt *st;
        e = qb_prepare(&b, k, &st);
        if (!e) e = page_fill(k, st, q, &sp, false, 0, out);
    }
    free(cur);
    pk_buf_free(&b.sql);
    return e;
}

/* ---- stored notes ----
 * With the search index on, the index keeps each note in the form a search page sends it: the note's
 * JSON object without its closing brace (the page appends snippet and score), preceded by a header
 * giving where the raw title, content and tags are (inside the JSON when escaping left them as they
 * are, else in a copy after it) for the snippets. It is written from the same row, in the same
 * transaction, as the note's postings (the index applies search_log, which names every insert, update
 * and delete: migration 5), so a search without filters answers from memory alone, and exactly what
 * reading the rows in the caller's snapshot would give (the index only answers while it reflects that
 * snapshot). About 1.1 KB per note of the benchmark corpus. */
enum { STORED_HDR = 7 * sizeof(uint32_t) }; /* title, content, tags (offset, length); card length */

/* The row's searchable text (title, content, tags: notes_fts's columns), valid while the row is. */
static void row_text(sqlite3_stmt *st, const char *text[PK_SEARCH_COLS], size_t lens[PK_SEARCH_COLS])
{
    static const int col_of[PK_SEARCH_COLS] = {C_TITLE, C_CONTENT, C_TAGS};
    for (int c = 0; c < PK_SEARCH_COLS; c++) {
        text[c] = (const char *)sqlite3_column_text(st, col_of[c]);
        lens[c] = (size_t)sqlite3_column_bytes(st, col_of[c]);
    }
}

/* Ends a hit's object opened by note_open (or taken from its stored form): its snippet and score. */
static pk_err *hit_tail(pk_fts_tok *tok, const pk_search_hits *h, const pk_search_hit *hit,
                        const char *const cols[PK_SEARCH_COLS], const size_t lens[PK_SEARCH_COLS],
                        pk_buf *snip, pk_buf *out)
{
    pk_buf_reset(snip);
    pk_err *e = pk_search_snippet(tok, h, hit, cols, lens, "<mark>", "</mark>", "...", 24, snip);
    if (e) return e;
    pk_buf_append(out, ",\"snippet\":\"", 12);
    pk_json_escape(out, snip->data ? snip->data : "", snip->len);
    pk_buf_append(out, "\",\"score\":", 10);
    pk_jw w;
    pk_jw_init(&w, out);
    w.after_key = true; /* the value of "score" */
    pk_jw_num(&w, hit->score);
    pk_buf_putc(out, '}');
    return NULL;
}

static void stored_row(sqlite3_stmt *st, const char *text[PK_SEARCH_COLS], size_t lens[PK_SEARCH_COLS],
                       pk_buf *stored)
{
    row_text(st, text, lens);
    uint32_t hdr[7] = {0};
    pk_buf_append(stored, hdr, sizeof hdr);
    size_t spans[PK_SEARCH_COLS][2];
    pk_jw w;
    pk_jw_init(&w, stored);
    note_open_spans(&w, st, spans);
    hdr[6] = (uint32_t)(stored->len - STORED_HDR);
    for (int c = 0; c < PK_SEARCH_COLS; c++) {
        size_t n = spans[c][1] - spans[c][0];
        if (text[c] && n == lens[c]) { /* escaping adds bytes: same length, same text */
            hdr[2 * c] = (uint32_t)spans[c][0];
        } else {
            hdr[2 * c] = (uint32_t)stored->len;
            pk_buf_append(stored, text[c] ? text[c] : "", lens[c]);
        }
        hdr[2 * c + 1] = (uint32_t)lens[c];
    }
    memcpy(stored->data, hdr, sizeof hdr);
}

static const pk_sqlite_search_rows STORED_ROWS = {NOTE_COLS("n"), C_NCOLS, stored_row};

typedef struct page_out {
    pk_fts_tok *tok;
    pk_buf *items, *snip;
    size_t count;
} page_out;

/* One hit of a page from its stored note: the note, its snippet and score. */
static pk_err *emit_stored(void *ctx, const pk_search_hits *h, const pk_search_hit *hit, const void *stored,
                           size_t n)
{
    page_out *o = ctx;
    uint32_t hdr[7];
    if (n < STORED_HDR) return pk_err_new("store_error", 500, "a stored note is damaged");
    memcpy(hdr, stored, sizeof hdr);
    const char *base = stored;
    const char *cols[PK_SEARCH_COLS];
    size_t lens[PK_SEARCH_COLS];
    for (int c = 0; c < PK_SEARCH_COLS; c++) {
        cols[c] = base + hdr[2 * c];
        lens[c] = hdr[2 * c + 1];
    }
    size_t mark = o->items->len;
    if (o->count) pk_buf_putc(o->items, ',');
    pk_buf_append(o->items, base + STORED_HDR, hdr[6]);
    pk_err *e = hit_tail(o->tok, h, hit, cols, lens, o->snip, o->items);
    if (e) {
        o->items->len = mark; /* the page is dropped anyway; keep it well formed */
        return e;
    }
    o->count++;
    return NULL;
}

/* Whether the query has filters (they are SQL: only the row can tell whether a note passes). */
static bool has_filters(const pk_note_query *q)
{
    qb b = {0};
    filters(&b, q, "n");
    bool f = b.n > 0 || b.sql.len > 0;
    pk_buf_free(&b.sql);
    return f;
}

/* Rows of the hits are read FETCH_BATCH at a time with one statement ("seq IN (?, ..)"): one statement
 * run per batch instead of one per hit (a statement's start and reset cost about what reading a row
 * does). Unused slots are bound to -1, which no note has. */
enum { FETCH_BATCH = 24 };

/* "SELECT <cols> FROM notes n WHERE 1 <the query's filters> AND n.seq IN (..FETCH_BATCH params..)";
 * *first = the index of the first IN parameter. */
static pk_err *fetch_stmt(pk_sqlite_conn *k, const pk_note_query *q, const char *cols, sqlite3_stmt **st,
                          int *first)
{
    qb b = {0};
    qb_sql(&b, "SELECT ");
    qb_sql(&b, cols);
    qb_sql(&b, " FROM notes n WHERE 1");
    filters(&b, q, "n");
    qb_sql(&b, " AND n.seq IN (");
    *first = b.n + 1;
    for (int i = 0; i < FETCH_BATCH; i++) {
        if (i) qb_sql(&b, ",");
        qb_int(&b, -1);
    }
    qb_sql(&b, ")");
    pk_err *e = qb_prepare(&b, k, st);
    pk_buf_free(&b.sql);
    return e;
}

/* Renders the row's note with its snippet and score (one JSON object) into out. */
static pk_err *render_hit(pk_fts_tok *tok, const pk_search_hits *h, const pk_search_hit *hit,
                          sqlite3_stmt *st, pk_buf *snip, pk_buf *out)
{
    pk_jw w;
    pk_jw_init(&w, out);
    note_open(&w, st);
    const char *cols[PK_SEARCH_COLS];
    size_t lens[PK_SEARCH_COLS];
    row_text(st, cols, lens);
    return hit_tail(tok, h, hit, cols, lens, snip, out);
}

/* Relevance pages from the in-memory index: hits in rank order, read back (with the query's filters)
 * in the caller's read transaction a batch at a time; snippets built from the row's text. The page is
 * the passing hits [offset, offset + limit); a next cursor is given when one more passing hit exists
 * (without filters every hit passes: the index reflects exactly this snapshot). *served is false
 * when the index cannot answer (not ready, or a prefix/phrase query): the caller runs FTS5. */
static pk_err *search_indexed(sq_store *s, pk_sqlite_conn *k, const pk_note_query *q, const char *kind,
                              int64_t offset, bool *served, pk_page *out)
{
    *served = false;
    pk_search_term t[PK_SEARCH_TERMS_MAX];
    size_t nt = 0;
    pk_err *e = pk_search_terms(q->text, t, &nt);
    if (e) return e;
    pk_fts_tok tok;
    if ((e = pk_fts_tokenizer_instance(pk_sqlite_search_tokenizer(s->search), &tok))) return e;
    int limit = page_limit(q);
    pk_buf items = PK_BUF_INIT, snip = PK_BUF_INIT, slot[FETCH_BATCH];
    pk_buf_reserve(&items, (size_t)limit * 1536); /* a page's notes, most of them: few regrowths */
    pk_buf_putc(&items, '[');
    pk_search_hits h;
    bool ok = false, paged = false, more = false, filtered = has_filters(q);
    size_t count = 0, passed = 0, next = 0;
    if (!(e = pk_sqlite_begin(k, false))) {
        if (!filtered) { /* every hit is in the page's range: straight from the stored notes */
            page_out po = {&tok, &items, &snip, 0};
            paged = pk_sqlite_search_page(s->search, k, &tok, t, nt, (size_t)offset, (size_t)limit,
                                          emit_stored, &po, &more, &e);
            count = po.count;
        }
        if (!paged && !e) ok = pk_sqlite_search_query(s->search, k, &tok, t, nt, &h, &e);
    }
    sqlite3_stmt *st = NULL;
    int first = 0;
    if (ok && !e) e = fetch_stmt(k, q, NOTE_COLS("n"), &st, &first);
    size_t want = (size_t)offset + (size_t)limit; /* passing hits needed */
    bool present[FETCH_BATCH], rendered[FETCH_BATCH];
    for (int j = 0; j < FETCH_BATCH; j++)
        slot[j] = (pk_buf)PK_BUF_INIT;
    while (ok && !e && !more && next < h.n) {
        /* without filters exactly the rows still needed; with filters a whole batch (some may fail) */
        size_t nb = h.n - next < FETCH_BATCH ? h.n - next : FETCH_BATCH;
        if (!filtered && passed < want && want - passed < nb) nb = want - passed;
        if (passed >= want) {
            if (!filtered) { /* every remaining hit passes */
                more = true;
                break;
            }
            /* only whether one more passes: read seqs, render nothing */
            sqlite3_stmt *ex = NULL;
            int xfirst = 0;
            if ((e = fetch_stmt(k, q, "n.seq", &ex, &xfirst))) break;
            for (; !more && !e && next < h.n; next += nb) {
                nb = h.n - next < FETCH_BATCH ? h.n - next : FETCH_BATCH;
                if (next + nb > h.sorted)
                    pk_search_hits_rank(&h, next + nb > 2 * next ? next + nb : 2 * next);
                for (size_t j = 0; j < FETCH_BATCH; j++)
                    sqlite3_bind_int64(ex, xfirst + (int)j, j < nb ? h.hit[next + j].seq : -1);
                int rc = pk_sqlite_step(k, ex);
                if (rc == SQLITE_ROW)
                    more = true;
                else if (rc != SQLITE_DONE)
                    e = pk_sqlite_err(k, rc, "searching notes");
                sqlite3_reset(ex);
            }
            break;
        }
        if (next + nb > h.sorted) pk_search_hits_rank(&h, next + nb > want + 1 ? next + nb : want + 1);
        for (size_t j = 0; j < FETCH_BATCH; j++) {
            sqlite3_bind_int64(st, first + (int)j, j < nb ? h.hit[next + j].seq : -1);
            present[j] = rendered[j] = false;
        }
        int rc;
        while (!e && (rc = pk_sqlite_step(k, st)) == SQLITE_ROW) {
            int64_t seq = sqlite3_column_int64(st, C_SEQ);
            size_t j = 0;
            while (j < nb && h.hit[next + j].seq != seq)
                j++;
            if (j == nb) continue; /* cannot happen: the IN list holds these seqs only */
            present[j] = true;
            /* its rank among passing hits lies in [passed, passed + j]: render it unless that whole
             * range is outside the page */
            if (passed + j >= (size_t)offset && passed < want) {
                pk_buf_reset(&slot[j]);
                e = render_hit(&tok, &h, &h.hit[next + j], st, &snip, &slot[j]);
                rendered[j] = true;
            }
        }
        if (!e && rc != SQLITE_DONE) e = pk_sqlite_err(k, rc, "searching notes");
        sqlite3_reset(st);
        for (size_t j = 0; !e && j < nb; j++) {
            if (!present[j]) continue;
            if (passed >= want) {
                more = true;
                break;
            }
            if (passed++ < (size_t)offset) continue;
            if (!rendered[j]) abort(); /* the bound above guarantees it */
            if (count++) pk_buf_putc(&items, ',');
            pk_buf_append(&items, slot[j].data, slot[j].len);
        }
        next += nb;
    }
    pk_sqlite_rollback(k); /* read-only: ends the snapshot */
    if ((ok || paged) && !e) {
        pk_buf_putc(&items, ']');
        pk_page_free(out);
        out->items = items;
        out->count = count;
        if (more) {
            char off[32];
            snprintf(off, sizeof off, "%lld", (long long)(offset + limit));
            out->next_cursor = pk_cursor_encode(kind, 0, off);
        }
        *served = true;
    } else {
        pk_buf_free(&items);
    }
    pk_sqlite_search_count(s->search, *served);
    if (ok) pk_search_hits_free(&h);
    for (int j = 0; j < FETCH_BATCH; j++)
        pk_buf_free(&slot[j]);
    pk_buf_free(&snip);
    pk_fts_tok_free(&tok);
    return e;
}

static pk_err *search_impl(sq_store *s, pk_sqlite_conn *k, const pk_note_query *q, pk_page *out)
{
    sort_spec sp;
    pk_err *e = sort_of(q, true, &sp);
    if (e) return e;
    if (!q->text) return pk_note_query_invalid("q", "a search needs query text");
    pk_buf match = PK_BUF_INIT;
    if ((e = pk_fts5_query(q->text, &match))) return e;
    qb b = {0};
    char *cur = NULL;
    int64_t offset = 0;
    if (!sp.col && q->cursor) { /* relevance pages are offsets (rank is a float that ties) */
        int64_t zero;
        e = pk_cursor_decode(q->cursor, sp.kind, &zero, &cur);
        char *end = NULL;
        if (!e) offset = strtoll(cur, &end, 10);
        if (!e && (end == cur || *end || offset < 0 || offset > 100000))
            e = pk_note_query_invalid("cursor", "is malformed");
    }
    bool served = false;
    if (!e && !sp.col && s->search) e = search_indexed(s, k, q, sp.kind, offset, &served, out);
    if (e || served) {
        free(cur);
        pk_buf_free(&match);
        return e;
    }
    if (!sp.col) { /* relevance: FTS5 orders by rank and stops at the limit; snippets for those rows only */
        qb_sql(&b, "SELECT " NOTE_COLS("n") ", " SNIPPET ", notes_fts.rank FROM notes_fts CROSS JOIN notes n"
                                            " ON n.seq = notes_fts.rowid WHERE notes_fts MATCH ");
        qb_text(&b, match.data);
        filters(&b, q, "n");
        qb_sql(&b, " ORDER BY notes_fts.rank LIMIT ");
        qb_int(&b, page_limit(q) + 1);
        qb_sql(&b, " OFFSET ");
        qb_int(&b, offset);
    } else {
        /* another order: pick the page's rows without snippets, then one more pass over the matches
         * computes snippet and rank for those rows only. The unary + keeps SQLite from turning the IN
         * into one FTS5 query per row (measured 1.5x slower). */
        qb_sql(&b,
               "WITH page AS (SELECT m.seq AS s FROM notes_fts CROSS JOIN notes m ON m.seq = notes_fts.rowid"
               " WHERE notes_fts MATCH ");
        qb_text(&b, match.data);
        filters(&b, q, "m");
        e = keyset(&b, &sp, "m", q->cursor, &cur);
        order_by(&b, &sp, "m");
        qb_sql(&b, " LIMIT ");
        qb_int(&b, page_limit(q) + 1);
        qb_sql(&b,
               ") SELECT " NOTE_COLS("n") ", " SNIPPET ", notes_fts.rank FROM notes_fts CROSS JOIN notes n"
                                          " ON n.seq = notes_fts.rowid WHERE notes_fts MATCH ?1 AND "
                                          "+notes_fts.rowid IN (SELECT s FROM page)");
        order_by(&b, &sp, "n");
    }
    if (!e) {
        sqlite3_stmt *st;
        e = qb_prepare(&b, k, &st);
        if (!e) e = page_fill(k, st, q, &sp, true, offset, out);
    }
    free(cur);
    pk_buf_free(&b.sql);
    pk_buf_free(&match);
    return e;
}

static pk_err *sq_note_list(pk_store *ps, const pk_op_ctx *c, const pk_note_query *q, pk_page *out)
{
    sq_store *s = (sq_store *)ps;
    int64_t t0 = pk_clock_now(s->clock);
    pk_sqlite_conn *k;
    pk_err *e = op_begin(s, c, false, &k);
    if (!e) e = list_impl(k, q, out);
    return op_end(s, "note_list", t0, k, e);
}

static pk_err *sq_note_search(pk_store *ps, const pk_op_ctx *c, const pk_note_query *q, pk_page *out)
{
    sq_store *s = (sq_store *)ps;
    int64_t t0 = pk_clock_now(s->clock);
    pk_sqlite_conn *k;
    pk_err *e = op_begin(s, c, false, &k);
    if (!e) e = search_impl(s, k, q, out);
    return op_end(s, "note_search", t0, k, e);
}

/* ---- history ---- */

static pk_err *history_impl(pk_sqlite_conn *k, const char *id, pk_buf *out)
{
    sqlite3_stmt *ev, *ch;
    pk_err *e = pk_sqlite_prepare(k,
                                  "SELECT action, version, fields, at, request_id, principal, outcome, guard"
                                  " FROM audit_log"
                                  " WHERE note_id = ?1 ORDER BY seq",
                                  &ev);
    if (!e)
        e = pk_sqlite_prepare(k,
                              "SELECT version, old_score, new_score, at, request_id, principal"
                              " FROM confidence_history WHERE note_id = ?1 ORDER BY seq",
                              &ch);
    if (e) return e;
    bind_text(ev, 1, id);
    bind_text(ch, 1, id);
    pk_jw w;
    pk_jw_init(&w, out);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "note_id");
    pk_jw_str(&w, id);
    pk_jw_key(&w, "events");
    pk_jw_arr_open(&w);
    int rc, n = 0;
    while ((rc = pk_sqlite_step(k, ev)) == SQLITE_ROW) {
        n++;
        pk_jw_obj_open(&w);
        pk_jw_key(&w, "action");
        col_str(&w, ev, 0);
        pk_jw_key(&w, "version");
        pk_jw_int(&w, sqlite3_column_int64(ev, 1));
        pk_jw_key(&w, "fields");
        col_raw(&w, ev, 2);
        pk_jw_key(&w, "at");
        col_time(&w, ev, 3);
        pk_jw_key(&w, "request_id");
        col_str(&w, ev, 4);
        pk_jw_key(&w, "principal");
        col_str(&w, ev, 5);
        pk_jw_key(&w, "outcome");
        col_str(&w, ev, 6);
        if (sqlite3_column_type(ev, 7) != SQLITE_NULL) {
            pk_jw_key(&w, "guard");
            col_raw(&w, ev, 7);
        }
        pk_jw_obj_close(&w);
    }
    if (rc != SQLITE_DONE) return pk_sqlite_err(k, rc, "reading the audit log");
    if (n == 0) return pk_err_not_found("note %s not found", id);
    pk_jw_arr_close(&w);
    pk_jw_key(&w, "confidence_history");
    pk_jw_arr_open(&w);
    while ((rc = pk_sqlite_step(k, ch)) == SQLITE_ROW) {
        pk_jw_obj_open(&w);
        pk_jw_key(&w, "version");
        pk_jw_int(&w, sqlite3_column_int64(ch, 0));
        pk_jw_key(&w, "from");
        col_num_or_null(&w, ch, 1);
        pk_jw_key(&w, "to");
        pk_jw_num(&w, sqlite3_column_double(ch, 2));
        pk_jw_key(&w, "at");
        col_time(&w, ch, 3);
        pk_jw_key(&w, "request_id");
        col_str(&w, ch, 4);
        pk_jw_key(&w, "principal");
        col_str(&w, ch, 5);
        pk_jw_obj_close(&w);
    }
    if (rc != SQLITE_DONE) return pk_sqlite_err(k, rc, "reading the confidence history");
    pk_jw_arr_close(&w);
    pk_jw_obj_close(&w);
    return NULL;
}

static pk_err *sq_note_history(pk_store *ps, const pk_op_ctx *c, const char *id, pk_buf *out)
{
    sq_store *s = (sq_store *)ps;
    int64_t t0 = pk_clock_now(s->clock);
    pk_sqlite_conn *k;
    pk_err *e = op_begin(s, c, false, &k);
    if (!e) e = pk_sqlite_begin(k, false); /* both tables from one snapshot */
    if (!e) {
        pk_buf tmp = PK_BUF_INIT;
        e = history_impl(k, id, &tmp);
        pk_sqlite_rollback(k);
        if (!e) pk_buf_append(out, tmp.data, tmp.len);
        pk_buf_free(&tmp);
    }
    return op_end(s, "note_history", t0, k, e);
}

/* ---- links ---- */

static pk_err *note_exists(pk_sqlite_conn *k, const char *id, bool *found)
{
    sqlite3_stmt *st;
    pk_err *e = pk_sqlite_prepare(k, "SELECT 1 FROM notes WHERE id = ?1", &st);
    if (e) return e;
    bind_text(st, 1, id);
    int rc = pk_sqlite_step(k, st);
    sqlite3_reset(st);
    *found = rc == SQLITE_ROW;
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? NULL : pk_sqlite_err(k, rc, "reading a note");
}

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

static pk_err *link_create_impl(sq_store *s, pk_sqlite_conn *k, const char *src, const char *dst,
                                const char *type, double strength, const char *meta, pk_buf *out)
{
    bool found;
    pk_err *e = note_exists(k, src, &found);
    if (e) return e;
    if (!found) return pk_err_not_found("note %s not found", src);
    if ((e = note_exists(k, dst, &found))) return e;
    if (!found) {
        e = pk_err_invalid("the link target does not exist");
        pk_err_add_field(e, "target_id", "no note has this id");
        return e;
    }
    char id[PK_UUID_LEN];
    pk_uuid7(id);
    int64_t now = wall_now(s);
    sqlite3_stmt *st;
    if ((e = pk_sqlite_prepare(
             k,
             "INSERT INTO links(id, source_id, target_id, type, strength, metadata, created_at)"
             " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
             &st)))
        return e;
    bind_text(st, 1, id);
    bind_text(st, 2, src);
    bind_text(st, 3, dst);
    bind_text(st, 4, type);
    sqlite3_bind_double(st, 5, strength);
    bind_text(st, 6, meta);
    sqlite3_bind_int64(st, 7, now);
    int rc = pk_sqlite_step(k, st);
    sqlite3_reset(st);
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
        return pk_err_new("conflict", 409, "a link of type %s from %s to %s already exists", type, src, dst);
    if (rc != SQLITE_DONE) return pk_sqlite_err(k, rc, "inserting a link");
    pk_jw w;
    pk_jw_init(&w, out);
    pk_store_link_json(&w, id, src, dst, type, strength, meta, strlen(meta), now);
    return NULL;
}

static pk_err *sq_link_create(pk_store *ps, const pk_op_ctx *c, const char *src, const char *dst,
                              const char *type, double strength, const char *metadata_json, pk_buf *out)
{
    sq_store *s = (sq_store *)ps;
    int64_t t0 = pk_clock_now(s->clock);
    char *meta = NULL;
    pk_sqlite_conn *k = NULL;
    pk_err *e = link_check(src, dst, type, strength, metadata_json, &meta);
    if (!e) e = op_begin(s, c, true, &k);
    if (!e) e = pk_sqlite_begin(k, true);
    if (!e) {
        pk_buf tmp = PK_BUF_INIT;
        e = link_create_impl(s, k, src, dst, type, strength, meta ? meta : "{}", &tmp);
        if (!e) e = pk_sqlite_commit(k);
        if (e)
            pk_sqlite_rollback(k);
        else
            pk_buf_append(out, tmp.data, tmp.len);
        pk_buf_free(&tmp);
    }
    free(meta);
    return op_end(s, "link_create", t0, k, e);
}

static pk_err *link_list_impl(pk_sqlite_conn *k, const char *id, pk_buf *out)
{
    bool found;
    pk_err *e = note_exists(k, id, &found);
    if (e) return e;
    if (!found) return pk_err_not_found("note %s not found", id);
    sqlite3_stmt *st;
    if ((e = pk_sqlite_prepare(
             k,
             "SELECT id, source_id, target_id, type, strength, metadata, created_at FROM links"
             " WHERE source_id = ?1 OR target_id = ?1 ORDER BY seq LIMIT 1000",
             &st)))
        return e;
    bind_text(st, 1, id);
    pk_jw w;
    pk_jw_init(&w, out);
    pk_jw_arr_open(&w);
    int rc;
    while ((rc = pk_sqlite_step(k, st)) == SQLITE_ROW) {
        pk_store_link_json(&w, (const char *)sqlite3_column_text(st, 0),
                           (const char *)sqlite3_column_text(st, 1), (const char *)sqlite3_column_text(st, 2),
                           (const char *)sqlite3_column_text(st, 3), sqlite3_column_double(st, 4),
                           (const char *)sqlite3_column_text(st, 5), (size_t)sqlite3_column_bytes(st, 5),
                           sqlite3_column_int64(st, 6));
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return pk_sqlite_err(k, rc, "listing links");
    pk_jw_arr_close(&w);
    return NULL;
}

static pk_err *sq_link_list(pk_store *ps, const pk_op_ctx *c, const char *id, pk_buf *out)
{
    sq_store *s = (sq_store *)ps;
    int64_t t0 = pk_clock_now(s->clock);
    pk_sqlite_conn *k;
    pk_err *e = op_begin(s, c, false, &k);
    if (!e) e = pk_sqlite_begin(k, false);
    if (!e) {
        pk_buf tmp = PK_BUF_INIT;
        e = link_list_impl(k, id, &tmp);
        pk_sqlite_rollback(k);
        if (!e) pk_buf_append(out, tmp.data, tmp.len);
        pk_buf_free(&tmp);
    }
    return op_end(s, "link_list", t0, k, e);
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

static pk_err *idem_begin_impl(sq_store *s, pk_sqlite_conn *k, const pk_op_ctx *c, const char *key,
                               const char *hash, pk_idem_state *state, int *status, pk_buf *body)
{
    int64_t now = wall_now(s);
    const char *who = ctx_principal(c) ? ctx_principal(c) : "";
    sqlite3_stmt *st;
    pk_err *e;
    /* expired records go first, so an old key behaves as a new one */
    if ((e = pk_sqlite_prepare(k, "DELETE FROM idempotency WHERE created_at < ?1", &st))) return e;
    sqlite3_bind_int64(st, 1, now - (int64_t)s->idem_ttl_s * 1000000000LL);
    if ((e = exec_stmt(k, st, "expiring idempotency records"))) return e;
    if ((e = pk_sqlite_prepare(k,
                               "SELECT request_hash, state, status, body, created_at FROM idempotency"
                               " WHERE principal = ?1 AND key = ?2",
                               &st)))
        return e;
    bind_text(st, 1, who);
    bind_text(st, 2, key);
    int rc = pk_sqlite_step(k, st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        sqlite3_reset(st);
        return pk_sqlite_err(k, rc, "reading an idempotency record");
    }
    bool take = rc == SQLITE_DONE;
    if (rc == SQLITE_ROW) {
        bool same = strcmp((const char *)sqlite3_column_text(st, 0), hash) == 0;
        bool done = sqlite3_column_int(st, 1) == 1;
        bool abandoned = sqlite3_column_int64(st, 4) < now - (int64_t)s->idem_lease_s * 1000000000LL;
        if (!same) {
            *state = PK_IDEM_MISMATCH;
        } else if (done) {
            *state = PK_IDEM_REPLAY;
            *status = sqlite3_column_int(st, 2);
            pk_buf_append(body, sqlite3_column_blob(st, 3), (size_t)sqlite3_column_bytes(st, 3));
        } else if (abandoned) {
            take = true;
        } else {
            *state = PK_IDEM_IN_PROGRESS;
        }
        if (!same && !done && abandoned) take = true; /* a stale claim does not block a new request */
    }
    sqlite3_reset(st);
    if (!take) return NULL;
    if ((e = pk_sqlite_prepare(
             k,
             "INSERT OR REPLACE INTO idempotency(principal, key, request_hash, state, created_at)"
             " VALUES (?1, ?2, ?3, 0, ?4)",
             &st)))
        return e;
    bind_text(st, 1, who);
    bind_text(st, 2, key);
    bind_text(st, 3, hash);
    sqlite3_bind_int64(st, 4, now);
    if ((e = exec_stmt(k, st, "claiming an idempotency key"))) return e;
    *state = PK_IDEM_NEW;
    return NULL;
}

static pk_err *sq_idem_begin(pk_store *ps, const pk_op_ctx *c, const char *key, const char *hash,
                             pk_idem_state *state, int *status, pk_buf *body)
{
    sq_store *s = (sq_store *)ps;
    int64_t t0 = pk_clock_now(s->clock);
    pk_sqlite_conn *k = NULL;
    pk_err *e = idem_key_check(key);
    if (!e) e = op_begin(s, c, true, &k);
    if (!e) e = pk_sqlite_begin(k, true);
    if (!e) {
        pk_buf tmp = PK_BUF_INIT;
        pk_idem_state st = PK_IDEM_NEW;
        int code = 0;
        e = idem_begin_impl(s, k, c, key, hash ? hash : "", &st, &code, &tmp);
        if (!e) e = pk_sqlite_commit(k);
        if (e) {
            pk_sqlite_rollback(k);
        } else {
            *state = st;
            if (status) *status = code;
            if (st == PK_IDEM_REPLAY) pk_buf_append(body, tmp.data, tmp.len);
        }
        pk_buf_free(&tmp);
    }
    return op_end(s, "idem_begin", t0, k, e);
}

/* Runs one statement that must change a row of an in-progress record. */
static pk_err *idem_change(sq_store *s, const pk_op_ctx *c, const char *op, const char *sql, const char *key,
                           int status, const char *body, size_t body_len)
{
    int64_t t0 = pk_clock_now(s->clock);
    pk_sqlite_conn *k = NULL;
    pk_err *e = idem_key_check(key);
    if (!e) e = op_begin(s, c, true, &k);
    sqlite3_stmt *st;
    if (!e) e = pk_sqlite_prepare(k, sql, &st);
    if (!e) {
        bind_text(st, 1, ctx_principal(c) ? ctx_principal(c) : "");
        bind_text(st, 2, key);
        if (body) {
            sqlite3_bind_int(st, 3, status);
            sqlite3_bind_blob(st, 4, body_len ? body : "", (int)body_len, SQLITE_STATIC);
        }
        e = exec_stmt(k, st, "updating an idempotency record");
        if (!e && sqlite3_changes(pk_sqlite_db(k)) == 0)
            e = pk_err_not_found("no idempotency record in progress for this key");
    }
    return op_end(s, op, t0, k, e);
}

static pk_err *sq_idem_finish(pk_store *ps, const pk_op_ctx *c, const char *key, int status, const char *body,
                              size_t body_len)
{
    if (body_len > INT_MAX) return pk_err_new("store_error", 500, "the response is too large to record");
    return idem_change((sq_store *)ps, c, "idem_finish",
                       "UPDATE idempotency SET state = 1, status = ?3, body = ?4"
                       " WHERE principal = ?1 AND key = ?2 AND state = 0",
                       key, status, body ? body : "", body_len);
}

static pk_err *sq_idem_abort(pk_store *ps, const pk_op_ctx *c, const char *key)
{
    return idem_change((sq_store *)ps, c, "idem_abort",
                       "DELETE FROM idempotency WHERE principal = ?1 AND key = ?2 AND state = 0", key, 0,
                       NULL, 0);
}

/* ---- open, close ---- */

static void sq_close(pk_store *ps)
{
    sq_store *s = (sq_store *)ps;
    if (!s) return;
    pk_sqlite_search_close(s->search);
    pk_sqlite_pool_close(s->pool);
    free(s);
}

static const pk_store_ops sq_ops = {
    .close = sq_close,
    .migrate = sq_migrate,
    .ping = sq_ping,
    .note_create = sq_note_create,
    .note_get = sq_note_get,
    .note_update = sq_note_update,
    .note_delete = sq_note_delete,
    .note_list = sq_note_list,
    .note_search = sq_note_search,
    .note_history = sq_note_history,
    .link_create = sq_link_create,
    .link_list = sq_link_list,
    .idem_begin = sq_idem_begin,
    .idem_finish = sq_idem_finish,
    .idem_abort = sq_idem_abort,
};

int pk_store_schema_version_latest(void)
{
    return pk_sqlite_migration_count;
}

/* mkdir -p */
static pk_err *make_dirs(const char *dir)
{
    char *p = strdup(dir);
    if (!p) abort();
    for (char *q = p + 1;; q++) {
        if (*q == '/' || !*q) {
            char saved = *q;
            *q = '\0';
            if (mkdir(p, 0750) != 0 && errno != EEXIST) {
                pk_err *e = pk_err_new("store_error", 503, "cannot create the data directory %s: %s", p,
                                       strerror(errno));
                free(p);
                return e;
            }
            *q = saved;
            if (!saved) break;
        }
    }
    free(p);
    return NULL;
}

pk_err *pk_store_open_sqlite(const pk_sqlite_config *cfg, bool no_migrate, pk_store **out)
{
    *out = NULL;
    if (!cfg || !cfg->data_dir || !cfg->data_dir[0])
        return pk_err_new("store_error", 500, "the SQLite store needs a data directory");
    if (sqlite3_threadsafe() == 0)
        return pk_err_new("store_error", 500, "SQLite was built without thread support");
    pk_err *e = make_dirs(cfg->data_dir);
    if (e) return e;
    sq_store *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->base.ops = &sq_ops;
    s->base.backend = "sqlite";
    s->clock = cfg->clock ? cfg->clock : pk_clock_real();
    s->wall = cfg->wall_clock ? cfg->wall_clock : pk_clock_wall();
    s->idem_ttl_s = cfg->idem_ttl_s > 0 ? cfg->idem_ttl_s : 86400;
    s->idem_lease_s = cfg->idem_lease_s > 0 ? cfg->idem_lease_s : 60;
    pk_buf path = PK_BUF_INIT;
    pk_buf_printf(&path, "%s/pake.db", cfg->data_dir);
    pk_sqlite_pool_config pc = {
        .path = path.data,
        .busy_timeout_ms = cfg->busy_timeout_ms > 0 ? cfg->busy_timeout_ms : 5000,
        .max_connections = cfg->max_connections > 0 ? cfg->max_connections : 8,
        .clock = s->clock,
    };
    e = pk_sqlite_pool_open(&pc, &s->pool);
    pk_buf_free(&path);
    if (!e && !no_migrate) e = sq_migrate(&s->base, NULL, NULL);
    if (!e && cfg->search_index) e = pk_sqlite_search_open(s->pool, &STORED_ROWS, &s->search);
    if (e) {
        sq_close(&s->base);
        return e;
    }
    *out = &s->base;
    return NULL;
}

void pk_store_sqlite_bind_metrics(pk_store *ps, struct pk_metrics *m)
{
    if (ps && strcmp(ps->backend, "sqlite") == 0) pk_sqlite_search_bind_metrics(((sq_store *)ps)->search, m);
}

bool pk_store_sqlite_search_ready(pk_store *ps, int timeout_ms)
{
    sq_store *s = (sq_store *)ps;
    return s->search && pk_sqlite_search_wait_ready(s->search, timeout_ms);
}

#ifdef PAKE_FAULT_INJECTION
void pk_store_sqlite_fail_at(pk_store *s, int n, int sqlite_rc)
{
    pk_sqlite_pool_fail_at(((sq_store *)s)->pool, n, sqlite_rc);
}
int pk_store_sqlite_calls(pk_store *s)
{
    return pk_sqlite_pool_calls(((sq_store *)s)->pool);
}
#endif
