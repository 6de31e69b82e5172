/*
 * ai.c: the provider object and the way every call to an HTTP provider is made (see ai.h).
 *
 * One operation call (embed a batch, summarise a note) becomes up to max_attempts HTTP attempts:
 *
 *   breaker allow? ── no ──▶ ai_unavailable (fail fast, no retry: the breaker's job is to stop load)
 *        │ yes
 *   POST (timeout = min(ai-timeout-ms, deadline)) ──▶ classify ──▶ breaker record, metrics
 *        │ failed and retryable
 *   pk_retry_should (full jitter, budget, deadline) and max(jitter, Retry-After) still before the
 *   deadline? ── no ──▶ the last error (with "after N attempts")
 *        │ yes: sleep in 50 ms slices, asking keep_going() each slice (task heartbeat / cancel)
 *        └──▶ next attempt
 *
 * Classification is explicit rather than pk_breaker_outcome_of: the breaker should open when the
 * provider is sick (5xx, 429, timeouts, refused connections, garbage bodies), not when our request or
 * configuration is wrong (401, 404, 400, wrong vector length), which no amount of waiting fixes and
 * which would otherwise hide the real message behind "breaker open".
 *
 * The local providers are plain function calls, counted in the same metrics with provider="local".
 */
#include "ai/ai.h"
#include "core/clock.h"
#include "core/id.h"
#include "foundation/metrics.h"
#include "foundation/retry.h"
#include "net/httpc.h"
#include "tasks/tasks.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct endpoint {
    const char *op; /* "embeddings" / "chat" */
    char *url, *model, *auth;
    pk_breaker *breaker;
    bool owns_breaker;
    pk_retry_budget *budget;
} endpoint;

struct pk_ai {
    bool embed_http, chat_http;
    endpoint embed, chat;
    int dims;
    char *embed_model_name;
    int timeout_ms;
    pk_retry_policy policy;
    pk_metric_family *m_calls, *m_duration;
};

static bool empty(const char *s)
{
    return !s || !*s;
}

static bool http_url(const char *s)
{
    return !strncmp(s, "http://", 7) || !strncmp(s, "https://", 8);
}

pk_err *pk_ai_config_check(const pk_ai_config *c)
{
    bool openai = !empty(c->embed_provider) && !strcmp(c->embed_provider, "openai");
    if (!empty(c->embed_provider) && !openai && strcmp(c->embed_provider, "local"))
        return pk_err_new("bad_config", 2, "--embed-provider must be local or openai, got '%s'",
                          c->embed_provider);
    int dims = c->embed_dims ? c->embed_dims : PK_EMBED_DIMS;
    if (dims < 1 || dims > 16384)
        return pk_err_new("bad_config", 2, "--embed-dims must be 1..16384, got %d", dims);
    if (!openai && dims != PK_EMBED_DIMS)
        return pk_err_new(
            "bad_config", 2,
            "--embed-dims must be %d with --embed-provider local (the built-in embedder's size), "
            "got %d",
            PK_EMBED_DIMS, dims);
    if (openai && (empty(c->embed_url) || empty(c->embed_model)))
        return pk_err_new("bad_config", 2,
                          "--embed-provider openai needs --embed-url (e.g. http://127.0.0.1:11434/v1) and "
                          "--embed-model");
    if (openai && !http_url(c->embed_url))
        return pk_err_new("bad_config", 2, "--embed-url must start with http:// or https://");
    if (!empty(c->chat_url) && empty(c->chat_model))
        return pk_err_new("bad_config", 2, "--chat-url needs --chat-model");
    if (!empty(c->chat_url) && !http_url(c->chat_url))
        return pk_err_new("bad_config", 2, "--chat-url must start with http:// or https://");
    if (c->timeout_ms < 0) return pk_err_new("bad_config", 2, "--ai-timeout-ms must be positive");
    return NULL;
}

