/* pipeline.h: the embed and predict pipelines shared by `mamba-dna embed`/`predict`, tests and
 * workflows. Records (seqio.h) are cut into windows (window.h), tokenized, packed into batches of
 * up to `batch_tokens` tokens, run through the model (model.h) and turned into output rows:
 *   embed:   one row per window (pool mean) or per base (pool none) of width D (strand-combined)
 *            or the model width (raw);
 *   predict: one row per base of P(A), P(C), P(G), P(T) (renormalised over the four bases), or
 *            of the padded-vocabulary logits (raw).
 * Rows come out in input order (record, window, position) whatever the batch size or thread
 * count. Each window is one "row block" with its coordinates; outputs (pl_out_t) are .npy + a
 * BED sidecar + a JSON provenance sidecar, or TSV text. Files are written under temporary names
 * and renamed on success.
 *
 * Return codes: 0 ok, -1 end (where stated), PL_EDATA (-2) input/data/output-file error,
 * PL_EINTERNAL (-3) model/device/memory error; all logged with the function name. */
#ifndef MD_PIPELINE_H
#define MD_PIPELINE_H

#include <stdint.h>

#include "config.h"
#include "model.h"
#include "seqio.h"
#include "tokenizer.h"

#define PL_EDATA     (-2)
#define PL_EINTERNAL (-3)

typedef enum { PL_EMBED = 0, PL_PREDICT = 1 } pl_task_t;
typedef enum { PL_POOL_MEAN = 0, PL_POOL_NONE = 1 } pl_pool_t;
typedef enum { PL_RC_NONE = 0, PL_RC_AVERAGE = 1 } pl_rc_t;

typedef struct {
    pl_task_t task;
    int64_t window;        /* W: 0 = the whole record in one pass (default 0) */
    int64_t stride;        /* S: 0 = W (default) */
    pl_pool_t pool;        /* embed: mean (default) or none (one row per base); predict: none */
    pl_rc_t rc;            /* average (default) or none, see pl_opts_check */
    int raw;               /* embed: forward-strand hidden state, full model width, no combining;
                              predict: forward-strand logits over the padded vocabulary */
    int layer;             /* embed: -1 (default) final normed hidden state, K: HF
                              output_hidden_states[K] (model.h) */
    int n_as_pad;          /* tokenize N as [PAD] (model-spec 4.2) instead of N */
    int64_t batch_tokens;  /* token budget of one packed forward call (0: 65536 on the CPU,
                              1<<20 on a GPU) */
    int overlap;           /* 1: each batch runs in a worker thread while the caller reads and
                              tokenizes the next one (for GPU backends; output order kept) */
} pl_opts_t;

void pl_opts_init(pl_opts_t *o, pl_task_t task);
/* Checks the options against the model's config (NULL: checks that need no model). Errors:
 * predict --pool none only; --layer out of range or with predict; --rc average with predict on
 * a causal (Mamba) model (the reverse pass predicts the previous base, not the next). 0 / -2. */
int pl_opts_check(const pl_opts_t *o, const md_config_t *cfg);
/* Columns of an output row for model cfg (width = md_model_width). */
int pl_ncols(const pl_opts_t *o, const md_config_t *cfg, int width);

/* ---- outputs ------------------------------------------------------------------------------ */

/* Provenance written to the JSON sidecar (npy) or as "##" header lines (text). Strings are
 * borrowed for the lifetime of the output. */
typedef struct {
    const char *command;       /* "embed" / "predict" */
    const char *cmdline;
    const char *model_path;
    const char *model_sha256;
    const char *variant;       /* "Caduceus-Ph", ... */
    const char *device;
    const char *const *inputs;
    int n_inputs;
} pl_meta_t;

typedef struct pl_out_s pl_out_t;

/* Opens an output: path ending in ".npy" -> NPY (float32, or float16 when half) + path.bed +
 * path.json; "-" -> TSV on stdout; anything else -> TSV file. For text, a '#' header line names
 * the columns (predict: "#chrom pos ref pA pC pG pT entropy"). NULL on error (logged). Finish
 * with pl_out_close, or pl_out_abort on error paths (removes every temporary file). */
pl_out_t *pl_out_open(const char *path, const pl_opts_t *o, const md_config_t *cfg, int width,
                      int half, const pl_meta_t *meta);
int pl_out_close(pl_out_t *out);     /* 0 / PL_EDATA; frees out */
void pl_out_abort(pl_out_t *out);
int64_t pl_out_rows(const pl_out_t *out);

/* ---- the pipeline ------------------------------------------------------------------------- */

typedef struct pl_s pl_t;
typedef void (*pl_progress_fn)(void *ud, int64_t bases_done);

/* A pipeline writing to `out` (both borrowed). NULL on error (options logged). */
pl_t *pl_init(md_model_t *m, const pl_opts_t *o, pl_out_t *out);
void pl_set_progress(pl_t *p, pl_progress_fn fn, void *ud);
/* Queues the windows of one record (copied); runs full batches. 0 / < -1. */
int pl_add(pl_t *p, const md_seq_t *rec);
/* Runs what is queued. 0 / < -1. */
int pl_flush(pl_t *p);
/* Record bases run through the model so far (overlaps of windows counted once), records. */
int64_t pl_bases_done(const pl_t *p);
int64_t pl_records(const pl_t *p);
void pl_destroy(pl_t *p);

/* Reads every input (seqio, with so's filters and regions) into p, then flushes. Sums the
 * reader statistics into *st (may be NULL). No record at all after the filters is an error
 * "no usable reads/records (N skipped: ...)" (PL_EDATA). */
int pl_run_inputs(pl_t *p, const char *const *paths, int n_paths, const md_seqopts_t *so,
                  md_seqstats_t *st);

/* ---- model description (mamba-dna info) ---------------------------------------------------- */

typedef struct {
    md_config_t cfg;
    char architecture[64];     /* config.json "architectures"[0], else derived */
    char model_type[32];       /* config.json "model_type", or "" */
    const char *variant;       /* "Caduceus-Ph", "Caduceus-PS", "Mamba" (static) */
    int64_t n_params;          /* unique parameters of the parameter table */
    int64_t n_params_file;     /* elements stored in model.safetensors */
    int n_tensors;             /* tensors in model.safetensors */
    char dtypes[64];           /* distinct dtypes in the file, comma separated ("F32") */
    int64_t file_bytes;        /* size of model.safetensors */
    char sha256[65];           /* hex, or "" when not computed */
} pl_model_info_t;

/* Describes the model folder dir (config.json and model.safetensors; the weights are not loaded
 * onto a backend). 0 / PL_EDATA (missing folder/config.json/model.safetensors named). */
int pl_model_describe(const char *dir, int want_sha256, pl_model_info_t *info);
/* Variant name of a config: "Caduceus-Ph", "Caduceus-PS" or "Mamba". */
const char *pl_variant(const md_config_t *cfg);

#endif
