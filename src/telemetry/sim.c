/* Simulated H100 SXM: power from the work submitted (bytes and FLOPs or energy), static
 * power with leakage, a power cap that slows the SM clock, a two-stage RC thermal model for
 * the GPU die and the HBM (fitted by scripts/fit_thermal.py to the measured 20 Hz trace),
 * NVML-like counters (energy and 1 s average power updated every 100 ms). Time is simulated
 * and kept in integer nanoseconds so long runs do not drift. Numbers: docs/telemetry.md. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/telemetry.h"

/* ---- calibration (docs/telemetry.md says where each comes from) ---------------------- */
#define SIM_IDLE_DOWN_W 72.0 /* clocks down, at SIM_IDLE_DOWN_T */
#define SIM_IDLE_DOWN_T 34.0
#define SIM_LEAK_DOWN 0.15  /* W per C, clocks down */
#define SIM_IDLE_UP_W 138.3 /* clocks up, at SIM_IDLE_UP_T */
#define SIM_IDLE_UP_T 51.0
#define SIM_LEAK_UP 1.0       /* W per C, clocks up and idle */
#define SIM_LEAK_BUSY 0.6     /* extra W per C while work runs (1.6 in all) */
#define SIM_PJ_PER_BYTE 134.0 /* dynamic energy per byte moved, pJ */
#define SIM_PJ_PER_FLOP 0.78  /* dynamic energy per FLOP (bf16 tensor core), pJ */
#define SIM_SM_MAX_MHZ 1980.0
#define SIM_SM_IDLE_MHZ 345.0
#define SIM_MEM_MHZ 2619.0
#define SIM_MEM_PEAK_BPS 3.35e12
#define SIM_SLOWDOWN_C 89.0
#define SIM_SHUTDOWN_C 95.0
#define SIM_THERMAL_SCALE 0.7 /* clock factor above the slowdown temperature */
#define SIM_MEM_TOTAL 85520809984ull
#define SIM_MEM_USED0 (560ull << 20)
/* RC model: T = T_amb + sum over stages of x, dx/dt = (g_rest P_rest + g_mem P_mem - x)/tau */
static const double tau_s[2] = {0.3, 20.0};
static const double g_rest[2][2] = {{0.03570, 0.01954}, {0.01971, 0.02037}}; /* [gpu|hbm][stage] */
static const double g_mem[2][2] = {{0.01494, 0.03384}, {0.04259, 0.03304}};
#define SIM_HBM_AMB_OFFSET 4.26 /* HBM ambient above the GPU's, C */

#define BUCKET_NS 100000000LL /* counters update every 100 ms */
#define NBUCKETS 10
#define QCAP 4096

typedef struct work {
    double rem_s; /* busy seconds left at full clock */
    double dyn_w; /* dynamic power at full clock, W */
    double mem_w; /* part of dyn_w that moves memory, W */
} work;

typedef struct simdev {
    work q[QCAP];
    int qhead, qlen;
    double x[2][2]; /* thermal stage states, C */
    double amb[2];  /* ambient of gpu, hbm */
    int clocks_up;
    double idle_since_s; /* seconds idle */
    double energy_j;     /* true energy since create */
    double energy_origin_mj;
    double bucket_e0;            /* energy at the last 100 ms boundary */
    double hist_e[NBUCKETS + 1]; /* energy at the last 11 boundaries (ring) */
    int hist_n;
    double busy_bucket[NBUCKETS], bytes_bucket[NBUCKETS]; /* per 100 ms bucket */
    double busy_cur, bytes_cur;
    double noise_w;          /* instant power noise for the present bucket */
    double p_now, scale_now; /* last step: board power, clock factor */
    int busy_now;
    uint64_t reasons_now;
    uint64_t mem_used;
    double drive_w, drive_mem_w; /* replayed power during drive_power; < 0 when unused */
    tmoe_rng rng;
} simdev;

struct tmoe_sim {
    tmoe_sim_config cfg;
    int n;
    simdev *d;
    int64_t now_ns;
    int64_t tick_ns;
    tmoe_sim_tick_fn tick_fn;
    void *tick_user;
    pthread_mutex_t mu; /* recursive: the tick callback reads the sim inside advance */
};
/* Every public entry point holds the sim's lock, so a monitor thread may read while the
 * caller submits and advances. */
