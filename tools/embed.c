/* embed.c: `mamba-dna embed IN...` and, through cli_seq_cmd(), the shared option parsing and
 * flow of `mamba-dna predict`: options -> checks -> model -> output -> pipeline (lib/pipeline.c)
 * over every input -> rename outputs into place -> report. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cli.h"
#include "md.h"
#include "model.h"
#include "pipeline.h"
#include "seqio.h"

enum {
    OPT_POOL = CLI_OPT_FIRST_CMD, OPT_RC, OPT_RAW, OPT_LAYER, OPT_HALF, OPT_BATCH, OPT_MIN_LEN,
    OPT_N_AS_PAD, OPT_NO_PROGRESS
};

typedef struct {
    cli_common_t com;
    pl_opts_t pl;
    md_seqopts_t so;
    int half, progress, rc_set;
    const char **regions;
    int n_regions;
} seqcmd_t;

static void usage(FILE *fp, int predict, const seqcmd_t *s)
{
    const char *cmd = predict ? "predict" : "embed";
    fprintf(fp, "Usage: mamba-dna %s [options] IN...\n\n", cmd);
    if (predict)
        fprintf(fp,
            "Per-base probabilities of A, C, G, T from the model's LM head (no masking),\n"
            "renormalised over the four bases. Caduceus: P(base t | whole sequence); causal Mamba:\n"
            "the row of position t holds P(base t+1 | bases <= t).\n");
    else
        fprintf(fp,
            "Embeddings of sequences: one row per window (--pool mean) or per base (--pool none).\n");
    fprintf(fp,
        "IN is FASTA/FASTQ (plain, gzip or BGZF; '-' = stdin), an indexed FASTA with -r/-R, or\n"
        "SAM/BAM/CRAM (one sequence per read). Rows come in input order.\n\n");
    fprintf(fp, "Input:\n");
    fprintf(fp, "  -r, --region STR      region chr:beg-end (1-based, inclusive) of an indexed FASTA\n"
                "                        or BAM/CRAM; repeatable\n");
    fprintf(fp, "  -R, --regions-file FILE  BED file of regions (0-based, half-open)\n");
    fprintf(fp, "  -F, --excl-flags INT  skip reads with any of these SAM flags [0x%x]\n", s->so.flag_exclude);
    fprintf(fp, "  -f, --incl-flags INT  keep only reads with all of these SAM flags [0x%x]\n", s->so.flag_require);
    fprintf(fp, "      --min-len INT     skip records/reads shorter than INT bases [%lld]\n", (long long)s->so.min_len);
    fprintf(fp, "  -@, --decompress-threads INT  extra htslib decompression threads [%d]\n", s->so.threads);
    fprintf(fp, "  -T, --reference FILE  reference FASTA for CRAM input [%s]\n",
            s->so.reference ? s->so.reference : "from the CRAM header");
    fprintf(fp, "      --n-as-pad        feed N as [PAD] (as in Caduceus pretraining) instead of N\n");
    fprintf(fp, "Windows:\n");
    fprintf(fp, "  -w, --window INT      window length; 0 = the whole record in one pass (a window\n"
                "                        longer than a record is the whole record) [%lld]\n", (long long)s->pl.window);
    if (s->pl.stride)
        fprintf(fp, "  -s, --stride INT      window stride; the last window ends at the record end [%lld]\n",
                (long long)s->pl.stride);
    else
        fprintf(fp, "  -s, --stride INT      window stride; the last window ends at the record end [= window]\n");
    fprintf(fp, "Model output:\n");
    if (!predict) {
        fprintf(fp, "      --pool STR        mean (one row per window) or none (one row per base) [%s]\n",
                s->pl.pool == PL_POOL_MEAN ? "mean" : "none");
        fprintf(fp, "      --layer INT       hidden state K = HF output_hidden_states[K] (0 = embedding\n"
                    "                        layer, K = output of block K-1); -1 = final normed [%d]\n", s->pl.layer);
        fprintf(fp, "      --rc STR          average: Ph/Mamba: forward and reverse-complement passes\n"
                    "                        averaged position by position; PS: (h[:D] + flip(h[D:]))/2;\n"
                    "                        none: forward strand (PS: first half) [%s]\n",
                s->pl.rc == PL_RC_AVERAGE ? "average" : "none");
        fprintf(fp, "      --raw             the model's hidden state of the forward strand as is (PS:\n"
                    "                        full 2*d_model width), no strand combining\n");
    } else {
        fprintf(fp, "      --rc STR          average: logits of the forward and reverse-complement\n"
                    "                        passes averaged per position (logit space) before the\n"
                    "                        softmax (PS models are averaged by construction);\n"
                    "                        none: forward strand only [%s]\n",
                s->pl.rc == PL_RC_AVERAGE ? "average (none for causal Mamba)" : "none");
        fprintf(fp, "      --raw             full logits of the forward strand over the padded\n"
                    "                        vocabulary, no strand averaging\n");
    }
    fprintf(fp, "      --half            float16 .npy output\n");
    if (s->pl.batch_tokens)
        fprintf(fp, "      --batch-tokens INT  tokens per packed forward call [%lld]\n", (long long)s->pl.batch_tokens);
    else
        fprintf(fp, "      --batch-tokens INT  tokens per packed forward call [65536 on CPU, 1048576 on GPU]\n");
    fprintf(fp, "      --no-progress     no progress lines on stderr\n");
    cli_common_usage(fp, &s->com, 1);
    fprintf(fp, "\nOutput: -o FILE.npy writes float32 rows\n  (%s)\n"
                "plus FILE.npy.bed (one line per window: chrom/name, start, end, name, score,\n"
                "strand, first row, rows) and FILE.npy.json (provenance). Any other name, or '-',\n"
                "writes TSV with a '#' header\n  (%s).\n",
            predict ? "L x 4: pA pC pG pT, or L x vocab logits with --raw" : "N x d_model, or the model width with --raw",
            predict ? "chrom pos ref pA pC pG pT entropy; pos 1-based, entropy in bits" : "name start end values; 0-based half-open");
    fprintf(fp, "Exit codes: 0 ok, 1 usage error, 2 input/data error, 3 internal/device error.\n");
}

static int parse_flags(const char *cmd, const char *what, const char *s, uint32_t *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 0);
    if (errno || end == s || *end || v < 0 || v > 0xffff)
        return cli_usage_error(cmd, "%s: '%s' is not a SAM flag value (0..0xffff)", what, s), -1;
    *out = (uint32_t)v;
    return 0;
}

/* A progress callback for the pipeline. */
static void on_progress(void *ud, int64_t done) { cli_progress_update(ud, done); }

