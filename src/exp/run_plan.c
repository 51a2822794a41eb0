/* The plan of a run: its combinations in a fresh random order per repeat, which of them a
 * resumed run skips (the same on every rank), when to stop, and the rest between
 * combinations. */
#include <math.h>
#include <string.h>
#include <time.h>

#include "thermoe/ep.h"
#include "exp/runner_internal.h"

int run_plan(const tmoe_run_config *cfg, run_combo **out, int *n_out, tmoe_error *err) {
    int nstrat = 0, nwl = 0;
    for (int s = 0; s < TMOE_ROUTE_STRATEGY_COUNT; s++) nstrat += cfg->strategies[s] != 0;
    for (int w = 0; w < TMOE_WL_COUNT; w++) nwl += cfg->workloads[w] != 0;
    run_combo *combos = tmoe_calloc((size_t)(cfg->repeats * nstrat * nwl), sizeof *combos, err);
    if (!combos) return TMOE_ENOMEM;
    int n = 0;
    for (int rep = cfg->repeat_first; rep < cfg->repeat_first + cfg->repeats; rep++) {
        int first = n;
        for (int w = 0; w < TMOE_WL_COUNT; w++)
            for (int s = 0; s < TMOE_ROUTE_STRATEGY_COUNT; s++)
                if (cfg->workloads[w] && cfg->strategies[s])
                    combos[n++] = (run_combo){rep, (tmoe_workload_kind)w, (tmoe_route_strategy)s};
        /* interleave: a fresh random order each repeat, so heat is not billed to one strategy */
        tmoe_rng o;
        tmoe_rng_seed_stream(&o, cfg->seed, 0x0bde7 + (uint64_t)rep);
        for (int i = n - 1; i > first; i--) {
            int j = first + (int)tmoe_rng_below(&o, (uint32_t)(i - first + 1));
            run_combo t = combos[i];
            combos[i] = combos[j];
            combos[j] = t;
        }
    }
    *out = combos;
    *n_out = n;
    return TMOE_OK;
}

int run_resume_keep(run_ctx *r, tmoe_runlog_done *done, int ndone, int nb, int *nkeep,
                    long *dropped, tmoe_error *err) {
    int keep = 0;
    for (int i = 0; i < ndone; i++) {
        run_combo c = {.repeat = done[i].repeat};
        int ok = tmoe_workload_parse(done[i].workload, &c.wl) == 0 &&
                 tmoe_route_strategy_parse(done[i].strategy, &c.st) == 0 && done[i].rows == nb &&
                 !done[i].invalid;
        if (ok) done[keep++] = done[i];
    }
    long found = tmoe_runlog_rows(r->log);
    *nkeep = keep;
    *dropped = 0;
    if ((long)keep * nb != found) {
        int rc = tmoe_runlog_drop(r->log, done, keep, err);
        if (rc) return rc;
    }
    *dropped = found - tmoe_runlog_rows(r->log);
    return TMOE_OK;
}

/* With several ranks every rank must stop after the same batch (the next step is a
 * collective): the ranks agree on the stop flag. */
int run_stop_now(run_ctx *r) {
    if (r->ranks <= 1) return run_stop_requested != 0;
    double v = run_stop_requested ? 1.0 : 0.0;
    tmoe_error e2 = {0};
    if (tmoe_ep_allreduce_max(r->cfg.ep, &v, &e2) == TMOE_OK && v > 0.0) run_stop_requested = 1;
    return run_stop_requested != 0;
} /* Rest until the GPU is back within 1 C of the run's starting temperature, or cooldown_s. */
void run_cool_down(run_ctx *r) {
    if (r->cfg.cooldown_s <= 0.0 || isnan(r->start_temp_c)) return;
    for (double t = 0.0; t < r->cfg.cooldown_s && !run_stop_requested; t += 0.5) {
        tmoe_sample s;
        if (tmoe_monitor_latest(r->mon, run_own_device(r), &s) == TMOE_OK &&
            (s.valid & TMOE_F_GPU_TEMP) && s.gpu_temp_c <= r->start_temp_c + 1.0)
            return;
        tmoe_meter_wait(r->meter, 0.5);
    }
}
static int combo_done(const tmoe_runlog_done *d, int nd, const run_combo *c, int rows) {
    for (int i = 0; i < nd; i++)
        if (d[i].repeat == c->repeat && !strcmp(d[i].workload, tmoe_workload_name(c->wl)) &&
            !strcmp(d[i].strategy, tmoe_route_strategy_name(c->st)))
            return d[i].rows == rows;
    return 0;
}
int run_skip(run_ctx *r, const tmoe_runlog_done *done, int nkeep, const run_combo *c, int nb,
             int *skip, tmoe_error *err) {
    *skip = r->cfg.resume && combo_done(done, nkeep, c, nb);
    if (r->ranks <= 1) return TMOE_OK;
    /* every rank must run the same combinations */
    double hi = *skip, lo = -*skip;
    int rc = tmoe_ep_allreduce_max(r->cfg.ep, &hi, err);
    if (!rc) rc = tmoe_ep_allreduce_max(r->cfg.ep, &lo, err);
    if (rc) return rc;
    if (hi != -lo)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "--resume: the ranks' directories disagree on whether repeat %d "
                           "%s %s is complete (one rank wrote its last row, another did "
                           "not); remove that combination's rows from every rank's "
                           "batches.csv and resume again",
                           c->repeat, tmoe_workload_name(c->wl), tmoe_route_strategy_name(c->st));
    return TMOE_OK;
}
