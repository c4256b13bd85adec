/* score.c: zero-shot variant scoring (see score.h).
 *
 * Flow: each variant ("item": a VCF record or an all-SNVs position) is classified per ALT, then
 * turned into model windows appended to one packed token batch:
 *   - ref/alt windows (unmasked) for MAMBA_EMBDIST, and for causal models the LLR (sequence
 *     log-likelihoods of the two windows);
 *   - masked-LM LLR: masked mode adds one masked window per changed position ("site", shared by
 *     every ALT and record of the batch at that position); unmasked mode reads the logits of the
 *     record's own ref window at each changed position ("probes").
 * Every window exists once per strand pass (pass 0: forward strand; pass 1, with --rc average:
 * the reverse complement, built in the minus strand's own coordinates so that scoring the
 * reverse-complemented genome swaps the passes exactly). For RC-equivariant (PS) models a minus
 * window that is the exact reverse complement of its plus window is not run: its outputs equal
 * the plus window's read backwards with complemented bases.
 * When batch_size windows are queued, one md_model_forward call runs them. Only the rows that
 * need logits are computed and downloaded (MD_ROWS_SELECTED): probe rows, and every row of a
 * causal window; its emit callback walks them in order with a window cursor and a probe cursor
 * (probes sorted by row) and accumulates log-likelihoods and the log-probs of A/C/G/T at probe
 * rows. The windows of MAMBA_EMBDIST are pooling segments: the backend returns their mean hidden
 * states (pool_cb keeps D values per window). Then every queued item gets its values and is
 * emitted in input order. */
#define _GNU_SOURCE  /* qsort_r */
#include "score.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <htslib/bgzf.h>
#include <htslib/khash.h>
#include <htslib/kstring.h>
#include <htslib/tbx.h>

#include "md.h"
#include "tokenizer.h"

KHASH_MAP_INIT_INT64(site, int)

#define FETCH_BLOCK  ((int64_t)1 << 20)   /* bases read from the FASTA at a time */
#define MAX_BATCH_TOKENS ((int64_t)1 << 22)

typedef struct {
    int64_t off, len;   /* rows of the packed batch */
    int emb, causal;    /* accumulate the pooled hidden state / the sequence log-likelihood */
    int64_t hs;         /* offset of its D mean values in s->hsum */
    double ll;
} win_t;

typedef struct {
    int64_t row;        /* row of the packed batch */
    int comp;           /* 1: an aliased minus-strand probe read on the plus window */
    float lp[4];        /* log P(A,C,G,T) renormalised, in the probed strand's orientation */
} probe_t;

typedef struct {
    int probe[2];       /* per pass; -1 when the pass is not run */
    uint8_t ref, alt;   /* base codes on the plus strand */
} chg_t;

typedef struct {
    int llr_reason, emb_reason;   /* -1: to be scored */
    int chg0, nchg;               /* masked-LM LLR: changed positions in s->chg */
    int win[2];                   /* alt window per pass, or -1 */
} job_t;

typedef struct {
    bcf1_t *rec;                  /* the VCF record, or NULL */
    int tid;
    int64_t pos;                  /* 0-based */
    const char *const *al;        /* al[0] REF, al[1..nalt] ALTs */
    int nalt;
    int refmm;                    /* REF differs from the FASTA (skip / flag) */
    int refwin[2];
    int job0;                     /* first of its nalt jobs */
} item_t;

typedef int (*emit_item_fn)(sc_t *s, const item_t *it, const sc_value_t *v);

struct sc_s {
    md_model_t *m;
    md_fasta_t *fa;
    const md_contigs_t *ctg;
    const md_config_t *cfg;
    const md_vocab_t *voc;
    sc_opts_t o;
    int64_t W;
    int npass, ps, causal, D, width, V;
    int id_acgt[4], id_mask;
    int8_t id2base[MD_MAX_VOCAB];

    /* queue */
    item_t *items;
    int nitems, mitems;
    bcf1_t **recs;                /* record pool: recs[i] belongs to items[i] */
    int nrecs;
    job_t *jobs;
    int njobs, mjobs;
    chg_t *chg;
    int nchg, mchg;
    probe_t *probes;
    int nprobe, mprobe;
    int *porder;
    win_t *wins;
    int nwin, mwin;
    int32_t *ids;
    int64_t ntok, mtok;
    int64_t *seq_off;
    double *hsum;
    int64_t nhs, mhs;
    int64_t *sel;                 /* rows whose logits the batch needs [nsel] */
    int64_t nsel, msel;
    int64_t *pool_beg, *pool_end; /* MAMBA_EMBDIST windows' rows [npool] */
    int npool, mpool;
    khash_t(site) *sites;
    int (*sitep)[2];
    int nsite, msite;
    sc_value_t *vals;
    int mvals;

    /* forward cursor */
    int wcur, pcur;

    /* reference cache (plus strand, base codes without the soft-mask bit) */
    int ctid;
    int64_t cbeg, cend;
    uint8_t *cbuf;
    md_seq_t frec;
    uint8_t *buf[4];              /* scratch code buffers */
    int64_t mbuf;

    /* VCF run */
    const bcf_hdr_t *ihdr;
    md_vcf_writer_t *out;
    sc_tsv_t *tsv;
    const char *in_name;
    int last_rid, last_tid;
    float *fbuf;
    int mfbuf;
    emit_item_fn emit;
    sc_value_t *capture;          /* sc_score_variant */

    sc_stats_t st;
    int64_t done;
    void (*progress)(void *ud, int64_t done);
    void *progress_ud;
    kstring_t ks;
};

struct sc_tsv_s {
    char *path, *tmp, *tmp_idx, *idx;
    BGZF *bz;
    int probs;
    kstring_t ks;
    int64_t rows;
    int finished;
};

/* ---- small helpers ------------------------------------------------------------------------- */

static const char *reason_names[SC_R_NREASONS] = {
    "missing ALT", "'*' allele", "symbolic allele", "breakend", "non-ACGT base", "ALT equals REF",
    "indel (LLR needs a causal model)", "REF mismatch",
};

const char *sc_reason_name(int r)
{
    return r >= 0 && r < SC_R_NREASONS ? reason_names[r] : "?";
}

static inline uint8_t comp_code(uint8_t c) { return c < 4 ? (uint8_t)(3 - c) : 4; }

/* Grows *p (element size sz) to hold at least n elements. 0 / -1 (logged). */
static int grow(void *pp, int64_t *m, int64_t n, size_t sz)
{
    if (n <= *m) return 0;
    int64_t nm = *m ? *m : 16;
    while (nm < n) nm *= 2;
    void *q = md_realloc(*(void **)pp, (size_t)nm * sz);
    if (!q) return -1;
    *(void **)pp = q;
    *m = nm;
    return 0;
}

static int growi(void *pp, int *m, int n, size_t sz)
{
    int64_t mm = *m;
    if (grow(pp, &mm, n, sz) < 0) return -1;
    if (mm > INT32_MAX) mm = INT32_MAX;
    *m = (int)mm;
    return 0;
}

/* ---- options ------------------------------------------------------------------------------- */

int64_t sc_default_window(const md_config_t *cfg)
{
    int64_t L = cfg ? cfg->max_seq_len : 0;
    if (L <= 0) return 512;
    return L < 512 ? 512 : L > 4096 ? 4096 : L;
}

void sc_opts_init(sc_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->mode = SC_MASKED;
    o->rc = SC_RC_AVERAGE;
    o->ref_mismatch = SC_REFMM_ERROR;
}

