/* CPU reference kernels (see include/thermoe/backend.h for each contract). */
#include "thermoe/backend.h"

#include "dot.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Work (multiply-adds) below which a kernel runs on one thread: a parallel region costs a
 * barrier, and on a loaded machine a descheduled thread stalls it for a whole time slice,
 * which made the default forward several times slower with OpenMP than without. */
#define PAR_MIN_WORK (1L << 22)

void tmoe_cpu_rmsnorm(const float *x, const float *w, int T, int D, float eps, tmoe_f16 *y) {
#pragma omp parallel for if ((long)T * D >= PAR_MIN_WORK)
    for (int t = 0; t < T; t++) {
        const float *r = x + (size_t)t * D;
        double ss = 0.0;
        for (int i = 0; i < D; i++) ss += (double)r[i] * r[i];
        float inv = 1.0f / sqrtf((float)(ss / D) + eps);
        for (int i = 0; i < D; i++) y[(size_t)t * D + i] = tmoe_f32_to_f16(r[i] * inv * w[i]);
    }
}

/* The reference kernels allocate their own row buffers: they are the correctness
 * reference, not the hot path. Failure to get a few KB is treated as fatal. */
static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) tmoe_assert_fail("malloc in a CPU reference kernel", __FILE__, __LINE__);
    return p;
}

static void rows_to_f32(const tmoe_f16 *h, size_t n, float *f) {
    const float *tab = tmoe_f16_table();
    for (size_t i = 0; i < n; i++) f[i] = tab[h[i]];
}

/* y (n, out) = x32 (n, in) . wrow for each output row; wfill(o, wrow) fills row o in fp32,
 * or w32 (out, in) holds every row filled already (the same values, so the same bits).
 * x_bf16: the fp16 activations are rounded to bf16 first (the operands of a bf16 linear). */
typedef void (*wfill_fn)(const void *ctx, int o, float *wrow);

static void linear_rows(const tmoe_f16 *x, int n, int in, int out, float *y, wfill_fn fill,
                        const void *ctx, const float *w32, int x_bf16) {
    float *x32 = xmalloc(sizeof(float) * (size_t)n * in);
    rows_to_f32(x, (size_t)n * in, x32);
    if (x_bf16)
        for (size_t i = 0; i < (size_t)n * in; i++)
            x32[i] = tmoe_bf16_to_f32(tmoe_f32_to_bf16(x32[i]));
#pragma omp parallel if ((long)n * out * in >= PAR_MIN_WORK)
    {
        float *buf = w32 ? NULL : xmalloc(sizeof(float) * (size_t)in);
#pragma omp for
        for (int o = 0; o < out; o++) {
            const float *wrow = w32 ? w32 + (size_t)o * in : buf;
            if (!w32) fill(ctx, o, buf);
            for (int r = 0; r < n; r++)
                y[(size_t)r * out + o] = tmoe_cpu_dot(x32 + (size_t)r * in, wrow, in);
        }
        free(buf);
    }
    free(x32);
}

typedef struct {
    const tmoe_f16 *W;
    int in;
} f16_ctx;

static void fill_f16(const void *c, int o, float *wrow) {
    const f16_ctx *f = c;
    rows_to_f32(f->W + (size_t)o * f->in, (size_t)f->in, wrow);
}

void tmoe_cpu_linear_f16(const tmoe_f16 *x, const tmoe_f16 *W, int n, int in, int out, float *y) {
    f16_ctx c = {W, in};
    linear_rows(x, n, in, out, y, fill_f16, &c, NULL, 0);
}

static void fill_bf16(const void *c, int o, float *wrow) {
    const f16_ctx *f = c;
    const tmoe_bf16 *r = f->W + (size_t)o * f->in;
    for (int i = 0; i < f->in; i++) wrow[i] = tmoe_bf16_to_f32(r[i]);
}

void tmoe_cpu_linear_bf16(const tmoe_f16 *x, const tmoe_bf16 *W, int n, int in, int out, float *y) {
    f16_ctx c = {W, in};
    linear_rows(x, n, in, out, y, fill_bf16, &c, NULL, 1);
}

