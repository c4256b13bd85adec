/* train_ops.h: the backward op table. The training plan (train.c) runs its forward pass with the
 * forward ops of backend.h and everything else (the state-saving scan, every backward op, the
 * loss, the optimizer) with these ops. The CPU table (train_ops_cpu.c) is the oracle; a CUDA table
 * fills the same struct. Each op takes the forward backend (`be`) whose memory it works in.
 *
 * Conventions as in backend.h: token-major [n, width] matrices with a leading dimension (row
 * stride, in elements); activations and activation gradients in be->act_dtype ("act"); the
 * residual-stream gradient, weight gradients, scan states and every reduction in F32 (double
 * where noted). Weight matrices are the handles of be->upload_matrix ([rows, cols], used as
 * C = A . W^T by be->gemm). "+=" marks outputs that accumulate; everything else is written.
 * Packed sequences use backend.h's seq_start contract: no state and no gradient crosses a start.
 * Reductions are done in a fixed order, so results do not depend on the thread count.
 * Ops return 0 on success and < 0 on error (logged).
 *
 * A CUDA table: define `const md_train_ops_t *md_train_ops_cuda(void)` (C linkage) in kernels/;
 * the plan then trains on `-d cuda`. Its ops see act = the backend's act_dtype, matrices in
 * upload_matrix's layout, and must match the CPU ops (tests/test_train.c shows every contract:
 * the scan's chunk-start states and dstate carry, the conv's state/dstate, in-place dsum). */
#ifndef MD_TRAIN_OPS_H
#define MD_TRAIN_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One direction of a selective scan, forward (state-saving) and backward. The forward math is
 * backend.h's scan. The forward op writes the state before every T-position chunk in scan order
 * (T = d->T; chunk j covers scan indices [j*T, (j+1)*T)); the backward op walks the
 * chunks in reverse scan order, recomputes the states inside each chunk from its saved start
 * state, and runs the reverse (adjoint) recurrence with the carry dstate. */
typedef struct {
    /* forward inputs */
    const void *x;  int64_t ldx;   /* conv output u [n, Di] (act)                              */
    const void *dt; int64_t lddt;  /* dt_proj output before bias [n, Di] (act)                 */
    const void *B;                 /* [n, N] (act), row stride ldbc                            */
    const void *C;  int64_t ldbc;  /* [n, N] (act)                                             */
    const void *z;  int64_t ldz;   /* gate [n, Di] (act); NULL: no SiLU(z) gate                */
    const float *A;                /* [Di, N] = -exp(A_log)                                    */
    const float *D;                /* [Di] or NULL                                             */
    const float *dt_bias;          /* [Di] or NULL                                             */
    int reverse;                   /* 0: t = 0..n-1; 1: t = n-1..0                             */
    int T;                         /* positions per saved state (ops->scan_chunk by default)   */
    float *chunk_states;           /* [ceil(n/T), Di, N]: forward writes, backward reads       */
    float *state;                  /* forward: [Di, N] h before the first position in scan
                                      order, h_last out; NULL: start from 0, not returned      */
    /* backward (scan_bwd only) */
    const void *dy; int64_t lddy;  /* dL/dy [n, Di] (act)                                      */
    void *dx;  int64_t lddx;       /* dL/du [n, Di] (act)                                      */
    void *ddt; int64_t ldddt;      /* dL/d(dt before bias) [n, Di] (act)                       */
    void *dB;                      /* [n, N] (act), row stride lddbc; reduced over all channels */
    void *dC;  int64_t lddbc;      /* [n, N] (act)                                             */
    void *dz;  int64_t lddz;       /* [n, Di] (act), when z                                    */
    int dz_accumulate;             /* 1: dz +=, 0: dz =                                        */
    float *dA_log;                 /* [Di, N] += dL/dA_log (A = -exp(A_log))                   */
    float *dD;                     /* [Di] += (when D)                                         */
    float *ddt_bias;               /* [Di] += (when dt_bias)                                   */
    float *dstate;                 /* [Di, N] in: dL/dh_last (the next piece's dstate out);
                                      out: dL/d(state before the first position). NULL: zero
                                      in, not returned */
    void *y;   int64_t ldy;        /* when not NULL: the forward output y [n, Di] (act), which
                                      the backward recomputes anyway, for the out_proj weight
                                      gradient (= or += by y_accumulate)                      */
    int y_accumulate;
} md_tscan_t;

/* AdamW hyperparameters of one update (PyTorch torch.optim.AdamW semantics):
 *   p *= 1 - lr*wd;  g' = g * gscale;  m = b1 m + (1-b1) g';  v = b2 v + (1-b2) g'^2
 *   p -= (lr / (1 - b1^step)) * m / (sqrt(v) / sqrt(1 - b2^step) + eps)            */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay, gscale;
    int64_t step;                  /* 1 for the first update */
} md_adamw_t;

typedef struct md_train_ops md_train_ops_t;

struct md_train_ops {
    const char *name;              /* "cpu", "cuda" */
    int scan_chunk;                /* default md_tscan_t.T */

    /* dtable[ids[i], :] += dout[i, :]  (scatter-add). dout F32 [n, W]; dtable F32 [V, W]. */
    int (*embed_bwd)(md_backend_t *be, int64_t n, int W, const int32_t *ids, const float *dout,
                     float *dtable);

    /* Backward of be->add_norm. s F32 [n, W] is the sum the forward formed (after the swap: its
     * res_out); dout act [n, W] = dL/d(out); dres F32 [n, W] = dL/d(res_out), or NULL. Writes
     * dsum F32 [n, W] = dL/dh = dL/dres in the layout of the forward's inputs (the swap undone);
     * dsum may alias dres. dw [W] +=, db [W] += (NULL when the forward had no bias). */
    int (*add_norm_bwd)(md_backend_t *be, int64_t n, int W, int group, const float *s,
                        const void *dout, const float *dres, float *dsum, const float *w,
                        float *dw, float *db, float eps, int swap, int rms);

