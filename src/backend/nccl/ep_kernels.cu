/* Kernels of the expert-parallel CUDA backend (contracts in ep_ops.h). */
#include "ep_ops.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

/* One row: d (D fp16) = s (D fp32). */
static __device__ void row_to_f16(const float *s, __half *d, int D) {
    if (D % 4 == 0) {
        for (int i = threadIdx.x * 4; i < D; i += blockDim.x * 4) {
            float4 v = *reinterpret_cast<const float4 *>(s + i);
            *reinterpret_cast<__half2 *>(d + i) = __floats2half2_rn(v.x, v.y);
            *reinterpret_cast<__half2 *>(d + i + 2) = __floats2half2_rn(v.z, v.w);
        }
    } else {
        for (int i = threadIdx.x; i < D; i += blockDim.x) d[i] = __float2half_rn(s[i]);
    }
}

__global__ void k_ungroup_f16(const float *ye, const int32_t *to_grouped, int D, __half *ret) {
    const int r = blockIdx.x;
    row_to_f16(ye + (size_t)to_grouped[r] * D, ret + (size_t)r * D, D);
}

__global__ void k_scatter_f16(const float *ye, const int32_t *idx, int D, __half *ret) {
    const int r = blockIdx.x;
    row_to_f16(ye + (size_t)r * D, ret + (size_t)idx[r] * D, D);
}

extern "C" int tmoe_cuda_scatter_f16(const float *ye, const int32_t *idx, int n, int D,
                                     tmoe_f16 *ret, cudaStream_t stream, tmoe_error *err) {
    if (n <= 0) return TMOE_OK;
    k_scatter_f16<<<n, 128, 0, stream>>>(ye, idx, D, reinterpret_cast<__half *>(ret));
    TMOE_CUDA_LAUNCHED(stream, "scatter_f16", err);
    return TMOE_OK;
}

extern "C" int tmoe_cuda_ungroup_f16(const float *ye, const int32_t *to_grouped, int n, int D,
                                     tmoe_f16 *ret, cudaStream_t stream, tmoe_error *err) {
    if (n <= 0) return TMOE_OK;
    k_ungroup_f16<<<n, 128, 0, stream>>>(ye, to_grouped, D, reinterpret_cast<__half *>(ret));
    TMOE_CUDA_LAUNCHED(stream, "ungroup_f16", err);
    return TMOE_OK;
}

__global__ void k_combine_f16(const __half *ret, const int32_t *pos, const float *w,
                              const float *resid, int k, int D, float *y) {
    const int t = blockIdx.x;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < k; j++)
            acc += w[t * k + j] * __half2float(ret[(size_t)pos[t * k + j] * D + i]);
        if (resid) acc += resid[(size_t)t * D + i];
        y[(size_t)t * D + i] = acc;
    }
}

extern "C" int tmoe_cuda_combine_f16(const tmoe_f16 *ret, const int32_t *pos, const float *w,
                                     const float *resid, int T, int k, int D, float *y,
                                     cudaStream_t stream, tmoe_error *err) {
    if (T <= 0) return TMOE_OK;
    k_combine_f16<<<T, 256, 0, stream>>>(reinterpret_cast<const __half *>(ret), pos, w, resid, k, D,
                                         y);
    TMOE_CUDA_LAUNCHED(stream, "combine_f16", err);
    return TMOE_OK;
}