typedef struct {
    tmoe_etype t;
    const uint8_t *q;
    const tmoe_f16 *scales;
    int group, in;
} q_ctx;

static void fill_q(const void *c, int o, float *wrow) {
    const q_ctx *f = c;
    const float *tab = tmoe_f16_table();
    int bits = tmoe_etype_bits(f->t), ng = f->in / f->group;
    unsigned mask = (1u << bits) - 1, sign = 1u << (bits - 1);
    const uint8_t *p = f->q + (size_t)o * f->in * bits / 8;
    for (int i = 0; i < f->in; i++) {
        unsigned u = (p[(size_t)i * bits / 8] >> ((i * bits) % 8)) & mask;
        int v = (int)(u ^ sign) - (int)sign; /* sign extension */
        wrow[i] = (float)v * tab[f->scales[(size_t)o * ng + i / f->group]];
    }
}

void tmoe_cpu_linear_q(tmoe_etype t, const tmoe_f16 *x, const uint8_t *q, const tmoe_f16 *scales,
                       int group, int n, int in, int out, float *y) {
    q_ctx c = {t, q, scales, group, in};
    linear_rows(x, n, in, out, y, fill_q, &c, NULL, 0);
}

void tmoe_cpu_linear_q_act8(tmoe_etype t, const tmoe_f16 *x, const uint8_t *q,
                            const tmoe_f16 *scales, int group, int n, int in, int out, float *y) {
    enum { B = TMOE_ACT8_BLOCK };
    TMOE_ASSERT(group % B == 0 && in % group == 0);
    const float *tab = tmoe_f16_table();
    int bits = tmoe_etype_bits(t), ng = in / group, nb = in / B;
    int8_t *xq = malloc((size_t)n * in), *wq = malloc((size_t)in);
    float *d = malloc(sizeof(float) * (size_t)n * nb);
    TMOE_ASSERT(xq && wq && d);
    for (int r = 0; r < n; r++)
        tmoe_act8_quantize(x + (size_t)r * in, in, xq + (size_t)r * in, d + (size_t)r * nb);
    for (int o = 0; o < out; o++) {
        tmoe_unpack_ints(t, q + (size_t)o * in * bits / 8, in, wq);
        for (int r = 0; r < n; r++) {
            const int8_t *xr = xq + (size_t)r * in;
            double s = 0.0;
            for (int b = 0; b < nb; b++) {
                int dot = 0;
                for (int i = b * B; i < (b + 1) * B; i++) dot += wq[i] * xr[i];
                s += (double)tab[scales[(size_t)o * ng + b * B / group]] *
                     (double)d[(size_t)r * nb + b] * dot;
            }
            y[(size_t)r * out + o] = (float)s;
        }
    }
    free(xq), free(wq), free(d);
}

void tmoe_cpu_dequant_unpack(const tmoe_linear *l, tmoe_f16 *w16) {
    TMOE_ASSERT(tmoe_etype_is_quant(l->type));
    tmoe_dequantize_f16(l->type, l->q, l->scales, l->out, l->in, l->group, w16);
}

void tmoe_cpu_linear(const tmoe_linear *l, tmoe_impl impl, const tmoe_f16 *w16, const tmoe_f16 *x,
                     int n, float *y) {
    if (l->type == TMOE_ET_FP16) {
        tmoe_cpu_linear_f16(x, l->w, n, l->in, l->out, y);
    } else if (l->type == TMOE_ET_BF16) {
        tmoe_cpu_linear_bf16(x, l->w, n, l->in, l->out, y);
    } else if (impl == TMOE_IMPL_FUSED && l->act8) {
        tmoe_cpu_linear_q_act8(l->type, x, l->q, l->scales, l->group, n, l->in, l->out, y);
    } else if (impl == TMOE_IMPL_FUSED) {
        tmoe_cpu_linear_q(l->type, x, l->q, l->scales, l->group, n, l->in, l->out, y);
    } else {
        TMOE_ASSERT(w16 != NULL);
        tmoe_cpu_linear_f16(x, w16, n, l->in, l->out, y);
    }
}

