/* train.c: the training plan. The forward pass is model.c's function with the same op calls
 * (single-chunk path): embed with Ecat; per layer res = swap?(h + res) and u = norm(res) in one
 * add_norm; per stream and direction in_proj, conv, x_proj, dt_proj, scan (PS stream 1 with the
 * column-reversed in_proj, row-reversed out_proj and swapped scan directions); out_proj into h;
 * final add_norm and the tied head. It keeps only S[i] (each add's F32 sum, [n, W]) per layer.
 * The backward pass walks the layers in reverse; for layer i it recomputes u = norm(S[i]) and
 * the mixer with every intermediate (xz, xc, xdbl, dt, y and the scan's chunk-start states),
 * then back-propagates. One F32 gradient G [n, W] flows between layers: the gradient of S[i]
 * equals the gradient of the previous layer's mixer output h and of its residual, since both
 * enter only through the sum. Gradients of derived weights go to small buffers and are folded
 * onto the parameter slab with the permute op. */
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "md.h"

typedef struct {
    float *conv_w, *conv_b, *x_proj, *dt_w, *dt_b, *A_log, *D;    /* slab pointers */
} dir_p_t;

typedef struct {
    float *norm, *norm_b, *in_proj[2], *out_proj[2];               /* [dir]; aliases when tied */
    dir_p_t dir[2];
} layer_p_t;

typedef struct {
    float *norm_w, *norm_b;                 /* [W] derived ([w | flip w] for PS) */
    void *in_proj[2][2], *out_proj[2][2];   /* [stream][dir] matrices (aliases when tied) */
    void *x_proj[2], *dt_w[2];              /* [dir] matrices */
    float *A[2];                            /* [dir] [Di, N] = -exp(A_log) */
} layer_w_t;

struct md_train_s {
    md_config_t cfg;
    md_backend_t *be;
    const md_train_ops_t *ops;
    md_weights_t *table;            /* parameter table; host data used for staging only */
    int width, nstream, ndir, tied, ysum, T;
    int keep;                       /* chunk-start states of every layer kept from the forward */
    size_t numel;
    float *P, *G, *M, *V;           /* backend slabs */
    layer_p_t *lp, *lg;             /* parameter / gradient pointers per layer */
    float *pE, *gE, *pnf, *gnf, *pnf_b, *gnf_b;
    /* derived weights */
    float *ecat;                    /* [V, W] */
    void *head;                     /* matrix [V, W] */
    float *norm_f_w, *norm_f_b;     /* [W] */
    layer_w_t *lw;
    int32_t *map_comp, *map_rev;    /* [V] complement ids; [d] reversed rows */
    /* gradient temporaries of derived weights */
    float *dEcat, *dnw, *dnb, *dWin1, *dWout1;
    /* batch buffers, grown on demand */
    int64_t cap, nch_cap;
    int32_t *ids, *targets;
    float *weights;
    uint8_t *starts;                /* [n + 1] */
    void *h, *u, *du;               /* [n, W] act */
    float *S;                       /* [(n_layer + 1), n, W] */
    float *Gr;                      /* [n, W] residual-stream gradient */
    void *xz[2], *dxz[2];           /* [n, 2Di] */
    void *xc[2], *xdbl[2], *dt[2], *y[2];   /* [n, Di], [n, XD], [n, Di], [n, Di] */
    void *o[2], *dO[2];             /* [n, d] (ew_multiply) */
    void *dy, *dxc, *dxdbl, *ddt;
    float *cstates[2];              /* [nch, Di, N] (not keep) */
    float *Sst;                     /* [n_layer][nstream][ndir][nch, Di, N] (keep) */
    int64_t nch;
    float *conv_state;              /* [K-1, Di] zeros */
    float *logits;                  /* [n, V] F32 */
    double *stats;                  /* [MD_NSTATS] backend */
    void **allocs;                  /* every backend allocation but the batch buffers */
    int n_allocs, m_allocs;
};

#define CHECK(x) do { if ((x) < 0) goto fail; } while (0)

static void *track(md_train_t *t, void *p)
{
    if (!p) return NULL;
    if (t->n_allocs == t->m_allocs) {
        int n = t->m_allocs ? 2 * t->m_allocs : 128;
        void **a = md_realloc(t->allocs, n * sizeof *a);
        if (!a) { t->be->free(t->be, p); return NULL; }
        t->allocs = a;
        t->m_allocs = n;
    }
    t->allocs[t->n_allocs++] = p;
    return p;
}

static void *balloc(md_train_t *t, size_t bytes)
{
    return track(t, t->be->alloc(t->be, bytes ? bytes : 4));
}

static float *slab_ptr(md_train_t *t, float *slab, const md_param_t *p)
{
    return p ? slab + (p->data - t->table->slab) : NULL;
}

