/* The embedded store's behaviour through the pk_store contract: note shape and defaults, validation,
 * versions and If-Match, history, keyset pages under every sort, filters, search, links. */
#include "store_fixture.h"

TestSuite(store, .init = fx_setup, .fini = fx_teardown, .timeout = 30);

Test(store, open_is_idempotent_and_reports_schema_version)
{
    int from = -1, to = -1;
    pk_err *e = pk_store_migrate(fx_store, &from, &to);
    cr_assert_null(e);
    cr_assert_eq(from, pk_store_schema_version_latest());
    cr_assert_eq(to, pk_store_schema_version_latest());
    cr_assert_null(pk_store_ping(fx_store, NULL));
    cr_assert_str_eq(fx_store->backend, "sqlite");
    char path[300];
    snprintf(path, sizeof path, "%s/pake.db", fx_dir);
    cr_assert_eq(access(path, F_OK), 0);
}

Test(store, create_returns_the_contract_shape_with_defaults)
{
    pk_note_input in = {
        .set = PK_NF_TITLE | PK_NF_TAGS, .title = "Hello", .tags_json = "[\"b\", \"a\", \"b\"]"};
    pk_buf out = PK_BUF_INIT;
    cr_assert_null(pk_store_note_create(fx_store, NULL, &in, &out));
    cJSON *j = cJSON_Parse(out.data);
    cr_assert_not_null(j);
    const char *order[] = {"id",         "title",
                           "content",    "type",
                           "status",     "verification_status",
                           "source_uri", "tags",
                           "metadata",   "confidence_score",
                           "ai_summary", "human_notes",
                           "guard",      "created_at",
                           "updated_at", "version"};
    int i = 0;
    for (cJSON *m = j->child; m; m = m->next, i++)
        cr_assert_str_eq(m->string, order[i], "member %d is %s", i, m->string);
    cr_assert_eq(i, 16);
    cr_assert(pk_uuid_valid(fx_str(j, "id"), strlen(fx_str(j, "id"))));
    cr_assert_str_eq(fx_str(j, "content"), "");
    cr_assert_str_eq(fx_str(j, "type"), "note");
    cr_assert_str_eq(fx_str(j, "status"), "active");
    cr_assert_str_eq(fx_str(j, "verification_status"), "pending");
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "source_uri")));
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "guard")));
    cr_assert_eq(fx_num(j, "confidence_score"), 0.5);
    cr_assert_eq(fx_num(j, "version"), 1);
    cr_assert_str_eq(fx_str(j, "created_at"), "2025-11-25T18:41:11.123Z");
    cr_assert(strstr(out.data, "\"tags\":[\"b\",\"a\"]"), "tags not deduplicated/compact: %s", out.data);
    cr_assert(strstr(out.data, "\"metadata\":{}"));
    /* get returns the same bytes */
    pk_buf got = PK_BUF_INIT;
    int64_t ver = 0;
    cr_assert_null(pk_store_note_get(fx_store, NULL, fx_str(j, "id"), &got, &ver));
    cr_assert_str_eq(got.data, out.data);
    cr_assert_eq(ver, 1);
    cJSON_Delete(j);
    pk_buf_free(&out);
    pk_buf_free(&got);
}

Test(store, create_rejects_invalid_fields_and_writes_nothing)
{
    pk_note_input in = {.set = PK_NF_STATUS | PK_NF_CONFIDENCE | PK_NF_TAGS | PK_NF_METADATA | PK_NF_GUARD,
                        .status = "published",
                        .confidence_score = 1.5,
                        .tags_json = "[\"ok\", 3, \"\"]",
                        .metadata_json = "[1]",
                        .guard_json = "\"x\""};
    pk_buf out = PK_BUF_INIT;
    pk_err *e = fx_expect_err(pk_store_note_create(fx_store, NULL, &in, &out), "validation_failed", 422);
    const char *want[] = {"title", "status", "confidence_score", "tags", "tags", "metadata", "guard"};
    cr_assert_eq(e->nfields, 7, "fields: %zu", e->nfields);
    for (size_t i = 0; i < e->nfields; i++)
        cr_assert_str_eq(e->fields[i].field, want[i]);
    pk_err_free(e);
    cr_assert_eq(out.len, 0);
    pk_note_query q = {.flagged = -1};
    cJSON *items = fx_page(false, &q, NULL);
    cr_assert_eq(cJSON_GetArraySize(items), 0);
    cJSON_Delete(items);
}

