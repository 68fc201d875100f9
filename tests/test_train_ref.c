/* test_train_ref.c — the training engine (src/train) held to an independent float64 PyTorch
 * reference.
 *
 * tests/ref/gen_train_ref.py builds small random-weight Llama models (MHA and GQA/MQA, head dims
 * 16 and 32, tied and untied head, T = 40..130 so that the 64-wide attention tiles are whole,
 * partial and ragged) and computes, in float64 from the architecture's definition: the mean loss
 * of a token batch, the gradient of every parameter tensor, and a 10-step AdamW trajectory (warm-up
 * + cosine lr, global-norm clipping that bites on some steps only, decay on matrices only; one
 * config accumulates 2 micro-batches a step). For every config of $MSRNN_REF_DIR/train/MANIFEST.tsv
 * this test checks:
 *   1. structure: every parameter tensor, in GGUF order, with the reference's name, shape and decay
 *      flag (decay iff 2-D), none missing or extra; the loaded weights equal the file's f32
 * exactly;
 *   2. one step on batch 0 (grad_scale 1): the loss and every gradient tensor against the
 *      reference; train_model_loss gives the same loss bit for bit and leaves the gradients alone;
 *      zero_grad zeroes; grad_scale 0.5 halves the gradients; two steps without zero_grad double
 *      them; 1 thread gives bit-identical loss and gradients to 2 (ops.h's promise);
 *   3. the trajectory through lr_at / adamw_step from fresh weights with zeroed m, v: lr, loss and
 *      pre-clip gradient norm at every step, the final parameters; and at every step adamw_step's
 *      result against adamw.h's formulas evaluated here in double from the state it started from
 *      (this pins the optimizer tightly where the trajectory cannot: see TRAJ_* below);
 *   2b. train --loss-last: the loss over the last n targets, and its gradient (check_loss_last);
 *   2c. train --teacher: the KL to a teacher's logits, and its gradient (check_teacher);
 * and that train_model_open refuses a missing file and a file with a tensor one row short, with a
 * message. Prints one line per config and "test_train_ref: N passed, M failed"; exits 1 on failure.
 *
 * Errors are max |got − ref| / max |ref| over a tensor unless said otherwise. The manifest's
 * f32sim columns are what the reference itself measures when it runs the same computation in
 * float32 (torch f32): what an f32 engine doing everything right deviates by. They are printed
 * beside the results; they justify the tolerances, they do not set them.
 *
 * NAME.ref (little-endian; see gen_train_ref.py): "MTRF", u32 version 1, u32 B, T, n_micro,
 * n_steps, n_tensors, n_vocab, warmup; f64 lr_max, lr_min, beta1, beta2, eps, weight_decay, clip;
 * n_tensors × {char name[48]; u32 n_dims; u32 decay; i64 ne[2]}; i32 tokens[n_steps · n_micro][B]
 * [T + 1]; f32 params0[n_params]; f64 loss0; f64 grads[n_params]; f64 lr[n_steps], loss[n_steps],
 * grad_norm[n_steps]; f64 params[n_params] (after n_steps steps).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "msrnn.h"
#include "train/adamw.h"
#include "train/train_model.h"

/* f32 sim (measured, all configs): loss 1e-7, gradients 4.5e-6. */
#define LOSS_TOL 1e-5
#define GRAD_TOL 1e-4
/* grad_scale 0.5 is a power of two: every product and sum scales exactly, so the gradients should
 * halve bit for bit; 1e-6 leaves room only for an engine that scales somewhere not exact. */
#define HALF_TOL 1e-6
/* Two accumulated steps against twice one step: sums now start from the first step's values. */
#define ACCUM_TOL 1e-5
/* The trajectory. Losses and pre-clip norms: f32 sim up to 1.4e-6 and 2.3e-5.
 * Parameters: Adam normalises every element by its own gradient history, so an element whose
 * gradient is tiny (at t = 1 the update is lr · g / (|g| + eps), a sign) takes f32 rounding of
 * ~1e-6 of the tensor's largest gradient as a change of direction: f32 sim puts single elements up
 * to 1.4e-3 of max |p| away after 10 steps (1e-4, as one might hope, is out of reach for any f32
 * engine), while the tensors as a whole stay close: ‖Δ‖ / ‖p_ref − p0‖ (the error of the total
 * update) is at most 1.4e-4. Mutants of the float64 reference give, on that measure: lr_max 0.1%
 * larger 2e-3..3e-3, eps 1e-7 1.4e-3..3.9e-3, no clipping 2e-2..6e-2, no weight decay 5e-2, clip
 * 1% larger 5e-4..1.3e-3. So TRAJ_UPD_TOL = 1e-3 and, for single elements, TRAJ_MAX_TOL = 1e-2.
 * The optimizer itself is held far tighter by the per-step formula check (ADAMW_TOL). */
#define TRAJ_LOSS_TOL 1e-4
#define TRAJ_NORM_TOL 1e-4
#define TRAJ_UPD_TOL 1e-3
#define TRAJ_MAX_TOL 1e-2
#define LR_TOL 1e-6
/* adamw_step against adamw.h evaluated in double from the same inputs (the engine's gradients, m,
 * v, parameters and its returned norm): only f32 rounding of each element's arithmetic differs
 * (~1e-7). NORM_SELF_TOL: the returned norm against the double norm of the same gradients (an f32
 * running sum over 3e5 squares may lose ~1e-5; harmless for clipping). */
#define ADAMW_TOL 1e-6
#define NORM_SELF_TOL 1e-5