/* base + "/" + path, unless base already ends with path. */
static char *join_url(const char *base, const char *path)
{
    size_t bl = strlen(base), pl = strlen(path);
    while (bl && base[bl - 1] == '/')
        bl--;
    pk_buf b = PK_BUF_INIT;
    pk_buf_append(&b, base, bl);
    if (bl < pl + 1 || memcmp(base + bl - pl, path, pl) || base[bl - pl - 1] != '/') {
        pk_buf_putc(&b, '/');
        pk_buf_puts(&b, path);
    }
    return pk_buf_steal(&b, NULL);
}

static pk_err *endpoint_init(endpoint *ep, const char *op, const char *base, const char *path,
                             const char *model, const char *key, const pk_ai_config *c)
{
    ep->op = op;
    ep->url = join_url(base, path);
    ep->model = strdup(model);
    if (!empty(key)) {
        pk_buf b = PK_BUF_INIT;
        pk_buf_printf(&b, "Authorization: Bearer %s", key);
        ep->auth = pk_buf_steal(&b, NULL);
    }
    char name[32];
    snprintf(name, sizeof name, "ai.%s", op);
    pk_breaker_config bc;
    pk_breaker_config_init(&bc, name);
    bc.window_size = 20;
    bc.minimum_calls = 5;
    bc.failure_rate_threshold = 50;
    bc.slow_call_duration_ns = (int64_t)(c->timeout_ms ? c->timeout_ms : 30000) * 1000000;
    bc.wait_in_open_ns = (c->breaker_wait_ms ? c->breaker_wait_ms : 30000) * 1000000;
    bc.permitted_calls_in_half_open = 2;
    bc.on_transition = c->on_transition;
    bc.on_transition_ud = c->on_transition_ud;
    pk_err *e = pk_breaker_new(&bc, pk_clock_real(), &ep->breaker);
    if (e) return pk_err_wrap(e, "bad_config", 2, "the %s circuit breaker", name);
    if (c->breakers) {
        e = pk_breaker_registry_add(c->breakers, ep->breaker);
        if (e) {
            ep->breaker = NULL;
            return pk_err_wrap(e, "bad_config", 2, "the %s circuit breaker", name);
        }
    } else {
        ep->owns_breaker = true;
    }
    pk_retry_budget_config rbc = PK_RETRY_BUDGET_DEFAULT;
    ep->budget = pk_retry_budget_new(&rbc, pk_clock_real());
    return NULL;
}

static void endpoint_free(endpoint *ep)
{
    free(ep->url);
    free(ep->model);
    free(ep->auth);
    if (ep->owns_breaker) pk_breaker_free(ep->breaker);
    pk_retry_budget_free(ep->budget);
}

pk_err *pk_ai_new(const pk_ai_config *c, pk_ai **out)
{
    *out = NULL;
    pk_err *e = pk_ai_config_check(c);
    if (e) return e;
    pk_ai *ai = calloc(1, sizeof *ai);
    ai->embed_http = !empty(c->embed_provider) && !strcmp(c->embed_provider, "openai");
    ai->chat_http = !empty(c->chat_url);
    ai->dims = c->embed_dims ? c->embed_dims : PK_EMBED_DIMS;
    ai->embed_model_name = strdup(ai->embed_http ? c->embed_model : PK_EMBED_MODEL);
    ai->timeout_ms = c->timeout_ms ? c->timeout_ms : 30000;
    ai->policy = (pk_retry_policy){.max_attempts = c->max_attempts ? c->max_attempts : 3,
                                   .base_ms = c->retry_base_ms ? c->retry_base_ms : 200,
                                   .cap_ms = c->retry_cap_ms ? c->retry_cap_ms : 5000};
    if (ai->embed_http)
        e = endpoint_init(&ai->embed, "embeddings", c->embed_url, "embeddings", c->embed_model,
                          c->embed_api_key, c);
    if (!e && ai->chat_http)
        e = endpoint_init(&ai->chat, "chat", c->chat_url, "chat/completions", c->chat_model, c->chat_api_key,
                          c);
    if (e) {
        pk_ai_free(ai);
        return e;
    }
    if (c->metrics) {
        const char *lc[] = {"provider", "operation", "outcome"};
        ai->m_calls = pk_metrics_counter(
            c->metrics, "pake_ai_requests_total",
            "Calls to AI providers (each HTTP attempt, each local call), by outcome.", 3, lc);
        static const double buckets[] = {0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                         0.5,    1,     2.5,   5,    10,    30,   60};
        ai->m_duration = pk_metrics_histogram(c->metrics, "pake_ai_request_duration_seconds",
                                              "Duration of calls to AI providers.", 2, lc, buckets,
                                              sizeof buckets / sizeof *buckets);
    }
    *out = ai;
    return NULL;
}

