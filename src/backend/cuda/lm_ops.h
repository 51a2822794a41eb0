/* Private: launchers of the decoder-LM kernels (lm.cu) used by lm_cuda.c. Same contract as
 * cuda_ops.h: enqueue on `stream`, check the launch, return a tmoe_code. Device pointers
 * unless a comment says host. The hidden state and the KV cache are fp32; activations into
 * every GEMM are fp16. */
#ifndef THERMOE_LM_OPS_H
#define THERMOE_LM_OPS_H

#include "cuda_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* x (T, D) fp32 = embed (V, D) fp16 rows tokens[t]. */
int tmoe_cuda_lm_embed(const tmoe_f16 *embed, const uint32_t *tokens, int T, int D, float *x,
                       cudaStream_t stream, tmoe_error *err);

/* RMSNorm of rows: output row j = x row (rows ? rows[j] : j) / rms * w; y16 (n, D) fp16 and,
 * when y32 is not NULL, (n, D) fp32. */
int tmoe_cuda_lm_rmsnorm(const float *x, const int32_t *rows, const float *w, int n, int D,
                         float eps, tmoe_f16 *y16, float *y32, cudaStream_t stream,
                         tmoe_error *err);

/* What happens to q, k and v after their projections (the CPU's qkv()), then K and V into the
 * cache: qkv (T, (H + 2 KV) hd) fp32 rows [q | k | v] gets the biases (b, NULL = none), the
 * q/k norm (qk_norm: 0 none, 1 whole projection, 2 per head; weights qn, kn), clipping to
 * [-clip, clip] (clip 0 = off) and RoPE (rotate-half, inv_freq (hd / 2), position pos[t]) in
 * place; K and V of token t are written to kc / vc at slot[t], position pos[t] (caches
 * (max_seqs, max_len, KV, hd) fp32). */
typedef struct tmoe_cuda_qkv_args {
    float *qkv;
    const float *bq, *bk, *bv, *qn, *kn, *inv_freq;
    const int32_t *pos, *slot;
    float *kc, *vc;
    int T, H, KV, hd, qk_norm, max_len;
    float eps, clip;
} tmoe_cuda_qkv_args;
int tmoe_cuda_lm_qkv_post(const tmoe_cuda_qkv_args *a, cudaStream_t stream, tmoe_error *err);

/* Attention of each new token t over positions first..pos[t] of its slot (first = pos - window
 * + 1 with a sliding window > 0, else 0): q from qkv rows (stride (H + 2 KV) hd), head h reads
 * KV head h / (H / KV); softmax in fp32 (online, per warp, merged in a fixed order);
 * out (T, H hd) fp16. hd <= 256. */
int tmoe_cuda_lm_attention(const float *qkv, const float *kc, const float *vc, const int32_t *pos,
                           const int32_t *slot, int T, int H, int KV, int hd, int max_len,
                           int window, tmoe_f16 *out, cudaStream_t stream, tmoe_error *err);

/* y (T, D) += b (D) on every row. */
int tmoe_cuda_lm_add_bias(float *y, const float *b, int T, int D, cudaStream_t stream,
                          tmoe_error *err);

/* Qwen2-MoE shared expert: y (T, D) += sigmoid(xn32 row . gate) * ys (T, D). */
int tmoe_cuda_lm_shared_add(float *y, const float *ys, const float *xn32, const float *gate, int T,
                            int D, cudaStream_t stream, tmoe_error *err);

/* Experts of any shape, fp16 row-major weights (E, out, in): grouped row r (offsets[e] <= r <
 * offsets[e + 1], N rows in all) of expert e. fc1 + SwiGLU: a (N, I) fp16 = silu(x[src[r] / k]
 * . W13[e] rows [0, I)) * (. rows [I, 2 I)), x (T, D) fp16, W13 (E, 2 I, D). fc2: ye (N, D)
 * fp32 = a row r . W2[e], W2 (E, D, I). One warp per output; for shapes the bandwidth kernel
 * does not take (the small reference models), not for speed. */
int tmoe_cuda_lm_expert_fc1_simple(const tmoe_f16 *x, const int32_t *src, int k,
                                   const int32_t *offsets, int E, int N, const tmoe_f16 *w13, int D,
                                   int I, tmoe_f16 *a, cudaStream_t stream, tmoe_error *err);
int tmoe_cuda_lm_expert_fc2_simple(const tmoe_f16 *a, const int32_t *offsets, int E, int N,
                                   const tmoe_f16 *w2, int D, int I, float *ye, cudaStream_t stream,
                                   tmoe_error *err);

/* Production-shape experts (lm_shadow.c): n_sets = min(n_layers, what fits in max_bytes) sets
 * of num_experts experts of d_model x d_ff (SwiGLU: fc1 (2 d_ff, d_model), fc2 (d_model,
 * d_ff)), random weights of `type` on the bandwidth kernel, and a random input of max_tokens
 * rows. run() sends that input through set layer % n_sets with the routing permute wrote for
 * the model's own experts (experts 0..E-1, active, counts, offsets, src; dst and w for the
 * combine; max_n bounds any expert's rows), the work of the MoE layer at that shape; the
 * output is never read. */
typedef struct tmoe_cuda_shadow tmoe_cuda_shadow;
typedef struct tmoe_cuda_shadow_config {
    int d_model, d_ff, num_experts, top_k, max_tokens, n_layers;
    tmoe_etype type;
    int group;        /* q4/q2 group size */
    int act8;         /* q4: int8 activations where the kernel's int8 path applies */
    size_t max_bytes; /* weights; 0: the device's free memory less 4 GiB */
    uint64_t seed;
    int sm_count;
} tmoe_cuda_shadow_config;
int tmoe_cuda_shadow_create(const tmoe_cuda_shadow_config *c, cudaStream_t st,
                            tmoe_cuda_shadow **out, tmoe_error *err);
void tmoe_cuda_shadow_free(tmoe_cuda_shadow *s); /* NULL-safe */
int tmoe_cuda_shadow_sets(const tmoe_cuda_shadow *s);
size_t tmoe_cuda_shadow_bytes(const tmoe_cuda_shadow *s);
/* slot_of (E, device, may be NULL): expert e runs where slot_of[e] >= 0 (its own slot), a
 * block of an expert at -1 returns (tmoe_cuda_expert_linear); a model whose experts run
 * partly as lower-precision copies drives two shadows, each with its part. Each combines
 * its own output rows (never read). */
int tmoe_cuda_shadow_run(tmoe_cuda_shadow *s, int layer, const int32_t *experts,
                         const int32_t *active, const int32_t *slot_of, const int32_t *counts,
                         const int32_t *offsets, const int32_t *src, const int32_t *dst,
                         const float *w, int T, int max_n, cudaStream_t st, tmoe_error *err);
/* Weight bytes of one set of c's experts (what a shadow holds per set). */
size_t tmoe_cuda_shadow_set_bytes(const tmoe_cuda_shadow_config *c);

#ifdef __cplusplus
}
#endif
#endif
