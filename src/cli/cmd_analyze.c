/* thermoe analyze: turn run directories (batches.csv + metadata.json) into tables, figures
 * and report.html. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "thermoe/analyze.h"

static void usage(FILE *f, const tmoe_analyze_config *d) {
    fprintf(f,
            "usage: thermoe analyze DIR... [flags]\n\n"
            "Read each run directory's batches.csv and metadata.json, merge them, and write\n"
            "tables (Markdown, CSV, LaTeX), gnuplot figures (data and script beside each) and\n"
            "report.html, headed by a forest plot of each strategy's change against the\n"
            "baseline (energy per token in mJ, perplexity, p99 latency, peak GPU and HBM\n"
            "temperature in C). The statistical unit is an independent repeat: batches of\n"
            "one repeat are never treated as independent; with fewer than 3 repeats only\n"
            "effect sizes are given (no CI, no p-value).\n"
            "A run given twice (the same directory, or a copy: same run ids and batches)\n"
            "counts once; a row with a bad number is skipped with a warning naming file:line\n"
            "and column (docs/analysis.md, Bad inputs).\n"
            "A `thermoe serve` directory (summary.json, requests.csv, timeline.csv) adds TTFT\n"
            "and TPOT CDFs per strategy, energy per request against prompt length, power and\n"
            "temperature timelines with the arrival rate, and a table (docs/serve.md).\n\n"
            "flags:\n"
            "  --out DIR          report directory (default %s)\n"
            "  --format LIST      figure formats, comma-separated from pdf,png,svg (default png)\n"
            "  --bootstrap N      bootstrap resamples for CIs of skewed samples and %% changes\n"
            "                     (default %d; 0 = no bootstrap CIs)\n"
            "  --seed N           bootstrap seed (default %llu)\n"
            "  --baseline NAME    strategy the others are compared with (default %s; runs at\n"
            "                     several expert types are named strategy@type, and the\n"
            "                     default is baseline at the widest type: docs/analysis.md)\n"
            "  --gnuplot PROG     program that renders figures (default %s); --no-render skips it\n"
            "  --no-render        write figure data and scripts only\n"
            "  -v, --verbose      more log output\n"
            "  -h, --help         this text\n",
            d->out_dir, d->bootstrap, (unsigned long long)d->seed, d->baseline, d->gnuplot);
}

static int parse_formats(const char *s, unsigned *out) {
    unsigned f = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (strcmp(t, "png") == 0)
            f |= TMOE_FMT_PNG;
        else if (strcmp(t, "pdf") == 0)
            f |= TMOE_FMT_PDF;
        else if (strcmp(t, "svg") == 0)
            f |= TMOE_FMT_SVG;
        else {
            cli_fail("analyze", "--format: unknown format '%s' (expected pdf, png or svg)", t);
            return -1;
        }
    }
    if (!f) {
        cli_fail("analyze", "--format: empty list (expected pdf, png or svg)");
        return -1;
    }
    *out = f;
    return 0;
}

int cmd_analyze(int argc, char **argv) {
    tmoe_analyze_config cfg = tmoe_analyze_config_default();
    static const struct option longopts[] = {{"out", required_argument, 0, 'o'},
                                             {"format", required_argument, 0, 'f'},
                                             {"bootstrap", required_argument, 0, 'b'},
                                             {"seed", required_argument, 0, 's'},
                                             {"baseline", required_argument, 0, 'B'},
                                             {"gnuplot", required_argument, 0, 'g'},
                                             {"no-render", no_argument, 0, 'n'},
                                             {"verbose", no_argument, 0, 'v'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    int verbose = 0;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "o:f:vh", longopts, NULL)) != -1;) {
        long v;
        switch (c) {
        case 'o': cfg.out_dir = optarg; break;
        case 'f':
            if (parse_formats(optarg, &cfg.formats)) return 2;
            break;
        case 'b':
            if (cli_int("analyze", "bootstrap", optarg, 0, 10000000, &v)) return 2;
            cfg.bootstrap = (int)v;
            break;
        case 's':
            if (cli_u64("analyze", "seed", optarg, &cfg.seed)) return 2;
            break;
        case 'B': cfg.baseline = optarg; break;
        case 'g': cfg.gnuplot = optarg; break;
        case 'n': cfg.gnuplot = ""; break;
        case 'v': verbose++; break;
        case 'h': usage(stdout, &cfg); return 0;
        default: return cli_usage_error("analyze");
        }
    }
    if (cfg.bootstrap > 0 && cfg.bootstrap < 10) {
        cli_fail("analyze", "--bootstrap: %d is too few resamples (0, or at least 10)",
                 cfg.bootstrap);
        return 2;
    }
    if (optind >= argc) {
        fprintf(stderr, "thermoe analyze: no run directory given\n");
        return cli_usage_error("analyze");
    }
    cli_log_init(verbose);
    tmoe_error err = {0};
    tmoe_analyze_summary s;
    int rc = tmoe_analyze_run_ex((const char *const *)argv + optind, argc - optind, &cfg, &s, &err);
    if (rc) return cli_fail_err("analyze", &err);
    printf("%d rows, %d workload x strategy groups, %d input problem(s)", s.n_rows, s.n_groups,
           s.n_problems);
    if (s.n_serve_runs) printf(", %d serve run(s)", s.n_serve_runs);
    printf("%s\n", s.simulated ? "; SIMULATED telemetry in the input" : "");
    if (s.typed_baseline[0])
        printf("runs at several expert types: groups are named strategy@type, compared with %s\n",
               s.typed_baseline);
    printf("%d figures: %d rendered, %d failed%s\n", s.figures.n_figures, s.figures.n_rendered,
           s.figures.n_failed,
           cfg.gnuplot[0] && !s.figures.gnuplot_found
               ? " (gnuplot not found: scripts written, see report)"
               : "");
    if (s.figures.n_failed) printf("first render failure: %s\n", s.figures.first_failure);
    printf("report: %s\n", s.report_path);
    return 0;
}
