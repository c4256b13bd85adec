/* gpu_train_scan.c: the CUDA training scan (kernels/train_scan.cu: md_cuda_tscan_fwd/bwd) against
 * the CPU training ops (md_train_ops_cpu()->scan_fwd/scan_bwd, the oracle) on random inputs, in
 * fp32 and bf16 mode: both directions, with and without z/D/dt_bias/state/dstate, accumulate
 * flags, packed-sequence resets (at position 0, near chunk edges, random), lengths around the
 * chunk T (64, 256) and up to 4097 (100,003 unless MD_PARITY_QUICK=1), row strides with NaN
 * poison in the padding, the piece contract (two pieces with state/dstate carried = one), and
 * the backward's groups of chunks (small groups through MD_TSCAN_GROUP).
 * Every output tensor is compared as ||gpu - cpu|| / ||cpu|| (bound 1e-5 fp32, 2e-2 bf16).
 * Needs a CUDA device (or the CPU stand-in, bench/gpu/emu-test.sh); exits 77 without one.
 * MD_TSCAN_BENCH=1 adds timings at the target shape (test_bench); MD_PARITY_ONLY=<cmocka
 * pattern> runs some tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "md.h"
#include "md_cuda.h"
#include "train_ops.h"

/* kernels/train_scan.cuh (C linkage) */
int md_cuda_tscan_fwd(md_backend_t *be, int64_t n, int Di, int N, const md_tscan_t *d, void *y, int64_t ldy,
                      int accumulate, const uint8_t *seq_start);
int md_cuda_tscan_bwd(md_backend_t *be, int64_t n, int Di, int N, const md_tscan_t *d, const uint8_t *seq_start);

static md_backend_t *cpu;
static md_backend_t *gpus[2]; /* fp32, bf16 */
static int long_tests = 1;

/* --- random data ----------------------------------------------------------------------------- */

static uint64_t rng = 1, check_no;
static void new_seed(void)
{
    check_no++;
    rng = 0x9E3779B97F4A7C15ull * (check_no + 777) ^ 0xD1B54A32D192ED03ull;
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
/* rows x cols normal(mean, sd) with row stride ld, NaN in the padding columns (bf16-rounded when
 * the GPU runs bf16, so both sides see the same values) */
static float *rand_mat(md_backend_t *g, int64_t rows, int cols, int64_t ld, float mean, float sd)
{
    float *a = malloc((rows * ld > 0 ? rows * ld : 1) * sizeof *a);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < ld; j++) {
            float v = j < cols ? mean + sd * nrand() : NAN;
            a[i * ld + j] = g->act_dtype == MD_DT_BF16 ? bf16_round(v) : v;
        }
    return a;
}
static float *rand_vec(int64_t n, float mean, float sd)
{
    float *a = malloc((n > 0 ? n : 1) * sizeof *a);
    for (int64_t i = 0; i < n; i++) a[i] = mean + sd * nrand();
    return a;
}
static float *dup(const float *a, int64_t n)
{
    float *b = malloc((n > 0 ? n : 1) * sizeof *b);
    memcpy(b, a, (n > 0 ? n : 0) * sizeof *b);
    return b;
}

/* --- device helpers -------------------------------------------------------------------------- */

static size_t asz(md_backend_t *be) { return md_dtype_size(be->act_dtype); }
static void *up_act(md_backend_t *be, const float *h, int64_t n)
{
    void *d = be->alloc(be, (n > 0 ? n : 1) * asz(be));
    assert_non_null(d);
    if (n > 0) assert_int_equal(be->upload_act(be, d, h, n), 0);
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
    if (n > 0) assert_int_equal(be->download_act(be, h, d, n), 0);
    return h;
}
static float *down_f32(md_backend_t *be, const void *d, int64_t n)
{
    float *h = malloc((n > 0 ? n : 1) * sizeof *h);
    assert_int_equal(be->sync(be), 0);
    if (n > 0) assert_int_equal(be->download(be, h, d, n * sizeof(float)), 0);
    return h;
}

/* ||a - ref|| / ||ref|| over rows x cols (row stride ld); NaN -> infinity; also infinity when a
 * padding column [cols, ld) lost its NaN poison (something wrote outside the tensor). */
static double relerr2(const float *a, const float *ref, int64_t rows, int64_t cols, int64_t ld)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < rows; i++) {
        for (int64_t j = 0; j < cols; j++) {
            double x = a[i * ld + j], r = ref[i * ld + j];
            if (x != x || r != r) return INFINITY;
            num += (x - r) * (x - r);
            den += r * r;
        }
        for (int64_t j = cols; j < ld; j++)
            if (a[i * ld + j] == a[i * ld + j]) return INFINITY;
    }
    if (den == 0) return num == 0 ? 0 : INFINITY;
    return sqrt(num / den);
}

