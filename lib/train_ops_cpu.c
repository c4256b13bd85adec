/* train_ops_cpu.c: the CPU backward op table (train_ops.h), the oracle for other backends.
 * Float32 with double reductions; GEMMs through CBLAS; OpenMP over fixed work units (channel
 * blocks of 16, row blocks, output tiles) reduced in a fixed order, so every result is the same
 * whatever the thread count. The scan backward walks T-position chunks in reverse scan order:
 * each channel block recomputes its states inside the chunk from the saved chunk-start state
 * (keeping h and exp(delta*A) for the chunk in a per-thread buffer), runs the adjoint
 * recurrence, and writes per-block partial dB/dC rows; after each chunk the partials are summed
 * over blocks in block order. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "md.h"
#include "train_ops.h"
#include "vmath.h"

#define CB 16         /* channels per block */
#define RBLK 64       /* rows per reduction block */

#define t_expf md_expf /* vmath.h */
static inline float t_sigmoid(float v) { return 1.0f / (1.0f + t_expf(-v)); }
/* softplus as the forward: v > 20 ? v : log1p(exp(v)) */
static inline float t_softplus(float v) { return v > 20.0f ? v : log1pf(expf(v)); }
static inline float t_dsoftplus(float v) { return v > 20.0f ? 1.0f : t_sigmoid(v); }

#ifdef __AVX2__
static inline float v8_hsum(v8f a)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

/* delta[c] = softplus(dt[c] + bias[c]) for the CB channels of a block (padded lanes are 0). */
static inline void block_softplus(const float *dtv, const float *bias, float *dl)
{
#ifdef __AVX2__
    for (int k = 0; k < CB; k += 8)
        _mm256_storeu_ps(dl + k, v8_softplus(_mm256_add_ps(_mm256_loadu_ps(dtv + k), _mm256_loadu_ps(bias + k))));
#else
    for (int c = 0; c < CB; c++) dl[c] = t_softplus(dtv[c] + bias[c]);
#endif
}

static inline int64_t scan_pos(int64_t u, int64_t n, int reverse) { return reverse ? n - 1 - u : u; }
static inline int scan_reset(const uint8_t *ss, int64_t u, int64_t n, int reverse)
{
    if (!ss) return 0;
    return reverse ? ss[n - u] : ss[u];
}

/* --- embedding ------------------------------------------------------------------------------ */

static int cpu_embed_bwd(md_backend_t *be, int64_t n, int W, const int32_t *ids, const float *dout, float *dtable)
{
    (void)be;
    const int nb = (W + 63) / 64;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nb; b++) {
        int j0 = b * 64, j1 = j0 + 64 < W ? j0 + 64 : W;
        for (int64_t i = 0; i < n; i++) {
            float *t = dtable + (int64_t)ids[i] * W;
            const float *g = dout + i * W;
            for (int j = j0; j < j1; j++) t[j] += g[j];
        }
    }
    return 0;
}

/* --- add + norm ----------------------------------------------------------------------------- */

static int cpu_add_norm_bwd(md_backend_t *be, int64_t n, int W, int group, const float *s, const void *dout_,
                            const float *dres, float *dsum, const float *w, float *dw, float *db, float eps, int swap,
                            int rms)
{
    (void)be;
    const float *dout = dout_;
    const int half = W / 2;
    const int64_t nblk = (n + RBLK - 1) / RBLK;
    double *pw = md_calloc((size_t)nblk * W * 2, sizeof(double));
    if (!pw) return -2;
    int err = 0;
#pragma omp parallel
    {
        float *tot = malloc(W * sizeof(float));
        if (!tot) {
#pragma omp atomic write
            err = 1;
        }
#pragma omp for schedule(static)
        for (int64_t bi = 0; bi < nblk; bi++) {
            if (!tot) continue;
            double *bw = pw + (size_t)bi * W * 2, *bb = bw + W;
            int64_t i1 = (bi + 1) * RBLK < n ? (bi + 1) * RBLK : n;
            for (int64_t i = bi * RBLK; i < i1; i++) {
                const float *si = s + i * W, *gi = dout + i * W;
                for (int g = 0; g < W; g += group) {
                    float mean = 0.0f;
                    if (!rms) {
                        double acc = 0;
                        for (int j = g; j < g + group; j++) acc += si[j];
                        mean = (float)(acc / group);
                    }
                    double acc = 0;
                    for (int j = g; j < g + group; j++) acc += (double)(si[j] - mean) * (si[j] - mean);
                    float rstd = 1.0f / sqrtf((float)(acc / group) + eps);
                    double m0 = 0, m1 = 0;
                    for (int j = g; j < g + group; j++) {
                        float xh = (si[j] - mean) * rstd, gv = gi[j] * w[j];
                        m0 += gv;
                        m1 += (double)gv * xh;
                        bw[j] += (double)gi[j] * xh;
                        bb[j] += gi[j];
                    }
                    float fm0 = rms ? 0.0f : (float)(m0 / group), fm1 = (float)(m1 / group);
                    for (int j = g; j < g + group; j++) {
                        float xh = (si[j] - mean) * rstd, gv = gi[j] * w[j];
                        tot[j] = rstd * (gv - fm0 - xh * fm1) + (dres ? dres[i * W + j] : 0.0f);
                    }
                }
                float *o = dsum + i * W;
                for (int j = 0; j < W; j++) {
                    int src = swap ? (j < half ? j + half : j - half) : j;
                    o[src] = tot[j];
                }
            }
        }
        free(tot);
    }
    if (!err) {
        for (int j = 0; j < W; j++) {
            double aw = 0, ab = 0;
            for (int64_t bi = 0; bi < nblk; bi++) { aw += pw[(size_t)bi * W * 2 + j]; ab += pw[(size_t)bi * W * 2 + W + j]; }
            dw[j] += (float)aw;
            if (db) db[j] += (float)ab;
        }
    }
    free(pw);
    if (err) { md_error("out of memory"); return -2; }
    return 0;
}

