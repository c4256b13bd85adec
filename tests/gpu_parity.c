/* gpu_parity.c: every op of the CUDA backend against the CPU backend (the oracle), in fp32 and
 * bf16 mode, on random inputs drawn fresh for each check (seed printed), with poisoned (NaN)
 * outputs, odd shapes and lengths (1, 3, 4, 2047, 2049, 100003, segment- and chunk-crossing),
 * both scan directions, packed-sequence flags, state carry across pieces; then whole-model parity
 * (Ph, PS, Mamba; one chunk and many) and the golden conformance vectors on the GPU.
 * Bound on ||gpu - cpu|| / ||cpu||: 1e-4 in fp32 mode (1e-5 for the scan), 2e-2 in bf16 mode.
 * In bf16 mode the act inputs are rounded to bf16 first and the CPU gets the same values.
 * Needs a CUDA device; exits 77 (skipped) without one. Run from the repository root.
 * MD_PARITY_QUICK=1 skips the longest cases, MD_PARITY_MAXLEN=n the conv/scan lengths above n;
 * MD_PARITY_ONLY=<cmocka pattern> runs some tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "md.h"
#include "md_cuda.h"
#include "model.h"
#include "npy.h"

static md_backend_t *cpu;
static md_backend_t *gpus[2]; /* fp32, bf16 */
static int long_tests = 1;   /* MD_PARITY_QUICK=1 drops the 100003-length and 16-layer cases */
static int64_t max_len = INT64_MAX; /* MD_PARITY_MAXLEN: skip conv/scan lengths above it */

/* --- random data ----------------------------------------------------------------------------- */

static uint64_t rng = 1;
static uint64_t check_no;

static void new_seed(const char *what)
{
    check_no++;
    rng = 0x9E3779B97F4A7C15ull * (check_no + 12345) ^ 0xD1B54A32D192ED03ull;
    (void)what;
}
static uint64_t next_u64(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}
static float urand(void) { return (next_u64() >> 40) * (1.0f / 16777216.0f); }
static float nrand(void)
{
    float u = urand(), v = urand();
    if (u < 1e-7f) u = 1e-7f;
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}
static float *rand_normal(int64_t n, float mean, float sd)
{
    float *a = malloc((n > 0 ? n : 1) * sizeof *a);
    for (int64_t i = 0; i < n; i++) a[i] = mean + sd * nrand();
    return a;
}
static float *filled(int64_t n, float v)
{
    float *a = malloc((n > 0 ? n : 1) * sizeof *a);
    for (int64_t i = 0; i < n; i++) a[i] = v;
    return a;
}
static float bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return f;
    u += 0x7fffu + ((u >> 16) & 1);
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}
static void round_act(md_backend_t *g, float *a, int64_t n)
{
    if (g->act_dtype == MD_DT_BF16)
        for (int64_t i = 0; i < n; i++) a[i] = bf16_round(a[i]);
}
/* Packed-sequence flags [n+1]: starts with probability p; position 0 starts with probability
 * 1/2 (else the incoming state matters); flag n random. */
static uint8_t *rand_starts(int64_t n, double p)
{
    uint8_t *s = calloc(n + 1, 1);
    for (int64_t i = 0; i <= n; i++) s[i] = urand() < p;
    s[0] = urand() < 0.5f;
    s[n] = urand() < 0.5f;
    return s;
}

/* --- device helpers -------------------------------------------------------------------------- */

static size_t asz(md_backend_t *be) { return md_dtype_size(be->act_dtype); }

static void *up_act(md_backend_t *be, const float *h, int64_t n)
{
    void *d = be->alloc(be, (n > 0 ? n : 1) * asz(be));
    assert_non_null(d);
    assert_int_equal(be->upload_act(be, d, h, n), 0);
    return d;
}
static void *up_raw(md_backend_t *be, const void *h, size_t bytes)
{
    void *d = be->alloc(be, bytes ? bytes : 1);
    assert_non_null(d);
    assert_int_equal(be->upload(be, d, h, bytes), 0);
    return d;
}
static float *down_act(md_backend_t *be, const void *d, int64_t n)
{
    float *h = malloc((n > 0 ? n : 1) * sizeof *h);
    assert_int_equal(be->sync(be), 0);
    assert_int_equal(be->download_act(be, h, d, n), 0);
    return h;
}
static float *down_f32(md_backend_t *be, const void *d, int64_t n)
{
    float *h = malloc((n > 0 ? n : 1) * sizeof *h);
    assert_int_equal(be->sync(be), 0);
    assert_int_equal(be->download(be, h, d, n * sizeof(float)), 0);
    return h;
}

/* ||a - ref|| / ||ref|| over rows x cols with row stride ld; NaN anywhere -> infinity. */
static double relerr2(const float *a, const float *ref, int64_t rows, int64_t cols, int64_t ld)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            double x = a[i * ld + j], r = ref[i * ld + j];
            if (x != x || r != r) return INFINITY;
            num += (x - r) * (x - r);
            den += r * r;
        }
    if (den == 0) return num == 0 ? 0 : INFINITY;
    return sqrt(num / den);
}
static double relerr(const float *a, const float *ref, int64_t n) { return relerr2(a, ref, 1, n, n); }

/* Columns [cols, ld) of every row must still hold the NaN poison (nothing wrote outside). */
static int padding_untouched(const float *a, int64_t rows, int64_t cols, int64_t ld)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = cols; j < ld; j++)
            if (a[i * ld + j] == a[i * ld + j]) return 0;
    return 1;
}

static const char *prec(md_backend_t *g) { return g->act_dtype == MD_DT_BF16 ? "bf16" : "fp32"; }
static double tol(md_backend_t *g) { return g->act_dtype == MD_DT_BF16 ? 2e-2 : 1e-4; }
static double tol_scan(md_backend_t *g) { return g->act_dtype == MD_DT_BF16 ? 2e-2 : 1e-5; }

