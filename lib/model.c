/* model.c: the model plan, written once against the op table (backend.h).
 *
 * Streams: Ph and Mamba have one stream of width d; PS has two (the hidden state is [fwd | rc],
 * width 2d). rc(BiM(rc(b))) for the second PS stream is computed without data flips: in_proj with
 * its columns reversed, out_proj with its rows reversed, and the two scan directions swapped
 * (model-spec 2.6). The PS embedding and LM head use one table Ecat = [E | E2] with
 * E2[v] = flip_C(E[comp(v)]), and the norms use [w | flip_C(w)].
 *
 * Per layer: the residual is updated (res = swap?(h + res)) and normed; then, for each stream and
 * direction, chunks are walked in that direction's scan order with conv and scan states carried
 * between chunks; over several chunks the residual update happens at a chunk's first visit, the
 * normed input and in_proj are recomputed per chunk, and the mixer output accumulates into h.
 * When the whole batch fits in one chunk and in/out_proj are tied ("add"), in_proj runs once and
 * both directions go to the backend in one scan call. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "md.h"

typedef struct {
    void *x_proj, *dt_w;                    /* matrices [R+2N, Di], [Di, R] */
    float *dt_b, *A, *D, *conv_w, *conv_b;  /* vectors */
} dir_w_t;

typedef struct {
    float *norm_w, *norm_b;                 /* [W] */
    void *in_proj[2][2], *out_proj[2][2];   /* [stream][dir] (aliases when tied) */
    dir_w_t dir[2];
} layer_w_t;

struct md_model {
    md_config_t cfg;
    md_weights_t *w;
    md_backend_t *be;
    char sha256[65];
    int width, nstream, ndir, tied;
    float *ecat;                /* [V, width] */
    void *head;                 /* matrix [V, width] */
    float *norm_f_w, *norm_f_b; /* [width] */
    layer_w_t *layers;
    /* every backend allocation, for freeing */
    void **allocs;
    int n_allocs, m_allocs;
};

static void *track(md_model_t *m, void *p)
{
    if (!p) return NULL;
    if (m->n_allocs == m->m_allocs) {
        int n = m->m_allocs ? m->m_allocs * 2 : 256;
        void **a = md_realloc(m->allocs, n * sizeof *a);
        if (!a) { m->be->free(m->be, p); return NULL; }
        m->allocs = a;
        m->m_allocs = n;
    }
    m->allocs[m->n_allocs++] = p;
    return p;
}

static float *upload_vec(md_model_t *m, const float *host, size_t n)
{
    float *d = track(m, m->be->alloc(m->be, n * sizeof(float)));
    if (!d) return NULL;
    if (m->be->upload(m->be, d, host, n * sizeof(float)) < 0) return NULL;
    return d;
}

static void *upload_mat(md_model_t *m, const float *host, int rows, int cols)
{
    return track(m, m->be->upload_matrix(m->be, host, rows, cols));
}

/* [w | flip(w)] for PS, w otherwise. */
static float *upload_norm(md_model_t *m, const float *w, int d)
{
    float *tmp = md_malloc((size_t)m->width * sizeof(float));
    if (!tmp) return NULL;
    memcpy(tmp, w, d * sizeof(float));
    if (m->nstream == 2)
        for (int j = 0; j < d; j++) tmp[d + j] = w[d - 1 - j];
    float *r = upload_vec(m, tmp, m->width);
    free(tmp);
    return r;
}

