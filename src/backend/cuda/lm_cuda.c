/* The decoder LM on a CUDA device (include/thermoe/backend.h): the CPU reference's forward
 * (src/backend/cpu/lm_cpu.c) step for step, with cuBLAS for the dense projections (fp16
 * weights and activations, fp32 accumulation and output; the router in fp32), the kernels of
 * lm.cu for embedding, norms, the q/k/v epilogue with RoPE, attention over the device KV cache
 * and the shared-expert gate, and the MoE kernels of routing.cu / expert_linear.cu for the
 * experts. Everything lives in device memory allocated at create; a step uploads its token
 * ids, positions and slots in one copy, and decode steps can be replayed as CUDA graphs. */
#include "thermoe/backend.h"

#include "cublas_util.h"
#include "lm_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CUBLAS_WS_BYTES (32u << 20)

typedef struct lm_layer_dev {
    int is_moe, fast; /* fast: experts on the bandwidth kernel, else the plain one */
    int moe_index;    /* among the MoE layers (production-shape experts), -1 dense */
    float *attn_norm, *mlp_norm;
    tmoe_f16 *wqkv;             /* (H hd + 2 KV hd, D) rows q | k | v */
    float *bqkv;                /* (H hd + 2 KV hd) or NULL */
    float *q_norm, *k_norm;     /* or NULL */
    tmoe_f16 *wo;               /* (D, H hd) */
    float *bo;                  /* (D) or NULL */
    tmoe_f16 *mlp_w13, *mlp_w2; /* dense: (2 d_ff, D), (D, d_ff) */
    float *router;              /* (E, D) fp32 */
    tmoe_cuda_lin k1, k2;       /* fast experts: tiled fp16 / packed q4 / q2 */
    tmoe_cuda_lin c1, c2;       /* their lower-precision copies (fast only): slot e is expert
                                   e's copy, zeros where it has none; unused without copies */
    tmoe_f16 *ew13, *ew2;       /* plain experts: (E, 2 I, D), (E, D, I) fp16 */
    tmoe_f16 *sh_w13, *sh_w2;   /* shared expert (2 S, D), (D, S) or NULL */
    float *sh_gate;             /* (D) or NULL */
    float *kc, *vc;             /* (max_seqs, max_len, KV, hd) */
} lm_layer_dev;

struct tmoe_cuda_lm {
    tmoe_lm_config c;
    tmoe_cuda_lm_config cfg;
    cudaStream_t st;
    cublasHandle_t cb;
    int sm_count, max_ff, qkvd;
    void **mem; /* every device allocation, freed at the end */
    int n_mem, cap_mem;
    size_t weight_bytes, kv_bytes;
    tmoe_f16 *embed, *lm_head;
    float *final_norm, *inv_freq;
    int32_t *d_experts; /* 0..E-1 */
    lm_layer_dev *L;
    void *cublas_ws;
    /* workspace */
    void *ws;
    float *x, *xn32, *qkv, *tmp, *h32, *rlogits, *w, *ye, *logits, *bias;
    tmoe_f16 *xn16, *att16, *a16;
    int32_t *idx, *counts, *offsets, *src, *dst, *active, *counts_all;
    int32_t *d_step; /* (4 max_tokens): tokens, pos, slot, logit rows */
    int32_t *h_step; /* pinned host copy */
    /* host */
    int32_t *len;
    uint8_t *used;
    int32_t *h_counts; /* (n_layers, E) */
    /* a route hook's buffers, in one pinned block (h_route; NULL without a hook): the router
     * logits (max_tokens, E), its biases (E), its own selection (max_tokens, k) and combine
     * weights (max_tokens, k) */
    void *h_route;
    float *h_rlogits, *h_bias;
    int32_t *h_idx;
    float *h_w;
    cudaGraphExec_t *graphs;  /* (max_tokens + 1), decode steps by batch size */
    tmoe_cuda_shadow *shadow; /* production-shape experts, or NULL */
    /* lower-precision copies (tmoe_lm_load_opts.copy): which experts have one; the hook's
     * choice (pinned, E) and the slot maps it gives the kernels, experts' pass then the
     * copies' (pinned h_slots and device d_slots, 2E); the production-shape copies */
    int n_copy;
    unsigned char copy[TMOE_MAX_EXPERTS];
    unsigned char *h_use_copy;
    int32_t *h_slots, *d_slots;
    tmoe_cuda_shadow *shadow_copy;
};

void tmoe_cuda_lm_free(tmoe_cuda_lm *r) {
    if (!r) return;
    if (r->st) TMOE_CUDA_WARN(cudaStreamSynchronize(r->st));
    if (r->graphs) {
        for (int t = 0; t <= r->cfg.max_tokens; t++)
            if (r->graphs[t]) TMOE_CUDA_WARN(cudaGraphExecDestroy(r->graphs[t]));
        free(r->graphs);
    }
    tmoe_cuda_shadow_free(r->shadow);
    tmoe_cuda_shadow_free(r->shadow_copy);
    for (int i = 0; i < r->n_mem; i++) TMOE_CUDA_WARN(cudaFree(r->mem[i]));
    if (r->h_step) TMOE_CUDA_WARN(cudaFreeHost(r->h_step));
    if (r->cb) CB_WARN(cublasDestroy(r->cb));
    if (r->st) TMOE_CUDA_WARN(cudaStreamDestroy(r->st));
    free(r->mem);
    free(r->L);
    if (r->h_route) TMOE_CUDA_WARN(cudaFreeHost(r->h_route));
    free(r->len);
    free(r->used);
    free(r->h_counts);
    free(r);
}

/* ---- uploads ------------------------------------------------------------------------ */
static int dev_alloc(tmoe_cuda_lm *r, void **p, size_t n, tmoe_error *err) {
    *p = NULL;
    if (r->n_mem == r->cap_mem) {
        int cap = r->cap_mem ? 2 * r->cap_mem : 64;
        void **m = realloc(r->mem, sizeof *m * (size_t)cap);
        if (!m) return tmoe_errorf(err, TMOE_ENOMEM, "out of host memory (allocation list)");
        r->mem = m;
        r->cap_mem = cap;
    }
    cudaError_t ce = cudaMalloc(p, n ? n : 1);
    if (ce != cudaSuccess)
        return tmoe_errorf(err, TMOE_ENOMEM, "%s:%d: cudaMalloc of %zu bytes: %s", __FILE__,
                           __LINE__, n, cudaGetErrorString(ce));
    r->mem[r->n_mem++] = *p;
    return TMOE_OK;
}

