/*
 * libFuzzer target over the inbound hook parsers (net/webhook.h): the X-Pake-Timestamp and
 * X-Pake-Signature headers, signature verification, the hook body envelope and the configuration lists.
 * The input is split at the first two newlines: timestamp header, signature header, body. Beyond "no
 * crash, no sanitizer report" it checks invariants:
 *   - a body signed with pk_webhook_sign always verifies at its own timestamp, exactly once through
 *     the replay cache (the second check is a replay), and never with one byte of the body changed;
 *   - whatever the headers, OK implies the digest equals the MAC recomputed over "<ts>." + body;
 *   - an accepted envelope has a note object, and an update a valid lower-case UUID;
 *   - the configuration parser either fails with bad_config or yields consistent lists.
 */
#include "core/id.h"
#include "core/json.h"
#include "net/webhook.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

#define SECRET "fuzz-secret-0123456789"

static void check_signed_round_trip(const char *body, size_t blen)
{
    static pk_replay_cache *cache;
    if (!cache) cache = pk_replay_cache_new(1024);
    char hex[PK_WEBHOOK_HEX], hdr[72];
    pk_webhook_sign(SECRET, strlen(SECRET), 1700000000, body, blen, hex);
    pk_webhook_signature_header(hex, hdr);
    uint8_t d[32];
    int64_t ts;
    if (pk_webhook_verify(SECRET, strlen(SECRET), "1700000000", 10, hdr, strlen(hdr), body, blen, 1700000000,
                          300, d, &ts) != PK_WEBHOOK_OK)
        abort();
    /* fresh expiry each run: the cache may hold this digest from an earlier identical input */
    static int64_t now = 1;
    now += 1000;
    if (pk_replay_cache_check(cache, d, now, now + 10) != PK_WEBHOOK_OK) abort();
    if (pk_replay_cache_check(cache, d, now, now + 10) != PK_WEBHOOK_REPLAYED) abort();
    if (blen) {
        char *copy = malloc(blen);
        memcpy(copy, body, blen);
        copy[blen / 2] ^= 0x01;
        if (pk_webhook_verify(SECRET, strlen(SECRET), "1700000000", 10, hdr, strlen(hdr), copy, blen,
                              1700000000, 300, d, &ts) != PK_WEBHOOK_BAD_SIGNATURE)
            abort();
        free(copy);
    }
}

static void check_config(const char *s, size_t n)
{
    char *z = malloc(n + 1);
    memcpy(z, s, n);
    z[n] = '\0';
    pk_webhook_settings in = {.workflows = z, .secret = SECRET, .triggers = "", .hooks = z};
    pk_webhook_config c;
    pk_err *e = pk_webhook_config_parse(&in, &c);
    if (e) {
        if (strcmp(e->code, "bad_config") || e->status != 2) abort();
        pk_err_free(e);
    } else {
        for (size_t i = 0; i < c.nworkflows; i++)
            if (!c.workflows[i].secret ||
                pk_webhook_config_workflow(&c, c.workflows[i].name) != &c.workflows[i])
                abort();
    }
    pk_webhook_config_free(&c);
    free(z);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    const char *s = (const char *)data;
    const char *nl1 = memchr(s, '\n', size);
    const char *nl2 = nl1 ? memchr(nl1 + 1, '\n', size - (size_t)(nl1 + 1 - s)) : NULL;
    size_t ts_len = nl1 ? (size_t)(nl1 - s) : size;
    const char *sig = nl1 ? nl1 + 1 : NULL;
    size_t sig_len = nl1 ? (nl2 ? (size_t)(nl2 - sig) : size - ts_len - 1) : 0;
    const char *body = nl2 ? nl2 + 1 : "";
    size_t blen = nl2 ? size - (size_t)(body - s) : 0;

    int64_t ts = 0;
    bool ts_ok = pk_webhook_parse_timestamp(s, ts_len, &ts) == 0;
    uint8_t d[32];
    int64_t t = -1;
    pk_webhook_verdict v = pk_webhook_verify(SECRET, strlen(SECRET), s, ts_len, sig, sig_len, body, blen,
                                             ts_ok ? ts : 0, 300, d, &t);
    if (v == PK_WEBHOOK_OK) {
        char hex[PK_WEBHOOK_HEX], got[PK_WEBHOOK_HEX];
        pk_webhook_sign(SECRET, strlen(SECRET), t, body, blen, hex);
        pk_hex(d, 32, got);
        if (strcmp(hex, got) || t != ts) abort();
    }
    check_signed_round_trip(body, blen);

    cJSON *tree = NULL;
    pk_err *e = pk_json_parse(body, blen, 32, &tree);
    if (!e) {
        pk_hook_body hb;
        e = pk_hook_body_parse(tree, &hb);
        if (!e) {
            if (!cJSON_IsObject(hb.note)) abort();
            if (hb.action == PK_HOOK_UPDATE && !pk_uuid_valid(hb.id, 36)) abort();
        } else if (e->status != 422)
            abort();
        cJSON_Delete(tree);
    }
    pk_err_free(e);
    if (size < 4096) check_config(s, size);
    return 0;
}
