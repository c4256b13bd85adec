/* md_cuda.h: the CUDA backend's C entry points beyond the op table (backend.h): opening it and
 * reading its device-memory figures. Only CUDA builds (MD_WITH_CUDA) link these. */
#ifndef MD_CUDA_H
#define MD_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/* precision "fp32" or "bf16" (NULL = bf16). NULL on failure (no device, CUDA error), logged.
 * Free with be->destroy(be). */
md_backend_t *md_backend_cuda_open(const char *precision, int n_threads);
/* Number of CUDA devices, 0 when there is none or no usable driver. */
int md_cuda_device_count(void);

/* Device memory held by this backend through be->alloc, upload_matrix and its own workspaces:
 * now and at the peak since open (or since the last reset). Bytes. */
typedef struct {
    size_t live, peak;
    size_t total, free;      /* cudaMemGetInfo now */
} md_cuda_mem_t;
int md_cuda_mem_stats(md_backend_t *be, md_cuda_mem_t *m);
void md_cuda_reset_peak(md_backend_t *be);

#endif
