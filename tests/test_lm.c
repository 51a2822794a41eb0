/* The decoder LM on the CPU against transformers' numbers (tests/data/lm, written by
 * tools/make_reference.py): logits, perplexity by DESIGN.md's rule and greedy generation for
 * every family; prefill + decode over a batch whose sequences join and leave; quantized
 * experts; config.json parsing, token files and the KV cache's slots. */
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/backend.h"
#include "thermoe/model.h"

/* CPU fp32 vs transformers fp32: max |logit diff| <= TOL_LOGIT_STD x std(logits); perplexity
 * within TOL_PPL_REL relative. */
#define TOL_LOGIT_STD 1e-3
#define TOL_PPL_REL 1e-3
/* The same model run two ways on the CPU (batched KV cache vs one sequence alone). */
#define TOL_SAME_STD 1e-5
/* fp16 experts (activations rounded to fp16 into every expert) vs fp32 experts. */
#define TOL_FP16_EXPERTS_STD 2e-2

static const char *const models[] = {"mixtral", "olmoe", "olmoe_stacked", "qwen2_moe", "qwen3_moe"};

static const char *lm_path(const char *rel) {
    static char p[4096];
    snprintf(p, sizeof p, "%s/tests/data/lm/%s", THERMOE_SOURCE_DIR, rel);
    return p;
}

typedef struct expected {
    int logit_tokens, seq_len, prompt, greedy[64], ngreedy;
    double std, ppl;
    long long scored;
    float *logits;
} expected;

static void read_expected(const char *dir, int V, expected *x) {
    char p[4096];
    snprintf(p, sizeof p, "%s/expected.json", dir);
    json_error_t je;
    json_t *j = json_load_file(p, 0, &je);
    if (!j) fail_msg("%s: %s", p, je.text);
    x->logit_tokens = (int)json_integer_value(json_object_get(j, "logit_tokens"));
    x->seq_len = (int)json_integer_value(json_object_get(j, "seq_len"));
    x->prompt = (int)json_integer_value(json_object_get(j, "prompt_tokens"));
    x->scored = json_integer_value(json_object_get(j, "tokens_scored"));
    x->std = json_number_value(json_object_get(j, "logits_std"));
    x->ppl = json_number_value(json_object_get(j, "perplexity"));
    json_t *g = json_object_get(j, "greedy");
    x->ngreedy = (int)json_array_size(g);
    assert_true(x->ngreedy > 0 && x->ngreedy <= 64);
    for (int i = 0; i < x->ngreedy; i++)
        x->greedy[i] = (int)json_integer_value(json_array_get(g, (size_t)i));
    json_decref(j);
    snprintf(p, sizeof p, "%s/expected_logits.f32", dir);
    size_t n = (size_t)x->logit_tokens * V, len = 0;
    char *raw = tmoe_file_read_all(p, 0, &len, NULL);
    assert_non_null(raw);
    assert_int_equal(len, 4 * n);
    x->logits = malloc(4 * n);
    assert_non_null(x->logits);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *b = (const uint8_t *)raw + 4 * i;
        uint32_t u =
            (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        memcpy(&x->logits[i], &u, 4);
    }
    free(raw);
}

/* Logits of the first n ids as one sequence (prefill). */
static void prefill(const tmoe_lm *m, const uint32_t *ids, int n, float *logits, int all) {
    tmoe_error err = {0};
    tmoe_kv_cache *kv;
    tmoe_cpu_lm *cpu;
    tmoe_cpu_lm_config cc = {.max_tokens = n, .impl = TMOE_IMPL_FUSED};
    ASSERT_OK(tmoe_kv_cache_create(&m->cfg, 1, n, &kv, &err), &err);
    ASSERT_OK(tmoe_cpu_lm_create(m, &cc, &cpu, &err), &err);
    int slot;
    ASSERT_OK(tmoe_kv_seq_open(kv, &slot, &err), &err);
    int32_t nn = n;
    tmoe_lm_batch b = {1, &slot, &nn, ids, all};
    ASSERT_OK(tmoe_cpu_lm_forward(cpu, kv, &b, logits, &err), &err);
    assert_int_equal(kv->len[slot], n);
    tmoe_cpu_lm_free(cpu);
    tmoe_kv_cache_free(kv);
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double d = 0.0;
    for (size_t i = 0; i < n; i++) {
        double x = fabs((double)a[i] - (double)b[i]);
        if (!(x <= d)) d = x; /* NaN propagates */
    }
    return d;
}

static double perplexity(const tmoe_lm *m, const tmoe_tokens *t, int L, long long *scored) {
    int V = m->cfg.vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)L * V);
    double *nll = malloc(sizeof(double) * (size_t)L);
    assert_true(logits && nll);
    tmoe_lm_score s = {0};
    for (int64_t w = 0; w < t->n / L; w++) {
        prefill(m, t->ids + w * L, L, logits, 1);
        tmoe_lm_nll(logits, t->ids + w * L + 1, L - 1, V, nll);
        tmoe_lm_score_add_window(&s, nll, L - 1);
    }
    double nm, ppl, lo, hi;
    tmoe_lm_score_finish(&s, &nm, &ppl, &lo, &hi);
    assert_true(lo < ppl && ppl < hi);
    *scored = s.tokens_scored;
    free(logits);
    free(nll);
    return ppl;
}

/* Greedy continuation through the KV cache, one decode step per token. */
static void greedy(const tmoe_lm *m, const uint32_t *prompt, int np, int n_new, int *out) {
    int V = m->cfg.vocab_size;
    tmoe_error err = {0};
    tmoe_kv_cache *kv;
    tmoe_cpu_lm *cpu;
    tmoe_cpu_lm_config cc = {.max_tokens = np, .impl = TMOE_IMPL_FUSED};
    ASSERT_OK(tmoe_kv_cache_create(&m->cfg, 1, np + n_new, &kv, &err), &err);
    ASSERT_OK(tmoe_cpu_lm_create(m, &cc, &cpu, &err), &err);
    float *logits = malloc(sizeof(float) * (size_t)V);
    assert_non_null(logits);
    int slot;
    ASSERT_OK(tmoe_kv_seq_open(kv, &slot, &err), &err);
    int32_t nn = np;
    uint32_t tok;
    tmoe_lm_batch b = {1, &slot, &nn, prompt, 0};
    for (int i = 0; i < n_new; i++) {
        ASSERT_OK(tmoe_cpu_lm_forward(cpu, kv, &b, logits, &err), &err);
        int best = 0;
        for (int v = 1; v < V; v++)
            if (logits[v] > logits[best]) best = v;
        out[i] = best;
        tok = (uint32_t)best;
        nn = 1;
        b.tokens = &tok;
    }
    free(logits);
    tmoe_cpu_lm_free(cpu);
    tmoe_kv_cache_free(kv);
}

