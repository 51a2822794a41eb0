/* linear_fc1 / linear_fc2 of the experts: the bandwidth kernel (tensor-core mma.sync on
 * 16-byte weight loads, fp16 / bf16 weights or q4/q2 dequantized in registers, relu / swiglu
 * fused in the epilogue)
 * and the tiled weight layout it reads (contracts in cuda_ops.h). */
#include "common.cuh"

#include <cooperative_groups.h>

/* ---- expert linear: the bandwidth kernel ------------------------------------------------
 * Block = W warps = 2 row tiles of 16 rows (rows r0.. and r0+16.., or gate and up rows with
 * swiglu) x all K, split over the warps (each a contiguous range of k-blocks). A k-block is 64
 * bytes of every row: 32 fp16 / bf16, 128 q4 or 256 q2 weights; lane (g, q) loads 16 bytes at byte
 * 16 q of rows g and g+8 of each tile. The reduction order inside a k-block is free, so the
 * lane's contiguous weights become its A fragment, and x is loaded (and for q4/q2 permuted)
 * to match as the B fragment: token g of the 8-token tile. Tokens run in tiles of 8, NT tiles
 * (up to 64 tokens) per pass over the weights. Partial sums of the 8 warps meet in shared
 * memory in a fixed order (deterministic). W warps a block (8 or 16).
 * Split-K over blocks (sk > 1, Hopper clusters): the sk blocks of a cluster share the rows and
 * each takes one sk-th of the k-blocks (its warps a contiguous range each, as above); their
 * partial sums meet through distributed shared memory, summed in the fixed order (block,
 * warp) whichever block sums a row, so the result is deterministic for a given sk. */
#define EXP_MAXNT 8

struct exp_args {
    const uint8_t *w;
    const __half *sc;
    size_t w_stride, s_stride;
    int in, out_rows, gate_off, epi, wt; /* wt: 0 fp16, 1 q4, 2 q2, 3 q4 with groups of 128k,
                                            4 bf16, 5 q4 and 6 q2 with int8 activations */
    int gshift;                          /* log2(group): groups are powers of two */
    int tiled;                           /* weights in the tiled layout */
    const int32_t *experts, *counts, *offsets;
    const int32_t *active, *slot_of; /* active experts list, expert -> slot */
    const __half *x;
    const int32_t *src;
    int k;
    int sk; /* blocks a row block is split over along k (a cluster of sk; 1: no split) */
    float *y32;
    __half *y16;
};

/* Word i (0..3) of a 16-byte load; i is a compile-time constant in every use. */
static __device__ __forceinline__ uint32_t u4_word(const uint4 &v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

/* A q4 / q2 scale (fp16 bits) twice, as the half2 the dequantization multiplies by. */
static __device__ __forceinline__ uint32_t scale2(const __half *p) {
    unsigned short sv = __ldg(reinterpret_cast<const unsigned short *>(p));
    return (uint32_t)sv | ((uint32_t)sv << 16);
}

/* The fp32 value of such a scale */
static __device__ __forceinline__ float scale_f(uint32_t s2) {
    return __half2float(__ushort_as_half((unsigned short)(s2 & 0xffffu)));
}

/* One k-block of the lane's two row tiles into acc: A the lane's 16 weight bytes of rows
 * (tile t, half h), S their q4/q2 scales (the fp16 bits twice), x of tokens xrow (xval: the
 * token exists) loaded (q4/q2: permuted) to match. */
template <int WT, int NT>
static __device__ __forceinline__ void kb_step(const uint4 (&A)[2][2], const uint32_t (&S)[2][2],
                                               int kb, int q, const __half *const (&xrow)[NT],
                                               const bool (&xval)[NT], float (&acc)[2][NT][4]) {
    constexpr bool Q4 = WT == 1 || WT == 3;
    if (WT == 0) {
        int xe = kb * 32 + q * 8;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            uint4 X = xval[nt] ? __ldg(reinterpret_cast<const uint4 *>(xrow[nt] + xe))
                               : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int t = 0; t < 2; t++) {
                mma16816(acc[t][nt], A[t][0].x, A[t][1].x, A[t][0].y, A[t][1].y, X.x, X.y);
                mma16816(acc[t][nt], A[t][0].z, A[t][1].z, A[t][0].w, A[t][1].w, X.z, X.w);
            }
        }
    } else if (WT == 4) {
        /* bf16 weights as loaded; the fp16 activations rounded to bf16 for the mma */
        int xe = kb * 32 + q * 8;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            uint4 X = xval[nt] ? __ldg(reinterpret_cast<const uint4 *>(xrow[nt] + xe))
                               : make_uint4(0, 0, 0, 0);
            uint32_t b0 = h2_to_bf2(X.x), b1 = h2_to_bf2(X.y), b2 = h2_to_bf2(X.z),
                     b3 = h2_to_bf2(X.w);
#pragma unroll
            for (int t = 0; t < 2; t++) {
                mma16816_bf16(acc[t][nt], A[t][0].x, A[t][1].x, A[t][0].y, A[t][1].y, b0, b1);
                mma16816_bf16(acc[t][nt], A[t][0].z, A[t][1].z, A[t][0].w, A[t][1].w, b2, b3);
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
                    uint32_t wd = u4_word(A[t][h], i);
                    if (WT == 3)
                        deq_q4_int(wd, R[t][h]);
                    else
                        deq_q4(wd, u2h(S[t][h]), R[t][h]);
                }
            int xe = kb * 128 + q * 32 + i * 8;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                uint4 X;
                if (NT <= 2)
                    X = Xp[i][nt < XP ? nt : 0];
                else
                    X = xval[nt] ? __ldg(reinterpret_cast<const uint4 *>(xrow[nt] + xe))
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
                float s0 = scale_f(S[t][0]), s1 = scale_f(S[t][1]);
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
                    uint32_t wd = u4_word(A[t][h], i);
                    deq_q2(wd, u2h(S[t][h]), R[t][h]);
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
                        mma16816(acc[t][nt], R[t][0][2 * j], R[t][1][2 * j], R[t][0][2 * j + 1],
                                 R[t][1][2 * j + 1], B[2 * j], B[2 * j + 1]);
            }
        }
    }
}

