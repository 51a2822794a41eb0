/* Packing, unpacking, quantization and dequantization of q4 / q2 weights (DESIGN.md). */
#include "thermoe/model.h"

#include <math.h>

int tmoe_quant_qmin(tmoe_etype t) {
    return t == TMOE_ET_Q4 ? -8 : t == TMOE_ET_Q2 ? -2 : 0;
}
int tmoe_quant_qmax(tmoe_etype t) {
    return t == TMOE_ET_Q4 ? 7 : t == TMOE_ET_Q2 ? 1 : 0;
}

static int per_byte(tmoe_etype t) {
    return t == TMOE_ET_Q4 ? 2 : 4;
}

int tmoe_quant_check_shape(tmoe_etype t, int out, int in, int group, tmoe_error *err) {
    if (out <= 0 || in <= 0)
        return tmoe_errorf(err, TMOE_EINVAL, "matrix shape %d x %d: sizes must be positive", out,
                           in);
    if (t == TMOE_ET_FP16 || t == TMOE_ET_BF16) return TMOE_OK;
    if (t != TMOE_ET_Q4 && t != TMOE_ET_Q2)
        return tmoe_errorf(err, TMOE_EINVAL, "unknown expert type %d", (int)t);
    if (group <= 0 || group % per_byte(t) != 0)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "group size %d: must be a positive multiple of %d for %s", group,
                           per_byte(t), tmoe_etype_name(t));
    if (in % group != 0)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "%s matrix %d x %d: input dimension %d is not a multiple of the group "
                           "size %d (choose a group size that divides it)",
                           tmoe_etype_name(t), out, in, in, group);
    return TMOE_OK;
}

size_t tmoe_quant_weight_bytes(tmoe_etype t, int64_t out, int64_t in) {
    return (size_t)out * (size_t)in * (size_t)tmoe_etype_bits(t) / 8;
}

size_t tmoe_quant_scale_count(int64_t out, int64_t in, int group) {
    return (size_t)out * (size_t)(in / group);
}

void tmoe_pack_ints(tmoe_etype t, const int8_t *q, int64_t n, uint8_t *packed) {
    int pb = per_byte(t), bits = 8 / pb;
    unsigned mask = (1u << bits) - 1;
    TMOE_ASSERT(n % pb == 0);
    for (int64_t i = 0; i < n / pb; i++) {
        unsigned byte = 0;
        for (int j = 0; j < pb; j++) {
            int v = q[i * pb + j];
            TMOE_ASSERT(v >= tmoe_quant_qmin(t) && v <= tmoe_quant_qmax(t));
            byte |= ((unsigned)v & mask) << (j * bits);
        }
        packed[i] = (uint8_t)byte;
    }
}

void tmoe_unpack_ints(tmoe_etype t, const uint8_t *packed, int64_t n, int8_t *q) {
    int pb = per_byte(t), bits = 8 / pb;
    unsigned mask = (1u << bits) - 1, sign = 1u << (bits - 1);
    TMOE_ASSERT(n % pb == 0);
    for (int64_t i = 0; i < n / pb; i++)
        for (int j = 0; j < pb; j++) {
            unsigned u = (packed[i] >> (j * bits)) & mask;
            q[i * pb + j] = (int8_t)((int)(u ^ sign) - (int)sign); /* sign-extend */
        }
}

