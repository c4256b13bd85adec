/* test_score.c: the variant scorer (lib/score.c) against values computed here by hand from
 * md_model_forward on the same windows: masked / unmasked LLR, strand averaging, probabilities,
 * MNV sums, EMBDIST with the indel window rule, causal Mamba log-likelihood differences, contig
 * ends (clipping and N padding), a contig shorter than the window, strand symmetry (the reverse-
 * complemented reference with complemented alleles gives the same values), unscorable ALTs and
 * their reasons, REF checks, and a VCF run whose values do not depend on the batch size; the same
 * hand values with position chunks shorter than a window (pooled windows, probe rows and causal
 * windows' rows crossing chunk edges).
 * Reference: a 2 kb slice of the chr20 fixture ("f"), its reverse complement ("r") and a 150 bp
 * contig ("s"), written to a temporary FASTA. Models: the conformance checkpoints (Ph, PS) and a
 * small random causal Mamba. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <htslib/faidx.h>
#include <htslib/vcf.h>

#include "backend.h"
#include "md.h"
#include "model.h"
#include "params.h"
#include "score.h"
#include "seqio.h"
#include "tokenizer.h"
#include "vcfio.h"

#define PH "tests/data/conformance/ph_d128_n2"
#define PS "tests/data/conformance/ps_d128_n3"

static char g_dir[256], g_fa[320];
static char *g_f, *g_r, *g_s;       /* contig sequences (upper case) */
static md_backend_t *g_be;
static md_fasta_t *g_fasta;

/* ---- fixtures ------------------------------------------------------------------------------ */

static char comp(char c)
{
    switch (c) {
    case 'A': return 'T';
    case 'C': return 'G';
    case 'G': return 'C';
    case 'T': return 'A';
    default: return 'N';
    }
}

static char *revcomp_str(const char *s)
{
    size_t n = strlen(s);
    char *r = malloc(n + 1);
    for (size_t i = 0; i < n; i++) r[i] = comp(s[n - 1 - i]);
    r[n] = 0;
    return r;
}

static char *fetch(faidx_t *fai, const char *reg)
{
    hts_pos_t len;
    char *s = fai_fetch64(fai, reg, &len);
    assert_non_null(s);
    for (hts_pos_t i = 0; i < len; i++) {
        s[i] = (char)(s[i] & ~0x20);
        assert_non_null(strchr("ACGT", s[i]));
    }
    return s;
}

static int setup(void **st)
{
    (void)st;
    md_log_level = getenv("MD_TEST_LOG") ? MD_LOG_INFO : MD_LOG_OFF;
    snprintf(g_dir, sizeof g_dir, "%s/md-score-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_dir)) return -1;
    faidx_t *fai = fai_load3("tests/data/real/chr20_1M.fa.gz", "tests/data/real/chr20_1M.fa.gz.fai",
                             "tests/data/real/chr20_1M.fa.gz.gzi", 0);
    if (!fai) return -1;
    g_f = fetch(fai, "20:20001-22001");
    g_s = fetch(fai, "20:30001-30150");
    fai_destroy(fai);
    g_r = revcomp_str(g_f);
    snprintf(g_fa, sizeof g_fa, "%s/ref.fa", g_dir);
    FILE *fp = fopen(g_fa, "w");
    if (!fp) return -1;
    fprintf(fp, ">f\n%s\n>r\n%s\n>s\n%s\n", g_f, g_r, g_s);
    fclose(fp);
    if (fai_build(g_fa) < 0) return -1;
    g_fasta = md_fasta_open(g_fa, NULL);
    g_be = md_backend_cpu_open(1);
    return g_fasta && g_be ? 0 : -1;
}

static int teardown(void **st)
{
    (void)st;
    md_fasta_close(g_fasta);
    if (g_be) g_be->destroy(g_be);
    char p[400];
    const char *files[] = { "ref.fa", "ref.fa.fai", "in.vcf", "out.bcf", "out.tsv.gz", "out.tsv.gz.tbi" };
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(p, sizeof p, "%s/%s", g_dir, files[i]);
        unlink(p);
    }
    rmdir(g_dir);
    free(g_f);
    free(g_r);
    free(g_s);
    return 0;
}

static const char *contig(const char *name)
{
    return !strcmp(name, "f") ? g_f : !strcmp(name, "r") ? g_r : g_s;
}

/* ---- by-hand model evaluation -------------------------------------------------------------- */

typedef struct {
    int W, V;
    float *hidden, *logits;
} out_t;

static int collect(void *ud, int64_t row0, int64_t nrows, const float *hidden, const float *logits)
{
    out_t *o = ud;
    memcpy(o->hidden + row0 * o->W, hidden, nrows * o->W * sizeof(float));
    memcpy(o->logits + row0 * o->V, logits, nrows * o->V * sizeof(float));
    return 0;
}

/* One sequence through the model (ASCII bases; mask >= 0 puts [MASK] there). */
static void fwd(md_model_t *m, const char *seq, int64_t n, int64_t mask, out_t *o)
{
    const md_vocab_t *v = md_vocab_get(md_model_config(m)->tokenizer);
    int32_t *ids = malloc(n * sizeof *ids);
    md_tokenize_ascii(v, seq, n, ids);
    if (mask >= 0) ids[mask] = v->id_mask;
    o->W = md_model_width(m);
    o->V = md_model_config(m)->vocab_size;
    o->hidden = malloc(n * o->W * sizeof(float));
    o->logits = malloc(n * o->V * sizeof(float));
    md_forward_opts_t fo = { .layer = -1, .want_logits = 1 };
    int64_t off[2] = { 0, n };
    assert_int_equal(md_model_forward(m, ids, n, off, 1, &fo, collect, o), 0);
    free(ids);
}

