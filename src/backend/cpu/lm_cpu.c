/* The decoder LM on the CPU: prefill and decode over a batch of sequences with a KV cache,
 * in fp32 (see include/thermoe/backend.h). Plain loops: this is the reference that transformers'
 * numbers check and the CUDA path will be checked against. */
#include "thermoe/backend.h"

#include "dot.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct tmoe_cpu_lm {
    const tmoe_lm *m;
    tmoe_cpu_lm_config cfg;
    int max_ff;              /* largest MLP hidden size (dense, expert, shared) */
    float *x, *xn, *tmp;     /* (T, D) residual, normed, sublayer output */
    float *q, *k, *v;        /* (T, H hd), (T, KV hd), (T, KV hd) */
    float *att;              /* (T, H hd) attention output */
    float *scores;           /* (max context) */
    float *h;                /* (T, 2 max_ff) */
    float *a;                /* (T, max_ff) */
    float *rope;             /* (hd / 2) inverse frequencies */
    float *router;           /* (T, E) */
    float *bias;             /* (E) */
    int32_t *idx;            /* (T, k) */
    float *w;                /* (T, k) */
    int32_t *rows;           /* (T k) token of each row routed to the current expert (a token
                                twice when a route hook pads a slot with an expert it holds) */
    float *rw;               /* (T k) its combine weight */
    tmoe_f16 *xg16;          /* (T, D) typed experts' input rows */
    float *xg;               /* (T, D) fp32 experts' input rows */
    float *ye;               /* (T, D) experts' output rows */
    void *escratch;          /* tmoe_cpu_expert_scratch_bytes at T rows */
    int32_t *pos;            /* (T) position of each new token */
    int32_t *slot;           /* (T) KV slot of each new token */
    int32_t *counts;         /* (n_layers, E) */
    int32_t *ccounts;        /* (n_layers, E) of those, the copies' */
    unsigned char *use_copy; /* (E) the route hook's copies of the current layer */
    float *w32;              /* typed experts' weights in fp32, if they fit (cache_experts) */
    const float **ew32;      /* (n_layers, 2E, 2) each expert's (then each copy's) fc1 / fc2 rows
                                in w32 (NULL where there is no copy), or NULL */
    int max_ctx;
    int scores_cap; /* floats in scores */
};

/* Typed experts (fp16, bf16, fused q4/q2) convert their weights to fp32 on every call, which
 * dominated the CPU forward; up to this many bytes of them are kept converted instead (the
 * same values, so the same bits; a larger model converts per call, as before). */
#define EXPERT_CACHE_MAX_BYTES ((size_t)512 << 20)

/* Expert j of layer l: j < E the expert, E + e expert e's copy (NULL where none). */
static const tmoe_expert *expert_at(const tmoe_cpu_lm *r, int l, size_t j) {
    const tmoe_lm_layer *y = &r->m->layers[l];
    size_t E = (size_t)r->m->cfg.num_experts;
    if (j < E) return y->experts ? &y->experts[j] : NULL;
    return y->copies && tmoe_lm_has_copy(&r->m->opts, (int)(j - E)) ? &y->copies[j - E] : NULL;
}

static void cache_experts(tmoe_cpu_lm *r) {
    const tmoe_lm_config *c = &r->m->cfg;
    size_t E = (size_t)c->num_experts, total = 0;
    for (int l = 0; l < c->n_layers; l++)
        for (size_t j = 0; j < 2 * E; j++) {
            const tmoe_expert *ex = expert_at(r, l, j);
            if (ex) total += (size_t)ex->fc1.out * ex->fc1.in + (size_t)ex->fc2.out * ex->fc2.in;
        }
    if (!total || total * sizeof(float) > EXPERT_CACHE_MAX_BYTES) return;
    float *w = malloc(total * sizeof(float));
    const float **p = calloc((size_t)c->n_layers * E * 4, sizeof *p);
    if (!w || !p) { /* not fatal: the experts convert per call */
        free(w);
        free(p);
        return;
    }
    float *at = w;
    for (int l = 0; l < c->n_layers; l++)
        for (size_t e = 0; e < 2 * E; e++) {
            const tmoe_expert *ex = expert_at(r, l, e);
            for (int j = 0; ex && j < 2; j++) {
                const tmoe_linear *lin = j ? &ex->fc2 : &ex->fc1;
                if (!tmoe_cpu_linear_w32(lin, r->cfg.impl, at)) { /* q4/q2 unfused: fp16 */
                    free(w);
                    free(p);
                    return;
                }
                p[((size_t)l * 2 * E + e) * 2 + j] = at;
                at += (size_t)lin->out * lin->in;
            }
        }
    r->w32 = w;
    r->ew32 = p;
}

