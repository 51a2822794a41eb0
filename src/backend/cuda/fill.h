/* Private: pseudo-random fills on the device (counter hash of seed and index), for weights
 * and inputs that need no host round trip. */
#ifndef THERMOE_CUDA_FILL_H
#define THERMOE_CUDA_FILL_H

#include "cuda_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes, or fp16 / bf16 / fp32 uniform in [lo, hi), enqueued on st. */
int tmoe_cuda_fill_bytes(void *p, size_t n, uint64_t seed, cudaStream_t st, tmoe_error *err);
int tmoe_cuda_fill_f16(tmoe_f16 *p, size_t n, float lo, float hi, uint64_t seed, cudaStream_t st,
                       tmoe_error *err);
int tmoe_cuda_fill_bf16(tmoe_bf16 *p, size_t n, float lo, float hi, uint64_t seed, cudaStream_t st,
                        tmoe_error *err);
int tmoe_cuda_fill_f32(float *p, size_t n, float lo, float hi, uint64_t seed, cudaStream_t st,
                       tmoe_error *err);

#ifdef __cplusplus
}
#endif
#endif