void pk_ai_free(pk_ai *ai)
{
    if (!ai) return;
    endpoint_free(&ai->embed);
    endpoint_free(&ai->chat);
    free(ai->embed_model_name);
    free(ai);
}

const char *pk_ai_embed_model(const pk_ai *ai)
{
    return ai->embed_model_name;
}

int pk_ai_embed_dims(const pk_ai *ai)
{
    return ai->dims;
}

const char *pk_ai_embed_provider(const pk_ai *ai)
{
    return ai->embed_http ? "openai" : "local";
}

const char *pk_ai_chat_provider(const pk_ai *ai)
{
    return ai->chat_http ? "openai" : "local";
}

pk_breaker *pk_ai_breaker(pk_ai *ai, const char *operation)
{
    if (!strcmp(operation, "embeddings")) return ai->embed_http ? ai->embed.breaker : NULL;
    if (!strcmp(operation, "chat")) return ai->chat_http ? ai->chat.breaker : NULL;
    return NULL;
}

static void count(pk_ai *ai, const char *provider, const char *op, const char *outcome, int64_t ns)
{
    const char *lv[] = {provider, op, outcome};
    pk_metric_counter_add(ai->m_calls, lv, 3, 1);
    pk_metric_histogram_observe(ai->m_duration, lv, 2, (double)ns / 1e9);
}

/* ---- one HTTP attempt ------------------------------------------------------------------------ */

typedef pk_err *(*parse_fn)(void *ud, const char *body, size_t len);

typedef struct attempt_result {
    int64_t retry_after_ms; /* from the answer, -1 when none */
    bool breaker_open;
} attempt_result;

/* The provider's answer as an error: HTTP status, its own message when the body has one. */
static pk_err *status_error(const endpoint *ep, const pk_httpc_resp *resp, const char **outcome,
                            pk_breaker_outcome *bo)
{
    pk_buf m = PK_BUF_INIT;
    if (!pk_ai_error_message(resp->body.data, resp->body.len, &m)) pk_buf_puts(&m, "no error message");
    long st = resp->status;
    pk_err *e;
    if (st == 429 || st >= 500) {
        *outcome = st == 429 ? "rate_limited" : "server_error";
        e = pk_err_new("ai_unavailable", 503, "the %s provider (model %s) answered HTTP %ld: %s", ep->op,
                       ep->model, st, m.data);
    } else if (st == 408) {
        *outcome = "timeout";
        e = pk_err_new("ai_timeout", 504, "the %s provider (model %s) answered HTTP 408: %s", ep->op,
                       ep->model, m.data);
    } else if (st >= 400) {
        *outcome = "client_error";
        *bo = PK_OUTCOME_IGNORED;
        e = pk_err_new("ai_rejected", 502, "the %s provider (model %s) refused the request with HTTP %ld: %s",
                       ep->op, ep->model, st, m.data);
        e->retryable = false;
    } else {
        *outcome = "bad_response";
        e = pk_err_new("ai_bad_response", 502, "the %s provider answered HTTP %ld", ep->op, st);
        e->retryable = false;
    }
    pk_buf_free(&m);
    return e;
}

