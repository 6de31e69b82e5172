/*
 * `pake guard ...`: measuring, fitting and checking the guard from the command line.
 *
 *   eval FILE.jsonl   lines {"text","label":"injection"|"benign","source"}; "injection" is predicted when
 *                     the decision under the search-query policy is BLOCK. Prints the confusion matrix,
 *                     recall, FPR, precision, F1 overall and per source, and scan throughput.
 *   scan              one text on stdin -> JSON decision.
 *   fit FILE.jsonl    re-estimates rule weights from labelled data and prints a rule file; reports a
 *                     two-fold (even/odd line) held-out evaluation on stderr.
 *   bench FILE.jsonl  scans every string value of every line as note content: MB/s and decisions.
 *   check-rules FILE  validates a rule file.
 *
 * Weight fitting model: a rule's weight is an estimate of P(injection | rule fired), smoothed towards
 * the hand-set weight in the rule file (a Beta prior with `--prior K` pseudo-observations):
 *   w = (tp + K * w0) / (tp + fp + K), clamped to [0.02, 0.99].
 * Rules that never fire keep w0. This keeps rare rules near their prior instead of jumping to 0 or 1
 * on one example, and is reproducible (no randomness, one pass).
 */
#include "guard/guard.h"
#include "core/json.h"
#include "guard/rules.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Throughput is measured in CPU time of the scanning thread ("MB/s per core"): the machine is shared,
 * and wall time would mostly measure the neighbours. */
static int64_t cpu_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

typedef struct sample {
    char *text;
    size_t len;
    bool injection;
    int source; /* index into the source table */
} sample;

typedef struct dataset {
    sample *v;
    size_t n, cap;
    char **sources;
    size_t nsources;
    char **repos; /* "owner/name" of each source (its first two path components) */
    int *repo_of; /* source index -> repo index */
    size_t nrepos;
} dataset;

static void dataset_free(dataset *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->v[i].text);
    for (size_t i = 0; i < d->nsources; i++)
        free(d->sources[i]);
    for (size_t i = 0; i < d->nrepos; i++)
        free(d->repos[i]);
    free(d->v), free(d->sources), free(d->repos), free(d->repo_of);
}

static int source_index(dataset *d, const char *s)
{
    for (size_t i = 0; i < d->nsources; i++)
        if (strcmp(d->sources[i], s) == 0) return (int)i;
    d->sources = realloc(d->sources, sizeof(char *) * (d->nsources + 1));
    d->sources[d->nsources] = pk_strndup(s, strlen(s));
    const char *slash = strchr(s, '/');
    slash = slash ? strchr(slash + 1, '/') : NULL;
    size_t rl = slash ? (size_t)(slash - s) : strlen(s);
    int r = -1;
    for (size_t i = 0; i < d->nrepos; i++)
        if (strlen(d->repos[i]) == rl && memcmp(d->repos[i], s, rl) == 0) r = (int)i;
    if (r < 0) {
        d->repos = realloc(d->repos, sizeof(char *) * (d->nrepos + 1));
        d->repos[d->nrepos] = pk_strndup(s, rl);
        r = (int)d->nrepos++;
    }
    d->repo_of = realloc(d->repo_of, sizeof(int) * (d->nsources + 1));
    d->repo_of[d->nsources] = r;
    return (int)d->nsources++;
}

static int load_dataset(const char *path, dataset *d)
{
    memset(d, 0, sizeof *d);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "pake guard: cannot open %s\n", path);
        return -1;
    }
    char *line = NULL;
    size_t lcap = 0;
    ssize_t n;
    int lineno = 0;
    while ((n = getline(&line, &lcap, f)) > 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        if (n == 0) continue;
        cJSON *j;
        pk_err *e = pk_json_parse(line, (size_t)n, PK_JSON_MAX_DEPTH_DEFAULT, &j);
        if (e) {
            fprintf(stderr, "pake guard: %s:%d: %s\n", path, lineno, e->message);
            pk_err_free(e);
            continue;
        }
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "text");
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(j, "label");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "source");
        if (cJSON_IsString(t) && cJSON_IsString(l)) {
            if (d->n == d->cap)
                d->cap = d->cap ? d->cap * 2 : 256, d->v = realloc(d->v, sizeof(sample) * d->cap);
            sample *x = &d->v[d->n++];
            x->len = strlen(t->valuestring);
            x->text = pk_strndup(t->valuestring, x->len);
            x->injection = strcmp(l->valuestring, "injection") == 0;
            x->source = source_index(d, cJSON_IsString(s) ? s->valuestring : "unknown");
        } else {
            fprintf(stderr, "pake guard: %s:%d: needs string fields \"text\" and \"label\"\n", path, lineno);
        }
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
    return 0;
}

