/*
 * REST v1 task routes (docs/tasks.md): enqueue, read, list, cancel, retry, queue stats.
 *
 * Handlers validate on the loop thread (body shape, known task type, names, limits) and run every
 * string of the payload through the security guard (surface "task payload"), then offload the queue
 * call (the embedded queue does file I/O). The trace context of the enqueuing request is stored with
 * the task, so the worker's log lines carry the same trace id.
 */
#include "api/api.h"
#include "core/id.h"
#include "server/services.h"
#include "tasks/tasks.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct task_job {
    char id[37];
    char *type, *queue, *payload, *idem, *trace;
    pk_task_input in;
    pk_task_filter f;
    char *cursor;
    bool created;
} task_job;

static void task_job_free(void *p)
{
    task_job *d = p;
    free(d->type);
    free(d->queue);
    free(d->payload);
    free(d->idem);
    free(d->trace);
    free(d->cursor);
    free(d);
}

static pk_tasks *tasks_or_error(pk_req *r)
{
    pk_tasks *t = pk_services_tasks(r->srv);
    if (!t) pk_respond_error(r, pk_err_unavailable("the task queue is not running in this process"));
    return t;
}

static pk_err *task_id(pk_req *r, char out[37])
{
    h2o_iovec_t v = pk_req_param(r, "id");
    if (v.base && v.len == 36) {
        for (size_t i = 0; i < 36; i++)
            out[i] = (char)(v.base[i] >= 'A' && v.base[i] <= 'F' ? v.base[i] + 32 : v.base[i]);
        out[36] = '\0';
        if (pk_uuid_valid(out, 36)) return NULL;
    }
    return pk_err_not_found("no task with id '%.*s' (task ids are UUIDs)", (int)(v.len > 64 ? 64 : v.len),
                            v.base ? v.base : "");
}

static void invalid(pk_err **ve, const char *field, const char *msg)
{
    if (!*ve) *ve = pk_err_invalid("the request has invalid fields");
    pk_err_add_field(*ve, field, "%s", msg);
}

/* invalid() for a field of a batch item: at = "" (single task) or "tasks[3]." */
static void invalid_at(pk_err **ve, const char *at, const char *field, const char *msg)
{
    char name[96];
    snprintf(name, sizeof name, "%s%s", at, field);
    invalid(ve, name, msg);
}

/* Every string (keys and values) of the payload goes through the guard. */
static pk_err *guard_payload(pk_req *r, const cJSON *v, int depth)
{
    for (const cJSON *c = v->child; c; c = c->next) {
        pk_err *e = NULL;
        if (c->string)
            e = pk_api_guard(r, PK_SURFACE_TASK_PAYLOAD, "payload", c->string, strlen(c->string), NULL);
        if (!e && cJSON_IsString(c))
            e = pk_api_guard(r, PK_SURFACE_TASK_PAYLOAD, "payload", c->valuestring, strlen(c->valuestring),
                             NULL);
        if (!e && (cJSON_IsObject(c) || cJSON_IsArray(c)) && depth < 64) e = guard_payload(r, c, depth + 1);
        if (e) return e;
    }
    return NULL;
}

static const char *const CREATE_FIELDS[] = {"type",     "payload",      "priority",
                                            "queue",    "max_attempts", "timeout_ms",
                                            "delay_ms", "not_before",   "idempotency_key"};

/* Checks one task input o (the body of POST /v1/tasks, or an item of a batch: `at` prefixes the field
 * names of its errors) into d; problems are added to *ve. hk/hn: the Idempotency-Key header (single
 * task only). */
