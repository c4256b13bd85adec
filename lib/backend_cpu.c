/* backend_cpu.c: the CPU backend, the oracle every other backend is checked against.
 * Float32 everywhere; GEMMs through CBLAS (OpenBLAS) in fixed row blocks; everything else plain C
 * with OpenMP. Activations are token-major [n, width]. The conv and scan give each thread a
 * contiguous channel range and walk positions in scan order, reading every row as one run, and
 * vectorise across channels (blocks of 16 for the scan, whose states are held [state][channel])
 * with a polynomial exp (vmath.h; AVX-512 chosen at run time for the scan). Work is split by
 * channel only, so results do not depend on the thread count. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"
#include "md.h"

void openblas_set_num_threads(int num_threads);

#include "vmath.h"

/* --- memory ---------------------------------------------------------------------------------- */

/* Activations of long chunks are walked column block by column block with a row stride of 2-4
 * KiB, one page per row with 4 KiB pages: big buffers are 2 MiB aligned and asked for
 * transparent huge pages (where the kernel allows them) so that these walks do not miss the TLB. */
#define HUGE_PAGE ((size_t)2 << 20)
static void *cpu_alloc(md_backend_t *be, size_t bytes)
{
    (void)be;
    const size_t align = bytes >= 2 * HUGE_PAGE ? HUGE_PAGE : 64;
    size_t sz = (bytes + align - 1) & ~(align - 1);
    void *p = aligned_alloc(align, sz ? sz : 64);
    if (!p) md_error("out of memory allocating %.1f MiB", bytes / 1048576.0);
#ifdef MADV_HUGEPAGE
    else if (align == HUGE_PAGE) madvise(p, sz, MADV_HUGEPAGE); /* advice only: failure is harmless */
#endif
    return p;
}
static void cpu_free(md_backend_t *be, void *p) { (void)be; free(p); }
static int cpu_copy(md_backend_t *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes) memcpy(dst, src, bytes);
    return 0;
}
static int cpu_zero(md_backend_t *be, void *dst, size_t bytes) { (void)be; memset(dst, 0, bytes); return 0; }
static int cpu_download_act(md_backend_t *be, float *dst, const void *src, int64_t n)
{
    (void)be;
    memcpy(dst, src, n * sizeof(float));
    return 0;
}
static int cpu_upload_act(md_backend_t *be, void *dst, const float *src, int64_t n)
{
    (void)be;
    memcpy(dst, src, n * sizeof(float));
    return 0;
}
static int cpu_sync(md_backend_t *be) { (void)be; return 0; }
static int64_t cpu_mem_free(md_backend_t *be) { (void)be; return -1; }
static void cpu_destroy(md_backend_t *be) { free(be); }

static void *cpu_upload_matrix(md_backend_t *be, const float *host, int rows, int cols)
{
    size_t n = (size_t)rows * cols * sizeof(float);
    float *p = cpu_alloc(be, n);
    if (p) memcpy(p, host, n);
    return p;
}

/* --- ops ------------------------------------------------------------------------------------- */

static int cpu_embed(md_backend_t *be, int64_t n, int W, const int32_t *ids, const float *table, void *out)
{
    (void)be;
    float *o = out;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) memcpy(o + i * W, table + (int64_t)ids[i] * W, W * sizeof(float));
    return 0;
}

