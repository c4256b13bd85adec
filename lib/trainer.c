/* trainer.c: the pretraining loop. Data: every input record (FASTA/FASTQ/BAM through seqio, or
 * the --train-regions of an indexed FASTA) is held in memory as base codes and cut by the
 * held-out regions (--holdout, --val-regions) into training pieces and validation pieces.
 * Training sequence g (g = step * batch * grad_accum + micro * batch + row) is a window drawn
 * from a hash of (seed, g), reverse-complemented for Ph with probability 0.5, and masked with
 * the same hash (mlm.c): the data order is a function of the step alone, so a resumed run sees
 * exactly the sequences an uninterrupted run would. Validation tiles the held-out pieces with
 * fixed windows and fixed masks. Checkpoints: train_state.bin (parameters, AdamW moments, step,
 * tokens, elapsed time, checksum), model.safetensors and config.json (Hugging Face layout), each
 * written to a temporary name and renamed. train.tsv gets one line per update.
 * Data parallelism (dist.h): rank r of N computes the r-th block of each update's global
 * sequences (md_dist_seq_index; N = 1 gives the order above), the loss normaliser (sum of the
 * weights), the loss statistics and the gradients are summed over the ranks, so every rank takes
 * the same optimizer step as one process with N-fold accumulation; rank 0 alone writes files,
 * validates and reports. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "md.h"
#include "model.h"
#include "regions.h"
#include "seqio.h"
#include "train.h"

#define SALT_DATA 0x6461746131ULL
#define SALT_RC   0x7263617567ULL
#define SALT_VAL  0x76616c3131ULL
#define STATE_MAGIC "MDTRAIN\001"

void md_trainer_opts_init(md_trainer_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->val_windows = 64;
    o->max_n_frac = 0.5;
    o->variant = MD_VARIANT_PS;
    o->d_model = 128;
    o->n_layer = 8;
    o->d_state = 16;
    o->expand = 2;
    o->seq_len = 1024;
    o->batch = 8;
    o->grad_accum = 1;
    o->steps = 1000;
    o->warmup = 0.1;
    md_optim_init(&o->optim);
    md_mlm_init(&o->mlm);
    o->seed = 2222;
    o->rc_aug = -1;
    o->val_every = 100;
    o->save_every = 500;
    o->device = "cpu";
    o->nranks = 1;
}

int md_trainer_opts_check(const md_trainer_opts_t *o)
{
#define BAD(...) do { md_error(__VA_ARGS__); return -2; } while (0)
    if (!o->outdir || !*o->outdir) BAD("no output folder (-o)");
    if (strlen(o->outdir) > 4000) BAD("output folder name too long");
    if (o->n_inputs < 1) BAD("no input sequence file");
    if (o->seq_len < 8 || o->seq_len > ((int64_t)1 << 31)) BAD("--seq-len %lld out of range (8..2^31)", (long long)o->seq_len);
    if (o->batch < 1 || o->batch > 65536) BAD("--batch %d out of range (1..65536)", o->batch);
    if (o->grad_accum < 1 || o->grad_accum > 65536) BAD("--grad-accum %d out of range", o->grad_accum);
    if (o->steps < 1) BAD("--steps must be at least 1");
    if (o->stop_after < 0 || o->stop_after > o->steps) BAD("--stop-after %lld outside 0..--steps", (long long)o->stop_after);
    if (!(o->warmup >= 0) || (o->warmup >= 1 && o->warmup > (double)o->steps))
        BAD("--warmup %g: give a fraction of the steps (< 1) or a number of updates up to --steps", o->warmup);
    if (!(o->optim.lr > 0 && o->optim.lr < 10)) BAD("--lr %g out of range (0..10)", o->optim.lr);
    if (!(o->optim.lr_min >= 0 && o->optim.lr_min <= o->optim.lr)) BAD("--lr-min %g must be in 0..--lr", o->optim.lr_min);
    if (!(o->optim.weight_decay >= 0 && o->optim.weight_decay < 1)) BAD("--weight-decay %g out of range (0..1)", o->optim.weight_decay);
    if (!(o->optim.clip >= 0)) BAD("--clip %g must be >= 0 (0: no clipping)", o->optim.clip);
    if (!(o->optim.beta1 >= 0 && o->optim.beta1 < 1 && o->optim.beta2 >= 0 && o->optim.beta2 < 1)) BAD("betas must be in [0, 1)");
    if (!(o->mlm.select > 0 && o->mlm.select <= 1)) BAD("--mask-prob %g out of range (0..1]", o->mlm.select);
    if (!(o->mlm.soft_weight >= 0 && o->mlm.soft_weight <= 1)) BAD("--soft-mask-weight %g out of range (0..1)", o->mlm.soft_weight);
    if (!(o->max_n_frac >= 0 && o->max_n_frac <= 1)) BAD("max N fraction %g out of range", o->max_n_frac);
    if (o->val_every < 0 || o->save_every < 0) BAD("--val-every and --save-every must be >= 0");
    if (!o->init_from && !o->resume) {
        if (o->d_model < 1 || o->d_model > 16384) BAD("--d-model %d out of range (1..16384)", o->d_model);
        if (o->n_layer < 1 || o->n_layer > 1024) BAD("--n-layer %d out of range (1..1024)", o->n_layer);
        if (o->d_state < 1 || o->d_state > 64) BAD("--d-state %d out of range (1..64)", o->d_state);
        if (o->expand < 1 || o->expand > 16) BAD("--expand %d out of range (1..16)", o->expand);
    }
    if (o->dist && o->nccl_id) BAD("give a data-parallel group or an NCCL id, not both");
    if (o->nranks < 1 || o->nranks > 4096 || o->rank < 0 || o->rank >= o->nranks)
        BAD("rank %d of %d ranks out of range", o->rank, o->nranks);
    if (o->nranks > 1 && !o->nccl_id) BAD("%d ranks but no NCCL group id", o->nranks);
    if (o->nccl_id && (!o->device || (strcmp(o->device, "cuda") && strcmp(o->device, "gpu"))))
        BAD("multi-GPU training (--gpus, --nccl) needs -d cuda, not -d %s", o->device ? o->device : "(none)");
    if (o->variant == MD_VARIANT_MAMBA && o->rc_aug == 1) md_warn("reverse-complement augmentation with a causal model");
    return 0;
#undef BAD
}

/* --- data ------------------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *seq;
    int64_t len;
} piece_t;

typedef struct {
    uint8_t **bufs;
    int nbufs, mbufs;
    piece_t *tr, *va;
    int ntr, mtr, nva, mva;
    int64_t *cum, total;        /* cumulative valid window starts of training pieces >= L */
    int *cum_idx, ncum;
    int64_t tr_bases, va_bases;
    piece_t *vw;                /* validation windows */
    int nvw;
} data_t;

