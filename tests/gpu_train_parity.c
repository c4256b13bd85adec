/* gpu_train_parity.c: the CUDA training op table (kernels/train_ops.cu, train_scan.cu) against
 * the CPU table (the oracle), op by op on random inputs (odd sizes, row strides, accumulate
 * flags, packed-sequence flags, PS half swap, group norm, carried conv/scan states), in fp32
 * and bf16 mode; then the whole training step (md_train_forward_backward, two AdamW updates)
 * on the CUDA backend against the CPU backend for tiny Ph, PS and causal Mamba models.
 * Bounds on ||gpu - cpu|| / ||cpu|| per tensor: fp32 mode 1e-5 (1e-4 for the GEMMs and for
 * model gradients), bf16 mode 2e-2 on act outputs (F32-only ops keep the fp32 bound). In bf16
 * mode the act inputs are rounded to bf16 first and the CPU gets the same values.
 * Needs a CUDA device (or the CPU stand-in, bench/gpu/emu-test.sh); exits 77 without one.
 * MD_PARITY_QUICK=1 uses fewer/smaller cases; MD_PARITY_ONLY=<cmocka pattern> runs some tests. */
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
#include "params.h"
#include "train.h"
#include "train_ops.h"

static md_backend_t *cpu;
static md_backend_t *gpus[2]; /* fp32, bf16 */
static const md_train_ops_t *ocpu, *ogpu;
static int quick;

/* --- random data ----------------------------------------------------------------------------- */

static uint64_t rng = 1, check_no;
static void new_seed(void) { check_no++; rng = 0x9E3779B97F4A7C15ull * (check_no + 777) ^ 0xD1B54A32D192ED03ull; }
static uint64_t next_u64(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}
static float urand(void) { return (next_u64() >> 40) * (1.0f / 16777216.0f); }
static float *runif(int64_t n, float lo, float hi)
{
    float *a = malloc((n > 0 ? n : 1) * sizeof *a);
    for (int64_t i = 0; i < n; i++) a[i] = lo + (hi - lo) * urand();
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
static int is_bf(md_backend_t *g) { return g->act_dtype == MD_DT_BF16; }
static float *ract(md_backend_t *g, int64_t n, float lo, float hi) /* random act values, bf16-exact in bf16 mode */
{
    float *a = runif(n, lo, hi);
    if (is_bf(g))
        for (int64_t i = 0; i < n; i++) a[i] = bf16_round(a[i]);
    return a;
}
static uint8_t *rand_starts(int64_t n, double p)
{
    uint8_t *s = calloc(n + 1, 1);
    for (int64_t i = 0; i <= n; i++) s[i] = urand() < p;
    s[0] = urand() < 0.5f;
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
    if (bytes) assert_int_equal(be->upload(be, d, h, bytes), 0);
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
static void xfree(md_backend_t *be, void *p) { if (p) be->free(be, p); }

/* ||a - ref|| / ||ref|| over rows x cols (row stride ld); NaN -> infinity */
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
/* columns [cols, ld) must still hold the NaN poison */
static int padding_untouched(const float *a, int64_t rows, int64_t cols, int64_t ld)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = cols; j < ld; j++)
            if (a[i * ld + j] == a[i * ld + j]) return 0;
    return 1;
}

static const char *prec(md_backend_t *g) { return is_bf(g) ? "bf16" : "fp32"; }
static double tol_act(md_backend_t *g) { return is_bf(g) ? 2e-2 : 1e-5; }  /* act outputs */
static double tol_gemm(md_backend_t *g) { return is_bf(g) ? 2e-2 : 1e-4; }

enum { OP_EMBED, OP_NORM, OP_GEMM, OP_CONV, OP_SCAN, OP_MUL, OP_XENT, OP_ADAMW, OP_SMALL, OP_STEP, OP_N };
static const char *op_name[] = { "embed_bwd", "norm_bwd", "gemm_bwd", "conv_bwd", "scan", "mul_bwd", "xent",
                                 "adamw", "small", "step" };
static int n_checks, n_fail;
static double worst[2][OP_N];

static void report(md_backend_t *g, int op, const char *desc, double e, double bound)
{
    int p = is_bf(g);
    n_checks++;
    if (e > worst[p][op] || e != e) worst[p][op] = e;
    int ok = e <= bound;
    if (!ok) n_fail++;
    printf("%s %-9s %-4s %-78s rel %.3g%s\n", ok ? "ok  " : "FAIL", op_name[op], prec(g), desc, e,
           ok ? "" : " (bound exceeded)");
    fflush(stdout);
}
#define BEGIN_CHECKS int fails0_ = n_fail
#define END_CHECKS assert_int_equal(n_fail - fails0_, 0)

/* --- embed_bwd ------------------------------------------------------------------------------- */

static void check_embed(md_backend_t *g, int64_t n, int W, int V)
{
    new_seed();
    int32_t *ids = malloc(n * sizeof *ids);
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(next_u64() % (V - 1)); /* the last row stays unused */
    float *dout = runif(n * W, -1, 1), *tab = runif((int64_t)V * W, -1, 1);
    md_backend_t *be[2] = { cpu, g };
    const md_train_ops_t *op[2] = { ocpu, ogpu };
    float *out[2];
    for (int k = 0; k < 2; k++) {
        void *di = up_raw(be[k], ids, n * 4), *dd = up_raw(be[k], dout, n * W * 4), *dt = up_raw(be[k], tab, (size_t)V * W * 4);
        assert_int_equal(op[k]->embed_bwd(be[k], n, W, di, dd, dt), 0);
        out[k] = down_f32(be[k], dt, (int64_t)V * W);
        xfree(be[k], di); xfree(be[k], dd); xfree(be[k], dt);
    }
    char d[128];
    snprintf(d, sizeof d, "n=%lld W=%d V=%d", (long long)n, W, V);
    report(g, OP_EMBED, d, relerr(out[1], out[0], (int64_t)V * W), 1e-5);
    free(out[0]); free(out[1]); free(ids); free(dout); free(tab);
}

