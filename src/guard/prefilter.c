/*
 * Required-literal analysis for the guard's prefilter (see prefilter.h for the contract).
 *
 * A small recursive-descent parser over the regex subset rule files use (groups, (?:), alternation,
 * classes, escapes, ., ^, $, \b, quantifiers ? * + {m} {m,} {m,n}) computes for every node an `info`:
 *   exact: the node's complete language, a small set of strings (e.g. "(a|b)c" -> {ac, bc});
 *   else:  a requirement, a set of literals one of which occurs in every match, or `any` (none known).
 * Everything is built at rule-compile time, so simplicity beats speed here. Soundness is what matters:
 * whenever the parser meets something it does not model (inline flags, back-references, lookaround)
 * the whole pattern gets no set and its rule is scanned unconditionally.
 */
#include "guard/prefilter.h"
#include "core/buf.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EXACT_MAX 96      /* strings in an exact language before it degrades to a requirement */
#define UNION_MAX 256     /* literals in a requirement built by alternation */
#define LIT_MAX 64        /* longest literal kept */
#define EXTRA_MIN_SCORE 5 /* weakest literal score for a second or third requirement */
#define CLASS_MAX 4       /* classes of at most this many (case-folded) bytes stay exact */

/* ---- literal sets ----------------------------------------------------------------------------- */

void pk_guard_litset_free(pk_guard_litset *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i].s);
    free(s->v);
    s->v = NULL, s->n = s->cap = 0;
}

static bool set_has(const pk_guard_litset *s, const char *b, size_t n)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].n == n && memcmp(s->v[i].s, b, n) == 0) return true;
    return false;
}

static void set_add(pk_guard_litset *s, const char *b, size_t n)
{
    if (set_has(s, b, n)) return;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->v = realloc(s->v, sizeof *s->v * s->cap);
        if (!s->v) abort();
    }
    char *c = malloc(n + 1);
    if (!c) abort();
    memcpy(c, b, n), c[n] = '\0';
    s->v[s->n++] = (pk_guard_lit){c, n};
}

static void set_union(pk_guard_litset *dst, const pk_guard_litset *src)
{
    for (size_t i = 0; i < src->n; i++)
        set_add(dst, src->v[i].s, src->v[i].n);
}

static bool set_has_empty(const pk_guard_litset *s)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].n == 0) return true;
    return false;
}

static size_t set_minlen(const pk_guard_litset *s)
{
    size_t m = SIZE_MAX;
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].n < m) m = s->v[i].n;
    return m;
}

static void set_move(pk_guard_litset *dst, pk_guard_litset *src)
{
    pk_guard_litset_free(dst);
    *dst = *src;
    memset(src, 0, sizeof *src);
}

/* {a x b | a in A, b in B}; false when it would exceed EXACT_MAX strings or LIT_MAX bytes. */
static bool set_product(const pk_guard_litset *a, const pk_guard_litset *b, pk_guard_litset *out)
{
    if (a->n * b->n > EXACT_MAX) return false;
    char tmp[2 * LIT_MAX];
    for (size_t i = 0; i < a->n; i++)
        for (size_t j = 0; j < b->n; j++) {
            size_t n = a->v[i].n + b->v[j].n;
            if (n > LIT_MAX) return pk_guard_litset_free(out), false;
            memcpy(tmp, a->v[i].s, a->v[i].n), memcpy(tmp + a->v[i].n, b->v[j].s, b->v[j].n);
            set_add(out, tmp, n);
        }
    return true;
}

/* ---- node information ------------------------------------------------------------------------- */

typedef struct info {
    bool exact;    /* set is the complete language */
    bool boundary; /* a \b assertion (exact {""}) */
    bool any;      /* !exact and no requirement known */
    pk_guard_litset set;
    pk_guard_litset extra[PK_GUARD_MAX_AND - 1]; /* further requirements, all of which hold too */
    size_t nextra;
} info;

