/*
 * webhook.c: the signature scheme, the replay cache, the hook body envelope and the configuration
 * lists (see webhook.h).
 *
 * The MAC is computed with OpenSSL's one-shot HMAC over "<ts>." followed by the body (fed through one
 * EVP_MAC context, so the body is never copied) and compared with CRYPTO_memcmp, whose run time does
 * not depend on where the first difference is.
 *
 * Replay cache: slots are indexed by the digest's first 8 bytes (the digest is already uniformly
 * random, no extra hashing). A lookup always scans the whole probe run of PROBE slots, so a live entry
 * is found wherever in the run it was put, whatever expired in between. Insertion takes the first dead
 * slot of the run; a run without one refuses the request (fail closed).
 */
#include "net/webhook.h"
#include "core/buf.h"
#include "core/id.h"
#include <ctype.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *pk_webhook_event_name(pk_webhook_event e)
{
    return e == PK_WEBHOOK_NOTE_CREATED   ? "note.created"
           : e == PK_WEBHOOK_NOTE_UPDATED ? "note.updated"
                                          : "?";
}

/* ---- signatures ------------------------------------------------------------------------------ */

static void mac(const char *secret, size_t slen, int64_t ts, const char *body, size_t blen, uint8_t md[32])
{
    char prefix[32];
    int pl = snprintf(prefix, sizeof prefix, "%lld.", (long long)ts);
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    size_t outl = 0;
    /* an empty key is legal HMAC; OpenSSL wants a non-NULL pointer */
    bool ok = ctx && EVP_MAC_init(ctx, (const unsigned char *)(slen ? secret : ""), slen, params) &&
              EVP_MAC_update(ctx, (const unsigned char *)prefix, (size_t)pl) &&
              (!blen || EVP_MAC_update(ctx, (const unsigned char *)body, blen)) &&
              EVP_MAC_final(ctx, md, &outl, 32) && outl == 32;
    if (!ok) memset(md, 0, 32); /* never matches a real signature: verification fails closed */
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m);
}

void pk_webhook_sign(const char *secret, size_t slen, int64_t ts, const char *body, size_t blen,
                     char out[PK_WEBHOOK_HEX])
{
    uint8_t md[32];
    mac(secret, slen, ts, body, blen, md);
    pk_hex(md, sizeof md, out);
}

void pk_webhook_signature_header(const char hex[PK_WEBHOOK_HEX], char out[72])
{
    snprintf(out, 72, "sha256=%s", hex);
}

static void trim(const char **v, size_t *n)
{
    while (*n && (**v == ' ' || **v == '\t'))
        (*v)++, (*n)--;
    while (*n && ((*v)[*n - 1] == ' ' || (*v)[*n - 1] == '\t'))
        (*n)--;
}

int pk_webhook_parse_timestamp(const char *v, size_t n, int64_t *ts)
{
    if (!v) return -1;
    trim(&v, &n);
    if (n == 0 || n > 12) return -1;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') return -1;
        x = x * 10 + (v[i] - '0');
    }
    *ts = x;
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int pk_webhook_parse_signature(const char *v, size_t n, uint8_t digest[32])
{
    if (!v) return -1;
    trim(&v, &n);
    if (n != 7 + 64 || strncasecmp(v, "sha256=", 7) != 0) return -1;
    uint8_t d[32];
    for (size_t i = 0; i < 32; i++) {
        int hi = hexval(v[7 + 2 * i]), lo = hexval(v[8 + 2 * i]);
        if (hi < 0 || lo < 0) return -1;
        d[i] = (uint8_t)(hi << 4 | lo);
    }
    memcpy(digest, d, 32);
    return 0;
}

const char *pk_webhook_verdict_message(pk_webhook_verdict v)
{
    switch (v) {
    case PK_WEBHOOK_OK:
        return "ok";
    case PK_WEBHOOK_MISSING:
        return "X-Pake-Timestamp and X-Pake-Signature are required";
    case PK_WEBHOOK_MALFORMED:
        return "X-Pake-Timestamp must be Unix seconds and X-Pake-Signature sha256=<64 hex digits>";
    case PK_WEBHOOK_STALE:
        return "X-Pake-Timestamp is outside the replay window";
    case PK_WEBHOOK_BAD_SIGNATURE:
        return "the signature does not match";
    case PK_WEBHOOK_REPLAYED:
        return "this signature was already used (replay)";
    case PK_WEBHOOK_CACHE_FULL:
        return "too many recent hook deliveries to check for replays; try again later";
    }
    return "?";
}

