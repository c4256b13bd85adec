/* test_dist.c: data-parallel training without a GPU. The sharding rule (md_dist_seq_index: for
 * 1, 2 and 4 ranks the ranks' sequences cover exactly the single process's sequences of every
 * update, with no overlap), the threads group's sums (rank order, same result everywhere, abort
 * wakes waiting ranks), the NCCL loader's errors (missing library, not NCCL, no CUDA), and whole CPU training runs: 2 ranks (threads) against one process with
 * 2-fold accumulation and with a batch twice as large; --grad-accum 2 against the doubled batch;
 * rank 1 writing nothing; resume with 2 ranks; resume with another rank count refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist.h"
#include "config.h"
#include "md.h"
#include "params.h"
#include "train.h"

/* --- sharding ------------------------------------------------------------------------------ */

static void test_seq_index(void **st)
{
    (void)st;
    const int B = 3;
    for (int nr = 1; nr <= 4; nr *= 2)
        for (int K = 1; K <= 3; K++)
            for (int64_t s = 0; s < 3; s++) {
                const int S = nr * K * B;   /* sequences per update */
                int *seen = calloc(S, sizeof *seen);
                for (int r = 0; r < nr; r++)
                    for (int m = 0; m < K; m++)
                        for (int b = 0; b < B; b++) {
                            uint64_t g = md_dist_seq_index(s, nr, r, K, B, m, b);
                            /* inside this update's block of the single process with nr*K micro-batches */
                            assert_true(g >= (uint64_t)s * S && g < (uint64_t)(s + 1) * S);
                            seen[g - (uint64_t)s * S]++;
                            /* the same number as micro-batch r*K+m of one process */
                            assert_int_equal(g, md_dist_seq_index(s, 1, 0, nr * K, B, r * K + m, b));
                        }
                for (int i = 0; i < S; i++) assert_int_equal(seen[i], 1);   /* cover, no overlap */
                /* one process with batch nr*B and K micro-batches: the same set per update */
                for (int m = 0; m < K; m++)
                    for (int b = 0; b < nr * B; b++) {
                        uint64_t g = md_dist_seq_index(s, 1, 0, K, nr * B, m, b);
                        assert_true(g >= (uint64_t)s * S && g < (uint64_t)(s + 1) * S);
                    }
                free(seen);
            }
    /* rank 0 of 1 is the trainer's historical order: g = s*B*K + m*B + b */
    assert_int_equal(md_dist_seq_index(5, 1, 0, 2, 8, 1, 3), 5 * 8 * 2 + 8 + 3);
}

/* --- the threads group ----------------------------------------------------------------------- */

typedef struct {
    md_dist_t *d;
    float f[5];
    double x[2];
    int ret, do_abort;
} sum_arg_t;

static void *sum_thread(void *p)
{
    sum_arg_t *a = p;
    if (a->do_abort) {
        usleep(20000);   /* let the others wait first */
        a->d->abort(a->d);
        a->ret = 0;
        return NULL;
    }
    a->ret = a->d->sum_f32(a->d, a->f, 5);
    if (a->ret == 0) a->ret = a->d->sum_host_f64(a->d, a->x, 2);
    return NULL;
}

