/* Isolated ops on the CUDA backend, with the same kernels and the same kernel choice as the
 * engine's MoE step (cuda_ops.h; cuBLAS for fp16 / unfused experts from
 * tmoe_cuda_cublas_min_tokens tokens), reading weights stored as the engine stores them (the
 * bandwidth kernel's fp16 and fused q4/q2 weights in the tiled layout where the shape allows,
 * row-major for cuBLAS and dequant_unpack). Expert weights are rotated over copies whose total
 * exceeds the working-set target (default 128 MB > 2x the 50 MB L2), so no call reads weights
 * the previous call left in the cache. Each call is timed with its own pair of events. Two
 * deliberate differences from the engine: linear_fc1 writes fp32 with no epilogue and relu is
 * its own kernel, so that the op table's steps are measured apart (the engine fuses the
 * activation into fc1 below the cuBLAS threshold). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend_internal.h"
#include "cublas_util.h"
#include "fill.h"

typedef struct cuda_op {
    tmoe_oprun_spec s;
    cudaStream_t st;
    cublasHandle_t cb;
    cudaEvent_t *ev;
    int nev;
    int ncopies, next;
    int sm_count; /* multiprocessors of the device, queried once at create */
    void *mem[32];
    int nmem;
    tmoe_cuda_lin L1, L2; /* fc1, fc2 of the expert type, ncopies slots, row-major (w NULL
                             for fused q4/q2 once tiled: only K1, K2 read them) */
    tmoe_cuda_lin U1, U2; /* fp16 copies for the unfused path */
    tmoe_cuda_lin K1, K2; /* what the bandwidth kernel reads (kernel_lin) */
    int32_t *routing;     /* device: experts {0}, counts {n}, offsets {0, n} */
    tmoe_f16 *x16, *a16, *y16, *gate_w, *wqkv, *wo, *qkv16, *P16;
    tmoe_bf16 *xb; /* bf16 experts on cuBLAS: the activations rounded to bf16 (T, max(D, F1)) */
    float *y32, *h32, *logits, *w, *ye, *x32, *norm_w, *S;
    int32_t *idx, *counts, *offsets, *src, *dst;
    double bytes, flops;
} cuda_op;

static int dalloc(cuda_op *o, void **p, size_t n, tmoe_error *err) {
    TMOE_ASSERT(o->nmem < 32);
    TMOE_CUDA_CHECK(cudaMalloc(p, n ? n : 16), err);
    o->mem[o->nmem++] = *p;
    return TMOE_OK;
}

/* Free p, an allocation of o (dalloc), and forget it. */
static int dfree(cuda_op *o, void *p, tmoe_error *err) {
    for (int i = 0; i < o->nmem; i++)
        if (o->mem[i] == p) {
            o->mem[i] = o->mem[--o->nmem];
            TMOE_CUDA_CHECK(cudaFree(p), err);
            return TMOE_OK;
        }
    TMOE_ASSERT(!"dfree: not an allocation of this runner");
    return TMOE_EINVAL;
}

/* Fill n bytes of device memory from host data. */
static int upload(cuda_op *o, void *dst, const void *src, size_t n, tmoe_error *err) {
    TMOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, o->st), err);
    TMOE_CUDA_CHECK(cudaStreamSynchronize(o->st), err);
    return TMOE_OK;
}

static uint64_t next_seed(tmoe_rng *r) {
    return tmoe_rng_u64(r);
}

static int random_f16(cuda_op *o, tmoe_f16 **d, size_t n, float a, tmoe_rng *r, tmoe_error *err) {
    TRY(dalloc(o, (void **)d, n * 2, err));
    return tmoe_cuda_fill_f16(*d, n, -a, a, next_seed(r), o->st, err);
}

static int random_f32(cuda_op *o, float **d, size_t n, float a, tmoe_rng *r, tmoe_error *err) {
    TRY(dalloc(o, (void **)d, n * 4, err));
    return tmoe_cuda_fill_f32(*d, n, -a, a, next_seed(r), o->st, err);
}

/* ncopies slots of one linear layer's weights, random on the device: fp16 / bf16 uniform in
 * +-1/sqrt(in); packed ints uniform over the type's range with scales in [0.5, 1] / (8 sqrt(in)).
 */
