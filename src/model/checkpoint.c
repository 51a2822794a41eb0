/* Saving and loading a transformer block as safetensors, with our own tensor names or the
 * names of a Mixtral-style checkpoint (docs/safetensors.md has both name maps). */
#include "thermoe/model.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const layout_names[TMOE_LAYOUT_COUNT] = {"auto", "thermoe", "mixtral"};

const char *tmoe_layout_name(tmoe_layout l) {
    return (unsigned)l < TMOE_LAYOUT_COUNT ? layout_names[l] : "?";
}

int tmoe_layout_parse(const char *s, tmoe_layout *out) {
    for (int i = 0; i < TMOE_LAYOUT_COUNT; i++)
        if (s && strcmp(s, layout_names[i]) == 0) {
            *out = (tmoe_layout)i;
            return 0;
        }
    return -1;
}

/* ---- save --------------------------------------------------------------------------- */
static int add_linear(tmoe_st_writer *w, const char *prefix, const tmoe_linear *l,
                      tmoe_error *err) {
    char name[256];
    if (!tmoe_etype_is_quant(l->type)) {
        snprintf(name, sizeof name, "%s.weight", prefix);
        int64_t shape[2] = {l->out, l->in};
        return tmoe_st_writer_add(w, name, l->type == TMOE_ET_BF16 ? TMOE_ST_BF16 : TMOE_ST_F16, 2,
                                  shape, l->w, err);
    }
    snprintf(name, sizeof name, "%s.qweight", prefix);
    int64_t qs[2] = {l->out, (int64_t)l->in * tmoe_etype_bits(l->type) / 8};
    int rc = tmoe_st_writer_add(w, name, TMOE_ST_U8, 2, qs, l->q, err);
    if (rc) return rc;
    snprintf(name, sizeof name, "%s.scales", prefix);
    int64_t ss[2] = {l->out, l->in / l->group};
    return tmoe_st_writer_add(w, name, TMOE_ST_F16, 2, ss, l->scales, err);
}

static int meta_int(tmoe_st_writer *w, const char *key, long long v, tmoe_error *err) {
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", v);
    return tmoe_st_writer_meta(w, key, buf, err);
}

int tmoe_block_save(const tmoe_block *b, const char *path, tmoe_error *err) {
    tmoe_st_writer *w;
    int rc = tmoe_st_writer_create(&w, err);
    if (rc) return rc;
    const tmoe_block_config *c = &b->cfg;
    int64_t D = c->d_model;
    char types[TMOE_MAX_EXPERTS * 5 + 1] = "", eps[32], seed[32], name[128];
    for (int e = 0; e < c->num_experts; e++) {
        strcat(types, e ? "," : "");
        strcat(types, tmoe_etype_name(b->types[e]));
    }
    snprintf(eps, sizeof eps, "%.9g", (double)c->norm_eps);
    snprintf(seed, sizeof seed, "%" PRIu64, c->seed);
    if ((rc = tmoe_st_writer_meta(w, "format", TMOE_BLOCK_FORMAT, err)) ||
        (rc = meta_int(w, "d_model", c->d_model, err)) ||
        (rc = meta_int(w, "n_heads", c->n_heads, err)) ||
        (rc = meta_int(w, "d_ff", c->d_ff, err)) ||
        (rc = meta_int(w, "num_experts", c->num_experts, err)) ||
        (rc = meta_int(w, "top_k", c->top_k, err)) ||
        (rc = meta_int(w, "group_size", c->group_size, err)) ||
        (rc = meta_int(w, "seq_len", c->seq_len, err)) ||
        (rc = tmoe_st_writer_meta(w, "act", tmoe_act_name(c->act), err)) ||
        (rc = meta_int(w, "renormalize", c->renormalize != 0, err)) ||
        (rc = tmoe_st_writer_meta(w, "norm_eps", eps, err)) ||
        (rc = tmoe_st_writer_meta(w, "seed", seed, err)) ||
        (rc = tmoe_st_writer_meta(w, "expert_types", types, err)))
        goto done;
    if ((rc = tmoe_st_writer_add(w, "norm1.weight", TMOE_ST_F32, 1, &D, b->norm1, err)) ||
        (rc = add_linear(w, "attn.wqkv", &b->wqkv, err)) ||
        (rc = add_linear(w, "attn.wo", &b->wo, err)) ||
        (rc = tmoe_st_writer_add(w, "norm2.weight", TMOE_ST_F32, 1, &D, b->norm2, err)) ||
        (rc = add_linear(w, "moe.gate", &b->moe.gate, err)))
        goto done;
    for (int e = 0; e < c->num_experts; e++) {
        snprintf(name, sizeof name, "moe.experts.%d.fc1", e);
        if ((rc = add_linear(w, name, &b->moe.experts[e].fc1, err))) goto done;
        snprintf(name, sizeof name, "moe.experts.%d.fc2", e);
        if ((rc = add_linear(w, name, &b->moe.experts[e].fc2, err))) goto done;
    }
    rc = tmoe_st_writer_write(w, path, err);
done:
    tmoe_st_writer_free(w);
    return rc;
}

