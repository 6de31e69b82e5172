/*
 * guard: prompt-injection and abuse screening of user-supplied text.
 *
 * Model. Text is normalised into two views (guard/normalize.h: a "words" view with disguises folded
 * away, and a "raw" view that keeps punctuation); embedded base64 / hex / %XX / HTML-entity segments are
 * decoded (up to depth 2, at most PK_GUARD_MAX_DECODED bytes) and normalised too. Each view is scanned
 * once with a Vectorscan multi-pattern database compiled from a versioned rule file (rules/guard.rules;
 * format in docs/guard.md). Every rule has an id, a category and a weight w in (0,1]; fired rules are
 * combined per category by noisy-OR (1 - prod(1 - w)), capped by the category's cap, and categories are
 * combined by noisy-OR into a score in [0,1]. Small signals (invisible characters, mixed-script words,
 * attack language inside an encoded segment) add pseudo-rules with weights from the rule file.
 *
 * Decisions. A policy per surface turns the score into ALLOW / FLAG / BLOCK: score >= block threshold
 * -> BLOCK when the surface may block, else FLAG; score >= flag threshold -> FLAG. Defaults: search
 * queries, tool arguments, prompt arguments and task payloads may block; note content, note fields and
 * webhooks only flag (a note *about* prompt injection is legitimate knowledge). Thresholds default to
 * PK_GUARD_FLAG_DEFAULT / PK_GUARD_BLOCK_DEFAULT and are configurable per surface.
 *
 * Results name the rule ids and categories that fired, never the patterns.
 *
 * Threads. A pk_guard is shared by all threads: pk_guard_scan may run concurrently from any number of
 * threads (Vectorscan scratch is per thread). pk_guard_reload swaps the compiled rules atomically;
 * scans already running keep the old rules (reference counted) and the old rules are freed by the last
 * scan that used them. Policy setters are meant for start-up, before the guard is shared.
 *
 * Errors. Loading or reloading returns pk_err (code "guard_rules_invalid", status 500) naming the file
 * and line for bad syntax, an unknown category, a duplicate id, a bad weight, an invalid pattern or a
 * file without rules; a failed reload leaves the running rules in place.
 */
#ifndef PAKE_GUARD_GUARD_H
#define PAKE_GUARD_GUARD_H
#include "core/buf.h"
#include "core/err.h"
#include "core/json.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PK_GUARD_FLAG_DEFAULT 0.50
#define PK_GUARD_BLOCK_DEFAULT 0.70
#define PK_GUARD_MAX_DECODED (64 * 1024) /* bytes of decoded segments scanned per input */
#define PK_GUARD_MAX_HITS 16             /* rule ids reported per result */
#define PK_GUARD_ID_MAX 48               /* rule id length limit, including the NUL */

typedef enum {
    PK_GUARD_NOTE_CONTENT,
    PK_GUARD_NOTE_FIELD, /* title, tags, metadata values, link metadata */
    PK_GUARD_SEARCH_QUERY,
    PK_GUARD_TOOL_ARGUMENT,
    PK_GUARD_PROMPT_ARGUMENT,
    PK_GUARD_TASK_PAYLOAD,
    PK_GUARD_WEBHOOK,
    PK_GUARD_SURFACE_COUNT
} pk_guard_surface;

typedef enum { PK_GUARD_ALLOW, PK_GUARD_FLAG, PK_GUARD_BLOCK } pk_guard_decision;

typedef enum {
    PK_GC_INSTRUCTION_OVERRIDE,
    PK_GC_ROLE_HIJACK,
    PK_GC_PROMPT_EXTRACTION,
    PK_GC_FAKE_DELIMITER,
    PK_GC_JAILBREAK_PERSONA,
    PK_GC_REFUSAL_SUPPRESSION,
    PK_GC_OBFUSCATION,
    PK_GC_EXFILTRATION,
    PK_GC_OUTPUT_MANIPULATION, /* instructions aimed at the model's answer (indirect injection) */
    PK_GC_SCRIPT_INJECTION,
    PK_GC_HTML_INJECTION,
    PK_GC_COUNT
} pk_guard_category;

typedef struct pk_guard_policy {
    double flag_threshold;
    double block_threshold;
    bool can_block; /* false: a score above block_threshold is only FLAG */
} pk_guard_policy;