static void validate_item(pk_tasks *t, const cJSON *o, task_job *d, const char *at, const char *hk, size_t hn,
                          pk_err **ve)
{
    if (!cJSON_IsObject(o)) {
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)(strlen(at) ? strlen(at) - 1 : 0), at); /* no dot */
        if (!*at)
            *ve = pk_err_invalid("the request body must be a JSON object");
        else
            invalid(ve, name, "must be a JSON object (a task)");
        return;
    }
    for (const cJSON *c = o->child; c; c = c->next) {
        bool known = false;
        for (size_t i = 0; i < sizeof CREATE_FIELDS / sizeof *CREATE_FIELDS && !known; i++)
            known = !strcmp(c->string, CREATE_FIELDS[i]);
        if (!known) invalid_at(ve, at, c->string, "is not a known field");
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
    if (!cJSON_IsString(type) || !pk_queue_name_valid(type->valuestring))
        invalid_at(ve, at, "type", "is required: 1 to 64 characters of [a-z0-9_.-]");
    else if (!pk_tasks_type_known(t, type->valuestring)) {
        char msg[320];
        snprintf(msg, sizeof msg, "is not a known task type (known: %s)", pk_tasks_type_list(t));
        invalid_at(ve, at, "type", msg);
    } else
        d->type = strdup(type->valuestring);
    const cJSON *payload = cJSON_GetObjectItemCaseSensitive(o, "payload");
    if (payload && !cJSON_IsObject(payload)) invalid_at(ve, at, "payload", "must be a JSON object");
    const cJSON *prio = cJSON_GetObjectItemCaseSensitive(o, "priority");
    d->in.priority = PK_PRIO_NORMAL;
    if (prio) {
        int p = cJSON_IsString(prio) ? pk_task_priority_parse(prio->valuestring) : -1;
        if (p < 0)
            invalid_at(ve, at, "priority", "must be one of critical, high, normal, low");
        else
            d->in.priority = p;
    }
    const cJSON *queue = cJSON_GetObjectItemCaseSensitive(o, "queue");
    if (queue && (!cJSON_IsString(queue) || !pk_queue_name_valid(queue->valuestring)))
        invalid_at(ve, at, "queue", "must be 1 to 64 characters of [a-z0-9_.-]");
    else if (queue)
        d->queue = strdup(queue->valuestring);
    const cJSON *ma = cJSON_GetObjectItemCaseSensitive(o, "max_attempts");
    if (ma && (!cJSON_IsNumber(ma) || ma->valuedouble < 1 || ma->valuedouble > 100 ||
               ma->valuedouble != (int)ma->valuedouble))
        invalid_at(ve, at, "max_attempts", "must be an integer from 1 to 100");
    else if (ma)
        d->in.max_attempts = (int)ma->valuedouble;
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(o, "timeout_ms");
    if (to && (!cJSON_IsNumber(to) || to->valuedouble < 1 || to->valuedouble > 86400000))
        invalid_at(ve, at, "timeout_ms", "must be a number of milliseconds from 1 to 86400000");
    else if (to)
        d->in.timeout_ms = (int64_t)to->valuedouble;
    const cJSON *delay = cJSON_GetObjectItemCaseSensitive(o, "delay_ms");
    const cJSON *nb = cJSON_GetObjectItemCaseSensitive(o, "not_before");
    if (delay && nb) invalid_at(ve, at, "delay_ms", "give delay_ms or not_before, not both");
    if (delay && (!cJSON_IsNumber(delay) || delay->valuedouble < 0 || delay->valuedouble > 31536000000.0))
        invalid_at(ve, at, "delay_ms", "must be a number of milliseconds, at most one year");
    else if (delay)
        d->in.not_before_ns = pk_wall_ns() + (int64_t)(delay->valuedouble * 1e6);
    if (nb) {
        int64_t when;
        if (!cJSON_IsString(nb) || pk_rfc3339_parse(nb->valuestring, &when) != 0)
            invalid_at(ve, at, "not_before", "must be an RFC 3339 date-time");
        else
            d->in.not_before_ns = when;
    }
    const cJSON *ik = cJSON_GetObjectItemCaseSensitive(o, "idempotency_key");
    if (ik && (!cJSON_IsString(ik) || !*ik->valuestring || strlen(ik->valuestring) > 255))
        invalid_at(ve, at, "idempotency_key", "must be a string of 1 to 255 characters");
    else if (ik)
        d->idem = strdup(ik->valuestring);
    else if (hk && hn > 0 && hn <= 255)
        d->idem = pk_strndup(hk, hn);
}

