#include "testutil.h"

#include <math.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sqz/core.h"
#include "sqz/tensor.h"
#include <sys/stat.h>

int tu_failures = 0;
int tu_checks = 0;

static char *env_path(const char *var, const char *fallback, const char *rel) {
    const char *base = getenv(var);
    if (!base || !*base) base = fallback;
    size_t n = strlen(base) + strlen(rel) + 2;
    char *p = malloc(n);
    if (!p) abort();
    snprintf(p, n, "%s/%s", base, rel);
    return p;
}

char *tu_shared(const char *rel) { return env_path("SQZ_SHARED", "../shared", rel); }
char *tu_fixture(const char *rel) { return env_path("SQZ_FIXTURES", "tests/fixtures", rel); }

char *tu_tmp(const char *rel) {
    const char *base = getenv("SQZ_TMP");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0755);
    return env_path("SQZ_TMP", "/tmp", rel);
}

int tu_done(const char *name) {
    printf("%s: %d checks, %d failed\n", name, tu_checks, tu_failures);
    return tu_failures ? 1 : 0;
}

cJSON *tu_read_json(const char *path) {
    char *text = NULL;
    size_t len = 0;
    sqz_err err;
    if (sqz_read_file(path, (size_t)1 << 26, &text, &len, &err)) {
        CHECK(0, "%s", err.msg);
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    CHECK(j != NULL, "%s: not JSON", path);
    return j;
}

int32_t *tu_json_ids(const cJSON *arr, int64_t *n) {
    *n = cJSON_GetArraySize(arr);
    int32_t *ids = malloc((size_t)(*n > 0 ? *n : 1) * sizeof *ids);
    if (!ids) abort();
    for (int64_t i = 0; i < *n; i++) ids[i] = (int32_t)cJSON_GetArrayItem(arr, (int)i)->valuedouble;
    return ids;
}

float *tu_read_f32(const char *path, size_t n) {
    char *buf = NULL;
    size_t len = 0;
    sqz_err err;
    if (sqz_read_file(path, (size_t)1 << 31, &buf, &len, &err)) {
        CHECK(0, "%s", err.msg);
        return NULL;
    }
    if (len != n * sizeof(float)) {
        CHECK(0, "%s: %zu bytes, expected %zu", path, len, n * sizeof(float));
        free(buf);
        return NULL;
    }
    return (float *)buf;
}

char *tu_slurp(const char *path, size_t *len) {
    char *s = NULL;
    sqz_err err;
    if (sqz_read_file(path, (size_t)1 << 30, &s, len, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    return s;
}

double tu_urand(tu_rng *r) {
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) / 9007199254740992.0;
}

double tu_gauss(tu_rng *r) {
    double u1 = tu_urand(r), u2 = tu_urand(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

int tu_quant_types(int *types) {
    int n = 0;
    for (int t = 0; t < SQZ_TYPE_COUNT; t++) {
        const sqz_type_traits *tt = sqz_type_get(t);
        if (tt && tt->quantize) types[n++] = t;
    }
    return n;
}

/* $SQZ_DEFAULT_MODEL, else what scripts/default_model.sh prints (the repo root found from
 * $SQZ_FIXTURES). */
char *tu_default_model(void) {
    const char *env = getenv("SQZ_DEFAULT_MODEL");
    if (env && *env) return strdup(env);
    const char *fx = getenv("SQZ_FIXTURES");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "bash '%s/../../scripts/default_model.sh' 2>/dev/null", fx && *fx ? fx : "tests/fixtures");
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    char line[4096] = {0};
    char *ok = fgets(line, sizeof line, p);
    pclose(p);
    if (!ok) return NULL;
    line[strcspn(line, "\r\n")] = 0;
    return line[0] ? strdup(line) : NULL;
}
