/* Expert-parallel CUDA backend: one process (rank) per GPU, each holding only the experts
 * that the placement puts on its rank; tokens go to their experts and the outputs come back
 * through grouped NCCL send/receive (an all-to-all with per-peer counts).
 *
 * A rank's step (see thermoe/dispatch.h for the plan):
 *   begin    the inner CUDA engine (the block with this rank's experts only) runs attention
 *            and norm2 on this rank's tokens; the full gate (E, D) gives the logits.
 *   moe      gate top-k (biases) -> the indices to the host -> send plan -> pack kernel and,
 *            over NCCL, the per-expert counts -> receive plan -> token all-to-all (fp16
 *            rows) -> group by local expert -> the inner engine's expert kernels -> ungroup
 *            (fp32 -> fp16) -> the reverse all-to-all -> combine with the residual.
 * Rows for this rank itself are copied on the device, not sent. The host waits twice a step:
 * for the top-k indices (to plan the sends) and for the counts (to plan the receives).
 * Communication does not overlap expert compute: the experts of a rank need every row it
 * receives (simplification; measured in bench/results/h100_ep/).
 *
 * NVLink multicast (NVLS) stays off: NCCL_NVLS_ENABLE is set to 0 before NCCL starts. */
#include "../backend.h"
#include "../cuda/cublas_util.h"
#include "../cuda/cuda_engine.h"
#include "ep_ops.h"

#include "thermoe/dispatch.h"
#include "thermoe/ep.h"

#include <math.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>

#define NCCL_CHECK(call, err) \
    do { \
        ncclResult_t nr_ = (call); \
        if (nr_ != ncclSuccess) \
            return tmoe_errorf((err), TMOE_EDEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #call, \
                               ncclGetErrorString(nr_)); \
    } while (0)

enum { EP_START, EP_TOPK, EP_PACKED, EP_SENT, EP_RECEIVED, EP_EXPERTS, EP_UNGROUPED,
       EP_RETURNED, EP_COMBINED, EP_EV_N };

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
    tmoe_ep_stats stats;
} ep_state;

static int ep_probe(tmoe_error *err) { return tmoe_backend_cuda.probe(err); }

static void ep_destroy(void *p) {
    ep_state *s = p;
    if (!s) return;
    if (s->io.stream) cudaStreamSynchronize(s->io.stream);
    if (s->comm) ncclCommDestroy(s->comm);
    for (int i = 0; i < EP_EV_N; i++)
        if (s->ev[i]) cudaEventDestroy(s->ev[i]);
    cudaFree(s->ws);
    if (s->host) cudaFreeHost(s->host);
    if (s->inner) tmoe_backend_cuda.destroy(s->inner);
    tmoe_dispatch_free(s->plan);
    free(s->sub_experts);
    free(s);
}

/* Offsets into the send staging: [expert_counts E | src Tk | pos Tk]. */
static int32_t *sidx_counts(int32_t *b) { return b; }
static int32_t *sidx_src(const ep_state *s, int32_t *b) { return b + s->E; }
static int32_t *sidx_pos(const ep_state *s, int32_t *b) { return b + s->E + s->Tmax * s->k; }
/* Receive staging: [counts N*L | from_grouped R | to_grouped R | lcounts L | loffsets L+1 |
 * active L+1]. */
static int32_t *ridx_counts(int32_t *b) { return b; }
static int32_t *ridx_from(const ep_state *s, int32_t *b) { return b + s->N * s->L; }
static int32_t *ridx_to(const ep_state *s, int32_t *b) { return b + s->N * s->L + s->Rmax; }
static int32_t *ridx_lcounts(const ep_state *s, int32_t *b) {
    return b + s->N * s->L + 2 * s->Rmax;
}
static int32_t *ridx_loffs(const ep_state *s, int32_t *b) { return ridx_lcounts(s, b) + s->L; }
static int32_t *ridx_active(const ep_state *s, int32_t *b) { return ridx_loffs(s, b) + s->L + 1; }

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
    s->sub.moe.gate.out = s->L; /* the inner gate is not used: its first L rows are uploaded */
    for (int l = 0; l < s->L; l++) {
        s->sub_experts[l] = b->moe.experts[ids[l]];
        s->sub.types[l] = b->types[ids[l]];
    }
    return TMOE_OK;
}

