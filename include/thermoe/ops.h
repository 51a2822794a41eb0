/* The one table of op types, expert types, implementations and activations.
 * Every module (model, profiler, cost model, router, logs) names ops through this table. */
#ifndef THERMOE_OPS_H
#define THERMOE_OPS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    TMOE_OP_GATE_LINEAR,    /* router logits, tokens x d_model -> tokens x E */
    TMOE_OP_GATE_TOPK,      /* softmax + bias + top-k selection + combine weights */
    TMOE_OP_PERMUTE,        /* group token copies by expert (histogram, scan, scatter) */
    TMOE_OP_DEQUANT_UNPACK, /* unpack q4/q2 weights to fp16 (unfused path only) */
    TMOE_OP_LINEAR_FC1,     /* expert up projection (fused dequant when impl = fused) */
    TMOE_OP_RELU,           /* activation (swiglu for gated experts) */
    TMOE_OP_LINEAR_FC2,     /* expert down projection */
    TMOE_OP_COMBINE,        /* weighted sum of expert outputs back to token order */
    TMOE_OP_NORM,           /* RMSNorm */
    TMOE_OP_ATTN_QKV,       /* fused q, k, v projection */
    TMOE_OP_ATTN_CORE,      /* causal softmax(q k^T / sqrt(dh)) v */
    TMOE_OP_ATTN_OUT,       /* output projection */
    TMOE_OP_COUNT
} tmoe_op;

typedef enum { TMOE_ET_FP16, TMOE_ET_Q4, TMOE_ET_Q2, TMOE_ET_COUNT } tmoe_etype;
typedef enum { TMOE_IMPL_UNFUSED, TMOE_IMPL_FUSED, TMOE_IMPL_COUNT } tmoe_impl;
typedef enum { TMOE_ACT_RELU, TMOE_ACT_SWIGLU, TMOE_ACT_COUNT } tmoe_act;

const char *tmoe_op_name(tmoe_op op);
const char *tmoe_etype_name(tmoe_etype t);
const char *tmoe_impl_name(tmoe_impl i);
const char *tmoe_act_name(tmoe_act a);

/* Parse a name; return 0 and set *out, or -1 when the name is unknown. */
int tmoe_op_parse(const char *s, tmoe_op *out);
int tmoe_etype_parse(const char *s, tmoe_etype *out);
int tmoe_impl_parse(const char *s, tmoe_impl *out);
int tmoe_act_parse(const char *s, tmoe_act *out);

/* Bits per weight of an expert type (16, 4, 2). */
int tmoe_etype_bits(tmoe_etype t);

/* An expert's forward as the ordered op list of DESIGN.md:
 * dequant_unpack (quantized and unfused only) -> linear_fc1 -> relu -> linear_fc2.
 * Writes up to 4 ops to out; returns how many. */
int tmoe_expert_op_sequence(tmoe_etype t, tmoe_impl impl, tmoe_op out[4]);

#ifdef __cplusplus
}
#endif
#endif
