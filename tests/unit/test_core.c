/* Core modules: buffer, JSON writer and strict parser, UTF-8 validation, RFC 3339, UUIDv7, errors. */
#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/fmt.h"
#include "core/id.h"
#include "core/json.h"
#include "core/utf8.h"
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

Test(buf, grows_and_formats)
{
    pk_buf b = PK_BUF_INIT;
    for (int i = 0; i < 1000; i++)
        pk_buf_printf(&b, "%d,", i);
    cr_assert(b.len > 3000);
    cr_assert(strncmp(b.data, "0,1,2,", 6) == 0);
    cr_assert_eq(b.data[b.len], '\0');
    size_t n;
    char *s = pk_buf_steal(&b, &n);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(strlen(s), n);
    free(s);
}

Test(json, writer_escapes_and_separates)
{
    pk_buf b = PK_BUF_INIT;
    pk_jw w;
    pk_jw_init(&w, &b);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "s");
    pk_jw_str(&w, "a\"b\\c\n\x01");
    pk_jw_key(&w, "a");
    pk_jw_arr_open(&w);
    pk_jw_int(&w, 1);
    pk_jw_num(&w, 0.5);
    pk_jw_bool(&w, true);
    pk_jw_null(&w);
    pk_jw_obj_open(&w);
    pk_jw_obj_close(&w);
    pk_jw_arr_close(&w);
    pk_jw_key(&w, "n");
    pk_jw_str(&w, NULL);
    pk_jw_obj_close(&w);
    cr_assert_str_eq(b.data, "{\"s\":\"a\\\"b\\\\c\\n\\u0001\",\"a\":[1,0.5,true,null,{}],\"n\":null}");
    pk_buf_free(&b);
}

Test(json, parser_rejects_bad_input)
{
    cJSON *j = NULL;
    const struct {
        const char *in;
        const char *code;
    } cases[] = {
        {"", "malformed_json"},
        {"{", "malformed_json"},
        {"{} x", "malformed_json"},
        {"{\"a\":\xff}", "invalid_utf8"},
        {"\"\xed\xa0\x80\"", "invalid_utf8"}, /* surrogate */
        {"\"\xc0\xaf\"", "invalid_utf8"},     /* overlong */
        {"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", "json_too_deep"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        pk_err *e = pk_json_parse(cases[i].in, strlen(cases[i].in), 32, &j);
        cr_assert(e, "case %zu accepted", i);
        cr_assert_str_eq(e->code, cases[i].code, "case %zu: %s", i, e->code);
        cr_assert_eq(e->status, 400);
        pk_err_free(e);
    }
    /* a NUL inside the declared length is refused, not truncated */
    pk_err *e = pk_json_parse("{}\0{}", 5, 32, &j);
    cr_assert(e);
    pk_err_free(e);
    const char *ok = " {\"a\":[1,2,{\"b\":\"\xc3\xa9\"}]} \n";
    e = pk_json_parse(ok, strlen(ok), 32, &j);
    cr_assert_null(e);
    cr_assert_str_eq(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "a"), 2), "b")->valuestring,
        "\xc3\xa9");
    cJSON_Delete(j);
}

