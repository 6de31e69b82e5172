/*
 * Token-anchored literal matcher (see litmatch.h for the contract and why it is exact).
 *
 * Layout: every taken literal has one anchor (exact token, token prefix or token suffix); literals
 * with the same anchor share it. Anchors are found through three hash tables: exact anchors by a
 * hash of the token's first four bytes, last four bytes and length, prefix anchors by the token's
 * first four bytes, suffix anchors by its last four bytes. One 64 Kibit filter (8 KiB, stays in L1)
 * holds a bit per key of each table (a different hash per table), so a token of ordinary text
 * usually costs two loads, three multiplies and three bit tests; an exact anchor of at most eight
 * bytes is then confirmed without a byte comparison.
 */
#include "guard/litmatch.h"
#include "guard/prefilter.h"
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

enum { A_EXACT = 0, A_PREFIX = 1, A_SUFFIX = 2, A_KINDS };

#define FILTER_BITS 16
#define ANCHOR_MIN_SCORE 1 /* weakest anchor taken (pk_guard_lit_score) */
#define AFFIX_MIN 4        /* prefix and suffix anchors are at least a key long */

typedef struct lm_lit {
    uint64_t head, head_mask; /* first min(n, 8) bytes of the literal, and the mask selecting them */
    uint32_t id;
    uint32_t off;  /* bytes of the literal in m->bytes */
    uint32_t n;    /* literal length */
    uint32_t aoff; /* where the anchor starts in the literal */
} lm_lit;

typedef struct lm_anchor {
    uint32_t off, len;           /* anchor bytes in m->bytes */
    uint32_t first, last;        /* first and last four bytes (first: zero-padded when shorter) */
    uint32_t lit_begin, lit_end; /* its literals: m->lits[lit_begin, lit_end) */
} lm_anchor;

typedef struct lm_table {
    uint32_t bits;               /* 1 << bits slots */
    uint32_t *key, *begin, *end; /* slot: key and its anchors [begin, end); empty when begin == end */
} lm_table;

struct pk_guard_litmatch {
    uint64_t filter[(1u << FILTER_BITS) / 64];
    lm_table tab[A_KINDS];
    bool any_affix; /* prefix or suffix anchors exist */
    lm_anchor *anchors;
    lm_lit *lits;
    char *bytes;
};

