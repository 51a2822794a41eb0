/* Kernels of the decoder LM (launchers in lm_ops.h): embedding gather, RMSNorm with a row
 * list, the q/k/v epilogue (biases, q/k norms, clipping, RoPE with transformers'
 * rotate-half convention, K and V into the cache slots), attention over the KV cache,
 * bias add, the shared-expert gate and plain expert kernels for any shape. Numerics follow
 * the CPU reference of src/backend/cpu/lm_cpu.c: fp32 everywhere except the fp16 activations
 * that feed GEMMs. */
#include "common.cuh"
#include "lm_ops.h"

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); sh holds 32 floats. Every
 * thread gets the sum; sh may be reused after the call. */
static __device__ float block_sum(float v, float *sh) {
#pragma unroll
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < (int)(blockDim.x >> 5) ? sh[lane] : 0.0f;
#pragma unroll
        for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0) sh[0] = s;
    }
    __syncthreads();
    float r = sh[0];
    __syncthreads();
    return r;
}

static __device__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---- embedding ---------------------------------------------------------------------- */
__global__ void k_lm_embed(const __half *embed, const uint32_t *tokens, int D, float *x) {
    const int t = blockIdx.x;
    const __half *row = embed + (size_t)tokens[t] * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) x[(size_t)t * D + i] = __half2float(row[i]);
}

extern "C" int tmoe_cuda_lm_embed(const tmoe_f16 *embed, const uint32_t *tokens, int T, int D,
                                  float *x, cudaStream_t stream, tmoe_error *err) {
    if (T <= 0) return TMOE_OK;
    k_lm_embed<<<T, 256, 0, stream>>>((const __half *)embed, tokens, D, x);
    TMOE_CUDA_LAUNCHED(stream, "lm_embed", err);
    return TMOE_OK;
}

/* ---- RMSNorm ------------------------------------------------------------------------ */
__global__ void k_lm_rmsnorm(const float *x, const int32_t *rows, const float *w, int D, float eps,
                             __half *y16, float *y32) {
    __shared__ float sh[32];
    const int j = blockIdx.x;
    const float *r = x + (size_t)(rows ? rows[j] : j) * D;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) ss += r[i] * r[i];
    ss = block_sum(ss, sh);
    const float inv = 1.0f / sqrtf(ss / (float)D + eps);
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float v = w[i] * (r[i] * inv);
        y16[(size_t)j * D + i] = __float2half_rn(v);
        if (y32) y32[(size_t)j * D + i] = v;
    }
}

extern "C" int tmoe_cuda_lm_rmsnorm(const float *x, const int32_t *rows, const float *w, int n,
                                    int D, float eps, tmoe_f16 *y16, float *y32,
                                    cudaStream_t stream, tmoe_error *err) {
    if (n <= 0) return TMOE_OK;
    k_lm_rmsnorm<<<n, 256, 0, stream>>>(x, rows, w, D, eps, (__half *)y16, y32);
    TMOE_CUDA_LAUNCHED(stream, "lm_rmsnorm", err);
    return TMOE_OK;
}

