/* pipeline.c: embed / predict over records (see pipeline.h). A record is cut into windows
 * ("units"); a unit is one packed sequence (forward strand) or two (forward + reverse complement,
 * for Caduceus-Ph/Mamba strand averaging). Units queue until the token budget is reached, then
 * one md_model_forward call runs them all.
 * Pool mean: each unit's rows (both passes, contiguous in the batch) are one pooling segment; the
 * backend sums them and only the [units, width] means come back (pool_cb), no per-base rows.
 * Per-base output: the emit callback walks the packed rows with a cursor (rows arrive in order)
 * and fills a [len, D] or [len, 4] buffer (two-pass unit) or writes rows straight through (one
 * pass). Units finish in queue order, so output rows follow the input order. */
#include "pipeline.h"

#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "md.h"
#include "npy.h"
#include "params.h"
#include "safetensors.h"
#include "window.h"

/* ---- options ------------------------------------------------------------------------------- */

void pl_opts_init(pl_opts_t *o, pl_task_t task)
{
    memset(o, 0, sizeof *o);
    o->task = task;
    o->window = 0;
    o->stride = 0;
    o->pool = task == PL_EMBED ? PL_POOL_MEAN : PL_POOL_NONE;
    o->rc = PL_RC_AVERAGE;
    o->raw = 0;
    o->layer = -1;
    o->n_as_pad = 0;
    o->batch_tokens = 0;
}

int pl_opts_check(const pl_opts_t *o, const md_config_t *cfg)
{
    if (md_window_check(o->window, o->stride ? o->stride : o->window) < 0) return PL_EDATA;
    if (o->window == 0 && o->stride != 0) {
        md_error("a stride needs a window length (-w); -w 0 is the whole record");
        return PL_EDATA;
    }
    if (o->batch_tokens < 0) {
        md_error("batch size %" PRId64 " tokens is negative", o->batch_tokens);
        return PL_EDATA;
    }
    if (o->task == PL_PREDICT) {
        if (o->pool != PL_POOL_NONE) {
            md_error("predict writes one row per base; pooling is an embed option");
            return PL_EDATA;
        }
        if (o->layer != -1) {
            md_error("predict uses the final layer (the LM head); --layer is an embed option");
            return PL_EDATA;
        }
    }
    if (!cfg) return 0;
    if (o->layer < -1 || o->layer >= cfg->n_layer) {
        md_error("--layer %d is out of range for this model (0..%d, or -1 for the final normed "
                 "hidden state)", o->layer, cfg->n_layer - 1);
        return PL_EDATA;
    }
    if (o->task == PL_PREDICT && !o->raw && o->rc == PL_RC_AVERAGE && cfg->arch == MD_ARCH_MAMBA) {
        md_error("--rc average is not defined for predict with a causal Mamba model (the reverse "
                 "strand pass predicts the previous base, not the next); use --rc none");
        return PL_EDATA;
    }
    if (!md_vocab_get(cfg->tokenizer)) return PL_EDATA;
    return 0;
}

static int n_passes(const pl_opts_t *o, const md_config_t *cfg)
{
    return (!o->raw && o->rc == PL_RC_AVERAGE && !cfg->rcps) ? 2 : 1;
}

int pl_ncols(const pl_opts_t *o, const md_config_t *cfg, int width)
{
    if (o->task == PL_PREDICT) return o->raw ? cfg->vocab_size : 4;
    return o->raw ? width : cfg->d_model;
}

/* Column names of an output row: e0.. for embeddings, pA..pT for probabilities, the vocabulary
 * tokens for raw logits. names[i] point into buf. */
static int col_names(const pl_opts_t *o, const md_config_t *cfg, int width, char **names,
                     char *buf, int bufsize)
{
    int n = pl_ncols(o, cfg, width), used = 0;
    const md_vocab_t *v = md_vocab_get(cfg->tokenizer);
    for (int i = 0; i < n; i++) {
        char tmp[48];
        if (o->task == PL_EMBED) snprintf(tmp, sizeof tmp, "e%d", i);
        else if (!o->raw) snprintf(tmp, sizeof tmp, "p%c", "ACGT"[i]);
        else if (v && i < v->size) snprintf(tmp, sizeof tmp, "%s", v->tokens[i]);
        else snprintf(tmp, sizeof tmp, "id%d", i);
        int l = (int)strlen(tmp) + 1;
        if (used + l > bufsize) return -2;
        memcpy(buf + used, tmp, l);
        names[i] = buf + used;
        used += l;
    }
    return n;
}

/* ---- outputs ------------------------------------------------------------------------------- */

typedef enum { OUT_NPY, OUT_TEXT } out_kind_t;

struct pl_out_s {
    out_kind_t kind;
    pl_opts_t o;
    md_config_t cfg;
    int width, ncols, half;
    pl_meta_t meta;
    char *path;                /* final name ("-" for stdout) */
    char *tmp_text;            /* text: temporary name (NULL for stdout) */
    FILE *fp;                  /* text output */
    npy_writer_t *npy;
    char *bed_path, *bed_tmp;
    FILE *bed;
    char *json_path, *json_tmp;
    char strand;               /* '+' or '.' (strand-combined) */
    int64_t rows, blocks;
    int header_done;           /* text: the '#' header is written with the first row, so that an
                                  input error before any row leaves stdout empty */
};

static char *tmp_name(const char *path)
{
    size_t n = strlen(path) + 32;
    char *s = md_malloc(n);
    if (s) snprintf(s, n, "%s.tmp.%ld", path, (long)getpid());
    return s;
}

