/* The MoE transformer block: linear layers (fp16, bf16 or packed q4/q2), experts, the MoE
 * layer and the pre-norm block around it. Weights live on the host here; backends copy them.
 *
 * Numerics, the same on every backend: the hidden state is fp32; every linear op takes fp16
 * activations (rounded on the way in) and fp16 or q*scale weights, accumulates in fp32 and
 * writes fp32; the expert activation output is rounded to fp16 before linear_fc2; gate
 * logits, softmax and combine are fp32. bf16 experts: the weights are used exactly as stored
 * and the fp16 activations are rounded once more, to bf16 (round to nearest even), on the way
 * into each of their linear ops: the tensor cores multiply bf16 by bf16 only. */
#ifndef THERMOE_MODEL_H
#define THERMOE_MODEL_H

#include "thermoe/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ============================== quant ================================================= */
/* Quantized expert weights: symmetric signed two's-complement integers packed little-end
 * first (q4: element 2i in the low nibble; q2: element 4i in bits 0-1), one fp16 scale per
 * group of G consecutive weights along the input dimension. Value = q * scale. */

#define TMOE_DEFAULT_GROUP 128

/* Integer range of a quantized type: q4 [-8, 7], q2 [-2, 1]. */
int tmoe_quant_qmin(tmoe_etype t);
int tmoe_quant_qmax(tmoe_etype t);

/* Check that an (out, in) matrix can be stored as type t with group size g: sizes positive,
 * g positive and a multiple of the elements per byte, in a multiple of g. Message names the
 * problem and the numbers. */
int tmoe_quant_check_shape(tmoe_etype t, int out, int in, int group, tmoe_error *err);

/* Packed bytes of an (out, in) matrix of type t (fp16: 2 bytes a weight). */
size_t tmoe_quant_weight_bytes(tmoe_etype t, int64_t out, int64_t in);
size_t tmoe_quant_scale_count(int64_t out, int64_t in, int group);

/* Pack n integers (each within the type's range; asserted) into n*bits/8 bytes.
 * n must be a multiple of the elements per byte. */
void tmoe_pack_ints(tmoe_etype t, const int8_t *q, int64_t n, uint8_t *packed);
/* Unpack n integers with sign extension (a nibble above 7 means q - 16). */
void tmoe_unpack_ints(tmoe_etype t, const uint8_t *packed, int64_t n, int8_t *q);

/* Quantize w (out, in) row-major: per group, the element of largest magnitude m sets
 * scale = fp16(m / qmin), so it maps to qmin exactly (the scale is negative when m > 0);
 * others round to nearest (ties to even) and clamp. A scale beyond fp16 is held at the
 * largest finite fp16 (the integers saturate); an all-zero group has scale 0.
 * packed: tmoe_quant_weight_bytes bytes; scales: out * in/group. */
int tmoe_quantize(tmoe_etype t, const float *w, int out, int in, int group, uint8_t *packed,
                  tmoe_f16 *scales, tmoe_error *err);

/* Dequantize to fp32 (exact q * scale) or to fp16 (rounded), (out, in) row-major. */
void tmoe_dequantize_f32(tmoe_etype t, const uint8_t *packed, const tmoe_f16 *scales, int out,
                         int in, int group, float *w);
void tmoe_dequantize_f16(tmoe_etype t, const uint8_t *packed, const tmoe_f16 *scales, int out,
                         int in, int group, tmoe_f16 *w);

/* Activations in int8 (the CUDA q4/q2 kernel's int8 path, tmoe_cuda_act8): per block of
 * TMOE_ACT8_BLOCK values, d = fp32(m / 127) with m the largest magnitude, q = round(x *
 * fp32(1 / d)) to nearest (ties to even), clamped to [-127, 127]; an all-zero block has d = 0
 * and q = 0. Every step is one IEEE fp32 operation, so the GPU gets the same integers. n must
 * be a multiple of the block; x finite. q: n values, d: n / TMOE_ACT8_BLOCK. */
