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

/* Gating (the gate_topk op): per token, choose the k experts with the largest logit + bias
 * (bias may be NULL; ties go to the lower expert index); logits (T, E), bias (E),
 * 1 <= k <= min(E, TMOE_MAX_TOPK), E <= TMOE_MAX_EXPERTS (asserted). Combine weights are
 * the softmax of the unbiased logits (of the biased ones when bias_in_weights) at the chosen
 * experts, renormalised over them when renorm. idx, w: (T, k), in order of decreasing score.
 * NaN: a NaN score (logit + bias) ranks as -inf: it is chosen only when fewer than k scores
 * are above -inf, and then, as ties, the lowest expert indices among the NaN / -inf ones fill
 * the remaining slots (all logits NaN: experts 0..k-1). A NaN weight logit has probability 0;
 * when the chosen experts carry none (all NaN / -inf), their weights are 0, so the token gets
 * no expert output. Weights are finite whenever no logit or bias is +inf. The CPU backend,
 * the router and the runner all select through this function; the CUDA kernel follows it. */
void tmoe_gate_topk(const float *logits, const float *bias, int T, int E, int k, int renorm,
                    int bias_in_weights, int32_t *idx, float *w);

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

/* ==== decoder language model (Hugging Face MoE checkpoints; docs/models.md) ==============
 * A whole decoder LM as Mixtral, OLMoE, Qwen2-MoE and Qwen3-MoE define it: token embedding,
 * n_layers x (RMSNorm, GQA attention with RoPE, RMSNorm, MoE or dense SwiGLU MLP), final
 * RMSNorm, LM head. Dense weights are held in fp32 (converted from the file's bf16 / fp16 /
 * fp32 at load); experts are fp32 (the reference numerics, what transformers computes in
 * fp32) or one of the block's expert types (fp16 / q4 / q2, quantized at load) so the
 * existing expert kernels and routing run in every layer. */

#define TMOE_LM_MAX_LAYERS 256

typedef enum {
    TMOE_LM_MIXTRAL,
    TMOE_LM_OLMOE,
    TMOE_LM_QWEN2_MOE,
    TMOE_LM_QWEN3_MOE,
    TMOE_LM_FAMILY_COUNT
} tmoe_lm_family;
const char *tmoe_lm_family_name(tmoe_lm_family f); /* config.json's model_type */
int tmoe_lm_family_parse(const char *model_type, tmoe_lm_family *out); /* 0, or -1 */

typedef enum {
    TMOE_QK_NORM_NONE,
    TMOE_QK_NORM_WHOLE,    /* OLMoE: RMSNorm over the whole q (H*hd) and k (KV*hd) projection */
    TMOE_QK_NORM_PER_HEAD, /* Qwen3-MoE: RMSNorm over each head's hd values */
} tmoe_qk_norm;

/* What config.json says, with the family's rules applied (defaults as transformers' config
 * classes have them). */
typedef struct tmoe_lm_config {
    tmoe_lm_family family;
    int vocab_size;         /* V */
    int d_model;            /* hidden_size D */
    int n_layers;           /* num_hidden_layers */
    int n_heads;            /* num_attention_heads H */
    int n_kv_heads;         /* num_key_value_heads KV; H % KV == 0 */
    int head_dim;           /* hd: explicit (Qwen3) or D / H */
    int d_ff;               /* intermediate_size: dense MLP layers (Mixtral: the experts) */
    int d_ff_expert;        /* moe_intermediate_size (Mixtral: intermediate_size) */
    int d_ff_shared;        /* Qwen2-MoE shared_expert_intermediate_size; 0 = no shared expert */
    int num_experts;        /* E */
    int top_k;              /* num_experts_per_tok */
    int norm_topk_prob;     /* renormalise the top-k weights over the chosen experts */
    tmoe_qk_norm qk_norm;
    int qkv_bias;           /* q/k/v projections have biases (Qwen2-MoE qkv_bias, attention_bias) */
    int o_bias;             /* the output projection has a bias (attention_bias) */
    int tie_embeddings;     /* tie_word_embeddings: the LM head is the embedding */
    int max_positions;      /* max_position_embeddings */
    int sliding_window;     /* Mixtral: attend to the last sliding_window positions; 0 = off */
    float rms_eps;          /* rms_norm_eps */
    float clip_qkv;         /* OLMoE: clamp q, k, v to [-clip, clip]; 0 = off */
    double rope_theta;      /* top-level rope_theta or rope_parameters.rope_theta */
    uint8_t moe_layer[TMOE_LM_MAX_LAYERS]; /* 1 = MoE MLP, 0 = dense MLP (Qwen mlp_only_layers,
                                              decoder_sparse_step) */
} tmoe_lm_config;

/* Parse config.json text (path names it in messages). An unknown model_type, a missing or
 * mistyped field, a value out of range or a feature we do not implement (rope_scaling, an
 * enabled sliding window on Qwen, ...) is TMOE_EFORMAT / TMOE_ENOTSUP naming the file and
 * the field. */
