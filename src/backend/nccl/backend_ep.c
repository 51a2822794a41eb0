/* Expert-parallel CUDA backend: one process (rank) per GPU, each holding only the experts
 * that the placement puts on its rank; tokens go to their experts and the outputs come back
 * through grouped NCCL send/receive (an all-to-all with per-peer counts).
 *
 * A rank's step (see thermoe/ep.h for the plan):
 *   begin    the inner CUDA engine (the block with this rank's experts only) runs attention
 *            and norm2 on this rank's tokens; the full gate (E, D) gives the logits.
 *   moe      gate top-k (biases) -> the indices to the host -> send plan -> pack kernel and,
 *            over NCCL, the per-expert counts -> receive plan -> token all-to-all (fp16
 *            rows) -> group by local expert -> the inner engine's expert kernels -> ungroup
 *            (fp32 -> fp16) -> the reverse all-to-all -> combine with the residual.
 * Rows for this rank itself are copied on the device, not sent. The host waits twice a step:
 * for the top-k indices (to plan the sends) and for the counts (to plan the receives).
 * With many token copies in a step (cfg.ep_overlap_min_copies over all ranks) the exchanges
 * overlap the experts: one round per local expert on a second stream (overlapped_step).
 * Below that one exchange each way is faster (measured in bench/results/h100_ep/).
 *
 * NVLink multicast (NVLS) stays off: NCCL_NVLS_ENABLE is set to 0 before NCCL starts. */
#include "backend/backend_internal.h"
#include "../cuda/cublas_util.h"
#include "../cuda/cuda_engine.h"
#include "ep_ops.h"

#include "thermoe/ep.h"

#include <math.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>

#define NCCL_CHECK(call, err)                                                                      \
    do {                                                                                           \
        ncclResult_t nr_ = (call);                                                                 \
        if (nr_ != ncclSuccess)                                                                    \
            return tmoe_errorf((err), TMOE_EDEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,    \
                               ncclGetErrorString(nr_));                                           \
    } while (0)
/* An NCCL call in teardown or on a path that already failed: on failure log a warning and
 * go on. */
#define NCCL_WARN(call)                                                                            \
    do {                                                                                           \
        ncclResult_t nw_ = (call);                                                                 \
        if (nw_ != ncclSuccess)                                                                    \
            tmoe_log(TMOE_LOG_WARN, "%s:%d: %s: %s", __FILE__, __LINE__, #call,                    \
                     ncclGetErrorString(nw_));                                                     \
    } while (0)
/* Inside ncclGroupStart: on failure close the group first (the engine then aborts its comm);
 * the call's error is the one reported. */
#define NCCL_CHECK_IN_GROUP(call, err)                                                             \
    do {                                                                                           \
        ncclResult_t nr_ = (call);                                                                 \
        if (nr_ != ncclSuccess) {                                                                  \
            NCCL_WARN(ncclGroupEnd());                                                             \
            return tmoe_errorf((err), TMOE_EDEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,    \
                               ncclGetErrorString(nr_));                                           \
        }                                                                                          \
    } while (0)

enum {
    EP_START,
    EP_TOPK,
    EP_PACKED,
    EP_SENT,
    EP_RECEIVED,
    EP_EXPERTS,
    EP_UNGROUPED,
    EP_RETURNED,
    EP_COMBINED,
    EP_EV_N
};

typedef struct ep_state {
    const tmoe_block *blk;
    tmoe_engine_config cfg;
    tmoe_ep *g;
    int rank, N, E, L, k, D, Tmax, Rmax, T, device;
    tmoe_placement pl;
    tmoe_dispatch *plan;
    /* the block with this rank's experts only, run by the single-device CUDA backend */
    tmoe_block sub;
    tmoe_expert *sub_experts;
    void *inner;
    tmoe_cuda_io io;
    ncclComm_t comm;
    cudaEvent_t ev[EP_EV_N];
    /* device memory */
    void *ws;
    tmoe_f16 *gate16, *send16, *recv16, *xg16, *ret16, *back16;
    float *logits, *w, *ye32, *y32;
    int32_t *idx, *d_sidx, *d_ridx;
    /* host: mapped (bias, top-k copies) and pinned staging for the index arrays */
    void *host;
    float *h_bias, *h_w, *d_bias, *d_hw;
    int32_t *h_idx, *d_hidx, *p_sidx, *p_ridx;
    size_t sidx_n, ridx_n; /* int32 entries of the two staging regions */
    /* offsets (int32 entries) into the send staging: count payload (E + N: per peer q at
     * first[q] + q its L_q counts, then this rank's copies), src (Tk), pos (Tk) */
    size_t o_src, o_pos;
    /* into the receive staging: payload (N rows of L + 1), from_grouped, to_grouped (Rmax),
     * local counts (L), offsets (L+1), active (L+1), zeros (L+1), one-expert lists (2L) */
    size_t o_from, o_to, o_lc, o_lo, o_act, o_zero, o_one;
    int32_t *h_one; /* (L) host: one expert's rows, the others 0 */
    /* overlap: per-expert exchange rounds on a second stream */
    cudaStream_t cst;
    int maxL;                        /* most experts on any rank: the number of rounds */
    cudaEvent_t *ev_round, *ev_done; /* (maxL) */
    cudaEvent_t ev_ready, ev_ret;
    int overlapped; /* the last step overlapped */
    int failed;     /* a step failed: peers may wait in NCCL, abort the comm */
    tmoe_ep_stats stats;
} ep_state;