static void set_layer_ptrs(md_train_t *t, float *slab, layer_p_t *L, int i)
{
    const md_weights_t *w = t->table;
    L->norm = slab_ptr(t, slab, md_weights_find(w, MD_P_NORM, i, -1));
    L->norm_b = t->cfg.rms_norm ? NULL : slab_ptr(t, slab, md_weights_find(w, MD_P_NORM_B, i, -1));
    for (int k = 0; k < t->ndir; k++) {
        L->in_proj[k] = slab_ptr(t, slab, md_weights_find(w, MD_P_IN_PROJ, i, k));
        L->out_proj[k] = slab_ptr(t, slab, md_weights_find(w, MD_P_OUT_PROJ, i, k));
        dir_p_t *D = &L->dir[k];
        D->conv_w = slab_ptr(t, slab, md_weights_find(w, MD_P_CONV_W, i, k));
        D->conv_b = t->cfg.conv_bias ? slab_ptr(t, slab, md_weights_find(w, MD_P_CONV_B, i, k)) : NULL;
        D->x_proj = slab_ptr(t, slab, md_weights_find(w, MD_P_X_PROJ, i, k));
        D->dt_w = slab_ptr(t, slab, md_weights_find(w, MD_P_DT_W, i, k));
        D->dt_b = slab_ptr(t, slab, md_weights_find(w, MD_P_DT_B, i, k));
        D->A_log = slab_ptr(t, slab, md_weights_find(w, MD_P_A_LOG, i, k));
        D->D = slab_ptr(t, slab, md_weights_find(w, MD_P_D, i, k));
    }
}

/* [w | flip w] (PS) or w into dst [W]. */
static int derive_norm(md_train_t *t, const float *w, float *dst)
{
    const int d = t->cfg.d_model;
    CHECK(t->ops->permute(t->be, 1, d, w, d, dst, t->width, NULL, 0, 0));
    if (t->nstream == 2) CHECK(t->ops->permute(t->be, 1, d, w, d, dst + d, t->width, NULL, 1, 0));
    return 0;
fail:
    return -2;
}

int md_train_refresh(md_train_t *t)
{
    md_backend_t *be = t->be;
    const md_train_ops_t *ops = t->ops;
    const md_config_t *c = &t->cfg;
    const int d = c->d_model, Di = c->d_inner, N = c->d_state, R = c->dt_rank, V = c->vocab_size, W = t->width;
    CHECK(ops->permute(be, V, d, t->pE, d, t->ecat, W, NULL, 0, 0));
    if (t->nstream == 2) CHECK(ops->permute(be, V, d, t->pE, d, t->ecat + d, W, t->map_comp, 1, 0));
    CHECK(ops->set_matrix(be, t->head, V, W, t->ecat, W, NULL, 0));
    CHECK(derive_norm(t, t->pnf, t->norm_f_w));
    if (t->pnf_b) CHECK(derive_norm(t, t->pnf_b, t->norm_f_b));
    for (int i = 0; i < c->n_layer; i++) {
        const layer_p_t *P = &t->lp[i];
        layer_w_t *L = &t->lw[i];
        CHECK(derive_norm(t, P->norm, L->norm_w));
        if (P->norm_b) CHECK(derive_norm(t, P->norm_b, L->norm_b));
        for (int k = 0; k < t->ndir; k++) {
            CHECK(ops->set_matrix(be, L->x_proj[k], R + 2 * N, Di, P->dir[k].x_proj, Di, NULL, 0));
            CHECK(ops->set_matrix(be, L->dt_w[k], Di, R, P->dir[k].dt_w, R, NULL, 0));
            CHECK(ops->neg_exp(be, (int64_t)Di * N, P->dir[k].A_log, L->A[k]));
            if (k == 1 && t->tied) continue;
            CHECK(ops->set_matrix(be, L->in_proj[0][k], 2 * Di, d, P->in_proj[k], d, NULL, 0));
            CHECK(ops->set_matrix(be, L->out_proj[0][k], d, Di, P->out_proj[k], Di, NULL, 0));
            if (t->nstream == 2) {
                CHECK(ops->set_matrix(be, L->in_proj[1][k], 2 * Di, d, P->in_proj[k], d, NULL, 1));
                CHECK(ops->set_matrix(be, L->out_proj[1][k], d, Di, P->out_proj[k], Di, t->map_rev, 0));
            }
        }
    }
    return 0;
fail:
    return -2;
}

void md_train_free(md_train_t *t)
{
    if (!t) return;
    void *bufs[] = { t->ids, t->targets, t->weights, t->starts, t->h, t->u, t->du, t->S, t->Gr, t->xz[0], t->xz[1],
                     t->dxz[0], t->dxz[1], t->xc[0], t->xc[1], t->xdbl[0], t->xdbl[1], t->dt[0], t->dt[1], t->y[0],
                     t->y[1], t->o[0], t->o[1], t->dO[0], t->dO[1], t->dy, t->dxc, t->dxdbl, t->ddt, t->cstates[0],
                     t->cstates[1], t->logits, t->Sst };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) if (bufs[i]) t->be->free(t->be, bufs[i]);
    for (int i = 0; i < t->n_allocs; i++) t->be->free(t->be, t->allocs[i]);
    free(t->allocs);
    free(t->lp);
    free(t->lg);
    free(t->lw);
    md_weights_free(t->table);
    free(t);
}