/* The int8 path (wt 5 q4, wt 6 q2; tmoe_cuda_act8): one k-block of q4 / q2 weights against NT
 * tokens' activations in int8. A lane's weights of row (t, h) meet blocks of 32 of x (one for
 * q4's 32 weights, two for q2's 64): the nibbles / crumbs as unsigned bytes q + 8 / q + 2
 * (and_xor) times the signed int8 x (dp4a), each block's chain started at -8 / -2 sum(x) so
 * that it ends at sum(q x) exactly, then times scale x d in fp32. xq: the warp's int8 x, block
 * m of token nt at (nt nb + m) 2: two uint4 in the order act8_block gives the unsigned words
 * here; xs: (d, -off sum(x) as int bits) of that block. acc[t][nt][h]: row (t, h), token nt
 * (the lane's partial sum). */
template <int NT, bool Q2>
static __device__ __forceinline__ void kb_step_i8(const uint4 (&A)[2][2], const uint32_t (&S)[2][2],
                                                  const uint4 *xq, const float2 *xs, int m, int nb,
                                                  float (&acc)[2][NT][4]) {
    constexpr int NBL = Q2 ? 2 : 1; /* blocks of 32 a lane's weights of a row span */
    float sw[2][2];
#pragma unroll
    for (int bl = 0; bl < NBL; bl++) {
        /* the 8 unsigned words of each row for this block: q4, word i of the lane's 4 -> its
         * low nibbles (elements 8i, 8i + 2, ..) then its high ones; q2, word 2 bl + (k >> 2)
         * -> its crumbs at shift 2 (k & 3) (elements 16 i' + 4 b + (k & 3), byte b) */
        uint32_t u[2][2][8];
#pragma unroll
        for (int t = 0; t < 2; t++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    if (Q2) {
                        const uint32_t w = u4_word(A[t][h], 2 * bl + (k >> 2));
                        u[t][h][k] = and_xor(w >> (2 * (k & 3)), 0x03030303u, 0x02020202u);
                    } else {
                        const uint32_t w = u4_word(A[t][h], k >> 1);
                        u[t][h][k] = and_xor(k & 1 ? w >> 4 : w, 0x0f0f0f0fu, 0x08080808u);
                    }
                }
                if (bl == 0) sw[t][h] = scale_f(S[t][h]);
            }
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const int b = nt * nb + m + bl;
            const uint4 X0 = xq[b * 2], X1 = xq[b * 2 + 1];
            const float2 gs = xs[b];
            const uint32_t X[8] = {X0.x, X0.y, X0.z, X0.w, X1.x, X1.y, X1.z, X1.w};
#pragma unroll
            for (int t = 0; t < 2; t++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    int d = __float_as_int(gs.y);
#pragma unroll
                    for (int k = 0; k < 8; k++) d = dp4a_us(u[t][h][k], X[k], d);
                    acc[t][nt][h] = fmaf((float)d, sw[t][h] * gs.x, acc[t][nt][h]);
                }
        }
    }
}

/* One block of 32 activations to int8 as tmoe_act8_quantize does (each step one IEEE fp32
 * operation, so the integers are the CPU's): into dst[0..1] in kb_step_i8's order, and
 * (d, -off sum(q)) into *gs. q4 (off 8): word 2 (e >> 3) + (e & 1) holds element e at byte
 * (e & 7) >> 1; q2 (off 2): word 4 (e >> 4) + (e & 3) at byte (e & 15) >> 2. */
template <bool Q2>
static __device__ __forceinline__ void act8_block(const __half *x, uint4 *dst, float2 *gs) {
    float v[32];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        uint4 u = __ldg(reinterpret_cast<const uint4 *>(x) + j);
        const uint32_t wd[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 f = __half22float2(u2h(wd[i]));
            v[8 * j + 2 * i] = f.x;
            v[8 * j + 2 * i + 1] = f.y;
        }
    }
    float mx = 0.0f;
