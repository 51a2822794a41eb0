/* The router: per-batch strategy biases, load balancer, selection through
 * tmoe_gate_topk, the static_optimal fit, TTHA updates with their history, and saving
 * and loading the adapter's weights. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "route/route_internal.h"
#include "thermoe/model.h"

#define NUM_HW_FEATURES 6
#define FEATURE_CLAMP 10.0
#define STATIC_MAX_ROWS 256
#define STATIC_ITERS 300
#define STATIC_BISECT 30
#define STATIC_MAX_BATCHES 16

struct tmoe_router {
    tmoe_router_config cfg;
    tmoe_cost_provider cost; /* the experts at their costs as run: base, or copy where swap */
    tmoe_cost_provider base; /* the experts' own costs (the provider given to create) */
    tmoe_cost_provider copy; /* the copies' costs (expert_copy) */
    unsigned char has_copy[TMOE_MAX_EXPERTS]; /* expert_copy, copied; all 0 without copies */
    unsigned char swap[TMOE_MAX_EXPERTS];     /* the batch being / last routed runs e's copy */
    int n_copy;                               /* experts with a copy */
    int E, k;
    int tier[TMOE_MAX_EXPERTS];   /* explicit tier or -1 (by cost rank) */
    int device[TMOE_MAX_EXPERTS]; /* device of each expert */
    tmoe_thermal_pred *tp;
    tmoe_lb *lb;
    tmoe_ttha_mlp *mlp;
    tmoe_adam adam;
    double *grad; /* (num params) */
    double *feat; /* (3E + NUM_HW_FEATURES) */
    tmoe_rng rng;

    int static_ready;
    double static_b[TMOE_MAX_EXPERTS];

    /* expert_prune */
    int n_prune;                            /* experts to prune (prune_experts resolved) */
    int prune_ready;                        /* pruned[] fitted */
    unsigned char pruned[TMOE_MAX_EXPERTS]; /* 1 = never chosen */
    double static_tau;                      /* fitted budget value (tau, or kl for the kl budget) */

    /* expert-set selection */
    tmoe_set_selector *sel;
    unsigned char in_set[TMOE_MAX_EXPERTS]; /* S of the batch last routed */
    unsigned char cand[TMOE_MAX_EXPERTS];   /* hierarchical: experts of the kept tiers */
    int use_cand;                           /* cand applies to the batch being routed */
    int set_ran;                            /* set selection ran for the batch last routed */
    tmoe_set_result set_res;
    double set_value;   /* budget value used for it */
    double ttha_g;      /* kernel_aware_ttha: budget tightness, 0..1 */
    double obs_power_w; /* power of the last observed batch window, W (NAN = none yet) */
    double last_g;      /* budget tightness of the last set selection, NAN = none */
    double period_avg;  /* kernel_aware_ttha: running mean of batch periods, s (NAN = none) */

    /* the batch last routed */
    int T;                          /* 0 before the first batch */
    float *logits;                  /* (max_tokens, E) */
    int32_t *idx;                   /* (max_tokens, k) */
    float *w;                       /* (max_tokens, k) */
    double b[TMOE_MAX_EXPERTS];     /* total bias */
    float fb[TMOE_MAX_EXPERTS];     /* total bias as float */
    double noise[TMOE_MAX_EXPERTS]; /* REINFORCE exploration of that batch */
    int mlp_fresh;                  /* the adapter ran forward on that batch */
    double ttha_gate;               /* pressure gate applied to the adapter's biases, 0..1 */
    double n_expect;                /* expected tokens per expert, max(1, T k / E) */
    int unobserved;                 /* observe_selection: that batch awaits tmoe_router_observe */

    double l_base, q_base, rf_base;
    int rf_init;
    int64_t steps;

    tmoe_ttha_record *hist;
    float *hist_b; /* (hcap, E) */
    int64_t hlen, hcap;
};

tmoe_router_config tmoe_router_config_default(void) {
    tmoe_router_config c;
    memset(&c, 0, sizeof c);
    c.strategy = TMOE_ROUTE_BASELINE;
    c.num_experts = 8;
    c.top_k = 2;
    c.max_tokens = 4096;
    c.max_bias = 2.0;
    c.cost_bias_scale = 1.0;
    c.w_temp_cost = 1.0;
    c.w_power = 1.0;
    c.w_temp = 1.0;
    c.w_latency = 0.5;
    c.w_throughput = 0.05;
    c.w_fidelity = 0.1;
    c.power_target_w = 400.0;
    c.temp_target_c = 75.0;
    c.temp_band_c = 5.0;
    c.latency_slack = 0.1;
    c.latency_base_ms = NAN;
    c.throughput_base = NAN;
    c.horizon_s = 5.0;
    c.ttha_hidden = 32;
    c.lr = 3e-3;
    c.weight_decay = 1e-4;
    c.adam_beta1 = 0.9;
    c.adam_beta2 = 0.999;
    c.adam_eps = 1e-8;
    c.schedule = TMOE_LR_WARMUP_COSINE;
    c.lr_warmup = 20;
    c.lr_decay_steps = 10000;
    c.lr_min_ratio = 0.1;
    c.grad_mode = TMOE_TTHA_GRAD_SURROGATE;
    c.surrogate_tau = 1.0;
    c.explore_sigma = 0.1;
    c.baseline_decay = 0.9;
    c.seed = 1;
    c.lb_enabled = 0;
    c.lb_step = 0.01;
    c.lb_max_abs = 0.0;
    c.capacity_factor = 0.0;
    c.kl_bound = 0.05;
    c.budget = TMOE_BUDGET_KL;
    c.tau_base = 0.95;
    c.tau_min = 0.7;
    c.kl_base = 0.01;
    c.kl_max = 0.03;
    c.ttha_budget_gain = 0.25;
    c.num_tiers = 3;
    c.exclusion_bias = -30.0;
    c.num_devices = 1;
    c.home_device = 0;
    c.link_j_per_token = 1e-4;
    c.queue_ref = 256.0;
    c.top_p = 0.9;
    c.prune_experts = -1;
    c.cap_factor = 1.0;
    c.cap_overflow = TMOE_OVERFLOW_DROP;
    return c;
}

