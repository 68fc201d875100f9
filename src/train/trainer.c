/* trainer.c — the training loop, validation and checkpoints (see trainer.h). */
#include "train/trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/gguf.h"
#include "model/model.h"
#include "train/adamw.h"
#include "train/data.h"
#include "train/train_model.h"

train_config train_config_default(void) {
    train_config c = {0};
    c.batch = 8, c.ctx = 512, c.accum = 1, c.steps = 1000, c.warmup = 100;
    c.lr = 1e-3f, c.lr_min = 1e-4f, c.weight_decay = 0.1f, c.clip = 1.0f;
    c.beta1 = 0.9f, c.beta2 = 0.95f, c.eps = 1e-8f;
    c.seed = 1, c.eval_every = 100, c.eval_batches = 8, c.ckpt_every = 100;
    return c;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- checkpoint state ----------------------------------------------------------------------- */

typedef struct {
    const train_config *cfg;
    train_model *model;
    const float *m, *v;
    int step;
    loader_state ls;
    uint64_t train_tokens;
    const char *teacher;  /* the distillation teacher's path, or NULL */
    const char *unfreeze; /* the optional tensors trained (train --unfreeze), or NULL */
} ckpt_ctx;

#define U32(key, val)                                                                              \
    if (st == MSRNN_OK) st = gguf_writer_set_u32(w, "msrnn.train." key, (uint32_t)(val))
#define U64(key, val)                                                                              \
    if (st == MSRNN_OK) st = gguf_writer_set_u64(w, "msrnn.train." key, (uint64_t)(val))
#define F32(key, val)                                                                              \
    if (st == MSRNN_OK) st = gguf_writer_set_f32(w, "msrnn.train." key, (val))

static msrnn_status ckpt_extra(void *vctx, gguf_writer *w) {
    const ckpt_ctx *c = vctx;
    const train_config *g = c->cfg;
    msrnn_status st = MSRNN_OK;
    U32("step", c->step);
    U64("loader.seed", c->ls.seed);
    U64("loader.epoch", c->ls.epoch);
    U64("loader.cursor", c->ls.cursor);
    U64("data.tokens", c->train_tokens);
    U32("batch", g->batch);
    U32("ctx", g->ctx);
    U32("accum", g->accum);
    U32("steps", g->steps);
    U32("warmup", g->warmup);
    F32("lr", g->lr);
    F32("lr_min", g->lr_min);
    F32("weight_decay", g->weight_decay);
    F32("clip", g->clip);
    F32("beta1", g->beta1);
    F32("beta2", g->beta2);
    F32("eps", g->eps);
    U64("seed", g->seed);
    U32("eval_every", g->eval_every);
    U32("eval_batches", g->eval_batches);
    U32("ckpt_every", g->ckpt_every);
    F32("own_lr_scale", g->own_lr_scale);
    if (st == MSRNN_OK && c->teacher)
        st = gguf_writer_set_str(w, "msrnn.train.teacher", c->teacher);
    if (st == MSRNN_OK && c->unfreeze)
        st = gguf_writer_set_str(w, "msrnn.train.unfreeze", c->unfreeze);
    U32("loss_last", g->loss_last);
    char name[80];
    const param_list *pl = train_model_params_list(c->model);
    for (int i = 0; st == MSRNN_OK && i < pl->n; i++) {
        const param_desc *t = &pl->p[i];
        const uint64_t ne[3] = {(uint64_t)t->ne[0], (uint64_t)t->ne[1], (uint64_t)t->ne[2]};
        snprintf(name, sizeof name, "opt.m.%s", t->name);
        st = gguf_writer_add_tensor_ref(w, name, TYPE_F32, (uint32_t)t->n_dims, ne,
                                        c->m + t->offset);
        snprintf(name, sizeof name, "opt.v.%s", t->name);
        if (st == MSRNN_OK)
            st = gguf_writer_add_tensor_ref(w, name, TYPE_F32, (uint32_t)t->n_dims, ne,
                                            c->v + t->offset);
    }
    return st;
}
#undef U32
#undef U64
#undef F32

static msrnn_status get_u64(const gguf_file *f, const char *key, uint64_t *out) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv || kv->value.type != GGUF_TYPE_UINT64)
        return status_fail(MSRNN_ERR_FORMAT, "%s: checkpoint key %s is missing", f->path, key);
    *out = kv->value.u64;
    return MSRNN_OK;
}