static void test_matches_transformers(void **state) {
    (void)state;
    tmoe_tokens t;
    tmoe_error err = {0};
    ASSERT_OK(tmoe_tokens_read(lm_path("text.tokens"), &t, &err), &err);
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        tmoe_lm *m;
        const char *dir = lm_path(models[i]);
        ASSERT_OK(tmoe_lm_load(dir, NULL, &m, &err), &err);
        int V = m->cfg.vocab_size;
        expected x;
        read_expected(dir, V, &x);
        float *logits = malloc(sizeof(float) * (size_t)x.logit_tokens * V);
        assert_non_null(logits);
        prefill(m, t.ids, x.logit_tokens, logits, 1);
        double d = max_abs_diff(logits, x.logits, (size_t)x.logit_tokens * V);
        long long scored;
        double ppl = perplexity(m, &t, x.seq_len, &scored);
        int gen[64];
        greedy(m, t.ids, x.prompt, x.ngreedy, gen);
        fprintf(stderr,
                "%-14s max |logit diff| %.3g = %.3g x std; perplexity %.8g vs %.8g "
                "(rel %.2g)\n",
                models[i], d, d / x.std, ppl, x.ppl, fabs(ppl / x.ppl - 1.0));
        if (!(d <= TOL_LOGIT_STD * x.std))
            fail_msg("%s: max |logit diff| %g > %g x std %g", models[i], d, TOL_LOGIT_STD, x.std);
        assert_int_equal(scored, x.scored);
        if (!(fabs(ppl / x.ppl - 1.0) <= TOL_PPL_REL))
            fail_msg("%s: perplexity %.8g, transformers %.8g", models[i], ppl, x.ppl);
        for (int g = 0; g < x.ngreedy; g++)
            if (gen[g] != x.greedy[g])
                fail_msg("%s: greedy token %d is %d, transformers %d", models[i], g, gen[g],
                         x.greedy[g]);
        free(logits);
        free(x.logits);
        tmoe_lm_free(m);
    }
    tmoe_tokens_free(&t);
}

static double std_of(const float *v, size_t n) {
    double s = 0.0, s2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        s += v[i];
        s2 += (double)v[i] * v[i];
    }
    return sqrt(s2 / n - (s / n) * (s / n));
}

/* A running batch: three prompts of different lengths prefilled together, decode steps in
 * which one sequence leaves and a new one takes its slot; every step's logits must equal
 * those of the same sequence run alone. */
static void test_batch_join_leave(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_tokens t;
    ASSERT_OK(tmoe_tokens_read(lm_path("text.tokens"), &t, &err), &err);
    tmoe_lm *m;
    ASSERT_OK(tmoe_lm_load(lm_path("qwen2_moe"), NULL, &m, &err), &err);
    int V = m->cfg.vocab_size;
    enum { NS = 4, STEPS = 4, MAXLEN = 24 };
    const int start[NS] = {0, 40, 90, 150}, plen[NS] = {5, 9, 13, 7};
    uint32_t seq[NS][MAXLEN];
    int len[NS] = {0}, slot[NS] = {-1, -1, -1, -1};
    for (int s = 0; s < NS; s++)
        for (int i = 0; i < MAXLEN; i++) seq[s][i] = t.ids[start[s] + i];
    tmoe_kv_cache *kv;
    tmoe_cpu_lm *cpu;
    tmoe_cpu_lm_config cc = {.max_tokens = 32, .impl = TMOE_IMPL_FUSED};
    ASSERT_OK(tmoe_kv_cache_create(&m->cfg, 3, MAXLEN, &kv, &err), &err);
    ASSERT_OK(tmoe_cpu_lm_create(m, &cc, &cpu, &err), &err);
    float *logits = malloc(sizeof(float) * 32 * (size_t)V);
    float *alone = malloc(sizeof(float) * (size_t)V);
    assert_true(logits && alone);
    double worst = 0.0;
    for (int step = 0; step <= STEPS; step++) {
        /* sequence 1 leaves after step 1; sequence 3 joins at step 2 in its slot */
        if (step == 2) {
            tmoe_kv_seq_close(kv, slot[1]);
            slot[1] = -1;
        }
        int32_t slots[NS], n_new[NS], who[NS], nseq = 0;
        uint32_t toks[64];
        int nt = 0;
        for (int s = 0; s < NS; s++) {
            int active = s == 3 ? step >= 2 : !(s == 1 && step >= 2);
            if (!active) continue;
            if (slot[s] < 0) ASSERT_OK(tmoe_kv_seq_open(kv, &slot[s], &err), &err);
            int n = len[s] == 0 ? plen[s] : 1;
            for (int i = 0; i < n; i++) toks[nt++] = seq[s][len[s] + i];
            slots[nseq] = slot[s];
            n_new[nseq] = n;
            who[nseq++] = s;
        }
        tmoe_lm_batch b = {nseq, slots, n_new, toks, 0};
        ASSERT_OK(tmoe_cpu_lm_forward(cpu, kv, &b, logits, &err), &err);
        for (int i = 0; i < nseq; i++) {
            int s = who[i];
            len[s] += n_new[i];
            assert_int_equal(kv->len[slots[i]], len[s]);
            prefill(m, seq[s], len[s], alone, 0);
            double d = max_abs_diff(logits + (size_t)i * V, alone, (size_t)V) / std_of(alone, V);
            worst = d > worst ? d : worst;
            if (!(d <= TOL_SAME_STD))
                fail_msg("step %d sequence %d: batched logits differ from alone by %g x std", step,
                         s, d);
        }
    }
    fprintf(stderr, "batched prefill + decode vs alone: max diff %.3g x std\n", worst);
    /* a slot that is not open, or past the cache, is refused and changes nothing */
    int32_t one = 1;
    uint32_t tok = 3;
    int32_t closed = -1;
    for (int s = 0; s < kv->max_seqs; s++)
        if (!kv->used[s]) closed = s;
    if (closed >= 0) {
        tmoe_lm_batch b = {1, &closed, &one, &tok, 0};
        assert_int_equal(tmoe_cpu_lm_forward(cpu, kv, &b, logits, &err), TMOE_EINVAL);
        assert_non_null(strstr(err.msg, "not open"));
    }
    int32_t big = MAXLEN, s0 = slot[0], len0 = kv->len[slot[0]];
    tmoe_lm_batch b2 = {1, &s0, &big, seq[0], 0};
    assert_int_equal(tmoe_cpu_lm_forward(cpu, kv, &b2, logits, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "exceed the cache"));
    assert_int_equal(kv->len[s0], len0);
    free(logits);
    free(alone);
    tmoe_cpu_lm_free(cpu);
    tmoe_kv_cache_free(kv);
    tmoe_lm_free(m);
    tmoe_tokens_free(&t);
}