#pragma unroll
    for (int i = 0; i < 32; i++) mx = fmaxf(mx, fabsf(v[i]));
    const float d = __fdiv_rn(mx, 127.0f), id = d > 0.0f ? __frcp_rn(d) : 0.0f;
    int sum = 0;
    uint32_t w[8] = {0, 0, 0, 0, 0, 0, 0, 0};
#pragma unroll
    for (int e = 0; e < 32; e++) {
        int qi = min(127, max(-127, __float2int_rn(__fmul_rn(v[e], id))));
        sum += qi;
        const int wi = Q2 ? 4 * (e >> 4) + (e & 3) : 2 * (e >> 3) + (e & 1);
        const int by = Q2 ? (e & 15) >> 2 : (e & 7) >> 1;
        w[wi] |= ((uint32_t)qi & 0xffu) << (8 * by);
    }
    dst[0] = make_uint4(w[0], w[1], w[2], w[3]);
    dst[1] = make_uint4(w[4], w[5], w[6], w[7]);
    *gs = make_float2(d, __int_as_float(-(Q2 ? 2 : 8) * sum));
}

/* Shared memory of a block of w warps: the ring of st k-blocks a warp (2 KB each), then the
 * split-K reduction (8 accumulators x 32 lanes a warp); the int8 path's activations come
 * after, i8_warp_bytes a warp (nt tokens x per k-blocks of kw weights a row: kw int8 values
 * and their kw / 32 blocks' (d, -off sum)). */
static __host__ __device__ constexpr size_t exp_smem_bytes(int w, int st) {
    return (size_t)w * st * 2048 + (size_t)w * 8 * 32 * 4;
}
static __host__ __device__ constexpr size_t i8_warp_bytes(int nt, int per, int kw) {
    return (size_t)nt * per * (kw + kw / 32 * 8);
}

template <int W, int NTR, bool SPLIT>
static __device__ void exp_epilogue(const exp_args &a, const float (&acc)[2][NTR][4], int off,
                                    int n, int row0, int tok0, float *red);

/* The k-blocks each warp owns: nkb over the W warps of the sk blocks a row block is split
 * over (the host sizes the int8 path's activations with the same count). */
static __host__ __device__ constexpr int kb_per_warp(int nkb, int w, int sk) {
    return (nkb + w * sk - 1) / (w * sk);
}

/* The splits the device code computes: a.sk on Hopper and later; code built for an earlier
 * architecture has no clusters, and each of the sk blocks then computes its rows whole (the
 * same values written sk times; the host does not split there: tmoe_cuda_expert_linear) */
template <bool SPLIT> static __device__ __forceinline__ int split_count(const exp_args &a) {
#if __CUDA_ARCH__ >= 900
    return SPLIT ? a.sk : 1;
#else
    (void)a;
    return 1;
#endif
}

/* The block's rank in its cluster of a.sk (the split it computes), 0 without a split */
template <bool SPLIT> static __device__ __forceinline__ int split_rank(const exp_args &a) {
#if __CUDA_ARCH__ >= 900
    if (SPLIT && a.sk > 1) return (int)cooperative_groups::this_cluster().block_rank();
#else
    (void)a;
#endif
    return 0;
}

/* A barrier of the block, or of the cluster with split-K */
template <bool SPLIT> static __device__ __forceinline__ void split_sync(const exp_args &a) {
#if __CUDA_ARCH__ >= 900
    if (SPLIT && a.sk > 1) {
        cooperative_groups::this_cluster().sync();
        return;
    }
#endif
    __syncthreads();
}