int sc_opts_check(const sc_opts_t *o)
{
    if (o->window < 0) { md_error("window %" PRId64 " is negative", o->window); return SC_EDATA; }
    if (o->window > ((int64_t)1 << 24)) {
        md_error("window %" PRId64 " is too long (at most %d bases)", o->window, 1 << 24);
        return SC_EDATA;
    }
    if (o->batch_size < 0) { md_error("batch size %d is negative", o->batch_size); return SC_EDATA; }
    if (o->mode != SC_MASKED && o->mode != SC_UNMASKED) { md_error("bad mode"); return SC_EDATA; }
    if (o->rc != SC_RC_AVERAGE && o->rc != SC_RC_NONE) { md_error("bad strand mode"); return SC_EDATA; }
    if (o->ref_mismatch < SC_REFMM_ERROR || o->ref_mismatch > SC_REFMM_FLAG) {
        md_error("bad --ref-mismatch value");
        return SC_EDATA;
    }
    return 0;
}

int64_t sc_window_place(int64_t clen, int64_t W, int pad, int64_t q, int64_t *start)
{
    int64_t st = q - (W - 1) / 2;
    if (pad) { *start = st; return W; }
    if (clen <= W) { *start = 0; return clen; }
    if (st < 0) st = 0;
    if (st > clen - W) st = clen - W;
    *start = st;
    return W;
}

/* ---- init ---------------------------------------------------------------------------------- */

sc_t *sc_init(md_model_t *m, md_fasta_t *fa, const sc_opts_t *o)
{
    if (sc_opts_check(o) < 0) return NULL;
    sc_t *s = md_calloc(1, sizeof *s);
    if (!s) return NULL;
    s->m = m;
    s->fa = fa;
    s->ctg = md_fasta_contigs(fa);
    s->cfg = md_model_config(m);
    s->o = *o;
    if (!s->o.batch_size) s->o.batch_size = 64;
    if (!s->o.model_name) s->o.model_name = "model";
    if (!s->o.fasta_name) s->o.fasta_name = "reference";
    s->W = o->window ? o->window : sc_default_window(s->cfg);
    s->o.window = s->W;
    s->voc = md_vocab_get(s->cfg->tokenizer);
    if (!s->voc) goto fail;
    s->causal = s->cfg->arch == MD_ARCH_MAMBA;
    s->ps = s->cfg->arch == MD_ARCH_CADUCEUS && s->cfg->rcps;
    s->npass = s->o.rc == SC_RC_AVERAGE ? 2 : 1;
    s->width = md_model_width(m);
    s->D = s->ps ? s->cfg->d_model : s->width;
    s->V = s->cfg->vocab_size;
    if (s->V > MD_MAX_VOCAB) { md_error("vocabulary of %d tokens is too large", s->V); goto fail; }
    for (int v = 0; v < MD_MAX_VOCAB; v++) s->id2base[v] = -1;
    for (int b = 0; b < 4; b++) {
        s->id_acgt[b] = s->voc->id_base[b];
        if (s->id_acgt[b] < 0 || s->id_acgt[b] >= s->V) {
            md_error("tokenizer '%s' does not fit the model's vocabulary of %d", s->voc->name, s->V);
            goto fail;
        }
        s->id2base[s->id_acgt[b]] = (int8_t)b;
    }
    s->id_mask = s->voc->id_mask;
    if (!s->causal && (s->id_mask < 0 || s->id_mask >= s->V)) {
        md_error("tokenizer '%s' has no [MASK] token in the model's vocabulary", s->voc->name);
        goto fail;
    }
    if (!(s->sites = kh_init(site))) { md_error("out of memory"); goto fail; }
    s->ctid = -1;
    s->last_rid = -1;
    md_seq_init(&s->frec);
    return s;
fail:
    sc_destroy(s);
    return NULL;
}

void sc_destroy(sc_t *s)
{
    if (!s) return;
    for (int i = 0; i < s->nrecs; i++) bcf_destroy(s->recs[i]);
    free(s->recs);
    free(s->items);
    free(s->jobs);
    free(s->chg);
    free(s->probes);
    free(s->porder);
    free(s->wins);
    free(s->ids);
    free(s->seq_off);
    free(s->hsum);
    free(s->sel);
    free(s->pool_beg);
    free(s->pool_end);
    if (s->sites) kh_destroy(site, s->sites);
    free(s->sitep);
    free(s->vals);
    free(s->cbuf);
    md_seq_destroy(&s->frec);
    for (int i = 0; i < 4; i++) free(s->buf[i]);
    free(s->fbuf);
    free(s->ks.s);
    free(s);
}

const sc_opts_t *sc_get_opts(const sc_t *s) { return &s->o; }
const sc_stats_t *sc_stats(const sc_t *s) { return &s->st; }

void sc_set_progress(sc_t *s, void (*fn)(void *ud, int64_t done), void *ud)
{
    s->progress = fn;
    s->progress_ud = ud;
}

/* ---- reference access ---------------------------------------------------------------------- */

/* Plus-strand base codes of [a, b) of contig tid into out; positions outside the contig are N. */
static int get_bases(sc_t *s, int tid, int64_t a, int64_t b, uint8_t *out)
{
    int64_t clen = md_contigs_len(s->ctg, tid);
    int64_t i = a;
    for (; i < b && i < 0; i++) out[i - a] = MD_BASE_N;
    int64_t lo = a < 0 ? 0 : a, hi = b > clen ? clen : b;
    if (lo < hi) {
        if (tid != s->ctid || lo < s->cbeg || hi > s->cend) {
            /* records come sorted: keep some bases behind the request for minus-strand windows */
            int64_t fb = lo - 2 * s->W - 4096;
            if (fb < 0) fb = 0;
            int64_t fe = hi - fb > FETCH_BLOCK ? hi : fb + FETCH_BLOCK;
            if (fe > clen) fe = clen;
            md_region_t r;
            memset(&r, 0, sizeof r);
            r.contig = (char *)md_contigs_name(s->ctg, tid);
            r.tid = tid;
            r.beg = fb;
            r.end = fe;
            s->ctid = -1;
            if (md_fasta_fetch(s->fa, &r, &s->frec) < 0) return SC_EDATA;
            uint8_t *nb = md_realloc(s->cbuf, (size_t)(fe - fb));
            if (!nb) return SC_EINTERNAL;
            s->cbuf = nb;
            for (int64_t k = 0; k < fe - fb; k++) nb[k] = s->frec.seq[k] & MD_BASE_MASK;
            s->ctid = tid;
            s->cbeg = fb;
            s->cend = fe;
        }
        memcpy(out + (lo - a), s->cbuf + (lo - s->cbeg), (size_t)(hi - lo));
    }
    for (i = hi > a ? hi : a; i < b; i++) out[i - a] = MD_BASE_N;
    return 0;
}

/* Codes of [a, b) in the coordinates of strand k (k = 1: the reverse complement of the contig,
 * position x there is clen-1-x on the plus strand). */
static int strand_bases(sc_t *s, int tid, int k, int64_t a, int64_t b, uint8_t *out)
{
    if (b <= a) return 0;
    if (!k) return get_bases(s, tid, a, b, out);
    int64_t clen = md_contigs_len(s->ctg, tid);
    int r = get_bases(s, tid, clen - b, clen - a, out);
    if (r < 0) return r;
    md_revcomp_codes(out, out, b - a);
    return 0;
}

static int ensure_bufs(sc_t *s, int64_t n)
{
    if (n <= s->mbuf) return 0;
    for (int i = 0; i < 4; i++) {
        uint8_t *p = md_realloc(s->buf[i], (size_t)n);
        if (!p) return SC_EINTERNAL;
        s->buf[i] = p;
    }
    s->mbuf = n;
    return 0;
}

/* ---- windows and probes -------------------------------------------------------------------- */

static int add_window(sc_t *s, const uint8_t *codes, int64_t len, int64_t mask, int emb, int causal)
{
    if (growi(&s->wins, &s->mwin, s->nwin + 1, sizeof *s->wins) < 0) return SC_EINTERNAL;
    if (grow(&s->ids, &s->mtok, s->ntok + len, sizeof *s->ids) < 0) return SC_EINTERNAL;
    win_t *w = &s->wins[s->nwin];
    memset(w, 0, sizeof *w);
    w->off = s->ntok;
    w->len = len;
    w->emb = emb;
    w->causal = causal;
    w->hs = -1;
    md_tokenize(s->voc, codes, len, s->ids + s->ntok);
    if (mask >= 0) s->ids[s->ntok + mask] = s->id_mask;
    if (emb) {
        if (grow(&s->hsum, &s->mhs, s->nhs + s->D, sizeof *s->hsum) < 0) return SC_EINTERNAL;
        w->hs = s->nhs;
        memset(s->hsum + s->nhs, 0, (size_t)s->D * sizeof *s->hsum);
        s->nhs += s->D;
    }
    s->ntok += len;
    s->st.n_windows++;
    s->st.n_tokens += len;
    return s->nwin++;
}

