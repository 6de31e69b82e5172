/*
 * The guard: normalise, scan, score, decide. See guard.h for the model.
 *
 * Hot path: one pk_guard_scan = one pass of normalisation producing both views, one pass looking for
 * encoded segments, and per view a literal gate scan followed by either the one-rule databases of the
 * few rules the gate opened or the view's full database (plus the same for decoded segments, rare).
 * Inputs are mostly short (tags, titles, queries), so fixed per-call costs matter too. Per-thread
 * state (Vectorscan scratch and the normalisation buffers) lives in a pthread key so that scans allocate
 * nothing in steady state and the state is freed when a thread exits.
 *
 * Reload is RCU-like: the guard points at an immutable, reference-counted ruleset; a scan takes a
 * reference under a short mutex, a reload builds the new ruleset outside the lock and swaps the
 * pointer, and whoever drops the last reference frees the old one.
 */
#include "guard/guard.h"
#include "guard/normalize.h"
#include "guard/rules.h"
#include <math.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct pk_guard {
    pthread_mutex_t mu;
    pk_guard_ruleset *rs; /* guarded by mu; readers take a reference */
    char *path;           /* NULL: embedded rules */
    uint64_t generation;  /* guarded by mu */
    pk_guard_policy policy[PK_GUARD_SURFACE_COUNT];
    bool no_prefilter; /* tests and diagnostics: always run the full databases */
};

static const char *const category_names[PK_GC_COUNT] = {
    "instruction_override", "role_hijack",         "prompt_extraction", "fake_delimiter",
    "jailbreak_persona",    "refusal_suppression", "obfuscation",       "exfiltration",
    "output_manipulation",  "script_injection",    "html_injection"};

static const char *const surface_names[PK_GUARD_SURFACE_COUNT] = {
    "note_content",    "note_field",   "search_query", "tool_argument",
    "prompt_argument", "task_payload", "webhook"};

const char *pk_guard_category_name(pk_guard_category c)
{
    return (unsigned)c < PK_GC_COUNT ? category_names[c] : "unknown";
}

const char *pk_guard_surface_name(pk_guard_surface s)
{
    return (unsigned)s < PK_GUARD_SURFACE_COUNT ? surface_names[s] : "unknown";
}

const char *pk_guard_decision_name(pk_guard_decision d)
{
    return d == PK_GUARD_BLOCK ? "block" : d == PK_GUARD_FLAG ? "flag" : "allow";
}

int pk_guard_category_from_name(const char *name, size_t n)
{
    for (int c = 0; c < PK_GC_COUNT; c++)
        if (strlen(category_names[c]) == n && memcmp(category_names[c], name, n) == 0) return c;
    return -1;
}

/* ---- construction ----------------------------------------------------------------------------- */

static void default_policies(pk_guard *g, double flag, double block)
{
    for (int s = 0; s < PK_GUARD_SURFACE_COUNT; s++) {
        bool can_block = s != PK_GUARD_NOTE_CONTENT && s != PK_GUARD_NOTE_FIELD && s != PK_GUARD_WEBHOOK;
        g->policy[s] = (pk_guard_policy){flag, block, can_block};
    }
}

static pk_err *build_from_source(const char *path, const char *text, size_t len, pk_guard_ruleset **rs)
{
    if (text) return pk_guard_ruleset_build(text, len, path ? path : "<text>", rs);
    if (!path)
        return pk_guard_ruleset_build(pk_guard_default_rules, strlen(pk_guard_default_rules), "<embedded>",
                                      rs);
    char *buf;
    size_t n;
    pk_err *e = pk_guard_read_file(path, &buf, &n);
    if (e) return e;
    e = pk_guard_ruleset_build(buf, n, path, rs);
    free(buf);
    return e;
}

static pk_err *guard_create(const char *path, const char *text, size_t len, double flag, double block,
                            pk_guard **out)
{
    pk_guard_ruleset *rs;
    pk_err *e = build_from_source(path, text, len, &rs);
    if (e) return e;
    pk_guard *g = calloc(1, sizeof *g);
    if (!g) abort();
    pthread_mutex_init(&g->mu, NULL);
    g->rs = rs;
    g->path = path && !text ? pk_strndup(path, strlen(path)) : NULL;
    g->generation = 1;
    default_policies(g, flag > 0 ? flag : PK_GUARD_FLAG_DEFAULT, block > 0 ? block : PK_GUARD_BLOCK_DEFAULT);
    *out = g;
    return NULL;
}

