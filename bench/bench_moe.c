/* bench_moe: times the CUDA backend's MoE kernels on the H100 shapes of issue 3 ("mixtral"
 * 4096 x 14336, 8 experts top-2; "fine" 2048 x 768, 128 experts top-8), tokens 1..1024:
 * one expert (fc1 + act + fc2) per path, the 4096 x 14336 matrix alone, the fine-grained
 * 768 x 2048 MUL_MAT_ID projection, dequant_unpack, and the whole MoE layer step (gate GEMM,
 * top-k, permute, experts, combine) replayed from a CUDA Graph. Weights are rotated over
 * enough copies that every timed call reads > 256 MB of distinct weights or all its weights
 * from DRAM. Reports the median CUDA-event time, GB/s against the device-to-device copy
 * bandwidth measured in the same run, TFLOP/s and (layer steps and experts) energy per token
 * from NVML's total-energy counter over a >= 1 s loop. Output: markdown rows on stdout. */
#include "backend/cuda/fill.h"
#include "thermoe/model.h"

#include <cublas_v2.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Device fills from the library (src/backend/cuda/fill.h), on the default stream. */
static int bench_fill_bytes(void *p, size_t n, uint64_t seed) {
    return tmoe_cuda_fill_bytes(p, n, seed, 0, NULL);
}
static int bench_fill_f16(void *p, size_t n, float lo, float hi, uint64_t seed) {
    return tmoe_cuda_fill_f16((tmoe_f16 *)p, n, lo, hi, seed, 0, NULL);
}
static int bench_fill_f32(float *p, size_t n, float lo, float hi, uint64_t seed) {
    return tmoe_cuda_fill_f32(p, n, lo, hi, seed, 0, NULL);
}

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t ce_ = (call);                                                                  \
        if (ce_ != cudaSuccess) {                                                                  \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                          \
                    cudaGetErrorString(ce_));                                                      \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define CB(call)                                                                                   \
    do {                                                                                           \
        cublasStatus_t cs_ = (call);                                                               \
        if (cs_ != CUBLAS_STATUS_SUCCESS) {                                                        \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                          \
                    cublasGetStatusString(cs_));                                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
static tmoe_error g_err;
static void okf(int rc, const char *what) {
    if (rc) {
        fprintf(stderr, "%s failed: %s\n", what, g_err.msg);
        exit(1);
    }
}
#define T_OK(expr) okf((expr), #expr)

static cudaStream_t g_st;
static cublasHandle_t g_cb;
static double g_copy_gbs;
static int g_quick;
static int g_short; /* --short: the token counts of the side-by-side table, no energy loops */
static int g_sms;   /* multiprocessors of device 0, queried once (tmoe_cuda_lin.sm_count) */

/* ---- NVML through dlopen, our own declarations ---------------------------------------- */
typedef struct nvmlDevice_st *nvmlDevice_t;
static int (*p_nvmlInit)(void);
static int (*p_nvmlGetHandle)(unsigned, nvmlDevice_t *);
static int (*p_nvmlEnergy)(nvmlDevice_t, unsigned long long *);
static int (*p_nvmlDriver)(char *, unsigned);
static nvmlDevice_t g_nvdev;
static int g_nvml_ok;

static void nvml_open(char *driver, size_t n) {
    snprintf(driver, n, "unknown");
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    if (!h) return;
    p_nvmlInit = (int (*)(void))dlsym(h, "nvmlInit_v2");
    p_nvmlGetHandle = (int (*)(unsigned, nvmlDevice_t *))dlsym(h, "nvmlDeviceGetHandleByIndex_v2");
    p_nvmlEnergy = (int (*)(nvmlDevice_t, unsigned long long *))dlsym(
        h, "nvmlDeviceGetTotalEnergyConsumption");
    p_nvmlDriver = (int (*)(char *, unsigned))dlsym(h, "nvmlSystemGetDriverVersion");
    if (!p_nvmlInit || !p_nvmlGetHandle || !p_nvmlEnergy || p_nvmlInit() != 0) return;
    int dev = 0;
    CK(cudaGetDevice(&dev));
    if (p_nvmlGetHandle((unsigned)dev, &g_nvdev) != 0) return;
    unsigned long long mj;
    g_nvml_ok = p_nvmlEnergy(g_nvdev, &mj) == 0;
    if (p_nvmlDriver) p_nvmlDriver(driver, (unsigned)n);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- timing ------------------------------------------------------------------------------ */
typedef void (*step_fn)(void *ctx, int iter);
#define MAXREP 64

static double median_ms(step_fn f, void *ctx) {
    static cudaEvent_t e0[MAXREP], e1[MAXREP];
    static int init;
    if (!init) {
        for (int i = 0; i < MAXREP; i++) {
            CK(cudaEventCreate(&e0[i]));
            CK(cudaEventCreate(&e1[i]));
        }
        init = 1;
    }
    int reps = g_quick ? 10 : 30;
    for (int i = 0; i < 3; i++) f(ctx, i);
    for (int i = 0; i < reps; i++) {
        CK(cudaEventRecord(e0[i], g_st));
        f(ctx, i + 3);
        CK(cudaEventRecord(e1[i], g_st));
    }
    CK(cudaStreamSynchronize(g_st));
    double t[MAXREP];
    for (int i = 0; i < reps; i++) {
        float ms;
        CK(cudaEventElapsedTime(&ms, e0[i], e1[i]));
        t[i] = ms;
    }
    qsort(t, (size_t)reps, sizeof *t, tmoe_cmp_double);
    return t[reps / 2];
}

/* Joules per call over a loop of at least 1 s (NAN without NVML). */
static double joules_per_call(step_fn f, void *ctx, double ms) {
    if (!g_nvml_ok || g_quick || g_short) return NAN;
    int n = (int)(1.05e3 / (ms > 1e-3 ? ms : 1e-3)) + 1;
    unsigned long long a, b;
    CK(cudaStreamSynchronize(g_st));
    if (p_nvmlEnergy(g_nvdev, &a)) return NAN;
    double t0 = now_s();
    for (int i = 0; i < n; i++) f(ctx, i);
    CK(cudaStreamSynchronize(g_st));
    double dt = now_s() - t0;
    if (p_nvmlEnergy(g_nvdev, &b)) return NAN;
    if (dt < 1.0) return NAN;
    return (double)(b - a) * 1e-3 / n;
}

/* ---- weight banks: `slots` experts of one type, random ------------------------------------ */
typedef struct bank {
    tmoe_etype t;
    int slots;
    tmoe_cuda_lin fc1, fc2; /* row-major (cuBLAS, dequant_unpack) */
    tmoe_cuda_lin k1, k2;   /* tiled copies (the bandwidth kernel, as the engine keeps them) */
} bank;

static void lin_make(tmoe_cuda_lin *L, tmoe_etype t, int out, int in, int slots, uint64_t seed) {
    memset(L, 0, sizeof *L);
    L->type = t;
    L->out = out;
    L->in = in;
    L->group = TMOE_DEFAULT_GROUP;
    L->w_stride = tmoe_quant_weight_bytes(t, out, in);
    L->sm_count = g_sms; /* as the engine does: no device query per launch */
    void *w = NULL, *s = NULL;
    CK(cudaMalloc(&w, L->w_stride * slots));
    float a = 1.0f / sqrtf((float)in);
    if (t == TMOE_ET_FP16) {
        if (bench_fill_f16(w, L->w_stride * slots / 2, -a, a, seed)) exit(1);
    } else if (t == TMOE_ET_BF16) {
        if (tmoe_cuda_fill_bf16(w, L->w_stride * slots / 2, -a, a, seed, 0, NULL)) exit(1);
    } else {
        L->s_stride = tmoe_quant_scale_count(out, in, L->group);
        CK(cudaMalloc(&s, L->s_stride * 2 * slots));
        if (bench_fill_bytes(w, L->w_stride * slots, seed)) exit(1);
        if (bench_fill_f16(s, L->s_stride * slots, a / 8, a / 4, seed + 1)) exit(1);
    }
    L->w = w;
    L->scales = s;
}

static tmoe_cuda_lin lin_tiled(const tmoe_cuda_lin *L, int slots) {
    tmoe_cuda_lin r = *L;
    void *w = NULL;
    CK(cudaMalloc(&w, L->w_stride * slots));
    T_OK(tmoe_cuda_tile_weights(L->w, w, L->out, L->w_stride / L->out, slots, g_st, &g_err));
    CK(cudaStreamSynchronize(g_st));
    r.w = w;
    r.tiled = 1;
    return r;
}

static void lin_free(tmoe_cuda_lin *L) {
    cudaFree((void *)L->w);
    cudaFree((void *)L->scales);
}

static tmoe_cuda_lin lin_slot(const tmoe_cuda_lin *L, int slot) {
    tmoe_cuda_lin r = *L;
    r.w = (const uint8_t *)L->w + L->w_stride * slot;
    if (L->scales) r.scales = L->scales + L->s_stride * slot;
    return r;
}

static size_t lin_bytes(const tmoe_cuda_lin *L) {
    return L->w_stride + L->s_stride * 2;
}

/* ---- shared device buffers ------------------------------------------------------------------ */
#define TMAX 1024
typedef struct shape {
    const char *name;
    int D, F, E, k;
} shape;

static tmoe_f16 *d_x16, *d_xg, *d_a16, *d_u1, *d_u2, *d_gate;
static float *d_h32, *d_y, *d_ye, *d_logits, *d_w, *d_res;
static int32_t *d_active, *d_idx, *d_counts, *d_offs, *d_src, *d_dst, *d_one_e, *d_one_c, *d_one_o;
static int32_t *h_counts;

static void gemm(const tmoe_f16 *x, const tmoe_f16 *W, int n, int in, int out, float *y) {
    const float one = 1.0f, zero = 0.0f;
    CB(cublasGemmEx(g_cb, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, W, CUDA_R_16F, in, x,
                    CUDA_R_16F, in, &zero, y, CUDA_R_32F, out, CUBLAS_COMPUTE_32F,
                    CUBLAS_GEMM_DEFAULT));
}

/* ---- one expert ------------------------------------------------------------------------------ */
enum { P_KERNEL, P_CUBLAS, P_UNFUSED_KERNEL, P_UNFUSED_CUBLAS };
static const char *path_name[] = {"kernel", "cublas", "unfused+kernel", "unfused+cublas"};

typedef struct exp_ctx {
    bank *b;
    int n, path;
} exp_ctx;

static void expert_step(void *p, int iter) {
    exp_ctx *c = p;
    int slot = iter % c->b->slots;
    tmoe_cuda_lin l1 = lin_slot(&c->b->fc1, slot), l2 = lin_slot(&c->b->fc2, slot);
    int path = c->path;
    if (path == P_UNFUSED_KERNEL || path == P_UNFUSED_CUBLAS) {
        T_OK(tmoe_cuda_dequant_unpack(&l1, 1, d_one_e, NULL, d_u1, g_st, &g_err));
        T_OK(tmoe_cuda_dequant_unpack(&l2, 1, d_one_e, NULL, d_u2, g_st, &g_err));
        l1.type = l2.type = TMOE_ET_FP16;
        l1.w = d_u1;
        l2.w = d_u2;
        l1.scales = l2.scales = NULL;
        l1.w_stride = (size_t)l1.out * l1.in * 2;
        l2.w_stride = (size_t)l2.out * l2.in * 2;
        l1.s_stride = l2.s_stride = 0;
        path = path == P_UNFUSED_KERNEL ? P_KERNEL : P_CUBLAS;
    }
    int F = l2.in;
    if (c->path == P_KERNEL) {
        l1 = lin_slot(&c->b->k1, slot);
        l2 = lin_slot(&c->b->k2, slot);
    }
    if (path == P_KERNEL) {
        T_OK(tmoe_cuda_expert_linear(&l1, TMOE_CUDA_EPI_SWIGLU, 1, d_one_e, NULL, NULL, d_one_c,
                                     d_one_o, d_x16, NULL, 1, c->n, c->n, 0, NULL, d_a16, g_st,
                                     &g_err));
        T_OK(tmoe_cuda_expert_linear(&l2, TMOE_CUDA_EPI_NONE, 1, d_one_e, NULL, NULL, d_one_c,
                                     d_one_o, d_a16, NULL, 1, c->n, c->n, 0, d_y, NULL, g_st,
                                     &g_err));
    } else {
        gemm(d_x16, l1.w, c->n, l1.in, l1.out, d_h32);
        T_OK(tmoe_cuda_act(TMOE_ACT_SWIGLU, d_h32, c->n, F, d_a16, g_st, &g_err));
        gemm(d_a16, l2.w, c->n, l2.in, l2.out, d_y);
    }
}

/* one linear alone (epi none) */
typedef struct mat_ctx {
    tmoe_cuda_lin *L, *K;
    int slots, n, cublas, E;
} mat_ctx;

static void mat_step(void *p, int iter) {
    mat_ctx *c = p;
    tmoe_cuda_lin l = lin_slot(c->cublas ? c->L : c->K, (iter % c->slots) * c->E);
    if (c->cublas)
        gemm(d_x16, l.w, c->n, l.in, l.out, d_y);
    else
        T_OK(tmoe_cuda_expert_linear(&l, TMOE_CUDA_EPI_NONE, 1, d_one_e, NULL, NULL, d_one_c,
                                     d_one_o, d_x16, NULL, 1, c->n, c->n, 0, d_y, NULL, g_st,
                                     &g_err));
}

/* dequant alone */
typedef struct deq_ctx {
    tmoe_cuda_lin *L;
    int slots;
} deq_ctx;

static void deq_step(void *p, int iter) {
    deq_ctx *c = p;
    tmoe_cuda_lin l = lin_slot(c->L, iter % c->slots);
    T_OK(tmoe_cuda_dequant_unpack(&l, 1, d_one_e, NULL, d_u1, g_st, &g_err));
}

/* routed projection / layer step over all E experts of copy c */
static int32_t *d_all_e; /* 0..E-1 */

typedef struct layer_ctx {
    const shape *s;
    bank *b;
    int copies, T, cublas;
    tmoe_cuda_lin *proj, *projt; /* MUL_MAT_ID mode: one linear (row-major, tiled) */
    cudaGraphExec_t g[64];
} layer_ctx;

static void routing(const shape *s, int T) {
    T_OK(tmoe_cuda_gate_topk(d_logits, NULL, T, s->E, s->k, 1, 0, d_idx, d_w, NULL, NULL, g_st,
                             &g_err));
    T_OK(tmoe_cuda_permute(d_idx, T, s->k, s->E, d_counts, d_offs, d_src, d_dst, d_active, h_counts,
                           g_st, &g_err));
}

static void layer_enqueue(layer_ctx *c, int copy) {
    const shape *s = c->s;
    int T = c->T, E = s->E, k = s->k, D = s->D, F = s->F;
    tmoe_cuda_lin l1 = lin_slot(c->cublas ? &c->b->fc1 : &c->b->k1, copy * E);
    tmoe_cuda_lin l2 = lin_slot(c->cublas ? &c->b->fc2 : &c->b->k2, copy * E);
    gemm(d_x16, d_gate, T, D, E, d_logits);
    routing(s, T);
    if (!c->cublas) {
        int ma = T * k < E ? T * k : E;
        T_OK(tmoe_cuda_expert_linear(&l1, TMOE_CUDA_EPI_SWIGLU, E, d_all_e, d_active, NULL,
                                     d_counts, d_offs, d_x16, d_src, k, T, T * k, ma, NULL, d_a16,
                                     g_st, &g_err));
        T_OK(tmoe_cuda_expert_linear(&l2, TMOE_CUDA_EPI_NONE, E, d_all_e, d_active, NULL, d_counts,
                                     d_offs, d_a16, NULL, k, T, T * k, ma, d_ye, NULL, g_st,
                                     &g_err));
    } else {
        CK(cudaStreamSynchronize(g_st));
        T_OK(tmoe_cuda_gather(d_x16, d_src, T * k, k, D, d_xg, g_st, &g_err));
        int off = 0;
        for (int e = 0; e < E; e++) {
            int n = h_counts[e];
            if (n)
                gemm(d_xg + (size_t)off * D,
                     (const tmoe_f16 *)((const uint8_t *)l1.w + l1.w_stride * e), n, D, 2 * F,
                     d_h32 + (size_t)off * 2 * F);
            off += n;
        }
        T_OK(tmoe_cuda_act(TMOE_ACT_SWIGLU, d_h32, T * k, F, d_a16, g_st, &g_err));
        off = 0;
        for (int e = 0; e < E; e++) {
            int n = h_counts[e];
            if (n)
                gemm(d_a16 + (size_t)off * F,
                     (const tmoe_f16 *)((const uint8_t *)l2.w + l2.w_stride * e), n, F, D,
                     d_ye + (size_t)off * D);
            off += n;
        }
    }
    T_OK(tmoe_cuda_combine(d_ye, d_dst, d_w, d_res, T, k, D, d_y, g_st, &g_err));
}

static void layer_step(void *p, int iter) {
    layer_ctx *c = p;
    int copy = iter % c->copies;
    if (c->cublas) {
        layer_enqueue(c, copy);
        return;
    }
    if (!c->g[copy]) {
        cudaGraph_t g;
        CK(cudaStreamBeginCapture(g_st, cudaStreamCaptureModeThreadLocal));
        layer_enqueue(c, copy);
        CK(cudaStreamEndCapture(g_st, &g));
        CK(cudaGraphInstantiate(&c->g[copy], g, 0));
        CK(cudaGraphDestroy(g));
    }
    CK(cudaGraphLaunch(c->g[copy], g_st));
}

static void proj_step(void *p, int iter) {
    layer_ctx *c = p;
    int copy = iter % c->copies;
    tmoe_cuda_lin l = lin_slot(c->cublas ? c->proj : c->projt, copy * c->s->E);
    if (!c->cublas) {
        int ma = c->T * c->s->k < c->s->E ? c->T * c->s->k : c->s->E;
        T_OK(tmoe_cuda_expert_linear(&l, TMOE_CUDA_EPI_NONE, c->s->E, d_all_e, d_active, NULL,
                                     d_counts, d_offs, d_x16, d_src, c->s->k, c->T, c->T * c->s->k,
                                     ma, d_ye, NULL, g_st, &g_err));
        return;
    }
    int off = 0;
    for (int e = 0; e < c->s->E; e++) {
        int n = h_counts[e];
        if (n)
            gemm(d_xg + (size_t)off * l.in,
                 (const tmoe_f16 *)((const uint8_t *)l.w + l.w_stride * e), n, l.in, l.out,
                 d_ye + (size_t)off * l.out);
        off += n;
    }
}

/* ---- reporting --------------------------------------------------------------------------------
 */
static void rowj(const char *what, const char *shp, const char *type, const char *path, int T,
                 double ms, double bytes, double flops, double j_call) {
    double gbs = bytes / (ms * 1e-3) / 1e9;
    char jt[64] = "-";
    if (!isnan(j_call)) snprintf(jt, sizeof jt, "%.4g", j_call / T);
    printf("| %s | %s | %s | %s | %d | %.1f | %.0f | %.1f%% | %.2f | %s |\n", what, shp, type, path,
           T, ms * 1e3, gbs, 100.0 * gbs / g_copy_gbs, flops / (ms * 1e-3) / 1e12, jt);
    fflush(stdout);
}

static void copy_ctx_step(void *p, int iter) {
    void **b = p;
    (void)iter;
    CK(cudaMemcpyAsync(b[0], b[1], (size_t)1 << 30, cudaMemcpyDeviceToDevice, g_st));
}

int main(int argc, char **argv) {
    int ncu_only = 0; /* --ncu: the 4096 x 14336 matrix alone, q4 and fp16, 1 token, 3 calls */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) g_quick = 1;
        if (!strcmp(argv[i], "--ncu")) ncu_only = 1;
        if (!strcmp(argv[i], "--short")) g_short = 1;
    }
    /* THERMOE_EXPERT_STAGES: the expert kernel's weight ring (0: registers; 3, 4, 6) */
    const char *st_env = getenv("THERMOE_EXPERT_STAGES");
    if (st_env && *st_env) tmoe_cuda_expert_stages = atoi(st_env);
    /* THERMOE_ACT8=1: q4 / q2 at up to 4 tokens an expert on the int8 path (int8 activations) */
    /* THERMOE_EXPERT_SPLITK=N: fp16 / bf16 split-K over clusters of N blocks (few row blocks) */
    const char *sk_env = getenv("THERMOE_EXPERT_SPLITK");
    if (sk_env && *sk_env) tmoe_cuda_expert_splitk = atoi(sk_env);
    const char *a8_env = getenv("THERMOE_ACT8");
    if (a8_env && *a8_env) tmoe_cuda_act8 = atoi(a8_env);
    const char *a8t_env = getenv("THERMOE_ACT8_TOKENS"); /* its largest token tile */
    if (a8t_env && *a8t_env) tmoe_cuda_act8_tokens = atoi(a8t_env);
    const char *a8s_env = getenv("THERMOE_ACT8_Q2_STAGES"); /* q2's ring on that path */
    if (a8s_env && *a8s_env) tmoe_cuda_act8_q2_stages = atoi(a8s_env);
    char driver[96];
    CK(cudaSetDevice(0));
    T_OK(tmoe_cuda_sm_count(0, &g_sms, &g_err));
    CK(cudaStreamCreateWithFlags(&g_st, cudaStreamNonBlocking));
    CB(cublasCreate(&g_cb));
    CB(cublasSetStream(g_cb, g_st));
    nvml_open(driver, sizeof driver);
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    time_t now = time(NULL);
    printf("# bench_moe\n\ncard: %s (%d SMs, L2 %d MB), driver %s, NVML energy %s, expert "
           "kernel stages %d (-1: default), split-K %d (-1: default), q4/q2 int8 activations %s "
           "(tiles of up to %d tokens, q2 ring %d), date %s\n",
           prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20, driver,
           g_nvml_ok ? "yes" : "no", tmoe_cuda_expert_stages, tmoe_cuda_expert_splitk,
           tmoe_cuda_act8 ? "on" : "off", tmoe_cuda_act8_tokens, tmoe_cuda_act8_q2_stages,
           ctime(&now));

    /* copy bandwidth: 1 GiB device-to-device, bytes read + written */
    void *cb[2];
    CK(cudaMalloc(&cb[0], (size_t)1 << 30));
    CK(cudaMalloc(&cb[1], (size_t)1 << 30));
    CK(cudaMemset(cb[1], 1, (size_t)1 << 30));
    double cms = median_ms(copy_ctx_step, cb);
    g_copy_gbs = 2.0 * (double)((size_t)1 << 30) / (cms * 1e-3) / 1e9;
    printf("copy bandwidth (1 GiB D2D, read + write): %.0f GB/s (%.3f ms)\n\n", g_copy_gbs, cms);
    CK(cudaFree(cb[0]));
    CK(cudaFree(cb[1]));

    /* shared buffers sized for the largest shape */
    size_t N = (size_t)TMAX * 8, Dm = 4096, Fm = 14336;
    CK(cudaMalloc((void **)&d_x16, 2 * TMAX * Fm));
    CK(cudaMalloc((void **)&d_xg, 2 * N * Dm));
    CK(cudaMalloc((void **)&d_a16, 2 * (size_t)TMAX * 2 * Fm));
    CK(cudaMalloc((void **)&d_h32, 4 * (size_t)TMAX * 2 * 2 * Fm));
    CK(cudaMalloc((void **)&d_y, 4 * N * Dm));
    CK(cudaMalloc((void **)&d_ye, 4 * N * Dm));
    CK(cudaMalloc((void **)&d_res, 4 * TMAX * Dm));
    CK(cudaMalloc((void **)&d_logits, 4 * TMAX * 128));
    CK(cudaMalloc((void **)&d_w, 4 * N));
    CK(cudaMalloc((void **)&d_idx, 4 * N));
    CK(cudaMalloc((void **)&d_counts, 4 * 256));
    CK(cudaMalloc((void **)&d_active, 4 * 257));
    CK(cudaMalloc((void **)&d_offs, 4 * 257));
    CK(cudaMalloc((void **)&d_src, 4 * N));
    CK(cudaMalloc((void **)&d_dst, 4 * N));
    CK(cudaMalloc((void **)&d_one_e, 4));
    CK(cudaMalloc((void **)&d_one_c, 4));
    CK(cudaMalloc((void **)&d_one_o, 8));
    CK(cudaMalloc((void **)&d_u1, 2 * 2 * Fm * Dm));
    CK(cudaMalloc((void **)&d_u2, 2 * Fm * Dm));
    CK(cudaMalloc((void **)&d_gate, 2 * 128 * Dm));
    CK(cudaHostAlloc((void **)&h_counts, 4 * 256, cudaHostAllocMapped));
    int32_t ids[256];
    for (int i = 0; i < 256; i++) ids[i] = i;
    CK(cudaMalloc((void **)&d_all_e, sizeof ids));
    CK(cudaMemcpy(d_all_e, ids, sizeof ids, cudaMemcpyHostToDevice));
    if (bench_fill_f16(d_x16, TMAX * Fm, -1.0f, 1.0f, 11)) return 1;
    if (bench_fill_f16(d_res, 2 * TMAX * Dm, -0.01f, 0.01f, 12)) return 1;
    if (bench_fill_f16(d_gate, 128 * Dm, -0.05f, 0.05f, 13)) return 1;
    CK(cudaDeviceSynchronize());

    const shape shapes[2] = {{"mixtral", 4096, 14336, 8, 2}, {"fine", 2048, 768, 128, 8}};
    if (ncu_only) {
        T_OK(tmoe_cuda_single_expert_routing(1, d_one_e, d_one_c, d_one_o, g_st, &g_err));
        tmoe_etype ets[2] = {TMOE_ET_Q4, TMOE_ET_FP16};
        for (int i = 0; i < 2; i++) {
            tmoe_cuda_lin L, K;
            lin_make(&L, ets[i], 4096, 14336, 1, 7);
            K = lin_tiled(&L, 1);
            mat_ctx mc = {&L, &K, 1, 1, 0, 1};
            for (int r = 0; r < 3; r++) mat_step(&mc, 0);
            CK(cudaStreamSynchronize(g_st));
            lin_free(&L);
            CK(cudaFree((void *)K.w));
        }
        return 0;
    }
    const int toks[] = {1, 4, 16, 64, 256, 1024};
    const int ntok = 6;
    const size_t budget = (size_t)6 << 30;

    printf("| what | shape | type | path | tokens | median us | GB/s | of copy | TFLOP/s | J/token "
           "|\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    for (int si = 0; si < 2; si++) {
        const shape *s = &shapes[si];
        for (int t = 0; t < TMOE_ET_COUNT; t++) {
            tmoe_etype et = (tmoe_etype)t;
            int f16 = et == TMOE_ET_FP16 || et == TMOE_ET_BF16;
            size_t ebytes = tmoe_quant_weight_bytes(et, 2 * s->F, s->D) +
                            tmoe_quant_weight_bytes(et, s->D, s->F) +
                            (f16 ? 0
                                 : 2 * (tmoe_quant_scale_count(2 * s->F, s->D, 128) +
                                        tmoe_quant_scale_count(s->D, s->F, 128)));
            /* copies: each layer step at 1 token reads >= 256 MB of distinct weights */
            size_t active = ebytes * s->k;
            int copies = (int)((((size_t)256 << 20) + active - 1) / active);
            if (copies < 1) copies = 1;
            while (copies > 1 && ebytes * s->E * copies > budget) copies--;
            if (copies > 64) copies = 64;
            bank b = {et, s->E * copies, {0}, {0}, {0}, {0}};
            lin_make(&b.fc1, et, 2 * s->F, s->D, b.slots, 100 + t);
            lin_make(&b.fc2, et, s->D, s->F, b.slots, 200 + t);
            b.k1 = lin_tiled(&b.fc1, b.slots);
            b.k2 = lin_tiled(&b.fc2, b.slots);
            CK(cudaDeviceSynchronize());
            /* one expert */
            for (int ti = 0; ti < ntok; ti++) {
                int n = toks[ti];
                if (g_quick && n != 1 && n != 16 && n != 256) continue;
                if (g_short && n != 1 && n != 4 && n != 16) continue;
                T_OK(tmoe_cuda_single_expert_routing(n, d_one_e, d_one_c, d_one_o, g_st, &g_err));
                for (int path = 0; path < 4; path++) {
                    if (f16 && path >= P_UNFUSED_KERNEL) continue;
                    if (et != TMOE_ET_FP16 && path == P_CUBLAS) continue;
                    if (g_short && path != P_KERNEL && path != P_CUBLAS) continue;
                    exp_ctx c = {&b, n, path};
                    double ms = median_ms(expert_step, &c);
                    double j = (path == P_KERNEL && (n == 1 || n == 16 || n == 256))
                                   ? joules_per_call(expert_step, &c, ms)
                                   : NAN;
                    double bytes = (double)ebytes + 2.0 * n * s->D * 2 + 4.0 * n * s->D;
                    double flops = 2.0 * n * (3.0 * s->F * s->D);
                    rowj("expert", s->name, tmoe_etype_name(et), path_name[path], n, ms, bytes,
                         flops, j);
                }
            }
            /* dequant_unpack of one expert's fc1 */
            if (!f16 && !g_short) {
                deq_ctx dc = {&b.fc1, b.slots};
                double ms = median_ms(deq_step, &dc);
                double bytes = (double)lin_bytes(&b.fc1) + 2.0 * b.fc1.out * b.fc1.in;
                rowj("dequant_unpack fc1", s->name, tmoe_etype_name(et), "kernel", 0, ms, bytes, 0,
                     NAN);
            }
            /* the 4096 x 14336 matrix (mixtral fc2) alone */
            if (si == 0) {
                int mt[] = {1, 2, 4, 8, 16, 64, 256, 512, 1024};
                for (int i = 0; i < 9; i++) {
                    if (g_short && mt[i] != 1 && mt[i] != 2 && mt[i] != 4 && mt[i] != 8 &&
                        mt[i] != 512)
                        continue;
                    T_OK(tmoe_cuda_single_expert_routing(mt[i], d_one_e, d_one_c, d_one_o, g_st,
                                                         &g_err));
                    for (int cub = 0; cub <= (et == TMOE_ET_FP16); cub++) {
                        mat_ctx mc = {&b.fc2, &b.k2, copies, mt[i], cub, s->E};
                        double ms = median_ms(mat_step, &mc);
                        double bytes =
                            (double)lin_bytes(&b.fc2) + 2.0 * mt[i] * s->F + 4.0 * mt[i] * s->D;
                        rowj("matrix 4096x14336", s->name, tmoe_etype_name(et),
                             cub ? "cublas" : "kernel", mt[i], ms, bytes, 2.0 * mt[i] * s->F * s->D,
                             NAN);
                    }
                    if (g_short) { /* one copy of the weights, reused as a perf loop reuses
                                      them: whatever of it stays in L2 is not read again */
                        mat_ctx mc = {&b.fc2, &b.k2, 1, mt[i], 0, s->E};
                        double ms = median_ms(mat_step, &mc);
                        double bytes =
                            (double)lin_bytes(&b.fc2) + 2.0 * mt[i] * s->F + 4.0 * mt[i] * s->D;
                        rowj("matrix 4096x14336", s->name, tmoe_etype_name(et),
                             "kernel, one copy (L2-warm)", mt[i], ms, bytes,
                             2.0 * mt[i] * s->F * s->D, NAN);
                    }
                }
            }
            /* whole layer step (gate GEMM .. combine), graph replay on the kernel path */
            {
                for (int ti = 0; ti < ntok; ti++) {
                    int T = toks[ti];
                    if (g_quick && T != 1 && T != 256) continue;
                    if (g_short && T != 1 && T != 16) continue;
                    for (int cub = 0; cub <= (et == TMOE_ET_FP16 && T >= 64); cub++) {
                        layer_ctx lc;
                        memset(&lc, 0, sizeof lc);
                        lc.s = s;
                        lc.b = &b;
                        lc.copies = copies;
                        lc.T = T;
                        lc.cublas = cub;
                        double ms = median_ms(layer_step, &lc);
                        double j = cub ? NAN : joules_per_call(layer_step, &lc, ms);
                        CK(cudaStreamSynchronize(g_st));
                        int used = 0;
                        for (int e = 0; e < s->E; e++) used += h_counts[e] > 0;
                        double bytes = (double)ebytes * used;
                        double flops = 2.0 * T * s->k * 3.0 * s->F * s->D;
                        char path[64];
                        snprintf(path, sizeof path, "%s (%d experts hit)",
                                 cub ? "cublas" : "kernel+graph", used);
                        rowj("layer step", s->name, tmoe_etype_name(et), path, T, ms, bytes, flops,
                             j);
                        if (T == 1 && !cub)
                            printf("| layer-step target | %s | %s | bytes/copy_bw + 10 us = %.1f "
                                   "us; x1.15 = %.1f us | 1 | %.1f | | | | |\n",
                                   s->name, tmoe_etype_name(et),
                                   bytes / (g_copy_gbs * 1e9) * 1e6 + 10.0,
                                   1.15 * (bytes / (g_copy_gbs * 1e9) * 1e6 + 10.0), ms * 1e3);
                        for (int c2 = 0; c2 < 64; c2++)
                            if (lc.g[c2]) CK(cudaGraphExecDestroy(lc.g[c2]));
                    }
                }
            }
            lin_free(&b.fc1);
            lin_free(&b.fc2);
            CK(cudaFree((void *)b.k1.w));
            CK(cudaFree((void *)b.k2.w));
        }
    }
    /* fine-grained MUL_MAT_ID: 768 x 2048 per expert, 128 experts, top-8 */
    {
        const shape *s = &shapes[1];
        int mt[] = {1, 8, 64, 512, 4, 16, 256, 1024};
        for (int t = 0; t < 2; t++) {
            tmoe_etype et = t ? TMOE_ET_Q4 : TMOE_ET_FP16;
            size_t pb = tmoe_quant_weight_bytes(et, 768, 2048);
            int copies = (int)((((size_t)256 << 20) + pb * 8 - 1) / (pb * 8));
            if (copies > 32) copies = 32;
            tmoe_cuda_lin P;
            lin_make(&P, et, 768, 2048, 128 * copies, 300 + t);
            tmoe_cuda_lin PT = lin_tiled(&P, 128 * copies);
            for (int i = 0; i < 8; i++) {
                int T = mt[i];
                if (g_short && i >= 4) continue;
                if (bench_fill_f32(d_logits, (size_t)T * 128, -3.0f, 3.0f, 400 + T)) return 1;
                routing(s, T);
                T_OK(tmoe_cuda_gather(d_x16, d_src, T * 8, 8, 2048, d_xg, g_st, &g_err));
                CK(cudaStreamSynchronize(g_st));
                int used = 0;
                for (int e = 0; e < 128; e++) used += h_counts[e] > 0;
                /* path 0 kernel, 1 cuBLAS per expert (fp16), 2 the kernel with its token tile
                 * sized for the batch (tmoe_cuda_expert_tile_from_average = 0), as before */
                for (int path = 0; path < 3; path++) {
                    if (path == 1 && et != TMOE_ET_FP16) continue;
                    if (path == 2 && T < 16) continue; /* the same tile either way */
                    layer_ctx lc;
                    memset(&lc, 0, sizeof lc);
                    lc.s = s;
                    lc.copies = copies;
                    lc.T = T;
                    lc.cublas = path == 1;
                    lc.proj = &P;
                    lc.projt = &PT;
                    tmoe_cuda_expert_tile_from_average = path != 2;
                    double ms = median_ms(proj_step, &lc);
                    tmoe_cuda_expert_tile_from_average = 1;
                    double bytes = (double)lin_bytes(&P) * used;
                    rowj("MUL_MAT_ID 768x2048 top-8/128", s->name, tmoe_etype_name(et),
                         path == 1   ? "cublas per expert"
                         : path == 2 ? "kernel, tile for the batch"
                                     : "kernel",
                         T, ms, bytes, 2.0 * T * 8 * 768 * 2048, NAN);
                }
            }
            lin_free(&P);
            CK(cudaFree((void *)PT.w));
        }
    }
    return 0;
}
