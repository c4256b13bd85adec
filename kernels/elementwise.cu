/* elementwise.cu: embedding gather (out[i, :] = table[ids[i], :], F32 table -> act) and the
 * elementwise product a[i, j] *= b[i, j] (act, row strides). One thread per element, 2-D grid
 * (columns fastest) so that rows of any width stay coalesced; 64-bit row indices. */
#include "common.cuh"

template <typename T>
__global__ void embed_kernel(int64_t n, int W, const int32_t *__restrict__ ids, const float *__restrict__ table,
                             T *__restrict__ out)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
        if (j < W) st_act(out + i * W + j, __ldg(table + (int64_t)__ldg(ids + i) * W + j));
    }
}

template <typename T>
__global__ void mul_kernel(int64_t n, int W, T *__restrict__ a, int64_t lda, const T *__restrict__ b, int64_t ldb)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
        if (j < W) st_act(a + i * lda + j, ld_rw(a + i * lda + j) * ld_act(b + i * ldb + j));
    }
}

static dim3 grid2(int64_t n, int W, int bx)
{
    unsigned gx = ceil_div_u(W, bx);
    int64_t gy = n < 65535 ? n : 65535;
    return dim3(gx, (unsigned)(gy > 0 ? gy : 1));
}

int md_cuda_embed(md_backend_t *be, int64_t n, int W, const int32_t *ids, const float *table, void *out)
{
    cuda_ctx_t *c = CTX(be);
    if (n <= 0 || W <= 0) return 0;
    int bx = W >= 256 ? 256 : ((W + 31) / 32) * 32;
    if (c->bf16) {
        auto k = embed_kernel<bf16>;
        MD_LAUNCH(k, grid2(n, W, bx), bx, c->stream, n, W, ids, table, (bf16 *)out);
    } else {
        auto k = embed_kernel<float>;
        MD_LAUNCH(k, grid2(n, W, bx), bx, c->stream, n, W, ids, table, (float *)out);
    }
    LAUNCH_CHECK(c);
    return 0;
}

int md_cuda_mul(md_backend_t *be, int64_t n, int W, void *a, int64_t lda, const void *b, int64_t ldb)
{
    cuda_ctx_t *c = CTX(be);
    if (n <= 0 || W <= 0) return 0;
    int bx = W >= 256 ? 256 : ((W + 31) / 32) * 32;
    if (c->bf16) {
        auto k = mul_kernel<bf16>;
        MD_LAUNCH(k, grid2(n, W, bx), bx, c->stream, n, W, (bf16 *)a, lda, (const bf16 *)b, ldb);
    } else {
        auto k = mul_kernel<float>;
        MD_LAUNCH(k, grid2(n, W, bx), bx, c->stream, n, W, (float *)a, lda, (const float *)b, ldb);
    }
    LAUNCH_CHECK(c);
    return 0;
}
