/* The launch check behind TMOE_CUDA_LAUNCHED (cuda_ops.h), shared by every kernel file. */
#include "common.cuh"

extern "C" int tmoe_cuda_check_launch(cudaStream_t stream, const char *file, int line,
                                      const char *what, tmoe_error *err) {
    cudaError_t ce = cudaGetLastError();
    if (ce != cudaSuccess)
        return tmoe_errorf(err, TMOE_EDEVICE, "%s:%d: launch of %s: %s", file, line, what,
                           cudaGetErrorString(ce));
#ifndef NDEBUG
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    ce = cudaStreamIsCapturing(stream, &cs);
    if (ce == cudaSuccess && cs == cudaStreamCaptureStatusNone) ce = cudaStreamSynchronize(stream);
    if (ce != cudaSuccess)
        return tmoe_errorf(err, TMOE_EDEVICE, "%s:%d: %s (debug sync): %s", file, line, what,
                           cudaGetErrorString(ce));
#else
    (void)stream;
#endif
    return TMOE_OK;
}