static int setup(md_model_t *m)
{
    const md_config_t *c = &m->cfg;
    const int d = c->d_model, Di = c->d_inner, N = c->d_state, R = c->dt_rank, V = c->vocab_size;
    m->nstream = (c->arch == MD_ARCH_CADUCEUS && c->rcps) ? 2 : 1;
    m->width = d * m->nstream;
    m->ndir = (c->arch == MD_ARCH_CADUCEUS && c->bidirectional) ? 2 : 1;
    m->tied = m->ndir == 2 && c->bidir_weight_tie;
    md_weights_t *w = m->w;
    int ret = -2;
    float *tmp = NULL;

    /* embedding / head table */
    const md_param_t *E = md_weights_find(w, MD_P_EMBED, -1, -1);
    tmp = md_malloc((size_t)V * m->width * sizeof(float));
    if (!tmp) goto out;
    for (int v = 0; v < V; v++) {
        memcpy(tmp + (size_t)v * m->width, E->data + (size_t)v * d, d * sizeof(float));
        if (m->nstream == 2) {
            const float *ec = E->data + (size_t)c->complement_map[v] * d;
            for (int j = 0; j < d; j++) tmp[(size_t)v * m->width + d + j] = ec[d - 1 - j];
        }
    }
    if (!(m->ecat = upload_vec(m, tmp, (size_t)V * m->width))) goto out;
    if (!(m->head = upload_mat(m, tmp, V, m->width))) goto out;
    free(tmp);
    tmp = NULL;

    const md_param_t *nf = md_weights_find(w, MD_P_NORM_F, -1, -1);
    if (!(m->norm_f_w = upload_norm(m, nf->data, d))) goto out;
    if (!c->rms_norm && !(m->norm_f_b = upload_norm(m, md_weights_find(w, MD_P_NORM_F_B, -1, -1)->data, d))) goto out;

    m->layers = md_calloc(c->n_layer, sizeof *m->layers);
    if (!m->layers) goto out;
    size_t big = (size_t)2 * Di * d;
    tmp = md_malloc((big > (size_t)Di * N ? big : (size_t)Di * N) * sizeof(float));
    if (!tmp) goto out;
    for (int i = 0; i < c->n_layer; i++) {
        layer_w_t *L = &m->layers[i];
        if (!(L->norm_w = upload_norm(m, md_weights_find(w, MD_P_NORM, i, -1)->data, d))) goto out;
        if (!c->rms_norm && !(L->norm_b = upload_norm(m, md_weights_find(w, MD_P_NORM_B, i, -1)->data, d))) goto out;
        for (int k = 0; k < m->ndir; k++) {
            dir_w_t *D = &L->dir[k];
            const md_param_t *p;
            if (!(D->x_proj = upload_mat(m, md_weights_find(w, MD_P_X_PROJ, i, k)->data, R + 2 * N, Di))) goto out;
            if (!(D->dt_w = upload_mat(m, md_weights_find(w, MD_P_DT_W, i, k)->data, Di, R))) goto out;
            if (!(D->dt_b = upload_vec(m, md_weights_find(w, MD_P_DT_B, i, k)->data, Di))) goto out;
            if (!(D->D = upload_vec(m, md_weights_find(w, MD_P_D, i, k)->data, Di))) goto out;
            if (!(D->conv_w = upload_vec(m, md_weights_find(w, MD_P_CONV_W, i, k)->data, (size_t)Di * c->d_conv))) goto out;
            if (c->conv_bias && !(D->conv_b = upload_vec(m, md_weights_find(w, MD_P_CONV_B, i, k)->data, Di))) goto out;
            p = md_weights_find(w, MD_P_A_LOG, i, k);
            for (size_t j = 0; j < p->numel; j++) tmp[j] = -expf(p->data[j]);
            if (!(D->A = upload_vec(m, tmp, p->numel))) goto out;
        }
        for (int k = 0; k < m->ndir; k++) {
            const md_param_t *pin = md_weights_find(w, MD_P_IN_PROJ, i, k);
            const md_param_t *pout = md_weights_find(w, MD_P_OUT_PROJ, i, k);
            if (k == 1 && m->tied) {
                for (int s = 0; s < m->nstream; s++) {
                    L->in_proj[s][1] = L->in_proj[s][0];
                    L->out_proj[s][1] = L->out_proj[s][0];
                }
                continue;
            }
            if (!(L->in_proj[0][k] = upload_mat(m, pin->data, 2 * Di, d))) goto out;
            if (!(L->out_proj[0][k] = upload_mat(m, pout->data, d, Di))) goto out;
            if (m->nstream == 2) {
                for (int r = 0; r < 2 * Di; r++)
                    for (int j = 0; j < d; j++) tmp[(size_t)r * d + j] = pin->data[(size_t)r * d + d - 1 - j];
                if (!(L->in_proj[1][k] = upload_mat(m, tmp, 2 * Di, d))) goto out;
                for (int r = 0; r < d; r++)
                    memcpy(tmp + (size_t)r * Di, pout->data + (size_t)(d - 1 - r) * Di, Di * sizeof(float));
                if (!(L->out_proj[1][k] = upload_mat(m, tmp, d, Di))) goto out;
            }
        }
    }
    ret = 0;
out:
    free(tmp);
    return ret;
}

