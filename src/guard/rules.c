/*
 * Rule files: parsing, validation and compilation into Vectorscan databases.
 *
 * Format (docs/guard.md has the full description):
 *   pake-guard-rules v1                      first non-empty line, the format version
 *   # comment
 *   @cap CATEGORY VALUE                      cap on a category's combined probability
 *   @signal zero_width|mixed_script|decoded|combination VALUE   weights of the non-pattern signals
 *   ID CATEGORY WEIGHT VIEW PATTERN          one rule; VIEW is w (words view) or r (raw view);
 *                                            PATTERN is the rest of the line (a Vectorscan regex)
 * Anything wrong is an error naming the line: a guard never starts with fewer rules than its file
 * says. Patterns are compiled caseless and single-match (we only need "did it fire"): one database
 * per view with all its rules, one per rule with only that rule (scanned when the literal gate opens
 * for a few rules only), and the gate databases (guard/prefilter.h).
 */
#include "guard/rules.h"
#include "core/id.h"
#include <openssl/evp.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_ullong serial_counter = 1;

enum { DB_FULL = 0, DB_GATE = 1, DB_ALWAYS = 2, DB_SINGLE = 3 };

static pk_err *rules_err(const char *origin, int line, const char *fmt, const char *arg)
{
    char msg[512];
    snprintf(msg, sizeof msg, fmt, arg);
    if (line > 0) return pk_err_new("guard_rules_invalid", 500, "%s:%d: %s", origin, line, msg);
    return pk_err_new("guard_rules_invalid", 500, "%s: %s", origin, msg);
}

pk_err *pk_guard_read_file(const char *path, char **text, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return pk_err_new("guard_rules_invalid", 500, "%s: cannot open: %s", path, strerror(errno));
    pk_buf b = PK_BUF_INIT;
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        pk_buf_append(&b, chunk, n);
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        pk_buf_free(&b);
        return pk_err_new("guard_rules_invalid", 500, "%s: read error", path);
    }
    pk_buf_reserve(&b, 0);
    *text = pk_buf_steal(&b, len);
    return NULL;
}

void pk_guard_ruleset_release(pk_guard_ruleset *rs)
{
    if (!rs || atomic_fetch_sub(&rs->refs, 1) != 1) return;
    for (size_t i = 0; i < rs->nrules; i++) {
        free(rs->rules[i].pattern);
        hs_free_database(rs->rules[i].db);
        for (size_t k = 0; k < PK_GUARD_MAX_AND; k++)
            pk_guard_litset_free(&rs->rules[i].req[k]);
    }
    free(rs->rules);
    for (int v = 0; v < PK_VIEW_COUNT; v++) {
        hs_free_database(rs->db[v]);
        hs_free_database(rs->always[v]);
    }
    for (int st = 0; st < 2; st++) {
        for (int v = 0; v < PK_VIEW_COUNT; v++)
            hs_free_database(rs->gate[st][v]);
        free(rs->gate_lit[st]), free(rs->gate_pairs[st]);
    }
    free(rs);
}

/* Splits the next whitespace-separated field off *p (within [*p, end)). */
static bool next_field(const char **p, const char *end, const char **f, size_t *n)
{
    const char *s = *p;
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    const char *e = s;
    while (e < end && *e != ' ' && *e != '\t')
        e++;
    *f = s, *n = (size_t)(e - s), *p = e;
    return e > s;
}

static bool parse_weight(const char *f, size_t n, double *out)
{
    char tmp[32];
    if (n == 0 || n >= sizeof tmp) return false;
    memcpy(tmp, f, n), tmp[n] = '\0';
    char *end;
    double v = strtod(tmp, &end);
    if (*end || !(v > 0.0 && v <= 1.0)) return false;
    *out = v;
    return true;
}

