/*
 * webhook: the signed webhooks between PAKE and a workflow engine such as n8n (docs/n8n.md).
 *
 * Both directions use one scheme:
 *   X-Pake-Timestamp: <unix seconds, decimal, 1..12 digits>
 *   X-Pake-Signature: sha256=<64 hex digits>
 *   signature = HMAC-SHA256(secret, timestamp + "." + body)
 * where `timestamp` is the exact header value's digits, "." one ASCII full stop, and `body` the exact
 * bytes of the HTTP body (no re-serialisation). Binding the timestamp into the MAC lets a receiver
 * refuse old deliveries (replay window) without trusting an unsigned header.
 *
 * Outbound (workflow.trigger, src/tasks/workflow.c): PAKE signs each attempt with the workflow's
 * secret. Inbound (POST /v1/hooks/{name}, src/api/hooks.c): PAKE verifies with the hook's secret,
 * refuses timestamps more than the window away from its clock (either side), and refuses a signature
 * it has already accepted within the window (pk_replay_cache).
 *
 * Configuration lists (pk_webhook_config): --workflows NAME=URL,..., --workflow-secret,
 * --workflow-secrets NAME=SECRET,..., --workflow-triggers EVENT=NAME|NAME,..., --hooks NAME=SECRET,...
 * Parsing validates everything (names, URLs, secrets, references); error messages name the setting and
 * the entry's name but never a secret.
 *
 * Thread-safety: the functions are pure apart from pk_replay_cache, whose calls are serialised by its
 * own mutex. A parsed pk_webhook_config is read-only and may be shared by all threads.
 */
#ifndef PAKE_NET_WEBHOOK_H
#define PAKE_NET_WEBHOOK_H
#include "core/err.h"
#include "core/json.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PK_WEBHOOK_SECRET_MIN 16 /* characters */
#define PK_WEBHOOK_NAME_MAX 64
#define PK_WEBHOOK_MAX_WORKFLOWS 64
#define PK_WEBHOOK_MAX_HOOKS 64
#define PK_WEBHOOK_HEX 65 /* 64 hex digits + NUL */

/* The note events a workflow may subscribe to. */
typedef enum { PK_WEBHOOK_NOTE_CREATED, PK_WEBHOOK_NOTE_UPDATED, PK_WEBHOOK__EVENTS } pk_webhook_event;
const char *pk_webhook_event_name(pk_webhook_event e); /* "note.created", "note.updated" */

/* ---- signatures ---- */

/* Lower-case hex HMAC-SHA256(secret, "<ts>." body) into out. */
void pk_webhook_sign(const char *secret, size_t slen, int64_t ts, const char *body, size_t blen,
                     char out[PK_WEBHOOK_HEX]);
/* "X-Pake-Signature" value for a hex digest: "sha256=<hex>" (out: 72 bytes). */
void pk_webhook_signature_header(const char hex[PK_WEBHOOK_HEX], char out[72]);

/* X-Pake-Timestamp: 1..12 ASCII digits (optional surrounding spaces/tabs). 0 ok, -1 malformed. */
int pk_webhook_parse_timestamp(const char *v, size_t n, int64_t *ts);
/* X-Pake-Signature: "sha256=" + 64 hex digits (either case; optional surrounding spaces/tabs).
 * 0 ok (digest filled), -1 malformed. */
int pk_webhook_parse_signature(const char *v, size_t n, uint8_t digest[32]);

typedef enum {
    PK_WEBHOOK_OK,
    PK_WEBHOOK_MISSING,       /* a header is absent */
    PK_WEBHOOK_MALFORMED,     /* a header does not parse */
    PK_WEBHOOK_STALE,         /* timestamp outside the window */
    PK_WEBHOOK_BAD_SIGNATURE, /* MAC mismatch (compared in constant time) */
    PK_WEBHOOK_REPLAYED,      /* the same signature was accepted within the window */
    PK_WEBHOOK_CACHE_FULL,    /* the replay cache has no room: refused (fail closed) */
} pk_webhook_verdict;
const char *pk_webhook_verdict_message(pk_webhook_verdict v);

