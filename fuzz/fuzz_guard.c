/* libFuzzer target: normalisation, segment decoding and a full guard scan over arbitrary bytes.
 * Checks that nothing crashes, reads past the input (ASan), or produces an out-of-range result, and
 * that the literal prefilter never changes a result (a second guard scans with it off). */
#include "guard/guard.h"
#include "guard/normalize.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static pk_guard *guard, *unfiltered;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Compiling the rule databases takes seconds under the sanitizers: done once here, outside the
 * per-input timeout (it used to run inside the first input and trip -timeout=5). */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    pk_err *e = pk_guard_load(NULL, &guard);
    if (e) abort();
    if ((e = pk_guard_load(NULL, &unfiltered))) abort();
    pk_guard_set_prefilter(unfiltered, false);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Copy into an exact-size heap buffer so ASan catches any read past the end. */
    char *text = malloc(size ? size : 1);
    if (size) memcpy(text, data, size);
    pk_buf w = PK_BUF_INIT, r = PK_BUF_INIT, d = PK_BUF_INIT;
    pk_guard_norm_stats st = {0};
    pk_guard_normalize(text, size, &w, &r, &st);
    if (w.len > 2 * size + 2 || r.len > size + 2) abort();
    pk_guard_decode_segments(text, size, &d, 4096);
    if (d.len > 4096 + 8) abort();
    pk_guard_result res;
    pk_guard_scan(guard, text, size, (pk_guard_surface)(size % PK_GUARD_SURFACE_COUNT), &res);
    if (!(res.score >= 0.0 && res.score <= 1.0) || res.nrules > PK_GUARD_MAX_HITS) abort();
    pk_guard_result full;
    pk_guard_scan(unfiltered, text, size, (pk_guard_surface)(size % PK_GUARD_SURFACE_COUNT), &full);
    if (full.decision != res.decision || full.score != res.score || full.categories != res.categories ||
        full.nrules != res.nrules)
        abort();
    for (size_t i = 0; i < res.nrules; i++)
        if (strcmp(full.rule_ids[i], res.rule_ids[i]) != 0) abort();
    pk_buf j = PK_BUF_INIT;
    pk_jw jw;
    pk_jw_init(&jw, &j);
    pk_guard_result_json(&res, &jw);
    pk_buf_free(&j), pk_buf_free(&w), pk_buf_free(&r), pk_buf_free(&d);
    free(text);
    return 0;
}