/* After validation: the guard over the payload and key, the payload's text and the trace context. */
static pk_err *finish_item(pk_req *r, pk_tasks *t, const cJSON *o, task_job *d, const char *trace)
{
    const cJSON *payload = cJSON_GetObjectItemCaseSensitive(o, "payload");
    pk_err *e = payload ? guard_payload(r, payload, 0) : NULL;
    if (!e && !strcmp(d->type, "workflow.trigger")) e = pk_tasks_workflow_check(t, payload);
    if (!e && d->idem)
        e = pk_api_guard(r, PK_SURFACE_TASK_PAYLOAD, "idempotency_key", d->idem, strlen(d->idem), NULL);
    if (e) return e;
    pk_buf b = PK_BUF_INIT;
    if (payload) {
        pk_jw w;
        pk_jw_init(&w, &b);
        pk_jw_cjson(&w, payload);
    } else
        pk_buf_puts(&b, "{}");
    d->payload = pk_buf_steal(&b, NULL);
    d->in.type = d->type;
    d->in.queue = d->queue;
    d->in.payload_json = d->payload;
    d->in.idempotency_key = d->idem;
    d->in.idem_ttl_ms = (int64_t)r->srv->cfg.idempotency_ttl_s * 1000;
    d->in.trace_context = trace;
    return NULL;
}

static void trace_of(pk_req *r, char tp[64])
{
    snprintf(tp, 64, "00-%s-%s-%02x", r->trace_id, r->span_id, r->sampled ? 1 : 0);
}

static pk_err *parse_create(pk_req *r, pk_tasks *t, task_job *d)
{
    size_t hn = 0;
    const char *hk = pk_req_header(r, "idempotency-key", &hn);
    pk_err *ve = NULL;
    validate_item(t, r->json, d, "", hk, hn, &ve);
    if (ve) return ve;
    char tp[64];
    trace_of(r, tp);
    d->trace = strdup(tp);
    return finish_item(r, t, r->json, d, d->trace);
}

/* Concurrent creations, coalesced by the offload pool (pk_offload_many): one queue call for all. */
static void work_create_many(pk_job **jobs, size_t n)
{
    pk_task_input in[PK_OFFLOAD_MANY_MAX];
    pk_buf out[PK_OFFLOAD_MANY_MAX];
    bool created[PK_OFFLOAD_MANY_MAX];
    pk_err *err[PK_OFFLOAD_MANY_MAX];
    for (size_t i = 0; i < n; i++) {
        in[i] = ((task_job *)jobs[i]->data)->in;
        out[i] = jobs[i]->body; /* appended to, then handed back */
    }
    pk_tasks_enqueue_each(pk_services_tasks(jobs[0]->srv), in, n, out, created, err);
    for (size_t i = 0; i < n; i++) {
        pk_job *j = jobs[i];
        task_job *d = j->data;
        j->body = out[i];
        j->err = err[i];
        d->created = !err[i] && created[i];
        j->status = d->created ? 201 : 200;
        if (!j->err && j->body.data) {
            const char *idp = strstr(j->body.data, "\"id\":\"");
            if (idp) snprintf(j->location, sizeof j->location, "/v1/tasks/%.36s", idp + 6);
        }
    }
}

static void create_done(pk_req *r, pk_job *j)
{
    task_job *d = j->data;
    if (!j->err && !d->created) pk_req_add_header(r, "idempotent-replayed", "true", 4);
    pk_job_respond(r, j);
}

void pk_api_task_create(pk_req *r)
{
    pk_tasks *t = tasks_or_error(r);
    if (!t) return;
    task_job *d = calloc(1, sizeof *d);
    pk_err *e = parse_create(r, t, d);
    if (e) {
        task_job_free(d);
        return pk_respond_error(r, e);
    }
    pk_offload_many(r, work_create_many, create_done, d, task_job_free);
}

/* ---- POST /v1/tasks/batch ------------------------------------------------------------------------ */