Test(store, get_unknown_is_not_found)
{
    pk_buf out = PK_BUF_INIT;
    pk_err_free(
        fx_expect_err(pk_store_note_get(fx_store, NULL, "0190a0b0-0000-7000-8000-000000000000", &out, NULL),
                      "not_found", 404));
    cr_assert_eq(out.len, 0);
}

Test(store, update_patches_only_present_fields_and_checks_versions)
{
    char id[40];
    cJSON_Delete(fx_create("T1", "body", "[\"x\"]", 0.4, id));
    fx_wall += 5000000000LL;
    pk_note_input in = {.set = PK_NF_TITLE | PK_NF_SOURCE_URI | PK_NF_GUARD,
                        .title = "T2",
                        .source_uri = "https://example.org/a",
                        .guard_json = "{\"flagged\": true, \"score\": 0.9}"};
    pk_buf out = PK_BUF_INIT;
    cr_assert_null(pk_store_note_update(fx_store, NULL, id, 1, &in, &out));
    cJSON *j = cJSON_Parse(out.data);
    cr_assert_str_eq(fx_str(j, "title"), "T2");
    cr_assert_str_eq(fx_str(j, "content"), "body");
    cr_assert_str_eq(fx_str(j, "source_uri"), "https://example.org/a");
    cr_assert_eq(fx_num(j, "version"), 2);
    cr_assert_eq(fx_num(j, "confidence_score"), 0.4);
    cr_assert_str_eq(fx_str(j, "created_at"), "2025-11-25T18:41:11.123Z");
    cr_assert_str_eq(fx_str(j, "updated_at"), "2025-11-25T18:41:16.123Z");
    cr_assert(strstr(out.data, "\"guard\":{\"flagged\":true,\"score\":0.9}"), "%s", out.data);
    cJSON_Delete(j);

    /* stale If-Match */
    pk_buf_reset(&out);
    pk_err *e =
        fx_expect_err(pk_store_note_update(fx_store, NULL, id, 1, &in, &out), "precondition_failed", 412);
    cr_assert_str_eq(e->extra_json, "\"current_version\":2");
    pk_err_free(e);
    cr_assert_eq(out.len, 0);

    /* NULL clears a nullable field; NULL on a required one is rejected */
    pk_note_input clear = {.set = PK_NF_SOURCE_URI, .source_uri = NULL};
    cr_assert_null(pk_store_note_update(fx_store, NULL, id, 0, &clear, &out));
    cr_assert(strstr(out.data, "\"source_uri\":null"));
    cr_assert(strstr(out.data, "\"version\":3"));
    pk_note_input bad = {.set = PK_NF_CONTENT | PK_NF_TAGS, .content = NULL, .tags_json = NULL};
    pk_err_free(
        fx_expect_err(pk_store_note_update(fx_store, NULL, id, 0, &bad, &out), "validation_failed", 422));

    /* an empty patch changes nothing */
    pk_buf_reset(&out);
    pk_note_input none = {0};
    cr_assert_null(pk_store_note_update(fx_store, NULL, id, 3, &none, &out));
    cr_assert(strstr(out.data, "\"version\":3"));
    pk_err_free(
        fx_expect_err(pk_store_note_update(fx_store, NULL, "nope", 0, &none, &out), "not_found", 404));
    pk_buf_free(&out);
}