/* ---- config from a file -------------------------------------------------------------- */
static int meta_get_int(const tmoe_st_file *f, const char *key, long long min, long long max,
                        long long *out, tmoe_error *err) {
    const char *s = tmoe_st_meta(f, key);
    if (!s)
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: __metadata__ has no '%s' (needed by the %s "
                           "layout)",
                           tmoe_st_path(f), key, TMOE_BLOCK_FORMAT);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: __metadata__ '%s' = '%s': expected an integer in [%lld, %lld]",
                           tmoe_st_path(f), key, s, min, max);
    *out = v;
    return TMOE_OK;
}

static int thermoe_config(const tmoe_st_file *f, tmoe_block_config *c, tmoe_etype *types,
                          tmoe_error *err) {
    const char *path = tmoe_st_path(f);
    if (!types)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "%s: a thermoe block file lists per-expert types: "
                           "pass a types array",
                           path);
    long long v[8];
    static const char *const keys[8] = {"d_model", "n_heads",    "d_ff",    "num_experts",
                                        "top_k",   "group_size", "seq_len", "renormalize"};
    for (int i = 0; i < 8; i++) {
        int rc = meta_get_int(f, keys[i], i == 7 ? 0 : 1, i == 7 ? 1 : INT32_MAX, &v[i], err);
        if (rc) return rc;
    }
    const char *act = tmoe_st_meta(f, "act"), *eps = tmoe_st_meta(f, "norm_eps"),
               *seed = tmoe_st_meta(f, "seed"), *ts = tmoe_st_meta(f, "expert_types");
    if (!act || tmoe_act_parse(act, &c->act))
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: __metadata__ 'act' = '%s': expected relu or "
                           "swiglu",
                           path, act ? act : "(missing)");
    char *end;
    errno = 0;
    float e = eps ? strtof(eps, &end) : NAN;
    if (!eps || errno || end == eps || *end || !(e > 0.0f) || !isfinite(e))
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: __metadata__ 'norm_eps' = '%s': expected a "
                           "positive number",
                           path, eps ? eps : "(missing)");
    errno = 0;
    unsigned long long sd = seed ? strtoull(seed, &end, 10) : 0;
    if (!seed || errno || end == seed || *end || seed[0] == '-')
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: __metadata__ 'seed' = '%s': expected a "
                           "non-negative integer",
                           path, seed ? seed : "(missing)");
    if (v[3] > TMOE_MAX_EXPERTS)
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: __metadata__ num_experts = %lld: at most %d",
                           path, v[3], TMOE_MAX_EXPERTS);
    if (!ts) return tmoe_errorf(err, TMOE_EFORMAT, "%s: __metadata__ has no 'expert_types'", path);
    int n = 0;
    for (const char *p = ts; *p;) {
        const char *q = strchr(p, ',');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        char tok[16];
        if (n >= v[3] || len >= sizeof tok)
            return tmoe_errorf(err, TMOE_EFORMAT,
                               "%s: __metadata__ expert_types '%s': more than "
                               "num_experts = %lld entries or an unknown type",
                               path, ts, v[3]);
        memcpy(tok, p, len);
        tok[len] = '\0';
        if (tmoe_etype_parse(tok, &types[n]))
            return tmoe_errorf(err, TMOE_EFORMAT,
                               "%s: __metadata__ expert_types entry %d '%s': "
                               "expected fp16, bf16, q4 or q2",
                               path, n, tok);
        n++;
        p = q ? q + 1 : p + len;
    }
    if (n != v[3])
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: __metadata__ expert_types has %d entries, "
                           "num_experts = %lld",
                           path, n, v[3]);
    c->d_model = (int)v[0];
    c->n_heads = (int)v[1];
    c->d_ff = (int)v[2];
    c->num_experts = (int)v[3];
    c->top_k = (int)v[4];
    c->group_size = (int)v[5];
    c->seq_len = (int)v[6];
    c->renormalize = (int)v[7];
    c->norm_eps = e;
    c->seed = sd;
    c->expert_type = types[0];
    c->expert_types = types;
    return TMOE_OK;
}

