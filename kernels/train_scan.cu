/* train_scan.cu: the CUDA selective scan for training (md_tscan_t of lib/train_ops.h, the
 * contracts of the CPU ops scan_fwd/scan_bwd in lib/train_ops_cpu.c): the state-saving forward
 * and the fused backward of one scan direction. fp32 state and sums, act inputs (float or bf16),
 * 64-bit indices, reverse direction by index arithmetic: scan index u <-> position t = n-1-u, and
 * the reset at scan index u is seq_start[u] (forward) or seq_start[n-u] (reverse).
 *
 * Geometry. Chunk j covers scan indices [j*T, (j+1)*T) (its start state is saved). Each chunk is
 * cut into pieces ("segments") of at most L positions, the unit of parallel work along time;
 * segment s = (chunk s / spc, piece s % spc), spc = ceil(T / L). Threads own one channel (lanes
 * = consecutive channels, so activation loads are coalesced row pieces); B/C rows are staged in
 * shared memory and read as broadcasts.
 *
 * Forward (3 launches, L = 256): pass 1 per (segment, channel) runs the segment from h = 0 ->
 * local end state and decay exponent sum (-1 when a reset kills the incoming state); the carry
 * pass per (channel, state) walks segments in scan order from h0 writing each segment's incoming
 * state (and h_last); pass 3 reruns each segment from its incoming state with outputs and writes
 * the chunk-start states.
 *
 * Backward, per group of whole chunks (~16k positions, MD_TSCAN_GROUP; walked in reverse scan
 * order, so scratch does not grow with n; dstate is carried from group to group), L = 64:
 *   K0 (when T > L) per (chunk, channel): sweep the chunk from its saved state, store segment
 *      start states.
 *   KA per (segment, channel): the adjoint recurrence g_u = carry + dout_u C_u,
 *      carry = g_u exp(delta_u A) (0 across a reset), from carry 0 at the segment end -> local
 *      dL/dh at the segment start and the decay sum.
 *   KC per (channel, state): walk segments in reverse scan order from dstate: each segment's
 *      incoming adjoint carry (dL/dh at its end); the group's outgoing carry.
 *   KB per (segment, 64 channels): the fused work. A forward sweep stores the state at every
 *      tile (8 positions) start in shared memory; tiles are then taken in reverse, and per state
 *      q the tile's states are recomputed in registers and the adjoint run through the tile:
 *      dx, ddt (through softplus), dz, y, the dA/dD/dbias partials, and dB/dC summed over the
 *      warp's channels by a reduce-scatter of shuffles, then over the block's warps in shared
 *      memory -> one partial row per (channel block, position). No atomics anywhere.
 *   KD per (position, column): dB/dC = sum of the channel-block partials in block order.
 *   KR per (state, channel): dA/dD/dbias partials of the group's segments summed in segment
 *      order into double accumulators; a final launch adds them to dA_log (times A), dD,
 *      ddt_bias and writes dstate.
 * Every reduction has a fixed order, so results do not depend on scheduling.
 * Numerics: exp(delta*A) as ex2.approx(delta*A*log2 e); softplus/sigmoid with accurate expf and
 * log1pf in fp32 mode, __expf/__logf in bf16 mode (as kernels/scan.cu). */
#include <stdlib.h>

#include "train_scan.cuh"

