/* bench_gpu.c: GPU figures for the README and kernels/NOTES.md.
 *   bench_gpu ops  [-p fp32|bf16] [-r reps] L [L ...]   one BiMamba layer op by op at model shapes
 *                                                       (d 256, Di 512, N 16): median ms per op,
 *                                                       achieved GB/s or TFLOP/s or T updates/s
 *   bench_gpu model [-p ...] [-r reps] [-c chunk] [-n layers] L [L ...]
 *                                                       forward of a random Caduceus-Ph (d 256,
 *                                                       16 layers), bases/s and peak GPU memory
 * TSV on stdout. Times are wall clock around synchronised calls (medians of reps after one
 * warm-up). Built by bench/run-gpu.sh against a CUDA build of libmambadna.a. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "md.h"
#include "md_cuda.h"
#include "model.h"

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, int n)
{
    qsort(v, n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static uint64_t rng = 0x1234567;
static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((rng >> 40) * (1.0f / 16777216.0f)) * 2.0f - 1.0f;
}

static void *dev_rand(md_backend_t *be, int64_t n, float scale)
{
    float *h = malloc(n * sizeof *h);
    for (int64_t i = 0; i < n; i++) h[i] = scale * frand();
    void *d = be->alloc(be, n * md_dtype_size(be->act_dtype));
    if (!d || be->upload_act(be, d, h, n) < 0) exit(1);
    free(h);
    return d;
}
static float *dev_f32(md_backend_t *be, int64_t n, float lo, float hi)
{
    float *h = malloc(n * sizeof *h);
    for (int64_t i = 0; i < n; i++) h[i] = lo + (hi - lo) * 0.5f * (frand() + 1.0f);
    float *d = be->alloc(be, n * sizeof(float));
    if (!d || be->upload(be, d, h, n * sizeof(float)) < 0) exit(1);
    free(h);
    return d;
}

#define TIME(label, work, expr)                                                                  \
    do {                                                                                       \
        double t_[64];                                                                         \
        if ((expr) < 0 || be->sync(be) < 0) { fprintf(stderr, "%s failed\n", label); exit(1); } \
        for (int r_ = 0; r_ < reps; r_++) {                                                    \
            double t0_ = md_realtime();                                                        \
            if ((expr) < 0 || be->sync(be) < 0) { fprintf(stderr, "%s failed\n", label); exit(1); } \
            t_[r_] = md_realtime() - t0_;                                                      \
        }                                                                                      \
        double m_ = median(t_, reps);                                                          \
        total += m_;                                                                           \
        last = m_;                                                                             \
        printf("%s\t%s\t%lld\t%s\t%.3f\t%s\n", prec, "op", (long long)n, label, m_ * 1e3, work(m_)); \
        fflush(stdout);                                                                        \
    } while (0)

static char wbuf[64];
static double g_bytes, g_flops, g_upd;
static const char *w_bytes(double t) { snprintf(wbuf, sizeof wbuf, "%.0f GB/s", g_bytes / t / 1e9); return wbuf; }
static const char *w_flops(double t) { snprintf(wbuf, sizeof wbuf, "%.1f TFLOP/s", g_flops / t / 1e12); return wbuf; }
static const char *w_upd(double t) { snprintf(wbuf, sizeof wbuf, "%.2f T upd/s", g_upd / t / 1e12); return wbuf; }

static int bench_ops(md_backend_t *be, int64_t n, int reps)
{
    const char *prec = be->act_dtype == MD_DT_BF16 ? "bf16" : "fp32";
    const int d = 256, Di = 512, N = 16, R = 16, XD = R + 2 * N, K = 4;
    const double a = md_dtype_size(be->act_dtype);
    double total = 0, last = 0;
    void *h = dev_rand(be, n * d, 1), *u = dev_rand(be, n * d, 1), *xz = dev_rand(be, n * 2 * Di, 1);
    float *res = dev_f32(be, n * d, -1, 1);
    void *xc[2], *xdbl[2], *dt[2], *y = dev_rand(be, n * Di, 1);
    float *nw = dev_f32(be, d, 0.5f, 1.5f);
    float *wc[2], *bc[2], *cst[2], *A[2], *D[2], *bias[2], *st[2];
    float *win_h = malloc((size_t)2 * Di * d * sizeof(float));
    for (int i = 0; i < 2 * Di * d; i++) win_h[i] = 0.06f * frand();
    void *win = be->upload_matrix(be, win_h, 2 * Di, d), *wout = be->upload_matrix(be, win_h, d, Di);
    void *wx = be->upload_matrix(be, win_h, XD, Di), *wdt = be->upload_matrix(be, win_h, Di, R);
    free(win_h);
    for (int k = 0; k < 2; k++) {
        xc[k] = dev_rand(be, n * Di, 1);
        xdbl[k] = dev_rand(be, n * XD, 1);
        dt[k] = dev_rand(be, n * Di, 0.5f);
        wc[k] = dev_f32(be, Di * K, -0.5f, 0.5f);
        bc[k] = dev_f32(be, Di, -0.1f, 0.1f);
        cst[k] = dev_f32(be, (K - 1) * Di, 0, 0);
        A[k] = dev_f32(be, Di * N, -16, -1);
        D[k] = dev_f32(be, Di, 0.5f, 1.5f);
        bias[k] = dev_f32(be, Di, -6.9f, -2.3f);
        st[k] = dev_f32(be, Di * N, 0, 0);
    }
    uint8_t *ss = be->alloc(be, n + 1);
    be->zero(be, ss, n + 1);
    md_scan_dir_t sd[2];
    for (int k = 0; k < 2; k++) {
        memset(&sd[k], 0, sizeof sd[k]);
        sd[k].x = xc[k]; sd[k].ldx = Di;
        sd[k].dt = dt[k]; sd[k].lddt = Di;
        sd[k].B = (char *)xdbl[k] + R * (size_t)a;
        sd[k].C = (char *)xdbl[k] + (R + N) * (size_t)a;
        sd[k].ldbc = XD;
        sd[k].z = (char *)xz + Di * (size_t)a; sd[k].ldz = 2 * Di;
        sd[k].A = A[k]; sd[k].D = D[k]; sd[k].dt_bias = bias[k]; sd[k].state = st[k];
        sd[k].reverse = k;
    }
    g_bytes = n * d * (a + 4 + 4 + a);
    TIME("add_norm (h+res -> res, u)", w_bytes, be->add_norm(be, n, d, d, h, res, res, u, nw, NULL, 1e-5f, 0, 1));
    g_flops = 2.0 * n * 2 * Di * d;
    TIME("gemm in_proj 256->1024", w_flops, be->gemm(be, n, 2 * Di, d, u, d, win, xz, 2 * Di, 0, 0));
    for (int k = 0; k < 2; k++) {
        g_bytes = n * Di * 2 * a;
        TIME(k ? "conv_silu reverse" : "conv_silu forward", w_bytes,
             be->conv_silu(be, n, Di, K, xz, 2 * Di, wc[k], bc[k], xc[k], cst[k], k, ss));
        g_flops = 2.0 * n * XD * Di;
        TIME("gemm x_proj 512->48", w_flops, be->gemm(be, n, XD, Di, xc[k], Di, wx, xdbl[k], XD, 0, 0));
        g_flops = 2.0 * n * Di * R;
        TIME("gemm dt_proj 16->512", w_flops, be->gemm(be, n, Di, R, xdbl[k], XD, wdt, dt[k], Di, 0, 0));
    }
    g_upd = (double)n * Di * N * 2;
    TIME("scan ndir=2 (one launch set)", w_upd, be->scan(be, n, Di, N, 2, sd, y, Di, 0, ss));
    g_upd = (double)n * Di * N;
    TIME("scan ndir=1 forward (not in the layer sum)", w_upd, be->scan(be, n, Di, N, 1, sd, y, Di, 0, ss));
    total -= last;
    g_flops = 2.0 * n * d * Di;
    TIME("gemm out_proj 512->256", w_flops, be->gemm(be, n, d, Di, y, Di, wout, h, d, 0, 0));
    printf("%s\tlayer\t%lld\tone-chunk layer (sum of the ops above)\t%.3f\t%.2f M bases/s for 16 layers\n", prec,
           (long long)n, total * 1e3, n / (16 * total) / 1e6);
    fflush(stdout);
    void *bufs[] = { h, u, xz, res, y, nw, win, wout, wx, wdt, ss, xc[0], xc[1], xdbl[0], xdbl[1], dt[0], dt[1],
                     wc[0], wc[1], bc[0], bc[1], cst[0], cst[1], A[0], A[1], D[0], D[1], bias[0], bias[1], st[0], st[1] };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) be->free(be, bufs[i]);
    return 0;
}

static int sink(void *ud, int64_t r0, int64_t nr, const float *hid, const float *l)
{
    (void)r0; (void)l;
    *(double *)ud += hid[0] + hid[nr - 1];
    return 0;
}

static int bench_model(md_backend_t *be, int64_t L, int reps, int n_layer)
{
    const char *prec = be->act_dtype == MD_DT_BF16 ? "bf16" : "fp32";
    md_config_t cfg;
    md_config_init(&cfg);
    cfg.n_layer = n_layer;
    if (md_config_finish(&cfg, "bench_gpu") < 0) return -2;
    md_weights_t *w = md_weights_alloc(&cfg);
    if (!w) return -2;
    md_weights_init(w, 1);
    md_model_t *m = md_model_from_weights(w, be);
    if (!m) return -2;
    int32_t *ids = malloc(L * sizeof *ids);
    for (int64_t k = 0; k < L; k++) ids[k] = 7 + (int)((rng = rng * 6364136223846793005ull + 1442695040888963407ull) >> 62);
    md_forward_opts_t o = { .layer = -1, .want_logits = 0 };
    double acc = 0, t[64];
    md_cuda_reset_peak(be);
    int ret = 0;
    for (int r = -1; r < reps; r++) {
        double t0 = md_realtime();
        if (md_model_forward(m, ids, L, NULL, 0, &o, sink, &acc) < 0) {
            fprintf(stderr, "forward failed at L=%lld: %s\n", (long long)L, md_last_error());
            ret = -2;
            break;
        }
        if (r >= 0) t[r] = md_realtime() - t0;
    }
    if (ret == 0) {
        md_cuda_mem_t ms;
        md_cuda_mem_stats(be, &ms);
        double med = median(t, reps);
        printf("%s\tmodel\t%lld\tforward ph d256 x%d chunk %lld\t%.1f ms\t%.3f M bases/s\tpeak %.2f GiB\n", prec,
               (long long)L, n_layer, (long long)be->chunk, med * 1e3, L / med / 1e6, ms.peak / 1073741824.0);
        fflush(stdout);
    }
    free(ids);
    md_model_free(m);
    return ret;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_gpu ops|model [-p fp32|bf16] [-r reps] [-c chunk] [-n layers] L [L ...]\n");
        return 1;
    }
    const char *mode = argv[1], *precision = "bf16";
    int reps = 5, n_layer = 16, c;
    int64_t chunk = 0;
    optind = 2;
    while ((c = getopt(argc, argv, "p:r:c:n:")) >= 0) {
        switch (c) {
        case 'p': precision = optarg; break;
        case 'r': reps = atoi(optarg); break;
        case 'c': chunk = atoll(optarg); break;
        case 'n': n_layer = atoi(optarg); break;
        default: return 1;
        }
    }
    if (reps < 1) reps = 1;
    if (reps > 64) reps = 64;
    md_backend_t *be = md_backend_open("cuda", precision, 0);
    if (!be) return 1;
    if (chunk > 0) be->chunk = chunk;
    int ret = 0;
    for (int i = optind; i < argc && ret == 0; i++) {
        int64_t L = atoll(argv[i]);
        ret = !strcmp(mode, "ops") ? bench_ops(be, L, reps) : bench_model(be, L, reps, n_layer);
    }
    be->destroy(be);
    return ret ? 1 : 0;
}