template <int WT, int NT, int W, int ST, bool SPLIT>
static __device__ void exp_body(const exp_args &a, int slot, int e, int n, int row0, int tok0,
                                float *red, uint4 *ring) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    const int off = a.offsets[e];
    const int in = a.in;
    constexpr bool I8 = WT == 5 || WT == 6; /* int8 activations: NT tokens, not tiles */
    constexpr bool Q4 = WT == 1 || WT == 3 || WT == 5;
    constexpr bool F16 = WT == 0 || WT == 4; /* 16-bit float weights: fp16, bf16 */
    const int nkb = in / (F16 ? 32 : Q4 ? 128 : 256);
    const size_t rowbytes = F16 ? (size_t)in * 2 : Q4 ? (size_t)in / 2 : (size_t)in / 4;
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
            wrow[t][h] = a.tiled
                             ? wbase + (size_t)(rows[t][0] >> 4) * nkb * 1024 + h * 512 + lane * 16
                             : wbase + (size_t)rows[t][h] * rowbytes + 16 * q;
    const __half *xrow[NT];
    bool xval[NT];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        int r = I8 ? tok0 + nt : tok0 + nt * 8 + g;
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

    const int ng = in >> a.gshift;
    /* each lane's scale rows, and the group of its first element of k-block kb: (kb * KW + q *
     * QW) >> gshift (a shift: a division here cost about a third of the q4 loop's
     * instructions) */
    const __half *sbase = F16 ? nullptr : a.sc + (size_t)slot * a.s_stride;
    const int soff[2] = {rows[0][0] * ng, rows[1][0] * ng}, s8 = 8 * ng; /* row h: + h s8 */
    constexpr int KW = F16 ? 32 : Q4 ? 128 : 256, QW = KW / 4;
    /* fp16: 4 k-blocks a step; q4/q2: software-pipelined, the next step's loads are issued
     * before this step's dequantization and mma */
    constexpr int U = F16 ? 4 : WT == 2 || WT == 6 ? 1 : 2;
    constexpr bool PIPE = !F16;
    /* warp w of split s owns the contiguous k-blocks [kb_lo, kb_hi) */
    const int per = kb_per_warp(nkb, W, split_count<SPLIT>(a));
    const int kb_lo = (split_rank<SPLIT>(a) * W + warp) * per, kb_hi = min(nkb, kb_lo + per);
    /* int8 path: the warp quantizes the x of its own k-blocks first, into its area after the
     * ring and the reduction (NT x nb blocks: the int8 values, 2 uint4 a block, then their
     * (d, -off sum)) */
    constexpr int BPK = KW / 32; /* blocks of 32 a k-block */
    const int nb = per * BPK;
    uint4 *xq = nullptr;
    float2 *xs = nullptr;
    if constexpr (I8) {
        constexpr int base = exp_smem_bytes(W, ST) / 16, unit = i8_warp_bytes(1, 1, KW) / 16;
        xq = ring + base + warp * NT * per * unit; /* in uint4 */
        xs = reinterpret_cast<float2 *>(xq + NT * nb * 2);
        const int nblk = max(0, kb_hi - kb_lo) * BPK;
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
            for (int m = lane; m < nblk; m += 32) {
                if (xval[nt]) {
                    act8_block<!Q4>(xrow[nt] + (size_t)kb_lo * KW + 32 * m, xq + (nt * nb + m) * 2,
                                    xs + nt * nb + m);
                } else {
                    xq[(nt * nb + m) * 2] = xq[(nt * nb + m) * 2 + 1] = make_uint4(0, 0, 0, 0);
                    xs[nt * nb + m] = make_float2(0.0f, 0.0f);
                }
            }
        __syncwarp();
    }
    /* the lane's q4/q2 scales of k-block kb (its 4 rows) */
    auto scales = [&](int kb, uint32_t(&S)[2][2]) {
        if (F16) return;
        int gi = (kb * KW + q * QW) >> a.gshift;
#pragma unroll
        for (int t = 0; t < 2; t++)
#pragma unroll
            for (int h = 0; h < 2; h++) S[t][h] = scale2(sbase + soff[t] + h * s8 + gi);
    };
    auto load = [&](int kb0, uint4(&A)[U][2][2], uint32_t(&S)[U][2][2]) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            int kb = kb0 + u;
            bool ok = kb < kb_hi;
            /* past the warp's range: zero weights (never multiplied: the step stops there),
             * the scales of a k-block in range */
#pragma unroll
            for (int t = 0; t < 2; t++)
#pragma unroll
                for (int h = 0; h < 2; h++)
                    A[u][t][h] =
                        ok ? ld_stream(wrow[t][h] + (size_t)kb * kstride) : make_uint4(0, 0, 0, 0);
            scales(ok ? kb : kb_lo, S[u]);
        }
    };
    if constexpr (ST > 0) {
        /* the ring: ST k-blocks of this warp's weights in shared memory, ST - 1 in flight
         * (cp.async) while one is dequantized and multiplied; each lane reads back only the
         * 16-byte pieces it copied, so no barrier. The scales of the next k-block are loaded
         * one step ahead. */
        const uint32_t rb = (uint32_t)__cvta_generic_to_shared(ring + warp * ST * 128 + lane);
        const int nk = kb_hi - kb_lo;
        auto issue = [&](int kb, int stage) {
#pragma unroll
            for (int t = 0; t < 2; t++)
#pragma unroll
                for (int h = 0; h < 2; h++)
                    cp_async16(rb + (uint32_t)((stage * 4 + t * 2 + h) * 512),
                               wrow[t][h] + (size_t)kb * kstride);
        };
#pragma unroll
        for (int s = 0; s < ST - 1; s++) {
            if (s < nk) issue(kb_lo + s, s);
            cp_async_commit();
        }
        uint32_t Sn[2][2] = {{0, 0}, {0, 0}};
        if (nk > 0) scales(kb_lo, Sn);
        int rs = 0, ws = ST - 1; /* the stage read this step, the stage written */
        for (int j = 0; j < nk; j++) {
            if (j + ST - 1 < nk) issue(kb_lo + j + ST - 1, ws);
            cp_async_commit();
            cp_async_wait<ST - 1>();
            uint4 A[2][2];
            uint32_t S[2][2];
#pragma unroll
            for (int t = 0; t < 2; t++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    A[t][h] = ring[(warp * ST + rs) * 128 + (t * 2 + h) * 32 + lane];
                    S[t][h] = Sn[t][h];
                }
            if (j + 1 < nk) scales(kb_lo + j + 1, Sn);
            if constexpr (I8)
                kb_step_i8<NT, !Q4>(A, S, xq, xs, (j * 4 + q) * (BPK / 4), nb, acc);
            else
                kb_step<WT, NT>(A, S, kb_lo + j, q, xrow, xval, acc);
            ws = rs;
            rs = rs + 1 == ST ? 0 : rs + 1;
        }
        cp_async_wait<0>();
    } else {
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
                if constexpr (I8)
                    kb_step_i8<NT, !Q4>(A[u], S[u], xq, xs, ((kb - kb_lo) * 4 + q) * (BPK / 4), nb,
                                        acc);
                else
                    kb_step<WT, NT>(A[u], S[u], kb, q, xrow, xval, acc);
            }
        }
    }

    if constexpr (I8) {
        /* the quad's four k-ranges summed (fixed order), then laid out as the mma's
         * accumulators of one 8-token tile: c -> row g + 8 (c >> 1), token 2 q + (c & 1) */
        float res[2][1][4];
#pragma unroll
        for (int t = 0; t < 2; t++)
#pragma unroll
            for (int h = 0; h < 2; h++)
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    float v = acc[t][nt][h];
                    v += __shfl_xor_sync(0xffffffffu, v, 1);
                    v += __shfl_xor_sync(0xffffffffu, v, 2);
                    acc[t][nt][h] = v;
                }
