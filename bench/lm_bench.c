/* Decoder LM speed on one GPU: a Mixtral-shaped model with random weights built in memory
 * (d 4096, 32 heads on 8 KV heads, 8 experts of 14336, top-2, vocabulary 32000; --layers N
 * of them), experts fp16 or q4 (--type). Prints markdown rows: decode tokens/s at batch 1, 8
 * and 64 (after a 32-token prefill per sequence), prefill tokens/s at 512, and the bytes floor
 * (weights one step touches / measured device copy bandwidth). bench/lm_bench.sh runs it
 * beside transformers (bench/ref/lm_ref.py).
 *
 * The host builds one layer and the runner uploads it into every layer (each layer has its
 * own device copy, so the bytes read per step are those of N distinct layers). */
#include <cuda_runtime_api.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/backend.h"
#include "thermoe/model.h"

static void die(const char *what, const tmoe_error *err) {
    fprintf(stderr, "lm_bench: %s: %s\n", what, err ? err->msg : "");
    exit(1);
}

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t ce_ = (call);                                                                  \
        if (ce_ != cudaSuccess) {                                                                  \
            fprintf(stderr, "lm_bench: %s:%d: %s: %s\n", __FILE__, __LINE__, #call,                \
                    cudaGetErrorString(ce_));                                                      \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* Device-to-device copy bandwidth (bytes read + written per second) over 1 GiB. */
static double copy_bw(void) {
    size_t n = (size_t)1 << 30;
    void *a, *b;
    CK(cudaMalloc(&a, n));
    CK(cudaMalloc(&b, n));
    CK(cudaMemset(a, 1, n));
    CK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaEventRecord(e0, 0));
    for (int i = 0; i < 10; i++) CK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e1, 0));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    CK(cudaFree(a));
    CK(cudaFree(b));
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return 2.0 * n * 10 / (ms / 1e3);
}