static void info_drop_extra(info *x)
{
    for (size_t i = 0; i < x->nextra; i++)
        pk_guard_litset_free(&x->extra[i]);
    x->nextra = 0;
}

static void info_free(info *x)
{
    pk_guard_litset_free(&x->set);
    info_drop_extra(x);
}

static info info_any(void)
{
    return (info){.exact = false, .any = true};
}

static info info_empty(void)
{
    info x = {.exact = true};
    set_add(&x.set, "", 0);
    return x;
}

/* The requirement a node imposes: its exact language or its requirement set; NULL when none. */
static const pk_guard_litset *requirement(const info *x)
{
    if (x->any || x->set.n == 0 || set_has_empty(&x->set)) return NULL;
    return &x->set;
}

/* How unlikely a literal is in ordinary text, roughly: uncommon words count their length, the most
 * common English words 1, unusual punctuation 6 and other punctuation 2. A set is as good as its
 * weakest literal. Only the choice between valid requirements depends on this, never soundness. */
static const char *const common_words[] = {
    "a",     "about",  "after", "again",   "all",    "also",  "an",    "and",   "any",    "are",   "as",
    "at",    "back",   "be",    "been",    "before", "being", "but",   "by",    "can",    "could", "day",
    "did",   "do",     "does",  "down",    "each",   "even",  "every", "first", "for",    "from",  "get",
    "give",  "go",     "good",  "had",     "has",    "have",  "he",    "her",   "here",   "him",   "his",
    "how",   "i",      "if",    "in",      "into",   "is",    "it",    "its",   "just",   "know",  "like",
    "look",  "make",   "many",  "me",      "more",   "most",  "much",  "must",  "my",     "new",   "no",
    "not",   "now",    "of",    "on",      "one",    "only",  "or",    "other", "our",    "out",   "over",
    "part",  "people", "s",     "said",    "same",   "say",   "see",   "she",   "should", "so",    "some",
    "such",  "take",   "than",  "that",    "the",    "their", "them",  "then",  "there",  "these", "they",
    "thing", "this",   "those", "through", "time",   "to",    "too",   "two",   "up",     "us",    "use",
    "very",  "was",    "way",   "we",      "well",   "were",  "what",  "when",  "where",  "which", "while",
    "who",   "will",   "with",  "work",    "would",  "year",  "you",   "your",  "t",      "re",    "ve",
    "ll",    "d",      "m",     "end",     "start",  "way",   "set",   "end",   "show",   "tell",  "put",
    "let",   "lets",   "new",   "next",    "below",  "above", "given", "using", "via"};

static bool is_common(const char *w, size_t n)
{
    for (size_t i = 0; i < sizeof common_words / sizeof common_words[0]; i++)
        if (strlen(common_words[i]) == n && memcmp(common_words[i], w, n) == 0) return true;
    return false;
}

static size_t lit_score(const pk_guard_lit *l)
{
    size_t score = 0, i = 0;
    while (i < l->n) {
        unsigned char c = (unsigned char)l->s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c >= 0x80;
        if (!alnum) {
            if (c != ' ') score += strchr("<>|[]{}#%^&*_~`\\=@$", c) ? 6 : 2;
            i++;
            continue;
        }
        size_t st = i;
        while (i < l->n && (((unsigned char)l->s[i] >= 'a' && (unsigned char)l->s[i] <= 'z') ||
                            ((unsigned char)l->s[i] >= '0' && (unsigned char)l->s[i] <= '9') ||
                            (unsigned char)l->s[i] >= 0x80))
            i++;
        score += is_common(l->s + st, i - st) ? 1 : i - st;
    }
    return score;
}

static size_t set_score(const pk_guard_litset *s)
{
    size_t m = SIZE_MAX;
    for (size_t i = 0; i < s->n; i++) {
        size_t v = lit_score(&s->v[i]);
        if (v < m) m = v;
    }
    return m;
}