static int check_config(const tmoe_router_config *c, tmoe_error *err) {
#define BAD(...) return tmoe_errorf(err, TMOE_EINVAL, "router config: " __VA_ARGS__)
    if ((unsigned)c->strategy >= TMOE_ROUTE_STRATEGY_COUNT) BAD("strategy %d unknown", c->strategy);
    if (c->num_experts < 1 || c->num_experts > TMOE_MAX_EXPERTS)
        BAD("num_experts %d must be in 1..%d", c->num_experts, TMOE_MAX_EXPERTS);
    if (c->top_k < 1 || c->top_k > c->num_experts || c->top_k > TMOE_MAX_TOPK)
        BAD("top_k %d must be in 1..min(E=%d, %d)", c->top_k, c->num_experts, TMOE_MAX_TOPK);
    if (c->max_tokens < 1) BAD("max_tokens %d must be >= 1", c->max_tokens);
    if (!(c->max_bias > 0.0) || !isfinite(c->max_bias)) BAD("max_bias %g must be > 0", c->max_bias);
    if (!(c->power_target_w > 0.0) || !(c->temp_band_c > 0.0) || !isfinite(c->temp_target_c))
        BAD("power target %g W and temperature band %g C must be > 0, target %g C finite",
            c->power_target_w, c->temp_band_c, c->temp_target_c);
    if (!(c->w_power >= 0.0 && c->w_temp >= 0.0 && c->w_latency >= 0.0 && c->w_throughput >= 0.0 &&
          c->w_fidelity >= 0.0))
        BAD("objective weights must be >= 0 (w_P %g w_T %g w_L %g w_Q %g w_F %g)", c->w_power,
            c->w_temp, c->w_latency, c->w_throughput, c->w_fidelity);
    if (!(c->horizon_s >= 0.0)) BAD("horizon %g s must be >= 0", c->horizon_s);
    if (c->ttha_hidden < 1 || c->ttha_hidden > 4096)
        BAD("ttha_hidden %d must be in 1..4096", c->ttha_hidden);
    if (!(c->lr > 0.0) || !(c->weight_decay >= 0.0) ||
        !(c->adam_beta1 >= 0.0 && c->adam_beta1 < 1.0) ||
        !(c->adam_beta2 >= 0.0 && c->adam_beta2 < 1.0) || !(c->adam_eps > 0.0))
        BAD("lr %g > 0, weight decay %g >= 0, Adam betas in [0,1), eps > 0", c->lr,
            c->weight_decay);
    if ((unsigned)c->schedule > TMOE_LR_STEP || c->lr_warmup < 0 || c->lr_decay_steps < 1 ||
        !(c->lr_min_ratio >= 0.0 && c->lr_min_ratio <= 1.0))
        BAD("schedule %d, warmup %d >= 0, decay steps %d >= 1, min ratio %g in [0,1]", c->schedule,
            c->lr_warmup, c->lr_decay_steps, c->lr_min_ratio);
    if ((unsigned)c->grad_mode > TMOE_TTHA_GRAD_REINFORCE)
        BAD("grad mode %d unknown", c->grad_mode);
    if (!(c->surrogate_tau > 0.0) || !(c->explore_sigma > 0.0) ||
        !(c->baseline_decay >= 0.0 && c->baseline_decay < 1.0))
        BAD("surrogate tau %g > 0, exploration sigma %g > 0, baseline decay %g in [0,1)",
            c->surrogate_tau, c->explore_sigma, c->baseline_decay);
    if (!(c->lb_step >= 0.0) || !(c->lb_max_abs >= 0.0) || !(c->capacity_factor >= 0.0))
        BAD("lb step %g, lb cap %g, capacity factor %g must be >= 0", c->lb_step, c->lb_max_abs,
            c->capacity_factor);
    if (c->observe_selection && c->capacity_factor > 0.0)
        BAD("a capacity factor (%g) limits the router's own selection; with observe_selection "
            "the caller selects",
            c->capacity_factor);
    if (!(c->kl_bound > 0.0)) BAD("kl_bound %g must be > 0", c->kl_bound);
    if ((unsigned)c->budget >= TMOE_BUDGET_COUNT) BAD("budget %d unknown", c->budget);
    if (!(c->tau_min > 0.0 && c->tau_min <= c->tau_base && c->tau_base <= 1.0))
        BAD("tau_min %g and tau_base %g must satisfy 0 < tau_min <= tau_base <= 1", c->tau_min,
            c->tau_base);
    if (!(c->kl_base >= 0.0 && c->kl_base <= c->kl_max && isfinite(c->kl_max)))
        BAD("kl_base %g and kl_max %g must satisfy 0 <= kl_base <= kl_max (finite)", c->kl_base,
            c->kl_max);
    if (!(c->ttha_budget_gain >= 0.0 && isfinite(c->ttha_budget_gain)))
        BAD("ttha_budget_gain %g must be >= 0", c->ttha_budget_gain);
    if (c->num_tiers < 1) BAD("num_tiers %d must be >= 1", c->num_tiers);
    if (c->expert_copy && (!c->copy_cost || !c->copy_cost->expert_cost))
        BAD("expert_copy needs copy_cost, a cost provider of the copies");
    if (!(c->top_p > 0.0 && c->top_p <= 1.0)) BAD("top_p %g must be in (0, 1]", c->top_p);
    if (c->prune_experts < -1 || c->prune_experts > c->num_experts - c->top_k)
        BAD("prune_experts %d must be -1 (E/4) or in 0..E-k = %d (each token needs k experts)",
            c->prune_experts, c->num_experts - c->top_k);
    if (!(c->cap_factor > 0.0) || !isfinite(c->cap_factor))
        BAD("cap_factor %g must be > 0 and finite", c->cap_factor);
    if ((unsigned)c->cap_overflow >= TMOE_OVERFLOW_COUNT)
        BAD("cap_overflow %d unknown", c->cap_overflow);
    if (c->strategy == TMOE_ROUTE_TOPK_MINUS_ONE && c->top_k < 2)
        BAD("topk_minus_one needs top_k >= 2 (top_k is %d)", c->top_k);
    if (!(c->exclusion_bias < 0.0)) BAD("exclusion_bias %g must be < 0", c->exclusion_bias);
    if (c->num_devices < 1 || c->num_devices > TMOE_ROUTE_MAX_DEVICES)
        BAD("num_devices %d must be in 1..%d", c->num_devices, TMOE_ROUTE_MAX_DEVICES);
    if (c->home_device < 0 || c->home_device >= c->num_devices)
        BAD("home_device %d must be in 0..%d", c->home_device, c->num_devices - 1);
    if (!(c->link_j_per_token >= 0.0) || !(c->queue_ref > 0.0))
        BAD("link_j_per_token %g >= 0 and queue_ref %g > 0", c->link_j_per_token, c->queue_ref);
    for (int e = 0; e < c->num_experts; e++) {
        if (c->expert_tier && (c->expert_tier[e] < 0 || c->expert_tier[e] >= c->num_tiers))
            BAD("expert_tier[%d] = %d must be in 0..%d", e, c->expert_tier[e], c->num_tiers - 1);
        if (c->expert_device && (c->expert_device[e] < 0 || c->expert_device[e] >= c->num_devices))
            BAD("expert_device[%d] = %d must be in 0..%d", e, c->expert_device[e],
                c->num_devices - 1);
    }
#undef BAD
    return TMOE_OK;
}

/* The cost provider of a router with copies: expert e at its copy's cost where the batch
 * runs the copy, else at its own. */
static int swap_cost(void *ctx, int e, double n, tmoe_expert_cost *out, tmoe_error *err) {
    const tmoe_router *r = ctx;
    const tmoe_cost_provider *p = e >= 0 && e < r->E && r->swap[e] ? &r->copy : &r->base;
    return p->expert_cost(p->ctx, e, n, out, err);
}

static int swap_cost_deriv(void *ctx, int e, double n, tmoe_expert_cost *out, tmoe_error *err) {
    const tmoe_router *r = ctx;
    const tmoe_cost_provider *p = e >= 0 && e < r->E && r->swap[e] ? &r->copy : &r->base;
    return tmoe_route_cost_eval(p, e, n, NULL, out, err);
}

int tmoe_router_create(const tmoe_router_config *cfg, const tmoe_cost_provider *cost,
                       tmoe_router **out, tmoe_error *err) {
    *out = NULL;
    int rc = check_config(cfg, err);
    if (rc) return rc;
    if (!cost || !cost->expert_cost)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "router: a cost provider with expert_cost is required");
    tmoe_router *r = tmoe_calloc(1, sizeof *r, err);
    if (!r) return TMOE_ENOMEM;
    r->cfg = *cfg;
    r->cfg.expert_tier = NULL;
    r->cfg.expert_device = NULL;
    r->cfg.expert_copy = NULL;
    r->cfg.copy_cost = NULL;
    if (r->cfg.num_tiers > cfg->num_experts) r->cfg.num_tiers = cfg->num_experts;
    r->base = *cost;
    r->cost = *cost;
    for (int e = 0; cfg->expert_copy && e < cfg->num_experts; e++)
        r->n_copy += r->has_copy[e] = cfg->expert_copy[e] != 0;
    if (r->n_copy) { /* every cost the router reads goes through the swap */
        r->copy = *cfg->copy_cost;
        r->cost = (tmoe_cost_provider){swap_cost, swap_cost_deriv, r};
    }
    r->E = cfg->num_experts;
    r->k = cfg->top_k;
    r->n_prune = cfg->prune_experts >= 0 ? cfg->prune_experts : cfg->num_experts / 4;
    if (r->n_prune > cfg->num_experts - cfg->top_k) r->n_prune = cfg->num_experts - cfg->top_k;
    for (int e = 0; e < r->E; e++) {
        r->tier[e] = cfg->expert_tier ? cfg->expert_tier[e] : -1;
        r->device[e] = cfg->expert_device ? cfg->expert_device[e] : e % cfg->num_devices;
    }
    tmoe_rng_seed_stream(&r->rng, cfg->seed, 0x40);
    r->l_base = cfg->latency_base_ms;
    r->obs_power_w = NAN;
    r->last_g = NAN;
    r->period_avg = NAN;
    r->static_tau = cfg->budget == TMOE_BUDGET_KL ? cfg->kl_base : cfg->tau_base;
    r->q_base = cfg->throughput_base;
    tmoe_thermal_pred_config tc = tmoe_thermal_pred_config_default();
    size_t TE = (size_t)cfg->max_tokens * r->E, TK = (size_t)cfg->max_tokens * r->k;
    int nin = 3 * r->E + NUM_HW_FEATURES;
    if ((rc = tmoe_thermal_pred_create(&tc, &r->tp, err)) ||
        (cfg->lb_enabled &&
         (rc = tmoe_lb_create(r->E, cfg->lb_step, cfg->lb_max_abs, &r->lb, err))) ||
        (rc = tmoe_ttha_mlp_create(nin, cfg->ttha_hidden, r->E, cfg->max_bias, cfg->seed, &r->mlp,
                                   err)) ||
        (rc = tmoe_adam_init(&r->adam, r->mlp->np, err)) ||
        (rc = tmoe_set_selector_create(r->E, r->k, cfg->max_tokens, &r->sel, err))) {
        tmoe_router_free(r);
        return rc;
    }
    r->grad = tmoe_calloc((size_t)r->mlp->np + (size_t)nin, sizeof(double), err);
    r->logits = tmoe_malloc(sizeof(float) * TE, err);
    r->idx = tmoe_malloc(sizeof(int32_t) * TK, err);
    r->w = tmoe_malloc(sizeof(float) * TK, err);
    if (!r->grad || !r->logits || !r->idx || !r->w) {
        tmoe_router_free(r);
        return TMOE_ENOMEM;
    }
    r->feat = r->grad + r->mlp->np;
    *out = r;
    return TMOE_OK;
}

void tmoe_router_free(tmoe_router *r) {
    if (!r) return;
    tmoe_thermal_pred_free(r->tp);
    tmoe_lb_free(r->lb);
    tmoe_ttha_mlp_free(r->mlp);
    tmoe_adam_free(&r->adam);
    tmoe_set_selector_free(r->sel);
    free(r->grad);
    free(r->logits);
    free(r->idx);
    free(r->w);
    free(r->hist);
    free(r->hist_b);
    free(r);
}

double tmoe_router_budget_tightness(const tmoe_router *r) {
    return r->last_g;
}

const tmoe_router_config *tmoe_router_get_config(const tmoe_router *r) {
    return &r->cfg;
}
tmoe_thermal_pred *tmoe_router_thermal_pred(tmoe_router *r) {
    return r->tp;
}
tmoe_lb *tmoe_router_lb(tmoe_router *r) {
    return r->lb;
}

/* ---- hardware pressure ------------------------------------------------------------------ */

static double clamp(double x, double lo, double hi) {
    return x < lo ? lo : x > hi ? hi : x;
}