#define TMOE_ACT8_BLOCK 32
void tmoe_act8_quantize(const tmoe_f16 *x, int64_t n, int8_t *q, float *d);

#define TMOE_MAX_EXPERTS 256
#define TMOE_MAX_TOPK 16

/* y = x W^T with W (out, in). Exactly one of w (fp16 / bf16) or q + scales (q4/q2) is set.
 * Buffers are owned by the struct (tmoe_linear_free). */
typedef struct tmoe_linear {
    tmoe_etype type;
    int out, in, group; /* group 0 for fp16 / bf16 */
    tmoe_f16 *w;        /* (out, in) 16-bit weights: fp16 bits (type fp16) or bf16 bits (bf16) */
    uint8_t *q;         /* (out, in * bits / 8) packed integers, q4/q2 */
    tmoe_f16 *scales;   /* (out, in / group), q4/q2 */
    int act8;           /* q4 / q2, fused: the activations in int8 (tmoe_act8_quantize; the CPU's
                           tmoe_cpu_linear_q_act8, the CUDA kernel's int8 path at up to 4 tokens an
                           expert); 0 = fp16 activations */
} tmoe_linear;

/* Allocate an uninitialised linear of the given type/shape (checks the shape). */
int tmoe_linear_alloc(tmoe_linear *l, tmoe_etype t, int out, int in, int group, tmoe_error *err);
/* Fill with uniform(-a, a) weights from rng (a = 1/sqrt(in)), rounded to fp16 / bf16 or
 * quantized when q4/q2. */
int tmoe_linear_init_random(tmoe_linear *l, tmoe_rng *rng, tmoe_error *err);
/* Set from fp32 weights (rounded to nearest even for fp16 / bf16, quantized when q4/q2; an fp32
 * that holds a bf16 value is kept exactly by bf16). */
int tmoe_linear_set_f32(tmoe_linear *l, const float *w, tmoe_error *err);
/* Dequantize (or convert) to fp32 (out, in). */
void tmoe_linear_to_f32(const tmoe_linear *l, float *w);
size_t tmoe_linear_weight_bytes(const tmoe_linear *l); /* bytes of weights + scales */
void tmoe_linear_free(tmoe_linear *l);                 /* NULL-safe */

/* An expert: linear_fc1 -> act -> linear_fc2. With swiglu, fc1 has 2*d_ff rows: rows
 * [0, d_ff) are the gate projection (Mixtral w1), [d_ff, 2 d_ff) the up projection (w3);
 * act = silu(gate) * up. fc2 (d_model, d_ff) is Mixtral's w2. */
typedef struct tmoe_expert {
    tmoe_etype type;
    tmoe_act act;
    int d_model, d_ff, group;
    tmoe_linear fc1, fc2;
} tmoe_expert;

int tmoe_expert_alloc(tmoe_expert *e, tmoe_etype t, tmoe_act act, int d_model, int d_ff, int group,
                      tmoe_error *err);
void tmoe_expert_free(tmoe_expert *e);
size_t tmoe_expert_weight_bytes(const tmoe_expert *e);

typedef struct tmoe_block_config {
    int d_model;              /* hidden size */
    int n_heads;              /* attention heads; d_model % n_heads == 0 */
    int d_ff;                 /* expert hidden size */
    int num_experts;          /* E, 1..TMOE_MAX_EXPERTS */
    int top_k;                /* 1..min(E, TMOE_MAX_TOPK) */
    int group_size;           /* quantization group along the input dim */
    int seq_len;              /* max tokens per forward (attention is causal over them) */
    tmoe_etype expert_type;   /* default type of every expert */
    tmoe_etype *expert_types; /* optional (num_experts): per-expert types; NULL = all default */
    tmoe_act act;             /* relu or swiglu */
    int renormalize;          /* combine weights renormalised over the chosen experts */
    float norm_eps;           /* RMSNorm epsilon */
    uint64_t seed;            /* weights are a function of the seed alone */
} tmoe_block_config;

