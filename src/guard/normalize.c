/*
 * Normalisation for the guard. Attackers hide instructions from pattern matchers with look-alike
 * characters (fullwidth letters, math alphanumerics, Cyrillic "о" for Latin "o"), invisible characters
 * between letters, leetspeak and punctuation between words. Rules are written once against a canonical
 * form instead of enumerating every disguise, so this file folds all of them away in one pass.
 *
 * The pass is built for throughput (the guard screens every user string): runs of plain prose (ASCII
 * letters and single spaces) are copied 16 bytes at a time (SSE2), other ASCII bytes go through a
 * 256-entry class table and are written straight into pre-reserved output, and only non-ASCII code
 * points take the slower fold_cp() path. Leetspeak is folded per token, after the token is complete,
 * and only when the token also holds a letter, so ordinary numbers ("2021", "$504") are left alone.
 *
 * The fold tables are deliberately compact: they cover the ranges used for disguise (Latin-1 and
 * Latin Extended-A accents, ligatures, fullwidth forms, mathematical alphanumerics, enclosed and
 * regional-indicator letters, invisible tag characters, Cyrillic/Greek homoglyphs), not all of NFKC.
 */
#include "guard/normalize.h"
#include "core/utf8.h"
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

enum { C_OTHER = 0, C_LETTER, C_DIGIT, C_SPACE, C_PUNCT, C_SYM, C_HIGH };

static unsigned char cls_tab[256];
static unsigned char lower_tab[256];

__attribute__((constructor)) static void init_tables(void)
{
    for (int c = 0; c < 256; c++) {
        lower_tab[c] = (unsigned char)c;
        if (c >= 0x80)
            cls_tab[c] = C_HIGH;
        else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
            cls_tab[c] = C_LETTER;
        else if (c >= '0' && c <= '9')
            cls_tab[c] = C_DIGIT;
        else if (c == '$' || c == '@')
            cls_tab[c] = C_SYM;
        else if (c > 0x20 && c < 0x7F)
            cls_tab[c] = C_PUNCT;
        else
            cls_tab[c] = C_SPACE; /* white space and control characters */
        if (c >= 'A' && c <= 'Z') lower_tab[c] = (unsigned char)(c + 32);
    }
}

/* ---- code point folding ---------------------------------------------------------------------- */

#define FOLD_KEEP 0    /* copy the original bytes */
#define FOLD_ZW (-1)   /* invisible: drop and count */
#define FOLD_SKIP (-2) /* drop silently (combining marks, variation selectors) */
#define FOLD_TAG (-3)  /* one ASCII byte in o[0], and count as invisible */

/* U+00C0..U+017F -> base letter; '?' keeps the character, '*' is handled in fold_cp. */
static const char latin_tab[] = "aaaaaa*ceeeeiiii"
                                "dnooooo?ouuuuy?*"
                                "aaaaaa*ceeeeiiii"
                                "dnooooo?ouuuuy?y"
                                "aaaaaaccccccccdd"
                                "ddeeeeeeeeeegggg"
                                "gggghhhhiiiiiiii"
                                "iiiijjkkklllllll"
                                "lllnnnnnnnnnoooo"
                                "oooorrrrrrssssss"
                                "ssttttttuuuuuuuu"
                                "uuuuwwyyyzzzzzzs";

typedef struct {
    uint32_t cp;
    char c;
} cp_map;