md_train_t *md_train_create(const md_weights_t *w, md_backend_t *be, const md_train_opts_t *o)
{
    const md_train_ops_t *ops = md_train_ops_for(be);
    if (!ops) return NULL;
    md_train_t *t = md_calloc(1, sizeof *t);
    if (!t) return NULL;
    t->cfg = w->cfg;
    t->be = be;
    t->ops = ops;
    const md_config_t *c = &t->cfg;
    const int d = c->d_model, Di = c->d_inner, N = c->d_state, R = c->dt_rank, V = c->vocab_size, K = c->d_conv;
    t->nstream = (c->arch == MD_ARCH_CADUCEUS && c->rcps) ? 2 : 1;
    t->width = d * t->nstream;
    t->ndir = (c->arch == MD_ARCH_CADUCEUS && c->bidirectional) ? 2 : 1;
    t->tied = t->ndir == 2 && c->bidir_weight_tie;
    t->ysum = c->bidir_strategy == MD_BIDIR_ADD && (t->ndir == 1 || t->tied);
    if (t->ndir == 1) t->ysum = 1;
    t->T = o && o->scan_chunk > 0 ? o->scan_chunk : ops->scan_chunk;
    /* ew_multiply needs both directions' outputs before the scan backward: it recomputes */
    t->keep = !(o && o->recompute_scan) && !(!t->ysum && c->bidir_strategy == MD_BIDIR_EW_MULTIPLY);
    const int W = t->width;
    if (!(t->table = md_weights_alloc(&w->cfg))) goto fail;
    t->numel = t->table->numel;
    if (w->numel != t->numel) { md_error("weights do not match their config"); goto fail; }
    size_t bytes = t->numel * sizeof(float);
    if (!(t->P = balloc(t, bytes)) || !(t->G = balloc(t, bytes)) || !(t->M = balloc(t, bytes)) ||
        !(t->V = balloc(t, bytes)))
        goto fail;
    CHECK(be->upload(be, t->P, w->slab, bytes));
    CHECK(be->zero(be, t->G, bytes));
    CHECK(be->zero(be, t->M, bytes));
    CHECK(be->zero(be, t->V, bytes));
    t->lp = md_calloc(c->n_layer, sizeof *t->lp);
    t->lg = md_calloc(c->n_layer, sizeof *t->lg);
    t->lw = md_calloc(c->n_layer, sizeof *t->lw);
    if (!t->lp || !t->lg || !t->lw) goto fail;
    for (int i = 0; i < c->n_layer; i++) {
        set_layer_ptrs(t, t->P, &t->lp[i], i);
        set_layer_ptrs(t, t->G, &t->lg[i], i);
    }
    t->pE = slab_ptr(t, t->P, md_weights_find(t->table, MD_P_EMBED, -1, -1));
    t->gE = slab_ptr(t, t->G, md_weights_find(t->table, MD_P_EMBED, -1, -1));
    t->pnf = slab_ptr(t, t->P, md_weights_find(t->table, MD_P_NORM_F, -1, -1));
    t->gnf = slab_ptr(t, t->G, md_weights_find(t->table, MD_P_NORM_F, -1, -1));
    if (!c->rms_norm) {
        t->pnf_b = slab_ptr(t, t->P, md_weights_find(t->table, MD_P_NORM_F_B, -1, -1));
        t->gnf_b = slab_ptr(t, t->G, md_weights_find(t->table, MD_P_NORM_F_B, -1, -1));
    }

    /* derived weights and maps */
    int32_t *hm = md_malloc((size_t)(V > d ? V : d) * sizeof(int32_t));
    if (!hm) goto fail;
    for (int v = 0; v < V; v++) hm[v] = c->complement_map[v];
    t->map_comp = balloc(t, V * sizeof(int32_t));
    if (!t->map_comp || be->upload(be, t->map_comp, hm, V * sizeof(int32_t)) < 0) { free(hm); goto fail; }
    for (int j = 0; j < d; j++) hm[j] = d - 1 - j;
    t->map_rev = balloc(t, d * sizeof(int32_t));
    if (!t->map_rev || be->upload(be, t->map_rev, hm, d * sizeof(int32_t)) < 0) { free(hm); goto fail; }
    free(hm);
    size_t zn = (size_t)2 * Di * d;
    if ((size_t)V * W > zn) zn = (size_t)V * W;
    if ((size_t)(R + 2 * N) * Di > zn) zn = (size_t)(R + 2 * N) * Di;
    if ((size_t)Di * R > zn) zn = (size_t)Di * R;
    float *zeros = md_calloc(zn, sizeof(float));
    if (!zeros) goto fail;
#define MAT(rows, cols) track(t, be->upload_matrix(be, zeros, (rows), (cols)))
    int ok = (t->ecat = balloc(t, (size_t)V * W * sizeof(float))) && (t->head = MAT(V, W)) &&
             (t->norm_f_w = balloc(t, W * sizeof(float))) && (c->rms_norm || (t->norm_f_b = balloc(t, W * sizeof(float))));
    for (int i = 0; ok && i < c->n_layer; i++) {
        layer_w_t *L = &t->lw[i];
        ok = (L->norm_w = balloc(t, W * sizeof(float))) && (c->rms_norm || (L->norm_b = balloc(t, W * sizeof(float))));
        for (int k = 0; ok && k < t->ndir; k++) {
            ok = (L->x_proj[k] = MAT(R + 2 * N, Di)) && (L->dt_w[k] = MAT(Di, R)) &&
                 (L->A[k] = balloc(t, (size_t)Di * N * sizeof(float)));
            if (!ok) break;
            for (int s = 0; s < t->nstream; s++) {
                if (k == 1 && t->tied) {
                    L->in_proj[s][1] = L->in_proj[s][0];
                    L->out_proj[s][1] = L->out_proj[s][0];
                    continue;
                }
                ok = ok && (L->in_proj[s][k] = MAT(2 * Di, d)) && (L->out_proj[s][k] = MAT(d, Di));
            }
        }
    }
#undef MAT
    free(zeros);
    if (!ok) goto fail;
    ok = (t->dEcat = balloc(t, (size_t)V * W * sizeof(float))) && (t->dnw = balloc(t, W * sizeof(float))) &&
         (t->dnb = balloc(t, W * sizeof(float))) && (t->dWin1 = balloc(t, (size_t)2 * Di * d * sizeof(float))) &&
         (t->dWout1 = balloc(t, (size_t)d * Di * sizeof(float))) &&
         (t->conv_state = balloc(t, (size_t)(K > 1 ? K - 1 : 1) * Di * sizeof(float))) &&
         (t->stats = balloc(t, MD_NSTATS * sizeof(double)));
    if (!ok) goto fail;
    CHECK(md_train_refresh(t));
    return t;
fail:
    md_train_free(t);
    return NULL;
}

