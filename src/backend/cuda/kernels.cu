/* CUDA kernels of the backend and their plain-C launchers (contracts in cuda_ops.h).
 * Numerics follow the CPU reference: fp16 operands, fp32 accumulation, fp16 activations. */
#include "cuda_ops.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

/* ---- launch checking -------------------------------------------------------------- */
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

/* ---- small helpers -------------------------------------------------------------------- */
static __device__ __forceinline__ uint4 ld_stream(const void *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

static __device__ __forceinline__ void mma16816(float c[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                                uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ uint32_t h2u(__half2 h) { return *reinterpret_cast<uint32_t *>(&h); }
static __device__ __forceinline__ __half2 u2h(uint32_t u) { return *reinterpret_cast<__half2 *>(&u); }

/* q4 word (8 elements) -> 4 half2 (e_j, e_{j+4}) * scale, j = 0..3 */
static __device__ __forceinline__ void deq_q4(uint32_t w, __half2 s2, uint32_t o[4]) {
    w ^= 0x88888888u;
    const __half2 off = __half2half2(__ushort_as_half((unsigned short)0x6408)); /* 1032 */
#pragma unroll
    for (int j = 0; j < 4; j++) {
        uint32_t p = ((w >> (4 * j)) & 0x000f000fu) | 0x64006400u;
        o[j] = h2u(__hmul2(__hsub2(u2h(p), off), s2));
    }
}

/* q4 word -> 4 half2 of the exact integers (e_j, e_{j+4}), j = 0..3 */
static __device__ __forceinline__ void deq_q4_int(uint32_t w, uint32_t o[4]) {
    w ^= 0x88888888u;
    const __half2 off = __half2half2(__ushort_as_half((unsigned short)0x6408)); /* 1032 */
#pragma unroll
    for (int j = 0; j < 4; j++) {
        uint32_t p = ((w >> (4 * j)) & 0x000f000fu) | 0x64006400u;
        o[j] = h2u(__hsub2(u2h(p), off));
    }
}

/* q2 word (16 elements) -> 8 half2 (e_j, e_{j+8}) * scale, j = 0..7 */
static __device__ __forceinline__ void deq_q2(uint32_t w, __half2 s2, uint32_t o[8]) {
    w ^= 0xAAAAAAAAu;
    const __half2 off = __half2half2(__ushort_as_half((unsigned short)0x6402)); /* 1026 */
#pragma unroll
    for (int j = 0; j < 8; j++) {
        uint32_t p = ((w >> (2 * j)) & 0x00030003u) | 0x64006400u;
        o[j] = h2u(__hmul2(__hsub2(u2h(p), off), s2));
    }
}

/* ---- expert linear: the bandwidth kernel ------------------------------------------------
 * Block = W warps = 2 row tiles of 16 rows (rows r0.. and r0+16.., or gate and up rows with
 * swiglu) x all K, split over the warps (each a contiguous range of k-blocks). A k-block is 64
 * bytes of every row: 32 fp16, 128 q4 or 256 q2 weights; lane (g, q) loads 16 bytes at byte
 * 16 q of rows g and g+8 of each tile. The reduction order inside a k-block is free, so the
 * lane's contiguous weights become its A fragment, and x is loaded (and for q4/q2 permuted)
 * to match as the B fragment: token g of the 8-token tile. Tokens run in tiles of 8, NT tiles
 * (up to 64 tokens) per pass over the weights. Partial sums of the 8 warps meet in shared
 * memory in a fixed order (deterministic). W warps a block (8 or 16). */
#define EXP_MAXNT 8

struct exp_args {
    const uint8_t *w;
    const __half *sc;
    size_t w_stride, s_stride;
    int in, group, out_rows, gate_off, epi, wt; /* wt: 0 fp16, 1 q4, 2 q2 */
    int tiled;                                  /* weights in the tiled layout */
    const int32_t *experts, *counts, *offsets;
    const int32_t *active, *slot_of;            /* active experts list, expert -> slot */
    const __half *x;
    const int32_t *src;
    int k;
    float *y32;
    __half *y16;
};

template <int WT, int NT, int W>
static __device__ void exp_body(const exp_args &a, int slot, int e, int n, int row0, int tok0,
                                float *red) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    const int off = a.offsets[e];
    const int in = a.in;
    constexpr bool Q4 = WT == 1 || WT == 3;
    const int nkb = in / (WT == 0 ? 32 : Q4 ? 128 : 256);
    const size_t rowbytes = WT == 0 ? (size_t)in * 2 : Q4 ? (size_t)in / 2 : (size_t)in / 4;
    const uint8_t *wbase = a.w + (size_t)slot * a.w_stride;
    /* rows of the two tiles for this lane: [tile][half] */
    int rows[2][2];
    const int swiglu = a.epi == TMOE_CUDA_EPI_SWIGLU;
#pragma unroll
    for (int t = 0; t < 2; t++)
#pragma unroll
        for (int h = 0; h < 2; h++)
            rows[t][h] = (swiglu ? (t ? a.gate_off : 0) + row0 : row0 + 16 * t) + g + 8 * h;
    /* row-major: 64-byte pieces of 8 rows per load; tiled: 512 contiguous bytes per load */
    const uint8_t *wrow[2][2];
    const size_t kstride = a.tiled ? 1024 : 64;
#pragma unroll
    for (int t = 0; t < 2; t++)
#pragma unroll
        for (int h = 0; h < 2; h++)
            wrow[t][h] = a.tiled ? wbase + (size_t)(rows[t][0] >> 4) * nkb * 1024 + h * 512 + lane * 16
                                 : wbase + (size_t)rows[t][h] * rowbytes + 16 * q;
    const __half *xrow[NT];
    bool xval[NT];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        int r = tok0 + nt * 8 + g;
        xval[nt] = r < n;
        int rr = xval[nt] ? r : 0;
        size_t xr = a.src ? (size_t)(a.src[off + rr] / a.k) : (size_t)(off + rr);
        xrow[nt] = a.x + xr * in;
    }
    float acc[2][NT][4];
#pragma unroll
    for (int t = 0; t < 2; t++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int c = 0; c < 4; c++) acc[t][nt][c] = 0.0f;

    const int ng = in / (a.group > 0 ? a.group : 1);
    const __half *sbase = a.sc ? a.sc + (size_t)slot * a.s_stride : nullptr;
    /* fp16: 4 k-blocks a step; q4/q2: software-pipelined, the next step's loads are issued
     * before this step's dequantization and mma */
    constexpr int U = WT == 0 ? 4 : WT == 2 ? 1 : 2;
    constexpr bool PIPE = WT != 0;
    /* warp w owns the contiguous k-blocks [kb_lo, kb_hi) */
    const int per = (nkb + W - 1) / W;
    const int kb_lo = warp * per, kb_hi = min(nkb, kb_lo + per);
    auto load = [&](int kb0, uint4(&A)[U][2][2], uint32_t(&S)[U][2][2]) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            int kb = kb0 + u;
            bool ok = kb < kb_hi;
#pragma unroll
            for (int t = 0; t < 2; t++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    A[u][t][h] = ok ? ld_stream(wrow[t][h] + (size_t)kb * kstride) : make_uint4(0, 0, 0, 0);
                    if (WT != 0) {
                        int elem = kb * (Q4 ? 128 : 256) + q * (Q4 ? 32 : 64);
                        unsigned short sv = ok ? __ldg(reinterpret_cast<const unsigned short *>(
                                                     sbase + (size_t)rows[t][h] * ng + elem / a.group))
                                               : (unsigned short)0;
                        S[u][t][h] = (uint32_t)sv | ((uint32_t)sv << 16);
                    }
                }
        }
    };
    uint4 An[U][2][2];
    uint32_t Sn[U][2][2];
    if (PIPE && kb_lo < kb_hi) load(kb_lo, An, Sn);
    for (int kb0 = kb_lo; kb0 < kb_hi; kb0 += U) {
        uint4 A[U][2][2];
        uint32_t S[U][2][2];
        if (PIPE) {
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int t = 0; t < 2; t++)
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        A[u][t][h] = An[u][t][h];
                        S[u][t][h] = Sn[u][t][h];
                    }
            if (kb0 + U < kb_hi) load(kb0 + U, An, Sn);
        } else {
            load(kb0, A, S);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            int kb = kb0 + u;
            if (kb >= kb_hi) break;
            if (WT == 0) {
                int xe = kb * 32 + q * 8;
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    uint4 X = xval[nt] ? __ldg(reinterpret_cast<const uint4 *>(xrow[nt] + xe))
                                       : make_uint4(0, 0, 0, 0);
#pragma unroll
                    for (int t = 0; t < 2; t++) {
                        mma16816(acc[t][nt], A[u][t][0].x, A[u][t][1].x, A[u][t][0].y,
                                 A[u][t][1].y, X.x, X.y);
                        mma16816(acc[t][nt], A[u][t][0].z, A[u][t][1].z, A[u][t][0].w,
                                 A[u][t][1].w, X.z, X.w);
                    }
                }
            } else if (Q4) {
                /* 4 words per row: word i holds elements 8i..8i+7 of the lane's 32. WT 3: the
                 * group spans the k-block, so the mma runs on the exact integers and the row
                 * scale multiplies the k-block's fp32 partial sums. */
                constexpr int NTP = WT == 3 ? NT : 1;
                float tmp[2][NTP][4];
                if (WT == 3) {
#pragma unroll
                    for (int t = 0; t < 2; t++)
#pragma unroll
                        for (int nt = 0; nt < NTP; nt++)
#pragma unroll
                            for (int c = 0; c < 4; c++) tmp[t][nt][c] = 0.0f;
                }
                constexpr int XP = NT <= 2 ? NT : 1; /* x prefetched for small token tiles */
                uint4 Xp[4][XP];
                if (NT <= 2) {
#pragma unroll
                    for (int i = 0; i < 4; i++)
#pragma unroll
                        for (int nt = 0; nt < XP; nt++)
                            Xp[i][nt] = xval[nt] ? __ldg(reinterpret_cast<const uint4 *>(
                                                       xrow[nt] + kb * 128 + q * 32 + i * 8))
                                                 : make_uint4(0, 0, 0, 0);
                }
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    uint32_t R[2][2][4];
#pragma unroll
                    for (int t = 0; t < 2; t++)
#pragma unroll
                        for (int h = 0; h < 2; h++) {
                            uint32_t wd = i == 0 ? A[u][t][h].x : i == 1 ? A[u][t][h].y
                                        : i == 2 ? A[u][t][h].z : A[u][t][h].w;
                            if (WT == 3) deq_q4_int(wd, R[t][h]);
                            else deq_q4(wd, u2h(S[u][t][h]), R[t][h]);
                        }
                    int xe = kb * 128 + q * 32 + i * 8;
#pragma unroll
                    for (int nt = 0; nt < NT; nt++) {
                        uint4 X;
                        if (NT <= 2) X = Xp[i][nt < XP ? nt : 0];
                        else X = xval[nt] ? __ldg(reinterpret_cast<const uint4 *>(xrow[nt] + xe))
                                          : make_uint4(0, 0, 0, 0);
                        uint32_t b0 = __byte_perm(X.x, X.z, 0x5410), b1 = __byte_perm(X.x, X.z, 0x7632);
                        uint32_t b2 = __byte_perm(X.y, X.w, 0x5410), b3 = __byte_perm(X.y, X.w, 0x7632);
#pragma unroll
                        for (int t = 0; t < 2; t++) {
                            float *c = WT == 3 ? tmp[t][nt < NTP ? nt : 0] : acc[t][nt];
                            mma16816(c, R[t][0][0], R[t][1][0], R[t][0][1], R[t][1][1], b0, b1);
                            mma16816(c, R[t][0][2], R[t][1][2], R[t][0][3], R[t][1][3], b2, b3);
                        }
                    }
                }
                if (WT == 3) {
#pragma unroll
                    for (int t = 0; t < 2; t++) {
                        float s0 = __half2float(__ushort_as_half((unsigned short)(S[u][t][0] & 0xffffu)));
                        float s1 = __half2float(__ushort_as_half((unsigned short)(S[u][t][1] & 0xffffu)));
#pragma unroll
                        for (int nt = 0; nt < NT; nt++) {
                            acc[t][nt][0] += tmp[t][nt < NTP ? nt : 0][0] * s0;
                            acc[t][nt][1] += tmp[t][nt < NTP ? nt : 0][1] * s0;
                            acc[t][nt][2] += tmp[t][nt < NTP ? nt : 0][2] * s1;
                            acc[t][nt][3] += tmp[t][nt < NTP ? nt : 0][3] * s1;
                        }
                    }
                }
            } else {
                /* 4 words per row: word i holds elements 16i..16i+15 of the lane's 64 */
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    uint32_t R[2][2][8];
#pragma unroll
                    for (int t = 0; t < 2; t++)
#pragma unroll
                        for (int h = 0; h < 2; h++) {
                            uint32_t wd = i == 0 ? A[u][t][h].x : i == 1 ? A[u][t][h].y
                                        : i == 2 ? A[u][t][h].z : A[u][t][h].w;
                            deq_q2(wd, u2h(S[u][t][h]), R[t][h]);
                        }
                    int xe = kb * 256 + q * 64 + i * 16;
#pragma unroll
                    for (int nt = 0; nt < NT; nt++) {
                        uint4 X0 = make_uint4(0, 0, 0, 0), X1 = X0;
                        if (xval[nt]) {
                            X0 = __ldg(reinterpret_cast<const uint4 *>(xrow[nt] + xe));
                            X1 = __ldg(reinterpret_cast<const uint4 *>(xrow[nt] + xe + 8));
                        }
                        uint32_t Xm[8] = {X0.x, X0.y, X0.z, X0.w, X1.x, X1.y, X1.z, X1.w};
                        uint32_t B[8];
#pragma unroll
                        for (int m = 0; m < 4; m++) {
                            B[2 * m] = __byte_perm(Xm[m], Xm[m + 4], 0x5410);
                            B[2 * m + 1] = __byte_perm(Xm[m], Xm[m + 4], 0x7632);
                        }
#pragma unroll
                        for (int t = 0; t < 2; t++)
#pragma unroll
                            for (int j = 0; j < 4; j++)
                                mma16816(acc[t][nt], R[t][0][2 * j], R[t][1][2 * j],
                                         R[t][0][2 * j + 1], R[t][1][2 * j + 1], B[2 * j],
                                         B[2 * j + 1]);
                    }
                }
            }
        }
    }

    /* deterministic split-K reduction and epilogue, one token tile at a time */
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
#pragma unroll
        for (int t = 0; t < 2; t++)
