/* npy.c: NumPy .npy reader, whole-array writer and streaming row writer (see npy.h).
 * Layout: "\x93NUMPY" | major | minor | header length (u16 LE in 1.0, u32 LE in 2.0/3.0) | header:
 * a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (r, c), } padded with
 * spaces and ended by '\n' so that the data starts on a 64-byte boundary | data, C order, LE.
 * The streaming writer reserves a 128-byte header, rewritten in place with the final row count. */
#include "npy.h"

#include "md.h"
#include "safetensors.h" /* F16 conversions */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c reads and writes little-endian data in place: big-endian hosts are not supported"
#endif

#define NPY_MAX_DIM 8
#define NPY_MAX_HEADER (1u << 20) /* our dtypes need a few hundred bytes; refuse silly sizes */
#define NPY_STREAM_HEADER 128     /* total bytes before the data in streamed files */

static const struct {
    const char *descr;
    size_t size;
} npy_types[] = {
    [NPY_F32] = {"<f4", 4}, [NPY_F16] = {"<f2", 2}, [NPY_I32] = {"<i4", 4},
    [NPY_I64] = {"<i8", 8}, [NPY_U8] = {"|u1", 1},  [NPY_F64] = {"<f8", 8},
};
#define NPY_NTYPES ((int)(sizeof npy_types / sizeof npy_types[0]))

static const uint8_t npy_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

/* ---- header parsing ------------------------------------------------------------------------ */

typedef struct {
    const char *p, *beg, *end;
    const char *path;
} npy_lex_t;

static void lex_ws(npy_lex_t *l)
{
    while (l->p < l->end && (*l->p == ' ' || *l->p == '\t' || *l->p == '\n' || *l->p == '\r'))
        ++l->p;
}

static int lex_fail(npy_lex_t *l, const char *what)
{
    md_error("%s: malformed NPY header at byte %td: expected %s", l->path, l->p - l->beg, what);
    return -2;
}

static int lex_char(npy_lex_t *l, char c)
{
    lex_ws(l);
    if (l->p < l->end && *l->p == c) {
        ++l->p;
        return 1;
    }
    return 0;
}

/* A quoted string without escapes; on success s and n give it inside the header. */
static int lex_str(npy_lex_t *l, const char **s, size_t *n)
{
    lex_ws(l);
    if (l->p >= l->end || (*l->p != '\'' && *l->p != '"')) return lex_fail(l, "a quoted string");
    char q = *l->p++;
    const char *b = l->p;
    while (l->p < l->end && *l->p != q) {
        if (*l->p == '\\' || *l->p == '\n') return lex_fail(l, "a string without escapes");
        ++l->p;
    }
    if (l->p >= l->end) return lex_fail(l, "a closing quote");
    *s = b;
    *n = (size_t)(l->p - b);
    ++l->p;
    return 0;
}

static int lex_word(npy_lex_t *l, const char *w)
{
    size_t n = strlen(w);
    lex_ws(l);
    if ((size_t)(l->end - l->p) >= n && memcmp(l->p, w, n) == 0) {
        l->p += n;
        return 1;
    }
    return 0;
}

/* A non-negative integer (Python 2 files may end it with 'L'). */
static int lex_int(npy_lex_t *l, int64_t *v)
{
    lex_ws(l);
    if (l->p >= l->end || *l->p < '0' || *l->p > '9') return lex_fail(l, "a non-negative integer");
    int64_t x = 0;
    while (l->p < l->end && *l->p >= '0' && *l->p <= '9') {
        int d = *l->p++ - '0';
        if (x > (INT64_MAX - d) / 10) {
            md_error("%s: NPY header: shape value too large", l->path);
            return -2;
        }
        x = x * 10 + d;
    }
    if (l->p < l->end && *l->p == 'L') ++l->p;
    *v = x;
    return 0;
}

typedef struct {
    char descr[16];
    int fortran;
    int ndim;
    int64_t shape[NPY_MAX_DIM];
} npy_header_t;