void tmoe_cpu_lm_free(tmoe_cpu_lm *r) {
    if (!r) return;
    void *ptrs[] = {r->x,      r->xn,   r->tmp,    r->q,       r->k,        r->v,    r->att,
                    r->scores, r->h,    r->a,      r->rope,    r->router,   r->bias, r->idx,
                    r->w,      r->rows, r->rw,     r->xg16,    r->xg,       r->ye,   r->escratch,
                    r->pos,    r->slot, r->counts, r->ccounts, r->use_copy, r->w32};
    free((void *)r->ew32);
    for (size_t i = 0; i < sizeof ptrs / sizeof *ptrs; i++) free(ptrs[i]);
    free(r);
}

static int max3(int a, int b, int c) {
    int m = a > b ? a : b;
    return m > c ? m : c;
}

int tmoe_cpu_lm_create(const tmoe_lm *m, const tmoe_cpu_lm_config *cfg, tmoe_cpu_lm **out,
                       tmoe_error *err) {
    *out = NULL;
    const tmoe_lm_config *c = &m->cfg;
    if (cfg->max_tokens < 1)
        return tmoe_errorf(err, TMOE_EINVAL, "max_tokens = %d: must be positive", cfg->max_tokens);
    tmoe_cpu_lm *r = tmoe_calloc(1, sizeof *r, err);
    if (!r) return TMOE_ENOMEM;
    r->m = m;
    r->cfg = *cfg;
    size_t T = (size_t)cfg->max_tokens, D = (size_t)c->d_model, E = (size_t)c->num_experts;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    r->max_ff = max3(c->d_ff, c->d_ff_expert, c->d_ff_shared);
    r->max_ctx = c->max_positions;
    size_t F = (size_t)r->max_ff;
    int ok = (r->x = tmoe_malloc(sizeof(float) * T * D, err)) &&
             (r->xn = tmoe_malloc(sizeof(float) * T * D, err)) &&
             (r->tmp = tmoe_malloc(sizeof(float) * T * D, err)) &&
             (r->q = tmoe_malloc(sizeof(float) * T * qd, err)) &&
             (r->k = tmoe_malloc(sizeof(float) * T * kvd, err)) &&
             (r->v = tmoe_malloc(sizeof(float) * T * kvd, err)) &&
             (r->att = tmoe_malloc(sizeof(float) * T * qd, err)) &&
             (r->h = tmoe_malloc(sizeof(float) * T * 2 * F, err)) &&
             (r->a = tmoe_malloc(sizeof(float) * T * F, err)) &&
             (r->rope = tmoe_malloc(sizeof(float) * (size_t)c->head_dim / 2, err)) &&
             (r->router = tmoe_malloc(sizeof(float) * T * E, err)) &&
             (r->bias = tmoe_calloc(E, sizeof(float), err)) &&
             (r->idx = tmoe_malloc(sizeof(int32_t) * T * (size_t)c->top_k, err)) &&
             (r->w = tmoe_malloc(sizeof(float) * T * (size_t)c->top_k, err)) &&
             (r->rows = tmoe_malloc(sizeof(int32_t) * T * (size_t)c->top_k, err)) &&
             (r->rw = tmoe_malloc(sizeof(float) * T * (size_t)c->top_k, err)) &&
             (r->xg16 = tmoe_malloc(sizeof(tmoe_f16) * T * D, err)) &&
             (r->xg = tmoe_malloc(sizeof(float) * T * D, err)) &&
             (r->ye = tmoe_malloc(sizeof(float) * T * D, err)) &&
             (r->pos = tmoe_malloc(sizeof(int32_t) * T, err)) &&
             (r->slot = tmoe_malloc(sizeof(int32_t) * T, err)) &&
             (r->counts = tmoe_calloc((size_t)c->n_layers * E, sizeof(int32_t), err)) &&
             (r->ccounts = tmoe_calloc((size_t)c->n_layers * E, sizeof(int32_t), err)) &&
             (r->use_copy = tmoe_calloc(E, 1, err));
    if (ok && !m->opts.experts_f32 && tmoe_lm_num_moe_layers(c) > 0) {
        /* the largest scratch any expert or copy needs (experts may differ in type; every MoE
         * layer holds the same types) */
        int l0 = 0;
        while (l0 < c->n_layers && !m->layers[l0].experts) l0++;
        size_t bytes = 0;
        for (size_t j = 0; l0 < c->n_layers && j < 2 * E; j++) {
            const tmoe_expert *ex = expert_at(r, l0, j);
            size_t b = ex ? tmoe_cpu_expert_scratch_bytes(ex, cfg->max_tokens, cfg->impl) : 0;
            if (b > bytes) bytes = b;
        }
        ok = l0 < c->n_layers && (r->escratch = tmoe_malloc(bytes, err));
    }
    if (ok) cache_experts(r);
    if (!ok) {
        tmoe_cpu_lm_free(r);
        return TMOE_ENOMEM;
    }
    /* as transformers: inv_freq = 1 / theta^(2i / hd), in fp32 */
    for (int i = 0; i < c->head_dim / 2; i++)
        r->rope[i] = 1.0f / powf((float)c->rope_theta, (float)(2 * i) / (float)c->head_dim);
    *out = r;
    return TMOE_OK;
}

