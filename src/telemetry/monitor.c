/* Sampling monitor: a background thread on absolute CLOCK_MONOTONIC deadlines (no drift:
 * deadline k = start + k * period), or, for the simulated GPU, synchronous sampling at every
 * period boundary of simulated time. Samples go into one ring buffer per device; the mutex
 * is held only to copy samples in or out. Energy windows and the online RC fit read them. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "thermoe/telemetry.h"

#define MAX_WINDOWS 64

typedef struct ring {
    tmoe_sample *s;
    int64_t total; /* samples pushed so far */
} ring;

typedef struct window {
    int in_use;
    int dev;
    int64_t t0;
    uint32_t gen;
} window;

struct tmoe_monitor {
    tmoe_telemetry *tel;
    tmoe_sim *sim; /* sync mode */
    tmoe_monitor_config cfg;
    int n;
    ring *r;
    int64_t *last_energy_ns;
    int64_t *last_slow_ns;
    pthread_mutex_t mu;
    pthread_t thread;
    int thread_started;
    atomic_int stop;
    window win[MAX_WINDOWS];
    tmoe_rcfit *fit;
    int64_t fit_last_ns;
};

tmoe_monitor_config tmoe_monitor_config_default(void) {
    /* Slow fields are the NVML reads that cost CPU: measured on an H100 (driver 580) at 20 Hz,
     * the energy counter alone takes 5.2% of a core and PCIe throughput 3.4%, the other
     * fields together 0.5% (bench/results/h100_run/monitor_fields.txt). Every 2 s keeps the
     * monitor under 1% of a core; energy windows shorter than that integrate power. */
    tmoe_monitor_config c = {.mode = TMOE_MONITOR_THREAD,
                             .period_ns = 50000000,
                             .energy_period_ns = 2000000000,
                             .slow_period_ns = 2000000000,
                             .capacity = 65536,
                             .fields = TMOE_F_ALL,
                             .thermal_device = 0};
    return c;
}

const char *tmoe_energy_method_name(tmoe_energy_method m) {
    switch (m) {
    case TMOE_ENERGY_NONE: return "none";
    case TMOE_ENERGY_COUNTER: return "counter";
    case TMOE_ENERGY_INTEGRATED: return "integrated";
    case TMOE_ENERGY_LATEST_POWER: return "latest_power";
    case TMOE_ENERGY_SIM_EXACT: return "sim_exact";
    }
    return "?";
}

static int64_t mon_now(const tmoe_monitor *m) {
    return m->sim ? tmoe_sim_now_ns(m->sim) : tmoe_now_ns();
}
int64_t tmoe_monitor_now_ns(const tmoe_monitor *m) {
    return mon_now(m);
}

/* Read every device once and push (called by the thread or the sim tick). */
static void sample_all(tmoe_monitor *m) {
    for (int d = 0; d < m->n; d++) {
        uint32_t fields = m->cfg.fields;
        int64_t now = mon_now(m);
        if (now - m->last_energy_ns[d] < m->cfg.energy_period_ns)
            fields &= ~TMOE_F_ENERGY;
        else
            m->last_energy_ns[d] = now;
        if (now - m->last_slow_ns[d] < m->cfg.slow_period_ns)
            fields &= ~TMOE_MONITOR_SLOW_FIELDS;
        else
            m->last_slow_ns[d] = now;
        tmoe_sample s;
        tmoe_error err = {0};
        int rc = tmoe_telemetry_read(m->tel, d, fields, &s, &err);
        if (rc != TMOE_OK) s = tmoe_sample_invalid(d, now);
        pthread_mutex_lock(&m->mu);
        ring *r = &m->r[d];
        r->s[r->total % m->cfg.capacity] = s;
        r->total++;
        if (d == m->cfg.thermal_device && (s.valid & TMOE_F_GPU_TEMP)) {
            double p = (s.valid & TMOE_F_POWER_INSTANT) ? s.power_instant_w
                       : (s.valid & TMOE_F_POWER_AVG)   ? s.power_avg_w
                                                        : NAN;
            if (isfinite(p)) {
                double dt = m->fit_last_ns ? (double)(s.t_ns - m->fit_last_ns) * 1e-9 : 0.0;
                tmoe_rcfit_update(m->fit, p, s.gpu_temp_c, dt);
                m->fit_last_ns = s.t_ns;
            }
        }
        pthread_mutex_unlock(&m->mu);
    }
}