/* Defaults: a small shape that runs fast on a CPU. */
tmoe_block_config tmoe_block_config_default(void);
/* The type of expert e: expert_types[e] where one type per expert is given, else expert_type */
tmoe_etype tmoe_block_expert_type(const tmoe_block_config *c, int e);
/* Check every field; the message names the field, its value and what is allowed. */
int tmoe_block_config_validate(const tmoe_block_config *c, tmoe_error *err);

typedef struct tmoe_moe {
    int d_model, d_ff, num_experts, top_k, renormalize;
    tmoe_linear gate;     /* (E, d_model) fp16 */
    tmoe_expert *experts; /* (E) */
} tmoe_moe;

typedef struct tmoe_block {
    tmoe_block_config cfg; /* expert_types copied into types[] */
    tmoe_etype types[TMOE_MAX_EXPERTS];
    float *norm1, *norm2; /* (d_model) RMSNorm weights */
    tmoe_linear wqkv;     /* (3 d_model, d_model) fp16: rows q, k, v */
    tmoe_linear wo;       /* (d_model, d_model) fp16 */
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
 * no expert output. Weights are finite whenever no logit or bias is +inf. w may be NULL: the
 * indices alone (no softmax). The CPU backend, the router and the runner all select through
 * this function; the CUDA kernel follows it. */
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
    int impl_used[TMOE_ET_COUNT];       /* per expert type: the tmoe_impl its experts ran in
                                           this step; -1 for a type the block has no expert of,
                                           or without the choice (fp16, bf16) */
    int impl_auto;                      /* 1: impl_used chosen by the engine's measured
                                           crossovers (tmoe_engine_config.impl_auto); 0: the
                                           configured impl */
    int cublas;                         /* 1: fp16 / bf16 / unfused experts ran on cuBLAS, one
                                           GEMM per expert (cuda); 0: the kernels */
    int32_t *topk_idx;                  /* (tokens, top_k) chosen experts, or NULL */
    float *topk_w;                      /* (tokens, top_k) combine weights, or NULL */
} tmoe_moe_metrics;

void tmoe_moe_metrics_reset(tmoe_moe_metrics *m); /* NAN/0 everything, keep buffer pointers */

/* ==== decoder language model (Hugging Face MoE checkpoints; docs/models.md) ==============
 * A whole decoder LM as Mixtral, OLMoE, Qwen2-MoE and Qwen3-MoE define it: token embedding,
 * n_layers x (RMSNorm, GQA attention with RoPE, RMSNorm, MoE or dense SwiGLU MLP), final
 * RMSNorm, LM head. Dense weights are held in fp32 (converted from the file's bf16 / fp16 /
 * fp32 at load); experts are fp32 (the reference numerics, what transformers computes in
 * fp32) or one of the block's expert types (fp16 / bf16 / q4 / q2, rounded or quantized at load) so
 * the existing expert kernels and routing run in every layer. */

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
    int vocab_size;     /* V */
    int d_model;        /* hidden_size D */
    int n_layers;       /* num_hidden_layers */
    int n_heads;        /* num_attention_heads H */
    int n_kv_heads;     /* num_key_value_heads KV; H % KV == 0 */
    int head_dim;       /* hd: explicit (Qwen3) or D / H */
    int d_ff;           /* intermediate_size: dense MLP layers (Mixtral: the experts) */
    int d_ff_expert;    /* moe_intermediate_size (Mixtral: intermediate_size) */
    int d_ff_shared;    /* Qwen2-MoE shared_expert_intermediate_size; 0 = no shared expert */
    int num_experts;    /* E */
    int top_k;          /* num_experts_per_tok */
    int norm_topk_prob; /* renormalise the top-k weights over the chosen experts */
    tmoe_qk_norm qk_norm;
    int qkv_bias;       /* q/k/v projections have biases (Qwen2-MoE qkv_bias, attention_bias) */
    int o_bias;         /* the output projection has a bias (attention_bias) */
    int tie_embeddings; /* tie_word_embeddings: the LM head is the embedding */
    int max_positions;  /* max_position_embeddings */
    int sliding_window; /* Mixtral: attend to the last sliding_window positions; 0 = off */
    float rms_eps;      /* rms_norm_eps */
    float clip_qkv;     /* OLMoE: clamp q, k, v to [-clip, clip]; 0 = off */
    double rope_theta;  /* top-level rope_theta or rope_parameters.rope_theta */
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
struct tmoe_st_tensor; /* thermoe/model.h */
const struct tmoe_st_tensor *tmoe_ckpt_find(const tmoe_ckpt *c, const char *name,
                                            const char **file_out);