const md_config_t *md_train_config(const md_train_t *t) { return &t->cfg; }
md_backend_t *md_train_backend(const md_train_t *t) { return t->be; }
const md_train_ops_t *md_train_ops(const md_train_t *t) { return t->ops; }
const md_weights_t *md_train_table(const md_train_t *t) { return t->table; }

void md_train_slabs(md_train_t *t, float **p, float **g, float **m, float **v)
{
    if (p) *p = t->P;
    if (g) *g = t->G;
    if (m) *m = t->M;
    if (v) *v = t->V;
}

int md_train_zero_grad(md_train_t *t) { return t->be->zero(t->be, t->G, t->numel * sizeof(float)); }
int md_train_get_grads(md_train_t *t, float *g) { return t->be->download(t->be, g, t->G, t->numel * sizeof(float)); }
int md_train_get_params(md_train_t *t, md_weights_t *w)
{
    if (w->numel != t->numel) { md_error("weights of another shape"); return -2; }
    return t->be->download(t->be, w->slab, t->P, t->numel * sizeof(float));
}
int md_train_set_params(md_train_t *t, const md_weights_t *w)
{
    if (w->numel != t->numel) { md_error("weights of another shape"); return -2; }
    if (t->be->upload(t->be, t->P, w->slab, t->numel * sizeof(float)) < 0) return -2;
    return md_train_refresh(t);
}
int md_train_get_moments(md_train_t *t, float *m, float *v)
{
    if (t->be->download(t->be, m, t->M, t->numel * sizeof(float)) < 0) return -2;
    return t->be->download(t->be, v, t->V, t->numel * sizeof(float));
}
int md_train_set_moments(md_train_t *t, const float *m, const float *v)
{
    if (t->be->upload(t->be, t->M, m, t->numel * sizeof(float)) < 0) return -2;
    return t->be->upload(t->be, t->V, v, t->numel * sizeof(float));
}

/* --- batch buffers ---------------------------------------------------------------------------- */

static void free_batch(md_train_t *t)
{
    void **bufs[] = { (void **)&t->ids, (void **)&t->targets, (void **)&t->weights, (void **)&t->starts, &t->h, &t->u,
                      &t->du, (void **)&t->S, (void **)&t->Gr, &t->xz[0], &t->xz[1], &t->dxz[0], &t->dxz[1], &t->xc[0],
                      &t->xc[1], &t->xdbl[0], &t->xdbl[1], &t->dt[0], &t->dt[1], &t->y[0], &t->y[1], &t->o[0],
                      &t->o[1], &t->dO[0], &t->dO[1], &t->dy, &t->dxc, &t->dxdbl, &t->ddt, (void **)&t->cstates[0],
                      (void **)&t->cstates[1], (void **)&t->logits, (void **)&t->Sst };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (*bufs[i]) { t->be->free(t->be, *bufs[i]); *bufs[i] = NULL; }
    t->cap = 0;
}