static int n_checks, n_fail;
static double worst[2][8]; /* [prec][op] */
enum { OP_EMBED, OP_NORM, OP_GEMM, OP_CONV, OP_SCAN, OP_MUL, OP_MODEL, OP_N };
static const char *op_name[] = { "embed", "add_norm", "gemm", "conv_silu", "scan", "mul", "model" };

static void report(md_backend_t *g, int op, const char *desc, double e, double bound)
{
    int p = g->act_dtype == MD_DT_BF16;
    n_checks++;
    if (e > worst[p][op] || e != e) worst[p][op] = e;
    int ok = e <= bound;
    if (!ok) n_fail++;
    printf("%s %-9s %-4s %-70s rel %.3g%s\n", ok ? "ok  " : "FAIL", op_name[op], prec(g), desc, e, ok ? "" : " (bound exceeded)");
    fflush(stdout);
}

/* Every check of a test function runs (so one device run shows all failures); the function
 * fails at its end if any did. */
#define BEGIN_CHECKS int fails0_ = n_fail
#define END_CHECKS assert_int_equal(n_fail - fails0_, 0)

/* --- embed ----------------------------------------------------------------------------------- */

static void check_embed(md_backend_t *g, int64_t n, int W, int V)
{
    new_seed("embed");
    int32_t *ids = malloc(n * sizeof *ids);
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(next_u64() % V);
    float *table = rand_normal((int64_t)V * W, 0, 0.02f);
    float *poison = filled(n * W, NAN);
    md_backend_t *be[2] = { cpu, g };
    float *out[2];
    for (int k = 0; k < 2; k++) {
        void *di = up_raw(be[k], ids, n * sizeof *ids), *dt = up_raw(be[k], table, (size_t)V * W * sizeof(float));
        void *o = up_act(be[k], poison, n * W);
        assert_int_equal(be[k]->embed(be[k], n, W, di, dt, o), 0);
        out[k] = down_act(be[k], o, n * W);
        be[k]->free(be[k], di); be[k]->free(be[k], dt); be[k]->free(be[k], o);
    }
    char d[128];
    snprintf(d, sizeof d, "n=%lld W=%d V=%d", (long long)n, W, V);
    report(g, OP_EMBED, d, relerr(out[1], out[0], n * W), tol(g));
    free(out[0]); free(out[1]); free(ids); free(table); free(poison);
}

static void test_embed(void **s)
{
    (void)s;
    BEGIN_CHECKS;
    for (int p = 0; p < 2; p++) {
        check_embed(gpus[p], 1, 256, 16);
        check_embed(gpus[p], 3, 118, 16);
        check_embed(gpus[p], 2049, 512, 8);
        if (long_tests) check_embed(gpus[p], 100003, 256, 16);
    }
    END_CHECKS;
}

/* --- add_norm -------------------------------------------------------------------------------- */

/* resmode: 0 res_out NULL, 1 separate res_out, 2 res_out aliases res */
static void check_norm(md_backend_t *g, int64_t n, int W, int group, int swap, int rms, int has_h, int has_res,
                       int resmode, int has_b)
{
    new_seed("norm");
    float *h = rand_normal(n * W, 0, 1), *res = rand_normal(n * W, 0.1f, 2);
    float *w = rand_normal(W, 1, 0.2f), *b = rand_normal(W, 0, 0.1f);
    round_act(g, h, n * W);
    float *poison = filled(n * W, NAN);
    md_backend_t *be[2] = { cpu, g };
    float *out[2], *ro[2] = { NULL, NULL };
    for (int k = 0; k < 2; k++) {
        md_backend_t *B = be[k];
        void *dh = has_h ? up_act(B, h, n * W) : NULL;
        float *dr = has_res ? up_raw(B, res, n * W * sizeof(float)) : NULL;
        float *dro = resmode == 1 ? up_raw(B, poison, n * W * sizeof(float)) : resmode == 2 ? dr : NULL;
        void *dout = up_act(B, poison, n * W);
        float *dw = up_raw(B, w, W * sizeof(float)), *db = has_b ? up_raw(B, b, W * sizeof(float)) : NULL;
        assert_int_equal(B->add_norm(B, n, W, group, dh, dr, dro, dout, dw, db, 1e-5f, swap, rms), 0);
        out[k] = down_act(B, dout, n * W);
        if (dro) ro[k] = down_f32(B, dro, n * W);
        if (dh) B->free(B, dh);
        if (dr) B->free(B, dr);
        if (resmode == 1) B->free(B, dro);
        B->free(B, dout); B->free(B, dw);
        if (db) B->free(B, db);
    }
    char d[160];
    snprintf(d, sizeof d, "n=%lld W=%d group=%d swap=%d rms=%d h=%d res=%d res_out=%s b=%d", (long long)n, W, group,
             swap, rms, has_h, has_res, resmode == 0 ? "none" : resmode == 1 ? "new" : "alias", has_b);
    report(g, OP_NORM, d, relerr(out[1], out[0], n * W), tol(g));
    if (ro[0]) {
        char d2[200];
        snprintf(d2, sizeof d2, "%s [res_out]", d);
        report(g, OP_NORM, d2, relerr(ro[1], ro[0], n * W), 1e-6);
        free(ro[0]); free(ro[1]);
    }
    free(out[0]); free(out[1]); free(h); free(res); free(w); free(b); free(poison);
}