int tmoe_ckpt_shards(const tmoe_ckpt *c);
size_t tmoe_ckpt_bytes(const tmoe_ckpt *c);      /* bytes of all tensors in all shards */
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
    float *mlp_w13; /* (2 d_ff, D) */
    float *mlp_w2;  /* (D, d_ff) */
    /* MoE (is_moe == 1) */
    float *router;         /* (E, D) fp32 router (gate) weights */
    float *ex_w13, *ex_w2; /* fp32 experts: (E, 2 d_ff_expert, D), (E, D, d_ff_expert);
                              NULL when experts_f32 == 0 */
    tmoe_expert *experts;  /* (E) fp16 / bf16 / q4 / q2 experts; NULL when experts_f32 */
    tmoe_expert *copies;   /* (E) lower-precision copies: copies[e] where opts.copy[e] (the
                              others zeroed), quantized from the checkpoint's weights, not
                              from experts[e]; NULL without copies */
    float *sh_w13, *sh_w2; /* shared expert (2 d_ff_shared, D), (D, d_ff_shared) or NULL */
    float *sh_gate;        /* (D) shared_expert_gate, or NULL */
} tmoe_lm_layer;

typedef struct tmoe_lm_load_opts {
    int experts_f32;        /* 1: fp32 experts (default); 0: expert_type */
    tmoe_etype expert_type; /* fp16 / bf16 / q4 / q2 when experts_f32 == 0; bf16 keeps a bf16
                               checkpoint's expert tensors bit for bit (others are rounded) */
    int group_size;         /* quantization group (default TMOE_DEFAULT_GROUP; q4/q2 need
                               d_model and d_ff_expert to be multiples of it) */
    int act8;               /* q4 / q2 experts with int8 activations (tmoe_linear.act8); needs
                               a group that is a multiple of TMOE_ACT8_BLOCK */
    /* one type per expert (experts_f32 == 0): n_types == the model's num_experts, expert e
     * of every MoE layer as types[e] (fp16, q4 or q2); 0: expert_type for every expert */
    int n_types;
    tmoe_etype types[TMOE_MAX_EXPERTS];
    /* lower-precision copies (experts_f32 == 0): expert e of every MoE layer where copy[e]
     * also loads as copy_type (fp16, q4 or q2; int8 activations as act8 says), for a router
     * that runs the copy in its place (tmoe_lm_route_out.use_copy); n_copy experts marked,
     * 0 = no copies */
    int n_copy;
    unsigned char copy[TMOE_MAX_EXPERTS];
    tmoe_etype copy_type;
} tmoe_lm_load_opts;
tmoe_lm_load_opts tmoe_lm_load_opts_default(void);
/* The type expert e loads as (experts_f32 == 0): types[e] where one type per expert is
 * given, else expert_type. */
tmoe_etype tmoe_lm_expert_type(const tmoe_lm_load_opts *o, int e);
/* 1 when expert e has a lower-precision copy (o->n_copy > 0 and o->copy[e]). */
int tmoe_lm_has_copy(const tmoe_lm_load_opts *o, int e);

typedef struct tmoe_lm {
    tmoe_lm_config cfg;
    tmoe_lm_load_opts opts;
    float *embed;          /* (V, D) */
    float *final_norm;     /* (D) */
    float *lm_head;        /* (V, D); == embed when tied (not a second allocation) */
    tmoe_lm_layer *layers; /* (n_layers) */
    size_t file_bytes;     /* bytes of the checkpoint's tensors */
    char dtype[8];         /* the checkpoint's main dtype */
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
    double weight_bytes;       /* as loaded */
    double active_bytes;       /* weights one token reads, as loaded */
    double kv_bytes_per_token; /* fp32 K and V of one position over all layers */
} tmoe_lm_sizes;
tmoe_lm_sizes tmoe_lm_sizes_of(const tmoe_lm *m);

