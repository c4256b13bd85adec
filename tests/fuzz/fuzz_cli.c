/* fuzz_cli.c: libFuzzer target for the command-line option parsers: main_embed, main_predict,
 * main_score, main_pretrain and main_info (tools/) get an argv built from the input, and
 * cli_parse_long / cli_parse_size are checked on their own. Input layout: byte 0 picks the
 * command, the rest is split into arguments at NUL or newline bytes (at most 64).
 * Nothing may be read or written outside the parsers: the link wraps (-Wl,--wrap, see
 * fuzz_cli.ldflags) the first call of each command that touches files or devices:
 * cli_find_model (embed, predict, info), md_fasta_open (score) and md_trainer_run (pretrain)
 * return a failure, so a command ends there with an input error (exit 2). */
#include "fuzz_common.h" /* first: it sets _GNU_SOURCE */

#include <getopt.h>
#include <limits.h>

#include "cli.h"
#include "seqio.h"
#include "train.h"

int main_embed(int argc, char *argv[], const cli_run_t *run);
int main_predict(int argc, char *argv[], const cli_run_t *run);
int main_score(int argc, char *argv[], const cli_run_t *run);
int main_pretrain(int argc, char *argv[], const cli_run_t *run);
int main_info(int argc, char *argv[], const cli_run_t *run);

/* which wrapped call the command reached (for the invariants below) */
static int reached_model, reached_fasta, reached_train;

int __wrap_cli_find_model(const char *cmd, const char *given, char *out, size_t n, int verbose)
{
    (void)cmd, (void)given, (void)verbose;
    reached_model = 1;
    if (n) out[0] = 0;
    return -1;
}

md_fasta_t *__wrap_md_fasta_open(const char *path, const char *fai)
{
    (void)path, (void)fai;
    reached_fasta = 1;
    return NULL;
}

int __wrap_md_trainer_run(const md_trainer_opts_t *o, md_trainer_progress_fn fn, void *ud)
{
    (void)fn, (void)ud;
    /* the tool's checks ran: an output folder and inputs were given */
    FUZZ_CHECK(o->outdir && o->n_inputs > 0);
    reached_train = 1;
    return -1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_init();
    return 0;
}

/* glibc's getopt keeps a pointer into the previous argv between calls; optind = 0 makes the
 * next call start afresh (a real process parses one argv only). */
static void getopt_reset(void)
{
    static char a0[] = "x";
    static char *av[] = { a0, NULL };
    optind = 0;
    opterr = 0;
    while (getopt(1, av, ":") >= 0) {}
}

static void check_numbers(const char *s)
{
    long v;
    int64_t v64;
    if (cli_parse_long("fuzz", "n", s, -5, 1000, &v) == 0) FUZZ_CHECK(v >= -5 && v <= 1000);
    if (cli_parse_size("fuzz", "n", s, 1, (int64_t)1 << 40, &v64) == 0)
        FUZZ_CHECK(v64 >= 1 && v64 <= (int64_t)1 << 40);
    if (cli_parse_size("fuzz", "n", s, 0, INT64_MAX, &v64) == 0) {
        FUZZ_CHECK(v64 >= 0);
        /* a size is digits with at most one k/M/G suffix (after optional space and sign) */
        size_t l = strlen(s);
        FUZZ_CHECK(l > 0);
        char last = s[l - 1];
        FUZZ_CHECK((last >= '0' && last <= '9') || strchr("kKmMgG", last));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096) return 0;
    static const char *const cmds[] = { "embed", "predict", "score", "pretrain", "info" };
    int which = data[0] % 5;
    char *buf = malloc(size);
    FUZZ_CHECK(buf);
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = 0;
    char *argv[66];
    int argc = 0;
    argv[argc++] = (char *)cmds[which];
    char *p = buf;
    for (char *q = buf; q <= buf + size - 1 && argc < 65; ++q) {
        if (q == buf + size - 1 || *q == 0 || *q == '\n') {
            *q = 0;
            argv[argc++] = p;
            p = q + 1;
        }
    }
    argv[argc] = NULL;
    if (size - 1 > 0) check_numbers(argv[1]);

    cli_run_t run = { 0, 0, (char *)"mamba-dna fuzz" };
    reached_model = reached_fasta = reached_train = 0;
    getopt_reset();
    int ret;
    switch (which) {
    case 0: ret = main_embed(argc, argv, &run); break;
    case 1: ret = main_predict(argc, argv, &run); break;
    case 2: ret = main_score(argc, argv, &run); break;
    case 3: ret = main_pretrain(argc, argv, &run); break;
    default: ret = main_info(argc, argv, &run); break;
    }
    md_log_level = MD_LOG_OFF; /* -v raises it */
    /* documented exit codes only; nothing can succeed past the wrapped calls except -h */
    FUZZ_CHECK(ret == CLI_OK || ret == CLI_EUSAGE || ret == CLI_EDATA);
    if (reached_model || reached_fasta || reached_train) FUZZ_CHECK(ret == CLI_EDATA);
    free(buf);
    return 0;
}