static int npy_parse_shape(npy_lex_t *l, npy_header_t *h)
{
    if (!lex_char(l, '(')) return lex_fail(l, "'(' opening the shape");
    h->ndim = 0;
    if (lex_char(l, ')')) return 0;
    for (;;) {
        int64_t v;
        if (h->ndim == NPY_MAX_DIM) {
            md_error("%s: NPY header: shape has more than %d dimensions", l->path, NPY_MAX_DIM);
            return -2;
        }
        if (lex_int(l, &v) < 0) return -2;
        h->shape[h->ndim++] = v;
        if (lex_char(l, ')')) return 0;
        if (!lex_char(l, ',')) return lex_fail(l, "',' or ')' in the shape");
        if (lex_char(l, ')')) return 0;
    }
}

/* Parses the dict; every one of descr, fortran_order and shape must appear exactly once. */
static int npy_parse_header(const char *path, const char *buf, size_t len, npy_header_t *h)
{
    npy_lex_t l = {buf, buf, buf + len, path};
    int seen = 0;
    memset(h, 0, sizeof *h);
    if (!lex_char(&l, '{')) return lex_fail(&l, "'{'");
    while (!lex_char(&l, '}')) {
        const char *k;
        size_t kn;
        int bit;
        if (lex_str(&l, &k, &kn) < 0) return -2;
        if (!lex_char(&l, ':')) return lex_fail(&l, "':' after a key");
        if (kn == 5 && memcmp(k, "descr", 5) == 0) {
            const char *s;
            size_t sn;
            bit = 1;
            if (lex_str(&l, &s, &sn) < 0) return -2;
            if (sn >= sizeof h->descr) {
                md_error("%s: unsupported dtype '%.*s'", path, (int)(sn < 64 ? sn : 64), s);
                return -2;
            }
            memcpy(h->descr, s, sn);
            h->descr[sn] = 0;
        } else if (kn == 13 && memcmp(k, "fortran_order", 13) == 0) {
            bit = 2;
            if (lex_word(&l, "True")) h->fortran = 1;
            else if (lex_word(&l, "False")) h->fortran = 0;
            else return lex_fail(&l, "True or False");
        } else if (kn == 5 && memcmp(k, "shape", 5) == 0) {
            bit = 4;
            if (npy_parse_shape(&l, h) < 0) return -2;
        } else {
            md_error("%s: NPY header: unexpected key '%.*s'", path, (int)(kn < 64 ? kn : 64), k);
            return -2;
        }
        if (seen & bit) {
            md_error("%s: NPY header: key '%.*s' appears twice", path, (int)kn, k);
            return -2;
        }
        seen |= bit;
        if (lex_char(&l, '}')) break;
        if (!lex_char(&l, ',')) return lex_fail(&l, "',' or '}'");
    }
    lex_ws(&l);
    if (l.p != l.end) return lex_fail(&l, "only padding after '}'");
    if (seen != 7) {
        md_error("%s: NPY header lacks '%s'", path,
                 !(seen & 1) ? "descr" : !(seen & 2) ? "fortran_order" : "shape");
        return -2;
    }
    return 0;
}

/* ---- reader -------------------------------------------------------------------------------- */

