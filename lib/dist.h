/* dist.h: data-parallel training over several ranks (one process per GPU, or threads of one
 * process). A group (md_dist_t) sums buffers over its ranks, in place, with the same result on
 * every rank. Two kinds: NCCL (libnccl.so.2 loaded at run time with dlopen; buffers in the CUDA
 * backend's memory, work queued on its stream) and threads of one process (host memory; the CPU
 * tests of the trainer). md_dist_seq_index() is the sharding rule: which global training
 * sequences each rank computes in every update. */
#ifndef MD_DIST_H
#define MD_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#define MD_NCCL_ID_BYTES 128   /* sizeof(ncclUniqueId) */

typedef struct md_dist_s md_dist_t;

struct md_dist_s {
    int rank, nranks;
    const char *kind;   /* "nccl" or "threads" */
    /* Sums n floats over the ranks, in place. buf is memory of the trainer's backend (device
     * memory for NCCL, host memory for threads). 0 / < -1 (logged; the group is then unusable). */
    int (*sum_f32)(md_dist_t *d, float *buf, size_t n);
    /* Sums n host doubles over the ranks, in place (n <= MD_DIST_MAX_HOST). 0 / < -1. */
    int (*sum_host_f64)(md_dist_t *d, double *buf, int n);
    /* After an error on this rank: makes the group fail instead of waiting for this rank
     * (threads: wakes the other ranks, whose sums then fail; NCCL: aborts this rank's
     * communicator; the other processes are stopped by the launcher, which waits on them). */
    void (*abort)(md_dist_t *d);
    /* Frees this rank's member. */
    void (*destroy)(md_dist_t *d);
    void *ctx;
};

#define MD_DIST_MAX_HOST 64

/* The global number of sequence `row` of micro-batch `micro` that `rank` (of nranks, each with
 * accum micro-batches of batch sequences) computes in update `step`:
 *   ((step * nranks + rank) * accum + micro) * batch + row.
 * Update `step` covers the global numbers [step * S, (step + 1) * S), S = nranks * accum * batch;
 * rank r holds the r-th of its nranks consecutive blocks. With nranks = 1 this is the order of one
 * process, so N ranks with K micro-batches see exactly the sequences of one process with N * K
 * micro-batches (and, update by update, those of one process with batch N * B). */
uint64_t md_dist_seq_index(int64_t step, int nranks, int rank, int accum, int batch, int micro, int row);

/* ---- NCCL (loaded at run time) ------------------------------------------------------------- */

/* Loads NCCL ($MD_NCCL_LIB when set, else libnccl.so.2 through the loader's search path) and
 * writes "PATH (NCCL x.y.z)" into where. 0 / < -1 (logged, with dlerror's reason). */
int md_nccl_probe(char *where, size_t n);
/* A new group id (rank 0 makes it and hands it to the other ranks before they join). Sets
 * NCCL_NVLS_ENABLE=0 when the environment does not set it (NVLink multicast off). 0 / < -1. */
int md_nccl_unique_id(unsigned char id[MD_NCCL_ID_BYTES]);
/* Joins this process as `rank` of `nranks` to the group `id` on the device and stream of the
 * CUDA backend be (not owned; it must outlive the group). Blocks until every rank joined. Sets
 * NCCL_NVLS_ENABLE=0 when unset. NULL on error (logged with NCCL's message; a CPU-only build
 * says "built without CUDA"). Free with d->destroy(d). */
md_dist_t *md_dist_nccl_create(md_backend_t *be, const unsigned char id[MD_NCCL_ID_BYTES], int rank, int nranks);

/* ---- threads of one process (host memory) --------------------------------------------------- */

/* n members of one group, members[r] for the thread of rank r; sums add the ranks' buffers in
 * rank order. Each member is freed with its destroy (the last one frees the shared state).
 * 0 / < -1. */
int md_dist_threads_create(int n, md_dist_t **members);

/* ---- CUDA side (kernels/dist.cu; CUDA builds only) ------------------------------------------ */
#ifdef MD_WITH_CUDA
/* The CUDA backend's stream (a cudaStream_t). */
void *md_cuda_backend_stream(md_backend_t *be);
/* 1 when the backend's stream has finished all its work, 0 while it is busy, < -1 on a CUDA
 * error (logged). Never blocks. */
int md_cuda_backend_poll(md_backend_t *be);
#endif

#endif
