/* thermoe info: what this machine offers (backends, devices, telemetry sources). */
#include <getopt.h>
#include <stdio.h>

#include "cli/cli.h"
#include "thermoe/engine.h"

int cmd_info(int argc, char **argv) {
    static const struct option longopts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
        if (c == 'h') {
            printf("usage: thermoe info\n\nSay which backends can run here and why not, which "
                   "devices answered, and which telemetry source 'auto' would pick.\n");
            return 0;
        }
        return cli_usage_error("info");
    }
    printf("thermoe %s (git %s)\n\nbackends:\n", TMOE_VERSION, THERMOE_GIT_SHA);
    for (int k = TMOE_BACKEND_CPU; k < TMOE_BACKEND_COUNT; k++) {
        tmoe_error err = {0};
        int rc = tmoe_backend_probe((tmoe_backend_kind)k, &err);
        printf("  %-5s %s%s%s\n", tmoe_backend_kind_name((tmoe_backend_kind)k),
               rc ? "unavailable" : "available", rc ? ": " : "", rc ? err.msg : "");
    }
    return 0;
}