/* ---- q, k, v epilogue --------------------------------------------------------------- */
/* Block (t, part): part 0 q (H heads), 1 k, 2 v (KV heads). */
__global__ void k_lm_qkv_post(tmoe_cuda_qkv_args a) {
    __shared__ float sh[32];
    const int t = blockIdx.x, part = blockIdx.y;
    const int heads = part == 0 ? a.H : a.KV, hd = a.hd, width = heads * hd;
    const int stride = (a.H + 2 * a.KV) * hd;
    float *p = a.qkv + (size_t)t * stride +
               (part == 0   ? 0
                : part == 1 ? a.H * hd
                            : (a.H + a.KV) * hd);
    const float *b = part == 0 ? a.bq : part == 1 ? a.bk : a.bv;
    if (b)
        for (int i = threadIdx.x; i < width; i += blockDim.x) p[i] += b[i];
    __syncthreads();
    if (part < 2 && a.qk_norm == 1) {
        const float *w = part == 0 ? a.qn : a.kn;
        float ss = 0.0f;
        for (int i = threadIdx.x; i < width; i += blockDim.x) ss += p[i] * p[i];
        ss = block_sum(ss, sh);
        const float inv = 1.0f / sqrtf(ss / (float)width + a.eps);
        for (int i = threadIdx.x; i < width; i += blockDim.x) p[i] = w[i] * (p[i] * inv);
    } else if (part < 2 && a.qk_norm == 2) {
        const float *w = part == 0 ? a.qn : a.kn;
        const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
        for (int h = warp; h < heads; h += nw) {
            float *ph = p + (size_t)h * hd;
            float ss = 0.0f;
            for (int i = lane; i < hd; i += 32) ss += ph[i] * ph[i];
            ss = warp_sum(ss);
            const float inv = 1.0f / sqrtf(ss / (float)hd + a.eps);
            for (int i = lane; i < hd; i += 32) ph[i] = w[i] * (ph[i] * inv);
        }
    }
    __syncthreads();
    if (a.clip > 0.0f)
        for (int i = threadIdx.x; i < width; i += blockDim.x)
            p[i] = p[i] > a.clip ? a.clip : p[i] < -a.clip ? -a.clip : p[i];
    __syncthreads();
    const int pos = a.pos[t];
    if (part < 2) {
        const int half = hd / 2;
        for (int idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
            const int h = idx / half, i = idx % half;
            const float ang = (float)pos * a.inv_freq[i], c = cosf(ang), s = sinf(ang);
            float *ph = p + (size_t)h * hd;
            const float x0 = ph[i], x1 = ph[i + half];
            ph[i] = x0 * c - x1 * s;
            ph[i + half] = x1 * c + x0 * s;
        }
        __syncthreads();
    }
    if (part > 0) {
        float *dst = (part == 1 ? a.kc : a.vc) + ((size_t)a.slot[t] * a.max_len + pos) * width;
        for (int i = threadIdx.x; i < width; i += blockDim.x) dst[i] = p[i];
    }
}

extern "C" int tmoe_cuda_lm_qkv_post(const tmoe_cuda_qkv_args *a, cudaStream_t stream,
                                     tmoe_error *err) {
    if (a->T <= 0) return TMOE_OK;
    k_lm_qkv_post<<<dim3(a->T, 3), 256, 0, stream>>>(*a);
    TMOE_CUDA_LAUNCHED(stream, "lm_qkv_post", err);
    return TMOE_OK;
}

/* ---- attention over the cache ------------------------------------------------------- */
#define ATT_WARPS 4
#define ATT_MAX_HD 256

/* Block (t, h), ATT_WARPS warps: warp w takes positions first + w, first + w + ATT_WARPS, ...
 * with an online softmax (running max m, sum l, accumulator of hd values spread over the
 * lanes); the warps' partial results are merged in warp order. */