Test(store, history_records_writes_and_confidence_changes)
{
    char id[40];
    cJSON_Delete(fx_create("H", "c", NULL, 0.3, id));
    pk_op_ctx ctx = {.request_id = "req-1", .principal = "key:abc"};
    pk_buf out = PK_BUF_INIT;
    pk_note_input up = {.set = PK_NF_CONFIDENCE, .confidence_score = 0.8};
    cr_assert_null(pk_store_note_update(fx_store, &ctx, id, 0, &up, &out));
    cr_assert_null(pk_store_note_update(fx_store, &ctx, id, 0, &up, &out)); /* same score: no history entry */
    pk_note_input t = {.set = PK_NF_TITLE | PK_NF_CONTENT, .title = "H2", .content = "d"};
    cr_assert_null(pk_store_note_update(fx_store, NULL, id, 0, &t, &out));
    cr_assert_null(pk_store_note_delete(fx_store, &ctx, id, 4));
    pk_buf_reset(&out);
    cr_assert_null(pk_store_note_history(fx_store, NULL, id, &out));
    cJSON *h = cJSON_Parse(out.data);
    cr_assert_not_null(h, "%s", out.data);
    cJSON *ev = cJSON_GetObjectItem(h, "events");
    cr_assert_eq(cJSON_GetArraySize(ev), 5);
    const char *actions[] = {"create", "update", "update", "update", "delete"};
    for (int i = 0; i < 5; i++) {
        cJSON *x = cJSON_GetArrayItem(ev, i);
        cr_assert_str_eq(fx_str(x, "action"), actions[i]);
        cr_assert_eq(fx_num(x, "version"), i < 4 ? i + 1 : 4);
    }
    cr_assert_str_eq(fx_str(cJSON_GetArrayItem(ev, 1), "request_id"), "req-1");
    cr_assert_str_eq(fx_str(cJSON_GetArrayItem(ev, 1), "principal"), "key:abc");
    cr_assert(strstr(out.data, "\"fields\":[\"title\",\"content\"]"), "%s", out.data);
    cJSON *ch = cJSON_GetObjectItem(h, "confidence_history");
    cr_assert_eq(cJSON_GetArraySize(ch), 2);
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(ch, 0), "from")));
    cr_assert_eq(fx_num(cJSON_GetArrayItem(ch, 0), "to"), 0.3);
    cr_assert_eq(fx_num(cJSON_GetArrayItem(ch, 1), "from"), 0.3);
    cr_assert_eq(fx_num(cJSON_GetArrayItem(ch, 1), "to"), 0.8);
    cJSON_Delete(h);
    pk_buf_reset(&out);
    pk_err_free(fx_expect_err(pk_store_note_history(fx_store, NULL, "nope", &out), "not_found", 404));
    pk_buf_free(&out);
}

Test(store, delete_checks_version_and_removes_note_tags_links)
{
    char a[40], b[40];
    cJSON_Delete(fx_create("A", "alpha words", "[\"t\"]", 0.5, a));
    cJSON_Delete(fx_create("B", "beta", NULL, 0.5, b));
    pk_buf out = PK_BUF_INIT;
    cr_assert_null(pk_store_link_create(fx_store, NULL, b, a, "related", 0.5, NULL, &out));
    pk_err_free(fx_expect_err(pk_store_note_delete(fx_store, NULL, a, 7), "precondition_failed", 412));
    cr_assert_null(pk_store_note_delete(fx_store, NULL, a, 1));
    pk_err_free(fx_expect_err(pk_store_note_get(fx_store, NULL, a, &out, NULL), "not_found", 404));
    pk_err_free(fx_expect_err(pk_store_note_delete(fx_store, NULL, a, 0), "not_found", 404));
    pk_buf_reset(&out);
    cr_assert_null(pk_store_link_list(fx_store, NULL, b, &out));
    cr_assert_str_eq(out.data, "[]");
    const char *tags[] = {"t"};
    pk_note_query q = {.flagged = -1, .tags_all = tags, .ntags_all = 1};
    cJSON *items = fx_page(false, &q, NULL);
    cr_assert_eq(cJSON_GetArraySize(items), 0);
    cJSON_Delete(items);
    q = (pk_note_query){.text = "alpha", .flagged = -1};
    items = fx_page(true, &q, NULL);
    cr_assert_eq(cJSON_GetArraySize(items), 0);
    cJSON_Delete(items);
    pk_buf_free(&out);
}

