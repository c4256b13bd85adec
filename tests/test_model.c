/* test_model.c: the model plan on the CPU backend. Golden tests against vectors of the original
 * Caduceus implementation (tests/data/conformance/, copied from shared/conformance), reverse-
 * complement equivariance of PS, invariance to chunk size, thread count and packing, short
 * sequences, checkpoint round trips and shape errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "md.h"
#include "model.h"
#include "npy.h"

typedef struct {
    int64_t n;
    int W, V;
    float *hidden, *logits;
} outbuf_t;

static int collect(void *ud, int64_t row0, int64_t nrows, const float *hidden, const float *logits)
{
    outbuf_t *o = ud;
    memcpy(o->hidden + row0 * o->W, hidden, nrows * o->W * sizeof(float));
    if (logits && o->logits) memcpy(o->logits + row0 * o->V, logits, nrows * o->V * sizeof(float));
    return 0;
}

static void run(md_model_t *m, const int32_t *ids, int64_t n, const int64_t *off, int nseq, outbuf_t *o)
{
    o->n = n;
    o->W = md_model_width(m);
    o->V = md_model_config(m)->vocab_size;
    o->hidden = malloc(n * o->W * sizeof(float));
    o->logits = malloc(n * o->V * sizeof(float));
    md_forward_opts_t opts = { .layer = -1, .want_logits = 1 };
    assert_int_equal(md_model_forward(m, ids, n, off, nseq, &opts, collect, o), 0);
}

static void outbuf_free(outbuf_t *o) { free(o->hidden); free(o->logits); }

static double rel_err(const float *a, const float *ref, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static double max_abs_diff(const float *a, const float *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) { double d = fabs((double)a[i] - b[i]); if (d > m || d != d) m = d; }
    return m;
}

static int32_t *load_ids(const char *path, int64_t *n)
{
    npy_array_t a;
    assert_int_equal(npy_read(path, &a), 0);
    int32_t *ids = malloc(a.numel * sizeof *ids);
    for (int64_t i = 0; i < a.numel; i++)
        ids[i] = a.dtype == NPY_I64 ? (int32_t)((int64_t *)a.data)[i] : ((int32_t *)a.data)[i];
    *n = a.numel;
    npy_free(&a);
    return ids;
}

static void golden(const char *dir)
{
    char p[512];
    md_backend_t *be = md_backend_cpu_open(2);
    md_model_t *m = md_model_load(dir, be);
    assert_non_null(m);
    int64_t n;
    snprintf(p, sizeof p, "%s/ids_L1000.npy", dir);
    int32_t *ids = load_ids(p, &n);
    assert_int_equal(n, 1000);
    outbuf_t o;
    run(m, ids, n, NULL, 0, &o);
    npy_array_t h, l;
    snprintf(p, sizeof p, "%s/hidden_L1000.npy", dir);
    assert_int_equal(npy_read(p, &h), 0);
    snprintf(p, sizeof p, "%s/logits_L1000.npy", dir);
    assert_int_equal(npy_read(p, &l), 0);
    assert_int_equal(h.numel, n * o.W);
    assert_int_equal(l.numel, n * o.V);
    double eh = rel_err(o.hidden, h.data, h.numel), el = rel_err(o.logits, l.data, l.numel);
    printf("# %s: hidden rel err %.3g, logits rel err %.3g\n", dir, eh, el);
    assert_true(eh <= 1e-4);
    assert_true(el <= 1e-4);
    npy_free(&h);
    npy_free(&l);
    outbuf_free(&o);
    free(ids);
    md_model_free(m);
    be->destroy(be);
}

static void test_golden_ph(void **s) { (void)s; golden("tests/data/conformance/ph_d128_n2"); }
static void test_golden_ps(void **s) { (void)s; golden("tests/data/conformance/ps_d128_n3"); }

static void test_ps_rc_equivariance(void **s)
{
    (void)s;
    md_backend_t *be = md_backend_cpu_open(2);
    md_model_t *m = md_model_load("tests/data/conformance/ps_d128_n3", be);
    assert_non_null(m);
    const md_config_t *c = md_model_config(m);
    int64_t n;
    int32_t *ids = load_ids("tests/data/conformance/ps_d128_n3/ids_L1000.npy", &n);
    int32_t *rc = malloc(n * sizeof *rc);
    for (int64_t i = 0; i < n; i++) rc[i] = c->complement_map[ids[n - 1 - i]];
    outbuf_t a, b;
    run(m, ids, n, NULL, 0, &a);
    run(m, rc, n, NULL, 0, &b);
    double num = 0, den = 0;
    for (int64_t l = 0; l < n; l++)
        for (int v = 0; v < a.V; v++) {
            double x = b.logits[l * a.V + v], y = a.logits[(n - 1 - l) * a.V + c->complement_map[v]];
            num += (x - y) * (x - y);
            den += y * y;
        }
    printf("# PS RC equivariance rel err %.3g\n", sqrt(num / den));
    assert_true(sqrt(num / den) <= 1e-5);
    outbuf_free(&a);
    outbuf_free(&b);
    free(ids);
    free(rc);
    md_model_free(m);
    be->destroy(be);
}

/* Same outputs for any chunk size and thread count (both directions cross chunk edges). */
static void invariance(const char *dir)
{
    md_backend_t *be = md_backend_cpu_open(2);
    md_model_t *m = md_model_load(dir, be);
    assert_non_null(m);
    char p[512];
    snprintf(p, sizeof p, "%s/ids_L1000.npy", dir);
    int64_t n;
    int32_t *ids = load_ids(p, &n);
    outbuf_t ref;
    run(m, ids, n, NULL, 0, &ref);
    const int64_t chunks[] = { 1, 3, 7, 256, 999 };
    for (size_t i = 0; i < sizeof chunks / sizeof *chunks; i++) {
        be->chunk = chunks[i];
        outbuf_t o;
        run(m, ids, n, NULL, 0, &o);
        double e = rel_err(o.hidden, ref.hidden, n * o.W), el = rel_err(o.logits, ref.logits, n * o.V);
        if (e > 0 || el > 0) printf("# chunk %lld: hidden rel diff %.3g logits %.3g\n", (long long)chunks[i], e, el);
        assert_true(e <= 1e-6 && el <= 1e-6);
        outbuf_free(&o);
    }
    md_model_free(m);
    be->destroy(be);
    /* one thread */
    be = md_backend_cpu_open(1);
    m = md_model_load(dir, be);
    outbuf_t o;
    run(m, ids, n, NULL, 0, &o);
    printf("# 1 thread vs 2: max abs diff %.3g\n", max_abs_diff(o.hidden, ref.hidden, n * o.W));
    assert_true(rel_err(o.hidden, ref.hidden, n * o.W) <= 1e-6);
    outbuf_free(&o);
    md_model_free(m);
    be->destroy(be);
    outbuf_free(&ref);
    free(ids);
}

