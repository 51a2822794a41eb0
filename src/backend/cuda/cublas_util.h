/* Private: cuBLAS helpers shared by the CUDA backend and its isolated-op runner. */
#ifndef THERMOE_CUBLAS_UTIL_H
#define THERMOE_CUBLAS_UTIL_H

#include <cublas_v2.h>

#include "cuda_ops.h"

/* Check a cuBLAS call: on failure fill err with file:line, the call and cuBLAS's status
 * string and return TMOE_EDEVICE from the enclosing function. */
#define CB_CHECK(call, err)                                                                        \
    do {                                                                                           \
        cublasStatus_t cs_ = (call);                                                               \
        if (cs_ != CUBLAS_STATUS_SUCCESS)                                                          \
            return tmoe_errorf((err), TMOE_EDEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,    \
                               cublasGetStatusString(cs_));                                        \
    } while (0)

/* A cuBLAS call in teardown: on failure log a warning and go on (see TMOE_CUDA_WARN). */
#define CB_WARN(call)                                                                              \
    do {                                                                                           \
        cublasStatus_t cs_ = (call);                                                               \
        if (cs_ != CUBLAS_STATUS_SUCCESS)                                                          \
            tmoe_log(TMOE_LOG_WARN, "%s:%d: %s: %s", __FILE__, __LINE__, #call,                    \
                     cublasGetStatusString(cs_));                                                  \
    } while (0)

/* Return from the enclosing function when expr gives a non-zero tmoe_code. */
#define TRY(expr)                                                                                  \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_) return rc_;                                                                       \
    } while (0)

/* y (n, out) fp32 = x (n, in) fp16 . W^T, W (out, in) fp16 row-major, on cb's stream. */
static inline int tmoe_cublas_gemm_f16(cublasHandle_t cb, const tmoe_f16 *x, const tmoe_f16 *W,
                                       int n, int in, int out, float *y, tmoe_error *err) {
    const float one = 1.0f, zero = 0.0f;
    CB_CHECK(cublasGemmEx(cb, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, W, CUDA_R_16F, in, x,
                          CUDA_R_16F, in, &zero, y, CUDA_R_32F, out, CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT),
             err);
    return TMOE_OK;
}

/* y (n, out) fp32 = x (n, in) bf16 . W^T, W (out, in) bf16 row-major, on cb's stream. */
static inline int tmoe_cublas_gemm_bf16(cublasHandle_t cb, const tmoe_bf16 *x, const tmoe_bf16 *W,
                                        int n, int in, int out, float *y, tmoe_error *err) {
    const float one = 1.0f, zero = 0.0f;
    CB_CHECK(cublasGemmEx(cb, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, W, CUDA_R_16BF, in, x,
                          CUDA_R_16BF, in, &zero, y, CUDA_R_32F, out, CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT),
             err);
    return TMOE_OK;
}

#endif