static void data_free(data_t *d)
{
    for (int i = 0; i < d->nbufs; i++) free(d->bufs[i]);
    free(d->bufs);
    free(d->tr);
    free(d->va);
    free(d->cum);
    free(d->cum_idx);
    free(d->vw);
}

static int push_piece(piece_t **a, int *n, int *m, const uint8_t *seq, int64_t len)
{
    if (len <= 0) return 0;
    if (*n == *m) {
        int nm = *m ? 2 * *m : 64;
        piece_t *p = md_realloc(*a, nm * sizeof *p);
        if (!p) return -2;
        *a = p;
        *m = nm;
    }
    (*a)[*n].seq = seq;
    (*a)[*n].len = len;
    (*n)++;
    return 0;
}

static int cmp_region(const void *a, const void *b)
{
    const md_region_t *x = a, *y = b;
    return x->beg < y->beg ? -1 : x->beg > y->beg;
}

/* Adds one record: cut [beg, beg+len) of contig by the held-out regions. contig NULL: no
 * coordinates (reads without alignment): all training. reads: 1 for aligned reads, which go
 * whole to validation when they overlap a held-out region instead of being cut. */
static int add_record(data_t *d, const md_regions_t *hold, int *hit, const char *contig, int64_t beg, const uint8_t *seq,
                      int64_t len, int reads)
{
    uint8_t *buf = md_malloc(len ? len : 1);
    if (!buf) return -2;
    memcpy(buf, seq, len);
    if (d->nbufs == d->mbufs) {
        int nm = d->mbufs ? 2 * d->mbufs : 64;
        uint8_t **b = md_realloc(d->bufs, nm * sizeof *b);
        if (!b) { free(buf); return -2; }
        d->bufs = b;
        d->mbufs = nm;
    }
    d->bufs[d->nbufs++] = buf;
    /* held-out intervals overlapping this record, sorted */
    md_region_t ov[256];
    int nov = 0;
    for (int i = 0; contig && i < hold->n; i++) {
        const md_region_t *h = &hold->a[i];
        if (strcmp(h->contig, contig) != 0 || h->end <= beg || h->beg >= beg + len) continue;
        hit[i] = 1;
        if (nov == 256) { md_error("more than 256 held-out regions overlap record '%s'", contig); return -2; }
        ov[nov++] = *h;
    }
    if (reads) {   /* a read overlapping a held-out region is validation data, whole */
        if (!nov) return push_piece(&d->tr, &d->ntr, &d->mtr, buf, len);
        return push_piece(&d->va, &d->nva, &d->mva, buf, len);
    }
    qsort(ov, nov, sizeof *ov, cmp_region);
    int64_t pos = beg;   /* start of the next training stretch */
    for (int i = 0; i < nov; i++) {
        int64_t hb = ov[i].beg > beg ? ov[i].beg : beg, he = ov[i].end < beg + len ? ov[i].end : beg + len;
        if (he <= pos) continue;
        if (hb > pos && push_piece(&d->tr, &d->ntr, &d->mtr, buf + (pos - beg), hb - pos) < 0) return -2;
        if (hb < pos) hb = pos;
        if (push_piece(&d->va, &d->nva, &d->mva, buf + (hb - beg), he - hb) < 0) return -2;
        pos = he;
    }
    return push_piece(&d->tr, &d->ntr, &d->mtr, buf + (pos - beg), beg + len - pos);
}