static int n_checks, n_fail;
static double worst[2][2]; /* [prec][fwd, bwd] */

static void report(md_backend_t *g, int bwd, const char *desc, const char *what, double e, double bound)
{
    const int p = g->act_dtype == MD_DT_BF16;
    n_checks++;
    if (e > worst[p][bwd] || e != e) worst[p][bwd] = e;
    const int ok = e <= bound;
    if (!ok) n_fail++;
    printf("%s %s %-4s %-62s %-12s rel %.3g%s\n", ok ? "ok  " : "FAIL", bwd ? "bwd" : "fwd", p ? "bf16" : "fp32", desc,
           what, e, ok ? "" : " (bound exceeded)");
    fflush(stdout);
}
static double tol_scan(md_backend_t *g) { return g->act_dtype == MD_DT_BF16 ? 2e-2 : 1e-5; }

#define BEGIN_CHECKS int fails0_ = n_fail
#define END_CHECKS assert_int_equal(n_fail - fails0_, 0)

/* --- one case -------------------------------------------------------------------------------- */

typedef struct {
    int64_t n;
    int Di, N, T, reverse;
    int z, D, bias, state, dstate;  /* optional inputs present */
    int acc;                        /* y +=, dz +=, y_bwd +=, and preset dA/dD/dbias */
    int ybwd;                       /* ask the backward for y */
    double pstart;                  /* < 0: no flags; else random starts with this probability */
    int edge_starts;                /* starts at 0, T-1, T, T+1, 2T-1 (scan order) */
    int pad;                        /* extra row stride on activations */
} tcase_t;

/* host inputs of a case (float, act values already bf16-rounded for the bf16 GPU) */
typedef struct {
    int64_t ld, ldbc, lddbc;
    float *x, *dt, *bc, *z, *A, *D, *bias, *h0, *dy, *dh;   /* inputs */
    float *y0, *dz0, *yb0, *dA0, *dD0, *db0;                 /* initial outputs (accumulate) */
    uint8_t *ss;
} tdata_t;

static void tdata_make(md_backend_t *g, const tcase_t *c, tdata_t *s)
{
    const int64_t n = c->n, Di = c->Di, N = c->N;
    s->ld = Di + c->pad;
    s->ldbc = 16 + 2 * N;      /* B, C as column slices of an xdbl-like [n, 16 + 2N] */
    s->lddbc = 2 * N + c->pad; /* dB, dC as column slices of one [n, 2N (+pad)] */
    s->x = rand_mat(g, n, Di, s->ld, 0, 1);
    s->dt = rand_mat(g, n, Di, s->ld, -1.0f, 1.0f); /* softplus(dt + bias) ~ 0.05 .. 2 */
    s->bc = rand_mat(g, n, (int)s->ldbc, s->ldbc, 0, 1);
    s->z = rand_mat(g, n, Di, s->ld, 0, 1);
    s->dy = rand_mat(g, n, Di, s->ld, 0, 1);
    s->y0 = rand_mat(g, n, Di, s->ld, 0, 1);
    s->dz0 = rand_mat(g, n, Di, s->ld, 0, 1);
    s->yb0 = rand_mat(g, n, Di, s->ld, 0, 1);
    s->A = malloc(Di * N * sizeof(float));
    for (int64_t i = 0; i < Di * N; i++) s->A[i] = -expf(logf(1.0f + (i % N)) + 0.3f * nrand());
    s->D = rand_vec(Di, 1, 0.3f);
    s->bias = rand_vec(Di, 0, 0.5f);
    s->h0 = rand_vec(Di * N, 0, 0.5f);
    s->dh = rand_vec(Di * N, 0, 0.5f);
    s->dA0 = rand_vec(Di * N, 0, c->acc ? 1.0f : 0.0f);
    s->dD0 = rand_vec(Di, 0, c->acc ? 1.0f : 0.0f);
    s->db0 = rand_vec(Di, 0, c->acc ? 1.0f : 0.0f);
    s->ss = NULL;
    if (c->pstart >= 0 || c->edge_starts) {
        s->ss = calloc(n + 1, 1);
        if (c->pstart >= 0)
            for (int64_t i = 0; i <= n; i++) s->ss[i] = urand() < c->pstart;
        if (c->edge_starts) {
            /* scan index u is position u (forward) or n-1-u, flag index n-u (reverse) */
            const int64_t us[5] = { 0, c->T - 1, c->T, c->T + 1, 2 * (int64_t)c->T - 1 };
            for (int k = 0; k < 5; k++)
                if (us[k] < n) s->ss[c->reverse ? n - us[k] : us[k]] = 1;
        }
    }
}

