/* train_model.c — forward and backward of the block loop over a micro-batch (see train_model.h).
 * The layer recipe mirrors src/model/session.c: embed; per layer x += mixer(rmsnorm(x)),
 * x += ffn(rmsnorm(x)); rmsnorm; head. Each step is an op of nn/ops.h or a part's forward.
 *
 * What backward needs is kept from the forward pass, per layer: the layer input, both normalised
 * inputs and their 1/rms, the residual after the mixer, and each part's own activations. The output
 * head runs in chunks of HEAD_ROWS rows so that the (rows × vocab) logits never exist for the whole
 * batch at once.
 */
#include "train/train_model.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mem.h"
#include "model/model.h"
#include "nn/ops.h"
#include "tensor/kernels.h"

#define HEAD_ROWS 512

typedef struct {        /* activations kept for backward, per layer */
    float *x;           /* (N, C) the layer input (residual stream) */
    float *xn1, *rstd1; /* (N, C), (N) mixer norm */
    float *h;           /* (N, C) residual after the mixer */
    float *xn2, *rstd2; /* FFN norm */
    float *mixer, *ffn; /* the parts' own */
} layer_acts;

struct train_model {
    hparams hp;
    const arch_row *arch;
    int B, T, n_threads;
    int loss_last;        /* the loss covers the last loss_last targets of each sequence (T: all) */
    const float *teacher; /* (B·T, V) a teacher's logits: train_model_step's loss is the KL */
    msrnn_model *src;     /* the file the weights came from (metadata for saving) */
    const param_list *pl;
    float *params, *grads;
    const float **pw; /* (pl->n) each tensor's parameters */
    float **pg;       /* (pl->n) its gradients */
    /* activations */
    float *act_slab;
    size_t act_floats;
    layer_acts *la;
    float *xf, *xnf, *rstdf; /* final residual, its norm, 1/rms */
    int32_t *inp, *tgt;      /* (N) */
    float *losses;           /* (N) */
    float *logits;           /* (HEAD_ROWS, V) */
    float *mixer_shared, *ffn_shared, *part_scratch;
    float *dx, *dxn; /* (N, C) gradient of the residual stream, of a norm's output */
};

void train_model_free(train_model *m) {
    if (!m) return;
    free(m->params);
    free(m->grads);
    free(m->pw);
    free(m->pg);
    free(m->la);
    free(m->act_slab);
    free(m->inp);
    free(m->tgt);
    msrnn_model_close(m->src);
    free(m);
}

static msrnn_status fail_free(train_model *m, msrnn_status st) {
    train_model_free(m);
    return st;
}