/* Cyrillic and Greek letters that render like Latin ones (sorted by code point). */
static const cp_map confusables[] = {
    {0x0391, 'a'}, {0x0392, 'b'}, {0x0395, 'e'}, {0x0396, 'z'}, {0x0397, 'h'}, {0x0399, 'i'}, {0x039A, 'k'},
    {0x039C, 'm'}, {0x039D, 'n'}, {0x039F, 'o'}, {0x03A1, 'p'}, {0x03A4, 't'}, {0x03A5, 'y'}, {0x03A7, 'x'},
    {0x03B1, 'a'}, {0x03B5, 'e'}, {0x03B9, 'i'}, {0x03BA, 'k'}, {0x03BD, 'v'}, {0x03BF, 'o'}, {0x03C1, 'p'},
    {0x03C4, 't'}, {0x03C5, 'u'}, {0x03C7, 'x'}, {0x03F2, 'c'}, {0x03F3, 'j'}, {0x0405, 's'}, {0x0406, 'i'},
    {0x0408, 'j'}, {0x0410, 'a'}, {0x0412, 'b'}, {0x0415, 'e'}, {0x041A, 'k'}, {0x041C, 'm'}, {0x041D, 'h'},
    {0x041E, 'o'}, {0x0420, 'p'}, {0x0421, 'c'}, {0x0422, 't'}, {0x0423, 'y'}, {0x0425, 'x'}, {0x0430, 'a'},
    {0x0435, 'e'}, {0x043A, 'k'}, {0x043E, 'o'}, {0x0440, 'p'}, {0x0441, 'c'}, {0x0443, 'y'}, {0x0445, 'x'},
    {0x0451, 'e'}, {0x0455, 's'}, {0x0456, 'i'}, {0x0458, 'j'}, {0x04BB, 'h'}, {0x04CF, 'l'}, {0x0501, 'd'},
    {0x051B, 'q'}, {0x051D, 'w'},
};