md_model_t *md_model_from_weights(md_weights_t *w, md_backend_t *be)
{
    md_model_t *m = md_calloc(1, sizeof *m);
    if (!m) { md_weights_free(w); return NULL; }
    m->cfg = w->cfg;
    m->w = w;
    m->be = be;
    if (setup(m) < 0) { md_model_free(m); return NULL; }
    return m;
}

md_model_t *md_model_load(const char *dir, md_backend_t *be)
{
    char cpath[4096], wpath[4096];
    md_config_t cfg;
    snprintf(cpath, sizeof cpath, "%s/config.json", dir);
    snprintf(wpath, sizeof wpath, "%s/model.safetensors", dir);
    if (md_config_load(&cfg, cpath) < 0) return NULL;
    md_weights_t *w = md_weights_alloc(&cfg);
    if (!w) return NULL;
    if (md_weights_load(w, wpath) < 0) { md_weights_free(w); return NULL; }
    char sha[65];
    if (md_sha256_file(wpath, sha) < 0) { md_weights_free(w); return NULL; }
    md_model_t *m = md_model_from_weights(w, be);
    if (m) memcpy(m->sha256, sha, sizeof sha);
    return m;
}

void md_model_free(md_model_t *m)
{
    if (!m) return;
    for (int i = 0; i < m->n_allocs; i++) m->be->free(m->be, m->allocs[i]);
    free(m->allocs);
    free(m->layers);
    md_weights_free(m->w);
    free(m);
}

const md_config_t *md_model_config(const md_model_t *m) { return &m->cfg; }
const md_weights_t *md_model_weights(const md_model_t *m) { return m->w; }
int md_model_width(const md_model_t *m) { return m->width; }
const char *md_model_sha256(const md_model_t *m) { return m->sha256; }

/* --- forward --------------------------------------------------------------------------------- */

typedef struct {
    int64_t n, chunk, nchunks;
    int fused;                       /* both directions of a layer in one scan call */
    size_t asz;                      /* bytes per activation element */
    int32_t *ids;                    /* [n] */
    uint8_t *starts;                 /* [n+1] */
    void *h;                         /* [n, W] act */
    float *res;                      /* [n, W] */
    void *u, *xz, *xc[2], *xdbl[2], *dt[2], *y, *tmp;   /* chunk buffers */
    float *conv_state[2], *ssm_state[2];
    void *logits;                    /* [chunk, V] f32 */
    int64_t out_rows;                /* rows per chunk that go to emit() at most */
    int64_t *sel;                    /* [nsel] selected rows (MD_ROWS_SELECTED) */
    void *gath;                      /* [out_rows, W] act: the selected rows of a chunk */
    float *gath_logits;              /* [out_rows, V] f32: their logits */
    int64_t *pool_beg, *pool_end;    /* [npool] pooling segments */
    float *pool_acc;                 /* [npool, W] f32 segment sums */
    float *host_hidden, *host_logits, *host_pool;   /* host (be->host_alloc) */
} fwd_t;

#define ACT(p, row, ld) ((void *)((char *)(p) + ((size_t)(row) * (ld)) * f->asz))
#define CHECK(x) do { if ((x) < 0) goto fail; } while (0)

/* Host buffers for downloads: pinned where the backend offers it (be->host_alloc). */
static void *host_buf_alloc(md_backend_t *be, size_t bytes)
{
    return be->host_alloc ? be->host_alloc(be, bytes) : md_malloc(bytes ? bytes : 1);
}

static void host_buf_free(md_backend_t *be, void *p)
{
    if (!p) return;
    if (be->host_free) be->host_free(be, p);
    else free(p);
}

