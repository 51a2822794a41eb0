/* Every CPU reference kernel against a naive float64 reference written here, on fresh random
 * inputs, odd sizes (1, 3, 17 tokens) and outputs poisoned before each run. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/backend.h"

static const int TOKENS[] = {1, 3, 17};
#define NT (int)(sizeof TOKENS / sizeof *TOKENS)

static tmoe_rng rng;

static double f16d(tmoe_f16 h) {
    return (double)tmoe_f16_to_f32(h);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static void rand_f32(float *x, size_t n, float a) {
    for (size_t i = 0; i < n; i++) x[i] = tmoe_rng_uniform_sym(&rng, a);
}

static void rand_f16(tmoe_f16 *x, size_t n, float a) {
    for (size_t i = 0; i < n; i++) x[i] = tmoe_f32_to_f16(tmoe_rng_uniform_sym(&rng, a));
}

/* |got - ref| <= tol (|ref| + max |ref|) elementwise. */
static void check(const char *what, const float *got, const double *ref, size_t n, double tol) {
    double mx = 0.0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(ref[i]));
    tu_assert_close(what, got, ref, n, tol * mx, tol);
}

static void check16(const char *what, const tmoe_f16 *got, const double *ref, size_t n,
                    double tol) {
    float *g = xmalloc(n * sizeof *g);
    for (size_t i = 0; i < n; i++) g[i] = tmoe_f16_to_f32(got[i]);
    check(what, g, ref, n, tol);
    free(g);
}

static int ref_unpack(const uint8_t *p, int bits, long i) {
    int per = 8 / bits;
    int u = (p[i / per] >> ((i % per) * bits)) & ((1 << bits) - 1);
    return u >= (1 << (bits - 1)) ? u - (1 << bits) : u;
}

/* Float64 weights of a linear: fp16 values, or q * scale from our own unpacking. */
static double *ref_weights(const tmoe_linear *l) {
    size_t n = (size_t)l->out * l->in;
    double *w = xmalloc(n * sizeof *w);
    int bits = tmoe_etype_bits(l->type);
    for (int o = 0; o < l->out; o++)
        for (int i = 0; i < l->in; i++) {
            size_t k = (size_t)o * l->in + i;
            if (l->type == TMOE_ET_FP16) {
                w[k] = f16d(l->w[k]);
            } else if (l->type == TMOE_ET_BF16) {
                w[k] = (double)tmoe_bf16_to_f32(l->w[k]);
            } else {
                int q = ref_unpack(l->q + (size_t)o * l->in * bits / 8, bits, i);
                w[k] = q * f16d(l->scales[(size_t)o * (l->in / l->group) + i / l->group]);
            }
        }
    return w;
}

static void ref_linear(const double *x, const double *w, int n, int in, int out, double *y) {
    for (int r = 0; r < n; r++)
        for (int o = 0; o < out; o++) {
            double acc = 0.0;
            for (int i = 0; i < in; i++) acc += x[(size_t)r * in + i] * w[(size_t)o * in + i];
            y[(size_t)r * out + o] = acc;
        }
}

static void test_rmsnorm(void **state) {
    (void)state;
    int D = 67;
    for (int ti = 0; ti < NT; ti++) {
        int T = TOKENS[ti];
        float *x = xmalloc(sizeof(float) * (size_t)T * D), w[67];
        tmoe_f16 *y = xmalloc(sizeof(tmoe_f16) * (size_t)T * D);
        double *ref = xmalloc(sizeof(double) * (size_t)T * D);
        rand_f32(x, (size_t)T * D, 3.0f);
        rand_f32(w, (size_t)D, 2.0f);
        tu_poison(y, sizeof(tmoe_f16) * (size_t)T * D);
        tmoe_cpu_rmsnorm(x, w, T, D, 1e-5f, y);
        for (int t = 0; t < T; t++) {
            double ss = 0.0;
            for (int i = 0; i < D; i++) ss += (double)x[t * D + i] * x[t * D + i];
            double inv = 1.0 / sqrt(ss / D + 1e-5);
            for (int i = 0; i < D; i++) ref[t * D + i] = x[t * D + i] * inv * w[i];
        }
        check16("rmsnorm", y, ref, (size_t)T * D, TOL_F16_ROUND);
        free(x);
        free(y);
        free(ref);
    }
}