static void out_free(out_t *o) { free(o->hidden); free(o->logits); }

static int bidx(char c) { return (int)(strchr("ACGT", c) - "ACGT"); }

static void lp4(md_model_t *m, const float *lg, double lp[4])
{
    const md_vocab_t *v = md_vocab_get(md_model_config(m)->tokenizer);
    double mx = -1e30, z = 0;
    for (int b = 0; b < 4; b++) mx = fmax(mx, lg[v->id_base[b]]);
    for (int b = 0; b < 4; b++) z += exp(lg[v->id_base[b]] - mx);
    for (int b = 0; b < 4; b++) lp[b] = lg[v->id_base[b]] - mx - log(z);
}

/* Window placement written out from the documented rule. */
static int64_t place(int64_t C, int64_t W, int pad, int64_t q, int64_t *st)
{
    int64_t s = q - (W - 1) / 2;
    if (pad) { *st = s; return W; }
    if (C <= W) { *st = 0; return C; }
    *st = s < 0 ? 0 : s > C - W ? C - W : s;
    return W;
}

/* [a, b) of strand k of contig name, N outside the contig; malloc'ed. */
static char *strand_str(const char *name, int k, int64_t a, int64_t b)
{
    const char *seq = contig(name);
    int64_t C = (int64_t)strlen(seq);
    char *rc = k ? revcomp_str(seq) : NULL;
    const char *s = k ? rc : seq;
    char *out = malloc(b - a + 1);
    for (int64_t i = a; i < b; i++) out[i - a] = i < 0 || i >= C ? 'N' : s[i];
    out[b - a] = 0;
    free(rc);
    return out;
}

/* Log-probs of A,C,G,T at plus position p seen from strand pass k (in that strand's bases). */
static void hand_lp(md_model_t *m, const char *name, int64_t p, int64_t W, int pad, int masked, int k, double lp[4])
{
    int64_t C = (int64_t)strlen(contig(name)), st;
    int64_t q = k ? C - 1 - p : p;
    int64_t len = place(C, W, pad, q, &st);
    char *w = strand_str(name, k, st, st + len);
    out_t o;
    fwd(m, w, len, masked ? q - st : -1, &o);
    lp4(m, o.logits + (q - st) * o.V, lp);
    out_free(&o);
    free(w);
}

/* LLR of an SNV/MNV (same-length alleles), averaged over passes; also P(ref), P(alt). */
static double hand_llr(md_model_t *m, const char *name, int64_t p, const char *ref, const char *alt, int64_t W,
                       int pad, int masked, int npass, double *pref, double *palt)
{
    double llr = 0, lpr = 0, lpa = 0;
    for (size_t i = 0; i < strlen(ref); i++) {
        if (ref[i] == alt[i]) continue;
        double la[4] = {0, 0, 0, 0};
        for (int k = 0; k < npass; k++) {
            double lp[4];
            hand_lp(m, name, p + i, W, pad, masked, k, lp);
            for (int b = 0; b < 4; b++) la[b] += lp[k ? 3 - b : b] / npass;
        }
        double z = 0;
        for (int b = 0; b < 4; b++) z += exp(la[b]);
        int r = bidx(ref[i]), a = bidx(alt[i]);
        llr += la[a] - la[r];
        lpr += la[r] - log(z);
        lpa += la[a] - log(z);
    }
    if (pref) *pref = exp(lpr);
    if (palt) *palt = exp(lpa);
    return llr;
}

/* The ref (alt == NULL) or alt window of an event at plus position p with REF length rlen, on
 * strand k: ref window start, left flank, allele, right flank to the ref window's length. */
static char *hand_window(const char *name, int64_t p, const char *ref, const char *alt, int64_t W, int pad, int k)
{
    int64_t C = (int64_t)strlen(contig(name)), rlen = (int64_t)strlen(ref), st;
    int64_t q = k ? C - p - rlen : p;
    int64_t len = place(C, W, pad, q, &st);
    if (!alt) return strand_str(name, k, st, st + len);
    char *a = k ? revcomp_str(alt) : strdup(alt);
    char *left = strand_str(name, k, st, q);
    int64_t e = q + rlen + len;
    if (!pad && e > C) e = C;
    char *right = strand_str(name, k, q + rlen, e > q + rlen ? e : q + rlen);
    char *w = malloc(strlen(left) + strlen(a) + strlen(right) + 1);
    sprintf(w, "%s%s%s", left, a, right);
    if ((int64_t)strlen(w) > len) w[len] = 0;
    free(a);
    free(left);
    free(right);
    return w;
}

/* Unmasked LLR of a same-length event read from its own ref windows (both strands). */
static double hand_llr_event_unmasked(md_model_t *m, const char *name, int64_t p, const char *ref, const char *alt,
                                      int64_t W)
{
    int64_t C = (int64_t)strlen(contig(name)), rlen = (int64_t)strlen(ref), st;
    double llr = 0;
    for (int k = 0; k < 2; k++) {
        char *w = hand_window(name, p, ref, NULL, W, 0, k);
        place(C, W, 0, k ? C - p - rlen : p, &st);
        out_t o;
        fwd(m, w, (int64_t)strlen(w), -1, &o);
        for (int64_t i = 0; i < rlen; i++) {
            if (ref[i] == alt[i]) continue;
            int64_t x = p + i, idx = (k ? C - 1 - x : x) - st;
            double lp[4];
            lp4(m, o.logits + idx * o.V, lp);
            int r = bidx(ref[i]), a = bidx(alt[i]);
            llr += (k ? lp[3 - a] - lp[3 - r] : lp[a] - lp[r]) / 2;
        }
        out_free(&o);
        free(w);
    }
    return llr;
}

