/* cli.h: what every mamba-dna command shares: the common options (-m -d -t -o -v --precision),
 * exit codes, the default-model lookup, progress lines on stderr and the end-of-run report.
 * Only tools/ include this; the library never prints usage or exits.
 *
 * Exit codes: 0 success, 1 usage error (bad option or argument), 2 input or data error (missing
 * or malformed input, bad model folder, unwritable output), 3 internal or device error. */
#ifndef MD_CLI_H
#define MD_CLI_H

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

enum { CLI_OK = 0, CLI_EUSAGE = 1, CLI_EDATA = 2, CLI_EINTERNAL = 3 };

/* What main() records before dispatching: start times and the command line (for provenance). */
typedef struct {
    double t0_real, t0_cpu;
    char *cmdline;          /* argv joined by spaces, with shell-unsafe arguments quoted */
} cli_run_t;

void cli_run_init(cli_run_t *r, int argc, char *argv[]);
/* "[M::main] Version: ...", "[M::main] CMD: ...", "[M::main] Real time: ... sec; CPU: ... sec;
 * Peak RSS: ... GB" on stderr. */
void cli_run_report(const cli_run_t *r);
void cli_run_destroy(cli_run_t *r);

typedef int (*cli_cmd_fn)(int argc, char *argv[], const cli_run_t *run);

/* Options every model command takes. */
typedef struct {
    const char *model;      /* -m; NULL: the default model (cli_find_model) */
    const char *device;     /* -d cpu|cuda|auto */
    int threads;            /* -t compute threads */
    const char *output;     /* -o; "-" = stdout */
    int verbose;            /* -v count */
    const char *precision;  /* --precision fp32|bf16; NULL = backend default */
} cli_common_t;

/* Long-option codes beyond the ASCII range, shared by the commands. */
enum {
    CLI_OPT_PRECISION = 0x100, CLI_OPT_VERSION, CLI_OPT_FIRST_CMD = 0x200
};

#define CLI_COMMON_SHORT "m:d:t:o:vh"
#define CLI_COMMON_LONG \
    { "model", required_argument, 0, 'm' }, { "device", required_argument, 0, 'd' }, \
    { "threads", required_argument, 0, 't' }, { "output", required_argument, 0, 'o' }, \
    { "verbose", no_argument, 0, 'v' }, { "precision", required_argument, 0, CLI_OPT_PRECISION }, \
    { "help", no_argument, 0, 'h' }

void cli_common_init(cli_common_t *c);
/* Handles one getopt result. 1: consumed; 0: not a common option; -1: bad value (the message
 * has been printed; exit CLI_EUSAGE). 'h' is not handled here. */
int cli_common_opt(cli_common_t *c, const char *cmd, int opt, const char *arg);
/* Refuses (usage error printed, -1) an output path that is a device or special file (/dev/...,
 * /proc/..., a FIFO): outputs are renamed into place, and as root that would replace /dev/null.
 * 0 for '-', a regular file, a folder or a new name. */
int cli_check_output(const char *cmd, const char *what, const char *path);
/* Usage lines of the common options with their current values, for `cmd -h`. */
void cli_common_usage(FILE *fp, const cli_common_t *c, int with_output);

/* Prints one line "[E::cmd] <message> (see 'mamba-dna cmd -h')" on stderr; returns CLI_EUSAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The message for a getopt failure: c is getopt's ':' (missing argument; the option string
 * must start with ':') or '?' (unknown option). Returns CLI_EUSAGE. */
int cli_getopt_error(const char *cmd, int c, int argc, char *argv[]);
/* Strict integer / size parsing ("65536", "64k", "1M", "1G" for sizes). 0 or -1 (message
 * printed). */
int cli_parse_long(const char *cmd, const char *what, const char *s, long lo, long hi, long *out);
int cli_parse_size(const char *cmd, const char *what, const char *s, int64_t lo, int64_t hi,
                   int64_t *out);

/* The model folder to use. `given` (-m) wins; else $MAMBA_DNA_MODEL; else
 * <bindir>/models/default, <bindir>/../share/mamba-dna/models/default,
 * <bindir>/../models/default and ./models/default (the repository layout), first that holds a
 * config.json. Writes the path to out; 0, or -1 with an error listing what was tried. Says which
 * one was used when verbose. */
int cli_find_model(const char *cmd, const char *given, char *out, size_t n, int verbose);

/* Number of CPUs this process may use. */
int cli_ncpu(void);

/* Progress on stderr: carriage-return updates when stderr is a terminal (after the first
 * second), a plain line every 10 s otherwise. total may be -1 (no ETA). */
typedef struct {
    const char *what;
    int64_t total, done;
    double t0, last;
    int tty, enabled, printed;
} cli_progress_t;

void cli_progress_init(cli_progress_t *p, const char *what, int64_t total, int enabled);
void cli_progress_update(cli_progress_t *p, int64_t done);
/* Ends a terminal progress line (newline) and prints the final rate under -v. */
void cli_progress_finish(cli_progress_t *p, int verbose);

/* embed and predict share their options and flow (tools/embed.c); predict = 0 or 1. */
int cli_seq_cmd(int predict, int argc, char *argv[], const cli_run_t *run);

#endif
