/* The CUDA backend: the block's weights on the device, one workspace sized at create time
 * for max_tokens, cuBLAS for the dense projections (attention, gate, large expert batches),
 * the kernels of the *.cu files beside it for the rest, CUDA events for the per-op times and a CUDA
 * Graph of the MoE step per token count.
 *
 * The MoE step runs without a host sync: top-k, permute, the experts (one launch per weight
 * type serves every expert; blocks of experts without tokens exit at once) and combine read
 * the routing from device memory; routing and token counts reach the host through mapped
 * pinned memory and are read after the step's last event. The one exception is the cuBLAS
 * path for large batches (average tokens per expert >= tmoe_cuda_cublas_min_tokens): cuBLAS
 * needs each expert's row count on the host, so the step waits for permute's counts there
 * and is not captured in a graph. expert_ms is NAN: one launch serves every expert.
 * q4/q2 experts run fused or unfused as configured, or, with impl_auto, per step from the
 * measured crossovers (tmoe_engine_choose_impl; docs/cuda.md "Fused or unfused, kernel or
 * cuBLAS"). */
#include "backend/backend_internal.h"
#include "cublas_util.h"
#include "cuda_engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* fp16 / bf16 (and unfused) experts go through cuBLAS, one GEMM per expert, when the average tokens
 * per expert reach tmoe_cuda_cublas_min_tokens and each expert matrix has at least
 * tmoe_cuda_cublas_min_weights weights; else the bandwidth kernel wins. Measured on the H100
 * (bench/results/h100.md): mixtral experts 16 tokens kernel, 64 tokens cuBLAS; the
 * fine-grained 768 x 2048 experts lose with per-expert cuBLAS calls even at 64 tokens each. */
int tmoe_cuda_cublas_min_tokens = 64;
long tmoe_cuda_cublas_min_weights = 8L << 20;

enum { EV_START, EV_TOPK, EV_PERMUTE, EV_DEQUANT, EV_FC1, EV_ACT, EV_FC2, EV_COMBINE, EV_MOE_N };
enum { EB_START, EB_NORM1, EB_QKV, EB_CORE, EB_OUT, EB_NORM2, EB_GATE, EV_BEGIN_N };

typedef struct type_group {
    int n;                  /* experts of this type */
    int32_t *d_experts;     /* (n) expert ids, device */
    int32_t *d_slot_of;     /* (E) expert -> slot in this group, -1 for other types */
    tmoe_cuda_lin fc1, fc2; /* row-major weights (cuBLAS, dequant); w NULL for fused q4/q2 */
    tmoe_cuda_lin k1, k2;   /* what the bandwidth kernel reads for fp16 / bf16 and fused q4/q2:
                               tiled where the shape allows, else row-major */
    tmoe_cuda_lin ku1, ku2; /* unfused q4/q2: the row-major fp16 dequant output (u1, u2) the
                               kernel or cuBLAS reads */
    tmoe_f16 *u1, *u2;      /* unfused fp16 copies (n, out, in), quantized types only */
} type_group;

typedef struct cuda_state {
    const tmoe_block *blk;
    tmoe_engine_config cfg;
    cudaStream_t st;
    cublasHandle_t cb;
    int T, moe_only, cublas_step, capturing;
    int step_unf[TMOE_ET_COUNT]; /* this step runs the q4/q2 experts of type t unfused */
    int expert_rows; /* rows the experts may see in one step (h32, a16); 0 = max_tokens x k */
    int no_gate;     /* begin stops after norm2: the caller computes the gate itself */
    int sm_count;    /* multiprocessors of cfg.device_id, queried once at create */
    /* weights */
    void *wmem[8 * TMOE_ET_COUNT + 8];
    int n_wmem;
    tmoe_f16 *wqkv, *wo, *gate;
    float *norm1, *norm2;
    type_group grp[TMOE_ET_COUNT];
    int slot_of[TMOE_MAX_EXPERTS];
    /* workspace */
    void *ws;
    float *x, *tmp, *qkv32, *S, *logits, *w, *ye, *h32, *y;
    tmoe_f16 *h16, *qkv16, *att16, *P16, *xg, *a16;
    tmoe_bf16 *xb; /* bf16 experts on cuBLAS: one expert's rows rounded to bf16, (max(N D, NR F));
                      empty without bf16 experts */
    int32_t *idx, *counts, *offsets, *src, *dst, *active;
    /* mapped pinned host memory */
    void *host;
    float *h_bias, *h_w;
    int32_t *h_counts, *h_idx;
    float *d_bias, *d_hw;
    int32_t *d_hcounts, *d_hidx;
    cudaEvent_t ev[EV_MOE_N], evb[EV_BEGIN_N];
    cudaGraphExec_t *graphs; /* (max_tokens + 1) */
} cuda_state;

int tmoe_cuda_probe(tmoe_error *err) {
    int n = 0;
    cudaError_t ce = cudaGetDeviceCount(&n);
    if (ce != cudaSuccess)
        return tmoe_errorf(err, TMOE_ENODEV, "no CUDA device: cudaGetDeviceCount: %s",
                           cudaGetErrorString(ce));
    if (n < 1) return tmoe_errorf(err, TMOE_ENODEV, "no CUDA device: the driver reports none");
    return TMOE_OK;
}

