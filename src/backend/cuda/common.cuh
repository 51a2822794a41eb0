/* Private to the CUDA kernel files (*.cu here): the device helpers they share (16-byte
 * streaming loads, the m16n8k16 mma, q4/q2 dequantization in registers) and the grid size of
 * the grid-stride kernels. The launch check (TMOE_CUDA_LAUNCHED) and the call check
 * (TMOE_CUDA_CHECK) live in cuda_ops.h, which the C files of the backend use as well.
 * Numerics of every kernel follow the CPU reference: fp16 operands (bf16 experts: bf16
 * weights, the fp16 activations rounded to bf16), fp32 accumulation, fp16 activations. */
#ifndef THERMOE_CUDA_COMMON_CUH
#define THERMOE_CUDA_COMMON_CUH

#include "cuda_ops.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

static __device__ __forceinline__ uint4 ld_stream(const void *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

/* 16 bytes global -> shared without the registers (sm_80+: cp.async, L2 only), in commit
 * groups; wait until at most N of this thread's groups are in flight. */
static __device__ __forceinline__ void cp_async16(uint32_t dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}
static __device__ __forceinline__ void cp_async_commit(void) {
    asm volatile("cp.async.commit_group;" ::: "memory");
}
template <int N> static __device__ __forceinline__ void cp_async_wait(void) {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

static __device__ __forceinline__ void mma16816(float c[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                                uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* The bf16 form: A and B bf16, fp32 accumulators (same fragment layout as the fp16 one). */
static __device__ __forceinline__ void mma16816_bf16(float c[4], uint32_t a0, uint32_t a1,
                                                     uint32_t a2, uint32_t a3, uint32_t b0,
                                                     uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* Four products of unsigned bytes of a by signed bytes of b, summed into c */
static __device__ __forceinline__ int dp4a_us(uint32_t a, uint32_t b, int c) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

static __device__ __forceinline__ uint32_t h2u(__half2 h) {
    return *reinterpret_cast<uint32_t *>(&h);
}
static __device__ __forceinline__ __half2 u2h(uint32_t u) {
    return *reinterpret_cast<__half2 *>(&u);
}

/* Two fp16 (one word, low element first) -> two bf16, each rounded to nearest even (as
 * tmoe_f32_to_bf16: fp16 -> fp32 is exact). */
static __device__ __forceinline__ uint32_t h2_to_bf2(uint32_t u) {
    float2 f = __half22float2(u2h(u));
    __nv_bfloat162 b = __floats2bfloat162_rn(f.x, f.y);
    return *reinterpret_cast<uint32_t *>(&b);
}

/* Dequantization in registers. A nibble (crumb) u holds e in two's complement, so u ^ 8 (u ^
 * 2) = e + 8 (e + 2). One and-xor per half2 builds the fp16 1024 + (u ^ 8) << s: the mask
 * picks the element of each half, the xor adds the exponent bits 0x6400 and flips the sign
 * bit (the two never overlap). Elements at bit shift s = 0 take a subtraction, the others an
 * fma by 2^-s; every step is exact in fp16 (all values are integers below 2048). Per q4 word:
 * one shift, 4 lop3, 4 half2 ops. */
static __device__ __forceinline__ __half2 h2c(unsigned short bits) {
    return __half2half2(__ushort_as_half(bits));
}
/* (a & b) ^ c as one lop3 (written out, the compiler gives two: one immediate each) */
static __device__ __forceinline__ uint32_t and_xor(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t r;
    asm("lop3.b32 %0, %1, %2, %3, 0x6a;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}

/* q4 word -> 4 half2 of the exact integers (e_j, e_{j+4}), j = 0..3 */
static __device__ __forceinline__ void deq_q4_int(uint32_t w, uint32_t o[4]) {
    const uint32_t w8 = w >> 8;
    const __half2 off = h2c(0x6408);                            /* 1032 = 1024 + 8 */
    const __half2 sixteenth = h2c(0x2c00), off16 = h2c(0xd480); /* 1/16, -72 = -(64 + 8) */
    o[0] = h2u(__hsub2(u2h(and_xor(w, 0x000f000fu, 0x64086408u)), off));
    o[1] = h2u(__hfma2(u2h(and_xor(w, 0x00f000f0u, 0x64806480u)), sixteenth, off16));
    o[2] = h2u(__hsub2(u2h(and_xor(w8, 0x000f000fu, 0x64086408u)), off));
    o[3] = h2u(__hfma2(u2h(and_xor(w8, 0x00f000f0u, 0x64806480u)), sixteenth, off16));
}

/* q4 word (8 elements) -> 4 half2 (e_j, e_{j+4}) * scale, j = 0..3 */
static __device__ __forceinline__ void deq_q4(uint32_t w, __half2 s2, uint32_t o[4]) {
    deq_q4_int(w, o);
#pragma unroll
    for (int j = 0; j < 4; j++) o[j] = h2u(__hmul2(u2h(o[j]), s2));
}

/* q2 word (16 elements) -> 8 half2 (e_j, e_{j+8}) * scale, j = 0..7; one lop3 per half2 as
 * for q4 */
static __device__ __forceinline__ void deq_q2(uint32_t w, __half2 s2, uint32_t o[8]) {
    const uint32_t w8 = w >> 8;
    /* crumb at shift 2i of a byte: 1024 + 4^i (u ^ 2); times 4^-i, minus 1024 / 4^i + 2 */
    const unsigned short mul[4] = {0x3c00, 0x3400, 0x2c00, 0x2400}; /* 1, 1/4, 1/16, 1/64 */
    const unsigned short off[4] = {0xe402, 0xdc08, 0xd420, 0xcc80}; /* -1026, -258, -66, -18 */
#pragma unroll
    for (int j = 0; j < 8; j++) {
        const int i = j & 3;
        const uint32_t src = j < 4 ? w : w8;
        const uint32_t p =
            and_xor(src, 0x00030003u << (2 * i), 0x64006400u | (0x00020002u << (2 * i)));
        __half2 v =
            i == 0 ? __hadd2(u2h(p), h2c(off[0])) : __hfma2(u2h(p), h2c(mul[i]), h2c(off[i]));
        o[j] = h2u(__hmul2(v, s2));
    }
}

/* Blocks of 256 threads for a grid-stride loop over n items (at most 65535, at least 1). */
static inline int grid_for(size_t n) {
    size_t b = (n + 255) / 256;
    return (int)(b > 65535 ? 65535 : (b ? b : 1));
}

#endif