void npy_free(npy_array_t *a)
{
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

static int npy_dtype_of(const char *path, const char *descr)
{
    for (int i = 0; i < NPY_NTYPES; ++i)
        if (strcmp(descr, npy_types[i].descr) == 0) return i;
    if (strcmp(descr, "<u1") == 0) return NPY_U8;
    if (descr[0] == '>' && descr[1] && descr[2])
        md_error("%s: big-endian dtype '%s' is not supported (convert with .astype('<%s'))", path,
                 descr, descr + 1);
    else
        md_error("%s: unsupported dtype '%s' (supported: <f4 <f2 <f8 <i4 <i8 |u1)", path, descr);
    return -2;
}

int npy_read(const char *path, npy_array_t *a)
{
    FILE *fp = NULL;
    char *hbuf = NULL;
    struct stat st;
    npy_header_t h;
    int ret = -2;

    if (!a) {
        md_error("no array given");
        return -2;
    }
    memset(a, 0, sizeof *a);
    if (!path) {
        md_error("no path given");
        return -2;
    }
    if (!(fp = fopen(path, "rb"))) {
        md_error("%s: cannot open: %s", path, strerror(errno));
        return -2;
    }
    if (fstat(fileno(fp), &st) < 0 || !S_ISREG(st.st_mode)) {
        md_error("%s: not a regular file", path);
        goto fail;
    }
    uint64_t fsize = (uint64_t)st.st_size;
    uint8_t pre[12];
    if (fsize == 0) {
        md_error("%s: empty file (not an NPY file)", path);
        goto fail;
    }
    if (fsize < 10 || fread(pre, 1, 10, fp) != 10) {
        md_error("%s: file too short (%llu bytes) for an NPY header", path, (unsigned long long)fsize);
        goto fail;
    }
    if (memcmp(pre, npy_magic, 6) != 0) {
        md_error("%s: not an NPY file (bad magic)", path);
        goto fail;
    }
    int major = pre[6], minor = pre[7];
    uint64_t hlen, prefix;
    if (major == 1 && minor == 0) {
        hlen = pre[8] | (uint32_t)pre[9] << 8;
        prefix = 10;
    } else if ((major == 2 || major == 3) && minor == 0) {
        if (fsize < 12 || fread(pre + 10, 1, 2, fp) != 2) {
            md_error("%s: file too short (%llu bytes) for an NPY %d.0 header", path,
                     (unsigned long long)fsize, major);
            goto fail;
        }
        hlen = pre[8] | (uint32_t)pre[9] << 8 | (uint32_t)pre[10] << 16 | (uint32_t)pre[11] << 24;
        prefix = 12;
    } else {
        md_error("%s: unsupported NPY format version %d.%d", path, major, minor);
        goto fail;
    }
    if (hlen > fsize - prefix) {
        md_error("%s: header length %llu past the end of the file (%llu bytes)", path,
                 (unsigned long long)hlen, (unsigned long long)fsize);
        goto fail;
    }
    if (hlen > NPY_MAX_HEADER) {
        md_error("%s: header length %llu above the limit of %u bytes", path,
                 (unsigned long long)hlen, NPY_MAX_HEADER);
        goto fail;
    }
    if (!(hbuf = md_malloc(hlen ? hlen : 1))) goto fail;
    if (fread(hbuf, 1, hlen, fp) != hlen) {
        md_error("%s: cannot read the header: %s", path, ferror(fp) ? strerror(errno) : "short read");
        goto fail;
    }
    if (npy_parse_header(path, hbuf, hlen, &h) < 0) goto fail;
    int dt = npy_dtype_of(path, h.descr);
    if (dt < 0) goto fail;
    if (h.fortran) {
        md_error("%s: Fortran-order arrays are not supported (save a C-order array, e.g. with "
                 "numpy.ascontiguousarray)", path);
        goto fail;
    }
    int64_t numel = 1, nz = 1;
    for (int i = 0; i < h.ndim; ++i) {
        int64_t v = h.shape[i];
        if (v > 0 && nz > INT64_MAX / v) {
            md_error("%s: shape overflows (dimension %d = %lld)", path, i, (long long)v);
            goto fail;
        }
        if (v > 0) nz *= v;
        numel *= v;
    }
    size_t esize = npy_types[dt].size, nbytes;
    if ((uint64_t)numel > SIZE_MAX || md_mul_size((size_t)numel, esize, &nbytes) < 0 ||
        (uint64_t)nbytes > (uint64_t)INT64_MAX) {
        md_error("%s: data size of %lld elements overflows", path, (long long)numel);
        goto fail;
    }
    uint64_t avail = fsize - prefix - hlen;
    if ((uint64_t)nbytes > avail) {
        md_error("%s: data truncated: shape needs %zu bytes of %s, the file holds %llu", path, nbytes,
                 npy_types[dt].descr, (unsigned long long)avail);
        goto fail;
    }
    if ((uint64_t)nbytes < avail) {
        md_error("%s: %llu bytes of unexpected data after the array", path,
                 (unsigned long long)(avail - nbytes));
        goto fail;
    }
    if (!(a->data = md_malloc(nbytes))) goto fail;
    if (nbytes && fread(a->data, 1, nbytes, fp) != nbytes) {
        md_error("%s: cannot read the data: %s", path, ferror(fp) ? strerror(errno) : "short read");
        goto fail;
    }
    a->dtype = (npy_dtype_t)dt;
    a->ndim = h.ndim;
    memcpy(a->shape, h.shape, sizeof h.shape);
    a->numel = numel;
    ret = 0;
fail:
    if (ret < 0) npy_free(a);
    free(hbuf);
    fclose(fp);
    return ret;
}

float *npy_to_f32(const npy_array_t *a)
{
    if (!a || (!a->data && a->numel) || a->numel < 0 || (uint64_t)a->numel > SIZE_MAX / 4) {
        md_error("invalid array");
        return NULL;
    }
    size_t n = (size_t)a->numel;
    float *d = md_malloc(n * sizeof(float));
    if (!d) return NULL;
    const uint8_t *s = a->data;
    for (size_t i = 0; i < n; ++i) {
        switch (a->dtype) {
        case NPY_F32: { float v; memcpy(&v, s + 4 * i, 4); d[i] = v; break; }
        case NPY_F16: { uint16_t v; memcpy(&v, s + 2 * i, 2); d[i] = st_f16_to_f32(v); break; }
        case NPY_I32: { int32_t v; memcpy(&v, s + 4 * i, 4); d[i] = (float)v; break; }
        case NPY_I64: { int64_t v; memcpy(&v, s + 8 * i, 8); d[i] = (float)v; break; }
        case NPY_U8: d[i] = s[i]; break;
        case NPY_F64: { double v; memcpy(&v, s + 8 * i, 8); d[i] = (float)v; break; }
        default:
            md_error("invalid dtype %d", (int)a->dtype);
            free(d);
            return NULL;
        }
    }
    return d;
}

/* ---- writers ------------------------------------------------------------------------------- */

/* Fills buf with the complete preamble (magic, version, length, dict, padding, '\n').
 * total: 0 for the smallest multiple of 64, else exactly that many bytes. Returns the length
 * or < -1 when it does not fit. */
static int64_t npy_preamble(const char *path, char *buf, size_t cap, npy_dtype_t dt, int ndim,
                            const int64_t *shape, size_t total)
{
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     npy_types[dt].descr);
    for (int i = 0; i < ndim; ++i)
        n += snprintf(dict + n, sizeof dict - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    n += snprintf(dict + n, sizeof dict - n, "%s), }", ndim == 1 ? "," : "");
    /* version 1.0 (2-byte length) always suffices: the dict stays below 512 bytes */
    size_t need = 10 + (size_t)n + 1, len = total ? total : (need + 63) & ~(size_t)63;
    if (len < need || len > cap) {
        md_error("%s: NPY header does not fit in %zu bytes", path, total ? total : cap);
        return -2;
    }
    size_t hlen = len - 10;
    memcpy(buf, npy_magic, 6);
    buf[6] = 1;
    buf[7] = 0;
    buf[8] = (char)(hlen & 0xff);
    buf[9] = (char)(hlen >> 8);
    memcpy(buf + 10, dict, (size_t)n);
    memset(buf + 10 + n, ' ', len - 10 - (size_t)n - 1);
    buf[len - 1] = '\n';
    return (int64_t)len;
}

static char *npy_tmp_name(const char *path)
{
    size_t n = strlen(path) + 32;
    char *t = md_malloc(n);
    if (t) snprintf(t, n, "%s.tmp.%ld", path, (long)getpid());
    return t;
}

/* fflush + fclose with checks; closes fp in every case. */
static int npy_finish(FILE *fp, const char *tmp)
{
    errno = 0;
    int bad = fflush(fp) != 0 || ferror(fp);
    int e = errno;
    if (fclose(fp) != 0 && !bad) bad = 1, e = errno;
    if (bad) {
        md_error("%s: write failed: %s", tmp, e ? strerror(e) : "I/O error");
        return -2;
    }
    return 0;
}

int npy_write(const char *path, npy_dtype_t dtype, int ndim, const int64_t *shape, const void *data)
{
    char pre[640], *tmp = NULL;
    FILE *fp = NULL;
    int ret = -2;

    if (!path || (unsigned)dtype >= (unsigned)NPY_NTYPES || ndim < 0 || ndim > NPY_MAX_DIM ||
        (ndim && !shape)) {
        md_error("%s: invalid arguments", path ? path : "(null)");
        return -2;
    }
    size_t numel = 1, nbytes;
    for (int i = 0; i < ndim; ++i)
        if (shape[i] < 0 || (uint64_t)shape[i] > SIZE_MAX ||
            md_mul_size(numel, (size_t)shape[i], &numel) < 0) {
            md_error("%s: invalid or overflowing shape[%d] = %lld", path, i, (long long)shape[i]);
            return -2;
        }
    if (md_mul_size(numel, npy_types[dtype].size, &nbytes) < 0 || (uint64_t)nbytes > INT64_MAX) {
        md_error("%s: data size overflows", path);
        return -2;
    }
    if (nbytes && !data) {
        md_error("%s: no data given", path);
        return -2;
    }
    int64_t plen = npy_preamble(path, pre, sizeof pre, dtype, ndim, shape, 0);
    if (plen < 0) return -2;
    if (!(tmp = npy_tmp_name(path))) return -2;
    if (!(fp = md_create_exclusive(tmp))) {
        md_error("%s: cannot create: %s", tmp, strerror(errno));
        goto fail;
    }
    errno = 0;
    if (fwrite(pre, 1, (size_t)plen, fp) != (size_t)plen ||
        (nbytes && fwrite(data, 1, nbytes, fp) != nbytes)) {
        md_error("%s: write failed: %s", tmp, errno ? strerror(errno) : "I/O error");
        fclose(fp);
        goto fail_rm;
    }
    if (npy_finish(fp, tmp) < 0) goto fail_rm;
    if (rename(tmp, path) < 0) {
        md_error("%s: cannot rename %s to it: %s", path, tmp, strerror(errno));
        goto fail_rm;
    }
    ret = 0;
    goto fail;
fail_rm:
    unlink(tmp);
fail:
    free(tmp);
    return ret;
}

struct npy_writer {
    FILE *fp;
    char *path, *tmp;
    npy_dtype_t dtype;
    int64_t ncols, nrows;
    int failed, created; /* created: the temporary file exists and must go on failure */
};

npy_writer_t *npy_writer_open(const char *path, npy_dtype_t dtype, int64_t ncols)
{
    npy_writer_t *w = NULL;
    if (!path || strcmp(path, "-") == 0) {
        md_error("%s: the NPY writer needs a seekable file", path ? path : "(null)");
        return NULL;
    }
    if (dtype != NPY_F32 && dtype != NPY_F16) {
        md_error("%s: the NPY row writer stores only float32 or float16", path);
        return NULL;
    }
    if (ncols <= 0 || ncols > INT64_MAX / 8) {
        md_error("%s: invalid number of columns %lld", path, (long long)ncols);
        return NULL;
    }
    if (!(w = md_calloc(1, sizeof *w))) return NULL;
    w->dtype = dtype;
    w->ncols = ncols;
    size_t n = strlen(path) + 1;
    if (!(w->path = md_malloc(n)) || !(w->tmp = npy_tmp_name(path))) goto fail;
    memcpy(w->path, path, n);
    if (!(w->fp = md_create_exclusive(w->tmp))) {
        md_error("%s: cannot create: %s", w->tmp, strerror(errno));
        goto fail;
    }
    w->created = 1;
    /* a valid (empty) array from the start; the row count is filled in on close */
    char pre[NPY_STREAM_HEADER];
    int64_t shape[2] = {0, ncols};
    if (npy_preamble(path, pre, sizeof pre, dtype, 2, shape, NPY_STREAM_HEADER) < 0) goto fail;
    errno = 0;
    if (fwrite(pre, 1, sizeof pre, w->fp) != sizeof pre) {
        md_error("%s: write failed: %s", w->tmp, errno ? strerror(errno) : "I/O error");
        goto fail;
    }
    return w;
fail:
    npy_writer_abort(w);
    return NULL;
}

int npy_writer_append(npy_writer_t *w, const float *rows, int64_t nrows)
{
    if (!w) {
        md_error("no writer given");
        return -2;
    }
    if (w->failed) return -2; /* already logged */
    if (nrows < 0 || (nrows && !rows)) {
        md_error("%s: invalid rows (%lld)", w->path, (long long)nrows);
        return -2;
    }
    size_t esize = npy_types[w->dtype].size;
    if (nrows > INT64_MAX - w->nrows || w->nrows + nrows > INT64_MAX / w->ncols / (int64_t)esize ||
        (uint64_t)(nrows * w->ncols) > SIZE_MAX / esize) {
        md_error("%s: too many rows (%lld + %lld of %lld columns)", w->path, (long long)w->nrows,
                 (long long)nrows, (long long)w->ncols);
        w->failed = 1;
        return -2;
    }
    size_t n = (size_t)(nrows * w->ncols);
    errno = 0;
    if (w->dtype == NPY_F32) {
        if (n && fwrite(rows, sizeof(float), n, w->fp) != n) goto write_fail;
    } else {
        uint16_t buf[4096];
        for (size_t i = 0; i < n;) {
            size_t m = n - i < 4096 ? n - i : 4096;
            for (size_t j = 0; j < m; ++j) buf[j] = st_f32_to_f16(rows[i + j]);
            if (fwrite(buf, 2, m, w->fp) != m) goto write_fail;
            i += m;
        }
    }
    w->nrows += nrows;
    return 0;
write_fail:
    md_error("%s: write failed: %s", w->tmp, errno ? strerror(errno) : "I/O error");
    w->failed = 1;
    return -2;
}

int npy_writer_close(npy_writer_t *w)
{
    if (!w) {
        md_error("no writer given");
        return -2;
    }
    if (w->failed) goto fail;
    char pre[NPY_STREAM_HEADER];
    int64_t shape[2] = {w->nrows, w->ncols};
    if (npy_preamble(w->path, pre, sizeof pre, w->dtype, 2, shape, NPY_STREAM_HEADER) < 0) goto fail;
    errno = 0;
    if (fseek(w->fp, 0, SEEK_SET) != 0 || fwrite(pre, 1, sizeof pre, w->fp) != sizeof pre) {
        md_error("%s: cannot rewrite the header: %s", w->tmp, errno ? strerror(errno) : "I/O error");
        goto fail;
    }
    FILE *fp = w->fp;
    w->fp = NULL;
    if (npy_finish(fp, w->tmp) < 0) goto fail;
    if (rename(w->tmp, w->path) < 0) {
        md_error("%s: cannot rename %s to it: %s", w->path, w->tmp, strerror(errno));
        goto fail;
    }
    w->created = 0;
    free(w->tmp);
    free(w->path);
    free(w);
    return 0;
fail:
    npy_writer_abort(w);
    return -2;
}

void npy_writer_abort(npy_writer_t *w)
{
    if (!w) return;
    if (w->fp) fclose(w->fp);
    if (w->created) unlink(w->tmp);
    free(w->tmp);
    free(w->path);
    free(w);
}
