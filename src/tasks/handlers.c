/*
 * The built-in task types.
 *
 *   noop            {"ms": 0..600000, "fail": bool, "fail_attempts": n, "fail_until": unix_ms,
 *                    "permanent": bool}
 *                   waits `ms` (checking for cancel/timeout/shutdown every 5 ms), then fails on purpose
 *                   when `fail` is true, the attempt number is <= fail_attempts, or the wall clock is
 *                   before fail_until (retryable unless `permanent`). For tests and benchmarks: the
 *                   result names the run (worker, pid, started_us, finished_us: wall microseconds), so
 *                   tests can check who ran a task and that runs never overlapped.
 *   note.summarize  {"note_id": "<uuid>"}: extractive summary of the note's content (pk_summarize),
 *                   stored in ai_summary through the store's update (the note's version moves).
 *   note.embed      {"note_id": "<uuid>"}: the local embedding of title + content into the embeddings
 *                   table; skipped when the text is unchanged; a deleted note drops its vector.
 *
 * Store calls carry the task id as request id (the audit log shows which task wrote) and the task's
 * timeout as deadline. A missing note or a malformed payload is not retryable; store errors keep the
 * store's retryable flag (busy, unavailable).
 */
#include "tasks/tasks_internal.h"
#include "core/clock.h"
#include "core/id.h"
#include "server/server.h"
#include "server/services.h"
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pk_err *stopped(pk_task_check_result r)
{
    switch (r) {
    case PK_TASK_STOP_CANCELLED:
        return pk_err_new("cancelled", 409, "the task was cancelled");
    case PK_TASK_STOP_TIMEOUT:
        return pk_err_new("deadline_exceeded", 504, "the task ran past its timeout");
    default:
        return pk_err_new("stopped", 503, "the worker is stopping");
    }
}

pk_err *pk_task_noop(pk_task_ctx *c, const pk_task *t, const cJSON *payload, pk_buf *result)
{
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(payload, "ms");
    const cJSON *fail = cJSON_GetObjectItemCaseSensitive(payload, "fail");
    const cJSON *fail_attempts = cJSON_GetObjectItemCaseSensitive(payload, "fail_attempts");
    const cJSON *permanent = cJSON_GetObjectItemCaseSensitive(payload, "permanent");
    const cJSON *fail_until = cJSON_GetObjectItemCaseSensitive(payload, "fail_until");
    if (ms && (!cJSON_IsNumber(ms) || ms->valuedouble < 0 || ms->valuedouble > 600000)) {
        pk_err *e = pk_err_invalid("noop: ms must be a number of milliseconds, 0..600000");
        return e;
    }
    int64_t wait_ns = ms ? (int64_t)(ms->valuedouble * 1e6) : 0;
    int64_t started_wall = pk_wall_ns();
    int64_t end = pk_mono_ns() + wait_ns;
    for (;;) {
        pk_task_check_result r =
            pk_task_check(c, wait_ns ? 1.0 - (double)(end - pk_mono_ns()) / (double)wait_ns : -1);
        if (r) return stopped(r);
        int64_t left = end - pk_mono_ns();
        if (left <= 0) break;
        struct timespec d = {0, left < 5000000 ? left : 5000000};
        nanosleep(&d, NULL);
    }
    bool fails = cJSON_IsTrue(fail) ||
                 (cJSON_IsNumber(fail_attempts) && t->attempts <= (int)fail_attempts->valuedouble) ||
                 (cJSON_IsNumber(fail_until) && (double)pk_wall_ns() / 1e6 < fail_until->valuedouble);
    if (fails) {
        pk_err *e = pk_err_new("noop_failed", 500, "failing on purpose (attempt %d)", t->attempts);
        e->retryable = !cJSON_IsTrue(permanent);
        return e;
    }
    pk_jw w;
    pk_jw_init(&w, result);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "slept_ms");
    pk_jw_int(&w, wait_ns / 1000000);
    pk_jw_key(&w, "attempt");
    pk_jw_int(&w, t->attempts);
    pk_jw_key(&w, "worker");
    pk_jw_str(&w, pk_task_ctx_worker(c));
    pk_jw_key(&w, "pid");
    pk_jw_int(&w, (int64_t)getpid());
    pk_jw_key(&w, "started_us");
    pk_jw_int(&w, started_wall / 1000);
    pk_jw_key(&w, "finished_us");
    pk_jw_int(&w, pk_wall_ns() / 1000);
    pk_jw_obj_close(&w);
    return NULL;
}

/* The note id of a note.* payload. */
static pk_err *note_id_of(const cJSON *payload, char id[37])
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(payload, "note_id");
    if (!cJSON_IsString(v) || !pk_uuid_valid(v->valuestring, strlen(v->valuestring)))
        return pk_err_invalid("payload.note_id must be a note id (UUID)");
    memcpy(id, v->valuestring, 37);
    return NULL;
}

