/* Routing arithmetic shared by every strategy: cost lookups through the provider (with a
 * central difference when it has no derivative), the batch's predicted energy, base cost
 * biases, the exact mean KL between unbiased and biased routing, and the TTHA surrogate. */
#include "thermoe/route.h"

#include <math.h>
#include <string.h>

#include "route/route_internal.h"
#include "thermoe/model.h"

/* ---- cost lookups ---------------------------------------------------------------------- */

int tmoe_route_cost_eval(const tmoe_cost_provider *p, int e, double n, tmoe_expert_cost *c,
                         tmoe_expert_cost *dc, tmoe_error *err) {
    int rc;
    if (c && (rc = p->expert_cost(p->ctx, e, n, c, err)) != TMOE_OK) return rc;
    if (!dc) return TMOE_OK;
    if (p->expert_cost_deriv) return p->expert_cost_deriv(p->ctx, e, n, dc, err);
    double h = 1e-3 * (n > 1.0 ? n : 1.0);
    double lo = n - h < 0.0 ? n : n - h, hi = n + h;
    tmoe_expert_cost a, b;
    if ((rc = p->expert_cost(p->ctx, e, lo, &a, err)) != TMOE_OK) return rc;
    if ((rc = p->expert_cost(p->ctx, e, hi, &b, err)) != TMOE_OK) return rc;
    double w = hi - lo;
    dc->energy_j = (b.energy_j - a.energy_j) / w;
    dc->latency_ms = (b.latency_ms - a.latency_ms) / w;
    dc->temp_impact_c_per_s = (b.temp_impact_c_per_s - a.temp_impact_c_per_s) / w;
    return TMOE_OK;
}

/* ---- predicted energy ----------------------------------------------------------------- */

int tmoe_route_energy_loss(const tmoe_cost_provider *p, const int32_t *idx, const float *prob,
                           int T, int k, int E, double *out, tmoe_error *err) {
    TMOE_ASSERT(E >= 1 && E <= TMOE_MAX_EXPERTS && k >= 1);
    int32_t counts[TMOE_MAX_EXPERTS] = {0};
    double psum[TMOE_MAX_EXPERTS] = {0};
    for (int i = 0; i < T * k; i++) {
        int e = idx[i];
        if (e < 0 || e >= E)
            return tmoe_errorf(err, TMOE_EINVAL, "selection: expert %d of %d", e, E);
        counts[e]++;
        psum[e] += prob ? (double)prob[i] : 1.0 / k;
    }
    double total = 0.0;
    for (int e = 0; e < E; e++) {
        if (!counts[e]) continue;
        tmoe_expert_cost c;
        int rc = tmoe_route_cost_eval(p, e, counts[e], &c, NULL, err);
        if (rc) return rc;
        total += psum[e] * c.energy_j;
    }
    *out = total;
    return TMOE_OK;
}

/* ---- base cost biases ------------------------------------------------------------------ */

int tmoe_route_cost_scores(const tmoe_cost_provider *p, double tokens, int E, double w_temp,
                           int marginal, const unsigned char *mask, const double *extra_j,
                           double *s, tmoe_error *err) {
    double ew[TMOE_MAX_EXPERTS], ti[TMOE_MAX_EXPERTS];
    double me = 0.0, mt = 0.0;
    /* marginal: the secant over [max(1, n/2), max(that + 1, 3n/2)], wide enough to step over
     * the cost model's token-tile steps */
    double lo = fmax(1.0, 0.5 * tokens), hi = fmax(lo + 1.0, 1.5 * tokens);
    int m = 0;
    for (int e = 0; e < E; e++) {
        s[e] = 0.0;
        if (mask && !mask[e]) continue;
        tmoe_expert_cost c;
        int rc = tmoe_route_cost_eval(p, e, tokens, &c, NULL, err);
        if (rc) return rc;
        ew[e] = c.energy_j / tokens;
        if (marginal) {
            tmoe_expert_cost a, b;
            if ((rc = tmoe_route_cost_eval(p, e, lo, &a, NULL, err)) ||
                (rc = tmoe_route_cost_eval(p, e, hi, &b, NULL, err)))
                return rc;
            ew[e] = (b.energy_j - a.energy_j) / (hi - lo);
        }
        if (extra_j) ew[e] += extra_j[e];
        ti[e] = c.temp_impact_c_per_s;
        me += ew[e];
        mt += ti[e];
        m++;
    }
    if (m == 0) return TMOE_OK;
    me /= m;
    mt /= m;
    for (int e = 0; e < E; e++)
        if (!mask || mask[e])
            s[e] = (me != 0.0 ? ew[e] / me : 0.0) + (mt != 0.0 ? w_temp * ti[e] / mt : 0.0);
    return TMOE_OK;
}

