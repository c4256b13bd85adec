/* scan.cu: the Mamba-1 selective scan (the scan contract of backend.h), both directions of a
 * BiMamba layer in one call, fp32 state, packed-sequence resets, h0 in / h_last out.
 *
 * Algorithm (segment-parallel, three launches). Positions are cut into nseg segments of seglen;
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
 * Tuning (environment, read at open): MD_CUDA_SCAN_NSEG target segments per call (default
 * ~2 waves of (channel, segment) threads), MD_CUDA_SCAN_POLY 0/2/4 sixteenths of the states. */
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
    return cx->bf16 ? launch_ns<bf16>(cx, p) : launch_ns<float>(cx, p);
}