#pragma unroll
            for (int c = 0; c < 4; c++) red[(warp * 8 + t * 4 + c) * 32 + lane] = acc[t][nt][c];
        __syncthreads();
        const int tid = threadIdx.x, l = tid & 31, r = tid >> 5;
        const int gg = l >> 2, qq = l & 3;
        if (swiglu) {
            if (r < 4) {
                float gs = 0.0f, us = 0.0f;
                for (int w = 0; w < W; w++) {
                    gs += red[(w * 8 + r) * 32 + l];
                    us += red[(w * 8 + 4 + r) * 32 + l];
                }
                int row = row0 + gg + (r >= 2 ? 8 : 0);
                int tok = tok0 + nt * 8 + 2 * qq + (r & 1);
                if (tok < n) {
                    float sv = gs / (1.0f + expf(-gs));
                    a.y16[(size_t)(off + tok) * a.out_rows + row] = __float2half_rn(sv * us);
                }
            }
        } else if (r < 8) {
            float s = 0.0f;
            for (int w = 0; w < W; w++) s += red[(w * 8 + r) * 32 + l];
            int t = r >> 2, c = r & 3;
            int row = row0 + 16 * t + gg + (c >= 2 ? 8 : 0);
            int tok = tok0 + nt * 8 + 2 * qq + (c & 1);
            if (tok < n) {
                size_t o = (size_t)(off + tok) * a.out_rows + row;
                if (a.epi == TMOE_CUDA_EPI_RELU)
                    a.y16[o] = __float2half_rn(s > 0.0f ? s : 0.0f);
                else
                    a.y32[o] = s;
            }
        }
        __syncthreads();
    }
}