/* ---- metrics ---------------------------------------------------------------------------------- */

typedef struct confusion {
    long tp, fp, tn, fn;
} confusion;

static double ratio(long a, long b)
{
    return b ? (double)a / (double)b : -1.0;
}

static void metrics(const confusion *c, double *recall, double *fpr, double *precision, double *f1)
{
    *recall = ratio(c->tp, c->tp + c->fn);
    *fpr = ratio(c->fp, c->fp + c->tn);
    *precision = ratio(c->tp, c->tp + c->fp);
    *f1 = (*recall > 0 && *precision > 0) ? 2 * *recall * *precision / (*recall + *precision)
                                          : (*recall < 0 ? -1 : 0);
}

static void jw_metric(pk_jw *w, const char *k, double v)
{
    pk_jw_key(w, k);
    if (v < 0)
        pk_jw_null(w);
    else
        pk_jw_num(w, v);
}

static void confusion_json(pk_jw *w, const confusion *c)
{
    double r, f, p, f1;
    metrics(c, &r, &f, &p, &f1);
    pk_jw_obj_open(w);
    pk_jw_key(w, "tp"), pk_jw_int(w, c->tp);
    pk_jw_key(w, "fp"), pk_jw_int(w, c->fp);
    pk_jw_key(w, "tn"), pk_jw_int(w, c->tn);
    pk_jw_key(w, "fn"), pk_jw_int(w, c->fn);
    jw_metric(w, "recall", r), jw_metric(w, "fpr", f), jw_metric(w, "precision", p), jw_metric(w, "f1", f1);
    pk_jw_obj_close(w);
}

static void fmt_pct(char *out, size_t n, double v)
{
    if (v < 0)
        snprintf(out, n, "%7s", "-");
    else
        snprintf(out, n, "%6.1f%%", v * 100);
}

static void confusion_line(FILE *o, const char *name, const confusion *c)
{
    double r, f, p, f1;
    metrics(c, &r, &f, &p, &f1);
    char rs[16], fs[16], ps[16], f1s[16];
    fmt_pct(rs, sizeof rs, r), fmt_pct(fs, sizeof fs, f), fmt_pct(ps, sizeof ps, p),
        fmt_pct(f1s, sizeof f1s, f1);
    fprintf(o, "%5ld %5ld %5ld %5ld  %s %s %s %s  %s\n", c->tp, c->fp, c->tn, c->fn, rs, fs, ps, f1s, name);
}

typedef struct eval_out {
    confusion overall;
    confusion *per_source;
    confusion *per_repo; /* indexed like d->repos */
    double mb_per_s;
    FILE *misses; /* when set: one line per wrong decision */
} eval_out;

static const char *opt_value(int argc, char **argv, const char *name);

/* Same result (decision, score, categories, rule ids)? Used to check that the prefilter changes
 * nothing. */
static bool same_result(const pk_guard_result *a, const pk_guard_result *b)
{
    if (a->decision != b->decision || a->score != b->score || a->categories != b->categories ||
        a->nrules != b->nrules)
        return false;
    for (size_t i = 0; i < a->nrules; i++)
        if (strcmp(a->rule_ids[i], b->rule_ids[i]) != 0) return false;
    return true;
}

/* Scans every text with the prefilter on (g) and off (a second guard); prints and counts
 * differences. */
