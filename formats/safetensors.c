/* safetensors.c: safetensors reader and writer (see safetensors.h), plus F16/BF16 conversions.
 * File layout: u64 LE header length n | n bytes of JSON header (padded with spaces) | data buffer.
 * The reader maps the file read-only and points each tensor into the mapping after checking its
 * dtype, shape and data_offsets against the data size; tensors may not overlap. The writer builds
 * the header with jansson, pads it to a multiple of 8 bytes, lays the data out in the given order
 * and writes "<path>.tmp.<pid>", renamed over `path` on success. */
#include "safetensors.h"

#include "md.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c reads and writes little-endian data in place: big-endian hosts are not supported"
#endif

/* The reference implementation refuses headers above 100 MB; so do we. */
#define ST_MAX_HEADER 100000000ULL

static const struct {
    const char *name;
    size_t size;
} st_types[ST_NDTYPES] = {
    [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2}, [ST_I64] = {"I64", 8},
    [ST_I32] = {"I32", 4}, [ST_U8] = {"U8", 1},   [ST_F64] = {"F64", 8},
};

const char *st_dtype_name(st_dtype_t t)
{
    return (unsigned)t < ST_NDTYPES ? st_types[t].name : "?";
}

size_t st_dtype_size(st_dtype_t t)
{
    return (unsigned)t < ST_NDTYPES ? st_types[t].size : 0;
}

/* ---- half precision ------------------------------------------------------------------------ */

static inline uint32_t f32_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    return x;
}

static inline float bits_f32(uint32_t x)
{
    float f;
    memcpy(&f, &x, 4);
    return f;
}

float st_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13)); /* inf, NaN (payload kept) */
    if (e) return bits_f32(sign | ((e + 112) << 23) | (m << 13));   /* rebias 15 -> 127 */
    if (!m) return bits_f32(sign);
    /* subnormal m * 2^-24: normalise into a float exponent */
    e = 113;
    while (!(m & 0x400)) m <<= 1, --e;
    return bits_f32(sign | (e << 23) | ((m & 0x3ff) << 13));
}

uint16_t st_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f), ax = x & 0x7fffffffu;
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    if (ax > 0x7f800000u) return sign | 0x7e00 | (uint16_t)((ax >> 13) & 0x3ff); /* quiet NaN */
    if (ax >= 0x477ff000u) return sign | 0x7c00; /* >= 65520 rounds to inf (also inf itself) */
    if (ax >= 0x38800000u) {                     /* normal half: |f| >= 2^-14 */
        uint32_t v = ax - 0x38000000u, r = v >> 13, rem = v & 0x1fff; /* rebias 127 -> 15 */
        if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) ++r; /* a carry moves into the exponent */
        return sign | (uint16_t)r;
    }
    if (ax <= 0x33000000u) return sign; /* <= 2^-25: half of the smallest subnormal, ties to 0 */
    /* subnormal half: value / 2^-24 = mantissa >> (126 - exponent), exponent in [102, 112] */
    uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000, shift = 126 - e;
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r; /* may round up to the smallest normal */
    return sign | (uint16_t)r;
}

float st_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t st_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fff + ((x >> 16) & 1); /* round to nearest even; overflow carries into inf */
    return (uint16_t)(x >> 16);
}

/* ---- reader -------------------------------------------------------------------------------- */

void st_close(st_file_t *f)
{
    if (!f) return;
    if (f->t)
        for (int i = 0; i < f->n; ++i) free(f->t[i].name);
    free(f->t);
    for (int i = 0; i < f->n_meta; ++i) {
        if (f->meta_key) free(f->meta_key[i]);
        if (f->meta_val) free(f->meta_val[i]);
    }
    free(f->meta_key);
    free(f->meta_val);
    if (f->map) munmap(f->map, f->map_size);
    free(f->path);
    free(f);
}

static char *st_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = md_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int st_dtype_parse(const char *s)
{
    for (int i = 0; i < ST_NDTYPES; ++i)
        if (strcmp(s, st_types[i].name) == 0) return i;
    return -1;
}

typedef struct {
    uint64_t begin, end;
    int idx;
} st_span_t;

