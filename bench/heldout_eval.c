/* heldout_eval.c: held-out masked-position evaluation of a model against two count baselines
 * fitted on the same training data and scored on the same positions:
 *   markov k  P(x_i | x_{i-k..i-1}),                  k = 0..--markov-max (12)
 *   sym k     P(x_i | x_{i-k..i-1}, x_{i+1..i+k}),    k = 1..--sym-max (6)
 * Positions: the non-N bases of the held-out regions whose hash of (seed, contig, position) falls
 * under --mask-frac, so every method and every window size sees the same set. Baselines count
 * every ACGT base outside the held-out regions (held-out bases and N break contexts, as the
 * trainer cuts its training pieces), add-alpha smoothing, k and alpha chosen on the held-out set.
 * Count tables: per order k, uint32 [4^k contexts (markov) or 16^k (sym), 4 bases]; only the
 * longest valid order of a position is counted, lower orders are filled by marginalising.
 * The model sees the held-out regions in windows (lib/window.c tiling), the selected positions
 * replaced by [MASK]; each position is scored in the first window that covers it.
 * Output: a table on stderr, a TSV on stdout (or -o), optionally one line per position. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "md.h"
#include "model.h"
#include "regions.h"
#include "seqio.h"
#include "tokenizer.h"
#include "train.h"
#include "window.h"

#define MARKOV_KMAX 12
#define SYM_KMAX 6
#define MAX_ALPHAS 16

/* ---- options -------------------------------------------------------------------------------- */

typedef struct {
    const char **inputs;
    int n_inputs;
    const char **holdout;
    int n_holdout;
    const char *model_dir;
    const char *device;
    const char *precision;
    int threads;
    int64_t window;            /* 0: the model's max_seq_len, else 32768 */
    int64_t batch_tokens;      /* 0: 65536 on the CPU, 1<<20 on a GPU */
    double mask_frac;
    uint64_t seed;
    int markov_max, sym_max;
    double alphas[MAX_ALPHAS];
    int n_alphas;
    int rc_average;            /* Caduceus-Ph: average forward and reverse-complement logits */
    int mask_with_n;           /* test hook: selected positions get the N token, not [MASK] */
    const char *output;        /* TSV ("-" = stdout) */
    const char *positions;     /* per-position TSV, or NULL */
} he_opts_t;

static void he_opts_init(he_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->device = "auto";
    o->threads = 2;
    o->mask_frac = 0.15;
    o->seed = 1;
    o->markov_max = MARKOV_KMAX;
    o->sym_max = SYM_KMAX;
    const double a[] = { 0.001, 0.01, 0.1, 0.5, 1, 2, 4, 8 };
    o->n_alphas = 8;
    for (int i = 0; i < o->n_alphas; i++) o->alphas[i] = a[i];
    o->rc_average = 1;
    o->output = "-";
}

static int he_opts_check(const he_opts_t *o)
{
    if (o->n_inputs < 1) { md_error("no input FASTA given"); return -2; }
    if (o->n_holdout < 1) { md_error("no --holdout region given"); return -2; }
    if (!(o->mask_frac > 0 && o->mask_frac <= 1)) {
        md_error("--mask-frac %g is not in (0, 1]", o->mask_frac);
        return -2;
    }
    if (o->markov_max < 0 || o->markov_max > MARKOV_KMAX) {
        md_error("--markov-max %d is not in 0..%d", o->markov_max, MARKOV_KMAX);
        return -2;
    }
    if (o->sym_max < 1 || o->sym_max > SYM_KMAX) {
        md_error("--sym-max %d is not in 1..%d", o->sym_max, SYM_KMAX);
        return -2;
    }
    if (o->window < 0 || o->batch_tokens < 0 || o->threads < 1) {
        md_error("-w, --batch-tokens must be >= 0 and -t >= 1");
        return -2;
    }
    for (int i = 0; i < o->n_alphas; i++)
        if (!(o->alphas[i] > 0)) { md_error("--alpha values must be > 0"); return -2; }
    return 0;
}

/* ---- held-out regions and positions --------------------------------------------------------- */

/* One merged held-out interval of a contig with a copy of its bases plus context margins:
 * seq[j] is contig position cbeg + j, for cbeg <= beg < end <= cbeg + clen. */
typedef struct {
    char *contig;
    uint64_t key;               /* hash of the contig name (position selection) */
    int64_t beg, end;
    int64_t cbeg, clen;
    uint8_t *seq;               /* NULL until a record covering it was read */
    int64_t pos0, npos;         /* its evaluation positions: [pos0, pos0 + npos) of pos_t */
} hseg_t;

typedef struct {
    int seg;
    int64_t pos;                /* contig position, 0-based */
    uint8_t base;               /* 0..3 */
    uint8_t lrun, rrun;         /* valid bases on each side (capped at the maxima) */
    uint32_t mctx;              /* markov context of order lrun (low digits nearest) */
    uint32_t sctx;              /* sym context of order min(lrun, rrun, sym_max) */
} pos_t;

static uint64_t contig_key(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;   /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
    return h;
}

static int cmp_region(const void *a, const void *b)
{
    const md_region_t *x = a, *y = b;
    int c = strcmp(x->contig, y->contig);
    if (c) return c;
    return x->beg < y->beg ? -1 : x->beg > y->beg;
}

/* Sorted, merged held-out intervals (regions parsed without a dictionary, as pretrain does). */
static int segs_build(const he_opts_t *o, hseg_t **out, int *nout)
{
    md_regions_t rs;
    md_regions_init(&rs);
    hseg_t *s = NULL;
    int n = 0, ret = -2;
    for (int i = 0; i < o->n_holdout; i++)
        if (md_regions_add_string(&rs, NULL, o->holdout[i], "--holdout") < 0) goto out;
    qsort(rs.a, rs.n, sizeof *rs.a, cmp_region);
    if (!(s = md_calloc(rs.n, sizeof *s))) goto out;
    for (int i = 0; i < rs.n; i++) {
        const md_region_t *r = &rs.a[i];
        if (r->end == INT64_MAX) {
            md_error("--holdout %s: give an end position", r->contig);
            goto out;
        }
        if (n > 0 && !strcmp(s[n - 1].contig, r->contig) && r->beg <= s[n - 1].end) {
            if (r->end > s[n - 1].end) s[n - 1].end = r->end;
            continue;
        }
        if (!(s[n].contig = strdup(r->contig))) { md_error("out of memory"); goto out; }
        s[n].key = contig_key(r->contig);
        s[n].beg = r->beg;
        s[n].end = r->end;
        n++;
    }
    ret = 0;
out:
    md_regions_destroy(&rs);
    if (ret < 0 && s) {
        for (int i = 0; i < n; i++) free(s[i].contig);
        free(s);
        s = NULL;
        n = 0;
    }
    *out = s;
    *nout = n;
    return ret;
}

