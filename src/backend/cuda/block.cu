/* The block's steps around the MoE layer: activation (the unfused relu / swiglu), rmsnorm,
 * fp32 -> fp16, the residual add and the causal softmax of attention (contracts in
 * cuda_ops.h). */
#include "common.cuh"

__global__ void k_act(int act, const float *h, int n, int d_ff, __half *a) {
    size_t total = (size_t)n * d_ff;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / d_ff, c = i - r * d_ff;
        float v;
        if (act == TMOE_ACT_RELU) {
            v = h[i];
            v = v > 0.0f ? v : 0.0f;
        } else {
            float g = h[r * 2 * d_ff + c], u = h[r * 2 * d_ff + d_ff + c];
            v = g / (1.0f + expf(-g)) * u;
        }
        a[i] = __float2half_rn(v);
    }
}

extern "C" int tmoe_cuda_act(tmoe_act act, const float *h, int n, int d_ff, tmoe_f16 *a,
                             cudaStream_t stream, tmoe_error *err) {
    if (n <= 0) return TMOE_OK;
    k_act<<<grid_for((size_t)n * d_ff), 256, 0, stream>>>((int)act, h, n, d_ff,
                                                          reinterpret_cast<__half *>(a));
    TMOE_CUDA_LAUNCHED(stream, "act", err);
    return TMOE_OK;
}

__global__ void k_rmsnorm(const float *x, const float *w, int D, float eps, __half *y) {
    __shared__ float part[32];
    const int t = blockIdx.x;
    const float *r = x + (size_t)t * D;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) ss += r[i] * r[i];
#pragma unroll
    for (int o = 16; o; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.0f;
#pragma unroll
        for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (threadIdx.x == 0) part[0] = v;
    }
    __syncthreads();
    float inv = 1.0f / sqrtf(part[0] / D + eps);
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        y[(size_t)t * D + i] = __float2half_rn(r[i] * inv * w[i]);
}

extern "C" int tmoe_cuda_rmsnorm(const float *x, const float *w, int T, int D, float eps,
                                 tmoe_f16 *y, cudaStream_t stream, tmoe_error *err) {
    if (T <= 0) return TMOE_OK;
    k_rmsnorm<<<T, 256, 0, stream>>>(x, w, D, eps, reinterpret_cast<__half *>(y));
    TMOE_CUDA_LAUNCHED(stream, "rmsnorm", err);
    return TMOE_OK;
}

__global__ void k_to_f16(const float *x, size_t n, __half *y) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2half_rn(x[i]);
}

extern "C" int tmoe_cuda_to_f16(const float *x, size_t n, tmoe_f16 *y16, cudaStream_t stream,
                                tmoe_error *err) {
    if (!n) return TMOE_OK;
    k_to_f16<<<grid_for(n), 256, 0, stream>>>(x, n, reinterpret_cast<__half *>(y16));
    TMOE_CUDA_LAUNCHED(stream, "to_f16", err);
    return TMOE_OK;
}

__global__ void k_f16_to_bf16(const __half2 *x, size_t n2, __nv_bfloat162 *y) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n2;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float22bfloat162_rn(__half22float2(x[i]));
}

__global__ void k_f16_to_bf16_tail(const __half *x, __nv_bfloat16 *y) {
    *y = __float2bfloat16_rn(__half2float(*x));
}

extern "C" int tmoe_cuda_f16_to_bf16(const tmoe_f16 *x16, size_t n, tmoe_bf16 *ybf,
                                     cudaStream_t stream, tmoe_error *err) {
    if (!n) return TMOE_OK;
    if (((uintptr_t)x16 | (uintptr_t)ybf) % 4)
        return tmoe_errorf(err, TMOE_EINVAL, "f16_to_bf16: buffers must be 4-byte aligned");
    size_t n2 = n / 2;
    if (n2) {
        k_f16_to_bf16<<<grid_for(n2), 256, 0, stream>>>(reinterpret_cast<const __half2 *>(x16), n2,
                                                        reinterpret_cast<__nv_bfloat162 *>(ybf));
        TMOE_CUDA_LAUNCHED(stream, "f16_to_bf16", err);
    }
    if (n % 2) {
        k_f16_to_bf16_tail<<<1, 1, 0, stream>>>(reinterpret_cast<const __half *>(x16) + n - 1,
                                                reinterpret_cast<__nv_bfloat16 *>(ybf) + n - 1);
        TMOE_CUDA_LAUNCHED(stream, "f16_to_bf16 tail", err);
    }
    return TMOE_OK;
}

__global__ void k_add(float *x, const float *d, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] += d[i];
}

extern "C" int tmoe_cuda_add(float *x, const float *d, size_t n, cudaStream_t stream,
                             tmoe_error *err) {
    if (!n) return TMOE_OK;
    k_add<<<grid_for(n), 256, 0, stream>>>(x, d, n);
    TMOE_CUDA_LAUNCHED(stream, "add", err);
    return TMOE_OK;
}

/* one warp per (head, query row) */
__global__ void k_causal_softmax(const float *S, int H, int T, float scale, __half *P) {
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (row >= H * T) return;
    const int t = row % T;
    const float *s = S + (size_t)row * T;
    __half *p = P + (size_t)row * T;
    float mx = -INFINITY;
    for (int j = lane; j <= t; j += 32) mx = fmaxf(mx, s[j] * scale);
#pragma unroll
    for (int o = 16; o; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float den = 0.0f;
    for (int j = lane; j <= t; j += 32) den += expf(s[j] * scale - mx);
#pragma unroll
    for (int o = 16; o; o >>= 1) den += __shfl_xor_sync(0xffffffffu, den, o);
    for (int j = lane; j < T; j += 32)
        p[j] = __float2half_rn(j <= t ? expf(s[j] * scale - mx) / den : 0.0f);
}

extern "C" int tmoe_cuda_causal_softmax(const float *S, int H, int T, float scale, tmoe_f16 *P,
                                        cudaStream_t stream, tmoe_error *err) {
    if (T <= 0) return TMOE_OK;
    int warps = H * T;
    k_causal_softmax<<<(warps + 7) / 8, 256, 0, stream>>>(S, H, T, scale,
                                                          reinterpret_cast<__half *>(P));
    TMOE_CUDA_LAUNCHED(stream, "causal_softmax", err);
    return TMOE_OK;
}