int tmoe_lm_config_parse(const char *json, const char *path, tmoe_lm_config *c, tmoe_error *err);
/* Read <dir>/config.json and parse it. */
int tmoe_lm_config_read(const char *dir, tmoe_lm_config *c, tmoe_error *err);
int tmoe_lm_num_moe_layers(const tmoe_lm_config *c);

/* ---- checkpoint directory: model.safetensors or model.safetensors.index.json + shards ---- */
typedef struct tmoe_ckpt tmoe_ckpt;
/* Open every shard (memory-mapped, nothing copied). An index that names a shard that is
 * missing, a truncated shard, or a tensor the index places in a shard that lacks it is an
 * error naming the file. */
int tmoe_ckpt_open(const char *dir, tmoe_ckpt **out, tmoe_error *err);
void tmoe_ckpt_close(tmoe_ckpt *c); /* NULL-safe */
/* The tensor called name, or NULL; *file_out (may be NULL) gets the shard's path. */
struct tmoe_st_tensor; /* thermoe/safetensors.h */
const struct tmoe_st_tensor *tmoe_ckpt_find(const tmoe_ckpt *c, const char *name,
                                            const char **file_out);
int tmoe_ckpt_shards(const tmoe_ckpt *c);
size_t tmoe_ckpt_bytes(const tmoe_ckpt *c); /* bytes of all tensors in all shards */
const char *tmoe_ckpt_dtype(const tmoe_ckpt *c); /* dtype of most tensor bytes: "BF16", ... */

/* ---- the model ---------------------------------------------------------------------- */
typedef struct tmoe_lm_layer {
    int is_moe;
    float *attn_norm, *mlp_norm; /* (D) input_layernorm, post_attention_layernorm */
    float *wq, *wk, *wv;         /* (H hd, D), (KV hd, D), (KV hd, D) */
    float *bq, *bk, *bv;         /* (H hd), (KV hd), (KV hd) or NULL (no qkv_bias) */
    float *q_norm, *k_norm;      /* whole: (H hd), (KV hd); per head: (hd), (hd); or NULL */
    float *wo;                   /* (D, H hd) */
    float *bo;                   /* (D) or NULL (no o_bias) */
    /* dense MLP (is_moe == 0): SwiGLU with w13 rows [0, d_ff) gate, [d_ff, 2 d_ff) up */
    float *mlp_w13;              /* (2 d_ff, D) */
    float *mlp_w2;               /* (D, d_ff) */
    /* MoE (is_moe == 1) */
    float *router;               /* (E, D) fp32 router (gate) weights */
    float *ex_w13, *ex_w2;       /* fp32 experts: (E, 2 d_ff_expert, D), (E, D, d_ff_expert);
                                    NULL when experts_f32 == 0 */
    tmoe_expert *experts;        /* (E) fp16 / q4 / q2 experts; NULL when experts_f32 */
    float *sh_w13, *sh_w2;       /* shared expert (2 d_ff_shared, D), (D, d_ff_shared) or NULL */
    float *sh_gate;              /* (D) shared_expert_gate, or NULL */
} tmoe_lm_layer;

typedef struct tmoe_lm_load_opts {
    int experts_f32;        /* 1: fp32 experts (default); 0: expert_type */
    tmoe_etype expert_type; /* fp16 / q4 / q2 when experts_f32 == 0 */
    int group_size;         /* quantization group (default TMOE_DEFAULT_GROUP; q4/q2 need
                               d_model and d_ff_expert to be multiples of it) */
} tmoe_lm_load_opts;
tmoe_lm_load_opts tmoe_lm_load_opts_default(void);

typedef struct tmoe_lm {
    tmoe_lm_config cfg;
    tmoe_lm_load_opts opts;
    float *embed;        /* (V, D) */
    float *final_norm;   /* (D) */
    float *lm_head;      /* (V, D); == embed when tied (not a second allocation) */
    tmoe_lm_layer *layers; /* (n_layers) */
    size_t file_bytes;   /* bytes of the checkpoint's tensors */
    char dtype[8];       /* the checkpoint's main dtype */
    int shards;
} tmoe_lm;

/* Load a model directory: config.json, then every tensor the config implies with the shape
 * it implies (the first missing names are listed; a wrong shape names the tensor, what the
 * file has and what the config wants). Expert weights in the per-expert layout
 * (experts.M.w1/w2/w3 or gate_proj/up_proj/down_proj) or stacked (experts.gate_up_proj,
 * experts.down_proj). *out owned by the caller. */
