#include "core/json.h"
#include "core/fmt.h"
#include "core/utf8.h"
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

void pk_jw_init(pk_jw *w, pk_buf *out)
{
    w->out = out;
    w->depth = 0;
    w->need_comma = 0;
    w->after_key = false;
}

static void sep(pk_jw *w)
{
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    uint64_t bit = 1ULL << (w->depth & 63);
    if (w->need_comma & bit) pk_buf_putc(w->out, ',');
    w->need_comma |= bit;
}

static void open_(pk_jw *w, char c)
{
    sep(w);
    pk_buf_putc(w->out, c);
    w->depth++;
    w->need_comma &= ~(1ULL << (w->depth & 63));
}

static void close_(pk_jw *w, char c)
{
    w->depth--;
    pk_buf_putc(w->out, c);
}

void pk_jw_obj_open(pk_jw *w)
{
    open_(w, '{');
}
void pk_jw_obj_close(pk_jw *w)
{
    close_(w, '}');
}
void pk_jw_arr_open(pk_jw *w)
{
    open_(w, '[');
}
void pk_jw_arr_close(pk_jw *w)
{
    close_(w, ']');
}

/* Second byte of the escape for each byte that needs one ('u': \u00XX), 0 for bytes copied as is. */
static const char ESCAPE[256] = {'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b',         't',          'n', 'u',
                                 'f', 'r', 'u', 'u', 'u', 'u', 'u', 'u', 'u',         'u',          'u', 'u',
                                 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', ['"'] = '"', ['\\'] = '\\'};

/* Copies runs of plain bytes with one memcpy each and writes escapes in place; runs are found 8 bytes
 * at a time while none needs escaping (a byte < 0x20, '"' or '\\': the "has a zero byte" test on
 * x - 0x20.., x ^ '"'.. and x ^ '\\'..), byte by byte inside a word that has one. */
static const char HEX[] = "0123456789abcdef";

/* Writes the escape of byte c at d (room for 6); returns its length. */
static size_t put_escape(char *d, unsigned char c)
{
    d[0] = '\\';
    d[1] = ESCAPE[c];
    if (d[1] != 'u') return 2;
    d[2] = '0', d[3] = '0', d[4] = HEX[c >> 4], d[5] = HEX[c & 15];
    return 6;
}

void pk_json_escape(pk_buf *out, const char *s, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    size_t i = 0;
#if defined(__SSE2__)
    /* 16 bytes at a time: each block is stored as it is, then the output advances only to the first
     * byte that needs an escape (the next block starts there). A block with nothing to escape costs a
     * load, three compares and a store; quote-dense text (JSON inside JSON) pays one block per escape. */
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), flip = _mm_set1_epi8((char)0x80),
                  ctl = _mm_set1_epi8((char)(0x20 ^ 0x80));
    while (i + 16 <= n) {
        if (out->len + 16 + 6 >= out->cap) pk_buf_reserve(out, 16 + 6 + (n - i) + (n - i) / 8);
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, bslash)),
                                 _mm_cmplt_epi8(_mm_xor_si128(x, flip), ctl)); /* bytes < 0x20 */
        unsigned mask = (unsigned)_mm_movemask_epi8(m);
        char *d = out->data + out->len;
        _mm_storeu_si128((__m128i *)(void *)d, x);
        if (!mask) {
            out->len += 16;
            i += 16;
            continue;
        }
        unsigned k = (unsigned)__builtin_ctz(mask);
        out->len += k + put_escape(d + k, (unsigned char)s[i + k]);
        i += k + 1;
    }
#endif
    while (i < n) {
        size_t start = i;
        for (;;) {
            while (i + 8 <= n) {
                uint64_t x;
                memcpy(&x, s + i, 8);
                uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
                if ((((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b)) & highs) break;
                i += 8;
            }
            size_t word_end = i + 8 < n ? i + 8 : n;
            while (i < word_end && !ESCAPE[(unsigned char)s[i]])
                i++;
            if (i < word_end || i == n) break; /* found one, or the end */
        }
        size_t run = i - start;
        if (out->len + run + 7 > out->cap) pk_buf_reserve(out, run + (n - i) / 8 + 16);
        memcpy(out->data + out->len, s + start, run);
        out->len += run;
        if (i < n) out->len += put_escape(out->data + out->len, (unsigned char)s[i++]);
    }
    pk_buf_reserve(out, 0); /* keeps the buffer NUL-terminated, as pk_buf_append does */
    out->data[out->len] = '\0';
}

void pk_jw_key_plain(pk_jw *w, const char *key, size_t n)
{
    sep(w);
    pk_buf_reserve(w->out, n + 3);
    char *d = w->out->data + w->out->len;
    d[0] = '"';
    memcpy(d + 1, key, n);
    d[n + 1] = '"';
    d[n + 2] = ':';
    w->out->len += n + 3;
    w->out->data[w->out->len] = '\0';
    w->after_key = true;
}