static int st_span_cmp(const void *a, const void *b)
{
    const st_span_t *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int st_parse_meta(st_file_t *f, json_t *meta)
{
    const char *key;
    json_t *v;
    if (!json_is_object(meta)) {
        md_error("%s: __metadata__ is not an object", f->path);
        return -2;
    }
    size_t n = json_object_size(meta);
    if (n > (size_t)INT32_MAX) {
        md_error("%s: __metadata__ has too many entries (%zu)", f->path, n);
        return -2;
    }
    f->meta_key = md_calloc(n, sizeof(char *));
    f->meta_val = md_calloc(n, sizeof(char *));
    if (!f->meta_key || !f->meta_val) return -2;
    json_object_foreach(meta, key, v) {
        if (!json_is_string(v)) {
            md_error("%s: __metadata__ value of '%s' is not a string", f->path, key);
            return -2;
        }
        int i = f->n_meta++;
        f->meta_key[i] = st_strdup(key);
        f->meta_val[i] = st_strdup(json_string_value(v));
        if (!f->meta_key[i] || !f->meta_val[i]) return -2;
    }
    return 0;
}

/* Fills t from one header entry; the data size bounds the offsets. */
static int st_parse_tensor(const st_file_t *f, const char *name, json_t *e, uint64_t data_size,
                           const uint8_t *data, st_tensor_t *t, st_span_t *span)
{
    if (!json_is_object(e)) {
        md_error("%s: tensor '%s': header entry is not an object", f->path, name);
        return -2;
    }
    json_t *jd = json_object_get(e, "dtype"), *js = json_object_get(e, "shape"),
           *jo = json_object_get(e, "data_offsets");
    if (!jd || !js || !jo) {
        md_error("%s: tensor '%s': missing '%s'", f->path, name,
                 !jd ? "dtype" : !js ? "shape" : "data_offsets");
        return -2;
    }
    if (!json_is_string(jd)) {
        md_error("%s: tensor '%s': dtype is not a string", f->path, name);
        return -2;
    }
    int dt = st_dtype_parse(json_string_value(jd));
    if (dt < 0) {
        md_error("%s: tensor '%s': unsupported dtype '%s' (supported: F32 F16 BF16 F64 I64 I32 U8)",
                 f->path, name, json_string_value(jd));
        return -2;
    }
    t->dtype = (st_dtype_t)dt;

    if (!json_is_array(js)) {
        md_error("%s: tensor '%s': shape is not a list", f->path, name);
        return -2;
    }
    size_t ndim = json_array_size(js);
    if (ndim > ST_MAX_DIM) {
        md_error("%s: tensor '%s': shape has %zu dimensions (at most %d supported)", f->path, name,
                 ndim, ST_MAX_DIM);
        return -2;
    }
    t->ndim = (int)ndim;
    /* numel, and the product of the non-zero dims, must fit: code downstream multiplies dims */
    int64_t numel = 1, nz = 1;
    for (size_t i = 0; i < ndim; ++i) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0) {
            md_error("%s: tensor '%s': shape[%zu] is not a non-negative integer", f->path, name, i);
            return -2;
        }
        int64_t v = json_integer_value(d);
        if (v > 0 && nz > INT64_MAX / v) {
            md_error("%s: tensor '%s': shape overflows (dimension %zu = %lld)", f->path, name, i,
                     (long long)v);
            return -2;
        }
        if (v > 0) nz *= v;
        numel *= v;
        t->shape[i] = v;
    }
    size_t esize = st_types[dt].size, nbytes;
    if ((uint64_t)numel > SIZE_MAX || md_mul_size((size_t)numel, esize, &nbytes) < 0 ||
        (uint64_t)nbytes > (uint64_t)INT64_MAX) {
        md_error("%s: tensor '%s': size of %lld %s elements overflows", f->path, name,
                 (long long)numel, st_types[dt].name);
        return -2;
    }
    t->numel = numel;
    t->nbytes = nbytes;

    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1))) {
        md_error("%s: tensor '%s': data_offsets is not a list of two integers", f->path, name);
        return -2;
    }
    json_int_t b = json_integer_value(json_array_get(jo, 0)), en = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || en < 0 || b > en) {
        md_error("%s: tensor '%s': invalid data_offsets [%lld, %lld]", f->path, name, (long long)b,
                 (long long)en);
        return -2;
    }
    if ((uint64_t)en > data_size) {
        md_error("%s: tensor '%s': data_offsets [%lld, %lld] past the end of the data (%llu bytes)",
                 f->path, name, (long long)b, (long long)en, (unsigned long long)data_size);
        return -2;
    }
    if ((uint64_t)(en - b) != (uint64_t)nbytes) {
        md_error("%s: tensor '%s': data_offsets [%lld, %lld] hold %lld bytes but %s with %lld "
                 "elements needs %zu",
                 f->path, name, (long long)b, (long long)en, (long long)(en - b),
                 st_types[dt].name, (long long)numel, nbytes);
        return -2;
    }
    t->data = data + b;
    span->begin = (uint64_t)b;
    span->end = (uint64_t)en;
    return 0;
}