int tmoe_quantize(tmoe_etype t, const float *w, int out, int in, int group, uint8_t *packed,
                  tmoe_f16 *scales, tmoe_error *err) {
    int rc = tmoe_quant_check_shape(t, out, in, group, err);
    if (rc) return rc;
    if (!tmoe_etype_is_quant(t))
        return tmoe_errorf(err, TMOE_EINVAL, "%s weights are not quantized", tmoe_etype_name(t));
    int qmin = tmoe_quant_qmin(t), qmax = tmoe_quant_qmax(t);
    int pb = per_byte(t), bits = 8 / pb;
    unsigned mask = (1u << bits) - 1;
    int ng = in / group;
    for (int r = 0; r < out; r++) {
        const float *row = w + (size_t)r * in;
        uint8_t *prow = packed + (size_t)r * in / pb;
        for (int g = 0; g < ng; g++) {
            const float *x = row + (size_t)g * group;
            float m = 0.0f;
            for (int i = 0; i < group; i++)
                if (fabsf(x[i]) > fabsf(m)) m = x[i];
            tmoe_f16 s16 = tmoe_f32_to_f16(m / (float)qmin);
            if ((s16 & 0x7fffu) == 0x7c00u) /* beyond fp16: largest finite scale, q saturates */
                s16 = (tmoe_f16)((s16 & 0x8000u) | 0x7bffu);
            float s = tmoe_f16_to_f32(s16);
            scales[(size_t)r * ng + g] = s16;
            float inv = s != 0.0f ? 1.0f / s : 0.0f;
            for (int i = 0; i < group; i++) {
                int q = (int)lrintf(x[i] * inv);
                q = q < qmin ? qmin : q > qmax ? qmax : q;
                int64_t idx = (int64_t)g * group + i;
                uint8_t *b = &prow[idx / pb];
                int sh = (int)(idx % pb) * bits;
                *b = (uint8_t)((*b & ~(mask << sh)) | (((unsigned)q & mask) << sh));
            }
        }
    }
    return TMOE_OK;
}

static inline int unpack_one(tmoe_etype t, const uint8_t *row, int64_t i) {
    int pb = per_byte(t), bits = 8 / pb;
    unsigned mask = (1u << bits) - 1, sign = 1u << (bits - 1);
    unsigned u = (row[i / pb] >> ((i % pb) * bits)) & mask;
    return (int)(u ^ sign) - (int)sign;
}

void tmoe_dequantize_f32(tmoe_etype t, const uint8_t *packed, const tmoe_f16 *scales, int out,
                         int in, int group, float *w) {
    int pb = per_byte(t), ng = in / group;
    for (int r = 0; r < out; r++) {
        const uint8_t *prow = packed + (size_t)r * in / pb;
        for (int i = 0; i < in; i++)
            w[(size_t)r * in + i] =
                (float)unpack_one(t, prow, i) * tmoe_f16_to_f32(scales[(size_t)r * ng + i / group]);
    }
}

void tmoe_dequantize_f16(tmoe_etype t, const uint8_t *packed, const tmoe_f16 *scales, int out,
                         int in, int group, tmoe_f16 *w) {
    int pb = per_byte(t), ng = in / group;
    for (int r = 0; r < out; r++) {
        const uint8_t *prow = packed + (size_t)r * in / pb;
        for (int i = 0; i < in; i++)
            w[(size_t)r * in + i] =
                tmoe_f32_to_f16((float)unpack_one(t, prow, i) *
                                tmoe_f16_to_f32(scales[(size_t)r * ng + i / group]));
    }
}

void tmoe_act8_quantize(const tmoe_f16 *x, int64_t n, int8_t *q, float *d) {
    TMOE_ASSERT(n % TMOE_ACT8_BLOCK == 0);
    for (int64_t b = 0; b < n / TMOE_ACT8_BLOCK; b++) {
        const tmoe_f16 *xb = x + b * TMOE_ACT8_BLOCK;
        float m = 0.0f;
        for (int i = 0; i < TMOE_ACT8_BLOCK; i++) {
            float a = fabsf(tmoe_f16_to_f32(xb[i]));
            if (a > m) m = a;
        }
        float db = m / 127.0f, id = db > 0.0f ? 1.0f / db : 0.0f;
        d[b] = db;
        for (int i = 0; i < TMOE_ACT8_BLOCK; i++) {
            float v = rintf(tmoe_f16_to_f32(xb[i]) * id);
            q[b * TMOE_ACT8_BLOCK + i] = (int8_t)(v > 127.0f ? 127 : v < -127.0f ? -127 : v);
        }
    }
}
