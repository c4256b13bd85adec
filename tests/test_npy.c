/* test_npy.c: NPY reader/writer tests: whole-array round trips for every dtype and rank, files
 * written by numpy (format 1.0, 2.0, 3.0) read here and our files read by numpy, the streaming
 * row writer (many appends, F16 rounding, atomic rename, abort, write failures), and corrupt
 * headers that must fail with a message naming the file. Run from the repository root. */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
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
#include "npy.h"
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
    snprintf(tmpdir, sizeof tmpdir, "%s/md-test-npy-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) return -1;
    md_log_level = MD_LOG_OFF; /* errors are still captured by md_last_error() */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static int have_numpy(void)
{
    return access("/usr/bin/python3", X_OK) == 0 &&
           system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

/* Runs a Python snippet with numpy imported as np and argv[1] = the temporary directory. */
static int run_py(const char *code)
{
    const char *py = tpath("snippet.py");
    FILE *fp = fopen(py, "w");
    assert_non_null(fp);
    fprintf(fp, "import sys, os\nimport numpy as np\nd = sys.argv[1]\n%s", code);
    assert_int_equal(fclose(fp), 0);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s'", py, tmpdir);
    int rc = system(cmd);
    unlink(py);
    return rc;
}

static const size_t esize[] = {[NPY_F32] = 4, [NPY_F16] = 2, [NPY_I32] = 4,
                               [NPY_I64] = 8, [NPY_U8] = 1,  [NPY_F64] = 8};

/* value i of the test data, as a double, for each dtype (reproduced in Python below) */
static double val(npy_dtype_t dt, int64_t i)
{
    switch (dt) {
    case NPY_F32: return (double)(float)((i - 5) * 0.125);
    case NPY_F16: return (double)st_f16_to_f32(st_f32_to_f16((float)((i - 5) * 0.375)));
    case NPY_I32: return (double)(i * -1000 + 7);
    case NPY_I64: return (double)((i - 1) * 1099511627776LL);
    case NPY_U8: return (double)((i * 29) % 256);
    case NPY_F64: return (i - 5) / 7.0;
    }
    return 0;
}

static void *make_data(npy_dtype_t dt, int64_t n)
{
    uint8_t *b = calloc(n ? (size_t)n : 1, esize[dt]);
    for (int64_t i = 0; i < n; ++i) {
        double v = val(dt, i);
        switch (dt) {
        case NPY_F32: ((float *)b)[i] = (float)v; break;
        case NPY_F16: ((uint16_t *)b)[i] = st_f32_to_f16((float)v); break;
        case NPY_I32: ((int32_t *)b)[i] = (int32_t)v; break;
        case NPY_I64: ((int64_t *)b)[i] = (int64_t)v; break;
        case NPY_U8: b[i] = (uint8_t)v; break;
        case NPY_F64: ((double *)b)[i] = v; break;
        }
    }
    return b;
}

static const char *dt_names[] = {"f32", "f16", "i32", "i64", "u8", "f64"};

static const struct {
    int ndim;
    int64_t shape[8];
} shapes[] = {{0, {0}}, {1, {7}}, {2, {3, 5}}, {2, {4, 0}}, {8, {1, 2, 1, 3, 1, 1, 2, 1}}};

static void check_array(const npy_array_t *a, npy_dtype_t dt, int ndim, const int64_t *shape)
{
    int64_t numel = 1;
    assert_int_equal(a->dtype, dt);
    assert_int_equal(a->ndim, ndim);
    for (int d = 0; d < ndim; ++d) {
        assert_int_equal(a->shape[d], shape[d]);
        numel *= shape[d];
    }
    assert_int_equal(a->numel, numel);
    void *want = make_data(dt, numel);
    if (numel) assert_memory_equal(a->data, want, (size_t)numel * esize[dt]);
    free(want);
    float *f = npy_to_f32(a);
    assert_non_null(f);
    for (int64_t i = 0; i < numel; ++i) assert_true(f[i] == (float)val(dt, i));
    free(f);
}

static void test_roundtrip(void **state)
{
    (void)state;
    for (int dt = 0; dt < 6; ++dt)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
            int64_t numel = 1;
            for (int d = 0; d < shapes[s].ndim; ++d) numel *= shapes[s].shape[d];
            void *data = make_data(dt, numel);
            char name[64];
            snprintf(name, sizeof name, "rt_%s_%zu.npy", dt_names[dt], s);
            const char *p = tpath(name);
            assert_int_equal(npy_write(p, dt, shapes[s].ndim, shapes[s].shape, data), 0);
            free(data);
            /* data starts on a 64-byte boundary, header ends in '\n' */
            struct stat sb;
            assert_int_equal(stat(p, &sb), 0);
            assert_int_equal((sb.st_size - numel * (int64_t)esize[dt]) % 64, 0);
            npy_array_t a;
            assert_int_equal(npy_read(p, &a), 0);
            check_array(&a, dt, shapes[s].ndim, shapes[s].shape);
            npy_free(&a);
            assert_null(a.data);
        }
}

/* numpy reads what we write, with the right dtype, shape and values */
static void test_numpy_reads_ours(void **state)
{
    (void)state;
    if (!have_numpy()) {
        fprintf(stderr, "skipped: /usr/bin/python3 with numpy not available\n");
        skip();
    }
    int rc = run_py(
        "def val(dt, i):\n"
        "    if dt == 'f32': return ((i - 5) * 0.125).astype(np.float32)\n"
        "    if dt == 'f16': return ((i - 5) * 0.375).astype(np.float32).astype(np.float16)\n"
        "    if dt == 'i32': return (i * -1000 + 7).astype(np.int32)\n"
        "    if dt == 'i64': return ((i - 1) * 1099511627776).astype(np.int64)\n"
        "    if dt == 'u8': return ((i * 29) % 256).astype(np.uint8)\n"
        "    if dt == 'f64': return (i - 5) / 7.0\n"
        "shapes = [(), (7,), (3, 5), (4, 0), (1, 2, 1, 3, 1, 1, 2, 1)]\n"
        "kinds = {'f32': '<f4', 'f16': '<f2', 'i32': '<i4', 'i64': '<i8', 'u8': '|u1', 'f64': '<f8'}\n"
        "for dt in kinds:\n"
        "    for s, shape in enumerate(shapes):\n"
        "        a = np.load(os.path.join(d, 'rt_%s_%d.npy' % (dt, s)))\n"
        "        assert a.dtype == np.dtype(kinds[dt]) and a.shape == shape, (dt, s, a.dtype, a.shape)\n"
        "        want = val(dt, np.arange(int(np.prod(shape)))).reshape(shape)\n"
        "        assert np.array_equal(a, want), (dt, s, a, want)\n"
        "print('numpy read 30 arrays OK')\n");
    assert_int_equal(rc, 0);
}

/* we read what numpy writes, in every format version */
static void test_we_read_numpy(void **state)
{
    (void)state;
    if (!have_numpy()) {
        fprintf(stderr, "skipped: /usr/bin/python3 with numpy not available\n");
        skip();
    }
    int rc = run_py(
        "from numpy.lib import format as F\n"
        "kinds = {'f32': '<f4', 'f16': '<f2', 'i32': '<i4', 'i64': '<i8', 'u8': '|u1', 'f64': '<f8'}\n"
        "for dt, k in kinds.items():\n"
        "    a = (np.arange(12).reshape(3, 4) * 3 - 5).astype(k)\n"
        "    np.save(os.path.join(d, 'np_%s.npy' % dt), a)\n"
        "    for v in ((2, 0), (3, 0)):\n"
        "        with open(os.path.join(d, 'np%d_%s.npy' % (v[0], dt)), 'wb') as f:\n"
        "            F.write_array(f, a, version=v)\n"
        "np.save(os.path.join(d, 'np_scalar.npy'), np.float32(2.5))\n"
        "np.save(os.path.join(d, 'np_fortran.npy'), np.asfortranarray(np.ones((2, 3), np.float32)))\n"
        "np.save(os.path.join(d, 'np_big.npy'), np.ones(3, '>f4'))\n"
        "np.save(os.path.join(d, 'np_bool.npy'), np.ones(3, bool))\n"
        "np.save(os.path.join(d, 'np_i16.npy'), np.ones(3, np.int16))\n"
        "np.save(os.path.join(d, 'np_fortran1d.npy'), np.asfortranarray(np.ones(3, np.float32)))\n");
    assert_int_equal(rc, 0);
    const npy_dtype_t dts[] = {NPY_F32, NPY_F16, NPY_I32, NPY_I64, NPY_U8, NPY_F64};
    for (int k = 0; k < 6; ++k)
        for (int v = 1; v <= 3; ++v) {
            char name[64];
            if (v == 1) snprintf(name, sizeof name, "np_%s.npy", dt_names[k]);
            else snprintf(name, sizeof name, "np%d_%s.npy", v, dt_names[k]);
            npy_array_t a;
            assert_int_equal(npy_read(tpath(name), &a), 0);
            assert_int_equal(a.dtype, dts[k]);
            assert_int_equal(a.ndim, 2);
            assert_int_equal(a.shape[0], 3);
            assert_int_equal(a.shape[1], 4);
            float *f = npy_to_f32(&a);
            assert_non_null(f);
            for (int i = 0; i < 12; ++i) {
                double want = i * 3 - 5;
                if (dts[k] == NPY_U8) want = (double)(uint8_t)(i * 3 - 5);
                assert_true(f[i] == (float)want);
            }
            free(f);
            npy_free(&a);
        }
    npy_array_t a;
    assert_int_equal(npy_read(tpath("np_scalar.npy"), &a), 0);
    assert_int_equal(a.ndim, 0);
    assert_int_equal(a.numel, 1);
    assert_true(*(float *)a.data == 2.5f);
    npy_free(&a);
    assert_int_equal(npy_read(tpath("np_fortran1d.npy"), &a), 0); /* numpy stores it as C order */
    npy_free(&a);

    const struct {
        const char *name, *fragment;
    } bad[] = {
        {"np_fortran.npy", "Fortran-order"},
        {"np_big.npy", "big-endian dtype '>f4'"},
        {"np_bool.npy", "unsupported dtype '|b1'"},
        {"np_i16.npy", "unsupported dtype '<i2'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        const char *p = tpath(bad[i].name);
        assert_true(npy_read(p, &a) < -1);
        assert_null(a.data);
        if (strncmp(md_last_error(), p, strlen(p)) != 0 || !strstr(md_last_error(), bad[i].fragment))
            fail_msg("error '%s' does not name %s or lacks '%s'", md_last_error(), p, bad[i].fragment);
    }
}

/* ---- streaming writer -------------------------------------------------------------------------- */

static void test_stream(void **state)
{
    (void)state;
    enum { NC = 7, MAXR = 3000 };
    int before = count_files();
    float *rows = malloc(sizeof(float) * NC * MAXR);
    for (int i = 0; i < NC * MAXR; ++i) rows[i] = (float)((i % 1999) - 999) * 0.0137f;
    for (int pass = 0; pass < 2; ++pass) {
        npy_dtype_t dt = pass ? NPY_F16 : NPY_F32;
        const char *p = tpath(pass ? "stream16.npy" : "stream32.npy");
        npy_writer_t *w = npy_writer_open(p, dt, NC);
        assert_non_null(w);
        assert_int_equal(access(p, F_OK), -1); /* not visible before close */
        int64_t r = 0;
        for (int k = 0; r < MAXR; ++k) { /* 1, 2, 3, 0, 1, ... rows per call */
            int64_t m = k % 4;
            if (r + m > MAXR) m = MAXR - r;
            assert_int_equal(npy_writer_append(w, rows + r * NC, m), 0);
            r += m;
        }
        assert_int_equal(npy_writer_close(w), 0);
        npy_array_t a;
        assert_int_equal(npy_read(p, &a), 0);
        assert_int_equal(a.dtype, dt);
        assert_int_equal(a.ndim, 2);
        assert_int_equal(a.shape[0], MAXR);
        assert_int_equal(a.shape[1], NC);
        for (int i = 0; i < NC * MAXR; ++i) {
            if (dt == NPY_F32) assert_true(((float *)a.data)[i] == rows[i]);
            else assert_int_equal(((uint16_t *)a.data)[i], st_f32_to_f16(rows[i]));
        }
        npy_free(&a);
        struct stat sb;
        assert_int_equal(stat(p, &sb), 0);
        assert_int_equal(sb.st_size, 128 + (int64_t)NC * MAXR * (dt == NPY_F32 ? 4 : 2));
    }
    free(rows);
    assert_int_equal(count_files(), before + 2); /* no temporaries left */

    /* no rows at all: a valid (0, ncols) array */
    const char *p = tpath("stream0.npy");
    npy_writer_t *w = npy_writer_open(p, NPY_F16, 3);
    assert_non_null(w);
    assert_int_equal(npy_writer_append(w, NULL, 0), 0);
    assert_int_equal(npy_writer_close(w), 0);
    npy_array_t a;
    assert_int_equal(npy_read(p, &a), 0);
    assert_int_equal(a.ndim, 2);
    assert_int_equal(a.shape[0], 0);
    assert_int_equal(a.shape[1], 3);
    npy_free(&a);

    /* F16 rounding and specials through the writer */
    const float sp[8] = {1.0f, -2.5f, 65504.0f, 65520.0f, 0x1p-25f, 0x1.8p-25f, INFINITY, NAN};
    p = tpath("stream_sp.npy");
    assert_non_null(w = npy_writer_open(p, NPY_F16, 8));
    assert_int_equal(npy_writer_append(w, sp, 1), 0);
    assert_int_equal(npy_writer_close(w), 0);
    assert_int_equal(npy_read(p, &a), 0);
    const uint16_t want[8] = {0x3c00, 0xc100, 0x7bff, 0x7c00, 0x0000, 0x0001, 0x7c00};
    assert_memory_equal(a.data, want, 14);
    assert_true(isnan(st_f16_to_f32(((uint16_t *)a.data)[7])));
    npy_free(&a);

    if (have_numpy())
        assert_int_equal(run_py("a = np.load(os.path.join(d, 'stream32.npy'))\n"
                                "b = np.load(os.path.join(d, 'stream16.npy'))\n"
                                "i = np.arange(7 * 3000)\n"
                                "r = (((i % 1999) - 999).astype(np.float32) * np.float32(0.0137)).reshape(3000, 7)\n"
                                "assert a.dtype == np.float32 and a.shape == (3000, 7), (a.dtype, a.shape)\n"
                                "assert np.array_equal(a, r)\n"
                                "assert b.dtype == np.float16 and np.array_equal(b, r.astype(np.float16))\n"
                                "z = np.load(os.path.join(d, 'stream0.npy'))\n"
                                "assert z.shape == (0, 3) and z.dtype == np.float16\n"
                                "s = np.load(os.path.join(d, 'stream_sp.npy'))\n"
                                "assert s.shape == (1, 8)\n"
                                "np.seterr(over='ignore')\n"
                                "sp = np.array([1, -2.5, 65504, 65520, 2.0**-25, 1.5 * 2.0**-25, np.inf, np.nan], np.float32)\n"
                                "assert np.array_equal(s[0], sp.astype(np.float16), equal_nan=True)\n"
                                "print('numpy read streamed arrays OK')\n"),
                         0);
    else
        fprintf(stderr, "skipped numpy check: /usr/bin/python3 with numpy not available\n");
}

static void test_stream_abort_and_errors(void **state)
{
    (void)state;
    int before = count_files();
    const char *p = tpath("aborted.npy");
    float row[4] = {1, 2, 3, 4};
    npy_writer_t *w = npy_writer_open(p, NPY_F32, 4);
    assert_non_null(w);
    assert_int_equal(npy_writer_append(w, row, 1), 0);
    assert_int_equal(count_files(), before + 1); /* the temporary */
    npy_writer_abort(w);
    assert_int_equal(count_files(), before);
    assert_int_equal(access(p, F_OK), -1);
    npy_writer_abort(NULL);

    assert_null(npy_writer_open("-", NPY_F32, 4));
    assert_non_null(strstr(md_last_error(), "seekable"));
    assert_null(npy_writer_open(p, NPY_I32, 4));
    assert_non_null(strstr(md_last_error(), "float32 or float16"));
    assert_null(npy_writer_open(p, NPY_F32, 0));
    assert_non_null(strstr(md_last_error(), "columns"));
    assert_null(npy_writer_open(tpath("no/such/dir/x.npy"), NPY_F32, 4));
    assert_non_null(strstr(md_last_error(), "cannot create"));

    assert_non_null(w = npy_writer_open(p, NPY_F32, 4));
    assert_true(npy_writer_append(w, row, -1) < -1);
    assert_true(npy_writer_append(w, NULL, 1) < -1);
    assert_true(npy_writer_append(w, row, INT64_MAX / 2) < -1); /* too many rows: overflow */
    assert_non_null(strstr(md_last_error(), "too many rows"));
    assert_true(npy_writer_close(w) < -1); /* the writer failed: nothing is published */
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(count_files(), before);

    /* a full disk, simulated with a file size limit */
    enum { NC = 1024 };
    float *big = calloc(NC, sizeof(float));
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 8192;
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = 0;
    w = npy_writer_open(p, NPY_F32, NC);
    if (w) {
        for (int i = 0; i < 8 && rc == 0; ++i) rc = npy_writer_append(w, big, 1);
        int rc2 = npy_writer_close(w); /* stdio may buffer the failure until the flush */
        rc = rc ? rc : rc2;
    }
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    free(big);
    assert_non_null(w);
    assert_true(rc < -1);
    assert_non_null(strstr(md_last_error(), "write failed"));
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(count_files(), before);
}

/* ---- whole-array writer errors ----------------------------------------------------------------- */

static void test_write_errors(void **state)
{
    (void)state;
    int before = count_files();
    const char *p = tpath("werr.npy");
    float d[4] = {0};
    assert_true(npy_write(p, (npy_dtype_t)9, 1, (int64_t[]){4}, d) < -1);
    assert_true(npy_write(p, NPY_F32, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}, d) < -1);
    assert_true(npy_write(p, NPY_F32, 1, (int64_t[]){-1}, d) < -1);
    assert_non_null(strstr(md_last_error(), "shape[0]"));
    assert_true(npy_write(p, NPY_F64, 3, (int64_t[]){1 << 30, 1 << 30, 1 << 30}, d) < -1);
    assert_non_null(strstr(md_last_error(), "overflow"));
    assert_true(npy_write(p, NPY_F32, 1, (int64_t[]){4}, NULL) < -1);
    assert_non_null(strstr(md_last_error(), "no data"));
    assert_true(npy_write(tpath("no/such/dir/x.npy"), NPY_F32, 1, (int64_t[]){4}, d) < -1);
    assert_non_null(strstr(md_last_error(), "cannot create"));
    assert_int_equal(count_files(), before);

    /* a full disk: nothing is left */
    enum { N = 1 << 15 };
    float *big = calloc(N, sizeof(float));
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 4096;
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = npy_write(p, NPY_F32, 1, (int64_t[]){N}, big);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    free(big);
    assert_true(rc < -1);
    assert_non_null(strstr(md_last_error(), "write failed"));
    assert_int_equal(count_files(), before);
}

/* ---- corrupt files ----------------------------------------------------------------------------- */

/* magic, version, header length (as given, or the real one when hlen < 0), dict, data bytes */
static void write_npy(const char *p, int major, int minor, long long hlen, const char *dict, size_t ndata)
{
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    size_t dl = strlen(dict);
    fwrite("\x93NUMPY", 1, 6, fp);
    fputc(major, fp);
    fputc(minor, fp);
    uint64_t h = hlen < 0 ? dl : (uint64_t)hlen;
    int nb = major == 1 ? 2 : 4;
    for (int i = 0; i < nb; ++i) fputc((int)((h >> (8 * i)) & 0xff), fp);
    fwrite(dict, 1, dl, fp);
    for (size_t i = 0; i < ndata; ++i) fputc((int)i, fp);
    assert_int_equal(fclose(fp), 0);
}

static void expect_fail(const char *p, const char *fragment)
{
    npy_array_t a;
    memset(&a, 0x5a, sizeof a);
    int rc = npy_read(p, &a);
    if (rc >= 0) {
        npy_free(&a);
        fail_msg("%s: read, expected an error containing '%s'", p, fragment);
    }
    assert_true(rc < -1);
    assert_null(a.data);
    const char *e = md_last_error();
    if (strncmp(e, p, strlen(p)) != 0 || !strstr(e, fragment))
        fail_msg("error '%s' does not name '%s' or lacks '%s'", e, p, fragment);
}

#define D(descr, fo, shape) "{'descr': '" descr "', 'fortran_order': " fo ", 'shape': " shape ", }\n"

static const struct {
    int major;
    long long hlen;
    const char *dict;
    size_t ndata;
    const char *fragment;
} bad_npy[] = {
    {1, -1, D("<f4", "True", "(2,)"), 8, "Fortran-order"},
    {1, -1, D(">f8", "False", "(2,)"), 16, "big-endian dtype '>f8'"},
    {1, -1, D("|b1", "False", "(2,)"), 2, "unsupported dtype '|b1'"},
    {1, -1, D("<c8", "False", "(2,)"), 16, "unsupported dtype '<c8'"},
    {1, -1, D("<f4", "False", "(-1,)"), 4, "malformed NPY header"},
    {1, -1, D("<f4", "False", "(2, 3)"), 20, "data truncated"},
    {1, -1, D("<f4", "False", "(2, 3)"), 28, "4 bytes of unexpected data"},
    {1, -1, D("<f4", "False", "(4294967296, 4294967296, 4294967296)"), 4, "overflows"},
    {1, -1, D("<f8", "False", "(4611686018427387904,)"), 4, "overflows"},
    {1, -1, D("<f4", "False", "(99999999999999999999,)"), 4, "too large"},
    {1, -1, D("<f4", "False", "(1, 1, 1, 1, 1, 1, 1, 1, 1)"), 4, "more than 8 dimensions"},
    {1, -1, D("<f4", "Maybe", "(1,)"), 4, "True or False"},
    {1, -1, "{'descr': '<f4', 'shape': (1,), }\n", 4, "lacks 'fortran_order'"},
    {1, -1, "{'descr': '<f4', 'fortran_order': False}\n", 0, "lacks 'shape'"},
    {1, -1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'shape': (1,)}\n", 4, "appears twice"},
    {1, -1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}\n", 4, "unexpected key 'extra'"},
    {1, -1, "{'descr' '<f4', 'fortran_order': False, 'shape': (1,)}\n", 4, "expected ':'"},
    {1, -1, "{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}\n", 4, "expected ',' or '}'"},
    {1, -1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} junk\n", 4, "only padding"},
    {1, -1, "{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}", 4, "malformed"},
    {1, -1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1 2)}\n", 4, "',' or ')'"},
    {1, -1, "[1, 2]\n", 0, "expected '{'"},
    {1, -1, "{'descr': 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'fortran_order': False, 'shape': (1,)}\n", 4, "unsupported dtype 'aaaa"},
    {1, 5000, D("<f4", "False", "(1,)"), 4, "header length 5000 past the end"},
    {2, 0x7fffffff, D("<f4", "False", "(1,)"), 4, "past the end"},
    {4, -1, D("<f4", "False", "(1,)"), 4, "unsupported NPY format version 4.0"},
};