namespace {

#define TS_LOG2E 1.4426950408889634f
#define TS_CT 64          /* channels (threads) per block */
#define TS_TT 32          /* positions per staging tile in the forward kernels */
#define TS_FWD_SEG 256    /* forward: positions per segment (at most) */
#define TS_S 8            /* backward: positions per tile (registers) */
#define TS_NTL 8          /* backward: tiles per segment */
#define TS_SEG (TS_S * TS_NTL)
#define TS_GROUP 16384    /* backward: target positions per group of chunks */
#define TS_NW (TS_CT / 32)
#define TS_CARRY_B 16     /* carry passes: segments whose loads are issued together */

struct TsP {
    const void *x, *dt, *B, *C, *z, *dy;
    int64_t ldx, lddt, ldbc, ldz, lddy;
    const float *A, *D, *dt_bias;
    int reverse, Di, N, T;
    int64_t n;
    const uint8_t *ss;
    /* segment geometry */
    int L, spc;           /* positions per segment, segments per chunk */
    int64_t s0, nseg;     /* first segment of this launch and how many */
    float *chunk_states;  /* [nch][Di][N] */
    /* forward */
    void *y;
    int64_t ldy;
    int accumulate;
    float *hbuf;          /* [nseg][N][Di] */
    float *sbuf;          /* [nseg][Di] */
    float *state;         /* [Di][N] or NULL */
    /* backward outputs */
    void *dx, *ddt, *dz, *yb, *dBo, *dCo;
    int64_t lddx, ldddt, lddz, ldyb, lddbc;
    int dz_acc, y_acc;
    float *hst;           /* [nseg][N][Di] segment start states (K0) */
    float *cbuf;          /* [nseg][N][Di] adjoint carries, then dA partials */
    float *dbuf;          /* [nseg][Di] decay sums, then dD partials */
    float *bbuf;          /* [nseg][Di] dbias partials */
    float *part;          /* [Di/TS_CT][group positions][2N] dB/dC partials */
    float *carry;         /* [N][Di] running adjoint carry */
    double *accA;         /* [N][Di] */
    double *accD, *accB;  /* [Di] */
    int64_t gu0, glen;    /* group: first scan index and length */
    int64_t cbase;        /* K0: first chunk of the launch */
};

template <bool FAST>
__device__ __forceinline__ float ts_softplus(float v)
{
    if (v > 20.0f) return v;
    return FAST ? __logf(1.0f + __expf(v)) : log1pf(expf(v));
}

template <bool FAST>
__device__ __forceinline__ float ts_sigmoid(float v)
{
    return FAST ? __fdividef(1.0f, 1.0f + __expf(-v)) : 1.0f / (1.0f + expf(-v));
}

__device__ __forceinline__ int64_t ts_pos(const TsP &p, int64_t u) { return p.reverse ? p.n - 1 - u : u; }
__device__ __forceinline__ uint8_t ts_reset(const TsP &p, int64_t u)
{
    if (!p.ss) return 0;
    return __ldg(p.ss + (p.reverse ? p.n - u : u));
}

/* Scan-index range [u0, u0+len) of segment s (len <= 0: an empty slot at the end). */
__device__ __forceinline__ void ts_segment(const TsP &p, int64_t s, int64_t &u0, int64_t &len)
{
    const int64_t j = s / p.spc, piece = s % p.spc;
    u0 = j * p.T + piece * p.L;
    int64_t end = j * p.T + p.T;
    if (end > u0 + p.L) end = u0 + p.L;
    if (end > p.n) end = p.n;
    len = end - u0;
}

/* Stage rows of B (and C) for scan indices [u0+k0, u0+k0+cnt) into sb[k][q] (zero-padded to NS
 * states and TS_TT rows), and the reset flags. */
template <typename T, int NS, bool WITH_C>
__device__ __forceinline__ void ts_stage(const TsP &p, int64_t u0, int cnt, float (*sb)[NS], float (*sc)[NS], uint8_t *sr)
{
    const T *B = (const T *)p.B, *C = (const T *)p.C;
    for (int i = threadIdx.x; i < TS_TT * NS; i += blockDim.x) {
        const int k = i / NS, q = i % NS;
        float vb = 0.0f, vc = 0.0f;
        if (k < cnt && q < p.N) {
            const int64_t t = ts_pos(p, u0 + k);
            vb = ld_act(B + t * p.ldbc + q);
            if (WITH_C) vc = ld_act(C + t * p.ldbc + q);
        }
        sb[k][q] = vb;
        if (WITH_C) sc[k][q] = vc;
    }
    for (int k = threadIdx.x; k < TS_TT; k += blockDim.x) sr[k] = k < cnt ? ts_reset(p, u0 + k) : 0;
}

/* --- forward -------------------------------------------------------------------------------- */

/* MODE 0: forward pass 1 (local end state, decay sum); MODE 1: forward pass 3 (outputs, chunk
 * states); MODE 2: backward K0 (one chunk per block row, stores segment start states). */
template <typename T, int NS, bool FAST, int MODE>
__global__ void __launch_bounds__(TS_CT) ts_fwd_kernel(TsP p)
{
    __shared__ __align__(16) float sB[TS_TT][NS];
    __shared__ __align__(16) float sC[TS_TT][NS];
    __shared__ uint8_t sR[TS_TT];
    const int c = blockIdx.y * TS_CT + threadIdx.x;
    const bool act = c < p.Di;
    const int64_t s = MODE == 2 ? p.cbase + blockIdx.x : p.s0 + blockIdx.x;
    int64_t u0, len;
    if (MODE == 2) { /* the whole chunk s */
        u0 = s * p.T;
        len = p.n - u0 < p.T ? p.n - u0 : p.T;
    } else {
        ts_segment(p, s, u0, len);
    }
    const T *x = (const T *)p.x, *dt = (const T *)p.dt, *z = (const T *)p.z;
    T *y = (T *)p.y;
    float A2[NS], h[NS];
#pragma unroll
    for (int q = 0; q < NS; q++) {
        const bool ok = act && q < p.N;
        A2[q] = ok ? __ldg(p.A + (int64_t)c * p.N + q) * TS_LOG2E : 0.0f;
        float h0 = 0.0f;
        if (ok && MODE == 1) h0 = p.hbuf[((s - p.s0) * p.N + q) * p.Di + c];
        if (ok && MODE == 2) h0 = p.chunk_states[(s * p.Di + c) * (int64_t)p.N + q];
        h[q] = h0;
    }
    if (MODE == 1 && act && len > 0 && s % p.spc == 0) {
        float *cs = p.chunk_states + ((s / p.spc) * p.Di + c) * (int64_t)p.N;
        for (int q = 0; q < p.N; q++) cs[q] = h[q];
    }
    const float bias = (act && p.dt_bias) ? __ldg(p.dt_bias + c) : 0.0f;
    const float Dc = (act && p.D) ? __ldg(p.D + c) : 0.0f;
    float sumd = 0.0f;
    bool dead = false;
    for (int64_t k0 = 0; k0 < len; k0 += TS_TT) {
        const int cnt = len - k0 < TS_TT ? (int)(len - k0) : TS_TT;
        __syncthreads();
        ts_stage<T, NS, MODE == 1>(p, u0 + k0, cnt, sB, sC, sR);
        __syncthreads();
        if (!act) continue;
        for (int k = 0; k < cnt; k++) {
            const int64_t u = u0 + k0 + k, t = ts_pos(p, u);
            if (MODE == 2 && (k0 + k) % p.L == 0) {
                float *hs = p.hst + ((s * p.spc + (k0 + k) / p.L - p.s0) * p.N) * (int64_t)p.Di + c;
#pragma unroll
                for (int q = 0; q < NS; q++)
                    if (q < p.N) hs[(int64_t)q * p.Di] = h[q];
            }
            const float xv = ld_act(x + t * p.ldx + c);
            const float delta = ts_softplus<FAST>(ld_act(dt + t * p.lddt + c) + bias), du = delta * xv;
            if (sR[k]) {
#pragma unroll
                for (int q = 0; q < NS; q++) h[q] = 0.0f;
                sumd = 0.0f;
                dead = true;
            }
            sumd += delta;
            float out = Dc * xv;
#pragma unroll
            for (int q = 0; q < NS; q++) {
                h[q] = fmaf(fast_ex2(delta * A2[q]), h[q], du * sB[k][q]);
                if (MODE == 1) out = fmaf(sC[k][q], h[q], out);
            }
            if (MODE == 1) {
                if (z) {
                    const float zv = ld_act(z + t * p.ldz + c);
                    out *= zv * ts_sigmoid<FAST>(zv);
                }
                T *yp = y + t * p.ldy + c;
                st_act(yp, p.accumulate ? ld_rw(yp) + out : out);
            }
        }
    }
    if (!act || MODE != 0) return;
    float *hb = p.hbuf + ((s - p.s0) * p.N) * (int64_t)p.Di + c;
#pragma unroll
    for (int q = 0; q < NS; q++)
        if (q < p.N) hb[(int64_t)q * p.Di] = h[q];
    p.sbuf[(s - p.s0) * p.Di + c] = dead ? -1.0f : sumd;
}

/* Forward carry, per (state, channel): segments in scan order from h0; hbuf[s] becomes the
 * incoming state of segment s; h_last -> state. */
__global__ void ts_fwd_carry(TsP p)
{
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (int64_t)p.N * p.Di) return;
    const int q = (int)(idx / p.Di), c = (int)(idx % p.Di);
    float h = p.state ? p.state[(int64_t)c * p.N + q] : 0.0f;
    const float A2 = p.A[(int64_t)c * p.N + q] * TS_LOG2E;
    for (int64_t s0 = 0; s0 < p.nseg; s0 += TS_CARRY_B) {
        float hl[TS_CARRY_B], sd[TS_CARRY_B]; /* loads of a batch issued together */
#pragma unroll
        for (int b = 0; b < TS_CARRY_B; b++) {
            const int64_t s = s0 + b;
            hl[b] = s < p.nseg ? p.hbuf[(s * p.N + q) * (int64_t)p.Di + c] : 0.0f;
            sd[b] = s < p.nseg ? p.sbuf[s * p.Di + c] : 0.0f;
        }
#pragma unroll
        for (int b = 0; b < TS_CARRY_B; b++) {
            const int64_t s = s0 + b;
            if (s >= p.nseg) break;
            p.hbuf[(s * p.N + q) * (int64_t)p.Di + c] = h;
            const float a = sd[b] < 0.0f ? 0.0f : fast_ex2(A2 * sd[b]);
            h = fmaf(a, h, hl[b]);
        }
    }
    if (p.state) p.state[(int64_t)c * p.N + q] = h;
}

