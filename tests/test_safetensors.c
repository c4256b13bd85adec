/* test_safetensors.c: safetensors reader/writer tests: F16/BF16 conversions (fixed values and an
 * exhaustive round trip), write/read round trips for every dtype, a hand-written Python/numpy
 * parser reading our files, corrupt headers and files (each must fail with a message naming the
 * file), and writer failures that must leave no file behind. Run from the repository root. */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <float.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "md.h"
#include "safetensors.h"

static char tmpdir[256];

static const char *tpath(const char *name)
{
    static char buf[8][512];
    static int k;
    k = (k + 1) & 7;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static int rm_cb(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb, (void)type, (void)ftw;
    return remove(p);
}

static int count_files(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    int n = 0;
    assert_non_null(d);
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') ++n;
    closedir(d);
    return n;
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "%s/md-test-st-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) return -1;
    md_log_level = MD_LOG_OFF; /* errors are still captured by md_last_error() */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static float f32_of(uint32_t x)
{
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static uint32_t bits_of(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    return x;
}

/* ---- conversions ----------------------------------------------------------------------------- */

static void test_f16_values(void **state)
{
    (void)state;
    assert_true(st_f16_to_f32(0x3c00) == 1.0f);
    assert_true(st_f16_to_f32(0xc100) == -2.5f);
    assert_true(st_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(st_f16_to_f32(0x0400) == ldexpf(1, -14));          /* smallest normal */
    assert_true(st_f16_to_f32(0x0001) == ldexpf(1, -24));          /* smallest subnormal */
    assert_true(st_f16_to_f32(0x03ff) == ldexpf(1023, -24));       /* largest subnormal */
    assert_true(st_f16_to_f32(0x8001) == -ldexpf(1, -24));
    assert_true(st_f16_to_f32(0x0000) == 0.0f && !signbit(st_f16_to_f32(0x0000)));
    assert_true(st_f16_to_f32(0x8000) == 0.0f && signbit(st_f16_to_f32(0x8000)));
    assert_true(isinf(st_f16_to_f32(0x7c00)) && st_f16_to_f32(0x7c00) > 0);
    assert_true(isinf(st_f16_to_f32(0xfc00)) && st_f16_to_f32(0xfc00) < 0);
    assert_true(isnan(st_f16_to_f32(0x7e00)));
    assert_true(isnan(st_f16_to_f32(0x7c01))); /* signalling NaN stays NaN */

    assert_int_equal(st_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(st_f32_to_f16(-2.5f), 0xc100);
    assert_int_equal(st_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(st_f32_to_f16(65519.0f), 0x7bff);  /* below the midpoint to 65536 */
    assert_int_equal(st_f32_to_f16(65520.0f), 0x7c00);  /* the midpoint: ties to even = inf */
    assert_int_equal(st_f32_to_f16(1e10f), 0x7c00);
    assert_int_equal(st_f32_to_f16(-1e10f), 0xfc00);
    assert_int_equal(st_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(st_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(st_f32_to_f16(FLT_MAX), 0x7c00);
    assert_true(isnan(st_f16_to_f32(st_f32_to_f16(NAN))));
    assert_true(isnan(st_f16_to_f32(st_f32_to_f16(f32_of(0x7f800001))))); /* sNaN, payload low */
    assert_int_equal(st_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(st_f32_to_f16(ldexpf(1, -14)), 0x0400);
    assert_int_equal(st_f32_to_f16(ldexpf(1, -24)), 0x0001);
    assert_int_equal(st_f32_to_f16(ldexpf(1, -25)), 0x0000);         /* tie -> even (0) */
    assert_int_equal(st_f32_to_f16(ldexpf(1.5f, -25)), 0x0001);      /* above the tie */
    assert_int_equal(st_f32_to_f16(ldexpf(3, -25)), 0x0002);         /* 1.5 ulp: tie -> 2 */
    assert_int_equal(st_f32_to_f16(ldexpf(5, -25)), 0x0002);         /* 2.5 ulp: tie -> 2 */
    assert_int_equal(st_f32_to_f16(ldexpf(1, -26)), 0x0000);
    assert_int_equal(st_f32_to_f16(-ldexpf(1, -30)), 0x8000);
    assert_int_equal(st_f32_to_f16(ldexpf(2047, -25)), 0x0400);      /* rounds up to normal */
    assert_int_equal(st_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00);  /* tie -> even */
    assert_int_equal(st_f32_to_f16(1.0f + ldexpf(3, -11)), 0x3c02);  /* tie -> even (up) */
    assert_int_equal(st_f32_to_f16(1.0f + ldexpf(1, -11) + ldexpf(1, -20)), 0x3c01);
    assert_int_equal(st_f32_to_f16(2047.5f), 0x6800);  /* 2048 */
}

static void test_f16_exhaustive(void **state)
{
    (void)state;
    /* every half survives half -> float -> half; NaNs stay NaN */
    for (uint32_t h = 0; h < 0x10000; ++h) {
        float f = st_f16_to_f32((uint16_t)h);
        uint16_t back = st_f32_to_f16(f);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            assert_true(isnan(f));
            assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff));
            assert_int_equal(back & 0x8000, h & 0x8000);
        } else {
            assert_int_equal(back, h);
        }
    }
    /* float -> half against the definition: the nearest half, ties to the even mantissa */
    for (uint64_t x = 0; x < 0x100000000ull; x += 4093) {
        float f = f32_of((uint32_t)x);
        if (isnan(f)) continue;
        uint16_t h = st_f32_to_f16(f);
        double v = fabs((double)f), got = fabs((double)st_f16_to_f32(h));
        assert_int_equal(h & 0x8000, (x >> 16) & 0x8000);
        if (v >= 65520.0) {
            assert_int_equal(h & 0x7fff, 0x7c00);
            continue;
        }
        /* neighbours of the result must not be closer */
        uint16_t mag = h & 0x7fff;
        double below = mag ? st_f16_to_f32(mag - 1) : -1, above = st_f16_to_f32(mag + 1);
        double d = fabs(v - got);
        if (mag) assert_true(d <= v - below);
        assert_true(d <= above - v);
        if (d == above - v || (mag && d == v - below)) assert_int_equal(mag & 1, 0);
    }
#ifdef __FLT16_MAX__
    /* and against the compiler's own conversion where it has one */
    for (uint64_t x = 0; x < 0x100000000ull; x += 1021) {
        float f = f32_of((uint32_t)x);
        if (isnan(f)) continue;
        _Float16 r = (_Float16)f;
        uint16_t rb;
        memcpy(&rb, &r, 2);
        assert_int_equal(st_f32_to_f16(f), rb);
    }
#endif
}

static void test_bf16_values(void **state)
{
    (void)state;
    assert_true(st_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(st_bf16_to_f32(0xc020) == -2.5f);
    assert_true(st_bf16_to_f32(0x0001) == f32_of(0x00010000)); /* subnormal */
    assert_true(isinf(st_bf16_to_f32(0x7f80)));
    assert_true(isnan(st_bf16_to_f32(0x7fc0)));
    assert_int_equal(st_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(st_f32_to_bf16(-2.5f), 0xc020);
    assert_int_equal(st_f32_to_bf16(65504.0f), 0x4780);                 /* rounds to 65536 */
    assert_int_equal(st_f32_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80);     /* tie -> even */
    assert_int_equal(st_f32_to_bf16(1.0f + ldexpf(3, -8)), 0x3f82);     /* tie -> even (up) */
    assert_int_equal(st_f32_to_bf16(FLT_MAX), 0x7f80);                  /* overflows to inf */
    assert_int_equal(st_f32_to_bf16(-INFINITY), 0xff80);
    assert_int_equal(st_f32_to_bf16(f32_of(0x00008000)), 0x0000);       /* subnormal tie */
    assert_true(isnan(st_bf16_to_f32(st_f32_to_bf16(NAN))));
    assert_true(isnan(st_bf16_to_f32(st_f32_to_bf16(f32_of(0x7f800001))))); /* would be inf */
    for (uint32_t h = 0; h < 0x10000; ++h) {
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f)) continue;
        assert_int_equal(st_f32_to_bf16(st_bf16_to_f32((uint16_t)h)), h);
    }
    (void)bits_of;
}

/* ---- round trips ----------------------------------------------------------------------------- */

/* Test data, reproduced by the Python checker below. */
#define N_F16 5
static const float f16_vals[N_F16] = {1.0f, -2.5f, 65504.0f, 0x1p-24f, -0x1p-14f};

static void fill(st_dtype_t dt, void *buf, int64_t n)
{
    for (int64_t i = 0; i < n; ++i) {
        double v = (double)(i - 3) * 0.25;
        switch (dt) {
        case ST_F32: ((float *)buf)[i] = (float)v; break;
        case ST_F64: ((double *)buf)[i] = v / 3.0; break;
        case ST_F16: ((uint16_t *)buf)[i] = st_f32_to_f16(f16_vals[i % N_F16]); break;
        case ST_BF16: ((uint16_t *)buf)[i] = st_f32_to_bf16((float)v * 1024.0f); break;
        case ST_I64: ((int64_t *)buf)[i] = (i - 2) * 1099511627781LL; break;
        case ST_I32: ((int32_t *)buf)[i] = (int32_t)(i * -7 + 1); break;
        case ST_U8: ((uint8_t *)buf)[i] = (uint8_t)(i * 37 % 256); break;
        default: break;
        }
    }
}

typedef struct {
    st_wtensor_t w[9];
    void *buf[9];
    int n;
} wset_t;

static void wset_add(wset_t *s, const char *name, st_dtype_t dt, int ndim, const int64_t *shape)
{
    st_wtensor_t *w = &s->w[s->n];
    int64_t numel = 1;
    memset(w, 0, sizeof *w);
    w->name = name;
    w->dtype = dt;
    w->ndim = ndim;
    for (int i = 0; i < ndim; ++i) w->shape[i] = shape[i], numel *= shape[i];
    s->buf[s->n] = calloc(numel ? (size_t)numel : 1, 8);
    fill(dt, s->buf[s->n], numel);
    w->data = s->buf[s->n];
    ++s->n;
}

/* F16 first with an odd count, so that every later tensor sits at an unaligned offset. */
static void wset_all(wset_t *s)
{
    memset(s, 0, sizeof *s);
    wset_add(s, "half", ST_F16, 1, (int64_t[]){N_F16});
    wset_add(s, "float.weight", ST_F32, 2, (int64_t[]){3, 4});
    wset_add(s, "brain", ST_BF16, 3, (int64_t[]){2, 1, 3});
    wset_add(s, "ids", ST_I64, 1, (int64_t[]){16});
    wset_add(s, "i32", ST_I32, 2, (int64_t[]){2, 5});
    wset_add(s, "bytes", ST_U8, 1, (int64_t[]){7});
    wset_add(s, "dbl", ST_F64, 0, NULL); /* scalar */
    wset_add(s, "empty", ST_F32, 2, (int64_t[]){0, 3});
    wset_add(s, "eight", ST_F32, 8, (int64_t[]){1, 2, 1, 1, 1, 1, 2, 1});
}

static void wset_free(wset_t *s)
{
    for (int i = 0; i < s->n; ++i) free(s->buf[i]);
}

static const char *const meta[] = {"format", "pt", "mamba-dna_command", "mamba-dna test \"quoted\" \xc3\xa9"};

static void test_roundtrip(void **state)
{
    (void)state;
    wset_t s;
    wset_all(&s);
    const char *p = tpath("rt.safetensors");
    assert_int_equal(st_write(p, s.w, s.n, meta, 2), 0);
    assert_int_equal(count_files(), 1); /* no temporary left */

    st_file_t *f = st_open(p);
    assert_non_null(f);
    assert_string_equal(f->path, p);
    assert_int_equal(f->n, s.n);
    assert_int_equal(f->n_meta, 2);
    assert_string_equal(st_meta(f, "format"), "pt");
    assert_string_equal(st_meta(f, "mamba-dna_command"), meta[3]);
    assert_null(st_meta(f, "nope"));
    assert_null(st_find(f, "nope"));
    /* header length is a multiple of 8 */
    uint64_t hlen;
    memcpy(&hlen, f->map, 8);
    assert_int_equal(hlen % 8, 0);
    size_t data_total = 0;
    for (int i = 0; i < s.n; ++i) {
        const st_wtensor_t *w = &s.w[i];
        const st_tensor_t *t = &f->t[i]; /* file order = given order */
        assert_string_equal(t->name, w->name);
        assert_ptr_equal(st_find(f, w->name), t);
        assert_int_equal(t->dtype, w->dtype);
        assert_int_equal(t->ndim, w->ndim);
        int64_t numel = 1;
        for (int d = 0; d < w->ndim; ++d) {
            assert_int_equal(t->shape[d], w->shape[d]);
            numel *= w->shape[d];
        }
        assert_int_equal(t->numel, numel);
        assert_int_equal(t->nbytes, (size_t)numel * st_dtype_size(w->dtype));
        if (t->nbytes) assert_memory_equal(t->data, w->data, t->nbytes);
        /* data laid out in the given order, without gaps */
        assert_ptr_equal(t->data, (const uint8_t *)f->map + 8 + hlen + data_total);
        data_total += t->nbytes;

        float *ff = calloc((size_t)numel + 1, sizeof(float));
        int64_t *ii = calloc((size_t)numel + 1, sizeof(int64_t));
        int isf = w->dtype == ST_F32 || w->dtype == ST_F16 || w->dtype == ST_BF16 || w->dtype == ST_F64;
        int isi = w->dtype == ST_I64 || w->dtype == ST_I32;
        assert_int_equal(st_read_f32(t, ff), isf ? 0 : -2);
        if (!isf) assert_non_null(strstr(md_last_error(), "cannot be read as float"));
        assert_int_equal(st_read_i64(t, ii), isi ? 0 : -2);
        for (int64_t k = 0; k < numel; ++k) {
            double v = (double)(k - 3) * 0.25;
            switch (w->dtype) {
            case ST_F32: assert_true(ff[k] == (float)v); break;
            case ST_F64: assert_true(ff[k] == (float)(v / 3.0)); break;
            case ST_F16: assert_true(ff[k] == f16_vals[k % N_F16]); break;
            case ST_BF16: assert_true(ff[k] == (float)v * 1024.0f); break; /* exact in bf16 */
            case ST_I64: assert_true(ii[k] == (k - 2) * 1099511627781LL); break;
            case ST_I32: assert_true(ii[k] == k * -7 + 1); break;
            default: break;
            }
        }
        free(ff);
        free(ii);
    }
    assert_int_equal(f->map_size, 8 + hlen + data_total);
    st_close(f);
    wset_free(&s);
    unlink(p);
}

static void test_empty_and_many(void **state)
{
    (void)state;
    const char *p = tpath("none.safetensors");
    assert_int_equal(st_write(p, NULL, 0, NULL, 0), 0);
    st_file_t *f = st_open(p);
    assert_non_null(f);
    assert_int_equal(f->n, 0);
    assert_int_equal(f->n_meta, 0);
    assert_int_equal(f->map_size, 16); /* "{}" padded to 8 */
    st_close(f);

    /* 300 tensors, like a checkpoint; find each by name */
    enum { N = 300 };
    st_wtensor_t w[N];
    char names[N][64];
    float data[N][3];
    for (int i = 0; i < N; ++i) {
        snprintf(names[i], sizeof names[i], "caduceus.backbone.layers.%d.mixer.D", i);
        memset(&w[i], 0, sizeof w[i]);
        w[i].name = names[i];
        w[i].dtype = ST_F32;
        w[i].ndim = 1;
        w[i].shape[0] = 3;
        for (int k = 0; k < 3; ++k) data[i][k] = (float)(i * 3 + k);
        w[i].data = data[i];
    }
    p = tpath("many.safetensors");
    assert_int_equal(st_write(p, w, N, NULL, 0), 0);
    assert_non_null(f = st_open(p));
    assert_int_equal(f->n, N);
    for (int i = N - 1; i >= 0; --i) {
        const st_tensor_t *t = st_find(f, names[i]);
        float v[3];
        assert_non_null(t);
        assert_int_equal(st_read_f32(t, v), 0);
        assert_memory_equal(v, data[i], sizeof v);
    }
    st_close(f);
    unlink(p);
    unlink(tpath("none.safetensors"));
}

/* A hand-written parser following the safetensors specification (the package is not installed
 * here): checks the rules the reference loader enforces and every value. */
static const char py_check[] =
    "import json, struct, sys\n"
    "import numpy as np\n"
    "raw = open(sys.argv[1], 'rb').read()\n"
    "n, = struct.unpack('<Q', raw[:8])\n"
    "assert 0 < n <= 100000000 and 8 + n <= len(raw), 'header length'\n"
    "hdr = raw[8:8 + n]\n"
    "assert hdr[:1] == b'{', 'header must start with {'\n"
    "h = json.loads(hdr.decode('utf-8'))\n"
    "buf = raw[8 + n:]\n"
    "meta = h.pop('__metadata__', {})\n"
    "assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())\n"
    "assert meta['format'] == 'pt', meta\n"
    "assert meta['mamba-dna_command'] == 'mamba-dna test \"quoted\" \\u00e9', meta\n"
    "dt = {'F32': '<f4', 'F16': '<f2', 'BF16': None, 'F64': '<f8', 'I64': '<i8', 'I32': '<i4', 'U8': 'u1'}\n"
    "sz = {'F32': 4, 'F16': 2, 'BF16': 2, 'F64': 8, 'I64': 8, 'I32': 4, 'U8': 1}\n"
    "start = 0\n"
    "arrs = {}\n"
    "for name, info in sorted(h.items(), key=lambda kv: kv[1]['data_offsets']):\n"
    "    assert set(info) == {'dtype', 'shape', 'data_offsets'}, info\n"
    "    b, e = info['data_offsets']\n"
    "    assert b == start and e >= b, ('offsets must be contiguous', name, b, start)\n"
    "    start = e\n"
    "    numel = int(np.prod(info['shape'], dtype=np.int64))\n"
    "    assert e - b == numel * sz[info['dtype']], name\n"
    "    chunk = buf[b:e]\n"
    "    if info['dtype'] == 'BF16':\n"
    "        a = (np.frombuffer(chunk, '<u2').astype('<u4') << 16).view('<f4')\n"
    "    else:\n"
    "        a = np.frombuffer(chunk, dt[info['dtype']])\n"
    "    arrs[name] = a.reshape(info['shape'])\n"
    "assert start == len(buf), 'buffer must end with the last tensor'\n"
    "def v(n): return (np.arange(n) - 3) * 0.25\n"
    "assert list(h) == ['half', 'float.weight', 'brain', 'ids', 'i32', 'bytes', 'dbl', 'empty', 'eight'], list(h)\n"
    "assert np.array_equal(arrs['half'], np.array([1, -2.5, 65504, 2.0**-24, -2.0**-14], np.float16))\n"
    "assert np.array_equal(arrs['float.weight'], v(12).astype(np.float32).reshape(3, 4))\n"
    "assert np.array_equal(arrs['brain'], (v(6) * 1024).reshape(2, 1, 3))\n"
    "assert np.array_equal(arrs['ids'], (np.arange(16) - 2) * 1099511627781)\n"
    "assert np.array_equal(arrs['i32'], (np.arange(10) * -7 + 1).reshape(2, 5))\n"
    "assert np.array_equal(arrs['bytes'], (np.arange(7) * 37) % 256)\n"
    "assert arrs['dbl'].shape == () and arrs['dbl'] == -0.75 / 3\n"
    "assert arrs['empty'].shape == (0, 3)\n"
    "assert arrs['eight'].shape == (1, 2, 1, 1, 1, 1, 2, 1)\n"
    "assert np.array_equal(arrs['eight'].ravel(), v(4).astype(np.float32))\n"
    "print('python check OK')\n";

static int have_numpy(void)
{
    return access("/usr/bin/python3", X_OK) == 0 &&
           system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

static void test_python_reads(void **state)
{
    (void)state;
    if (!have_numpy()) {
        fprintf(stderr, "skipped: /usr/bin/python3 with numpy not available\n");
        skip();
    }
    wset_t s;
    wset_all(&s);
    const char *p = tpath("py.safetensors"), *py = tpath("check.py");
    assert_int_equal(st_write(p, s.w, s.n, meta, 2), 0);
    wset_free(&s);
    FILE *fp = fopen(py, "w");
    assert_non_null(fp);
    fputs(py_check, fp);
    assert_int_equal(fclose(fp), 0);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s'", py, p);
    assert_int_equal(system(cmd), 0);
    unlink(p);
    unlink(py);
}

/* ---- corrupt input ----------------------------------------------------------------------------- */

/* Writes 8-byte length `hlen` (or the JSON's length when hlen is UINT64_MAX), the JSON and
 * `ndata` data bytes. */
static void write_raw(const char *p, uint64_t hlen, const char *json, size_t ndata)
{
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    size_t jl = json ? strlen(json) : 0;
    if (hlen == UINT64_MAX) hlen = jl;
    uint8_t le[8];
    for (int i = 0; i < 8; ++i) le[i] = (uint8_t)(hlen >> (8 * i));
    assert_int_equal(fwrite(le, 1, 8, fp), 8);
    if (jl) assert_int_equal(fwrite(json, 1, jl, fp), jl);
    for (size_t i = 0; i < ndata; ++i) fputc((int)(i & 0xff), fp);
    assert_int_equal(fclose(fp), 0);
}

static void expect_fail(const char *p, const char *fragment)
{
    st_file_t *f = st_open(p);
    if (f) {
        st_close(f);
        fail_msg("%s: opened, expected an error containing '%s'", p, fragment);
    }
    const char *e = md_last_error();
    if (strncmp(e, p, strlen(p)) != 0 || !strstr(e, fragment))
        fail_msg("error '%s' does not name '%s' or lacks '%s'", e, p, fragment);
}

static const struct {
    const char *json;
    size_t ndata;
    const char *fragment;
} bad_headers[] = {
    {"{\"a\": ", 0, "not valid JSON"},
    {"[1, 2]", 0, "not a JSON object"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "duplicate"},
    {"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8,
     "tensor 'x': data_offsets [0, 16] past the end of the data (8 bytes)"},
    {"{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}", 20, "past the end of the data"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24, "overlap"},
    {"{\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]},"
     "\"a\":{\"dtype\":\"U8\",\"shape\":[9],\"data_offsets\":[0,9]}}", 24, "'a' [0, 9] and 'b' [8, 24] overlap"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "overlap"},
    {"{\"w\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, "tensor 'w': unsupported dtype 'I8'"},
    {"{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unsupported dtype 'f32'"},
    {"{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype is not a string"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", 16, "hold 16 bytes but F32 with 3 elements needs 12"},
    {"{\"w\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,4]}}", 16, "needs 8"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0] is not a non-negative integer"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, "not a non-negative integer"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":\"4\",\"data_offsets\":[0,16]}}", 16, "shape is not a list"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", 4, "overflows"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[0,4294967296,4294967296],\"data_offsets\":[0,0]}}", 4, "overflows"},
    {"{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}", 4, "overflows"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", 4, "not valid JSON"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "9 dimensions"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'w': missing 'data_offsets'"},
    {"{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing 'dtype'"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "invalid data_offsets [4, 0]"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "invalid data_offsets"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "not a list of two integers"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "not a list of two integers"},
    {"{\"w\":5}", 0, "tensor 'w': header entry is not an object"},
    {"{\"__metadata__\":\"x\"}", 0, "__metadata__ is not an object"},
    {"{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ value of 'k' is not a string"},
    {"{\"__metadata__\":{\"k\":\"v\"},\"w\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,4]}}", 6, "needs 6"},
};

static void test_corrupt_headers(void **state)
{
    (void)state;
    const char *p = tpath("bad.safetensors");
    for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; ++i) {
        write_raw(p, UINT64_MAX, bad_headers[i].json, bad_headers[i].ndata);
        expect_fail(p, bad_headers[i].fragment);
    }
    unlink(p);
}

static void test_corrupt_files(void **state)
{
    (void)state;
    const char *p = tpath("bad.safetensors");
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    fclose(fp);
    expect_fail(p, "empty file");

    fp = fopen(p, "wb");
    fputs("abc", fp);
    fclose(fp);
    expect_fail(p, "too short (3 bytes)");

    write_raw(p, 0, "{}", 0);
    expect_fail(p, "header length is 0");

    write_raw(p, 1000, "{}", 10);
    expect_fail(p, "header length 1000 past the end of the file (20 bytes)");

    write_raw(p, UINT64_MAX - 3, "{}", 10);
    expect_fail(p, "past the end of the file");

    /* a header above 100 MB inside a (sparse) file large enough to hold it */
    write_raw(p, 100000001, "{}", 0);
    assert_int_equal(truncate(p, 100000001 + 8 + 16), 0);
    expect_fail(p, "above the limit");

    /* a valid file cut in its data, then in its header */
    wset_t s;
    wset_all(&s);
    assert_int_equal(st_write(p, s.w, s.n, meta, 2), 0);
    wset_free(&s);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(truncate(p, sb.st_size - 4), 0);
    expect_fail(p, "past the end of the data");
    assert_int_equal(truncate(p, 40), 0);
    expect_fail(p, "past the end of the file (40 bytes)");

    expect_fail(tpath("does-not-exist.safetensors"), "cannot open");
    expect_fail(tmpdir, "not a regular file");
    unlink(p);
}

/* Files the reference writer never makes but that are still sound. */
static void test_lenient(void **state)
{
    (void)state;
    const char *p = tpath("ok.safetensors");
    /* a gap, an empty tensor inside another one's bytes, trailing whitespace, no metadata */
    write_raw(p, UINT64_MAX,
              "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[10,12]},"
              "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[1,1]},"
              "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
              "\"__metadata__\":{}}   \n ",
              12);
    st_file_t *f = st_open(p);
    assert_non_null(f);
    assert_int_equal(f->n, 3);
    assert_string_equal(f->t[0].name, "b"); /* header order */
    assert_string_equal(f->t[2].name, "a");
    assert_int_equal(((const uint8_t *)st_find(f, "b")->data)[1], 11);
    assert_int_equal(f->n_meta, 0);
    st_close(f);
    unlink(p);
}

/* ---- writer failures --------------------------------------------------------------------------- */

static void expect_write_fail(const char *p, const st_wtensor_t *w, int n, const char *fragment)
{
    int before = count_files();
    assert_true(st_write(p, w, n, NULL, 0) < -1);
    if (!strstr(md_last_error(), fragment))
        fail_msg("error '%s' lacks '%s'", md_last_error(), fragment);
    assert_int_equal(count_files(), before); /* neither the file nor a temporary */
}

static void test_write_errors(void **state)
{
    (void)state;
    float d[4] = {1, 2, 3, 4};
    const char *p = tpath("w.safetensors");
    st_wtensor_t w[2] = {{"a", ST_F32, 1, {4}, d}, {"a", ST_F32, 1, {2}, d}};
    expect_write_fail(p, w, 2, "duplicate");
    w[1].name = "__metadata__";
    expect_write_fail(p, w, 2, "reserved");
    w[1].name = "b";
    w[1].dtype = (st_dtype_t)42;
    expect_write_fail(p, w, 2, "invalid dtype");
    w[1].dtype = ST_F32;
    w[1].shape[0] = -2;
    expect_write_fail(p, w, 2, "shape[0]");
    w[1].ndim = 3;
    w[1].shape[0] = w[1].shape[1] = w[1].shape[2] = INT64_C(1) << 30;
    expect_write_fail(p, w, 2, "overflow");
    w[1].ndim = 9;
    expect_write_fail(p, w, 2, "dimensions");
    w[1].ndim = 1;
    w[1].shape[0] = 2;
    w[1].data = NULL;
    expect_write_fail(p, w, 2, "no data");
    w[1].data = d;
    w[1].name = "bad\xff";
    expect_write_fail(p, w, 2, "not valid UTF-8");
    w[1].name = "b";
    const char *badmeta[] = {"k", "v", "k", "w"};
    assert_true(st_write(p, w, 2, badmeta, 2) < -1);
    assert_non_null(strstr(md_last_error(), "duplicate metadata key 'k'"));
    assert_int_equal(count_files(), 0);

    /* a directory that does not exist */
    assert_true(st_write(tpath("no/such/dir/x.safetensors"), w, 2, NULL, 0) < -1);
    assert_non_null(strstr(md_last_error(), "cannot create"));

    /* a full disk, simulated with a file size limit: the write fails, nothing is left */
    enum { BIG = 1 << 16 };
    float *big = calloc(BIG, sizeof(float));
    st_wtensor_t wb = {"big", ST_F32, 1, {BIG}, big};
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 4096;
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = st_write(p, &wb, 1, NULL, 0);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    assert_true(rc < -1);
    assert_non_null(strstr(md_last_error(), "write failed"));
    assert_int_equal(count_files(), 0);
    /* and without the limit the same write works and replaces an existing file */
    assert_int_equal(st_write(p, w, 1, NULL, 0), 0);
    assert_int_equal(st_write(p, &wb, 1, NULL, 0), 0);
    st_file_t *f = st_open(p);
    assert_non_null(f);
    assert_int_equal(f->n, 1);
    assert_int_equal(f->t[0].numel, BIG);
    st_close(f);
    free(big);
    unlink(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_values),    cmocka_unit_test(test_f16_exhaustive),
        cmocka_unit_test(test_bf16_values),   cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_empty_and_many), cmocka_unit_test(test_python_reads),
        cmocka_unit_test(test_corrupt_headers), cmocka_unit_test(test_corrupt_files),
        cmocka_unit_test(test_lenient),       cmocka_unit_test(test_write_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
