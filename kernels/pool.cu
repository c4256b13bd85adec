/* pool.cu: output reduction ops of the CUDA backend (backend.h pool_sum, gather_rows) and its
 * pinned host buffers (host_alloc, host_free), so that md_model_forward can return per-segment
 * means or a few selected rows instead of downloading every position's hidden state.
 *
 * pool_sum: acc[i, :] += sum of the rows of segment i inside the piece [r0, r0+n) of x (act,
 * token-major [n, W], row stride ldx), acc F32 [nseg, W]. One block per (32-column tile,
 * segment): threadIdx.x is the column (a warp reads 32 consecutive channels of a row),
 * threadIdx.y one of POOL_LANES row lanes striding the segment's rows; the lanes' fp32 partial
 * sums meet in shared memory and one thread per column adds them in lane order, so the result is
 * deterministic (no atomics). A long segment gets only ceil(W/32) blocks, each walking its rows
 * with POOL_LANES warps; that reads the chunk once, small beside the layers that produced it.
 * gather_rows: out[i, :] = x[rows[i] - r0, :], a plain copy of act (or F32) values (2-D grid,
 * columns fastest, like elementwise.cu). */
#include "common.cuh"

#define POOL_LANES 16

template <typename T>
__global__ void __launch_bounds__(32 * POOL_LANES)
pool_sum_kernel(int64_t n, int W, const T *__restrict__ x, int64_t ldx, int64_t r0, const int64_t *__restrict__ seg_beg,
                const int64_t *__restrict__ seg_end, float *__restrict__ acc)
{
    __shared__ float part[POOL_LANES][33];
    const int col = blockIdx.x * 32 + threadIdx.x;
    const int64_t seg = blockIdx.y;
    int64_t a = __ldg(seg_beg + seg), b = __ldg(seg_end + seg);
    if (a < r0) a = r0;
    if (b > r0 + n) b = r0 + n;
    float s0 = 0.0f, s1 = 0.0f;   /* two chains so that loads overlap */
    if (col < W) {
        const T *p = x + col;
        int64_t r = a + threadIdx.y;
        for (; r + POOL_LANES < b; r += 2 * POOL_LANES) {
            s0 += ld_act(p + (r - r0) * ldx);
            s1 += ld_act(p + (r + POOL_LANES - r0) * ldx);
        }
        if (r < b) s0 += ld_act(p + (r - r0) * ldx);
    }
    part[threadIdx.y][threadIdx.x] = s0 + s1;
    __syncthreads();
    if (threadIdx.y == 0 && col < W && a < b) {
        float t = 0.0f;
        for (int l = 0; l < POOL_LANES; l++) t += part[l][threadIdx.x];
        acc[seg * W + col] += t;
    }
}

template <typename T>
__global__ void gather_rows_kernel(int64_t nrows, int W, const T *__restrict__ x, int64_t ldx, int64_t r0,
                                   const int64_t *__restrict__ rows, T *__restrict__ out)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    for (int64_t i = blockIdx.y; i < nrows; i += gridDim.y)
        if (j < W) out[i * W + j] = x[(__ldg(rows + i) - r0) * ldx + j];
}

static int cuda_pool_sum(md_backend_t *be, int64_t n, int W, const void *x, int64_t ldx, int64_t r0, int nseg,
                         const int64_t *seg_beg, const int64_t *seg_end, float *acc)
{
    cuda_ctx_t *c = CTX(be);
    if (n <= 0 || W <= 0 || nseg <= 0) return 0;
    if (nseg > 65535) {   /* gridDim.y limit: pool in slices of segments */
        for (int i = 0; i < nseg; i += 65535) {
            int k = nseg - i < 65535 ? nseg - i : 65535;
            int r = cuda_pool_sum(be, n, W, x, ldx, r0, k, seg_beg + i, seg_end + i, acc + (size_t)i * W);
            if (r < 0) return r;
        }
        return 0;
    }
    dim3 grid(ceil_div_u(W, 32), (unsigned)nseg), block(32, POOL_LANES);
    if (c->bf16) {
        auto k = pool_sum_kernel<bf16>;
        MD_LAUNCH(k, grid, block, c->stream, n, W, (const bf16 *)x, ldx, r0, seg_beg, seg_end, acc);
    } else {
        auto k = pool_sum_kernel<float>;
        MD_LAUNCH(k, grid, block, c->stream, n, W, (const float *)x, ldx, r0, seg_beg, seg_end, acc);
    }
    LAUNCH_CHECK(c);
    return 0;
}

