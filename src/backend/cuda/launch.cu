/* The launch check behind TMOE_CUDA_LAUNCHED (cuda_ops.h), shared by every kernel file, and
 * the device's multiprocessor count that launch shapes depend on. */
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

extern "C" int tmoe_cuda_sm_count(int device, int *sms, tmoe_error *err) {
    int n = 0;
    TMOE_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device), err);
    if (n < 1)
        return tmoe_errorf(err, TMOE_EDEVICE, "device %d reports %d multiprocessors", device, n);
    *sms = n;
    return TMOE_OK;
}
