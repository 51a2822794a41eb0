/* The meter: measurement windows over every device of a telemetry, for the run loop and
 * the profiler. One branch on the simulated GPU (exact energy, work billed to it) against
 * NVML (the monitor's energy windows), the rest shared: both read the monitor's samples.
 *
 * A window is its start time plus what was known then, not one of the monitor's energy
 * tokens: the energy of [start, end] is tmoe_monitor_energy_between, which is what closing a
 * token computes, and a window dropped on an error path holds nothing.
 *
 * Rules (the run loop's batch windows, so that they can move here unchanged):
 * - a window that holds no sample of a device uses the device's latest sample instead;
 * - a device's energy: sim exact; else the monitor's window (counter where it stepped inside
 *   the window, else integrated power); else the last power sampled times the window length
 *   (latest_power); else unknown; a device lost by the time the window is read has no
 *   energy (its samples stop at the loss and do not cover the window), and the reading says
 *   it was lost, so that a caller judges the window from the reading alone;
 * - a device's peak power is its highest sampled power, at least its mean;
 * - totals: energy and peak power are sums over the devices (unknown when one device's is:
 *   the peak is an upper bound of the total's peak, exact with one device), the method the
 *   weakest device's, peak temperatures the hottest device's, start and end temperatures
 *   the own device's, clocks, utilisation and throttle reasons over every sample of every
 *   device, PCIe throughput the sum of the devices' means; own_only makes every total the own
 * device's. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "thermoe/telemetry.h"

#define CHUNK 512 /* samples copied out of the monitor at a time */

struct tmoe_meter {
    tmoe_telemetry *tel;
    tmoe_monitor *mon;
    tmoe_sim *sim; /* NULL on nvml */
    tmoe_meter_config cfg;
    int n;
    tmoe_sample buf[CHUNK];
};

tmoe_meter_config tmoe_meter_config_default(void) {
    tmoe_meter_config c = {.own_device = 0, .own_only = 0, .max_devices = 0};
    return c;
}

int tmoe_meter_create(tmoe_telemetry *t, tmoe_monitor *mon, const tmoe_meter_config *cfg,
                      tmoe_meter **out, tmoe_error *err) {
    *out = NULL;
    TMOE_ASSERT(t && mon);
    tmoe_meter_config c = cfg ? *cfg : tmoe_meter_config_default();
    int n = tmoe_telemetry_device_count(t);
    if (c.max_devices > 0 && n > c.max_devices) n = c.max_devices;
    if (n < 1 || n > TMOE_METER_MAX_DEVICES)
        return tmoe_errorf(err, TMOE_EINVAL, "meter: %d devices (1 to %d can be measured)", n,
                           TMOE_METER_MAX_DEVICES);
    if (c.own_device < 0 || c.own_device >= n)
        return tmoe_errorf(err, TMOE_EINVAL, "meter: own device %d, the telemetry has %d (0 to %d)",
                           c.own_device, n, n - 1);
    tmoe_meter *m = tmoe_calloc(1, sizeof *m, err);
    if (!m) return TMOE_ENOMEM;
    m->tel = t;
    m->mon = mon;
    m->sim = tmoe_telemetry_sim(t);
    m->cfg = c;
    m->n = n;
    *out = m;
    return TMOE_OK;
}

void tmoe_meter_free(tmoe_meter *m) {
    free(m);
}

void tmoe_meter_begin(tmoe_meter *m, tmoe_meter_window *w) {
    memset(w, 0, sizeof *w);
    w->n_devices = m->n;
    for (int d = 0; d < m->n; d++)
        w->sim_energy_j[d] = m->sim ? tmoe_sim_energy_exact_j(m->sim, d) : NAN;
    w->t0_ns = tmoe_monitor_now_ns(m->mon);
    for (int d = 0; d < m->n; d++)
        if (tmoe_monitor_latest(m->mon, d, &w->first[d]) != TMOE_OK)
            w->first[d] = tmoe_sample_invalid(d, 0);
}

/* Running sums over samples: one per device, one for the total (own_only: the own device's
 * samples only). Sums are taken in sample order, device after device. */