static int alloc_buffers(ep_state *s, tmoe_error *err) {
    size_t D = (size_t)s->D, E = (size_t)s->E, Tk = (size_t)s->Tmax * s->k, R = (size_t)s->Rmax;
    s->sidx_n = E + 2 * Tk;
    s->ridx_n = (size_t)s->N * s->L + 2 * R + (size_t)s->L + 2 * ((size_t)s->L + 1);
    size_t sizes[] = {E * D * 2, Tk * D * 2, R * D * 2, R * D * 2, R * D * 2, Tk * D * 2,
                      (size_t)s->Tmax * E * 4, Tk * 4, R * D * 4, (size_t)s->Tmax * D * 4,
                      Tk * 4, s->sidx_n * 4, s->ridx_n * 4};
    void **slots[] = {(void **)&s->gate16, (void **)&s->send16, (void **)&s->recv16,
                      (void **)&s->xg16, (void **)&s->ret16, (void **)&s->back16,
                      (void **)&s->logits, (void **)&s->w, (void **)&s->ye32, (void **)&s->y32,
                      (void **)&s->idx, (void **)&s->d_sidx, (void **)&s->d_ridx};
    size_t n = sizeof slots / sizeof *slots, total = 0;
    for (size_t i = 0; i < n; i++) total += (sizes[i] + 255) & ~(size_t)255;
    cudaError_t ce = cudaMalloc(&s->ws, total);
    if (ce != cudaSuccess)
        return tmoe_errorf(err, TMOE_ENOMEM, "%s:%d: expert-parallel workspace of %zu bytes: %s",
                           __FILE__, __LINE__, total, cudaGetErrorString(ce));
    uint8_t *p = s->ws;
    for (size_t i = 0; i < n; i++) {
        *slots[i] = p;
        p += (sizes[i] + 255) & ~(size_t)255;
    }
    size_t hsz = (E + 2 * Tk + s->sidx_n + s->ridx_n) * 4 + 256;
    TMOE_CUDA_CHECK(cudaHostAlloc(&s->host, hsz, cudaHostAllocMapped), err);
    s->h_bias = s->host;
    s->h_w = s->h_bias + E;
    s->h_idx = (int32_t *)(s->h_w + Tk);
    s->p_sidx = s->h_idx + Tk;
    s->p_ridx = s->p_sidx + s->sidx_n;
    TMOE_CUDA_CHECK(cudaHostGetDevicePointer((void **)&s->d_bias, s->h_bias, 0), err);
    TMOE_CUDA_CHECK(cudaHostGetDevicePointer((void **)&s->d_hw, s->h_w, 0), err);
    TMOE_CUDA_CHECK(cudaHostGetDevicePointer((void **)&s->d_hidx, s->h_idx, 0), err);
    TMOE_CUDA_CHECK(cudaMemcpy(s->gate16, s->blk->moe.gate.w, E * D * 2, cudaMemcpyHostToDevice),
                    err);
    return TMOE_OK;
}

/* Row off of buf, rows of D fp16 values. */
static tmoe_f16 *rows_at(tmoe_f16 *buf, int off, int D) { return buf + (size_t)off * D; }

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
            NCCL_CHECK(ncclSend(rows_at(sbuf, sdispl[p], s->D), (size_t)scount[p] * D, ncclHalf, p,
                                s->comm, s->io.stream), err);
        if (rcount[p] > 0)
            NCCL_CHECK(ncclRecv(rows_at(rbuf, rdispl[p], s->D), (size_t)rcount[p] * D, ncclHalf, p,
                                s->comm, s->io.stream), err);
    }
    NCCL_CHECK(ncclGroupEnd(), err);
    int me = s->rank;
    if (scount[me] > 0)
        TMOE_CUDA_CHECK(cudaMemcpyAsync(rows_at(rbuf, rdispl[me], s->D),
                                        rows_at(sbuf, sdispl[me], s->D),
                                        (size_t)scount[me] * D * 2, cudaMemcpyDeviceToDevice,
                                        s->io.stream), err);
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
    if (s->cfg.placement) {
        if (s->cfg.placement->num_experts != s->E || s->cfg.placement->num_devices != s->N)
            return tmoe_errorf(err, TMOE_EINVAL,
                               "placement of %d experts on %d devices for a block of %d experts "
                               "over %d ranks", s->cfg.placement->num_experts,
                               s->cfg.placement->num_devices, s->E, s->N);
        s->pl = *s->cfg.placement;
    } else {
        TRY(tmoe_placement_round_robin(s->E, s->N, &s->pl, err));
    }
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
    ic.max_tokens = (s->Rmax + s->sub.cfg.top_k - 1) / s->sub.cfg.top_k; /* rows <= Rmax */
    ic.use_graphs = 0;
    ic.ep = NULL;
    ic.placement = NULL;
    TRY(tmoe_backend_cuda.create(&s->sub, &ic, &s->inner, err));
    tmoe_cuda_state_io(s->inner, &s->io);
    for (int i = 0; i < EP_EV_N; i++) TMOE_CUDA_CHECK(cudaEventCreate(&s->ev[i]), err);
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
                                    cudaMemcpyDeviceToHost, s->io.stream), err);
    TMOE_CUDA_CHECK(cudaStreamSynchronize(s->io.stream), err);
    return TMOE_OK;
}

