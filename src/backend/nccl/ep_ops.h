/* Private: kernels of the expert-parallel CUDA backend (the row moves around the all-to-alls
 * that the dispatch plan does not get from the single-device kernels). Packing the send
 * rows and grouping the received rows by expert are tmoe_cuda_gather (cuda_ops.h) with the
 * plan's index arrays. */
#ifndef THERMOE_EP_OPS_H
#define THERMOE_EP_OPS_H

#include "../cuda/cuda_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ungroup: ret (n, D) fp16 row i = fp16(ye row to_grouped[i]), ye (n, D) fp32. */
int tmoe_cuda_ungroup_f16(const float *ye, const int32_t *to_grouped, int n, int D, tmoe_f16 *ret,
                          cudaStream_t stream, tmoe_error *err);

/* scatter: ret row idx[r] = fp16(ye row r) for r < n (the ungroup of one expert's rows). */
int tmoe_cuda_scatter_f16(const float *ye, const int32_t *idx, int n, int D, tmoe_f16 *ret,
                          cudaStream_t stream, tmoe_error *err);

/* combine of returned rows: y (T, D) = resid + sum_{j<k} w[t,j] ret[pos[t k + j]] in slot
 * order (the order of tmoe_cuda_combine), ret fp16; resid may be NULL. */
int tmoe_cuda_combine_f16(const tmoe_f16 *ret, const int32_t *pos, const float *w,
                          const float *resid, int T, int k, int D, float *y, cudaStream_t stream,
                          tmoe_error *err);

#ifdef __cplusplus
}
#endif
#endif