void pk_guard_config_from_env(pk_guard_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    const char *p = getenv("PAKE_GUARD_RULES");
    if (p && *p) cfg->rules_path = p;
    if ((p = getenv("PAKE_GUARD_FLAG"))) cfg->flag_threshold = atof(p);
    if ((p = getenv("PAKE_GUARD_BLOCK"))) cfg->block_threshold = atof(p);
}

pk_err *pk_guard_new(const pk_guard_config *cfg, pk_guard **out)
{
    pk_guard_config none = {0};
    if (!cfg) cfg = &none;
    return guard_create(cfg->rules_path, NULL, 0, cfg->flag_threshold, cfg->block_threshold, out);
}

pk_err *pk_guard_load(const char *rules_path, pk_guard **out)
{
    return guard_create(rules_path, NULL, 0, 0, 0, out);
}

pk_err *pk_guard_load_text(const char *text, size_t len, const char *origin, pk_guard **out)
{
    pk_err *e = guard_create(origin, text, len, 0, 0, out);
    return e;
}

void pk_guard_free(pk_guard *g)
{
    if (!g) return;
    pk_guard_ruleset_release(g->rs);
    pthread_mutex_destroy(&g->mu);
    free(g->path);
    free(g);
}

static void swap_rules(pk_guard *g, pk_guard_ruleset *rs)
{
    pthread_mutex_lock(&g->mu);
    pk_guard_ruleset *old = g->rs;
    g->rs = rs;
    g->generation++;
    pthread_mutex_unlock(&g->mu);
    pk_guard_ruleset_release(old);
}

pk_err *pk_guard_reload(pk_guard *g)
{
    pk_guard_ruleset *rs;
    pk_err *e = build_from_source(g->path, NULL, 0, &rs);
    if (e) return e;
    swap_rules(g, rs);
    return NULL;
}

pk_err *pk_guard_reload_text(pk_guard *g, const char *text, size_t len, const char *origin)
{
    pk_guard_ruleset *rs;
    pk_err *e = pk_guard_ruleset_build(text, len, origin ? origin : "<text>", &rs);
    if (e) return e;
    swap_rules(g, rs);
    return NULL;
}

pk_err *pk_guard_check_file(const char *path, size_t *nrules)
{
    pk_guard_ruleset *rs;
    pk_err *e = build_from_source(path, NULL, 0, &rs);
    if (e) return e;
    if (nrules) *nrules = rs->nrules;
    pk_guard_ruleset_release(rs);
    return NULL;
}

static pk_guard_ruleset *acquire(pk_guard *g)
{
    pthread_mutex_lock(&g->mu);
    pk_guard_ruleset *rs = g->rs;
    atomic_fetch_add(&rs->refs, 1);
    pthread_mutex_unlock(&g->mu);
    return rs;
}

void pk_guard_set_prefilter(pk_guard *g, bool on)
{
    g->no_prefilter = !on;
}

void pk_guard_set_policy(pk_guard *g, pk_guard_surface s, pk_guard_policy p)
{
    if ((unsigned)s < PK_GUARD_SURFACE_COUNT) g->policy[s] = p;
}

pk_guard_policy pk_guard_get_policy(const pk_guard *g, pk_guard_surface s)
{
    return g->policy[(unsigned)s < PK_GUARD_SURFACE_COUNT ? s : PK_GUARD_SEARCH_QUERY];
}

size_t pk_guard_rule_count(pk_guard *g)
{
    pk_guard_ruleset *rs = acquire(g);
    size_t n = rs->nrules;
    pk_guard_ruleset_release(rs);
    return n;
}

uint64_t pk_guard_generation(pk_guard *g)
{
    pthread_mutex_lock(&g->mu);
    uint64_t v = g->generation;
    pthread_mutex_unlock(&g->mu);
    return v;
}