static inline int is_base(uint8_t c) { return (c & MD_BASE_MASK) < MD_BASE_N; }

static inline int selected(const he_opts_t *o, uint64_t key, int64_t pos)
{
    return md_rng_uniform(o->seed, key, (uint64_t)pos) < o->mask_frac;
}

/* ---- count tables --------------------------------------------------------------------------- */

typedef struct {
    uint32_t *markov[MARKOV_KMAX + 1];   /* [4^k * 4] */
    uint32_t *sym[SYM_KMAX + 1];         /* [16^k * 4], sym[0] unused */
    int markov_max, sym_max;
    int64_t n_train;                     /* bases counted */
} counts_t;

/* A zeroed table of n counts. Large tables are 2 MiB aligned and asked for huge pages: counting
 * touches them at random, and with 4 KiB pages nearly every update would also miss the TLB. */
static uint32_t *table_alloc(size_t n)
{
    size_t bytes = n * sizeof(uint32_t);
    const size_t huge = (size_t)2 << 20;
    if (bytes < huge) return md_calloc(n, sizeof(uint32_t));
    void *p = NULL;
    int err = posix_memalign(&p, huge, bytes);
    if (err) {
        md_error("out of memory (%zu bytes of count tables): %s", bytes, strerror(err));
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);   /* a hint: failure only costs speed */
#endif
    memset(p, 0, bytes);
    return p;
}

static int counts_init(counts_t *c, int markov_max, int sym_max)
{
    memset(c, 0, sizeof *c);
    c->markov_max = markov_max;
    c->sym_max = sym_max;
    for (int k = 0; k <= markov_max; k++)
        if (!(c->markov[k] = table_alloc((size_t)4 << (2 * k)))) return -2;
    for (int k = 1; k <= sym_max; k++)
        if (!(c->sym[k] = table_alloc((size_t)4 << (4 * k)))) return -2;
    return 0;
}

static void counts_free(counts_t *c)
{
    for (int k = 0; k <= MARKOV_KMAX; k++) free(c->markov[k]);
    for (int k = 0; k <= SYM_KMAX; k++) free(c->sym[k]);
}

/* Counts the bases of one training stretch s[0..n) (contexts never cross its ends). Each base is
 * counted once, in the table of its longest valid order; counts_marginalise fills the rest. */
static void counts_add(counts_t *c, const uint8_t *s, int64_t n)
{
    const int KM = c->markov_max, KS = c->sym_max;
    const uint32_t mmask = (uint32_t)((1ULL << (2 * KM)) - 1);
    uint32_t mctx = 0;
    int lrun = 0;
    int64_t next_bad = -1;   /* first invalid index after the current one (or n) */
    for (int64_t i = 0; i < n; i++) {
        uint8_t b = s[i] & MD_BASE_MASK;
        if (b >= MD_BASE_N) { lrun = 0; mctx = 0; continue; }
        int mk = lrun < KM ? lrun : KM;
        c->markov[mk][(size_t)(mctx & (uint32_t)((1ULL << (2 * mk)) - 1)) * 4 + b]++;
        int lk = lrun < KS ? lrun : KS;
        if (lk > 0) {
            if (next_bad <= i) {
                next_bad = i + 1;
                while (next_bad < n && is_base(s[next_bad])) next_bad++;
            }
            int64_t rr = next_bad - i - 1;
            int sk = rr < lk ? (int)rr : lk;
            if (sk > 0) {
                uint32_t sc = 0;
                for (int j = sk; j >= 1; j--)
                    sc = sc * 16 + (uint32_t)((s[i - j] & MD_BASE_MASK) * 4 + (s[i + j] & MD_BASE_MASK));
                c->sym[sk][(size_t)sc * 4 + b]++;
            }
        }
        c->n_train++;
        mctx = ((mctx << 2) | b) & mmask;
        if (lrun < 64) lrun++;
    }
}

/* table_k += table_{k+1} summed over its outermost digit(s), from the top order down. */
static void counts_marginalise(counts_t *c)
{
    for (int k = c->markov_max - 1; k >= 0; k--) {
        size_t nk = (size_t)4 << (2 * k);
        for (int d = 0; d < 4; d++) {
            const uint32_t *src = c->markov[k + 1] + (size_t)d * nk;
            for (size_t j = 0; j < nk; j++) c->markov[k][j] += src[j];
        }
    }
    for (int k = c->sym_max - 1; k >= 1; k--) {
        size_t nk = (size_t)4 << (4 * k);
        for (int d = 0; d < 16; d++) {
            const uint32_t *src = c->sym[k + 1] + (size_t)d * nk;
            for (size_t j = 0; j < nk; j++) c->sym[k][j] += src[j];
        }
    }
}

/* ---- reading: fit the counts, keep the held-out intervals ----------------------------------- */