/* Mean pooled hidden state of a window (PS with average: strand-combined halves). */
static void hand_mean(md_model_t *m, const char *w, int comb, double *v)
{
    int64_t n = (int64_t)strlen(w);
    out_t o;
    fwd(m, w, n, -1, &o);
    int D = comb || md_model_config(m)->rcps ? md_model_config(m)->d_model : o.W;
    for (int j = 0; j < D; j++) v[j] = 0;
    for (int64_t t = 0; t < n; t++) {
        const float *h = o.hidden + t * o.W;
        for (int j = 0; j < D; j++) v[j] += (comb ? 0.5 * ((double)h[j] + h[2 * D - 1 - j]) : h[j]) / n;
    }
    out_free(&o);
}

static double hand_embdist(md_model_t *m, const char *name, int64_t p, const char *ref, const char *alt, int64_t W,
                           int pad, int npass)
{
    const md_config_t *c = md_model_config(m);
    int comb = c->rcps && npass == 2, D = c->d_model;
    double vr[512], va[512], t[512];
    memset(vr, 0, sizeof vr);
    memset(va, 0, sizeof va);
    for (int k = 0; k < npass; k++) {
        char *wr = hand_window(name, p, ref, NULL, W, pad, k), *wa = hand_window(name, p, ref, alt, W, pad, k);
        hand_mean(m, wr, comb, t);
        for (int j = 0; j < D; j++) vr[j] += t[j] / npass;
        hand_mean(m, wa, comb, t);
        for (int j = 0; j < D; j++) va[j] += t[j] / npass;
        free(wr);
        free(wa);
    }
    double dot = 0, nr = 0, na = 0;
    for (int j = 0; j < D; j++) dot += vr[j] * va[j], nr += vr[j] * vr[j], na += va[j] * va[j];
    return 1 - dot / sqrt(nr * na);
}

/* Sequence log-likelihood of a window under a causal model (A/C/G/T renormalised). */
static double hand_ll(md_model_t *m, const char *w)
{
    int64_t n = (int64_t)strlen(w);
    out_t o;
    fwd(m, w, n, -1, &o);
    double ll = 0, lp[4];
    for (int64_t t = 0; t + 1 < n; t++) {
        if (!strchr("ACGT", w[t + 1])) continue;
        lp4(m, o.logits + t * o.V, lp);
        ll += lp[bidx(w[t + 1])];
    }
    out_free(&o);
    return ll;
}

/* ---- helpers ------------------------------------------------------------------------------- */

static sc_t *scorer(md_model_t *m, int64_t W, sc_mode_t mode, sc_rc_t rc, int pad)
{
    sc_opts_t o;
    sc_opts_init(&o);
    o.window = W;
    o.mode = mode;
    o.rc = rc;
    o.pad = pad;
    o.probs = 1;
    sc_t *s = sc_init(m, g_fasta, &o);
    assert_non_null(s);
    return s;
}

static sc_value_t score1(sc_t *s, const char *name, int64_t p0, const char *ref, const char *alt)
{
    sc_value_t v;
    const char *alts[1] = { alt };
    assert_int_equal(sc_score_variant(s, name, p0 + 1, ref, alts, 1, &v), 0);
    return v;
}

static md_model_t *load(const char *dir)
{
    md_model_t *m = md_model_load(dir, g_be);
    assert_non_null(m);
    return m;
}

static char alt_of(char r) { return r == 'A' ? 'G' : r == 'C' ? 'T' : r == 'G' ? 'A' : 'C'; }