st_file_t *st_open(const char *path)
{
    st_file_t *f = NULL;
    json_t *root = NULL;
    st_span_t *spans = NULL;
    int fd = -1;
    struct stat st;

    if (!path) {
        md_error("no path given");
        return NULL;
    }
    if (!(f = md_calloc(1, sizeof *f)) || !(f->path = st_strdup(path))) goto fail;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        md_error("%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    if (fstat(fd, &st) < 0) {
        md_error("%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        md_error("%s: not a regular file", path);
        goto fail;
    }
    if (st.st_size == 0) {
        md_error("%s: empty file (not a safetensors file)", path);
        goto fail;
    }
    if (st.st_size < 8) {
        md_error("%s: file too short (%lld bytes) for a safetensors header", path,
                 (long long)st.st_size);
        goto fail;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        md_error("%s: file too large to map", path);
        goto fail;
    }
    f->map_size = (size_t)st.st_size;
    void *map = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        md_error("%s: cannot map %zu bytes: %s", path, f->map_size, strerror(errno));
        goto fail;
    }
    f->map = map;
    close(fd);
    fd = -1;

    const uint8_t *p = f->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; --i) hlen = hlen << 8 | p[i];
    if (hlen == 0) {
        md_error("%s: header length is 0", path);
        goto fail;
    }
    if (hlen > f->map_size - 8) {
        md_error("%s: header length %llu past the end of the file (%zu bytes)", path,
                 (unsigned long long)hlen, f->map_size);
        goto fail;
    }
    if (hlen > ST_MAX_HEADER) {
        md_error("%s: header length %llu above the limit of %llu bytes", path,
                 (unsigned long long)hlen, ST_MAX_HEADER);
        goto fail;
    }
    json_error_t jerr;
    root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        md_error("%s: header is not valid JSON: %s (line %d, column %d)", path, jerr.text,
                 jerr.line, jerr.column);
        goto fail;
    }
    if (!json_is_object(root)) {
        md_error("%s: header is not a JSON object", path);
        goto fail;
    }

    const uint8_t *data = p + 8 + hlen;
    uint64_t data_size = f->map_size - 8 - hlen;
    json_t *meta = json_object_get(root, "__metadata__");
    size_t n = json_object_size(root) - (meta != NULL);
    if (n > (size_t)INT32_MAX) {
        md_error("%s: too many tensors (%zu)", path, n);
        goto fail;
    }
    if (meta && st_parse_meta(f, meta) < 0) goto fail;
    if (!(f->t = md_calloc(n, sizeof *f->t)) || !(spans = md_calloc(n, sizeof *spans))) goto fail;
    f->n = (int)n;

    const char *key;
    json_t *e;
    int i = 0;
    json_object_foreach(root, key, e) {
        if (e == meta) continue;
        st_tensor_t *t = &f->t[i];
        if (!(t->name = st_strdup(key))) goto fail;
        if (st_parse_tensor(f, key, e, data_size, data, t, &spans[i]) < 0) goto fail;
        spans[i].idx = i;
        ++i;
    }

    /* Overlaps: sorted by begin, each non-empty tensor must start at or after the end of the
     * previous non-empty one (empty tensors hold no bytes and may sit anywhere). */
    qsort(spans, n, sizeof *spans, st_span_cmp);
    const st_span_t *prev = NULL;
    for (size_t k = 0; k < n; ++k) {
        if (spans[k].begin == spans[k].end) continue;
        if (prev && spans[k].begin < prev->end) {
            md_error("%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", path,
                     f->t[prev->idx].name, (unsigned long long)prev->begin,
                     (unsigned long long)prev->end, f->t[spans[k].idx].name,
                     (unsigned long long)spans[k].begin, (unsigned long long)spans[k].end);
            goto fail;
        }
        prev = &spans[k];
    }
    free(spans);
    json_decref(root);
    return f;

fail:
    if (fd >= 0) close(fd);
    free(spans);
    json_decref(root);
    st_close(f);
    return NULL;
}

