/* Private: what the expert-parallel backend (src/backend/nccl) uses of a CUDA engine state
 * (the void *state that tmoe_backend_cuda.create returns): its stream, cuBLAS handle and
 * activations, and the experts of its block run on rows the caller has already grouped. */
#ifndef THERMOE_CUDA_ENGINE_H
#define THERMOE_CUDA_ENGINE_H

#include "cuda_ops.h"

#include <cublas_v2.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A CUDA engine state whose experts may see expert_rows rows in one step (more than its
 * max_tokens x top_k: an expert-parallel rank receives every rank's copies); the per-token
 * buffers stay sized for max_tokens. Without with_gate, begin ends after norm2 (no gate
 * logits: the caller has the whole gate). Free with tmoe_backend_cuda.destroy. */
int tmoe_cuda_state_create(const tmoe_block *blk, const tmoe_engine_config *cfg, int expert_rows,
                           int with_gate, void **out, tmoe_error *err);

typedef struct tmoe_cuda_io {
    cudaStream_t stream; /* every step of the state runs on it */
    cublasHandle_t cublas;
    float *x;      /* (T, D) fp32 residual stream after begin (input of the MoE layer) */
    tmoe_f16 *h16; /* (T, D) fp16 norm2(x) after begin: what the experts read */
} tmoe_cuda_io;
void tmoe_cuda_state_io(void *state, tmoe_cuda_io *io);

/* Experts of the state's block on rows grouped by expert: xg (rows, D) fp16; d_counts (E),
 * d_offsets (E+1), d_active (E+1: [n, ids with rows]) on the device and h_counts (E) on the
 * host; ye (rows, D) fp32; rows at most the state's expert_rows (max_tokens x top_k). Experts
 * listed in d_active with rows run (cuBLAS per expert when the rows per running expert reach
 * tmoe_cuda_cublas_min_tokens).
 * Enqueued on the state's stream (no host wait); records the state's fc1/act/fc2 events. */
int tmoe_cuda_state_experts(void *state, const tmoe_f16 *xg, int rows, const int32_t *d_counts,
                            const int32_t *d_offsets, const int32_t *d_active,
                            const int32_t *h_counts, float *ye, tmoe_error *err);
/* After the stream passed them: add fc1 (from start, recorded by the caller before
 * tmoe_cuda_state_experts) and fc2 times of the last tmoe_cuda_state_experts to op_ms. */
void tmoe_cuda_state_expert_ms(void *state, cudaEvent_t start, double op_ms[TMOE_OP_COUNT]);

#ifdef __cplusplus
}
#endif
#endif