static msrnn_status get_int(const gguf_file *f, const char *key, int *out) {
    uint32_t v;
    MSRNN_TRY(gguf_get_u32(f, key, 1, &v));
    if (v > (1u << 30))
        return status_fail(MSRNN_ERR_FORMAT, "%s: %s = %u is out of range", f->path, key, v);
    *out = (int)v;
    return MSRNN_OK;
}

/* Read the configuration, step, loader state and moments of a checkpoint. */
static msrnn_status ckpt_read(const char *path, train_config *g, int *step, loader_state *ls,
                              uint64_t *train_tokens, train_model *model, float *m, float *v) {
    gguf_file *f = NULL;
    MSRNN_TRY(gguf_open(path, &f));
    msrnn_status st = MSRNN_OK;
#define TRY(x)                                                                                     \
    if (st == MSRNN_OK) st = (x)
    if (model == NULL) {
        TRY(get_int(f, "msrnn.train.step", step));
        TRY(get_u64(f, "msrnn.train.loader.seed", &ls->seed));
        TRY(get_u64(f, "msrnn.train.loader.epoch", &ls->epoch));
        TRY(get_u64(f, "msrnn.train.loader.cursor", &ls->cursor));
        TRY(get_u64(f, "msrnn.train.data.tokens", train_tokens));
        TRY(get_int(f, "msrnn.train.batch", &g->batch));
        TRY(get_int(f, "msrnn.train.ctx", &g->ctx));
        TRY(get_int(f, "msrnn.train.accum", &g->accum));
        TRY(get_int(f, "msrnn.train.steps", &g->steps));
        TRY(get_int(f, "msrnn.train.warmup", &g->warmup));
        TRY(gguf_get_f32(f, "msrnn.train.lr", 1, &g->lr));
        TRY(gguf_get_f32(f, "msrnn.train.lr_min", 1, &g->lr_min));
        TRY(gguf_get_f32(f, "msrnn.train.weight_decay", 1, &g->weight_decay));
        TRY(gguf_get_f32(f, "msrnn.train.clip", 1, &g->clip));
        TRY(gguf_get_f32(f, "msrnn.train.beta1", 1, &g->beta1));
        TRY(gguf_get_f32(f, "msrnn.train.beta2", 1, &g->beta2));
        TRY(gguf_get_f32(f, "msrnn.train.eps", 1, &g->eps));
        TRY(get_u64(f, "msrnn.train.seed", &g->seed));
        TRY(get_int(f, "msrnn.train.eval_every", &g->eval_every));
        TRY(get_int(f, "msrnn.train.eval_batches", &g->eval_batches));
        TRY(get_int(f, "msrnn.train.ckpt_every", &g->ckpt_every));
        g->own_lr_scale = 0; /* absent in older checkpoints */
        TRY(gguf_get_f32(f, "msrnn.train.own_lr_scale", 0, &g->own_lr_scale));
        g->loss_last = 0; /* absent in older checkpoints */
        if (gguf_find_kv(f, "msrnn.train.loss_last")) {
            TRY(get_int(f, "msrnn.train.loss_last", &g->loss_last));
        }
    } else {
        char name[80];
        const param_list *pl = train_model_params_list(model);
        for (int i = 0; st == MSRNN_OK && i < pl->n; i++) {
            const param_desc *t = &pl->p[i];
            for (int k = 0; st == MSRNN_OK && k < 2; k++) {
                snprintf(name, sizeof name, "opt.%c.%s", k ? 'v' : 'm', t->name);
                const gguf_tensor *gt = gguf_find_tensor(f, name);
                if (!gt || gt->type != TYPE_F32 || gt->n_elements != t->n)
                    st = status_fail(MSRNN_ERR_FORMAT,
                                     "%s: checkpoint tensor %s is missing or has the wrong "
                                     "type or size (%zu f32 expected)",
                                     path, name, t->n);
                else
                    memcpy((k ? v : m) + t->offset, gt->data, t->n * sizeof(float));
            }
        }
    }
#undef TRY
    gguf_close(f);
    return st;
}

