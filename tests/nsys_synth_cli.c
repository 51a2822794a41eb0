/* Command-line front of tests/nsys_synth.c for the shell tests:
 *   nsys_synth random OUT SEED DEVICES KERNELS_PER_DEVICE nvtx|no-nvtx
 *       writes a random export and prints what it holds, counted here:
 *       "total KERNELS NS", "device D KERNELS NS" per device, "launched N", "nvtx_ranges N"
 *   nsys_synth sql OUT < statements
 *       writes an export with the tables and columns nsys writes (NVTX_EVENTS and
 *       CUPTI_ACTIVITY_KIND_RUNTIME too), then runs the SQL read from stdin on it */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nsys_synth.h"

static int usage(void) {
    fprintf(stderr, "usage: nsys_synth random OUT SEED DEVICES KERNELS_PER_DEVICE nvtx|no-nvtx\n"
                    "       nsys_synth sql OUT < statements\n");
    return 2;
}

static long num(const char *s, long lo, long hi) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) {
        fprintf(stderr, "nsys_synth: '%s': expected an integer in [%ld, %ld]\n", s, lo, hi);
        exit(2);
    }
    return v;
}

static int cmd_random(char **argv) {
    tu_nsys_spec spec = {.seed = (uint64_t)num(argv[1], 0, 2147483647),
                         .n_devices = (int)num(argv[2], 1, 16),
                         .kernels_per_device = (int)num(argv[3], 1, 1000000),
                         .n_names = 12,
                         .t0 = 155000000000LL};
    if (strcmp(argv[4], "nvtx") && strcmp(argv[4], "no-nvtx")) return usage();
    spec.with_nvtx = !strcmp(argv[4], "nvtx");
    tu_nsys_truth t;
    if (tu_nsys_random(argv[0], &spec, &t)) return 1;
    int64_t ns = 0, launched = 0, dk[16] = {0}, dns[16] = {0};
    for (int i = 0; i < t.n_kernels; i++) {
        const tu_nsys_kern *k = &t.kernels[i];
        ns += k->end - k->start;
        launched += k->launched;
        dk[k->device]++;
        dns[k->device] += k->end - k->start;
    }
    printf("total %d %" PRId64 "\n", t.n_kernels, ns);
    for (int d = 0; d < spec.n_devices; d++)
        printf("device %d %" PRId64 " %" PRId64 "\n", d, dk[d], dns[d]);
    printf("launched %" PRId64 "\nnvtx_ranges %" PRId64 "\n", launched, t.nvtx_ranges);
    tu_nsys_truth_free(&t);
    return 0;
}

static int cmd_sql(const char *out) {
    size_t cap = 1 << 16, n = 0;
    char *sql = malloc(cap);
    if (!sql) return 1;
    size_t got;
    while ((got = fread(sql + n, 1, cap - n - 1, stdin)) > 0) {
        n += got;
        if (n + 1 == cap) {
            char *p = realloc(sql, cap *= 2);
            if (!p) {
                free(sql);
                return 1;
            }
            sql = p;
        }
    }
    sql[n] = '\0';
    tu_nsys *x = tu_nsys_create(out, TU_NSYS_NVTX | TU_NSYS_RUNTIME);
    int rc = !x || tu_nsys_exec(x, "%s", sql);
    if (tu_nsys_close(x)) rc = 1;
    free(sql);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 7 && !strcmp(argv[1], "random")) return cmd_random(argv + 2);
    if (argc == 3 && !strcmp(argv[1], "sql")) return cmd_sql(argv[2]);
    return usage();
}