static long check_prefilter(pk_guard *g, const char *const *texts, const size_t *lens, size_t n, int argc,
                            char **argv)
{
    pk_guard_config cfg;
    pk_guard_config_from_env(&cfg);
    const char *r = opt_value(argc, argv, "--rules");
    if (r) cfg.rules_path = r;
    pk_guard *off;
    pk_err *e = pk_guard_new(&cfg, &off);
    if (e) return fprintf(stderr, "pake guard: %s\n", e->message), pk_err_free(e), -1;
    pk_guard_set_prefilter(off, false);
    long diff = 0;
    for (size_t i = 0; i < n; i++) {
        pk_guard_result a, b;
        pk_guard_scan(g, texts[i], lens[i], PK_GUARD_SEARCH_QUERY, &a);
        pk_guard_scan(off, texts[i], lens[i], PK_GUARD_SEARCH_QUERY, &b);
        if (!same_result(&a, &b)) {
            diff++;
            fprintf(stderr, "prefilter changed the result (score %.3f vs %.3f): %.200s\n", a.score, b.score,
                    texts[i]);
        }
    }
    pk_guard_free(off);
    fprintf(stderr, "prefilter check: %zu texts, %ld different results\n", n, diff);
    return diff;
}

/* Evaluates samples whose index i satisfies (i % mod == rem) (mod 1: all). */
static void evaluate(pk_guard *g, const dataset *d, size_t mod, size_t rem, eval_out *o)
{
    memset(&o->overall, 0, sizeof o->overall);
    o->mb_per_s = 0;
    o->per_source = calloc(d->nsources ? d->nsources : 1, sizeof(confusion));
    o->per_repo = calloc(d->nrepos ? d->nrepos : 1, sizeof(confusion));
    /* Scan first, timed as one block (a per-input CPU clock read is a system call costing more than
     * scanning a short input), then tally. */
    pk_guard_result *res = malloc(sizeof *res * (d->n ? d->n : 1));
    if (!res) abort();
    size_t bytes = 0;
    int64_t t0 = cpu_ns();
    for (size_t i = rem; i < d->n; i += mod) {
        pk_guard_scan(g, d->v[i].text, d->v[i].len, PK_GUARD_SEARCH_QUERY, &res[i]);
        bytes += d->v[i].len;
    }
    int64_t ns = cpu_ns() - t0;
    for (size_t i = rem; i < d->n; i += mod) {
        const sample *x = &d->v[i];
        const pk_guard_result *r = &res[i];
        bool pred = r->decision == PK_GUARD_BLOCK;
        if (o->misses && pred != x->injection) {
            fprintf(o->misses, "%s score=%.2f [", x->injection ? "MISS" : "FALSE", r->score);
            for (size_t k = 0; k < r->nrules; k++)
                fprintf(o->misses, "%s%s", k ? " " : "", r->rule_ids[k]);
            fprintf(o->misses, "] %s: %.300s\n", d->sources[x->source], x->text);
        }
        confusion *cs[3] = {&o->overall, &o->per_source[x->source], &o->per_repo[d->repo_of[x->source]]};
        for (int k = 0; k < 3; k++) {
            if (x->injection)
                pred ? cs[k]->tp++ : cs[k]->fn++;
            else
                pred ? cs[k]->fp++ : cs[k]->tn++;
        }
    }
    free(res);
    o->mb_per_s = ns > 0 ? (double)bytes / 1e6 / ((double)ns / 1e9) : 0;
}

static void print_eval(FILE *out, const dataset *d, const eval_out *o, bool json)
{
    if (json) {
        pk_buf b = PK_BUF_INIT;
        pk_jw w;
        pk_jw_init(&w, &b);
        pk_jw_obj_open(&w);
        pk_jw_key(&w, "overall");
        confusion_json(&w, &o->overall);
        pk_jw_key(&w, "per_source");
        pk_jw_obj_open(&w);
        for (size_t s = 0; s < d->nsources; s++) {
            pk_jw_key(&w, d->sources[s]);
            confusion_json(&w, &o->per_source[s]);
        }
        pk_jw_obj_close(&w);
        pk_jw_key(&w, "per_repo");
        pk_jw_obj_open(&w);
        for (size_t r = 0; r < d->nrepos; r++) {
            pk_jw_key(&w, d->repos[r]);
            confusion_json(&w, &o->per_repo[r]);
        }
        pk_jw_obj_close(&w);
        pk_jw_key(&w, "mb_per_s");
        pk_jw_num(&w, o->mb_per_s);
        pk_jw_obj_close(&w);
        fprintf(out, "%s\n", b.data);
        pk_buf_free(&b);
        return;
    }
    fprintf(out, "   tp    fp    tn    fn   recall     fpr  precis.      f1  source\n");
    confusion_line(out, "OVERALL", &o->overall);
    for (size_t r = 0; r < d->nrepos; r++) {
        char name[512];
        snprintf(name, sizeof name, "%s (all files)", d->repos[r]);
        confusion_line(out, name, &o->per_repo[r]);
    }
    for (size_t s = 0; s < d->nsources; s++)
        confusion_line(out, d->sources[s], &o->per_source[s]);
    fprintf(out, "scan throughput: %.1f MB/s (one thread, normalisation + decoding + matching)\n",
            o->mb_per_s);
}