msrnn_status train_model_open(const char *path, int B, int T, int n_threads, uint64_t max_memory,
                              train_model **out) {
    *out = NULL;
    if (B <= 0 || T <= 0 || B > (1 << 16) || T > (1 << 20) || (int64_t)B * T > (1 << 24))
        return status_fail(MSRNN_ERR_INVALID, "train: batch %d × context %d is out of range", B, T);
    train_model *m = calloc(1, sizeof *m);
    if (!m) return status_fail(MSRNN_ERR_NOMEM, "train: out of memory");
    msrnn_status st = msrnn_model_open(path, &m->src);
    if (st != MSRNN_OK) {
        free(m);
        return st;
    }
    m->hp = m->src->hp;
    m->arch = m->src->arch;
    m->pl = &m->src->params;
    m->B = B, m->T = T, m->loss_last = T;
    m->n_threads = n_threads > 0 ? n_threads : omp_get_num_procs();
    const hparams *hp = &m->hp;
    if (T > hp->info.n_ctx)
        return fail_free(m,
                         status_fail(MSRNN_ERR_INVALID, "train: context %d exceeds the model's %d",
                                     T, hp->info.n_ctx));
    const int C = hp->info.dim, V = hp->info.n_vocab, L = hp->info.n_layers;
    const size_t N = (size_t)B * T;
    const param_list *pl = m->pl;
    const part_kind *mixer = m->arch->mixer, *ffn = m->arch->ffn;

    /* the plan, checked before anything large is allocated: activations in one slab */
    const size_t mixer_act = mixer->train_act_floats(hp, B, T),
                 ffn_act = ffn->train_act_floats(hp, B, T);
    const size_t per_layer = N * (4 * (size_t)C + 2) + mixer_act + ffn_act;
    size_t scratch = mixer->train_scratch_floats(hp, B, T, m->n_threads);
    if (ffn->train_scratch_floats(hp, B, T, m->n_threads) > scratch)
        scratch = ffn->train_scratch_floats(hp, B, T, m->n_threads);
    const size_t mixer_shared = mixer->train_shared_floats(hp, B, T),
                 ffn_shared = ffn->train_shared_floats(hp, B, T);
    m->act_floats = per_layer * L + N * (2 * (size_t)C + 2) + (size_t)HEAD_ROWS * V + mixer_shared +
                    ffn_shared + scratch + 2 * N * C;
    const uint64_t np = pl->n_floats, act = m->act_floats;
    /* parameters, gradients and (the trainer's) two AdamW moments; activations; ids; windows */
    const uint64_t need = (4 * np + act) * 4 + 2 * (uint64_t)N * 4 + (uint64_t)B * (T + 1) * 4;
    char what[256];
    snprintf(what, sizeof what,
             "train: the plan (%llu parameters: %llu bytes of parameters, gradients and AdamW "
             "moments; %llu bytes of activations for --batch %d x --ctx %d)",
             (unsigned long long)np, (unsigned long long)(16 * np), (unsigned long long)(act * 4),
             B, T);
    st = mem_check(need, max_memory, what,
                   "--batch or --ctx, or train a smaller model (--dim, --layers, --ffn)");
    if (st != MSRNN_OK) return fail_free(m, st);

    /* parameters, in file order */
    m->params = malloc(pl->n_floats * sizeof(float));
    m->grads = calloc(pl->n_floats, sizeof(float));
    m->pw = calloc((size_t)pl->n, sizeof *m->pw);
    m->pg = calloc((size_t)pl->n, sizeof *m->pg);
    m->la = calloc((size_t)L, sizeof *m->la);
    if (!m->params || !m->grads || !m->pw || !m->pg || !m->la)
        return fail_free(m, status_fail(MSRNN_ERR_NOMEM, "train: out of memory for %zu parameters",
                                        pl->n_floats));
    for (int i = 0; i < pl->n; i++) {
        const param_desc *d = &pl->p[i];
        float *p = m->params + d->offset;
        m->pw[i] = p;
        m->pg[i] = m->grads + d->offset;
        const weight *w = &m->src->w[i];
        if (d->matrix) /* weights to f32 */
            for (int r = 0; r < w->out; r++) weight_row(w, r, p + (size_t)r * w->in);
        else
            memcpy(p, w->data, d->n * sizeof(float));
        for (size_t k = 0; k < d->n; k++) /* once, at open: NaN weights give a NaN loss */
            if (!isfinite(p[k]))
                return fail_free(m, status_fail(MSRNN_ERR_FORMAT,
                                                "%s: tensor '%s' has a non-finite value (%g) at "
                                                "element %zu",
                                                path, d->name, p[k], k));
    }

    /* activations: one slab */
    m->act_slab = malloc(m->act_floats * sizeof(float));
    m->inp = malloc(N * sizeof(int32_t));
    m->tgt = malloc(N * sizeof(int32_t));
    if (!m->act_slab || !m->inp || !m->tgt) {
        const double mb = m->act_floats * 4.0 / 1e6;
        return fail_free(
            m, status_fail(MSRNN_ERR_NOMEM, "train: out of memory for %.1f MB of activations", mb));
    }
    float *p = m->act_slab;
#define TAKE(ptr, n) (ptr = p, p += (n))
    for (int l = 0; l < L; l++) {
        layer_acts *a = &m->la[l];
        TAKE(a->x, N * C);
        TAKE(a->xn1, N * C);
        TAKE(a->rstd1, N);
        TAKE(a->h, N * C);
        TAKE(a->xn2, N * C);
        TAKE(a->rstd2, N);
        TAKE(a->mixer, mixer_act);
        TAKE(a->ffn, ffn_act);
    }
    TAKE(m->xf, N * C);
    TAKE(m->xnf, N * C);
    TAKE(m->rstdf, N);
    TAKE(m->losses, N);
    TAKE(m->logits, (size_t)HEAD_ROWS * V);
    TAKE(m->mixer_shared, mixer_shared);
    TAKE(m->ffn_shared, ffn_shared);
    TAKE(m->part_scratch, scratch);
    TAKE(m->dx, N * C);
    TAKE(m->dxn, N * C);
#undef TAKE
    mixer->train_init(hp, B, T, m->mixer_shared);
    ffn->train_init(hp, B, T, m->ffn_shared);
    *out = m;
    return MSRNN_OK;
}

