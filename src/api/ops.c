/*
 * Operational endpoints: liveness, readiness (application/health+json, per-component checks, 503
 * while draining or when a required component fails), Prometheus metrics, the OpenAPI document, and
 * the admin API for circuit breakers.
 */
#include "api/api.h"
#include "tasks/tasks.h"
#include "core/clock.h"
#include "server/services.h"
#include <stdlib.h>
#include <string.h>

extern const unsigned char pk_openapi_json[];
extern const size_t pk_openapi_json_len;

void pk_api_health_live(pk_req *r)
{
    static const char body[] = "{\"status\":\"pass\"}";
    pk_respond_raw(r, 200, "application/health+json", body, sizeof body - 1);
}

/* Which vector search this server runs (pgvector HNSW or an exact scan) and why: informational, it
 * never fails readiness (an exact scan is slower, not broken). */
static void vector_check(pk_server *srv, pk_jw *w)
{
    pk_tasks *t = pk_services_tasks(srv);
    pk_vecstore *vs = t ? pk_tasks_vectors(t) : NULL;
    if (!vs) return;
    pk_jw_key(w, "vectors:index");
    pk_jw_arr_open(w);
    pk_jw_obj_open(w);
    pk_jw_key(w, "componentType");
    pk_jw_str(w, "component");
    pk_jw_key(w, "componentId");
    pk_jw_str(w, vs->backend);
    pk_jw_key(w, "status");
    pk_jw_str(w, "pass");
    pk_jw_key(w, "observedValue");
    pk_jw_str(w, vs->index);
    pk_jw_key(w, "output");
    pk_jw_str(w, vs->detail);
    pk_jw_obj_close(w);
    pk_jw_arr_close(w);
}

static void work_ready(pk_job *j)
{
    int64_t t0 = pk_mono_ns();
    pk_err *e = NULL;
    PK_STORE_CALL(j, pk_store_ping(j->srv->store, &j->op));
    e = j->err;
    j->err = NULL;
    double ms = (double)(pk_mono_ns() - t0) / 1e6;
    bool draining = atomic_load(&j->srv->draining);
    pk_buf *b = &j->body;
    char now[PK_RFC3339_LEN];
    pk_rfc3339(pk_wall_ns(), now);
    const char *overall = (e || draining) ? "fail" : pk_services_degraded(j->srv) ? "warn" : "pass";
    pk_jw w;
    pk_jw_init(&w, b);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "status");
    pk_jw_str(&w, overall);
    pk_jw_key(&w, "version");
    pk_jw_str(&w, PAKE_VERSION);
    pk_jw_key(&w, "serviceId");
    pk_jw_str(&w, "pake");
    if (draining) {
        pk_jw_key(&w, "output");
        pk_jw_str(&w, "shutting down");
    }
    pk_jw_key(&w, "checks");
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "store:responseTime");
    pk_jw_arr_open(&w);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "componentType");
    pk_jw_str(&w, "datastore");
    pk_jw_key(&w, "componentId");
    pk_jw_str(&w, j->srv->store->backend);
    pk_jw_key(&w, "status");
    pk_jw_str(&w, e ? "fail" : "pass");
    pk_jw_key(&w, "observedValue");
    pk_jw_num(&w, ms);
    pk_jw_key(&w, "observedUnit");
    pk_jw_str(&w, "ms");
    pk_jw_key(&w, "time");
    pk_jw_str(&w, now);
    if (e) {
        pk_jw_key(&w, "output");
        pk_jw_str(&w, e->message);
    }
    pk_jw_obj_close(&w);
    pk_jw_arr_close(&w);
    pk_services_health_checks(j->srv, &w);
    vector_check(j->srv, &w);
    pk_jw_obj_close(&w);
    pk_jw_obj_close(&w);
    pk_err_free(e);
    j->status = (e || draining) ? 503 : 200;
    j->raw_content_type = "application/health+json";
}

void pk_api_health_ready(pk_req *r)
{
    if (atomic_load(&r->srv->draining)) {
        static const char body[] = "{\"status\":\"fail\",\"output\":\"shutting down\"}";
        pk_respond_raw(r, 503, "application/health+json", body, sizeof body - 1);
        return;
    }
    pk_offload(r, work_ready, NULL, NULL, NULL);
}

void pk_api_metrics(pk_req *r)
{
    pk_buf b = PK_BUF_INIT;
    pk_services_render_metrics(r->srv, &b);
    pk_respond_raw(r, 200, "text/plain; version=0.0.4; charset=utf-8", b.data ? b.data : "", b.len);
    pk_buf_free(&b);
}

void pk_api_openapi(pk_req *r)
{
    pk_respond_raw(r, 200, "application/json", (const char *)pk_openapi_json, pk_openapi_json_len);
}

void pk_api_admin_breakers(pk_req *r)
{
    pk_buf b = PK_BUF_INIT;
    pk_services_breakers_json(r->srv, &b);
    pk_respond_data(r, 200, b.data, b.len, NULL);
    pk_buf_free(&b);
}

void pk_api_admin_breaker_action(pk_req *r)
{
    h2o_iovec_t name = pk_req_param(r, "name");
    const char *a = strrchr(r->route->pattern, '/') + 1; /* force-open | disable | reset */
    char n[64];
    snprintf(n, sizeof n, "%.*s", (int)(name.len < 63 ? name.len : 63), name.base);
    pk_buf b = PK_BUF_INIT;
    pk_err *e = pk_services_breaker_action(r->srv, n, a, &b);
    if (e) {
        pk_buf_free(&b);
        return pk_respond_error(r, e);
    }
    pk_respond_data(r, 200, b.data, b.len, NULL);
    pk_buf_free(&b);
}
