/* Loading a decoder LM from a Hugging Face checkpoint directory: every tensor the config
 * implies, checked for presence and shape, converted from the mapped file (bf16 / fp16 /
 * fp32) into fp32, experts optionally into fp16 / bf16 / q4 / q2. */
#include "thermoe/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MISSING_LISTED 5

typedef struct loader {
    const tmoe_ckpt *ck;
    const char *dir;
    int missing;                             /* count of missing tensors */
    char missing_names[MISSING_LISTED][160]; /* the first ones */
    tmoe_error *err;
} loader;

tmoe_lm_load_opts tmoe_lm_load_opts_default(void) {
    tmoe_lm_load_opts o = {
        .experts_f32 = 1, .expert_type = TMOE_ET_FP16, .group_size = TMOE_DEFAULT_GROUP};
    return o;
}

tmoe_etype tmoe_lm_expert_type(const tmoe_lm_load_opts *o, int e) {
    return o->n_types > 0 && e >= 0 && e < o->n_types ? o->types[e] : o->expert_type;
}

int tmoe_lm_has_copy(const tmoe_lm_load_opts *o, int e) {
    return o->n_copy > 0 && e >= 0 && e < TMOE_MAX_EXPERTS && o->copy[e];
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && used < n; i++)
        used +=
            (size_t)snprintf(buf + used, n - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < n) snprintf(buf + used, n - used, "]");
}

static void to_f32(const tmoe_st_tensor *t, size_t first, size_t n, float *dst) {
    const uint8_t *p = (const uint8_t *)t->data;
    if (t->dtype == TMOE_ST_F32) {
        memcpy(dst, p + first * 4, n * 4); /* the mapping need not be aligned */
        return;
    }
    p += first * 2;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
        dst[i] = t->dtype == TMOE_ST_F16 ? tmoe_f16_to_f32(h) : tmoe_bf16_to_f32(h);
    }
}

/* Find name with exactly this shape and a float dtype. NULL: missing (recorded, the load goes
 * on to list more) or wrong (err set, *bad = 1). */
static const tmoe_st_tensor *find(loader *L, const char *name, int ndim, const int64_t *shape,
                                  int *bad) {
    const char *file = NULL;
    const tmoe_st_tensor *t = tmoe_ckpt_find(L->ck, name, &file);
    if (!t) {
        if (L->missing < MISSING_LISTED)
            snprintf(L->missing_names[L->missing], sizeof L->missing_names[0], "%s", name);
        L->missing++;
        return NULL;
    }
    if (t->dtype != TMOE_ST_F32 && t->dtype != TMOE_ST_F16 && t->dtype != TMOE_ST_BF16) {
        tmoe_errorf(L->err, TMOE_EFORMAT, "%s: tensor '%s': dtype %s, expected F32, F16 or BF16",
                    file, name, tmoe_st_dtype_name(t->dtype));
        *bad = 1;
        return NULL;
    }
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char want[128], got[128];
        shape_str(want, sizeof want, ndim, shape);
        shape_str(got, sizeof got, t->ndim, t->shape);
        tmoe_errorf(L->err, TMOE_EFORMAT,
                    "%s: tensor '%s' has shape %s, but config.json implies %s", file, name, got,
                    want);
        *bad = 1;
        return NULL;
    }
    return t;
}

/* Allocate *dst (numel floats) and fill it from tensor name when present. */
static int load2(loader *L, float **dst, const char *name, int64_t rows, int64_t cols) {
    int64_t shape[2] = {rows, cols};
    int ndim = cols > 0 ? 2 : 1;
    size_t n = (size_t)rows * (size_t)(cols > 0 ? cols : 1);
    *dst = tmoe_malloc(sizeof(float) * n, L->err);
    if (!*dst) return TMOE_ENOMEM;
    int bad = 0;
    const tmoe_st_tensor *t = find(L, name, ndim, shape, &bad);
    if (bad) return TMOE_EFORMAT;
    if (t) to_f32(t, 0, n, *dst);
    return TMOE_OK;
}

static int loadf(loader *L, float **dst, int64_t rows, int64_t cols, const char *fmt, int layer,
                 const char *what) {
    char name[256];
    snprintf(name, sizeof name, fmt, layer, what);
    return load2(L, dst, name, rows, cols);
}

