/* thermoe backend: the module's public header. */
#ifndef THERMOE_BACKEND_H
#define THERMOE_BACKEND_H

#include "thermoe/model.h"
#include "thermoe/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ============================== engine ================================================ */
/* The engine runs a transformer block on a backend (cpu or cuda) chosen at run time.
 * A forward is split so that a host-side router can look at the gate logits and choose
 * per-expert biases before the experts run:
 *   begin (attention sub-block, norm, gate_linear) -> logits -> moe (top-k, permute,
 *   experts, combine, residual) -> output. */

typedef enum {
    TMOE_BACKEND_AUTO,
    TMOE_BACKEND_CPU,
    TMOE_BACKEND_CUDA,
    TMOE_BACKEND_COUNT
} tmoe_backend_kind;
const char *tmoe_backend_kind_name(tmoe_backend_kind k);
int tmoe_backend_kind_parse(const char *s, tmoe_backend_kind *out);

/* Can backend k run here? TMOE_OK, or a code and a message saying why not. */
int tmoe_backend_probe(tmoe_backend_kind k, tmoe_error *err);
/* The backend to use for k: auto is cuda when it probes OK, else cpu (logged, with the reason
 * at info level); any other kind must probe OK (else its code and message). */
int tmoe_backend_resolve(tmoe_backend_kind k, tmoe_backend_kind *out, tmoe_error *err);

typedef struct tmoe_engine_config {
    tmoe_backend_kind backend; /* auto: cuda when it probes OK, else cpu */
    int device_id;             /* CUDA device ordinal */
    int max_tokens;            /* largest T passed to begin; workspace is sized once for it */
    tmoe_impl impl;            /* quantized experts: unfused (dequant_unpack + fp16) or fused */
    /* Quantized experts step by step (docs/cuda.md "Fused or unfused, kernel or cuBLAS"):
     * with impl_auto, a step runs the q4/q2 experts of type t unfused when its expected tokens
     * per expert with tokens (tmoe_engine_tokens_per_active) reach unfused_from[t], else fused
     * (tmoe_engine_choose_impl); both paths' weights are then kept on the device. Without it
     * (the user forced --impl, or no crossover is known) every step runs impl. */
    int impl_auto;
    int unfused_from[TMOE_ET_COUNT]; /* tokens per active expert from which unfused is faster
                                        (a measured crossover: tmoe_cost_crossover); 0 = never */
    int use_graphs;                  /* cuda: capture and replay the MoE step per token count */
    int bias_in_weights;             /* router biases also change the combine weights */
    /* Expert parallelism: with a group of several processes each process runs only the
     * experts that the placement puts on its rank, and token copies move to them and back:
     * cuda over NCCL (built with NCCL; each GPU holds only its experts), cpu over MPI (the
     * reference, bit-identical to one process). docs/cluster.md. Both borrowed; NULL = one
     * device. */
    struct tmoe_ep *ep;                     /* process group (thermoe/ep.h) */
    const struct tmoe_placement *placement; /* expert -> rank; NULL = round robin */
    int ep_overlap_min_copies; /* overlap the all-to-alls with the experts (one exchange round
                                  per local expert on a second stream) when the token copies
                                  of all ranks in a step reach this; < 0 never (default 16384:
                                  on 2 x H100 it saved 1.7% there and cost 2-15% (fp16)
                                  and 3-29% (q4) at fewer copies,
                                  bench/results/h100_ep) */
} tmoe_engine_config;

tmoe_engine_config tmoe_engine_config_default(void);

/* Expected tokens per expert with tokens in a step of T tokens, top-k of E experts, when the
 * router spreads them evenly: T k / (E (1 - (1 - k/E)^T)) (1 at T = 1; T k / E for large T).
 * A function of T alone, so a step's choice is known before routing (and a CUDA graph per
 * token count stays valid). */
double tmoe_engine_tokens_per_active(int T, int k, int E);
/* The impl a step runs the experts of type t with, at tokens_per_active tokens per expert:
 * cfg->impl, unless cfg->impl_auto and t is q4/q2 with unfused_from[t] > 0: then unfused from
 * unfused_from[t] tokens on, fused below. fp16 / bf16 have one implementation: cfg->impl. */