static int cpu_add_norm(md_backend_t *be, int64_t n, int W, int group, const void *h_, const float *res,
                        float *res_out, void *out_, const float *w, const float *b, float eps, int swap, int rms)
{
    (void)be;
    const float *h = h_;
    float *out = out_;
    const int half = W / 2;
#pragma omp parallel
    {
        float *s = malloc(W * sizeof(float));
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; i++) {
            const float *hi = h ? h + i * W : NULL, *ri = res ? res + i * W : NULL;
            for (int j = 0; j < W; j++) {
                int src = swap ? (j < half ? j + half : j - half) : j;
                float v = (hi ? hi[src] : 0.0f) + (ri ? ri[src] : 0.0f);
                s[j] = v;
            }
            if (res_out) memcpy(res_out + i * W, s, W * sizeof(float));
            for (int g = 0; g < W; g += group) {
                float mean = 0.0f, var = 0.0f;
                if (!rms) {
                    double acc = 0;
                    for (int j = g; j < g + group; j++) acc += s[j];
                    mean = (float)(acc / group);
                }
                double acc = 0;
                for (int j = g; j < g + group; j++) acc += (double)(s[j] - mean) * (s[j] - mean);
                var = (float)(acc / group);
                float rstd = 1.0f / sqrtf(var + eps);
                float *oi = out + i * W;
                for (int j = g; j < g + group; j++) oi[j] = (s[j] - mean) * rstd * w[j] + (b ? b[j] : 0.0f);
            }
        }
        free(s);
    }
    return 0;
}

static int cpu_gemm(md_backend_t *be, int64_t M, int N, int K, const void *A, int64_t lda, const void *Wt,
                    void *C, int64_t ldc, int accumulate, int c_f32)
{
    (void)be; (void)c_f32;
    if (M <= 0) return 0;
    /* Fixed row blocks, each a single-threaded sgemm: every output row is computed the same way
     * whatever the thread count (OpenBLAS's own threading splits differently per thread count). */
    const int64_t RB = 256, nb = (M + RB - 1) / RB;
    const float *a = A;
    float *c = C;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t b = 0; b < nb; b++) {
        int64_t r0 = b * RB, mr = M - r0 < RB ? M - r0 : RB;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)mr, N, K, 1.0f, a + r0 * lda, (blasint)lda,
                    Wt, K, accumulate ? 1.0f : 0.0f, c + r0 * ldc, (blasint)ldc);
    }
    return 0;
}

/* Scan-order helpers: scan index u <-> position, and whether a sequence (re)starts at u. */
static inline int64_t scan_pos(int64_t u, int64_t n, int reverse) { return reverse ? n - 1 - u : u; }
static inline int scan_reset(const uint8_t *seq_start, int64_t u, int64_t n, int reverse)
{
    if (!seq_start) return 0;
    return reverse ? seq_start[n - u] : seq_start[u];
}

#define CBLK 16

/* Depthwise conv + SiLU. As the scan, a thread owns a contiguous channel range and walks the
 * positions in scan order, reading each input row as one run; the K taps of a position are the
 * rows of the K-1 previous scan positions (still in cache), the carried state for positions
 * before the chunk, or zeros before a sequence start. Per channel the sum runs in the same
 * order whatever the split: w[K-1] x[u] + b first, then taps from the farthest to the nearest. */
#define CONV_LANES 8

/* CONV_LANES channels from c (relative to the thread's range) of one position: taps[j] is the
 * input row at scan distance K-1-j (j < K-1), xu the position's own; wt [K][range] and bb
 * [range] hold the range's weights and bias, zero padded to whole lane groups. */
static inline void conv_lanes(int K, int c, int cw, const float *const *taps, const float *xu, const float *wt,
                              int64_t ldw, const float *bb, float *out)
{
    float acc[CONV_LANES];
#ifdef __AVX2__
    v8f a, tv[16];
    if (cw == CONV_LANES) {
        a = _mm256_loadu_ps(xu + c);
        for (int j = 0; j < K - 1; j++) tv[j] = _mm256_loadu_ps(taps[j] + c);
    } else {
        float tmp[CONV_LANES] = { 0 };
        memcpy(tmp, xu + c, cw * sizeof(float));
        a = _mm256_loadu_ps(tmp);
        for (int j = 0; j < K - 1; j++) {
            memcpy(tmp, taps[j] + c, cw * sizeof(float));
            tv[j] = _mm256_loadu_ps(tmp);
        }
    }
    a = _mm256_fmadd_ps(_mm256_loadu_ps(wt + (K - 1) * ldw + c), a, _mm256_loadu_ps(bb + c));
    for (int j = 0; j < K - 1; j++) a = _mm256_fmadd_ps(_mm256_loadu_ps(wt + j * ldw + c), tv[j], a);
    a = v8_silu(a);
    if (cw == CONV_LANES) { _mm256_storeu_ps(out + c, a); return; }
    _mm256_storeu_ps(acc, a);
#else
    for (int l = 0; l < CONV_LANES; l++) {
        const int ok = l < cw;
        float v = bb[c + l] + wt[(K - 1) * ldw + c + l] * (ok ? xu[c + l] : 0.0f);
        for (int j = 0; j < K - 1; j++) v += wt[j * ldw + c + l] * (ok ? taps[j][c + l] : 0.0f);
        acc[l] = md_silu(v);
    }
#endif
    memcpy(out + c, acc, cw * sizeof(float));
}