/* A SwiGLU MLP from gate_proj / up_proj / down_proj (or Mixtral's w1 / w3 / w2) at prefix:
 * w13 (2 I, D) = [gate; up] and w2 (D, I), written into caller memory. */
static int load_mlp_into(loader *L, const char *prefix, const char *const names[3], int64_t D,
                         int64_t I, float *w13, float *w2) {
    char name[256];
    int64_t up[2] = {I, D}, down[2] = {D, I};
    float *dsts[3] = {w13, w13 + I * D, w2};
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "%s.%s.weight", prefix, names[i]);
        int bad = 0;
        const tmoe_st_tensor *t = find(L, name, 2, i == 2 ? down : up, &bad);
        if (bad) return TMOE_EFORMAT;
        if (t) to_f32(t, 0, (size_t)(I * D), dsts[i]);
    }
    return TMOE_OK;
}

static const char *const hf_mlp_names[3] = {"gate_proj", "up_proj", "down_proj"};
static const char *const mixtral_names[3] = {"w1", "w3", "w2"};

static int load_attention(loader *L, const tmoe_lm_config *c, int l, tmoe_lm_layer *y) {
    const char *fmt = "model.layers.%d.%s";
    int64_t D = c->d_model, q = (int64_t)c->n_heads * c->head_dim,
            kv = (int64_t)c->n_kv_heads * c->head_dim;
    int rc;
    if ((rc = loadf(L, &y->attn_norm, D, 0, fmt, l, "input_layernorm.weight")) ||
        (rc = loadf(L, &y->mlp_norm, D, 0, fmt, l, "post_attention_layernorm.weight")) ||
        (rc = loadf(L, &y->wq, q, D, fmt, l, "self_attn.q_proj.weight")) ||
        (rc = loadf(L, &y->wk, kv, D, fmt, l, "self_attn.k_proj.weight")) ||
        (rc = loadf(L, &y->wv, kv, D, fmt, l, "self_attn.v_proj.weight")) ||
        (rc = loadf(L, &y->wo, D, q, fmt, l, "self_attn.o_proj.weight")))
        return rc;
    if (c->qkv_bias && ((rc = loadf(L, &y->bq, q, 0, fmt, l, "self_attn.q_proj.bias")) ||
                        (rc = loadf(L, &y->bk, kv, 0, fmt, l, "self_attn.k_proj.bias")) ||
                        (rc = loadf(L, &y->bv, kv, 0, fmt, l, "self_attn.v_proj.bias"))))
        return rc;
    if (c->o_bias && (rc = loadf(L, &y->bo, D, 0, fmt, l, "self_attn.o_proj.bias"))) return rc;
    if (c->qk_norm != TMOE_QK_NORM_NONE) {
        int whole = c->qk_norm == TMOE_QK_NORM_WHOLE;
        if ((rc = loadf(L, &y->q_norm, whole ? q : c->head_dim, 0, fmt, l,
                        "self_attn.q_norm.weight")) ||
            (rc = loadf(L, &y->k_norm, whole ? kv : c->head_dim, 0, fmt, l,
                        "self_attn.k_norm.weight")))
            return rc;
    }
    return TMOE_OK;
}

/* fp32 expert of a layer -> type t (quantized from fp32). */
static int convert_expert(const tmoe_lm_load_opts *o, tmoe_etype t, const float *w13,
                          const float *w2, int D, int I, tmoe_expert *e, tmoe_error *err) {
    int rc = tmoe_expert_alloc(e, t, TMOE_ACT_SWIGLU, D, I, o->group_size, err);
    if (rc) return rc;
    e->fc1.act8 = e->fc2.act8 = o->act8;
    if ((rc = tmoe_linear_set_f32(&e->fc1, w13, err))) return rc;
    return tmoe_linear_set_f32(&e->fc2, w2, err);
}

/* Experts of one layer, per-expert tensors or stacked (experts.gate_up_proj (E, 2I, D),
 * experts.down_proj (E, D, I)), into fp32 (E, 2I, D) / (E, D, I). */
