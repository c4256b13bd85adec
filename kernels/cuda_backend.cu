/* cuda_backend.cu: the CUDA backend (md_backend_cuda_open): context, memory, transfers with
 * bf16 <-> f32 conversion on the host, GEMMs through cuBLAS, and the op table. The ops
 * themselves live in one file per family (elementwise.cu, norm.cu, conv.cu, scan.cu).
 *
 * GEMM: C[M,N] = A[M,K] . Wt[N,K]^T with row-major A and C (row strides lda, ldc). In column-major
 * terms that is C^T[N,M] = op_T(Wt as col-major [K,N]) . (A^T as col-major [K,M]), so one
 * cublasGemmEx(OP_T, OP_N, N, M, K) with leading dimensions K, lda, ldc and no copies.
 * bf16 mode: bf16 operands, fp32 accumulation (CUBLAS_COMPUTE_32F), bf16 or fp32 output.
 * fp32 mode: fp32 everywhere, CUBLAS_COMPUTE_32F with the default math mode, i.e. no TF32
 * (TF32's ~3e-4 relative error would break the 1e-4 parity bound). */
#include <stdlib.h>
#include <string.h>

#include <thread>
#include <vector>

#include "common.cuh"

int md_cuda_fail(const char *func, const char *file, int line, const char *expr, cudaError_t e)
{
    md_log(MD_LOG_ERROR, func, "%s:%d: %s: CUDA error %s (%s)%s", file, line, expr, cudaGetErrorName(e),
           cudaGetErrorString(e),
           e == cudaErrorMemoryAllocation ? "; try a smaller window/chunk" : "");
    return -2;
}

int md_cublas_fail(const char *func, const char *file, int line, const char *expr, cublasStatus_t s)
{
    md_log(MD_LOG_ERROR, func, "%s:%d: %s: cuBLAS error %s (%s)", file, line, expr, cublasGetStatusName(s),
           cublasGetStatusString(s));
    return -2;
}

/* --- memory ---------------------------------------------------------------------------------- */

static int track_add(cuda_ctx_t *c, void *p, size_t bytes)
{
    if (c->n_blk == c->m_blk) {
        int m = c->m_blk ? 2 * c->m_blk : 256;
        void **b = (void **)realloc(c->blk, m * sizeof *b);
        if (!b) return -2;
        c->blk = b;
        size_t *s = (size_t *)realloc(c->blk_size, m * sizeof *s);
        if (!s) return -2;
        c->blk_size = s;
        c->m_blk = m;
    }
    c->blk[c->n_blk] = p;
    c->blk_size[c->n_blk++] = bytes;
    c->live += bytes;
    if (c->live > c->peak) c->peak = c->live;
    return 0;
}

static void track_del(cuda_ctx_t *c, void *p)
{
    for (int i = c->n_blk - 1; i >= 0; i--)
        if (c->blk[i] == p) {
            c->live -= c->blk_size[i];
            c->blk[i] = c->blk[c->n_blk - 1];
            c->blk_size[i] = c->blk_size[c->n_blk - 1];
            c->n_blk--;
            return;
        }
}

static void *dev_alloc(cuda_ctx_t *c, size_t bytes, const char *func, const char *what)
{
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 256);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky-free allocation error */
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        md_log(MD_LOG_ERROR, func,
               "out of GPU memory: %s needs %.1f MiB, %.1f MiB free of %.1f MiB (this backend holds %.1f MiB); "
               "use a smaller window or chunk (%s)",
               what, bytes / 1048576.0, fr / 1048576.0, tot / 1048576.0, c->live / 1048576.0, cudaGetErrorName(e));
        return NULL;
    }
    if (track_add(c, p, bytes) < 0) {
        cudaFree(p);
        md_log(MD_LOG_ERROR, func, "out of host memory");
        return NULL;
    }
    return p;
}

void *md_cuda_ctx_alloc(cuda_ctx_t *c, size_t bytes, const char *what)
{
    return dev_alloc(c, bytes, __func__, what);
}