static int read_inputs(const he_opts_t *o, hseg_t *segs, int nseg, counts_t *c, int64_t *n_records)
{
    const int64_t margin = MARKOV_KMAX > SYM_KMAX ? MARKOV_KMAX : SYM_KMAX;
    md_seq_t rec;
    md_seq_init(&rec);
    int ret = 0;
    for (int f = 0; f < o->n_inputs && ret == 0; f++) {
        md_seqopts_t so;
        md_seqopts_init(&so);
        so.threads = o->threads > 1 ? 1 : 0;
        md_seqreader_t *r = md_seqreader_open(o->inputs[f], &so);
        if (!r) { ret = -2; break; }
        int rr;
        double t0 = md_realtime();
        while ((rr = md_seqreader_read(r, &rec)) >= 0) {
            const char *contig = rec.kind == MD_SEQ_REGION || rec.kind == MD_SEQ_READ ? rec.contig : rec.name;
            int64_t rbeg = rec.kind == MD_SEQ_REGION ? rec.beg : 0;
            if (!contig || rec.kind == MD_SEQ_READ) {
                md_error("%s: record '%s' is not a FASTA sequence (reads are not supported)", o->inputs[f],
                         rec.name ? rec.name : "?");
                ret = -2;
                break;
            }
            (*n_records)++;
            int64_t pos = rbeg, rend = rbeg + rec.len;
            for (int i = 0; i < nseg && ret == 0; i++) {
                hseg_t *h = &segs[i];
                if (strcmp(h->contig, contig) || h->end <= rbeg || h->beg >= rend) continue;
                if (h->seq) {
                    md_error("%s: held-out region on contig '%s' is covered by two records", o->inputs[f], contig);
                    ret = -2;
                    break;
                }
                if (h->beg < rbeg || h->end > rend) {
                    md_error("%s: held-out region %s:%" PRId64 "-%" PRId64 " extends past record '%s' "
                             "(%" PRId64 "-%" PRId64 ")", o->inputs[f], h->contig, h->beg + 1, h->end,
                             contig, rbeg + 1, rend);
                    ret = -2;
                    break;
                }
                if (h->beg > pos) counts_add(c, rec.seq + (pos - rbeg), h->beg - pos);
                if (h->end > pos) pos = h->end;
                h->cbeg = h->beg - margin > rbeg ? h->beg - margin : rbeg;
                int64_t ce = h->end + margin < rend ? h->end + margin : rend;
                h->clen = ce - h->cbeg;
                if (!(h->seq = md_malloc(h->clen))) { ret = -2; break; }
                memcpy(h->seq, rec.seq + (h->cbeg - rbeg), h->clen);
            }
            if (ret) break;
            if (rend > pos) counts_add(c, rec.seq + (pos - rbeg), rend - pos);
            md_info("%s: record '%s' (%" PRId64 " bases) read in %.1f s", o->inputs[f], contig, rec.len,
                    md_realtime() - t0);
        }
        if (ret == 0 && rr < -1) ret = -2;
        if (md_seqreader_close(r) < 0 && ret == 0) ret = -2;
    }
    md_seq_destroy(&rec);
    if (ret) return ret;
    for (int i = 0; i < nseg; i++)
        if (!segs[i].seq) {
            md_error("held-out region %s:%" PRId64 "-%" PRId64 " is in no input record", segs[i].contig,
                     segs[i].beg + 1, segs[i].end);
            return -2;
        }
    counts_marginalise(c);
    return 0;
}

/* Evaluation positions with their clean contexts, in (segment, position) order. */
static int positions_build(const he_opts_t *o, hseg_t *segs, int nseg, pos_t **out, int64_t *nout)
{
    int64_t n = 0, m = 0;
    pos_t *p = NULL;
    for (int si = 0; si < nseg; si++) {
        hseg_t *h = &segs[si];
        h->pos0 = n;
        for (int64_t pos = h->beg; pos < h->end; pos++) {
            const uint8_t *x = h->seq + (pos - h->cbeg);
            if (!is_base(*x) || !selected(o, h->key, pos)) continue;
            if (n == m) {
                m = m ? 2 * m : 4096;
                pos_t *q = md_realloc(p, (size_t)m * sizeof *p);
                if (!q) { free(p); return -2; }
                p = q;
            }
            pos_t *e = &p[n++];
            e->seg = si;
            e->pos = pos;
            e->base = *x & MD_BASE_MASK;
            int l = 0, r = 0;
            uint32_t mc = 0;
            while (l < o->markov_max && x - l - 1 >= h->seq && is_base(x[-l - 1])) {
                mc |= (uint32_t)(x[-l - 1] & MD_BASE_MASK) << (2 * l);
                l++;
            }
            while (r < o->sym_max && pos + r + 1 < h->cbeg + h->clen && is_base(x[r + 1])) r++;
            e->lrun = (uint8_t)l;
            e->rrun = (uint8_t)r;
            e->mctx = mc;
            int sk = l < r ? l : r;
            if (sk > o->sym_max) sk = o->sym_max;
            uint32_t sc = 0;
            for (int j = sk; j >= 1; j--)
                sc = sc * 16 + (uint32_t)((x[-j] & MD_BASE_MASK) * 4 + (x[j] & MD_BASE_MASK));
            e->sctx = sc;
        }
        h->npos = n - h->pos0;
    }
    *out = p;
    *nout = n;
    return 0;
}

/* ---- baseline evaluation -------------------------------------------------------------------- */

typedef struct {
    char method[16];
    int k;
    double alpha;
    int64_t n;
    double ce;                 /* nats per position (over A/C/G/T) */
    double acc;
    double ce_full, acc_full;  /* model only: over the full vocabulary; NAN for baselines */
} result_t;

/* The count row of position e under family sym (0/1) at order k; a context that is cut short by
 * N or a record end backs off to the longest order available there. */
static const uint32_t *count_row(const counts_t *c, const pos_t *e, int sym, int k)
{
    if (!sym) {
        int m = e->lrun < k ? e->lrun : k;
        uint32_t ctx = e->mctx & (uint32_t)((1ULL << (2 * m)) - 1);
        return c->markov[m] + (size_t)ctx * 4;
    }
    int m = e->lrun < e->rrun ? e->lrun : e->rrun;
    if (m > k) m = k;
    if (m == 0) return c->markov[0];
    uint32_t ctx = e->sctx & (uint32_t)((1ULL << (4 * m)) - 1);
    return c->sym[m] + (size_t)ctx * 4;
}

static double row_logp(const uint32_t *row, int b, double alpha)
{
    double tot = (double)row[0] + row[1] + row[2] + row[3];
    return log((row[b] + alpha) / (tot + 4 * alpha));
}

static int row_argmax(const uint32_t *row)
{
    int best = 0;
    for (int b = 1; b < 4; b++)
        if (row[b] > row[best]) best = b;
    return best;
}