/* --- GEMMs ---------------------------------------------------------------------------------- */

static int cpu_gemm_da(md_backend_t *be, int64_t M, int N, int K, const void *dC, int64_t lddc, int dc_f32,
                       const void *W, void *dA, int64_t ldda, int accumulate)
{
    (void)be; (void)dc_f32;
    if (M <= 0 || K <= 0) return 0;
    if (N <= 0) {
        if (!accumulate)
            for (int64_t i = 0; i < M; i++) memset((float *)dA + i * ldda, 0, K * sizeof(float));
        return 0;
    }
    const int64_t RB = 256, nb = (M + RB - 1) / RB;
    const float *c = dC;
    float *a = dA;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t b = 0; b < nb; b++) {
        int64_t r0 = b * RB, mr = M - r0 < RB ? M - r0 : RB;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)mr, K, N, 1.0f, c + r0 * lddc, (blasint)lddc,
                    W, K, accumulate ? 1.0f : 0.0f, a + r0 * ldda, (blasint)ldda);
    }
    return 0;
}

static int cpu_gemm_dw(md_backend_t *be, int64_t M, int N, int K, const void *dC, int64_t lddc, int dc_f32,
                       const void *A, int64_t lda, float *dW)
{
    (void)be; (void)dc_f32;
    if (M <= 0 || N <= 0 || K <= 0) return 0;
    /* Fixed 64 x 64 output tiles, each one sgemm over all M rows. */
    const int TN = 64, TK = 64, nn = (N + TN - 1) / TN, nk = (K + TK - 1) / TK;
    const float *c = dC, *a = A;
#pragma omp parallel for schedule(dynamic, 1)
    for (int t = 0; t < nn * nk; t++) {
        int n0 = (t / nk) * TN, k0 = (t % nk) * TK;
        int tn = N - n0 < TN ? N - n0 : TN, tk = K - k0 < TK ? K - k0 : TK;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, tn, tk, (blasint)M, 1.0f, c + n0, (blasint)lddc,
                    a + k0, (blasint)lda, 1.0f, dW + (int64_t)n0 * K + k0, K);
    }
    return 0;
}

/* --- depthwise conv + SiLU ------------------------------------------------------------------ */

