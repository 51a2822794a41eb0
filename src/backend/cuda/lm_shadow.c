/* Production-shape experts beside a decoder LM (lm_ops.h, docs/cuda.md "Energy at production
 * shape"). A trained model small enough to sit in L2 says little about the energy of a
 * model whose experts stream from HBM; here every MoE layer's selection (the counts, offsets
 * and gather map permute wrote for the model's own experts) also drives E experts of a
 * production shape with random weights on the bandwidth kernel, reading a random input. Their
 * output is written and never read: the time and energy are those of the MoE layer at that
 * shape under the model's routing, the quality stays the model's own. */
#include "cublas_util.h"
#include "cuda_ops.h"
#include "fill.h"
#include "lm_ops.h"
#include "thermoe/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SHADOW_RESERVE_BYTES ((size_t)4 << 30) /* left free for everything else */

struct tmoe_cuda_shadow {
    tmoe_cuda_shadow_config c;
    int n_sets;
    size_t set_bytes, bytes;
    tmoe_cuda_lin (*lin)[2]; /* (n_sets) fc1, fc2 */
    void **mem;
    int n_mem;
    tmoe_f16 *x16, *a16;
    float *ye, *y;
};

void tmoe_cuda_shadow_free(tmoe_cuda_shadow *s) {
    if (!s) return;
    for (int i = 0; i < s->n_mem; i++) TMOE_CUDA_WARN(cudaFree(s->mem[i]));
    free(s->mem);
    free(s->lin);
    free(s);
}

static int dalloc(tmoe_cuda_shadow *s, void **p, size_t n, tmoe_error *err) {
    cudaError_t ce = cudaMalloc(p, n ? n : 1);
    if (ce != cudaSuccess)
        return tmoe_errorf(err, TMOE_ENOMEM, "%s:%d: cudaMalloc of %zu bytes: %s", __FILE__,
                           __LINE__, n, cudaGetErrorString(ce));
    s->mem[s->n_mem++] = *p;
    s->bytes += n;
    return TMOE_OK;
}

/* One linear of all E experts: fp16 uniform in +-1/sqrt(in), or packed ints uniform over the
 * type's range with scales in [1/16, 1/8] / sqrt(in) (as the op runner's random weights). The
 * bandwidth kernel reads its tiled layout; for random weights any byte order is as random. */
static int make_lin(tmoe_cuda_shadow *s, tmoe_cuda_lin *L, int out, int in, uint64_t seed,
                    cudaStream_t st, tmoe_error *err) {
    const tmoe_cuda_shadow_config *c = &s->c;
    memset(L, 0, sizeof *L);
    L->type = c->type;
    L->out = out;
    L->in = in;
    L->group = tmoe_etype_is_quant(c->type) ? c->group : 0;
    L->w_stride = tmoe_quant_weight_bytes(c->type, out, in);
    L->s_stride = tmoe_etype_is_quant(c->type) ? tmoe_quant_scale_count(out, in, c->group) : 0;
    L->tiled = 1;
    L->act8 = c->act8;
    L->sm_count = c->sm_count;
    size_t E = (size_t)c->num_experts, nw = L->w_stride * E, ns = L->s_stride * E;
    float a = 1.0f / sqrtf((float)in);
    TRY(dalloc(s, (void **)&L->w, nw, err));
    if (!tmoe_etype_is_quant(c->type)) /* fp16 or bf16: random 16-bit words, small and finite */
        return tmoe_cuda_fill_f16((tmoe_f16 *)L->w, nw / 2, -a, a, seed, st, err);
    TRY(tmoe_cuda_fill_bytes((void *)L->w, nw, seed, st, err));
    TRY(dalloc(s, (void **)&L->scales, ns * 2, err));
    return tmoe_cuda_fill_f16((tmoe_f16 *)L->scales, ns, 0.0625f * a, 0.125f * a, seed + 1, st,
                              err);
}

