/* config.c: reading and writing a model's config.json (Caduceus or mamba_ssm layout) with
 * jansson. Keys that change the computation and that we do not implement are rejected by
 * name; keys that only matter for training bookkeeping are accepted and kept where useful. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "md.h"

void md_config_init(md_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->arch = MD_ARCH_CADUCEUS;
    c->d_model = 256;
    c->n_layer = 16;
    c->vocab_size_orig = 12;
    c->pad_vocab_size_multiple = 8;
    c->d_state = 16;
    c->d_conv = 4;
    c->expand = 2;
    c->dt_rank = 0; /* auto */
    c->conv_bias = 1;
    c->bias = 0;
    c->dt_min = 0.001f;
    c->dt_max = 0.1f;
    c->dt_init_floor = 1e-4f;
    c->dt_scale = 1.0f;
    c->bidirectional = 1;
    c->bidir_strategy = MD_BIDIR_ADD;
    c->bidir_weight_tie = 1;
    c->rms_norm = 1;
    c->norm_eps = 1e-5f;
    c->residual_in_fp32 = 0;
    c->fused_add_norm = 1;
    c->initializer_range = 0.02f;
    for (int i = 0; i < MD_MAX_VOCAB; i++) c->complement_map[i] = i;
    /* Caduceus tokenizer: A7 C8 G9 T10 */
    c->complement_map[7] = 10; c->complement_map[10] = 7;
    c->complement_map[8] = 9;  c->complement_map[9] = 8;
}

int md_config_finish(md_config_t *c, const char *what)
{
#define BAD(...) do { md_error(__VA_ARGS__); return -2; } while (0)
    if (c->d_model < 1 || c->d_model > 65536) BAD("%s: d_model %d out of range", what, c->d_model);
    if (c->n_layer < 1 || c->n_layer > 1024) BAD("%s: n_layer %d out of range", what, c->n_layer);
    if (c->d_state < 1 || c->d_state > 256) BAD("%s: ssm_cfg.d_state %d out of range (1..256)", what, c->d_state);
    if (c->d_conv < 1 || c->d_conv > 16) BAD("%s: ssm_cfg.d_conv %d out of range (1..16)", what, c->d_conv);
    if (c->expand < 1 || c->expand > 16) BAD("%s: ssm_cfg.expand %d out of range", what, c->expand);
    if (c->bias) BAD("%s: ssm_cfg.bias=true (in/out projection biases) is not supported", what);
    if (c->pad_vocab_size_multiple < 1) c->pad_vocab_size_multiple = 1;
    if (c->vocab_size_orig < 1 || c->vocab_size_orig > MD_MAX_VOCAB)
        BAD("%s: vocab_size %d out of range (1..%d)", what, c->vocab_size_orig, MD_MAX_VOCAB);
    int m = c->pad_vocab_size_multiple;
    c->vocab_size = (c->vocab_size_orig + m - 1) / m * m;
    if (c->vocab_size > MD_MAX_VOCAB) BAD("%s: padded vocabulary %d too large", what, c->vocab_size);
    c->d_inner = c->expand * c->d_model;
    if (c->dt_rank <= 0) c->dt_rank = (c->d_model + 15) / 16;
    if (c->dt_rank > c->d_inner) BAD("%s: ssm_cfg.dt_rank %d larger than d_inner %d", what, c->dt_rank, c->d_inner);
    if (!(c->norm_eps > 0 && c->norm_eps < 1)) BAD("%s: norm_epsilon %g out of range", what, c->norm_eps);
    for (int i = 0; i < c->vocab_size; i++)
        if (c->complement_map[i] < 0 || c->complement_map[i] >= c->vocab_size)
            BAD("%s: complement_map[%d] = %d outside the vocabulary", what, i, c->complement_map[i]);
    if (c->arch == MD_ARCH_MAMBA) { c->bidirectional = 0; c->rcps = 0; }
    if (c->rcps && !c->bidirectional) BAD("%s: rcps=true needs bidirectional=true", what);
    if (!c->tokenizer[0])
        snprintf(c->tokenizer, sizeof c->tokenizer, "%s", c->vocab_size_orig <= 8 ? "plantcaduceus" : "caduceus");
    return 0;
#undef BAD
}

static int get_int(json_t *o, const char *key, int *dst, const char *what)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (json_is_boolean(v)) { *dst = json_is_true(v); return 0; }
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < -(1 << 30) || x > (1 << 30)) { md_error("%s: '%s' = %lld out of range", what, key, (long long)x); return -2; }
        *dst = (int)x;
        return 0;
    }
    md_error("%s: '%s' must be an integer", what, key);
    return -2;
}

