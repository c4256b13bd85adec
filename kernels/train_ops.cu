/* train_ops.cu: the CUDA training op table (lib/train_ops.h, md_train_ops_cuda): every backward
 * op, the loss, AdamW and the helpers, with the contracts of the CPU oracle lib/train_ops_cpu.c.
 * The selective scan forward/backward come from train_scan.cu (md_cuda_tscan_fwd/bwd).
 *
 * Determinism: no float atomics. Every reduction is split into fixed work units whose partial
 * results go to a scratch buffer, then a second kernel sums the partials in unit order (in
 * double where the CPU uses double), so results depend only on the shapes, not on scheduling.
 *   embed_bwd   (row block, column) partial tables [blocks, V, W], then a sum over blocks;
 *   add_norm_bwd one warp per row (the row in registers, as the forward); each warp keeps its
 *               dw/db columns in registers over a fixed set of rows, then a sum over warps;
 *   conv_silu_bwd one thread per (channel, tile of scan positions): the pre-activation and its
 *               gradient are recomputed over the tile plus K-1 positions, so dx of the tile is
 *               finished in the same pass (no [n, C] scratch); dw/db per tile, then a sum;
 *   xent, sumsq one thread per row/element, shared-memory tree per block, then a sum.
 * GEMMs through cuBLAS (cublasGemmEx) in the column-major view of the row-major operands:
 *   dA[M,K] = dC[M,N] . W[N,K]      ->  dA^T = W^T . dC^T    (OP_N, OP_N; m=K, n=M, k=N)
 *   dW[N,K] += dC[M,N]^T . A[M,K]   ->  dW^T += A^T . dC     (OP_N, OP_T; m=K, n=N, k=M)
 * bf16 mode: bf16 operands, fp32 accumulation, dW in fp32; an F32 dC (dc_f32) is first rounded
 * to bf16 in scratch. fp32 mode: the backend's fp32 compute type (CUBLAS_COMPUTE_32F by
 * default, no TF32). Scratch comes from the stream-ordered allocator (cudaMallocAsync), so it
 * does not synchronise the device; it is not counted in md_cuda_mem_stats' live/peak. */
#include <math.h>
#include <string.h>

#include "common.cuh"
#include "train_scan.cuh"

extern "C" {
#include "train_ops.h"
}

/* --- scratch ---------------------------------------------------------------------------------- */

static void *scratch_alloc(cuda_ctx_t *c, size_t bytes, const char *what)
{
    void *p = NULL;
#ifdef MD_CUDA_EMU
    (void)c;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 16);
#else
    cudaError_t e = cudaMallocAsync(&p, bytes ? bytes : 16, c->stream);
#endif
    if (e != cudaSuccess) {
        cudaGetLastError();
        md_error("out of GPU memory: %s scratch needs %.1f MiB (%s); use a shorter sequence or smaller batch", what,
                 bytes / 1048576.0, cudaGetErrorName(e));
        return NULL;
    }
    return p;
}

static void scratch_free(cuda_ctx_t *c, void *p)
{
    if (!p) return;
#ifdef MD_CUDA_EMU
    (void)c;
    cudaFree(p);
#else
    cudaError_t e = cudaFreeAsync(p, c->stream);
    if (e != cudaSuccess) md_cuda_fail(__func__, __FILE__, __LINE__, "cudaFreeAsync", e);
#endif
}

/* Grid of 2-D elementwise kernels: columns in blocks of bx threads along x, rows along y
 * (looped when more than 65535). */
static dim3 tr_grid2(int64_t rows, int cols, int bx)
{
    int64_t gy = rows < 65535 ? rows : 65535;
    return dim3(ceil_div_u(cols, bx), (unsigned)(gy > 0 ? gy : 1));
}
static int tr_bx(int cols) { return cols >= 256 ? 256 : ((cols + 31) / 32) * 32; }

__device__ __forceinline__ float tr_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Block of 256 threads: sums acc[0..NV) of every thread into thread 0's (fixed tree order).
 * Every thread of the block must call it. */
#define TR_RED_THREADS 256
template <int NV>
__device__ __forceinline__ void tr_block_sum(double (&acc)[NV])
{
    __shared__ double red[NV][TR_RED_THREADS];
    const int t = threadIdx.x;
#pragma unroll
    for (int k = 0; k < NV; k++) red[k][t] = acc[k];
    __syncthreads();
    for (int h = TR_RED_THREADS / 2; h > 0; h >>= 1) {
        if (t < h) {
#pragma unroll
            for (int k = 0; k < NV; k++) red[k][t] += red[k][t + h];
        }
        __syncthreads();
    }
#pragma unroll
    for (int k = 0; k < NV; k++) acc[k] = red[k][0];
}

/* --- embedding -------------------------------------------------------------------------------- */

/* range[0] = min id, range[1] = max id (one block). */
__global__ void tr_id_range_kernel(int64_t n, const int32_t *__restrict__ ids, int32_t *range)
{
    __shared__ int32_t lo[TR_RED_THREADS], hi[TR_RED_THREADS];
    const int t = threadIdx.x;
    int32_t a = 2147483647, b = -2147483647 - 1;
    for (int64_t i = t; i < n; i += TR_RED_THREADS) {
        int32_t v = __ldg(ids + i);
        a = v < a ? v : a;
        b = v > b ? v : b;
    }
    lo[t] = a;
    hi[t] = b;
    __syncthreads();
    for (int h = TR_RED_THREADS / 2; h > 0; h >>= 1) {
        if (t < h) {
            lo[t] = lo[t + h] < lo[t] ? lo[t + h] : lo[t];
            hi[t] = hi[t + h] > hi[t] ? hi[t + h] : hi[t];
        }
        __syncthreads();
    }
    if (t == 0) {
        range[0] = lo[0];
        range[1] = hi[0];
    }
}

/* part[blk, ids[i], j] += dout[i, j] over the rows of block blk (one thread per column owns its
 * entries, so plain read-modify-writes). */
__global__ void tr_embed_part_kernel(int64_t n, int W, int V, int64_t rows_per_blk, const int32_t *__restrict__ ids,
                                     const float *__restrict__ dout, float *part)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= W) return;
    const int64_t i0 = (int64_t)blockIdx.y * rows_per_blk, i1 = i0 + rows_per_blk < n ? i0 + rows_per_blk : n;
    float *p = part + (int64_t)blockIdx.y * V * W + j;
    for (int64_t i = i0; i < i1; i++) p[(int64_t)__ldg(ids + i) * W] += __ldg(dout + i * W + j);
}