static void fwd_free(md_model_t *m, fwd_t *f)
{
    md_backend_t *be = m->be;
    void *bufs[] = { f->ids, f->starts, f->h, f->res, f->u, f->xz, f->xc[0], f->fused ? f->xc[1] : NULL,
                     f->xdbl[0], f->fused ? f->xdbl[1] : NULL, f->dt[0], f->fused ? f->dt[1] : NULL, f->y, f->tmp,
                     f->conv_state[0], f->conv_state[1], f->ssm_state[0], f->ssm_state[1], f->logits,
                     f->sel, f->gath, f->gath_logits, f->pool_beg, f->pool_end, f->pool_acc };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) if (bufs[i]) be->free(be, bufs[i]);
    host_buf_free(be, f->host_hidden);
    host_buf_free(be, f->host_logits);
    host_buf_free(be, f->host_pool);
}

static int fwd_alloc(md_model_t *m, fwd_t *f, int64_t n, const md_forward_opts_t *o)
{
    md_backend_t *be = m->be;
    const md_config_t *c = &m->cfg;
    const int W = m->width, Di = c->d_inner, N = c->d_state, R = c->dt_rank, K = c->d_conv;
    f->n = n;
    f->chunk = be->chunk > 0 ? be->chunk : 65536;
    if (f->chunk > n) f->chunk = n;
    f->nchunks = (n + f->chunk - 1) / f->chunk;
    f->asz = md_dtype_size(be->act_dtype);
    const size_t ch = f->chunk, a = f->asz;
#define ALLOC(p, bytes) do { if (!((p) = be->alloc(be, (bytes)))) return -2; } while (0)
    ALLOC(f->ids, n * sizeof(int32_t));
    ALLOC(f->starts, n + 1);
    ALLOC(f->h, (size_t)n * W * a);
    ALLOC(f->res, (size_t)n * W * sizeof(float));
    ALLOC(f->u, ch * W * a);
    ALLOC(f->xz, ch * 2 * Di * a);
    ALLOC(f->y, ch * Di * a);
    if (c->bidir_strategy == MD_BIDIR_EW_MULTIPLY) ALLOC(f->tmp, ch * c->d_model * a);
    /* Both directions' buffers only when they run together (one chunk, tied, "add"). */
    f->fused = f->nchunks == 1 && m->ndir == 2 && m->tied && c->bidir_strategy == MD_BIDIR_ADD;
    for (int k = 0; k < m->ndir; k++) {
        if (k == 0 || f->fused) {
            ALLOC(f->xc[k], ch * Di * a);
            ALLOC(f->xdbl[k], ch * (R + 2 * N) * a);
            ALLOC(f->dt[k], ch * Di * a);
        } else {
            f->xc[k] = f->xc[0];
            f->xdbl[k] = f->xdbl[0];
            f->dt[k] = f->dt[0];
        }
        ALLOC(f->conv_state[k], (size_t)(K > 1 ? K - 1 : 1) * Di * sizeof(float));
        ALLOC(f->ssm_state[k], (size_t)Di * N * sizeof(float));
    }
    /* rows of one chunk that go to emit(): all, none, or the chunk's selected rows */
    f->out_rows = o->rows == MD_ROWS_ALL ? (int64_t)ch : 0;
    if (o->rows == MD_ROWS_SELECTED && o->nsel > 0) {
        int64_t most = 0;
        for (int64_t i = 0, j = 0; i < o->nsel; i = j) {
            int64_t cj = o->sel[i] / f->chunk;
            for (j = i; j < o->nsel && o->sel[j] / f->chunk == cj; j++) {}
            if (j - i > most) most = j - i;
        }
        f->out_rows = most;
        ALLOC(f->sel, (size_t)o->nsel * sizeof(int64_t));
        ALLOC(f->gath, (size_t)most * W * a);
        if (o->want_logits && o->layer < 0) ALLOC(f->gath_logits, (size_t)most * c->vocab_size * sizeof(float));
        if (be->upload(be, f->sel, o->sel, (size_t)o->nsel * sizeof(int64_t)) < 0) return -2;
    }
    if (f->out_rows > 0) {
        if (o->want_logits && o->layer < 0) ALLOC(f->logits, ch * c->vocab_size * sizeof(float));
        if (!(f->host_hidden = host_buf_alloc(be, (size_t)f->out_rows * W * sizeof(float)))) return -2;
        if (o->want_logits && o->layer < 0 &&
            !(f->host_logits = host_buf_alloc(be, (size_t)f->out_rows * c->vocab_size * sizeof(float))))
            return -2;
    }
    if (o->npool > 0) {
        const size_t nb = (size_t)o->npool * sizeof(int64_t), accb = (size_t)o->npool * W * sizeof(float);
        ALLOC(f->pool_beg, nb);
        ALLOC(f->pool_end, nb);
        ALLOC(f->pool_acc, accb);
        if (be->upload(be, f->pool_beg, o->pool_beg, nb) < 0 || be->upload(be, f->pool_end, o->pool_end, nb) < 0 ||
            be->zero(be, f->pool_acc, accb) < 0)
            return -2;
        if (!(f->host_pool = host_buf_alloc(be, accb))) return -2;
    }
#undef ALLOC
    return 0;
}