typedef struct acc {
    double clk, clk_max, mclk, util, mutil, rx, tx;
    int nclk, nmclk, nutil, nmutil, nrx, ntx;
    uint64_t throttle;
    int throttle_known, samples;
} acc;

static void acc_init(acc *a) {
    memset(a, 0, sizeof *a);
    a->clk_max = NAN;
}

static void acc_add(acc *a, const tmoe_sample *s) {
    if (s->valid & TMOE_F_SM_CLOCK) {
        a->clk += s->sm_clock_mhz;
        a->nclk++;
        if (!(a->clk_max >= s->sm_clock_mhz)) a->clk_max = s->sm_clock_mhz;
    }
    if (s->valid & TMOE_F_MEM_CLOCK) {
        a->mclk += s->mem_clock_mhz;
        a->nmclk++;
    }
    if (s->valid & TMOE_F_GPU_UTIL) {
        a->util += s->gpu_util_pct;
        a->nutil++;
    }
    if (s->valid & TMOE_F_MEM_UTIL) {
        a->mutil += s->mem_util_pct;
        a->nmutil++;
    }
    if (s->valid & TMOE_F_PCIE_RX) {
        a->rx += s->pcie_rx_kbs;
        a->nrx++;
    }
    if (s->valid & TMOE_F_PCIE_TX) {
        a->tx += s->pcie_tx_kbs;
        a->ntx++;
    }
    if (s->valid & TMOE_F_THROTTLE) {
        a->throttle |= s->throttle_reasons & ~TMOE_THROTTLE_GPU_IDLE;
        a->throttle_known = 1;
    }
}

static void acc_put(const acc *a, tmoe_meter_values *v) {
    v->sm_clock_mhz = a->nclk ? a->clk / a->nclk : NAN;
    v->sm_clock_max_mhz = a->clk_max;
    v->mem_clock_mhz = a->nmclk ? a->mclk / a->nmclk : NAN;
    v->gpu_util_pct = a->nutil ? a->util / a->nutil : NAN;
    v->mem_util_pct = a->nmutil ? a->mutil / a->nmutil : NAN;
    v->pcie_rx_kbs = a->nrx ? a->rx / a->nrx : NAN;
    v->pcie_tx_kbs = a->ntx ? a->tx / a->ntx : NAN;
    v->throttle = a->throttle;
    v->throttle_known = a->throttle_known;
}

static void max_into(double *peak, double x) {
    if (!(*peak >= x)) *peak = x;
}

static double power_of(const tmoe_sample *s) {
    if (s->valid & TMOE_F_POWER_INSTANT) return s->power_instant_w;
    if (s->valid & TMOE_F_POWER_AVG) return s->power_avg_w;
    return NAN;
}

/* One sample of a device into its values (temperatures, power) and into both sums. */
static void visit(tmoe_meter_values *v, double *last_w, acc *dev, acc *tot, const tmoe_sample *s) {
    if (s->valid & TMOE_F_GPU_TEMP) {
        max_into(&v->gpu_temp_peak_c, s->gpu_temp_c);
        v->gpu_temp_end_c = s->gpu_temp_c;
    }
    if (s->valid & TMOE_F_MEM_TEMP) {
        max_into(&v->mem_temp_peak_c, s->mem_temp_c);
        v->mem_temp_end_c = s->mem_temp_c;
    }
    double p = power_of(s);
    if (!isnan(p)) {
        *last_w = p;
        max_into(&v->power_peak_w, p);
    }
    acc_add(dev, s);
    if (tot) acc_add(tot, s);
}

/* Weaker methods rank lower; the total takes the weakest device's. */
static int method_rank(tmoe_energy_method m) {
    switch (m) {
    case TMOE_ENERGY_NONE: return 0;
    case TMOE_ENERGY_LATEST_POWER: return 1;
    case TMOE_ENERGY_INTEGRATED: return 2;
    case TMOE_ENERGY_COUNTER: return 3;
    case TMOE_ENERGY_SIM_EXACT: return 4;
    }
    return 0;
}

