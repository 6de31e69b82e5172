/* The embedded store with its in-memory search index on: writes through the store, writes by another
 * connection (as another process would make them), a search_log trimmed past what the index applied
 * (rebuild, FTS5 meanwhile), and which engine answered each search (the metrics). */
#include "foundation/metrics.h"
#include "store_fixture.h"
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