static int ensure(md_train_t *t, int64_t n)
{
    if (n <= t->cap) return 0;
    free_batch(t);
    md_backend_t *be = t->be;
    const md_config_t *c = &t->cfg;
    const int W = t->width, d = c->d_model, Di = c->d_inner, N = c->d_state, XD = c->dt_rank + 2 * N;
    const size_t a = md_dtype_size(be->act_dtype), nn = n;
    const int64_t nch = (n + t->T - 1) / t->T;
    const int sep = !(t->ndir == 1 || t->tied);      /* one xz per direction */
#define AL(p, bytes) do { if (!((p) = be->alloc(be, (bytes)))) goto fail; } while (0)
    AL(t->ids, nn * sizeof(int32_t));
    AL(t->targets, nn * sizeof(int32_t));
    AL(t->weights, nn * sizeof(float));
    AL(t->starts, nn + 1);
    AL(t->h, nn * W * a);
    AL(t->u, nn * W * a);
    AL(t->du, nn * W * a);
    AL(t->S, (size_t)(c->n_layer + 1) * nn * W * sizeof(float));
    AL(t->Gr, nn * W * sizeof(float));
    for (int k = 0; k < (sep ? 2 : 1); k++) {
        AL(t->xz[k], nn * 2 * Di * a);
        AL(t->dxz[k], nn * 2 * Di * a);
    }
    for (int k = 0; k < t->ndir; k++) {
        AL(t->xc[k], nn * Di * a);
        AL(t->xdbl[k], nn * XD * a);
        AL(t->dt[k], nn * Di * a);
        if (!t->keep) AL(t->cstates[k], (size_t)nch * Di * N * sizeof(float));
        if (k == 0 || !t->ysum) AL(t->y[k], nn * Di * a);
        if (!t->ysum && c->bidir_strategy == MD_BIDIR_EW_MULTIPLY) {
            AL(t->o[k], nn * d * a);
            AL(t->dO[k], nn * d * a);
        }
    }
    AL(t->dy, nn * Di * a);
    AL(t->dxc, nn * Di * a);
    AL(t->dxdbl, nn * XD * a);
    AL(t->ddt, nn * Di * a);
    AL(t->logits, nn * c->vocab_size * sizeof(float));
    if (t->keep) AL(t->Sst, (size_t)c->n_layer * t->nstream * t->ndir * nch * Di * N * sizeof(float));
    t->nch = nch;
#undef AL
    t->cap = n;
    return 0;
fail:
    free_batch(t);
    return -2;
}

static int upload_batch(md_train_t *t, const md_batch_t *b)
{
    const md_config_t *c = &t->cfg;
    const int64_t n = b->n;
    if (n <= 0) { md_error("empty batch"); return -2; }
    for (int64_t i = 0; i < n; i++) {
        if (b->ids[i] < 0 || b->ids[i] >= c->vocab_size) {
            md_error("token id %d at position %lld outside the vocabulary", b->ids[i], (long long)i);
            return -2;
        }
        if (b->targets && b->targets[i] != MD_IGNORE && (b->targets[i] < 0 || b->targets[i] >= c->vocab_size)) {
            md_error("target id %d at position %lld outside the vocabulary", b->targets[i], (long long)i);
            return -2;
        }
    }
    uint8_t *st = md_calloc(n + 1, 1);
    if (!st) return -2;
    if (b->nseq <= 0 || !b->seq_off) st[0] = 1;
    else {
        if (b->seq_off[0] != 0 || b->seq_off[b->nseq] != n) { md_error("sequence offsets do not cover the batch"); free(st); return -2; }
        for (int i = 0; i < b->nseq; i++) {
            if (b->seq_off[i + 1] <= b->seq_off[i]) { md_error("sequence %d is empty", i); free(st); return -2; }
            st[b->seq_off[i]] = 1;
        }
    }
    st[n] = 1;
    int ret = -2;
    if (ensure(t, n) < 0) goto out;
    md_backend_t *be = t->be;
    if (be->upload(be, t->starts, st, n + 1) < 0 || be->upload(be, t->ids, b->ids, n * sizeof(int32_t)) < 0) goto out;
    if (b->targets && be->upload(be, t->targets, b->targets, n * sizeof(int32_t)) < 0) goto out;
    if (b->weights && be->upload(be, t->weights, b->weights, n * sizeof(float)) < 0) goto out;
    ret = 0;
out:
    free(st);
    return ret;
}

/* --- layers ----------------------------------------------------------------------------------- */

#define ACTP(p, off) ((void *)((char *)(p) + (size_t)(off) * asz))

/* The scan arguments of direction k of stream s on the current buffers. */
static void scan_args(md_train_t *t, int li, int s, int k, void *xzk, int reverse, md_tscan_t *q)
{
    const md_config_t *c = &t->cfg;
    const int Di = c->d_inner, N = c->d_state, R = c->dt_rank, XD = R + 2 * N;
    const size_t asz = md_dtype_size(t->be->act_dtype);
    const dir_p_t *P = &t->lp[li].dir[k];
    memset(q, 0, sizeof *q);
    q->x = t->xc[k]; q->ldx = Di;
    q->dt = t->dt[k]; q->lddt = Di;
    q->B = ACTP(t->xdbl[k], R);
    q->C = ACTP(t->xdbl[k], R + N);
    q->ldbc = XD;
    q->z = ACTP(xzk, Di); q->ldz = 2 * Di;
    q->A = t->lw[li].A[k];
    q->D = P->D;
    q->dt_bias = P->dt_b;
    q->reverse = reverse;
    q->T = t->T;
    q->chunk_states = t->keep ? t->Sst + ((size_t)(li * t->nstream + s) * t->ndir + k) * t->nch * Di * N : t->cstates[k];
}

/* Mixer forward of stream s of layer li on u: fills every intermediate and writes h[:, s].
 * Without scan (the backward of a plan that keeps states): in_proj, conv, x_proj, dt_proj. */