static void values_unknown(tmoe_meter_values *v) {
    memset(v, 0, sizeof *v);
    v->energy_j = v->power_avg_w = v->power_peak_w = NAN;
    v->gpu_temp_start_c = v->gpu_temp_end_c = v->gpu_temp_peak_c = NAN;
    v->mem_temp_start_c = v->mem_temp_end_c = v->mem_temp_peak_c = NAN;
    v->sm_clock_mhz = v->sm_clock_max_mhz = v->mem_clock_mhz = NAN;
    v->gpu_util_pct = v->mem_util_pct = NAN;
    v->pcie_rx_kbs = v->pcie_tx_kbs = NAN;
    v->method = TMOE_ENERGY_NONE;
}

int tmoe_meter_end(tmoe_meter *m, const tmoe_meter_window *w, tmoe_meter_reading *out,
                   tmoe_error *err) {
    if (w->n_devices != m->n)
        return tmoe_errorf(err, TMOE_EINVAL, "meter: the window has %d devices, the meter %d",
                           w->n_devices, m->n);
    int64_t t1 = tmoe_monitor_now_ns(m->mon);
    double exact1[TMOE_METER_MAX_DEVICES];
    for (int d = 0; d < m->n && m->sim; d++) exact1[d] = tmoe_sim_energy_exact_j(m->sim, d);
    tmoe_meter_reading *r = out;
    memset(r, 0, sizeof *r);
    r->source = tmoe_telemetry_source_name(m->tel);
    r->period_s = (double)(t1 - w->t0_ns) * 1e-9;
    r->n_devices = m->n;
    r->own_device = m->cfg.own_device;
    int own = m->cfg.own_device;
    tmoe_meter_values *tv = &r->total;
    values_unknown(tv);
    acc tot;
    acc_init(&tot);
    double energy = 0.0, peak_sum = 0.0, rx_sum = 0.0, tx_sum = 0.0;
    int peak_known = 1, weakest = -1;
    for (int d = 0; d < m->n; d++) {
        tmoe_meter_values *v = &r->dev[d];
        values_unknown(v);
        /* read once, before the samples: the monitor thread may lose the device meanwhile */
        v->lost = tmoe_monitor_device_lost(m->mon, d);
        const tmoe_sample *f = &w->first[d];
        v->gpu_temp_start_c = (f->valid & TMOE_F_GPU_TEMP) ? f->gpu_temp_c : NAN;
        v->mem_temp_start_c = (f->valid & TMOE_F_MEM_TEMP) ? f->mem_temp_c : NAN;
        int mine = !m->cfg.own_only || d == own;
        acc a;
        acc_init(&a);
        double last_w = NAN;
        /* every sample in [t0, t1], a chunk at a time (oldest first) */
        int64_t from = w->t0_ns;
        for (;;) {
            int k = tmoe_monitor_samples(m->mon, d, from, t1, m->buf, CHUNK);
            for (int i = 0; i < k; i++) visit(v, &last_w, &a, mine ? &tot : NULL, &m->buf[i]);
            a.samples += k;
            if (k < CHUNK) break;
            from = m->buf[k - 1].t_ns + 1;
        }
        v->samples = a.samples;
        /* a window shorter than the sampling period holds no sample: use the latest one */
        tmoe_sample latest;
        if (a.samples == 0 && tmoe_monitor_latest(m->mon, d, &latest) == TMOE_OK)
            visit(v, &last_w, &a, mine ? &tot : NULL, &latest);
        acc_put(&a, v);
        if (mine) tot.samples += a.samples;

        double e;
        tmoe_energy_method how;
        if (m->sim) {
            e = exact1[d] - w->sim_energy_j[d];
            how = TMOE_ENERGY_SIM_EXACT;
        } else {
            tmoe_energy en = tmoe_monitor_energy_between(m->mon, d, w->t0_ns, t1);
            e = en.joules;
            how = en.method;
        }
        if (v->lost) {
            e = NAN;
            how = TMOE_ENERGY_NONE;
        } else if (how == TMOE_ENERGY_NONE || isnan(e)) {
            /* no counter step and no two power samples inside the window */
            int have = r->period_s > 0.0 && last_w > 0.0;
            e = have ? last_w * r->period_s : NAN;
            how = have ? TMOE_ENERGY_LATEST_POWER : TMOE_ENERGY_NONE;
        }
        v->energy_j = e;
        v->method = how;
        v->power_avg_w = r->period_s > 0.0 ? e / r->period_s : NAN;
        max_into(&v->power_peak_w, v->power_avg_w);

        if (weakest < 0 || method_rank(how) < method_rank((tmoe_energy_method)weakest))
            weakest = (int)how;
        energy = weakest == TMOE_ENERGY_NONE ? NAN : energy + e;
        if (isnan(v->power_peak_w))
            peak_known = 0;
        else
            peak_sum += v->power_peak_w;
        max_into(&tv->gpu_temp_peak_c, v->gpu_temp_peak_c);
        max_into(&tv->mem_temp_peak_c, v->mem_temp_peak_c);
        if (mine) {
            tv->lost |= v->lost;
            rx_sum += v->pcie_rx_kbs; /* NAN when a device's is unknown */
            tx_sum += v->pcie_tx_kbs;
        }
    }
    const tmoe_meter_values *ov = &r->dev[own];
    if (m->cfg.own_only) {
        tv->energy_j = ov->energy_j;
        tv->method = ov->method;
        tv->power_peak_w = ov->power_peak_w;
        tv->gpu_temp_peak_c = ov->gpu_temp_peak_c;
        tv->mem_temp_peak_c = ov->mem_temp_peak_c;
    } else {
        tv->energy_j = energy;
        tv->method = (tmoe_energy_method)weakest;
        tv->power_peak_w = peak_known ? peak_sum : NAN;
    }
    tv->power_avg_w = r->period_s > 0.0 ? tv->energy_j / r->period_s : NAN;
    tv->gpu_temp_start_c = ov->gpu_temp_start_c;
    tv->gpu_temp_end_c = ov->gpu_temp_end_c;
    tv->mem_temp_start_c = ov->mem_temp_start_c;
    tv->mem_temp_end_c = ov->mem_temp_end_c;
    acc_put(&tot, tv);
    tv->pcie_rx_kbs = rx_sum; /* PCIe traffic adds up over the devices */
    tv->pcie_tx_kbs = tx_sum;
    tv->samples = tot.samples;
    return TMOE_OK;
}