static int create_in(tmoe_cuda_shadow *s, cudaStream_t st, tmoe_error *err) {
    const tmoe_cuda_shadow_config *c = &s->c;
    int D = c->d_model, F = c->d_ff;
    size_t E = (size_t)c->num_experts, T = (size_t)c->max_tokens, N = T * (size_t)c->top_k;
    /* the kernel's shape limits, and the tiled layout's (16-row tiles of 64-byte k-blocks) */
    tmoe_cuda_lin probe[2] = {{.type = c->type, .out = 2 * F, .in = D, .group = c->group},
                              {.type = c->type, .out = D, .in = F, .group = c->group}};
    for (int i = 0; i < 2; i++) {
        tmoe_cuda_lin *L = &probe[i];
        if (tmoe_etype_is_quant(c->type))
            TRY(tmoe_quant_check_shape(c->type, L->out, L->in, c->group, err));
        TRY(tmoe_cuda_expert_kernel_supports(L, i ? TMOE_CUDA_EPI_NONE : TMOE_CUDA_EPI_SWIGLU,
                                             err));
        size_t rowb = tmoe_quant_weight_bytes(c->type, L->out, L->in) / (size_t)L->out;
        if (L->out % 16 || rowb % 64)
            return tmoe_errorf(err, TMOE_ENOTSUP,
                               "%s experts of %dx%d: rows of %zu bytes, the tiled layout needs "
                               "a multiple of 64 and rows a multiple of 16",
                               tmoe_etype_name(c->type), D, F, rowb);
        s->set_bytes +=
            E * (tmoe_quant_weight_bytes(c->type, L->out, L->in) +
                 (tmoe_etype_is_quant(c->type) ? 2 * tmoe_quant_scale_count(L->out, L->in, c->group)
                                               : 0));
    }
    size_t limit = c->max_bytes;
    if (!limit) {
        size_t free_b = 0, total_b = 0;
        TMOE_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b), err);
        limit = free_b > SHADOW_RESERVE_BYTES ? free_b - SHADOW_RESERVE_BYTES : 0;
    }
    size_t fit = limit / s->set_bytes;
    s->n_sets = fit < (size_t)c->n_layers ? (int)fit : c->n_layers;
    if (s->n_sets < 1)
        return tmoe_errorf(err, TMOE_ENOMEM,
                           "one set of %zu %s experts of %dx%d needs %.2f GB; %.2f GB are "
                           "allowed (device memory free less 4 GiB, or the limit given)",
                           E, tmoe_etype_name(c->type), D, F, (double)s->set_bytes / 1e9,
                           (double)limit / 1e9);
    if (s->set_bytes != tmoe_cuda_shadow_set_bytes(c))
        return tmoe_errorf(err, TMOE_EINVAL, "internal: a set's bytes, %zu or %zu", s->set_bytes,
                           tmoe_cuda_shadow_set_bytes(c));
    s->lin = calloc((size_t)s->n_sets, sizeof *s->lin);
    s->mem = calloc((size_t)(4 * s->n_sets + 4), sizeof *s->mem);
    if (!s->lin || !s->mem) return tmoe_errorf(err, TMOE_ENOMEM, "out of host memory");
    for (int i = 0; i < s->n_sets; i++) {
        uint64_t seed = c->seed + 0x9e3779b97f4a7c15ull * (uint64_t)(4 * i + 1);
        TRY(make_lin(s, &s->lin[i][0], 2 * F, D, seed, st, err));
        TRY(make_lin(s, &s->lin[i][1], D, F, seed + 2, st, err));
    }
    TRY(dalloc(s, (void **)&s->x16, T * (size_t)D * 2, err));
    TRY(dalloc(s, (void **)&s->a16, N * (size_t)F * 2, err));
    TRY(dalloc(s, (void **)&s->ye, N * (size_t)D * 4, err));
    TRY(dalloc(s, (void **)&s->y, T * (size_t)D * 4, err));
    TRY(tmoe_cuda_fill_f16(s->x16, T * (size_t)D, -1.0f, 1.0f, c->seed ^ 0x5bd1e995u, st, err));
    TMOE_CUDA_CHECK(cudaStreamSynchronize(st), err);
    return TMOE_OK;
}

int tmoe_cuda_shadow_create(const tmoe_cuda_shadow_config *c, cudaStream_t st,
                            tmoe_cuda_shadow **out, tmoe_error *err) {
    *out = NULL;
    if (c->d_model < 1 || c->d_ff < 1 || c->num_experts < 1 || c->top_k < 1 || c->max_tokens < 1 ||
        c->n_layers < 1)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "production-shape experts: d_model %d, d_ff %d, %d experts, top-%d, "
                           "%d tokens, %d layers: each must be positive",
                           c->d_model, c->d_ff, c->num_experts, c->top_k, c->max_tokens,
                           c->n_layers);
    tmoe_cuda_shadow *s = calloc(1, sizeof *s);
    if (!s) return tmoe_errorf(err, TMOE_ENOMEM, "out of host memory");
    s->c = *c;
    int rc = create_in(s, st, err);
    if (rc) {
        tmoe_cuda_shadow_free(s);
        return tmoe_error_prefix(err, rc, "production-shape experts (%s, %dx%d)",
                                 tmoe_etype_name(c->type), c->d_model, c->d_ff);
    }
    *out = s;
    return TMOE_OK;
}

int tmoe_cuda_shadow_sets(const tmoe_cuda_shadow *s) {
    return s ? s->n_sets : 0;
}

size_t tmoe_cuda_shadow_bytes(const tmoe_cuda_shadow *s) {
    return s ? s->bytes : 0;
}

size_t tmoe_cuda_shadow_set_bytes(const tmoe_cuda_shadow_config *c) {
    size_t E = (size_t)c->num_experts, b = 0;
    const int shape[2][2] = {{2 * c->d_ff, c->d_model}, {c->d_model, c->d_ff}};
    for (int i = 0; i < 2; i++)
        b += E * (tmoe_quant_weight_bytes(c->type, shape[i][0], shape[i][1]) +
                  (tmoe_etype_is_quant(c->type)
                       ? 2 * tmoe_quant_scale_count(shape[i][0], shape[i][1], c->group)
                       : 0));
    return b;
}

int tmoe_cuda_shadow_run(tmoe_cuda_shadow *s, int layer, const int32_t *experts,
                         const int32_t *active, const int32_t *slot_of, const int32_t *counts,
                         const int32_t *offsets, const int32_t *src, const int32_t *dst,
                         const float *w, int T, int max_n, cudaStream_t st, tmoe_error *err) {
    const tmoe_cuda_shadow_config *c = &s->c;
    int E = c->num_experts, k = c->top_k, N = T * k, max_active = N < E ? N : E;
    if (T < 1 || T > c->max_tokens)
        return tmoe_errorf(err, TMOE_EINVAL, "production-shape experts: %d tokens (1..%d)", T,
                           c->max_tokens);
    const tmoe_cuda_lin *L = s->lin[layer % s->n_sets];
    TRY(tmoe_cuda_expert_linear(&L[0], TMOE_CUDA_EPI_SWIGLU, E, experts, active, slot_of, counts,
                                offsets, s->x16, src, k, max_n, N, max_active, NULL, s->a16, st,
                                err));
    TRY(tmoe_cuda_expert_linear(&L[1], TMOE_CUDA_EPI_NONE, E, experts, active, slot_of, counts,
                                offsets, s->a16, NULL, 1, max_n, N, max_active, s->ye, NULL, st,
                                err));
    return tmoe_cuda_combine(s->ye, dst, w, NULL, T, k, c->d_model, s->y, st, err);
}