static void tdata_free(tdata_t *s)
{
    float *f[] = { s->x, s->dt, s->bc, s->z, s->A, s->D, s->bias, s->h0, s->dy, s->dh,
                   s->y0, s->dz0, s->yb0, s->dA0, s->dD0, s->db0 };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) free(f[i]);
    free(s->ss);
}

/* all outputs of one run (host, float) */
typedef struct {
    float *y, *cs, *hlast, *dx, *ddt, *dbc, *dz, *yb, *dA, *dD, *db, *dh;
} tout_t;

static void tout_free(tout_t *o)
{
    float *f[] = { o->y, o->cs, o->hlast, o->dx, o->ddt, o->dbc, o->dz, o->yb, o->dA, o->dD, o->db, o->dh };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) free(f[i]);
}

static int64_t n_chunks(int64_t n, int T) { return (n + T - 1) / T; }

/* Rows [r0, r0+nr) of the case through the CPU ops (host memory), in/out: o (allocated for the
 * whole n by the caller). h/dh: the state/dstate buffers carried between pieces (or NULL). */
static void cpu_piece_fwd(const tcase_t *c, const tdata_t *s, int64_t r0, int64_t nr, float *cs, float *h, tout_t *o,
                          md_tscan_t *d)
{
    const md_train_ops_t *ops = md_train_ops_cpu();
    memset(d, 0, sizeof *d);
    d->x = s->x + r0 * s->ld; d->ldx = s->ld;
    d->dt = s->dt + r0 * s->ld; d->lddt = s->ld;
    d->B = s->bc + r0 * s->ldbc; d->C = s->bc + r0 * s->ldbc + c->N; d->ldbc = s->ldbc;
    d->z = c->z ? s->z + r0 * s->ld : NULL; d->ldz = s->ld;
    d->A = s->A; d->D = c->D ? s->D : NULL; d->dt_bias = c->bias ? s->bias : NULL;
    d->reverse = c->reverse; d->T = c->T; d->chunk_states = cs; d->state = h;
    assert_int_equal(ops->scan_fwd(cpu, nr, c->Di, c->N, d, o->y + r0 * s->ld, s->ld, c->acc, s->ss ? s->ss + r0 : NULL), 0);
}
static void cpu_piece_bwd(const tcase_t *c, const tdata_t *s, int64_t r0, int64_t nr, float *dh, tout_t *o,
                          md_tscan_t *d)
{
    const md_train_ops_t *ops = md_train_ops_cpu();
    d->dy = s->dy + r0 * s->ld; d->lddy = s->ld;
    d->dx = o->dx + r0 * s->ld; d->lddx = s->ld;
    d->ddt = o->ddt + r0 * s->ld; d->ldddt = s->ld;
    d->dB = o->dbc + r0 * s->lddbc; d->dC = o->dbc + r0 * s->lddbc + c->N; d->lddbc = s->lddbc;
    d->dz = c->z ? o->dz + r0 * s->ld : NULL; d->lddz = s->ld; d->dz_accumulate = c->acc;
    d->dA_log = o->dA; d->dD = c->D ? o->dD : NULL; d->ddt_bias = c->bias ? o->db : NULL;
    d->dstate = dh;
    d->y = c->ybwd ? o->yb + r0 * s->ld : NULL; d->ldy = s->ld; d->y_accumulate = c->acc;
    assert_int_equal(ops->scan_bwd(cpu, nr, c->Di, c->N, d, s->ss ? s->ss + r0 : NULL), 0);
}

/* output buffers initialised from the case's presets; row-padding NaN everywhere else */
static void tout_init(const tcase_t *c, const tdata_t *s, tout_t *o)
{
    const int64_t n = c->n, na = n * s->ld, Di = c->Di, N = c->N;
    o->y = dup(s->y0, na);
    o->dz = dup(s->dz0, na);
    o->yb = dup(s->yb0, na);
    o->dx = dup(s->y0, na); /* overwritten; padding stays NaN */
    o->ddt = dup(s->y0, na);
    o->dbc = malloc((n * s->lddbc > 0 ? n * s->lddbc : 1) * sizeof(float));
    for (int64_t i = 0; i < n * s->lddbc; i++) o->dbc[i] = (i % s->lddbc) < 2 * N ? 0.0f : NAN;
    o->cs = malloc((n_chunks(n, c->T) * Di * N > 0 ? n_chunks(n, c->T) * Di * N : 1) * sizeof(float));
    o->hlast = dup(s->h0, Di * N);
    o->dh = dup(s->dh, Di * N);
    o->dA = dup(s->dA0, Di * N);
    o->dD = dup(s->dD0, Di);
    o->db = dup(s->db0, Di);
}