static int read_input(data_t *d, const char *path, const md_trainer_opts_t *o, const md_regions_t *hold, int *hit,
                      int val_only)
{
    md_seqopts_t so;
    md_seqopts_init(&so);
    if (val_only) {
        so.regions = o->holdout;
        so.n_regions = o->n_holdout;
        so.bed = o->val_bed;
    } else {
        so.bed = o->train_bed;
    }
    md_seqreader_t *r = md_seqreader_open(path, &so);
    if (!r) return -2;
    md_seq_t rec;
    md_seq_init(&rec);
    int ret, err = 0;
    while ((ret = md_seqreader_read(r, &rec)) >= 0) {
        if (val_only) {
            uint8_t *buf = md_malloc(rec.len ? rec.len : 1);
            if (!buf) { err = 1; break; }
            memcpy(buf, rec.seq, rec.len);
            if (d->nbufs == d->mbufs) {
                int nm = d->mbufs ? 2 * d->mbufs : 64;
                uint8_t **b = md_realloc(d->bufs, nm * sizeof *b);
                if (!b) { free(buf); err = 1; break; }
                d->bufs = b;
                d->mbufs = nm;
            }
            d->bufs[d->nbufs++] = buf;
            if (push_piece(&d->va, &d->nva, &d->mva, buf, rec.len) < 0) { err = 1; break; }
            continue;
        }
        const char *contig = NULL;
        int64_t beg = 0;
        int reads = 0;
        if (rec.kind == MD_SEQ_FASTA) contig = rec.name;
        else if (rec.kind == MD_SEQ_REGION) { contig = rec.contig; beg = rec.beg; }
        else if (rec.kind == MD_SEQ_READ && rec.contig && rec.beg >= 0) { contig = rec.contig; beg = rec.beg; reads = 1; }
        if (add_record(d, hold, hit, contig, beg, rec.seq, rec.len, reads) < 0) { err = 1; break; }
    }
    md_seq_destroy(&rec);
    if (md_seqreader_close(r) < 0) err = 1;
    return err || ret < -1 ? -2 : 0;
}

static int64_t count_n(const uint8_t *s, int64_t n)
{
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) k += (s[i] & MD_BASE_MASK) >= MD_BASE_N;
    return k;
}

static int data_load(data_t *d, const md_trainer_opts_t *o)
{
    md_regions_t hold;
    md_regions_init(&hold);
    int ret = -2;
    int *hit = NULL;
    for (int i = 0; i < o->n_holdout; i++)
        if (md_regions_add_string(&hold, NULL, o->holdout[i], "--holdout") < 0) goto out;
    if (o->val_bed && md_bed_read(o->val_bed, NULL, &hold) < 0) goto out;
    if (!(hit = md_calloc(hold.n ? hold.n : 1, sizeof *hit))) goto out;
    for (int i = 0; i < o->n_inputs; i++)
        if (read_input(d, o->inputs[i], o, &hold, hit, 0) < 0) goto out;
    /* held-out regions outside the records read (e.g. outside --train-regions): fetch them */
    if (hold.n && d->nva == 0 && o->train_bed) {
        for (int i = 0; i < o->n_inputs && d->nva == 0; i++)
            if (read_input(d, o->inputs[i], o, &hold, hit, 1) < 0) goto out;
        for (int i = 0; i < hold.n; i++) hit[i] = d->nva > 0;
    }
    for (int i = 0; i < hold.n; i++)
        if (!hit[i]) {
            char buf[256];
            md_warn("held-out region %s overlaps no input sequence", md_region_format(&hold.a[i], buf, sizeof buf));
        }
    if (hold.n && d->nva == 0) { md_error("no held-out region overlaps the input sequences"); goto out; }
    /* training windows */
    const int64_t L = o->seq_len;
    if (!(d->cum = md_malloc((d->ntr ? d->ntr : 1) * sizeof *d->cum)) ||
        !(d->cum_idx = md_malloc((d->ntr ? d->ntr : 1) * sizeof *d->cum_idx)))
        goto out;
    for (int i = 0; i < d->ntr; i++) {
        d->tr_bases += d->tr[i].len;
        if (d->tr[i].len < L) continue;
        d->total += d->tr[i].len - L + 1;
        d->cum[d->ncum] = d->total;
        d->cum_idx[d->ncum++] = i;
    }
    if (d->total == 0) {
        md_error("no training sequence is at least --seq-len %lld bases long (%d pieces, %lld bases after removing "
                 "held-out regions)", (long long)L, d->ntr, (long long)d->tr_bases);
        goto out;
    }
    /* validation windows: tiles of L (whole pieces when shorter, down to 64) */
    int64_t cand = 0;
    for (int pass = 0; pass < 2; pass++) {
        int64_t k = 0;
        for (int i = 0; i < d->nva; i++) {
            const piece_t *p = &d->va[i];
            if (pass == 0) d->va_bases += p->len;
            for (int64_t off = 0; off < p->len; off += L) {
                int64_t len = p->len - off < L ? p->len - off : L;
                if (len < L && (off > 0 || len < 64)) continue;
                if (count_n(p->seq + off, len) > o->max_n_frac * len) continue;
                if (pass == 1) {
                    /* keep an even spread of at most val_windows */
                    int64_t want = cand <= o->val_windows ? k : -1;
                    if (cand > o->val_windows) {
                        int64_t j = (int64_t)((double)d->nvw * cand / o->val_windows);
                        if (d->nvw < o->val_windows && k == j) want = k;
                    }
                    if (want == k) { d->vw[d->nvw].seq = p->seq + off; d->vw[d->nvw].len = len; d->nvw++; }
                }
                k++;
            }
        }
        if (pass == 0) {
            cand = k;
            if (!(d->vw = md_malloc((cand ? cand : 1) * sizeof *d->vw))) goto out;
        }
    }
    if (d->nva && !d->nvw) md_warn("the held-out regions hold no validation window (too short or too much N)");
    ret = 0;
out:
    free(hit);
    md_regions_destroy(&hold);
    return ret;
}