/* One linear of type t run fused and unfused (and the direct kernels) vs float64. */
static void check_linear(tmoe_etype t, int in, int out, int group) {
    tmoe_error err = {0};
    tmoe_linear l;
    ASSERT_OK(tmoe_linear_alloc(&l, t, out, in, group, &err), &err);
    ASSERT_OK(tmoe_linear_init_random(&l, &rng, &err), &err);
    double *w = ref_weights(&l);
    for (int ti = 0; ti < NT; ti++) {
        int n = TOKENS[ti];
        tmoe_f16 *x = xmalloc(sizeof(tmoe_f16) * (size_t)n * in);
        tmoe_f16 *w16 = xmalloc(sizeof(tmoe_f16) * (size_t)out * in);
        float *y = xmalloc(sizeof(float) * (size_t)n * out);
        double *xd = xmalloc(sizeof(double) * (size_t)n * in);
        double *ref = xmalloc(sizeof(double) * (size_t)n * out);
        rand_f16(x, (size_t)n * in, 1.0f);
        for (size_t i = 0; i < (size_t)n * in; i++) xd[i] = f16d(x[i]);
        if (t == TMOE_ET_BF16) /* the operands a bf16 linear multiplies: x rounded to bf16 */
            for (size_t i = 0; i < (size_t)n * in; i++)
                xd[i] = (double)tmoe_bf16_to_f32(tmoe_f32_to_bf16((float)xd[i]));
        ref_linear(xd, w, n, in, out, ref);
        char what[64];
        for (int impl = 0; impl < TMOE_IMPL_COUNT; impl++) {
            tu_poison(y, sizeof(float) * (size_t)n * out);
            tu_poison(w16, sizeof(tmoe_f16) * (size_t)out * in);
            if (tmoe_etype_is_quant(t) && impl == TMOE_IMPL_UNFUSED) {
                tmoe_cpu_dequant_unpack(&l, w16);
                for (size_t i = 0; i < (size_t)out * in; i++) /* fp16 of q * s, exactly */
                    assert_int_equal(w16[i], tmoe_f32_to_f16((float)w[i]));
            }
            tmoe_cpu_linear(&l, (tmoe_impl)impl, w16, x, n, y);
            snprintf(what, sizeof what, "linear %s %s n=%d", tmoe_etype_name(t),
                     tmoe_impl_name((tmoe_impl)impl), n);
            /* fused and fp16: fp32 accumulation of the exact products; unfused also rounds
             * each weight to fp16 first */
            double tol =
                tmoe_etype_is_quant(t) && impl == TMOE_IMPL_UNFUSED ? TOL_F16_ROUND : TOL_F32;
            check(what, y, ref, (size_t)n * out, tol);
        }
        if (t == TMOE_ET_FP16) {
            tu_poison(y, sizeof(float) * (size_t)n * out);
            tmoe_cpu_linear_f16(x, l.w, n, in, out, y);
            check("linear_f16 direct", y, ref, (size_t)n * out, TOL_F32);
        } else if (t == TMOE_ET_BF16) {
            tu_poison(y, sizeof(float) * (size_t)n * out);
            tmoe_cpu_linear_bf16(x, l.w, n, in, out, y);
            check("linear_bf16 direct", y, ref, (size_t)n * out, TOL_F32);
        } else {
            tu_poison(y, sizeof(float) * (size_t)n * out);
            tmoe_cpu_linear_q(t, x, l.q, l.scales, group, n, in, out, y);
            check("linear_q direct", y, ref, (size_t)n * out, TOL_F32);
        }
        free(x);
        free(w16);
        free(y);
        free(xd);
        free(ref);
    }
    free(w);
    tmoe_linear_free(&l);
}

