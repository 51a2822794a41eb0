/* Expert-parallel CPU backend: the CUDA expert-parallel step's plan on the CPU reference
 * kernels, with MPI_Alltoallv (tmoe_ep_alltoallv) as the transport. One process per rank;
 * each runs its own tokens through attention, norm and gate (the CPU engine of the whole
 * block), sends every token copy to the rank holding its expert, runs only its own experts
 * and returns the outputs. The outputs travel back in fp32, so the layer is bit-identical to
 * one process (tests/ep_check.c checks it under mpirun in CI). It makes the expert-parallel
 * run testable without GPUs; it is not meant to be fast. */
#include "backend/backend_internal.h"
#include "cpu_engine.h"
#include "thermoe/backend.h"
#include "thermoe/ep.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cpu_ep_state {
    const tmoe_block *blk;
    tmoe_engine_config cfg;
    tmoe_ep *g;
    int rank, N, E, L, k, D, Tmax, Rmax, T;
    tmoe_placement pl;
    tmoe_dispatch *plan;
    void *inner; /* the CPU engine state of the whole block (attention, norm, gate) */
    tmoe_cpu_io io;
    tmoe_arena arena;
    int32_t *idx;                /* (Tmax k) */
    float *w;                    /* (Tmax k) */
    tmoe_f16 *send, *recv, *grp; /* (Tmax k, D), (Rmax, D), (Rmax, D) */
    float *ye, *ret, *back, *y;  /* (Rmax, D), (Rmax, D), (Tmax k, D), (Tmax, D) */
    void *scratch;
    int32_t *pay_s, *pay_r; /* count payloads (tmoe_dispatch_pack_payload): E + N, N (L + 1) */
    int *sc, *sd, *rc, *rd; /* (N) byte counts and displacements */
    tmoe_ep_stats stats;
} cpu_ep_state;

#define TRY_EP(expr)                                                                               \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_) return rc_;                                                                       \
    } while (0)

static double ms_since(int64_t t0) {
    return (double)(tmoe_now_ns() - t0) / 1e6;
}

static void cpu_ep_destroy(void *p) {
    cpu_ep_state *s = p;
    if (!s) return;
    if (s->inner) tmoe_backend_cpu.destroy(s->inner);
    tmoe_dispatch_free(s->plan);
    tmoe_arena_free(&s->arena);
    free(s);
}

/* Rows of row_bytes each: counts and displacements in bytes for tmoe_ep_alltoallv. */
static void bytes_of(const cpu_ep_state *s, const int32_t *rows, const int32_t *displs,
                     size_t row_bytes, int *count, int *displ) {
    for (int q = 0; q < s->N; q++) {
        count[q] = (int)((size_t)rows[q] * row_bytes);
        displ[q] = (int)((size_t)displs[q] * row_bytes);
    }
}

/* The all-to-all bandwidth at the engine's batch size, as the CUDA backend measures it. */
static int calibrate_link(cpu_ep_state *s, tmoe_error *err) {
    int per = s->Tmax * s->k / s->N;
    if (per < 1) per = 1;
    size_t rb = (size_t)s->D * 2;
    for (int q = 0, o = 0; q < s->N; q++) {
        s->sc[q] = s->rc[q] = q == s->rank ? 0 : (int)(per * rb);
        s->sd[q] = s->rd[q] = o;
        o += s->sc[q];
    }
    memset(s->send, 0, (size_t)s->Tmax * s->k * rb);
    int64_t t0 = 0;
    for (int it = 0; it < 25; it++) {
        if (it == 5) t0 = tmoe_now_ns();
        TRY_EP(tmoe_ep_alltoallv(s->g, s->send, s->sc, s->sd, s->recv, s->rc, s->rd, err));
    }
    double sec = (double)(tmoe_now_ns() - t0) * 1e-9 / 20.0;
    double gbps = sec > 0.0 ? (double)(s->N - 1) * per * rb / sec / 1e9 : NAN;
    TRY_EP(tmoe_ep_allreduce_sum(s->g, &gbps, err));
    s->stats.link_gbps = gbps / s->N;
    return TMOE_OK;
}

