/*
 * The security guard on the request path. Every user-supplied string reaches pk_services_guard with
 * its surface; the surface's policy decides (guard/guard.h):
 *  - block: 422 problem+json `input_rejected` naming the field, the categories and the rule ids (never
 *    the patterns); the principal's own abuse budget is charged (repeat offenders get 429 on their own);
 *  - flag: the verdict is kept (the worst one of the request) and stored with the note as its `guard`
 *    member ({"flagged":true,...}), which the audit log records and readers can filter on;
 *  - allow: nothing.
 * Decisions and scan time are counted per surface and category. SIGHUP reloads the rule file; a bad
 * file is logged and the running rules stay.
 */
#include "core/clock.h"
#include "core/log.h"
#include "guard/guard.h"
#include "server/services.h"
#include <stdlib.h>
#include <string.h>

static pk_guard *g_guard; /* initialised once at start, shared by all threads (the guard is thread-safe) */

/* --guard-policy: comma-separated surface=block|flag|off overrides, e.g. "note_content=block". */
static pk_err *apply_policy(pk_guard *g, const char *spec)
{
    if (!spec || !*spec) return NULL;
    char *copy = strdup(spec), *save = NULL;
    pk_err *e = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && !e; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            e = pk_err_new("bad_config", 2, "--guard-policy: '%s' is not surface=block|flag|off", tok);
            break;
        }
        *eq = '\0';
        int surface = -1;
        for (int i = 0; i < PK_GUARD_SURFACE_COUNT; i++)
            if (!strcmp(tok, pk_guard_surface_name((pk_guard_surface)i))) surface = i;
        if (surface < 0) {
            e = pk_err_new("bad_config", 2, "--guard-policy: unknown surface '%s'", tok);
            break;
        }
        pk_guard_policy p = pk_guard_get_policy(g, (pk_guard_surface)surface);
        if (!strcmp(eq + 1, "block"))
            p.can_block = true;
        else if (!strcmp(eq + 1, "flag"))
            p.can_block = false;
        else if (!strcmp(eq + 1, "off"))
            p.can_block = false, p.flag_threshold = 2.0, p.block_threshold = 2.0;
        else
            e = pk_err_new("bad_config", 2, "--guard-policy: '%s' must be block, flag or off", eq + 1);
        if (!e) pk_guard_set_policy(g, (pk_guard_surface)surface, p);
    }
    free(copy);
    return e;
}

pk_err *pk_services_guard_init(pk_server *s)
{
    pk_guard_config gc = {0};
    gc.rules_path = *s->cfg.guard_rules ? s->cfg.guard_rules : NULL;
    pk_err *e = pk_guard_new(&gc, &g_guard);
    if (e) return pk_err_wrap(e, "bad_config", 2, "security guard: %s", e->message);
    if ((e = apply_policy(g_guard, s->cfg.guard_policy))) return e;
    char f[160];
    snprintf(f, sizeof f, "\"rules\":%zu,\"rules_file\":\"%s\"", pk_guard_rule_count(g_guard),
             gc.rules_path ? "custom" : "built-in");
    pk_log_write(PK_LOG_INFO, NULL, f, "security guard ready");
    return NULL;
}

void pk_services_guard_dispose(pk_server *s)
{
    pk_guard_free(g_guard);
    g_guard = NULL;
}

void pk_services_reload(pk_server *s)
{
    if (!g_guard) return;
    pk_err *e = pk_guard_reload(g_guard);
    if (e) {
        pk_log_write(PK_LOG_ERROR, NULL, NULL, "guard rules not reloaded (the running rules stay): %s",
                     e->message);
        pk_err_free(e);
        return;
    }
    pk_log_write(PK_LOG_INFO, NULL, NULL, "guard rules reloaded: %zu rules", pk_guard_rule_count(g_guard));
}

static void write_names(pk_buf *b, const pk_guard_result *res)
{
    pk_jw w;
    pk_jw_init(&w, b);
    pk_jw_arr_open(&w);
    for (int c = 0; c < PK_GC_COUNT; c++)
        if (res->categories & (1u << c)) pk_jw_str(&w, pk_guard_category_name((pk_guard_category)c));
    pk_jw_arr_close(&w);
}

static double score_in(const pk_buf *b)
{
    const char *p = b->data ? strstr(b->data, "\"score\":") : NULL;
    return p ? strtod(p + 8, NULL) : -1;
}