static void test_threads_sum(void **st)
{
    (void)st;
    enum { N = 3 };
    md_dist_t *g[N];
    assert_int_equal(md_dist_threads_create(N, g), 0);
    sum_arg_t a[N];
    pthread_t th[N];
    for (int r = 0; r < N; r++) {
        memset(&a[r], 0, sizeof a[r]);
        a[r].d = g[r];
        for (int i = 0; i < 5; i++) a[r].f[i] = (float)(0.1 * (r + 1) + i * 1e-7);
        a[r].x[0] = r + 1;
        a[r].x[1] = 1e-3 * r;
        assert_int_equal(pthread_create(&th[r], NULL, sum_thread, &a[r]), 0);
    }
    for (int r = 0; r < N; r++) pthread_join(th[r], NULL);
    for (int i = 0; i < 5; i++) {
        float want = (float)(0.1 + i * 1e-7);
        want += (float)(0.2 + i * 1e-7);
        want += (float)(0.3 + i * 1e-7);
        for (int r = 0; r < N; r++) {
            assert_int_equal(a[r].ret, 0);
            assert_true(a[r].f[i] == want);   /* rank order, bitwise the same on every rank */
        }
    }
    for (int r = 0; r < N; r++) {
        assert_true(a[r].x[0] == 6.0);
        assert_true(fabs(a[r].x[1] - 3e-3) < 1e-15);
    }
    /* a rank that aborts wakes the others: their sums fail instead of hanging */
    for (int r = 0; r < N; r++) {
        a[r].do_abort = r == 1;
        assert_int_equal(pthread_create(&th[r], NULL, sum_thread, &a[r]), 0);
    }
    for (int r = 0; r < N; r++) pthread_join(th[r], NULL);
    assert_true(a[0].ret < 0 && a[2].ret < 0);
    for (int r = 0; r < N; r++) g[r]->destroy(g[r]);
    assert_int_equal(md_dist_threads_create(0, g) < 0, 1);
}

/* --- the NCCL loader, where there is no NCCL or no GPU ------------------------------------------- */

static void test_nccl_loader(void **st)
{
    (void)st;
    char where[1200];
    const char *old = getenv("MD_NCCL_LIB");
    char *saved = old ? strdup(old) : NULL;
    md_log_level = MD_LOG_ERROR - 1;
    setenv("MD_NCCL_LIB", "/nonexistent/libnccl.so.2", 1);
    assert_true(md_nccl_probe(where, sizeof where) < 0);
    assert_non_null(strstr(md_last_error(), "/nonexistent/libnccl.so.2"));
    unsigned char id[MD_NCCL_ID_BYTES];
    assert_true(md_nccl_unique_id(id) < 0);
    /* a library that is not NCCL */
    setenv("MD_NCCL_LIB", "libz.so.1", 1);
    assert_true(md_nccl_probe(where, sizeof where) < 0);
    assert_non_null(strstr(md_last_error(), "no symbol ncclGetVersion"));
    /* the group needs the CUDA backend (or a CUDA build) */
    md_backend_t *be = md_backend_cpu_open(1);
    memset(id, 0, sizeof id);
    assert_null(md_dist_nccl_create(be, id, 0, 1));
    assert_true(strstr(md_last_error(), "CUDA") != NULL);
    be->destroy(be);
    md_log_level = MD_LOG_WARNING;
    if (saved) setenv("MD_NCCL_LIB", saved, 1);
    else unsetenv("MD_NCCL_LIB");
    free(saved);
    /* the real one, where this machine has it: ids (no GPU needed), NVLink multicast off */
    if (md_nccl_probe(where, sizeof where) < 0) { printf("# no NCCL on this machine\n"); return; }
    printf("# NCCL here: %s\n", where);
    unsetenv("NCCL_NVLS_ENABLE");
    unsigned char id2[MD_NCCL_ID_BYTES];
    assert_int_equal(md_nccl_unique_id(id), 0);
    assert_int_equal(md_nccl_unique_id(id2), 0);
    assert_true(memcmp(id, id2, sizeof id) != 0);
    assert_non_null(getenv("NCCL_NVLS_ENABLE"));
    assert_string_equal(getenv("NCCL_NVLS_ENABLE"), "0");
}

/* --- whole CPU runs ---------------------------------------------------------------------------- */

#define LAMBDA "tests/data/real/lambda.fa.gz"
static const char *lambda_holdout[] = { "gi|9626243|ref|NC_001416.1|:40001-48502" };
static const char *lambda_in[] = { LAMBDA };

static void run_opts(md_trainer_opts_t *o, const char *dir, int batch, int accum)
{
    md_trainer_opts_init(o);
    o->inputs = lambda_in;
    o->n_inputs = 1;
    o->holdout = lambda_holdout;
    o->n_holdout = 1;
    o->outdir = dir;
    o->variant = MD_VARIANT_PH;   /* with RC augmentation: the draw follows the sequence number too */
    o->d_model = 16;
    o->n_layer = 2;
    o->seq_len = 96;
    o->batch = batch;
    o->grad_accum = accum;
    o->steps = 10;
    o->optim.lr = 4e-3;
    o->val_every = 5;
    o->save_every = 5;
    o->val_windows = 4;
    o->threads = 1;
    o->device = "cpu";
}

