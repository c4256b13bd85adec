/* backend_cpu.c: the CPU backend, the oracle every other backend is checked against.
 * Float32 everywhere; GEMMs through CBLAS (OpenBLAS); everything else plain C with OpenMP over
 * channel blocks. Activations are token-major [n, width]. The conv and scan walk positions in
 * scan order and vectorise across channels (conv) or states (scan) with a polynomial exp that
 * GCC turns into SIMD code; a channel block of 16 keeps each row access inside one cache line.
 * Work is split by channel only, so results do not depend on the thread count. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"
#include "md.h"

void openblas_set_num_threads(int num_threads);

#include "vmath.h"

/* --- memory ---------------------------------------------------------------------------------- */

static void *cpu_alloc(md_backend_t *be, size_t bytes)
{
    (void)be;
    size_t sz = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, sz ? sz : 64);
    if (!p) md_error("out of memory allocating %.1f MiB", bytes / 1048576.0);
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

static int cpu_conv_silu(md_backend_t *be, int64_t n, int Cn, int K, const void *x_, int64_t ldx,
                         const float *w, const float *b, void *out_, float *state, int reverse,
                         const uint8_t *seq_start)
{
    (void)be;
    const float *x = x_;
    float *out = out_;
    const int nb = (Cn + CBLK - 1) / CBLK;
    if (K > 16) { md_error("conv width %d > 16 not supported", K); return -2; }
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nb; blk++) {
        const int c0 = blk * CBLK, cw = Cn - c0 < CBLK ? Cn - c0 : CBLK;
        float ring[16][CBLK]; /* ring[j]: input at scan distance K-1-j before u */
        float wk[16][CBLK], bb[CBLK];
        for (int j = 0; j < K - 1; j++)
            for (int c = 0; c < CBLK; c++) ring[j][c] = c < cw ? state[(int64_t)j * Cn + c0 + c] : 0.0f;
        for (int k = 0; k < K; k++)
            for (int c = 0; c < CBLK; c++) wk[k][c] = c < cw ? w[(int64_t)(c0 + c) * K + k] : 0.0f;
        for (int c = 0; c < CBLK; c++) bb[c] = (b && c < cw) ? b[c0 + c] : 0.0f;
        for (int64_t u = 0; u < n; u++) {
            const int64_t t = scan_pos(u, n, reverse);
            if (scan_reset(seq_start, u, n, reverse))
                for (int j = 0; j < K - 1; j++) memset(ring[j], 0, sizeof ring[j]);
            float xin[CBLK], acc[CBLK];
            for (int c = 0; c < CBLK; c++) xin[c] = c < cw ? x[t * ldx + c0 + c] : 0.0f;
#ifdef __AVX2__
            for (int k = 0; k < 2; k++) {
                v8f a = _mm256_fmadd_ps(_mm256_loadu_ps(&wk[K - 1][8 * k]), _mm256_loadu_ps(xin + 8 * k),
                                        _mm256_loadu_ps(bb + 8 * k));
                for (int j = 0; j < K - 1; j++)
                    a = _mm256_fmadd_ps(_mm256_loadu_ps(&wk[j][8 * k]), _mm256_loadu_ps(&ring[j][8 * k]), a);
                _mm256_storeu_ps(acc + 8 * k, v8_silu(a));
            }
#else
            for (int c = 0; c < CBLK; c++) {
                float a = bb[c] + wk[K - 1][c] * xin[c];
                for (int j = 0; j < K - 1; j++) a += wk[j][c] * ring[j][c];
                acc[c] = md_silu(a);
            }
#endif
            for (int c = 0; c < cw; c++) out[t * Cn + c0 + c] = acc[c];
            for (int j = 0; j + 1 < K - 1; j++) memcpy(ring[j], ring[j + 1], sizeof ring[j]);
            if (K > 1) memcpy(ring[K - 2], xin, sizeof xin);
        }
        for (int j = 0; j < K - 1; j++)
            for (int c = 0; c < cw; c++) state[(int64_t)j * Cn + c0 + c] = ring[j][c];
    }
    return 0;
}

/* One direction over one block of channels [c0, c0+cw). N <= 64. State and A are held
 * transposed ([state][channel]) so that every inner loop runs across the 16 channels of the
 * block: B and C values are broadcast and no horizontal sums are needed. */
