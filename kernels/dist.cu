/* dist.cu: what lib/dist.c (the NCCL group of data-parallel training) needs from the CUDA
 * backend: its stream, on which NCCL queues the all-reduces (ordered after the backward pass and
 * before the optimizer without a host synchronisation), and a non-blocking test that the stream
 * is idle, so that the wait for a collective can also watch NCCL's asynchronous errors. */
#include "common.cuh"

extern "C" {
#include "dist.h"
}

extern "C" void *md_cuda_backend_stream(md_backend_t *be) { return (void *)CTX(be)->stream; }

extern "C" int md_cuda_backend_poll(md_backend_t *be)
{
#ifdef MD_CUDA_EMU
    (void)be;   /* the stand-in runs every launch to completion before returning */
    return 1;
#else
    cudaError_t e = cudaStreamQuery(CTX(be)->stream);
    if (e == cudaSuccess) return 1;
    if (e == cudaErrorNotReady) return 0;
    cudaGetLastError();
    md_error("CUDA error while waiting for the stream: %s (%s)", cudaGetErrorName(e), cudaGetErrorString(e));
    return -2;
#endif
}
