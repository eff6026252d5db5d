/* libFuzzer target: sqz_st_parse on arbitrary bytes; on success every tensor's first row
 * is dequantized so the data pointers and sizes the parser produced are exercised. */
#include <stdlib.h>

#include "sqz/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sqz_st_file f;
    sqz_err err;
    if (sqz_st_parse(&f, data, size, "fuzz.safetensors", &err) != SQZ_OK) return 0;
    for (int64_t i = 0; i < f.n_tensors; i++) {
        const sqz_tensor *t = &f.tensors[i];
        if (sqz_st_find(&f, t->name) == NULL) abort();
        if (t->ne[0] <= 0 || t->ne[0] > (1 << 20) || t->nbytes == 0) continue;
        float *row = malloc((size_t)t->ne[0] * sizeof *row);
        if (row && sqz_tensor_rows_f32(t, 0, 1, row, &err) != SQZ_OK) abort(); /* parser promised the bytes */
        free(row);
    }
    sqz_st_close(&f);
    return 0;
}
