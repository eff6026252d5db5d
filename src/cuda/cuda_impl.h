/* What the CUDA backend's .cu files share (never included outside src/cuda/): the device
 * handle and the checked allocation and error helpers of backend.cu. */
#ifndef SQZ_CUDA_IMPL_H
#define SQZ_CUDA_IMPL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include "cuda_backend.h"

#define SQZ_CUDA_STAGE ((size_t)1 << 23) /* doubles (64 MiB) per copy of a sum to the host */

struct sqz_cuda {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    cusolverDnHandle_t solver;
    uint64_t live, peak; /* bytes this backend holds now / at most */
    double *host_stage;  /* pinned, SQZ_CUDA_STAGE doubles: sums come back through it */
};

/* An error naming the stage and CUDA's (cuBLAS's) own text; returns SQZ_ERR. */
int sqz_cu_fail(sqz_err *err, const char *stage, cudaError_t e);
int sqz_cu_blas_fail(sqz_err *err, const char *stage, cublasStatus_t s);
/* cudaMalloc counted in c's live/peak bytes; out of memory names `what`, the bytes asked
 * and the bytes free. */
int sqz_cu_alloc(sqz_cuda *c, void **p, size_t bytes, const char *what, sqz_err *err);
void sqz_cu_free(sqz_cuda *c, void *p, size_t bytes);

#endif