/* The GPU run of rows [r0, r0+nr): uploads the piece, runs fwd then bwd, downloads into o. The
 * state/dstate carry in o->hlast/o->dh (uploaded before and downloaded after). */
typedef struct {
    void *x, *dt, *bc, *z, *dy, *y, *dx, *ddt, *dbc, *dz, *yb;
    float *A, *D, *bias, *cs, *h, *dh, *dA, *dD, *db;
    uint8_t *ss;
} tdev_t;

static void gpu_piece(md_backend_t *g, const tcase_t *c, const tdata_t *s, int64_t r0, int64_t nr, int pass,
                      tout_t *o, tdev_t *v)
{
    const int64_t ld = s->ld, Di = c->Di, N = c->N;
    md_tscan_t d;
    memset(&d, 0, sizeof d);
    if (pass == 0) {
        memset(v, 0, sizeof *v);
        v->x = up_act(g, s->x + r0 * ld, nr * ld);
        v->dt = up_act(g, s->dt + r0 * ld, nr * ld);
        v->bc = up_act(g, s->bc + r0 * s->ldbc, nr * s->ldbc);
        v->z = up_act(g, s->z + r0 * ld, nr * ld);
        v->dy = up_act(g, s->dy + r0 * ld, nr * ld);
        v->y = up_act(g, o->y + r0 * ld, nr * ld);
        v->dx = up_act(g, o->dx + r0 * ld, nr * ld);
        v->ddt = up_act(g, o->ddt + r0 * ld, nr * ld);
        v->dbc = up_act(g, o->dbc + r0 * s->lddbc, nr * s->lddbc);
        v->dz = up_act(g, o->dz + r0 * ld, nr * ld);
        v->yb = up_act(g, o->yb + r0 * ld, nr * ld);
        v->A = up_raw(g, s->A, Di * N * 4);
        v->D = up_raw(g, s->D, Di * 4);
        v->bias = up_raw(g, s->bias, Di * 4);
        v->cs = g->alloc(g, n_chunks(nr, c->T) * Di * N * 4 + 4);
        assert_non_null(v->cs);
        v->h = up_raw(g, o->hlast, Di * N * 4);
        v->dh = up_raw(g, o->dh, Di * N * 4);
        v->dA = up_raw(g, o->dA, Di * N * 4);
        v->dD = up_raw(g, o->dD, Di * 4);
        v->db = up_raw(g, o->db, Di * 4);
        v->ss = s->ss ? up_raw(g, s->ss + r0, nr + 1) : NULL;
    } else {
        assert_int_equal(g->upload(g, v->dh, o->dh, Di * N * 4), 0);
        assert_int_equal(g->upload(g, v->dA, o->dA, Di * N * 4), 0);
        assert_int_equal(g->upload(g, v->dD, o->dD, Di * 4), 0);
        assert_int_equal(g->upload(g, v->db, o->db, Di * 4), 0);
    }
    const size_t as = asz(g);
    d.x = v->x; d.ldx = ld;
    d.dt = v->dt; d.lddt = ld;
    d.B = v->bc; d.C = (char *)v->bc + N * as; d.ldbc = s->ldbc;
    d.z = c->z ? v->z : NULL; d.ldz = ld;
    d.A = v->A; d.D = c->D ? v->D : NULL; d.dt_bias = c->bias ? v->bias : NULL;
    d.reverse = c->reverse; d.T = c->T; d.chunk_states = v->cs;
    d.state = c->state ? v->h : NULL;
    if (pass == 0) {
        assert_int_equal(md_cuda_tscan_fwd(g, nr, c->Di, c->N, &d, v->y, ld, c->acc, v->ss), 0);
        float *y = down_act(g, v->y, nr * ld), *cs = down_f32(g, v->cs, n_chunks(nr, c->T) * Di * N);
        memcpy(o->y + r0 * ld, y, nr * ld * sizeof(float));
        /* chunk states of the piece are kept at the piece's own chunk slots (pieces are cut at
         * chunk edges in scan order by the callers) */
        (void)cs;
        free(cs);
        free(y);
        if (c->state) {
            free(o->hlast);
            o->hlast = down_f32(g, v->h, Di * N);
        }
        return;
    }
    d.dy = v->dy; d.lddy = ld;
    d.dx = v->dx; d.lddx = ld;
    d.ddt = v->ddt; d.ldddt = ld;
    d.dB = v->dbc; d.dC = (char *)v->dbc + N * as; d.lddbc = s->lddbc;
    d.dz = c->z ? v->dz : NULL; d.lddz = ld; d.dz_accumulate = c->acc;
    d.dA_log = v->dA; d.dD = c->D ? v->dD : NULL; d.ddt_bias = c->bias ? v->db : NULL;
    d.dstate = c->dstate ? v->dh : NULL;
    d.y = c->ybwd ? v->yb : NULL; d.ldy = ld; d.y_accumulate = c->acc;
    assert_int_equal(md_cuda_tscan_bwd(g, nr, c->Di, c->N, &d, v->ss), 0);
    struct { void *dev; float *host; int64_t cnt; } acts[] = {
        { v->dx, o->dx, nr * ld }, { v->ddt, o->ddt, nr * ld }, { v->dz, o->dz, nr * ld },
        { v->yb, o->yb, nr * ld }, { v->dbc, o->dbc, nr * s->lddbc },
    };
    for (int k = 0; k < 5; k++) {
        float *h = down_act(g, acts[k].dev, acts[k].cnt);
        int64_t off = k == 4 ? r0 * s->lddbc : r0 * ld;
        memcpy(acts[k].host + off, h, acts[k].cnt * sizeof(float));
        free(h);
    }
    float *f;
    f = down_f32(g, v->dA, Di * N); memcpy(o->dA, f, Di * N * 4); free(f);
    f = down_f32(g, v->dD, Di); memcpy(o->dD, f, Di * 4); free(f);
    f = down_f32(g, v->db, Di); memcpy(o->db, f, Di * 4); free(f);
    if (c->dstate) { f = down_f32(g, v->dh, Di * N); memcpy(o->dh, f, Di * N * 4); free(f); }
    void *bufs[] = { v->x, v->dt, v->bc, v->z, v->dy, v->y, v->dx, v->ddt, v->dbc, v->dz, v->yb,
                     v->A, v->D, v->bias, v->cs, v->h, v->dh, v->dA, v->dD, v->db, v->ss };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) g->free(g, bufs[i]);
}