#define N_THREADS 2

/* ---- the reference file -------------------------------------------------------------------- */

typedef struct {
    char name[48];
    uint32_t n_dims, decay;
    int64_t ne[2];
    size_t n, offset; /* elements; offset in the reference's flat arrays */
} ref_tensor;

typedef struct {
    int B, T, n_micro, n_steps, n_tensors, n_vocab, warmup;
    double lr_max, lr_min, beta1, beta2, eps, weight_decay, clip;
    ref_tensor *tensors; /* (n_tensors) */
    size_t n_params;
    int32_t *tokens; /* (n_steps · n_micro, B, T + 1) */
    float *params0;  /* (n_params) initial weights, as stored */
    double loss0;    /* mean loss of batch 0 */
    double *grads;   /* (n_params) its gradient */
    double *lr;      /* (n_steps) */
    double *loss;    /* (n_steps) before each step's update */
    double *gnorm;   /* (n_steps) global gradient norm before clipping */
    double *params;  /* (n_params) after n_steps */
} train_ref;

static void ref_free(train_ref *r) {
    free(r->tensors);
    free(r->tokens);
    free(r->params0);
    free(r->grads);
    free(r->lr);
    free(r->loss);
    free(r->gnorm);
    free(r->params);
    memset(r, 0, sizeof *r);
}

static int read_exact(FILE *f, void *buf, size_t size, size_t n) {
    return fread(buf, size, n, f) == n;
}

static int in_range(uint32_t x, uint32_t lo, uint32_t hi) { return x >= lo && x <= hi; }

static int read_tensor_table(FILE *f, train_ref *r) {
    r->tensors = calloc((size_t)r->n_tensors, sizeof *r->tensors);
    if (!r->tensors) return 0;
    size_t off = 0;
    for (int i = 0; i < r->n_tensors; i++) {
        ref_tensor *t = &r->tensors[i];
        uint32_t u[2];
        if (!read_exact(f, t->name, 1, sizeof t->name) || t->name[sizeof t->name - 1] != 0 ||
            !read_exact(f, u, sizeof u[0], 2) || !read_exact(f, t->ne, sizeof t->ne[0], 2))
            return 0;
        t->n_dims = u[0];
        t->decay = u[1];
        if (!in_range(t->n_dims, 1, 2) || t->ne[0] < 1 || t->ne[1] < 1 || t->ne[0] > (1 << 20) ||
            t->ne[1] > (1 << 20) || (t->n_dims == 1 && t->ne[1] != 1))
            return 0;
        t->n = (size_t)t->ne[0] * (size_t)t->ne[1];
        t->offset = off;
        off += t->n;
    }
    r->n_params = off;
    return off < ((size_t)1 << 28);
}

/* Reads NAME.ref; returns 0 and prints why on failure. */
static int ref_read(const char *path, train_ref *r) {
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("  cannot open %s\n", path);
        return 0;
    }
    char magic[4];
    uint32_t ver, h[7];
    double d[7];
    int ok = read_exact(f, magic, 1, 4) && memcmp(magic, "MTRF", 4) == 0 &&
             read_exact(f, &ver, sizeof ver, 1) && ver == 1 && read_exact(f, h, sizeof h[0], 7) &&
             read_exact(f, d, sizeof d[0], 7) && in_range(h[0], 1, 4096) &&
             in_range(h[1], 1, 1 << 16) && in_range(h[2], 1, 64) && in_range(h[3], 1, 10000) &&
             in_range(h[4], 1, 10000) && in_range(h[5], 1, 1 << 24) && in_range(h[6], 0, h[3]);
    if (ok) {
        r->B = (int)h[0];
        r->T = (int)h[1];
        r->n_micro = (int)h[2];
        r->n_steps = (int)h[3];
        r->n_tensors = (int)h[4];
        r->n_vocab = (int)h[5];
        r->warmup = (int)h[6];
        r->lr_max = d[0];
        r->lr_min = d[1];
        r->beta1 = d[2];
        r->beta2 = d[3];
        r->eps = d[4];
        r->weight_decay = d[5];
        r->clip = d[6];
        ok = read_tensor_table(f, r);
    }
    if (ok) {
        const size_t nt = (size_t)r->n_steps * (size_t)r->n_micro * (size_t)r->B *
                          (size_t)(r->T + 1),
                     np = r->n_params, ns = (size_t)r->n_steps;
        r->tokens = malloc(nt * sizeof *r->tokens);
        r->params0 = malloc(np * sizeof *r->params0);
        r->grads = malloc(np * sizeof *r->grads);
        r->lr = malloc(ns * sizeof *r->lr);
        r->loss = malloc(ns * sizeof *r->loss);
        r->gnorm = malloc(ns * sizeof *r->gnorm);
        r->params = malloc(np * sizeof *r->params);
        ok = r->tokens && r->params0 && r->grads && r->lr && r->loss && r->gnorm && r->params &&
             read_exact(f, r->tokens, sizeof *r->tokens, nt) &&
             read_exact(f, r->params0, sizeof *r->params0, np) &&
             read_exact(f, &r->loss0, sizeof r->loss0, 1) &&
             read_exact(f, r->grads, sizeof *r->grads, np) &&
             read_exact(f, r->lr, sizeof *r->lr, ns) &&
             read_exact(f, r->loss, sizeof *r->loss, ns) &&
             read_exact(f, r->gnorm, sizeof *r->gnorm, ns) &&
             read_exact(f, r->params, sizeof *r->params, np) && fgetc(f) == EOF;
        for (size_t i = 0; ok && i < nt; i++) ok = r->tokens[i] >= 0 && r->tokens[i] < r->n_vocab;
    }
    fclose(f);
    if (!ok) {
        printf("  %s: not a valid MTRF v1 file (bad header, truncated or trailing bytes)\n", path);
        ref_free(r);
    }
    return ok;
}

