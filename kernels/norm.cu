/* norm.cu: fused residual add + RMSNorm/LayerNorm with the Caduceus-PS half swap.
 *   s = h + res (either may be NULL); swap: s = [s[W/2:] | s[:W/2]]; res_out = s (F32, may alias
 *   res); out = (s - mean?) * rstd * w (+ b) per group of `group` channels.
 * One warp per row: the whole row (W <= 2048) sits in registers, VPT = ceil(W/32) values per lane
 * at columns lane + 32 i (coalesced). Every lane reads its half-swapped sources before any lane
 * writes res_out (a __syncwarp between), so res_out may alias res even with the swap. Statistics
 * in fp32 with two passes (mean, then centred squares), warp-shuffle sums. */
#include "common.cuh"

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T, int VPT>
__global__ void __launch_bounds__(256) add_norm_kernel(int64_t n, int W, int group, const T *h, const float *res,
                                                       float *res_out, T *__restrict__ out,
                                                       const float *__restrict__ w, const float *__restrict__ b,
                                                       float eps, int swap, int rms)
{
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= n) return;
    const int half = W >> 1;
    const T *hr = h ? h + row * W : NULL;
    const float *rr = res ? res + row * W : NULL;
    float v[VPT];
#pragma unroll
    for (int i = 0; i < VPT; i++) {
        int j = lane + 32 * i;
        float s = 0.0f;
        if (j < W) {
            int src = swap ? (j < half ? j + half : j - half) : j;
            if (hr) s += ld_rw(hr + src);
            if (rr) s += rr[src];
        }
        v[i] = s;
    }
    __syncwarp();
    if (res_out) {
        float *ro = res_out + row * W;
#pragma unroll
        for (int i = 0; i < VPT; i++) {
            int j = lane + 32 * i;
            if (j < W) ro[j] = v[i];
        }
    }
    T *orow = out + row * W;
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
            mean = warp_sum(a) / group;
        }
        float q = 0.0f;
#pragma unroll
        for (int i = 0; i < VPT; i++) {
            int j = lane + 32 * i;
            if (j >= g0 && j < g1) {
                float d = v[i] - mean;
                q += d * d;
            }
        }
        const float rstd = rsqrtf(warp_sum(q) / group + eps);
#pragma unroll
        for (int i = 0; i < VPT; i++) {
            int j = lane + 32 * i;
            if (j >= g0 && j < g1) {
                float o = (v[i] - mean) * rstd * (w ? __ldg(w + j) : 1.0f);
                if (b) o += __ldg(b + j);
                st_act(orow + j, o);
            }
        }
    }
}

template <typename T>
static int launch(cuda_ctx_t *c, int64_t n, int W, int group, const void *h, const float *res, float *res_out,
                  void *out, const float *w, const float *b, float eps, int swap, int rms)
{
    const int warps = 8;
    unsigned grid = ceil_div_u(n, warps);
    const T *ht = (const T *)h;
    T *ot = (T *)out;
    int vpt = (W + 31) / 32;
#define L(V)                                                                                               \
    do {                                                                                                   \
        auto k = add_norm_kernel<T, V>;                                                                    \
        MD_LAUNCH(k, grid, warps * 32, c->stream, n, W, group, ht, res, res_out, ot, w, b, eps, swap, rms); \
    } while (0)
    if (vpt <= 1) L(1);
    else if (vpt <= 2) L(2);
    else if (vpt <= 4) L(4);
    else if (vpt <= 8) L(8);
    else if (vpt <= 16) L(16);
    else if (vpt <= 32) L(32);
    else L(64);
#undef L
    LAUNCH_CHECK(c);
    return 0;
}

int md_cuda_add_norm(md_backend_t *be, int64_t n, int W, int group, const void *h, const float *res,
                     float *res_out, void *out, const float *w, const float *b, float eps, int swap, int rms)
{
    cuda_ctx_t *c = CTX(be);
    if (n <= 0) return 0;
    if (W <= 0 || W > 2048 || group <= 0 || W % group || (swap && W % 2)) {
        md_error("unsupported norm shape: width %d, group %d%s (width <= 2048, a multiple of the group)", W, group,
                 swap ? ", half swap" : "");
        return -2;
    }
    if (c->bf16) return launch<bf16>(c, n, W, group, h, res, res_out, out, w, b, eps, swap, rms);
    return launch<float>(c, n, W, group, h, res, res_out, out, w, b, eps, swap, rms);
}