/* Experts as fp16 / q4 / q2 / bf16 through the existing expert kernels. */
static void test_typed_experts(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_tokens t;
    ASSERT_OK(tmoe_tokens_read(lm_path("text.tokens"), &t, &err), &err);
    tmoe_lm *ref;
    ASSERT_OK(tmoe_lm_load(lm_path("olmoe"), NULL, &ref, &err), &err);
    int V = ref->cfg.vocab_size, n = 16;
    float *a = malloc(sizeof(float) * (size_t)n * V), *b = malloc(sizeof(float) * (size_t)n * V);
    assert_true(a && b);
    prefill(ref, t.ids, n, a, 1);
    double sd = std_of(a, (size_t)n * V);
    const tmoe_etype types[4] = {TMOE_ET_FP16, TMOE_ET_Q4, TMOE_ET_Q2, TMOE_ET_BF16};
    for (int i = 0; i < 4; i++) {
        tmoe_lm_load_opts o = tmoe_lm_load_opts_default();
        o.experts_f32 = 0;
        o.expert_type = types[i];
        o.group_size = 4;
        tmoe_lm *m;
        ASSERT_OK(tmoe_lm_load(lm_path("olmoe"), &o, &m, &err), &err);
        assert_null(m->layers[0].ex_w13);
        assert_non_null(m->layers[0].experts);
        prefill(m, t.ids, n, b, 1);
        double d = max_abs_diff(a, b, (size_t)n * V) / sd;
        fprintf(stderr, "%s experts (group 4) vs fp32: max diff %.3g x std\n",
                tmoe_etype_name(types[i]), d);
        assert_true(isfinite(d));
        if (types[i] == TMOE_ET_FP16 && !(d <= TOL_FP16_EXPERTS_STD))
            fail_msg("fp16 experts: %g x std", d);
        tmoe_lm_free(m);
    }
    /* bf16 experts of a bf16 checkpoint (the mixtral reference model) keep its values bit for
     * bit: every weight equals the fp32 load's (exact: an fp32 holds any bf16) */
    {
        tmoe_lm *f32m, *bfm;
        ASSERT_OK(tmoe_lm_load(lm_path("mixtral"), NULL, &f32m, &err), &err);
        tmoe_lm_load_opts ob = tmoe_lm_load_opts_default();
        ob.experts_f32 = 0;
        ob.expert_type = TMOE_ET_BF16;
        ASSERT_OK(tmoe_lm_load(lm_path("mixtral"), &ob, &bfm, &err), &err);
        const tmoe_lm_config *c = &f32m->cfg;
        size_t n13 = (size_t)2 * c->d_ff_expert * c->d_model,
               n2 = (size_t)c->d_model * c->d_ff_expert;
        long checked = 0;
        for (int l = 0; l < c->n_layers; l++) {
            if (!f32m->layers[l].ex_w13) continue;
            for (int e = 0; e < c->num_experts; e++) {
                const tmoe_expert *x = &bfm->layers[l].experts[e];
                assert_int_equal(x->type, TMOE_ET_BF16);
                const float *w13 = f32m->layers[l].ex_w13 + e * n13,
                            *w2 = f32m->layers[l].ex_w2 + e * n2;
                for (size_t i = 0; i < n13; i++)
                    if (tmoe_bf16_to_f32(x->fc1.w[i]) != w13[i])
                        fail_msg("layer %d expert %d fc1[%zu]: bf16 %g, checkpoint %g", l, e, i,
                                 (double)tmoe_bf16_to_f32(x->fc1.w[i]), (double)w13[i]);
                for (size_t i = 0; i < n2; i++)
                    if (tmoe_bf16_to_f32(x->fc2.w[i]) != w2[i])
                        fail_msg("layer %d expert %d fc2[%zu]: bf16 %g, checkpoint %g", l, e, i,
                                 (double)tmoe_bf16_to_f32(x->fc2.w[i]), (double)w2[i]);
                checked += (long)(n13 + n2);
            }
        }
        assert_true(checked > 0);
        tmoe_lm_free(bfm);
        tmoe_lm_free(f32m);
    }
    /* q4 needs the group to divide hidden_size and the expert size */
    tmoe_lm_load_opts o = tmoe_lm_load_opts_default();
    o.experts_f32 = 0;
    o.expert_type = TMOE_ET_Q4;
    o.group_size = 128;
    tmoe_lm *m = NULL;
    assert_int_equal(tmoe_lm_load(lm_path("olmoe"), &o, &m, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "q4 experts"));
    /* int8 activations: q4 / q2 experts only, groups of a multiple of 32 */
    o.act8 = 1;
    o.expert_type = TMOE_ET_FP16;
    assert_int_equal(tmoe_lm_load(lm_path("olmoe"), &o, &m, &err), TMOE_EINVAL);
    assert_non_null(
        strstr(err.msg, "int8 activations are for q4 or q2 experts (the experts are fp16)"));
    o.expert_type = TMOE_ET_Q4;
    o.group_size = 4;
    assert_int_equal(tmoe_lm_load(lm_path("olmoe"), &o, &m, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "group size 4 must be a multiple of 32"));
    free(a);
    free(b);
    tmoe_lm_free(ref);
    tmoe_tokens_free(&t);
}

/* One type per expert (tmoe_lm_load_opts.types): expert e of every MoE layer holds the
 * weights a load of its type alone gives, the sizes average the types, and a list of the wrong
 * length, a bf16 entry or an fp16 expert with int8 activations are refused. */