/* Keeps the stronger of two requirements: rarer weakest literal, then longer, then fewer literals. */
static bool better(const pk_guard_litset *a, const pk_guard_litset *b)
{
    if (!b) return true;
    size_t sa = set_score(a), sb = set_score(b);
    if (sa != sb) return sa > sb;
    size_t ma = set_minlen(a), mb = set_minlen(b);
    if (ma != mb) return ma > mb;
    return a->n < b->n;
}

/* Replaces every string of s by its last `keep` bytes (whole when shorter), deduplicated: a match
 * of the run still ends with one of them, so the run's requirement carries over to what follows. */
static void set_suffixes(pk_guard_litset *s, size_t keep)
{
    pk_guard_litset t = {0};
    for (size_t i = 0; i < s->n; i++) {
        size_t n = s->v[i].n < keep ? s->v[i].n : keep;
        set_add(&t, s->v[i].s + s->v[i].n - n, n);
    }
    set_move(s, &t);
}

static size_t set_maxlen(const pk_guard_litset *s)
{
    size_t m = 0;
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].n > m) m = s->v[i].n;
    return m;
}

/* ---- parser ----------------------------------------------------------------------------------- */

typedef struct parser {
    const unsigned char *p, *end;
    bool fail;
    bool words; /* the words view: \b next to a letter is a space (see prefilter.h) */
} parser;

static info parse_alt(parser *ps);

static void class_word(uint8_t *cl)
{
    for (int c = 0; c < 256; c++)
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_') cl[c] = 1;
}

/* Views hold no white space but single ' ' characters (normalize.h), so \s can only match ' '. */
static void class_space(uint8_t *cl)
{
    cl[' '] = 1;
}

static void class_digit(uint8_t *cl)
{
    for (int c = '0'; c <= '9'; c++)
        cl[c] = 1;
}