static int mixtral_config(const tmoe_st_file *f, int layer, tmoe_block_config *c, tmoe_error *err) {
    char name[160];
    snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.gate.weight", layer);
    const tmoe_st_tensor *g = tmoe_st_find(f, name);
    if (!g || g->ndim != 2)
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: tensor '%s' is %s (is layer %d in this "
                           "Mixtral-style file?)",
                           tmoe_st_path(f), name, g ? "not 2-D" : "missing", layer);
    snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.experts.0.w1.weight", layer);
    const tmoe_st_tensor *w1 = tmoe_st_find(f, name);
    if (!w1 || w1->ndim != 2)
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: tensor '%s' is %s", tmoe_st_path(f), name,
                           w1 ? "not 2-D" : "missing");
    if (g->shape[0] < 1 || g->shape[0] > TMOE_MAX_EXPERTS || g->shape[1] < 1 ||
        g->shape[1] > INT32_MAX || w1->shape[0] < 1 || w1->shape[0] > INT32_MAX / 2)
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: layer %d: gate %lld x %lld, w1 %lld x %lld: "
                           "sizes out of range",
                           tmoe_st_path(f), layer, (long long)g->shape[0], (long long)g->shape[1],
                           (long long)w1->shape[0], (long long)w1->shape[1]);
    c->num_experts = (int)g->shape[0];
    c->d_model = (int)g->shape[1];
    c->d_ff = (int)w1->shape[0];
    c->act = TMOE_ACT_SWIGLU;
    return TMOE_OK;
}

static int detect(const tmoe_st_file *f, tmoe_layout want, int layer, tmoe_layout *found,
                  tmoe_error *err) {
    if (want != TMOE_LAYOUT_AUTO) {
        if ((unsigned)want >= TMOE_LAYOUT_COUNT)
            return tmoe_errorf(err, TMOE_EINVAL, "unknown layout %d", (int)want);
        *found = want;
        return TMOE_OK;
    }
    const char *fmt = tmoe_st_meta(f, "format");
    if (fmt && strcmp(fmt, TMOE_BLOCK_FORMAT) == 0) {
        *found = TMOE_LAYOUT_THERMOE;
        return TMOE_OK;
    }
    char name[160];
    snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.gate.weight", layer);
    if (tmoe_st_find(f, name)) {
        *found = TMOE_LAYOUT_MIXTRAL;
        return TMOE_OK;
    }
    return tmoe_errorf(err, TMOE_EFORMAT,
                       "%s: neither a thermoe block (__metadata__ format = %s) nor a "
                       "Mixtral-style layer %d (tensor %s); see docs/safetensors.md",
                       tmoe_st_path(f), TMOE_BLOCK_FORMAT, layer, name);
}

int tmoe_block_file_config(const char *path, tmoe_layout layout, int layer, tmoe_block_config *cfg,
                           tmoe_etype *types, tmoe_layout *found, tmoe_error *err) {
    tmoe_st_file *f;
    int rc = tmoe_st_open(path, &f, err);
    if (rc) return rc;
    tmoe_layout l;
    rc = detect(f, layout, layer, &l, err);
    if (!rc)
        rc = l == TMOE_LAYOUT_THERMOE ? thermoe_config(f, cfg, types, err)
                                      : mixtral_config(f, layer, cfg, err);
    if (!rc && found) *found = l;
    tmoe_st_close(f);
    return rc;
}

