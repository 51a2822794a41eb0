/* The decoder LM (thermoe/model.h tmoe_lm) on a CUDA device: weights uploaded once, a device
 * KV cache with the CPU cache's slot design, prefill and decode over a mixed batch
 * (tmoe_lm_batch of thermoe/cpu.h), logits back in fp32. docs/cuda.md "Decoder LM".
 *
 * Precision: dense weights (embedding, q/k/v/o, dense and shared MLPs, LM head) fp16 on the
 * device; norms, biases and routers fp32; experts fp16 (fp32 experts converted at upload) or
 * the loaded q4/q2; the hidden state, q/k/v, the KV cache, softmaxes and logits fp32; fp16
 * activations into every GEMM and expert kernel. In a build without CUDA every function
 * returns TMOE_ENOTSUP saying so. */
#ifndef THERMOE_LM_CUDA_H
#define THERMOE_LM_CUDA_H

#include "thermoe/cpu.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tmoe_cuda_lm tmoe_cuda_lm;

typedef struct tmoe_cuda_lm_config {
    int device_id;
    int max_tokens;         /* largest number of new tokens in one forward (all sequences) */
    int max_seqs, max_len;  /* KV cache: slots and positions per slot */
    int use_graphs;         /* replay decode steps (every sequence adds one token) as CUDA
                               graphs, one per batch size; not with route */
    tmoe_lm_route_fn route; /* per-layer selection biases, or NULL (host round trip per layer) */
    void *route_user;
    int bias_in_weights;
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
int tmoe_cuda_lm_forward(tmoe_cuda_lm *r, const tmoe_lm_batch *b, float *logits,
                         tmoe_error *err);
/* Token copies each expert received in the last forward, (n_layers, E); dense layers 0. */
const int32_t *tmoe_cuda_lm_expert_counts(const tmoe_cuda_lm *r);
/* Whether the layer's experts run on the bandwidth kernel (1) or the plain any-shape kernel
 * (0; small models whose sizes are not multiples of 32 / 128 / 256); -1 for a dense layer. */
int tmoe_cuda_lm_fast_experts(const tmoe_cuda_lm *r, int layer);
/* Device bytes of weights as uploaded and of the KV cache. */
size_t tmoe_cuda_lm_weight_bytes(const tmoe_cuda_lm *r);
size_t tmoe_cuda_lm_kv_bytes(const tmoe_cuda_lm *r);

#ifdef __cplusplus
}
#endif
#endif
