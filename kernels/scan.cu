/* scan.cu: the Mamba-1 selective scan (the scan contract of backend.h), both directions of a
 * BiMamba layer in one call, fp32 state, packed-sequence resets, h0 in / h_last out.
 *
 * Three kernels (MD_CUDA_SCAN picks one for comparisons). v1a (the default for d_state 16) is v1
 * below with its per-position inputs staged in shared memory by cp.async a tile ahead (section
 * "v1 with asynchronous input tiles"); v1 (all other shapes) loads them per position; v2 (the
 * "v2" section, measured slower) walks each channel group through the whole call and evaluates
 * exp2 once per state update.
 *
 * v1 algorithm (segment-parallel, three launches). Positions are cut into nseg segments of seglen;
 * a thread owns one channel (lanes = consecutive channels, so every load of x/dt/z/y is a
 * coalesced row piece) and all N states in registers; B and C of a tile of positions are staged
 * in shared memory once per block of 128 channels and read as broadcasts.
 *   pass 1   per (direction, segment, channel): run the segment from h = 0 -> local end state hl,
 *            and the decay exponent sum S = sum(delta) since the last reset (-1 if a reset
 *            occurred: the incoming state is dead). The segment maps h -> exp2(A2 S) h + hl.
 *   carry    per (direction, state, channel): walk the segments in scan order from the h0 in
 *            `state`, storing each segment's incoming state (in place of hl).
 *   pass 3   per (segment, channel), both directions in turn: rerun the segment from its
 *            incoming state with outputs: softplus(dt + bias), D skip, SiLU(z) gate; direction 0
 *            writes y (= or +=), direction 1 adds to it (same thread, so the sum is
 *            deterministic); the thread of the last segment in scan order writes h_last.
 * The exp2 work is done twice (pass 1 and pass 3); in exchange every launch is fully parallel
 * along the sequence and no per-position state is stored. A reverse direction walks its segments
 * and their positions backwards (no flipped copies); its resets are seq_start[t+1].
 * Numerics: fp32 state and arithmetic; exp(delta*A) as ex2.approx(delta*A*log2 e) (optionally
 * a polynomial on the FMA pipe for some states, MD_CUDA_SCAN_POLY); softplus and SiLU with
 * accurate expf/log1pf in fp32 mode and __expf/__logf in bf16 mode. 64-bit indices.
 * Tuning (environment, read at open; v1 only): MD_CUDA_SCAN_NSEG target segments per call
 * (default ~2 waves of (channel, segment) threads), MD_CUDA_SCAN_POLY 0/2/4 sixteenths of the
 * states. */
#include "common.cuh"

#define SCAN_CT 128 /* channels (threads) per block */
#define SCAN_TT 32  /* positions per shared-memory tile */
#define LOG2E 1.4426950408889634f

struct ScanDirP {
    const void *x, *dt, *B, *C, *z;
    int64_t ldx, lddt, ldbc, ldz;
    const float *A, *D, *dt_bias;
    float *state;
    int reverse;
};

struct ScanP {
    ScanDirP d[2];
    int ndir, Di, N, accumulate;
    int64_t n, seglen, nseg;
    void *y;
    int64_t ldy;
    const uint8_t *ss;
    float *hbuf; /* [ndir][nseg][N][Di] local end state, then incoming state */
    float *sbuf; /* [ndir][nseg][Di] decay exponent sum, -1 = dead */
};

template <bool FAST>
__device__ __forceinline__ float softplus_f(float v)
{
    if (v > 20.0f) return v;
    return FAST ? __logf(1.0f + __expf(v)) : log1pf(expf(v));
}

template <bool FAST>
__device__ __forceinline__ float silu_f(float v)
{
    return FAST ? __fdividef(v, 1.0f + __expf(-v)) : v / (1.0f + expf(-v));
}

__device__ __forceinline__ const ScanDirP &dir_of(const ScanP &p, int dir) { return dir ? p.d[1] : p.d[0]; }

/* Stage B (and C) rows of scan positions [k0, k0+cnt) of segment [t0, t1), zero-padded to NS
 * states and SCAN_TT positions, and the reset flags. */
template <typename T, int NS, bool WITH_C>
__device__ __forceinline__ void stage_tile(const ScanP &p, const ScanDirP &d, int64_t t0, int64_t t1, int64_t k0,
                                           int cnt, float (*sB)[NS], float (*sC)[NS], uint8_t *sR)
{
    const T *B = (const T *)d.B, *C = (const T *)d.C;
    for (int i = threadIdx.x; i < SCAN_TT * NS; i += SCAN_CT) {
        const int k = i / NS, q = i % NS;
        float vb = 0.0f, vc = 0.0f;
        if (k < cnt && q < p.N) {
            const int64_t t = d.reverse ? t1 - 1 - (k0 + k) : t0 + k0 + k;
            vb = ld_act(B + t * d.ldbc + q);
            if (WITH_C) vc = ld_act(C + t * d.ldbc + q);
        }
        sB[k][q] = vb;
        if (WITH_C) sC[k][q] = vc;
    }
    for (int k = threadIdx.x; k < SCAN_TT; k += SCAN_CT) {
        uint8_t r = 0;
        if (k < cnt && p.ss) {
            const int64_t t = d.reverse ? t1 - 1 - (k0 + k) : t0 + k0 + k;
            r = __ldg(p.ss + (d.reverse ? t + 1 : t));
        }
        sR[k] = r;
    }
}

/* 2^x on the FMA pipe for x <= 0 (clamped at -125): x = j + f, |f| <= 1/2, degree-6 Taylor of
 * 2^f (relative error < 2e-7, like ex2.approx), 2^j added to the exponent field. Used for the
 * first P of every 16 states to take load off the MUFU unit that ex2 runs on (MD_CUDA_SCAN_POLY). */
__device__ __forceinline__ float poly_ex2(float x)
{
    x = fmaxf(x, -125.0f);
    const float t = x + 12582912.0f; /* 1.5 * 2^23: t's low mantissa bits hold round(x) */
    const float f = x - (t - 12582912.0f);
    float q = 1.5403530393e-4f;
    q = fmaf(q, f, 1.3333558146e-3f);
    q = fmaf(q, f, 9.6181291076e-3f);
    q = fmaf(q, f, 5.5504108665e-2f);
    q = fmaf(q, f, 2.4022650696e-1f);
    q = fmaf(q, f, 6.9314718056e-1f);
    q = fmaf(q, f, 1.0f);
    const unsigned j = (unsigned)(__float_as_int(t) - 0x4B400000);
    return __int_as_float(__float_as_int(q) + (int)(j << 23));
}