int tmoe_cpu_linear_w32(const tmoe_linear *l, tmoe_impl impl, float *w32) {
    if (tmoe_etype_is_quant(l->type) && (impl != TMOE_IMPL_FUSED || l->act8)) return 0;
    f16_ctx f = {l->w, l->in};
    q_ctx q = {l->type, l->q, l->scales, l->group, l->in};
    for (int o = 0; o < l->out; o++) {
        float *row = w32 + (size_t)o * l->in;
        if (l->type == TMOE_ET_FP16)
            fill_f16(&f, o, row);
        else if (l->type == TMOE_ET_BF16)
            fill_bf16(&f, o, row);
        else
            fill_q(&q, o, row);
    }
    return 1;
}

void tmoe_cpu_act(tmoe_act act, const float *h, int n, int d_ff, tmoe_f16 *a) {
    for (int r = 0; r < n; r++) {
        if (act == TMOE_ACT_RELU) {
            for (int i = 0; i < d_ff; i++) {
                float v = h[(size_t)r * d_ff + i];
                a[(size_t)r * d_ff + i] = tmoe_f32_to_f16(v > 0.0f ? v : 0.0f);
            }
        } else {
            const float *g = h + (size_t)r * 2 * d_ff, *u = g + d_ff;
            for (int i = 0; i < d_ff; i++) {
                float s = g[i] / (1.0f + expf(-g[i]));
                a[(size_t)r * d_ff + i] = tmoe_f32_to_f16(s * u[i]);
            }
        }
    }
}

void tmoe_cpu_permute(const int32_t *idx, int T, int k, int E, int32_t *counts, int32_t *offsets,
                      int32_t *src, int32_t *dst) {
    memset(counts, 0, sizeof(int32_t) * (size_t)E);
    for (int i = 0; i < T * k; i++) counts[idx[i]]++;
    offsets[0] = 0;
    for (int e = 0; e < E; e++) offsets[e + 1] = offsets[e] + counts[e];
    int32_t fill[TMOE_MAX_EXPERTS];
    memcpy(fill, offsets, sizeof(int32_t) * (size_t)E);
    for (int i = 0; i < T * k; i++) {
        int pos = fill[idx[i]]++;
        src[pos] = i;
        dst[i] = pos;
    }
}

void tmoe_cpu_gather(const tmoe_f16 *x16, const int32_t *src, int N, int k, int D, tmoe_f16 *xg) {
    for (int r = 0; r < N; r++)
        memcpy(xg + (size_t)r * D, x16 + (size_t)(src[r] / k) * D, sizeof(tmoe_f16) * (size_t)D);
}

void tmoe_cpu_combine(const float *ye, const int32_t *dst, const float *w, int T, int k, int D,
                      float *y) {
    for (int t = 0; t < T; t++) {
        float *out = y + (size_t)t * D;
        for (int i = 0; i < D; i++) out[i] = 0.0f;
        for (int j = 0; j < k; j++) {
            const float *row = ye + (size_t)dst[t * k + j] * D;
            float wj = w[t * k + j];
            if (wj == 0.0f) continue; /* a weight-0 copy adds nothing, even an inf/NaN row */
            for (int i = 0; i < D; i++) out[i] += wj * row[i];
        }
    }
}

void tmoe_cpu_attention(const tmoe_f16 *qkv, int T, int D, int H, tmoe_f16 *out, float *p) {
    int dh = D / H;
    float scale = 1.0f / sqrtf((float)dh);
    for (int h = 0; h < H; h++) {
        for (int t = 0; t < T; t++) {
            const tmoe_f16 *q = qkv + (size_t)t * 3 * D + h * dh;
            float mx = -INFINITY;
            for (int s = 0; s <= t; s++) {
                const tmoe_f16 *kk = qkv + (size_t)s * 3 * D + D + h * dh;
                float acc = 0.0f;
                for (int i = 0; i < dh; i++) acc += tmoe_f16_to_f32(q[i]) * tmoe_f16_to_f32(kk[i]);
                p[s] = acc * scale;
                if (p[s] > mx) mx = p[s];
            }
            float den = 0.0f;
            for (int s = 0; s <= t; s++) {
                p[s] = expf(p[s] - mx);
                den += p[s];
            }
            for (int s = 0; s <= t; s++) p[s] = tmoe_round_f16(p[s] / den);
            for (int i = 0; i < dh; i++) {
                float acc = 0.0f;
                for (int s = 0; s <= t; s++)
                    acc += p[s] * tmoe_f16_to_f32(qkv[(size_t)s * 3 * D + 2 * D + h * dh + i]);
                out[(size_t)t * D + h * dh + i] = tmoe_f32_to_f16(acc);
            }
        }
    }
}

