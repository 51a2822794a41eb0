/* The MoE layer through the engine (cpu backend) against an independent float64 sum over
 * tokens and chosen experts; top-k with biases; bad configurations; mixed expert types. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/backend.h"

static tmoe_rng rng;

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static double *weights64(const tmoe_linear *l) {
    size_t n = (size_t)l->out * l->in;
    float *w = xmalloc(n * sizeof *w);
    double *d = xmalloc(n * sizeof *d);
    tmoe_linear_to_f32(l, w);
    for (size_t i = 0; i < n; i++) d[i] = w[i];
    free(w);
    return d;
}

/* y (out) = W (out, in) x (in) in float64 */
static void matvec(const double *W, const double *x, int out, int in, double *y) {
    for (int o = 0; o < out; o++) {
        double acc = 0.0;
        for (int i = 0; i < in; i++) acc += W[(size_t)o * in + i] * x[i];
        y[o] = acc;
    }
}

typedef struct moe_case {
    int E, k, T, act, renorm, impl;
    const char *types; /* one letter per expert: f q4 2 -> fp16 / q4 / q2 */
    int full;          /* whole block (attention too), else the MoE layer alone */
} moe_case;

/* x + attention sub-block in float64: rmsnorm, q k v, causal multi-head attention, wo. */
static void ref_attention(const tmoe_block *b, const float *x, int T, double *xres) {
    int D = b->cfg.d_model, H = b->cfg.n_heads, dh = D / H;
    double *wqkv = weights64(&b->wqkv), *wo = weights64(&b->wo);
    double *qkv = xmalloc(sizeof(double) * (size_t)T * 3 * D);
    double *att = xmalloc(sizeof(double) * (size_t)T * D),
           *xn = xmalloc(sizeof(double) * (size_t)D);
    double *p = xmalloc(sizeof(double) * (size_t)T), *o = xmalloc(sizeof(double) * (size_t)D);
    for (int t = 0; t < T; t++) {
        double ss = 0.0;
        for (int i = 0; i < D; i++) ss += (double)x[t * D + i] * x[t * D + i];
        double inv = 1.0 / sqrt(ss / D + (double)b->cfg.norm_eps);
        for (int i = 0; i < D; i++) xn[i] = x[t * D + i] * inv * b->norm1[i];
        matvec(wqkv, xn, 3 * D, D, qkv + (size_t)t * 3 * D);
    }
    for (int hd = 0; hd < H; hd++)
        for (int t = 0; t < T; t++) {
            double mx = -INFINITY, den = 0.0;
            for (int s = 0; s <= t; s++) {
                double acc = 0.0;
                for (int i = 0; i < dh; i++)
                    acc += qkv[(size_t)t * 3 * D + hd * dh + i] *
                           qkv[(size_t)s * 3 * D + D + hd * dh + i];
                p[s] = acc / sqrt((double)dh);
                mx = fmax(mx, p[s]);
            }
            for (int s = 0; s <= t; s++) den += p[s] = exp(p[s] - mx);
            for (int i = 0; i < dh; i++) {
                double acc = 0.0;
                for (int s = 0; s <= t; s++)
                    acc += p[s] / den * qkv[(size_t)s * 3 * D + 2 * D + hd * dh + i];
                att[(size_t)t * D + hd * dh + i] = acc;
            }
        }
    for (int t = 0; t < T; t++) {
        matvec(wo, att + (size_t)t * D, D, D, o);
        for (int i = 0; i < D; i++) xres[(size_t)t * D + i] = x[t * D + i] + o[i];
    }
    free(wqkv);
    free(wo);
    free(qkv);
    free(att);
    free(xn);
    free(p);
    free(o);
}