/* Whether b[0..n) is the reverse complement of a[0..n) (and the masks correspond). */
static int is_revcomp(const uint8_t *a, int64_t na, int64_t ma, const uint8_t *b, int64_t nb, int64_t mb)
{
    if (na != nb) return 0;
    if ((ma < 0) != (mb < 0) || (ma >= 0 && mb != na - 1 - ma)) return 0;
    for (int64_t i = 0; i < na; i++)
        if (b[i] != comp_code(a[na - 1 - i])) return 0;
    return 1;
}

/* Adds the windows of one pair (pass 0 plus strand, pass 1 minus strand): codes[k], len[k],
 * mask[k] (index or -1). For PS models, a minus window that is the exact reverse complement of
 * the plus window is not run (win[1] = win[0], *alias = 1). */
static int add_pair(sc_t *s, uint8_t *const codes[2], const int64_t len[2], const int64_t mask[2],
                    int emb, int causal, int win[2], int *alias)
{
    win[0] = win[1] = -1;
    *alias = 0;
    for (int k = 0; k < s->npass; k++) {
        if (k == 1 && s->ps && is_revcomp(codes[0], len[0], mask[0], codes[1], len[1], mask[1])) {
            win[1] = win[0];
            *alias = 1;
            break;
        }
        int w = add_window(s, codes[k], len[k], mask[k], emb, causal);
        if (w < 0) return w;
        win[k] = w;
    }
    return 0;
}

/* A probe of pass k at index idx (in that pass's own window orientation) of pair win/alias. */
static int add_probe(sc_t *s, const int win[2], int alias, int k, int64_t idx)
{
    if (growi(&s->probes, &s->mprobe, s->nprobe + 1, sizeof *s->probes) < 0) return SC_EINTERNAL;
    probe_t *p = &s->probes[s->nprobe];
    memset(p, 0, sizeof *p);
    const win_t *w = &s->wins[win[k]];
    if (k == 1 && alias) {
        p->row = w->off + (w->len - 1 - idx);
        p->comp = 1;
    } else {
        p->row = w->off + idx;
    }
    return s->nprobe++;
}

/* The ref window pair of an event starting at plus position pos with REF length rlen; mask (0/1)
 * masks the event position. Writes win[], *alias and the event index in each pass's window. */
static int ref_pair(sc_t *s, int tid, int64_t pos, int64_t rlen, int mask, int emb, int causal,
                    int win[2], int *alias, int64_t idx[2])
{
    int64_t clen = md_contigs_len(s->ctg, tid), len[2] = {0, 0}, mk[2] = {-1, -1};
    int r;
    if ((r = ensure_bufs(s, s->W)) < 0) return r;
    uint8_t *codes[2] = { s->buf[0], s->buf[1] };
    for (int k = 0; k < s->npass; k++) {
        int64_t q = k ? clen - pos - rlen : pos, st;
        len[k] = sc_window_place(clen, s->W, s->o.pad, q, &st);
        if ((r = strand_bases(s, tid, k, st, st + len[k], codes[k])) < 0) return r;
        idx[k] = q - st;
        if (mask) mk[k] = idx[k];
    }
    return add_pair(s, codes, len, mk, emb, causal, win, alias);
}

/* Strand-k codes of allele a (a plus-strand string) into out. */
static void allele_codes(const char *a, int64_t n, int k, uint8_t *out)
{
    for (int64_t i = 0; i < n; i++) out[i] = md_base_code[(uint8_t)a[i]] & MD_BASE_MASK;
    if (k) md_revcomp_codes(out, out, n);
}

/* The alt window pair: the ref window's start, its left flank up to the event, the ALT allele,
 * then the bases after REF until the ref window's length (fewer at a contig end without pad). */
static int alt_pair(sc_t *s, int tid, int64_t pos, int64_t rlen, const char *alt, int emb, int causal,
                    int win[2], int *alias)
{
    int64_t clen = md_contigs_len(s->ctg, tid), len[2] = {0, 0}, mk[2] = {-1, -1};
    int64_t alen = (int64_t)strlen(alt);
    int r;
    if ((r = ensure_bufs(s, s->W + alen)) < 0) return r;
    uint8_t *codes[2] = { s->buf[0], s->buf[1] };
    for (int k = 0; k < s->npass; k++) {
        int64_t q = k ? clen - pos - rlen : pos, st;
        int64_t wl = sc_window_place(clen, s->W, s->o.pad, q, &st);
        int64_t n = q - st < wl ? q - st : wl;
        if ((r = strand_bases(s, tid, k, st, st + n, codes[k])) < 0) return r;
        int64_t na = alen < wl - n ? alen : wl - n;
        allele_codes(alt, alen, k, s->buf[2]);
        memcpy(codes[k] + n, s->buf[2], (size_t)na);
        n += na;
        int64_t rb = q + rlen, re = rb + (wl - n);
        if (!s->o.pad && re > clen) re = clen;
        if (re > rb) {
            if ((r = strand_bases(s, tid, k, rb, re, codes[k] + n)) < 0) return r;
            n += re - rb;
        }
        len[k] = n;
    }
    return add_pair(s, codes, len, mk, emb, causal, win, alias);
}

/* The probes (one per pass) for the masked-LM LLR at plus position p: a masked window per site
 * (shared within the batch), or in unmasked mode a window centred on p unless the caller's ref
 * window covers p (refwin/refidx given). */
static int site_probes(sc_t *s, int tid, int64_t p, int pr[2])
{
    int64_t key = ((int64_t)tid << 40) | p;
    khiter_t k = kh_get(site, s->sites, key);
    if (k != kh_end(s->sites)) {
        int i = kh_val(s->sites, k);
        pr[0] = s->sitep[i][0];
        pr[1] = s->sitep[i][1];
        return 0;
    }
    int win[2], alias, r;
    int64_t idx[2];
    if ((r = ref_pair(s, tid, p, 1, s->o.mode == SC_MASKED, 0, 0, win, &alias, idx)) < 0) return r;
    pr[0] = pr[1] = -1;
    for (int q = 0; q < s->npass; q++)
        if ((pr[q] = add_probe(s, win, alias, q, idx[q])) < 0) return pr[q];
    if (growi(&s->sitep, &s->msite, s->nsite + 1, sizeof *s->sitep) < 0) return SC_EINTERNAL;
    s->sitep[s->nsite][0] = pr[0];
    s->sitep[s->nsite][1] = pr[1];
    int ret;
    k = kh_put(site, s->sites, key, &ret);
    if (ret < 0) { md_error("out of memory"); return SC_EINTERNAL; }
    kh_val(s->sites, k) = s->nsite++;
    return 0;
}

/* ---- classification ------------------------------------------------------------------------ */

static int is_base_string(const char *a)
{
    for (; *a; a++) {
        uint8_t c = md_base_code[(uint8_t)*a];
        if (c == MD_BASE_INVALID) return 0;
        if ((c & MD_BASE_MASK) == MD_BASE_N && toupper((unsigned char)*a) != 'N') return 0;
    }
    return 1;
}

