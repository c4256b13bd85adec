/* params.c: the parameter table (checkpoint keys and shapes from the config), one F32 slab,
 * loading/saving in the Hugging Face layouts (Caduceus Ph/PS, mamba_ssm MambaLMHeadModel),
 * tied-alias handling, and the initialization of model-spec 4.8. */
#include "params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "md.h"
#include "safetensors.h"

static const char *const mixer_names[] = {
    [MD_P_IN_PROJ] = "in_proj.weight", [MD_P_CONV_W] = "conv1d.weight",
    [MD_P_CONV_B] = "conv1d.bias",     [MD_P_X_PROJ] = "x_proj.weight",
    [MD_P_DT_W] = "dt_proj.weight",    [MD_P_DT_B] = "dt_proj.bias",
    [MD_P_A_LOG] = "A_log",            [MD_P_D] = "D",
    [MD_P_OUT_PROJ] = "out_proj.weight",
};

/* Key of a mixer tensor of layer i, direction dir (0 fwd, 1 rev). */
static void mixer_key(const md_config_t *c, char *buf, size_t n, int i, int dir, md_pkind_t k)
{
    if (c->arch == MD_ARCH_MAMBA)
        snprintf(buf, n, "backbone.layers.%d.mixer.%s", i, mixer_names[k]);
    else
        snprintf(buf, n, "caduceus.backbone.layers.%d.mixer.%s%s.%s", i, c->rcps ? "submodule." : "",
                 dir ? "mamba_rev" : "mamba_fwd", mixer_names[k]);
}

static md_param_t *add(md_weights_t *w, int *cap, md_pkind_t kind, int layer, int dir,
                       const char *key, int ndim, int64_t d0, int64_t d1, int64_t d2)
{
    if (w->n == *cap) {
        int nc = *cap ? *cap * 2 : 64;
        md_param_t *p = md_realloc(w->p, nc * sizeof *p);
        if (!p) return NULL;
        w->p = p;
        *cap = nc;
    }
    md_param_t *p = &w->p[w->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->key, sizeof p->key, "%s", key);
    p->kind = kind;
    p->layer = layer;
    p->dir = dir;
    p->ndim = ndim;
    p->shape[0] = d0; p->shape[1] = d1; p->shape[2] = d2;
    p->numel = d0 * (ndim > 1 ? d1 : 1) * (ndim > 2 ? d2 : 1);
    p->no_decay = kind == MD_P_EMBED || kind == MD_P_CONV_B || kind == MD_P_DT_B ||
                  kind == MD_P_A_LOG || kind == MD_P_D || kind == MD_P_NORM_B || kind == MD_P_NORM_F_B;
    return p;
}