static int upload(tmoe_cuda_lm *r, void **dst, const void *src, size_t n, tmoe_error *err) {
    TRY(dev_alloc(r, dst, n, err));
    TRY(tmoe_cuda_upload(*dst, src, n, r->st, err));
    r->weight_bytes += n;
    return TMOE_OK;
}

/* fp32 host (NULL: *dst = NULL) -> fp32 device. */
static int upload_f32(tmoe_cuda_lm *r, float **dst, const float *src, size_t n, tmoe_error *err) {
    *dst = NULL;
    if (!src) return TMOE_OK;
    return upload(r, (void **)dst, src, n * sizeof(float), err);
}

/* Concatenation of parts (fp32 host, n[i] values each) -> fp16 device. */
static int upload_f16_cat(tmoe_cuda_lm *r, tmoe_f16 **dst, const float *const *src, const size_t *n,
                          int parts, tmoe_error *err) {
    size_t total = 0;
    for (int i = 0; i < parts; i++) total += n[i];
    tmoe_f16 *h = tmoe_malloc(sizeof(tmoe_f16) * (total ? total : 1), err);
    if (!h) return TMOE_ENOMEM;
    size_t at = 0;
    for (int i = 0; i < parts; i++)
        for (size_t j = 0; j < n[i]; j++) h[at++] = tmoe_f32_to_f16(src[i][j]);
    int rc = upload(r, (void **)dst, h, sizeof(tmoe_f16) * total, err);
    free(h);
    return rc;
}

static int upload_f16(tmoe_cuda_lm *r, tmoe_f16 **dst, const float *src, size_t n,
                      tmoe_error *err) {
    *dst = NULL;
    if (!src) return TMOE_OK;
    return upload_f16_cat(r, dst, &src, &n, 1, err);
}

/* Host copy of one linear of every expert (copies: of every expert's copy, zeros where it
 * has none), row-major, in the expert's type; fp32 experts converted to fp16. which 0: fc1
 * (2 I, D), 1: fc2 (D, I). w (E, bytes per expert), scales (E, per expert) for q4/q2. */
static int host_experts(const tmoe_lm *m, const tmoe_lm_layer *y, int which, int copies,
                        tmoe_etype t, uint8_t **w, tmoe_f16 **sc, size_t *wb, size_t *sn,
                        tmoe_error *err) {
    const tmoe_lm_config *c = &m->cfg;
    int E = c->num_experts, I = c->d_ff_expert, D = c->d_model;
    int out = which ? D : 2 * I, in = which ? I : D;
    *wb = tmoe_quant_weight_bytes(t, out, in);
    *sn = tmoe_etype_is_quant(t) ? tmoe_quant_scale_count(out, in, m->opts.group_size) : 0;
    *w = tmoe_malloc(*wb * E, err);
    *sc = *sn ? tmoe_malloc(sizeof(tmoe_f16) * *sn * E, err) : NULL;
    if (!*w || (*sn && !*sc)) {
        free(*w);
        free(*sc);
        return TMOE_ENOMEM;
    }
    for (int e = 0; e < E; e++) {
        if (copies && !tmoe_lm_has_copy(&m->opts, e)) { /* a slot no block reads */
            memset(*w + *wb * e, 0, *wb);
            if (*sn) memset(*sc + *sn * e, 0, sizeof(tmoe_f16) * *sn);
            continue;
        }
        if (y->ex_w13) {
            const float *f = (which ? y->ex_w2 : y->ex_w13) + (size_t)e * out * in;
            tmoe_f16 *h = (tmoe_f16 *)(*w + *wb * e);
            for (size_t i = 0; i < (size_t)out * in; i++) h[i] = tmoe_f32_to_f16(f[i]);
            continue;
        }
        const tmoe_expert *x = copies ? &y->copies[e] : &y->experts[e];
        const tmoe_linear *l = which ? &x->fc2 : &x->fc1;
        TMOE_ASSERT(l->type == t && l->out == out && l->in == in);
        memcpy(*w + *wb * e, tmoe_etype_is_quant(t) ? (const void *)l->q : (const void *)l->w, *wb);
        if (*sn) memcpy(*sc + *sn * e, l->scales, sizeof(tmoe_f16) * *sn);
    }
    return TMOE_OK;
}

/* The experts of layer y: on the bandwidth kernel (tiled weights) when it takes the shapes,
 * else fp16 row-major weights (q4/q2 dequantized as tmoe_dequantize_f16 does) for the plain
 * kernel. copies: their lower-precision copies, into c1 / c2 (the bandwidth kernel only). */