static void scan_block(int64_t n, int N, const md_scan_dir_t *d, int c0, int cw, float *y, int64_t ldy,
                       int accumulate, const uint8_t *seq_start)
{
    const float *x = d->x, *dt = d->dt, *B = d->B, *C = d->C, *z = d->z;
    float h[64][CBLK] __attribute__((aligned(64))), A[64][CBLK] __attribute__((aligned(64)));
    float Dv[CBLK], bias[CBLK];
    for (int c = 0; c < CBLK; c++) {
        for (int s = 0; s < N; s++) {
            h[s][c] = c < cw ? d->state[(int64_t)(c0 + c) * N + s] : 0.0f;
            A[s][c] = c < cw ? d->A[(int64_t)(c0 + c) * N + s] : 0.0f;
        }
        Dv[c] = (d->D && c < cw) ? d->D[c0 + c] : 0.0f;
        bias[c] = (d->dt_bias && c < cw) ? d->dt_bias[c0 + c] : 0.0f;
    }
    for (int64_t u = 0; u < n; u++) {
        const int64_t t = scan_pos(u, n, d->reverse);
        if (scan_reset(seq_start, u, n, d->reverse)) memset(h, 0, sizeof h);
        float xv[CBLK], delta[CBLK], dx[CBLK], out[CBLK];
        const float *xt = x + t * d->ldx + c0, *dtt = dt + t * d->lddt + c0;
        if (cw == CBLK) {
            for (int c = 0; c < CBLK; c++) { xv[c] = xt[c]; delta[c] = dtt[c]; }
        } else {
            for (int c = 0; c < CBLK; c++) { xv[c] = c < cw ? xt[c] : 0.0f; delta[c] = c < cw ? dtt[c] : 0.0f; }
        }
        const float *Bt = B + t * d->ldbc, *Ct = C + t * d->ldbc;
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
                v8f a = v8_exp(_mm256_mul_ps(dl[k], _mm256_load_ps(&A[s][8 * k])));
                v8f hv = _mm256_fmadd_ps(a, _mm256_load_ps(&h[s][8 * k]), _mm256_mul_ps(dxv[k], bs));
                _mm256_store_ps(&h[s][8 * k], hv);
                ov[k] = _mm256_fmadd_ps(hv, cs, ov[k]);
            }
        }
        if (z) {
            const float *zt = z + t * d->ldz + c0;
            float zv[CBLK];
            for (int c = 0; c < CBLK; c++) zv[c] = c < cw ? zt[c] : 0.0f;
            for (int k = 0; k < 2; k++) ov[k] = _mm256_mul_ps(ov[k], v8_silu(_mm256_loadu_ps(zv + 8 * k)));
        }
        _mm256_storeu_ps(out, ov[0]);
        _mm256_storeu_ps(out + 8, ov[1]);
        (void)dx;
#else
        for (int c = 0; c < CBLK; c++) {
            delta[c] = md_softplus(delta[c] + bias[c]);
            dx[c] = delta[c] * xv[c];
            out[c] = Dv[c] * xv[c];
        }
        for (int s = 0; s < N; s++) {
            const float bs = Bt[s], cs = Ct[s];
            for (int c = 0; c < CBLK; c++) {
                float hv = md_expf(delta[c] * A[s][c]) * h[s][c] + dx[c] * bs;
                h[s][c] = hv;
                out[c] += hv * cs;
            }
        }
        if (z) {
            const float *zt = z + t * d->ldz + c0;
            for (int c = 0; c < CBLK; c++) out[c] *= md_silu(c < cw ? zt[c] : 0.0f);
        }
#endif
        float *yt = y + t * ldy + c0;
        if (accumulate) for (int c = 0; c < cw; c++) yt[c] += out[c];
        else for (int c = 0; c < cw; c++) yt[c] = out[c];
    }
    for (int c = 0; c < cw; c++)
        for (int s = 0; s < N; s++) d->state[(int64_t)(c0 + c) * N + s] = h[s][c];
}

#if defined(__x86_64__) && defined(__GNUC__) && defined(__AVX2__)
/* The scan block with AVX-512 (one 16-lane register per channel block), chosen at run time
 * when the CPU has it; same arithmetic as the AVX2 path, lane for lane. */
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
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(kf), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