/* bf16 linear against the fp32 linear it stands for: fp32 weights (the checkpoint before
 * bf16) and the fp16 activations unrounded, in float64; TOL_BF16 covers the two bf16
 * roundings. Values a bf16 holds exactly (set_f32 of a bf16 value) are kept bit for bit. */
static void test_linear_bf16_vs_fp32(void **state) {
    (void)state;
    tmoe_error err = {0};
    const int in = 160, out = 24;
    float *w32 = xmalloc(sizeof(float) * in * out), *back = xmalloc(sizeof(float) * in * out);
    rand_f32(w32, (size_t)in * out, 0.2f);
    tmoe_linear l;
    ASSERT_OK(tmoe_linear_alloc(&l, TMOE_ET_BF16, out, in, 0, &err), &err);
    ASSERT_OK(tmoe_linear_set_f32(&l, w32, &err), &err);
    tmoe_linear_to_f32(&l, back);
    for (int i = 0; i < in * out; i++) {
        /* round to nearest: within half a bf16 ulp (2^-8 relative) */
        assert_true(fabsf(back[i] - w32[i]) <= fabsf(w32[i]) * 0x1p-8f);
        assert_int_equal(tmoe_f32_to_bf16(back[i]), l.w[i]);
    }
    double *wd = xmalloc(sizeof(double) * in * out);
    for (int i = 0; i < in * out; i++) wd[i] = w32[i];
    for (int ti = 0; ti < NT; ti++) {
        int n = TOKENS[ti];
        tmoe_f16 *x = xmalloc(sizeof(tmoe_f16) * (size_t)n * in);
        double *xd = xmalloc(sizeof(double) * (size_t)n * in);
        double *ref = xmalloc(sizeof(double) * (size_t)n * out);
        float *y = xmalloc(sizeof(float) * (size_t)n * out);
        rand_f16(x, (size_t)n * in, 1.0f);
        for (size_t i = 0; i < (size_t)n * in; i++) xd[i] = f16d(x[i]);
        ref_linear(xd, wd, n, in, out, ref);
        tu_poison(y, sizeof(float) * (size_t)n * out);
        tmoe_cpu_linear(&l, TMOE_IMPL_FUSED, NULL, x, n, y);
        char what[64];
        snprintf(what, sizeof what, "linear bf16 vs fp32 n=%d", n);
        check(what, y, ref, (size_t)n * out, TOL_BF16);
        free(x);
        free(xd);
        free(ref);
        free(y);
    }
    free(wd);
    free(w32);
    free(back);
    tmoe_linear_free(&l);
}

/* q4 with int8 activations (the CUDA int8 path's reference): activations the int8 blocks hold
 * exactly (integers with a block maximum of 127: d = 1) give the fused linear's result; random
 * ones stay within 1% rms of it (the int8 rounding, at most half a step a value). */
static void test_linear_q_act8(void **state) {
    (void)state;
    tmoe_error err = {0};
    tmoe_rng r;
    tmoe_rng_seed(&r, 5150);
    const int in = 256, out = 19, n = 3;
    tmoe_linear l;
    ASSERT_OK(tmoe_linear_alloc(&l, TMOE_ET_Q4, out, in, 64, &err), &err);
    ASSERT_OK(tmoe_linear_init_random(&l, &r, &err), &err);
    tmoe_f16 *x = xmalloc(sizeof(tmoe_f16) * n * in);
    float *y = xmalloc(sizeof(float) * n * out), *y8 = xmalloc(sizeof(float) * n * out);
    double *ref = xmalloc(sizeof(double) * n * out);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n * in; i++) {
            float v = tmoe_rng_uniform_sym(&r, 127.0f);
            x[i] = tmoe_f32_to_f16(pass ? v : (i % 32 == 5 ? -127.0f : rintf(v)));
        }
        tu_poison(y8, sizeof(float) * n * out);
        tmoe_cpu_linear_q(TMOE_ET_Q4, x, l.q, l.scales, 64, n, in, out, y);
        tmoe_cpu_linear_q_act8(TMOE_ET_Q4, x, l.q, l.scales, 64, n, in, out, y8);
        for (int i = 0; i < n * out; i++) ref[i] = y[i];
        if (pass == 0)
            check("linear_q_act8, exact int8 activations", y8, ref, (size_t)n * out, TOL_F32);
        else
            assert_true(tu_rel_l2(y8, ref, (size_t)n * out) < 0.01);
    }
    free(x), free(y), free(y8), free(ref);
    tmoe_linear_free(&l);
}

