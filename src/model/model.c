/* Linear layers, experts and the transformer block: allocation, validation and
 * deterministic random initialisation. */
#include "thermoe/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int tmoe_linear_alloc(tmoe_linear *l, tmoe_etype t, int out, int in, int group, tmoe_error *err) {
    memset(l, 0, sizeof *l);
    int rc = tmoe_quant_check_shape(t, out, in, group, err);
    if (rc) return rc;
    l->type = t;
    l->out = out;
    l->in = in;
    l->group = tmoe_etype_is_quant(t) ? group : 0;
    if (!tmoe_etype_is_quant(t)) {
        l->w = tmoe_malloc(sizeof(tmoe_f16) * (size_t)out * in, err);
        if (!l->w) return TMOE_ENOMEM;
        return TMOE_OK;
    }
    l->q = tmoe_calloc(tmoe_quant_weight_bytes(t, out, in), 1, err);
    l->scales = tmoe_malloc(sizeof(tmoe_f16) * tmoe_quant_scale_count(out, in, group), err);
    if (!l->q || !l->scales) {
        tmoe_linear_free(l);
        return TMOE_ENOMEM;
    }
    return TMOE_OK;
}

int tmoe_linear_set_f32(tmoe_linear *l, const float *w, tmoe_error *err) {
    if (l->type == TMOE_ET_FP16) {
        for (size_t i = 0; i < (size_t)l->out * l->in; i++) l->w[i] = tmoe_f32_to_f16(w[i]);
        return TMOE_OK;
    }
    if (l->type == TMOE_ET_BF16) {
        for (size_t i = 0; i < (size_t)l->out * l->in; i++) l->w[i] = tmoe_f32_to_bf16(w[i]);
        return TMOE_OK;
    }
    return tmoe_quantize(l->type, w, l->out, l->in, l->group, l->q, l->scales, err);
}

int tmoe_linear_init_random(tmoe_linear *l, tmoe_rng *rng, tmoe_error *err) {
    float a = 1.0f / sqrtf((float)l->in);
    if (!tmoe_etype_is_quant(l->type)) {
        int bf = l->type == TMOE_ET_BF16;
        for (size_t i = 0; i < (size_t)l->out * l->in; i++) {
            float v = tmoe_rng_uniform_sym(rng, a);
            l->w[i] = bf ? tmoe_f32_to_bf16(v) : tmoe_f32_to_f16(v);
        }
        return TMOE_OK;
    }
    /* quantize row by row so a big matrix needs only one row of fp32 scratch */
    float *row = tmoe_malloc(sizeof(float) * (size_t)l->in, err);
    if (!row) return TMOE_ENOMEM;
    int bits = tmoe_etype_bits(l->type), ng = l->in / l->group;
    int rc = TMOE_OK;
    for (int r = 0; r < l->out && rc == TMOE_OK; r++) {
        for (int i = 0; i < l->in; i++) row[i] = tmoe_rng_uniform_sym(rng, a);
        rc = tmoe_quantize(l->type, row, 1, l->in, l->group, l->q + (size_t)r * l->in * bits / 8,
                           l->scales + (size_t)r * ng, err);
    }
    free(row);
    return rc;
}

void tmoe_linear_to_f32(const tmoe_linear *l, float *w) {
    if (l->type == TMOE_ET_FP16) {
        for (size_t i = 0; i < (size_t)l->out * l->in; i++) w[i] = tmoe_f16_to_f32(l->w[i]);
        return;
    }
    if (l->type == TMOE_ET_BF16) {
        for (size_t i = 0; i < (size_t)l->out * l->in; i++) w[i] = tmoe_bf16_to_f32(l->w[i]);
        return;
    }
    tmoe_dequantize_f32(l->type, l->q, l->scales, l->out, l->in, l->group, w);
}

size_t tmoe_linear_weight_bytes(const tmoe_linear *l) {
    size_t b = tmoe_quant_weight_bytes(l->type, l->out, l->in);
    if (tmoe_etype_is_quant(l->type))
        b += sizeof(tmoe_f16) * tmoe_quant_scale_count(l->out, l->in, l->group);
    return b;
}

void tmoe_linear_free(tmoe_linear *l) {
    if (!l) return;
    free(l->w);
    free(l->q);
    free(l->scales);
    l->w = NULL;
    l->q = NULL;
    l->scales = NULL;
}

