/* Quantization: pack / unpack (exhaustive), quantize error bound, dequantize vs a float64
 * reference, and shapes that cannot be quantized. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/model.h"

static double f16d(tmoe_f16 h) {
    return (double)tmoe_f16_to_f32(h);
}

/* Our own reading of the packed format, written from DESIGN.md: element i of a row sits in
 * byte i / per_byte at bit (i % per_byte) * bits; two's complement. */
static int ref_unpack(const uint8_t *p, int bits, long i) {
    int per = 8 / bits;
    int u = (p[i / per] >> ((i % per) * bits)) & ((1 << bits) - 1);
    return u >= (1 << (bits - 1)) ? u - (1 << bits) : u;
}

static void check_pack_type(tmoe_etype t) {
    int bits = tmoe_etype_bits(t), per = 8 / bits;
    int qmin = tmoe_quant_qmin(t), qmax = tmoe_quant_qmax(t);
    assert_int_equal(qmin, -(1 << (bits - 1)));
    assert_int_equal(qmax, (1 << (bits - 1)) - 1);
    /* every byte is a distinct tuple of in-range values: unpack -> pack is the identity on
     * all 256 bytes, so pack -> unpack is too on every tuple, edges and positions included */
    uint8_t all[256], back[256];
    int8_t q[256 * 4];
    for (int b = 0; b < 256; b++) all[b] = (uint8_t)b;
    tmoe_unpack_ints(t, all, 256 * per, q);
    int seen_min[4] = {0}, seen_max[4] = {0};
    for (int i = 0; i < 256 * per; i++) {
        assert_true(q[i] >= qmin && q[i] <= qmax);
        assert_int_equal(q[i], ref_unpack(all, bits, i));
        seen_min[i % per] |= q[i] == qmin;
        seen_max[i % per] |= q[i] == qmax;
    }
    for (int j = 0; j < per; j++) assert_true(seen_min[j] && seen_max[j]);
    tmoe_pack_ints(t, q, 256 * per, back);
    assert_memory_equal(all, back, 256);
    /* and from the value side: every value at every position of a byte */
    for (int pos = 0; pos < per; pos++)
        for (int v = qmin; v <= qmax; v++) {
            int8_t in[4] = {0, 0, 0, 0}, out[4];
            in[pos] = (int8_t)v;
            uint8_t byte;
            tmoe_pack_ints(t, in, per, &byte);
            assert_int_equal(byte, ((unsigned)v & ((1u << bits) - 1)) << (pos * bits));
            tmoe_unpack_ints(t, &byte, per, out);
            assert_memory_equal(in, out, (size_t)per);
        }
}

static void test_pack_unpack(void **state) {
    (void)state;
    check_pack_type(TMOE_ET_Q4);
    check_pack_type(TMOE_ET_Q2);
    /* element 2i in the low nibble; q2 element 4i in bits 0-1 */
    int8_t a[2] = {-8, 7}, b[4] = {-2, 1, 0, -1};
    uint8_t pa, pb;
    tmoe_pack_ints(TMOE_ET_Q4, a, 2, &pa);
    tmoe_pack_ints(TMOE_ET_Q2, b, 4, &pb);
    assert_int_equal(pa, 0x78);
    assert_int_equal(pb, 0xc6);
}

static void fill(tmoe_rng *r, float *w, size_t n) {
    for (size_t i = 0; i < n; i++) w[i] = tmoe_rng_uniform_sym(r, 1.0f) * 0.3f;
}

static void check_quantize(tmoe_etype t, int out, int in, int group, uint64_t seed) {
    tmoe_rng r;
    tmoe_rng_seed(&r, seed);
    size_t n = (size_t)out * in, ns = tmoe_quant_scale_count(out, in, group);
    float *w = malloc(n * sizeof *w), *dq = malloc(n * sizeof *dq);
    tmoe_f16 *dq16 = malloc(n * sizeof *dq16), *s = malloc(ns * sizeof *s);
    uint8_t *p = malloc(tmoe_quant_weight_bytes(t, out, in));
    fill(&r, w, n);
    w[n - 1] = 0.0f; /* a zero, and a group that is all zero */
    if (out > 1) memset(w + (size_t)in, 0, sizeof(float) * (size_t)group);
    tmoe_error err = {0};
    ASSERT_OK(tmoe_quantize(t, w, out, in, group, p, s, &err), &err);
    tmoe_dequantize_f32(t, p, s, out, in, group, dq);
    tmoe_dequantize_f16(t, p, s, out, in, group, dq16);
    int bits = tmoe_etype_bits(t), qmin = tmoe_quant_qmin(t), qmax = tmoe_quant_qmax(t);
    int ng = in / group;
    for (int o = 0; o < out; o++)
        for (int g = 0; g < ng; g++) {
            double sc = f16d(s[(size_t)o * ng + g]);
            double m = 0.0;
            long arg = -1;
            for (int i = 0; i < group; i++) {
                double v = w[(size_t)o * in + (size_t)g * group + i];
                if (fabs(v) > fabs(m)) {
                    m = v;
                    arg = i;
                }
            }
            for (int i = 0; i < group; i++) {
                size_t k = (size_t)o * in + (size_t)g * group + (size_t)i;
                int q = ref_unpack(p + (size_t)o * in * bits / 8, bits, (long)g * group + i);
                double ref = q * sc; /* float64 reference */
                if ((double)dq[k] != ref)
                    fail_msg("%s dequant [%d,%d] = %.9g, want %.9g", tmoe_etype_name(t), o,
                             g * group + i, (double)dq[k], ref);
                assert_int_equal(dq16[k], tmoe_f32_to_f16((float)ref));
                if (sc == 0.0) {
                    assert_true(w[k] == 0.0f);
                    continue;
                }
                double x = w[k] / sc;
                if (x >= qmin - 0.5 && x <= qmax + 0.5) {
                    double bound = fabs(sc) / 2 * (1 + 1e-6);
                    if (fabs(w[k] - ref) > bound)
                        fail_msg("%s [%d,%d]: |w - q s| = %.3g > s/2 = %.3g", tmoe_etype_name(t), o,
                                 g * group + i, fabs(w[k] - ref), fabs(sc) / 2);
                } else {
                    assert_int_equal(q, x < qmin ? qmin : qmax); /* clamped to the edge */
                }
                if (i == arg) assert_int_equal(q, qmin); /* largest magnitude -> qmin */
            }
        }
    free(w);
    free(dq);
    free(dq16);
    free(s);
    free(p);
}

