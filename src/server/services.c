/*
 * Foundation services as the server uses them. (Interim wiring: the foundation modules are plugged
 * in here as they land; each function below is the single call site the request path uses.)
 */
#include "server/services.h"
#include "api/api.h"
#include "core/clock.h"
#include <stdlib.h>
#include <string.h>

struct pk_services {
    int deadline_ms[PK_RC__COUNT];
};

pk_err *pk_services_init(pk_server *s)
{
    struct pk_services *v = calloc(1, sizeof *v);
    const pk_config *c = &s->cfg;
    for (int i = 0; i < PK_RC__COUNT; i++)
        v->deadline_ms[i] = c->deadline_ms;
    if (c->deadline_read_ms) v->deadline_ms[PK_RC_READ] = c->deadline_read_ms;
    if (c->deadline_write_ms) v->deadline_ms[PK_RC_WRITE] = c->deadline_write_ms;
    if (c->deadline_search_ms) v->deadline_ms[PK_RC_SEARCH] = c->deadline_search_ms;
    if (c->deadline_admin_ms) v->deadline_ms[PK_RC_ADMIN] = c->deadline_admin_ms;
    s->svc = v;
    return NULL;
}

void pk_services_dispose(pk_server *s)
{
    free(s->svc);
    s->svc = NULL;
}

void pk_services_reload(pk_server *s) { (void)s; }

int pk_services_deadline_ms(pk_server *s, pk_route_class c) { return s->svc->deadline_ms[c]; }

pk_err *pk_services_ratelimit(pk_req *r) { return NULL; }

pk_err *pk_services_guard(pk_req *r, int surface, const char *field, const char *text, size_t len, pk_buf *flag_json)
{
    return NULL;
}

bool pk_services_cache_lookup_note(pk_server *s, const char *id, pk_services_cached_note *out) { return false; }
void pk_services_cache_note_release(pk_services_cached_note *n) {}
void pk_services_cache_note(pk_server *s, const char *id, int64_t version, const char *json, size_t len) {}
void pk_services_cache_note_missing(pk_server *s, const char *id) {}
void pk_services_note_changed(pk_server *s, const char *id) {}

void pk_services_health_checks(pk_server *s, pk_jw *w) {}
void pk_services_render_metrics(pk_server *s, pk_buf *out) {}
void pk_services_breakers_json(pk_server *s, pk_buf *out) { pk_buf_puts(out, "[]"); }
pk_err *pk_services_breaker_action(pk_server *s, const char *name, const char *action, pk_buf *out)
{
    return pk_err_not_found("no breaker named '%s'", name);
}

pk_err *pk_api_store_begin(pk_job *j, void **permit) { return NULL; }
void pk_api_store_end(pk_job *j, void *permit, const pk_err *e, int64_t started_ns) {}

void pk_services_observe(pk_req *r, int status, int64_t duration_ns) {}
