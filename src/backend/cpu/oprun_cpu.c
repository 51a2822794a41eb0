/* Isolated ops on the CPU backend: the reference kernels on random inputs, timed with the
 * monotonic clock. Expert ops run on one expert of `tokens` rows; copies of the expert are
 * rotated like on the GPU (the CPU caches are smaller still). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend_internal.h"
#include "thermoe/backend.h"

typedef struct cpu_op {
    tmoe_oprun_spec s;
    int ncopies, next;
    tmoe_expert *experts; /* (ncopies) */
    tmoe_linear gate, wqkv, wo;
    float *norm_w;
    tmoe_f16 *x16, *w16, *a16, *qkv16;
    void *scratch; /* whole expert */
    float *f32a, *f32b, *p;
    int32_t *idx, *counts, *offsets, *src, *dst;
    float *w;
    double bytes, flops;
} cpu_op;

static void cpu_destroy(void *p) {
    cpu_op *o = p;
    if (!o) return;
    for (int i = 0; i < o->ncopies && o->experts; i++) tmoe_expert_free(&o->experts[i]);
    free(o->experts);
    tmoe_linear_free(&o->gate);
    tmoe_linear_free(&o->wqkv);
    tmoe_linear_free(&o->wo);
    void *bufs[] = {o->scratch, o->norm_w,  o->x16,  o->w16, o->a16,
                    o->qkv16,   o->f32a,    o->f32b, o->p,   o->idx,
                    o->counts,  o->offsets, o->src,  o->dst, o->w};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
    free(o);
}

static int is_expert_op(const tmoe_oprun_spec *s) {
    return s->whole_expert || s->op == TMOE_OP_DEQUANT_UNPACK || s->op == TMOE_OP_LINEAR_FC1 ||
           s->op == TMOE_OP_RELU || s->op == TMOE_OP_LINEAR_FC2;
}