template <int P>
__device__ __forceinline__ float ex2_sel(int q, float x)
{
    return (q & 15) < P ? poly_ex2(x) : fast_ex2(x);
}

template <typename T, int NS, bool FAST, int P>
__global__ void __launch_bounds__(SCAN_CT) scan_pass1(ScanP p)
{
    __shared__ __align__(16) float sB[SCAN_TT][NS];
    __shared__ uint8_t sR[SCAN_TT];
    const int dir = blockIdx.z;
    const ScanDirP &d = dir_of(p, dir);
    const int c = blockIdx.x * SCAN_CT + threadIdx.x;
    const bool act = c < p.Di;
    const int64_t s = blockIdx.y, t0 = s * p.seglen, t1 = t0 + p.seglen < p.n ? t0 + p.seglen : p.n;
    const int64_t len = t1 - t0;
    const T *x = (const T *)d.x, *dt = (const T *)d.dt;
    /* scan-local index k of this segment <-> position t = tb + ts * k */
    const int64_t tb = d.reverse ? t1 - 1 : t0, ts = d.reverse ? -1 : 1;
    float A2[NS], h[NS];
#pragma unroll
    for (int q = 0; q < NS; q++) {
        A2[q] = (act && q < p.N) ? __ldg(d.A + (int64_t)c * p.N + q) * LOG2E : 0.0f;
        h[q] = 0.0f;
    }
    const float bias = (act && d.dt_bias) ? __ldg(d.dt_bias + c) : 0.0f;
    float sumd = 0.0f;
    bool dead = false;
    /* loads of the next position are issued before the current one is computed */
    float un = 0.0f, vn = 0.0f;
    if (act && len > 0) {
        un = ld_act(x + tb * d.ldx + c);
        vn = ld_act(dt + tb * d.lddt + c);
    }
    for (int64_t k0 = 0; k0 < len; k0 += SCAN_TT) {
        const int cnt = len - k0 < SCAN_TT ? (int)(len - k0) : SCAN_TT;
        __syncthreads();
        stage_tile<T, NS, false>(p, d, t0, t1, k0, cnt, sB, NULL, sR);
        __syncthreads();
        if (!act) continue;
        for (int k = 0; k < cnt; k++) {
            const float u = un, v = vn + bias;
            if (k0 + k + 1 < len) {
                const int64_t t = tb + ts * (k0 + k + 1);
                un = ld_act(x + t * d.ldx + c);
                vn = ld_act(dt + t * d.lddt + c);
            }
            if (sR[k]) {
#pragma unroll
                for (int q = 0; q < NS; q++) h[q] = 0.0f;
                sumd = 0.0f;
                dead = true;
            }
            const float delta = softplus_f<FAST>(v), du = delta * u;
            sumd += delta;
#pragma unroll
            for (int q = 0; q < NS; q++) h[q] = fmaf(ex2_sel<P>(q, delta * A2[q]), h[q], du * sB[k][q]);
        }
    }
    if (!act) return;
    float *hb = p.hbuf + ((int64_t)dir * p.nseg + s) * p.N * p.Di + c;
#pragma unroll
    for (int q = 0; q < NS; q++)
        if (q < p.N) hb[(int64_t)q * p.Di] = h[q];
    p.sbuf[((int64_t)dir * p.nseg + s) * p.Di + c] = dead ? -1.0f : sumd;
}

#define CARRY_B 16 /* segments whose loads are issued together */

template <bool FAST>
__global__ void scan_carry(ScanP p)
{
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t per = (int64_t)p.N * p.Di;
    if (idx >= per * p.ndir) return;
    const int dir = (int)(idx / per);
    const int q = (int)((idx % per) / p.Di), c = (int)(idx % p.Di);
    const ScanDirP &d = dir_of(p, dir);
    float h = d.state[(int64_t)c * p.N + q];
    const float A2 = d.A[(int64_t)c * p.N + q] * LOG2E;
    float *hb = p.hbuf + (int64_t)dir * p.nseg * per + (int64_t)q * p.Di + c;
    const float *sb = p.sbuf + (int64_t)dir * p.nseg * p.Di + c;
    for (int64_t j0 = 0; j0 < p.nseg; j0 += CARRY_B) {
        float hl[CARRY_B], sd[CARRY_B];
#pragma unroll
        for (int j = 0; j < CARRY_B; j++) {
            const int64_t jj = j0 + j, s = d.reverse ? p.nseg - 1 - jj : jj;
            hl[j] = jj < p.nseg ? hb[s * per] : 0.0f;
            sd[j] = jj < p.nseg ? sb[s * p.Di] : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < CARRY_B; j++) {
            const int64_t jj = j0 + j, s = d.reverse ? p.nseg - 1 - jj : jj;
            if (jj < p.nseg) {
                hb[s * per] = h;
                const float a = sd[j] < 0.0f ? 0.0f : (FAST ? fast_ex2(A2 * sd[j]) : exp2f(A2 * sd[j]));
                h = fmaf(a, h, hl[j]);
            }
        }
    }
}