static int find_confusable(uint32_t cp)
{
    size_t lo = 0, hi = sizeof confusables / sizeof confusables[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (confusables[mid].cp == cp) return confusables[mid].c;
        if (confusables[mid].cp < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static int put1(char *o, char c)
{
    o[0] = c;
    return 1;
}

/* Folds one non-ASCII code point. Returns the number of ASCII bytes written to o (<= 3), or one of
 * FOLD_KEEP / FOLD_ZW / FOLD_SKIP. *confusable is set when a homoglyph of another script was folded. */
static int fold_cp(uint32_t cp, char *o, bool *confusable)
{
    if (cp < 0x100) {
        if (cp == 0xA0) return put1(o, ' ');
        if (cp == 0xAD) return FOLD_ZW; /* soft hyphen */
        if (cp == 0xAB || cp == 0xBB) return put1(o, '"');
        if (cp < 0xC0) return FOLD_KEEP;
    }
    if (cp < 0x180) {
        char c = latin_tab[cp - 0xC0];
        if (c == '?') return FOLD_KEEP;
        if (c != '*') return put1(o, c);
        if (cp == 0xDF) return o[0] = 's', o[1] = 's', 2;
        return o[0] = 'a', o[1] = 'e', 2; /* U+00C6, U+00E6 */
    }
    if (cp >= 0x300 && cp <= 0x36F) return FOLD_SKIP; /* combining diacritics: "e\u0301" -> "e" */
    if (cp == 0x34F || cp == 0x180E) return FOLD_ZW;
    if (cp >= 0x370 && cp <= 0x52F) {
        int c = find_confusable(cp);
        if (!c) return FOLD_KEEP;
        *confusable = true;
        return put1(o, (char)c);
    }
    if (cp >= 0x2000 && cp <= 0x206F) {
        if (cp <= 0x200A || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F) return put1(o, ' ');
        if (cp <= 0x200F || (cp >= 0x202A && cp <= 0x202E) || cp >= 0x2060) return FOLD_ZW;
        if (cp <= 0x2015) return put1(o, '-');
        if (cp <= 0x201B) return put1(o, '\'');
        if (cp <= 0x201F) return put1(o, '"');
        if (cp == 0x2024) return put1(o, '.');
        if (cp == 0x2026) return o[0] = o[1] = o[2] = '.', 3;
        if (cp == 0x2032) return put1(o, '\'');
        return FOLD_KEEP;
    }
    if (cp >= 0x2460 && cp <= 0x2468) return put1(o, (char)('1' + (cp - 0x2460)));
    if (cp >= 0x249C && cp <= 0x24B5) return put1(o, (char)('a' + (cp - 0x249C)));
    if (cp >= 0x24B6 && cp <= 0x24CF) return put1(o, (char)('a' + (cp - 0x24B6)));
    if (cp >= 0x24D0 && cp <= 0x24E9) return put1(o, (char)('a' + (cp - 0x24D0)));
    if (cp == 0x3000) return put1(o, ' ');
    if (cp >= 0xFB00 && cp <= 0xFB06) {
        static const char *lig[] = {"ff", "fi", "fl", "ffi", "ffl", "st", "st"};
        const char *s = lig[cp - 0xFB00];
        size_t n = strlen(s);
        memcpy(o, s, n);
        return (int)n;
    }
    if (cp >= 0xFE00 && cp <= 0xFE0F) return FOLD_SKIP; /* variation selectors */
    if (cp == 0xFEFF) return FOLD_ZW;
    if (cp >= 0xFF01 && cp <= 0xFF5E) {
        unsigned char c = (unsigned char)(cp - 0xFEE0);
        return put1(o, (char)lower_tab[c]);
    }
    if (cp >= 0x1D400 && cp <= 0x1D6A3) {
        unsigned k = (cp - 0x1D400) % 52;
        return put1(o, (char)('a' + (k % 26)));
    }
    if (cp >= 0x1D7CE && cp <= 0x1D7FF) return put1(o, (char)('0' + (cp - 0x1D7CE) % 10));
    if (cp >= 0x1F130 && cp <= 0x1F189) {
        unsigned k = (cp - 0x1F130) % 32;
        if (k < 26) return put1(o, (char)('a' + k));
        return FOLD_KEEP;
    }
    if (cp >= 0x1F1E6 && cp <= 0x1F1FF) return put1(o, (char)('a' + (cp - 0x1F1E6)));
    if (cp >= 0xE0000 && cp <= 0xE007F) { /* tag characters: invisible ASCII ("ASCII smuggling") */
        uint32_t a = cp - 0xE0000;
        if (a >= 0x20 && a < 0x7F) {
            o[0] = (char)lower_tab[a];
            return FOLD_TAG;
        }
        return FOLD_ZW;
    }
    if (cp >= 0xE0100 && cp <= 0xE01EF) return FOLD_SKIP;
    return FOLD_KEEP;
}

static const char leet_tab[128] = {
    ['0'] = 'o', ['1'] = 'i', ['3'] = 'e', ['4'] = 'a', ['5'] = 's', ['7'] = 't', ['@'] = 'a', ['$'] = 's'};

/* ---- emitters --------------------------------------------------------------------------------- */

/* Per-byte maps for ASCII: raw view (lower-case, white space/control -> ' ') and words view (letters,
 * digits, '$', '@' kept lower-case, everything else -> ' '). Leetspeak is folded afterwards. */
static unsigned char rmap[128], wmap[128];
enum { B_LETTER = 1, B_LEET = 2 };
static unsigned char bits_tab[256];

__attribute__((constructor)) static void init_maps(void)
{
    for (int c = 0; c < 128; c++) {
        unsigned char k = cls_tab[c];
        rmap[c] = k == C_SPACE ? ' ' : lower_tab[c];
        wmap[c] = (k == C_LETTER || k == C_DIGIT || k == C_SYM) ? lower_tab[c] : ' ';
    }
    for (int c = 0; c < 256; c++)
        bits_tab[c] = (cls_tab[c] == C_LETTER ? B_LETTER : 0) | (c < 128 && leet_tab[c] ? B_LEET : 0);
}

typedef struct nstate {
    char *w, *r; /* outputs, reserved large enough */
    size_t wn, rn;
    unsigned char lw, lr; /* last byte written to each view (' ' at start: no leading space) */
    bool leet;            /* a leet character touched a letter: run the leet pass */
    bool conf;            /* a homoglyph was folded: run the mixed-script pass */
    pk_guard_norm_stats st;
} nstate;

static inline void emit_ascii(nstate *s, unsigned char c)
{
    unsigned char r = rmap[c], w = wmap[c];
    s->r[s->rn] = (char)r;
    s->rn += !(r == ' ' && s->lr == ' ');
    s->lr = r;
    s->w[s->wn] = (char)w;
    s->wn += !(w == ' ' && s->lw == ' ');
    s->lw = w;
}

/* A character without folding is copied; in the words view it also becomes a token of its own
 * (" 中 "), so that letters only ever neighbour letters, digits or spaces there (prefilter.h relies on
 * it: a word boundary next to a letter is a space). */
static void emit_bytes(nstate *s, const unsigned char *p, size_t n)
{
    memcpy(s->r + s->rn, p, n), s->rn += n;
    s->lr = p[n - 1];
    if (s->lw != ' ') s->w[s->wn++] = ' ';
    memcpy(s->w + s->wn, p, n), s->wn += n;
    s->w[s->wn++] = ' ';
    s->lw = ' ';
}

static inline bool is_tok(unsigned char c)
{
    return c != ' ';
}

/* Folds leetspeak in every token of the words view that holds an ASCII letter; in tokens without
 * letters nothing changes ("$504", "2021" stay numbers). Compacts space runs; returns the new length. */
static size_t leet_pass(char *w, size_t n)
{
    size_t i = 0, k = 0;
    while (i < n) {
        if (w[i] == ' ') {
            if (k && w[k - 1] != ' ') w[k++] = ' ';
            i++;
            continue;
        }
        size_t st = i;
        bool letter = false, leet = false;
        for (; i < n && is_tok((unsigned char)w[i]); i++) {
            unsigned char b = bits_tab[(unsigned char)w[i]];
            letter |= (b & B_LETTER) != 0;
            leet |= (b & B_LEET) != 0;
        }
        for (size_t j = st; j < i; j++) {
            unsigned char c = (unsigned char)w[j];
            if (leet && letter && c < 128 && leet_tab[c]) c = (unsigned char)leet_tab[c];
            w[k++] = (char)c;
        }
    }
    while (k && w[k - 1] == ' ')
        k--;
    return k;
}

/* Counts words of the original text that mix ASCII letters with Cyrillic/Greek homoglyphs ("pаypal"
 * with a Cyrillic "а"). Only runs when a homoglyph was seen, so it may be slow. */
static size_t count_mixed(const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t count = 0, i = 0;
    bool ascii = false, conf = false;
    while (i <= len) {
        uint32_t cp = ' ';
        size_t n = 1;
        if (i < len && p[i] >= 0x80) {
            n = pk_utf8_decode(p + i, len - i, &cp);
            if (!n) n = 1, cp = ' ';
        } else if (i < len) {
            cp = p[i];
        }
        char o[4];
        bool c = false;
        bool letter = cp < 0x80 ? cls_tab[cp] == C_LETTER : (fold_cp(cp, o, &c) > 0 && c);
        if (letter && cp < 0x80)
            ascii = true;
        else if (letter)
            conf = true;
        else if (!(cp >= 0x300 && cp <= 0x36F)) {
            count += ascii && conf;
            ascii = conf = false;
        }
        i += n;
    }
    return count;
}

/* Plain prose fast path. A run of ASCII letters and single spaces (no two in a row, and no space
 * first when a view already ends in one) comes out of both views as the same run lower-cased: there is
 * nothing to fold, drop or collapse, and no leet character. Looks at the next PROSE_BLOCK bytes, writes
 * them lower-cased to both outputs (which have room: each view is at most as long as the input read so
 * far, twice that for words) and returns how many leading ones form such a run; the caller keeps those. */
#define PROSE_BLOCK 16
#if defined(__SSE2__)
static inline unsigned prose_prefix(const unsigned char *p, char *w, char *r, bool space_before)
{
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m128i lo = _mm_or_si128(v, _mm_set1_epi8(0x20)); /* A-Z -> a-z; ' ' stays */
    __m128i letter =
        _mm_and_si128(_mm_cmpgt_epi8(lo, _mm_set1_epi8('a' - 1)), _mm_cmplt_epi8(lo, _mm_set1_epi8('z' + 1)));
    __m128i space = _mm_cmpeq_epi8(v, _mm_set1_epi8(' '));
    unsigned ok = (unsigned)_mm_movemask_epi8(_mm_or_si128(letter, space));
    unsigned sp = (unsigned)_mm_movemask_epi8(space);
    unsigned bad = (~ok & 0xFFFF) | ((sp & (sp >> 1)) << 1) | (space_before ? sp & 1 : 0) | 0x10000;
    _mm_storeu_si128((__m128i *)w, lo);
    _mm_storeu_si128((__m128i *)r, lo);
    return (unsigned)__builtin_ctz(bad);
}
#else
static inline unsigned prose_prefix(const unsigned char *p, char *w, char *r, bool space_before)
{
    unsigned k = 0;
    for (bool prev_space = space_before; k < PROSE_BLOCK; k++) {
        unsigned char c = p[k];
        if (c == ' ' ? prev_space : cls_tab[c] != C_LETTER) break;
        prev_space = c == ' ';
        w[k] = r[k] = (char)(c | 0x20);
    }
    return k;
}
#endif

void pk_guard_normalize(const char *text, size_t len, pk_buf *words, pk_buf *raw, pk_guard_norm_stats *st)
{
    nstate s = {0};
    pk_buf_reserve(words, 2 * len + 4), s.w = words->data + words->len;
    pk_buf_reserve(raw, len + 4), s.r = raw->data + raw->len;
    s.lw = s.lr = ' ';
    const unsigned char *p = (const unsigned char *)text;
    unsigned char prevb = 0;
    size_t i = 0;
    while (i < len) {
        /* Hot path: ASCII with the output state in registers; runs of plain prose up to 16 bytes at
         * once (prose_prefix), other bytes branch-free one by one. */
        char *w = s.w, *r = s.r;
        size_t wn = s.wn, rn = s.rn;
        unsigned char lw = s.lw, lr = s.lr;
        unsigned leet = 0;
        for (;;) {
            size_t stop = i + 1;
            if (i + PROSE_BLOCK <= len) {
                unsigned k = prose_prefix(p + i, w + wn, r + rn, lw == ' ' || lr == ' ');
                if (k) {
                    unsigned char b = bits_tab[p[i]];
                    leet |= ((prevb << 1) & b) | ((b << 1) & prevb);
                    prevb = bits_tab[p[i + k - 1]];
                    wn += k, rn += k, i += k;
                    lw = lr = (unsigned char)r[rn - 1];
                    if (k == PROSE_BLOCK) continue;
                }
                stop = i + (k ? 1 : 8); /* not prose: a few bytes one by one before the next try */
            }
            if (stop > len) stop = len;
            for (; i < stop && p[i] < 0x80; i++) {
                unsigned char c = p[i], b = bits_tab[c];
                leet |= ((prevb << 1) & b) | ((b << 1) & prevb); /* letter next to a leet char */
                prevb = b;
                unsigned char rc = rmap[c], wc = wmap[c];
                r[rn] = (char)rc;
                rn += (rc != ' ') | (lr != ' ');
                lr = rc;
                w[wn] = (char)wc;
                wn += (wc != ' ') | (lw != ' ');
                lw = wc;
            }
            if (i < stop || i == len) break; /* a non-ASCII byte or the end */
        }
        s.wn = wn, s.rn = rn, s.lw = lw, s.lr = lr;
        s.leet |= (leet & B_LEET) != 0;
        if (i == len) break;
        prevb = 0;
        uint32_t cp;
        size_t n = pk_utf8_decode(p + i, len - i, &cp);
        if (n == 0) {
            s.st.invalid++;
            emit_ascii(&s, ' ');
            i++;
            continue;
        }
        char o[4];
        bool conf = false;
        int fr = fold_cp(cp, o, &conf);
        if (fr > 0) {
            for (int j = 0; j < fr; j++)
                emit_ascii(&s, (unsigned char)o[j]);
            prevb = bits_tab[(unsigned char)o[fr - 1]];
            s.conf |= conf;
        } else if (fr == FOLD_KEEP) {
            emit_bytes(&s, p + i, n);
        } else if (fr == FOLD_ZW) {
            s.st.zero_width++;
        } else if (fr == FOLD_TAG) {
            s.st.zero_width++;
            emit_ascii(&s, (unsigned char)o[0]);
        }
        i += n;
    }
    if (s.wn && s.w[s.wn - 1] == ' ') s.wn--;
    if (s.rn && s.r[s.rn - 1] == ' ') s.rn--;
    if (s.leet) s.wn = leet_pass(s.w, s.wn);
    if (s.conf) s.st.mixed_script += count_mixed(text, len);
    words->len += s.wn;
    words->data[words->len] = '\0';
    raw->len += s.rn;
    raw->data[raw->len] = '\0';
    if (st) {
        st->zero_width += s.st.zero_width;
        st->mixed_script += s.st.mixed_script;
        st->invalid += s.st.invalid;
    }
}

/* ---- encoded segments ------------------------------------------------------------------------- */

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

/* Decoded bytes count as text when >= 90% are printable ASCII or UTF-8 continuation/lead bytes. */
static bool mostly_text(const unsigned char *d, size_t n)
{
    if (n < 8) return false;
    size_t good = 0;
    for (size_t i = 0; i < n; i++)
        good += (d[i] >= 0x20 && d[i] < 0x7F) || d[i] == '\n' || d[i] == '\t' || d[i] == '\r' || d[i] >= 0xC2;
    return good * 10 >= n * 9;
}

enum { D_B64 = 1, D_HEX = 2, D_SPECIAL = 4 };
static unsigned char dec_tab[256];

__attribute__((constructor)) static void init_dec_table(void)
{
    for (int c = 0; c < 256; c++) {
        unsigned char k = 0;
        if (b64val((unsigned char)c) >= 0) k |= D_B64;
        if (hexval((unsigned char)c) >= 0) k |= D_HEX;
        if (c == '%' || c == '&') k |= D_SPECIAL;
        dec_tab[c] = k;
    }
}

static size_t room(const pk_buf *out, size_t max_out)
{
    return out->len >= max_out ? 0 : max_out - out->len;
}

static bool try_base64(const unsigned char *p, size_t n, pk_buf *out, size_t max_out)
{
    size_t cap = n / 4 * 3 + 3, lim = room(out, max_out);
    if (lim < 2) return false;
    if (cap > lim - 1) cap = lim - 1;
    size_t start = out->len;
    pk_buf_reserve(out, cap + 1);
    unsigned char *d = (unsigned char *)out->data + start;
    size_t dn = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && dn < cap; i++) {
        acc = (acc << 6) | (uint32_t)b64val(p[i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            d[dn++] = (unsigned char)(acc >> bits);
        }
    }
    if (!mostly_text(d, dn)) {
        out->data[start] = '\0';
        return false;
    }
    out->len += dn;
    pk_buf_putc(out, '\n');
    return true;
}

static bool try_hex(const unsigned char *p, size_t n, pk_buf *out, size_t max_out)
{
    size_t cap = n / 2, lim = room(out, max_out);
    if (lim < 2) return false;
    if (cap > lim - 1) cap = lim - 1;
    size_t start = out->len;
    pk_buf_reserve(out, cap + 1);
    unsigned char *d = (unsigned char *)out->data + start;
    for (size_t i = 0; i < cap; i++)
        d[i] = (unsigned char)(hexval(p[2 * i]) << 4 | hexval(p[2 * i + 1]));
    if (!mostly_text(d, cap)) {
        out->data[start] = '\0';
        return false;
    }
    out->len += cap;
    pk_buf_putc(out, '\n');
    return true;
}

static void url_decode(const unsigned char *p, size_t n, pk_buf *out, size_t max_out)
{
    for (size_t i = 0; i < n && out->len + 1 < max_out; i++) {
        if (p[i] == '%' && i + 2 < n && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0) {
            pk_buf_putc(out, (char)(hexval(p[i + 1]) << 4 | hexval(p[i + 2])));
            i += 2;
        } else {
            pk_buf_putc(out, p[i] == '+' ? ' ' : (char)p[i]);
        }
    }
    pk_buf_putc(out, '\n');
}

static void put_utf8(pk_buf *out, uint32_t cp)
{
    char b[4];
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = ' ';
    if (cp < 0x80) return pk_buf_putc(out, (char)cp);
    if (cp < 0x800) {
        b[0] = (char)(0xC0 | cp >> 6), b[1] = (char)(0x80 | (cp & 0x3F));
        return pk_buf_append(out, b, 2);
    }
    if (cp < 0x10000) {
        b[0] = (char)(0xE0 | cp >> 12), b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        return pk_buf_append(out, b, 3);
    }
    b[0] = (char)(0xF0 | cp >> 18), b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    b[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), b[3] = (char)(0x80 | (cp & 0x3F));
    pk_buf_append(out, b, 4);
}

/* Parses an entity at p[0] == '&'; returns its length (0 if none) and the code point. */
static size_t parse_entity(const unsigned char *p, size_t n, uint32_t *cp)
{
    static const struct {
        const char *name;
        uint32_t cp;
    } named[] = {{"lt;", '<'},    {"gt;", '>'},   {"amp;", '&'},   {"quot;", '"'},
                 {"apos;", '\''}, {"nbsp;", ' '}, {"sol;", '/'},   {"colon;", ':'},
                 {"lpar;", '('},  {"rpar;", ')'}, {"equals;", '='}};
    if (n < 3) return 0;
    if (p[1] == '#') {
        size_t i = 2;
        uint32_t v = 0;
        bool hex = i < n && (p[i] | 0x20) == 'x';
        if (hex) i++;
        size_t digits = 0;
        for (; i < n && digits < 8; i++, digits++) {
            int d = hex ? hexval(p[i]) : (p[i] >= '0' && p[i] <= '9' ? p[i] - '0' : -1);
            if (d < 0) break;
            v = v * (hex ? 16 : 10) + (uint32_t)d;
        }
        if (!digits) return 0;
        *cp = v;
        return i < n && p[i] == ';' ? i + 1 : i; /* the ';' is optional in HTML */
    }
    for (size_t k = 0; k < sizeof named / sizeof named[0]; k++) {
        size_t l = strlen(named[k].name);
        if (l < n && memcmp(p + 1, named[k].name, l) == 0) {
            *cp = named[k].cp;
            return l + 1;
        }
    }
    return 0;
}

static void entity_decode(const unsigned char *p, size_t n, pk_buf *out, size_t max_out)
{
    for (size_t i = 0; i < n && out->len + 4 < max_out; i++) {
        uint32_t cp;
        size_t l = p[i] == '&' ? parse_entity(p + i, n - i, &cp) : 0;
        if (l) {
            put_utf8(out, cp);
            i += l - 1;
        } else {
            pk_buf_putc(out, (char)p[i]);
        }
    }
    pk_buf_putc(out, '\n');
}

/* Counts %XX escapes and HTML entities with memchr (SIMD in libc) instead of a byte loop. */
static void count_escapes(const unsigned char *p, size_t len, size_t *pct, size_t *ent)
{
    for (const unsigned char *q = p; (q = memchr(q, '%', len - (size_t)(q - p))); q++)
        *pct += (size_t)(q - p) + 2 < len && hexval(q[1]) >= 0 && hexval(q[2]) >= 0;
    for (const unsigned char *q = p; (q = memchr(q, '&', len - (size_t)(q - p))); q++) {
        uint32_t cp;
        *ent += parse_entity(q, len - (size_t)(q - p), &cp) != 0;
    }
}

#if defined(__SSE2__)
/* Bit k set: p[k] is outside the base64 alphabet (A-Z a-z 0-9 + - / _), for 16 bytes; *special is set
 * when one of them is '%' or '&'. */
static inline unsigned non_b64_16(const unsigned char *p, bool *special)
{
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m128i lo = _mm_or_si128(v, _mm_set1_epi8(0x20));
    __m128i in =
        _mm_and_si128(_mm_cmpgt_epi8(lo, _mm_set1_epi8('a' - 1)), _mm_cmplt_epi8(lo, _mm_set1_epi8('z' + 1)));
    in = _mm_or_si128(in, _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8('0' - 1)),
                                        _mm_cmplt_epi8(v, _mm_set1_epi8('9' + 1))));
    in = _mm_or_si128(
        in, _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('+')), _mm_cmpeq_epi8(v, _mm_set1_epi8('-'))));
    in = _mm_or_si128(
        in, _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('/')), _mm_cmpeq_epi8(v, _mm_set1_epi8('_'))));
    __m128i sp = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('%')), _mm_cmpeq_epi8(v, _mm_set1_epi8('&')));
    *special |= _mm_movemask_epi8(sp) != 0;
    return ~(unsigned)_mm_movemask_epi8(in) & 0xFFFF;
}
#endif