/* Teardown (also of a half-created state): every failure is logged, nothing stops it. */
static void cuda_destroy(void *p) {
    cuda_state *s = p;
    if (!s) return;
    if (s->st) TMOE_CUDA_WARN(cudaStreamSynchronize(s->st));
    if (s->graphs) {
        for (int t = 0; t <= s->cfg.max_tokens; t++)
            if (s->graphs[t]) TMOE_CUDA_WARN(cudaGraphExecDestroy(s->graphs[t]));
        free(s->graphs);
    }
    for (int i = 0; i < EV_MOE_N; i++)
        if (s->ev[i]) TMOE_CUDA_WARN(cudaEventDestroy(s->ev[i]));
    for (int i = 0; i < EV_BEGIN_N; i++)
        if (s->evb[i]) TMOE_CUDA_WARN(cudaEventDestroy(s->evb[i]));
    for (int i = 0; i < s->n_wmem; i++) TMOE_CUDA_WARN(cudaFree(s->wmem[i]));
    if (s->ws) TMOE_CUDA_WARN(cudaFree(s->ws));
    if (s->host) TMOE_CUDA_WARN(cudaFreeHost(s->host));
    if (s->cb) CB_WARN(cublasDestroy(s->cb));
    if (s->st) TMOE_CUDA_WARN(cudaStreamDestroy(s->st));
    free(s);
}

static int dev_alloc(cuda_state *s, void **p, size_t n, tmoe_error *err) {
    TMOE_ASSERT(s->n_wmem < (int)(sizeof s->wmem / sizeof *s->wmem));
    cudaError_t ce = cudaMalloc(p, n ? n : 1);
    if (ce != cudaSuccess)
        return tmoe_errorf(err, TMOE_ENOMEM, "%s:%d: cudaMalloc of %zu bytes: %s", __FILE__,
                           __LINE__, n, cudaGetErrorString(ce));
    s->wmem[s->n_wmem++] = *p;
    return TMOE_OK;
}

static int upload(cuda_state *s, void **dst, const void *src, size_t n, tmoe_error *err) {
    TRY(dev_alloc(s, dst, n, err));
    return tmoe_cuda_upload(*dst, src, n, s->st, err);
}

/* Copy every expert of type t into slot order; fill the group's linears. */
static int upload_group(cuda_state *s, tmoe_etype t, tmoe_error *err) {
    const tmoe_block *b = s->blk;
    type_group *g = &s->grp[t];
    int E = b->cfg.num_experts, ids[TMOE_MAX_EXPERTS];
    g->n = 0;
    for (int e = 0; e < E; e++)
        if (b->types[e] == t) {
            s->slot_of[e] = g->n;
            ids[g->n++] = e;
        }
    if (!g->n) return TMOE_OK;
    TRY(upload(s, (void **)&g->d_experts, ids, sizeof(int32_t) * g->n, err));
    int32_t slot_of[TMOE_MAX_EXPERTS];
    for (int e = 0; e < E; e++) slot_of[e] = (int)b->types[e] == (int)t ? s->slot_of[e] : -1;
    TRY(upload(s, (void **)&g->d_slot_of, slot_of, sizeof(int32_t) * E, err));
    /* quantized types keep what their impls need: fused the tiled packed weights, unfused the
     * row-major packed ones and an fp16 buffer; impl_auto both (a step may take either) */
    int quant = tmoe_etype_is_quant(t);
    int need_f = quant && (s->cfg.impl == TMOE_IMPL_FUSED || s->cfg.impl_auto);
    int need_u = quant && (s->cfg.impl == TMOE_IMPL_UNFUSED || s->cfg.impl_auto);
    int staging = need_f && !need_u; /* the row-major copy only feeds the tiling */
    for (int which = 0; which < 2; which++) {
        const tmoe_linear *l0 = which ? &b->moe.experts[ids[0]].fc2 : &b->moe.experts[ids[0]].fc1;
        tmoe_cuda_lin *L = which ? &g->fc2 : &g->fc1, *K = which ? &g->k2 : &g->k1;
        tmoe_cuda_lin *KU = which ? &g->ku2 : &g->ku1;
        L->type = t;
        L->out = l0->out;
        L->in = l0->in;
        L->group = l0->group;
        L->act8 = l0->act8;
        L->w_stride = tmoe_quant_weight_bytes(t, l0->out, l0->in);
        L->s_stride = quant ? tmoe_quant_scale_count(l0->out, l0->in, l0->group) : 0;
        L->tiled = 0;
        L->sm_count = s->sm_count;
        void *w = NULL, *sc = NULL, *wt = NULL;
        if (L->s_stride) TRY(dev_alloc(s, &sc, L->s_stride * 2 * g->n, err));
        if (staging) {
            TMOE_CUDA_CHECK(cudaMalloc(&w, L->w_stride * g->n), err); /* staging, freed below */
        } else {
            TRY(dev_alloc(s, &w, L->w_stride * g->n, err));
        }
        int rc = TMOE_OK;
        for (int i = 0; i < g->n && !rc; i++) {
            const tmoe_linear *l =
                which ? &b->moe.experts[ids[i]].fc2 : &b->moe.experts[ids[i]].fc1;
            const void *hw = quant ? (const void *)l->q : (const void *)l->w;
            rc = tmoe_cuda_upload((uint8_t *)w + L->w_stride * i, hw, L->w_stride, s->st, err);
            if (!rc && L->s_stride)
                rc = tmoe_cuda_upload((tmoe_f16 *)sc + L->s_stride * i, l->scales, L->s_stride * 2,
                                      s->st, err);
        }
        L->w = w;
        L->scales = sc;
        *K = *L;
        if (!rc && (!quant || need_f) && L->out % 16 == 0 &&
            L->w_stride % ((size_t)L->out * 64) == 0) {
            rc = dev_alloc(s, &wt, L->w_stride * g->n, err);
            if (!rc)
                rc = tmoe_cuda_tile_weights(w, wt, L->out, L->w_stride / L->out, g->n, s->st, err);
            if (!rc) {
                cudaError_t ce = cudaStreamSynchronize(s->st);
                if (ce != cudaSuccess)
                    rc = tmoe_errorf(err, TMOE_EDEVICE, "%s:%d: tiling: %s", __FILE__, __LINE__,
                                     cudaGetErrorString(ce));
            }
            K->w = wt;
            K->tiled = 1;
        }
        if (staging && K->tiled) {
            /* the staging copy: the kernel reads the tiled one (after the sync above) */
            cudaError_t ce = cudaFree(w);
            L->w = NULL;
            if (ce != cudaSuccess && !rc)
                rc = tmoe_errorf(err, TMOE_EDEVICE, "%s:%d: cudaFree of the staging weights: %s",
                                 __FILE__, __LINE__, cudaGetErrorString(ce));
        } else if (staging) {
            TMOE_ASSERT(s->n_wmem < (int)(sizeof s->wmem / sizeof *s->wmem));
            s->wmem[s->n_wmem++] = w;
        }
        if (rc) return rc;
        if (need_u) {
            void *u = NULL;
            TRY(dev_alloc(s, &u, (size_t)L->out * L->in * 2 * g->n, err));
            if (which)
                g->u2 = u;
            else
                g->u1 = u;
            *KU = *L;
            KU->type = TMOE_ET_FP16;
            KU->w = u;
            KU->w_stride = (size_t)L->out * L->in * 2;
            KU->scales = NULL;
            KU->s_stride = 0;
            KU->group = 0;
            KU->tiled = 0;
        }
    }
    tmoe_cuda_epi epi1 = b->cfg.act == TMOE_ACT_SWIGLU ? TMOE_CUDA_EPI_SWIGLU : TMOE_CUDA_EPI_RELU;
    if (need_u) {
        tmoe_error sub = {0};
        if (tmoe_cuda_dequant_unpack(&g->fc1, 0, NULL, NULL, NULL, NULL, &sub) == TMOE_ENOTSUP)
            return tmoe_errorf(err, TMOE_ENOTSUP, "%s", sub.msg);
        TRY(tmoe_cuda_expert_kernel_supports(&g->ku1, epi1, err));
        TRY(tmoe_cuda_expert_kernel_supports(&g->ku2, TMOE_CUDA_EPI_NONE, err));
    }
    if (!quant || need_f) {
        TRY(tmoe_cuda_expert_kernel_supports(&g->k1, epi1, err));
        TRY(tmoe_cuda_expert_kernel_supports(&g->k2, TMOE_CUDA_EPI_NONE, err));
    }
    return TMOE_OK;
}

