/* Private: plain-C launchers of the CUDA backend's kernels, one per op, callable alone (the
 * backend, the tests and a profiler use them). Every launcher enqueues on `stream`, checks the
 * launch, synchronizes in a debug build (not while the stream is being captured) and returns a
 * tmoe_code, filling err with file:line and the CUDA error string on failure.
 *
 * Expert launchers serve all experts of one weight type in one launch: `experts` (n_experts)
 * lists the expert ids of that type (slot s holds the weights of expert experts[s]); counts
 * (E) and offsets (E+1) are the device arrays written by permute. To time one op of one
 * expert alone, pass n_experts = 1, experts = {0}, counts = {n}, offsets = {0, n}
 * (tmoe_cuda_single_expert_routing fills such arrays). All pointers are device pointers
 * unless a comment says host. */
#ifndef THERMOE_CUDA_OPS_H
#define THERMOE_CUDA_OPS_H

#include "thermoe/core.h"

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Check a CUDA runtime call: on failure fill err with file:line, the call and the CUDA error
 * string and return TMOE_EDEVICE from the enclosing function. */
#define TMOE_CUDA_CHECK(call, err)                                                                 \
    do {                                                                                           \
        cudaError_t ce_ = (call);                                                                  \
        if (ce_ != cudaSuccess)                                                                    \
            return tmoe_errorf((err), TMOE_EDEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,    \
                               cudaGetErrorString(ce_));                                           \
    } while (0)

/* Check a CUDA runtime call in teardown, where nothing can be returned and nothing should
 * stop: on failure log a warning (tmoe_log) with file:line, the call and the CUDA error string,
 * and go on. */
#define TMOE_CUDA_WARN(call)                                                                       \
    do {                                                                                           \
        cudaError_t ce_ = (call);                                                                  \
        if (ce_ != cudaSuccess)                                                                    \
            tmoe_log(TMOE_LOG_WARN, "%s:%d: %s: %s", __FILE__, __LINE__, #call,                    \
                     cudaGetErrorString(ce_));                                                     \
    } while (0)

/* After a launch: the launch error, then (debug builds, stream not capturing) a sync. */
int tmoe_cuda_check_launch(cudaStream_t stream, const char *file, int line, const char *what,
                           tmoe_error *err);
#define TMOE_CUDA_LAUNCHED(stream, what, err)                                                      \
    do {                                                                                           \
        int rc_ = tmoe_cuda_check_launch((stream), __FILE__, __LINE__, (what), (err));             \
        if (rc_) return rc_;                                                                       \
    } while (0)

/* Weights of one linear layer (fc1 or fc2) of every expert of one type, stored by slot. */
typedef struct tmoe_cuda_lin {
    tmoe_etype type;
    int out, in, group;     /* rows, columns, quantization group along in */
    const void *w;          /* fp16 / bf16 (slots, out, in) or packed (slots, out, in*bits/8) */
    const tmoe_f16 *scales; /* (slots, out, in/group), q4/q2 only */
    size_t w_stride;        /* bytes per slot */
    size_t s_stride;        /* scales per slot */
    int tiled;              /* w in the tiled layout (tmoe_cuda_tile_weights), else row-major */
    int act8;               /* q4 / q2: the int8 path where it applies (tmoe_cuda_act8) */
    int sm_count;           /* multiprocessors of the device that runs the launch, for the
                               grid shape (tmoe_cuda_sm_count, once per device at init);
                               0: tmoe_cuda_expert_linear asks the current device each call */
} tmoe_cuda_lin;

/* Multiprocessors of CUDA device `device` (cudaDevAttrMultiProcessorCount) into *sms. */
int tmoe_cuda_sm_count(int device, int *sms, tmoe_error *err);

/* n bytes host -> device, ordered on `stream` and complete on return: the only upload of
 * weights and tables (a plain cudaMemcpy from pageable memory can still be landing when a
 * kernel on a non-blocking stream starts reading). */
int tmoe_cuda_upload(void *dst, const void *src, size_t n, cudaStream_t stream, tmoe_error *err);

/* Tiled layout of the bandwidth kernel: per 16-row tile and 64-byte k-block, 1 KB holding rows
 * tile*16 + h*8 + g at bytes h*512 + g*64 (h = 0, 1; g = 0..7), k-blocks of a tile contiguous,
 * so each warp load reads 512 contiguous bytes. Convert out rows of rowbytes bytes (multiples
 * of 16 and 64) for `slots` matrices; src and dst must not overlap. */
int tmoe_cuda_tile_weights(const void *src, void *dst, int out, size_t rowbytes, int slots,
                           cudaStream_t stream, tmoe_error *err);

/* Epilogue of an expert linear: none (fp32 out, rows = L->out), relu (fp16 out, rows =
 * L->out) or swiglu (fp16 out, rows = L->out / 2: silu(rows [0, d_ff)) * rows [d_ff, 2 d_ff)). */