#define BATCH_MAX 500

typedef struct batch_job {
    task_job *items;
    size_t n;
    pk_task_input *in;
    bool *created;
    char trace[64];
} batch_job;

static void batch_job_free(void *p)
{
    batch_job *b = p;
    for (size_t i = 0; i < b->n; i++) {
        task_job *d = &b->items[i];
        free(d->type);
        free(d->queue);
        free(d->payload);
        free(d->idem);
    }
    free(b->items);
    free(b->in);
    free(b->created);
    free(b);
}

static void work_batch(pk_job *j)
{
    batch_job *b = j->data;
    j->err = pk_tasks_enqueue_batch(pk_services_tasks(j->srv), b->in, b->n, &j->body, b->created);
    j->status = 201;
    if (j->err) return;
    pk_buf m = PK_BUF_INIT; /* meta.created: which items are new (the others are idempotent replays) */
    pk_buf_puts(&m, "\"created\":[");
    for (size_t i = 0; i < b->n; i++)
        pk_buf_printf(&m, "%s%s", i ? "," : "", b->created[i] ? "true" : "false");
    pk_buf_putc(&m, ']');
    j->meta_extra = pk_buf_steal(&m, NULL);
}

void pk_api_task_create_batch(pk_req *r)
{
    pk_tasks *t = tasks_or_error(r);
    if (!t) return;
    const cJSON *o = r->json;
    if (!cJSON_IsObject(o))
        return pk_respond_error(r, pk_err_invalid("the request body must be a JSON object"));
    pk_err *ve = NULL;
    for (const cJSON *c = o->child; c; c = c->next)
        if (strcmp(c->string, "tasks")) invalid(&ve, c->string, "is not a known field");
    const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(o, "tasks");
    int n = cJSON_IsArray(tasks) ? cJSON_GetArraySize(tasks) : -1;
    if (n < 1 || n > BATCH_MAX) {
        char msg[96];
        snprintf(msg, sizeof msg, "is required: an array of 1 to %d tasks", BATCH_MAX);
        invalid(&ve, "tasks", msg);
    }
    if (ve) return pk_respond_error(r, ve);
    batch_job *b = calloc(1, sizeof *b);
    b->items = calloc((size_t)n, sizeof *b->items);
    b->in = calloc((size_t)n, sizeof *b->in);
    b->created = calloc((size_t)n, sizeof *b->created);
    b->n = (size_t)n;
    trace_of(r, b->trace);
    int i = 0;
    for (const cJSON *c = tasks->child; c; c = c->next, i++) {
        char at[32];
        snprintf(at, sizeof at, "tasks[%d].", i);
        validate_item(t, c, &b->items[i], at, NULL, 0, &ve);
    }
    i = 0;
    pk_err *e = ve;
    for (const cJSON *c = tasks->child; c && !e; c = c->next, i++) {
        e = finish_item(r, t, c, &b->items[i], b->trace);
        b->in[i] = b->items[i].in;
    }
    if (e) {
        batch_job_free(b);
        return pk_respond_error(r, e);
    }
    pk_offload(r, work_batch, NULL, b, batch_job_free);
}

static void work_get(pk_job *j)
{
    task_job *d = j->data;
    pk_queue *q = pk_tasks_queue(pk_services_tasks(j->srv));
    j->err = q->ops->get(q, d->id, &j->body);
    j->status = 200;
}

static void work_cancel(pk_job *j)
{
    task_job *d = j->data;
    pk_task_state st = PK_TASK_CANCELLED;
    j->err = pk_tasks_cancel(pk_services_tasks(j->srv), d->id, &j->body, &st);
    j->status =
        st == PK_TASK_RUNNING ? 202 : 200; /* running: the worker is told, it stops at its next check */
}

static void work_retry(pk_job *j)
{
    task_job *d = j->data;
    j->err = pk_tasks_retry(pk_services_tasks(j->srv), d->id, &j->body);
    j->status = 200;
}