static void test_expert_type_list(void **state) {
    (void)state;
    tmoe_error err = {0};
    const tmoe_etype types[5] = {TMOE_ET_FP16, TMOE_ET_Q4, TMOE_ET_Q2, TMOE_ET_Q4, TMOE_ET_FP16};
    tmoe_lm_load_opts o = tmoe_lm_load_opts_default();
    o.experts_f32 = 0;
    o.group_size = 4;
    o.n_types = 5;
    memcpy(o.types, types, sizeof types);
    tmoe_lm *mix, *one[TMOE_ET_COUNT] = {0};
    ASSERT_OK(tmoe_lm_load(lm_path("mixtral"), &o, &mix, &err), &err);
    const tmoe_lm_config *c = &mix->cfg;
    assert_int_equal(c->num_experts, 5);
    for (int e = 0; e < 5; e++) {
        assert_int_equal(tmoe_lm_expert_type(&mix->opts, e), types[e]);
        if (one[types[e]]) continue;
        tmoe_lm_load_opts s = tmoe_lm_load_opts_default();
        s.experts_f32 = 0;
        s.group_size = 4;
        s.expert_type = types[e];
        ASSERT_OK(tmoe_lm_load(lm_path("mixtral"), &s, &one[types[e]], &err), &err);
    }
    size_t n13 = (size_t)2 * c->d_ff_expert * c->d_model;
    float *w = malloc(sizeof(float) * n13), *v = malloc(sizeof(float) * n13);
    assert_true(w && v);
    int checked = 0;
    for (int l = 0; l < c->n_layers; l++) {
        if (!mix->layers[l].experts) continue;
        for (int e = 0; e < 5; e++) {
            const tmoe_expert *x = &mix->layers[l].experts[e],
                              *y = &one[types[e]]->layers[l].experts[e];
            assert_int_equal(x->type, types[e]);
            assert_int_equal(x->fc1.type, types[e]);
            assert_int_equal(x->fc2.type, types[e]);
            tmoe_linear_to_f32(&x->fc1, w);
            tmoe_linear_to_f32(&y->fc1, v);
            if (memcmp(w, v, sizeof(float) * n13))
                fail_msg("layer %d expert %d (%s): fc1 differs from a load of that type", l, e,
                         tmoe_etype_name(types[e]));
            checked++;
        }
    }
    assert_true(checked > 0);
    /* the sizes: the model's bytes lie strictly between those of its cheapest and dearest
     * types (here q2 and fp16 experts) */
    double mb = tmoe_lm_sizes_of(mix).weight_bytes;
    assert_true(mb > tmoe_lm_sizes_of(one[TMOE_ET_Q2]).weight_bytes);
    assert_true(mb < tmoe_lm_sizes_of(one[TMOE_ET_FP16]).weight_bytes);
    free(w);
    free(v);
    tmoe_lm_free(mix);
    for (int t = 0; t < TMOE_ET_COUNT; t++) tmoe_lm_free(one[t]);
    tmoe_lm *m = NULL;
    o.n_types = 3;
    assert_int_equal(tmoe_lm_load(lm_path("mixtral"), &o, &m, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "3 types given for a model of 5 experts"));
    o.n_types = 5;
    o.types[2] = TMOE_ET_BF16;
    assert_int_equal(tmoe_lm_load(lm_path("mixtral"), &o, &m, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "expert 2 is bf16"));
    o.types[2] = TMOE_ET_Q2;
    o.act8 = 1;
    o.group_size = 32;
    assert_int_equal(tmoe_lm_load(lm_path("mixtral"), &o, &m, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "(expert 0 is fp16)"));
    assert_null(m);
}

/* q4 / q2 experts with int8 activations (tmoe_lm_load_opts.act8) on the CPU: the experts'
 * linears carry the flag, and the logits move from those of the same weights with fp16
 * activations, by little (the int8 rounding: half a step of a block's largest value / 127). */
static void test_int8_activations(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_lm_config c = {0};
    c.family = TMOE_LM_MIXTRAL;
    c.vocab_size = 97;
    c.d_model = 64;
    c.n_layers = 2;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.head_dim = 32;
    c.d_ff = 64;
    c.d_ff_expert = 32;
    c.num_experts = 4;
    c.top_k = 2;
    c.norm_topk_prob = 1;
    c.max_positions = 64;
    c.rms_eps = 1e-6f;
    c.rope_theta = 10000.0;
    for (int l = 0; l < c.n_layers; l++) c.moe_layer[l] = 1;
    enum { N = 12 };
    uint32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = (uint32_t)(i * 7 + 3) % 97;
    for (int t = 0; t < 2; t++) {
        const tmoe_etype type = t ? TMOE_ET_Q2 : TMOE_ET_Q4;
        float *logits[2];
        for (int a8 = 0; a8 < 2; a8++) {
            tmoe_lm_load_opts o = tmoe_lm_load_opts_default();
            o.experts_f32 = 0;
            o.expert_type = type;
            o.group_size = 32;
            o.act8 = a8;
            tmoe_lm *m;
            ASSERT_OK(tmoe_lm_random(&c, &o, 99, &m, &err), &err);
            for (int l = 0; l < c.n_layers; l++)
                for (int e = 0; e < c.num_experts; e++) {
                    assert_int_equal(m->layers[l].experts[e].fc1.act8, a8);
                    assert_int_equal(m->layers[l].experts[e].fc2.act8, a8);
                }
            logits[a8] = malloc(sizeof(float) * N * c.vocab_size);
            assert_non_null(logits[a8]);
            prefill(m, ids, N, logits[a8], 1);
            tmoe_lm_free(m);
        }
        size_t n = (size_t)N * c.vocab_size;
        double d = max_abs_diff(logits[0], logits[1], n) / std_of(logits[0], n);
        fprintf(stderr, "%s int8 activations vs fp16 activations: max diff %.3g x std\n",
                tmoe_etype_name(type), d);
        assert_true(d > 0.0 && d < 0.05);
        free(logits[0]), free(logits[1]);
    }
}

static int parse(const char *json, tmoe_lm_config *c, tmoe_error *err) {
    return tmoe_lm_config_parse(json, "config.json", c, err);
}

/* config.json as the hub ships Mixtral-8x7B (rope_theta at the top level, no head_dim) and
 * as transformers 5 writes Qwen3-MoE (rope_parameters, num_local_experts). */
