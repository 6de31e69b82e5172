/* Unit tests for foundation/trace: W3C Trace Context vectors (spec examples and the W3C test suite's
 * cases), tracestate rules, span propagation and X-Request-ID validation. */
#include "foundation/trace.h"
#include "core/id.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define PID "00f067aa0ba902b7"

static int parse(const char *s, pk_traceparent *tp)
{
    return pk_traceparent_parse(s, strlen(s), tp);
}

static void hex_of(const uint8_t *p, size_t n, char *out)
{
    pk_hex(p, n, out);
}

Test(traceparent, spec_example_is_valid)
{
    pk_traceparent tp;
    cr_assert_eq(parse("00-" TID "-" PID "-01", &tp), 0);
    char t[33], p[17];
    hex_of(tp.trace_id, 16, t);
    hex_of(tp.parent_id, 8, p);
    cr_assert_str_eq(t, TID);
    cr_assert_str_eq(p, PID);
    cr_assert_eq(tp.version, 0);
    cr_assert_eq(tp.flags, 1);
    cr_assert_eq(parse("00-" TID "-" PID "-00", &tp), 0);
    cr_assert_eq(tp.flags, 0);
}

Test(traceparent, invalid_vectors_are_rejected)
{
    static const char *const bad[] = {
        "",
        "00",
        "00-" TID "-" PID "-0",                               /* short flags */
        "00-" TID "-" PID "-01-",                             /* v00 must be exactly 55 */
        "00-" TID "-" PID "-01.",                             /* v00 must be exactly 55 */
        "00-" TID "-" PID "-01-what-the-future-will-be-like", /* extra fields in v00 */
        "00-00000000000000000000000000000000-" PID "-01",     /* zero trace id */
        "00-" TID "-0000000000000000-01",                     /* zero parent id */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-" PID "-01",     /* upper case */
        "00-" TID "-00F067AA0BA902B7-01",                     /* upper case */
        "00-" TID "-" PID "-0A",                              /* upper case flags */
        "0A-" TID "-" PID "-01",                              /* upper case version */
        "ff-" TID "-" PID "-01",                              /* forbidden version */
        "0-" TID "-" PID "-01",                               /* short version */
        "00-4bf92f3577b34da6a3ce929d0e0e473-" PID "-01",      /* 31-char trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e47366-" PID "-01",    /* 33-char trace id */
        "00-" TID "-00f067aa0ba902b-01",                      /* 15-char parent */
        "00-" TID "-00f067aa0ba902b77-01",                    /* 17-char parent */
        "00_" TID "-" PID "-01",                              /* wrong delimiter */
        "00-" TID "_" PID "-01",                              /* wrong delimiter */
        "00-" TID "-" PID "_01",                              /* wrong delimiter */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-" PID "-01",     /* non-hex */
        "00-" TID "-" PID "-0g",                              /* non-hex flags */
        "xx-" TID "-" PID "-01",                              /* non-hex version */
        "cc-" TID "-" PID "-01.what-the-future-will-be-like", /* future: no dash after flags */
        "cc-" TID "-" PID "-0",                               /* future: too short */
        " 00-" TID "-" PID "-01 x",                           /* junk after OWS */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pk_traceparent tp = {.version = 0x42};
        cr_assert_eq(parse(bad[i], &tp), -1, "accepted: '%s'", bad[i]);
        cr_assert_eq(tp.version, 0x42, "output touched on failure");
    }
    cr_assert_eq(pk_traceparent_parse(NULL, 0, NULL), -1);
}

Test(traceparent, future_versions_parse_first_four_fields)
{
    pk_traceparent tp;
    cr_assert_eq(parse("cc-" TID "-" PID "-01-what-the-future-will-be-like", &tp), 0);
    cr_assert_eq(tp.version, 0xcc);
    cr_assert_eq(tp.flags, PK_TRACE_FLAG_SAMPLED);
    cr_assert_eq(parse("01-" TID "-" PID "-03", &tp), 0); /* exactly 55 is fine */
    cr_assert_eq(tp.flags, PK_TRACE_FLAG_SAMPLED, "only the sampled bit is kept for future versions");
    cr_assert_eq(parse("cc-" TID "-" PID "-fe-xyz", &tp), 0);
    cr_assert_eq(tp.flags, 0);
}