static int upload_experts(tmoe_cuda_lm *r, const tmoe_lm *m, const tmoe_lm_layer *y,
                          lm_layer_dev *d, int copies, tmoe_error *err) {
    const tmoe_lm_config *c = &m->cfg;
    int E = c->num_experts, I = c->d_ff_expert, D = c->d_model, G = m->opts.group_size;
    tmoe_etype t = copies ? m->opts.copy_type : y->ex_w13 ? TMOE_ET_FP16 : m->opts.expert_type;
    tmoe_cuda_lin *K[2] = {copies ? &d->c1 : &d->k1, copies ? &d->c2 : &d->k2};
    for (int which = 0; which < 2; which++) {
        tmoe_cuda_lin *L = K[which];
        L->type = t;
        L->out = which ? D : 2 * I;
        L->in = which ? I : D;
        L->group = G;
        L->act8 = tmoe_etype_is_quant(t) && m->opts.act8;
        L->w_stride = tmoe_quant_weight_bytes(t, L->out, L->in);
        L->s_stride = tmoe_etype_is_quant(t) ? tmoe_quant_scale_count(L->out, L->in, G) : 0;
        L->tiled = 1;
        L->sm_count = r->sm_count;
    }
    tmoe_error sub = {0};
    int fast = !r->cfg.plain_experts && K[0]->out % 16 == 0 && K[1]->out % 16 == 0 &&
               K[0]->w_stride % ((size_t)K[0]->out * 64) == 0 &&
               K[1]->w_stride % ((size_t)K[1]->out * 64) == 0 &&
               tmoe_cuda_expert_kernel_supports(K[0], TMOE_CUDA_EPI_SWIGLU, &sub) == TMOE_OK &&
               tmoe_cuda_expert_kernel_supports(K[1], TMOE_CUDA_EPI_NONE, &sub) == TMOE_OK;
    if (copies && !(fast && d->fast))
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "lower-precision copies run on the bandwidth kernel, which does not "
                           "take these experts (%s %dx%d%s)",
                           tmoe_etype_name(t), D, I,
                           r->cfg.plain_experts ? ", or the plain kernel was asked for" : "");
    if (!copies) d->fast = fast;
    for (int which = 0; which < 2; which++) {
        uint8_t *hw = NULL;
        tmoe_f16 *hs = NULL;
        size_t wb, sn;
        TRY(host_experts(m, y, which, copies, t, &hw, &hs, &wb, &sn, err));
        int rc = TMOE_OK;
        tmoe_cuda_lin *L = K[which];
        if (d->fast) {
            void *stage = NULL, *tiled = NULL, *sc = NULL;
            cudaError_t ce = cudaMalloc(&stage, wb * E);
            if (ce != cudaSuccess)
                rc = tmoe_errorf(err, TMOE_ENOMEM, "%s:%d: cudaMalloc of %zu staging bytes: %s",
                                 __FILE__, __LINE__, wb * E, cudaGetErrorString(ce));
            if (!rc) rc = tmoe_cuda_upload(stage, hw, wb * E, r->st, err);
            if (!rc) rc = dev_alloc(r, &tiled, wb * E, err);
            if (!rc) rc = tmoe_cuda_tile_weights(stage, tiled, L->out, wb / L->out, E, r->st, err);
            if (!rc && (ce = cudaStreamSynchronize(r->st)) != cudaSuccess)
                rc = tmoe_errorf(err, TMOE_EDEVICE, "%s:%d: tiling: %s", __FILE__, __LINE__,
                                 cudaGetErrorString(ce));
            if (stage) TMOE_CUDA_WARN(cudaFree(stage));
            if (!rc && sn) rc = upload(r, &sc, hs, sizeof(tmoe_f16) * sn * E, err);
            r->weight_bytes += wb * E;
            L->w = tiled;
            L->scales = sc;
        } else {
            tmoe_f16 *h16 = (tmoe_f16 *)hw, *conv = NULL;
            if (t != TMOE_ET_FP16) { /* the plain kernel reads fp16 */
                size_t nw = (size_t)L->out * L->in;
                conv = tmoe_malloc(sizeof(tmoe_f16) * nw * E, err);
                if (!conv) rc = TMOE_ENOMEM;
                for (int e = 0; e < E && !rc; e++) {
                    if (t == TMOE_ET_BF16) { /* bf16 -> fp16 (rounds mantissa, clamps range) */
                        const tmoe_bf16 *b = (const tmoe_bf16 *)(hw + wb * e);
                        for (size_t i = 0; i < nw; i++)
                            conv[(size_t)e * nw + i] = tmoe_f32_to_f16(tmoe_bf16_to_f32(b[i]));
                    } else {
                        tmoe_dequantize_f16(t, hw + wb * e, hs + sn * e, L->out, L->in, G,
                                            conv + (size_t)e * nw);
                    }
                }
                h16 = conv;
            }
            if (!rc)
                rc = upload(r, (void **)(which ? &d->ew2 : &d->ew13), h16,
                            sizeof(tmoe_f16) * (size_t)L->out * L->in * E, err);
            free(conv);
        }
        free(hw);
        free(hs);
        if (rc)
            return tmoe_error_prefix(err, rc, "%s (%s)", copies ? "expert copies" : "experts",
                                     which ? "down" : "gate/up");
    }
    return TMOE_OK;
}

static int upload_layer(tmoe_cuda_lm *r, const tmoe_lm *m, int l, tmoe_error *err) {
    const tmoe_lm_config *c = &m->cfg;
    const tmoe_lm_layer *y = &m->layers[l];
    lm_layer_dev *d = &r->L[l];
    size_t D = (size_t)c->d_model, qd = (size_t)c->n_heads * c->head_dim,
           kvd = (size_t)c->n_kv_heads * c->head_dim, E = (size_t)c->num_experts;
    d->is_moe = y->is_moe;
    TRY(upload_f32(r, &d->attn_norm, y->attn_norm, D, err));
    TRY(upload_f32(r, &d->mlp_norm, y->mlp_norm, D, err));
    const float *w3[3] = {y->wq, y->wk, y->wv};
    size_t n3[3] = {qd * D, kvd * D, kvd * D};
    TRY(upload_f16_cat(r, &d->wqkv, w3, n3, 3, err));
    d->bqkv = NULL;
    if (y->bq) {
        float *b = tmoe_malloc(sizeof(float) * (qd + 2 * kvd), err);
        if (!b) return TMOE_ENOMEM;
        memcpy(b, y->bq, sizeof(float) * qd);
        memcpy(b + qd, y->bk, sizeof(float) * kvd);
        memcpy(b + qd + kvd, y->bv, sizeof(float) * kvd);
        int rc = upload_f32(r, &d->bqkv, b, qd + 2 * kvd, err);
        free(b);
        TRY(rc);
    }
    size_t qn = c->qk_norm == TMOE_QK_NORM_WHOLE ? qd : (size_t)c->head_dim;
    size_t kn = c->qk_norm == TMOE_QK_NORM_WHOLE ? kvd : (size_t)c->head_dim;
    TRY(upload_f32(r, &d->q_norm, y->q_norm, qn, err));
    TRY(upload_f32(r, &d->k_norm, y->k_norm, kn, err));
    TRY(upload_f16(r, &d->wo, y->wo, D * qd, err));
    TRY(upload_f32(r, &d->bo, y->bo, D, err));
    if (!y->is_moe) {
        TRY(upload_f16(r, &d->mlp_w13, y->mlp_w13, 2 * (size_t)c->d_ff * D, err));
        TRY(upload_f16(r, &d->mlp_w2, y->mlp_w2, D * c->d_ff, err));
    } else {
        TRY(upload_f32(r, &d->router, y->router, E * D, err));
        TRY(upload_experts(r, m, y, d, 0, err));
        if (m->opts.n_copy > 0) TRY(upload_experts(r, m, y, d, 1, err));
        TRY(upload_f16(r, &d->sh_w13, y->sh_w13, 2 * (size_t)c->d_ff_shared * D, err));
        TRY(upload_f16(r, &d->sh_w2, y->sh_w2, D * c->d_ff_shared, err));
        TRY(upload_f32(r, &d->sh_gate, y->sh_gate, D, err));
    }
    size_t cache = (size_t)r->cfg.max_seqs * r->cfg.max_len * kvd * sizeof(float);
    TRY(dev_alloc(r, (void **)&d->kc, cache, err));
    TRY(dev_alloc(r, (void **)&d->vc, cache, err));
    r->kv_bytes += 2 * cache;
    return TMOE_OK;
}