/* ---- load --------------------------------------------------------------------------- */
/* Set a linear from float tensors stacked along rows: parts[i] has rows[i] rows. */
static int load_float_parts(const tmoe_st_file *f, tmoe_linear *l, const char *const *names,
                            const int *rows, int nparts, tmoe_error *err) {
    int64_t r0 = 0;
    if (!tmoe_etype_is_quant(l->type)) {
        for (int i = 0; i < nparts; i++) {
            int64_t shape[2] = {rows[i], l->in};
            int rc = l->type == TMOE_ET_BF16
                         ? tmoe_st_read_bf16(f, names[i], 2, shape, l->w + r0 * l->in, err)
                         : tmoe_st_read_f16(f, names[i], 2, shape, l->w + r0 * l->in, err);
            if (rc) return rc;
            r0 += rows[i];
        }
        return TMOE_OK;
    }
    float *w = tmoe_malloc(sizeof(float) * (size_t)l->out * l->in, err);
    if (!w) return TMOE_ENOMEM;
    int rc = TMOE_OK;
    for (int i = 0; i < nparts && !rc; i++) {
        int64_t shape[2] = {rows[i], l->in};
        rc = tmoe_st_read_f32(f, names[i], 2, shape, w + r0 * l->in, err);
        r0 += rows[i];
    }
    if (!rc) {
        rc = tmoe_linear_set_f32(l, w, err);
        if (rc)
            tmoe_error_prefix(err, rc, "%s: tensor '%s': quantizing to %s", tmoe_st_path(f),
                              names[0], tmoe_etype_name(l->type));
    }
    free(w);
    return rc;
}

/* A thermoe-layout linear: prefix.weight (float) or prefix.qweight (U8) + prefix.scales. */
static int load_linear(const tmoe_st_file *f, const char *prefix, tmoe_linear *l, tmoe_error *err) {
    const char *path = tmoe_st_path(f);
    char qn[256], sn[256], wn[256];
    snprintf(qn, sizeof qn, "%s.qweight", prefix);
    snprintf(sn, sizeof sn, "%s.scales", prefix);
    snprintf(wn, sizeof wn, "%s.weight", prefix);
    const tmoe_st_tensor *q = tmoe_st_find(f, qn);
    if (!q) {
        if (!tmoe_st_find(f, wn))
            return tmoe_errorf(err, TMOE_EFORMAT, "%s: tensor '%s' (or '%s' + '%s') is missing",
                               path, wn, qn, sn);
        const char *names[1] = {wn};
        int rows[1] = {l->out};
        return load_float_parts(f, l, names, rows, 1, err);
    }
    const tmoe_st_tensor *s = tmoe_st_find(f, sn);
    if (!s)
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: tensor '%s' is missing (%s has no "
                           "scales)",
                           path, sn, qn);
    if (q->dtype != TMOE_ST_U8 || q->ndim != 2 || q->shape[0] != l->out || q->shape[1] < 1 ||
        ((int64_t)l->in * 4 != q->shape[1] * 8 && (int64_t)l->in * 2 != q->shape[1] * 8))
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: tensor '%s': expected U8 [%d, %d] (q4) or [%d, %d] (q2), got %s "
                           "of %d dims [%lld, %lld]",
                           path, qn, l->out, l->in / 2, l->out, l->in / 4,
                           tmoe_st_dtype_name(q->dtype), q->ndim, (long long)q->shape[0],
                           (long long)(q->ndim > 1 ? q->shape[1] : 0));
    tmoe_etype st = q->shape[1] * 8 == (int64_t)l->in * 4 ? TMOE_ET_Q4 : TMOE_ET_Q2;
    if (s->dtype != TMOE_ST_F16 || s->ndim != 2 || s->shape[0] != l->out || s->shape[1] < 1 ||
        l->in % s->shape[1] != 0)
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: tensor '%s': expected F16 [%d, in / group] with a group that "
                           "divides %d, got %s of %d dims",
                           path, sn, l->out, l->in, tmoe_st_dtype_name(s->dtype), s->ndim);
    int group = (int)(l->in / s->shape[1]);
    int rc = tmoe_quant_check_shape(st, l->out, l->in, group, err);
    if (rc) return tmoe_error_prefix(err, TMOE_EFORMAT, "%s: tensor '%s'", path, qn);
    if (st == l->type && group == l->group) {
        memcpy(l->q, q->data, q->nbytes);
        memcpy(l->scales, s->data, s->nbytes);
        return TMOE_OK;
    }
    /* different type or group: dequantize, then convert or requantize */
    size_t n = (size_t)l->out * l->in;
    float *w = tmoe_malloc(sizeof(float) * n, err);
    uint8_t *qb = tmoe_malloc(q->nbytes, err);
    tmoe_f16 *sb = tmoe_malloc(s->nbytes, err);
    if (!w || !qb || !sb) {
        rc = TMOE_ENOMEM;
    } else {
        memcpy(qb, q->data, q->nbytes);
        memcpy(sb, s->data, s->nbytes);
        tmoe_dequantize_f32(st, qb, sb, l->out, l->in, group, w);
        rc = tmoe_linear_set_f32(l, w, err);
        if (rc) tmoe_error_prefix(err, rc, "%s: tensor '%s'", path, qn);
    }
    free(w);
    free(qb);
    free(sb);
    return rc;
}