typedef struct {
    md_trainer_opts_t o;
    int ret;
} rank_arg_t;

static void *rank_thread(void *p)
{
    rank_arg_t *a = p;
    a->ret = md_trainer_run(&a->o, NULL, NULL);
    return NULL;
}

/* Runs nr ranks (threads) of the options in `base`; 0 when every rank succeeded. */
static int run_ranks(const md_trainer_opts_t *base, int nr)
{
    md_dist_t *g[8];
    rank_arg_t a[8];
    pthread_t th[8];
    assert_int_equal(md_dist_threads_create(nr, g), 0);
    for (int r = 0; r < nr; r++) {
        a[r].o = *base;
        a[r].o.dist = g[r];
        assert_int_equal(pthread_create(&th[r], NULL, rank_thread, &a[r]), 0);
    }
    int ret = 0;
    for (int r = 0; r < nr; r++) {
        pthread_join(th[r], NULL);
        if (a[r].ret < 0) ret = a[r].ret;
        g[r]->destroy(g[r]);
    }
    return ret;
}

typedef struct {
    int n;
    int64_t step[64], tokens[64];
    double loss[64], gnorm[64], vloss[64];
} tsv_t;

static void read_tsv(const char *dir, tsv_t *t)
{
    char p[512], line[1024];
    snprintf(p, sizeof p, "%s/train.tsv", dir);
    FILE *fp = fopen(p, "r");
    assert_non_null(fp);
    memset(t, 0, sizeof *t);
    assert_non_null(fgets(line, sizeof line, fp));   /* header */
    while (fgets(line, sizeof line, fp) && t->n < 64) {
        char *f[9], *save = NULL, *s = line;
        int k = 0;
        for (char *tok = strtok_r(s, "\t\n", &save); tok && k < 9; tok = strtok_r(NULL, "\t\n", &save)) f[k++] = tok;
        assert_int_equal(k, 9);
        t->step[t->n] = atoll(f[0]);
        t->tokens[t->n] = atoll(f[1]);
        t->loss[t->n] = strcmp(f[3], "NA") ? atof(f[3]) : NAN;
        t->vloss[t->n] = strcmp(f[5], "NA") ? atof(f[5]) : NAN;
        t->gnorm[t->n] = strcmp(f[7], "NA") ? atof(f[7]) : NAN;
        t->n++;
    }
    fclose(fp);
}

/* Largest relative difference of the loss, validation loss and gradient norm columns; the
 * steps, tokens and the NA pattern must agree exactly. */
static double tsv_diff(const tsv_t *a, const tsv_t *b)
{
    assert_int_equal(a->n, b->n);
    double worst = 0;
    for (int i = 0; i < a->n; i++) {
        assert_int_equal(a->step[i], b->step[i]);
        assert_int_equal(a->tokens[i], b->tokens[i]);
        const double x[3] = { a->loss[i], a->vloss[i], a->gnorm[i] }, y[3] = { b->loss[i], b->vloss[i], b->gnorm[i] };
        for (int k = 0; k < 3; k++) {
            assert_int_equal(isnan(x[k]), isnan(y[k]));
            if (isnan(x[k])) continue;
            double d = fabs(x[k] - y[k]) / (fabs(y[k]) > 1e-12 ? fabs(y[k]) : 1e-12);
            if (d > worst) worst = d;
        }
    }
    return worst;
}

static void rm_rf(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static int count_files(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p && fscanf(p, "%d", &n) != 1) n = -1;
    if (p) pclose(p);
    return n;
}

