/* gpu_pool.c: the CUDA backend's output-reduction ops (kernels/pool.cu: pool_sum, gather_rows,
 * pinned host buffers) against the CPU backend (the oracle), in fp32 and bf16 mode, on random
 * inputs: odd widths (1, 33, 256), pieces with a row offset and a row stride, segments that
 * overlap, cross the piece or lie outside it, accumulation into non-zero sums; then the forward
 * pass's pooled means and selected rows (md_forward_opts_t) on the GPU against the CPU and against
 * the GPU's own full per-row output, with position chunks shorter than the segments.
 * Bounds on ||gpu - cpu|| / ||cpu||: pool_sum 1e-5 (act inputs rounded to bf16 first in bf16
 * mode, so both sum the same values; fp32 vs double accumulation), gather bit-exact; whole model
 * 1e-4 fp32 / 2e-2 bf16 (as tests/gpu_parity.c). Needs a CUDA device; exits 77 (skipped)
 * without one. MD_POOL_BENCH=1 also times pool_sum against downloading the rows. */
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

static md_backend_t *cpu;
static md_backend_t *gpus[2]; /* fp32, bf16 */
static double worst[2][3];    /* [mode][pool, gather, model] */

static uint64_t rng = 88172645463325252ull;
static uint64_t next_u64(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}
static float urand(void) { return (next_u64() >> 40) * (1.0f / 16777216.0f); }
static int64_t irand(int64_t n) { return (int64_t)(next_u64() % (uint64_t)n); }

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

static float *rand_act(md_backend_t *g, int64_t n)
{
    float *a = malloc((n > 0 ? n : 1) * sizeof *a);
    for (int64_t i = 0; i < n; i++) {
        a[i] = 2.0f * urand() - 0.7f;
        if (g->act_dtype == MD_DT_BF16) a[i] = bf16_round(a[i]);
    }
    return a;
}

static void *up(md_backend_t *be, const void *h, size_t bytes)
{
    void *d = be->alloc(be, bytes ? bytes : 1);
    assert_non_null(d);
    assert_int_equal(be->upload(be, d, h, bytes), 0);
    return d;
}
static void *up_act(md_backend_t *be, const float *h, int64_t n)
{
    void *d = be->alloc(be, (n > 0 ? n : 1) * md_dtype_size(be->act_dtype));
    assert_non_null(d);
    assert_int_equal(be->upload_act(be, d, h, n), 0);
    return d;
}

static double relerr(const float *a, const float *ref, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i])) return INFINITY;
        num += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void note(int mode, int op, double e)
{
    if (e > worst[mode][op]) worst[mode][op] = e;
}

/* pool_sum on a piece [r0, r0+n) of rows with row stride ldx into acc with random start values. */
static void pool_case(int64_t n, int W, int64_t ldx, int64_t r0, int nseg)
{
    int64_t *beg = malloc(nseg * sizeof *beg), *end = malloc(nseg * sizeof *end);
    for (int i = 0; i < nseg; i++) {   /* around the piece: inside, crossing, outside, overlapping */
        int64_t a = r0 - 5 + irand(n + 10), len = 1 + irand(n + 3);
        beg[i] = a;
        end[i] = a + len;
    }
    for (int mode = 0; mode < 2; mode++) {
        md_backend_t *g = gpus[mode];
        float *x = rand_act(g, n * ldx);
        float *acc0 = malloc((size_t)nseg * W * sizeof *acc0);
        for (int64_t i = 0; i < (int64_t)nseg * W; i++) acc0[i] = urand() - 0.5f;
        float *want = malloc((size_t)nseg * W * sizeof *want), *got = malloc((size_t)nseg * W * sizeof *got);
        memcpy(want, acc0, (size_t)nseg * W * sizeof *want);
        assert_int_equal(cpu->pool_sum(cpu, n, W, x, ldx, r0, nseg, beg, end, want), 0);
        void *dx = up_act(g, x, n * ldx);
        int64_t *db = up(g, beg, nseg * sizeof *beg), *de = up(g, end, nseg * sizeof *end);
        float *dacc = up(g, acc0, (size_t)nseg * W * sizeof *acc0);
        assert_int_equal(g->pool_sum(g, n, W, dx, ldx, r0, nseg, db, de, dacc), 0);
        assert_int_equal(g->sync(g), 0);
        assert_int_equal(g->download(g, got, dacc, (size_t)nseg * W * sizeof *got), 0);
        double e = relerr(got, want, (int64_t)nseg * W);
        note(mode, 0, e);
        if (!(e < 1e-5))
            fail_msg("pool_sum %s n=%lld W=%d ldx=%lld r0=%lld nseg=%d: rel err %.3g", mode ? "bf16" : "fp32",
                     (long long)n, W, (long long)ldx, (long long)r0, nseg, e);
        g->free(g, dx);
        g->free(g, db);
        g->free(g, de);
        g->free(g, dacc);
        free(x);
        free(acc0);
        free(want);
        free(got);
    }
    free(beg);
    free(end);
}