/* ---- KV cache --------------------------------------------------------------------------
 * Per layer, K and V in slots: (max_seqs, max_len, KV, hd) fp32. A sequence holds one slot
 * from seq_open to seq_close, so sequences can join and leave a running batch; prefill
 * writes positions 0..n-1 of its slot, each decode step appends one. */
typedef struct tmoe_kv_cache {
    int n_layers, max_seqs, max_len, n_kv_heads, head_dim;
    float **k, **v; /* (n_layers) pointers to (max_seqs, max_len, KV, hd) */
    int32_t *len;   /* (max_seqs) positions filled in each slot */
    uint8_t *used;  /* (max_seqs) 1 while a sequence holds the slot */
} tmoe_kv_cache;

int tmoe_kv_cache_create(const tmoe_lm_config *c, int max_seqs, int max_len, tmoe_kv_cache **out,
                         tmoe_error *err);
void tmoe_kv_cache_free(tmoe_kv_cache *kv); /* NULL-safe */
/* Take a free slot (length 0): TMOE_EINVAL when all max_seqs are in use. */
int tmoe_kv_seq_open(tmoe_kv_cache *kv, int *slot, tmoe_error *err);
void tmoe_kv_seq_close(tmoe_kv_cache *kv, int slot); /* frees the slot */
size_t tmoe_kv_cache_bytes(const tmoe_kv_cache *kv);

/* What a route hook gives the decoder for one MoE layer. The engine passes its own host
 * buffers, with bias zeroed and selected = 0. Either the hook writes selection biases (E),
 * added to the logits for the engine's top-k (tmoe_gate_topk, weights from the unbiased
 * logits unless bias_in_weights), or it makes the selection itself: it fills idx (T, k)
 * with experts in 0..E-1 and w (T, k) with their combine weights and sets selected = 1; the
 * engine then runs exactly that (bias is ignored, an expert outside 0..E-1 is TMOE_EINVAL).
 * k is always the model's top_k: a token that uses fewer experts (top-k reduced by one,
 * top-p, a copy dropped by a capacity limit) fills its unused slots with its own first
 * expert at weight 0. That padded copy is computed and multiplied by 0: one more row of a
 * weight matrix the step reads anyway, almost free in memory-bound decode, and it keeps k
 * fixed in the engines; the engines' token-copy counts include it (they count what ran).
 * use_copy (E), zeroed by the engine: the hook sets use_copy[e] = 1 to run expert e's
 * lower-precision copy in its place (a model without that copy is TMOE_EINVAL); the
 * routing is the same either way. */
typedef struct tmoe_lm_route_out {
    float *bias;             /* (E) selection biases */
    int32_t *idx;            /* (T, k) experts, for a selection made by the hook */
    float *w;                /* (T, k) combine weights */
    int k;                   /* the model's top_k */
    int selected;            /* set to 1 by the hook when it filled idx and w */
    unsigned char *use_copy; /* (E) 1: expert e runs as its copy */
} tmoe_lm_route_out;

/* Per-layer routing hook for the decoder: called with the router logits (T, E) of each MoE
 * layer before top-k; fills out (above) or leaves it as it is (baseline routing). Non-zero
 * return stops the forward with that code. */
typedef int (*tmoe_lm_route_fn)(void *user, int layer, const float *logits, int T, int E,
                                tmoe_lm_route_out *out, tmoe_error *err);

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
    double nll_sum;           /* over scored tokens */
    double win_sum, win_sum2; /* of per-window mean nll (for the CI) */
} tmoe_lm_score;
void tmoe_lm_score_add_window(tmoe_lm_score *s, const double *nll, int n);
/* nll_mean, perplexity and its 95% CI over windows (Student t on the window means; NAN
 * bounds with fewer than 2 windows). */