int tmoe_lm_load(const char *dir, const tmoe_lm_load_opts *opts, tmoe_lm **out, tmoe_error *err);
void tmoe_lm_free(tmoe_lm *m); /* NULL-safe */
/* A model with random weights from seed, built in memory (no checkpoint): every tensor c
 * implies, linear weights uniform(+-1/sqrt(in)), norms 1 +- 0.1, embedding uniform(+-1);
 * experts as opts says (NULL: the defaults). For tests and benchmarks at real shapes. */
int tmoe_lm_random(const tmoe_lm_config *c, const tmoe_lm_load_opts *opts, uint64_t seed,
                   tmoe_lm **out, tmoe_error *err);

/* Sizes for `thermoe info`. Parameters count tied weights once; active parameters are
 * those a token touches (top_k experts, shared expert, dense layers, one embedding row, the
 * head); bytes per token = weights read by one decoded token (active parameters at the
 * loaded precision) + the KV cache one position adds. */
typedef struct tmoe_lm_sizes {
    int64_t params, active_params, expert_params;
    double weight_bytes;        /* as loaded */
    double active_bytes;        /* weights one token reads, as loaded */
    double kv_bytes_per_token;  /* fp32 K and V of one position over all layers */
} tmoe_lm_sizes;
tmoe_lm_sizes tmoe_lm_sizes_of(const tmoe_lm *m);

/* ---- KV cache --------------------------------------------------------------------------
 * Per layer, K and V in slots: (max_seqs, max_len, KV, hd) fp32. A sequence holds one slot
 * from seq_open to seq_close, so sequences can join and leave a running batch; prefill
 * writes positions 0..n-1 of its slot, each decode step appends one. */
typedef struct tmoe_kv_cache {
    int n_layers, max_seqs, max_len, n_kv_heads, head_dim;
    float **k, **v;   /* (n_layers) pointers to (max_seqs, max_len, KV, hd) */
    int32_t *len;     /* (max_seqs) positions filled in each slot */
    uint8_t *used;    /* (max_seqs) 1 while a sequence holds the slot */
} tmoe_kv_cache;

int tmoe_kv_cache_create(const tmoe_lm_config *c, int max_seqs, int max_len,
                         tmoe_kv_cache **out, tmoe_error *err);
void tmoe_kv_cache_free(tmoe_kv_cache *kv); /* NULL-safe */
/* Take a free slot (length 0): TMOE_EINVAL when all max_seqs are in use. */
int tmoe_kv_seq_open(tmoe_kv_cache *kv, int *slot, tmoe_error *err);
void tmoe_kv_seq_close(tmoe_kv_cache *kv, int slot); /* frees the slot */
size_t tmoe_kv_cache_bytes(const tmoe_kv_cache *kv);

/* Per-layer routing hook for the decoder: called with the router logits (T, E) of each MoE
 * layer before top-k; writes E selection biases (or leaves them 0). Non-zero return stops
 * the forward with that code. */
typedef int (*tmoe_lm_route_fn)(void *user, int layer, const float *logits, int T, int E,
                                float *bias, tmoe_error *err);

/* ---- token files (DESIGN.md): 256 int32 header, then n uint32 ids -------------------- */
#define TMOE_TOKENS_MAGIC 20261206
#define TMOE_TOKENS_VERSION 1
typedef struct tmoe_tokens {
    int64_t n;          /* ids */
    int32_t vocab_size; /* from the header */
    int64_t text_bytes; /* UTF-8 bytes of the source text, 0 = unknown */
    uint32_t *ids;      /* (n), owned */
} tmoe_tokens;
/* Read and check: magic, version, bytes per id 4, file size = header + 4 n, every id below
 * the header's vocabulary size. Messages name the file and the field. */
int tmoe_tokens_read(const char *path, tmoe_tokens *t, tmoe_error *err);
int tmoe_tokens_write(const char *path, const uint32_t *ids, int64_t n, int32_t vocab_size,
                      int64_t text_bytes, tmoe_error *err);
void tmoe_tokens_free(tmoe_tokens *t); /* NULL-safe */

/* ---- scoring (DESIGN.md "Scoring text") -------------------------------------------- */
/* Negative log-likelihood of targets under logits: nll[t] = logsumexp(logits[t]) -
 * logits[t, target[t]] (computed in double), logits (n, V). */
void tmoe_lm_nll(const float *logits, const uint32_t *targets, int n, int V, double *nll);

typedef struct tmoe_lm_score {
    int64_t windows, tokens_scored;
    double nll_sum;          /* over scored tokens */
    double win_sum, win_sum2; /* of per-window mean nll (for the CI) */
} tmoe_lm_score;
void tmoe_lm_score_add_window(tmoe_lm_score *s, const double *nll, int n);
/* nll_mean, perplexity and its 95% CI over windows (Student t on the window means; NAN
 * bounds with fewer than 2 windows). */
void tmoe_lm_score_finish(const tmoe_lm_score *s, double *nll_mean, double *ppl, double *ppl_lo,
                          double *ppl_hi);

#ifdef __cplusplus
}
#endif
#endif