static int get_bool(json_t *o, const char *key, int *dst, const char *what)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) { md_error("%s: '%s' must be true or false", what, key); return -2; }
    *dst = json_is_true(v);
    return 0;
}

static int get_float(json_t *o, const char *key, float *dst, const char *what)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) { md_error("%s: '%s' must be a number", what, key); return -2; }
    double x = json_number_value(v);
    if (!isfinite(x)) { md_error("%s: '%s' is not finite", what, key); return -2; }
    *dst = (float)x;
    return 0;
}

/* Keys we know and either use or may ignore safely (training-only or bookkeeping). */
static const char *const known_top[] = {
    "architectures", "bidirectional", "bidirectional_strategy", "bidirectional_weight_tie",
    "complement_map", "d_model", "d_intermediate", "fused_add_norm", "initializer_cfg",
    "model_type", "n_layer", "norm_epsilon", "pad_vocab_size_multiple", "rcps",
    "residual_in_fp32", "rms_norm", "ssm_cfg", "transformers_version", "vocab_size",
    "torch_dtype", "auto_map", "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings",
    "tie_embeddings", "attn_layer_idx", "attn_cfg", "max_seq_len", "mamba_dna", "tokenizer",
    "_name_or_path", "num_hidden_layers", "hidden_size", NULL };
static const char *const known_ssm[] = {
    "d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init", "dt_scale",
    "dt_init_floor", "conv_bias", "bias", "use_fast_path", "layer", NULL };

static int check_known(json_t *o, const char *const *known, const char *prefix, const char *what)
{
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        int ok = 0;
        for (int i = 0; known[i]; i++) if (!strcmp(known[i], key)) { ok = 1; break; }
        if (!ok) { md_error("%s: unsupported option '%s%s'", what, prefix, key); return -2; }
    }
    return 0;
}

