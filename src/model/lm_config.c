/* config.json of a Hugging Face MoE checkpoint -> tmoe_lm_config, with the defaults of
 * transformers' own config classes (MixtralConfig, OlmoeConfig, Qwen2MoeConfig,
 * Qwen3MoeConfig) for fields a file leaves out. Reads both the hub's older files (rope_theta
 * at the top level) and what transformers 5 writes (rope_parameters). */
#include "thermoe/model.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const family_names[TMOE_LM_FAMILY_COUNT] = {"mixtral", "olmoe", "qwen2_moe",
                                                               "qwen3_moe"};

const char *tmoe_lm_family_name(tmoe_lm_family f) {
    return (unsigned)f < TMOE_LM_FAMILY_COUNT ? family_names[f] : "?";
}

int tmoe_lm_family_parse(const char *s, tmoe_lm_family *out) {
    for (int i = 0; i < TMOE_LM_FAMILY_COUNT; i++)
        if (s && strcmp(s, family_names[i]) == 0) {
            *out = (tmoe_lm_family)i;
            return 0;
        }
    return -1;
}

/* The defaults of transformers 5's config classes, per family. */
typedef struct family_defaults {
    int n_kv_heads; /* -1: = num_attention_heads */
    int d_ff, d_ff_expert, d_ff_shared, num_experts, top_k, max_positions;
    double rms_eps, rope_theta;
} family_defaults;

static const family_defaults defaults[TMOE_LM_FAMILY_COUNT] = {
    [TMOE_LM_MIXTRAL] = {8, 14336, 14336, 0, 8, 2, 4096 * 32, 1e-5, 1e6},
    [TMOE_LM_OLMOE] = {-1, 2048, 2048, 0, 64, 8, 4096, 1e-5, 1e4},
    [TMOE_LM_QWEN2_MOE] = {16, 5632, 1408, 5632, 60, 4, 32768, 1e-6, 1e4},
    [TMOE_LM_QWEN3_MOE] = {4, 6144, 768, 0, 128, 8, 32768, 1e-6, 1e4},
};

typedef struct cfg_ctx {
    json_t *root;
    const char *path;
    tmoe_error *err;
} cfg_ctx;

/* An integer field: absent (or null when null_ok) -> def; present -> an integer in
 * [min, max]. */
static int get_int(cfg_ctx *x, const char *key, int required, long long def, long long min,
                   long long max, int *out) {
    json_t *v = json_object_get(x->root, key);
    if (!v || json_is_null(v)) {
        if (required)
            return tmoe_errorf(x->err, TMOE_EFORMAT, "%s: field '%s' is missing", x->path, key);
        *out = (int)def;
        return TMOE_OK;
    }
    if (!json_is_integer(v))
        return tmoe_errorf(x->err, TMOE_EFORMAT, "%s: field '%s' must be an integer", x->path, key);
    long long i = json_integer_value(v);
    if (i < min || i > max)
        return tmoe_errorf(x->err, TMOE_EFORMAT, "%s: field '%s' = %lld: expected %lld..%lld",
                           x->path, key, i, min, max);
    *out = (int)i;
    return TMOE_OK;
}

static int get_num(cfg_ctx *x, json_t *obj, const char *key, double def, double *out) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return TMOE_OK;
    }
    if (!json_is_number(v))
        return tmoe_errorf(x->err, TMOE_EFORMAT, "%s: field '%s' must be a number", x->path, key);
    *out = json_number_value(v);
    if (!isfinite(*out))
        return tmoe_errorf(x->err, TMOE_EFORMAT, "%s: field '%s' is not finite", x->path, key);
    return TMOE_OK;
}

static int get_bool(cfg_ctx *x, const char *key, int def, int *out) {
    json_t *v = json_object_get(x->root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return TMOE_OK;
    }
    if (!json_is_boolean(v))
        return tmoe_errorf(x->err, TMOE_EFORMAT, "%s: field '%s' must be true or false", x->path,
                           key);
    *out = json_is_true(v);
    return TMOE_OK;
}

/* rope_type must be absent or "default": scaled RoPE variants are not implemented. */
static int check_rope_type(cfg_ctx *x, json_t *obj, const char *field) {
    const char *keys[2] = {"rope_type", "type"};
    for (int i = 0; i < 2; i++) {
        json_t *t = json_object_get(obj, keys[i]);
        if (t && !(json_is_string(t) && strcmp(json_string_value(t), "default") == 0))
            return tmoe_errorf(x->err, TMOE_ENOTSUP,
                               "%s: %s.%s = %s: only the default RoPE is supported (no scaled "
                               "variants)",
                               x->path, field, keys[i],
                               json_is_string(t) ? json_string_value(t) : "(not a string)");
    }
    return TMOE_OK;
}