const hparams *train_model_hparams(const train_model *m) { return &m->hp; }
const struct msrnn_model *train_model_source(const train_model *m) { return m->src; }
int train_model_threads(const train_model *m) { return m->n_threads; }
const param_list *train_model_params_list(const train_model *m) { return m->pl; }
size_t train_model_n_params(const train_model *m) { return m->pl->n_floats; }
void train_model_set_own_lr_scale(train_model *m, float s) {
    param_list *pl = &m->src->params; /* m->pl, which the model owns */
    for (int i = 0; i < pl->n; i++)
        if (pl->p[i].lr_scale != 1.0f) pl->p[i].lr_scale = s;
}
msrnn_status train_model_unfreeze(train_model *m, const char *list) {
    param_list *pl = &m->src->params; /* m->pl, which the model owns */
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        int found = 0;
        for (int i = 0; i < pl->n; i++) {
            const char *nm = pl->p[i].name, *suf = nm;
            if (!strncmp(nm, "blk.", 4) && strchr(nm + 4, '.')) /* blk.L.SUFFIX */
                suf = strchr(nm + 4, '.') + 1;
            if (strlen(suf) != len || memcmp(suf, p, len)) continue;
            if (pl->p[i].frozen == PARAM_FIXED)
                return status_fail(MSRNN_ERR_INVALID,
                                   "train: --unfreeze %.*s: %s is fixed by its method (no gradient "
                                   "is computed for it)",
                                   (int)len, p, nm);
            pl->p[i].frozen = PARAM_TRAINED;
            found++;
        }
        if (!found) {
            char opt[256] = "";
            size_t o = 0;
            for (int i = 0; i < pl->n && o < sizeof opt - 64; i++)
                if (pl->p[i].frozen == PARAM_OPTIONAL && !strncmp(pl->p[i].name, "blk.0.", 6))
                    o += (size_t)snprintf(opt + o, sizeof opt - o, "%s%s", o ? ", " : "",
                                          pl->p[i].name + 6);
            return status_fail(MSRNN_ERR_INVALID,
                               "train: --unfreeze %.*s: no tensor blk.L.%.*s in this model (it can "
                               "unfreeze: %s)",
                               (int)len, p, (int)len, p, o ? opt : "nothing");
        }
        p += len + (e != NULL);
    }
    return MSRNN_OK;
}
void train_model_set_loss_last(train_model *m, int n) {
    m->loss_last = n > 0 && n < m->T ? n : m->T;
}
int train_model_loss_last(const train_model *m) { return m->loss_last; }
void train_model_set_teacher(train_model *m, const float *logits) { m->teacher = logits; }
float *train_model_params(train_model *m) { return m->params; }
float *train_model_grads(train_model *m) { return m->grads; }
size_t train_model_bytes(const train_model *m) {
    return (2 * m->pl->n_floats + m->act_floats) * sizeof(float) + 2 * (size_t)m->B * m->T * 4;
}
void train_model_zero_grad(train_model *m) { memset(m->grads, 0, m->pl->n_floats * sizeof(float)); }

static msrnn_status split_tokens(train_model *m, const int32_t *tokens) {
    const int T = m->T, V = m->hp.info.n_vocab;
    for (int b = 0; b < m->B; b++)
        for (int t = 0; t <= T; t++) {
            const int32_t id = tokens[(size_t)b * (T + 1) + t];
            if (id < 0 || id >= V)
                return status_fail(MSRNN_ERR_INVALID,
                                   "train: token %d at row %d, position %d is "
                                   "outside the vocabulary of %d",
                                   id, b, t, V);
            if (t < T) m->inp[(size_t)b * T + t] = id;
            if (t > 0) m->tgt[(size_t)b * T + t - 1] = id;
        }
    return MSRNN_OK;
}

/* The part contexts of layer l. */
static part_train mixer_ctx(const train_model *m, int l) {
    const int i = param_mixer(m->pl, l);
    part_train c = {&m->hp,         m->B,      m->T,           m->n_threads,
                    m->pw + i,      m->pg + i, m->la[l].mixer, m->mixer_shared,
                    m->part_scratch};
    return c;
}
static part_train ffn_ctx(const train_model *m, int l) {
    const int i = param_ffn(m->pl, l);
    part_train c = {&m->hp,    m->B,         m->T,          m->n_threads,   m->pw + i,
                    m->pg + i, m->la[l].ffn, m->ffn_shared, m->part_scratch};
    return c;
}

