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
 *   note.summarize  {"note_id": "<uuid>"}: a summary of the note from the chat provider (src/ai/: an
 *                   OpenAI-compatible chat API, else the extractive pk_summarize), screened by the
 *                   security guard as stored note content (blocked: the task fails, not retryable;
 *                   flagged: the verdict is stored with the note, as for an API write), stored in
 *                   ai_summary through the store's update (the note's version moves).
 *   note.embed      {"note_id": "<uuid>"}: the embedding of title + content from the embeddings provider
 *                   into the vector store (store/vecstore.h); skipped when the text and model are unchanged;
 *                   a deleted note drops its vector.
 *
 * Store and provider calls carry the task id as request id (the audit log shows which task wrote) and
 * the task's timeout as deadline; between provider retries the handler's pk_task_check runs (heartbeat,
 * cancel). A missing note or a malformed payload is not retryable; store and provider errors keep their
 * retryable flag (busy, unavailable, provider 5xx/429/timeouts; not a provider 4xx or wrong dimensions).
 */
#include "tasks/tasks_internal.h"
#include "ai/ai.h"
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

static bool keep_going(void *ud)
{
    return pk_task_check(ud, -1) == PK_TASK_GO;
}

static pk_ai_call ai_call_for(pk_task_ctx *c, const pk_task *t)
{
    return (pk_ai_call){
        .deadline_ns = pk_mono_ns() + t->timeout_ms * 1000000, .keep_going = keep_going, .ud = c};
}

/* The note's current guard verdict when it is flagged (so a summary only replaces a milder one). */
static void flagged_verdict(const cJSON *note, pk_buf *out)
{
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(note, "guard");
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g, "flagged"))) return;
    pk_jw w;
    pk_jw_init(&w, out);
    pk_jw_cjson(&w, g);
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
    pk_server *s = pk_task_ctx_server(c);
    pk_ai *ai = pk_services_ai(s);
    pk_buf sum = PK_BUF_INIT, verdict = PK_BUF_INIT;
    pk_ai_call call = ai_call_for(c, t);
    e = pk_ai_summarize(ai, &call, str_of(note, "title"), str_of(note, "content"), &sum);
    if ((r = pk_task_check(c, 0.6))) {
        pk_err_free(e);
        e = stopped(r);
    }
    /* the model's answer is stored content: the guard screens it as it screens an API write of it; a
     * flag replaces the note's verdict only when it is worse (pk_services_guard keeps the worst) */
    char *seed = NULL;
    if (!e) {
        flagged_verdict(note, &verdict);
        seed = pk_strndup(verdict.data ? verdict.data : "", verdict.len);
        e = pk_services_guard_stored(s, PK_SURFACE_NOTE_CONTENT, "ai_summary", sum.data, sum.len, t->id,
                                     &verdict);
    }
    bool flagged =
        !e && verdict.len && (verdict.len != strlen(seed) || memcmp(verdict.data, seed, verdict.len));
    free(seed);
    cJSON_Delete(note);
    if (e) {
        pk_buf_free(&sum);
        pk_buf_free(&verdict);
        return e;
    }
    pk_op_ctx op = op_for(c, t);
    pk_note_input in = {.set = PK_NF_AI_SUMMARY, .ai_summary = sum.data ? sum.data : ""};
    if (flagged) {
        in.set |= PK_NF_GUARD;
        in.guard_json = verdict.data;
    }
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
        pk_jw_key(&w, "provider");
        pk_jw_str(&w, pk_ai_chat_provider(ai));
        pk_jw_key(&w, "summary");
        pk_jw_strn(&w, sum.data ? sum.data : "", sum.len);
        pk_jw_key(&w, "flagged");
        pk_jw_bool(&w, flagged);
        pk_jw_obj_close(&w);
    }
    pk_buf_free(&sum);
    pk_buf_free(&verdict);
    return e;
}

/* The note's vector is gone with the note: drop it (the PostgreSQL vecstore did already, by cascade). */
static pk_err *embed_deleted(pk_tasks *ts, const pk_op_ctx *op, const char *id, pk_buf *result)
{
    pk_err *e = pk_vecstore_remove(pk_tasks_vectors(ts), op, id);
    if (!e) pk_buf_printf(result, "{\"note_id\":\"%s\",\"deleted\":true}", id);
    return e;
}

pk_err *pk_task_note_embed(pk_task_ctx *c, const pk_task *t, const cJSON *payload, pk_buf *result)
{
    char id[37];
    pk_err *e = note_id_of(payload, id);
    if (e) return e;
    pk_tasks *ts = pk_task_ctx_tasks(c);
    pk_op_ctx op = op_for(c, t);
    cJSON *note = NULL;
    e = load_note(c, t, id, &note);
    if (e && pk_err_is(e, "not_found")) {
        pk_err_free(e);
        return embed_deleted(ts, &op, id, result);
    }
    if (e) return e;
    pk_buf text = PK_BUF_INIT;
    pk_buf_puts(&text, str_of(note, "title"));
    pk_buf_puts(&text, "\n\n");
    pk_buf_puts(&text, str_of(note, "content"));
    cJSON_Delete(note);
    pk_ai *ai = pk_services_ai(pk_task_ctx_server(c));
    const char *model = pk_ai_embed_model(ai);
    int dims = pk_ai_embed_dims(ai);
    unsigned char md[32];
    char hash[65];
    pk_buf hin = PK_BUF_INIT;
    pk_buf_printf(&hin, "%s\n", model);
    pk_buf_append(&hin, text.data, text.len);
    EVP_Digest(hin.data, hin.len, md, NULL, EVP_sha256(), NULL);
    pk_buf_free(&hin);
    pk_hex(md, sizeof md, hash);
    /* the same text and model already stored: no provider call (a summary write, for one, changes
     * the note without changing what is embedded) */
    bool unchanged = false;
    pk_embedding em = {.note_id = id, .model = model, .dims = dims, .vec = NULL, .text_hash = hash};
    e = pk_vecstore_current(pk_tasks_vectors(ts), &op, &em, &unchanged);
    float *vec = NULL;
    if (!e && !unchanged) {
        vec = malloc(sizeof(float) * (size_t)dims);
        pk_ai_call call = ai_call_for(c, t);
        const char *texts[1] = {text.data};
        e = pk_ai_embed(ai, &call, texts, &text.len, 1, vec);
    }
    pk_buf_free(&text);
    pk_task_check_result r = pk_task_check(c, 0.8);
    if (r) {
        pk_err_free(e);
        e = stopped(r);
    }
    em.vec = vec;
    if (!e && !unchanged) e = pk_vecstore_put(pk_tasks_vectors(ts), &op, &em, &unchanged);
    free(vec);
    if (e && pk_err_is(e, "not_found")) { /* deleted while we embedded it */
        pk_err_free(e);
        return embed_deleted(ts, &op, id, result);
    }
    if (!e) {
        pk_jw w;
        pk_jw_init(&w, result);
        pk_jw_obj_open(&w);
        pk_jw_key(&w, "note_id");
        pk_jw_str(&w, id);
        pk_jw_key(&w, "provider");
        pk_jw_str(&w, pk_ai_embed_provider(ai));
        pk_jw_key(&w, "model");
        pk_jw_str(&w, model);
        pk_jw_key(&w, "dims");
        pk_jw_int(&w, dims);
        pk_jw_key(&w, "unchanged");
        pk_jw_bool(&w, unchanged);
        pk_jw_obj_close(&w);
    }
    return e;
}