static int cpu_ep_create_in(cpu_ep_state *s, tmoe_error *err) {
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
    if ((double)s->Rmax * s->D * 4 > 2e9)
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "expert-parallel cpu: %d ranks x %d tokens x top-%d rows of %d values "
                           "exceed MPI's 2^31-byte counts",
                           s->N, s->Tmax, s->k, s->D);
    TRY_EP(tmoe_placement_for_ranks(s->cfg.placement, s->E, s->N, &s->pl, err));
    s->L = s->pl.first[s->rank + 1] - s->pl.first[s->rank];
    int rc = tmoe_dispatch_create(&s->pl, s->rank, s->Tmax, s->k, &s->plan, err);
    if (rc) return rc;
    tmoe_engine_config ic = s->cfg;
    ic.ep = NULL;
    ic.placement = NULL;
    rc = tmoe_backend_cpu.create(b, &ic, &s->inner, err);
    if (rc) return rc;
    tmoe_cpu_state_io(s->inner, &s->io);

    size_t Tk = (size_t)s->Tmax * s->k, R = (size_t)s->Rmax, D = (size_t)s->D;
    size_t N = (size_t)s->N, L = (size_t)s->L, scratch = 0;
    for (int l = 0; l < s->L; l++) {
        const tmoe_expert *e = &b->moe.experts[s->pl.by_device[s->pl.first[s->rank] + l]];
        size_t x = tmoe_cpu_expert_scratch_bytes(e, s->Rmax, s->cfg.impl);
        if (x > scratch) scratch = x;
    }
    const tmoe_buf bufs[] = {
        TMOE_BUF(s->idx, Tk * 4),
        TMOE_BUF(s->w, Tk * 4),
        TMOE_BUF(s->send, Tk * D * 2),
        TMOE_BUF(s->recv, R * D * 2),
        TMOE_BUF(s->grp, R * D * 2),
        TMOE_BUF(s->ye, R * D * 4),
        TMOE_BUF(s->ret, R * D * 4),
        TMOE_BUF(s->back, Tk * D * 4),
        TMOE_BUF(s->y, (size_t)s->Tmax * D * 4),
        TMOE_BUF(s->scratch, scratch ? scratch : 1),
        TMOE_BUF(s->pay_s, ((size_t)s->E + N) * 4),
        TMOE_BUF(s->pay_r, N * (L + 1) * 4),
        TMOE_BUF(s->sc, N * 4),
        TMOE_BUF(s->sd, N * 4),
        TMOE_BUF(s->rc, N * 4),
        TMOE_BUF(s->rd, N * 4),
    };
    int n = (int)(sizeof bufs / sizeof *bufs);
    size_t total = tmoe_bufs_total(bufs, n, 64);
    rc = tmoe_arena_init(&s->arena, total, err);
    if (rc) return rc;
    tmoe_bufs_carve(bufs, n, tmoe_arena_alloc(&s->arena, total), 64);
    s->stats.rank = s->rank;
    s->stats.ranks = s->N;
    s->stats.bytes_per_copy = (double)s->D * (2 + 4); /* fp16 out, fp32 back */
    s->stats.a2a_ms = s->stats.a2a_bytes = s->stats.step_ms = NAN;
    return calibrate_link(s, err);
}

static int cpu_ep_create(const tmoe_block *blk, const tmoe_engine_config *cfg, void **out,
                         tmoe_error *err) {
    cpu_ep_state *s = tmoe_calloc(1, sizeof *s, err);
    if (!s) return TMOE_ENOMEM;
    s->blk = blk;
    s->cfg = *cfg;
    int rc = cpu_ep_create_in(s, err);
    if (rc) {
        cpu_ep_destroy(s);
        return rc;
    }
    *out = s;
    return TMOE_OK;
}

static int cpu_ep_begin(void *p, const float *x, int T, int moe_only, double op_ms[TMOE_OP_COUNT],
                        tmoe_error *err) {
    cpu_ep_state *s = p;
    s->T = T;
    return tmoe_backend_cpu.begin(s->inner, x, T, moe_only, op_ms, err);
}

static int cpu_ep_logits(void *p, float *logits, tmoe_error *err) {
    cpu_ep_state *s = p;
    return tmoe_backend_cpu.logits(s->inner, logits, err);
}