/* Best alpha for (family, k): CE and accuracy over the positions. */
static void eval_baseline(const he_opts_t *o, const counts_t *c, const pos_t *p, int64_t n, int sym, int k,
                          result_t *r)
{
    double sums[MAX_ALPHAS] = { 0 };
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i++) {
        const uint32_t *row = count_row(c, &p[i], sym, k);
        double tot = (double)row[0] + row[1] + row[2] + row[3];
        double hit = row[p[i].base];
        for (int a = 0; a < o->n_alphas; a++)
            sums[a] -= log((hit + o->alphas[a]) / (tot + 4 * o->alphas[a]));
        correct += row_argmax(row) == p[i].base;
    }
    int best = 0;
    for (int a = 1; a < o->n_alphas; a++)
        if (sums[a] < sums[best]) best = a;
    memset(r, 0, sizeof *r);
    snprintf(r->method, sizeof r->method, "%s", sym ? "sym" : "markov");
    r->k = k;
    r->alpha = o->alphas[best];
    r->n = n;
    r->ce = n ? sums[best] / n : NAN;
    r->acc = n ? (double)correct / n : NAN;
    r->ce_full = r->acc_full = NAN;
}

/* ---- model evaluation ----------------------------------------------------------------------- */

typedef struct {
    md_model_t *m;
    const md_config_t *cfg;
    const md_vocab_t *v;
    int V, npass, id4[4];
    int mask_id;
    /* batch: windows back to back, pass 0 (forward) then pass 1 (reverse complement) each */
    int32_t *ids;
    int64_t nids, mids;
    int64_t *seq_off;
    int nseq, mseq;
    int64_t *row_pos;          /* [nids] position index scored at this row of pass 0, or -1 */
    int64_t *seq_fwd;          /* [nseq] first row of the forward sequence of this window */
    float *buf;                /* [nids, V] pass-0 logits at scored rows (two passes only) */
    int64_t next_row;
    int cur_seq;
    int64_t cur_pos;
    /* results */
    double ce, ce_full;
    int64_t correct, correct_full, n;
    float *lp4, *lpfull;       /* per position (for --positions) */
    const pos_t *pos;
} mev_t;

static void score_row(mev_t *e, const float *lg, int64_t pi)
{
    const int V = e->V;
    float mx = lg[0];
    int am = 0;
    for (int j = 1; j < V; j++)
        if (lg[j] > mx) { mx = lg[j]; am = j; }
    double s = 0;
    for (int j = 0; j < V; j++) s += exp((double)lg[j] - mx);
    double lse = mx + log(s);
    float mx4 = lg[e->id4[0]];
    int am4 = 0;
    for (int b = 1; b < 4; b++)
        if (lg[e->id4[b]] > mx4) { mx4 = lg[e->id4[b]]; am4 = b; }
    double s4 = 0;
    for (int b = 0; b < 4; b++) s4 += exp((double)lg[e->id4[b]] - mx4);
    double lse4 = mx4 + log(s4);
    int b = e->pos[pi].base;
    double lpf = lg[e->id4[b]] - lse, lp4 = lg[e->id4[b]] - lse4;
    e->ce_full -= lpf;
    e->ce -= lp4;
    e->correct_full += am == e->id4[b];
    e->correct += am4 == b;
    e->n++;
    if (e->lp4) { e->lp4[pi] = (float)lp4; e->lpfull[pi] = (float)lpf; }
}

static int model_emit(void *ud, int64_t row0, int64_t nrows, const float *hidden, const float *logits)
{
    (void)hidden;
    mev_t *e = ud;
    if (row0 != e->next_row || !logits) {
        md_error("unexpected rows from the model (row %" PRId64 ", expected %" PRId64 ", logits %s)", row0,
                 e->next_row, logits ? "yes" : "no");
        return -1;
    }
    const int V = e->V;
    for (int64_t j = 0; j < nrows; j++) {
        int64_t row = row0 + j;
        while (e->cur_seq < e->nseq && row >= e->seq_off[e->cur_seq + 1]) e->cur_seq++;
        if (e->cur_seq >= e->nseq) { md_error("the model returned more rows than the batch holds"); return -1; }
        int s = e->cur_seq;
        const float *lg = logits + (size_t)j * V;
        int pass = e->npass == 2 ? s % 2 : 0;
        int64_t frow;   /* the forward-strand row of this base */
        if (pass == 0) {
            frow = row;
        } else {
            int64_t len = e->seq_off[s + 1] - e->seq_off[s];
            frow = e->seq_fwd[s] + (len - 1 - (row - e->seq_off[s]));
        }
        int64_t pi = e->row_pos[frow];
        if (pi < 0) continue;
        if (e->npass == 1) {
            score_row(e, lg, pi);
        } else if (pass == 0) {
            memcpy(e->buf + (size_t)frow * V, lg, sizeof(float) * V);
        } else {
            /* token-level conjoining: (logits(x)[t, v] + logits(rc x)[L-1-t, comp(v)]) / 2 */
            float *acc = e->buf + (size_t)frow * V;
            float avg[MD_MAX_VOCAB];
            for (int v = 0; v < V; v++) avg[v] = 0.5f * (acc[v] + lg[e->cfg->complement_map[v]]);
            score_row(e, avg, pi);
        }
    }
    e->next_row += nrows;
    return 0;
}

static int grow(void **a, int64_t *m, int64_t need, size_t size)
{
    if (need <= *m) return 0;
    int64_t n = *m ? *m : 1024;
    while (n < need) n *= 2;
    void *q = md_realloc(*a, (size_t)n * size);
    if (!q) return -2;
    *a = q;
    *m = n;
    return 0;
}

static int model_run_batch(mev_t *e)
{
    if (e->nseq == 0) return 0;
    e->seq_off[e->nseq] = e->nids;
    e->next_row = 0;
    e->cur_seq = 0;
    md_forward_opts_t fo = { .layer = -1, .want_logits = 1 };
    int ret = md_model_forward(e->m, e->ids, e->nids, e->seq_off, e->nseq, &fo, model_emit, e);
    if (ret < 0) { md_error("forward pass failed: %s", md_last_error()); return -2; }
    if (e->next_row != e->nids) {
        md_error("the model returned %" PRId64 " rows for %" PRId64 " tokens", e->next_row, e->nids);
        return -2;
    }
    e->nids = 0;
    e->nseq = 0;
    return 0;
}