static void test_linear(void **state) {
    (void)state;
    check_linear(TMOE_ET_FP16, 96, 37, 0);
    check_linear(TMOE_ET_FP16, 5, 3, 0);
    check_linear(TMOE_ET_BF16, 96, 37, 0);
    check_linear(TMOE_ET_BF16, 5, 3, 0);
    check_linear(TMOE_ET_Q4, 256, 19, 64);
    check_linear(TMOE_ET_Q4, 96, 5, 32);
    check_linear(TMOE_ET_Q2, 256, 23, 128);
    check_linear(TMOE_ET_Q2, 8, 3, 4);
}

static void test_act(void **state) {
    (void)state;
    int F = 29;
    for (int ti = 0; ti < NT; ti++) {
        int n = TOKENS[ti];
        float *h = xmalloc(sizeof(float) * (size_t)n * 2 * F);
        tmoe_f16 *a = xmalloc(sizeof(tmoe_f16) * (size_t)n * F);
        double *ref = xmalloc(sizeof(double) * (size_t)n * F);
        rand_f32(h, (size_t)n * 2 * F, 4.0f);
        tu_poison(a, sizeof(tmoe_f16) * (size_t)n * F);
        tmoe_cpu_act(TMOE_ACT_RELU, h, n, F, a);
        for (size_t i = 0; i < (size_t)n * F; i++) ref[i] = h[i] > 0 ? h[i] : 0.0;
        check16("relu", a, ref, (size_t)n * F, TOL_F16_ROUND);
        tu_poison(a, sizeof(tmoe_f16) * (size_t)n * F);
        tmoe_cpu_act(TMOE_ACT_SWIGLU, h, n, F, a);
        for (int r = 0; r < n; r++)
            for (int i = 0; i < F; i++) {
                double g = h[(size_t)r * 2 * F + i], u = h[(size_t)r * 2 * F + F + i];
                ref[(size_t)r * F + i] = g / (1.0 + exp(-g)) * u;
            }
        check16("swiglu", a, ref, (size_t)n * F, TOL_F16_ROUND);
        free(h);
        free(a);
        free(ref);
    }
}

/* Reference top-k: sort experts by logit + bias, ties to the lower index. */
static void ref_topk(const float *z, const float *bias, int E, int k, int renorm, int biw,
                     int32_t *idx, double *w) {
    int taken[TMOE_MAX_EXPERTS] = {0};
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            if (taken[e]) continue;
            double s = (double)z[e] + (bias ? bias[e] : 0.0);
            double sb = best < 0 ? 0 : (double)z[best] + (bias ? bias[best] : 0.0);
            if (best < 0 || s > sb) best = e;
        }
        taken[best] = 1;
        idx[j] = best;
    }
    double p[TMOE_MAX_EXPERTS], den = 0.0, mx = -INFINITY;
    for (int e = 0; e < E; e++) mx = fmax(mx, (double)z[e] + (biw && bias ? bias[e] : 0.0));
    for (int e = 0; e < E; e++)
        den += p[e] = exp((double)z[e] + (biw && bias ? bias[e] : 0.0) - mx);
    double chosen = 0.0;
    for (int j = 0; j < k; j++) chosen += p[idx[j]];
    for (int j = 0; j < k; j++) w[j] = p[idx[j]] / (renorm ? chosen : den);
}

