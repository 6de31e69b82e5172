/*
 * bench_store: CPU time of the embedded store's operations on the shared 10k-note corpus.
 * Loads ../shared/data/bench/notes-10k.jsonl into a fresh data dir, then times create, get by id,
 * list pages, and searches for each word of search-words.txt (by relevance, and sorted by created_at),
 * then the relevance searches again from the in-memory search index ("rel-index").
 * Prints microseconds per operation. Run through bench/store.sh.
 */
#include "core/clock.h"
#include "core/json.h"
#include "store/store.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(pk_err *e, const char *what)
{
    if (!e) return;
    fprintf(stderr, "%s: %s\n", what, e->message);
    exit(1);
}

int main(int argc, char **argv)
{
    const char *shared = argc > 1 ? argv[1] : "../shared/data/bench";
    const char *dir = argc > 2 ? argv[2] : "/tmp/pake-bench-store";
    char path[512];
    snprintf(path, sizeof path, "rm -rf %s", dir);
    if (system(path) != 0) return 1;
    pk_sqlite_config cfg = {.data_dir = dir};
    pk_store *s;
    die(pk_store_open_sqlite(&cfg, false, &s), "open");

    snprintf(path, sizeof path, "%s/notes-10k.jsonl", shared);
    FILE *f = fopen(path, "r");
    if (!f) return perror(path), 1;
    static char ids[10000][40];
    int n = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    pk_buf out = PK_BUF_INIT, tags = PK_BUF_INIT;
    int64_t t0 = cpu_ns(), w0 = pk_mono_ns();
    while (n < 10000 && (len = getline(&line, &cap, f)) > 0) {
        cJSON *j = cJSON_ParseWithLength(line, (size_t)len);
        pk_buf_reset(&tags);
        pk_jw w;
        pk_jw_init(&w, &tags);
        pk_jw_cjson(&w, cJSON_GetObjectItem(j, "tags"));
        pk_note_input in = {.set = PK_NF_TITLE | PK_NF_CONTENT | PK_NF_TAGS | PK_NF_CONFIDENCE,
                            .title = cJSON_GetObjectItem(j, "title")->valuestring,
                            .content = cJSON_GetObjectItem(j, "content")->valuestring,
                            .tags_json = tags.data,
                            .confidence_score = cJSON_GetObjectItem(j, "confidence_score")->valuedouble};
        pk_buf_reset(&out);
        die(pk_store_note_create(s, NULL, &in, &out), "create");
        memcpy(ids[n], out.data + 7, 36); /* {"id":"<36>" */
        ids[n][36] = '\0';
        n++;
        cJSON_Delete(j);
    }
    fclose(f);
    free(line);
    double create_us = (double)(cpu_ns() - t0) / 1e3 / n,
           create_wall_us = (double)(pk_mono_ns() - w0) / 1e3 / n;
    printf("create      %7.1f us cpu/op  %7.1f us wall/op  (%d notes, one transaction each)\n", create_us,
           create_wall_us, n);

    int gets = 20000;
    t0 = cpu_ns();
    for (int i = 0; i < gets; i++) {
        pk_buf_reset(&out);
        die(pk_store_note_get(s, NULL, ids[(i * 7919) % n], &out, NULL), "get");
    }
    printf("get         %7.1f us cpu/op  (%zu-byte note)\n", (double)(cpu_ns() - t0) / 1e3 / gets, out.len);

    int pages = 2000;
    char *cursor = NULL;
    t0 = cpu_ns();
    for (int i = 0; i < pages; i++) {
        pk_note_query q = {.flagged = -1, .limit = 20, .cursor = cursor};
        pk_page p = {0};
        die(pk_store_note_list(s, NULL, &q, &p), "list");
        free(cursor);
        cursor = p.next_cursor;
        p.next_cursor = NULL;
        pk_page_free(&p);
    }
    free(cursor);
    printf("list page   %7.1f us cpu/op  (20 notes, keyset, walking 2000 pages)\n",
           (double)(cpu_ns() - t0) / 1e3 / pages);

    snprintf(path, sizeof path, "%s/search-words.txt", shared);
    f = fopen(path, "r");
    if (!f) return perror(path), 1;
    char words[200][64];
    int nw = 0;
    while (nw < 200 && fgets(words[nw], sizeof words[nw], f)) {
        words[nw][strcspn(words[nw], "\r\n")] = '\0';
        if (words[nw][0]) nw++;
    }
    fclose(f);
    pk_sort_key sorts[] = {PK_SORT_RELEVANCE, PK_SORT_CREATED, PK_SORT_RELEVANCE};
    const char *names[] = {"relevance", "created_at", "rel-index"};
    for (int k = 0; k < 3; k++) {
        if (k == 2) { /* the same searches from the in-memory index (a second handle, index on) */
            pk_store_close(s);
            cfg.search_index = true;
            die(pk_store_open_sqlite(&cfg, false, &s), "open with the search index");
            if (!pk_store_sqlite_search_ready(s, 120000)) return fprintf(stderr, "index not ready\n"), 1;
        }
        int rounds = getenv("BENCH_STORE_ROUNDS") ? atoi(getenv("BENCH_STORE_ROUNDS")) : 3;
        double worst = 0;
        t0 = cpu_ns();
        for (int r = 0; r < rounds; r++)
            for (int i = 0; i < nw; i++) {
                int64_t one = cpu_ns();
                pk_note_query q = {.text = words[i], .flagged = -1, .limit = 20, .sort = sorts[k]};
                pk_page p = {0};
                die(pk_store_note_search(s, NULL, &q, &p), "search");
                if (p.count != 20) fprintf(stderr, "search %s: %zu results\n", words[i], p.count);
                pk_page_free(&p);
                double us = (double)(cpu_ns() - one) / 1e3;
                if (us > worst) worst = us;
            }
        printf("search %-10s %7.1f us cpu/op  worst %7.1f us  (%d words x %d, 20 results with snippets)\n",
               names[k], (double)(cpu_ns() - t0) / 1e3 / (nw * rounds), worst, nw, rounds);
    }
    pk_buf_free(&out);
    pk_buf_free(&tags);
    pk_store_close(s);
    if (argc > 3 && strcmp(argv[3], "keep") == 0) return 0; /* leave the database for inspection */
    snprintf(path, sizeof path, "rm -rf %s", dir);
    return system(path) != 0;
}