static void tick(void *user, int64_t t_ns) {
    (void)t_ns;
    sample_all(user);
}

static void *thread_main(void *arg) {
    tmoe_monitor *m = arg;
    struct timespec start;
    if (clock_gettime(CLOCK_MONOTONIC, &start) != 0) return NULL;
    int64_t t0 = (int64_t)start.tv_sec * 1000000000LL + start.tv_nsec;
    for (int64_t k = 0; !atomic_load(&m->stop); k++) {
        sample_all(m);
        int64_t next = t0 + (k + 1) * m->cfg.period_ns;
        int64_t now = tmoe_now_ns();
        if (next <= now) { /* overran: skip missed deadlines, stay on the grid */
            k = (now - t0) / m->cfg.period_ns;
            next = t0 + (k + 1) * m->cfg.period_ns;
        }
        struct timespec ts = {.tv_sec = next / 1000000000LL, .tv_nsec = next % 1000000000LL};
        while (!atomic_load(&m->stop)) {
            int rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            if (rc == 0) break;
            if (rc != EINTR) {
                tmoe_log(TMOE_LOG_ERROR, "monitor: clock_nanosleep failed (%d); sampling stops",
                         rc);
                return NULL;
            }
        }
    }
    return NULL;
}

int tmoe_monitor_create(tmoe_telemetry *t, const tmoe_monitor_config *cfg, tmoe_monitor **out,
                        tmoe_error *err) {
    *out = NULL;
    tmoe_monitor_config c = cfg ? *cfg : tmoe_monitor_config_default();
    if (c.period_ns < 1000000 || c.capacity < 16 || c.energy_period_ns < 0 || c.slow_period_ns < 0)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "monitor: period %lld ns (>= 1 ms), capacity %d "
                           "(>= 16), energy period %lld ns (>= 0)",
                           (long long)c.period_ns, c.capacity, (long long)c.energy_period_ns);
    if (c.mode == TMOE_MONITOR_SYNC && !tmoe_telemetry_sim(t))
        return tmoe_errorf(err, TMOE_EINVAL,
                           "monitor: sync mode needs the sim telemetry source, "
                           "not %s",
                           tmoe_telemetry_source_name(t));
    tmoe_monitor *m = tmoe_calloc(1, sizeof *m, err);
    if (!m) return TMOE_ENOMEM;
    m->tel = t;
    m->cfg = c;
    m->n = tmoe_telemetry_device_count(t);
    if (c.thermal_device < 0 || c.thermal_device >= m->n) m->cfg.thermal_device = 0;
    int rc = TMOE_ENOMEM;
    m->r = tmoe_calloc((size_t)m->n, sizeof *m->r, err);
    m->last_energy_ns = tmoe_calloc((size_t)m->n, sizeof *m->last_energy_ns, err);
    m->last_slow_ns = tmoe_calloc((size_t)m->n, sizeof *m->last_slow_ns, err);
    if (!m->r || !m->last_energy_ns || !m->last_slow_ns) goto fail;
    for (int d = 0; d < m->n; d++) {
        m->r[d].s = tmoe_calloc((size_t)c.capacity, sizeof(tmoe_sample), err);
        if (!m->r[d].s) goto fail;
        m->last_energy_ns[d] = m->last_slow_ns[d] = INT64_MIN / 2;
    }
    if ((rc = tmoe_rcfit_create(NULL, &m->fit, err)) != TMOE_OK) goto fail;
    if ((rc = pthread_mutex_init(&m->mu, NULL)) != 0) {
        rc = tmoe_errorf(err, TMOE_ENOMEM, "monitor: pthread_mutex_init failed (%d)", rc);
        goto fail_nomutex;
    }
    atomic_init(&m->stop, 0);
    if (c.mode == TMOE_MONITOR_SYNC) {
        m->sim = tmoe_telemetry_sim(t);
        tmoe_sim_set_tick(m->sim, c.period_ns, tick, m);
        sample_all(m); /* a sample at the start */
    } else {
        int e = pthread_create(&m->thread, NULL, thread_main, m);
        if (e != 0) {
            rc = tmoe_errorf(err, TMOE_ENOMEM, "monitor: pthread_create failed (%d)", e);
            pthread_mutex_destroy(&m->mu);
            goto fail_nomutex;
        }
        m->thread_started = 1;
    }
    *out = m;
    return TMOE_OK;
