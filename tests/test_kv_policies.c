/* test_kv_policies.c — the bounded attention memories (METHODS.md §1) held to an independent
 * token-by-token float64 reference.
 *
 * tests/ref/gen_kv_ref.py builds three random-weight models (GQA H 4/2 head dim 32, 3 layers; GQA
 * H 6/2 head dim 64, 2 layers; MHA H 4/4 head dim 16, 2 layers) and, for window, sink(4), h2o, tova
 * and tova-head at k = 16, 32, 64 and merge at k = 16, 32, 64 with 0 and 4 sinks (β = -1, and
 * β = 0.5 and -inf at k = 32), runs a 320-token text one token at a time, recording each layer's
 * (each kv head's, for tova-head) kept positions after every step, the final scores, per-token
 * NLLs and the last logits. For every
 * model in $MSRNN_REF_DIR/kv/MANIFEST.tsv and every case, using only the public API:
 *   (a) one token per call: after EVERY step msrnn_session_kept of every layer (every kv head for
 *       tova-head) must equal the reference's set; per-token NLL within 1e-5; final scores within
 *       1e-4 relative (h2o's accumulated sums, tova's mean probabilities); window must hold the
 * last k positions, sink 0..n-1 plus the last k-n, merge 0..n-1 plus the last k-1-n once it has
 * evicted (checked on msrnn's sets, not the reference's), and merge's msrnn_session_merged() must
 * be the tokens seen minus the entries kept at every step;
 * msrnn_session_memory_bytes() must be the same at every sampled step once k entries are held
 * (merge: once it has folded) and below the full cache's after the whole input; for tova, a step
 * where the reference
 *       evicted the token just fed must exist and msrnn's set must lack that token;
 *   (b) all tokens in one call with logits_all (the layer-by-layer scan): NLL within 1e-5, the same
 *       final kept sets, and logits equal to (a) within 1e-5 of the logit scale. Not bit for bit:
 *       one-token calls take the decode matmul (dot kernels) and one call of T tokens takes sgemm,
 *       which round differently (memory "full" shows the same ~1e-7 difference, printed as a note);
 *       the eviction decisions themselves are compared exactly, at every step in (a);
 * plus: every policy with k = T gives logits bit-identical to "full" (both batched_attention 0).
 * merge with β = -inf is compared with the reference like the others (there its summary's weight
 * is exactly 0, checked against a run that never reads it), and is held to sink (window with no
 * sinks) at the budget less the summary's entries: the same logits bit for bit until it first
 * folds, the same kept positions at every step after (see "β = -inf" below for why not more).
 * Under the sanitizers (MSRNN_SANITIZED=1) only the first GQA and the first MHA model run.
 * Prints one line per case and "test_kv_policies: N passed, M failed"; exits 1 on any failure.
 *
 * NAME.kvref (little-endian; the generator's docstring is the authority):
 *   "KVRF", u32 version 2, u32 n_layers, n_heads, n_kv_heads, n_vocab, n_tokens T, n_cases;
 *   i32 tokens[T]; per case: char policy[16], u32 k, u32 n_sinks, u32 n_sets, f32 min_gap,
 *   f32 beta, f32 nll[T-1], f32 last_logits[n_vocab], i16 kept positions (for t, for set: n(t),
 *   ascending), f32 final scores (for set: n(T-1)), where n(t) = min(t+1, k) except for merge:
 *   t+1 while t+1 <= k, then k-1. The first case is "full" (k = 0, no sets).
 */
#include "msrnn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NLL_TOL 1e-5   /* absolute, nats: f32 engine vs float64 reference (logits of std ~1) */
#define LOGIT_TOL 1e-4 /* max |logit - ref| / max |ref| for the last logits */
#define SCORE_TOL 1e-4 /* relative, on the final kept scores */
#define MAX_REPORTS 5  /* mismatching kept sets printed per case */

typedef struct {
    char policy[17];
    int k, n_sinks, n_sets;
    float min_gap, beta;
    int n_cols, cost; /* summary policies: columns per kv head once folded, entries per column */
    int32_t *counts;  /* summary policies: every step's column counts (set, kv head, column) */
    float *nll;       /* (T-1) */
    float *last;      /* (n_vocab) */
    int16_t *kept;    /* all steps' sets, concatenated */
    size_t *step_off; /* (T+1) offsets into kept of each step's first set */
    float *scores;    /* (n_sets, min(T, k)) */
} kv_case;