static void *cu_alloc(md_backend_t *be, size_t bytes)
{
    return dev_alloc(CTX(be), bytes, __func__, "a buffer");
}

static void cu_free(md_backend_t *be, void *p)
{
    if (!p) return;
    cuda_ctx_t *c = CTX(be);
    /* the stream may still use p: cudaFree synchronises the device, which is what we want */
    cudaError_t e = cudaFree(p);
    if (e != cudaSuccess) md_cuda_fail(__func__, __FILE__, __LINE__, "cudaFree", e);
    track_del(c, p);
}

static int cu_upload(md_backend_t *be, void *dst, const void *src, size_t bytes)
{
    cuda_ctx_t *c = CTX(be);
    if (!bytes) return 0;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return 0;
}

static int cu_download(md_backend_t *be, void *dst, const void *src, size_t bytes)
{
    cuda_ctx_t *c = CTX(be);
    if (!bytes) return 0;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return 0;
}

static int cu_zero(md_backend_t *be, void *dst, size_t bytes)
{
    cuda_ctx_t *c = CTX(be);
    if (!bytes) return 0;
    CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, c->stream));
    return 0;
}

static void *host_staging(cuda_ctx_t *c, size_t bytes)
{
    if (c->host_buf_size < bytes) {
        cudaFreeHost(c->host_buf);
        c->host_buf = NULL;
        c->host_buf_size = 0;
        if (cudaMallocHost(&c->host_buf, bytes) != cudaSuccess) {
            cudaGetLastError();
            md_error("out of pinned host memory (%.1f MiB)", bytes / 1048576.0);
            return NULL;
        }
        c->host_buf_size = bytes;
    }
    return c->host_buf;
}

/* bf16 <-> f32 on the host: round to nearest even, NaN kept quiet. */
static inline float bf16_bits_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t f32_to_bf16_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* Converted in pieces through a pinned staging buffer of 32 MiB, on up to be->n_threads host
 * threads (the plan downloads every hidden state through here: 268 M values at L = 1M). */
#define STAGE_ELEMS ((int64_t)16 << 20)

template <typename F>
static void host_parallel(int64_t n, int nthreads, F fn)
{
    int nt = nthreads;
    if ((int64_t)nt > n / (1 << 18) + 1) nt = (int)(n / (1 << 18) + 1); /* >= 256 k elements each */
    if (nt <= 1) {
        fn((int64_t)0, n);
        return;
    }
    std::vector<std::thread> th;
    th.reserve(nt);
    for (int i = 0; i < nt; i++) {
        int64_t a = n * i / nt, b = n * (i + 1) / nt;
        th.emplace_back([=] { fn(a, b); });
    }
    for (auto &t : th) t.join();
}

static int cu_download_act(md_backend_t *be, float *dst, const void *src, int64_t n)
{
    cuda_ctx_t *c = CTX(be);
    if (n <= 0) return 0;
    if (!c->bf16) return cu_download(be, dst, src, (size_t)n * sizeof(float));
    uint16_t *h = (uint16_t *)host_staging(c, (size_t)(n < STAGE_ELEMS ? n : STAGE_ELEMS) * 2);
    if (!h) return -2;
    for (int64_t o = 0; o < n; o += STAGE_ELEMS) {
        int64_t m = n - o < STAGE_ELEMS ? n - o : STAGE_ELEMS;
        CUDA_CHECK(cudaMemcpyAsync(h, (const uint16_t *)src + o, m * 2, cudaMemcpyDeviceToHost, c->stream));
        CUDA_CHECK(cudaStreamSynchronize(c->stream));
        float *d = dst + o;
        host_parallel(m, be->n_threads, [=](int64_t a, int64_t b) {
            for (int64_t i = a; i < b; i++) d[i] = bf16_bits_to_f32(h[i]);
        });
    }
    return 0;
}