static void test_config(void **state) {
    (void)state;
    tmoe_lm_config c;
    tmoe_error err = {0};
    const char *hub_mixtral =
        "{\"architectures\": [\"MixtralForCausalLM\"], \"attention_dropout\": 0.0, "
        "\"bos_token_id\": 1, \"eos_token_id\": 2, \"hidden_act\": \"silu\", "
        "\"hidden_size\": 4096, \"initializer_range\": 0.02, \"intermediate_size\": 14336, "
        "\"max_position_embeddings\": 32768, \"model_type\": \"mixtral\", "
        "\"num_attention_heads\": 32, \"num_experts_per_tok\": 2, \"num_hidden_layers\": 32, "
        "\"num_key_value_heads\": 8, \"num_local_experts\": 8, \"output_router_logits\": false, "
        "\"rms_norm_eps\": 1e-05, \"rope_theta\": 1000000.0, \"router_aux_loss_coef\": 0.02, "
        "\"sliding_window\": null, \"tie_word_embeddings\": false, \"torch_dtype\": "
        "\"bfloat16\", \"transformers_version\": \"4.36.0.dev0\", \"use_cache\": true, "
        "\"vocab_size\": 32000}";
    ASSERT_OK(parse(hub_mixtral, &c, &err), &err);
    assert_int_equal(c.family, TMOE_LM_MIXTRAL);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.num_experts, 8);
    assert_int_equal(c.d_ff_expert, 14336);
    assert_int_equal(c.norm_topk_prob, 1);
    assert_int_equal(c.sliding_window, 0);
    assert_true(c.rope_theta == 1e6);
    assert_int_equal(tmoe_lm_num_moe_layers(&c), 32);
    const char *v5_qwen3 =
        "{\"model_type\": \"qwen3_moe\", \"vocab_size\": 151936, \"hidden_size\": 2048, "
        "\"num_hidden_layers\": 4, \"num_attention_heads\": 32, \"num_key_value_heads\": 4, "
        "\"head_dim\": 128, \"moe_intermediate_size\": 768, \"num_local_experts\": 128, "
        "\"num_experts_per_tok\": 8, \"norm_topk_prob\": true, \"mlp_only_layers\": [2], "
        "\"rope_parameters\": {\"rope_theta\": 1000000.0, \"rope_type\": \"default\"}, "
        "\"use_sliding_window\": false, \"sliding_window\": null}";
    ASSERT_OK(parse(v5_qwen3, &c, &err), &err);
    assert_int_equal(c.qk_norm, TMOE_QK_NORM_PER_HEAD);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.num_experts, 128);
    assert_int_equal(c.d_ff, 6144); /* Qwen3MoeConfig's default intermediate_size */
    assert_true(c.rope_theta == 1e6);
    assert_int_equal(c.moe_layer[2], 0);
    assert_int_equal(tmoe_lm_num_moe_layers(&c), 3);
    struct {
        const char *json, *needle;
        int code;
    } bad[] = {
        {"{\"model_type\": \"deepseek_v3\", \"vocab_size\": 8}", "model_type 'deepseek_v3'",
         TMOE_ENOTSUP},
        {"{\"model_type\": \"olmoe\", \"vocab_size\": 8, \"num_hidden_layers\": 1, "
         "\"num_attention_heads\": 2}",
         "'hidden_size' is missing", TMOE_EFORMAT},
        {"{\"model_type\": \"olmoe\", \"vocab_size\": 8, \"hidden_size\": \"4\"}",
         "'hidden_size' must be an integer", TMOE_EFORMAT},
        {"{\"model_type\": \"mixtral\", \"vocab_size\": 8, \"hidden_size\": 8, "
         "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 2, "
         "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}",
         "rope_scaling.rope_type", TMOE_ENOTSUP},
        {"{\"model_type\": \"qwen2_moe\", \"vocab_size\": 8, \"hidden_size\": 8, "
         "\"num_hidden_layers\": 1, \"num_attention_heads\": 3, \"num_key_value_heads\": 2}",
         "not a multiple of num_key_value_heads", TMOE_EFORMAT},
        {"{\"model_type\": \"qwen3_moe\", \"vocab_size\": 8, \"hidden_size\": 8, "
         "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 2, "
         "\"use_sliding_window\": true}",
         "use_sliding_window", TMOE_ENOTSUP},
        {"{\"model_type\": \"olmoe\", \"vocab_size\": 8, \"hidden_size\": 8, "
         "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"hidden_act\": \"gelu\"}",
         "hidden_act", TMOE_ENOTSUP},
        {"{\"model_type\": \"olmoe\", \"vocab_size\": 8, \"hidden_size\": 8, "
         "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_experts\": 4, "
         "\"num_experts_per_tok\": 5}",
         "num_experts_per_tok", TMOE_EFORMAT},
        {"[1, 2]", "expected a JSON object", TMOE_EFORMAT},
        {"{\"model_type\": ", "not valid JSON", TMOE_EFORMAT},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = parse(bad[i].json, &c, &err);
        if (rc != bad[i].code || !strstr(err.msg, bad[i].needle) || !strstr(err.msg, "config.json"))
            fail_msg("case %zu: rc %d, message '%s'; want %d and '%s'", i, rc, err.msg, bad[i].code,
                     bad[i].needle);
    }
}

static void test_token_files(void **state) {
    (void)state;
    tmoe_error err = {0};
    const uint32_t ids[5] = {0, 7, 3, 9, 1};
    const char *p = tu_tmppath("a.tokens");
    ASSERT_OK(tmoe_tokens_write(p, ids, 5, 10, 42, &err), &err);
    tmoe_tokens t;
    ASSERT_OK(tmoe_tokens_read(p, &t, &err), &err);
    assert_int_equal(t.n, 5);
    assert_int_equal(t.vocab_size, 10);
    assert_int_equal(t.text_bytes, 42);
    assert_memory_equal(t.ids, ids, sizeof ids);
    tmoe_tokens_free(&t);
    assert_int_equal(tmoe_tokens_write(p, ids, 5, 9, 0, &err), TMOE_EINVAL);
    /* truncated, bad magic, id beyond the vocabulary */
    size_t len;
    char *raw = tmoe_file_read_all(p, 0, &len, &err);
    assert_non_null(raw);
    const char *q = tu_tmppath("b.tokens");
    FILE *f = fopen(q, "wb");
    assert_non_null(f);
    fwrite(raw, 1, len - 2, f);
    fclose(f);
    assert_int_equal(tmoe_tokens_read(q, &t, &err), TMOE_EFORMAT);
    assert_non_null(strstr(err.msg, "truncated"));
    raw[0] ^= 1;
    f = fopen(q, "wb");
    fwrite(raw, 1, len, f);
    fclose(f);
    assert_int_equal(tmoe_tokens_read(q, &t, &err), TMOE_EFORMAT);
    assert_non_null(strstr(err.msg, "magic"));
    raw[0] ^= 1;
    raw[1024 + 4 * 3] = 10; /* id 10 with vocabulary 10 */
    f = fopen(q, "wb");
    fwrite(raw, 1, len, f);
    fclose(f);
    assert_int_equal(tmoe_tokens_read(q, &t, &err), TMOE_EFORMAT);
    assert_non_null(strstr(err.msg, "token 3 has id 10"));
    free(raw);
}