/* Training window g into out [L] (base codes). */
static void sample_window(const data_t *d, const md_trainer_opts_t *o, uint64_t g, int rc, uint8_t *out)
{
    const int64_t L = o->seq_len;
    const uint8_t *src = NULL;
    for (uint64_t attempt = 0; attempt < 64; attempt++) {
        uint64_t r = md_rng_u64(o->seed ^ SALT_DATA, g, attempt) % (uint64_t)d->total;
        int lo = 0, hi = d->ncum - 1;
        while (lo < hi) {   /* first cum > r */
            int mid = (lo + hi) / 2;
            if ((uint64_t)d->cum[mid] > r) hi = mid; else lo = mid + 1;
        }
        int64_t prev = lo ? d->cum[lo - 1] : 0;
        src = d->tr[d->cum_idx[lo]].seq + ((int64_t)r - prev);
        if (count_n(src, L) <= o->max_n_frac * L) break;
    }
    if (rc) md_revcomp_codes(src, out, L);
    else memcpy(out, src, L);
}

/* --- checkpoint files ------------------------------------------------------------------------- */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) { h ^= c[i]; h *= 0x100000001b3ULL; }
    return h;
}

typedef struct {
    int64_t step, tokens;
    double elapsed;
} run_state_t;

static int write_all(FILE *fp, const void *p, size_t n, uint64_t *h)
{
    *h = fnv(*h, p, n);
    return fwrite(p, 1, n, fp) == n ? 0 : -2;
}

static int state_save(const char *path, const run_state_t *rs, md_train_t *t)
{
    const size_t numel = md_train_table(t)->numel;
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    float *buf = md_malloc(3 * numel * sizeof(float));
    if (!buf) return -2;
    md_weights_t w = *md_train_table(t);
    w.slab = buf;
    int ret = -2;
    FILE *fp = NULL;
    if (md_train_get_params(t, &w) < 0 || md_train_get_moments(t, buf + numel, buf + 2 * numel) < 0) goto out;
    if (!(fp = md_create_exclusive(tmp))) { md_error("%s: cannot create: %s", tmp, strerror(errno)); goto out; }
    uint64_t h = 0xcbf29ce484222325ULL, n64 = numel;
    uint32_t ver[2] = { 1, 0 };
    if (write_all(fp, STATE_MAGIC, 8, &h) < 0 || write_all(fp, ver, sizeof ver, &h) < 0 ||
        write_all(fp, &rs->step, 8, &h) < 0 || write_all(fp, &rs->tokens, 8, &h) < 0 ||
        write_all(fp, &rs->elapsed, 8, &h) < 0 || write_all(fp, &n64, 8, &h) < 0 ||
        write_all(fp, buf, 3 * numel * sizeof(float), &h) < 0 || fwrite(&h, 8, 1, fp) != 1 || fflush(fp) != 0 ||
        fsync(fileno(fp)) != 0) {
        md_error("%s: write failed: %s", tmp, strerror(errno));
        goto out;
    }
    if (fclose(fp) != 0) { fp = NULL; md_error("%s: write failed: %s", tmp, strerror(errno)); goto out; }
    fp = NULL;
    if (rename(tmp, path) != 0) { md_error("%s: cannot rename %s to it: %s", path, tmp, strerror(errno)); goto out; }
    ret = 0;
out:
    if (fp) fclose(fp);
    if (ret < 0) unlink(tmp);
    free(buf);
    return ret;
}

static int state_load(const char *path, run_state_t *rs, md_train_t *t)
{
    const size_t numel = md_train_table(t)->numel;
    FILE *fp = fopen(path, "rb");
    if (!fp) { md_error("%s: cannot open (is this the output folder of a pretrain run?): %s", path, strerror(errno)); return -2; }
    float *buf = md_malloc(3 * numel * sizeof(float));
    int ret = -2;
    char magic[8];
    uint32_t ver[2];
    uint64_t n64, hs, h = 0xcbf29ce484222325ULL;
    if (!buf) goto out;
    if (fread(magic, 1, 8, fp) != 8 || memcmp(magic, STATE_MAGIC, 8) != 0) { md_error("%s: not a mamba-dna training state", path); goto out; }
    h = fnv(h, magic, 8);
    if (fread(ver, sizeof ver, 1, fp) != 1 || fread(&rs->step, 8, 1, fp) != 1 || fread(&rs->tokens, 8, 1, fp) != 1 ||
        fread(&rs->elapsed, 8, 1, fp) != 1 || fread(&n64, 8, 1, fp) != 1) {
        md_error("%s: truncated", path);
        goto out;
    }
    if (ver[0] != 1) { md_error("%s: unsupported version %u", path, ver[0]); goto out; }
    if (n64 != numel) { md_error("%s: holds %llu parameters, config.json implies %zu", path, (unsigned long long)n64, numel); goto out; }
    h = fnv(h, ver, sizeof ver);
    h = fnv(h, &rs->step, 8);
    h = fnv(h, &rs->tokens, 8);
    h = fnv(h, &rs->elapsed, 8);
    h = fnv(h, &n64, 8);
    if (fread(buf, sizeof(float), 3 * numel, fp) != 3 * numel || fread(&hs, 8, 1, fp) != 1) { md_error("%s: truncated", path); goto out; }
    h = fnv(h, buf, 3 * numel * sizeof(float));
    if (h != hs) { md_error("%s: checksum mismatch (corrupt file)", path); goto out; }
    md_weights_t w = *md_train_table(t);
    w.slab = buf;
    if (md_train_set_params(t, &w) < 0 || md_train_set_moments(t, buf + numel, buf + 2 * numel) < 0) goto out;
    ret = 0;
out:
    fclose(fp);
    free(buf);
    return ret;
}