size_t pk_guard_decode_segments(const char *text, size_t len, pk_buf *out, size_t max_out)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t nseg = 0, pct = 0, ent = 0;
    /* Look for runs of >= 16 base64-alphabet bytes. Window skip: if any byte of the 16-byte window at i
     * is outside the alphabet, no run of 16 can start before the last such byte, so jump past it. In
     * prose (a space every few bytes) this skips ~12 bytes per window. With SSE2 the whole window is
     * classified at once, which also tells whether the text holds a '%' or '&' at all: every byte is
     * either in some window or inside a base64 run. */
    size_t i = 0;
    bool special = false;
    while (i + 16 <= len && room(out, max_out) > 1) {
#if defined(__SSE2__)
        unsigned non = non_b64_16(p + i, &special);
        if (non) {
            i += (size_t)(32 - __builtin_clz(non)); /* past the last byte outside the alphabet */
            continue;
        }
#else
        size_t j = i + 16;
        while (j > i && (dec_tab[p[j - 1]] & D_B64))
            j--;
        if (j > i) {
            i = j; /* p[j-1] is outside the alphabet */
            continue;
        }
        special = true; /* not tracked without SSE2 */
#endif
        size_t e = i + 16;
        bool hex = true;
        while (e < len && (dec_tab[p[e]] & D_B64))
            e++;
        for (size_t k = i; k < e && hex; k++)
            hex = (dec_tab[p[k]] & D_HEX) != 0;
        if (hex)
            nseg += try_hex(p + i, (e - i) & ~(size_t)1, out, max_out);
        else
            nseg += try_base64(p + i, e - i, out, max_out);
        i = e;
    }
#if defined(__SSE2__)
    for (size_t k = i; k < len && !special; k++)
        special = p[k] == '%' || p[k] == '&';
#else
    special = true;
#endif
    /* No '%' or '&' (or the loop stopped for lack of room, when nothing more is decoded anyway). */
    if (!special || room(out, max_out) <= 1) return nseg;
    count_escapes(p, len, &pct, &ent);
    if (pct >= 3 && room(out, max_out) > 1) url_decode(p, len, out, max_out), nseg++;
    if (ent >= 3 && room(out, max_out) > 1) entity_decode(p, len, out, max_out), nseg++;
    return nseg;
}