static void run_moe_case(const moe_case *mc) {
    tmoe_block_config c = tmoe_block_config_default();
    tmoe_etype types[TMOE_MAX_EXPERTS];
    c.d_model = 128;
    c.d_ff = 192;
    c.group_size = 64;
    c.n_heads = 4;
    c.num_experts = mc->E;
    c.top_k = mc->k;
    c.act = (tmoe_act)mc->act;
    c.renormalize = mc->renorm;
    c.seed = tmoe_rng_u64(&rng);
    for (int e = 0; e < mc->E; e++)
        types[e] = mc->types[e % strlen(mc->types)] == 'f'   ? TMOE_ET_FP16
                   : mc->types[e % strlen(mc->types)] == '4' ? TMOE_ET_Q4
                                                             : TMOE_ET_Q2;
    c.expert_types = types;
    tmoe_error err = {0};
    tmoe_block *b;
    ASSERT_OK(tmoe_block_create(&c, &b, &err), &err);
    for (int e = 0; e < mc->E; e++) assert_int_equal(b->moe.experts[e].type, types[e]);
    /* a non-trivial norm weight */
    for (int i = 0; i < c.d_model; i++) {
        b->norm1[i] = 0.5f + (float)tmoe_rng_uniform(&rng);
        b->norm2[i] = 0.5f + (float)tmoe_rng_uniform(&rng);
    }
    tmoe_engine_config ec = tmoe_engine_config_default();
    ec.backend = TMOE_BACKEND_CPU;
    ec.max_tokens = 17;
    ec.impl = (tmoe_impl)mc->impl;
    tmoe_engine *eng;
    ASSERT_OK(tmoe_engine_create(b, &ec, &eng, &err), &err);
    int T = mc->T, D = c.d_model, E = mc->E, k = mc->k, F = c.d_ff;
    float *x = xmalloc(sizeof(float) * (size_t)T * D), *y = xmalloc(sizeof(float) * (size_t)T * D);
    int32_t *idx = xmalloc(sizeof(int32_t) * (size_t)T * k);
    float *w = xmalloc(sizeof(float) * (size_t)T * k);
    for (size_t i = 0; i < (size_t)T * D; i++) x[i] = tmoe_rng_uniform_sym(&rng, 2.0f);
    tu_poison(y, sizeof(float) * (size_t)T * D);
    tu_poison(idx, sizeof(int32_t) * (size_t)T * k);
    tmoe_moe_metrics m = {.topk_idx = idx, .topk_w = w};
    ASSERT_OK(tmoe_engine_forward(eng, x, T, !mc->full, NULL, y, &m, &err), &err);

    /* independent float64 reference from the dequantized weights */
    double *gate = weights64(&b->moe.gate);
    double **w1 = xmalloc(sizeof(double *) * (size_t)E),
           **w2 = xmalloc(sizeof(double *) * (size_t)E);
    for (int e = 0; e < E; e++) {
        w1[e] = weights64(&b->moe.experts[e].fc1);
        w2[e] = weights64(&b->moe.experts[e].fc2);
    }
    double *xn = xmalloc(sizeof(double) * (size_t)D),
           *ref = xmalloc(sizeof(double) * (size_t)T * D);
    double *h = xmalloc(sizeof(double) * 2 * (size_t)F), *a = xmalloc(sizeof(double) * (size_t)F);
    double *ye = xmalloc(sizeof(double) * (size_t)D), z[TMOE_MAX_EXPERTS];
    int32_t load[TMOE_MAX_EXPERTS] = {0};
    double *xres = xmalloc(sizeof(double) * (size_t)T * D); /* the MoE layer's input */
    if (mc->full)
        ref_attention(b, x, T, xres);
    else
        for (size_t i = 0; i < (size_t)T * D; i++) xres[i] = x[i];
    for (int t = 0; t < T; t++) {
        const double *xt = xres + (size_t)t * D;
        double ss = 0.0;
        for (int i = 0; i < D; i++) ss += xt[i] * xt[i];
        double inv = 1.0 / sqrt(ss / D + (double)c.norm_eps);
        for (int i = 0; i < D; i++) xn[i] = xt[i] * inv * b->norm2[i];
        matvec(gate, xn, E, D, z);
        /* the engine's choice must be a top-k of the float64 logits (up to near-ties) */
        const int32_t *ti = idx + (size_t)t * k;
        int chosen[TMOE_MAX_EXPERTS] = {0};
        for (int j = 0; j < k; j++) {
            assert_true(ti[j] >= 0 && ti[j] < E);
            assert_false(chosen[ti[j]]);
            chosen[ti[j]] = 1;
            load[ti[j]]++;
        }
        double mx = -INFINITY, den = 0.0, sel = 0.0;
        for (int e = 0; e < E; e++) mx = fmax(mx, z[e]);
        for (int e = 0; e < E; e++) den += exp(z[e] - mx);
        for (int e = 0; e < E; e++)
            for (int f = 0; f < E; f++)
                if (chosen[e] && !chosen[f]) assert_true(z[e] >= z[f] - 1e-2);
        for (int j = 0; j < k; j++) sel += exp(z[ti[j]] - mx);
        for (int i = 0; i < D; i++) ref[(size_t)t * D + i] = xt[i]; /* residual */
        for (int j = 0; j < k; j++) {
            int e = ti[j];
            double cw = exp(z[e] - mx) / (mc->renorm ? sel : den);
            assert_true(fabs(cw - w[t * k + j]) <= TOL_F16_STEPS * (fabs(cw) + 1e-3));
            matvec(w1[e], xn, b->moe.experts[e].fc1.out, D, h);
            for (int i = 0; i < F; i++)
                a[i] =
                    mc->act == TMOE_ACT_RELU ? fmax(h[i], 0.0) : h[i] / (1 + exp(-h[i])) * h[F + i];
            matvec(w2[e], a, D, F, ye);
            for (int i = 0; i < D; i++) ref[(size_t)t * D + i] += cw * ye[i];
        }
    }
    /* compare the MoE contribution (y - x) so the residual does not hide errors */
    float *dy = xmalloc(sizeof(float) * (size_t)T * D);
    double *dref = xmalloc(sizeof(double) * (size_t)T * D), mxr = 0.0;
    for (size_t i = 0; i < (size_t)T * D; i++) {
        dy[i] = y[i] - x[i];
        dref[i] = ref[i] - x[i];
        mxr = fmax(mxr, fabs(dref[i]));
    }
    char what[128];
    snprintf(what, sizeof what, "%s E=%d k=%d T=%d %s %s renorm=%d %s", mc->full ? "block" : "moe",
             E, k, T, tmoe_act_name((tmoe_act)mc->act), mc->types, mc->renorm,
             tmoe_impl_name((tmoe_impl)mc->impl));
    tu_assert_close(what, dy, dref, (size_t)T * D, TOL_F16_STEPS * mxr, TOL_F16_STEPS);
    assert_true(tu_rel_l2(dy, dref, (size_t)T * D) < TOL_F16_STEPS);
    /* metrics */
    int sum = 0;
    for (int e = 0; e < E; e++) {
        assert_int_equal(m.tokens_per_expert[e], load[e]);
        sum += m.tokens_per_expert[e];
        assert_false(isnan(m.expert_ms[e]));
    }
    assert_int_equal(sum, T * k);
    assert_int_equal(m.tokens, T);
    assert_true(isnan(m.predicted_energy_j));
    assert_false(isnan(m.op_ms[TMOE_OP_GATE_TOPK]));
    assert_false(isnan(m.op_ms[TMOE_OP_LINEAR_FC1]));
    assert_true(mc->full == !isnan(m.op_ms[TMOE_OP_ATTN_CORE])); /* moe_only: no attention */
    free(xres);

    for (int e = 0; e < E; e++) {
        free(w1[e]);
        free(w2[e]);
    }
    free(w1);
    free(w2);
    free(gate);
    free(xn);
    free(ref);
    free(h);
    free(a);
    free(ye);
    free(dy);
    free(dref);
    free(x);
    free(y);
    free(idx);
    free(w);
    tmoe_engine_free(eng);
    tmoe_block_free(b);
}

