/* pretrain.c: `mamba-dna pretrain -o OUTDIR IN...`: options -> md_trainer_opts_t -> check ->
 * md_trainer_run (lib/trainer.c) with a progress printer on stderr. --gpus N (or --nccl) forks
 * one process per GPU before any CUDA call: rank 0 makes the NCCL group id and writes it into a
 * pipe that the other ranks read; this process waits on the ranks, and when one fails it names
 * it and stops the others (SIGTERM, then SIGKILL), so a failure never leaves ranks hanging. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "cli.h"
#include "dist.h"
#include "md.h"
#include "train.h"

enum {
    OPT_VARIANT = CLI_OPT_FIRST_CMD, OPT_D_MODEL, OPT_N_LAYER, OPT_D_STATE, OPT_EXPAND, OPT_SEQ_LEN, OPT_BATCH,
    OPT_STEPS, OPT_LR, OPT_LR_MIN, OPT_WARMUP, OPT_WD, OPT_CLIP, OPT_ACCUM, OPT_SEED, OPT_HOLDOUT, OPT_TRAIN_REG,
    OPT_VAL_REG, OPT_VAL_EVERY, OPT_VAL_WINDOWS, OPT_SAVE_EVERY, OPT_RESUME, OPT_INIT_FROM, OPT_MASK_PROB,
    OPT_SOFT_W, OPT_RC_AUG, OPT_STOP_AFTER, OPT_SCAN_CHUNK, OPT_RECOMPUTE, OPT_NO_PROGRESS, OPT_DEBUG_NAN,
    OPT_GPUS, OPT_NCCL
};

static const char *const variant_names[] = { "ph", "ps", "mamba" };

static void usage(FILE *fp, const md_trainer_opts_t *o, const cli_common_t *c)
{
    fprintf(fp, "Usage: mamba-dna pretrain -o OUTDIR [options] IN...\n\n");
    fprintf(fp,
        "Trains a Caduceus (Ph or PS; masked LM, model-spec 4) or causal Mamba (next base) model\n"
        "on random windows of the inputs, holding out regions for validation. IN is FASTA/FASTQ\n"
        "(plain, gzip, BGZF) or SAM/BAM/CRAM; --train-regions needs an indexed FASTA.\n"
        "OUTDIR receives config.json + model.safetensors (Hugging Face layout), train_state.bin\n"
        "(for --resume), train_args.json and train.tsv; every checkpoint is written atomically.\n"
        "Plot the loss curve with: bench/plot_loss.sh OUTDIR/train.tsv OUT.png\n\n");
    fprintf(fp, "Data:\n");
    fprintf(fp, "      --holdout STR       held-out region chr:beg-end (1-based), excluded from training\n"
                "                          and used for validation; repeatable\n");
    fprintf(fp, "      --val-regions BED   held-out regions from a BED file\n");
    fprintf(fp, "      --train-regions BED train only on these regions of an indexed FASTA [whole inputs]\n");
    fprintf(fp, "      --val-windows INT   at most this many validation windows [%lld]\n", (long long)o->val_windows);
    fprintf(fp, "      --rc-aug STR        reverse-complement augmentation (p = 0.5): auto (Ph only), yes, no [auto]\n");
    fprintf(fp, "      --mask-prob FLOAT   masked LM: fraction of positions selected (80/10/10) [%g]\n", o->mlm.select);
    fprintf(fp, "      --soft-mask-weight FLOAT  loss weight of soft-masked bases in training (0 in\n"
                "                          validation when not 1; PlantCaduceus used 0.1) [%g]\n", o->mlm.soft_weight);
    fprintf(fp, "Model:\n");
    fprintf(fp, "      --variant STR       ph, ps or mamba (causal) [%s]\n", variant_names[o->variant]);
    fprintf(fp, "      --d-model INT       model width [%d]\n", o->d_model);
    fprintf(fp, "      --n-layer INT       layers [%d]\n", o->n_layer);
    fprintf(fp, "      --d-state INT       SSM state size [%d]\n", o->d_state);
    fprintf(fp, "      --expand INT        d_inner = expand * d_model [%d]\n", o->expand);
    fprintf(fp, "      --init-from DIR     start from this model folder instead of a new model\n");
    fprintf(fp, "Training:\n");
    fprintf(fp, "      --seq-len INT       bases per sequence [%lld]\n", (long long)o->seq_len);
    fprintf(fp, "      --batch INT         sequences per micro-batch [%d]\n", o->batch);
    fprintf(fp, "      --grad-accum INT    micro-batches per update [%d]\n", o->grad_accum);
    fprintf(fp, "      --steps INT         optimizer updates [%lld]\n", (long long)o->steps);
    fprintf(fp, "      --lr FLOAT          peak learning rate (AdamW, betas %g/%g) [%g]\n", o->optim.beta1, o->optim.beta2,
            o->optim.lr);
    fprintf(fp, "      --lr-min FLOAT      final learning rate of the cosine decay [%g]\n", o->optim.lr_min);
    fprintf(fp, "      --warmup FLOAT      linear warmup from 1e-6: a fraction of --steps (< 1) or updates [%g]\n",
            o->warmup);
    fprintf(fp, "      --weight-decay FLOAT  (none for embeddings, biases, A_log, D) [%g]\n", o->optim.weight_decay);
    fprintf(fp, "      --clip FLOAT        gradient-norm clipping; 0 = off [%g]\n", o->optim.clip);
    fprintf(fp, "      --seed INT          initialization, data order and masks [%llu]\n", (unsigned long long)o->seed);
    fprintf(fp, "      --val-every INT     validate every INT updates; 0 = at the end only [%lld]\n", (long long)o->val_every);
    fprintf(fp, "      --save-every INT    checkpoint every INT updates (and at the end) [%lld]\n", (long long)o->save_every);
    fprintf(fp, "      --resume            continue the run in OUTDIR (give the same options)\n");
    fprintf(fp, "      --stop-after INT    stop (with a checkpoint) after this update; --resume later\n");
    fprintf(fp, "      --scan-chunk INT    positions per saved scan state in the backward [ops default]\n");
    fprintf(fp, "      --recompute-scan    keep only each layer's input and run the forward scan again in\n"
                "                          the backward (least memory; default: keep the scan's chunk states)\n");
    fprintf(fp, "      --no-progress       no progress lines on stderr\n");
    fprintf(fp, "Device and output:\n");
    fprintf(fp, "  -o, --output DIR      output folder (created) [required]\n");
    fprintf(fp, "  -d, --device STR      cpu, cuda or auto (auto: CUDA when it can train, else CPU) [%s]\n", c->device);
    fprintf(fp, "      --gpus INT        data-parallel training on GPUs 0..INT-1, one process each, gradients\n"
                "                          summed with NCCL (libnccl.so.2, or $MD_NCCL_LIB); --batch and\n"
                "                          --grad-accum are per GPU; --resume needs the same INT [1]\n");
    fprintf(fp, "      --nccl            with --gpus 1: still go through NCCL (a check of that path)\n");
    fprintf(fp, "  -t, --threads INT     compute threads [%d]\n", c->threads);
    fprintf(fp, "      --precision STR   fp32 or bf16 activations (bf16: GPU only) [backend default]\n");
    fprintf(fp, "  -v, --verbose         log more; print the run summary\n");
    fprintf(fp, "  -h, --help            print this help and exit\n");
    fprintf(fp, "\nExit codes: 0 ok, 1 usage error, 2 input/data error, 3 internal/device error or a\n"
                "non-finite loss (the last checkpoint is kept).\n");
}

static int parse_double(const char *cmd, const char *what, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        return cli_usage_error(cmd, "%s: '%s' is not a number in %g..%g", what, s, lo, hi), -1;
    *out = v;
    return 0;
}

typedef struct {
    int enabled, tty, width;
    double last;
} prog_t;

static void fmt_time(double s, char *buf, size_t n)
{
    if (!(s >= 0) || s > 1e8) { snprintf(buf, n, "?"); return; }
    long t = (long)(s + 0.5);
    snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

static void on_progress(void *ud, const md_trainer_progress_t *p)
{
    prog_t *g = ud;
    if (!g->enabled) return;
    double now = md_realtime();
    int event = p->val || p->checkpoint || p->step == p->steps || p->step == 0;
    if (!event && now - g->last < (g->tty ? 0.5 : 10.0)) return;
    g->last = now;
    char eta[32], line[512];
    fmt_time(p->eta_s, eta, sizeof eta);
    int n = snprintf(line, sizeof line, "[pretrain] update %lld/%lld", (long long)p->step, (long long)p->steps);
    if (p->step > 0)
        n += snprintf(line + n, sizeof line - n, "  loss %.4f  acc %.3f  lr %.2e  %.0f tok/s  ETA %s",
                      p->loss, p->acc, p->lr, p->tok_per_s, eta);
    if (p->val) n += snprintf(line + n, sizeof line - n, "  val loss %.4f acc %.3f", p->val_loss, p->val_acc);
    if (p->checkpoint) n += snprintf(line + n, sizeof line - n, "  [checkpoint]");
    /* a terminal gets one line rewritten in place (padded over the previous one) */
    int pad = g->width > n ? g->width - n : 0;
    if (g->tty && !event) {
        fprintf(stderr, "\r%s%*s", line, pad, "");
        g->width = n;
    } else {
        fprintf(stderr, "%s%s%*s\n", g->tty ? "\r" : "", line, g->tty ? pad : 0, "");
        g->width = 0;
    }
}