template <typename T, int NS, bool FAST, int P>
__global__ void __launch_bounds__(SCAN_CT) scan_pass3(ScanP p)
{
    __shared__ __align__(16) float sB[SCAN_TT][NS];
    __shared__ __align__(16) float sC[SCAN_TT][NS];
    __shared__ uint8_t sR[SCAN_TT];
    const int c = blockIdx.x * SCAN_CT + threadIdx.x;
    const bool act = c < p.Di;
    const int64_t s = blockIdx.y, t0 = s * p.seglen, t1 = t0 + p.seglen < p.n ? t0 + p.seglen : p.n;
    const int64_t len = t1 - t0;
    T *y = (T *)p.y;
    for (int dir = 0; dir < p.ndir; dir++) {
        const ScanDirP &d = dir_of(p, dir);
        const T *x = (const T *)d.x, *dt = (const T *)d.dt, *z = (const T *)d.z;
        const int64_t tb = d.reverse ? t1 - 1 : t0, ts = d.reverse ? -1 : 1;
        float A2[NS], h[NS];
        const float *hin = p.nseg > 1 ? p.hbuf + ((int64_t)dir * p.nseg + s) * p.N * p.Di + c : NULL;
#pragma unroll
        for (int q = 0; q < NS; q++) {
            const bool ok = act && q < p.N;
            A2[q] = ok ? __ldg(d.A + (int64_t)c * p.N + q) * LOG2E : 0.0f;
            h[q] = ok ? (hin ? hin[(int64_t)q * p.Di] : d.state[(int64_t)c * p.N + q]) : 0.0f;
        }
        const float bias = (act && d.dt_bias) ? __ldg(d.dt_bias + c) : 0.0f;
        const float Dc = (act && d.D) ? __ldg(d.D + c) : 0.0f;
        const bool add = dir > 0 || p.accumulate;
        /* next position's inputs (and the y it adds to) are loaded one step ahead */
        float un = 0.0f, vn = 0.0f, zn = 0.0f, yn = 0.0f;
        if (act && len > 0) {
            un = ld_act(x + tb * d.ldx + c);
            vn = ld_act(dt + tb * d.lddt + c);
            if (z) zn = ld_act(z + tb * d.ldz + c);
            if (add) yn = ld_rw(y + tb * p.ldy + c);
        }
        for (int64_t k0 = 0; k0 < len; k0 += SCAN_TT) {
            const int cnt = len - k0 < SCAN_TT ? (int)(len - k0) : SCAN_TT;
            __syncthreads();
            stage_tile<T, NS, true>(p, d, t0, t1, k0, cnt, sB, sC, sR);
            __syncthreads();
            if (!act) continue;
            for (int k = 0; k < cnt; k++) {
                const int64_t t = tb + ts * (k0 + k);
                const float u = un, v = vn + bias, zv = zn, yo = yn;
                if (k0 + k + 1 < len) {
                    const int64_t tn = t + ts;
                    un = ld_act(x + tn * d.ldx + c);
                    vn = ld_act(dt + tn * d.lddt + c);
                    if (z) zn = ld_act(z + tn * d.ldz + c);
                    if (add) yn = ld_rw(y + tn * p.ldy + c);
                }
                if (sR[k]) {
#pragma unroll
                    for (int q = 0; q < NS; q++) h[q] = 0.0f;
                }
                const float delta = softplus_f<FAST>(v), du = delta * u;
                float yv = Dc * u;
#pragma unroll
                for (int q = 0; q < NS; q++) {
                    h[q] = fmaf(ex2_sel<P>(q, delta * A2[q]), h[q], du * sB[k][q]);
                    yv = fmaf(sC[k][q], h[q], yv);
                }
                if (z) yv *= silu_f<FAST>(zv);
                st_act(y + t * p.ldy + c, add ? yo + yv : yv);
            }
        }
        const bool last = d.reverse ? s == 0 : s == p.nseg - 1;
        if (act && last) {
#pragma unroll
            for (int q = 0; q < NS; q++)
                if (q < p.N) d.state[(int64_t)c * p.N + q] = h[q];
        }
    }
}

template <typename T, int NS, int P>
static int launch(cuda_ctx_t *cx, ScanP &p)
{
    constexpr bool FAST = sizeof(T) == 2;
    const unsigned gx = ceil_div_u(p.Di, SCAN_CT);
    if (p.nseg > 1) {
        auto k1 = scan_pass1<T, NS, FAST, P>;
        MD_LAUNCH(k1, dim3(gx, (unsigned)p.nseg, p.ndir), SCAN_CT, cx->stream, p);
        LAUNCH_CHECK(cx);
        const int64_t nt = (int64_t)p.ndir * p.N * p.Di;
        auto k2 = scan_carry<FAST>;
        MD_LAUNCH(k2, ceil_div_u(nt, 128), 128, cx->stream, p);
        LAUNCH_CHECK(cx);
    }
    auto k3 = scan_pass3<T, NS, FAST, P>;
    MD_LAUNCH(k3, dim3(gx, (unsigned)p.nseg), SCAN_CT, cx->stream, p);
    LAUNCH_CHECK(cx);
    return 0;
}

/* --- v1 with asynchronous input tiles (MD_CUDA_SCAN=v1a) -------------------------------------
 * The same three passes as v1, but the per-position inputs (x and dt; z and the y added to in
 * pass 3) of a tile of A1_TP<T> positions x SCAN_CT channels are copied into shared memory with
 * cp.async, one tile ahead (two buffers), instead of being loaded per position into registers:
 * Nsight Compute showed v1 stalled on those global loads (long scoreboard ~half of the samples)
 * at 27-40 % occupancy, and prefetching into registers cost occupancy. B/C (and the reset
 * flags) of the next tile come in registers (4 values per thread). Used when every row piece is
 * 16-byte aligned (leading dimensions and bases); otherwise the tiles are filled by plain loads. */
template <typename T>
struct A1 {
    static constexpr int TP = sizeof(T) == 2 ? 16 : 8;           /* positions per tile */
    static constexpr int EV = 16 / (int)sizeof(T);                /* elements per 16-B chunk */
    static constexpr int CPR = SCAN_CT / EV;                      /* chunks per row piece */
};

