/* cli.c: shared command-line helpers (see cli.h): common options, exit codes, the default
 * model lookup, progress lines and the end-of-run report. */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "md.h"

/* --- run bookkeeping ------------------------------------------------------------------------ */

static int shell_safe(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!(('a' <= *s && *s <= 'z') || ('A' <= *s && *s <= 'Z') || ('0' <= *s && *s <= '9') ||
              strchr("-_./:=,+@%", *s)))
            return 0;
    return 1;
}

void cli_run_init(cli_run_t *r, int argc, char *argv[])
{
    r->t0_real = md_realtime();
    r->t0_cpu = md_cputime();
    size_t n = 1;
    for (int i = 0; i < argc; i++) n += 4 * strlen(argv[i]) + 3;
    r->cmdline = malloc(n);
    if (!r->cmdline) return;
    char *p = r->cmdline;
    *p = 0;
    for (int i = 0; i < argc; i++) {
        if (i) *p++ = ' ';
        const char *a = i == 0 ? "mamba-dna" : argv[i];
        if (shell_safe(a)) {
            size_t l = strlen(a);
            memcpy(p, a, l);
            p += l;
        } else {
            *p++ = '\'';
            for (const char *s = a; *s; s++) {
                if (*s == '\'') { memcpy(p, "'\\''", 4); p += 4; }
                else *p++ = *s;
            }
            *p++ = '\'';
        }
        *p = 0;
    }
}

void cli_run_report(const cli_run_t *r)
{
    fprintf(stderr, "[M::main] Version: %s\n", MD_VERSION);
    fprintf(stderr, "[M::main] CMD: %s\n", r->cmdline ? r->cmdline : "mamba-dna");
    fprintf(stderr, "[M::main] Real time: %.3f sec; CPU: %.3f sec; Peak RSS: %.3f GB\n",
            md_realtime() - r->t0_real, md_cputime() - r->t0_cpu,
            md_peak_rss_kb() / 1024.0 / 1024.0);
}

void cli_run_destroy(cli_run_t *r)
{
    free(r->cmdline);
    r->cmdline = NULL;
}

/* --- options -------------------------------------------------------------------------------- */

int cli_ncpu(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void cli_common_init(cli_common_t *c)
{
    memset(c, 0, sizeof *c);
    c->model = NULL;
    c->device = "auto";
    c->threads = cli_ncpu();
    c->output = "-";
    c->verbose = 0;
    c->precision = NULL;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "[E::%s] ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'mamba-dna %s -h')\n", cmd);
    return CLI_EUSAGE;
}

int cli_getopt_error(const char *cmd, int c, int argc, char *argv[])
{
    const char *arg = optind - 1 < argc && optind > 0 ? argv[optind - 1] : "?";
    char opt[64];
    if (optopt > 0 && optopt < 0x100 && (arg[0] != '-' || arg[1] != '-'))
        snprintf(opt, sizeof opt, "-%c", optopt);
    else
        snprintf(opt, sizeof opt, "%.*s", (int)strcspn(arg, "="), arg);
    if (c == ':') return cli_usage_error(cmd, "option '%s' needs an argument", opt);
    if (arg[0] == '-' && arg[1] == '-' && strchr(arg, '='))
        return cli_usage_error(cmd, "unknown option '%s', or it takes no argument", opt);
    return cli_usage_error(cmd, "unknown option '%s'", opt);
}

int cli_parse_long(const char *cmd, const char *what, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) {
        cli_usage_error(cmd, "%s: '%s' is not an integer", what, s);
        return -1;
    }
    if (v < lo || v > hi) {
        cli_usage_error(cmd, "%s: %ld is out of range (%ld..%ld)", what, v, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_size(const char *cmd, const char *what, const char *s, int64_t lo, int64_t hi,
                   int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s) goto bad;
    int64_t mul = 1;
    if (*end == 'k' || *end == 'K') mul = 1000, end++;
    else if (*end == 'm' || *end == 'M') mul = 1000000, end++;
    else if (*end == 'g' || *end == 'G') mul = 1000000000, end++;
    if (*end) goto bad;
    if (v < 0 || (v && mul > INT64_MAX / v)) goto range;
    v *= mul;
    if (v < lo || v > hi) goto range;
    *out = v;
    return 0;
bad:
    cli_usage_error(cmd, "%s: '%s' is not a number (suffixes k, M, G allowed)", what, s);
    return -1;
range:
    if (hi == INT64_MAX)
        cli_usage_error(cmd, "%s: '%s' is out of range (at least %lld)", what, s, (long long)lo);
    else
        cli_usage_error(cmd, "%s: '%s' is out of range (%lld..%lld)", what, s, (long long)lo,
                        (long long)hi);
    return -1;
}

int cli_check_output(const char *cmd, const char *what, const char *path)
{
    struct stat st;
    if (!strcmp(path, "-")) return 0;
    int special = !strncmp(path, "/dev/", 5) || !strncmp(path, "/proc/", 6) ||
                  (stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode));
    if (special) {
        cli_usage_error(cmd, "%s: '%s' is a device or special file; outputs are written under a "
                        "temporary name and renamed into place, which would replace it (give a "
                        "file name, or '-' for standard output)", what, path);
        return -1;
    }
    return 0;
}