md_weights_t *md_weights_alloc(const md_config_t *c)
{
    md_weights_t *w = md_calloc(1, sizeof *w);
    if (!w) return NULL;
    w->cfg = *c;
    int cap = 0;
    char key[200];
    const int d = c->d_model, Di = c->d_inner, N = c->d_state, R = c->dt_rank, K = c->d_conv;
    const int ndir = (c->arch == MD_ARCH_CADUCEUS && c->bidirectional) ? 2 : 1;
    const int tied = ndir == 2 && c->bidir_weight_tie;
    const char *pre = c->arch == MD_ARCH_MAMBA ? "backbone." : "caduceus.backbone.";

    if (c->arch == MD_ARCH_MAMBA) snprintf(key, sizeof key, "backbone.embedding.weight");
    else snprintf(key, sizeof key, "caduceus.backbone.embeddings.word_embeddings.%sweight", c->rcps ? "embedding." : "");
    if (!add(w, &cap, MD_P_EMBED, -1, -1, key, 2, c->vocab_size, d, 0)) goto fail;

    for (int i = 0; i < c->n_layer; i++) {
        for (int dir = 0; dir < ndir; dir++) {
            int shared_dir = tied ? -1 : dir;
            if (dir == 0 || !tied) {
                mixer_key(c, key, sizeof key, i, dir, MD_P_IN_PROJ);
                if (!add(w, &cap, MD_P_IN_PROJ, i, shared_dir, key, 2, 2 * Di, d, 0)) goto fail;
            }
            mixer_key(c, key, sizeof key, i, dir, MD_P_CONV_W);
            if (!add(w, &cap, MD_P_CONV_W, i, dir, key, 3, Di, 1, K)) goto fail;
            if (c->conv_bias) {
                mixer_key(c, key, sizeof key, i, dir, MD_P_CONV_B);
                if (!add(w, &cap, MD_P_CONV_B, i, dir, key, 1, Di, 0, 0)) goto fail;
            }
            mixer_key(c, key, sizeof key, i, dir, MD_P_X_PROJ);
            if (!add(w, &cap, MD_P_X_PROJ, i, dir, key, 2, R + 2 * N, Di, 0)) goto fail;
            mixer_key(c, key, sizeof key, i, dir, MD_P_DT_W);
            if (!add(w, &cap, MD_P_DT_W, i, dir, key, 2, Di, R, 0)) goto fail;
            mixer_key(c, key, sizeof key, i, dir, MD_P_DT_B);
            if (!add(w, &cap, MD_P_DT_B, i, dir, key, 1, Di, 0, 0)) goto fail;
            mixer_key(c, key, sizeof key, i, dir, MD_P_A_LOG);
            if (!add(w, &cap, MD_P_A_LOG, i, dir, key, 2, Di, N, 0)) goto fail;
            mixer_key(c, key, sizeof key, i, dir, MD_P_D);
            if (!add(w, &cap, MD_P_D, i, dir, key, 1, Di, 0, 0)) goto fail;
            if (dir == 0 || !tied) {
                mixer_key(c, key, sizeof key, i, dir, MD_P_OUT_PROJ);
                if (!add(w, &cap, MD_P_OUT_PROJ, i, shared_dir, key, 2, d, Di, 0)) goto fail;
            }
        }
        snprintf(key, sizeof key, "%slayers.%d.norm.weight", pre, i);
        if (!add(w, &cap, MD_P_NORM, i, -1, key, 1, d, 0, 0)) goto fail;
        if (!c->rms_norm) {
            snprintf(key, sizeof key, "%slayers.%d.norm.bias", pre, i);
            if (!add(w, &cap, MD_P_NORM_B, i, -1, key, 1, d, 0, 0)) goto fail;
        }
    }
    snprintf(key, sizeof key, "%snorm_f.weight", pre);
    if (!add(w, &cap, MD_P_NORM_F, -1, -1, key, 1, d, 0, 0)) goto fail;
    if (!c->rms_norm) {
        snprintf(key, sizeof key, "%snorm_f.bias", pre);
        if (!add(w, &cap, MD_P_NORM_F_B, -1, -1, key, 1, d, 0, 0)) goto fail;
    }

    size_t total = 0;
    for (int i = 0; i < w->n; i++) total += w->p[i].numel;
    w->numel = total;
    w->slab = md_calloc(total, sizeof(float));
    if (!w->slab) goto fail;
    size_t off = 0;
    for (int i = 0; i < w->n; i++) { w->p[i].data = w->slab + off; off += w->p[i].numel; }
    return w;
fail:
    md_weights_free(w);
    return NULL;
}

void md_weights_free(md_weights_t *w)
{
    if (!w) return;
    free(w->p);
    free(w->slab);
    free(w);
}

md_param_t *md_weights_find(const md_weights_t *w, md_pkind_t kind, int layer, int dir)
{
    for (int i = 0; i < w->n; i++) {
        md_param_t *p = &w->p[i];
        if (p->kind == kind && p->layer == layer && (p->dir == dir || p->dir == -1 || dir == -1))
            return p;
    }
    return NULL;
}

/* Alias keys that tied checkpoints may carry, with the parameter each must equal. */
static int alias_target(const md_weights_t *w, const char *key)
{
    const md_config_t *c = &w->cfg;
    char buf[200];
    if (!strcmp(key, "lm_head.weight") || !strcmp(key, "lm_head.lm_head.weight")) return 0; /* embedding */
    for (int i = 0; i < w->n; i++) {
        const md_param_t *p = &w->p[i];
        if (p->dir != -1 || (p->kind != MD_P_IN_PROJ && p->kind != MD_P_OUT_PROJ)) continue;
        mixer_key(c, buf, sizeof buf, p->layer, 1, p->kind);
        if (!strcmp(buf, key)) return i;
    }
    return -1;
}

static int is_complement_buffer(const md_weights_t *w, const char *key)
{
    return w->cfg.arch == MD_ARCH_CADUCEUS &&
           (!strcmp(key, "caduceus.backbone.embeddings.word_embeddings.complement_map") ||
            !strcmp(key, "lm_head.complement_map"));
}

