/* fuzz_config.c: libFuzzer target for md_config_load (lib/config.h): the input is a config.json
 * (read from a memfd). With MD_FUZZ_CONFIG_ROUNDTRIP=1 an accepted config is also saved with
 * md_config_save and loaded again, and the fields that define the model must come back equal. */
#include "fuzz_common.h" /* first: it sets _GNU_SOURCE */

#include "config.h"

static int roundtrip;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_init();
    const char *v = getenv("MD_FUZZ_CONFIG_ROUNDTRIP");
    roundtrip = v && *v == '1';
    return 0;
}

static void check_same(const md_config_t *a, const md_config_t *b)
{
    FUZZ_CHECK(a->arch == b->arch && a->rcps == b->rcps);
    FUZZ_CHECK(a->d_model == b->d_model && a->n_layer == b->n_layer);
    FUZZ_CHECK(a->vocab_size == b->vocab_size && a->vocab_size_orig == b->vocab_size_orig);
    FUZZ_CHECK(a->d_state == b->d_state && a->d_conv == b->d_conv && a->expand == b->expand);
    FUZZ_CHECK(a->dt_rank == b->dt_rank && a->d_inner == b->d_inner);
    FUZZ_CHECK(a->conv_bias == b->conv_bias && a->bias == b->bias);
    FUZZ_CHECK(a->bidirectional == b->bidirectional && a->bidir_strategy == b->bidir_strategy);
    FUZZ_CHECK(a->bidir_weight_tie == b->bidir_weight_tie && a->rms_norm == b->rms_norm);
    FUZZ_CHECK(a->norm_eps == b->norm_eps && a->residual_in_fp32 == b->residual_in_fp32);
    FUZZ_CHECK(a->fused_add_norm == b->fused_add_norm);
    if (a->arch == MD_ARCH_CADUCEUS)
        for (int i = 0; i < a->vocab_size; ++i) FUZZ_CHECK(a->complement_map[i] == b->complement_map[i]);
    FUZZ_CHECK(strcmp(a->tokenizer, b->tokenizer) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = fuzz_memfile(data, size, path, sizeof path);
    if (fd < 0) return 0;
    md_config_t c;
    int rc = md_config_load(&c, path);
    close(fd);
    if (rc < 0) {
        FUZZ_CHECK(rc < -1);
        return 0;
    }
    /* md_config_load ran md_config_finish: the derived sizes must be consistent */
    FUZZ_CHECK(c.d_model > 0 && c.n_layer > 0 && c.d_inner == c.expand * c.d_model);
    FUZZ_CHECK(c.vocab_size >= c.vocab_size_orig && c.vocab_size <= MD_MAX_VOCAB);
    FUZZ_CHECK(c.dt_rank > 0 && c.dt_rank <= c.d_inner);
    for (int i = 0; i < c.vocab_size; ++i)
        FUZZ_CHECK(c.complement_map[i] >= 0 && c.complement_map[i] < c.vocab_size);

    const char *dir = roundtrip ? fuzz_scratch() : NULL;
    if (dir) {
        char out[512];
        md_config_t c2;
        snprintf(out, sizeof out, "%s/config.json", dir);
        FUZZ_CHECK(md_config_save(&c, out) == 0);
        FUZZ_CHECK(md_config_load(&c2, out) == 0);
        check_same(&c, &c2);
        unlink(out);
    }
    return 0;
}
