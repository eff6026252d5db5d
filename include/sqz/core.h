/* sqz core: errors, file mapping, atomic output files, thread pool, progress, time.
 *
 * Conventions used by every module:
 *  - Functions that can fail return SQZ_OK (0) or SQZ_ERR (-1) and write a one-line,
 *    human-readable message into the caller's sqz_err: which file, which field, what was
 *    expected. Library code never prints and never exits.
 *  - The caller owns what a function allocates for it; each open or load function has a
 *    matching close or free function that accepts a zeroed or partially filled object. */
#ifndef SQZ_CORE_H
#define SQZ_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { SQZ_OK = 0, SQZ_ERR = -1 };

typedef struct sqz_err {
    char msg[1024];
} sqz_err;

/* Formats a message into err (if err is not NULL) and returns SQZ_ERR. */
int sqz_fail(sqz_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends "prefix: " to an existing message (used to add the file name one level up). */
int sqz_fail_prefix(sqz_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Overflow-checked size arithmetic: return 0 on success, -1 when the result would not
 * fit. Sizes come from files, so every product of them goes through these. */
int sqz_mul_size(size_t a, size_t b, size_t *out);
int sqz_add_size(size_t a, size_t b, size_t *out);

/* ---- read-only file mapping ---- */
typedef struct sqz_map {
    const uint8_t *data; /* NULL for an empty file */
    size_t size;
    char *path; /* owned copy */
} sqz_map;

/* Maps path read-only. Errors name the path and the system error. */
int sqz_map_open(sqz_map *m, const char *path, sqz_err *err);
void sqz_map_close(sqz_map *m);

/* Reads a whole (small) file into a NUL-terminated buffer the caller frees.
 * Fails with a clear error when the file is larger than max_bytes. */
int sqz_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len, sqz_err *err);

int sqz_path_is_dir(const char *path);
int sqz_path_exists(const char *path);
/* Joins dir and name with one '/' into a new string the caller frees (NULL on OOM). */
char *sqz_path_join(const char *dir, const char *name);

/* ---- output files written atomically: data goes to "<path>.tmp.<pid>" and is renamed
 * onto path only by sqz_out_commit, so an interrupted run leaves no half file. ---- */
typedef struct sqz_out {
    FILE *f;
    char *path;
    char *tmp_path;
    int keep_tmp; /* a resumable output: abort leaves the partial file for the next run */
} sqz_out;

int sqz_out_open(sqz_out *o, const char *path, sqz_err *err);
/* A resumable output: data goes to tmp_path (a stable name the caller chose), which
 * sqz_out_abort leaves in place. keep > 0 reopens an existing tmp_path, truncated to its
 * first keep bytes (a checkpoint's), and appends from there; 0 starts it afresh. */
int sqz_out_open_resume(sqz_out *o, const char *path, const char *tmp_path, uint64_t keep, sqz_err *err);
/* Flushes and fsyncs what was written; *offset = the bytes in the file so far. */
int sqz_out_sync(sqz_out *o, uint64_t *offset, sqz_err *err);
int sqz_out_write(sqz_out *o, const void *data, size_t n, sqz_err *err);
/* Flushes, fsyncs, closes and renames. On failure the temporary file is removed. */
int sqz_out_commit(sqz_out *o, sqz_err *err);
/* Closes and removes the temporary file; safe on a committed or zeroed sqz_out. */
void sqz_out_abort(sqz_out *o);

/* ---- thread pool: a fixed set of workers running parallel-for loops ---- */
typedef struct sqz_pool sqz_pool;

/* fn handles indices [begin, end) on worker `thread` (0 <= thread < n_threads). */
typedef void (*sqz_task_fn)(void *ctx, int64_t begin, int64_t end, int thread);

/* n_threads <= 0 means the number of online CPUs. Returns NULL when threads cannot be
 * created (err says why). */
sqz_pool *sqz_pool_create(int n_threads, sqz_err *err);
void sqz_pool_free(sqz_pool *p);
int sqz_pool_threads(const sqz_pool *p);
/* Splits [0, n) into chunks of at least `grain` items and runs them on all threads;
 * returns when every chunk is done. p may be NULL (runs on the calling thread). */
void sqz_pool_for(sqz_pool *p, int64_t n, int64_t grain, sqz_task_fn fn, void *ctx);

/* ---- progress: a one-line bar with rate and ETA on a terminal, nothing otherwise ---- */
typedef struct sqz_progress {
    FILE *out;       /* NULL when quiet */
    const char *label;
    int64_t total;
    int64_t done;
    double t_start;
    double t_last;
    const char *unit; /* e.g. "tok" */
} sqz_progress;

/* Shows progress on stderr only when stderr is a terminal (or when force is set). */
void sqz_progress_begin(sqz_progress *p, const char *label, int64_t total, const char *unit, int force);
void sqz_progress_update(sqz_progress *p, int64_t done, const char *extra);
void sqz_progress_end(sqz_progress *p);

/* Monotonic seconds. */
double sqz_now(void);

/* FNV-1a over n bytes, continuing from h (start from SQZ_HASH64_SEED): the keys a
 * checkpoint records of what it was made from. */
#define SQZ_HASH64_SEED 0xcbf29ce484222325ull
uint64_t sqz_hash64(uint64_t h, const void *p, size_t n);

/* Where a compression spends its time: wall seconds and the floating-point operations
 * of the stage's dense products (counted from the shapes, 2 per multiply-add), summed
 * over every call. GFLOP/s = flops / seconds / 1e9, to hold beside the machine's GEMM
 * rates (sqz_gemm_rates). */
typedef enum sqz_stage {
    SQZ_STAGE_FORWARD = 0, /* calibration forward passes (gradient windows, Gram passes, quantized stream) */
    SQZ_STAGE_BACKWARD,    /* backward passes and the per-row gradient sums */
    SQZ_STAGE_GRAMS,       /* input Gram matrices (double) */
    SQZ_STAGE_SCORING,     /* candidate types of every matrix: GPTQ/RTN on its rows and the error sums */
    SQZ_STAGE_GPTQ,        /* quantizing the written model: factor, sweep, error statistics, targets */
    SQZ_STAGE_PRUNING,     /* removal costs, compensation and the pruned model's file */
    SQZ_STAGE_WRITING,     /* packing and writing the output file */
    SQZ_STAGE_COUNT
} sqz_stage;

typedef struct sqz_stage_times {
    double seconds[SQZ_STAGE_COUNT];
    double flops[SQZ_STAGE_COUNT];
} sqz_stage_times;

/* "forward", "backward", "grams", "scoring", "gptq", "pruning", "writing". */
const char *sqz_stage_name(int stage);
/* t->seconds[stage] += seconds, t->flops[stage] += flops; t may be NULL. */
void sqz_stage_add(sqz_stage_times *t, int stage, double seconds, double flops);
/* t += u, stage by stage. */
void sqz_stage_merge(sqz_stage_times *t, const sqz_stage_times *u);

/* This machine's SGEMM and DGEMM rates in GFLOP/s: the best of a few n × n × n products
 * (n = 1024) on n_threads OpenBLAS threads (<= 0: all cores); OpenBLAS's thread count
 * is restored afterwards. Takes about a second. */
int sqz_gemm_rates(int n_threads, double *sgemm_gflops, double *dgemm_gflops, sqz_err *err);

/* OpenBLAS picks its kernels from the CPU model at load time; on CPUs it does not know
 * (new Xeons, virtual machines hiding the model) it falls back to "Prescott" (SSE3),
 * which runs SGEMM 3-4x slower. The choice is made before main() and can only be
 * changed through OPENBLAS_CORETYPE, so when the fallback is active on a CPU with
 * AVX2/AVX-512 this sets that variable and re-executes the program (argv as given to
 * main); otherwise, or if exec fails, it returns. The user's own OPENBLAS_CORETYPE
 * wins. For programs' main() only: the library never calls it. */
void sqz_blas_fix_kernels(char **argv);

/* IEEE half and bfloat16 conversions (round-to-nearest-even for the narrowing ones). */
float sqz_f16_to_f32(uint16_t h);
uint16_t sqz_f32_to_f16(float f);
float sqz_bf16_to_f32(uint16_t h);
uint16_t sqz_f32_to_bf16(float f);

#ifdef __cplusplus
}
#endif
#endif