/* conv + x_proj + dt_proj for direction k of layer L on a chunk [r0, r0+nr) whose in_proj output
 * is in f->xz; fills the scan arguments. */
static int dir_prep(md_model_t *m, fwd_t *f, const layer_w_t *L, int k, int reverse, int64_t r0, int64_t nr,
                    md_scan_dir_t *sd)
{
    md_backend_t *be = m->be;
    const md_config_t *c = &m->cfg;
    const int Di = c->d_inner, N = c->d_state, R = c->dt_rank, XD = R + 2 * N;
    const dir_w_t *D = &L->dir[k];
    CHECK(be->conv_silu(be, nr, Di, c->d_conv, f->xz, 2 * Di, D->conv_w, D->conv_b, f->xc[k], f->conv_state[k],
                        reverse, f->starts + r0));
    CHECK(be->gemm(be, nr, XD, Di, f->xc[k], Di, D->x_proj, f->xdbl[k], XD, 0, 0));
    CHECK(be->gemm(be, nr, Di, R, f->xdbl[k], XD, D->dt_w, f->dt[k], Di, 0, 0));
    memset(sd, 0, sizeof *sd);
    sd->x = f->xc[k]; sd->ldx = Di;
    sd->dt = f->dt[k]; sd->lddt = Di;
    sd->B = (char *)f->xdbl[k] + (size_t)R * f->asz;
    sd->C = (char *)f->xdbl[k] + (size_t)(R + N) * f->asz;
    sd->ldbc = XD;
    sd->z = (char *)f->xz + (size_t)Di * f->asz; sd->ldz = 2 * Di;
    sd->A = D->A; sd->D = D->D; sd->dt_bias = D->dt_b;
    sd->state = f->ssm_state[k];
    sd->reverse = reverse;
    return 0;
fail:
    return -2;
}