/* Predicted GPU temperature at the horizon: the larger of the monitor's prediction and the
 * thermal predictor's from the current temperature and power; NAN when neither is known. */
static double predicted_temp(const tmoe_router *r, const tmoe_hw_state *hw) {
    double tp = NAN;
    if (isfinite(hw->pred_temp_c)) tp = hw->pred_temp_c;
    if (isfinite(hw->gpu_temp_c) && isfinite(hw->power_w)) {
        double own =
            tmoe_thermal_pred_predict_from(r->tp, hw->gpu_temp_c, r->cfg.horizon_s, hw->power_w);
        if (!isfinite(tp) || own > tp) tp = own;
    }
    return tp;
}

/* How close the hardware is to its targets: 0 at or below 90% of the power target and one
 * band below the temperature target, 1 at the targets, above 1 beyond them; the largest of
 * the power, temperature and predicted-temperature terms, and at least 1 when throttled.
 * NAN when nothing is known. */
static double pressure(const tmoe_router *r, const tmoe_hw_state *hw) {
    const tmoe_router_config *c = &r->cfg;
    double p = NAN;
#define TAKE(v)                                                                                    \
    do {                                                                                           \
        double v_ = (v);                                                                           \
        if (isfinite(v_) && !(v_ <= p)) p = v_;                                                    \
    } while (0)
    if (isfinite(hw->power_w))
        TAKE((hw->power_w - 0.9 * c->power_target_w) / (0.1 * c->power_target_w));
    if (isfinite(hw->gpu_temp_c))
        TAKE((hw->gpu_temp_c - (c->temp_target_c - c->temp_band_c)) / c->temp_band_c);
    double tp = predicted_temp(r, hw);
    if (isfinite(tp)) TAKE((tp - (c->temp_target_c - c->temp_band_c)) / c->temp_band_c);
    if (hw->throttled == 1) TAKE(1.0);
#undef TAKE
    return p;
}

/* The hardware state with the power of the last observed batch window (its energy over its
 * period, tmoe_router_update) in place of the snapshot's ~1 s average, when one is known: a
 * strategy that reacts to power then reacts to what its last routing drew, not to an average
 * that lags by many short batches and mixes in the idle time between them. */
static tmoe_hw_state window_hw(const tmoe_router *r, const tmoe_hw_state *hw) {
    tmoe_hw_state h = *hw;
    if (isfinite(r->obs_power_w)) h.power_w = r->obs_power_w;
    return h;
}

/* ---- strategies ------------------------------------------------------------------------- */

static int ttha_features(tmoe_router *r, const int32_t *counts, const tmoe_hw_state *hw,
                         tmoe_error *err) {
    int E = r->E;
    double *f = r->feat, mean[3] = {0, 0, 0};
    for (int e = 0; e < E; e++) {
        double n = counts[e] > 1 ? counts[e] : 1.0;
        tmoe_expert_cost c;
        int rc = tmoe_route_cost_eval(&r->cost, e, n, &c, NULL, err);
        if (rc) return rc;
        f[e] = c.energy_j / n;
        f[E + e] = c.latency_ms / n;
        f[2 * E + e] = c.temp_impact_c_per_s;
        for (int j = 0; j < 3; j++) mean[j] += f[j * E + e] / E;
    }
    for (int j = 0; j < 3; j++)
        for (int e = 0; e < E; e++) {
            double *v = &f[j * E + e];
            *v = mean[j] != 0.0 ? clamp(*v / mean[j] - 1.0, -FEATURE_CLAMP, FEATURE_CLAMP) : 0.0;
        }
    const tmoe_router_config *c = &r->cfg;
    double tp = predicted_temp(r, hw);
    double hwf[NUM_HW_FEATURES] = {
        isfinite(hw->gpu_temp_c) ? (hw->gpu_temp_c - c->temp_target_c) / c->temp_band_c : 0.0,
        isfinite(hw->power_w) ? hw->power_w / c->power_target_w - 1.0 : 0.0,
        isfinite(hw->gpu_util) ? hw->gpu_util : 0.0,
        isfinite(hw->sm_clock_ratio) ? hw->sm_clock_ratio : 0.0,
        hw->throttled == 1 ? 1.0 : 0.0,
        isfinite(tp) ? (tp - c->temp_target_c) / c->temp_band_c : 0.0};
    for (int j = 0; j < NUM_HW_FEATURES; j++)
        f[3 * E + j] = clamp(hwf[j], -FEATURE_CLAMP, FEATURE_CLAMP);
    return TMOE_OK;
}

/* The copies the batch runs: of the n experts whose copy costs less energy at the batch's
 * count (counts[e], or n_expect where counts is NULL or has none), the round(g n) whose copies
 * save the most (ties to the lower index). *n_run (may be NULL) gets how many. */
static int choose_copies(tmoe_router *r, const int32_t *counts, double g, int *n_run,
                         tmoe_error *err) {
    int n = 0, idx[TMOE_MAX_EXPERTS];
    double save[TMOE_MAX_EXPERTS];
    for (int e = 0; e < r->E; e++) {
        if (!r->has_copy[e]) continue;
        double c = counts && counts[e] > 0 ? counts[e] : r->n_expect;
        tmoe_expert_cost a, q;
        int rc = tmoe_route_cost_eval(&r->base, e, c, &a, NULL, err);
        if (!rc) rc = tmoe_route_cost_eval(&r->copy, e, c, &q, NULL, err);
        if (rc) return rc;
        save[e] = a.energy_j - q.energy_j;
        if (!(save[e] > 0.0)) continue;
        int i = n++; /* insertion by saving, descending; equal savings keep index order */
        while (i > 0 && save[idx[i - 1]] < save[e]) idx[i] = idx[i - 1], i--;
        idx[i] = e;
    }
    int m = (int)floor(clamp(g, 0.0, 1.0) * n + 0.5);
    for (int i = 0; i < m; i++) r->swap[idx[i]] = 1;
    if (n_run) *n_run = m;
    return TMOE_OK;
}

static int bias_kernel_aware_ttha(tmoe_router *r, const int32_t *counts, const tmoe_hw_state *hw,
                                  double *b, tmoe_error *err) {
    /* copies first, a share that follows g (its budget tightness, an integral of the power
     * error): the costs below are those of the experts as they run */
    int rc = r->n_copy ? choose_copies(r, counts, r->ttha_g, NULL, err) : TMOE_OK;
    if (rc) return rc;
    /* base cost biases, engaged by hardware pressure (0 far below the targets, full at them;
     * full when nothing is known), plus the adapter's biases */
    rc = tmoe_route_cost_biases(&r->cost, r->n_expect, r->E, r->cfg.max_bias, r->cfg.w_temp_cost,
                                NULL, b, err);
    if (rc) return rc;
    /* the adapter reacts to what its last routing drew */
    tmoe_hw_state h = window_hw(r, hw);
    hw = &h;
    double p = pressure(r, hw), g = isfinite(p) ? clamp(p, 0.0, 1.0) : 1.0;
    double s = r->cfg.cost_bias_scale * g;
    if ((rc = ttha_features(r, counts, hw, err))) return rc;
    double bt[TMOE_MAX_EXPERTS];
    tmoe_ttha_mlp_forward(r->mlp, r->feat, bt);
    r->mlp_fresh = 1;
    /* the adapter is gated by the same pressure: far below the targets it leaves routing
     * alone (and learns nothing: its gradient is scaled by the gate in the update) */
    r->ttha_gate = g;
    for (int e = 0; e < r->E; e++) b[e] = s * b[e] + g * bt[e];
    return TMOE_OK;
}

static int bias_hierarchical(tmoe_router *r, const int32_t *counts, const tmoe_hw_state *hw,
                             double *b, tmoe_error *err) {
    int E = r->E, NT = r->cfg.num_tiers;
    /* cool (pressure <= 0) keeps every tier, warm drops the costliest, hot (pressure >= 1 or
     * throttled) the two costliest; with copies, the first drop is the copied experts' own
     * precision: they run as their copies. Power: the last batch window's. */
    tmoe_hw_state h = window_hw(r, hw);
    double p = pressure(r, &h);
    int drop = !isfinite(p) || p <= 0.0 ? 0 : p < 1.0 ? 1 : 2;
    if (r->n_copy && drop > 0) {
        /* every copy the cost model says is cheaper at the batch's tokens per expert (a q4
         * copy may be slower than fp16 at prefill sizes) */
        int n = 0, rc = choose_copies(r, NULL, 1.0, &n, err);
        if (rc) return rc;
        if (n) drop--;
    }
    double s[TMOE_MAX_EXPERTS];
    /* tiers hold or drop whole experts: ranked by energy per token with the fixed cost, at
     * the costs as run */
    int rc =
        tmoe_route_cost_scores(&r->cost, r->n_expect, E, r->cfg.w_temp_cost, 0, NULL, NULL, s, err);
    if (rc) return rc;
    /* tiers: explicit, or by cost rank (ties to the lower index), tier 0 the cheapest; when
     * every cost is the same there is nothing to rank and all experts form tier 0 */
    double ms, lo, hi;
    int spread = tmoe_route_scores_spread(s, E, NULL, &ms, &lo, &hi);
    int tier[TMOE_MAX_EXPERTS], size[TMOE_MAX_EXPERTS] = {0};
    for (int e = 0; e < E; e++) {
        if (r->tier[e] >= 0) {
            tier[e] = r->tier[e];
        } else if (!spread) {
            tier[e] = 0;
        } else {
            int rank = 0;
            for (int j = 0; j < E; j++) rank += s[j] < s[e] || (s[j] == s[e] && j < e);
            tier[e] = (int)((int64_t)rank * NT / E);
        }
        size[tier[e]]++;
    }
    /* first level: the tiers dropped, never below k experts or 1 tier */
    if (drop > NT - 1) drop = NT - 1;
    for (;;) {
        int allowed = 0;
        for (int t = 0; t < NT - drop; t++) allowed += size[t];
        if (allowed >= r->k || drop == 0) break;
        drop--;
    }
    unsigned char *mask = r->cand;
    for (int e = 0; e < E; e++) mask[e] = tier[e] < NT - drop;
    r->use_cand = 1;
    /* second level: cost biases within the allowed tiers */
    if ((rc = tmoe_route_cost_biases(&r->cost, r->n_expect, E, r->cfg.max_bias, r->cfg.w_temp_cost,
                                     mask, b, err)))
        return rc;
    for (int e = 0; e < E; e++)
        if (!mask[e]) b[e] = r->cfg.exclusion_bias;
    return TMOE_OK;
}

