/* test_pipeline.c: the embed/predict pipeline (lib/pipeline.c) on small random models built in
 * memory (Ph, PS, Mamba): output rows and BED blocks do not depend on the token budget of a
 * packed batch; Ph strand averaging equals the mean of the forward pass and the flipped
 * reverse-complement pass; PS combining of halves; probabilities sum to one; pooled rows are the
 * mean of per-base rows; option checks; a failed output leaves no files behind. The forward
 * pass's output options (model.h) against its full per-row output: backend-pooled segment means
 * (crossing position chunks, overlapping) equal host means, selected rows equal the full rows,
 * bad options are refused; embed's pooled windows equal the means of its per-base rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend.h"
#include "md.h"
#include "model.h"
#include "npy.h"
#include "pipeline.h"
#include "tokenizer.h"

static char tmpdir[256];

static md_model_t *small_model(md_backend_t *be, int arch, int rcps)
{
    md_config_t cfg;
    md_config_init(&cfg);
    cfg.arch = arch ? MD_ARCH_MAMBA : MD_ARCH_CADUCEUS;
    cfg.rcps = rcps;
    cfg.d_model = 16;
    cfg.n_layer = 2;
    cfg.vocab_size_orig = 12;
    if (arch) cfg.residual_in_fp32 = 1;
    assert_int_equal(md_config_finish(&cfg, "test"), 0);
    md_weights_t *w = md_weights_alloc(&cfg);
    assert_non_null(w);
    md_weights_init(w, 7 + arch + 2 * rcps);
    md_model_t *m = md_model_from_weights(w, be);
    assert_non_null(m);
    return m;
}

/* Deterministic pseudo-random bases (some N, some soft-masked). */
static void make_seq(md_seq_t *s, const char *name, int64_t len, uint32_t seed)
{
    memset(s, 0, sizeof *s);
    s->kind = MD_SEQ_FASTA;
    s->name = strdup(name);
    s->seq = malloc(len ? len : 1);
    s->len = len;
    s->tid = -1;
    s->beg = s->end = -1;
    s->strand = '+';
    for (int64_t i = 0; i < len; i++) {
        seed = seed * 1664525u + 1013904223u;
        uint8_t c = (seed >> 24) % 23 == 0 ? MD_BASE_N : (seed >> 24) & 3;
        if ((seed >> 16) % 7 == 0) c |= MD_BASE_SOFTMASK;
        s->seq[i] = c;
    }
}

static void free_seq(md_seq_t *s)
{
    free(s->name);
    free(s->seq);
}

static void revcomp_seq(const md_seq_t *in, md_seq_t *out, const char *name)
{
    make_seq(out, name, in->len, 1);
    md_revcomp_codes(in->seq, out->seq, in->len);
}