/* ---- commands --------------------------------------------------------------------------------- */

static const char *opt_value(int argc, char **argv, const char *name)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return NULL;
}

static bool has_flag(int argc, char **argv, const char *name)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return true;
    return false;
}

/* First argument that is neither an option nor an option's value. */
static const char *positional(int argc, char **argv, const char *const *valued)
{
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-' && argv[i][1]) {
            for (const char *const *v = valued; *v; v++)
                if (strcmp(argv[i], *v) == 0) i++;
            continue;
        }
        return argv[i];
    }
    return NULL;
}

static pk_guard *open_guard(int argc, char **argv)
{
    pk_guard_config cfg;
    pk_guard_config_from_env(&cfg);
    const char *r = opt_value(argc, argv, "--rules");
    if (r) cfg.rules_path = r;
    const char *t = opt_value(argc, argv, "--block");
    if (t) cfg.block_threshold = atof(t);
    pk_guard *g;
    pk_err *e = pk_guard_new(&cfg, &g);
    if (e) {
        fprintf(stderr, "pake guard: %s\n", e->message);
        pk_err_free(e);
        return NULL;
    }
    if (has_flag(argc, argv, "--no-prefilter")) pk_guard_set_prefilter(g, false);
    return g;
}

static const char *const valued_opts[] = {"--rules", "--block", "--prior", "--split", NULL};

static int cmd_eval(int argc, char **argv)
{
    if (has_flag(argc, argv, "--help")) {
        puts("usage: pake guard eval FILE.jsonl [--json] [--rules FILE] [--block THRESHOLD] [--misses]\n"
             "Lines: {\"text\",\"label\":\"injection\"|\"benign\",\"source\"}. An input counts as detected "
             "when\n"
             "its decision under the search-query policy is block. Prints the confusion matrix, recall,\n"
             "false-positive rate, precision and F1 overall and per source, and scan MB/s (CPU time).\n"
             "--misses lists every wrong decision (rule ids, first 300 bytes) on stderr.\n"
             "--no-prefilter always runs the full rule databases; --check-prefilter first checks that\n"
             "the prefilter changes no result (exit 1 when it does).");
        return 0;
    }
    const char *path = positional(argc, argv, valued_opts);
    if (!path) return fprintf(stderr, "pake guard eval: missing FILE.jsonl (see --help)\n"), 2;
    pk_guard *g = open_guard(argc, argv);
    if (!g) return 1;
    dataset d;
    if (load_dataset(path, &d) != 0) return pk_guard_free(g), 1;
    if (has_flag(argc, argv, "--check-prefilter")) {
        const char **tx = malloc(sizeof(char *) * (d.n + 1));
        size_t *ln = malloc(sizeof(size_t) * (d.n + 1));
        for (size_t i = 0; i < d.n; i++)
            tx[i] = d.v[i].text, ln[i] = d.v[i].len;
        long diff = check_prefilter(g, tx, ln, d.n, argc, argv);
        free(tx), free(ln);
        if (diff != 0) return dataset_free(&d), pk_guard_free(g), 1;
    }
    eval_out o = {.misses = has_flag(argc, argv, "--misses") ? stderr : NULL};
    evaluate(g, &d, 1, 0, &o);
    print_eval(stdout, &d, &o, has_flag(argc, argv, "--json"));
    free(o.per_source), free(o.per_repo);
    dataset_free(&d);
    pk_guard_free(g);
    return 0;
}