const st_tensor_t *st_find(const st_file_t *f, const char *name)
{
    if (!f || !name) return NULL;
    for (int i = 0; i < f->n; ++i)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}

const char *st_meta(const st_file_t *f, const char *key)
{
    if (!f || !key) return NULL;
    for (int i = 0; i < f->n_meta; ++i)
        if (strcmp(f->meta_key[i], key) == 0) return f->meta_val[i];
    return NULL;
}

int st_read_f32(const st_tensor_t *t, float *dst)
{
    if (!t || (!dst && t->numel)) {
        md_error("no tensor or no destination given");
        return -2;
    }
    const uint8_t *s = t->data;
    size_t n = (size_t)t->numel;
    switch (t->dtype) {
    case ST_F32:
        if (n) memcpy(dst, s, n * 4);
        return 0;
    case ST_F16:
    case ST_BF16:
        for (size_t i = 0; i < n; ++i) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = t->dtype == ST_F16 ? st_f16_to_f32(h) : st_bf16_to_f32(h);
        }
        return 0;
    case ST_F64:
        for (size_t i = 0; i < n; ++i) {
            double d;
            memcpy(&d, s + 8 * i, 8);
            dst[i] = (float)d; /* IEEE: out of range becomes +-inf */
        }
        return 0;
    default:
        md_error("tensor '%s': dtype %s cannot be read as float", t->name ? t->name : "?",
                 st_dtype_name(t->dtype));
        return -2;
    }
}

int st_read_i64(const st_tensor_t *t, int64_t *dst)
{
    if (!t || (!dst && t->numel)) {
        md_error("no tensor or no destination given");
        return -2;
    }
    const uint8_t *s = t->data;
    size_t n = (size_t)t->numel;
    switch (t->dtype) {
    case ST_I64:
        if (n) memcpy(dst, s, n * 8);
        return 0;
    case ST_I32:
        for (size_t i = 0; i < n; ++i) {
            int32_t v;
            memcpy(&v, s + 4 * i, 4);
            dst[i] = v;
        }
        return 0;
    default:
        md_error("tensor '%s': dtype %s cannot be read as int64", t->name ? t->name : "?",
                 st_dtype_name(t->dtype));
        return -2;
    }
}

/* ---- writer -------------------------------------------------------------------------------- */

/* Builds the header object and the data size of each tensor; NULL on error (logged). */
static json_t *st_build_header(const char *path, const st_wtensor_t *t, int n,
                               const char *const *meta_kv, int n_meta, size_t *nbytes)
{
    json_t *root = json_object(), *meta = NULL;
    if (!root) goto oom;
    if (n_meta > 0) {
        if (!(meta = json_object()) || json_object_set_new(root, "__metadata__", meta) < 0) goto oom;
        for (int i = 0; i < n_meta; ++i) {
            const char *k = meta_kv[2 * i], *v = meta_kv[2 * i + 1];
            if (!k || !v) {
                md_error("%s: metadata entry %d has no %s", path, i, !k ? "key" : "value");
                goto fail;
            }
            if (json_object_get(meta, k)) {
                md_error("%s: duplicate metadata key '%s'", path, k);
                goto fail;
            }
            json_t *js = json_string(v);
            if (!js) {
                md_error("%s: metadata value of '%s' is not valid UTF-8", path, k);
                goto fail;
            }
            if (json_object_set_new(meta, k, js) < 0) {
                md_error("%s: metadata key '%s' is not valid UTF-8", path, k);
                goto fail;
            }
        }
    }
    uint64_t off = 0;
    for (int i = 0; i < n; ++i) {
        const st_wtensor_t *w = &t[i];
        if (!w->name) {
            md_error("%s: tensor %d has no name", path, i);
            goto fail;
        }
        if (strcmp(w->name, "__metadata__") == 0 || json_object_get(root, w->name)) {
            md_error("%s: tensor '%s': duplicate or reserved name", path, w->name);
            goto fail;
        }
        if ((unsigned)w->dtype >= ST_NDTYPES) {
            md_error("%s: tensor '%s': invalid dtype %d", path, w->name, (int)w->dtype);
            goto fail;
        }
        if (w->ndim < 0 || w->ndim > ST_MAX_DIM) {
            md_error("%s: tensor '%s': invalid number of dimensions %d", path, w->name, w->ndim);
            goto fail;
        }
        json_t *probe = json_string(w->name); /* NULL for a name that is not valid UTF-8 */
        if (!probe) {
            md_error("%s: tensor %d: name is not valid UTF-8", path, i);
            goto fail;
        }
        json_decref(probe);
        /* the *_set_new calls take the reference even when they fail */
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        if (json_object_set_new(root, w->name, e) < 0) {
            json_decref(shape);
            json_decref(offs);
            goto oom;
        }
        int rc = json_object_set_new(e, "dtype", json_string(st_types[w->dtype].name));
        rc |= json_object_set_new(e, "shape", shape);
        rc |= json_object_set_new(e, "data_offsets", offs);
        if (rc < 0) goto oom;
        size_t numel = 1;
        for (int d = 0; d < w->ndim; ++d) {
            if (w->shape[d] < 0 || (uint64_t)w->shape[d] > SIZE_MAX ||
                md_mul_size(numel, (size_t)w->shape[d], &numel) < 0) {
                md_error("%s: tensor '%s': invalid or overflowing shape[%d] = %lld", path, w->name,
                         d, (long long)w->shape[d]);
                goto fail;
            }
            if (json_array_append_new(shape, json_integer(w->shape[d])) < 0) goto oom;
        }
        if (md_mul_size(numel, st_types[w->dtype].size, &nbytes[i]) < 0 ||
            nbytes[i] > (uint64_t)INT64_MAX - off) {
            md_error("%s: tensor '%s': data size overflows", path, w->name);
            goto fail;
        }
        if (nbytes[i] && !w->data) {
            md_error("%s: tensor '%s': no data given", path, w->name);
            goto fail;
        }
        if (json_array_append_new(offs, json_integer((json_int_t)off)) < 0 ||
            json_array_append_new(offs, json_integer((json_int_t)(off + nbytes[i]))) < 0)
            goto oom;
        off += nbytes[i];
    }
    return root;
oom:
    md_error("%s: out of memory building the header", path);
fail:
    json_decref(root);
    return NULL;
}

