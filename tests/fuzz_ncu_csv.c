/* Fuzz target: the ncu CSV reader (raw and details layouts). Any input must be refused with
 * a message or give kernels with names. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_driver.h"
#include "thermoe/profile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tmoe_error err = {0};
    tmoe_ncu_result *r = NULL;
    if (tmoe_import_ncu_buffer((const char *)data, size, "fuzz.csv", &r, &err) != TMOE_OK) {
        TMOE_ASSERT(r == NULL && strstr(err.msg, "fuzz.csv"));
        return 0;
    }
    TMOE_ASSERT(r->n > 0);
    for (int i = 0; i < r->n; i++) TMOE_ASSERT(r->kernels[i].name && r->kernels[i].name[0]);
    tmoe_cost_model *cm;
    if (tmoe_cost_create(&cm, &err) == TMOE_OK) {
        tmoe_cost_kernel k = {r->kernels[0].name, 1, 0.1};
        tmoe_cost_entry e = {.op = TMOE_OP_LINEAR_FC1,
                             .tokens = 1,
                             .latency_median_ms = 0.1,
                             .latency_p90_ms = 0.1,
                             .energy_board_j = 1,
                             .energy_dynamic_j = 0.5,
                             .avg_power_w = 1,
                             .samples = 1,
                             .n_kernels = 1,
                             .kernels = &k};
        int matched = 0;
        if (tmoe_cost_add(cm, &e, &err) == TMOE_OK &&
            tmoe_ncu_merge_cost(r, cm, &matched, &err) == TMOE_OK)
            TMOE_ASSERT(matched == 1);
        tmoe_cost_free(cm);
    }
    tmoe_ncu_free(r);
    return 0;
}

#ifndef THERMOE_LIBFUZZER
static const char *const *fuzz_tokens(void) {
    static const char *const t[] = {"\"",
                                    ",",
                                    "\n",
                                    "\r\n",
                                    "\"\"",
                                    ",,",
                                    "==ERROR== boom\n",
                                    "==PROF== x\n",
                                    "1,234,567.89",
                                    "n/a",
                                    "\"usecond\"",
                                    "\"Metric Name\"",
                                    "\"Kernel Name\"",
                                    "\"gpu__time_duration.sum\"",
                                    NULL};
    return t;
}

static int fuzz_seeds(fuzz_seed *seeds, int max) {
    int n = 0;
    char path[4096];
    const char *dir = getenv("THERMOE_FIXTURES");
    if (!dir || !*dir) dir = THERMOE_FIXTURES_DIR;
    snprintf(path, sizeof path, "%s/ncu/h100_ncu_raw.csv", dir);
    seeds[n] = fuzz_read_file(path, 1 << 17);
    if (seeds[n].data) n++;
    snprintf(path, sizeof path, "%s/ncu/h100_ncu_details.csv", dir);
    seeds[n] = fuzz_read_file(path, 24000); /* the first kernels' rows are enough */
    if (seeds[n].data) n++;
    if (n < max)
        seeds[n++] = fuzz_from_string(
            "==PROF== Connected\n\"ID\",\"Kernel Name\",\"gpu__time_duration.sum\","
            "\"sm__warps_active.avg.pct_of_peak_sustained_active\","
            "\"dram__throughput.avg.pct_of_peak_sustained_elapsed\"\n\"\",\"\",\"msecond\","
            "\"%\",\"%\"\n\"0\",\"void k<1, 2>(int, \"\"a,b\"\")\",\"1,024.5\",\"14.12\","
            "\"78.82\"\n");
    if (n < max) seeds[n++] = fuzz_from_string("==ERROR== only an error\n");
    return n;
}

int main(void) {
    return fuzz_main("fuzz_ncu_csv");
}
#endif