static int cpu_conv_silu_bwd(md_backend_t *be, int64_t n, int Cn, int K, const void *x_, int64_t ldx, const float *w,
                             const float *b, const void *dout_, void *dx_, int64_t lddx, int dx_accumulate, float *dw,
                             float *db, const float *state, float *dstate, int reverse, const uint8_t *seq_start)
{
    (void)be;
    const float *x = x_, *dout = dout_;
    float *dx = dx_;
    const int P = K - 1;
    if (K > 16) { md_error("conv width %d > 16 not supported", K); return -2; }
    if (n <= 0) return 0;
    /* lr[u]: the last sequence start at or before scan index u (INT64_MIN when none). The input
     * at scan index q reaches output u only when lr[u] <= q. */
    int64_t *lr = md_malloc(n * sizeof *lr);
    if (!lr) return -2;
    int64_t last = INT64_MIN;
    for (int64_t u = 0; u < n; u++) {
        if (scan_reset(seq_start, u, n, reverse)) last = u;
        lr[u] = last;
    }
    const int nb = (Cn + CB - 1) / CB;
    int err = 0;
#pragma omp parallel
    {
        float *da = malloc((size_t)n * CB * sizeof(float));
        if (!da) {
#pragma omp atomic write
            err = 1;
        }
#pragma omp for schedule(static)
        for (int blk = 0; blk < nb; blk++) {
            if (!da) continue;
            const int c0 = blk * CB, cw = Cn - c0 < CB ? Cn - c0 : CB;
            float wk[16][CB], bb[CB], ring[16][CB];   /* ring[j]: input at scan distance P-j */
            double gw[16][CB], gb[CB];
            memset(gw, 0, sizeof gw);
            memset(gb, 0, sizeof gb);
            for (int k = 0; k < K; k++)
                for (int c = 0; c < CB; c++) wk[k][c] = c < cw ? w[(int64_t)(c0 + c) * K + k] : 0.0f;
            for (int c = 0; c < CB; c++) bb[c] = (b && c < cw) ? b[c0 + c] : 0.0f;
            for (int j = 0; j < P; j++)
                for (int c = 0; c < CB; c++) ring[j][c] = (state && c < cw) ? state[(int64_t)j * Cn + c0 + c] : 0.0f;
            /* pass 1, scan order: pre-activation (as the forward), dL/da, dw, db */
            for (int64_t u = 0; u < n; u++) {
                const int64_t t = scan_pos(u, n, reverse);
                if (scan_reset(seq_start, u, n, reverse)) memset(ring, 0, sizeof ring);
                float xin[CB], a[CB], g[CB];
                const float *xt = x + t * ldx + c0, *gt = dout + t * Cn + c0;
                for (int c = 0; c < CB; c++) xin[c] = c < cw ? xt[c] : 0.0f;
                for (int c = 0; c < CB; c++) a[c] = bb[c] + wk[P][c] * xin[c];
                for (int j = 0; j < P; j++)
                    for (int c = 0; c < CB; c++) a[c] += wk[j][c] * ring[j][c];
                for (int c = 0; c < CB; c++) {
                    float sg = 1.0f / (1.0f + t_expf(-a[c]));
                    g[c] = (c < cw ? gt[c] : 0.0f) * sg * (1.0f + a[c] * (1.0f - sg));
                    da[u * CB + c] = g[c];
                    gb[c] += g[c];
                    gw[P][c] += (double)g[c] * xin[c];
                }
                for (int j = 0; j < P; j++)
                    for (int c = 0; c < CB; c++) gw[j][c] += (double)g[c] * ring[j][c];
                for (int j = 0; j + 1 < P; j++) memcpy(ring[j], ring[j + 1], sizeof ring[j]);
                if (P > 0) memcpy(ring[P - 1], xin, sizeof xin);
            }
            for (int c = 0; c < cw; c++) {
                for (int k = 0; k < K; k++) dw[(int64_t)(c0 + c) * K + k] += (float)gw[k][c];
                if (db) db[c0 + c] += (float)gb[c];
            }
            /* pass 2: the gradient of every input, scan index q in [-P, n); input q feeds
             * outputs u = q + P - k */
            float dsin[16][CB];
            for (int j = 0; j < P; j++)
                for (int c = 0; c < CB; c++) dsin[j][c] = (dstate && c < cw) ? dstate[(int64_t)j * Cn + c0 + c] : 0.0f;
            for (int64_t q = -P; q < n; q++) {
                float g[CB];
                for (int c = 0; c < CB; c++) g[c] = 0.0f;
                for (int k = 0; k < K; k++) {
                    int64_t u = q + P - k;
                    if (u < 0 || u >= n || lr[u] > q) continue;
                    const float *du = da + u * CB;
                    for (int c = 0; c < CB; c++) g[c] += du[c] * wk[k][c];
                }
                /* the emitted state's row j holds the input at scan index n - P + j */
                int64_t j = q - (n - P);
                if (j >= 0 && j < P && lr[n - 1] <= q)
                    for (int c = 0; c < CB; c++) g[c] += dsin[j][c];
                if (q >= 0) {
                    float *o = dx + scan_pos(q, n, reverse) * lddx + c0;
                    if (dx_accumulate) for (int c = 0; c < cw; c++) o[c] += g[c];
                    else for (int c = 0; c < cw; c++) o[c] = g[c];
                } else if (dstate) {
                    for (int c = 0; c < cw; c++) dstate[(int64_t)(q + P) * Cn + c0 + c] = g[c];
                }
            }
        }
        free(da);
    }
    free(lr);
    if (err) { md_error("out of memory"); return -2; }
    return 0;
}

/* --- selective scan ------------------------------------------------------------------------- */