static int max3(int a, int b, int c) {
    int m = a > b ? a : b;
    return m > c ? m : c;
}

static int create_in(tmoe_cuda_lm *r, const tmoe_lm *m, tmoe_error *err) {
    const tmoe_lm_config *c = &m->cfg;
    TMOE_CUDA_CHECK(cudaSetDevice(r->cfg.device_id), err);
    TRY(tmoe_cuda_sm_count(r->cfg.device_id, &r->sm_count, err));
    TMOE_CUDA_CHECK(cudaStreamCreateWithFlags(&r->st, cudaStreamNonBlocking), err);
    CB_CHECK(cublasCreate(&r->cb), err);
    CB_CHECK(cublasSetStream(r->cb, r->st), err);
    /* a workspace of our own, so that no cuBLAS call allocates while a graph is captured */
    TRY(dev_alloc(r, &r->cublas_ws, CUBLAS_WS_BYTES, err));
    CB_CHECK(cublasSetWorkspace(r->cb, r->cublas_ws, CUBLAS_WS_BYTES), err);

    size_t D = (size_t)c->d_model, V = (size_t)c->vocab_size, E = (size_t)c->num_experts;
    size_t T = (size_t)r->cfg.max_tokens, k = (size_t)c->top_k, N = T * k;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    r->qkvd = (int)(qd + 2 * kvd);
    r->max_ff = max3(c->d_ff, c->d_ff_expert, c->d_ff_shared);
    size_t F = (size_t)r->max_ff, NA = N > T ? N : T;

    TRY(upload_f16(r, &r->embed, m->embed, V * D, err));
    if (m->lm_head == m->embed)
        r->lm_head = r->embed;
    else
        TRY(upload_f16(r, &r->lm_head, m->lm_head, V * D, err));
    TRY(upload_f32(r, &r->final_norm, m->final_norm, D, err));
    float *inv = tmoe_malloc(sizeof(float) * (size_t)(c->head_dim / 2 + 1), err);
    if (!inv) return TMOE_ENOMEM;
    for (int i = 0; i < c->head_dim / 2; i++) /* as the CPU reference: fp32 powf */
        inv[i] = 1.0f / powf((float)c->rope_theta, (float)(2 * i) / (float)c->head_dim);
    int rc = upload_f32(r, &r->inv_freq, inv, (size_t)(c->head_dim / 2 + 1), err);
    free(inv);
    TRY(rc);
    int32_t ids[TMOE_MAX_EXPERTS];
    for (int e = 0; e < c->num_experts; e++) ids[e] = e;
    TRY(upload(r, (void **)&r->d_experts, ids, sizeof(int32_t) * E, err));
    r->L = tmoe_calloc((size_t)c->n_layers, sizeof *r->L, err);
    if (!r->L) return TMOE_ENOMEM;
    for (int l = 0; l < c->n_layers; l++) {
        rc = upload_layer(r, m, l, err);
        if (rc) return tmoe_error_prefix(err, rc, "layer %d", l);
    }

    const tmoe_buf ws[] = {
        TMOE_BUF(r->x, T * D * 4),
        TMOE_BUF(r->xn32, T * D * 4),
        TMOE_BUF(r->qkv, T * r->qkvd * 4),
        TMOE_BUF(r->tmp, T * D * 4),
        TMOE_BUF(r->h32, T * 2 * F * 4),
        TMOE_BUF(r->rlogits, T * E * 4),
        TMOE_BUF(r->w, N * 4),
        TMOE_BUF(r->ye, N * D * 4),
        TMOE_BUF(r->logits, T * V * 4),
        TMOE_BUF(r->bias, E * 4),
        TMOE_BUF(r->xn16, T * D * 2),
        TMOE_BUF(r->att16, T * qd * 2),
        TMOE_BUF(r->a16, NA * F * 2),
        TMOE_BUF(r->idx, N * 4),
        TMOE_BUF(r->counts, E * 4),
        TMOE_BUF(r->offsets, (E + 1) * 4),
        TMOE_BUF(r->src, N * 4),
        TMOE_BUF(r->dst, N * 4),
        TMOE_BUF(r->active, (E + 1) * 4),
        TMOE_BUF(r->counts_all, c->n_layers * E * 4),
        TMOE_BUF(r->d_step, 4 * T * 4),
        TMOE_BUF(r->d_slots, 2 * E * 4),
    };
    int n_ws = (int)(sizeof ws / sizeof *ws);
    size_t total = tmoe_bufs_total(ws, n_ws, 256);
    rc = dev_alloc(r, &r->ws, total, err);
    if (rc)
        return tmoe_error_prefix(err, rc, "workspace for %zu tokens (%.1f MB)", T,
                                 (double)total / 1e6);
    tmoe_bufs_carve(ws, n_ws, r->ws, 256);
    TMOE_CUDA_CHECK(cudaMemsetAsync(r->counts_all, 0, (size_t)c->n_layers * E * 4, r->st), err);
    TMOE_CUDA_CHECK(cudaMemsetAsync(r->bias, 0, E * 4, r->st), err);
    TMOE_CUDA_CHECK(cudaHostAlloc((void **)&r->h_step, 4 * T * 4, cudaHostAllocDefault), err);
    r->len = tmoe_calloc((size_t)r->cfg.max_seqs, sizeof *r->len, err);
    r->used = tmoe_calloc((size_t)r->cfg.max_seqs, sizeof *r->used, err);
    r->h_counts = tmoe_calloc((size_t)c->n_layers * E, sizeof *r->h_counts, err);
    if (r->cfg.route) {
        const tmoe_buf host[] = {
            TMOE_BUF(r->h_rlogits, T * E * 4), TMOE_BUF(r->h_bias, E * 4),
            TMOE_BUF(r->h_idx, N * 4),         TMOE_BUF(r->h_w, N * 4),
            TMOE_BUF(r->h_slots, 2 * E * 4),   TMOE_BUF(r->h_use_copy, E),
        };
        int n_host = (int)(sizeof host / sizeof *host);
        TMOE_CUDA_CHECK(
            cudaHostAlloc(&r->h_route, tmoe_bufs_total(host, n_host, 64), cudaHostAllocDefault),
            err);
        tmoe_bufs_carve(host, n_host, r->h_route, 64);
    }
    r->graphs = tmoe_calloc(T + 1, sizeof *r->graphs, err);
    if (!r->len || !r->used || !r->h_counts || !r->graphs) return TMOE_ENOMEM;
    if (r->cfg.shadow_d_model > 0) {
        int n_moe = 0;
        for (int l = 0; l < c->n_layers; l++) n_moe += r->L[l].is_moe;
        tmoe_cuda_shadow_config sc = {.d_model = r->cfg.shadow_d_model,
                                      .d_ff = r->cfg.shadow_d_ff,
                                      .num_experts = c->num_experts,
                                      .top_k = c->top_k,
                                      .max_tokens = r->cfg.max_tokens,
                                      .n_layers = n_moe,
                                      .type = r->cfg.shadow_type,
                                      .group = r->cfg.shadow_group,
                                      .act8 =
                                          tmoe_etype_is_quant(r->cfg.shadow_type) && m->opts.act8,
                                      .max_bytes = r->cfg.shadow_max_bytes,
                                      .seed = 0x7368616430ull,
                                      .sm_count = r->sm_count};
        tmoe_cuda_shadow_config cc = sc; /* the copies' experts, in the copy type */
        cc.type = m->opts.copy_type;
        cc.act8 = tmoe_etype_is_quant(cc.type) && m->opts.act8;
        cc.seed = sc.seed ^ 0x636f707973ull;
        if (r->n_copy) { /* the memory in proportion to a set of each */
            size_t limit = sc.max_bytes;
            if (!limit) {
                size_t free_b = 0, total_b = 0;
                TMOE_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b), err);
                limit = free_b > ((size_t)4 << 30) ? free_b - ((size_t)4 << 30) : 0;
            }
            double a = (double)tmoe_cuda_shadow_set_bytes(&sc),
                   b = (double)tmoe_cuda_shadow_set_bytes(&cc);
            sc.max_bytes = (size_t)((double)limit * a / (a + b));
            cc.max_bytes = limit - sc.max_bytes;
        }
        TRY(tmoe_cuda_shadow_create(&sc, r->st, &r->shadow, err));
        if (r->n_copy) TRY(tmoe_cuda_shadow_create(&cc, r->st, &r->shadow_copy, err));
        /* the MoE layers in order: layer l's set is its MoE index mod the sets */
        for (int l = 0, i = 0; l < c->n_layers; l++) r->L[l].moe_index = r->L[l].is_moe ? i++ : -1;
    }
    TMOE_CUDA_CHECK(cudaStreamSynchronize(r->st), err);
    return TMOE_OK;
}