static int load_thermoe(const tmoe_st_file *f, tmoe_block *b, tmoe_error *err) {
    int64_t D = b->cfg.d_model;
    int rc;
    if ((rc = tmoe_st_read_f32(f, "norm1.weight", 1, &D, b->norm1, err)) ||
        (rc = tmoe_st_read_f32(f, "norm2.weight", 1, &D, b->norm2, err)) ||
        (rc = load_linear(f, "attn.wqkv", &b->wqkv, err)) ||
        (rc = load_linear(f, "attn.wo", &b->wo, err)) ||
        (rc = load_linear(f, "moe.gate", &b->moe.gate, err)))
        return rc;
    char name[128];
    for (int e = 0; e < b->cfg.num_experts; e++) {
        snprintf(name, sizeof name, "moe.experts.%d.fc1", e);
        if ((rc = load_linear(f, name, &b->moe.experts[e].fc1, err))) return rc;
        snprintf(name, sizeof name, "moe.experts.%d.fc2", e);
        if ((rc = load_linear(f, name, &b->moe.experts[e].fc2, err))) return rc;
    }
    return TMOE_OK;
}

/* q, k, v projections -> our fused wqkv; grouped-query k / v heads are repeated so head h
 * reads kv head h / (n_heads / n_kv_heads), as Mixtral's repeat_kv does. */
static int load_mixtral_qkv(const tmoe_st_file *f, const char *P, tmoe_block *b, tmoe_error *err) {
    const char *path = tmoe_st_path(f);
    int D = b->cfg.d_model, H = b->cfg.n_heads, dh = D / H;
    char qn[200], kn[200], vn[200];
    snprintf(qn, sizeof qn, "%sself_attn.q_proj.weight", P);
    snprintf(kn, sizeof kn, "%sself_attn.k_proj.weight", P);
    snprintf(vn, sizeof vn, "%sself_attn.v_proj.weight", P);
    const tmoe_st_tensor *k = tmoe_st_find(f, kn);
    if (!k) return tmoe_errorf(err, TMOE_EFORMAT, "%s: tensor '%s' is missing", path, kn);
    int64_t kvrows = k->ndim == 2 ? k->shape[0] : -1;
    if (kvrows < dh || kvrows > D || kvrows % dh != 0 || H % (kvrows / dh) != 0)
        return tmoe_errorf(err, TMOE_EFORMAT,
                           "%s: tensor '%s': %lld rows is not a whole number of kv heads of size "
                           "%d dividing n_heads = %d (check --n-heads)",
                           path, kn, (long long)kvrows, dh, H);
    int nkv = (int)(kvrows / dh), rep = H / nkv;
    int rc = load_float_parts(f, &b->wqkv, (const char *const[]){qn}, (const int[]){D}, 1, err);
    /* that read only the q rows into the top of wqkv; k and v follow */
    if (rc) return rc;
    tmoe_f16 *kv = tmoe_malloc(sizeof(tmoe_f16) * (size_t)kvrows * D, err);
    if (!kv) return TMOE_ENOMEM;
    for (int part = 0; part < 2 && !rc; part++) {
        int64_t shape[2] = {kvrows, D};
        rc = tmoe_st_read_f16(f, part ? vn : kn, 2, shape, kv, err);
        for (int h = 0; h < H && !rc; h++)
            memcpy(b->wqkv.w + ((size_t)(1 + part) * D + (size_t)h * dh) * D,
                   kv + (size_t)(h / rep) * dh * D, sizeof(tmoe_f16) * (size_t)dh * D);
    }
    free(kv);
    return rc;
}