static int cpu_conv_silu(md_backend_t *be, int64_t n, int Cn, int K, const void *x_, int64_t ldx,
                         const float *w, const float *b, void *out_, float *state, int reverse,
                         const uint8_t *seq_start)
{
    (void)be;
    const float *x = x_;
    float *out = out_;
    if (K > 16 || K < 1) { md_error("conv width %d not in 1..16", K); return -2; }
    const int P = K - 1;
    float *zeros = md_calloc(Cn > 0 ? Cn : 1, sizeof(float));
    float *new_state = md_malloc((size_t)(P > 0 ? P : 1) * (Cn > 0 ? Cn : 1) * sizeof(float));
    if (!zeros || !new_state) { free(zeros); free(new_state); return -2; }
    const int nv = (Cn + CONV_LANES - 1) / CONV_LANES;
    int failed = 0;
#pragma omp parallel reduction(|:failed)
    {
        int it = 0, nt = 1;
#ifdef _OPENMP
        it = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        const int v0 = (int)((int64_t)nv * it / nt), v1 = (int)((int64_t)nv * (it + 1) / nt);
        const int c_lo = v0 * CONV_LANES, c_hi = v1 * CONV_LANES < Cn ? v1 * CONV_LANES : Cn;
        const int64_t ldw = (int64_t)(v1 - v0) * CONV_LANES;
        float *wt = malloc((size_t)(K + 1) * (ldw > 0 ? ldw : 1) * sizeof(float));
        if (!wt) failed = 1;
        else if (c_lo < c_hi) {
            float *bb = wt + K * ldw;
            for (int c = 0; c < ldw; c++) {
                const int ok = c_lo + c < c_hi;
                for (int k = 0; k < K; k++) wt[k * ldw + c] = ok ? w[(int64_t)(c_lo + c) * K + k] : 0.0f;
                bb[c] = (b && ok) ? b[c_lo + c] : 0.0f;
            }
            /* The input row at scan index q, seen from a position whose sequence began at scan index lr. */
#define CONV_INPUT(q, lr) ((q) < (lr) ? zeros : (q) < 0 ? state + ((q) + P) * (int64_t)Cn \
                                                            : x + scan_pos((q), n, reverse) * ldx)
            int64_t lr = INT64_MIN;
            const float *taps[16];
            for (int64_t u = 0; u < n; u++) {
                if (scan_reset(seq_start, u, n, reverse)) lr = u;
                for (int j = 0; j < P; j++) taps[j] = CONV_INPUT(u - P + j, lr) + c_lo;
                const float *xu = x + scan_pos(u, n, reverse) * ldx + c_lo;
                float *ou = out + scan_pos(u, n, reverse) * Cn + c_lo;
                for (int c = 0; c < c_hi - c_lo; c += CONV_LANES)
                    conv_lanes(K, c, c_hi - c_lo - c < CONV_LANES ? c_hi - c_lo - c : CONV_LANES, taps, xu, wt, ldw,
                               bb, ou);
            }
            /* the new state: the chunk's last P inputs in scan order (row j at scan index n - P + j) */
            for (int j = 0; j < P; j++)
                memcpy(new_state + (int64_t)j * Cn + c_lo, CONV_INPUT(n - P + j, lr) + c_lo,
                       (c_hi - c_lo) * sizeof(float));
#undef CONV_INPUT
        }
        free(wt);
    }
    if (!failed && P > 0) memcpy(state, new_state, (size_t)P * Cn * sizeof(float));
    free(zeros);
    free(new_state);
    if (failed) { md_error("out of memory for the conv weights (%d channels)", Cn); return -2; }
    return 0;
}

