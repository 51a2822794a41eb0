/* Device-side pseudo-random fills (a counter hash, no host round trip), so that multi-GB
 * weight banks for profiling are ready in milliseconds. Any byte is a valid packed q4/q2
 * group, so packed weights are random bytes. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "fill.h"

static __device__ uint32_t fill_mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

static __device__ float fill_unit(uint64_t seed, size_t i) {
    return (fill_mix(seed * 0x9e3779b97f4a7c15ULL + i) >> 8) * (1.0f / 16777216.0f);
}

__global__ void k_fill_u8(uint8_t *p, size_t n, uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        p[i] = (uint8_t)fill_mix(seed * 0x9e3779b97f4a7c15ULL + i);
}

__global__ void k_fill_h(__half *p, size_t n, float lo, float hi, uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        p[i] = __float2half_rn(lo + (hi - lo) * fill_unit(seed, i));
}

__global__ void k_fill_bf(__nv_bfloat16 *p, size_t n, float lo, float hi, uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        p[i] = __float2bfloat16_rn(lo + (hi - lo) * fill_unit(seed, i));
}

__global__ void k_fill_f(float *p, size_t n, float lo, float hi, uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        p[i] = lo + (hi - lo) * fill_unit(seed, i);
}

extern "C" int tmoe_cuda_fill_bytes(void *p, size_t n, uint64_t seed, cudaStream_t st,
                                    tmoe_error *err) {
    k_fill_u8<<<2048, 256, 0, st>>>((uint8_t *)p, n, seed);
    TMOE_CUDA_LAUNCHED(st, "k_fill_u8", err);
    return TMOE_OK;
}

extern "C" int tmoe_cuda_fill_f16(tmoe_f16 *p, size_t n, float lo, float hi, uint64_t seed,
                                  cudaStream_t st, tmoe_error *err) {
    k_fill_h<<<2048, 256, 0, st>>>((__half *)p, n, lo, hi, seed);
    TMOE_CUDA_LAUNCHED(st, "k_fill_h", err);
    return TMOE_OK;
}

extern "C" int tmoe_cuda_fill_bf16(tmoe_bf16 *p, size_t n, float lo, float hi, uint64_t seed,
                                   cudaStream_t st, tmoe_error *err) {
    k_fill_bf<<<2048, 256, 0, st>>>((__nv_bfloat16 *)p, n, lo, hi, seed);
    TMOE_CUDA_LAUNCHED(st, "k_fill_bf", err);
    return TMOE_OK;
}

extern "C" int tmoe_cuda_fill_f32(float *p, size_t n, float lo, float hi, uint64_t seed,
                                  cudaStream_t st, tmoe_error *err) {
    k_fill_f<<<2048, 256, 0, st>>>(p, n, lo, hi, seed);
    TMOE_CUDA_LAUNCHED(st, "k_fill_f", err);
    return TMOE_OK;
}