int tmoe_cuda_lm_create(const tmoe_lm *m, const tmoe_cuda_lm_config *cfg, tmoe_cuda_lm **out,
                        tmoe_error *err) {
    *out = NULL;
    const tmoe_lm_config *c = &m->cfg;
    if (cfg->max_tokens < 1 || cfg->max_seqs < 1 || cfg->max_len < 1)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "max_tokens %d, max_seqs %d, max_len %d: each must "
                           "be positive",
                           cfg->max_tokens, cfg->max_seqs, cfg->max_len);
    if (c->head_dim > 256 || c->head_dim % 2)
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "head_dim %d: the CUDA attention takes even "
                           "head_dim up to 256",
                           c->head_dim);
    if (c->num_experts > 256)
        return tmoe_errorf(err, TMOE_ENOTSUP, "%d experts: the CUDA permute takes at most 256",
                           c->num_experts);
    if (m->opts.n_types > 0 && !m->opts.experts_f32)
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "one type per expert: the CUDA decoder runs one type for every "
                           "expert; use --backend cpu");
    tmoe_cuda_lm *r = tmoe_calloc(1, sizeof *r, err);
    if (!r) return TMOE_ENOMEM;
    r->c = *c;
    r->cfg = *cfg;
    for (int e = 0; e < c->num_experts; e++)
        r->n_copy += r->copy[e] = (unsigned char)tmoe_lm_has_copy(&m->opts, e);
    int rc = create_in(r, m, err);
    if (rc) {
        tmoe_cuda_lm_free(r);
        return rc;
    }
    *out = r;
    return TMOE_OK;
}

int tmoe_cuda_lm_seq_open(tmoe_cuda_lm *r, int *slot, tmoe_error *err) {
    for (int s = 0; s < r->cfg.max_seqs; s++)
        if (!r->used[s]) {
            r->used[s] = 1;
            r->len[s] = 0;
            *slot = s;
            return TMOE_OK;
        }
    *slot = -1;
    return tmoe_errorf(err, TMOE_EINVAL, "all %d KV cache slots are in use", r->cfg.max_seqs);
}