static char *path_in_tmp(const char *name)
{
    static char buf[8][512];
    static int k;
    char *p = buf[k++ & 7];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

/* Runs the pipeline over recs into path; returns the array (caller frees) and the BED text. */
static float *run(md_model_t *m, const pl_opts_t *o, md_seq_t *recs, int n, const char *name,
                  int64_t *rows, int *cols, char *bed, size_t bedn)
{
    const char *path = path_in_tmp(name);
    pl_out_t *out = pl_out_open(path, o, md_model_config(m), md_model_width(m), 0, NULL);
    assert_non_null(out);
    pl_t *p = pl_init(m, o, out);
    assert_non_null(p);
    for (int i = 0; i < n; i++) assert_int_equal(pl_add(p, &recs[i]), 0);
    assert_int_equal(pl_flush(p), 0);
    pl_destroy(p);
    assert_int_equal(pl_out_close(out), 0);
    npy_array_t a;
    assert_int_equal(npy_read(path, &a), 0);
    assert_int_equal(a.ndim, 2);
    *rows = a.shape[0];
    *cols = (int)a.shape[1];
    float *f = npy_to_f32(&a);
    npy_free(&a);
    char bp[600];
    snprintf(bp, sizeof bp, "%s.bed", path);
    FILE *fp = fopen(bp, "r");
    assert_non_null(fp);
    size_t k = fread(bed, 1, bedn - 1, fp);
    bed[k] = 0;
    fclose(fp);
    return f;
}

static double relerr(const float *a, const float *b, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void test_batching(void **state)
{
    (void)state;
    md_backend_t *be = md_backend_cpu_open(2);
    assert_non_null(be);
    static const int64_t lens[] = { 1, 2, 3, 4, 37, 300, 5, 129 };
    md_seq_t recs[8];
    for (int i = 0; i < 8; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "r%d", i);
        make_seq(&recs[i], nm, lens[i], 11 + i);
    }
    for (int variant = 0; variant < 3; variant++) {
        md_model_t *m = small_model(be, variant == 2, variant == 1);
        for (int task = 0; task < 2; task++) {
            pl_opts_t o;
            pl_opts_init(&o, task ? PL_PREDICT : PL_EMBED);
            if (task == PL_EMBED) o.pool = PL_POOL_NONE;
            if (variant == 2 && task == PL_PREDICT) o.rc = PL_RC_NONE;
            o.window = 50;
            o.stride = 30;
            int64_t r0, r1;
            int c0, c1;
            char bed0[8192], bed1[8192];
            o.batch_tokens = 1;
            float *a = run(m, &o, recs, 8, "b1.npy", &r0, &c0, bed0, sizeof bed0);
            o.batch_tokens = 1 << 20;
            float *b = run(m, &o, recs, 8, "b2.npy", &r1, &c1, bed1, sizeof bed1);
            assert_int_equal(r0, r1);
            assert_int_equal(c0, c1);
            assert_string_equal(bed0, bed1);
            assert_true(relerr(a, b, r0 * c0) < 1e-6);
            /* batches in a worker thread (overlap, as on a GPU): the same rows, bitwise */
            int64_t r2;
            int c2;
            char bed2[8192];
            o.batch_tokens = 64;
            o.overlap = 1;
            float *c = run(m, &o, recs, 8, "b3.npy", &r2, &c2, bed2, sizeof bed2);
            o.overlap = 0;
            float *d = run(m, &o, recs, 8, "b4.npy", &r2, &c2, bed2, sizeof bed2);
            assert_int_equal(r2, r0);
            assert_string_equal(bed2, bed0);
            assert_memory_equal(c, d, (size_t)r2 * c2 * sizeof(float));
            free(c);
            free(d);
            for (int64_t i = 0; i < r0 * c0; i++) assert_true(isfinite(a[i]));
            if (task == PL_PREDICT)
                for (int64_t r = 0; r < r0; r++)
                    assert_true(fabs(a[r * 4] + a[r * 4 + 1] + a[r * 4 + 2] + a[r * 4 + 3] - 1) < 1e-5);
            free(a);
            free(b);
        }
        md_model_free(m);
    }
    for (int i = 0; i < 8; i++) free_seq(&recs[i]);
    be->destroy(be);
}

static void test_strands(void **state)
{
    (void)state;
    md_backend_t *be = md_backend_cpu_open(2);
    md_seq_t x, rc;
    make_seq(&x, "x", 211, 5);
    revcomp_seq(&x, &rc, "rc");
    char bed[4096];
    int64_t rows;
    int cols;
    for (int variant = 0; variant < 2; variant++) {
        md_model_t *m = small_model(be, 0, variant);
        const int D = 16, W = md_model_width(m);
        assert_int_equal(W, variant ? 32 : 16);
        pl_opts_t o;
        pl_opts_init(&o, PL_EMBED);
        o.pool = PL_POOL_NONE;
        o.raw = 1;
        float *f = run(m, &o, &x, 1, "raw.npy", &rows, &cols, bed, sizeof bed);
        assert_int_equal(cols, W);
        float *r = run(m, &o, &rc, 1, "rawrc.npy", &rows, &cols, bed, sizeof bed);
        o.raw = 0;
        float *avg = run(m, &o, &x, 1, "avg.npy", &rows, &cols, bed, sizeof bed);
        assert_int_equal(cols, D);
        assert_non_null(strstr(bed, "\t.\t0\t211"));
        float *avgrc = run(m, &o, &rc, 1, "avgrc.npy", &rows, &cols, bed, sizeof bed);
        o.pool = PL_POOL_MEAN;
        float *mean = run(m, &o, &x, 1, "mean.npy", &rows, &cols, bed, sizeof bed);
        assert_int_equal(rows, 1);
        float *want = malloc(sizeof(float) * 211 * D), *flip = malloc(sizeof(float) * 211 * D);
        for (int t = 0; t < 211; t++)
            for (int c = 0; c < D; c++) {
                if (variant) want[t * D + c] = 0.5f * (f[t * W + c] + f[t * W + 2 * D - 1 - c]);
                else want[t * D + c] = 0.5f * (f[t * W + c] + r[(210 - t) * W + c]);
                flip[t * D + c] = avgrc[(210 - t) * D + c];
            }
        assert_true(relerr(avg, want, 211 * D) < 1e-6);
        assert_true(relerr(flip, avg, 211 * D) < 1e-5);   /* RC invariance */
        double mu[16] = { 0 };
        for (int t = 0; t < 211; t++)
            for (int c = 0; c < D; c++) mu[c] += avg[t * D + c] / 211.0;
        for (int c = 0; c < D; c++) assert_true(fabs(mu[c] - mean[c]) < 1e-5 * (1 + fabs(mu[c])));
        free(f); free(r); free(avg); free(avgrc); free(mean); free(want); free(flip);
        md_model_free(m);
    }
    free_seq(&x);
    free_seq(&rc);
    be->destroy(be);
}

static void test_checks(void **state)
{
    (void)state;
    int lvl = md_log_level;
    md_log_level = MD_LOG_OFF;
    md_backend_t *be = md_backend_cpu_open(1);
    md_model_t *mamba = small_model(be, 1, 0);
    pl_opts_t o;
    pl_opts_init(&o, PL_PREDICT);
    assert_int_equal(pl_opts_check(&o, NULL), 0);
    assert_true(pl_opts_check(&o, md_model_config(mamba)) < -1);   /* rc average, causal */
    o.rc = PL_RC_NONE;
    assert_int_equal(pl_opts_check(&o, md_model_config(mamba)), 0);
    o.pool = PL_POOL_MEAN;
    assert_true(pl_opts_check(&o, NULL) < -1);
    pl_opts_init(&o, PL_EMBED);
    o.layer = 2;
    assert_true(pl_opts_check(&o, md_model_config(mamba)) < -1);
    o.layer = 1;
    assert_int_equal(pl_opts_check(&o, md_model_config(mamba)), 0);
    o.window = 10;
    o.stride = 11;
    assert_true(pl_opts_check(&o, NULL) < -1);
    md_model_free(mamba);
    be->destroy(be);
    md_log_level = lvl;
}

static void test_abort_leaves_nothing(void **state)
{
    (void)state;
    md_backend_t *be = md_backend_cpu_open(1);
    md_model_t *m = small_model(be, 0, 0);
    md_seq_t x;
    make_seq(&x, "x", 50, 3);
    const char *names[] = { "gone.npy", "gone.tsv" };
    for (int k = 0; k < 2; k++) {
        pl_opts_t o;
        pl_opts_init(&o, PL_EMBED);
        pl_out_t *out = pl_out_open(path_in_tmp(names[k]), &o, md_model_config(m), 16, 0, NULL);
        assert_non_null(out);
        pl_t *p = pl_init(m, &o, out);
        assert_int_equal(pl_add(p, &x), 0);
        assert_int_equal(pl_flush(p), 0);
        pl_destroy(p);
        pl_out_abort(out);
    }
    free_seq(&x);
    md_model_free(m);
    be->destroy(be);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s' | grep -v -e '^b[1-4]\\.npy' -e '^raw' -e '^avg' -e '^mean')\"", tmpdir);
    assert_int_equal(system(cmd), 0);
}

/* A link planted at a temporary output name is replaced, never followed: the file it points
 * to keeps its content, and the outputs are complete. */
static void test_planted_link(void **state)
{
    (void)state;
    md_backend_t *be = md_backend_cpu_open(1);
    md_model_t *m = small_model(be, 0, 0);
    md_seq_t x;
    make_seq(&x, "x", 50, 5);
    const char *victim = path_in_tmp("victim.txt");
    FILE *fp = fopen(victim, "w");
    assert_non_null(fp);
    fputs("keep\n", fp);
    fclose(fp);
    const char *names[] = { "linked.npy", "linked.tsv" };
    for (int k = 0; k < 2; k++) {
        char tmp[600];
        if (k == 0) snprintf(tmp, sizeof tmp, "%s.bed.tmp.%ld", path_in_tmp(names[k]), (long)getpid());
        else snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path_in_tmp(names[k]), (long)getpid());
        assert_int_equal(symlink(victim, tmp), 0);
        pl_opts_t o;
        pl_opts_init(&o, PL_EMBED);
        pl_out_t *out = pl_out_open(path_in_tmp(names[k]), &o, md_model_config(m), 16, 0, NULL);
        assert_non_null(out);
        pl_t *p = pl_init(m, &o, out);
        assert_int_equal(pl_add(p, &x), 0);
        assert_int_equal(pl_flush(p), 0);
        pl_destroy(p);
        assert_int_equal(pl_out_close(out), 0);
        assert_int_equal(access(tmp, F_OK), -1);
    }
    char buf[16] = { 0 };
    fp = fopen(victim, "r");
    assert_non_null(fp);
    assert_non_null(fgets(buf, sizeof buf, fp));
    fclose(fp);
    assert_string_equal(buf, "keep\n");
    free_seq(&x);
    md_model_free(m);
    be->destroy(be);
}