static int cuda_create_in(cuda_state *s, tmoe_error *err) {
    const tmoe_block *b = s->blk;
    TMOE_CUDA_CHECK(cudaSetDevice(s->cfg.device_id), err);
    TRY(tmoe_cuda_sm_count(s->cfg.device_id, &s->sm_count, err));
    TMOE_CUDA_CHECK(cudaStreamCreateWithFlags(&s->st, cudaStreamNonBlocking), err);
    CB_CHECK(cublasCreate(&s->cb), err);
    CB_CHECK(cublasSetStream(s->cb, s->st), err);
    for (int i = 0; i < EV_MOE_N; i++) TMOE_CUDA_CHECK(cudaEventCreate(&s->ev[i]), err);
    for (int i = 0; i < EV_BEGIN_N; i++) TMOE_CUDA_CHECK(cudaEventCreate(&s->evb[i]), err);

    size_t D = (size_t)b->cfg.d_model, E = (size_t)b->cfg.num_experts, k = (size_t)b->cfg.top_k;
    size_t F = (size_t)b->cfg.d_ff, F1 = b->cfg.act == TMOE_ACT_SWIGLU ? 2 * F : F;
    size_t T = (size_t)s->cfg.max_tokens, N = T * k, H = (size_t)b->cfg.n_heads;
    size_t NR = (size_t)s->expert_rows > N ? (size_t)s->expert_rows : N;
    size_t Ta = T < (size_t)b->cfg.seq_len ? T : (size_t)b->cfg.seq_len;

    TRY(upload(s, (void **)&s->wqkv, b->wqkv.w, 3 * D * D * 2, err));
    TRY(upload(s, (void **)&s->wo, b->wo.w, D * D * 2, err));
    TRY(upload(s, (void **)&s->gate, b->moe.gate.w, E * D * 2, err));
    TRY(upload(s, (void **)&s->norm1, b->norm1, D * 4, err));
    TRY(upload(s, (void **)&s->norm2, b->norm2, D * 4, err));
    for (int t = 0; t < TMOE_ET_COUNT; t++) TRY(upload_group(s, (tmoe_etype)t, err));

    const tmoe_buf ws[] = {
        TMOE_BUF(s->x, T * D * 4),
        TMOE_BUF(s->tmp, T * D * 4),
        TMOE_BUF(s->qkv32, T * 3 * D * 4),
        TMOE_BUF(s->S, H * Ta * Ta * 4),
        TMOE_BUF(s->logits, T * E * 4),
        TMOE_BUF(s->w, N * 4),
        TMOE_BUF(s->ye, N * D * 4),
        TMOE_BUF(s->h32, NR * F1 * 4),
        TMOE_BUF(s->y, T * D * 4),
        TMOE_BUF(s->h16, T * D * 2),
        TMOE_BUF(s->qkv16, T * 3 * D * 2),
        TMOE_BUF(s->att16, T * D * 2),
        TMOE_BUF(s->P16, H * Ta * Ta * 2),
        TMOE_BUF(s->xg, N * D * 2),
        TMOE_BUF(s->a16, NR * F * 2),
        TMOE_BUF(s->idx, N * 4),
        TMOE_BUF(s->counts, E * 4),
        TMOE_BUF(s->offsets, (E + 1) * 4),
        TMOE_BUF(s->src, N * 4),
        TMOE_BUF(s->dst, N * 4),
        TMOE_BUF(s->active, (E + 1) * 4),
        TMOE_BUF(s->xb, s->grp[TMOE_ET_BF16].n ? (N * D > NR * F ? N * D : NR * F) * 2 : 0),
    };
    int n_ws = (int)(sizeof ws / sizeof *ws);
    size_t total = tmoe_bufs_total(ws, n_ws, 256); /* cudaMalloc returns 256-aligned memory */
    cudaError_t ce = cudaMalloc(&s->ws, total);
    if (ce != cudaSuccess)
        return tmoe_errorf(err, TMOE_ENOMEM, "%s:%d: workspace of %zu bytes for %zu tokens: %s",
                           __FILE__, __LINE__, total, T, cudaGetErrorString(ce));
    tmoe_bufs_carve(ws, n_ws, s->ws, 256);
    /* mapped pinned host memory: biases in, routing and counts out */
    const tmoe_buf host[] = {
        TMOE_BUF(s->h_bias, E * 4),
        TMOE_BUF(s->h_w, N * 4),
        TMOE_BUF(s->h_counts, E * 4),
        TMOE_BUF(s->h_idx, N * 4),
    };
    int n_host = (int)(sizeof host / sizeof *host);
    size_t hsz = tmoe_bufs_total(host, n_host, 64);
    TMOE_CUDA_CHECK(cudaHostAlloc(&s->host, hsz, cudaHostAllocMapped), err);
    tmoe_bufs_carve(host, n_host, s->host, 64);
    TMOE_CUDA_CHECK(cudaHostGetDevicePointer((void **)&s->d_bias, s->h_bias, 0), err);
    TMOE_CUDA_CHECK(cudaHostGetDevicePointer((void **)&s->d_hw, s->h_w, 0), err);
    TMOE_CUDA_CHECK(cudaHostGetDevicePointer((void **)&s->d_hcounts, s->h_counts, 0), err);
    TMOE_CUDA_CHECK(cudaHostGetDevicePointer((void **)&s->d_hidx, s->h_idx, 0), err);
    s->graphs = tmoe_calloc((size_t)s->cfg.max_tokens + 1, sizeof *s->graphs, err);
    if (!s->graphs) return TMOE_ENOMEM;
    TMOE_CUDA_CHECK(cudaStreamSynchronize(s->st), err);
    return TMOE_OK;
}