template <int WT, int NT, int W>
__global__ void __launch_bounds__(W * 32, NT <= 2 && W == 8 ? 2 : 1) k_expert_linear(exp_args a) {
    __shared__ float red[W * 8 * 32];
    int slot, e;
    if (a.active) {
        if ((int)blockIdx.y >= a.active[0]) return;
        e = a.active[1 + blockIdx.y];
        slot = a.slot_of ? a.slot_of[e] : e;
        if (slot < 0) return;
    } else {
        slot = blockIdx.y;
        e = a.experts[slot];
    }
    const int n = a.counts[e];
    if (n == 0) return;
    const int rows_per_block = a.epi == TMOE_CUDA_EPI_SWIGLU ? 16 : 32;
    const int row0 = blockIdx.x * rows_per_block;
    for (int tok0 = 0; tok0 < n; tok0 += 8 * NT) exp_body<WT, NT, W>(a, slot, e, n, row0, tok0, red);
}

/* 16 warps a block where the row blocks alone would not give every SM two blocks */
template <int WT>
static void launch_expert(const exp_args &a, dim3 grid, int max_n, cudaStream_t st) {
    int few = grid.x < 264;
    if (max_n <= 8) {
        if (few) k_expert_linear<WT, 1, 16><<<grid, 512, 0, st>>>(a);
        else k_expert_linear<WT, 1, 8><<<grid, 256, 0, st>>>(a);
    } else if (max_n <= 16) {
        if (few) k_expert_linear<WT, 2, 16><<<grid, 512, 0, st>>>(a);
        else k_expert_linear<WT, 2, 8><<<grid, 256, 0, st>>>(a);
    } else if (max_n <= 32) {
        k_expert_linear<WT, 4, 8><<<grid, 256, 0, st>>>(a);
    } else {
        k_expert_linear<WT, EXP_MAXNT, 8><<<grid, 256, 0, st>>>(a);
    }
}