__global__ void tr_embed_sum_kernel(int64_t VW, int nblk, const float *__restrict__ part, float *dtable)
{
    const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= VW) return;
    double s = 0;
    for (int b = 0; b < nblk; b++) s += part[(int64_t)b * VW + e];
    dtable[e] += (float)s;
}

static int cu_embed_bwd(md_backend_t *be, int64_t n, int W, const int32_t *ids, const float *dout, float *dtable)
{
    cuda_ctx_t *c = CTX(be);
    if (n <= 0 || W <= 0) return 0;
    /* the table's height is not an argument: take it from the largest id */
    int32_t *range = (int32_t *)scratch_alloc(c, 2 * sizeof(int32_t), "embedding backward");
    if (!range) return -2;
    int32_t hr[2];
    MD_LAUNCH(tr_id_range_kernel, 1, TR_RED_THREADS, c->stream, n, ids, range);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaMemcpyAsync(hr, range, sizeof hr, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    scratch_free(c, range);
    CUDA_CHECK(e);
    if (hr[0] < 0) {
        md_error("token id %d < 0 in the embedding backward", hr[0]);
        return -2;
    }
    const int V = hr[1] + 1;
    /* row blocks: enough for the GPU, and partial tables of at most 64 M floats */
    int64_t nblk = (n + 511) / 512;
    if (nblk > 1024) nblk = 1024;
    int64_t cap = ((int64_t)64 << 20) / ((int64_t)V * W);
    if (cap < 1) cap = 1;
    if (nblk > cap) nblk = cap;
    if (nblk > 65535) nblk = 65535;
    const int64_t rpb = (n + nblk - 1) / nblk;
    nblk = (n + rpb - 1) / rpb;
    const size_t pbytes = (size_t)nblk * V * W * sizeof(float);
    float *part = (float *)scratch_alloc(c, pbytes, "embedding backward");
    if (!part) return -2;
    int ret = -2;
    e = cudaMemsetAsync(part, 0, pbytes, c->stream);
    if (e == cudaSuccess) {
        MD_LAUNCH(tr_embed_part_kernel, dim3(ceil_div_u(W, 128), (unsigned)nblk), 128, c->stream, n, W, V, rpb, ids,
                  dout, part);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) {
        const int64_t VW = (int64_t)V * W;
        MD_LAUNCH(tr_embed_sum_kernel, ceil_div_u(VW, 256), 256, c->stream, VW, (int)nblk, part, dtable);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess && c->debug_sync) e = cudaStreamSynchronize(c->stream);
    if (e == cudaSuccess) ret = 0;
    else md_cuda_fail(__func__, __FILE__, __LINE__, "embedding backward kernels", e);
    scratch_free(c, part);
    return ret;
}

/* --- add + norm ------------------------------------------------------------------------------- */

/* One warp per row, rows gw, gw + nwarps, ...; lane holds columns lane + 32 i. part [nwarps, 2, W]:
 * the warp's sums of dout * xhat (dw) and dout (db). */
template <typename T, int VPT>
__global__ void __launch_bounds__(256) tr_norm_bwd_kernel(int64_t n, int W, int group, const float *__restrict__ s,
                                                          const T *__restrict__ dout, const float *dres, float *dsum,
                                                          const float *__restrict__ w, float *__restrict__ part,
                                                          float eps, int swap, int rms)
{
    const int lane = threadIdx.x & 31;
    const int64_t gw = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int64_t nw = (int64_t)gridDim.x * (blockDim.x >> 5);
    const int half = W >> 1;
    const float inv_g = 1.0f / group;
    float aw[VPT], ab[VPT], wj[VPT];
#pragma unroll
    for (int i = 0; i < VPT; i++) {
        int j = lane + 32 * i;
        aw[i] = ab[i] = 0.0f;
        wj[i] = j < W ? __ldg(w + j) : 0.0f;
    }
    for (int64_t row = gw; row < n; row += nw) {
        float v[VPT], g[VPT];
#pragma unroll
        for (int i = 0; i < VPT; i++) {
            int j = lane + 32 * i;
            v[i] = j < W ? __ldg(s + row * W + j) : 0.0f;
            g[i] = j < W ? ld_act(dout + row * W + j) : 0.0f;
        }
        for (int g0 = 0; g0 < W; g0 += group) {
            const int g1 = g0 + group;
            float mean = 0.0f;
            if (!rms) {
                float a = 0.0f;
#pragma unroll
                for (int i = 0; i < VPT; i++) {
                    int j = lane + 32 * i;
                    if (j >= g0 && j < g1) a += v[i];
                }
                mean = tr_warp_sum(a) * inv_g;
            }
            float q = 0.0f;
#pragma unroll
            for (int i = 0; i < VPT; i++) {
                int j = lane + 32 * i;
                if (j >= g0 && j < g1) q += (v[i] - mean) * (v[i] - mean);
            }
            const float rstd = 1.0f / sqrtf(tr_warp_sum(q) * inv_g + eps);
            float m0 = 0.0f, m1 = 0.0f;
#pragma unroll
            for (int i = 0; i < VPT; i++) {
                int j = lane + 32 * i;
                if (j >= g0 && j < g1) {
                    float xh = (v[i] - mean) * rstd, gv = g[i] * wj[i];
                    m0 += gv;
                    m1 += gv * xh;
                    aw[i] += g[i] * xh;
                    ab[i] += g[i];
                }
            }
            m0 = tr_warp_sum(m0);
            m1 = tr_warp_sum(m1);
            const float fm0 = rms ? 0.0f : m0 * inv_g, fm1 = m1 * inv_g;
#pragma unroll
            for (int i = 0; i < VPT; i++) {
                int j = lane + 32 * i;
                if (j >= g0 && j < g1) {
                    float xh = (v[i] - mean) * rstd, gv = g[i] * wj[i];
                    g[i] = rstd * (gv - fm0 - xh * fm1) + (dres ? dres[row * W + j] : 0.0f); /* g: now dL/ds */
                }
            }
        }
        __syncwarp(); /* dsum may alias dres: every lane has read its dres before any writes */
#pragma unroll
        for (int i = 0; i < VPT; i++) {
            int j = lane + 32 * i;
            if (j < W) dsum[row * W + (swap ? (j < half ? j + half : j - half) : j)] = g[i];
        }
        __syncwarp();
    }
#pragma unroll
    for (int i = 0; i < VPT; i++) {
        int j = lane + 32 * i;
        if (j < W) {
            part[gw * 2 * W + j] = aw[i];
            part[gw * 2 * W + W + j] = ab[i];
        }
    }
}

/* out[j] += sum over units of part[u, j] (j < ncol; unit stride ldp), in unit order, in double. */
__global__ void tr_sum_units_kernel(int ncol, int nunits, int64_t ldp, const float *__restrict__ part, float *out,
                                    float *out2, int split)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= ncol) return;
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int u = 0;
    for (; u + 4 <= nunits; u += 4) {
        s0 += part[(int64_t)u * ldp + j];
        s1 += part[(int64_t)(u + 1) * ldp + j];
        s2 += part[(int64_t)(u + 2) * ldp + j];
        s3 += part[(int64_t)(u + 3) * ldp + j];
    }
    for (; u < nunits; u++) s0 += part[(int64_t)u * ldp + j];
    const float r = (float)((s0 + s1) + (s2 + s3));
    /* columns [0, split) go to out, [split, ncol) to out2 (NULL: dropped) */
    if (j < split) out[j] += r;
    else if (out2) out2[j - split] += r;
}