static int mixer_fwd(md_train_t *t, int li, int s, int64_t n, int scan)
{
    md_backend_t *be = t->be;
    const md_train_ops_t *ops = t->ops;
    const md_config_t *c = &t->cfg;
    const layer_w_t *L = &t->lw[li];
    const layer_p_t *P = &t->lp[li];
    const int W = t->width, d = c->d_model, Di = c->d_inner, N = c->d_state, R = c->dt_rank, K = c->d_conv;
    const int XD = R + 2 * N;
    const size_t asz = md_dtype_size(be->act_dtype);
    const int rev_of[2] = { s == 1, s == 0 };
    const int sep = !(t->ndir == 1 || t->tied);
    void *us = ACTP(t->u, (size_t)s * d), *hs = ACTP(t->h, (size_t)s * d);
    for (int k = 0; k < t->ndir; k++) {
        void *xzk = t->xz[sep ? k : 0];
        if (k == 0 || sep) CHECK(be->gemm(be, n, 2 * Di, d, us, W, L->in_proj[s][k], xzk, 2 * Di, 0, 0));
        CHECK(be->zero(be, t->conv_state, (size_t)(K > 1 ? K - 1 : 1) * Di * sizeof(float)));
        CHECK(be->conv_silu(be, n, Di, K, xzk, 2 * Di, P->dir[k].conv_w, P->dir[k].conv_b, t->xc[k], t->conv_state,
                            rev_of[k], t->starts));
        CHECK(be->gemm(be, n, XD, Di, t->xc[k], Di, L->x_proj[k], t->xdbl[k], XD, 0, 0));
        CHECK(be->gemm(be, n, Di, R, t->xdbl[k], XD, L->dt_w[k], t->dt[k], Di, 0, 0));
        if (!scan) continue;
        md_tscan_t q;
        scan_args(t, li, s, k, xzk, rev_of[k], &q);
        CHECK(ops->scan_fwd(be, n, Di, N, &q, t->y[t->ysum ? 0 : k], Di, t->ysum && k > 0, t->starts));
    }
    if (!scan) return 0;
    if (t->ysum) {
        CHECK(be->gemm(be, n, d, Di, t->y[0], Di, L->out_proj[s][0], hs, W, 0, 0));
    } else if (c->bidir_strategy == MD_BIDIR_ADD) {
        CHECK(be->gemm(be, n, d, Di, t->y[0], Di, L->out_proj[s][0], hs, W, 0, 0));
        CHECK(be->gemm(be, n, d, Di, t->y[1], Di, L->out_proj[s][1], hs, W, 1, 0));
    } else {
        for (int k = 0; k < 2; k++) CHECK(be->gemm(be, n, d, Di, t->y[k], Di, L->out_proj[s][k], t->o[k], d, 0, 0));
        CHECK(be->gemm(be, n, d, Di, t->y[0], Di, L->out_proj[s][0], hs, W, 0, 0));
        CHECK(be->mul(be, n, d, hs, W, t->o[1], d));
    }
    return 0;
fail:
    return -2;
}

/* dW of a derived stream-1 matrix: into the zeroed temporary, then folded onto the parameter's
 * gradient. in: in_proj (columns reversed); else out_proj (rows reversed). */
static int fold_stream1(md_train_t *t, int in, float *grad)
{
    const md_config_t *c = &t->cfg;
    const int d = c->d_model, Di = c->d_inner;
    if (in) return t->ops->permute(t->be, 2 * Di, d, t->dWin1, d, grad, d, NULL, 1, 1);
    return t->ops->permute(t->be, d, Di, t->dWout1, Di, grad, Di, t->map_rev, 0, 1);
}

/* dW_out of direction k of stream s += dC^T y (stream 1: through the row-reversed copy). */
static int dwout(md_train_t *t, int li, int s, int k, int64_t n, const void *dC, int64_t lddc, int f32, const void *y)
{
    md_backend_t *be = t->be;
    const md_config_t *c = &t->cfg;
    const int d = c->d_model, Di = c->d_inner;
    float *g = t->lg[li].out_proj[k];
    if (s == 0) return t->ops->gemm_dw(be, n, d, Di, dC, lddc, f32, y, Di, g);
    CHECK(be->zero(be, t->dWout1, (size_t)d * Di * sizeof(float)));
    CHECK(t->ops->gemm_dw(be, n, d, Di, dC, lddc, f32, y, Di, t->dWout1));
    return fold_stream1(t, 0, g);
fail:
    return -2;
}

/* Mixer backward of stream s of layer li (after mixer_fwd): dL/dh[:, s] is Gr[:, s]; writes
 * du[:, s] and adds every weight gradient. */