static int cpu_create(const tmoe_oprun_spec *spec, void **out, tmoe_error *err) {
    cpu_op *o = tmoe_calloc(1, sizeof *o, err);
    if (!o) return TMOE_ENOMEM;
    o->s = *spec;
    const tmoe_block_config *b = &spec->block;
    int T = spec->tokens, D = b->d_model, F = b->d_ff, E = b->num_experts, k = b->top_k;
    int F1 = b->act == TMOE_ACT_SWIGLU ? 2 * F : F;
    tmoe_rng rng;
    tmoe_rng_seed_stream(&rng, spec->seed, 0x0b5);
    int rc = TMOE_OK;
    size_t maxdim = (size_t)(3 * D > F1 ? 3 * D : F1);
    size_t nk = (size_t)T * (size_t)k;
    o->x16 = tmoe_malloc(sizeof(tmoe_f16) * nk * (size_t)(D > F ? D : F), err);
    o->f32a = tmoe_malloc(sizeof(float) * nk * (maxdim > (size_t)E ? maxdim : (size_t)E), err);
    o->f32b = tmoe_malloc(sizeof(float) * nk * (size_t)D, err);
    o->a16 = tmoe_malloc(sizeof(tmoe_f16) * (size_t)T * maxdim, err);
    o->idx = tmoe_malloc(sizeof(int32_t) * nk, err);
    o->src = tmoe_malloc(sizeof(int32_t) * nk, err);
    o->dst = tmoe_malloc(sizeof(int32_t) * nk, err);
    o->w = tmoe_malloc(sizeof(float) * nk, err);
    o->counts = tmoe_malloc(sizeof(int32_t) * (size_t)E, err);
    o->offsets = tmoe_malloc(sizeof(int32_t) * (size_t)(E + 1), err);
    o->p = tmoe_malloc(sizeof(float) * (size_t)T, err);
    o->norm_w = tmoe_malloc(sizeof(float) * (size_t)D, err);
    if (!o->x16 || !o->f32a || !o->f32b || !o->a16 || !o->idx || !o->src || !o->dst || !o->w ||
        !o->counts || !o->offsets || !o->p || !o->norm_w) {
        cpu_destroy(o);
        return TMOE_ENOMEM;
    }
    for (size_t i = 0; i < nk * (size_t)(D > F ? D : F); i++)
        o->x16[i] = tmoe_f32_to_f16(tmoe_rng_uniform_sym(&rng, 1.0f));
    for (size_t i = 0; i < nk * (maxdim > (size_t)E ? maxdim : (size_t)E); i++)
        o->f32a[i] = tmoe_rng_uniform_sym(&rng, 2.0f);
    for (size_t i = 0; i < nk * (size_t)D; i++) o->f32b[i] = tmoe_rng_uniform_sym(&rng, 1.0f);
    for (int i = 0; i < D; i++) o->norm_w[i] = 1.0f;
    for (size_t i = 0; i < nk; i++) {
        o->idx[i] = (int32_t)tmoe_rng_below(&rng, (uint32_t)E);
        o->w[i] = 1.0f / (float)k;
    }
    if (is_expert_op(spec)) {
        tmoe_expert one;
        if ((rc = tmoe_expert_alloc(&one, spec->etype, b->act, D, F, b->group_size, err)))
            goto fail;
        size_t per = tmoe_expert_weight_bytes(&one);
        tmoe_expert_free(&one);
        o->ncopies =
            spec->min_working_set > per ? (int)((spec->min_working_set + per - 1) / per) : 1;
        if (o->ncopies > 64) o->ncopies = 64;
        o->experts = tmoe_calloc((size_t)o->ncopies, sizeof(tmoe_expert), err);
        if (!o->experts) {
            rc = TMOE_ENOMEM;
            goto fail;
        }
        for (int c = 0; c < o->ncopies; c++) {
            if ((rc = tmoe_expert_alloc(&o->experts[c], spec->etype, b->act, D, F, b->group_size,
                                        err)) ||
                (rc = tmoe_linear_init_random(&o->experts[c].fc1, &rng, err)) ||
                (rc = tmoe_linear_init_random(&o->experts[c].fc2, &rng, err)))
                goto fail;
        }
        size_t wmax = (size_t)F1 * D > (size_t)D * F ? (size_t)F1 * D : (size_t)D * F;
        o->w16 = tmoe_malloc(sizeof(tmoe_f16) * wmax, err);
        if (!o->w16) {
            rc = TMOE_ENOMEM;
            goto fail;
        }
        const tmoe_expert *e = &o->experts[0];
        const tmoe_linear *l = spec->op == TMOE_OP_LINEAR_FC2 ? &e->fc2 : &e->fc1;
        if (spec->whole_expert) {
            o->scratch = tmoe_malloc(tmoe_cpu_expert_scratch_bytes(e, T, spec->impl), err);
            if (!o->scratch) {
                rc = TMOE_ENOMEM;
                goto fail;
            }
            o->bytes = (double)tmoe_expert_weight_bytes(e);
            o->flops = 2.0 * T * ((double)F1 * D + (double)D * F);
            *out = o;
            return TMOE_OK;
        }
        switch (spec->op) {
        case TMOE_OP_DEQUANT_UNPACK:
            o->bytes = (double)tmoe_expert_weight_bytes(e) + 2.0 * ((double)F1 * D + (double)D * F);
            break;
        case TMOE_OP_RELU: o->bytes = (double)T * F1 * 4 + (double)T * F * 2; break;
        default:
            o->bytes = (double)(spec->impl == TMOE_IMPL_FUSED || !tmoe_etype_is_quant(spec->etype)
                                    ? tmoe_linear_weight_bytes(l)
                                    : (size_t)l->out * l->in * 2) +
                       (double)T * l->in * 2 + (double)T * l->out * 4;
            o->flops = 2.0 * T * l->out * l->in;
        }
    } else {
        o->ncopies = 1;
        if ((rc = tmoe_linear_alloc(&o->gate, TMOE_ET_FP16, E, D, 0, err)) ||
            (rc = tmoe_linear_init_random(&o->gate, &rng, err)) ||
            (rc = tmoe_linear_alloc(&o->wqkv, TMOE_ET_FP16, 3 * D, D, 0, err)) ||
            (rc = tmoe_linear_init_random(&o->wqkv, &rng, err)) ||
            (rc = tmoe_linear_alloc(&o->wo, TMOE_ET_FP16, D, D, 0, err)) ||
            (rc = tmoe_linear_init_random(&o->wo, &rng, err)))
            goto fail;
        for (size_t i = 0; i < (size_t)T * 3 * D; i++) o->a16[i] = o->x16[i % (nk * (size_t)D)];
        switch (spec->op) {
        case TMOE_OP_GATE_LINEAR:
            o->bytes = (double)E * D * 2 + (double)T * D * 2 + (double)T * E * 4;
            o->flops = 2.0 * T * E * D;
            break;
        case TMOE_OP_GATE_TOPK: o->bytes = (double)T * E * 4 + (double)nk * 8; break;
        case TMOE_OP_PERMUTE: o->bytes = (double)nk * 12 + (double)nk * D * 2 * 2; break;
        case TMOE_OP_COMBINE: o->bytes = (double)nk * D * 4 + (double)T * D * 4; break;
        case TMOE_OP_NORM: o->bytes = (double)T * D * 6; break;
        case TMOE_OP_ATTN_QKV:
            o->bytes = 6.0 * D * D + (double)T * D * 2 + (double)T * 3 * D * 4;
            o->flops = 6.0 * T * D * D;
            break;
        case TMOE_OP_ATTN_OUT:
            o->bytes = 2.0 * D * D + (double)T * D * 6;
            o->flops = 2.0 * T * D * D;
            break;
        case TMOE_OP_ATTN_CORE:
            o->bytes = (double)T * 3 * D * 2 + (double)T * D * 2;
            o->flops = 2.0 * T * (double)b->seq_len * D;
            break;
        default: break;
        }
    }
    *out = o;
    return TMOE_OK;
fail:
    cpu_destroy(o);
    return rc;
}

