/* test_train.c: training. Every backward op of the CPU table against central finite
 * differences of a double-precision reference written here (relative error per tensor
 * <= 1e-4), the state contracts of the chunked conv/scan backward, the whole model's gradient
 * (Ph, PS, Mamba, untied and ew_multiply variants; chunked and unchunked scans) against finite
 * differences of a double reference model written from model-spec 2.5/2.6, the training
 * forward against md_model_forward, gradient-accumulation equivalence, AdamW against a hand
 * computation, the schedule, the masking recipe statistics, resume reproducing the same loss
 * curve, and a short run on real DNA whose loss decreases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "md.h"
#include "model.h"
#include "params.h"
#include "tokenizer.h"
#include "train.h"
#include "train_ops.h"

/* --- helpers -------------------------------------------------------------------------------- */

static uint64_t rng_s = 1;
static double urand(void)
{
    uint64_t z = (rng_s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (z >> 11) * (1.0 / 9007199254740992.0);
}
static float frand(double lo, double hi) { return (float)(lo + (hi - lo) * urand()); }
static float *rvec(size_t n, double lo, double hi)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = frand(lo, hi);
    return v;
}
static double *dvec(const float *v, size_t n)
{
    double *d = malloc((n ? n : 1) * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = v[i];
    return d;
}

/* ||a - ref|| / ||ref|| (0 when both are 0) */
static double rel_err(const float *a, const double *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = a[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    if (den == 0) return sqrt(num);
    return sqrt(num / den);
}

static int check_tensor(const char *what, const float *a, const double *ref, size_t n, double tol)
{
    double e = rel_err(a, ref, n);
    double nr = 0;
    for (size_t i = 0; i < n; i++) nr += ref[i] * ref[i];
    printf("#   %-28s rel err %.2e  (|ref| %.3g)\n", what, e, sqrt(nr));
    return e <= tol;
}

/* Central differences of f over the n doubles at p (restored), into g. */
typedef double (*lossfn_t)(void *ud);
static void fd_grad(lossfn_t f, void *ud, double *p, size_t n, double *g)
{
    for (size_t i = 0; i < n; i++) {
        double v = p[i], h = 1e-6 * (fabs(v) > 1 ? fabs(v) : 1);
        p[i] = v + h;
        double lp = f(ud);
        p[i] = v - h;
        double lm = f(ud);
        p[i] = v;
        g[i] = (lp - lm) / (2 * h);
    }
}

static double dsilu(double v) { return v / (1 + exp(-v)); }
static double dsoftplus(double v) { return v > 20 ? v : log1p(exp(v)); }

/* --- scan ----------------------------------------------------------------------------------- */

typedef struct {
    int64_t n;
    int Di, N, reverse, use_z;
    double *x, *dt, *B, *C, *z, *Alog, *D, *bias, *h0;   /* x, dt, z [n, Di]; B, C [n, N] */
    const uint8_t *ss;
    double *r, *rs;                                      /* loss weights for y and h_last */
} scan_ref_t;

static double scan_ref_loss(void *ud)
{
    scan_ref_t *q = ud;
    const int Di = q->Di, N = q->N;
    const int64_t n = q->n;
    double L = 0;
    for (int c = 0; c < Di; c++) {
        double h[64];
        for (int s = 0; s < N; s++) h[s] = q->h0[c * N + s];
        for (int64_t u = 0; u < n; u++) {
            int64_t t = q->reverse ? n - 1 - u : u;
            if (q->ss && (q->reverse ? q->ss[n - u] : q->ss[u])) for (int s = 0; s < N; s++) h[s] = 0;
            double dl = dsoftplus(q->dt[t * Di + c] + q->bias[c]), xv = q->x[t * Di + c];
            double o = q->D[c] * xv;
            for (int s = 0; s < N; s++) {
                double A = -exp(q->Alog[c * N + s]);
                h[s] = exp(dl * A) * h[s] + dl * q->B[t * N + s] * xv;
                o += h[s] * q->C[t * N + s];
            }
            if (q->use_z) o *= dsilu(q->z[t * Di + c]);
            L += q->r[t * Di + c] * o;
        }
        for (int s = 0; s < N; s++) L += q->rs[c * N + s] * h[s];
    }
    return L;
}

static void scan_case(int64_t n, int Di, int N, int T, int reverse, int use_z, int with_starts)
{
    printf("# scan n=%lld Di=%d N=%d T=%d reverse=%d z=%d starts=%d\n", (long long)n, Di, N, T, reverse, use_z,
           with_starts);
    md_backend_t *be = md_backend_cpu_open(2);
    const md_train_ops_t *ops = md_train_ops_cpu();
    float *x = rvec(n * Di, -1, 1), *dt = rvec(n * Di, -3, 0.5), *z = rvec(n * Di, -2, 2);
    float *bc = rvec(n * 2 * N, -1, 1);  /* [n, 2N]: B | C */
    float *Alog = rvec((size_t)Di * N, 0, 2.5), *D = rvec(Di, 0.5, 1.5), *bias = rvec(Di, -2, 0);
    float *h0 = rvec((size_t)Di * N, -1, 1), *r = rvec(n * Di, -1, 1), *rs = rvec((size_t)Di * N, -1, 1);
    dt[3] = 24.0f; /* the softplus branch v > 20 */
    uint8_t *ss = calloc(n + 1, 1);
    if (with_starts) { ss[n / 3] = 1; ss[n / 3 + 1] = 1; }
    float *A = malloc((size_t)Di * N * sizeof *A);
    for (int i = 0; i < Di * N; i++) A[i] = -expf(Alog[i]);

    int64_t nch = (n + T - 1) / T;
    float *cstates = malloc((size_t)nch * Di * N * sizeof(float));
    float *state = malloc((size_t)Di * N * sizeof(float));
    memcpy(state, h0, (size_t)Di * N * sizeof(float));
    float *y = malloc(n * Di * sizeof(float)), *y2 = malloc(n * Di * sizeof(float));
    md_tscan_t d;
    memset(&d, 0, sizeof d);
    d.x = x; d.ldx = Di; d.dt = dt; d.lddt = Di; d.B = bc; d.C = bc + N; d.ldbc = 2 * N;
    d.z = use_z ? z : NULL; d.ldz = Di; d.A = A; d.D = D; d.dt_bias = bias; d.reverse = reverse;
    d.T = T; d.chunk_states = cstates; d.state = state;
    assert_int_equal(ops->scan_fwd(be, n, Di, N, &d, y, Di, 0, ss), 0);
    /* the forward equals the backend's scan */
    float *st2 = malloc((size_t)Di * N * sizeof(float));
    memcpy(st2, h0, (size_t)Di * N * sizeof(float));
    md_scan_dir_t sd = { .x = x, .ldx = Di, .dt = dt, .lddt = Di, .B = bc, .C = bc + N, .ldbc = 2 * N,
                         .z = use_z ? z : NULL, .ldz = Di, .A = A, .D = D, .dt_bias = bias, .state = st2,
                         .reverse = reverse };
    assert_int_equal(be->scan(be, n, Di, N, 1, &sd, y2, Di, 0, ss), 0);
    double *yd = dvec(y2, n * Di), *sd2 = dvec(st2, (size_t)Di * N);
    assert_true(check_tensor("fwd y vs backend scan", y, yd, n * Di, 1e-5));
    assert_true(check_tensor("fwd h_last vs backend", state, sd2, (size_t)Di * N, 1e-5));

    /* backward */
    float *dx = malloc(n * Di * 4), *ddt = malloc(n * Di * 4), *dbc = malloc(n * 2 * N * 4), *dz = malloc(n * Di * 4);
    float *dAl = calloc((size_t)Di * N, 4), *dD = calloc(Di, 4), *dbias = calloc(Di, 4);
    float *dstate = malloc((size_t)Di * N * 4);
    memcpy(dstate, rs, (size_t)Di * N * 4);
    d.dy = r; d.lddy = Di; d.dx = dx; d.lddx = Di; d.ddt = ddt; d.ldddt = Di; d.dB = dbc; d.dC = dbc + N;
    d.lddbc = 2 * N; d.dz = dz; d.lddz = Di; d.dA_log = dAl; d.dD = dD; d.ddt_bias = dbias; d.dstate = dstate;
    float *yb = malloc(n * Di * 4);
    d.y = yb; d.ldy = Di;
    assert_int_equal(ops->scan_bwd(be, n, Di, N, &d, ss), 0);
    double *yf = dvec(y, n * Di);
    assert_true(check_tensor("y rebuilt by the backward", yb, yf, n * Di, 1e-6));
    free(yb);
    free(yf);

    scan_ref_t q = { .n = n, .Di = Di, .N = N, .reverse = reverse, .use_z = use_z, .ss = ss };
    q.x = dvec(x, n * Di); q.dt = dvec(dt, n * Di); q.z = dvec(z, n * Di);
    double *bcd = dvec(bc, n * 2 * N);
    q.B = malloc(n * N * 8); q.C = malloc(n * N * 8);
    for (int64_t t = 0; t < n; t++)
        for (int s = 0; s < N; s++) { q.B[t * N + s] = bcd[t * 2 * N + s]; q.C[t * N + s] = bcd[t * 2 * N + N + s]; }
    q.Alog = dvec(Alog, (size_t)Di * N); q.D = dvec(D, Di); q.bias = dvec(bias, Di); q.h0 = dvec(h0, (size_t)Di * N);
    q.r = dvec(r, n * Di); q.rs = dvec(rs, (size_t)Di * N);
    double *g = malloc(n * Di * 8);
    float *tmp = calloc(n * Di, 4);
    fd_grad(scan_ref_loss, &q, q.x, n * Di, g);
    assert_true(check_tensor("dx", dx, g, n * Di, 1e-4));
    fd_grad(scan_ref_loss, &q, q.dt, n * Di, g);
    assert_true(check_tensor("ddt", ddt, g, n * Di, 1e-4));
    if (use_z) {
        fd_grad(scan_ref_loss, &q, q.z, n * Di, g);
        assert_true(check_tensor("dz", dz, g, n * Di, 1e-4));
    }
    fd_grad(scan_ref_loss, &q, q.B, n * N, g);
    for (int64_t t = 0; t < n; t++) for (int s = 0; s < N; s++) tmp[t * N + s] = dbc[t * 2 * N + s];
    assert_true(check_tensor("dB", tmp, g, n * N, 1e-4));
    fd_grad(scan_ref_loss, &q, q.C, n * N, g);
    for (int64_t t = 0; t < n; t++) for (int s = 0; s < N; s++) tmp[t * N + s] = dbc[t * 2 * N + N + s];
    assert_true(check_tensor("dC", tmp, g, n * N, 1e-4));
    fd_grad(scan_ref_loss, &q, q.Alog, (size_t)Di * N, g);
    assert_true(check_tensor("dA_log", dAl, g, (size_t)Di * N, 1e-4));
    fd_grad(scan_ref_loss, &q, q.D, Di, g);
    assert_true(check_tensor("dD", dD, g, Di, 1e-4));
    fd_grad(scan_ref_loss, &q, q.bias, Di, g);
    assert_true(check_tensor("ddt_bias", dbias, g, Di, 1e-4));
    fd_grad(scan_ref_loss, &q, q.h0, (size_t)Di * N, g);
    assert_true(check_tensor("dstate (dL/dh0)", dstate, g, (size_t)Di * N, 1e-4));

    free(x); free(dt); free(z); free(bc); free(Alog); free(D); free(bias); free(h0); free(r); free(rs); free(ss);
    free(A); free(cstates); free(state); free(y); free(y2); free(st2); free(yd); free(sd2); free(dx); free(ddt);
    free(dbc); free(dz); free(dAl); free(dD); free(dbias); free(dstate); free(q.x); free(q.dt); free(q.z); free(bcd);
    free(q.B); free(q.C); free(q.Alog); free(q.D); free(q.bias); free(q.h0); free(q.r); free(q.rs); free(g); free(tmp);
    be->destroy(be);
}

static void test_scan_bwd(void **st)
{
    (void)st;
    scan_case(37, 20, 5, 8, 0, 1, 1);
    scan_case(37, 20, 5, 8, 1, 1, 1);
    scan_case(37, 20, 5, 64, 0, 1, 0);
    scan_case(29, 33, 16, 5, 1, 0, 1);
    scan_case(9, 16, 4, 1, 0, 1, 0);
}

/* The backward over two pieces with state carry (reverse scan order) equals the whole. */
static void test_scan_pieces(void **st)
{
    (void)st;
    md_backend_t *be = md_backend_cpu_open(2);
    const md_train_ops_t *ops = md_train_ops_cpu();
    const int64_t n = 45, cut = 19;
    const int Di = 18, N = 6, T = 7;
    for (int reverse = 0; reverse < 2; reverse++) {
        float *x = rvec(n * Di, -1, 1), *dt = rvec(n * Di, -3, 0.5), *z = rvec(n * Di, -2, 2);
        float *bc = rvec(n * 2 * N, -1, 1), *D = rvec(Di, 0.5, 1.5), *bias = rvec(Di, -2, 0);
        float *A = rvec((size_t)Di * N, -5, -0.5), *dy = rvec(n * Di, -1, 1);
        uint8_t *ss = calloc(n + 1, 1);
        ss[0] = ss[n] = 1;
        ss[30] = 1;
        float *out[2][5];
        for (int mode = 0; mode < 2; mode++) {
            float *y = malloc(n * Di * 4), *dx = malloc(n * Di * 4), *ddt = malloc(n * Di * 4);
            float *dbc = malloc(n * 2 * N * 4), *dz = malloc(n * Di * 4);
            float *dA = calloc((size_t)Di * N, 4), *dD = calloc(Di, 4), *db = calloc(Di, 4);
            float *state = calloc((size_t)Di * N, 4), *dstate = calloc((size_t)Di * N, 4);
            int64_t r0s[2] = { 0, cut }, nrs[2] = { cut, n - cut };
            int np = mode ? 2 : 1;
            if (!mode) nrs[0] = n;
            float *cs[2];
            for (int p = 0; p < np; p++) cs[p] = malloc((size_t)((nrs[p] + T - 1) / T) * Di * N * 4);
            md_tscan_t d[2];
            for (int pi = 0; pi < np; pi++) {
                int p = reverse ? np - 1 - pi : pi;   /* scan order */
                int64_t r0 = r0s[p], nr = nrs[p];
                memset(&d[p], 0, sizeof d[p]);
                md_tscan_t *q = &d[p];
                q->x = x + r0 * Di; q->ldx = Di; q->dt = dt + r0 * Di; q->lddt = Di; q->B = bc + r0 * 2 * N;
                q->C = bc + r0 * 2 * N + N; q->ldbc = 2 * N; q->z = z + r0 * Di; q->ldz = Di; q->A = A; q->D = D;
                q->dt_bias = bias; q->reverse = reverse; q->T = T; q->chunk_states = cs[p]; q->state = state;
                assert_int_equal(ops->scan_fwd(be, nr, Di, N, q, y + r0 * Di, Di, 0, ss + r0), 0);
            }
            for (int pi = np - 1; pi >= 0; pi--) {
                int p = reverse ? np - 1 - pi : pi;
                int64_t r0 = r0s[p], nr = nrs[p];
                md_tscan_t *q = &d[p];
                q->dy = dy + r0 * Di; q->lddy = Di; q->dx = dx + r0 * Di; q->lddx = Di; q->ddt = ddt + r0 * Di;
                q->ldddt = Di; q->dB = dbc + r0 * 2 * N; q->dC = dbc + r0 * 2 * N + N; q->lddbc = 2 * N;
                q->dz = dz + r0 * Di; q->lddz = Di; q->dA_log = dA; q->dD = dD; q->ddt_bias = db; q->dstate = dstate;
                assert_int_equal(ops->scan_bwd(be, nr, Di, N, q, ss + r0), 0);
            }
            out[mode][0] = dx; out[mode][1] = ddt; out[mode][2] = dbc; out[mode][3] = dz; out[mode][4] = dA;
            for (int p = 0; p < np; p++) free(cs[p]);
            free(y); free(dD); free(db); free(state); free(dstate);
        }
        size_t sz[5] = { n * Di, n * Di, n * 2 * N, n * Di, (size_t)Di * N };
        const char *nm[5] = { "pieces dx", "pieces ddt", "pieces dB|dC", "pieces dz", "pieces dA_log" };
        for (int k = 0; k < 5; k++) {
            double *ref = dvec(out[0][k], sz[k]);
            assert_true(check_tensor(nm[k], out[1][k], ref, sz[k], 1e-6));
            free(ref);
            free(out[0][k]);
            free(out[1][k]);
        }
        free(x); free(dt); free(z); free(bc); free(D); free(bias); free(A); free(dy); free(ss);
    }
    be->destroy(be);
}

/* --- conv ----------------------------------------------------------------------------------- */

typedef struct {
    int64_t n;
    int Cn, K, reverse;
    double *x, *w, *b, *state, *r, *rs;
    const uint8_t *ss;
} conv_ref_t;

static double conv_ref_loss(void *ud)
{
    conv_ref_t *q = ud;
    const int64_t n = q->n;
    const int Cn = q->Cn, K = q->K, P = K - 1;
    double L = 0;
    for (int c = 0; c < Cn; c++) {
        /* ext[e], e = q + P: the inputs in scan order, zeroed across starts */
        double *ext = malloc((n + P) * sizeof *ext);
        for (int j = 0; j < P; j++) ext[j] = q->state[j * Cn + c];
        for (int64_t u = 0; u < n; u++) ext[u + P] = q->x[(q->reverse ? n - 1 - u : u) * Cn + c];
        for (int64_t u = 0; u < n; u++) {
            int64_t t = q->reverse ? n - 1 - u : u;
            if (q->ss && (q->reverse ? q->ss[n - u] : q->ss[u]))
                for (int64_t e = 0; e < u + P; e++) ext[e] = 0;
            double a = q->b[c];
            for (int k = 0; k < K; k++) a += q->w[c * K + k] * ext[u + k];
            L += q->r[t * Cn + c] * dsilu(a);
        }
        for (int j = 0; j < P; j++) L += q->rs[j * Cn + c] * ext[n + j];
        free(ext);
    }
    return L;
}

static void conv_case(int64_t n, int Cn, int K, int reverse, int with_starts)
{
    printf("# conv n=%lld Cn=%d K=%d reverse=%d starts=%d\n", (long long)n, Cn, K, reverse, with_starts);
    md_backend_t *be = md_backend_cpu_open(2);
    const md_train_ops_t *ops = md_train_ops_cpu();
    const int P = K - 1;
    float *x = rvec(n * 2 * Cn, -1, 1), *w = rvec((size_t)Cn * K, -1, 1), *b = rvec(Cn, -0.5, 0.5);
    float *state = rvec((size_t)P * Cn, -1, 1), *r = rvec(n * Cn, -1, 1), *rs = rvec((size_t)P * Cn, -1, 1);
    uint8_t *ss = calloc(n + 1, 1);
    if (with_starts) { ss[n / 2] = 1; ss[n / 2 + 2] = 1; }
    /* forward vs the backend */
    float *st2 = malloc((size_t)P * Cn * 4 + 4), *out = malloc(n * Cn * 4);
    memcpy(st2, state, (size_t)P * Cn * 4);
    assert_int_equal(be->conv_silu(be, n, Cn, K, x, 2 * Cn, w, b, out, st2, reverse, ss), 0);
    conv_ref_t q = { .n = n, .Cn = Cn, .K = K, .reverse = reverse, .ss = ss };
    q.x = malloc(n * Cn * 8);
    for (int64_t i = 0; i < n; i++) for (int c = 0; c < Cn; c++) q.x[i * Cn + c] = x[i * 2 * Cn + c];
    q.w = dvec(w, (size_t)Cn * K); q.b = dvec(b, Cn); q.state = dvec(state, (size_t)P * Cn);
    q.r = dvec(r, n * Cn); q.rs = dvec(rs, (size_t)P * Cn);
    /* loss from the backend's forward equals the reference loss */
    double Lb = 0;
    for (int64_t i = 0; i < n * Cn; i++) Lb += (double)r[i] * out[i];
    for (int i = 0; i < P * Cn; i++) Lb += (double)rs[i] * st2[i];
    double Lr = conv_ref_loss(&q);
    printf("#   forward loss backend %.9g reference %.9g\n", Lb, Lr);
    assert_true(fabs(Lb - Lr) <= 1e-5 * (1 + fabs(Lr)));

    float *dx = malloc(n * 2 * Cn * 4), *dw = calloc((size_t)Cn * K, 4), *db = calloc(Cn, 4);
    float *dstate = malloc((size_t)P * Cn * 4 + 4);
    memcpy(dstate, rs, (size_t)P * Cn * 4);
    for (int64_t i = 0; i < n * 2 * Cn; i++) dx[i] = 7.0f; /* accumulate onto 7 */
    assert_int_equal(ops->conv_silu_bwd(be, n, Cn, K, x, 2 * Cn, w, b, r, dx, 2 * Cn, 1, dw, db, state, dstate, reverse,
                                        ss), 0);
    double *g = malloc((n * Cn + (size_t)Cn * K) * 8);
    float *tmp = calloc(n * Cn, 4);
    fd_grad(conv_ref_loss, &q, q.x, n * Cn, g);
    for (int64_t i = 0; i < n; i++) for (int c = 0; c < Cn; c++) tmp[i * Cn + c] = dx[i * 2 * Cn + c] - 7.0f;
    assert_true(check_tensor("dx", tmp, g, n * Cn, 1e-4));
    for (int64_t i = 0; i < n; i++) for (int c = 0; c < Cn; c++) assert_true(dx[i * 2 * Cn + Cn + c] == 7.0f);
    fd_grad(conv_ref_loss, &q, q.w, (size_t)Cn * K, g);
    assert_true(check_tensor("dw", dw, g, (size_t)Cn * K, 1e-4));
    fd_grad(conv_ref_loss, &q, q.b, Cn, g);
    assert_true(check_tensor("db", db, g, Cn, 1e-4));
    if (P > 0) {
        fd_grad(conv_ref_loss, &q, q.state, (size_t)P * Cn, g);
        assert_true(check_tensor("dstate", dstate, g, (size_t)P * Cn, 1e-4));
    }
    free(x); free(w); free(b); free(state); free(r); free(rs); free(ss); free(st2); free(out);
    free(q.x); free(q.w); free(q.b); free(q.state); free(q.r); free(q.rs); free(dx); free(dw); free(db); free(dstate);
    free(g); free(tmp);
    be->destroy(be);
}

static void test_conv_bwd(void **st)
{
    (void)st;
    conv_case(23, 20, 4, 0, 1);
    conv_case(23, 20, 4, 1, 1);
    conv_case(19, 17, 4, 0, 0);
    conv_case(2, 5, 4, 1, 0);   /* a piece shorter than K-1 */
    conv_case(11, 9, 3, 1, 1);
}

/* Conv backward over pieces with dstate carry equals the whole. */
static void test_conv_pieces(void **st)
{
    (void)st;
    md_backend_t *be = md_backend_cpu_open(2);
    const md_train_ops_t *ops = md_train_ops_cpu();
    const int64_t n = 31;
    const int Cn = 21, K = 4, P = 3;
    const int64_t cuts[] = { 0, 2, 13, 31 };   /* pieces of 2, 11, 18 */
    for (int reverse = 0; reverse < 2; reverse++) {
        float *x = rvec(n * Cn, -1, 1), *w = rvec((size_t)Cn * K, -1, 1), *b = rvec(Cn, -0.5, 0.5), *r = rvec(n * Cn, -1, 1);
        uint8_t *ss = calloc(n + 1, 1);
        ss[0] = ss[n] = 1;
        ss[14] = 1;
        float *res[2][3];
        for (int mode = 0; mode < 2; mode++) {
            float *dx = malloc(n * Cn * 4), *dw = calloc((size_t)Cn * K, 4), *db = calloc(Cn, 4);
            float *states[3], *state = calloc((size_t)P * Cn, 4), *dstate = calloc((size_t)P * Cn, 4);
            float *out = malloc(n * Cn * 4);
            int np = mode ? 3 : 1;
            int64_t r0[3], nr[3];
            for (int p = 0; p < np; p++) {
                r0[p] = mode ? cuts[p] : 0;
                nr[p] = mode ? cuts[p + 1] - cuts[p] : n;
            }
            for (int pi = 0; pi < np; pi++) {
                int p = reverse ? np - 1 - pi : pi;
                states[p] = malloc((size_t)P * Cn * 4);
                memcpy(states[p], state, (size_t)P * Cn * 4);
                assert_int_equal(be->conv_silu(be, nr[p], Cn, K, x + r0[p] * Cn, Cn, w, b, out + r0[p] * Cn, state, reverse,
                                               ss + r0[p]), 0);
            }
            for (int pi = np - 1; pi >= 0; pi--) {
                int p = reverse ? np - 1 - pi : pi;
                assert_int_equal(ops->conv_silu_bwd(be, nr[p], Cn, K, x + r0[p] * Cn, Cn, w, b, r + r0[p] * Cn,
                                                    dx + r0[p] * Cn, Cn, 0, dw, db, states[p], dstate, reverse,
                                                    ss + r0[p]), 0);
            }
            for (int p = 0; p < np; p++) free(states[p]);
            res[mode][0] = dx; res[mode][1] = dw; res[mode][2] = db;
            free(state); free(dstate); free(out);
        }
        size_t sz[3] = { n * Cn, (size_t)Cn * K, Cn };
        for (int k = 0; k < 3; k++) {
            double *ref = dvec(res[0][k], sz[k]);
            assert_true(check_tensor(k == 0 ? "pieces conv dx" : k == 1 ? "pieces conv dw" : "pieces conv db", res[1][k],
                                     ref, sz[k], 1e-6));
            free(ref);
            free(res[0][k]);
            free(res[1][k]);
        }
        free(x); free(w); free(b); free(r); free(ss);
    }
    be->destroy(be);
}

/* --- add + norm ----------------------------------------------------------------------------- */

typedef struct {
    int64_t n;
    int W, group, swap, rms;
    double *h, *res, *w, *b, *r, *rr;
    float eps;
} norm_ref_t;

static double norm_ref_loss(void *ud)
{
    norm_ref_t *q = ud;
    const int W = q->W, half = W / 2;
    double L = 0, s[256];
    for (int64_t i = 0; i < q->n; i++) {
        for (int j = 0; j < W; j++) {
            int src = q->swap ? (j < half ? j + half : j - half) : j;
            s[j] = q->h[i * W + src] + q->res[i * W + src];
            L += q->rr[i * W + j] * s[j];
        }
        for (int g = 0; g < W; g += q->group) {
            double mean = 0, var = 0;
            if (!q->rms) { for (int j = g; j < g + q->group; j++) mean += s[j]; mean /= q->group; }
            for (int j = g; j < g + q->group; j++) var += (s[j] - mean) * (s[j] - mean);
            var /= q->group;
            double rstd = 1 / sqrt(var + q->eps);
            for (int j = g; j < g + q->group; j++)
                L += q->r[i * W + j] * ((s[j] - mean) * rstd * q->w[j] + (q->rms ? 0 : q->b[j]));
        }
    }
    return L;
}

static void test_add_norm_bwd(void **st)
{
    (void)st;
    md_backend_t *be = md_backend_cpu_open(2);
    const md_train_ops_t *ops = md_train_ops_cpu();
    for (int mode = 0; mode < 4; mode++) {
        int swap = mode & 1, rms = !(mode & 2);
        const int64_t n = 70;   /* two reduction blocks */
        const int W = 16, group = 8;
        printf("# add_norm swap=%d rms=%d\n", swap, rms);
        float *h = rvec(n * W, -1, 1), *res = rvec(n * W, -2, 2), *w = rvec(W, 0.5, 1.5), *b = rvec(W, -0.5, 0.5);
        float *r = rvec(n * W, -1, 1), *rr = rvec(n * W, -1, 1);
        float *s = malloc(n * W * 4), *out = malloc(n * W * 4), *dsum = malloc(n * W * 4);
        float *dw = calloc(W, 4), *db = calloc(W, 4);
        assert_int_equal(be->add_norm(be, n, W, group, h, res, s, out, w, rms ? NULL : b, 1e-5f, swap, rms), 0);
        memcpy(dsum, rr, n * W * 4);   /* in place: dsum aliases dres */
        assert_int_equal(ops->add_norm_bwd(be, n, W, group, s, r, dsum, dsum, w, dw, rms ? NULL : db, 1e-5f, swap, rms), 0);
        norm_ref_t q = { .n = n, .W = W, .group = group, .swap = swap, .rms = rms, .eps = 1e-5f };
        q.h = dvec(h, n * W); q.res = dvec(res, n * W); q.w = dvec(w, W); q.b = dvec(b, W); q.r = dvec(r, n * W);
        q.rr = dvec(rr, n * W);
        double *g = malloc(n * W * 8);
        fd_grad(norm_ref_loss, &q, q.h, n * W, g);
        assert_true(check_tensor("dh", dsum, g, n * W, 1e-4));
        fd_grad(norm_ref_loss, &q, q.res, n * W, g);
        assert_true(check_tensor("dres", dsum, g, n * W, 1e-4));
        fd_grad(norm_ref_loss, &q, q.w, W, g);
        assert_true(check_tensor("dw", dw, g, W, 1e-4));
        if (!rms) {
            fd_grad(norm_ref_loss, &q, q.b, W, g);
            assert_true(check_tensor("db", db, g, W, 1e-4));
        }
        free(h); free(res); free(w); free(b); free(r); free(rr); free(s); free(out); free(dsum); free(dw); free(db);
        free(q.h); free(q.res); free(q.w); free(q.b); free(q.r); free(q.rr); free(g);
    }
    be->destroy(be);
}

/* --- GEMMs, embedding, mul, loss, optimizer, small ops --------------------------------------- */

static void test_gemm_bwd(void **st)
{
    (void)st;
    md_backend_t *be = md_backend_cpu_open(2);
    const md_train_ops_t *ops = md_train_ops_cpu();
    const int64_t M = 300;
    const int N = 70, K = 90, ldc = 75, lda = 95;
    float *dC = rvec(M * ldc, -1, 1), *Wm = rvec((size_t)N * K, -1, 1), *A = rvec(M * lda, -1, 1);
    void *Wh = be->upload_matrix(be, Wm, N, K);
    float *dA = rvec(M * lda, -1, 1), *dA0 = malloc(M * lda * 4);
    memcpy(dA0, dA, M * lda * 4);
    float *dW = rvec((size_t)N * K, -1, 1), *dW0 = malloc((size_t)N * K * 4);
    memcpy(dW0, dW, (size_t)N * K * 4);
    for (int acc = 0; acc < 2; acc++) {
        memcpy(dA, dA0, M * lda * 4);
        assert_int_equal(ops->gemm_da(be, M, N, K, dC, ldc, 1, Wh, dA, lda, acc), 0);
        double *ref = malloc(M * K * 8);
        float *got = malloc(M * K * 4);
        for (int64_t i = 0; i < M; i++)
            for (int k = 0; k < K; k++) {
                double s = acc ? dA0[i * lda + k] : 0;
                for (int j = 0; j < N; j++) s += (double)dC[i * ldc + j] * Wm[j * K + k];
                ref[i * K + k] = s;
                got[i * K + k] = dA[i * lda + k];
            }
        assert_true(check_tensor(acc ? "gemm_da (+=)" : "gemm_da", got, ref, M * K, 1e-6));
        for (int64_t i = 0; i < M; i++) for (int k = K; k < lda; k++) assert_true(dA[i * lda + k] == dA0[i * lda + k]);
        free(ref);
        free(got);
    }
    assert_int_equal(ops->gemm_dw(be, M, N, K, dC, ldc, 1, A, lda, dW), 0);
    double *ref = malloc((size_t)N * K * 8);
    for (int j = 0; j < N; j++)
        for (int k = 0; k < K; k++) {
            double s = dW0[j * K + k];
            for (int64_t i = 0; i < M; i++) s += (double)dC[i * ldc + j] * A[i * lda + k];
            ref[j * K + k] = s;
        }
    assert_true(check_tensor("gemm_dw (+=)", dW, ref, (size_t)N * K, 1e-6));
    free(ref);
    free(dC); free(Wm); free(A); free(dA); free(dA0); free(dW); free(dW0);
    be->free(be, Wh);
    be->destroy(be);
}

static void test_embed_mul_bwd(void **st)
{
    (void)st;
    md_backend_t *be = md_backend_cpu_open(2);
    const md_train_ops_t *ops = md_train_ops_cpu();
    const int64_t n = 50;
    const int W = 70, V = 6;
    int32_t ids[50];
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(urand() * V);
    float *g = rvec(n * W, -1, 1), *t = rvec((size_t)V * W, -1, 1);
    double *ref = dvec(t, (size_t)V * W);
    for (int i = 0; i < n; i++) for (int j = 0; j < W; j++) ref[ids[i] * W + j] += g[i * W + j];
    assert_int_equal(ops->embed_bwd(be, n, W, ids, g, t), 0);
    assert_true(check_tensor("embed_bwd", t, ref, (size_t)V * W, 1e-6));
    float *a = rvec(n * W, -1, 1), *b = rvec(n * W, -1, 1), *da = malloc(n * W * 4), *db = malloc(n * W * 4);
    assert_int_equal(ops->mul_bwd(be, n, W, g, W, a, W, b, W, da, W, db, W), 0);
    for (int64_t i = 0; i < n * W; i++) {
        assert_true(da[i] == g[i] * b[i]);
        assert_true(db[i] == g[i] * a[i]);
    }
    free(g); free(t); free(ref); free(a); free(b); free(da); free(db);
    be->destroy(be);
}

typedef struct {
    int64_t n;
    int V;
    double *l;
    const int32_t *tg;
    const float *w;
} xent_ref_t;

static double xent_ref_loss(void *ud)
{
    xent_ref_t *q = ud;
    double L = 0;
    for (int64_t i = 0; i < q->n; i++) {
        if (q->tg[i] == -100) continue;
        double mx = -1e300, se = 0;
        for (int v = 0; v < q->V; v++) if (q->l[i * q->V + v] > mx) mx = q->l[i * q->V + v];
        for (int v = 0; v < q->V; v++) se += exp(q->l[i * q->V + v] - mx);
        L += (q->w ? q->w[i] : 1.0) * (mx + log(se) - q->l[i * q->V + q->tg[i]]);
    }
    return L;
}

static void test_xent(void **st)
{
    (void)st;
    md_backend_t *be = md_backend_cpu_open(2);
    const md_train_ops_t *ops = md_train_ops_cpu();
    const int64_t n = 600;
    const int V = 16;
    float *l = rvec(n * V, -4, 4), *w = rvec(n, 0, 1), *dl = malloc(n * V * 4);
    int32_t *tg = malloc(n * sizeof *tg);
    int64_t cnt = 0;
    for (int64_t i = 0; i < n; i++) {
        tg[i] = urand() < 0.3 ? -100 : (int32_t)(urand() * V);
        cnt += tg[i] != -100;
    }
    for (int pass = 0; pass < 2; pass++) {
        const float *wp = pass ? w : NULL;
        double stats[4] = { 0, 0, 0, 0 };
        assert_int_equal(ops->xent(be, n, V, l, V, tg, wp, -100, 0.5f, dl, V, stats), 0);
        xent_ref_t q = { .n = n, .V = V, .l = dvec(l, n * V), .tg = tg, .w = wp };
        double L = xent_ref_loss(&q), sw = 0, corr = 0;
        for (int64_t i = 0; i < n; i++) {
            if (tg[i] == -100) continue;
            sw += wp ? wp[i] : 1;
            int am = 0;
            for (int v = 1; v < V; v++) if (l[i * V + v] > l[i * V + am]) am = v;
            corr += am == tg[i] ? (wp ? wp[i] : 1) : 0;
        }
        printf("# xent weights=%d: loss %.9g ref %.9g\n", pass, stats[0], L);
        assert_true(fabs(stats[0] - L) <= 1e-9 * fabs(L));
        assert_true(fabs(stats[1] - sw) <= 1e-9 * sw);
        assert_true(fabs(stats[2] - corr) <= 1e-9 * (corr + 1));
        assert_true(stats[3] == (double)cnt);
        double *g = malloc(n * V * 8);
        fd_grad(xent_ref_loss, &q, q.l, n * V, g);
        for (int64_t i = 0; i < n * V; i++) g[i] *= 0.5;
        assert_true(check_tensor("dlogits", dl, g, n * V, 1e-4));
        free(g);
        free(q.l);
    }
    free(l); free(w); free(dl); free(tg);
    be->destroy(be);
}

static void test_adamw(void **st)
{
    (void)st;
    md_backend_t *be = md_backend_cpu_open(2);
    const md_train_ops_t *ops = md_train_ops_cpu();
    const int64_t n = 1000;
    float *p = rvec(n, -1, 1), *m = calloc(n, 4), *v = calloc(n, 4);
    double *pd = dvec(p, n), *md_ = calloc(n, 8), *vd = calloc(n, 8);
    for (int step = 1; step <= 5; step++) {
        float *g = rvec(n, -1, 1);
        md_adamw_t hp = { .lr = 8e-3 * step, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = step == 3 ? 0 : 0.1,
                          .gscale = 0.7, .step = step };
        assert_int_equal(ops->adamw(be, n, p, g, m, v, &hp), 0);
        /* torch.optim.AdamW, written out */
        for (int64_t i = 0; i < n; i++) {
            double gi = g[i] * 0.7;
            pd[i] *= 1 - hp.lr * hp.weight_decay;
            md_[i] = 0.9 * md_[i] + 0.1 * gi;
            vd[i] = 0.95 * vd[i] + 0.05 * gi * gi;
            double bc1 = 1 - pow(0.9, step), bc2 = 1 - pow(0.95, step);
            pd[i] -= hp.lr / bc1 * md_[i] / (sqrt(vd[i]) / sqrt(bc2) + 1e-8);
        }
        free(g);
    }
    assert_true(check_tensor("adamw params after 5 steps", p, pd, n, 1e-6));
    assert_true(check_tensor("adamw m", m, md_, n, 1e-6));
    assert_true(check_tensor("adamw v", v, vd, n, 1e-6));
    double acc = 1.0, ref = 1.0;
    assert_int_equal(ops->sumsq(be, n, p, &acc), 0);
    for (int64_t i = 0; i < n; i++) ref += (double)p[i] * p[i];
    assert_true(fabs(acc - ref) <= 1e-12 * ref);
    free(p); free(m); free(v); free(pd); free(md_); free(vd);
    be->destroy(be);
}

static void test_small_ops(void **st)
{
    (void)st;
    md_backend_t *be = md_backend_cpu_open(2);
    const md_train_ops_t *ops = md_train_ops_cpu();
    float src[3 * 4] = { 0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23 }, dst[3 * 5];
    int32_t map[3] = { 2, 0, 1 };
    for (int i = 0; i < 15; i++) dst[i] = 100;
    assert_int_equal(ops->permute(be, 3, 4, src, 4, dst, 5, map, 1, 1), 0);
    assert_true(dst[0] == 123 && dst[3] == 120 && dst[4] == 100 && dst[5] == 103 && dst[10 + 1] == 112);
    float mat[12];
    assert_int_equal(ops->set_matrix(be, mat, 3, 4, src, 4, NULL, 1), 0);
    assert_true(mat[0] == 3 && mat[4] == 13 && mat[11] == 20);
    float e[2] = { 0, logf(3) }, ne[2];
    assert_int_equal(ops->neg_exp(be, 2, e, ne), 0);
    assert_true(ne[0] == -1.0f && fabsf(ne[1] + 3) < 1e-6f);
    be->destroy(be);
}

/* --- the whole model: a double-precision reference written from model-spec 2.2-2.6 ------------ */

typedef struct {
    md_config_t cfg;
    const md_weights_t *w;   /* table (offsets) */
    double *p;               /* parameters, table order */
    const int32_t *ids, *tg;
    const float *wt;
    int64_t n;
    const int64_t *off;
    int nseq;
} mref_t;

static const double *prm(const mref_t *r, md_pkind_t k, int layer, int dir)
{
    const md_param_t *q = md_weights_find(r->w, k, layer, dir);
    return q ? r->p + (q->data - r->w->slab) : NULL;
}

/* One Mamba direction on u [L, d] -> out [L, d] (forward scan, causal conv). */
static void ref_mamba(const mref_t *r, int li, int k, const double *u, int64_t L, double *out)
{
    const md_config_t *c = &r->cfg;
    const int d = c->d_model, Di = c->d_inner, N = c->d_state, R = c->dt_rank, K = c->d_conv, XD = R + 2 * N;
    const double *Win = prm(r, MD_P_IN_PROJ, li, k), *Wout = prm(r, MD_P_OUT_PROJ, li, k);
    const double *cw = prm(r, MD_P_CONV_W, li, k), *cb = prm(r, MD_P_CONV_B, li, k), *Wx = prm(r, MD_P_X_PROJ, li, k);
    const double *Wdt = prm(r, MD_P_DT_W, li, k), *bdt = prm(r, MD_P_DT_B, li, k), *Al = prm(r, MD_P_A_LOG, li, k);
    const double *Dp = prm(r, MD_P_D, li, k);
    double *xz = calloc(L * 2 * Di, 8), *xc = calloc(L * Di, 8), *xd = calloc(L * XD, 8), *y = calloc(L * Di, 8);
    for (int64_t t = 0; t < L; t++)
        for (int o = 0; o < 2 * Di; o++) {
            double s = 0;
            for (int j = 0; j < d; j++) s += Win[o * d + j] * u[t * d + j];
            xz[t * 2 * Di + o] = s;
        }
    for (int64_t t = 0; t < L; t++)
        for (int ch = 0; ch < Di; ch++) {
            double a = cb ? cb[ch] : 0;
            for (int j = 0; j < K; j++) {
                int64_t tt = t - (K - 1) + j;
                if (tt >= 0) a += cw[ch * K + j] * xz[tt * 2 * Di + ch];
            }
            xc[t * Di + ch] = dsilu(a);
        }
    for (int64_t t = 0; t < L; t++)
        for (int o = 0; o < XD; o++) {
            double s = 0;
            for (int ch = 0; ch < Di; ch++) s += Wx[o * Di + ch] * xc[t * Di + ch];
            xd[t * XD + o] = s;
        }
    for (int ch = 0; ch < Di; ch++) {
        double h[64] = { 0 };
        for (int64_t t = 0; t < L; t++) {
            double v = bdt[ch];
            for (int j = 0; j < R; j++) v += Wdt[ch * R + j] * xd[t * XD + j];
            double dl = dsoftplus(v), xv = xc[t * Di + ch], o = Dp[ch] * xv;
            for (int s = 0; s < N; s++) {
                h[s] = exp(-dl * exp(Al[ch * N + s])) * h[s] + dl * xd[t * XD + R + s] * xv;
                o += h[s] * xd[t * XD + R + N + s];
            }
            y[t * Di + ch] = o * dsilu(xz[t * 2 * Di + Di + ch]);
        }
    }
    for (int64_t t = 0; t < L; t++)
        for (int o = 0; o < d; o++) {
            double s = 0;
            for (int ch = 0; ch < Di; ch++) s += Wout[o * Di + ch] * y[t * Di + ch];
            out[t * d + o] = s;
        }
    free(xz); free(xc); free(xd); free(y);
}

static void flip_L(const double *a, int64_t L, int d, double *b)
{
    for (int64_t t = 0; t < L; t++) memcpy(b + t * d, a + (L - 1 - t) * d, d * sizeof *b);
}
static void flip_LC(const double *a, int64_t L, int d, double *b)
{
    for (int64_t t = 0; t < L; t++) for (int j = 0; j < d; j++) b[t * d + j] = a[(L - 1 - t) * d + d - 1 - j];
}

/* BiMamba (or Mamba for the causal model) of layer li on u [L, d]. */
static void ref_bim(const mref_t *r, int li, const double *u, int64_t L, double *out)
{
    const md_config_t *c = &r->cfg;
    const int d = c->d_model;
    ref_mamba(r, li, 0, u, L, out);
    if (c->arch == MD_ARCH_MAMBA || !c->bidirectional) return;
    double *fu = calloc(L * d, 8), *o2 = calloc(L * d, 8), *fo = calloc(L * d, 8);
    flip_L(u, L, d, fu);
    ref_mamba(r, li, 1, fu, L, o2);
    flip_L(o2, L, d, fo);
    for (int64_t i = 0; i < L * d; i++) out[i] = c->bidir_strategy == MD_BIDIR_ADD ? out[i] + fo[i] : out[i] * fo[i];
    free(fu); free(o2); free(fo);
}

/* norm over groups of d: (s - mean?) * rstd * w + b */
static void ref_norm(const mref_t *r, const double *s, int64_t L, const double *w, const double *b, double *o)
{
    const md_config_t *c = &r->cfg;
    const int d = c->d_model;
    for (int64_t t = 0; t < L; t++) {
        double mean = 0, var = 0;
        if (!c->rms_norm) { for (int j = 0; j < d; j++) mean += s[t * d + j]; mean /= d; }
        for (int j = 0; j < d; j++) var += (s[t * d + j] - mean) * (s[t * d + j] - mean);
        double rstd = 1 / sqrt(var / d + c->norm_eps);
        for (int j = 0; j < d; j++) o[t * d + j] = (s[t * d + j] - mean) * rstd * w[j] + (b ? b[j] : 0);
    }
}

/* Logits [L, V] of one sequence. */
static void ref_logits(const mref_t *r, const int32_t *ids, int64_t L, double *logits)
{
    const md_config_t *c = &r->cfg;
    const int d = c->d_model, V = c->vocab_size;
    const double *E = prm(r, MD_P_EMBED, -1, -1), *wf = prm(r, MD_P_NORM_F, -1, -1), *bf = prm(r, MD_P_NORM_F_B, -1, -1);
    const int ps = c->arch == MD_ARCH_CADUCEUS && c->rcps;
    if (!ps) {
        double *h = malloc(L * d * 8), *res = calloc(L * d, 8), *u = malloc(L * d * 8);
        for (int64_t t = 0; t < L; t++) memcpy(h + t * d, E + ids[t] * d, d * 8);
        for (int li = 0; li < c->n_layer; li++) {
            for (int64_t i = 0; i < L * d; i++) res[i] += h[i];
            ref_norm(r, res, L, prm(r, MD_P_NORM, li, -1), c->rms_norm ? NULL : prm(r, MD_P_NORM_B, li, -1), u);
            ref_bim(r, li, u, L, h);
        }
        for (int64_t i = 0; i < L * d; i++) res[i] += h[i];
        ref_norm(r, res, L, wf, bf, u);
        for (int64_t t = 0; t < L; t++)
            for (int v = 0; v < V; v++) {
                double s = 0;
                for (int j = 0; j < d; j++) s += u[t * d + j] * E[v * d + j];
                logits[t * V + v] = s;
            }
        free(h); free(res); free(u);
        return;
    }
    /* PS: hidden [L, 2d] = [fwd | rc] */
    const int W = 2 * d;
    double *h = malloc(L * W * 8), *res = calloc(L * W, 8), *tmp = malloc(L * d * 8), *tmp2 = malloc(L * d * 8);
    double *A = malloc(L * d * 8), *Bv = malloc(L * d * 8), *nA = malloc(L * d * 8), *nB = malloc(L * d * 8);
    double *oA = malloc(L * d * 8), *oB = malloc(L * d * 8);
    /* embedding: [E[ids] | rc(E[comp(flip(ids))])] */
    for (int64_t t = 0; t < L; t++) memcpy(h + t * W, E + ids[t] * d, d * 8);
    for (int64_t t = 0; t < L; t++) memcpy(tmp + t * d, E + c->complement_map[ids[L - 1 - t]] * d, d * 8);
    flip_LC(tmp, L, d, tmp2);
    for (int64_t t = 0; t < L; t++) memcpy(h + t * W + d, tmp2 + t * d, d * 8);
    int first = 1;
    for (int li = 0; li < c->n_layer; li++) {
        const double *w = prm(r, MD_P_NORM, li, -1), *b = c->rms_norm ? NULL : prm(r, MD_P_NORM_B, li, -1);
        const int sw = c->fused_add_norm;
        for (int64_t t = 0; t < L; t++)
            for (int j = 0; j < d; j++) {
                double hi = h[t * W + j], hr = h[t * W + d + j];
                double ri = first ? 0 : res[t * W + j], rr = first ? 0 : res[t * W + d + j];
                A[t * d + j] = sw ? hr + rr : hi + ri;
                Bv[t * d + j] = sw ? hi + ri : hr + rr;
            }
        first = 0;
        for (int64_t t = 0; t < L; t++) { memcpy(res + t * W, A + t * d, d * 8); memcpy(res + t * W + d, Bv + t * d, d * 8); }
        ref_norm(r, A, L, w, b, nA);
        flip_LC(Bv, L, d, tmp);
        ref_norm(r, tmp, L, w, b, tmp2);
        flip_LC(tmp2, L, d, nB);
        ref_bim(r, li, nA, L, oA);
        flip_LC(nB, L, d, tmp);
        ref_bim(r, li, tmp, L, tmp2);
        flip_LC(tmp2, L, d, oB);
        for (int64_t t = 0; t < L; t++) { memcpy(h + t * W, oA + t * d, d * 8); memcpy(h + t * W + d, oB + t * d, d * 8); }
    }
    for (int64_t t = 0; t < L; t++)
        for (int j = 0; j < d; j++) {
            A[t * d + j] = h[t * W + j] + res[t * W + j];
            Bv[t * d + j] = h[t * W + d + j] + res[t * W + d + j];
        }
    double *wflip = malloc(d * 8), *bflip = malloc(d * 8);
    for (int j = 0; j < d; j++) { wflip[j] = wf[d - 1 - j]; bflip[j] = bf ? bf[d - 1 - j] : 0; }
    ref_norm(r, A, L, wf, bf, nA);
    ref_norm(r, Bv, L, wflip, bf ? bflip : NULL, nB);
    for (int64_t t = 0; t < L; t++)
        for (int v = 0; v < V; v++) {
            double s = 0;
            const double *e = E + v * d, *ec = E + c->complement_map[v] * d;
            for (int j = 0; j < d; j++) s += nA[t * d + j] * e[j] + nB[t * d + d - 1 - j] * ec[j];
            logits[t * V + v] = s;
        }
    free(h); free(res); free(tmp); free(tmp2); free(A); free(Bv); free(nA); free(nB); free(oA); free(oB);
    free(wflip); free(bflip);
}

static double mref_loss(void *ud)
{
    mref_t *r = ud;
    const int V = r->cfg.vocab_size;
    double L = 0;
    for (int i = 0; i < r->nseq; i++) {
        int64_t o = r->off[i], len = r->off[i + 1] - o;
        double *lg = malloc(len * V * 8);
        ref_logits(r, r->ids + o, len, lg);
        for (int64_t t = 0; t < len; t++) {
            int tg = r->tg[o + t];
            if (tg == MD_IGNORE) continue;
            double mx = -1e300, se = 0;
            for (int v = 0; v < V; v++) if (lg[t * V + v] > mx) mx = lg[t * V + v];
            for (int v = 0; v < V; v++) se += exp(lg[t * V + v] - mx);
            L += (r->wt ? r->wt[o + t] : 1.0) * (mx + log(se) - lg[t * V + tg]);
        }
        free(lg);
    }
    return L;
}

typedef enum { V_PH, V_PS, V_MAMBA, V_PH_UNTIED, V_PH_EW, V_PS_LN } tvariant_t;

static md_weights_t *tiny_model(tvariant_t v, int d, int n_layer)
{
    md_config_t c;
    md_config_init(&c);
    c.d_model = d;
    c.n_layer = n_layer;
    c.d_state = 4;
    if (v == V_PS || v == V_PS_LN) c.rcps = 1;
    if (v == V_MAMBA) c.arch = MD_ARCH_MAMBA;
    if (v == V_PH_UNTIED) c.bidir_weight_tie = 0;
    if (v == V_PH_EW) c.bidir_strategy = MD_BIDIR_EW_MULTIPLY;
    if (v == V_PS_LN) c.rms_norm = 0;
    assert_int_equal(md_config_finish(&c, "test"), 0);
    md_weights_t *w = md_weights_alloc(&c);
    assert_non_null(w);
    md_weights_init(w, 7);
    /* move every parameter off its special initial value */
    for (size_t i = 0; i < w->numel; i++) w->slab[i] += frand(-0.2, 0.2);
    const md_param_t *E = md_weights_find(w, MD_P_EMBED, -1, -1);
    for (size_t i = 0; i < E->numel; i++) E->data[i] = frand(-1, 1);
    /* time steps around 0.3-1 so that dt_proj and A_log get gradients well above rounding */
    for (int i = 0; i < w->n; i++)
        if (w->p[i].kind == MD_P_DT_B)
            for (size_t j = 0; j < w->p[i].numel; j++) w->p[i].data[j] = frand(-1.5, 0.5);
    /* ew_multiply multiplies two small mixer outputs: larger out_proj weights keep its
     * gradients well above rounding */
    if (v == V_PH_EW)
        for (int i = 0; i < w->n; i++)
            if (w->p[i].kind == MD_P_OUT_PROJ)
                for (size_t j = 0; j < w->p[i].numel; j++) w->p[i].data[j] = frand(-0.6, 0.6);
    return w;
}

static const char *vname(tvariant_t v)
{
    static const char *const n[] = { "Ph", "PS", "Mamba", "Ph untied", "Ph ew_multiply", "PS LayerNorm" };
    return n[v];
}

/* A random packed batch: two sequences (lengths l1, l2), ids over A/C/G/T/[MASK]/[PAD]/N. */
typedef struct {
    int32_t ids[128], tg[128];
    float wt[128];
    int64_t off[3], n;
} tbatch_t;

static void tiny_batch(tbatch_t *b, int64_t l1, int64_t l2, int V)
{
    static const int32_t pool[] = { 7, 8, 9, 10, 3, 4, 11, 7, 8, 9, 10 };
    b->n = l1 + l2;
    b->off[0] = 0; b->off[1] = l1; b->off[2] = l1 + l2;
    for (int64_t i = 0; i < b->n; i++) {
        b->ids[i] = pool[(int)(urand() * 11)];
        b->tg[i] = urand() < 0.3 ? MD_IGNORE : (int32_t)(urand() * V);
        b->wt[i] = frand(0.1, 1.0);
    }
}

static void model_grad_case(tvariant_t v, int d, int n_layer, int64_t l1, int64_t l2, int T, int recompute)
{
    printf("# model gradient: %s d=%d layers=%d L=%lld+%lld scan chunk %d, %s\n", vname(v), d, n_layer, (long long)l1,
           (long long)l2, T, recompute ? "forward scan recomputed" : "chunk states kept");
    rng_s = 1000 + 37 * (uint64_t)v + (uint64_t)d + 7 * (uint64_t)n_layer + (uint64_t)T;   /* order independent */
    md_weights_t *w = tiny_model(v, d, n_layer);
    md_backend_t *be = md_backend_cpu_open(2);
    md_train_opts_t to = { .scan_chunk = T, .recompute_scan = recompute };
    md_train_t *t = md_train_create(w, be, &to);
    assert_non_null(t);
    const int V = w->cfg.vocab_size;
    tbatch_t tb;
    tiny_batch(&tb, l1, l2, V);
    md_batch_t b = { .ids = tb.ids, .targets = tb.tg, .weights = tb.wt, .n = tb.n, .seq_off = tb.off, .nseq = 2 };

    /* forward: the plan's logits equal the reference's */
    mref_t r = { .cfg = w->cfg, .w = w, .p = dvec(w->slab, w->numel), .ids = tb.ids, .tg = tb.tg, .wt = tb.wt,
                 .n = tb.n, .off = tb.off, .nseq = 2 };
    float *lg = malloc(tb.n * V * 4);
    double st[MD_NSTATS] = { 0 };
    assert_int_equal(md_train_forward(t, &b, st, lg), 0);
    double *rl = malloc(tb.n * V * 8);
    for (int i = 0; i < 2; i++) ref_logits(&r, tb.ids + tb.off[i], tb.off[i + 1] - tb.off[i], rl + tb.off[i] * V);
    assert_true(check_tensor("logits vs double reference", lg, rl, tb.n * V, 1e-5));
    double Lref = mref_loss(&r);
    printf("#   loss %.9g reference %.9g\n", st[0], Lref);
    assert_true(fabs(st[0] - Lref) <= 1e-5 * fabs(Lref));

    /* gradients */
    assert_int_equal(md_train_zero_grad(t), 0);
    double st2[MD_NSTATS] = { 0 };
    assert_int_equal(md_train_forward_backward(t, &b, 1.0f, st2), 0);
    assert_true(st2[0] == st[0]);
    float *g = malloc(w->numel * 4);
    assert_int_equal(md_train_get_grads(t, g), 0);
    /* Each tensor: relative error <= 1e-4. A tensor whose gradient is below 1e-3 of the
     * largest tensor gradient of the model (dt_proj with small time steps) is dominated by
     * float rounding of larger terms that cancel; it must then be within 1e-7 of that largest
     * norm in absolute terms. */
    double *fd = malloc(w->numel * 8), gmax = 0;
    for (int i = 0; i < w->n; i++) {
        const md_param_t *p = &w->p[i];
        size_t off = p->data - w->slab;
        fd_grad(mref_loss, &r, r.p + off, p->numel, fd + off);
        double nr = 0;
        for (size_t j = 0; j < p->numel; j++) nr += fd[off + j] * fd[off + j];
        if (sqrt(nr) > gmax) gmax = sqrt(nr);
    }
    int bad = 0;
    for (int i = 0; i < w->n; i++) {
        const md_param_t *p = &w->p[i];
        size_t off = p->data - w->slab;
        double nr = 0, nd = 0;
        for (size_t j = 0; j < p->numel; j++) {
            nr += fd[off + j] * fd[off + j];
            nd += (g[off + j] - fd[off + j]) * (g[off + j] - fd[off + j]);
        }
        const char *key = p->key + (strlen(p->key) > 28 ? strlen(p->key) - 28 : 0);
        if (check_tensor(key, g + off, fd + off, p->numel, 1e-4)) continue;
        if (sqrt(nr) < 1e-3 * gmax && sqrt(nd) <= 1e-7 * gmax) {
            printf("#     (small gradient: |diff| %.2e <= 1e-7 x largest tensor gradient %.3g)\n", sqrt(nd), gmax);
            continue;
        }
        bad++;
    }
    free(fd);
    assert_int_equal(bad, 0);
    free(g); free(lg); free(rl); free(r.p);
    md_train_free(t);
    md_weights_free(w);
    be->destroy(be);
}

static void test_model_grad_ph(void **st)
{
    (void)st;
    model_grad_case(V_PH, 8, 2, 23, 17, 64, 0);
    model_grad_case(V_PH, 16, 1, 9, 31, 5, 1);
}
static void test_model_grad_ps(void **st)
{
    (void)st;
    model_grad_case(V_PS, 8, 2, 19, 21, 64, 1);
    model_grad_case(V_PS, 8, 1, 30, 10, 4, 0);
}
static void test_model_grad_mamba(void **st)
{
    (void)st;
    model_grad_case(V_MAMBA, 16, 2, 25, 15, 64, 0);
    model_grad_case(V_MAMBA, 8, 2, 12, 28, 3, 1);
}
static void test_model_grad_variants(void **st)
{
    (void)st;
    model_grad_case(V_PH_UNTIED, 8, 2, 20, 20, 6, 0);
    model_grad_case(V_PH_UNTIED, 8, 1, 20, 20, 64, 1);
    model_grad_case(V_PH_EW, 8, 2, 14, 26, 64, 0);
    model_grad_case(V_PS_LN, 8, 1, 22, 18, 7, 0);
}

/* The training forward computes md_model_forward's logits (single-chunk and chunked plans). */
typedef struct { float *logits; int V; } lcollect_t;
static int lcollect(void *ud, int64_t row0, int64_t nrows, const float *hidden, const float *logits)
{
    (void)hidden;
    lcollect_t *c = ud;
    memcpy(c->logits + row0 * c->V, logits, nrows * c->V * sizeof(float));
    return 0;
}

static void test_forward_matches_model(void **st)
{
    (void)st;
    const tvariant_t vs[] = { V_PH, V_PS, V_MAMBA, V_PH_UNTIED, V_PH_EW, V_PS_LN };
    for (size_t vi = 0; vi < sizeof vs / sizeof *vs; vi++) {
        md_weights_t *w = tiny_model(vs[vi], 16, 2);
        md_backend_t *be = md_backend_cpu_open(2);
        md_train_t *t = md_train_create(w, be, NULL);
        assert_non_null(t);
        const int V = w->cfg.vocab_size;
        tbatch_t tb;
        tiny_batch(&tb, 57, 43, V);
        md_batch_t b = { .ids = tb.ids, .targets = tb.tg, .weights = NULL, .n = tb.n, .seq_off = tb.off, .nseq = 2 };
        float *lt = malloc(tb.n * V * 4), *lm = malloc(tb.n * V * 4);
        assert_int_equal(md_train_forward(t, &b, NULL, lt), 0);
        md_weights_t *w2 = md_weights_alloc(&w->cfg);
        memcpy(w2->slab, w->slab, w->numel * 4);
        md_model_t *m = md_model_from_weights(w2, be);
        assert_non_null(m);
        for (int pass = 0; pass < 2; pass++) {
            be->chunk = pass ? 13 : 131072;
            lcollect_t lc = { lm, V };
            md_forward_opts_t fo = { .layer = -1, .want_logits = 1 };
            assert_int_equal(md_model_forward(m, tb.ids, tb.n, tb.off, 2, &fo, lcollect, &lc), 0);
            double *ref = dvec(lm, tb.n * V), mx = 0;
            for (int64_t i = 0; i < tb.n * V; i++) if (fabs(lt[i] - lm[i]) > mx) mx = fabs(lt[i] - lm[i]);
            char what[64];
            snprintf(what, sizeof what, "%s %s", vname(vs[vi]), pass ? "chunked" : "single chunk");
            printf("#   max abs logit diff %.2e\n", mx);
            assert_true(check_tensor(what, lt, ref, tb.n * V, 1e-5));
            assert_true(mx <= 1e-5 * 10);
            free(ref);
        }
        free(lt); free(lm);
        md_model_free(m);
        md_train_free(t);
        md_weights_free(w);
        be->destroy(be);
    }
}

/* One micro-batch of 4 sequences equals 2 + 2 accumulated with the step's loss scale. */
static void test_grad_accum(void **st)
{
    (void)st;
    md_weights_t *w = tiny_model(V_PS, 16, 2);
    md_backend_t *be = md_backend_cpu_open(2);
    md_train_t *t = md_train_create(w, be, NULL);
    const int V = w->cfg.vocab_size;
    tbatch_t a, b2;
    tiny_batch(&a, 30, 25, V);
    tiny_batch(&b2, 20, 35, V);
    int32_t ids[128], tg[128];
    float wt[128];
    memcpy(ids, a.ids, a.n * 4); memcpy(ids + a.n, b2.ids, b2.n * 4);
    memcpy(tg, a.tg, a.n * 4); memcpy(tg + a.n, b2.tg, b2.n * 4);
    memcpy(wt, a.wt, a.n * 4); memcpy(wt + a.n, b2.wt, b2.n * 4);
    int64_t off[5] = { 0, 30, 55, 75, 110 };
    double sw = 0;
    for (int i = 0; i < 110; i++) if (tg[i] != MD_IGNORE) sw += wt[i];
    md_batch_t all = { .ids = ids, .targets = tg, .weights = wt, .n = 110, .seq_off = off, .nseq = 4 };
    md_batch_t p1 = { .ids = a.ids, .targets = a.tg, .weights = a.wt, .n = a.n, .seq_off = a.off, .nseq = 2 };
    md_batch_t p2 = { .ids = b2.ids, .targets = b2.tg, .weights = b2.wt, .n = b2.n, .seq_off = b2.off, .nseq = 2 };
    float *g1 = malloc(w->numel * 4), *g2 = malloc(w->numel * 4);
    double s1[MD_NSTATS] = { 0 }, s2[MD_NSTATS] = { 0 };
    assert_int_equal(md_train_zero_grad(t), 0);
    assert_int_equal(md_train_forward_backward(t, &all, (float)(1 / sw), s1), 0);
    assert_int_equal(md_train_get_grads(t, g1), 0);
    assert_int_equal(md_train_zero_grad(t), 0);
    assert_int_equal(md_train_forward_backward(t, &p1, (float)(1 / sw), s2), 0);
    assert_int_equal(md_train_forward_backward(t, &p2, (float)(1 / sw), s2), 0);
    assert_int_equal(md_train_get_grads(t, g2), 0);
    printf("# accumulated loss %.9g vs one batch %.9g\n", s2[0] / s2[1], s1[0] / s1[1]);
    assert_true(fabs(s1[0] - s2[0]) <= 1e-6 * s1[0] && fabs(s1[1] - s2[1]) <= 1e-9 * s1[1]);
    double *ref = dvec(g1, w->numel);
    assert_true(check_tensor("accumulated gradient", g2, ref, w->numel, 1e-6));
    free(ref); free(g1); free(g2);
    md_train_free(t);
    md_weights_free(w);
    be->destroy(be);
}

/* --- optimizer, schedule, masking ------------------------------------------------------------ */

static void test_schedule(void **st)
{
    (void)st;
    md_optim_t o;
    md_optim_init(&o);
    o.total = 1000;
    o.warmup = 100;
    assert_true(fabs(md_lr_at(&o, 0) - 1e-6) < 1e-15);
    assert_true(fabs(md_lr_at(&o, 50) - (1e-6 + (8e-3 - 1e-6) * 0.5)) < 1e-12);
    assert_true(fabs(md_lr_at(&o, 100) - 8e-3) < 1e-12);
    assert_true(fabs(md_lr_at(&o, 550) - (8e-3 + 1e-4) / 2) < 1e-12);
    assert_true(fabs(md_lr_at(&o, 1000) - 1e-4) < 1e-12);
    for (int64_t s = 101; s < 1000; s++) assert_true(md_lr_at(&o, s) < md_lr_at(&o, s - 1));
}

/* md_train_update: the global norm, clipping and AdamW with the no-decay groups, by hand. */
static void test_update(void **st)
{
    (void)st;
    md_weights_t *w = tiny_model(V_PH, 8, 1);
    md_backend_t *be = md_backend_cpu_open(2);
    md_train_t *t = md_train_create(w, be, NULL);
    tbatch_t tb;
    tiny_batch(&tb, 20, 20, w->cfg.vocab_size);
    md_batch_t b = { .ids = tb.ids, .targets = tb.tg, .weights = NULL, .n = tb.n, .seq_off = tb.off, .nseq = 2 };
    md_optim_t o;
    md_optim_init(&o);
    o.total = 10;
    o.warmup = 2;
    o.clip = 0.5;
    const size_t n = w->numel;
    float *p0 = malloc(n * 4), *m = malloc(n * 4), *v = malloc(n * 4), *g = malloc(n * 4);
    memcpy(p0, w->slab, n * 4);
    double *pd = dvec(p0, n), *md_ = calloc(n, 8), *vd = calloc(n, 8);
    for (int64_t step = 0; step < 3; step++) {
        assert_int_equal(md_train_zero_grad(t), 0);
        assert_int_equal(md_train_forward_backward(t, &b, 0.1f, NULL), 0);
        assert_int_equal(md_train_get_grads(t, g), 0);
        double ss = 0;
        for (size_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
        double gn = 0, lr = md_lr_at(&o, step), sc = 0.5 / (sqrt(ss) + 1e-6);
        if (sc > 1) sc = 1;
        assert_int_equal(md_train_update(t, &o, step, &gn), 0);
        printf("# update %lld: grad norm %.6g (hand %.6g), lr %.3g, clip scale %.4f\n", (long long)step, gn, sqrt(ss), lr, sc);
        assert_true(fabs(gn - sqrt(ss)) <= 1e-9 * gn);
        for (int k = 0; k < w->n; k++) {
            const md_param_t *q = &w->p[k];
            double wd = q->no_decay ? 0 : 0.1;
            for (size_t i = q->data - w->slab, e = i + q->numel; i < e; i++) {
                double gi = g[i] * sc;
                pd[i] *= 1 - lr * wd;
                md_[i] = 0.9 * md_[i] + 0.1 * gi;
                vd[i] = 0.95 * vd[i] + 0.05 * gi * gi;
                pd[i] -= lr / (1 - pow(0.9, step + 1)) * md_[i] / (sqrt(vd[i]) / sqrt(1 - pow(0.95, step + 1)) + 1e-8);
            }
        }
        /* keep the plan on the hand-computed trajectory (float vs double rounding) */
        md_weights_t *cur = md_weights_alloc(&w->cfg);
        assert_int_equal(md_train_get_params(t, cur), 0);
        assert_true(check_tensor("params after AdamW update", cur->slab, pd, n, 1e-6));
        for (int k = 0; k < w->n; k++) {
            const md_param_t *q = &w->p[k];
            if (q->kind != MD_P_EMBED && q->kind != MD_P_NORM) continue;
            size_t off = q->data - w->slab;
            assert_true(check_tensor(q->no_decay ? "  no-decay group (embedding)" : "  decay group (norm)",
                                     cur->slab + off, pd + off, q->numel, 1e-6));
        }
        assert_int_equal(md_train_get_moments(t, m, v), 0);
        assert_true(check_tensor("  first moments", m, md_, n, 1e-6));
        assert_true(check_tensor("  second moments", v, vd, n, 1e-6));
        md_weights_free(cur);
    }
    free(p0); free(m); free(v); free(g); free(pd); free(md_); free(vd);
    md_train_free(t);
    md_weights_free(w);
    be->destroy(be);
}

static void test_masking(void **st)
{
    (void)st;
    const md_vocab_t *voc = md_vocab_get("caduceus");
    const int64_t n = 400000;
    uint8_t *codes = malloc(n);
    for (int64_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)(urand() * 4);
        if (i % 50 == 7) c = MD_BASE_N;
        if (i % 10 == 3) c |= MD_BASE_SOFTMASK;
        codes[i] = c;
    }
    int32_t *ids = malloc(n * 4), *tg = malloc(n * 4), *ids2 = malloc(n * 4), *tg2 = malloc(n * 4);
    float *wt = malloc(n * 4), *wt2 = malloc(n * 4);
    md_mlm_t m;
    md_mlm_init(&m);
    m.soft_weight = 0.1f;
    assert_int_equal(md_mlm_make(&m, voc, 2222, 77, codes, n, 0, ids, tg, wt), 0);
    int64_t sel = 0, nmask = 0, nkeep = 0, nother = 0, n_n = 0, n_tg = 0, soft_sel = 0;
    for (int64_t i = 0; i < n; i++) {
        int orig = voc->id_base[codes[i] & MD_BASE_MASK];
        int is_n = (codes[i] & MD_BASE_MASK) == MD_BASE_N;
        if (is_n) { n_n++; assert_true(tg[i] == MD_IGNORE); }
        /* a position is selected when it was corrupted or has a target; N positions are
           selected with the same probability but carry no target */
        int selected = tg[i] != MD_IGNORE || ids[i] != (is_n ? voc->id_pad : orig);
        if (tg[i] != MD_IGNORE) {
            n_tg++;
            assert_int_equal(tg[i], orig);
            if (codes[i] & MD_BASE_SOFTMASK) { soft_sel++; assert_true(wt[i] == 0.1f); }
            else assert_true(wt[i] == 1.0f);
        } else if (!is_n) {
            assert_int_equal(ids[i], orig);
        }
        if (!selected || is_n) continue;
        sel++;
        if (ids[i] == voc->id_mask) nmask++;
        else if (ids[i] == orig) nkeep++;
        else nother++;
        assert_true(ids[i] >= 0 && ids[i] < voc->size);
    }
    const int64_t non_n = n - n_n;
    double fsel = (double)n_tg / non_n, fm = (double)nmask / sel, fk = (double)nkeep / sel, fo = (double)nother / sel;
    printf("# masking: selected %.4f (0.15), [MASK] %.4f (0.8083), kept %.4f (0.1083), other %.4f (0.0833), "
           "soft-masked targets %lld\n", fsel, fm, fk, fo, (long long)soft_sel);
    /* binomial tolerances of about 5 sigma */
    assert_true(fabs(fsel - 0.15) < 5 * sqrt(0.15 * 0.85 / non_n));
    assert_true(fabs(fm - (0.8 + 0.1 / 12)) < 5 * sqrt(0.2 * 0.8 / sel));
    assert_true(fabs(fk - (0.1 + 0.1 / 12)) < 5 * sqrt(0.11 * 0.89 / sel));
    assert_true(fabs(fo - 0.1 * 10 / 12) < 5 * sqrt(0.09 * 0.91 / sel));
    /* deterministic per (seed, sequence), different across sequences */
    assert_int_equal(md_mlm_make(&m, voc, 2222, 77, codes, n, 0, ids2, tg2, wt2), 0);
    assert_memory_equal(ids, ids2, n * 4);
    assert_memory_equal(tg, tg2, n * 4);
    assert_int_equal(md_mlm_make(&m, voc, 2222, 78, codes, n, 0, ids2, tg2, wt2), 0);
    assert_true(memcmp(tg, tg2, n * 4) != 0);
    /* validation weights: soft-masked bases count 0 */
    assert_int_equal(md_mlm_make(&m, voc, 2222, 77, codes, n, 1, ids2, tg2, wt2), 0);
    for (int64_t i = 0; i < n; i++)
        if (tg2[i] != MD_IGNORE) assert_true(wt2[i] == ((codes[i] & MD_BASE_SOFTMASK) ? 0.0f : 1.0f));
    /* causal targets */
    m.causal = 1;
    m.soft_weight = 1.0f;
    assert_int_equal(md_mlm_make(&m, voc, 2222, 77, codes, 1000, 0, ids2, tg2, wt2), 0);
    for (int64_t i = 0; i < 1000; i++) {
        int nx = i + 1 < 1000 && (codes[i + 1] & MD_BASE_MASK) != MD_BASE_N;
        assert_int_equal(tg2[i], nx ? voc->id_base[codes[i + 1] & MD_BASE_MASK] : MD_IGNORE);
        assert_int_equal(ids2[i], (codes[i] & MD_BASE_MASK) == MD_BASE_N ? voc->id_pad : voc->id_base[codes[i] & MD_BASE_MASK]);
    }
    free(codes); free(ids); free(tg); free(ids2); free(tg2); free(wt); free(wt2);
}

/* --- the trainer ------------------------------------------------------------------------------ */

#define LAMBDA "tests/data/real/lambda.fa.gz"
static const char *lambda_holdout[] = { "gi|9626243|ref|NC_001416.1|:40001-48502" };
static const char *lambda_in[] = { LAMBDA };

static void small_run_opts(md_trainer_opts_t *o, const char *dir)
{
    md_trainer_opts_init(o);
    o->inputs = lambda_in;
    o->n_inputs = 1;
    o->holdout = lambda_holdout;
    o->n_holdout = 1;
    o->outdir = dir;
    o->variant = MD_VARIANT_PS;
    o->d_model = 16;
    o->n_layer = 2;
    o->seq_len = 128;
    o->batch = 2;
    o->grad_accum = 2;
    o->steps = 8;
    o->optim.lr = 4e-3;
    o->val_every = 3;
    o->save_every = 4;
    o->val_windows = 8;
    o->threads = 1;
    o->device = "cpu";
}

/* The TSV lines without the elapsed-time column. */
static char *read_log(const char *dir)
{
    char p[512];
    snprintf(p, sizeof p, "%s/train.tsv", dir);
    FILE *fp = fopen(p, "r");
    assert_non_null(fp);
    char *out = calloc(1 << 16, 1), line[1024];
    while (fgets(line, sizeof line, fp)) {
        char *last = strrchr(line, '\t');
        if (last) *last = 0;
        strcat(out, line);
        strcat(out, "\n");
    }
    fclose(fp);
    return out;
}

static void rm_rf(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_resume(void **st)
{
    (void)st;
    if (access(LAMBDA, R_OK) != 0) { printf("# %s missing: skipped\n", LAMBDA); skip(); }
    char a[256], b[256];
    snprintf(a, sizeof a, "/tmp/md-train-test-a.%d", (int)getpid());
    snprintf(b, sizeof b, "/tmp/md-train-test-b.%d", (int)getpid());
    rm_rf(a);
    rm_rf(b);
    md_trainer_opts_t o;
    small_run_opts(&o, a);
    assert_int_equal(md_trainer_run(&o, NULL, NULL), 0);
    small_run_opts(&o, b);
    o.stop_after = 4;
    assert_int_equal(md_trainer_run(&o, NULL, NULL), 0);
    /* a fresh start on a run folder is refused */
    small_run_opts(&o, b);
    assert_true(md_trainer_run(&o, NULL, NULL) < 0);
    /* resuming with other options is refused */
    o.resume = 1;
    o.optim.lr = 1e-3;
    assert_true(md_trainer_run(&o, NULL, NULL) < 0);
    small_run_opts(&o, b);
    o.resume = 1;
    o.threads = 2;   /* the thread count does not change the results */
    assert_int_equal(md_trainer_run(&o, NULL, NULL), 0);
    char *la = read_log(a), *lb = read_log(b);
    printf("# uninterrupted:\n%s# stopped at 4 and resumed:\n%s", la, lb);
    assert_string_equal(la, lb);
    /* the checkpoints are the same bytes */
    char pa[512], pb[512], cmd[1200];
    snprintf(pa, sizeof pa, "%s/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/model.safetensors", b);
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", pa, pb);
    assert_int_equal(system(cmd), 0);
    /* and loadable as a model */
    md_backend_t *be = md_backend_cpu_open(1);
    md_model_t *m = md_model_load(a, be);
    assert_non_null(m);
    md_model_free(m);
    be->destroy(be);
    free(la);
    free(lb);
    rm_rf(a);
    rm_rf(b);
}

static void test_nan_stops(void **st)
{
    (void)st;
    if (access(LAMBDA, R_OK) != 0) skip();
    char a[256];
    snprintf(a, sizeof a, "/tmp/md-train-test-nan.%d", (int)getpid());
    rm_rf(a);
    md_trainer_opts_t o;
    small_run_opts(&o, a);
    o.save_every = 2;
    o.inject_nan_at = 5;
    assert_int_equal(md_trainer_run(&o, NULL, NULL), -3);
    char *l = read_log(a);
    printf("%s", l);
    assert_non_null(strstr(l, "\n4\t"));
    assert_null(strstr(l, "\n5\t"));
    free(l);
    /* the last good checkpoint (update 4) resumes */
    o.inject_nan_at = 0;
    o.resume = 1;
    o.steps = 8;
    assert_int_equal(md_trainer_run(&o, NULL, NULL), 0);
    rm_rf(a);
}

/* A short run on real DNA: the training and validation losses go down. */
static void test_learns(void **st)
{
    (void)st;
    if (access(LAMBDA, R_OK) != 0) skip();
    char a[256];
    snprintf(a, sizeof a, "/tmp/md-train-test-learn.%d", (int)getpid());
    rm_rf(a);
    md_trainer_opts_t o;
    small_run_opts(&o, a);
    o.variant = MD_VARIANT_PH;
    o.d_model = 32;
    o.seq_len = 256;
    o.batch = 4;
    o.grad_accum = 1;
    o.steps = 40;
    o.val_every = 40;
    o.save_every = 0;
    assert_int_equal(md_trainer_run(&o, NULL, NULL), 0);
    char p[512];
    snprintf(p, sizeof p, "%s/train.tsv", a);
    FILE *fp = fopen(p, "r");
    char line[1024];
    double first = 0, last = 0, v0 = -1, v1 = -1;
    int k = 0;
    assert_non_null(fgets(line, sizeof line, fp));
    while (fgets(line, sizeof line, fp)) {
        long step;
        char tl[32], vl[32];
        assert_int_equal(sscanf(line, "%ld %*s %*s %31s %*s %31s", &step, tl, vl), 3);
        if (step > 0 && step <= 5) first += atof(tl) / 5;
        if (step > 35) last += atof(tl) / 5;
        if (strcmp(vl, "NA")) { if (v0 < 0) v0 = atof(vl); else v1 = atof(vl); }
        k++;
    }
    fclose(fp);
    printf("# train loss: first 5 updates %.4f, last 5 %.4f; validation %.4f -> %.4f\n", first, last, v0, v1);
    assert_int_equal(k, 41);
    assert_true(last < first - 0.5);
    assert_true(v1 < v0 - 0.5 && v1 < 1.45);
    rm_rf(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_bwd),
        cmocka_unit_test(test_scan_pieces),
        cmocka_unit_test(test_conv_bwd),
        cmocka_unit_test(test_conv_pieces),
        cmocka_unit_test(test_add_norm_bwd),
        cmocka_unit_test(test_gemm_bwd),
        cmocka_unit_test(test_embed_mul_bwd),
        cmocka_unit_test(test_xent),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_small_ops),
        cmocka_unit_test(test_model_grad_ph),
        cmocka_unit_test(test_model_grad_ps),
        cmocka_unit_test(test_model_grad_mamba),
        cmocka_unit_test(test_model_grad_variants),
        cmocka_unit_test(test_forward_matches_model),
        cmocka_unit_test(test_grad_accum),
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_update),
        cmocka_unit_test(test_masking),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_nan_stops),
        cmocka_unit_test(test_learns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