static void test_embed_bwd(void **s)
{
    (void)s;
    BEGIN_CHECKS;
    for (int p = 0; p < 2; p++) {
        check_embed(gpus[p], 1, 8, 16);
        check_embed(gpus[p], 37, 33, 16);
        check_embed(gpus[p], quick ? 3001 : 70001, 256, 16);
    }
    END_CHECKS;
}

/* --- add_norm_bwd ---------------------------------------------------------------------------- */

/* dres: 0 none, 1 separate, 2 aliasing dsum */
static void check_norm(md_backend_t *g, int64_t n, int W, int group, int swap, int rms, int dres_mode, int bias)
{
    new_seed();
    float *s = runif(n * W, -2, 2), *dout = ract(g, n * W, -1, 1), *dres = runif(n * W, -1, 1);
    float *w = runif(W, 0.5f, 1.5f), *dw0 = runif(W, -1, 1), *db0 = runif(W, -1, 1);
    for (int64_t i = 0; i < n; i++) s[i * W] += 3.0f; /* a non-zero mean */
    md_backend_t *be[2] = { cpu, g };
    const md_train_ops_t *op[2] = { ocpu, ogpu };
    float *o[2][3];
    for (int k = 0; k < 2; k++) {
        md_backend_t *B = be[k];
        float *ds = up_raw(B, s, n * W * 4), *dr = up_raw(B, dres, n * W * 4), *dw = up_raw(B, w, W * 4);
        float *gw = up_raw(B, dw0, W * 4), *gb = up_raw(B, db0, W * 4);
        void *dd = up_act(B, dout, n * W);
        float *dsum = dres_mode == 2 ? dr : B->alloc(B, n * W * 4);
        assert_int_equal(op[k]->add_norm_bwd(B, n, W, group, ds, dd, dres_mode ? dr : NULL, dsum, dw, gw,
                                             bias ? gb : NULL, 1e-5f, swap, rms), 0);
        o[k][0] = down_f32(B, dsum, n * W);
        o[k][1] = down_f32(B, gw, W);
        o[k][2] = down_f32(B, gb, W);
        xfree(B, ds); xfree(B, dr); xfree(B, dw); xfree(B, gw); xfree(B, gb); xfree(B, dd);
        if (dres_mode != 2) xfree(B, dsum);
    }
    char d[160];
    snprintf(d, sizeof d, "n=%lld W=%d group=%d swap=%d rms=%d dres=%s bias=%d", (long long)n, W, group, swap, rms,
             dres_mode == 0 ? "none" : dres_mode == 1 ? "yes" : "alias", bias);
    static const char *what[3] = { "dsum", "dw", "db" };
    for (int t = 0; t < 3; t++) {
        char d2[200];
        snprintf(d2, sizeof d2, "%s [%s]", d, what[t]);
        report(g, OP_NORM, d2, relerr(o[1][t], o[0][t], t ? W : n * W), tol_act(g));
        free(o[0][t]); free(o[1][t]);
    }
    free(s); free(dout); free(dres); free(w); free(dw0); free(db0);
}

static void test_add_norm_bwd(void **st)
{
    (void)st;
    BEGIN_CHECKS;
    for (int p = 0; p < 2; p++) {
        md_backend_t *g = gpus[p];
        check_norm(g, 1, 8, 8, 0, 1, 0, 0);
        check_norm(g, 67, 256, 256, 0, 1, 1, 0);     /* Ph layer norm (RMS) */
        check_norm(g, 67, 256, 128, 1, 1, 2, 0);     /* PS: two groups, half swap, dsum aliasing dres */
        check_norm(g, 131, 48, 16, 0, 0, 1, 1);      /* LayerNorm with bias, three groups */
        check_norm(g, 33, 40, 20, 1, 0, 2, 1);
        check_norm(g, quick ? 2000 : 20011, 256, 128, 1, 1, 2, 0);
    }
    END_CHECKS;
}

/* --- gemm_da / gemm_dw ----------------------------------------------------------------------- */

static void check_gemm(md_backend_t *g, int64_t M, int N, int K, int64_t lddc, int64_t ldx, int dc_f32, int acc)
{
    new_seed();
    md_backend_t *be[2] = { cpu, g };
    const md_train_ops_t *op[2] = { ocpu, ogpu };
    float *dc = dc_f32 ? runif(M * lddc, -1, 1) : ract(g, M * lddc, -1, 1);
    float *wt = runif((int64_t)N * K, -0.5f, 0.5f);
    if (is_bf(g)) for (int64_t i = 0; i < (int64_t)N * K; i++) wt[i] = bf16_round(wt[i]);
    float *a = ract(g, M * ldx, -1, 1);                 /* gemm_dw's A [M, K] (row stride ldx) */
    float *da0 = ract(g, M * ldx, -1, 1), *dw0 = runif((int64_t)N * K, -1, 1);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = K; j < ldx; j++) da0[i * ldx + j] = NAN;
    float *o[2][2];
    for (int k = 0; k < 2; k++) {
        md_backend_t *B = be[k];
        void *ddc = dc_f32 ? up_raw(B, dc, M * lddc * 4) : up_act(B, dc, M * lddc);
        void *W = B->upload_matrix(B, wt, N, K);
        assert_non_null(W);
        void *dA = up_act(B, da0, M * ldx), *A = up_act(B, a, M * ldx);
        float *dW = up_raw(B, dw0, (size_t)N * K * 4);
        assert_int_equal(op[k]->gemm_da(B, M, N, K, ddc, lddc, dc_f32, W, dA, ldx, acc), 0);
        assert_int_equal(op[k]->gemm_dw(B, M, N, K, ddc, lddc, dc_f32, A, ldx, dW), 0);
        o[k][0] = down_act(B, dA, M * ldx);
        o[k][1] = down_f32(B, dW, (int64_t)N * K);
        xfree(B, ddc); xfree(B, W); xfree(B, dA); xfree(B, A); xfree(B, dW);
    }
    char d[200];
    snprintf(d, sizeof d, "M=%lld N=%d K=%d lddc=%lld ld=%lld dc_f32=%d acc=%d", (long long)M, N, K, (long long)lddc,
             (long long)ldx, dc_f32, acc);
    char d2[240];
    snprintf(d2, sizeof d2, "%s [dA]", d);
    report(g, OP_GEMM, d2, relerr2(o[1][0], o[0][0], M, K, ldx), tol_gemm(g));
    assert_true(padding_untouched(o[1][0], M, K, ldx));
    snprintf(d2, sizeof d2, "%s [dW +=]", d);
    report(g, OP_GEMM, d2, relerr(o[1][1], o[0][1], (int64_t)N * K), tol_gemm(g));
    for (int k = 0; k < 2; k++) { free(o[k][0]); free(o[k][1]); }
    free(dc); free(wt); free(a); free(da0); free(dw0);
}

