/* The CPU backend: runs the block with the reference kernels, timing each op with the
 * monotonic clock. Workspace is one arena sized at create time for max_tokens. */
#include "backend/backend_internal.h"
#include "thermoe/backend.h"
#include "cpu_engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cpu_state {
    const tmoe_block *blk;
    tmoe_engine_config cfg;
    tmoe_arena arena;
    int T;
    float *x;      /* (T, D) input, then residual after attention */
    tmoe_f16 *h16; /* (T, D) normed activations */
    float *qkv;    /* (T, 3D) */
    tmoe_f16 *qkv16;
    tmoe_f16 *att16; /* (T, D) */
    float *tmp;      /* (T, D) */
    float *attn_p;   /* (T) softmax row */
    float *logits;   /* (T, E) */
    int32_t *idx;    /* (T, k) */
    float *w;        /* (T, k) */
    int32_t *counts, *offsets, *src, *dst;
    tmoe_f16 *xg;  /* (T k, D) grouped inputs */
    float *ye;     /* (T k, D) grouped expert outputs */
    float *y;      /* (T, D) output */
    void *scratch; /* expert scratch for T k rows */
} cpu_state;

static void cpu_destroy(void *p) {
    cpu_state *s = p;
    if (!s) return;
    tmoe_arena_free(&s->arena);
    free(s);
}

static int cpu_create(const tmoe_block *blk, const tmoe_engine_config *cfg, void **out,
                      tmoe_error *err) {
    cpu_state *s = tmoe_calloc(1, sizeof *s, err);
    if (!s) return TMOE_ENOMEM;
    s->blk = blk;
    s->cfg = *cfg;
    size_t T = (size_t)cfg->max_tokens, D = (size_t)blk->cfg.d_model;
    size_t E = (size_t)blk->cfg.num_experts, k = (size_t)blk->cfg.top_k;
    size_t scratch = 0;
    for (size_t e = 0; e < E; e++) {
        /* impl_auto: a step may run either impl; unfused needs the larger scratch */
        tmoe_impl im = cfg->impl_auto ? TMOE_IMPL_UNFUSED : cfg->impl;
        size_t b = tmoe_cpu_expert_scratch_bytes(&blk->moe.experts[e], (int)(T * k), im);
        if (b > scratch) scratch = b;
    }
    const tmoe_buf bufs[] = {
        TMOE_BUF(s->x, T * D * 4),       TMOE_BUF(s->h16, T * D * 2),
        TMOE_BUF(s->qkv, T * 3 * D * 4), TMOE_BUF(s->qkv16, T * 3 * D * 2),
        TMOE_BUF(s->att16, T * D * 2),   TMOE_BUF(s->tmp, T * D * 4),
        TMOE_BUF(s->attn_p, T * 4),      TMOE_BUF(s->logits, T * E * 4),
        TMOE_BUF(s->idx, T * k * 4),     TMOE_BUF(s->w, T * k * 4),
        TMOE_BUF(s->counts, E * 4),      TMOE_BUF(s->offsets, (E + 1) * 4),
        TMOE_BUF(s->src, T * k * 4),     TMOE_BUF(s->dst, T * k * 4),
        TMOE_BUF(s->xg, T * k * D * 2),  TMOE_BUF(s->ye, T * k * D * 4),
        TMOE_BUF(s->y, T * D * 4),       TMOE_BUF(s->scratch, scratch),
    };
    int n = (int)(sizeof bufs / sizeof *bufs);
    size_t total = tmoe_bufs_total(bufs, n, 64);
    int rc = tmoe_arena_init(&s->arena, total, err);
    if (rc) {
        free(s);
        return rc;
    }
    tmoe_bufs_carve(bufs, n, tmoe_arena_alloc(&s->arena, total), 64);
    *out = s;
    return TMOE_OK;
}

static double ms_since(int64_t t0) {
    return (double)(tmoe_now_ns() - t0) / 1e6;
}