static int bias_predictive(tmoe_router *r, const int32_t *counts, const tmoe_hw_state *hw,
                           double *b, tmoe_error *err) {
    int E = r->E;
    for (int e = 0; e < E; e++) b[e] = 0.0;
    double tp = predicted_temp(r, hw);
    double now = isfinite(hw->gpu_temp_c) ? hw->gpu_temp_c : -INFINITY;
    double over = fmax(isfinite(tp) ? tp : -INFINITY, now) - r->cfg.temp_target_c;
    if (!(over > 0.0)) return TMOE_OK;
    double strength = fmin(1.0, over / r->cfg.temp_band_c);
    double s[TMOE_MAX_EXPERTS], ms, lo, hi;
    int rc =
        tmoe_route_cost_scores(&r->cost, r->n_expect, E, r->cfg.w_temp_cost, 1, NULL, NULL, s, err);
    if (rc) return rc;
    if (!tmoe_route_scores_spread(s, E, NULL, &ms, &lo, &hi)) return TMOE_OK;
    for (int e = 0; e < E; e++) b[e] = -r->cfg.max_bias * strength * (s[e] - lo) / (hi - lo);
    return TMOE_OK;
}

static int bias_multi_gpu(tmoe_router *r, const int32_t *counts, const tmoe_hw_state *hw, double *b,
                          tmoe_error *err) {
    const tmoe_router_config *c = &r->cfg;
    int E = r->E, D = c->num_devices;
    double link[TMOE_MAX_EXPERTS], s[TMOE_MAX_EXPERTS], ms, lo, hi;
    for (int e = 0; e < E; e++)
        link[e] = r->device[e] != c->home_device ? c->link_j_per_token : 0.0;
    int rc =
        tmoe_route_cost_scores(&r->cost, r->n_expect, E, c->w_temp_cost, 1, NULL, link, s, err);
    if (rc) return rc;
    int spread = tmoe_route_scores_spread(s, E, NULL, &ms, &lo, &hi);
    /* device pressure: temperature above (target - band) in bands, power above 90% of the
     * target in tenths of it (each capped at 2), utilisation, and queue / queue_ref (cap 2) */
    double pr[TMOE_ROUTE_MAX_DEVICES], pmin = INFINITY, pmax = -INFINITY;
    for (int d = 0; d < D; d++) {
        double v = 0.0;
        if (d < hw->num_devices) {
            if (isfinite(hw->dev_temp_c[d]))
                v += clamp((hw->dev_temp_c[d] - (c->temp_target_c - c->temp_band_c)) /
                               c->temp_band_c,
                           0, 2);
            if (isfinite(hw->dev_power_w[d]))
                v += clamp((hw->dev_power_w[d] - 0.9 * c->power_target_w) /
                               (0.1 * c->power_target_w),
                           0, 2);
            if (isfinite(hw->dev_util[d])) v += clamp(hw->dev_util[d], 0, 1);
            if (isfinite(hw->dev_queue[d])) v += clamp(hw->dev_queue[d] / c->queue_ref, 0, 2);
        }
        pr[d] = v;
        pmin = fmin(pmin, v);
        pmax = fmax(pmax, v);
    }
    double pden = fmax(1.0, pmax - pmin);
    for (int e = 0; e < E; e++) {
        double cb = spread ? -0.5 * c->max_bias * (s[e] - ms) / (hi - lo) : 0.0;
        double db = -c->max_bias * (pr[r->device[e]] - pmin) / pden;
        b[e] = clamp(cb + db, -c->max_bias, c->max_bias);
    }
    return TMOE_OK;
}

/* ---- static_optimal ----------------------------------------------------------------------- */

/* Minimise J(b)/J(0) + lambda KL(b) over |b| <= max_bias by projected Adam from b. */
static int static_solve(const tmoe_router *r, const float *z, int N, double scale, double j0,
                        double lambda, double *b, tmoe_error *err) {
    int E = r->E;
    tmoe_surrogate s = {r->cost, r->k, r->cfg.surrogate_tau, scale, 1.0 / j0, 0.0, lambda};
    double g[TMOE_MAX_EXPERTS], m[TMOE_MAX_EXPERTS] = {0}, v[TMOE_MAX_EXPERTS] = {0};
    /* eps well above rounding noise of the normalised objective: a flat J (equal costs)
     * must not be turned into full-size steps */
    const double lr = 0.05 * r->cfg.max_bias, b1 = 0.9, b2 = 0.999, eps = 1e-6;
    for (int it = 1; it <= STATIC_ITERS; it++) {
        int rc = tmoe_route_surrogate(&s, z, N, E, b, NULL, g, NULL, NULL, err);
        if (rc) return rc;
        double c1 = 1.0 - pow(b1, it), c2 = 1.0 - pow(b2, it);
        for (int e = 0; e < E; e++) {
            m[e] = b1 * m[e] + (1 - b1) * g[e];
            v[e] = b2 * v[e] + (1 - b2) * g[e] * g[e];
            b[e] -= lr * (m[e] / c1) / (sqrt(v[e] / c2) + eps);
            b[e] = clamp(b[e], -r->cfg.max_bias, r->cfg.max_bias);
        }
    }
    return TMOE_OK;
}

/* static_optimal's budget: the loosest-quality tau in tau_base, tau_base - 0.05, ..., tau_min
 * (the lowest, which saves the most) whose mean set-selection KL over the profile's batches
 * (consecutive chunks of tokens_per_batch rows, at most STATIC_MAX_BATCHES) stays within
 * kl_bound; tau_base when none does. The kl budget takes kl_bound itself (at most kl_max). */
static int fit_static_budget(tmoe_router *r, const float *logits, int N, int tokens_per_batch,
                             tmoe_error *err) {
    const tmoe_router_config *c = &r->cfg;
    r->static_tau = c->tau_base;
    if (c->budget == TMOE_BUDGET_KL) r->static_tau = fmin(c->kl_bound, c->kl_max);
    if (c->budget != TMOE_BUDGET_TAU) return TMOE_OK;
    int Tb = tokens_per_batch < c->max_tokens ? tokens_per_batch : c->max_tokens;
    if (Tb > N) Tb = N;
    int nb = N / Tb < STATIC_MAX_BATCHES ? N / Tb : STATIC_MAX_BATCHES;
    unsigned char in_set[TMOE_MAX_EXPERTS];
    for (double tau = c->tau_base; tau >= c->tau_min - 1e-12; tau -= 0.05) {
        tmoe_set_budget b = {TMOE_BUDGET_TAU, fmin(1.0, fmax(tau, c->tau_min)), 0.0};
        double kl = 0.0;
        for (int i = 0; i < nb; i++) {
            tmoe_set_result res;
            int rc = tmoe_set_select(r->sel, &r->cost, logits + (size_t)i * Tb * r->E, Tb, &b,
                                     r->static_b, NULL, in_set, &res, err);
            if (rc) return rc;
            kl += res.kl / nb;
        }
        if (kl <= c->kl_bound) r->static_tau = b.tau;
    }
    tmoe_log(TMOE_LOG_INFO, "static_optimal: tau %.3g fitted on %d batches of %d tokens",
             r->static_tau, nb, Tb);
    return TMOE_OK;
}

/* expert_prune: count each expert's uses by the unbiased top-k of the N rows, prune the
 * n_prune least used (ties prune the higher index). */
static void fit_prune(tmoe_router *r, const float *logits, int N) {
    int E = r->E, k = r->k;
    int64_t uses[TMOE_MAX_EXPERTS] = {0};
    int32_t idx[TMOE_MAX_TOPK];
    float w[TMOE_MAX_TOPK];
    for (int i = 0; i < N; i++) {
        tmoe_gate_topk(logits + (size_t)i * E, NULL, 1, E, k, 1, 0, idx, w);
        for (int j = 0; j < k; j++) uses[idx[j]]++;
    }
    memset(r->pruned, 0, sizeof r->pruned);
    char list[512] = "";
    for (int p = 0; p < r->n_prune; p++) {
        int worst = -1;
        for (int e = E - 1; e >= 0; e--)
            if (!r->pruned[e] && (worst < 0 || uses[e] < uses[worst])) worst = e;
        r->pruned[worst] = 1;
        size_t n = strlen(list);
        snprintf(list + n, sizeof list - n, "%s%d (%lld uses)", p ? ", " : "", worst,
                 (long long)uses[worst]);
    }
    r->prune_ready = 1;
    tmoe_log(TMOE_LOG_INFO, "expert_prune: %d of %d experts pruned on %d rows (%lld copies): %s",
             r->n_prune, E, N, (long long)N * k, r->n_prune ? list : "none");
}

