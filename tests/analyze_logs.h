/* Synthetic run logs for the analysis tests: a run directory with batches.csv (every
 * runlog.h column, in order; two devices) and metadata.json, with a known effect per
 * strategy, a random offset per run (batches of one run are correlated) and noise per
 * batch. */
#ifndef THERMOE_TEST_ANALYZE_LOGS_H
#define THERMOE_TEST_ANALYZE_LOGS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "thermoe/core.h"
#include "thermoe/exp.h"

typedef struct {
    const char *const *strategies;
    const double *energy_mult; /* per strategy: energy per token = 0.02 J x mult */
    int nstrategies;
    const char *const *workloads;
    int nworkloads;
    int repeats, batches, experts;
    double run_sd, batch_sd; /* relative noise: per run offset, per batch */
    uint64_t seed;
    const char *telemetry; /* "nvml" or "sim" */
    const char *device;
    const int *noop;         /* per strategy (NULL = none): routing logged as equal to baseline's
                                (top-k agreement 1, output error 0, no biases) */
    const double *nll_delta; /* per strategy (NULL = no quality columns): nll = nll_baseline +
                                delta x (1 + 0.2 N(0,1) per repeat), nll_baseline ~ 3 nats */
} synth_cfg;

/* The quality columns, read by name: in runlog.h's list once the writer has them, else
 * appended after it (a newer writer's file). */
static const char *const synth_quality[] = {"nll", "nll_baseline", "tokens_scored"};

static void synth_header(FILE *f, int quality) {
    for (int c = 0; c < TMOE_RL_NCOLS; c++)
        fprintf(f, "%s%s", c ? "," : "", tmoe_runlog_cols[c].name);
    for (int q = 0; quality && q < 3; q++)
        if (tmoe_runlog_col_find(synth_quality[q]) < 0) fprintf(f, ",%s", synth_quality[q]);
    fputc('\n', f);
}

/* The value of the quality column called name in a row with these NLLs. */
static double synth_quality_value(const char *name, double nll, double nll_base) {
    if (strcmp(name, "nll") == 0) return nll;
    if (strcmp(name, "nll_baseline") == 0) return nll_base;
    return 255.0;
}

/* A CSV cell, RFC 4180 quoted when it holds a comma, quote, CR or LF (names in the tests
 * may hold anything). Returns buf. */
static const char *synth_cell(char *buf, size_t n, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) {
        snprintf(buf, n, "%s", s);
        return buf;
    }
    size_t k = 0;
    buf[k++] = '"';
    for (; *s && k + 3 < n; s++) {
        if (*s == '"') buf[k++] = '"';
        buf[k++] = *s;
    }
    buf[k++] = '"';
    buf[k] = '\0';
    return buf;
}

/* Write dir/batches.csv and dir/metadata.json (dir is created). The run ids are
 * "s<seed>-run<repeat>", so runs of different seeds are different runs. Workload and strategy
 * names are written quoted where CSV needs it; a strategy whose name holds "ttha" gets the
 * TTHA columns (unless noop marks it). Returns 0 or -1. */