static void classify(sc_t *s, const char *ref, const char *alt, int refmm, job_t *j)
{
    j->llr_reason = j->emb_reason = -1;
    j->chg0 = j->nchg = 0;
    j->win[0] = j->win[1] = -1;
    size_t la = strlen(alt), lr = strlen(ref);
    int r = -1;
    if (refmm) r = SC_R_REF_MISMATCH;
    else if (!la || !strcmp(alt, ".")) r = SC_R_MISSING;
    else if (!strcmp(alt, "*")) r = SC_R_STAR;
    else if (alt[0] == '<') r = SC_R_SYMBOLIC;
    else if (strchr(alt, '[') || strchr(alt, ']') || alt[0] == '.' || alt[la - 1] == '.') r = SC_R_BREAKEND;
    else if (!is_base_string(alt) || !is_base_string(ref)) r = SC_R_BAD_BASE;
    else if (la == lr && !strcasecmp(alt, ref)) r = SC_R_SAME;
    if (r >= 0) {
        j->llr_reason = j->emb_reason = r;
        return;
    }
    if (la != lr) {
        if (!s->causal) j->llr_reason = SC_R_INDEL;
        return;
    }
    if (s->causal) return;
    for (size_t i = 0; i < la; i++) {
        uint8_t a = md_base_code[(uint8_t)alt[i]] & MD_BASE_MASK, b = md_base_code[(uint8_t)ref[i]] & MD_BASE_MASK;
        if (a != b && (a > 3 || b > 3)) { j->llr_reason = SC_R_BAD_BASE; return; }
    }
}

/* Checks REF against the reference. 0 match, 1 mismatch (message in s->ks), < 0 error. */
static int check_ref(sc_t *s, const item_t *it, const char *chrom)
{
    const char *ref = it->al[0];
    const int64_t rlen = (int64_t)strlen(ref), clen = md_contigs_len(s->ctg, it->tid), show = 60;
    int64_t n = it->pos < 0 || it->pos >= clen ? 0 : (clen - it->pos < rlen ? clen - it->pos : rlen);
    int mism = rlen == 0 || n < rlen, r;
    if ((r = ensure_bufs(s, n > 0 ? n : 1)) < 0) return r;
    uint8_t *fa = s->buf[3];
    if (n > 0 && (r = get_bases(s, it->tid, it->pos, it->pos + n, fa)) < 0) return r;
    for (int64_t i = 0; i < n && !mism; i++) {
        uint8_t c = md_base_code[(uint8_t)ref[i]];
        if (c == MD_BASE_INVALID || (c & MD_BASE_MASK) != fa[i]) mism = 1;
    }
    if (!mism) return 0;
    s->ks.l = 0;
    ksprintf(&s->ks, "%s:%" PRId64, chrom, it->pos + 1);
    if (it->rec && it->rec->d.id && strcmp(it->rec->d.id, ".")) ksprintf(&s->ks, " (%s)", it->rec->d.id);
    ksprintf(&s->ks, ": REF '%.*s%s' does not match the reference '", (int)(rlen < show ? rlen : show), ref,
             rlen > show ? "..." : "");
    for (int64_t i = 0; i < n && i < show; i++) kputc(md_code_ascii[fa[i] < 5 ? fa[i] : 4], &s->ks);
    kputs(n > show ? "...'" : "'", &s->ks);
    if (n < rlen) ksprintf(&s->ks, " (contig '%s' ends at %" PRId64 ")", chrom, clen);
    ksprintf(&s->ks, " in %s", s->o.fasta_name);
    return 1;
}

/* Queues one item: checks REF, classifies its ALTs and adds their windows and probes. */
static int add_item(sc_t *s, item_t *it, const char *chrom)
{
    int r;
    s->st.n_records++;
    s->st.n_alts += it->nalt;
    if (!it->nalt) s->st.n_no_alt++;
    if ((r = check_ref(s, it, chrom)) < 0) return r;
    if (r > 0) {
        if (s->o.ref_mismatch == SC_REFMM_ERROR) {
            md_error("%s: %s; pass --ref-mismatch skip or flag to go on without scoring such records",
                     s->in_name ? s->in_name : "variant", s->ks.s);
            return SC_EDATA;
        }
        it->refmm = 1;
        s->st.n_ref_mismatch++;
        if (md_log_level >= MD_LOG_INFO) md_info("%s (not scored)", s->ks.s);
    }
    if (growi(&s->jobs, &s->mjobs, s->njobs + it->nalt, sizeof *s->jobs) < 0) return SC_EINTERNAL;
    it->job0 = s->njobs;
    s->njobs += it->nalt;
    const char *ref = it->al[0];
    int64_t rlen = (int64_t)strlen(ref);
    int need_emb = 0, need_ll = 0, need_probe = 0;
    for (int a = 0; a < it->nalt; a++) {
        job_t *j = &s->jobs[it->job0 + a];
        classify(s, ref, it->al[1 + a], it->refmm, j);
        if (j->emb_reason < 0) need_emb = 1;
        if (j->llr_reason < 0 && s->causal) need_ll = 1;
        if (j->llr_reason < 0 && !s->causal && s->o.mode == SC_UNMASKED) need_probe = 1;
    }
    it->refwin[0] = it->refwin[1] = -1;
    int ralias = 0;
    int64_t ridx[2] = {0, 0};
    if (need_emb || need_ll || need_probe)
        if ((r = ref_pair(s, it->tid, it->pos, rlen, 0, need_emb, need_ll, it->refwin, &ralias, ridx)) < 0) return r;
    for (int a = 0; a < it->nalt; a++) {
        job_t *j = &s->jobs[it->job0 + a];
        const char *alt = it->al[1 + a];
        if (j->emb_reason < 0 || (s->causal && j->llr_reason < 0)) {
            int alias;
            if ((r = alt_pair(s, it->tid, it->pos, rlen, alt, j->emb_reason < 0, s->causal && j->llr_reason < 0,
                              j->win, &alias)) < 0)
                return r;
        }
        if (s->causal || j->llr_reason >= 0) continue;
        j->chg0 = s->nchg;
        for (int64_t i = 0; i < rlen; i++) {
            uint8_t rb = md_base_code[(uint8_t)ref[i]] & MD_BASE_MASK, ab = md_base_code[(uint8_t)alt[i]] & MD_BASE_MASK;
            if (rb == ab) continue;
            if (growi(&s->chg, &s->mchg, s->nchg + 1, sizeof *s->chg) < 0) return SC_EINTERNAL;
            chg_t *c = &s->chg[s->nchg];
            c->ref = rb;
            c->alt = ab;
            c->probe[0] = c->probe[1] = -1;
            int clen_ok = 1;
            if (s->o.mode == SC_UNMASKED) {
                /* the record's own ref window, when it covers this position on every pass */
                int64_t clen = md_contigs_len(s->ctg, it->tid);
                for (int k = 0; k < s->npass; k++) {
                    int64_t q = k ? clen - 1 - (it->pos + i) : it->pos + i;
                    int64_t qe = k ? clen - it->pos - rlen : it->pos, st;
                    sc_window_place(clen, s->W, s->o.pad, qe, &st);
                    int64_t idx = q - st;
                    const win_t *w = &s->wins[it->refwin[k]];
                    if (idx < 0 || idx >= w->len) { clen_ok = 0; break; }
                }
                if (clen_ok)
                    for (int k = 0; k < s->npass; k++) {
                        int64_t q = k ? clen - 1 - (it->pos + i) : it->pos + i;
                        int64_t qe = k ? clen - it->pos - rlen : it->pos, st;
                        sc_window_place(clen, s->W, s->o.pad, qe, &st);
                        int pr = add_probe(s, it->refwin, ralias, k, q - st);
                        if (pr < 0) return pr;
                        s->chg[s->nchg].probe[k] = pr;
                    }
            }
            if (s->o.mode == SC_MASKED || !clen_ok) {
                int pr[2];
                if ((r = site_probes(s, it->tid, it->pos + i, pr)) < 0) return r;
                s->chg[s->nchg].probe[0] = pr[0];
                s->chg[s->nchg].probe[1] = pr[1];
            }
            s->nchg++;
            j->nchg++;
        }
    }
    return 0;
}

/* ---- forward and results ------------------------------------------------------------------- */

