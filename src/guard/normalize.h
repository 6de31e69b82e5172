/*
 * guard/normalize: turns untrusted text into the two canonical views the guard's rules match on, and
 * finds encoded segments (base64, hex, %XX, HTML entities) whose decoded text is scanned as well.
 *
 * Views (both lower-case ASCII where a folding exists; other characters pass through unchanged):
 *   words view ("w"): compatibility + confusable folding, zero-width/bidi controls removed, every run of
 *     punctuation and white space collapsed to one space, and leetspeak folded inside tokens that
 *     also hold a letter ("1gn0r3" -> "ignore", while "2021" or "$504" stay as they are).
 *   raw view ("r"): the same folding, white space collapsed to one space, punctuation kept, no leet
 *     folding. Used by structural rules (chat-template tokens, markdown image links, HTML).
 * Non-Latin text (German, Japanese, Arabic...) passes through: accented Latin letters fold to their
 * base letter, other scripts are copied byte for byte (in the words view each such character stands
 * apart as its own token, so ASCII letters only ever neighbour letters, digits or spaces). Invalid UTF-8
 * bytes become spaces.
 *
 * Ownership: output buffers belong to the caller and are appended to. Pure functions, no global
 * state: safe to call from any number of threads on distinct buffers.
 */
#ifndef PAKE_GUARD_NORMALIZE_H
#define PAKE_GUARD_NORMALIZE_H
#include "core/buf.h"
#include <stddef.h>

typedef struct pk_guard_norm_stats {
    size_t zero_width;   /* zero-width, bidi-control and invisible tag characters removed */
    size_t mixed_script; /* tokens mixing ASCII letters with Cyrillic/Greek look-alikes */
    size_t invalid;      /* invalid UTF-8 sequences (each became a space) */
} pk_guard_norm_stats;

/* Appends the words view to `words` and the raw view to `raw` and adds the
 * counters to *st (may be NULL). Output is NUL-terminated (pk_buf); raw is at most len + 2 bytes long, words
 * at most 2 * len + 2. */
void pk_guard_normalize(const char *text, size_t len, pk_buf *words, pk_buf *raw, pk_guard_norm_stats *st);

/* Finds encoded segments in text and appends their decoded bytes to `out`, each followed by '\n':
 *  - base64 (standard or URL-safe) runs of >= 16 characters that decode to mostly printable text,
 *  - hex runs of >= 16 digits that decode to mostly printable text,
 *  - the whole text URL-decoded when it holds >= 3 %XX escapes,
 *  - the whole text HTML-entity-decoded when it holds >= 3 entities (&#NN; &#xHH; &lt; ...).
 * Stops once out->len reaches max_out (decoded text is truncated there). Returns the number of
 * segments appended. The decoded bytes may be arbitrary (they are only scanned, never stored). */
size_t pk_guard_decode_segments(const char *text, size_t len, pk_buf *out, size_t max_out);
#endif
