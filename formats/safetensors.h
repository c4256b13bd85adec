/* safetensors.h: reader (mmap; header parsed with jansson; offsets, sizes and dtypes validated
 * against the file) and writer (atomic: temporary name + rename) for the safetensors format:
 * u64 little-endian header length, JSON header {name: {dtype, shape, data_offsets}, "__metadata__"},
 * then the byte buffer. */
#ifndef MD_SAFETENSORS_H
#define MD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32, ST_F16, ST_BF16, ST_I64, ST_I32, ST_U8, ST_F64, ST_NDTYPES } st_dtype_t;

#define ST_MAX_DIM 8

typedef struct {
    char *name;
    st_dtype_t dtype;
    int ndim;
    int64_t shape[ST_MAX_DIM];
    int64_t numel;
    size_t nbytes;
    const void *data;            /* into the mapping (may be unaligned) */
} st_tensor_t;

typedef struct {
    char *path;
    int n;                       /* tensors, in file (header) order */
    st_tensor_t *t;
    int n_meta;                  /* __metadata__ string pairs */
    char **meta_key, **meta_val;
    void *map;
    size_t map_size;
} st_file_t;

/* Opens and validates `path`. NULL on error, logged as "<path>: <problem>". Close with st_close. */
st_file_t *st_open(const char *path);
void st_close(st_file_t *f);
/* Tensor by name, or NULL. */
const st_tensor_t *st_find(const st_file_t *f, const char *name);
/* Metadata value by key, or NULL. */
const char *st_meta(const st_file_t *f, const char *key);
/* Converts a F32/F16/BF16/F64 tensor to float [numel]. 0 / < -1 (wrong dtype). */
int st_read_f32(const st_tensor_t *t, float *dst);
/* Converts an I64/I32 tensor to int64 [numel]. 0 / < -1. */
int st_read_i64(const st_tensor_t *t, int64_t *dst);
const char *st_dtype_name(st_dtype_t t);
/* Bytes per element of a dtype (0 for an invalid one). */
size_t st_dtype_size(st_dtype_t t);

/* IEEE binary16 and bfloat16 <-> float. Narrowing rounds to nearest even, overflows to inf,
 * keeps subnormals (F16) and keeps NaN a (quiet) NaN. */
float st_f16_to_f32(uint16_t h);
uint16_t st_f32_to_f16(float f);
float st_bf16_to_f32(uint16_t h);
uint16_t st_f32_to_bf16(float f);

/* Writer: tensors are written in the order given; meta is n_meta key/value string pairs. */
typedef struct {
    const char *name;
    st_dtype_t dtype;
    int ndim;
    int64_t shape[ST_MAX_DIM];
    const void *data;
} st_wtensor_t;
/* meta_kv holds keys and values alternately: meta_kv[2*i] = key, meta_kv[2*i+1] = value.
 * Writes "<path>.tmp.<pid>" and renames it to `path`; no file is left behind on error.
 * The data buffer follows the given order without gaps (Python's safetensors rejects gaps), so
 * put wider dtypes first when alignment of every tensor matters. 0 / < -1 (logged). */
int st_write(const char *path, const st_wtensor_t *t, int n, const char *const *meta_kv,
             int n_meta);

#endif