int tmoe_route_scores_spread(const double *s, int E, const unsigned char *mask, double *mean,
                             double *lo, double *hi) {
    double ms = 0.0, mabs = 0.0;
    int m = 0;
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int e = 0; e < E; e++) {
        if (mask && !mask[e]) continue;
        ms += s[e];
        mabs += fabs(s[e]);
        if (s[e] < *lo) *lo = s[e];
        if (s[e] > *hi) *hi = s[e];
        m++;
    }
    if (m == 0) return 0;
    *mean = ms / m;
    mabs /= m;
    return (*hi - *lo > 1e-9 * mabs) && isfinite(*hi - *lo);
}

int tmoe_route_cost_biases(const tmoe_cost_provider *p, double tokens, int E, double max_bias,
                           double w_temp, const unsigned char *mask, double *bias,
                           tmoe_error *err) {
    double s[TMOE_MAX_EXPERTS], ms, lo, hi;
    if (!(tokens > 0.0))
        return tmoe_errorf(err, TMOE_EINVAL, "cost biases: token count %g must be > 0", tokens);
    int rc = tmoe_route_cost_scores(p, tokens, E, w_temp, 1, mask, NULL, s, err);
    if (rc) return rc;
    for (int e = 0; e < E; e++) bias[e] = 0.0;
    if (!tmoe_route_scores_spread(s, E, mask, &ms, &lo, &hi)) return TMOE_OK;
    for (int e = 0; e < E; e++)
        if (!mask || mask[e]) bias[e] = -max_bias * (s[e] - ms) / (hi - lo);
    return TMOE_OK;
}

/* ---- KL and soft counts --------------------------------------------------------------- */

/* Softmax of v (n) into out, in place allowed; returns log-sum-exp. One exp per element. */
static double softmax(const double *v, int n, double *out) {
    double mx = -INFINITY, sum = 0.0;
    for (int i = 0; i < n; i++)
        if (v[i] > mx) mx = v[i];
    for (int i = 0; i < n; i++) sum += (out[i] = exp(v[i] - mx));
    for (int i = 0; i < n; i++) out[i] /= sum;
    return mx + log(sum);
}

double tmoe_route_mean_kl(const float *logits, int T, int E, const double *b, double *grad) {
    /* KL(p||q) = -sum_e p_e b_e + lse(z + b) - lse(z); d/db_e = q_e - p_e. */
    double z[TMOE_MAX_EXPERTS], zb[TMOE_MAX_EXPERTS], p[TMOE_MAX_EXPERTS], q[TMOE_MAX_EXPERTS];
    double kl = 0.0;
    if (grad) memset(grad, 0, sizeof(double) * (size_t)E);
    for (int t = 0; t < T; t++) {
        const float *row = logits + (size_t)t * E;
        for (int e = 0; e < E; e++) {
            z[e] = row[e];
            zb[e] = z[e] + b[e];
        }
        double l0 = softmax(z, E, p), l1 = softmax(zb, E, q), pb = 0.0;
        for (int e = 0; e < E; e++) {
            pb += p[e] * b[e];
            if (grad) grad[e] += q[e] - p[e];
        }
        kl += l1 - l0 - pb;
    }
    if (T > 0) {
        kl /= T;
        if (grad)
            for (int e = 0; e < E; e++) grad[e] /= T;
    }
    return kl;
}

int tmoe_route_surrogate(const tmoe_surrogate *s, const float *logits, int T, int E,
                         const double *b, double *loss, double *grad, double *energy_out,
                         double *latency_out, tmoe_error *err) {
    TMOE_ASSERT(E >= 1 && E <= TMOE_MAX_EXPERTS && s->tau > 0.0 && s->count_scale > 0.0);
    double n[TMOE_MAX_EXPERTS] = {0}, u[TMOE_MAX_EXPERTS] = {0}, v[TMOE_MAX_EXPERTS] = {0};
    double k = s->top_k * s->count_scale, tau = s->tau;
    for (int t = 0; t < T; t++) {
        const float *row = logits + (size_t)t * E;
        for (int e = 0; e < E; e++) v[e] = (row[e] + b[e]) / tau;
        softmax(v, E, v);
        for (int e = 0; e < E; e++) n[e] += k * v[e];
    }
    /* u_e = dS/dn_e from the cost terms */
    double en = 0.0, lat = 0.0;
    for (int e = 0; e < E; e++) {
        tmoe_expert_cost c, dc;
        int rc = tmoe_route_cost_eval(&s->cost, e, n[e], &c, grad ? &dc : NULL, err);
        if (rc) return rc;
        en += c.energy_j;
        lat += c.latency_ms;
        if (grad) u[e] = s->c_energy * dc.energy_j + s->c_latency * dc.latency_ms;
    }
    double kl = s->w_fidelity != 0.0 ? tmoe_route_mean_kl(logits, T, E, b, grad) : 0.0;
    if (loss) *loss = s->c_energy * en + s->c_latency * lat + s->w_fidelity * kl;
    if (energy_out) *energy_out = en;
    if (latency_out) *latency_out = lat;
    if (!grad) return TMOE_OK;
    for (int e = 0; e < E; e++) grad[e] = s->w_fidelity != 0.0 ? grad[e] * s->w_fidelity : 0.0;
    /* dn_e/db_j = (k/tau) sum_t s_te (delta_ej - s_tj), so
     * dS/db_j = (k/tau) sum_t s_tj (u_j - sum_e s_te u_e). */
    for (int t = 0; t < T; t++) {
        const float *row = logits + (size_t)t * E;
        for (int e = 0; e < E; e++) v[e] = (row[e] + b[e]) / tau;
        softmax(v, E, v);
        double su = 0.0;
        for (int e = 0; e < E; e++) su += v[e] * u[e];
        for (int j = 0; j < E; j++) grad[j] += k / tau * v[j] * (u[j] - su);
    }
    return TMOE_OK;
}

