/* test_sampler.c — the sampler's rules on hand-made logits: greedy is the argmax, top-k / top-p /
 * min-p never return a token outside the set each rule allows and do return every token inside it,
 * the draw frequencies follow the temperature softmax, the repetition penalty follows llama.cpp's
 * rule, and a seed repeats its sequence. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "msrnn.h"

enum { V = 8, DRAWS = 20000 };
/* softmax(logits) = 0.4, 0.3, 0.15, 0.1, 0.05 and ~0 for the rest */
static float logits[V];

static void counts_on(msrnn_sampler_params p, const float *lg, int *count) {
    msrnn_sampler *s;
    memset(count, 0, sizeof(int) * V);
    if (msrnn_sampler_open(&p, V, &s) != MSRNN_OK) return;
    for (int i = 0; i < DRAWS; i++) count[msrnn_sample(s, lg, NULL, 0)]++;
    msrnn_sampler_close(s);
}

static void counts_for(msrnn_sampler_params p, int *count) { counts_on(p, logits, count); }

int main(void) {
    const double probs[V] = {0.4, 0.3, 0.15, 0.1, 0.05, 0, 0, 0};
    for (int i = 0; i < V; i++) logits[i] = probs[i] > 0 ? (float)log(probs[i]) : -30.0f;
    int count[V];
    msrnn_sampler_params base = msrnn_sampler_default_params();
    base.top_k = 0, base.top_p = 1, base.min_p = 0, base.temperature = 1, base.seed = 3;

    msrnn_sampler_params p = base;
    p.temperature = 0;
    counts_for(p, count);
    CHECK(count[0] == DRAWS, "greedy: argmax drawn %d of %d", count[0], DRAWS);

    counts_for(base, count); /* plain temperature-1 sampling follows the softmax */
    for (int i = 0; i < 5; i++)
        CHECK(fabs(count[i] / (double)DRAWS - probs[i]) < 0.015, "frequency of %d: %d", i,
              count[i]);

    p = base, p.top_k = 2;
    counts_for(p, count);
    CHECK(count[0] + count[1] == DRAWS && count[0] > 0 && count[1] > 0, "top-k 2: %d %d", count[0],
          count[1]);
    CHECK(fabs(count[0] / (double)DRAWS - 0.4 / 0.7) < 0.015, "top-k 2 renormalises: %d", count[0]);

    p = base, p.top_p = 0.8f; /* 0.4 + 0.3 + 0.15 >= 0.8: three tokens */
    counts_for(p, count);
    CHECK(count[0] + count[1] + count[2] == DRAWS && count[2] > 0, "top-p 0.8: %d %d %d %d",
          count[0], count[1], count[2], count[3]);

    p = base, p.min_p = 0.3f; /* keeps p >= 0.3 * 0.4 = 0.12: tokens 0, 1, 2 */
    counts_for(p, count);
    CHECK(count[0] + count[1] + count[2] == DRAWS && count[2] > 0, "min-p 0.3: %d %d %d %d",
          count[0], count[1], count[2], count[3]);

    p = base, p.temperature = 0.05f; /* sharp: almost always the argmax */
    counts_for(p, count);
    CHECK(count[0] > DRAWS * 0.99, "low temperature: %d", count[0]);

    /* repetition penalty (llama.cpp): a positive logit is divided, a negative one multiplied */
    float lg[V] = {2.0f, 1.9f, -1, -1, -1, -1, -1, -1};
    p = base, p.temperature = 0, p.repeat_penalty = 1.1f, p.repeat_last_n = 4;
    msrnn_sampler *s;
    CHECK(msrnn_sampler_open(&p, V, &s) == MSRNN_OK, "open");
    const int32_t hist[] = {0, 5, 6};
    CHECK(msrnn_sample(s, lg, hist, 3) == 1, "penalised token 0 (2.0/1.1 < 1.9) must lose");
    const int32_t old[] = {0, 5, 6, 7, 7, 7};
    CHECK(msrnn_sample(s, lg, old, 6) == 0, "token 0 outside the last 4 is not penalised");
    msrnn_sampler_close(s);

    /* same seed, same sequence; another seed, another sequence */
    int32_t a[64], b[64], c[64];
    for (int run = 0; run < 3; run++) {
        p = base, p.seed = run == 2 ? 99 : 7;
        msrnn_sampler_open(&p, V, &s);
        for (int i = 0; i < 64; i++)
            (run == 0 ? a : run == 1 ? b : c)[i] = msrnn_sample(s, logits, NULL, 0);
        msrnn_sampler_close(s);
    }
    CHECK(!memcmp(a, b, sizeof a), "same seed, different sequence");
    CHECK(memcmp(a, c, sizeof a) != 0, "different seeds, same sequence");

    /* bad parameters are refused with a message */
    p = base, p.repeat_penalty = 0;
    CHECK(msrnn_sampler_open(&p, V, &s) == MSRNN_ERR_INVALID &&
              strstr(msrnn_last_error(), "repeat"),
          "repeat penalty 0 accepted");
    CHECK(msrnn_sampler_open(&base, 0, &s) == MSRNN_ERR_INVALID, "vocabulary 0 accepted");

    /* NaN logits rank after every number, in one total order whatever their place: greedy and
     * top-k never pick one while a number is left, sampling draws the numbers as if the NaNs were
     * absent, and all-NaN logits give the lowest id every time */
    const float qnan = NAN;
    const float nl[V] = {qnan, logits[0], qnan, logits[1], logits[2], qnan, logits[3], logits[4]};
    const int real[5] = {1, 3, 4, 6, 7}; /* nl[real[i]] = logits[i] */
    p = base, p.temperature = 0;
    counts_on(p, nl, count);
    CHECK(count[1] == DRAWS, "NaN: greedy drew id 1 (the largest number) %d of %d", count[1],
          DRAWS);
    counts_on(base, nl, count);
    CHECK(count[0] + count[2] + count[5] == 0, "NaN: drew a NaN id %d times",
          count[0] + count[2] + count[5]);
    for (int i = 0; i < 5; i++)
        CHECK(fabs(count[real[i]] / (double)DRAWS - probs[i]) < 0.015,
              "NaN: frequency of id %d: %d", real[i], count[real[i]]);
    p = base, p.top_k = 2;
    counts_on(p, nl, count);
    CHECK(count[1] + count[3] == DRAWS && count[1] > 0 && count[3] > 0, "NaN: top-k 2: %d %d",
          count[1], count[3]);
    const float all_nan[V] = {qnan, qnan, qnan, qnan, qnan, qnan, qnan, qnan};
    for (int greedy = 0; greedy < 2; greedy++) {
        p = base, p.temperature = greedy ? 0.0f : 1.0f, p.top_k = greedy ? 0 : 3;
        counts_on(p, all_nan, count);
        CHECK(count[0] == DRAWS, "all NaN (%s): id 0 drawn %d of %d", greedy ? "greedy" : "top-k 3",
              count[0], DRAWS);
    }

    printf("test_sampler: %d passed, %d failed\n", checks - failures, failures);
    return failures != 0;
}