/* Teardown (also of a half-created state): every failure is logged, nothing stops it. */
static void ep_destroy(void *p) {
    ep_state *s = p;
    if (!s) return;
    if (s->failed) {
        /* do not wait for peers that may never come */
        if (s->comm) NCCL_WARN(ncclCommAbort(s->comm));
    } else {
        if (s->io.stream) TMOE_CUDA_WARN(cudaStreamSynchronize(s->io.stream));
        if (s->comm) NCCL_WARN(ncclCommDestroy(s->comm));
    }
    for (int i = 0; i < EP_EV_N; i++)
        if (s->ev[i]) TMOE_CUDA_WARN(cudaEventDestroy(s->ev[i]));
    for (int j = 0; j < s->maxL; j++) {
        if (s->ev_round && s->ev_round[j]) TMOE_CUDA_WARN(cudaEventDestroy(s->ev_round[j]));
        if (s->ev_done && s->ev_done[j]) TMOE_CUDA_WARN(cudaEventDestroy(s->ev_done[j]));
    }
    free(s->ev_round);
    free(s->ev_done);
    if (s->ev_ready) TMOE_CUDA_WARN(cudaEventDestroy(s->ev_ready));
    if (s->ev_ret) TMOE_CUDA_WARN(cudaEventDestroy(s->ev_ret));
    if (s->cst) TMOE_CUDA_WARN(cudaStreamDestroy(s->cst));
    free(s->h_one);
    if (s->ws) TMOE_CUDA_WARN(cudaFree(s->ws));
    if (s->host) TMOE_CUDA_WARN(cudaFreeHost(s->host));
    if (s->inner) tmoe_backend_cuda.destroy(s->inner);
    tmoe_dispatch_free(s->plan);
    free(s->sub_experts);
    free(s);
}

/* This rank's count payload for peer q (tmoe_dispatch_pack_payload). */
static size_t pay_at(const ep_state *s, int q) {
    return tmoe_dispatch_payload_offset(&s->pl, q);
}

/* The sub-block: this rank's experts in ascending global id, sharing the host weights. */
static int make_sub_block(ep_state *s, tmoe_error *err) {
    const tmoe_block *b = s->blk;
    const int32_t *ids = s->pl.by_device + s->pl.first[s->rank];
    s->sub_experts = tmoe_calloc((size_t)s->L, sizeof *s->sub_experts, err);
    if (!s->sub_experts) return TMOE_ENOMEM;
    s->sub = *b;
    s->sub.cfg.num_experts = s->L;
    s->sub.cfg.expert_types = NULL;
    if (s->sub.cfg.top_k > s->L) s->sub.cfg.top_k = s->L;
    s->sub.moe.num_experts = s->L;
    s->sub.moe.top_k = s->sub.cfg.top_k;
    s->sub.moe.experts = s->sub_experts;
    s->sub.moe.gate.out = s->L; /* the inner state runs no gate; its first L rows are uploaded */
    for (int l = 0; l < s->L; l++) {
        s->sub_experts[l] = b->moe.experts[ids[l]];
        s->sub.types[l] = b->types[ids[l]];
    }
    return TMOE_OK;
}