static int read_rope(cfg_ctx *x, double def_theta, double *theta) {
    int rc = get_num(x, x->root, "rope_theta", def_theta, theta);
    if (rc) return rc;
    json_t *rs = json_object_get(x->root, "rope_scaling");
    if (rs && !json_is_null(rs)) {
        if (!json_is_object(rs))
            return tmoe_errorf(x->err, TMOE_EFORMAT, "%s: field 'rope_scaling' must be an object",
                               x->path);
        if ((rc = check_rope_type(x, rs, "rope_scaling"))) return rc;
    }
    json_t *rp = json_object_get(x->root, "rope_parameters");
    if (!rp || json_is_null(rp)) return TMOE_OK;
    if (!json_is_object(rp))
        return tmoe_errorf(x->err, TMOE_EFORMAT, "%s: field 'rope_parameters' must be an object",
                           x->path);
    if ((rc = check_rope_type(x, rp, "rope_parameters"))) return rc;
    double prf;
    if ((rc = get_num(x, rp, "partial_rotary_factor", 1.0, &prf))) return rc;
    if (prf != 1.0)
        return tmoe_errorf(x->err, TMOE_ENOTSUP,
                           "%s: rope_parameters.partial_rotary_factor = %g: only 1 is supported",
                           x->path, prf);
    if ((rc = get_num(x, rp, "rope_theta", *theta, theta))) return rc;
    if (!(*theta > 1.0))
        return tmoe_errorf(x->err, TMOE_EFORMAT, "%s: rope_theta = %g: must be above 1", x->path,
                           *theta);
    return TMOE_OK;
}

/* Which layers are MoE: Qwen's mlp_only_layers and decoder_sparse_step; all for the others. */
static int read_layer_kinds(cfg_ctx *x, tmoe_lm_config *c) {
    memset(c->moe_layer, 1, sizeof c->moe_layer);
    if (c->family != TMOE_LM_QWEN2_MOE && c->family != TMOE_LM_QWEN3_MOE) return TMOE_OK;
    int step, rc = get_int(x, "decoder_sparse_step", 0, 1, 1, 1 << 20, &step);
    if (rc) return rc;
    for (int l = 0; l < c->n_layers; l++) c->moe_layer[l] = (l + 1) % step == 0;
    json_t *only = json_object_get(x->root, "mlp_only_layers");
    if (!only || json_is_null(only)) return TMOE_OK;
    if (!json_is_array(only))
        return tmoe_errorf(x->err, TMOE_EFORMAT,
                           "%s: field 'mlp_only_layers' must be a list of layer indices", x->path);
    size_t i;
    json_t *v;
    json_array_foreach(only, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= c->n_layers)
            return tmoe_errorf(x->err, TMOE_EFORMAT,
                               "%s: mlp_only_layers[%zu]: expected a layer index 0..%d", x->path, i,
                               c->n_layers - 1);
        c->moe_layer[json_integer_value(v)] = 0;
    }
    return TMOE_OK;
}

/* Sliding-window attention: Mixtral's (a window over the positions) is implemented; Qwen's
 * per-layer windows are not. */
static int read_window(cfg_ctx *x, tmoe_lm_config *c) {
    c->sliding_window = 0;
    int rc;
    if (c->family == TMOE_LM_MIXTRAL)
        return get_int(x, "sliding_window", 0, 0, 1, INT32_MAX, &c->sliding_window);
    if (c->family == TMOE_LM_QWEN2_MOE || c->family == TMOE_LM_QWEN3_MOE) {
        int use;
        if ((rc = get_bool(x, "use_sliding_window", 0, &use))) return rc;
        if (use)
            return tmoe_errorf(x->err, TMOE_ENOTSUP,
                               "%s: use_sliding_window = true: Qwen's sliding-window layers are "
                               "not supported",
                               x->path);
    }
    json_t *lt = json_object_get(x->root, "layer_types");
    if (lt && json_is_array(lt)) {
        size_t i;
        json_t *v;
        json_array_foreach(lt, i, v) {
            if (!json_is_string(v) || strcmp(json_string_value(v), "full_attention") != 0)
                return tmoe_errorf(x->err, TMOE_ENOTSUP,
                                   "%s: layer_types[%zu] is not \"full_attention\": only full "
                                   "attention layers are supported",
                                   x->path, i);
        }
    }
    return TMOE_OK;
}