int md_config_load(md_config_t *c, const char *path)
{
    json_error_t jerr;
    md_config_init(c);
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (access(path, R_OK) != 0) md_error("%s: cannot open the model config (no such file or not readable)", path);
        else md_error("%s: invalid JSON at line %d: %s", path, jerr.line, jerr.text);
        return -2;
    }
    int ret = -2;
    if (!json_is_object(root)) { md_error("%s: not a JSON object", path); goto fail; }
    if (check_known(root, known_top, "", path) < 0) goto fail;

    /* Architecture: mamba_ssm MambaLMHeadModel configs have no model_type "caduceus". */
    json_t *mt = json_object_get(root, "model_type");
    json_t *arch = json_object_get(root, "architectures");
    const char *a0 = json_is_array(arch) && json_array_size(arch) ? json_string_value(json_array_get(arch, 0)) : NULL;
    if (json_is_string(mt) && strcmp(json_string_value(mt), "caduceus") == 0) c->arch = MD_ARCH_CADUCEUS;
    else if (json_is_string(mt) && strcmp(json_string_value(mt), "mamba") == 0) c->arch = MD_ARCH_MAMBA;
    else if (a0 && strstr(a0, "Caduceus")) c->arch = MD_ARCH_CADUCEUS;
    else if (a0 && strstr(a0, "Mamba")) c->arch = MD_ARCH_MAMBA;
    else if (json_object_get(root, "rcps") || json_object_get(root, "bidirectional")) c->arch = MD_ARCH_CADUCEUS;
    else c->arch = MD_ARCH_MAMBA;
    if (c->arch == MD_ARCH_MAMBA) {
        /* mamba_ssm MambaConfig defaults */
        c->vocab_size_orig = 50277;
        c->pad_vocab_size_multiple = 8;
        c->bidirectional = 0;
        c->residual_in_fp32 = 1;
        c->fused_add_norm = 1;
    }

    if (get_int(root, "d_model", &c->d_model, path) < 0) goto fail;
    if (get_int(root, "hidden_size", &c->d_model, path) < 0) goto fail;
    if (get_int(root, "n_layer", &c->n_layer, path) < 0) goto fail;
    if (get_int(root, "num_hidden_layers", &c->n_layer, path) < 0) goto fail;
    if (get_int(root, "vocab_size", &c->vocab_size_orig, path) < 0) goto fail;
    if (get_int(root, "pad_vocab_size_multiple", &c->pad_vocab_size_multiple, path) < 0) goto fail;
    if (get_bool(root, "rms_norm", &c->rms_norm, path) < 0) goto fail;
    if (get_float(root, "norm_epsilon", &c->norm_eps, path) < 0) goto fail;
    if (get_bool(root, "residual_in_fp32", &c->residual_in_fp32, path) < 0) goto fail;
    if (get_bool(root, "fused_add_norm", &c->fused_add_norm, path) < 0) goto fail;
    if (get_int(root, "max_seq_len", &c->max_seq_len, path) < 0) goto fail;
    int d_int = 0;
    if (get_int(root, "d_intermediate", &d_int, path) < 0) goto fail;
    if (d_int != 0) { md_error("%s: unsupported option 'd_intermediate' = %d (MLP blocks)", path, d_int); goto fail; }
    json_t *attn = json_object_get(root, "attn_layer_idx");
    if (attn && json_is_array(attn) && json_array_size(attn) > 0) {
        md_error("%s: unsupported option 'attn_layer_idx' (hybrid attention layers)", path);
        goto fail;
    }
    if (c->arch == MD_ARCH_CADUCEUS) {
        if (get_bool(root, "bidirectional", &c->bidirectional, path) < 0) goto fail;
        if (get_bool(root, "bidirectional_weight_tie", &c->bidir_weight_tie, path) < 0) goto fail;
        if (get_bool(root, "rcps", &c->rcps, path) < 0) goto fail;
        json_t *bs = json_object_get(root, "bidirectional_strategy");
        if (bs && !json_is_null(bs)) {
            const char *s = json_string_value(bs);
            if (s && !strcmp(s, "add")) c->bidir_strategy = MD_BIDIR_ADD;
            else if (s && !strcmp(s, "ew_multiply")) c->bidir_strategy = MD_BIDIR_EW_MULTIPLY;
            else { md_error("%s: unsupported option 'bidirectional_strategy' = %s", path, s ? s : "(not a string)"); goto fail; }
        }
    }
    json_t *tok = json_object_get(root, "tokenizer");
    if (tok && json_is_string(tok)) snprintf(c->tokenizer, sizeof c->tokenizer, "%s", json_string_value(tok));

    json_t *ssm = json_object_get(root, "ssm_cfg");
    if (ssm && !json_is_null(ssm)) {
        if (!json_is_object(ssm)) { md_error("%s: 'ssm_cfg' must be an object", path); goto fail; }
        if (check_known(ssm, known_ssm, "ssm_cfg.", path) < 0) goto fail;
        json_t *layer = json_object_get(ssm, "layer");
        if (layer && json_is_string(layer) && strcmp(json_string_value(layer), "Mamba1") != 0) {
            md_error("%s: unsupported option 'ssm_cfg.layer' = %s (only Mamba1)", path, json_string_value(layer));
            goto fail;
        }
        if (get_int(ssm, "d_state", &c->d_state, path) < 0) goto fail;
        if (get_int(ssm, "d_conv", &c->d_conv, path) < 0) goto fail;
        if (get_int(ssm, "expand", &c->expand, path) < 0) goto fail;
        json_t *dr = json_object_get(ssm, "dt_rank");
        if (dr && json_is_string(dr)) {
            if (strcmp(json_string_value(dr), "auto") != 0) {
                md_error("%s: 'ssm_cfg.dt_rank' must be \"auto\" or an integer", path);
                goto fail;
            }
            c->dt_rank = 0;
        } else if (get_int(ssm, "dt_rank", &c->dt_rank, path) < 0) goto fail;
        else if (dr && c->dt_rank < 1) { md_error("%s: 'ssm_cfg.dt_rank' must be positive", path); goto fail; }
        if (get_bool(ssm, "conv_bias", &c->conv_bias, path) < 0) goto fail;
        if (get_bool(ssm, "bias", &c->bias, path) < 0) goto fail;
        if (get_float(ssm, "dt_min", &c->dt_min, path) < 0) goto fail;
        if (get_float(ssm, "dt_max", &c->dt_max, path) < 0) goto fail;
        if (get_float(ssm, "dt_init_floor", &c->dt_init_floor, path) < 0) goto fail;
        if (get_float(ssm, "dt_scale", &c->dt_scale, path) < 0) goto fail;
    }
    json_t *ic = json_object_get(root, "initializer_cfg");
    if (ic && json_is_object(ic) && get_float(ic, "initializer_range", &c->initializer_range, path) < 0) goto fail;

    json_t *cm = json_object_get(root, "complement_map");
    if (cm && !json_is_null(cm)) {
        if (!json_is_object(cm)) { md_error("%s: 'complement_map' must be an object", path); goto fail; }
        const char *key;
        json_t *v;
        for (int i = 0; i < MD_MAX_VOCAB; i++) c->complement_map[i] = i; /* ids not listed map to themselves */
        json_object_foreach(cm, key, v) {
            char *end;
            long k = strtol(key, &end, 10);
            if (*end || k < 0 || k >= MD_MAX_VOCAB || !json_is_integer(v) ||
                json_integer_value(v) < 0 || json_integer_value(v) >= MD_MAX_VOCAB) {
                md_error("%s: bad complement_map entry '%s'", path, key);
                goto fail;
            }
            c->complement_map[k] = (int)json_integer_value(v);
        }
    } else if (c->vocab_size_orig <= 8) {
        /* PlantCaduceus vocabulary: a3 c4 g5 t6 */
        for (int i = 0; i < MD_MAX_VOCAB; i++) c->complement_map[i] = i;
        c->complement_map[3] = 6; c->complement_map[6] = 3;
        c->complement_map[4] = 5; c->complement_map[5] = 4;
    }
    ret = md_config_finish(c, path);
