/* Quantized expert weights: symmetric signed two's-complement integers packed little-end
 * first (q4: element 2i in the low nibble; q2: element 4i in bits 0-1), one fp16 scale per
 * group of G consecutive weights along the input dimension. Value = q * scale. */
#ifndef THERMOE_QUANT_H
#define THERMOE_QUANT_H

#include "thermoe/core.h"
#include "thermoe/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TMOE_DEFAULT_GROUP 128

/* Integer range of a quantized type: q4 [-8, 7], q2 [-2, 1]. */
int tmoe_quant_qmin(tmoe_etype t);
int tmoe_quant_qmax(tmoe_etype t);

/* Check that an (out, in) matrix can be stored as type t with group size g: sizes positive,
 * g positive and a multiple of the elements per byte, in a multiple of g. Message names the
 * problem and the numbers. */
int tmoe_quant_check_shape(tmoe_etype t, int out, int in, int group, tmoe_error *err);

/* Packed bytes of an (out, in) matrix of type t (fp16: 2 bytes a weight). */
size_t tmoe_quant_weight_bytes(tmoe_etype t, int64_t out, int64_t in);
size_t tmoe_quant_scale_count(int64_t out, int64_t in, int group);

/* Pack n integers (each within the type's range; asserted) into n*bits/8 bytes.
 * n must be a multiple of the elements per byte. */
void tmoe_pack_ints(tmoe_etype t, const int8_t *q, int64_t n, uint8_t *packed);
/* Unpack n integers with sign extension (a nibble above 7 means q - 16). */
void tmoe_unpack_ints(tmoe_etype t, const uint8_t *packed, int64_t n, int8_t *q);

/* Quantize w (out, in) row-major: per group, the element of largest magnitude m sets
 * scale = fp16(m / qmin), so it maps to qmin exactly (the scale is negative when m > 0);
 * others round to nearest (ties to even) and clamp. A scale beyond fp16 is held at the
 * largest finite fp16 (the integers saturate); an all-zero group has scale 0.
 * packed: tmoe_quant_weight_bytes bytes; scales: out * in/group. */
int tmoe_quantize(tmoe_etype t, const float *w, int out, int in, int group, uint8_t *packed,
                  tmoe_f16 *scales, tmoe_error *err);

/* Dequantize to fp32 (exact q * scale) or to fp16 (rounded), (out, in) row-major. */
void tmoe_dequantize_f32(tmoe_etype t, const uint8_t *packed, const tmoe_f16 *scales, int out,
                         int in, int group, float *w);
void tmoe_dequantize_f16(tmoe_etype t, const uint8_t *packed, const tmoe_f16 *scales, int out,
                         int in, int group, tmoe_f16 *w);

#ifdef __cplusplus
}
#endif
#endif
