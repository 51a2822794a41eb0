/* The engine runs a transformer block on a backend (cpu or cuda) chosen at run time.
 * A forward is split so that a host-side router can look at the gate logits and choose
 * per-expert biases before the experts run:
 *   begin (attention sub-block, norm, gate_linear) -> logits -> moe (top-k, permute,
 *   experts, combine, residual) -> output. */
#ifndef THERMOE_ENGINE_H
#define THERMOE_ENGINE_H

#include "thermoe/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { TMOE_BACKEND_AUTO, TMOE_BACKEND_CPU, TMOE_BACKEND_CUDA, TMOE_BACKEND_COUNT } tmoe_backend_kind;
const char *tmoe_backend_kind_name(tmoe_backend_kind k);
int tmoe_backend_kind_parse(const char *s, tmoe_backend_kind *out);

/* Can backend k run here? TMOE_OK, or a code and a message saying why not. */
int tmoe_backend_probe(tmoe_backend_kind k, tmoe_error *err);

typedef struct tmoe_engine_config {
    tmoe_backend_kind backend; /* auto: cuda when it probes OK, else cpu */
    int device_id;             /* CUDA device ordinal */
    int max_tokens;            /* largest T passed to begin; workspace is sized once for it */
    tmoe_impl impl;            /* quantized experts: unfused (dequant_unpack + fp16) or fused */
    int use_graphs;            /* cuda: capture and replay the MoE step per token count */
    int bias_in_weights;       /* router biases also change the combine weights */
    /* Expert parallelism: with a group of several processes each process runs only the
     * experts that the placement puts on its rank, and token copies move to them and back:
     * cuda over NCCL (built with NCCL; each GPU holds only its experts), cpu over MPI (the
     * reference, bit-identical to one process). docs/cluster.md. Both borrowed; NULL = one
     * device. */
    struct tmoe_ep *ep;                         /* process group (thermoe/ep.h) */
    const struct tmoe_placement *placement;     /* expert -> rank; NULL = round robin */
    int ep_overlap_min_copies; /* overlap the all-to-alls with the experts (one exchange round
                                  per local expert on a second stream) when the token copies
                                  of all ranks in a step reach this; < 0 never (default 16384:
                                  on 2 x H100 it saved 1.7% there and cost 2-15% (fp16)
                                  and 3-29% (q4) at fewer copies,
                                  bench/results/h100_ep) */
} tmoe_engine_config;

tmoe_engine_config tmoe_engine_config_default(void);

typedef struct tmoe_engine tmoe_engine;

/* Create an engine for blk (borrowed: it must outlive the engine). On auto, the log says
 * which backend was chosen and why. */
int tmoe_engine_create(const tmoe_block *blk, const tmoe_engine_config *cfg, tmoe_engine **out,
                       tmoe_error *err);
void tmoe_engine_free(tmoe_engine *e); /* NULL-safe */
const char *tmoe_engine_backend_name(const tmoe_engine *e);
const tmoe_block *tmoe_engine_block(const tmoe_engine *e);

/* x: (T, d_model) fp32 on the host, 1 <= T <= max_tokens. The batch is a run of sequences
 * of the block's seq_len tokens (the last may be shorter); attention is causal within each.
 * moe_only skips the attention sub-block (the MoE layer alone: y = x + moe(norm2(x))). */
int tmoe_engine_begin(tmoe_engine *e, const float *x, int T, int moe_only, tmoe_error *err);
/* Gate logits of the current batch, (T, E) fp32. */
int tmoe_engine_logits(tmoe_engine *e, float *logits, tmoe_error *err);
/* Route with per-expert selection biases (E, or NULL for none) and run the experts.
 * Fills m (tokens per expert, op and expert times, routing when m's buffers are set). */
int tmoe_engine_moe(tmoe_engine *e, const float *bias, tmoe_moe_metrics *m, tmoe_error *err);
/* Block output (T, d_model) fp32. */
int tmoe_engine_output(tmoe_engine *e, float *y, tmoe_error *err);
/* begin + moe + output in one call (m may be NULL). */
int tmoe_engine_forward(tmoe_engine *e, const float *x, int T, int moe_only, const float *bias,
                        float *y, tmoe_moe_metrics *m, tmoe_error *err);

/* What an expert-parallel engine measured of its links. */
#define TMOE_EP_MAX_RANKS 64
typedef struct tmoe_ep_stats {
    int rank, ranks;
    double bytes_per_copy;   /* bytes one token copy moves to its expert's rank and back */
    double link_gbps;        /* all-to-all bandwidth measured at create: bytes this rank sends
                                to the others / time, GB/s (NAN with one rank) */
    double a2a_ms;           /* last step: both all-to-alls (tokens out, outputs back), ms */
    double a2a_bytes;        /* last step: bytes this rank sent to other ranks in them */
    double step_ms;          /* last step, gate top-k to combine, ms */
    int overlapped;          /* last step: exchanges overlapped with the experts (a2a_ms NAN) */
    int32_t copies_to[TMOE_EP_MAX_RANKS];   /* last step: token copies this rank sent to each rank */
    int32_t copies_from[TMOE_EP_MAX_RANKS]; /* last step: token copies received from each rank */
    int32_t expert_rows[TMOE_MAX_EXPERTS];  /* last step: rows each expert ran on this rank
                                               (every rank's copies; 0 for other ranks' experts) */
} tmoe_ep_stats;

/* TMOE_OK and *out for an expert-parallel engine; TMOE_ENOTSUP for any other. */
int tmoe_engine_ep_stats(const tmoe_engine *e, tmoe_ep_stats *out, tmoe_error *err);

#ifdef __cplusplus
}
#endif
#endif