static void test_gemm_bwd(void **st)
{
    (void)st;
    BEGIN_CHECKS;
    for (int p = 0; p < 2; p++) {
        md_backend_t *g = gpus[p];
        check_gemm(g, 1, 16, 8, 16, 8, 0, 0);
        check_gemm(g, 333, 48, 130, 50, 131, 0, 1);     /* x_proj-like, strided */
        check_gemm(g, 257, 16, 64, 16, 64, 1, 0);       /* head: F32 logits */
        check_gemm(g, 200, 64, 128, 128, 130, 1, 1);    /* out_proj: F32 residual gradient slice */
        check_gemm(g, quick ? 3000 : 40000, 256, 512, 512, 512, 0, 0);
    }
    END_CHECKS;
}

/* --- conv_silu_bwd --------------------------------------------------------------------------- */

typedef struct {
    int64_t n;
    int Cn, K, reverse, bias, acc, with_state, with_dstate;
    double pstart; /* < 0: no flags */
} conv_case_t;

static void check_conv(md_backend_t *g, const conv_case_t *c)
{
    new_seed();
    const int64_t n = c->n, ldx = 2 * c->Cn + 3, P = c->K - 1, Cn = c->Cn;
    float *x = ract(g, n * ldx, -2, 2), *dout = ract(g, n * Cn, -1, 1), *dx0 = ract(g, n * ldx, -1, 1);
    float *w = runif(Cn * c->K, -0.7f, 0.7f), *b = runif(Cn, -0.5f, 0.5f);
    float *gw0 = runif(Cn * c->K, -1, 1), *gb0 = runif(Cn, -1, 1);
    float *st = runif((P > 0 ? P : 1) * Cn, -1, 1), *dst = runif((P > 0 ? P : 1) * Cn, -1, 1);
    uint8_t *ss = c->pstart >= 0 ? rand_starts(n, c->pstart) : NULL;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = Cn; j < ldx; j++) dx0[i * ldx + j] = NAN;
    md_backend_t *be[2] = { cpu, g };
    const md_train_ops_t *op[2] = { ocpu, ogpu };
    float *o[2][4];
    for (int k = 0; k < 2; k++) {
        md_backend_t *B = be[k];
        void *dx_ = up_act(B, x, n * ldx), *ddo = up_act(B, dout, n * Cn), *ddx = up_act(B, dx0, n * ldx);
        float *dw = up_raw(B, w, Cn * c->K * 4), *db = up_raw(B, b, Cn * 4), *gw = up_raw(B, gw0, Cn * c->K * 4);
        float *gb = up_raw(B, gb0, Cn * 4), *dst_ = up_raw(B, st, (P > 0 ? P : 1) * Cn * 4);
        float *ddst = up_raw(B, dst, (P > 0 ? P : 1) * Cn * 4);
        uint8_t *dss = ss ? up_raw(B, ss, n + 1) : NULL;
        assert_int_equal(op[k]->conv_silu_bwd(B, n, Cn, c->K, dx_, ldx, dw, c->bias ? db : NULL, ddo, ddx, ldx, c->acc,
                                              gw, c->bias ? gb : NULL, c->with_state ? dst_ : NULL,
                                              c->with_dstate ? ddst : NULL, c->reverse, dss), 0);
        o[k][0] = down_act(B, ddx, n * ldx);
        o[k][1] = down_f32(B, gw, Cn * c->K);
        o[k][2] = down_f32(B, gb, Cn);
        o[k][3] = down_f32(B, ddst, (P > 0 ? P : 1) * Cn);
        xfree(B, dx_); xfree(B, ddo); xfree(B, ddx); xfree(B, dw); xfree(B, db); xfree(B, gw); xfree(B, gb);
        xfree(B, dst_); xfree(B, ddst); xfree(B, dss);
    }
    char d[200];
    snprintf(d, sizeof d, "n=%lld C=%d K=%d rev=%d bias=%d acc=%d state=%d dstate=%d starts=%s", (long long)n, c->Cn,
             c->K, c->reverse, c->bias, c->acc, c->with_state, c->with_dstate, ss ? "packed" : "none");
    char d2[240];
    snprintf(d2, sizeof d2, "%s [dx]", d);
    report(g, OP_CONV, d2, relerr2(o[1][0], o[0][0], n, Cn, ldx), tol_act(g));
    assert_true(padding_untouched(o[1][0], n, Cn, ldx));
    snprintf(d2, sizeof d2, "%s [dw]", d);
    report(g, OP_CONV, d2, relerr(o[1][1], o[0][1], Cn * c->K), tol_act(g));
    if (c->bias) {
        snprintf(d2, sizeof d2, "%s [db]", d);
        report(g, OP_CONV, d2, relerr(o[1][2], o[0][2], Cn), tol_act(g));
    }
    if (c->with_dstate && P > 0) {
        snprintf(d2, sizeof d2, "%s [dstate]", d);
        report(g, OP_CONV, d2, relerr(o[1][3], o[0][3], P * Cn), tol_act(g));
    }
    for (int k = 0; k < 2; k++) for (int t = 0; t < 4; t++) free(o[k][t]);
    free(x); free(dout); free(dx0); free(w); free(b); free(gw0); free(gb0); free(st); free(dst); free(ss);
}

