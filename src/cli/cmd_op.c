/* thermoe op: run one op alone, K times, inside an NVTX range named after the op, so an
 * external profiler (nsys, ncu --nvtx) sees exactly that op. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "thermoe/backend.h"
#include "thermoe/profile.h"

enum {
    O_OP = 1,
    O_TOKENS,
    O_ET,
    O_IMPL,
    O_ITERS,
    O_WARMUP,
    O_BACKEND,
    O_DEVICE,
    O_WS,
    O_SEED,
    O_HELP
};

int cmd_op(int argc, char **argv) {
    static const struct option longopts[] = {
        {"op", required_argument, 0, O_OP},
        {"tokens", required_argument, 0, O_TOKENS},
        {"expert-type", required_argument, 0, O_ET},
        {"impl", required_argument, 0, O_IMPL},
        {"iters", required_argument, 0, O_ITERS},
        {"warmup", required_argument, 0, O_WARMUP},
        {"backend", required_argument, 0, O_BACKEND},
        {"device-id", required_argument, 0, O_DEVICE},
        {"working-set-mb", required_argument, 0, O_WS},
        {"seed", required_argument, 0, O_SEED},
        {"help", no_argument, 0, O_HELP},
        CLI_SHAPE_OPTIONS,
        {0, 0, 0, 0},
    };
    tmoe_profile_config d = tmoe_profile_config_default();
    tmoe_oprun_spec s = {.backend = TMOE_BACKEND_AUTO,
                         .op = TMOE_OP_LINEAR_FC1,
                         .etype = TMOE_ET_FP16,
                         .impl = TMOE_IMPL_FUSED,
                         .tokens = 1,
                         .block = d.block,
                         .seed = 1};
    long iters = 100, warmup = 5, v;
    double ws = d.min_working_set_mb;
    int have_op = 0;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
        int sh = cli_shape_flag("op", c, optarg, &s.block);
        if (sh == 1) return 2;
        if (sh == 0) continue;
        switch (c) {
        case O_OP:
            if (tmoe_op_parse(optarg, &s.op))
                return cli_usage_fail("op", "--op: unknown op '%s'", optarg);
            have_op = 1;
            break;
        case O_TOKENS:
            if (cli_int("op", "tokens", optarg, 1, 1 << 20, &v)) return 2;
            s.tokens = (int)v;
            break;
        case O_ET:
            if (tmoe_etype_parse(optarg, &s.etype))
                return cli_usage_fail("op", "--expert-type: unknown type '%s'", optarg);
            break;
        case O_IMPL:
            if (tmoe_impl_parse(optarg, &s.impl))
                return cli_usage_fail("op", "--impl: unknown impl '%s'", optarg);
            break;
        case O_ITERS:
            if (cli_int("op", "iters", optarg, 1, 100000000, &iters)) return 2;
            break;
        case O_WARMUP:
            if (cli_int("op", "warmup", optarg, 0, 1000000, &warmup)) return 2;
            break;
        case O_BACKEND:
            if (cli_backend_flag("op", optarg, &s.backend)) return 2;
            break;
        case O_DEVICE:
            if (cli_int("op", "device-id", optarg, 0, 1024, &v)) return 2;
            s.device_id = (int)v;
            break;
        case O_WS:
            if (cli_double("op", "working-set-mb", optarg, 0, 1e6, &ws)) return 2;
            break;
        case O_SEED:
            if (cli_u64("op", "seed", optarg, &s.seed)) return 2;
            break;
        case 'h':
        case O_HELP:
            printf(
                "usage: thermoe op --op NAME [flags]\n\n"
                "Run one op alone: --warmup calls, then --iters calls inside an NVTX range named\n"
                "after the op (for nsys / ncu --nvtx --nvtx-include NAME/), and print its time.\n\n"
                "  --op NAME          gate_linear, gate_topk, permute, dequant_unpack, "
                "linear_fc1,\n"
                "                     relu, linear_fc2, combine, norm, attn_qkv, attn_core, "
                "attn_out\n"
                "  --tokens N         rows the op sees (default 1)\n"
                "  --expert-type T    fp16, bf16, q4 or q2 (default fp16)\n"
                "  --impl I           fused or unfused (default fused)\n"
                "  --iters K          calls inside the range (default 100)\n"
                "  --warmup N         calls before it (default 5)\n"
                "  --backend B        auto, cpu or cuda (default auto)\n"
                "  --device-id N      CUDA device (default 0)\n"
                "  --working-set-mb M weights rotated through (default %g)\n"
                "  --seed N           weights and inputs (default 1)\n",
                d.min_working_set_mb);
            cli_shape_help(&d.block);
            return 0;
        default: return cli_usage_error("op");
        }
    }
    if (!have_op) return cli_usage_fail("op", "--op is required (see --help)");
    if (optind < argc) return cli_usage_fail("op", "unexpected argument '%s'", argv[optind]);
    if (s.backend == TMOE_BACKEND_AUTO)
        s.backend = tmoe_backend_probe(TMOE_BACKEND_CUDA, NULL) == TMOE_OK ? TMOE_BACKEND_CUDA
                                                                           : TMOE_BACKEND_CPU;
    s.min_working_set = (size_t)(ws * 1e6);
    tmoe_error err = {0};
    tmoe_oprun *o = NULL;
    double *ms = malloc(sizeof(double) * (size_t)iters);
    if (!ms) return cli_fail("op", "out of memory");
    int rc = tmoe_oprun_create(&s, &o, &err);
    if (!rc && warmup > 0) rc = tmoe_oprun_run(o, (int)warmup, NULL, &err);
    if (!rc) {
        tmoe_nvtx_push(tmoe_op_name(s.op));
        rc = tmoe_oprun_run(o, (int)iters, ms, &err);
        tmoe_nvtx_pop();
    }
    if (rc) {
        free(ms);
        tmoe_oprun_free(o);
        return cli_fail_err("op", &err);
    }
    double med, p90;
    tmoe_profile_percentiles(ms, (int)iters, &med, &p90);
    double bytes = tmoe_oprun_bytes(o), flops = tmoe_oprun_flops(o);
    printf("%s %s/%s, %d tokens, %s backend, %ld calls over %d weight copies: median %.4f ms, "
           "p90 %.4f ms, %.1f GB/s, %.2f TFLOP/s\n",
           tmoe_op_name(s.op), tmoe_etype_name(s.etype), tmoe_impl_name(s.impl), s.tokens,
           tmoe_backend_kind_name(s.backend), iters, tmoe_oprun_copies(o), med, p90,
           bytes / (med * 1e-3) / 1e9, flops / (med * 1e-3) / 1e12);
    free(ms);
    tmoe_oprun_free(o);
    return 0;
}
