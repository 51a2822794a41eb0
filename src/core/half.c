/* IEEE binary16 and bfloat16 conversion in portable C (round to nearest even). */
#include "thermoe/core.h"

#include <pthread.h>
#include <string.h>

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

tmoe_f16 tmoe_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xffu;
    uint32_t man = x & 0x7fffffu;
    if (exp == 0xff) /* inf or NaN (keep NaN quiet and non-zero) */
        return (tmoe_f16)(sign | 0x7c00u | (man ? 0x200u | (man >> 13) : 0));
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 0x1f) return (tmoe_f16)(sign | 0x7c00u); /* overflow -> inf */
    if (e <= 0) {                                     /* subnormal or zero in fp16 */
        if (e < -10) return (tmoe_f16)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (tmoe_f16)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; /* may carry into exponent: ok */
    return (tmoe_f16)h;
}

float tmoe_f16_to_f32(tmoe_f16 h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0) {
        if (man == 0) return bits_f32(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13));
    return bits_f32(sign | ((exp - 15 + 127) << 23) | (man << 13));
}

tmoe_bf16 tmoe_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (tmoe_bf16)((x >> 16) | 0x40u); /* NaN */
    uint32_t lsb = (x >> 16) & 1u;
    x += 0x7fffu + lsb;
    return (tmoe_bf16)(x >> 16);
}

float tmoe_bf16_to_f32(tmoe_bf16 h) {
    return bits_f32((uint32_t)h << 16);
}

static float f16_tab[65536];
static pthread_once_t f16_once = PTHREAD_ONCE_INIT;

static void f16_tab_build(void) {
    for (uint32_t i = 0; i < 65536; i++) f16_tab[i] = tmoe_f16_to_f32((tmoe_f16)i);
}

const float *tmoe_f16_table(void) {
    pthread_once(&f16_once, f16_tab_build);
    return f16_tab;
}
