/* Names of ops, expert types, impls and activations: spelled here once. */
#include "thermoe/core.h"

#include <string.h>

static const char *const op_names[TMOE_OP_COUNT] = {
    [TMOE_OP_GATE_LINEAR] = "gate_linear",
    [TMOE_OP_GATE_TOPK] = "gate_topk",
    [TMOE_OP_PERMUTE] = "permute",
    [TMOE_OP_DEQUANT_UNPACK] = "dequant_unpack",
    [TMOE_OP_LINEAR_FC1] = "linear_fc1",
    [TMOE_OP_RELU] = "relu",
    [TMOE_OP_LINEAR_FC2] = "linear_fc2",
    [TMOE_OP_COMBINE] = "combine",
    [TMOE_OP_NORM] = "norm",
    [TMOE_OP_ATTN_QKV] = "attn_qkv",
    [TMOE_OP_ATTN_CORE] = "attn_core",
    [TMOE_OP_ATTN_OUT] = "attn_out",
};
static const char *const etype_names[TMOE_ET_COUNT] = {"fp16", "q4", "q2", "bf16"};
static const char *const impl_names[TMOE_IMPL_COUNT] = {"unfused", "fused"};
static const char *const act_names[TMOE_ACT_COUNT] = {"relu", "swiglu"};

#define NAME_OF(table, n, i) ((unsigned)(i) < (unsigned)(n) ? (table)[i] : "?")

const char *tmoe_op_name(tmoe_op op) {
    return NAME_OF(op_names, TMOE_OP_COUNT, op);
}
const char *tmoe_etype_name(tmoe_etype t) {
    return NAME_OF(etype_names, TMOE_ET_COUNT, t);
}
const char *tmoe_impl_name(tmoe_impl i) {
    return NAME_OF(impl_names, TMOE_IMPL_COUNT, i);
}
const char *tmoe_act_name(tmoe_act a) {
    return NAME_OF(act_names, TMOE_ACT_COUNT, a);
}

static int find(const char *const *table, int n, const char *s) {
    if (!s) return -1;
    for (int i = 0; i < n; i++)
        if (strcmp(table[i], s) == 0) return i;
    return -1;
}

#define PARSER(fn, type, table, n)                                                                 \
    int fn(const char *s, type *out) {                                                             \
        int i = find(table, n, s);                                                                 \
        if (i < 0) return -1;                                                                      \
        *out = (type)i;                                                                            \
        return 0;                                                                                  \
    }
PARSER(tmoe_op_parse, tmoe_op, op_names, TMOE_OP_COUNT)
PARSER(tmoe_etype_parse, tmoe_etype, etype_names, TMOE_ET_COUNT)
PARSER(tmoe_impl_parse, tmoe_impl, impl_names, TMOE_IMPL_COUNT)
PARSER(tmoe_act_parse, tmoe_act, act_names, TMOE_ACT_COUNT)

int tmoe_etype_bits(tmoe_etype t) {
    switch (t) {
    case TMOE_ET_FP16: return 16;
    case TMOE_ET_Q4: return 4;
    case TMOE_ET_Q2: return 2;
    case TMOE_ET_BF16: return 16;
    default: return 0;
    }
}

int tmoe_etype_is_quant(tmoe_etype t) {
    return t == TMOE_ET_Q4 || t == TMOE_ET_Q2;
}

int tmoe_expert_op_sequence(tmoe_etype t, tmoe_impl impl, tmoe_op out[4]) {
    int n = 0;
    if (tmoe_etype_is_quant(t) && impl == TMOE_IMPL_UNFUSED) out[n++] = TMOE_OP_DEQUANT_UNPACK;
    out[n++] = TMOE_OP_LINEAR_FC1;
    out[n++] = TMOE_OP_RELU;
    out[n++] = TMOE_OP_LINEAR_FC2;
    return n;
}
