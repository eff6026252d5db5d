/* libFuzzer target: sqz_gguf_parse on arbitrary bytes; on success the first row of every
 * readable tensor is dequantized and the Llama config reader runs on the metadata. */
#include <stdlib.h>

#include "sqz/io.h"
#include "sqz/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sqz_gguf g;
    sqz_err err;
    if (sqz_gguf_parse(&g, data, size, "fuzz.gguf", &err) != SQZ_OK) return 0;
    for (int64_t i = 0; i < g.n_tensors; i++) {
        const sqz_tensor *t = &g.tensors[i];
        const sqz_type_traits *tt = sqz_type_get(t->type);
        if (!tt) abort(); /* the parser accepted an unknown type */
        if (!tt->dequantize || t->ne[0] <= 0 || t->ne[0] > (1 << 20) || t->nbytes == 0) continue;
        float *row = malloc((size_t)t->ne[0] * sizeof *row);
        if (row && sqz_tensor_rows_f32(t, 0, 1, row, &err) != SQZ_OK) abort();
        free(row);
    }
    sqz_llama_config cfg;
    if (sqz_config_from_gguf(&cfg, &g, &err) == SQZ_OK) sqz_config_free(&cfg);
    int64_t i64;
    double f64;
    const char *s;
    sqz_gguf_get_i64(&g, "general.alignment", &i64, &err);
    sqz_gguf_get_f64(&g, "llama.rope.freq_base", &f64, &err);
    sqz_gguf_get_str(&g, "general.architecture", &s, &err);
    sqz_gguf_close(&g);
    return 0;
}