typedef struct {
    int n_layers, n_heads, n_kv_heads, n_vocab, T, n_cases;
    int32_t *tokens;
    kv_case *cases;
} kv_ref;

static int n_passed, n_failed;

static int min_int(int a, int b) { return a < b ? a : b; }

/* Entries a set holds after step t, and summary columns per kv head (see the format above). */
static int kept_n(const kv_case *kc, int t) {
    if (kc->cost) return t + 1 <= kc->k ? t + 1 : kc->k - kc->cost * kc->n_cols;
    return min_int(t + 1, kc->k);
}
static int cols_n(const kv_case *kc, int t) { return kc->cost && t + 1 > kc->k ? kc->n_cols : 0; }

static void ref_free(kv_ref *r) {
    for (int c = 0; r->cases && c < r->n_cases; c++) {
        free(r->cases[c].nll);
        free(r->cases[c].last);
        free(r->cases[c].kept);
        free(r->cases[c].step_off);
        free(r->cases[c].counts);
        free(r->cases[c].scores);
    }
    free(r->cases);
    free(r->tokens);
    memset(r, 0, sizeof *r);
}

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static int rd(FILE *f, void *buf, size_t size, size_t n) { return fread(buf, size, n, f) == n; }

/* Reads NAME.kvref; returns 0 (and prints why) on failure. */
static int ref_read(const char *path, kv_ref *r) {
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("  cannot open %s\n", path);
        return 0;
    }
    char magic[4];
    uint32_t h[7];
    int ok = rd(f, magic, 1, 4) && memcmp(magic, "KVRF", 4) == 0 && rd(f, h, 4, 7) && h[0] == 2 &&
             h[1] > 0 && h[1] < 64 && h[2] > 0 && h[2] < 256 && h[3] > 0 && h[3] <= h[2] &&
             h[2] % h[3] == 0 && h[4] > 0 && h[4] < 1000000 && h[5] > 1 && h[5] < 30000 &&
             h[6] > 0 && h[6] < 1000;
    if (ok) {
        r->n_layers = (int)h[1];
        r->n_heads = (int)h[2];
        r->n_kv_heads = (int)h[3];
        r->n_vocab = (int)h[4];
        r->T = (int)h[5];
        r->n_cases = (int)h[6];
        r->tokens = xcalloc((size_t)r->T, sizeof *r->tokens);
        r->cases = xcalloc((size_t)r->n_cases, sizeof *r->cases);
        ok = rd(f, r->tokens, 4, (size_t)r->T);
    }
    for (int c = 0; ok && c < r->n_cases; c++) {
        kv_case *kc = &r->cases[c];
        uint32_t u[3], w[2];
        ok = rd(f, kc->policy, 1, 16) && rd(f, u, 4, 3) && rd(f, &kc->min_gap, 4, 1) &&
             rd(f, &kc->beta, 4, 1) && rd(f, w, 4, 2) && u[0] < 30000 && u[1] < 30000 &&
             u[2] <= (uint32_t)(r->n_layers * r->n_kv_heads) && w[0] <= 64 && w[1] <= 4 &&
             (w[1] == 0 || (w[0] > 0 && u[0] > w[0] * w[1]));
        if (!ok) break;
        kc->policy[16] = 0;
        kc->k = (int)u[0];
        kc->n_sinks = (int)u[1];
        kc->n_sets = (int)u[2];
        kc->n_cols = (int)w[0];
        kc->cost = (int)w[1];
        kc->nll = xcalloc((size_t)r->T - 1, sizeof *kc->nll);
        kc->last = xcalloc((size_t)r->n_vocab, sizeof *kc->last);
        kc->step_off = xcalloc((size_t)r->T + 1, sizeof *kc->step_off);
        size_t total = 0, n_counts = 0;
        for (int t = 0; t < r->T; t++) {
            kc->step_off[t] = total;
            total += (size_t)kc->n_sets * (size_t)kept_n(kc, t);
            n_counts += (size_t)kc->n_sets * r->n_kv_heads * cols_n(kc, t);
        }
        kc->step_off[r->T] = total;
        size_t n_scores = (size_t)kc->n_sets * (size_t)kept_n(kc, r->T - 1);
        kc->kept = xcalloc(total, sizeof *kc->kept);
        kc->counts = xcalloc(n_counts, sizeof *kc->counts);
        kc->scores = xcalloc(n_scores, sizeof *kc->scores);
        ok = rd(f, kc->nll, 4, (size_t)r->T - 1) && rd(f, kc->last, 4, (size_t)r->n_vocab);
        /* per step and set: the positions, then (summary policies) each kv head's counts */
        for (int t = 0, ci = 0; ok && t < r->T; t++)
            for (int set = 0; ok && set < kc->n_sets; set++) {
                const int n = kept_n(kc, t), nc = r->n_kv_heads * cols_n(kc, t);
                ok = rd(f, kc->kept + kc->step_off[t] + (size_t)set * n, 2, (size_t)n) &&
                     rd(f, kc->counts + ci, 4, (size_t)nc);
                ci += nc;
            }
        ok = ok && rd(f, kc->scores, 4, n_scores);
    }
    if (ok) ok = fgetc(f) == EOF; /* nothing left over */
    fclose(f);
    if (!ok) {
        printf("  %s: malformed or truncated\n", path);
        ref_free(r);
    }
    return ok;
}