pk_webhook_verdict pk_webhook_verify(const char *secret, size_t slen, const char *ts_hdr, size_t ts_len,
                                     const char *sig_hdr, size_t sig_len, const char *body, size_t blen,
                                     int64_t now_s, int64_t window_s, uint8_t digest[32], int64_t *ts)
{
    if (!ts_hdr || !sig_hdr) return PK_WEBHOOK_MISSING;
    int64_t t;
    uint8_t given[32];
    if (pk_webhook_parse_timestamp(ts_hdr, ts_len, &t) || pk_webhook_parse_signature(sig_hdr, sig_len, given))
        return PK_WEBHOOK_MALFORMED;
    if (t < now_s - window_s || t > now_s + window_s) return PK_WEBHOOK_STALE;
    uint8_t want[32];
    mac(secret, slen, t, body, blen, want);
    if (CRYPTO_memcmp(want, given, 32) != 0) return PK_WEBHOOK_BAD_SIGNATURE;
    memcpy(digest, want, 32);
    *ts = t;
    return PK_WEBHOOK_OK;
}

/* ---- replay cache ---------------------------------------------------------------------------- */

#define PROBE 32

typedef struct slot {
    uint8_t digest[32];
    int64_t expires_s; /* 0 = never used */
} slot;

struct pk_replay_cache {
    pthread_mutex_t mu;
    slot *slots;
    size_t mask;
};

pk_replay_cache *pk_replay_cache_new(size_t capacity)
{
    size_t n = PROBE;
    while (n < capacity)
        n <<= 1;
    pk_replay_cache *c = calloc(1, sizeof *c);
    c->slots = calloc(n, sizeof *c->slots);
    c->mask = n - 1;
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void pk_replay_cache_free(pk_replay_cache *c)
{
    if (!c) return;
    pthread_mutex_destroy(&c->mu);
    free(c->slots);
    free(c);
}

pk_webhook_verdict pk_replay_cache_check(pk_replay_cache *c, const uint8_t digest[32], int64_t now_s,
                                         int64_t expires_s)
{
    uint64_t h;
    memcpy(&h, digest, sizeof h);
    pthread_mutex_lock(&c->mu);
    slot *free_slot = NULL;
    for (size_t i = 0; i < PROBE; i++) {
        slot *s = &c->slots[(h + i) & c->mask];
        bool live = s->expires_s > now_s;
        if (live && !memcmp(s->digest, digest, 32)) {
            pthread_mutex_unlock(&c->mu);
            return PK_WEBHOOK_REPLAYED;
        }
        if (!live && !free_slot) free_slot = s;
    }
    if (free_slot) {
        memcpy(free_slot->digest, digest, 32);
        free_slot->expires_s = expires_s > now_s ? expires_s : now_s + 1;
    }
    pthread_mutex_unlock(&c->mu);
    return free_slot ? PK_WEBHOOK_OK : PK_WEBHOOK_CACHE_FULL;
}

size_t pk_replay_cache_live(pk_replay_cache *c, int64_t now_s)
{
    size_t n = 0;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i <= c->mask; i++)
        n += c->slots[i].expires_s > now_s;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* ---- the hook body --------------------------------------------------------------------------- */

static void field_error(pk_err **ve, const char *field, const char *msg)
{
    if (!*ve) *ve = pk_err_invalid("the hook body is invalid");
    pk_err_add_field(*ve, field, "%s", msg);
}

pk_err *pk_hook_body_parse(const cJSON *body, pk_hook_body *out)
{
    memset(out, 0, sizeof *out);
    if (!cJSON_IsObject(body)) return pk_err_invalid("the hook body must be a JSON object");
    pk_err *ve = NULL;
    for (const cJSON *c = body->child; c; c = c->next)
        if (strcmp(c->string, "action") && strcmp(c->string, "note") && strcmp(c->string, "id"))
            field_error(&ve, c->string, "is not a known field (action, id, note)");
    const cJSON *action = cJSON_GetObjectItemCaseSensitive(body, "action");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(body, "id");
    const cJSON *note = cJSON_GetObjectItemCaseSensitive(body, "note");
    if (cJSON_IsString(action) && !strcmp(action->valuestring, "create"))
        out->action = PK_HOOK_CREATE;
    else if (cJSON_IsString(action) && !strcmp(action->valuestring, "update"))
        out->action = PK_HOOK_UPDATE;
    else
        field_error(&ve, "action", "is required: create or update");
    if (!cJSON_IsObject(note)) field_error(&ve, "note", "is required and must be a JSON object");
    if (out->action == PK_HOOK_CREATE && id && !ve)
        field_error(&ve, "id", "must be absent when creating (the store assigns ids)");
    if (out->action == PK_HOOK_UPDATE && cJSON_IsString(action)) {
        const char *s = cJSON_IsString(id) ? id->valuestring : NULL;
        bool ok = s && strlen(s) == 36;
        for (size_t i = 0; ok && i < 36; i++)
            out->id[i] = (char)tolower((unsigned char)s[i]);
        if (ok && !pk_uuid_valid(out->id, 36)) ok = false;
        if (!ok) field_error(&ve, "id", "is required when updating and must be a note id (UUID)");
    }
    if (ve) return ve;
    out->note = note;
    return NULL;
}

/* ---- configuration --------------------------------------------------------------------------- */

static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || n > PK_WEBHOOK_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '-' || s[i] == '.')) return false;
    return true;
}

