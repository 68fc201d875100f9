/* adamw.c — AdamW, gradient clipping and the learning-rate schedule (formulas in adamw.h). */
#include "train/adamw.h"

#include <math.h>

adamw_params adamw_default_params(void) {
    adamw_params p = {0};
    p.lr_max = 1e-3f;
    p.lr_min = 1e-4f;
    p.warmup = 0;
    p.steps = 1;
    p.beta1 = 0.9f;
    p.beta2 = 0.95f;
    p.eps = 1e-8f;
    p.weight_decay = 0.1f;
    p.clip = 1.0f;
    return p;
}

float lr_at(const adamw_params *p, int step) {
    if (step < p->warmup) return p->lr_max * (float)(step + 1) / (float)p->warmup;
    if (p->steps <= p->warmup) return p->lr_max;
    double frac = (double)(step - p->warmup) / (double)(p->steps - p->warmup);
    if (frac > 1) frac = 1;
    return (float)(p->lr_min + 0.5 * (p->lr_max - p->lr_min) * (1 + cos(M_PI * frac)));
}

float grad_norm(const float *g, size_t n) {
    /* fixed-size blocks summed in order: the same result for any thread count */
    const size_t blk = 1 << 16, nb = (n + blk - 1) / blk;
    double total = 0;
    for (size_t b = 0; b < nb; b++) {
        const size_t e = (b + 1) * blk < n ? (b + 1) * blk : n;
        double s = 0;
        for (size_t i = b * blk; i < e; i++) s += (double)g[i] * g[i];
        total += s;
    }
    return (float)sqrt(total);
}

float adamw_step(const adamw_params *p, int t, float lr, const param_list *pl, float *params,
                 float *grads, float *m, float *v, int n_threads) {
    const float norm = grad_norm(grads, pl->n_floats);
    const float gs = p->clip > 0 && norm > p->clip ? p->clip / norm : 1.0f;
    const float b1 = p->beta1, b2 = p->beta2;
    const float c1 = 1.0f / (1.0f - powf(b1, (float)t)), c2 = 1.0f / (1.0f - powf(b2, (float)t));
    for (int ti = 0; ti < pl->n; ti++) {
        const param_desc *pt = &pl->p[ti];
        if (pt->frozen) continue;
        const float wd = pt->decay ? p->weight_decay : 0.0f;
        const float lr_t = lr * pt->lr_scale;
        float *w = params + pt->offset, *mm = m + pt->offset, *vv = v + pt->offset;
        const float *g = grads + pt->offset;
        const long long nt = (long long)pt->n;
#pragma omp parallel for schedule(static) num_threads(n_threads)
        for (long long i = 0; i < nt; i++) {
            const float gi = g[i] * gs;
            mm[i] = b1 * mm[i] + (1 - b1) * gi;
            vv[i] = b2 * vv[i] + (1 - b2) * gi * gi;
            const float mh = mm[i] * c1, vh = vv[i] * c2;
            w[i] -= lr_t * (mh / (sqrtf(vh) + p->eps) + wd * w[i]);
        }
        if (pt->hi > pt->lo) /* a box the tensor must stay in (dijiang's γ in (0, 1)) */
            for (long long i = 0; i < nt; i++)
                w[i] = w[i] < pt->lo ? pt->lo : w[i] > pt->hi ? pt->hi : w[i];
    }
    return norm;
}
