/* score.h: zero-shot variant scores (`mamba-dna score`). Variants (VCF records, or every SNV of a
 * region) become model windows of the reference; windows of many variants are packed into one
 * md_model_forward call (up to batch_size windows), and the variants come out in input order:
 *   MAMBA_LLR      ln P(ALT) - ln P(REF) at the variant position, probabilities renormalised over
 *                  A/C/G/T (masked: the position is [MASK]; unmasked: the reference base is
 *                  shown); MNVs: sum over changed positions; causal Mamba models: the difference
 *                  of the sequence log-likelihoods of the alt and ref windows (SNVs and indels).
 *   MAMBA_EMBDIST  1 - cos(mean final hidden state of the ref window, of the alt window).
 *   MAMBA_PREF/PALT (with probs) the probabilities behind MAMBA_LLR: LLR = ln(PALT/PREF).
 * Window rules (see sc_window_place): W bases with the event start at index (W-1)/2, read on each
 * strand in that strand's own coordinates; clipped to the contig (variant off-centre) unless pad.
 * Return codes: 0 ok, -1 end, SC_EDATA (-2) input/data error, SC_EINTERNAL (-3) model/memory error;
 * all logged with the function name. */
#ifndef MD_SCORE_H
#define MD_SCORE_H

#include <stdint.h>

#include "model.h"
#include "regions.h"
#include "seqio.h"
#include "vcfio.h"

#define SC_EDATA     (-2)
#define SC_EINTERNAL (-3)

typedef enum { SC_MASKED = 0, SC_UNMASKED = 1 } sc_mode_t;
typedef enum { SC_RC_AVERAGE = 0, SC_RC_NONE = 1 } sc_rc_t;
typedef enum { SC_REFMM_ERROR = 0, SC_REFMM_SKIP = 1, SC_REFMM_FLAG = 2 } sc_refmm_t;

typedef struct {
    int64_t window;          /* W; 0 = sc_default_window(model config) */
    sc_mode_t mode;          /* masked (default) or unmasked; no effect on causal models */
    sc_rc_t rc;              /* average (default): forward and reverse-complement passes averaged */
    int pad;                 /* pad windows with N beyond contig ends instead of clipping */
    int probs;               /* also MAMBA_PREF / MAMBA_PALT */
    sc_refmm_t ref_mismatch; /* REF differing from the FASTA: error (default), skip, flag */
    int batch_size;          /* windows per forward call; 0 = 64 */
    const char *model_name;  /* for header lines (borrowed); NULL = "model" */
    const char *fasta_name;  /* reference path for messages (borrowed); NULL = "reference" */
} sc_opts_t;

/* Why an ALT has no value for a score. */
typedef enum {
    SC_R_MISSING = 0,    /* ALT '.' (or no ALT at all) */
    SC_R_STAR,           /* '*' (allele missing due to an overlapping deletion) */
    SC_R_SYMBOLIC,       /* <DEL>, <*>, <NON_REF>, ... */
    SC_R_BREAKEND,       /* A[chr:pos[, ]chr:pos]A, A., .A */
    SC_R_BAD_BASE,       /* allele with bases other than ACGTN (EMBDIST) or a changed position
                            that is not A/C/G/T (LLR) */
    SC_R_SAME,           /* ALT equals REF */
    SC_R_INDEL,          /* LLR of an indel with a masked-LM (Caduceus) model */
    SC_R_REF_MISMATCH,   /* REF differs from the FASTA (--ref-mismatch skip|flag) */
    SC_R_NREASONS
} sc_reason_t;

/* Short name of a reason ("symbolic allele"). */
const char *sc_reason_name(int r);

typedef struct {
    int64_t n_records;           /* records (or all-SNV positions) read */
    int64_t n_alts;              /* ALT alleles seen */
    int64_t llr_scored, emb_scored;
    int64_t llr_missing[SC_R_NREASONS], emb_missing[SC_R_NREASONS];
    int64_t n_ref_mismatch;      /* records with a REF mismatch (skip / flag) */
    int64_t n_no_alt;            /* records without any ALT (ALT '.') */
    int64_t n_pos_n;             /* all-snvs: positions skipped because the reference is not ACGT */
    int64_t n_windows, n_tokens; /* windows and tokens run through the model */
    int64_t n_forward;           /* forward calls */
    double t_forward;            /* seconds inside md_model_forward */
} sc_stats_t;