Test(utf8, validation)
{
    cr_assert(pk_utf8_valid("plain ascii text of some length", 31));
    cr_assert(pk_utf8_valid("\xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80", 11));
    cr_assert_not(pk_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    cr_assert_not(pk_utf8_valid("abc\xe6\x97", 5));      /* truncated */
    cr_assert_eq(pk_utf8_count("\xc3\xa9t\xc3\xa9", 5), 3);
}

Test(clock, rfc3339_round_trip)
{
    int64_t t;
    cr_assert_eq(pk_rfc3339_parse("2026-11-25T18:41:11.123Z", &t), 0);
    char out[PK_RFC3339_LEN];
    pk_rfc3339(t, out);
    cr_assert_str_eq(out, "2026-11-25T18:41:11.123Z");
    int64_t t2;
    cr_assert_eq(pk_rfc3339_parse("2026-11-25T20:41:11.123+02:00", &t2), 0);
    cr_assert_eq(t, t2);
    cr_assert_neq(pk_rfc3339_parse("2026-13-01T00:00:00Z", &t), 0);
    cr_assert_neq(pk_rfc3339_parse("2026-11-25 garbage", &t), 0);
    cr_assert_neq(pk_rfc3339_parse("2026-11-25T18:41:11", &t), 0);
}

Test(id, uuid7_is_valid_ordered_and_unique)
{
    char a[PK_UUID_LEN], b[PK_UUID_LEN];
    pk_uuid7(a);
    for (int i = 0; i < 1000; i++) {
        pk_uuid7(b);
        cr_assert(pk_uuid_valid(b, 36));
        cr_assert_eq(b[14], '7');
        cr_assert(strchr("89ab", b[19]));
        cr_assert(strcmp(a, b) != 0);
        cr_assert(strncmp(a, b, 8) <= 0); /* the millisecond timestamp never goes back */
    }
    cr_assert_not(pk_uuid_valid("01A21418-FF5B-7B38-A071-63577F9FC60B", 36));
    cr_assert_not(pk_uuid_valid("01a21418-ff5b-7b38-a071-63577f9fc60", 35));
}

Test(err, wrap_and_fields)
{
    pk_err *e = pk_err_wrap(pk_err_new("store_busy", 503, "busy"), "unavailable", 503, "store: %s", "x");
    cr_assert(pk_err_is(e, "store_busy"));
    cr_assert(e->retryable);
    cr_assert_eq(e->category, PK_CAT_UNAVAILABLE);
    pk_err_add_field(e, "title", "is required");
    cr_assert_eq(e->nfields, 1);
    cr_assert_str_eq(pk_err_title(422), "Unprocessable Content");
    pk_err_free(e);
}

/* The word-at-a-time escape against a byte-by-byte reference, with the special bytes at every
 * offset of strings of many lengths (so each falls inside, before and after an 8-byte word). */
static void escape_ref(pk_buf *b, const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\')
            pk_buf_putc(b, '\\'), pk_buf_putc(b, (char)c);
        else if (c == '\n')
            pk_buf_puts(b, "\\n");
        else if (c == '\r')
            pk_buf_puts(b, "\\r");
        else if (c == '\t')
            pk_buf_puts(b, "\\t");
        else if (c == '\b')
            pk_buf_puts(b, "\\b");
        else if (c == '\f')
            pk_buf_puts(b, "\\f");
        else if (c < 0x20)
            pk_buf_printf(b, "\\u%04x", c);
        else
            pk_buf_putc(b, (char)c);
    }
}

Test(json, escape_matches_bytewise_reference)
{
    const unsigned char special[] = {'"',  '\\', '\n', 0x01, 0x1f, 0x7f, 0x80,
                                     0xc3, ' ',  '!',  '#',  '[',  ']',  0};
    unsigned char s[40];
    for (size_t n = 0; n <= sizeof s; n++)
        for (size_t at = 0; at < n; at++)
            for (size_t k = 0; k < sizeof special; k++) {
                for (size_t i = 0; i < n; i++)
                    s[i] = (unsigned char)('a' + (i * 7 + n) % 26);
                s[at] = special[k];
                pk_buf got = PK_BUF_INIT, want = PK_BUF_INIT;
                pk_json_escape(&got, (const char *)s, n);
                escape_ref(&want, s, n);
                cr_assert_eq(got.len, want.len, "n=%zu at=%zu byte=%#x", n, at, special[k]);
                cr_assert(got.len == 0 || memcmp(got.data, want.data, got.len) == 0, "n=%zu at=%zu byte=%#x",
                          n, at, special[k]);
                pk_buf_free(&got);
                pk_buf_free(&want);
            }
    for (size_t every = 1; every < 10; every++) /* dense: a special byte every `every` bytes */
        for (size_t k = 0; k < sizeof special; k++) {
            for (size_t i = 0; i < sizeof s; i++)
                s[i] = i % every == 0 ? special[k] : (unsigned char)('A' + i % 26);
            pk_buf got = PK_BUF_INIT, want = PK_BUF_INIT;
            pk_buf_puts(&got, "prefix");
            pk_buf_puts(&want, "prefix");
            pk_json_escape(&got, (const char *)s, sizeof s);
            escape_ref(&want, s, sizeof s);
            cr_assert_eq(got.len, want.len);
            cr_assert(memcmp(got.data, want.data, got.len) == 0 && got.data[got.len] == 0, "every %zu",
                      every);
            pk_buf_free(&got);
            pk_buf_free(&want);
        }
}