/* Pages through a list with the given sort and checks the concatenation against a reference order. */
static void check_paging(pk_sort_key sort, bool asc, int limit, int n, char ids[][40], const int *expect)
{
    pk_note_query q = {.flagged = -1, .sort = sort, .ascending = asc, .limit = limit};
    char *cursor = NULL;
    int seen = 0;
    do {
        q.cursor = cursor;
        char *next = NULL;
        cJSON *items = fx_page(false, &q, &next);
        int cnt = cJSON_GetArraySize(items);
        cr_assert(cnt <= limit);
        cr_assert(next == NULL || cnt == limit, "a non-final page must be full");
        for (int i = 0; i < cnt; i++, seen++) {
            cr_assert(seen < n, "more rows than notes");
            cr_assert_str_eq(fx_str(cJSON_GetArrayItem(items, i), "id"), ids[expect[seen]],
                             "sort %d asc %d limit %d: row %d", sort, asc, limit, seen);
        }
        cJSON_Delete(items);
        free(cursor);
        cursor = next;
    } while (cursor);
    cr_assert_eq(seen, n);
}

static const double *cmp_conf;
static int cmp_conf_desc(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    if (cmp_conf[x] != cmp_conf[y]) return cmp_conf[x] < cmp_conf[y] ? 1 : -1;
    return y - x; /* ties: newest first */
}

Test(store, keyset_pages_cover_every_note_once_in_order)
{
    enum { N = 37 };
    static char ids[N][40];
    double conf[N];
    char title[32];
    int created_desc[N], created_asc[N], by_conf[N], by_title[N];
    for (int i = 0; i < N; i++) {
        conf[i] = (double)((i * 7) % 5) / 4.0;                       /* many ties */
        snprintf(title, sizeof title, "%c-note", i % 2 ? 'b' : 'A'); /* case-insensitive ties */
        cJSON_Delete(fx_create(title, "x", NULL, conf[i], ids[i]));
        if (i % 3) fx_wall += 1000000; /* some notes share a timestamp */
        created_desc[i] = N - 1 - i;
        created_asc[i] = i;
        by_conf[i] = i;
    }
    cmp_conf = conf;
    qsort(by_conf, N, sizeof(int), cmp_conf_desc);
    int t = 0; /* title asc: every "A-note" (even i) then "b-note" (odd), each in insertion order */
    for (int i = 0; i < N; i += 2)
        by_title[t++] = i;
    for (int i = 1; i < N; i += 2)
        by_title[t++] = i;
    int limits[] = {1, 5, 10, 36, 37, 100};
    for (size_t l = 0; l < sizeof limits / sizeof limits[0]; l++) {
        check_paging(PK_SORT_DEFAULT, false, limits[l], N, ids, created_desc);
        check_paging(PK_SORT_CREATED, true, limits[l], N, ids, created_asc);
        check_paging(PK_SORT_CONFIDENCE, false, limits[l], N, ids, by_conf);
        check_paging(PK_SORT_TITLE, true, limits[l], N, ids, by_title);
    }
    /* a cursor is bound to its sort */
    pk_note_query q = {.flagged = -1, .limit = 5};
    char *next = NULL;
    cJSON_Delete(fx_page(false, &q, &next));
    cr_assert_not_null(next);
    q.cursor = next;
    q.sort = PK_SORT_TITLE;
    pk_page p = {0};
    pk_err *e = fx_expect_err(pk_store_note_list(fx_store, NULL, &q, &p), "validation_failed", 422);
    cr_assert_str_eq(e->fields[0].field, "cursor");
    pk_err_free(e);
    q.sort = PK_SORT_DEFAULT;
    q.cursor = "!!not-a-cursor";
    pk_err_free(fx_expect_err(pk_store_note_list(fx_store, NULL, &q, &p), "validation_failed", 422));
    q.cursor = NULL;
    q.sort = PK_SORT_RELEVANCE;
    pk_err_free(fx_expect_err(pk_store_note_list(fx_store, NULL, &q, &p), "validation_failed", 422));
    free(next);
}