int tmoe_router_pruned(const tmoe_router *r, unsigned char *mask) {
    if (r->cfg.strategy != TMOE_ROUTE_EXPERT_PRUNE) return -1;
    if (!r->prune_ready) return 0;
    if (mask) memcpy(mask, r->pruned, (size_t)r->E);
    return 1;
}

int tmoe_router_fit_static(tmoe_router *r, const float *logits, int N, int tokens_per_batch,
                           double *kl_out, tmoe_error *err) {
    int E = r->E;
    if (N < 1 || tokens_per_batch < 1)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "static fit: %d profile rows and %d tokens per batch "
                           "must be >= 1",
                           N, tokens_per_batch);
    if (r->cfg.strategy == TMOE_ROUTE_EXPERT_PRUNE) {
        fit_prune(r, logits, N);
        if (kl_out) *kl_out = NAN;
        return TMOE_OK;
    }
    if (tmoe_route_strategy_is_comparison(r->cfg.strategy))
        return tmoe_errorf(err, TMOE_EINVAL, "static fit: strategy %s has nothing to fit",
                           tmoe_route_strategy_name(r->cfg.strategy));
    /* at most STATIC_MAX_ROWS rows, evenly spaced over the sample */
    int n = N < STATIC_MAX_ROWS ? N : STATIC_MAX_ROWS;
    float *z = tmoe_malloc(sizeof(float) * (size_t)n * E, err);
    if (!z) return TMOE_ENOMEM;
    for (int i = 0; i < n; i++)
        memcpy(z + (size_t)i * E, logits + (size_t)((int64_t)i * N / n) * E, sizeof(float) * E);
    double scale = (double)tokens_per_batch / n, zero[TMOE_MAX_EXPERTS] = {0}, j0;
    tmoe_surrogate s0 = {r->cost, r->k, r->cfg.surrogate_tau, scale, 1.0, 0.0, 0.0};
    int rc = tmoe_route_surrogate(&s0, z, n, E, zero, &j0, NULL, NULL, NULL, err);
    double best[TMOE_MAX_EXPERTS] = {0}, cur[TMOE_MAX_EXPERTS], kl = 0.0;
    if (rc == TMOE_OK && j0 > 0.0) {
        /* KL(b*(lambda)) falls as lambda grows: bisection in log(lambda) for the smallest
         * lambda that meets the bound; if even lambda_lo meets it, that solution is taken. */
        double lo = 1e-4, hi = 1e4;
        memset(cur, 0, sizeof cur);
        if (!(rc = static_solve(r, z, n, scale, j0, lo, cur, err)) &&
            (kl = tmoe_route_mean_kl(z, n, E, cur, NULL)) <= r->cfg.kl_bound) {
            memcpy(best, cur, sizeof(double) * E);
        } else {
            kl = 0.0; /* best = 0 is always feasible */
            for (int i = 0; rc == TMOE_OK && i < STATIC_BISECT; i++) {
                double mid = sqrt(lo * hi);
                memset(cur, 0, sizeof cur);
                if ((rc = static_solve(r, z, n, scale, j0, mid, cur, err))) break;
                double k2 = tmoe_route_mean_kl(z, n, E, cur, NULL);
                if (k2 > r->cfg.kl_bound) {
                    lo = mid;
                } else {
                    hi = mid;
                    kl = k2;
                    memcpy(best, cur, sizeof(double) * E);
                }
            }
        }
    }
    if (rc == TMOE_OK && j0 > 0.0) { /* biases that buy no energy (equal costs) stay zero */
        double jb;
        rc = tmoe_route_surrogate(&s0, z, n, E, best, &jb, NULL, NULL, NULL, err);
        if (rc == TMOE_OK && !(jb < j0 * (1.0 - 1e-9))) {
            memset(best, 0, sizeof best);
            kl = 0.0;
        }
    }
    free(z);
    if (rc) return rc;
    memcpy(r->static_b, best, sizeof(double) * E);
    if ((rc = fit_static_budget(r, logits, N, tokens_per_batch, err))) return rc;
    r->static_ready = 1;
    if (kl_out) *kl_out = kl;
    tmoe_log(TMOE_LOG_INFO, "static_optimal: fitted on %d rows, mean KL %.4g (bound %.4g)", n, kl,
             r->cfg.kl_bound);
    return TMOE_OK;
}

/* ---- routing ------------------------------------------------------------------------------ */

/* Capacity: walk tokens in order; a copy sent to a full expert moves to the best expert with
 * room that the token has not chosen (biased score, ties to the lower index; when the only
 * room is with experts the token holds, the best one it does not hold, over the limit); a
 * token that
 * moved gets the unbiased softmax at its experts, over all E and renormalised over the
 * chosen when renorm. */
static void apply_capacity(tmoe_router *r, const float *z, int T, double cf, int renorm,
                           int32_t *counts) {
    int E = r->E, k = r->k;
    int cap = (int)ceil(cf * T * k / E);
    if (cap * E < T * k) cap = (T * k + E - 1) / E;
    memset(counts, 0, sizeof(int32_t) * E);
    for (int t = 0; t < T; t++) {
        int32_t *ti = r->idx + (size_t)t * k;
        const float *zt = z + (size_t)t * E;
        int changed = 0;
        for (int j = 0; j < k; j++) {
            if (counts[ti[j]] < cap) {
                counts[ti[j]]++;
                continue;
            }
            /* the room left may lie only with experts this token holds in later slots:
             * then the best untaken expert goes over the limit (and with k = E, nothing
             * can move: the copy stays) */
            int best = -1;
            float bs = -INFINITY;
            for (int pass = 0; pass < 2 && best < 0; pass++)
                for (int e = 0; e < E; e++) {
                    if (pass == 0 && counts[e] >= cap) continue;
                    int taken = 0;
                    for (int q = 0; q < k; q++) taken |= ti[q] == e;
                    if (taken) continue;
                    float sc = zt[e] + r->fb[e];
                    if (best < 0 || sc > bs) {
                        best = e;
                        bs = sc;
                    }
                }
            if (best < 0) {
                counts[ti[j]]++;
                continue;
            }
            ti[j] = best;
            counts[best]++;
            changed = 1;
        }
        if (changed) { /* unbiased softmax at the chosen, renormalised over them */
            float mx = -INFINITY, sum = 0.0f;
            for (int j = 0; j < k; j++) mx = fmaxf(mx, zt[ti[j]]);
            if (!renorm)
                for (int e = 0; e < E; e++) mx = fmaxf(mx, zt[e]);
            for (int j = 0; j < k; j++) sum += (r->w[(size_t)t * k + j] = expf(zt[ti[j]] - mx));
            if (!renorm) {
                sum = 0.0f;
                for (int e = 0; e < E; e++)
                    if (!isnan(zt[e])) sum += expf(zt[e] - mx);
            }
            for (int j = 0; j < k; j++) r->w[(size_t)t * k + j] /= sum;
        }
    }
}

/* Experts of a selection (n entries) all in 0..E-1; counts (E, may be NULL) gets its counts. */
static int check_selection(const char *what, const int32_t *idx, int n, int E, int32_t *counts,
                           tmoe_error *err) {
    if (counts) memset(counts, 0, sizeof(int32_t) * E);
    for (int i = 0; i < n; i++) {
        if (idx[i] < 0 || idx[i] >= E)
            return tmoe_errorf(err, TMOE_EINVAL, "%s: entry %d is expert %d of %d", what, i, idx[i],
                               E);
        if (counts) counts[idx[i]]++;
    }
    return TMOE_OK;
}

/* Budget tightness of a strategy for this batch, 0 (base budget) .. 1 (tightest). */
static double budget_tightness(tmoe_router *r, const tmoe_hw_state *hw) {
    const tmoe_router_config *c = &r->cfg;
    switch (c->strategy) {
    case TMOE_ROUTE_KERNEL_AWARE_TTHA: return r->ttha_g;
    case TMOE_ROUTE_PREDICTIVE_THERMAL: {
        /* how near the predicted (or present) temperature is to the target, in bands */
        double tp = predicted_temp(r, hw);
        double now = isfinite(hw->gpu_temp_c) ? hw->gpu_temp_c : -INFINITY;
        double hot = fmax(isfinite(tp) ? tp : -INFINITY, now);
        if (!isfinite(hot)) return 0.0;
        return clamp((hot - (c->temp_target_c - c->temp_band_c)) / c->temp_band_c, 0.0, 1.0);
    }
    default: {
        /* hierarchical_adaptive reads the last window's power, as its tiers do */
        tmoe_hw_state h = c->strategy == TMOE_ROUTE_HIERARCHICAL_ADAPTIVE ? window_hw(r, hw) : *hw;
        double p = pressure(r, &h);
        return isfinite(p) ? clamp(p, 0.0, 1.0) : 0.0;
    }
    }
}

static tmoe_set_budget budget_at(const tmoe_router_config *c, double g) {
    tmoe_set_budget b = {c->budget, c->tau_base - (c->tau_base - c->tau_min) * g,
                         c->kl_base + (c->kl_max - c->kl_base) * g};
    return b;
}

