/* The hardware side of a batch: its meter reading in the row's terms, the snapshot the
 * routers see, telemetry faults, and the energy of the expert-parallel link. */
#include <math.h>
#include <stdio.h>
#include <time.h>

#include "thermoe/ep.h"
#include "exp/runner_internal.h"

/* The telemetry device this process drives: expert-parallel ranks their local rank's GPU
 * (one per rank on a host), else device 0. */
int run_own_device(const run_ctx *r) {
    return r->ranks > 1 && r->ndev > 0 ? tmoe_ep_local_rank(r->cfg.ep) % r->ndev : 0;
}

/* Fill hw from the meter's reading of the batch's window: per device energy, mean power and
 * end temperature; for the batch the totals (the meter's rules: sums over the devices, or
 * on an expert-parallel rank its own GPU's, so that the ranks' rows add up to the host). */
void run_hw_from_reading(run_ctx *r, const tmoe_meter_reading *rd, batch_hw *hw) {
    const tmoe_meter_values *t = &rd->total;
    hw->period_s = rd->period_s;
    hw->energy_j = t->energy_j;
    hw->method = t->method;
    hw->power_avg_w = t->power_avg_w;
    hw->power_peak_w = t->power_peak_w;
    hw->temp_start_c = t->gpu_temp_start_c;
    hw->temp_end_c = t->gpu_temp_end_c;
    hw->temp_peak_c = t->gpu_temp_peak_c;
    hw->mem_temp_peak_c = t->mem_temp_peak_c;
    hw->sm_clock_mhz = t->sm_clock_mhz;
    hw->gpu_util_pct = t->gpu_util_pct;
    hw->mem_clock_mhz = t->mem_clock_mhz;
    hw->mem_util_pct = t->mem_util_pct;
    hw->pcie_rx_mbps = t->pcie_rx_kbs / 1e3; /* NVML's KB/s */
    hw->pcie_tx_mbps = t->pcie_tx_kbs / 1e3;
    struct timespec ts;
    hw->wall_end_unix_s =
        clock_gettime(CLOCK_REALTIME, &ts) == 0 ? (double)ts.tv_sec + ts.tv_nsec / 1e9 : NAN;
    hw->throttle = t->throttle;
    for (int d = 0; d < r->ndev; d++) {
        hw->dev_energy_j[d] = rd->dev[d].energy_j;
        hw->dev_power_avg_w[d] = rd->dev[d].power_avg_w;
        hw->dev_temp_end_c[d] = rd->dev[d].gpu_temp_end_c;
        hw->dev_lost[d] = rd->dev[d].lost;
    }
    if (t->sm_clock_max_mhz > r->max_sm_clock) r->max_sm_clock = t->sm_clock_max_mhz;
}

/* Hardware snapshot for the router from the latest samples. Expert-parallel: this rank's
 * own GPU (local rank's device) gives the single-device fields, and every rank's own GPU
 * state reaches every rank (an allgather per batch, also across hosts): dev_* by rank. */
tmoe_hw_state run_hw_snapshot(run_ctx *r, double horizon_s) {
    tmoe_hw_state h = tmoe_hw_state_unknown();
    tmoe_sample s;
    int own = run_own_device(r);
    h.num_devices = r->ndev;
    for (int d = 0; d < r->ndev; d++) {
        if (tmoe_monitor_latest(r->mon, d, &s) != TMOE_OK) continue;
        double p = (s.valid & TMOE_F_POWER_AVG) ? s.power_avg_w : NAN;
        h.dev_temp_c[d] = (s.valid & TMOE_F_GPU_TEMP) ? s.gpu_temp_c : NAN;
        h.dev_power_w[d] = p;
        h.dev_util[d] = (s.valid & TMOE_F_GPU_UTIL) ? s.gpu_util_pct / 100.0 : NAN;
        h.dev_queue[d] = tmoe_meter_backlog_s(r->meter, d) * 1e3; /* NAN on NVML */
        if (d != own) continue;
        h.gpu_temp_c = h.dev_temp_c[d];
        h.mem_temp_c = (s.valid & TMOE_F_MEM_TEMP) ? s.mem_temp_c : NAN;
        h.power_w = p;
        h.gpu_util = h.dev_util[d];
        if ((s.valid & TMOE_F_SM_CLOCK) && r->max_sm_clock > 0.0)
            h.sm_clock_ratio = s.sm_clock_mhz / r->max_sm_clock;
        if (s.valid & TMOE_F_THROTTLE)
            h.throttled =
                (s.throttle_reasons & (TMOE_THROTTLE_SW_POWER_CAP | TMOE_THROTTLE_HW_SLOWDOWN |
                                       TMOE_THROTTLE_SW_THERMAL | TMOE_THROTTLE_HW_THERMAL |
                                       TMOE_THROTTLE_HW_POWER_BRAKE)) != 0;
        h.pred_horizon_s = horizon_s;
        h.pred_temp_c = tmoe_monitor_predict_thermal(r->mon, horizon_s, isnan(p) ? 0.0 : p);
    }
    if (r->ranks > 1) {
        double mine[4] = {
            own < r->ndev ? h.dev_temp_c[own] : NAN, own < r->ndev ? h.dev_power_w[own] : NAN,
            own < r->ndev ? h.dev_util[own] : NAN, own < r->ndev ? h.dev_queue[own] : NAN};
        double all[4 * TMOE_ROUTE_MAX_DEVICES];
        tmoe_error e2 = {0};
        int n = r->ranks < TMOE_ROUTE_MAX_DEVICES ? r->ranks : TMOE_ROUTE_MAX_DEVICES;
        if (tmoe_ep_allgather(r->cfg.ep, mine, sizeof mine, all, &e2) == TMOE_OK) {
            h.num_devices = n;
            for (int q = 0; q < n; q++) {
                h.dev_temp_c[q] = all[4 * q];
                h.dev_power_w[q] = all[4 * q + 1];
                h.dev_util[q] = all[4 * q + 2];
                h.dev_queue[q] = all[4 * q + 3];
            }
        } else {
            tmoe_log(TMOE_LOG_WARN, "device state of the other ranks: %s", e2.msg);
        }
    }
    return h;
}

