/* params.h: the parameter table. One entry per tensor (checkpoint key, shape in config terms,
 * role); it drives allocation (one F32 slab carved in table order), checkpoint loading and
 * saving, parameter counts and weight-decay groups. */
#ifndef MD_PARAMS_H
#define MD_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef enum {
    MD_P_EMBED,        /* [V, d]                                     */
    MD_P_NORM,         /* [d]      layer norm weight                 */
    MD_P_NORM_B,       /* [d]      layer norm bias (LayerNorm only)  */
    MD_P_NORM_F,       /* [d]      final norm weight                 */
    MD_P_NORM_F_B,     /* [d]      final norm bias (LayerNorm only)  */
    MD_P_IN_PROJ,      /* [2Di, d] per direction unless tied         */
    MD_P_CONV_W,       /* [Di, 1, K]                                 */
    MD_P_CONV_B,       /* [Di]                                       */
    MD_P_X_PROJ,       /* [R+2N, Di]                                 */
    MD_P_DT_W,         /* [Di, R]                                    */
    MD_P_DT_B,         /* [Di]                                       */
    MD_P_A_LOG,        /* [Di, N]                                    */
    MD_P_D,            /* [Di]                                       */
    MD_P_OUT_PROJ,     /* [d, Di]  per direction unless tied         */
    MD_P_NKINDS
} md_pkind_t;

typedef struct {
    char key[200];     /* checkpoint key */
    md_pkind_t kind;
    int layer;         /* -1 for embedding / final norm */
    int dir;           /* 0 forward mamba, 1 reverse mamba, -1 shared */
    int ndim;
    int64_t shape[3];
    size_t numel;
    float *data;       /* into md_weights_t.slab */
    int no_decay;      /* excluded from weight decay (model-spec 4.6) */
} md_param_t;

typedef struct {
    md_config_t cfg;
    int n;             /* entries */
    md_param_t *p;
    float *slab;       /* all parameters, table order */
    size_t numel;      /* total floats */
} md_weights_t;

/* Builds the table for cfg and allocates the slab (zeroed). NULL on error. */
md_weights_t *md_weights_alloc(const md_config_t *cfg);
void md_weights_free(md_weights_t *w);
/* The entry of a kind/layer/dir, or NULL. */
md_param_t *md_weights_find(const md_weights_t *w, md_pkind_t kind, int layer, int dir);
/* Loads from a safetensors file: every key must be present with its shape; tied alias keys may
 * be present and must then equal their targets; unknown keys are errors. 0 / < -1. */
int md_weights_load(md_weights_t *w, const char *st_path);
/* Saves in the Hugging Face layout (no alias keys; PS complement-map buffers included). */
int md_weights_save(const md_weights_t *w, const char *st_path);
/* Initialization of model-spec 4.8 with a deterministic seed. */
void md_weights_init(md_weights_t *w, uint64_t seed);

#endif