static void test_gate_topk(void **state) {
    (void)state;
    int E = 11;
    for (int ti = 0; ti < NT; ti++)
        for (int k = 1; k <= 4; k += 3)
            for (int variant = 0; variant < 6; variant++) {
                int T = TOKENS[ti], renorm = variant & 1, biw = (variant >> 1) & 1,
                    use_bias = variant >= 2;
                float *z = xmalloc(sizeof(float) * (size_t)T * E), bias[11];
                int32_t *idx = xmalloc(sizeof(int32_t) * (size_t)T * k), ri[16];
                float *w = xmalloc(sizeof(float) * (size_t)T * k);
                double rw[16];
                rand_f32(z, (size_t)T * E, 3.0f);
                rand_f32(bias, (size_t)E, 2.0f);
                tu_poison(idx, sizeof(int32_t) * (size_t)T * k);
                tu_poison(w, sizeof(float) * (size_t)T * k);
                tmoe_gate_topk(z, use_bias ? bias : NULL, T, E, k, renorm, biw, idx, w);
                for (int t = 0; t < T; t++) {
                    ref_topk(z + t * E, use_bias ? bias : NULL, E, k, renorm, biw, ri, rw);
                    assert_memory_equal(idx + t * k, ri, sizeof(int32_t) * (size_t)k);
                    check("gate_topk weights", w + t * k, rw, (size_t)k, TOL_F32);
                }
                free(z);
                free(idx);
                free(w);
            }
}

/* NaN logits or biases rank as -inf (chosen only when fewer than k scores are above -inf,
 * then the lowest such indices) and carry probability 0, so weights stay finite. */
static void test_gate_topk_nan(void **state) {
    (void)state;
    const float N = NAN, I = -INFINITY;
    const double e3 = exp(3.0), e2 = exp(2.0), e1 = exp(1.0), eh = exp(0.5), em = exp(-1.0);
    struct {
        const char *what;
        float z[6], bias[6];
        int use_bias, k, renorm, biw;
        int32_t idx[4];
        double w[4];
    } c[] = {
        {"NaN at 0, 2, 5; renorm",
         {N, 1, N, 3, 0.5f, N},
         {0},
         0,
         2,
         1,
         0,
         {3, 1},
         {e3 / (e3 + e1), e1 / (e3 + e1)}},
        {"NaN at 0, 2, 5",
         {N, 1, N, 3, 0.5f, N},
         {0},
         0,
         2,
         0,
         0,
         {3, 1},
         {e3 / (e3 + e1 + eh), e1 / (e3 + e1 + eh)}},
        {"all NaN; renorm", {N, N, N, N, N, N}, {0}, 0, 3, 1, 0, {0, 1, 2}, {0, 0, 0}},
        {"all NaN", {N, N, N, N, N, N}, {0}, 0, 2, 0, 0, {0, 1}, {0, 0}},
        {"one finite, k 3; renorm", {N, N, 2, N, I, N}, {0}, 0, 3, 1, 0, {2, 0, 1}, {1, 0, 0}},
        {"one finite, k 3", {N, N, 2, N, I, N}, {0}, 0, 3, 0, 0, {2, 0, 1}, {1, 0, 0}},
        {"NaN ties -inf, lower index first",
         {I, N, 1, 0, N, I},
         {0},
         0,
         4,
         0,
         0,
         {2, 3, 0, 1},
         {e1 / (e1 + 1.0), 1.0 / (e1 + 1.0), 0, 0}},
        {"NaN bias",
         {1, 2, 0, 0.5f, -1, 3},
         {0, N, 0, 0, 0, N},
         1,
         2,
         0,
         0,
         {0, 3},
         {e1 / (e1 + e2 + 1.0 + eh + em + e3), eh / (e1 + e2 + 1.0 + eh + em + e3)}},
        {"NaN bias in the weights",
         {1, 2, 0, 0.5f, -1, 3},
         {0, N, 0, 0, 0, N},
         1,
         2,
         0,
         1,
         {0, 3},
         {e1 / (e1 + 1.0 + eh + em), eh / (e1 + 1.0 + eh + em)}},
        {"chosen without probability; renorm",
         {N, 1, N, N, N, N},
         {0, N, 0, 0, 0, 0},
         1,
         1,
         1,
         0,
         {0},
         {0}},
        {"chosen without probability",
         {N, 1, N, N, N, N},
         {0, N, 0, 0, 0, 0},
         1,
         1,
         0,
         0,
         {0},
         {0}},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        int32_t idx[4];
        float w[4];
        tu_poison(idx, sizeof idx);
        tu_poison(w, sizeof w);
        tmoe_gate_topk(c[i].z, c[i].use_bias ? c[i].bias : NULL, 1, 6, c[i].k, c[i].renorm,
                       c[i].biw, idx, w);
        for (int j = 0; j < c[i].k; j++) {
            if (idx[j] != c[i].idx[j])
                fail_msg("gate_topk %s: idx[%d] = %d, want %d", c[i].what, j, idx[j], c[i].idx[j]);
            if (!isfinite(w[j])) fail_msg("gate_topk %s: w[%d] = %g", c[i].what, j, (double)w[j]);
        }
        tu_assert_close(c[i].what, w, c[i].w, (size_t)c[i].k, TOL_F32, TOL_F32);
    }
}

