/* libFuzzer target: the AI provider answer parsers (src/ai/openai.c) over bytes an OpenAI-compatible
 * server could send: embeddings (with a count and length taken from the first input byte), chat
 * completions and error bodies. They must never crash, hang or read past the input, and what they
 * accept must hold: finite unit-length (or zero) rows, a valid UTF-8 answer within the size cap. */
#include "ai/ai.h"
#include "core/utf8.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t n = 1 + (data[0] & 3);        /* 1..4 inputs */
    int dims = 1 + ((data[0] >> 2) & 7); /* 1..8 dimensions */
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    char *copy = malloc(len ? len : 1); /* exactly len bytes, no terminator, as from the network */
    if (len) memcpy(copy, body, len);

    float *out = malloc(sizeof(float) * n * (size_t)dims);
    pk_err *e = pk_ai_parse_embeddings(copy, len, n, dims, out);
    if (!e) {
        for (size_t r = 0; r < n; r++) {
            double s = 0;
            for (int i = 0; i < dims; i++) {
                float v = out[r * (size_t)dims + (size_t)i];
                if (!isfinite(v)) abort();
                s += (double)v * v;
            }
            if (s != 0 && fabs(s - 1.0) > 1e-3) abort();
        }
    }
    pk_err_free(e);
    free(out);

    pk_buf b = PK_BUF_INIT;
    e = pk_ai_parse_chat(copy, len, &b);
    if (!e && (b.len == 0 || b.len > PK_AI_MAX_SUMMARY || !pk_utf8_valid(b.data, b.len))) abort();
    pk_err_free(e);
    pk_buf_free(&b);

    if (pk_ai_error_message(copy, len, &b) && !pk_utf8_valid(b.data, b.len)) abort();
    pk_buf_free(&b);
    free(copy);
    return 0;
}