static void describe(const tcase_t *c, char *b, size_t m)
{
    snprintf(b, m, "n=%lld Di=%d N=%d T=%d %s%s%s%s%s%s%s%s%s", (long long)c->n, c->Di, c->N, c->T,
             c->reverse ? "rev" : "fwd", c->z ? " z" : "", c->D ? " D" : "", c->bias ? " bias" : "",
             c->state ? " h0" : "", c->dstate ? " dh" : "", c->acc ? " acc" : "", c->ybwd ? " y" : "",
             c->pstart >= 0 || c->edge_starts ? " starts" : "");
}

/* Compare every output of runs a (GPU) and b (reference). with_cs: compare chunk states too. */
static void compare(md_backend_t *g, const tcase_t *c, const tdata_t *s, const tout_t *a, const tout_t *b,
                    const char *desc, double bound)
{
    const int64_t n = c->n, Di = c->Di, N = c->N, ld = s->ld;
    report(g, 0, desc, "y", relerr2(a->y, b->y, n, Di, ld), bound);
    if (c->state) report(g, 0, desc, "h_last", relerr2(a->hlast, b->hlast, 1, Di * N, Di * N), bound);
    report(g, 1, desc, "dx", relerr2(a->dx, b->dx, n, Di, ld), bound);
    report(g, 1, desc, "ddt", relerr2(a->ddt, b->ddt, n, Di, ld), bound);
    report(g, 1, desc, "dB|dC", relerr2(a->dbc, b->dbc, n, 2 * N, s->lddbc), bound);
    if (c->z) report(g, 1, desc, "dz", relerr2(a->dz, b->dz, n, Di, ld), bound);
    if (c->ybwd) report(g, 1, desc, "y (bwd)", relerr2(a->yb, b->yb, n, Di, ld), bound);
    report(g, 1, desc, "dA_log", relerr2(a->dA, b->dA, 1, Di * N, Di * N), bound);
    if (c->D) report(g, 1, desc, "dD", relerr2(a->dD, b->dD, 1, Di, Di), bound);
    if (c->bias) report(g, 1, desc, "ddt_bias", relerr2(a->db, b->db, 1, Di, Di), bound);
    if (c->dstate) report(g, 1, desc, "dstate", relerr2(a->dh, b->dh, 1, Di * N, Di * N), bound);
}

/* One case on one GPU mode: CPU reference in one piece; the GPU in one piece (chunk states
 * compared too) and, when cut > 0, in two pieces [0,cut) [cut,n) in scan order with the
 * state/dstate carried (cut a multiple of T in scan order). */