bool pk_guard_rule_info(pk_guard *g, size_t i, char id[PK_GUARD_ID_MAX], pk_guard_category *cat,
                        double *weight)
{
    pk_guard_ruleset *rs = acquire(g);
    bool ok = i < rs->nrules;
    if (ok) {
        memcpy(id, rs->rules[i].id, PK_GUARD_ID_MAX);
        *cat = rs->rules[i].cat;
        *weight = rs->rules[i].weight;
    }
    pk_guard_ruleset_release(rs);
    return ok;
}

/* ---- per-thread scan state -------------------------------------------------------------------- */

#define SCRATCH_SEEN 8

typedef struct tls_state {
    hs_scratch_t *scratch;
    uint64_t seen[SCRATCH_SEEN]; /* serials of rulesets the scratch was sized for */
    unsigned seen_next;
    pk_buf words, raw, dec, dec2;
    uint8_t req_seen[PK_GUARD_MAX_RULES]; /* prefilter: requirements of each rule found so far */
} tls_state;

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static void tls_destroy(void *p)
{
    tls_state *t = p;
    hs_free_scratch(t->scratch);
    pk_buf_free(&t->words), pk_buf_free(&t->raw), pk_buf_free(&t->dec), pk_buf_free(&t->dec2);
    free(t);
}

static void tls_init(void)
{
    pthread_key_create(&tls_key, tls_destroy);
}

static tls_state *tls_get(void)
{
    pthread_once(&tls_once, tls_init);
    tls_state *t = pthread_getspecific(tls_key);
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t) abort();
        pthread_setspecific(tls_key, t);
    }
    return t;
}

static bool grow_scratch(tls_state *t, const hs_database_t *db)
{
    return !db || hs_alloc_scratch(db, &t->scratch) == HS_SUCCESS;
}

static bool ensure_scratch(tls_state *t, const pk_guard_ruleset *rs)
{
    for (unsigned i = 0; i < SCRATCH_SEEN; i++)
        if (t->seen[i] == rs->serial) return true;
    bool ok = true;
    for (int v = 0; v < PK_VIEW_COUNT && ok; v++)
        ok = grow_scratch(t, rs->db[v]) && grow_scratch(t, rs->always[v]) &&
             grow_scratch(t, rs->gate[0][v]) && grow_scratch(t, rs->gate[1][v]);
    for (size_t i = 0; i < rs->nrules && ok; i++)
        ok = grow_scratch(t, rs->rules[i].db);
    if (!ok) return false;
    t->seen[t->seen_next++ % SCRATCH_SEEN] = rs->serial;
    return true;
}

/* Large one-off inputs should not pin their buffers to the thread forever. */
static void trim(pk_buf *b)
{
    if (b->cap > (1u << 20))
        pk_buf_free(b);
    else
        pk_buf_reset(b);
}

/* ---- matching and scoring --------------------------------------------------------------------- */

#define HIT_WORDS (PK_GUARD_MAX_RULES / 64)

/* Fired rules as a bit set. Word w of bits is valid only when bit w of `used` is set, so clearing
 * is one store (most inputs fire nothing, and a 128-byte memset per set showed up in profiles). */
typedef struct hits {
    uint32_t used;
    uint64_t bits[HIT_WORDS];
} hits;

static inline uint64_t hits_word(const hits *h, size_t w)
{
    return (h->used >> w) & 1 ? h->bits[w] : 0;
}

static int on_match(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags,
                    void *ctx)
{
    hits *h = ctx;
    unsigned w = id / 64;
    if (!((h->used >> w) & 1)) h->bits[w] = 0, h->used |= 1u << w;
    h->bits[w] |= 1ull << (id % 64);
    return 0;
}

static void scan_db(const hs_database_t *db, tls_state *t, const pk_buf *b, hits *h)
{
    if (!db || b->len == 0) return;
    hs_scan(db, b->data, (unsigned)(b->len > UINT32_MAX ? UINT32_MAX : b->len), 0, t->scratch, on_match, h);
}

/* At most this many rules of a view opened by the gate are scanned one by one (their own
 * databases); more, and the view's full database is cheaper. */
#define SINGLE_MAX 8

typedef struct gate_ctx {
    const pk_guard_ruleset *rs;
    int stage;
    uint8_t *seen;
    uint16_t open[PK_VIEW_COUNT][SINGLE_MAX]; /* rules whose required sets are all present */
    unsigned nopen[PK_VIEW_COUNT];            /* > SINGLE_MAX: scan the view's full database */
    bool candidate;                           /* stage 0: some rule has its first set and needs stage 1 */
} gate_ctx;