static void test_add_norm(void **s)
{
    (void)s;
    BEGIN_CHECKS;
    for (int p = 0; p < 2; p++) {
        md_backend_t *g = gpus[p];
        check_norm(g, 1, 256, 256, 0, 1, 1, 0, 1, 0);      /* layer 0 of Ph: res = h */
        check_norm(g, 2049, 256, 256, 0, 1, 1, 1, 2, 0);   /* Ph layer: res aliased */
        check_norm(g, 3, 512, 256, 1, 1, 1, 1, 2, 0);      /* PS half swap, aliased */
        check_norm(g, 2047, 512, 256, 1, 1, 1, 1, 1, 0);
        check_norm(g, 1000, 512, 256, 0, 1, 0, 1, 0, 0);   /* recompute from res only */
        check_norm(g, 4097, 118, 118, 0, 0, 1, 1, 2, 1);   /* LayerNorm with bias, odd width */
        check_norm(g, 5, 2048, 1024, 1, 1, 1, 1, 2, 0);    /* widest, PlantCaduceus l32 PS */
        check_norm(g, 7, 100, 50, 1, 0, 1, 1, 1, 1);
        if (long_tests) check_norm(g, 100003, 256, 256, 0, 1, 1, 1, 2, 0);
    }
    END_CHECKS;
}

/* --- gemm ------------------------------------------------------------------------------------ */

static void check_gemm(md_backend_t *g, int64_t M, int N, int K, int64_t lda, int64_t ldc, int acc, int cf32)
{
    new_seed("gemm");
    float *A = rand_normal(M * lda, 0, 1), *W = rand_normal((int64_t)N * K, 0, 1.0f / sqrtf(K));
    round_act(g, A, M * lda);
    round_act(g, W, (int64_t)N * K);
    float *C0 = acc ? rand_normal(M * ldc, 0, 1) : filled(M * ldc, NAN);
    if (acc && !cf32) round_act(g, C0, M * ldc);
    if (acc) /* keep the padding poisoned */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = N; j < ldc; j++) C0[i * ldc + j] = NAN;
    md_backend_t *be[2] = { cpu, g };
    float *out[2];
    for (int k = 0; k < 2; k++) {
        md_backend_t *B = be[k];
        void *dA = up_act(B, A, M * lda);
        void *dW = B->upload_matrix(B, W, N, K);
        assert_non_null(dW);
        void *dC = cf32 ? up_raw(B, C0, M * ldc * sizeof(float)) : up_act(B, C0, M * ldc);
        assert_int_equal(B->gemm(B, M, N, K, dA, lda, dW, dC, ldc, acc, cf32), 0);
        out[k] = cf32 ? down_f32(B, dC, M * ldc) : down_act(B, dC, M * ldc);
        B->free(B, dA); B->free(B, dW); B->free(B, dC);
    }
    char d[160];
    snprintf(d, sizeof d, "M=%lld N=%d K=%d lda=%lld ldc=%lld acc=%d c_f32=%d", (long long)M, N, K, (long long)lda,
             (long long)ldc, acc, cf32);
    report(g, OP_GEMM, d, relerr2(out[1], out[0], M, N, ldc), tol(g));
    assert_true(padding_untouched(out[1], M, N, ldc));
    free(out[0]); free(out[1]); free(A); free(W); free(C0);
}

static void test_gemm(void **s)
{
    (void)s;
    BEGIN_CHECKS;
    for (int p = 0; p < 2; p++) {
        md_backend_t *g = gpus[p];
        check_gemm(g, 1, 1024, 256, 256, 1024, 0, 0);     /* in_proj, one row */
        check_gemm(g, 3, 48, 512, 512, 48, 0, 0);         /* x_proj */
        check_gemm(g, 2049, 512, 16, 48, 512, 0, 0);      /* dt_proj on a column slice of xdbl */
        check_gemm(g, 2047, 128, 512, 512, 256, 1, 0);    /* out_proj accumulating into half a PS row */
        check_gemm(g, 4097, 16, 256, 256, 16, 0, 1);      /* LM head, f32 logits */
        if (long_tests) check_gemm(g, 100003, 1024, 256, 256, 1024, 0, 0);
        check_gemm(g, 5, 7, 3, 9, 11, 1, 1);
    }
    END_CHECKS;
}

/* --- conv ------------------------------------------------------------------------------------ */

/* One conv call on both backends from the same inputs; returns outputs and states. */
static void conv_both(md_backend_t *g, int64_t n, int Cn, int K, int64_t ldx, const float *x, const float *w,
                      const float *b, const float *st0, int reverse, const uint8_t *ss, float **out, float **st)
{
    md_backend_t *be[2] = { cpu, g };
    float *poison = filled(n * Cn, NAN);
    for (int k = 0; k < 2; k++) {
        md_backend_t *B = be[k];
        void *dx = up_act(B, x, n * ldx), *dout = up_act(B, poison, n * Cn);
        float *dw = up_raw(B, w, (size_t)Cn * K * sizeof(float)), *db = b ? up_raw(B, b, Cn * sizeof(float)) : NULL;
        float *dst = up_raw(B, st0, (size_t)(K > 1 ? K - 1 : 1) * Cn * sizeof(float));
        uint8_t *dss = ss ? up_raw(B, ss, n + 1) : NULL;
        assert_int_equal(B->conv_silu(B, n, Cn, K, dx, ldx, dw, db, dout, dst, reverse, dss), 0);
        out[k] = down_act(B, dout, n * Cn);
        st[k] = down_f32(B, dst, (int64_t)(K > 1 ? K - 1 : 1) * Cn);
        B->free(B, dx); B->free(B, dout); B->free(B, dw); B->free(B, dst);
        if (db) B->free(B, db);
        if (dss) B->free(B, dss);
    }
    free(poison);
}