static int run_layer(md_model_t *m, fwd_t *f, int li)
{
    md_backend_t *be = m->be;
    const md_config_t *c = &m->cfg;
    const layer_w_t *L = &m->layers[li];
    const int W = m->width, d = c->d_model, Di = c->d_inner, K = c->d_conv, N = c->d_state;
    const int swap = m->nstream == 2 && c->fused_add_norm;
    const int single = f->nchunks == 1;

    /* Residual update (res = swap?(h + res)), fused with a norm: for one chunk here, once; over
     * several chunks at each chunk's first visit (stream 0, first direction), since the norm is
     * recomputed per chunk anyway and h of a chunk is free once its residual is updated. */
    if (single)
        CHECK(be->add_norm(be, f->n, W, d, f->h, li == 0 ? NULL : f->res, f->res, f->u, L->norm_w, L->norm_b,
                           c->norm_eps, swap, c->rms_norm));

    for (int s = 0; s < m->nstream; s++) {
        /* Scan direction of parameter set k in stream s: fwd params forward in stream 0, reverse in stream 1. */
        const int rev_of[2] = { s == 1, s == 0 };
        if (f->fused) {
            const int64_t nr = f->n;
            md_scan_dir_t sd[2];
            for (int k = 0; k < 2; k++) {
                CHECK(be->zero(be, f->conv_state[k], (size_t)(K > 1 ? K - 1 : 1) * Di * sizeof(float)));
                CHECK(be->zero(be, f->ssm_state[k], (size_t)Di * N * sizeof(float)));
            }
            CHECK(be->gemm(be, nr, 2 * Di, d, (char *)f->u + (size_t)s * d * f->asz, W, L->in_proj[s][0], f->xz,
                           2 * Di, 0, 0));
            for (int k = 0; k < 2; k++) CHECK(dir_prep(m, f, L, k, rev_of[k], 0, nr, &sd[k]));
            CHECK(be->scan(be, nr, Di, N, 2, sd, f->y, Di, 0, f->starts));
            CHECK(be->gemm(be, nr, d, Di, f->y, Di, L->out_proj[s][0], (char *)f->h + (size_t)s * d * f->asz, W,
                           0, 0));
            continue;
        }
        for (int k = 0; k < m->ndir; k++) {
            const int reverse = rev_of[k];
            CHECK(be->zero(be, f->conv_state[k], (size_t)(K > 1 ? K - 1 : 1) * Di * sizeof(float)));
            CHECK(be->zero(be, f->ssm_state[k], (size_t)Di * N * sizeof(float)));
            for (int64_t cj = 0; cj < f->nchunks; cj++) {
                int64_t ci = reverse ? f->nchunks - 1 - cj : cj;
                int64_t r0 = ci * f->chunk, nr = f->n - r0 < f->chunk ? f->n - r0 : f->chunk;
                if (!single && s == 0 && k == 0)
                    CHECK(be->add_norm(be, nr, W, d, ACT(f->h, r0, W), li == 0 ? NULL : f->res + r0 * W,
                                       f->res + r0 * W, f->u, L->norm_w, L->norm_b, c->norm_eps, swap, c->rms_norm));
                else if (!single)
                    CHECK(be->add_norm(be, nr, W, d, NULL, f->res + r0 * W, NULL, f->u, L->norm_w, L->norm_b,
                                       c->norm_eps, 0, c->rms_norm));
                md_scan_dir_t sd;
                CHECK(be->gemm(be, nr, 2 * Di, d, (char *)f->u + (size_t)s * d * f->asz, W, L->in_proj[s][k],
                               f->xz, 2 * Di, 0, 0));
                CHECK(dir_prep(m, f, L, k, reverse, r0, nr, &sd));
                CHECK(be->scan(be, nr, Di, N, 1, &sd, f->y, Di, 0, f->starts + r0));
                void *hc = (char *)ACT(f->h, r0, W) + (size_t)s * d * f->asz;
                if (k == 0) {
                    CHECK(be->gemm(be, nr, d, Di, f->y, Di, L->out_proj[s][k], hc, W, 0, 0));
                } else if (c->bidir_strategy == MD_BIDIR_ADD) {
                    CHECK(be->gemm(be, nr, d, Di, f->y, Di, L->out_proj[s][k], hc, W, 1, 0));
                } else {
                    CHECK(be->gemm(be, nr, d, Di, f->y, Di, L->out_proj[s][k], f->tmp, d, 0, 0));
                    CHECK(be->mul(be, nr, d, hc, W, f->tmp, d));
                }
            }
        }
    }
    return 0;
fail:
    return -2;
}