static void test_kv_slots(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_lm_config c = {.n_layers = 2, .n_kv_heads = 2, .head_dim = 4};
    tmoe_kv_cache *kv;
    ASSERT_OK(tmoe_kv_cache_create(&c, 2, 8, &kv, &err), &err);
    assert_int_equal(tmoe_kv_cache_bytes(kv), 2 * 4 * 2 * 2 * 8 * 2 * 4);
    int a, b, x;
    ASSERT_OK(tmoe_kv_seq_open(kv, &a, &err), &err);
    ASSERT_OK(tmoe_kv_seq_open(kv, &b, &err), &err);
    assert_int_not_equal(a, b);
    assert_int_equal(tmoe_kv_seq_open(kv, &x, &err), TMOE_EINVAL);
    kv->len[a] = 5;
    tmoe_kv_seq_close(kv, a);
    ASSERT_OK(tmoe_kv_seq_open(kv, &x, &err), &err);
    assert_int_equal(x, a);
    assert_int_equal(kv->len[x], 0);
    tmoe_kv_cache_free(kv);
    tmoe_kv_cache_free(NULL);
    assert_int_equal(tmoe_kv_cache_create(&c, 0, 8, &kv, &err), TMOE_EINVAL);
}

/* ---- the route hook's own selection --------------------------------------------------- */
typedef struct hook_ctx {
    int mode;   /* 0 biases, 1 the same selection made by the hook, 2 top-(k-1) padded with
                   the first expert, 3 padded with another expert, 4 an expert out of range,
                   5 every token on expert 0 twice at weight 0.5 (2T copies of it, more than
                   the workspace's T rows), 6 on expert 0 at weight 1, padded with expert 1 */
    int renorm; /* the model's norm_topk_prob */
    int calls;
} hook_ctx;

/* The biases of mode 0: expert (layer + 1) mod E excluded, expert 0 favoured a little. */
static void hook_bias(int layer, int E, float *bias) {
    for (int e = 0; e < E; e++) bias[e] = 0.0f;
    bias[(layer + 1) % E] = -1e4f;
    bias[0] = 0.3f;
}

static int hook(void *user, int layer, const float *logits, int T, int E, tmoe_lm_route_out *out,
                tmoe_error *err) {
    hook_ctx *h = user;
    int k = out->k;
    float bias[64];
    assert_true(E <= 64 && out->idx && out->w && out->bias && !out->selected);
    hook_bias(layer, E, bias);
    h->calls++;
    if (h->mode == 0) {
        memcpy(out->bias, bias, sizeof(float) * (size_t)E);
        return TMOE_OK;
    }
    if (h->mode == 1) {
        tmoe_gate_topk(logits, bias, T, E, k, h->renorm, 0, out->idx, out->w);
    } else if (h->mode >= 5) {
        for (int i = 0; i < T * k; i++) {
            /* mode 5: 0.5 y + 0.5 y is y exactly; extra slots beyond the second at weight 0 */
            out->idx[i] = i % k == 0 ? 0 : h->mode - 5;
            out->w[i] = i % k == 0                   ? (h->mode == 5 ? 0.5f : 1.0f)
                        : i % k == 1 && h->mode == 5 ? 0.5f
                                                     : 0.0f;
        }
    } else {
        /* top-(k-1), the last slot padded at weight 0 */
        static int32_t idx[4096];
        static float w[4096];
        assert_true(T * k <= 4096 && k >= 2);
        tmoe_gate_topk(logits, bias, T, E, k - 1, h->renorm, 0, idx, w);
        for (int t = 0; t < T; t++) {
            for (int j = 0; j < k - 1; j++) {
                out->idx[t * k + j] = idx[t * (k - 1) + j];
                out->w[t * k + j] = w[t * (k - 1) + j];
            }
            int32_t first = idx[t * (k - 1)];
            out->idx[t * k + k - 1] = h->mode == 2 ? first : h->mode == 3 ? (first + 1) % E : E;
            out->w[t * k + k - 1] = 0.0f;
        }
    }
    out->selected = 1;
    (void)err;
    return TMOE_OK;
}

/* Logits (n, V) of the first n ids with the route hook fn(user); the token copies each
 * (layer, expert) ran into cnt and of those its lower-precision copy's into ccnt (n_layers x
 * E each; either may be NULL). */
static int hooked_run(const tmoe_lm *m, const uint32_t *ids, int n, tmoe_lm_route_fn fn, void *user,
                      float *logits, int32_t *cnt, int32_t *ccnt, tmoe_error *err) {
    tmoe_kv_cache *kv;
    tmoe_cpu_lm *cpu;
    tmoe_cpu_lm_config cc = {
        .max_tokens = n, .impl = TMOE_IMPL_FUSED, .route = fn, .route_user = user};
    ASSERT_OK(tmoe_kv_cache_create(&m->cfg, 1, n, &kv, err), err);
    ASSERT_OK(tmoe_cpu_lm_create(m, &cc, &cpu, err), err);
    int slot;
    ASSERT_OK(tmoe_kv_seq_open(kv, &slot, err), err);
    int32_t nn = n;
    tmoe_lm_batch b = {1, &slot, &nn, ids, 1};
    int rc = tmoe_cpu_lm_forward(cpu, kv, &b, logits, err);
    size_t ne = (size_t)m->cfg.n_layers * m->cfg.num_experts;
    if (cnt) memcpy(cnt, tmoe_cpu_lm_expert_counts(cpu), sizeof(int32_t) * ne);
    if (ccnt) memcpy(ccnt, tmoe_cpu_lm_copy_counts(cpu), sizeof(int32_t) * ne);
    tmoe_cpu_lm_free(cpu);
    tmoe_kv_cache_free(kv);
    return rc;
}

/* hooked_run with the hook in mode; the token copies per MoE layer summed into copies
 * (n_layers). */