static int cpu_scan_fwd(md_backend_t *be, int64_t n, int Di, int N, const md_tscan_t *d, void *y_, int64_t ldy,
                        int accumulate, const uint8_t *seq_start)
{
    (void)be;
    if (N > 64) { md_error("d_state %d > 64 not supported by the CPU scan", N); return -2; }
    if (d->T < 1) { md_error("scan chunk %d < 1", d->T); return -2; }
    float *y = y_;
    const float *x = d->x, *dt = d->dt, *B = d->B, *C = d->C, *z = d->z;
    const int T = d->T, nb = (Di + CB - 1) / CB;
#pragma omp parallel for schedule(dynamic, 1)
    for (int blk = 0; blk < nb; blk++) {
        const int c0 = blk * CB, cw = Di - c0 < CB ? Di - c0 : CB;
        float h[64][CB], A[64][CB], Dv[CB], bias[CB];
        for (int s = 0; s < N; s++)
            for (int c = 0; c < CB; c++) {
                h[s][c] = (c < cw && d->state) ? d->state[(int64_t)(c0 + c) * N + s] : 0.0f;
                A[s][c] = c < cw ? d->A[(int64_t)(c0 + c) * N + s] : 0.0f;
            }
        for (int c = 0; c < CB; c++) {
            Dv[c] = (d->D && c < cw) ? d->D[c0 + c] : 0.0f;
            bias[c] = (d->dt_bias && c < cw) ? d->dt_bias[c0 + c] : 0.0f;
        }
        for (int64_t u = 0; u < n; u++) {
            const int64_t t = scan_pos(u, n, d->reverse);
            if (u % T == 0) {
                float *cs = d->chunk_states + (u / T) * (int64_t)Di * N;
                for (int c = 0; c < cw; c++)
                    for (int s = 0; s < N; s++) cs[(int64_t)(c0 + c) * N + s] = h[s][c];
            }
            if (scan_reset(seq_start, u, n, d->reverse)) memset(h, 0, sizeof h);
            float xv[CB], dtv[CB], dl[CB], dx[CB], out[CB];
            for (int c = 0; c < CB; c++) {
                xv[c] = c < cw ? x[t * d->ldx + c0 + c] : 0.0f;
                dtv[c] = c < cw ? dt[t * d->lddt + c0 + c] : 0.0f;
            }
            block_softplus(dtv, bias, dl);
            for (int c = 0; c < CB; c++) {
                dx[c] = dl[c] * xv[c];
                out[c] = Dv[c] * xv[c];
            }
            const float *Bt = B + t * d->ldbc, *Ct = C + t * d->ldbc;
#ifdef __AVX2__
            v8f dlk[2], dxk[2], ok[2];
            for (int k = 0; k < 2; k++) {
                dlk[k] = _mm256_loadu_ps(dl + 8 * k);
                dxk[k] = _mm256_loadu_ps(dx + 8 * k);
                ok[k] = _mm256_loadu_ps(out + 8 * k);
            }
            for (int s = 0; s < N; s++) {
                const v8f bs = _mm256_set1_ps(Bt[s]), cs = _mm256_set1_ps(Ct[s]);
                for (int k = 0; k < 2; k++) {
                    v8f a = v8_exp(_mm256_mul_ps(dlk[k], _mm256_loadu_ps(&A[s][8 * k])));
                    v8f hv = _mm256_fmadd_ps(a, _mm256_loadu_ps(&h[s][8 * k]), _mm256_mul_ps(dxk[k], bs));
                    _mm256_storeu_ps(&h[s][8 * k], hv);
                    ok[k] = _mm256_fmadd_ps(hv, cs, ok[k]);
                }
            }
            _mm256_storeu_ps(out, ok[0]);
            _mm256_storeu_ps(out + 8, ok[1]);
#else
            for (int s = 0; s < N; s++) {
                const float bs = Bt[s], cs = Ct[s];
                for (int c = 0; c < CB; c++) {
                    float hv = t_expf(dl[c] * A[s][c]) * h[s][c] + dx[c] * bs;
                    h[s][c] = hv;
                    out[c] += hv * cs;
                }
            }
#endif
            if (z)
                for (int c = 0; c < cw; c++) {
                    float zv = z[t * d->ldz + c0 + c];
                    out[c] *= zv * t_sigmoid(zv);
                }
            float *yt = y + t * ldy + c0;
            if (accumulate) for (int c = 0; c < cw; c++) yt[c] += out[c];
            else for (int c = 0; c < cw; c++) yt[c] = out[c];
        }
        if (d->state)
            for (int c = 0; c < cw; c++)
                for (int s = 0; s < N; s++) d->state[(int64_t)(c0 + c) * N + s] = h[s][c];
    }
    return 0;
}

typedef struct {
    float *H;      /* [T][N][CB] states after each position of the chunk */
    float *E;      /* [T][N][CB] exp(delta * A) */
    float *dl;     /* [T][CB] delta */
    float *out;    /* [T][CB] pre-gate output */
    uint8_t *rst;  /* [T] */
} scan_scratch_t;


/* One channel block [c0, c0+cw) over chunk j of the backward: recompute the chunk's states from
 * its saved start state, then the adjoint walk. dh [N][CB] is the carry (dL/dh after the chunk
 * in, before it out); dA/dD/db accumulate in double across chunks; part [T][2N] receives this
 * block's dB (first N columns) and dC sums over its channels per position. */