template <typename T, int VPT>
static int norm_bwd_launch(cuda_ctx_t *c, int64_t n, int W, int group, const float *s, const void *dout,
                           const float *dres, float *dsum, const float *w, float *dw, float *db, float eps, int swap,
                           int rms)
{
    const int warps = 8;
    int64_t nblk = (n + warps - 1) / warps;
    const int64_t maxblk = 2 * (int64_t)(c->sm_count > 0 ? c->sm_count : 132);
    if (nblk > maxblk) nblk = maxblk;
    const int64_t nw = nblk * warps;
    float *part = (float *)scratch_alloc(c, (size_t)nw * 2 * W * sizeof(float), "norm backward");
    if (!part) return -2;
    auto k = tr_norm_bwd_kernel<T, VPT>;
    MD_LAUNCH(k, (unsigned)nblk, warps * 32, c->stream, n, W, group, s, (const T *)dout, dres, dsum, w, part, eps,
              swap, rms);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) {
        MD_LAUNCH(tr_sum_units_kernel, ceil_div_u(2 * W, 128), 128, c->stream, 2 * W, (int)nw, (int64_t)2 * W, part, dw,
                  db, W);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess && c->debug_sync) e = cudaStreamSynchronize(c->stream);
    scratch_free(c, part);
    CUDA_CHECK(e);
    return 0;
}

template <typename T>
static int norm_bwd_t(cuda_ctx_t *c, int64_t n, int W, int group, const float *s, const void *dout,
                      const float *dres, float *dsum, const float *w, float *dw, float *db, float eps, int swap,
                      int rms)
{
    const int vpt = (W + 31) / 32;
#define L(V) return norm_bwd_launch<T, V>(c, n, W, group, s, dout, dres, dsum, w, dw, db, eps, swap, rms)
    if (vpt <= 1) L(1);
    if (vpt <= 2) L(2);
    if (vpt <= 4) L(4);
    if (vpt <= 8) L(8);
    if (vpt <= 16) L(16);
    if (vpt <= 32) L(32);
    L(64);
#undef L
}

static int cu_add_norm_bwd(md_backend_t *be, int64_t n, int W, int group, const float *s, const void *dout,
                           const float *dres, float *dsum, const float *w, float *dw, float *db, float eps, int swap,
                           int rms)
{
    cuda_ctx_t *c = CTX(be);
    if (n <= 0) return 0;
    if (W <= 0 || W > 2048 || group <= 0 || W % group || (swap && W % 2)) {
        md_error("unsupported norm shape: width %d, group %d%s (width <= 2048, a multiple of the group)", W, group,
                 swap ? ", half swap" : "");
        return -2;
    }
    if (c->bf16) return norm_bwd_t<bf16>(c, n, W, group, s, dout, dres, dsum, w, dw, db, eps, swap, rms);
    return norm_bwd_t<float>(c, n, W, group, s, dout, dres, dsum, w, dw, db, eps, swap, rms);
}

/* --- GEMMs ------------------------------------------------------------------------------------ */

/* dst[i, j] = bf16(src[i, j]) for i < rows, j < cols; dst contiguous [rows, cols]. */
__global__ void tr_to_bf16_kernel(int64_t rows, int cols, const float *__restrict__ src, int64_t lds, bf16 *dst)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    for (int64_t i = blockIdx.y; i < rows; i += gridDim.y) st_act(dst + i * cols + j, __ldg(src + i * lds + j));
}

template <typename T>
__global__ void tr_zero_rows_kernel(int64_t rows, int cols, T *dst, int64_t ldd)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    for (int64_t i = blockIdx.y; i < rows; i += gridDim.y) st_act(dst + i * ldd + j, 0.0f);
}

/* One cublasGemmEx with the backend's compute type; an unsupported fp32 compute type falls back
 * to plain fp32 (as be->gemm does). */