static void test_pool_sum(void **state)
{
    (void)state;
    static const int Ws[] = { 1, 33, 256 };
    static const int64_t ns[] = { 1, 5, 300 };
    for (int wi = 0; wi < 3; wi++)
        for (int ni = 0; ni < 3; ni++) {
            pool_case(ns[ni], Ws[wi], Ws[wi], 0, 1);
            pool_case(ns[ni], Ws[wi], Ws[wi] + 3, 1000, 7);
        }
    pool_case(2049, 64, 64, 17, 3);   /* long segments: many rows per lane */
}

static void test_gather_rows(void **state)
{
    (void)state;
    static const int Ws[] = { 1, 33, 256 };
    for (int wi = 0; wi < 3; wi++)
        for (int mode = 0; mode < 3; mode++) {   /* act fp32, act bf16, F32 rows on the bf16 backend */
            md_backend_t *g = gpus[mode ? 1 : 0];
            const int f32 = mode == 2;
            const int W = Ws[wi];
            const int64_t n = 301, ldx = W + 5, r0 = 40;
            int64_t rows[64];
            int nr = 0;
            for (int64_t r = r0; r < r0 + n && nr < 64; r += 1 + irand(9)) rows[nr++] = r;
            rows[nr - 1] = r0 + n - 1;
            float *x = rand_act(f32 ? gpus[0] : g, n * ldx);
            float *want = malloc((size_t)nr * W * sizeof *want), *got = malloc((size_t)nr * W * sizeof *got);
            assert_int_equal(cpu->gather_rows(cpu, nr, W, x, ldx, r0, rows, want, 0), 0);
            const size_t es = f32 ? sizeof(float) : md_dtype_size(g->act_dtype);
            void *dx = f32 ? up(g, x, (size_t)n * ldx * sizeof *x) : up_act(g, x, n * ldx);
            void *dout = g->alloc(g, (size_t)nr * W * es);
            int64_t *drows = up(g, rows, nr * sizeof *rows);
            assert_int_equal(g->gather_rows(g, nr, W, dx, ldx, r0, drows, dout, f32), 0);
            assert_int_equal(g->sync(g), 0);
            if (f32) assert_int_equal(g->download(g, got, dout, (size_t)nr * W * sizeof *got), 0);
            else assert_int_equal(g->download_act(g, got, dout, (int64_t)nr * W), 0);
            assert_memory_equal(got, want, (size_t)nr * W * sizeof *got);
            note(mode ? 1 : 0, 1, relerr(got, want, (int64_t)nr * W));
            g->free(g, dx);
            g->free(g, dout);
            g->free(g, drows);
            free(x);
            free(want);
            free(got);
        }
}

static void test_host_buffers(void **state)
{
    (void)state;
    md_backend_t *g = gpus[0];
    assert_non_null(g->host_alloc);
    assert_non_null(g->host_free);
    float *h = g->host_alloc(g, 1000 * sizeof(float));
    assert_non_null(h);
    float src[1000];
    for (int i = 0; i < 1000; i++) src[i] = (float)i - 17.5f;
    void *d = up(g, src, sizeof src);
    assert_int_equal(g->download(g, h, d, sizeof src), 0);
    assert_memory_equal(h, src, sizeof src);
    g->free(g, d);
    g->host_free(g, h);
}

/* --- the forward pass's output options --------------------------------------------------------- */

typedef struct {
    int W, V;
    float *hidden, *logits, *mean;
    int64_t rows_seen;
} cap_t;

static int rows_cb(void *ud, int64_t row0, int64_t nrows, const float *hidden, const float *logits)
{
    cap_t *c = ud;
    memcpy(c->hidden + row0 * c->W, hidden, (size_t)nrows * c->W * sizeof(float));
    if (logits) memcpy(c->logits + row0 * c->V, logits, (size_t)nrows * c->V * sizeof(float));
    c->rows_seen += nrows;
    return 0;
}