static void scan_bwd_block(int64_t n, int Di, int N, const md_tscan_t *d, int64_t j, int c0, int cw,
                           const uint8_t *seq_start, scan_scratch_t *sc, float *dh, double *dAacc, double *dDacc,
                           double *dbacc, float *part)
{
    const float *x = d->x, *dt = d->dt, *B = d->B, *C = d->C, *z = d->z, *dy = d->dy;
    float *dxo = d->dx, *ddto = d->ddt, *dzo = d->dz, *yo = d->y;
    const int T = d->T;
    const int64_t u0 = j * T, len = n - u0 < T ? n - u0 : T;
    float A[64][CB], hs[64][CB], h[64][CB], Dv[CB], bias[CB];
    const float *cst = d->chunk_states + j * (int64_t)Di * N;
    for (int s = 0; s < N; s++)
        for (int c = 0; c < CB; c++) {
            A[s][c] = c < cw ? d->A[(int64_t)(c0 + c) * N + s] : 0.0f;
            hs[s][c] = h[s][c] = c < cw ? cst[(int64_t)(c0 + c) * N + s] : 0.0f;
        }
    for (int c = 0; c < CB; c++) {
        Dv[c] = (d->D && c < cw) ? d->D[c0 + c] : 0.0f;
        bias[c] = (d->dt_bias && c < cw) ? d->dt_bias[c0 + c] : 0.0f;
    }
    /* recompute */
    for (int64_t uu = 0; uu < len; uu++) {
        const int64_t u = u0 + uu, t = scan_pos(u, n, d->reverse);
        const int rst = scan_reset(seq_start, u, n, d->reverse);
        sc->rst[uu] = (uint8_t)rst;
        if (rst) memset(h, 0, sizeof h);
        float xv[CB], dtv[CB], dl[CB], dxb[CB], o[CB];
        for (int c = 0; c < CB; c++) {
            xv[c] = c < cw ? x[t * d->ldx + c0 + c] : 0.0f;
            dtv[c] = c < cw ? dt[t * d->lddt + c0 + c] : 0.0f;
        }
        block_softplus(dtv, bias, dl);
        for (int c = 0; c < CB; c++) {
            dxb[c] = dl[c] * xv[c];
            o[c] = Dv[c] * xv[c];
            sc->dl[uu * CB + c] = dl[c];
        }
        const float *Bt = B + t * d->ldbc, *Ct = C + t * d->ldbc;
#ifdef __AVX2__
        v8f dlk[2], dxk[2], ok[2];
        for (int k = 0; k < 2; k++) {
            dlk[k] = _mm256_loadu_ps(dl + 8 * k);
            dxk[k] = _mm256_loadu_ps(dxb + 8 * k);
            ok[k] = _mm256_loadu_ps(o + 8 * k);
        }
        for (int s = 0; s < N; s++) {
            const v8f bs = _mm256_set1_ps(Bt[s]), cs = _mm256_set1_ps(Ct[s]);
            float *Hu = sc->H + (uu * N + s) * CB, *Eu = sc->E + (uu * N + s) * CB;
            for (int k = 0; k < 2; k++) {
                v8f a = v8_exp(_mm256_mul_ps(dlk[k], _mm256_loadu_ps(&A[s][8 * k])));
                v8f hv = _mm256_fmadd_ps(a, _mm256_loadu_ps(&h[s][8 * k]), _mm256_mul_ps(dxk[k], bs));
                _mm256_storeu_ps(&h[s][8 * k], hv);
                _mm256_storeu_ps(Hu + 8 * k, hv);
                _mm256_storeu_ps(Eu + 8 * k, a);
                ok[k] = _mm256_fmadd_ps(hv, cs, ok[k]);
            }
        }
        _mm256_storeu_ps(o, ok[0]);
        _mm256_storeu_ps(o + 8, ok[1]);
#else
        for (int s = 0; s < N; s++) {
            const float bs = Bt[s], cs = Ct[s];
            float *Hu = sc->H + (uu * N + s) * CB, *Eu = sc->E + (uu * N + s) * CB;
            for (int c = 0; c < CB; c++) {
                float a = t_expf(dl[c] * A[s][c]);
                float hv = a * h[s][c] + dxb[c] * bs;
                h[s][c] = hv;
                Hu[c] = hv;
                Eu[c] = a;
                o[c] += hv * cs;
            }
        }
#endif
        for (int c = 0; c < CB; c++) sc->out[uu * CB + c] = o[c];
    }
    /* adjoint */
    float dAc[64][CB], dDc[CB], dbc[CB];
    memset(dAc, 0, sizeof dAc);
    memset(dDc, 0, sizeof dDc);
    memset(dbc, 0, sizeof dbc);
    for (int64_t uu = len - 1; uu >= 0; uu--) {
        const int64_t u = u0 + uu, t = scan_pos(u, n, d->reverse);
        const int rst = sc->rst[uu];
        float xv[CB], dl[CB], dout[CB], dxv[CB], ddl[CB];
        for (int c = 0; c < CB; c++) {
            xv[c] = c < cw ? x[t * d->ldx + c0 + c] : 0.0f;
            dl[c] = sc->dl[uu * CB + c];
            float dyv = c < cw ? dy[t * d->lddy + c0 + c] : 0.0f;
            float gate = 1.0f;
            if (z) {
                float zv = c < cw ? z[t * d->ldz + c0 + c] : 0.0f;
                float sg = t_sigmoid(zv);
                float dzv = dyv * sc->out[uu * CB + c] * sg * (1.0f + zv * (1.0f - sg));
                if (c < cw) {
                    float *zo = dzo + t * d->lddz + c0 + c;
                    *zo = d->dz_accumulate ? *zo + dzv : dzv;
                }
                gate = zv * sg;
            }
            dout[c] = dyv * gate;
            if (yo && c < cw) {
                float *q = yo + t * d->ldy + c0 + c;
                *q = d->y_accumulate ? *q + sc->out[uu * CB + c] * gate : sc->out[uu * CB + c] * gate;
            }
            dDc[c] += dout[c] * xv[c];
            dxv[c] = dout[c] * Dv[c];
            ddl[c] = 0.0f;
        }
        const float *Bt = B + t * d->ldbc, *Ct = C + t * d->ldbc;
        const float *Hprev = uu > 0 ? sc->H + (uu - 1) * N * CB : &hs[0][0];
        float *pr = part + uu * 2 * N;
#ifdef __AVX2__
        v8f vdout[2], vdl[2], vx[2], vdx[2], vddl[2];
        for (int k = 0; k < 2; k++) {
            vdout[k] = _mm256_loadu_ps(dout + 8 * k);
            vdl[k] = _mm256_loadu_ps(dl + 8 * k);
            vx[k] = _mm256_loadu_ps(xv + 8 * k);
            vdx[k] = _mm256_loadu_ps(dxv + 8 * k);
            vddl[k] = _mm256_setzero_ps();
        }
        const v8f keep = rst ? _mm256_setzero_ps() : _mm256_castsi256_ps(_mm256_set1_epi32(-1));
        for (int s = 0; s < N; s++) {
            const v8f bs = _mm256_set1_ps(Bt[s]), cs = _mm256_set1_ps(Ct[s]);
            const float *Hu = sc->H + (uu * N + s) * CB, *Eu = sc->E + (uu * N + s) * CB, *Hp = Hprev + s * CB;
            float *dhs = dh + s * CB;
            v8f sB = _mm256_setzero_ps(), sC = _mm256_setzero_ps();
            for (int k = 0; k < 2; k++) {
                v8f g = _mm256_fmadd_ps(vdout[k], cs, _mm256_loadu_ps(dhs + 8 * k));
                sC = _mm256_fmadd_ps(vdout[k], _mm256_loadu_ps(Hu + 8 * k), sC);
                v8f gdl = _mm256_mul_ps(g, vdl[k]);
                sB = _mm256_fmadd_ps(gdl, vx[k], sB);
                vdx[k] = _mm256_fmadd_ps(gdl, bs, vdx[k]);
                v8f ge = _mm256_and_ps(_mm256_mul_ps(g, _mm256_loadu_ps(Eu + 8 * k)), keep);
                v8f ga = _mm256_mul_ps(ge, _mm256_loadu_ps(Hp + 8 * k));
                vddl[k] = _mm256_fmadd_ps(ga, _mm256_loadu_ps(&A[s][8 * k]),
                                          _mm256_fmadd_ps(_mm256_mul_ps(g, bs), vx[k], vddl[k]));
                _mm256_storeu_ps(&dAc[s][8 * k], _mm256_fmadd_ps(ga, vdl[k], _mm256_loadu_ps(&dAc[s][8 * k])));
                _mm256_storeu_ps(dhs + 8 * k, ge);
            }
            pr[s] = v8_hsum(sB);
            pr[N + s] = v8_hsum(sC);
        }
        for (int k = 0; k < 2; k++) {
            _mm256_storeu_ps(dxv + 8 * k, vdx[k]);
            _mm256_storeu_ps(ddl + 8 * k, vddl[k]);
        }
#else
        for (int s = 0; s < N; s++) {
            const float bs = Bt[s], cs = Ct[s];
            const float *Hu = sc->H + (uu * N + s) * CB, *Eu = sc->E + (uu * N + s) * CB, *Hp = Hprev + s * CB;
            float *dhs = dh + s * CB;
            float sB = 0.0f, sC = 0.0f;
            for (int c = 0; c < CB; c++) {
                float g = dhs[c] + dout[c] * cs;
                sC += dout[c] * Hu[c];
                float gdl = g * dl[c];
                sB += gdl * xv[c];
                dxv[c] += gdl * bs;
                float ge = rst ? 0.0f : g * Eu[c];
                float ga = ge * Hp[c];
                ddl[c] += ga * A[s][c] + g * bs * xv[c];
                dAc[s][c] += ga * dl[c];
                dhs[c] = ge;
            }
            pr[s] = sB;
            pr[N + s] = sC;
        }
#endif
        for (int c = 0; c < cw; c++) {
            dxo[t * d->lddx + c0 + c] = dxv[c];
            float g = ddl[c] * t_dsoftplus(dt[t * d->lddt + c0 + c] + bias[c]);
            ddto[t * d->ldddt + c0 + c] = g;
            dbc[c] += g;
        }
    }
    for (int s = 0; s < N; s++)
        for (int c = 0; c < CB; c++) dAacc[s * CB + c] += dAc[s][c];
    for (int c = 0; c < CB; c++) {
        dDacc[c] += dDc[c];
        dbacc[c] += dbc[c];
    }
}