static void test_invariance_ph(void **s) { (void)s; invariance("tests/data/conformance/ph_d128_n2"); }
static void test_invariance_ps(void **s) { (void)s; invariance("tests/data/conformance/ps_d128_n3"); }

/* Packing sequences back to back equals running them one by one; lengths below the conv width. */
static void test_packing(void **s)
{
    (void)s;
    md_backend_t *be = md_backend_cpu_open(2);
    md_model_t *m = md_model_load("tests/data/conformance/ps_d128_n3", be);
    assert_non_null(m);
    int64_t n;
    int32_t *ids = load_ids("tests/data/conformance/ps_d128_n3/ids_L1000.npy", &n);
    const int64_t lens[] = { 1, 2, 3, 5, 300, 17, 672 };
    const int ns = 7;
    int64_t off[8] = { 0 };
    for (int i = 0; i < ns; i++) off[i + 1] = off[i] + lens[i];
    assert_int_equal(off[ns], 1000);
    for (int pass = 0; pass < 2; pass++) {
        be->chunk = pass ? 97 : 131072;
        outbuf_t packed;
        run(m, ids, n, off, ns, &packed);
        for (int i = 0; i < ns; i++) {
            outbuf_t one;
            run(m, ids + off[i], lens[i], NULL, 0, &one);
            double e = rel_err(packed.hidden + off[i] * one.W, one.hidden, lens[i] * one.W);
            assert_true(e <= 1e-6);
            for (int64_t k = 0; k < lens[i] * one.W; k++) assert_true(isfinite(one.hidden[k]));
            outbuf_free(&one);
        }
        outbuf_free(&packed);
    }
    free(ids);
    md_model_free(m);
    be->destroy(be);
}