/* --- backward ------------------------------------------------------------------------------- */

/* KA: local adjoint of each segment from carry 0 at its end -> cbuf (dL/dh before the segment,
 * local part) and dbuf (decay sum, -1 when a reset cuts the segment). */
template <typename T, int NS, bool FAST>
__global__ void __launch_bounds__(TS_CT) ts_bwd_local(TsP p)
{
    __shared__ __align__(16) float sC[TS_SEG][NS];
    __shared__ uint8_t sR[TS_SEG];
    const int c = blockIdx.y * TS_CT + threadIdx.x;
    const bool act = c < p.Di;
    const int64_t s = p.s0 + blockIdx.x;
    int64_t u0, len;
    ts_segment(p, s, u0, len);
    const T *C = (const T *)p.C, *dt = (const T *)p.dt, *z = (const T *)p.z, *dy = (const T *)p.dy;
    for (int i = threadIdx.x; i < TS_SEG * NS; i += TS_CT) {
        const int k = i / NS, q = i % NS;
        sC[k][q] = (k < len && q < p.N) ? ld_act(C + ts_pos(p, u0 + k) * p.ldbc + q) : 0.0f;
    }
    for (int k = threadIdx.x; k < TS_SEG; k += TS_CT) sR[k] = k < len ? ts_reset(p, u0 + k) : 0;
    __syncthreads();
    if (!act) return;
    float A2[NS], g[NS];
#pragma unroll
    for (int q = 0; q < NS; q++) {
        A2[q] = q < p.N ? __ldg(p.A + (int64_t)c * p.N + q) * TS_LOG2E : 0.0f;
        g[q] = 0.0f;
    }
    const float bias = p.dt_bias ? __ldg(p.dt_bias + c) : 0.0f;
    float sumd = 0.0f;
    bool dead = false;
    for (int k = (int)len - 1; k >= 0; k--) {
        const int64_t t = ts_pos(p, u0 + k);
        const float delta = ts_softplus<FAST>(ld_act(dt + t * p.lddt + c) + bias);
        float dout = ld_act(dy + t * p.lddy + c);
        if (z) {
            const float zv = ld_act(z + t * p.ldz + c);
            dout *= zv * ts_sigmoid<FAST>(zv);
        }
        sumd += delta;
        const bool r = sR[k];
        dead = dead || r;
#pragma unroll
        for (int q = 0; q < NS; q++) {
            const float gq = fmaf(dout, sC[k][q], g[q]);
            g[q] = r ? 0.0f : gq * fast_ex2(delta * A2[q]);
        }
    }
    float *cb = p.cbuf + ((s - p.s0) * p.N) * (int64_t)p.Di + c;
#pragma unroll
    for (int q = 0; q < NS; q++)
        if (q < p.N) cb[(int64_t)q * p.Di] = g[q];
    p.dbuf[(s - p.s0) * p.Di + c] = dead ? -1.0f : sumd;
}

