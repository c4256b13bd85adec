/* conv.cu: depthwise causal (or anti-causal) conv of width K + bias + SiLU with a carried state
 * and packed-sequence boundaries (the conv_silu contract of backend.h).
 * Everything is done in scan order u = 0..n-1 (position t = u forward, n-1-u reverse), so both
 * directions are the same causal problem: out[u] = silu(b + sum_j w[j] X[u-(K-1)+j]), where X[u]
 * for u < 0 comes from state row K-1+u. A reset at u (seq_start[u] forward, seq_start[n-u]
 * reverse) zeroes every input before u. Thread = (channel, tile of TT scan positions; tiles along grid x); the K-1
 * inputs before the tile are reloaded (with their resets) so tiles are independent. A second
 * one-thread-per-channel kernel then replaces the state by the last K-1 inputs (same rule), after
 * all tiles have read the old one. */
#include "common.cuh"

#define CONV_TT 32
#define CONV_BLOCK 128

template <typename T>
__device__ __forceinline__ float conv_x(const T *x, int64_t ldx, int64_t n, int reverse, int64_t u, int c)
{
    int64_t t = reverse ? n - 1 - u : u;
    return ld_act(x + t * ldx + c);
}

__device__ __forceinline__ int conv_reset(const uint8_t *ss, int64_t n, int reverse, int64_t u)
{
    return ss ? __ldg(ss + (reverse ? n - u : u)) : 0;
}

/* Window wv[j] = X[u0-(K-1)+j], j < K-1, with resets applied (state rows for negative indices). */
template <typename T, int K>
__device__ __forceinline__ void conv_window(float (&wv)[K > 1 ? K - 1 : 1], const T *x, int64_t ldx, int64_t n,
                                            int Cn, int c, const float *state, int reverse, const uint8_t *ss,
                                            int64_t u0)
{
#pragma unroll
    for (int j = 0; j < K - 1; j++) {
        int64_t u = u0 - (K - 1) + j;
        float v;
        if (u < 0) {
            v = state[(int64_t)(K - 1 + u) * Cn + c];
        } else {
            v = conv_x(x, ldx, n, reverse, u, c);
            if (conv_reset(ss, n, reverse, u)) {
#pragma unroll
                for (int q = 0; q < j; q++) wv[q] = 0.0f;
            }
        }
        wv[j] = v;
    }
}

template <typename T, int K, bool FAST>
__global__ void __launch_bounds__(CONV_BLOCK) conv_kernel(int64_t n, int Cn, const T *__restrict__ x, int64_t ldx,
                                                          const float *__restrict__ w, const float *__restrict__ b,
                                                          T *__restrict__ out, const float *state, int reverse,
                                                          const uint8_t *__restrict__ ss)
{
    const int c = blockIdx.y * CONV_BLOCK + threadIdx.x;
    if (c >= Cn) return;
    const int64_t u0 = (int64_t)blockIdx.x * CONV_TT;
    const int64_t u1 = u0 + CONV_TT < n ? u0 + CONV_TT : n;
    float wk[K];
#pragma unroll
    for (int k = 0; k < K; k++) wk[k] = __ldg(w + (int64_t)c * K + k);
    const float bias = b ? __ldg(b + c) : 0.0f;
    float wv[K > 1 ? K - 1 : 1];
    conv_window<T, K>(wv, x, ldx, n, Cn, c, state, reverse, ss, u0);
    for (int64_t u = u0; u < u1; u++) {
        const float xin = conv_x(x, ldx, n, reverse, u, c);
        if (conv_reset(ss, n, reverse, u)) {
#pragma unroll
            for (int j = 0; j < K - 1; j++) wv[j] = 0.0f;
        }
        float a = fmaf(wk[K - 1], xin, bias);
#pragma unroll
        for (int j = 0; j < K - 1; j++) a = fmaf(wk[j], wv[j], a);
        const float s = FAST ? __fdividef(a, 1.0f + __expf(-a)) : a / (1.0f + expf(-a));
        const int64_t t = reverse ? n - 1 - u : u;
        st_act(out + t * Cn + c, s);
#pragma unroll
        for (int j = 0; j + 1 < K - 1; j++) wv[j] = wv[j + 1];
        if (K > 1) wv[K - 2] = xin;
    }
}

