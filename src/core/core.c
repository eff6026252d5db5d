/* Errors, checked sizes, file mapping and reading, atomic output, half floats, time. */
#include "sqz/core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int sqz_fail(sqz_err *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return SQZ_ERR;
}

int sqz_fail_prefix(sqz_err *err, const char *fmt, ...) {
    if (err) {
        char prefix[512], old[sizeof err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof old);
        size_t k = strlen(prefix);
        if (k + 2 >= sizeof err->msg) k = sizeof err->msg - 3;
        memcpy(err->msg, prefix, k);
        memcpy(err->msg + k, ": ", 2);
        size_t rest = sizeof err->msg - k - 3;
        size_t ol = strnlen(old, rest);
        memcpy(err->msg + k + 2, old, ol);
        err->msg[k + 2 + ol] = 0;
    }
    return SQZ_ERR;
}

int sqz_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

int sqz_add_size(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return -1;
    *out = a + b;
    return 0;
}

int sqz_map_open(sqz_map *m, const char *path, sqz_err *err) {
    memset(m, 0, sizeof *m);
    m->path = strdup(path);
    if (!m->path) return sqz_fail(err, "%s: out of memory", path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        sqz_fail(err, "%s: cannot open: %s", path, strerror(errno));
        sqz_map_close(m);
        return SQZ_ERR;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        sqz_fail(err, "%s: not a regular file", path);
        close(fd);
        sqz_map_close(m);
        return SQZ_ERR;
    }
    m->size = (size_t)st.st_size;
    if (m->size > 0) {
        void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            sqz_fail(err, "%s: cannot map %zu bytes: %s", path, m->size, strerror(errno));
            close(fd);
            m->size = 0;
            sqz_map_close(m);
            return SQZ_ERR;
        }
        m->data = p;
    }
    close(fd);
    return SQZ_OK;
}

void sqz_map_close(sqz_map *m) {
    if (!m) return;
    if (m->data) munmap((void *)m->data, m->size);
    free(m->path);
    memset(m, 0, sizeof *m);
}