static void logp4(const sc_t *s, const float *lg, float lp[4])
{
    float l[4], mx = -INFINITY;
    for (int b = 0; b < 4; b++) {
        l[b] = lg[s->id_acgt[b]];
        if (l[b] > mx) mx = l[b];
    }
    double z = 0;
    for (int b = 0; b < 4; b++) z += exp((double)l[b] - mx);
    double lse = mx + log(z);
    for (int b = 0; b < 4; b++) lp[b] = (float)(l[b] - lse);
}

/* Selected rows [row0, row0+nrows) (probe rows, causal windows), in row order. */
static int on_rows(void *ud, int64_t row0, int64_t nrows, const float *hidden, const float *logits)
{
    sc_t *s = ud;
    (void)hidden;
    for (int64_t r = 0; r < nrows; r++) {
        int64_t g = row0 + r;
        while (s->wcur < s->nwin - 1 && g >= s->wins[s->wcur].off + s->wins[s->wcur].len) s->wcur++;
        win_t *w = &s->wins[s->wcur];
        const float *lg = logits ? logits + r * s->V : NULL;
        if (w->causal && lg) {
            int64_t t = g - w->off;
            if (t + 1 < w->len) {
                int b = s->id2base[s->ids[g + 1]];
                if (b >= 0) {
                    float lp[4];
                    logp4(s, lg, lp);
                    w->ll += lp[b];
                }
            }
        }
        while (s->pcur < s->nprobe && s->probes[s->porder[s->pcur]].row == g) {
            probe_t *p = &s->probes[s->porder[s->pcur++]];
            float lp[4];
            if (lg) logp4(s, lg, lp);
            else lp[0] = lp[1] = lp[2] = lp[3] = NAN;
            for (int b = 0; b < 4; b++) p->lp[b] = p->comp ? lp[3 - b] : lp[b];
        }
    }
    return 0;
}

/* The mean hidden states [npool, width] of the MAMBA_EMBDIST windows, in window order: D values
 * per window (PS halves combined with --rc average). */
static int pool_cb(void *ud, int nseg, const float *mean)
{
    sc_t *s = ud;
    const int D = s->D, W2 = s->width, comb = s->ps && s->o.rc == SC_RC_AVERAGE;
    int k = 0;
    for (int i = 0; i < s->nwin; i++) {
        const win_t *w = &s->wins[i];
        if (!w->emb) continue;
        if (k >= nseg) break;
        const float *h = mean + (size_t)k++ * W2;
        double *v = s->hsum + w->hs;
        if (comb)
            for (int j = 0; j < D; j++) v[j] = 0.5 * ((double)h[j] + h[2 * D - 1 - j]);
        else
            for (int j = 0; j < D; j++) v[j] = h[j];
    }
    if (k != nseg) {
        md_error("the model returned %d pooled rows for %d embedding windows", nseg, k);
        return -1;
    }
    return 0;
}

/* The rows whose logits the batch needs (probe rows and causal windows' rows, sorted, distinct)
 * into s->sel, and the MAMBA_EMBDIST windows as pooling segments. */
static int plan_outputs(sc_t *s)
{
    int64_t need = s->nprobe;
    s->npool = 0;
    for (int i = 0; i < s->nwin; i++) {
        if (s->wins[i].causal) need += s->wins[i].len;
        if (s->wins[i].emb) s->npool++;
    }
    if (grow(&s->sel, &s->msel, need > 0 ? need : 1, sizeof *s->sel) < 0 ||
        growi(&s->pool_beg, &s->mpool, s->npool > 0 ? s->npool : 1, sizeof *s->pool_beg) < 0)
        return SC_EINTERNAL;
    int mp = s->mpool > 0 ? s->mpool : 1;
    int64_t *pe = md_realloc(s->pool_end, (size_t)mp * sizeof *pe);
    if (!pe) return SC_EINTERNAL;
    s->pool_end = pe;
    /* merge: windows in row order, probes sorted by row (porder) */
    int64_t n = 0, pi = 0;
    int k = 0;
    for (int i = 0; i <= s->nwin; i++) {
        const int64_t lim = i < s->nwin ? s->wins[i].off : INT64_MAX;
        for (; pi < s->nprobe && s->probes[s->porder[pi]].row < lim; pi++) {
            int64_t r = s->probes[s->porder[pi]].row;
            if (n == 0 || s->sel[n - 1] < r) s->sel[n++] = r;
        }
        if (i == s->nwin) break;
        const win_t *w = &s->wins[i];
        if (w->emb) {
            s->pool_beg[k] = w->off;
            s->pool_end[k++] = w->off + w->len;
        }
        if (w->causal)
            for (int64_t r = w->off; r < w->off + w->len; r++)
                if (n == 0 || s->sel[n - 1] < r) s->sel[n++] = r;
    }
    s->nsel = n;
    return 0;
}

static int cmp_probe(const void *a, const void *b, void *ctx)
{
    const probe_t *p = ctx;
    int64_t ra = p[*(const int *)a].row, rb = p[*(const int *)b].row;
    return ra < rb ? -1 : ra > rb;
}

static int run_forward(sc_t *s)
{
    if (!s->nwin) return 0;
    int64_t *off = md_realloc(s->seq_off, (size_t)(s->nwin + 1) * sizeof *off);
    if (!off) return SC_EINTERNAL;
    s->seq_off = off;
    for (int i = 0; i < s->nwin; i++) off[i] = s->wins[i].off;
    off[s->nwin] = s->ntok;
    int *po = md_realloc(s->porder, (size_t)(s->nprobe ? s->nprobe : 1) * sizeof *po);
    if (!po) return SC_EINTERNAL;
    s->porder = po;
    for (int i = 0; i < s->nprobe; i++) po[i] = i;
    qsort_r(po, s->nprobe, sizeof *po, cmp_probe, s->probes);
    s->wcur = s->pcur = 0;
    if (plan_outputs(s) < 0) return SC_EINTERNAL;
    md_forward_opts_t fo = { .layer = -1, .want_logits = 1, .rows = MD_ROWS_SELECTED, .nsel = s->nsel, .sel = s->sel,
                             .npool = s->npool, .pool_beg = s->pool_beg, .pool_end = s->pool_end,
                             .emit_pool = pool_cb };
    double t0 = md_realtime();
    int r = md_model_forward(s->m, s->ids, s->ntok, off, s->nwin, &fo, on_rows, s);
    s->st.t_forward += md_realtime() - t0;
    s->st.n_forward++;
    if (r < 0) {
        md_error("the model's forward pass failed on a batch of %d windows (%" PRId64 " tokens)", s->nwin, s->ntok);
        return SC_EINTERNAL;
    }
    return 0;
}

/* Mean pooled vector of a window pair (averaged over passes) into v[D]. */
static void pair_mean(const sc_t *s, const int win[2], double *v)
{
    memset(v, 0, (size_t)s->D * sizeof *v);
    int n = 0;
    for (int k = 0; k < 2; k++) {
        if (win[k] < 0) continue;
        const win_t *w = &s->wins[win[k]];
        const double *h = s->hsum + w->hs;
        for (int j = 0; j < s->D; j++) v[j] += h[j];
        n++;
    }
    if (n > 1)
        for (int j = 0; j < s->D; j++) v[j] /= n;
}