static int wt_of(tmoe_etype t) { return t == TMOE_ET_FP16 ? 0 : t == TMOE_ET_Q4 ? 1 : 2; }

extern "C" int tmoe_cuda_expert_kernel_supports(const tmoe_cuda_lin *L, tmoe_cuda_epi epi,
                                                tmoe_error *err) {
    int kb = L->type == TMOE_ET_FP16 ? 32 : L->type == TMOE_ET_Q4 ? 128 : 256;
    int rows = epi == TMOE_CUDA_EPI_SWIGLU ? L->out / 2 : L->out;
    int rmul = epi == TMOE_CUDA_EPI_SWIGLU ? 16 : 32;
    if (L->tiled && L->out % 16)
        return tmoe_errorf(err, TMOE_ENOTSUP, "tiled weights: %d rows must be a multiple of 16",
                           L->out);
    if (L->in % kb)
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "expert kernel: input dim %d of a %s linear must be a multiple of %d",
                           L->in, tmoe_etype_name(L->type), kb);
    if (rows % rmul || (epi == TMOE_CUDA_EPI_SWIGLU && L->out % 2))
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "expert kernel: %d output rows must be a multiple of %d", rows, rmul);
    if (L->type != TMOE_ET_FP16 && L->group % (kb / 4))
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "expert kernel: %s group %d must be a multiple of %d (use the unfused "
                           "impl for this group size)",
                           tmoe_etype_name(L->type), L->group, kb / 4);
    return TMOE_OK;
}