static int count_of(const pk_note_query *q)
{
    cJSON *items = fx_page(q->text != NULL, q, NULL);
    int n = cJSON_GetArraySize(items);
    cJSON_Delete(items);
    return n;
}

Test(store, list_filters_combine)
{
    pk_note_input in = {.set = PK_NF_TITLE | PK_NF_TYPE | PK_NF_STATUS | PK_NF_TAGS | PK_NF_CONFIDENCE |
                               PK_NF_GUARD | PK_NF_VERIFICATION};
    const char *types[] = {"note", "idea"}, *statuses[] = {"active", "draft", "archived"};
    const char *tagsets[] = {"[\"a\"]", "[\"a\",\"b\"]", "[\"c\"]", "[]"};
    pk_buf out = PK_BUF_INIT;
    int64_t t5 = 0;
    for (int i = 0; i < 24; i++) {
        in.title = "n";
        in.type = types[i % 2];
        in.status = statuses[i % 3];
        in.tags_json = tagsets[i % 4];
        in.confidence_score = (i % 10) / 10.0;
        in.guard_json = i % 6 == 0 ? "{\"flagged\":true}" : (i % 6 == 1 ? "{\"flagged\":false}" : NULL);
        in.verification_status = i % 5 == 0 ? "verified" : "pending";
        if (i == 5) t5 = fx_wall;
        cr_assert_null(pk_store_note_create(fx_store, NULL, &in, &out));
        fx_wall += 1000000;
    }
    pk_buf_free(&out);
    int expect_idea = 0, expect_draft = 0, expect_a = 0, expect_ab = 0, expect_any = 0, expect_conf = 0,
        flagged = 0;
    int combo = 0, verified = 0;
    for (int i = 0; i < 24; i++) {
        expect_idea += i % 2 == 1;
        expect_draft += i % 3 == 1;
        expect_a += i % 4 == 0 || i % 4 == 1;
        expect_ab += i % 4 == 1;
        expect_any += i % 4 != 3;
        expect_conf += (i % 10) >= 7;
        flagged += i % 6 == 0;
        combo += i % 2 == 1 && (i % 4 == 1) && i > 5;
        verified += i % 5 == 0;
    }
    pk_note_query q = {.flagged = -1, .limit = 100};
    cr_assert_eq(count_of(&q), 24);
    q.type = "idea";
    cr_assert_eq(count_of(&q), expect_idea);
    q = (pk_note_query){.flagged = -1, .limit = 100, .status = "draft"};
    cr_assert_eq(count_of(&q), expect_draft);
    const char *a[] = {"a"}, *ab[] = {"a", "b"}, *any[] = {"a", "c"};
    q = (pk_note_query){.flagged = -1, .limit = 100, .tags_all = a, .ntags_all = 1};
    cr_assert_eq(count_of(&q), expect_a);
    q.tags_all = ab, q.ntags_all = 2;
    cr_assert_eq(count_of(&q), expect_ab);
    q = (pk_note_query){.flagged = -1, .limit = 100, .tags_any = any, .ntags_any = 2};
    cr_assert_eq(count_of(&q), expect_any);
    q = (pk_note_query){.flagged = -1, .limit = 100, .has_min_confidence = true, .min_confidence = 0.7};
    cr_assert_eq(count_of(&q), expect_conf);
    q = (pk_note_query){.flagged = 1, .limit = 100};
    cr_assert_eq(count_of(&q), flagged);
    q.flagged = 0;
    cr_assert_eq(count_of(&q), 24 - flagged);
    q = (pk_note_query){
        .flagged = -1, .limit = 100, .type = "idea", .tags_all = ab, .ntags_all = 2, .created_after = t5};
    cr_assert_eq(count_of(&q), combo);
    q = (pk_note_query){.flagged = -1, .limit = 100, .created_before = t5};
    cr_assert_eq(count_of(&q), 5);
    q = (pk_note_query){.flagged = -1, .limit = 100, .verification_status = "verified"};
    cr_assert_eq(count_of(&q), verified);
    pk_page p = {0};
    q = (pk_note_query){.flagged = -1, .status = "bogus"};
    pk_err_free(fx_expect_err(pk_store_note_list(fx_store, NULL, &q, &p), "validation_failed", 422));
}