/* --- selective scan -------------------------------------------------------------------------- *
 * A thread owns a contiguous range of channel blocks and walks the positions in scan order,
 * all of its blocks at each position: every row of x, dt, z and y is then read as one
 * contiguous run that the hardware prefetcher follows (one block at a time touches one cache
 * line per 2-4 KiB row, a new page almost every step, and stalls on memory). Per block of 16
 * channels the state and A are held transposed ([state][channel]) so that the inner loops run
 * across channels with B and C broadcast and no horizontal sums. The arithmetic of a channel
 * does not depend on the split, so results do not depend on the thread count. */

/* Per-thread scan workspace for blocks [b0, b1): h and A [nblk][N][CBLK], D and dt bias [nblk][CBLK]. */
typedef struct {
    int b0, nblk, N;
    float *h, *A, *D, *bias;
} scan_ws_t;

static int scan_ws_init(scan_ws_t *w, int b0, int b1, int N)
{
    w->b0 = b0;
    w->nblk = b1 - b0;
    w->N = N;
    size_t per = (size_t)2 * N * CBLK + 2 * CBLK, sz = (size_t)(w->nblk > 0 ? w->nblk : 1) * per * sizeof(float);
    float *p = aligned_alloc(64, (sz + 63) & ~(size_t)63);
    if (!p) return -1;
    w->h = p;
    w->A = p + (size_t)w->nblk * N * CBLK;
    w->D = w->A + (size_t)w->nblk * N * CBLK;
    w->bias = w->D + (size_t)w->nblk * CBLK;
    return 0;
}

/* Loads direction d's state and vectors into w (channels beyond Di are zero). */
static void scan_ws_load(scan_ws_t *w, const md_scan_dir_t *d, int Di)
{
    const int N = w->N;
    for (int j = 0; j < w->nblk; j++) {
        const int c0 = (w->b0 + j) * CBLK;
        float *h = w->h + (size_t)j * N * CBLK, *A = w->A + (size_t)j * N * CBLK;
        for (int c = 0; c < CBLK; c++) {
            const int ok = c0 + c < Di;
            for (int s = 0; s < N; s++) {
                h[s * CBLK + c] = ok ? d->state[(int64_t)(c0 + c) * N + s] : 0.0f;
                A[s * CBLK + c] = ok ? d->A[(int64_t)(c0 + c) * N + s] : 0.0f;
            }
            w->D[j * CBLK + c] = (d->D && ok) ? d->D[c0 + c] : 0.0f;
            w->bias[j * CBLK + c] = (d->dt_bias && ok) ? d->dt_bias[c0 + c] : 0.0f;
        }
    }
}

static void scan_ws_store(const scan_ws_t *w, const md_scan_dir_t *d, int Di)
{
    const int N = w->N;
    for (int j = 0; j < w->nblk; j++) {
        const int c0 = (w->b0 + j) * CBLK;
        const float *h = w->h + (size_t)j * N * CBLK;
        for (int c = 0; c < CBLK && c0 + c < Di; c++)
            for (int s = 0; s < N; s++) d->state[(int64_t)(c0 + c) * N + s] = h[s * CBLK + c];
    }
}

