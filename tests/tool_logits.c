/* tool_logits MODEL IDS.json OUT.f32 [exact|llamacpp]: sqz's logits for one sequence of
 * token ids (a JSON array) at every position, as T × n_vocab little-endian floats. A test
 * helper (tests/t_qwen.sh compares it with transformers); not part of the CLI. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sqz/model.h"
#include "testutil.h"

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: tool_logits MODEL IDS.json OUT.f32 [exact|llamacpp]\n");
        return 2;
    }
    cJSON *ids_json = tu_read_json(argv[2]);
    int64_t T = 0;
    int32_t *ids = ids_json ? tu_json_ids(ids_json, &T) : NULL;
    cJSON_Delete(ids_json);
    if (!ids || T <= 0) {
        fprintf(stderr, "tool_logits: %s: expected a JSON array of token ids\n", argv[2]);
        return 1;
    }
    sqz_model m;
    sqz_err err;
    if (sqz_model_load(&m, argv[1], 0, &err)) {
        fprintf(stderr, "tool_logits: %s\n", err.msg);
        free(ids);
        return 1;
    }
    m.act_rounding = argc == 5 && !strcmp(argv[4], "llamacpp") ? SQZ_ACT_LLAMACPP : SQZ_ACT_EXACT;
    sqz_pool *pool = NULL;
    int rc = 1;
    float *logits = malloc((size_t)T * (size_t)m.cfg.n_vocab * sizeof(float));
    if (!logits || !(pool = sqz_pool_create(0, &err)) || sqz_forward(&m, pool, ids, T, 0, logits, &err)) {
        fprintf(stderr, "tool_logits: %s\n", logits ? err.msg : "out of memory");
        goto done;
    }
    FILE *f = fopen(argv[3], "wb");
    if (!f || fwrite(logits, sizeof(float), (size_t)T * (size_t)m.cfg.n_vocab, f) != (size_t)T * (size_t)m.cfg.n_vocab) {
        fprintf(stderr, "tool_logits: %s: cannot write\n", argv[3]);
        if (f) fclose(f);
        goto done;
    }
    if (fclose(f) == 0) rc = 0;
done:
    sqz_pool_free(pool);
    free(logits);
    free(ids);
    sqz_model_free(&m);
    return rc;
}
