/* CPU reference kernels, one per op of the op table, in plain C with fp32 accumulation
 * (OpenMP over rows where it is enabled). The CUDA backend is checked against these. */
#ifndef THERMOE_CPU_H
#define THERMOE_CPU_H

#include "thermoe/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* norm: y = fp16(x / rms(x) * w), x (T, D) fp32, w (D), y (T, D) fp16. */
void tmoe_cpu_rmsnorm(const float *x, const float *w, int T, int D, float eps, tmoe_f16 *y);

/* linear, fp16 weights: y (n, out) = x (n, in) W^T. */
void tmoe_cpu_linear_f16(const tmoe_f16 *x, const tmoe_f16 *W, int n, int in, int out, float *y);
/* linear, packed weights dequantized in registers (the fused impl). */
void tmoe_cpu_linear_q(tmoe_etype t, const tmoe_f16 *x, const uint8_t *q, const tmoe_f16 *scales,
                       int group, int n, int in, int out, float *y);
/* dequant_unpack: packed -> fp16 weights (out, in). */
void tmoe_cpu_dequant_unpack(const tmoe_linear *l, tmoe_f16 *w16);
/* linear_fc1 / linear_fc2 on any weight type. impl fused: tmoe_cpu_linear_q; unfused:
 * the caller ran dequant_unpack into w16 (required then, ignored for fp16 / fused). */
void tmoe_cpu_linear(const tmoe_linear *l, tmoe_impl impl, const tmoe_f16 *w16, const tmoe_f16 *x,
                     int n, float *y);

/* relu / swiglu: h (n, d_ff) or (n, 2 d_ff) fp32 -> a (n, d_ff) fp16. */
void tmoe_cpu_act(tmoe_act act, const float *h, int n, int d_ff, tmoe_f16 *a);

/* gate_topk: tmoe_gate_topk (thermoe/model.h), shared with the router and the runner. */

/* permute: group the T*k token copies by expert, stable in (token, slot) order.
 * counts (E), offsets (E+1), src (T*k): grouped row -> copy index t*k+j,
 * dst (T*k): copy index -> grouped row. */
void tmoe_cpu_permute(const int32_t *idx, int T, int k, int E, int32_t *counts, int32_t *offsets,
                      int32_t *src, int32_t *dst);
/* gather rows of x16 (T, D) into grouped order xg (T*k, D). */
void tmoe_cpu_gather(const tmoe_f16 *x16, const int32_t *src, int N, int k, int D, tmoe_f16 *xg);
/* combine: y (T, D) = sum_j w[t,j] * ye[dst[t*k+j]], summed in slot order j = 0..k-1. */
void tmoe_cpu_combine(const float *ye, const int32_t *dst, const float *w, int T, int k, int D,
                      float *y);

/* attn_core: causal attention over T tokens; qkv (T, 3 D) fp16 rows [q | k | v], H heads of
 * D/H; scores fp32, probabilities rounded to fp16, out (T, D) fp16. scratch: T floats. */
void tmoe_cpu_attention(const tmoe_f16 *qkv, int T, int D, int H, tmoe_f16 *out, float *scratch);

/* Whole expert on n grouped rows: x (n, d_model) fp16 -> y (n, d_model) fp32.
 * scratch: see tmoe_cpu_expert_scratch_bytes. */
size_t tmoe_cpu_expert_scratch_bytes(const tmoe_expert *e, int n, tmoe_impl impl);
void tmoe_cpu_expert_forward(const tmoe_expert *e, tmoe_impl impl, const tmoe_f16 *x, int n,
                             float *y, void *scratch, double op_ms[TMOE_OP_COUNT]);

/* ==== decoder LM on the CPU (thermoe/model.h tmoe_lm): the fp32 reference ================
 * Everything in fp32 as transformers computes an fp32 checkpoint: RMSNorm, projections,
 * RoPE, attention (softmax in fp32), router softmax and top-k, SwiGLU MLPs, LM head. fp16 /
 * q4 / q2 experts go through tmoe_cpu_expert_forward (fp16 activations, as on the GPU). */
typedef struct tmoe_cpu_lm tmoe_cpu_lm;

typedef struct tmoe_cpu_lm_config {
    int max_tokens;         /* largest number of new tokens in one forward (all sequences) */
    tmoe_impl impl;         /* quantized experts: fused or unfused */
    tmoe_lm_route_fn route; /* per-layer selection biases, or NULL (baseline routing) */
    void *route_user;
    int bias_in_weights;    /* the biases also change the combine weights */
} tmoe_cpu_lm_config;

/* One step of a batch: sequence i holds KV slot slots[i] and adds n_new[i] >= 1 tokens at
 * positions len..len+n_new-1 of its slot (prefill: a fresh slot and the whole prompt;
 * decode: one token). tokens: the new ids, sequence after sequence. */
typedef struct tmoe_lm_batch {
    int nseq;
    const int32_t *slots;   /* (nseq) distinct slots, each open */
    const int32_t *n_new;   /* (nseq) */
    const uint32_t *tokens; /* (sum n_new) */
    int logits_all;         /* 1: logits of every new token; 0: of each sequence's last only */
} tmoe_lm_batch;

/* Workspace for m (borrowed: it must outlive the runner), sized once for cfg->max_tokens. */
int tmoe_cpu_lm_create(const tmoe_lm *m, const tmoe_cpu_lm_config *cfg, tmoe_cpu_lm **out,
                       tmoe_error *err);
void tmoe_cpu_lm_free(tmoe_cpu_lm *r); /* NULL-safe */
/* Run the step and append K and V to kv (whose slots' lengths grow by n_new). logits:
 * (sum n_new, V) when logits_all, else (nseq, V). A slot that is not open, a sequence that
 * would pass kv->max_len, too many tokens or an id outside the vocabulary is TMOE_EINVAL and
 * leaves kv unchanged. */
int tmoe_cpu_lm_forward(tmoe_cpu_lm *r, tmoe_kv_cache *kv, const tmoe_lm_batch *b, float *logits,
                        tmoe_error *err);
/* Token copies each expert received in the last forward, (n_layers, E); dense layers 0. */
const int32_t *tmoe_cpu_lm_expert_counts(const tmoe_cpu_lm *r);

#ifdef __cplusplus
}
#endif
#endif
