/* xoshiro256** with splitmix64 seeding: integer-only, identical on every machine. */
#include "thermoe/core.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void tmoe_rng_seed(tmoe_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

void tmoe_rng_seed_stream(tmoe_rng *r, uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ (stream * 0xd1342543de82ef95ull + 0x2545f4914f6cdd1dull);
    uint64_t mixed = splitmix64(&x);
    tmoe_rng_seed(r, mixed);
}

static inline uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t tmoe_rng_u64(tmoe_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double tmoe_rng_uniform(tmoe_rng *r) {
    return (double)(tmoe_rng_u64(r) >> 11) * 0x1.0p-53;
}

float tmoe_rng_uniform_sym(tmoe_rng *r, float a) {
    /* 24 random bits -> exactly representable float in [-1, 1), times a */
    int32_t k = (int32_t)(tmoe_rng_u64(r) >> 40) - (1 << 23);
    return (float)k * (1.0f / 8388608.0f) * a;
}

uint32_t tmoe_rng_below(tmoe_rng *r, uint32_t n) {
    TMOE_ASSERT(n > 0);
    uint64_t lim = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = tmoe_rng_u64(r);
    while (x >= lim);
    return (uint32_t)(x % n);
}

double tmoe_rng_normal(tmoe_rng *r) {
    double u1 = tmoe_rng_uniform(r), u2 = tmoe_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