static int hexv(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Parses an escape after '\'. Returns 1 and *lit for a single byte, 2 and fills cl for a class, 3 for
 * a zero-width assertion; 0 (and sets fail) for anything not modelled. */
static int parse_escape(parser *ps, unsigned char *lit, uint8_t *cl)
{
    if (ps->p >= ps->end) return ps->fail = true, 0;
    unsigned char c = *ps->p++;
    uint8_t tmp[256] = {0};
    switch (c) {
    case 'b':
    case 'B':
        return *lit = c, 3;
    case 'w':
    case 'W':
    case 's':
    case 'S':
    case 'd':
    case 'D':
        if (c == 'w' || c == 'W') class_word(tmp);
        if (c == 's' || c == 'S') class_space(tmp);
        if (c == 'd' || c == 'D') class_digit(tmp);
        for (int k = 0; k < 256; k++)
            cl[k] |= (c >= 'a') ? tmp[k] : (uint8_t)!tmp[k];
        return 2;
    case 'n':
        return *lit = '\n', 1;
    case 't':
        return *lit = '\t', 1;
    case 'r':
        return *lit = '\r', 1;
    case 'f':
        return *lit = '\f', 1;
    case 'v':
        return *lit = '\v', 1;
    case 'x': {
        if (ps->end - ps->p < 2 || hexv(ps->p[0]) < 0 || hexv(ps->p[1]) < 0) return ps->fail = true, 0;
        *lit = (unsigned char)(hexv(ps->p[0]) << 4 | hexv(ps->p[1]));
        ps->p += 2;
        return 1;
    }
    default:
        /* Escaped punctuation is literal; escaped letters/digits are features we do not model. */
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            return ps->fail = true, 0;
        return *lit = c, 1;
    }
}

static void parse_class(parser *ps, uint8_t *cl)
{
    bool neg = false;
    uint8_t in[256] = {0};
    if (ps->p < ps->end && *ps->p == '^') neg = true, ps->p++;
    bool first = true;
    int prev = -1; /* last single byte, for ranges */
    while (ps->p < ps->end && (*ps->p != ']' || first)) {
        first = false;
        unsigned char c = *ps->p++;
        int single = -1;
        if (c == '\\') {
            unsigned char lit;
            int k = parse_escape(ps, &lit, in);
            if (k == 1)
                single = lit;
            else if (k != 2)
                return (void)(ps->fail = true);
        } else if (c == '[' && ps->p < ps->end && *ps->p == ':') {
            return (void)(ps->fail = true); /* POSIX classes: not modelled */
        } else if (c == '-' && prev >= 0 && ps->p < ps->end && *ps->p != ']') {
            unsigned char hi = *ps->p++;
            if (hi == '\\') {
                unsigned char lit;
                if (parse_escape(ps, &lit, in) != 1) return (void)(ps->fail = true);
                hi = lit;
            }
            for (int k = prev; k <= hi; k++)
                in[k] = 1;
            prev = -1;
            continue;
        } else {
            single = c;
        }
        if (single >= 0) in[single] = 1;
        prev = single;
    }
    if (ps->p >= ps->end) return (void)(ps->fail = true);
    ps->p++; /* ']' */
    for (int k = 0; k < 256; k++)
        cl[k] = neg ? !in[k] : in[k];
}

/* A class (or any single byte from cl) as info: exact when it holds few case-folded bytes. */
static info class_info(const uint8_t *cl)
{
    uint8_t folded[256] = {0};
    size_t n = 0;
    for (int k = 0; k < 256; k++) {
        if (!cl[k]) continue;
        int f = (k >= 'A' && k <= 'Z') ? k + 32 : k;
        n += !folded[f];
        folded[f] = 1;
    }
    if (n == 0 || n > CLASS_MAX) return info_any();
    info x = {.exact = true};
    for (int k = 0; k < 256; k++)
        if (folded[k]) {
            char b = (char)k;
            set_add(&x.set, &b, 1);
        }
    return x;
}

static info lit_info(unsigned char c)
{
    uint8_t cl[256] = {0};
    cl[c] = 1;
    return class_info(cl);
}

/* Parses a quantifier at p if any: *min, *max (-1 unbounded). Returns false when none. */
static bool parse_quant(parser *ps, long *min, long *max)
{
    if (ps->p >= ps->end) return false;
    unsigned char c = *ps->p;
    if (c == '?' || c == '*' || c == '+') {
        ps->p++;
        *min = c == '+';
        *max = c == '?' ? 1 : -1;
    } else if (c == '{') {
        const unsigned char *q = ps->p + 1;
        long a = 0, b;
        bool digits = false;
        while (q < ps->end && *q >= '0' && *q <= '9')
            a = a * 10 + (*q++ - '0'), digits = true;
        if (!digits) return false; /* a literal '{' */
        if (q < ps->end && *q == '}') {
            b = a;
        } else if (q < ps->end && *q == ',') {
            q++;
            b = -1;
            if (q < ps->end && *q >= '0' && *q <= '9') {
                b = 0;
                while (q < ps->end && *q >= '0' && *q <= '9')
                    b = b * 10 + (*q++ - '0');
            }
            if (q >= ps->end || *q != '}') return false;
        } else {
            return false;
        }
        ps->p = q + 1;
        *min = a, *max = b;
    } else {
        return false;
    }
    if (ps->p < ps->end && (*ps->p == '?' || *ps->p == '+')) ps->p++; /* lazy / possessive */
    return true;
}

static info apply_quant(info x, long min, long max)
{
    if (min == 1 && max == 1) return x;
    if (x.exact && x.set.n == 1 && x.set.v[0].n == 1 && x.set.v[0].s[0] == ' ' && max != 0) {
        /* Views never hold two spaces in a row: " *" is "" or " ", " +" is " ". */
        if (min == 0) set_add(&x.set, "", 0);
        return x;
    }
    if (min == 0) {
        if (max == 1 && x.exact && x.set.n < EXACT_MAX) {
            set_add(&x.set, "", 0);
            return x;
        }
        info_free(&x);
        return info_any();
    }
    /* At least one repetition: whatever one copy requires, the repetition requires too. */
    if (x.exact) {
        x.exact = false;
        if (set_has_empty(&x.set)) return info_free(&x), info_any();
    }
    return x;
}

static info parse_atom(parser *ps)
{
    unsigned char c = *ps->p++;
    uint8_t cl[256] = {0};
    switch (c) {
    case '(': {
        if (ps->p < ps->end && *ps->p == '?') {
            if (ps->end - ps->p >= 2 && ps->p[1] == ':')
                ps->p += 2;
            else
                return ps->fail = true, info_any();
        }
        info x = parse_alt(ps);
        if (ps->p >= ps->end || *ps->p != ')') return ps->fail = true, x;
        ps->p++;
        return x;
    }
    case '[':
        parse_class(ps, cl);
        return class_info(cl);
    case '.':
        return info_any();
    case '^':
    case '$':
        return info_empty();
    case '\\': {
        unsigned char lit;
        int k = parse_escape(ps, &lit, cl);
        if (k == 1) return lit_info(lit);
        if (k == 2) return class_info(cl);
        if (k == 3) {
            info x = info_empty();
            x.boundary = lit == 'b';
            return x;
        }
        return info_any();
    }
    case ')':
    case '|':
    case '*':
    case '+':
    case '?':
        return ps->fail = true, info_any();
    default:
        return lit_info(c);
    }
}

/* True when every string of s is non-empty and starts (first) or ends (!first) with a letter. */
static bool edges_letter(const pk_guard_litset *s, bool first)
{
    if (s->n == 0) return false;
    for (size_t i = 0; i < s->n; i++) {
        if (s->v[i].n == 0) return false;
        unsigned char c = (unsigned char)s->v[i].s[first ? 0 : s->v[i].n - 1];
        if (c < 'a' || c > 'z') return false;
    }
    return true;
}

/* Candidate requirements of a sequence (every one holds for every match). */
typedef struct pool {
    pk_guard_litset v[64];
    size_t n;
} pool;

static void pool_add(pool *p, const pk_guard_litset *r)
{
    if (!r) return;
    for (size_t i = 0; i < p->n; i++) {
        if (p->v[i].n != r->n) continue;
        bool same = true;
        for (size_t k = 0; k < r->n && same; k++)
            same = set_has(&p->v[i], r->v[k].s, r->v[k].n);
        if (same) return;
    }
    size_t slot = p->n;
    if (slot == sizeof p->v / sizeof p->v[0]) { /* full: replace the weakest if r is stronger */
        size_t w = 0;
        for (size_t i = 1; i < p->n; i++)
            if (better(&p->v[w], &p->v[i])) w = i;
        if (!better(r, &p->v[w])) return;
        pk_guard_litset_free(&p->v[w]);
        slot = w;
    } else {
        p->n++;
    }
    memset(&p->v[slot], 0, sizeof p->v[slot]);
    set_union(&p->v[slot], r);
}

static void pool_add_info(pool *p, const info *x)
{
    pool_add(p, requirement(x));
    if (!x->exact && !x->any)
        for (size_t i = 0; i < x->nextra; i++)
            pool_add(p, &x->extra[i]);
}

/* The strongest PK_GUARD_MAX_AND candidates become the node's requirement and extras. */
static info pool_take(pool *p)
{
    info x = {.exact = false, .any = p->n == 0};
    for (size_t k = 0; k < PK_GUARD_MAX_AND && p->n; k++) {
        size_t b = 0;
        for (size_t i = 1; i < p->n; i++)
            if (better(&p->v[i], &p->v[b])) b = i;
        /* A further requirement made of common words would cost more to look for than it saves. */
        if (k > 0 && set_score(&p->v[b]) < EXTRA_MIN_SCORE) break;
        if (k == 0)
            x.set = p->v[b];
        else
            x.extra[x.nextra++] = p->v[b];
        p->v[b] = p->v[--p->n];
    }
    for (size_t i = 0; i < p->n; i++)
        pk_guard_litset_free(&p->v[i]);
    p->n = 0;
    return x;
}

static void add_space(pk_guard_litset *s, bool before)
{
    pk_guard_litset sp = {0}, prod = {0};
    set_add(&sp, " ", 1);
    if (before ? set_product(&sp, s, &prod) : set_product(s, &sp, &prod)) set_move(s, &prod);
    pk_guard_litset_free(&sp);
}

/* Sequence: runs of exact parts are multiplied out; every part's requirement holds, the strongest
 * are kept. */
static info parse_seq(parser *ps)
{
    info run = info_empty();
    pool *pl = calloc(1, sizeof *pl);
    if (!pl) abort();
    bool all_exact = true, pending = false;
    while (ps->p < ps->end && *ps->p != '|' && *ps->p != ')' && !ps->fail) {
        info a = parse_atom(ps);
        long min, max;
        if (parse_quant(ps, &min, &max)) a = apply_quant(a, min, max);
        if (ps->words && a.boundary) {
            /* In the (padded) words view a word boundary next to a letter is a space. */
            if (edges_letter(&run.set, false))
                add_space(&run.set, false);
            else
                pending = true;
            info_free(&a);
            continue;
        }
        if (pending && a.exact && edges_letter(&a.set, true)) add_space(&a.set, true);
        pending = false;
        if (a.exact) {
            pk_guard_litset prod = {0};
            if (set_product(&run.set, &a.set, &prod)) {
                set_move(&run.set, &prod);
                info_free(&a);
                continue;
            }
            all_exact = false;
            pool_add(pl, requirement(&run));
            /* Too many combinations: keep only the run's suffixes, as long as they fit. */
            bool joined = false;
            if (!set_has_empty(&run.set))
                for (size_t keep = set_maxlen(&run.set); keep > 0 && !joined; keep--) {
                    set_suffixes(&run.set, keep);
                    if (run.set.n * a.set.n > EXACT_MAX) continue;
                    pk_guard_litset prod2 = {0};
                    if (set_product(&run.set, &a.set, &prod2)) {
                        set_move(&run.set, &prod2);
                        joined = true;
                    }
                }
            if (joined) {
                info_free(&a);
                continue;
            }
            info_free(&run);
            run = a;
            continue;
        }
        all_exact = false;
        pool_add(pl, requirement(&run));
        info_free(&run);
        run = info_empty();
        pool_add_info(pl, &a);
        info_free(&a);
    }
    if (all_exact) {
        pool_take(pl);
        free(pl);
        return run;
    }
    pool_add(pl, requirement(&run));
    info_free(&run);
    info x = pool_take(pl);
    free(pl);
    return x;
}

static info parse_alt(parser *ps)
{
    info acc = parse_seq(ps);
    while (ps->p < ps->end && *ps->p == '|' && !ps->fail) {
        ps->p++;
        info b = parse_seq(ps);
        if (acc.exact && b.exact && acc.set.n + b.set.n <= EXACT_MAX) {
            set_union(&acc.set, &b.set);
        } else {
            const pk_guard_litset *ra = requirement(&acc), *rb = requirement(&b);
            if (!acc.any && !b.any && ra && rb && ra->n + rb->n <= UNION_MAX) {
                set_union(&acc.set, &b.set);
                acc.exact = false;
                info_drop_extra(&acc);
            } else {
                info_free(&acc);
                acc = info_any();
            }
        }
        info_free(&b);
    }
    return acc;
}

size_t pk_guard_required_literals(const char *pattern, bool words_view, pk_guard_litset out[PK_GUARD_MAX_AND])
{
    parser ps = {(const unsigned char *)pattern, (const unsigned char *)pattern + strlen(pattern), false,
                 words_view};
    info x = parse_alt(&ps);
    size_t n = 0;
    if (!ps.fail && ps.p == ps.end && requirement(&x)) {
        set_union(&out[n++], requirement(&x));
        if (!x.exact)
            for (size_t i = 0; i < x.nextra; i++)
                if (!set_has_empty(&x.extra[i]) && x.extra[i].n) set_union(&out[n++], &x.extra[i]);
    }
    info_free(&x);
    return n;
}