/* --- forward output options (model.h): pooling on the backend, selected rows ------------------- */

typedef struct {
    int64_t n;
    int W, V;
    float *hidden, *logits;   /* [n, W], [n, V] filled by rows_cb */
    int64_t calls, rows_seen, last_row;
    float *mean;              /* [npool, W] from pool_cb */
    int npool, pool_calls;
} capture_t;

static int rows_cb(void *ud, int64_t row0, int64_t nrows, const float *hidden, const float *logits)
{
    capture_t *c = ud;
    assert_true(row0 > c->last_row);
    assert_true(row0 + nrows <= c->n);
    memcpy(c->hidden + row0 * c->W, hidden, (size_t)nrows * c->W * sizeof(float));
    if (logits) memcpy(c->logits + row0 * c->V, logits, (size_t)nrows * c->V * sizeof(float));
    c->calls++;
    c->rows_seen += nrows;
    c->last_row = row0 + nrows - 1;
    return 0;
}

static int pool_cb(void *ud, int nseg, const float *mean)
{
    capture_t *c = ud;
    c->pool_calls++;
    c->npool = nseg;
    c->mean = malloc((size_t)nseg * c->W * sizeof(float));
    memcpy(c->mean, mean, (size_t)nseg * c->W * sizeof(float));
    return 0;
}