fail:
    if (rc == TMOE_OK) rc = TMOE_ENOMEM;
fail_nomutex:
    if (m->r)
        for (int d = 0; d < m->n; d++) free(m->r[d].s);
    free(m->r);
    free(m->last_energy_ns);
    free(m->last_slow_ns);
    tmoe_rcfit_free(m->fit);
    free(m);
    return rc;
}

void tmoe_monitor_free(tmoe_monitor *m) {
    if (!m) return;
    if (m->thread_started) {
        atomic_store(&m->stop, 1);
        int e = pthread_join(m->thread, NULL);
        if (e != 0) tmoe_log(TMOE_LOG_ERROR, "monitor: pthread_join failed (%d)", e);
    }
    if (m->sim) tmoe_sim_set_tick(m->sim, 0, NULL, NULL);
    pthread_mutex_destroy(&m->mu);
    for (int d = 0; d < m->n; d++) free(m->r[d].s);
    free(m->r);
    free(m->last_energy_ns);
    free(m->last_slow_ns);
    tmoe_rcfit_free(m->fit);
    free(m);
}

int tmoe_monitor_latest(tmoe_monitor *m, int dev, tmoe_sample *out) {
    if (dev < 0 || dev >= m->n) return TMOE_EINVAL;
    pthread_mutex_lock(&m->mu);
    ring *r = &m->r[dev];
    int rc = TMOE_ENODEV;
    if (r->total > 0) {
        *out = r->s[(r->total - 1) % m->cfg.capacity];
        rc = TMOE_OK;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* The ring's samples with t0 <= t_ns <= t1 are [*lo, *hi) (absolute push numbers; the ring
 * is in time order, so a binary search finds them). Call with the lock held. */
static void ring_span(const tmoe_monitor *m, const ring *r, int64_t t0, int64_t t1, int64_t *lo,
                      int64_t *hi) {
    int64_t cap = m->cfg.capacity, first = r->total > cap ? r->total - cap : 0;
    int64_t a = first, b = r->total;
    while (a < b) { /* first sample at or after t0 */
        int64_t mid = a + (b - a) / 2;
        if (r->s[mid % cap].t_ns < t0)
            a = mid + 1;
        else
            b = mid;
    }
    *lo = a;
    b = r->total;
    while (a < b) { /* first sample after t1 */
        int64_t mid = a + (b - a) / 2;
        if (r->s[mid % cap].t_ns <= t1)
            a = mid + 1;
        else
            b = mid;
    }
    *hi = a;
}

int tmoe_monitor_samples(tmoe_monitor *m, int dev, int64_t t0, int64_t t1, tmoe_sample *out,
                         int cap) {
    if (dev < 0 || dev >= m->n || cap <= 0) return 0;
    int k = 0;
    pthread_mutex_lock(&m->mu);
    ring *r = &m->r[dev];
    int64_t lo, hi;
    ring_span(m, r, t0, t1, &lo, &hi);
    for (int64_t i = lo; i < hi && k < cap; i++) out[k++] = r->s[i % m->cfg.capacity];
    pthread_mutex_unlock(&m->mu);
    return k;
}

int64_t tmoe_monitor_sample_count(const tmoe_monitor *m, int dev) {
    if (dev < 0 || dev >= m->n) return 0;
    pthread_mutex_lock((pthread_mutex_t *)&m->mu);
    int64_t n = m->r[dev].total;
    pthread_mutex_unlock((pthread_mutex_t *)&m->mu);
    return n;
}

int tmoe_monitor_device_lost(const tmoe_monitor *m, int dev) {
    return tmoe_telemetry_device_lost(m->tel, dev);
}

static double power_of(const tmoe_sample *s) {
    if (s->valid & TMOE_F_POWER_INSTANT) return s->power_instant_w;
    if (s->valid & TMOE_F_POWER_AVG) return s->power_avg_w;
    return NAN;
}

tmoe_energy tmoe_monitor_energy_between(tmoe_monitor *m, int dev, int64_t t0, int64_t t1) {
    tmoe_energy e = {.joules = NAN,
                     .method = TMOE_ENERGY_NONE,
                     .seconds = (double)(t1 - t0) * 1e-9,
                     .samples = 0};
    if (dev < 0 || dev >= m->n || t1 <= t0) return e;
    /* read the window in place, under the lock (no copy: it runs once per batch) */
    pthread_mutex_lock(&m->mu);
    const ring *r = &m->r[dev];
    int64_t cap = m->cfg.capacity, lo, hi;
    ring_span(m, r, t0, t1, &lo, &hi);
#define AT(i) (&r->s[(i) % cap])
    e.samples = (int)(hi - lo);
    int64_t first = -1, last = -1;
    for (int64_t i = lo; i < hi; i++)
        if (AT(i)->valid & TMOE_F_ENERGY) {
            if (first < 0) first = i;
            last = i;
        }
    if (first >= 0 && last > first && AT(last)->energy_mj > AT(first)->energy_mj &&
        AT(last)->t_ns > AT(first)->t_ns) {
        /* the counter moved: its delta over the sampled span, scaled to the window */
        double span = (double)(AT(last)->t_ns - AT(first)->t_ns) * 1e-9;
        e.joules = (AT(last)->energy_mj - AT(first)->energy_mj) * 1e-3 * (e.seconds / span);
        e.method = TMOE_ENERGY_COUNTER;
    } else {
        /* integrate power over the sampled span, scaled to the window (the ends fall
         * between samples) */
        double j = 0.0;
        int64_t prev = -1, f0 = -1;
        for (int64_t i = lo; i < hi; i++) {
            if (!isfinite(power_of(AT(i)))) continue;
            if (f0 < 0) f0 = i;
            if (prev >= 0)
                j += 0.5 * (power_of(AT(prev)) + power_of(AT(i))) *
                     (double)(AT(i)->t_ns - AT(prev)->t_ns) * 1e-9;
            prev = i;
        }
        if (prev > f0) {
            double span = (double)(AT(prev)->t_ns - AT(f0)->t_ns) * 1e-9;
            e.joules = span > 0.0 ? j * (e.seconds / span) : j;
            e.method = TMOE_ENERGY_INTEGRATED;
        }
    }
#undef AT
    pthread_mutex_unlock(&m->mu);
    return e;
}

int64_t tmoe_monitor_energy_begin(tmoe_monitor *m, int dev) {
    if (dev < 0 || dev >= m->n) return -1;
    int64_t now = mon_now(m);
    pthread_mutex_lock(&m->mu);
    int64_t tok = -1;
    for (int i = 0; i < MAX_WINDOWS; i++) {
        window *w = &m->win[i];
        if (w->in_use) continue;
        w->in_use = 1;
        w->dev = dev;
        w->t0 = now;
        w->gen++;
        tok = ((int64_t)w->gen << 8) | i;
        break;
    }
    pthread_mutex_unlock(&m->mu);
    return tok;
}

int tmoe_monitor_energy_end(tmoe_monitor *m, int64_t token, tmoe_energy *out, tmoe_error *err) {
    int slot = (int)(token & 0xff);
    uint32_t gen = (uint32_t)(token >> 8);
    if (token < 0 || slot >= MAX_WINDOWS)
        return tmoe_errorf(err, TMOE_EINVAL, "monitor: bad energy window token %lld",
                           (long long)token);
    pthread_mutex_lock(&m->mu);
    window w = m->win[slot];
    int ok = w.in_use && w.gen == gen;
    if (ok) m->win[slot].in_use = 0;
    pthread_mutex_unlock(&m->mu);
    if (!ok)
        return tmoe_errorf(err, TMOE_EINVAL, "monitor: energy window token %lld is not open",
                           (long long)token);
    *out = tmoe_monitor_energy_between(m, w.dev, w.t0, mon_now(m));
    return TMOE_OK;
}

double tmoe_monitor_predict_thermal(tmoe_monitor *m, double horizon_s, double planned_power_w) {
    pthread_mutex_lock(&m->mu);
    double t = tmoe_rcfit_predict(m->fit, horizon_s, planned_power_w);
    pthread_mutex_unlock(&m->mu);
    return t;
}

void tmoe_monitor_predict_thermal_trajectory(tmoe_monitor *m, const double *planned_power_w, int n,
                                             double dt_s, double *temp_c) {
    pthread_mutex_lock(&m->mu);
    tmoe_rcfit_predict_trace(m->fit, planned_power_w, n, dt_s, temp_c);
    pthread_mutex_unlock(&m->mu);
}