int main(int argc, char **argv) {
    int layers = 4, steps = 16;
    tmoe_etype type = TMOE_ET_FP16;
    static const struct option lo[] = {{"layers", required_argument, 0, 'l'},
                                       {"type", required_argument, 0, 't'},
                                       {"steps", required_argument, 0, 's'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        char *end;
        if (ch == 'l' || ch == 's') {
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 64) {
                fprintf(stderr, "lm_bench: --%s %s: want 1..64\n", ch == 'l' ? "layers" : "steps",
                        optarg);
                return 2;
            }
            if (ch == 'l')
                layers = (int)v;
            else
                steps = (int)v;
        } else if (ch == 't') {
            if (tmoe_etype_parse(optarg, &type) || type == TMOE_ET_BF16) {
                fprintf(stderr, "lm_bench: --type %s: want fp16, q4 or q2\n", optarg);
                return 2;
            }
        } else {
            printf("usage: lm_bench [--layers N (default 4)] [--type fp16|q4|q2 (default fp16)]\n"
                   "                [--steps N decode steps timed (default 16)]\n");
            return ch == 'h' ? 0 : 2;
        }
    }
    tmoe_lm_config c = {0};
    c.family = TMOE_LM_MIXTRAL;
    c.vocab_size = 32000;
    c.d_model = 4096;
    c.n_layers = 1;
    c.n_heads = 32;
    c.n_kv_heads = 8;
    c.head_dim = 128;
    c.d_ff = c.d_ff_expert = 14336;
    c.num_experts = 8;
    c.top_k = 2;
    c.norm_topk_prob = 1;
    c.max_positions = 4096;
    c.rms_eps = 1e-5f;
    c.rope_theta = 1e6;
    for (int l = 0; l < TMOE_LM_MAX_LAYERS; l++) c.moe_layer[l] = 1;
    tmoe_lm_load_opts o = tmoe_lm_load_opts_default();
    o.experts_f32 = 0;
    o.expert_type = type;
    o.group_size = 128;
    tmoe_error err = {0};
    tmoe_lm *m1;
    if (tmoe_lm_random(&c, &o, 1, &m1, &err)) die("random model", &err);
    /* N layers sharing the host layer; the struct is only read by create */
    tmoe_lm mN = *m1;
    mN.cfg.n_layers = layers;
    mN.layers = malloc(sizeof *mN.layers * (size_t)layers);
    if (!mN.layers) die("out of memory", NULL);
    for (int l = 0; l < layers; l++) mN.layers[l] = m1->layers[0];
    const int P = 32, maxB = 64, prefill = 512;
    tmoe_cuda_lm_config cc = {.device_id = 0,
                              .max_tokens = prefill,
                              .max_seqs = maxB,
                              .max_len = prefill + steps + 8,
                              .use_graphs = 1};
    tmoe_cuda_lm *g;
    if (tmoe_cuda_lm_create(&mN, &cc, &g, &err)) die("create", &err);
    free(mN.layers);
    double bw = copy_bw();
    size_t D = 4096, I = 14336, V = 32000;
    double dense = (double)layers * (2.0 * (4096 + 2 * 1024) * D + 4.0 * 8 * D) + 2.0 * V * D;
    double expert =
        (double)(tmoe_quant_weight_bytes(type, 2 * I, D) + tmoe_quant_weight_bytes(type, D, I));
    if (type != TMOE_ET_FP16)
        expert += 2.0 * (tmoe_quant_scale_count(2 * I, D, 128) + tmoe_quant_scale_count(D, I, 128));
    float *logits = malloc(sizeof(float) * V * prefill);
    uint32_t *ids = malloc(sizeof(uint32_t) * prefill * 4);
    if (!logits || !ids) die("out of memory", NULL);
    for (int i = 0; i < prefill * 4; i++) ids[i] = (uint32_t)(i * 7919 % V);
    const char *tn = tmoe_etype_name(type);
    int Bs[] = {1, 8, 64};
    for (int bi = 0; bi < 3; bi++) {
        int B = Bs[bi];
        int32_t slots[64], nn[64];
        for (int i = 0; i < B; i++) {
            if (tmoe_cuda_lm_seq_open(g, &slots[i], &err)) die("open", &err);
            nn[i] = P;
        }
        for (int i0 = 0; i0 < B; i0 += prefill / P) { /* prefill in chunks of 512 tokens */
            int n = B - i0 < prefill / P ? B - i0 : prefill / P;
            tmoe_lm_batch b = {n, slots + i0, nn + i0, ids, 0};
            if (tmoe_cuda_lm_forward(g, &b, logits, &err)) die("prefill", &err);
        }
        for (int i = 0; i < B; i++) nn[i] = 1;
        tmoe_lm_batch b = {B, slots, nn, ids, 0};
        for (int s = 0; s < 3; s++) /* warm-up: captures the graph */
            if (tmoe_cuda_lm_forward(g, &b, logits, &err)) die("decode", &err);
        int64_t t0 = tmoe_now_ns();
        for (int s = 0; s < steps - 3; s++)
            if (tmoe_cuda_lm_forward(g, &b, logits, &err)) die("decode", &err);
        double secs = (double)(tmoe_now_ns() - t0) / 1e9;
        double tps = B * (steps - 3) / secs;
        double touched = (double)layers * 8 * (1.0 - pow(1.0 - 2.0 / 8, B)) * expert + dense;
        double floor_tps = B / (touched / bw);
        printf("| thermoe cuda %s | decode, batch %d | %.1f | %.1f | %.0f%% |\n", tn, B, tps,
               floor_tps, 100.0 * tps / floor_tps);
        fflush(stdout);
        for (int i = 0; i < B; i++) tmoe_cuda_lm_seq_close(g, slots[i]);
    }
    {
        int slot;
        int32_t n = prefill;
        double best = 1e30;
        for (int rep = 0; rep < 4; rep++) {
            if (tmoe_cuda_lm_seq_open(g, &slot, &err)) die("open", &err);
            tmoe_lm_batch b = {1, &slot, &n, ids, 0};
            int64_t t0 = tmoe_now_ns();
            if (tmoe_cuda_lm_forward(g, &b, logits, &err)) die("prefill", &err);
            double s = (double)(tmoe_now_ns() - t0) / 1e9;
            if (rep > 0 && s < best) best = s;
            tmoe_cuda_lm_seq_close(g, slot);
        }
        double touched = (double)layers * 8 * expert + dense;
        printf("| thermoe cuda %s | prefill 512 | %.1f | %.1f | %.0f%% |\n", tn, prefill / best,
               prefill / (touched / bw), 100.0 * (prefill / best) / (prefill / (touched / bw)));
    }
    fprintf(stderr,
            "lm_bench: %d layers, %s experts, %.2f GB of weights on the device, copy "
            "bandwidth %.0f GB/s\n",
            layers, tn, (double)tmoe_cuda_lm_weight_bytes(g) / 1e9, bw / 1e9);
    tmoe_cuda_lm_free(g);
    tmoe_lm_free(m1);
    free(logits);
    free(ids);
    return 0;
}