/* The reference's set `set` after step t (n = kept_n(t) entries). */
static const int16_t *ref_set(const kv_case *kc, int t, int set) {
    return kc->kept + kc->step_off[t] + (size_t)set * (size_t)kept_n(kc, t);
}

/* The reference's counts of (set, kv head) after step t (cols_n(t) columns). */
static const int32_t *ref_counts(const kv_case *kc, const kv_ref *r, int t, int set, int g) {
    size_t off = 0;
    for (int u = 0; u < t; u++) off += (size_t)kc->n_sets * r->n_kv_heads * cols_n(kc, u);
    return kc->counts + off + ((size_t)set * r->n_kv_heads + g) * cols_n(kc, t);
}

static double nll_of(const float *logits, int n_vocab, int target) {
    double mx = logits[0];
    for (int i = 1; i < n_vocab; i++)
        if (logits[i] > mx) mx = logits[i];
    double s = 0;
    for (int i = 0; i < n_vocab; i++) s += exp((double)logits[i] - mx);
    return log(s) + mx - (double)logits[target];
}

static void print_set(const char *label, const int64_t *p, int n) {
    printf("      %s (%d):", label, n);
    for (int i = 0; i < n; i++) printf(" %d", (int)p[i]);
    printf("\n");
}

/* n_sinks 0 is "none" here (the library's 0 means its default) */
static msrnn_session *open_session_beta(msrnn_model *m, const char *memory, int k, int n_sinks,
                                        int T, float beta, int clusters) {
    msrnn_session_params p = msrnn_session_default_params();
    p.n_ctx = T;
    p.n_threads = 2;
    p.memory = memory;
    p.kv_size = k;
    p.kv_sinks = n_sinks > 0 ? n_sinks : -1;
    p.kv_merge_bias = beta;
    p.kv_clusters = clusters;
    p.batched_attention = 0;
    msrnn_session *s = NULL;
    msrnn_status st = msrnn_session_open(m, &p, &s);
    if (st != MSRNN_OK) {
        printf("    session_open(memory %s, kv_size %d): %s: %s\n", memory, k,
               msrnn_status_name(st), msrnn_last_error());
        return NULL;
    }
    return s;
}

static msrnn_session *open_session(msrnn_model *m, const char *memory, int k, int n_sinks, int T) {
    return open_session_beta(m, memory, k, n_sinks, T, -1.0f, 0);
}

static void verdict(int ok, const char *fmt_name, const char *detail) {
    printf("  %-48s %s  %s\n", fmt_name, ok ? "ok  " : "FAIL", detail);
    if (ok)
        n_passed++;
    else
        n_failed++;
}

