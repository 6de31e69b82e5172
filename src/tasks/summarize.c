/*
 * The built-in extractive summariser: centroid-based sentence ranking (Radev et al.), without a model.
 *
 * Steps: split into sentences (., !, ? followed by space or end; blank lines and Markdown list or
 * heading lines end a sentence too); embed every sentence and the whole text with the local embedder
 * (embed.c: words, bigrams, character trigrams); score a sentence by its cosine with the whole text,
 * so sentences about what the note is mostly about win and an aside loses, plus a small bonus for the
 * first sentence (leads tend to summarise); keep the best max_sentences, output in document order,
 * joined by spaces, within max_chars. Markdown markers at the start of a line (#, -, *, >) are dropped.
 */
#include "tasks/tasks.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SENTENCES 512

typedef struct sent {
    size_t start, end; /* byte range in the text */
    double score;
    bool keep;
} sent;

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
    size_t n = split(text, len, ss);
    /* centroid ranking: cosine between each sentence's embedding and the whole text's */
    float *doc = malloc(sizeof(float) * PK_EMBED_DIMS), *v = malloc(sizeof(float) * PK_EMBED_DIMS);
    pk_embed_text(text, len, doc);
    for (size_t i = 0; i < n; i++) {
        pk_embed_text(text + ss[i].start, ss[i].end - ss[i].start, v);
        double dot = 0;
        for (int d = 0; d < PK_EMBED_DIMS; d++)
            dot += (double)v[d] * doc[d];
        ss[i].score = dot + (i == 0 ? 0.05 : 0); /* leads tend to summarise */
    }
    free(doc);
    free(v);
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
    return kept;
}
