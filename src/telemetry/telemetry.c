/* Opened telemetry: picks a source (auto: NVML when a device answers, else the simulated
 * GPU), says which and why in one line, and tracks lost devices. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/telemetry.h"

struct tmoe_telemetry {
    const tmoe_telemetry_source *src;
    void *state;
    int n;
    int *lost;
    char choice[1200];
    pthread_mutex_t mu; /* reads are serialized: sources keep per-device state */
    int mu_ok;
};

tmoe_telemetry_config tmoe_telemetry_config_default(void) {
    tmoe_telemetry_config c = {
        .kind = TMOE_TELEMETRY_AUTO, .sim = tmoe_sim_config_default(), .nvml_lib = NULL};
    return c;
}

static int finish(tmoe_telemetry *t, tmoe_error *err) {
    if (pthread_mutex_init(&t->mu, NULL) != 0)
        return tmoe_errorf(err, TMOE_ENOMEM, "telemetry: cannot create its mutex");
    t->mu_ok = 1;
    t->n = t->src->device_count(t->state);
    t->lost = tmoe_calloc((size_t)(t->n > 0 ? t->n : 1), sizeof *t->lost, err);
    return t->lost ? TMOE_OK : TMOE_ENOMEM;
}

int tmoe_telemetry_open(const tmoe_telemetry_config *cfg, tmoe_telemetry **out, tmoe_error *err) {
    *out = NULL;
    tmoe_telemetry_config c = cfg ? *cfg : tmoe_telemetry_config_default();
    tmoe_telemetry *t = tmoe_calloc(1, sizeof *t, err);
    if (!t) return TMOE_ENOMEM;
    int rc;
    if (c.kind == TMOE_TELEMETRY_NVML || c.kind == TMOE_TELEMETRY_AUTO) {
        tmoe_error nerr = {0};
        rc = tmoe_source_nvml.open(&t->state, c.nvml_lib, &nerr);
        if (rc == TMOE_OK) {
            t->src = &tmoe_source_nvml;
            int n = tmoe_source_nvml.device_count(t->state);
            snprintf(t->choice, sizeof t->choice, "telemetry: nvml (%s; %d device%s answered)",
                     c.kind == TMOE_TELEMETRY_AUTO ? "auto: NVML loaded" : "forced", n,
                     n == 1 ? "" : "s");
        } else if (c.kind == TMOE_TELEMETRY_NVML) {
            free(t);
            if (err) *err = nerr;
            return rc;
        } else {
            snprintf(t->choice, sizeof t->choice,
                     "telemetry: sim (auto: %s; figures are SIMULATED, not measured)", nerr.msg);
        }
    }
    if (!t->src) {
        rc = tmoe_source_sim.open(&t->state, &c.sim, err);
        if (rc) {
            free(t);
            return rc;
        }
        t->src = &tmoe_source_sim;
        if (c.kind == TMOE_TELEMETRY_SIM)
            snprintf(t->choice, sizeof t->choice,
                     "telemetry: sim (forced; %d simulated H100, seed %llu; figures are SIMULATED)",
                     c.sim.n_devices, (unsigned long long)c.sim.seed);
    }
    rc = finish(t, err);
    if (rc) {
        tmoe_telemetry_free(t);
        return rc;
    }
    tmoe_log(TMOE_LOG_INFO, "%s", t->choice);
    *out = t;
    return TMOE_OK;
}

void tmoe_telemetry_free(tmoe_telemetry *t) {
    if (!t) return;
    if (t->src && t->state) t->src->close(t->state);
    if (t->mu_ok) pthread_mutex_destroy(&t->mu);
    free(t->lost);
    free(t);
}

const char *tmoe_telemetry_source_name(const tmoe_telemetry *t) {
    return t->src->name;
}
int tmoe_telemetry_is_simulated(const tmoe_telemetry *t) {
    return t->src == &tmoe_source_sim;
}
const char *tmoe_telemetry_choice(const tmoe_telemetry *t) {
    return t->choice;
}
int tmoe_telemetry_device_count(const tmoe_telemetry *t) {
    return t->n;
}

int tmoe_telemetry_device_info(const tmoe_telemetry *t, int dev, tmoe_device_info *out,
                               tmoe_error *err) {
    return t->src->device_info(t->state, dev, out, err);
}

int tmoe_telemetry_read(tmoe_telemetry *t, int dev, uint32_t fields, tmoe_sample *out,
                        tmoe_error *err) {
    if (dev < 0 || dev >= t->n)
        return tmoe_errorf(err, TMOE_EINVAL, "telemetry: device %d out of range [0, %d)", dev,
                           t->n);
    /* the sim locks itself (and its tick calls back in here under that lock: taking ours
     * too would invert the lock order) */
    if (t->src == &tmoe_source_sim) return t->src->read(t->state, dev, fields, out, err);
    pthread_mutex_lock(&t->mu);
    int rc = t->src->read(t->state, dev, fields, out, err);
    if (rc == TMOE_ENODEV) t->lost[dev] = 1;
    pthread_mutex_unlock(&t->mu);
    return rc;
}

int tmoe_telemetry_device_lost(const tmoe_telemetry *t, int dev) {
    if (dev < 0 || dev >= t->n) return 0;
    pthread_mutex_lock((pthread_mutex_t *)&t->mu);
    int lost = t->lost[dev];
    pthread_mutex_unlock((pthread_mutex_t *)&t->mu);
    return lost;
}

tmoe_sim *tmoe_telemetry_sim(tmoe_telemetry *t) {
    return t->src == &tmoe_source_sim ? (tmoe_sim *)t->state : NULL;
}

int tmoe_telemetry_probe_nvml(const char *lib, int *n_devices, tmoe_error *err) {
    void *state = NULL;
    int rc = tmoe_source_nvml.open(&state, lib, err);
    if (n_devices) *n_devices = rc ? 0 : tmoe_source_nvml.device_count(state);
    if (!rc) tmoe_source_nvml.close(state);
    return rc;
}