#pragma unroll
        for (int t = 0; t < 2; t++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                float v = 0.0f; /* lane q takes tokens 2 q, 2 q + 1 (indices kept constant) */
#pragma unroll
                for (int qq = 0; 2 * qq < NT; qq++)
                    if (2 * qq + (c & 1) < NT && q == qq) v = acc[t][2 * qq + (c & 1)][c >> 1];
                res[t][0][c] = v;
            }
        exp_epilogue<W, 1, SPLIT>(a, res, off, n, row0, tok0, red);
    } else {
        exp_epilogue<W, NT, SPLIT>(a, acc, off, n, row0, tok0, red);
    }
}

/* Deterministic split-K reduction of the W warps' accumulators (of the sk blocks of the
 * cluster, read through distributed shared memory, block r summing the rows of index i with
 * i % sk == r) and the epilogue, one token tile of 8 at a time (acc: the mma's layout). */
template <int W, int NTR, bool SPLIT>
static __device__ void exp_epilogue(const exp_args &a, const float (&acc)[2][NTR][4], int off,
                                    int n, int row0, int tok0, float *red) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int swiglu = a.epi == TMOE_CUDA_EPI_SWIGLU;
#pragma unroll
    for (int nt = 0; nt < NTR; nt++) {
#pragma unroll
        for (int t = 0; t < 2; t++)
#pragma unroll
            for (int c = 0; c < 4; c++) red[(warp * 8 + t * 4 + c) * 32 + lane] = acc[t][nt][c];
        split_sync<SPLIT>(a);
        const int tid = threadIdx.x, l = tid & 31, r = tid >> 5;
        const int gg = l >> 2, qq = l & 3;
        /* the rows this block sums: r % sk == rank, every block's partial sums in order */
        const int sk = split_count<SPLIT>(a), mine = r % sk == split_rank<SPLIT>(a);
        auto part = [&](int s) -> const float * {
#if __CUDA_ARCH__ >= 900
            if (SPLIT && sk > 1) return cooperative_groups::this_cluster().map_shared_rank(red, s);
#endif
            return red;
        };
        if (swiglu) {
            if (r < 4 && mine) {
                float gs = 0.0f, us = 0.0f;
                for (int s = 0; s < sk; s++) {
                    const float *p = part(s);
                    for (int w = 0; w < W; w++) {
                        gs += p[(w * 8 + r) * 32 + l];
                        us += p[(w * 8 + 4 + r) * 32 + l];
                    }
                }
                int row = row0 + gg + (r >= 2 ? 8 : 0);
                int tok = tok0 + nt * 8 + 2 * qq + (r & 1);
                if (tok < n) {
                    float sv = gs / (1.0f + expf(-gs));
                    a.y16[(size_t)(off + tok) * a.out_rows + row] = __float2half_rn(sv * us);
                }
            }
        } else if (r < 8 && mine) {
            float s = 0.0f;
            for (int sp = 0; sp < sk; sp++) {
                const float *p = part(sp);
                for (int w = 0; w < W; w++) s += p[(w * 8 + r) * 32 + l];
            }
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
        /* no block overwrites its partial sums (or leaves) before every block has read them */
        split_sync<SPLIT>(a);
    }
}

