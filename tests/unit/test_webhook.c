/* Unit tests for net/webhook: the signature scheme against values computed independently (Python's
 * hmac module), header parsing, verification verdicts (window edges, tampering, constant-time compare
 * path), the replay cache (replays, expiry, bounded memory that fails closed), the hook body envelope
 * and the configuration lists (validation errors never echo secrets). */
#include "net/webhook.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define SECRET "secret-0123456789abcdef"
#define BODY "{\"a\":1}"

/* python3: hmac.new(b'secret-0123456789abcdef', b'1700000000.{"a":1}', hashlib.sha256).hexdigest() */
#define KAT_BODY "8eae3d28cb521b6b37f86de366c0b3de07baa3505577e5d97c7b1625541e4a2c"
/* the same with an empty body, and an empty key over "0." */
#define KAT_EMPTY "8525b1bcd9c1390c4234f008c5c1f1237408a4e706016600378b88d1c7642ed0"
#define KAT_NOKEY "b849d5a581847b281957065739df36df2463d1977ea8d6e1e4e6cf33fadc68c3"

static pk_webhook_verdict verify(const char *ts, const char *sig, const char *body, int64_t now,
                                 int64_t window)
{
    uint8_t d[32];
    int64_t t;
    return pk_webhook_verify(SECRET, strlen(SECRET), ts, ts ? strlen(ts) : 0, sig, sig ? strlen(sig) : 0,
                             body, strlen(body), now, window, d, &t);
}

Test(webhook, sign_matches_independent_values)
{
    char hex[PK_WEBHOOK_HEX];
    pk_webhook_sign(SECRET, strlen(SECRET), 1700000000, BODY, strlen(BODY), hex);
    cr_assert_str_eq(hex, KAT_BODY);
    pk_webhook_sign(SECRET, strlen(SECRET), 1700000000, "", 0, hex);
    cr_assert_str_eq(hex, KAT_EMPTY);
    pk_webhook_sign("", 0, 0, NULL, 0, hex);
    cr_assert_str_eq(hex, KAT_NOKEY);
    char h[72];
    pk_webhook_signature_header(hex, h);
    cr_assert_str_eq(h, "sha256=" KAT_NOKEY);
}

Test(webhook, parse_headers)
{
    int64_t ts;
    cr_assert_eq(pk_webhook_parse_timestamp(" 1700000000\t", 12, &ts), 0);
    cr_assert_eq(ts, 1700000000);
    const char *bad_ts[] = {"", " ", "-1", "1e9", "17000000000000", "12a", "0x10"};
    for (size_t i = 0; i < sizeof bad_ts / sizeof *bad_ts; i++)
        cr_assert_eq(pk_webhook_parse_timestamp(bad_ts[i], strlen(bad_ts[i]), &ts), -1, "%s", bad_ts[i]);
    uint8_t d[32];
    const char *upper = "SHA256=8EAE3D28CB521B6B37F86DE366C0B3DE07BAA3505577E5D97C7B1625541E4A2C";
    cr_assert_eq(pk_webhook_parse_signature(upper, strlen(upper), d), 0);
    cr_assert_eq(d[0], 0x8e);
    cr_assert_eq(d[31], 0x2c);
    const char *bad_sig[] = {"sha256=",
                             "sha1=" KAT_BODY,
                             KAT_BODY,
                             "sha256=" KAT_BODY "00",
                             "sha256=zzae3d28cb521b6b37f86de366c0b3de07baa3505577e5d97c7b1625541e4a2c",
                             "sha256 =" KAT_BODY};
    for (size_t i = 0; i < sizeof bad_sig / sizeof *bad_sig; i++)
        cr_assert_eq(pk_webhook_parse_signature(bad_sig[i], strlen(bad_sig[i]), d), -1, "%s", bad_sig[i]);
    cr_assert_eq(pk_webhook_parse_signature(NULL, 0, d), -1);
}

