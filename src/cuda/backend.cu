/* The CUDA backend (src/cuda/cuda_backend.h): the device handle, Grams with cuBLAS,
 * GPTQ's factor with cuSOLVER (a decoder block's forward: block.cu; what the files share:
 * cuda_impl.h). CUDA C: plain C in .cu files, host code and small kernels.
 *
 * Every CUDA, cuBLAS and cuSOLVER status is checked; a failure is an error naming the
 * stage and the sizes (out of memory says how much was asked for and how much is free),
 * never an abort. */
#include "cuda_impl.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sqz_cuda_gram {
    sqz_cuda *c;
    int64_t n;
    int cross;     /* 1: C += Aᵀ B of two streams (full matrix), else the symmetric XᵀX */
    double *sum;   /* n × n, device: the running sum (symmetric: the upper triangle, column-major =
                      row-major lower; cross: column-major (Aᵀ B)ᵀ = row-major Aᵀ B) */
    float *prod;   /* n × n, device: one window's products */
    float *x;      /* T_cap × n, device: one window's inputs */
    int64_t T_cap;
};

/* ---------------------------------------------------------------- errors */

int sqz_cu_fail(sqz_err *err, const char *stage, cudaError_t e) {
    return sqz_fail(err, "cuda: %s: %s (%s)", stage, cudaGetErrorString(e), cudaGetErrorName(e));
}

static const char *blas_name(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "error";
    }
}

int sqz_cu_blas_fail(sqz_err *err, const char *stage, cublasStatus_t s) {
    return sqz_fail(err, "cuda: %s: cuBLAS status %d (%s)", stage, (int)s, blas_name(s));
}

static int solver_fail(sqz_err *err, const char *stage, cusolverStatus_t s) {
    return sqz_fail(err, "cuda: %s: cuSOLVER status %d", stage, (int)s);
}

/* cudaMalloc with the backend's byte count and an error that names what it was for. */
int sqz_cu_alloc(sqz_cuda *c, void **p, size_t bytes, const char *what, sqz_err *err) {
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        *p = NULL;
        cudaGetLastError(); /* clear it */
        return sqz_fail(err, "cuda: out of memory for %s: %.1f MiB asked, %.1f MiB free of %.1f MiB (%s)", what,
                        (double)bytes / 1048576.0, (double)free_b / 1048576.0, (double)total_b / 1048576.0,
                        cudaGetErrorString(e));
    }
    c->live += bytes;
    if (c->live > c->peak) c->peak = c->live;
    return SQZ_OK;
}

void sqz_cu_free(sqz_cuda *c, void *p, size_t bytes) {
    if (!p) return;
    cudaFree(p);
    c->live -= bytes;
}

/* ---------------------------------------------------------------- the device */