int tmoe_meter_bill(tmoe_meter *m, int dev, double busy_s, double dynamic_j, double mem_fraction) {
    if (dev < 0 || dev >= m->n || !(busy_s >= 0.0) || !(dynamic_j >= 0.0) ||
        !(mem_fraction >= 0.0 && mem_fraction <= 1.0))
        return TMOE_EINVAL;
    if (!m->sim || busy_s == 0.0) return TMOE_OK;
    double done = tmoe_sim_submit_energy(m->sim, dev, busy_s, dynamic_j, mem_fraction);
    return done < 0.0 ? TMOE_EINVAL : TMOE_OK;
}

void tmoe_meter_sync(tmoe_meter *m) {
    if (m->sim) tmoe_sim_sync(m->sim, -1);
}

double tmoe_meter_wait(tmoe_meter *m, double dt_s) {
    if (!(dt_s > 0.0)) return 0.0;
    if (m->sim) {
        tmoe_sim_advance(m->sim, dt_s);
        return 0.0;
    }
    struct timespec ts = {(time_t)dt_s, (long)((dt_s - (double)(time_t)dt_s) * 1e9)}, left;
    if (nanosleep(&ts, &left) == 0) return 0.0;
    if (errno != EINTR) return 0.0;
    return (double)left.tv_sec + (double)left.tv_nsec * 1e-9;
}

double tmoe_meter_backlog_s(tmoe_meter *m, int dev) {
    if (!m->sim || dev < 0 || dev >= m->n) return NAN;
    return tmoe_sim_backlog_s(m->sim, dev);
}
