/* backend.h: the op table. The model plan (model.c) is written once against these ops; the CPU
 * backend (lib/backend_cpu.c, the oracle) and the CUDA backend (kernels/) each fill the table.
 *
 * Layout: activations are token-major row-major matrices [n, width] with a leading dimension
 * (row stride, in elements) so that column slices (x/z halves of xz, dt/B/C of xdbl) need no copy.
 * Activation dtype is the backend's `act_dtype` (F32 on the CPU; BF16 or F32 on the GPU). The
 * residual stream, scan and conv states, norm/scan vectors (A, D, dt_bias, norm weights) are
 * always F32. Every pointer an op takes lives in backend memory (be->alloc / be->upload).
 *
 * Packed sequences: `seq_start` has n+1 entries for a chunk of n positions; seq_start[t] = 1
 * when a new sequence begins at position t, and seq_start[n] = 1 when position n (the first of
 * the next chunk) begins one or the data ends. Conv and scan treat a start as a hard boundary:
 * no state or input crosses it, in either direction. NULL means one sequence that continues
 * across chunk edges only through the explicit state arguments.
 *
 * Ops return 0 on success and < 0 on error (logged). */
#ifndef MD_BACKEND_H
#define MD_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef enum { MD_DT_F32 = 0, MD_DT_BF16 = 1 } md_dtype_t;

typedef struct md_backend md_backend_t;

/* One direction of a selective scan over a chunk (see md_backend.scan). */
typedef struct {
    const void *x;  int64_t ldx;   /* conv output u [n, Di] (act)                           */
    const void *dt; int64_t lddt;  /* dt_proj output before bias [n, Di] (act)                */
    const void *B;                 /* [n, N] (act), row stride ldbc (a column slice of xdbl)  */
    const void *C;  int64_t ldbc;  /* [n, N] (act)                                            */
    const void *z;  int64_t ldz;   /* gate [n, Di] (act); NULL: no SiLU(z) gate               */
    const float *A;                /* [Di, N] = -exp(A_log)                                   */
    const float *D;                /* [Di] skip, or NULL                                      */
    const float *dt_bias;          /* [Di], or NULL                                           */
    float *state;                  /* [Di, N] h in (the state before this chunk in scan
                                      order), h_last out                                      */
    int reverse;                   /* 0: t = 0..n-1; 1: t = n-1..0                            */
} md_scan_dir_t;

struct md_backend {
    const char *name;        /* "cpu", "cuda" */
    md_dtype_t act_dtype;
    int64_t chunk;           /* positions per chunk the model plan should use */
    int n_threads;
    void *ctx;               /* backend private */

    /* --- memory --- */
    void *(*alloc)(md_backend_t *be, size_t bytes);               /* NULL (logged) on failure */
    void  (*free)(md_backend_t *be, void *p);
    int   (*upload)(md_backend_t *be, void *dst, const void *src, size_t bytes);   /* host->be */
    int   (*download)(md_backend_t *be, void *dst, const void *src, size_t bytes); /* be->host */
    int   (*zero)(md_backend_t *be, void *dst, size_t bytes);
    /* act [n] in backend memory -> host float [n] */
    int   (*download_act)(md_backend_t *be, float *dst, const void *src, int64_t n);
    /* host float [n] -> act [n] in backend memory */
    int   (*upload_act)(md_backend_t *be, void *dst, const float *src, int64_t n);
    int   (*sync)(md_backend_t *be);
    void  (*destroy)(md_backend_t *be);
    /* Bytes of backend memory free for this process (for sizing chunks); -1 if unknown. */
    int64_t (*mem_free)(md_backend_t *be);

    /* --- weights --- */
    /* A weight matrix [rows, cols] (row-major F32 on the host) in the form gemm wants. */
    void *(*upload_matrix)(md_backend_t *be, const float *host, int rows, int cols);

    /* --- ops --- */
    /* out[i, :] = table[ids[i], :]; table [V, W] F32, ids int32 [n], out act [n, W]. */
    int (*embed)(md_backend_t *be, int64_t n, int W, const int32_t *ids, const float *table,
                 void *out);

    /* Fused residual add + norm over `W / group` groups of `group` channels.
     *   s = h + res   (h NULL: s = res; res NULL: s = h)
     *   if swap: s = [s[W/2:] | s[:W/2]]      (the Caduceus-PS half swap)
     *   res_out = s (F32, may alias res; NULL: not stored)
     *   out[g] = (s[g] - mean?) * rstd * w[g] (+ b[g]), rstd over the group, RMS when rms != 0 */
    int (*add_norm)(md_backend_t *be, int64_t n, int W, int group, const void *h,
                    const float *res, float *res_out, void *out, const float *w, const float *b,
                    float eps, int swap, int rms);

