/* A decoder LM with random weights built in memory from a config (tmoe_lm_random in
 * thermoe/model.h): for the CUDA tests at shapes the reference checkpoints do not have and
 * for benchmarks of real model shapes without a checkpoint file. */
#include "thermoe/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* n values uniform in [-a, a) (+ center), or NULL on ENOMEM. */
static float *rnd(tmoe_rng *g, size_t n, float a, float center, int *ok, tmoe_error *err) {
    if (!*ok) return NULL;
    float *p = tmoe_malloc(sizeof(float) * (n ? n : 1), err);
    if (!p) {
        *ok = 0;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) p[i] = center + tmoe_rng_uniform_sym(g, a);
    return p;
}

int tmoe_lm_random(const tmoe_lm_config *c, const tmoe_lm_load_opts *opts, uint64_t seed,
                   tmoe_lm **out, tmoe_error *err) {
    *out = NULL;
    tmoe_lm *m = tmoe_calloc(1, sizeof *m, err);
    if (!m) return TMOE_ENOMEM;
    m->cfg = *c;
    m->opts = opts ? *opts : tmoe_lm_load_opts_default();
    snprintf(m->dtype, sizeof m->dtype, "RANDOM");
    tmoe_rng g;
    tmoe_rng_seed(&g, seed);
    size_t D = (size_t)c->d_model, V = (size_t)c->vocab_size, E = (size_t)c->num_experts;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t I = (size_t)c->d_ff_expert, F = (size_t)c->d_ff, S = (size_t)c->d_ff_shared;
    float aD = 1.0f / sqrtf((float)D);
    int ok = 1;
    m->embed = rnd(&g, V * D, 1.0f, 0.0f, &ok, err);
    m->final_norm = rnd(&g, D, 0.1f, 1.0f, &ok, err);
    m->lm_head = c->tie_embeddings ? m->embed : rnd(&g, V * D, aD, 0.0f, &ok, err);
    m->layers = ok ? tmoe_calloc((size_t)c->n_layers, sizeof *m->layers, err) : NULL;
    ok = ok && m->layers;
    for (int l = 0; ok && l < c->n_layers; l++) {
        tmoe_lm_layer *y = &m->layers[l];
        y->is_moe = c->moe_layer[l];
        y->attn_norm = rnd(&g, D, 0.1f, 1.0f, &ok, err);
        y->mlp_norm = rnd(&g, D, 0.1f, 1.0f, &ok, err);
        y->wq = rnd(&g, qd * D, aD, 0.0f, &ok, err);
        y->wk = rnd(&g, kvd * D, aD, 0.0f, &ok, err);
        y->wv = rnd(&g, kvd * D, aD, 0.0f, &ok, err);
        if (c->qkv_bias) {
            y->bq = rnd(&g, qd, 0.1f, 0.0f, &ok, err);
            y->bk = rnd(&g, kvd, 0.1f, 0.0f, &ok, err);
            y->bv = rnd(&g, kvd, 0.1f, 0.0f, &ok, err);
        }
        if (c->qk_norm != TMOE_QK_NORM_NONE) {
            int whole = c->qk_norm == TMOE_QK_NORM_WHOLE;
            y->q_norm = rnd(&g, whole ? qd : (size_t)c->head_dim, 0.1f, 1.0f, &ok, err);
            y->k_norm = rnd(&g, whole ? kvd : (size_t)c->head_dim, 0.1f, 1.0f, &ok, err);
        }
        y->wo = rnd(&g, D * qd, 1.0f / sqrtf((float)qd), 0.0f, &ok, err);
        if (c->o_bias) y->bo = rnd(&g, D, 0.1f, 0.0f, &ok, err);
        if (!y->is_moe) {
            y->mlp_w13 = rnd(&g, 2 * F * D, aD, 0.0f, &ok, err);
            y->mlp_w2 = rnd(&g, D * F, 1.0f / sqrtf((float)F), 0.0f, &ok, err);
            continue;
        }
        y->router = rnd(&g, E * D, aD, 0.0f, &ok, err);
        if (S) {
            y->sh_w13 = rnd(&g, 2 * S * D, aD, 0.0f, &ok, err);
            y->sh_w2 = rnd(&g, D * S, 1.0f / sqrtf((float)S), 0.0f, &ok, err);
            y->sh_gate = rnd(&g, D, aD, 0.0f, &ok, err);
        }
        if (m->opts.experts_f32) {
            y->ex_w13 = rnd(&g, E * 2 * I * D, aD, 0.0f, &ok, err);
            y->ex_w2 = rnd(&g, E * D * I, 1.0f / sqrtf((float)I), 0.0f, &ok, err);
            continue;
        }
        y->experts = ok ? tmoe_calloc(E, sizeof *y->experts, err) : NULL;
        ok = ok && y->experts;
        for (size_t e = 0; ok && e < E; e++) {
            tmoe_expert *x = &y->experts[e];
            ok =
                tmoe_expert_alloc(x, tmoe_lm_expert_type(&m->opts, (int)e), TMOE_ACT_SWIGLU,
                                  c->d_model, c->d_ff_expert, m->opts.group_size, err) == TMOE_OK &&
                tmoe_linear_init_random(&x->fc1, &g, err) == TMOE_OK &&
                tmoe_linear_init_random(&x->fc2, &g, err) == TMOE_OK;
            if (ok) x->fc1.act8 = x->fc2.act8 = m->opts.act8;
        }
        /* copies: quantized from the expert as generated (a checkpoint's come from its own
         * weights) */
        if (ok && m->opts.n_copy > 0)
            ok = (y->copies = tmoe_calloc(E, sizeof *y->copies, err)) != NULL;
        float *f = ok && m->opts.n_copy > 0 ? tmoe_malloc(sizeof(float) * 2 * I * D, err) : NULL;
        ok = ok && (m->opts.n_copy == 0 || f);
        for (size_t e = 0; ok && m->opts.n_copy > 0 && e < E; e++) {
            if (!tmoe_lm_has_copy(&m->opts, (int)e)) continue;
            tmoe_expert *x = &y->copies[e];
            ok = tmoe_expert_alloc(x, m->opts.copy_type, TMOE_ACT_SWIGLU, c->d_model,
                                   c->d_ff_expert, m->opts.group_size, err) == TMOE_OK;
            for (int j = 0; ok && j < 2; j++) {
                tmoe_linear_to_f32(j ? &y->experts[e].fc2 : &y->experts[e].fc1, f);
                ok = tmoe_linear_set_f32(j ? &x->fc2 : &x->fc1, f, err) == TMOE_OK;
            }
            if (ok) x->fc1.act8 = x->fc2.act8 = m->opts.act8;
        }
        free(f);
    }
    if (!ok) {
        tmoe_lm_free(m);
        return err && err->code ? err->code : TMOE_ENOMEM;
    }
    *out = m;
    return TMOE_OK;
}