static cublasStatus_t tr_gemm_ex(cuda_ctx_t *c, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                 const void *A, cudaDataType_t at, int lda, const void *B, cudaDataType_t bt, int ldb,
                                 float beta, void *C, cudaDataType_t ct, int ldc)
{
    const float alpha = 1.0f;
    const cublasComputeType_t comp = c->bf16 ? CUBLAS_COMPUTE_32F : c->fp32_compute;
    cublasStatus_t st = cublasGemmEx(c->blas, ta, tb, m, n, k, &alpha, A, at, lda, B, bt, ldb, &beta, C, ct, ldc, comp,
                                     CUBLAS_GEMM_DEFAULT);
    if (st == CUBLAS_STATUS_NOT_SUPPORTED && comp != CUBLAS_COMPUTE_32F) {
        md_warn("fp32 GEMM compute type %d not supported here; using plain fp32", (int)comp);
        c->fp32_compute = CUBLAS_COMPUTE_32F;
        st = cublasGemmEx(c->blas, ta, tb, m, n, k, &alpha, A, at, lda, B, bt, ldb, &beta, C, ct, ldc,
                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    }
    return st;
}

/* Rows per cuBLAS call: keeps every dimension and offset in int, and bounds the bf16 copy of an
 * F32 dC. */
static int64_t gemm_row_block(int convert, int N)
{
    if (!convert) return (int64_t)1 << 28;
    int64_t rb = ((int64_t)64 << 20) / (N > 0 ? N : 1); /* 128 MiB of bf16 */
    return rb < 4096 ? 4096 : rb;
}

/* Returns the dC operand of rows [r0, r0 + mr): the act-typed input itself, or its bf16 copy in
 * conv (leading dimension N then). */
static int gemm_dc_rows(cuda_ctx_t *c, const void *dC, int64_t lddc, int dc_f32, int N, int64_t r0, int64_t mr,
                        bf16 *conv, const void **op, int64_t *ld)
{
    const size_t asz = c->bf16 ? 2 : 4, dsz = dc_f32 ? 4 : asz;
    const void *src = (const char *)dC + (size_t)r0 * lddc * dsz;
    if (!conv) {
        *op = src;
        *ld = lddc;
        return 0;
    }
    MD_LAUNCH(tr_to_bf16_kernel, tr_grid2(mr, N, tr_bx(N)), tr_bx(N), c->stream, mr, N, (const float *)src, lddc, conv);
    LAUNCH_CHECK(c);
    *op = conv;
    *ld = N;
    return 0;
}

static int cu_gemm_da(md_backend_t *be, int64_t M, int N, int K, const void *dC, int64_t lddc, int dc_f32,
                      const void *W, void *dA, int64_t ldda, int accumulate)
{
    cuda_ctx_t *c = CTX(be);
    if (M <= 0 || K <= 0) return 0;
    if (N <= 0) {
        if (accumulate) return 0;
        if (c->bf16) {
            auto k = tr_zero_rows_kernel<bf16>;
            MD_LAUNCH(k, tr_grid2(M, K, tr_bx(K)), tr_bx(K), c->stream, M, K, (bf16 *)dA, ldda);
        } else {
            auto k = tr_zero_rows_kernel<float>;
            MD_LAUNCH(k, tr_grid2(M, K, tr_bx(K)), tr_bx(K), c->stream, M, K, (float *)dA, ldda);
        }
        LAUNCH_CHECK(c);
        return 0;
    }
    const int convert = c->bf16 && dc_f32;
    const cudaDataType_t ab = c->bf16 ? CUDA_R_16BF : CUDA_R_32F;
    const size_t asz = c->bf16 ? 2 : 4;
    const int64_t RB = gemm_row_block(convert, N);
    bf16 *conv = NULL;
    if (convert && !(conv = (bf16 *)scratch_alloc(c, (size_t)(M < RB ? M : RB) * N * 2, "GEMM input gradient")))
        return -2;
    int ret = 0;
    for (int64_t r0 = 0; r0 < M && !ret; r0 += RB) {
        const int64_t mr = M - r0 < RB ? M - r0 : RB;
        const void *op = NULL;
        int64_t ld = 0;
        if ((ret = gemm_dc_rows(c, dC, lddc, dc_f32, N, r0, mr, conv, &op, &ld)) < 0) break;
        void *out = (char *)dA + (size_t)r0 * ldda * asz;
        cublasStatus_t st = tr_gemm_ex(c, CUBLAS_OP_N, CUBLAS_OP_N, K, (int)mr, N, W, ab, K, op, ab, (int)ld,
                                       accumulate ? 1.0f : 0.0f, out, ab, (int)ldda);
        if (st != CUBLAS_STATUS_SUCCESS) ret = md_cublas_fail(__func__, __FILE__, __LINE__, "cublasGemmEx", st);
    }
    scratch_free(c, conv);
    if (ret < 0) return ret;
    LAUNCH_CHECK(c);
    return 0;
}

static int cu_gemm_dw(md_backend_t *be, int64_t M, int N, int K, const void *dC, int64_t lddc, int dc_f32,
                      const void *A, int64_t lda, float *dW)
{
    cuda_ctx_t *c = CTX(be);
    if (M <= 0 || N <= 0 || K <= 0) return 0;
    const int convert = c->bf16 && dc_f32;
    const cudaDataType_t ab = c->bf16 ? CUDA_R_16BF : CUDA_R_32F;
    const size_t asz = c->bf16 ? 2 : 4;
    const int64_t RB = gemm_row_block(convert, N);
    bf16 *conv = NULL;
    if (convert && !(conv = (bf16 *)scratch_alloc(c, (size_t)(M < RB ? M : RB) * N * 2, "GEMM weight gradient")))
        return -2;
    int ret = 0;
    /* row blocks add onto dW one after another (fixed order) */
    for (int64_t r0 = 0; r0 < M && !ret; r0 += RB) {
        const int64_t mr = M - r0 < RB ? M - r0 : RB;
        const void *op = NULL;
        int64_t ld = 0;
        if ((ret = gemm_dc_rows(c, dC, lddc, dc_f32, N, r0, mr, conv, &op, &ld)) < 0) break;
        const void *Ar = (const char *)A + (size_t)r0 * lda * asz;
        cublasStatus_t st = tr_gemm_ex(c, CUBLAS_OP_N, CUBLAS_OP_T, K, N, (int)mr, Ar, ab, (int)lda, op, ab, (int)ld,
                                       1.0f, dW, CUDA_R_32F, K);
        if (st != CUBLAS_STATUS_SUCCESS) ret = md_cublas_fail(__func__, __FILE__, __LINE__, "cublasGemmEx", st);
    }
    scratch_free(c, conv);
    if (ret < 0) return ret;
    LAUNCH_CHECK(c);
    return 0;
}

/* --- depthwise conv + SiLU -------------------------------------------------------------------- */

#define CONVB_BLOCK 128

__device__ __forceinline__ int tr_reset(const uint8_t *ss, int64_t n, int reverse, int64_t u)
{
    return ss ? __ldg(ss + (reverse ? n - u : u)) : 0;
}

template <typename T>
__device__ __forceinline__ float tr_conv_x(const T *x, int64_t ldx, int64_t n, int reverse, int64_t u, int c)
{
    return ld_act(x + (reverse ? n - 1 - u : u) * ldx + c);
}

/* Window wv[j] = input at scan index u0 - P + j (j < P), state rows for negative indices, resets
 * applied (a reset at u zeroes every input before u). */
template <typename T, int P>
__device__ __forceinline__ void tr_conv_window(float (&wv)[P > 0 ? P : 1], const T *x, int64_t ldx, int64_t n, int Cn,
                                               int c, const float *state, int reverse, const uint8_t *ss, int64_t u0)
{
#pragma unroll
    for (int j = 0; j < P; j++) {
        const int64_t u = u0 - P + j;
        float v;
        if (u < 0) {
            v = state ? state[(int64_t)(P + u) * Cn + c] : 0.0f;
        } else {
            v = tr_conv_x(x, ldx, n, reverse, u, c);
            if (tr_reset(ss, n, reverse, u)) {
#pragma unroll
                for (int q = 0; q < j; q++) wv[q] = 0.0f;
            }
        }
        wv[j] = v;
    }
}

/* dL/d(pre-activation) at scan index u from the window before u (updated: reset, then shifted in
 * place by the caller). Returns the gradient; *xin the input at u. */
template <typename T, int K>
__device__ __forceinline__ float tr_conv_dact(float (&wv)[K > 1 ? K - 1 : 1], const float (&wk)[K], float bias,
                                              const T *x, int64_t ldx, const T *dout, int Cn, int64_t n, int reverse,
                                              const uint8_t *ss, int64_t u, int c, float *xin)
{
    constexpr int P = K - 1;
    const float xv = tr_conv_x(x, ldx, n, reverse, u, c);
    if (tr_reset(ss, n, reverse, u)) {
#pragma unroll
        for (int j = 0; j < P; j++) wv[j] = 0.0f;
    }
    float a = bias + wk[P] * xv;
#pragma unroll
    for (int j = 0; j < P; j++) a += wk[j] * wv[j];
    const float sg = 1.0f / (1.0f + expf(-a));
    const float g = ld_act(dout + (reverse ? n - 1 - u : u) * (int64_t)Cn + c);
    *xin = xv;
    return g * sg * (1.0f + a * (1.0f - sg));
}

/* One thread per (channel, tile [q0, q1) of scan indices): walks u = q0 .. q1 + P - 1 (< n)
 * recomputing dL/da, adds dw/db of u < q1 into part [tile, K + 1, Cn], and writes dx at q = u - P
 * once its last contribution (u = q + P) is known, the tail q >= n - P at the end (those also
 * take the incoming dstate row q - (n - P) when no reset lies in (q, n - 1]). Input q reaches
 * output u only when no reset lies in (q, u]: lr_* holds the last reset at or before each u. */
template <typename T, int K>
__global__ void __launch_bounds__(CONVB_BLOCK)
    tr_conv_bwd_kernel(int64_t n, int Cn, int64_t TT, const T *__restrict__ x, int64_t ldx, const float *__restrict__ w,
                       const float *__restrict__ b, const T *__restrict__ dout, T *dx, int64_t lddx, int dx_acc,
                       float *__restrict__ part, const float *state, const float *dstate, int reverse,
                       const uint8_t *__restrict__ ss)
{
    constexpr int P = K - 1;
    const int c = blockIdx.y * CONVB_BLOCK + threadIdx.x;
    if (c >= Cn) return;
    const int64_t tile = blockIdx.x, q0 = tile * TT, q1 = q0 + TT < n ? q0 + TT : n;
    const int64_t uend = q1 + P < n ? q1 + P : n;
    float wk[K];
#pragma unroll
    for (int k = 0; k < K; k++) wk[k] = __ldg(w + (int64_t)c * K + k);
    const float bias = b ? __ldg(b + c) : 0.0f;
    float wv[P > 0 ? P : 1];
    tr_conv_window<T, P>(wv, x, ldx, n, Cn, c, state, reverse, ss, q0);
    /* ring of the last K gradients: da_r[k] = dL/da at u - (K-1-k); lr_r likewise */
    float da_r[K];
    int64_t lr_r[K];
#pragma unroll
    for (int k = 0; k < K; k++) {
        da_r[k] = 0.0f;
        lr_r[k] = INT64_MIN;
    }
    int64_t last = INT64_MIN; /* resets before q0 never separate q >= q0 from u >= q */
    float gw[K], gb = 0.0f;
#pragma unroll
    for (int k = 0; k < K; k++) gw[k] = 0.0f;
    for (int64_t u = q0; u < uend; u++) {
        if (tr_reset(ss, n, reverse, u)) last = u;
        float xin;
        const float g = tr_conv_dact<T, K>(wv, wk, bias, x, ldx, dout, Cn, n, reverse, ss, u, c, &xin);
        if (u < q1) {
            gb += g;
            gw[P] += g * xin;
#pragma unroll
            for (int j = 0; j < P; j++) gw[j] += g * wv[j];
        }
#pragma unroll
        for (int k = 0; k + 1 < K; k++) {
            da_r[k] = da_r[k + 1];
            lr_r[k] = lr_r[k + 1];
        }
        da_r[K - 1] = g;
        lr_r[K - 1] = last;
#pragma unroll
        for (int j = 0; j + 1 < P; j++) wv[j] = wv[j + 1];
        if (P > 0) wv[P - 1] = xin;
        /* dx at q = u - P: outputs u' = q + P - k sit at ring slot K-1-k */
        const int64_t q = u - P;
        if (q >= q0) {
            float acc = 0.0f;
#pragma unroll
            for (int k = 0; k < K; k++)
                if (lr_r[K - 1 - k] <= q) acc += da_r[K - 1 - k] * wk[k];
            T *o = dx + (reverse ? n - 1 - q : q) * lddx + c;
            st_act(o, dx_acc ? ld_rw(o) + acc : acc);
        }
    }
    /* tail: q in [max(q0, n - P), q1); the ring ends at u = n - 1 (slot K-1) */
    for (int64_t q = (n - P > q0 ? n - P : q0); q < q1; q++) {
        float acc = 0.0f;
#pragma unroll
        for (int k = 0; k < K; k++) {
            const int64_t uu = q + P - k;
            if (uu >= n) continue;
            const int slot = K - 1 - (int)(n - 1 - uu);
            if (lr_r[slot] <= q) acc += da_r[slot] * wk[k];
        }
        const int64_t j = q - (n - P);
        if (dstate && j >= 0 && last <= q) acc += dstate[j * Cn + c];
        T *o = dx + (reverse ? n - 1 - q : q) * lddx + c;
        st_act(o, dx_acc ? ld_rw(o) + acc : acc);
    }
    float *pp = part + tile * (K + 1) * (int64_t)Cn + c;
#pragma unroll
    for (int k = 0; k < K; k++) pp[(int64_t)k * Cn] = gw[k];
    pp[(int64_t)K * Cn] = gb;
}

/* dL/d(state given), per channel: inputs q in [-P, 0) reach outputs u = q + P - k < P when no
 * reset lies in [0, u], and the emitted state row q - (n - P) when n < P and none lies in [0, n).
 * Runs after tr_conv_bwd_kernel has read the incoming dstate. */
template <typename T, int K>
__global__ void tr_conv_dstate_kernel(int64_t n, int Cn, const T *__restrict__ x, int64_t ldx,
                                      const float *__restrict__ w, const float *__restrict__ b,
                                      const T *__restrict__ dout, const float *state, float *dstate, int reverse,
                                      const uint8_t *__restrict__ ss)
{
    constexpr int P = K - 1;
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= Cn || P == 0) return;
    float wk[K];
#pragma unroll
    for (int k = 0; k < K; k++) wk[k] = __ldg(w + (int64_t)c * K + k);
    const float bias = b ? __ldg(b + c) : 0.0f;
    float wv[P > 0 ? P : 1], din[P > 0 ? P : 1], da[P > 0 ? P : 1];
    tr_conv_window<T, P>(wv, x, ldx, n, Cn, c, state, reverse, ss, 0);
    int64_t first_reset = n; /* first reset in [0, min(n, P)): all that matters here */
    for (int j = 0; j < P; j++) {
        din[j] = dstate[(int64_t)j * Cn + c];
        da[j] = 0.0f;
    }
    for (int64_t u = 0; u < n && u < P; u++)
        if (tr_reset(ss, n, reverse, u)) {
            first_reset = u;
            break;
        }
    for (int u = 0; u < P && u < n; u++) {
        float xin;
        da[u] = tr_conv_dact<T, K>(wv, wk, bias, x, ldx, dout, Cn, n, reverse, ss, u, c, &xin);
#pragma unroll
        for (int j = 0; j + 1 < P; j++) wv[j] = wv[j + 1];
        wv[P - 1] = xin;
    }
    for (int q = -P; q < 0; q++) {
        float acc = 0.0f;
        for (int k = 0; k < K; k++) {
            const int64_t u = q + P - k;
            if (u < 0 || u >= n || first_reset <= u) continue;
            acc += da[u] * wk[k];
        }
        const int64_t j = q - (n - P);
        if (j >= 0 && j < P && first_reset >= n) acc += din[j];
        dstate[(int64_t)(q + P) * Cn + c] = acc;
    }
}