typedef struct pk_guard_result {
    pk_guard_decision decision;
    double score;        /* [0,1] */
    uint32_t categories; /* bit (1u << pk_guard_category) per category that fired */
    size_t nrules;       /* ids in rule_ids (fired rules beyond PK_GUARD_MAX_HITS are not listed) */
    char rule_ids[PK_GUARD_MAX_HITS][PK_GUARD_ID_MAX]; /* [0, nrules) are set; the rest is unspecified */
    size_t zero_width;                                 /* invisible characters removed during normalisation */
    bool decoded;                                      /* an encoded segment was decoded and scanned */
    bool decoded_hit;                                  /* ... and a rule fired inside it */
} pk_guard_result;

typedef struct pk_guard pk_guard;

/* Start-up configuration. rules_path NULL: the rules embedded in the binary. */
typedef struct pk_guard_config {
    const char *rules_path;
    double flag_threshold;  /* <= 0: default */
    double block_threshold; /* <= 0: default */
} pk_guard_config;

/* Fills cfg from the environment: PAKE_GUARD_RULES (path), PAKE_GUARD_FLAG, PAKE_GUARD_BLOCK. The
 * strings point into the environment. */
void pk_guard_config_from_env(pk_guard_config *cfg);

/* Creates a guard from cfg (NULL: embedded rules, default thresholds). */
pk_err *pk_guard_new(const pk_guard_config *cfg, pk_guard **out);
/* Convenience: load from a file (NULL: embedded rules). */
pk_err *pk_guard_load(const char *rules_path, pk_guard **out);
/* Loads from rule text in memory; `origin` names it in errors. */
pk_err *pk_guard_load_text(const char *text, size_t len, const char *origin, pk_guard **out);
void pk_guard_free(pk_guard *g);

/* Recompiles the rules from the guard's file (or the embedded rules) and swaps them in atomically.
 * Safe to call from a SIGHUP-driven thread while other threads scan (never from the signal handler
 * itself: it allocates). On error the old rules stay. */
pk_err *pk_guard_reload(pk_guard *g);
/* Same, from text in memory (tests, admin endpoints). */
pk_err *pk_guard_reload_text(pk_guard *g, const char *text, size_t len, const char *origin);

/* Validates a rule file without keeping it (for `pake guard check-rules`); *nrules gets the count. */
pk_err *pk_guard_check_file(const char *path, size_t *nrules);

/* The rules embedded in the binary (a copy of rules/guard.rules; see guard_rules_default.c). */
extern const char pk_guard_default_rules[];

void pk_guard_set_policy(pk_guard *g, pk_guard_surface s, pk_guard_policy p);
/* The literal prefilter (on by default) skips the full rule databases for text that holds no literal
 * any rule requires; results are the same either way. Off: tests and measurements only. Start-up only. */
void pk_guard_set_prefilter(pk_guard *g, bool on);
pk_guard_policy pk_guard_get_policy(const pk_guard *g, pk_guard_surface s);

/* Scans text (any bytes; invalid UTF-8 is tolerated) under the surface's policy. Never fails. */
void pk_guard_scan(pk_guard *g, const char *text, size_t len, pk_guard_surface surface, pk_guard_result *out);

/* Writes {"decision","score","categories":[...],"rules":[...]} (plus "zero_width" and "decoded"
 * when non-zero) as one JSON value through w. */
void pk_guard_result_json(const pk_guard_result *r, pk_jw *w);

const char *pk_guard_decision_name(pk_guard_decision d);     /* "allow" | "flag" | "block" */
const char *pk_guard_category_name(pk_guard_category c);     /* "instruction_override", ... */
const char *pk_guard_surface_name(pk_guard_surface s);       /* "note_content", ... */
int pk_guard_category_from_name(const char *name, size_t n); /* -1 when unknown */

/* Number of rules loaded and the rule file version line (for /metrics and logs). */
size_t pk_guard_rule_count(pk_guard *g);
uint64_t pk_guard_generation(pk_guard *g); /* increments on every successful reload */

/* Fitting support (pake guard fit): the ids of all rules that fired on text (no cap at
 * PK_GUARD_MAX_HITS), as indices into the current rule list, appended to idx (capacity cap). Returns
 * the number written. */
size_t pk_guard_fired_rules(pk_guard *g, const char *text, size_t len, size_t *idx, size_t cap);
/* Id, category and weight of rule i of the current rules; false when out of range. */
bool pk_guard_rule_info(pk_guard *g, size_t i, char id[PK_GUARD_ID_MAX], pk_guard_category *cat,
                        double *weight);

/* The CLI: `pake guard eval|scan|fit|check-rules ...` (argv[0] == "guard"). Returns the exit code. */
int pk_guard_cli(int argc, char **argv);
#endif