static void check_case(md_backend_t *g, const tcase_t *c0, int64_t cut)
{
    tcase_t c = *c0;
    if (cut > 0) c.state = c.dstate = 1;
    new_seed();
    tdata_t s;
    tdata_make(g, &c, &s);
    char desc[160];
    describe(&c, desc, sizeof desc);
    const int64_t n = c.n, Di = c.Di, N = c.N;

    tout_t ref, gpu;
    tout_init(&c, &s, &ref);
    tout_init(&c, &s, &gpu);
    md_tscan_t d;
    cpu_piece_fwd(&c, &s, 0, n, ref.cs, c.state ? ref.hlast : NULL, &ref, &d);
    cpu_piece_bwd(&c, &s, 0, n, c.dstate ? ref.dh : NULL, &ref, &d);

    if (cut <= 0) {
        tdev_t v;
        gpu_piece(g, &c, &s, 0, n, 0, &gpu, &v);
        /* chunk states straight from the device before the backward reads them */
        float *cs = down_f32(g, v.cs, n_chunks(n, c.T) * Di * N);
        report(g, 0, desc, "chunk states", relerr2(cs, ref.cs, 1, n_chunks(n, c.T) * Di * N, n_chunks(n, c.T) * Di * N),
               tol_scan(g));
        free(cs);
        gpu_piece(g, &c, &s, 0, n, 1, &gpu, &v);
        compare(g, &c, &s, &gpu, &ref, desc, tol_scan(g));
    } else {
        /* pieces in positions: scan order visits [0,cut) first when forward, else [n-cut, n) */
        const int64_t r0s[2] = { c.reverse ? n - cut : 0, c.reverse ? 0 : cut };
        const int64_t nrs[2] = { cut, n - cut };
        tdev_t v[2];
        for (int k = 0; k < 2; k++) gpu_piece(g, &c, &s, r0s[k], nrs[k], 0, &gpu, &v[k]);
        for (int k = 1; k >= 0; k--) gpu_piece(g, &c, &s, r0s[k], nrs[k], 1, &gpu, &v[k]);
        char d2[200];
        snprintf(d2, sizeof d2, "%s pieces@%lld", desc, (long long)cut);
        compare(g, &c, &s, &gpu, &ref, d2, tol_scan(g));
    }
    tout_free(&ref);
    tout_free(&gpu);
    tdata_free(&s);
}

/* --- tests ----------------------------------------------------------------------------------- */

static tcase_t base(int64_t n, int Di, int N, int T, int reverse)
{
    tcase_t c = { .n = n, .Di = Di, .N = N, .T = T, .reverse = reverse, .z = 1, .D = 1, .bias = 1, .state = 1,
                  .dstate = 1, .acc = 0, .ybwd = 1, .pstart = -1, .edge_starts = 0, .pad = 0 };
    return c;
}

static void test_lengths(void **st)
{
    (void)st;
    BEGIN_CHECKS;
    const int Ts[2] = { 256, 64 };
    for (int gi = 0; gi < 2; gi++)
        for (int ti = 0; ti < 2; ti++) {
            const int T = Ts[ti];
            const int64_t ns[] = { 1, 3, T - 1, T, T + 1, 1000, 4097 };
            for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
                for (int rev = 0; rev < 2; rev++) {
                    tcase_t c = base(ns[i], ns[i] > 1000 ? 64 : 96, 16, T, rev);
                    if (i % 2) c.pstart = 0.004; /* some with random starts */
                    check_case(gpus[gi], &c, 0);
                }
        }
    END_CHECKS;
}

static void test_options(void **st)
{
    (void)st;
    BEGIN_CHECKS;
    for (int gi = 0; gi < 2; gi++)
        for (int rev = 0; rev < 2; rev++) {
            md_backend_t *g = gpus[gi];
            tcase_t c = base(777, 64, 16, 64, rev);
            c.z = c.D = c.bias = c.state = c.dstate = c.ybwd = 0; /* everything optional off */
            check_case(g, &c, 0);
            c = base(777, 64, 16, 64, rev);
            c.acc = 1; /* y +=, dz +=, y(bwd) +=, dA/dD/dbias += onto presets */
            c.pad = 5; /* row strides with NaN padding */
            check_case(g, &c, 0);
            c = base(600, 64, 16, 256, rev);
            c.edge_starts = 1; /* starts at 0 and around the chunk edges T-1, T, T+1, 2T-1 */
            c.pstart = 0.002;
            check_case(g, &c, 0);
            c = base(300, 64, 16, 64, rev);
            c.edge_starts = 1;
            c.state = 0; /* no h0 (zero), h_last not returned */
            check_case(g, &c, 0);
            c = base(1000, 64, 8, 256, rev); /* d_state 8 */
            c.pstart = 0.003;
            check_case(g, &c, 0);
            c = base(517, 40, 5, 100, rev); /* odd shapes: Di 40, N 5, T 100 */
            c.pstart = 0.01;
            c.pad = 3;
            check_case(g, &c, 0);
            c = base(300, 512, 16, 256, rev); /* d_inner 512 */
            c.acc = 1;
            check_case(g, &c, 0);
            c = base(700, 160, 16, 64, rev); /* d_inner not a multiple of the 64-channel block */
            check_case(g, &c, 0);
        }
    END_CHECKS;
}