/* A logged batch measured without its telemetry (a device lost, or no energy reading for a
 * device in the window) is a telemetry fault: counted, the first one kept with its reason,
 * so that the run cannot end "complete" on rows of nan. Judged from the batch's meter
 * reading alone (hw), never from the device's state now: the monitor thread may lose the
 * device after the window was read, and that batch's energy is known. So a batch is a fault
 * exactly when its row has an unknown energy (energy_j or a device's device_energy_j); the
 * meter makes a lost device's energy unknown. */
void run_check_telemetry(run_ctx *r, const run_combo *c, int b, const batch_hw *hw) {
    char why[256] = "";
    for (int d = 0; d < r->ndev && !why[0]; d++) {
        tmoe_device_info info;
        tmoe_error e2 = {0};
        if (!isnan(hw->dev_energy_j[d])) continue;
        if (hw->dev_lost[d])
            snprintf(why, sizeof why, "device %d (%s) was lost (NVML_ERROR_GPU_IS_LOST)", d,
                     tmoe_telemetry_device_info(r->tel, d, &info, &e2) == TMOE_OK ? info.uuid
                                                                                  : "?");
        else
            snprintf(why, sizeof why,
                     "device %d gave no energy reading in the batch's window "
                     "(no power sample, no counter step)",
                     d);
    }
    if (!why[0] && isnan(hw->energy_j)) snprintf(why, sizeof why, "the batch's energy is unknown");
    if (!why[0]) return;
    if (r->tel_faults++ == 0) {
        r->fault_combo = *c;
        r->fault_batch = b;
        snprintf(r->fault_reason, sizeof r->fault_reason, "%s", why);
        tmoe_log(TMOE_LOG_ERROR,
                 "telemetry fault at repeat %d %s %s batch %d: %s; its row and "
                 "every faulted one after it have nan energy (the run will not end complete)",
                 c->repeat, tmoe_workload_name(c->wl), tmoe_route_strategy_name(c->st), b, why);
    }
}

/* Energy to move one token copy to another rank and back, from the measured all-to-all
 * bandwidth: bytes per copy / bandwidth = seconds the link is busy, times the power the GPUs
 * draw now (the latest samples, summed over the local devices). fallback when unmeasured. */
double run_link_j_per_copy(run_ctx *r, double fallback) {
    tmoe_ep_stats es;
    tmoe_error e2 = {0};
    if (tmoe_engine_ep_stats(r->eng, &es, &e2) || !(es.link_gbps > 0.0)) return fallback;
    double p = 0.0;
    for (int d = 0; d < r->ndev; d++) {
        tmoe_sample s;
        if (tmoe_monitor_latest(r->mon, d, &s) == TMOE_OK && (s.valid & TMOE_F_POWER_AVG))
            p += s.power_avg_w;
    }
    if (!(p > 0.0)) return fallback;
    double j = es.bytes_per_copy / (es.link_gbps * 1e9) * p;
    tmoe_log(TMOE_LOG_INFO, "link cost: %.0f bytes per copy at %.1f GB/s and %.0f W: %.3g J",
             es.bytes_per_copy, es.link_gbps, p, j);
    return j;
}
