/* The embedded store with its in-memory search index on: writes through the store, writes by another
 * connection (as another process would make them), a search_log trimmed past what the index applied
 * (rebuild, FTS5 meanwhile), and which engine answered each search (the metrics). */
#include "foundation/metrics.h"
#include "store_fixture.h"
#include <pthread.h>
#include <sqlite3.h>

static pk_metrics *reg;

static void setup_indexed(void)
{
    snprintf(fx_dir, sizeof fx_dir, "/tmp/pake-store-test-XXXXXX");
    cr_assert_not_null(mkdtemp(fx_dir));
    pk_sqlite_config cfg = {
        .data_dir = fx_dir, .max_connections = 4, .wall_clock = &fx_wall_clock, .search_index = true};
    fx_store = fx_open_cfg(&cfg);
    reg = pk_metrics_new();
    pk_store_sqlite_bind_metrics(fx_store, reg);
}

static void teardown_indexed(void)
{
    fx_teardown();
    pk_metrics_free(reg);
}

TestSuite(store_index, .init = setup_indexed, .fini = teardown_indexed, .timeout = 60);

static double metric(const char *line_prefix)
{
    pk_buf b = PK_BUF_INIT;
    pk_metrics_render(reg, &b);
    pk_buf_putc(&b, 0);
    double v = -1;
    for (char *l = b.data; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (!strncmp(l, line_prefix, strlen(line_prefix)) && l[strlen(line_prefix)] == ' ')
            v = strtod(l + strlen(line_prefix) + 1, NULL);
    pk_buf_free(&b);
    return v;
}

/* ids of the hits of a relevance search, space-separated */
static char *hits(const char *text)
{
    pk_note_query q = {.text = text, .flagged = -1, .limit = 50};
    cJSON *items = fx_page(true, &q, NULL);
    pk_buf b = PK_BUF_INIT;
    cJSON *it;
    cJSON_ArrayForEach(it, items)
    {
        const char *id = fx_str(it, "id");
        pk_buf_puts(&b, id ? id : "?");
        pk_buf_putc(&b, ' ');
    }
    cJSON_Delete(items);
    pk_buf_putc(&b, 0);
    return pk_buf_steal(&b, NULL);
}

static void exec_other(const char *sql) /* another connection to the same file: another process's write */
{
    char path[300];
    snprintf(path, sizeof path, "%s/pake.db", fx_dir);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
    sqlite3_close(db);
}

Test(store_index, keeps_up_with_every_writer_and_rebuilds_after_a_gap)
{
    char a[40], b[40];
    cJSON_Delete(fx_create("Wombat habits", "Burrows and grass.", "[\"fauna\"]", 0.5, a));
    cJSON_Delete(fx_create("Koala", "Eucalyptus leaves; wombat neighbours.", NULL, 0.5, b));
    char *h = hits("wombat"); /* starts the build; FTS5 answers this one */
    cr_assert_eq(strlen(h), 74, "two hits: %s", h);
    free(h);
    cr_assert(pk_store_sqlite_search_ready(fx_store, 30000));
    cr_assert_eq(metric("pake_search_index_ready"), 1);
    cr_assert_eq(metric("pake_search_index_notes"), 2);
    double by_index = metric("pake_search_queries_total{engine=\"index\"}");

    /* a write through the store, then one by another connection: both seen by the next search */
    char c[40];
    cJSON_Delete(fx_create("Quokka", "Smiles at wombat fans.", NULL, 0.5, c));
    exec_other("UPDATE notes SET content = 'Grass only.' WHERE title = 'Koala'");
    h = hits("wombat");
    cr_assert(strstr(h, a) && strstr(h, c) && !strstr(h, b), "%s", h);
    free(h);
    exec_other("DELETE FROM notes WHERE title = 'Quokka'");
    h = hits("wombat smiles");
    cr_assert_str_eq(h, "");
    free(h);
    cr_assert_eq(metric("pake_search_queries_total{engine=\"index\"}"), by_index + 2);
    cr_assert_eq(metric("pake_search_index_notes"), 2);

    /* entries the index has not applied are trimmed away (as after 100,000 writes): it must not
     * trust itself; FTS5 answers, correctly, while it is rebuilt */
    exec_other("UPDATE notes SET title = 'Platypus' WHERE title = 'Wombat habits';"
               "UPDATE notes SET content = 'Burrows' WHERE title = 'Platypus';"
               "DELETE FROM search_log WHERE id < (SELECT max(id) FROM search_log)");
    double fts5 = metric("pake_search_queries_total{engine=\"fts5\"}");
    h = hits("platypus");
    cr_assert(strstr(h, a), "%s", h);
    free(h);
    cr_assert_eq(metric("pake_search_queries_total{engine=\"fts5\"}"), fts5 + 1);
    cr_assert(pk_store_sqlite_search_ready(fx_store, 30000));
    cr_assert_eq(metric("pake_search_index_builds_total"), 2);
    h = hits("platypus");
    cr_assert(strstr(h, a), "%s", h);
    free(h);
    h = hits("habits");
    cr_assert_str_eq(h, "");
    free(h);
    cr_assert_eq(metric("pake_search_queries_total{engine=\"index\"}"), by_index + 4);
}

Test(store_index, prefix_and_phrase_queries_go_to_fts5)
{
    char a[40];
    cJSON_Delete(fx_create("Knowledge engine", "An engine of knowledge.", NULL, 0.5, a));
    cr_assert(pk_store_sqlite_search_ready(fx_store, 30000));
    double fts5 = metric("pake_search_queries_total{engine=\"fts5\"}");
    char *h = hits("knowl*");
    cr_assert(strstr(h, a));
    free(h);
    h = hits("\"knowledge engine\"");
    cr_assert(strstr(h, a));
    free(h);
    cr_assert_eq(metric("pake_search_queries_total{engine=\"fts5\"}"), fts5 + 2);
}

/* Searches on several threads while notes are written, updated and deleted through the store: no
 * error, every hit really contains the word, and at the end the index answers exactly as FTS5 does
 * (a second store handle on the same file without the index). */
typedef struct stress {
    int rounds;
    int errors;
    int wrong;
} stress;

static const char *const STRESS_WORDS[] = {"alpha", "beta", "gamma", "delta"};

static void *stress_search(void *arg)
{
    stress *st = arg;
    for (int i = 0; i < st->rounds; i++) {
        const char *w = STRESS_WORDS[i % 4];
        pk_note_query q = {.text = w, .flagged = -1, .limit = 50};
        pk_page p = {0};
        pk_err *e = pk_store_note_search(fx_store, NULL, &q, &p);
        if (e) {
            __atomic_add_fetch(&st->errors, 1, __ATOMIC_RELAXED);
            pk_err_free(e);
            continue;
        }
        cJSON *items = cJSON_Parse(p.items.data);
        cJSON *it;
        cJSON_ArrayForEach(it, items)
        {
            const char *snip = fx_str(it, "snippet");
            char mark[32];
            snprintf(mark, sizeof mark, "<mark>%s</mark>", w);
            if (!snip || !strstr(snip, mark)) __atomic_add_fetch(&st->wrong, 1, __ATOMIC_RELAXED);
        }
        cJSON_Delete(items);
        pk_page_free(&p);
    }
    return NULL;
}

Test(store_index, concurrent_searches_and_writes)
{
    char ids[40][40];
    for (int i = 0; i < 40; i++) {
        char title[64], content[128];
        snprintf(title, sizeof title, "note %d %s", i, STRESS_WORDS[i % 4]);
        snprintf(content, sizeof content, "%s and %s. Then %s.", STRESS_WORDS[(i + 1) % 4],
                 STRESS_WORDS[i % 4], STRESS_WORDS[(i + 2) % 4]);
        cJSON_Delete(fx_create(title, content, NULL, 0.5, ids[i]));
    }
    /* no waiting for the index: the first searches start its build while the writer writes */
    stress st = {.rounds = 150};
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, stress_search, &st);
    for (int i = 0; i < 60; i++) { /* the writer: updates, deletes, creates */
        char *id = ids[i % 40];
        if (i % 3 == 2) {
            pk_err *e = pk_store_note_delete(fx_store, NULL, id, 0);
            pk_err_free(e);
            char title[64];
            snprintf(title, sizeof title, "again %d %s", i, STRESS_WORDS[i % 4]);
            cJSON_Delete(fx_create(title, "gamma delta", NULL, 0.5, id));
        } else {
            pk_note_input in = {.set = PK_NF_CONTENT, .content = i % 2 ? "alpha beta" : "gamma"};
            pk_buf out = PK_BUF_INIT;
            pk_err *e = pk_store_note_update(fx_store, NULL, id, 0, &in, &out);
            cr_assert_null(e, "update: %s", e ? e->message : "");
            pk_buf_free(&out);
        }
    }
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(st.errors, 0);
    cr_assert_eq(st.wrong, 0, "hits whose snippet does not mark the word: %d", st.wrong);

    cr_assert(pk_store_sqlite_search_ready(fx_store, 30000));
    cr_assert_eq(metric("pake_search_index_builds_total"), 1);
    pk_sqlite_config plain = {.data_dir = fx_dir, .max_connections = 4, .wall_clock = &fx_wall_clock};
    pk_store *fts = fx_open_cfg(&plain);
    double by_index = metric("pake_search_queries_total{engine=\"index\"}");
    for (int w = 0; w < 4; w++) {
        pk_note_query q = {.text = STRESS_WORDS[w], .flagged = -1, .limit = 100};
        pk_page a = {0}, b = {0};
        cr_assert_null(pk_store_note_search(fx_store, NULL, &q, &a));
        cr_assert_null(pk_store_note_search(fts, NULL, &q, &b));
        if (a.count != b.count) fprintf(stderr, "INDEX %s\nFTS5 %s\n", a.items.data, b.items.data);
        cr_assert_eq(a.count, b.count, "%s: index %zu, FTS5 %zu", STRESS_WORDS[w], a.count, b.count);
        cr_assert_str_eq(a.items.data, b.items.data, "%s", STRESS_WORDS[w]);
        pk_page_free(&a);
        pk_page_free(&b);
    }
    cr_assert_eq(metric("pake_search_queries_total{engine=\"index\"}"), by_index + 4);
    pk_store_close(fts);
}

