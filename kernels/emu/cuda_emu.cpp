/* cuda_emu.cpp: the CPU stand-in declared in cuda_emu.h (coroutine blocks, host-memory runtime,
 * reference cublasGemmEx). Single OS thread; deterministic. */
#include "cuda_emu.h"

#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

dim3 gridDim, blockDim;
uint3 blockIdx, threadIdx;

namespace md_emu {

struct fiber_t {
    ucontext_t ctx;
    char *stack;
    int done;
    uint3 tid;
};

static const size_t STACK = 256 * 1024;
static fiber_t *fibers;
static int n_fibers;
static ucontext_t sched;
static fiber_t *cur;
static const std::function<void()> *body;
static float xch[1024];

static void trampoline(void)
{
    (*body)();
    cur->done = 1;
    swapcontext(&cur->ctx, &sched);
}

void yield_barrier(void)
{
    if (!cur) return;
    swapcontext(&cur->ctx, &sched);
}

float shfl_xor(float v, int o)
{
    const int t = (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
    xch[t] = v;
    yield_barrier();
    float r = xch[t ^ o];
    yield_barrier();
    return r;
}

/* lanes below d keep their own value (width 32) */
float shfl_up(float v, unsigned d)
{
    const int t = (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
    xch[t] = v;
    yield_barrier();
    float r = (unsigned)(t & 31) >= d ? xch[t - (int)d] : v;
    yield_barrier();
    return r;
}

void launch(dim3 grid, dim3 block, const std::function<void()> &fn)
{
    const int nt = (int)(block.x * block.y * block.z);
    if (nt <= 0 || nt > 1024 || grid.y > 65535 || grid.z > 65535) {
        fprintf(stderr, "cuda_emu: bad launch (%u,%u,%u) x (%u,%u,%u)\n", grid.x, grid.y, grid.z, block.x, block.y,
                block.z);
        abort();
    }
    if (nt > n_fibers) {
        fiber_t *f = (fiber_t *)realloc(fibers, nt * sizeof *f);
        if (!f) abort();
        fibers = f;
        for (int i = n_fibers; i < nt; i++) {
            fibers[i].stack = (char *)malloc(STACK);
            if (!fibers[i].stack) abort();
        }
        n_fibers = nt;
    }
    gridDim = grid;
    blockDim = block;
    body = &fn;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx = uint3{ bx, by, bz };
                for (int i = 0; i < nt; i++) {
                    fiber_t *f = &fibers[i];
                    getcontext(&f->ctx);
                    f->ctx.uc_stack.ss_sp = f->stack;
                    f->ctx.uc_stack.ss_size = STACK;
                    f->ctx.uc_link = NULL;
                    makecontext(&f->ctx, trampoline, 0);
                    f->done = 0;
                    f->tid = uint3{ i % block.x, (i / block.x) % block.y, i / (block.x * block.y) };
                }
                int alive = nt;
                while (alive > 0) {
                    for (int i = 0; i < nt; i++) {
                        fiber_t *f = &fibers[i];
                        if (f->done) continue;
                        cur = f;
                        threadIdx = f->tid;
                        swapcontext(&sched, &f->ctx);
                        if (f->done) alive--;
                    }
                }
                cur = NULL;
            }
}

} // namespace md_emu

/* --- runtime --------------------------------------------------------------------------------- */

cudaError_t cudaGetDeviceCount(int *n)
{
    const char *e = getenv("MD_CUDA_EMU_DEVICES");
    *n = e ? atoi(e) : 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int)
{
    *v = a == cudaDevAttrMultiProcessorCount ? 132 : 0;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int)
{
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cuda_emu (CPU stand-in)");
    p->totalGlobalMem = (size_t)80 << 30;
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t n)
{
    *p = n > ((size_t)64 << 30) ? NULL : malloc(n);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void *p)
{
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMallocHost(void **p, size_t n) { return cudaMalloc(p, n); }
cudaError_t cudaFreeHost(void *p) { return cudaFree(p); }
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind, cudaStream_t)
{
    memmove(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *dst, int v, size_t n, cudaStream_t)
{
    memset(dst, v, n);
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned)
{
    *s = (cudaStream_t)malloc(1);
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    free(s);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t *fr, size_t *tot)
{
    *fr = (size_t)70 << 30;
    *tot = (size_t)80 << 30;
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
const char *cudaGetErrorName(cudaError_t e)
{
    return e == cudaSuccess ? "cudaSuccess" : e == cudaErrorMemoryAllocation ? "cudaErrorMemoryAllocation" : "cudaError";
}
const char *cudaGetErrorString(cudaError_t e) { return e == cudaErrorMemoryAllocation ? "out of memory" : "error"; }

/* --- cuBLAS ---------------------------------------------------------------------------------- */

cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    *h = (cublasHandle_t)malloc(1);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetWorkspace(cublasHandle_t, void *, size_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetEmulationStrategy(cublasHandle_t, cublasEmulationStrategy_t) { return CUBLAS_STATUS_SUCCESS; }
const char *cublasGetStatusName(cublasStatus_t s) { return s ? "CUBLAS_STATUS_ERROR" : "CUBLAS_STATUS_SUCCESS"; }
const char *cublasGetStatusString(cublasStatus_t s) { return s ? "error" : "success"; }

static inline float ld(const void *p, cudaDataType_t t, size_t i)
{
    return t == CUDA_R_16BF ? __bfloat162float(((const __nv_bfloat16 *)p)[i]) : ((const float *)p)[i];
}

/* C[m x n] = alpha op(A)[m x k] op(B)[k x n] + beta C, column-major. */
cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha_, const void *A, cudaDataType_t at, int lda, const void *B,
                            cudaDataType_t bt, int ldb, const void *beta_, void *C, cudaDataType_t ct, int ldc,
                            cublasComputeType_t comp, cublasGemmAlgo_t)
{
    if (comp == CUBLAS_COMPUTE_32F_FAST_TF32 || comp == CUBLAS_COMPUTE_32F_EMULATED_16BFX9) {
        if (getenv("MD_CUDA_EMU_NOT_SUPPORTED")) return CUBLAS_STATUS_NOT_SUPPORTED; /* to test the fallback */
    } else if (comp != CUBLAS_COMPUTE_32F) {
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (lda < (ta == CUBLAS_OP_N ? m : k) || ldb < (tb == CUBLAS_OP_N ? k : n) || ldc < m || lda < 1 || ldb < 1)
        return CUBLAS_STATUS_INVALID_VALUE;
    const float alpha = *(const float *)alpha_, beta = *(const float *)beta_;
#pragma omp parallel for schedule(dynamic, 16)
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double acc = 0;
            for (int l = 0; l < k; l++) {
                float a = ta == CUBLAS_OP_N ? ld(A, at, (size_t)i + (size_t)l * lda) : ld(A, at, (size_t)l + (size_t)i * lda);
                float b = tb == CUBLAS_OP_N ? ld(B, bt, (size_t)l + (size_t)j * ldb) : ld(B, bt, (size_t)j + (size_t)l * ldb);
                acc += (double)a * b;
            }
            size_t ci = (size_t)i + (size_t)j * ldc;
            float v = alpha * (float)acc;
            if (beta != 0.0f) v += beta * ld(C, ct, ci);
            if (ct == CUDA_R_16BF) ((__nv_bfloat16 *)C)[ci] = __float2bfloat16_rn(v);
            else ((float *)C)[ci] = v;
        }
    return CUBLAS_STATUS_SUCCESS;
}