static int cpu_scan_bwd(md_backend_t *be, int64_t n, int Di, int N, const md_tscan_t *d, const uint8_t *seq_start)
{
    (void)be;
    if (N > 64) { md_error("d_state %d > 64 not supported by the CPU scan", N); return -2; }
    if (d->T < 1) { md_error("scan chunk %d < 1", d->T); return -2; }
    if (n <= 0) return 0;
    /* Chunks are taken in groups of G (about 1024 positions): every block walks the group's
     * chunks in reverse scan order writing its partial dB/dC rows, then the rows are summed over
     * blocks; two barriers per group. */
    const int T = d->T, nb = (Di + CB - 1) / CB, G = T >= 1024 ? 1 : 1024 / T;
    const int64_t nch = (n + T - 1) / T, ngr = (nch + G - 1) / G, GT = (int64_t)G * T;
    float *part = md_malloc((size_t)nb * GT * 2 * N * sizeof(float));
    float *dh = md_calloc((size_t)nb * N * CB, sizeof(float));
    double *dA = md_calloc((size_t)nb * N * CB, sizeof(double));
    double *dD = md_calloc((size_t)nb * CB, sizeof(double));
    double *db = md_calloc((size_t)nb * CB, sizeof(double));
    int err = !part || !dh || !dA || !dD || !db;
    if (!err && d->dstate)
        for (int c = 0; c < Di; c++)
            for (int s = 0; s < N; s++) dh[((size_t)(c / CB) * N + s) * CB + c % CB] = d->dstate[(int64_t)c * N + s];
    float *dB = d->dB, *dC = d->dC;
    if (!err) {
#pragma omp parallel
        {
            scan_scratch_t sc;
            sc.H = malloc((size_t)T * N * CB * sizeof(float));
            sc.E = malloc((size_t)T * N * CB * sizeof(float));
            sc.dl = malloc((size_t)T * CB * sizeof(float));
            sc.out = malloc((size_t)T * CB * sizeof(float));
            sc.rst = malloc(T);
            int ok = sc.H && sc.E && sc.dl && sc.out && sc.rst;
            if (!ok) {
#pragma omp atomic write
                err = 1;
            }
            for (int64_t J = ngr - 1; J >= 0; J--) {
                const int64_t j0 = J * G, j1 = j0 + G < nch ? j0 + G : nch;
#pragma omp for schedule(static)
                for (int blk = 0; blk < nb; blk++) {
                    if (!ok) continue;
                    int c0 = blk * CB, cw = Di - c0 < CB ? Di - c0 : CB;
                    for (int64_t j = j1 - 1; j >= j0; j--)
                        scan_bwd_block(n, Di, N, d, j, c0, cw, seq_start, &sc, dh + (size_t)blk * N * CB,
                                       dA + (size_t)blk * N * CB, dD + (size_t)blk * CB, db + (size_t)blk * CB,
                                       part + ((size_t)blk * GT + (j - j0) * T) * 2 * N);
                }
                const int64_t u0 = j0 * T, len = n - u0 < GT ? n - u0 : GT;
#pragma omp for schedule(static)
                for (int64_t uu = 0; uu < len; uu++) {
                    const int64_t t = scan_pos(u0 + uu, n, d->reverse);
                    for (int s = 0; s < 2 * N; s++) {
                        float acc = 0.0f;
                        for (int blk = 0; blk < nb; blk++) acc += part[((size_t)blk * GT + uu) * 2 * N + s];
                        if (s < N) dB[t * d->lddbc + s] = acc;
                        else dC[t * d->lddbc + s - N] = acc;
                    }
                }
            }
            free(sc.H);
            free(sc.E);
            free(sc.dl);
            free(sc.out);
            free(sc.rst);
        }
    }
    if (!err) {
        for (int c = 0; c < Di; c++) {
            const size_t bo = (size_t)(c / CB), cc = c % CB;
            for (int s = 0; s < N; s++) {
                d->dA_log[(int64_t)c * N + s] += (float)dA[(bo * N + s) * CB + cc] * d->A[(int64_t)c * N + s];
                if (d->dstate) d->dstate[(int64_t)c * N + s] = dh[(bo * N + s) * CB + cc];
            }
            if (d->dD) d->dD[c] += (float)dD[bo * CB + cc];
            if (d->ddt_bias) d->ddt_bias[c] += (float)db[bo * CB + cc];
        }
    }
    free(part);
    free(dh);
    free(dA);
    free(dD);
    free(db);
    if (err) { md_error("out of memory in the scan backward"); return -2; }
    return 0;
}