static int cpu_ep_moe(void *p, const float *bias, tmoe_moe_metrics *m, tmoe_error *err) {
    cpu_ep_state *s = p;
    const tmoe_block *b = s->blk;
    int T = s->T, k = s->k, Tk = T * k, D = s->D, N = s->N, L = s->L;
    int64_t t_step = tmoe_now_ns(), t0 = t_step;
    double a2a = 0.0, op_ms[TMOE_OP_COUNT];
    for (int o = 0; o < TMOE_OP_COUNT; o++) op_ms[o] = NAN;
    tmoe_gate_topk(s->io.logits, bias, T, s->E, k, b->cfg.renormalize, s->cfg.bias_in_weights,
                   s->idx, s->w);
    tmoe_op_ms_add(op_ms, TMOE_OP_GATE_TOPK, ms_since(t0));

    /* plans and the count exchange (each rank also sends its copy count, as on the GPU) */
    t0 = tmoe_now_ns();
    TRY_EP(tmoe_dispatch_plan_send(s->plan, s->idx, T, err));
    tmoe_dispatch_send sp = tmoe_dispatch_send_plan(s->plan);
    tmoe_dispatch_pack_payload(s->plan, s->pay_s);
    for (int q = 0; q < N; q++) {
        s->sc[q] = (s->pl.first[q + 1] - s->pl.first[q] + 1) * 4;
        s->sd[q] = (int)tmoe_dispatch_payload_offset(&s->pl, q) * 4;
        s->rc[q] = (L + 1) * 4;
        s->rd[q] = q * (L + 1) * 4;
    }
    TRY_EP(tmoe_ep_alltoallv(s->g, s->pay_s, s->sc, s->sd, s->pay_r, s->rc, s->rd, err));
    TRY_EP(tmoe_dispatch_plan_recv_payload(s->plan, s->pay_r, NULL, err));
    tmoe_dispatch_recv rp = tmoe_dispatch_recv_plan(s->plan);
    tmoe_dispatch_pack(s->plan, s->io.h16, (size_t)D * 2, s->send);
    tmoe_op_ms_add(op_ms, TMOE_OP_PERMUTE, ms_since(t0));

    /* tokens out, grouped by local expert */
    t0 = tmoe_now_ns();
    bytes_of(s, sp.counts, sp.displs, (size_t)D * 2, s->sc, s->sd);
    bytes_of(s, rp.counts, rp.displs, (size_t)D * 2, s->rc, s->rd);
    TRY_EP(tmoe_ep_alltoallv(s->g, s->send, s->sc, s->sd, s->recv, s->rc, s->rd, err));
    a2a += ms_since(t0);
    t0 = tmoe_now_ns();
    tmoe_dispatch_group(s->plan, s->recv, (size_t)D * 2, s->grp);
    tmoe_op_ms_add(op_ms, TMOE_OP_PERMUTE, ms_since(t0));
    for (int e = 0; e < s->E; e++) {
        m->tokens_per_expert[e] = 0;
        m->expert_ms[e] = NAN; /* other ranks' experts */
    }
    for (int l = 0; l < L; l++) {
        int n = rp.expert_counts[l], e = rp.experts[l];
        size_t off = (size_t)rp.expert_offsets[l] * D;
        int64_t te = tmoe_now_ns();
        if (n > 0)
            tmoe_cpu_expert_forward(&b->moe.experts[e], s->cfg.impl, s->grp + off, n, s->ye + off,
                                    s->scratch, op_ms);
        m->expert_ms[e] = ms_since(te);
    }

    /* outputs back (fp32), combine in slot order, residual */
    t0 = tmoe_now_ns();
    tmoe_dispatch_ungroup(s->plan, s->ye, (size_t)D * 4, s->ret);
    double comb = ms_since(t0);
    bytes_of(s, rp.counts, rp.displs, (size_t)D * 4, s->sc, s->sd);
    bytes_of(s, sp.counts, sp.displs, (size_t)D * 4, s->rc, s->rd);
    int64_t ta = tmoe_now_ns();
    TRY_EP(tmoe_ep_alltoallv(s->g, s->ret, s->sc, s->sd, s->back, s->rc, s->rd, err));
    a2a += ms_since(ta);
    t0 = tmoe_now_ns();
    tmoe_cpu_combine(s->back, sp.pos, s->w, T, k, D, s->y);
    for (size_t i = 0; i < (size_t)T * D; i++) s->y[i] += s->io.x[i];
    tmoe_op_ms_add(op_ms, TMOE_OP_COMBINE, comb + ms_since(t0));

    s->stats.a2a_ms = a2a;
    s->stats.step_ms = ms_since(t_step);
    s->stats.overlapped = 0;
    double bytes = 0.0;
    for (int q = 0; q < N; q++) {
        s->stats.copies_to[q] = sp.counts[q];
        s->stats.copies_from[q] = rp.counts[q];
        if (q != s->rank) bytes += (double)sp.counts[q] * D * 2 + (double)rp.counts[q] * D * 4;
    }
    s->stats.a2a_bytes = bytes;
    memset(s->stats.expert_rows, 0, sizeof s->stats.expert_rows);
    for (int l = 0; l < rp.num_local; l++)
        s->stats.expert_rows[rp.experts[l]] = rp.expert_counts[l];
    for (int o = 0; o < TMOE_OP_COUNT; o++)
        if (!isnan(op_ms[o])) tmoe_op_ms_add(m->op_ms, (tmoe_op)o, op_ms[o]);
    for (int i = 0; i < Tk; i++) m->tokens_per_expert[s->idx[i]]++;
    m->step_ms = s->stats.step_ms;
    if (m->topk_idx) memcpy(m->topk_idx, s->idx, sizeof(int32_t) * (size_t)Tk);
    if (m->topk_w) memcpy(m->topk_w, s->w, sizeof(float) * (size_t)Tk);
    return TMOE_OK;
}

static int cpu_ep_output(void *p, float *y, tmoe_error *err) {
    (void)err;
    cpu_ep_state *s = p;
    memcpy(y, s->y, sizeof(float) * (size_t)s->T * s->D);
    return TMOE_OK;
}

static int cpu_ep_stats(const void *p, tmoe_ep_stats *out) {
    *out = ((const cpu_ep_state *)p)->stats;
    return TMOE_OK;
}

const tmoe_backend_vt tmoe_backend_cpu_ep = {
    .name = "cpu-ep",
    .create = cpu_ep_create,
    .destroy = cpu_ep_destroy,
    .begin = cpu_ep_begin,
    .logits = cpu_ep_logits,
    .moe = cpu_ep_moe,
    .output = cpu_ep_output,
    .ep_stats = cpu_ep_stats,
};
