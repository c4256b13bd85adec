/* score.c: `mamba-dna score`: zero-shot variant scores for a VCF/BCF (or every SNV of a region)
 * against an indexed FASTA. Options -> checks -> reference, model -> VCF reader/writer and table
 * -> sc_run_vcf / sc_run_all_snvs (lib/score.c) -> outputs renamed into place -> summary. */
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
#include "regions.h"
#include "score.h"
#include "seqio.h"
#include "vcfio.h"

enum {
    OPT_WRITE_INDEX = CLI_OPT_FIRST_CMD, OPT_TSV, OPT_ALL_SNVS, OPT_MODE, OPT_RC, OPT_PAD, OPT_PROBS,
    OPT_REF_MISMATCH, OPT_BATCH, OPT_NO_PROGRESS
};

typedef struct {
    cli_common_t com;
    sc_opts_t sc;
    const char *fasta, *tsv, *regions_file;
    const char **regions;
    int n_regions;
    char otype;
    int write_index, all_snvs, progress, output_set;
} scorecmd_t;

static void usage(FILE *fp, const scorecmd_t *s)
{
    fprintf(fp,
        "Usage: mamba-dna score [options] -f ref.fa[.gz] in.vcf.gz|in.bcf|-\n"
        "       mamba-dna score [options] -f ref.fa[.gz] --all-snvs -r chr:beg-end --tsv out.tsv.gz\n\n"
        "Zero-shot variant effect scores. Every input record is written unchanged and in order, with\n"
        "INFO/MAMBA_LLR and INFO/MAMBA_EMBDIST (Number=A; '.' for ALTs that cannot be scored, counted\n"
        "by reason on stderr at the end):\n"
        "  MAMBA_LLR      ln P(ALT) - ln P(REF) at the variant, renormalised over A/C/G/T; MNVs: sum\n"
        "                 over changed positions; indels: '.' (causal Mamba models: ln P(alt window) -\n"
        "                 ln P(ref window), for SNVs and indels). Negative: ALT less likely.\n"
        "  MAMBA_EMBDIST  1 - cosine similarity of the mean final hidden states of the ref and alt\n"
        "                 windows (SNVs and indels; the alt window keeps the ref window's start).\n\n");
    fprintf(fp, "Input and output:\n");
    fprintf(fp, "  -f, --fasta-ref FILE  reference FASTA with a .fai (and .gzi when bgzipped) [required]\n");
    fprintf(fp, "  -o, --output FILE     output VCF/BCF, '-' for stdout [%s]\n", s->com.output);
    fprintf(fp, "  -O, --output-type v|z|b|u  VCF, bgzipped VCF, BCF, uncompressed BCF [from the file\n"
                "                        name as bcftools: .vcf.gz z, .bcf b, else v]\n");
    fprintf(fp, "      --write-index[=csi|tbi]  index the output on the fly (csi; tbi for -O z)\n");
    fprintf(fp, "  -r, --regions REG     chr, chr:beg-end (1-based); comma-separated or repeated; needs an\n"
                "                        indexed input. With --all-snvs: the regions to score\n");
    fprintf(fp, "  -R, --regions-file FILE  regions from a BED file (0-based) or 'chr pos [end]' lines\n");
    fprintf(fp, "      --tsv FILE        also write a bgzipped, tabix-indexed table '#Chrom Pos Ref Alt\n"
                "                        MAMBA_LLR MAMBA_EMBDIST' (one row per scored ALT; for\n"
                "                        bcftools annotate -a and VEP plugins)\n");
    fprintf(fp, "      --all-snvs        score the 3 possible SNVs at every position of -r/-R into --tsv\n"
                "                        (no VCF input; positions with N in the reference are skipped)\n");
    fprintf(fp, "Scoring:\n");
    if (s->sc.window)
        fprintf(fp, "  -w, --window INT      window length in bases [%lld]\n", (long long)s->sc.window);
    else
        fprintf(fp, "  -w, --window INT      window length in bases [the model's training length clamped\n"
                    "                        to 512..4096; 512 when unknown]\n");
    fprintf(fp, "      --mode STR        masked: the variant position is [MASK] in a window centred on\n"
                "                        it; unmasked: the reference base is shown (no extra window per\n"
                "                        variant) [%s]\n", s->sc.mode == SC_MASKED ? "masked" : "unmasked");
    fprintf(fp, "      --rc STR          average: mean of the forward window and the reverse-complement\n"
                "                        window (complemented alleles); none: forward only [%s]\n",
            s->sc.rc == SC_RC_AVERAGE ? "average" : "none");
    fprintf(fp, "      --pad             pad windows with N beyond contig ends (default: clip the window\n"
                "                        to the contig; the variant is then off-centre)\n");
    fprintf(fp, "      --probs           also INFO/MAMBA_PREF and INFO/MAMBA_PALT (LLR = ln(PALT/PREF))\n");
    fprintf(fp, "      --ref-mismatch STR  REF differing from the FASTA: error (stop), skip (write the\n"
                "                        record unscored) or flag (also INFO/MAMBA_REF_MISMATCH) [%s]\n",
            s->sc.ref_mismatch == SC_REFMM_ERROR ? "error" : s->sc.ref_mismatch == SC_REFMM_SKIP ? "skip" : "flag");
    if (s->sc.batch_size)
        fprintf(fp, "      --batch-size INT  model windows per forward call [%d]\n", s->sc.batch_size);
    else
        fprintf(fp, "      --batch-size INT  model windows per forward call [64 on the CPU, 1024 on a GPU]\n");
    fprintf(fp, "      --no-progress     no progress lines on stderr\n");
    cli_common_usage(fp, &s->com, 0);
    fprintf(fp, "\nExit codes: 0 ok, 1 usage error, 2 input/data error (REF mismatch, contig missing\n"
                "from the reference, unreadable input), 3 internal/device error.\n");
}