static void forward(train_model *m) {
    const hparams *hp = &m->hp;
    const param_list *pl = m->pl;
    const int N = m->B * m->T, C = hp->info.dim, L = hp->info.n_layers;
    const float eps = hp->info.norm_eps;
    omp_set_num_threads(m->n_threads);
    kernels_set_threads(m->n_threads);
    embedding_forward(m->la[0].x, m->inp, m->pw[pl->embd], N, C, m->n_threads);
    for (int l = 0; l < L; l++) {
        layer_acts *a = &m->la[l];
        float *x_next = l + 1 < L ? m->la[l + 1].x : m->xf;
        const part_train mc = mixer_ctx(m, l), fc = ffn_ctx(m, l);
        rmsnorm_forward(a->xn1, a->rstd1, a->x, m->pw[param_layer(pl, l)], N, C, eps, m->n_threads);
        m->arch->mixer->train_forward(&mc, a->xn1, a->h);
        for (size_t i = 0; i < (size_t)N * C; i++) a->h[i] += a->x[i];
        rmsnorm_forward(a->xn2, a->rstd2, a->h, m->pw[param_ffn_norm(pl, l)], N, C, eps,
                        m->n_threads);
        m->arch->ffn->train_forward(&fc, a->xn2, x_next);
        for (size_t i = 0; i < (size_t)N * C; i++) x_next[i] += a->h[i];
    }
    rmsnorm_forward(m->xnf, m->rstdf, m->xf, m->pw[pl->out_norm], N, C, eps, m->n_threads);
}

/* The head, chunk by chunk: logits, losses, and (when dloss != 0) the gradient into dxn and
 * dw_out, the logits buffer reused for its own gradient. */
/* The logits of the B·T rows and the mean loss over the targets the loss covers (the last
 * loss_last of each sequence); with grad_scale ≠ 0 also the gradient of grad_scale × that mean
 * into dxn and the head's gradient (rows outside the loss get none). */
/* KL(p_t ‖ p_s) per row of n, p_t = softmax(teacher), p_s = softmax(logits); with dloss ≠ 0 the
 * logits become dloss · (p_s − p_t), their gradient. Doubles for the sums. */
static void kl_rows(float *losses, float *logits, const float *teacher, int n, int V, float dloss,
                    int n_threads) {
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int r = 0; r < n; r++) {
        float *ls = logits + (size_t)r * V;
        const float *lt = teacher + (size_t)r * V;
        float ms = ls[0], mt = lt[0];
        for (int i = 1; i < V; i++) ms = ls[i] > ms ? ls[i] : ms, mt = lt[i] > mt ? lt[i] : mt;
        double zs = 0, zt = 0;
        for (int i = 0; i < V; i++) zs += exp((double)ls[i] - ms), zt += exp((double)lt[i] - mt);
        const double lzs = ms + log(zs), lzt = mt + log(zt);
        double kl = 0;
        for (int i = 0; i < V; i++) {
            const double lpt = lt[i] - lzt, lps = ls[i] - lzs, pt = exp(lpt);
            kl += pt * (lpt - lps);
            if (dloss != 0) ls[i] = (float)(dloss * (exp(lps) - pt));
        }
        losses[r] = (float)kl;
    }
}

static double head(train_model *m, float grad_scale, const float *teacher) {
    const int T = m->T, N = m->B * T, C = m->hp.info.dim, V = m->hp.info.n_vocab;
    const int skip = T - m->loss_last; /* rows t < skip of each sequence are outside the loss */
    const float dloss = grad_scale / ((float)m->B * (float)m->loss_last);
    double sum = 0;
    for (int r0 = 0; r0 < N; r0 += HEAD_ROWS) {
        const int n = N - r0 < HEAD_ROWS ? N - r0 : HEAD_ROWS;
        matmul_forward(m->logits, m->xnf + (size_t)r0 * C, m->pw[m->pl->output], n, C, V,
                       m->n_threads);
        if (teacher)
            kl_rows(m->losses + r0, m->logits, teacher + (size_t)r0 * V, n, V,
                    grad_scale != 0 ? dloss : 0.0f, m->n_threads);
        else
            crossentropy_forward(m->losses + r0, m->logits, m->tgt + r0, n, V, m->n_threads);
        if (grad_scale != 0) {
            if (!teacher)
                crossentropy_backward(m->logits, m->logits, m->tgt + r0, dloss, n, V, m->n_threads);
            for (int i = 0; skip > 0 && i < n; i++)
                if ((r0 + i) % T < skip) memset(m->logits + (size_t)i * V, 0, V * sizeof(float));
            matmul_backward(m->dxn + (size_t)r0 * C, m->pg[m->pl->output], m->logits,
                            m->xnf + (size_t)r0 * C, m->pw[m->pl->output], n, C, V, m->n_threads);
        }
    }
    for (int i = 0; i < N; i++)
        if (i % T >= skip) sum += m->losses[i];
    return sum / ((double)m->B * m->loss_last);
}