static void test_permute_gather_combine(void **state) {
    (void)state;
    int E = 6, k = 2, D = 13;
    for (int ti = 0; ti < NT; ti++) {
        int T = TOKENS[ti], N = T * k;
        float *z = xmalloc(sizeof(float) * (size_t)T * E), *w = xmalloc(sizeof(float) * (size_t)N);
        int32_t *idx = xmalloc(sizeof(int32_t) * (size_t)N), counts[6], offsets[7];
        int32_t *src = xmalloc(sizeof(int32_t) * (size_t)N),
                *dst = xmalloc(sizeof(int32_t) * (size_t)N);
        tmoe_f16 *x = xmalloc(sizeof(tmoe_f16) * (size_t)T * D);
        tmoe_f16 *xg = xmalloc(sizeof(tmoe_f16) * (size_t)N * D);
        float *ye = xmalloc(sizeof(float) * (size_t)N * D),
              *y = xmalloc(sizeof(float) * (size_t)T * D);
        double *ref = xmalloc(sizeof(double) * (size_t)T * D);
        rand_f32(z, (size_t)T * E, 1.0f);
        rand_f16(x, (size_t)T * D, 1.0f);
        rand_f32(ye, (size_t)N * D, 1.0f);
        tmoe_gate_topk(z, NULL, T, E, k, 1, 0, idx, w);
        tu_poison(counts, sizeof counts);
        tu_poison(offsets, sizeof offsets);
        tu_poison(src, sizeof(int32_t) * (size_t)N);
        tu_poison(dst, sizeof(int32_t) * (size_t)N);
        tmoe_cpu_permute(idx, T, k, E, counts, offsets, src, dst);
        /* reference grouping: for each expert, its copies in (token, slot) order */
        int row = 0;
        assert_int_equal(offsets[0], 0);
        for (int e = 0; e < E; e++) {
            int c = 0;
            for (int i = 0; i < N; i++)
                if (idx[i] == e) {
                    assert_int_equal(src[row], i);
                    assert_int_equal(dst[i], row);
                    row++;
                    c++;
                }
            assert_int_equal(counts[e], c);
            assert_int_equal(offsets[e + 1], row);
        }
        assert_int_equal(row, N);
        tu_poison(xg, sizeof(tmoe_f16) * (size_t)N * D);
        tmoe_cpu_gather(x, src, N, k, D, xg);
        for (int r = 0; r < N; r++)
            assert_memory_equal(xg + (size_t)r * D, x + (size_t)(src[r] / k) * D,
                                sizeof(tmoe_f16) * (size_t)D);
        tu_poison(y, sizeof(float) * (size_t)T * D);
        tmoe_cpu_combine(ye, dst, w, T, k, D, y);
        for (int t = 0; t < T; t++)
            for (int i = 0; i < D; i++) {
                double acc = 0.0;
                for (int j = 0; j < k; j++)
                    acc += (double)w[t * k + j] * ye[(size_t)dst[t * k + j] * D + i];
                ref[(size_t)t * D + i] = acc;
            }
        check("combine", y, ref, (size_t)T * D, TOL_F32);
        free(z);
        free(w);
        free(idx);
        free(src);
        free(dst);
        free(x);
        free(xg);
        free(ye);
        free(y);
        free(ref);
    }
}