/* One direction over the workspace's blocks, portable form (AVX2 + FMA when compiled with it). */
static void scan_range(int64_t n, int Di, const md_scan_dir_t *d, scan_ws_t *w, float *y, int64_t ldy,
                       int accumulate, const uint8_t *seq_start)
{
    const int N = w->N;
    const float *x = d->x, *dt = d->dt, *B = d->B, *C = d->C, *z = d->z;
    for (int64_t u = 0; u < n; u++) {
        const int64_t t = scan_pos(u, n, d->reverse);
        if (scan_reset(seq_start, u, n, d->reverse)) memset(w->h, 0, (size_t)w->nblk * N * CBLK * sizeof(float));
        const float *Bt = B + t * d->ldbc, *Ct = C + t * d->ldbc;
        for (int j = 0; j < w->nblk; j++) {
            const int c0 = (w->b0 + j) * CBLK, cw = Di - c0 < CBLK ? Di - c0 : CBLK;
            float *h = w->h + (size_t)j * N * CBLK;
            const float *A = w->A + (size_t)j * N * CBLK, *Dv = w->D + j * CBLK, *bias = w->bias + j * CBLK;
            float xv[CBLK], delta[CBLK], zv[CBLK], out[CBLK];
            const float *xt = x + t * d->ldx + c0, *dtt = dt + t * d->lddt + c0;
            for (int c = 0; c < CBLK; c++) { xv[c] = c < cw ? xt[c] : 0.0f; delta[c] = c < cw ? dtt[c] : 0.0f; }
            if (z) {
                const float *zt = z + t * d->ldz + c0;
                for (int c = 0; c < CBLK; c++) zv[c] = c < cw ? zt[c] : 0.0f;
            }
#ifdef __AVX2__
            v8f dl[2], dxv[2], ov[2];
            for (int k = 0; k < 2; k++) {
                v8f xk = _mm256_loadu_ps(xv + 8 * k);
                dl[k] = v8_softplus(_mm256_add_ps(_mm256_loadu_ps(delta + 8 * k), _mm256_loadu_ps(bias + 8 * k)));
                dxv[k] = _mm256_mul_ps(dl[k], xk);
                ov[k] = _mm256_mul_ps(_mm256_loadu_ps(Dv + 8 * k), xk);
            }
            for (int s = 0; s < N; s++) {
                const v8f bs = _mm256_set1_ps(Bt[s]), cs = _mm256_set1_ps(Ct[s]);
                for (int k = 0; k < 2; k++) {
                    v8f a = v8_exp(_mm256_mul_ps(dl[k], _mm256_load_ps(A + s * CBLK + 8 * k)));
                    v8f hv = _mm256_fmadd_ps(a, _mm256_load_ps(h + s * CBLK + 8 * k), _mm256_mul_ps(dxv[k], bs));
                    _mm256_store_ps(h + s * CBLK + 8 * k, hv);
                    ov[k] = _mm256_fmadd_ps(hv, cs, ov[k]);
                }
            }
            if (z)
                for (int k = 0; k < 2; k++) ov[k] = _mm256_mul_ps(ov[k], v8_silu(_mm256_loadu_ps(zv + 8 * k)));
            _mm256_storeu_ps(out, ov[0]);
            _mm256_storeu_ps(out + 8, ov[1]);
#else
            float dx[CBLK];
            for (int c = 0; c < CBLK; c++) {
                delta[c] = md_softplus(delta[c] + bias[c]);
                dx[c] = delta[c] * xv[c];
                out[c] = Dv[c] * xv[c];
            }
            for (int s = 0; s < N; s++) {
                const float bs = Bt[s], cs = Ct[s];
                for (int c = 0; c < CBLK; c++) {
                    float hv = md_expf(delta[c] * A[s * CBLK + c]) * h[s * CBLK + c] + dx[c] * bs;
                    h[s * CBLK + c] = hv;
                    out[c] += hv * cs;
                }
            }
            if (z)
                for (int c = 0; c < CBLK; c++) out[c] *= md_silu(zv[c]);
#endif
            float *yt = y + t * ldy + c0;
            if (accumulate) for (int c = 0; c < cw; c++) yt[c] += out[c];
            else for (int c = 0; c < cw; c++) yt[c] = out[c];
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && defined(__AVX2__)
/* The same scan with AVX-512 (one 16-lane register per channel block), chosen at run time when
 * the CPU has it. Lane for lane the same operations as the AVX2 path, so the same results:
 * 2^k is applied by scalef, exact like the exponent-bits product since the clamp keeps k in
 * [-126, 127]. */
#include <immintrin.h>
#define T512 __attribute__((target("avx512f,avx512dq,avx2,fma")))
typedef __m512 v16f;
static inline T512 v16f v16_exp(v16f x)
{
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-87.0f));
    v16f kf = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v16f r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(1.428606765330187045e-06f), r);
    v16f p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, kf);
}
/* v8_log and v8_softplus on 16 lanes. */
static inline T512 v16f v16_log(v16f x)
{
    __m512i i = _mm512_castps_si512(x);
    __m512i e = _mm512_sub_epi32(_mm512_and_si512(_mm512_srli_epi32(i, 23), _mm512_set1_epi32(0xff)),
                                 _mm512_set1_epi32(127));
    v16f m = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(i, _mm512_set1_epi32(0x007fffff)),
                                                 _mm512_set1_epi32(0x3f800000)));
    const v16f one = _mm512_set1_ps(1.0f);
    __mmask16 big = _mm512_cmp_ps_mask(m, _mm512_set1_ps(1.41421356f), _CMP_GT_OQ);
    m = _mm512_mask_mul_ps(m, big, m, _mm512_set1_ps(0.5f));
    v16f ef = _mm512_add_ps(_mm512_cvtepi32_ps(e), _mm512_maskz_mov_ps(big, one));
    v16f sv = _mm512_div_ps(_mm512_sub_ps(m, one), _mm512_add_ps(m, one)), s2 = _mm512_mul_ps(sv, sv);
    v16f p = _mm512_set1_ps(2.0f / 9.0f);
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(2.0f / 7.0f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(2.0f / 5.0f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(2.0f / 3.0f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(2.0f));
    return _mm512_fmadd_ps(p, sv, _mm512_mul_ps(ef, _mm512_set1_ps(0.693147180559945309f)));
}
static inline T512 v16f v16_softplus(v16f v)
{
    const v16f one = _mm512_set1_ps(1.0f);
    v16f e = v16_exp(v);
    v16f u = _mm512_add_ps(one, e), d = _mm512_sub_ps(u, one);
    __mmask16 dz = _mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_EQ_OQ);
    v16f l = _mm512_mul_ps(v16_log(u), _mm512_div_ps(e, _mm512_mask_mov_ps(d, dz, one)));
    l = _mm512_mask_mov_ps(l, dz, e);
    return _mm512_mask_mov_ps(l, _mm512_cmp_ps_mask(v, _mm512_set1_ps(20.0f), _CMP_GT_OQ), v);
}
static inline T512 v16f v16_silu(v16f v)
{
    return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), v16_exp(_mm512_sub_ps(_mm512_setzero_ps(), v))));
}