void tmoe_cuda_lm_seq_close(tmoe_cuda_lm *r, int slot) {
    if (slot < 0 || slot >= r->cfg.max_seqs) return;
    r->used[slot] = 0;
    r->len[slot] = 0;
}

int tmoe_cuda_lm_seq_len(const tmoe_cuda_lm *r, int slot) {
    return slot >= 0 && slot < r->cfg.max_seqs && r->used[slot] ? r->len[slot] : -1;
}

const int32_t *tmoe_cuda_lm_expert_counts(const tmoe_cuda_lm *r) {
    return r->h_counts;
}

int tmoe_cuda_lm_fast_experts(const tmoe_cuda_lm *r, int layer) {
    if (layer < 0 || layer >= r->c.n_layers || !r->L[layer].is_moe) return -1;
    return r->L[layer].fast;
}

size_t tmoe_cuda_lm_weight_bytes(const tmoe_cuda_lm *r) {
    return r->weight_bytes;
}

size_t tmoe_cuda_lm_kv_bytes(const tmoe_cuda_lm *r) {
    return r->kv_bytes;
}

int tmoe_cuda_lm_shadow_sets(const tmoe_cuda_lm *r) {
    return tmoe_cuda_shadow_sets(r->shadow);
}

size_t tmoe_cuda_lm_shadow_bytes(const tmoe_cuda_lm *r) {
    return tmoe_cuda_shadow_bytes(r->shadow);
}

/* ---- the step ----------------------------------------------------------------------- */
/* y (n, out) fp32 = x (n, in) fp16 . W^T + beta y, W (out, in) fp16. */
static int gemm16(tmoe_cuda_lm *r, const tmoe_f16 *x, const tmoe_f16 *W, int n, int in, int out,
                  float *y, float beta, tmoe_error *err) {
    const float one = 1.0f;
    CB_CHECK(cublasGemmEx(r->cb, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, W, CUDA_R_16F, in, x,
                          CUDA_R_16F, in, &beta, y, CUDA_R_32F, out, CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT),
             err);
    return TMOE_OK;
}

/* y (n, out) fp32 = x (n, in) fp32 . W^T in full fp32 (the router). */
static int gemm32(tmoe_cuda_lm *r, const float *x, const float *W, int n, int in, int out, float *y,
                  tmoe_error *err) {
    const float one = 1.0f, zero = 0.0f;
    CB_CHECK(cublasGemmEx(r->cb, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, W, CUDA_R_32F, in, x,
                          CUDA_R_32F, in, &zero, y, CUDA_R_32F, out, CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT),
             err);
    return TMOE_OK;
}

/* SwiGLU MLP on T rows of xn16: y (T, D) = W2 (silu(gate) * up) + beta y. */
static int swiglu(tmoe_cuda_lm *r, const tmoe_f16 *w13, const tmoe_f16 *w2, int I, int T, float *y,
                  float beta, tmoe_error *err) {
    int D = r->c.d_model;
    TRY(gemm16(r, r->xn16, w13, T, D, 2 * I, r->h32, 0.0f, err));
    TRY(tmoe_cuda_act(TMOE_ACT_SWIGLU, r->h32, T, I, r->a16, r->st, err));
    return gemm16(r, r->a16, w2, T, I, D, y, beta, err);
}

