/*
 * POST /v1/hooks/{name}: callbacks from a workflow engine (n8n) that create or update notes
 * (docs/n8n.md).
 *
 * Order of checks, all on the loop thread before any store call:
 *   1. the hook name must be configured (--hooks): 404 otherwise, so unknown names cost nothing;
 *   2. X-Pake-Timestamp / X-Pake-Signature: HMAC-SHA256 over "<ts>." + the exact body bytes with the
 *      hook's secret, timestamp within --hook-replay-window-s of our clock: 401 otherwise;
 *   3. the signature must not have been accepted before within the window (replay cache): 401;
 *   4. the envelope {"action","id","note"}: 422 otherwise;
 * then the note goes down exactly the path of POST /v1/notes or PATCH /v1/notes/{id}: the same field
 * validation, the same guard (on the "webhook" surface, see pk_api_guard), the same store call through
 * bulkhead and breaker, Idempotency-Key for creates, If-Match for updates, cache invalidation and
 * note-change observers. After a valid signature the principal becomes "hook:<name>", so the audit log
 * names the hook and idempotency keys are per hook.
 *
 * Signature failures count against the caller's abuse budget like blocked input (guessing secrets gets
 * the caller refused on its own). The middleware has already parsed the body (JSON routes), so bodies
 * that are not JSON are refused with 400/415 before the signature is looked at; the MAC is always
 * computed over the raw bytes, never over a re-serialisation.
 *
 * The replay cache is process-wide (one per `pake serve`): behind a load balancer, give each instance
 * the same hooks and route a hook's deliveries consistently, or accept that a replay could reach a
 * different instance once within the window (documented in docs/n8n.md).
 */
#include "api/api.h"
#include "core/clock.h"
#include "core/log.h"
#include "net/webhook.h"
#include "server/services.h"
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define REPLAY_CAPACITY 65536

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pk_replay_cache *g_replay; /* created once, lives as long as the process */

static void replay_init(void)
{
    g_replay = pk_replay_cache_new(REPLAY_CAPACITY);
}

static pk_err *unauthorized(pk_req *r, const char *hook, pk_webhook_verdict v)
{
    static const char *const codes[] = {
        [PK_WEBHOOK_MISSING] = "signature_missing",   [PK_WEBHOOK_MALFORMED] = "signature_malformed",
        [PK_WEBHOOK_STALE] = "signature_expired",     [PK_WEBHOOK_BAD_SIGNATURE] = "signature_invalid",
        [PK_WEBHOOK_REPLAYED] = "signature_replayed",
    };
    pk_services_note_blocked(r);
    pk_log_ctx ctx = {r->request_id, r->trace_id, r->span_id};
    char f[160];
    snprintf(f, sizeof f, "\"hook\":\"%s\",\"reason\":\"%s\"", hook, codes[v]);
    pk_log_write(PK_LOG_WARN, &ctx, f, "inbound hook refused: %s", pk_webhook_verdict_message(v));
    static const char challenge[] = "PAKE-HMAC-SHA256 headers=\"X-Pake-Timestamp X-Pake-Signature\"";
    pk_req_add_header(r, "www-authenticate", challenge, sizeof challenge - 1);
    pk_err *e = pk_err_new(codes[v], 401, "%s", pk_webhook_verdict_message(v));
    e->retryable = false;
    return e;
}

static pk_err *check(pk_req *r, const pk_webhook_hook **out)
{
    h2o_iovec_t name = pk_req_param(r, "name");
    const pk_webhook_config *wc = r->srv->cfg.webhooks;
    const pk_webhook_hook *h = wc ? pk_webhook_config_hook(wc, name.base, name.len) : NULL;
    if (!h)
        return pk_err_not_found("no hook named '%.*s'", (int)(name.len > 64 ? 64 : name.len),
                                name.base ? name.base : "");
    size_t tl = 0, sl = 0;
    const char *ts = pk_req_header(r, "x-pake-timestamp", &tl);
    const char *sig = pk_req_header(r, "x-pake-signature", &sl);
    const h2o_iovec_t body = r->h2o->entity;
    int64_t window = r->srv->cfg.hook_replay_window_s;
    int64_t now = pk_wall_ns() / 1000000000LL;
    uint8_t digest[32];
    int64_t t = 0;
    pk_webhook_verdict v =
        pk_webhook_verify(h->secret, strlen(h->secret), ts, tl, sig, sl, body.base ? body.base : "",
                          body.base ? body.len : 0, now, window, digest, &t);
    if (v == PK_WEBHOOK_OK) {
        pthread_once(&g_once, replay_init);
        v = pk_replay_cache_check(g_replay, digest, now, t + window + 1);
    }
    if (v == PK_WEBHOOK_CACHE_FULL) {
        pk_err *e = pk_err_unavailable("%s", pk_webhook_verdict_message(v));
        e->retry_after_s = 1;
        return e;
    }
    if (v != PK_WEBHOOK_OK) return unauthorized(r, h->name, v);
    *out = h;
    return NULL;
}

void pk_api_hook(pk_req *r)
{
    const pk_webhook_hook *h = NULL;
    pk_err *e = check(r, &h);
    pk_hook_body body;
    if (!e) e = pk_hook_body_parse(r->json, &body);
    if (e) return pk_respond_error(r, e);
    snprintf(r->principal, sizeof r->principal, "hook:%s", h->name);
    if (body.action == PK_HOOK_CREATE)
        pk_api_note_create_from(r, body.note);
    else
        pk_api_note_patch_from(r, body.id, body.note);
}