Test(webhook, verify_verdicts)
{
    const char *sig = "sha256=" KAT_BODY;
    cr_assert_eq(verify("1700000000", sig, BODY, 1700000000, 300), PK_WEBHOOK_OK);
    /* window edges, both directions */
    cr_assert_eq(verify("1700000000", sig, BODY, 1700000300, 300), PK_WEBHOOK_OK);
    cr_assert_eq(verify("1700000000", sig, BODY, 1700000301, 300), PK_WEBHOOK_STALE);
    cr_assert_eq(verify("1700000000", sig, BODY, 1699999700, 300), PK_WEBHOOK_OK);
    cr_assert_eq(verify("1700000000", sig, BODY, 1699999699, 300), PK_WEBHOOK_STALE);
    /* tampering: body, timestamp, signature, secret */
    cr_assert_eq(verify("1700000000", sig, "{\"a\":2}", 1700000000, 300), PK_WEBHOOK_BAD_SIGNATURE);
    cr_assert_eq(verify("1700000001", sig, BODY, 1700000000, 300), PK_WEBHOOK_BAD_SIGNATURE);
    char flipped[80];
    snprintf(flipped, sizeof flipped, "%s", sig);
    flipped[strlen(flipped) - 1] = flipped[strlen(flipped) - 1] == '0' ? '1' : '0';
    cr_assert_eq(verify("1700000000", flipped, BODY, 1700000000, 300), PK_WEBHOOK_BAD_SIGNATURE);
    uint8_t d[32];
    int64_t t;
    cr_assert_eq(pk_webhook_verify("other-secret-0123456", 20, "1700000000", 10, sig, strlen(sig), BODY,
                                   strlen(BODY), 1700000000, 300, d, &t),
                 PK_WEBHOOK_BAD_SIGNATURE);
    /* missing and malformed */
    cr_assert_eq(verify(NULL, sig, BODY, 1700000000, 300), PK_WEBHOOK_MISSING);
    cr_assert_eq(verify("1700000000", NULL, BODY, 1700000000, 300), PK_WEBHOOK_MISSING);
    cr_assert_eq(verify("soon", sig, BODY, 1700000000, 300), PK_WEBHOOK_MALFORMED);
    cr_assert_eq(verify("1700000000", "sha256=abc", BODY, 1700000000, 300), PK_WEBHOOK_MALFORMED);
    /* OK fills the digest and the timestamp */
    cr_assert_eq(pk_webhook_verify(SECRET, strlen(SECRET), "1700000000", 10, sig, strlen(sig), BODY,
                                   strlen(BODY), 1700000000, 300, d, &t),
                 PK_WEBHOOK_OK);
    cr_assert_eq(t, 1700000000);
    cr_assert_eq(d[0], 0x8e);
    for (int v = PK_WEBHOOK_OK; v <= PK_WEBHOOK_CACHE_FULL; v++)
        cr_assert(strlen(pk_webhook_verdict_message((pk_webhook_verdict)v)) > 1);
}

static void digest_of(int i, uint8_t d[32])
{
    char hex[PK_WEBHOOK_HEX];
    pk_webhook_sign("k", 1, i, "", 0, hex);
    for (int j = 0; j < 32; j++)
        sscanf(hex + 2 * j, "%2hhx", &d[j]);
}

Test(replay_cache, replays_are_refused_until_expiry)
{
    pk_replay_cache *c = pk_replay_cache_new(1024);
    uint8_t a[32], b[32];
    digest_of(1, a);
    digest_of(2, b);
    cr_assert_eq(pk_replay_cache_check(c, a, 1000, 1300), PK_WEBHOOK_OK);
    cr_assert_eq(pk_replay_cache_check(c, a, 1001, 1301), PK_WEBHOOK_REPLAYED);
    cr_assert_eq(pk_replay_cache_check(c, b, 1001, 1301), PK_WEBHOOK_OK);
    cr_assert_eq(pk_replay_cache_check(c, a, 1299, 1599), PK_WEBHOOK_REPLAYED);
    cr_assert_eq(pk_replay_cache_live(c, 1299), 2);
    /* expired: accepted again (the timestamp check refuses such a request before it gets here) */
    cr_assert_eq(pk_replay_cache_check(c, a, 1300, 1600), PK_WEBHOOK_OK);
    cr_assert_eq(pk_replay_cache_live(c, 1302), 1);
    pk_replay_cache_free(c);
}