static int make_lin(cuda_op *o, tmoe_cuda_lin *L, tmoe_etype t, int out, int in, int group,
                    tmoe_rng *r, tmoe_error *err) {
    TRY(tmoe_quant_check_shape(t, out, in, group, err));
    memset(L, 0, sizeof *L);
    L->type = t;
    L->out = out;
    L->in = in;
    L->group = tmoe_etype_is_quant(t) ? group : 0;
    L->w_stride = tmoe_quant_weight_bytes(t, out, in);
    L->s_stride = tmoe_etype_is_quant(t) ? tmoe_quant_scale_count(out, in, group) : 0;
    L->sm_count = o->sm_count;
    size_t nw = L->w_stride * (size_t)o->ncopies;
    float a = 1.0f / sqrtf((float)in);
    TRY(dalloc(o, (void **)&L->w, nw, err));
    if (t == TMOE_ET_FP16)
        return tmoe_cuda_fill_f16((tmoe_f16 *)L->w, nw / 2, -a, a, next_seed(r), o->st, err);
    if (t == TMOE_ET_BF16)
        return tmoe_cuda_fill_bf16((tmoe_bf16 *)L->w, nw / 2, -a, a, next_seed(r), o->st, err);
    TRY(tmoe_cuda_fill_bytes((void *)L->w, nw, next_seed(r), o->st, err));
    size_t ns = L->s_stride * (size_t)o->ncopies;
    TRY(dalloc(o, (void **)&L->scales, ns * 2, err));
    return tmoe_cuda_fill_f16((tmoe_f16 *)L->scales, ns, 0.0625f * a, 0.125f * a, next_seed(r),
                              o->st, err);
}

/* Teardown (also of a half-created runner): every failure is logged, nothing stops it. */
static void cuda_destroy(void *p) {
    cuda_op *o = p;
    if (!o) return;
    for (int i = 0; i < o->nev; i++) TMOE_CUDA_WARN(cudaEventDestroy(o->ev[i]));
    free(o->ev);
    for (int i = 0; i < o->nmem; i++) TMOE_CUDA_WARN(cudaFree(o->mem[i]));
    if (o->cb) CB_WARN(cublasDestroy(o->cb));
    if (o->st) TMOE_CUDA_WARN(cudaStreamDestroy(o->st));
    free(o);
}

/* K: the weights of L (unfused: of its fp16 copy U) as the engine's bandwidth kernel reads
 * them (backend_cuda.c upload_group): fp16 / bf16 and fused q4/q2 tiled
 * (tmoe_cuda_tile_weights) where the shape allows, else row-major. fp16 / bf16 keep the
 * row-major L for cuBLAS; fused q4/q2 drop it once tiled, as the engine does. */
static int kernel_lin(cuda_op *o, tmoe_cuda_lin *L, const tmoe_cuda_lin *U, int unf,
                      tmoe_cuda_lin *K, tmoe_error *err) {
    *K = unf ? *U : *L;
    if (unf || L->out % 16 || L->w_stride % ((size_t)L->out * 64)) return TMOE_OK;
    void *wt = NULL;
    TRY(dalloc(o, &wt, L->w_stride * (size_t)o->ncopies, err));
    TRY(tmoe_cuda_tile_weights(L->w, wt, L->out, L->w_stride / L->out, o->ncopies, o->st, err));
    K->w = wt;
    K->tiled = 1;
    if (!tmoe_etype_is_quant(L->type)) return TMOE_OK;
    TMOE_CUDA_CHECK(cudaStreamSynchronize(o->st), err); /* the tiling has read L->w */
    TRY(dfree(o, (void *)L->w, err));
    L->w = NULL;
    return TMOE_OK;
}

static int is_expert_op(const tmoe_oprun_spec *s) {
    return s->whole_expert || s->op == TMOE_OP_DEQUANT_UNPACK || s->op == TMOE_OP_LINEAR_FC1 ||
           s->op == TMOE_OP_RELU || s->op == TMOE_OP_LINEAR_FC2;
}