static int cpu_begin(void *p, const float *x, int T, int moe_only, double op_ms[TMOE_OP_COUNT],
                     tmoe_error *err) {
    (void)err;
    cpu_state *s = p;
    const tmoe_block *b = s->blk;
    int D = b->cfg.d_model, E = b->cfg.num_experts;
    s->T = T;
    memcpy(s->x, x, sizeof(float) * (size_t)T * D);
    int64_t t0;
    if (!moe_only) {
        t0 = tmoe_now_ns();
        tmoe_cpu_rmsnorm(s->x, b->norm1, T, D, b->cfg.norm_eps, s->h16);
        tmoe_op_ms_add(op_ms, TMOE_OP_NORM, ms_since(t0));
        t0 = tmoe_now_ns();
        tmoe_cpu_linear_f16(s->h16, b->wqkv.w, T, D, 3 * D, s->qkv);
        for (size_t i = 0; i < (size_t)T * 3 * D; i++) s->qkv16[i] = tmoe_f32_to_f16(s->qkv[i]);
        tmoe_op_ms_add(op_ms, TMOE_OP_ATTN_QKV, ms_since(t0));
        t0 = tmoe_now_ns();
        /* causal within each sequence of seq_len tokens; a batch holds ceil(T/seq_len) */
        for (int t0s = 0; t0s < T; t0s += b->cfg.seq_len) {
            int n = T - t0s < b->cfg.seq_len ? T - t0s : b->cfg.seq_len;
            tmoe_cpu_attention(s->qkv16 + (size_t)t0s * 3 * D, n, D, b->cfg.n_heads,
                               s->att16 + (size_t)t0s * D, s->attn_p);
        }
        tmoe_op_ms_add(op_ms, TMOE_OP_ATTN_CORE, ms_since(t0));
        t0 = tmoe_now_ns();
        tmoe_cpu_linear_f16(s->att16, b->wo.w, T, D, D, s->tmp);
        for (size_t i = 0; i < (size_t)T * D; i++) s->x[i] += s->tmp[i];
        tmoe_op_ms_add(op_ms, TMOE_OP_ATTN_OUT, ms_since(t0));
    }
    t0 = tmoe_now_ns();
    tmoe_cpu_rmsnorm(s->x, b->norm2, T, D, b->cfg.norm_eps, s->h16);
    tmoe_op_ms_add(op_ms, TMOE_OP_NORM, ms_since(t0));
    t0 = tmoe_now_ns();
    tmoe_cpu_linear_f16(s->h16, b->moe.gate.w, T, D, E, s->logits);
    tmoe_op_ms_add(op_ms, TMOE_OP_GATE_LINEAR, ms_since(t0));
    return TMOE_OK;
}

static int cpu_logits(void *p, float *logits, tmoe_error *err) {
    (void)err;
    cpu_state *s = p;
    memcpy(logits, s->logits, sizeof(float) * (size_t)s->T * s->blk->cfg.num_experts);
    return TMOE_OK;
}

static int cpu_moe(void *p, const float *bias, tmoe_moe_metrics *m, tmoe_error *err) {
    (void)err;
    cpu_state *s = p;
    const tmoe_block *b = s->blk;
    int T = s->T, D = b->cfg.d_model, E = b->cfg.num_experts, k = b->cfg.top_k;
    int64_t t_step = tmoe_now_ns(), t0 = t_step;
    tmoe_gate_topk(s->logits, bias, T, E, k, b->cfg.renormalize, s->cfg.bias_in_weights, s->idx,
                   s->w);
    tmoe_op_ms_add(m->op_ms, TMOE_OP_GATE_TOPK, ms_since(t0));
    t0 = tmoe_now_ns();
    tmoe_cpu_permute(s->idx, T, k, E, s->counts, s->offsets, s->src, s->dst);
    tmoe_cpu_gather(s->h16, s->src, T * k, k, D, s->xg);
    tmoe_op_ms_add(m->op_ms, TMOE_OP_PERMUTE, ms_since(t0));
    /* the impl of each quantized type this step (the rule the CUDA engine follows) */
    tmoe_impl impl[TMOE_ET_COUNT];
    double per_active = tmoe_engine_tokens_per_active(T, k, E);
    for (int t = 0; t < TMOE_ET_COUNT; t++)
        impl[t] = tmoe_engine_choose_impl(&s->cfg, (tmoe_etype)t, per_active);
    m->impl_auto = s->cfg.impl_auto;
    for (int e = 0; e < E; e++)
        if (tmoe_etype_is_quant(b->types[e])) m->impl_used[b->types[e]] = (int)impl[b->types[e]];
    for (int e = 0; e < E; e++) {
        int n = s->counts[e];
        m->tokens_per_expert[e] = n;
        if (n == 0) {
            m->expert_ms[e] = 0.0;
            continue;
        }
        int64_t te = tmoe_now_ns();
        size_t off = (size_t)s->offsets[e] * D;
        tmoe_cpu_expert_forward(&b->moe.experts[e], impl[b->types[e]], s->xg + off, n, s->ye + off,
                                s->scratch, m->op_ms);
        m->expert_ms[e] = ms_since(te);
    }
    t0 = tmoe_now_ns();
    tmoe_cpu_combine(s->ye, s->dst, s->w, T, k, D, s->y);
    for (size_t i = 0; i < (size_t)T * D; i++) s->y[i] += s->x[i];
    tmoe_op_ms_add(m->op_ms, TMOE_OP_COMBINE, ms_since(t0));
    m->step_ms = ms_since(t_step);
    if (m->topk_idx) memcpy(m->topk_idx, s->idx, sizeof(int32_t) * (size_t)T * k);
    if (m->topk_w) memcpy(m->topk_w, s->w, sizeof(float) * (size_t)T * k);
    return TMOE_OK;
}

static int cpu_output(void *p, float *y, tmoe_error *err) {
    (void)err;
    cpu_state *s = p;
    memcpy(y, s->y, sizeof(float) * (size_t)s->T * s->blk->cfg.d_model);
    return TMOE_OK;
}

const tmoe_backend_vt tmoe_backend_cpu = {
    .name = "cpu",
    .create = cpu_create,
    .destroy = cpu_destroy,
    .begin = cpu_begin,
    .logits = cpu_logits,
    .moe = cpu_moe,
    .output = cpu_output,
};

void tmoe_cpu_state_io(void *p, tmoe_cpu_io *io) {
    cpu_state *s = p;
    io->x = s->x;
    io->h16 = s->h16;
    io->logits = s->logits;
}
