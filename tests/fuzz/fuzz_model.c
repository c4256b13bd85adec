/* fuzz_model.c: libFuzzer target for the model loader (md_model_load: config.json, the parameter
 * table and model.safetensors together) on mutated checkpoints. Input layout: 2 bytes
 * little-endian n, then n bytes of config.json, then the rest is model.safetensors; both are
 * written to a private folder. Seeds are tiny models (d_model 8, 1 layer) of each variant made
 * with `mamba-dna pretrain` (tests/fuzz/corpus/make_model_seeds.sh). A model that loads must
 * have a consistent config and width; when its weights are moderate (|w| <= 4, so that no
 * activation can overflow to inf/NaN) it must run a 16-base forward pass that emits every row
 * once. (Huge finite weights give NaN activations, and md_expf(NaN) in lib/vmath.h converted
 * NaN to int: undefined behaviour, reproducer tests/fuzz/regress/model-nan-expf.bin; with
 * MD_FUZZ_MODEL_FORWARD_ALL=1 every loaded model runs the forward pass, whatever its weights.) */
#include "fuzz_common.h" /* first: it sets _GNU_SOURCE */

#include <math.h>

#include "backend.h"
#include "model.h"

static md_backend_t *be;
static int forward_all;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_init();
    const char *v = getenv("MD_FUZZ_MODEL_FORWARD_ALL");
    forward_all = v && *v == '1';
    be = md_backend_cpu_open(1);
    if (!be || !fuzz_scratch()) abort();
    return 0;
}

static int put(const char *dir, const char *name, const uint8_t *d, size_t n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) return -1;
    int ok = (n == 0 || fwrite(d, 1, n, f) == n);
    return fclose(f) == 0 && ok ? 0 : -1;
}

typedef struct {
    int64_t rows;
    int width, vocab, bad;
} emit_t;

static int on_rows(void *ud, int64_t row0, int64_t nrows, const float *hidden, const float *logits)
{
    emit_t *e = ud;
    if (row0 != e->rows || nrows <= 0 || !hidden || !logits) e->bad = 1;
    /* touch every value: ASan catches a short buffer */
    volatile float sink = 0;
    for (int64_t i = 0; i < nrows * e->width; ++i) sink += hidden[i];
    for (int64_t i = 0; i < nrows * e->vocab; ++i) sink += logits[i];
    (void)sink;
    e->rows += nrows;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    size_t nc = (size_t)data[0] | (size_t)data[1] << 8;
    if (nc > size - 2) return 0;
    const char *dir = fuzz_scratch();
    if (put(dir, "config.json", data + 2, nc) < 0 ||
        put(dir, "model.safetensors", data + 2 + nc, size - 2 - nc) < 0)
        abort();
    md_model_t *m = md_model_load(dir, be);
    if (!m) return 0;
    const md_config_t *c = md_model_config(m);
    FUZZ_CHECK(c->d_model > 0 && c->n_layer > 0 && c->d_inner == c->expand * c->d_model);
    FUZZ_CHECK(c->vocab_size >= c->vocab_size_orig && c->vocab_size <= MD_MAX_VOCAB);
    int width = md_model_width(m);
    FUZZ_CHECK(width == (c->rcps ? 2 : 1) * c->d_model);
    const md_weights_t *w = md_model_weights(m);
    FUZZ_CHECK(w && w->numel > 0);
    int moderate = 1 + forward_all;
    for (size_t i = 0; i < w->numel && moderate == 1; ++i) moderate = fabsf(w->slab[i]) <= 4.0f;
    /* small models only: a fuzzed 1024-layer model would spend the time budget in the forward */
    if (moderate && (int64_t)c->d_model * c->expand * c->n_layer * c->d_state <= 1 << 16) {
        int32_t ids[16];
        for (int i = 0; i < 16; ++i) ids[i] = 7 + (i * 5 + 3) % 5; /* A C G T N */
        int64_t off[3] = { 0, 11, 16 };
        md_forward_opts_t fo = { .layer = -1, .want_logits = 1 };
        emit_t e = { 0, width, c->vocab_size, 0 };
        int r = md_model_forward(m, ids, 16, off, 2, &fo, on_rows, &e);
        FUZZ_CHECK(r == 0 && !e.bad && e.rows == 16);
    }
    md_model_free(m);
    return 0;
}