#define LOCK(s) pthread_mutex_lock(&((tmoe_sim *)(s))->mu)
#define UNLOCK(s) pthread_mutex_unlock(&((tmoe_sim *)(s))->mu)

tmoe_sim_config tmoe_sim_config_default(void) {
    tmoe_sim_config c = {.n_devices = 1,
                         .seed = 1,
                         .idle_temp_c = 34.0,
                         .power_limit_w = 700.0,
                         .power_noise_w = 4.0,
                         .clock_down_after_s = 0.0};
    return c;
}

static double temp_of(const simdev *d, int sensor) {
    return d->amb[sensor] + d->x[sensor][0] + d->x[sensor][1];
}

static double static_power(const simdev *d, int busy) {
    double t = temp_of(d, 0);
    if (!d->clocks_up) return SIM_IDLE_DOWN_W + SIM_LEAK_DOWN * (t - SIM_IDLE_DOWN_T);
    return SIM_IDLE_UP_W + (SIM_LEAK_UP + (busy ? SIM_LEAK_BUSY : 0.0)) * (t - SIM_IDLE_UP_T);
}

static void thermal_step(simdev *d, double dt, double p_rest, double p_mem) {
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < 2; i++) {
            double a = exp(-dt / tau_s[i]);
            double target = g_rest[s][i] * p_rest + g_mem[s][i] * p_mem;
            d->x[s][i] = d->x[s][i] * a + target * (1.0 - a);
        }
}

static void thermal_equilibrium(simdev *d, double p_rest, double p_mem) {
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < 2; i++) d->x[s][i] = g_rest[s][i] * p_rest + g_mem[s][i] * p_mem;
}

int tmoe_sim_create(const tmoe_sim_config *cfg, tmoe_sim **out, tmoe_error *err) {
    *out = NULL;
    tmoe_sim_config c = cfg ? *cfg : tmoe_sim_config_default();
    if (c.n_devices < 1 || c.n_devices > 64)
        return tmoe_errorf(err, TMOE_EINVAL, "sim: n_devices %d is out of range [1, 64]",
                           c.n_devices);
    if (!(c.power_limit_w > 150.0 && c.power_limit_w < 5000.0))
        return tmoe_errorf(err, TMOE_EINVAL, "sim: power limit %g W is out of range (150, 5000)",
                           c.power_limit_w);
    if (!(c.idle_temp_c > -20.0 && c.idle_temp_c < 80.0) || !(c.power_noise_w >= 0.0))
        return tmoe_errorf(err, TMOE_EINVAL, "sim: idle temperature %g C or noise %g W invalid",
                           c.idle_temp_c, c.power_noise_w);
    tmoe_sim *s = tmoe_calloc(1, sizeof *s, err);
    if (!s) return TMOE_ENOMEM;
    s->d = tmoe_calloc((size_t)c.n_devices, sizeof *s->d, err);
    if (!s->d) {
        free(s);
        return TMOE_ENOMEM;
    }
    pthread_mutexattr_t ma;
    if (pthread_mutexattr_init(&ma) != 0 ||
        pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE) != 0 ||
        pthread_mutex_init(&s->mu, &ma) != 0) {
        free(s->d);
        free(s);
        return tmoe_errorf(err, TMOE_ENOMEM, "sim: cannot create its mutex");
    }
    pthread_mutexattr_destroy(&ma);
    s->cfg = c;
    s->n = c.n_devices;
    for (int i = 0; i < s->n; i++) {
        simdev *d = &s->d[i];
        tmoe_rng_seed_stream(&d->rng, c.seed, (uint64_t)i);
        double gsum = g_rest[0][0] + g_rest[0][1];
        d->amb[0] = c.idle_temp_c - gsum * SIM_IDLE_DOWN_W;
        d->amb[1] = d->amb[0] + SIM_HBM_AMB_OFFSET;
        /* idle equilibrium with leakage: a few fixed-point passes */
        for (int it = 0; it < 8; it++) thermal_equilibrium(d, static_power(d, 0), 0.0);
        d->energy_origin_mj = 1.0e8 + (double)(tmoe_rng_u64(&d->rng) % 100000000ull);
        d->noise_w = c.power_noise_w * tmoe_rng_normal(&d->rng);
        d->p_now = static_power(d, 0);
        d->scale_now = 1.0;
        d->mem_used = SIM_MEM_USED0;
        d->drive_w = -1.0;
    }
    *out = s;
    return TMOE_OK;
}