Test(replay_cache, bounded_and_fails_closed)
{
    /* capacity 32 = one probe run: every slot collides, the 33rd live digest is refused */
    pk_replay_cache *c = pk_replay_cache_new(1);
    uint8_t d[32];
    int ok = 0, full = 0;
    for (int i = 0; i < 100; i++) {
        digest_of(i, d);
        pk_webhook_verdict v = pk_replay_cache_check(c, d, 10, 20);
        ok += v == PK_WEBHOOK_OK;
        full += v == PK_WEBHOOK_CACHE_FULL;
    }
    cr_assert_eq(ok, 32);
    cr_assert_eq(full, 68);
    /* every remembered digest is still a replay, whatever else was refused */
    int replays = 0;
    for (int i = 0; i < 100; i++) {
        digest_of(i, d);
        replays += pk_replay_cache_check(c, d, 11, 21) == PK_WEBHOOK_REPLAYED;
    }
    cr_assert_eq(replays, 32);
    /* once they expire, room again */
    digest_of(1000, d);
    cr_assert_eq(pk_replay_cache_check(c, d, 20, 30), PK_WEBHOOK_OK);
    pk_replay_cache_free(c);
}

Test(replay_cache, no_false_negatives_under_churn)
{
    pk_replay_cache *c = pk_replay_cache_new(4096);
    uint8_t d[32];
    /* 2000 digests over time, each living 50 ticks: every one is a replay while live */
    for (int i = 0; i < 2000; i++) {
        digest_of(i, d);
        cr_assert_eq(pk_replay_cache_check(c, d, i, i + 50), PK_WEBHOOK_OK, "%d", i);
        if (i >= 49) {
            digest_of(i - 49, d);
            cr_assert_eq(pk_replay_cache_check(c, d, i, i + 50), PK_WEBHOOK_REPLAYED, "%d", i);
        }
    }
    cr_assert_leq(pk_replay_cache_live(c, 2000), 50);
    pk_replay_cache_free(c);
}

static pk_err *body(const char *json, pk_hook_body *out, cJSON **tree)
{
    *tree = cJSON_Parse(json);
    return pk_hook_body_parse(*tree, out);
}

Test(hook_body, envelope)
{
    pk_hook_body b;
    cJSON *t;
    cr_assert_null(body("{\"action\":\"create\",\"note\":{\"title\":\"x\"}}", &b, &t));
    cr_assert_eq(b.action, PK_HOOK_CREATE);
    cr_assert_not_null(b.note);
    cJSON_Delete(t);
    cr_assert_null(
        body("{\"action\":\"update\",\"id\":\"0190A8F0-0000-7000-8000-000000000000\",\"note\":{}}", &b, &t));
    cr_assert_eq(b.action, PK_HOOK_UPDATE);
    cr_assert_str_eq(b.id, "0190a8f0-0000-7000-8000-000000000000");
    cJSON_Delete(t);
    const char *bad[] = {"[]",
                         "{}",
                         "{\"action\":\"delete\",\"note\":{}}",
                         "{\"action\":\"create\"}",
                         "{\"action\":\"create\",\"note\":[]}",
                         "{\"action\":\"create\",\"note\":{},\"id\":\"x\"}",
                         "{\"action\":\"update\",\"note\":{}}",
                         "{\"action\":\"update\",\"id\":\"not-a-uuid\",\"note\":{}}",
                         "{\"action\":\"create\",\"note\":{},\"x\":1}",
                         "{\"action\":1,\"note\":{}}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        pk_err *e = body(bad[i], &b, &t);
        cr_assert_not_null(e, "%s", bad[i]);
        cr_assert_eq(e->status, 422, "%s", bad[i]);
        pk_err_free(e);
        cJSON_Delete(t);
    }
}

