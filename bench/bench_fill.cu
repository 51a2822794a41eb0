/* Benchmark helper: fill device buffers with hashed pseudo-random data (no host round trip,
 * so multi-GB weight banks are ready in milliseconds). */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

static __device__ uint32_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

__global__ void k_fill_bytes(uint8_t *p, size_t n, uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = (uint8_t)mix(seed * 0x9e3779b97f4a7c15ULL + i);
}

__global__ void k_fill_f16(__half *p, size_t n, float lo, float hi, uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float u = (mix(seed * 0x9e3779b97f4a7c15ULL + i) >> 8) * (1.0f / 16777216.0f);
        p[i] = __float2half_rn(lo + (hi - lo) * u);
    }
}

extern "C" int bench_fill_bytes(void *p, size_t n, uint64_t seed) {
    k_fill_bytes<<<4096, 256>>>((uint8_t *)p, n, seed);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

extern "C" int bench_fill_f16(void *p, size_t n, float lo, float hi, uint64_t seed) {
    k_fill_f16<<<4096, 256>>>((__half *)p, n, lo, hi, seed);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

__global__ void k_fill_f32(float *p, size_t n, float lo, float hi, uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float u = (mix(seed * 0x9e3779b97f4a7c15ULL + i) >> 8) * (1.0f / 16777216.0f);
        p[i] = lo + (hi - lo) * u;
    }
}

extern "C" int bench_fill_f32(float *p, size_t n, float lo, float hi, uint64_t seed) {
    k_fill_f32<<<4096, 256>>>(p, n, lo, hi, seed);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
