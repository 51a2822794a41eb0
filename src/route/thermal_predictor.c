/* ThermalPredictor: one RC stage fitted online by recursive least squares (forgetting
 * factor) on the Euler form of dT/dt = (R P + T_amb - T) / tau, and predictions with the
 * exact solution at constant power. Self-contained: the monitor may fit its own model. */
#include "thermoe/route.h"

#include <math.h>
#include <stdlib.h>

/* Regressors are scaled so that all three are of order 1: phi = [T/100, P/1000, 1]. */
#define SC_T 100.0
#define SC_P 1000.0
#define MIN_SAMPLES 5
#define P_TRACE_MAX 1e4

struct tmoe_thermal_pred {
    tmoe_thermal_pred_config cfg;
    double th[3];   /* [100 alpha, 1000 beta, gamma] */
    double P[3][3]; /* RLS covariance */
    double last_t;  /* last observed temperature, C (NAN before any) */
    int n;          /* samples used */
    /* observations shorter than STEP_S are pooled: NVML temperatures are whole degrees, so a
     * derivative over a 1 ms batch is 0 or +-1000 C/s, which would wreck the fit */
    double step_t0; /* temperature at the start of the pooled step, C (NAN: none) */
    double step_e;  /* J drawn in the step so far */
    double step_s;  /* s in the step so far */
};

#define STEP_S 0.2 /* shortest interval the fit learns from, s */

tmoe_thermal_pred_config tmoe_thermal_pred_config_default(void) {
    tmoe_thermal_pred_config c = {0.995, 20.0, 0.07, 30.0, 0.2, 600.0};
    return c;
}

static void reset(tmoe_thermal_pred *p) {
    const tmoe_thermal_pred_config *c = &p->cfg;
    p->th[0] = -SC_T / c->prior_tau_s;
    p->th[1] = SC_P * c->prior_r_c_per_w / c->prior_tau_s;
    p->th[2] = c->prior_t_amb_c / c->prior_tau_s;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) p->P[i][j] = i == j ? 10.0 : 0.0;
    p->last_t = NAN;
    p->step_t0 = NAN;
    p->step_e = p->step_s = 0.0;
    p->n = 0;
}

int tmoe_thermal_pred_create(const tmoe_thermal_pred_config *cfg, tmoe_thermal_pred **out,
                             tmoe_error *err) {
    *out = NULL;
    if (!(cfg->forgetting > 0.0 && cfg->forgetting <= 1.0) || !(cfg->prior_tau_s > 0.0) ||
        !(cfg->tau_min_s > 0.0 && cfg->tau_max_s > cfg->tau_min_s) ||
        !isfinite(cfg->prior_r_c_per_w) || !isfinite(cfg->prior_t_amb_c))
        return tmoe_errorf(err, TMOE_EINVAL,
                           "thermal predictor: forgetting %g must be in (0,1], prior tau %g > 0, "
                           "0 < tau_min %g < tau_max %g, finite R and T_amb",
                           cfg->forgetting, cfg->prior_tau_s, cfg->tau_min_s, cfg->tau_max_s);
    tmoe_thermal_pred *p = tmoe_calloc(1, sizeof *p, err);
    if (!p) return TMOE_ENOMEM;
    p->cfg = *cfg;
    reset(p);
    *out = p;
    return TMOE_OK;
}

void tmoe_thermal_pred_free(tmoe_thermal_pred *p) {
    free(p);
}

int tmoe_thermal_pred_update(tmoe_thermal_pred *p, double power_w, double temp_c, double dt_s) {
    if (!isfinite(temp_c)) return 0;
    double prev = p->last_t;
    p->last_t = temp_c;
    if (!isfinite(prev) || !isfinite(power_w) || !(dt_s > 0.0) || !isfinite(dt_s)) return 0;
    if (!isfinite(p->step_t0)) {
        p->step_t0 = prev;
        p->step_e = p->step_s = 0.0;
    }
    p->step_e += power_w * dt_s;
    p->step_s += dt_s;
    if (p->step_s < STEP_S) return 0;
    double t0 = p->step_t0;
    power_w = p->step_e / p->step_s;
    dt_s = p->step_s;
    p->step_t0 = temp_c;
    p->step_e = p->step_s = 0.0;
    /* the derivative over the step against the step's mean temperature (trapezoid rule):
     * unbiased to second order in dt / tau, where the start temperature (Euler) is not */
    double phi[3] = {0.5 * (t0 + temp_c) / SC_T, power_w / SC_P, 1.0};
    double y = (temp_c - t0) / dt_s;
    double Pphi[3], den = p->cfg.forgetting;
    for (int i = 0; i < 3; i++) {
        Pphi[i] = 0.0;
        for (int j = 0; j < 3; j++) Pphi[i] += p->P[i][j] * phi[j];
        den += phi[i] * Pphi[i];
    }
    double pred = 0.0;
    for (int i = 0; i < 3; i++) pred += p->th[i] * phi[i];
    double r = y - pred, tr = 0.0;
    for (int i = 0; i < 3; i++) p->th[i] += Pphi[i] / den * r;
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++)
            p->P[i][j] = (p->P[i][j] - Pphi[i] * Pphi[j] / den) / p->cfg.forgetting;
        tr += p->P[i][i];
    }
    if (tr > P_TRACE_MAX) /* no excitation: stop the covariance from winding up */
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) p->P[i][j] *= P_TRACE_MAX / tr;
    p->n++;
    return 1;
}

/* Current (alpha, beta, gamma): the prior until MIN_SAMPLES, then the fit with tau clamped. */
static void coeffs(const tmoe_thermal_pred *p, double *a, double *b, double *g) {
    const tmoe_thermal_pred_config *c = &p->cfg;
    if (p->n < MIN_SAMPLES) {
        *a = -1.0 / c->prior_tau_s;
        *b = c->prior_r_c_per_w / c->prior_tau_s;
        *g = c->prior_t_amb_c / c->prior_tau_s;
        return;
    }
    *a = p->th[0] / SC_T;
    *b = p->th[1] / SC_P;
    *g = p->th[2];
    if (*a > -1.0 / c->tau_max_s) *a = -1.0 / c->tau_max_s;
    if (*a < -1.0 / c->tau_min_s) *a = -1.0 / c->tau_min_s;
}

double tmoe_thermal_pred_impact(const tmoe_thermal_pred *p, double extra_power_w,
                                double horizon_s) {
    double a, b, g;
    coeffs(p, &a, &b, &g);
    /* dT(h) = (beta dP / -alpha) (1 - exp(alpha h)) */
    return b * extra_power_w / -a * (1.0 - exp(a * horizon_s));
}

double tmoe_thermal_pred_predict_from(const tmoe_thermal_pred *p, double temp_c, double horizon_s,
                                      double power_w) {
    double a, b, g;
    coeffs(p, &a, &b, &g);
    double tss = -(b * power_w + g) / a;
    return tss + (temp_c - tss) * exp(a * horizon_s);
}

double tmoe_thermal_pred_predict(const tmoe_thermal_pred *p, double horizon_s, double power_w) {
    if (!isfinite(p->last_t)) return NAN;
    return tmoe_thermal_pred_predict_from(p, p->last_t, horizon_s, power_w);
}

int tmoe_thermal_pred_params(const tmoe_thermal_pred *p, double *tau_s, double *r_c_per_w,
                             double *t_amb_c) {
    double a, b, g;
    coeffs(p, &a, &b, &g);
    if (tau_s) *tau_s = -1.0 / a;
    if (r_c_per_w) *r_c_per_w = -b / a;
    if (t_amb_c) *t_amb_c = -g / a;
    return p->n;
}