static void on_progress(void *ud, int64_t done) { cli_progress_update(ud, done); }

static int path_is(const char *a, const char *b)
{
    return a && b && strcmp(a, "-") && !strcmp(a, b);
}

/* An htslib faidx handle on the FASTA (for ##contig lines); never writes an index. */
static faidx_t *load_fai(const char *fa)
{
    kstring_t fai = {0, 0, NULL}, gzi = {0, 0, NULL};
    ksprintf(&fai, "%s.fai", fa);
    ksprintf(&gzi, "%s.gzi", fa);
    faidx_t *f = fai_load3(fa, fai.s, access(gzi.s, R_OK) == 0 ? gzi.s : NULL, 0);
    if (!f) md_error("%s: cannot load the FASTA index %s", fa, fai.s);
    free(fai.s);
    free(gzi.s);
    return f;
}

static void summary(const sc_t *sc, const scorecmd_t *s, double t0)
{
    const sc_stats_t *st = sc_stats(sc);
    double dt = md_realtime() - t0;
    fprintf(stderr, "[M::score] %lld %s, %lld ALT alleles: MAMBA_LLR %lld scored, MAMBA_EMBDIST %lld scored\n",
            (long long)st->n_records, s->all_snvs ? "positions" : "records", (long long)st->n_alts,
            (long long)st->llr_scored, (long long)st->emb_scored);
    for (int k = 0; k < 2; k++) {
        const int64_t *m = k ? st->emb_missing : st->llr_missing;
        int64_t tot = 0;
        for (int r = 0; r < SC_R_NREASONS; r++) tot += m[r];
        if (!tot) continue;
        fprintf(stderr, "[M::score] %s not scored ('.'): %lld:", k ? "MAMBA_EMBDIST" : "MAMBA_LLR", (long long)tot);
        const char *sep = " ";
        for (int r = 0; r < SC_R_NREASONS; r++)
            if (m[r]) { fprintf(stderr, "%s%lld %s", sep, (long long)m[r], sc_reason_name(r)); sep = ", "; }
        fputc('\n', stderr);
    }
    if (st->n_no_alt) fprintf(stderr, "[M::score] %lld records without ALT allele\n", (long long)st->n_no_alt);
    if (st->n_ref_mismatch)
        fprintf(stderr, "[M::score] %lld records with a REF mismatch were %s\n", (long long)st->n_ref_mismatch,
                s->sc.ref_mismatch == SC_REFMM_FLAG ? "flagged (INFO/MAMBA_REF_MISMATCH) and not scored" : "not scored");
    if (st->n_pos_n) fprintf(stderr, "[M::score] %lld positions skipped (reference base not A/C/G/T)\n", (long long)st->n_pos_n);
    fprintf(stderr, "[M::score] %lld windows (%lld bases) in %lld forward calls; %.1f s (model %.1f s): %.1f %s/s, "
                    "%.0f bases/s through the model\n",
            (long long)st->n_windows, (long long)st->n_tokens, (long long)st->n_forward, dt, st->t_forward,
            dt > 0 ? st->n_records / dt : 0.0, s->all_snvs ? "positions" : "records",
            st->t_forward > 0 ? st->n_tokens / st->t_forward : 0.0);
}