__device__ __forceinline__ void cp_async16(void *smem, const void *g, int bytes)
{
#ifdef MD_CUDA_EMU
    memset(smem, 0, 16);
    if (bytes > 0) memcpy(smem, g, (size_t)bytes);
#else
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(g), "r"(bytes));
#endif
}
__device__ __forceinline__ void cp_async_commit()
{
#ifndef MD_CUDA_EMU
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
__device__ __forceinline__ void cp_async_wait1()
{
#ifndef MD_CUDA_EMU
    asm volatile("cp.async.wait_group 1;\n" ::);
#endif
}

/* Input tile: NT tensors (x, dt[, z, y]) of scan indices [k0, k0+TP) of segment [t0, t1) into
 * buf[tensor][row][channel]; rows past the segment and channels past Di are zero. */
template <typename T, int NT, bool ASYNC>
__device__ __forceinline__ void a1_fill(const ScanP &p, const ScanDirP &d, int64_t t0, int64_t t1, int64_t k0,
                                        const T *const src[4], const int64_t ld[4], T (*buf)[A1<T>::TP][SCAN_CT])
{
    typedef A1<T> S;
    const int64_t len = t1 - t0;
    const int c0 = blockIdx.x * SCAN_CT;
    if (ASYNC) {
        for (int q = threadIdx.x; q < NT * S::TP * S::CPR; q += SCAN_CT) {
            const int ten = q / (S::TP * S::CPR), rem = q % (S::TP * S::CPR), row = rem / S::CPR, piece = rem % S::CPR;
            const int cc = c0 + piece * S::EV;
            int bytes = 0;
            const T *g = src[ten];
            if (k0 + row < len && cc < p.Di) {
                const int64_t t = d.reverse ? t1 - 1 - (k0 + row) : t0 + k0 + row;
                g = src[ten] + t * ld[ten] + cc;
                bytes = (p.Di - cc < S::EV ? p.Di - cc : S::EV) * (int)sizeof(T);
            }
            cp_async16(&buf[ten][row][piece * S::EV], g, bytes);
        }
    } else {
        const int c = c0 + threadIdx.x;
        for (int ten = 0; ten < NT; ten++)
            for (int row = 0; row < S::TP; row++) {
                T v;
                memset(&v, 0, sizeof v);
                if (k0 + row < len && c < p.Di) {
                    const int64_t t = d.reverse ? t1 - 1 - (k0 + row) : t0 + k0 + row;
                    v = src[ten][t * ld[ten] + c];
                }
                buf[ten][row][threadIdx.x] = v;
            }
    }
}

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(bf16 v) { return __bfloat162float(v); }

/* B (and C) rows and reset flags of a TP-position tile, one tile ahead in registers. */
template <int NS, int TP>
struct TileA1 {
    static constexpr int E = (TP * NS + SCAN_CT - 1) / SCAN_CT;
    float b[E], c[E];
    uint8_t r;
};

template <typename T, int NS, bool WITH_C, int TP>
__device__ __forceinline__ void a1_tile_load(const ScanP &p, const ScanDirP &d, int64_t t0, int64_t t1, int64_t k0,
                                             TileA1<NS, TP> &f)
{
    const T *B = (const T *)d.B, *C = (const T *)d.C;
    const int64_t len = t1 - t0;
#pragma unroll
    for (int e = 0; e < TileA1<NS, TP>::E; e++) {
        const int i = threadIdx.x + e * SCAN_CT, k = i / NS, q = i % NS;
        float vb = 0.0f, vc = 0.0f;
        if (i < TP * NS && k0 + k < len && q < p.N) {
            const int64_t t = d.reverse ? t1 - 1 - (k0 + k) : t0 + k0 + k;
            vb = ld_act(B + t * d.ldbc + q);
            if (WITH_C) vc = ld_act(C + t * d.ldbc + q);
        }
        f.b[e] = vb;
        f.c[e] = vc;
    }
    f.r = 0;
    const int k = threadIdx.x;
    if (k < TP && k0 + k < len && p.ss) {
        const int64_t t = d.reverse ? t1 - 1 - (k0 + k) : t0 + k0 + k;
        f.r = __ldg(p.ss + (d.reverse ? t + 1 : t));
    }
}

template <int NS, bool WITH_C, int TP>
__device__ __forceinline__ void a1_tile_store(const TileA1<NS, TP> &f, float (*sB)[NS], float (*sC)[NS], uint8_t *sR)
{
#pragma unroll
    for (int e = 0; e < TileA1<NS, TP>::E; e++) {
        const int i = threadIdx.x + e * SCAN_CT;
        if (i < TP * NS) {
            sB[i / NS][i % NS] = f.b[e];
            if (WITH_C) sC[i / NS][i % NS] = f.c[e];
        }
    }
    if (threadIdx.x < TP) sR[threadIdx.x] = f.r;
}

template <typename T, int NS, bool FAST, bool ASYNC>
__global__ void __launch_bounds__(SCAN_CT) scan_a1_pass1(ScanP p)
{
    typedef A1<T> S;
    constexpr int TP = S::TP;
    __shared__ __align__(16) T sIn[2][2][TP][SCAN_CT];
    __shared__ __align__(16) float sB[TP][NS];
    __shared__ uint8_t sR[TP];
    const int dir = blockIdx.z;
    const ScanDirP &d = dir_of(p, dir);
    const int c = blockIdx.x * SCAN_CT + threadIdx.x;
    const bool act = c < p.Di;
    const int64_t s = blockIdx.y, t0 = s * p.seglen, t1 = t0 + p.seglen < p.n ? t0 + p.seglen : p.n;
    const int64_t len = t1 - t0;
    const T *const src[4] = { (const T *)d.x, (const T *)d.dt, NULL, NULL };
    const int64_t ld[4] = { d.ldx, d.lddt, 0, 0 };
    float A2[NS], h[NS];
#pragma unroll
    for (int q = 0; q < NS; q++) {
        A2[q] = (act && q < p.N) ? __ldg(d.A + (int64_t)c * p.N + q) * LOG2E : 0.0f;
        h[q] = 0.0f;
    }
    const float bias = (act && d.dt_bias) ? __ldg(d.dt_bias + c) : 0.0f;
    float sumd = 0.0f;
    bool dead = false;
    a1_fill<T, 2, ASYNC>(p, d, t0, t1, 0, src, ld, sIn[0]);
    cp_async_commit();
    TileA1<NS, TP> pre;
    a1_tile_load<T, NS, false, TP>(p, d, t0, t1, 0, pre);
    for (int64_t k0 = 0, i = 0; k0 < len; k0 += TP, i++) {
        const int cnt = len - k0 < TP ? (int)(len - k0) : TP;
        __syncthreads();
        a1_tile_store<NS, false, TP>(pre, sB, NULL, sR);
        if (k0 + TP < len) {
            a1_fill<T, 2, ASYNC>(p, d, t0, t1, k0 + TP, src, ld, sIn[(i + 1) & 1]);
            a1_tile_load<T, NS, false, TP>(p, d, t0, t1, k0 + TP, pre);
        }
        cp_async_commit();
        cp_async_wait1();
        __syncthreads();
        if (!act) continue;
        const T(*in)[TP][SCAN_CT] = sIn[i & 1];
        for (int k = 0; k < cnt; k++) {
            const float u = to_f(in[0][k][threadIdx.x]), v = to_f(in[1][k][threadIdx.x]) + bias;
            if (sR[k]) {
#pragma unroll
                for (int q = 0; q < NS; q++) h[q] = 0.0f;
                sumd = 0.0f;
                dead = true;
            }
            const float delta = softplus_f<FAST>(v), du = delta * u;
            sumd += delta;
#pragma unroll
            for (int q = 0; q < NS; q++) h[q] = fmaf(fast_ex2(delta * A2[q]), h[q], du * sB[k][q]);
        }
    }
    if (!act) return;
    float *hb = p.hbuf + ((int64_t)dir * p.nseg + s) * p.N * p.Di + c;
#pragma unroll
    for (int q = 0; q < NS; q++)
        if (q < p.N) hb[(int64_t)q * p.Di] = h[q];
    p.sbuf[((int64_t)dir * p.nseg + s) * p.Di + c] = dead ? -1.0f : sumd;
}

template <typename T, int NS, bool FAST, bool ASYNC>
__global__ void __launch_bounds__(SCAN_CT) scan_a1_pass3(ScanP p)
{
    typedef A1<T> S;
    constexpr int TP = S::TP;
    __shared__ __align__(16) T sIn[2][4][TP][SCAN_CT];
    __shared__ __align__(16) float sB[TP][NS];
    __shared__ __align__(16) float sC[TP][NS];
    __shared__ uint8_t sR[TP];
    const int c = blockIdx.x * SCAN_CT + threadIdx.x;
    const bool act = c < p.Di;
    const int64_t s = blockIdx.y, t0 = s * p.seglen, t1 = t0 + p.seglen < p.n ? t0 + p.seglen : p.n;
    const int64_t len = t1 - t0;
    T *y = (T *)p.y;
    for (int dir = 0; dir < p.ndir; dir++) {
        const ScanDirP &d = dir_of(p, dir);
        const bool add = dir > 0 || p.accumulate, hz = d.z != NULL;
        /* tensors: x, dt, then z and/or y packed after them */
        const int nt = 2 + (hz ? 1 : 0) + (add ? 1 : 0), iz = 2, iy = hz ? 3 : 2;
        const T *src[4] = { (const T *)d.x, (const T *)d.dt, NULL, NULL };
        int64_t ld[4] = { d.ldx, d.lddt, 0, 0 };
        if (hz) { src[iz] = (const T *)d.z; ld[iz] = d.ldz; }
        if (add) { src[iy] = (const T *)p.y; ld[iy] = p.ldy; }
        const int64_t tb = d.reverse ? t1 - 1 : t0, ts = d.reverse ? -1 : 1;
        float A2[NS], h[NS];
        const float *hin = p.nseg > 1 ? p.hbuf + ((int64_t)dir * p.nseg + s) * p.N * p.Di + c : NULL;
#pragma unroll
        for (int q = 0; q < NS; q++) {
            const bool ok = act && q < p.N;
            A2[q] = ok ? __ldg(d.A + (int64_t)c * p.N + q) * LOG2E : 0.0f;
            h[q] = ok ? (hin ? hin[(int64_t)q * p.Di] : d.state[(int64_t)c * p.N + q]) : 0.0f;
        }
        const float bias = (act && d.dt_bias) ? __ldg(d.dt_bias + c) : 0.0f;
        const float Dc = (act && d.D) ? __ldg(d.D + c) : 0.0f;
        __syncthreads(); /* the previous direction's reads of sIn are done */
        if (nt == 4) a1_fill<T, 4, ASYNC>(p, d, t0, t1, 0, src, ld, sIn[0]);
        else if (nt == 3) a1_fill<T, 3, ASYNC>(p, d, t0, t1, 0, src, ld, sIn[0]);
        else a1_fill<T, 2, ASYNC>(p, d, t0, t1, 0, src, ld, sIn[0]);
        cp_async_commit();
        TileA1<NS, TP> pre;
        a1_tile_load<T, NS, true, TP>(p, d, t0, t1, 0, pre);
        for (int64_t k0 = 0, i = 0; k0 < len; k0 += TP, i++) {
            const int cnt = len - k0 < TP ? (int)(len - k0) : TP;
            __syncthreads();
            a1_tile_store<NS, true, TP>(pre, sB, sC, sR);
            if (k0 + TP < len) {
                if (nt == 4) a1_fill<T, 4, ASYNC>(p, d, t0, t1, k0 + TP, src, ld, sIn[(i + 1) & 1]);
                else if (nt == 3) a1_fill<T, 3, ASYNC>(p, d, t0, t1, k0 + TP, src, ld, sIn[(i + 1) & 1]);
                else a1_fill<T, 2, ASYNC>(p, d, t0, t1, k0 + TP, src, ld, sIn[(i + 1) & 1]);
                a1_tile_load<T, NS, true, TP>(p, d, t0, t1, k0 + TP, pre);
            }
            cp_async_commit();
            cp_async_wait1();
            __syncthreads();
            if (!act) continue;
            const T(*in)[TP][SCAN_CT] = sIn[i & 1];
            for (int k = 0; k < cnt; k++) {
                const int64_t t = tb + ts * (k0 + k);
                const float u = to_f(in[0][k][threadIdx.x]), v = to_f(in[1][k][threadIdx.x]) + bias;
                const float zv = hz ? to_f(in[iz][k][threadIdx.x]) : 0.0f;
                const float yo = add ? to_f(in[iy][k][threadIdx.x]) : 0.0f;
                if (sR[k]) {
#pragma unroll
                    for (int q = 0; q < NS; q++) h[q] = 0.0f;
                }
                const float delta = softplus_f<FAST>(v), du = delta * u;
                float yv = Dc * u;
#pragma unroll
                for (int q = 0; q < NS; q++) {
                    h[q] = fmaf(fast_ex2(delta * A2[q]), h[q], du * sB[k][q]);
                    yv = fmaf(sC[k][q], h[q], yv);
                }
                if (hz) yv *= silu_f<FAST>(zv);
                st_act(y + t * p.ldy + c, add ? yo + yv : yv);
            }
        }
        const bool last = d.reverse ? s == 0 : s == p.nseg - 1;
        if (act && last) {
#pragma unroll
            for (int q = 0; q < NS; q++)
                if (q < p.N) d.state[(int64_t)c * p.N + q] = h[q];
        }
    }
}


/* cp.async needs every row piece 16-byte aligned: bases and leading dimensions of x, dt, z, y */
template <typename T>
static bool a1_async_ok(const ScanP &p)
{
    const size_t e = sizeof(T);
    bool ok = (p.ldy * e) % 16 == 0 && (uintptr_t)p.y % 16 == 0;
    for (int k = 0; k < p.ndir; k++) {
        const ScanDirP &d = p.d[k];
        ok = ok && (d.ldx * e) % 16 == 0 && (uintptr_t)d.x % 16 == 0 && (d.lddt * e) % 16 == 0 &&
             (uintptr_t)d.dt % 16 == 0 && (!d.z || ((d.ldz * e) % 16 == 0 && (uintptr_t)d.z % 16 == 0));
    }
    return ok;
}

template <typename T, bool ASYNC>
static int launch_a1(cuda_ctx_t *cx, ScanP &p)
{
    constexpr bool FAST = sizeof(T) == 2;
    const unsigned gx = ceil_div_u(p.Di, SCAN_CT);
    if (p.nseg > 1) {
        auto k1 = scan_a1_pass1<T, 16, FAST, ASYNC>;
        MD_LAUNCH(k1, dim3(gx, (unsigned)p.nseg, p.ndir), SCAN_CT, cx->stream, p);
        LAUNCH_CHECK(cx);
        const int64_t nt = (int64_t)p.ndir * p.N * p.Di;
        auto k2 = scan_carry<FAST>;
        MD_LAUNCH(k2, ceil_div_u(nt, 128), 128, cx->stream, p);
        LAUNCH_CHECK(cx);
    }
    auto k3 = scan_a1_pass3<T, 16, FAST, ASYNC>;
    MD_LAUNCH(k3, dim3(gx, (unsigned)p.nseg), SCAN_CT, cx->stream, p);
    LAUNCH_CHECK(cx);
    return 0;
}

template <typename T>
static int launch_a1_any(cuda_ctx_t *cx, ScanP &p)
{
    return a1_async_ok<T>(p) ? launch_a1<T, true>(cx, p) : launch_a1<T, false>(cx, p);
}

/* --- v2: exp2 once per state update (d_state 16) ---------------------------------------------
 * A block owns V2_CB channels of one direction for the whole call and walks the positions in scan
 * order, a tile of V2_TT at a time, so the state entering each tile is known from the tile before
 * and no segment is ever run twice. Inside a tile the positions are cut into V2_J slices of V2_TS;
 * a thread owns (slice j, channel, 4 of the 16 states):
 *   stage    B/C rows of the tile (16-B loads issued one tile ahead, kept in registers) -> shared;
 *            delta = softplus(dt + bias) and u of each (position, channel) computed once -> shared
 *   local    run the slice from h = 0: a = exp2(delta A log2 e) kept in registers (the only exp2
 *            of the update), local end state and decay product -> shared
 *   combine  per (channel, state), one thread walks the 32 slices' maps h -> P h + H from the
 *            tile's incoming state (P = exp2(A2 sum delta): one exp2 per slice, not per update)
 *   rerun    each slice again from its true incoming state with the kept decays (FMA only),
 *            y partial over the thread's 4 states, summed over the 4 threads of a channel by a
 *            shuffle reduce-scatter; each thread then writes 1-2 positions (D skip, SiLU gate)
 * Directions run as consecutive launches; the second adds to y (deterministic sum). Parallelism
 * is Di / V2_CB blocks per launch (128 for d_inner 512: one per SM), each of 512 threads. */
#define V2_CB 4  /* channels per block */
#define V2_J 32  /* slices per tile */
#define V2_THREADS (V2_J * V2_CB * 4)
#define V2_PAIRS (V2_CB * 16) /* (channel, state) pairs of a block */

/* 16- and 8-byte vectors for loads the compiler must not split */
struct __align__(16) md_v16 {
    uint32_t w[4];
};
struct __align__(8) md_v8 {
    uint32_t w[2];
};

__device__ __forceinline__ void four_f(const float *p, float o[4])
{
    const md_v16 v = *(const md_v16 *)p;
#pragma unroll
    for (int i = 0; i < 4; i++) o[i] = __int_as_float((int)v.w[i]);
}
__device__ __forceinline__ void four_f(const bf16 *p, float o[4])
{
    const md_v8 v = *(const md_v8 *)p;
    o[0] = __int_as_float((int)(v.w[0] << 16));
    o[1] = __int_as_float((int)(v.w[0] & 0xffff0000u));
    o[2] = __int_as_float((int)(v.w[1] << 16));
    o[3] = __int_as_float((int)(v.w[1] & 0xffff0000u));
}

/* positions per slice: 8 in bf16 (tile 256), 4 in fp32 (tile 128), so the staged B/C tile
 * (16 KB) and the combine buffers (16 KB) stay within the 48 KB of static shared memory */
template <typename T>
struct V2Shape {
    static constexpr int TS = sizeof(T) == 2 ? 8 : 4;
    static constexpr int TT = V2_J * TS;
    static constexpr int M = TS / 4;                    /* positions a thread stages and writes */
    static constexpr int EV = 16 / (int)sizeof(T);      /* elements per 16-B vector */
    static constexpr int VPR = 32 / EV;                 /* vectors per position (B and C rows) */
    static constexpr int NV = TT * VPR / V2_THREADS;    /* vectors each thread stages */
};

/* What a thread loads one tile ahead: its share of the B/C rows and, for the positions it
 * stages (scan index k0 + j*TS + 4m + g), u, dt, z, the y it adds to and the reset flag. */
template <typename T>
struct V2Pre {
    md_v16 bc[V2Shape<T>::NV];
    float u[V2Shape<T>::M], dt[V2Shape<T>::M], z[V2Shape<T>::M], y[V2Shape<T>::M];
    int r[V2Shape<T>::M];
};

template <typename T>
__device__ __forceinline__ void v2_load(const ScanP &p, const ScanDirP &d, int64_t k0, int j, int c, int g, bool act,
                                        bool add, V2Pre<T> &f)
{
    typedef V2Shape<T> S;
    const int64_t n = p.n;
#pragma unroll
    for (int v = 0; v < S::NV; v++) {
        const int idx = threadIdx.x + v * V2_THREADS, row = idx / S::VPR, part = idx % S::VPR;
        const int64_t kk = k0 + row;
        md_v16 w = {{0u, 0u, 0u, 0u}};
        if (kk < n) {
            const int64_t t = d.reverse ? n - 1 - kk : kk;
            const T *src = part < S::VPR / 2 ? (const T *)d.B + t * d.ldbc + part * S::EV
                                             : (const T *)d.C + t * d.ldbc + (part - S::VPR / 2) * S::EV;
            w = *(const md_v16 *)src;
        }
        f.bc[v] = w;
    }
#pragma unroll
    for (int m = 0; m < S::M; m++) {
        const int64_t kk = k0 + (int64_t)j * S::TS + 4 * m + g;
        f.u[m] = f.dt[m] = f.z[m] = f.y[m] = 0.0f;
        f.r[m] = 0;
        if (kk < n) {
            const int64_t t = d.reverse ? n - 1 - kk : kk;
            if (p.ss) f.r[m] = __ldg(p.ss + (d.reverse ? t + 1 : t));
            if (act) {
                f.u[m] = ld_act((const T *)d.x + t * d.ldx + c);
                f.dt[m] = ld_act((const T *)d.dt + t * d.lddt + c);
                if (d.z) f.z[m] = ld_act((const T *)d.z + t * d.ldz + c);
                if (add) f.y[m] = ld_rw((const T *)p.y + t * p.ldy + c);
            }
        }
    }
}

template <typename T, bool FAST>
__global__ void __launch_bounds__(V2_THREADS, 1) scan_v2(ScanP p, int dir)
{
    typedef V2Shape<T> S;
    constexpr int TS = S::TS, TT = S::TT, M = S::M;
    __shared__ __align__(16) uint32_t sBC[TT * 32 * sizeof(T) / 4]; /* [TT][B 16 | C 16] of T */
    __shared__ __align__(16) float sDU[V2_J][V2_CB][TS + 1][2]; /* (delta, u); +1: fewer bank conflicts */
    __shared__ __align__(16) uint8_t sR[V2_J][TS];                  /* reset flags */
    __shared__ float exP[V2_J][V2_PAIRS];                           /* slice decay products */
    __shared__ float exH[V2_J][V2_PAIRS];                           /* slice end state, then h in */
    __shared__ float carry[V2_PAIRS];                               /* state entering the tile */

    const ScanDirP &d = dir_of(p, dir);
    const int tid = threadIdx.x, g = tid & 3, cl = (tid >> 2) & (V2_CB - 1), j = tid / (4 * V2_CB);
    const int c = blockIdx.x * V2_CB + cl;
    const bool act = c < p.Di;
    const bool add = dir > 0 || p.accumulate;
    const int64_t n = p.n;
    T *y = (T *)p.y;
    const T *sBCt = (const T *)sBC;

    float A2[4];
#pragma unroll
    for (int q = 0; q < 4; q++) A2[q] = act ? __ldg(d.A + (int64_t)c * 16 + 4 * g + q) * LOG2E : 0.0f;
    const float bias = (act && d.dt_bias) ? __ldg(d.dt_bias + c) : 0.0f;
    const float Dc = (act && d.D) ? __ldg(d.D + c) : 0.0f;
    if (tid < V2_PAIRS) {
        const int cc = blockIdx.x * V2_CB + tid / 16;
        carry[tid] = cc < p.Di ? d.state[(int64_t)cc * 16 + tid % 16] : 0.0f;
    }

    V2Pre<T> f;
    v2_load<T>(p, d, 0, j, c, g, act, add, f);
    for (int64_t k0 = 0; k0 < n; k0 += TT) {
        /* stage: B/C rows, (delta, u) and flags of this thread's positions 4m + g of slice j */
        __syncthreads();
#pragma unroll
        for (int v = 0; v < S::NV; v++) ((md_v16 *)sBC)[tid + v * V2_THREADS] = f.bc[v];
        float my_u[M], my_z[M], my_y[M];
#pragma unroll
        for (int m = 0; m < M; m++) {
            const float delta = act && k0 + (int64_t)j * TS + 4 * m + g < n ? softplus_f<FAST>(f.dt[m] + bias) : 0.0f;
            sDU[j][cl][4 * m + g][0] = delta;
            sDU[j][cl][4 * m + g][1] = f.u[m];
            if (cl == 0) sR[j][4 * m + g] = (uint8_t)f.r[m];
            my_u[m] = f.u[m];
            my_z[m] = f.z[m];
            my_y[m] = f.y[m];
        }
        __syncthreads();
        if (k0 + TT < n) v2_load<T>(p, d, k0 + TT, j, c, g, act, add, f);

        /* local: slice from h = 0; the decays are kept for the rerun. A reset makes the decay
         * 0 (exponent -inf), so the rerun needs no test; the slice's decay product is
         * exp2(A2 * sum delta), 0 when the slice holds a reset. */
        float a[TS][4], dl[TS], uu[TS], h[4];
        float dsum = 0.0f;
        bool dead = false;
#pragma unroll
        for (int q = 0; q < 4; q++) h[q] = 0.0f;
#pragma unroll
        for (int i = 0; i < TS; i++) {
            dl[i] = sDU[j][cl][i][0];
            uu[i] = sDU[j][cl][i][1];
            const bool r = sR[j][i] != 0;
            const float rx = r ? __int_as_float((int)0xff800000u) : 0.0f; /* -inf */
            dead |= r;
            dsum += dl[i];
            float b[4];
            four_f(sBCt + (j * TS + i) * 32 + 4 * g, b);
            const float du = dl[i] * uu[i];
#pragma unroll
            for (int q = 0; q < 4; q++) {
                a[i][q] = fast_ex2(fmaf(dl[i], A2[q], rx));
                h[q] = fmaf(a[i][q], h[q], du * b[q]);
            }
        }
#pragma unroll
        for (int q = 0; q < 4; q++) {
            exP[j][cl * 16 + 4 * g + q] = dead ? 0.0f : fast_ex2(A2[q] * dsum);
            exH[j][cl * 16 + 4 * g + q] = h[q];
        }
        __syncthreads();

        /* combine: one thread per (channel, state) walks the 32 slices from the tile's incoming
         * state, leaving each slice's incoming state in exH and the next tile's in carry */
        if (tid < V2_PAIRS) {
            float hc = carry[tid];
#pragma unroll 8
            for (int jj = 0; jj < V2_J; jj++) {
                const float pj = exP[jj][tid], hj = exH[jj][tid];
                exH[jj][tid] = hc;
                hc = fmaf(pj, hc, hj);
            }
            carry[tid] = hc;
        }
        __syncthreads();

        /* rerun from the true incoming state; y partial over this thread's 4 states */
#pragma unroll
        for (int q = 0; q < 4; q++) h[q] = exH[j][cl * 16 + 4 * g + q];
        float yq[TS];
#pragma unroll
        for (int i = 0; i < TS; i++) {
            float b[4], cc[4];
            four_f(sBCt + (j * TS + i) * 32 + 4 * g, b);
            four_f(sBCt + (j * TS + i) * 32 + 16 + 4 * g, cc);
            const float du = dl[i] * uu[i];
            float acc = 0.0f;
#pragma unroll
            for (int q = 0; q < 4; q++) {
                h[q] = fmaf(a[i][q], h[q], du * b[q]);
                acc = fmaf(cc[q], h[q], acc);
            }
            yq[i] = acc;
        }
        /* reduce-scatter over the 4 threads of the channel: thread g ends with positions 4m + g */
        const bool b0 = g & 1, b1 = (g >> 1) & 1;
#pragma unroll
        for (int m = 0; m < M; m++) {
            float r2[2];
#pragma unroll
            for (int s = 0; s < 2; s++) {
                const float lo = yq[4 * m + s], hi = yq[4 * m + 2 + s];
                r2[s] = (b1 ? hi : lo) + __shfl_xor_sync(0xffffffffu, b1 ? lo : hi, 2);
            }
            const float out = (b0 ? r2[1] : r2[0]) + __shfl_xor_sync(0xffffffffu, b0 ? r2[0] : r2[1], 1);
            const int64_t kk = k0 + (int64_t)j * TS + 4 * m + g;
            if (act && kk < n) {
                const int64_t t = d.reverse ? n - 1 - kk : kk;
                float yv = fmaf(Dc, my_u[m], out);
                if (d.z) yv *= silu_f<FAST>(my_z[m]);
                st_act(y + t * p.ldy + c, add ? my_y[m] + yv : yv);
            }
        }
    }
    __syncthreads();
    if (tid < V2_PAIRS) {
        const int cc = blockIdx.x * V2_CB + tid / 16;
        if (cc < p.Di) d.state[(int64_t)cc * 16 + tid % 16] = carry[tid];
    }
}

/* v2 needs d_state 16 and B/C rows that 16-byte loads can read. */
template <typename T>
static bool v2_fits(const ScanP &p)
{
    if (p.N != 16) return false;
    for (int k = 0; k < p.ndir; k++) {
        const ScanDirP &d = p.d[k];
        if ((d.ldbc * (int64_t)sizeof(T)) % 16 || (uintptr_t)d.B % 16 || (uintptr_t)d.C % 16) return false;
    }
    return true;
}

template <typename T>
static int launch_v2(cuda_ctx_t *cx, ScanP &p)
{
    constexpr bool FAST = sizeof(T) == 2;
    auto k = scan_v2<T, FAST>;
    for (int dir = 0; dir < p.ndir; dir++) {
        MD_LAUNCH(k, ceil_div_u(p.Di, V2_CB), V2_THREADS, cx->stream, p, dir);
        LAUNCH_CHECK(cx);
    }
    return 0;
}

template <typename T>
static int launch_ns(cuda_ctx_t *cx, ScanP &p)
{
    if (p.N <= 4) return launch<T, 4, 0>(cx, p);
    if (p.N <= 8) return launch<T, 8, 0>(cx, p);
    if (p.N <= 16) {
        /* share of the 16 states whose exp2 runs on the FMA pipe (MD_CUDA_SCAN_POLY, sixteenths) */
        if (cx->scan_poly >= 4) return launch<T, 16, 4>(cx, p);
        if (cx->scan_poly >= 2) return launch<T, 16, 2>(cx, p);
        return launch<T, 16, 0>(cx, p);
    }
    if (p.N <= 32) return launch<T, 32, 0>(cx, p);
    return launch<T, 64, 0>(cx, p);
}

int md_cuda_scan(md_backend_t *be, int64_t n, int Di, int N, int ndir, const md_scan_dir_t *dirs, void *y,
                 int64_t ldy, int accumulate, const uint8_t *seq_start)
{
    cuda_ctx_t *cx = CTX(be);
    if (n <= 0) return 0;
    if (ndir < 1 || ndir > 2 || N < 1 || N > 64 || Di < 1) {
        md_error("unsupported scan shape: %d directions, d_state %d, d_inner %d (1-2, 1..64, >= 1)", ndir, N, Di);
        return -2;
    }
    ScanP p;
    memset(&p, 0, sizeof p);
    for (int k = 0; k < ndir; k++) {
        const md_scan_dir_t *s = &dirs[k];
        if (!s->x || !s->dt || !s->B || !s->C || !s->A || !s->state) {
            md_error("scan direction %d: x, dt, B, C, A and state are required", k);
            return -2;
        }
        p.d[k].x = s->x; p.d[k].ldx = s->ldx;
        p.d[k].dt = s->dt; p.d[k].lddt = s->lddt;
        p.d[k].B = s->B; p.d[k].C = s->C; p.d[k].ldbc = s->ldbc;
        p.d[k].z = s->z; p.d[k].ldz = s->ldz;
        p.d[k].A = s->A; p.d[k].D = s->D; p.d[k].dt_bias = s->dt_bias;
        p.d[k].state = s->state;
        p.d[k].reverse = s->reverse != 0;
    }
    p.ndir = ndir;
    p.Di = Di;
    p.N = N;
    p.n = n;
    p.y = y;
    p.ldy = ldy;
    p.accumulate = accumulate != 0;
    p.ss = seq_start;
    if (cx->scan_version == 2 && (cx->bf16 ? v2_fits<bf16>(p) : v2_fits<float>(p)))
        return cx->bf16 ? launch_v2<bf16>(cx, p) : launch_v2<float>(cx, p);
    /* Segments: enough (channel, segment) threads for ~2 waves of the device, at least SCAN_TT
     * positions each, whole tiles. */
    int64_t target = cx->scan_nseg > 0 ? cx->scan_nseg : ((int64_t)cx->sm_count * 2048 + Di - 1) / Di;
    if (target < 1) target = 1;
    int64_t seglen = (n + target - 1) / target;
    seglen = ((seglen + SCAN_TT - 1) / SCAN_TT) * SCAN_TT;
    p.seglen = seglen;
    p.nseg = (n + seglen - 1) / seglen;
    if (p.nseg > 65535) {
        p.seglen = ((n + 65534) / 65535 + SCAN_TT - 1) / SCAN_TT * SCAN_TT;
        p.nseg = (n + p.seglen - 1) / p.seglen;
    }
    if (p.nseg > 1) {
        const size_t need = (size_t)ndir * p.nseg * Di * (N + 1) * sizeof(float);
        if (cx->scan_buf_size < need) {
            if (cx->scan_buf) be->free(be, cx->scan_buf);
            cx->scan_buf = NULL;
            cx->scan_buf_size = 0;
            cx->scan_buf = (float *)md_cuda_ctx_alloc(cx, need, "the scan carry buffer");
            if (!cx->scan_buf) return -2;
            cx->scan_buf_size = need;
        }
        p.hbuf = cx->scan_buf;
        p.sbuf = cx->scan_buf + (size_t)ndir * p.nseg * N * Di;
    }
    if (cx->scan_version == 4 && N == 16 && !cx->scan_poly)
        return cx->bf16 ? launch_a1_any<bf16>(cx, p) : launch_a1_any<float>(cx, p);
    return cx->bf16 ? launch_ns<bf16>(cx, p) : launch_ns<float>(cx, p);
}
