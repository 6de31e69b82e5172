/*
 * guard/rules (internal to the guard module): the parsed and compiled form of a rule file.
 *
 * A ruleset is immutable once built and reference counted: pk_guard holds one reference, every scan
 * holds one for its duration, and the last release frees it (how reload swaps rules under readers).
 */
#ifndef PAKE_GUARD_RULES_H
#define PAKE_GUARD_RULES_H
#include "guard/guard.h"
#include "guard/prefilter.h"
#include <hs/hs.h>
#include <stdatomic.h>

#define PK_GUARD_MAX_RULES 1024
#define PK_GUARD_RULES_MAGIC "pake-guard-rules v1"
#define PK_GUARD_COMBINE_MIN 2

enum { PK_VIEW_WORDS = 0, PK_VIEW_RAW = 1, PK_VIEW_COUNT };

typedef struct pk_guard_rule {
    char id[PK_GUARD_ID_MAX];
    pk_guard_category cat;
    double weight;
    int view;      /* PK_VIEW_* */
    char *pattern; /* owned */
    int line;
    pk_guard_litset req[PK_GUARD_MAX_AND]; /* required literal sets (guard/prefilter.h) */
    size_t nreq;                           /* 0: no required literal, the rule is always scanned */
    hs_database_t *db; /* this rule alone: scanned instead of the view's full database when the gate
                          opens for only a few rules (NULL when nreq == 0) */
} pk_guard_rule;

/* One literal of gate stage st (ids are shared by the stage's databases of both views): its view,
 * its length and its (rule, requirement) pairs gate_pairs[st][off .. next literal's off). */
typedef struct pk_guard_gate_lit {
    uint32_t off;
    uint32_t len;
    int view;
} pk_guard_gate_lit;

typedef struct pk_guard_ruleset {
    atomic_long refs;
    uint64_t serial; /* process-unique, identifies the compiled databases for scratch caching */
    pk_guard_rule *rules;
    size_t nrules;
    double cap[PK_GC_COUNT];
    double sig_zero_width, sig_mixed_script, sig_decoded;
    /* Combination signal: added when >= PK_GUARD_COMBINE_MIN pattern rules of the attack-language
     * categories fired (0: off). */
    double sig_combination;
    hs_database_t *db[PK_VIEW_COUNT]; /* all rules of a view; NULL when a view has no rules */
    /* Literal prefilter, two stages: [0] the first (strongest) required set of every rule, [1] the
     * further sets, scanned only when stage 0 found a rule's first set. NULL: none. */
    hs_database_t *gate[2][PK_VIEW_COUNT];
    hs_database_t *always[PK_VIEW_COUNT]; /* rules without required literals; NULL: none */
    /* Literal j of gate[s] is gate_lit[s][j] (nlit + 1 entries, the last one only closes the pair
     * range); its pairs are (rule index << 2 | requirement index). */
    pk_guard_gate_lit *gate_lit[2];
    uint32_t *gate_pairs[2];
} pk_guard_ruleset;

/* Parses and compiles rule text. `origin` (a path or "<embedded>") prefixes error messages. */
pk_err *pk_guard_ruleset_build(const char *text, size_t len, const char *origin, pk_guard_ruleset **out);
void pk_guard_ruleset_release(pk_guard_ruleset *rs);
/* Reads a whole file into a malloc'd NUL-terminated string. */
pk_err *pk_guard_read_file(const char *path, char **text, size_t *len);
#endif