static void test_conv_bwd(void **s)
{
    (void)s;
    BEGIN_CHECKS;
    const int64_t lens[] = { 1, 2, 3, 63, 64, 65, 200, 4099 };
    for (int p = 0; p < 2; p++) {
        md_backend_t *g = gpus[p];
        for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
            conv_case_t c = { .n = lens[i], .Cn = 130, .K = 4, .reverse = 0, .bias = 1, .acc = 0, .with_state = 1,
                              .with_dstate = 1, .pstart = -1 };
            check_conv(g, &c);
            c.reverse = 1; c.acc = 1; c.pstart = 0.05;
            check_conv(g, &c);
            c.reverse = 0; c.with_state = 0; c.with_dstate = 0; c.bias = 0; c.pstart = 0.3;
            check_conv(g, &c);
        }
        conv_case_t c2 = { .n = 777, .Cn = 33, .K = 2, .reverse = 1, .bias = 1, .acc = 0, .with_state = 1,
                           .with_dstate = 1, .pstart = 0.01 };
        check_conv(g, &c2);
        c2.K = 1;
        check_conv(g, &c2);
        c2.K = 8; c2.n = 5; c2.reverse = 0;   /* n < K - 1: the emitted state reaches into the given one */
        check_conv(g, &c2);
        if (!quick) {
            conv_case_t c3 = { .n = 150001, .Cn = 512, .K = 4, .reverse = 1, .bias = 1, .acc = 1, .with_state = 0,
                               .with_dstate = 0, .pstart = 1e-4 };
            check_conv(g, &c3);
        }
    }
    END_CHECKS;
}

/* --- scan (light: tscan's own tests cover the scan) -------------------------------------------- */

static void check_scan(md_backend_t *g, int64_t n, int Di, int N, int T, int reverse, int gate, int with_starts)
{
    new_seed();
    const int R = 5, XD = R + 2 * N;
    const int64_t nch = (n + T - 1) / T;
    float *x = ract(g, n * Di, -1, 1), *dt = ract(g, n * Di, -2, 0.5f), *xdbl = ract(g, n * XD, -1, 1);
    float *xz = ract(g, n * 2 * Di, -2, 2), *dy = ract(g, n * Di, -1, 1), *dz0 = ract(g, n * 2 * Di, -1, 1);
    float *A = runif((int64_t)Di * N, 0, 2), *D = runif(Di, 0.5f, 1.5f), *bias = runif(Di, -2, 0);
    float *h0 = runif((int64_t)Di * N, -1, 1), *dh = runif((int64_t)Di * N, -1, 1);
    float *gA0 = runif((int64_t)Di * N, -1, 1), *gD0 = runif(Di, -1, 1), *gb0 = runif(Di, -1, 1);
    for (int64_t i = 0; i < (int64_t)Di * N; i++) A[i] = -expf(A[i]);
    uint8_t *ss = with_starts ? rand_starts(n, 0.01) : NULL;
    md_backend_t *be[2] = { cpu, g };
    const md_train_ops_t *op[2] = { ocpu, ogpu };
    enum { Y, CS, HL, DX, DDT, DXDBL, DZ, DA, DD, DB, DH, NOUT };
    float *o[2][NOUT];
    int64_t len[NOUT] = { n * Di, nch * Di * N, (int64_t)Di * N, n * Di, n * Di, n * XD, n * 2 * Di, (int64_t)Di * N,
                          Di, Di, (int64_t)Di * N };
    for (int k = 0; k < 2; k++) {
        md_backend_t *B = be[k];
        const size_t a = asz(B);
        void *dx_ = up_act(B, x, n * Di), *ddt = up_act(B, dt, n * Di), *dxdbl = up_act(B, xdbl, n * XD);
        void *dxz = up_act(B, xz, n * 2 * Di), *ddy = up_act(B, dy, n * Di), *ddz = up_act(B, dz0, n * 2 * Di);
        float *dA = up_raw(B, A, (size_t)Di * N * 4), *dD = up_raw(B, D, Di * 4), *dbias = up_raw(B, bias, Di * 4);
        float *dst = up_raw(B, h0, (size_t)Di * N * 4), *ddst = up_raw(B, dh, (size_t)Di * N * 4);
        float *gA = up_raw(B, gA0, (size_t)Di * N * 4), *gD = up_raw(B, gD0, Di * 4), *gb = up_raw(B, gb0, Di * 4);
        float *cs = B->alloc(B, (size_t)nch * Di * N * 4), *st0 = up_raw(B, h0, (size_t)Di * N * 4);
        void *y = B->alloc(B, n * Di * a), *y2 = B->alloc(B, n * Di * a);
        void *gx = B->alloc(B, n * Di * a), *gdt = B->alloc(B, n * Di * a), *gxdbl = up_act(B, xdbl, n * XD);
        uint8_t *dss = ss ? up_raw(B, ss, n + 1) : NULL;
        md_tscan_t q;
        memset(&q, 0, sizeof q);
        q.x = dx_; q.ldx = Di; q.dt = ddt; q.lddt = Di;
        q.B = (char *)dxdbl + R * a; q.C = (char *)dxdbl + (R + N) * a; q.ldbc = XD;
        q.z = gate ? (char *)dxz + Di * a : NULL; q.ldz = 2 * Di;
        q.A = dA; q.D = dD; q.dt_bias = dbias; q.reverse = reverse; q.T = T; q.chunk_states = cs; q.state = dst;
        assert_int_equal(op[k]->scan_fwd(B, n, Di, N, &q, y, Di, 0, dss), 0);
        q.state = st0;  /* unused by the backward */
        q.dy = ddy; q.lddy = Di; q.dx = gx; q.lddx = Di; q.ddt = gdt; q.ldddt = Di;
        q.dB = (char *)gxdbl + R * a; q.dC = (char *)gxdbl + (R + N) * a; q.lddbc = XD;
        q.dz = gate ? (char *)ddz + Di * a : NULL; q.lddz = 2 * Di; q.dz_accumulate = 1;
        q.dA_log = gA; q.dD = gD; q.ddt_bias = gb; q.dstate = ddst; q.y = y2; q.ldy = Di;
        assert_int_equal(op[k]->scan_bwd(B, n, Di, N, &q, dss), 0);
        o[k][Y] = down_act(B, y, n * Di);
        o[k][CS] = down_f32(B, cs, nch * Di * N);
        o[k][HL] = down_f32(B, dst, (int64_t)Di * N);
        o[k][DX] = down_act(B, gx, n * Di);
        o[k][DDT] = down_act(B, gdt, n * Di);
        o[k][DXDBL] = down_act(B, gxdbl, n * XD);
        o[k][DZ] = down_act(B, ddz, n * 2 * Di);
        o[k][DA] = down_f32(B, gA, (int64_t)Di * N);
        o[k][DD] = down_f32(B, gD, Di);
        o[k][DB] = down_f32(B, gb, Di);
        o[k][DH] = down_f32(B, ddst, (int64_t)Di * N);
        float *ybw = down_act(B, y2, n * Di);
        if (k == 1) report(g, OP_SCAN, "  y recomputed by the backward = forward y", relerr(ybw, o[1][Y], n * Di), tol_act(g));
        free(ybw);
        void *fr[] = { dx_, ddt, dxdbl, dxz, ddy, ddz, dA, dD, dbias, dst, ddst, gA, gD, gb, cs, st0, y, y2, gx, gdt,
                       gxdbl, dss };
        for (size_t i = 0; i < sizeof fr / sizeof *fr; i++) xfree(B, fr[i]);
    }
    static const char *nm[NOUT] = { "y", "chunk states", "h_last", "dx", "ddt", "dB|dC (xdbl cols)", "dz (+=)",
                                    "dA_log +=", "dD +=", "ddt_bias +=", "dstate" };
    for (int t = 0; t < NOUT; t++) {
        if (t == DZ && !gate) { free(o[0][t]); free(o[1][t]); continue; }
        char d[200];
        snprintf(d, sizeof d, "n=%lld Di=%d N=%d T=%d rev=%d z=%d starts=%d [%s]", (long long)n, Di, N, T, reverse,
                 gate, with_starts, nm[t]);
        report(g, OP_SCAN, d, relerr(o[1][t], o[0][t], len[t]), tol_act(g));
        free(o[0][t]); free(o[1][t]);
    }
    free(x); free(dt); free(xdbl); free(xz); free(dy); free(dz0); free(A); free(D); free(bias); free(h0); free(dh);
    free(gA0); free(gD0); free(gb0); free(ss);
}