/* Checks the output options against a batch of n rows (logged). */
static int check_out_opts(const md_backend_t *be, int64_t n, const md_forward_opts_t *o)
{
    if (o->rows != MD_ROWS_ALL && o->rows != MD_ROWS_NONE && o->rows != MD_ROWS_SELECTED) {
        md_error("unknown row selection %d", (int)o->rows);
        return -2;
    }
    if (o->rows == MD_ROWS_SELECTED) {
        if (o->nsel < 0 || (o->nsel > 0 && !o->sel)) { md_error("selected rows: %lld rows but no list", (long long)o->nsel); return -2; }
        for (int64_t i = 0; i < o->nsel; i++)
            if (o->sel[i] < 0 || o->sel[i] >= n || (i > 0 && o->sel[i] <= o->sel[i - 1])) {
                md_error("selected row %lld (%lld) is outside the batch of %lld rows or not increasing", (long long)i,
                         (long long)o->sel[i], (long long)n);
                return -2;
            }
        if (o->nsel > 0 && !be->gather_rows) { md_error("the %s backend cannot gather rows", be->name); return -2; }
    }
    if (o->npool < 0) { md_error("negative number of pooling segments (%d)", o->npool); return -2; }
    if (o->npool > 0) {
        if (!o->pool_beg || !o->pool_end || !o->emit_pool) { md_error("pooling segments without bounds or callback"); return -2; }
        if (!be->pool_sum) { md_error("the %s backend cannot pool", be->name); return -2; }
        for (int i = 0; i < o->npool; i++) {
            int64_t b = o->pool_beg[i], e = o->pool_end[i];
            if (b < 0 || e > n || b >= e || (i > 0 && (b < o->pool_beg[i - 1] || e < o->pool_end[i - 1]))) {
                md_error("pooling segment %d [%lld, %lld) is empty, outside the batch of %lld rows, or out of order", i,
                         (long long)b, (long long)e, (long long)n);
                return -2;
            }
        }
    }
    return 0;
}

/* The outputs of chunk [r0, r0+nr): src act [nr, W] holds its output hidden rows (final normed
 * state or the asked layer's). Pooling sums, then the rows emit() gets. *sel_i and *pool_i walk
 * the selected rows and the segments (both in row order). */
static int chunk_outputs(md_model_t *m, fwd_t *f, const md_forward_opts_t *o, int64_t r0, int64_t nr, const void *src,
                         int64_t *sel_i, int *pool_i, md_emit_fn emit, void *ud)
{
    md_backend_t *be = m->be;
    const int W = m->width, V = m->cfg.vocab_size, logits = o->want_logits && o->layer < 0;
    if (o->npool > 0) {
        /* segments ending before the chunk are done; those from *pool_i beginning in it take a piece */
        while (*pool_i < o->npool && o->pool_end[*pool_i] <= r0) (*pool_i)++;
        int hi = *pool_i;
        while (hi < o->npool && o->pool_beg[hi] < r0 + nr) hi++;
        if (hi > *pool_i)
            CHECK(be->pool_sum(be, nr, W, src, W, r0, hi - *pool_i, f->pool_beg + *pool_i, f->pool_end + *pool_i,
                               f->pool_acc + (size_t)*pool_i * W));
    }
    if (o->rows == MD_ROWS_ALL) {
        CHECK(be->download_act(be, f->host_hidden, src, nr * W));
        if (logits) {
            CHECK(be->gemm(be, nr, V, W, src, W, m->head, f->logits, V, 0, 1));
            CHECK(be->download(be, f->host_logits, f->logits, (size_t)nr * V * sizeof(float)));
        }
        CHECK(be->sync(be));
        if (emit && emit(ud, r0, nr, f->host_hidden, logits ? f->host_logits : NULL) < 0) goto fail;
    } else if (o->rows == MD_ROWS_SELECTED) {
        int64_t a = *sel_i, b = a;
        while (b < o->nsel && o->sel[b] < r0 + nr) b++;
        *sel_i = b;
        if (b == a) return 0;
        const int64_t k = b - a;
        CHECK(be->gather_rows(be, k, W, src, W, r0, f->sel + a, f->gath, 0));
        CHECK(be->download_act(be, f->host_hidden, f->gath, k * W));
        if (logits) {
            /* The head GEMM runs on the whole chunk, as for MD_ROWS_ALL, and the selected rows'
             * logits are gathered after it: BLAS results for a row depend on the call's row
             * count and the row's place in it, so a GEMM on the gathered rows would make a
             * row's logits depend on which other rows are selected (scores would change with the
             * batching of the input). With V columns this GEMM is small beside the layers; the
             * saving is in the download. */
            CHECK(be->gemm(be, nr, V, W, src, W, m->head, f->logits, V, 0, 1));
            CHECK(be->gather_rows(be, k, V, f->logits, V, r0, f->sel + a, f->gath_logits, 1));
            CHECK(be->download(be, f->host_logits, f->gath_logits, (size_t)k * V * sizeof(float)));
        }
        CHECK(be->sync(be));
        for (int64_t i = 0, j; i < k && emit; i = j) {   /* one call per run of consecutive rows */
            for (j = i + 1; j < k && o->sel[a + j] == o->sel[a + j - 1] + 1; j++) {}
            if (emit(ud, o->sel[a + i], j - i, f->host_hidden + (size_t)i * W,
                     logits ? f->host_logits + (size_t)i * V : NULL) < 0)
                goto fail;
        }
    }
    return 0;
fail:
    return -2;
}