static int create_in(cuda_op *o, tmoe_error *err) {
    const tmoe_oprun_spec *s = &o->s;
    const tmoe_block_config *b = &s->block;
    int T = s->tokens, D = b->d_model, F = b->d_ff, E = b->num_experts, k = b->top_k;
    int F1 = b->act == TMOE_ACT_SWIGLU ? 2 * F : F, H = b->n_heads;
    size_t nk = (size_t)T * k;
    TMOE_CUDA_CHECK(cudaSetDevice(s->device_id), err);
    TRY(tmoe_cuda_sm_count(s->device_id, &o->sm_count, err));
    TMOE_CUDA_CHECK(cudaStreamCreateWithFlags(&o->st, cudaStreamNonBlocking), err);
    CB_CHECK(cublasCreate(&o->cb), err);
    CB_CHECK(cublasSetStream(o->cb, o->st), err);
    /* routing for one expert of `tokens` rows: experts {0}, counts {n}, offsets {0, n} */
    TRY(dalloc(o, (void **)&o->routing, 4 * sizeof(int32_t), err));
    TRY(tmoe_cuda_single_expert_routing(T, o->routing, o->routing + 1, o->routing + 2, o->st, err));
    tmoe_rng r;
    tmoe_rng_seed_stream(&r, s->seed, 0xc0da);
    size_t xrows = is_expert_op(s) ? (size_t)T : nk;
    size_t xw = (size_t)(D > F ? D : F);
    TRY(random_f16(o, &o->x16, xrows * xw, 1.0f, &r, err));
    TRY(random_f32(o, &o->h32, (size_t)T * (F1 > 3 * D ? F1 : 3 * D), 2.0f, &r, err));
    TRY(dalloc(o, (void **)&o->a16, (size_t)T * (F1 > 3 * D ? F1 : 3 * D) * 2, err));
    TRY(dalloc(o, (void **)&o->y32, (size_t)T * (F1 > D ? F1 : D) * 4, err));
    if (is_expert_op(s)) {
        tmoe_linear probe;
        TRY(tmoe_linear_alloc(&probe, s->etype, F1, D, b->group_size, err));
        size_t per = tmoe_linear_weight_bytes(&probe) * 2; /* fc1 + fc2, roughly */
        tmoe_linear_free(&probe);
        o->ncopies = s->min_working_set > per ? (int)((s->min_working_set + per - 1) / per) : 1;
        if (o->ncopies > 256) o->ncopies = 256;
        int need1 = s->whole_expert || (s->op != TMOE_OP_LINEAR_FC2 && s->op != TMOE_OP_RELU);
        int need2 =
            s->whole_expert || s->op == TMOE_OP_LINEAR_FC2 || s->op == TMOE_OP_DEQUANT_UNPACK;
        if (need1) TRY(make_lin(o, &o->L1, s->etype, F1, D, b->group_size, &r, err));
        if (need2) TRY(make_lin(o, &o->L2, s->etype, D, F, b->group_size, &r, err));
        int unf = tmoe_etype_is_quant(s->etype) && s->impl == TMOE_IMPL_UNFUSED;
        if (s->etype == TMOE_ET_BF16)
            TRY(dalloc(o, (void **)&o->xb, (size_t)T * (F1 > D ? F1 : D) * 2, err));
        if (unf || (!s->whole_expert && s->op == TMOE_OP_DEQUANT_UNPACK)) {
            /* fp16 copies the unfused linear reads (dequant_unpack writes them) */
            const tmoe_cuda_lin *src[2] = {need1 ? &o->L1 : NULL, need2 ? &o->L2 : NULL};
            tmoe_cuda_lin *dst[2] = {&o->U1, &o->U2};
            for (int i = 0; i < 2; i++) {
                if (!src[i]) continue;
                *dst[i] = *src[i];
                dst[i]->type = TMOE_ET_FP16;
                dst[i]->scales = NULL;
                dst[i]->s_stride = 0;
                dst[i]->w_stride = (size_t)src[i]->out * src[i]->in * 2;
                TRY(dalloc(o, (void **)&dst[i]->w, dst[i]->w_stride * (size_t)o->ncopies, err));
                for (int c = 0; c < o->ncopies; c++) {
                    tmoe_cuda_lin one = *src[i];
                    one.w = (const uint8_t *)src[i]->w + src[i]->w_stride * (size_t)c;
                    one.scales =
                        src[i]->scales ? src[i]->scales + src[i]->s_stride * (size_t)c : NULL;
                    TRY(tmoe_cuda_dequant_unpack(
                        &one, 1, o->routing, NULL,
                        (tmoe_f16 *)((uint8_t *)dst[i]->w + dst[i]->w_stride * (size_t)c), o->st,
                        err));
                }
            }
        }
        if (s->whole_expert || s->op == TMOE_OP_LINEAR_FC1)
            TRY(kernel_lin(o, &o->L1, &o->U1, unf, &o->K1, err));
        if (s->whole_expert || s->op == TMOE_OP_LINEAR_FC2)
            TRY(kernel_lin(o, &o->L2, &o->U2, unf, &o->K2, err));
        const tmoe_cuda_lin *L = s->op == TMOE_OP_LINEAR_FC2 ? &o->L2 : &o->L1;
        if (s->whole_expert) {
            /* weights (and scales) read once; unfused also writes and reads them as fp16 */
            o->bytes = (double)(o->L1.w_stride + o->L1.s_stride * 2 + o->L2.w_stride +
                                o->L2.s_stride * 2) +
                       (unf ? 4.0 * ((double)F1 * D + (double)D * F) : 0.0);
            o->flops = 2.0 * T * ((double)F1 * D + (double)D * F);
        } else if (s->op == TMOE_OP_DEQUANT_UNPACK)
            o->bytes = (double)(o->L1.w_stride + o->L1.s_stride * 2 + o->L2.w_stride +
                                o->L2.s_stride * 2) +
                       (double)(o->U1.w_stride + o->U2.w_stride);
        else if (s->op == TMOE_OP_RELU)
            o->bytes = (double)T * F1 * 4 + (double)T * F * 2;
        else {
            o->bytes = (double)(unf ? (size_t)L->out * L->in * 2 : L->w_stride + L->s_stride * 2) +
                       (double)T * L->in * 2 + (double)T * L->out * 4;
            o->flops = 2.0 * T * L->out * L->in;
        }
        return TMOE_OK;
    }
    o->ncopies = 1;
    TRY(random_f16(o, &o->gate_w, (size_t)E * D, 0.05f, &r, err));
    TRY(random_f16(o, &o->wqkv, (size_t)3 * D * D, 0.02f, &r, err));
    TRY(random_f16(o, &o->wo, (size_t)D * D, 0.02f, &r, err));
    TRY(random_f32(o, &o->logits, (size_t)T * E, 2.0f, &r, err));
    TRY(random_f32(o, &o->x32, (size_t)T * D, 1.0f, &r, err));
    TRY(random_f32(o, &o->ye, nk * D, 1.0f, &r, err));
    TRY(random_f16(o, &o->qkv16, (size_t)T * 3 * D, 1.0f, &r, err));
    TRY(dalloc(o, (void **)&o->w, nk * 4, err));
    TRY(dalloc(o, (void **)&o->idx, nk * 4, err));
    TRY(dalloc(o, (void **)&o->src, nk * 4, err));
    TRY(dalloc(o, (void **)&o->dst, nk * 4, err));
    TRY(dalloc(o, (void **)&o->counts, (size_t)E * 4, err));
    TRY(dalloc(o, (void **)&o->offsets, (size_t)(E + 1) * 4, err));
    TRY(dalloc(o, (void **)&o->y16, nk * D * 2, err));
    int L = b->seq_len < T ? b->seq_len : T;
    TRY(dalloc(o, (void **)&o->S, (size_t)H * L * L * 4, err));
    TRY(dalloc(o, (void **)&o->P16, (size_t)H * L * L * 2, err));
    TRY(dalloc(o, (void **)&o->norm_w, (size_t)D * 4, err));
    TRY(tmoe_cuda_fill_f32(o->norm_w, (size_t)D, 0.9f, 1.1f, next_seed(&r), o->st, err));
    /* a valid routing for permute and combine to read */
    TRY(tmoe_cuda_gate_topk(o->logits, NULL, T, E, k, 1, 0, o->idx, o->w, NULL, NULL, o->st, err));
    TRY(tmoe_cuda_permute(o->idx, T, k, E, o->counts, o->offsets, o->src, o->dst, NULL, NULL, o->st,
                          err));
    TMOE_CUDA_CHECK(cudaStreamSynchronize(o->st), err);
    switch (s->op) {
    case TMOE_OP_GATE_LINEAR:
        o->bytes = (double)E * D * 2 + (double)T * D * 2 + (double)T * E * 4;
        o->flops = 2.0 * T * E * D;
        break;
    case TMOE_OP_GATE_TOPK: o->bytes = (double)T * E * 4 + (double)nk * 8; break;
    case TMOE_OP_PERMUTE: o->bytes = (double)nk * 12 + (double)nk * D * 4; break;
    case TMOE_OP_COMBINE: o->bytes = (double)nk * D * 4 + (double)T * D * 8; break;
    case TMOE_OP_NORM: o->bytes = (double)T * D * 6; break;
    case TMOE_OP_ATTN_QKV:
        o->bytes = 6.0 * D * D + (double)T * D * 2 + (double)T * 3 * D * 6;
        o->flops = 6.0 * T * D * D;
        break;
    case TMOE_OP_ATTN_OUT:
        o->bytes = 2.0 * D * D + (double)T * D * 10;
        o->flops = 2.0 * T * D * D;
        break;
    case TMOE_OP_ATTN_CORE:
        o->bytes = (double)T * 4 * D * 2 + (double)H * L * T * 6;
        o->flops = 4.0 * T * (double)L * D;
        break;
    default: break;
    }
    return TMOE_OK;
}