/* Checks the two header values (NULL = absent) over body with secret at now_s: the timestamp must be
 * within window_s of now_s (both directions) and the MAC must match. On OK, digest (the MAC) and *ts
 * are filled for the replay check. Does not consult any replay cache. */
pk_webhook_verdict pk_webhook_verify(const char *secret, size_t slen, const char *ts_hdr, size_t ts_len,
                                     const char *sig_hdr, size_t sig_len, const char *body, size_t blen,
                                     int64_t now_s, int64_t window_s, uint8_t digest[32], int64_t *ts);

/* ---- replay cache ----
 * Remembers accepted signatures until their timestamp + window has passed (after that the timestamp
 * check refuses them anyway). Fixed memory: `capacity` slots (rounded up to a power of two) of open
 * addressing with a bounded probe run; expired slots are reused. When every slot of a digest's probe
 * run holds a live entry the request is refused (PK_WEBHOOK_CACHE_FULL) rather than forgotten, so a
 * flood can never make a replay pass. */
typedef struct pk_replay_cache pk_replay_cache;
pk_replay_cache *pk_replay_cache_new(size_t capacity);
void pk_replay_cache_free(pk_replay_cache *c);
/* OK (remembered until expires_s), REPLAYED or CACHE_FULL. */
pk_webhook_verdict pk_replay_cache_check(pk_replay_cache *c, const uint8_t digest[32], int64_t now_s,
                                         int64_t expires_s);
size_t pk_replay_cache_live(pk_replay_cache *c, int64_t now_s); /* entries not yet expired */

/* ---- the inbound hook body ----
 * {"action":"create","note":{...}} or {"action":"update","id":"<uuid>","note":{...}}. The note object
 * is validated later by the note rules (api_util.c); this checks the envelope. Errors: 422
 * validation_failed with field errors. `note` points into `body`. */
typedef enum { PK_HOOK_CREATE, PK_HOOK_UPDATE } pk_hook_action;
typedef struct pk_hook_body {
    pk_hook_action action;
    char id[37]; /* update: lower-case UUID */
    const cJSON *note;
} pk_hook_body;
pk_err *pk_hook_body_parse(const cJSON *body, pk_hook_body *out);

/* ---- configuration ---- */
typedef struct pk_webhook_workflow {
    char *name, *url, *secret;
} pk_webhook_workflow;

typedef struct pk_webhook_hook {
    char *name, *secret;
} pk_webhook_hook;

typedef struct pk_webhook_config {
    pk_webhook_workflow workflows[PK_WEBHOOK_MAX_WORKFLOWS];
    size_t nworkflows;
    pk_webhook_hook hooks[PK_WEBHOOK_MAX_HOOKS];
    size_t nhooks;
    uint64_t subscribers[PK_WEBHOOK__EVENTS]; /* bit i: workflows[i] subscribes to the event */
} pk_webhook_config;

typedef struct pk_webhook_settings {
    const char *workflows; /* "name=url,..." */
    const char *secret;    /* default signing secret */
    const char *secrets;   /* "name=secret,..." per-workflow overrides */
    const char *triggers;  /* "note.created=a|b,note.updated=b" */
    const char *hooks;     /* "name=secret,..." */
} pk_webhook_settings;

/* Parses and validates; every error is "bad_config" (status 2). *out is zeroed first; free with
 * pk_webhook_config_free (also after an error). */
pk_err *pk_webhook_config_parse(const pk_webhook_settings *in, pk_webhook_config *out);
void pk_webhook_config_free(pk_webhook_config *c);
const pk_webhook_workflow *pk_webhook_config_workflow(const pk_webhook_config *c, const char *name);
const pk_webhook_hook *pk_webhook_config_hook(const pk_webhook_config *c, const char *name, size_t n);
/* Comma-separated workflow names (for error messages) into out. */
void pk_webhook_config_workflow_names(const pk_webhook_config *c, char *out, size_t cap);
#endif