static int cmd_scan(int argc, char **argv)
{
    if (has_flag(argc, argv, "--help")) {
        puts("usage: pake guard scan [--surface NAME] [--rules FILE] < TEXT\n"
             "Reads one text on stdin and prints {\"decision\",\"score\",\"categories\",\"rules\"}.\n"
             "Surfaces: note_content note_field search_query (default) tool_argument prompt_argument\n"
             "task_payload webhook.");
        return 0;
    }
    pk_guard_surface surface = PK_GUARD_SEARCH_QUERY;
    const char *sn = opt_value(argc, argv, "--surface");
    if (sn) {
        int found = -1;
        for (int s = 0; s < PK_GUARD_SURFACE_COUNT; s++)
            if (strcmp(sn, pk_guard_surface_name((pk_guard_surface)s)) == 0) found = s;
        if (found < 0) return fprintf(stderr, "pake guard scan: unknown surface %s\n", sn), 2;
        surface = (pk_guard_surface)found;
    }
    pk_guard *g = open_guard(argc, argv);
    if (!g) return 1;
    pk_buf in = PK_BUF_INIT;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
        pk_buf_append(&in, chunk, n);
    pk_guard_result r;
    pk_guard_scan(g, in.data ? in.data : "", in.len, surface, &r);
    pk_buf out = PK_BUF_INIT;
    pk_jw w;
    pk_jw_init(&w, &out);
    pk_guard_result_json(&r, &w);
    printf("%s\n", out.data);
    pk_buf_free(&out), pk_buf_free(&in);
    pk_guard_free(g);
    return 0;
}

/* Prints each rule's required literals (the prefilter's view of it). */
static int print_literals(const char *path)
{
    char *text;
    size_t len;
    pk_guard_ruleset *rs = NULL;
    pk_err *e = pk_guard_read_file(path, &text, &len);
    if (!e) e = pk_guard_ruleset_build(text, len, path, &rs), free(text);
    if (e) return fprintf(stderr, "%s\n", e->message), pk_err_free(e), 1;
    size_t always = 0;
    for (size_t i = 0; i < rs->nrules; i++) {
        const pk_guard_rule *r = &rs->rules[i];
        printf("%s", r->id);
        if (!r->nreq) printf(" (no required literal: always scanned)"), always++;
        for (size_t q = 0; q < r->nreq; q++) {
            printf("%s", q ? " AND" : "");
            for (size_t k = 0; k < r->req[q].n; k++)
                printf(" \"%.*s\"", (int)r->req[q].v[k].n, r->req[q].v[k].s);
        }
        putchar('\n');
    }
    printf("%zu rules, %zu always scanned\n", rs->nrules, always);
    pk_guard_ruleset_release(rs);
    return 0;
}

static int cmd_check(int argc, char **argv)
{
    const char *path = positional(argc, argv, (const char *const[]){NULL});
    if (has_flag(argc, argv, "--help") || !path) {
        puts("usage: pake guard check-rules FILE [--literals]\nValidates a rule file (syntax, categories, "
             "weights, unique ids,\n"
             "patterns compile). Exit 0 when valid, 1 with file:line: message otherwise.\n"
             "--literals also prints each rule's required literals (the prefilter).");
        return path ? 0 : 2;
    }
    if (has_flag(argc, argv, "--literals")) return print_literals(path);
    size_t n;
    pk_err *e = pk_guard_check_file(path, &n);
    if (e) {
        fprintf(stderr, "%s\n", e->message);
        pk_err_free(e);
        return 1;
    }
    printf("%s: ok, %zu rules\n", path, n);
    return 0;
}