/* ---- small helpers -------------------------------------------------------------------- */

tmoe_hw_state tmoe_hw_state_unknown(void) {
    tmoe_hw_state h;
    memset(&h, 0, sizeof h);
    h.gpu_temp_c = h.mem_temp_c = h.power_w = h.gpu_util = h.sm_clock_ratio = NAN;
    h.pred_temp_c = h.pred_horizon_s = NAN;
    h.throttled = -1;
    for (int d = 0; d < TMOE_ROUTE_MAX_DEVICES; d++)
        h.dev_temp_c[d] = h.dev_power_w[d] = h.dev_util[d] = h.dev_queue[d] = NAN;
    return h;
}

tmoe_route_obs tmoe_route_obs_unknown(void) {
    tmoe_route_obs o = {NAN, NAN, NAN, NAN, NAN, NAN};
    return o;
}

static const char *const strategy_names[TMOE_ROUTE_STRATEGY_COUNT] = {
    "baseline",           "static_optimal",  "kernel_aware_ttha", "hierarchical_adaptive",
    "predictive_thermal", "multi_gpu_aware", "topk_minus_one",    "top_p",
    "expert_prune",       "capacity"};
static const char *const overflow_names[TMOE_OVERFLOW_COUNT] = {"drop", "next"};
static const char *const grad_names[] = {"surrogate", "reinforce"};
static const char *const sched_names[] = {"constant", "warmup_cosine", "step"};

const char *tmoe_route_strategy_name(tmoe_route_strategy s) {
    return (unsigned)s < TMOE_ROUTE_STRATEGY_COUNT ? strategy_names[s] : "?";
}
const char *tmoe_ttha_grad_name(tmoe_ttha_grad g) {
    return (unsigned)g < 2 ? grad_names[g] : "?";
}
const char *tmoe_lr_schedule_name(tmoe_lr_schedule s) {
    return (unsigned)s < 3 ? sched_names[s] : "?";
}

static int parse_name(const char *what, const char *name, const char *const *names, int n, int *out,
                      tmoe_error *err) {
    for (int i = 0; i < n; i++)
        if (name && strcmp(name, names[i]) == 0) {
            *out = i;
            return TMOE_OK;
        }
    char list[256] = "";
    for (int i = 0; i < n; i++) {
        strncat(list, names[i], sizeof list - strlen(list) - 1);
        if (i + 1 < n) strncat(list, ", ", sizeof list - strlen(list) - 1);
    }
    return tmoe_errorf(err, TMOE_EINVAL, "unknown %s '%s'; expected one of: %s", what,
                       name ? name : "(null)", list);
}

int tmoe_route_strategy_parse(const char *name, tmoe_route_strategy *out) {
    int v = 0;
    if (parse_name("routing strategy", name, strategy_names, TMOE_ROUTE_STRATEGY_COUNT, &v, NULL))
        return TMOE_EINVAL;
    *out = (tmoe_route_strategy)v;
    return TMOE_OK;
}
int tmoe_route_strategy_is_comparison(tmoe_route_strategy s) {
    return s >= TMOE_ROUTE_FIRST_COMPARISON && s < TMOE_ROUTE_STRATEGY_COUNT;
}
const char *tmoe_overflow_name(tmoe_overflow o) {
    return (unsigned)o < TMOE_OVERFLOW_COUNT ? overflow_names[o] : "?";
}
int tmoe_overflow_parse(const char *name, tmoe_overflow *out) {
    int v = 0;
    if (parse_name("capacity overflow", name, overflow_names, TMOE_OVERFLOW_COUNT, &v, NULL))
        return TMOE_EINVAL;
    *out = (tmoe_overflow)v;
    return TMOE_OK;
}
int tmoe_ttha_grad_parse(const char *name, tmoe_ttha_grad *out) {
    int v = 0;
    if (parse_name("TTHA gradient mode", name, grad_names, 2, &v, NULL)) return TMOE_EINVAL;
    *out = (tmoe_ttha_grad)v;
    return TMOE_OK;
}
int tmoe_lr_schedule_parse(const char *name, tmoe_lr_schedule *out) {
    int v = 0;
    if (parse_name("learning-rate schedule", name, sched_names, 3, &v, NULL)) return TMOE_EINVAL;
    *out = (tmoe_lr_schedule)v;
    return TMOE_OK;
}