static void check_conv(md_backend_t *g, int64_t n, int Cn, int K, int64_t ldx, int reverse, double pstart, int bias)
{
    new_seed("conv");
    float *x = rand_normal(n * ldx, 0, 1), *w = rand_normal((int64_t)Cn * K, 0, 0.5f), *b = rand_normal(Cn, 0, 0.1f);
    float *st0 = rand_normal((int64_t)(K > 1 ? K - 1 : 1) * Cn, 0, 1);
    round_act(g, x, n * ldx);
    round_act(g, st0, (int64_t)(K > 1 ? K - 1 : 1) * Cn); /* states hold act values */
    uint8_t *ss = pstart >= 0 ? rand_starts(n, pstart) : NULL;
    float *out[2], *st[2];
    conv_both(g, n, Cn, K, ldx, x, w, bias ? b : NULL, st0, reverse, ss, out, st);
    char d[160];
    snprintf(d, sizeof d, "n=%lld C=%d K=%d ldx=%lld %s starts=%s bias=%d", (long long)n, Cn, K, (long long)ldx,
             reverse ? "reverse" : "forward", ss ? "packed" : "none", bias);
    report(g, OP_CONV, d, relerr(out[1], out[0], n * Cn), tol(g));
    char d2[200];
    snprintf(d2, sizeof d2, "%s [state]", d);
    report(g, OP_CONV, d2, relerr(st[1], st[0], (int64_t)(K > 1 ? K - 1 : 1) * Cn), 1e-6);
    free(out[0]); free(out[1]); free(st[0]); free(st[1]);
    free(x); free(w); free(b); free(st0); free(ss);
}

/* The GPU alone: one call over n vs two calls [0,n1) and [n1,n) (in scan order) with the state
 * carried; outputs must be identical (each output depends on K inputs only). */
static void check_conv_pieces(md_backend_t *g, int64_t n, int64_t n1, int Cn, int K, int reverse)
{
    new_seed("conv pieces");
    const int64_t ldx = 2 * Cn, S = (int64_t)(K - 1) * Cn;
    float *x = rand_normal(n * ldx, 0, 1), *w = rand_normal((int64_t)Cn * K, 0, 0.5f);
    float *st0 = rand_normal(S, 0, 1);
    round_act(g, x, n * ldx);
    round_act(g, st0, S);
    uint8_t *ss = rand_starts(n, 0.002);
    const size_t a = asz(g);
    void *dx = up_act(g, x, n * ldx), *dout = g->alloc(g, n * Cn * a), *dout2 = g->alloc(g, n * Cn * a);
    float *dw = up_raw(g, w, (size_t)Cn * K * 4), *dst = up_raw(g, st0, S * 4), *dst2 = up_raw(g, st0, S * 4);
    uint8_t *dss = up_raw(g, ss, n + 1);
    assert_int_equal(g->conv_silu(g, n, Cn, K, dx, ldx, dw, NULL, dout, dst, reverse, dss), 0);
    /* pieces: positions [0,n1) and [n1,n); scan order visits the left piece first when forward */
    int64_t r0[2] = { 0, n1 }, nr[2] = { n1, n - n1 };
    for (int j = 0; j < 2; j++) {
        int pc = reverse ? 1 - j : j;
        /* flags for a piece: its own starts and, at its end, the next position's flag */
        assert_int_equal(g->conv_silu(g, nr[pc], Cn, K, (char *)dx + (size_t)r0[pc] * ldx * a, ldx, dw, NULL,
                                      (char *)dout2 + (size_t)r0[pc] * Cn * a, dst2, reverse, dss + r0[pc]), 0);
    }
    float *o1 = down_act(g, dout, n * Cn), *o2 = down_act(g, dout2, n * Cn);
    float *s1 = down_f32(g, dst, S), *s2 = down_f32(g, dst2, S);
    char d[160];
    snprintf(d, sizeof d, "pieces n=%lld split=%lld C=%d K=%d %s (GPU vs GPU)", (long long)n, (long long)n1, Cn, K,
             reverse ? "reverse" : "forward");
    report(g, OP_CONV, d, relerr(o2, o1, n * Cn), 0);
    snprintf(d, sizeof d, "pieces n=%lld split=%lld [state]", (long long)n, (long long)n1);
    report(g, OP_CONV, d, relerr(s2, s1, S), 0);
    g->free(g, dx); g->free(g, dout); g->free(g, dout2); g->free(g, dw); g->free(g, dst); g->free(g, dst2);
    g->free(g, dss);
    free(o1); free(o2); free(s1); free(s2); free(x); free(w); free(st0); free(ss);
}

static void test_conv(void **s)
{
    (void)s;
    BEGIN_CHECKS;
    const int64_t lens[] = { 1, 3, 4, 2047, 2049, 100003 };
    for (int p = 0; p < 2; p++) {
        md_backend_t *g = gpus[p];
        for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
            if ((lens[i] > 50000 && !long_tests) || lens[i] > max_len) continue;
            for (int rev = 0; rev < 2; rev++) {
                check_conv(g, lens[i], 512, 4, 1024, rev, -1, 1);
                check_conv(g, lens[i], 100, 4, 200, rev, 0.01, 1);
            }
        }
        check_conv(g, 33, 64, 4, 64, 0, 0.3, 0);   /* many short sequences (length 1-3 ones too) */
        check_conv(g, 33, 64, 4, 64, 1, 0.3, 0);
        check_conv(g, 2, 130, 4, 260, 1, 0.5, 1);  /* n < K-1: state partly kept */
        check_conv(g, 65, 48, 2, 96, 0, 0.05, 1);
        check_conv(g, 65, 48, 1, 48, 1, 0.05, 1);
        check_conv(g, 65, 48, 8, 48, 1, 0.05, 1);
        for (int rev = 0; rev < 2; rev++) {
            check_conv_pieces(g, 5000, 2047, 512, 4, rev);
            check_conv_pieces(g, 100, 1, 96, 4, rev);
            check_conv_pieces(g, 100, 99, 96, 4, rev);
        }
    }
    END_CHECKS;
}

/* --- scan ------------------------------------------------------------------------------------ */

typedef struct {
    int64_t n;
    int Di, N, ndir, rev[2], z, D, bias, acc;
    double pstart;   /* < 0: no flags */
    int64_t ldpad;   /* extra row stride on x/dt/z/y */
} scan_case_t;

typedef struct {
    float *x, *dt, *xdbl, *z, *A, *D, *bias, *h0, *y0;
    uint8_t *ss;
    int64_t ldx, ldbc, ldy;
} scan_data_t;