static int cuda_create(const tmoe_oprun_spec *spec, void **out, tmoe_error *err) {
    cuda_op *o = tmoe_calloc(1, sizeof *o, err);
    if (!o) return TMOE_ENOMEM;
    o->s = *spec;
    int rc = TMOE_OK;
    if (cudaSetDevice(spec->device_id) != cudaSuccess)
        rc = tmoe_errorf(err, TMOE_ENODEV, "CUDA device %d is not available", spec->device_id);
    if (!rc) rc = create_in(o, err);
    if (!rc && cudaStreamSynchronize(o->st) != cudaSuccess)
        rc = tmoe_errorf(err, TMOE_EDEVICE, "preparing the op failed on the device");
    if (rc) {
        cuda_destroy(o);
        return rc;
    }
    *out = o;
    return TMOE_OK;
}

static int gemm(cuda_op *o, const tmoe_f16 *x, const tmoe_f16 *W, int n, int in, int out, float *y,
                tmoe_error *err) {
    return tmoe_cublas_gemm_f16(o->cb, x, W, n, in, out, y, err);
}

static tmoe_cuda_lin slot(const tmoe_cuda_lin *L, int c) {
    tmoe_cuda_lin one = *L;
    one.w = (const uint8_t *)L->w + L->w_stride * (size_t)c;
    if (L->scales) one.scales = L->scales + L->s_stride * (size_t)c;
    return one;
}