static int pool_cb(void *ud, int nseg, const float *mean)
{
    cap_t *c = ud;
    memcpy(c->mean, mean, (size_t)nseg * c->W * sizeof(float));
    return 0;
}

static md_model_t *small_model(md_backend_t *be, int rcps)
{
    md_config_t cfg;
    md_config_init(&cfg);
    cfg.rcps = rcps;
    cfg.d_model = 32;
    cfg.n_layer = 2;
    cfg.vocab_size_orig = 12;
    assert_int_equal(md_config_finish(&cfg, "gpu_pool"), 0);
    md_weights_t *w = md_weights_alloc(&cfg);
    assert_non_null(w);
    md_weights_init(w, 5 + rcps);
    md_model_t *m = md_model_from_weights(w, be);
    assert_non_null(m);
    return m;
}

static void run(md_model_t *m, const int32_t *ids, int64_t n, const int64_t *off, int nseq, const md_forward_opts_t *o,
                cap_t *c)
{
    c->W = md_model_width(m);
    c->V = md_model_config(m)->vocab_size;
    c->hidden = calloc((size_t)n * c->W, sizeof(float));
    c->logits = calloc((size_t)n * c->V, sizeof(float));
    c->mean = calloc((size_t)(o->npool > 0 ? o->npool : 1) * c->W, sizeof(float));
    c->rows_seen = 0;
    assert_int_equal(md_model_forward(m, ids, n, off, nseq, o, rows_cb, c), 0);
}

static void cap_free(cap_t *c)
{
    free(c->hidden);
    free(c->logits);
    free(c->mean);
}

static void test_forward_outputs(void **state)
{
    (void)state;
    enum { N = 300 };
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = 7 + (int)irand(5);
    const int64_t off[] = { 0, 100, 101, 250, N };
    const int64_t pbeg[] = { 0, 10, 100, 101, 200 }, pend[] = { 100, 120, 121, 250, N };
    const int npool = 5;
    const int64_t sel[] = { 0, 1, 36, 37, 38, 99, 100, 180, 299 };
    const int nsel = 9;
    for (int rcps = 0; rcps < 2; rcps++) {
        md_model_t *mc = small_model(cpu, rcps);
        md_forward_opts_t o = { .layer = -1, .want_logits = 1, .rows = MD_ROWS_SELECTED, .nsel = nsel, .sel = sel,
                                .npool = npool, .pool_beg = pbeg, .pool_end = pend, .emit_pool = pool_cb };
        cap_t want;
        run(mc, ids, N, off, 4, &o, &want);
        for (int mode = 0; mode < 2; mode++) {
            md_backend_t *g = gpus[mode];
            const int64_t chunk = g->chunk;
            g->chunk = 37;   /* segments and runs of selected rows cross chunk edges */
            md_model_t *mg = small_model(g, rcps);
            cap_t got, full;
            run(mg, ids, N, off, 4, &o, &got);
            md_forward_opts_t fo = { .layer = -1, .want_logits = 1 };
            run(mg, ids, N, off, 4, &fo, &full);
            g->chunk = chunk;
            const int W = got.W, V = got.V;
            assert_int_equal(got.rows_seen, nsel);
            /* against the CPU */
            double e = relerr(got.mean, want.mean, (int64_t)npool * W);
            for (int k = 0; k < nsel; k++) {
                double eh = relerr(got.hidden + sel[k] * W, want.hidden + sel[k] * W, W);
                double el = relerr(got.logits + sel[k] * V, want.logits + sel[k] * V, V);
                e = eh > e ? eh : e;
                e = el > e ? el : e;
            }
            note(mode, 2, e);
            if (!(e < (mode ? 2e-2 : 1e-4))) fail_msg("forward outputs %s rcps=%d: rel err %.3g", mode ? "bf16" : "fp32", rcps, e);
            /* against the GPU's own full output: selected rows and their logits bit-exact (the
             * same values gathered), means of the same values */
            for (int k = 0; k < nsel; k++) {
                assert_memory_equal(got.hidden + sel[k] * W, full.hidden + sel[k] * W, (size_t)W * sizeof(float));
                assert_memory_equal(got.logits + sel[k] * V, full.logits + sel[k] * V, (size_t)V * sizeof(float));
            }
            for (int i = 0; i < npool; i++)
                for (int j = 0; j < W; j++) {
                    double mu = 0;
                    for (int64_t r = pbeg[i]; r < pend[i]; r++) mu += full.hidden[r * W + j];
                    mu /= (double)(pend[i] - pbeg[i]);
                    if (!(fabs(mu - got.mean[i * W + j]) <= 1e-5 * (1 + fabs(mu))))
                        fail_msg("pooled mean %s seg %d col %d: %.9g vs host %.9g", mode ? "bf16" : "fp32", i, j,
                                 got.mean[i * W + j], mu);
                }
            cap_free(&got);
            cap_free(&full);
            md_model_free(mg);
        }
        cap_free(&want);
        md_model_free(mc);
    }
}