/* Largest difference between the final weights of two runs, relative to the largest weight. */
static double weights_diff(const char *da, const char *db)
{
    char p[512];
    md_config_t ca, cb;
    snprintf(p, sizeof p, "%s/config.json", da);
    assert_int_equal(md_config_load(&ca, p), 0);
    snprintf(p, sizeof p, "%s/config.json", db);
    assert_int_equal(md_config_load(&cb, p), 0);
    md_weights_t *wa = md_weights_alloc(&ca), *wb = md_weights_alloc(&cb);
    assert_non_null(wa);
    assert_non_null(wb);
    assert_int_equal(wa->numel, wb->numel);
    snprintf(p, sizeof p, "%s/model.safetensors", da);
    assert_int_equal(md_weights_load(wa, p), 0);
    snprintf(p, sizeof p, "%s/model.safetensors", db);
    assert_int_equal(md_weights_load(wb, p), 0);
    double dmax = 0, wmax = 0;
    for (size_t i = 0; i < wa->numel; i++) {
        double d = fabs((double)wa->slab[i] - wb->slab[i]);
        if (d > dmax) dmax = d;
        if (fabs(wb->slab[i]) > wmax) wmax = fabs(wb->slab[i]);
    }
    md_weights_free(wa);
    md_weights_free(wb);
    return dmax / wmax;
}

/* Float noise between runs that add the same per-sequence gradients in another order: the
 * training loss and gradient norm are printed with 6 significant digits, so 1e-5 relative
 * allows a few units in the last printed digit (the measured worst cases are printed). */
#define RUN_TOL 1e-5
#define WEIGHT_TOL 1e-6

static void test_ranks_equal_accum(void **st)
{
    (void)st;
    if (access(LAMBDA, R_OK) != 0) { printf("# %s missing: skipped\n", LAMBDA); skip(); }
    char one[256], two[256], big[256], acc[256];
    snprintf(one, sizeof one, "/tmp/md-dist-test-accum.%d", (int)getpid());
    snprintf(two, sizeof two, "/tmp/md-dist-test-ranks.%d", (int)getpid());
    snprintf(big, sizeof big, "/tmp/md-dist-test-big.%d", (int)getpid());
    snprintf(acc, sizeof acc, "/tmp/md-dist-test-accum4.%d", (int)getpid());
    rm_rf(one); rm_rf(two); rm_rf(big); rm_rf(acc);
    md_trainer_opts_t o;
    tsv_t t1, t2, tb, ta;
    /* one process, batch 2, 2-fold accumulation */
    run_opts(&o, one, 2, 2);
    assert_int_equal(md_trainer_run(&o, NULL, NULL), 0);
    read_tsv(one, &t1);
    /* 2 ranks, batch 2 each */
    run_opts(&o, two, 2, 1);
    assert_int_equal(run_ranks(&o, 2), 0);
    read_tsv(two, &t2);
    assert_int_equal(count_files(two), 5);   /* rank 0's files only, no temporaries */
    double d_ranks = tsv_diff(&t2, &t1), w_ranks = weights_diff(two, one);
    /* one process, batch 4 */
    run_opts(&o, big, 4, 1);
    assert_int_equal(md_trainer_run(&o, NULL, NULL), 0);
    read_tsv(big, &tb);
    double d_big = tsv_diff(&tb, &t1), w_big = weights_diff(big, one);
    /* 2 ranks with 2-fold accumulation each against one process with 4-fold accumulation */
    run_opts(&o, acc, 2, 4);
    o.batch = 1;
    assert_int_equal(md_trainer_run(&o, NULL, NULL), 0);
    read_tsv(acc, &ta);
    rm_rf(two);
    run_opts(&o, two, 1, 2);
    assert_int_equal(run_ranks(&o, 2), 0);
    tsv_t t22;
    read_tsv(two, &t22);
    double d_acc4 = tsv_diff(&t22, &ta), w_acc4 = weights_diff(two, acc);
    printf("# %d updates; largest relative difference of the logged loss / val loss / grad norm (6 digits) and of "
           "the final weights (relative to the largest weight):\n"
           "#   2 ranks vs --grad-accum 2: %.3g, %.3g\n#   --batch 4 vs --batch 2 --grad-accum 2: %.3g, %.3g\n"
           "#   2 ranks x --grad-accum 2 vs --grad-accum 4: %.3g, %.3g   (tolerances %g, %g)\n",
           t1.n - 1, d_ranks, w_ranks, d_big, w_big, d_acc4, w_acc4, RUN_TOL, WEIGHT_TOL);
    assert_true(d_ranks <= RUN_TOL && w_ranks <= WEIGHT_TOL);
    assert_true(d_big <= RUN_TOL && w_big <= WEIGHT_TOL);
    assert_true(d_acc4 <= RUN_TOL && w_acc4 <= WEIGHT_TOL);
    /* the runs trained: the loss table is not constant */
    assert_true(fabs(t1.loss[1] - t1.loss[t1.n - 1]) > 1e-4);
    rm_rf(one); rm_rf(two); rm_rf(big); rm_rf(acc);
}

