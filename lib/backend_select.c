/* backend_select.c: md_backend_open() - a backend by name ("cpu", "cuda", "auto") and precision
 * ("fp32", "bf16", NULL = the backend's default). The one file outside kernels/ that knows
 * whether this build has CUDA (MD_WITH_CUDA): a CPU-only build still links, and "cuda" then says
 * so. "auto" takes CUDA when built with it and a device is present, else the CPU. */
#include <string.h>

#include "backend.h"
#include "md.h"
#ifdef MD_WITH_CUDA
#include "md_cuda.h"
#endif

md_backend_t *md_backend_open(const char *name, const char *precision, int n_threads)
{
    if (precision && strcmp(precision, "fp32") && strcmp(precision, "bf16")) {
        md_error("unknown precision '%s' (fp32 or bf16)", precision);
        return NULL;
    }
    if (!name || !strcmp(name, "auto")) {
#ifdef MD_WITH_CUDA
        if (md_cuda_device_count() > 0) return md_backend_cuda_open(precision, n_threads);
        md_info("no CUDA device; using the CPU backend");
#endif
        if (precision && strcmp(precision, "fp32"))
            md_info("the CPU backend computes in fp32 (precision '%s' applies to the GPU only)", precision);
        return md_backend_cpu_open(n_threads);
    }
    if (!strcmp(name, "cpu")) {
        if (precision && strcmp(precision, "fp32")) {
            md_error("the CPU backend computes in fp32 only (precision '%s' is for -d cuda)", precision);
            return NULL;
        }
        return md_backend_cpu_open(n_threads);
    }
    if (!strcmp(name, "cuda") || !strcmp(name, "gpu")) {
#ifdef MD_WITH_CUDA
        return md_backend_cuda_open(precision, n_threads);
#else
        md_error("built without CUDA (rebuild with nvcc available, CUDA=1)");
        return NULL;
#endif
    }
    md_error("unknown backend '%s' (cpu, cuda or auto)", name);
    return NULL;
}