Test(store, search_ranks_highlights_and_pages)
{
    char title_hit[40], content_hit[40], both[40];
    cJSON_Delete(fx_create("Quantum computing primer", "An introduction to qubits.", NULL, 0.5, title_hit));
    cJSON_Delete(
        fx_create("Physics notes", "Some words about quantum effects in metals.", NULL, 0.5, content_hit));
    cJSON_Delete(fx_create("Quantum quantum", "quantum everywhere, quantum", NULL, 0.5, both));
    cJSON_Delete(fx_create("Unrelated", "nothing to see here", NULL, 0.5, NULL));
    pk_note_query q = {.text = "quantum", .flagged = -1};
    cJSON *items = fx_page(true, &q, NULL);
    cr_assert_eq(cJSON_GetArraySize(items), 3);
    cr_assert_str_eq(fx_str(cJSON_GetArrayItem(items, 0), "id"), both);
    cr_assert_str_eq(fx_str(cJSON_GetArrayItem(items, 2), "id"), content_hit,
                     "title matches outrank content");
    double prev = 1e300;
    for (int i = 0; i < 3; i++) {
        cJSON *it = cJSON_GetArrayItem(items, i);
        double sc = fx_num(it, "score");
        cr_assert(sc > 0 && sc <= prev, "scores must be positive and non-increasing");
        prev = sc;
        cr_assert(strstr(fx_str(it, "snippet"), "<mark>"), "snippet: %s", fx_str(it, "snippet"));
    }
    cJSON_Delete(items);
    /* stemming: "computers" finds "computing" via porter */
    q.text = "computers";
    cr_assert_eq(count_of(&q), 1);
    /* offset pages */
    q.text = "quantum";
    q.limit = 2;
    char *next = NULL;
    items = fx_page(true, &q, &next);
    cr_assert_eq(cJSON_GetArraySize(items), 2);
    cr_assert_not_null(next);
    cJSON_Delete(items);
    q.cursor = next;
    char *last = NULL;
    items = fx_page(true, &q, &last);
    cr_assert_eq(cJSON_GetArraySize(items), 1);
    cr_assert_null(last);
    cr_assert_str_eq(fx_str(cJSON_GetArrayItem(items, 0), "id"), content_hit);
    cJSON_Delete(items);
    free(next);
    /* sorted by another column, with snippets still present */
    q = (pk_note_query){
        .text = "quantum", .flagged = -1, .sort = PK_SORT_CREATED, .ascending = true, .limit = 2};
    items = fx_page(true, &q, &next);
    cr_assert_str_eq(fx_str(cJSON_GetArrayItem(items, 0), "id"), title_hit);
    cr_assert_str_eq(fx_str(cJSON_GetArrayItem(items, 1), "id"), content_hit);
    cr_assert(strstr(fx_str(cJSON_GetArrayItem(items, 1), "snippet"), "<mark>quantum</mark>"));
    cJSON_Delete(items);
    q.cursor = next;
    items = fx_page(true, &q, NULL);
    cr_assert_eq(cJSON_GetArraySize(items), 1);
    cr_assert_str_eq(fx_str(cJSON_GetArrayItem(items, 0), "id"), both);
    cJSON_Delete(items);
    free(next);
}