static void test_attention(void **state) {
    (void)state;
    int D = 24, H = 3, dh = D / H;
    for (int ti = 0; ti < NT; ti++) {
        int T = TOKENS[ti];
        tmoe_f16 *qkv = xmalloc(sizeof(tmoe_f16) * (size_t)T * 3 * D);
        tmoe_f16 *out = xmalloc(sizeof(tmoe_f16) * (size_t)T * D);
        float *scratch = xmalloc(sizeof(float) * (size_t)T);
        double *ref = xmalloc(sizeof(double) * (size_t)T * D), p[17];
        rand_f16(qkv, (size_t)T * 3 * D, 2.0f);
        tu_poison(out, sizeof(tmoe_f16) * (size_t)T * D);
        tmoe_cpu_attention(qkv, T, D, H, out, scratch);
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                double mx = -INFINITY, den = 0.0;
                for (int s = 0; s <= t; s++) {
                    double acc = 0.0;
                    for (int i = 0; i < dh; i++)
                        acc += f16d(qkv[(size_t)t * 3 * D + h * dh + i]) *
                               f16d(qkv[(size_t)s * 3 * D + D + h * dh + i]);
                    p[s] = acc / sqrt((double)dh);
                    mx = fmax(mx, p[s]);
                }
                for (int s = 0; s <= t; s++) den += p[s] = exp(p[s] - mx);
                for (int i = 0; i < dh; i++) {
                    double acc = 0.0;
                    for (int s = 0; s <= t; s++)
                        acc += p[s] / den * f16d(qkv[(size_t)s * 3 * D + 2 * D + h * dh + i]);
                    ref[(size_t)t * D + h * dh + i] = acc;
                }
            }
        check16("attention", out, ref, (size_t)T * D, TOL_F16_STEPS);
        free(qkv);
        free(out);
        free(scratch);
        free(ref);
    }
}