/* dw[c, k] += sums[k, c]; db[c] += sums[K, c] */
__global__ void tr_conv_fold_kernel(int Cn, int K, const float *sums, float *dw, float *db)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= Cn) return;
    for (int k = 0; k < K; k++) dw[(int64_t)c * K + k] += sums[(int64_t)k * Cn + c];
    if (db) db[c] += sums[(int64_t)K * Cn + c];
}

template <typename T, int K>
static int conv_bwd_k(cuda_ctx_t *c, int64_t n, int Cn, const void *x, int64_t ldx, const float *w, const float *b,
                      const void *dout, void *dx, int64_t lddx, int dx_acc, float *dw, float *db, const float *state,
                      float *dstate, int reverse, const uint8_t *ss)
{
    /* tiles of at least 64 positions, at most 2048 of them (bounds the dw/db partials) */
    int64_t TT = (n + 2047) / 2048;
    if (TT < 64) TT = 64;
    const int64_t ntile = (n + TT - 1) / TT;
    if ((Cn + CONVB_BLOCK - 1) / CONVB_BLOCK > 65535) {
        md_error("conv backward of %d channels is too large for one launch", Cn);
        return -2;
    }
    float *part = (float *)scratch_alloc(c, (size_t)ntile * (K + 1) * Cn * sizeof(float), "conv backward");
    if (!part) return -2;
    auto kern = tr_conv_bwd_kernel<T, K>;
    MD_LAUNCH(kern, dim3((unsigned)ntile, ceil_div_u(Cn, CONVB_BLOCK)), CONVB_BLOCK, c->stream, n, Cn, TT,
              (const T *)x, ldx, w, b, (const T *)dout, (T *)dx, lddx, dx_acc, part, state, dstate, reverse, ss);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess && dstate && K > 1) {
        auto sk = tr_conv_dstate_kernel<T, K>;
        MD_LAUNCH(sk, ceil_div_u(Cn, 128), 128, c->stream, n, Cn, (const T *)x, ldx, w, b, (const T *)dout, state, dstate,
                  reverse, ss);
        e = cudaGetLastError();
    }
    /* part [tile, k, c] -> dw [c, K] (column k*Cn + c of a unit is dw[c, k]) and db: sum per
     * column of the [ntile, (K+1) Cn] matrix, scattered by a small fold kernel */
    float *sums = NULL;
    if (e == cudaSuccess) {
        sums = (float *)scratch_alloc(c, (size_t)(K + 1) * Cn * sizeof(float), "conv backward");
        if (!sums) {
            scratch_free(c, part);
            return -2;
        }
        e = cudaMemsetAsync(sums, 0, (size_t)(K + 1) * Cn * sizeof(float), c->stream);
    }
    if (e == cudaSuccess) {
        const int ncol = (K + 1) * Cn;
        MD_LAUNCH(tr_sum_units_kernel, ceil_div_u(ncol, 128), 128, c->stream, ncol, (int)ntile, (int64_t)ncol, part,
                  sums, (float *)NULL, ncol);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) {
        MD_LAUNCH(tr_conv_fold_kernel, ceil_div_u(Cn, 128), 128, c->stream, Cn, K, (const float *)sums, dw, db);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess && c->debug_sync) e = cudaStreamSynchronize(c->stream);
    scratch_free(c, part);
    scratch_free(c, sums);
    CUDA_CHECK(e);
    return 0;
}