int sqz_cuda_open(int device, sqz_cuda **out, char *desc, size_t desc_cap, sqz_err *err) {
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return sqz_fail(err, "--device cuda: no usable GPU (%s)",
                        e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found none");
    if (device < 0 || device >= n) return sqz_fail(err, "--device cuda: GPU %d of %d", device, n);
    cudaDeviceProp p;
    if ((e = cudaSetDevice(device)) != cudaSuccess) return sqz_cu_fail(err, "cudaSetDevice", e);
    if ((e = cudaGetDeviceProperties(&p, device)) != cudaSuccess) return sqz_cu_fail(err, "cudaGetDeviceProperties", e);
    sqz_cuda *c = (sqz_cuda *)calloc(1, sizeof *c);
    if (!c) return sqz_fail(err, "cuda: out of host memory");
    c->device = device;
    cublasStatus_t bs;
    cusolverStatus_t ss;
    if ((e = cudaStreamCreate(&c->stream)) != cudaSuccess) {
        free(c);
        return sqz_cu_fail(err, "cudaStreamCreate", e);
    }
    if ((bs = cublasCreate(&c->blas)) != CUBLAS_STATUS_SUCCESS) {
        cudaStreamDestroy(c->stream);
        free(c);
        return sqz_cu_blas_fail(err, "cublasCreate", bs);
    }
    if ((ss = cusolverDnCreate(&c->solver)) != CUSOLVER_STATUS_SUCCESS) {
        cublasDestroy(c->blas);
        cudaStreamDestroy(c->stream);
        free(c);
        return solver_fail(err, "cusolverDnCreate", ss);
    }
    cublasSetStream(c->blas, c->stream);
    cusolverDnSetStream(c->solver, c->stream);
    /* Grams: plain FP32 products, never TF32 (their 10-bit mantissas would move H by 1e-3) */
    cublasSetMathMode(c->blas, CUBLAS_PEDANTIC_MATH);
    snprintf(desc, desc_cap, "cuda: %s (%.1f GiB, compute %d.%d)", p.name, (double)p.totalGlobalMem / 1073741824.0,
             p.major, p.minor);
    *out = c;
    return SQZ_OK;
}

void sqz_cuda_close(sqz_cuda *c) {
    if (!c) return;
    if (c->host_stage) cudaFreeHost(c->host_stage);
    cusolverDnDestroy(c->solver);
    cublasDestroy(c->blas);
    cudaStreamDestroy(c->stream);
    free(c);
}

uint64_t sqz_cuda_peak_bytes(const sqz_cuda *c) { return c ? c->peak : 0; }

/* ---------------------------------------------------------------- Grams */

int sqz_cuda_gram_open(sqz_cuda *c, int64_t n, sqz_cuda_gram **out, sqz_err *err) {
    *out = NULL;
    sqz_cuda_gram *g = (sqz_cuda_gram *)calloc(1, sizeof *g);
    if (!g) return sqz_fail(err, "cuda: out of host memory");
    g->c = c;
    g->n = n;
    size_t n2 = (size_t)n * (size_t)n;
    char what[96];
    snprintf(what, sizeof what, "a %lld × %lld Gram", (long long)n, (long long)n);
    if (sqz_cu_alloc(c, (void **)&g->sum, n2 * sizeof(double), what, err) ||
        sqz_cu_alloc(c, (void **)&g->prod, n2 * sizeof(float), what, err)) {
        sqz_cuda_gram_close(g);
        return SQZ_ERR;
    }
    cudaError_t e = cudaMemsetAsync(g->sum, 0, n2 * sizeof(double), c->stream);
    if (e != cudaSuccess) {
        sqz_cuda_gram_close(g);
        return sqz_cu_fail(err, "Gram: clearing the sum", e);
    }
    *out = g;
    return SQZ_OK;
}

/* sum[j·n + i] += prod[j·n + i] for i <= j (column-major upper: what SSYRK wrote). */
static __global__ void add_upper(double *sum, const float *prod, int64_t n) {
    int64_t j = blockIdx.y, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= j && i < n) sum[j * n + i] += (double)prod[j * n + i];
}

int sqz_cuda_gram_add(sqz_cuda_gram *g, const float *x, int64_t T, sqz_err *err) {
    sqz_cuda *c = g->c;
    const int64_t n = g->n;
    if (T > g->T_cap) {
        sqz_cu_free(c, g->x, (size_t)(g->T_cap * n) * sizeof(float));
        g->x = NULL;
        g->T_cap = 0;
        char what[96];
        snprintf(what, sizeof what, "a window of %lld × %lld inputs", (long long)T, (long long)n);
        if (sqz_cu_alloc(c, (void **)&g->x, (size_t)(T * n) * sizeof(float), what, err)) return SQZ_ERR;
        g->T_cap = T;
    }
    cudaError_t e = cudaMemcpyAsync(g->x, x, (size_t)(T * n) * sizeof(float), cudaMemcpyHostToDevice, c->stream);
    if (e != cudaSuccess) return sqz_cu_fail(err, "Gram: copying a window to the GPU", e);
    return sqz_cuda_gram_add_dev(g, g->x, T, err);
}