fail:
    json_decref(root);
    return ret;
}

int md_config_save(const md_config_t *c, const char *path)
{
    json_t *r = json_object();
    int ret = -2;
    char tmp[4096];
    if (c->arch == MD_ARCH_CADUCEUS) {
        json_object_set_new(r, "architectures", json_pack("[s]", "CaduceusForMaskedLM"));
        json_object_set_new(r, "model_type", json_string("caduceus"));
        json_object_set_new(r, "bidirectional", json_boolean(c->bidirectional));
        json_object_set_new(r, "bidirectional_strategy",
                            json_string(c->bidir_strategy == MD_BIDIR_ADD ? "add" : "ew_multiply"));
        json_object_set_new(r, "bidirectional_weight_tie", json_boolean(c->bidir_weight_tie));
        json_object_set_new(r, "rcps", json_boolean(c->rcps));
        json_t *cm = json_object();
        for (int i = 0; i < c->vocab_size_orig; i++) {
            char k[16];
            snprintf(k, sizeof k, "%d", i);
            json_object_set_new(cm, k, json_integer(c->complement_map[i]));
        }
        json_object_set_new(r, "complement_map", cm);
    } else {
        json_object_set_new(r, "architectures", json_pack("[s]", "MambaLMHeadModel"));
        json_object_set_new(r, "model_type", json_string("mamba"));
        json_object_set_new(r, "d_intermediate", json_integer(0));
        json_object_set_new(r, "tie_embeddings", json_true());
    }
    json_object_set_new(r, "d_model", json_integer(c->d_model));
    json_object_set_new(r, "n_layer", json_integer(c->n_layer));
    json_object_set_new(r, "vocab_size", json_integer(c->vocab_size_orig));
    json_object_set_new(r, "pad_vocab_size_multiple", json_integer(c->pad_vocab_size_multiple));
    json_object_set_new(r, "rms_norm", json_boolean(c->rms_norm));
    json_object_set_new(r, "norm_epsilon", json_real(c->norm_eps));
    json_object_set_new(r, "residual_in_fp32", json_boolean(c->residual_in_fp32));
    json_object_set_new(r, "fused_add_norm", json_boolean(c->fused_add_norm));
    json_object_set_new(r, "ssm_cfg",
        json_pack("{s:i, s:i, s:i, s:i, s:f, s:f, s:s, s:f, s:f, s:b, s:b, s:b}",
                  "d_state", c->d_state, "d_conv", c->d_conv, "expand", c->expand,
                  "dt_rank", c->dt_rank, "dt_min", (double)c->dt_min, "dt_max", (double)c->dt_max,
                  "dt_init", "random", "dt_scale", (double)c->dt_scale,
                  "dt_init_floor", (double)c->dt_init_floor, "conv_bias", c->conv_bias,
                  "bias", c->bias, "use_fast_path", 1));
    json_object_set_new(r, "initializer_cfg",
        json_pack("{s:f, s:b, s:i}", "initializer_range", (double)c->initializer_range,
                  "rescale_prenorm_residual", 1, "n_residuals_per_layer", 1));
    if (c->max_seq_len > 0) json_object_set_new(r, "max_seq_len", json_integer(c->max_seq_len));
    json_object_set_new(r, "tokenizer", json_string(c->tokenizer));
    json_object_set_new(r, "torch_dtype", json_string("float32"));

    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *fp = md_create_exclusive(tmp);
    int bad = !fp || json_dumpf(r, fp, JSON_INDENT(2) | JSON_SORT_KEYS) != 0;
    if (fp && fclose(fp) != 0) bad = 1;
    if (bad) {
        md_error("%s: cannot write %s", path, tmp);
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        md_error("%s: cannot rename %s into place", path, tmp);
        unlink(tmp);
        goto out;
    }
    ret = 0;
out:
    json_decref(r);
    return ret;
}
