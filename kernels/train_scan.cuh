/* train_scan.cuh: the CUDA selective scan for training (kernels/train_scan.cu): the state-saving
 * forward and the fused backward of lib/train_ops.h (md_tscan_t), shared with the CUDA
 * training op table (kernels/train_ops.cu). Same contracts as the CPU ops scan_fwd/scan_bwd in
 * lib/train_ops_cpu.c: chunk-start states every d->T positions in scan order, the backward
 * recomputes states within a chunk from its saved start state, dstate carried in and out,
 * dB/dC reduced over channels without per-position atomics, deterministic results. */
#ifndef MD_KERNELS_TRAIN_SCAN_CUH
#define MD_KERNELS_TRAIN_SCAN_CUH

#include "common.cuh"

extern "C" {
#include "train_ops.h"
}

/* The default number of positions per saved state (md_train_ops_t.scan_chunk) on the GPU. */
#define MD_CUDA_TSCAN_T 256

/* C linkage, so tests (C) can call them directly with prototypes of their own. */
extern "C" int md_cuda_tscan_fwd(md_backend_t *be, int64_t n, int Di, int N, const md_tscan_t *d, void *y, int64_t ldy,
                      int accumulate, const uint8_t *seq_start);
extern "C" int md_cuda_tscan_bwd(md_backend_t *be, int64_t n, int Di, int N, const md_tscan_t *d, const uint8_t *seq_start);

#endif