/* Choose S for the batch and add the exclusion bias outside it to r->fb. */
static int select_set(tmoe_router *r, const float *logits, int T, const tmoe_hw_state *hw,
                      tmoe_error *err) {
    const tmoe_router_config *c = &r->cfg;
    tmoe_set_budget b;
    if (c->strategy == TMOE_ROUTE_STATIC_OPTIMAL) {
        b = budget_at(c, 0.0);
        if (c->budget == TMOE_BUDGET_KL)
            b.kl_max = r->static_tau;
        else
            b.tau = r->static_tau;
        r->last_g = NAN; /* a fitted budget, not a tightness */
    } else {
        r->last_g = budget_tightness(r, hw);
        b = budget_at(c, r->last_g);
    }
    r->set_value = c->budget == TMOE_BUDGET_KL ? b.kl_max : b.tau;
    /* the soft biases, scaled down where they would route tokens past the budget within S
     * (the exploration noise with them: what the adapter learns from is what ran) */
    double a = 1.0;
    int rc = tmoe_set_select(r->sel, &r->cost, logits, T, &b, r->b, r->use_cand ? r->cand : NULL,
                             r->in_set, &r->set_res, err);
    if (!rc)
        rc = tmoe_set_bias_scale(r->sel, &r->cost, logits, T, &b, r->b, r->in_set, &a, &r->set_res,
                                 err);
    if (!rc && r->use_cand && !r->set_res.meets) {
        /* hierarchical_adaptive's tiers left no set that meets the budget: the budget wins,
         * every expert may join S (the dropped tiers' exclusion bias is a soft bias the
         * scale bounds) */
        rc = tmoe_set_select(r->sel, &r->cost, logits, T, &b, r->b, NULL, r->in_set, &r->set_res,
                             err);
        if (!rc)
            rc = tmoe_set_bias_scale(r->sel, &r->cost, logits, T, &b, r->b, r->in_set, &a,
                                     &r->set_res, err);
    }
    if (rc) return rc;
    if (a < 1.0)
        for (int e = 0; e < r->E; e++) {
            r->b[e] *= a;
            r->noise[e] *= a;
            r->fb[e] = (float)r->b[e];
        }
    float excl = tmoe_set_selector_exclusion_bias(r->sel, logits, T, r->b, c->exclusion_bias);
    for (int e = 0; e < r->E; e++)
        if (!r->in_set[e]) r->fb[e] += excl;
    r->set_ran = 1;
    return TMOE_OK;
}

int tmoe_router_last_copies(const tmoe_router *r, unsigned char *use_copy) {
    int n = 0;
    for (int e = 0; e < r->E; e++) {
        if (use_copy) use_copy[e] = r->swap[e];
        n += r->swap[e];
    }
    return n;
}

int tmoe_router_last_set(const tmoe_router *r, tmoe_set_result *res, double *budget_value) {
    if (!r->set_ran) return 0;
    if (res) *res = r->set_res;
    if (budget_value) *budget_value = r->set_value;
    return 1;
}

int tmoe_router_route(tmoe_router *r, const float *logits, int T, const int32_t *unbiased_idx,
                      const tmoe_hw_state *hw, float *biases_out, int32_t *selection_out,
                      double *predicted_energy_out, tmoe_error *err) {
    int E = r->E, k = r->k, rc = TMOE_OK;
    r->last_g = NAN; /* set again if this call selects a set */
    if (T < 1 || T > r->cfg.max_tokens)
        return tmoe_errorf(err, TMOE_EINVAL, "route: %d tokens, expected 1..max_tokens=%d", T,
                           r->cfg.max_tokens);
    if (tmoe_route_strategy_is_comparison(r->cfg.strategy))
        return tmoe_errorf(err, TMOE_EINVAL,
                           "route: %s chooses each token's experts itself, which biases cannot "
                           "express: route it with tmoe_router_route_explicit",
                           tmoe_route_strategy_name(r->cfg.strategy));
    /* token counts of the unbiased selection: the TTHA adapter's "current load" (the cost
     * scores of the other strategies use the common expected count n_expect) */
    int32_t counts[TMOE_MAX_EXPERTS] = {0};
    if (r->cfg.strategy == TMOE_ROUTE_KERNEL_AWARE_TTHA) {
        if (unbiased_idx) {
            rc = check_selection("route: unbiased selection", unbiased_idx, T * k, E, counts, err);
            if (rc) return rc;
        } else {
            tmoe_gate_topk(logits, NULL, T, E, k, 1, 0, r->idx, NULL);
            for (int i = 0; i < T * k; i++) counts[r->idx[i]]++;
        }
    }
    tmoe_hw_state unknown;
    if (!hw) {
        unknown = tmoe_hw_state_unknown();
        hw = &unknown;
    }
    memcpy(r->logits, logits, sizeof(float) * (size_t)T * E);
    r->T = T;
    r->mlp_fresh = 0;
    r->unobserved = 0;
    r->n_expect = fmax(1.0, (double)T * k / E);
    r->use_cand = 0;
    r->set_ran = 0;
    memset(r->swap, 0, sizeof r->swap); /* hierarchical_adaptive may run copies */
    double *b = r->b;
    switch (r->cfg.strategy) {
    case TMOE_ROUTE_BASELINE:
        for (int e = 0; e < E; e++) b[e] = 0.0;
        break;
    case TMOE_ROUTE_STATIC_OPTIMAL:
        if (!r->static_ready && (rc = tmoe_router_fit_static(r, logits, T, T, NULL, err)))
            return rc;
        memcpy(b, r->static_b, sizeof(double) * E);
        break;
    case TMOE_ROUTE_KERNEL_AWARE_TTHA: rc = bias_kernel_aware_ttha(r, counts, hw, b, err); break;
    case TMOE_ROUTE_HIERARCHICAL_ADAPTIVE: rc = bias_hierarchical(r, counts, hw, b, err); break;
    case TMOE_ROUTE_PREDICTIVE_THERMAL: rc = bias_predictive(r, counts, hw, b, err); break;
    case TMOE_ROUTE_MULTI_GPU_AWARE: rc = bias_multi_gpu(r, counts, hw, b, err); break;
    default: TMOE_ASSERT(0);
    }
    if (rc) return rc;
    if (r->lb) {
        const double *lb = tmoe_lb_bias(r->lb);
        for (int e = 0; e < E; e++) b[e] += lb[e];
    }
    int explore = r->cfg.strategy == TMOE_ROUTE_KERNEL_AWARE_TTHA &&
                  r->cfg.grad_mode == TMOE_TTHA_GRAD_REINFORCE;
    for (int e = 0; e < E; e++) {
        r->noise[e] = explore ? r->cfg.explore_sigma * tmoe_rng_normal(&r->rng) : 0.0;
        b[e] += r->noise[e];
        r->fb[e] = (float)b[e];
    }
    if (r->cfg.strategy != TMOE_ROUTE_BASELINE && r->cfg.budget != TMOE_BUDGET_NONE &&
        (rc = select_set(r, logits, T, hw, err)))
        return rc;
    if (biases_out) memcpy(biases_out, r->fb, sizeof(float) * E);
    r->unobserved = r->cfg.observe_selection;
    /* the router's own selection: for the load balancer, unless the caller reports the one
     * that ran, and for the outputs that ask for it */
    int balance = r->lb && !r->cfg.observe_selection;
    if (!balance && !selection_out && !predicted_energy_out) return TMOE_OK;
    tmoe_gate_topk(logits, r->fb, T, E, k, 1, 0, r->idx, NULL); /* the experts alone */
    memset(counts, 0, sizeof counts);
    if (r->cfg.capacity_factor > 0.0)
        apply_capacity(r, logits, T, r->cfg.capacity_factor, 1, counts);
    else
        for (int i = 0; i < T * k; i++) counts[r->idx[i]]++;
    if (balance) tmoe_lb_update(r->lb, counts);
    if (predicted_energy_out &&
        (rc = tmoe_route_step_energy(&r->cost, counts, E, predicted_energy_out, err)))
        return rc;
    if (selection_out) memcpy(selection_out, r->idx, sizeof(int32_t) * (size_t)T * k);
    return TMOE_OK;
}

/* Slots m..k-1 of a token's row: its first expert at weight 0. */
static void pad_row(int32_t *idx, float *w, int m, int k) {
    for (int j = m; j < k; j++) {
        idx[j] = idx[0];
        w[j] = 0.0f;
    }
}

/* Divide the first m weights by their sum (left alone when it is not positive). */
static void renorm_row(float *w, int m) {
    float s = 0.0f;
    for (int j = 0; j < m; j++) s += w[j];
    if (s > 0.0f)
        for (int j = 0; j < m; j++) w[j] /= s;
}

/* A copy at weight 0 (a padded slot, a dropped copy) is not run by the decoders: it leaves
 * the counts of what ran. */
static void uncount_padded(const int32_t *idx, const float *w, int n, int32_t *counts) {
    for (int i = 0; i < n; i++)
        if (w[i] == 0.0f) counts[idx[i]]--;
}

