/* main.c: the mamba-dna dispatcher. A table of commands, one main_<cmd>() per file in tools/.
 * Commands written elsewhere are linked weakly, so a tree where one is missing still builds and
 * says so at run time. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "md.h"

int main_embed(int argc, char *argv[], const cli_run_t *run) __attribute__((weak));
int main_predict(int argc, char *argv[], const cli_run_t *run) __attribute__((weak));
int main_score(int argc, char *argv[], const cli_run_t *run) __attribute__((weak));
int main_pretrain(int argc, char *argv[], const cli_run_t *run) __attribute__((weak));
int main_info(int argc, char *argv[], const cli_run_t *run) __attribute__((weak));

typedef struct {
    const char *name;
    cli_cmd_fn fn;
    const char *help;
} cmd_t;

static void commands(cmd_t *t)
{
    cmd_t tab[] = {
        { "embed",    main_embed,    "embeddings of sequences, regions or reads (.npy or TSV)" },
        { "predict",  main_predict,  "per-base probabilities of A, C, G, T from the LM head" },
        { "score",    main_score,    "score variants of a VCF/BCF against a reference FASTA" },
        { "pretrain", main_pretrain, "train a model from scratch on FASTA" },
        { "info",     main_info,     "describe a model folder (sizes, parameters, sha256)" },
        { NULL, NULL, NULL },
    };
    memcpy(t, tab, sizeof tab);
}

static void usage(FILE *fp, const cmd_t *t)
{
    fprintf(fp, "\nProgram: mamba-dna (Caduceus / Mamba DNA language models)\n");
    fprintf(fp, "Version: %s\n\n", MD_VERSION);
    fprintf(fp, "Usage:   mamba-dna <command> [options]\n\n");
    fprintf(fp, "Commands:\n");
    for (; t->name; t++)
        fprintf(fp, "  %-10s %s%s\n", t->name, t->help, t->fn ? "" : " (not in this build)");
    fprintf(fp, "\n  --version  print the version and exit\n");
    fprintf(fp, "\nRun 'mamba-dna <command> -h' for the options of a command.\n");
    fprintf(fp, "Exit codes: 0 success, 1 usage error, 2 input/data error, 3 internal/device error.\n\n");
}

int main(int argc, char *argv[])
{
    cmd_t tab[8];
    commands(tab);
    if (argc < 2) {
        usage(stderr, tab);
        return CLI_EUSAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--version") || !strcmp(name, "version")) {
        printf("mamba-dna %s\n", MD_VERSION);
        return 0;
    }
    if (!strcmp(name, "-h") || !strcmp(name, "--help") || !strcmp(name, "help")) {
        usage(stdout, tab);
        return 0;
    }
    for (const cmd_t *c = tab; c->name; c++) {
        if (strcmp(c->name, name)) continue;
        if (!c->fn) {
            fprintf(stderr, "[E::main] command '%s' is not available in this build\n", name);
            return CLI_EINTERNAL;
        }
        cli_run_t run;
        cli_run_init(&run, argc, argv);
        int ret = c->fn(argc - 1, argv + 1, &run);
        if (md_log_level >= MD_LOG_INFO) cli_run_report(&run);
        cli_run_destroy(&run);
        if (ret == 0 && (fflush(stdout) != 0 || ferror(stdout))) {
            perror("[E::main] writing to standard output");
            if (ret == 0) ret = CLI_EDATA;
        }
        return ret;
    }
    fprintf(stderr, "[E::main] unknown command '%s'; run 'mamba-dna' for the list of commands\n",
            name);
    return CLI_EUSAGE;
}