static double ev_ms(const ep_state *s, int a, int b) {
    float ms = NAN;
    if (cudaEventElapsedTime(&ms, s->ev[a], s->ev[b]) != cudaSuccess) return NAN;
    return ms;
}

/* The per-expert counts: this rank's expert_counts slice of peer q goes to q, row q of the
 * (N, L) receive counts comes from q (this rank's own slice is a device copy). */
static int exchange_counts(ep_state *s, tmoe_error *err) {
    cudaStream_t st = s->io.stream;
    int32_t *sc = sidx_counts(s->d_sidx), *rc = ridx_counts(s->d_ridx);
    NCCL_CHECK(ncclGroupStart(), err);
    for (int q = 0; q < s->N; q++) {
        if (q == s->rank) continue;
        int n = s->pl.first[q + 1] - s->pl.first[q];
        NCCL_CHECK(ncclSend(sc + s->pl.first[q], (size_t)n, ncclInt32, q, s->comm, st), err);
        NCCL_CHECK(ncclRecv(rc + q * s->L, (size_t)s->L, ncclInt32, q, s->comm, st), err);
    }
    NCCL_CHECK(ncclGroupEnd(), err);
    TMOE_CUDA_CHECK(cudaMemcpyAsync(rc + s->rank * s->L, sc + s->pl.first[s->rank],
                                    sizeof(int32_t) * s->L, cudaMemcpyDeviceToDevice, st), err);
    TMOE_CUDA_CHECK(cudaMemcpyAsync(ridx_counts(s->p_ridx), rc, sizeof(int32_t) * s->N * s->L,
                                    cudaMemcpyDeviceToHost, st), err);
    return TMOE_OK;
}