static bool valid_id(const char *f, size_t n)
{
    if (n == 0 || n >= PK_GUARD_ID_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = f[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static pk_err *parse_directive(pk_guard_ruleset *rs, const char *p, const char *end, const char *origin,
                               int line)
{
    const char *f, *a, *v;
    size_t fn, an, vn;
    next_field(&p, end, &f, &fn);
    if (!next_field(&p, end, &a, &an) || !next_field(&p, end, &v, &vn))
        return rules_err(origin, line, "directive needs two arguments", "");
    const char *rest;
    size_t rn;
    if (next_field(&p, end, &rest, &rn)) return rules_err(origin, line, "trailing text after directive", "");
    double w;
    if (!parse_weight(v, vn, &w)) return rules_err(origin, line, "value must be a number in (0, 1]", "");
    if (fn == 4 && memcmp(f, "@cap", 4) == 0) {
        int c = pk_guard_category_from_name(a, an);
        if (c < 0) return rules_err(origin, line, "unknown category in @cap", "");
        rs->cap[c] = w;
        return NULL;
    }
    if (fn == 7 && memcmp(f, "@signal", 7) == 0) {
        if (an == 10 && memcmp(a, "zero_width", 10) == 0)
            rs->sig_zero_width = w;
        else if (an == 12 && memcmp(a, "mixed_script", 12) == 0)
            rs->sig_mixed_script = w;
        else if (an == 7 && memcmp(a, "decoded", 7) == 0)
            rs->sig_decoded = w;
        else if (an == 11 && memcmp(a, "combination", 11) == 0)
            rs->sig_combination = w;
        else
            return rules_err(origin, line, "unknown signal (zero_width, mixed_script, decoded, combination)",
                             "");
        return NULL;
    }
    return rules_err(origin, line, "unknown directive (expected @cap or @signal)", "");
}

static pk_err *parse_rule(pk_guard_ruleset *rs, const char *p, const char *end, const char *origin, int line)
{
    const char *id, *cat, *wt, *view;
    size_t idn, catn, wtn, viewn;
    next_field(&p, end, &id, &idn);
    if (!next_field(&p, end, &cat, &catn) || !next_field(&p, end, &wt, &wtn) ||
        !next_field(&p, end, &view, &viewn))
        return rules_err(origin, line, "expected: ID CATEGORY WEIGHT VIEW PATTERN", "");
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    const char *pat = p, *pe = end;
    while (pe > pat && (pe[-1] == ' ' || pe[-1] == '\t' || pe[-1] == '\r'))
        pe--;
    if (pe == pat) return rules_err(origin, line, "missing pattern", "");
    if (!valid_id(id, idn)) return rules_err(origin, line, "bad rule id (use [a-z0-9._-], < 48 chars)", "");
    int c = pk_guard_category_from_name(cat, catn);
    if (c < 0) {
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(catn < 60 ? catn : 60), cat);
        return rules_err(origin, line, "unknown category '%s'", name);
    }
    double w;
    if (!parse_weight(wt, wtn, &w)) return rules_err(origin, line, "weight must be a number in (0, 1]", "");
    int v;
    if (viewn == 1 && view[0] == 'w')
        v = PK_VIEW_WORDS;
    else if (viewn == 1 && view[0] == 'r')
        v = PK_VIEW_RAW;
    else
        return rules_err(origin, line, "view must be 'w' (words) or 'r' (raw)", "");
    for (size_t i = 0; i < rs->nrules; i++) {
        if (strlen(rs->rules[i].id) == idn && memcmp(rs->rules[i].id, id, idn) == 0) {
            char msg[128];
            snprintf(msg, sizeof msg, "duplicate rule id (first on line %d)", rs->rules[i].line);
            return rules_err(origin, line, "%s", msg);
        }
    }
    if (rs->nrules >= PK_GUARD_MAX_RULES) return rules_err(origin, line, "too many rules", "");
    pk_guard_rule *r = &rs->rules[rs->nrules++];
    memcpy(r->id, id, idn), r->id[idn] = '\0';
    r->cat = (pk_guard_category)c;
    r->weight = w;
    r->view = v;
    r->pattern = pk_strndup(pat, (size_t)(pe - pat));
    r->line = line;
    r->nreq = pk_guard_required_literals(r->pattern, v == PK_VIEW_WORDS, r->req);
    return NULL;
}

/*
 * Compiled-database cache. Compiling the rule set takes seconds of CPU (Vectorscan builds automata for
 * ~100 caseless patterns), which every start, reload and test would pay. The serialised database is
 * kept in a cache directory keyed by SHA-256 over the Vectorscan version, the view and every pattern
 * with its flags and id, so a changed rule file or library can never load a stale database. The
 * directory must belong to this user and not be writable by others (a database is code-like input);
 * otherwise, or on any error, the cache is skipped and the rules are compiled. Location:
 * PAKE_GUARD_CACHE_DIR, else $XDG_CACHE_HOME/pake, else $HOME/.cache/pake, else /tmp/pake-cache-<uid>;
 * PAKE_GUARD_CACHE_DIR=off disables it.
 */
static bool cache_dir(char *out, size_t n)
{
    const char *env = getenv("PAKE_GUARD_CACHE_DIR");
    if (env && !strcmp(env, "off")) return false;
    if (env && *env)
        snprintf(out, n, "%s", env);
    else if (getenv("XDG_CACHE_HOME") && *getenv("XDG_CACHE_HOME"))
        snprintf(out, n, "%s/pake", getenv("XDG_CACHE_HOME"));
    else if (getenv("HOME") && *getenv("HOME"))
        snprintf(out, n, "%s/.cache/pake", getenv("HOME"));
    else
        snprintf(out, n, "/tmp/pake-cache-%u", (unsigned)geteuid());
    /* create parents best-effort, then insist on ownership and permissions of the final directory */
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", out);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0700);
            *p = '/';
        }
    mkdir(tmp, 0700);
    struct stat st;
    if (stat(out, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022))
        return false;
    return true;
}

static void cache_key(int kind, const char **exprs, const size_t *lens, const unsigned *flags,
                      const unsigned *ids, unsigned n, int view, char hex[65])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    const char *ver = hs_version();
    EVP_DigestUpdate(c, ver, strlen(ver) + 1);
    EVP_DigestUpdate(c, &view, sizeof view);
    if (kind != DB_FULL) EVP_DigestUpdate(c, &kind, sizeof kind); /* DB_FULL keys predate kinds */
    for (unsigned i = 0; i < n; i++) {
        size_t len = lens ? lens[i] : strlen(exprs[i]) + 1;
        if (lens) EVP_DigestUpdate(c, &len, sizeof len);
        EVP_DigestUpdate(c, exprs[i], len);
        EVP_DigestUpdate(c, &flags[i], sizeof flags[i]);
        EVP_DigestUpdate(c, &ids[i], sizeof ids[i]);
    }
    unsigned char md[32];
    unsigned mdlen = 0;
    EVP_DigestFinal_ex(c, md, &mdlen);
    EVP_MD_CTX_free(c);
    pk_hex(md, 32, hex);
}