template <typename T>
static int conv_bwd_t(cuda_ctx_t *c, int64_t n, int Cn, int K, const void *x, int64_t ldx, const float *w,
                      const float *b, const void *dout, void *dx, int64_t lddx, int dx_acc, float *dw, float *db,
                      const float *state, float *dstate, int reverse, const uint8_t *ss)
{
#define L(KK) return conv_bwd_k<T, KK>(c, n, Cn, x, ldx, w, b, dout, dx, lddx, dx_acc, dw, db, state, dstate, reverse, ss)
    switch (K) {
    case 1: L(1);
    case 2: L(2);
    case 3: L(3);
    case 4: L(4);
    case 5: L(5);
    case 6: L(6);
    case 7: L(7);
    case 8: L(8);
    default: md_error("conv width %d not supported by the CUDA backend (1..8)", K); return -2;
    }
#undef L
}

static int cu_conv_silu_bwd(md_backend_t *be, int64_t n, int Cn, int K, const void *x, int64_t ldx, const float *w,
                            const float *b, const void *dout, void *dx, int64_t lddx, int dx_accumulate, float *dw,
                            float *db, const float *state, float *dstate, int reverse, const uint8_t *seq_start)
{
    cuda_ctx_t *c = CTX(be);
    if (K < 1 || K > 8) {
        md_error("conv width %d not supported by the CUDA backend (1..8)", K);
        return -2;
    }
    if (n <= 0 || Cn <= 0) return 0;
    if (c->bf16)
        return conv_bwd_t<bf16>(c, n, Cn, K, x, ldx, w, b, dout, dx, lddx, dx_accumulate, dw, db, state, dstate, reverse,
                                seq_start);
    return conv_bwd_t<float>(c, n, Cn, K, x, ldx, w, b, dout, dx, lddx, dx_accumulate, dw, db, state, dstate, reverse,
                             seq_start);
}