static int mixer_bwd(md_train_t *t, int li, int s, int64_t n)
{
    md_backend_t *be = t->be;
    const md_train_ops_t *ops = t->ops;
    const md_config_t *c = &t->cfg;
    const layer_w_t *L = &t->lw[li];
    const layer_p_t *G = &t->lg[li];
    const layer_p_t *P = &t->lp[li];
    const int W = t->width, d = c->d_model, Di = c->d_inner, N = c->d_state, R = c->dt_rank, K = c->d_conv;
    const int XD = R + 2 * N;
    const size_t asz = md_dtype_size(be->act_dtype);
    const int rev_of[2] = { s == 1, s == 0 };
    const int sep = !(t->ndir == 1 || t->tied);
    const float *dOut = t->Gr + (size_t)s * d;
    void *us = ACTP(t->u, (size_t)s * d), *dus = ACTP(t->du, (size_t)s * d);
    const size_t win = (size_t)2 * Di * d * sizeof(float);
    const int ew = !t->ysum && c->bidir_strategy == MD_BIDIR_EW_MULTIPLY;

    if (ew) CHECK(ops->mul_bwd(be, n, d, dOut, W, t->o[0], d, t->o[1], d, t->dO[0], d, t->dO[1], d));
    for (int k = 0; k < t->ndir; k++) {
        void *xzk = t->xz[sep ? k : 0], *dxzk = t->dxz[sep ? k : 0];
        const int acc = !sep && k > 0;
        const int yk = t->ysum ? 0 : k;
        /* dy; dW_out now when y is at hand, else after the scan backward has rebuilt it */
        if (k == 0 || !t->ysum) {
            CHECK(ops->gemm_da(be, n, d, Di, ew ? t->dO[k] : (const void *)dOut, ew ? d : W, !ew, L->out_proj[s][k],
                               t->dy, Di, 0));
            if (!t->keep) CHECK(dwout(t, li, s, k, n, ew ? t->dO[k] : (const void *)dOut, ew ? d : W, !ew, t->y[yk]));
        }
        /* scan */
        md_tscan_t q;
        scan_args(t, li, s, k, xzk, rev_of[k], &q);
        q.dy = t->dy; q.lddy = Di;
        q.dx = t->dxc; q.lddx = Di;
        q.ddt = t->ddt; q.ldddt = Di;
        q.dB = ACTP(t->dxdbl, R);
        q.dC = ACTP(t->dxdbl, R + N);
        q.lddbc = XD;
        q.dz = ACTP(dxzk, Di); q.lddz = 2 * Di; q.dz_accumulate = acc;
        q.dA_log = G->dir[k].A_log;
        q.dD = G->dir[k].D;
        q.ddt_bias = G->dir[k].dt_b;
        if (t->keep) {
            q.y = t->y[yk]; q.ldy = Di;
            q.y_accumulate = t->ysum && k > 0;
        }
        CHECK(ops->scan_bwd(be, n, Di, N, &q, t->starts));
        if (t->keep && (!t->ysum || k == t->ndir - 1)) CHECK(dwout(t, li, s, t->ysum ? 0 : k, n, dOut, W, 1, t->y[yk]));
        /* dt_proj, x_proj */
        CHECK(ops->gemm_da(be, n, Di, R, t->ddt, Di, 0, L->dt_w[k], t->dxdbl, XD, 0));
        CHECK(ops->gemm_dw(be, n, Di, R, t->ddt, Di, 0, t->xdbl[k], XD, G->dir[k].dt_w));
        CHECK(ops->gemm_da(be, n, XD, Di, t->dxdbl, XD, 0, L->x_proj[k], t->dxc, Di, 1));
        CHECK(ops->gemm_dw(be, n, XD, Di, t->dxdbl, XD, 0, t->xc[k], Di, G->dir[k].x_proj));
        /* conv */
        CHECK(ops->conv_silu_bwd(be, n, Di, K, xzk, 2 * Di, P->dir[k].conv_w, P->dir[k].conv_b, t->dxc, dxzk, 2 * Di,
                                 acc, G->dir[k].conv_w, G->dir[k].conv_b, NULL, NULL, rev_of[k], t->starts));
        /* in_proj */
        if (sep || k == t->ndir - 1) {
            float *gin = s == 1 ? t->dWin1 : G->in_proj[k];
            if (s == 1) CHECK(be->zero(be, t->dWin1, win));
            CHECK(ops->gemm_da(be, n, 2 * Di, d, dxzk, 2 * Di, 0, L->in_proj[s][k], dus, W, sep && k > 0));
            CHECK(ops->gemm_dw(be, n, 2 * Di, d, dxzk, 2 * Di, 0, us, W, gin));
            if (s == 1) CHECK(fold_stream1(t, 1, G->in_proj[k]));
        }
    }
    return 0;
fail:
    return -2;
}

/* Gradient of a derived norm vector [W] folded onto the parameter's gradient [d]. */
static int fold_norm(md_train_t *t, const float *dcat, float *grad)
{
    const int d = t->cfg.d_model;
    CHECK(t->ops->permute(t->be, 1, d, dcat, d, grad, d, NULL, 0, 1));
    if (t->nstream == 2) CHECK(t->ops->permute(t->be, 1, d, dcat + d, d, grad, d, NULL, 1, 1));
    return 0;
fail:
    return -2;
}