    /* Input gradient of be->gemm: dA[M, K] (= or +=) dC[M, N] . W[N, K]. dC is act, or F32 when
     * dc_f32; W a matrix handle; dA act with row stride ldda. */
    int (*gemm_da)(md_backend_t *be, int64_t M, int N, int K, const void *dC, int64_t lddc,
                   int dc_f32, const void *W, void *dA, int64_t ldda, int accumulate);
    /* Weight gradient of be->gemm: dW[N, K] += dC[M, N]^T . A[M, K]. dC act (F32 when dc_f32),
     * A act with row stride lda; dW F32 row-major [N, K]. */
    int (*gemm_dw)(md_backend_t *be, int64_t M, int N, int K, const void *dC, int64_t lddc,
                   int dc_f32, const void *A, int64_t lda, float *dW);

    /* Backward of be->conv_silu over the same chunk and arguments. dout act [n, Cn] (row stride
     * Cn) = dL/d(out). dx act [n, Cn] row stride lddx (= or += by dx_accumulate). dw F32
     * [Cn, K] +=, db [Cn] += (NULL without bias). state F32 [K-1, Cn]: the state the forward
     * was given (the K-1 inputs before the chunk in scan order; NULL = zeros). dstate F32
     * [K-1, Cn]: in, dL/d(the state the forward emitted); out, dL/d(the state it was given).
     * NULL: zero in, not returned. Walking chunks in reverse scan order with one dstate buffer
     * gives the gradient of the whole sequence. */
    int (*conv_silu_bwd)(md_backend_t *be, int64_t n, int Cn, int K, const void *x, int64_t ldx,
                         const float *w, const float *b, const void *dout, void *dx,
                         int64_t lddx, int dx_accumulate, float *dw, float *db,
                         const float *state, float *dstate, int reverse,
                         const uint8_t *seq_start);

    /* Selective scan forward of one direction (backend.h scan math), writing y (= or +=) and
     * the chunk-start states (and d->state when not NULL). */
    int (*scan_fwd)(md_backend_t *be, int64_t n, int Di, int N, const md_tscan_t *d, void *y,
                    int64_t ldy, int accumulate, const uint8_t *seq_start);
    /* Its backward (see md_tscan_t): recomputes states within chunks from d->chunk_states,
     * reduces dB/dC over channels inside the op (no per-position atomics). */
    int (*scan_bwd)(md_backend_t *be, int64_t n, int Di, int N, const md_tscan_t *d,
                    const uint8_t *seq_start);

    /* Backward of be->mul (a *= b): with a, b the forward's inputs (act), da = dout . b,
     * db = dout . a (elementwise; dout F32, da/db act, either may be NULL; written). */
    int (*mul_bwd)(md_backend_t *be, int64_t n, int W, const void *dout, int64_t lddo,
                   const void *a, int64_t lda, const void *b, int64_t ldb, void *da,
                   int64_t ldda, void *db, int64_t lddb);

    /* Cross-entropy over V logits per row (F32 [n, V], row stride ldl), targets int32 [n]
     * (rows whose target == ignore_index are skipped), per-row weights F32 [n] or NULL (= 1).
     * stats (double [4], backend memory) += { sum w*CE, sum w, sum w*[argmax == target],
     * number of rows not ignored }. When dlogits (F32, row stride ldd; may alias logits) is
     * not NULL it receives scale * w * (softmax - onehot), 0 on ignored rows. */
    int (*xent)(md_backend_t *be, int64_t n, int V, const float *logits, int64_t ldl,
                const int32_t *targets, const float *weights, int ignore_index, float scale,
                float *dlogits, int64_t ldd, double *stats);

    /* One AdamW update of n F32 parameters p with gradient g and moments m, v (all backend
     * memory). */
    int (*adamw)(md_backend_t *be, int64_t n, float *p, const float *g, float *m, float *v,
                 const md_adamw_t *hp);
    /* *acc (double, backend memory) += sum x[i]^2. */
    int (*sumsq)(md_backend_t *be, int64_t n, const float *x, double *acc);

    /* dst[r, c] (= or +=) src[rowmap ? rowmap[r] : r, flip_cols ? cols-1-c : c] for r < rows,
     * c < cols; F32, row strides lds/ldd; rowmap int32 [rows] in backend memory. Builds and
     * folds back the derived weights (PS reversed copies, the Ecat table, [w | flip w]). */
    int (*permute)(md_backend_t *be, int rows, int cols, const float *src, int64_t lds,
                   float *dst, int64_t ldd, const int32_t *rowmap, int flip_cols,
                   int accumulate);
    /* Refills a matrix made by be->upload_matrix(rows, cols) from F32 backend memory, with the
     * row map and column flip of permute. */
    int (*set_matrix)(md_backend_t *be, void *mat, int rows, int cols, const float *src,
                      int64_t lds, const int32_t *rowmap, int flip_cols);
    /* dst[i] = -exp(src[i]) (A from A_log). */
    int (*neg_exp)(md_backend_t *be, int64_t n, const float *src, float *dst);
};

/* The CPU table (static; never free it). */
const md_train_ops_t *md_train_ops_cpu(void);
/* The CUDA table, when a build provides one (weak: NULL-valued otherwise). */
const md_train_ops_t *md_train_ops_cuda(void) __attribute__((weak));
/* The table for backend be ("cpu" or "cuda"); NULL (logged) when this build has none for it. */
const md_train_ops_t *md_train_ops_for(const md_backend_t *be);

#ifdef __cplusplus
}
#endif

#endif