void tmoe_sim_free(tmoe_sim *s) {
    if (!s) return;
    pthread_mutex_destroy(&s->mu);
    free(s->d);
    free(s);
}

int tmoe_sim_device_count(const tmoe_sim *s) {
    return s->n;
}
int64_t tmoe_sim_now_ns(const tmoe_sim *s) {
    LOCK(s);
    int64_t t = s->now_ns;
    UNLOCK(s);
    return t;
}

static double queue_s(const simdev *d) {
    double t = 0;
    for (int k = 0; k < d->qlen; k++) t += d->q[(d->qhead + k) % QCAP].rem_s;
    return t;
}

static double enqueue_locked(tmoe_sim *s, int dev, double busy_s, double dyn_w, double mem_w) {
    if (dev < 0 || dev >= s->n || !(busy_s > 0.0) || !(dyn_w >= 0.0) || !isfinite(dyn_w))
        return -1.0;
    simdev *d = &s->d[dev];
    if (d->qlen == QCAP) { /* merge into the last item: same energy, same total time */
        work *w = &d->q[(d->qhead + d->qlen - 1) % QCAP];
        double t = w->rem_s + busy_s;
        w->dyn_w = (w->dyn_w * w->rem_s + dyn_w * busy_s) / t;
        w->mem_w = (w->mem_w * w->rem_s + mem_w * busy_s) / t;
        w->rem_s = t;
    } else {
        d->q[(d->qhead + d->qlen) % QCAP] = (work){busy_s, dyn_w, mem_w};
        d->qlen++;
    }
    return (double)s->now_ns * 1e-9 + queue_s(d);
}

static double enqueue(tmoe_sim *s, int dev, double busy_s, double dyn_w, double mem_w) {
    if (!s) return -1.0;
    LOCK(s);
    double r = enqueue_locked(s, dev, busy_s, dyn_w, mem_w);
    UNLOCK(s);
    return r;
}

double tmoe_sim_submit(tmoe_sim *s, int dev, double busy_s, double bytes, double flops) {
    if (!(bytes >= 0.0) || !(flops >= 0.0) || !(busy_s > 0.0)) return -1.0;
    double mem_w = bytes * SIM_PJ_PER_BYTE * 1e-12 / busy_s;
    double dyn_w = mem_w + flops * SIM_PJ_PER_FLOP * 1e-12 / busy_s;
    return enqueue(s, dev, busy_s, dyn_w, mem_w);
}

double tmoe_sim_submit_energy(tmoe_sim *s, int dev, double busy_s, double energy_j,
                              double mem_fraction) {
    if (!(energy_j >= 0.0) || !(busy_s > 0.0) || !(mem_fraction >= 0.0 && mem_fraction <= 1.0))
        return -1.0;
    double dyn_w = energy_j / busy_s;
    return enqueue(s, dev, busy_s, dyn_w, dyn_w * mem_fraction);
}

double tmoe_sim_backlog_s(const tmoe_sim *s, int dev) {
    TMOE_ASSERT(dev >= 0 && dev < s->n);
    LOCK(s);
    double q = queue_s(&s->d[dev]);
    UNLOCK(s);
    return q;
}

void tmoe_sim_set_mem_used(tmoe_sim *s, int dev, uint64_t bytes) {
    TMOE_ASSERT(dev >= 0 && dev < s->n);
    LOCK(s);
    s->d[dev].mem_used = bytes < SIM_MEM_TOTAL ? bytes : SIM_MEM_TOTAL;
    UNLOCK(s);
}

void tmoe_sim_set_tick(tmoe_sim *s, int64_t period_ns, tmoe_sim_tick_fn fn, void *user) {
    TMOE_ASSERT(!fn || period_ns > 0);
    LOCK(s);
    s->tick_ns = fn ? period_ns : 0;
    s->tick_fn = fn;
    s->tick_user = user;
    UNLOCK(s);
}