/* Token batch i: B rows of T + 1 ids. */
static const int32_t *batch(const train_ref *r, int i) {
    return r->tokens + (size_t)i * (size_t)r->B * (size_t)(r->T + 1);
}

/* ---- error measures ------------------------------------------------------------------------ */

/* max |got − ref| / max |ref| (NaN-safe: a NaN gives INFINITY). */
static double max_rel_err(const float *got, const double *ref, size_t n) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        scale = fmax(scale, fabs(ref[i]));
    }
    return scale > 0 ? worst / scale : worst;
}

/* max |a − b| / max |b| between two float arrays, b scaled by k. */
static double max_rel_err_f(const float *a, const float *b, double k, size_t n) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - k * (double)b[i]);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        scale = fmax(scale, fabs(k * (double)b[i]));
    }
    return scale > 0 ? worst / scale : worst;
}

static double rel(double got, double want) {
    double e = fabs(got - want) / fabs(want);
    return isnan(e) ? INFINITY : e;
}

/* Keeps the worst error seen and the name of its tensor (or step). */
typedef struct {
    double err;
    char where[96];
} worst_err;

static void note(worst_err *w, double err, const char *where) {
    if (!(err <= w->err)) {
        w->err = isnan(err) ? INFINITY : err;
        snprintf(w->where, sizeof w->where, "%s", where);
    }
}

/* ---- 1. structure -------------------------------------------------------------------------- */

static msrnn_status open_model(const char *path, const train_ref *r, int n_threads,
                               train_model **out) {
    msrnn_status st = train_model_open(path, r->B, r->T, n_threads, 0, out);
    if (st != MSRNN_OK)
        printf("  train_model_open(%s, B %d, T %d, %d threads): %s: %s\n", path, r->B, r->T,
               n_threads, msrnn_status_name(st), msrnn_last_error());
    return st;
}

/* Every reference tensor must be the engine's tensor i, with the same shape and decay flag, and
 * the engine must have no others. off[i] receives its offset in the engine's slabs. */
static int check_structure(train_model *m, const train_ref *r, size_t *off) {
    int ok = 1;
    const int n = train_model_params_list(m)->n;
    CHECK(n == r->n_tensors, "%d parameter tensors, reference %d", n, r->n_tensors);
    CHECK(train_model_n_params(m) == r->n_params, "%zu parameters, reference %zu",
          train_model_n_params(m), r->n_params);
    ok = n == r->n_tensors && train_model_n_params(m) == r->n_params;
    for (int i = 0; i < r->n_tensors; i++) {
        const ref_tensor *rt = &r->tensors[i];
        int j = 0;
        while (j < n && strcmp((&train_model_params_list(m)->p[j])->name, rt->name) != 0) j++;
        CHECK(j < n, "tensor %s is missing", rt->name);
        if (j == n) {
            ok = 0;
            continue;
        }
        const param_desc *t = (&train_model_params_list(m)->p[j]);
        int same = t->n_dims == (int)rt->n_dims && t->ne[0] == rt->ne[0] &&
                   (t->n_dims == 1 || t->ne[1] == rt->ne[1]) && t->n == rt->n &&
                   t->offset + t->n <= r->n_params;
        CHECK(j == i, "tensor %s is number %d, expected %d (GGUF order)", rt->name, j, i);
        CHECK(same,
              "tensor %s: %d dims ne [%lld, %lld] n %zu offset %zu, reference %u dims [%lld, %lld]",
              rt->name, t->n_dims, (long long)t->ne[0], (long long)t->ne[1], t->n, t->offset,
              rt->n_dims, (long long)rt->ne[0], (long long)rt->ne[1]);
        CHECK(t->decay == (int)rt->decay, "tensor %s: decay %d, expected %u", rt->name, t->decay,
              rt->decay);
        ok &= j == i && same;
        off[i] = t->offset;
    }
    for (int j = 0; j < n; j++) {
        int found = 0;
        for (int i = 0; i < r->n_tensors && !found; i++)
            found = strcmp((&train_model_params_list(m)->p[j])->name, r->tensors[i].name) == 0;
        CHECK(found, "tensor %s is not in the reference",
              (&train_model_params_list(m)->p[j])->name);
        ok &= found;
    }
    if (!ok) return 0;
    const msrnn_model_info *sh = &train_model_hparams(m)->info;
    int tied = strcmp(r->tensors[r->n_tensors - 1].name, "output.weight") != 0;
    CHECK(sh->n_vocab == r->n_vocab && sh->tied_output == tied,
          "shape: n_vocab %d tied %d, expected %d %d", sh->n_vocab, sh->tied_output, r->n_vocab,
          tied);
    const float *p = train_model_params(m);
    for (int i = 0; i < r->n_tensors; i++) {
        const ref_tensor *rt = &r->tensors[i];
        int same = memcmp(p + off[i], r->params0 + rt->offset, rt->n * sizeof(float)) == 0;
        CHECK(same, "tensor %s: loaded weights differ from the file's f32 values", rt->name);
        ok &= same;
    }
    return ok;
}

/* ---- 2. one step: loss and gradients ------------------------------------------------------- */

