/*
 * The built-in local embedder: no model, no download, deterministic across machines and runs.
 *
 * Signed feature hashing (the "hashing trick" with a sign hash, Weinberger et al. 2009): every feature
 * of the text is hashed with 64-bit FNV-1a; the low bits pick one of PK_EMBED_DIMS buckets and the top
 * bit a sign (+1/-1), so collisions cancel out in expectation instead of piling up. Features:
 *   - words (lower-cased ASCII letters and digits; UTF-8 bytes >= 0x80 count as letters), weight 1.0
 *   - word bigrams, weight 0.7 (word order and phrases)
 *   - character trigrams of each word padded with spaces, weight 0.4 (morphology: "embed",
 *     "embedding" and "embeddings" share most trigrams, so a query matches inflected forms)
 * Each feature kind has its own hash seed. The vector is L2-normalised, so a dot product is the
 * cosine similarity. Semantic quality is lexical-plus (close to TF vectors with sub-word matching);
 * an OpenAI-compatible embeddings API is the upgrade (src/ai/, --embed-provider openai).
 */
#include "tasks/tasks.h"
#include <math.h>
#include <string.h>

#define SEED_WORD 0xcbf29ce484222325ULL
#define SEED_BIGRAM 0x84222325cbf29ce4ULL
#define SEED_TRIGRAM 0x9e3779b97f4a7c15ULL
#define MAX_WORD 64

static uint64_t fnv(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    /* final avalanche (splitmix64) so that low and top bits are both well mixed */
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

static void add(float *v, uint64_t h, float w)
{
    v[h % PK_EMBED_DIMS] += (h >> 63) ? -w : w;
}

static bool word_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

void pk_embed_text(const char *text, size_t len, float out[PK_EMBED_DIMS])
{
    memset(out, 0, sizeof(float) * PK_EMBED_DIMS);
    char prev[MAX_WORD];
    size_t prevn = 0;
    size_t i = 0;
    while (i < len) {
        while (i < len && !word_char((unsigned char)text[i]))
            i++;
        char w[MAX_WORD + 2];
        size_t n = 0;
        while (i < len && word_char((unsigned char)text[i])) {
            char c = text[i++];
            if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
            if (n < MAX_WORD) w[1 + n++] = c;
        }
        if (!n) break;
        add(out, fnv(SEED_WORD, w + 1, n), 1.0f);
        if (prevn) {
            char bg[2 * MAX_WORD + 1];
            memcpy(bg, prev, prevn);
            bg[prevn] = ' ';
            memcpy(bg + prevn + 1, w + 1, n);
            add(out, fnv(SEED_BIGRAM, bg, prevn + 1 + n), 0.7f);
        }
        w[0] = ' ';
        w[n + 1] = ' ';
        for (size_t k = 0; k + 3 <= n + 2; k++)
            add(out, fnv(SEED_TRIGRAM, w + k, 3), 0.4f);
        memcpy(prev, w + 1, n);
        prevn = n;
    }
    double norm = 0;
    for (int d = 0; d < PK_EMBED_DIMS; d++)
        norm += (double)out[d] * out[d];
    if (norm <= 0) return;
    float inv = (float)(1.0 / sqrt(norm));
    for (int d = 0; d < PK_EMBED_DIMS; d++)
        out[d] *= inv;
}