tmoe_impl tmoe_engine_choose_impl(const tmoe_engine_config *cfg, tmoe_etype t,
                                  double tokens_per_active);

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
    double bytes_per_copy; /* bytes one token copy moves to its expert's rank and back */
    double link_gbps;      /* all-to-all bandwidth measured at create: bytes this rank sends
                              to the others / time, GB/s (NAN with one rank) */
    double a2a_ms;         /* last step: both all-to-alls (tokens out, outputs back), ms */
    double a2a_bytes;      /* last step: bytes this rank sent to other ranks in them */
    double step_ms;        /* last step, gate top-k to combine, ms */
    int overlapped;        /* last step: exchanges overlapped with the experts (a2a_ms NAN) */
    int32_t copies_to[TMOE_EP_MAX_RANKS]; /* last step: token copies this rank sent to each rank */
    int32_t copies_from[TMOE_EP_MAX_RANKS]; /* last step: token copies received from each rank */
    int32_t expert_rows[TMOE_MAX_EXPERTS];  /* last step: rows each expert ran on this rank
                                               (every rank's copies; 0 for other ranks' experts) */
} tmoe_ep_stats;

/* TMOE_OK and *out for an expert-parallel engine; TMOE_ENOTSUP for any other. */
int tmoe_engine_ep_stats(const tmoe_engine *e, tmoe_ep_stats *out, tmoe_error *err);

/* ============================== cpu =================================================== */
/* CPU reference kernels, one per op of the op table, in plain C with fp32 accumulation
 * (OpenMP over rows where it is enabled). The CUDA backend is checked against these. */

/* norm: y = fp16(x / rms(x) * w), x (T, D) fp32, w (D), y (T, D) fp16. */
void tmoe_cpu_rmsnorm(const float *x, const float *w, int T, int D, float eps, tmoe_f16 *y);

/* linear, fp16 weights: y (n, out) = x (n, in) W^T. */
void tmoe_cpu_linear_f16(const tmoe_f16 *x, const tmoe_f16 *W, int n, int in, int out, float *y);
/* linear, bf16 weights: y (n, out) = bf16(x) (n, in) W^T; the fp16 activations are rounded to
 * bf16 (nearest even), the products and sums are fp32 (thermoe/model.h numerics). */
void tmoe_cpu_linear_bf16(const tmoe_f16 *x, const tmoe_bf16 *W, int n, int in, int out, float *y);
/* linear, packed weights dequantized in registers (the fused impl). */
void tmoe_cpu_linear_q(tmoe_etype t, const tmoe_f16 *x, const uint8_t *q, const tmoe_f16 *scales,
                       int group, int n, int in, int out, float *y);
/* The same with the activations in int8 (tmoe_act8_quantize, blocks of TMOE_ACT8_BLOCK along
 * in): y = sum over blocks of scale x d x (the exact integer dot product), in double, rounded
 * to fp32 once: the reference of the CUDA kernel's int8 path. group a multiple of the block. */
void tmoe_cpu_linear_q_act8(tmoe_etype t, const tmoe_f16 *x, const uint8_t *q,
                            const tmoe_f16 *scales, int group, int n, int in, int out, float *y);
/* dequant_unpack: packed -> fp16 weights (out, in). */
void tmoe_cpu_dequant_unpack(const tmoe_linear *l, tmoe_f16 *w16);
/* linear_fc1 / linear_fc2 on any weight type. impl fused: tmoe_cpu_linear_q; unfused:
 * the caller ran dequant_unpack into w16 (required then, ignored for fp16 / bf16 / fused). */
void tmoe_cpu_linear(const tmoe_linear *l, tmoe_impl impl, const tmoe_f16 *w16, const tmoe_f16 *x,
                     int n, float *y);

/* The fp32 rows the fused CPU linear multiplies by (fp16 / bf16 converted, q4 / q2
 * dequantized as tmoe_cpu_linear_q does) into w32 (out, in): cached, they give the same bits
 * without converting on every call. Returns 0 (w32 untouched) where the impl has no fp32 form
 * (q4 / q2 unfused: dequantized to fp16 first). */
