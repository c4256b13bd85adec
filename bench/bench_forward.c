/* bench_forward.c: forward-pass throughput of a random-weight model (default: the Caduceus-Ph
 * 131k configuration, d_model 256, 16 layers) on one backend, batch 1, one strand.
 * Prints one TSV row per length: device, precision, variant, L, seconds (fastest rep), bases/s,
 * peak RSS, and the process CPU time (all threads, user + system) per base of the fastest rep,
 * which compares CPU versions on a busy machine better than wall time.
 *   bench_forward [-d cpu|cuda] [-p fp32|bf16] [-v ph|ps|mamba] [-D d_model] [-n n_layer]
 *                 [-t threads] [-r reps] L [L ...] */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "md.h"
#include "model.h"

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int sink(void *ud, int64_t r0, int64_t nr, const float *h, const float *l)
{
    (void)r0; (void)l;
    double *acc = ud;
    *acc += h[0] + h[(nr - 1)]; /* touch the output so nothing is optimised away */
    return 0;
}

int main(int argc, char **argv)
{
    const char *dev = "cpu", *prec = NULL, *variant = "ph";
    int d_model = 256, n_layer = 16, threads = 0, reps = 1, c;
    while ((c = getopt(argc, argv, "d:p:v:D:n:t:r:")) >= 0) {
        switch (c) {
        case 'd': dev = optarg; break;
        case 'p': prec = optarg; break;
        case 'v': variant = optarg; break;
        case 'D': d_model = atoi(optarg); break;
        case 'n': n_layer = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'r': reps = atoi(optarg); break;
        default: fprintf(stderr, "usage: bench_forward [-d dev] [-p prec] [-v ph|ps|mamba] [-D d] [-n layers] [-t threads] [-r reps] L...\n"); return 1;
        }
    }
    if (optind >= argc) { fprintf(stderr, "bench_forward: give at least one length\n"); return 1; }
    md_config_t cfg;
    md_config_init(&cfg);
    cfg.d_model = d_model;
    cfg.n_layer = n_layer;
    if (!strcmp(variant, "ps")) cfg.rcps = 1;
    else if (!strcmp(variant, "mamba")) cfg.arch = MD_ARCH_MAMBA;
    if (md_config_finish(&cfg, "bench") < 0) return 1;
    md_backend_t *be = strcmp(dev, "cpu") == 0 ? md_backend_cpu_open(threads) : md_backend_open(dev, prec, threads);
    if (!be) return 1;
    md_weights_t *w = md_weights_alloc(&cfg);
    if (!w) return 1;
    md_weights_init(w, 1);
    md_model_t *m = md_model_from_weights(w, be);
    if (!m) return 1;
    printf("device\tprecision\tvariant\tL\tseconds\tbases_per_s\tpeak_rss_GB\tcpu_us_per_base\n");
    for (int i = optind; i < argc; i++) {
        int64_t L = atoll(argv[i]);
        int32_t *ids = malloc(L * sizeof *ids);
        uint64_t s = 88172645463325252ULL;
        for (int64_t k = 0; k < L; k++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; ids[k] = 7 + (int)(s % 4); }
        md_forward_opts_t o = { .layer = -1, .want_logits = 0 };
        double acc = 0, best = 1e30, best_cpu = 0;
        for (int r = 0; r < reps; r++) {
            double t = md_realtime(), c0 = cpu_seconds();
            if (md_model_forward(m, ids, L, NULL, 0, &o, sink, &acc) < 0) { fprintf(stderr, "forward failed at L=%lld\n", (long long)L); return 1; }
            t = md_realtime() - t;
            if (t < best) { best = t; best_cpu = cpu_seconds() - c0; }
        }
        printf("%s\t%s\t%s\t%lld\t%.3f\t%.0f\t%.2f\t%.1f\n", be->name, be->act_dtype == MD_DT_BF16 ? "bf16" : "fp32",
               variant, (long long)L, best, L / best, md_peak_rss_kb() / 1048576.0, best_cpu / L * 1e6);
        fflush(stdout);
        free(ids);
    }
    md_model_free(m);
    be->destroy(be);
    return 0;
}