static int ep_moe(void *p, const float *bias, tmoe_moe_metrics *m, tmoe_error *err) {
    ep_state *s = p;
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
    memcpy(sidx_counts(s->p_sidx), sp.expert_counts, sizeof(int32_t) * s->E);
    memcpy(sidx_src(s, s->p_sidx), sp.src, sizeof(int32_t) * Tk);
    memcpy(sidx_pos(s, s->p_sidx), sp.pos, sizeof(int32_t) * Tk);
    TMOE_CUDA_CHECK(cudaMemcpyAsync(s->d_sidx, s->p_sidx, sizeof(int32_t) * s->sidx_n,
                                    cudaMemcpyHostToDevice, st), err);
    TRY(tmoe_cuda_gather(s->io.h16, sidx_src(s, s->d_sidx), Tk, k, D, s->send16, st, err));
    TRY(exchange_counts(s, err));
    TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_PACKED], st), err);
    TMOE_CUDA_CHECK(cudaEventSynchronize(s->ev[EP_PACKED]), err);

    /* receive plan; token all-to-all; group by local expert; experts; ungroup */
    TRY(tmoe_dispatch_plan_recv(s->plan, ridx_counts(s->p_ridx), err));
    tmoe_dispatch_recv rp = tmoe_dispatch_recv_plan(s->plan);
    int R = rp.rows, used = 0;
    memcpy(ridx_from(s, s->p_ridx), rp.from_grouped, sizeof(int32_t) * R);
    memcpy(ridx_to(s, s->p_ridx), rp.to_grouped, sizeof(int32_t) * R);
    memcpy(ridx_lcounts(s, s->p_ridx), rp.expert_counts, sizeof(int32_t) * s->L);
    memcpy(ridx_loffs(s, s->p_ridx), rp.expert_offsets, sizeof(int32_t) * (s->L + 1));
    int32_t *act = ridx_active(s, s->p_ridx);
    for (int l = 0; l < s->L; l++)
        if (rp.expert_counts[l] > 0) act[1 + used++] = l;
    act[0] = used;
    size_t skip = (size_t)s->N * s->L;
    TMOE_CUDA_CHECK(cudaMemcpyAsync(s->d_ridx + skip, s->p_ridx + skip,
                                    sizeof(int32_t) * (s->ridx_n - skip), cudaMemcpyHostToDevice,
                                    st), err);
    TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_SENT], st), err);
    TRY(alltoall_rows(s, s->send16, sp.counts, sp.displs, s->recv16, rp.counts, rp.displs, err));
    TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_RECEIVED], st), err);
    TRY(tmoe_cuda_gather(s->recv16, ridx_from(s, s->d_ridx), R, 1, D, s->xg16, st, err));
    TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_EXPERTS], st), err);
    TRY(tmoe_cuda_state_experts(s->inner, s->xg16, R, ridx_lcounts(s, s->d_ridx),
                                ridx_loffs(s, s->d_ridx), ridx_active(s, s->d_ridx),
                                rp.expert_counts, s->ye32, err));
    TRY(tmoe_cuda_ungroup_f16(s->ye32, ridx_to(s, s->d_ridx), R, D, s->ret16, st, err));
    TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_UNGROUPED], st), err);
    /* the outputs go back: what this rank received from q returns to q, in q's send order */
    TRY(alltoall_rows(s, s->ret16, rp.counts, rp.displs, s->back16, sp.counts, sp.displs, err));
    TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_RETURNED], st), err);
    TRY(tmoe_cuda_combine_f16(s->back16, sidx_pos(s, s->d_sidx), s->w, s->io.x, T, k, D, s->y32,
                              st, err));
    TMOE_CUDA_CHECK(cudaEventRecord(s->ev[EP_COMBINED], st), err);
    TMOE_CUDA_CHECK(cudaEventSynchronize(s->ev[EP_COMBINED]), err);

    s->stats.a2a_ms = ev_ms(s, EP_SENT, EP_RECEIVED) + ev_ms(s, EP_UNGROUPED, EP_RETURNED);
    s->stats.step_ms = ev_ms(s, EP_START, EP_COMBINED);
    double sent = 0.0;
    for (int q = 0; q < s->N; q++) {
        s->stats.copies_to[q] = sp.counts[q];
        s->stats.copies_from[q] = rp.counts[q];
        if (q != s->rank) sent += ((double)sp.counts[q] + rp.counts[q]) * D * 2.0;
    }
    s->stats.a2a_bytes = sent;
    if (!m) return TMOE_OK;
    /* permute: planning, pack, count exchange and grouping; the all-to-alls are in a2a_ms */
    tmoe_op_ms_add(m->op_ms, TMOE_OP_GATE_TOPK, ev_ms(s, EP_START, EP_TOPK));
    tmoe_op_ms_add(m->op_ms, TMOE_OP_PERMUTE, ev_ms(s, EP_TOPK, EP_SENT));
    tmoe_op_ms_add(m->op_ms, TMOE_OP_PERMUTE, ev_ms(s, EP_RECEIVED, EP_EXPERTS));
    tmoe_cuda_state_expert_ms(s->inner, s->ev[EP_EXPERTS], m->op_ms);
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

static int ep_output(void *p, float *y, tmoe_error *err) {
    ep_state *s = p;
    TMOE_CUDA_CHECK(cudaMemcpyAsync(y, s->y32, sizeof(float) * (size_t)s->T * s->D,
                                    cudaMemcpyDeviceToHost, s->io.stream), err);
    TMOE_CUDA_CHECK(cudaStreamSynchronize(s->io.stream), err);
    return TMOE_OK;
}

static int ep_stats(const void *p, tmoe_ep_stats *out) {
    *out = ((const ep_state *)p)->stats;
    return TMOE_OK;
}

const tmoe_backend_vt tmoe_backend_cuda_ep = {
    .name = "cuda-ep",
    .probe = ep_probe,
    .create = ep_create,
    .destroy = ep_destroy,
    .begin = ep_begin,
    .logits = ep_logits,
    .moe = ep_moe,
    .output = ep_output,
    .ep_stats = ep_stats,
};