static int moe(tmoe_cuda_lm *r, int l, int T, tmoe_error *err) {
    const tmoe_lm_config *c = &r->c;
    const lm_layer_dev *d = &r->L[l];
    int D = c->d_model, E = c->num_experts, k = c->top_k, I = c->d_ff_expert, N = T * k;
    TRY(gemm32(r, r->xn32, d->router, T, D, E, r->rlogits, err));
    const float *bias = NULL;
    tmoe_lm_route_out ro = {r->h_bias, NULL, NULL, k, 0, NULL};
    int n_use = 0; /* experts the hook runs as their copies */
    if (r->cfg.route) {
        ro.idx = r->h_idx;
        ro.w = r->h_w;
        ro.use_copy = r->h_use_copy;
        memset(r->h_use_copy, 0, (size_t)E);
        TMOE_CUDA_CHECK(cudaMemcpyAsync(r->h_rlogits, r->rlogits, sizeof(float) * (size_t)T * E,
                                        cudaMemcpyDeviceToHost, r->st),
                        err);
        TMOE_CUDA_CHECK(cudaStreamSynchronize(r->st), err);
        memset(r->h_bias, 0, sizeof(float) * (size_t)E);
        TRY(r->cfg.route(r->cfg.route_user, l, r->h_rlogits, T, E, &ro, err));
        TMOE_CUDA_CHECK(cudaMemcpyAsync(r->bias, r->h_bias, sizeof(float) * (size_t)E,
                                        cudaMemcpyHostToDevice, r->st),
                        err);
        bias = r->bias;
        for (int e = 0; e < E; e++) {
            if (!r->h_use_copy[e]) continue;
            if (!r->copy[e])
                return tmoe_errorf(err, TMOE_EINVAL,
                                   "layer %d: the route hook runs expert %d's copy, but the model "
                                   "holds none",
                                   l, e);
            n_use++;
        }
        if (n_use) { /* slot maps: the experts' pass skips the copied, the copies' the rest */
            for (int e = 0; e < E; e++) {
                r->h_slots[e] = r->h_use_copy[e] ? -1 : e;
                r->h_slots[E + e] = r->h_use_copy[e] ? e : -1;
            }
            TMOE_CUDA_CHECK(cudaMemcpyAsync(r->d_slots, r->h_slots, sizeof(int32_t) * 2 * (size_t)E,
                                            cudaMemcpyHostToDevice, r->st),
                            err);
        }
    }
    /* rows of one expert: at most T from top-k; Nr rows in all */
    int max_n = T, Nr = N;
    if (ro.selected) { /* the hook's own selection (padded slots carry weight 0) */
        for (int i = 0; i < N; i++)
            if (r->h_idx[i] < 0 || r->h_idx[i] >= E)
                return tmoe_errorf(err, TMOE_EINVAL,
                                   "layer %d: the route hook's selection has expert %d at token "
                                   "%d slot %d, expected 0..%d",
                                   l, r->h_idx[i], i / k, i % k, E - 1);
        /* a padded slot is not run: permute counts no expert -1, combine skips weight 0; the
         * launches are sized from the rows that remain */
        int32_t hc[TMOE_MAX_EXPERTS] = {0};
        Nr = max_n = 0;
        for (int i = 0; i < N; i++) {
            if (r->h_w[i] == 0.0f) {
                r->h_idx[i] = -1;
                continue;
            }
            Nr++;
            if (++hc[r->h_idx[i]] > max_n) max_n = hc[r->h_idx[i]];
        }
        TMOE_CUDA_CHECK(cudaMemcpyAsync(r->idx, r->h_idx, sizeof(int32_t) * (size_t)N,
                                        cudaMemcpyHostToDevice, r->st),
                        err);
        TMOE_CUDA_CHECK(
            cudaMemcpyAsync(r->w, r->h_w, sizeof(float) * (size_t)N, cudaMemcpyHostToDevice, r->st),
            err);
    } else {
        TRY(tmoe_cuda_gate_topk(r->rlogits, bias, T, E, k, c->norm_topk_prob,
                                r->cfg.bias_in_weights, r->idx, r->w, NULL, NULL, r->st, err));
    }
    /* The uploads above read pinned host buffers when they run. No sync here: the host
     * writes them again only after the next layer's synchronize (after its logits copy),
     * and a step ends with a synchronize before its logits are read. */
    TRY(tmoe_cuda_permute(r->idx, T, k, E, r->counts, r->offsets, r->src, r->dst, r->active, NULL,
                          r->st, err));
    TMOE_CUDA_CHECK(cudaMemcpyAsync(r->counts_all + (size_t)l * E, r->counts, sizeof(int32_t) * E,
                                    cudaMemcpyDeviceToDevice, r->st),
                    err);
    if (d->fast) {
        /* with copies, two passes over the same active list, each skipping the other's
         * experts (slot -1): every row is written once, fc1 before fc2 (one stream) */
        int max_active = Nr < E ? Nr : E;
        const int32_t *sk = n_use ? r->d_slots : NULL, *sc = n_use ? r->d_slots + E : NULL;
        TRY(tmoe_cuda_expert_linear(&d->k1, TMOE_CUDA_EPI_SWIGLU, E, r->d_experts, r->active, sk,
                                    r->counts, r->offsets, r->xn16, r->src, k, max_n, Nr,
                                    max_active, NULL, r->a16, r->st, err));
        if (n_use)
            TRY(tmoe_cuda_expert_linear(&d->c1, TMOE_CUDA_EPI_SWIGLU, E, r->d_experts, r->active,
                                        sc, r->counts, r->offsets, r->xn16, r->src, k, max_n, Nr,
                                        max_active, NULL, r->a16, r->st, err));
        TRY(tmoe_cuda_expert_linear(&d->k2, TMOE_CUDA_EPI_NONE, E, r->d_experts, r->active, sk,
                                    r->counts, r->offsets, r->a16, NULL, 1, max_n, Nr, max_active,
                                    r->ye, NULL, r->st, err));
        if (n_use)
            TRY(tmoe_cuda_expert_linear(&d->c2, TMOE_CUDA_EPI_NONE, E, r->d_experts, r->active, sc,
                                        r->counts, r->offsets, r->a16, NULL, 1, max_n, Nr,
                                        max_active, r->ye, NULL, r->st, err));
    } else {
        TRY(tmoe_cuda_lm_expert_fc1_simple(r->xn16, r->src, k, r->offsets, E, Nr, d->ew13, D, I,
                                           r->a16, r->st, err));
        TRY(tmoe_cuda_lm_expert_fc2_simple(r->a16, r->offsets, E, Nr, d->ew2, D, I, r->ye, r->st,
                                           err));
    }
    /* x = x + sum_j w ye (each element read and written by one thread) */
    TRY(tmoe_cuda_combine(r->ye, r->dst, r->w, r->x, T, k, D, r->x, r->st, err));
    if (r->shadow) { /* the same selections through the production-shape experts */
        TRY(tmoe_cuda_shadow_run(r->shadow, d->moe_index, r->d_experts, r->active,
                                 n_use ? r->d_slots : NULL, r->counts, r->offsets, r->src, r->dst,
                                 r->w, T, max_n, r->st, err));
        if (n_use)
            TRY(tmoe_cuda_shadow_run(r->shadow_copy, d->moe_index, r->d_experts, r->active,
                                     r->d_slots + E, r->counts, r->offsets, r->src, r->dst, r->w, T,
                                     max_n, r->st, err));
    }
    if (d->sh_w13) {
        TRY(swiglu(r, d->sh_w13, d->sh_w2, c->d_ff_shared, T, r->tmp, 0.0f, err));
        TRY(tmoe_cuda_lm_shared_add(r->x, r->tmp, r->xn32, d->sh_gate, T, D, r->st, err));
    }
    return TMOE_OK;
}