static void compute_job(sc_t *s, const item_t *it, const job_t *j, sc_value_t *v, double *vr, double *va)
{
    v->llr = v->embdist = v->pref = v->palt = NAN;
    v->llr_reason = j->llr_reason;
    v->emb_reason = j->emb_reason;
    if (j->llr_reason < 0) {
        if (s->causal) {
            double sum = 0;
            int n = 0;
            for (int k = 0; k < s->npass; k++) {
                if (j->win[k] < 0 || it->refwin[k] < 0) continue;
                sum += s->wins[j->win[k]].ll - s->wins[it->refwin[k]].ll;
                n++;
            }
            v->llr = n ? (float)(sum / n) : NAN;
        } else {
            double llr = 0, lpr = 0, lpa = 0;
            for (int i = 0; i < j->nchg; i++) {
                const chg_t *c = &s->chg[j->chg0 + i];
                double la[4] = {0, 0, 0, 0};
                int n = 0;
                for (int k = 0; k < s->npass; k++) {
                    if (c->probe[k] < 0) continue;
                    const probe_t *p = &s->probes[c->probe[k]];
                    for (int b = 0; b < 4; b++) la[b] += p->lp[k ? 3 - b : b];
                    n++;
                }
                for (int b = 0; b < 4; b++) la[b] /= n ? n : 1;
                double mx = la[0];
                for (int b = 1; b < 4; b++) if (la[b] > mx) mx = la[b];
                double z = 0;
                for (int b = 0; b < 4; b++) z += exp(la[b] - mx);
                double lse = mx + log(z);
                llr += la[c->alt] - la[c->ref];
                lpr += la[c->ref] - lse;
                lpa += la[c->alt] - lse;
            }
            v->llr = (float)llr;
            v->pref = (float)exp(lpr);
            v->palt = (float)exp(lpa);
        }
    }
    if (j->emb_reason < 0) {
        pair_mean(s, it->refwin, vr);
        pair_mean(s, j->win, va);
        double dot = 0, nr = 0, na = 0;
        for (int i = 0; i < s->D; i++) {
            dot += vr[i] * va[i];
            nr += vr[i] * vr[i];
            na += va[i] * va[i];
        }
        double cs = nr > 0 && na > 0 ? dot / sqrt(nr * na) : NAN;
        if (cs > 1) cs = 1;
        if (cs < -1) cs = -1;
        v->embdist = (float)(1 - cs);
    }
}

static void reset_queue(sc_t *s)
{
    s->nitems = s->njobs = s->nchg = s->nprobe = s->nwin = 0;
    s->ntok = s->nhs = 0;
    s->nsite = 0;
    kh_clear(site, s->sites);
}

static int flush(sc_t *s)
{
    int r = run_forward(s);
    if (r < 0) return r;
    if (growi(&s->vals, &s->mvals, s->njobs > 0 ? s->njobs : 1, sizeof *s->vals) < 0) return SC_EINTERNAL;
    double *vr = md_malloc(2 * (size_t)s->D * sizeof *vr);
    if (!vr) return SC_EINTERNAL;
    for (int i = 0; i < s->nitems; i++) {
        const item_t *it = &s->items[i];
        for (int a = 0; a < it->nalt; a++) {
            sc_value_t *v = &s->vals[it->job0 + a];
            compute_job(s, it, &s->jobs[it->job0 + a], v, vr, vr + s->D);
            if (v->llr_reason >= 0) s->st.llr_missing[v->llr_reason]++;
            else if (isnan(v->llr)) s->st.llr_missing[SC_R_BAD_BASE]++;
            else s->st.llr_scored++;
            if (v->emb_reason >= 0) s->st.emb_missing[v->emb_reason]++;
            else if (isnan(v->embdist)) s->st.emb_missing[SC_R_BAD_BASE]++;
            else s->st.emb_scored++;
        }
    }
    free(vr);
    for (int i = 0; i < s->nitems; i++) {
        const item_t *it = &s->items[i];
        if (s->emit && (r = s->emit(s, it, s->vals + it->job0)) < 0) return r;
    }
    s->done += s->nitems;
    reset_queue(s);
    if (s->progress) s->progress(s->progress_ud, s->done);
    return 0;
}

static int queue_full(const sc_t *s)
{
    return s->nwin >= s->o.batch_size || s->ntok >= MAX_BATCH_TOKENS;
}

/* A new item slot (with its pooled record when want_rec). */
static item_t *new_item(sc_t *s, int want_rec)
{
    if (growi(&s->items, &s->mitems, s->nitems + 1, sizeof *s->items) < 0) return NULL;
    item_t *it = &s->items[s->nitems];
    memset(it, 0, sizeof *it);
    if (want_rec) {
        if (s->nitems >= s->nrecs) {
            bcf1_t **pr = md_realloc(s->recs, (size_t)s->mitems * sizeof *pr);
            if (!pr) return NULL;
            s->recs = pr;
            while (s->nrecs < s->mitems) {
                if (!(pr[s->nrecs] = bcf_init())) { md_error("out of memory"); return NULL; }
                s->nrecs++;
            }
        }
        it->rec = s->recs[s->nitems];
    }
    return it;
}

/* ---- single variants ----------------------------------------------------------------------- */

static int emit_capture(sc_t *s, const item_t *it, const sc_value_t *v)
{
    if (s->capture) memcpy(s->capture, v, (size_t)it->nalt * sizeof *v);
    return 0;
}

int sc_score_variant(sc_t *s, const char *contig, int64_t pos1, const char *ref,
                     const char *const *alts, int nalt, sc_value_t *out)
{
    int r;
    if (s->nitems && (r = flush(s)) < 0) return r;
    int tid = md_contigs_find(s->ctg, contig);
    if (tid < 0) {
        char sug[512];
        int ns = md_contigs_suggest(s->ctg, contig, sug, sizeof sug, 5);
        md_error("contig '%s' is not in the reference %s%s%s%s", contig, s->o.fasta_name,
                 ns ? " (similar: " : "", ns ? sug : "", ns ? ")" : "");
        return SC_EDATA;
    }
    const char **al = md_malloc((size_t)(nalt + 1) * sizeof *al);
    if (!al) return SC_EINTERNAL;
    al[0] = ref;
    for (int i = 0; i < nalt; i++) al[1 + i] = alts[i];
    item_t *it = new_item(s, 0);
    if (!it) { free(al); return SC_EINTERNAL; }
    it->tid = tid;
    it->pos = pos1 - 1;
    it->al = al;
    it->nalt = nalt;
    emit_item_fn old = s->emit;
    const char *old_name = s->in_name;
    s->in_name = NULL;
    s->nitems++;
    if ((r = add_item(s, it, contig)) < 0) {
        reset_queue(s);
        free(al);
        s->in_name = old_name;
        return r;
    }
    s->emit = emit_capture;
    s->capture = out;
    r = flush(s);
    if (r < 0) reset_queue(s);
    s->emit = old;
    s->capture = NULL;
    s->in_name = old_name;
    free(al);
    return r;
}

/* ---- header lines -------------------------------------------------------------------------- */

static void clean_desc(kstring_t *ks, const char *s)
{
    for (; *s; s++) kputc(*s == '"' || *s == '\\' || *s == '\n' ? '\'' : *s, ks);
}

static void model_desc(const sc_t *s, kstring_t *ks)
{
    kputs(" Model ", ks);
    clean_desc(ks, s->o.model_name);
    const char *sha = md_model_sha256(s->m);
    ksprintf(ks, " (sha256 %s), window %" PRId64 " (%s at contig ends), mode %s, strands %s.",
             sha && *sha ? sha : "unknown", s->W, s->o.pad ? "N-padded" : "clipped, variant off-centre",
             s->causal ? "causal" : s->o.mode == SC_MASKED ? "masked" : "unmasked",
             s->o.rc == SC_RC_AVERAGE ? "averaged (forward and reverse complement)" : "forward only");
}