static void capture_init(capture_t *c, int64_t n, int W, int V)
{
    memset(c, 0, sizeof *c);
    c->n = n;
    c->W = W;
    c->V = V;
    c->last_row = -1;
    c->hidden = calloc((size_t)n * W, sizeof(float));
    c->logits = calloc((size_t)n * V, sizeof(float));
}

static void capture_free(capture_t *c)
{
    free(c->hidden);
    free(c->logits);
    free(c->mean);
}

/* Pooled means from the backend (fp32 sums, chunk by chunk) against double means of the full
 * per-row output: |diff| <= 2e-6 (1 + |mean|) per value. Selected rows: hidden rows and logits
 * bitwise equal to the full output's (copies of the same values). Position chunks of 13 rows so that segments and runs of selected rows
 * cross chunk edges; Ph, PS and Mamba; final state and a middle layer. */
static void test_forward_outputs(void **state)
{
    (void)state;
    md_backend_t *be = md_backend_cpu_open(2);
    be->chunk = 13;
    enum { N = 100 };
    int32_t ids[N];
    uint32_t seed = 77;
    for (int i = 0; i < N; i++) {
        seed = seed * 1664525u + 1013904223u;
        ids[i] = 7 + (int)((seed >> 24) % 5);
    }
    const int64_t seq_off[] = { 0, 30, 31, 64, N };
    /* overlapping (begins and ends non-decreasing), crossing chunks and sequences, one row long */
    const int64_t pbeg[] = { 0, 3, 12, 13, 40, 41, 50 }, pend[] = { 5, 27, 30, 40, 41, 99, N };
    const int npool = 7;
    const int64_t sel[] = { 0, 1, 2, 12, 13, 14, 25, 26, 27, 64, 99 };
    const int nsel = 11;
    for (int variant = 0; variant < 3; variant++) {
        md_model_t *m = small_model(be, variant == 2, variant == 1);
        const int W = md_model_width(m), V = md_model_config(m)->vocab_size;
        for (int layer = -1; layer <= 1; layer += 2) {
            capture_t full, pooled, part;
            capture_init(&full, N, W, V);
            md_forward_opts_t fo = { .layer = layer, .want_logits = layer < 0 };
            assert_int_equal(md_model_forward(m, ids, N, seq_off, 4, &fo, rows_cb, &full), 0);
            assert_int_equal(full.rows_seen, N);
            /* pooling only: no per-row output */
            capture_init(&pooled, N, W, V);
            md_forward_opts_t po = { .layer = layer, .rows = MD_ROWS_NONE, .npool = npool, .pool_beg = pbeg,
                                     .pool_end = pend, .emit_pool = pool_cb };
            assert_int_equal(md_model_forward(m, ids, N, seq_off, 4, &po, rows_cb, &pooled), 0);
            assert_int_equal(pooled.calls, 0);
            assert_int_equal(pooled.pool_calls, 1);
            assert_int_equal(pooled.npool, npool);
            for (int i = 0; i < npool; i++)
                for (int j = 0; j < W; j++) {
                    double mu = 0;
                    for (int64_t r = pbeg[i]; r < pend[i]; r++) mu += full.hidden[r * W + j];
                    mu /= (double)(pend[i] - pbeg[i]);
                    assert_true(fabs(mu - pooled.mean[i * W + j]) <= 2e-6 * (1 + fabs(mu)));
                }
            /* selected rows (with pooling at the same time) */
            capture_init(&part, N, W, V);
            md_forward_opts_t so = po;
            so.want_logits = layer < 0;
            so.rows = MD_ROWS_SELECTED;
            so.nsel = nsel;
            so.sel = sel;
            assert_int_equal(md_model_forward(m, ids, N, seq_off, 4, &so, rows_cb, &part), 0);
            assert_int_equal(part.rows_seen, nsel);
            /* runs split at chunk edges: {0-2} {12} {13,14} {25} {26,27} {64} {99} */
            assert_int_equal(part.calls, 7);
            assert_int_equal(part.pool_calls, 1);
            assert_memory_equal(part.mean, pooled.mean, (size_t)npool * W * sizeof(float));
            for (int k = 0; k < nsel; k++) {
                assert_memory_equal(part.hidden + sel[k] * W, full.hidden + sel[k] * W, (size_t)W * sizeof(float));
                if (layer < 0)
                    assert_memory_equal(part.logits + sel[k] * V, full.logits + sel[k] * V, (size_t)V * sizeof(float));
            }
            capture_free(&full);
            capture_free(&pooled);
            capture_free(&part);
        }
        /* refused: rows not increasing, an empty segment, a nested segment, a row outside */
        int lvl = md_log_level;
        md_log_level = MD_LOG_OFF;
        capture_t c;
        capture_init(&c, N, W, V);
        const int64_t bad_sel[] = { 3, 3 }, out_sel[] = { N };
        const int64_t eb[] = { 4 }, ee[] = { 4 }, nb[] = { 0, 2 }, ne[] = { 50, 10 };
        md_forward_opts_t bo = { .layer = -1, .rows = MD_ROWS_SELECTED, .nsel = 2, .sel = bad_sel };
        assert_true(md_model_forward(m, ids, N, seq_off, 4, &bo, rows_cb, &c) < 0);
        bo.nsel = 1;
        bo.sel = out_sel;
        assert_true(md_model_forward(m, ids, N, seq_off, 4, &bo, rows_cb, &c) < 0);
        md_forward_opts_t bp = { .layer = -1, .rows = MD_ROWS_NONE, .npool = 1, .pool_beg = eb, .pool_end = ee,
                                 .emit_pool = pool_cb };
        assert_true(md_model_forward(m, ids, N, seq_off, 4, &bp, rows_cb, &c) < 0);
        bp.npool = 2;
        bp.pool_beg = nb;
        bp.pool_end = ne;
        assert_true(md_model_forward(m, ids, N, seq_off, 4, &bp, rows_cb, &c) < 0);
        assert_int_equal(c.calls + c.pool_calls, 0);
        capture_free(&c);
        md_log_level = lvl;
        md_model_free(m);
    }
    be->destroy(be);
}