/* --- elementwise, loss, optimizer ----------------------------------------------------------- */

static int cpu_mul_bwd(md_backend_t *be, int64_t n, int W, const void *dout_, int64_t lddo, const void *a_, int64_t lda,
                       const void *b_, int64_t ldb, void *da_, int64_t ldda, void *db_, int64_t lddb)
{
    (void)be;
    const float *g = dout_, *a = a_, *b = b_;
    float *da = da_, *db = db_;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < W; j++) {
            float gv = g[i * lddo + j], av = a[i * lda + j], bv = b[i * ldb + j];
            if (da) da[i * ldda + j] = gv * bv;
            if (db) db[i * lddb + j] = gv * av;
        }
    return 0;
}

static int cpu_xent(md_backend_t *be, int64_t n, int V, const float *logits, int64_t ldl, const int32_t *targets,
                    const float *weights, int ignore_index, float scale, float *dlogits, int64_t ldd, double *stats)
{
    (void)be;
    const int64_t RB = 256, nb = (n + RB - 1) / RB;
    double *part = md_calloc((size_t)nb * 4, sizeof(double));
    if (!part) return -2;
    int bad = 0;
#pragma omp parallel for schedule(static)
    for (int64_t bi = 0; bi < nb; bi++) {
        double *p = part + bi * 4;
        int64_t i1 = (bi + 1) * RB < n ? (bi + 1) * RB : n;
        for (int64_t i = bi * RB; i < i1; i++) {
            const float *l = logits + i * ldl;
            float *dl = dlogits ? dlogits + i * ldd : NULL;
            int tg = targets[i];
            if (tg == ignore_index) {
                if (dl) for (int v = 0; v < V; v++) dl[v] = 0.0f;
                continue;
            }
            if (tg < 0 || tg >= V) {
#pragma omp atomic write
                bad = 1;
                continue;
            }
            float w = weights ? weights[i] : 1.0f;
            double mx = l[0];
            int am = 0;
            for (int v = 1; v < V; v++) if (l[v] > mx) { mx = l[v]; am = v; }
            double se = 0;
            for (int v = 0; v < V; v++) se += exp((double)l[v] - mx);
            double lse = mx + log(se);
            p[0] += w * (lse - l[tg]);
            p[1] += w;
            p[2] += am == tg ? w : 0.0;
            p[3] += 1;
            if (dl) {
                float f = scale * w;
                for (int v = 0; v < V; v++) {
                    double pv = exp((double)l[v] - lse);
                    dl[v] = (float)(f * (pv - (v == tg ? 1.0 : 0.0)));
                }
            }
        }
    }
    for (int64_t bi = 0; bi < nb; bi++)
        for (int k = 0; k < 4; k++) stats[k] += part[bi * 4 + k];
    free(part);
    if (bad) { md_error("a target id is outside the vocabulary (0..%d)", V - 1); return -2; }
    return 0;
}