extern "C" int tmoe_cuda_expert_linear(const tmoe_cuda_lin *L, tmoe_cuda_epi epi, int n_experts,
                                       const int32_t *experts, const int32_t *active,
                                       const int32_t *slot_of, const int32_t *counts,
                                       const int32_t *offsets, const tmoe_f16 *x,
                                       const int32_t *src, int k, int max_n, int max_active,
                                       float *y32, tmoe_f16 *y16, cudaStream_t stream,
                                       tmoe_error *err) {
    int rc = tmoe_cuda_expert_kernel_supports(L, epi, err);
    if (rc) return rc;
    if (n_experts <= 0) return TMOE_OK;
    exp_args a;
    a.w = static_cast<const uint8_t *>(L->w);
    a.sc = reinterpret_cast<const __half *>(L->scales);
    a.w_stride = L->w_stride;
    a.s_stride = L->s_stride;
    a.in = L->in;
    a.group = L->group;
    a.out_rows = epi == TMOE_CUDA_EPI_SWIGLU ? L->out / 2 : L->out;
    a.gate_off = epi == TMOE_CUDA_EPI_SWIGLU ? L->out / 2 : 0;
    a.epi = (int)epi;
    a.wt = wt_of(L->type);
    if (a.wt == 1 && L->group % 128 == 0) a.wt = 3; /* q4, scale applied after the mma */
    a.tiled = L->tiled;
    a.experts = experts;
    a.active = active;
    a.slot_of = slot_of;
    a.counts = counts;
    a.offsets = offsets;
    a.x = reinterpret_cast<const __half *>(x);
    a.src = src;
    a.k = k;
    a.y32 = y32;
    a.y16 = reinterpret_cast<__half *>(y16);
    /* with the active list, block row y serves active[1 + y], which may be an expert of
     * another type (its block returns at once): cover every entry, not n_experts of them */
    int gy = active && max_active > 0 ? max_active : n_experts;
    dim3 grid(a.out_rows / (epi == TMOE_CUDA_EPI_SWIGLU ? 16 : 32), gy);
    switch (a.wt) {
    case 0: launch_expert<0>(a, grid, max_n, stream); break;
    case 1: launch_expert<1>(a, grid, max_n, stream); break;
    case 3: launch_expert<3>(a, grid, max_n, stream); break;
    default: launch_expert<2>(a, grid, max_n, stream); break;
    }
    TMOE_CUDA_LAUNCHED(stream, "expert_linear", err);
    return TMOE_OK;
}

/* ---- dequant_unpack ----------------------------------------------------------------------
 * One thread per packed 32-bit word (8 q4 / 16 q2 weights), so a warp reads 128 contiguous
 * bytes and writes 512 (q4) or 1024 (q2); one scale per word when the group covers it. */
template <int WT>
__global__ void k_dequant(const uint8_t *w, const __half *sc, size_t w_stride, size_t s_stride,
                          int out, int in, int group, const int32_t *experts,
                          const int32_t *counts, __half *w16) {
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
    if (L->type == TMOE_ET_FP16)
        return tmoe_errorf(err, TMOE_EINVAL, "dequant_unpack of an fp16 linear");
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

/* ---- gate_topk: one warp per token ------------------------------------------------------ */
__global__ void k_gate_topk(const float *logits, const float *bias, int T, int E, int k,
                            int renorm, int biw, int32_t *idx, float *w, int32_t *hidx,
                            float *hw) {
    const int tok = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (tok >= T) return;
    const float *z = logits + (size_t)tok * E;
    float s[8], zw[8];
    float mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        int e = lane + 32 * i;
        if (e < E) {
            float b = bias ? bias[e] : 0.0f;
            s[i] = z[e] + b;
            zw[i] = z[e] + (biw ? b : 0.0f);
            mx = fmaxf(mx, zw[i]);
        } else {
            s[i] = -INFINITY;
            zw[i] = -INFINITY;
        }
    }
#pragma unroll
    for (int o = 16; o; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float den = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; i++)
        if (lane + 32 * i < E) den += expf(zw[i] - mx);
#pragma unroll
    for (int o = 16; o; o >>= 1) den += __shfl_xor_sync(0xffffffffu, den, o);
    unsigned taken = 0;
    float mine = 0.0f, chosen = 0.0f;
    int my_e = 0;
    for (int j = 0; j < k; j++) {
        int be = 0x7fffffff;
        float bs = -INFINITY;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int e = lane + 32 * i;
            if (e < E && !(taken >> i & 1u) && (be == 0x7fffffff || s[i] > bs)) {
                be = e;
                bs = s[i];
            }
        }
#pragma unroll
        for (int o = 16; o; o >>= 1) {
            float os = __shfl_xor_sync(0xffffffffu, bs, o);
            int oe = __shfl_xor_sync(0xffffffffu, be, o);
            bool take = oe != 0x7fffffff &&
                        (be == 0x7fffffff || os > bs || (os == bs && oe < be));
            if (take) {
                bs = os;
                be = oe;
            }
        }
        float p = 0.0f;
        if ((be & 31) == lane) {
            int bi = be >> 5;
            taken |= 1u << bi;
#pragma unroll
            for (int i = 0; i < 8; i++)
                if (i == bi) p = expf(zw[i] - mx);
        }
        p = __shfl_sync(0xffffffffu, p, be & 31);
        chosen += p;
        if (lane == j) {
            mine = p;
            my_e = be;
        }
    }
    float norm = renorm ? chosen : den;
    if (lane < k) {
        float v = mine / norm;
        idx[(size_t)tok * k + lane] = my_e;
        w[(size_t)tok * k + lane] = v;
        if (hidx) hidx[(size_t)tok * k + lane] = my_e;
        if (hw) hw[(size_t)tok * k + lane] = v;
    }
}