static hs_database_t *cache_load(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    hs_database_t *db = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long len = ftell(f);
        if (len > 0 && len < (64L << 20) && fseek(f, 0, SEEK_SET) == 0) {
            char *buf = malloc((size_t)len);
            if (buf && fread(buf, 1, (size_t)len, f) == (size_t)len &&
                hs_deserialize_database(buf, (size_t)len, &db) != HS_SUCCESS)
                db = NULL;
            free(buf);
        }
    }
    fclose(f);
    return db;
}

/* Keeps the cache bounded: databases not used (loaded or written) for 30 days are removed whenever a
 * new one is written, which only happens when the rules or the library change. */
static void cache_prune(const char *path)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) return;
    *slash = '\0';
    DIR *d = opendir(dir);
    if (!d) return;
    time_t cutoff = time(NULL) - 30 * 24 * 3600;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, "guard-", 6) || n < 11 || strcmp(e->d_name + n - 5, ".hsdb")) continue;
        char f[900];
        struct stat st;
        snprintf(f, sizeof f, "%s/%s", dir, e->d_name);
        if (stat(f, &st) == 0 && st.st_atime < cutoff && st.st_mtime < cutoff) unlink(f);
    }
    closedir(d);
}

static void cache_store(const char *path, const hs_database_t *db)
{
    cache_prune(path);
    char *bytes = NULL;
    size_t len = 0;
    if (hs_serialize_database(db, &bytes, &len) != HS_SUCCESS) return;
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (f) {
        bool ok = fwrite(bytes, 1, len, f) == len;
        ok = fclose(f) == 0 && ok;
        if (!ok || rename(tmp, path) != 0) unlink(tmp);
    }
    free(bytes);
}