int tmoe_expert_alloc(tmoe_expert *e, tmoe_etype t, tmoe_act act, int d_model, int d_ff, int group,
                      tmoe_error *err) {
    memset(e, 0, sizeof *e);
    e->type = t;
    e->act = act;
    e->d_model = d_model;
    e->d_ff = d_ff;
    e->group = group;
    int rows = act == TMOE_ACT_SWIGLU ? 2 * d_ff : d_ff;
    int rc = tmoe_linear_alloc(&e->fc1, t, rows, d_model, group, err);
    if (rc) return tmoe_error_prefix(err, rc, "expert linear_fc1");
    rc = tmoe_linear_alloc(&e->fc2, t, d_model, d_ff, group, err);
    if (rc) {
        tmoe_linear_free(&e->fc1);
        return tmoe_error_prefix(err, rc, "expert linear_fc2");
    }
    return TMOE_OK;
}

void tmoe_expert_free(tmoe_expert *e) {
    if (!e) return;
    tmoe_linear_free(&e->fc1);
    tmoe_linear_free(&e->fc2);
}

size_t tmoe_expert_weight_bytes(const tmoe_expert *e) {
    return tmoe_linear_weight_bytes(&e->fc1) + tmoe_linear_weight_bytes(&e->fc2);
}

tmoe_block_config tmoe_block_config_default(void) {
    tmoe_block_config c = {
        .d_model = 256,
        .n_heads = 4,
        .d_ff = 512,
        .num_experts = 8,
        .top_k = 2,
        .group_size = TMOE_DEFAULT_GROUP,
        .seq_len = 64,
        .expert_type = TMOE_ET_FP16,
        .expert_types = NULL,
        .act = TMOE_ACT_RELU,
        .renormalize = 1,
        .norm_eps = 1e-5f,
        .seed = 1234,
    };
    return c;
}

int tmoe_block_config_validate(const tmoe_block_config *c, tmoe_error *err) {
#define POSITIVE(f)                                                                                \
    if (c->f <= 0) return tmoe_errorf(err, TMOE_EINVAL, #f " = %d: must be positive", c->f)
    POSITIVE(d_model);
    POSITIVE(n_heads);
    POSITIVE(d_ff);
    POSITIVE(num_experts);
    POSITIVE(top_k);
    POSITIVE(seq_len);
#undef POSITIVE
    if (c->d_model % c->n_heads != 0)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "d_model = %d is not divisible by n_heads = %d (choose n_heads that "
                           "divides d_model)",
                           c->d_model, c->n_heads);
    if (c->num_experts > TMOE_MAX_EXPERTS)
        return tmoe_errorf(err, TMOE_EINVAL, "num_experts = %d: at most %d supported",
                           c->num_experts, TMOE_MAX_EXPERTS);
    if (c->top_k > c->num_experts)
        return tmoe_errorf(err, TMOE_EINVAL, "top_k = %d is larger than num_experts = %d", c->top_k,
                           c->num_experts);
    if (c->top_k > TMOE_MAX_TOPK)
        return tmoe_errorf(err, TMOE_EINVAL, "top_k = %d: at most %d supported", c->top_k,
                           TMOE_MAX_TOPK);
    if ((unsigned)c->act >= TMOE_ACT_COUNT)
        return tmoe_errorf(err, TMOE_EINVAL, "unknown activation %d", (int)c->act);
    if (!(c->norm_eps > 0.0f) || !isfinite(c->norm_eps))
        return tmoe_errorf(err, TMOE_EINVAL, "norm_eps = %g: must be a positive finite number",
                           (double)c->norm_eps);
    for (int e = 0; e < c->num_experts; e++) {
        tmoe_etype t = tmoe_block_expert_type(c, e);
        if ((unsigned)t >= TMOE_ET_COUNT)
            return tmoe_errorf(err, TMOE_EINVAL, "expert %d: unknown expert type %d", e, (int)t);
        if (!tmoe_etype_is_quant(t)) continue;
        tmoe_error sub = {0};
        int rows = c->act == TMOE_ACT_SWIGLU ? 2 * c->d_ff : c->d_ff;
        if (tmoe_quant_check_shape(t, rows, c->d_model, c->group_size, &sub) ||
            tmoe_quant_check_shape(t, c->d_model, c->d_ff, c->group_size, &sub))
            return tmoe_errorf(err, TMOE_EINVAL, "expert %d (%s): %s", e, tmoe_etype_name(t),
                               sub.msg);
    }
    return TMOE_OK;
}

tmoe_etype tmoe_block_expert_type(const tmoe_block_config *c, int e) {
    return c->expert_types ? c->expert_types[e] : c->expert_type;
}

