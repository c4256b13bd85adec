/* fuzz_npy.c: libFuzzer target for the NPY reader. The input is read as a file (npy_read on a
 * memfd); an accepted array is converted (npy_to_f32), written back with npy_write and read again
 * (dtype, shape and bytes must match), and 2-D float arrays also go through the streaming writer
 * as float32 (bit-exact) and float16 (exact for F16 input, NaN staying NaN). */
#include "fuzz_common.h" /* first: it sets _GNU_SOURCE */

#include <math.h>

#include "npy.h"
#include "safetensors.h" /* F16 conversions */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_init();
    return 0;
}

static const size_t esize[] = {[NPY_F32] = 4, [NPY_F16] = 2, [NPY_I32] = 4,
                               [NPY_I64] = 8, [NPY_U8] = 1,  [NPY_F64] = 8};

static void stream_check(const char *out, const npy_array_t *a, const float *f, npy_dtype_t dt)
{
    int64_t rows = a->shape[0], cols = a->shape[1];
    npy_writer_t *w = npy_writer_open(out, dt, cols);
    FUZZ_CHECK(w != NULL);
    /* uneven chunks: 1 row, then 2, then the rest */
    int64_t r = 0;
    for (int64_t step = 1; r < rows; step = step < 2 ? step + 1 : rows) {
        int64_t m = step < rows - r ? step : rows - r;
        FUZZ_CHECK(npy_writer_append(w, f + r * cols, m) == 0);
        r += m;
    }
    FUZZ_CHECK(npy_writer_close(w) == 0);
    npy_array_t b;
    FUZZ_CHECK(npy_read(out, &b) == 0);
    FUZZ_CHECK(b.dtype == dt && b.ndim == 2 && b.shape[0] == rows && b.shape[1] == cols);
    for (int64_t i = 0; i < a->numel; ++i) {
        if (dt == NPY_F32) {
            FUZZ_CHECK(memcmp((float *)b.data + i, f + i, 4) == 0);
        } else {
            uint16_t h = ((uint16_t *)b.data)[i];
            if (isnan(f[i])) FUZZ_CHECK(isnan(st_f16_to_f32(h)));
            else if (a->dtype == NPY_F16) FUZZ_CHECK(h == ((uint16_t *)a->data)[i]);
            else FUZZ_CHECK(h == st_f32_to_f16(f[i]));
        }
    }
    npy_free(&b);
    unlink(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = fuzz_memfile(data, size, path, sizeof path);
    if (fd < 0) return 0;
    npy_array_t a;
    int rc = npy_read(path, &a);
    close(fd);
    if (rc < 0) {
        FUZZ_CHECK(rc < -1 && a.data == NULL);
        return 0;
    }
    FUZZ_CHECK(a.ndim >= 0 && a.ndim <= 8 && a.numel >= 0);
    float *f = npy_to_f32(&a);
    FUZZ_CHECK(f != NULL);

    const char *dir = fuzz_scratch();
    if (dir) {
        char out[512];
        snprintf(out, sizeof out, "%s/rt.npy", dir);
        FUZZ_CHECK(npy_write(out, a.dtype, a.ndim, a.shape, a.data) == 0);
        npy_array_t b;
        FUZZ_CHECK(npy_read(out, &b) == 0);
        FUZZ_CHECK(b.dtype == a.dtype && b.ndim == a.ndim && b.numel == a.numel);
        FUZZ_CHECK(memcmp(b.shape, a.shape, sizeof(int64_t) * (size_t)a.ndim) == 0);
        FUZZ_CHECK(a.numel == 0 || memcmp(a.data, b.data, (size_t)a.numel * esize[a.dtype]) == 0);
        npy_free(&b);
        unlink(out);
        if (a.ndim == 2 && a.shape[1] > 0 && (a.dtype == NPY_F32 || a.dtype == NPY_F16)) {
            stream_check(out, &a, f, NPY_F32);
            stream_check(out, &a, f, NPY_F16);
        }
    }
    free(f);
    npy_free(&a);
    return 0;
}
