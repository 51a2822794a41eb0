/* thermoe info: what this machine offers (backends, devices, telemetry sources). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>

#include "cli/cli.h"
#include "cli/cli_lm.h"
#include "thermoe/backend.h"
#include "thermoe/telemetry.h"

static void print_telemetry(void) {
    printf("\ntelemetry:\n");
    tmoe_telemetry_config c = tmoe_telemetry_config_default();
    c.kind = TMOE_TELEMETRY_NVML;
    tmoe_telemetry *t = NULL;
    tmoe_error err = {0};
    int rc = tmoe_telemetry_open(&c, &t, &err);
    if (rc) {
        printf("  nvml  not loaded: %s\n", err.msg);
    } else {
        int n = tmoe_telemetry_device_count(t);
        printf("  nvml  loaded; %d device%s answered\n", n, n == 1 ? "" : "s");
        for (int d = 0; d < n; d++) {
            tmoe_device_info inf;
            if (tmoe_telemetry_device_info(t, d, &inf, &err) != TMOE_OK) {
                printf("    [%d] %s\n", d, err.msg);
                continue;
            }
            char sup[512], unsup[512];
            tmoe_fields_format(inf.supported, sup, sizeof sup);
            tmoe_fields_format(TMOE_F_ALL & ~inf.supported, unsup, sizeof unsup);
            printf("    [%d] %s  %s  pci %s  driver %s\n", d, inf.name, inf.uuid, inf.pci_id,
                   inf.driver);
            printf("        power limit %.0f W, slowdown %.0f C, shutdown %.0f C\n",
                   inf.power_limit_w, inf.slowdown_temp_c, inf.shutdown_temp_c);
            printf("        fields: %s\n        not supported: %s\n", sup, unsup);
        }
        tmoe_telemetry_free(t);
    }
    printf("  sim   available (simulated H100 80GB HBM3, calibrated; see docs/telemetry.md)\n");
    c.kind = TMOE_TELEMETRY_AUTO;
    if (tmoe_telemetry_open(&c, &t, &err) == TMOE_OK) {
        printf("  auto  -> %s\n        %s\n", tmoe_telemetry_source_name(t),
               tmoe_telemetry_choice(t));
        tmoe_telemetry_free(t);
    } else {
        printf("  auto  -> no source: %s\n", err.msg);
    }
}

int cmd_info(int argc, char **argv) {
    static const struct option longopts[] = {
        CLI_LM_OPTIONS, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    cli_lm_opts lo = cli_lm_opts_default();
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
        int r = cli_lm_flag("info", c, optarg, &lo);
        if (r >= 0) {
            if (r) return 1;
            continue;
        }
        if (c == 'h') {
            printf(
                "usage: thermoe info\n\nSay which backends can run here and why not, whether "
                "NVML loaded, which devices answered and which telemetry fields each "
                "supports, and which telemetry source 'auto' would pick.\n"
                "(env THERMOE_NVML_LIB overrides the path of libnvidia-ml.so.1)\n\n"
                "With --model DIR: the model's architecture, sizes and bytes per token\n"
                "instead (--expert-type, --group-size: the experts as they would be loaded).\n\n");
            cli_lm_help(&lo);
            return 0;
        }
        return cli_usage_error("info");
    }
    if (optind < argc) return cli_usage_fail("info", "unexpected argument '%s'", argv[optind]);
    if (lo.model) {
        cli_log_init(0);
        lo.backend = TMOE_BACKEND_CPU;
        tmoe_lm *m = NULL;
        int lrc = cli_lm_load("info", &lo, &m);
        if (lrc) return lrc;
        cli_lm_print_info(stdout, lo.model, m);
        tmoe_lm_free(m);
        return 0;
    }
    printf("thermoe %s (git %s)\n\nbackends:\n", TMOE_VERSION, THERMOE_GIT_SHA);
    for (int k = TMOE_BACKEND_CPU; k < TMOE_BACKEND_COUNT; k++) {
        tmoe_error err = {0};
        int rc = tmoe_backend_probe((tmoe_backend_kind)k, &err);
        printf("  %-5s %s%s%s\n", tmoe_backend_kind_name((tmoe_backend_kind)k),
               rc ? "unavailable" : "available", rc ? ": " : "", rc ? err.msg : "");
    }
    print_telemetry();
    return 0;
}