int tmoe_block_alloc(const tmoe_block_config *cfg, tmoe_block **out, tmoe_error *err) {
    *out = NULL;
    int rc = tmoe_block_config_validate(cfg, err);
    if (rc) return rc;
    tmoe_block *b = tmoe_calloc(1, sizeof *b, err);
    if (!b) return TMOE_ENOMEM;
    b->cfg = *cfg;
    for (int e = 0; e < cfg->num_experts; e++) b->types[e] = tmoe_block_expert_type(cfg, e);
    b->cfg.expert_types = b->types;
    int D = cfg->d_model, E = cfg->num_experts;
    tmoe_moe *m = &b->moe;
    m->d_model = D;
    m->d_ff = cfg->d_ff;
    m->num_experts = E;
    m->top_k = cfg->top_k;
    m->renormalize = cfg->renormalize;
    b->norm1 = tmoe_malloc(sizeof(float) * (size_t)D, err);
    b->norm2 = tmoe_malloc(sizeof(float) * (size_t)D, err);
    m->experts = tmoe_calloc((size_t)E, sizeof(tmoe_expert), err);
    if (!b->norm1 || !b->norm2 || !m->experts) {
        tmoe_block_free(b);
        return TMOE_ENOMEM;
    }
    if ((rc = tmoe_linear_alloc(&b->wqkv, TMOE_ET_FP16, 3 * D, D, 0, err)) ||
        (rc = tmoe_linear_alloc(&b->wo, TMOE_ET_FP16, D, D, 0, err)) ||
        (rc = tmoe_linear_alloc(&m->gate, TMOE_ET_FP16, E, D, 0, err))) {
        tmoe_block_free(b);
        return rc;
    }
    for (int e = 0; e < E; e++) {
        rc = tmoe_expert_alloc(&m->experts[e], b->types[e], cfg->act, D, cfg->d_ff, cfg->group_size,
                               err);
        if (rc) {
            tmoe_block_free(b);
            return tmoe_error_prefix(err, rc, "expert %d", e);
        }
    }
    *out = b;
    return TMOE_OK;
}

int tmoe_block_create(const tmoe_block_config *cfg, tmoe_block **out, tmoe_error *err) {
    *out = NULL;
    tmoe_block *b;
    int rc = tmoe_block_alloc(cfg, &b, err);
    if (rc) return rc;
    /* Each tensor draws from its own stream so adding a tensor never changes the others. */
    tmoe_rng rng;
    int D = cfg->d_model;
    for (int i = 0; i < D; i++) b->norm1[i] = b->norm2[i] = 1.0f;
    tmoe_rng_seed_stream(&rng, cfg->seed, 1);
    if ((rc = tmoe_linear_init_random(&b->wqkv, &rng, err))) goto fail;
    tmoe_rng_seed_stream(&rng, cfg->seed, 2);
    if ((rc = tmoe_linear_init_random(&b->wo, &rng, err))) goto fail;
    tmoe_rng_seed_stream(&rng, cfg->seed, 3);
    if ((rc = tmoe_linear_init_random(&b->moe.gate, &rng, err))) goto fail;
    for (int e = 0; e < cfg->num_experts; e++) {
        tmoe_rng_seed_stream(&rng, cfg->seed, 100 + 2 * (uint64_t)e);
        if ((rc = tmoe_linear_init_random(&b->moe.experts[e].fc1, &rng, err))) goto fail;
        tmoe_rng_seed_stream(&rng, cfg->seed, 101 + 2 * (uint64_t)e);
        if ((rc = tmoe_linear_init_random(&b->moe.experts[e].fc2, &rng, err))) goto fail;
    }
    *out = b;
    return TMOE_OK;
fail:
    tmoe_block_free(b);
    return rc;
}

void tmoe_block_free(tmoe_block *b) {
    if (!b) return;
    free(b->norm1);
    free(b->norm2);
    tmoe_linear_free(&b->wqkv);
    tmoe_linear_free(&b->wo);
    tmoe_linear_free(&b->moe.gate);
    if (b->moe.experts)
        for (int e = 0; e < b->moe.num_experts; e++) tmoe_expert_free(&b->moe.experts[e]);
    free(b->moe.experts);
    free(b);
}

void tmoe_moe_metrics_reset(tmoe_moe_metrics *m) {
    int32_t *idx = m->topk_idx;
    float *w = m->topk_w;
    memset(m, 0, sizeof *m);
    m->topk_idx = idx;
    m->topk_w = w;
    for (int e = 0; e < TMOE_MAX_EXPERTS; e++) m->expert_ms[e] = NAN;
    for (int o = 0; o < TMOE_OP_COUNT; o++) m->op_ms[o] = NAN;
    m->step_ms = NAN;
    m->predicted_energy_j = NAN;
    for (int t = 0; t < TMOE_ET_COUNT; t++) m->impl_used[t] = -1;
}