/* Compiles (or loads from the cache) one database. lens != NULL: exprs are literals (DB_GATE). `line`
 * maps an expression index to its rule line for error messages. */
static pk_err *compile_db(int kind, const char **exprs, const size_t *lens, const unsigned *flags,
                          const unsigned *ids, const int *line, unsigned n, int view, const char *origin,
                          hs_database_t **out)
{
    *out = NULL;
    if (n == 0) return NULL;
    char dir[512], path[600] = "";
    if (cache_dir(dir, sizeof dir)) {
        char key[65];
        cache_key(kind, exprs, lens, flags, ids, n, view, key);
        snprintf(path, sizeof path, "%s/guard-%s.hsdb", dir, key);
        *out = cache_load(path);
        if (*out) return NULL;
    }
    hs_compile_error_t *ce = NULL;
    hs_error_t rc = lens ? hs_compile_lit_multi(exprs, flags, ids, lens, n, HS_MODE_BLOCK, NULL, out, &ce)
                         : hs_compile_multi(exprs, flags, ids, n, HS_MODE_BLOCK, NULL, out, &ce);
    if (rc == HS_SUCCESS) {
        if (path[0]) cache_store(path, *out);
        return NULL;
    }
    int l = ce && ce->expression >= 0 && (unsigned)ce->expression < n ? line[ce->expression] : 0;
    pk_err *e = rules_err(origin, l, "invalid pattern: %s", ce ? ce->message : "compile failed");
    hs_free_compile_error(ce);
    *out = NULL;
    return e;
}

/* Requirement sets of stage `st` of rule r: [0, 1) for stage 0 (when it has any), [1, nreq) for 1. */
static size_t stage_begin(int st)
{
    return st ? 1 : 0;
}

static size_t stage_end(const pk_guard_rule *r, int st)
{
    return st ? r->nreq : r->nreq > 0;
}

typedef struct view_lit {
    const char *s; /* borrowed */
    size_t n;
    int view;
} view_lit;

static bool lit_contains(const pk_guard_lit *big, const pk_guard_lit *small)
{
    for (size_t i = 0; small->n <= big->n && i + small->n <= big->n; i++)
        if (memcmp(big->s + i, small->s, small->n) == 0) return true;
    return false;
}

/* Literal j of set S need not be searched for: another literal of S occurs inside it (or is equal and
 * comes first), so whenever literal j occurs the set is satisfied anyway. About one gate literal in
 * ten; fewer literals make the literal matcher faster. */
static bool lit_redundant(const pk_guard_litset *S, size_t j)
{
    for (size_t m = 0; m < S->n; m++)
        if (m != j && (S->v[m].n < S->v[j].n || (S->v[m].n == S->v[j].n && m < j)) &&
            lit_contains(&S->v[j], &S->v[m]))
            return true;
    return false;
}