/* Literal `id` was found: mark the requirements it satisfies; a rule with all of them met is open.
 * The scan of a view stops once it needs its full database. */
static int on_gate(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags,
                   void *ctx)
{
    gate_ctx *c = ctx;
    const pk_guard_gate_lit *lit = &c->rs->gate_lit[c->stage][id];
    const uint32_t *pairs = c->rs->gate_pairs[c->stage];
    for (uint32_t k = lit->off; k < lit[1].off; k++) {
        uint32_t rule = pairs[k] >> 2;
        uint8_t all = (uint8_t)((1u << c->rs->rules[rule].nreq) - 1), was = c->seen[rule];
        c->seen[rule] = (uint8_t)(was | (1u << (pairs[k] & 3)));
        if (c->seen[rule] != all) {
            c->candidate = true;
            continue;
        }
        if (was == all) continue;
        unsigned *n = &c->nopen[lit->view];
        if (*n < SINGLE_MAX) c->open[lit->view][*n] = (uint16_t)rule;
        if (++*n > SINGLE_MAX) return 1;
    }
    return 0;
}

static void gate_scan(gate_ctx *c, tls_state *t, int view, const pk_buf *b)
{
    const hs_database_t *db = c->rs->gate[c->stage][view];
    if (db && b->len && c->nopen[view] <= SINGLE_MAX)
        hs_scan(db, b->data, (unsigned)(b->len > UINT32_MAX ? UINT32_MAX : b->len), 0, t->scratch, on_gate,
                c);
}

/* Finds the rules of each view that have a literal of each of their required sets in the view
 * (words: with its edge spaces). */
static void gate_run(gate_ctx *c, tls_state *t, const pk_buf *words, const pk_buf *raw)
{
    gate_scan(c, t, PK_VIEW_WORDS, words);
    gate_scan(c, t, PK_VIEW_RAW, raw);
    if (!c->candidate) return;
    c->stage = 1;
    gate_scan(c, t, PK_VIEW_WORDS, words);
    gate_scan(c, t, PK_VIEW_RAW, raw);
}

/* Scans one view: every rule when the prefilter is off or opened many rules, else the rules without
 * required literals plus each opened rule alone. No other rule can match, so the same rules fire. */
static void scan_view(const pk_guard_ruleset *rs, tls_state *t, const gate_ctx *c, int v, const pk_buf *b,
                      hits *h)
{
    if (!c || c->nopen[v] > SINGLE_MAX) return scan_db(rs->db[v], t, b, h);
    scan_db(rs->always[v], t, b, h);
    for (unsigned k = 0; k < c->nopen[v]; k++)
        scan_db(rs->rules[c->open[v][k]].db, t, b, h);
}

/* Normalises text into both views and scans them (see scan_view). */
static void scan_text(const pk_guard_ruleset *rs, tls_state *t, bool prefilter, const char *text, size_t len,
                      hits *h, pk_guard_norm_stats *st)
{
    /* The words view gets one space at each end for the prefilter (its literals spell a word
     * boundary at the edge of a view as a space); rules see the view without them. */
    pk_buf_reset(&t->words), pk_buf_reset(&t->raw);
    pk_buf_putc(&t->words, ' ');
    pk_guard_normalize(text, len, &t->words, &t->raw, st);
    pk_buf_putc(&t->words, ' ');
    pk_buf words = {.data = t->words.data + 1, .len = t->words.len - 2, .cap = 0};
    if (!prefilter) {
        scan_view(rs, t, NULL, PK_VIEW_WORDS, &words, h);
        scan_view(rs, t, NULL, PK_VIEW_RAW, &t->raw, h);
        return;
    }
    gate_ctx c = {.rs = rs, .seen = t->req_seen};
    memset(t->req_seen, 0, rs->nrules);
    gate_run(&c, t, &t->words, &t->raw);
    scan_view(rs, t, &c, PK_VIEW_WORDS, &words, h);
    scan_view(rs, t, &c, PK_VIEW_RAW, &t->raw, h);
}

typedef struct scan_out {
    hits main, dec;
    pk_guard_norm_stats st;
    bool decoded;
} scan_out;