static int cu_upload_act(md_backend_t *be, void *dst, const float *src, int64_t n)
{
    cuda_ctx_t *c = CTX(be);
    if (n <= 0) return 0;
    if (!c->bf16) return cu_upload(be, dst, src, (size_t)n * sizeof(float));
    uint16_t *h = (uint16_t *)host_staging(c, (size_t)(n < STAGE_ELEMS ? n : STAGE_ELEMS) * 2);
    if (!h) return -2;
    for (int64_t o = 0; o < n; o += STAGE_ELEMS) {
        int64_t m = n - o < STAGE_ELEMS ? n - o : STAGE_ELEMS;
        const float *sp = src + o;
        host_parallel(m, be->n_threads, [=](int64_t a, int64_t b) {
            for (int64_t i = a; i < b; i++) h[i] = f32_to_bf16_bits(sp[i]);
        });
        CUDA_CHECK(cudaMemcpyAsync((uint16_t *)dst + o, h, m * 2, cudaMemcpyHostToDevice, c->stream));
        CUDA_CHECK(cudaStreamSynchronize(c->stream));
    }
    return 0;
}

static int cu_sync(md_backend_t *be)
{
    cudaError_t e = cudaStreamSynchronize(CTX(be)->stream);
    if (e != cudaSuccess) {
        md_error("CUDA error during the queued kernels: %s (%s); rerun with MD_CUDA_SYNC=1 to find the kernel",
                 cudaGetErrorName(e), cudaGetErrorString(e));
        return -2;
    }
    return 0;
}

static int64_t cu_mem_free(md_backend_t *be)
{
    (void)be;
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    return (int64_t)fr;
}

static void cu_destroy(md_backend_t *be)
{
    if (!be) return;
    cuda_ctx_t *c = CTX(be);
    if (c) {
        cudaStreamSynchronize(c->stream);
        if (c->n_blk > 0)
            md_debug("%d device blocks (%.1f MiB) still allocated at destroy; freeing them", c->n_blk,
                     c->live / 1048576.0);
        if (c->blas) cublasDestroy(c->blas);
        for (int i = 0; i < c->n_blk; i++) cudaFree(c->blk[i]);
        if (c->stream) cudaStreamDestroy(c->stream);
        cudaFreeHost(c->host_buf);
        void md_cuda_pinned_release(cuda_ctx_t *c); /* kernels/pool.cu */
        md_cuda_pinned_release(c);
        free(c->blk);
        free(c->blk_size);
        free(c);
    }
    free(be);
}

/* --- weights and GEMM ------------------------------------------------------------------------ */

static void *cu_upload_matrix(md_backend_t *be, const float *host, int rows, int cols)
{
    cuda_ctx_t *c = CTX(be);
    int64_t n = (int64_t)rows * cols;
    void *d = dev_alloc(c, (size_t)n * (c->bf16 ? 2 : 4), __func__, "a weight matrix");
    if (!d) return NULL;
    if (cu_upload_act(be, d, host, n) < 0) {
        cu_free(be, d);
        return NULL;
    }
    return d;
}

static int cu_gemm(md_backend_t *be, int64_t M, int N, int K, const void *A, int64_t lda, const void *Wt, void *C,
                   int64_t ldc, int accumulate, int c_f32)
{
    cuda_ctx_t *c = CTX(be);
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) {
        md_error("GEMM with K = %d", K);
        return -2;
    }
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    const cudaDataType_t ab = c->bf16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasComputeType_t comp = c->bf16 ? CUBLAS_COMPUTE_32F : c->fp32_compute;
    const cudaDataType_t ct = (c->bf16 && !c_f32) ? CUDA_R_16BF : CUDA_R_32F;
    const size_t asz = c->bf16 ? 2 : 4, csz = ct == CUDA_R_16BF ? 2 : 4;
    /* rows in blocks that keep every cuBLAS dimension and offset inside int */
    const int64_t RB = (int64_t)1 << 28;
    for (int64_t r0 = 0; r0 < M; r0 += RB) {
        int64_t mr = M - r0 < RB ? M - r0 : RB;
        const void *Ar = (const char *)A + (size_t)r0 * lda * asz;
        void *Cr = (char *)C + (size_t)r0 * ldc * csz;
        cublasStatus_t st = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, (int)mr, K, &alpha, Wt, ab, K, Ar, ab,
                                         (int)lda, &beta, Cr, ct, (int)ldc, comp, CUBLAS_GEMM_DEFAULT);
        if (st == CUBLAS_STATUS_NOT_SUPPORTED && comp != CUBLAS_COMPUTE_32F) {
            md_warn("fp32 GEMM compute type %d not supported here; using plain fp32", (int)comp);
            c->fp32_compute = CUBLAS_COMPUTE_32F;
            st = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, (int)mr, K, &alpha, Wt, ab, K, Ar, ab, (int)lda,
                              &beta, Cr, ct, (int)ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        }
        CUBLAS_CHECK(st);
    }
    LAUNCH_CHECK(c);
    return 0;
}

