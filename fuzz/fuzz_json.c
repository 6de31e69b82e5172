/* libFuzzer target: the request-body JSON parser (UTF-8 validation, depth limit, whole-input rule)
 * and the note validator behind it never crash, hang or read past the input. */
#include "core/json.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the parser gets exactly `size` bytes (no terminator), as from the network */
    char *copy = malloc(size ? size : 1);
    if (size) memcpy(copy, data, size);
    cJSON *root = NULL;
    pk_err *e = pk_json_parse(copy, size, 32, &root);
    if (!e) {
        /* re-serialise through the writer: must produce parseable JSON again */
        pk_buf b = PK_BUF_INIT;
        pk_jw w;
        pk_jw_init(&w, &b);
        pk_jw_cjson(&w, root);
        cJSON *again = NULL;
        pk_err *e2 = pk_json_parse(b.data, b.len, 64, &again);
        if (e2) abort();
        cJSON_Delete(again);
        pk_buf_free(&b);
        cJSON_Delete(root);
    }
    pk_err_free(e);
    free(copy);
    return 0;
}