/* embed --pool mean (segment means on the backend) against the means of embed --pool none's
 * per-base rows, window by window: several records, overlapping windows, both strands (Ph, Mamba:
 * two passes per window; PS: combined halves), position chunks of 7 rows, one window per batch
 * and all in one. |diff| <= 2e-6 (1 + |mean|). */
static void test_pool_windows(void **state)
{
    (void)state;
    md_backend_t *be = md_backend_cpu_open(2);
    be->chunk = 7;
    static const int64_t lens[] = { 1, 37, 300, 129 };
    md_seq_t recs[4];
    for (int i = 0; i < 4; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "p%d", i);
        make_seq(&recs[i], nm, lens[i], 31 + i);
    }
    for (int variant = 0; variant < 3; variant++) {
        md_model_t *m = small_model(be, variant == 2, variant == 1);
        for (int raw = 0; raw < 2; raw++) {
            pl_opts_t o;
            pl_opts_init(&o, PL_EMBED);
            o.window = 50;
            o.stride = 30;
            o.raw = raw;
            o.pool = PL_POOL_NONE;
            int64_t nrow, prow;
            int ncol, pcol;
            static char bed[65536], pbed[16384];
            float *per = run(m, &o, recs, 4, "mean_none.npy", &nrow, &ncol, bed, sizeof bed);
            for (int b = 0; b < 2; b++) {
                o.pool = PL_POOL_MEAN;
                o.batch_tokens = b ? 1 << 20 : 1;
                float *pm = run(m, &o, recs, 4, "mean_pool.npy", &prow, &pcol, pbed, sizeof pbed);
                assert_int_equal(pcol, ncol);
                /* per-base blocks in order: BED columns 7-8 are the first row and the row count */
                const char *line = bed;
                int64_t blocks = 0;
                while (*line) {
                    long long r0, nr;
                    const char *tab = line;
                    for (int f = 0; f < 6; f++) tab = strchr(tab, '\t') + 1;
                    assert_int_equal(sscanf(tab, "%lld\t%lld", &r0, &nr), 2);
                    assert_true(blocks < prow);
                    for (int c = 0; c < ncol; c++) {
                        double mu = 0;
                        for (long long r = r0; r < r0 + nr; r++) mu += per[r * ncol + c];
                        mu /= (double)nr;
                        assert_true(fabs(mu - pm[blocks * ncol + c]) <= 2e-6 * (1 + fabs(mu)));
                    }
                    blocks++;
                    line = strchr(line, '\n') + 1;
                }
                assert_int_equal(blocks, prow);
                free(pm);
            }
            free(per);
        }
        md_model_free(m);
    }
    for (int i = 0; i < 4; i++) free_seq(&recs[i]);
    be->destroy(be);
}

int main(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test_pipeline.XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batching),
        cmocka_unit_test(test_strands),
        cmocka_unit_test(test_checks),
        cmocka_unit_test(test_abort_leaves_nothing),
        cmocka_unit_test(test_planted_link),
        cmocka_unit_test(test_forward_outputs),
        cmocka_unit_test(test_pool_windows),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return r;
}