int cli_common_opt(cli_common_t *c, const char *cmd, int opt, const char *arg)
{
    long v;
    switch (opt) {
    case 'm': c->model = arg; return 1;
    case 'd':
        if (strcmp(arg, "cpu") && strcmp(arg, "cuda") && strcmp(arg, "auto")) {
            cli_usage_error(cmd, "-d/--device: '%s' is not one of cpu, cuda, auto", arg);
            return -1;
        }
        c->device = arg;
        return 1;
    case 't':
        if (cli_parse_long(cmd, "-t/--threads", arg, 1, 1024, &v) < 0) return -1;
        c->threads = (int)v;
        return 1;
    case 'o':
        if (!*arg) {
            cli_usage_error(cmd, "-o/--output: empty file name");
            return -1;
        }
        if (cli_check_output(cmd, "-o/--output", arg) < 0) return -1;
        c->output = arg;
        return 1;
    case 'v':
        c->verbose++;
        md_log_level = c->verbose >= 2 ? MD_LOG_DEBUG : MD_LOG_INFO;
        return 1;
    case CLI_OPT_PRECISION:
        if (strcmp(arg, "fp32") && strcmp(arg, "bf16")) {
            cli_usage_error(cmd, "--precision: '%s' is not one of fp32, bf16", arg);
            return -1;
        }
        c->precision = arg;
        return 1;
    }
    return 0;
}

void cli_common_usage(FILE *fp, const cli_common_t *c, int with_output)
{
    fprintf(fp, "Model and device:\n");
    fprintf(fp, "  -m, --model DIR       model folder (config.json + model.safetensors) [%s]\n",
            c->model ? c->model : "$MAMBA_DNA_MODEL, else models/default");
    fprintf(fp, "  -d, --device STR      cpu, cuda or auto [%s]\n", c->device);
    fprintf(fp, "  -t, --threads INT     compute threads [%d]\n", c->threads);
    fprintf(fp, "      --precision STR   fp32 or bf16 activations (bf16: GPU only) [%s]\n",
            c->precision ? c->precision : "fp32 on CPU, backend default on GPU");
    fprintf(fp, "Output and logging:\n");
    if (with_output)
        fprintf(fp, "  -o, --output FILE     output file; '-' = stdout [%s]\n", c->output);
    fprintf(fp, "  -v, --verbose         log more (repeat for debug); print the run summary\n");
    fprintf(fp, "  -h, --help            print this help and exit\n");
}

/* --- default model -------------------------------------------------------------------------- */