int tmoe_router_route_explicit(tmoe_router *r, const float *logits, int T, int renorm,
                               const tmoe_hw_state *hw, int32_t *idx, float *w,
                               double *predicted_energy_out, tmoe_error *err) {
    const tmoe_router_config *c = &r->cfg;
    int E = r->E, k = r->k;
    (void)hw;                           /* the comparisons do not read the hardware */
    memset(r->swap, 0, sizeof r->swap); /* the comparisons run no copy */
    if (!tmoe_route_strategy_is_comparison(c->strategy))
        return tmoe_errorf(err, TMOE_EINVAL,
                           "route explicit: %s routes by biases (tmoe_router_route); only the "
                           "comparisons select explicitly",
                           tmoe_route_strategy_name(c->strategy));
    if (T < 1 || T > c->max_tokens)
        return tmoe_errorf(err, TMOE_EINVAL, "route: %d tokens, expected 1..max_tokens=%d", T,
                           c->max_tokens);
    memcpy(r->logits, logits, sizeof(float) * (size_t)T * E);
    r->T = T;
    r->mlp_fresh = 0;
    r->use_cand = 0;
    r->set_ran = 0;
    r->n_expect = fmax(1.0, (double)T * k / E);
    /* scores: the logits plus the load balancer's bias, as for every strategy */
    const double *lb = r->lb ? tmoe_lb_bias(r->lb) : NULL;
    for (int e = 0; e < E; e++) {
        r->b[e] = lb ? lb[e] : 0.0;
        r->noise[e] = 0.0;
        r->fb[e] = (float)r->b[e];
    }
    size_t TK = (size_t)T * k;
    switch (c->strategy) {
    case TMOE_ROUTE_TOPK_MINUS_ONE:
        tmoe_gate_topk(logits, r->fb, T, E, k - 1, renorm, 0, r->idx, r->w);
        for (int t = 0; t < T; t++) {
            memcpy(idx + (size_t)t * k, r->idx + (size_t)t * (k - 1), sizeof(int32_t) * (k - 1));
            memcpy(w + (size_t)t * k, r->w + (size_t)t * (k - 1), sizeof(float) * (k - 1));
            pad_row(idx + (size_t)t * k, w + (size_t)t * k, k - 1, k);
        }
        break;
    case TMOE_ROUTE_TOP_P:
        /* p_t at the top-k (softmax over all E), then the shortest prefix reaching top_p; a
         * token that keeps all k gets the model's own weights, bit for bit */
        tmoe_gate_topk(logits, r->fb, T, E, k, 0, 0, idx, w);
        if (renorm) tmoe_gate_topk(logits, r->fb, T, E, k, 1, 0, r->idx, r->w);
        for (int t = 0; t < T; t++) {
            int32_t *it = idx + (size_t)t * k;
            float *wt = w + (size_t)t * k;
            double cum = 0.0;
            int m = k;
            for (int j = 0; j < k; j++) {
                cum += wt[j];
                if (cum >= c->top_p) {
                    m = j + 1;
                    break;
                }
            }
            if (renorm && m == k)
                memcpy(wt, r->w + (size_t)t * k, sizeof(float) * k);
            else if (renorm)
                renorm_row(wt, m);
            pad_row(it, wt, m, k);
        }
        break;
    case TMOE_ROUTE_EXPERT_PRUNE: {
        if (!r->prune_ready) fit_prune(r, logits, T); /* the first batch is the profile */
        float pb[TMOE_MAX_EXPERTS];
        for (int e = 0; e < E; e++) pb[e] = r->pruned[e] ? -INFINITY : r->fb[e];
        tmoe_gate_topk(logits, pb, T, E, k, renorm, 0, idx, w);
        break;
    }
    case TMOE_ROUTE_CAPACITY: {
        tmoe_gate_topk(logits, r->fb, T, E, k, renorm, 0, r->idx, r->w);
        int32_t counts[TMOE_MAX_EXPERTS] = {0};
        if (c->cap_overflow == TMOE_OVERFLOW_NEXT) {
            apply_capacity(r, logits, T, c->cap_factor, renorm, counts);
            memcpy(idx, r->idx, sizeof(int32_t) * TK);
            memcpy(w, r->w, sizeof(float) * TK);
            break;
        }
        double cd = ceil(c->cap_factor * T * k / E);
        int cap = cd < 1.0 ? 1 : cd > (double)TK ? (int)TK : (int)cd;
        memcpy(idx, r->idx, sizeof(int32_t) * TK);
        memcpy(w, r->w, sizeof(float) * TK);
        for (int j = 0; j < k; j++) /* slot-major: first choices first */
            for (int t = 0; t < T; t++) {
                int32_t *e = &idx[(size_t)t * k + j];
                if (counts[*e] < cap)
                    counts[*e]++;
                else
                    *e = -1; /* dropped */
            }
        for (int t = 0; t < T; t++) {
            int32_t *it = idx + (size_t)t * k;
            float *wt = w + (size_t)t * k;
            int m = 0;
            for (int j = 0; j < k; j++)
                if (it[j] >= 0) {
                    it[m] = it[j];
                    wt[m++] = wt[j];
                }
            if (m == 0) { /* every copy dropped: the residual alone */
                it[0] = r->idx[(size_t)t * k];
                wt[0] = 0.0f;
                m = 1;
            }
            pad_row(it, wt, m, k);
        }
        break;
    }
    default: TMOE_ASSERT(0);
    }
    int32_t counts[TMOE_MAX_EXPERTS];
    int rc = check_selection("route explicit: selection", idx, (int)TK, E, counts, err);
    if (rc) return rc;
    uncount_padded(idx, w, (int)TK, counts);
    r->unobserved = c->observe_selection;
    if (r->lb && !c->observe_selection) tmoe_lb_update(r->lb, counts);
    if (predicted_energy_out)
        return tmoe_route_step_energy(&r->cost, counts, E, predicted_energy_out, err);
    return TMOE_OK;
}

int tmoe_router_observe(tmoe_router *r, const int32_t *idx, const float *w, int T,
                        double *predicted_energy_j, tmoe_error *err) {
    if (!r->cfg.observe_selection)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "router observe: this router makes its own selection (set "
                           "observe_selection to report the one that ran)");
    if (!r->unobserved)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "router observe: no routed batch awaits it (route first, observe once)");
    if (T != r->T)
        return tmoe_errorf(err, TMOE_EINVAL, "router observe: %d tokens, the batch routed had %d",
                           T, r->T);
    int32_t counts[TMOE_MAX_EXPERTS];
    int rc = check_selection("router observe: selection", idx, T * r->k, r->E, counts, err);
    if (rc) return rc;
    r->unobserved = 0;
    if (w) uncount_padded(idx, w, T * r->k, counts);
    if (r->lb) tmoe_lb_update(r->lb, counts);
    if (predicted_energy_j)
        return tmoe_route_step_energy(&r->cost, counts, r->E, predicted_energy_j, err);
    return TMOE_OK;
}

/* ---- TTHA update ---------------------------------------------------------------------------- */

static double lr_at(const tmoe_router_config *c, int64_t s) {
    switch (c->schedule) {
    case TMOE_LR_CONSTANT: return c->lr;
    case TMOE_LR_STEP: return c->lr * pow(c->lr_min_ratio, (double)(s / c->lr_decay_steps));
    case TMOE_LR_WARMUP_COSINE:
    default:
        if (s < c->lr_warmup) return c->lr * (double)(s + 1) / (c->lr_warmup + 1);
        double x = fmin(1.0, (double)(s - c->lr_warmup) / c->lr_decay_steps);
        return c->lr * (c->lr_min_ratio + (1.0 - c->lr_min_ratio) * 0.5 * (1.0 + cos(M_PI * x)));
    }
}

static int history_push(tmoe_router *r, const tmoe_ttha_record *rec, tmoe_error *err) {
    if (r->hlen == r->hcap) {
        int64_t cap = r->hcap ? 2 * r->hcap : 256;
        tmoe_ttha_record *h = realloc(r->hist, sizeof(*h) * (size_t)cap);
        if (!h) return tmoe_errorf(err, TMOE_ENOMEM, "TTHA history: %lld records", (long long)cap);
        r->hist = h;
        float *hb = realloc(r->hist_b, sizeof(float) * (size_t)cap * r->E);
        if (!hb)
            return tmoe_errorf(err, TMOE_ENOMEM, "TTHA history: %lld bias rows", (long long)cap);
        r->hist_b = hb;
        r->hcap = cap;
    }
    memcpy(r->hist_b + (size_t)r->hlen * r->E, r->fb, sizeof(float) * r->E);
    r->hist[r->hlen++] = *rec;
    return TMOE_OK;
}

int64_t tmoe_router_history_len(const tmoe_router *r) {
    return r->hlen;
}

int tmoe_router_history_get(const tmoe_router *r, int64_t i, tmoe_ttha_record *out) {
    if (i < 0 || i >= r->hlen) return tmoe_errorf(NULL, TMOE_EINVAL, "history index out of range");
    *out = r->hist[i];
    out->biases = r->hist_b + (size_t)i * r->E;
    return TMOE_OK;
}