int tmoe_cpu_linear_w32(const tmoe_linear *l, tmoe_impl impl, float *w32);

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
/* The same with fc1 / fc2 from tmoe_cpu_linear_w32 caches (either NULL: converted per call);
 * bit for bit the same output. */
void tmoe_cpu_expert_forward_w32(const tmoe_expert *e, tmoe_impl impl, const float *w1_32,
                                 const float *w2_32, const tmoe_f16 *x, int n, float *y,
                                 void *scratch, double op_ms[TMOE_OP_COUNT]);

/* ==== decoder LM on the CPU (thermoe/model.h tmoe_lm): the fp32 reference ================
 * Everything in fp32 as transformers computes an fp32 checkpoint: RMSNorm, projections,
 * RoPE, attention (softmax in fp32), router softmax and top-k, SwiGLU MLPs, LM head. fp16 /
 * q4 / q2 experts go through tmoe_cpu_expert_forward (fp16 activations, as on the GPU). */
typedef struct tmoe_cpu_lm tmoe_cpu_lm;

typedef struct tmoe_cpu_lm_config {
    int max_tokens;         /* largest number of new tokens in one forward (all sequences) */
    tmoe_impl impl;         /* quantized experts: fused or unfused */
    tmoe_lm_route_fn route; /* per-layer selection biases or selections (tmoe_lm_route_out),
                               or NULL (baseline routing) */
    void *route_user;
    int bias_in_weights; /* the biases also change the combine weights */
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

/* The KV slots a batch is checked against: the cache's state and the limits. */
typedef struct tmoe_lm_slots {
    const int32_t *len;  /* (max_seqs) positions filled per slot */
    const uint8_t *used; /* (max_seqs) 1 while a sequence holds the slot */
    int max_seqs, max_len, max_ctx, max_tokens;
} tmoe_lm_slots;
/* Check a batch (an empty one passes, with *T_out = 0): open, distinct slots; at least one new
 * token each; no sequence past the cache or max_ctx; at most max_tokens new tokens; every id inside
 * the vocabulary. *T_out gets the number of new tokens. TMOE_EINVAL names the sequence or token. */
int tmoe_lm_batch_check(const tmoe_lm_batch *b, const tmoe_lm_slots *s, int vocab_size, int *T_out,
                        tmoe_error *err);

/* Workspace for m (borrowed: it must outlive the runner), sized once for cfg->max_tokens. */
int tmoe_cpu_lm_create(const tmoe_lm *m, const tmoe_cpu_lm_config *cfg, tmoe_cpu_lm **out,
                       tmoe_error *err);
void tmoe_cpu_lm_free(tmoe_cpu_lm *r); /* NULL-safe */
/* Run the step and append K and V to kv (whose slots' lengths grow by n_new). logits:
 * (sum n_new, V) when logits_all, else (nseq, V); NULL skips the LM head. A slot that is not open,
 * a sequence that would pass kv->max_len, too many tokens or an id outside the vocabulary is
 * TMOE_EINVAL and leaves kv unchanged. */
int tmoe_cpu_lm_forward(tmoe_cpu_lm *r, tmoe_kv_cache *kv, const tmoe_lm_batch *b, float *logits,
                        tmoe_error *err);
/* Token copies each expert received in the last forward, (n_layers, E); dense layers 0. */
const int32_t *tmoe_cpu_lm_expert_counts(const tmoe_cpu_lm *r);
/* Of those, the copies the route hook ran in the experts' place (use_copy), (n_layers, E). */
const int32_t *tmoe_cpu_lm_copy_counts(const tmoe_cpu_lm *r);

/* ============================== oprun ================================================= */
/* One op of the op table, prepared alone on a backend so that a profiler can time it:
 * weights for the op's expert type (several copies, so the working set exceeds the L2
 * cache and each call reads a copy it did not just read), inputs of the given token
 * count, and a launcher that runs the op back to back and times every call. */

typedef struct tmoe_oprun_spec {
    tmoe_backend_kind backend; /* cpu or cuda (auto is resolved by the caller) */
    int device_id;
    tmoe_op op;
    tmoe_etype etype;        /* expert ops: the weights' type; other ops: fp16 */
    tmoe_impl impl;          /* linear ops of q4/q2: fused or unfused (dequant_unpack apart) */
    int tokens;              /* rows the op sees (expert ops: tokens routed to the expert) */
    tmoe_block_config block; /* shape: d_model, d_ff, num_experts, top_k, n_heads, group, act */
    size_t min_working_set;  /* bytes of weights to rotate through (0: one copy) */
    int whole_expert;        /* run the whole expert forward per call, as the engine does
                                (dequant_unpack when unfused, fc1 with its activation, fc2);
                                op is ignored */
    uint64_t seed;
} tmoe_oprun_spec;

typedef struct tmoe_oprun tmoe_oprun;

/* Prepare the op. TMOE_ENOTSUP when the op does not apply (e.g. dequant_unpack of fp16). */
int tmoe_oprun_create(const tmoe_oprun_spec *spec, tmoe_oprun **out, tmoe_error *err);
void tmoe_oprun_free(tmoe_oprun *o); /* NULL-safe */
/* Run the op `calls` times back to back; ms (calls, may be NULL) gets each call's time
 * (device events on cuda, the monotonic clock on cpu). Returns when all calls finished. */
int tmoe_oprun_run(tmoe_oprun *o, int calls, double *ms, tmoe_error *err);
/* Bytes of device memory one call must read + write at least, and its FLOPs. */
double tmoe_oprun_bytes(const tmoe_oprun *o);
double tmoe_oprun_flops(const tmoe_oprun *o);
/* Weight copies rotated through. */
int tmoe_oprun_copies(const tmoe_oprun *o);

/* ============================== ktrace ================================================ */
/* Kernel tracing: every GPU kernel launched between start and stop, with name, grid,
 * block, device and start/end times, collected through CUPTI's activity API (libcupti is
 * loaded at run time; activity records are buffered by CUPTI and read on stop, so tracing
 * adds no synchronisation and does not disturb NVML sampling). */

typedef struct tmoe_kernel_rec {
    char name[200];   /* demangled when CUPTI gives it, truncated to fit */
    int64_t start_ns; /* GPU timestamps, ns */
    int64_t end_ns;
    int grid[3], block[3];
    int device;
    uint32_t correlation; /* CUPTI correlation id */
} tmoe_kernel_rec;

/* Begin collecting. TMOE_ENOTSUP when this build has no CUDA or libcupti cannot be loaded
 * (env THERMOE_CUPTI_LIB names the library; the message says what was tried). */
int tmoe_ktrace_start(tmoe_error *err);
/* Flush and stop. *recs (caller frees with free()) holds the kernels in end-time order. */
int tmoe_ktrace_stop(tmoe_kernel_rec **recs, int *n, tmoe_error *err);
/* The clock of the records' start_ns / end_ns, now (to map them onto another clock). */
int tmoe_ktrace_clock_ns(int64_t *ns, tmoe_error *err);

/* Aggregate kernels by name: names (n_out entries), launch counts and total ms; arrays are
 * caller-provided with room for cap names. Returns the number of distinct names. */
int tmoe_ktrace_aggregate(const tmoe_kernel_rec *recs, int n, char (*names)[200], int64_t *count,
                          double *ms, int cap);

/* NVTX range around a region, so external profilers (nsys, ncu --nvtx) see it by name.
 * No-ops in a build without CUDA. */
void tmoe_nvtx_push(const char *name);
void tmoe_nvtx_pop(void);

/* ============================== lm_cuda =============================================== */
/* The decoder LM (thermoe/model.h tmoe_lm) on a CUDA device: weights uploaded once, a device
 * KV cache with the CPU cache's slot design, prefill and decode over a mixed batch
 * (tmoe_lm_batch of thermoe/backend.h), logits back in fp32. docs/cuda.md "Decoder LM".
 *
 * Precision: dense weights (embedding, q/k/v/o, dense and shared MLPs, LM head) fp16 on the
 * device; norms, biases and routers fp32; experts fp16 (fp32 experts converted at upload) or
 * the loaded q4/q2; the hidden state, q/k/v, the KV cache, softmaxes and logits fp32; fp16
 * activations into every GEMM and expert kernel. In a build without CUDA every function
 * returns TMOE_ENOTSUP saying so. */

typedef struct tmoe_cuda_lm tmoe_cuda_lm;

typedef struct tmoe_cuda_lm_config {
    int device_id;
    int max_tokens;         /* largest number of new tokens in one forward (all sequences) */
    int max_seqs, max_len;  /* KV cache: slots and positions per slot */
    int use_graphs;         /* replay decode steps (every sequence adds one token) as CUDA
                               graphs, one per batch size; not with route */
    tmoe_lm_route_fn route; /* per-layer selection biases or selections (tmoe_lm_route_out),
                               or NULL (host round trip per layer) */
    void *route_user;
    int bias_in_weights;
    int plain_experts; /* 1: the model's own experts on the plain kernel even where the
                          bandwidth kernel takes their shapes (a reference for the tests) */
    /* production-shape experts (docs/cuda.md "Energy at production shape"): shadow_d_model
       > 0 runs, in every MoE layer, experts of shadow_d_model x shadow_d_ff (random weights
       of shadow_type, one set per MoE layer while shadow_max_bytes allows, then reused round
       robin) on the layer's selections beside the model's own; their output is unused */
    int shadow_d_model, shadow_d_ff, shadow_group;
    tmoe_etype shadow_type;
    size_t shadow_max_bytes; /* 0: the device's free memory less 4 GiB */
} tmoe_cuda_lm_config;

/* Upload m's weights and allocate the cache and the workspace (m is only read here and may be
 * freed after). Out of device memory, no device, or a shape the kernels do not take is an
 * error naming it. */
int tmoe_cuda_lm_create(const tmoe_lm *m, const tmoe_cuda_lm_config *cfg, tmoe_cuda_lm **out,
                        tmoe_error *err);
void tmoe_cuda_lm_free(tmoe_cuda_lm *r); /* NULL-safe */
/* KV slots, as tmoe_kv_seq_open / close: TMOE_EINVAL when all max_seqs are in use. */
int tmoe_cuda_lm_seq_open(tmoe_cuda_lm *r, int *slot, tmoe_error *err);
void tmoe_cuda_lm_seq_close(tmoe_cuda_lm *r, int slot);
int tmoe_cuda_lm_seq_len(const tmoe_cuda_lm *r, int slot); /* positions filled, -1 if closed */
/* One step, the contract of tmoe_cpu_lm_forward (logits (sum n_new, V) when logits_all, else
 * (nseq, V), host memory; a bad batch is TMOE_EINVAL and changes nothing). Waits for the
 * device. */
int tmoe_cuda_lm_forward(tmoe_cuda_lm *r, const tmoe_lm_batch *b, float *logits, tmoe_error *err);
/* Token copies each expert received in the last forward, (n_layers, E); dense layers 0. */
const int32_t *tmoe_cuda_lm_expert_counts(const tmoe_cuda_lm *r);
/* Whether the layer's experts run on the bandwidth kernel (1) or the plain any-shape kernel
 * (0; small models whose sizes are not multiples of 32 / 128 / 256); -1 for a dense layer. */
int tmoe_cuda_lm_fast_experts(const tmoe_cuda_lm *r, int layer);
/* Device bytes of weights as uploaded and of the KV cache. */
size_t tmoe_cuda_lm_weight_bytes(const tmoe_cuda_lm *r);
size_t tmoe_cuda_lm_kv_bytes(const tmoe_cuda_lm *r);
/* Production-shape expert sets and their device bytes (0 when none). */
int tmoe_cuda_lm_shadow_sets(const tmoe_cuda_lm *r);
size_t tmoe_cuda_lm_shadow_bytes(const tmoe_cuda_lm *r);

#ifdef __cplusplus
}
#endif
#endif