/* One position of one direction for blocks j .. j+NB-1 (NB = 1 or 4), interleaved so that the
 * blocks' independent exp chains keep the FP pipes busy (4 blocks: 15% faster than 1 by block). */
static inline __attribute__((always_inline)) T512 void
scan_step_avx512(int NB, int N, int Di, const scan_ws_t *w, int j, const float *xr, const float *dtr, const float *zr,
                 const float *Bt, const float *Ct, float *yr, int accumulate)
{
    v16f dl[4], dxv[4], ov[4];
    __mmask16 lanes[4];
    int c0[4];
    for (int q = 0; q < NB; q++) {
        c0[q] = (w->b0 + j + q) * CBLK;
        const int cw = Di - c0[q] < CBLK ? Di - c0[q] : CBLK;
        lanes[q] = (__mmask16)((1u << cw) - 1);
        const v16f xv = _mm512_maskz_loadu_ps(lanes[q], xr + c0[q]);
        dl[q] = v16_softplus(_mm512_add_ps(_mm512_maskz_loadu_ps(lanes[q], dtr + c0[q]),
                                          _mm512_load_ps(w->bias + (j + q) * CBLK)));
        dxv[q] = _mm512_mul_ps(dl[q], xv);
        ov[q] = _mm512_mul_ps(_mm512_load_ps(w->D + (j + q) * CBLK), xv);
    }
    for (int s = 0; s < N; s++) {
        const v16f bs = _mm512_set1_ps(Bt[s]), cs = _mm512_set1_ps(Ct[s]);
        for (int q = 0; q < NB; q++) {
            float *h = w->h + (size_t)(j + q) * N * CBLK + s * CBLK;
            const float *A = w->A + (size_t)(j + q) * N * CBLK + s * CBLK;
            v16f a = v16_exp(_mm512_mul_ps(dl[q], _mm512_load_ps(A)));
            v16f hv = _mm512_fmadd_ps(a, _mm512_load_ps(h), _mm512_mul_ps(dxv[q], bs));
            _mm512_store_ps(h, hv);
            ov[q] = _mm512_fmadd_ps(hv, cs, ov[q]);
        }
    }
    for (int q = 0; q < NB; q++) {
        if (zr) ov[q] = _mm512_mul_ps(ov[q], v16_silu(_mm512_maskz_loadu_ps(lanes[q], zr + c0[q])));
        if (accumulate) ov[q] = _mm512_add_ps(ov[q], _mm512_maskz_loadu_ps(lanes[q], yr + c0[q]));
        _mm512_mask_storeu_ps(yr + c0[q], lanes[q], ov[q]);
    }
}

