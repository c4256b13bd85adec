/* tokenizer.h: the base-code alphabet shared by readers and models, and the model vocabularies
 * as data (one table per vocabulary: token strings, ids of A/C/G/T/N and of the special tokens).
 * Base codes: 0=A 1=C 2=G 3=T 4=N in the low 3 bits; MD_BASE_SOFTMASK (0x8) marks a lower-case
 * (soft-masked) base. Token ids are int32. Complement maps are arrays id -> complement id. */
#ifndef MD_TOKENIZER_H
#define MD_TOKENIZER_H

#include <stdint.h>

enum { MD_BASE_A = 0, MD_BASE_C = 1, MD_BASE_G = 2, MD_BASE_T = 3, MD_BASE_N = 4 };
#define MD_BASE_SOFTMASK 0x8
#define MD_BASE_MASK     0x7   /* code & MD_BASE_MASK gives 0..4 */
#define MD_BASE_INVALID  0xff  /* md_base_code[] value of a byte that is not a base */

/* ASCII -> base code: ACGT/acgt, N/n and the IUPAC ambiguity codes RYKMSWBDHV (either case) -> N.
 * Lower case keeps MD_BASE_SOFTMASK. Every other byte gives MD_BASE_INVALID. */
extern const uint8_t md_base_code[256];
/* base code (low 3 bits) -> upper-case ASCII "ACGTN"; soft-masked codes print in lower case
 * through md_code_to_ascii(). */
extern const char md_code_ascii[5];
static inline char md_code_to_ascii(uint8_t c)
{
    char b = md_code_ascii[(c & MD_BASE_MASK) < 5 ? (c & MD_BASE_MASK) : 4];
    return (c & MD_BASE_SOFTMASK) ? (char)(b | 0x20) : b;
}

typedef struct {
    const char *name;            /* "caduceus", "plantcaduceus" */
    int size;                    /* number of tokens in the table (12 or 7) */
    int padded_size;             /* vocab_size the model uses (16 or 8) */
    const char *const *tokens;   /* tokens[id] for id < size */
    int id_base[5];              /* ids of A, C, G, T, N (indexed by base code) */
    int id_mask, id_pad, id_unk;
    int id_sep;                  /* -1 where the vocabulary has none */
} md_vocab_t;

/* Static tables; never free them. NULL (logged, listing the known names) for an unknown name. */
const md_vocab_t *md_vocab_get(const char *name);
/* The vocabulary of a model from config.json vocab_size: 12 or 16 -> caduceus, 7 or 8 ->
 * plantcaduceus; NULL (logged) otherwise. */
const md_vocab_t *md_vocab_for_size(int vocab_size);
/* Id of a token string ("A", "[MASK]", "a"), or -1. */
int md_vocab_token_id(const md_vocab_t *v, const char *tok);

/* Options of md_tokenize_ex. n_as_pad: N -> [PAD] (the Caduceus pretraining convention,
 * model-spec §4.2) instead of the vocabulary's N id. */
typedef struct {
    int n_as_pad;
} md_tokopts_t;

/* codes[0..n) (base codes, soft-mask bit ignored) -> ids[0..n). Codes above 4 (after removing
 * the soft-mask bit) give [UNK]. Returns 0. */
int md_tokenize(const md_vocab_t *v, const uint8_t *codes, int64_t n, int32_t *ids);
int md_tokenize_ex(const md_vocab_t *v, const md_tokopts_t *o, const uint8_t *codes, int64_t n,
                   int32_t *ids);
/* ASCII bases -> ids (through md_base_code; any other byte gives [UNK]). */
int md_tokenize_ascii(const md_vocab_t *v, const char *s, int64_t n, int32_t *ids);

/* Fills map[0..n) with the complement of each id (A<->T, C<->G, everything else itself; ids at or
 * above v->size map to themselves). n is usually v->padded_size. Returns 0, or < -1 when
 * n < v->size. */
int md_vocab_complement(const md_vocab_t *v, int *map, int n);
/* Reverse complement of ids through a complement map of n_map entries: in place when
 * out == in, else into out (which must not overlap in). Ids outside [0, n_map) are kept as they
 * are. */
void md_revcomp_ids(const int32_t *in, int32_t *out, int64_t n, const int *map, int n_map);
/* Reverse complement of base codes (the soft-mask bit travels with its base); in place when
 * out == in. */
void md_revcomp_codes(const uint8_t *in, uint8_t *out, int64_t n);
/* Reverse complement of ASCII bases (case kept, IUPAC codes complemented: R<->Y, K<->M, B<->V,
 * D<->H, S, W, N self; other bytes kept); in place when out == in. */
void md_revcomp_ascii(const char *in, char *out, int64_t n);

#endif