typedef enum { TMOE_CUDA_EPI_NONE, TMOE_CUDA_EPI_RELU, TMOE_CUDA_EPI_SWIGLU } tmoe_cuda_epi;

/* Shape limits of the bandwidth kernels (fused and fp16 / bf16 small-batch): in a multiple of
 * 32 (fp16 / bf16), 128 (q4) or 256 (q2); output rows a multiple of 32 (16 with swiglu); q4 / q2
 * groups a power of two, at least 32 (q4) or 64 (q2). TMOE_OK or TMOE_ENOTSUP with the reason. */
int tmoe_cuda_expert_kernel_supports(const tmoe_cuda_lin *L, tmoe_cuda_epi epi, tmoe_error *err);

/* Expert linear on grouped rows with the bandwidth kernel (tensor-core mma.sync on 16-byte
 * weight loads; bf16 weights take the bf16 mma with the fp16 x rounded to bf16 in registers;
 * q4/q2 dequantized in registers, split-K over 8 warps, each weight byte read
 * once per 64 tokens). Row r of expert e (offsets[e] <= r < offsets[e]+counts[e]) reads
 * x + (src ? src[r] / k : r) * L->in and writes row r of y32 (epi none) or y16. max_n (host)
 * bounds every counts[e] (the batch's tokens); n_rows (host, 0 = unknown) is the launch's
 * grouped rows (T k). The token tile (8, 16, 32 or 64 tokens a pass; larger counts take
 * several passes) is sized for max_n, or for twice the average n_rows / max_active where the
 * experts are small enough that an extra pass reads its rows from L2
 * (tmoe_cuda_expert_tile_from_average, default 1; 0 sizes it for max_n always). With active
 * (from permute) the grid covers at most max_active experts (host bound on the entries of
 * active, e.g. min(E, T k), whatever their types) and block row y serves expert active[1+y]
 * at slot slot_of[e] (-1: not of this type, the block returns; NULL: slot = e); without it,
 * one block row per slot (expert experts[slot]). */
int tmoe_cuda_expert_linear(const tmoe_cuda_lin *L, tmoe_cuda_epi epi, int n_experts,
                            const int32_t *experts, const int32_t *active, const int32_t *slot_of,
                            const int32_t *counts, const int32_t *offsets, const tmoe_f16 *x,
                            const int32_t *src, int k, int max_n, int n_rows, int max_active,
                            float *y32, tmoe_f16 *y16, cudaStream_t stream, tmoe_error *err);
extern int tmoe_cuda_expert_tile_from_average;
/* Token tiles of up to 16 tokens read the weights through a ring of this many k-blocks a warp
 * in shared memory (cp.async; 3, 4 or 6), or pipelined in registers (0); -1 (the default):
 * a ring of 3 for q4 at up to 8 tokens, registers otherwise. */
extern int tmoe_cuda_expert_stages;
/* Split-K over blocks for fp16 / bf16 at up to 16 tokens where the blocks of a launch would not
 * give every SM two: 2-8 splits every row block's k-blocks over a cluster of that many blocks
 * (Hopper; their partial sums meet in distributed shared memory, in a fixed order), so that a
 * matrix of few row blocks (4096 x 14336: 128 blocks of 32 rows) runs on more SMs; 1: no
 * split; -1 (the default): SPLITK_DEFAULT of expert_linear.cu. A device without cluster
 * launch never splits. */
extern int tmoe_cuda_expert_splitk;
/* 1 (or L->act8): q4 / q2 experts whose token tile is at most tmoe_cuda_act8_tokens quantize
 * their activations to int8 (tmoe_act8_quantize, per block of 32, inside the kernel) and take
 * integer dot products on the packed weights (dp4a) instead of the fp16 mma: a numerics change,
 * whose reference is tmoe_cpu_linear_q_act8. 0 (the default): the fp16 mma on every path. A ring
 * that does not fit beside the int8 activations gives way to a ring of 3, then to the register
 * pipeline, and to the mma above about 40,000 inputs at 4 tokens. */
extern int tmoe_cuda_act8;
/* The largest token tile that takes the int8 path: 1 (the default: on an H100 one token was
 * 7-24% faster than the mma for q4, 4 tokens 9-42% slower, bench/results/q4_act8), 2 or 4. */
extern int tmoe_cuda_act8_tokens;
/* The ring depth of q2's int8 path where tmoe_cuda_expert_stages is not set: 0 (registers,
 * the default, as q2's mma path) or 3, 4, 6. */
extern int tmoe_cuda_act8_q2_stages;

/* dequant_unpack: packed q4/q2 of the listed experts with counts[e] > 0 (every listed expert
 * when counts is NULL) -> fp16 (slots, out, in) at w16. */