const int32_t *tmoe_cpu_lm_expert_counts(const tmoe_cpu_lm *r) {
    return r->counts;
}

const int32_t *tmoe_cpu_lm_copy_counts(const tmoe_cpu_lm *r) {
    return r->ccounts;
}

/* y (n, out) = x (n, in) W^T (+ b); W (out, in). */
static void linear(const float *x, const float *W, const float *b, int n, int in, int out,
                   float *y) {
#pragma omp parallel for if ((long)n * out * in >= (1L << 22))
    for (int o = 0; o < out; o++)
        for (int t = 0; t < n; t++)
            y[(size_t)t * out + o] =
                tmoe_cpu_dot(x + (size_t)t * in, W + (size_t)o * in, in) + (b ? b[o] : 0.0f);
}

/* RMSNorm of n rows of width d: y = x / sqrt(mean(x^2) + eps) * w (in place allowed). */
static void rmsnorm(const float *x, const float *w, int n, int d, float eps, float *y) {
    for (int t = 0; t < n; t++) {
        const float *r = x + (size_t)t * d;
        double ss = 0.0;
        for (int i = 0; i < d; i++) ss += (double)r[i] * r[i];
        float inv = 1.0f / sqrtf((float)(ss / d) + eps);
        for (int i = 0; i < d; i++) y[(size_t)t * d + i] = w[i] * (r[i] * inv);
    }
}

static float silu(float g) {
    return g / (1.0f + expf(-g));
}

/* SwiGLU MLP on n rows: y = W2 (silu(gate) * up), w13 (2I, D) rows [gate; up], w2 (D, I). */
static void swiglu(tmoe_cpu_lm *r, const float *x, int n, const float *w13, const float *w2, int I,
                   float *y) {
    int D = r->m->cfg.d_model;
    linear(x, w13, NULL, n, D, 2 * I, r->h);
    for (int t = 0; t < n; t++) {
        const float *g = r->h + (size_t)t * 2 * I, *u = g + I;
        for (int i = 0; i < I; i++) r->a[(size_t)t * I + i] = silu(g[i]) * u[i];
    }
    linear(r->a, w2, NULL, n, I, D, y);
}

/* Rotate pairs (i, i + hd/2) of each head of n rows (as transformers' rotate_half). */
static void rope(const tmoe_cpu_lm *r, float *v, int n, int heads, const int32_t *pos) {
    int hd = r->m->cfg.head_dim, half = hd / 2;
    for (int t = 0; t < n; t++)
        for (int i = 0; i < half; i++) {
            float ang = (float)pos[t] * r->rope[i], c = cosf(ang), s = sinf(ang);
            for (int h = 0; h < heads; h++) {
                float *p = v + ((size_t)t * heads + h) * hd;
                float a = p[i], b = p[i + half];
                p[i] = a * c - b * s;
                p[i + half] = b * c + a * s;
            }
        }
}

static void clip(float *v, size_t n, float c) {
    for (size_t i = 0; i < n; i++) v[i] = v[i] > c ? c : v[i] < -c ? -c : v[i];
}