static void test_scan(void **s)
{
    (void)s;
    BEGIN_CHECKS;
    for (int p = 0; p < 2; p++) {
        check_scan(gpus[p], 300, 40, 16, 64, 0, 1, 1);
        check_scan(gpus[p], 301, 33, 16, 256, 1, 1, 1);
        check_scan(gpus[p], 97, 24, 4, 32, 1, 0, 0);
    }
    END_CHECKS;
}

/* --- mul_bwd, xent, adamw, sumsq, permute, set_matrix, neg_exp ------------------------------- */

static void check_mul(md_backend_t *g, int64_t n, int W, int which)
{
    new_seed();
    const int64_t ldo = W + 5, lda = W + 1, ldb = W, ldd = W + 3;
    float *dout = runif(n * ldo, -1, 1), *a = ract(g, n * lda, -1, 1), *b = ract(g, n * ldb, -1, 1);
    float *poison = malloc(n * ldd * sizeof(float));
    for (int64_t i = 0; i < n * ldd; i++) poison[i] = NAN;
    md_backend_t *be[2] = { cpu, g };
    const md_train_ops_t *op[2] = { ocpu, ogpu };
    float *o[2][2];
    for (int k = 0; k < 2; k++) {
        md_backend_t *B = be[k];
        float *dd = up_raw(B, dout, n * ldo * 4);
        void *da_ = up_act(B, a, n * lda), *db_ = up_act(B, b, n * ldb);
        void *oa = up_act(B, poison, n * ldd), *ob = up_act(B, poison, n * ldd);
        assert_int_equal(op[k]->mul_bwd(B, n, W, dd, ldo, da_, lda, db_, ldb, which & 1 ? oa : NULL, ldd,
                                        which & 2 ? ob : NULL, ldd), 0);
        o[k][0] = down_act(B, oa, n * ldd);
        o[k][1] = down_act(B, ob, n * ldd);
        xfree(B, dd); xfree(B, da_); xfree(B, db_); xfree(B, oa); xfree(B, ob);
    }
    for (int t = 0; t < 2; t++) {
        if (!(which & (1 << t))) {
            assert_true(padding_untouched(o[1][t], n, 0, ldd)); /* not written at all */
            continue;
        }
        char d[120];
        snprintf(d, sizeof d, "n=%lld W=%d [%s]", (long long)n, W, t ? "db" : "da");
        report(g, OP_MUL, d, relerr2(o[1][t], o[0][t], n, W, ldd), tol_act(g));
        assert_true(padding_untouched(o[1][t], n, W, ldd));
    }
    for (int k = 0; k < 2; k++) { free(o[k][0]); free(o[k][1]); }
    free(dout); free(a); free(b); free(poison);
}

/* dl_mode: 0 no gradient, 1 separate buffer (row stride V + 2), 2 aliasing the logits */
static void check_xent(md_backend_t *g, int64_t n, int V, int weighted, int dl_mode)
{
    new_seed();
    const int64_t ldl = V + (dl_mode == 2 ? 0 : 3), ldd = dl_mode == 2 ? ldl : V + 2;
    float *lg = runif(n * ldl, -4, 4), *wt = runif(n, 0.1f, 1.0f);
    int32_t *tg = malloc(n * sizeof *tg);
    for (int64_t i = 0; i < n; i++) tg[i] = urand() < 0.3f ? MD_IGNORE : (int32_t)(next_u64() % V);
    md_backend_t *be[2] = { cpu, g };
    const md_train_ops_t *op[2] = { ocpu, ogpu };
    double st[2][4];
    float *dl[2] = { NULL, NULL };
    for (int k = 0; k < 2; k++) {
        md_backend_t *B = be[k];
        float *dlg = up_raw(B, lg, n * ldl * 4), *dw = up_raw(B, wt, n * 4);
        int32_t *dt = up_raw(B, tg, n * 4);
        float *ddl = dl_mode == 1 ? B->alloc(B, n * ldd * 4) : dl_mode == 2 ? dlg : NULL;
        double init[4] = { 1, 2, 3, 4 };
        double *dst = up_raw(B, init, sizeof init);
        assert_int_equal(op[k]->xent(B, n, V, dlg, ldl, dt, weighted ? dw : NULL, MD_IGNORE, 0.37f, ddl, ldd, dst), 0);
        assert_int_equal(B->download(B, st[k], dst, sizeof st[k]), 0);
        if (ddl) dl[k] = down_f32(B, ddl, n * ldd);
        xfree(B, dlg); xfree(B, dw); xfree(B, dt); xfree(B, dst);
        if (dl_mode == 1) xfree(B, ddl);
    }
    char d[160];
    snprintf(d, sizeof d, "n=%lld V=%d weights=%d dlogits=%s [stats]", (long long)n, V, weighted,
             dl_mode == 0 ? "none" : dl_mode == 1 ? "separate" : "alias");
    double e = 0;
    for (int t = 0; t < 4; t++) {
        double r = fabs(st[1][t] - st[0][t]) / fabs(st[0][t]);
        if (r > e || r != r) e = r;
    }
    report(g, OP_XENT, d, e, 1e-10);
    if (dl_mode) {
        snprintf(d, sizeof d, "n=%lld V=%d weights=%d dlogits=%s [dlogits]", (long long)n, V, weighted,
                 dl_mode == 1 ? "separate" : "alias");
        report(g, OP_XENT, d, relerr2(dl[1], dl[0], n, V, ldd), 1e-6);
    }
    free(dl[0]); free(dl[1]); free(lg); free(wt); free(tg);
}