Test(clock, rfc3339_formats_every_field)
{
    char out[PK_RFC3339_LEN];
    pk_rfc3339(0, out);
    cr_assert_str_eq(out, "1970-01-01T00:00:00.000Z");
    pk_rfc3339(1795653071007000000LL, out);
    cr_assert_str_eq(out, "2026-11-26T00:31:11.007Z");
    pk_rfc3339(9223372036854000000LL, out); /* near the end of int64 nanoseconds */
    cr_assert_str_eq(out, "2262-04-11T23:47:16.854Z");
}

/* pk_fmt_g15 must print every double exactly as snprintf("%.15g") does. */
static void check_g15(double v)
{
    char want[64], got[64];
    snprintf(want, sizeof want, "%.15g", v);
    char *e = pk_fmt_g15(got, v);
    *e = '\0';
    cr_assert_str_eq(got, want, "value %a", v);
}

Test(fmt, g15_matches_printf)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 400000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t bits = x;
        double v;
        switch (i % 5) {
        case 0: /* any bit pattern (NaN, infinities, subnormals, exponent form included) */
            memcpy(&v, &bits, sizeof v);
            break;
        case 1: /* short decimals such as stored confidence scores */
            v = (double)(x % 100001) / 10000.0;
            break;
        case 2: /* uniform over the fixed-point range's magnitudes */
            v = ldexp((double)(x >> 11) / 9007199254740992.0, (int)(x % 64) - 16);
            break;
        case 3: /* ties at the 15th digit: 14 integer digits + .5 */
            v = (double)(10000000000000ull + x % 89999999999999ull) + 0.5;
            break;
        default: /* next to powers of ten, where rounding changes the exponent */
            v = nextafter(pow(10, (int)(x % 22) - 6), (x & 1) ? 0 : 1e30);
            if (x & 2) v = nextafter(v, (x & 4) ? 0 : 1e30);
            if (x & 8) v = 9.999999999999995 * pow(10, (int)(x % 20) - 5);
            break;
        }
        if (x & 16) v = -v;
        check_g15(v);
    }
    static const double fixed[] = {0.0,
                                   -0.0,
                                   1e-4,
                                   9.99999999999999e-5,
                                   1e15,
                                   999999999999999.4,
                                   999999999999999.6,
                                   0.5,
                                   0.0347,
                                   7.53155916184086,
                                   1.0,
                                   123456789012345.5,
                                   0.1 + 0.2};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        check_g15(fixed[i]);
}

Test(json, numbers_and_keys)
{
    pk_buf b = PK_BUF_INIT;
    pk_jw w;
    pk_jw_init(&w, &b);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "plain");
    pk_jw_int(&w, -9223372036854775807LL - 1);
    pk_jw_key(&w, "q\"k");
    pk_jw_num(&w, 0.0347);
    pk_jw_key(&w, "n");
    pk_jw_num(&w, NAN);
    pk_jw_key_plain(&w, "lit", 3);
    pk_jw_int(&w, 7);
    pk_jw_obj_close(&w);
    cr_assert_str_eq(b.data, "{\"plain\":-9223372036854775808,\"q\\\"k\":0.0347,\"n\":null,\"lit\":7}");
    pk_buf_free(&b);
}

/* pk_rfc3339 computes the calendar itself for times after 1970: it must agree with gmtime_r. */
Test(clock, rfc3339_agrees_with_gmtime)
{
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 300000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int64_t ns = (int64_t)(x & 0x7fffffffffffffffull);              /* anywhere in 1970 .. 2262 */
        if (i % 3 == 0) ns = (int64_t)(x % 4200000000ull) * 1000000000; /* whole seconds up to 2103 */
        if (i == 1) ns = INT64_MAX;
        if (i == 2) ns = 951782400LL * 1000000000; /* 2000-02-29 */
        if (i == 4) ns = 0;
        time_t secs = (time_t)(ns / 1000000000LL);
        struct tm tm;
        gmtime_r(&secs, &tm);
        char want[64], got[PK_RFC3339_LEN];
        snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ns / 1000000 % 1000));
        pk_rfc3339(ns, got);
        cr_assert_str_eq(got, want, "ns %lld", (long long)ns);
    }
}