static void test_quantize(void **state) {
    (void)state;
    check_quantize(TMOE_ET_Q4, 7, 256, 128, 1);
    check_quantize(TMOE_ET_Q4, 3, 96, 32, 2);
    check_quantize(TMOE_ET_Q4, 1, 2, 2, 3);
    check_quantize(TMOE_ET_Q2, 5, 256, 128, 4);
    check_quantize(TMOE_ET_Q2, 2, 64, 4, 5);
}

static void test_bad_shapes(void **state) {
    (void)state;
    tmoe_error err = {0};
    float w[300] = {0};
    uint8_t p[300];
    tmoe_f16 s[8];
    assert_int_equal(tmoe_quantize(TMOE_ET_Q4, w, 1, 100, 128, p, s, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "input dimension 100 is not a multiple of the group size 128"));
    assert_int_equal(tmoe_quant_check_shape(TMOE_ET_Q2, 4, 96, 6, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "group size 6: must be a positive multiple of 4 for q2"));
    assert_int_equal(tmoe_quant_check_shape(TMOE_ET_Q4, 0, 128, 128, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "sizes must be positive"));
    tmoe_linear l;
    assert_int_equal(tmoe_linear_alloc(&l, TMOE_ET_Q4, 8, 200, 128, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "input dimension 200 is not a multiple of the group size 128"));
    /* through a block config: the expert and the matrix are named */
    tmoe_block_config c = tmoe_block_config_default();
    c.expert_type = TMOE_ET_Q4;
    c.d_ff = 200;
    assert_int_equal(tmoe_block_config_validate(&c, &err), TMOE_EINVAL);
    assert_non_null(strstr(err.msg, "expert 0 (q4)"));
    assert_non_null(strstr(err.msg, "input dimension 200 is not a multiple of the group size 128"));
}

/* Weights beyond what an fp16 scale can hold stay finite (saturated), zeros stay zero. */
static void test_extreme_values(void **state) {
    (void)state;
    float w[8] = {1e7f, -3e6f, 1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    uint8_t p[4];
    tmoe_f16 s[2];
    float dq[8];
    tmoe_error err = {0};
    ASSERT_OK(tmoe_quantize(TMOE_ET_Q4, w, 1, 8, 4, p, s, &err), &err);
    tmoe_dequantize_f32(TMOE_ET_Q4, p, s, 1, 8, 4, dq);
    assert_int_equal(s[0], 0xfbff);     /* -65504: largest finite, negative since m > 0 */
    assert_int_equal(s[1] & 0x7fff, 0); /* zero (0 / qmin is -0) */
    assert_true(dq[0] == 65504.0f * 8);
    for (int i = 0; i < 8; i++) assert_true(isfinite(dq[i]));
    for (int i = 4; i < 8; i++) assert_true(dq[i] == 0.0f);
}

/* int8 activations: each value within half a step of its block's scale, the largest at
 * +-127, a zero block all zero, ties to even. */
static void test_act8(void **state) {
    (void)state;
    enum { N = 4 * TMOE_ACT8_BLOCK };
    tmoe_f16 x[N];
    int8_t q[N];
    float d[N / TMOE_ACT8_BLOCK];
    tmoe_rng r;
    tmoe_rng_seed(&r, 77);
    for (int i = 0; i < N; i++)
        x[i] = tmoe_f32_to_f16(tmoe_rng_uniform_sym(&r, (float)(1 + i / 32 * 10)));
    for (int i = 64; i < 96; i++) x[i] = 0; /* block 2: zeros */
    x[96] = tmoe_f32_to_f16(-127.0f);       /* block 3: steps of 1, and a tie at 2.5 */
    x[97] = tmoe_f32_to_f16(2.5f);
    for (int i = 98; i < N; i++) x[i] = tmoe_f32_to_f16(1.0f);
    tmoe_act8_quantize(x, N, q, d);
    for (int b = 0; b < N / TMOE_ACT8_BLOCK; b++) {
        int big = 0;
        for (int i = b * 32; i < b * 32 + 32; i++) {
            float v = tmoe_f16_to_f32(x[i]);
            assert_true(fabsf(v - (float)q[i] * d[b]) <= 0.5f * d[b] * (1.0f + 1e-5f));
            if (abs(q[i]) == 127) big = 1;
        }
        if (b != 2) assert_true(big);
    }
    assert_true(d[2] == 0.0f);
    for (int i = 64; i < 96; i++) assert_int_equal(q[i], 0);
    assert_true(d[3] == 1.0f);
    assert_int_equal(q[96], -127);
    assert_int_equal(q[97], 2);
    assert_int_equal(q[98], 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_unpack), cmocka_unit_test(test_quantize),
        cmocka_unit_test(test_bad_shapes),  cmocka_unit_test(test_extreme_values),
        cmocka_unit_test(test_act8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
