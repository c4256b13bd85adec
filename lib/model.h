/* model.h: the model plan. One description (config + parameter table, params.h) and one
 * forward pass written against the op table (backend.h), for Caduceus Ph, Caduceus PS and
 * causal Mamba. The plan works on a packed batch of sequences and walks each layer over
 * position chunks (be->chunk), carrying conv and scan states between chunks, so memory is
 * O(n * width) for the residual stream plus O(chunk) temporaries. */
#ifndef MD_MODEL_H
#define MD_MODEL_H

#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "params.h"

typedef struct md_model md_model_t;

/* Loads `dir`/config.json and `dir`/model.safetensors onto backend `be` (which the model does
 * not own). NULL on error, with the file and key named. Free with md_model_free(). */
md_model_t *md_model_load(const char *dir, md_backend_t *be);
/* A model built from host weights (takes ownership of `w`). */
md_model_t *md_model_from_weights(md_weights_t *w, md_backend_t *be);
void md_model_free(md_model_t *m);

const md_config_t *md_model_config(const md_model_t *m);
const md_weights_t *md_model_weights(const md_model_t *m);
/* Width of the hidden state: d_model (Ph, Mamba) or 2*d_model (PS). */
int md_model_width(const md_model_t *m);
/* Hex sha256 of model.safetensors (empty for models built in memory). */
const char *md_model_sha256(const md_model_t *m);

/* Output callback: rows [row0, row0+nrows) of the packed batch. `hidden` is [nrows, width]
 * (final normed hidden state, or the requested layer's), `logits` is [nrows, vocab_size]
 * (padded vocabulary) or NULL when not asked for. Return < 0 to abort the forward pass. */
typedef int (*md_emit_fn)(void *ud, int64_t row0, int64_t nrows, const float *hidden,
                          const float *logits);

/* Pooled output callback: mean[nseg, width] (F32 host memory, valid during the call), row i
 * the mean hidden state (the same hidden state emit() would get) over the rows of segment i.
 * Called once, after the last emit(). Return < 0 to fail the forward pass. */
typedef int (*md_emit_pool_fn)(void *ud, int nseg, const float *mean);

typedef enum {
    MD_ROWS_ALL = 0,   /* emit() gets every row, in order (the default) */
    MD_ROWS_NONE,      /* no per-row output (emit is not called; pooling only) */
    MD_ROWS_SELECTED   /* only rows sel[0..nsel): emit() once per run of consecutive selected
                          rows within a position chunk, in row order; the rows are gathered on
                          the backend and only they are downloaded. Their values are bitwise
                          those of MD_ROWS_ALL (the head GEMM still runs on the whole chunk) */
} md_rows_t;

typedef struct {
    int layer;         /* -1: final normed hidden state (HF last_hidden_state); K in
                          0..n_layer-1: HF output_hidden_states[K] (0 = embedding, K = the
                          mixer output of block K-1) */
    int want_logits;   /* also compute logits (only with layer == -1) */
    md_rows_t rows;    /* which rows go to emit() */
    int64_t nsel;      /* MD_ROWS_SELECTED: sel[nsel] host array of rows, strictly increasing, */
    const int64_t *sel;/*   in [0, n) (borrowed for the call)                                   */
    /* Mean pooling on the backend (npool > 0): segment i = rows [pool_beg[i], pool_end[i])
     * (host arrays, borrowed), non-empty, inside [0, n), with pool_beg and pool_end each
     * non-decreasing (segments may overlap but not nest); they may cross sequences and the
     * plan's position chunks. Sums are accumulated in fp32 on the backend chunk by chunk and the
     * means go to emit_pool(). Independent of `rows`. */
    int npool;
    const int64_t *pool_beg, *pool_end;
    md_emit_pool_fn emit_pool;
} md_forward_opts_t;

/* Forward pass over a packed batch: `ids` [n] holds nseq sequences back to back, sequence i
 * starting at seq_off[i] (seq_off[0] = 0, seq_off[nseq] = n). emit() is called with rows in
 * order (opts->rows says which), then emit_pool() with the segment means (opts->npool > 0).
 * NULL opts: all rows, final hidden state, no logits. Per-row outputs are downloaded into host
 * memory from be->host_alloc (pinned on the GPU). 0 on success, < 0 on error. */
int md_model_forward(md_model_t *m, const int32_t *ids, int64_t n, const int64_t *seq_off,
                     int nseq, const md_forward_opts_t *opts, md_emit_fn emit, void *ud);

#endif