    /* C[M, N] (= or +=) A[M, K] . Wt[N, K]^T. A act with row stride lda; Wt from upload_matrix;
     * C act with row stride ldc, or F32 when c_f32. */
    int (*gemm)(md_backend_t *be, int64_t M, int N, int K, const void *A, int64_t lda,
                const void *Wt, void *C, int64_t ldc, int accumulate, int c_f32);

    /* Depthwise conv of width K along positions + bias + SiLU, per channel c < Cn:
     *   forward: out[t] = silu(b + sum_k w[c*K+k] * x[t-(K-1)+k])
     *   reverse: out[t] = silu(b + sum_k w[c*K+k] * x[t+(K-1)-k])
     * state [K-1, Cn] F32 holds the K-1 inputs preceding the chunk in scan order (row j is
     * scan distance K-1-j before the chunk's first position); it is updated to the chunk's own
     * last K-1 inputs in scan order. Inputs across a sequence start count as zero.
     * x act [n, Cn] row stride ldx; out act [n, Cn] (row stride Cn); b may be NULL. */
    int (*conv_silu)(md_backend_t *be, int64_t n, int Cn, int K, const void *x, int64_t ldx,
                     const float *w, const float *b, void *out, float *state, int reverse,
                     const uint8_t *seq_start);

    /* Selective scan (Mamba-1), per direction, per channel c < Di and state s < N:
     *   delta = softplus(dt[t,c] + dt_bias[c])         softplus(v) = v > 20 ? v : log1p(exp(v))
     *   h[c,s] = exp(delta*A[c,s]) * h[c,s] + delta * B[t,s] * x[t,c]
     *   out    = sum_s h[c,s] * C[t,s] + D[c] * x[t,c];   out *= silu(z[t,c]) when z
     * The state is reset to 0 at sequence starts (in scan order). The directions' outputs are
     * summed: y (= or +=) sum_d out_d. y act [n, Di] row stride ldy. ndir is 1 or 2; a backend
     * may run both in one launch. */
    int (*scan)(md_backend_t *be, int64_t n, int Di, int N, int ndir, const md_scan_dir_t *dirs,
                void *y, int64_t ldy, int accumulate, const uint8_t *seq_start);

    /* a[i, j] *= b[i, j] for i < n, j < W (act, row strides lda, ldb). */
    int (*mul)(md_backend_t *be, int64_t n, int W, void *a, int64_t lda, const void *b,
               int64_t ldb);

    /* --- output reduction (md_model_forward's pooled and selected-row outputs) --- */
    /* Segment sums for mean pooling over a piece of rows. x act [n, W] (row stride ldx) holds
     * rows r0 .. r0+n-1 of the packed batch; segment i < nseg covers batch rows
     * [seg_beg[i], seg_end[i]) (int64, backend memory) and gets
     *   acc[i, :] += sum of x[r - r0, :] over r in [seg_beg[i], seg_end[i]) within [r0, r0+n)
     * acc F32 [nseg, W]. A long segment is thus summed piece by piece (chunk by chunk).
     * Segments may overlap. Each acc row is summed in a fixed order (deterministic). NULL:
     * the backend cannot pool (the plan then fails with a message). */
    int (*pool_sum)(md_backend_t *be, int64_t n, int W, const void *x, int64_t ldx, int64_t r0,
                    int nseg, const int64_t *seg_beg, const int64_t *seg_end, float *acc);

    /* Row gather: out[i, :] = x[rows[i] - r0, :] for i < nrows. x [n, W] (row stride ldx)
     * holds batch rows r0 .. r0+n-1; rows int64 [nrows] (backend memory), each in
     * [r0, r0+n); out [nrows, W] (row stride W). x and out are act, or F32 when f32. A copy:
     * values are unchanged. */
    int (*gather_rows)(md_backend_t *be, int64_t nrows, int W, const void *x, int64_t ldx,
                       int64_t r0, const int64_t *rows, void *out, int f32);

    /* --- host memory for downloads --- */
    /* Host buffers that download/download_act fill fastest (pinned memory on the GPU). NULL on
     * failure (logged); free with host_free. Both NULL: the caller uses malloc/free. */
    void *(*host_alloc)(md_backend_t *be, size_t bytes);
    void  (*host_free)(md_backend_t *be, void *p);
};

/* Backends by name: "cpu", "cuda", "auto" (CUDA when built with it and a device is present,
 * else CPU). `precision` is "fp32" or "bf16" (GPU only; NULL = the backend's default).
 * NULL on failure with the reason logged ("built without CUDA", "no CUDA device"). Free with
 * be->destroy(be). */
md_backend_t *md_backend_open(const char *name, const char *precision, int n_threads);

md_backend_t *md_backend_cpu_open(int n_threads);
#ifdef MD_WITH_CUDA
md_backend_t *md_backend_cuda_open(const char *precision, int n_threads);
int md_cuda_device_count(void);
#endif

/* Bytes per activation element. */
static inline size_t md_dtype_size(md_dtype_t t) { return t == MD_DT_BF16 ? 2 : 4; }

#endif