/* KC: per (state, channel), segments of the group in reverse scan order from the running carry:
 * cbuf[s] becomes dL/dh at the end of segment s (from later positions). */
__global__ void ts_bwd_carry(TsP p)
{
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (int64_t)p.N * p.Di) return;
    const int q = (int)(idx / p.Di), c = (int)(idx % p.Di);
    float g = p.carry[idx];
    const float A2 = p.A[(int64_t)c * p.N + q] * TS_LOG2E;
    for (int64_t s0 = p.nseg - 1; s0 >= 0; s0 -= TS_CARRY_B) {
        float gl[TS_CARRY_B], sd[TS_CARRY_B]; /* loads of a batch issued together */
#pragma unroll
        for (int b = 0; b < TS_CARRY_B; b++) {
            const int64_t s = s0 - b;
            gl[b] = s >= 0 ? p.cbuf[(s * p.N + q) * (int64_t)p.Di + c] : 0.0f;
            sd[b] = s >= 0 ? p.dbuf[s * p.Di + c] : 0.0f;
        }
#pragma unroll
        for (int b = 0; b < TS_CARRY_B; b++) {
            const int64_t s = s0 - b;
            if (s < 0) break;
            p.cbuf[(s * p.N + q) * (int64_t)p.Di + c] = g;
            const float a = sd[b] < 0.0f ? 0.0f : fast_ex2(A2 * sd[b]);
            g = fmaf(a, g, gl[b]);
        }
    }
    p.carry[idx] = g;
}

/* One reduce-scatter step: lanes whose bit W (in lane units 2W) is set keep the upper W of their
 * 2W values, the others the lower W; each adds its partner's copy of the half it keeps. */
template <int W>
__device__ __forceinline__ void ts_rs_step(float (&v)[2 * TS_S], int lane)
{
    const bool hi = lane & (2 * W);
#pragma unroll
    for (int i = 0; i < W; i++) {
        const float send = hi ? v[i] : v[i + W];
        const float keep = hi ? v[i + W] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, 2 * W);
    }
}

/* Sum over the 32 lanes of a warp of 2*TS_S = 16 values v[] per lane (reduce-scatter, 16
 * shuffles): afterwards lane l holds the warp's sum of v[l >> 1] (lanes l and l^1 the same). */
__device__ __forceinline__ float ts_warp_reduce16(float (&v)[2 * TS_S])
{
    static_assert(TS_S == 8, "the reduce-scatter is written for 16 values");
    const int lane = threadIdx.x & 31;
    ts_rs_step<8>(v, lane);
    ts_rs_step<4>(v, lane);
    ts_rs_step<2>(v, lane);
    ts_rs_step<1>(v, lane);
    return v[0] + __shfl_xor_sync(0xffffffffu, v[0], 1);
}