int sqz_cuda_gram_add_dev(sqz_cuda_gram *g, const float *x, int64_t T, sqz_err *err) {
    sqz_cuda *c = g->c;
    const int64_t n = g->n;
    /* x is T × n row-major = n × T column-major (X); X Xᵀ is the n × n Gram */
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t s = cublasSsyrk(c->blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, (int)n, (int)T, &one, x, (int)n,
                                   &zero, g->prod, (int)n);
    if (s != CUBLAS_STATUS_SUCCESS) return sqz_cu_blas_fail(err, "Gram: SSYRK", s);
    dim3 grid((unsigned)((n + 255) / 256), (unsigned)n);
    add_upper<<<grid, 256, 0, c->stream>>>(g->sum, g->prod, n);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return sqz_cu_fail(err, "Gram: adding a window", e);
    return SQZ_OK;
}

/* The lower triangle of a symmetric sum from its upper one (column-major: entry (i, j),
 * i > j, at j·n + i from (j, i) at i·n + j), in place: only entries i <= j are read. */
static __global__ void mirror_upper(double *sum, int64_t n) {
    int64_t j = blockIdx.y, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i > j && i < n) sum[j * n + i] = sum[i * n + j];
}

/* G (host, n × n) += the device sum, both triangles: the mirror is made on the device and
 * the whole matrix comes back in pieces through the pinned stage, each added in order
 * (the same sums as adding entry by entry). */
int sqz_cuda_gram_finish(sqz_cuda_gram *g, double *G, sqz_err *err) {
    sqz_cuda *c = g->c;
    const int64_t n = g->n;
    size_t n2 = (size_t)n * (size_t)n;
    cudaError_t e;
    if (!c->host_stage && (e = cudaMallocHost((void **)&c->host_stage, SQZ_CUDA_STAGE * sizeof(double))) != cudaSuccess) {
        c->host_stage = NULL;
        return sqz_cu_fail(err, "Gram: a pinned host buffer of 64 MiB", e);
    }
    if (!g->cross) {
        dim3 grid((unsigned)((n + 255) / 256), (unsigned)n);
        mirror_upper<<<grid, 256, 0, c->stream>>>(g->sum, n);
        if ((e = cudaGetLastError()) != cudaSuccess) return sqz_cu_fail(err, "Gram: mirroring the sum", e);
    }
    /* symmetric: column-major = row-major; cross: column-major (Aᵀ B)ᵀ read row-major is Aᵀ B */
    for (size_t off = 0; off < n2; off += SQZ_CUDA_STAGE) {
        size_t k = n2 - off < SQZ_CUDA_STAGE ? n2 - off : SQZ_CUDA_STAGE;
        e = cudaMemcpyAsync(c->host_stage, g->sum + off, k * sizeof(double), cudaMemcpyDeviceToHost, c->stream);
        if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
        if (e != cudaSuccess) return sqz_cu_fail(err, "Gram: copying the sum back", e);
        double *dst = G + off;
        const double *src = c->host_stage;
        for (size_t i = 0; i < k; i++) dst[i] += src[i];
    }
    e = cudaMemsetAsync(g->sum, 0, n2 * sizeof(double), c->stream);
    return e == cudaSuccess ? SQZ_OK : sqz_cu_fail(err, "Gram: clearing the sum", e);
}

int sqz_cuda_xgram_open(sqz_cuda *c, int64_t n, sqz_cuda_gram **out, sqz_err *err) {
    if (sqz_cuda_gram_open(c, n, out, err)) return SQZ_ERR;
    (*out)->cross = 1;
    return SQZ_OK;
}

/* sum += (Aᵀ B)ᵀ in column-major, i.e. Aᵀ B row-major: A, B [T, n] row-major on the device
 * are n × T column-major, and Bᶜ Aᶜᵀ (n × n) is what lands at sum[j·n + i] = Σ_t B[t,i] A[t,j]
 * = (Aᵀ B)(j, i) row-major. */
static __global__ void add_all(double *sum, const float *prod, int64_t n2) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n2) sum[i] += (double)prod[i];
}

