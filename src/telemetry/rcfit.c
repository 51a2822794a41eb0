/* Online RC thermal fit: T = c + g_fast * lag_fast(P) + g_slow * lag_slow(P). The lags are
 * first-order filters of the power with unit gain; (c, g_fast, g_slow) come from recursive
 * least squares with forgetting, run for a bank of slow time constants at once; the member
 * with the lowest recent squared error predicts. Cheap (a few hundred flops per step). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/telemetry.h"

#define NBANK 5
static const double bank_tau[NBANK] = {10.0, 20.0, 40.0, 80.0, 160.0};

typedef struct member {
    double us;      /* slow lag state, W */
    double th[3];   /* c, g_fast, g_slow */
    double P[3][3]; /* RLS covariance */
    double err2;    /* EWMA of squared one-step error, C^2 */
    double resid;   /* last residual, C */
} member;

struct tmoe_rcfit {
    tmoe_rcfit_config cfg;
    int started;
    double uf; /* fast lag state, W */
    double acc_e, acc_t;
    member m[NBANK];
    int best;
};

tmoe_rcfit_config tmoe_rcfit_config_default(void) {
    tmoe_rcfit_config c = {.tau_fast_s = 0.3, .forgetting = 0.98, .step_s = 0.5};
    return c;
}

int tmoe_rcfit_create(const tmoe_rcfit_config *cfg, tmoe_rcfit **out, tmoe_error *err) {
    *out = NULL;
    tmoe_rcfit_config c = cfg ? *cfg : tmoe_rcfit_config_default();
    if (!(c.tau_fast_s > 0.0) || !(c.forgetting > 0.0 && c.forgetting <= 1.0) || !(c.step_s > 0.0))
        return tmoe_errorf(err, TMOE_EINVAL,
                           "rcfit: tau_fast %g s, forgetting %g, step %g s: "
                           "expected tau > 0, forgetting in (0, 1], step > 0",
                           c.tau_fast_s, c.forgetting, c.step_s);
    tmoe_rcfit *f = tmoe_calloc(1, sizeof *f, err);
    if (!f) return TMOE_ENOMEM;
    f->cfg = c;
    *out = f;
    return TMOE_OK;
}

void tmoe_rcfit_free(tmoe_rcfit *f) {
    free(f);
}

static void start(tmoe_rcfit *f, double p, double temp) {
    f->started = 1;
    f->uf = p;
    for (int k = 0; k < NBANK; k++) {
        member *m = &f->m[k];
        memset(m, 0, sizeof *m);
        m->us = p;
        m->th[0] = temp;
        m->P[0][0] = 1e4;
        m->P[1][1] = m->P[2][2] = 1e-1;
        m->err2 = 1.0;
    }
}

static void rls(member *m, const double phi[3], double y, double lambda) {
    double Pphi[3], denom = lambda;
    for (int i = 0; i < 3; i++) {
        Pphi[i] = 0;
        for (int j = 0; j < 3; j++) Pphi[i] += m->P[i][j] * phi[j];
        denom += phi[i] * Pphi[i];
    }
    double e = y - (m->th[0] * phi[0] + m->th[1] * phi[1] + m->th[2] * phi[2]);
    double tr = m->P[0][0] + m->P[1][1] + m->P[2][2];
    if (tr > 1e6) lambda = 1.0; /* no forgetting while unexcited: stops covariance windup */
    for (int i = 0; i < 3; i++) m->th[i] += Pphi[i] / denom * e;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) m->P[i][j] = (m->P[i][j] - Pphi[i] * Pphi[j] / denom) / lambda;
}

void tmoe_rcfit_update(tmoe_rcfit *f, double power_w, double temp_c, double dt_s) {
    if (!isfinite(power_w) || !isfinite(temp_c)) return;
    if (!f->started) {
        start(f, power_w, temp_c);
        return;
    }
    if (!(dt_s > 0.0)) return;
    f->acc_e += power_w * dt_s;
    f->acc_t += dt_s;
    if (f->acc_t < f->cfg.step_s) return;
    double p = f->acc_e / f->acc_t, dt = f->acc_t;
    f->acc_e = f->acc_t = 0.0;
    double af = exp(-dt / f->cfg.tau_fast_s);
    f->uf = f->uf * af + p * (1.0 - af);
    double best = INFINITY;
    for (int k = 0; k < NBANK; k++) {
        member *m = &f->m[k];
        double as = exp(-dt / bank_tau[k]);
        m->us = m->us * as + p * (1.0 - as);
        double phi[3] = {1.0, f->uf, m->us};
        double pred = m->th[0] + m->th[1] * phi[1] + m->th[2] * phi[2];
        double e = temp_c - pred;
        m->err2 = 0.98 * m->err2 + 0.02 * e * e;
        rls(m, phi, temp_c, f->cfg.forgetting);
        m->resid = temp_c - (m->th[0] + m->th[1] * phi[1] + m->th[2] * phi[2]);
        if (m->err2 < best) best = m->err2, f->best = k;
    }
}

void tmoe_rcfit_predict_trace(const tmoe_rcfit *f, const double *power_w, int n, double dt_s,
                              double *temp_c) {
    if (!f->started) {
        for (int i = 0; i < n; i++) temp_c[i] = NAN;
        return;
    }
    const member *m = &f->m[f->best];
    double uf = f->uf, us = m->us, t = 0.0;
    double af = exp(-dt_s / f->cfg.tau_fast_s), as = exp(-dt_s / bank_tau[f->best]);
    for (int i = 0; i < n; i++) {
        uf = uf * af + power_w[i] * (1.0 - af);
        us = us * as + power_w[i] * (1.0 - as);
        t += dt_s;
        temp_c[i] =
            m->th[0] + m->th[1] * uf + m->th[2] * us + m->resid * exp(-t / bank_tau[f->best]);
    }
}

double tmoe_rcfit_predict(const tmoe_rcfit *f, double horizon_s, double power_w) {
    if (!f->started) return NAN;
    if (!(horizon_s > 0.0)) horizon_s = 0.0;
    const member *m = &f->m[f->best];
    double uf = power_w + (f->uf - power_w) * exp(-horizon_s / f->cfg.tau_fast_s);
    double us = power_w + (m->us - power_w) * exp(-horizon_s / bank_tau[f->best]);
    return m->th[0] + m->th[1] * uf + m->th[2] * us +
           m->resid * exp(-horizon_s / bank_tau[f->best]);
}

void tmoe_rcfit_params(const tmoe_rcfit *f, double *c, double *g_fast, double *g_slow,
                       double *tau_slow_s) {
    const member *m = &f->m[f->best];
    if (c) *c = m->th[0];
    if (g_fast) *g_fast = m->th[1];
    if (g_slow) *g_slow = m->th[2];
    if (tau_slow_s) *tau_slow_s = bank_tau[f->best];
}