static void test_moe_layer(void **state) {
    (void)state;
    static const moe_case cases[] = {
        {8, 2, 17, TMOE_ACT_RELU, 1, TMOE_IMPL_FUSED, "4", 0},
        {8, 2, 3, TMOE_ACT_RELU, 0, TMOE_IMPL_UNFUSED, "2", 0},
        {8, 2, 1, TMOE_ACT_SWIGLU, 1, TMOE_IMPL_FUSED, "f", 0},
        {6, 3, 17, TMOE_ACT_SWIGLU, 1, TMOE_IMPL_UNFUSED, "f42", 0},
        {5, 1, 17, TMOE_ACT_RELU, 0, TMOE_IMPL_FUSED, "42f", 0},
        {4, 4, 3, TMOE_ACT_SWIGLU, 0, TMOE_IMPL_FUSED, "2f4", 0},
        /* the whole block: attention sub-block, then the MoE layer */
        {8, 2, 17, TMOE_ACT_SWIGLU, 1, TMOE_IMPL_FUSED, "f42", 1},
        {6, 2, 3, TMOE_ACT_RELU, 0, TMOE_IMPL_UNFUSED, "4", 1},
        {4, 1, 1, TMOE_ACT_RELU, 1, TMOE_IMPL_FUSED, "2", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_moe_case(&cases[i]);
}

static void test_topk_bias(void **state) {
    (void)state;
    int T = 17, E = 8, k = 2;
    float z[17 * 8], bias[8] = {0}, w[17 * 3], w0[17 * 3];
    int32_t idx[17 * 3], idx0[17 * 3];
    for (int i = 0; i < T * E; i++) z[i] = tmoe_rng_uniform_sym(&rng, 3.0f);
    /* a large bias forces expert 5 in, a large negative one keeps expert 2 out */
    tmoe_gate_topk(z, NULL, T, E, k, 1, 0, idx0, w0);
    int had2 = 0;
    for (int i = 0; i < T * k; i++) had2 |= idx0[i] == 2;
    bias[5] = 100.0f;
    bias[2] = -100.0f;
    /* make expert 2 the unbiased favourite of every token so the negative bias must act */
    for (int t = 0; t < T; t++) z[t * E + 2] = 10.0f;
    for (int renorm = 0; renorm < 2; renorm++) {
        tmoe_gate_topk(z, bias, T, E, k, renorm, 0, idx, w);
        for (int t = 0; t < T; t++) {
            assert_int_equal(idx[t * k], 5);
            assert_int_not_equal(idx[t * k + 1], 2);
            /* weights: softmax of the UNbiased logits at the chosen experts */
            double mx = -INFINITY, den = 0.0, p[8], sel = 0.0;
            for (int e = 0; e < E; e++) mx = fmax(mx, z[t * E + e]);
            for (int e = 0; e < E; e++) den += p[e] = exp(z[t * E + e] - mx);
            for (int j = 0; j < k; j++) sel += p[idx[t * k + j]];
            double sum = 0.0;
            for (int j = 0; j < k; j++) {
                double want = p[idx[t * k + j]] / (renorm ? sel : den);
                assert_true(fabs(w[t * k + j] - want) <= TOL_F32 * (want + 1e-6));
                sum += w[t * k + j];
            }
            if (renorm)
                assert_true(fabs(sum - 1.0) < TOL_F32);
            else
                assert_true(sum < 1.0 - 1e-3); /* expert 2 holds most of the mass */
        }
    }
    (void)had2;
    /* bias_in_weights: the combine weights follow the biased scores (expert 5 ~ all of it) */
    tmoe_gate_topk(z, bias, T, E, k, 1, 1, idx, w);
    for (int t = 0; t < T; t++) assert_true(w[t * k] > 0.999f);
    /* ties break to the lower index, every run */
    float flat[17 * 8], tieb[8];
    for (int i = 0; i < T * E; i++) flat[i] = 0.25f;
    for (int e = 0; e < E; e++) tieb[e] = e >= 3 ? 1.0f : 0.0f; /* experts 3..7 tie on top */
    for (int run = 0; run < 3; run++) {
        tu_poison(idx, sizeof idx);
        tmoe_gate_topk(flat, tieb, T, E, 3, 1, 0, idx, w);
        for (int t = 0; t < T; t++) {
            assert_int_equal(idx[t * 3], 3);
            assert_int_equal(idx[t * 3 + 1], 4);
            assert_int_equal(idx[t * 3 + 2], 5);
            for (int j = 0; j < 3; j++) assert_true(fabs(w[t * 3 + j] - 1.0 / 3) < TOL_F32);
        }
    }
}

/* Through the engine: a bias changes the selection, the routing record says so. */
static void test_engine_bias(void **state) {
    (void)state;
    tmoe_block_config c = tmoe_block_config_default();
    c.d_model = 64;
    c.d_ff = 64;
    c.group_size = 32;
    c.expert_type = TMOE_ET_Q4;
    tmoe_error err = {0};
    tmoe_block *b;
    ASSERT_OK(tmoe_block_create(&c, &b, &err), &err);
    tmoe_engine_config ec = tmoe_engine_config_default();
    ec.backend = TMOE_BACKEND_CPU;
    ec.max_tokens = 17;
    tmoe_engine *eng;
    ASSERT_OK(tmoe_engine_create(b, &ec, &eng, &err), &err);
    float x[17 * 64], y[17 * 64], bias[8] = {0};
    for (int i = 0; i < 17 * 64; i++) x[i] = tmoe_rng_uniform_sym(&rng, 1.0f);
    bias[6] = 50.0f;
    bias[1] = -50.0f;
    tmoe_moe_metrics m = {0};
    ASSERT_OK(tmoe_engine_forward(eng, x, 17, 0, bias, y, &m, &err), &err);
    assert_int_equal(m.tokens_per_expert[6], 17);
    assert_int_equal(m.tokens_per_expert[1], 0);
    for (int i = 0; i < 17 * 64; i++) assert_true(isfinite(y[i]));
    /* the split API: logits before routing, then moe with a bias, then output */
    float logits[17 * 8];
    ASSERT_OK(tmoe_engine_begin(eng, x, 17, 0, &err), &err);
    ASSERT_OK(tmoe_engine_logits(eng, logits, &err), &err);
    assert_int_equal(tmoe_engine_output(eng, y, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "before the moe step"));
    ASSERT_OK(tmoe_engine_moe(eng, bias, &m, &err), &err);
    ASSERT_OK(tmoe_engine_output(eng, y, &err), &err);
    assert_int_equal(tmoe_engine_begin(eng, x, 18, 0, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "18 tokens"));
    tmoe_engine_free(eng);
    tmoe_block_free(b);
}

static void expect_bad(const tmoe_block_config *c, const char *needle) {
    tmoe_error err = {0};
    tmoe_block *b = (tmoe_block *)&err; /* must be reset to NULL */
    int rc = tmoe_block_create(c, &b, &err);
    if (rc == TMOE_OK) fail_msg("config accepted, expected an error containing '%s'", needle);
    assert_null(b);
    if (!strstr(err.msg, needle)) fail_msg("message '%s' does not contain '%s'", err.msg, needle);
}

static void test_bad_configs(void **state) {
    (void)state;
    tmoe_block_config c;
#define BAD(field, value, needle)                                                                  \
    c = tmoe_block_config_default();                                                               \
    c.field = value;                                                                               \
    expect_bad(&c, needle)
    BAD(top_k, 9, "top_k = 9 is larger than num_experts = 8");
    BAD(n_heads, 3, "d_model = 256 is not divisible by n_heads = 3");
    BAD(d_model, 0, "d_model = 0: must be positive");
    BAD(d_model, -4, "d_model = -4: must be positive");
    BAD(d_ff, 0, "d_ff = 0: must be positive");
    BAD(n_heads, -1, "n_heads = -1: must be positive");
    BAD(num_experts, 0, "num_experts = 0: must be positive");
    BAD(num_experts, 1000, "num_experts = 1000: at most 256");
    BAD(top_k, 0, "top_k = 0: must be positive");
    BAD(seq_len, -2, "seq_len = -2: must be positive");
    BAD(expert_type, (tmoe_etype)7, "expert 0: unknown expert type 7");
    BAD(norm_eps, -1.0f, "norm_eps");
    c = tmoe_block_config_default();
    c.expert_type = TMOE_ET_Q2;
    c.group_size = 0;
    expect_bad(&c, "group size 0");
    tmoe_etype types[8] = {TMOE_ET_FP16, TMOE_ET_Q4, (tmoe_etype)-1};
    c = tmoe_block_config_default();
    c.expert_types = types;
    expect_bad(&c, "expert 2: unknown expert type -1");
#undef BAD
    /* engine */
    c = tmoe_block_config_default();
    tmoe_error err = {0};
    tmoe_block *b;
    ASSERT_OK(tmoe_block_create(&c, &b, &err), &err);
    tmoe_engine_config ec = tmoe_engine_config_default();
    ec.backend = TMOE_BACKEND_CPU;
    ec.max_tokens = 0;
    tmoe_engine *eng = (tmoe_engine *)&err;
    assert_int_equal(tmoe_engine_create(b, &ec, &eng, &err), TMOE_EINVAL);
    assert_null(eng);
    assert_non_null(strstr(err.msg, "max_tokens = 0"));
    tmoe_block_free(b);
    tmoe_block_free(NULL);
    tmoe_engine_free(NULL);
}

/* Mixed expert types, whole block (attention + MoE), repeated runs give the same bits. */
static void test_mixed_block(void **state) {
    (void)state;
    tmoe_block_config c = tmoe_block_config_default();
    tmoe_etype types[8] = {TMOE_ET_FP16, TMOE_ET_Q4, TMOE_ET_Q2, TMOE_ET_Q4,
                           TMOE_ET_FP16, TMOE_ET_Q2, TMOE_ET_Q4, TMOE_ET_Q4};
    c.expert_types = types;
    c.act = TMOE_ACT_SWIGLU;
    tmoe_error err = {0};
    tmoe_block *b, *b2;
    ASSERT_OK(tmoe_block_create(&c, &b, &err), &err);
    ASSERT_OK(tmoe_block_create(&c, &b2, &err), &err);
    for (int e = 0; e < 8; e++) {
        assert_int_equal(b->types[e], types[e]);
        size_t want = types[e] == TMOE_ET_FP16
                          ? 2 * (size_t)c.d_model * 3 * c.d_ff
                          : (size_t)c.d_model * 3 * c.d_ff * tmoe_etype_bits(types[e]) / 8 +
                                2 * (size_t)c.d_model * 3 * c.d_ff / c.group_size;
        assert_int_equal(tmoe_expert_weight_bytes(&b->moe.experts[e]), want);
    }
    tmoe_engine_config ec = tmoe_engine_config_default();
    ec.backend = TMOE_BACKEND_CPU;
    ec.max_tokens = 17;
    float *x = xmalloc(sizeof(float) * 17 * 256), *y1 = xmalloc(sizeof(float) * 17 * 256),
          *y2 = xmalloc(sizeof(float) * 17 * 256);
    for (int i = 0; i < 17 * 256; i++) x[i] = tmoe_rng_uniform_sym(&rng, 1.0f);
    for (int impl = 0; impl < 2; impl++) {
        tmoe_engine *e1, *e2;
        ec.impl = (tmoe_impl)impl;
        ASSERT_OK(tmoe_engine_create(b, &ec, &e1, &err), &err);
        ASSERT_OK(tmoe_engine_create(b2, &ec, &e2, &err), &err);
        tmoe_moe_metrics m = {0};
        ASSERT_OK(tmoe_engine_forward(e1, x, 17, 0, NULL, y1, &m, &err), &err);
        ASSERT_OK(tmoe_engine_forward(e2, x, 17, 0, NULL, y2, NULL, &err), &err);
        assert_memory_equal(y1, y2, sizeof(float) * 17 * 256); /* same seed, same bits */
        for (int i = 0; i < 17 * 256; i++) assert_true(isfinite(y1[i]));
        assert_false(isnan(m.op_ms[TMOE_OP_ATTN_CORE]));
        assert_true(impl == TMOE_IMPL_UNFUSED ? !isnan(m.op_ms[TMOE_OP_DEQUANT_UNPACK])
                                              : isnan(m.op_ms[TMOE_OP_DEQUANT_UNPACK]));
        tmoe_engine_free(e1);
        tmoe_engine_free(e2);
    }
    free(x);
    free(y1);
    free(y2);
    tmoe_block_free(b);
    tmoe_block_free(b2);
}

int main(void) {
    tmoe_rng_seed(&rng, tu_seed());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_moe_layer),   cmocka_unit_test(test_topk_bias),
        cmocka_unit_test(test_engine_bias), cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_mixed_block),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