int sqz_cuda_xgram_add_dev(sqz_cuda_gram *g, const float *a, const float *b, int64_t T, sqz_err *err) {
    sqz_cuda *c = g->c;
    const int64_t n = g->n;
    if (!g->cross) return sqz_fail(err, "cuda: a cross Gram's product on a symmetric Gram");
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t s = cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)n, (int)n, (int)T, &one, b, (int)n, a,
                                   (int)n, &zero, g->prod, (int)n);
    if (s != CUBLAS_STATUS_SUCCESS) return sqz_cu_blas_fail(err, "cross Gram: SGEMM", s);
    int64_t n2 = n * n;
    add_all<<<(unsigned)((n2 + 255) / 256), 256, 0, c->stream>>>(g->sum, g->prod, n2);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return sqz_cu_fail(err, "cross Gram: adding a window", e);
    return SQZ_OK;
}

void sqz_cuda_gram_close(sqz_cuda_gram *g) {
    if (!g) return;
    size_t n2 = (size_t)g->n * (size_t)g->n;
    sqz_cu_free(g->c, g->sum, n2 * sizeof(double));
    sqz_cu_free(g->c, g->prod, n2 * sizeof(float));
    sqz_cu_free(g->c, g->x, (size_t)(g->T_cap * g->n) * sizeof(float));
    free(g);
}

/* ---------------------------------------------------------------- GPTQ's factor */

/* The reversal J A J of a symmetric n × n matrix: the flat array reversed. */
template <typename T> static void reverse_flat(T *A, size_t n2) {
    for (size_t a = 0, b = n2 - 1; a < b; a++, b--) {
        T t = A[a];
        A[a] = A[b];
        A[b] = t;
    }
}

/* As chol_inverse_upper in src/quant/gptq_kernels.inc: A holds column-major lower L⁻¹ =
 * row-major M upper with M[a][b] = L⁻¹[b][a]; U[i][j] = M[n-1-j][n-1-i] (an
 * anti-transpose of the upper triangle), the lower triangle cleared. */
template <typename T> static void anti_transpose_upper(T *A, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++) {
            int64_t pi = n - 1 - j, pj = n - 1 - i;
            if (pi < i || (pi == i && pj <= j)) continue;
            T t = A[i * n + j];
            A[i * n + j] = A[pi * n + pj];
            A[pi * n + pj] = t;
        }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++) A[i * n + j] = (T)0;
}

/* A (n × n, doubles or floats as `single` says) ← the upper Cholesky factor of A⁻¹:
 * cuSOLVER's 64-bit potrf and trtri of the reversed matrix, in the precision given. */
