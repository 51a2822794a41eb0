/* The decoder LM's CUDA entry points in a build without the CUDA backend: each says how to
 * get it (the real ones are in src/backend/cuda/lm_cuda.c). */
#include "thermoe/backend.h"

#ifndef THERMOE_HAVE_CUDA
#define NO_CUDA                                                                                    \
    "this thermoe was built without CUDA: rebuild with -DTHERMOE_CUDA=ON on a machine with nvcc"

int tmoe_cuda_lm_create(const tmoe_lm *m, const tmoe_cuda_lm_config *cfg, tmoe_cuda_lm **out,
                        tmoe_error *err) {
    (void)m;
    (void)cfg;
    *out = NULL;
    return tmoe_errorf(err, TMOE_ENOTSUP, "%s", NO_CUDA);
}
void tmoe_cuda_lm_free(tmoe_cuda_lm *r) {
    (void)r;
}
int tmoe_cuda_lm_seq_open(tmoe_cuda_lm *r, int *slot, tmoe_error *err) {
    (void)r;
    *slot = -1;
    return tmoe_errorf(err, TMOE_ENOTSUP, "%s", NO_CUDA);
}
void tmoe_cuda_lm_seq_close(tmoe_cuda_lm *r, int slot) {
    (void)r;
    (void)slot;
}
int tmoe_cuda_lm_seq_len(const tmoe_cuda_lm *r, int slot) {
    (void)r;
    (void)slot;
    return -1;
}
int tmoe_cuda_lm_forward(tmoe_cuda_lm *r, const tmoe_lm_batch *b, float *logits, tmoe_error *err) {
    (void)r;
    (void)b;
    (void)logits;
    return tmoe_errorf(err, TMOE_ENOTSUP, "%s", NO_CUDA);
}
const int32_t *tmoe_cuda_lm_expert_counts(const tmoe_cuda_lm *r) {
    (void)r;
    return NULL;
}
int tmoe_cuda_lm_fast_experts(const tmoe_cuda_lm *r, int layer) {
    (void)r;
    (void)layer;
    return -1;
}
size_t tmoe_cuda_lm_weight_bytes(const tmoe_cuda_lm *r) {
    (void)r;
    return 0;
}
size_t tmoe_cuda_lm_kv_bytes(const tmoe_cuda_lm *r) {
    (void)r;
    return 0;
}
int tmoe_cuda_lm_shadow_sets(const tmoe_cuda_lm *r) {
    (void)r;
    return 0;
}
size_t tmoe_cuda_lm_shadow_bytes(const tmoe_cuda_lm *r) {
    (void)r;
    return 0;
}
#else
typedef int tmoe_lm_cuda_stub_unused; /* ISO C forbids an empty translation unit */
#endif
