/* libFuzzer target: sqz_config_from_hf_json on arbitrary text. */
#include "sqz/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sqz_llama_config cfg;
    sqz_err err;
    if (sqz_config_from_hf_json(&cfg, (const char *)data, size, "fuzz/config.json", &err) == SQZ_OK) {
        if (cfg.n_layer <= 0 || !cfg.layer_n_head) __builtin_trap(); /* success must mean a usable config */
        sqz_config_free(&cfg);
    }
    return 0;
}