static int check_shape(const char *path, const md_param_t *p, const st_tensor_t *t, int *pad_rows)
{
    *pad_rows = 0;
    int ok = t->ndim == p->ndim;
    for (int k = 0; ok && k < p->ndim; k++) ok = t->shape[k] == p->shape[k];
    /* An embedding saved before vocabulary padding: accept and pad with zero rows. */
    if (!ok && p->kind == MD_P_EMBED && t->ndim == 2 && t->shape[1] == p->shape[1] &&
        t->shape[0] >= 1 && t->shape[0] < p->shape[0]) {
        *pad_rows = (int)(p->shape[0] - t->shape[0]);
        return 0;
    }
    if (ok) return 0;
    char want[64], got[64];
    int n = 0;
    n += snprintf(want + n, sizeof want - n, "[");
    for (int k = 0; k < p->ndim; k++) n += snprintf(want + n, sizeof want - n, "%s%lld", k ? ", " : "", (long long)p->shape[k]);
    snprintf(want + n, sizeof want - n, "]");
    n = snprintf(got, sizeof got, "[");
    for (int k = 0; k < t->ndim && n < (int)sizeof got - 24; k++) n += snprintf(got + n, sizeof got - n, "%s%lld", k ? ", " : "", (long long)t->shape[k]);
    snprintf(got + n, sizeof got - n, "]");
    md_error("%s: tensor '%s' has shape %s but config.json implies %s", path, p->key, got, want);
    return -2;
}

int md_weights_load(md_weights_t *w, const char *path)
{
    st_file_t *f = st_open(path);
    if (!f) return -2;
    int ret = -2;
    char *seen = md_calloc(w->n, 1);
    if (!seen) goto out;
    for (int i = 0; i < w->n; i++) {
        md_param_t *p = &w->p[i];
        const st_tensor_t *t = st_find(f, p->key);
        if (!t) { md_error("%s: missing tensor '%s'", path, p->key); goto out; }
        if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) {
            md_error("%s: tensor '%s' has dtype %s; F32, F16 or BF16 expected", path, p->key, st_dtype_name(t->dtype));
            goto out;
        }
        int pad_rows;
        if (check_shape(path, p, t, &pad_rows) < 0) goto out;
        memset(p->data, 0, p->numel * sizeof(float));
        if (st_read_f32(t, p->data) < 0) goto out;
        for (size_t k = 0; k < (size_t)t->numel; k++)
            if (!isfinite(p->data[k])) {
                md_error("%s: tensor '%s' holds a non-finite value (NaN or inf) at index %zu", path, p->key, k);
                goto out;
            }
        seen[i] = 1;
    }
    /* Every other key must be a known alias (equal to its target) or buffer. */
    for (int j = 0; j < f->n; j++) {
        const st_tensor_t *t = &f->t[j];
        int known = 0;
        for (int i = 0; i < w->n && !known; i++) known = !strcmp(w->p[i].key, t->name);
        if (known) continue;
        int a = alias_target(w, t->name);
        if (a >= 0) {
            md_param_t *p = &w->p[a];
            int pad_rows;
            if (check_shape(path, p, t, &pad_rows) < 0) goto out;
            if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) {
                md_error("%s: tensor '%s' has dtype %s; F32, F16 or BF16 expected", path, t->name, st_dtype_name(t->dtype));
                goto out;
            }
            float *tmp = md_malloc(t->numel * sizeof(float));
            if (!tmp) goto out;
            st_read_f32(t, tmp);
            int eq = memcmp(tmp, p->data, t->numel * sizeof(float)) == 0;
            free(tmp);
            if (!eq) {
                md_error("%s: tied tensor '%s' differs from '%s'", path, t->name, p->key);
                goto out;
            }
            continue;
        }
        if (is_complement_buffer(w, t->name)) {
            if ((t->dtype != ST_I64 && t->dtype != ST_I32) || t->ndim != 1 || t->numel > MD_MAX_VOCAB) {
                md_error("%s: buffer '%s' must be a 1-D integer tensor", path, t->name);
                goto out;
            }
            int64_t v[MD_MAX_VOCAB];
            st_read_i64(t, v);
            for (int k = 0; k < t->numel; k++)
                if (v[k] != w->cfg.complement_map[k]) {
                    md_error("%s: buffer '%s'[%d] = %lld disagrees with config.json complement_map (%d)",
                             path, t->name, k, (long long)v[k], w->cfg.complement_map[k]);
                    goto out;
                }
            continue;
        }
        md_error("%s: unexpected tensor '%s' (not part of a %s model with this config.json)", path, t->name,
                 w->cfg.arch == MD_ARCH_MAMBA ? "Mamba" : w->cfg.rcps ? "Caduceus-PS" : "Caduceus-Ph");
        goto out;
    }
    ret = 0;
