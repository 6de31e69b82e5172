/*
 * The built-in extractive summariser: picks the sentences that carry the note's most frequent content
 * words (the classic Luhn / SumBasic idea), without any model.
 *
 * Steps: split into sentences (., !, ? followed by space or end; blank lines and Markdown list or
 * heading lines end a sentence too); count content words (lower-cased, >= 3 chars, not a stop word)
 * over the whole text; score each sentence by the mean document frequency of its content words (so
 * long sentences do not win by length), with a small bonus for the first sentence (leads tend to
 * summarise); keep the best max_sentences, output in document order, joined by spaces, within
 * max_chars. Markdown markers at the start of a line (#, -, *, >) are dropped from the output.
 */
#include "tasks/tasks.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SENTENCES 512
#define WORD_MAX 48
#define TABLE 4096

static const char *const STOP[] = {
    "the",   "and",   "for",   "are",  "but",   "not",   "you",  "all",  "any",   "can",  "had",  "her",
    "was",   "one",   "our",   "out",  "has",   "have",  "this", "that", "with",  "from", "they", "will",
    "would", "there", "their", "what", "about", "which", "when", "were", "been",  "into", "than", "then",
    "them",  "these", "those", "its",  "also",  "such",  "more", "some", "other", "only", "over", "very",
    "your",  "who",   "how",   "why",  "may",   "his",   "she",  "him",  "does",  "did",  "each", "most"};

typedef struct wc {
    char w[WORD_MAX + 1];
    int n;
} wc;

typedef struct sent {
    size_t start, end; /* byte range in the text */
    double score;
    bool keep;
} sent;

static bool is_stop(const char *w)
{
    for (size_t i = 0; i < sizeof STOP / sizeof *STOP; i++)
        if (!strcmp(w, STOP[i])) return true;
    return false;
}

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static wc *slot(wc *t, const char *w)
{
    for (uint32_t i = hash(w) % TABLE, k = 0; k < TABLE; k++, i = (i + 1) % TABLE)
        if (!t[i].w[0] || !strcmp(t[i].w, w)) return &t[i];
    return NULL; /* full: ignore the word */
}

static bool word_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

/* Calls fn for each content word of [s, e). */
static void words(const char *s, size_t a, size_t e, void (*fn)(void *ud, const char *w), void *ud)
{
    size_t i = a;
    while (i < e) {
        while (i < e && !word_char((unsigned char)s[i]))
            i++;
        char w[WORD_MAX + 1];
        size_t n = 0;
        while (i < e && word_char((unsigned char)s[i])) {
            char c = s[i++];
            if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
            if (n < WORD_MAX) w[n++] = c;
        }
        w[n] = '\0';
        if (n >= 3 && !is_stop(w)) fn(ud, w);
    }
}

static void count_word(void *ud, const char *w)
{
    wc *x = slot(ud, w);
    if (!x) return;
    if (!x->w[0]) snprintf(x->w, sizeof x->w, "%s", w);
    x->n++;
}

typedef struct score_acc {
    wc *t;
    double sum;
    int n;
} score_acc;

static void score_word(void *ud, const char *w)
{
    score_acc *a = ud;
    wc *x = slot(a->t, w);
    if (x && x->w[0]) a->sum += x->n;
    a->n++;
}

static size_t split(const char *s, size_t len, sent *out)
{
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= len && n < MAX_SENTENCES; i++) {
        bool endl = i == len;
        bool stop = !endl && (s[i] == '.' || s[i] == '!' || s[i] == '?') &&
                    (i + 1 == len || s[i + 1] == ' ' || s[i + 1] == '\n' || s[i + 1] == '\t');
        bool line = !endl && s[i] == '\n' &&
                    (i + 1 == len || s[i + 1] == '\n' || s[i + 1] == '#' || s[i + 1] == '-' ||
                     s[i + 1] == '*' || s[i + 1] == '>');
        if (!(endl || stop || line)) continue;
        size_t a = start, e = stop ? i + 1 : i;
        while (a < e && (s[a] == ' ' || s[a] == '\n' || s[a] == '\t' || s[a] == '#' || s[a] == '-' ||
                         s[a] == '*' || s[a] == '>' || s[a] == '\r'))
            a++;
        while (e > a && (s[e - 1] == ' ' || s[e - 1] == '\n' || s[e - 1] == '\r' || s[e - 1] == '\t'))
            e--;
        if (e > a) out[n++] = (sent){a, e, 0, false};
        start = i + 1;
    }
    return n;
}

int pk_summarize(const char *text, size_t len, int max_sentences, size_t max_chars, pk_buf *out)
{
    sent *ss = calloc(MAX_SENTENCES, sizeof *ss);
    wc *t = calloc(TABLE, sizeof *t);
    size_t n = split(text, len, ss);
    words(text, 0, len, count_word, t);
    for (size_t i = 0; i < n; i++) {
        score_acc a = {t, 0, 0};
        words(text, ss[i].start, ss[i].end, score_word, &a);
        ss[i].score = a.n ? a.sum / a.n : 0;
        if (i == 0) ss[i].score *= 1.25;
    }
    int kept = 0;
    size_t chars = 0;
    while (kept < max_sentences) {
        long best = -1;
        for (size_t i = 0; i < n; i++)
            if (!ss[i].keep && ss[i].score > 0 && (best < 0 || ss[i].score > ss[best].score)) best = (long)i;
        if (best < 0) break;
        size_t l = ss[best].end - ss[best].start;
        if (kept && chars + l + 1 > max_chars) break;
        ss[best].keep = true;
        chars += l + 1;
        kept++;
    }
    bool first = true;
    for (size_t i = 0; i < n; i++)
        if (ss[i].keep) {
            if (!first) pk_buf_putc(out, ' ');
            size_t l = ss[i].end - ss[i].start;
            if (l > max_chars) l = max_chars; /* one over-long sentence: cut it (at a UTF-8 boundary) */
            while (l > 0 && l < ss[i].end - ss[i].start &&
                   ((unsigned char)text[ss[i].start + l] & 0xc0) == 0x80)
                l--;
            pk_buf_append(out, text + ss[i].start, l);
            first = false;
        }
    free(ss);
    free(t);
    return kept;
}