int sc_header_lines(const sc_t *s, char ***lines)
{
    char **l = md_calloc(5, sizeof *l);
    if (!l) return SC_EINTERNAL;
    int n = 0;
    kstring_t ks = {0, 0, NULL};
    ks.l = 0;
    kputs("##INFO=<ID=MAMBA_LLR,Number=A,Type=Float,Description=\"mamba-dna zero-shot score: ", &ks);
    if (s->causal)
        kputs("ln P(alt window) - ln P(ref window), sequence log-likelihoods of the causal model (A/C/G/T "
              "renormalised); negative: ALT less likely.", &ks);
    else
        ksprintf(&ks, "ln P(ALT) - ln P(REF) at the variant position%s, probabilities renormalised over "
                      "A/C/G/T; MNVs: sum over changed positions; negative: ALT less likely.",
                 s->o.mode == SC_MASKED ? " ([MASK]ed)" : " (reference base shown)");
    model_desc(s, &ks);
    kputs("\">", &ks);
    if (!(l[n++] = strdup(ks.s))) goto fail;
    ks.l = 0;
    kputs("##INFO=<ID=MAMBA_EMBDIST,Number=A,Type=Float,Description=\"mamba-dna: cosine distance (1 - cos) "
          "between the mean final hidden states of the ref and alt windows centred on the variant; the alt "
          "window keeps the ref window's start and left flank, indels shift the right flank.", &ks);
    model_desc(s, &ks);
    kputs("\">", &ks);
    if (!(l[n++] = strdup(ks.s))) goto fail;
    if (s->o.probs) {
        for (int i = 0; i < 2; i++) {
            ks.l = 0;
            ksprintf(&ks, "##INFO=<ID=MAMBA_P%s,Number=A,Type=Float,Description=\"mamba-dna: P(%s) at the "
                          "variant position renormalised over A/C/G/T (strand-averaged log-probabilities; MNVs: "
                          "product over changed positions; MAMBA_LLR = ln(MAMBA_PALT/MAMBA_PREF)).",
                     i ? "ALT" : "REF", i ? "ALT" : "REF");
            model_desc(s, &ks);
            kputs("\">", &ks);
            if (!(l[n++] = strdup(ks.s))) goto fail;
        }
    }
    if (s->o.ref_mismatch == SC_REFMM_FLAG) {
        ks.l = 0;
        ksprintf(&ks, "##INFO=<ID=MAMBA_REF_MISMATCH,Number=0,Type=Flag,Description=\"mamba-dna: REF does not "
                      "match the reference FASTA (");
        clean_desc(&ks, s->o.fasta_name);
        kputs("); the record was not scored\">", &ks);
        if (!(l[n++] = strdup(ks.s))) goto fail;
    }
    free(ks.s);
    *lines = l;
    return n;
fail:
    md_error("out of memory");
    free(ks.s);
    sc_header_lines_free(l, n);
    return SC_EINTERNAL;
}

void sc_header_lines_free(char **lines, int n)
{
    if (!lines) return;
    for (int i = 0; i < n; i++) free(lines[i]);
    free(lines);
}

/* ---- TSV ----------------------------------------------------------------------------------- */

sc_tsv_t *sc_tsv_open(const char *path, const sc_t *s, const char *cmdline)
{
    sc_tsv_t *t = md_calloc(1, sizeof *t);
    if (!t) return NULL;
    kstring_t ks = {0, 0, NULL};
    if (!strcmp(path, "-")) {
        md_error("the table must be a file (it is bgzipped and tabix-indexed), not standard output");
        goto fail;
    }
    t->probs = s->o.probs;
    t->path = strdup(path);
    ksprintf(&ks, "%s.tmp.XXXXXX", path);
    t->tmp = ks.s;
    ks.s = NULL;
    ks.l = ks.m = 0;
    if (!t->path || !t->tmp) { md_error("out of memory"); goto fail; }
    int fd = mkstemp(t->tmp);
    if (fd < 0) {
        md_error("%s: cannot create a temporary file next to it: %s", path, strerror(errno));
        free(t->tmp);
        t->tmp = NULL;
        goto fail;
    }
    /* mkstemp makes the file 0600; the finished table gets the usual 0666 & ~umask */
    mode_t um = umask(0);
    umask(um);
    if (fchmod(fd, 0666 & ~um) < 0) md_warn("%s: cannot set the file mode: %s", path, strerror(errno));
    close(fd);
    ksprintf(&ks, "%s.tbi", t->tmp);
    t->tmp_idx = ks.s;
    ks.s = NULL;
    ks.l = ks.m = 0;
    ksprintf(&ks, "%s.tbi", path);
    t->idx = ks.s;
    ks.s = NULL;
    ks.l = ks.m = 0;
    if (!t->tmp_idx || !t->idx) { md_error("out of memory"); goto fail; }
    if (!(t->bz = bgzf_open(t->tmp, "w"))) {
        md_error("%s: cannot open for writing: %s", t->tmp, strerror(errno));
        goto fail;
    }
    kputs("## mamba-dna score " MD_VERSION ":", &ks);
    model_desc(s, &ks);
    kputc('\n', &ks);
    if (cmdline) ksprintf(&ks, "## command: %s\n", cmdline);
    kputs("#Chrom\tPos\tRef\tAlt\tMAMBA_LLR\tMAMBA_EMBDIST", &ks);
    if (t->probs) kputs("\tMAMBA_PREF\tMAMBA_PALT", &ks);
    kputc('\n', &ks);
    if (bgzf_write(t->bz, ks.s, ks.l) < 0) { md_error("%s: write error", path); goto fail; }
    free(ks.s);
    return t;
fail:
    free(ks.s);
    sc_tsv_abort(t);
    return NULL;
}

static void put_val(kstring_t *ks, float v)
{
    kputc('\t', ks);
    if (isnan(v)) kputc('.', ks);
    else ksprintf(ks, "%g", v);
}

static int tsv_rows(sc_tsv_t *t, const char *chrom, int64_t pos1, const char *const *al, int nalt,
                    const sc_value_t *v)
{
    t->ks.l = 0;
    for (int a = 0; a < nalt; a++) {
        if (isnan(v[a].llr) && isnan(v[a].embdist)) continue;
        ksprintf(&t->ks, "%s\t%" PRId64 "\t%s\t%s", chrom, pos1, al[0], al[1 + a]);
        put_val(&t->ks, v[a].llr);
        put_val(&t->ks, v[a].embdist);
        if (t->probs) {
            put_val(&t->ks, v[a].pref);
            put_val(&t->ks, v[a].palt);
        }
        kputc('\n', &t->ks);
        t->rows++;
    }
    if (t->ks.l && bgzf_write(t->bz, t->ks.s, t->ks.l) < 0) {
        md_error("%s: write error", t->path);
        return SC_EDATA;
    }
    return 0;
}

int sc_tsv_finish(sc_tsv_t *t)
{
    if (t->finished) return 0;
    int r = bgzf_close(t->bz);
    t->bz = NULL;
    if (r < 0) {
        md_error("%s: error closing (disk full?)", t->path);
        return SC_EDATA;
    }
    tbx_conf_t conf = { 0 /* TBX_GENERIC */, 1, 2, 2, '#', 0 };
    if (tbx_index_build2(t->tmp, t->tmp_idx, 0, &conf) < 0) {
        md_error("%s: cannot build the tabix index (are the input records sorted by position?)", t->path);
        return SC_EDATA;
    }
    t->finished = 1;
    return 0;
}

int sc_tsv_commit(sc_tsv_t *t)
{
    int ret = 0;
    if (!t->finished && sc_tsv_finish(t) < 0) { sc_tsv_abort(t); return SC_EDATA; }
    if (rename(t->tmp, t->path) < 0) {
        md_error("%s: cannot rename %s into place: %s", t->path, t->tmp, strerror(errno));
        sc_tsv_abort(t);
        return SC_EDATA;
    }
    free(t->tmp);
    t->tmp = NULL;
    if (rename(t->tmp_idx, t->idx) < 0) {
        md_error("%s: cannot rename %s into place: %s", t->idx, t->tmp_idx, strerror(errno));
        ret = SC_EDATA;
    }
    free(t->tmp_idx);
    t->tmp_idx = NULL;
    sc_tsv_abort(t);
    return ret;
}

void sc_tsv_abort(sc_tsv_t *t)
{
    if (!t) return;
    if (t->bz) (void)bgzf_close(t->bz);
    if (t->tmp) unlink(t->tmp);
    if (t->tmp_idx) unlink(t->tmp_idx);
    free(t->path);
    free(t->tmp);
    free(t->tmp_idx);
    free(t->idx);
    free(t->ks.s);
    free(t);
}

/* ---- VCF ----------------------------------------------------------------------------------- */