int st_write(const char *path, const st_wtensor_t *t, int n, const char *const *meta_kv, int n_meta)
{
    json_t *root = NULL;
    char *hdr = NULL, *tmp = NULL;
    size_t *nbytes = NULL;
    FILE *fp = NULL;
    int ret = -2, created = 0;

    if (!path || n < 0 || n_meta < 0 || (n && !t) || (n_meta && !meta_kv)) {
        md_error("%s: invalid arguments", path ? path : "(null)");
        return -2;
    }
    if (!(nbytes = md_calloc(n ? (size_t)n : 1, sizeof *nbytes))) goto fail;
    if (!(root = st_build_header(path, t, n, meta_kv, n_meta, nbytes))) goto fail;
    if (!(hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER))) {
        md_error("%s: cannot serialise the header", path);
        goto fail;
    }
    size_t len = strlen(hdr), padded = (len + 7) & ~(size_t)7;
    if (padded > ST_MAX_HEADER) {
        md_error("%s: header of %zu bytes is above the limit of %llu", path, padded, ST_MAX_HEADER);
        goto fail;
    }

    size_t tlen = strlen(path) + 32;
    if (!(tmp = md_malloc(tlen))) goto fail;
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    if (!(fp = md_create_exclusive(tmp))) {
        md_error("%s: cannot create: %s", tmp, strerror(errno));
        goto fail;
    }
    created = 1;
    uint8_t le[8];
    for (int i = 0; i < 8; ++i) le[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "        ";
    errno = 0;
    if (fwrite(le, 1, 8, fp) != 8 || fwrite(hdr, 1, len, fp) != len ||
        fwrite(spaces, 1, padded - len, fp) != padded - len)
        goto write_fail;
    for (int i = 0; i < n; ++i)
        if (nbytes[i] && fwrite(t[i].data, 1, nbytes[i], fp) != nbytes[i]) goto write_fail;
    if (fflush(fp) != 0 || ferror(fp)) goto write_fail;
    int rc = fclose(fp);
    fp = NULL;
    if (rc != 0) goto write_fail;
    if (rename(tmp, path) < 0) {
        md_error("%s: cannot rename %s to it: %s", path, tmp, strerror(errno));
        goto fail;
    }
    created = 0;
    ret = 0;
    goto done;

write_fail:
    md_error("%s: write failed: %s", tmp, errno ? strerror(errno) : "I/O error");
fail:
done:
    if (fp) fclose(fp);
    if (created) unlink(tmp);
    free(tmp);
    free(hdr);
    free(nbytes);
    json_decref(root);
    return ret;
}