static T512 void scan_block_avx512(int64_t n, int N, const md_scan_dir_t *d, int c0, int cw, float *y,
                                   int64_t ldy, int accumulate, const uint8_t *seq_start)
{
    const float *x = d->x, *dt = d->dt, *B = d->B, *C = d->C, *z = d->z;
    float h[64][CBLK] __attribute__((aligned(64))), A[64][CBLK] __attribute__((aligned(64)));
    float Dv[CBLK], bias[CBLK];
    const __mmask16 lanes = (__mmask16)((1u << cw) - 1);
    for (int c = 0; c < CBLK; c++) {
        for (int s = 0; s < N; s++) {
            h[s][c] = c < cw ? d->state[(int64_t)(c0 + c) * N + s] : 0.0f;
            A[s][c] = c < cw ? d->A[(int64_t)(c0 + c) * N + s] : 0.0f;
        }
        Dv[c] = (d->D && c < cw) ? d->D[c0 + c] : 0.0f;
        bias[c] = (d->dt_bias && c < cw) ? d->dt_bias[c0 + c] : 0.0f;
    }
    const v16f vD = _mm512_loadu_ps(Dv), vbias = _mm512_loadu_ps(bias);
    for (int64_t u = 0; u < n; u++) {
        const int64_t t = scan_pos(u, n, d->reverse);
        if (scan_reset(seq_start, u, n, d->reverse)) memset(h, 0, sizeof h);
        const v16f xv = _mm512_maskz_loadu_ps(lanes, x + t * d->ldx + c0);
        const v16f v = _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, dt + t * d->lddt + c0), vbias);
        /* softplus, as v8_softplus */
        float vb[CBLK] __attribute__((aligned(64))), db[CBLK] __attribute__((aligned(64)));
        _mm512_store_ps(vb, v);
        for (int k = 0; k < 2; k++) _mm256_store_ps(db + 8 * k, v8_softplus(_mm256_load_ps(vb + 8 * k)));
        const v16f dl = _mm512_load_ps(db);
        const v16f dxv = _mm512_mul_ps(dl, xv);
        v16f ov = _mm512_mul_ps(vD, xv);
        const float *Bt = B + t * d->ldbc, *Ct = C + t * d->ldbc;
        for (int s = 0; s < N; s++) {
            v16f a = v16_exp(_mm512_mul_ps(dl, _mm512_load_ps(A[s])));
            v16f hv = _mm512_fmadd_ps(a, _mm512_load_ps(h[s]), _mm512_mul_ps(dxv, _mm512_set1_ps(Bt[s])));
            _mm512_store_ps(h[s], hv);
            ov = _mm512_fmadd_ps(hv, _mm512_set1_ps(Ct[s]), ov);
        }
        if (z) {
            v16f zv = _mm512_maskz_loadu_ps(lanes, z + t * d->ldz + c0);
            v16f sg = _mm512_div_ps(zv, _mm512_add_ps(_mm512_set1_ps(1.0f), v16_exp(_mm512_sub_ps(_mm512_setzero_ps(), zv))));
            ov = _mm512_mul_ps(ov, sg);
        }
        float *yt = y + t * ldy + c0;
        if (accumulate) ov = _mm512_add_ps(ov, _mm512_maskz_loadu_ps(lanes, yt));
        _mm512_mask_storeu_ps(yt, lanes, ov);
    }
    for (int c = 0; c < cw; c++)
        for (int s = 0; s < N; s++) d->state[(int64_t)(c0 + c) * N + s] = h[s][c];
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
    /* Directions in sequence (the second accumulates), channel blocks in parallel. */
    for (int k = 0; k < ndir; k++) {
        int acc = k > 0 ? 1 : accumulate;
#pragma omp parallel for schedule(dynamic, 1)
        for (int blk = 0; blk < nb; blk++) {
            int c0 = blk * CBLK, cw = Di - c0 < CBLK ? Di - c0 : CBLK;
#ifdef HAVE_AVX512_PATH
            if (use512) scan_block_avx512(n, N, &dirs[k], c0, cw, y, ldy, acc, seq_start);
            else
#endif
            scan_block(n, N, &dirs[k], c0, cw, y, ldy, acc, seq_start);
        }
    }
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
    return be;
}