template <typename T, int K>
__global__ void conv_state_kernel(int64_t n, int Cn, const T *__restrict__ x, int64_t ldx, float *state, int reverse,
                                  const uint8_t *__restrict__ ss)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= Cn) return;
    float wv[K > 1 ? K - 1 : 1];
    conv_window<T, K>(wv, x, ldx, n, Cn, c, state, reverse, ss, n);
#pragma unroll
    for (int j = 0; j < K - 1; j++) state[(int64_t)j * Cn + c] = wv[j];
}

template <typename T, int K>
static int launch_k(cuda_ctx_t *c, int64_t n, int Cn, const void *x, int64_t ldx, const float *w, const float *b,
                    void *out, float *state, int reverse, const uint8_t *ss)
{
    const int64_t ntile = (n + CONV_TT - 1) / CONV_TT;
    if (ntile > 2147483647 || (Cn + CONV_BLOCK - 1) / CONV_BLOCK > 65535) {
        md_error("conv of %lld positions x %d channels is too large for one launch", (long long)n, Cn);
        return -2;
    }
    dim3 grid((unsigned)ntile, ceil_div_u(Cn, CONV_BLOCK));
    auto kern = c->bf16 ? conv_kernel<T, K, true> : conv_kernel<T, K, false>;
    MD_LAUNCH(kern, grid, CONV_BLOCK, c->stream, n, Cn, (const T *)x, ldx, w, b, (T *)out, state, reverse, ss);
    LAUNCH_CHECK(c);
    if (K > 1) {
        auto sk = conv_state_kernel<T, K>;
        MD_LAUNCH(sk, ceil_div_u(Cn, 128), 128, c->stream, n, Cn, (const T *)x, ldx, state, reverse, ss);
        LAUNCH_CHECK(c);
    }
    return 0;
}

template <typename T>
static int launch(cuda_ctx_t *c, int64_t n, int Cn, int K, const void *x, int64_t ldx, const float *w,
                  const float *b, void *out, float *state, int reverse, const uint8_t *ss)
{
    switch (K) {
    case 1: return launch_k<T, 1>(c, n, Cn, x, ldx, w, b, out, state, reverse, ss);
    case 2: return launch_k<T, 2>(c, n, Cn, x, ldx, w, b, out, state, reverse, ss);
    case 3: return launch_k<T, 3>(c, n, Cn, x, ldx, w, b, out, state, reverse, ss);
    case 4: return launch_k<T, 4>(c, n, Cn, x, ldx, w, b, out, state, reverse, ss);
    case 5: return launch_k<T, 5>(c, n, Cn, x, ldx, w, b, out, state, reverse, ss);
    case 6: return launch_k<T, 6>(c, n, Cn, x, ldx, w, b, out, state, reverse, ss);
    case 7: return launch_k<T, 7>(c, n, Cn, x, ldx, w, b, out, state, reverse, ss);
    case 8: return launch_k<T, 8>(c, n, Cn, x, ldx, w, b, out, state, reverse, ss);
    default: md_error("conv width %d not supported by the CUDA backend (1..8)", K); return -2;
    }
}

int md_cuda_conv_silu(md_backend_t *be, int64_t n, int Cn, int K, const void *x, int64_t ldx, const float *w,
                      const float *b, void *out, float *state, int reverse, const uint8_t *seq_start)
{
    cuda_ctx_t *c = CTX(be);
    if (n <= 0 || Cn <= 0) return 0;
    if (c->bf16) return launch<bf16>(c, n, Cn, K, x, ldx, w, b, out, state, reverse, seq_start);
    return launch<float>(c, n, Cn, K, x, ldx, w, b, out, state, reverse, seq_start);
}