/* One ALT's values; NAN where not scored (reason in *_reason, else -1). */
typedef struct {
    float llr, embdist, pref, palt;
    int llr_reason, emb_reason;
} sc_value_t;

/* Default window for a model: its training length (config max_seq_len) clamped to [512, 4096];
 * 512 when the training length is unknown. */
int64_t sc_default_window(const md_config_t *cfg);

void sc_opts_init(sc_opts_t *o);
/* Checks option values (window >= 1 when set, batch size >= 0, enums). SC_EDATA (logged) or 0. */
int sc_opts_check(const sc_opts_t *o);

typedef struct sc_s sc_t;

/* A scorer on model m and reference fa (both borrowed, must outlive it). NULL on error (logged). */
sc_t *sc_init(md_model_t *m, md_fasta_t *fa, const sc_opts_t *o);
void sc_destroy(sc_t *s);
/* The options in use (window resolved). */
const sc_opts_t *sc_get_opts(const sc_t *s);
const sc_stats_t *sc_stats(const sc_t *s);
/* Called after each batch with the number of records/positions finished so far. */
void sc_set_progress(sc_t *s, void (*fn)(void *ud, int64_t done), void *ud);

/* Window placement (exported for tests and documentation). For an event starting at q (0-based,
 * in the coordinates of the strand being read) on a contig of length clen, with window W:
 * start = q - (W-1)/2; without pad it is clamped to [0, clen - W] (the variant is then
 * off-centre) and a contig shorter than W gives the whole contig; with pad the window always has
 * W bases and positions outside the contig are N. Returns the window length, writes the start. */
int64_t sc_window_place(int64_t clen, int64_t W, int pad, int64_t q, int64_t *start);

/* Scores one variant synchronously (flushes whatever is queued first): contig name, 1-based
 * position, REF and nalt ALT strings; out[nalt]. REF is checked against the FASTA as for VCF
 * records. 0, or SC_EDATA / SC_EINTERNAL. */
int sc_score_variant(sc_t *s, const char *contig, int64_t pos1, const char *ref,
                     const char *const *alts, int nalt, sc_value_t *out);

/* ---- outputs ------------------------------------------------------------------------------ */

/* The "##INFO=<...>" header lines of the scores this scorer writes (their descriptions carry the
 * model name and sha256, window, mode, strand handling). *lines is malloc'ed, each line too: free
 * with sc_header_lines_free. Returns the number of lines, or SC_EINTERNAL. */
int sc_header_lines(const sc_t *s, char ***lines);
void sc_header_lines_free(char **lines, int n);

/* A bgzipped, tabix-indexed table "#Chrom Pos Ref Alt MAMBA_LLR MAMBA_EMBDIST [MAMBA_PREF
 * MAMBA_PALT]" (CADD style; 1-based Pos; one row per ALT with at least one score), written under a
 * temporary name in the target's directory. cmdline (may be NULL) goes to a "##" line. */
typedef struct sc_tsv_s sc_tsv_t;
sc_tsv_t *sc_tsv_open(const char *path, const sc_t *s, const char *cmdline);
/* Closes the data file and builds its .tbi under the temporary names (an unsorted table is an
 * error). 0 / SC_EDATA. After it, sc_tsv_commit or sc_tsv_abort. */
int sc_tsv_finish(sc_tsv_t *t);
/* Renames the table and its index into place and frees t. 0 / SC_EDATA. */
int sc_tsv_commit(sc_tsv_t *t);
/* Removes the temporary files and frees t (NULL is fine). */
void sc_tsv_abort(sc_tsv_t *t);

/* Reads every record of in, scores it and writes it to out (may be NULL) with the scores in
 * INFO, and rows to tsv (may be NULL). Records come out unchanged and in input order. Errors:
 * a REF mismatch (unless skip/flag), a contig missing from the reference (with similar names),
 * read/write errors. 0 / SC_EDATA / SC_EINTERNAL. */
int sc_run_vcf(sc_t *s, md_vcf_reader_t *in, md_vcf_writer_t *out, sc_tsv_t *tsv);

/* Scores the three possible SNVs at every position of the regions (in reference order,
 * overlaps merged) into tsv; positions whose reference base is not A/C/G/T are skipped
 * (counted in n_pos_n). 0 / SC_EDATA / SC_EINTERNAL. */
int sc_run_all_snvs(sc_t *s, const md_regions_t *rs, sc_tsv_t *tsv);

#endif