int sqz_cuda_chol_inverse_upper(sqz_cuda *c, void *A, int64_t n, int single, sqz_err *err) {
    const size_t n2 = (size_t)n * (size_t)n, es = single ? sizeof(float) : sizeof(double);
    const cudaDataType dt = single ? CUDA_R_32F : CUDA_R_64F;
    if (single) reverse_flat((float *)A, n2); /* row-major = column-major: A is symmetric */
    else reverse_flat((double *)A, n2);
    void *d = NULL, *work = NULL, *work_h = NULL;
    size_t work_bytes = 0, work_h_bytes = 0;
    int *info_d = NULL, info = 0;
    int rc = SQZ_ERR;
    cusolverDnParams_t params = NULL;
    char what[96];
    snprintf(what, sizeof what, "GPTQ's factor of a %lld × %lld H", (long long)n, (long long)n);
    if (sqz_cu_alloc(c, &d, n2 * es, what, err) || sqz_cu_alloc(c, (void **)&info_d, sizeof(int), what, err)) goto done;
    {
        cusolverStatus_t s = cusolverDnCreateParams(&params);
        if (s != CUSOLVER_STATUS_SUCCESS) {
            solver_fail(err, "GPTQ factor: parameters", s);
            goto done;
        }
        cudaError_t e = cudaMemcpyAsync(d, A, n2 * es, cudaMemcpyHostToDevice, c->stream);
        if (e != cudaSuccess) {
            sqz_cu_fail(err, "GPTQ factor: copying H to the GPU", e);
            goto done;
        }
        s = cusolverDnXpotrf_bufferSize(c->solver, params, CUBLAS_FILL_MODE_LOWER, n, dt, d, n, dt, &work_bytes,
                                        &work_h_bytes);
        if (s != CUSOLVER_STATUS_SUCCESS) {
            solver_fail(err, "GPTQ factor: potrf workspace", s);
            goto done;
        }
        if (sqz_cu_alloc(c, &work, work_bytes ? work_bytes : 1, what, err)) goto done;
        if (work_h_bytes && !(work_h = malloc(work_h_bytes))) {
            sqz_fail(err, "cuda: out of host memory for the potrf workspace");
            goto done;
        }
        s = cusolverDnXpotrf(c->solver, params, CUBLAS_FILL_MODE_LOWER, n, dt, d, n, dt, work, work_bytes, work_h,
                             work_h_bytes, info_d);
        if (s != CUSOLVER_STATUS_SUCCESS) {
            solver_fail(err, "GPTQ factor: potrf", s);
            goto done;
        }
        if ((e = cudaMemcpyAsync(&info, info_d, sizeof(int), cudaMemcpyDeviceToHost, c->stream)) != cudaSuccess ||
            (e = cudaStreamSynchronize(c->stream)) != cudaSuccess) {
            sqz_cu_fail(err, "GPTQ factor: potrf", e);
            goto done;
        }
        if (info != 0) {
            sqz_fail(err, "gptq: H (%lld × %lld) is not positive definite after dampening (cuSOLVER potrf info %d)",
                     (long long)n, (long long)n, info);
            goto done;
        }
        /* the lower factor's inverse, in place */
        size_t dev_bytes = 0, host_bytes = 0;
        s = cusolverDnXtrtri_bufferSize(c->solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, n, dt, d, n,
                                        &dev_bytes, &host_bytes);
        if (s != CUSOLVER_STATUS_SUCCESS) {
            solver_fail(err, "GPTQ factor: trtri workspace", s);
            goto done;
        }
        void *tw = NULL, *th = host_bytes ? malloc(host_bytes) : NULL;
        if (sqz_cu_alloc(c, &tw, dev_bytes ? dev_bytes : 1, what, err)) {
            free(th);
            goto done;
        }
        s = cusolverDnXtrtri(c->solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, n, dt, d, n, tw, dev_bytes, th,
                             host_bytes, info_d);
        if (s == CUSOLVER_STATUS_SUCCESS) {
            e = cudaMemcpyAsync(&info, info_d, sizeof(int), cudaMemcpyDeviceToHost, c->stream);
            if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
        }
        sqz_cu_free(c, tw, dev_bytes ? dev_bytes : 1);
        free(th);
        if (s != CUSOLVER_STATUS_SUCCESS) {
            solver_fail(err, "GPTQ factor: trtri", s);
            goto done;
        }
        if (e != cudaSuccess) {
            sqz_cu_fail(err, "GPTQ factor: trtri", e);
            goto done;
        }
        if (info != 0) {
            sqz_fail(err, "gptq: cannot invert the Cholesky factor of H (cuSOLVER trtri info %d)", info);
            goto done;
        }
        if ((e = cudaMemcpyAsync(A, d, n2 * es, cudaMemcpyDeviceToHost, c->stream)) != cudaSuccess ||
            (e = cudaStreamSynchronize(c->stream)) != cudaSuccess) {
            sqz_cu_fail(err, "GPTQ factor: copying the factor back", e);
            goto done;
        }
    }
    if (single) anti_transpose_upper((float *)A, n);
    else anti_transpose_upper((double *)A, n);
    rc = SQZ_OK;
done:
    if (params) cusolverDnDestroyParams(params);
    free(work_h);
    sqz_cu_free(c, work, work_bytes ? work_bytes : 1);
    sqz_cu_free(c, d, n2 * es);
    sqz_cu_free(c, info_d, sizeof(int));
    return rc;
}