__global__ void __launch_bounds__(32 * ATT_WARPS)
    k_lm_attention(const float *qkv, const float *kc, const float *vc, const int32_t *pos,
                   const int32_t *slot, int H, int KV, int hd, int max_len, int window, float scale,
                   __half *out) {
    __shared__ float sm[ATT_WARPS], sl[ATT_WARPS], sacc[ATT_WARPS][ATT_MAX_HD];
    const int t = blockIdx.x, h = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = h / (H / KV);
    const float *q = qkv + (size_t)t * (H + 2 * KV) * hd + (size_t)h * hd;
    float qr[ATT_MAX_HD / 32], acc[ATT_MAX_HD / 32];
#pragma unroll
    for (int j = 0; j < ATT_MAX_HD / 32; j++) {
        const int i = lane + 32 * j;
        qr[j] = i < hd ? q[i] : 0.0f;
        acc[j] = 0.0f;
    }
    const int p = pos[t];
    const int first = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
    const size_t base = (size_t)slot[t] * max_len * KV * hd;
    float m = -INFINITY, l = 0.0f;
    for (int s = first + warp; s <= p; s += ATT_WARPS) {
        const float *kr = kc + base + ((size_t)s * KV + g) * hd;
        const float *vr = vc + base + ((size_t)s * KV + g) * hd;
        float d = 0.0f;
#pragma unroll
        for (int j = 0; j < ATT_MAX_HD / 32; j++) {
            const int i = lane + 32 * j;
            if (i < hd) d += qr[j] * kr[i];
        }
        const float sc = warp_sum(d) * scale;
        const float mn = fmaxf(m, sc), corr = expf(m - mn), pw = expf(sc - mn);
        l = l * corr + pw;
#pragma unroll
        for (int j = 0; j < ATT_MAX_HD / 32; j++) {
            const int i = lane + 32 * j;
            if (i < hd) acc[j] = acc[j] * corr + pw * vr[i];
        }
        m = mn;
    }
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < ATT_MAX_HD / 32; j++) {
        const int i = lane + 32 * j;
        if (i < hd) sacc[warp][i] = acc[j];
    }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < ATT_WARPS; w++)
        if (sl[w] > 0.0f) M = fmaxf(M, sm[w]);
    float L = 0.0f;
    for (int w = 0; w < ATT_WARPS; w++)
        if (sl[w] > 0.0f) L += sl[w] * expf(sm[w] - M);
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++)
            if (sl[w] > 0.0f) o += sacc[w][i] * expf(sm[w] - M);
        out[(size_t)t * H * hd + (size_t)h * hd + i] = __float2half_rn(o / L);
    }
}

extern "C" int tmoe_cuda_lm_attention(const float *qkv, const float *kc, const float *vc,
                                      const int32_t *pos, const int32_t *slot, int T, int H, int KV,
                                      int hd, int max_len, int window, tmoe_f16 *out,
                                      cudaStream_t stream, tmoe_error *err) {
    if (T <= 0) return TMOE_OK;
    if (hd > ATT_MAX_HD || hd < 1 || KV < 1 || H % KV)
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "attention: head_dim %d (at most %d), %d heads on "
                           "%d KV heads",
                           hd, ATT_MAX_HD, H, KV);
    k_lm_attention<<<dim3(T, H), 32 * ATT_WARPS, 0, stream>>>(
        qkv, kc, vc, pos, slot, H, KV, hd, max_len, window, 1.0f / sqrtf((float)hd), (__half *)out);
    TMOE_CUDA_LAUNCHED(stream, "lm_attention", err);
    return TMOE_OK;
}

/* ---- bias, shared expert gate -------------------------------------------------------- */
__global__ void k_lm_add_bias(float *y, const float *b, size_t n, int D) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] += b[i % D];
}

extern "C" int tmoe_cuda_lm_add_bias(float *y, const float *b, int T, int D, cudaStream_t stream,
                                     tmoe_error *err) {
    size_t n = (size_t)T * D;
    if (n == 0) return TMOE_OK;
    k_lm_add_bias<<<grid_for(n), 256, 0, stream>>>(y, b, n, D);
    TMOE_CUDA_LAUNCHED(stream, "lm_add_bias", err);
    return TMOE_OK;
}

__global__ void k_lm_shared_add(float *y, const float *ys, const float *xn, const float *gate,
                                int D) {
    __shared__ float sh[32];
    const int t = blockIdx.x;
    float d = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) d += xn[(size_t)t * D + i] * gate[i];
    d = block_sum(d, sh);
    const float s = 1.0f / (1.0f + expf(-d));
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        y[(size_t)t * D + i] += s * ys[(size_t)t * D + i];
}