/* Scans and counts the decision per category. */
static void scan(pk_server *s, int surface, const char *text, size_t len, pk_guard_result *res)
{
    int64_t t0 = pk_mono_ns();
    pk_guard_scan(g_guard, text, len, (pk_guard_surface)surface, res);
    double dt = (double)(pk_mono_ns() - t0) / 1e9;
    const char *sname = pk_guard_surface_name((pk_guard_surface)surface);
    const char *dname = pk_guard_decision_name(res->decision);
    if (!res->categories) pk_services_guard_metrics(s, sname, dname, "none", dt);
    for (int c = 0; c < PK_GC_COUNT; c++)
        if (res->categories & (1u << c))
            pk_services_guard_metrics(s, sname, dname, pk_guard_category_name((pk_guard_category)c), dt);
}

/* A flag verdict replaces *flag_json when it is worse: {"flagged":true,"field":...,<result members>}. */
static void keep_worst(const pk_guard_result *res, const char *field, pk_buf *flag_json)
{
    if (res->decision != PK_GUARD_FLAG || !flag_json || res->score <= score_in(flag_json)) return;
    pk_buf_reset(flag_json);
    pk_buf v = PK_BUF_INIT;
    pk_jw w;
    pk_jw_init(&w, &v);
    pk_guard_result_json(res, &w);
    pk_buf_puts(flag_json, "{\"flagged\":true,\"field\":\"");
    pk_json_escape(flag_json, field, strlen(field));
    pk_buf_puts(flag_json, "\",");
    pk_buf_append(flag_json, v.data + 1, v.len - 1); /* the result object's members */
    pk_buf_free(&v);
}

pk_err *pk_services_guard_stored(pk_server *s, int surface, const char *field, const char *text, size_t len,
                                 const char *request_id, pk_buf *flag_json)
{
    if (!g_guard || len == 0) return NULL;
    pk_guard_result res;
    scan(s, surface, text, len, &res);
    if (res.decision == PK_GUARD_BLOCK) {
        pk_err *e =
            pk_err_new("input_rejected", 422, "the security guard rejected the value of '%s' (score %.2f)",
                       field, res.score);
        e->retryable = false;
        pk_log_ctx ctx = {request_id, NULL, NULL};
        char f[128];
        snprintf(f, sizeof f, "\"surface\":\"%s\",\"field\":\"%.40s\",\"score\":%.3f",
                 pk_guard_surface_name((pk_guard_surface)surface), field, res.score);
        pk_log_write(PK_LOG_WARN, &ctx, f, "stored content blocked by the security guard");
        return e;
    }
    keep_worst(&res, field, flag_json);
    return NULL;
}

pk_err *pk_services_guard(pk_req *r, int surface, const char *field, const char *text, size_t len,
                          pk_buf *flag_json)
{
    if (!g_guard || len == 0) return NULL;
    pk_guard_result res;
    scan(r->srv, surface, text, len, &res);
    const char *sname = pk_guard_surface_name((pk_guard_surface)surface);

    if (res.decision == PK_GUARD_BLOCK) {
        pk_services_note_blocked(r);
        pk_err *e = pk_err_new("input_rejected", 422, "the security guard rejected the value of '%s'", field);
        pk_err_add_field(e, field, "was rejected by the security guard (score %.2f)", res.score);
        pk_buf x = PK_BUF_INIT;
        pk_buf_puts(&x, "\"guard\":");
        pk_jw w;
        pk_jw_init(&w, &x);
        pk_guard_result_json(&res, &w);
        pk_buf_puts(&x, ",\"categories\":");
        write_names(&x, &res);
        pk_buf_puts(&x, ",\"rules\":[");
        for (size_t i = 0; i < res.nrules; i++) {
            if (i) pk_buf_putc(&x, ',');
            pk_buf_putc(&x, '"');
            pk_json_escape(&x, res.rule_ids[i], strlen(res.rule_ids[i]));
            pk_buf_putc(&x, '"');
        }
        pk_buf_putc(&x, ']');
        e->extra_json = pk_buf_steal(&x, NULL);
        e->retryable = false;
        pk_log_ctx ctx = {r->request_id, r->trace_id, r->span_id};
        char f[128];
        snprintf(f, sizeof f, "\"surface\":\"%s\",\"field\":\"%.40s\",\"score\":%.3f", sname, field,
                 res.score);
        pk_log_write(PK_LOG_WARN, &ctx, f, "input blocked by the security guard");
        return e;
    }
    keep_worst(&res, field, flag_json); /* the worst verdict of the request */
    return NULL;
}