/* Total bases when every input is an indexed FASTA read whole (for the ETA), else -1. */
static int64_t total_bases(char **in, int n, const seqcmd_t *s)
{
    if (s->n_regions || s->so.bed) return -1;
    int64_t tot = 0;
    for (int i = 0; i < n; i++) {
        char fai[PATH_MAX];
        if (!strcmp(in[i], "-") || snprintf(fai, sizeof fai, "%s.fai", in[i]) >= (int)sizeof fai ||
            access(fai, R_OK) != 0)
            return -1;
        FILE *fp = fopen(fai, "r");
        if (!fp) return -1;
        char line[4096];
        while (fgets(line, sizeof line, fp)) {
            char *tab = strchr(line, '\t');
            if (tab) tot += strtoll(tab + 1, NULL, 10);
        }
        fclose(fp);
    }
    return tot > 0 ? tot : -1;
}

int cli_seq_cmd(int predict, int argc, char *argv[], const cli_run_t *run)
{
    const char *cmd = predict ? "predict" : "embed";
    static const struct option lopts[] = {
        CLI_COMMON_LONG,
        { "region", required_argument, 0, 'r' },
        { "regions-file", required_argument, 0, 'R' },
        { "excl-flags", required_argument, 0, 'F' },
        { "incl-flags", required_argument, 0, 'f' },
        { "min-len", required_argument, 0, OPT_MIN_LEN },
        { "decompress-threads", required_argument, 0, '@' },
        { "reference", required_argument, 0, 'T' },
        { "window", required_argument, 0, 'w' },
        { "stride", required_argument, 0, 's' },
        { "pool", required_argument, 0, OPT_POOL },
        { "rc", required_argument, 0, OPT_RC },
        { "raw", no_argument, 0, OPT_RAW },
        { "layer", required_argument, 0, OPT_LAYER },
        { "half", no_argument, 0, OPT_HALF },
        { "batch-tokens", required_argument, 0, OPT_BATCH },
        { "n-as-pad", no_argument, 0, OPT_N_AS_PAD },
        { "no-progress", no_argument, 0, OPT_NO_PROGRESS },
        { 0, 0, 0, 0 },
    };
    seqcmd_t s;
    memset(&s, 0, sizeof s);
    cli_common_init(&s.com);
    pl_opts_init(&s.pl, predict ? PL_PREDICT : PL_EMBED);
    md_seqopts_init(&s.so);
    s.progress = 1;
    int ret = CLI_EUSAGE, c;
    long v;
    int64_t v64;
    md_backend_t *be = NULL;
    md_model_t *model = NULL;
    pl_out_t *out = NULL;
    pl_t *pl = NULL;

    s.regions = calloc(argc + 1, sizeof(char *));
    if (!s.regions) return CLI_EINTERNAL;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":" CLI_COMMON_SHORT "r:R:F:f:@:T:w:s:", lopts, NULL)) >= 0) {
        int r = cli_common_opt(&s.com, cmd, c, optarg);
        if (r < 0) goto done;
        if (r > 0) continue;
        switch (c) {
        case 'h':
            usage(stdout, predict, &s);
            ret = 0;
            goto done;
        case 'r': s.regions[s.n_regions++] = optarg; break;
        case 'R': s.so.bed = optarg; break;
        case 'F': if (parse_flags(cmd, "-F/--excl-flags", optarg, &s.so.flag_exclude) < 0) goto done; break;
        case 'f': if (parse_flags(cmd, "-f/--incl-flags", optarg, &s.so.flag_require) < 0) goto done; break;
        case OPT_MIN_LEN:
            if (cli_parse_size(cmd, "--min-len", optarg, 0, INT64_MAX, &v64) < 0) goto done;
            s.so.min_len = v64;
            break;
        case '@':
            if (cli_parse_long(cmd, "-@/--decompress-threads", optarg, 0, 256, &v) < 0) goto done;
            s.so.threads = (int)v;
            break;
        case 'T': s.so.reference = optarg; break;
        case 'w':
            if (cli_parse_size(cmd, "-w/--window", optarg, 0, INT64_MAX, &v64) < 0) goto done;
            s.pl.window = v64;
            break;
        case 's':
            if (cli_parse_size(cmd, "-s/--stride", optarg, 1, INT64_MAX, &v64) < 0) goto done;
            s.pl.stride = v64;
            break;
        case OPT_POOL:
            if (predict) { cli_usage_error(cmd, "--pool is an embed option (predict writes one row per base)"); goto done; }
            if (!strcmp(optarg, "mean")) s.pl.pool = PL_POOL_MEAN;
            else if (!strcmp(optarg, "none")) s.pl.pool = PL_POOL_NONE;
            else { cli_usage_error(cmd, "--pool: '%s' is not one of mean, none", optarg); goto done; }
            break;
        case OPT_RC:
            if (!strcmp(optarg, "average")) s.pl.rc = PL_RC_AVERAGE;
            else if (!strcmp(optarg, "none")) s.pl.rc = PL_RC_NONE;
            else { cli_usage_error(cmd, "--rc: '%s' is not one of average, none", optarg); goto done; }
            s.rc_set = 1;
            break;
        case OPT_RAW: s.pl.raw = 1; break;
        case OPT_LAYER:
            if (predict) { cli_usage_error(cmd, "--layer is an embed option (predict uses the LM head)"); goto done; }
            if (cli_parse_long(cmd, "--layer", optarg, -1, 1023, &v) < 0) goto done;
            s.pl.layer = (int)v;
            break;
        case OPT_HALF: s.half = 1; break;
        case OPT_BATCH:
            if (cli_parse_size(cmd, "--batch-tokens", optarg, 1, (int64_t)1 << 40, &v64) < 0) goto done;
            s.pl.batch_tokens = v64;
            break;
        case OPT_N_AS_PAD: s.pl.n_as_pad = 1; break;
        case OPT_NO_PROGRESS: s.progress = 0; break;
        default:
            ret = cli_getopt_error(cmd, c, argc, argv);
            goto done;
        }
    }
    s.so.regions = s.regions;
    s.so.n_regions = s.n_regions;
    char **in = argv + optind;
    int n_in = argc - optind;
    if (n_in == 0) {
        cli_usage_error(cmd, "no input; give FASTA/FASTQ/SAM/BAM/CRAM files ('-' for stdin)");
        goto done;
    }
    if (s.pl.window == 0 && s.pl.stride) {
        cli_usage_error(cmd, "-s/--stride needs a window length (-w)");
        goto done;
    }
    if (s.pl.stride > s.pl.window && s.pl.window) {
        cli_usage_error(cmd, "-s/--stride %lld is larger than the window %lld (bases would be skipped)",
                        (long long)s.pl.stride, (long long)s.pl.window);
        goto done;
    }
    if (pl_opts_check(&s.pl, NULL) < 0 || md_seqopts_check(&s.so) < 0) goto done; /* logged */
    if (s.half && (!strcmp(s.com.output, "-") || strlen(s.com.output) < 4 ||
                   strcmp(s.com.output + strlen(s.com.output) - 4, ".npy"))) {
        cli_usage_error(cmd, "--half needs a .npy output (-o FILE.npy)");
        goto done;
    }
    int n_stdin = 0;
    for (int i = 0; i < n_in; i++) {
        if (!strcmp(in[i], "-")) { n_stdin++; continue; }
        if (access(in[i], R_OK) != 0) {
            fprintf(stderr, "[E::%s] cannot open '%s': %s\n", cmd, in[i], strerror(errno));
            ret = CLI_EDATA;
            goto done;
        }
    }
    if (n_stdin > 1) {
        cli_usage_error(cmd, "standard input ('-') can be read only once");
        goto done;
    }

    /* model */
    char dir[PATH_MAX];
    if (cli_find_model(cmd, s.com.model, dir, sizeof dir, s.com.verbose) < 0) { ret = CLI_EDATA; goto done; }
    be = md_backend_open(s.com.device, s.com.precision, s.com.threads);
    if (!be) {
        fprintf(stderr, "[E::%s] cannot open device '%s': %s\n", cmd, s.com.device, md_last_error());
        ret = CLI_EINTERNAL;
        goto done;
    }
    if (s.com.verbose) fprintf(stderr, "[M::%s] device: %s, %d threads\n", cmd, be->name, be->n_threads);
    model = md_model_load(dir, be);
    if (!model) {
        fprintf(stderr, "[E::%s] cannot load the model in '%s': %s\n", cmd, dir, md_last_error());
        ret = CLI_EDATA;
        goto done;
    }
    const md_config_t *cfg = md_model_config(model);
    if (predict && !s.rc_set && !s.pl.raw && cfg->arch == MD_ARCH_MAMBA) s.pl.rc = PL_RC_NONE;
    if (pl_opts_check(&s.pl, cfg) < 0) goto done; /* logged; a usage error */
    if (!s.pl.batch_tokens) s.pl.batch_tokens = strcmp(be->name, "cpu") ? (int64_t)1 << 20 : 65536;
    /* on a GPU, reading and tokenizing the next batch overlaps the model; on the CPU the
     * cores are the model's */
    s.pl.overlap = strcmp(be->name, "cpu") != 0;
    if (s.com.verbose)
        fprintf(stderr, "[M::%s] model: %s (%s, d_model %d, %d layers), sha256 %s\n", cmd, dir,
                pl_variant(cfg), cfg->d_model, cfg->n_layer, md_model_sha256(model));

    /* output and pipeline */
    pl_meta_t meta;
    memset(&meta, 0, sizeof meta);
    meta.command = cmd;
    meta.cmdline = run ? run->cmdline : NULL;
    meta.model_path = dir;
    meta.model_sha256 = md_model_sha256(model);
    meta.variant = pl_variant(cfg);
    meta.device = be->name;
    meta.inputs = (const char *const *)in;
    meta.n_inputs = n_in;
    out = pl_out_open(s.com.output, &s.pl, cfg, md_model_width(model), s.half, &meta);
    if (!out) { ret = CLI_EDATA; goto done; }
    pl = pl_init(model, &s.pl, out);
    if (!pl) { ret = CLI_EINTERNAL; goto done; }
    cli_progress_t prog;
    cli_progress_init(&prog, cmd, total_bases(in, n_in, &s), s.progress);
    pl_set_progress(pl, on_progress, &prog);
    md_seqstats_t st;
    int r = pl_run_inputs(pl, (const char *const *)in, n_in, &s.so, &st);
    cli_progress_finish(&prog, s.com.verbose);
    if (r < 0) {
        ret = r == PL_EDATA ? CLI_EDATA : CLI_EINTERNAL;
        goto done;
    }
    int64_t rows = pl_out_rows(out);
    pl_out_t *o = out;
    out = NULL;
    if (pl_out_close(o) < 0) { ret = CLI_EDATA; goto done; }
    if (s.com.verbose)
        fprintf(stderr, "[M::%s] %lld records (%lld bases; skipped: %lld by flags, %lld short, %lld "
                        "without sequence) -> %lld rows in %s\n", cmd, (long long)st.n_emitted,
                (long long)st.n_bases, (long long)st.n_skip_flag, (long long)st.n_skip_short,
                (long long)st.n_skip_noseq, (long long)rows,
                strcmp(s.com.output, "-") ? s.com.output : "stdout");
    ret = 0;
done:
    pl_destroy(pl);
    if (out) pl_out_abort(out);
    md_model_free(model);
    if (be) be->destroy(be);
    free(s.regions);
    return ret;
}

int main_embed(int argc, char *argv[], const cli_run_t *run)
{
    return cli_seq_cmd(0, argc, argv, run);
}