void tmoe_lm_score_finish(const tmoe_lm_score *s, double *nll_mean, double *ppl, double *ppl_lo,
                          double *ppl_hi);

/* ============================== safetensors =========================================== */
/* safetensors files (the format real checkpoints ship in): a reader that validates the whole
 * header before any tensor is used, a writer, and saving / loading a transformer block with
 * our own tensor names or a Mixtral-style checkpoint's names (docs/safetensors.md).
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON (an object: tensor name ->
 * {"dtype", "shape", "data_offsets": [begin, end]} relative to the byte buffer, plus an
 * optional "__metadata__" object of string values), then the byte buffer. */

typedef enum {
    TMOE_ST_BOOL,
    TMOE_ST_U8,
    TMOE_ST_I8,
    TMOE_ST_F8_E5M2,
    TMOE_ST_F8_E4M3,
    TMOE_ST_I16,
    TMOE_ST_U16,
    TMOE_ST_F16,
    TMOE_ST_BF16,
    TMOE_ST_I32,
    TMOE_ST_U32,
    TMOE_ST_F32,
    TMOE_ST_F64,
    TMOE_ST_I64,
    TMOE_ST_U64,
    TMOE_ST_DTYPE_COUNT
} tmoe_st_dtype;

const char *tmoe_st_dtype_name(tmoe_st_dtype t);            /* "F16", "BF16", ... as in the file */
int tmoe_st_dtype_parse(const char *s, tmoe_st_dtype *out); /* 0, or -1 when unknown */
size_t tmoe_st_dtype_size(tmoe_st_dtype t);                 /* bytes per element */

#define TMOE_ST_MAX_DIMS 8
#define TMOE_ST_MAX_HEADER (100u << 20) /* the reference implementation's limit */

typedef struct tmoe_st_tensor {
    const char *name; /* owned by the file */
    tmoe_st_dtype dtype;
    int ndim;
    int64_t shape[TMOE_ST_MAX_DIMS];
    const void *data; /* inside the file's mapping; not aligned in general */
    size_t nbytes;
} tmoe_st_tensor;

/* ---- reading ------------------------------------------------------------------------ */
typedef struct tmoe_st_file tmoe_st_file;

/* Map path read-only and validate it: header length in range, JSON object, every entry with a
 * known dtype, a shape of non-negative sizes, offsets inside the buffer that do not overlap
 * and whose length is numel x dtype size; __metadata__ values are strings. Any problem is
 * TMOE_EFORMAT (TMOE_EIO when the file cannot be read) with a message naming the file, the
 * tensor and the problem. */
int tmoe_st_open(const char *path, tmoe_st_file **out, tmoe_error *err);
/* The same checks on len bytes in memory, copied (data may be freed after the call); `name`
 * stands for the path in messages and tmoe_st_path. */
int tmoe_st_open_buffer(const void *data, size_t len, const char *name, tmoe_st_file **out,
                        tmoe_error *err);
void tmoe_st_close(tmoe_st_file *f); /* NULL-safe; tensors and strings become invalid */
const char *tmoe_st_path(const tmoe_st_file *f);
int tmoe_st_count(const tmoe_st_file *f);
const tmoe_st_tensor *tmoe_st_at(const tmoe_st_file *f, int i);              /* in header order */
const tmoe_st_tensor *tmoe_st_find(const tmoe_st_file *f, const char *name); /* or NULL */
/* A __metadata__ value, or NULL when the key is absent. */
const char *tmoe_st_meta(const tmoe_st_file *f, const char *key);
int tmoe_st_meta_count(const tmoe_st_file *f);
const char *tmoe_st_meta_key(const tmoe_st_file *f, int i);

/* Fetch a named tensor that must exist with exactly this shape, converted to fp32 (from F32,
 * F16 or BF16), copied as fp16 bits (from F16; F32 / BF16 are rounded to fp16) or copied as
 * bf16 bits (from BF16; F32 / F16 are rounded to bf16). out holds numel values. Message names
 * file, tensor and what did not match. */