static msrnn_status step(train_model *m, const int32_t *tokens, float scale, float *loss) {
    msrnn_status st = train_model_step(m, tokens, scale, loss);
    if (st != MSRNN_OK)
        printf("  train_model_step: %s: %s\n", msrnn_status_name(st), msrnn_last_error());
    return st;
}

typedef struct {
    double loss, half, accum;
    worst_err grad;
    int half_exact, threads_same;
} grad_result;

static int check_gradients(const char *path, const train_ref *r, const size_t *off, train_model *m,
                           grad_result *res) {
    const size_t np = r->n_params;
    float *g1 = malloc(np * sizeof *g1);
    if (!g1) return 0;
    float *g = train_model_grads(m);
    const int32_t *tok = batch(r, 0);
    float loss = 0, loss2 = 0;
    int ok = 0;
    train_model_zero_grad(m);
    if (step(m, tok, 1.0f, &loss) != MSRNN_OK) goto done;
    memcpy(g1, g, np * sizeof *g1);

    res->loss = rel(loss, r->loss0);
    CHECK(res->loss <= LOSS_TOL, "loss %.9g, reference %.9g: error %.3g > %.0e", (double)loss,
          r->loss0, res->loss, LOSS_TOL);
    double *err = malloc((size_t)r->n_tensors * sizeof *err);
    if (!err) goto done;
    printf("  gradients (max |Δ| / max |ref|, tol %.0e):", GRAD_TOL);
    for (int i = 0; i < r->n_tensors; i++) {
        const ref_tensor *rt = &r->tensors[i];
        err[i] = max_rel_err(g1 + off[i], r->grads + rt->offset, rt->n);
        note(&res->grad, err[i], rt->name);
        printf("%s %s %.1e", i % 4 ? "," : "\n   ", rt->name, err[i]);
    }
    printf("\n");
    for (int i = 0; i < r->n_tensors; i++)
        CHECK(err[i] <= GRAD_TOL, "gradient of %s: error %.3g > %.0e", r->tensors[i].name, err[i],
              GRAD_TOL);
    free(err);

    /* Forward only: the same loss, gradients untouched. */
    msrnn_status st = train_model_loss(m, tok, &loss2);
    CHECK(st == MSRNN_OK, "train_model_loss: %s: %s", msrnn_status_name(st), msrnn_last_error());
    CHECK(loss2 == loss, "train_model_loss %.9g differs from train_model_step's %.9g",
          (double)loss2, (double)loss);
    CHECK(memcmp(g, g1, np * sizeof *g) == 0, "train_model_loss changed the gradients");

    /* zero_grad zeroes; grad_scale 0.5 halves. */
    train_model_zero_grad(m);
    size_t nz = 0;
    for (size_t i = 0; i < np; i++) nz += g[i] != 0.0f;
    CHECK(nz == 0, "%zu gradients are not zero after train_model_zero_grad", nz);
    if (step(m, tok, 0.5f, &loss2) != MSRNN_OK) goto done;
    CHECK(loss2 == loss, "grad_scale 0.5: loss %.9g, with 1: %.9g (must be the unscaled loss)",
          (double)loss2, (double)loss);
    res->half = max_rel_err_f(g, g1, 0.5, np);
    res->half_exact = 1;
    for (size_t i = 0; i < np && res->half_exact; i++) res->half_exact = g[i] == 0.5f * g1[i];
    CHECK(res->half <= HALF_TOL, "grad_scale 0.5: gradients are not half those of 1: error %.3g",
          res->half);

    /* Two steps without zero_grad accumulate. */
    train_model_zero_grad(m);
    if (step(m, tok, 1.0f, &loss2) != MSRNN_OK || step(m, tok, 1.0f, &loss2) != MSRNN_OK) goto done;
    res->accum = max_rel_err_f(g, g1, 2.0, np);
    CHECK(res->accum <= ACCUM_TOL, "two steps without zero_grad: not twice one step: error %.3g",
          res->accum);

    /* 1 thread: bit-identical to N_THREADS (ops.h splits only over outputs). */
    train_model *m1 = NULL;
    if (open_model(path, r, 1, &m1) != MSRNN_OK) goto done;
    train_model_zero_grad(m1);
    if (step(m1, tok, 1.0f, &loss2) == MSRNN_OK) {
        res->threads_same =
            loss2 == loss && memcmp(train_model_grads(m1), g1, np * sizeof *g1) == 0;
        CHECK(res->threads_same, "1 thread: loss %.9g vs %.9g, gradients differ by %.3g",
              (double)loss2, (double)loss, max_rel_err_f(train_model_grads(m1), g1, 1.0, np));
    }
    train_model_free(m1);
    ok = 1;
done:
    free(g1);
    return ok;
}

/* A direction for a central difference: u_i uniform in ±½ scaled by |w_i| + 0.01, so that every
 * tensor moves a little; returns <g, u>. x: the generator's state (xorshift64). */
static double random_direction(float *u, const float *w, const float *g, size_t np, uint64_t *x) {
    double gu = 0;
    for (size_t i = 0; i < np; i++) {
        *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
        u[i] = (float)((*x >> 11) * 0x1.0p-53 - 0.5) * (fabsf(w[i]) + 0.01f);
        gu += (double)g[i] * u[i];
    }
    return gu;
}

/* ---- 2b. a loss over the last n targets (train --loss-last) ---------------------------------- */

/* With train_model_set_loss_last(n): the loss is the mean cross-entropy of the last n targets of
 * each sequence, computed here in double from train_model_logits (which does not go through the
 * loss); its gradient matches a central difference of train_model_loss along a random direction;
 * n = T gives the plain step bit for bit. */