/* http(s)://host[:port][/path...] with a non-empty host and no spaces or control characters. */
static bool url_ok(const char *u)
{
    size_t skip = !strncmp(u, "http://", 7) ? 7 : !strncmp(u, "https://", 8) ? 8 : 0;
    if (!skip) return false;
    const char *host = u + skip;
    size_t hl = strcspn(host, "/?#");
    if (hl == 0 || host[0] == ':' || memchr(host, '@', hl)) return false; /* no credentials in URLs */
    for (const char *p = u; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7f) return false;
    return true;
}

/* Calls fn(ud, key, klen, value) for each "key=value" of a comma list (value NUL-terminated in a copy).
 * Empty items are skipped; an item without '=' is reported with value NULL. */
static pk_err *each_pair(const char *spec, const char *setting,
                         pk_err *(*fn)(void *ud, const char *k, size_t kl, const char *v), void *ud)
{
    if (!spec || !*spec) return NULL;
    char *copy = strdup(spec), *save = NULL;
    pk_err *e = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && !e; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (!*tok) continue;
        char *eq = strchr(tok, '=');
        if (!eq) {
            /* no value: the token may be a bare secret, so only its length is reported */
            e = pk_err_new("bad_config", 2, "%s: an entry (%zu characters) is not NAME=VALUE", setting,
                           strlen(tok));
            break;
        }
        e = fn(ud, tok, (size_t)(eq - tok), eq + 1);
    }
    free(copy);
    return e;
}

static pk_err *add_workflow(void *ud, const char *k, size_t kl, const char *v)
{
    pk_webhook_config *c = ud;
    if (!name_ok(k, kl))
        return pk_err_new("bad_config", 2, "--workflows: '%.*s' is not a name (1-64 of [A-Za-z0-9_.-])",
                          (int)(kl > 64 ? 64 : kl), k);
    char *name = pk_strndup(k, kl);
    pk_err *e = NULL;
    if (pk_webhook_config_workflow(c, name))
        e = pk_err_new("bad_config", 2, "--workflows: workflow '%s' is defined twice", name);
    else if (!url_ok(v))
        e = pk_err_new("bad_config", 2,
                       "--workflows: workflow '%s' needs an http:// or https:// URL with a host (no "
                       "spaces, no user:password@)",
                       name);
    else if (c->nworkflows == PK_WEBHOOK_MAX_WORKFLOWS)
        e = pk_err_new("bad_config", 2, "--workflows: at most %d workflows", PK_WEBHOOK_MAX_WORKFLOWS);
    if (e) {
        free(name);
        return e;
    }
    c->workflows[c->nworkflows].name = name;
    c->workflows[c->nworkflows++].url = strdup(v);
    return NULL;
}

static pk_err *add_secret(void *ud, const char *k, size_t kl, const char *v)
{
    pk_webhook_config *c = ud;
    char *name = pk_strndup(k, kl);
    pk_webhook_workflow *w = (pk_webhook_workflow *)pk_webhook_config_workflow(c, name);
    pk_err *e = NULL;
    if (!w)
        e = pk_err_new("bad_config", 2, "--workflow-secrets: '%.64s' is not a workflow of --workflows", name);
    else if (strlen(v) < PK_WEBHOOK_SECRET_MIN)
        e = pk_err_new("bad_config", 2,
                       "--workflow-secrets: the secret of '%s' must have at least %d characters", name,
                       PK_WEBHOOK_SECRET_MIN);
    else {
        free(w->secret);
        w->secret = strdup(v);
    }
    free(name);
    return e;
}

static pk_err *add_trigger(void *ud, const char *k, size_t kl, const char *v)
{
    pk_webhook_config *c = ud;
    int ev = -1;
    for (int i = 0; i < PK_WEBHOOK__EVENTS; i++)
        if (strlen(pk_webhook_event_name((pk_webhook_event)i)) == kl &&
            !strncmp(k, pk_webhook_event_name((pk_webhook_event)i), kl))
            ev = i;
    if (ev < 0)
        return pk_err_new("bad_config", 2,
                          "--workflow-triggers: unknown event '%.*s' (note.created or note.updated)",
                          (int)(kl > 64 ? 64 : kl), k);
    const char *p = v;
    for (;;) {
        size_t n = strcspn(p, "|");
        char *name = pk_strndup(p, n);
        const pk_webhook_workflow *w = pk_webhook_config_workflow(c, name);
        if (!w) {
            pk_err *e =
                pk_err_new("bad_config", 2,
                           "--workflow-triggers: %s names '%.64s', which is not a workflow of --workflows",
                           pk_webhook_event_name((pk_webhook_event)ev), name);
            free(name);
            return e;
        }
        free(name);
        c->subscribers[ev] |= 1ull << (size_t)(w - c->workflows);
        if (!p[n]) break;
        p += n + 1;
    }
    return NULL;
}