/* KB: the fused backward of one segment for TS_CT channels (see the file comment). */
template <typename T, int NS, bool FAST>
__global__ void __launch_bounds__(TS_CT) ts_bwd_main(TsP p)
{
    __shared__ __align__(16) float sH[TS_NTL][NS][TS_CT]; /* states at tile starts */
    __shared__ __align__(16) float sBt[NS][TS_SEG];        /* B, C of the segment, state-major */
    __shared__ __align__(16) float sCt[NS][TS_SEG];
    __shared__ float sG[NS][TS_CT];                        /* adjoint carry per state */
    __shared__ float red[TS_NW][TS_S][2 * NS];             /* warp sums of dB, dC */
    __shared__ uint8_t sR[TS_SEG];
    const int c = blockIdx.y * TS_CT + threadIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const bool act = c < p.Di;
    const int cc = act ? c : 0; /* inactive lanes take part in the shuffles with zero data */
    const int64_t s = p.s0 + blockIdx.x, sl = s - p.s0;
    int64_t u0, len;
    ts_segment(p, s, u0, len);
    if (len <= 0) { /* an empty slot at the end: zero partials */
        if (act) {
            for (int q = 0; q < p.N; q++) p.cbuf[(sl * p.N + q) * (int64_t)p.Di + c] = 0.0f;
            p.dbuf[sl * p.Di + c] = p.bbuf[sl * p.Di + c] = 0.0f;
        }
        return;
    }
    const T *x = (const T *)p.x, *dt = (const T *)p.dt, *z = (const T *)p.z, *dy = (const T *)p.dy;
    const T *Bm = (const T *)p.B, *Cm = (const T *)p.C;
    for (int i = threadIdx.x; i < TS_SEG * NS; i += TS_CT) {
        const int k = i / NS, q = i % NS;
        float vb = 0.0f, vc = 0.0f;
        if (k < len && q < p.N) {
            const int64_t t = ts_pos(p, u0 + k);
            vb = ld_act(Bm + t * p.ldbc + q);
            vc = ld_act(Cm + t * p.ldbc + q);
        }
        sBt[q][k] = vb;
        sCt[q][k] = vc;
    }
    for (int k = threadIdx.x; k < TS_SEG; k += TS_CT) sR[k] = k < len ? ts_reset(p, u0 + k) : 0;
    const float bias = (act && p.dt_bias) ? __ldg(p.dt_bias + c) : 0.0f;
    const float Dc = (act && p.D) ? __ldg(p.D + c) : 0.0f;
    /* forward sweep: states at tile starts */
    {
        float A2[NS], h[NS];
#pragma unroll
        for (int q = 0; q < NS; q++) {
            const bool ok = act && q < p.N;
            A2[q] = ok ? __ldg(p.A + (int64_t)c * p.N + q) * TS_LOG2E : 0.0f;
            h[q] = !ok ? 0.0f
                       : (p.spc == 1 ? p.chunk_states[((s / p.spc) * p.Di + c) * (int64_t)p.N + q]
                                     : p.hst[(sl * p.N + q) * (int64_t)p.Di + c]);
            sG[q][threadIdx.x] = ok ? p.cbuf[(sl * p.N + q) * (int64_t)p.Di + c] : 0.0f;
        }
        __syncthreads();
        const int ntile = (int)((len + TS_S - 1) / TS_S);
        for (int tt = 0; tt < ntile; tt++) {
#pragma unroll
            for (int q = 0; q < NS; q++) sH[tt][q][threadIdx.x] = h[q];
            if (tt == ntile - 1) break;
            for (int k = tt * TS_S; k < tt * TS_S + TS_S; k++) {
                const int64_t t = ts_pos(p, u0 + k);
                const float xv = act ? ld_act(x + t * p.ldx + c) : 0.0f;
                const float delta = act ? ts_softplus<FAST>(ld_act(dt + t * p.lddt + c) + bias) : 0.0f;
                const float du = delta * xv;
                const bool r = sR[k];
#pragma unroll
                for (int q = 0; q < NS; q++) h[q] = fmaf(fast_ex2(delta * A2[q]), r ? 0.0f : h[q], du * sBt[q][k]);
            }
        }
    }
    float pD = 0.0f, pbias = 0.0f;
    float *cb = p.cbuf + sl * p.N * (int64_t)p.Di + cc;
    for (int tt = (int)((len - 1) / TS_S); tt >= 0; tt--) {
        const int kb = tt * TS_S;
        const int cnt = len - kb < TS_S ? (int)(len - kb) : TS_S;
        float delta[TS_S], du[TS_S], xv[TS_S], dout[TS_S], vraw[TS_S], zv[TS_S], dyv[TS_S];
        float outp[TS_S], GB[TS_S], ddlA[TS_S];
#pragma unroll
        for (int k = 0; k < TS_S; k++) {
            delta[k] = du[k] = xv[k] = dout[k] = vraw[k] = zv[k] = dyv[k] = 0.0f;
            if (act && k < cnt) {
                const int64_t t = ts_pos(p, u0 + kb + k);
                xv[k] = ld_act(x + t * p.ldx + c);
                vraw[k] = ld_act(dt + t * p.lddt + c) + bias;
                delta[k] = ts_softplus<FAST>(vraw[k]);
                du[k] = delta[k] * xv[k];
                dyv[k] = ld_act(dy + t * p.lddy + c);
                dout[k] = dyv[k];
                if (z) {
                    zv[k] = ld_act(z + t * p.ldz + c);
                    dout[k] *= zv[k] * ts_sigmoid<FAST>(zv[k]);
                }
            }
            outp[k] = Dc * xv[k];
            GB[k] = ddlA[k] = 0.0f;
        }
        unsigned rmask = 0;
#pragma unroll
        for (int k = 0; k < TS_S; k++) rmask |= (unsigned)(sR[kb + k] != 0) << k;
#pragma unroll 1
        for (int q = 0; q < p.N; q++) {
            const float Aq = act ? __ldg(p.A + (int64_t)c * p.N + q) : 0.0f, A2 = Aq * TS_LOG2E;
            float Bq[TS_S], Cq[TS_S], a[TS_S], hk[TS_S];
#pragma unroll
            for (int k = 0; k < TS_S; k++) {
                Bq[k] = sBt[q][kb + k];
                Cq[k] = sCt[q][kb + k];
            }
            const float hs = sH[tt][q][threadIdx.x];
            float hp = hs;
#pragma unroll
            for (int k = 0; k < TS_S; k++) {
                a[k] = fast_ex2(delta[k] * A2);
                hp = fmaf(a[k], (rmask >> k) & 1 ? 0.0f : hp, du[k] * Bq[k]);
                hk[k] = hp;
                outp[k] = fmaf(Cq[k], hp, outp[k]);
            }
            float g = sG[q][threadIdx.x], dAq = 0.0f;
            float v[2 * TS_S];
#pragma unroll
            for (int k = TS_S - 1; k >= 0; k--) {
                const float hprev = k > 0 ? hk[k - 1] : hs;
                g = fmaf(dout[k], Cq[k], g);
                v[TS_S + k] = dout[k] * hk[k];
                v[k] = g * du[k];
                GB[k] = fmaf(g, Bq[k], GB[k]);
                const float ge = (rmask >> k) & 1 ? 0.0f : g * a[k];
                const float w = ge * hprev;
                ddlA[k] = fmaf(Aq, w, ddlA[k]);
                dAq = fmaf(delta[k], w, dAq);
                g = ge;
            }
            sG[q][threadIdx.x] = g;
            if (act) cb[(int64_t)q * p.Di] = (tt == (int)((len - 1) / TS_S) ? 0.0f : cb[(int64_t)q * p.Di]) + dAq;
            const float r = ts_warp_reduce16(v);
            if (!(lane & 1)) {
                const int i = lane >> 1;
                red[warp][i & (TS_S - 1)][i < TS_S ? q : NS + q] = r;
            }
        }
        /* per-position outputs of the tile */
        if (act) {
            T *dxo = (T *)p.dx, *ddto = (T *)p.ddt, *dzo = (T *)p.dz, *yo = (T *)p.yb;
#pragma unroll
            for (int k = 0; k < TS_S; k++) {
                if (k >= cnt) break;
                const int64_t t = ts_pos(p, u0 + kb + k);
                st_act(dxo + t * p.lddx + c, fmaf(delta[k], GB[k], dout[k] * Dc));
                const float ddl = fmaf(xv[k], GB[k], ddlA[k]);
                const float gdt = vraw[k] > 20.0f ? ddl : ddl * ts_sigmoid<FAST>(vraw[k]);
                st_act(ddto + t * p.ldddt + c, gdt);
                pbias += gdt;
                pD = fmaf(dout[k], xv[k], pD);
                float gate = 1.0f;
                if (z) {
                    const float sg = ts_sigmoid<FAST>(zv[k]);
                    const float dzv = dyv[k] * outp[k] * sg * (1.0f + zv[k] * (1.0f - sg));
                    T *zp = dzo + t * p.lddz + c;
                    st_act(zp, p.dz_acc ? ld_rw(zp) + dzv : dzv);
                    gate = zv[k] * sg;
                }
                if (yo) {
                    T *yp = yo + t * p.ldyb + c;
                    st_act(yp, p.y_acc ? ld_rw(yp) + outp[k] * gate : outp[k] * gate);
                }
            }
        }
        __syncthreads();
        /* dB/dC: sum the warps, one partial row per (channel block, position) */
        float *pr = p.part + ((int64_t)blockIdx.y * p.glen + (u0 + kb - p.gu0)) * 2 * p.N;
        for (int i = threadIdx.x; i < TS_S * 2 * p.N; i += TS_CT) {
            const int k = i / (2 * p.N), j = i % (2 * p.N);
            if (k >= cnt) continue;
            const int col = j < p.N ? j : NS + j - p.N;
            float acc = 0.0f;
#pragma unroll
            for (int w = 0; w < TS_NW; w++) acc += red[w][k][col];
            pr[(int64_t)k * 2 * p.N + j] = acc;
        }
        __syncthreads();
    }
    if (act) {
        p.dbuf[sl * p.Di + c] = pD;
        p.bbuf[sl * p.Di + c] = pbias;
    }
}

