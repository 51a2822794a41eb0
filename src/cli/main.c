/* thermoe: entry point and subcommand dispatch. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_lm.h"
#include "thermoe/ep.h"

int cmd_serve(int argc, char **argv); /* cmd_serve.c */
static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);

static const cli_cmd commands[] = {
    {"help", cmd_help, "list subcommands, or show one's flags: thermoe help CMD"},
    {"version", cmd_version, "print the version and build facts"},
    {"info", cmd_info, "what this machine offers: backends, devices, telemetry"},
    {"run", cmd_run, "sweep routing strategies x workloads, log every batch (the main job)"},
    {"profile", cmd_profile, "measure every op alone: latency, energy, heat; write the cost model"},
    {"op", cmd_op, "run one op alone inside an NVTX range (for nsys / ncu)"},
    {"monitor", cmd_monitor, "live GPU telemetry view and CSV log (nvml or simulated)"},
    {"forward", cmd_forward, "build a block from flags, run it once, print routing and timings"},
    {"eval", cmd_eval, "perplexity of a token file under a Hugging Face MoE model (CPU)"},
    {"generate", cmd_generate, "greedy continuation of a prompt with a Hugging Face MoE model"},
    {"import", cmd_import, "read an nsys SQLite export or ncu CSV into cost-model entries"},
    {"cost", cmd_cost, "show a cost model file as a table, or merge several"},
    {"analyze", cmd_analyze, "turn run logs into tables, figures, tests and report.html"},
    {"serve", cmd_serve, "replay request arrivals with continuous batching (simulated GPU)"},
    {"sweep", cmd_sweep, "write a run's combinations as independent jobs (Slurm array or bash)"},
};
#define NCOMMANDS (sizeof commands / sizeof *commands)

static const cli_cmd *find_cmd(const char *name) {
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: thermoe <command> [flags]\n\n"
            "Hardware-aware Mixture-of-Experts inference: measure and route by energy and heat.\n\n"
            "commands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'thermoe <command> --help' lists a command's flags with their defaults.\n");
}

/* The flags of help and version: --help only. 0 to go on, -1 after --help was answered,
 * else the usage-error exit code. */
static int only_help_flag(const char *cmd, int argc, char **argv, const char *help) {
    static const struct option longopts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
        if (c != 'h') return cli_usage_error(cmd);
        fputs(help, stdout);
        return -1;
    }
    return 0;
}

static int cmd_help(int argc, char **argv) {
    int rc =
        only_help_flag("help", argc, argv,
                       "usage: thermoe help [CMD]\n\nList the subcommands, or show CMD's flags and "
                       "their defaults (as 'thermoe CMD --help').\n");
    if (rc) return rc < 0 ? 0 : rc;
    if (argc - optind > 1)
        return cli_usage_fail("help", "unexpected argument '%s'", argv[optind + 1]);
    if (argc - optind == 1) {
        const cli_cmd *c = find_cmd(argv[optind]);
        if (!c)
            return cli_usage_fail("help", "unknown command '%s' (see 'thermoe help')",
                                  argv[optind]);
        char *args[] = {(char *)c->name, "--help", NULL};
        return c->fn(2, args);
    }
    usage(stdout);
    return 0;
}

static int cmd_version(int argc, char **argv) {
    int rc = only_help_flag(
        "version", argc, argv,
        "usage: thermoe version\n\nPrint the version, the git commit and which optional "
        "parts (CUDA, MPI, NCCL) were built in.\n");
    if (rc) return rc < 0 ? 0 : rc;
    if (optind < argc) return cli_usage_fail("version", "unexpected argument '%s'", argv[optind]);
    printf("thermoe %s (git %s)\n", TMOE_VERSION, THERMOE_GIT_SHA);
#ifdef THERMOE_HAVE_CUDA
    printf("cuda backend: built\n");
#else
    printf("cuda backend: not built\n");
#endif
    printf("nvml, cupti: loaded at run time\n");
    printf("expert parallelism: mpi %s, nccl %s\n", tmoe_ep_mpi_built() ? "built" : "not built",
#ifdef THERMOE_HAVE_NCCL
           "built"
#else
           "not built"
#endif
    );
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) return cmd_help(1, argv);
    if (strcmp(name, "--version") == 0) return cmd_version(1, argv);
    const cli_cmd *c = find_cmd(name);
    if (!c) {
        fprintf(stderr, "thermoe: unknown command '%s'\n\n", name);
        usage(stderr);
        return 2;
    }
    cli_log_init(0);
    return c->fn(argc - 1, argv + 1);
}