int md_model_forward(md_model_t *m, const int32_t *ids, int64_t n, const int64_t *seq_off, int nseq,
                     const md_forward_opts_t *opts, md_emit_fn emit, void *ud)
{
    md_backend_t *be = m->be;
    const md_config_t *c = &m->cfg;
    const int W = m->width, V = c->vocab_size;
    md_forward_opts_t defo = { .layer = -1, .want_logits = 0 };
    if (!opts) opts = &defo;
    if (n <= 0) { md_error("empty input (0 tokens)"); return -2; }
    if (opts->layer < -1 || opts->layer >= c->n_layer) {
        md_error("layer %d out of range (0..%d, or -1 for the final hidden state)", opts->layer, c->n_layer - 1);
        return -2;
    }
    if (check_out_opts(be, n, opts) < 0) return -2;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) { md_error("token id %d at position %lld outside the vocabulary", ids[i], (long long)i); return -2; }
    fwd_t F;
    memset(&F, 0, sizeof F);
    fwd_t *f = &F;
    int ret = -2;
    uint8_t *starts = md_calloc(n + 1, 1);
    if (!starts) return -2;
    if (nseq <= 0 || !seq_off) starts[0] = 1;
    else {
        if (seq_off[0] != 0 || seq_off[nseq] != n) { md_error("sequence offsets do not cover the batch"); free(starts); return -2; }
        for (int i = 0; i < nseq; i++) {
            if (seq_off[i + 1] <= seq_off[i]) { md_error("sequence %d is empty", i); free(starts); return -2; }
            starts[seq_off[i]] = 1;
        }
    }
    starts[n] = 1;
    CHECK(fwd_alloc(m, f, n, opts));
    CHECK(be->upload(be, f->ids, ids, n * sizeof(int32_t)));
    CHECK(be->upload(be, f->starts, starts, n + 1));
    CHECK(be->embed(be, n, W, f->ids, m->ecat, f->h));
    int nl = opts->layer >= 0 ? opts->layer : c->n_layer;
    for (int li = 0; li < nl; li++) CHECK(run_layer(m, f, li));

    int64_t sel_i = 0;
    int pool_i = 0;
    for (int64_t ci = 0; ci < f->nchunks; ci++) {
        int64_t r0 = ci * f->chunk, nr = f->n - r0 < f->chunk ? f->n - r0 : f->chunk;
        const void *src;
        if (opts->layer >= 0) {
            src = ACT(f->h, r0, W);
        } else {
            CHECK(be->add_norm(be, nr, W, c->d_model, ACT(f->h, r0, W), f->res + r0 * W, NULL, f->u, m->norm_f_w,
                               m->norm_f_b, c->norm_eps, 0, c->rms_norm));
            src = f->u;
        }
        CHECK(chunk_outputs(m, f, opts, r0, nr, src, &sel_i, &pool_i, emit, ud));
    }
    if (opts->npool > 0) {
        CHECK(be->download(be, f->host_pool, f->pool_acc, (size_t)opts->npool * W * sizeof(float)));
        CHECK(be->sync(be));
        for (int i = 0; i < opts->npool; i++) {
            const float len = (float)(opts->pool_end[i] - opts->pool_beg[i]);
            float *row = f->host_pool + (size_t)i * W;
            for (int j = 0; j < W; j++) row[j] /= len;
        }
        if (opts->emit_pool(ud, opts->npool, f->host_pool) < 0) goto fail;
    }
    ret = 0;
fail:
    fwd_free(m, f);
    free(starts);
    return ret;
}
