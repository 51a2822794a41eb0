/* The launch check behind TMOE_CUDA_LAUNCHED (cuda_ops.h), shared by every kernel file, the
 * device's multiprocessor count that launch shapes depend on, and the upload every backend
 * uses. */
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

/* cudaMemcpy from pageable memory may return before its last DMA has landed (the CUDA
 * runtime's "API synchronization behavior"), and it runs on the legacy stream, which a
 * cudaStreamNonBlocking stream does not wait for: a kernel launched at once on such a stream
 * could read the tail of the copy before it arrives. The copy is ordered on the stream that
 * will read it, and finished before the host buffer may go. */
extern "C" int tmoe_cuda_upload(void *dst, const void *src, size_t n, cudaStream_t stream,
                                tmoe_error *err) {
    if (!n) return TMOE_OK;
    TMOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, stream), err);
    TMOE_CUDA_CHECK(cudaStreamSynchronize(stream), err);
    return TMOE_OK;
}