static int save_checkpoint(const md_trainer_opts_t *o, md_train_t *t, md_weights_t *w, const run_state_t *rs)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/train_state.bin", o->outdir);
    if (state_save(p, rs, t) < 0) return -2;
    if (md_train_get_params(t, w) < 0) return -2;
    snprintf(p, sizeof p, "%s/model.safetensors", o->outdir);
    if (md_weights_save(w, p) < 0) return -2;
    snprintf(p, sizeof p, "%s/config.json", o->outdir);
    return md_config_save(&w->cfg, p);
}

/* The options a resume must repeat. */
static json_t *args_json(const md_trainer_opts_t *o)
{
    static const char *const vn[] = { "ph", "ps", "mamba" };
    json_t *r = json_object(), *in = json_array(), *ho = json_array();
    for (int i = 0; i < o->n_inputs; i++) json_array_append_new(in, json_string(o->inputs[i]));
    for (int i = 0; i < o->n_holdout; i++) json_array_append_new(ho, json_string(o->holdout[i]));
    json_object_set_new(r, "inputs", in);
    json_object_set_new(r, "holdout", ho);
    json_object_set_new(r, "train_regions", o->train_bed ? json_string(o->train_bed) : json_null());
    json_object_set_new(r, "val_regions", o->val_bed ? json_string(o->val_bed) : json_null());
    json_object_set_new(r, "init_from", o->init_from ? json_string(o->init_from) : json_null());
    json_object_set_new(r, "variant", json_string(vn[o->variant]));
    json_object_set_new(r, "d_model", json_integer(o->d_model));
    json_object_set_new(r, "n_layer", json_integer(o->n_layer));
    json_object_set_new(r, "d_state", json_integer(o->d_state));
    json_object_set_new(r, "expand", json_integer(o->expand));
    json_object_set_new(r, "seq_len", json_integer(o->seq_len));
    json_object_set_new(r, "batch", json_integer(o->batch));
    json_object_set_new(r, "grad_accum", json_integer(o->grad_accum));
    json_object_set_new(r, "steps", json_integer(o->steps));
    json_object_set_new(r, "warmup", json_real(o->warmup));
    json_object_set_new(r, "lr", json_real(o->optim.lr));
    json_object_set_new(r, "lr_min", json_real(o->optim.lr_min));
    json_object_set_new(r, "beta1", json_real(o->optim.beta1));
    json_object_set_new(r, "beta2", json_real(o->optim.beta2));
    json_object_set_new(r, "eps", json_real(o->optim.eps));
    json_object_set_new(r, "weight_decay", json_real(o->optim.weight_decay));
    json_object_set_new(r, "clip", json_real(o->optim.clip));
    json_object_set_new(r, "seed", json_integer((json_int_t)o->seed));
    json_object_set_new(r, "mask_prob", json_real(o->mlm.select));
    json_object_set_new(r, "soft_mask_weight", json_real(o->mlm.soft_weight));
    json_object_set_new(r, "rc_aug", json_integer(o->rc_aug));
    json_object_set_new(r, "max_n_frac", json_real(o->max_n_frac));
    json_object_set_new(r, "val_windows", json_integer(o->val_windows));
    json_object_set_new(r, "ranks", json_integer(o->dist ? o->dist->nranks : o->nranks));
    return r;
}

static int args_save(const char *path, json_t *a)
{
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (json_dump_file(a, tmp, JSON_INDENT(2) | JSON_SORT_KEYS) != 0) { md_error("%s: cannot write", tmp); unlink(tmp); return -2; }
    if (rename(tmp, path) != 0) { md_error("%s: cannot rename %s to it: %s", path, tmp, strerror(errno)); unlink(tmp); return -2; }
    return 0;
}

static int args_check(const char *path, json_t *now)
{
    json_error_t e;
    json_t *then = json_load_file(path, 0, &e);
    if (!then) { md_error("%s: cannot read the options of the run to resume: %s", path, e.text); return -2; }
    int ret = 0;
    const char *key;
    json_t *v;
    json_object_foreach(now, key, v) {
        json_t *w = json_object_get(then, key);
        if (w && json_equal(v, w)) continue;
        if (w && json_is_number(v) && json_is_number(w) && json_number_value(v) == json_number_value(w)) continue;
        if (!w && !strcmp(key, "ranks") && json_integer_value(v) == 1) continue;   /* runs from before --gpus */
        char *a = json_dumps(w ? w : json_null(), JSON_ENCODE_ANY | JSON_COMPACT), *b = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        md_error("--resume: option '%s' was %s in the interrupted run but is %s now (give the same options)", key,
                 a ? a : "?", b ? b : "?");
        free(a);
        free(b);
        ret = -2;
        break;
    }
    json_decref(then);
    return ret;
}

/* Keeps the header and the lines of steps <= step of an existing log; returns the file opened
 * for appending. */