static int hooked_prefill(const tmoe_lm *m, const uint32_t *ids, int n, hook_ctx *h, float *logits,
                          int64_t *copies, tmoe_error *err) {
    int32_t cnt[TMOE_LM_MAX_LAYERS * 64];
    assert_true(m->cfg.n_layers * m->cfg.num_experts <= (int)(sizeof cnt / sizeof *cnt));
    int rc = hooked_run(m, ids, n, hook, h, logits, cnt, NULL, err);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        copies[l] = 0;
        for (int e = 0; e < m->cfg.num_experts; e++) copies[l] += cnt[l * m->cfg.num_experts + e];
    }
    return rc;
}

/* A selection the hook makes itself runs exactly as the same selection made by biases (the
 * logits are bit for bit the same); a padded slot at weight 0 adds nothing, whichever expert
 * it names, and does not run (no copy counted); an expert out of range is refused. */
static void test_route_hook_selection(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_tokens t;
    ASSERT_OK(tmoe_tokens_read(lm_path("text.tokens"), &t, &err), &err);
    const char *const names[] = {"mixtral", "olmoe"}; /* renormalised / plain top-k weights */
    for (int i = 0; i < 2; i++) {
        tmoe_lm *m;
        ASSERT_OK(tmoe_lm_load(lm_path(names[i]), NULL, &m, &err), &err);
        const int n = 12, V = m->cfg.vocab_size, k = m->cfg.top_k;
        assert_true(k >= 2);
        size_t nv = (size_t)n * V;
        float *a = malloc(sizeof(float) * nv), *b = malloc(sizeof(float) * nv);
        assert_true(a && b);
        int64_t ca[TMOE_LM_MAX_LAYERS], cb[TMOE_LM_MAX_LAYERS];
        hook_ctx h = {0, m->cfg.norm_topk_prob, 0};
        ASSERT_OK(hooked_prefill(m, t.ids, n, &h, a, ca, &err), &err);
        assert_int_equal(h.calls, tmoe_lm_num_moe_layers(&m->cfg));
        h.mode = 1;
        ASSERT_OK(hooked_prefill(m, t.ids, n, &h, b, cb, &err), &err);
        assert_memory_equal(a, b, sizeof(float) * nv);
        assert_memory_equal(ca, cb, sizeof(int64_t) * (size_t)m->cfg.n_layers);
        /* the biased selection differs from baseline routing, so the check above has teeth */
        prefill(m, t.ids, n, b, 1);
        assert_true(max_abs_diff(a, b, nv) > 1e-4 * std_of(b, nv));
        h.mode = 2;
        ASSERT_OK(hooked_prefill(m, t.ids, n, &h, a, ca, &err), &err);
        h.mode = 3;
        ASSERT_OK(hooked_prefill(m, t.ids, n, &h, b, cb, &err), &err);
        assert_memory_equal(a, b, sizeof(float) * nv);
        for (int l = 0; l < m->cfg.n_layers; l++)
            assert_int_equal(ca[l], m->cfg.moe_layer[l] ? (int64_t)n * (k - 1) : 0);
        h.mode = 5;
        ASSERT_OK(hooked_prefill(m, t.ids, n, &h, a, ca, &err), &err);
        h.mode = 6;
        ASSERT_OK(hooked_prefill(m, t.ids, n, &h, b, cb, &err), &err);
        assert_memory_equal(a, b, sizeof(float) * nv);
        for (int l = 0; l < m->cfg.n_layers; l++) {
            assert_int_equal(ca[l], m->cfg.moe_layer[l] ? (int64_t)2 * n : 0);
            assert_int_equal(cb[l], m->cfg.moe_layer[l] ? (int64_t)n : 0);
        }
        h.mode = 4;
        assert_int_equal(hooked_prefill(m, t.ids, n, &h, a, ca, &err), TMOE_EINVAL);
        assert_non_null(strstr(err.msg, "route hook"));
        free(a);
        free(b);
        tmoe_lm_free(m);
    }
    tmoe_tokens_free(&t);
}

/* ---- lower-precision copies ----------------------------------------------------------- */
typedef struct copy_hook_ctx {
    unsigned char run[TMOE_MAX_EXPERTS]; /* the experts to run as their copies */
} copy_hook_ctx;

static int copy_hook(void *user, int layer, const float *logits, int T, int E,
                     tmoe_lm_route_out *out, tmoe_error *err) {
    const copy_hook_ctx *h = user;
    (void)layer, (void)logits, (void)T, (void)err;
    assert_non_null(out->use_copy);
    for (int e = 0; e < E; e++) {
        assert_int_equal(out->use_copy[e], 0); /* zeroed by the engine */
        out->use_copy[e] = h->run[e];
    }
    return TMOE_OK;
}

/* Copies (tmoe_lm_load_opts.copy): each copy holds the weights a load of its type gives;
 * running experts 1 and 3 as their q4 copies gives, bit for bit, the logits of the model
 * loaded with experts 1 and 3 as q4, and not those without the copies; the copies that ran
 * are counted; a hook that runs a copy the model lacks, and bad options, are refused. */