/* q, k, v of the new tokens: projections, biases, q/k norms, clipping, RoPE. */
static void qkv(tmoe_cpu_lm *r, const tmoe_lm_layer *y, int T) {
    const tmoe_lm_config *c = &r->m->cfg;
    int D = c->d_model, hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    linear(r->xn, y->wq, y->bq, T, D, qd, r->q);
    linear(r->xn, y->wk, y->bk, T, D, kvd, r->k);
    linear(r->xn, y->wv, y->bv, T, D, kvd, r->v);
    if (c->qk_norm == TMOE_QK_NORM_WHOLE) {
        rmsnorm(r->q, y->q_norm, T, qd, c->rms_eps, r->q);
        rmsnorm(r->k, y->k_norm, T, kvd, c->rms_eps, r->k);
    } else if (c->qk_norm == TMOE_QK_NORM_PER_HEAD) {
        rmsnorm(r->q, y->q_norm, T * c->n_heads, hd, c->rms_eps, r->q);
        rmsnorm(r->k, y->k_norm, T * c->n_kv_heads, hd, c->rms_eps, r->k);
    }
    if (c->clip_qkv > 0.0f) {
        clip(r->q, (size_t)T * qd, c->clip_qkv);
        clip(r->k, (size_t)T * kvd, c->clip_qkv);
        clip(r->v, (size_t)T * kvd, c->clip_qkv);
    }
    rope(r, r->q, T, c->n_heads, r->pos);
    rope(r, r->k, T, c->n_kv_heads, r->pos);
}

/* Causal attention of each new token over its slot's positions 0..pos (the cache holds the
 * new K and V already); GQA: head h reads KV head h / (H / KV). */
static void attend(tmoe_cpu_lm *r, const tmoe_kv_cache *kv, int l, int T) {
    const tmoe_lm_config *c = &r->m->cfg;
    int hd = c->head_dim, H = c->n_heads, KV = c->n_kv_heads, group = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
    size_t slot_stride = (size_t)kv->max_len * KV * hd;
    for (int t = 0; t < T; t++) {
        const float *K = kv->k[l] + (size_t)r->slot[t] * slot_stride;
        const float *Vv = kv->v[l] + (size_t)r->slot[t] * slot_stride;
        int p = r->pos[t], first = 0;
        if (c->sliding_window > 0 && p - c->sliding_window + 1 > 0)
            first = p - c->sliding_window + 1;
        for (int h = 0; h < H; h++) {
            const float *q = r->q + ((size_t)t * H + h) * hd;
            int g = h / group;
            float mx = -INFINITY;
            for (int s = first; s <= p; s++) {
                float sc = tmoe_cpu_dot(q, K + ((size_t)s * KV + g) * hd, hd) * scale;
                r->scores[s] = sc;
                mx = sc > mx ? sc : mx;
            }
            float den = 0.0f;
            for (int s = first; s <= p; s++) {
                r->scores[s] = expf(r->scores[s] - mx);
                den += r->scores[s];
            }
            float *o = r->att + ((size_t)t * H + h) * hd;
            for (int i = 0; i < hd; i++) o[i] = 0.0f;
            for (int s = first; s <= p; s++) {
                float pw = r->scores[s] / den;
                const float *vr = Vv + ((size_t)s * KV + g) * hd;
                for (int i = 0; i < hd; i++) o[i] += pw * vr[i];
            }
        }
    }
}

static void attention(tmoe_cpu_lm *r, tmoe_kv_cache *kv, int l, int T) {
    const tmoe_lm_config *c = &r->m->cfg;
    const tmoe_lm_layer *y = &r->m->layers[l];
    int D = c->d_model, hd = c->head_dim, kvd = c->n_kv_heads * hd;
    rmsnorm(r->x, y->attn_norm, T, D, c->rms_eps, r->xn);
    qkv(r, y, T);
    size_t slot_stride = (size_t)kv->max_len * kvd;
    for (int t = 0; t < T; t++) {
        size_t at = (size_t)r->slot[t] * slot_stride + (size_t)r->pos[t] * kvd;
        memcpy(kv->k[l] + at, r->k + (size_t)t * kvd, sizeof(float) * (size_t)kvd);
        memcpy(kv->v[l] + at, r->v + (size_t)t * kvd, sizeof(float) * (size_t)kvd);
    }
    attend(r, kv, l, T);
    linear(r->att, y->wo, y->bo, T, c->n_heads * hd, D, r->tmp);
    for (size_t i = 0; i < (size_t)T * D; i++) r->x[i] += r->tmp[i];
}

/* Expert e (its copy when copy) on n rows (r->rows + off, weights r->rw + off;
 * n <= max_tokens), added into r->tmp. */