int main_score(int argc, char *argv[], const cli_run_t *run)
{
    const char *cmd = "score";
    static const struct option lopts[] = {
        CLI_COMMON_LONG,
        { "fasta-ref", required_argument, 0, 'f' },
        { "output-type", required_argument, 0, 'O' },
        { "write-index", optional_argument, 0, OPT_WRITE_INDEX },
        { "regions", required_argument, 0, 'r' },
        { "regions-file", required_argument, 0, 'R' },
        { "tsv", required_argument, 0, OPT_TSV },
        { "all-snvs", no_argument, 0, OPT_ALL_SNVS },
        { "window", required_argument, 0, 'w' },
        { "mode", required_argument, 0, OPT_MODE },
        { "rc", required_argument, 0, OPT_RC },
        { "pad", no_argument, 0, OPT_PAD },
        { "probs", no_argument, 0, OPT_PROBS },
        { "ref-mismatch", required_argument, 0, OPT_REF_MISMATCH },
        { "batch-size", required_argument, 0, OPT_BATCH },
        { "no-progress", no_argument, 0, OPT_NO_PROGRESS },
        { 0, 0, 0, 0 },
    };
    scorecmd_t s;
    memset(&s, 0, sizeof s);
    cli_common_init(&s.com);
    sc_opts_init(&s.sc);
    s.progress = 1;
    int ret = CLI_EUSAGE, c;
    long v;
    int64_t v64;
    md_fasta_t *fa = NULL;
    faidx_t *fai = NULL;
    md_backend_t *be = NULL;
    md_model_t *model = NULL;
    sc_t *sc = NULL;
    md_vcf_reader_t *in = NULL;
    md_vcf_writer_t *out = NULL;
    sc_tsv_t *tsv = NULL;
    char **hlines = NULL;
    int nh = 0;
    kstring_t regs = {0, 0, NULL};
    md_regions_t rs;
    md_regions_init(&rs);
    double t0 = md_realtime();

    s.regions = calloc(argc + 1, sizeof(char *));
    if (!s.regions) return CLI_EINTERNAL;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":" CLI_COMMON_SHORT "f:O:r:R:w:", lopts, NULL)) >= 0) {
        int r = cli_common_opt(&s.com, cmd, c, optarg);
        if (r < 0) goto done;
        if (r > 0) { if (c == 'o') s.output_set = 1; continue; }
        switch (c) {
        case 'h':
            usage(stdout, &s);
            ret = 0;
            goto done;
        case 'f': s.fasta = optarg; break;
        case 'O':
            if (strlen(optarg) != 1 || !strchr("vzbu", optarg[0])) {
                cli_usage_error(cmd, "-O/--output-type: '%s' is not one of v, z, b, u", optarg);
                goto done;
            }
            s.otype = optarg[0];
            break;
        case OPT_WRITE_INDEX:
            if (!optarg || !strcmp(optarg, "csi")) s.write_index = MD_VCF_IDX_CSI;
            else if (!strcmp(optarg, "tbi")) s.write_index = MD_VCF_IDX_TBI;
            else { cli_usage_error(cmd, "--write-index: '%s' is not one of csi, tbi", optarg); goto done; }
            break;
        case 'r': s.regions[s.n_regions++] = optarg; break;
        case 'R': s.regions_file = optarg; break;
        case OPT_TSV:
            if (cli_check_output(cmd, "--tsv", optarg) < 0) goto done;
            s.tsv = optarg;
            break;
        case OPT_ALL_SNVS: s.all_snvs = 1; break;
        case 'w':
            if (cli_parse_size(cmd, "-w/--window", optarg, 1, (int64_t)1 << 24, &v64) < 0) goto done;
            s.sc.window = v64;
            break;
        case OPT_MODE:
            if (!strcmp(optarg, "masked")) s.sc.mode = SC_MASKED;
            else if (!strcmp(optarg, "unmasked")) s.sc.mode = SC_UNMASKED;
            else { cli_usage_error(cmd, "--mode: '%s' is not one of masked, unmasked", optarg); goto done; }
            break;
        case OPT_RC:
            if (!strcmp(optarg, "average")) s.sc.rc = SC_RC_AVERAGE;
            else if (!strcmp(optarg, "none")) s.sc.rc = SC_RC_NONE;
            else { cli_usage_error(cmd, "--rc: '%s' is not one of average, none", optarg); goto done; }
            break;
        case OPT_PAD: s.sc.pad = 1; break;
        case OPT_PROBS: s.sc.probs = 1; break;
        case OPT_REF_MISMATCH:
            if (!strcmp(optarg, "error")) s.sc.ref_mismatch = SC_REFMM_ERROR;
            else if (!strcmp(optarg, "skip")) s.sc.ref_mismatch = SC_REFMM_SKIP;
            else if (!strcmp(optarg, "flag")) s.sc.ref_mismatch = SC_REFMM_FLAG;
            else { cli_usage_error(cmd, "--ref-mismatch: '%s' is not one of error, skip, flag", optarg); goto done; }
            break;
        case OPT_BATCH:
            if (cli_parse_long(cmd, "--batch-size", optarg, 1, 1 << 20, &v) < 0) goto done;
            s.sc.batch_size = (int)v;
            break;
        case OPT_NO_PROGRESS: s.progress = 0; break;
        default:
            ret = cli_getopt_error(cmd, c, argc, argv);
            goto done;
        }
    }
    char **pos = argv + optind;
    int npos = argc - optind;

    /* checks before anything is opened */
    if (!s.fasta) { cli_usage_error(cmd, "no reference: give -f ref.fa[.gz]"); goto done; }
    if (s.all_snvs) {
        if (npos) { cli_usage_error(cmd, "--all-snvs takes no VCF input (it scores every position of -r/-R)"); goto done; }
        if (!s.tsv) { cli_usage_error(cmd, "--all-snvs writes a table: give --tsv FILE.tsv.gz"); goto done; }
        if (!s.n_regions && !s.regions_file) { cli_usage_error(cmd, "--all-snvs needs regions (-r chr:beg-end or -R FILE)"); goto done; }
        if (s.output_set || s.otype || s.write_index) {
            cli_usage_error(cmd, "--all-snvs writes only the --tsv table (no -o, -O or --write-index)");
            goto done;
        }
    } else {
        if (npos == 0) { cli_usage_error(cmd, "no input VCF/BCF (use '-' for stdin)"); goto done; }
        if (npos > 1) { cli_usage_error(cmd, "one VCF/BCF input expected, got %d", npos); goto done; }
        if (s.write_index && !strcmp(s.com.output, "-")) {
            cli_usage_error(cmd, "--write-index needs an output file (-o), not stdout");
            goto done;
        }
        char ot = s.otype ? s.otype : md_vcf_otype_from_path(s.com.output);
        if (s.write_index == MD_VCF_IDX_CSI && ot == 'v') {
            cli_usage_error(cmd, "--write-index needs compressed output (-O z, b or u, or a .vcf.gz/.bcf name)");
            goto done;
        }
        if (s.write_index == MD_VCF_IDX_TBI && ot != 'z') {
            cli_usage_error(cmd, "--write-index=tbi needs bgzipped VCF output (-O z)");
            goto done;
        }
        if (path_is(pos[0], s.com.output) || path_is(pos[0], s.tsv)) {
            cli_usage_error(cmd, "the output would overwrite the input '%s'", pos[0]);
            goto done;
        }
        if (strcmp(pos[0], "-") && access(pos[0], R_OK) != 0) {
            fprintf(stderr, "[E::%s] cannot open '%s': %s\n", cmd, pos[0], strerror(errno));
            ret = CLI_EDATA;
            goto done;
        }
    }
    if (path_is(s.tsv, s.com.output)) { cli_usage_error(cmd, "--tsv and -o name the same file"); goto done; }
    if (sc_opts_check(&s.sc) < 0) goto done;

    /* reference */
    ret = CLI_EDATA;
    if (!(fa = md_fasta_open(s.fasta, NULL))) goto done;
    if (!(fai = load_fai(s.fasta))) goto done;
    s.sc.fasta_name = s.fasta;

    /* model */
    char dir[PATH_MAX];
    if (cli_find_model(cmd, s.com.model, dir, sizeof dir, s.com.verbose) < 0) goto done;
    be = md_backend_open(s.com.device, s.com.precision, s.com.threads);
    if (!be) {
        fprintf(stderr, "[E::%s] cannot open device '%s': %s\n", cmd, s.com.device, md_last_error());
        ret = CLI_EINTERNAL;
        goto done;
    }
    model = md_model_load(dir, be);
    if (!model) {
        fprintf(stderr, "[E::%s] cannot load the model in '%s': %s\n", cmd, dir, md_last_error());
        goto done;
    }
    if (!s.sc.batch_size) s.sc.batch_size = strcmp(be->name, "cpu") ? 1024 : 64;
    s.sc.model_name = dir;
    ret = CLI_EINTERNAL;
    if (!(sc = sc_init(model, fa, &s.sc))) goto done;
    md_info("model %s (sha256 %s) on %s, %d threads; window %lld, batch %d windows", dir, md_model_sha256(model),
            be->name, be->n_threads, (long long)sc_get_opts(sc)->window, sc_get_opts(sc)->batch_size);
    cli_progress_t prog;

    if (s.all_snvs) {
        ret = CLI_EDATA;
        const md_contigs_t *ctg = md_fasta_contigs(fa);
        for (int i = 0; i < s.n_regions; i++)
            if (md_regions_add_string(&rs, ctg, s.regions[i], "-r/--regions") < 0) goto done;
        if (s.regions_file && md_bed_read(s.regions_file, ctg, &rs) < 0) goto done;
        int64_t total = 0;
        for (int i = 0; i < rs.n; i++) total += rs.a[i].end - rs.a[i].beg;
        if (!(tsv = sc_tsv_open(s.tsv, sc, run ? run->cmdline : NULL))) goto done;
        cli_progress_init(&prog, "score", total, s.progress);
        sc_set_progress(sc, on_progress, &prog);
        int r = sc_run_all_snvs(sc, &rs, tsv);
        cli_progress_finish(&prog, s.com.verbose);
        if (r < 0) { ret = r == SC_EDATA ? CLI_EDATA : CLI_EINTERNAL; goto done; }
        if (sc_tsv_finish(tsv) < 0) goto done; /* aborted (temporary files removed) at done */
        sc_tsv_t *t = tsv;
        tsv = NULL;
        if (sc_tsv_commit(t) < 0) goto done;    /* commit aborts by itself on failure */
    } else {
        ret = CLI_EDATA;
        md_vcf_ropts_t ro;
        md_vcf_ropts_init(&ro);
        for (int i = 0; i < s.n_regions; i++) {
            if (i) kputc(',', &regs);
            kputs(s.regions[i], &regs);
        }
        ro.regions = regs.s;
        ro.regions_file = s.regions_file;
        ro.fai = fai;
        if (!(in = md_vcf_open(pos[0], &ro))) goto done;
        if ((nh = sc_header_lines(sc, &hlines)) < 0) { nh = 0; ret = CLI_EINTERNAL; goto done; }
        char **tmp = realloc(hlines, (nh + 2) * sizeof *tmp);
        if (!tmp) { ret = CLI_EINTERNAL; goto done; }
        hlines = tmp;
        if (!(hlines[nh] = md_vcf_version_line())) { ret = CLI_EINTERNAL; goto done; }
        nh++;
        if (!(hlines[nh] = md_vcf_command_line(argc, argv))) { ret = CLI_EINTERNAL; goto done; }
        nh++;
        out = md_vcf_writer_open(s.com.output, s.otype, md_vcf_header(in), (const char *const *)hlines, nh, fai,
                                 s.write_index);
        if (!out) goto done;
        if (s.tsv && !(tsv = sc_tsv_open(s.tsv, sc, run ? run->cmdline : NULL))) goto done;
        cli_progress_init(&prog, "score", -1, s.progress);
        sc_set_progress(sc, on_progress, &prog);
        int r = sc_run_vcf(sc, in, out, tsv);
        cli_progress_finish(&prog, s.com.verbose);
        if (r < 0) { ret = r == SC_EDATA ? CLI_EDATA : CLI_EINTERNAL; goto done; }
        /* all or nothing: the table is finished first, then the VCF is renamed, then the table */
        if (tsv && sc_tsv_finish(tsv) < 0) goto done;
        md_vcf_writer_t *o = out;
        out = NULL;
        if (md_vcf_writer_close(o) < 0) goto done;
        if (tsv) {
            sc_tsv_t *t = tsv;
            tsv = NULL;
            if (sc_tsv_commit(t) < 0) goto done;
        }
        if (md_vcf_close(in) < 0) { in = NULL; goto done; }
        in = NULL;
    }
    summary(sc, &s, t0);
    ret = 0;
done:
    if (out) md_vcf_writer_abort(out);
    sc_tsv_abort(tsv);
    if (in) md_vcf_close(in);
    sc_header_lines_free(hlines, nh);
    sc_destroy(sc);
    md_model_free(model);
    if (be) be->destroy(be);
    if (fai) fai_destroy(fai);
    md_fasta_close(fa);
    md_regions_destroy(&rs);
    free(regs.s);
    free(s.regions);
    return ret;
}