/* The expert count is "num_experts" or "num_local_experts" (transformers maps one onto the
 * other and writes either). */
static int read_num_experts(cfg_ctx *x, int def, int *out) {
    int a, b, rc;
    if ((rc = get_int(x, "num_experts", 0, -1, 1, TMOE_MAX_EXPERTS, &a)) ||
        (rc = get_int(x, "num_local_experts", 0, -1, 1, TMOE_MAX_EXPERTS, &b)))
        return tmoe_error_prefix(x->err, rc, "(at most %d experts are supported)",
                                 TMOE_MAX_EXPERTS);
    if (a > 0 && b > 0 && a != b)
        return tmoe_errorf(x->err, TMOE_EFORMAT,
                           "%s: num_experts = %d and num_local_experts = %d disagree", x->path, a,
                           b);
    *out = a > 0 ? a : b > 0 ? b : def;
    return TMOE_OK;
}

static int read_attention(cfg_ctx *x, tmoe_lm_config *c) {
    const family_defaults *d = &defaults[c->family];
    int rc, def_kv = d->n_kv_heads < 0 ? c->n_heads : d->n_kv_heads;
    if ((rc = get_int(x, "num_key_value_heads", 0, def_kv, 1, c->n_heads, &c->n_kv_heads)))
        return rc;
    if (c->n_heads % c->n_kv_heads)
        return tmoe_errorf(x->err, TMOE_EFORMAT,
                           "%s: num_attention_heads = %d is not a multiple of "
                           "num_key_value_heads = %d",
                           x->path, c->n_heads, c->n_kv_heads);
    if ((rc = get_int(x, "head_dim", 0, c->d_model / c->n_heads, 2, 1 << 16, &c->head_dim)))
        return rc;
    if (c->head_dim % 2)
        return tmoe_errorf(x->err, TMOE_EFORMAT, "%s: head_dim = %d: RoPE needs an even head_dim",
                           x->path, c->head_dim);
    if (c->family == TMOE_LM_OLMOE && c->head_dim * c->n_heads != c->d_model)
        return tmoe_errorf(x->err, TMOE_ENOTSUP,
                           "%s: head_dim = %d: OLMoE's q_norm spans hidden_size, so head_dim "
                           "must be hidden_size / num_attention_heads = %d",
                           x->path, c->head_dim, c->d_model / c->n_heads);
    c->qk_norm = c->family == TMOE_LM_OLMOE       ? TMOE_QK_NORM_WHOLE
                 : c->family == TMOE_LM_QWEN3_MOE ? TMOE_QK_NORM_PER_HEAD
                                                  : TMOE_QK_NORM_NONE;
    c->qkv_bias = c->o_bias = 0;
    if (c->family == TMOE_LM_QWEN2_MOE) {
        if ((rc = get_bool(x, "qkv_bias", 1, &c->qkv_bias))) return rc;
    } else if (c->family != TMOE_LM_MIXTRAL) {
        if ((rc = get_bool(x, "attention_bias", 0, &c->qkv_bias))) return rc;
        c->o_bias = c->qkv_bias;
    }
    double clip = 0.0;
    if (c->family == TMOE_LM_OLMOE && (rc = get_num(x, x->root, "clip_qkv", 0.0, &clip))) return rc;
    if (clip < 0.0)
        return tmoe_errorf(x->err, TMOE_EFORMAT, "%s: clip_qkv = %g: must be positive", x->path,
                           clip);
    c->clip_qkv = (float)clip;
    return read_window(x, c);
}