static FILE *log_open(const char *path, int64_t step, int resume)
{
    static const char *hdr = "step\ttokens\tlr\ttrain_loss\ttrain_acc\tval_loss\tval_acc\tgrad_norm\telapsed_s\n";
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *out = md_create_exclusive(tmp);
    if (!out) { md_error("%s: cannot create: %s", tmp, strerror(errno)); return NULL; }
    fputs(hdr, out);
    FILE *in = resume ? fopen(path, "r") : NULL;
    if (in) {
        char line[1024];
        while (fgets(line, sizeof line, in)) {
            char *end;
            long long s = strtoll(line, &end, 10);
            if (end == line || *end != '\t' || !strchr(line, '\n') || s > step) continue;
            fputs(line, out);
        }
        fclose(in);
    }
    if (fclose(out) != 0 || rename(tmp, path) != 0) { md_error("%s: cannot write: %s", path, strerror(errno)); unlink(tmp); return NULL; }
    FILE *fp = fopen(path, "a");
    if (!fp) md_error("%s: cannot open for appending: %s", path, strerror(errno));
    return fp;
}

/* --- the run ---------------------------------------------------------------------------------- */

typedef struct {
    int64_t n;
    int32_t *ids, *tg;
    float *wt;
    int64_t *off;
    uint8_t *codes;
} mb_t;

static int mb_alloc(mb_t *m, int nseq, int64_t L)
{
    m->n = nseq * L;
    m->ids = md_malloc(m->n * sizeof *m->ids);
    m->tg = md_malloc(m->n * sizeof *m->tg);
    m->wt = md_malloc(m->n * sizeof *m->wt);
    m->off = md_malloc((nseq + 1) * sizeof *m->off);
    m->codes = md_malloc(L);
    return m->ids && m->tg && m->wt && m->off && m->codes ? 0 : -2;
}

static void mb_free(mb_t *m)
{
    free(m->ids);
    free(m->tg);
    free(m->wt);
    free(m->off);
    free(m->codes);
}

static int validate(md_train_t *t, const data_t *d, const md_trainer_opts_t *o, const md_vocab_t *voc, mb_t *mb,
                    double *vloss, double *vacc)
{
    double st[MD_NSTATS] = { 0 };
    for (int i0 = 0; i0 < d->nvw; i0 += o->batch) {
        int ns = d->nvw - i0 < o->batch ? d->nvw - i0 : o->batch;
        int64_t n = 0;
        mb->off[0] = 0;
        for (int k = 0; k < ns; k++) {
            const piece_t *p = &d->vw[i0 + k];
            if (md_mlm_make(&o->mlm, voc, o->seed ^ SALT_VAL, (uint64_t)(i0 + k), p->seq, p->len, 1, mb->ids + n,
                            mb->tg + n, mb->wt + n) < 0)
                return -2;
            n += p->len;
            mb->off[k + 1] = n;
        }
        md_batch_t b = { .ids = mb->ids, .targets = mb->tg, .weights = mb->wt, .n = n, .seq_off = mb->off, .nseq = ns };
        if (md_train_forward(t, &b, st, NULL) < 0) return -2;
    }
    *vloss = st[1] > 0 ? st[0] / st[1] : NAN;
    *vacc = st[1] > 0 ? st[2] / st[1] : NAN;
    return 0;
}

static int mkdir_p(const char *dir)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
            *p = '/';
        }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
    return 0;
}

static int new_config(md_config_t *c, const md_trainer_opts_t *o)
{
    md_config_init(c);
    c->d_model = o->d_model;
    c->n_layer = o->n_layer;
    c->d_state = o->d_state;
    c->expand = o->expand;
    c->rcps = o->variant == MD_VARIANT_PS;
    if (o->variant == MD_VARIANT_MAMBA) {
        c->arch = MD_ARCH_MAMBA;
        c->residual_in_fp32 = 1;
    }
    c->max_seq_len = (int)(o->seq_len < (1 << 30) ? o->seq_len : 0);
    return md_config_finish(c, "new model");
}

/* Sums n host doubles over the ranks (nothing to do for one process without a group). */
static int dist_sum_host(md_dist_t *dist, double *v, int n)
{
    return dist ? dist->sum_host_f64(dist, v, n) : 0;
}