static int cuda_create(const tmoe_block *blk, const tmoe_engine_config *cfg, void **out,
                       tmoe_error *err) {
    return tmoe_cuda_state_create(blk, cfg, 0, 1, out, err);
}

int tmoe_cuda_state_create(const tmoe_block *blk, const tmoe_engine_config *cfg, int expert_rows,
                           int with_gate, void **out, tmoe_error *err) {
    cuda_state *s = tmoe_calloc(1, sizeof *s, err);
    if (!s) return TMOE_ENOMEM;
    s->blk = blk;
    s->cfg = *cfg;
    s->expert_rows = expert_rows;
    s->no_gate = !with_gate;
    int rc = cuda_create_in(s, err);
    if (rc) {
        cuda_destroy(s);
        return rc;
    }
    *out = s;
    return TMOE_OK;
}

static int gemm_f16(cuda_state *s, const tmoe_f16 *x, const tmoe_f16 *W, int n, int in, int out,
                    float *y, tmoe_error *err) {
    return tmoe_cublas_gemm_f16(s->cb, x, W, n, in, out, y, err);
}

/* During graph capture an event becomes an event-record node (external), else a plain record. */
static int record(cuda_state *s, cudaEvent_t ev, tmoe_error *err) {
    if (s->capturing)
        TMOE_CUDA_CHECK(cudaEventRecordWithFlags(ev, s->st, cudaEventRecordExternal), err);
    else
        TMOE_CUDA_CHECK(cudaEventRecord(ev, s->st), err);
    return TMOE_OK;
}

static double elapsed(cudaEvent_t a, cudaEvent_t b) {
    float ms = NAN;
    if (cudaEventElapsedTime(&ms, a, b) != cudaSuccess) return NAN;
    return ms;
}