/* ---- the loop ------------------------------------------------------------------------------- */

static msrnn_status validate(const train_config *c) {
    if (c->batch < 1 || c->ctx < 2 || c->accum < 1 || c->steps < 1 || c->warmup < 0 ||
        c->eval_every < 0 || c->eval_batches < 0 || c->ckpt_every < 0 || c->loss_last < 0 ||
        c->loss_last > c->ctx)
        return status_fail(MSRNN_ERR_INVALID,
                           "train: batch %d, ctx %d, accum %d, steps %d, warmup %d, eval-every %d, "
                           "eval-batches %d, ckpt-every %d, loss-last %d: sizes must be positive "
                           "(loss-last at most ctx)",
                           c->batch, c->ctx, c->accum, c->steps, c->warmup, c->eval_every,
                           c->eval_batches, c->ckpt_every, c->loss_last);
    if (!(c->lr > 0) || !(c->lr_min >= 0) || !(c->lr_min <= c->lr) || !(c->weight_decay >= 0) ||
        !(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1) || !(c->eps > 0) ||
        !(c->clip >= 0) || !isfinite(c->lr) || !(c->own_lr_scale >= 0 && c->own_lr_scale <= 1e4))
        return status_fail(MSRNN_ERR_INVALID,
                           "train: lr %g, lr-min %g, wd %g, betas %g/%g, eps %g, clip %g, own "
                           "lr scale %g: need 0 <= lr-min <= lr, 0 <= beta < 1, eps > 0, wd and "
                           "clip >= 0, 0 <= own lr scale <= 1e4",
                           c->lr, c->lr_min, c->weight_decay, c->beta1, c->beta2, c->eps, c->clip,
                           c->own_lr_scale);
    return MSRNN_OK;
}

/* A checkpoint's string key msrnn.train.KEY (the teacher it was distilled from, the tensors it
 * unfroze), "" when absent. */
static msrnn_status ckpt_str(const char *path, const char *key, char out[4096]) {
    gguf_file *f = NULL;
    MSRNN_TRY(gguf_open(path, &f));
    gguf_str t = {"", 0};
    char full[64];
    snprintf(full, sizeof full, "msrnn.train.%s", key);
    msrnn_status st = gguf_get_str(f, full, 0, &t);
    if (st == MSRNN_OK && t.len >= 4096)
        st = status_fail(MSRNN_ERR_FORMAT, "%s: %s is too long", path, full);
    if (st == MSRNN_OK) memcpy(out, t.ptr, t.len), out[t.len] = 0;
    gguf_close(f);
    return st;
}

/* The teacher model, a full-memory session over one training sequence, and its logits for a
 * micro-batch (B · T × V). Its vocabulary must be the student's. */
static msrnn_status teacher_open(const char *path, train_model *student, const train_config *cfg,
                                 int n_threads, msrnn_model **mo, msrnn_session **so, float **lo) {
    MSRNN_TRY(msrnn_model_open(path, mo));
    const msrnn_model_info *ti = msrnn_model_get_info(*mo);
    const hparams *sh = train_model_hparams(student);
    if (ti->n_vocab != sh->info.n_vocab)
        return status_fail(MSRNN_ERR_INVALID,
                           "train: the teacher %s has %d tokens, the student %d: distillation "
                           "needs one vocabulary",
                           path, ti->n_vocab, sh->info.n_vocab);
    msrnn_session_params p = msrnn_session_default_params();
    p.n_ctx = cfg->ctx, p.n_threads = n_threads;
    if (!model_memory_bounded(*mo, &p) && cfg->ctx > ti->n_ctx)
        return status_fail(MSRNN_ERR_INVALID,
                           "train: --ctx %d is beyond the teacher's context of %d tokens", cfg->ctx,
                           ti->n_ctx);
    MSRNN_TRY(msrnn_session_open(*mo, &p, so));
    *lo = malloc((size_t)cfg->batch * cfg->ctx * ti->n_vocab * sizeof(float));
    if (!*lo)
        return status_fail(MSRNN_ERR_NOMEM,
                           "train: out of memory for the teacher's logits (%.1f MB)",
                           (double)cfg->batch * cfg->ctx * ti->n_vocab * 4 / 1e6);
    return MSRNN_OK;
}

