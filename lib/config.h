/* config.h: a model's hyperparameters, read from and written to a Hugging Face `config.json`
 * (Caduceus `CaduceusForMaskedLM` or mamba_ssm `MambaLMHeadModel` layout). */
#ifndef MD_CONFIG_H
#define MD_CONFIG_H

#include <stdint.h>

#define MD_MAX_VOCAB 64

typedef enum { MD_ARCH_CADUCEUS = 0, MD_ARCH_MAMBA = 1 } md_arch_t;
typedef enum { MD_BIDIR_ADD = 0, MD_BIDIR_EW_MULTIPLY = 1 } md_bidir_t;

typedef struct {
    md_arch_t arch;
    int rcps;                 /* Caduceus-PS (reverse-complement parameter sharing) */
    int d_model, n_layer;
    int vocab_size;           /* padded to pad_vocab_size_multiple */
    int vocab_size_orig;      /* as stored in config.json */
    int pad_vocab_size_multiple;
    /* ssm_cfg */
    int d_state, d_conv, expand, dt_rank, d_inner;
    int conv_bias, bias;      /* conv1d bias; in/out_proj bias (bias=1 is rejected) */
    float dt_min, dt_max, dt_init_floor, dt_scale;
    /* Caduceus */
    int bidirectional;
    md_bidir_t bidir_strategy;
    int bidir_weight_tie;
    int rms_norm;             /* 1 RMSNorm, 0 LayerNorm */
    float norm_eps;
    int residual_in_fp32;
    int fused_add_norm;
    int complement_map[MD_MAX_VOCAB]; /* id -> complement id, identity where unset */
    float initializer_range;
    int max_seq_len;          /* trained sequence length if known, else 0 */
    char tokenizer[32];       /* "caduceus" or "plantcaduceus" (chosen from the vocabulary size
                                 unless config.json names one) */
} md_config_t;

/* Fills defaults of the released Caduceus configs (d_model 256, 16 layers, Ph). */
void md_config_init(md_config_t *cfg);
/* Derives d_inner, dt_rank ("auto"), padded vocab; checks ranges. 0 or < -1 (logged). */
int md_config_finish(md_config_t *cfg, const char *what);
/* Reads config.json. Unknown or unsupported options are errors naming the key. 0 / < -1. */
int md_config_load(md_config_t *cfg, const char *path);
/* Writes config.json (atomically: temporary name + rename). 0 / < -1. */
int md_config_save(const md_config_t *cfg, const char *path);

#endif
