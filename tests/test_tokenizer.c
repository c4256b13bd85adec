/* test_tokenizer.c: the base-code table, both vocabularies against model-spec §1 (ids, padded
 * sizes, complement maps as in the released config.json files), N -> [PAD], and reverse
 * complements of ids, codes and ASCII (round trips and fixed examples). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "md.h"
#include "tokenizer.h"

static void test_base_codes(void **state)
{
    (void)state;
    const char *up = "ACGTN", *lo = "acgtn";
    for (int i = 0; i < 5; i++) {
        assert_int_equal(md_base_code[(uint8_t)up[i]], i);
        assert_int_equal(md_base_code[(uint8_t)lo[i]], i | MD_BASE_SOFTMASK);
    }
    const char *iupac = "RYKMSWBDHVrykmswbdhv";
    for (const char *p = iupac; *p; p++) {
        uint8_t c = md_base_code[(uint8_t)*p];
        assert_int_equal(c & MD_BASE_MASK, MD_BASE_N);
        assert_int_equal(!!(c & MD_BASE_SOFTMASK), *p >= 'a');
    }
    const char *bad = "EFIJLOPQUXZefijlopquxz0123456789-*. \t\r\n>@";
    for (const char *p = bad; *p; p++) assert_int_equal(md_base_code[(uint8_t)*p], MD_BASE_INVALID);
    int n_valid = 0;
    for (int c = 0; c < 256; c++) n_valid += md_base_code[c] != MD_BASE_INVALID;
    assert_int_equal(n_valid, 2 * (4 + 11));   /* ACGT + N + 10 IUPAC, both cases */
    for (int c = 128; c < 256; c++) assert_int_equal(md_base_code[c], MD_BASE_INVALID);
    assert_int_equal(md_code_to_ascii(2), 'G');
    assert_int_equal(md_code_to_ascii(2 | MD_BASE_SOFTMASK), 'g');
}

static void test_vocab_lookup(void **state)
{
    (void)state;
    const md_vocab_t *c = md_vocab_get("caduceus"), *p = md_vocab_get("plantcaduceus");
    assert_non_null(c);
    assert_non_null(p);
    assert_int_equal(c->size, 12);
    assert_int_equal(c->padded_size, 16);
    assert_int_equal(p->size, 7);
    assert_int_equal(p->padded_size, 8);
    int lvl = md_log_level;
    md_log_level = MD_LOG_OFF;
    assert_null(md_vocab_get("hyena"));
    assert_non_null(strstr(md_last_error(), "hyena"));
    assert_null(md_vocab_for_size(32));
    md_log_level = lvl;
    assert_ptr_equal(md_vocab_for_size(16), c);
    assert_ptr_equal(md_vocab_for_size(12), c);
    assert_ptr_equal(md_vocab_for_size(8), p);
    assert_ptr_equal(md_vocab_for_size(7), p);
    /* the token tables of model-spec §1.1 / §1.2, in id order */
    const char *ct[] = {"[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]",
                        "A", "C", "G", "T", "N"};
    for (int i = 0; i < 12; i++) {
        assert_string_equal(c->tokens[i], ct[i]);
        assert_int_equal(md_vocab_token_id(c, ct[i]), i);
    }
    const char *pt[] = {"[PAD]", "[MASK]", "[UNK]", "a", "c", "g", "t"};
    for (int i = 0; i < 7; i++) assert_string_equal(p->tokens[i], pt[i]);
    assert_int_equal(c->id_mask, 3);
    assert_int_equal(c->id_pad, 4);
    assert_int_equal(c->id_unk, 6);
    assert_int_equal(c->id_sep, 1);
    assert_int_equal(p->id_pad, 0);
    assert_int_equal(p->id_mask, 1);
    assert_int_equal(p->id_unk, 2);
    assert_int_equal(md_vocab_token_id(p, "N"), -1);
}

static void test_tokenize_examples(void **state)
{
    (void)state;
    const md_vocab_t *c = md_vocab_get("caduceus"), *p = md_vocab_get("plantcaduceus");
    int32_t ids[8];
    /* spec: "acgtN" -> 7 8 9 10 11 (soft mask does not change ids) */
    md_tokenize_ascii(c, "acgtN", 5, ids);
    int32_t e1[] = {7, 8, 9, 10, 11};
    assert_memory_equal(ids, e1, sizeof e1);
    /* spec: PlantCaduceus "ACGTN" -> 3 4 5 6 2 */
    md_tokenize_ascii(p, "ACGTN", 5, ids);
    int32_t e2[] = {3, 4, 5, 6, 2};
    assert_memory_equal(ids, e2, sizeof e2);
    /* IUPAC goes through N; a non-base byte gives [UNK] */
    md_tokenize_ascii(c, "RyJ", 3, ids);
    int32_t e3[] = {11, 11, 6};
    assert_memory_equal(ids, e3, sizeof e3);
    /* from base codes, with and without N -> [PAD] */
    uint8_t codes[] = {0, 1 | MD_BASE_SOFTMASK, 2, 3, 4, 4 | MD_BASE_SOFTMASK, 7};
    md_tokenize(c, codes, 7, ids);
    int32_t e4[] = {7, 8, 9, 10, 11, 11, 6};
    assert_memory_equal(ids, e4, sizeof e4);
    md_tokopts_t o = {.n_as_pad = 1};
    md_tokenize_ex(c, &o, codes, 7, ids);
    int32_t e5[] = {7, 8, 9, 10, 4, 4, 6};
    assert_memory_equal(ids, e5, sizeof e5);
    md_tokenize_ex(p, &o, codes, 7, ids);
    int32_t e6[] = {3, 4, 5, 6, 0, 0, 2};
    assert_memory_equal(ids, e6, sizeof e6);
}