int tmoe_st_read_f32(const tmoe_st_file *f, const char *name, int ndim, const int64_t *shape,
                     float *out, tmoe_error *err);
int tmoe_st_read_f16(const tmoe_st_file *f, const char *name, int ndim, const int64_t *shape,
                     tmoe_f16 *out, tmoe_error *err);
int tmoe_st_read_bf16(const tmoe_st_file *f, const char *name, int ndim, const int64_t *shape,
                      tmoe_bf16 *out, tmoe_error *err);

/* ---- writing ------------------------------------------------------------------------ */
typedef struct tmoe_st_writer tmoe_st_writer;

int tmoe_st_writer_create(tmoe_st_writer **out, tmoe_error *err);
void tmoe_st_writer_free(tmoe_st_writer *w); /* NULL-safe */
/* Add a tensor; data (numel x dtype size bytes) is borrowed until tmoe_st_writer_write.
 * Names must be unique and must not be "__metadata__". */
int tmoe_st_writer_add(tmoe_st_writer *w, const char *name, tmoe_st_dtype dt, int ndim,
                       const int64_t *shape, const void *data, tmoe_error *err);
int tmoe_st_writer_meta(tmoe_st_writer *w, const char *key, const char *value, tmoe_error *err);
/* Write the file: tensors in the order added, the header padded with spaces to a multiple of
 * 8 bytes so the buffer starts aligned. Whole or nothing (tmoe_atomic_*): written to a
 * temporary beside path and renamed into place; on failure path keeps its old contents. A
 * path that exists and is not a regular file (device, FIFO, directory) is refused. */
int tmoe_st_writer_write(tmoe_st_writer *w, const char *path, tmoe_error *err);

/* ---- blocks ------------------------------------------------------------------------- */
typedef enum {
    TMOE_LAYOUT_AUTO,    /* thermoe when __metadata__ format is thermoe.block/1, else mixtral */
    TMOE_LAYOUT_THERMOE, /* our names, config in __metadata__ (docs/safetensors.md) */
    TMOE_LAYOUT_MIXTRAL, /* model.layers.{L}.block_sparse_moe.experts.{e}.w1/w2/w3 ... */
    TMOE_LAYOUT_COUNT
} tmoe_layout;
const char *tmoe_layout_name(tmoe_layout l);
int tmoe_layout_parse(const char *s, tmoe_layout *out);

#define TMOE_BLOCK_FORMAT "thermoe.block/1"

/* Save every tensor of b with our names (fp16 weights as F16; q4/q2 as U8 .qweight + F16
 * .scales; norms F32) and the config in __metadata__. */
int tmoe_block_save(const tmoe_block *b, const char *path, tmoe_error *err);

/* What the file says about the config. thermoe layout: every field from __metadata__, with
 * the per-expert types written to types (TMOE_MAX_EXPERTS) and cfg->expert_types = types.
 * mixtral layout: d_model, d_ff and num_experts from the shapes of layer `layer`, act =
 * swiglu; the other fields of *cfg are left as they are (types may be NULL then).
 * *found (may be NULL): the layout detected. */
int tmoe_block_file_config(const char *path, tmoe_layout layout, int layer, tmoe_block_config *cfg,
                           tmoe_etype *types, tmoe_layout *found, tmoe_error *err);

/* Load a block: cfg gives the shape and the expert types wanted; every tensor the block needs
 * must be present with the shape cfg implies (extra tensors and metadata are ignored).
 * Weights stored as F16 load bit-exactly into fp16 linears; F32 / BF16 are rounded to fp16;
 * experts wanted as q4 / q2 are quantized on load from float weights, copied bit-exactly from
 * .qweight / .scales of the same type and group, else dequantized and requantized. */
int tmoe_block_load(const char *path, tmoe_layout layout, int layer, const tmoe_block_config *cfg,
                    tmoe_block **out, tmoe_error *err);

#ifdef __cplusplus
}
#endif
#endif