msrnn_status train_model_loss(train_model *m, const int32_t *tokens, float *loss) {
    MSRNN_TRY(split_tokens(m, tokens));
    forward(m);
    *loss = (float)head(m, 0, NULL);
    return MSRNN_OK;
}

msrnn_status train_model_logits(train_model *m, const int32_t *tokens, int b, float *logits) {
    if (b < 0 || b >= m->B)
        return status_fail(MSRNN_ERR_INVALID, "train: sequence %d of a batch of %d", b, m->B);
    MSRNN_TRY(split_tokens(m, tokens));
    forward(m);
    const int C = m->hp.info.dim, V = m->hp.info.n_vocab;
    matmul_forward(logits, m->xnf + (size_t)b * m->T * C, m->pw[m->pl->output], m->T, C, V,
                   m->n_threads);
    return MSRNN_OK;
}

static void zero(float *p, size_t n) { memset(p, 0, n * sizeof(float)); }

msrnn_status train_model_step(train_model *m, const int32_t *tokens, float grad_scale,
                              float *loss) {
    MSRNN_TRY(split_tokens(m, tokens));
    forward(m);
    const param_list *pl = m->pl;
    const int N = m->B * m->T, C = m->hp.info.dim;
    const size_t NC = (size_t)N * C;
    zero(m->dxn, NC);
    *loss = (float)head(m, grad_scale, m->teacher);
    zero(m->dx, NC);
    rmsnorm_backward(m->dx, m->pg[pl->out_norm], m->dxn, m->xf, m->pw[pl->out_norm], m->rstdf, N, C,
                     m->n_threads);
    for (int l = m->hp.info.n_layers - 1; l >= 0; l--) {
        const layer_acts *a = &m->la[l];
        const part_train mc = mixer_ctx(m, l), fc = ffn_ctx(m, l);
        /* ffn: x_next = h + ffn(xn2); dx holds d x_next, and gets d h added */
        zero(m->dxn, NC);
        m->arch->ffn->train_backward(&fc, a->xn2, m->dx, m->dxn);
        const int fn = param_ffn_norm(pl, l);
        rmsnorm_backward(m->dx, m->pg[fn], m->dxn, a->h, m->pw[fn], a->rstd2, N, C, m->n_threads);
        /* mixer: h = x + mixer(xn1); dx holds d h, and gets d x added */
        zero(m->dxn, NC);
        m->arch->mixer->train_backward(&mc, a->xn1, m->dx, m->dxn);
        const int an = param_layer(pl, l);
        rmsnorm_backward(m->dx, m->pg[an], m->dxn, a->x, m->pw[an], a->rstd1, N, C, m->n_threads);
    }
    embedding_backward(m->pg[pl->embd], m->dx, m->inp, N, C, m->n_threads);
    /* a frozen tensor's gradient stays 0 (a part may compute one it can be asked to train) */
    for (int i = 0; i < pl->n; i++)
        if (pl->p[i].frozen) zero(m->grads + pl->p[i].offset, pl->p[i].n);
    return MSRNN_OK;
}

msrnn_status train_model_save(const train_model *m, const char *path, int f16,
                              msrnn_status (*extra)(void *ctx, struct gguf_writer *w), void *ctx) {
    gguf_writer *w = gguf_writer_new();
    if (!w) return status_fail(MSRNN_ERR_NOMEM, "save: out of memory");
    const gguf_file *f = m->src->file;
    msrnn_status st = MSRNN_OK;
    for (uint64_t i = 0; st == MSRNN_OK && i < f->n_kv; i++) {
        const gguf_str k = f->kv[i].key;
        if (k.len > 12 && !memcmp(k.ptr, "msrnn.train.", 12)) continue; /* checkpoint state */
        st = gguf_writer_set_kv(w, &f->kv[i]);
    }
    if (st == MSRNN_OK) st = gguf_writer_set_u32(w, "general.file_type", f16 ? 1 : 0);
    for (int i = 0; st == MSRNN_OK && i < m->pl->n; i++) {
        const param_desc *t = &m->pl->p[i];
        const uint64_t ne[3] = {(uint64_t)t->ne[0], (uint64_t)t->ne[1], (uint64_t)t->ne[2]};
        const float *src = m->params + t->offset;
        st = gguf_writer_add_tensor_f32_as(w, t->name, f16 && t->matrix ? TYPE_F16 : TYPE_F32,
                                           (uint32_t)t->n_dims, ne, src);
    }
    if (st == MSRNN_OK && extra) st = extra(ctx, w);
    if (st == MSRNN_OK) st = gguf_writer_write(w, path);
    gguf_writer_free(w);
    return st;
}