#define LAST_LOSS_TOL 1e-5
#define LAST_FD_TOL 2e-2

static int check_loss_last(const train_ref *r, train_model *m, double *loss_err, double *fd_err) {
    const size_t np = r->n_params;
    const int T = r->T, B = r->B, V = r->n_vocab, n = T / 3 > 0 ? T / 3 : 1;
    const int32_t *tok = batch(r, 0);
    float *g = train_model_grads(m), *w = train_model_params(m);
    float *gall = malloc(np * sizeof *gall), *lg = malloc((size_t)T * V * sizeof *lg);
    float *u = malloc(np * sizeof *u), *w0 = malloc(np * sizeof *w0);
    int ok = 0;
    float lall = 0, ln = 0, lp = 0, lm = 0, lt = 0;
    if (!gall || !lg || !u || !w0) goto done;
    train_model_zero_grad(m);
    if (step(m, tok, 1.0f, &lall) != MSRNN_OK) goto done;
    memcpy(gall, g, np * sizeof *g);
    train_model_set_loss_last(m, T); /* all of them: the plain step */
    train_model_zero_grad(m);
    if (step(m, tok, 1.0f, &lt) != MSRNN_OK) goto done;
    CHECK(lt == lall && memcmp(g, gall, np * sizeof *g) == 0,
          "loss_last = T: loss %.9g vs %.9g, or other gradients", (double)lt, (double)lall);

    train_model_set_loss_last(m, n);
    CHECK(train_model_loss_last(m) == n, "train_model_loss_last %d, set %d",
          train_model_loss_last(m), n);
    train_model_zero_grad(m);
    if (step(m, tok, 1.0f, &ln) != MSRNN_OK) goto done;
    double ref = 0;
    for (int b = 0; b < B; b++) {
        if (train_model_logits(m, tok, b, lg) != MSRNN_OK) goto done;
        for (int t = T - n; t < T; t++) {
            const float *z = lg + (size_t)t * V;
            double mx = z[0], se = 0;
            for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
            for (int v = 0; v < V; v++) se += exp(z[v] - mx);
            ref += mx + log(se) - z[tok[(size_t)b * (T + 1) + t + 1]];
        }
    }
    ref /= (double)B * n;
    *loss_err = rel(ln, ref);
    CHECK(*loss_err <= LAST_LOSS_TOL, "loss over the last %d targets %.9g, from the logits %.9g", n,
          (double)ln, ref);

    /* d/dh loss(w + h u) at 0 against <g, u>: u of the gradient's sign pattern scaled by |w| + 0.01
     * so that every tensor moves a little and the directional derivative is far from zero */
    uint64_t x = 0x9e3779b97f4a7c15ull;
    const double gu = random_direction(u, w, g, np, &x);
    memcpy(w0, w, np * sizeof *w);
    const double h = 1e-2;
    for (size_t i = 0; i < np; i++) w[i] = w0[i] + (float)h * u[i];
    if (train_model_loss(m, tok, &lp) != MSRNN_OK) goto done;
    for (size_t i = 0; i < np; i++) w[i] = w0[i] - (float)h * u[i];
    if (train_model_loss(m, tok, &lm) != MSRNN_OK) goto done;
    memcpy(w, w0, np * sizeof *w);
    const double fd = ((double)lp - lm) / (2 * h);
    *fd_err = fabs(fd - gu) / fmax(fabs(gu), 1e-12);
    CHECK(*fd_err <= LAST_FD_TOL,
          "loss over the last %d targets: <g, u> %.6g, central difference "
          "%.6g (error %.3g)",
          n, gu, fd, *fd_err);
    ok = 1;
done:
    train_model_set_loss_last(m, 0);
    free(gall), free(lg), free(u), free(w0);
    return ok;
}

/* ---- 2c. distillation (train --teacher) -------------------------------------------------------
 */

/* With train_model_set_teacher(z): the step's loss is the mean over the B·T rows of
 * KL(softmax(z_row) ‖ softmax(logits_row)), computed here in double from train_model_logits; its
 * gradient matches a central difference of that double KL along a random direction; the
 * validation loss (train_model_loss) stays the cross-entropy; NULL gives the plain step back bit
 * for bit. The teacher's logits are random, of std 2. */
static double kl_of(train_model *m, const int32_t *tok, const float *z, int B, int T, int V,
                    float *lg) {
    double kl = 0;
    for (int b = 0; b < B; b++) {
        if (train_model_logits(m, tok, b, lg) != MSRNN_OK) return NAN;
        for (int t = 0; t < T; t++) {
            const float *ls = lg + (size_t)t * V, *lt = z + ((size_t)b * T + t) * V;
            double ms = ls[0], mt = lt[0], zs = 0, zt = 0;
            for (int v = 1; v < V; v++) ms = fmax(ms, ls[v]), mt = fmax(mt, lt[v]);
            for (int v = 0; v < V; v++) zs += exp(ls[v] - ms), zt += exp(lt[v] - mt);
            for (int v = 0; v < V; v++) {
                const double lpt = lt[v] - mt - log(zt), lps = ls[v] - ms - log(zs);
                kl += exp(lpt) * (lpt - lps);
            }
        }
    }
    return kl / ((double)B * T);
}