extern "C" int tmoe_cuda_lm_shared_add(float *y, const float *ys, const float *xn32,
                                       const float *gate, int T, int D, cudaStream_t stream,
                                       tmoe_error *err) {
    if (T <= 0) return TMOE_OK;
    k_lm_shared_add<<<T, 256, 0, stream>>>(y, ys, xn32, gate, D);
    TMOE_CUDA_LAUNCHED(stream, "lm_shared_add", err);
    return TMOE_OK;
}

/* ---- plain expert kernels (any shape) ------------------------------------------------ */
static __device__ int expert_of_row(const int32_t *offsets, int E, int r) {
    int e = 0;
    while (e < E - 1 && offsets[e + 1] <= r) e++;
    return e;
}

__global__ void k_lm_fc1_simple(const __half *x, const int32_t *src, int k, const int32_t *offsets,
                                int E, size_t total, const __half *w13, int D, int I, __half *a) {
    const size_t gw = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (gw >= total) return;
    const int r = (int)(gw / I), o = (int)(gw % I);
    const int e = expert_of_row(offsets, E, r);
    const __half *xr = x + (size_t)(src[r] / k) * D;
    const __half *wg = w13 + ((size_t)e * 2 * I + o) * D, *wu = wg + (size_t)I * D;
    float gs = 0.0f, us = 0.0f;
    for (int i = lane; i < D; i += 32) {
        const float xv = __half2float(xr[i]);
        gs += xv * __half2float(wg[i]);
        us += xv * __half2float(wu[i]);
    }
    gs = warp_sum(gs);
    us = warp_sum(us);
    if (lane == 0) a[(size_t)r * I + o] = __float2half_rn(gs / (1.0f + expf(-gs)) * us);
}

__global__ void k_lm_fc2_simple(const __half *a, const int32_t *offsets, int E, size_t total,
                                const __half *w2, int D, int I, float *ye) {
    const size_t gw = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (gw >= total) return;
    const int r = (int)(gw / D), o = (int)(gw % D);
    const int e = expert_of_row(offsets, E, r);
    const __half *ar = a + (size_t)r * I, *w = w2 + ((size_t)e * D + o) * I;
    float s = 0.0f;
    for (int i = lane; i < I; i += 32) s += __half2float(ar[i]) * __half2float(w[i]);
    s = warp_sum(s);
    if (lane == 0) ye[(size_t)r * D + o] = s;
}

static unsigned warp_blocks(size_t warps) {
    return (unsigned)((warps + 7) / 8); /* 8 warps a block */
}

extern "C" int tmoe_cuda_lm_expert_fc1_simple(const tmoe_f16 *x, const int32_t *src, int k,
                                              const int32_t *offsets, int E, int N,
                                              const tmoe_f16 *w13, int D, int I, tmoe_f16 *a,
                                              cudaStream_t stream, tmoe_error *err) {
    size_t total = (size_t)N * I;
    if (total == 0) return TMOE_OK;
    k_lm_fc1_simple<<<warp_blocks(total), 256, 0, stream>>>(
        (const __half *)x, src, k, offsets, E, total, (const __half *)w13, D, I, (__half *)a);
    TMOE_CUDA_LAUNCHED(stream, "lm_expert_fc1_simple", err);
    return TMOE_OK;
}

extern "C" int tmoe_cuda_lm_expert_fc2_simple(const tmoe_f16 *a, const int32_t *offsets, int E,
                                              int N, const tmoe_f16 *w2, int D, int I, float *ye,
                                              cudaStream_t stream, tmoe_error *err) {
    size_t total = (size_t)N * D;
    if (total == 0) return TMOE_OK;
    k_lm_fc2_simple<<<warp_blocks(total), 256, 0, stream>>>((const __half *)a, offsets, E, total,
                                                            (const __half *)w2, D, I, ye);
    TMOE_CUDA_LAUNCHED(stream, "lm_expert_fc2_simple", err);
    return TMOE_OK;
}
