#include "testutil.h"

#include <string.h>
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