static int alloc_buffers(ep_state *s, tmoe_error *err) {
    size_t D = (size_t)s->D, E = (size_t)s->E, Tk = (size_t)s->Tmax * s->k, R = (size_t)s->Rmax;
    size_t L = (size_t)s->L, N = (size_t)s->N;
    s->o_src = E + N;
    s->o_pos = s->o_src + Tk;
    s->sidx_n = s->o_pos + Tk;
    s->o_from = N * (L + 1);
    s->o_to = s->o_from + R;
    s->o_lc = s->o_to + R;
    s->o_lo = s->o_lc + L;
    s->o_act = s->o_lo + L + 1;
    s->o_zero = s->o_act + L + 1;
    s->o_one = s->o_zero + L + 1;
    s->ridx_n = s->o_one + 2 * L;
    s->h_one = tmoe_calloc(L, sizeof(int32_t), err);
    if (!s->h_one) return TMOE_ENOMEM;
    const tmoe_buf ws[] = {
        TMOE_BUF(s->gate16, E * D * 2),
        TMOE_BUF(s->send16, Tk * D * 2),
        TMOE_BUF(s->recv16, R * D * 2),
        TMOE_BUF(s->xg16, R * D * 2),
        TMOE_BUF(s->ret16, R * D * 2),
        TMOE_BUF(s->back16, Tk * D * 2),
        TMOE_BUF(s->logits, (size_t)s->Tmax * E * 4),
        TMOE_BUF(s->w, Tk * 4),
        TMOE_BUF(s->ye32, R * D * 4),
        TMOE_BUF(s->y32, (size_t)s->Tmax * D * 4),
        TMOE_BUF(s->idx, Tk * 4),
        TMOE_BUF(s->d_sidx, s->sidx_n * 4),
        TMOE_BUF(s->d_ridx, s->ridx_n * 4),
    };
    int n_ws = (int)(sizeof ws / sizeof *ws);
    size_t total = tmoe_bufs_total(ws, n_ws, 256); /* cudaMalloc returns 256-aligned memory */
    cudaError_t ce = cudaMalloc(&s->ws, total);
    if (ce != cudaSuccess)
        return tmoe_errorf(err, TMOE_ENOMEM, "%s:%d: expert-parallel workspace of %zu bytes: %s",
                           __FILE__, __LINE__, total, cudaGetErrorString(ce));
    tmoe_bufs_carve(ws, n_ws, s->ws, 256);
    const tmoe_buf host[] = {
        TMOE_BUF(s->h_bias, E * 4),         TMOE_BUF(s->h_w, Tk * 4),
        TMOE_BUF(s->h_idx, Tk * 4),         TMOE_BUF(s->p_sidx, s->sidx_n * 4),
        TMOE_BUF(s->p_ridx, s->ridx_n * 4),
    };
    int n_host = (int)(sizeof host / sizeof *host);
    size_t hsz = tmoe_bufs_total(host, n_host, 64);
    TMOE_CUDA_CHECK(cudaHostAlloc(&s->host, hsz, cudaHostAllocMapped), err);
    tmoe_bufs_carve(host, n_host, s->host, 64);
    memset(s->p_ridx, 0, sizeof(int32_t) * s->ridx_n);
    for (int j = 0; j < s->L; j++) { /* constant: zeros and the lists [1, j] */
        s->p_ridx[s->o_one + 2 * (size_t)j] = 1;
        s->p_ridx[s->o_one + 2 * (size_t)j + 1] = j;
    }
    TMOE_CUDA_CHECK(cudaHostGetDevicePointer((void **)&s->d_bias, s->h_bias, 0), err);
    TMOE_CUDA_CHECK(cudaHostGetDevicePointer((void **)&s->d_hw, s->h_w, 0), err);
    TMOE_CUDA_CHECK(cudaHostGetDevicePointer((void **)&s->d_hidx, s->h_idx, 0), err);
    TRY(tmoe_cuda_upload(s->gate16, s->blk->moe.gate.w, E * D * 2, s->io.stream, err));
    return TMOE_OK;
}

/* Row off of buf, rows of D fp16 values. */
static tmoe_f16 *rows_at(tmoe_f16 *buf, int off, int D) {
    return buf + (size_t)off * D;
}

/* One grouped all-to-all of fp16 rows: send rows [sdispl[p], +scount[p]) of sbuf to p and
 * receive rcount[p] rows at rdispl[p] of rbuf; this rank's own rows are a device copy. */
static int alltoall_rows(ep_state *s, tmoe_f16 *sbuf, const int32_t *scount, const int32_t *sdispl,
                         tmoe_f16 *rbuf, const int32_t *rcount, const int32_t *rdispl,
                         tmoe_error *err) {
    size_t D = (size_t)s->D;
    NCCL_CHECK(ncclGroupStart(), err);
    for (int p = 0; p < s->N; p++) {
        if (p == s->rank) continue;
        if (scount[p] > 0)
            NCCL_CHECK_IN_GROUP(ncclSend(rows_at(sbuf, sdispl[p], s->D), (size_t)scount[p] * D,
                                         ncclHalf, p, s->comm, s->io.stream),
                                err);
        if (rcount[p] > 0)
            NCCL_CHECK_IN_GROUP(ncclRecv(rows_at(rbuf, rdispl[p], s->D), (size_t)rcount[p] * D,
                                         ncclHalf, p, s->comm, s->io.stream),
                                err);
    }
    NCCL_CHECK(ncclGroupEnd(), err);
    int me = s->rank;
    if (scount[me] > 0)
        TMOE_CUDA_CHECK(cudaMemcpyAsync(rows_at(rbuf, rdispl[me], s->D),
                                        rows_at(sbuf, sdispl[me], s->D), (size_t)scount[me] * D * 2,
                                        cudaMemcpyDeviceToDevice, s->io.stream),
                        err);
    return TMOE_OK;
}