static md_model_t *random_model(md_backend_t *be, md_arch_t arch, int rcps, md_bidir_t strat, int tie, int rms)
{
    md_config_t c;
    md_config_init(&c);
    c.arch = arch;
    c.rcps = rcps;
    c.d_model = 32;
    c.n_layer = 2;
    c.bidir_strategy = strat;
    c.bidir_weight_tie = tie;
    c.rms_norm = rms;
    if (arch == MD_ARCH_MAMBA) c.vocab_size_orig = 12;
    assert_int_equal(md_config_finish(&c, "test"), 0);
    md_weights_t *w = md_weights_alloc(&c);
    assert_non_null(w);
    md_weights_init(w, 7);
    /* move norms and D off their initial values so that they matter */
    for (int i = 0; i < w->n; i++)
        if (w->p[i].kind == MD_P_NORM || w->p[i].kind == MD_P_D || w->p[i].kind == MD_P_NORM_F)
            for (size_t k = 0; k < w->p[i].numel; k++) w->p[i].data[k] += 0.1f * (float)((k * 7919) % 13) / 13.0f;
    return md_model_from_weights(w, be);
}

/* Causal Mamba: the output at t does not depend on tokens after t. Chunking still invariant. */
static void test_mamba_causal(void **s)
{
    (void)s;
    md_backend_t *be = md_backend_cpu_open(2);
    md_model_t *m = random_model(be, MD_ARCH_MAMBA, 0, MD_BIDIR_ADD, 1, 1);
    assert_non_null(m);
    int32_t ids[200], ids2[200];
    for (int i = 0; i < 200; i++) ids[i] = ids2[i] = 7 + (i * 31 + i / 7) % 4;
    for (int i = 120; i < 200; i++) ids2[i] = 7 + (ids[i] - 7 + 1) % 4;
    outbuf_t a, b;
    run(m, ids, 200, NULL, 0, &a);
    be->chunk = 33;
    run(m, ids2, 200, NULL, 0, &b);
    assert_true(max_abs_diff(a.logits, b.logits, 120 * a.V) <= 1e-5);
    assert_true(max_abs_diff(a.logits + 120 * a.V, b.logits + 120 * a.V, 80 * a.V) > 1e-3);
    outbuf_free(&a);
    outbuf_free(&b);
    md_model_free(m);
    be->destroy(be);
}

/* Variants without conformance vectors: LayerNorm, untied, ew_multiply; chunk invariance, and
 * the Ph bidirectional model does see tokens on both sides. */