static char *dupcat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = md_malloc(la + lb + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

static int ends_with(const char *s, const char *suf)
{
    size_t ls = strlen(s), lf = strlen(suf);
    return ls >= lf && strcmp(s + ls - lf, suf) == 0;
}

static void out_free(pl_out_t *out)
{
    if (!out) return;
    free(out->path);
    free(out->tmp_text);
    free(out->bed_path);
    free(out->bed_tmp);
    free(out->json_path);
    free(out->json_tmp);
    free(out);
}

static void write_header_lines(pl_out_t *out)
{
    FILE *fp = out->fp;
    if (out->header_done) return;
    out->header_done = 1;
    const pl_meta_t *m = &out->meta;
    fprintf(fp, "##mamba-dna_version=%s\n", MD_VERSION);
    if (m->cmdline) fprintf(fp, "##mamba-dna_command=%s\n", m->cmdline);
    if (m->model_path)
        fprintf(fp, "##model=%s variant=%s sha256=%s\n", m->model_path,
                m->variant ? m->variant : pl_variant(&out->cfg),
                m->model_sha256 && *m->model_sha256 ? m->model_sha256 : ".");
    if (out->o.task == PL_PREDICT && !out->o.raw && out->cfg.arch == MD_ARCH_MAMBA)
        fprintf(fp, "##note=causal model: the row at pos holds P(base pos+1 | bases <= pos)\n");
    int nbuf = 16 * (out->ncols + 4), n = -2;
    char *buf = md_malloc(nbuf);
    char **names = md_malloc(sizeof(char *) * (out->ncols + 1));
    if (buf && names) n = col_names(&out->o, &out->cfg, out->width, names, buf, nbuf);
    if (out->o.task == PL_PREDICT) fputs("#chrom\tpos\tref", fp);
    else fputs("#name\tstart\tend", fp);
    for (int i = 0; i < n; i++) fprintf(fp, "\t%s", names[i]);
    if (out->o.task == PL_PREDICT && !out->o.raw) fputs("\tentropy", fp);
    fputc('\n', fp);
    free(names);
    free(buf);
}

pl_out_t *pl_out_open(const char *path, const pl_opts_t *o, const md_config_t *cfg, int width,
                      int half, const pl_meta_t *meta)
{
    pl_out_t *out = md_calloc(1, sizeof *out);
    if (!out) return NULL;
    out->o = *o;
    out->cfg = *cfg;
    out->width = width;
    out->ncols = pl_ncols(o, cfg, width);
    out->half = half;
    if (meta) out->meta = *meta;
    out->strand = (o->rc == PL_RC_AVERAGE && !o->raw) ? '.' : '+';
    out->path = dupcat(path, "");
    if (!out->path) goto fail;
    if (ends_with(path, ".npy")) {
        out->kind = OUT_NPY;
        out->bed_path = dupcat(path, ".bed");
        out->json_path = dupcat(path, ".json");
        if (!out->bed_path || !out->json_path) goto fail;
        out->bed_tmp = tmp_name(out->bed_path);
        out->json_tmp = tmp_name(out->json_path);
        if (!out->bed_tmp || !out->json_tmp) goto fail;
        out->npy = npy_writer_open(path, half ? NPY_F16 : NPY_F32, out->ncols);
        if (!out->npy) goto fail;
        out->bed = md_create_exclusive(out->bed_tmp);
        if (!out->bed) {
            md_error("%s: cannot create the BED sidecar: %s", out->bed_tmp, strerror(errno));
            goto fail;
        }
    } else {
        out->kind = OUT_TEXT;
        if (half) md_warn("--half applies to .npy output only; writing text");
        if (strcmp(path, "-") == 0) {
            out->fp = stdout;
        } else {
            out->tmp_text = tmp_name(path);
            if (!out->tmp_text) goto fail;
            out->fp = md_create_exclusive(out->tmp_text);
            if (!out->fp) {
                md_error("%s: cannot create the output file: %s", out->tmp_text, strerror(errno));
                goto fail;
            }
        }
    }
    return out;
fail:
    pl_out_abort(out);
    return NULL;
}

int64_t pl_out_rows(const pl_out_t *out) { return out->rows; }

void pl_out_abort(pl_out_t *out)
{
    if (!out) return;
    if (out->npy) npy_writer_abort(out->npy);
    if (out->bed) fclose(out->bed);
    if (out->bed_tmp) unlink(out->bed_tmp);
    if (out->json_tmp) unlink(out->json_tmp);
    if (out->fp && out->fp != stdout) fclose(out->fp);
    if (out->fp == stdout) fflush(stdout);
    if (out->tmp_text) unlink(out->tmp_text);
    out_free(out);
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int write_json(pl_out_t *out)
{
    const pl_opts_t *o = &out->o;
    const pl_meta_t *m = &out->meta;
    json_t *root = json_object();
    json_t *model = json_object(), *opts = json_object(), *outp = json_object();
    json_t *inputs = json_array(), *shape = json_array(), *cols = json_array();
    int ret = PL_EDATA;
    if (!root || !model || !opts || !outp || !inputs || !shape || !cols) {
        json_decref(model); json_decref(opts); json_decref(outp);
        json_decref(inputs); json_decref(shape); json_decref(cols);
        goto done;
    }
    json_object_set_new(root, "program", json_string("mamba-dna"));
    json_object_set_new(root, "version", json_string(MD_VERSION));
    json_object_set_new(root, "command", json_string(m->command ? m->command :
                        (o->task == PL_EMBED ? "embed" : "predict")));
    if (m->cmdline) json_object_set_new(root, "command_line", json_string(m->cmdline));
    for (int i = 0; i < m->n_inputs; i++) json_array_append_new(inputs, json_string(m->inputs[i]));
    json_object_set_new(root, "inputs", inputs);
    if (m->model_path) json_object_set_new(model, "path", json_string(m->model_path));
    json_object_set_new(model, "sha256", m->model_sha256 && *m->model_sha256 ?
                        json_string(m->model_sha256) : json_null());
    json_object_set_new(model, "variant", json_string(m->variant ? m->variant : pl_variant(&out->cfg)));
    json_object_set_new(model, "d_model", json_integer(out->cfg.d_model));
    json_object_set_new(model, "n_layer", json_integer(out->cfg.n_layer));
    json_object_set_new(model, "hidden_width", json_integer(out->width));
    json_object_set_new(model, "tokenizer", json_string(out->cfg.tokenizer));
    json_object_set_new(root, "model", model);
    if (m->device) json_object_set_new(root, "device", json_string(m->device));
    json_object_set_new(opts, "window", json_integer(o->window));
    json_object_set_new(opts, "stride", json_integer(o->stride ? o->stride : o->window));
    if (o->task == PL_EMBED) {
        json_object_set_new(opts, "pool", json_string(o->pool == PL_POOL_MEAN ? "mean" : "none"));
        json_object_set_new(opts, "layer", json_integer(o->layer));
    }
    json_object_set_new(opts, "rc", json_string(o->rc == PL_RC_AVERAGE && !o->raw ? "average" : "none"));
    json_object_set_new(opts, "raw", json_boolean(o->raw));
    json_object_set_new(opts, "n_as_pad", json_boolean(o->n_as_pad));
    json_object_set_new(opts, "batch_tokens", json_integer(o->batch_tokens));
    json_object_set_new(root, "options", opts);
    json_object_set_new(outp, "file", json_string(base_name(out->path)));
    json_object_set_new(outp, "index", json_string(base_name(out->bed_path)));
    json_object_set_new(outp, "dtype", json_string(out->half ? "float16" : "float32"));
    json_array_append_new(shape, json_integer(out->rows));
    json_array_append_new(shape, json_integer(out->ncols));
    json_object_set_new(outp, "shape", shape);
    json_object_set_new(outp, "blocks", json_integer(out->blocks));
    const char *unit = o->task == PL_PREDICT || o->pool == PL_POOL_NONE ? "base" : "window";
    json_object_set_new(outp, "row", json_string(unit));
    const char *what;
    if (o->task == PL_EMBED)
        what = o->raw ? (o->layer < 0 ? "final normed hidden state, forward strand, full width"
                                      : "hidden state of the layer, forward strand, full width")
             : out->cfg.rcps ? (o->rc == PL_RC_AVERAGE ? "PS halves combined: (h[:D] + flip_channels(h[D:]))/2"
                                                       : "PS forward half h[:D]")
             : (o->rc == PL_RC_AVERAGE ? "mean of the forward pass and the reverse-complement pass (flipped back)"
                                       : "forward strand hidden state");
    else
        what = o->raw ? "logits over the padded vocabulary, forward strand"
             : out->cfg.arch == MD_ARCH_MAMBA ? "P(A,C,G,T) of the next base (row t: base t+1 given bases <= t)"
             : o->rc == PL_RC_AVERAGE ? "P(A,C,G,T), softmax over the four bases of strand-averaged logits"
             : "P(A,C,G,T), softmax over the four bases of forward-strand logits";
    json_object_set_new(outp, "values", json_string(what));
    if (o->task == PL_PREDICT) {
        char *names[MD_MAX_VOCAB];
        char buf[MD_MAX_VOCAB * 16];
        int n = out->ncols <= MD_MAX_VOCAB ? col_names(o, &out->cfg, out->width, names, buf, sizeof buf) : 0;
        for (int i = 0; i < n; i++) json_array_append_new(cols, json_string(names[i]));
        json_object_set_new(outp, "columns", cols);
    } else {
        json_decref(cols);
    }
    json_object_set_new(outp, "bed_columns", json_string("chrom start end name score strand first_row n_rows"));
    json_object_set_new(root, "output", outp);
    if (json_dump_file(root, out->json_tmp, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0) {
        md_error("%s: cannot write the JSON sidecar: %s", out->json_tmp, strerror(errno));
        goto done;
    }
    ret = 0;
done:
    if (!root) md_error("out of memory building the JSON sidecar");
    json_decref(root);
    return ret;
}

int pl_out_close(pl_out_t *out)
{
    if (!out) return 0;
    if (out->kind == OUT_TEXT) {
        write_header_lines(out);
        int bad = fflush(out->fp) != 0 || ferror(out->fp);
        if (out->fp != stdout) {
            if (fclose(out->fp) != 0) bad = 1;
            out->fp = NULL;
        } else {
            out->fp = NULL;
        }
        if (bad) {
            md_error("%s: write error: %s", out->path, strerror(errno));
            goto fail;
        }
        if (out->tmp_text && rename(out->tmp_text, out->path) != 0) {
            md_error("%s: cannot rename %s: %s", out->path, out->tmp_text, strerror(errno));
            goto fail;
        }
        free(out->tmp_text);
        out->tmp_text = NULL;
        out_free(out);
        return 0;
    }
    /* npy: the sidecars first (under temporary names), then the array, then the renames */
    int bad = fflush(out->bed) != 0 || ferror(out->bed);
    if (fclose(out->bed) != 0) bad = 1;
    out->bed = NULL;
    if (bad) {
        md_error("%s: write error: %s", out->bed_tmp, strerror(errno));
        goto fail;
    }
    if (write_json(out) < 0) goto fail;
    npy_writer_t *w = out->npy;
    out->npy = NULL;
    if (npy_writer_close(w) < 0) goto fail;
    if (rename(out->bed_tmp, out->bed_path) != 0 || rename(out->json_tmp, out->json_path) != 0) {
        md_error("%s: cannot rename the sidecars into place: %s", out->path, strerror(errno));
        unlink(out->path);
        unlink(out->bed_path);
        goto fail;
    }
    out_free(out);
    return 0;
fail:
    pl_out_abort(out);
    return PL_EDATA;
}

/* ---- units and the batch ------------------------------------------------------------------- */

typedef struct {
    char *chrom;       /* column 1 (record / read name, or the contig for regions) */
    char *name;        /* BED name */
    int64_t off;       /* record coordinate of window position 0 in column-1 coordinates */
    int64_t len;
    uint8_t *codes;    /* [len] base codes (predict text only) */
    int64_t newb;      /* bases of the record first covered by this window (progress) */
    int npass;
    float *buf;        /* two-pass per-base buffer [len, bufw] */
} unit_t;

/* A batch of queued units and their packed tokens. */
typedef struct {
    unit_t *u;
    int nu, mu;
    int32_t *ids;
    int64_t nids, mids;
    int64_t *seq_off;
    int *seq_unit;
    int nseq, mseq;
    int64_t *pool_beg, *pool_end;   /* pool mean: rows of each unit [nu] */
    int64_t mpool_beg, mpool_end;
} batch_t;

struct pl_s {
    md_model_t *m;
    const md_config_t *cfg;
    const md_vocab_t *vocab;
    md_tokopts_t tok;
    pl_opts_t o;
    pl_out_t *out;
    int width, ncols, npass, bufw, V, D;
    int id4[4], comp4[4];      /* vocabulary ids of A,C,G,T and of their complements */
    int64_t budget;
    /* the batch being filled by pl_add, and the batch in the model (the emit callback's) */
    batch_t fill, run;
    /* overlap: a worker thread runs `run` while the caller fills `fill` */
    int worker_up, job, quit, run_ret;
    pthread_t worker;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    /* emit cursor */
    int cur_seq;
    int64_t cur_pos, next_row;
    /* scratch */
    float *row;
    int err;
    int64_t bases_done, records;
    pl_progress_fn progress;
    void *progress_ud;
};

static void unit_free(unit_t *u)
{
    free(u->chrom);
    free(u->name);
    free(u->codes);
    free(u->buf);
    memset(u, 0, sizeof *u);
}

pl_t *pl_init(md_model_t *m, const pl_opts_t *o, pl_out_t *out)
{
    const md_config_t *cfg = md_model_config(m);
    if (pl_opts_check(o, cfg) < 0) return NULL;
    pl_t *p = md_calloc(1, sizeof *p);
    if (!p) return NULL;
    p->m = m;
    p->cfg = cfg;
    p->o = *o;
    p->out = out;
    p->vocab = md_vocab_get(cfg->tokenizer);
    p->tok.n_as_pad = o->n_as_pad;
    p->width = md_model_width(m);
    p->D = cfg->d_model;
    p->V = cfg->vocab_size;
    p->ncols = pl_ncols(o, cfg, p->width);
    p->npass = n_passes(o, cfg);
    p->bufw = o->task == PL_PREDICT ? 4 : p->ncols;
    for (int b = 0; b < 4; b++) {
        p->id4[b] = p->vocab->id_base[b];
        int c = p->id4[b];
        p->comp4[b] = c >= 0 && c < MD_MAX_VOCAB ? cfg->complement_map[c] : c;
        if (p->id4[b] < 0 || p->id4[b] >= p->V || p->comp4[b] < 0 || p->comp4[b] >= p->V) {
            md_error("the %s vocabulary's base ids do not fit the model's vocabulary of %d",
                     p->vocab->name, p->V);
            free(p);
            return NULL;
        }
    }
    p->budget = o->batch_tokens > 0 ? o->batch_tokens : 65536;
    int rw = p->width > p->V ? p->width : p->V;
    p->row = md_malloc(sizeof(float) * (size_t)(rw + 8));
    if (!p->row) {
        free(p);
        return NULL;
    }
    return p;
}

void pl_set_progress(pl_t *p, pl_progress_fn fn, void *ud)
{
    p->progress = fn;
    p->progress_ud = ud;
}

int64_t pl_bases_done(const pl_t *p) { return p->bases_done; }
int64_t pl_records(const pl_t *p) { return p->records; }

static void batch_clear(batch_t *b)
{
    for (int i = 0; i < b->nu; i++) unit_free(&b->u[i]);
    b->nu = 0;
    b->nids = 0;
    b->nseq = 0;
}

static void batch_free(batch_t *b)
{
    batch_clear(b);
    free(b->u);
    free(b->ids);
    free(b->seq_off);
    free(b->seq_unit);
    free(b->pool_beg);
    free(b->pool_end);
}

static int wait_run(pl_t *p);

void pl_destroy(pl_t *p)
{
    if (!p) return;
    if (p->worker_up) {
        wait_run(p);
        pthread_mutex_lock(&p->lock);
        p->quit = 1;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->lock);
        pthread_join(p->worker, NULL);
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->cv);
    }
    batch_free(&p->fill);
    batch_free(&p->run);
    free(p->row);
    free(p);
}

/* ---- output of rows ------------------------------------------------------------------------ */

static int out_block(pl_t *p, const unit_t *u, int64_t nrows)
{
    pl_out_t *out = p->out;
    out->blocks++;
    if (out->kind != OUT_NPY) return 0;
    if (fprintf(out->bed, "%s\t%" PRId64 "\t%" PRId64 "\t%s\t0\t%c\t%" PRId64 "\t%" PRId64 "\n",
                u->chrom, u->off, u->off + u->len, u->name, out->strand, out->rows, nrows) < 0) {
        md_error("%s: write error: %s", out->bed_tmp, strerror(errno));
        return PL_EDATA;
    }
    return 0;
}

/* One output row; t = position in the window (per-base rows) or -1 (pooled row). For predict
 * (not raw) vals are the four probabilities. */
static int out_row(pl_t *p, const unit_t *u, int64_t t, const float *vals)
{
    pl_out_t *out = p->out;
    out->rows++;
    if (out->kind == OUT_NPY) {
        if (npy_writer_append(out->npy, vals, 1) < 0) return PL_EDATA;
        return 0;
    }
    FILE *fp = out->fp;
    int r;
    write_header_lines(out);
    if (p->o.task == PL_PREDICT)
        r = fprintf(fp, "%s\t%" PRId64 "\t%c", u->chrom, u->off + t + 1,
                    u->codes ? md_code_to_ascii(u->codes[t]) : 'N');
    else if (t < 0)
        r = fprintf(fp, "%s\t%" PRId64 "\t%" PRId64, u->chrom, u->off, u->off + u->len);
    else
        r = fprintf(fp, "%s\t%" PRId64 "\t%" PRId64, u->chrom, u->off + t, u->off + t + 1);
    for (int i = 0; i < out->ncols && r >= 0; i++) r = fprintf(fp, "\t%.7g", vals[i]);
    if (r >= 0 && p->o.task == PL_PREDICT && !p->o.raw) {
        double h = 0;
        for (int i = 0; i < 4; i++)
            if (vals[i] > 0) h -= vals[i] * log2((double)vals[i]);
        r = fprintf(fp, "\t%.6g", h < 0 ? 0.0 : h);
    }
    if (r >= 0) r = fputc('\n', fp) == EOF ? -1 : 0;
    if (r < 0) {
        md_error("%s: write error: %s", out->path, strerror(errno));
        return PL_EDATA;
    }
    return 0;
}

/* Probabilities of A, C, G, T from four logits (softmax restricted to the bases). */
static void probs4(const float *l4, float *pr)
{
    float mx = l4[0];
    for (int b = 1; b < 4; b++) mx = l4[b] > mx ? l4[b] : mx;
    double e[4], s = 0;
    for (int b = 0; b < 4; b++) s += e[b] = exp((double)l4[b] - mx);
    for (int b = 0; b < 4; b++) pr[b] = (float)(e[b] / s);
}

/* Hidden row [width] -> embedding columns [ncols] (strand combination of PS halves). */
static void embed_cols(const pl_t *p, const float *h, float *dst)
{
    int D = p->D;
    if (p->o.raw) {
        memcpy(dst, h, sizeof(float) * p->width);
    } else if (p->cfg->rcps && p->o.rc == PL_RC_AVERAGE) {
        for (int c = 0; c < D; c++) dst[c] = 0.5f * (h[c] + h[2 * D - 1 - c]);
    } else {
        memcpy(dst, h, sizeof(float) * D);
    }
}

/* Rows [k0, k0+k) of pass `pass` of unit u. */
static int unit_rows(pl_t *p, unit_t *u, int pass, int64_t k0, int64_t k, const float *hidden,
                     const float *logits)
{
    int ret;
    for (int64_t j = 0; j < k; j++) {
        int64_t kk = k0 + j;
        int64_t t = pass ? u->len - 1 - kk : kk;   /* position in the window */
        const float *h = hidden ? hidden + (size_t)j * p->width : NULL;
        const float *lg = logits ? logits + (size_t)j * p->V : NULL;
        if (p->o.task == PL_EMBED) {
            embed_cols(p, h, p->row);
            if (p->npass == 2) {
                float *b = u->buf + (size_t)t * p->bufw;
                if (pass == 0) memcpy(b, p->row, sizeof(float) * p->ncols);
                else for (int c = 0; c < p->ncols; c++) b[c] += p->row[c];
            } else {
                if ((ret = out_row(p, u, t, p->row)) < 0) return ret;
            }
        } else if (p->o.raw) {
            if ((ret = out_row(p, u, t, lg)) < 0) return ret;
        } else if (p->npass == 2) {
            /* token-level conjoining: (logits(x)[t,v] + logits(rc x)[L-1-t, comp(v)]) / 2 */
            float *b = u->buf + (size_t)t * 4;
            for (int c = 0; c < 4; c++) {
                if (pass == 0) b[c] = lg[p->id4[c]];
                else b[c] += lg[p->comp4[c]];
            }
        } else {
            float l4[4];
            for (int c = 0; c < 4; c++) l4[c] = lg[p->id4[c]];
            probs4(l4, p->row);
            if ((ret = out_row(p, u, t, p->row)) < 0) return ret;
        }
    }
    return 0;
}

/* Called when every pass of unit u has been emitted. */
static int unit_finish(pl_t *p, unit_t *u)
{
    int ret;
    if (p->npass != 2) return 0;   /* rows already written */
    for (int64_t t = 0; t < u->len; t++) {
        float *b = u->buf + (size_t)t * p->bufw;
        if (p->o.task == PL_EMBED) {
            for (int c = 0; c < p->ncols; c++) p->row[c] = 0.5f * b[c];
        } else {
            float l4[4];
            for (int c = 0; c < 4; c++) l4[c] = 0.5f * b[c];
            probs4(l4, p->row);
        }
        if ((ret = out_row(p, u, t, p->row)) < 0) return ret;
    }
    return 0;
}

static int emit_cb(void *ud, int64_t row0, int64_t nrows, const float *hidden, const float *logits)
{
    pl_t *p = ud;
    int ret;
    if (row0 != p->next_row) {
        md_error("rows out of order from the model (%" PRId64 ", expected %" PRId64 ")", row0,
                 p->next_row);
        p->err = PL_EINTERNAL;
        return -1;
    }
    if (p->o.task == PL_PREDICT && !logits) {
        md_error("the model returned no logits");
        p->err = PL_EINTERNAL;
        return -1;
    }
    int64_t done = 0;
    while (done < nrows) {
        if (p->cur_seq >= p->run.nseq) {
            md_error("the model returned more rows than the batch holds");
            p->err = PL_EINTERNAL;
            return -1;
        }
        int s = p->cur_seq;
        unit_t *u = &p->run.u[p->run.seq_unit[s]];
        int pass = s > 0 && p->run.seq_unit[s - 1] == p->run.seq_unit[s] ? 1 : 0;
        int64_t seqlen = p->run.seq_off[s + 1] - p->run.seq_off[s];
        int64_t k = seqlen - p->cur_pos;
        if (k > nrows - done) k = nrows - done;
        /* per-base output: the block (BED line) starts with the unit's first row */
        if (pass == 0 && p->cur_pos == 0 && (ret = out_block(p, u, u->len)) < 0) {
            p->err = ret;
            return -1;
        }
        ret = unit_rows(p, u, pass, p->cur_pos, k,
                        hidden ? hidden + (size_t)done * p->width : NULL,
                        logits ? logits + (size_t)done * p->V : NULL);
        if (ret < 0) { p->err = ret; return -1; }
        done += k;
        p->cur_pos += k;
        if (p->cur_pos == seqlen) {
            p->cur_pos = 0;
            p->cur_seq++;
            if (pass == u->npass - 1 && (ret = unit_finish(p, u)) < 0) { p->err = ret; return -1; }
        }
    }
    p->next_row += nrows;
    return 0;
}

/* Pool mean: the units' mean hidden rows [nu, width], in queue order. */
static int pool_cb(void *ud, int nseg, const float *mean)
{
    pl_t *p = ud;
    batch_t *r = &p->run;
    int ret;
    if (nseg != r->nu) {
        md_error("the model returned %d pooled rows for %d windows", nseg, r->nu);
        p->err = PL_EINTERNAL;
        return -1;
    }
    for (int i = 0; i < r->nu; i++) {
        embed_cols(p, mean + (size_t)i * p->width, p->row);
        if ((ret = out_block(p, &r->u[i], 1)) < 0 || (ret = out_row(p, &r->u[i], -1, p->row)) < 0) {
            p->err = ret;
            return -1;
        }
    }
    p->cur_seq = r->nseq;
    p->next_row = r->nids;
    return 0;
}

static int grow(void **a, int64_t *m, int64_t need, size_t size);

/* Pool mean: one pooling segment per unit, its passes' rows [first row, next unit's first row). */
static int pool_segments(batch_t *r)
{
    int ret;
    if ((ret = grow((void **)&r->pool_beg, &r->mpool_beg, r->nu, sizeof(int64_t))) < 0 ||
        (ret = grow((void **)&r->pool_end, &r->mpool_end, r->nu, sizeof(int64_t))) < 0)
        return ret;
    for (int s = 0, i = -1; s < r->nseq; s++)
        if (s == 0 || r->seq_unit[s] != r->seq_unit[s - 1]) {
            r->pool_beg[++i] = r->seq_off[s];
            if (i > 0) r->pool_end[i - 1] = r->seq_off[s];
        }
    if (r->nu > 0) r->pool_end[r->nu - 1] = r->nids;
    return 0;
}

/* Runs the batch in p->run through the model (emit_cb or pool_cb writes its rows) and empties it. */
static int exec_run(pl_t *p)
{
    batch_t *r = &p->run;
    r->seq_off[r->nseq] = r->nids;
    p->cur_seq = 0;
    p->cur_pos = 0;
    p->next_row = 0;
    p->err = 0;
    md_forward_opts_t fo;
    memset(&fo, 0, sizeof fo);
    fo.layer = p->o.task == PL_EMBED ? p->o.layer : -1;
    fo.want_logits = p->o.task == PL_PREDICT;
    if (p->o.task == PL_EMBED && p->o.pool == PL_POOL_MEAN) {
        int rp = pool_segments(r);
        if (rp < 0) {
            batch_clear(r);
            return rp;
        }
        fo.rows = MD_ROWS_NONE;
        fo.npool = r->nu;
        fo.pool_beg = r->pool_beg;
        fo.pool_end = r->pool_end;
        fo.emit_pool = pool_cb;
    }
    int ret = md_model_forward(p->m, r->ids, r->nids, r->seq_off, r->nseq, &fo, emit_cb, p);
    if (ret < 0) {
        ret = p->err ? p->err : PL_EINTERNAL;
        if (!p->err) md_error("forward pass failed: %s", md_last_error());
        batch_clear(r);
        return ret;
    }
    if (p->cur_seq != r->nseq) {
        md_error("the model returned %" PRId64 " rows for a batch of %" PRId64 " tokens",
                 p->next_row, r->nids);
        batch_clear(r);
        return PL_EINTERNAL;
    }
    int64_t b = 0;
    for (int i = 0; i < r->nu; i++) b += r->u[i].newb;
    p->bases_done += b;
    batch_clear(r);
    if (p->progress) p->progress(p->progress_ud, p->bases_done);
    return 0;
}

static void *worker_main(void *arg)
{
    pl_t *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->job && !p->quit) pthread_cond_wait(&p->cv, &p->lock);
        if (!p->job) break;
        pthread_mutex_unlock(&p->lock);
        int ret = exec_run(p);
        pthread_mutex_lock(&p->lock);
        p->run_ret = ret;
        p->job = 0;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Waits for the batch in the worker (if any); its return code. */
static int wait_run(pl_t *p)
{
    if (!p->worker_up) return 0;
    pthread_mutex_lock(&p->lock);
    while (p->job) pthread_cond_wait(&p->cv, &p->lock);
    int ret = p->run_ret;
    p->run_ret = 0;
    pthread_mutex_unlock(&p->lock);
    return ret;
}

/* Hands the filled batch to the model: directly, or (overlap) to the worker thread after the
 * previous batch finished, so that the caller reads and tokenizes the next batch meanwhile.
 * Output order is kept: one batch is in the model at a time. */
static int run_batch(pl_t *p)
{
    if (p->fill.nu == 0) return 0;
    int ret = wait_run(p);
    if (ret < 0) return ret;
    batch_t t = p->run;  /* empty: swap the buffers */
    p->run = p->fill;
    p->fill = t;
    if (!p->o.overlap) return exec_run(p);
    if (!p->worker_up) {
        if (pthread_mutex_init(&p->lock, NULL) != 0) return PL_EINTERNAL;
        if (pthread_cond_init(&p->cv, NULL) != 0) {
            pthread_mutex_destroy(&p->lock);
            return PL_EINTERNAL;
        }
        if (pthread_create(&p->worker, NULL, worker_main, p) != 0) {
            pthread_cond_destroy(&p->cv);
            pthread_mutex_destroy(&p->lock);
            md_warn("could not start the batch thread; running batches in turn");
            p->o.overlap = 0;
            return exec_run(p);
        }
        p->worker_up = 1;
    }
    pthread_mutex_lock(&p->lock);
    p->job = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

int pl_flush(pl_t *p)
{
    int ret = run_batch(p);
    int r2 = wait_run(p);
    return ret < 0 ? ret : r2;
}

static int grow(void **a, int64_t *m, int64_t need, size_t size)
{
    if (need <= *m) return 0;
    int64_t n = *m ? *m : 16;
    while (n < need) n *= 2;
    size_t bytes;
    if (md_mul_size((size_t)n, size, &bytes) < 0) {
        md_error("batch too large");
        return PL_EINTERNAL;
    }
    void *q = md_realloc(*a, bytes);
    if (!q) return PL_EINTERNAL;
    *a = q;
    *m = n;
    return 0;
}

static char *read_label(const md_seq_t *rec)
{
    const char *nm = rec->name ? rec->name : "";
    size_t n = strlen(nm) + 4;
    char *s = md_malloc(n);
    if (!s) return NULL;
    if (rec->kind == MD_SEQ_READ && (rec->flag & MD_FLAG_PAIRED) && (rec->flag & 0xc0) != 0 &&
        (rec->flag & 0xc0) != 0xc0)
        snprintf(s, n, "%s/%d", nm, (rec->flag & 0x40) ? 1 : 2);
    else
        snprintf(s, n, "%s", nm);
    return s;
}

int pl_add(pl_t *p, const md_seq_t *rec)
{
    md_winiter_t it;
    md_window_t w;
    int64_t S = p->o.stride ? p->o.stride : p->o.window, covered = 0;
    if (md_winiter_init(&it, rec->len, p->o.window, S) < 0) return PL_EDATA;
    p->records++;
    while (md_winiter_next(&it, &w) == 0) {
        int64_t tokens = w.len * p->npass;
        int64_t queued = p->fill.nids;
        int ret;
        if (p->fill.nu > 0 && queued + tokens > p->budget && (ret = run_batch(p)) < 0) return ret;
        int64_t mu = p->fill.mu;
        if ((ret = grow((void **)&p->fill.u, &mu, p->fill.nu + 1, sizeof(unit_t))) < 0) return ret;
        p->fill.mu = (int)mu;
        int64_t mseq = p->fill.mseq;
        if ((ret = grow((void **)&p->fill.seq_off, &mseq, p->fill.nseq + 3, sizeof(int64_t))) < 0) return ret;
        mseq = p->fill.mseq;
        if ((ret = grow((void **)&p->fill.seq_unit, &mseq, p->fill.nseq + 3, sizeof(int))) < 0) return ret;
        p->fill.mseq = (int)mseq;
        if ((ret = grow((void **)&p->fill.ids, &p->fill.mids, p->fill.nids + tokens, sizeof(int32_t))) < 0) return ret;
        unit_t *u = &p->fill.u[p->fill.nu];
        memset(u, 0, sizeof *u);
        u->npass = p->npass;
        u->len = w.len;
        u->newb = w.start + w.len > covered ? w.start + w.len - covered : 0;
        covered = w.start + w.len > covered ? w.start + w.len : covered;
        if (rec->kind == MD_SEQ_REGION && rec->contig) {
            u->chrom = dupcat(rec->contig, "");
            u->name = dupcat(rec->name ? rec->name : rec->contig, "");
            u->off = rec->beg + w.start;
        } else {
            u->chrom = read_label(rec);
            u->name = u->chrom ? dupcat(u->chrom, "") : NULL;
            u->off = w.start;
        }
        if (!u->chrom || !u->name) { unit_free(u); return PL_EINTERNAL; }
        const uint8_t *codes = rec->seq + w.start;
        if (p->o.task == PL_PREDICT && p->out->kind == OUT_TEXT) {
            u->codes = md_malloc(w.len ? w.len : 1);
            if (!u->codes) { unit_free(u); return PL_EINTERNAL; }
            memcpy(u->codes, codes, w.len);
        }
        if (!(p->o.task == PL_EMBED && p->o.pool == PL_POOL_MEAN) && p->npass == 2) {
            size_t n;
            if (md_mul_size((size_t)w.len, (size_t)p->bufw * sizeof(float), &n) < 0 ||
                !(u->buf = md_malloc(n))) {
                unit_free(u);
                return PL_EINTERNAL;
            }
        }
        int32_t *ids = p->fill.ids + p->fill.nids;
        md_tokenize_ex(p->vocab, &p->tok, codes, w.len, ids);
        p->fill.seq_off[p->fill.nseq] = p->fill.nids;
        p->fill.seq_unit[p->fill.nseq++] = p->fill.nu;
        p->fill.nids += w.len;
        if (p->npass == 2) {
            md_revcomp_ids(ids, ids + w.len, w.len, p->cfg->complement_map, p->V);
            p->fill.seq_off[p->fill.nseq] = p->fill.nids;
            p->fill.seq_unit[p->fill.nseq++] = p->fill.nu;
            p->fill.nids += w.len;
        }
        p->fill.nu++;
        if (p->fill.nids >= p->budget && (ret = run_batch(p)) < 0) return ret;
    }
    return 0;
}

/* ---- inputs -------------------------------------------------------------------------------- */

int pl_run_inputs(pl_t *p, const char *const *paths, int n_paths, const md_seqopts_t *so,
                  md_seqstats_t *st)
{
    md_seqstats_t tot;
    memset(&tot, 0, sizeof tot);
    md_seq_t rec;
    md_seq_init(&rec);
    int ret = 0, any_reads = 0;
    for (int i = 0; i < n_paths && ret == 0; i++) {
        md_seqreader_t *r = md_seqreader_open(paths[i], so);
        if (!r) { ret = PL_EDATA; break; }
        const char *fmt = md_seqreader_format(r);
        if (fmt && (!strncmp(fmt, "SAM", 3) || !strncmp(fmt, "BAM", 3) || !strncmp(fmt, "CRAM", 4)))
            any_reads = 1;
        md_info("%s: %s", paths[i], fmt ? fmt : "?");
        int rr;
        while ((rr = md_seqreader_read(r, &rec)) >= 0) {
            if ((ret = pl_add(p, &rec)) < 0) break;
        }
        if (ret == 0 && rr < -1) ret = PL_EDATA;
        const md_seqstats_t *s = md_seqreader_stats(r);
        if (s) {
            tot.n_read += s->n_read;
            tot.n_emitted += s->n_emitted;
            tot.n_skip_flag += s->n_skip_flag;
            tot.n_skip_short += s->n_skip_short;
            tot.n_skip_noseq += s->n_skip_noseq;
            tot.n_bases += s->n_bases;
            tot.n_clamped += s->n_clamped;
        }
        if (md_seqreader_close(r) < 0 && ret == 0) ret = PL_EDATA;
    }
    md_seq_destroy(&rec);
    if (ret == 0) ret = pl_flush(p);
    else wait_run(p);  /* the batch in the worker, if any, finishes before the caller cleans up */
    if (st) *st = tot;
    if (ret == 0 && p->records == 0) {
        int64_t skipped = tot.n_skip_flag + tot.n_skip_short + tot.n_skip_noseq;
        md_error("no usable %s (%" PRId64 " skipped: %" PRId64 " by flag filters, %" PRId64
                 " shorter than the minimum length, %" PRId64 " without a stored sequence)",
                 any_reads ? "reads" : "records", skipped, tot.n_skip_flag, tot.n_skip_short,
                 tot.n_skip_noseq);
        ret = PL_EDATA;
    }
    return ret;
}

/* ---- model description --------------------------------------------------------------------- */

const char *pl_variant(const md_config_t *cfg)
{
    if (cfg->arch == MD_ARCH_MAMBA) return "Mamba";
    return cfg->rcps ? "Caduceus-PS" : "Caduceus-Ph";
}

int pl_model_describe(const char *dir, int want_sha256, pl_model_info_t *info)
{
    char cpath[4096], wpath[4096];
    struct stat sb;
    memset(info, 0, sizeof *info);
    if (stat(dir, &sb) != 0) {
        md_error("%s: %s", dir, strerror(errno));
        return PL_EDATA;
    }
    if (!S_ISDIR(sb.st_mode)) {
        md_error("%s: not a folder (a model is a folder with config.json and model.safetensors)", dir);
        return PL_EDATA;
    }
    snprintf(cpath, sizeof cpath, "%s/config.json", dir);
    snprintf(wpath, sizeof wpath, "%s/model.safetensors", dir);
    if (access(cpath, F_OK) != 0) {
        md_error("%s: model folder has no config.json (%s not found)", dir, cpath);
        return PL_EDATA;
    }
    if (md_config_load(&info->cfg, cpath) < 0) return PL_EDATA;
    /* names as the config states them */
    json_t *root = json_load_file(cpath, 0, NULL);
    if (root) {
        json_t *a = json_object_get(root, "architectures");
        if (json_is_array(a) && json_array_size(a) && json_is_string(json_array_get(a, 0)))
            snprintf(info->architecture, sizeof info->architecture, "%s",
                     json_string_value(json_array_get(a, 0)));
        json_t *mt = json_object_get(root, "model_type");
        if (json_is_string(mt))
            snprintf(info->model_type, sizeof info->model_type, "%s", json_string_value(mt));
        json_decref(root);
    }
    if (!info->architecture[0])
        snprintf(info->architecture, sizeof info->architecture, "%s",
                 info->cfg.arch == MD_ARCH_MAMBA ? "MambaLMHeadModel" : "CaduceusForMaskedLM");
    info->variant = pl_variant(&info->cfg);
    md_weights_t *w = md_weights_alloc(&info->cfg);
    if (!w) return PL_EINTERNAL;
    info->n_params = (int64_t)w->numel;
    md_weights_free(w);
    if (stat(wpath, &sb) != 0) {
        md_error("%s: model folder has no model.safetensors (%s: %s)", dir, wpath, strerror(errno));
        return PL_EDATA;
    }
    info->file_bytes = sb.st_size;
    st_file_t *f = st_open(wpath);
    if (!f) return PL_EDATA;
    info->n_tensors = f->n;
    int seen[ST_NDTYPES] = { 0 };
    for (int i = 0; i < f->n; i++) {
        info->n_params_file += f->t[i].numel;
        if ((int)f->t[i].dtype >= 0 && f->t[i].dtype < ST_NDTYPES) seen[f->t[i].dtype]++;
    }
    /* the weight dtypes first (F32/F16/BF16), then buffers such as the complement map */
    for (int d = 0; d < ST_NDTYPES; d++) {
        if (!seen[d]) continue;
        size_t l = strlen(info->dtypes);
        snprintf(info->dtypes + l, sizeof info->dtypes - l, "%s%s", l ? "," : "",
                 st_dtype_name((st_dtype_t)d));
    }
    st_close(f);
    if (want_sha256 && md_sha256_file(wpath, info->sha256) < 0) return PL_EDATA;
    return 0;
}