static inline __attribute__((always_inline)) T512 void
scan_range_avx512_body(int64_t n, int Di, const md_scan_dir_t *d, scan_ws_t *w, float *y, int64_t ldy, int accumulate,
                       const uint8_t *seq_start, const int N)
{
    const float *x = d->x, *dt = d->dt, *B = d->B, *C = d->C, *z = d->z;
    for (int64_t u = 0; u < n; u++) {
        const int64_t t = scan_pos(u, n, d->reverse);
        if (scan_reset(seq_start, u, n, d->reverse)) memset(w->h, 0, (size_t)w->nblk * N * CBLK * sizeof(float));
        const float *Bt = B + t * d->ldbc, *Ct = C + t * d->ldbc;
        const float *xr = x + t * d->ldx, *dtr = dt + t * d->lddt, *zr = z ? z + t * d->ldz : NULL;
        float *yr = y + t * ldy;
        int j = 0;
        for (; j + 3 < w->nblk; j += 4) scan_step_avx512(4, N, Di, w, j, xr, dtr, zr, Bt, Ct, yr, accumulate);
        for (; j < w->nblk; j++) scan_step_avx512(1, N, Di, w, j, xr, dtr, zr, Bt, Ct, yr, accumulate);
    }
}

/* d_state 16 (every Caduceus and Mamba-1 configuration) with a constant trip count, which the
 * compiler unrolls. */
static T512 void scan_range_avx512(int64_t n, int Di, const md_scan_dir_t *d, scan_ws_t *w, float *y, int64_t ldy,
                                   int accumulate, const uint8_t *seq_start)
{
    if (w->N == 16) scan_range_avx512_body(n, Di, d, w, y, ldy, accumulate, seq_start, 16);
    else scan_range_avx512_body(n, Di, d, w, y, ldy, accumulate, seq_start, w->N);
}
#define HAVE_AVX512_PATH 1
#endif

static int cpu_scan(md_backend_t *be, int64_t n, int Di, int N, int ndir, const md_scan_dir_t *dirs, void *y,
                    int64_t ldy, int accumulate, const uint8_t *seq_start)
{
    (void)be;
    if (N > 64) { md_error("d_state %d > 64 not supported by the CPU scan", N); return -2; }
    const int nb = (Di + CBLK - 1) / CBLK;
#ifdef HAVE_AVX512_PATH
    static int use512 = -1;
    if (use512 < 0) use512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && !getenv("MD_NO_AVX512");
#endif
    int failed = 0;
    /* One region: each thread runs both directions over its own channels (the second direction
     * accumulates into outputs the same thread wrote), so no barrier between them. */
#pragma omp parallel reduction(|:failed)
    {
        int it = 0, nt = 1;
#ifdef _OPENMP
        it = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        scan_ws_t w;
        if (scan_ws_init(&w, (int)((int64_t)nb * it / nt), (int)((int64_t)nb * (it + 1) / nt), N) < 0) failed = 1;
        else {
            for (int k = 0; k < ndir && w.nblk > 0; k++) {
                const int acc = k > 0 ? 1 : accumulate;
                scan_ws_load(&w, &dirs[k], Di);
#ifdef HAVE_AVX512_PATH
                if (use512) scan_range_avx512(n, Di, &dirs[k], &w, y, ldy, acc, seq_start);
                else
#endif
                scan_range(n, Di, &dirs[k], &w, y, ldy, acc, seq_start);
                scan_ws_store(&w, &dirs[k], Di);
            }
            free(w.h);
        }
    }
    if (failed) { md_error("out of memory for the scan workspace (%d channels, d_state %d)", Di, N); return -2; }
    return 0;
}