static void test_variants(void **s)
{
    (void)s;
    struct { md_bidir_t strat; int tie, rms, rcps; } v[] = {
        { MD_BIDIR_ADD, 0, 1, 0 }, { MD_BIDIR_EW_MULTIPLY, 1, 1, 0 }, { MD_BIDIR_ADD, 1, 0, 1 }, { MD_BIDIR_ADD, 0, 1, 1 } };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        md_backend_t *be = md_backend_cpu_open(2);
        md_model_t *m = random_model(be, MD_ARCH_CADUCEUS, v[i].rcps, v[i].strat, v[i].tie, v[i].rms);
        assert_non_null(m);
        int32_t ids[300];
        for (int k = 0; k < 300; k++) ids[k] = 7 + (k * 13 + k / 5) % 5;
        outbuf_t a, b;
        run(m, ids, 300, NULL, 0, &a);
        be->chunk = 41;
        run(m, ids, 300, NULL, 0, &b);
        assert_true(rel_err(b.hidden, a.hidden, 300 * a.W) <= 1e-6);
        for (int64_t k = 0; k < 300 * a.W; k++) assert_true(isfinite(a.hidden[k]));
        outbuf_free(&a);
        outbuf_free(&b);
        md_model_free(m);
        be->destroy(be);
    }
}

/* Parameter count of the Caduceus 131k configuration (model-spec 3.2) and a save/load round trip. */
static void test_params(void **s)
{
    (void)s;
    md_config_t c;
    md_config_init(&c);
    assert_int_equal(md_config_finish(&c, "test"), 0);
    md_weights_t *w = md_weights_alloc(&c);
    assert_non_null(w);
    assert_int_equal(w->numel, 7725312);
    md_weights_free(w);

    md_config_load(&c, "tests/data/conformance/ps_d128_n3/config.json");
    w = md_weights_alloc(&c);
    assert_int_equal(md_weights_load(w, "tests/data/conformance/ps_d128_n3/model.safetensors"), 0);
    char tmpl[] = "/tmp/md_test_model_XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", tmpl);
    assert_int_equal(md_weights_save(w, p), 0);
    md_weights_t *w2 = md_weights_alloc(&c);
    assert_int_equal(md_weights_load(w2, p), 0);
    assert_memory_equal(w->slab, w2->slab, w->numel * sizeof(float));
    snprintf(p, sizeof p, "%s/config.json", tmpl);
    assert_int_equal(md_config_save(&c, p), 0);
    md_config_t c2;
    assert_int_equal(md_config_load(&c2, p), 0);
    assert_int_equal(c2.d_model, c.d_model);
    assert_int_equal(c2.rcps, 1);
    assert_int_equal(c2.vocab_size, 16);
    /* a checkpoint of the wrong shape: the Ph weights under the PS config */
    md_weights_t *w3 = md_weights_alloc(&c);
    assert_true(md_weights_load(w3, "tests/data/conformance/ph_d128_n2/model.safetensors") < -1);
    assert_non_null(strstr(md_last_error(), "missing tensor"));
    md_config_t c3 = c;
    c3.d_model = 64;
    md_config_finish(&c3, "test");
    md_weights_t *w4 = md_weights_alloc(&c3);
    assert_true(md_weights_load(w4, "tests/data/conformance/ps_d128_n3/model.safetensors") < -1);
    assert_non_null(strstr(md_last_error(), "has shape"));
    md_weights_free(w);
    md_weights_free(w2);
    md_weights_free(w3);
    md_weights_free(w4);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpl);
    assert_int_equal(system(cmd), 0);
}

static void test_missing_config(void **s)
{
    (void)s;
    md_backend_t *be = md_backend_cpu_open(1);
    assert_null(md_model_load("tests/data/no-such-model-dir", be));
    assert_non_null(strstr(md_last_error(), "config.json"));
    be->destroy(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_ph),
        cmocka_unit_test(test_golden_ps),
        cmocka_unit_test(test_ps_rc_equivariance),
        cmocka_unit_test(test_invariance_ph),
        cmocka_unit_test(test_invariance_ps),
        cmocka_unit_test(test_packing),
        cmocka_unit_test(test_mamba_causal),
        cmocka_unit_test(test_variants),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_missing_config),
    };
    md_log_level = MD_LOG_OFF;
    return cmocka_run_group_tests_name("model", tests, NULL, NULL);
}