/* Two pieces with state/dstate carried equal one piece (and the CPU op on the whole). */
static void test_pieces(void **st)
{
    (void)st;
    BEGIN_CHECKS;
    for (int gi = 0; gi < 2; gi++)
        for (int rev = 0; rev < 2; rev++) {
            tcase_t c = base(1500, 64, 16, 256, rev);
            c.pstart = 0.002;
            check_case(gpus[gi], &c, 512);
            c = base(333, 64, 16, 64, rev);
            check_case(gpus[gi], &c, 128);
        }
    END_CHECKS;
}

/* The backward walks groups of chunks (~16k positions); small groups (MD_TSCAN_GROUP) cover the
 * dstate carry and the dA/dD/dbias accumulation across groups at lengths the stand-in can run. */
static void test_groups(void **st)
{
    (void)st;
    BEGIN_CHECKS;
    setenv("MD_TSCAN_GROUP", "200", 1); /* T = 64: 3 chunks per group; T >= 200: one chunk */
    for (int gi = 0; gi < 2; gi++)
        for (int rev = 0; rev < 2; rev++) {
            tcase_t c = base(1000, 96, 16, 64, rev);
            c.pstart = 0.003;
            c.acc = 1;
            check_case(gpus[gi], &c, 0);
            c = base(1100, 64, 16, 256, rev);
            c.edge_starts = 1;
            check_case(gpus[gi], &c, 0);
            c = base(900, 64, 8, 64, rev);
            check_case(gpus[gi], &c, 320);
        }
    unsetenv("MD_TSCAN_GROUP");
    END_CHECKS;
}

static void test_long(void **st)
{
    (void)st;
    if (!long_tests) {
        printf("long case (n=100003) skipped (MD_PARITY_QUICK=1)\n");
        return;
    }
    BEGIN_CHECKS;
    for (int gi = 0; gi < 2; gi++) {
        tcase_t c = base(100003, 512, 16, 256, gi);
        c.pstart = 0.0001;
        check_case(gpus[gi], &c, 0);
    }
    END_CHECKS;
}