static int check_teacher(const train_ref *r, train_model *m, double *loss_err, double *fd_err) {
    const size_t np = r->n_params;
    const int T = r->T, B = r->B, V = r->n_vocab;
    const int32_t *tok = batch(r, 0);
    float *g = train_model_grads(m), *w = train_model_params(m);
    float *z = malloc((size_t)B * T * V * sizeof *z), *lg = malloc((size_t)T * V * sizeof *lg);
    float *u = malloc(np * sizeof *u), *w0 = malloc(np * sizeof *w0),
          *gce = malloc(np * sizeof *gce);
    int ok = 0;
    float lk = 0, lce = 0, lval = 0, lplain = 0;
    if (!z || !lg || !u || !w0 || !gce) goto done;
    uint64_t x = 0x2545f4914f6cdd1dull;
    for (size_t i = 0; i < (size_t)B * T * V; i++) { /* N(0, 4) by Box-Muller */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const double u1 = ((x >> 11) + 1.0) * 0x1.0p-53;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const double u2 = (x >> 11) * 0x1.0p-53;
        z[i] = (float)(2 * sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
    }
    train_model_zero_grad(m);
    if (step(m, tok, 1.0f, &lce) != MSRNN_OK) goto done;
    memcpy(gce, g, np * sizeof *g);
    train_model_set_teacher(m, z);
    train_model_zero_grad(m);
    if (step(m, tok, 1.0f, &lk) != MSRNN_OK) goto done;
    const double ref = kl_of(m, tok, z, B, T, V, lg);
    *loss_err = rel(lk, ref);
    CHECK(*loss_err <= LAST_LOSS_TOL, "distillation loss %.9g, KL from the logits %.9g", (double)lk,
          ref);
    if (train_model_loss(m, tok, &lval) != MSRNN_OK) goto done;
    CHECK(lval == lce, "validation with a teacher set: %.9g, the cross-entropy is %.9g",
          (double)lval, (double)lce);
    const double gu = random_direction(u, w, g, np, &x);
    memcpy(w0, w, np * sizeof *w);
    const double h = 1e-2;
    for (size_t i = 0; i < np; i++) w[i] = w0[i] + (float)h * u[i];
    const double kp = kl_of(m, tok, z, B, T, V, lg);
    for (size_t i = 0; i < np; i++) w[i] = w0[i] - (float)h * u[i];
    const double km = kl_of(m, tok, z, B, T, V, lg);
    memcpy(w, w0, np * sizeof *w);
    const double fd = (kp - km) / (2 * h);
    *fd_err = fabs(fd - gu) / fmax(fabs(gu), 1e-12);
    CHECK(*fd_err <= LAST_FD_TOL, "distillation: <g, u> %.6g, central difference %.6g (error %.3g)",
          gu, fd, *fd_err);
    train_model_set_teacher(m, NULL);
    train_model_zero_grad(m);
    if (step(m, tok, 1.0f, &lplain) != MSRNN_OK) goto done;
    CHECK(lplain == lce && memcmp(g, gce, np * sizeof *g) == 0,
          "teacher unset: loss %.9g vs %.9g, or other gradients", (double)lplain, (double)lce);
    ok = 1;
done:
    train_model_set_teacher(m, NULL);
    free(z), free(lg), free(u), free(w0), free(gce);
    return ok;
}

/* ---- 3. the AdamW trajectory --------------------------------------------------------------- */

typedef struct {
    double lr, loss, norm, norm_self;
    worst_err formula, pmax, pupd;
} traj_result;

/* adamw.h in double from the state before the step (p0, m0, v0, g) and the engine's norm gn;
 * compares the engine's m1, v1 and p1 (p from the engine's own m1, v1, so that each is checked on
 * its own). Errors are relative to each tensor's max |expected|; w keeps the worst. */
static void check_formula(const train_ref *r, const size_t *off, const adamw_params *ap, int t,
                          float lr, float gn, const float *p0, const float *m0, const float *v0,
                          const float *g, const float *p1, const float *m1, const float *v1,
                          worst_err *w, int s) {
    const double b1 = ap->beta1, b2 = ap->beta2, eps = ap->eps;
    const double scale = ap->clip > 0 && gn > ap->clip ? ap->clip / (double)gn : 1.0;
    const double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
    for (int i = 0; i < r->n_tensors; i++) {
        const ref_tensor *rt = &r->tensors[i];
        const size_t o = off[i];
        const double wd = rt->decay ? ap->weight_decay : 0.0;
        double em = 0, ev = 0, ep = 0, sm = 0, sv = 0, sp = 0;
        for (size_t k = o; k < o + rt->n; k++) {
            double gk = g[k] * scale;
            double m = b1 * m0[k] + (1 - b1) * gk, v = b2 * v0[k] + (1 - b2) * gk * gk;
            double p = p0[k] - lr * ((m1[k] / bc1) / (sqrt(v1[k] / bc2) + eps) + wd * p0[k]);
            em = fmax(em, fabs(m1[k] - m)), sm = fmax(sm, fabs(m));
            ev = fmax(ev, fabs(v1[k] - v)), sv = fmax(sv, fabs(v));
            ep = fmax(ep, fabs(p1[k] - p)), sp = fmax(sp, fabs(p));
            if (isnan(p1[k]) || isnan(m1[k]) || isnan(v1[k])) ep = INFINITY;
        }
        double e = fmax(fmax(sm > 0 ? em / sm : em, sv > 0 ? ev / sv : ev), sp > 0 ? ep / sp : ep);
        char where[96];
        snprintf(where, sizeof where, "step %d %s", s, rt->name);
        note(w, e, where);
        CHECK(e <= ADAMW_TOL,
              "adamw_step %d, %s: m error %.3g, v %.3g, params %.3g (relative to max) > %.0e", s,
              rt->name, sm > 0 ? em / sm : em, sv > 0 ? ev / sv : ev, sp > 0 ? ep / sp : ep,
              ADAMW_TOL);
    }
}

static int check_trajectory(const char *path, const train_ref *r, const size_t *off,
                            traj_result *res) {
    train_model *m = NULL;
    if (open_model(path, r, N_THREADS, &m) != MSRNN_OK) return 0;
    const size_t np = r->n_params;
    float *mom = calloc(np, sizeof *mom), *vel = calloc(np, sizeof *vel);
    float *p0 = malloc(np * sizeof *p0), *m0 = malloc(np * sizeof *m0),
          *v0 = malloc(np * sizeof *v0), *g = malloc(np * sizeof *g);
    int ok = mom && vel && p0 && m0 && v0 && g;
    const adamw_params ap = {(float)r->lr_max, (float)r->lr_min,       r->warmup,
                             r->n_steps,       (float)r->beta1,        (float)r->beta2,
                             (float)r->eps,    (float)r->weight_decay, (float)r->clip};
    float *p = train_model_params(m);
    for (int s = 0; ok && s < r->n_steps; s++) {
        float lr = lr_at(&ap, s);
        double e = rel(lr, r->lr[s]);
        res->lr = fmax(res->lr, e);
        CHECK(e <= LR_TOL, "lr_at(%d) = %.9g, reference %.9g", s, (double)lr, r->lr[s]);

        train_model_zero_grad(m);
        double loss = 0;
        for (int j = 0; ok && j < r->n_micro; j++) {
            float l;
            ok = step(m, batch(r, s * r->n_micro + j), 1.0f / (float)r->n_micro, &l) == MSRNN_OK;
            loss += l;
        }
        if (!ok) break;
        loss /= r->n_micro;
        e = rel(loss, r->loss[s]);
        res->loss = fmax(res->loss, e);
        CHECK(e <= TRAJ_LOSS_TOL, "step %d: loss %.9g, reference %.9g: error %.3g > %.0e", s, loss,
              r->loss[s], e, TRAJ_LOSS_TOL);

        memcpy(p0, p, np * sizeof *p);
        memcpy(m0, mom, np * sizeof *m0);
        memcpy(v0, vel, np * sizeof *v0);
        memcpy(g, train_model_grads(m), np * sizeof *g);
        float gn = adamw_step(&ap, s + 1, lr, train_model_params_list(m), train_model_params(m),
                              train_model_grads(m), mom, vel, N_THREADS);
        e = rel(gn, r->gnorm[s]);
        res->norm = fmax(res->norm, e);
        CHECK(e <= TRAJ_NORM_TOL, "step %d: gradient norm %.9g, reference %.9g: error %.3g > %.0e",
              s, (double)gn, r->gnorm[s], e, TRAJ_NORM_TOL);
        double ss = 0;
        for (size_t k = 0; k < np; k++) ss += (double)g[k] * g[k];
        e = rel(gn, sqrt(ss));
        res->norm_self = fmax(res->norm_self, e);
        CHECK(e <= NORM_SELF_TOL, "step %d: adamw_step returned norm %.9g, its gradients' is %.9g",
              s, (double)gn, sqrt(ss));
        e = rel(grad_norm(g, np), sqrt(ss));
        CHECK(e <= NORM_SELF_TOL, "step %d: grad_norm %.9g, double %.9g", s,
              (double)grad_norm(g, np), sqrt(ss));
        check_formula(r, off, &ap, s + 1, lr, gn, p0, m0, v0, g, p, mom, vel, &res->formula, s);
    }
    for (int i = 0; ok && i < r->n_tensors; i++) {
        const ref_tensor *rt = &r->tensors[i];
        const float *got = p + off[i], *init = r->params0 + rt->offset;
        const double *want = r->params + rt->offset;
        double emax = max_rel_err(got, want, rt->n), d2 = 0, u2 = 0;
        for (size_t k = 0; k < rt->n; k++) {
            d2 += (got[k] - want[k]) * (got[k] - want[k]);
            u2 += (want[k] - init[k]) * (want[k] - init[k]);
        }
        double eupd = u2 > 0 ? sqrt(d2 / u2) : sqrt(d2);
        if (isnan(eupd)) eupd = INFINITY;
        note(&res->pmax, emax, rt->name);
        note(&res->pupd, eupd, rt->name);
        CHECK(emax <= TRAJ_MAX_TOL && eupd <= TRAJ_UPD_TOL,
              "%s after %d steps: max error %.3g (tol %.0e), |Δ| / |update| %.3g (tol %.0e)",
              rt->name, r->n_steps, emax, TRAJ_MAX_TOL, eupd, TRAJ_UPD_TOL);
    }
    free(mom);
    free(vel);
    free(p0);
    free(m0);
    free(v0);
    free(g);
    train_model_free(m);
    return ok;
}

/* ---- per config ---------------------------------------------------------------------------- */

static int test_config(const char *dir, const char *name, const char *sims) {
    const int failures0 = failures;
    char path[4096 + 256 + 16];
    train_ref r;
    snprintf(path, sizeof path, "%s/%s.ref", dir, name);
    if (!ref_read(path, &r)) {
        failures++;
        printf("%s: FAIL no reference\n", name);
        return 0;
    }
    snprintf(path, sizeof path, "%s/%s.gguf", dir, name);
    printf("%s (B %d, T %d, %d micro-batch%s, %zu params):\n", name, r.B, r.T, r.n_micro,
           r.n_micro > 1 ? "es" : "", r.n_params);
    size_t *off = calloc((size_t)r.n_tensors, sizeof *off);
    train_model *m = NULL;
    grad_result gr = {0};
    traj_result tr = {0};
    int ok = off && open_model(path, &r, N_THREADS, &m) == MSRNN_OK;
    if (ok) ok = check_structure(m, &r, off);
    if (ok) ok = check_gradients(path, &r, off, m, &gr);
    double last_loss = 0, last_fd = 0;
    if (ok) ok = check_loss_last(&r, m, &last_loss, &last_fd);
    double kl_loss = 0, kl_fd = 0;
    if (ok) ok = check_teacher(&r, m, &kl_loss, &kl_fd);
    train_model_free(m);
    if (ok) ok = check_trajectory(path, &r, off, &tr);
    ok = ok && failures == failures0;
    if (!ok && failures == failures0) failures++;
    printf("%-16s %s: loss %.1e (tol %.0e); grads worst %.1e %s (tol %.0e); scale 0.5 %s %.1e; "
           "accum %.1e; 1 vs %d threads %s; trajectory: lr %.1e, losses %.1e (tol %.0e), norms "
           "%.1e (tol %.0e), final params max %.1e %s (tol %.0e), |Δ|/|update| %.1e %s (tol "
           "%.0e); adamw formula %.1e at %s (tol %.0e), norm vs own %.1e; loss-last %.1e (tol "
           "%.0e), its gradient vs central difference %.1e (tol %.0e); distillation KL %.1e, its "
           "gradient vs central difference %.1e [f32 sim: %s]\n",
           name, ok ? "ok  " : "FAIL", gr.loss, LOSS_TOL, gr.grad.err, gr.grad.where, GRAD_TOL,
           gr.half_exact ? "exact" : "inexact", gr.half, gr.accum, N_THREADS,
           gr.threads_same ? "bit-identical" : "DIFFER", tr.lr, tr.loss, TRAJ_LOSS_TOL, tr.norm,
           TRAJ_NORM_TOL, tr.pmax.err, tr.pmax.where, TRAJ_MAX_TOL, tr.pupd.err, tr.pupd.where,
           TRAJ_UPD_TOL, tr.formula.err, tr.formula.where, ADAMW_TOL, tr.norm_self, last_loss,
           LAST_LOSS_TOL, last_fd, LAST_FD_TOL, kl_loss, kl_fd, sims);
    free(off);
    ref_free(&r);
    return ok;
}

/* train_model_open must refuse a missing file and a tensor of the wrong shape, with a message. */
static void test_bad_inputs(const char *dir) {
    char path[4096 + 64];
    train_model *m = NULL;
    snprintf(path, sizeof path, "%s/no_such_model.gguf", dir);
    msrnn_status st = train_model_open(path, 2, 16, N_THREADS, 0, &m);
    CHECK(st != MSRNN_OK && m == NULL && msrnn_last_error()[0] != 0,
          "train_model_open of a missing file: %s, message '%s'", msrnn_status_name(st),
          msrnn_last_error());
    printf("bad inputs: missing file -> %s: %s\n", msrnn_status_name(st), msrnn_last_error());
    if (st == MSRNN_OK) train_model_free(m);
    m = NULL;
    snprintf(path, sizeof path, "%s/bad_shape.gguf", dir);
    st = train_model_open(path, 2, 16, N_THREADS, 0, &m);
    CHECK(st != MSRNN_OK && m == NULL && strstr(msrnn_last_error(), "attn_k") != NULL,
          "train_model_open of a file whose blk.1.attn_k.weight is one row short: %s, message "
          "'%s' (must name the tensor)",
          msrnn_status_name(st), msrnn_last_error());
    printf("bad inputs: attn_k one row short -> %s: %s\n", msrnn_status_name(st),
           msrnn_last_error());
    if (st == MSRNN_OK) train_model_free(m);
}

int main(void) {
    const char *ref = getenv("MSRNN_REF_DIR");
    if (!ref) {
        printf("test_train_ref: MSRNN_REF_DIR is not set (run through ctest, after gen_ref)\n");
        return 1;
    }
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/train", ref);
    snprintf(path, sizeof path, "%s/MANIFEST.tsv", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("test_train_ref: cannot open %s (run tests/ref/gen_train_ref.py)\n", path);
        return 1;
    }
    int passed = 0, failed = 0;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char name[256];
        double s[6];
        if (line[0] == '#' || line[0] == '\n') continue;
        if (sscanf(line, "%255s %*d %*d %*d %*d %lf %lf %lf %lf %lf %lf", name, &s[0], &s[1], &s[2],
                   &s[3], &s[4], &s[5]) != 7) {
            printf("test_train_ref: bad manifest line: %s", line);
            failed++;
            continue;
        }
        char sims[256];
        snprintf(sims, sizeof sims,
                 "loss %.1e grads %.1e losses %.1e norms %.1e params max %.1e update %.1e", s[0],
                 s[1], s[2], s[3], s[4], s[5]);
        if (test_config(dir, name, sims))
            passed++;
        else
            failed++;
        fflush(stdout);
    }
    fclose(f);
    const int failures0 = failures;
    test_bad_inputs(dir);
    if (failures != failures0) failed++;
    if (passed == 0) failed++; /* an empty manifest proves nothing */
    printf("test_train_ref: %d passed, %d failed (%d checks, %d failed)\n", passed, failed, checks,
           failures);
    return failed ? 1 : 0;
}