/* --- elementwise ------------------------------------------------------------------------------ */

template <typename T>
__global__ void tr_mul_bwd_kernel(int64_t n, int W, const float *__restrict__ g, int64_t ldg, const T *__restrict__ a,
                                  int64_t lda, const T *__restrict__ b, int64_t ldb, T *da, int64_t ldda, T *db,
                                  int64_t lddb)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= W) return;
    for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
        const float gv = __ldg(g + i * ldg + j);
        const float av = ld_act(a + i * lda + j), bv = ld_act(b + i * ldb + j);
        if (da) st_act(da + i * ldda + j, gv * bv);
        if (db) st_act(db + i * lddb + j, gv * av);
    }
}

static int cu_mul_bwd(md_backend_t *be, int64_t n, int W, const void *dout, int64_t lddo, const void *a, int64_t lda,
                      const void *b, int64_t ldb, void *da, int64_t ldda, void *db, int64_t lddb)
{
    cuda_ctx_t *c = CTX(be);
    if (n <= 0 || W <= 0 || (!da && !db)) return 0;
    const int bx = tr_bx(W);
    if (c->bf16) {
        auto k = tr_mul_bwd_kernel<bf16>;
        MD_LAUNCH(k, tr_grid2(n, W, bx), bx, c->stream, n, W, (const float *)dout, lddo, (const bf16 *)a, lda,
                  (const bf16 *)b, ldb, (bf16 *)da, ldda, (bf16 *)db, lddb);
    } else {
        auto k = tr_mul_bwd_kernel<float>;
        MD_LAUNCH(k, tr_grid2(n, W, bx), bx, c->stream, n, W, (const float *)dout, lddo, (const float *)a, lda,
                  (const float *)b, ldb, (float *)da, ldda, (float *)db, lddb);
    }
    LAUNCH_CHECK(c);
    return 0;
}

/* --- cross-entropy ---------------------------------------------------------------------------- */

/* One thread per row (grid-stride over a fixed grid); per block: { sum w*CE, sum w, sum w*hit,
 * rows, bad targets } into part[blk, 5]. dl may alias l: each thread reads its row's logits
 * before it writes them. */
__global__ void __launch_bounds__(TR_RED_THREADS)
    tr_xent_kernel(int64_t n, int V, const float *l, int64_t ldl, const int32_t *__restrict__ tg,
                   const float *__restrict__ wt, int ignore, float scale, float *dl, int64_t ldd, double *part)
{
    double acc[5] = { 0, 0, 0, 0, 0 };
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float *li = l + i * ldl;
        float *di = dl ? dl + i * ldd : NULL;
        const int t = tg[i];
        if (t == ignore) {
            if (di)
                for (int v = 0; v < V; v++) di[v] = 0.0f;
            continue;
        }
        if (t < 0 || t >= V) {
            acc[4] += 1;
            continue;
        }
        const float w = wt ? wt[i] : 1.0f;
        double mx = li[0];
        int am = 0;
        for (int v = 1; v < V; v++)
            if (li[v] > mx) {
                mx = li[v];
                am = v;
            }
        double se = 0;
        for (int v = 0; v < V; v++) se += exp((double)li[v] - mx);
        const double lse = mx + log(se);
        acc[0] += w * (lse - li[t]);
        acc[1] += w;
        acc[2] += am == t ? w : 0.0;
        acc[3] += 1;
        if (di) {
            const float f = scale * w;
            for (int v = 0; v < V; v++) {
                const double pv = exp((double)li[v] - lse);
                di[v] = (float)(f * (pv - (v == t ? 1.0 : 0.0)));
            }
        }
    }
    tr_block_sum<5>(acc);
    if (threadIdx.x == 0)
        for (int k = 0; k < 5; k++) part[(int64_t)blockIdx.x * 5 + k] = acc[k];
}

/* stats[0..4) += sum over blocks (in order); bad[0] = the number of bad targets. */
__global__ void tr_xent_sum_kernel(int nblk, const double *part, double *stats, double *bad)
{
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    double s[5] = { 0, 0, 0, 0, 0 };
    for (int b = 0; b < nblk; b++)
        for (int k = 0; k < 5; k++) s[k] += part[(int64_t)b * 5 + k];
    for (int k = 0; k < 4; k++) stats[k] += s[k];
    bad[0] = s[4];
}

static int cu_xent(md_backend_t *be, int64_t n, int V, const float *logits, int64_t ldl, const int32_t *targets,
                   const float *weights, int ignore_index, float scale, float *dlogits, int64_t ldd, double *stats)
{
    cuda_ctx_t *c = CTX(be);
    if (n <= 0) return 0;
    if (V <= 0) {
        md_error("cross-entropy over %d classes", V);
        return -2;
    }
    int64_t nblk = (n + TR_RED_THREADS - 1) / TR_RED_THREADS;
    if (nblk > 1024) nblk = 1024;
    double *part = (double *)scratch_alloc(c, ((size_t)nblk * 5 + 1) * sizeof(double), "cross-entropy");
    if (!part) return -2;
    double bad = 0;
    MD_LAUNCH(tr_xent_kernel, (unsigned)nblk, TR_RED_THREADS, c->stream, n, V, logits, ldl, targets, weights,
              ignore_index, scale, dlogits, ldd, part);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) {
        MD_LAUNCH(tr_xent_sum_kernel, 1, 32, c->stream, (int)nblk, (const double *)part, stats, part + nblk * 5);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpyAsync(&bad, part + nblk * 5, sizeof bad, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    scratch_free(c, part);
    CUDA_CHECK(e);
    if (bad > 0) {
        md_error("a target id is outside the vocabulary (0..%d)", V - 1);
        return -2;
    }
    return 0;
}

/* --- optimizer and helpers -------------------------------------------------------------------- */

__global__ void tr_adamw_kernel(int64_t n, float *p, const float *__restrict__ g, float *m, float *v, float decay,
                                float b1, float b2, float step, float rbc2, float eps, float gs)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float gi = g[i] * gs;
        const float pi = p[i] * decay;
        const float mi = b1 * m[i] + (1.0f - b1) * gi;
        const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step * mi / (sqrtf(vi) * rbc2 + eps);
    }
}

static unsigned grid1(int64_t n, int bs, int64_t maxblk)
{
    int64_t b = (n + bs - 1) / bs;
    if (b > maxblk) b = maxblk;
    return (unsigned)(b > 0 ? b : 1);
}

