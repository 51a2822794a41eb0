/* The CPU reference's fp32 dot product, shared by the block's kernels and the decoder LM. */
#ifndef THERMOE_CPU_DOT_H
#define THERMOE_CPU_DOT_H

/* fp32 dot product with 8 independent partial sums (no serial dependency chain, so the
 * compiler can keep 8 FMAs in flight); summed pairwise at the end. */
static inline float tmoe_cpu_dot(const float *a, const float *b, int n) {
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    for (; i < n; i++) s[0] += a[i] * b[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

#endif