int md_trainer_run(const md_trainer_opts_t *o, md_trainer_progress_fn progress, void *ud)
{
    int ret = -2;
    data_t D;
    memset(&D, 0, sizeof D);
    md_backend_t *be = NULL;
    md_train_t *t = NULL;
    md_weights_t *w = NULL;
    md_dist_t *dist = o->dist, *own_dist = NULL;
    json_t *args = NULL;
    FILE *logf = NULL;
    mb_t *mbs = NULL, vmb;
    char path[4200];
    memset(&vmb, 0, sizeof vmb);
    if (md_trainer_opts_check(o) < 0) return -2;
    const int accum = o->grad_accum, B = o->batch;
    const int64_t L = o->seq_len;
    const int rank = dist ? dist->rank : o->rank, nranks = dist ? dist->nranks : o->nranks;
    const int writer = rank == 0;   /* files, validation, progress */

    /* options, model and data are checked before anything is written */
    args = args_json(o);
    snprintf(path, sizeof path, "%s/train_state.bin", o->outdir);
    int have_state = access(path, F_OK) == 0;
    if (!o->resume && have_state) {
        md_error("%s already holds a training run (train_state.bin); use --resume to continue it or another -o", o->outdir);
        goto out;
    }
    if (o->resume && !have_state) {
        md_error("--resume: %s has no train_state.bin (nothing to resume)", o->outdir);
        goto out;
    }
    md_config_t cfg;
    if (o->resume) {
        snprintf(path, sizeof path, "%s/train_args.json", o->outdir);
        if (args_check(path, args) < 0) goto out;
        snprintf(path, sizeof path, "%s/config.json", o->outdir);
        if (md_config_load(&cfg, path) < 0) goto out;
        if (!(w = md_weights_alloc(&cfg))) goto out;
    } else if (o->init_from) {
        snprintf(path, sizeof path, "%s/config.json", o->init_from);
        if (md_config_load(&cfg, path) < 0) goto out;
        if (!(w = md_weights_alloc(&cfg))) goto out;
        snprintf(path, sizeof path, "%s/model.safetensors", o->init_from);
        if (md_weights_load(w, path) < 0) goto out;
    } else {
        if (new_config(&cfg, o) < 0) goto out;
        if (!(w = md_weights_alloc(&cfg))) goto out;
        md_weights_init(w, o->seed);
    }
    const md_vocab_t *voc = md_vocab_for_size(cfg.vocab_size);
    if (!voc) goto out;
    md_mlm_t mlm = o->mlm;
    mlm.causal = cfg.arch == MD_ARCH_MAMBA;
    md_trainer_opts_t oo = *o;
    oo.mlm = mlm;
    const int rc_aug = o->rc_aug >= 0 ? o->rc_aug : (cfg.arch == MD_ARCH_CADUCEUS && !cfg.rcps);

    /* data */
    if (data_load(&D, o) < 0) goto out;
    if (writer)
        md_info("training data: %d pieces, %lld bases; validation: %d windows from %lld held-out bases", D.ntr,
                (long long)D.tr_bases, D.nvw, (long long)D.va_bases);

    if (!(be = md_backend_open(o->device ? o->device : "cpu", o->precision, o->threads))) goto out;
    if (o->device && !strcmp(o->device, "auto") && strcmp(be->name, "cpu") != 0 &&
        !(md_train_ops_cuda && md_train_ops_cuda())) {
        md_warn("this build has no backward ops for the %s backend; training on the CPU", be->name);
        be->destroy(be);
        if (!(be = md_backend_open("cpu", NULL, o->threads))) goto out;
    }
    md_train_opts_t to = { .scan_chunk = o->scan_chunk, .recompute_scan = o->recompute_scan };
    if (!(t = md_train_create(w, be, &to))) goto out;
    if (o->nccl_id) {   /* blocks until every rank has got this far */
        if (!(dist = own_dist = md_dist_nccl_create(be, o->nccl_id, o->rank, o->nranks))) { ret = -4; goto out; }
    }
    run_state_t rs = { 0, 0, 0.0 };
    if (o->resume) {
        snprintf(path, sizeof path, "%s/train_state.bin", o->outdir);
        if (state_load(path, &rs, t) < 0) goto out;
        if (writer) md_info("resuming at update %lld of %lld", (long long)rs.step, (long long)o->steps);
    }
    if (writer) {
        if (mkdir_p(o->outdir) < 0) { md_error("%s: cannot create the output folder: %s", o->outdir, strerror(errno)); goto out; }
        if (!o->resume) {
            snprintf(path, sizeof path, "%s/train_args.json", o->outdir);
            if (args_save(path, args) < 0) goto out;
            snprintf(path, sizeof path, "%s/config.json", o->outdir);
            if (md_config_save(&cfg, path) < 0) goto out;
        }
        snprintf(path, sizeof path, "%s/train.tsv", o->outdir);
        if (!(logf = log_open(path, rs.step, o->resume))) goto out;
    }

    md_optim_t opt = o->optim;
    opt.total = o->steps;
    opt.warmup = o->warmup < 1 ? (int64_t)llround(o->warmup * o->steps) : (int64_t)o->warmup;
    if (!(mbs = md_calloc(accum, sizeof *mbs))) goto out;
    for (int m = 0; m < accum; m++)
        if (mb_alloc(&mbs[m], B, L) < 0) goto out;
    const int64_t end = o->stop_after > 0 ? o->stop_after : o->steps;
    const int64_t tokens_per_update = (int64_t)B * accum * L * nranks;
    const double t_start = md_realtime(), elapsed0 = rs.elapsed;
    const int64_t step0 = rs.step;
    double vloss = NAN, vacc = NAN;
    if (writer && D.nvw && mb_alloc(&vmb, B, L) < 0) goto out;
    if (writer && !o->resume && D.nvw) {
        if (validate(t, &D, &oo, voc, &vmb, &vloss, &vacc) < 0) goto out;
        fprintf(logf, "0\t0\t%.6g\tNA\tNA\t%.6f\t%.6f\tNA\t0.0\n", md_lr_at(&opt, 0), vloss, vacc);
        fflush(logf);
        if (progress) {
            md_trainer_progress_t p = { .step = 0, .steps = o->steps, .lr = md_lr_at(&opt, 0), .loss = NAN, .val = 1,
                                        .val_loss = vloss, .val_acc = vacc };
            progress(ud, &p);
        }
    }
    const md_weights_t *tab = md_train_table(t);
    for (int64_t s = rs.step; s < end; s++) {
        /* this rank's share of the update's sequences */
        double sw = 0;
        for (int m = 0; m < accum; m++) {
            mb_t *mb = &mbs[m];
            for (int b = 0; b < B; b++) {
                uint64_t g = md_dist_seq_index(s, nranks, rank, accum, B, m, b);
                int rc = rc_aug && (md_rng_u64(o->seed ^ SALT_RC, g, 0) & 1);
                sample_window(&D, o, g, rc, mb->codes);
                if (md_mlm_make(&mlm, voc, o->seed, g, mb->codes, L, 0, mb->ids + b * L, mb->tg + b * L, mb->wt + b * L) < 0)
                    goto out;
                mb->off[b] = b * L;
            }
            mb->off[B] = B * L;
            for (int64_t i = 0; i < mb->n; i++) if (mb->tg[i] != MD_IGNORE) sw += mb->wt[i];
        }
        /* the loss is the mean over the targets of every rank */
        if (dist_sum_host(dist, &sw, 1) < 0) { ret = -4; goto out; }
        if (md_train_zero_grad(t) < 0) goto out;
        double st[MD_NSTATS] = { 0 }, gnorm = NAN;
        const double lr = md_lr_at(&opt, s);
        if (sw > 0) {
            for (int m = 0; m < accum; m++) {
                md_batch_t b = { .ids = mbs[m].ids, .targets = mbs[m].tg, .weights = mbs[m].wt, .n = mbs[m].n,
                                 .seq_off = mbs[m].off, .nseq = B };
                if (md_train_forward_backward(t, &b, (float)(1.0 / sw), st) < 0) goto out;
            }
            if (dist) {   /* gradients of sum_ranks (1/sw) sum w CE: the same step on every rank */
                float *P, *G, *M, *V;
                md_train_slabs(t, &P, &G, &M, &V);
                if (dist_sum_host(dist, st, MD_NSTATS) < 0 || dist->sum_f32(dist, G, tab->numel) < 0) {
                    ret = -4;
                    goto out;
                }
            }
        } else if (writer) {
            md_warn("update %lld: no position with a target in the batch; update skipped", (long long)s + 1);
        }
        double loss = st[1] > 0 ? st[0] / st[1] : NAN, acc = st[1] > 0 ? st[2] / st[1] : NAN;
        if (o->inject_nan_at == s + 1) loss = NAN;   /* test hook */
        if (sw > 0 && !isfinite(loss)) {
            if (writer)
                md_error("non-finite training loss (%g) at update %lld; stopping. The last checkpoint (update %lld) is "
                         "kept in %s; resume from it with --resume (perhaps after lowering --lr)",
                         loss, (long long)s + 1, (long long)rs.step, o->outdir);
            ret = -3;
            goto out;
        }
        if (sw > 0) {
            int u = md_train_update(t, &opt, s, &gnorm);
            if (u == -1) {
                if (writer)
                    md_error("non-finite gradient norm at update %lld; stopping. The last checkpoint (update %lld) is "
                             "kept in %s", (long long)s + 1, (long long)rs.step, o->outdir);
                ret = -3;
                goto out;
            }
            if (u < 0) goto out;
        }
        rs.step = s + 1;
        rs.tokens += tokens_per_update;
        if (!writer) continue;
        const int do_val = D.nvw && ((o->val_every > 0 && rs.step % o->val_every == 0) || rs.step == o->steps);
        const int do_ckpt = (o->save_every > 0 && rs.step % o->save_every == 0) || rs.step == end;
        if (do_val && validate(t, &D, &oo, voc, &vmb, &vloss, &vacc) < 0) goto out;
        rs.elapsed = elapsed0 + (md_realtime() - t_start);
        char vl[32] = "NA", va[32] = "NA", tl[32] = "NA", ta[32] = "NA", gn[32] = "NA";
        if (do_val) { snprintf(vl, sizeof vl, "%.6f", vloss); snprintf(va, sizeof va, "%.6f", vacc); }
        if (sw > 0) {
            snprintf(tl, sizeof tl, "%.6f", loss);
            snprintf(ta, sizeof ta, "%.6f", acc);
            snprintf(gn, sizeof gn, "%.6g", gnorm);
        }
        fprintf(logf, "%lld\t%lld\t%.6g\t%s\t%s\t%s\t%s\t%s\t%.1f\n", (long long)rs.step, (long long)rs.tokens, lr, tl,
                ta, vl, va, gn, rs.elapsed);
        if (fflush(logf) != 0) { md_error("%s/train.tsv: write failed: %s", o->outdir, strerror(errno)); goto out; }
        if (do_ckpt && save_checkpoint(o, t, w, &rs) < 0) goto out;
        if (progress) {
            double dt = md_realtime() - t_start;
            int64_t done = rs.step - step0;
            md_trainer_progress_t p = { .step = rs.step, .steps = o->steps, .tokens = rs.tokens, .lr = lr, .loss = loss,
                                        .acc = acc, .gnorm = gnorm, .val = do_val, .val_loss = vloss, .val_acc = vacc,
                                        .checkpoint = do_ckpt };
            p.tok_per_s = dt > 0 ? (double)done * tokens_per_update / dt : 0;
            p.eta_s = done > 0 ? dt / done * (double)(o->steps - rs.step) : 0;
            progress(ud, &p);
        }
    }
    ret = 0;
out:
    if (ret < 0 && dist) dist->abort(dist);   /* peers waiting in a sum fail instead of hanging */
    mb_free(&vmb);
    if (mbs) for (int m = 0; m < accum; m++) mb_free(&mbs[m]);
    free(mbs);
    if (logf && fclose(logf) != 0 && ret == 0) { md_error("%s/train.tsv: write failed", o->outdir); ret = -2; }
    json_decref(args);
    if (own_dist) own_dist->destroy(own_dist);
    md_train_free(t);
    md_weights_free(w);
    if (be) be->destroy(be);
    data_free(&D);
    return ret;
}