static int has_config(const char *dir)
{
    char p[PATH_MAX];
    struct stat st;
    if (snprintf(p, sizeof p, "%s/config.json", dir) >= (int)sizeof p) return 0;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

int cli_find_model(const char *cmd, const char *given, char *out, size_t n, int verbose)
{
    if (given) {
        struct stat st;
        if (stat(given, &st) != 0) {
            fprintf(stderr, "[E::%s] model folder '%s': %s\n", cmd, given, strerror(errno));
            return -1;
        }
        if (!S_ISDIR(st.st_mode)) {
            fprintf(stderr, "[E::%s] model '%s' is not a folder (expected a folder with config.json and model.safetensors)\n",
                    cmd, given);
            return -1;
        }
        if (!has_config(given)) {
            fprintf(stderr, "[E::%s] model folder '%s' has no config.json (%s/config.json not found)\n",
                    cmd, given, given);
            return -1;
        }
        snprintf(out, n, "%s", given);
        return 0;
    }
    const char *env = getenv("MAMBA_DNA_MODEL");
    if (env && *env) {
        if (!has_config(env)) {
            fprintf(stderr, "[E::%s] $MAMBA_DNA_MODEL='%s' is not a model folder (no %s/config.json)\n",
                    cmd, env, env);
            return -1;
        }
        snprintf(out, n, "%s", env);
        if (verbose) fprintf(stderr, "[M::%s] model: %s (from $MAMBA_DNA_MODEL)\n", cmd, out);
        return 0;
    }
    char exe[PATH_MAX], bindir[PATH_MAX];
    ssize_t l = readlink("/proc/self/exe", exe, sizeof exe - 1);
    bindir[0] = 0;
    if (l > 0) {
        exe[l] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(bindir, sizeof bindir, "%s", exe);
        }
    }
    char cand[4][PATH_MAX + 64];
    int nc = 0;
    if (bindir[0]) {
        snprintf(cand[nc++], sizeof cand[0], "%s/models/default", bindir);
        snprintf(cand[nc++], sizeof cand[0], "%s/../share/mamba-dna/models/default", bindir);
        snprintf(cand[nc++], sizeof cand[0], "%s/../models/default", bindir);
    }
    snprintf(cand[nc++], sizeof cand[0], "models/default");
    for (int i = 0; i < nc; i++) {
        if (has_config(cand[i])) {
            char *rp = realpath(cand[i], NULL);
            snprintf(out, n, "%s", rp ? rp : cand[i]);
            free(rp);
            if (verbose)
                fprintf(stderr, "[M::%s] model: %s (default model%s%s)\n", cmd, cand[i],
                        strcmp(out, cand[i]) ? "; " : "", strcmp(out, cand[i]) ? out : "");
            return 0;
        }
    }
    fprintf(stderr, "[E::%s] no model given and no default model found; use -m DIR or set "
                    "$MAMBA_DNA_MODEL (tried:", cmd);
    for (int i = 0; i < nc; i++) fprintf(stderr, "%s %s", i ? "," : "", cand[i]);
    fprintf(stderr, ")\n");
    return -1;
}

/* --- progress ------------------------------------------------------------------------------- */

void cli_progress_init(cli_progress_t *p, const char *what, int64_t total, int enabled)
{
    memset(p, 0, sizeof *p);
    p->what = what;
    p->total = total;
    p->enabled = enabled;
    p->tty = isatty(STDERR_FILENO);
    p->t0 = p->last = md_realtime();
}

static void fmt_bases(char *buf, size_t n, double b)
{
    if (b >= 1e9) snprintf(buf, n, "%.2f Gb", b / 1e9);
    else if (b >= 1e6) snprintf(buf, n, "%.2f Mb", b / 1e6);
    else if (b >= 1e3) snprintf(buf, n, "%.1f kb", b / 1e3);
    else snprintf(buf, n, "%.0f b", b);
}

static void progress_print(cli_progress_t *p, double now)
{
    char done[32], rate[32], eta[48] = "";
    double dt = now - p->t0;
    double r = dt > 0 ? p->done / dt : 0;
    fmt_bases(done, sizeof done, (double)p->done);
    fmt_bases(rate, sizeof rate, r);
    if (p->total > 0 && r > 0) {
        double left = (p->total - p->done) / r;
        if (left < 0) left = 0;
        long s = (long)(left + 0.5);
        snprintf(eta, sizeof eta, ", %.1f%%, ETA %ld:%02ld:%02ld",
                 100.0 * p->done / p->total, s / 3600, s / 60 % 60, s % 60);
    }
    if (p->tty)
        fprintf(stderr, "\r[M::%s] %s done, %s/s%s   ", p->what, done, rate, eta);
    else
        fprintf(stderr, "[M::%s] %s done, %s/s%s\n", p->what, done, rate, eta);
    p->printed = 1;
}

void cli_progress_update(cli_progress_t *p, int64_t done)
{
    p->done = done;
    if (!p->enabled) return;
    double now = md_realtime();
    double every = p->tty ? 0.5 : 10.0;
    if (now - p->t0 < (p->tty ? 1.0 : 10.0) || now - p->last < every) return;
    p->last = now;
    progress_print(p, now);
}

void cli_progress_finish(cli_progress_t *p, int verbose)
{
    if (p->enabled && p->tty && p->printed) fputc('\n', stderr);
    if (verbose) {
        double dt = md_realtime() - p->t0;
        char done[32], rate[32];
        fmt_bases(done, sizeof done, (double)p->done);
        fmt_bases(rate, sizeof rate, dt > 0 ? p->done / dt : 0);
        fprintf(stderr, "[M::%s] %s in %.3f sec (%s/s)\n", p->what, done, dt, rate);
    }
}