/* Run device d for dt seconds (dt no longer than its head item needs, see next_event). */
static void dev_step(tmoe_sim *s, simdev *d, double dt) {
    double p, p_mem = 0.0, scale = 1.0;
    int busy = 0;
    uint64_t reasons = 0;
    double hot = temp_of(d, 0) >= SIM_SLOWDOWN_C ? SIM_THERMAL_SCALE : 1.0;
    if (d->drive_w >= 0.0) {
        d->clocks_up = 1;
        p = d->drive_w;
        p_mem = fmin(d->drive_mem_w, p);
        busy = p > static_power(d, 0) + 20.0;
    } else if (d->qlen > 0) {
        work *w = &d->q[d->qhead];
        busy = 1;
        d->clocks_up = 1;
        double st = static_power(d, 1);
        scale = hot;
        if (st + w->dyn_w * scale > s->cfg.power_limit_w && w->dyn_w > 0.0) {
            scale = fmax(0.05, (s->cfg.power_limit_w - st) / w->dyn_w);
            reasons |= TMOE_THROTTLE_SW_POWER_CAP;
        }
        if (hot < 1.0) reasons |= TMOE_THROTTLE_SW_THERMAL;
        p = st + w->dyn_w * scale;
        p_mem = w->mem_w * scale;
        w->rem_s -= dt * scale;
        d->bytes_cur += p_mem / (SIM_PJ_PER_BYTE * 1e-12) * dt;
        if (w->rem_s <= 1e-15) {
            d->qhead = (d->qhead + 1) % QCAP;
            d->qlen--;
        }
    } else {
        p = static_power(d, 0);
    }
    if (busy) {
        d->idle_since_s = 0.0;
        d->busy_cur += dt;
    } else {
        d->idle_since_s += dt;
        if (s->cfg.clock_down_after_s > 0.0 && d->idle_since_s >= s->cfg.clock_down_after_s)
            d->clocks_up = 0;
    }
    d->energy_j += p * dt;
    thermal_step(d, dt, p - p_mem, p_mem);
    d->p_now = p;
    d->scale_now = scale;
    d->busy_now = busy;
    d->reasons_now = reasons;
}

static void bucket_boundary(tmoe_sim *s, simdev *d) {
    d->bucket_e0 = d->energy_j;
    d->hist_e[d->hist_n % (NBUCKETS + 1)] = d->energy_j;
    d->hist_n++;
    int b = (int)((s->now_ns / BUCKET_NS) % NBUCKETS);
    d->busy_bucket[b] = d->busy_cur;
    d->bytes_bucket[b] = d->bytes_cur;
    d->busy_cur = d->bytes_cur = 0.0;
    d->noise_w = s->cfg.power_noise_w * tmoe_rng_normal(&d->rng);
}

static void advance_ns(tmoe_sim *s, int64_t total) {
    int64_t end = s->now_ns + total;
    while (s->now_ns < end) {
        int64_t step = end - s->now_ns;
        int64_t nb = (s->now_ns / BUCKET_NS + 1) * BUCKET_NS - s->now_ns;
        if (nb < step) step = nb;
        if (s->tick_fn) {
            int64_t nt = (s->now_ns / s->tick_ns + 1) * s->tick_ns - s->now_ns;
            if (nt < step) step = nt;
        }
        for (int i = 0; i < s->n; i++) {
            simdev *d = &s->d[i];
            if (d->qlen == 0 || d->drive_w >= 0.0) continue;
            /* time for the head item at the present clock factor (estimate before the step) */
            double st = static_power(d, 1), dyn = d->q[d->qhead].dyn_w;
            double sc = temp_of(d, 0) >= SIM_SLOWDOWN_C ? SIM_THERMAL_SCALE : 1.0;
            if (st + dyn * sc > s->cfg.power_limit_w && dyn > 0.0)
                sc = fmax(0.05, (s->cfg.power_limit_w - st) / dyn);
            int64_t need = (int64_t)ceil(d->q[d->qhead].rem_s / sc * 1e9);
            if (need < 1) need = 1;
            if (need < step) step = need;
            if (step > 1000000) step = 1000000; /* 1 ms steps while busy: leakage and cap track T */
        }
        for (int i = 0; i < s->n; i++) dev_step(s, &s->d[i], (double)step * 1e-9);
        s->now_ns += step;
        if (s->now_ns % BUCKET_NS == 0)
            for (int i = 0; i < s->n; i++) bucket_boundary(s, &s->d[i]);
        if (s->tick_fn && s->now_ns % s->tick_ns == 0) s->tick_fn(s->tick_user, s->now_ns);
    }
}