static int load_experts_f32(loader *L, const tmoe_lm_config *c, const char *moe, float *w13,
                            float *w2) {
    int64_t E = c->num_experts, D = c->d_model, I = c->d_ff_expert;
    char name[256];
    snprintf(name, sizeof name, "%s.experts.gate_up_proj", moe);
    if (tmoe_ckpt_find(L->ck, name, NULL)) {
        int64_t s13[3] = {E, 2 * I, D}, s2[3] = {E, D, I};
        int bad = 0;
        const tmoe_st_tensor *t = find(L, name, 3, s13, &bad);
        if (bad) return TMOE_EFORMAT;
        to_f32(t, 0, (size_t)(E * 2 * I * D), w13);
        snprintf(name, sizeof name, "%s.experts.down_proj", moe);
        t = find(L, name, 3, s2, &bad);
        if (bad) return TMOE_EFORMAT;
        if (t) to_f32(t, 0, (size_t)(E * D * I), w2);
        return TMOE_OK;
    }
    const char *const *names = c->family == TMOE_LM_MIXTRAL ? mixtral_names : hf_mlp_names;
    for (int64_t e = 0; e < E; e++) {
        snprintf(name, sizeof name, "%s.experts.%lld", moe, (long long)e);
        int rc = load_mlp_into(L, name, names, D, I, w13 + e * 2 * I * D, w2 + e * D * I);
        if (rc) return rc;
    }
    return TMOE_OK;
}

static int load_moe(loader *L, const tmoe_lm_config *c, const tmoe_lm_load_opts *o, int l,
                    tmoe_lm_layer *y) {
    char moe[160], name[256];
    snprintf(moe, sizeof moe, "model.layers.%d.mlp", l);
    if (c->family == TMOE_LM_MIXTRAL) { /* the hub's name; transformers 5 in memory: mlp */
        snprintf(name, sizeof name, "model.layers.%d.mlp.gate.weight", l);
        if (!tmoe_ckpt_find(L->ck, name, NULL))
            snprintf(moe, sizeof moe, "model.layers.%d.block_sparse_moe", l);
    }
    int64_t E = c->num_experts, D = c->d_model, I = c->d_ff_expert;
    snprintf(name, sizeof name, "%s.gate.weight", moe);
    int rc = load2(L, &y->router, name, E, D);
    if (rc) return rc;
    float *w13 = tmoe_malloc(sizeof(float) * (size_t)(E * 2 * I * D), L->err);
    float *w2 = tmoe_malloc(sizeof(float) * (size_t)(E * D * I), L->err);
    if (!w13 || !w2) {
        free(w13);
        free(w2);
        return TMOE_ENOMEM;
    }
    rc = load_experts_f32(L, c, moe, w13, w2);
    if (rc == TMOE_OK && o->experts_f32) {
        y->ex_w13 = w13;
        y->ex_w2 = w2;
        w13 = w2 = NULL;
    } else if (rc == TMOE_OK && L->missing == 0) {
        y->experts = tmoe_calloc((size_t)E, sizeof(tmoe_expert), L->err);
        if (!y->experts) rc = TMOE_ENOMEM;
        for (int64_t e = 0; rc == TMOE_OK && e < E; e++) {
            rc = convert_expert(o, tmoe_lm_expert_type(o, (int)e), w13 + e * 2 * I * D,
                                w2 + e * D * I, (int)D, (int)I, &y->experts[e], L->err);
            if (rc) rc = tmoe_error_prefix(L->err, rc, "layer %d expert %lld", l, (long long)e);
        }
        if (rc == TMOE_OK && o->n_copy > 0 &&
            !(y->copies = tmoe_calloc((size_t)E, sizeof(tmoe_expert), L->err)))
            rc = TMOE_ENOMEM;
        for (int64_t e = 0; rc == TMOE_OK && o->n_copy > 0 && e < E; e++) {
            if (!o->copy[e]) continue;
            rc = convert_expert(o, o->copy_type, w13 + e * 2 * I * D, w2 + e * D * I, (int)D,
                                (int)I, &y->copies[e], L->err);
            if (rc)
                rc = tmoe_error_prefix(L->err, rc, "layer %d expert %lld's copy", l, (long long)e);
        }
    }
    free(w13);
    free(w2);
    if (rc || c->d_ff_shared == 0) return rc;
    int64_t S = c->d_ff_shared;
    y->sh_w13 = tmoe_malloc(sizeof(float) * (size_t)(2 * S * D), L->err);
    y->sh_w2 = tmoe_malloc(sizeof(float) * (size_t)(D * S), L->err);
    if (!y->sh_w13 || !y->sh_w2) return TMOE_ENOMEM;
    snprintf(name, sizeof name, "%s.shared_expert", moe);
    if ((rc = load_mlp_into(L, name, hf_mlp_names, D, S, y->sh_w13, y->sh_w2))) return rc;
    snprintf(name, sizeof name, "%s.shared_expert_gate.weight", moe);
    return load2(L, &y->sh_gate, name, 1, D);
}

