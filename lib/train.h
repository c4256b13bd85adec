/* train.h: training. Four parts:
 *  - the training plan (train.c): forward over a packed batch that keeps only each layer's
 *    residual sum, backward that recomputes each layer from it (layer-level recomputation), over
 *    the same streams, directions and PS reversed-weight tricks as model.c; the gradients of the
 *    derived weights (reversed in/out_proj copies, the Ecat table, [w | flip w] norms, A) are
 *    folded back onto the parameter table. Everything runs on a backend (backend.h) and its
 *    backward table (train_ops.h); master weights, gradients and AdamW moments live there as
 *    F32 slabs in parameter-table order.
 *  - the optimizer and schedule (optim.c): AdamW with the no-decay groups of model-spec 4.6,
 *    global-norm clipping, linear warmup from 1e-6 then cosine to lr_min.
 *  - masking recipes (mlm.c): Caduceus masked LM (model-spec 4.3) and next-token targets, with
 *    a counter-based RNG so any sequence of any step can be rebuilt (resume).
 *  - the trainer (trainer.c): data sampling, validation, checkpoints, resume, logs. */
#ifndef MD_TRAIN_H
#define MD_TRAIN_H

#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "dist.h"
#include "params.h"
#include "tokenizer.h"
#include "train_ops.h"

#define MD_IGNORE (-100)   /* target id of positions without loss */

/* ---- the training plan (train.c) ------------------------------------------------------------ */

typedef struct md_train_s md_train_t;

typedef struct {
    int scan_chunk;       /* positions per saved scan state; 0 = the ops' default */
    int recompute_scan;   /* 1: keep only each layer's residual sum and run the forward scan
                             again in the backward (least memory); 0 (default): also keep the
                             scan's chunk-start states of every layer (n/T * Di * N floats per
                             direction and stream), so the backward runs one scan pass, not
                             two (the scan backward recomputes y for the out_proj gradient) */
} md_train_opts_t;

/* A plan for the weights w (copied to the backend; w stays the caller's) on backend be (not
 * owned). Fails for backends without backward ops. NULL on error (logged). */
md_train_t *md_train_create(const md_weights_t *w, md_backend_t *be, const md_train_opts_t *o);
void md_train_free(md_train_t *t);
const md_config_t *md_train_config(const md_train_t *t);
md_backend_t *md_train_backend(const md_train_t *t);
const md_train_ops_t *md_train_ops(const md_train_t *t);
/* The parameter table (keys, shapes, no_decay flags; its data is not kept in sync: use
 * md_train_get_params). */
const md_weights_t *md_train_table(const md_train_t *t);

/* A packed batch: nseq sequences back to back, sequence i at [seq_off[i], seq_off[i+1]). */
typedef struct {
    const int32_t *ids;      /* [n] input token ids */
    const int32_t *targets;  /* [n] target ids; MD_IGNORE where there is no loss */
    const float *weights;    /* [n] loss weights, or NULL (all 1) */
    int64_t n;
    const int64_t *seq_off;  /* [nseq + 1]; NULL with nseq 0: one sequence */
    int nseq;
} md_batch_t;

/* Loss statistics, accumulated: [0] sum w*CE, [1] sum w, [2] sum w*[argmax == target],
 * [3] rows with a target. Mean loss = [0]/[1]; accuracy = [2]/[1]. */
#define MD_NSTATS 4

/* Forward and backward of one (micro-)batch: gradients of scale * sum_i w_i CE_i are added to
 * the gradient slab; stats += this batch's. 0 / < -1. */
int md_train_forward_backward(md_train_t *t, const md_batch_t *b, float scale, double *stats);
/* Forward only: stats +=; logits (host F32 [n, vocab_size]) when not NULL. 0 / < -1. */
int md_train_forward(md_train_t *t, const md_batch_t *b, double *stats, float *logits);
int md_train_zero_grad(md_train_t *t);

