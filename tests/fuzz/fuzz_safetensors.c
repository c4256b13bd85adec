/* fuzz_safetensors.c: libFuzzer target for the safetensors reader. The input is opened as a file
 * (st_open on a memfd); every accepted tensor is converted (st_read_f32 / st_read_i64 must succeed
 * exactly for their dtypes) and looked up, and the whole file is written back with st_write and
 * reopened: names, dtypes, shapes, data bytes and metadata must survive unchanged. */
#include "fuzz_common.h"
#include "safetensors.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_init();
    return 0;
}

static void check_same(const st_file_t *a, const st_file_t *b)
{
    FUZZ_CHECK(a->n == b->n && a->n_meta == b->n_meta);
    for (int i = 0; i < a->n; ++i) {
        const st_tensor_t *x = &a->t[i], *y = &b->t[i];
        FUZZ_CHECK(strcmp(x->name, y->name) == 0);
        FUZZ_CHECK(x->dtype == y->dtype && x->ndim == y->ndim && x->numel == y->numel);
        FUZZ_CHECK(x->nbytes == y->nbytes);
        FUZZ_CHECK(memcmp(x->shape, y->shape, sizeof(int64_t) * (size_t)x->ndim) == 0);
        FUZZ_CHECK(x->nbytes == 0 || memcmp(x->data, y->data, x->nbytes) == 0);
    }
    for (int i = 0; i < a->n_meta; ++i) {
        const char *v = st_meta(b, a->meta_key[i]);
        FUZZ_CHECK(v && strcmp(v, a->meta_val[i]) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = fuzz_memfile(data, size, path, sizeof path);
    if (fd < 0) return 0;
    st_file_t *f = st_open(path);
    close(fd);
    if (!f) return 0;

    int64_t maxn = 1;
    for (int i = 0; i < f->n; ++i) {
        const st_tensor_t *t = &f->t[i];
        FUZZ_CHECK(t->nbytes == (size_t)t->numel * st_dtype_size(t->dtype));
        FUZZ_CHECK((const uint8_t *)t->data >= (const uint8_t *)f->map &&
                   (const uint8_t *)t->data + t->nbytes <= (const uint8_t *)f->map + f->map_size);
        if (t->numel > maxn) maxn = t->numel;
    }
    float *fb = malloc(sizeof(float) * (size_t)maxn);
    int64_t *ib = malloc(sizeof(int64_t) * (size_t)maxn);
    FUZZ_CHECK(fb && ib);
    for (int i = 0; i < f->n; ++i) {
        const st_tensor_t *t = &f->t[i];
        int isf = t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16 || t->dtype == ST_F64;
        int isi = t->dtype == ST_I64 || t->dtype == ST_I32;
        FUZZ_CHECK((st_read_f32(t, fb) == 0) == isf);
        FUZZ_CHECK((st_read_i64(t, ib) == 0) == isi);
        FUZZ_CHECK(st_find(f, t->name) == t);
    }
    for (int i = 0; i < f->n_meta; ++i) FUZZ_CHECK(st_meta(f, f->meta_key[i]) == f->meta_val[i]);
    free(fb);
    free(ib);

    /* write it back and compare */
    const char *dir = fuzz_scratch();
    if (dir) {
        char out[512];
        snprintf(out, sizeof out, "%s/rt.safetensors", dir);
        st_wtensor_t *w = calloc((size_t)f->n + 1, sizeof *w);
        const char **kv = calloc(2 * (size_t)f->n_meta + 1, sizeof *kv);
        FUZZ_CHECK(w && kv);
        for (int i = 0; i < f->n; ++i) {
            w[i].name = f->t[i].name;
            w[i].dtype = f->t[i].dtype;
            w[i].ndim = f->t[i].ndim;
            memcpy(w[i].shape, f->t[i].shape, sizeof w[i].shape);
            w[i].data = f->t[i].data;
        }
        for (int i = 0; i < f->n_meta; ++i) kv[2 * i] = f->meta_key[i], kv[2 * i + 1] = f->meta_val[i];
        FUZZ_CHECK(st_write(out, w, f->n, kv, f->n_meta) == 0);
        st_file_t *g = st_open(out);
        FUZZ_CHECK(g != NULL);
        uint64_t hlen;
        memcpy(&hlen, g->map, 8);
        FUZZ_CHECK(hlen % 8 == 0 && hlen > 0); /* header padded to 8 bytes */
        check_same(f, g);
        st_close(g);
        unlink(out);
        free(w);
        free(kv);
    }
    st_close(f);
    return 0;
}