static void scan_data(md_backend_t *g, const scan_case_t *c, scan_data_t *s)
{
    const int64_t n = c->n, Di = c->Di, N = c->N;
    s->ldx = Di + c->ldpad;
    s->ldbc = 16 + 2 * N; /* B, C as column slices of xdbl [n, R + 2N] */
    s->ldy = Di + c->ldpad;
    s->x = rand_normal(n * s->ldx * 2, 0, 1);          /* [2][n][ldx], one per direction */
    s->dt = rand_normal(n * s->ldx * 2, 0, 0.5f);
    s->xdbl = rand_normal(n * s->ldbc * 2, 0, 1);
    s->z = rand_normal(n * s->ldx, 0, 1);
    round_act(g, s->x, n * s->ldx * 2);
    round_act(g, s->dt, n * s->ldx * 2);
    round_act(g, s->xdbl, n * s->ldbc * 2);
    round_act(g, s->z, n * s->ldx);
    s->A = malloc(2 * Di * N * sizeof(float));
    s->D = rand_normal(2 * Di, 1, 0.3f);
    s->bias = malloc(2 * Di * sizeof(float));
    s->h0 = rand_normal(2 * Di * N, 0, 0.5f);
    for (int64_t i = 0; i < 2 * Di * N; i++) s->A[i] = -expf(logf(1.0f + (i % N)) + 0.3f * nrand());
    for (int64_t i = 0; i < 2 * Di; i++) {
        /* dt_proj bias = softplus^-1(dt), dt log-uniform in [1e-3, 1e-1] (model-spec 4.8) */
        float dtv = expf(logf(1e-3f) + urand() * (logf(1e-1f) - logf(1e-3f)));
        s->bias[i] = dtv + logf(-expm1f(-dtv));
    }
    s->y0 = c->acc ? rand_normal(n * s->ldy, 0, 1) : filled(n * s->ldy, NAN);
    if (c->acc) round_act(g, s->y0, n * s->ldy);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = Di; j < s->ldy; j++) s->y0[i * s->ldy + j] = NAN;
    s->ss = c->pstart >= 0 ? rand_starts(n, c->pstart) : NULL;
}

static void scan_data_free(scan_data_t *s)
{
    free(s->x); free(s->dt); free(s->xdbl); free(s->z); free(s->A); free(s->D); free(s->bias); free(s->h0);
    free(s->y0); free(s->ss);
}

typedef struct {
    void *x[2], *dt[2], *xdbl[2], *z, *y;
    float *A[2], *D[2], *bias[2], *st[2];
    uint8_t *ss;
} scan_dev_t;

static void scan_upload(md_backend_t *B, const scan_case_t *c, const scan_data_t *s, scan_dev_t *d)
{
    const int64_t n = c->n, Di = c->Di, N = c->N;
    for (int k = 0; k < 2; k++) {
        d->x[k] = up_act(B, s->x + k * n * s->ldx, n * s->ldx);
        d->dt[k] = up_act(B, s->dt + k * n * s->ldx, n * s->ldx);
        d->xdbl[k] = up_act(B, s->xdbl + k * n * s->ldbc, n * s->ldbc);
        d->A[k] = up_raw(B, s->A + k * Di * N, Di * N * sizeof(float));
        d->D[k] = up_raw(B, s->D + k * Di, Di * sizeof(float));
        d->bias[k] = up_raw(B, s->bias + k * Di, Di * sizeof(float));
        d->st[k] = up_raw(B, s->h0 + k * Di * N, Di * N * sizeof(float));
    }
    d->z = up_act(B, s->z, n * s->ldx);
    d->y = up_act(B, s->y0, n * s->ldy);
    d->ss = s->ss ? up_raw(B, s->ss, n + 1) : NULL;
}

static void scan_dirs(md_backend_t *B, const scan_case_t *c, const scan_data_t *s, scan_dev_t *d, int64_t r0,
                      md_scan_dir_t *sd)
{
    const size_t a = asz(B);
    for (int k = 0; k < 2; k++) {
        md_scan_dir_t *q = &sd[k];
        memset(q, 0, sizeof *q);
        q->x = (char *)d->x[k] + (size_t)r0 * s->ldx * a; q->ldx = s->ldx;
        q->dt = (char *)d->dt[k] + (size_t)r0 * s->ldx * a; q->lddt = s->ldx;
        q->B = (char *)d->xdbl[k] + ((size_t)r0 * s->ldbc + 16) * a;
        q->C = (char *)d->xdbl[k] + ((size_t)r0 * s->ldbc + 16 + c->N) * a;
        q->ldbc = s->ldbc;
        q->z = c->z ? (char *)d->z + (size_t)r0 * s->ldx * a : NULL; q->ldz = s->ldx;
        q->A = d->A[k];
        q->D = c->D ? d->D[k] : NULL;
        q->dt_bias = c->bias ? d->bias[k] : NULL;
        q->state = d->st[k];
        q->reverse = c->rev[k];
    }
}

static void scan_dev_free(md_backend_t *B, scan_dev_t *d)
{
    for (int k = 0; k < 2; k++) {
        B->free(B, d->x[k]); B->free(B, d->dt[k]); B->free(B, d->xdbl[k]); B->free(B, d->A[k]);
        B->free(B, d->D[k]); B->free(B, d->bias[k]); B->free(B, d->st[k]);
    }
    B->free(B, d->z); B->free(B, d->y);
    if (d->ss) B->free(B, d->ss);
}

