/* common.cuh: what every CUDA file of the backend shares: the C headers (with C linkage), the
 * check macros that log "file:line: call: error" and return < 0 (the library never exits), the
 * backend context, activation load/store for the two activation types (float, bf16), and the
 * launchers each kernel file exports to cuda_backend.cu.
 *
 * Activations are token-major [n, width] with a row stride; a thread usually owns one channel,
 * so a warp reads 32 consecutive channels of a row (64 or 128 contiguous bytes). */
#ifndef MD_KERNELS_COMMON_CUH
#define MD_KERNELS_COMMON_CUH

#include <stdint.h>
#ifdef MD_CUDA_EMU
#include "emu/cuda_emu.h" /* CPU stand-in for tests on machines without a GPU (emu/README) */
#define MD_LAUNCH(k, grid, block, stream, ...) md_emu::launch(dim3(grid), dim3(block), [&]() { k(__VA_ARGS__); })
#else
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
/* k: a __global__ function (pointer); the stand-in needs one macro for both compilers */
#define MD_LAUNCH(k, grid, block, stream, ...) k<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#endif

extern "C" {
#include "backend.h"
#include "md.h"
#include "md_cuda.h"
}

/* Logs "[E::func] file:line: expr: CUDA error name (string)" and returns -2. */
int md_cuda_fail(const char *func, const char *file, int line, const char *expr, cudaError_t e);
int md_cublas_fail(const char *func, const char *file, int line, const char *expr, cublasStatus_t s);

#define CUDA_CHECK(call)                                                                   \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess) return md_cuda_fail(__func__, __FILE__, __LINE__, #call, e_); \
    } while (0)
#define CUBLAS_CHECK(call)                                                                   \
    do {                                                                                     \
        cublasStatus_t s_ = (call);                                                          \
        if (s_ != CUBLAS_STATUS_SUCCESS) return md_cublas_fail(__func__, __FILE__, __LINE__, #call, s_); \
    } while (0)
/* After a kernel launch: launch errors now; with MD_CUDA_SYNC=1 also execution errors, so that
 * an asynchronous fault is reported at the kernel that caused it. */
#define LAUNCH_CHECK(ctx)                                                                   \
    do {                                                                                    \
        CUDA_CHECK(cudaGetLastError());                                                     \
        if ((ctx)->debug_sync) CUDA_CHECK(cudaStreamSynchronize((ctx)->stream));            \
    } while (0)

typedef __nv_bfloat16 bf16;

typedef struct {
    int dev, bf16;                 /* act dtype: bf16 (1) or f32 (0) */
    int sm_count;
    int debug_sync;                /* MD_CUDA_SYNC=1 */
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasComputeType_t fp32_compute; /* GEMM compute type in fp32 mode (MD_CUDA_FP32_GEMM) */
    void *blas_ws;                 /* cuBLAS workspace */
    size_t blas_ws_size;
    /* every live be->alloc block, to track the peak of device memory we hold */
    void **blk;
    size_t *blk_size;
    int n_blk, m_blk;
    size_t live, peak;
    /* scan carry buffer (grown on demand) and its tuning */
    float *scan_buf;
    size_t scan_buf_size;
    int scan_nseg;                 /* target segments per scan call (MD_CUDA_SCAN_NSEG) */
    int scan_poly;                 /* sixteenths of the exp2s on the FMA pipe (MD_CUDA_SCAN_POLY) */
    int scan_version;              /* 1 (v1), 2 (v2) or 4 (v1a: v1 with cp.async input tiles); MD_CUDA_SCAN */
    /* host staging for act conversions */
    void *host_buf;
    size_t host_buf_size;
    /* pinned host blocks kept for reuse by host_alloc/host_free (kernels/pool.cu): pinning is
     * slow (milliseconds per 50 MB), and md_model_forward asks for the same buffers every call */
    struct { void *p; size_t n; int used; } pinned[4];
} cuda_ctx_t;

static inline cuda_ctx_t *CTX(md_backend_t *be) { return (cuda_ctx_t *)be->ctx; }

/* Device memory owned by the context (not be->alloc), counted in live/peak. */
void *md_cuda_ctx_alloc(cuda_ctx_t *c, size_t bytes, const char *what);

/* --- activation access ----------------------------------------------------------------------- */
__device__ __forceinline__ float ld_act(const float *p) { return __ldg(p); }
__device__ __forceinline__ float ld_act(const bf16 *p) { return __bfloat162float(__ldg(p)); }
/* plain loads for buffers the same kernel writes (no read-only cache) */
__device__ __forceinline__ float ld_rw(const float *p) { return *p; }
__device__ __forceinline__ float ld_rw(const bf16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void st_act(float *p, float v) { *p = v; }
__device__ __forceinline__ void st_act(bf16 *p, float v) { *p = __float2bfloat16_rn(v); }

__device__ __forceinline__ float fast_ex2(float x)
{
#ifdef MD_CUDA_EMU
    return exp2f(x);
#else
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#endif
}

static inline unsigned ceil_div_u(int64_t a, int64_t b) { return (unsigned)((a + b - 1) / b); }

/* --- launchers (one per op family; 0 or < 0 logged) ------------------------------------------- */
int md_cuda_embed(md_backend_t *be, int64_t n, int W, const int32_t *ids, const float *table, void *out);
int md_cuda_mul(md_backend_t *be, int64_t n, int W, void *a, int64_t lda, const void *b, int64_t ldb);
int md_cuda_add_norm(md_backend_t *be, int64_t n, int W, int group, const void *h, const float *res,
                     float *res_out, void *out, const float *w, const float *b, float eps, int swap, int rms);
int md_cuda_conv_silu(md_backend_t *be, int64_t n, int Cn, int K, const void *x, int64_t ldx, const float *w,
                      const float *b, void *out, float *state, int reverse, const uint8_t *seq_start);
int md_cuda_scan(md_backend_t *be, int64_t n, int Di, int N, int ndir, const md_scan_dir_t *dirs, void *y,
                 int64_t ldy, int accumulate, const uint8_t *seq_start);

#endif