int sqz_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len, sqz_err *err) {
    *out = NULL;
    if (out_len) *out_len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return sqz_fail(err, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return sqz_fail(err, "%s: out of memory", path);
    }
    for (;;) {
        if (len + 1 >= cap) {
            if (cap > max_bytes) {
                free(buf);
                fclose(f);
                return sqz_fail(err, "%s: larger than the %zu bytes allowed for this file", path, max_bytes);
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return sqz_fail(err, "%s: out of memory", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - 1 - len, f);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return sqz_fail(err, "%s: read error", path);
    }
    if (len > max_bytes) {
        free(buf);
        return sqz_fail(err, "%s: larger than the %zu bytes allowed for this file", path, max_bytes);
    }
    buf[len] = 0;
    *out = buf;
    if (out_len) *out_len = len;
    return SQZ_OK;
}

int sqz_path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int sqz_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

char *sqz_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (!s) return NULL;
    memcpy(s, dir, a);
    size_t k = a;
    if (a > 0 && dir[a - 1] != '/') s[k++] = '/';
    memcpy(s + k, name, b + 1);
    return s;
}

int sqz_out_open(sqz_out *o, const char *path, sqz_err *err) {
    memset(o, 0, sizeof *o);
    size_t n = strlen(path) + 32;
    o->path = strdup(path);
    o->tmp_path = malloc(n);
    if (!o->path || !o->tmp_path) {
        sqz_out_abort(o);
        return sqz_fail(err, "%s: out of memory", path);
    }
    snprintf(o->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    o->f = fopen(o->tmp_path, "wb");
    if (!o->f) {
        sqz_fail(err, "%s: cannot create: %s", o->tmp_path, strerror(errno));
        free(o->path);
        free(o->tmp_path);
        memset(o, 0, sizeof *o);
        return SQZ_ERR;
    }
    return SQZ_OK;
}

int sqz_out_open_resume(sqz_out *o, const char *path, const char *tmp_path, uint64_t keep, sqz_err *err) {
    memset(o, 0, sizeof *o);
    o->path = strdup(path);
    o->tmp_path = strdup(tmp_path);
    if (!o->path || !o->tmp_path) {
        free(o->path);
        free(o->tmp_path);
        memset(o, 0, sizeof *o);
        return sqz_fail(err, "%s: out of memory", path);
    }
    o->f = fopen(tmp_path, keep ? "r+b" : "wb");
    int bad = !o->f;
    if (!bad && keep) {
        struct stat st;
        if (fstat(fileno(o->f), &st) != 0 || (uint64_t)st.st_size < keep) {
            sqz_fail(err, "%s: the partial file has %lld bytes, its checkpoint expects at least %llu", tmp_path,
                     (long long)(bad ? 0 : st.st_size), (unsigned long long)keep);
            fclose(o->f);
            free(o->path);
            free(o->tmp_path);
            memset(o, 0, sizeof *o);
            return SQZ_ERR;
        }
        bad = ftruncate(fileno(o->f), (off_t)keep) != 0 || fseeko(o->f, (off_t)keep, SEEK_SET) != 0;
    }
    if (bad) {
        sqz_fail(err, "%s: cannot %s: %s", tmp_path, keep ? "reopen" : "create", strerror(errno));
        if (o->f) fclose(o->f);
        free(o->path);
        free(o->tmp_path);
        memset(o, 0, sizeof *o);
        return SQZ_ERR;
    }
    o->keep_tmp = 1;
    return SQZ_OK;
}

int sqz_out_sync(sqz_out *o, uint64_t *offset, sqz_err *err) {
    if (!o->f) return sqz_fail(err, "output file is not open");
    off_t pos;
    if (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0 || (pos = ftello(o->f)) < 0)
        return sqz_fail(err, "%s: write failed: %s", o->tmp_path, strerror(errno));
    *offset = (uint64_t)pos;
    return SQZ_OK;
}

int sqz_out_write(sqz_out *o, const void *data, size_t n, sqz_err *err) {
    if (n == 0) return SQZ_OK;
    if (!o->f || fwrite(data, 1, n, o->f) != n)
        return sqz_fail(err, "%s: write failed: %s", o->tmp_path ? o->tmp_path : "(closed)", strerror(errno));
    return SQZ_OK;
}

int sqz_out_commit(sqz_out *o, sqz_err *err) {
    if (!o->f) return sqz_fail(err, "output file is not open");
    int bad = fflush(o->f) != 0 || fsync(fileno(o->f)) != 0;
    bad |= fclose(o->f) != 0;
    o->f = NULL;
    if (bad) {
        sqz_fail(err, "%s: write failed: %s", o->tmp_path, strerror(errno));
        sqz_out_abort(o);
        return SQZ_ERR;
    }
    if (rename(o->tmp_path, o->path) != 0) {
        sqz_fail(err, "%s: cannot rename to %s: %s", o->tmp_path, o->path, strerror(errno));
        sqz_out_abort(o);
        return SQZ_ERR;
    }
    free(o->tmp_path);
    free(o->path);
    memset(o, 0, sizeof *o);
    return SQZ_OK;
}

void sqz_out_abort(sqz_out *o) {
    if (!o) return;
    if (o->f) fclose(o->f);
    if (o->tmp_path && !o->keep_tmp) unlink(o->tmp_path);
    free(o->tmp_path);
    free(o->path);
    memset(o, 0, sizeof *o);
}

uint64_t sqz_hash64(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

double sqz_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float sqz_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        /* zero or subnormal: value = man * 2^-24 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7f800000u | (man << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t sqz_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t absu = u & 0x7fffffffu;
    if (absu >= 0x7f800000u) /* inf or nan */
        return sign | 0x7c00 | (absu > 0x7f800000u ? 0x200 : 0);
    if (absu >= 0x477ff000u) return sign | 0x7c00; /* rounds to >= 65520: overflow to inf */
    if (absu < 0x38800000u) {
        /* result is subnormal or zero: scale so the integer part is the mantissa */
        float a = bits_f32(absu);
        float r = a * 16777216.0f; /* 2^24 */
        /* round half to even on the integer */
        float fl = (float)(int32_t)r;
        float diff = r - fl;
        int32_t m = (int32_t)fl;
        if (diff > 0.5f || (diff == 0.5f && (m & 1))) m++;
        return sign | (uint16_t)m;
    }
    uint32_t exp = ((absu >> 23) - 112) << 10;
    uint32_t man = (absu >> 13) & 0x3ff;
    uint32_t rest = absu & 0x1fff;
    uint32_t h = exp | man;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return sign | (uint16_t)h;
}

float sqz_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t sqz_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64); /* quiet nan */
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* ---------------------------------------------------------------- BLAS kernels */

char *openblas_get_corename(void); /* OpenBLAS */

void sqz_blas_fix_kernels(char **argv) {
    if (getenv("OPENBLAS_CORETYPE")) return;
    const char *core = openblas_get_corename();
    static const char *const generic[] = {"prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai",
                                          "coppermine", "northwood", "banias", "unknown"};
    int is_generic = !core;
    for (size_t i = 0; core && i < sizeof generic / sizeof generic[0]; i++)
        if (!strcasecmp(core, generic[i])) is_generic = 1;
    if (!is_generic) return;
    __builtin_cpu_init();
    const char *better = NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        better = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        better = "Haswell";
    if (!better) return;
    setenv("OPENBLAS_CORETYPE", better, 1);
    execv("/proc/self/exe", argv); /* returns only on failure: carry on with slow kernels */
}