/* KD: dB/dC rows of the group = sum of the channel-block partials in block order. */
template <typename T>
__global__ void ts_bwd_dbc(TsP p, int ncb)
{
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int w = 2 * p.N;
    if (idx >= p.glen * w) return;
    const int64_t uu = idx / w;
    const int j = (int)(idx % w);
    float acc = 0.0f;
    for (int b = 0; b < ncb; b++) acc += p.part[((int64_t)b * p.glen + uu) * w + j];
    const int64_t t = ts_pos(p, p.gu0 + uu);
    T *o = (T *)(j < p.N ? p.dBo : p.dCo);
    st_act(o + t * p.lddbc + (j < p.N ? j : j - p.N), acc);
}

/* KR: the group's dA/dD/dbias partials summed in segment order into the double accumulators. */
__global__ void ts_bwd_reduce(TsP p)
{
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (int64_t)p.N * p.Di) return;
    const int q = (int)(idx / p.Di), c = (int)(idx % p.Di);
    double a = 0.0;
    for (int64_t s = 0; s < p.nseg; s++) a += p.cbuf[(s * p.N + q) * (int64_t)p.Di + c];
    p.accA[idx] += a;
    if (q == 0) {
        double d = 0.0, b = 0.0;
        for (int64_t s = 0; s < p.nseg; s++) {
            d += p.dbuf[s * p.Di + c];
            b += p.bbuf[s * p.Di + c];
        }
        p.accD[c] += d;
        p.accB[c] += b;
    }
}

/* The end: dA_log += accA * A, dD += accD, ddt_bias += accB, dstate = carry. */
__global__ void ts_bwd_final(TsP p, float *dA_log, float *dD, float *ddt_bias, float *dstate)
{
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (int64_t)p.N * p.Di) return;
    const int q = (int)(idx / p.Di), c = (int)(idx % p.Di);
    const int64_t o = (int64_t)c * p.N + q;
    dA_log[o] += (float)p.accA[idx] * p.A[o];
    if (dstate) dstate[o] = p.carry[idx];
    if (q == 0) {
        if (dD) dD[c] += (float)p.accD[c];
        if (ddt_bias) ddt_bias[c] += (float)p.accB[c];
    }
}

__global__ void ts_carry_init(float *carry, double *accA, double *accD, double *accB, const float *dstate, int N, int Di)
{
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (int64_t)N * Di) return;
    const int q = (int)(idx / Di), c = (int)(idx % Di);
    carry[idx] = dstate ? dstate[(int64_t)c * N + q] : 0.0f;
    accA[idx] = 0.0;
    if (q == 0) accD[c] = accB[c] = 0.0;
}

/* --- launchers ------------------------------------------------------------------------------ */

/* Stream-ordered scratch (no device synchronisation on free); plain be->alloc in the CPU
 * stand-in. */
void *ts_scratch_alloc(md_backend_t *be, size_t bytes)
{
#ifdef MD_CUDA_EMU
    return be->alloc(be, bytes ? bytes : 1);
#else
    void *ptr = NULL;
    cudaError_t e = cudaMallocAsync(&ptr, bytes ? bytes : 256, CTX(be)->stream);
    if (e != cudaSuccess) {
        cudaGetLastError();
        md_error("out of device memory for %.1f MiB of scan scratch", bytes / 1048576.0);
        return NULL;
    }
    return ptr;
#endif
}
void ts_scratch_free(md_backend_t *be, void *ptr)
{
    if (!ptr) return;
#ifdef MD_CUDA_EMU
    be->free(be, ptr);
#else
    cudaFreeAsync(ptr, CTX(be)->stream);
#endif
}