/* The all-to-all bandwidth at this run's batch size: rows_per_peer rows to every other rank,
 * 5 untimed and 20 timed rounds. */
static int calibrate_link(ep_state *s, tmoe_error *err) {
    s->stats.link_gbps = NAN;
    if (s->N < 2) return TMOE_OK;
    int per = s->Tmax * s->k / s->N;
    if (per < 1) per = 1;
    int32_t cnt[TMOE_DISPATCH_MAX_DEVICES], dsp[TMOE_DISPATCH_MAX_DEVICES];
    for (int p = 0, o = 0; p < s->N; p++) {
        cnt[p] = p == s->rank ? 0 : per;
        dsp[p] = o;
        o += cnt[p];
    }
    TMOE_CUDA_CHECK(cudaMemsetAsync(s->recv16, 0, (size_t)s->Rmax * s->D * 2, s->io.stream), err);
    TMOE_CUDA_CHECK(cudaMemsetAsync(s->ret16, 0, (size_t)s->Rmax * s->D * 2, s->io.stream), err);
    float ms = 0.0f;
    for (int it = 0; it < 25; it++) {
        if (it == 5) TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_START], s->io.stream), err);
        TRY(alltoall_rows(s, s->ret16, cnt, dsp, s->recv16, cnt, dsp, err));
    }
    TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_COMBINED], s->io.stream), err);
    TMOE_CUDA_CHECK(cudaEventSynchronize(s->ev[EP_COMBINED]), err);
    TMOE_CUDA_CHECK(cudaEventElapsedTime(&ms, s->ev[EP_START], s->ev[EP_COMBINED]), err);
    double bytes = (double)(s->N - 1) * per * s->D * 2;
    double gbps = ms > 0.0f ? bytes / (ms / 20.0 * 1e-3) / 1e9 : NAN;
    TRY(tmoe_ep_allreduce_sum(s->g, &gbps, err)); /* every rank reports the group's mean */
    s->stats.link_gbps = gbps / s->N;
    tmoe_log(TMOE_LOG_INFO,
             "expert parallel: all-to-all of %d rows x %d to each of %d peers: %.1f GB/s per rank",
             per, s->D, s->N - 1, s->stats.link_gbps);
    return TMOE_OK;
}

static int ep_create_in(ep_state *s, tmoe_error *err) {
    const tmoe_block *b = s->blk;
    s->g = s->cfg.ep;
    s->rank = tmoe_ep_rank(s->g);
    s->N = tmoe_ep_size(s->g);
    s->E = b->cfg.num_experts;
    s->k = b->cfg.top_k;
    s->D = b->cfg.d_model;
    s->Tmax = s->cfg.max_tokens;
    s->Rmax = s->N * s->Tmax * s->k;
    if (s->N > TMOE_EP_MAX_RANKS || s->N > TMOE_DISPATCH_MAX_DEVICES)
        return tmoe_errorf(err, TMOE_ENOTSUP, "%d ranks: at most %d", s->N, TMOE_EP_MAX_RANKS);
    TRY(tmoe_placement_for_ranks(s->cfg.placement, s->E, s->N, &s->pl, err));
    for (int d = 0; d < s->N; d++)
        if (s->pl.first[d + 1] == s->pl.first[d])
            return tmoe_errorf(err, TMOE_ENOTSUP,
                               "the placement gives rank %d no expert: every rank must hold one",
                               d);
    s->L = s->pl.first[s->rank + 1] - s->pl.first[s->rank];
    TRY(tmoe_dispatch_create(&s->pl, s->rank, s->Tmax, s->k, &s->plan, err));
    TRY(make_sub_block(s, err));

    int ndev = 0;
    TMOE_CUDA_CHECK(cudaGetDeviceCount(&ndev), err);
    s->device = tmoe_ep_local_rank(s->g) % ndev;
    if (tmoe_ep_local_size(s->g) > ndev)
        tmoe_log(TMOE_LOG_WARN, "expert parallel: %d processes on this host share %d GPUs",
                 tmoe_ep_local_size(s->g), ndev);
    tmoe_engine_config ic = s->cfg;
    ic.device_id = s->device;
    ic.use_graphs = 0;
    ic.ep = NULL;
    ic.placement = NULL;
    /* experts see <= Rmax rows; the gate is this backend's (all E experts) */
    TRY(tmoe_cuda_state_create(&s->sub, &ic, s->Rmax, 0, &s->inner, err));
    tmoe_cuda_state_io(s->inner, &s->io);
    for (int i = 0; i < EP_EV_N; i++) TMOE_CUDA_CHECK(cudaEventCreate(&s->ev[i]), err);
    TMOE_CUDA_CHECK(cudaStreamCreateWithFlags(&s->cst, cudaStreamNonBlocking), err);
    for (int d = 0; d < s->N; d++)
        if (s->pl.first[d + 1] - s->pl.first[d] > s->maxL)
            s->maxL = s->pl.first[d + 1] - s->pl.first[d];
    s->ev_round = tmoe_calloc((size_t)s->maxL, sizeof *s->ev_round, err);
    s->ev_done = tmoe_calloc((size_t)s->maxL, sizeof *s->ev_done, err);
    if (!s->ev_round || !s->ev_done) return TMOE_ENOMEM;
    for (int j = 0; j < s->maxL; j++) {
        TMOE_CUDA_CHECK(cudaEventCreateWithFlags(&s->ev_round[j], cudaEventDisableTiming), err);
        TMOE_CUDA_CHECK(cudaEventCreateWithFlags(&s->ev_done[j], cudaEventDisableTiming), err);
    }
    TMOE_CUDA_CHECK(cudaEventCreateWithFlags(&s->ev_ready, cudaEventDisableTiming), err);
    TMOE_CUDA_CHECK(cudaEventCreateWithFlags(&s->ev_ret, cudaEventDisableTiming), err);
    TRY(alloc_buffers(s, err));

    const char *nvls = getenv("NCCL_NVLS_ENABLE");
    if (!nvls || strcmp(nvls, "0") != 0) {
        if (nvls) tmoe_log(TMOE_LOG_WARN, "NCCL_NVLS_ENABLE=%s overridden to 0", nvls);
        if (setenv("NCCL_NVLS_ENABLE", "0", 1) != 0)
            return tmoe_errorf(err, TMOE_EIO, "setenv NCCL_NVLS_ENABLE=0 failed");
    }
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (s->rank == 0) NCCL_CHECK(ncclGetUniqueId(&id), err);
    TRY(tmoe_ep_bcast(s->g, &id, sizeof id, 0, err));
    NCCL_CHECK(ncclCommInitRank(&s->comm, s->N, id, s->rank), err);
    s->stats.rank = s->rank;
    s->stats.ranks = s->N;
    s->stats.bytes_per_copy = 2.0 * s->D * 2.0;
    s->stats.a2a_ms = s->stats.a2a_bytes = s->stats.step_ms = NAN;
    TRY(calibrate_link(s, err));
    tmoe_log(TMOE_LOG_INFO, "expert parallel: rank %d of %d on GPU %d holds %d of %d experts",
             s->rank, s->N, s->device, s->L, s->E);
    return TMOE_OK;
}

