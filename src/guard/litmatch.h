/*
 * guard/litmatch (internal to the guard module): an exact multi-literal matcher for space-separated
 * text (the guard's words view), anchored on tokens.
 *
 * Why: the literal gate of the prefilter looks for thousands of literals (" ignore all", "ructions are
 * ", " chatgpt"...). Almost all of them end in a letter or a space, so a general literal matcher
 * (Vectorscan's FDR) finds a possible match at nearly every word end and costs ~4 ns per byte on
 * prose. In the words view every literal is made of tokens (runs of non-space bytes between single
 * spaces), so each literal can be found from one of its fragments, its *anchor*:
 *   exact  a fragment with a space on both sides inside the literal ("all" in " ignore all "):
 *          a whole token of the text;
 *   prefix the last fragment, after a space, at least 4 bytes (" chatgpt"): a token starts with it;
 *   suffix the first fragment, before a space, at least 4 bytes ("ructions are "): a token ends with it.
 * The matcher walks the tokens of the text once (16 bytes at a time with SSE2 to find the spaces),
 * looks up each token's first four bytes (and its last four when suffix anchors exist) in a
 * small bit filter and a hash table, and checks every literal of a matching anchor with memcmp at the
 * place the anchor puts it. A literal occurs iff it is reported: every occurrence puts its anchor
 * on some token (the text's start and end count as token boundaries), and every report is checked
 * byte for byte. Literals without a usable anchor (no space, or only short prefix/suffix fragments)
 * are not taken: pk_guard_litmatch_build says which, and the caller looks for them another way.
 *
 * Matching is exact byte comparison: literals and text must be in the same case (the views are
 * lower-case). The rarest fragment (guard/prefilter.h's score) is chosen as the anchor, so that few
 * tokens lead to a check; that only affects speed.
 *
 * Ownership: the matcher owns copies of the literals. Immutable after build; scanning is
 * thread-safe and allocates nothing.
 */
#ifndef PAKE_GUARD_LITMATCH_H
#define PAKE_GUARD_LITMATCH_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pk_guard_litmatch pk_guard_litmatch;

/* Bytes after the end of a scanned text that must be readable (their value does not matter). */
#define PK_GUARD_LITMATCH_PAD 8

/* Builds a matcher for the literals s[i] (n[i] bytes) reported as ids[i]; taken[i] is set for each
 * literal the matcher finds, cleared for the others (the caller must look for those itself). Returns
 * NULL when it takes none. */
pk_guard_litmatch *pk_guard_litmatch_build(const char *const *s, const size_t *n, const unsigned *ids,
                                           size_t count, bool *taken);
void pk_guard_litmatch_free(pk_guard_litmatch *m);

/* Calls cb(id, ctx) for each occurrence of a literal in text[0, len) (a literal may be reported more
 * than once); stops when cb returns non-zero and returns that value, else 0. text[len, len +
 * PK_GUARD_LITMATCH_PAD) must be readable. */
int pk_guard_litmatch_scan(const pk_guard_litmatch *m, const char *text, size_t len,
                           int (*cb)(unsigned id, void *ctx), void *ctx);
#endif