void pk_jw_key(pk_jw *w, const char *key)
{
    size_t n = 0;
    while (key[n] && !ESCAPE[(unsigned char)key[n]])
        n++;
    if (!key[n]) { /* the usual key: nothing to escape, one copy */
        pk_jw_key_plain(w, key, n);
        return;
    }
    sep(w);
    pk_buf_putc(w->out, '"');
    pk_json_escape(w->out, key, strlen(key));
    pk_buf_append(w->out, "\":", 2);
    w->after_key = true;
}

void pk_jw_strn(pk_jw *w, const char *s, size_t n)
{
    sep(w);
    pk_buf_putc(w->out, '"');
    pk_json_escape(w->out, s, n);
    pk_buf_putc(w->out, '"');
}

void pk_jw_str(pk_jw *w, const char *s)
{
    if (!s) {
        pk_jw_null(w);
        return;
    }
    pk_jw_strn(w, s, strlen(s));
}

void pk_jw_int(pk_jw *w, int64_t v)
{
    sep(w);
    pk_buf_reserve(w->out, 24);
    char *e = pk_fmt_i64(w->out->data + w->out->len, v);
    w->out->len = (size_t)(e - w->out->data);
    w->out->data[w->out->len] = '\0';
}

void pk_jw_num(pk_jw *w, double v)
{
    sep(w);
    if (!isfinite(v)) {
        pk_buf_puts(w->out, "null");
        return;
    }
    pk_buf_reserve(w->out, 40);
    char *e = pk_fmt_g15(w->out->data + w->out->len, v);
    w->out->len = (size_t)(e - w->out->data);
    w->out->data[w->out->len] = '\0';
}

void pk_jw_bool(pk_jw *w, bool v)
{
    sep(w);
    pk_buf_puts(w->out, v ? "true" : "false");
}

void pk_jw_null(pk_jw *w)
{
    sep(w);
    pk_buf_puts(w->out, "null");
}

void pk_jw_raw(pk_jw *w, const char *json, size_t n)
{
    sep(w);
    pk_buf_append(w->out, json, n);
}

void pk_jw_cjson(pk_jw *w, const cJSON *v)
{
    if (!v) {
        pk_jw_null(w);
        return;
    }
    if (cJSON_IsObject(v)) {
        pk_jw_obj_open(w);
        for (const cJSON *c = v->child; c; c = c->next) {
            pk_jw_key(w, c->string ? c->string : "");
            pk_jw_cjson(w, c);
        }
        pk_jw_obj_close(w);
    } else if (cJSON_IsArray(v)) {
        pk_jw_arr_open(w);
        for (const cJSON *c = v->child; c; c = c->next)
            pk_jw_cjson(w, c);
        pk_jw_arr_close(w);
    } else if (cJSON_IsString(v)) {
        pk_jw_str(w, v->valuestring);
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        /* range first: converting an out-of-range double to an integer is undefined */
        if (fabs(d) < 9007199254740992.0 && d == (double)(int64_t)d)
            pk_jw_int(w, (int64_t)d);
        else
            pk_jw_num(w, d);
    } else if (cJSON_IsBool(v)) {
        pk_jw_bool(w, cJSON_IsTrue(v));
    } else {
        pk_jw_null(w);
    }
}

/* Depth check without recursion: counts brackets outside strings. */
static bool depth_ok(const char *s, size_t n, int max_depth)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"')
            in_str = true;
        else if (c == '{' || c == '[') {
            if (++depth > max_depth) return false;
        } else if (c == '}' || c == ']')
            depth--;
    }
    return true;
}

pk_err *pk_json_parse(const char *data, size_t len, int max_depth, cJSON **out)
{
    *out = NULL;
    if (len == 0)
        return pk_err_new("malformed_json", 400, "request body is empty; a JSON document is required");
    if (!pk_utf8_valid(data, len)) return pk_err_new("invalid_utf8", 400, "request body is not valid UTF-8");
    if (memchr(data, '\0', len)) return pk_err_new("malformed_json", 400, "request body contains a NUL byte");
    if (!depth_ok(data, len, max_depth > 0 ? max_depth : PK_JSON_MAX_DEPTH_DEFAULT))
        return pk_err_new("json_too_deep", 400, "JSON nesting is deeper than %d levels",
                          max_depth > 0 ? max_depth : PK_JSON_MAX_DEPTH_DEFAULT);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(data, len, &end, false);
    if (!root) {
        size_t off = end && end >= data ? (size_t)(end - data) : 0;
        return pk_err_new("malformed_json", 400, "request body is not valid JSON (near byte %zu)", off);
    }
    /* require the whole input to be consumed (trailing whitespace allowed) */
    const char *p = end;
    while (p < data + len && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    if (p != data + len) {
        cJSON_Delete(root);
        return pk_err_new("malformed_json", 400, "unexpected data after the JSON document at byte %zu",
                          (size_t)(p - data));
    }
    *out = root;
    return NULL;
}