static int cpu_mul(md_backend_t *be, int64_t n, int W, void *a_, int64_t lda, const void *b_, int64_t ldb)
{
    (void)be;
    float *a = a_;
    const float *b = b_;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < W; j++) a[i * lda + j] *= b[i * ldb + j];
    return 0;
}

/* Segment sums, one segment per thread at a time: the rows of a segment are added in row order
 * in double and the piece's total is added to acc once, so the result does not depend on the
 * thread count. */
static int cpu_pool_sum(md_backend_t *be, int64_t n, int W, const void *x_, int64_t ldx, int64_t r0, int nseg,
                        const int64_t *seg_beg, const int64_t *seg_end, float *acc)
{
    (void)be;
    const float *x = x_;
    int failed = 0;
#pragma omp parallel
    {
        double *sum = malloc((size_t)(W > 0 ? W : 1) * sizeof *sum);
        if (!sum) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < nseg; i++) {
            if (!sum) continue;
            int64_t a = seg_beg[i] > r0 ? seg_beg[i] : r0, b = seg_end[i] < r0 + n ? seg_end[i] : r0 + n;
            if (a >= b) continue;
            for (int c = 0; c < W; c++) sum[c] = 0;
            for (int64_t r = a; r < b; r++) {
                const float *row = x + (r - r0) * ldx;
                for (int c = 0; c < W; c++) sum[c] += row[c];
            }
            float *dst = acc + (size_t)i * W;
            for (int c = 0; c < W; c++) dst[c] += (float)sum[c];
        }
        free(sum);
    }
    if (failed) { md_error("out of memory for the pooling workspace (%d channels)", W); return -2; }
    return 0;
}

static int cpu_gather_rows(md_backend_t *be, int64_t nrows, int W, const void *x_, int64_t ldx, int64_t r0,
                           const int64_t *rows, void *out_, int f32)
{
    (void)be; (void)f32;   /* act is F32 here */
    const float *x = x_;
    float *out = out_;
    for (int64_t i = 0; i < nrows; i++) memcpy(out + i * W, x + (rows[i] - r0) * ldx, (size_t)W * sizeof(float));
    return 0;
}

md_backend_t *md_backend_cpu_open(int n_threads)
{
    md_backend_t *be = md_calloc(1, sizeof *be);
    if (!be) return NULL;
    be->name = "cpu";
    be->act_dtype = MD_DT_F32;
    be->chunk = 131072;
#ifdef _OPENMP
    if (n_threads <= 0) n_threads = omp_get_num_procs();
    omp_set_num_threads(n_threads);
#else
    if (n_threads <= 0) n_threads = 1;
#endif
    openblas_set_num_threads(1); /* parallelism comes from our row blocks */
    be->n_threads = n_threads;
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->upload = cpu_copy;
    be->download = cpu_copy;
    be->zero = cpu_zero;
    be->download_act = cpu_download_act;
    be->upload_act = cpu_upload_act;
    be->sync = cpu_sync;
    be->destroy = cpu_destroy;
    be->mem_free = cpu_mem_free;
    be->upload_matrix = cpu_upload_matrix;
    be->embed = cpu_embed;
    be->add_norm = cpu_add_norm;
    be->gemm = cpu_gemm;
    be->conv_silu = cpu_conv_silu;
    be->scan = cpu_scan;
    be->mul = cpu_mul;
    be->pool_sum = cpu_pool_sum;
    be->gather_rows = cpu_gather_rows;
    return be;
}