static int ep_create(const tmoe_block *blk, const tmoe_engine_config *cfg, void **out,
                     tmoe_error *err) {
    ep_state *s = tmoe_calloc(1, sizeof *s, err);
    if (!s) return TMOE_ENOMEM;
    s->blk = blk;
    s->cfg = *cfg;
    int rc = ep_create_in(s, err);
    if (rc) {
        ep_destroy(s);
        return rc;
    }
    *out = s;
    return TMOE_OK;
}

static int ep_begin(void *p, const float *x, int T, int moe_only, double op_ms[TMOE_OP_COUNT],
                    tmoe_error *err) {
    ep_state *s = p;
    TRY(tmoe_backend_cuda.begin(s->inner, x, T, moe_only, op_ms, err));
    s->T = T;
    TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_START], s->io.stream), err);
    TRY(tmoe_cublas_gemm_f16(s->io.cublas, s->io.h16, s->gate16, T, s->D, s->E, s->logits, err));
    TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_TOPK], s->io.stream), err);
    TMOE_CUDA_CHECK(cudaEventSynchronize(s->ev[EP_TOPK]), err);
    float ms = NAN;
    if (cudaEventElapsedTime(&ms, s->ev[EP_START], s->ev[EP_TOPK]) == cudaSuccess)
        tmoe_op_ms_add(op_ms, TMOE_OP_GATE_LINEAR, ms);
    return TMOE_OK;
}

static int ep_logits(void *p, float *logits, tmoe_error *err) {
    ep_state *s = p;
    TMOE_CUDA_CHECK(cudaMemcpyAsync(logits, s->logits, sizeof(float) * (size_t)s->T * s->E,
                                    cudaMemcpyDeviceToHost, s->io.stream),
                    err);
    TMOE_CUDA_CHECK(cudaStreamSynchronize(s->io.stream), err);
    return TMOE_OK;
}

static double ev_ms(const ep_state *s, int a, int b) {
    float ms = NAN;
    if (cudaEventElapsedTime(&ms, s->ev[a], s->ev[b]) != cudaSuccess) return NAN;
    return ms;
}

/* The count exchange: peer q gets this rank's payload for q (its L_q expert counts and this
 * rank's copies), row q of the (N, L + 1) receive payload comes from q (this rank's own row
 * is a device copy); then the payload to the host. */
