/* Routing: gate_topk, permute (histogram, scan, stable scatter), gather, combine, and the
 * one-expert routing arrays for timing an expert op alone (contracts in cuda_ops.h). */
#include "common.cuh"

/* ---- gate_topk: one warp per token ------------------------------------------------------
 * NaN scores and weight logits count as -inf (the CPU rule, include/thermoe/backend.h): they lose
 * every comparison but -inf ties (lower index first) and carry probability 0; with no
 * probability at all the weights are 0. */
__global__ void k_gate_topk(const float *logits, const float *bias, int T, int E, int k, int renorm,
                            int biw, int32_t *idx, float *w, int32_t *hidx, float *hw) {
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
            if (isnan(s[i])) s[i] = -INFINITY;
            if (isnan(zw[i])) zw[i] = -INFINITY;
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
        if (lane + 32 * i < E && zw[i] > -INFINITY) den += expf(zw[i] - mx);
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
            bool take = oe != 0x7fffffff && (be == 0x7fffffff || os > bs || (os == bs && oe < be));
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
                if (i == bi) p = zw[i] > -INFINITY ? expf(zw[i] - mx) : 0.0f;
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
        float v = norm > 0.0f ? mine / norm : 0.0f;
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
        return tmoe_errorf(err, TMOE_EINVAL,
                           "gate_topk: E = %d, k = %d: need 1 <= k <= min(E, 16), E <= 256", E, k);
    if (T <= 0) return TMOE_OK;
    int blocks = (T + 7) / 8;
    k_gate_topk<<<blocks, 256, 0, stream>>>(logits, bias, T, E, k, renorm, bias_in_weights, idx, w,
                                            host_idx, host_w);
    TMOE_CUDA_LAUNCHED(stream, "gate_topk", err);
    return TMOE_OK;
}

/* ---- permute: one block of 1024 threads; warp w owns experts w, w+32, ...; a ballot over
 * the copies in order gives a stable scatter. -------------------------------------------- */
__global__ void __launch_bounds__(1024)
    k_permute(const int32_t *idx, int N, int E, int32_t *counts, int32_t *offsets, int32_t *src,
              int32_t *dst, int32_t *hcounts, int32_t *active) {
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
        for (int j = 0; j < k; j++) { /* a weight-0 copy (a padded slot) adds nothing, even
                                          where its expert's output is inf or NaN */
            const float wj = w[t * k + j];
            if (wj != 0.0f) acc += wj * ye[(size_t)dst[t * k + j] * D + i];
        }
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