static void scan_all(const pk_guard_ruleset *rs, tls_state *t, bool prefilter, const char *text, size_t len,
                     scan_out *o)
{
    o->main.used = o->dec.used = 0;
    o->st = (pk_guard_norm_stats){0};
    o->decoded = false;
    scan_text(rs, t, prefilter, text, len, &o->main, &o->st);
    /* Decoded segments, depth 1 then depth 2, sharing one size budget. */
    pk_buf_reset(&t->dec), pk_buf_reset(&t->dec2);
    if (pk_guard_decode_segments(text, len, &t->dec, PK_GUARD_MAX_DECODED) == 0) return;
    o->decoded = true;
    pk_guard_norm_stats ignored = {0};
    size_t used = t->dec.len;
    if (used < PK_GUARD_MAX_DECODED)
        pk_guard_decode_segments(t->dec.data, t->dec.len, &t->dec2, PK_GUARD_MAX_DECODED - used);
    scan_text(rs, t, prefilter, t->dec.data, t->dec.len, &o->dec, &ignored);
    if (t->dec2.len) scan_text(rs, t, prefilter, t->dec2.data, t->dec2.len, &o->dec, &ignored);
}

typedef struct score_acc {
    double notq[PK_GC_COUNT]; /* per category: product of (1 - w) */
    uint32_t cats;
} score_acc;

static void add(score_acc *a, pk_guard_category c, double w)
{
    a->notq[c] *= 1.0 - w;
    a->cats |= 1u << c;
}

static void add_id(pk_guard_result *r, const char *id)
{
    if (r->nrules >= PK_GUARD_MAX_HITS) return;
    snprintf(r->rule_ids[r->nrules++], PK_GUARD_ID_MAX, "%s", id);
}

/* Categories whose rules count towards the combination signal. */
#define COMBINE_CATS                                                                                         \
    ((1u << PK_GC_INSTRUCTION_OVERRIDE) | (1u << PK_GC_ROLE_HIJACK) | (1u << PK_GC_PROMPT_EXTRACTION) |      \
     (1u << PK_GC_FAKE_DELIMITER) | (1u << PK_GC_JAILBREAK_PERSONA) | (1u << PK_GC_REFUSAL_SUPPRESSION) |    \
     (1u << PK_GC_OBFUSCATION))

static void score(const pk_guard_ruleset *rs, const scan_out *o, pk_guard_result *r)
{
    score_acc a;
    for (int c = 0; c < PK_GC_COUNT; c++)
        a.notq[c] = 1.0;
    a.cats = 0;
    bool new_in_decoded = false;
    size_t ncombine = 0;
    for (uint32_t used = o->main.used | o->dec.used; used; used &= used - 1) {
        size_t w = (size_t)__builtin_ctz(used);
        uint64_t all = hits_word(&o->main, w) | hits_word(&o->dec, w);
        if (hits_word(&o->dec, w) & ~hits_word(&o->main, w)) new_in_decoded = true;
        while (all) {
            size_t i = w * 64 + (size_t)__builtin_ctzll(all);
            all &= all - 1;
            add(&a, rs->rules[i].cat, rs->rules[i].weight);
            add_id(r, rs->rules[i].id);
            if ((1u << rs->rules[i].cat) & COMBINE_CATS) ncombine++;
        }
    }
    if (o->st.zero_width) add(&a, PK_GC_OBFUSCATION, rs->sig_zero_width), add_id(r, "signal.zero_width");
    if (o->st.mixed_script)
        add(&a, PK_GC_OBFUSCATION, rs->sig_mixed_script), add_id(r, "signal.mixed_script");
    if (new_in_decoded) add(&a, PK_GC_OBFUSCATION, rs->sig_decoded), add_id(r, "signal.decoded");
    r->zero_width = o->st.zero_width;
    r->decoded = o->decoded;
    r->decoded_hit = new_in_decoded;
    if (!a.cats) return; /* nothing fired: score 0 (what the combination below gives, without the work) */
    double notscore = 1.0;
    for (int c = 0; c < PK_GC_COUNT; c++) {
        double p = 1.0 - a.notq[c];
        if (p > rs->cap[c]) p = rs->cap[c];
        notscore *= 1.0 - p;
    }
    /* Combination signal: several independent pieces of attack language in one text are stronger
     * evidence than their noisy-OR suggests (a role-play setup *and* a "stay in character" rule *and*
     * a refusal ban). Counted over the attack-language categories only: output-manipulation,
     * exfiltration and content-injection rules co-occur in ordinary instructions and documents. It
     * belongs to no category. */
    if (rs->sig_combination > 0 && ncombine >= PK_GUARD_COMBINE_MIN) {
        notscore *= 1.0 - rs->sig_combination;
        add_id(r, "signal.combination");
    }
    r->score = 1.0 - notscore;
    if (r->score < 1e-12) r->score = 0;
    r->categories = a.cats;
}