size_t tmoe_cpu_expert_scratch_bytes(const tmoe_expert *e, int n, tmoe_impl impl) {
    size_t h = (size_t)n * e->fc1.out * sizeof(float);
    size_t a = (size_t)n * e->d_ff * sizeof(tmoe_f16);
    size_t w = 0;
    if (tmoe_etype_is_quant(e->type) && impl == TMOE_IMPL_UNFUSED) {
        size_t w1 = (size_t)e->fc1.out * e->fc1.in, w2 = (size_t)e->fc2.out * e->fc2.in;
        w = (w1 > w2 ? w1 : w2) * sizeof(tmoe_f16);
    }
    return h + a + w + 128;
}

static void add_ms(double op_ms[TMOE_OP_COUNT], tmoe_op op, int64_t t0) {
    if (!op_ms) return;
    double ms = (double)(tmoe_now_ns() - t0) / 1e6;
    op_ms[op] = isnan(op_ms[op]) ? ms : op_ms[op] + ms;
}

/* linear_fc1 / linear_fc2: from the cached fp32 rows where given (tmoe_cpu_linear_w32). */
static void expert_linear(const tmoe_linear *l, tmoe_impl impl, const float *w32,
                          const tmoe_f16 *w16, const tmoe_f16 *x, int n, float *y) {
    if (w32)
        linear_rows(x, n, l->in, l->out, y, NULL, NULL, w32, l->type == TMOE_ET_BF16);
    else
        tmoe_cpu_linear(l, impl, w16, x, n, y);
}

void tmoe_cpu_expert_forward(const tmoe_expert *e, tmoe_impl impl, const tmoe_f16 *x, int n,
                             float *y, void *scratch, double op_ms[TMOE_OP_COUNT]) {
    tmoe_cpu_expert_forward_w32(e, impl, NULL, NULL, x, n, y, scratch, op_ms);
}

void tmoe_cpu_expert_forward_w32(const tmoe_expert *e, tmoe_impl impl, const float *w1_32,
                                 const float *w2_32, const tmoe_f16 *x, int n, float *y,
                                 void *scratch, double op_ms[TMOE_OP_COUNT]) {
    if (n == 0) return;
    uint8_t *s = scratch;
    float *h = (float *)s;
    tmoe_f16 *a = (tmoe_f16 *)(s + (((size_t)n * e->fc1.out * sizeof(float) + 63) & ~(size_t)63));
    tmoe_f16 *w16 = (tmoe_f16 *)((uint8_t *)a + (((size_t)n * e->d_ff * 2 + 63) & ~(size_t)63));
    int unfused = tmoe_etype_is_quant(e->type) && impl == TMOE_IMPL_UNFUSED;
    int64_t t0 = tmoe_now_ns();
    if (unfused) {
        tmoe_cpu_dequant_unpack(&e->fc1, w16);
        add_ms(op_ms, TMOE_OP_DEQUANT_UNPACK, t0);
        t0 = tmoe_now_ns();
    }
    expert_linear(&e->fc1, impl, w1_32, w16, x, n, h);
    add_ms(op_ms, TMOE_OP_LINEAR_FC1, t0);
    t0 = tmoe_now_ns();
    tmoe_cpu_act(e->act, h, n, e->d_ff, a);
    add_ms(op_ms, TMOE_OP_RELU, t0);
    t0 = tmoe_now_ns();
    if (unfused) {
        tmoe_cpu_dequant_unpack(&e->fc2, w16);
        add_ms(op_ms, TMOE_OP_DEQUANT_UNPACK, t0);
        t0 = tmoe_now_ns();
    }
    expert_linear(&e->fc2, impl, w2_32, w16, a, n, y);
    add_ms(op_ms, TMOE_OP_LINEAR_FC2, t0);
}
