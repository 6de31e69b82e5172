/* Shared fixture for the store tests: a fresh data directory per test, a fake wall clock, and small
 * helpers to create notes and read JSON back. Header-only (static) so each test binary is standalone. */
#ifndef PAKE_TESTS_STORE_FIXTURE_H
#define PAKE_TESTS_STORE_FIXTURE_H
#include "core/id.h"
#include "core/json.h"
#include "store/store.h"
#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fx_dir[256];
static int64_t fx_wall = 1764096071123000000LL; /* 2025-11-25T18:41:11.123Z */
static pk_clock fx_wall_clock = {pk_fake_clock_now, &fx_wall};
static pk_store *fx_store;

static inline int fx_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static inline pk_store *fx_open_cfg(pk_sqlite_config *cfg)
{
    pk_store *s = NULL;
    pk_err *e = pk_store_open_sqlite(cfg, false, &s);
    cr_assert_null(e, "open: %s", e ? e->message : "");
    return s;
}

static inline void fx_setup(void)
{
    snprintf(fx_dir, sizeof fx_dir, "/tmp/pake-store-test-XXXXXX");
    cr_assert_not_null(mkdtemp(fx_dir));
    fx_wall = 1764096071123000000LL;
    pk_sqlite_config cfg = {.data_dir = fx_dir, .max_connections = 4, .wall_clock = &fx_wall_clock};
    fx_store = fx_open_cfg(&cfg);
}

static inline void fx_teardown(void)
{
    if (fx_store) pk_store_close(fx_store);
    fx_store = NULL;
    nftw(fx_dir, fx_rm, 8, FTW_DEPTH | FTW_PHYS);
}

/* Creates a note; returns its parsed JSON (caller deletes) and copies its id into id_out if given. */
static inline cJSON *fx_create(const char *title, const char *content, const char *tags_json, double conf,
                               char *id_out)
{
    pk_note_input in = {.set = PK_NF_TITLE | PK_NF_CONTENT | PK_NF_CONFIDENCE,
                        .title = title,
                        .content = content,
                        .confidence_score = conf};
    if (tags_json) {
        in.set |= PK_NF_TAGS;
        in.tags_json = tags_json;
    }
    pk_buf out = PK_BUF_INIT;
    pk_err *e = pk_store_note_create(fx_store, NULL, &in, &out);
    cr_assert_null(e, "create: %s", e ? e->message : "");
    cJSON *j = cJSON_Parse(out.data);
    cr_assert_not_null(j, "create output is not JSON: %s", out.data);
    if (id_out) strcpy(id_out, cJSON_GetObjectItem(j, "id")->valuestring);
    pk_buf_free(&out);
    return j;
}

static inline const char *fx_str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static inline double fx_num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    cr_assert(cJSON_IsNumber(v), "member %s is not a number", k);
    return v->valuedouble;
}

/* Runs a list or search and returns the parsed items array (caller deletes); *next gets the cursor. */
static inline cJSON *fx_page(bool search, const pk_note_query *q, char **next)
{
    pk_page p = {0};
    pk_err *e =
        search ? pk_store_note_search(fx_store, NULL, q, &p) : pk_store_note_list(fx_store, NULL, q, &p);
    cr_assert_null(e, "page: %s (%s)", e ? e->message : "", e && e->nfields ? e->fields[0].message : "");
    cJSON *items = cJSON_Parse(p.items.data);
    cr_assert(cJSON_IsArray(items), "items is not an array: %s", p.items.data);
    cr_assert_eq((size_t)cJSON_GetArraySize(items), p.count);
    if (next) *next = p.next_cursor ? strdup(p.next_cursor) : NULL;
    pk_page_free(&p);
    return items;
}

static inline pk_err *fx_expect_err(pk_err *e, const char *code, int status)
{
    cr_assert_not_null(e, "expected error %s", code);
    cr_assert_str_eq(e->code, code, "got %s (%s)", e->code, e->message);
    cr_assert_eq(e->status, status);
    return e;
}
#endif