static inline uint32_t load4(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint64_t load8(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static const uint32_t low_mask[5] = {0, 0xFFu, 0xFFFFu, 0xFFFFFFu, 0xFFFFFFFFu};

/* Keys: exact anchors by (first, last, length), prefix by first, suffix by last. */
static inline uint32_t key_exact(uint32_t first, uint32_t last, size_t n)
{
    return first * 0x9E3779B1u ^ last * 0x85EBCA77u ^ (uint32_t)n * 0xC2B2AE3Du;
}

static inline uint32_t hash_of(int kind, uint32_t key)
{
    static const uint32_t mul[A_KINDS] = {0x27D4EB2Fu, 0x165667B1u, 0x9E3779B1u};
    return key * mul[kind];
}

static inline bool filter_has(const pk_guard_litmatch *m, uint32_t h)
{
    uint32_t f = h >> (32 - FILTER_BITS);
    return (m->filter[f >> 6] >> (f & 63)) & 1;
}

/* ---- build ------------------------------------------------------------------------------------ */

typedef struct cand {
    size_t lit;         /* input index */
    uint32_t kind, key; /* anchor */
    uint32_t first, last;
    const char *a; /* anchor bytes (in the input literal) */
    size_t alen, aoff;
} cand;

/* Chooses the anchor of literal s[0, n): the rarest usable fragment; false when none is good. */
static bool choose_anchor(const char *s, size_t n, cand *c)
{
    bool found = false;
    size_t best = 0, best_score = 0;
    if (!memchr(s, ' ', n)) return false;
    for (size_t i = 0; i <= n; i++) {
        size_t st = i;
        while (i < n && s[i] != ' ')
            i++;
        size_t len = i - st;
        bool space_before = st > 0, space_after = i < n;
        uint32_t kind = space_before && space_after ? A_EXACT : space_before ? A_PREFIX : A_SUFFIX;
        if (kind == A_EXACT ? len == 0 : len < AFFIX_MIN) continue;
        /* Rarer first; at equal rarity an exact token (cheapest check), then the longer one. */
        size_t score = pk_guard_lit_score(s + st, len);
        size_t rank = ((score * 4 + (kind == A_EXACT ? 2 : 0)) * 128) + (len < 127 ? len : 127);
        if (found && rank <= best) continue;
        found = true, best = rank, best_score = score;
        unsigned char b[4] = {0};
        memcpy(b, s + st, len < 4 ? len : 4);
        memcpy(&c->first, b, 4);
        c->last = len >= 4 ? load4(s + st + len - 4) : 0;
        c->kind = kind, c->a = s + st, c->alen = len, c->aoff = st;
        c->key = kind == A_EXACT ? key_exact(c->first, c->last, len) : kind == A_PREFIX ? c->first : c->last;
    }
    /* A literal whose best anchor is a common word ("k the url") would send many tokens of ordinary
     * text to a check: the caller's general matcher does better with it. */
    return found && best_score >= ANCHOR_MIN_SCORE;
}

static int cmp_cand(const void *pa, const void *pb)
{
    const cand *a = pa, *b = pb;
    if (a->kind != b->kind) return (int)a->kind - (int)b->kind;
    if (a->key != b->key) return a->key < b->key ? -1 : 1;
    if (a->alen != b->alen) return a->alen < b->alen ? -1 : 1;
    int d = memcmp(a->a, b->a, a->alen);
    if (d) return d;
    return a->lit < b->lit ? -1 : a->lit > b->lit;
}

static bool same_anchor(const cand *a, const cand *b)
{
    return a->kind == b->kind && a->key == b->key && a->alen == b->alen && memcmp(a->a, b->a, a->alen) == 0;
}

/* Fills table `kind` with the anchors [first, last) (sorted by key) and sets their filter bits. */
static void table_fill(pk_guard_litmatch *m, int kind, const uint32_t *akey, size_t first, size_t last)
{
    lm_table *t = &m->tab[kind];
    size_t nkeys = 0;
    for (size_t a = first; a < last; a++)
        nkeys += a == first || akey[a] != akey[a - 1];
    t->bits = 4;
    while ((1u << t->bits) < 2 * nkeys)
        t->bits++;
    size_t slots = (size_t)1 << t->bits;
    t->key = calloc(slots, sizeof *t->key);
    t->begin = calloc(slots, sizeof *t->begin);
    t->end = calloc(slots, sizeof *t->end);
    if (!t->key || !t->begin || !t->end) abort();
    for (size_t a = first; a < last;) {
        size_t b = a;
        while (b < last && akey[b] == akey[a])
            b++;
        uint32_t h = hash_of(kind, akey[a]), f = h >> (32 - FILTER_BITS);
        m->filter[f >> 6] |= 1ull << (f & 63);
        size_t s = h >> (32 - t->bits);
        while (t->begin[s] != t->end[s])
            s = (s + 1) & (slots - 1);
        t->key[s] = akey[a], t->begin[s] = (uint32_t)a, t->end[s] = (uint32_t)b;
        a = b;
    }
}

pk_guard_litmatch *pk_guard_litmatch_build(const char *const *s, const size_t *n, const unsigned *ids,
                                           size_t count, bool *taken)
{
    cand *c = malloc(sizeof *c * (count ? count : 1));
    if (!c) abort();
    size_t nc = 0, bytes = 0;
    for (size_t i = 0; i < count; i++) {
        taken[i] = n[i] > 0 && n[i] < UINT32_MAX / 2 && choose_anchor(s[i], n[i], &c[nc]);
        if (!taken[i]) continue;
        c[nc++].lit = i;
        bytes += n[i];
    }
    if (nc == 0) return free(c), NULL;
    qsort(c, nc, sizeof *c, cmp_cand);
    pk_guard_litmatch *m = calloc(1, sizeof *m);
    if (!m) abort();
    m->lits = malloc(sizeof *m->lits * nc);
    m->anchors = malloc(sizeof *m->anchors * nc);
    m->bytes = malloc(bytes + 1);
    uint32_t *akey = malloc(sizeof *akey * nc);
    if (!m->lits || !m->anchors || !m->bytes || !akey) abort();
    size_t na = 0, off = 0, kind_first[A_KINDS + 1] = {0};
    int kind = -1;
    for (size_t k = 0; k < nc; k++) {
        size_t i = c[k].lit;
        memcpy(m->bytes + off, s[i], n[i]);
        uint64_t head = 0, mask = n[i] >= 8 ? ~0ull : (1ull << (8 * n[i])) - 1;
        memcpy(&head, s[i], n[i] < 8 ? n[i] : 8);
        m->lits[k] = (lm_lit){head, mask, (uint32_t)ids[i], (uint32_t)off, (uint32_t)n[i], (uint32_t)c[k].aoff};
        if (k == 0 || !same_anchor(&c[k], &c[k - 1])) {
            while (kind < (int)c[k].kind)
                kind_first[++kind] = na;
            m->anchors[na] = (lm_anchor){(uint32_t)(off + c[k].aoff), (uint32_t)c[k].alen, c[k].first, c[k].last,
                                         (uint32_t)k, (uint32_t)k};
            akey[na++] = c[k].key;
        }
        m->anchors[na - 1].lit_end = (uint32_t)k + 1;
        off += n[i];
    }
    while (kind < A_KINDS)
        kind_first[++kind] = na;
    for (int kd = 0; kd < A_KINDS; kd++)
        table_fill(m, kd, akey, kind_first[kd], kind_first[kd + 1]);
    m->any_affix = kind_first[A_KINDS] > kind_first[A_PREFIX];
    free(akey), free(c);
    return m;
}

void pk_guard_litmatch_free(pk_guard_litmatch *m)
{
    if (!m) return;
    for (int k = 0; k < A_KINDS; k++)
        free(m->tab[k].key), free(m->tab[k].begin), free(m->tab[k].end);
    free(m->anchors), free(m->lits), free(m->bytes);
    free(m);
}

/* ---- scan ------------------------------------------------------------------------------------- */

typedef struct lm_scan {
    const pk_guard_litmatch *m;
    const char *text;
    size_t len;
    int (*cb)(unsigned id, void *ctx);
    void *ctx;
} lm_scan;

/* The anchors of table `kind` with this key: [*b, *e) (empty when none). */
static void lookup(const pk_guard_litmatch *m, int kind, uint32_t key, uint32_t h, size_t *b, size_t *e)
{
    const lm_table *t = &m->tab[kind];
    size_t mask = ((size_t)1 << t->bits) - 1;
    *b = *e = 0;
    for (size_t s = h >> (32 - t->bits);; s = (s + 1) & mask) {
        if (t->begin[s] == t->end[s]) return;
        if (t->key[s] == key) {
            *b = t->begin[s], *e = t->end[s];
            return;
        }
    }
}

/* Anchor a was found at text position `at` (where it starts): checks its literals there. */
static int check_lits(const lm_scan *sc, const lm_anchor *a, size_t at)
{
    for (uint32_t k = a->lit_begin; k < a->lit_end; k++) {
        const lm_lit *l = &sc->m->lits[k];
        if (at < l->aoff) continue;
        size_t st = at - l->aoff;
        if (st + l->n > sc->len || (load8(sc->text + st) & l->head_mask) != l->head) continue;
        if (l->n > 8 && memcmp(sc->text + st + 8, sc->m->bytes + l->off + 8, l->n - 8) != 0) continue;
        int r = sc->cb(l->id, sc->ctx);
        if (r) return r;
    }
    return 0;
}

/* The token text[s, s + n) passed the filter for table `kind`: confirm its anchors. */
static __attribute__((noinline)) int token_kind(const lm_scan *sc, int kind, uint32_t key, uint32_t h, size_t s, size_t n, uint32_t first,
                      uint32_t last)
{
    const pk_guard_litmatch *m = sc->m;
    size_t b, e;
    lookup(m, kind, key, h, &b, &e);
    for (; b < e; b++) {
        const lm_anchor *a = &m->anchors[b];
        size_t at = kind == A_SUFFIX ? s + n - a->len : s;
        if (kind == A_EXACT) {
            if (n != a->len || first != a->first || last != a->last) continue;
            if (n > 8 && memcmp(sc->text + s + 4, m->bytes + a->off + 4, n - 8) != 0) continue;
        } else {
            if (n < a->len || (kind == A_PREFIX ? first != a->first : last != a->last)) continue;
            if (a->len > 4 &&
                memcmp(sc->text + at + (kind == A_PREFIX ? 4 : 0), m->bytes + a->off + (kind == A_PREFIX ? 4 : 0),
                       a->len - 4) != 0)
                continue;
        }
        int r = check_lits(sc, a, at);
        if (r) return r;
    }
    return 0;
}

/* One token text[s, s + n), n > 0. */
static inline __attribute__((always_inline)) int token(const lm_scan *sc, size_t s, size_t n)
{
    const pk_guard_litmatch *m = sc->m;
    uint32_t first = load4(sc->text + s) & low_mask[n < 4 ? n : 4];
    uint32_t last = n >= 4 ? load4(sc->text + s + n - 4) : 0;
    uint32_t kx = key_exact(first, last, n), hx = hash_of(A_EXACT, kx);
    uint32_t hp = hash_of(A_PREFIX, first), hs = hash_of(A_SUFFIX, last);
    bool fx = filter_has(m, hx), fa = n >= 4 && (filter_has(m, hp) | filter_has(m, hs));
    if (__builtin_expect(!(fx | fa), 1)) return 0;
    int r = 0;
    if (fx) r = token_kind(sc, A_EXACT, kx, hx, s, n, first, last);
    if (!r && fa && m->any_affix) {
        if (filter_has(m, hp)) r = token_kind(sc, A_PREFIX, first, hp, s, n, first, last);
        if (!r && filter_has(m, hs)) r = token_kind(sc, A_SUFFIX, last, hs, s, n, first, last);
    }
    return r;
}

int pk_guard_litmatch_scan(const pk_guard_litmatch *m, const char *text, size_t len,
                           int (*cb)(unsigned id, void *ctx), void *ctx)
{
    if (!m) return 0;
    lm_scan sc = {m, text, len, cb, ctx};
    size_t start = 0; /* first byte of the current token */
    for (size_t i = 0; i < len; i += 16) {
        unsigned sp = 0;
#if defined(__SSE2__)
        if (i + 16 <= len) {
            __m128i v = _mm_loadu_si128((const __m128i *)(text + i));
            sp = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(' ')));
        } else
#endif
        {
            for (size_t k = 0; k < 16 && i + k < len; k++)
                sp |= (unsigned)(text[i + k] == ' ') << k;
        }
        while (sp) {
            size_t pos = i + (size_t)__builtin_ctz(sp);
            sp &= sp - 1;
            if (pos > start) {
                int r = token(&sc, start, pos - start);
                if (r) return r;
            }
            start = pos + 1;
        }
    }
    return len > start ? token(&sc, start, len - start) : 0;
}