static pk_err *cfg(const char *wf, const char *secret, const char *secrets, const char *trig,
                   const char *hooks, pk_webhook_config *out)
{
    pk_webhook_settings s = {
        .workflows = wf, .secret = secret, .secrets = secrets, .triggers = trig, .hooks = hooks};
    return pk_webhook_config_parse(&s, out);
}

Test(webhook_config, parses_lists)
{
    pk_webhook_config c;
    pk_err *e = cfg("on-new=http://127.0.0.1:5678/webhook/abc, digest=https://n8n.example/webhook/d?x=1",
                    "global-secret-0123456789", "digest=digest-secret-0123456789",
                    "note.created=on-new|digest,note.updated=digest", "inbox=hook-secret-0123456789", &c);
    cr_assert_null(e, "%s", e ? e->message : "");
    cr_assert_eq(c.nworkflows, 2);
    cr_assert_str_eq(pk_webhook_config_workflow(&c, "on-new")->secret, "global-secret-0123456789");
    cr_assert_str_eq(pk_webhook_config_workflow(&c, "digest")->secret, "digest-secret-0123456789");
    cr_assert_str_eq(pk_webhook_config_workflow(&c, "digest")->url, "https://n8n.example/webhook/d?x=1");
    cr_assert_eq(c.subscribers[PK_WEBHOOK_NOTE_CREATED], 3);
    cr_assert_eq(c.subscribers[PK_WEBHOOK_NOTE_UPDATED], 2);
    cr_assert_not_null(pk_webhook_config_hook(&c, "inbox", 5));
    cr_assert_null(pk_webhook_config_hook(&c, "inbo", 4));
    char names[64];
    pk_webhook_config_workflow_names(&c, names, sizeof names);
    cr_assert_str_eq(names, "on-new, digest");
    pk_webhook_config_free(&c);
    cr_assert_null(cfg("", "", "", "", "", &c)); /* everything off */
    cr_assert_eq(c.nworkflows + c.nhooks, 0);
    pk_webhook_config_free(&c);
}

Test(webhook_config, errors_are_clear_and_never_show_secrets)
{
    const char *S = "super-secret-value-0123";
    struct {
        const char *wf, *secret, *secrets, *trig, *hooks, *want;
    } cases[] = {
        {"a=ftp://x", S, "", "", "", "URL"},
        {"a=http://", S, "", "", "", "URL"},
        {"a=http://u:super-secret-value-0123@h/", S, "", "", "", "URL"},
        {"a=http://h/x y", S, "", "", "", "URL"},
        {"a b=http://h/", S, "", "", "", "not a name"},
        {"a=http://h/,a=http://h/", S, "", "", "", "twice"},
        {"a=http://h/", "", "", "", "", "no signing secret"},
        {"a=http://h/", "short", "", "", "", "at least 16"},
        {"a=http://h/", "", "b=super-secret-value-0123", "", "", "'b'"},
        {"a=http://h/", S, "", "note.deleted=a", "", "unknown event"},
        {"a=http://h/", S, "", "note.created=a|b", "", "'b'"},
        {"", "", "", "", "h=short", "at least 16"},
        {"", "", "", "", "super-secret-value-0123", "NAME=VALUE"},
        {"", "", "", "", "h=super-secret-value-0123,h=super-secret-value-0123", "twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        pk_webhook_config c;
        pk_err *e = cfg(cases[i].wf, cases[i].secret, cases[i].secrets, cases[i].trig, cases[i].hooks, &c);
        cr_assert_not_null(e, "case %zu", i);
        cr_assert_eq(e->status, 2);
        cr_assert(strstr(e->message, cases[i].want), "case %zu: %s", i, e->message);
        cr_assert_null(strstr(e->message, S), "case %zu leaks the secret: %s", i, e->message);
        pk_err_free(e);
        pk_webhook_config_free(&c);
    }
}