static int load_dense_mlp(loader *L, const tmoe_lm_config *c, int l, tmoe_lm_layer *y) {
    int64_t D = c->d_model, I = c->d_ff;
    y->mlp_w13 = tmoe_malloc(sizeof(float) * (size_t)(2 * I * D), L->err);
    y->mlp_w2 = tmoe_malloc(sizeof(float) * (size_t)(D * I), L->err);
    if (!y->mlp_w13 || !y->mlp_w2) return TMOE_ENOMEM;
    char prefix[160];
    snprintf(prefix, sizeof prefix, "model.layers.%d.mlp", l);
    return load_mlp_into(L, prefix, hf_mlp_names, D, I, y->mlp_w13, y->mlp_w2);
}

/* Can c's experts be of type t (group size group)? what names them in the message. */
static int check_expert_shape(const tmoe_lm_config *c, tmoe_etype t, int group, const char *what,
                              tmoe_error *err) {
    tmoe_error sub = {0};
    if (tmoe_quant_check_shape(t, 2 * c->d_ff_expert, c->d_model, group, &sub) ||
        tmoe_quant_check_shape(t, c->d_model, c->d_ff_expert, group, &sub))
        return tmoe_errorf(err, TMOE_EINVAL, "%s %s (hidden_size %d, expert size %d): %s",
                           tmoe_etype_name(t), what, c->d_model, c->d_ff_expert, sub.msg);
    return TMOE_OK;
}

static int check_opts(const tmoe_lm_config *c, const tmoe_lm_load_opts *o, tmoe_error *err) {
    if (o->n_types > 0 && o->experts_f32)
        return tmoe_errorf(err, TMOE_EINVAL, "one type per expert: not for fp32 experts");
    if (o->n_types > 0 && o->n_types != c->num_experts)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "one type per expert: %d types given for a model of %d experts",
                           o->n_types, c->num_experts);
    int ne = o->n_types > 0 ? o->n_types : 1;
    for (int e = 0; e < ne; e++) {
        tmoe_etype t = tmoe_lm_expert_type(o, e);
        if (o->act8 && (o->experts_f32 || !tmoe_etype_is_quant(t))) {
            const char *tn = o->experts_f32 ? "fp32" : tmoe_etype_name(t);
            return o->n_types > 0
                       ? tmoe_errorf(err, TMOE_EINVAL,
                                     "int8 activations are for q4 or q2 experts (expert %d is %s)",
                                     e, tn)
                       : tmoe_errorf(err, TMOE_EINVAL,
                                     "int8 activations are for q4 or q2 experts (the experts are "
                                     "%s)",
                                     tn);
        }
        if (o->n_types > 0 && t == TMOE_ET_BF16)
            return tmoe_errorf(err, TMOE_EINVAL,
                               "one type per expert: expert %d is bf16 (fp16, q4 or q2 mix; bf16 "
                               "is for every expert)",
                               e);
    }
    if (o->n_copy > 0) {
        int n = 0;
        for (int e = 0; e < TMOE_MAX_EXPERTS; e++) {
            if (!o->copy[e]) continue;
            if (e >= c->num_experts)
                return tmoe_errorf(err, TMOE_EINVAL,
                                   "copies: expert %d has a copy, but the model has %d experts "
                                   "(0..%d)",
                                   e, c->num_experts, c->num_experts - 1);
            n++;
        }
        if (o->experts_f32) return tmoe_errorf(err, TMOE_EINVAL, "copies: not for fp32 experts");
        if (n != o->n_copy)
            return tmoe_errorf(err, TMOE_EINVAL, "copies: n_copy is %d but %d experts are marked",
                               o->n_copy, n);
        tmoe_etype t = o->copy_type;
        if (t != TMOE_ET_FP16 && t != TMOE_ET_Q4 && t != TMOE_ET_Q2)
            return tmoe_errorf(err, TMOE_EINVAL, "copies: the copy type must be fp16, q4 or q2");
        if (o->act8 && !tmoe_etype_is_quant(t))
            return tmoe_errorf(err, TMOE_EINVAL,
                               "int8 activations are for q4 or q2 experts (the copies are %s)",
                               tmoe_etype_name(t));
        int rc =
            tmoe_lm_num_moe_layers(c) > 0
                ? check_expert_shape(c, t, o->group_size, "copies of this model's experts", err)
                : TMOE_OK;
        if (rc) return rc;
    }
    if (o->act8 && o->group_size % TMOE_ACT8_BLOCK)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "int8 activations: the group size %d must be a multiple of %d",
                           o->group_size, TMOE_ACT8_BLOCK);
    if (o->experts_f32 || tmoe_lm_num_moe_layers(c) == 0) return TMOE_OK;
    for (int e = 0; e < ne; e++) {
        tmoe_etype t = tmoe_lm_expert_type(o, e);
        if ((unsigned)t >= TMOE_ET_COUNT)
            return tmoe_errorf(err, TMOE_EINVAL, "unknown expert type %d", (int)t);
        int rc = check_expert_shape(c, t, o->group_size, "experts of this model", err);
        if (rc) return rc;
    }
    return TMOE_OK;
}

