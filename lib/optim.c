/* optim.c: the optimizer step of the training plan and its schedule (model-spec 4.6): global
 * gradient norm over every parameter, clipping as torch.nn.utils.clip_grad_norm_
 * (coef = clip / (norm + 1e-6), at most 1), AdamW per parameter tensor with weight decay 0 for
 * the no_decay entries of the parameter table (embedding, biases, A_log, D), then the derived
 * weights are rebuilt. Schedule: linear warmup from warmup_init to lr, then cosine to lr_min
 * over the remaining updates (timm cosine with a warmup prefix). */
#include <math.h>

#include "md.h"
#include "train.h"

void md_optim_init(md_optim_t *o)
{
    o->lr = 8e-3;
    o->lr_min = 1e-4;
    o->warmup_init = 1e-6;
    o->warmup = 0;
    o->total = 0;
    o->beta1 = 0.9;
    o->beta2 = 0.95;
    o->eps = 1e-8;
    o->weight_decay = 0.1;
    o->clip = 1.0;
}

double md_lr_at(const md_optim_t *o, int64_t step)
{
    if (step < o->warmup) return o->warmup_init + (o->lr - o->warmup_init) * (double)step / (double)o->warmup;
    int64_t span = o->total - o->warmup;
    if (span <= 0) return o->lr;
    double f = (double)(step - o->warmup) / (double)span;
    if (f > 1) f = 1;
    return o->lr_min + 0.5 * (o->lr - o->lr_min) * (1.0 + cos(M_PI * f));
}

int md_train_update(md_train_t *t, const md_optim_t *o, int64_t step, double *gnorm)
{
    md_backend_t *be = md_train_backend(t);
    const md_train_ops_t *ops = md_train_ops(t);
    const md_weights_t *tab = md_train_table(t);
    float *P, *G, *M, *V;
    md_train_slabs(t, &P, &G, &M, &V);
    double *acc = be->alloc(be, sizeof(double));
    if (!acc) return -2;
    double ss = 0;
    int ret = -2;
    if (be->zero(be, acc, sizeof(double)) < 0 || ops->sumsq(be, (int64_t)tab->numel, G, acc) < 0 ||
        be->download(be, &ss, acc, sizeof(double)) < 0)
        goto out;
    double norm = sqrt(ss);
    if (gnorm) *gnorm = norm;
    if (!isfinite(norm)) { ret = -1; goto out; }
    double gscale = 1.0;
    if (o->clip > 0) {
        double coef = o->clip / (norm + 1e-6);
        if (coef < 1.0) gscale = coef;
    }
    md_adamw_t hp = { .lr = md_lr_at(o, step), .beta1 = o->beta1, .beta2 = o->beta2, .eps = o->eps,
                      .gscale = gscale, .step = step + 1 };
    for (int i = 0; i < tab->n; i++) {
        const md_param_t *p = &tab->p[i];
        size_t off = p->data - tab->slab;
        hp.weight_decay = p->no_decay ? 0.0 : o->weight_decay;
        if (ops->adamw(be, (int64_t)p->numel, P + off, G + off, M + off, V + off, &hp) < 0) goto out;
    }
    ret = md_train_refresh(t);
out:
    be->free(be, acc);
    return ret;
}