/* Builds gate stage `st` (both views): stage 0 holds every rule's first required set, stage 1 the
 * others; literals deduplicated per view, each with the (rule, requirement) pairs it satisfies. */
static pk_err *compile_gate(pk_guard_ruleset *rs, int st, const char *origin)
{
    view_lit *all = NULL;
    size_t nall = 0, cap = 0, npairs = 0;
    for (size_t i = 0; i < rs->nrules; i++)
        for (size_t k = stage_begin(st); k < stage_end(&rs->rules[i], st); k++)
            for (size_t j = 0; j < rs->rules[i].req[k].n; j++) {
                const pk_guard_lit *l = &rs->rules[i].req[k].v[j];
                npairs++;
                if (lit_redundant(&rs->rules[i].req[k], j)) continue;
                bool dup = false;
                for (size_t m = 0; m < nall && !dup; m++)
                    dup = all[m].view == rs->rules[i].view && all[m].n == l->n &&
                          memcmp(all[m].s, l->s, l->n) == 0;
                if (dup) continue;
                if (nall == cap) {
                    cap = cap ? cap * 2 : 64;
                    all = realloc(all, sizeof *all * cap);
                    if (!all) abort();
                }
                all[nall++] = (view_lit){l->s, l->n, rs->rules[i].view};
            }
    pk_guard_gate_lit *lits = calloc(nall + 1, sizeof *lits);
    uint32_t *pairs = malloc(sizeof *pairs * (npairs + 1));
    if (!lits || !pairs) abort();
    size_t np = 0;
    for (size_t m = 0; m < nall; m++) {
        lits[m] = (pk_guard_gate_lit){(uint32_t)np, (uint32_t)all[m].n, all[m].view};
        for (size_t i = 0; i < rs->nrules; i++)
            for (size_t k = stage_begin(st);
                 rs->rules[i].view == all[m].view && k < stage_end(&rs->rules[i], st); k++)
                for (size_t j = 0; j < rs->rules[i].req[k].n; j++) {
                    const pk_guard_lit *l = &rs->rules[i].req[k].v[j];
                    if (l->n == all[m].n && memcmp(l->s, all[m].s, l->n) == 0) {
                        pairs[np++] = (uint32_t)(i << 2 | k);
                        break;
                    }
                }
    }
    lits[nall].off = (uint32_t)np;
    rs->gate_lit[st] = lits, rs->gate_pairs[st] = pairs;
    const char **lx = malloc(sizeof(char *) * (nall + 1));
    size_t *ll = malloc(sizeof(size_t) * (nall + 1));
    unsigned *lf = malloc(sizeof(unsigned) * (nall + 1)), *li = malloc(sizeof(unsigned) * (nall + 1));
    int *lline = calloc(nall + 1, sizeof(int));
    pk_err *e = NULL;
    for (int v = 0; v < PK_VIEW_COUNT && !e; v++) {
        unsigned n = 0;
        for (size_t k = 0; k < nall; k++)
            if (all[k].view == v)
                lx[n] = all[k].s, ll[n] = all[k].n, lf[n] = HS_FLAG_CASELESS | HS_FLAG_SINGLEMATCH,
                li[n++] = (unsigned)k;
        e = compile_db(DB_GATE + st * 16, lx, ll, lf, li, lline, n, v, origin, &rs->gate[st][v]);
    }
    free(lx), free(ll), free(lf), free(li), free(lline), free(all);
    return e;
}

/* Compiles a view's databases: the full one, the literal prefilter (gate) over the required literals
 * of every rule that has them, and the rules without required literals ("always"). */