static void by_id(pk_req *r, pk_work_fn fn)
{
    if (!tasks_or_error(r)) return;
    task_job *d = calloc(1, sizeof *d);
    pk_err *e = task_id(r, d->id);
    if (e) {
        task_job_free(d);
        return pk_respond_error(r, e);
    }
    pk_offload(r, fn, NULL, d, task_job_free);
}

void pk_api_task_get(pk_req *r)
{
    by_id(r, work_get);
}

void pk_api_task_cancel(pk_req *r)
{
    by_id(r, work_cancel);
}

void pk_api_task_retry(pk_req *r)
{
    by_id(r, work_retry);
}

static void work_list(pk_job *j)
{
    task_job *d = j->data;
    pk_queue *q = pk_tasks_queue(pk_services_tasks(j->srv));
    pk_task_page pg = {0};
    j->err = q->ops->list(q, &d->f, &pg);
    if (j->err) return;
    pk_buf_free(&j->body);
    j->body = pg.items;
    memset(&pg.items, 0, sizeof pg.items);
    pk_buf m = PK_BUF_INIT;
    pk_buf_printf(&m, "\"pagination\":{\"limit\":%d,\"count\":%zu,\"next_cursor\":", d->f.limit, pg.count);
    if (pg.next_cursor)
        pk_buf_printf(&m, "\"%s\"}", pg.next_cursor); /* digits only */
    else
        pk_buf_puts(&m, "null}");
    j->meta_extra = pk_buf_steal(&m, NULL);
    j->status = 200;
    pk_task_page_free(&pg);
}

void pk_api_task_list(pk_req *r)
{
    if (!tasks_or_error(r)) return;
    task_job *d = calloc(1, sizeof *d);
    d->f.state = -1;
    d->f.limit = 20;
    pk_err *ve = NULL;
    size_t cur = 0;
    h2o_iovec_t k;
    const char *v;
    bool bad = false;
    for (; pk_req_query_pair(r, &cur, &k, &v, &bad); bad = false) {
        char key[32];
        snprintf(key, sizeof key, "%.*s", (int)(k.len < 31 ? k.len : 31), k.base);
        if (bad) {
            invalid(&ve, "query", "is not valid percent-encoded UTF-8");
        } else if (!strcmp(key, "state")) {
            if ((d->f.state = pk_task_state_parse(v)) < 0)
                invalid(&ve, "state",
                        "must be one of queued, scheduled, running, succeeded, failed, retrying, dead, "
                        "cancelled");
        } else if (!strcmp(key, "type")) {
            if (!pk_queue_name_valid(v))
                invalid(&ve, "type", "must be 1 to 64 characters of [a-z0-9_.-]");
            else {
                free(d->type);
                d->type = strdup(v);
            }
        } else if (!strcmp(key, "queue")) {
            if (!pk_queue_name_valid(v))
                invalid(&ve, "queue", "must be 1 to 64 characters of [a-z0-9_.-]");
            else {
                free(d->queue);
                d->queue = strdup(v);
            }
        } else if (!strcmp(key, "limit")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (!*v || *end || n < 1 || n > 100)
                invalid(&ve, "limit", "must be an integer from 1 to 100");
            else
                d->f.limit = (int)n;
        } else if (!strcmp(key, "cursor")) {
            free(d->cursor);
            d->cursor = strdup(v);
        } else {
            pk_api_printable(key);
            invalid(&ve, key, "is not a known query parameter");
        }
    }
    if (ve) {
        task_job_free(d);
        return pk_respond_error(r, ve);
    }
    d->f.type = d->type;
    d->f.queue = d->queue;
    d->f.cursor = d->cursor;
    pk_offload(r, work_list, NULL, d, task_job_free);
}

static void work_queues(pk_job *j)
{
    j->err = pk_tasks_queues_json(pk_services_tasks(j->srv), &j->body);
    j->status = 200;
}

void pk_api_queues(pk_req *r)
{
    if (!tasks_or_error(r)) return;
    pk_offload(r, work_queues, NULL, NULL, NULL);
}