/* The whole forward; leaves logits and S filled. */
static int forward(md_train_t *t, int64_t n)
{
    md_backend_t *be = t->be;
    const md_config_t *c = &t->cfg;
    const int W = t->width, d = c->d_model, V = c->vocab_size;
    const int swap = t->nstream == 2 && c->fused_add_norm;
    const size_t nw = (size_t)n * W;
    CHECK(be->embed(be, n, W, t->ids, t->ecat, t->h));
    for (int li = 0; li < c->n_layer; li++) {
        const layer_w_t *L = &t->lw[li];
        CHECK(be->add_norm(be, n, W, d, t->h, li == 0 ? NULL : t->S + (li - 1) * nw, t->S + li * nw, t->u, L->norm_w,
                           L->norm_b, c->norm_eps, swap, c->rms_norm));
        for (int s = 0; s < t->nstream; s++) CHECK(mixer_fwd(t, li, s, n, 1));
    }
    CHECK(be->add_norm(be, n, W, d, t->h, t->S + (c->n_layer - 1) * nw, t->S + c->n_layer * nw, t->u, t->norm_f_w,
                       t->norm_f_b, c->norm_eps, 0, c->rms_norm));
    CHECK(be->gemm(be, n, V, W, t->u, W, t->head, t->logits, V, 0, 1));
    return 0;
fail:
    return -2;
}

static int loss(md_train_t *t, const md_batch_t *b, float scale, int grad, double *stats)
{
    md_backend_t *be = t->be;
    const int V = t->cfg.vocab_size;
    double hs[MD_NSTATS];
    CHECK(be->zero(be, t->stats, sizeof hs));
    CHECK(t->ops->xent(be, b->n, V, t->logits, V, t->targets, b->weights ? t->weights : NULL, MD_IGNORE, scale,
                       grad ? t->logits : NULL, V, t->stats));
    CHECK(be->download(be, hs, t->stats, sizeof hs));
    for (int k = 0; k < MD_NSTATS; k++) stats[k] += hs[k];
    return 0;
fail:
    return -2;
}

int md_train_forward(md_train_t *t, const md_batch_t *b, double *stats, float *logits)
{
    CHECK(upload_batch(t, b));
    CHECK(forward(t, b->n));
    if (b->targets && stats) CHECK(loss(t, b, 0.0f, 0, stats));
    if (logits) CHECK(t->be->download(t->be, logits, t->logits, (size_t)b->n * t->cfg.vocab_size * sizeof(float)));
    return t->be->sync(t->be);
fail:
    return -2;
}

int md_train_forward_backward(md_train_t *t, const md_batch_t *b, float scale, double *stats)
{
    md_backend_t *be = t->be;
    const md_train_ops_t *ops = t->ops;
    const md_config_t *c = &t->cfg;
    const int W = t->width, d = c->d_model, V = c->vocab_size;
    const int swap = t->nstream == 2 && c->fused_add_norm;
    const int64_t n = b->n;
    if (!b->targets) { md_error("a training batch needs targets"); return -2; }
    CHECK(upload_batch(t, b));
    const size_t nw = (size_t)n * W;
    CHECK(forward(t, n));
    double st[MD_NSTATS] = { 0 };
    CHECK(loss(t, b, scale, 1, st));
    if (stats) for (int k = 0; k < MD_NSTATS; k++) stats[k] += st[k];

    /* head and final norm */
    CHECK(be->zero(be, t->dEcat, (size_t)V * W * sizeof(float)));
    CHECK(ops->gemm_da(be, n, V, W, t->logits, V, 1, t->head, t->du, W, 0));
    CHECK(ops->gemm_dw(be, n, V, W, t->logits, V, 1, t->u, W, t->dEcat));
    CHECK(be->zero(be, t->dnw, W * sizeof(float)));
    CHECK(be->zero(be, t->dnb, W * sizeof(float)));
    CHECK(ops->add_norm_bwd(be, n, W, d, t->S + c->n_layer * nw, t->du, NULL, t->Gr, t->norm_f_w, t->dnw,
                            t->norm_f_b ? t->dnb : NULL, c->norm_eps, 0, c->rms_norm));
    CHECK(fold_norm(t, t->dnw, t->gnf));
    if (t->gnf_b) CHECK(fold_norm(t, t->dnb, t->gnf_b));

    for (int li = c->n_layer - 1; li >= 0; li--) {
        const layer_w_t *L = &t->lw[li];
        const float *Si = t->S + li * nw;
        CHECK(be->add_norm(be, n, W, d, NULL, Si, NULL, t->u, L->norm_w, L->norm_b, c->norm_eps, 0, c->rms_norm));
        for (int s = 0; s < t->nstream; s++) {
            CHECK(mixer_fwd(t, li, s, n, !t->keep));
            CHECK(mixer_bwd(t, li, s, n));
        }
        CHECK(be->zero(be, t->dnw, W * sizeof(float)));
        CHECK(be->zero(be, t->dnb, W * sizeof(float)));
        CHECK(ops->add_norm_bwd(be, n, W, d, Si, t->du, t->Gr, t->Gr, L->norm_w, t->dnw, L->norm_b ? t->dnb : NULL,
                                c->norm_eps, swap, c->rms_norm));
        CHECK(fold_norm(t, t->dnw, t->lg[li].norm));
        if (L->norm_b) CHECK(fold_norm(t, t->dnb, t->lg[li].norm_b));
    }
    CHECK(ops->embed_bwd(be, n, W, t->ids, t->Gr, t->dEcat));
    CHECK(ops->permute(be, V, d, t->dEcat, W, t->gE, d, NULL, 0, 1));
    if (t->nstream == 2) CHECK(ops->permute(be, V, d, t->dEcat + d, W, t->gE, d, t->map_comp, 1, 1));
    return be->sync(be);
fail:
    return -2;
}