/* (a) one token per call with every kept set checked, (b) all at once; one verdict line. */
static void run_case(msrnn_model *m, const kv_ref *r, const kv_case *kc, const char *model_name,
                     size_t full_mem_bytes, float *la, float *lb) {
    const int T = r->T, V = r->n_vocab, L = r->n_layers;
    const int per_head = strcmp(kc->policy, "tova-head") == 0;
    const int sets_per_layer = per_head ? r->n_kv_heads : 1;
    const int is_tova = strncmp(kc->policy, "tova", 4) == 0;
    const int is_h2o = strcmp(kc->policy, "h2o") == 0;
    const int is_merge = kc->cost > 0; /* merge, merge-var, merge-clusters */
    const int k = kc->k;
    char name[160], detail[512];
    if (is_merge)
        snprintf(name, sizeof name, "%s %s k=%d sinks %d beta %g S %d", model_name, kc->policy, k,
                 kc->n_sinks, (double)kc->beta, kc->n_cols);
    else
        snprintf(name, sizeof name, "%s %s k=%d", model_name, kc->policy, k);
    int ok = 1;
    if (kc->n_sets != L * sets_per_layer) {
        snprintf(detail, sizeof detail, "reference has %d sets, expected %d", kc->n_sets,
                 L * sets_per_layer);
        verdict(0, name, detail);
        return;
    }
    msrnn_session *s = open_session_beta(m, kc->policy, k, kc->n_sinks, T, kc->beta, kc->n_cols);
    if (!s) {
        verdict(0, name, "cannot open session");
        return;
    }
    int64_t *pos = xcalloc((size_t)T + 2, sizeof *pos);
    int64_t *want32 = xcalloc((size_t)T + 2, sizeof *want32);
    float *score = xcalloc((size_t)T + 2, sizeof *score);
    int reports = 0, set_mismatch = 0, struct_bad = 0, newest_step = -1, newest_ok = 1;
    int merged_bad = 0;
    double nll_a = 0, nll_b = 0, score_err = 0, logit_err = 0;
    size_t mem_first = 0;
    int mem_const = 1, mem_samples = 0;
    /* merge holds k entries until its first fold (step k), then k - 1 and the summary */
    const int sample_at[] = {is_merge ? k + 2 : k - 1, k, k + 1, k + 7, T / 2, T - 1};

    /* (a) one token per call */
    for (int t = 0; t < T && ok; t++) {
        msrnn_status st = msrnn_session_eval(s, &r->tokens[t], 1, NULL);
        if (st != MSRNN_OK) {
            printf("    step %d: eval: %s: %s\n", t, msrnn_status_name(st), msrnn_last_error());
            ok = 0;
            break;
        }
        memcpy(la + (size_t)t * V, msrnn_session_logits(s), (size_t)V * sizeof(float));
        if (t < T - 1) {
            double e = fabs(nll_of(la + (size_t)t * V, V, r->tokens[t + 1]) - kc->nll[t]);
            if (e > nll_a) nll_a = e;
        }
        for (size_t i = 0; i < sizeof sample_at / sizeof sample_at[0]; i++) {
            if (sample_at[i] != t) continue;
            size_t b = msrnn_session_memory_bytes(s);
            if (mem_samples++ == 0)
                mem_first = b;
            else if (b != mem_first) {
                mem_const = 0;
                printf("    memory_bytes %zu at step %d, %zu at step %d\n", b, t, mem_first, k - 1);
            }
            break;
        }
        const int n = kept_n(kc, t);
        for (int set = 0; set < kc->n_sets; set++) {
            const int layer = set / sets_per_layer, head = per_head ? set % sets_per_layer : -1;
            const int16_t *want = ref_set(kc, t, set);
            int got = msrnn_session_kept(s, layer, head, pos, score, T + 2);
            int same = got == n;
            for (int i = 0; same && i < n; i++) same = pos[i] == want[i];
            if (!same) {
                set_mismatch++;
                if (reports++ < MAX_REPORTS) {
                    printf("    step %d layer %d head %d: kept set differs\n", t, layer, head);
                    for (int i = 0; i < n; i++) want32[i] = want[i];
                    print_set("reference", want32, n);
                    print_set("msrnn    ", pos, got < 0 ? 0 : min_int(got, T + 2));
                }
            }
            /* Structure, on msrnn's own set (independent of the reference). */
            if (got == n && !strcmp(kc->policy, "window")) {
                for (int i = 0; i < n; i++)
                    if (pos[i] != t + 1 - n + i) struct_bad++;
            } else if (got == n && !strcmp(kc->policy, "sink") && t + 1 > k) {
                for (int i = 0; i < n; i++)
                    if (pos[i] != (i < kc->n_sinks ? i : t + 1 - (k - i))) struct_bad++;
            } else if (got == n && is_merge) {
                for (int i = 0; i < n; i++)
                    if (pos[i] != (t + 1 <= k || i < kc->n_sinks ? i : t + 1 - (n - i)))
                        struct_bad++;
            }
            if (is_merge) { /* every token seen is kept or summarised, in every kv head */
                for (int g = 0; g < r->n_kv_heads; g++) {
                    int64_t merged = -1, counts[65] = {0}, sum = 0;
                    const int nc = msrnn_session_summary(s, layer, g, &merged, counts, 65);
                    const int32_t *wc = ref_counts(kc, r, t, set, g);
                    int same = nc == cols_n(kc, t) && merged == (int64_t)(t + 1) - got;
                    for (int c = 0; same && c < nc; c++) same = counts[c] == wc[c];
                    for (int c = 0; c < nc && c < 65; c++) sum += counts[c];
                    same = same && sum == merged;
                    if (!same && merged_bad++ < MAX_REPORTS) {
                        printf("    step %d layer %d kv head %d: %d columns, %lld folded, counts",
                               t, layer, g, nc, (long long)merged);
                        for (int c = 0; c < nc && c < 65; c++)
                            printf(" %lld", (long long)counts[c]);
                        printf("; reference %d columns, counts", cols_n(kc, t));
                        for (int c = 0; c < cols_n(kc, t); c++) printf(" %d", (int)wc[c]);
                        printf("\n");
                    }
                }
            } else if (msrnn_session_summary(s, layer, -1, NULL, NULL, 0) != 0) {
                merged_bad++;
            }
            /* TOVA evicting the token just fed: the first such step in the reference. */
            if (is_tova && newest_step < 0 && t >= k) {
                int in_ref = 0, in_got = 0;
                for (int i = 0; i < n; i++) in_ref |= want[i] == t;
                for (int i = 0; i < got && i < T + 2; i++) in_got |= pos[i] == t;
                if (!in_ref) {
                    newest_step = t;
                    newest_ok = !in_got;
                    printf("    reference evicts the newest token at step %d (layer %d head %d); "
                           "msrnn %s\n",
                           t, layer, head, in_got ? "KEEPS it" : "evicts it too");
                }
            }
            /* Final scores. */
            if (t == T - 1 && got == n && (is_tova || is_h2o)) {
                const float *ws = kc->scores + (size_t)set * (size_t)n;
                for (int i = 0; i < n; i++) {
                    double e = fabs((double)score[i] - ws[i]) / (fabs((double)ws[i]) + 1e-12);
                    if (e > score_err) score_err = e;
                }
            }
        }
    }
    if (mem_samples < 2 || !mem_const || !(mem_first < full_mem_bytes)) {
        printf("    memory_bytes: %d samples, %s, %zu vs full %zu\n", mem_samples,
               mem_const ? "constant" : "NOT constant", mem_first, full_mem_bytes);
        ok = 0;
    }
    for (int i = 0; ok && i < V; i++) {
        double e = fabs((double)la[(size_t)(T - 1) * V + i] - kc->last[i]);
        if (e > logit_err) logit_err = e;
    }
    double ref_max = 0;
    for (int i = 0; i < V; i++)
        if (fabs(kc->last[i]) > ref_max) ref_max = fabs(kc->last[i]);
    logit_err /= ref_max;
    msrnn_session_close(s);

    /* (b) all tokens in one call */
    int identical = 0;
    s = ok ? open_session_beta(m, kc->policy, k, kc->n_sinks, T, kc->beta, kc->n_cols) : NULL;
    if (s) {
        msrnn_status st = msrnn_session_eval(s, r->tokens, T, lb);
        if (st != MSRNN_OK) {
            printf("    one call: eval: %s: %s\n", msrnn_status_name(st), msrnn_last_error());
            ok = 0;
        } else {
            for (int t = 0; t < T - 1; t++) {
                double e = fabs(nll_of(lb + (size_t)t * V, V, r->tokens[t + 1]) - kc->nll[t]);
                if (e > nll_b) nll_b = e;
            }
            double scale = 0, diff = 0;
            for (size_t i = 0; i < (size_t)T * V; i++) {
                scale = fabs(la[i]) > scale ? fabs(la[i]) : scale;
                diff = fabs(la[i] - lb[i]) > diff ? fabs(la[i] - lb[i]) : diff;
            }
            identical = diff <= 1e-5 * scale;
            if (!identical) {
                size_t i = 0, n_all = (size_t)T * V;
                while (i + 1 < n_all && memcmp(&la[i], &lb[i], sizeof(float)) == 0) i++;
                printf("    (a) vs (b): first differing logit at token %zu, id %zu: %.9g vs %.9g\n",
                       i / (size_t)V, i % (size_t)V, la[i], lb[i]);
            }
            /* the one-call scan must end with the same sets */
            for (int set = 0; set < kc->n_sets; set++) {
                const int layer = set / sets_per_layer, head = per_head ? set % sets_per_layer : -1;
                const int n = kept_n(kc, T - 1);
                const int16_t *want = ref_set(kc, T - 1, set);
                int got = msrnn_session_kept(s, layer, head, pos, NULL, T + 2);
                int same = got == n;
                for (int i = 0; same && i < n; i++) same = pos[i] == want[i];
                if (!same) {
                    printf("    one call: final set of layer %d head %d differs\n", layer, head);
                    set_mismatch++;
                }
            }
        }
        msrnn_session_close(s);
    } else {
        ok = 0;
    }
    free(pos);
    free(want32);
    free(score);

    const double nll_tol = NLL_TOL;
    if (set_mismatch || struct_bad || merged_bad || nll_a > nll_tol || nll_b > nll_tol ||
        !identical || logit_err > LOGIT_TOL || score_err > SCORE_TOL ||
        (is_tova && (newest_step < 0 || !newest_ok)))
        ok = 0;
    if (is_tova && newest_step < 0)
        printf("    the reference never evicts the newest token (regenerate with another seed)\n");
    snprintf(detail, sizeof detail,
             "sets %s%s%s, NLL err %.1e/%.1e, last logits %.1e, (a)%s(b), scores %.1e, mem %zu/%zu "
             "B, ref gap %.1e",
             set_mismatch ? "DIFFER" : "equal", struct_bad ? " (BAD STRUCTURE)" : "",
             merged_bad ? " (BAD SUMMARY COUNT)" : "", nll_a, nll_b, logit_err,
             identical ? "==" : "!=", score_err, mem_first, full_mem_bytes, (double)kc->min_gap);
    verdict(ok, name, detail);
}

