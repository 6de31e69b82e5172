/*
 * guard/prefilter (internal to the guard module): required-literal analysis of rule patterns.
 *
 * Most user text (notes, titles, queries) contains none of the words any rule needs, yet matching the
 * full rule database costs several ns per byte. The guard therefore first scans each view with a cheap
 * literal-only database and runs the full database only when one of those literals occurs. For that
 * to change no decision, every rule's literals must be *required*: every string the rule's pattern
 * can match contains at least one of them. A rule may have up to PK_GUARD_MAX_AND such sets (from
 * different parts of the pattern: "(decode|decrypt) .* (and|then) (execute|obey)"); the prefilter
 * opens only when some rule has a literal of each of its sets in the text. pk_guard_required_literals
 * computes such a set from the pattern text (the Vectorscan regex subset used by rule files); a rule for
 * which no set is found is scanned unconditionally.
 *
 * Analysis (after Cox's trigram-index prefilters): each sub-pattern yields either its exact finite
 * language (when small) or an "any of" literal requirement. Concatenation multiplies exact languages
 * while they stay small and otherwise keeps the strongest requirement among its parts; alternation
 * unions; optional parts contribute the empty string (no requirement). Unknown syntax gives up (no
 * set), never a wrong set. Literals are lower-case: patterns are compiled caseless and matched
 * caseless.
 *
 * Ownership: the caller frees the set with pk_guard_litset_free. Pure, thread-safe.
 */
#ifndef PAKE_GUARD_PREFILTER_H
#define PAKE_GUARD_PREFILTER_H
#include <stdbool.h>
#include <stddef.h>

typedef struct pk_guard_lit {
    char *s; /* owned, NUL-terminated (may also contain other bytes) */
    size_t n;
} pk_guard_lit;

typedef struct pk_guard_litset {
    pk_guard_lit *v;
    size_t n, cap;
} pk_guard_litset;

#define PK_GUARD_MAX_AND 3 /* requirements kept per pattern */

/* Fills out[0..n) (initially empty) with literal sets such that every match of pattern contains at
 * least one literal of EACH set, strongest first; returns n (0: none found, the rule is always
 * scanned).
 *
 * The analysis relies on what the views look like (normalize.h): white space is only ever one ' '
 * (so \s is ' ', " *" is "" or " "), and, with words_view, the text is scanned with one ' ' added at
 * each end, letters only ever neighbour letters, digits or ' ' (so \b next to a letter is a ' '). */
size_t pk_guard_required_literals(const char *pattern, bool words_view,
                                  pk_guard_litset out[PK_GUARD_MAX_AND]);
void pk_guard_litset_free(pk_guard_litset *s);
#endif