template <int WT, int NT, int W, int ST, bool SPLIT = false>
__global__ void __launch_bounds__(W * 32, NT <= 2 && W == 8 ? 2 : 1) k_expert_linear(exp_args a) {
    extern __shared__ uint4 smem[];
    float *red = reinterpret_cast<float *>(smem + W * ST * 128);
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
    const int row0 = (SPLIT ? (int)blockIdx.x / a.sk : (int)blockIdx.x) * rows_per_block;
    for (int tok0 = 0; tok0 < n; tok0 += WT == 5 || WT == 6 ? NT : 8 * NT)
        exp_body<WT, NT, W, ST, SPLIT>(a, slot, e, n, row0, tok0, red, smem);
}

/* One launch of a variant with extra bytes of shared memory (the int8 path's activations);
 * past the default 48 KB the limit is raised once per device and size (the attribute is per
 * device; at most 16 tracked, others set every launch). */
template <int WT, int NT, int W, int ST, bool SPLIT = false>
static cudaError_t launch_k(const exp_args &a, dim3 grid, cudaStream_t st, size_t extra = 0) {
    const size_t smem = exp_smem_bytes(W, ST) + extra;
    if (smem > 48 * 1024) {
        static size_t ready[16];
        int dev = 0;
        cudaError_t ce = cudaGetDevice(&dev);
        if (ce != cudaSuccess) return ce;
        if (dev < 0 || dev >= 16 || ready[dev] < smem) {
            ce = cudaFuncSetAttribute(
                reinterpret_cast<const void *>(k_expert_linear<WT, NT, W, ST, SPLIT>),
                cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
            if (ce != cudaSuccess) return ce;
            if (dev >= 0 && dev < 16) ready[dev] = smem;
        }
    }
    if (SPLIT && a.sk > 1) {
        /* grid.x: the row blocks times sk, a cluster of sk along x each */
        cudaLaunchConfig_t cfg = {};
        cudaLaunchAttribute at[1];
        at[0].id = cudaLaunchAttributeClusterDimension;
        at[0].val.clusterDim.x = (unsigned)a.sk;
        at[0].val.clusterDim.y = at[0].val.clusterDim.z = 1;
        cfg.gridDim = grid;
        cfg.blockDim = dim3(W * 32);
        cfg.dynamicSmemBytes = smem;
        cfg.stream = st;
        cfg.attrs = at;
        cfg.numAttrs = 1;
        return cudaLaunchKernelEx(&cfg, k_expert_linear<WT, NT, W, ST, SPLIT>, a);
    }
    k_expert_linear<WT, NT, W, ST, SPLIT><<<grid, W * 32, smem, st>>>(a);
    return cudaSuccess;
}

/* the ring depth: 0 (weights pipelined in registers) or an instantiated 3, 4, 6 */
template <int WT, int NT, int W, bool SPLIT = false>
static cudaError_t launch_st(const exp_args &a, dim3 grid, int stages, cudaStream_t st,
                             size_t extra = 0) {
    switch (stages) {
    case 3: return launch_k<WT, NT, W, 3, SPLIT>(a, grid, st, extra);
    case 4: return launch_k<WT, NT, W, 4, SPLIT>(a, grid, st, extra);
    case 6: return launch_k<WT, NT, W, 6, SPLIT>(a, grid, st, extra);
    default: return launch_k<WT, NT, W, 0, SPLIT>(a, grid, st, extra);
    }
}

int tmoe_cuda_expert_stages = -1;

/* 16 warps a block where the row blocks alone would not give every SM (sms of them) two
 * blocks; the token tile from nt_n (tokens of the largest expert it is sized for). Token tiles
 * of up to 16 tokens may read the weights through the ring (tmoe_cuda_expert_stages); by
 * default only q4 at up to 8 tokens does, 3 deep, the one case the H100 measured faster
 * (bench/results/h100_kernel_ring: the lone q4 matrix -7 to -10%, L2-warm -22 to -25%); the
 * ring made q2 up to 20% slower, left fp16 / bf16 within 2%, and at 9-16 tokens the q4 and
 * q2 ring variants spill registers. */
template <int WT>
static cudaError_t launch_expert(const exp_args &a, dim3 grid, int nt_n, int sms, cudaStream_t st) {
    int few = grid.x / (unsigned)a.sk < 2u * (unsigned)sms; /* row blocks */
    int q4 = WT == 1 || WT == 3, set = tmoe_cuda_expert_stages >= 0;
    /* split-K (split_of): fp16 / bf16 at up to 16 tokens, 16-warp blocks */
    constexpr bool F16 = WT == 0 || WT == 4;
    if (nt_n <= 8) {
        int stages = set ? tmoe_cuda_expert_stages : q4 ? 3 : 0;
        if (F16 && a.sk > 1) return launch_st<WT, 1, 16, F16>(a, grid, stages, st);
        return few ? launch_st<WT, 1, 16>(a, grid, stages, st)
                   : launch_st<WT, 1, 8>(a, grid, stages, st);
    }
    if (nt_n <= 16) {
        int stages = set ? tmoe_cuda_expert_stages : 0;
        if (F16 && a.sk > 1) return launch_st<WT, 2, 16, F16>(a, grid, stages, st);
        return few ? launch_st<WT, 2, 16>(a, grid, stages, st)
                   : launch_st<WT, 2, 8>(a, grid, stages, st);
    }
    if (nt_n <= 32) return launch_k<WT, 4, 8, 0>(a, grid, st);
    return launch_k<WT, EXP_MAXNT, 8, 0>(a, grid, st);
}

int tmoe_cuda_expert_tile_from_average = 1;
int tmoe_cuda_expert_splitk = -1;
int tmoe_cuda_act8 = 0;
int tmoe_cuda_act8_tokens = 1;
int tmoe_cuda_act8_q2_stages = 0;

/* The int8 path (WT 5: q4, 6: q2) for a launch whose token tile is at most 4 tokens (1, 2 or 4
 * a pass), 16 warps a block as for the mma where the row blocks are few; the ring depth
 * tmoe_cuda_expert_stages where set, else 3 for q4 and tmoe_cuda_act8_q2_stages for q2. Where
 * the ring and the warps' int8 activations (NT x in x 1.25 bytes a block) would not fit the
 * device's shared memory, a ring of 3, then the register pipeline; *used = 0 (nothing
 * launched) where even that would not fit (above about 40,000 inputs at 4 tokens): the caller
 * takes the mma. */
template <int WT>
static cudaError_t launch_i8(const exp_args &a, dim3 grid, int nt_n, int sms, int *used,
                             cudaStream_t st) {
    constexpr int KW = WT == 5 ? 128 : 256;
    static int optin[16];
    *used = 0;
    int dev = 0, lim = 0;
    cudaError_t ce = cudaGetDevice(&dev);
    if (ce != cudaSuccess) return ce;
    if (dev >= 0 && dev < 16 && optin[dev]) {
        lim = optin[dev];
    } else {
        ce = cudaDeviceGetAttribute(&lim, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
        if (ce != cudaSuccess) return ce;
        if (dev >= 0 && dev < 16) optin[dev] = lim;
    }
    const int few = grid.x < 2u * (unsigned)sms, w = few ? 16 : 8;
    const int nt = nt_n <= 1 ? 1 : nt_n <= 2 ? 2 : 4;
    const int per = kb_per_warp(a.in / KW, w, 1);
    const size_t extra = (size_t)w * i8_warp_bytes(nt, per, KW);
    int stages = tmoe_cuda_expert_stages >= 0 ? tmoe_cuda_expert_stages
                 : WT == 5                    ? 3
                                              : tmoe_cuda_act8_q2_stages;
    auto fits = [&](int st_) { return exp_smem_bytes(w, st_) + extra <= (size_t)lim; };
    if (!fits(stages)) stages = stages > 3 && fits(3) ? 3 : 0;
    if (!fits(stages)) return cudaSuccess;
    *used = 1;
    exp_args b = a;
    b.wt = WT;
    if (few) {
        if (nt == 1) return launch_st<WT, 1, 16>(b, grid, stages, st, extra);
        if (nt == 2) return launch_st<WT, 2, 16>(b, grid, stages, st, extra);
        return launch_st<WT, 4, 16>(b, grid, stages, st, extra);
    }
    if (nt == 1) return launch_st<WT, 1, 8>(b, grid, stages, st, extra);
    if (nt == 2) return launch_st<WT, 2, 8>(b, grid, stages, st, extra);
    return launch_st<WT, 4, 8>(b, grid, stages, st, extra);
}

/* The tokens the token tile is sized for. max_n bounds every expert, but many small experts
 * (fine-grained MoE: 128 experts, top-8) hold a few tokens each, and a tile sized for max_n
 * costs every block the registers of 32-64 tokens (255 a thread, one block a SM). Where one
 * block's weight rows, over all SMs, sit well inside L2 (24 MB: half of an H100's), the tile
 * is sized for twice the average tokens an active expert holds, and an expert holding more
 * takes another pass over rows its block has just read (from L2). */
static int tile_tokens(const tmoe_cuda_lin *L, int rows_per_block, int max_n, int n_rows,
                       int max_active, int sms) {
    if (!tmoe_cuda_expert_tile_from_average || n_rows <= 0 || max_active <= 1) return max_n;
    size_t block_bytes = (size_t)rows_per_block * (L->w_stride / (size_t)L->out);
    if ((size_t)sms * block_bytes > ((size_t)24 << 20)) return max_n;
    int avg2 = 2 * ((n_rows + max_active - 1) / max_active);
    return avg2 < max_n ? avg2 : max_n;
}

/* The split-K of fp16 / bf16 where tmoe_cuda_expert_splitk is not set: 1, no split */
#define SPLITK_DEFAULT 1

/* The blocks a row block is split over along k: tmoe_cuda_expert_splitk where set (1-8), else
 * SPLITK_DEFAULT, for fp16 / bf16 weights (wt 0, 4) in token tiles of up to 16 tokens where the
 * blocks without a split (rblocks a row of the grid, gy rows) would not give every SM two;
 * else 1, as on a device without cluster launch. */
static int split_of(int dev, int wt, int nt_n, unsigned rblocks, unsigned gy, int sms,
                    tmoe_error *err, int *sk) {
    static int cl[16]; /* per device: 0 unknown, 1 no clusters, 2 clusters */
    const int want = tmoe_cuda_expert_splitk > 0 ? tmoe_cuda_expert_splitk : SPLITK_DEFAULT;
    *sk = 1;
    if (want <= 1 || (wt != 0 && wt != 4) || nt_n > 16 || (size_t)rblocks * gy >= 2u * (size_t)sms)
        return TMOE_OK;
    int c = dev >= 0 && dev < 16 ? cl[dev] : 0;
    if (!c) {
        int v = 0;
        TMOE_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrClusterLaunch, dev), err);
        c = v ? 2 : 1;
        if (dev >= 0 && dev < 16) cl[dev] = c;
    }
    if (c == 2) *sk = want < 8 ? want : 8;
    return TMOE_OK;
}

