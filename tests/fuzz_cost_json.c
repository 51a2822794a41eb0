/* Fuzz target: the cost model JSON loader. Any input must be refused with a message or
 * loaded into a model whose lookups work and whose saved form loads again. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_driver.h"
#include "thermoe/cost.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tmoe_error err = {0};
    tmoe_cost_model *cm = NULL;
    if (tmoe_cost_load_buffer((const char *)data, size, "fuzz.json", &cm, &err) != TMOE_OK) {
        TMOE_ASSERT(cm == NULL && err.msg[0] && strstr(err.msg, "fuzz.json"));
        return 0;
    }
    static const double toks[] = {1, 3.5, 64, 100000};
    for (int op = 0; op < TMOE_OP_COUNT; op++)
        for (int et = 0; et < TMOE_ET_COUNT; et++)
            for (int t = 0; t < 4; t++) {
                tmoe_cost_value v;
                if (tmoe_cost_lookup(cm, (tmoe_op)op, (tmoe_etype)et, TMOE_IMPL_FUSED, toks[t], &v,
                                     &err) == TMOE_OK)
                    TMOE_ASSERT(isnan(v.latency_ms) || v.latency_ms >= 0);
            }
    tmoe_cost_value v;
    (void)tmoe_cost_expert(cm, TMOE_ET_Q4, TMOE_IMPL_UNFUSED, 16, &v, &err);
    char *s = tmoe_cost_dumps(cm, &err);
    TMOE_ASSERT(s != NULL);
    tmoe_cost_model *back = NULL;
    int rc = tmoe_cost_load_buffer(s, strlen(s), "fuzz-resaved.json", &back, &err);
    TMOE_ASSERT(rc == TMOE_OK && tmoe_cost_count(back) == tmoe_cost_count(cm));
    free(s);
    tmoe_cost_free(back);
    tmoe_cost_free(cm);
    return 0;
}

#ifndef THERMOE_LIBFUZZER
static const char *const *fuzz_tokens(void) {
    static const char *const t[] = {"\"",
                                    "{",
                                    "}",
                                    "[",
                                    "]",
                                    ",",
                                    ":",
                                    "-1",
                                    "1e999",
                                    "null",
                                    "NaN",
                                    "true",
                                    "\"op\": ",
                                    "\"tokens\": 0",
                                    "\"kernels\": [{}]",
                                    "\\u0000",
                                    "0.5",
                                    NULL};
    return t;
}

static int fuzz_seeds(fuzz_seed *seeds, int max) {
    int n = 0;
    tmoe_error err = {0};
    tmoe_cost_model *cm;
    if (tmoe_cost_create(&cm, &err) == TMOE_OK) {
        tmoe_rng r;
        tmoe_rng_seed(&r, 7);
        tmoe_cost_kernel ks[2] = {{"nvjet_a", 1, 0.01}, {"void dq<4>(int)", 2, 0.002}};
        for (int op = TMOE_OP_DEQUANT_UNPACK; op <= TMOE_OP_LINEAR_FC2; op++)
            for (int t = 1; t <= 256; t *= 16) {
                tmoe_cost_entry e = {.op = (tmoe_op)op,
                                     .expert_type = TMOE_ET_Q4,
                                     .impl = TMOE_IMPL_UNFUSED,
                                     .tokens = t,
                                     .latency_median_ms = tmoe_rng_uniform(&r),
                                     .latency_p90_ms = 1.0,
                                     .energy_board_j = 0.5,
                                     .energy_dynamic_j = 0.25,
                                     .avg_power_w = 300,
                                     .temp_impact_c_per_s = NAN,
                                     .samples = 20,
                                     .n_kernels = 2,
                                     .kernels = ks,
                                     .has_ncu = t == 16,
                                     .ncu_occupancy_pct = 14,
                                     .ncu_dram_pct = 78};
                if (tmoe_cost_add(cm, &e, &err) != TMOE_OK) break;
            }
        char *s = tmoe_cost_dumps(cm, &err);
        if (s) {
            seeds[n++] = fuzz_from_string(s);
            free(s);
        }
        tmoe_cost_free(cm);
    }
    if (n < max)
        seeds[n++] = fuzz_from_string(
            "{\"schema\": \"thermoe.cost_model/1\", \"entries\": [{\"op\": \"relu\", "
            "\"expert_type\": \"fp16\", \"impl\": \"fused\", \"tokens\": 8, \"latency_ms\": "
            "{\"median\": 0.1, \"p90\": 0.2}, \"energy_j\": {\"board\": 0.01, \"dynamic\": "
            "null}, \"avg_power_w\": 300, \"temp_impact_c_per_s\": -0.5, \"samples\": 40}]}");
    if (n < max)
        seeds[n++] = fuzz_from_string("{\"schema\": \"thermoe.cost_model/1\", \"entries\": []}");
    return n;
}

int main(void) {
    return fuzz_main("fuzz_cost_json");
}
#endif