static int exchange_counts(ep_state *s, tmoe_error *err) {
    cudaStream_t st = s->io.stream;
    int32_t *sc = s->d_sidx, *rc = s->d_ridx;
    size_t L1 = (size_t)s->L + 1;
    NCCL_CHECK(ncclGroupStart(), err);
    for (int q = 0; q < s->N; q++) {
        if (q == s->rank) continue;
        size_t n = (size_t)(s->pl.first[q + 1] - s->pl.first[q]) + 1;
        NCCL_CHECK_IN_GROUP(ncclSend(sc + pay_at(s, q), n, ncclInt32, q, s->comm, st), err);
        NCCL_CHECK_IN_GROUP(ncclRecv(rc + q * L1, L1, ncclInt32, q, s->comm, st), err);
    }
    NCCL_CHECK(ncclGroupEnd(), err);
    TMOE_CUDA_CHECK(cudaMemcpyAsync(rc + s->rank * L1, sc + pay_at(s, s->rank),
                                    sizeof(int32_t) * L1, cudaMemcpyDeviceToDevice, st),
                    err);
    TMOE_CUDA_CHECK(
        cudaMemcpyAsync(s->p_ridx, rc, sizeof(int32_t) * s->N * L1, cudaMemcpyDeviceToHost, st),
        err);
    return TMOE_OK;
}

/* The overlapped exchange: round j moves the rows of every rank's local expert j (one NCCL
 * group on the second stream); expert j runs on the compute stream once its round is in,
 * and its outputs go back in return round j while later experts compute. Every rank runs
 * maxL rounds each way, so the groups match. */
static int overlapped_step(ep_state *s, const tmoe_dispatch_recv *rp, tmoe_error *err) {
    cudaStream_t st = s->io.stream, cs = s->cst;
    size_t D = (size_t)s->D;
    int me = s->rank;
    TMOE_CUDA_CHECK(cudaEventRecord(s->ev_ready, st), err);
    TMOE_CUDA_CHECK(cudaStreamWaitEvent(cs, s->ev_ready, 0), err);
    for (int pass = 0; pass < 2; pass++) { /* 0: tokens out, 1: outputs back */
        for (int j = 0; j < s->maxL; j++) {
            if (pass == 1 && j < s->L)
                TMOE_CUDA_CHECK(cudaStreamWaitEvent(cs, s->ev_done[j], 0), err);
            int self_n = 0, self_so = 0, self_ro = 0;
            NCCL_CHECK(ncclGroupStart(), err);
            for (int q = 0; q < s->N; q++) {
                int32_t ns, nr, so, ro;
                tmoe_dispatch_send_slice(s->plan, q, j, &so, &ns);
                tmoe_dispatch_recv_slice(s->plan, q, j, &ro, &nr);
                if (q == me) {
                    self_n = nr;
                    self_so = so;
                    self_ro = ro;
                    continue;
                }
                /* out: my rows for q's expert j, and q's rows for my expert j; back: reversed */
                tmoe_f16 *sb = pass ? s->ret16 : s->send16, *rb = pass ? s->back16 : s->recv16;
                int sn = pass ? nr : ns, soff = pass ? ro : so, rn = pass ? ns : nr,
                    roff = pass ? so : ro;
                if (sn > 0)
                    NCCL_CHECK_IN_GROUP(
                        ncclSend(rows_at(sb, soff, s->D), (size_t)sn * D, ncclHalf, q, s->comm, cs),
                        err);
                if (rn > 0)
                    NCCL_CHECK_IN_GROUP(
                        ncclRecv(rows_at(rb, roff, s->D), (size_t)rn * D, ncclHalf, q, s->comm, cs),
                        err);
            }
            NCCL_CHECK(ncclGroupEnd(), err);
            if (self_n > 0) {
                tmoe_f16 *src =
                    pass ? rows_at(s->ret16, self_ro, s->D) : rows_at(s->send16, self_so, s->D);
                tmoe_f16 *dst =
                    pass ? rows_at(s->back16, self_so, s->D) : rows_at(s->recv16, self_ro, s->D);
                TMOE_CUDA_CHECK(
                    cudaMemcpyAsync(dst, src, (size_t)self_n * D * 2, cudaMemcpyDeviceToDevice, cs),
                    err);
            }
            if (pass == 0) TMOE_CUDA_CHECK(cudaEventRecord(s->ev_round[j], cs), err);
        }
        if (pass == 1) break;
        /* experts, one at a time as their rows arrive (enqueued before the return rounds,
         * which wait for them) */
        for (int j = 0; j < s->L; j++) {
            int n = rp->expert_counts[j], off = rp->expert_offsets[j];
            TMOE_CUDA_CHECK(cudaStreamWaitEvent(st, s->ev_round[j], 0), err);
            if (n > 0) {
                const int32_t *from = s->d_ridx + s->o_from + off;
                TRY(tmoe_cuda_gather(s->recv16, from, n, 1, s->D, rows_at(s->xg16, off, s->D), st,
                                     err));
                s->h_one[j] = n;
                int rc = tmoe_cuda_state_experts(s->inner, rows_at(s->xg16, off, s->D), n,
                                                 s->d_ridx + s->o_lc, s->d_ridx + s->o_zero,
                                                 s->d_ridx + s->o_one + 2 * j, s->h_one,
                                                 s->ye32 + (size_t)off * D, err);
                s->h_one[j] = 0;
                if (rc) return rc;
                TRY(tmoe_cuda_scatter_f16(s->ye32 + (size_t)off * D, from, n, s->D, s->ret16, st,
                                          err));
            }
            TMOE_CUDA_CHECK(cudaEventRecord(s->ev_done[j], st), err);
        }
    }
    TMOE_CUDA_CHECK(cudaEventRecord(s->ev_ret, cs), err);
    TMOE_CUDA_CHECK(cudaStreamWaitEvent(st, s->ev_ret, 0), err);
    return TMOE_OK;
}

