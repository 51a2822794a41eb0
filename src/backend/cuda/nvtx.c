/* NVTX ranges (header-only NVTX3: the profiler's injection library is loaded only when a
 * profiler is attached, so this costs nothing otherwise). */
#include <nvtx3/nvToolsExt.h>

void tmoe_cuda_nvtx_push(const char *name);
void tmoe_cuda_nvtx_pop(void);

void tmoe_cuda_nvtx_push(const char *name) {
    nvtxRangePushA(name);
}
void tmoe_cuda_nvtx_pop(void) {
    nvtxRangePop();
}