static int read_mlp(cfg_ctx *x, tmoe_lm_config *c) {
    const family_defaults *d = &defaults[c->family];
    int rc;
    if ((rc = get_int(x, "intermediate_size", 0, d->d_ff, 1, INT32_MAX, &c->d_ff))) return rc;
    c->d_ff_expert = c->d_ff;
    c->d_ff_shared = 0;
    if (c->family == TMOE_LM_QWEN2_MOE || c->family == TMOE_LM_QWEN3_MOE)
        if ((rc = get_int(x, "moe_intermediate_size", 0, d->d_ff_expert, 1, INT32_MAX,
                          &c->d_ff_expert)))
            return rc;
    if (c->family == TMOE_LM_QWEN2_MOE &&
        (rc = get_int(x, "shared_expert_intermediate_size", 0, d->d_ff_shared, 0, INT32_MAX,
                      &c->d_ff_shared)))
        return rc;
    if ((rc = read_num_experts(x, d->num_experts, &c->num_experts))) return rc;
    if ((rc = get_int(x, "num_experts_per_tok", 0, d->top_k, 1, TMOE_MAX_TOPK, &c->top_k)))
        return rc;
    if (c->top_k > c->num_experts)
        return tmoe_errorf(x->err, TMOE_EFORMAT,
                           "%s: num_experts_per_tok = %d is larger than the %d experts", x->path,
                           c->top_k, c->num_experts);
    /* Mixtral always renormalises; the others follow norm_topk_prob (default false) */
    c->norm_topk_prob = 1;
    if (c->family != TMOE_LM_MIXTRAL && (rc = get_bool(x, "norm_topk_prob", 0, &c->norm_topk_prob)))
        return rc;
    json_t *act = json_object_get(x->root, "hidden_act");
    if (act && !(json_is_string(act) && strcmp(json_string_value(act), "silu") == 0))
        return tmoe_errorf(x->err, TMOE_ENOTSUP,
                           "%s: hidden_act = %s: only silu (SwiGLU experts) is supported", x->path,
                           json_is_string(act) ? json_string_value(act) : "(not a string)");
    return read_layer_kinds(x, c);
}

static int parse_root(cfg_ctx *x, tmoe_lm_config *c) {
    json_t *mt = json_object_get(x->root, "model_type");
    if (!mt || !json_is_string(mt))
        return tmoe_errorf(x->err, TMOE_EFORMAT,
                           "%s: field 'model_type' is missing or not a string", x->path);
    if (tmoe_lm_family_parse(json_string_value(mt), &c->family))
        return tmoe_errorf(x->err, TMOE_ENOTSUP,
                           "%s: model_type '%s' is not supported (supported: mixtral, olmoe, "
                           "qwen2_moe, qwen3_moe; docs/models.md)",
                           x->path, json_string_value(mt));
    const family_defaults *d = &defaults[c->family];
    int rc;
    if ((rc = get_int(x, "vocab_size", 1, 0, 1, INT32_MAX, &c->vocab_size)) ||
        (rc = get_int(x, "hidden_size", 1, 0, 1, 1 << 20, &c->d_model)) ||
        (rc = get_int(x, "num_hidden_layers", 1, 0, 1, TMOE_LM_MAX_LAYERS, &c->n_layers)) ||
        (rc = get_int(x, "num_attention_heads", 1, 0, 1, 1 << 12, &c->n_heads)) ||
        (rc = get_int(x, "max_position_embeddings", 0, d->max_positions, 1, INT32_MAX,
                      &c->max_positions)) ||
        (rc = get_bool(x, "tie_word_embeddings", 0, &c->tie_embeddings)))
        return rc;
    double eps = 0.0;
    if ((rc = get_num(x, x->root, "rms_norm_eps", d->rms_eps, &eps))) return rc;
    if (!(eps > 0.0))
        return tmoe_errorf(x->err, TMOE_EFORMAT, "%s: rms_norm_eps = %g: must be positive", x->path,
                           eps);
    c->rms_eps = (float)eps;
    if ((rc = read_rope(x, d->rope_theta, &c->rope_theta))) return rc;
    if ((rc = read_attention(x, c))) return rc;
    return read_mlp(x, c);
}

int tmoe_lm_config_parse(const char *text, const char *path, tmoe_lm_config *c, tmoe_error *err) {
    memset(c, 0, sizeof *c);
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    if (!root)
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: line %d: not valid JSON: %s", path, je.line,
                           je.text);
    int rc;
    if (!json_is_object(root)) {
        rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: expected a JSON object", path);
    } else {
        cfg_ctx x = {root, path, err};
        rc = parse_root(&x, c);
    }
    json_decref(root);
    return rc;
}

int tmoe_lm_config_read(const char *dir, tmoe_lm_config *c, tmoe_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = tmoe_file_read_all(path, 16u << 20, NULL, err);
    if (!text) return err ? err->code : TMOE_EIO;
    int rc = tmoe_lm_config_parse(text, path, c, err);
    free(text);
    return rc;
}

int tmoe_lm_num_moe_layers(const tmoe_lm_config *c) {
    int n = 0;
    for (int l = 0; l < c->n_layers; l++) n += c->moe_layer[l];
    return n;
}