static void check_scan(md_backend_t *g, const scan_case_t *c)
{
    new_seed("scan");
    scan_data_t s;
    scan_data(g, c, &s);
    md_backend_t *be[2] = { cpu, g };
    float *y[2], *st[2][2];
    for (int k = 0; k < 2; k++) {
        md_backend_t *B = be[k];
        scan_dev_t d;
        scan_upload(B, c, &s, &d);
        md_scan_dir_t sd[2];
        scan_dirs(B, c, &s, &d, 0, sd);
        assert_int_equal(B->scan(B, c->n, c->Di, c->N, c->ndir, sd, d.y, s.ldy, c->acc, d.ss), 0);
        y[k] = down_act(B, d.y, c->n * s.ldy);
        for (int j = 0; j < 2; j++) st[k][j] = down_f32(B, d.st[j], (int64_t)c->Di * c->N);
        scan_dev_free(B, &d);
    }
    char desc[200];
    snprintf(desc, sizeof desc, "n=%lld Di=%d N=%d ndir=%d rev=%d,%d z=%d D=%d bias=%d acc=%d starts=%s ld+%lld",
             (long long)c->n, c->Di, c->N, c->ndir, c->rev[0], c->rev[1], c->z, c->D, c->bias, c->acc,
             c->pstart < 0 ? "none" : "packed", (long long)c->ldpad);
    report(g, OP_SCAN, desc, relerr2(y[1], y[0], c->n, c->Di, s.ldy), tol_scan(g));
    assert_true(padding_untouched(y[1], c->n, c->Di, s.ldy));
    for (int j = 0; j < c->ndir; j++) {
        char d2[240];
        snprintf(d2, sizeof d2, "%s [h_last dir %d]", desc, j);
        report(g, OP_SCAN, d2, relerr(st[1][j], st[0][j], (int64_t)c->Di * c->N), g->act_dtype == MD_DT_BF16 ? 2e-2 : 1e-5);
    }
    free(y[0]); free(y[1]);
    for (int k = 0; k < 2; k++) for (int j = 0; j < 2; j++) free(st[k][j]);
    scan_data_free(&s);
}

/* The GPU alone, one direction: a single call vs two pieces with the state carried. */
static void check_scan_pieces(md_backend_t *g, int64_t n, int64_t n1, int Di, int rev)
{
    new_seed("scan pieces");
    scan_case_t c = { .n = n, .Di = Di, .N = 16, .ndir = 1, .rev = { rev, 0 }, .z = 1, .D = 1, .bias = 1,
                      .acc = 0, .pstart = 0.001, .ldpad = 0 };
    scan_data_t s;
    scan_data(g, &c, &s);
    scan_dev_t d1, d2;
    scan_upload(g, &c, &s, &d1);
    scan_upload(g, &c, &s, &d2);
    md_scan_dir_t sd[2];
    scan_dirs(g, &c, &s, &d1, 0, sd);
    assert_int_equal(g->scan(g, n, Di, 16, 1, sd, d1.y, s.ldy, 0, d1.ss), 0);
    const int64_t r0[2] = { 0, n1 }, nr[2] = { n1, n - n1 };
    const size_t a = asz(g);
    for (int j = 0; j < 2; j++) {
        int pc = rev ? 1 - j : j;
        scan_dirs(g, &c, &s, &d2, r0[pc], sd);
        assert_int_equal(g->scan(g, nr[pc], Di, 16, 1, sd, (char *)d2.y + (size_t)r0[pc] * s.ldy * a, s.ldy, 0,
                                 d2.ss + r0[pc]), 0);
    }
    float *y1 = down_act(g, d1.y, n * s.ldy), *y2 = down_act(g, d2.y, n * s.ldy);
    float *h1 = down_f32(g, d1.st[0], (int64_t)Di * 16), *h2 = down_f32(g, d2.st[0], (int64_t)Di * 16);
    char desc[160];
    snprintf(desc, sizeof desc, "pieces n=%lld split=%lld Di=%d %s (GPU vs GPU)", (long long)n, (long long)n1, Di,
             rev ? "reverse" : "forward");
    report(g, OP_SCAN, desc, relerr2(y2, y1, n, Di, s.ldy), tol_scan(g));
    snprintf(desc, sizeof desc, "pieces n=%lld split=%lld [h_last]", (long long)n, (long long)n1);
    report(g, OP_SCAN, desc, relerr(h2, h1, (int64_t)Di * 16), 1e-5);
    scan_dev_free(g, &d1);
    scan_dev_free(g, &d2);
    free(y1); free(y2); free(h1); free(h2);
    scan_data_free(&s);
}

static void test_scan(void **st)
{
    (void)st;
    BEGIN_CHECKS;
    const int64_t lens[] = { 1, 3, 4, 2047, 2049, 4097, 33000, 100003 };
    for (int p = 0; p < 2; p++) {
        md_backend_t *g = gpus[p];
        for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
            const int64_t n = lens[i];
            if ((n > 50000 && !long_tests) || n > max_len) continue;
            const int Di = n > 50000 ? 128 : 512;
            /* both directions in one call, as the model's single-chunk path does */
            scan_case_t c = { .n = n, .Di = Di, .N = 16, .ndir = 2, .rev = { 0, 1 }, .z = 1, .D = 1, .bias = 1,
                              .acc = 0, .pstart = -1, .ldpad = 0 };
            check_scan(g, &c);
            c.pstart = 0.003;          /* packed sequences */
            check_scan(g, &c);
            c.ndir = 1; c.rev[0] = 1;  /* one reverse direction, accumulating, strided */
            c.acc = 1; c.ldpad = 8;
            check_scan(g, &c);
            c.rev[0] = 0; c.pstart = -1; c.acc = 0; c.ldpad = 0;
            check_scan(g, &c);
        }
        /* PS stream 1: reverse parameters scan forward; no gate/skip/bias; odd Di; other N */
        scan_case_t c2 = { .n = 3001, .Di = 130, .N = 16, .ndir = 2, .rev = { 1, 0 }, .z = 0, .D = 0, .bias = 0,
                           .acc = 1, .pstart = 0.01, .ldpad = 3 };
        check_scan(g, &c2);
        scan_case_t c3 = { .n = 777, .Di = 96, .N = 4, .ndir = 2, .rev = { 0, 1 }, .z = 1, .D = 1, .bias = 1,
                           .acc = 0, .pstart = 0.02, .ldpad = 0 };
        check_scan(g, &c3);
        c3.N = 64; c3.n = 1500;
        check_scan(g, &c3);
        c3.N = 13; c3.n = 65; c3.pstart = 0.3; /* many length-1..3 sequences */
        check_scan(g, &c3);
        for (int rev = 0; rev < 2; rev++) {
            check_scan_pieces(g, 20000, 7777, 512, rev);
            check_scan_pieces(g, 5000, 1, 256, rev);
            check_scan_pieces(g, 5000, 4999, 256, rev);
        }
    }
    END_CHECKS;
}