static int load_mixtral(const tmoe_st_file *f, int layer, tmoe_block *b, tmoe_error *err) {
    const char *path = tmoe_st_path(f);
    if (b->cfg.act != TMOE_ACT_SWIGLU)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "%s: Mixtral-style experts are gated (w1, w3): the "
                           "block must use act = swiglu, not %s",
                           path, tmoe_act_name(b->cfg.act));
    char P[64], n1[200], n3[200], n2[200];
    snprintf(P, sizeof P, "model.layers.%d.", layer);
    int64_t D = b->cfg.d_model;
    int rc;
    snprintf(n1, sizeof n1, "%sinput_layernorm.weight", P);
    snprintf(n2, sizeof n2, "%spost_attention_layernorm.weight", P);
    if ((rc = tmoe_st_read_f32(f, n1, 1, &D, b->norm1, err)) ||
        (rc = tmoe_st_read_f32(f, n2, 1, &D, b->norm2, err)) ||
        (rc = load_mixtral_qkv(f, P, b, err)))
        return rc;
    snprintf(n1, sizeof n1, "%sself_attn.o_proj.weight", P);
    if ((rc = load_float_parts(f, &b->wo, (const char *const[]){n1}, (const int[]){b->cfg.d_model},
                               1, err)))
        return rc;
    snprintf(n1, sizeof n1, "%sblock_sparse_moe.gate.weight", P);
    if ((rc = load_float_parts(f, &b->moe.gate, (const char *const[]){n1},
                               (const int[]){b->cfg.num_experts}, 1, err)))
        return rc;
    int F = b->cfg.d_ff;
    for (int e = 0; e < b->cfg.num_experts; e++) {
        snprintf(n1, sizeof n1, "%sblock_sparse_moe.experts.%d.w1.weight", P, e);
        snprintf(n3, sizeof n3, "%sblock_sparse_moe.experts.%d.w3.weight", P, e);
        snprintf(n2, sizeof n2, "%sblock_sparse_moe.experts.%d.w2.weight", P, e);
        if ((rc = load_float_parts(f, &b->moe.experts[e].fc1, (const char *const[]){n1, n3},
                                   (const int[]){F, F}, 2, err)) ||
            (rc = load_float_parts(f, &b->moe.experts[e].fc2, (const char *const[]){n2},
                                   (const int[]){b->cfg.d_model}, 1, err)))
            return rc;
    }
    return TMOE_OK;
}

/* Bytes of weights a block of this config holds (in double: a corrupt config must not wrap). */
static double block_bytes(const tmoe_block_config *c) {
    double D = c->d_model, F = c->d_ff, rows = c->act == TMOE_ACT_SWIGLU ? 2 * F : F;
    double b = 8 * D + 2 * (3 * D * D + D * D + c->num_experts * D);
    for (int e = 0; e < c->num_experts; e++) {
        tmoe_etype t = tmoe_block_expert_type(c, e);
        double per = !tmoe_etype_is_quant(t) ? 2.0 : tmoe_etype_bits(t) / 8.0 + 2.0 / c->group_size;
        b += per * (rows * D + D * F);
    }
    return b;
}

int tmoe_block_load(const char *path, tmoe_layout layout, int layer, const tmoe_block_config *cfg,
                    tmoe_block **out, tmoe_error *err) {
    *out = NULL;
    if (layer < 0) return tmoe_errorf(err, TMOE_EINVAL, "layer = %d: must be >= 0", layer);
    tmoe_st_file *f;
    int rc = tmoe_st_open(path, &f, err);
    if (rc) return rc;
    tmoe_layout l;
    tmoe_block *b = NULL;
    if ((rc = detect(f, layout, layer, &l, err))) goto done;
    if ((rc = tmoe_block_config_validate(cfg, err))) {
        tmoe_error_prefix(err, rc, "%s", path);
        goto done;
    }
    /* Every tensor takes at most 8x its bytes in the file (q2 -> fp16), so a config asking
     * for more cannot be satisfied: refuse it before allocating (corrupt metadata). */
    size_t fsize = 0;
    for (int i = 0; i < tmoe_st_count(f); i++) fsize += tmoe_st_at(f, i)->nbytes;
    if (block_bytes(cfg) > 8.0 * (double)fsize + 4096.0) {
        rc = tmoe_errorf(err, TMOE_EFORMAT,
                         "%s: the config needs %.0f bytes of weights but the file's tensors hold "
                         "only %zu bytes (corrupt metadata, or the wrong --layer / sizes?)",
                         path, block_bytes(cfg), fsize);
        goto done;
    }
    if ((rc = tmoe_block_alloc(cfg, &b, err))) {
        tmoe_error_prefix(err, rc, "%s", path);
        goto done;
    }
    rc = l == TMOE_LAYOUT_THERMOE ? load_thermoe(f, b, err) : load_mixtral(f, layer, b, err);
done:
    tmoe_st_close(f);
    if (rc) {
        tmoe_block_free(b);
        return rc;
    }
    *out = b;
    return TMOE_OK;
}