static void test_expert_copies(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_tokens t;
    ASSERT_OK(tmoe_tokens_read(lm_path("text.tokens"), &t, &err), &err);
    tmoe_lm_load_opts o = tmoe_lm_load_opts_default();
    o.experts_f32 = 0;
    o.group_size = 4;
    o.expert_type = TMOE_ET_FP16;
    tmoe_lm *plain, *cp, *mix;
    ASSERT_OK(tmoe_lm_load(lm_path("mixtral"), &o, &plain, &err), &err);
    tmoe_lm_load_opts oc = o;
    oc.n_copy = 2;
    oc.copy[1] = oc.copy[3] = 1;
    oc.copy_type = TMOE_ET_Q4;
    ASSERT_OK(tmoe_lm_load(lm_path("mixtral"), &oc, &cp, &err), &err);
    tmoe_lm_load_opts om = o;
    om.n_types = 5;
    for (int e = 0; e < 5; e++) om.types[e] = e == 1 || e == 3 ? TMOE_ET_Q4 : TMOE_ET_FP16;
    ASSERT_OK(tmoe_lm_load(lm_path("mixtral"), &om, &mix, &err), &err);
    const tmoe_lm_config cfg = cp->cfg, *c = &cfg;
    int E = c->num_experts, L = c->n_layers, n = 12, V = c->vocab_size;
    assert_int_equal(E, 5);
    assert_true(tmoe_lm_has_copy(&cp->opts, 1) && tmoe_lm_has_copy(&cp->opts, 3));
    assert_false(tmoe_lm_has_copy(&cp->opts, 0) || tmoe_lm_has_copy(&plain->opts, 1));
    /* the copies' weights: those of a q4 load; the experts themselves stay fp16 */
    size_t n13 = (size_t)2 * c->d_ff_expert * c->d_model;
    float *w = malloc(sizeof(float) * n13), *v = malloc(sizeof(float) * n13);
    assert_true(w && v);
    for (int l = 0; l < L; l++) {
        if (!cp->layers[l].experts) continue;
        assert_non_null(cp->layers[l].copies);
        for (int e = 1; e < 5; e += 2) {
            const tmoe_expert *x = &cp->layers[l].copies[e], *y = &mix->layers[l].experts[e];
            assert_int_equal(x->type, TMOE_ET_Q4);
            assert_int_equal(cp->layers[l].experts[e].type, TMOE_ET_FP16);
            tmoe_linear_to_f32(&x->fc1, w);
            tmoe_linear_to_f32(&y->fc1, v);
            assert_memory_equal(w, v, sizeof(float) * n13);
        }
    }
    free(w);
    free(v);
    /* the copies are held beside the experts */
    assert_true(tmoe_lm_sizes_of(cp).weight_bytes > tmoe_lm_sizes_of(plain).weight_bytes);
    assert_true(tmoe_lm_sizes_of(cp).weight_bytes < 2.0 * tmoe_lm_sizes_of(plain).weight_bytes);
    /* the decoder */
    size_t nv = (size_t)n * V, ne = (size_t)L * E;
    float *a = malloc(sizeof(float) * nv), *b = malloc(sizeof(float) * nv);
    int32_t *cnt = malloc(sizeof(int32_t) * ne), *ccnt = malloc(sizeof(int32_t) * ne);
    assert_true(a && b && cnt && ccnt);
    copy_hook_ctx h = {{0}};
    ASSERT_OK(hooked_run(cp, t.ids, n, copy_hook, &h, a, cnt, ccnt, &err), &err);
    prefill(plain, t.ids, n, b, 1);
    assert_memory_equal(a, b, sizeof(float) * nv); /* no copy run: the fp16 model */
    for (size_t i = 0; i < ne; i++) assert_int_equal(ccnt[i], 0);
    h.run[1] = h.run[3] = 1;
    ASSERT_OK(hooked_run(cp, t.ids, n, copy_hook, &h, a, cnt, ccnt, &err), &err);
    prefill(mix, t.ids, n, b, 1);
    assert_memory_equal(a, b, sizeof(float) * nv);
    prefill(plain, t.ids, n, b, 1);
    assert_true(max_abs_diff(a, b, nv) > 0.0); /* the copies changed the output */
    int ran = 0;
    for (int l = 0; l < L; l++)
        for (int e = 0; e < E; e++) {
            int32_t want = e == 1 || e == 3 ? cnt[l * E + e] : 0;
            assert_int_equal(ccnt[l * E + e], want);
            ran += want;
        }
    assert_true(ran > 0);
    h.run[0] = 1; /* expert 0 has no copy */
    assert_int_equal(hooked_run(cp, t.ids, n, copy_hook, &h, a, cnt, ccnt, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "expert 0's copy, but the model holds none"));
    free(a);
    free(b);
    free(cnt);
    free(ccnt);
    tmoe_lm_free(plain);
    tmoe_lm_free(cp);
    tmoe_lm_free(mix);
    tmoe_tokens_free(&t);
    /* refusals */
    tmoe_lm *m = NULL;
    tmoe_lm_load_opts bad = oc;
    bad.copy[7] = 1;
    bad.n_copy = 3;
    assert_int_equal(tmoe_lm_load(lm_path("mixtral"), &bad, &m, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "expert 7 has a copy, but the model has 5 experts"));
    bad = oc;
    bad.n_copy = 1;
    assert_int_equal(tmoe_lm_load(lm_path("mixtral"), &bad, &m, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "n_copy is 1 but 2 experts are marked"));
    bad = oc;
    bad.copy_type = TMOE_ET_BF16;
    assert_int_equal(tmoe_lm_load(lm_path("mixtral"), &bad, &m, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "copy type must be fp16, q4 or q2"));
    bad = oc;
    bad.experts_f32 = 1;
    assert_int_equal(tmoe_lm_load(lm_path("mixtral"), &bad, &m, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "not for fp32 experts"));
    bad = oc;
    bad.expert_type = TMOE_ET_Q4;
    bad.copy_type = TMOE_ET_FP16;
    bad.act8 = 1;
    bad.group_size = 32;
    assert_int_equal(tmoe_lm_load(lm_path("mixtral"), &bad, &m, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "(the copies are fp16)"));
    assert_null(m);
    /* a random model's copies: its experts quantized as generated */
    ASSERT_OK(tmoe_lm_random(c, &oc, 1, &m, &err), &err);
    size_t nw = (size_t)2 * c->d_ff_expert * c->d_model;
    float *f = malloc(sizeof(float) * nw), *g = malloc(sizeof(float) * nw);
    assert_true(f && g);
    for (int l = 0; l < c->n_layers; l++) {
        if (!m->layers[l].experts) continue;
        tmoe_linear q = {0};
        ASSERT_OK(tmoe_linear_alloc(&q, TMOE_ET_Q4, 2 * c->d_ff_expert, c->d_model, 4, &err), &err);
        tmoe_linear_to_f32(&m->layers[l].experts[3].fc1, f);
        ASSERT_OK(tmoe_linear_set_f32(&q, f, &err), &err);
        tmoe_linear_to_f32(&q, f);
        tmoe_linear_to_f32(&m->layers[l].copies[3].fc1, g);
        assert_memory_equal(f, g, sizeof(float) * nw);
        tmoe_linear_free(&q);
    }
    free(f);
    free(g);
    tmoe_lm_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_transformers), cmocka_unit_test(test_batch_join_leave),
        cmocka_unit_test(test_typed_experts),        cmocka_unit_test(test_config),
        cmocka_unit_test(test_token_files),          cmocka_unit_test(test_kv_slots),
        cmocka_unit_test(test_route_hook_selection), cmocka_unit_test(test_int8_activations),
        cmocka_unit_test(test_expert_type_list),     cmocka_unit_test(test_expert_copies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