/* --- mul ------------------------------------------------------------------------------------- */

static void check_mul(md_backend_t *g, int64_t n, int W, int64_t lda, int64_t ldb)
{
    new_seed("mul");
    float *a = rand_normal(n * lda, 0, 1), *b = rand_normal(n * ldb, 0, 1);
    round_act(g, a, n * lda);
    round_act(g, b, n * ldb);
    md_backend_t *be[2] = { cpu, g };
    float *out[2];
    for (int k = 0; k < 2; k++) {
        void *da = up_act(be[k], a, n * lda), *db = up_act(be[k], b, n * ldb);
        assert_int_equal(be[k]->mul(be[k], n, W, da, lda, db, ldb), 0);
        out[k] = down_act(be[k], da, n * lda);
        be[k]->free(be[k], da); be[k]->free(be[k], db);
    }
    char d[128];
    snprintf(d, sizeof d, "n=%lld W=%d lda=%lld ldb=%lld", (long long)n, W, (long long)lda, (long long)ldb);
    report(g, OP_MUL, d, relerr2(out[1], out[0], n, lda, lda), tol(g));
    free(out[0]); free(out[1]); free(a); free(b);
}

static void test_mul(void **s)
{
    (void)s;
    BEGIN_CHECKS;
    for (int p = 0; p < 2; p++) {
        check_mul(gpus[p], 1, 256, 512, 256);
        check_mul(gpus[p], 2049, 100, 100, 300);
        if (long_tests) check_mul(gpus[p], 100003, 256, 256, 256);
    }
    END_CHECKS;
}

/* --- whole model ----------------------------------------------------------------------------- */

typedef struct {
    int64_t n;
    int W, V;
    float *hidden, *logits;
} outbuf_t;

static int collect(void *ud, int64_t row0, int64_t nrows, const float *hidden, const float *logits)
{
    outbuf_t *o = ud;
    memcpy(o->hidden + row0 * o->W, hidden, nrows * o->W * sizeof(float));
    if (logits) memcpy(o->logits + row0 * o->V, logits, nrows * o->V * sizeof(float));
    return 0;
}

static void forward(md_model_t *m, const int32_t *ids, int64_t n, const int64_t *off, int nseq, outbuf_t *o)
{
    o->n = n;
    o->W = md_model_width(m);
    o->V = md_model_config(m)->vocab_size;
    o->hidden = malloc(n * o->W * sizeof(float));
    o->logits = malloc(n * o->V * sizeof(float));
    md_forward_opts_t opts = { .layer = -1, .want_logits = 1 };
    assert_int_equal(md_model_forward(m, ids, n, off, nseq, &opts, collect, o), 0);
}

static md_model_t *rand_model(md_backend_t *be, const char *variant, int d, int nl, uint64_t seed)
{
    md_config_t cfg;
    md_config_init(&cfg);
    cfg.d_model = d;
    cfg.n_layer = nl;
    if (!strcmp(variant, "ps")) cfg.rcps = 1;
    else if (!strcmp(variant, "mamba")) cfg.arch = MD_ARCH_MAMBA;
    assert_int_equal(md_config_finish(&cfg, "gpu_parity"), 0);
    md_weights_t *w = md_weights_alloc(&cfg);
    assert_non_null(w);
    md_weights_init(w, seed);
    md_model_t *m = md_model_from_weights(w, be);
    assert_non_null(m);
    return m;
}

static void check_model(md_backend_t *g, const char *variant, int d, int nl, int64_t n, int nseq, int64_t chunk)
{
    new_seed("model");
    int32_t *ids = malloc(n * sizeof *ids);
    for (int64_t i = 0; i < n; i++) ids[i] = 7 + (int)(next_u64() % 5);
    int64_t off[4] = { 0, n, n, n };
    if (nseq == 3) { off[1] = n / 3; off[2] = n / 3 + n / 5 + 1; off[3] = n; }
    md_model_t *mc = rand_model(cpu, variant, d, nl, check_no), *mg = rand_model(g, variant, d, nl, check_no);
    int64_t saved = g->chunk;
    if (chunk > 0) g->chunk = chunk;
    outbuf_t oc, og;
    forward(mc, ids, n, nseq > 1 ? off : NULL, nseq > 1 ? nseq : 0, &oc);
    forward(mg, ids, n, nseq > 1 ? off : NULL, nseq > 1 ? nseq : 0, &og);
    g->chunk = saved;
    char desc[160];
    snprintf(desc, sizeof desc, "%s d=%d layers=%d n=%lld seqs=%d chunk=%lld [hidden]", variant, d, nl, (long long)n,
             nseq, (long long)(chunk > 0 ? chunk : saved));
    report(g, OP_MODEL, desc, relerr(og.hidden, oc.hidden, n * oc.W), tol(g));
    snprintf(desc, sizeof desc, "%s d=%d layers=%d n=%lld seqs=%d chunk=%lld [logits]", variant, d, nl, (long long)n,
             nseq, (long long)(chunk > 0 ? chunk : saved));
    report(g, OP_MODEL, desc, relerr(og.logits, oc.logits, n * oc.V), tol(g));
    free(oc.hidden); free(oc.logits); free(og.hidden); free(og.logits); free(ids);
    md_model_free(mc);
    md_model_free(mg);
}