static void check_adamw(md_backend_t *g, int64_t n, int64_t step, double wd, double gscale)
{
    new_seed();
    float *p = runif(n, -1, 1), *gr = runif(n, -0.1f, 0.1f), *m = runif(n, -0.01f, 0.01f), *v = runif(n, 0, 1e-4f);
    md_adamw_t hp = { .lr = 3e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = wd, .gscale = gscale,
                      .step = step };
    md_backend_t *be[2] = { cpu, g };
    const md_train_ops_t *op[2] = { ocpu, ogpu };
    float *o[2][3];
    for (int k = 0; k < 2; k++) {
        md_backend_t *B = be[k];
        float *dp = up_raw(B, p, n * 4), *dg = up_raw(B, gr, n * 4), *dm = up_raw(B, m, n * 4), *dv = up_raw(B, v, n * 4);
        assert_int_equal(op[k]->adamw(B, n, dp, dg, dm, dv, &hp), 0);
        o[k][0] = down_f32(B, dp, n);
        o[k][1] = down_f32(B, dm, n);
        o[k][2] = down_f32(B, dv, n);
        xfree(B, dp); xfree(B, dg); xfree(B, dm); xfree(B, dv);
    }
    static const char *nm[3] = { "p", "m", "v" };
    for (int t = 0; t < 3; t++) {
        char d[120];
        snprintf(d, sizeof d, "n=%lld step=%lld wd=%g gscale=%g [%s]", (long long)n, (long long)step, wd, gscale, nm[t]);
        report(g, OP_ADAMW, d, relerr(o[1][t], o[0][t], n), 1e-6);
        free(o[0][t]); free(o[1][t]);
    }
    free(p); free(gr); free(m); free(v);
}

static void check_small(md_backend_t *g)
{
    new_seed();
    md_backend_t *be[2] = { cpu, g };
    const md_train_ops_t *op[2] = { ocpu, ogpu };
    /* sumsq */
    const int64_t ns[3] = { 1, 1000, 100003 };
    for (int i = 0; i < 3; i++) {
        float *x = runif(ns[i], -2, 2);
        double r[2];
        for (int k = 0; k < 2; k++) {
            double init = 0.5;
            float *dx = up_raw(be[k], x, ns[i] * 4);
            double *acc = up_raw(be[k], &init, sizeof init);
            assert_int_equal(op[k]->sumsq(be[k], ns[i], dx, acc), 0);
            assert_int_equal(be[k]->download(be[k], &r[k], acc, sizeof r[k]), 0);
            xfree(be[k], dx); xfree(be[k], acc);
        }
        char d[80];
        snprintf(d, sizeof d, "sumsq n=%lld", (long long)ns[i]);
        report(g, OP_SMALL, d, fabs(r[1] - r[0]) / fabs(r[0]), 1e-12);
        free(x);
    }
    /* permute (row map, flip, accumulate, strides), set_matrix, neg_exp */
    const int rows = 16, cols = 37;
    const int64_t lds = 41, ldd = 40;
    float *src = runif(rows * lds, -1, 1), *dst0 = runif(rows * ldd, -1, 1);
    int32_t map[16];
    for (int r = 0; r < rows; r++) map[r] = (r * 7 + 3) % rows;
    for (int mode = 0; mode < 4; mode++) {
        float *o[2];
        for (int k = 0; k < 2; k++) {
            float *ds = up_raw(be[k], src, rows * lds * 4), *dd = up_raw(be[k], dst0, rows * ldd * 4);
            int32_t *dm = up_raw(be[k], map, sizeof map);
            assert_int_equal(op[k]->permute(be[k], rows, cols, ds, lds, dd, ldd, mode & 1 ? dm : NULL, mode >> 1 & 1,
                                            mode == 3), 0);
            o[k] = down_f32(be[k], dd, rows * ldd);
            xfree(be[k], ds); xfree(be[k], dd); xfree(be[k], dm);
        }
        char d[80];
        snprintf(d, sizeof d, "permute rowmap=%d flip=%d acc=%d", mode & 1, mode >> 1 & 1, mode == 3);
        report(g, OP_SMALL, d, relerr(o[1], o[0], rows * ldd), 0);
        free(o[0]); free(o[1]);
        /* set_matrix: the matrix read back through a GEMM-free path (download_act of the handle) */
        for (int k = 0; k < 2; k++) {
            float *ds = up_raw(be[k], src, rows * lds * 4);
            int32_t *dm = up_raw(be[k], map, sizeof map);
            void *mat = be[k]->upload_matrix(be[k], dst0, rows, cols);
            assert_non_null(mat);
            assert_int_equal(op[k]->set_matrix(be[k], mat, rows, cols, ds, lds, mode & 1 ? dm : NULL, mode >> 1 & 1), 0);
            o[k] = down_act(be[k], mat, (int64_t)rows * cols);
            xfree(be[k], ds); xfree(be[k], dm); xfree(be[k], mat);
        }
        if (is_bf(g)) for (int i = 0; i < rows * cols; i++) o[0][i] = bf16_round(o[0][i]);
        snprintf(d, sizeof d, "set_matrix rowmap=%d flip=%d", mode & 1, mode >> 1 & 1);
        report(g, OP_SMALL, d, relerr(o[1], o[0], rows * cols), 0);
        free(o[0]); free(o[1]);
    }
    float *al = runif(1001, -3, 2), *ne[2];
    for (int k = 0; k < 2; k++) {
        float *ds = up_raw(be[k], al, 1001 * 4), *dd = be[k]->alloc(be[k], 1001 * 4);
        assert_int_equal(op[k]->neg_exp(be[k], 1001, ds, dd), 0);
        ne[k] = down_f32(be[k], dd, 1001);
        xfree(be[k], ds); xfree(be[k], dd);
    }
    report(g, OP_SMALL, "neg_exp n=1001", relerr(ne[1], ne[0], 1001), 1e-6);
    free(ne[0]); free(ne[1]); free(al); free(src); free(dst0);
}