static void test_ranks_resume(void **st)
{
    (void)st;
    if (access(LAMBDA, R_OK) != 0) { printf("# %s missing: skipped\n", LAMBDA); skip(); }
    char a[256], b[256];
    snprintf(a, sizeof a, "/tmp/md-dist-test-full.%d", (int)getpid());
    snprintf(b, sizeof b, "/tmp/md-dist-test-stop.%d", (int)getpid());
    rm_rf(a); rm_rf(b);
    md_trainer_opts_t o;
    tsv_t ta, tb;
    run_opts(&o, a, 2, 1);
    assert_int_equal(run_ranks(&o, 2), 0);
    read_tsv(a, &ta);
    run_opts(&o, b, 2, 1);
    o.stop_after = 5;
    assert_int_equal(run_ranks(&o, 2), 0);
    /* another number of ranks: refused, the run is kept */
    o.stop_after = 0;
    o.resume = 1;
    md_log_level = MD_LOG_ERROR - 1;   /* the expected errors stay quiet */
    assert_true(md_trainer_run(&o, NULL, NULL) < 0);
    assert_true(strstr(md_last_error(), "ranks") != NULL);
    md_log_level = MD_LOG_WARNING;
    assert_int_equal(run_ranks(&o, 2), 0);
    read_tsv(b, &tb);
    assert_true(tsv_diff(&tb, &ta) == 0);   /* the same numbers, digit for digit */
    rm_rf(a); rm_rf(b);
}

/* A rank that fails makes the other ranks fail too (no hang): rank 1 gets an input it cannot
 * read. */
static void test_rank_failure(void **st)
{
    (void)st;
    if (access(LAMBDA, R_OK) != 0) { printf("# %s missing: skipped\n", LAMBDA); skip(); }
    char a[256];
    snprintf(a, sizeof a, "/tmp/md-dist-test-fail.%d", (int)getpid());
    rm_rf(a);
    md_dist_t *g[2];
    rank_arg_t ra[2];
    pthread_t th[2];
    static const char *missing[] = { "/nonexistent/in.fa" };
    assert_int_equal(md_dist_threads_create(2, g), 0);
    md_log_level = MD_LOG_ERROR - 1;
    for (int r = 0; r < 2; r++) {
        run_opts(&ra[r].o, a, 2, 1);
        ra[r].o.dist = g[r];
        if (r == 1) ra[r].o.inputs = missing;
        assert_int_equal(pthread_create(&th[r], NULL, rank_thread, &ra[r]), 0);
    }
    for (int r = 0; r < 2; r++) pthread_join(th[r], NULL);
    md_log_level = MD_LOG_WARNING;
    assert_true(ra[0].ret < 0 && ra[1].ret < 0);
    assert_int_equal(ra[0].ret, -4);   /* rank 0: the group failed */
    for (int r = 0; r < 2; r++) g[r]->destroy(g[r]);
    rm_rf(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seq_index),
        cmocka_unit_test(test_threads_sum),
        cmocka_unit_test(test_nccl_loader),
        cmocka_unit_test(test_ranks_equal_accum),
        cmocka_unit_test(test_ranks_resume),
        cmocka_unit_test(test_rank_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