static void run_once(cpu_op *o) {
    const tmoe_block_config *b = &o->s.block;
    int T = o->s.tokens, D = b->d_model, F = b->d_ff, E = b->num_experts, k = b->top_k;
    const tmoe_expert *e = o->experts ? &o->experts[o->next] : NULL;
    if (o->experts) o->next = (o->next + 1) % o->ncopies;
    if (o->s.whole_expert) {
        tmoe_cpu_expert_forward(e, o->s.impl, o->x16, T, o->f32b, o->scratch, NULL);
        return;
    }
    switch (o->s.op) {
    case TMOE_OP_DEQUANT_UNPACK:
        tmoe_cpu_dequant_unpack(&e->fc1, o->w16);
        tmoe_cpu_dequant_unpack(&e->fc2, o->w16);
        break;
    case TMOE_OP_LINEAR_FC1: tmoe_cpu_linear(&e->fc1, o->s.impl, o->w16, o->x16, T, o->f32a); break;
    case TMOE_OP_RELU: tmoe_cpu_act(b->act, o->f32a, T, F, o->a16); break;
    case TMOE_OP_LINEAR_FC2: tmoe_cpu_linear(&e->fc2, o->s.impl, o->w16, o->x16, T, o->f32b); break;
    case TMOE_OP_GATE_LINEAR: tmoe_cpu_linear_f16(o->x16, o->gate.w, T, D, E, o->f32a); break;
    case TMOE_OP_GATE_TOPK:
        tmoe_gate_topk(o->f32a, NULL, T, E, k, b->renormalize, 0, o->idx, o->w);
        break;
    case TMOE_OP_PERMUTE:
        tmoe_cpu_permute(o->idx, T, k, E, o->counts, o->offsets, o->src, o->dst);
        tmoe_cpu_gather(o->x16, o->src, T * k, k, D, o->a16);
        break;
    case TMOE_OP_COMBINE: tmoe_cpu_combine(o->f32a, o->dst, o->w, T, k, D, o->f32b); break;
    case TMOE_OP_NORM: tmoe_cpu_rmsnorm(o->f32b, o->norm_w, T, D, b->norm_eps, o->x16); break;
    case TMOE_OP_ATTN_QKV: tmoe_cpu_linear_f16(o->x16, o->wqkv.w, T, D, 3 * D, o->f32a); break;
    case TMOE_OP_ATTN_CORE:
        for (int t0 = 0; t0 < T; t0 += b->seq_len) {
            int n = T - t0 < b->seq_len ? T - t0 : b->seq_len;
            tmoe_cpu_attention(o->a16 + (size_t)t0 * 3 * D, n, D, b->n_heads,
                               o->x16 + (size_t)t0 * D, o->p);
        }
        break;
    case TMOE_OP_ATTN_OUT: tmoe_cpu_linear_f16(o->x16, o->wo.w, T, D, D, o->f32b); break;
    default: break;
    }
}

static int cpu_run(void *p, int calls, double *ms, tmoe_error *err) {
    (void)err;
    cpu_op *o = p;
    /* the unfused linear ops read fp16 weights a dequant_unpack wrote before */
    if ((o->s.op == TMOE_OP_LINEAR_FC1 || o->s.op == TMOE_OP_LINEAR_FC2) &&
        tmoe_etype_is_quant(o->s.etype) && o->s.impl == TMOE_IMPL_UNFUSED)
        tmoe_cpu_dequant_unpack(
            o->s.op == TMOE_OP_LINEAR_FC1 ? &o->experts[0].fc1 : &o->experts[0].fc2, o->w16);
    if (o->s.op == TMOE_OP_COMBINE) /* a valid permutation for combine to read */
        tmoe_cpu_permute(o->idx, o->s.tokens, o->s.block.top_k, o->s.block.num_experts, o->counts,
                         o->offsets, o->src, o->dst);
    for (int c = 0; c < calls; c++) {
        int64_t t0 = tmoe_now_ns();
        run_once(o);
        if (ms) ms[c] = (double)(tmoe_now_ns() - t0) / 1e6;
    }
    return TMOE_OK;
}

static double cpu_bytes(const void *p) {
    return ((const cpu_op *)p)->bytes;
}
static double cpu_flops(const void *p) {
    return ((const cpu_op *)p)->flops;
}
static int cpu_copies(const void *p) {
    return ((const cpu_op *)p)->ncopies;
}

const tmoe_oprun_vt tmoe_oprun_cpu = {cpu_create, cpu_destroy, cpu_run,
                                      cpu_bytes,  cpu_flops,   cpu_copies};
