/* The plan of a run: its combinations in a balanced order (a Williams design per workload), which
 * of them a resumed run skips (the same on every rank), when to stop, and the rest between
 * combinations. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "thermoe/ep.h"
#include "exp/runner_internal.h"

/* Position p of row j of a Williams design for n treatments: the rows 0 .. n-1 form a Latin
 * square whose first-order carry-over is balanced when n is even; for odd n the rows n .. 2n-1
 * are the same square reversed, and the two together balance it. */
static int williams(int n, int j, int p) {
    int mirror = j >= n;
    if (mirror) p = n - 1 - p;
    /* first row 0, 1, n-1, 2, n-2, ... */
    int base = p == 0 ? 0 : (p % 2 ? (p + 1) / 2 : n - p / 2);
    return (base + j % n) % n;
}

int run_plan(const tmoe_run_config *cfg, run_combo **out, int *n_out, tmoe_error *err) {
    int st[TMOE_ROUTE_STRATEGY_COUNT], wl[TMOE_WL_COUNT], nstrat = 0, nwl = 0;
    for (int s = 0; s < TMOE_ROUTE_STRATEGY_COUNT; s++)
        if (cfg->strategies[s]) st[nstrat++] = s;
    for (int w = 0; w < TMOE_WL_COUNT; w++)
        if (cfg->workloads[w]) wl[nwl++] = w;
    run_combo *combos = tmoe_calloc((size_t)(cfg->repeats * nstrat * nwl), sizeof *combos, err);
    if (!combos) return TMOE_ENOMEM;
    /* the seed relabels the strategies (a shuffle kept for the whole run: the design's
     * balance holds for any labelling) and picks where the workloads' rotation starts */
    tmoe_rng o;
    tmoe_rng_seed_stream(&o, cfg->seed, 0x0bde7);
    for (int i = nstrat - 1; i > 0; i--) {
        int j = (int)tmoe_rng_below(&o, (uint32_t)(i + 1)), t = st[i];
        st[i] = st[j];
        st[j] = t;
    }
    int wshift = nwl > 0 ? (int)tmoe_rng_below(&o, (uint32_t)nwl) : 0;
    int n = 0;
    for (int rep = cfg->repeat_first; rep < cfg->repeat_first + cfg->repeats; rep++)
        /* workloads in blocks, their order rotated each repeat; within a workload's block
         * the strategies follow row (rep + workload) of the Williams design, so over
         * nstrat repeats (2 nstrat when odd) each strategy is in each position once (twice)
         * and follows each other strategy equally often */
        for (int b = 0; b < nwl; b++) {
            int wi = (b + rep + wshift) % nwl;
            int j = (rep + wi) % nstrat + (nstrat % 2 ? (rep / nstrat) % 2 * nstrat : 0);
            for (int p = 0; p < nstrat; p++)
                combos[n++] = (run_combo){rep, (tmoe_workload_kind)wl[wi],
                                          (tmoe_route_strategy)st[williams(nstrat, j, p)]};
        }
    *out = combos;
    *n_out = n;
    return TMOE_OK;
}

int tmoe_run_plan_order(const tmoe_run_config *cfg, tmoe_run_combo **out, int *n, tmoe_error *err) {
    run_combo *c = NULL;
    int rc = run_plan(cfg, &c, n, err);
    if (rc) return rc;
    tmoe_run_combo *o = tmoe_calloc((size_t)(*n > 0 ? *n : 1), sizeof *o, err);
    if (!o) {
        free(c);
        return TMOE_ENOMEM;
    }
    for (int i = 0; i < *n; i++) o[i] = (tmoe_run_combo){c[i].repeat, c[i].wl, c[i].st};
    free(c);
    *out = o;
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
}
/* Rest until the GPU is back within 1 C of the run's starting temperature, or cooldown_s
 * (simulated GPU: in simulated time). */
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

/* One step of warm-up load: a baseline batch of the first workload; on the simulated GPU,
 * after the first one, the same batch's billed work again (simulated time, no host work). */
static int warm_step(run_ctx *r, const run_combo *c, int b, tmoe_error *err) {
    if (!r->sim || b == 0) return run_batch(r, c, b, 0, NULL, err);
    int nd = r->ndev > 0 ? r->ndev : 1, any = 0;
    for (int d = 0; d < nd; d++)
        if (r->bill_busy_s[d] > 0.0) {
            any = 1;
            int rc = tmoe_meter_bill(r->meter, d, r->bill_busy_s[d], r->bill_dyn_j[d], 0.85);
            if (rc) return tmoe_errorf(err, rc, "warm-up: device %d could not be billed", d);
        }
    if (!any) tmoe_meter_wait(r->meter, 0.01);
    tmoe_meter_sync(r->meter);
    return TMOE_OK;
}

/* Warm up until power is steady: baseline load in windows of 1 s (device clock); steady
 * once three consecutive windows' average power each differ from the one before by less
 * than 2%; at most cfg.steady_s. */
int run_warm_up(run_ctx *r, tmoe_error *err) {
    r->warm_s = r->warm_power_w = NAN;
    r->warm_steady = 0;
    if (r->cfg.steady_s <= 0.0) return TMOE_OK;
    int w = 0;
    while (w < TMOE_WL_COUNT && !r->cfg.workloads[w]) w++;
    if (w == TMOE_WL_COUNT) return TMOE_OK;
    int rc = run_make_router(r, TMOE_ROUTE_BASELINE, (tmoe_workload_kind)w, r->cfg.seed, err);
    if (rc) return rc;
    run_combo c = {.repeat = -1, .wl = (tmoe_workload_kind)w, .st = TMOE_ROUTE_BASELINE};
    double t_start = run_now_s(r), prev = NAN;
    int calm = 0, b = 0;
    while (run_now_s(r) - t_start < r->cfg.steady_s && !run_stop_now(r)) {
        tmoe_meter_window win;
        tmoe_meter_begin(r->meter, &win);
        double t0 = run_now_s(r);
        while (run_now_s(r) - t0 < 1.0 && !run_stop_requested)
            if ((rc = warm_step(r, &c, b++, err))) return tmoe_error_prefix(err, rc, "warm-up");
        tmoe_meter_reading rd;
        tmoe_error e2 = {0};
        double p = tmoe_meter_end(r->meter, &win, &rd, &e2) == TMOE_OK ? rd.total.power_avg_w : NAN;
        calm = isfinite(p) && isfinite(prev) && prev > 0.0 && fabs(p / prev - 1.0) < 0.02 ? calm + 1
                                                                                          : 0;
        prev = p;
        r->warm_power_w = p;
        if (calm >= 3) {
            r->warm_steady = 1;
            break;
        }
    }
    r->warm_s = run_now_s(r) - t_start;
    return run_update_finish(r, err);
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