static int wt_of(tmoe_etype t) {
    return t == TMOE_ET_FP16 ? 0 : t == TMOE_ET_Q4 ? 1 : t == TMOE_ET_BF16 ? 4 : 2;
}

extern "C" int tmoe_cuda_expert_kernel_supports(const tmoe_cuda_lin *L, tmoe_cuda_epi epi,
                                                tmoe_error *err) {
    int kb = !tmoe_etype_is_quant(L->type) ? 32 : L->type == TMOE_ET_Q4 ? 128 : 256;
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
    if (tmoe_etype_is_quant(L->type) &&
        (L->group % (kb / 4) || L->group <= 0 || (L->group & (L->group - 1))))
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "expert kernel: %s group %d must be a power of two and a multiple of "
                           "%d (use the unfused impl for this group size)",
                           tmoe_etype_name(L->type), L->group, kb / 4);
    return TMOE_OK;
}

extern "C" int tmoe_cuda_expert_linear(const tmoe_cuda_lin *L, tmoe_cuda_epi epi, int n_experts,
                                       const int32_t *experts, const int32_t *active,
                                       const int32_t *slot_of, const int32_t *counts,
                                       const int32_t *offsets, const tmoe_f16 *x,
                                       const int32_t *src, int k, int max_n, int n_rows,
                                       int max_active, float *y32, tmoe_f16 *y16,
                                       cudaStream_t stream, tmoe_error *err) {
    int rc = tmoe_cuda_expert_kernel_supports(L, epi, err);
    if (rc) return rc;
    if (n_experts <= 0) return TMOE_OK;
    int sms = L->sm_count, dev = 0;
    TMOE_CUDA_CHECK(cudaGetDevice(&dev), err);
    if (sms <= 0) {
        rc = tmoe_cuda_sm_count(dev, &sms, err);
        if (rc) return rc;
    }
    exp_args a;
    a.w = static_cast<const uint8_t *>(L->w);
    a.sc = reinterpret_cast<const __half *>(L->scales);
    a.w_stride = L->w_stride;
    a.s_stride = L->s_stride;
    a.in = L->in;
    a.gshift = 0;
    while (tmoe_etype_is_quant(L->type) && (1 << a.gshift) < L->group) a.gshift++;
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
    a.sk = 1;
    a.y32 = y32;
    a.y16 = reinterpret_cast<__half *>(y16);
    /* with the active list, block row y serves active[1 + y], which may be an expert of
     * another type (its block returns at once): cover every entry, not n_experts of them */
    int gy = active && max_active > 0 ? max_active : n_experts;
    dim3 grid(a.out_rows / (epi == TMOE_CUDA_EPI_SWIGLU ? 16 : 32), gy);
    /* a block reads 32 weight rows (16 gate + 16 up with swiglu) */
    int nt_n = tile_tokens(L, 32, max_n, n_rows, max_active, sms);
    rc = split_of(dev, a.wt, nt_n, grid.x, grid.y, sms, err, &a.sk);
    if (rc) return rc;
    grid.x *= (unsigned)a.sk;
    cudaError_t ce = cudaSuccess;
    int used = 0;
    if (a.wt != 0 && a.wt != 4 && (tmoe_cuda_act8 || L->act8) &&
        nt_n <= (tmoe_cuda_act8_tokens < 4 ? tmoe_cuda_act8_tokens : 4)) {
        ce = a.wt == 2 ? launch_i8<6>(a, grid, nt_n, sms, &used, stream)
                       : launch_i8<5>(a, grid, nt_n, sms, &used, stream);
        TMOE_CUDA_CHECK(ce, err);
    }
    if (!used) switch (a.wt) {
        case 0: ce = launch_expert<0>(a, grid, nt_n, sms, stream); break;
        case 1: ce = launch_expert<1>(a, grid, nt_n, sms, stream); break;
        case 3: ce = launch_expert<3>(a, grid, nt_n, sms, stream); break;
        case 4: ce = launch_expert<4>(a, grid, nt_n, sms, stream); break;
        default: ce = launch_expert<2>(a, grid, nt_n, sms, stream); break;
        }
    TMOE_CUDA_CHECK(ce, err);
    TMOE_CUDA_LAUNCHED(stream, "expert_linear", err);
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