/* MD_TSCAN_BENCH=1: times one layer's training scan at the target shape (n = 131072 or
 * MD_TSCAN_BENCH_N, d_inner 512, d_state 16, T = 256, both directions, z/D/dt_bias, random
 * starts off) on each GPU mode: forward and backward per direction, wall time around be->sync. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_bench(void **st)
{
    (void)st;
    const char *b = getenv("MD_TSCAN_BENCH");
    if (!b || atoi(b) <= 0) return;
    const char *bn = getenv("MD_TSCAN_BENCH_N");
    const int64_t n = bn && atoll(bn) > 0 ? atoll(bn) : 131072;
    const int Di = 512, N = 16, T = 256, reps = 5;
    for (int gi = 0; gi < 2; gi++) {
        md_backend_t *g = gpus[gi];
        tcase_t c = base(n, Di, N, T, 0);
        new_seed();
        tdata_t s;
        tdata_make(g, &c, &s);
        tout_t o;
        tout_init(&c, &s, &o);
        tdev_t v;
        gpu_piece(g, &c, &s, 0, n, 0, &o, &v); /* uploads and a first forward (warm-up) */
        md_tscan_t d;
        memset(&d, 0, sizeof d);
        const size_t as = asz(g);
        d.x = v.x; d.ldx = s.ld; d.dt = v.dt; d.lddt = s.ld;
        d.B = v.bc; d.C = (char *)v.bc + N * as; d.ldbc = s.ldbc;
        d.z = v.z; d.ldz = s.ld; d.A = v.A; d.D = v.D; d.dt_bias = v.bias;
        d.T = T; d.chunk_states = v.cs; d.state = v.h;
        d.dy = v.dy; d.lddy = s.ld; d.dx = v.dx; d.lddx = s.ld; d.ddt = v.ddt; d.ldddt = s.ld;
        d.dB = v.dbc; d.dC = (char *)v.dbc + N * as; d.lddbc = s.lddbc;
        d.dz = v.dz; d.lddz = s.ld; d.dz_accumulate = 1;
        d.dA_log = v.dA; d.dD = v.dD; d.ddt_bias = v.db; d.dstate = v.dh;
        d.y = v.yb; d.ldy = s.ld; d.y_accumulate = 1;
        double tf = 0, tb = 0;
        for (int r = 0; r <= reps; r++)
            for (int rev = 0; rev < 2; rev++) {
                d.reverse = rev;
                assert_int_equal(g->sync(g), 0);
                double t0 = now_s();
                assert_int_equal(md_cuda_tscan_fwd(g, n, Di, N, &d, v.y, s.ld, rev, NULL), 0);
                assert_int_equal(g->sync(g), 0);
                double t1 = now_s();
                assert_int_equal(md_cuda_tscan_bwd(g, n, Di, N, &d, NULL), 0);
                assert_int_equal(g->sync(g), 0);
                double t2 = now_s();
                if (r > 0) { /* r = 0 warms up */
                    tf += t1 - t0;
                    tb += t2 - t1;
                }
            }
        const double upd = 2.0 * n * Di * N; /* state updates per layer (2 directions) */
        printf("bench %s n=%lld Di=%d N=%d T=%d: per layer (2 directions) forward %.3f ms (%.3f T upd/s), "
               "backward %.3f ms (%.3f T upd/s)\n", gi ? "bf16" : "fp32", (long long)n, Di, N, T, 1e3 * tf / reps,
               upd * reps / tf * 1e-12, 1e3 * tb / reps, upd * reps / tb * 1e-12);
        fflush(stdout);
        gpu_piece(g, &c, &s, 0, n, 1, &o, &v); /* frees the device buffers */
        tout_free(&o);
        tdata_free(&s);
    }
}

/* Shapes outside what the kernels support fail with an error instead of computing garbage. */
static void test_errors(void **st)
{
    (void)st;
    md_tscan_t d;
    memset(&d, 0, sizeof d);
    d.T = 64;
    float dummy[64];
    d.x = d.dt = d.B = d.C = dummy;
    d.A = dummy;
    d.chunk_states = dummy;
    assert_true(md_cuda_tscan_fwd(gpus[0], 4, 8, 17, &d, dummy, 8, 0, NULL) < 0); /* N > 16 */
    d.T = 0;
    assert_true(md_cuda_tscan_fwd(gpus[0], 4, 8, 16, &d, dummy, 8, 0, NULL) < 0);
    assert_true(md_cuda_tscan_bwd(gpus[0], 4, 8, 16, &d, NULL) < 0);
    d.T = 64;
    assert_true(md_cuda_tscan_bwd(gpus[0], 4, 8, 16, &d, NULL) < 0); /* no dy/dx/... */
}

int main(void)
{
    const char *q = getenv("MD_PARITY_QUICK"), *only = getenv("MD_PARITY_ONLY");
    long_tests = !(q && atoi(q) > 0);
    if (only && *only) cmocka_set_test_filter(only); /* e.g. MD_PARITY_ONLY=test_pieces */
    if (md_cuda_device_count() <= 0) {
        fprintf(stderr, "gpu_train_scan: no CUDA device, skipped\n");
        return 77;
    }
    cpu = md_backend_cpu_open(0);
    gpus[0] = md_backend_open("cuda", "fp32", 0);
    gpus[1] = md_backend_open("cuda", "bf16", 0);
    if (!cpu || !gpus[0] || !gpus[1]) {
        fprintf(stderr, "gpu_train_scan: could not open the backends\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lengths), cmocka_unit_test(test_options), cmocka_unit_test(test_pieces),
        cmocka_unit_test(test_groups),
        cmocka_unit_test(test_long),    cmocka_unit_test(test_errors),  cmocka_unit_test(test_bench),
    };
    int r = cmocka_run_group_tests_name("gpu_train_scan", tests, NULL, NULL);
    printf("\n== train scan summary: %d checks, %d failed; worst ||gpu-cpu||/||cpu||\n", n_checks, n_fail);
    printf("%-6s %12s %12s\n", "op", "fp32", "bf16");
    printf("%-6s %12.3g %12.3g\n", "fwd", worst[0][0], worst[1][0]);
    printf("%-6s %12.3g %12.3g\n", "bwd", worst[0][1], worst[1][1]);
    gpus[0]->destroy(gpus[0]);
    gpus[1]->destroy(gpus[1]);
    cpu->destroy(cpu);
    return r;
}
