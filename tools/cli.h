/* Helpers shared by the sqz subcommands: errors and exit codes, option parsing, JSON
 * output, text-file checks. */
#ifndef SQZ_TOOLS_CLI_H
#define SQZ_TOOLS_CLI_H

#include <stddef.h>

#include <cjson/cJSON.h>
#include "sqz/backend.h"

enum { EXIT_ERR = 1, EXIT_USAGE = 2 };

/* Largest text file a subcommand reads (WikiText-2 test is 1.3 MB). */
#define MAX_TEXT_BYTES ((size_t)1 << 30)

/* Prints "sqz: error: msg" and returns EXIT_ERR. */
int fail(const char *msg);
/* Prints "sqz: error: <fmt with arg> (see 'sqz help cmd')" and returns EXIT_USAGE. */
int usage_fail(const char *cmd, const char *fmt, const char *arg);

typedef struct {
    const char *cmd;
    int argc, i;
    char **argv;
} args;

int is_help(const char *a);
/* The value of option argv[i] ("--ctx N"); NULL when missing. */
const char *opt_value(args *a);
/* Parses an integer in [1, max]; returns 0 on success. */
int parse_pos_int(const char *s, long long max, long long *out);
/* GPTQ's --damp F (in (0, 1)) and --shrink F (in [0, 1]) at argv[i]: returns 1 when it
 * was one of them (*rc set to a usage error's exit code when its value is bad), else 0. */
int gptq_flag(args *a, double *damp, double *shrink, int *rc);
int resume_flag(args *a, int *resume, double *every, int *rc);
/* --rescale off|energy|unbiased|P into *power (0, 0.5, 1, P; sqz_rescale_row): 1 when it was
 * that flag (then *rc is 0 or the usage error). */
int rescale_flag(args *a, double *power, int *rc);
int device_flag(args *a, sqz_device *device, int *rc);
/* --tune-steps N and the tuning's Adam step (lr_flag: "--lr" in sqz tune, "--tune-lr" in
 * compress, a number in (0, 1)): 1 when it was one of them (then *rc is 0 or the usage
 * error). */
int tune_flag(args *a, const char *lr_flag, long long *steps, double *lr, int *rc);
/* A tuning report's counts and steps (KL on the calibration windows before each step,
 * held-out KL after it) added to o: what sqz tune and compress --tune-steps write. */
struct sqz_tune_report;
void tune_json(cJSON *o, const struct sqz_tune_report *rep);
/* Writes root as JSON to path (atomically); returns 0 or an exit code. */
int write_json(const char *path, cJSON *root);
/* Reads a text file and checks it is non-empty, non-binary UTF-8; *text is malloc'd.
 * Returns 0 or an exit code. */
int read_text(const char *path, char **text, size_t *len);

/* Removes the temporary file of an output being written to `path` (sqz_out's
 * "<path>.tmp.<pid>") when the program is stopped by SIGINT, SIGTERM or SIGHUP, then
 * dies of that signal as usual. One output at a time; returns 0 or an exit code. */
int guard_output(const char *path);
/* One more file (whole path) to remove on those signals; call before creating it.
 * Up to 16; returns 0 or an exit code. */
int guard_extra(const char *path);

typedef int (*command_fn)(args *a);
int cmd_quantize(args *a);
extern const char HELP_QUANTIZE[];
int cmd_sensitivity(args *a);
extern const char HELP_SENSITIVITY[];
int cmd_compress(args *a);
extern const char HELP_COMPRESS[];
int cmd_prune(args *a);
extern const char HELP_PRUNE[];
int cmd_tune(args *a);
extern const char HELP_TUNE[];
/* The kept widths of a pruned model as a JSON array, one object per layer (n_head,
 * n_head_kv, n_ff, heads): the same in prune's and compress's reports. */
struct sqz_layer_keep;
cJSON *layer_keep_json(const struct sqz_layer_keep *keep, int n_layer);

#endif