/* --- open ------------------------------------------------------------------------------------ */

int md_cuda_device_count(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        md_debug("no usable CUDA driver/device: %s", cudaGetErrorString(e));
        return 0;
    }
    return n;
}

int md_cuda_mem_stats(md_backend_t *be, md_cuda_mem_t *m)
{
    cuda_ctx_t *c = CTX(be);
    memset(m, 0, sizeof *m);
    m->live = c->live;
    m->peak = c->peak;
    CUDA_CHECK(cudaMemGetInfo(&m->free, &m->total));
    return 0;
}

void md_cuda_reset_peak(md_backend_t *be) { CTX(be)->peak = CTX(be)->live; }

static int ctx_init(cuda_ctx_t *c)
{
    CUDA_CHECK(cudaSetDevice(c->dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&c->sm_count, cudaDevAttrMultiProcessorCount, c->dev));
    CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasCreate(&c->blas));
    CUBLAS_CHECK(cublasSetStream(c->blas, c->stream));
    CUBLAS_CHECK(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH)); /* no TF32 in fp32 mode */
    c->blas_ws_size = (size_t)32 << 20;
    c->blas_ws = dev_alloc(c, c->blas_ws_size, __func__, "the cuBLAS workspace");
    if (!c->blas_ws) return -2;
    CUBLAS_CHECK(cublasSetWorkspace(c->blas, c->blas_ws, c->blas_ws_size));
    if (c->fp32_compute == CUBLAS_COMPUTE_32F_EMULATED_16BFX9)
        CUBLAS_CHECK(cublasSetEmulationStrategy(c->blas, CUBLAS_EMULATION_STRATEGY_EAGER));
    return 0;
}