static void test_model_parity(void **s)
{
    (void)s;
    BEGIN_CHECKS;
    for (int p = 0; p < 2; p++) {
        md_backend_t *g = gpus[p];
        check_model(g, "ph", 128, 2, 1, 1, 0);
        check_model(g, "ph", 128, 2, 3, 1, 0);
        check_model(g, "ph", 256, 4, 4099, 3, 0);     /* one chunk: both directions in one scan */
        check_model(g, "ph", 256, 4, 4099, 3, 1000);  /* many chunks: directions walk chunks */
        check_model(g, "ps", 128, 3, 2049, 3, 0);
        check_model(g, "ps", 128, 3, 2049, 1, 777);
        check_model(g, "mamba", 128, 2, 2047, 3, 0);
        if (long_tests) check_model(g, "ph", 256, 16, 2049, 1, 0); /* the released depth */
    }
    END_CHECKS;
}

/* Golden vectors of the original implementation, on the GPU (fp32 at 1e-4, bf16 at 2e-2). */
static void golden(md_backend_t *g, const char *dir)
{
    char p[512];
    snprintf(p, sizeof p, "%s/ids_L1000.npy", dir);
    npy_array_t ia, h, l;
    if (npy_read(p, &ia) < 0) {
        printf("skip golden %s: not found\n", dir);
        return;
    }
    int64_t n = ia.numel;
    int32_t *ids = malloc(n * sizeof *ids);
    for (int64_t i = 0; i < n; i++)
        ids[i] = ia.dtype == NPY_I64 ? (int32_t)((int64_t *)ia.data)[i] : ((int32_t *)ia.data)[i];
    md_model_t *m = md_model_load(dir, g);
    assert_non_null(m);
    outbuf_t o;
    forward(m, ids, n, NULL, 0, &o);
    snprintf(p, sizeof p, "%s/hidden_L1000.npy", dir);
    assert_int_equal(npy_read(p, &h), 0);
    snprintf(p, sizeof p, "%s/logits_L1000.npy", dir);
    assert_int_equal(npy_read(p, &l), 0);
    char desc[256];
    snprintf(desc, sizeof desc, "golden %s [hidden]", dir);
    report(g, OP_MODEL, desc, relerr(o.hidden, h.data, h.numel), tol(g));
    snprintf(desc, sizeof desc, "golden %s [logits]", dir);
    report(g, OP_MODEL, desc, relerr(o.logits, l.data, l.numel), tol(g));
    npy_free(&ia); npy_free(&h); npy_free(&l);
    free(o.hidden); free(o.logits); free(ids);
    md_model_free(m);
}

static void test_golden(void **s)
{
    (void)s;
    BEGIN_CHECKS;
    for (int p = 0; p < 2; p++) {
        golden(gpus[p], "tests/data/conformance/ph_d128_n2");
        golden(gpus[p], "tests/data/conformance/ps_d128_n3");
    }
    END_CHECKS;
}

/* --- errors ---------------------------------------------------------------------------------- */

static void test_errors(void **s)
{
    (void)s;
    md_backend_t *g = gpus[0];
    int lvl = md_log_level;
    md_log_level = MD_LOG_OFF;
    /* out of memory is an error with a message, not an abort */
    void *p = g->alloc(g, (size_t)1 << 50);
    assert_null(p);
    assert_non_null(strstr(md_last_error(), "out of GPU memory"));
    /* unsupported shapes fail fast */
    assert_true(g->add_norm(g, 1, 4096, 4096, NULL, NULL, NULL, NULL, NULL, NULL, 1e-5f, 0, 1) < 0);
    assert_true(g->conv_silu(g, 1, 8, 9, NULL, 8, NULL, NULL, NULL, NULL, 0, NULL) < 0);
    md_scan_dir_t sd;
    memset(&sd, 0, sizeof sd);
    assert_true(g->scan(g, 4, 8, 65, 1, &sd, NULL, 8, 0, NULL) < 0);
    assert_null(md_backend_open("cuda", "fp16", 1));
    md_log_level = lvl;
    printf("ok   errors: OOM message \"%s\"\n", md_last_error());
}

int main(void)
{
    const char *q = getenv("MD_PARITY_QUICK"), *only = getenv("MD_PARITY_ONLY");
    long_tests = !(q && atoi(q) > 0);
    if (only && *only) cmocka_set_test_filter(only); /* e.g. MD_PARITY_ONLY=test_scan */
    const char *ml = getenv("MD_PARITY_MAXLEN");
    if (ml && atoll(ml) > 0) max_len = atoll(ml);
    if (md_cuda_device_count() <= 0) {
        fprintf(stderr, "gpu_parity: no CUDA device, skipped\n");
        return 77;
    }
    cpu = md_backend_cpu_open(0);
    gpus[0] = md_backend_open("cuda", "fp32", 0);
    gpus[1] = md_backend_open("cuda", "bf16", 0);
    if (!cpu || !gpus[0] || !gpus[1]) {
        fprintf(stderr, "gpu_parity: could not open the backends\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embed),  cmocka_unit_test(test_add_norm), cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_conv),   cmocka_unit_test(test_scan),     cmocka_unit_test(test_mul),
        cmocka_unit_test(test_errors), cmocka_unit_test(test_model_parity), cmocka_unit_test(test_golden),
    };
    int r = cmocka_run_group_tests_name("gpu_parity", tests, NULL, NULL);
    printf("\n== parity summary: %d checks, %d failed; worst ||gpu-cpu||/||cpu|| per op\n", n_checks, n_fail);
    printf("%-10s %12s %12s\n", "op", "fp32", "bf16");
    for (int op = 0; op < OP_N; op++) printf("%-10s %12.3g %12.3g\n", op_name[op], worst[0][op], worst[1][op]);
    gpus[0]->destroy(gpus[0]);
    gpus[1]->destroy(gpus[1]);
    cpu->destroy(cpu);
    return r;
}