static void run_expert(tmoe_cpu_lm *r, const tmoe_lm_layer *y, int e, int copy, int off, int n) {
    const tmoe_lm_config *c = &r->m->cfg;
    int D = c->d_model, I = c->d_ff_expert;
    const int32_t *rows = r->rows + off;
    const float *rw = r->rw + off;
    for (int j = 0; j < n; j++) {
        const float *src = r->xn + (size_t)rows[j] * D;
        if (y->ex_w13)
            memcpy(r->xg + (size_t)j * D, src, sizeof(float) * (size_t)D);
        else
            for (int i = 0; i < D; i++) r->xg16[(size_t)j * D + i] = tmoe_f32_to_f16(src[i]);
    }
    if (y->ex_w13)
        swiglu(r, r->xg, n, y->ex_w13 + (size_t)e * 2 * I * D, y->ex_w2 + (size_t)e * D * I, I,
               r->ye);
    else {
        size_t j = (size_t)e + (copy ? (size_t)c->num_experts : 0);
        const float **w =
            r->ew32 ? r->ew32 + ((size_t)(y - r->m->layers) * 2 * c->num_experts + j) * 2 : NULL;
        tmoe_cpu_expert_forward_w32(copy ? &y->copies[e] : &y->experts[e], r->cfg.impl,
                                    w ? w[0] : NULL, w ? w[1] : NULL, r->xg16, n, r->ye,
                                    r->escratch, NULL);
    }
    for (int j = 0; j < n; j++) {
        if (rw[j] == 0.0f) continue; /* a padded copy adds nothing, even an inf/NaN row */
        float *out = r->tmp + (size_t)rows[j] * D;
        const float *row = r->ye + (size_t)j * D;
        for (int i = 0; i < D; i++) out[i] += row[i] * rw[j];
    }
}

static int moe(tmoe_cpu_lm *r, int l, int T, tmoe_error *err) {
    const tmoe_lm_config *c = &r->m->cfg;
    const tmoe_lm_layer *y = &r->m->layers[l];
    int D = c->d_model, E = c->num_experts, K = c->top_k;
    linear(r->xn, y->router, NULL, T, D, E, r->router);
    const float *bias = NULL;
    tmoe_lm_route_out ro = {r->bias, r->idx, r->w, K, 0, r->use_copy};
    memset(r->use_copy, 0, (size_t)E);
    if (r->cfg.route) {
        memset(r->bias, 0, sizeof(float) * (size_t)E);
        int rc = r->cfg.route(r->cfg.route_user, l, r->router, T, E, &ro, err);
        if (rc) return rc;
        bias = r->bias;
    }
    for (int e = 0; e < E; e++)
        if (r->use_copy[e] && (!y->copies || !tmoe_lm_has_copy(&r->m->opts, e)))
            return tmoe_errorf(err, TMOE_EINVAL,
                               "layer %d: the route hook runs expert %d's copy, but the model "
                               "holds none",
                               l, e);
    if (ro.selected) { /* the hook's own selection (padded slots carry weight 0) */
        for (int i = 0; i < T * K; i++)
            if (r->idx[i] < 0 || r->idx[i] >= E)
                return tmoe_errorf(err, TMOE_EINVAL,
                                   "layer %d: the route hook's selection has expert %d at token "
                                   "%d slot %d, expected 0..%d",
                                   l, r->idx[i], i / K, i % K, E - 1);
    } else {
        tmoe_gate_topk(r->router, bias, T, E, K, c->norm_topk_prob, r->cfg.bias_in_weights, r->idx,
                       r->w);
    }
    memset(r->tmp, 0, sizeof(float) * (size_t)T * D);
    int32_t *counts = r->counts + (size_t)l * E;
    /* experts in ascending index, as transformers adds them */
    for (int e = 0; e < E; e++) {
        int n = 0;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < K; j++) /* a hook's padded slot (weight 0) is not run */
                if (r->idx[t * K + j] == e && !(ro.selected && r->w[t * K + j] == 0.0f)) {
                    r->rows[n] = t;
                    r->rw[n++] = r->w[t * K + j];
                }
        counts[e] = n;
        r->ccounts[(size_t)l * E + e] = r->use_copy[e] ? n : 0;
        /* the workspace holds max_tokens rows: more (padded copies) run in parts */
        for (int off = 0; off < n; off += r->cfg.max_tokens)
            run_expert(r, y, e, r->use_copy[e], off,
                       n - off < r->cfg.max_tokens ? n - off : r->cfg.max_tokens);
    }
    if (y->sh_w13) {
        int S = c->d_ff_shared;
        swiglu(r, r->xn, T, y->sh_w13, y->sh_w2, S, r->ye);
        for (int t = 0; t < T; t++) {
            float g = tmoe_cpu_dot(r->xn + (size_t)t * D, y->sh_gate, D);
            float s = 1.0f / (1.0f + expf(-g));
            for (int i = 0; i < D; i++) r->tmp[(size_t)t * D + i] += s * r->ye[(size_t)t * D + i];
        }
    }
    return TMOE_OK;
}