/* all code values (including soft-masked, >= 16 and odd lengths) against the definition */
static void test_tokenize_all_codes(void **state)
{
    (void)state;
    uint8_t codes[1000];
    int32_t ids[1000];
    for (int i = 0; i < 1000; i++) codes[i] = (uint8_t)((i * 37 + i / 256) & 0xff);
    const char *names[] = {"caduceus", "plantcaduceus"};
    for (int k = 0; k < 2; k++) {
        const md_vocab_t *v = md_vocab_get(names[k]);
        for (int pad = 0; pad < 2; pad++) {
            md_tokopts_t o = {.n_as_pad = pad};
            for (int n = 990; n <= 1000; n++) {
                md_tokenize_ex(v, &o, codes, n, ids);
                for (int i = 0; i < n; i++) {
                    int c = codes[i], b = c & MD_BASE_MASK, exp;
                    if (c >= 16 || b > 4) exp = v->id_unk;
                    else if (b == 4 && pad) exp = v->id_pad;
                    else exp = v->id_base[b];
                    if (ids[i] != exp) fail_msg("%s code %d: id %d, expected %d", v->name, c, ids[i], exp);
                }
            }
        }
    }
}

static void test_complement_maps(void **state)
{
    (void)state;
    const md_vocab_t *c = md_vocab_get("caduceus"), *p = md_vocab_get("plantcaduceus");
    int map[16];
    assert_int_equal(md_vocab_complement(c, map, 16), 0);
    /* config.json: {"7":10,"8":9,"9":8,"10":7}, everything else itself */
    int ec[16] = {0, 1, 2, 3, 4, 5, 6, 10, 9, 8, 7, 11, 12, 13, 14, 15};
    assert_memory_equal(map, ec, sizeof ec);
    assert_int_equal(md_vocab_complement(p, map, 8), 0);
    int ep[8] = {0, 1, 2, 6, 5, 4, 3, 7};   /* {3:6, 4:5, 5:4, 6:3} */
    assert_memory_equal(map, ep, sizeof ep);
    int lvl = md_log_level;
    md_log_level = MD_LOG_OFF;
    assert_true(md_vocab_complement(c, map, 8) < -1);
    md_log_level = lvl;
}

static void test_revcomp(void **state)
{
    (void)state;
    const md_vocab_t *c = md_vocab_get("caduceus");
    int map[16];
    md_vocab_complement(c, map, 16);
    /* ACGTN + [MASK] -> [MASK] N A C G T; odd and even lengths, in place and out of place */
    int32_t in[] = {7, 8, 9, 10, 11, 3}, out[6], exp[] = {3, 11, 7, 8, 9, 10};
    md_revcomp_ids(in, out, 6, map, 16);
    assert_memory_equal(out, exp, sizeof exp);
    md_revcomp_ids(in, in, 6, map, 16);
    assert_memory_equal(in, exp, sizeof exp);
    int32_t odd[] = {7, 7, 8, 99, -1}, oexp[] = {-1, 99, 9, 10, 10};
    md_revcomp_ids(odd, odd, 5, map, 16);
    assert_memory_equal(odd, oexp, sizeof oexp);

    uint8_t codes[] = {0, 1 | MD_BASE_SOFTMASK, 2, 4, 3}, cexp[] = {0, 4, 1, 2 | MD_BASE_SOFTMASK, 3};
    uint8_t cout[5];
    md_revcomp_codes(codes, cout, 5);
    assert_memory_equal(cout, cexp, 5);
    md_revcomp_codes(cout, cout, 5);   /* twice = identity */
    assert_memory_equal(cout, codes, 5);

    char s[] = "ACGTacgtNRYKMBVDHSWn-";
    char r[sizeof s];
    md_revcomp_ascii(s, r, (int64_t)strlen(s));
    r[strlen(s)] = 0;
    assert_string_equal(r, "-nWSDHBVKMRYNacgtACGT");
    md_revcomp_ascii(r, r, (int64_t)strlen(r));
    assert_string_equal(r, s);

    /* tokenizing the reverse complement = reverse complement of the tokens */
    const char *seq = "GATTACAnNcg";
    int64_t n = (int64_t)strlen(seq);
    char rc[32];
    int32_t a[32], b[32];
    md_revcomp_ascii(seq, rc, n);
    md_tokenize_ascii(c, rc, n, a);
    md_tokenize_ascii(c, seq, n, b);
    md_revcomp_ids(b, b, n, map, 16);
    assert_memory_equal(a, b, (size_t)n * sizeof(int32_t));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_codes),
        cmocka_unit_test(test_vocab_lookup),
        cmocka_unit_test(test_tokenize_examples),
        cmocka_unit_test(test_tokenize_all_codes),
        cmocka_unit_test(test_complement_maps),
        cmocka_unit_test(test_revcomp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