static pk_err *attempt(pk_ai *ai, endpoint *ep, const pk_buf *body, int64_t deadline, parse_fn parse,
                       void *ud, attempt_result *res)
{
    res->retry_after_ms = -1;
    res->breaker_open = false;
    pk_breaker_permit permit;
    if (!pk_breaker_allow(ep->breaker, &permit)) {
        count(ai, "openai", ep->op, "breaker_open", 0);
        res->breaker_open = true;
        pk_err *e = pk_err_new("ai_unavailable", 503,
                               "the %s provider is failing: circuit breaker %s is open, retry in %lld ms",
                               ep->op, pk_breaker_name(ep->breaker), (long long)permit.retry_after_ms);
        e->retry_after_s = (int)((permit.retry_after_ms + 999) / 1000);
        if (e->retry_after_s < 1) e->retry_after_s = 1;
        return e;
    }
    const char *headers[3] = {"Content-Type: application/json", "Accept: application/json", ep->auth};
    pk_httpc_req req = {.method = "POST",
                        .url = ep->url,
                        .headers = headers,
                        .nheaders = ep->auth ? 3 : 2,
                        .body = body->data,
                        .body_len = body->len,
                        .timeout_ms = ai->timeout_ms,
                        .deadline_ns = deadline == PK_DEADLINE_NONE ? 0 : deadline};
    pk_httpc_resp resp = {0};
    int64_t t0 = pk_mono_ns();
    pk_err *e = pk_httpc_do(&req, &resp);
    int64_t dt = pk_mono_ns() - t0;
    const char *outcome = "success";
    pk_breaker_outcome bo = PK_OUTCOME_FAILURE;
    if (e) {
        bool timeout = pk_err_is(e, "upstream_timeout");
        bool config = pk_err_is(e, "bad_config");
        outcome = timeout ? "timeout" : "transport_error";
        if (config) bo = PK_OUTCOME_IGNORED;
        pk_err *w = pk_err_wrap(e,
                                timeout  ? "ai_timeout"
                                : config ? "ai_rejected"
                                         : "ai_unavailable",
                                timeout  ? 504
                                : config ? 502
                                         : 503,
                                "the %s provider at %s: %s", ep->op, ep->url, e->message);
        e = w;
    } else if (resp.status >= 200 && resp.status < 300) {
        e = parse(ud, resp.body.data, resp.body.len);
        if (!e) {
            bo = PK_OUTCOME_SUCCESS;
        } else {
            outcome = "bad_response";
            /* garbage is a sick provider; a well-formed but unusable answer is our configuration */
            if (!e->retryable) bo = PK_OUTCOME_IGNORED;
        }
    } else {
        e = status_error(ep, &resp, &outcome, &bo);
        if (resp.status == 429 || resp.status == 503) res->retry_after_ms = resp.retry_after_ms;
        if (res->retry_after_ms > 0) e->retry_after_s = (int)((res->retry_after_ms + 999) / 1000);
    }
    pk_breaker_record(ep->breaker, &permit, bo, dt);
    count(ai, "openai", ep->op, outcome, dt);
    pk_httpc_resp_free(&resp);
    return e;
}

/* Sleeps ns in slices, asking keep_going; false when told to stop. */
static bool sleep_checked(const pk_ai_call *call, int64_t ns)
{
    int64_t end = pk_mono_ns() + ns;
    for (;;) {
        if (call && call->keep_going && !call->keep_going(call->ud)) return false;
        int64_t left = end - pk_mono_ns();
        if (left <= 0) return true;
        struct timespec d = {0, left < 50000000 ? left : 50000000};
        nanosleep(&d, NULL);
    }
}

/* The final error says how many attempts were made and, when the breaker refused the last one, what
 * the attempt before it got (the cause, which "breaker open" alone would hide). */
static void note_attempts(pk_err *e, int n, const char *previous)
{
    if (n < 2) return;
    pk_buf b = PK_BUF_INIT;
    pk_buf_printf(&b, "%s (after %d attempts", e->message, n);
    if (previous) pk_buf_printf(&b, "; the previous one: %s", previous);
    pk_buf_putc(&b, ')');
    free(e->message);
    e->message = pk_buf_steal(&b, NULL);
}