Test(traceparent, flags_masked_and_ows_trimmed)
{
    pk_traceparent tp;
    cr_assert_eq(parse("00-" TID "-" PID "-ff", &tp), 0);
    cr_assert_eq(tp.flags, PK_TRACE_FLAGS_KNOWN);
    cr_assert_eq(parse(" \t00-" TID "-" PID "-01\t ", &tp), 0);
    cr_assert_eq(tp.flags, 1);
    /* Not NUL-terminated input: the parser must respect the length. */
    char buf[80];
    memcpy(buf, "00-" TID "-" PID "-01XXXXXXXX", 63);
    cr_assert_eq(pk_traceparent_parse(buf, 55, &tp), 0);
    cr_assert_eq(pk_traceparent_parse(buf, 54, &tp), -1);
}

Test(tracestate, valid_and_invalid)
{
    static const char *const good[] = {
        "foo=1",
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        "foo=1 \t , \t bar=2, \t baz=3",
        "foo=1,,bar=2",
        "tenant1@vendor=x",
        "0tenant@sys=a b c",
        "a_-*/9=~!\"#$%&'()*+-./:;<>?@[\\]^_`{|}",
    };
    static const char *const bad[] = {
        "",
        ",",
        "foo",
        "Foo=1",               /* upper-case key */
        "1foo=1",              /* simple key must start with a letter */
        "foo=",                /* empty value */
        "foo=,bar=3",          /* empty value */
        "foo=bar=baz",         /* '=' in value */
        "foo=1 ,foo=2",        /* duplicate key */
        "foo=a\x01",           /* control character */
        "foo=\xc3\xa9",        /* non-ASCII */
        "t@Sys=1",             /* system id must start lower-case */
        "t@=1",                /* empty system id */
        "@sys=1",              /* empty tenant */
        "t@sys123456789012=1", /* system id longer than 14 */
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        cr_assert(pk_tracestate_valid(good[i], strlen(good[i])), "rejected: '%s'", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_not(pk_tracestate_valid(bad[i], strlen(bad[i])), "accepted: '%s'", bad[i]);
}

Test(tracestate, limits)
{
    char s[2048];
    /* 32 members fit, 33 do not. */
    size_t n = 0;
    for (int i = 0; i < 33; i++)
        n += (size_t)snprintf(s + n, sizeof s - n, "%sk%d=v", i ? "," : "", i);
    size_t len32 = (size_t)(strrchr(s, ',') - s);
    cr_assert(pk_tracestate_valid(s, len32));
    cr_assert_not(pk_tracestate_valid(s, n));
    /* Key length: 256 ok, 257 not (but then also more than fits 512 together with a long value). */
    memset(s, 'k', 256);
    memcpy(s + 256, "=v", 3);
    cr_assert(pk_tracestate_valid(s, 258));
    memset(s, 'k', 257);
    memcpy(s + 257, "=v", 3);
    cr_assert_not(pk_tracestate_valid(s, 259));
    /* Value length: 256 ok, 257 not. */
    memcpy(s, "k=", 2);
    memset(s + 2, 'v', 257);
    cr_assert(pk_tracestate_valid(s, 2 + 256));
    cr_assert_not(pk_tracestate_valid(s, 2 + 257));
    /* Over PK_TRACESTATE_MAX bytes: dropped even if well-formed. */
    n = 0;
    for (int i = 0; i < 3; i++)
        n += (size_t)snprintf(s + n, sizeof s - n, "%sk%d=%0200d", i ? "," : "", i, 7);
    cr_assert_gt(n, PK_TRACESTATE_MAX);
    cr_assert_not(pk_tracestate_valid(s, n));
}

static bool is_lower_hex(const char *s, size_t n)
{
    if (strlen(s) != n) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

Test(trace, continue_incoming_trace)
{
    const char *tp = "00-" TID "-" PID "-01";
    const char *ts = " rojo=00f067aa0ba902b7,congo=t61rcWkgMzE ";
    pk_trace t;
    pk_trace_start(&t, tp, strlen(tp), ts, strlen(ts), 0);
    cr_assert_str_eq(t.trace_id, TID);
    cr_assert_str_eq(t.parent_id, PID);
    cr_assert(is_lower_hex(t.span_id, 16));
    cr_assert_str_neq(t.span_id, PID);
    cr_assert(pk_trace_sampled(&t));
    cr_assert_str_eq(t.tracestate, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");

    char out[PK_TRACEPARENT_LEN];
    pk_trace_format(&t, out);
    cr_assert_eq(strlen(out), 55);
    cr_assert_eq(strncmp(out, "00-" TID "-", 36), 0);
    cr_assert_str_eq(out + 52, "-01");
    cr_assert_eq(strncmp(out + 36, t.span_id, 16), 0);
    pk_traceparent back;
    cr_assert_eq(pk_traceparent_parse(out, strlen(out), &back), 0, "our own header must parse");
}

Test(trace, invalid_incoming_starts_new_trace_and_drops_tracestate)
{
    const char *tp = "00-" TID "-" PID "-0"; /* invalid */
    const char *ts = "rojo=1";
    pk_trace t;
    pk_trace_start(&t, tp, strlen(tp), ts, strlen(ts), PK_TRACE_FLAG_SAMPLED);
    cr_assert_str_neq(t.trace_id, TID);
    cr_assert(is_lower_hex(t.trace_id, 32));
    cr_assert_str_eq(t.parent_id, "");
    cr_assert_str_eq(t.tracestate, "");
    cr_assert_eq(t.flags, PK_TRACE_FLAG_SAMPLED);

    pk_trace_start(&t, NULL, 0, NULL, 0, 0);
    cr_assert(is_lower_hex(t.trace_id, 32));
    cr_assert_not(pk_trace_sampled(&t));

    /* A valid traceparent with an invalid tracestate keeps the trace, drops the state. */
    const char *good = "00-" TID "-" PID "-00";
    pk_trace_start(&t, good, strlen(good), "Bad=1", 5, 1);
    cr_assert_str_eq(t.trace_id, TID);
    cr_assert_str_eq(t.tracestate, "");
    cr_assert_eq(t.flags, 0, "incoming flags win over new_flags");
}

Test(trace, child_spans_and_id_uniqueness)
{
    pk_trace root, child;
    pk_trace_start(&root, NULL, 0, NULL, 0, 1);
    pk_trace_child(&root, &child);
    cr_assert_str_eq(child.trace_id, root.trace_id);
    cr_assert_str_eq(child.parent_id, root.span_id);
    cr_assert_str_neq(child.span_id, root.span_id);
    cr_assert_eq(child.flags, root.flags);
    /* 1000 new trace ids are distinct and never all zero. */
    static char ids[1000][PK_TRACE_ID_HEX];
    for (int i = 0; i < 1000; i++) {
        pk_trace_new_trace_id(ids[i]);
        cr_assert(is_lower_hex(ids[i], 32));
        cr_assert_str_neq(ids[i], "00000000000000000000000000000000");
    }
    for (int i = 0; i < 1000; i++)
        for (int j = i + 1; j < 1000; j++)
            cr_assert_str_neq(ids[i], ids[j]);
}

Test(request_id, validation_and_generation)
{
    char out[PK_REQUEST_ID_MAX + 1];
    cr_assert(pk_request_id_accept("abc-123_X.y:z", 13, out));
    cr_assert_str_eq(out, "abc-123_X.y:z");

    char long_ok[PK_REQUEST_ID_MAX + 2];
    memset(long_ok, 'a', sizeof long_ok);
    cr_assert(pk_request_id_valid(long_ok, PK_REQUEST_ID_MAX));
    cr_assert_not(pk_request_id_valid(long_ok, PK_REQUEST_ID_MAX + 1));

    static const char *const bad[] = {"", "a b", "a/b", "a\"b", "a\nb", "caf\xc3\xa9", "a,b", "a;b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_not(pk_request_id_valid(bad[i], strlen(bad[i])), "accepted '%s'", bad[i]);
        cr_assert_not(pk_request_id_accept(bad[i], strlen(bad[i]), out));
        cr_assert(pk_uuid_valid(out, strlen(out)), "generated id '%s' is not a UUID", out);
        cr_assert_eq(out[14], '7', "UUIDv7 expected");
    }
    cr_assert_not(pk_request_id_accept(NULL, 0, out));
    cr_assert(pk_uuid_valid(out, strlen(out)));
    char again[PK_REQUEST_ID_MAX + 1];
    pk_request_id_accept(NULL, 0, again);
    cr_assert_str_neq(out, again);
}