static void test_corrupt(void **state)
{
    (void)state;
    const char *p = tpath("bad.npy");
    for (size_t i = 0; i < sizeof bad_npy / sizeof bad_npy[0]; ++i) {
        write_npy(p, bad_npy[i].major, 0, bad_npy[i].hlen, bad_npy[i].dict, bad_npy[i].ndata);
        expect_fail(p, bad_npy[i].fragment);
    }
    write_npy(p, 1, 1, -1, D("<f4", "False", "(1,)"), 4);
    expect_fail(p, "version 1.1");

    FILE *fp = fopen(p, "wb");
    fclose(fp);
    expect_fail(p, "empty file");
    fp = fopen(p, "wb");
    fputs("\x93NUMPY\x01", fp);
    fclose(fp);
    expect_fail(p, "too short (7 bytes)");
    fp = fopen(p, "wb");
    fwrite("\x93NUMPY\x02\x00\x10\x00", 1, 10, fp);
    fclose(fp);
    expect_fail(p, "too short (10 bytes) for an NPY 2.0 header");
    fp = fopen(p, "wb");
    fputs("PK\x03\x04 this is a zip, not an npy", fp);
    fclose(fp);
    expect_fail(p, "bad magic");
    expect_fail(tpath("missing.npy"), "cannot open");
    expect_fail(tmpdir, "not a regular file");

    /* still fine: double quotes, Python 2 longs, no trailing comma, odd spacing, 3.0 */
    write_npy(p, 1, 0, -1, "{\"descr\":\"<i8\",\"shape\":(2L,3L),\"fortran_order\":False}", 48);
    npy_array_t a;
    assert_int_equal(npy_read(p, &a), 0);
    assert_int_equal(a.dtype, NPY_I64);
    assert_int_equal(a.shape[0], 2);
    assert_int_equal(a.shape[1], 3);
    npy_free(&a);
    write_npy(p, 3, 0, -1, "{ 'descr' : '<u1' , 'fortran_order' : False , 'shape' : ( 5 , ) }   \n", 5);
    assert_int_equal(npy_read(p, &a), 0);
    assert_int_equal(a.dtype, NPY_U8);
    assert_int_equal(a.ndim, 1);
    assert_int_equal(((uint8_t *)a.data)[4], 4);
    npy_free(&a);
    unlink(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),      cmocka_unit_test(test_numpy_reads_ours),
        cmocka_unit_test(test_we_read_numpy),  cmocka_unit_test(test_stream),
        cmocka_unit_test(test_stream_abort_and_errors), cmocka_unit_test(test_write_errors),
        cmocka_unit_test(test_corrupt),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