/* Replaces the weight field of every rule line in `text` with new weights (by rule index order). */
static void rewrite_rules(const char *text, const double *weights, size_t nrules, pk_buf *out)
{
    size_t ri = 0;
    bool header = false;
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t ln = nl ? (size_t)(nl - p) : strlen(p);
        const char *s = p;
        while (s < p + ln && (*s == ' ' || *s == '\t'))
            s++;
        bool is_rule = header && s < p + ln && *s != '#' && *s != '@';
        if (s < p + ln && *s != '#' && !header) header = true;
        if (is_rule && ri < nrules) {
            /* fields: id cat weight ... -> keep id and cat, replace the weight */
            const char *q = s;
            for (int f = 0; f < 2; f++) {
                while (q < p + ln && *q != ' ' && *q != '\t')
                    q++;
                while (q < p + ln && (*q == ' ' || *q == '\t'))
                    q++;
            }
            const char *we = q;
            while (we < p + ln && *we != ' ' && *we != '\t')
                we++;
            pk_buf_append(out, p, (size_t)(q - p));
            pk_buf_printf(out, "%.2f", weights[ri++]);
            pk_buf_append(out, we, (size_t)(p + ln - we));
        } else {
            pk_buf_append(out, p, ln);
        }
        if (nl) pk_buf_putc(out, '\n');
        p = nl ? nl + 1 : p + ln;
    }
}

typedef struct fit_counts {
    long *tp, *fp;
} fit_counts;

static void count_fires(pk_guard *g, const dataset *d, size_t mod, size_t rem, size_t nrules, fit_counts *c)
{
    c->tp = calloc(nrules, sizeof(long));
    c->fp = calloc(nrules, sizeof(long));
    size_t *idx = malloc(sizeof(size_t) * nrules);
    for (size_t i = 0; i < d->n; i++) {
        if (i % mod != rem) continue;
        size_t k = pk_guard_fired_rules(g, d->v[i].text, d->v[i].len, idx, nrules);
        for (size_t j = 0; j < k; j++)
            d->v[i].injection ? c->tp[idx[j]]++ : c->fp[idx[j]]++;
    }
    free(idx);
}

static void fit_weights(pk_guard *g, const fit_counts *c, size_t nrules, double prior, bool raise, double *w)
{
    for (size_t i = 0; i < nrules; i++) {
        char id[PK_GUARD_ID_MAX];
        pk_guard_category cat;
        double w0;
        pk_guard_rule_info(g, i, id, &cat, &w0);
        double v = ((double)c->tp[i] + prior * w0) / ((double)(c->tp[i] + c->fp[i]) + prior);
        if (!raise && v > w0) v = w0; /* the dev set's benign side is not representative: only demote */
        w[i] = v < 0.02 ? 0.02 : v > 0.99 ? 0.99 : v;
    }
}