static int exit_code(int trainer_ret)
{
    if (trainer_ret == -3 || trainer_ret == -4) return CLI_EINTERNAL;
    return trainer_ret < 0 ? CLI_EDATA : 0;
}

/* The CUDA device of each rank: $MD_DIST_DEVICES ("0,0" puts two ranks on GPU 0, to see what
 * NCCL says) or rank r on device r. */
static int rank_devices(int n, int *dev, const char *cmd)
{
    const char *e = getenv("MD_DIST_DEVICES");
    for (int r = 0; r < n; r++) dev[r] = r;
    if (!e || !*e) return 0;
    const char *p = e;
    for (int r = 0; r < n; r++) {
        char *end;
        long d = strtol(p, &end, 10);
        if (end == p || d < 0 || d > 1024 || (*end != ',' && *end) || (r < n - 1 && *end != ',') || (r == n - 1 && *end)) {
            cli_usage_error(cmd, "MD_DIST_DEVICES='%s': give %d device numbers separated by commas", e, n);
            return -1;
        }
        dev[r] = (int)d;
        p = end + 1;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int read_full(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t k = read(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* One rank, in its own process (after fork, before any CUDA call): an exit code. */
static int rank_main(md_trainer_opts_t *o, int rank, int nranks, int dev, const int idpipe[2], pid_t launcher,
                     prog_t *prog)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);   /* the launcher gone: stop */
    if (getppid() != launcher) return CLI_EINTERNAL;
    char dv[16];
    snprintf(dv, sizeof dv, "%d", dev);
    setenv("MD_CUDA_DEVICE", dv, 1);
    if (rank > 0) {   /* one report per run: the other ranks only log errors */
        md_log_level = MD_LOG_ERROR;
        prog->enabled = 0;
    }
    unsigned char id[MD_NCCL_ID_BYTES];
    if (rank == 0) {
        close(idpipe[0]);
        int ok = 1;
#ifdef MD_WITH_CUDA
        int ndev = md_cuda_device_count();
        if (ndev <= dev) {
            md_error("--gpus %d: rank 0 would use CUDA device %d but this machine has %d", nranks, dev, ndev);
            ok = 0;
        }
#endif
        if (ok && md_nccl_unique_id(id) < 0) ok = 0;
        for (int r = 1; ok && r < nranks; r++)
            if (write_full(idpipe[1], id, sizeof id) < 0) {
                md_error("rank 0: cannot hand the NCCL group id to the other ranks: %s", strerror(errno));
                ok = 0;
            }
        close(idpipe[1]);
        if (!ok) return CLI_EINTERNAL;
    } else {
        close(idpipe[1]);
        int got = read_full(idpipe[0], id, sizeof id);
        close(idpipe[0]);
        if (got < 0) {
            md_error("rank %d: no NCCL group id from rank 0 (it stopped before sending one)", rank);
            return CLI_EINTERNAL;
        }
    }
    o->nccl_id = id;
    o->rank = rank;
    o->nranks = nranks;
    return exit_code(md_trainer_run(o, on_progress, prog));
}

/* Launches nranks rank processes and waits for them: 0 when all succeeded. When one fails, the
 * others get 1 s to fail by themselves (e.g. after rank 0 sent no id) and are then stopped;
 * every rank that failed by itself is named, and the exit code is that of the lowest such rank
 * (3 when it died of a signal). */
static int run_ranks(md_trainer_opts_t *o, int nranks, prog_t *prog, const char *cmd)
{
    int dev[64], idpipe[2];
    pid_t pid[64];
    if (rank_devices(nranks, dev, cmd) < 0) return CLI_EUSAGE;
    if (pipe(idpipe) < 0) {
        fprintf(stderr, "[E::%s] cannot make a pipe for the NCCL group id: %s\n", cmd, strerror(errno));
        return CLI_EINTERNAL;
    }
    const pid_t launcher = getpid();
    fflush(stdout);
    fflush(stderr);
    int started = 0, ret = 0;
    for (; started < nranks; started++) {
        pid_t p = fork();
        if (p == 0) {
            int code = rank_main(o, started, nranks, dev[started], idpipe, launcher, prog);
            fflush(NULL);
            _exit(code);
        }
        if (p < 0) {
            fprintf(stderr, "[E::%s] cannot start rank %d: %s\n", cmd, started, strerror(errno));
            ret = CLI_EINTERNAL;
            break;
        }
        pid[started] = p;
    }
    close(idpipe[0]);
    close(idpipe[1]);
    /* status of each rank: -1 running, else its wait status; stopped[r]: we sent it SIGTERM */
    int status[64], stopped[64] = { 0 }, running = started, failing = ret != 0;
    for (int r = 0; r < started; r++) status[r] = -1;
    double term_at = failing ? md_realtime() : 0, kill_at = term_at + 10;
    while (running > 0) {
        int st;
        pid_t p = waitpid(-1, &st, failing ? WNOHANG : 0);
        if (p < 0 && errno == EINTR) continue;
        if (p < 0) break;
        if (p == 0) {   /* a rank failed: the others get 1 s to fail by themselves, then SIGTERM, then SIGKILL */
            double now = md_realtime();
            for (int r = 0; r < started; r++) {
                if (status[r] != -1) continue;
                if (now > kill_at) kill(pid[r], SIGKILL);
                else if (now > term_at && !stopped[r]) { kill(pid[r], SIGTERM); stopped[r] = 1; }
            }
            const struct timespec nap = { 0, 20000000 };
            nanosleep(&nap, NULL);
            continue;
        }
        int r = 0;
        while (r < started && pid[r] != p) r++;
        if (r == started) continue;   /* not a rank */
        status[r] = st;
        running--;
        if (!failing && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
            failing = 1;
            term_at = md_realtime() + 1;
            kill_at = term_at + 10;
        }
    }
    /* every rank that failed by itself, in rank order; the exit code of the first */
    int nstopped = 0;
    for (int r = 0; r < started; r++) {
        int st = status[r];
        if (st == -1 || (WIFEXITED(st) && WEXITSTATUS(st) == 0)) continue;
        if (stopped[r]) { nstopped++; continue; }
        char how[96];
        int code = CLI_EINTERNAL;
        if (WIFEXITED(st)) {
            snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(st));
            if (WEXITSTATUS(st) <= 3) code = WEXITSTATUS(st);
        } else {
            snprintf(how, sizeof how, "was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
        }
        fprintf(stderr, "[E::%s] rank %d of %d (CUDA device %d, pid %ld) %s\n", cmd, r, nranks, dev[r], (long)pid[r], how);
        if (ret == 0) ret = code;
    }
    if (nstopped) fprintf(stderr, "[E::%s] stopped the %d other rank%s\n", cmd, nstopped, nstopped > 1 ? "s" : "");
    if (failing && ret == 0) ret = CLI_EINTERNAL;
    return ret;
}

int main_pretrain(int argc, char *argv[], const cli_run_t *run)
{
    (void)run;
    const char *cmd = "pretrain";
    static const struct option lopts[] = {
        CLI_COMMON_LONG,
        { "variant", required_argument, 0, OPT_VARIANT },
        { "d-model", required_argument, 0, OPT_D_MODEL },
        { "n-layer", required_argument, 0, OPT_N_LAYER },
        { "d-state", required_argument, 0, OPT_D_STATE },
        { "expand", required_argument, 0, OPT_EXPAND },
        { "seq-len", required_argument, 0, OPT_SEQ_LEN },
        { "batch", required_argument, 0, OPT_BATCH },
        { "steps", required_argument, 0, OPT_STEPS },
        { "lr", required_argument, 0, OPT_LR },
        { "lr-min", required_argument, 0, OPT_LR_MIN },
        { "warmup", required_argument, 0, OPT_WARMUP },
        { "weight-decay", required_argument, 0, OPT_WD },
        { "clip", required_argument, 0, OPT_CLIP },
        { "grad-accum", required_argument, 0, OPT_ACCUM },
        { "seed", required_argument, 0, OPT_SEED },
        { "holdout", required_argument, 0, OPT_HOLDOUT },
        { "train-regions", required_argument, 0, OPT_TRAIN_REG },
        { "val-regions", required_argument, 0, OPT_VAL_REG },
        { "val-every", required_argument, 0, OPT_VAL_EVERY },
        { "val-windows", required_argument, 0, OPT_VAL_WINDOWS },
        { "save-every", required_argument, 0, OPT_SAVE_EVERY },
        { "resume", no_argument, 0, OPT_RESUME },
        { "init-from", required_argument, 0, OPT_INIT_FROM },
        { "mask-prob", required_argument, 0, OPT_MASK_PROB },
        { "soft-mask-weight", required_argument, 0, OPT_SOFT_W },
        { "rc-aug", required_argument, 0, OPT_RC_AUG },
        { "stop-after", required_argument, 0, OPT_STOP_AFTER },
        { "scan-chunk", required_argument, 0, OPT_SCAN_CHUNK },
        { "recompute-scan", no_argument, 0, OPT_RECOMPUTE },
        { "no-progress", no_argument, 0, OPT_NO_PROGRESS },
        { "debug-nan-at", required_argument, 0, OPT_DEBUG_NAN },
        { "gpus", required_argument, 0, OPT_GPUS },
        { "nccl", no_argument, 0, OPT_NCCL },
        { 0, 0, 0, 0 },
    };
    md_trainer_opts_t o;
    md_trainer_opts_init(&o);
    cli_common_t com;
    cli_common_init(&com);
    com.output = NULL;
    prog_t prog = { .enabled = 1, .tty = isatty(2), .width = 0, .last = 0 };
    const char **holdout = calloc(argc + 1, sizeof *holdout);
    if (!holdout) return CLI_EINTERNAL;
    int ret = CLI_EUSAGE, c, gpus = 1, use_nccl = 0, device_given = 0;
    long v;
    int64_t v64;
    double dv;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":" CLI_COMMON_SHORT, lopts, NULL)) >= 0) {
        if (c == 'm') { cli_usage_error(cmd, "-m/--model: give the model to start from with --init-from"); goto done; }
        int r = cli_common_opt(&com, cmd, c, optarg);
        if (r < 0) goto done;
        if (c == 'd') device_given = 1;
        if (r > 0) continue;
        switch (c) {
        case 'h':
            usage(stdout, &o, &com);
            ret = 0;
            goto done;
        case OPT_VARIANT:
            if (!strcmp(optarg, "ph")) o.variant = MD_VARIANT_PH;
            else if (!strcmp(optarg, "ps")) o.variant = MD_VARIANT_PS;
            else if (!strcmp(optarg, "mamba")) o.variant = MD_VARIANT_MAMBA;
            else { cli_usage_error(cmd, "--variant: '%s' is not one of ph, ps, mamba", optarg); goto done; }
            break;
        case OPT_D_MODEL: if (cli_parse_long(cmd, "--d-model", optarg, 1, 16384, &v) < 0) goto done; o.d_model = (int)v; break;
        case OPT_N_LAYER: if (cli_parse_long(cmd, "--n-layer", optarg, 1, 1024, &v) < 0) goto done; o.n_layer = (int)v; break;
        case OPT_D_STATE: if (cli_parse_long(cmd, "--d-state", optarg, 1, 64, &v) < 0) goto done; o.d_state = (int)v; break;
        case OPT_EXPAND: if (cli_parse_long(cmd, "--expand", optarg, 1, 16, &v) < 0) goto done; o.expand = (int)v; break;
        case OPT_SEQ_LEN: if (cli_parse_size(cmd, "--seq-len", optarg, 8, (int64_t)1 << 31, &v64) < 0) goto done; o.seq_len = v64; break;
        case OPT_BATCH: if (cli_parse_long(cmd, "--batch", optarg, 1, 65536, &v) < 0) goto done; o.batch = (int)v; break;
        case OPT_ACCUM: if (cli_parse_long(cmd, "--grad-accum", optarg, 1, 65536, &v) < 0) goto done; o.grad_accum = (int)v; break;
        case OPT_STEPS: if (cli_parse_size(cmd, "--steps", optarg, 1, (int64_t)1 << 40, &v64) < 0) goto done; o.steps = v64; break;
        case OPT_LR: if (parse_double(cmd, "--lr", optarg, 1e-12, 10, &o.optim.lr) < 0) goto done; break;
        case OPT_LR_MIN: if (parse_double(cmd, "--lr-min", optarg, 0, 10, &o.optim.lr_min) < 0) goto done; break;
        case OPT_WARMUP: if (parse_double(cmd, "--warmup", optarg, 0, 1e12, &o.warmup) < 0) goto done; break;
        case OPT_WD: if (parse_double(cmd, "--weight-decay", optarg, 0, 0.999, &o.optim.weight_decay) < 0) goto done; break;
        case OPT_CLIP: if (parse_double(cmd, "--clip", optarg, 0, 1e12, &o.optim.clip) < 0) goto done; break;
        case OPT_SEED: if (cli_parse_size(cmd, "--seed", optarg, 0, INT64_MAX, &v64) < 0) goto done; o.seed = (uint64_t)v64; break;
        case OPT_HOLDOUT: holdout[o.n_holdout++] = optarg; break;
        case OPT_TRAIN_REG: o.train_bed = optarg; break;
        case OPT_VAL_REG: o.val_bed = optarg; break;
        case OPT_VAL_EVERY: if (cli_parse_size(cmd, "--val-every", optarg, 0, INT64_MAX, &v64) < 0) goto done; o.val_every = v64; break;
        case OPT_VAL_WINDOWS: if (cli_parse_size(cmd, "--val-windows", optarg, 1, INT64_MAX, &v64) < 0) goto done; o.val_windows = v64; break;
        case OPT_SAVE_EVERY: if (cli_parse_size(cmd, "--save-every", optarg, 0, INT64_MAX, &v64) < 0) goto done; o.save_every = v64; break;
        case OPT_RESUME: o.resume = 1; break;
        case OPT_INIT_FROM: o.init_from = optarg; break;
        case OPT_MASK_PROB: if (parse_double(cmd, "--mask-prob", optarg, 1e-6, 1, &o.mlm.select) < 0) goto done; break;
        case OPT_SOFT_W:
            if (parse_double(cmd, "--soft-mask-weight", optarg, 0, 1, &dv) < 0) goto done;
            o.mlm.soft_weight = (float)dv;
            break;
        case OPT_RC_AUG:
            if (!strcmp(optarg, "auto")) o.rc_aug = -1;
            else if (!strcmp(optarg, "yes")) o.rc_aug = 1;
            else if (!strcmp(optarg, "no")) o.rc_aug = 0;
            else { cli_usage_error(cmd, "--rc-aug: '%s' is not one of auto, yes, no", optarg); goto done; }
            break;
        case OPT_STOP_AFTER: if (cli_parse_size(cmd, "--stop-after", optarg, 0, INT64_MAX, &v64) < 0) goto done; o.stop_after = v64; break;
        case OPT_SCAN_CHUNK: if (cli_parse_long(cmd, "--scan-chunk", optarg, 1, 1 << 20, &v) < 0) goto done; o.scan_chunk = (int)v; break;
        case OPT_RECOMPUTE: o.recompute_scan = 1; break;
        case OPT_NO_PROGRESS: prog.enabled = 0; break;
        case OPT_GPUS: if (cli_parse_long(cmd, "--gpus", optarg, 1, 64, &v) < 0) goto done; gpus = (int)v; break;
        case OPT_NCCL: use_nccl = 1; break;
        case OPT_DEBUG_NAN: if (cli_parse_size(cmd, "--debug-nan-at", optarg, 1, INT64_MAX, &v64) < 0) goto done; o.inject_nan_at = v64; break;
        default:
            ret = cli_getopt_error(cmd, c, argc, argv);
            goto done;
        }
    }
    o.inputs = (const char *const *)(argv + optind);
    o.n_inputs = argc - optind;
    o.holdout = holdout;
    o.outdir = com.output;
    o.device = com.device;
    o.precision = com.precision;
    o.threads = com.threads;
    if (!o.outdir) { cli_usage_error(cmd, "no output folder; give -o OUTDIR"); goto done; }
    if (!strcmp(o.outdir, "-")) { cli_usage_error(cmd, "-o: give a folder, not standard output"); goto done; }
    if (o.n_inputs == 0) { cli_usage_error(cmd, "no input; give FASTA/FASTQ/SAM/BAM/CRAM files"); goto done; }
    if (gpus > 1 || use_nccl) {
        if (device_given && strcmp(o.device, "cuda") && strcmp(o.device, "gpu")) {
            cli_usage_error(cmd, "--gpus %d%s trains on GPUs: give -d cuda (or leave -d out), not -d %s", gpus,
                            use_nccl ? " --nccl" : "", o.device);
            goto done;
        }
#ifndef MD_WITH_CUDA
        cli_usage_error(cmd, "--gpus %d%s: built without CUDA (rebuild with nvcc available, CUDA=1)", gpus,
                        use_nccl ? " --nccl" : "");
        goto done;
#endif
        o.device = "cuda";
    }
    if (md_trainer_opts_check(&o) < 0) goto done;   /* logged: a usage error */
    for (int i = 0; i < o.n_inputs; i++)
        if (strcmp(o.inputs[i], "-") && access(o.inputs[i], R_OK) != 0) {
            fprintf(stderr, "[E::%s] cannot open '%s': %s\n", cmd, o.inputs[i], strerror(errno));
            ret = CLI_EDATA;
            goto done;
        }
    if (gpus > 1 || use_nccl) ret = run_ranks(&o, gpus, &prog, cmd);
    else ret = exit_code(md_trainer_run(&o, on_progress, &prog));
    if (ret == 0 && com.verbose) fprintf(stderr, "[M::%s] model written to %s\n", cmd, o.outdir);
done:
    free(holdout);
    return ret;
}