static int cpu_adamw(md_backend_t *be, int64_t n, float *p, const float *g, float *m, float *v, const md_adamw_t *hp)
{
    (void)be;
    const double bc1 = 1.0 - pow(hp->beta1, (double)hp->step), bc2 = 1.0 - pow(hp->beta2, (double)hp->step);
    const float decay = (float)(1.0 - hp->lr * hp->weight_decay), b1 = (float)hp->beta1, b2 = (float)hp->beta2;
    const float step = (float)(hp->lr / bc1), rbc2 = (float)(1.0 / sqrt(bc2)), eps = (float)hp->eps;
    const float gs = (float)hp->gscale;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * gs;
        float pi = p[i] * decay;
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step * mi / (sqrtf(vi) * rbc2 + eps);
    }
    return 0;
}

static int cpu_sumsq(md_backend_t *be, int64_t n, const float *x, double *acc)
{
    (void)be;
    const int64_t RB = 65536, nb = (n + RB - 1) / RB;
    double *part = md_calloc(nb > 0 ? nb : 1, sizeof(double));
    if (!part) return -2;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        double s = 0;
        int64_t i1 = (b + 1) * RB < n ? (b + 1) * RB : n;
        for (int64_t i = b * RB; i < i1; i++) s += (double)x[i] * x[i];
        part[b] = s;
    }
    for (int64_t b = 0; b < nb; b++) *acc += part[b];
    free(part);
    return 0;
}

static int cpu_permute(md_backend_t *be, int rows, int cols, const float *src, int64_t lds, float *dst, int64_t ldd,
                       const int32_t *rowmap, int flip_cols, int accumulate)
{
    (void)be;
    for (int r = 0; r < rows; r++) {
        const float *s = src + (int64_t)(rowmap ? rowmap[r] : r) * lds;
        float *o = dst + (int64_t)r * ldd;
        for (int c = 0; c < cols; c++) {
            float v = s[flip_cols ? cols - 1 - c : c];
            o[c] = accumulate ? o[c] + v : v;
        }
    }
    return 0;
}

static int cpu_set_matrix(md_backend_t *be, void *mat, int rows, int cols, const float *src, int64_t lds,
                          const int32_t *rowmap, int flip_cols)
{
    return cpu_permute(be, rows, cols, src, lds, mat, cols, rowmap, flip_cols, 0);
}

static int cpu_neg_exp(md_backend_t *be, int64_t n, const float *src, float *dst)
{
    (void)be;
    for (int64_t i = 0; i < n; i++) dst[i] = -expf(src[i]);
    return 0;
}

static const md_train_ops_t cpu_ops = {
    .name = "cpu",
    .scan_chunk = 64,
    .embed_bwd = cpu_embed_bwd,
    .add_norm_bwd = cpu_add_norm_bwd,
    .gemm_da = cpu_gemm_da,
    .gemm_dw = cpu_gemm_dw,
    .conv_silu_bwd = cpu_conv_silu_bwd,
    .scan_fwd = cpu_scan_fwd,
    .scan_bwd = cpu_scan_bwd,
    .mul_bwd = cpu_mul_bwd,
    .xent = cpu_xent,
    .adamw = cpu_adamw,
    .sumsq = cpu_sumsq,
    .permute = cpu_permute,
    .set_matrix = cpu_set_matrix,
    .neg_exp = cpu_neg_exp,
};

const md_train_ops_t *md_train_ops_cpu(void) { return &cpu_ops; }

#ifdef MD_WITH_CUDA
/* kernels/train_ops.cu; a strong reference, so that static links include the CUDA table (the
 * weak md_train_ops_cuda alone does not take an object out of an archive) */
const md_train_ops_t *md_train_ops_cuda_linked(void);
#endif

const md_train_ops_t *md_train_ops_for(const md_backend_t *be)
{
    if (!strcmp(be->name, "cpu")) return md_train_ops_cpu();
    if (!strcmp(be->name, "cuda")) {
#ifdef MD_WITH_CUDA
        return md_train_ops_cuda_linked();
#endif
        if (md_train_ops_cuda) {
            const md_train_ops_t *o = md_train_ops_cuda();
            if (o) return o;
        }
        md_error("training on the '%s' backend is not available in this build (no CUDA backward ops yet); "
                 "use -d cpu", be->name);
        return NULL;
    }
    md_error("no training ops for the '%s' backend", be->name);
    return NULL;
}
