/* npy.h: NumPy .npy files (format 1.0/2.0, little-endian, C order): whole-array read, and a
 * streaming writer that appends rows and writes to a temporary name, renamed on close. */
#ifndef MD_NPY_H
#define MD_NPY_H

#include <stddef.h>
#include <stdint.h>

typedef enum { NPY_F32, NPY_F16, NPY_I32, NPY_I64, NPY_U8, NPY_F64 } npy_dtype_t;

typedef struct {
    npy_dtype_t dtype;
    int ndim;
    int64_t shape[8];
    int64_t numel;
    void *data;                  /* malloc'ed, native layout; free with npy_free */
} npy_array_t;

/* Reads a whole array. 0 / < -1 (logged "<path>: <problem>"). */
int npy_read(const char *path, npy_array_t *a);
void npy_free(npy_array_t *a);
/* Converts any numeric array to float [numel] (malloc'ed, caller frees) or NULL. */
float *npy_to_f32(const npy_array_t *a);

/* Writes a whole array atomically. 0 / < -1. */
int npy_write(const char *path, npy_dtype_t dtype, int ndim, const int64_t *shape,
              const void *data);

/* Streaming writer of a 2-D array [rows, ncols] whose row count is known at close. Rows are
 * given as float and stored as `dtype` (NPY_F32 or NPY_F16). "-" is not allowed (npy needs a
 * seekable file). The file appears under `path` only after a successful npy_writer_close. */
typedef struct npy_writer npy_writer_t;
npy_writer_t *npy_writer_open(const char *path, npy_dtype_t dtype, int64_t ncols);
int npy_writer_append(npy_writer_t *w, const float *rows, int64_t nrows);
/* Finishes (header with the final shape, fsync-free flush, rename). 0 / < -1; frees w. */
int npy_writer_close(npy_writer_t *w);
/* Removes the temporary file and frees w (for error paths). */
void npy_writer_abort(npy_writer_t *w);

#endif