static void test_small_ops(void **s)
{
    (void)s;
    BEGIN_CHECKS;
    for (int p = 0; p < 2; p++) {
        md_backend_t *g = gpus[p];
        check_mul(g, 37, 40, 3);
        check_mul(g, 300, 256, 1);
        check_mul(g, 5, 7, 2);
        check_xent(g, 1, 16, 0, 1);
        check_xent(g, 1000, 16, 1, 2);
        check_xent(g, 3001, 5, 1, 1);
        check_xent(g, 700, 16, 0, 0);
        check_adamw(g, 10007, 1, 0.1, 1.0);
        check_adamw(g, 1000, 7, 0.0, 0.25);
        check_small(g);
    }
    END_CHECKS;
}

static void test_errors(void **s)
{
    (void)s;
    md_backend_t *g = gpus[0];
    int lvl = md_log_level;
    md_log_level = MD_LOG_OFF;
    /* a target outside the vocabulary is an error, as on the CPU */
    float lg[4] = { 0, 1, 2, 3 };
    int32_t tg[1] = { 9 };
    double st[4] = { 0 };
    float *dl = up_raw(g, lg, sizeof lg);
    int32_t *dt = up_raw(g, tg, sizeof tg);
    double *ds = up_raw(g, st, sizeof st);
    assert_true(ogpu->xent(g, 1, 4, dl, 4, dt, NULL, MD_IGNORE, 1.0f, NULL, 4, ds) < 0);
    /* unsupported shapes fail fast */
    assert_true(ogpu->conv_silu_bwd(g, 4, 8, 9, NULL, 8, NULL, NULL, NULL, NULL, 8, 0, NULL, NULL, NULL, NULL, 0, NULL) < 0);
    assert_true(ogpu->add_norm_bwd(g, 1, 4096, 4096, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1e-5f, 0, 1) < 0);
    xfree(g, dl); xfree(g, dt); xfree(g, ds);
    md_log_level = lvl;
}

/* --- the whole training step ----------------------------------------------------------------- */

typedef enum { V_PH, V_PS, V_MAMBA } tvariant_t;

static md_weights_t *tiny_model(tvariant_t v, int d, int n_layer, uint64_t seed)
{
    md_config_t c;
    md_config_init(&c);
    c.d_model = d;
    c.n_layer = n_layer;
    c.d_state = 8;
    if (v == V_PS) c.rcps = 1;
    if (v == V_MAMBA) c.arch = MD_ARCH_MAMBA;
    assert_int_equal(md_config_finish(&c, "test"), 0);
    md_weights_t *w = md_weights_alloc(&c);
    assert_non_null(w);
    md_weights_init(w, seed);
    rng = seed;
    for (size_t i = 0; i < w->numel; i++) w->slab[i] += 0.4f * urand() - 0.2f;
    for (int i = 0; i < w->n; i++)
        if (w->p[i].kind == MD_P_DT_B)
            for (size_t j = 0; j < w->p[i].numel; j++) w->p[i].data[j] = 2.0f * urand() - 1.5f;
    return w;
}