/* The engine's choice (backend_cuda.c): cuBLAS for fp16 / bf16 / unfused experts from the
 * thresholds. */
static int via_cublas(const cuda_op *o, int unf) {
    const tmoe_oprun_spec *s = &o->s;
    long DF = (long)s->block.d_model * s->block.d_ff;
    return (!tmoe_etype_is_quant(s->etype) || unf) && s->tokens >= tmoe_cuda_cublas_min_tokens &&
           DF >= tmoe_cuda_cublas_min_weights;
}

/* fc1 (which 0) or fc2 (which 1) of weight copy c as the engine's expert step runs it: cuBLAS
 * on the row-major fp16 weights (L, or U when unfused), the activation apart, or the
 * bandwidth kernel on K with the epilogue. Epilogue none writes y32, else y16. */
static int expert_linear(cuda_op *o, int which, int c, int unf, tmoe_cuda_epi epi,
                         const tmoe_f16 *x, float *y32, tmoe_f16 *y16, tmoe_error *err) {
    const tmoe_oprun_spec *s = &o->s;
    int T = s->tokens;
    if (via_cublas(o, unf)) {
        tmoe_cuda_lin L = slot(unf ? (which ? &o->U2 : &o->U1) : (which ? &o->L2 : &o->L1), c);
        float *h = epi == TMOE_CUDA_EPI_NONE ? y32 : o->h32;
        if (L.type == TMOE_ET_BF16) {
            /* as the engine: the activations rounded to bf16, then a bf16 GEMM */
            TRY(tmoe_cuda_f16_to_bf16(x, (size_t)T * L.in, o->xb, o->st, err));
            TRY(tmoe_cublas_gemm_bf16(o->cb, o->xb, (const tmoe_bf16 *)L.w, T, L.in, L.out, h,
                                      err));
        } else {
            TRY(gemm(o, x, (const tmoe_f16 *)L.w, T, L.in, L.out, h, err));
        }
        if (epi == TMOE_CUDA_EPI_NONE) return TMOE_OK;
        return tmoe_cuda_act(s->block.act, h, T, s->block.d_ff, y16, o->st, err);
    }
    tmoe_cuda_lin K = slot(which ? &o->K2 : &o->K1, c);
    const int32_t *ex = o->routing, *cnt = o->routing + 1, *off = o->routing + 2;
    return tmoe_cuda_expert_linear(&K, epi, 1, ex, NULL, NULL, cnt, off, x, NULL, 1, T, T, 1, y32,
                                   y16, o->st, err);
}