void tmoe_sim_advance(tmoe_sim *s, double dt_s) {
    if (!(dt_s > 0.0)) return;
    LOCK(s);
    advance_ns(s, (int64_t)llround(dt_s * 1e9));
    UNLOCK(s);
}

void tmoe_sim_sync(tmoe_sim *s, int dev) {
    LOCK(s);
    for (;;) {
        double left = 0.0;
        for (int i = 0; i < s->n; i++)
            if (dev < 0 || dev == i) left = fmax(left, queue_s(&s->d[i]));
        if (left <= 0.0) break;
        advance_ns(s, (int64_t)fmax(1.0, ceil(left * 1e9)));
    }
    UNLOCK(s);
}

void tmoe_sim_drive_power(tmoe_sim *s, int dev, double dt_s, double board_w, double mem_w) {
    TMOE_ASSERT(dev >= 0 && dev < s->n);
    if (!(dt_s > 0.0)) return;
    LOCK(s);
    simdev *d = &s->d[dev];
    d->drive_w = fmax(0.0, board_w);
    d->drive_mem_w = fmax(0.0, mem_w);
    advance_ns(s, (int64_t)llround(dt_s * 1e9));
    d->drive_w = -1.0;
    UNLOCK(s);
}

void tmoe_sim_set_temps(tmoe_sim *s, int dev, double gpu_c, double mem_c) {
    TMOE_ASSERT(dev >= 0 && dev < s->n);
    LOCK(s);
    simdev *d = &s->d[dev];
    double want[2] = {gpu_c, mem_c};
    for (int k = 0; k < 2; k++) {
        double fast_eq = g_rest[k][0] * d->p_now; /* fast stage at equilibrium */
        d->x[k][0] = fast_eq;
        d->x[k][1] = want[k] - d->amb[k] - fast_eq;
    }
    UNLOCK(s);
}

static int sim_read_locked(tmoe_sim *s, int dev, uint32_t fields, tmoe_sample *o, tmoe_error *err) {
    if (dev < 0 || dev >= s->n)
        return tmoe_errorf(err, TMOE_EINVAL, "sim: device %d out of range [0, %d)", dev, s->n);
    simdev *d = &s->d[dev];
    *o = tmoe_sample_invalid(dev, s->now_ns);
    uint32_t v = 0;
    /* NVML reports whole degrees */
    if (fields & TMOE_F_GPU_TEMP) o->gpu_temp_c = floor(temp_of(d, 0) + 0.5), v |= TMOE_F_GPU_TEMP;
    if (fields & TMOE_F_MEM_TEMP) o->mem_temp_c = floor(temp_of(d, 1) + 0.5), v |= TMOE_F_MEM_TEMP;
    if (fields & TMOE_F_POWER_INSTANT)
        o->power_instant_w = fmax(0.0, d->p_now + d->noise_w), v |= TMOE_F_POWER_INSTANT;
    if (fields & TMOE_F_POWER_AVG) {
        if (d->hist_n >= 2) {
            int have = d->hist_n < NBUCKETS + 1 ? d->hist_n : NBUCKETS + 1;
            double e1 = d->hist_e[(d->hist_n - 1) % (NBUCKETS + 1)];
            double e0 = d->hist_e[(d->hist_n - have) % (NBUCKETS + 1)];
            o->power_avg_w = (e1 - e0) / ((double)(have - 1) * 0.1);
        } else {
            o->power_avg_w = d->p_now;
        }
        v |= TMOE_F_POWER_AVG;
    }
    if (fields & TMOE_F_ENERGY)
        o->energy_mj = floor(d->energy_origin_mj + d->bucket_e0 * 1e3), v |= TMOE_F_ENERGY;
    if (fields & TMOE_F_SM_CLOCK) {
        double f = d->clocks_up ? SIM_SM_MAX_MHZ : SIM_SM_IDLE_MHZ;
        if (d->busy_now) f = SIM_SM_MAX_MHZ * d->scale_now;
        o->sm_clock_mhz = 15.0 * floor(f / 15.0 + 0.5); /* H100 clocks step by 15 MHz */
        v |= TMOE_F_SM_CLOCK;
    }
    if (fields & TMOE_F_MEM_CLOCK) o->mem_clock_mhz = SIM_MEM_MHZ, v |= TMOE_F_MEM_CLOCK;
    if (fields & (TMOE_F_GPU_UTIL | TMOE_F_MEM_UTIL)) {
        double busy = 0, bytes = 0;
        for (int b = 0; b < NBUCKETS; b++) busy += d->busy_bucket[b], bytes += d->bytes_bucket[b];
        double span = fmin(1.0, (double)(d->hist_n) * 0.1);
        if (span > 0.0) {
            if (fields & TMOE_F_GPU_UTIL)
                o->gpu_util_pct = fmin(100.0, floor(100.0 * busy / span)), v |= TMOE_F_GPU_UTIL;
            if (fields & TMOE_F_MEM_UTIL)
                o->mem_util_pct = fmin(100.0, floor(100.0 * bytes / span / SIM_MEM_PEAK_BPS)),
                v |= TMOE_F_MEM_UTIL;
        }
    }
    if (fields & TMOE_F_MEM_USED) o->mem_used_bytes = d->mem_used, v |= TMOE_F_MEM_USED;
    if (fields & TMOE_F_MEM_TOTAL) o->mem_total_bytes = SIM_MEM_TOTAL, v |= TMOE_F_MEM_TOTAL;
    if (fields & TMOE_F_THROTTLE) o->throttle_reasons = d->reasons_now, v |= TMOE_F_THROTTLE;
    o->valid = v;
    return TMOE_OK;
}

