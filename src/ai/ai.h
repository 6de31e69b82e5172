/*
 * ai: the AI providers behind the task handlers and semantic search. One pk_ai per server answers two
 * operations, each served by a local built-in or by an OpenAI-compatible HTTP API:
 *
 *   embeddings  local: the deterministic feature-hashing embedder (pk_embed_text, 384 dimensions);
 *               openai: POST {embed-url}/embeddings {"model","input":[...]} (OpenAI, Ollama,
 *               llama.cpp server, vLLM, ...). Used for note.embed AND for the query vector of
 *               semantic/hybrid search, so notes and queries always share one model.
 *   chat        local: the extractive summariser (pk_summarize); openai (when chat-url is set):
 *               POST {chat-url}/chat/completions with a system prompt that declares the note untrusted
 *               data, the note delimited by random markers, answer = choices[0].message.content.
 *
 * Every call to an HTTP provider goes: breaker ("ai.embeddings" / "ai.chat", registered in the
 * server's breaker registry) -> POST (timeout = min(ai-timeout-ms, the caller's deadline)) -> outcome.
 * Retryable failures (transport errors, timeouts, 408, 429, 5xx, a malformed 2xx body) are retried
 * with full-jitter backoff inside a per-operation retry budget; a Retry-After on 429/503 is honoured
 * (the sleep is at least that long), and a retry that could not start before the deadline is not made.
 * Not retried: other 4xx (400 bad request, 401/403 key, 404 model or URL), vectors of the wrong length,
 * a missing or non-text answer. Provider 4xx and wrong lengths do not count against the breaker (they
 * say nothing about its health); 5xx, 429, timeouts, transport errors and malformed bodies do.
 *
 * Vectors are L2-normalised before they are returned (a zero vector stays zero).
 *
 * Errors (pk_err codes; the message names the provider operation, HTTP status and the provider's own
 * error message when it sent one):
 *   "ai_unavailable"   503, retryable: the breaker is open (retry_after_s set), or the provider is
 *                      unreachable / answered 5xx or 429 through every attempt
 *   "ai_timeout"       504, retryable: the provider did not answer in time
 *   "ai_rejected"      502, not retryable: the provider refused the request (4xx other than 408/429)
 *   "ai_bad_response"  502: an unparseable answer (retryable) or a well-formed one that cannot be used:
 *                      wrong dimensions, missing items, no text (not retryable)
 *   "ai_stopped"       503, retryable: the caller's keep_going said stop between attempts
 *
 * Metrics (registered by pk_ai_new when a registry is given): pake_ai_requests_total{provider,
 * operation,outcome} per provider call (each HTTP attempt, each local call), and
 * pake_ai_request_duration_seconds{provider,operation}.
 *
 * Thread-safety: a pk_ai is immutable after pk_ai_new except for its breakers, budgets and metrics,
 * which are thread-safe; every function may be called from any worker or offload thread. Calls to an
 * HTTP provider BLOCK (never call them on an event-loop thread). Local calls are pure CPU.
 */
#ifndef PAKE_AI_AI_H
#define PAKE_AI_AI_H
#include "core/buf.h"
#include "core/err.h"
#include "foundation/breaker.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pk_metrics;

/* Inputs longer than this are cut (at a UTF-8 boundary) before they are sent to an embeddings API. */
#define PK_AI_MAX_EMBED_INPUT 32768
/* The note text sent to a chat API is cut to this many bytes. */
#define PK_AI_MAX_CHAT_INPUT 24000
/* A chat answer is cut to this many bytes before it is stored. */
#define PK_AI_MAX_SUMMARY 2000
/* At most this many inputs go into one embeddings request (bigger batches are split). */
#define PK_AI_MAX_BATCH 64

typedef struct pk_ai_config {
    const char *embed_provider; /* "local" (default when NULL or empty) or "openai" */
    const char *embed_url;      /* base URL, e.g. http://127.0.0.1:11434/v1 (no trailing /embeddings) */
    const char *embed_model;
    const char *embed_api_key; /* empty or NULL: no Authorization header */
    int embed_dims;            /* 0 = 384; must be 384 with the local provider */
    const char *chat_url;      /* empty or NULL: the local extractive summariser */
    const char *chat_model;
    const char *chat_api_key;
    int timeout_ms;                      /* one HTTP call; 0 = 30000 */
    int max_attempts;                    /* per operation call, HTTP attempts in total; 0 = 3 */
    int64_t retry_base_ms, retry_cap_ms; /* full jitter; 0 = 200 / 5000 */
    /* Breakers "ai.embeddings" and "ai.chat" (only for HTTP providers) are added to this registry
     * (which then owns them) when non-NULL; otherwise pk_ai owns them. */
    pk_breaker_registry *breakers;
    pk_breaker_transition_fn on_transition;
    void *on_transition_ud;
    int64_t breaker_wait_ms;    /* time open before probing; 0 = 30000 */
    struct pk_metrics *metrics; /* optional */
} pk_ai_config;