int tmoe_cuda_dequant_unpack(const tmoe_cuda_lin *L, int n_experts, const int32_t *experts,
                             const int32_t *counts, tmoe_f16 *w16, cudaStream_t stream,
                             tmoe_error *err);

/* gate_topk: one warp per token; score = logit + bias (bias may be NULL), ties to the lower
 * index; weights = softmax of unbiased logits (biased when bias_in_weights), renormalised
 * over the chosen when renorm. NaN counts as -inf as in tmoe_gate_topk (chosen last,
 * lowest indices first; probability 0; weights 0 when the chosen have none). idx, w (T, k);
 * host_idx / host_w (mapped host memory) may be NULL, else receive a copy. */
int tmoe_cuda_gate_topk(const float *logits, const float *bias, int T, int E, int k, int renorm,
                        int bias_in_weights, int32_t *idx, float *w, int32_t *host_idx,
                        float *host_w, cudaStream_t stream, tmoe_error *err);

/* permute: histogram, scan and stable scatter in one block (no host sync). counts (E),
 * offsets (E+1), src (T k) grouped row -> copy, dst (T k) copy -> grouped row; active (E+1,
 * may be NULL): [n, ids of the n experts with tokens, ascending]; host_counts (mapped host
 * memory, E) may be NULL, else receives counts. */
int tmoe_cuda_permute(const int32_t *idx, int T, int k, int E, int32_t *counts, int32_t *offsets,
                      int32_t *src, int32_t *dst, int32_t *active, int32_t *host_counts,
                      cudaStream_t stream, tmoe_error *err);

/* gather: xg (N, D) row r = x16 row src[r] / k. */
int tmoe_cuda_gather(const tmoe_f16 *x16, const int32_t *src, int N, int k, int D, tmoe_f16 *xg,
                     cudaStream_t stream, tmoe_error *err);

/* combine: y (T, D) = resid + sum_{j=0..k-1} w[t,j] ye[dst[t k + j]] (resid may be NULL). */
int tmoe_cuda_combine(const float *ye, const int32_t *dst, const float *w, const float *resid,
                      int T, int k, int D, float *y, cudaStream_t stream, tmoe_error *err);

/* relu / swiglu: h (n, d_ff or 2 d_ff) fp32 -> a (n, d_ff) fp16. */
int tmoe_cuda_act(tmoe_act act, const float *h, int n, int d_ff, tmoe_f16 *a, cudaStream_t stream,
                  tmoe_error *err);

/* rmsnorm: y (T, D) fp16 = x / rms(x) * w. */
int tmoe_cuda_rmsnorm(const float *x, const float *w, int T, int D, float eps, tmoe_f16 *y,
                      cudaStream_t stream, tmoe_error *err);
/* y16 = fp16(x), n values. */
int tmoe_cuda_to_f16(const float *x, size_t n, tmoe_f16 *y16, cudaStream_t stream, tmoe_error *err);
/* ybf = bf16(x16) (round to nearest even), n values: the activations of a bf16 GEMM.
 * Buffers 4-byte aligned. */
int tmoe_cuda_f16_to_bf16(const tmoe_f16 *x16, size_t n, tmoe_bf16 *ybf, cudaStream_t stream,
                          tmoe_error *err);
/* x += d, n values. */
int tmoe_cuda_add(float *x, const float *d, size_t n, cudaStream_t stream, tmoe_error *err);
/* causal softmax: S (H, T, T) fp32 raw scores -> P (H, T, T) fp16 of softmax(S * scale) over
 * s <= t, 0 above the diagonal. */
int tmoe_cuda_causal_softmax(const float *S, int H, int T, float scale, tmoe_f16 *P,
                             cudaStream_t stream, tmoe_error *err);

/* Engine policy knobs (backend_cuda.c): fp16 / bf16 and unfused experts take the per-expert cuBLAS
 * path when average tokens per expert >= tmoe_cuda_cublas_min_tokens and d_model * d_ff >=
 * tmoe_cuda_cublas_min_weights. Read at each MoE step; tests lower them to cover that path. */
extern int tmoe_cuda_cublas_min_tokens;
extern long tmoe_cuda_cublas_min_weights;

/* Host helper: write {0}, {n}, {0, n} into experts, counts, offsets (device) for timing one
 * expert alone. */
int tmoe_cuda_single_expert_routing(int n, int32_t *experts, int32_t *counts, int32_t *offsets,
                                    cudaStream_t stream, tmoe_error *err);

/* Launch the graph in *ge on st; on its first use, capture it from enqueue(ctx, err) on st
 * and instantiate it into *ge (owned by the caller, who destroys it). A capture or
 * instantiation that fails leaves *ge NULL and reports the first error. */
int tmoe_cuda_graph_run(cudaGraphExec_t *ge, cudaStream_t st,
                        int (*enqueue)(void *ctx, tmoe_error *err), void *ctx, tmoe_error *err);

#ifdef __cplusplus
}
#endif
#endif