static pk_err *compile_view(pk_guard_ruleset *rs, int view, const char *origin)
{
    size_t cap = rs->nrules + 1;
    const char **exprs = malloc(sizeof(char *) * cap);
    unsigned *flags = malloc(sizeof(unsigned) * cap), *ids = malloc(sizeof(unsigned) * cap);
    int *line = malloc(sizeof(int) * cap);
    unsigned n = 0;
    for (size_t i = 0; i < rs->nrules; i++) {
        if (rs->rules[i].view != view) continue;
        exprs[n] = rs->rules[i].pattern;
        flags[n] = HS_FLAG_CASELESS | HS_FLAG_SINGLEMATCH;
        ids[n] = (unsigned)i;
        line[n] = rs->rules[i].line;
        n++;
    }
    pk_err *e = compile_db(DB_FULL, exprs, NULL, flags, ids, line, n, view, origin, &rs->db[view]);
    /* Each gated rule alone. */
    for (unsigned k = 0; k < n && !e; k++) {
        pk_guard_rule *r = &rs->rules[ids[k]];
        if (r->nreq)
            e = compile_db(DB_SINGLE, &exprs[k], NULL, &flags[k], &ids[k], &line[k], 1, view, origin, &r->db);
    }
    /* Rules without required literals. */
    unsigned na = 0;
    for (unsigned k = 0; k < n; k++) {
        if (rs->rules[ids[k]].nreq) continue;
        exprs[na] = exprs[k], flags[na] = flags[k], ids[na] = ids[k], line[na] = line[k];
        na++;
    }
    if (!e) e = compile_db(DB_ALWAYS, exprs, NULL, flags, ids, line, na, view, origin, &rs->always[view]);
    free(exprs), free(flags), free(ids), free(line);
    return e;
}

pk_err *pk_guard_ruleset_build(const char *text, size_t len, const char *origin, pk_guard_ruleset **out)
{
    pk_guard_ruleset *rs = calloc(1, sizeof *rs);
    if (!rs) abort();
    atomic_init(&rs->refs, 1);
    rs->serial = atomic_fetch_add(&serial_counter, 1);
    rs->rules = calloc(PK_GUARD_MAX_RULES, sizeof *rs->rules);
    if (!rs->rules) abort();
    for (int c = 0; c < PK_GC_COUNT; c++)
        rs->cap[c] = 1.0;
    rs->sig_zero_width = 0.10, rs->sig_mixed_script = 0.25, rs->sig_decoded = 0.30;

    pk_err *e = NULL;
    bool header = false;
    int line = 0;
    const char *p = text, *end = text + len;
    while (p < end && !e) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        line++;
        const char *s = p;
        while (s < le && (*s == ' ' || *s == '\t' || *s == '\r'))
            s++;
        const char *te = le;
        while (te > s && (te[-1] == ' ' || te[-1] == '\t' || te[-1] == '\r'))
            te--;
        if (memchr(s, '\0', (size_t)(te - s))) {
            e = rules_err(origin, line, "NUL byte in rule file", "");
        } else if (s == te || *s == '#') {
            /* blank or comment */
        } else if (!header) {
            size_t ml = strlen(PK_GUARD_RULES_MAGIC);
            if ((size_t)(te - s) != ml || memcmp(s, PK_GUARD_RULES_MAGIC, ml) != 0)
                e = rules_err(origin, line, "first line must be '%s'", PK_GUARD_RULES_MAGIC);
            header = true;
        } else if (*s == '@') {
            e = parse_directive(rs, s, te, origin, line);
        } else {
            e = parse_rule(rs, s, te, origin, line);
        }
        p = nl ? nl + 1 : end;
    }
    if (!e && !header) e = rules_err(origin, 0, "empty rule file (no '%s' header)", PK_GUARD_RULES_MAGIC);
    if (!e && rs->nrules == 0) e = rules_err(origin, 0, "rule file has no rules", "");
    for (int v = 0; v < PK_VIEW_COUNT && !e; v++)
        e = compile_view(rs, v, origin);
    for (int st = 0; st < 2 && !e; st++)
        e = compile_gate(rs, st, origin);
    if (e) {
        pk_guard_ruleset_release(rs);
        return e;
    }
    *out = rs;
    return NULL;
}