msrnn_status train_run(const train_config *cfg_in, const train_paths *paths,
                       const train_callbacks *cb, volatile sig_atomic_t *stop, int *stopped) {
    *stopped = 0;
    train_config cfg = *cfg_in;
    int step = 0;
    loader_state ls = {0};
    uint64_t ck_tokens = 0;
    if (paths->resume) {
        MSRNN_TRY(ckpt_read(paths->ckpt_path, &cfg, &step, &ls, &ck_tokens, NULL, NULL, NULL));
    }
    MSRNN_TRY(validate(&cfg));
    token_shard *train = NULL, *val = NULL;
    data_loader *dl = NULL, *vl = NULL;
    train_model *model = NULL;
    float *m = NULL, *v = NULL;
    int32_t *tokens = NULL;
    msrnn_status st = token_shard_open(paths->train_path, &train);
    if (st == MSRNN_OK && paths->val_path) st = token_shard_open(paths->val_path, &val);
    if (st == MSRNN_OK) st = data_loader_open(train, cfg.ctx, cfg.seed, &dl);
    if (st == MSRNN_OK && val) st = data_loader_open(val, cfg.ctx, cfg.seed, &vl);
    if (st == MSRNN_OK)
        st = train_model_open(paths->resume ? paths->ckpt_path : paths->init_path, cfg.batch,
                              cfg.ctx, paths->n_threads, paths->max_memory, &model);
    /* the shards' ids must be the model's vocabulary: same size and (version 2 shards) the same
     * pieces, checked before the first step */
    if (st == MSRNN_OK) {
        const msrnn_model *src = train_model_source(model);
        const char *mpath = paths->vocab_from ? paths->vocab_from : src->file->path;
        if (!src->tok)
            st = status_fail(
                MSRNN_ERR_FORMAT,
                "%s has no tokenizer (no tokenizer.ggml.* keys): the shards' ids cannot "
                "be checked against it and the trained model could not read text",
                mpath);
        /* the tokenizer's size: a model's embedding may be padded beyond it */
        const uint32_t n_vocab = src->tok ? (uint32_t)spm_n_vocab(src->tok) : 0;
        const uint64_t hash = src->tok ? spm_vocab_hash(src->tok) : 0;
        if (st == MSRNN_OK) st = token_shard_check_vocab(train, mpath, n_vocab, 1, hash);
        if (st == MSRNN_OK && val) st = token_shard_check_vocab(val, mpath, n_vocab, 1, hash);
    }
    if (st == MSRNN_OK && paths->resume && ck_tokens != token_shard_n_tokens(train))
        st = status_fail(MSRNN_ERR_INVALID,
                         "train: %s was made on a training shard of %llu tokens, %s has %llu",
                         paths->ckpt_path, (unsigned long long)ck_tokens, paths->train_path,
                         (unsigned long long)token_shard_n_tokens(train));
    if (st == MSRNN_OK && paths->resume) st = data_loader_set_state(dl, ls);
    size_t np = 0;
    if (st == MSRNN_OK) {
        np = train_model_n_params(model);
        m = calloc(np, sizeof(float));
        v = calloc(np, sizeof(float));
        tokens = malloc((size_t)cfg.batch * (cfg.ctx + 1) * sizeof(int32_t));
        if (!m || !v || !tokens) st = status_fail(MSRNN_ERR_NOMEM, "train: out of memory");
    }
    if (st == MSRNN_OK && paths->resume)
        st = ckpt_read(paths->ckpt_path, &cfg, &step, &ls, &ck_tokens, model, m, v);
    if (st == MSRNN_OK && cfg.own_lr_scale > 0)
        train_model_set_own_lr_scale(model, cfg.own_lr_scale);
    if (st == MSRNN_OK) train_model_set_loss_last(model, cfg.loss_last);
    /* distillation: the teacher named now, or the one a resumed checkpoint was trained against */
    char ck_teacher[4096] = "";
    if (st == MSRNN_OK && paths->resume) st = ckpt_str(paths->ckpt_path, "teacher", ck_teacher);
    const char *teacher_path = paths->teacher_path ? paths->teacher_path
                               : ck_teacher[0]     ? ck_teacher
                                                   : NULL;
    if (st == MSRNN_OK && paths->resume && paths->teacher_path && ck_teacher[0] &&
        strcmp(paths->teacher_path, ck_teacher))
        st = status_fail(MSRNN_ERR_INVALID, "train: %s was trained against the teacher %s, not %s",
                         paths->ckpt_path, ck_teacher, paths->teacher_path);
    if (st == MSRNN_OK && paths->resume && paths->teacher_path && !ck_teacher[0])
        st = status_fail(MSRNN_ERR_INVALID,
                         "train: %s was trained on the plain loss; a resumed run cannot add a "
                         "teacher",
                         paths->ckpt_path);
    /* optional tensors trained: those named now, or those a resumed checkpoint trained */
    char ck_unfreeze[4096] = "";
    if (st == MSRNN_OK && paths->resume) st = ckpt_str(paths->ckpt_path, "unfreeze", ck_unfreeze);
    const char *unfreeze = paths->unfreeze && paths->unfreeze[0] ? paths->unfreeze
                           : ck_unfreeze[0]                      ? ck_unfreeze
                                                                 : NULL;
    if (st == MSRNN_OK && paths->resume && paths->unfreeze && strcmp(paths->unfreeze, ck_unfreeze))
        st = status_fail(MSRNN_ERR_INVALID,
                         "train: %s unfroze \"%s\"; a resumed run cannot change that to \"%s\"",
                         paths->ckpt_path, ck_unfreeze, paths->unfreeze);
    if (st == MSRNN_OK && unfreeze) st = train_model_unfreeze(model, unfreeze);
    msrnn_model *teacher = NULL;
    msrnn_session *tsess = NULL;
    float *tlogits = NULL;
    if (st == MSRNN_OK && teacher_path)
        st = teacher_open(teacher_path, model, &cfg, paths->n_threads, &teacher, &tsess, &tlogits);
    if (st == MSRNN_OK) train_model_set_teacher(model, tlogits);
    const size_t teacher_vocab = teacher ? (size_t)msrnn_model_get_info(teacher)->n_vocab : 0;
    const uint64_t val_windows = vl ? data_loader_n_windows(vl) : 0;
    uint64_t n_val = (uint64_t)cfg.eval_batches * cfg.batch;
    if (n_val > val_windows) n_val = val_windows - val_windows % cfg.batch;
    if (st == MSRNN_OK && cb && cb->start) {
        train_info in = {0};
        in.n_params = np;
        in.bytes_params = in.bytes_grads = np * sizeof(float);
        in.bytes_moments = 2 * np * sizeof(float);
        in.bytes_acts = train_model_bytes(model) - 2 * np * sizeof(float);
        in.start_step = step;
        in.train_tokens = token_shard_n_tokens(train);
        in.train_windows = data_loader_n_windows(dl);
        in.val_windows = n_val;
        in.cfg = cfg;
        cb->start(cb->ctx, &in);
    }
    adamw_params ap = adamw_default_params();
    ap.lr_max = cfg.lr, ap.lr_min = cfg.lr_min, ap.warmup = cfg.warmup, ap.steps = cfg.steps;
    ap.beta1 = cfg.beta1, ap.beta2 = cfg.beta2, ap.eps = cfg.eps;
    ap.weight_decay = cfg.weight_decay, ap.clip = cfg.clip;
    const double t0 = now_s();
    const int step0 = step;
    ckpt_ctx cc = {&cfg,         model,   m, v, 0, {0}, train ? token_shard_n_tokens(train) : 0,
                   teacher_path, unfreeze};
    while (st == MSRNN_OK && step < cfg.steps) {
        train_model_zero_grad(model);
        double loss_sum = 0;
        for (int a = 0; st == MSRNN_OK && a < cfg.accum; a++) {
            data_loader_next(dl, cfg.batch, tokens);
            for (int b = 0; st == MSRNN_OK && tsess && b < cfg.batch; b++) {
                msrnn_session_reset(tsess);
                st = msrnn_session_eval(tsess, tokens + (size_t)b * (cfg.ctx + 1), cfg.ctx,
                                        tlogits + (size_t)b * cfg.ctx * teacher_vocab);
            }
            if (st != MSRNN_OK) break;
            float l = 0;
            st = train_model_step(model, tokens, 1.0f / cfg.accum, &l);
            loss_sum += l;
        }
        if (st != MSRNN_OK) break;
        const float lr = lr_at(&ap, step);
        train_progress p = {0};
        p.grad_norm =
            adamw_step(&ap, step + 1, lr, train_model_params_list(model), train_model_params(model),
                       train_model_grads(model), m, v, train_model_threads(model));
        step++;
        p.step = step;
        p.loss = (float)(loss_sum / cfg.accum);
        p.lr = lr;
        p.val_loss = NAN;
        p.elapsed_s = now_s() - t0;
        p.tokens_per_s = (double)(step - step0) * cfg.batch * cfg.ctx * cfg.accum / p.elapsed_s;
        p.eta_s = p.elapsed_s / (step - step0) * (cfg.steps - step);
        if (!isfinite(p.loss)) {
            st = status_fail(MSRNN_ERR_INVALID,
                             "train: the loss is %g at step %d (diverged: lower --lr?)", p.loss,
                             step);
            break;
        }
        const int last = step == cfg.steps;
        if (n_val && ((cfg.eval_every && step % cfg.eval_every == 0) || last)) {
            double vs = 0;
            const uint64_t stride = val_windows / n_val;
            for (uint64_t i = 0; st == MSRNN_OK && i < n_val; i += cfg.batch) {
                for (int b = 0; b < cfg.batch; b++)
                    data_loader_window(vl, (i + b) * stride, tokens + (size_t)b * (cfg.ctx + 1));
                float l = 0;
                st = train_model_loss(model, tokens, &l);
                vs += l;
            }
            p.val_loss = (float)(vs / (n_val / cfg.batch));
            if (st == MSRNN_OK && !isfinite(p.val_loss))
                st = status_fail(MSRNN_ERR_FORMAT,
                                 "train: the validation loss on %s is %g at step %d",
                                 paths->val_path, p.val_loss, step);
        }
        cc.step = step;
        cc.ls = data_loader_get_state(dl);
        if (st == MSRNN_OK && ((cfg.ckpt_every && step % cfg.ckpt_every == 0) || last)) {
            st = train_model_save(model, paths->ckpt_path, 0, ckpt_extra, &cc);
            p.checkpointed = st == MSRNN_OK;
        }
        if (st == MSRNN_OK && cb && cb->step) cb->step(cb->ctx, &p);
        if (st == MSRNN_OK && !last && stop && *stop) { /* Ctrl-C, or the caller's step budget */
            if (!p.checkpointed) st = train_model_save(model, paths->ckpt_path, 0, ckpt_extra, &cc);
            *stopped = 1;
            break;
        }
    }
    if (st == MSRNN_OK && !*stopped && paths->out_path)
        st = train_model_save(model, paths->out_path, paths->out_f16, NULL, NULL);
    free(tokens);
    free(m);
    free(v);
    free(tlogits);
    msrnn_session_close(tsess);
    msrnn_model_close(teacher);
    train_model_free(model);
    data_loader_free(vl);
    data_loader_free(dl);
    token_shard_close(val);
    token_shard_close(train);
    return st;
}