md_backend_t *md_backend_cuda_open(const char *precision, int n_threads)
{
    int bf = 1;
    if (precision && !strcmp(precision, "fp32")) bf = 0;
    else if (precision && strcmp(precision, "bf16")) {
        md_error("unknown precision '%s' (fp32 or bf16)", precision);
        return NULL;
    }
    int ndev = md_cuda_device_count();
    if (ndev <= 0) {
        md_error("no CUDA device found (use -d cpu)");
        return NULL;
    }
    md_backend_t *be = (md_backend_t *)md_calloc(1, sizeof *be);
    cuda_ctx_t *c = (cuda_ctx_t *)md_calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return NULL;
    }
    be->ctx = c;
    c->bf16 = bf;
    const char *e = getenv("MD_CUDA_DEVICE");
    c->dev = e ? atoi(e) : 0;
    if (c->dev < 0 || c->dev >= ndev) {
        md_error("MD_CUDA_DEVICE=%d but there are %d devices", c->dev, ndev);
        cu_destroy(be);
        return NULL;
    }
    e = getenv("MD_CUDA_SYNC");
    c->debug_sync = e && atoi(e) > 0;
    e = getenv("MD_CUDA_SCAN_NSEG");
    c->scan_nseg = e ? atoi(e) : 0;
    /* fp32 mode GEMMs: "sgemm" (default, CUDA cores), "bf16x9" (cuBLAS FP32 emulation on bf16
     * tensor cores, ~fp32 accuracy), "tf32" (fast, ~3e-4 relative error: outside the parity bound) */
    c->fp32_compute = CUBLAS_COMPUTE_32F;
    e = getenv("MD_CUDA_FP32_GEMM");
    if (e && !strcmp(e, "bf16x9")) c->fp32_compute = CUBLAS_COMPUTE_32F_EMULATED_16BFX9;
    else if (e && !strcmp(e, "tf32")) c->fp32_compute = CUBLAS_COMPUTE_32F_FAST_TF32;
    else if (e && strcmp(e, "sgemm")) md_warn("MD_CUDA_FP32_GEMM=%s unknown (sgemm, bf16x9, tf32); using sgemm", e);
    e = getenv("MD_CUDA_SCAN_POLY");
    c->scan_poly = e ? atoi(e) : 0;
    /* scan kernel: "v1a" (the default for d_state 16: v1 with its inputs staged in shared memory
     * by cp.async; 16.3 ms per layer at 1 M on the H100), "v1" (3-pass segmented, inputs loaded
     * per position; 24.2 ms; all other shapes) or "v2" (exp2 once per update; 33.3 ms); measured
     * in kernels/NOTES.md */
    e = getenv("MD_CUDA_SCAN");
    c->scan_version = 4;
    if (e && !strcmp(e, "v2")) c->scan_version = 2;
    else if (e && !strcmp(e, "v1")) c->scan_version = 1;
    else if (e && strcmp(e, "v1a")) md_warn("MD_CUDA_SCAN=%s unknown (v1a, v1, v2); using v1a", e);
    if (ctx_init(c) < 0) {
        cu_destroy(be);
        return NULL;
    }
    be->name = "cuda";
    be->act_dtype = bf ? MD_DT_BF16 : MD_DT_F32;
    /* Positions per chunk of the model plan. Above it the plan walks every direction over
     * chunks (in_proj twice, ndir=1 scans); at or below it, in_proj runs once and both scan
     * directions share one launch. The plan's chunk buffers cost ~8.4 KB per position in bf16
     * (twice in fp32) beside the whole-batch hidden + residual (6 B per position and channel in
     * bf16): 49152 keeps Caduceus-Ph d256 at L = 1M under 2 GiB (1.61 GB + 0.42 GB + workspaces).
     * MD_CUDA_CHUNK overrides (131072 puts L = 131072 on the one-chunk path). */
    e = getenv("MD_CUDA_CHUNK");
    be->chunk = e && atoll(e) > 0 ? atoll(e) : 49152;
    if (n_threads <= 0) n_threads = (int)std::thread::hardware_concurrency();
    be->n_threads = n_threads > 0 ? (n_threads < 64 ? n_threads : 64) : 1;
    be->alloc = cu_alloc;
    be->free = cu_free;
    be->upload = cu_upload;
    be->download = cu_download;
    be->zero = cu_zero;
    be->download_act = cu_download_act;
    be->upload_act = cu_upload_act;
    be->sync = cu_sync;
    be->destroy = cu_destroy;
    be->mem_free = cu_mem_free;
    be->upload_matrix = cu_upload_matrix;
    be->embed = md_cuda_embed;
    be->add_norm = md_cuda_add_norm;
    be->gemm = cu_gemm;
    be->conv_silu = md_cuda_conv_silu;
    be->scan = md_cuda_scan;
    be->mul = md_cuda_mul;
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, c->dev) == cudaSuccess)
        md_info("CUDA device %d: %s, %d SMs, %.1f GiB, %s activations", c->dev, prop.name, c->sm_count,
                prop.totalGlobalMem / 1073741824.0, bf ? "bf16" : "fp32");
    void md_cuda_pool_ops(md_backend_t *be); /* kernels/pool.cu: pool_sum, gather_rows, host buffers */
    md_cuda_pool_ops(be);
    return be;
}