int ts_check(int64_t n, int Di, int N, const md_tscan_t *d, const char *func)
{
    if (N < 1 || N > 16 || Di < 1) {
        md_error("%s: unsupported scan shape: d_state %d, d_inner %d (1..16, >= 1)", func, N, Di);
        return -2;
    }
    if (d->T < 1) {
        md_error("%s: scan chunk %d < 1", func, d->T);
        return -2;
    }
    if (!d->x || !d->dt || !d->B || !d->C || !d->A || (n > 0 && !d->chunk_states)) {
        md_error("%s: x, dt, B, C, A and chunk_states are required", func);
        return -2;
    }
    return 0;
}

void ts_fill(TsP &p, int64_t n, int Di, int N, const md_tscan_t *d, const uint8_t *seq_start)
{
    memset(&p, 0, sizeof p);
    p.x = d->x; p.ldx = d->ldx;
    p.dt = d->dt; p.lddt = d->lddt;
    p.B = d->B; p.C = d->C; p.ldbc = d->ldbc;
    p.z = d->z; p.ldz = d->ldz;
    p.dy = d->dy; p.lddy = d->lddy;
    p.A = d->A; p.D = d->D; p.dt_bias = d->dt_bias;
    p.reverse = d->reverse != 0;
    p.Di = Di; p.N = N; p.T = d->T; p.n = n;
    p.ss = seq_start;
    p.chunk_states = d->chunk_states;
}

template <typename T, int NS>
int ts_fwd_launch(md_backend_t *be, TsP &p)
{
    cuda_ctx_t *cx = CTX(be);
    constexpr bool FAST = sizeof(T) == 2;
    const unsigned gy = ceil_div_u(p.Di, TS_CT);
    auto k1 = ts_fwd_kernel<T, NS, FAST, 0>;
    MD_LAUNCH(k1, dim3((unsigned)p.nseg, gy), TS_CT, cx->stream, p);
    LAUNCH_CHECK(cx);
    MD_LAUNCH(ts_fwd_carry, ceil_div_u((int64_t)p.N * p.Di, 128), 128, cx->stream, p);
    LAUNCH_CHECK(cx);
    auto k3 = ts_fwd_kernel<T, NS, FAST, 1>;
    MD_LAUNCH(k3, dim3((unsigned)p.nseg, gy), TS_CT, cx->stream, p);
    LAUNCH_CHECK(cx);
    return 0;
}

template <typename T, int NS>
int ts_bwd_launch(md_backend_t *be, TsP &p, const md_tscan_t *d, int64_t gchunks)
{
    cuda_ctx_t *cx = CTX(be);
    constexpr bool FAST = sizeof(T) == 2;
    const unsigned gy = ceil_div_u(p.Di, TS_CT);
    const int64_t nst = (int64_t)p.N * p.Di;
    const int64_t nch = (p.n + p.T - 1) / p.T;
    const int64_t ngr = (nch + gchunks - 1) / gchunks;
    MD_LAUNCH(ts_carry_init, ceil_div_u(nst, 128), 128, cx->stream, p.carry, p.accA, p.accD, p.accB, d->dstate,
              p.N, p.Di);
    LAUNCH_CHECK(cx);
    for (int64_t gi = ngr - 1; gi >= 0; gi--) {
        const int64_t j0 = gi * gchunks, j1 = j0 + gchunks < nch ? j0 + gchunks : nch;
        p.s0 = j0 * p.spc;
        p.nseg = (j1 - j0) * p.spc;
        p.gu0 = j0 * p.T;
        p.glen = (j1 * p.T < p.n ? j1 * p.T : p.n) - p.gu0;
        if (p.spc > 1) { /* K0 over the group's chunks */
            auto k0 = ts_fwd_kernel<T, NS, FAST, 2>;
            p.cbase = j0;
            MD_LAUNCH(k0, dim3((unsigned)(j1 - j0), gy), TS_CT, cx->stream, p);
            LAUNCH_CHECK(cx);
        }
        auto ka = ts_bwd_local<T, NS, FAST>;
        MD_LAUNCH(ka, dim3((unsigned)p.nseg, gy), TS_CT, cx->stream, p);
        LAUNCH_CHECK(cx);
        MD_LAUNCH(ts_bwd_carry, ceil_div_u(nst, 128), 128, cx->stream, p);
        LAUNCH_CHECK(cx);
        auto kb = ts_bwd_main<T, NS, FAST>;
        MD_LAUNCH(kb, dim3((unsigned)p.nseg, gy), TS_CT, cx->stream, p);
        LAUNCH_CHECK(cx);
        auto kd = ts_bwd_dbc<T>;
        MD_LAUNCH(kd, ceil_div_u(p.glen * 2 * p.N, 256), 256, cx->stream, p, (int)gy);
        LAUNCH_CHECK(cx);
        MD_LAUNCH(ts_bwd_reduce, ceil_div_u(nst, 128), 128, cx->stream, p);
        LAUNCH_CHECK(cx);
    }
    MD_LAUNCH(ts_bwd_final, ceil_div_u(nst, 128), 128, cx->stream, p, d->dA_log, d->D ? d->dD : NULL,
              d->dt_bias ? d->ddt_bias : NULL, d->dstate);
    LAUNCH_CHECK(cx);
    return 0;
}

} // namespace