extern "C" int tmoe_cuda_gate_topk(const float *logits, const float *bias, int T, int E, int k,
                                   int renorm, int bias_in_weights, int32_t *idx, float *w,
                                   int32_t *host_idx, float *host_w, cudaStream_t stream,
                                   tmoe_error *err) {
    if (E < 1 || E > 256 || k < 1 || k > E || k > 16)
        return tmoe_errorf(err, TMOE_EINVAL, "gate_topk: E = %d, k = %d: need 1 <= k <= min(E, 16), E <= 256", E, k);
    if (T <= 0) return TMOE_OK;
    int blocks = (T + 7) / 8;
    k_gate_topk<<<blocks, 256, 0, stream>>>(logits, bias, T, E, k, renorm, bias_in_weights, idx,
                                            w, host_idx, host_w);
    TMOE_CUDA_LAUNCHED(stream, "gate_topk", err);
    return TMOE_OK;
}

/* ---- permute: one block of 1024 threads; warp w owns experts w, w+32, ...; a ballot over
 * the copies in order gives a stable scatter. -------------------------------------------- */
__global__ void __launch_bounds__(1024) k_permute(const int32_t *idx, int N, int E,
                                                  int32_t *counts, int32_t *offsets,
                                                  int32_t *src, int32_t *dst, int32_t *hcounts,
                                                  int32_t *active) {
    __shared__ int cnt[256];
    __shared__ int offs[257];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    for (int e = warp; e < E; e += nw) {
        int c = 0;
        for (int i0 = 0; i0 < N; i0 += 32) {
            int i = i0 + lane;
            int v = i < N ? idx[i] : -1;
            c += __popc(__ballot_sync(0xffffffffu, v == e));
        }
        if (lane == 0) cnt[e] = c;
    }
    __syncthreads();
    if (warp == 0) {
        /* exclusive scan over E <= 256: lane holds 8 consecutive experts */
        int loc[8], sum = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int e = lane * 8 + i;
            loc[i] = e < E ? cnt[e] : 0;
            sum += loc[i];
        }
        int inc = sum;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            int t = __shfl_up_sync(0xffffffffu, inc, o);
            if (lane >= o) inc += t;
        }
        int run = inc - sum;
        int nz = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int e = lane * 8 + i;
            if (e < E) offs[e] = run;
            run += loc[i];
            nz += loc[i] > 0;
        }
        if (lane == 31) offs[E] = inc;
        if (active) {
            int ninc = nz;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                int t = __shfl_up_sync(0xffffffffu, ninc, o);
                if (lane >= o) ninc += t;
            }
            int pos = ninc - nz;
#pragma unroll
            for (int i = 0; i < 8; i++)
                if (loc[i] > 0) active[1 + pos++] = lane * 8 + i;
            if (lane == 31) active[0] = ninc;
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e <= E; e += blockDim.x) {
        offsets[e] = offs[e];
        if (e < E) {
            counts[e] = cnt[e];
            if (hcounts) hcounts[e] = cnt[e];
        }
    }
    for (int e = warp; e < E; e += nw) {
        int pos = offs[e];
        for (int i0 = 0; i0 < N; i0 += 32) {
            int i = i0 + lane;
            int v = i < N ? idx[i] : -1;
            unsigned m = __ballot_sync(0xffffffffu, v == e);
            if (v == e) {
                int p = pos + __popc(m & ((1u << lane) - 1u));
                src[p] = i;
                dst[i] = p;
            }
            pos += __popc(m);
        }
    }
}

extern "C" int tmoe_cuda_permute(const int32_t *idx, int T, int k, int E, int32_t *counts,
                                 int32_t *offsets, int32_t *src, int32_t *dst, int32_t *active,
                                 int32_t *host_counts, cudaStream_t stream, tmoe_error *err) {
    if (E < 1 || E > 256) return tmoe_errorf(err, TMOE_EINVAL, "permute: E = %d: need 1..256", E);
    k_permute<<<1, 1024, 0, stream>>>(idx, T * k, E, counts, offsets, src, dst, host_counts,
                                      active);
    TMOE_CUDA_LAUNCHED(stream, "permute", err);
    return TMOE_OK;
}