int tmoe_router_update(tmoe_router *r, const tmoe_route_obs *obs, tmoe_ttha_record *rec_out,
                       tmoe_error *err) {
    const tmoe_router_config *c = &r->cfg;
    tmoe_ttha_record rec = {-1, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NULL};
    if (rec_out) *rec_out = rec;
    tmoe_thermal_pred_update(r->tp, obs->power_w, obs->temp_c, obs->dt_s);
    if (isfinite(obs->power_w)) r->obs_power_w = obs->power_w;
    if (c->strategy != TMOE_ROUTE_KERNEL_AWARE_TTHA || r->T == 0 || !r->mlp_fresh) return TMOE_OK;
    {
        /* the budget: an integral step on the batch's power / temperature error (above the
         * targets tightens, below loosens toward the base budget). The power error is
         * weighted by the batch's period against the running mean period, so the integral
         * is that of energy above P* x time: in open loop a batch that waited for its
         * arrival (long window, low power) counts for its length, and the time-averaged draw,
         * not the mean of per-batch powers, settles at the target. */
        double wgt = 1.0;
        if (isfinite(obs->period_s) && obs->period_s > 0.0) {
            r->period_avg = isfinite(r->period_avg) ? 0.95 * r->period_avg + 0.05 * obs->period_s
                                                    : obs->period_s;
            wgt = obs->period_s / r->period_avg;
        }
        double e1 = isfinite(obs->power_w) ? wgt * (obs->power_w / c->power_target_w - 1.0) : NAN;
        double e2 = isfinite(obs->temp_c) ? (obs->temp_c - c->temp_target_c) / c->temp_band_c : NAN;
        double e = isfinite(e1) && isfinite(e2) ? fmax(e1, e2) : isfinite(e1) ? e1 : e2;
        if (isfinite(e)) r->ttha_g = clamp(r->ttha_g + c->ttha_budget_gain * e, 0.0, 1.0);
    }
    int E = r->E;
    double P = obs->power_w, Tc = obs->temp_c, L = obs->latency_ms, Q = obs->throughput;
    if (!isfinite(r->l_base) && isfinite(L) && L > 0.0) r->l_base = L;
    if (!isfinite(r->q_base) && isfinite(Q) && Q > 0.0) r->q_base = Q;
    double xp = isfinite(P) ? fmax(0.0, P / c->power_target_w - 1.0) : 0.0;
    double xt = isfinite(Tc) ? fmax(0.0, (Tc - c->temp_target_c) / c->temp_band_c) : 0.0;
    int have_l = isfinite(L) && L > 0.0 && isfinite(r->l_base);
    int have_q = isfinite(Q) && isfinite(r->q_base) && r->q_base > 0.0;
    double xl = have_l ? fmax(0.0, L / r->l_base - 1.0 - c->latency_slack) : 0.0;
    rec.power_loss = isfinite(P) ? c->w_power * xp * xp : NAN;
    rec.temp_loss = isfinite(Tc) ? c->w_temp * xt * xt : NAN;
    rec.latency_penalty = have_l ? c->w_latency * xl * xl : NAN;
    rec.throughput_bonus = have_q ? c->w_throughput * Q / r->q_base : NAN;
    double gkl[TMOE_MAX_EXPERTS], g[TMOE_MAX_EXPERTS];
    rec.fidelity = c->w_fidelity * tmoe_route_mean_kl(r->logits, r->T, E, r->b, gkl);
    double observed = (isfinite(rec.power_loss) ? rec.power_loss : 0.0) +
                      (isfinite(rec.temp_loss) ? rec.temp_loss : 0.0) +
                      (isfinite(rec.latency_penalty) ? rec.latency_penalty : 0.0) -
                      (isfinite(rec.throughput_bonus) ? rec.throughput_bonus : 0.0);
    rec.total = observed + rec.fidelity;
    double period = isfinite(obs->period_s) && obs->period_s > 0.0 ? obs->period_s
                    : have_l                                       ? L / 1000.0
                                                                   : 1.0;
    if (c->grad_mode == TMOE_TTHA_GRAD_SURROGATE) {
        /* outer derivatives at the observed values; power = energy / period; temperature
         * from power through the thermal predictor's gain at the horizon; throughput
         * Q = T / L so dQ/dL = -Q/L at the observed point */
        double gp = 2.0 * c->w_power * xp / c->power_target_w;
        double gt = 2.0 * c->w_temp * xt / c->temp_band_c;
        double dtdp = tmoe_thermal_pred_impact(r->tp, 1.0, c->horizon_s);
        double gl = have_l ? 2.0 * c->w_latency * xl / r->l_base : 0.0;
        double gq = have_q && have_l ? c->w_throughput / r->q_base * Q / L : 0.0;
        tmoe_surrogate s = {r->cost, r->k, c->surrogate_tau, 1.0, (gp + gt * dtdp) / period,
                            gl + gq, 0.0};
        int rc = tmoe_route_surrogate(&s, r->logits, r->T, E, r->b, NULL, g, &rec.pred_energy_j,
                                      NULL, err);
        if (rc) return rc;
        for (int e = 0; e < E; e++) g[e] += c->w_fidelity * gkl[e]; /* fidelity, exact */
    } else {
        /* REINFORCE: the exploration noise of that batch scored by the observed loss against
         * a moving-average baseline; the fidelity term exactly */
        if (!r->rf_init) {
            r->rf_base = observed;
            r->rf_init = 1;
        }
        tmoe_route_reinforce_grad(observed, r->rf_base, r->noise, E, c->explore_sigma, g);
        for (int e = 0; e < E; e++) g[e] += c->w_fidelity * gkl[e];
        r->rf_base = c->baseline_decay * r->rf_base + (1.0 - c->baseline_decay) * observed;
    }
    for (int e = 0; e < E; e++) g[e] *= r->ttha_gate; /* d(bias)/d(adapter output) */
    tmoe_ttha_mlp_backward(r->mlp, g, r->grad);
    double gn = 0.0;
    for (int i = 0; i < r->mlp->np; i++) gn += r->grad[i] * r->grad[i];
    rec.grad_norm = sqrt(gn);
    rec.lr = lr_at(c, r->steps);
    tmoe_adam_step(&r->adam, r->mlp->p, r->grad, rec.lr, c->adam_beta1, c->adam_beta2, c->adam_eps,
                   c->weight_decay);
    rec.step = r->steps++;
    r->mlp_fresh = 0;
    int rc = history_push(r, &rec, err);
    if (rc) return rc;
    rec.biases = r->hist_b + (size_t)(r->hlen - 1) * E;
    if (rec_out) *rec_out = rec;
    return TMOE_OK;
}

/* ---- adapter weights file -------------------------------------------------------------------- */

static const char MAGIC[8] = {'T', 'M', 'O', 'E', 'T', 'T', 'H', 'A'};
static const char TRAILER[8] = {'E', 'N', 'D', 'T', 'T', 'H', 'A', '\0'};
#define TTHA_FILE_VERSION 1u

/* Written to a temporary file and renamed over path: a crash or a full disk leaves the
 * previous weights, never a torn file. */
int tmoe_router_ttha_save(const tmoe_router *r, const char *path, tmoe_error *err) {
    tmoe_atomic_file af;
    int rc = tmoe_atomic_open(&af, path, err);
    if (rc) return rc;
    const tmoe_ttha_mlp *m = r->mlp;
    uint32_t hdr[5] = {TTHA_FILE_VERSION, (uint32_t)m->E, (uint32_t)m->in, (uint32_t)m->hidden,
                       (uint32_t)m->np};
    int ok = fwrite(MAGIC, 1, 8, af.f) == 8 && fwrite(hdr, sizeof hdr, 1, af.f) == 1 &&
             fwrite(m->p, sizeof(double), (size_t)m->np, af.f) == (size_t)m->np &&
             fwrite(TRAILER, 1, 8, af.f) == 8;
    if (!ok) {
        tmoe_atomic_abort(&af);
        return tmoe_errorf(err, TMOE_EIO, "%s: write failed (disk full?); left unchanged", path);
    }
    return tmoe_atomic_commit(&af, err);
}

int tmoe_router_ttha_load(tmoe_router *r, const char *path, tmoe_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return tmoe_errorf(err, TMOE_EIO, "%s: cannot open for reading", path);
    tmoe_ttha_mlp *m = r->mlp;
    char magic[8];
    uint32_t hdr[5];
    int rc = TMOE_OK;
    double *p = NULL;
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, MAGIC, 8) != 0) {
        rc = tmoe_errorf(err, TMOE_EFORMAT,
                         "%s: not a TTHA weights file (header TMOETTHA expected)", path);
    } else if (fread(hdr, sizeof hdr, 1, f) != 1) {
        rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: truncated header", path);
    } else if (hdr[0] != TTHA_FILE_VERSION) {
        rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: format version %u, this build reads %u", path,
                         hdr[0], TTHA_FILE_VERSION);
    } else if (hdr[1] != (uint32_t)m->E || hdr[2] != (uint32_t)m->in ||
               hdr[3] != (uint32_t)m->hidden || hdr[4] != (uint32_t)m->np) {
        rc = tmoe_errorf(err, TMOE_EFORMAT,
                         "%s: adapter for E=%u inputs=%u hidden=%u (%u params), this router has "
                         "E=%d inputs=%d hidden=%d (%d params)",
                         path, hdr[1], hdr[2], hdr[3], hdr[4], m->E, m->in, m->hidden, m->np);
    } else if (!(p = tmoe_malloc(sizeof(double) * (size_t)m->np, err))) {
        rc = TMOE_ENOMEM;
    } else if (fread(p, sizeof(double), (size_t)m->np, f) != (size_t)m->np ||
               fread(magic, 1, 8, f) != 8 || memcmp(magic, TRAILER, 8) != 0) {
        rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: truncated or corrupt parameters (%d expected)",
                         path, m->np);
    } else if (fgetc(f) != EOF) {
        rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: trailing bytes after the trailer", path);
    } else {
        for (int i = 0; i < m->np; i++)
            if (!isfinite(p[i])) {
                rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: parameter %d is not finite", path, i);
                break;
            }
    }
    fclose(f);
    if (rc == TMOE_OK) {
        memcpy(m->p, p, sizeof(double) * (size_t)m->np);
        memset(r->adam.m, 0, sizeof(double) * 2 * (size_t)m->np);
        r->adam.t = 0;
    }
    free(p);
    return rc;
}

void tmoe_route_reinforce_grad(double loss, double baseline, const double *noise, int E,
                               double sigma, double *g) {
    double adv = loss - baseline, s2 = sigma * sigma;
    for (int e = 0; e < E; e++) g[e] = adv * noise[e] / s2;
}