/* Everything of one step from the token ids in d_step to the logits of its R rows. */
static int enqueue(tmoe_cuda_lm *r, int T, int R, tmoe_error *err) {
    const tmoe_lm_config *c = &r->c;
    int D = c->d_model, V = c->vocab_size, Tm = r->cfg.max_tokens;
    int qd = c->n_heads * c->head_dim;
    const uint32_t *tok = (const uint32_t *)r->d_step;
    const int32_t *pos = r->d_step + Tm, *slot = r->d_step + 2 * Tm, *rows = r->d_step + 3 * Tm;
    TRY(tmoe_cuda_lm_embed(r->embed, tok, T, D, r->x, r->st, err));
    for (int l = 0; l < c->n_layers; l++) {
        const lm_layer_dev *d = &r->L[l];
        TRY(tmoe_cuda_lm_rmsnorm(r->x, NULL, d->attn_norm, T, D, c->rms_eps, r->xn16, NULL, r->st,
                                 err));
        TRY(gemm16(r, r->xn16, d->wqkv, T, D, r->qkvd, r->qkv, 0.0f, err));
        const int kvd = c->n_kv_heads * c->head_dim;
        tmoe_cuda_qkv_args a = {.qkv = r->qkv,
                                .bq = d->bqkv,
                                .bk = d->bqkv ? d->bqkv + qd : NULL,
                                .bv = d->bqkv ? d->bqkv + qd + kvd : NULL,
                                .qn = d->q_norm,
                                .kn = d->k_norm,
                                .inv_freq = r->inv_freq,
                                .pos = pos,
                                .slot = slot,
                                .kc = d->kc,
                                .vc = d->vc,
                                .T = T,
                                .H = c->n_heads,
                                .KV = c->n_kv_heads,
                                .hd = c->head_dim,
                                .qk_norm = c->qk_norm == TMOE_QK_NORM_WHOLE      ? 1
                                           : c->qk_norm == TMOE_QK_NORM_PER_HEAD ? 2
                                                                                 : 0,
                                .max_len = r->cfg.max_len,
                                .eps = c->rms_eps,
                                .clip = c->clip_qkv};
        TRY(tmoe_cuda_lm_qkv_post(&a, r->st, err));
        TRY(tmoe_cuda_lm_attention(r->qkv, d->kc, d->vc, pos, slot, T, c->n_heads, c->n_kv_heads,
                                   c->head_dim, r->cfg.max_len, c->sliding_window, r->att16, r->st,
                                   err));
        TRY(gemm16(r, r->att16, d->wo, T, qd, D, r->x, 1.0f, err)); /* + residual */
        if (d->bo) TRY(tmoe_cuda_lm_add_bias(r->x, d->bo, T, D, r->st, err));
        TRY(tmoe_cuda_lm_rmsnorm(r->x, NULL, d->mlp_norm, T, D, c->rms_eps, r->xn16,
                                 d->is_moe ? r->xn32 : NULL, r->st, err));
        if (d->is_moe) {
            int rc = moe(r, l, T, err);
            if (rc) return tmoe_error_prefix(err, rc, "layer %d", l);
        } else {
            TRY(swiglu(r, d->mlp_w13, d->mlp_w2, c->d_ff, T, r->x, 1.0f, err));
        }
    }
    TRY(tmoe_cuda_lm_rmsnorm(r->x, rows, r->final_norm, R, D, c->rms_eps, r->xn16, NULL, r->st,
                             err));
    return gemm16(r, r->xn16, r->lm_head, R, D, V, r->logits, 0.0f, err);
}

/* Capture the decode step of T sequences once, replay it after. */
/* A decode step of T tokens, T rows of logits: what the graph of batch size T replays. */
typedef struct decode_step {
    tmoe_cuda_lm *r;
    int T;
} decode_step;

static int enqueue_decode(void *ctx, tmoe_error *err) {
    decode_step *d = ctx;
    return enqueue(d->r, d->T, d->T, err);
}

static int run_graph(tmoe_cuda_lm *r, int T, tmoe_error *err) {
    decode_step d = {r, T};
    return tmoe_cuda_graph_run(&r->graphs[T], r->st, enqueue_decode, &d, err);
}

static int check_batch(const tmoe_cuda_lm *r, const tmoe_lm_batch *b, int *T_out, tmoe_error *err) {
    const tmoe_lm_config *c = &r->c;
    tmoe_lm_slots sl = {r->len,         r->used,          r->cfg.max_seqs,
                        r->cfg.max_len, c->max_positions, r->cfg.max_tokens};
    int rc = tmoe_lm_batch_check(b, &sl, c->vocab_size, T_out, err);
    if (!rc && *T_out < 1) rc = tmoe_errorf(err, TMOE_EINVAL, "an empty batch");
    return rc;
}

int tmoe_cuda_lm_forward(tmoe_cuda_lm *r, const tmoe_lm_batch *b, float *logits, tmoe_error *err) {
    const tmoe_lm_config *c = &r->c;
    int T = 0, Tm = r->cfg.max_tokens, rc = check_batch(r, b, &T, err);
    if (rc) return rc;
    int R = b->logits_all ? T : b->nseq, decode = 1;
    int32_t *pos = r->h_step + Tm, *slot = r->h_step + 2 * Tm, *rows = r->h_step + 3 * Tm;
    memcpy(r->h_step, b->tokens, sizeof(uint32_t) * (size_t)T);
    for (int i = 0, t = 0; i < b->nseq; i++) {
        decode &= b->n_new[i] == 1;
        for (int j = 0; j < b->n_new[i]; j++, t++) {
            slot[t] = b->slots[i];
            pos[t] = r->len[b->slots[i]] + j;
        }
        if (!b->logits_all) rows[i] = t - 1;
    }
    if (b->logits_all)
        for (int t = 0; t < T; t++) rows[t] = t;
    TMOE_CUDA_CHECK(cudaMemcpyAsync(r->d_step, r->h_step, sizeof(int32_t) * 4 * (size_t)Tm,
                                    cudaMemcpyHostToDevice, r->st),
                    err);
    if (decode && r->cfg.use_graphs && !r->cfg.route)
        rc = run_graph(r, T, err);
    else
        rc = enqueue(r, T, R, err);
    if (rc) {
        /* let what was enqueued finish before the caller reuses anything */
        TMOE_CUDA_WARN(cudaStreamSynchronize(r->st));
        return rc;
    }
    TMOE_CUDA_CHECK(cudaMemcpyAsync(logits, r->logits, sizeof(float) * (size_t)R * c->vocab_size,
                                    cudaMemcpyDeviceToHost, r->st),
                    err);
    TMOE_CUDA_CHECK(cudaMemcpyAsync(r->h_counts, r->counts_all,
                                    sizeof(int32_t) * (size_t)c->n_layers * c->num_experts,
                                    cudaMemcpyDeviceToHost, r->st),
                    err);
    TMOE_CUDA_CHECK(cudaStreamSynchronize(r->st), err);
    for (int i = 0; i < b->nseq; i++) r->len[b->slots[i]] += b->n_new[i];
    return TMOE_OK;
}