static int cu_adamw(md_backend_t *be, int64_t n, float *p, const float *g, float *m, float *v, const md_adamw_t *hp)
{
    cuda_ctx_t *c = CTX(be);
    if (n <= 0) return 0;
    /* the same float constants as the CPU op */
    const double bc1 = 1.0 - pow(hp->beta1, (double)hp->step), bc2 = 1.0 - pow(hp->beta2, (double)hp->step);
    const float decay = (float)(1.0 - hp->lr * hp->weight_decay), b1 = (float)hp->beta1, b2 = (float)hp->beta2;
    const float step = (float)(hp->lr / bc1), rbc2 = (float)(1.0 / sqrt(bc2)), eps = (float)hp->eps;
    const float gs = (float)hp->gscale;
    MD_LAUNCH(tr_adamw_kernel, grid1(n, 256, 8192), 256, c->stream, n, p, g, m, v, decay, b1, b2, step, rbc2, eps, gs);
    LAUNCH_CHECK(c);
    return 0;
}

__global__ void __launch_bounds__(TR_RED_THREADS) tr_sumsq_kernel(int64_t n, const float *__restrict__ x, double *part)
{
    double acc[1] = { 0 };
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const double v = x[i];
        acc[0] += v * v;
    }
    tr_block_sum<1>(acc);
    if (threadIdx.x == 0) part[blockIdx.x] = acc[0];
}

__global__ void tr_sum_doubles_kernel(int nb, const double *part, double *acc)
{
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    double s = 0;
    for (int b = 0; b < nb; b++) s += part[b];
    acc[0] += s;
}

static int cu_sumsq(md_backend_t *be, int64_t n, const float *x, double *acc)
{
    cuda_ctx_t *c = CTX(be);
    if (n <= 0) return 0;
    const unsigned nb = grid1(n, 8 * TR_RED_THREADS, 1024);
    double *part = (double *)scratch_alloc(c, nb * sizeof(double), "sum of squares");
    if (!part) return -2;
    MD_LAUNCH(tr_sumsq_kernel, nb, TR_RED_THREADS, c->stream, n, x, part);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) {
        MD_LAUNCH(tr_sum_doubles_kernel, 1, 32, c->stream, (int)nb, (const double *)part, acc);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess && c->debug_sync) e = cudaStreamSynchronize(c->stream);
    scratch_free(c, part);
    CUDA_CHECK(e);
    return 0;
}

/* dst[r, c] (= or +=) src[rowmap ? rowmap[r] : r, flip ? cols-1-c : c] (dst of type T) */
template <typename T>
__global__ void tr_permute_kernel(int rows, int cols, const float *__restrict__ src, int64_t lds, T *dst, int64_t ldd,
                                  const int32_t *__restrict__ rowmap, int flip, int acc)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const int64_t sr = rowmap ? (int64_t)__ldg(rowmap + r) : r;
        const float v = __ldg(src + sr * lds + (flip ? cols - 1 - j : j));
        T *o = dst + r * ldd + j;
        st_act(o, acc ? ld_rw(o) + v : v);
    }
}

static int cu_permute(md_backend_t *be, int rows, int cols, const float *src, int64_t lds, float *dst, int64_t ldd,
                      const int32_t *rowmap, int flip_cols, int accumulate)
{
    cuda_ctx_t *c = CTX(be);
    if (rows <= 0 || cols <= 0) return 0;
    auto k = tr_permute_kernel<float>;
    MD_LAUNCH(k, tr_grid2(rows, cols, tr_bx(cols)), tr_bx(cols), c->stream, rows, cols, src, lds, dst, ldd, rowmap,
              flip_cols, accumulate);
    LAUNCH_CHECK(c);
    return 0;
}

static int cu_set_matrix(md_backend_t *be, void *mat, int rows, int cols, const float *src, int64_t lds,
                         const int32_t *rowmap, int flip_cols)
{
    cuda_ctx_t *c = CTX(be);
    if (rows <= 0 || cols <= 0) return 0;
    if (c->bf16) {
        auto k = tr_permute_kernel<bf16>;
        MD_LAUNCH(k, tr_grid2(rows, cols, tr_bx(cols)), tr_bx(cols), c->stream, rows, cols, src, lds, (bf16 *)mat,
                  (int64_t)cols, rowmap, flip_cols, 0);
    } else {
        auto k = tr_permute_kernel<float>;
        MD_LAUNCH(k, tr_grid2(rows, cols, tr_bx(cols)), tr_bx(cols), c->stream, rows, cols, src, lds, (float *)mat,
                  (int64_t)cols, rowmap, flip_cols, 0);
    }
    LAUNCH_CHECK(c);
    return 0;
}

__global__ void tr_neg_exp_kernel(int64_t n, const float *__restrict__ src, float *dst)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) dst[i] = -expf(src[i]);
}

static int cu_neg_exp(md_backend_t *be, int64_t n, const float *src, float *dst)
{
    cuda_ctx_t *c = CTX(be);
    if (n <= 0) return 0;
    MD_LAUNCH(tr_neg_exp_kernel, grid1(n, 256, 4096), 256, c->stream, n, src, dst);
    LAUNCH_CHECK(c);
    return 0;
}

/* --- the table -------------------------------------------------------------------------------- */

static const md_train_ops_t cuda_train_ops = {
    /* .name */ "cuda",
    /* .scan_chunk */ MD_CUDA_TSCAN_T,
    /* .embed_bwd */ cu_embed_bwd,
    /* .add_norm_bwd */ cu_add_norm_bwd,
    /* .gemm_da */ cu_gemm_da,
    /* .gemm_dw */ cu_gemm_dw,
    /* .conv_silu_bwd */ cu_conv_silu_bwd,
    /* .scan_fwd */ md_cuda_tscan_fwd,
    /* .scan_bwd */ md_cuda_tscan_bwd,
    /* .mul_bwd */ cu_mul_bwd,
    /* .xent */ cu_xent,
    /* .adamw */ cu_adamw,
    /* .sumsq */ cu_sumsq,
    /* .permute */ cu_permute,
    /* .set_matrix */ cu_set_matrix,
    /* .neg_exp */ cu_neg_exp,
};

extern "C" const md_train_ops_t *md_train_ops_cuda(void) { return &cuda_train_ops; }
/* The same, under a name that lib/train_ops_cpu.c references strongly in CUDA builds: a weak
 * reference alone does not take this object out of libmambadna.a in a static link. */
extern "C" const md_train_ops_t *md_train_ops_cuda_linked(void) { return &cuda_train_ops; }