static int cmd_fit(int argc, char **argv)
{
    if (has_flag(argc, argv, "--help")) {
        puts("usage: pake guard fit FILE.jsonl [--rules FILE] [--prior K] [--split all|even|odd] [--raise] "
             "[--verbose]\n"
             "Re-estimates each rule's weight as P(injection | rule fired), smoothed towards the current\n"
             "weight with K pseudo-observations (default 4): w = (tp + K*w0) / (tp + fp + K). By default a\n"
             "weight can only go down (w <= w0): benign dev data is too narrow to justify trusting a rule\n"
             "more than its author did; --raise lifts that limit.\n"
             "Prints the rule file with the new weights on stdout. On stderr: per-rule counts (--verbose)\n"
             "and a two-fold held-out check (fit on even lines -> evaluate on odd lines, and the reverse).");
        return 0;
    }
    const char *path = positional(argc, argv, valued_opts);
    if (!path) return fprintf(stderr, "pake guard fit: missing FILE.jsonl (see --help)\n"), 2;
    const char *prior_s = opt_value(argc, argv, "--prior");
    double prior = prior_s ? atof(prior_s) : 4.0;
    const char *split = opt_value(argc, argv, "--split");
    size_t mod = 1, rem = 0;
    if (split && strcmp(split, "even") == 0)
        mod = 2, rem = 0;
    else if (split && strcmp(split, "odd") == 0)
        mod = 2, rem = 1;
    const char *rules_path = opt_value(argc, argv, "--rules");
    char *text = NULL;
    size_t tlen;
    if (rules_path) {
        pk_err *e = pk_guard_read_file(rules_path, &text, &tlen);
        if (e) return fprintf(stderr, "pake guard fit: %s\n", e->message), pk_err_free(e), 1;
    } else {
        text = pk_strndup(pk_guard_default_rules, strlen(pk_guard_default_rules));
    }
    pk_guard *g = open_guard(argc, argv);
    dataset d;
    if (!g || load_dataset(path, &d) != 0) return free(text), pk_guard_free(g), 1;
    size_t nrules = pk_guard_rule_count(g);
    double *w = malloc(sizeof(double) * nrules);

    /* Two-fold held-out check: fit on one half, evaluate on the other. */
    for (size_t fold = 0; fold < 2; fold++) {
        fit_counts c;
        count_fires(g, &d, 2, fold, nrules, &c);
        fit_weights(g, &c, nrules, prior, has_flag(argc, argv, "--raise"), w);
        pk_buf rt = PK_BUF_INIT;
        rewrite_rules(text, w, nrules, &rt);
        pk_guard *h;
        pk_err *e = pk_guard_load_text(rt.data, rt.len, "<fitted>", &h);
        if (!e) {
            eval_out fitted = {0}, held = {0};
            evaluate(h, &d, 2, fold, &fitted);
            evaluate(h, &d, 2, 1 - fold, &held);
            fprintf(stderr, "fit on %s lines -> evaluated on the same lines:\n", fold ? "odd" : "even");
            print_eval(stderr, &d, &fitted, false);
            fprintf(stderr, "fit on %s lines -> held-out %s lines:\n", fold ? "odd" : "even",
                    fold ? "even" : "odd");
            print_eval(stderr, &d, &held, false);
            free(fitted.per_source), free(held.per_source), free(fitted.per_repo), free(held.per_repo);
            pk_guard_free(h);
        } else {
            fprintf(stderr, "pake guard fit: %s\n", e->message);
            pk_err_free(e);
        }
        pk_buf_free(&rt);
        free(c.tp), free(c.fp);
    }

    fit_counts c;
    count_fires(g, &d, mod, rem, nrules, &c);
    fit_weights(g, &c, nrules, prior, has_flag(argc, argv, "--raise"), w);
    if (has_flag(argc, argv, "--verbose")) {
        fprintf(stderr, "%-28s %6s %6s %6s %6s\n", "rule", "tp", "fp", "w0", "w");
        for (size_t i = 0; i < nrules; i++) {
            char id[PK_GUARD_ID_MAX];
            pk_guard_category cat;
            double w0;
            pk_guard_rule_info(g, i, id, &cat, &w0);
            fprintf(stderr, "%-28s %6ld %6ld %6.2f %6.2f\n", id, c.tp[i], c.fp[i], w0, w[i]);
        }
    }
    pk_buf out = PK_BUF_INIT;
    rewrite_rules(text, w, nrules, &out);
    fputs(out.data, stdout);
    pk_buf_free(&out);
    free(c.tp), free(c.fp), free(w), free(text);
    dataset_free(&d);
    pk_guard_free(g);
    return 0;
}

/* Collects every string value (recursively) of a JSON document. */
typedef struct strv {
    const char **s;
    size_t *len;
    size_t n, cap;
} strv;

static void collect_strings(const cJSON *v, strv *out)
{
    if (cJSON_IsString(v)) {
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 1024;
            out->s = realloc(out->s, sizeof *out->s * out->cap);
            out->len = realloc(out->len, sizeof *out->len * out->cap);
            if (!out->s || !out->len) abort();
        }
        out->s[out->n] = v->valuestring;
        out->len[out->n++] = strlen(v->valuestring);
        return;
    }
    for (const cJSON *c = v ? v->child : NULL; c; c = c->next)
        collect_strings(c, out);
}