out:
    free(seen);
    st_close(f);
    return ret;
}

int md_weights_save(const md_weights_t *w, const char *path)
{
    int n = w->n + 2;
    st_wtensor_t *t = md_calloc(n, sizeof *t);
    if (!t) return -2;
    int64_t cmap[MD_MAX_VOCAB];
    int k = 0;
    if (w->cfg.arch == MD_ARCH_CADUCEUS && w->cfg.rcps) {
        for (int i = 0; i < w->cfg.vocab_size; i++) cmap[i] = w->cfg.complement_map[i];
        static const char *const bufs[2] = { "caduceus.backbone.embeddings.word_embeddings.complement_map",
                                             "lm_head.complement_map" };
        for (int b = 0; b < 2; b++) {
            t[k].name = bufs[b];
            t[k].dtype = ST_I64;
            t[k].ndim = 1;
            t[k].shape[0] = w->cfg.vocab_size;
            t[k].data = cmap;
            k++;
        }
    }
    for (int i = 0; i < w->n; i++, k++) {
        const md_param_t *p = &w->p[i];
        t[k].name = p->key;
        t[k].dtype = ST_F32;
        t[k].ndim = p->ndim;
        for (int j = 0; j < p->ndim; j++) t[k].shape[j] = p->shape[j];
        t[k].data = p->data;
    }
    static const char producer[] = "mamba-dna " MD_VERSION;
    const char *const meta[] = { "format", "pt", "producer", producer };
    int ret = st_write(path, t, k, meta, 2);
    free(t);
    return ret;
}

/* --- initialization (model-spec 4.8) ------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static double uniform01(uint64_t *s) { return (splitmix64(s) >> 11) * (1.0 / 9007199254740992.0); }
static double normal01(uint64_t *s)
{
    double u1 = uniform01(s), u2 = uniform01(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

void md_weights_init(md_weights_t *w, uint64_t seed)
{
    const md_config_t *c = &w->cfg;
    uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 12345;
    for (int i = 0; i < w->n; i++) {
        md_param_t *p = &w->p[i];
        float *x = p->data;
        size_t n = p->numel;
        switch (p->kind) {
        case MD_P_EMBED:
            for (size_t k = 0; k < n; k++) x[k] = (float)(normal01(&s) * c->initializer_range);
            break;
        case MD_P_NORM: case MD_P_NORM_F:
            for (size_t k = 0; k < n; k++) x[k] = 1.0f;
            break;
        case MD_P_NORM_B: case MD_P_NORM_F_B:
            for (size_t k = 0; k < n; k++) x[k] = 0.0f;
            break;
        case MD_P_IN_PROJ: case MD_P_X_PROJ: case MD_P_OUT_PROJ: {
            /* kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)); out_proj rescaled by 1/sqrt(n_layer) */
            double bound = 1.0 / sqrt((double)p->shape[1]);
            if (p->kind == MD_P_OUT_PROJ) bound /= sqrt((double)c->n_layer);
            for (size_t k = 0; k < n; k++) x[k] = (float)((2 * uniform01(&s) - 1) * bound);
            break;
        }
        case MD_P_CONV_W: case MD_P_CONV_B: {
            double bound = 1.0 / sqrt((double)c->d_conv); /* fan_in = in_channels/groups * K */
            for (size_t k = 0; k < n; k++) x[k] = (float)((2 * uniform01(&s) - 1) * bound);
            break;
        }
        case MD_P_DT_W: {
            double bound = pow((double)c->dt_rank, -0.5) * c->dt_scale;
            for (size_t k = 0; k < n; k++) x[k] = (float)((2 * uniform01(&s) - 1) * bound);
            break;
        }
        case MD_P_DT_B:
            for (size_t k = 0; k < n; k++) {
                double dt = exp(uniform01(&s) * (log(c->dt_max) - log(c->dt_min)) + log(c->dt_min));
                if (dt < c->dt_init_floor) dt = c->dt_init_floor;
                x[k] = (float)(dt + log(-expm1(-dt))); /* softplus^-1 */
            }
            break;
        case MD_P_A_LOG:
            for (int64_t r = 0; r < p->shape[0]; r++)
                for (int64_t j = 0; j < p->shape[1]; j++) x[r * p->shape[1] + j] = (float)log((double)(j + 1));
            break;
        case MD_P_D:
            for (size_t k = 0; k < n; k++) x[k] = 1.0f;
            break;
        default:
            break;
        }
    }
}