static pk_err *call_http(pk_ai *ai, endpoint *ep, const pk_buf *body, const pk_ai_call *call, parse_fn parse,
                         void *ud)
{
    int64_t deadline = call && call->deadline_ns ? call->deadline_ns : PK_DEADLINE_NONE;
    pk_retry_budget_note_request(ep->budget);
    char *previous = NULL;
    pk_err *e = NULL;
    for (int a = 0;; a++) {
        attempt_result res;
        e = attempt(ai, ep, body, deadline, parse, ud, &res);
        if (!e) break;
        int64_t sleep_ns = 0;
        bool again = !res.breaker_open &&
                     pk_retry_should(&ai->policy, ep->budget, e, a, pk_mono_ns(), deadline, &sleep_ns);
        if (again && res.retry_after_ms > 0 && res.retry_after_ms * 1000000 > sleep_ns) {
            sleep_ns = res.retry_after_ms * 1000000;
            /* the provider asked for more time than we have */
            again = deadline == PK_DEADLINE_NONE || pk_mono_ns() + sleep_ns < deadline;
        }
        if (!again) {
            note_attempts(e, a + 1, res.breaker_open ? previous : NULL);
            break;
        }
        if (!sleep_checked(call, sleep_ns)) {
            e = pk_err_wrap(e, "ai_stopped", 503, "the %s call was stopped between attempts: %s", ep->op,
                            e->message);
            e->retryable = true;
            break;
        }
        free(previous);
        previous = e->message;
        e->message = NULL;
        pk_err_free(e);
    }
    free(previous);
    return e;
}

/* ---- embeddings ------------------------------------------------------------------------------ */

typedef struct embed_ud {
    size_t n;
    int dims;
    float *out;
} embed_ud;

static pk_err *parse_embed(void *ud, const char *body, size_t len)
{
    embed_ud *u = ud;
    return pk_ai_parse_embeddings(body, len, u->n, u->dims, u->out);
}

pk_err *pk_ai_embed(pk_ai *ai, const pk_ai_call *call, const char *const *texts, const size_t *lens, size_t n,
                    float *out)
{
    if (!ai->embed_http) {
        int64_t t0 = pk_mono_ns();
        for (size_t i = 0; i < n; i++)
            pk_embed_text(texts[i], lens[i], out + i * PK_EMBED_DIMS);
        count(ai, "local", "embeddings", "success", pk_mono_ns() - t0);
        return NULL;
    }
    pk_err *e = NULL;
    for (size_t off = 0; off < n && !e; off += PK_AI_MAX_BATCH) {
        size_t m = n - off < PK_AI_MAX_BATCH ? n - off : PK_AI_MAX_BATCH;
        pk_buf body = PK_BUF_INIT;
        pk_ai_embeddings_request(ai->embed.model, texts + off, lens + off, m, &body);
        embed_ud u = {m, ai->dims, out + off * (size_t)ai->dims};
        e = call_http(ai, &ai->embed, &body, call, parse_embed, &u);
        pk_buf_free(&body);
    }
    return e;
}

/* ---- summaries ------------------------------------------------------------------------------- */

static pk_err *parse_chat(void *ud, const char *body, size_t len)
{
    pk_buf *out = ud;
    pk_buf_reset(out);
    return pk_ai_parse_chat(body, len, out);
}

pk_err *pk_ai_summarize(pk_ai *ai, const pk_ai_call *call, const char *title, const char *content,
                        pk_buf *out)
{
    if (!ai->chat_http) {
        int64_t t0 = pk_mono_ns();
        size_t before = out->len;
        pk_summarize(content, strlen(content), 3, 600, out);
        if (out->len == before) pk_buf_puts(out, title);
        count(ai, "local", "chat", "success", pk_mono_ns() - t0);
        return NULL;
    }
    char nonce[17];
    uint64_t r = pk_rand64();
    pk_hex(&r, sizeof r, nonce);
    pk_buf body = PK_BUF_INIT, answer = PK_BUF_INIT;
    pk_ai_chat_request(ai->chat.model, title, content, nonce, &body);
    pk_err *e = call_http(ai, &ai->chat, &body, call, parse_chat, &answer);
    if (!e) pk_buf_append(out, answer.data, answer.len);
    pk_buf_free(&body);
    pk_buf_free(&answer);
    return e;
}