static void check_expert(tmoe_etype t, tmoe_act act) {
    int D = 64, F = 96, G = 32;
    tmoe_error err = {0};
    tmoe_expert e;
    ASSERT_OK(tmoe_expert_alloc(&e, t, act, D, F, G, &err), &err);
    ASSERT_OK(tmoe_linear_init_random(&e.fc1, &rng, &err), &err);
    ASSERT_OK(tmoe_linear_init_random(&e.fc2, &rng, &err), &err);
    double *w1 = ref_weights(&e.fc1), *w2 = ref_weights(&e.fc2);
    for (int ti = 0; ti < NT; ti++) {
        int n = TOKENS[ti];
        tmoe_f16 *x = xmalloc(sizeof(tmoe_f16) * (size_t)n * D);
        float *y = xmalloc(sizeof(float) * (size_t)n * D);
        double *xd = xmalloc(sizeof(double) * (size_t)n * D);
        double *h = xmalloc(sizeof(double) * (size_t)n * e.fc1.out);
        double *a = xmalloc(sizeof(double) * (size_t)n * F),
               *ref = xmalloc(sizeof(double) * (size_t)n * D);
        rand_f16(x, (size_t)n * D, 1.0f);
        for (size_t i = 0; i < (size_t)n * D; i++) xd[i] = f16d(x[i]);
        ref_linear(xd, w1, n, D, e.fc1.out, h);
        for (int r = 0; r < n; r++)
            for (int i = 0; i < F; i++) {
                const double *hr = h + (size_t)r * e.fc1.out;
                a[(size_t)r * F + i] =
                    act == TMOE_ACT_RELU ? fmax(hr[i], 0.0) : hr[i] / (1 + exp(-hr[i])) * hr[F + i];
            }
        ref_linear(a, w2, n, F, D, ref);
        for (int impl = 0; impl < TMOE_IMPL_COUNT; impl++) {
            size_t sb = tmoe_cpu_expert_scratch_bytes(&e, n, (tmoe_impl)impl);
            void *scratch = xmalloc(sb);
            tu_poison(scratch, sb);
            tu_poison(y, sizeof(float) * (size_t)n * D);
            double op_ms[TMOE_OP_COUNT];
            for (int o = 0; o < TMOE_OP_COUNT; o++) op_ms[o] = NAN;
            tmoe_cpu_expert_forward(&e, (tmoe_impl)impl, x, n, y, scratch, op_ms);
            char what[64];
            snprintf(what, sizeof what, "expert %s %s %s n=%d", tmoe_etype_name(t),
                     tmoe_act_name(act), tmoe_impl_name((tmoe_impl)impl), n);
            /* bf16: the reference multiplies the unrounded fp16 activations */
            check(what, y, ref, (size_t)n * D, t == TMOE_ET_BF16 ? TOL_BF16 : TOL_F16_STEPS);
            /* the op sequence of DESIGN.md ran, and nothing else */
            tmoe_op seq[4];
            int ns = tmoe_expert_op_sequence(t, (tmoe_impl)impl, seq);
            int ran = 0;
            for (int o = 0; o < TMOE_OP_COUNT; o++) ran += !isnan(op_ms[o]);
            assert_int_equal(ran, ns);
            for (int j = 0; j < ns; j++) assert_false(isnan(op_ms[seq[j]]));
            /* fc1 / fc2 from cached fp32 rows: the same bits, where the impl has such rows */
            float *w1c = xmalloc(sizeof(float) * (size_t)e.fc1.out * e.fc1.in);
            float *w2c = xmalloc(sizeof(float) * (size_t)e.fc2.out * e.fc2.in);
            int c1 = tmoe_cpu_linear_w32(&e.fc1, (tmoe_impl)impl, w1c);
            int c2 = tmoe_cpu_linear_w32(&e.fc2, (tmoe_impl)impl, w2c);
            assert_int_equal(c1, c2);
            assert_int_equal(c1, !tmoe_etype_is_quant(t) || impl == TMOE_IMPL_FUSED);
            if (c1) {
                float *yc = xmalloc(sizeof(float) * (size_t)n * D);
                tu_poison(scratch, sb);
                tu_poison(yc, sizeof(float) * (size_t)n * D);
                tmoe_cpu_expert_forward_w32(&e, (tmoe_impl)impl, w1c, w2c, x, n, yc, scratch, NULL);
                for (size_t i = 0; i < (size_t)n * D; i++)
                    if (memcmp(&yc[i], &y[i], sizeof(float))) {
                        fprintf(stderr, "%s cached: element %zu %.9g, per call %.9g\n", what, i,
                                yc[i], y[i]);
                        fail();
                    }
                free(yc);
            }
            free(w1c);
            free(w2c);
            free(scratch);
        }
        free(x);
        free(y);
        free(xd);
        free(h);
        free(a);
        free(ref);
    }
    free(w1);
    free(w2);
    tmoe_expert_free(&e);
}

static void test_expert(void **state) {
    (void)state;
    for (int t = 0; t < TMOE_ET_COUNT; t++)
        for (int a = 0; a < TMOE_ACT_COUNT; a++) check_expert((tmoe_etype)t, (tmoe_act)a);
}

int main(void) {
    tmoe_rng_seed(&rng, tu_seed()); /* fresh inputs every run */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_linear_bf16_vs_fp32),
        cmocka_unit_test(test_linear_q_act8),
        cmocka_unit_test(test_act),
        cmocka_unit_test(test_gate_topk),
        cmocka_unit_test(test_gate_topk_nan),
        cmocka_unit_test(test_permute_gather_combine),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_expert),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