static int ep_moe_in(ep_state *s, const float *bias, tmoe_moe_metrics *m, tmoe_error *err) {
    const tmoe_block *b = s->blk;
    cudaStream_t st = s->io.stream;
    int T = s->T, k = s->k, Tk = T * k, D = s->D;
    for (int e = 0; e < s->E; e++) s->h_bias[e] = bias ? bias[e] : 0.0f;
    TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_START], st), err);
    TRY(tmoe_cuda_gate_topk(s->logits, s->d_bias, T, s->E, k, b->cfg.renormalize,
                            s->cfg.bias_in_weights, s->idx, s->w, s->d_hidx, s->d_hw, st, err));
    TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_TOPK], st), err);
    TMOE_CUDA_CHECK(cudaEventSynchronize(s->ev[EP_TOPK]), err);

    /* send plan; pack the send rows; exchange the per-expert counts */
    TRY(tmoe_dispatch_plan_send(s->plan, s->h_idx, T, err));
    tmoe_dispatch_send sp = tmoe_dispatch_send_plan(s->plan);
    tmoe_dispatch_pack_payload(s->plan, s->p_sidx);
    memcpy(s->p_sidx + s->o_src, sp.src, sizeof(int32_t) * Tk);
    memcpy(s->p_sidx + s->o_pos, sp.pos, sizeof(int32_t) * Tk);
    TMOE_CUDA_CHECK(cudaMemcpyAsync(s->d_sidx, s->p_sidx, sizeof(int32_t) * s->sidx_n,
                                    cudaMemcpyHostToDevice, st),
                    err);
    TRY(tmoe_cuda_gather(s->io.h16, s->d_sidx + s->o_src, Tk, k, D, s->send16, st, err));
    TRY(exchange_counts(s, err));
    TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_PACKED], st), err);
    TMOE_CUDA_CHECK(cudaEventSynchronize(s->ev[EP_PACKED]), err);

    /* receive plan; the copies of every rank decide, alike on all ranks, whether to overlap */
    long total = 0;
    TRY(tmoe_dispatch_plan_recv_payload(s->plan, s->p_ridx, &total, err));
    tmoe_dispatch_recv rp = tmoe_dispatch_recv_plan(s->plan);
    int R = rp.rows, used = 0;
    int32_t *ps = s->p_ridx;
    memcpy(ps + s->o_from, rp.from_grouped, sizeof(int32_t) * R);
    memcpy(ps + s->o_to, rp.to_grouped, sizeof(int32_t) * R);
    memcpy(ps + s->o_lc, rp.expert_counts, sizeof(int32_t) * s->L);
    memcpy(ps + s->o_lo, rp.expert_offsets, sizeof(int32_t) * (s->L + 1));
    for (int l = 0; l < s->L; l++)
        if (rp.expert_counts[l] > 0) ps[s->o_act + 1 + used++] = l;
    ps[s->o_act] = used;
    TMOE_CUDA_CHECK(cudaMemcpyAsync(s->d_ridx + s->o_from, ps + s->o_from,
                                    sizeof(int32_t) * (s->ridx_n - s->o_from),
                                    cudaMemcpyHostToDevice, st),
                    err);
    /* (unfused quantized experts would dequantize every local expert once per round) */
    int min = s->cfg.ep_overlap_min_copies, unfused_q = 0;
    for (int e = 0; e < s->E; e++)
        unfused_q |= tmoe_etype_is_quant(b->types[e]); /* alike on all ranks */
    unfused_q &= s->cfg.impl == TMOE_IMPL_UNFUSED;
    s->overlapped = min >= 0 && total >= min && !unfused_q;
    TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_SENT], st), err);
    if (s->overlapped) {
        TRY(overlapped_step(s, &rp, err));
        TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_RETURNED], st), err);
    } else {
        /* token all-to-all; group by local expert; experts; ungroup; outputs back */
        TRY(alltoall_rows(s, s->send16, sp.counts, sp.displs, s->recv16, rp.counts, rp.displs,
                          err));
        TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_RECEIVED], st), err);
        TRY(tmoe_cuda_gather(s->recv16, s->d_ridx + s->o_from, R, 1, D, s->xg16, st, err));
        TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_EXPERTS], st), err);
        TRY(tmoe_cuda_state_experts(s->inner, s->xg16, R, s->d_ridx + s->o_lc, s->d_ridx + s->o_lo,
                                    s->d_ridx + s->o_act, rp.expert_counts, s->ye32, err));
        TRY(tmoe_cuda_ungroup_f16(s->ye32, s->d_ridx + s->o_to, R, D, s->ret16, st, err));
        TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_UNGROUPED], st), err);
        TRY(alltoall_rows(s, s->ret16, rp.counts, rp.displs, s->back16, sp.counts, sp.displs, err));
        TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_RETURNED], st), err);
    }
    TRY(tmoe_cuda_combine_f16(s->back16, s->d_sidx + s->o_pos, s->w, s->io.x, T, k, D, s->y32, st,
                              err));
    TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_COMBINED], st), err);
    TMOE_CUDA_CHECK(cudaEventSynchronize(s->ev[EP_COMBINED]), err);

    /* overlapped: the exchanges run under the experts, their own time is not separable */
    s->stats.a2a_ms =
        s->overlapped ? NAN : ev_ms(s, EP_SENT, EP_RECEIVED) + ev_ms(s, EP_UNGROUPED, EP_RETURNED);
    s->stats.step_ms = ev_ms(s, EP_START, EP_COMBINED);
    s->stats.overlapped = s->overlapped;
    double sent = 0.0;
    for (int q = 0; q < s->N; q++) {
        s->stats.copies_to[q] = sp.counts[q];
        s->stats.copies_from[q] = rp.counts[q];
        if (q != s->rank) sent += ((double)sp.counts[q] + rp.counts[q]) * D * 2.0;
    }
    s->stats.a2a_bytes = sent;
    memset(s->stats.expert_rows, 0, sizeof s->stats.expert_rows);
    for (int l = 0; l < rp.num_local; l++)
        s->stats.expert_rows[rp.experts[l]] = rp.expert_counts[l];
    if (!m) return TMOE_OK;
    /* permute: planning, pack, count exchange and grouping; the all-to-alls are in a2a_ms */
    tmoe_op_ms_add(m->op_ms, TMOE_OP_GATE_TOPK, ev_ms(s, EP_START, EP_TOPK));
    tmoe_op_ms_add(m->op_ms, TMOE_OP_PERMUTE, ev_ms(s, EP_TOPK, EP_SENT));
    if (!s->overlapped) {
        tmoe_op_ms_add(m->op_ms, TMOE_OP_PERMUTE, ev_ms(s, EP_RECEIVED, EP_EXPERTS));
        if (rp.rows > 0) tmoe_cuda_state_expert_ms(s->inner, s->ev[EP_EXPERTS], m->op_ms);
    }
    tmoe_op_ms_add(m->op_ms, TMOE_OP_COMBINE, ev_ms(s, EP_RETURNED, EP_COMBINED));
    m->step_ms = s->stats.step_ms;
    for (int e = 0; e < s->E; e++) {
        m->tokens_per_expert[e] = 0;
        m->expert_ms[e] = NAN;
    }
    for (int i = 0; i < Tk; i++) m->tokens_per_expert[s->h_idx[i]]++;
    if (m->topk_idx) memcpy(m->topk_idx, s->h_idx, sizeof(int32_t) * (size_t)Tk);
    if (m->topk_w) memcpy(m->topk_w, s->h_w, sizeof(float) * (size_t)Tk);
    return TMOE_OK;
}

static int ep_moe(void *p, const float *bias, tmoe_moe_metrics *m, tmoe_error *err) {
    ep_state *s = p;
    int rc = ep_moe_in(s, bias, m, err);
    if (rc) s->failed = 1;
    return rc;
}

static int ep_output(void *p, float *y, tmoe_error *err) {
    ep_state *s = p;
    TMOE_CUDA_CHECK(cudaMemcpyAsync(y, s->y32, sizeof(float) * (size_t)s->T * s->D,
                                    cudaMemcpyDeviceToHost, s->io.stream),
                    err);
    TMOE_CUDA_CHECK(cudaStreamSynchronize(s->io.stream), err);
    return TMOE_OK;
}

static int ep_stats(const void *p, tmoe_ep_stats *out) {
    *out = ((const ep_state *)p)->stats;
    return TMOE_OK;
}

const tmoe_backend_vt tmoe_backend_cuda_ep = {
    .name = "cuda-ep",
    .create = ep_create,
    .destroy = ep_destroy,
    .begin = ep_begin,
    .logits = ep_logits,
    .moe = ep_moe,
    .output = ep_output,
    .ep_stats = ep_stats,
};