static int set_info(sc_t *s, bcf_hdr_t *oh, bcf1_t *rec, const char *tag, const sc_value_t *v, int nalt, int which)
{
    for (int a = 0; a < nalt; a++) {
        float x = which == 0 ? v[a].llr : which == 1 ? v[a].embdist : which == 2 ? v[a].pref : v[a].palt;
        if (isnan(x)) bcf_float_set_missing(s->fbuf[a]);
        else s->fbuf[a] = x;
    }
    if (bcf_update_info_float(oh, rec, tag, s->fbuf, nalt) < 0) {
        md_error("cannot set INFO/%s", tag);
        return SC_EINTERNAL;
    }
    return 0;
}

static int emit_vcf(sc_t *s, const item_t *it, const sc_value_t *v)
{
    int r;
    bcf1_t *rec = it->rec;
    const char *chrom = md_contigs_name(s->ctg, it->tid);
    if (s->tsv && (r = tsv_rows(s->tsv, chrom, it->pos + 1, it->al, it->nalt, v)) < 0) return r;
    if (!s->out) return 0;
    bcf_hdr_t *oh = md_vcf_writer_header(s->out);
    if (it->nalt > 0) {
        if (growi(&s->fbuf, &s->mfbuf, it->nalt, sizeof *s->fbuf) < 0) return SC_EINTERNAL;
        if ((r = set_info(s, oh, rec, "MAMBA_LLR", v, it->nalt, 0)) < 0) return r;
        if ((r = set_info(s, oh, rec, "MAMBA_EMBDIST", v, it->nalt, 1)) < 0) return r;
        if (s->o.probs) {
            if ((r = set_info(s, oh, rec, "MAMBA_PREF", v, it->nalt, 2)) < 0) return r;
            if ((r = set_info(s, oh, rec, "MAMBA_PALT", v, it->nalt, 3)) < 0) return r;
        }
    }
    if (it->refmm && s->o.ref_mismatch == SC_REFMM_FLAG &&
        bcf_update_info_flag(oh, rec, "MAMBA_REF_MISMATCH", NULL, 1) < 0) {
        md_error("cannot set INFO/MAMBA_REF_MISMATCH");
        return SC_EINTERNAL;
    }
    if (md_vcf_write(s->out, rec) < 0) return SC_EDATA;
    return 0;
}

int sc_run_vcf(sc_t *s, md_vcf_reader_t *in, md_vcf_writer_t *out, sc_tsv_t *tsv)
{
    int r = 0;
    s->ihdr = md_vcf_header(in);
    s->out = out;
    s->tsv = tsv;
    s->in_name = md_vcf_name(in);
    s->emit = emit_vcf;
    s->last_rid = -1;
    for (;;) {
        item_t *it = new_item(s, 1);
        if (!it) { r = SC_EINTERNAL; break; }
        r = md_vcf_read(in, it->rec);
        if (r == -1) { r = 0; break; }
        if (r < -1) { r = SC_EDATA; break; }
        bcf1_t *rec = it->rec;
        const char *chrom = bcf_hdr_id2name(s->ihdr, rec->rid);
        if (rec->rid != s->last_rid) {
            int tid = md_contigs_find(s->ctg, chrom);
            if (tid < 0) {
                char sug[512];
                int ns = md_contigs_suggest(s->ctg, chrom, sug, sizeof sug, 5);
                if (!ns) {
                    int nc = md_contigs_n(s->ctg);
                    sug[0] = 0;
                    for (int i = 0; i < nc && i < 5; i++)
                        snprintf(sug + strlen(sug), sizeof sug - strlen(sug), "%s'%s'", i ? ", " : "",
                                 md_contigs_name(s->ctg, i));
                }
                md_error("%s: record %s:%" PRId64 ": contig '%s' is not in the reference %s (%s %s); use the "
                         "matching reference or rename the VCF's contigs with 'bcftools annotate --rename-chrs'",
                         s->in_name, chrom, (int64_t)rec->pos + 1, chrom, s->o.fasta_name,
                         ns ? "it has" : "its contigs include", sug);
                r = SC_EDATA;
                break;
            }
            s->last_rid = rec->rid;
            s->last_tid = tid;
        }
        it->tid = s->last_tid;
        it->pos = rec->pos;
        it->al = (const char *const *)rec->d.allele;
        it->nalt = rec->n_allele > 0 ? rec->n_allele - 1 : 0;
        s->nitems++;
        if ((r = add_item(s, it, chrom)) < 0) break;
        if (queue_full(s) && (r = flush(s)) < 0) break;
    }
    if (r == 0 && s->nitems) r = flush(s);
    if (r < 0) reset_queue(s);
    s->emit = NULL;
    s->out = NULL;
    s->tsv = NULL;
    s->in_name = NULL;
    return r;
}

/* ---- all SNVs of regions ------------------------------------------------------------------- */

static const char *const snv_alleles[4][4] = {
    { "A", "C", "G", "T" }, { "C", "A", "G", "T" }, { "G", "A", "C", "T" }, { "T", "A", "C", "G" },
};

static int emit_tsv(sc_t *s, const item_t *it, const sc_value_t *v)
{
    return tsv_rows(s->tsv, md_contigs_name(s->ctg, it->tid), it->pos + 1, it->al, it->nalt, v);
}

typedef struct { int tid; int64_t beg, end; } span_t;

static int cmp_span(const void *a, const void *b)
{
    const span_t *x = a, *y = b;
    if (x->tid != y->tid) return x->tid < y->tid ? -1 : 1;
    return x->beg < y->beg ? -1 : x->beg > y->beg;
}

int sc_run_all_snvs(sc_t *s, const md_regions_t *rs, sc_tsv_t *tsv)
{
    if (!rs->n) { md_error("no regions given"); return SC_EDATA; }
    span_t *sp = md_malloc((size_t)rs->n * sizeof *sp);
    if (!sp) return SC_EINTERNAL;
    int n = 0, r = 0;
    for (int i = 0; i < rs->n; i++) {
        int tid = md_contigs_find(s->ctg, rs->a[i].contig);
        if (tid < 0) {
            md_error("region contig '%s' is not in the reference %s", rs->a[i].contig, s->o.fasta_name);
            free(sp);
            return SC_EDATA;
        }
        int64_t clen = md_contigs_len(s->ctg, tid);
        sp[n].tid = tid;
        sp[n].beg = rs->a[i].beg < 0 ? 0 : rs->a[i].beg;
        sp[n].end = rs->a[i].end > clen ? clen : rs->a[i].end;
        if (sp[n].end > sp[n].beg) n++;
    }
    qsort(sp, n, sizeof *sp, cmp_span);
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (m && sp[m - 1].tid == sp[i].tid && sp[i].beg <= sp[m - 1].end) {
            if (sp[i].end > sp[m - 1].end) sp[m - 1].end = sp[i].end;
        } else {
            sp[m++] = sp[i];
        }
    }
    s->tsv = tsv;
    s->emit = emit_tsv;
    s->in_name = "region";
    uint8_t code;
    for (int i = 0; i < m && r == 0; i++) {
        for (int64_t p = sp[i].beg; p < sp[i].end; p++) {
            if ((r = get_bases(s, sp[i].tid, p, p + 1, &code)) < 0) break;
            if (code > 3) { s->st.n_pos_n++; continue; }
            item_t *it = new_item(s, 0);
            if (!it) { r = SC_EINTERNAL; break; }
            it->tid = sp[i].tid;
            it->pos = p;
            it->al = snv_alleles[code];
            it->nalt = 3;
            s->nitems++;
            if ((r = add_item(s, it, md_contigs_name(s->ctg, it->tid))) < 0) break;
            if (queue_full(s) && (r = flush(s)) < 0) break;
        }
    }
    if (r == 0 && s->nitems) r = flush(s);
    if (r < 0) reset_queue(s);
    s->emit = NULL;
    s->tsv = NULL;
    s->in_name = NULL;
    free(sp);
    return r;
}
