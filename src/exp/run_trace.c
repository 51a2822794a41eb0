/* The whole-run trace, traces/run.json.gz: every monitor sample of the run (power, GPU and
 * HBM temperature, SM clock, utilisation) as counter events, and one span per phase (warm-up,
 * rest, each combination), on the run's one clock: the monitor's, in us since the run began
 * (r->t0_ns). On NVML that clock is the host's CLOCK_MONOTONIC, on the simulated GPU the
 * simulated time; the per-combination traces use the same clock (run_row.c). */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "exp/runner_internal.h"

enum { RUN_TRACE_PHASES = 3 }; /* pid of the phase track; devices follow */

int run_trace_run_open(run_ctx *r, tmoe_error *err) {
    r->run_tr = NULL;
    if (r->cfg.trace_batches <= 0) return TMOE_OK; /* --trace-batches 0: no traces */
    char path[4400], stem[64];
    if (r->ranks > 1)
        snprintf(stem, sizeof stem, "run_rank%d", r->rank);
    else
        snprintf(stem, sizeof stem, "run");
    /* a resumed run keeps the earlier part's trace and writes the next free name */
    struct stat st;
    snprintf(path, sizeof path, "%s/traces/%s%s", r->dir, stem, tmoe_trace_ext());
    for (int k = 1; r->cfg.resume && stat(path, &st) == 0 && k < 1000; k++)
        snprintf(path, sizeof path, "%s/traces/%s.%d%s", r->dir, stem, k, tmoe_trace_ext());
    int rc = tmoe_trace_open(path, &r->run_tr, err);
    if (rc) return rc;
    tmoe_trace_name(r->run_tr, RUN_TRACE_PHASES, -1,
                    r->sim ? "run phases (simulated H100 clock)" : "run phases (host clock)");
    for (int d = 0; d < r->ndev; d++) {
        char name[96];
        snprintf(name, sizeof name, "device %d (%s)", d, r->sim ? "sim" : "nvml");
        tmoe_trace_name(r->run_tr, RUN_TRACE_PHASES + 1 + d, -1, name);
        r->run_tr_last_ns[d] = INT64_MIN;
    }
    return TMOE_OK;
}

/* Every sample newer than the last one written, up to now, for each device. */
void run_trace_run_samples(run_ctx *r) {
    if (!r->run_tr) return;
    int64_t now = tmoe_monitor_now_ns(r->mon);
    for (int d = 0; d < r->ndev; d++) {
        int pid = RUN_TRACE_PHASES + 1 + d;
        for (;;) {
            int64_t from = r->run_tr_last_ns[d] == INT64_MIN ? INT64_MIN : r->run_tr_last_ns[d] + 1;
            int n = tmoe_monitor_samples(r->mon, d, from, now, r->samples, RUN_MAX_SAMPLES);
            for (int i = 0; i < n; i++) {
                const tmoe_sample *s = &r->samples[i];
                double us = (double)(s->t_ns - r->t0_ns) / 1e3;
                if (s->valid & TMOE_F_POWER_AVG)
                    tmoe_trace_counter(r->run_tr, "power_w", pid, us, "avg", s->power_avg_w);
                if (s->valid & TMOE_F_POWER_INSTANT)
                    tmoe_trace_counter(r->run_tr, "power_instant_w", pid, us, "instant",
                                       s->power_instant_w);
                if (s->valid & TMOE_F_GPU_TEMP)
                    tmoe_trace_counter(r->run_tr, "gpu_temp_c", pid, us, "gpu", s->gpu_temp_c);
                if (s->valid & TMOE_F_MEM_TEMP)
                    tmoe_trace_counter(r->run_tr, "mem_temp_c", pid, us, "hbm", s->mem_temp_c);
                if (s->valid & TMOE_F_SM_CLOCK)
                    tmoe_trace_counter(r->run_tr, "sm_clock_mhz", pid, us, "sm", s->sm_clock_mhz);
                if (s->valid & TMOE_F_GPU_UTIL)
                    tmoe_trace_counter(r->run_tr, "gpu_util_pct", pid, us, "gpu", s->gpu_util_pct);
                r->run_tr_last_ns[d] = s->t_ns;
            }
            if (n < RUN_MAX_SAMPLES) break;
        }
    }
}

void run_trace_run_phase(run_ctx *r, const char *name, double t0_s, double t1_s,
                         const char *args_json) {
    if (!r->run_tr) return;
    run_trace_run_samples(r);
    tmoe_trace_span(r->run_tr, name, "phase", RUN_TRACE_PHASES, 1, t0_s * 1e6, (t1_s - t0_s) * 1e6,
                    args_json);
    tmoe_trace_sync(r->run_tr); /* a killed run keeps what came before */
}

int run_trace_run_close(run_ctx *r, tmoe_error *err) {
    if (!r->run_tr) return TMOE_OK;
    run_trace_run_samples(r);
    int rc = tmoe_trace_close(r->run_tr, err);
    r->run_tr = NULL;
    return rc;
}