/* Host copies in parameter-table order ([numel] floats). */
int md_train_get_grads(md_train_t *t, float *g);
int md_train_get_params(md_train_t *t, md_weights_t *w);           /* into w's slab */
int md_train_set_params(md_train_t *t, const md_weights_t *w);     /* and refresh */
int md_train_get_moments(md_train_t *t, float *m, float *v);
int md_train_set_moments(md_train_t *t, const float *m, const float *v);

/* Backend slabs (parameter-table order) for the optimizer: params, grads, first and second
 * moments. */
void md_train_slabs(md_train_t *t, float **p, float **g, float **m, float **v);
/* Rebuilds the derived weights after the parameters changed. 0 / < -1. */
int md_train_refresh(md_train_t *t);

/* ---- optimizer and schedule (optim.c) ------------------------------------------------------- */

typedef struct {
    double lr;            /* peak learning rate (8e-3) */
    double lr_min;        /* final learning rate (1e-4) */
    double warmup_init;   /* learning rate at step 0 (1e-6) */
    int64_t warmup;       /* warmup updates */
    int64_t total;        /* updates in the whole run */
    double beta1, beta2, eps, weight_decay;   /* 0.9, 0.95, 1e-8, 0.1 */
    double clip;          /* global gradient-norm clip (1.0); <= 0: none */
} md_optim_t;

/* model-spec 4.6 defaults; warmup and total 0. */
void md_optim_init(md_optim_t *o);
/* Learning rate of update number `step` (0-based): linear from warmup_init to lr over
 * [0, warmup), then cosine from lr to lr_min over [warmup, total). */
double md_lr_at(const md_optim_t *o, int64_t step);
/* One optimizer update (number step, 0-based) from the accumulated gradients: global norm
 * (before clipping) into *gnorm, clipping, AdamW (no weight decay for the parameters marked
 * no_decay), derived weights refreshed. A non-finite gradient norm leaves the parameters
 * unchanged and returns -1. 0 / -1 / < -1. */
int md_train_update(md_train_t *t, const md_optim_t *o, int64_t step, double *gnorm);

/* ---- masking and targets (mlm.c) ------------------------------------------------------------ */

typedef struct {
    int causal;           /* 1: next-token targets (Mamba); 0: masked LM (Caduceus) */
    double select;        /* masked LM: probability a position is selected (0.15) */
    double to_mask;       /* of the selected: [MASK] (0.8) */
    double to_random;     /* of the rest: a random token (0.5, i.e. 10% overall) */
    float soft_weight;    /* training loss weight of soft-masked (lower-case) bases; 1 = off.
                             When != 1, validation gives them weight 0 (PlantCaduceus) */
} md_mlm_t;

void md_mlm_init(md_mlm_t *m);

/* Counter-based random numbers: a hash of (seed, a, b); the same inputs give the same number
 * on every run and every thread. */
uint64_t md_rng_u64(uint64_t seed, uint64_t a, uint64_t b);
double md_rng_uniform(uint64_t seed, uint64_t a, uint64_t b);   /* [0, 1) */

/* Inputs, targets and weights of one sequence of n base codes (tokenizer.h codes, soft-mask
 * bit honoured), for the vocabulary v. N becomes [PAD] in the input and never has a target
 * (model-spec 4.2). Masked LM: each position is selected with probability `select` (drawn from
 * (seed, seq_id, position)); selected: [MASK] / a random token of the vocabulary's table / kept;
 * target = the original token at selected positions. Causal: ids = tokens, target[t] =
 * token[t+1] (none at the end). eval: validation weights (see soft_weight). 0 / < -1. */
int md_mlm_make(const md_mlm_t *m, const md_vocab_t *v, uint64_t seed, uint64_t seq_id,
                const uint8_t *codes, int64_t n, int eval, int32_t *ids, int32_t *targets,
                float *weights);

/* ---- the trainer (trainer.c) ---------------------------------------------------------------- */

typedef enum { MD_VARIANT_PH = 0, MD_VARIANT_PS = 1, MD_VARIANT_MAMBA = 2 } md_variant_t;

