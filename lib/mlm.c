/* mlm.c: training inputs and targets from base codes. Masked LM as Caduceus pretraining
 * (model-spec 4.2-4.4): N -> [PAD] in the input and never a target; every position selected
 * i.i.d. with probability 0.15 (N positions included: they are corrupted but have no loss);
 * selected -> [MASK] (80%), else a uniform random token of the vocabulary's table (10%), else
 * kept (10%); the target is the original token at selected positions. Causal LM: the target of
 * position t is the token at t+1. Every random draw comes from a hash of (seed, sequence id,
 * position, purpose), so a sequence is rebuilt identically after a resume. */
#include <string.h>

#include "md.h"
#include "train.h"

void md_mlm_init(md_mlm_t *m)
{
    m->causal = 0;
    m->select = 0.15;
    m->to_mask = 0.8;
    m->to_random = 0.5;
    m->soft_weight = 1.0f;
}

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t md_rng_u64(uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t z = mix64(seed + 0x9e3779b97f4a7c15ULL);
    z = mix64(z ^ (a + 0x632be59bd9b4e019ULL));
    return mix64(z ^ (b * 0x9e3779b97f4a7c15ULL + 0x85ebca77c2b2ae63ULL));
}

double md_rng_uniform(uint64_t seed, uint64_t a, uint64_t b)
{
    return (md_rng_u64(seed, a, b) >> 11) * (1.0 / 9007199254740992.0);
}

int md_mlm_make(const md_mlm_t *m, const md_vocab_t *v, uint64_t seed, uint64_t seq_id, const uint8_t *codes,
                int64_t n, int eval, int32_t *ids, int32_t *targets, float *weights)
{
    md_tokopts_t to = { .n_as_pad = 1 };
    if (md_tokenize_ex(v, &to, codes, n, ids) < 0) return -2;
    const float soft_w = eval ? (m->soft_weight != 1.0f ? 0.0f : 1.0f) : m->soft_weight;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t cd = codes[i];
        /* the position whose token is predicted */
        const int64_t j = m->causal ? i + 1 : i;
        if (m->causal) {
            int ok = j < n && (codes[j] & MD_BASE_MASK) < MD_BASE_N;
            targets[i] = ok ? ids[j] : MD_IGNORE;
            if (weights) weights[i] = ok && (codes[j] & MD_BASE_SOFTMASK) ? soft_w : 1.0f;
            continue;
        }
        const uint64_t key = (uint64_t)i * 4;
        if (md_rng_uniform(seed, seq_id, key) >= m->select) {
            targets[i] = MD_IGNORE;
            if (weights) weights[i] = 1.0f;
            continue;
        }
        const int is_n = (cd & MD_BASE_MASK) >= MD_BASE_N;
        targets[i] = is_n ? MD_IGNORE : ids[i];
        if (weights) weights[i] = (cd & MD_BASE_SOFTMASK) ? soft_w : 1.0f;
        if (md_rng_uniform(seed, seq_id, key + 1) < m->to_mask) ids[i] = v->id_mask;
        else if (md_rng_uniform(seed, seq_id, key + 2) < m->to_random)
            ids[i] = (int32_t)(md_rng_u64(seed, seq_id, key + 3) % (uint64_t)v->size);
    }
    return 0;
}