static void step_case(md_backend_t *g, tvariant_t v, int dm, int n_layer, int64_t l1, int64_t l2, int T)
{
    static const char *vn[] = { "Ph", "PS", "Mamba" };
    md_weights_t *w = tiny_model(v, dm, n_layer, 99 + (uint64_t)v);
    const int V = w->cfg.vocab_size;
    const int64_t n = l1 + l2;
    int32_t *ids = malloc(n * 4), *tg = malloc(n * 4);
    float *wt = malloc(n * 4);
    static const int32_t pool[] = { 7, 8, 9, 10, 3, 11 };
    for (int64_t i = 0; i < n; i++) {
        ids[i] = pool[next_u64() % 6];
        tg[i] = urand() < 0.3f ? MD_IGNORE : (int32_t)(next_u64() % V);
        wt[i] = 0.1f + 0.9f * urand();
    }
    int64_t off[3] = { 0, l1, n };
    md_batch_t b = { .ids = ids, .targets = tg, .weights = wt, .n = n, .seq_off = off, .nseq = 2 };
    md_backend_t *be[2] = { cpu, g };
    md_train_opts_t to = { .scan_chunk = T, .recompute_scan = 0 };
    md_optim_t o;
    md_optim_init(&o);
    o.total = 10;
    o.warmup = 1;
    o.lr = 1e-3;
    float *gr[2], *par[2];
    double loss[2], gn[2][2];
    for (int k = 0; k < 2; k++) {
        md_train_t *t = md_train_create(w, be[k], &to);
        assert_non_null(t);
        double st[MD_NSTATS] = { 0 };
        assert_int_equal(md_train_zero_grad(t), 0);
        assert_int_equal(md_train_forward_backward(t, &b, 0.01f, st), 0);
        loss[k] = st[0] / st[1];
        gr[k] = malloc(w->numel * 4);
        assert_int_equal(md_train_get_grads(t, gr[k]), 0);
        /* two AdamW updates, each from a fresh gradient */
        for (int s = 0; s < 2; s++) {
            if (s) {
                assert_int_equal(md_train_zero_grad(t), 0);
                assert_int_equal(md_train_forward_backward(t, &b, 0.01f, NULL), 0);
            }
            assert_int_equal(md_train_update(t, &o, s, &gn[k][s]), 0);
        }
        md_weights_t *cur = md_weights_alloc(&w->cfg);
        assert_int_equal(md_train_get_params(t, cur), 0);
        par[k] = malloc(w->numel * 4);
        memcpy(par[k], cur->slab, w->numel * 4);
        md_weights_free(cur);
        md_train_free(t);
    }
    char d[160];
    snprintf(d, sizeof d, "%s d=%d layers=%d L=%lld+%lld T=%d", vn[v], dm, n_layer, (long long)l1, (long long)l2, T);
    const int bf = is_bf(g);
    char d2[240];
    snprintf(d2, sizeof d2, "%s [loss]", d);
    report(g, OP_STEP, d2, fabs(loss[1] - loss[0]) / fabs(loss[0]), bf ? 2e-2 : 1e-5);
    /* gradients per tensor: fp32 1e-4 (the bound); bf16 a sanity bound of 0.1. A tensor
     * whose gradient is below 1e-3 of the largest tensor gradient is rounding-dominated: it must
     * then be within 1e-7 (bf16: 1e-3) of that largest norm in absolute terms. */
    double gmax = 0;
    for (int i = 0; i < w->n; i++) {
        size_t off0 = w->p[i].data - w->slab;
        double nr = 0;
        for (size_t j = 0; j < w->p[i].numel; j++) nr += (double)gr[0][off0 + j] * gr[0][off0 + j];
        if (sqrt(nr) > gmax) gmax = sqrt(nr);
    }
    for (int i = 0; i < w->n; i++) {
        const md_param_t *p = &w->p[i];
        size_t off0 = p->data - w->slab;
        double e = relerr(gr[1] + off0, gr[0] + off0, (int64_t)p->numel), nr = 0, nd = 0;
        for (size_t j = 0; j < p->numel; j++) {
            nr += (double)gr[0][off0 + j] * gr[0][off0 + j];
            nd += ((double)gr[1][off0 + j] - gr[0][off0 + j]) * ((double)gr[1][off0 + j] - gr[0][off0 + j]);
        }
        const double bound = bf ? 0.1 : 1e-4;
        if (e > bound && sqrt(nr) < 1e-3 * gmax && sqrt(nd) <= (bf ? 1e-3 : 1e-7) * gmax) {
            printf("     (%s: small gradient, |diff| %.2e <= %g x largest tensor gradient %.3g)\n", p->key, sqrt(nd),
                   bf ? 1e-3 : 1e-7, gmax);
            e = 0;
        }
        snprintf(d2, sizeof d2, "%s [grad %s]", d, p->key + (strlen(p->key) > 30 ? strlen(p->key) - 30 : 0));
        report(g, OP_STEP, d2, e, bound);
    }
    snprintf(d2, sizeof d2, "%s [grad norm, 2 updates]", d);
    report(g, OP_STEP, d2, fmax(fabs(gn[1][0] - gn[0][0]) / gn[0][0], fabs(gn[1][1] - gn[0][1]) / gn[0][1]),
           bf ? 2e-2 : 1e-4);
    snprintf(d2, sizeof d2, "%s [weights after 2 AdamW updates]", d);
    report(g, OP_STEP, d2, relerr(par[1], par[0], (int64_t)w->numel), bf ? 1e-3 : 1e-5);
    for (int k = 0; k < 2; k++) { free(gr[k]); free(par[k]); }
    free(ids); free(tg); free(wt);
    md_weights_free(w);
}

static void test_train_step(void **s)
{
    (void)s;
    BEGIN_CHECKS;
    for (int p = 0; p < 2; p++) {
        md_backend_t *g = gpus[p];
        step_case(g, V_PH, 16, 2, 150, 93, 64);
        step_case(g, V_PS, 16, 2, 97, 140, 32);
        step_case(g, V_MAMBA, 16, 2, 130, 71, 64);
        if (!quick) step_case(g, V_PH, 64, 3, 3000, 1097, 256);
    }
    END_CHECKS;
}

int main(void)
{
    const char *q = getenv("MD_PARITY_QUICK"), *only = getenv("MD_PARITY_ONLY");
    quick = q && atoi(q) > 0;
    if (only && *only) cmocka_set_test_filter(only);
    if (md_cuda_device_count() <= 0) {
        fprintf(stderr, "gpu_train_parity: no CUDA device, skipped\n");
        return 77;
    }
    ocpu = md_train_ops_cpu();
    ogpu = md_train_ops_cuda ? md_train_ops_cuda() : NULL;
    if (!ogpu) {
        fprintf(stderr, "gpu_train_parity: this build has no CUDA training ops\n");
        return 1;
    }
    cpu = md_backend_cpu_open(0);
    gpus[0] = md_backend_open("cuda", "fp32", 0);
    gpus[1] = md_backend_open("cuda", "bf16", 0);
    if (!cpu || !gpus[0] || !gpus[1]) {
        fprintf(stderr, "gpu_train_parity: could not open the backends\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embed_bwd), cmocka_unit_test(test_add_norm_bwd), cmocka_unit_test(test_gemm_bwd),
        cmocka_unit_test(test_conv_bwd),  cmocka_unit_test(test_small_ops),    cmocka_unit_test(test_errors),
        cmocka_unit_test(test_scan),      cmocka_unit_test(test_train_step),
    };
    int r = cmocka_run_group_tests_name("gpu_train_parity", tests, NULL, NULL);
    printf("\n== train parity summary: %d checks, %d failed; worst ||gpu-cpu||/||cpu|| per op\n", n_checks, n_fail);
    printf("%-10s %12s %12s\n", "op", "fp32", "bf16");
    for (int op = 0; op < OP_N; op++) printf("%-10s %12.3g %12.3g\n", op_name[op], worst[0][op], worst[1][op]);
    gpus[0]->destroy(gpus[0]);
    gpus[1]->destroy(gpus[1]);
    cpu->destroy(cpu);
    return r;
}