/* The whole expert as the engine runs it. */
static int run_whole(cuda_op *o, int c, tmoe_error *err) {
    const tmoe_oprun_spec *s = &o->s;
    int unf = tmoe_etype_is_quant(s->etype) && s->impl == TMOE_IMPL_UNFUSED;
    const int32_t *ex = o->routing;
    if (unf) {
        tmoe_cuda_lin a = slot(&o->L1, c), b = slot(&o->L2, c), ua = slot(&o->U1, c),
                      ub = slot(&o->U2, c);
        TRY(tmoe_cuda_dequant_unpack(&a, 1, ex, NULL, (tmoe_f16 *)ua.w, o->st, err));
        TRY(tmoe_cuda_dequant_unpack(&b, 1, ex, NULL, (tmoe_f16 *)ub.w, o->st, err));
    }
    tmoe_cuda_epi epi1 =
        s->block.act == TMOE_ACT_SWIGLU ? TMOE_CUDA_EPI_SWIGLU : TMOE_CUDA_EPI_RELU;
    TRY(expert_linear(o, 0, c, unf, epi1, o->x16, NULL, o->a16, err));
    return expert_linear(o, 1, c, unf, TMOE_CUDA_EPI_NONE, o->a16, o->y32, NULL, err);
}

static int run_once(cuda_op *o, tmoe_error *err) {
    const tmoe_oprun_spec *s = &o->s;
    const tmoe_block_config *b = &s->block;
    int T = s->tokens, D = b->d_model, F = b->d_ff, E = b->num_experts, k = b->top_k,
        H = b->n_heads;
    int c = o->next;
    o->next = (o->next + 1) % o->ncopies;
    const int32_t *ex = o->routing;
    int unf = tmoe_etype_is_quant(s->etype) && s->impl == TMOE_IMPL_UNFUSED;
    if (s->whole_expert) return run_whole(o, c, err);
    switch (s->op) {
    case TMOE_OP_DEQUANT_UNPACK: {
        tmoe_cuda_lin a = slot(&o->L1, c), bb = slot(&o->L2, c), ua = slot(&o->U1, c),
                      ub = slot(&o->U2, c);
        TRY(tmoe_cuda_dequant_unpack(&a, 1, ex, NULL, (tmoe_f16 *)ua.w, o->st, err));
        return tmoe_cuda_dequant_unpack(&bb, 1, ex, NULL, (tmoe_f16 *)ub.w, o->st, err);
    }
    case TMOE_OP_LINEAR_FC1:
    case TMOE_OP_LINEAR_FC2: {
        int which = s->op == TMOE_OP_LINEAR_FC2;
        return expert_linear(o, which, c, unf, TMOE_CUDA_EPI_NONE, o->x16, o->y32, NULL, err);
    }
    case TMOE_OP_RELU: return tmoe_cuda_act(b->act, o->h32, T, F, o->a16, o->st, err);
    case TMOE_OP_GATE_LINEAR: return gemm(o, o->x16, o->gate_w, T, D, E, o->y32, err);
    case TMOE_OP_GATE_TOPK:
        return tmoe_cuda_gate_topk(o->logits, NULL, T, E, k, b->renormalize, 0, o->idx, o->w, NULL,
                                   NULL, o->st, err);
    case TMOE_OP_PERMUTE:
        TRY(tmoe_cuda_permute(o->idx, T, k, E, o->counts, o->offsets, o->src, o->dst, NULL, NULL,
                              o->st, err));
        return tmoe_cuda_gather(o->x16, o->src, T * k, k, D, o->y16, o->st, err);
    case TMOE_OP_COMBINE:
        return tmoe_cuda_combine(o->ye, o->dst, o->w, o->x32, T, k, D, o->y32, o->st, err);
    case TMOE_OP_NORM:
        return tmoe_cuda_rmsnorm(o->x32, o->norm_w, T, D, b->norm_eps, o->a16, o->st, err);
    case TMOE_OP_ATTN_QKV:
        TRY(gemm(o, o->x16, o->wqkv, T, D, 3 * D, o->h32, err));
        return tmoe_cuda_to_f16(o->h32, (size_t)T * 3 * D, o->a16, o->st, err);
    case TMOE_OP_ATTN_OUT:
        TRY(gemm(o, o->x16, o->wo, T, D, D, o->y32, err));
        return tmoe_cuda_add(o->y32, o->x32, (size_t)T * D, o->st, err);
    case TMOE_OP_ATTN_CORE: {
        int dh = D / H;
        const float one = 1.0f, zero = 0.0f;
        for (int t0 = 0; t0 < T; t0 += b->seq_len) {
            int L = T - t0 < b->seq_len ? T - t0 : b->seq_len;
            const tmoe_f16 *q = o->qkv16 + (size_t)t0 * 3 * D;
            CB_CHECK(cublasGemmStridedBatchedEx(o->cb, CUBLAS_OP_T, CUBLAS_OP_N, L, L, dh, &one,
                                                q + D, CUDA_R_16F, 3 * D, dh, q, CUDA_R_16F, 3 * D,
                                                dh, &zero, o->S, CUDA_R_32F, L, (long long)L * L, H,
                                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     err);
            TRY(tmoe_cuda_causal_softmax(o->S, H, L, 1.0f / sqrtf((float)dh), o->P16, o->st, err));
            CB_CHECK(cublasGemmStridedBatchedEx(o->cb, CUBLAS_OP_N, CUBLAS_OP_N, dh, L, L, &one,
                                                q + 2 * D, CUDA_R_16F, 3 * D, dh, o->P16,
                                                CUDA_R_16F, L, (long long)L * L, &zero,
                                                o->a16 + (size_t)t0 * D, CUDA_R_16F, D, dh, H,
                                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     err);
        }
        return TMOE_OK;
    }
    default: return tmoe_errorf(err, TMOE_EINVAL, "op %s has no CUDA runner", tmoe_op_name(s->op));
    }
}

static int cuda_run(void *p, int calls, double *ms, tmoe_error *err) {
    cuda_op *o = p;
    if (calls + 1 > o->nev) {
        cudaEvent_t *ne = realloc(o->ev, sizeof *ne * (size_t)(calls + 1));
        if (!ne) return tmoe_errorf(err, TMOE_ENOMEM, "out of memory for %d events", calls + 1);
        o->ev = ne;
        for (int i = o->nev; i < calls + 1; i++) {
            TMOE_CUDA_CHECK(cudaEventCreate(&o->ev[i]), err);
            o->nev = i + 1;
        }
    }
    TMOE_CUDA_CHECK(cudaEventRecord(o->ev[0], o->st), err);
    for (int c = 0; c < calls; c++) {
        TRY(run_once(o, err));
        TMOE_CUDA_CHECK(cudaEventRecord(o->ev[c + 1], o->st), err);
    }
    TMOE_CUDA_CHECK(cudaEventSynchronize(o->ev[calls]), err);
    if (ms)
        for (int c = 0; c < calls; c++) {
            float f = NAN;
            TMOE_CUDA_CHECK(cudaEventElapsedTime(&f, o->ev[c], o->ev[c + 1]), err);
            ms[c] = f;
        }
    return TMOE_OK;
}

static double cuda_bytes(const void *p) {
    return ((const cuda_op *)p)->bytes;
}
static double cuda_flops(const void *p) {
    return ((const cuda_op *)p)->flops;
}
static int cuda_copies(const void *p) {
    return ((const cuda_op *)p)->ncopies;
}

const tmoe_oprun_vt tmoe_oprun_cuda = {cuda_create, cuda_destroy, cuda_run,
                                       cuda_bytes,  cuda_flops,   cuda_copies};