static int cmd_bench(int argc, char **argv)
{
    if (has_flag(argc, argv, "--help")) {
        puts("usage: pake guard bench FILE.jsonl [--rules FILE] [--repeat N]\n"
             "Scans every string value of every JSON line as note content; prints MB/s (one thread) and\n"
             "how many strings were allowed / flagged. --no-prefilter / --check-prefilter as for eval.\n"
             "--dump: instead, one line per string (index, decision, score, zero_width, decoded, rule ids)\n"
             "for before/after equivalence checks of guard changes.");
        return 0;
    }
    const char *path = positional(argc, argv, (const char *const[]){"--rules", "--repeat", NULL});
    if (!path) return fprintf(stderr, "pake guard bench: missing FILE.jsonl\n"), 2;
    const char *rep = opt_value(argc, argv, "--repeat");
    int repeat = rep ? atoi(rep) : 1;
    pk_guard *g = open_guard(argc, argv);
    if (!g) return 1;
    FILE *f = fopen(path, "rb");
    if (!f) return fprintf(stderr, "pake guard bench: cannot open %s\n", path), pk_guard_free(g), 1;
    cJSON **docs = NULL;
    size_t ndocs = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t n;
    while ((n = getline(&line, &lcap, f)) > 0) {
        cJSON *j;
        pk_err *e = pk_json_parse(line, (size_t)n, PK_JSON_MAX_DEPTH_DEFAULT, &j);
        if (e) {
            pk_err_free(e);
            continue;
        }
        docs = realloc(docs, sizeof(cJSON *) * (ndocs + 1));
        docs[ndocs++] = j;
    }
    free(line);
    fclose(f);
    strv sv = {0};
    for (size_t i = 0; i < ndocs; i++)
        collect_strings(docs[i], &sv);
    if (has_flag(argc, argv, "--check-prefilter") && check_prefilter(g, sv.s, sv.len, sv.n, argc, argv) != 0)
        return 1;
    if (has_flag(argc, argv, "--dump")) {
        for (size_t i = 0; i < sv.n; i++) {
            pk_guard_result res;
            pk_guard_scan(g, sv.s[i], sv.len[i], PK_GUARD_NOTE_CONTENT, &res);
            printf("%zu %s %.17g %zu %d%d", i, pk_guard_decision_name(res.decision), res.score,
                   res.zero_width, res.decoded, res.decoded_hit);
            for (size_t k = 0; k < res.nrules; k++)
                printf(" %s", res.rule_ids[k]);
            putchar('\n');
        }
        repeat = 0;
    }
    /* Timed as one block: a per-string CPU clock read (a system call) would cost more than the scan. */
    size_t bytes = 0;
    long dec[3] = {0};
    int64_t t0 = cpu_ns();
    for (int r = 0; r < repeat; r++)
        for (size_t i = 0; i < sv.n; i++) {
            pk_guard_result res;
            pk_guard_scan(g, sv.s[i], sv.len[i], PK_GUARD_NOTE_CONTENT, &res);
            bytes += sv.len[i];
            dec[res.decision]++;
        }
    int64_t ns = cpu_ns() - t0;
    free(sv.s), free(sv.len);
    printf("{\"strings\":%ld,\"bytes\":%zu,\"mb_per_s\":%.1f,\"allow\":%ld,\"flag\":%ld,\"block\":%ld}\n",
           dec[0] + dec[1] + dec[2], bytes, ns > 0 ? (double)bytes / 1e6 / ((double)ns / 1e9) : 0.0, dec[0],
           dec[1], dec[2]);
    for (size_t i = 0; i < ndocs; i++)
        cJSON_Delete(docs[i]);
    free(docs);
    pk_guard_free(g);
    return 0;
}

static void usage(FILE *o)
{
    fputs("usage: pake guard COMMAND [--help]\n"
          "  eval FILE.jsonl [--json] [--rules FILE]   detection quality and throughput on labelled data\n"
          "  scan [--surface NAME] < TEXT               decision for one text, as JSON\n"
          "  fit FILE.jsonl [--rules FILE]             fit rule weights, print the rule file\n"
          "  bench FILE.jsonl [--repeat N]              throughput on a JSONL corpus\n"
          "  check-rules FILE                          validate a rule file\n"
          "Environment: PAKE_GUARD_RULES (rule file; default: built-in rules), PAKE_GUARD_FLAG,\n"
          "PAKE_GUARD_BLOCK (thresholds).\n",
          o);
}

int pk_guard_cli(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *c = argv[1];
    if (strcmp(c, "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    if (strcmp(c, "scan") == 0) return cmd_scan(argc - 1, argv + 1);
    if (strcmp(c, "fit") == 0) return cmd_fit(argc - 1, argv + 1);
    if (strcmp(c, "bench") == 0) return cmd_bench(argc - 1, argv + 1);
    if (strcmp(c, "check-rules") == 0) return cmd_check(argc - 1, argv + 1);
    fprintf(stderr, "pake guard: unknown command '%s'\n", c);
    usage(stderr);
    return 2;
}