Test(store, search_sees_updates_and_treats_syntax_as_words)
{
    char id[40];
    cJSON_Delete(fx_create("Alpha", "first draft", NULL, 0.5, id));
    pk_note_query q = {.text = "second", .flagged = -1};
    cr_assert_eq(count_of(&q), 0);
    pk_note_input up = {.set = PK_NF_CONTENT, .content = "second draft"};
    pk_buf out = PK_BUF_INIT;
    cr_assert_null(pk_store_note_update(fx_store, NULL, id, 0, &up, &out));
    pk_buf_free(&out);
    cr_assert_eq(count_of(&q), 1);
    q.text = "first";
    cr_assert_eq(count_of(&q), 0);
    /* FTS5 operators and column filters are plain words here: none may raise a syntax error */
    const char *hostile[] = {"title:alpha",
                             "NEAR(alpha draft)",
                             "alpha OR nothing",
                             "\"second draft",
                             "alpha AND",
                             "(draft",
                             "dra*",
                             "^alpha",
                             "alpha\" OR \"x",
                             "- + draft"};
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        q.text = hostile[i];
        pk_page p = {0};
        pk_err *e = pk_store_note_search(fx_store, NULL, &q, &p);
        cr_assert_null(e, "query %s: %s", hostile[i], e ? e->message : "");
        pk_page_free(&p);
    }
    q.text = "dra*";
    cr_assert_eq(count_of(&q), 1, "prefix query");
    q.text = "\"second draft\"";
    cr_assert_eq(count_of(&q), 1, "phrase");
    q.text = "\"draft second\"";
    cr_assert_eq(count_of(&q), 0, "phrase order matters");
    pk_page p = {0};
    q.text = "  -- && ";
    pk_err_free(fx_expect_err(pk_store_note_search(fx_store, NULL, &q, &p), "validation_failed", 422));
    q.text = NULL;
    pk_err_free(fx_expect_err(pk_store_note_search(fx_store, NULL, &q, &p), "validation_failed", 422));
}

Test(store, links_connect_existing_notes)
{
    char a[40], b[40];
    cJSON_Delete(fx_create("A", "a", NULL, 0.5, a));
    cJSON_Delete(fx_create("B", "b", NULL, 0.5, b));
    pk_buf out = PK_BUF_INIT;
    cr_assert_null(pk_store_link_create(fx_store, NULL, a, b, "supports", 0.75, "{\"why\": \"x\"}", &out));
    cJSON *l = cJSON_Parse(out.data);
    cr_assert_str_eq(fx_str(l, "source_id"), a);
    cr_assert_str_eq(fx_str(l, "target_id"), b);
    cr_assert_str_eq(fx_str(l, "type"), "supports");
    cr_assert_eq(fx_num(l, "strength"), 0.75);
    cr_assert(strstr(out.data, "\"metadata\":{\"why\":\"x\"}"));
    cJSON_Delete(l);
    pk_buf_reset(&out);
    pk_err_free(fx_expect_err(pk_store_link_create(fx_store, NULL, a, b, "supports", 0.1, NULL, &out),
                              "conflict", 409));
    cr_assert_null(
        pk_store_link_create(fx_store, NULL, b, a, "supports", 0.1, NULL, &out)); /* other direction */
    pk_err_free(fx_expect_err(pk_store_link_create(fx_store, NULL, a, a, "x", 0.1, NULL, &out),
                              "validation_failed", 422));
    pk_err_free(fx_expect_err(pk_store_link_create(fx_store, NULL, a, b, "Bad Type", 0.1, NULL, &out),
                              "validation_failed", 422));
    pk_err_free(fx_expect_err(pk_store_link_create(fx_store, NULL, a, b, "x", 2.0, NULL, &out),
                              "validation_failed", 422));
    pk_err_free(fx_expect_err(pk_store_link_create(fx_store, NULL, a, b, "x", 0.5, "[]", &out),
                              "validation_failed", 422));
    pk_err_free(fx_expect_err(pk_store_link_create(fx_store, NULL, "missing", b, "x", 0.5, NULL, &out),
                              "not_found", 404));
    pk_err *e = fx_expect_err(pk_store_link_create(fx_store, NULL, a, "missing", "x", 0.5, NULL, &out),
                              "validation_failed", 422);
    cr_assert_str_eq(e->fields[0].field, "target_id");
    pk_err_free(e);
    pk_buf_reset(&out);
    cr_assert_null(pk_store_link_list(fx_store, NULL, a, &out));
    cJSON *arr = cJSON_Parse(out.data);
    cr_assert_eq(cJSON_GetArraySize(arr), 2, "both directions: %s", out.data);
    cJSON_Delete(arr);
    pk_err_free(fx_expect_err(pk_store_link_list(fx_store, NULL, "missing", &out), "not_found", 404));
    pk_buf_free(&out);
}