static void run_model(const char *dir, const char *name) {
    char path[1024];
    kv_ref r;
    snprintf(path, sizeof path, "%s/kv/%s.kvref", dir, name);
    if (!ref_read(path, &r)) {
        verdict(0, name, "cannot read reference");
        return;
    }
    snprintf(path, sizeof path, "%s/kv/%s.gguf", dir, name);
    msrnn_model *m = NULL;
    msrnn_status st = msrnn_model_open(path, &m);
    if (st != MSRNN_OK) {
        printf("  %s: %s: %s\n", path, msrnn_status_name(st), msrnn_last_error());
        verdict(0, name, "cannot open model");
        ref_free(&r);
        return;
    }
    const msrnn_model_info *info = msrnn_model_get_info(m);
    if (info->n_layers != r.n_layers || info->n_heads != r.n_heads ||
        info->n_kv_heads != r.n_kv_heads || info->n_vocab != r.n_vocab ||
        strcmp(r.cases[0].policy, "full") != 0) {
        verdict(0, name, "model and reference disagree on the shape");
        msrnn_model_close(m);
        ref_free(&r);
        return;
    }
    const int T = r.T, V = r.n_vocab;
    float *la = xcalloc((size_t)T * V, sizeof(float));
    float *lb = xcalloc((size_t)T * V, sizeof(float));
    float *lfull = xcalloc((size_t)T * V, sizeof(float));

    /* The full cache, all at once (batched_attention 0): NLL vs the reference. */
    char label[160], detail[256];
    size_t full_mem = 0;
    int full_ok = 0;
    snprintf(label, sizeof label, "%s full", name);
    msrnn_session *s = open_session(m, "full", 0, 0, T);
    if (s && msrnn_session_eval(s, r.tokens, T, lfull) == MSRNN_OK) {
        double e = 0;
        for (int t = 0; t < T - 1; t++) {
            double d = fabs(nll_of(lfull + (size_t)t * V, V, r.tokens[t + 1]) - r.cases[0].nll[t]);
            if (d > e) e = d;
        }
        full_mem = msrnn_session_memory_bytes(s);
        full_ok = e <= NLL_TOL && full_mem > 0;
        snprintf(detail, sizeof detail, "NLL err %.1e, memory %zu B after %d tokens", e, full_mem,
                 T);
    } else {
        snprintf(detail, sizeof detail, "cannot evaluate: %s", msrnn_last_error());
    }
    if (s) msrnn_session_close(s);
    verdict(full_ok, label, detail);

    /* Information only (not counted): full, one token per call vs all at once. When these differ
     * too, a bounded case's "(a)!=(b)" comes from outside the memories (the matmul paths). */
    s = open_session(m, "full", 0, 0, T);
    int diff_at = s ? -1 : 0;
    for (int t = 0; s && diff_at < 0 && t < T; t++)
        if (msrnn_session_eval(s, &r.tokens[t], 1, NULL) != MSRNN_OK ||
            memcmp(msrnn_session_logits(s), lfull + (size_t)t * V, (size_t)V * sizeof(float)))
            diff_at = t;
    if (s) msrnn_session_close(s);
    if (diff_at < 0)
        printf("  (note) %s full: one token per call == one call, bit-identical\n", name);
    else
        printf("  (note) %s full: one token per call != one call from token %d on\n", name,
               diff_at);

    for (int c = 1; c < r.n_cases; c++)
        run_case(m, &r, &r.cases[c], name, full_mem ? full_mem : (size_t)-1, la, lb);

    /* A budget covering the whole input evicts nothing: bit-identical to full. */
    static const char *policies[] = {"window",    "sink",  "h2o",       "tova",
                                     "tova-head", "merge", "merge-var", "merge-clusters"};
    for (size_t i = 0; i < sizeof policies / sizeof policies[0]; i++) {
        snprintf(label, sizeof label, "%s %s k=%d (>= T) == full", name, policies[i], T);
        s = open_session(m, policies[i], T, 4, T);
        int same = 0;
        if (s && msrnn_session_eval(s, r.tokens, T, la) == MSRNN_OK)
            same = memcmp(la, lfull, (size_t)T * V * sizeof(float)) == 0;
        if (s) msrnn_session_close(s);
        verdict(same && full_ok, label, same ? "logits bit-identical" : "logits differ");
    }

    /* β = -inf: a summary's weight is exactly 0, so merge* is sink with the summary's entries
     * taken out of the budget (merge at k is sink at k-1, merge-var sink at k-2, merge-clusters S
     * sink at k-S), and with no sinks window the same way, with one exception METHODS.md §1
     * implies: an empty summary costs nothing, so at steps k - cost + 1 .. k (up to the first
     * fold) merge* attends over more entries than sink at k - cost, and from there on the hidden
     * states of the layers above differ. Checked exactly, one token per call: logits
     * bit-identical at steps 0..k-cost (until sink first evicts), and the kept positions of every
     * layer equal at every step from k on; the summary in use (tokens folded) and never read. */
    static const struct {
        const char *policy;
        int cost, clusters;
    } neg_inf[] = {
        {"merge", 1, 0}, {"merge-var", 2, 0}, {"merge-clusters", 2, 2}, {"merge-clusters", 4, 4}};
    int64_t *pa = xcalloc((size_t)T + 2, sizeof *pa), *pb = xcalloc((size_t)T + 2, sizeof *pb);
    for (size_t i = 0; i < sizeof neg_inf / sizeof neg_inf[0]; i++)
        for (int ns = 0; ns <= 4; ns += 4) {
            const int k = 32, kb = k - neg_inf[i].cost, L = info->n_layers;
            const char *base = ns ? "sink" : "window";
            snprintf(label, sizeof label, "%s %s k=%d S %d sinks %d beta -inf ~ %s k=%d", name,
                     neg_inf[i].policy, k, neg_inf[i].clusters, ns, base, kb);
            msrnn_session *a =
                open_session_beta(m, neg_inf[i].policy, k, ns, T, -INFINITY, neg_inf[i].clusters);
            msrnn_session *b = open_session(m, base, kb, ns, T);
            int bad_step = a && b ? -1 : 0;
            int64_t merged = 0;
            for (int t = 0; t < T && bad_step < 0; t++) {
                if (msrnn_session_eval(a, &r.tokens[t], 1, NULL) != MSRNN_OK ||
                    msrnn_session_eval(b, &r.tokens[t], 1, NULL) != MSRNN_OK) {
                    bad_step = t;
                    break;
                }
                if (t <= kb && memcmp(msrnn_session_logits(a), msrnn_session_logits(b),
                                      (size_t)V * sizeof(float)))
                    bad_step = t;
                for (int l = 0; t >= k && l < L && bad_step < 0; l++) {
                    int na = msrnn_session_kept(a, l, -1, pa, NULL, T + 2);
                    int nb = msrnn_session_kept(b, l, -1, pb, NULL, T + 2);
                    if (na != nb || na != kb || memcmp(pa, pb, (size_t)na * sizeof *pa))
                        bad_step = t;
                }
            }
            if (a) msrnn_session_summary(a, L - 1, 0, &merged, NULL, 0);
            if (a) msrnn_session_close(a);
            if (b) msrnn_session_close(b);
            if (bad_step >= 0)
                snprintf(detail, sizeof detail, "differs at step %d (%s)", bad_step,
                         bad_step <= kb ? "logits" : "kept positions");
            else
                snprintf(detail, sizeof detail,
                         "logits bit-identical until sink evicts, kept positions equal after; %lld "
                         "tokens folded",
                         (long long)merged);
            verdict(bad_step < 0 && merged == T - kb, label, detail);
        }
    free(pa);
    free(pb);

    /* msrnn_memory_settings_of: the smallest budget it names opens, one less is refused, and its
     * values are the documented ones (sinks 0 -> 4, < 0 -> 0; clusters 0 -> 4). */
    {
        static const char *mems[] = {"full",      "window", "sink",      "h2o",           "tova",
                                     "tova-head", "merge",  "merge-var", "merge-clusters"};
        int bad = 0, n_checked = 0;
        for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++)
            for (int sinks = -1; sinks <= 6; sinks += 3)
                for (int clusters = 0; clusters <= 3; clusters += 3) {
                    msrnn_session_params p = msrnn_session_default_params();
                    p.memory = mems[i], p.kv_sinks = sinks, p.kv_clusters = clusters;
                    p.n_ctx = 64;
                    msrnn_memory_settings ms;
                    if (msrnn_memory_settings_of(&p, &ms) != MSRNN_OK) {
                        bad++;
                        continue;
                    }
                    const int ws = sinks == 0 ? 4 : sinks < 0 ? 0 : sinks;
                    const int wc = clusters > 0 ? clusters : 4;
                    const char *mm = mems[i];
                    const int want = !strcmp(mm, "full")             ? 0
                                     : !strcmp(mm, "sink")           ? ws + 1
                                     : !strcmp(mm, "merge")          ? ws + 2
                                     : !strcmp(mm, "merge-var")      ? ws + 3
                                     : !strcmp(mm, "merge-clusters") ? ws + wc + 1
                                                                     : 1;
                    if (ms.sinks != ws || ms.clusters != wc || ms.min_kv_size != want) {
                        printf("    settings of %s sinks %d clusters %d: %d %d %d, want %d %d %d\n",
                               mm, sinks, clusters, ms.sinks, ms.clusters, ms.min_kv_size, ws, wc,
                               want);
                        bad++;
                    }
                    if (want == 0) continue;
                    msrnn_session *x = NULL;
                    p.kv_size = want;
                    if (msrnn_session_open(m, &p, &x) != MSRNN_OK) bad++;
                    msrnn_session_close(x);
                    x = NULL;
                    p.kv_size = want - 1;
                    if (want > 1 && msrnn_session_open(m, &p, &x) != MSRNN_ERR_INVALID) bad++;
                    msrnn_session_close(x);
                    n_checked++;
                }
        msrnn_session_params p = msrnn_session_default_params();
        msrnn_memory_settings ms;
        p.memory = "lru";
        if (msrnn_memory_settings_of(&p, &ms) != MSRNN_ERR_INVALID) bad++;
        snprintf(label, sizeof label, "%s msrnn_memory_settings_of", name);
        snprintf(detail, sizeof detail, "%d settings opened at their minimum budget, refused below",
                 n_checked);
        verdict(!bad && n_checked > 0, label, detail);
    }
    free(la);
    free(lb);
    free(lfull);
    msrnn_model_close(m);
    ref_free(&r);
}