static int cuda_begin(void *p, const float *x, int T, int moe_only, double op_ms[TMOE_OP_COUNT],
                      tmoe_error *err) {
    cuda_state *s = p;
    const tmoe_block *b = s->blk;
    int D = b->cfg.d_model, E = b->cfg.num_experts, H = b->cfg.n_heads, dh = D / H;
    s->T = T;
    s->moe_only = moe_only;
    TMOE_CUDA_CHECK(
        cudaMemcpyAsync(s->x, x, sizeof(float) * (size_t)T * D, cudaMemcpyHostToDevice, s->st),
        err);
    TRY(record(s, s->evb[EB_START], err));
    if (!moe_only) {
        TRY(tmoe_cuda_rmsnorm(s->x, s->norm1, T, D, b->cfg.norm_eps, s->h16, s->st, err));
        TRY(record(s, s->evb[EB_NORM1], err));
        TRY(gemm_f16(s, s->h16, s->wqkv, T, D, 3 * D, s->qkv32, err));
        TRY(tmoe_cuda_to_f16(s->qkv32, (size_t)T * 3 * D, s->qkv16, s->st, err));
        TRY(record(s, s->evb[EB_QKV], err));
        const float one = 1.0f, zero = 0.0f;
        /* causal within each sequence of seq_len tokens (the batch holds ceil(T / seq_len)) */
        for (int t0 = 0; t0 < T; t0 += b->cfg.seq_len) {
            int L = T - t0 < b->cfg.seq_len ? T - t0 : b->cfg.seq_len;
            const tmoe_f16 *q = s->qkv16 + (size_t)t0 * 3 * D;
            /* S^T (L_k x L_q) = K Q^T per head, column-major */
            CB_CHECK(cublasGemmStridedBatchedEx(s->cb, CUBLAS_OP_T, CUBLAS_OP_N, L, L, dh, &one,
                                                q + D, CUDA_R_16F, 3 * D, dh, q, CUDA_R_16F, 3 * D,
                                                dh, &zero, s->S, CUDA_R_32F, L, (long long)L * L, H,
                                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     err);
            TRY(tmoe_cuda_causal_softmax(s->S, H, L, 1.0f / sqrtf((float)dh), s->P16, s->st, err));
            /* O^T (dh x L) = V^T P^T per head */
            CB_CHECK(cublasGemmStridedBatchedEx(s->cb, CUBLAS_OP_N, CUBLAS_OP_N, dh, L, L, &one,
                                                q + 2 * D, CUDA_R_16F, 3 * D, dh, s->P16,
                                                CUDA_R_16F, L, (long long)L * L, &zero,
                                                s->att16 + (size_t)t0 * D, CUDA_R_16F, D, dh, H,
                                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     err);
        }
        TRY(record(s, s->evb[EB_CORE], err));
        TRY(gemm_f16(s, s->att16, s->wo, T, D, D, s->tmp, err));
        TRY(tmoe_cuda_add(s->x, s->tmp, (size_t)T * D, s->st, err));
        TRY(record(s, s->evb[EB_OUT], err));
    }
    TRY(tmoe_cuda_rmsnorm(s->x, s->norm2, T, D, b->cfg.norm_eps, s->h16, s->st, err));
    TRY(record(s, s->evb[EB_NORM2], err));
    if (!s->no_gate) TRY(gemm_f16(s, s->h16, s->gate, T, D, E, s->logits, err));
    TRY(record(s, s->evb[EB_GATE], err));
    TMOE_CUDA_CHECK(cudaEventSynchronize(s->evb[EB_GATE]), err);
    if (!moe_only) {
        tmoe_op_ms_add(op_ms, TMOE_OP_NORM, elapsed(s->evb[EB_START], s->evb[EB_NORM1]));
        tmoe_op_ms_add(op_ms, TMOE_OP_ATTN_QKV, elapsed(s->evb[EB_NORM1], s->evb[EB_QKV]));
        tmoe_op_ms_add(op_ms, TMOE_OP_ATTN_CORE, elapsed(s->evb[EB_QKV], s->evb[EB_CORE]));
        tmoe_op_ms_add(op_ms, TMOE_OP_ATTN_OUT, elapsed(s->evb[EB_CORE], s->evb[EB_OUT]));
        tmoe_op_ms_add(op_ms, TMOE_OP_NORM, elapsed(s->evb[EB_OUT], s->evb[EB_NORM2]));
    } else {
        tmoe_op_ms_add(op_ms, TMOE_OP_NORM, elapsed(s->evb[EB_START], s->evb[EB_NORM2]));
    }
    if (!s->no_gate)
        tmoe_op_ms_add(op_ms, TMOE_OP_GATE_LINEAR, elapsed(s->evb[EB_NORM2], s->evb[EB_GATE]));
    return TMOE_OK;
}

static int cuda_logits(void *p, float *logits, tmoe_error *err) {
    cuda_state *s = p;
    TMOE_CUDA_CHECK(cudaMemcpyAsync(logits, s->logits,
                                    sizeof(float) * (size_t)s->T * s->blk->cfg.num_experts,
                                    cudaMemcpyDeviceToHost, s->st),
                    err);
    TMOE_CUDA_CHECK(cudaStreamSynchronize(s->st), err);
    return TMOE_OK;
}

static int unfused(const cuda_state *s, int t) {
    return tmoe_etype_is_quant((tmoe_etype)t) && s->step_unf[t];
}

/* The impl of every quantized type for a step with tokens_per_active tokens per expert with
 * tokens (tmoe_engine_choose_impl: the configured impl, or the measured crossovers). */
static void choose_step(cuda_state *s, double tokens_per_active) {
    for (int t = 0; t < TMOE_ET_COUNT; t++)
        s->step_unf[t] =
            tmoe_engine_choose_impl(&s->cfg, (tmoe_etype)t, tokens_per_active) == TMOE_IMPL_UNFUSED;
}

/* Whether the experts of type t go through cuBLAS in a step that takes the cuBLAS path:
 * fp16 / bf16 row-major weights, or the fp16 output of dequant_unpack (unfused). */
static int cublas_type(const cuda_state *s, int t) {
    return !tmoe_etype_is_quant((tmoe_etype)t) || unfused(s, t);
}

/* y (n, out) fp32 = x (n, in) fp16 . W^T on cuBLAS; bf16 weights (type t): x rounded to bf16
 * into xb first (as the bandwidth kernel does in registers), then a bf16 GEMM. */
static int gemm_typed(cuda_state *s, int t, const tmoe_f16 *x, const void *W, int n, int in,
                      int out, float *y, tmoe_error *err) {
    if (t != TMOE_ET_BF16) return gemm_f16(s, x, (const tmoe_f16 *)W, n, in, out, y, err);
    TRY(tmoe_cuda_f16_to_bf16(x, (size_t)n * in, s->xb, s->st, err));
    return tmoe_cublas_gemm_bf16(s->cb, s->xb, (const tmoe_bf16 *)W, n, in, out, y, err);
}

/* Rows an expert step reads and writes. Row r of expert e (offsets[e] <= r < offsets[e] +
 * counts[e]) reads x row (src ? src[r] / k : r); the cuBLAS path reads the rows already
 * grouped at xg and needs the counts on the host (h_counts, E). */
typedef struct expert_rows {
    const tmoe_f16 *x, *xg;
    const int32_t *src;
    int k;
    const int32_t *counts, *offsets, *active; /* device, from permute (or the caller) */
    const int32_t *h_counts;                  /* host, cuBLAS path only */
    int max_n, n_rows, max_active; /* host bounds: rows of any expert; rows in all; experts used */
    float *ye;                     /* (rows, D) fp32 output */
} expert_rows;

/* fc1 (+ activation) and fc2 of every expert group; records EV_FC1, EV_ACT and EV_FC2. */
static int experts_enqueue(cuda_state *s, int cublas, const expert_rows *r, tmoe_error *err) {
    const tmoe_block *b = s->blk;
    int D = b->cfg.d_model, E = b->cfg.num_experts, F = b->cfg.d_ff;
    tmoe_cuda_epi epi1 = b->cfg.act == TMOE_ACT_SWIGLU ? TMOE_CUDA_EPI_SWIGLU : TMOE_CUDA_EPI_RELU;
    int32_t offs[TMOE_MAX_EXPERTS + 1];
    if (cublas) {
        offs[0] = 0;
        for (int e = 0; e < E; e++) offs[e + 1] = offs[e] + r->h_counts[e];
    }
    for (int t = 0; t < TMOE_ET_COUNT; t++) {
        type_group *g = &s->grp[t];
        if (!g->n) continue;
        int via_cublas = cublas && cublas_type(s, t);
        tmoe_cuda_lin L = unfused(s, t) ? g->ku1 : g->fc1;
        if (!via_cublas) {
            TRY(tmoe_cuda_expert_linear(unfused(s, t) ? &g->ku1 : &g->k1, epi1, g->n, g->d_experts,
                                        r->active, g->d_slot_of, r->counts, r->offsets, r->x,
                                        r->src, r->k, r->max_n, r->n_rows, r->max_active, NULL,
                                        s->a16, s->st, err));
            continue;
        }
        for (int e = 0; e < E; e++) {
            int n = r->h_counts[e];
            if ((int)b->types[e] != t || n == 0) continue;
            const void *W = (const uint8_t *)L.w + L.w_stride * s->slot_of[e];
            TRY(gemm_typed(s, t, r->xg + (size_t)offs[e] * D, W, n, L.in, L.out,
                           s->h32 + (size_t)offs[e] * L.out, err));
        }
    }
    TRY(record(s, s->ev[EV_FC1], err));
    if (cublas) {
        for (int e = 0; e < E; e++) {
            int n = r->h_counts[e], t = b->types[e];
            if (n == 0 || !cublas_type(s, t)) continue;
            TRY(tmoe_cuda_act(b->cfg.act, s->h32 + (size_t)offs[e] * s->grp[t].fc1.out, n, F,
                              s->a16 + (size_t)offs[e] * F, s->st, err));
        }
    }
    TRY(record(s, s->ev[EV_ACT], err));
    for (int t = 0; t < TMOE_ET_COUNT; t++) {
        type_group *g = &s->grp[t];
        if (!g->n) continue;
        int via_cublas = cublas && cublas_type(s, t);
        tmoe_cuda_lin L = unfused(s, t) ? g->ku2 : g->fc2;
        if (!via_cublas) {
            TRY(tmoe_cuda_expert_linear(unfused(s, t) ? &g->ku2 : &g->k2, TMOE_CUDA_EPI_NONE, g->n,
                                        g->d_experts, r->active, g->d_slot_of, r->counts,
                                        r->offsets, s->a16, NULL, 1, r->max_n, r->n_rows,
                                        r->max_active, r->ye, NULL, s->st, err));
            continue;
        }
        for (int e = 0; e < E; e++) {
            int n = r->h_counts[e];
            if ((int)b->types[e] != t || n == 0) continue;
            const void *W = (const uint8_t *)L.w + L.w_stride * s->slot_of[e];
            TRY(gemm_typed(s, t, s->a16 + (size_t)offs[e] * F, W, n, L.in, L.out,
                           r->ye + (size_t)offs[e] * D, err));
        }
    }
    TRY(record(s, s->ev[EV_FC2], err));
    return TMOE_OK;
}

/* The MoE step. cublas: experts of fp16 (and unfused) groups through cuBLAS per expert,
 * after one wait for the counts (not capturable). */
static int moe_enqueue(cuda_state *s, int cublas, tmoe_error *err) {
    const tmoe_block *b = s->blk;
    int T = s->T, D = b->cfg.d_model, E = b->cfg.num_experts, k = b->cfg.top_k;
    int N = T * k, max_active = N < E ? N : E;
    TRY(record(s, s->ev[EV_START], err));
    TRY(tmoe_cuda_gate_topk(s->logits, s->d_bias, T, E, k, b->cfg.renormalize,
                            s->cfg.bias_in_weights, s->idx, s->w, s->d_hidx, s->d_hw, s->st, err));
    TRY(record(s, s->ev[EV_TOPK], err));
    TRY(tmoe_cuda_permute(s->idx, T, k, E, s->counts, s->offsets, s->src, s->dst, s->active,
                          s->d_hcounts, s->st, err));
    if (cublas) {
        TRY(tmoe_cuda_gather(s->h16, s->src, N, k, D, s->xg, s->st, err));
    }
    TRY(record(s, s->ev[EV_PERMUTE], err));
    for (int t = 0; t < TMOE_ET_COUNT; t++) {
        type_group *g = &s->grp[t];
        if (!g->n || !unfused(s, t)) continue;
        TRY(tmoe_cuda_dequant_unpack(&g->fc1, g->n, g->d_experts, s->counts, g->u1, s->st, err));
        TRY(tmoe_cuda_dequant_unpack(&g->fc2, g->n, g->d_experts, s->counts, g->u2, s->st, err));
    }
    TRY(record(s, s->ev[EV_DEQUANT], err));
    if (cublas) TMOE_CUDA_CHECK(cudaEventSynchronize(s->ev[EV_PERMUTE]), err);
    expert_rows r = {.x = s->h16,
                     .xg = s->xg,
                     .src = s->src,
                     .k = k,
                     .counts = s->counts,
                     .offsets = s->offsets,
                     .active = s->active,
                     .h_counts = s->h_counts,
                     .max_n = T,
                     .n_rows = N,
                     .max_active = max_active,
                     .ye = s->ye};
    TRY(experts_enqueue(s, cublas, &r, err));
    TRY(tmoe_cuda_combine(s->ye, s->dst, s->w, s->x, T, k, D, s->y, s->st, err));
    TRY(record(s, s->ev[EV_COMBINE], err));
    return TMOE_OK;
}

static int use_cublas(const cuda_state *s) {
    const tmoe_block *b = s->blk;
    int any = 0;
    for (int t = 0; t < TMOE_ET_COUNT; t++) any |= s->grp[t].n > 0 && cublas_type(s, t);
    long avg = (long)s->T * b->cfg.top_k / b->cfg.num_experts;
    long weights = (long)b->cfg.d_model * b->cfg.d_ff;
    return any && avg >= tmoe_cuda_cublas_min_tokens && weights >= tmoe_cuda_cublas_min_weights;
}

/* The MoE step as graph capture sees it (s->capturing: nothing may synchronise). */
static int enqueue_captured(void *ctx, tmoe_error *err) {
    cuda_state *s = ctx;
    s->capturing = 1;
    int rc = moe_enqueue(s, 0, err);
    s->capturing = 0;
    return rc;
}

static int run_graph(cuda_state *s, tmoe_error *err) {
    return tmoe_cuda_graph_run(&s->graphs[s->T], s->st, enqueue_captured, s, err);
}

static int cuda_moe(void *p, const float *bias, tmoe_moe_metrics *m, tmoe_error *err) {
    cuda_state *s = p;
    const tmoe_block *b = s->blk;
    int T = s->T, E = b->cfg.num_experts, k = b->cfg.top_k;
    /* the previous step has finished (its metrics were read), so the mapped buffer is free */
    for (int e = 0; e < E; e++) s->h_bias[e] = bias ? bias[e] : 0.0f;
    /* a function of T alone, like the graph this step may replay */
    choose_step(s, tmoe_engine_tokens_per_active(T, k, E));
    s->cublas_step = use_cublas(s);
    if (s->cublas_step || !s->cfg.use_graphs)
        TRY(moe_enqueue(s, s->cublas_step, err));
    else
        TRY(run_graph(s, err));
    TMOE_CUDA_CHECK(cudaEventSynchronize(s->ev[EV_COMBINE]), err);
    int any_deq = 0;
    for (int t = 0; t < TMOE_ET_COUNT; t++) any_deq |= s->grp[t].n > 0 && unfused(s, t);
    tmoe_op_ms_add(m->op_ms, TMOE_OP_GATE_TOPK, elapsed(s->ev[EV_START], s->ev[EV_TOPK]));
    tmoe_op_ms_add(m->op_ms, TMOE_OP_PERMUTE, elapsed(s->ev[EV_TOPK], s->ev[EV_PERMUTE]));
    if (any_deq)
        tmoe_op_ms_add(m->op_ms, TMOE_OP_DEQUANT_UNPACK,
                       elapsed(s->ev[EV_PERMUTE], s->ev[EV_DEQUANT]));
    tmoe_op_ms_add(m->op_ms, TMOE_OP_LINEAR_FC1, elapsed(s->ev[EV_DEQUANT], s->ev[EV_FC1]));
    if (s->cublas_step) /* else the activation is fused into fc1's epilogue: NAN */
        tmoe_op_ms_add(m->op_ms, TMOE_OP_RELU, elapsed(s->ev[EV_FC1], s->ev[EV_ACT]));
    tmoe_op_ms_add(m->op_ms, TMOE_OP_LINEAR_FC2, elapsed(s->ev[EV_ACT], s->ev[EV_FC2]));
    tmoe_op_ms_add(m->op_ms, TMOE_OP_COMBINE, elapsed(s->ev[EV_FC2], s->ev[EV_COMBINE]));
    m->step_ms = elapsed(s->ev[EV_START], s->ev[EV_COMBINE]);
    m->impl_auto = s->cfg.impl_auto;
    m->cublas = s->cublas_step;
    for (int t = 0; t < TMOE_ET_COUNT; t++)
        if (s->grp[t].n > 0 && tmoe_etype_is_quant((tmoe_etype)t))
            m->impl_used[t] = unfused(s, t) ? TMOE_IMPL_UNFUSED : TMOE_IMPL_FUSED;
    for (int e = 0; e < E; e++) {
        m->tokens_per_expert[e] = s->h_counts[e];
        m->expert_ms[e] = NAN; /* one launch serves every expert */
    }
    if (m->topk_idx) memcpy(m->topk_idx, s->h_idx, sizeof(int32_t) * (size_t)T * k);
    if (m->topk_w) memcpy(m->topk_w, s->h_w, sizeof(float) * (size_t)T * k);
    return TMOE_OK;
}

static int cuda_output(void *p, float *y, tmoe_error *err) {
    cuda_state *s = p;
    TMOE_CUDA_CHECK(cudaMemcpyAsync(y, s->y, sizeof(float) * (size_t)s->T * s->blk->cfg.d_model,
                                    cudaMemcpyDeviceToHost, s->st),
                    err);
    TMOE_CUDA_CHECK(cudaStreamSynchronize(s->st), err);
    return TMOE_OK;
}

const tmoe_backend_vt tmoe_backend_cuda = {
    .name = "cuda",
    .create = cuda_create,
    .destroy = cuda_destroy,
    .begin = cuda_begin,
    .logits = cuda_logits,
    .moe = cuda_moe,
    .output = cuda_output,
};

/* ---- what the expert-parallel backend uses of a state (cuda_engine.h) ------------------ */

void tmoe_cuda_state_io(void *p, tmoe_cuda_io *io) {
    cuda_state *s = p;
    io->stream = s->st;
    io->cublas = s->cb;
    io->x = s->x;
    io->h16 = s->h16;
}

int tmoe_cuda_state_experts(void *p, const tmoe_f16 *xg, int rows, const int32_t *d_counts,
                            const int32_t *d_offsets, const int32_t *d_active,
                            const int32_t *h_counts, float *ye, tmoe_error *err) {
    cuda_state *s = p;
    const tmoe_block *b = s->blk;
    int E = b->cfg.num_experts, max_n = 0, used = 0;
    for (int e = 0; e < E; e++) {
        if (h_counts[e] > max_n) max_n = h_counts[e];
        used += h_counts[e] > 0;
    }
    if (rows == 0 || used == 0) return TMOE_OK;
    choose_step(s, (double)rows / used);
    int any = 0;
    for (int t = 0; t < TMOE_ET_COUNT; t++) any |= s->grp[t].n > 0 && cublas_type(s, t);
    long weights = (long)b->cfg.d_model * b->cfg.d_ff;
    int cublas = any && rows / used >= tmoe_cuda_cublas_min_tokens &&
                 weights >= tmoe_cuda_cublas_min_weights;
    for (int t = 0; t < TMOE_ET_COUNT; t++) {
        type_group *g = &s->grp[t];
        if (!g->n || !unfused(s, t)) continue;
        TRY(tmoe_cuda_dequant_unpack(&g->fc1, g->n, g->d_experts, d_counts, g->u1, s->st, err));
        TRY(tmoe_cuda_dequant_unpack(&g->fc2, g->n, g->d_experts, d_counts, g->u2, s->st, err));
    }
    expert_rows r = {.x = xg,
                     .xg = xg,
                     .src = NULL,
                     .k = 1,
                     .counts = d_counts,
                     .offsets = d_offsets,
                     .active = d_active,
                     .h_counts = h_counts,
                     .max_n = max_n,
                     .n_rows = rows,
                     .max_active = used,
                     .ye = ye};
    return experts_enqueue(s, cublas, &r, err);
}

void tmoe_cuda_state_expert_ms(void *p, cudaEvent_t start, double op_ms[TMOE_OP_COUNT]) {
    cuda_state *s = p;
    tmoe_op_ms_add(op_ms, TMOE_OP_LINEAR_FC1, elapsed(start, s->ev[EV_FC1]));
    tmoe_op_ms_add(op_ms, TMOE_OP_LINEAR_FC2, elapsed(s->ev[EV_ACT], s->ev[EV_FC2]));
}