#define NEAR(a, b, tol) do { double a_ = (a), b_ = (b); \
    if (!(fabs(a_ - b_) <= (tol))) fail_msg("%s = %.9g, %s = %.9g (tolerance %g)", #a, a_, #b, b_, (double)(tol)); } while (0)

/* ---- tests --------------------------------------------------------------------------------- */

static void test_window_place(void **st)
{
    (void)st;
    int64_t s;
    assert_int_equal(sc_window_place(1000, 512, 0, 500, &s), 512); assert_int_equal(s, 245);
    assert_int_equal(sc_window_place(1000, 512, 0, 10, &s), 512);  assert_int_equal(s, 0);
    assert_int_equal(sc_window_place(1000, 512, 0, 999, &s), 512); assert_int_equal(s, 488);
    assert_int_equal(sc_window_place(100, 512, 0, 50, &s), 100);   assert_int_equal(s, 0);
    assert_int_equal(sc_window_place(100, 512, 1, 0, &s), 512);    assert_int_equal(s, -255);
    assert_int_equal(sc_window_place(1000, 5, 0, 500, &s), 5);     assert_int_equal(s, 498);
    assert_int_equal(sc_window_place(1000, 1, 0, 7, &s), 1);       assert_int_equal(s, 7);
    sc_opts_t o;
    sc_opts_init(&o);
    assert_int_equal(sc_opts_check(&o), 0);
    o.window = -1;
    assert_int_equal(sc_opts_check(&o), SC_EDATA);
    md_config_t c;
    md_config_init(&c);
    c.max_seq_len = 0;
    assert_int_equal(sc_default_window(&c), 512);
    c.max_seq_len = 131072;
    assert_int_equal(sc_default_window(&c), 4096);
    c.max_seq_len = 1024;
    assert_int_equal(sc_default_window(&c), 1024);
    c.max_seq_len = 200;
    assert_int_equal(sc_default_window(&c), 512);
}

/* Masked and unmasked LLR equal the value computed from the logits of the same window(s), for Ph
 * and PS, with and without strand averaging, odd and even windows, at the first and last base. */
static void test_llr_by_hand(void **st)
{
    (void)st;
    const char *dirs[2] = { PH, PS };
    int64_t C = (int64_t)strlen(g_f);
    int64_t pos[] = { 0, 7, 1000, C - 1 };
    int64_t Ws[] = { 101, 64 };
    for (int mi = 0; mi < 2; mi++) {
        md_model_t *m = load(dirs[mi]);
        for (int wi = 0; wi < 2; wi++)
            for (int rc = 0; rc < 2; rc++)
                for (int mode = 0; mode < 2; mode++) {
                    sc_t *s = scorer(m, Ws[wi], mode ? SC_UNMASKED : SC_MASKED, rc ? SC_RC_NONE : SC_RC_AVERAGE, 0);
                    for (size_t i = 0; i < sizeof pos / sizeof *pos; i++) {
                        char ref[2] = { g_f[pos[i]], 0 }, alt[2] = { alt_of(g_f[pos[i]]), 0 };
                        double pr, pa;
                        double want = hand_llr(m, "f", pos[i], ref, alt, Ws[wi], 0, !mode, rc ? 1 : 2, &pr, &pa);
                        sc_value_t v = score1(s, "f", pos[i], ref, alt);
                        NEAR(v.llr, want, 1e-4);
                        NEAR(v.pref, pr, 1e-5);
                        NEAR(v.palt, pa, 1e-5);
                        NEAR(v.llr, log(v.palt / v.pref), 1e-4);
                        assert_int_equal(v.llr_reason, -1);
                    }
                    sc_destroy(s);
                }
        md_model_free(m);
    }
}

/* --pad: N beyond the contig ends, window of W bases; a contig shorter than W: the whole contig. */
static void test_pad_and_short_contig(void **st)
{
    (void)st;
    md_model_t *m = load(PH);
    int64_t C = (int64_t)strlen(g_f);
    sc_t *s = scorer(m, 101, SC_MASKED, SC_RC_AVERAGE, 1);
    int64_t pos[] = { 0, 3, C - 1 };
    for (int i = 0; i < 3; i++) {
        char ref[2] = { g_f[pos[i]], 0 }, alt[2] = { alt_of(g_f[pos[i]]), 0 };
        sc_value_t v = score1(s, "f", pos[i], ref, alt);
        NEAR(v.llr, hand_llr(m, "f", pos[i], ref, alt, 101, 1, 1, 2, NULL, NULL), 1e-4);
        NEAR(v.embdist, hand_embdist(m, "f", pos[i], ref, alt, 101, 1, 2), 1e-5);
    }
    sc_destroy(s);
    /* padded and clipped windows differ near the ends */
    sc_t *s2 = scorer(m, 101, SC_MASKED, SC_RC_AVERAGE, 0);
    char ref[2] = { g_f[0], 0 }, alt[2] = { alt_of(g_f[0]), 0 };
    sc_value_t a = score1(s2, "f", 0, ref, alt);
    s = scorer(m, 101, SC_MASKED, SC_RC_AVERAGE, 1);
    sc_value_t b = score1(s, "f", 0, ref, alt);
    assert_true(fabs(a.llr - b.llr) > 1e-6);
    sc_destroy(s);
    sc_destroy(s2);
    /* the 150 bp contig with a 512 window */
    s = scorer(m, 512, SC_MASKED, SC_RC_AVERAGE, 0);
    int64_t spos[] = { 0, 75, 149 };
    for (int i = 0; i < 3; i++) {
        char r1[2] = { g_s[spos[i]], 0 }, a1[2] = { alt_of(g_s[spos[i]]), 0 };
        sc_value_t v = score1(s, "s", spos[i], r1, a1);
        NEAR(v.llr, hand_llr(m, "s", spos[i], r1, a1, 512, 0, 1, 2, NULL, NULL), 1e-4);
        NEAR(v.embdist, hand_embdist(m, "s", spos[i], r1, a1, 512, 0, 2), 1e-5);
    }
    sc_destroy(s);
    md_model_free(m);
}

/* Scoring the reverse-complemented reference ("r") with complemented alleles gives the same
 * values as "f" (the two strand passes swap), for even and odd windows, near the ends too. */
static void test_strand_symmetry(void **st)
{
    (void)st;
    const char *dirs[2] = { PH, PS };
    int64_t C = (int64_t)strlen(g_f);
    for (int mi = 0; mi < 2; mi++) {
        md_model_t *m = load(dirs[mi]);
        for (int wi = 0; wi < 2; wi++)
            for (int mode = 0; mode < 2; mode++) {
                int64_t W = wi ? 64 : 101;
                sc_t *s = scorer(m, W, mode ? SC_UNMASKED : SC_MASKED, SC_RC_AVERAGE, 0);
                int64_t pos[] = { 0, 5, 1000, C - 3 };
                for (int i = 0; i < 4; i++) {
                    int64_t p = pos[i];
                    /* SNV, MNV (2 bases), complex deletion (2 -> 1), insertion (1 -> 3) */
                    char ref[4][4], alt[4][4];
                    snprintf(ref[0], 4, "%c", g_f[p]);
                    snprintf(alt[0], 4, "%c", alt_of(g_f[p]));
                    snprintf(ref[1], 4, "%c%c", g_f[p], g_f[p + 1]);
                    snprintf(alt[1], 4, "%c%c", alt_of(g_f[p]), alt_of(g_f[p + 1]));
                    snprintf(ref[2], 4, "%c%c", g_f[p], g_f[p + 1]);
                    snprintf(alt[2], 4, "%c", alt_of(g_f[p]));
                    snprintf(ref[3], 4, "%c", g_f[p]);
                    snprintf(alt[3], 4, "%cGT", g_f[p]);
                    for (int k = 0; k < 4; k++) {
                        int64_t rl = (int64_t)strlen(ref[k]);
                        char *rr = revcomp_str(ref[k]), *ra = revcomp_str(alt[k]);
                        sc_value_t a = score1(s, "f", p, ref[k], alt[k]);
                        sc_value_t b = score1(s, "r", C - p - rl, rr, ra);
                        if (k < 2) {
                            assert_false(isnan(a.llr));
                            NEAR(a.llr, b.llr, 1e-5);
                            NEAR(a.pref, b.pref, 1e-6);
                        } else {
                            assert_int_equal(a.llr_reason, SC_R_INDEL);
                            assert_int_equal(b.llr_reason, SC_R_INDEL);
                        }
                        assert_false(isnan(a.embdist));
                        NEAR(a.embdist, b.embdist, 1e-6 + 1e-4 * fabs(a.embdist));
                        free(rr);
                        free(ra);
                    }
                }
                sc_destroy(s);
            }
        md_model_free(m);
    }
}

/* An MNV scores the sum of its changed positions (unchanged middle bases ignored); P is the
 * product. */
static void test_mnv_sum(void **st)
{
    (void)st;
    md_model_t *m = load(PH);
    for (int mode = 0; mode < 2; mode++) {
        sc_t *s = scorer(m, 101, mode ? SC_UNMASKED : SC_MASKED, SC_RC_AVERAGE, 0);
        int64_t p = 500;
        char ref[4] = { g_f[p], g_f[p + 1], g_f[p + 2], 0 };
        char alt[4] = { alt_of(g_f[p]), g_f[p + 1], alt_of(g_f[p + 2]), 0 };
        char r0[2] = { ref[0], 0 }, a0[2] = { alt[0], 0 }, r2[2] = { ref[2], 0 }, a2[2] = { alt[2], 0 };
        sc_value_t v = score1(s, "f", p, ref, alt);
        sc_value_t v0 = score1(s, "f", p, r0, a0), v2 = score1(s, "f", p + 2, r2, a2);
        if (mode == 0) {
            NEAR(v.llr, v0.llr + v2.llr, 1e-5);
            NEAR(v.pref, v0.pref * v2.pref, 1e-6);
            NEAR(v.palt, v0.palt * v2.palt, 1e-6);
        }
        /* masked: one masked window per changed position; unmasked: every changed position is read
         * from the MNV's own ref window (placed on its first base, on the minus strand on its last) */
        double want = mode ? hand_llr_event_unmasked(m, "f", p, ref, alt, 101) : hand_llr(m, "f", p, ref, alt, 101, 0, 1, 2, NULL, NULL);
        NEAR(v.llr, want, 1e-4);
        sc_destroy(s);
    }
    md_model_free(m);
}

/* EMBDIST by hand: SNV, deletion, insertion, a deletion whose right flank hits the contig end;
 * Ph and PS, with and without strand averaging. */
static void test_embdist_by_hand(void **st)
{
    (void)st;
    const char *dirs[2] = { PH, PS };
    int64_t C = (int64_t)strlen(g_f);
    for (int mi = 0; mi < 2; mi++) {
        md_model_t *m = load(dirs[mi]);
        for (int rc = 0; rc < 2; rc++) {
            sc_t *s = scorer(m, 80, SC_MASKED, rc ? SC_RC_NONE : SC_RC_AVERAGE, 0);
            struct { int64_t p; const char *ref, *alt; } v[4];
            char b[4][3][16];
            int64_t ps[4] = { 300, 700, 1200, C - 3 };
            snprintf(b[0][0], 16, "%c", g_f[ps[0]]);
            snprintf(b[0][1], 16, "%c", alt_of(g_f[ps[0]]));
            snprintf(b[1][0], 16, "%.4s", g_f + ps[1]);
            snprintf(b[1][1], 16, "%c", g_f[ps[1]]);
            snprintf(b[2][0], 16, "%c", g_f[ps[2]]);
            snprintf(b[2][1], 16, "%cACGTA", g_f[ps[2]]);
            snprintf(b[3][0], 16, "%.3s", g_f + ps[3]);
            snprintf(b[3][1], 16, "%c", g_f[ps[3]]);
            for (int i = 0; i < 4; i++) {
                v[i].p = ps[i];
                v[i].ref = b[i][0];
                v[i].alt = b[i][1];
                sc_value_t r = score1(s, "f", v[i].p, v[i].ref, v[i].alt);
                double want = hand_embdist(m, "f", v[i].p, v[i].ref, v[i].alt, 80, 0, rc ? 1 : 2);
                NEAR(r.embdist, want, 1e-6 + 1e-4 * want);
                assert_true(r.embdist > 0);
            }
            sc_destroy(s);
        }
        md_model_free(m);
    }
}

static md_model_t *random_mamba(void);

/* The scorer runs only the rows it needs (probe rows, causal windows) and pools the EMBDIST
 * windows on the backend: with position chunks of 53 rows (windows of 80 and 90 cross them, a
 * batch holds several windows), values still equal the hand values of the same chunking. */
static void test_chunked_outputs(void **st)
{
    (void)st;
    const int64_t chunk = g_be->chunk;
    g_be->chunk = 53;
    const char *dirs[2] = { PH, PS };
    int64_t ps[3] = { 5, 777, 1500 };
    for (int mi = 0; mi < 2; mi++) {
        md_model_t *m = load(dirs[mi]);
        for (int mode = 0; mode < 2; mode++) {
            sc_t *s = scorer(m, 80, mode ? SC_UNMASKED : SC_MASKED, SC_RC_AVERAGE, 0);
            for (int i = 0; i < 3; i++) {
                char ref[2] = { g_f[ps[i]], 0 }, alt[2] = { alt_of(g_f[ps[i]]), 0 };
                double pr, pa;
                double want = hand_llr(m, "f", ps[i], ref, alt, 80, 0, !mode, 2, &pr, &pa);
                double wemb = hand_embdist(m, "f", ps[i], ref, alt, 80, 0, 2);
                sc_value_t v = score1(s, "f", ps[i], ref, alt);
                NEAR(v.llr, want, 1e-4);
                NEAR(v.pref, pr, 1e-5);
                NEAR(v.embdist, wemb, 1e-6 + 1e-4 * wemb);
                assert_true(v.embdist > 0);
            }
            sc_destroy(s);
        }
        md_model_free(m);
    }
    md_model_t *m = random_mamba();
    sc_t *s = scorer(m, 90, SC_MASKED, SC_RC_AVERAGE, 0);
    for (int i = 0; i < 3; i++) {
        char ref[2] = { g_f[ps[i]], 0 }, alt[2] = { alt_of(g_f[ps[i]]), 0 };
        double want = 0;
        for (int k = 0; k < 2; k++) {
            char *wr = hand_window("f", ps[i], ref, NULL, 90, 0, k), *wa = hand_window("f", ps[i], ref, alt, 90, 0, k);
            want += (hand_ll(m, wa) - hand_ll(m, wr)) / 2;
            free(wr);
            free(wa);
        }
        sc_value_t v = score1(s, "f", ps[i], ref, alt);
        NEAR(v.llr, want, 1e-3);
        assert_true(fabs(v.llr) > 1e-4);
    }
    sc_destroy(s);
    md_model_free(m);
    g_be->chunk = chunk;
}

static md_model_t *random_mamba(void)
{
    md_config_t c;
    md_config_init(&c);
    c.arch = MD_ARCH_MAMBA;
    c.d_model = 32;
    c.n_layer = 2;
    c.vocab_size_orig = 12;
    assert_int_equal(md_config_finish(&c, "test"), 0);
    md_weights_t *w = md_weights_alloc(&c);
    assert_non_null(w);
    md_weights_init(w, 11);
    /* larger embeddings so that the logits depend on the context */
    for (int i = 0; i < w->n; i++)
        if (w->p[i].kind == MD_P_EMBED)
            for (size_t k = 0; k < w->p[i].numel; k++) w->p[i].data[k] *= 40.0f;
    md_model_t *m = md_model_from_weights(w, g_be);
    assert_non_null(m);
    return m;
}

/* Causal Mamba: LLR = LL(alt window) - LL(ref window), SNVs and indels, strand-averaged. */
static void test_causal(void **st)
{
    (void)st;
    md_model_t *m = random_mamba();
    for (int rc = 0; rc < 2; rc++) {
        int npass = rc ? 1 : 2;
        sc_t *s = scorer(m, 90, SC_MASKED, rc ? SC_RC_NONE : SC_RC_AVERAGE, 0);
        const char *refs[3], *alts[3];
        char b[3][2][8];
        int64_t ps[3] = { 40, 900, 1990 };
        snprintf(b[0][0], 8, "%c", g_f[ps[0]]);
        snprintf(b[0][1], 8, "%c", alt_of(g_f[ps[0]]));
        snprintf(b[1][0], 8, "%.3s", g_f + ps[1]);
        snprintf(b[1][1], 8, "%c", g_f[ps[1]]);
        snprintf(b[2][0], 8, "%c", g_f[ps[2]]);
        snprintf(b[2][1], 8, "%cTT", g_f[ps[2]]);
        for (int i = 0; i < 3; i++) {
            refs[i] = b[i][0];
            alts[i] = b[i][1];
            double want = 0;
            for (int k = 0; k < npass; k++) {
                char *wr = hand_window("f", ps[i], refs[i], NULL, 90, 0, k);
                char *wa = hand_window("f", ps[i], refs[i], alts[i], 90, 0, k);
                want += (hand_ll(m, wa) - hand_ll(m, wr)) / npass;
                free(wr);
                free(wa);
            }
            sc_value_t v = score1(s, "f", ps[i], refs[i], alts[i]);
            assert_int_equal(v.llr_reason, -1);
            NEAR(v.llr, want, 1e-3);
            assert_true(fabs(v.llr) > 1e-4);
            assert_true(isnan(v.pref));
            assert_false(isnan(v.embdist));
        }
        sc_destroy(s);
    }
    md_model_free(m);
}

/* With the [MASK] embedding set to that of A (Ph), the masked window of a REF=A variant is the
 * unmasked window: both modes must then agree exactly; for REF != A they differ. */
static void test_masked_unmasked_trivial(void **st)
{
    (void)st;
    md_config_t c;
    assert_int_equal(md_config_load(&c, PH "/config.json"), 0);
    md_weights_t *w = md_weights_alloc(&c);
    assert_non_null(w);
    assert_int_equal(md_weights_load(w, PH "/model.safetensors"), 0);
    const md_vocab_t *voc = md_vocab_get(c.tokenizer);
    md_param_t *E = md_weights_find(w, MD_P_EMBED, -1, -1);
    memcpy(E->data + (size_t)voc->id_mask * c.d_model, E->data + (size_t)voc->id_base[MD_BASE_A] * c.d_model,
           c.d_model * sizeof(float));
    md_model_t *m = md_model_from_weights(w, g_be);
    assert_non_null(m);
    sc_t *sm = scorer(m, 101, SC_MASKED, SC_RC_NONE, 0), *su = scorer(m, 101, SC_UNMASKED, SC_RC_NONE, 0);
    int nA = 0, nO = 0;
    for (int64_t p = 100; p < 400 && (nA < 3 || nO < 3); p += 7) {
        char ref[2] = { g_f[p], 0 }, alt[2] = { alt_of(g_f[p]), 0 };
        sc_value_t a = score1(sm, "f", p, ref, alt), b = score1(su, "f", p, ref, alt);
        if (ref[0] == 'A') { NEAR(a.llr, b.llr, 1e-6); nA++; }
        else if (fabs(a.llr - b.llr) > 1e-4) nO++;
    }
    assert_true(nA >= 3);
    assert_true(nO >= 3);
    sc_destroy(sm);
    sc_destroy(su);
    md_model_free(m);
}

/* Unscorable ALTs get NAN and a reason; the scorable ALTs of a multi-allelic record equal their
 * single-ALT values. REF mismatch and unknown contigs. */
static void test_reasons_and_checks(void **st)
{
    (void)st;
    md_model_t *m = load(PH);
    sc_t *s = scorer(m, 101, SC_MASKED, SC_RC_AVERAGE, 0);
    int64_t p = 800;
    char ref[2] = { g_f[p], 0 }, a1[2] = { alt_of(g_f[p]), 0 }, a2[2] = { comp(g_f[p]), 0 }, ins[4];
    snprintf(ins, sizeof ins, "%cAC", g_f[p]);
    const char *alts[] = { a1, "<DEL>", "*", ".", "C[f:5[", ".A", "N", "R", ref, a2, ins };
    int nalt = (int)(sizeof alts / sizeof *alts);
    sc_value_t v[16];
    assert_int_equal(sc_score_variant(s, "f", p + 1, ref, alts, nalt, v), 0);
    int want[] = { -1, SC_R_SYMBOLIC, SC_R_STAR, SC_R_MISSING, SC_R_BREAKEND, SC_R_BREAKEND, SC_R_BAD_BASE,
                   SC_R_BAD_BASE, SC_R_SAME, -1, SC_R_INDEL };
    for (int i = 0; i < nalt; i++) {
        assert_int_equal(v[i].llr_reason, want[i]);
        assert_true(want[i] < 0 ? !isnan(v[i].llr) : isnan(v[i].llr));
    }
    /* N ALT: no LLR, but an embedding distance; the insertion has one too */
    assert_int_equal(v[6].emb_reason, -1);
    assert_false(isnan(v[6].embdist));
    assert_int_equal(v[10].emb_reason, -1);
    assert_false(isnan(v[10].embdist));
    assert_int_equal(v[7].emb_reason, SC_R_BAD_BASE);
    sc_value_t s1 = score1(s, "f", p, ref, a1), s2 = score1(s, "f", p, ref, a2);
    NEAR(v[0].llr, s1.llr, 1e-6);
    NEAR(v[9].llr, s2.llr, 1e-6);
    NEAR(v[0].embdist, s1.embdist, 1e-7);
    /* lower-case alleles are the same alleles */
    char lref[2] = { (char)(ref[0] | 0x20), 0 }, lalt[2] = { (char)(a1[0] | 0x20), 0 };
    sc_value_t s3 = score1(s, "f", p, lref, lalt);
    NEAR(s3.llr, s1.llr, 1e-6);
    /* REF mismatch: an error by default */
    char bad[2] = { alt_of(ref[0]), 0 };
    const char *one[1] = { a1 };
    assert_int_equal(sc_score_variant(s, "f", p + 1, bad, one, 1, v), SC_EDATA);
    assert_int_equal(sc_score_variant(s, "f", (int64_t)strlen(g_f), "AC", one, 1, v), SC_EDATA);
    assert_int_equal(sc_score_variant(s, "chrf", p + 1, ref, one, 1, v), SC_EDATA);
    sc_destroy(s);
    sc_opts_t o;
    sc_opts_init(&o);
    o.window = 101;
    o.ref_mismatch = SC_REFMM_SKIP;
    s = sc_init(m, g_fasta, &o);
    assert_int_equal(sc_score_variant(s, "f", p + 1, bad, one, 1, v), 0);
    assert_int_equal(v[0].llr_reason, SC_R_REF_MISMATCH);
    assert_int_equal(v[0].emb_reason, SC_R_REF_MISMATCH);
    assert_true(isnan(v[0].llr) && isnan(v[0].embdist));
    assert_int_equal(sc_stats(s)->n_ref_mismatch, 1);
    sc_destroy(s);
    md_model_free(m);
}

/* A VCF run: records out unchanged and in order, values independent of the batch size and equal
 * to single-variant scoring; the table has one row per scored ALT and is indexed. */
static void run_vcf(md_model_t *m, int batch, const char *vcf, const char *out, const char *tsvp, float **vals, int *nv)
{
    md_vcf_ropts_t ro;
    md_vcf_ropts_init(&ro);
    md_vcf_reader_t *in = md_vcf_open(vcf, &ro);
    assert_non_null(in);
    sc_opts_t o;
    sc_opts_init(&o);
    o.window = 64;
    o.batch_size = batch;
    sc_t *s = sc_init(m, g_fasta, &o);
    assert_non_null(s);
    char **hl;
    int nh = sc_header_lines(s, &hl);
    assert_int_equal(nh, 2);
    md_vcf_writer_t *w = md_vcf_writer_open(out, 0, md_vcf_header(in), (const char *const *)hl, nh, NULL, 0);
    assert_non_null(w);
    sc_tsv_t *t = tsvp ? sc_tsv_open(tsvp, s, "test") : NULL;
    assert_int_equal(sc_run_vcf(s, in, w, t), 0);
    if (t) {
        assert_int_equal(sc_tsv_finish(t), 0);
        assert_int_equal(sc_tsv_commit(t), 0);
    }
    assert_int_equal(md_vcf_writer_close(w), 0);
    assert_int_equal(md_vcf_close(in), 0);
    sc_header_lines_free(hl, nh);
    /* read back */
    htsFile *fp = hts_open(out, "r");
    bcf_hdr_t *h = bcf_hdr_read(fp);
    bcf1_t *r = bcf_init();
    *nv = 0;
    *vals = NULL;
    float *buf = NULL;
    int mb = 0;
    while (bcf_read(fp, h, r) == 0) {
        bcf_unpack(r, BCF_UN_ALL);
        for (int k = 0; k < 2; k++) {
            int n = bcf_get_info_float(h, r, k ? "MAMBA_EMBDIST" : "MAMBA_LLR", &buf, &mb);
            if (r->n_allele == 1) { assert_true(n < 0); continue; }   /* no ALT: no values */
            assert_int_equal(n, r->n_allele - 1);
            *vals = realloc(*vals, (*nv + n) * sizeof **vals);
            for (int i = 0; i < n; i++) (*vals)[(*nv)++] = bcf_float_is_missing(buf[i]) ? NAN : buf[i];
        }
    }
    free(buf);
    bcf_destroy(r);
    bcf_hdr_destroy(h);
    hts_close(fp);
    sc_destroy(s);
}

static void test_vcf_batches(void **st)
{
    (void)st;
    md_model_t *m = load(PS);
    char vcf[400], out[400], tsvp[400];
    snprintf(vcf, sizeof vcf, "%s/in.vcf", g_dir);
    snprintf(out, sizeof out, "%s/out.bcf", g_dir);
    snprintf(tsvp, sizeof tsvp, "%s/out.tsv.gz", g_dir);
    FILE *fp = fopen(vcf, "w");
    fprintf(fp, "##fileformat=VCFv4.2\n##contig=<ID=f,length=%zu>\n##contig=<ID=s,length=150>\n"
                "##INFO=<ID=X,Number=1,Type=Integer,Description=\"x\">\n"
                "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n", strlen(g_f));
    int nrec = 0, nscored_rows = 0;
    int64_t C = (int64_t)strlen(g_f);
    for (int64_t p = 0; p < C; p += 97) {
        char r = g_f[p], a = alt_of(r);
        switch (nrec % 5) {
        case 0: fprintf(fp, "f\t%lld\trs%d\t%c\t%c\t.\tPASS\tX=%d\n", (long long)p + 1, nrec, r, a, nrec); nscored_rows++; break;
        case 1: fprintf(fp, "f\t%lld\t.\t%c\t%c,%c,<DEL>\t50\t.\t.\n", (long long)p + 1, r, a, comp(r)); nscored_rows += 2; break;
        case 2: fprintf(fp, "f\t%lld\t.\t%.3s\t%c\t.\t.\tX=1\n", (long long)p + 1, g_f + p, r); nscored_rows++; break;
        case 3: fprintf(fp, "f\t%lld\t.\t%c%c\t%c%c\t.\t.\t.\n", (long long)p + 1, r, g_f[p + 1], a, alt_of(g_f[p + 1])); nscored_rows++; break;
        default: fprintf(fp, "f\t%lld\t.\t%c\t.\t.\t.\t.\n", (long long)p + 1, r); break;
        }
        nrec++;
    }
    fprintf(fp, "f\t%lld\t.\t%c\t%c\t.\t.\t.\n", (long long)C, g_f[C - 1], alt_of(g_f[C - 1]));
    fprintf(fp, "s\t1\t.\t%c\t%c,*\t.\t.\t.\n", g_s[0], alt_of(g_s[0]));
    nscored_rows += 2;
    fclose(fp);
    float *v1, *v2, *v3;
    int n1, n2, n3;
    run_vcf(m, 1, vcf, out, NULL, &v1, &n1);
    run_vcf(m, 7, vcf, out, NULL, &v2, &n2);
    run_vcf(m, 1000, vcf, out, tsvp, &v3, &n3);
    assert_int_equal(n1, n2);
    assert_int_equal(n1, n3);
    int nscored = 0;
    for (int i = 0; i < n1; i++) {
        assert_int_equal(isnan(v1[i]), isnan(v2[i]));
        assert_int_equal(isnan(v1[i]), isnan(v3[i]));
        if (isnan(v1[i])) continue;
        nscored++;
        NEAR(v1[i], v2[i], 1e-5 + 1e-4 * fabs(v1[i]));
        NEAR(v1[i], v3[i], 1e-5 + 1e-4 * fabs(v1[i]));
    }
    assert_true(nscored > 40);
    /* first record equals single-variant scoring */
    sc_opts_t o;
    sc_opts_init(&o);
    o.window = 64;
    sc_t *s = sc_init(m, g_fasta, &o);
    char r0[2] = { g_f[0], 0 }, a0[2] = { alt_of(g_f[0]), 0 };
    sc_value_t v = score1(s, "f", 0, r0, a0);
    NEAR(v1[0], v.llr, 1e-5);
    NEAR(v1[1], v.embdist, 1e-6 + 1e-4 * v.embdist);
    sc_destroy(s);
    /* the table: bgzipped, indexed, one row per scored ALT */
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "test -s %s.tbi && zcat %s | grep -vc '^#' > %s/n.txt", tsvp, tsvp, g_dir);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s/n.txt", g_dir);
    fp = fopen(cmd, "r");
    int rows = 0;
    assert_int_equal(fscanf(fp, "%d", &rows), 1);
    fclose(fp);
    unlink(cmd);
    assert_int_equal(rows, nscored_rows);
    free(v1);
    free(v2);
    free(v3);
    md_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_place),
        cmocka_unit_test(test_llr_by_hand),
        cmocka_unit_test(test_pad_and_short_contig),
        cmocka_unit_test(test_strand_symmetry),
        cmocka_unit_test(test_mnv_sum),
        cmocka_unit_test(test_embdist_by_hand),
        cmocka_unit_test(test_causal),
        cmocka_unit_test(test_masked_unmasked_trivial),
        cmocka_unit_test(test_reasons_and_checks),
        cmocka_unit_test(test_vcf_batches),
        cmocka_unit_test(test_chunked_outputs),
    };
    return cmocka_run_group_tests_name("score", tests, setup, teardown);
}