int tmoe_sim_read(tmoe_sim *s, int dev, uint32_t fields, tmoe_sample *o, tmoe_error *err) {
    LOCK(s);
    int rc = sim_read_locked(s, dev, fields, o, err);
    UNLOCK(s);
    return rc;
}

/* ---- as a telemetry source -------------------------------------------------------------- */
static int src_open(void **state, const void *cfg, tmoe_error *err) {
    tmoe_sim *s;
    int rc = tmoe_sim_create((const tmoe_sim_config *)cfg, &s, err);
    *state = rc ? NULL : s;
    return rc;
}
static int src_count(void *state) {
    return ((tmoe_sim *)state)->n;
}
static int src_info(void *state, int dev, tmoe_device_info *o, tmoe_error *err) {
    tmoe_sim *s = state;
    if (dev < 0 || dev >= s->n)
        return tmoe_errorf(err, TMOE_EINVAL, "sim: device %d out of range [0, %d)", dev, s->n);
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "simulated NVIDIA H100 80GB HBM3");
    snprintf(o->uuid, sizeof o->uuid, "SIM-%016llx-%02d", (unsigned long long)s->cfg.seed, dev);
    snprintf(o->driver, sizeof o->driver, "simulated");
    snprintf(o->pci_id, sizeof o->pci_id, "sim:%02x:00.0", dev);
    o->power_limit_w = s->cfg.power_limit_w;
    o->slowdown_temp_c = SIM_SLOWDOWN_C;
    o->shutdown_temp_c = SIM_SHUTDOWN_C;
    o->supported = TMOE_F_ALL & ~(TMOE_F_PCIE_RX | TMOE_F_PCIE_TX | TMOE_F_FAN);
    snprintf(o->cuda_driver, sizeof o->cuda_driver, "simulated");
    o->persistence_mode = -1;
    o->app_sm_clock_mhz = o->app_mem_clock_mhz = NAN;
    return TMOE_OK;
}
static int src_read(void *state, int dev, uint32_t fields, tmoe_sample *o, tmoe_error *err) {
    return tmoe_sim_read(state, dev, fields, o, err);
}
static void src_close(void *state) {
    tmoe_sim_free(state);
}

const tmoe_telemetry_source tmoe_source_sim = {"sim",    src_open, src_count,
                                               src_info, src_read, src_close};

double tmoe_sim_energy_exact_j(const tmoe_sim *s, int dev) {
    if (dev < 0 || dev >= s->n) return NAN;
    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    double e = s->d[dev].energy_j;
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    return e;
}