/* Start-up validation of the settings, with flag names in the messages. Errors: "bad_config" (status
 * 2): unknown provider; openai without embed-url or embed-model; local with embed-dims != 384;
 * embed-dims outside 1..16384; chat-url without chat-model; a URL that is not http(s)://. */
pk_err *pk_ai_config_check(const pk_ai_config *cfg);

typedef struct pk_ai pk_ai;

/* Checks the config (pk_ai_config_check) and builds the providers, breakers and metric families.
 * Makes no network call. */
pk_err *pk_ai_new(const pk_ai_config *cfg, pk_ai **out);
void pk_ai_free(pk_ai *ai);

/* The name stored with each vector ("pake-hash-384-v1" for local, else embed-model) and its length.
 * A change of either makes stored vectors stale (they are re-embedded, and ignored by search). */
const char *pk_ai_embed_model(const pk_ai *ai);
int pk_ai_embed_dims(const pk_ai *ai);
/* "local" or "openai". */
const char *pk_ai_embed_provider(const pk_ai *ai);
const char *pk_ai_chat_provider(const pk_ai *ai);
/* The breaker of an HTTP provider ("embeddings" or "chat"), or NULL for a local one. */
pk_breaker *pk_ai_breaker(pk_ai *ai, const char *operation);

/* Per call: the caller's deadline and an optional stop check, called between attempts and during
 * backoff sleeps (a task handler passes its pk_task_check, so heartbeats go on and a cancel stops
 * the retries). */
typedef struct pk_ai_call {
    int64_t deadline_ns; /* pk_mono_ns based; 0 = none (ai-timeout-ms still bounds each attempt) */
    bool (*keep_going)(void *ud);
    void *ud;
} pk_ai_call;

/* Embeds n texts (texts[i] of lens[i] bytes) into out[n * pk_ai_embed_dims(ai)], each row
 * L2-normalised. `call` may be NULL. On error `out` is unspecified. */
pk_err *pk_ai_embed(pk_ai *ai, const pk_ai_call *call, const char *const *texts, const size_t *lens, size_t n,
                    float *out);

/* A summary of a note (title + content) appended to `out`: the chat provider's answer (trimmed, a
 * leading <think>...</think> block dropped, cut to PK_AI_MAX_SUMMARY bytes at a UTF-8 boundary) or the
 * local extractive summary (3 sentences, ~600 characters; the title when nothing is left). */
pk_err *pk_ai_summarize(pk_ai *ai, const pk_ai_call *call, const char *title, const char *content,
                        pk_buf *out);

/*
 * The OpenAI wire format as pure functions (ai/openai.c; unit-tested and fuzzed, no I/O).
 */

/* {"model":...,"input":[...]} with each input cut to PK_AI_MAX_EMBED_INPUT bytes. */
void pk_ai_embeddings_request(const char *model, const char *const *texts, const size_t *lens, size_t n,
                              pk_buf *out);
/* Parses an /embeddings 2xx body into out[n * dims] (rows by "index", which must cover 0..n-1 exactly
 * once; items without "index" are taken in order). Vectors are L2-normalised. Errors: "ai_bad_response"
 * (malformed JSON or shape: retryable; wrong length, missing/duplicate items, non-numeric values,
 * base64 strings: not retryable). */
pk_err *pk_ai_parse_embeddings(const char *body, size_t len, size_t n, int dims, float *out);

/* {"model":...,"messages":[system, user]}: the system prompt tells the model that the note is
 * untrusted data and never instructions; the user message holds the note between markers that carry
 * `nonce` (so the note cannot close them). */
void pk_ai_chat_request(const char *model, const char *title, const char *content, const char *nonce,
                        pk_buf *out);
/* Parses a /chat/completions 2xx body: choices[0].message.content, cleaned as pk_ai_summarize says,
 * appended to out. Errors: "ai_bad_response" (malformed: retryable; no choices, null or empty
 * content: not retryable). */
pk_err *pk_ai_parse_chat(const char *body, size_t len, pk_buf *out);

/* The provider's error text from an error body ({"error":{"message","type","code"}}, {"error":"..."},
 * {"message":"..."} or {"detail":"..."}), sanitised (printable, at most ~300 bytes) into out; false when
 * the body holds none. */
bool pk_ai_error_message(const char *body, size_t len, pk_buf *out);

/* L2-normalises v[dims] in place (a zero vector stays zero). */
void pk_ai_normalize(float *v, int dims);
#endif