static pk_err *add_hook(void *ud, const char *k, size_t kl, const char *v)
{
    pk_webhook_config *c = ud;
    if (!name_ok(k, kl))
        return pk_err_new("bad_config", 2, "--hooks: '%.*s' is not a name (1-64 of [A-Za-z0-9_.-])",
                          (int)(kl > 64 ? 64 : kl), k);
    char *name = pk_strndup(k, kl);
    pk_err *e = NULL;
    if (pk_webhook_config_hook(c, name, kl))
        e = pk_err_new("bad_config", 2, "--hooks: hook '%s' is defined twice", name);
    else if (strlen(v) < PK_WEBHOOK_SECRET_MIN)
        e = pk_err_new("bad_config", 2, "--hooks: the secret of hook '%s' must have at least %d characters",
                       name, PK_WEBHOOK_SECRET_MIN);
    else if (c->nhooks == PK_WEBHOOK_MAX_HOOKS)
        e = pk_err_new("bad_config", 2, "--hooks: at most %d hooks", PK_WEBHOOK_MAX_HOOKS);
    if (e) {
        free(name);
        return e;
    }
    c->hooks[c->nhooks].name = name;
    c->hooks[c->nhooks++].secret = strdup(v);
    return NULL;
}

pk_err *pk_webhook_config_parse(const pk_webhook_settings *in, pk_webhook_config *out)
{
    memset(out, 0, sizeof *out);
    pk_err *e = each_pair(in->workflows, "--workflows", add_workflow, out);
    if (!e && in->secret && *in->secret && strlen(in->secret) < PK_WEBHOOK_SECRET_MIN)
        e = pk_err_new("bad_config", 2, "--workflow-secret must have at least %d characters",
                       PK_WEBHOOK_SECRET_MIN);
    if (!e) e = each_pair(in->secrets, "--workflow-secrets", add_secret, out);
    for (size_t i = 0; !e && i < out->nworkflows; i++) {
        if (out->workflows[i].secret) continue;
        if (in->secret && *in->secret)
            out->workflows[i].secret = strdup(in->secret);
        else
            e = pk_err_new(
                "bad_config", 2,
                "workflow '%s' has no signing secret: set --workflow-secret (PAKE_WORKFLOW_SECRET) "
                "or --workflow-secrets",
                out->workflows[i].name);
    }
    if (!e) e = each_pair(in->triggers, "--workflow-triggers", add_trigger, out);
    if (!e) e = each_pair(in->hooks, "--hooks", add_hook, out);
    return e;
}

void pk_webhook_config_free(pk_webhook_config *c)
{
    for (size_t i = 0; i < c->nworkflows; i++) {
        free(c->workflows[i].name);
        free(c->workflows[i].url);
        if (c->workflows[i].secret) OPENSSL_cleanse(c->workflows[i].secret, strlen(c->workflows[i].secret));
        free(c->workflows[i].secret);
    }
    for (size_t i = 0; i < c->nhooks; i++) {
        free(c->hooks[i].name);
        if (c->hooks[i].secret) OPENSSL_cleanse(c->hooks[i].secret, strlen(c->hooks[i].secret));
        free(c->hooks[i].secret);
    }
    memset(c, 0, sizeof *c);
}

const pk_webhook_workflow *pk_webhook_config_workflow(const pk_webhook_config *c, const char *name)
{
    for (size_t i = 0; name && i < c->nworkflows; i++)
        if (!strcmp(c->workflows[i].name, name)) return &c->workflows[i];
    return NULL;
}

const pk_webhook_hook *pk_webhook_config_hook(const pk_webhook_config *c, const char *name, size_t n)
{
    for (size_t i = 0; i < c->nhooks; i++)
        if (strlen(c->hooks[i].name) == n && !memcmp(c->hooks[i].name, name, n)) return &c->hooks[i];
    return NULL;
}

void pk_webhook_config_workflow_names(const pk_webhook_config *c, char *out, size_t cap)
{
    size_t l = 0;
    out[0] = '\0';
    for (size_t i = 0; i < c->nworkflows && l < cap; i++)
        l += (size_t)snprintf(out + l, cap - l, "%s%s", i ? ", " : "", c->workflows[i].name);
    if (!c->nworkflows) snprintf(out, cap, "(none configured)");
}