/* MD_POOL_BENCH=1: one chunk of 49152 rows x 256 (bf16): pool_sum as one segment and as 12
 * segments of 4096, against download_act of the same rows (what the plan did before). */
static void test_bench(void **state)
{
    (void)state;
    const char *b = getenv("MD_POOL_BENCH");
    if (!b || atoi(b) <= 0) skip();
    md_backend_t *g = gpus[1];
    const int64_t n = 49152;
    const int W = 256;
    float *x = rand_act(g, n * W), *host = malloc((size_t)n * W * sizeof *host);
    void *dx = up_act(g, x, n * W);
    int64_t beg[12], end[12];
    for (int i = 0; i < 12; i++) beg[i] = i * 4096, end[i] = (i + 1) * 4096;
    int64_t one_b = 0, one_e = n;
    int64_t *db = up(g, beg, sizeof beg), *de = up(g, end, sizeof end), *d1b = up(g, &one_b, 8), *d1e = up(g, &one_e, 8);
    float *acc = g->alloc(g, 12 * W * sizeof(float));
    assert_int_equal(g->zero(g, acc, 12 * W * sizeof(float)), 0);
    for (int k = 0; k < 3; k++) {
        const int reps = 20;
        assert_int_equal(g->sync(g), 0);
        double t0 = md_realtime();
        for (int r = 0; r < reps; r++) {
            if (k == 0) assert_int_equal(g->pool_sum(g, n, W, dx, W, 0, 1, d1b, d1e, acc), 0);
            else if (k == 1) assert_int_equal(g->pool_sum(g, n, W, dx, W, 0, 12, db, de, acc), 0);
            else assert_int_equal(g->download_act(g, host, dx, n * W), 0);
        }
        assert_int_equal(g->sync(g), 0);
        double t = (md_realtime() - t0) / reps;
        printf("bench\t%s\t%lld rows x %d bf16\t%.3f ms\t%.1f GB/s read\n",
               k == 0 ? "pool_sum 1 segment" : k == 1 ? "pool_sum 12 segments" : "download_act (before)",
               (long long)n, W, t * 1e3, n * W * 2.0 / t / 1e9);
    }
    g->free(g, dx);
    g->free(g, db);
    g->free(g, de);
    g->free(g, d1b);
    g->free(g, d1e);
    g->free(g, acc);
    free(x);
    free(host);
}

int main(void)
{
    if (md_cuda_device_count() <= 0) {
        fprintf(stderr, "gpu_pool: no CUDA device, skipped\n");
        return 77;
    }
    cpu = md_backend_cpu_open(0);
    gpus[0] = md_backend_open("cuda", "fp32", 0);
    gpus[1] = md_backend_open("cuda", "bf16", 0);
    if (!cpu || !gpus[0] || !gpus[1]) {
        fprintf(stderr, "gpu_pool: could not open the backends\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_sum),      cmocka_unit_test(test_gather_rows), cmocka_unit_test(test_host_buffers),
        cmocka_unit_test(test_forward_outputs), cmocka_unit_test(test_bench),
    };
    int r = cmocka_run_group_tests_name("gpu_pool", tests, NULL, NULL);
    printf("\n== pool summary: worst ||gpu-cpu||/||cpu||\n%-8s %12s %12s\n", "op", "fp32", "bf16");
    static const char *names[3] = { "pool_sum", "gather", "model" };
    for (int op = 0; op < 3; op++) printf("%-8s %12.3g %12.3g\n", names[op], worst[0][op], worst[1][op]);
    gpus[0]->destroy(gpus[0]);
    gpus[1]->destroy(gpus[1]);
    cpu->destroy(cpu);
    return r;
}