/* ---- gather ------------------------------------------------------------------------------ */
__global__ void k_gather(const __half *x, const int32_t *src, int k, int D, __half *xg) {
    const int r = blockIdx.x;
    const __half *s = x + (size_t)(src[r] / k) * D;
    __half *d = xg + (size_t)r * D;
    if (D % 8 == 0) {
        for (int i = threadIdx.x * 8; i < D; i += blockDim.x * 8)
            *reinterpret_cast<uint4 *>(d + i) = *reinterpret_cast<const uint4 *>(s + i);
    } else {
        for (int i = threadIdx.x; i < D; i += blockDim.x) d[i] = s[i];
    }
}

extern "C" int tmoe_cuda_gather(const tmoe_f16 *x16, const int32_t *src, int N, int k, int D,
                                tmoe_f16 *xg, cudaStream_t stream, tmoe_error *err) {
    if (N <= 0) return TMOE_OK;
    k_gather<<<N, 128, 0, stream>>>(reinterpret_cast<const __half *>(x16), src, k, D,
                                    reinterpret_cast<__half *>(xg));
    TMOE_CUDA_LAUNCHED(stream, "gather", err);
    return TMOE_OK;
}

/* ---- combine: deterministic gather-sum in slot order, then the residual ------------------ */
__global__ void k_combine(const float *ye, const int32_t *dst, const float *w, const float *resid,
                          int k, int D, float *y) {
    const int t = blockIdx.x;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < k; j++)
            acc += w[t * k + j] * ye[(size_t)dst[t * k + j] * D + i];
        if (resid) acc += resid[(size_t)t * D + i];
        y[(size_t)t * D + i] = acc;
    }
}

extern "C" int tmoe_cuda_combine(const float *ye, const int32_t *dst, const float *w,
                                 const float *resid, int T, int k, int D, float *y,
                                 cudaStream_t stream, tmoe_error *err) {
    if (T <= 0) return TMOE_OK;
    k_combine<<<T, 256, 0, stream>>>(ye, dst, w, resid, k, D, y);
    TMOE_CUDA_LAUNCHED(stream, "combine", err);
    return TMOE_OK;
}

/* ---- activation, norm, conversion, residual, causal softmax ------------------------------ */
__global__ void k_act(int act, const float *h, int n, int d_ff, __half *a) {
    size_t total = (size_t)n * d_ff;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / d_ff, c = i - r * d_ff;
        float v;
        if (act == TMOE_ACT_RELU) {
            v = h[i];
            v = v > 0.0f ? v : 0.0f;
        } else {
            float g = h[r * 2 * d_ff + c], u = h[r * 2 * d_ff + d_ff + c];
            v = g / (1.0f + expf(-g)) * u;
        }
        a[i] = __float2half_rn(v);
    }
}

static int grid_for(size_t n) {
    size_t b = (n + 255) / 256;
    return (int)(b > 65535 ? 65535 : (b ? b : 1));
}

extern "C" int tmoe_cuda_act(tmoe_act act, const float *h, int n, int d_ff, tmoe_f16 *a,
                             cudaStream_t stream, tmoe_error *err) {
    if (n <= 0) return TMOE_OK;
    k_act<<<grid_for((size_t)n * d_ff), 256, 0, stream>>>((int)act, h, n, d_ff,
                                                         reinterpret_cast<__half *>(a));
    TMOE_CUDA_LAUNCHED(stream, "act", err);
    return TMOE_OK;
}

__global__ void k_rmsnorm(const float *x, const float *w, int D, float eps, __half *y) {
    __shared__ float part[32];
    const int t = blockIdx.x;
    const float *r = x + (size_t)t * D;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) ss += r[i] * r[i];
#pragma unroll
    for (int o = 16; o; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.0f;
#pragma unroll
        for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (threadIdx.x == 0) part[0] = v;
    }
    __syncthreads();
    float inv = 1.0f / sqrtf(part[0] / D + eps);
    for (int i = threadIdx.x; i < D; i += blockDim.x)
        y[(size_t)t * D + i] = __float2half_rn(r[i] * inv * w[i]);
}

extern "C" int tmoe_cuda_rmsnorm(const float *x, const float *w, int T, int D, float eps,
                                 tmoe_f16 *y, cudaStream_t stream, tmoe_error *err) {
    if (T <= 0) return TMOE_OK;
    k_rmsnorm<<<T, 256, 0, stream>>>(x, w, D, eps, reinterpret_cast<__half *>(y));
    TMOE_CUDA_LAUNCHED(stream, "rmsnorm", err);
    return TMOE_OK;
}

__global__ void k_to_f16(const float *x, size_t n, __half *y) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2half_rn(x[i]);
}