static pk_guard_decision decide(const pk_guard_policy *p, double s)
{
    if (s >= p->block_threshold && p->can_block) return PK_GUARD_BLOCK;
    if (s >= p->flag_threshold || s >= p->block_threshold) return PK_GUARD_FLAG;
    return PK_GUARD_ALLOW;
}

/* Clears a result except the rule id strings (only the first nrules are meaningful): zeroing the
 * whole 800-byte struct showed up in profiles of short inputs. */
static void result_clear(pk_guard_result *r)
{
    r->decision = PK_GUARD_ALLOW;
    r->score = 0;
    r->categories = 0;
    r->nrules = 0;
    r->zero_width = 0;
    r->decoded = r->decoded_hit = false;
}

void pk_guard_scan(pk_guard *g, const char *text, size_t len, pk_guard_surface surface, pk_guard_result *out)
{
    result_clear(out);
    if (!text) len = 0, text = "";
    pk_guard_ruleset *rs = acquire(g);
    tls_state *t = tls_get();
    if (!ensure_scratch(t, rs)) {
        /* Out of memory for scratch: fail closed on surfaces that can block. */
        pk_guard_ruleset_release(rs);
        out->score = 1.0;
        out->decision = decide(&g->policy[(unsigned)surface < PK_GUARD_SURFACE_COUNT ? surface : 0], 1.0);
        return;
    }
    scan_out o;
    scan_all(rs, t, !g->no_prefilter, text, len, &o);
    score(rs, &o, out);
    pk_guard_ruleset_release(rs);
    trim(&t->words), trim(&t->raw), trim(&t->dec), trim(&t->dec2);
    pk_guard_policy pol = pk_guard_get_policy(g, surface);
    out->decision = decide(&pol, out->score);
}

size_t pk_guard_fired_rules(pk_guard *g, const char *text, size_t len, size_t *idx, size_t cap)
{
    pk_guard_ruleset *rs = acquire(g);
    tls_state *t = tls_get();
    size_t n = 0;
    if (ensure_scratch(t, rs)) {
        scan_out o;
        scan_all(rs, t, !g->no_prefilter, text, len, &o);
        for (size_t w = 0; w < HIT_WORDS; w++) {
            uint64_t all = hits_word(&o.main, w) | hits_word(&o.dec, w);
            while (all && n < cap) {
                idx[n++] = w * 64 + (size_t)__builtin_ctzll(all);
                all &= all - 1;
            }
        }
    }
    pk_guard_ruleset_release(rs);
    return n;
}

void pk_guard_result_json(const pk_guard_result *r, pk_jw *w)
{
    pk_jw_obj_open(w);
    pk_jw_key(w, "decision");
    pk_jw_str(w, pk_guard_decision_name(r->decision));
    pk_jw_key(w, "score");
    pk_jw_num(w, round(r->score * 1000.0) / 1000.0);
    pk_jw_key(w, "categories");
    pk_jw_arr_open(w);
    for (int c = 0; c < PK_GC_COUNT; c++)
        if (r->categories & (1u << c)) pk_jw_str(w, category_names[c]);
    pk_jw_arr_close(w);
    pk_jw_key(w, "rules");
    pk_jw_arr_open(w);
    for (size_t i = 0; i < r->nrules; i++)
        pk_jw_str(w, r->rule_ids[i]);
    pk_jw_arr_close(w);
    if (r->zero_width) {
        pk_jw_key(w, "zero_width");
        pk_jw_int(w, (int64_t)r->zero_width);
    }
    if (r->decoded) {
        pk_jw_key(w, "decoded");
        pk_jw_bool(w, true);
    }
    pk_jw_obj_close(w);
}