extern "C" int md_cuda_tscan_fwd(md_backend_t *be, int64_t n, int Di, int N, const md_tscan_t *d, void *y, int64_t ldy,
                                 int accumulate, const uint8_t *seq_start)
{
    if (ts_check(n, Di, N, d, __func__) < 0) return -2;
    if (!y) {
        md_error("y is required");
        return -2;
    }
    if (n <= 0) return 0;
    TsP p;
    ts_fill(p, n, Di, N, d, seq_start);
    p.y = y;
    p.ldy = ldy;
    p.accumulate = accumulate != 0;
    p.state = d->state;
    p.L = d->T < TS_FWD_SEG ? d->T : TS_FWD_SEG;
    p.spc = (d->T + p.L - 1) / p.L;
    const int64_t nch = (n + d->T - 1) / d->T;
    p.s0 = 0;
    p.nseg = nch * p.spc;
    if (p.nseg > INT32_MAX) {
        md_error("%lld scan segments: sequence too long", (long long)p.nseg);
        return -2;
    }
    const size_t bytes = (size_t)p.nseg * Di * (N + 1) * sizeof(float);
    float *buf = (float *)ts_scratch_alloc(be, bytes);
    if (!buf) return -2;
    p.hbuf = buf;
    p.sbuf = buf + (size_t)p.nseg * N * Di;
    int rc = CTX(be)->bf16 ? (N <= 8 ? ts_fwd_launch<bf16, 8>(be, p) : ts_fwd_launch<bf16, 16>(be, p))
                           : (N <= 8 ? ts_fwd_launch<float, 8>(be, p) : ts_fwd_launch<float, 16>(be, p));
    ts_scratch_free(be, buf);
    return rc;
}

extern "C" int md_cuda_tscan_bwd(md_backend_t *be, int64_t n, int Di, int N, const md_tscan_t *d, const uint8_t *seq_start)
{
    if (ts_check(n, Di, N, d, __func__) < 0) return -2;
    if (!d->dy || !d->dx || !d->ddt || !d->dB || !d->dC || !d->dA_log || (d->z && !d->dz) || (d->D && !d->dD) ||
        (d->dt_bias && !d->ddt_bias)) {
        md_error("dy, dx, ddt, dB, dC, dA_log (and dz, dD, ddt_bias with z, D, dt_bias) are required");
        return -2;
    }
    TsP p;
    ts_fill(p, n, Di, N, d, seq_start);
    p.dx = d->dx; p.lddx = d->lddx;
    p.ddt = d->ddt; p.ldddt = d->ldddt;
    p.dz = d->dz; p.lddz = d->lddz;
    p.dBo = d->dB; p.dCo = d->dC; p.lddbc = d->lddbc;
    p.yb = d->y; p.ldyb = d->ldy;
    p.dz_acc = d->dz_accumulate != 0;
    p.y_acc = d->y_accumulate != 0;
    p.L = d->T < TS_SEG ? d->T : TS_SEG;
    p.spc = (d->T + p.L - 1) / p.L;
    /* positions per group: TS_GROUP, or MD_TSCAN_GROUP (tests use small groups to cover the
     * carry between groups without long sequences) */
    const char *genv = getenv("MD_TSCAN_GROUP");
    const int64_t group = genv && atoll(genv) > 0 ? atoll(genv) : TS_GROUP;
    const int64_t gchunks = d->T >= group ? 1 : group / d->T;
    const int64_t gseg = gchunks * p.spc, gpos = gchunks * d->T;
    const int ncb = (int)ceil_div_u(Di, TS_CT);
    const size_t nst = (size_t)N * Di;
    /* scratch: hst, cbuf [gseg][N][Di]; dbuf, bbuf [gseg][Di]; part [ncb][gpos][2N]; carry [N][Di];
     * accA [N][Di], accD, accB [Di] (double) */
    const size_t f_hst = p.spc > 1 ? gseg * nst : 0, f_cb = gseg * nst, f_db = (size_t)gseg * Di;
    const size_t f_part = (size_t)ncb * gpos * 2 * N;
    const size_t nf = f_hst + f_cb + 2 * f_db + f_part + nst;
    const size_t bytes = nf * sizeof(float) + (nst + 2 * (size_t)Di) * sizeof(double) + 16;
    char *buf = (char *)ts_scratch_alloc(be, bytes);
    if (!buf) return -2;
    double *dd = (double *)buf;
    p.accA = dd;
    p.accD = dd + nst;
    p.accB = dd + nst + Di;
    float *f = (float *)(dd + nst + 2 * Di);
    p.carry = f;
    f += nst;
    p.hst = f_hst ? f : NULL;
    f += f_hst;
    p.cbuf = f;
    f += f_cb;
    p.dbuf = f;
    f += f_db;
    p.bbuf = f;
    f += f_db;
    p.part = f;
    int rc;
    if (n <= 0) {
        /* nothing to walk: dA_log etc. unchanged, dstate passes through unchanged */
        rc = 0;
    } else {
        rc = CTX(be)->bf16 ? (N <= 8 ? ts_bwd_launch<bf16, 8>(be, p, d, gchunks) : ts_bwd_launch<bf16, 16>(be, p, d, gchunks))
                           : (N <= 8 ? ts_bwd_launch<float, 8>(be, p, d, gchunks) : ts_bwd_launch<float, 16>(be, p, d, gchunks));
    }
    ts_scratch_free(be, buf);
    return rc;
}