extern "C" int tmoe_cuda_to_f16(const float *x, size_t n, tmoe_f16 *y16, cudaStream_t stream,
                                tmoe_error *err) {
    if (!n) return TMOE_OK;
    k_to_f16<<<grid_for(n), 256, 0, stream>>>(x, n, reinterpret_cast<__half *>(y16));
    TMOE_CUDA_LAUNCHED(stream, "to_f16", err);
    return TMOE_OK;
}

__global__ void k_add(float *x, const float *d, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] += d[i];
}

extern "C" int tmoe_cuda_add(float *x, const float *d, size_t n, cudaStream_t stream,
                             tmoe_error *err) {
    if (!n) return TMOE_OK;
    k_add<<<grid_for(n), 256, 0, stream>>>(x, d, n);
    TMOE_CUDA_LAUNCHED(stream, "add", err);
    return TMOE_OK;
}

/* one warp per (head, query row) */
__global__ void k_causal_softmax(const float *S, int H, int T, float scale, __half *P) {
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (row >= H * T) return;
    const int t = row % T;
    const float *s = S + (size_t)row * T;
    __half *p = P + (size_t)row * T;
    float mx = -INFINITY;
    for (int j = lane; j <= t; j += 32) mx = fmaxf(mx, s[j] * scale);
#pragma unroll
    for (int o = 16; o; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float den = 0.0f;
    for (int j = lane; j <= t; j += 32) den += expf(s[j] * scale - mx);
#pragma unroll
    for (int o = 16; o; o >>= 1) den += __shfl_xor_sync(0xffffffffu, den, o);
    for (int j = lane; j < T; j += 32)
        p[j] = __float2half_rn(j <= t ? expf(s[j] * scale - mx) / den : 0.0f);
}

extern "C" int tmoe_cuda_causal_softmax(const float *S, int H, int T, float scale, tmoe_f16 *P,
                                        cudaStream_t stream, tmoe_error *err) {
    if (T <= 0) return TMOE_OK;
    int warps = H * T;
    k_causal_softmax<<<(warps + 7) / 8, 256, 0, stream>>>(S, H, T, scale,
                                                          reinterpret_cast<__half *>(P));
    TMOE_CUDA_LAUNCHED(stream, "causal_softmax", err);
    return TMOE_OK;
}

__global__ void k_single_routing(int n, int32_t *experts, int32_t *counts, int32_t *offsets) {
    experts[0] = 0;
    counts[0] = n;
    offsets[0] = 0;
    offsets[1] = n;
}

extern "C" int tmoe_cuda_single_expert_routing(int n, int32_t *experts, int32_t *counts,
                                               int32_t *offsets, cudaStream_t stream,
                                               tmoe_error *err) {
    k_single_routing<<<1, 1, 0, stream>>>(n, experts, counts, offsets);
    TMOE_CUDA_LAUNCHED(stream, "single_expert_routing", err);
    return TMOE_OK;
}

/* ---- weight tiling: row-major (slots, out, rowbytes) -> tiled layout (see cuda_ops.h) ---- */
__global__ void k_tile(const uint8_t *src, uint8_t *dst, size_t n16, int nkb, size_t rowbytes,
                       size_t slot_bytes) {
    for (size_t d = (size_t)blockIdx.x * blockDim.x + threadIdx.x; d < n16;
         d += (size_t)gridDim.x * blockDim.x) {
        size_t byte = d * 16, slot = byte / slot_bytes, in_slot = byte - slot * slot_bytes;
        size_t chunk = in_slot / 1024;
        int within = (int)(in_slot % 1024);
        size_t tile = chunk / nkb;
        int kb = (int)(chunk % nkb), h = within / 512, lane = (within % 512) / 16;
        size_t row = tile * 16 + h * 8 + (lane >> 2);
        const uint4 *s4 = reinterpret_cast<const uint4 *>(src + slot * slot_bytes + row * rowbytes +
                                                          (size_t)kb * 64 + (lane & 3) * 16);
        *reinterpret_cast<uint4 *>(dst + byte) = *s4;
    }
}

extern "C" int tmoe_cuda_tile_weights(const void *src, void *dst, int out, size_t rowbytes,
                                      int slots, cudaStream_t stream, tmoe_error *err) {
    if (out % 16 || rowbytes % 64)
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "tile_weights: %d rows (multiple of 16) of %zu bytes (multiple of 64)",
                           out, rowbytes);
    size_t slot_bytes = (size_t)out * rowbytes, n16 = slot_bytes * slots / 16;
    if (!n16) return TMOE_OK;
    k_tile<<<grid_for(n16 > 65535u * 256u ? 65535u * 256u : n16), 256, 0, stream>>>(
        static_cast<const uint8_t *>(src), static_cast<uint8_t *>(dst), n16, (int)(rowbytes / 64),
        rowbytes, slot_bytes);
    TMOE_CUDA_LAUNCHED(stream, "tile_weights", err);
    return TMOE_OK;
}
