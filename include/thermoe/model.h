/* The MoE transformer block: linear layers (fp16 or packed q4/q2), experts, the MoE layer
 * and the pre-norm block around it. Weights live on the host here; backends copy them.
 *
 * Numerics, the same on every backend: the hidden state is fp32; every linear op takes fp16
 * activations (rounded on the way in) and fp16 or q*scale weights, accumulates in fp32 and
 * writes fp32; the expert activation output is rounded to fp16 before linear_fc2; gate
 * logits, softmax and combine are fp32. */
#ifndef THERMOE_MODEL_H
#define THERMOE_MODEL_H

#include "thermoe/core.h"
#include "thermoe/ops.h"
#include "thermoe/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TMOE_MAX_EXPERTS 256
#define TMOE_MAX_TOPK 16

/* y = x W^T with W (out, in). Exactly one of w (fp16) or q + scales (q4/q2) is set.
 * Buffers are owned by the struct (tmoe_linear_free). */
typedef struct tmoe_linear {
    tmoe_etype type;
    int out, in, group;
    tmoe_f16 *w;      /* (out, in) fp16 weights, type fp16 */
    uint8_t *q;       /* (out, in * bits / 8) packed integers, q4/q2 */
    tmoe_f16 *scales; /* (out, in / group), q4/q2 */
} tmoe_linear;

/* Allocate an uninitialised linear of the given type/shape (checks the shape). */
int tmoe_linear_alloc(tmoe_linear *l, tmoe_etype t, int out, int in, int group, tmoe_error *err);
/* Fill with uniform(-a, a) weights from rng (a = 1/sqrt(in)), quantized when q4/q2. */
int tmoe_linear_init_random(tmoe_linear *l, tmoe_rng *rng, tmoe_error *err);
/* Set from fp32 weights (quantized when q4/q2). */
int tmoe_linear_set_f32(tmoe_linear *l, const float *w, tmoe_error *err);
/* Dequantize (or convert) to fp32 (out, in). */
void tmoe_linear_to_f32(const tmoe_linear *l, float *w);
size_t tmoe_linear_weight_bytes(const tmoe_linear *l); /* bytes of weights + scales */
void tmoe_linear_free(tmoe_linear *l);               /* NULL-safe */

/* An expert: linear_fc1 -> act -> linear_fc2. With swiglu, fc1 has 2*d_ff rows: rows
 * [0, d_ff) are the gate projection (Mixtral w1), [d_ff, 2 d_ff) the up projection (w3);
 * act = silu(gate) * up. fc2 (d_model, d_ff) is Mixtral's w2. */
typedef struct tmoe_expert {
    tmoe_etype type;
    tmoe_act act;
    int d_model, d_ff, group;
    tmoe_linear fc1, fc2;
} tmoe_expert;

int tmoe_expert_alloc(tmoe_expert *e, tmoe_etype t, tmoe_act act, int d_model, int d_ff,
                      int group, tmoe_error *err);
void tmoe_expert_free(tmoe_expert *e);
size_t tmoe_expert_weight_bytes(const tmoe_expert *e);

typedef struct tmoe_block_config {
    int d_model;      /* hidden size */
    int n_heads;      /* attention heads; d_model % n_heads == 0 */
    int d_ff;         /* expert hidden size */
    int num_experts;  /* E, 1..TMOE_MAX_EXPERTS */
    int top_k;        /* 1..min(E, TMOE_MAX_TOPK) */
    int group_size;   /* quantization group along the input dim */
    int seq_len;      /* max tokens per forward (attention is causal over them) */
    tmoe_etype expert_type;      /* default type of every expert */
    tmoe_etype *expert_types;    /* optional (num_experts): per-expert types; NULL = all default */
    tmoe_act act;                /* relu or swiglu */
    int renormalize;             /* combine weights renormalised over the chosen experts */
    float norm_eps;              /* RMSNorm epsilon */
    uint64_t seed;               /* weights are a function of the seed alone */
} tmoe_block_config;

/* Defaults: a small shape that runs fast on a CPU. */
tmoe_block_config tmoe_block_config_default(void);
/* Check every field; the message names the field, its value and what is allowed. */
int tmoe_block_config_validate(const tmoe_block_config *c, tmoe_error *err);

typedef struct tmoe_moe {
    int d_model, d_ff, num_experts, top_k, renormalize;
    tmoe_linear gate;     /* (E, d_model) fp16 */
    tmoe_expert *experts; /* (E) */
} tmoe_moe;

typedef struct tmoe_block {
    tmoe_block_config cfg;          /* expert_types copied into types[] */
    tmoe_etype types[TMOE_MAX_EXPERTS];
    float *norm1, *norm2;           /* (d_model) RMSNorm weights */
    tmoe_linear wqkv;               /* (3 d_model, d_model) fp16: rows q, k, v */
    tmoe_linear wo;                 /* (d_model, d_model) fp16 */
    tmoe_moe moe;
} tmoe_block;

/* Build a block with deterministic random weights from cfg.seed. *out owned by the caller. */
int tmoe_block_create(const tmoe_block_config *cfg, tmoe_block **out, tmoe_error *err);
/* Build a block with every tensor allocated but uninitialised (for loading). */
int tmoe_block_alloc(const tmoe_block_config *cfg, tmoe_block **out, tmoe_error *err);
void tmoe_block_free(tmoe_block *b); /* NULL-safe */

/* Per-batch record of one MoE step. Buffers topk_idx / topk_w are caller-owned, may be NULL. */
typedef struct tmoe_moe_metrics {
    int tokens, num_experts, top_k;
    int32_t tokens_per_expert[TMOE_MAX_EXPERTS];
    double expert_ms[TMOE_MAX_EXPERTS]; /* time per expert; NAN where the backend cannot split */
    double op_ms[TMOE_OP_COUNT];        /* time per op (summed over experts); NAN = not run */
    double step_ms;                     /* whole MoE step */
    double predicted_energy_j;          /* NAN until a cost model / router fills it */
    int32_t *topk_idx;                  /* (tokens, top_k) chosen experts, or NULL */
    float *topk_w;                      /* (tokens, top_k) combine weights, or NULL */
} tmoe_moe_metrics;

void tmoe_moe_metrics_reset(tmoe_moe_metrics *m); /* NAN/0 everything, keep buffer pointers */

#ifdef __cplusplus
}
#endif
#endif