static int cuda_gather_rows(md_backend_t *be, int64_t nrows, int W, const void *x, int64_t ldx, int64_t r0,
                            const int64_t *rows, void *out, int f32)
{
    cuda_ctx_t *c = CTX(be);
    if (nrows <= 0 || W <= 0) return 0;
    int bx = W >= 256 ? 256 : ((W + 31) / 32) * 32;
    dim3 grid(ceil_div_u(W, bx), (unsigned)(nrows < 65535 ? nrows : 65535));
    if (c->bf16 && !f32) {
        auto k = gather_rows_kernel<bf16>;
        MD_LAUNCH(k, grid, bx, c->stream, nrows, W, (const bf16 *)x, ldx, r0, rows, (bf16 *)out);
    } else {
        auto k = gather_rows_kernel<float>;
        MD_LAUNCH(k, grid, bx, c->stream, nrows, W, (const float *)x, ldx, r0, rows, (float *)out);
    }
    LAUNCH_CHECK(c);
    return 0;
}

/* Pinned host memory: cudaMemcpyAsync into it is a direct DMA (pageable memory goes through
 * the driver's own staging copy). Freed blocks stay pinned in a small cache (cx->pinned) and are
 * handed out again to requests they fit, since pinning costs milliseconds and every forward call
 * asks for the same buffers; md_cuda_pinned_release frees them at destroy. */
static void *cuda_host_alloc(md_backend_t *be, size_t bytes)
{
    cuda_ctx_t *c = CTX(be);
    const int nc = (int)(sizeof c->pinned / sizeof *c->pinned);
    if (!bytes) bytes = 1;
    int best = -1;
    for (int i = 0; i < nc; i++)
        if (c->pinned[i].p && !c->pinned[i].used && c->pinned[i].n >= bytes &&
            (best < 0 || c->pinned[i].n < c->pinned[best].n))
            best = i;
    if (best >= 0) {
        c->pinned[best].used = 1;
        return c->pinned[best].p;
    }
    void *p = NULL;
    if (cudaMallocHost(&p, bytes) != cudaSuccess) {
        cudaGetLastError();
        md_error("out of pinned host memory (%.1f MiB)", bytes / 1048576.0);
        return NULL;
    }
    /* keep it: an empty slot, else in place of the smallest idle block */
    int slot = -1;
    for (int i = 0; i < nc && slot < 0; i++)
        if (!c->pinned[i].p) slot = i;
    for (int i = 0; i < nc && slot < 0; i++)
        if (!c->pinned[i].used && (slot < 0 || c->pinned[i].n < c->pinned[slot].n)) slot = i;
    if (slot >= 0) {
        if (c->pinned[slot].p) cudaFreeHost(c->pinned[slot].p);
        c->pinned[slot].p = p;
        c->pinned[slot].n = bytes;
        c->pinned[slot].used = 1;
    }
    return p;
}

static void cuda_host_free(md_backend_t *be, void *p)
{
    cuda_ctx_t *c = CTX(be);
    if (!p) return;
    for (size_t i = 0; i < sizeof c->pinned / sizeof *c->pinned; i++)
        if (c->pinned[i].p == p) {
            c->pinned[i].used = 0;
            return;
        }
    cudaError_t e = cudaFreeHost(p);
    if (e != cudaSuccess) md_cuda_fail(__func__, __FILE__, __LINE__, "cudaFreeHost", e);
}

/* Frees the cached pinned blocks (called by the backend's destroy). */
void md_cuda_pinned_release(cuda_ctx_t *c)
{
    for (size_t i = 0; i < sizeof c->pinned / sizeof *c->pinned; i++) {
        if (c->pinned[i].p) cudaFreeHost(c->pinned[i].p);
        c->pinned[i].p = NULL;
        c->pinned[i].used = 0;
    }
}

/* Fills the table entries of this file (called by md_backend_cuda_open). */
void md_cuda_pool_ops(md_backend_t *be)
{
    be->pool_sum = cuda_pool_sum;
    be->gather_rows = cuda_gather_rows;
    be->host_alloc = cuda_host_alloc;
    be->host_free = cuda_host_free;
}