typedef struct {
    /* data */
    const char *const *inputs;   /* FASTA/FASTQ/SAM/BAM/CRAM files */
    int n_inputs;
    const char *train_bed;       /* training regions (indexed FASTA); NULL: whole inputs */
    const char *val_bed;         /* held-out regions (BED); excluded from training */
    const char *const *holdout;  /* held-out region strings ("chr:beg-end") */
    int n_holdout;
    int64_t val_windows;         /* at most this many validation windows (64) */
    double max_n_frac;           /* resample training windows with more N than this (0.5) */
    /* model */
    const char *init_from;       /* model folder to start from, or NULL: a new model */
    md_variant_t variant;
    int d_model, n_layer, d_state, expand;
    /* run */
    const char *outdir;
    int64_t seq_len;             /* bases per sequence (1024) */
    int batch;                   /* sequences per micro-batch (8) */
    int grad_accum;              /* micro-batches per update (1) */
    int64_t steps;               /* optimizer updates (1000) */
    double warmup;               /* < 1: fraction of steps; >= 1: updates (0.1) */
    md_optim_t optim;            /* lr, lr_min, betas, eps, weight decay, clip */
    md_mlm_t mlm;
    uint64_t seed;               /* 2222 */
    int rc_aug;                  /* -1: on for Ph, off otherwise; 0/1 force */
    int64_t val_every, save_every;   /* 0: only at the end */
    int resume;
    int64_t stop_after;          /* stop (checkpointed) after this update; 0: run to steps */
    /* compute */
    const char *device, *precision;
    int threads;
    int scan_chunk;              /* 0: the ops' default */
    int recompute_scan;          /* md_train_opts_t.recompute_scan */
    int64_t inject_nan_at;       /* test hook: report a NaN loss at this update (0: never) */
    /* data parallelism (dist.h): every rank runs md_trainer_run with the same options; rank r
     * computes its share of each update's sequences (md_dist_seq_index), the gradients are
     * summed over the ranks before the optimizer step, and only rank 0 writes files, validates
     * and reports progress */
    md_dist_t *dist;             /* a group made by the caller (not owned), or NULL */
    const unsigned char *nccl_id;   /* or: join the NCCL group of this id (MD_NCCL_ID_BYTES) */
    int rank, nranks;            /* with nccl_id: this rank of nranks (0 of 1 by default) */
} md_trainer_opts_t;

void md_trainer_opts_init(md_trainer_opts_t *o);
/* Checks ranges and combinations (before any file is opened). 0 / < -1 (logged). */
int md_trainer_opts_check(const md_trainer_opts_t *o);

typedef struct {
    int64_t step, steps;         /* updates done, total */
    int64_t tokens;              /* input positions seen */
    double lr, loss, acc, gnorm; /* of the last update */
    double tok_per_s, eta_s;     /* over this process's updates */
    int val;                     /* 1 when val_loss/val_acc were just computed */
    double val_loss, val_acc;
    int checkpoint;              /* 1 when a checkpoint was just written */
} md_trainer_progress_t;

typedef void (*md_trainer_progress_fn)(void *ud, const md_trainer_progress_t *p);

/* Runs (or resumes) training into o->outdir (created only after the options, inputs and
 * model were found good): config.json, model.safetensors, train_state.bin
 * (parameters, AdamW moments, step; what --resume reads), train_args.json (the options a
 * resume must repeat) and train.tsv (step, tokens, lr, train_loss, train_acc, val_loss,
 * val_acc, grad_norm, elapsed_s). Every file is written atomically. progress is called after
 * every update (may be NULL). 0 on success; -3 when the loss or gradient became NaN/inf
 * (logged; the last checkpoint is kept); -4 when the data-parallel group failed (NCCL init or
 * an all-reduce; another rank's failure); < -1 on other errors (logged). */
int md_trainer_run(const md_trainer_opts_t *o, md_trainer_progress_fn progress, void *ud);

#endif
