/*
 * json: a small streaming JSON writer over pk_buf, and input helpers around cJSON.
 *
 * Writer: callers emit tokens in order; the writer inserts commas itself. Strings are escaped per
 * RFC 8259 (control characters as \u00XX); input strings must already be valid UTF-8 (everything
 * PAKE accepts is validated at the edge, and the store only holds validated text).
 *
 * Reader: pk_json_parse validates UTF-8, enforces a nesting-depth limit, requires the whole input to
 * be consumed, and returns a cJSON tree or a 400 error ("malformed_json" / "invalid_utf8").
 */
#ifndef PAKE_CORE_JSON_H
#define PAKE_CORE_JSON_H
#include "core/buf.h"
#include "core/err.h"
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#define PK_JSON_MAX_DEPTH_DEFAULT 32

typedef struct pk_jw {
    pk_buf *out;
    int depth;
    uint64_t need_comma; /* bit per depth level (max 63 levels) */
    bool after_key;
} pk_jw;

void pk_jw_init(pk_jw *w, pk_buf *out);
void pk_jw_obj_open(pk_jw *w);
void pk_jw_obj_close(pk_jw *w);
void pk_jw_arr_open(pk_jw *w);
void pk_jw_arr_close(pk_jw *w);
void pk_jw_key(pk_jw *w, const char *key);
/* A key of n bytes that needs no escaping (a literal of the caller's): written with one copy. */
void pk_jw_key_plain(pk_jw *w, const char *key, size_t n);
void pk_jw_str(pk_jw *w, const char *s);
void pk_jw_strn(pk_jw *w, const char *s, size_t n);
void pk_jw_int(pk_jw *w, int64_t v);
void pk_jw_num(pk_jw *w, double v);
void pk_jw_bool(pk_jw *w, bool v);
void pk_jw_null(pk_jw *w);
/* Inserts pre-serialised JSON (must be a complete valid value). */
void pk_jw_raw(pk_jw *w, const char *json, size_t n);
/* Serialises a cJSON value through the writer. */
void pk_jw_cjson(pk_jw *w, const cJSON *v);

/* Appends `s` JSON-escaped (without quotes) to `out`. */
void pk_json_escape(pk_buf *out, const char *s, size_t n);

/* Parse untrusted bytes. On success *out is a cJSON tree the caller frees with cJSON_Delete. */
pk_err *pk_json_parse(const char *data, size_t len, int max_depth, cJSON **out);
#endif