static int load_all(loader *L, tmoe_lm *m) {
    const tmoe_lm_config *c = &m->cfg;
    int64_t V = c->vocab_size, D = c->d_model;
    int rc;
    if ((rc = load2(L, &m->embed, "model.embed_tokens.weight", V, D)) ||
        (rc = load2(L, &m->final_norm, "model.norm.weight", D, 0)))
        return rc;
    if (c->tie_embeddings) {
        m->lm_head = m->embed;
    } else if ((rc = load2(L, &m->lm_head, "lm_head.weight", V, D))) {
        return rc;
    }
    for (int l = 0; l < c->n_layers; l++) {
        tmoe_lm_layer *y = &m->layers[l];
        y->is_moe = c->moe_layer[l];
        if ((rc = load_attention(L, c, l, y))) return rc;
        rc = y->is_moe ? load_moe(L, c, &m->opts, l, y) : load_dense_mlp(L, c, l, y);
        if (rc) return rc;
    }
    if (L->missing == 0) return TMOE_OK;
    char list[1024] = "";
    for (int i = 0; i < L->missing && i < MISSING_LISTED; i++) {
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, L->missing_names[i], sizeof list - strlen(list) - 1);
    }
    return tmoe_errorf(L->err, TMOE_EFORMAT,
                       "%s: %d tensor%s that config.json implies %s missing: %s%s", L->dir,
                       L->missing, L->missing == 1 ? "" : "s", L->missing == 1 ? "is" : "are", list,
                       L->missing > MISSING_LISTED ? ", ..." : "");
}

int tmoe_lm_load(const char *dir, const tmoe_lm_load_opts *opts, tmoe_lm **out, tmoe_error *err) {
    *out = NULL;
    tmoe_lm_load_opts o = opts ? *opts : tmoe_lm_load_opts_default();
    tmoe_lm *m = tmoe_calloc(1, sizeof *m, err);
    if (!m) return TMOE_ENOMEM;
    m->opts = o;
    int rc = tmoe_lm_config_read(dir, &m->cfg, err);
    if (rc == TMOE_OK) rc = check_opts(&m->cfg, &o, err);
    if (rc) {
        free(m);
        return rc;
    }
    m->layers = tmoe_calloc((size_t)m->cfg.n_layers, sizeof *m->layers, err);
    tmoe_ckpt *ck = NULL;
    if (!m->layers) rc = TMOE_ENOMEM;
    if (rc == TMOE_OK) rc = tmoe_ckpt_open(dir, &ck, err);
    if (rc == TMOE_OK) {
        loader L = {.ck = ck, .dir = dir, .err = err};
        rc = load_all(&L, m);
        m->file_bytes = tmoe_ckpt_bytes(ck);
        m->shards = tmoe_ckpt_shards(ck);
        snprintf(m->dtype, sizeof m->dtype, "%s", tmoe_ckpt_dtype(ck));
    }
    tmoe_ckpt_close(ck);
    if (rc) {
        tmoe_lm_free(m);
        return rc;
    }
    *out = m;
    return TMOE_OK;
}