/* Queues window w of segment h (positions scored from index *cursor on, those >= covered). */
static int model_add_window(mev_t *e, const hseg_t *h, const md_window_t *w, int64_t covered,
                            int64_t *cursor, int64_t budget)
{
    int64_t len = w->len, tokens = len * e->npass;
    if (e->nseq > 0 && e->nids + tokens > budget && model_run_batch(e) < 0) return -2;
    int64_t mseq = e->mseq;
    if (grow((void **)&e->seq_off, &mseq, e->nseq + 3, sizeof(int64_t)) < 0) return -2;
    mseq = e->mseq;
    if (grow((void **)&e->seq_fwd, &mseq, e->nseq + 3, sizeof(int64_t)) < 0) return -2;
    e->mseq = (int)mseq;
    int64_t mids = e->mids;
    if (grow((void **)&e->ids, &mids, e->nids + tokens, sizeof(int32_t)) < 0) return -2;
    mids = e->mids;
    if (grow((void **)&e->row_pos, &mids, e->nids + tokens, sizeof(int64_t)) < 0) return -2;
    if (e->npass == 2) {
        mids = e->mids;
        if (grow((void **)&e->buf, &mids, e->nids + tokens, sizeof(float) * e->V) < 0) return -2;
    }
    e->mids = mids;
    int64_t base = e->nids, ws = h->beg + w->start;   /* contig position of token 0 */
    const uint8_t *codes = h->seq + (ws - h->cbeg);
    md_tokopts_t to = { .n_as_pad = 1 };   /* N -> [PAD], as in pretraining (model-spec 4.2) */
    md_tokenize_ex(e->v, &to, codes, len, e->ids + base);
    for (int64_t t = 0; t < tokens; t++) e->row_pos[base + t] = -1;
    /* every selected position in the window is masked; those not yet covered are scored here */
    int64_t pi = *cursor;
    while (pi > h->pos0 && e->pos[pi - 1].pos >= ws) pi--;
    for (; pi < h->pos0 + h->npos && e->pos[pi].pos < ws + len; pi++) {
        int64_t t = e->pos[pi].pos - ws;
        e->ids[base + t] = e->mask_id;
        if (e->pos[pi].pos >= covered) e->row_pos[base + t] = pi;
    }
    *cursor = pi;
    e->seq_off[e->nseq] = base;
    e->seq_fwd[e->nseq++] = base;
    e->nids += len;
    if (e->npass == 2) {
        md_revcomp_ids(e->ids + base, e->ids + base + len, len, e->cfg->complement_map, e->V);
        e->seq_off[e->nseq] = e->nids;
        e->seq_fwd[e->nseq++] = base;
        e->nids += len;
    }
    if (e->nids >= budget) return model_run_batch(e);
    return 0;
}

static int eval_model(const he_opts_t *o, md_model_t *m, md_backend_t *be, const hseg_t *segs, int nseg,
                      const pos_t *p, int64_t npos, int64_t W, float *lp4, float *lpfull, result_t *r)
{
    mev_t e;
    memset(&e, 0, sizeof e);
    e.m = m;
    e.cfg = md_model_config(m);
    e.v = md_vocab_get(e.cfg->tokenizer);
    if (!e.v) return -2;
    e.V = e.cfg->vocab_size;
    e.npass = !e.cfg->rcps && o->rc_average ? 2 : 1;
    for (int b = 0; b < 4; b++) e.id4[b] = e.v->id_base[b];
    e.mask_id = o->mask_with_n ? e.v->id_base[MD_BASE_N] : e.v->id_mask;
    e.pos = p;
    e.lp4 = lp4;
    e.lpfull = lpfull;
    int64_t budget = o->batch_tokens ? o->batch_tokens : strcmp(be->name, "cpu") ? (int64_t)1 << 20 : 65536;
    int ret = 0;
    double t0 = md_realtime();
    int64_t bases = 0, total = 0;
    for (int si = 0; si < nseg; si++) total += segs[si].end - segs[si].beg;
    for (int si = 0; si < nseg && ret == 0; si++) {
        const hseg_t *h = &segs[si];
        md_winiter_t it;
        md_window_t w;
        if (md_winiter_init(&it, h->end - h->beg, W, W) < 0) { ret = -2; break; }
        int64_t covered = h->beg, cursor = h->pos0;
        while (ret == 0 && md_winiter_next(&it, &w) == 0) {
            ret = model_add_window(&e, h, &w, covered, &cursor, budget);
            int64_t we = h->beg + w.start + w.len;
            if (we > covered) { bases += we - covered; covered = we; }
            if (ret == 0 && md_log_level >= MD_LOG_INFO && e.nids == 0)
                md_info("model: %" PRId64 " / %" PRId64 " bases, %.0f bases/s", bases, total,
                        bases / (md_realtime() - t0 + 1e-9));
        }
    }
    if (ret == 0) ret = model_run_batch(&e);
    if (ret == 0 && e.n != npos) {
        md_error("scored %" PRId64 " positions with the model, expected %" PRId64, e.n, npos);
        ret = -2;
    }
    if (ret == 0) {
        memset(r, 0, sizeof *r);
        snprintf(r->method, sizeof r->method, "model");
        r->k = -1;
        r->alpha = NAN;
        r->n = e.n;
        r->ce = e.n ? e.ce / e.n : NAN;
        r->acc = e.n ? (double)e.correct / e.n : NAN;
        r->ce_full = e.n ? e.ce_full / e.n : NAN;
        r->acc_full = e.n ? (double)e.correct_full / e.n : NAN;
        md_info("model: %" PRId64 " bases in %.1f s", total, md_realtime() - t0);
    }
    free(e.ids);
    free(e.seq_off);
    free(e.seq_fwd);
    free(e.row_pos);
    free(e.buf);
    return ret;
}

/* ---- output --------------------------------------------------------------------------------- */