static int synth_run(const char *dir, const synth_cfg *c) {
    if (mkdir(dir, 0777) != 0 && access(dir, W_OK) != 0) return -1;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, TMOE_RUNLOG_CSV);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    synth_header(f, c->nll_delta != NULL);
    tmoe_rng r;
    tmoe_rng_seed(&r, c->seed);
    double t = 0.0;
    for (int rep = 0; rep < c->repeats; rep++)
        for (int w = 0; w < c->nworkloads; w++)
            for (int s = 0; s < c->nstrategies; s++) {
                double run_off = c->run_sd * tmoe_rng_normal(&r);
                double nll_d =
                    c->nll_delta ? c->nll_delta[s] * (1.0 + 0.2 * tmoe_rng_normal(&r)) : 0.0;
                int ttha = strstr(c->strategies[s], "ttha") != NULL && !(c->noop && c->noop[s]);
                int base = strcmp(c->strategies[s], "baseline") == 0 || (c->noop && c->noop[s]);
                for (int b = 0; b < c->batches; b++) {
                    double e = 0.02 * c->energy_mult[s] *
                               (1.0 + run_off + c->batch_sd * tmoe_rng_normal(&r));
                    int tokens = 256;
                    double lat = 10.0 * (1.0 + 0.05 * tmoe_rng_normal(&r)) * (ttha ? 1.03 : 1.0);
                    double ej = e * tokens, pw = ej / (lat / 1000.0);
                    double temp = 40.0 + 20.0 * (1.0 - exp(-b / 8.0)) * c->energy_mult[s];
                    t += lat / 1000.0;
                    char wq[2048], sq[2048];
                    fprintf(
                        f,
                        "%.6f,s%llu-run%d,%d,%s,%s,q4,fused,%d,%d,%.6f,%.3f,%.6f,%.8f,counter,%.3f,"
                        "%.3f,"
                        "%.2f,%.2f,%.2f,%.2f,1410,%d,97,",
                        t, (unsigned long long)c->seed, rep, rep,
                        synth_cell(wq, sizeof wq, c->workloads[w]),
                        synth_cell(sq, sizeof sq, c->strategies[s]), b, tokens, lat,
                        tokens / lat * 1000.0, ej, e, pw, pw * 1.2, temp - 1, temp, temp + 0.5,
                        temp + 8, b % 7 == 6 ? 4 : 0);
                    int dev_tok[2] = {0, 0};
                    for (int x = 0; x < c->experts; x++) {
                        int n = 60 + (int)(40 * tmoe_rng_uniform(&r)) - (ttha ? 6 * x : 0);
                        dev_tok[x % 2] += n;
                        fprintf(f, "%s%d", x ? ";" : "", n);
                    }
                    fputc(',', f);
                    for (int x = 0; x < c->experts; x++)
                        fprintf(f, "%s%.4f", x ? ";" : "",
                                0.5 + 0.1 * x + 0.05 * tmoe_rng_uniform(&r));
                    fprintf(f, ",%.5f,%.4f,", ej * 1.02, base ? 0.05 : 0.2);
                    if (ttha) {
                        double d = exp(-b / 5.0);
                        fprintf(f, "%.5f,%.5f,%.5f,%.5f,%.5f,%.5f,0.001,", 0.5 * d, 0.3 * d, 0.02,
                                0.1, 0.05 * (1 - d),
                                0.5 * d + 0.3 * d + 0.02 - 0.1 + 0.05 * (1 - d));
                        for (int x = 0; x < c->experts; x++)
                            fprintf(f, "%s%.4f", x ? ";" : "", (1 - d) * 0.5 * cos(x + 0.3));
                    } else {
                        fputs("nan,nan,nan,nan,nan,nan,nan,", f);
                    }
                    fprintf(f, ",%.4f,%.5f,%s", base ? 1.0 : 0.9 + 0.02 * tmoe_rng_uniform(&r),
                            base ? 0.0 : 0.01 + 0.005 * tmoe_rng_uniform(&r), c->telemetry);
                    /* two devices, experts placed round robin */
                    fprintf(f, ",%.8f;%.8f,%.3f;%.3f,%.2f;%.2f,%d;%d", ej * 0.55, ej * 0.45,
                            pw * 0.55, pw * 0.45, temp, temp - 2, dev_tok[0], dev_tok[1]);
                    /* columns added after device_tokens: unknown, but for the quality ones */
                    double nb = 3.0 + 0.01 * b, nl = nb + nll_d;
                    for (int x = TMOE_RL_DEVICE_TOKENS + 1; x < TMOE_RL_NCOLS; x++) {
                        const char *nm = tmoe_runlog_cols[x].name;
                        int qc = c->nll_delta &&
                                 (strcmp(nm, "nll") == 0 || strcmp(nm, "nll_baseline") == 0 ||
                                  strcmp(nm, "tokens_scored") == 0);
                        if (qc)
                            fprintf(f, ",%.9g", synth_quality_value(nm, nl, nb));
                        else
                            fputs(",nan", f);
                    }
                    for (int q = 0; c->nll_delta && q < 3; q++)
                        if (tmoe_runlog_col_find(synth_quality[q]) < 0)
                            fprintf(f, ",%.9g", synth_quality_value(synth_quality[q], nl, nb));
                    fputc('\n', f);
                }
            }
    if (fclose(f) != 0) return -1;
    snprintf(path, sizeof path, "%s/%s", dir, TMOE_RUNLOG_METADATA);
    f = fopen(path, "w");
    if (!f) return -1;
    fprintf(
        f,
        "{\"config\": {\"seed\": %llu}, \"device\": {\"name\": \"%s\", \"driver\": \"580.159.04\"},"
        " \"telemetry_source\": \"%s\", \"git_commit\": \"abc123\", \"cost_model_checksum\": "
        "\"sha256:00\", \"seeds\": [%llu], \"start_time\": \"2026-11-26T10:00:00Z\", "
        "\"end_time\": \"2026-11-26T10:05:00Z\"}\n",
        (unsigned long long)c->seed, c->device ? c->device : "NVIDIA H100 80GB HBM3", c->telemetry,
        (unsigned long long)c->seed);
    return fclose(f) == 0 ? 0 : -1;
}

#endif