static void free_layer(tmoe_lm_layer *y, int E) {
    float *ptrs[] = {y->attn_norm, y->mlp_norm, y->wq,      y->wk,     y->wv,
                     y->bq,        y->bk,       y->bv,      y->q_norm, y->k_norm,
                     y->wo,        y->bo,       y->mlp_w13, y->mlp_w2, y->router,
                     y->ex_w13,    y->ex_w2,    y->sh_w13,  y->sh_w2,  y->sh_gate};
    for (size_t i = 0; i < sizeof ptrs / sizeof *ptrs; i++) free(ptrs[i]);
    if (y->experts)
        for (int e = 0; e < E; e++) tmoe_expert_free(&y->experts[e]);
    free(y->experts);
    if (y->copies)
        for (int e = 0; e < E; e++) tmoe_expert_free(&y->copies[e]);
    free(y->copies);
}

void tmoe_lm_free(tmoe_lm *m) {
    if (!m) return;
    if (m->layers)
        for (int l = 0; l < m->cfg.n_layers; l++) free_layer(&m->layers[l], m->cfg.num_experts);
    free(m->layers);
    if (m->lm_head != m->embed) free(m->lm_head);
    free(m->embed);
    free(m->final_norm);
    free(m);
}

/* Bytes of one typed expert of c (both linears, q4 / q2 scales included). */
static double typed_expert_bytes(const tmoe_lm_config *c, tmoe_etype t, int group) {
    int D = c->d_model, I = c->d_ff_expert;
    double b = (double)(tmoe_quant_weight_bytes(t, 2 * I, D) + tmoe_quant_weight_bytes(t, D, I));
    if (tmoe_etype_is_quant(t))
        b += 2.0 * (double)(tmoe_quant_scale_count(2 * I, D, group) +
                            tmoe_quant_scale_count(D, I, group));
    return b;
}

tmoe_lm_sizes tmoe_lm_sizes_of(const tmoe_lm *m) {
    const tmoe_lm_config *c = &m->cfg;
    tmoe_lm_sizes s = {0};
    int64_t D = c->d_model, V = c->vocab_size, q = (int64_t)c->n_heads * c->head_dim,
            kv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t attn = 2 * q * D + 2 * kv * D + 2 * D;
    int64_t expert = 3 * D * c->d_ff_expert, dense = 3 * D * c->d_ff;
    int64_t shared = c->d_ff_shared ? 3 * D * c->d_ff_shared + D : 0;
    /* bytes of one expert, the mean over the experts where each has its own type */
    double ebytes = 0.0;
    int ne = m->opts.n_types > 0 ? m->opts.n_types : 1;
    for (int e = 0; e < ne; e++) {
        double b = m->opts.experts_f32 ? 4.0 * (double)expert
                                       : typed_expert_bytes(c, tmoe_lm_expert_type(&m->opts, e),
                                                            m->opts.group_size);
        ebytes += b / ne;
    }
    /* the copies: held beside the experts (weight bytes), read instead of them when run */
    double cbytes = 0.0;
    for (int e = 0; !m->opts.experts_f32 && e < c->num_experts; e++)
        if (tmoe_lm_has_copy(&m->opts, e))
            cbytes += typed_expert_bytes(c, m->opts.copy_type, m->opts.group_size);
    int64_t head = c->tie_embeddings ? 0 : V * D;
    s.params = V * D + head + D;
    s.active_params = D + V * D + D; /* one embedding row, the head, the final norm */
    s.weight_bytes = 4.0 * (double)(V * D + head + D);
    s.active_bytes = 4.0 * (double)(D + V * D + D);
    for (int l = 0; l < c->n_layers; l++) {
        int64_t fixed = attn + (c->moe_layer[l] ? (int64_t)c->num_experts * D + shared : dense);
        s.params += fixed;
        s.active_params += fixed;
        s.weight_bytes += 4.0 * (double)fixed;
        s.active_bytes += 4.0 * (double)fixed;
        if (!c->moe_layer[l]) continue;
        s.params += c->num_experts * expert;
        s.expert_params += c->num_experts * expert;
        s.active_params += c->top_k * expert;
        s.weight_bytes += c->num_experts * ebytes + cbytes;
        s.active_bytes += c->top_k * ebytes;
    }
    s.kv_bytes_per_token = 2.0 * 4.0 * (double)kv * c->n_layers;
    return s;
}
