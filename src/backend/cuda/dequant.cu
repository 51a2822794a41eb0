/* dequant_unpack: packed q4/q2 expert weights -> fp16 in memory, the unfused impl's own
 * kernel (contract in cuda_ops.h). */
#include "common.cuh"

/* ---- dequant_unpack ----------------------------------------------------------------------
 * One thread per packed 32-bit word (8 q4 / 16 q2 weights), so a warp reads 128 contiguous
 * bytes and writes 512 (q4) or 1024 (q2); one scale per word when the group covers it. */
template <int WT>
__global__ void k_dequant(const uint8_t *w, const __half *sc, size_t w_stride, size_t s_stride,
                          int out, int in, int group, const int32_t *experts, const int32_t *counts,
                          __half *w16) {
    const int slot = blockIdx.y;
    if (counts && counts[experts[slot]] == 0) return;
    constexpr int EPW = WT == 1 ? 8 : 16; /* elements per word */
    const size_t words_per_row = (size_t)in / EPW;
    const size_t nwords = (size_t)out * words_per_row;
    const int ng = in / group;
    const uint32_t *wb = reinterpret_cast<const uint32_t *>(w + (size_t)slot * w_stride);
    const __half *sb = sc + (size_t)slot * s_stride;
    __half *ob = w16 + (size_t)slot * out * in;
    for (size_t c = (size_t)blockIdx.x * blockDim.x + threadIdx.x; c < nwords;
         c += (size_t)gridDim.x * blockDim.x) {
        size_t row = c / words_per_row;
        int e0 = (int)(c - row * words_per_row) * EPW;
        uint32_t pw = __ldg(wb + c);
        uint4 *dst = reinterpret_cast<uint4 *>(ob + row * in + e0);
        const __half *srow = sb + row * ng;
        if (group % EPW == 0) {
            __half2 s2 = __half2half2(srow[e0 / group]);
            if (WT == 1) {
                uint32_t R[4];
                deq_q4(pw, s2, R); /* R[j] = (e_j, e_{j+4}) -> natural order */
                uint4 o;
                o.x = __byte_perm(R[0], R[1], 0x5410);
                o.y = __byte_perm(R[2], R[3], 0x5410);
                o.z = __byte_perm(R[0], R[1], 0x7632);
                o.w = __byte_perm(R[2], R[3], 0x7632);
                dst[0] = o;
            } else {
                uint32_t R[8];
                deq_q2(pw, s2, R); /* R[j] = (e_j, e_{j+8}) */
                uint4 o0, o1;
                o0.x = __byte_perm(R[0], R[1], 0x5410);
                o0.y = __byte_perm(R[2], R[3], 0x5410);
                o0.z = __byte_perm(R[4], R[5], 0x5410);
                o0.w = __byte_perm(R[6], R[7], 0x5410);
                o1.x = __byte_perm(R[0], R[1], 0x7632);
                o1.y = __byte_perm(R[2], R[3], 0x7632);
                o1.z = __byte_perm(R[4], R[5], 0x7632);
                o1.w = __byte_perm(R[6], R[7], 0x7632);
                dst[0] = o0;
                dst[1] = o1;
            }
        } else {
            __half *od = ob + row * in + e0;
            const int bits = WT == 1 ? 4 : 2;
            for (int j = 0; j < EPW; j++) {
                unsigned u = (pw >> (j * bits)) & ((1u << bits) - 1);
                int v = (int)(u ^ (1u << (bits - 1))) - (1 << (bits - 1));
                od[j] = __hmul(__int2half_rn(v), srow[(e0 + j) / group]);
            }
        }
    }
}

extern "C" int tmoe_cuda_dequant_unpack(const tmoe_cuda_lin *L, int n_experts,
                                        const int32_t *experts, const int32_t *counts,
                                        tmoe_f16 *w16, cudaStream_t stream, tmoe_error *err) {
    if (!tmoe_etype_is_quant(L->type))
        return tmoe_errorf(err, TMOE_EINVAL, "dequant_unpack of an %s linear",
                           tmoe_etype_name(L->type));
    int epc = L->type == TMOE_ET_Q4 ? 8 : 16;
    if (L->in % epc)
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "dequant_unpack: input dim %d must be a multiple of %d for %s", L->in,
                           epc, tmoe_etype_name(L->type));
    if (n_experts <= 0) return TMOE_OK;
    size_t nwords = (size_t)L->out * L->in / epc;
    size_t nb = (nwords + 255) / 256;
    int blocks = (int)(nb > 65535 ? 65535 : nb);
    dim3 grid(blocks, n_experts);
    const uint8_t *w = static_cast<const uint8_t *>(L->w);
    const __half *sc = reinterpret_cast<const __half *>(L->scales);
    __half *o = reinterpret_cast<__half *>(w16);
    if (L->type == TMOE_ET_Q4)
        k_dequant<1><<<grid, 256, 0, stream>>>(w, sc, L->w_stride, L->s_stride, L->out, L->in,
                                               L->group, experts, counts, o);
    else
        k_dequant<2><<<grid, 256, 0, stream>>>(w, sc, L->w_stride, L->s_stride, L->out, L->in,
                                               L->group, experts, counts, o);
    TMOE_CUDA_LAUNCHED(stream, "dequant_unpack", err);
    return TMOE_OK;
}