static pk_op_ctx op_for(pk_task_ctx *c, const pk_task *t)
{
    (void)c;
    return (pk_op_ctx){
        .request_id = t->id, .principal = "task", .deadline_ns = pk_mono_ns() + t->timeout_ms * 1000000};
}

/* Loads the note as a cJSON tree (title, content, ...). */
static pk_err *load_note(pk_task_ctx *c, const pk_task *t, const char *id, cJSON **out)
{
    pk_server *s = pk_task_ctx_server(c);
    pk_op_ctx op = op_for(c, t);
    pk_buf b = PK_BUF_INIT;
    int64_t version = 0;
    pk_err *e = pk_store_note_get(s->store, &op, id, &b, &version);
    if (!e) e = pk_json_parse(b.data, b.len, 64, out);
    pk_buf_free(&b);
    return e;
}

static const char *str_of(const cJSON *note, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(note, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

pk_err *pk_task_note_summarize(pk_task_ctx *c, const pk_task *t, const cJSON *payload, pk_buf *result)
{
    char id[37];
    pk_err *e = note_id_of(payload, id);
    cJSON *note = NULL;
    if (!e) e = load_note(c, t, id, &note);
    if (e) return e;
    pk_task_check_result r = pk_task_check(c, 0.3);
    if (r) {
        cJSON_Delete(note);
        return stopped(r);
    }
    const char *content = str_of(note, "content");
    pk_buf sum = PK_BUF_INIT;
    int n = pk_summarize(content, strlen(content), 3, 600, &sum);
    if (!sum.len) pk_buf_puts(&sum, str_of(note, "title"));
    cJSON_Delete(note);
    if ((r = pk_task_check(c, 0.6))) {
        pk_buf_free(&sum);
        return stopped(r);
    }
    pk_server *s = pk_task_ctx_server(c);
    pk_op_ctx op = op_for(c, t);
    pk_note_input in = {.set = PK_NF_AI_SUMMARY, .ai_summary = sum.data};
    pk_buf out = PK_BUF_INIT;
    e = pk_store_note_update(s->store, &op, id, 0, &in, &out);
    pk_buf_free(&out);
    if (!e) {
        pk_services_note_changed(s, id);
        pk_jw w;
        pk_jw_init(&w, result);
        pk_jw_obj_open(&w);
        pk_jw_key(&w, "note_id");
        pk_jw_str(&w, id);
        pk_jw_key(&w, "sentences");
        pk_jw_int(&w, n);
        pk_jw_key(&w, "summary");
        pk_jw_str(&w, sum.data);
        pk_jw_obj_close(&w);
    }
    pk_buf_free(&sum);
    return e;
}

pk_err *pk_task_note_embed(pk_task_ctx *c, const pk_task *t, const cJSON *payload, pk_buf *result)
{
    char id[37];
    pk_err *e = note_id_of(payload, id);
    if (e) return e;
    pk_tasks *ts = pk_task_ctx_tasks(c);
    cJSON *note = NULL;
    e = load_note(c, t, id, &note);
    if (e && pk_err_is(e, "not_found")) {
        pk_err_free(e);
        e = pk_tasks_embedding_delete(ts, id);
        if (!e) pk_buf_printf(result, "{\"note_id\":\"%s\",\"deleted\":true}", id);
        return e;
    }
    if (e) return e;
    pk_buf text = PK_BUF_INIT;
    pk_buf_puts(&text, str_of(note, "title"));
    pk_buf_puts(&text, "\n\n");
    pk_buf_puts(&text, str_of(note, "content"));
    cJSON_Delete(note);
    unsigned char md[32];
    char hash[65];
    pk_buf hin = PK_BUF_INIT;
    pk_buf_puts(&hin, PK_EMBED_MODEL "\n");
    pk_buf_append(&hin, text.data, text.len);
    EVP_Digest(hin.data, hin.len, md, NULL, EVP_sha256(), NULL);
    pk_buf_free(&hin);
    pk_hex(md, sizeof md, hash);
    float *vec = malloc(sizeof(float) * PK_EMBED_DIMS);
    pk_embed_text(text.data, text.len, vec);
    pk_buf_free(&text);
    pk_task_check_result r = pk_task_check(c, 0.8);
    bool unchanged = false;
    if (r)
        e = stopped(r);
    else
        e = pk_tasks_embedding_put(ts, id, vec, hash, &unchanged);
    free(vec);
    if (!e)
        pk_buf_printf(result, "{\"note_id\":\"%s\",\"model\":\"%s\",\"dims\":%d,\"unchanged\":%s}", id,
                      PK_EMBED_MODEL, PK_EMBED_DIMS, unchanged ? "true" : "false");
    return e;
}