int main(void) {
    const char *dir = getenv("MSRNN_REF_DIR");
    if (!dir || !*dir) {
        printf("test_kv_policies: MSRNN_REF_DIR is not set\n");
        return 1;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/kv/MANIFEST.tsv", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("test_kv_policies: cannot open %s (run tests/ref/gen_kv_ref.py)\n", path);
        return 1;
    }
    char line[1024];
    int n_models = 0;
    /* Under the sanitizers (MSRNN_SANITIZED, ~10x slower) one GQA and one MHA model: the same code
     * paths at two shapes; the plain build runs them all. */
    const int sanitized = getenv("MSRNN_SANITIZED") && !strcmp(getenv("MSRNN_SANITIZED"), "1");
    int ran_gqa = 0, ran_mha = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        char name[64];
        if (sscanf(line, "%63s", name) != 1) continue;
        const char *h = strstr(line, " H");
        int nh = 0, nkv = 0;
        if (h) sscanf(h + 2, "%d/%d", &nh, &nkv);
        const int mha = nh > 0 && nh == nkv;
        if (sanitized && (mha ? ran_mha : ran_gqa)) {
            printf("%s: skipped under the sanitizers (a %s model ran; the plain build runs it)\n",
                   name, mha ? "MHA" : "GQA");
            continue;
        }
        ran_mha |= mha, ran_gqa |= !mha;
        n_models++;
        run_model(dir, name);
    }
    fclose(f);
    if (n_models == 0) {
        printf("  no models in %s\n", path);
        n_failed++;
    }
    printf("test_kv_policies: %d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
