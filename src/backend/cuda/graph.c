/* CUDA graphs of a step, captured on first use and replayed: shared by the block engine and
 * the decoder LM. */
#include "cuda_ops.h"

int tmoe_cuda_graph_run(cudaGraphExec_t *ge, cudaStream_t st,
                        int (*enqueue)(void *ctx, tmoe_error *err), void *ctx, tmoe_error *err) {
    if (!*ge) {
        cudaGraph_t g = NULL;
        TMOE_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), err);
        int rc = enqueue(ctx, err);
        cudaError_t ce = cudaStreamEndCapture(st, &g);
        if (rc) {
            /* the capture's error is the one to report */
            if (g) TMOE_CUDA_WARN(cudaGraphDestroy(g));
            return rc;
        }
        if (ce != cudaSuccess)
            return tmoe_errorf(err, TMOE_EDEVICE, "%s:%d: cudaStreamEndCapture: %s", __FILE__,
                               __LINE__, cudaGetErrorString(ce));
        ce = cudaGraphInstantiate(ge, g, 0);
        if (ce != cudaSuccess) {
            *ge = NULL;
            TMOE_CUDA_WARN(cudaGraphDestroy(g));
            return tmoe_errorf(err, TMOE_EDEVICE, "%s:%d: cudaGraphInstantiate: %s", __FILE__,
                               __LINE__, cudaGetErrorString(ce));
        }
        TMOE_CUDA_CHECK(cudaGraphDestroy(g), err); /* *ge stays: the owner frees it */
    }
    TMOE_CUDA_CHECK(cudaGraphLaunch(*ge, st), err);
    return TMOE_OK;
}