/* Pages from the index with a filter that passes few hits, far apart in rank: the rows are read in
 * batches, and whether a next page exists must be found past the batch that filled the page. */
Test(store_index, filtered_pages_find_a_next_hit_past_the_batch)
{
    char kept[3][40];
    int n = 0;
    for (int i = 0; i < 40; i++) { /* more filler words: a lower BM25 score, so rank = i */
        pk_buf content = PK_BUF_INIT;
        pk_buf_puts(&content, "zebra");
        for (int k = 0; k < i; k++)
            pk_buf_puts(&content, " filler");
        bool keep = i == 0 || i == 1 || i == 30;
        cJSON_Delete(
            fx_create("Stripes", content.data, keep ? "[\"keep\"]" : NULL, 0.5, keep ? kept[n++] : NULL));
        pk_buf_free(&content);
    }
    free(hits("zebra")); /* starts the build */
    cr_assert(pk_store_sqlite_search_ready(fx_store, 30000));
    double before = metric("pake_search_queries_total{engine=\"index\"}");
    const char *tags[] = {"keep"};
    pk_note_query q = {.text = "zebra", .flagged = -1, .limit = 2, .tags_all = tags, .ntags_all = 1};
    char *next = NULL;
    cJSON *items = fx_page(true, &q, &next);
    cr_assert_eq(cJSON_GetArraySize(items), 2);
    cr_assert_str_eq(fx_str(cJSON_GetArrayItem(items, 0), "id"), kept[0]);
    cr_assert_str_eq(fx_str(cJSON_GetArrayItem(items, 1), "id"), kept[1]);
    cr_assert_not_null(next, "the third kept note (rank 30) is a next page");
    cJSON_Delete(items);
    q.cursor = next;
    char *next2 = NULL;
    items = fx_page(true, &q, &next2);
    cr_assert_eq(cJSON_GetArraySize(items), 1);
    cr_assert_str_eq(fx_str(cJSON_GetArrayItem(items, 0), "id"), kept[2]);
    cr_assert_null(next2);
    cJSON_Delete(items);
    free(next);
    /* without the filter: 40 hits, pages of 24 + 16 (one more than a batch, then the rest) */
    pk_note_query all = {.text = "zebra", .flagged = -1, .limit = 24};
    items = fx_page(true, &all, &next);
    cr_assert_eq(cJSON_GetArraySize(items), 24);
    cr_assert_not_null(next);
    cJSON_Delete(items);
    all.cursor = next;
    items = fx_page(true, &all, &next2);
    cr_assert_eq(cJSON_GetArraySize(items), 16);
    cr_assert_null(next2);
    cJSON_Delete(items);
    free(next);
    cr_assert_eq(metric("pake_search_queries_total{engine=\"index\"}") - before, 4, "the index answered");
}