static int mlp(tmoe_cpu_lm *r, int l, int T, tmoe_error *err) {
    const tmoe_lm_config *c = &r->m->cfg;
    const tmoe_lm_layer *y = &r->m->layers[l];
    int D = c->d_model;
    rmsnorm(r->x, y->mlp_norm, T, D, c->rms_eps, r->xn);
    if (y->is_moe) {
        int rc = moe(r, l, T, err);
        if (rc) return rc;
    } else {
        swiglu(r, r->xn, T, y->mlp_w13, y->mlp_w2, c->d_ff, r->tmp);
    }
    for (size_t i = 0; i < (size_t)T * D; i++) r->x[i] += r->tmp[i];
    return TMOE_OK;
}

static int check_batch(const tmoe_cpu_lm *r, const tmoe_kv_cache *kv, const tmoe_lm_batch *b,
                       int *T_out, tmoe_error *err) {
    const tmoe_lm_config *c = &r->m->cfg;
    if (kv->n_layers != c->n_layers || kv->n_kv_heads != c->n_kv_heads ||
        kv->head_dim != c->head_dim)
        return tmoe_errorf(err, TMOE_EINVAL, "KV cache shape does not match the model");
    tmoe_lm_slots sl = {kv->len,     kv->used,   kv->max_seqs,
                        kv->max_len, r->max_ctx, r->cfg.max_tokens};
    return tmoe_lm_batch_check(b, &sl, c->vocab_size, T_out, err);
}

int tmoe_cpu_lm_forward(tmoe_cpu_lm *r, tmoe_kv_cache *kv, const tmoe_lm_batch *b, float *logits,
                        tmoe_error *err) {
    const tmoe_lm *m = r->m;
    const tmoe_lm_config *c = &m->cfg;
    int T = 0, rc = check_batch(r, kv, b, &T, err);
    if (rc) return rc;
    if (kv->max_len > r->scores_cap) {
        float *s = realloc(r->scores, sizeof(float) * (size_t)kv->max_len);
        if (!s) return tmoe_errorf(err, TMOE_ENOMEM, "out of memory (attention scores)");
        r->scores = s;
        r->scores_cap = kv->max_len;
    }
    int D = c->d_model, V = c->vocab_size;
    for (int i = 0, t = 0; i < b->nseq; i++)
        for (int j = 0; j < b->n_new[i]; j++, t++) {
            r->slot[t] = b->slots[i];
            r->pos[t] = kv->len[b->slots[i]] + j;
        }
    for (int t = 0; t < T; t++)
        memcpy(r->x + (size_t)t * D, m->embed + (size_t)b->tokens[t] * D, sizeof(float) * D);
    memset(r->counts, 0, sizeof(int32_t) * (size_t)c->n_layers * c->num_experts);
    memset(r->ccounts, 0, sizeof(int32_t) * (size_t)c->n_layers * c->num_experts);
    for (int l = 0; l < c->n_layers; l++) {
        attention(r, kv, l, T);
        if ((rc = mlp(r, l, T, err))) return rc; /* the slots' lengths are not advanced */
    }
    rmsnorm(r->x, m->final_norm, T, D, c->rms_eps, r->xn);
    for (int i = 0, t = 0; i < b->nseq; i++) {
        int n = b->n_new[i];
        if (logits && b->logits_all) /* NULL logits: the LM head is skipped */
            linear(r->xn + (size_t)t * D, m->lm_head, NULL, n, D, V, logits + (size_t)t * V);
        else if (logits)
            linear(r->xn + (size_t)(t + n - 1) * D, m->lm_head, NULL, 1, D, V,
                   logits + (size_t)i * V);
        t += n;
        kv->len[b->slots[i]] += n;
    }
    return TMOE_OK;
}