static void print_row(FILE *fp, const result_t *r, double best_ce)
{
    char k[16], a[16], cf[32], af[32];
    snprintf(k, sizeof k, r->k < 0 ? "." : "%d", r->k);
    snprintf(a, sizeof a, isnan(r->alpha) ? "." : "%g", r->alpha);
    snprintf(cf, sizeof cf, isnan(r->ce_full) ? "." : "%.6f", r->ce_full);
    snprintf(af, sizeof af, isnan(r->acc_full) ? "." : "%.6f", r->acc_full);
    fprintf(fp, "%s\t%s\t%s\t%" PRId64 "\t%.6f\t%.6f\t%.6f\t%s\t%s\t%.6f\n", r->method, k, a, r->n, r->ce,
            r->ce / M_LN2, r->acc, cf, af, (r->ce - best_ce) / best_ce);
}

static int write_outputs(const he_opts_t *o, const char *cmdline, const result_t *model, const result_t *res,
                         int nres, int best_m, int best_s)
{
    const result_t *best = res[best_m].ce <= res[best_s].ce ? &res[best_m] : &res[best_s];
    /* human-readable table */
    fprintf(stderr, "\n%-8s %3s %6s %9s %9s %9s %8s %10s %9s\n", "method", "k", "alpha", "positions", "ce_nats",
            "ce_bits", "accuracy", "ce_full", "acc_full");
    for (int i = -1; i < nres; i++) {
        const result_t *r = i < 0 ? model : &res[i];
        if (!r) continue;
        int mark = r == &res[best_m] || r == &res[best_s];
        char k[8];
        snprintf(k, sizeof k, r->k < 0 ? "." : "%d", r->k);
        char a[16];
        snprintf(a, sizeof a, isnan(r->alpha) ? "." : "%g", r->alpha);
        fprintf(stderr, "%-8s %3s %6s %9" PRId64 " %9.5f %9.5f %8.5f", r->method, k, a, r->n, r->ce, r->ce / M_LN2,
                r->acc);
        if (!isnan(r->ce_full)) fprintf(stderr, " %10.5f %9.5f", r->ce_full, r->acc_full);
        fprintf(stderr, "%s\n", mark ? "   <- best of its family" : "");
    }
    if (model) {
        double d = best->ce - model->ce;
        fprintf(stderr, "model vs best baseline (%s k=%d): CE %.5f vs %.5f nats, %+.5f nats (%+.2f%%), "
                "accuracy %+.5f; model %s\n", best->method, best->k, model->ce, best->ce, -d,
                -100 * d / best->ce, model->acc - best->acc, d > 0 ? "better" : "NOT better");
    }
    /* TSV */
    FILE *fp = stdout;
    char *tmp = NULL;
    if (strcmp(o->output, "-")) {
        size_t n = strlen(o->output) + 32;
        if (!(tmp = md_malloc(n))) return -2;
        snprintf(tmp, n, "%s.tmp.%ld", o->output, (long)getpid());
        if (!(fp = fopen(tmp, "w"))) {
            md_error("%s: cannot create: %s", tmp, strerror(errno));
            free(tmp);
            return -2;
        }
    }
    fprintf(fp, "##heldout_eval version=%s\n##command=%s\n", MD_VERSION, cmdline);
    fprintf(fp, "##ce_nats, ce_bits, accuracy: over A/C/G/T (the model's logits renormalised over the four "
                "bases); ce_full_nats, accuracy_full: the model over its whole vocabulary (as the trainer's "
                "validation); baselines: add-alpha counts, k and alpha chosen on these positions; "
                "ce_rel_best_baseline = (ce - best baseline ce) / best baseline ce\n");
    fprintf(fp, "##margin row: ce = model - best baseline (negative: the model is better), accuracy = model - "
                "best baseline, k and alpha of that baseline\n");
    fprintf(fp, "#method\tk\talpha\tpositions\tce_nats\tce_bits\taccuracy\tce_full_nats\taccuracy_full\t"
                "ce_rel_best_baseline\n");
    if (model) print_row(fp, model, best->ce);
    for (int i = 0; i < nres; i++) print_row(fp, &res[i], best->ce);
    result_t bm = res[best_m], bs = res[best_s];
    snprintf(bm.method, sizeof bm.method, "best_markov");
    snprintf(bs.method, sizeof bs.method, "best_sym");
    print_row(fp, &bm, best->ce);
    print_row(fp, &bs, best->ce);
    if (model) {
        result_t d = *model;
        snprintf(d.method, sizeof d.method, "margin");
        d.k = best->k;
        d.alpha = best->alpha;
        d.ce = model->ce - best->ce;
        d.acc = model->acc - best->acc;
        d.ce_full = d.acc_full = NAN;
        fprintf(fp, "%s\t%d\t%g\t%" PRId64 "\t%.6f\t%.6f\t%.6f\t.\t.\t%.6f\n", d.method, d.k, d.alpha, d.n,
                d.ce, d.ce / M_LN2, d.acc, d.ce / best->ce);
    }
    int bad = fflush(fp) != 0 || ferror(fp);
    if (fp != stdout && fclose(fp) != 0) bad = 1;
    if (bad) {
        md_error("%s: write error: %s", o->output, strerror(errno));
        if (tmp) unlink(tmp);
        free(tmp);
        return -2;
    }
    if (tmp && rename(tmp, o->output) != 0) {
        md_error("%s: cannot rename %s: %s", o->output, tmp, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -2;
    }
    free(tmp);
    return 0;
}

static int write_positions(const he_opts_t *o, const hseg_t *segs, const pos_t *p, int64_t n, const counts_t *c,
                           const result_t *bm, const result_t *bs, const float *lp4, const float *lpfull)
{
    size_t len = strlen(o->positions) + 32;
    char *tmp = md_malloc(len);
    if (!tmp) return -2;
    snprintf(tmp, len, "%s.tmp.%ld", o->positions, (long)getpid());
    FILE *fp = fopen(tmp, "w");
    if (!fp) {
        md_error("%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return -2;
    }
    fprintf(fp, "#contig\tpos\tref\tmodel_logp4\tmodel_logp_full\tmarkov%d_logp\tsym%d_logp\n", bm->k, bs->k);
    for (int64_t i = 0; i < n; i++) {
        const pos_t *e = &p[i];
        fprintf(fp, "%s\t%" PRId64 "\t%c\t", segs[e->seg].contig, e->pos + 1, "ACGT"[e->base]);
        if (lp4) fprintf(fp, "%.6g\t%.6g", lp4[i], lpfull[i]);
        else fputs(".\t.", fp);
        fprintf(fp, "\t%.6g\t%.6g\n", row_logp(count_row(c, e, 0, bm->k), e->base, bm->alpha),
                row_logp(count_row(c, e, 1, bs->k), e->base, bs->alpha));
    }
    int bad = fflush(fp) != 0 || ferror(fp);
    if (fclose(fp) != 0) bad = 1;
    if (bad || rename(tmp, o->positions) != 0) {
        md_error("%s: cannot write: %s", o->positions, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -2;
    }
    free(tmp);
    return 0;
}

/* ---- command line --------------------------------------------------------------------------- */

static void usage(FILE *fp, const he_opts_t *o)
{
    fprintf(fp,
            "Usage: heldout_eval [options] --holdout chr:beg-end [--holdout ...] IN.fa [IN.fa ...]\n"
            "Held-out masked-position cross-entropy and accuracy of a model (-m) next to order-k Markov\n"
            "and symmetric k-mer count baselines fitted on every base outside the held-out regions.\n"
            "  --holdout STR      held-out region chr:beg-end (1-based, inclusive; repeatable)\n"
            "  -m, --model DIR    model folder (config.json + model.safetensors); none: baselines only\n"
            "  -d, --device STR   cpu, cuda or auto [%s]\n"
            "      --precision S  fp32 or bf16 (GPU) [backend default]\n"
            "  -t, --threads INT  compute threads [%d]\n"
            "  -w, --window INT   model window [model max_seq_len, else 32768]\n"
            "      --batch-tokens INT  tokens per forward call [65536 CPU, 1048576 GPU]\n"
            "      --rc STR       Caduceus-Ph: average (forward + reverse-complement logits, as predict)\n"
            "                     or none [average]; PS models are equivariant and run once\n"
            "      --mask-frac F  fraction of held-out bases evaluated (and masked) [%g]\n"
            "      --seed INT     position-selection seed [%" PRIu64 "]\n"
            "      --markov-max K largest Markov order (0..%d) [%d]\n"
            "      --sym-max K    largest symmetric half-width (1..%d) [%d]\n"
            "      --alpha LIST   smoothing candidates, comma separated [0.001,0.01,0.1,0.5,1,2,4,8]\n"
            "  -o, --output FILE  result TSV [stdout]\n"
            "      --positions FILE  per-position log-probabilities (TSV)\n"
            "      --mask-with-n  put the N token, not [MASK], at the selected positions (tests)\n"
            "  -v, --verbose      progress on stderr\n",
            o->device, o->threads, o->mask_frac, o->seed, MARKOV_KMAX, o->markov_max, SYM_KMAX, o->sym_max);
}

static int parse_alphas(he_opts_t *o, const char *s)
{
    o->n_alphas = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        double a = strtod(p, &end);
        if (end == p || errno || o->n_alphas == MAX_ALPHAS || (*end && *end != ',')) {
            md_error("--alpha '%s': expected up to %d comma-separated numbers", s, MAX_ALPHAS);
            return -2;
        }
        o->alphas[o->n_alphas++] = a;
        p = *end ? end + 1 : end;
    }
    return o->n_alphas ? 0 : -2;
}

static int parse_i64(const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *v)
{
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (end == s || *end || errno || x < lo || x > hi) {
        md_error("%s: '%s' is not an integer in %" PRId64 "..%" PRId64, opt, s, lo, hi);
        return -2;
    }
    *v = x;
    return 0;
}

int main(int argc, char *argv[])
{
    enum { O_HOLD = 256, O_PREC, O_BATCH, O_RC, O_FRAC, O_SEED, O_MMAX, O_SMAX, O_ALPHA, O_POS, O_MASKN };
    static const struct option lo[] = {
        { "holdout", required_argument, 0, O_HOLD }, { "model", required_argument, 0, 'm' },
        { "device", required_argument, 0, 'd' }, { "precision", required_argument, 0, O_PREC },
        { "threads", required_argument, 0, 't' }, { "window", required_argument, 0, 'w' },
        { "batch-tokens", required_argument, 0, O_BATCH }, { "rc", required_argument, 0, O_RC },
        { "mask-frac", required_argument, 0, O_FRAC }, { "seed", required_argument, 0, O_SEED },
        { "markov-max", required_argument, 0, O_MMAX }, { "sym-max", required_argument, 0, O_SMAX },
        { "alpha", required_argument, 0, O_ALPHA }, { "output", required_argument, 0, 'o' },
        { "positions", required_argument, 0, O_POS }, { "mask-with-n", no_argument, 0, O_MASKN },
        { "verbose", no_argument, 0, 'v' }, { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 } };
    he_opts_t o;
    he_opts_init(&o);
    double t_start = md_realtime();
    const char **hold = calloc(argc + 1, sizeof *hold);
    if (!hold) return 2;
    o.holdout = hold;
    int c, bad = 0;
    int64_t v;
    while ((c = getopt_long(argc, argv, "m:d:t:w:o:vh", lo, NULL)) >= 0 && !bad) {
        switch (c) {
        case O_HOLD: hold[o.n_holdout++] = optarg; break;
        case 'm': o.model_dir = optarg; break;
        case 'd': o.device = optarg; break;
        case O_PREC: o.precision = optarg; break;
        case 't': bad = parse_i64("-t", optarg, 1, 1024, &v) < 0; o.threads = (int)v; break;
        case 'w': bad = parse_i64("-w", optarg, 1, INT32_MAX, &v) < 0; o.window = v; break;
        case O_BATCH: bad = parse_i64("--batch-tokens", optarg, 1, INT64_MAX / 2, &v) < 0; o.batch_tokens = v; break;
        case O_RC:
            if (!strcmp(optarg, "average")) o.rc_average = 1;
            else if (!strcmp(optarg, "none")) o.rc_average = 0;
            else { md_error("--rc: '%s' is not average or none", optarg); bad = 1; }
            break;
        case O_FRAC: {
            char *end;
            o.mask_frac = strtod(optarg, &end);
            if (end == optarg || *end) { md_error("--mask-frac: '%s' is not a number", optarg); bad = 1; }
            break;
        }
        case O_SEED: bad = parse_i64("--seed", optarg, 0, INT64_MAX, &v) < 0; o.seed = (uint64_t)v; break;
        case O_MMAX: bad = parse_i64("--markov-max", optarg, 0, MARKOV_KMAX, &v) < 0; o.markov_max = (int)v; break;
        case O_SMAX: bad = parse_i64("--sym-max", optarg, 1, SYM_KMAX, &v) < 0; o.sym_max = (int)v; break;
        case O_ALPHA: bad = parse_alphas(&o, optarg) < 0; break;
        case 'o': o.output = optarg; break;
        case O_POS: o.positions = optarg; break;
        case O_MASKN: o.mask_with_n = 1; break;
        case 'v': md_log_level = MD_LOG_INFO; break;
        case 'h': usage(stdout, &o); free(hold); return 0;
        default: bad = 1; break;
        }
    }
    if (bad) { usage(stderr, &o); free(hold); return 1; }
    o.inputs = (const char **)argv + optind;
    o.n_inputs = argc - optind;
    if (he_opts_check(&o) < 0) { usage(stderr, &o); free(hold); return 1; }

    /* the command line, for the TSV header */
    size_t cl = 1;
    for (int i = 0; i < argc; i++) cl += strlen(argv[i]) + 1;
    char *cmdline = calloc(cl, 1);
    if (!cmdline) { free(hold); return 2; }
    for (int i = 0; i < argc; i++) {
        if (i) strcat(cmdline, " ");
        strcat(cmdline, argv[i]);
    }

    int ret = 2;
    hseg_t *segs = NULL;
    int nseg = 0;
    pos_t *pos = NULL;
    int64_t npos = 0, nrec = 0;
    counts_t cnt;
    memset(&cnt, 0, sizeof cnt);
    md_backend_t *be = NULL;
    md_model_t *model = NULL;
    float *lp4 = NULL, *lpfull = NULL;
    result_t res[MARKOV_KMAX + 1 + SYM_KMAX], mres;
    int nres = 0;

    if (segs_build(&o, &segs, &nseg) < 0) { ret = 1; goto out; }
    /* the model first, so that a bad model folder fails before the long count pass */
    int64_t W = o.window;
    if (o.model_dir) {
        if (!(be = md_backend_open(o.device, o.precision, o.threads))) goto out;
        if (!(model = md_model_load(o.model_dir, be))) goto out;
        const md_config_t *cfg = md_model_config(model);
        if (cfg->arch == MD_ARCH_MAMBA) {
            md_error("%s: a causal Mamba model has no masked-position prediction; this evaluation is for "
                     "Caduceus masked-LM models", o.model_dir);
            goto out;
        }
        if (!W) W = cfg->max_seq_len > 0 ? cfg->max_seq_len : 32768;
    }
    if (!W) W = 32768;
    if (counts_init(&cnt, o.markov_max, o.sym_max) < 0) goto out;
    double t0 = md_realtime();
    if (read_inputs(&o, segs, nseg, &cnt, &nrec) < 0) goto out;
    double t_fit = md_realtime() - t0;
    if (positions_build(&o, segs, nseg, &pos, &npos) < 0) goto out;
    if (npos == 0) { md_error("the held-out regions hold no evaluation position"); goto out; }
    int64_t held = 0;
    for (int i = 0; i < nseg; i++) held += segs[i].end - segs[i].beg;
    fprintf(stderr, "[heldout_eval] %" PRId64 " records; %" PRId64 " training bases counted in %.1f s; %d held-out "
            "interval(s), %" PRId64 " bases, %" PRId64 " evaluation positions (mask-frac %g, seed %" PRIu64 ")\n",
            nrec, cnt.n_train, t_fit, nseg, held, npos, o.mask_frac, o.seed);
    t0 = md_realtime();
    int best_m = 0, best_s = 0;
    for (int k = 0; k <= o.markov_max; k++) {
        eval_baseline(&o, &cnt, pos, npos, 0, k, &res[nres]);
        if (res[nres].ce < res[best_m].ce) best_m = nres;
        nres++;
    }
    best_s = nres;
    for (int k = 1; k <= o.sym_max; k++) {
        eval_baseline(&o, &cnt, pos, npos, 1, k, &res[nres]);
        if (res[nres].ce < res[best_s].ce) best_s = nres;
        nres++;
    }
    fprintf(stderr, "[heldout_eval] baselines evaluated in %.1f s\n", md_realtime() - t0);
    if (model) {
        if (o.positions) {
            lp4 = md_malloc(sizeof(float) * npos);
            lpfull = md_malloc(sizeof(float) * npos);
            if (!lp4 || !lpfull) goto out;
        }
        fprintf(stderr, "[heldout_eval] model %s on %s, window %" PRId64 "\n", o.model_dir, be->name, W);
        if (eval_model(&o, model, be, segs, nseg, pos, npos, W, lp4, lpfull, &mres) < 0) goto out;
    }
    if (write_outputs(&o, cmdline, model ? &mres : NULL, res, nres, best_m, best_s) < 0) goto out;
    if (o.positions && write_positions(&o, segs, pos, npos, &cnt, &res[best_m], &res[best_s], lp4, lpfull) < 0)
        goto out;
    ret = 0;
out:
    fprintf(stderr, "[heldout_eval] Version: %s\n[heldout_eval] CMD: %s\n[heldout_eval] Real time: %.3f sec; "
            "CPU: %.3f sec; Peak RSS: %.3f GB\n", MD_VERSION, cmdline, md_realtime() - t_start, md_cputime(),
            md_peak_rss_kb() / 1048576.0);
    free(lp4);
    free(lpfull);
    md_model_free(model);
    if (be) be->destroy(be);
    counts_free(&cnt);
    free(pos);
    for (int i = 0; i < nseg; i++) {
        free(segs[i].contig);
        free(segs[i].seq);
    }
    free(segs);
    free(cmdline);
    free(hold);
    return ret;
}
