/* Routing: per-expert selection biases from expert costs and the hardware state.
 *
 * The router looks at a batch's gate logits (T, E), asks a cost provider what each expert
 * would cost at its token count, reads a hardware snapshot, and returns per-expert biases
 * that are added to the logits for top-k selection (combine weights stay the unbiased
 * softmax unless the engine is told otherwise). Strategies: baseline, static_optimal,
 * kernel_aware_ttha, hierarchical_adaptive, predictive_thermal, multi_gpu_aware; the load
 * balancer adds to any of them. Also here: the online thermal predictor, the TTHA adapter
 * (a small MLP trained at test time from observed power, temperature, latency and
 * throughput), and the batch's predicted energy.
 *
 * The router is decoupled from the cost model and the monitor: it sees costs only through
 * tmoe_cost_provider and hardware only through tmoe_hw_state, both filled by the caller. */
#ifndef THERMOE_ROUTE_H
#define THERMOE_ROUTE_H

#include <stdint.h>

#include "thermoe/core.h"
#include "thermoe/cost.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TMOE_ROUTE_MAX_DEVICES 16

/* ---- costs (the provider and its types are in thermoe/cost.h) ----------------------- */

/* Cost (and d/dtokens) of expert e at n tokens through the provider. Without the
 * provider's expert_cost_deriv, a central difference with step h = 1e-3 * max(1, n)
 * (one-sided forward when n < h). c or dc may be NULL. */
int tmoe_route_cost_eval(const tmoe_cost_provider *p, int e, double n, tmoe_expert_cost *c,
                         tmoe_expert_cost *dc, tmoe_error *err);

/* ---- hardware snapshot -------------------------------------------------------------- */

/* Filled by the caller from the monitor. Unknown doubles are NAN; throttled is -1 when
 * unknown. tmoe_hw_state_unknown() gives an all-unknown snapshot to start from. */
typedef struct tmoe_hw_state {
    double gpu_temp_c;     /* C, now */
    double mem_temp_c;     /* C, HBM, now */
    double power_w;        /* W, ~1 s average */
    double gpu_util;       /* 0..1 */
    double sm_clock_ratio; /* current SM clock / max SM clock, 0..1 */
    int throttled;         /* 1 = clock-event reason set (power/thermal), 0 = no, -1 unknown */
    double pred_temp_c;    /* monitor's predicted GPU temperature at pred_horizon_s, C */
    double pred_horizon_s; /* s */
    int num_devices;       /* entries used in the dev_* arrays (multi_gpu_aware), 0 = none */
    double dev_temp_c[TMOE_ROUTE_MAX_DEVICES];  /* C per device */
    double dev_power_w[TMOE_ROUTE_MAX_DEVICES]; /* W per device */
    double dev_util[TMOE_ROUTE_MAX_DEVICES];    /* 0..1 per device */
    double dev_queue[TMOE_ROUTE_MAX_DEVICES];   /* pending token copies per device */
} tmoe_hw_state;
tmoe_hw_state tmoe_hw_state_unknown(void);

/* ---- thermal predictor ---------------------------------------------------------------
 * One RC stage fitted online by recursive least squares with a forgetting factor on
 *   (T[k+1] - T[k]) / dt = alpha (T[k] + T[k+1]) / 2 + beta P[k] + gamma
 * (the trapezoid form of dT/dt = (R P + T_amb - T) / tau: alpha = -1/tau, beta = R/tau,
 * gamma = T_amb/tau), which takes any sample interval; observations shorter than 0.2 s are
 * pooled into one step (power averaged), since whole-degree temperatures over a 1 ms batch
 * give no usable derivative. Prediction at constant power uses the exact solution
 * T(h) = T_ss + (T0 - T_ss) exp(alpha h), T_ss = -(beta P + gamma)/alpha.
 * Before enough samples it uses the prior (tau, R, T_amb) of the config. */
typedef struct tmoe_thermal_pred_config {
    double forgetting;           /* RLS forgetting factor, (0, 1] (default 0.995) */
    double prior_tau_s;          /* prior time constant, s (default 20) */
    double prior_r_c_per_w;      /* prior thermal resistance, C/W (default 0.07) */
    double prior_t_amb_c;        /* prior ambient/idle intercept, C (default 30) */
    double tau_min_s, tau_max_s; /* fitted tau is clamped to this range (0.2, 600) */
} tmoe_thermal_pred_config;
tmoe_thermal_pred_config tmoe_thermal_pred_config_default(void);

typedef struct tmoe_thermal_pred tmoe_thermal_pred;
int tmoe_thermal_pred_create(const tmoe_thermal_pred_config *cfg, tmoe_thermal_pred **out,
                             tmoe_error *err);
void tmoe_thermal_pred_free(tmoe_thermal_pred *p); /* NULL-safe */
/* Feed one observation: power_w drawn over the last dt_s seconds and temp_c at its end.
 * Non-finite values or dt_s <= 0 are ignored (returns 0); returns 1 when used. */
int tmoe_thermal_pred_update(tmoe_thermal_pred *p, double power_w, double temp_c, double dt_s);
/* Temperature change after horizon_s of extra_power_w more than now (linear in power). */
double tmoe_thermal_pred_impact(const tmoe_thermal_pred *p, double extra_power_w, double horizon_s);
/* Temperature after horizon_s at constant power_w, from the last observed temperature
 * (NAN before any observation). */
double tmoe_thermal_pred_predict(const tmoe_thermal_pred *p, double horizon_s, double power_w);
/* The same from a given temperature temp_c. */
double tmoe_thermal_pred_predict_from(const tmoe_thermal_pred *p, double temp_c, double horizon_s,
                                      double power_w);
/* Fitted tau (s), R (C/W) and T_amb (C); any pointer may be NULL. Number of samples used. */
int tmoe_thermal_pred_params(const tmoe_thermal_pred *p, double *tau_s, double *r_c_per_w,
                             double *t_amb_c);

/* ---- load balancer -------------------------------------------------------------------
 * b_e += step * sign(mean load - load_e) after every batch; selection only. */
typedef struct tmoe_lb tmoe_lb;
int tmoe_lb_create(int num_experts, double step, double max_abs, tmoe_lb **out, tmoe_error *err);
void tmoe_lb_free(tmoe_lb *lb); /* NULL-safe */
/* counts (E): token copies per expert of the batch just routed. */
void tmoe_lb_update(tmoe_lb *lb, const int32_t *counts);
const double *tmoe_lb_bias(const tmoe_lb *lb); /* (E) */
void tmoe_lb_reset(tmoe_lb *lb);

/* ---- expert-set selection (DESIGN.md "Energy-aware expert selection") -------------------
 * Per batch (and per layer) choose the set S of experts to run that minimises the predicted
 * energy of the MoE step, sum over e in S with n_e > 0 of cost_e(n_e).energy_j (an expert's
 * fixed cost of reading its weights plus its per-token cost at its count n_e, through the
 * provider), subject to a quality budget; then every token goes to its top-k within S (by
 * logit + the strategy's soft bias). The budgets use the unbiased top-k of each token t,
 * topk(t), with routing probabilities p_tj renormalised over topk(t):
 *   tau   sum_{e in topk(t) & S} p_te >= tau sum_{e in topk(t)} p_te for every token;
 *   top1  every token's top-1 is in S;
 *   kl    mean over tokens of ln(P_t(topk(t)) / P_t(sel_S(t))) <= kl_max, P_t the full
 *         softmax over the E experts and sel_S(t) the k experts the token gets within S: this
 *         is KL(q_S || P_t) - KL(q_topk || P_t), where q_X is P_t restricted to X and
 *         renormalised, i.e. the divergence the token gets beyond baseline's own top-k cut
 *         (0 for baseline routing).
 * |S| >= k always, and S lies within U, the union of the batch's unbiased top-k experts (an
 * expert no token ranks in its top-k is never added: U always meets every budget).
 * Algorithm: first the experts of U that every feasible set holds (needed): tau / top1, those
 * whose removal alone, with the rest of U kept, breaks some token's budget; kl, those whose
 * removal breaks the mean-KL bound by a bound on every token's mass that holds for any set
 * without them and any soft biases. When every allowed expert of U is needed, S = U, exactly,
 * without a search. Else exact when 2^|U| x T <= TMOE_SET_EXACT_WORK and |U| <=
 * TMOE_SET_EXACT_MAX_U, over the supersets of the needed experts only (the others are never
 * feasible):
 * every subset of U is checked (bitmask feasibility per token, then the exact energy of the
 * routing it gives; ties to the larger kept probability, then the smaller bitmask). Else a
 * greedy: tau and top1 are a submodular cover, f(S) = sum_t min(tau m_t, mass of topk(t) in
 * S) (m_t the token's top-k mass); Wolsey's greedy adds the expert with the largest gain in f
 * per unit of its fixed cost (cost_e(1) - d cost_e/dn at 1, at least 1e-12 J) until f(S) =
 * f(U); for an integer-valued f its fixed cost is within H(max_e f({e})) of the cheapest
 * cover, and for this real-valued f within 1 + ln(f(U) / (f(U) - f(S_{g-1}))) (Wolsey 1982,
 * S_{g-1} the set before the last step). The per-token part of the energy is nearly the same
 * for every S (T k copies are made either way), so the fixed costs are what the greedy
 * minimises; the energy reported is the exact one of the routing, and when U (its allowed
 * part) would cost less than the greedy's set, S = U. kl on the greedy path:
 * the experts in the greedy order of the tau = 1 cover, the shortest prefix (>= k) whose KL
 * meets the bound, found by bisection (a heuristic; no bound is claimed). */
#define TMOE_SET_EXACT_MAX_U 16
#define TMOE_SET_EXACT_WORK (1 << 14)

typedef enum {
    TMOE_BUDGET_NONE, /* no set selection: every expert may run */
    TMOE_BUDGET_TAU,
    TMOE_BUDGET_TOP1,
    TMOE_BUDGET_KL,
    TMOE_BUDGET_COUNT
} tmoe_budget_kind;
const char *tmoe_budget_name(tmoe_budget_kind b);
int tmoe_budget_parse(const char *name, tmoe_budget_kind *out); /* "none|tau|top1|kl" */

typedef struct tmoe_set_budget {
    tmoe_budget_kind kind;
    double tau;    /* tau budget, (0, 1] */
    double kl_max; /* kl budget, nats, >= 0 */
} tmoe_set_budget;

/* What one selection chose. */
typedef struct tmoe_set_result {
    int size;          /* |S| */
    int union_size;    /* |U| */
    int exact;         /* 1 = optimal (exhaustive over subsets of U, or U as the one set the
                          budget allows), 0 = greedy */
    double energy_j;   /* predicted energy of the step routed within S, J */
    double energy_u_j; /* the same for S = U (the unbiased top-k experts all available) */
    double min_kept;   /* smallest share of a token's top-k mass kept inside S, 0..1 */
    double kl;         /* mean ln(P_t(topk) / P_t(sel_S)) over the tokens, nats */
    uint64_t mask[4];  /* S as a bitmask over experts 0..255 */
    double bias_scale; /* the router's soft biases were scaled by this (1: as the strategy
                          gave them) so that the routing within S meets the budget token by
                          token (tmoe_set_bias_scale); energy_j and kl are at that scale */
    int meets;         /* 1: the routing within S (at bias_scale) meets the budget; 0: no set
                          of the candidates does (tmoe_set_select then takes every allowed
                          expert); always 1 for budget none */
} tmoe_set_result;

/* A selector holds its work buffers (sized once for max_tokens tokens, E experts, top-k k):
 * selecting never allocates. */
typedef struct tmoe_set_selector tmoe_set_selector;
int tmoe_set_selector_create(int E, int k, int max_tokens, tmoe_set_selector **out,
                             tmoe_error *err);
void tmoe_set_selector_free(tmoe_set_selector *s); /* NULL-safe */

/* Select S for logits (T, E) under budget b. soft_bias (E, may be NULL): the strategy's
 * biases, which order the experts within S (what the engine does with them); candidates (E,
 * may be NULL): experts allowed in S (1) or not (0); when the allowed experts of U are
 * fewer than k, the most probable disallowed ones of U are added to reach k. in_set (E)
 * gets 1 for the experts of S. res (may be NULL) gets what was chosen. TMOE_EINVAL for
 * T outside 1..max_tokens or a budget value out of range. Never allocates. */
int tmoe_set_select(tmoe_set_selector *s, const tmoe_cost_provider *p, const float *logits, int T,
                    const tmoe_set_budget *b, const double *soft_bias,
                    const unsigned char *candidates, unsigned char *in_set, tmoe_set_result *res,
                    tmoe_error *err);

/* After tmoe_set_select on the same logits, soft biases and set (it reads the selection's
 * per-token tables, and the figures of S's routing where that call filled a result): the
 * scale a of the ladder 1, 1/2, .., 1/64, 0 (1 where it will do, else found by bisection: a
 * rung that meets the budget next to a larger one that misses) such that routing every token
 * to its top-k of logits + a soft_bias within in_set (the others excluded) meets budget b as
 * a routing, token by token: tau, each token's experts hold a share >= tau of its top-k
 * probability; top1, each token runs its top-1; kl, the mean of ln(P_t(topk) / P_t(sel)) <= kl_max.
 * The set alone does not bound that: soft biases reorder experts within S, and on a trained model
 * they can move most tokens off their top-1 (docs/strategies.md "Biases within the budget").
 * At a = 0 each token runs its top-k within S, which meets the budget wherever S does.
 * *scale gets a; res (may be NULL) gets bias_scale, energy_j and kl at that scale (its other
 * fields untouched). Never allocates. */
int tmoe_set_bias_scale(tmoe_set_selector *s, const tmoe_cost_provider *p, const float *logits,
                        int T, const tmoe_set_budget *b, const double *soft_bias,
                        const unsigned char *in_set, double *scale, tmoe_set_result *res,
                        tmoe_error *err);

/* The bias that excludes experts outside S: lower than any kept expert's score can be for
 * finite logits of this batch, so that tmoe_gate_topk (CPU and CUDA alike) picks each
 * token's top-k within S: -(max z - min z + 2 max|soft_bias| + 1 + 1e-3 (|max z| + |min z|))
 * over the finite logits, at most floor_bias (e.g. the router's exclusion_bias). A kept
 * expert whose logit is NaN or -inf, or an excluded one whose logit is +inf, can still break
 * the rule (tmoe_gate_topk ranks NaN as -inf). */
float tmoe_set_exclusion_bias(const float *logits, int T, int E, const double *soft_bias,
                              double floor_bias);

/* Predicted energy of one MoE step ("predicted_energy_j"): sum over the experts with
 * counts[e] > 0 of the provider's energy_j at that count, in J: the cost model's energy of
 * reading each touched expert's weights and computing its tokens, the same quantities the
 * simulated GPU is billed for the experts (tests/test_route_select.c checks it against the
 * simulated GPU's energy of the step). counts (E). */
int tmoe_route_step_energy(const tmoe_cost_provider *p, const int32_t *counts, int E, double *out,
                           tmoe_error *err);

/* ---- router configuration ------------------------------------------------------------ */

/* Strategies (every bias is in logit units; "cost score" is tmoe_route_cost_biases' s_e at
 * the batch's expected tokens per expert n = max(1, T k / E), from the marginal energy of a
 * token, except for hierarchical_adaptive's tiers, which rank whole experts by energy per
 * token at n, fixed cost included; "pressure" is how close the
 * hardware is to its targets: the largest of (P - 0.9 P*) / (0.1 P*), (T - (T* - dT)) / dT,
 * (T_pred - (T* - dT)) / dT over the known fields, at least 1 when throttled; <= 0 cool,
 * 1 at the targets; T_pred is the larger of hw->pred_temp_c and the thermal predictor's
 * prediction from the current temperature and power at horizon_s):
 *  baseline              no bias.
 *  static_optimal        fixed biases from tmoe_router_fit_static (or the first batch).
 *  kernel_aware_ttha     cost_bias_scale x clamp(pressure, 0, 1) x base cost biases (full
 *                        when nothing is known) + the TTHA adapter's biases. Copies: of the
 *                        n experts whose copy costs less at the batch's count, the
 *                        round(g n) whose copies save the most run as copies, g its budget
 *                        tightness (an integral of the power error).
 *  hierarchical_adaptive level 1: experts fall into num_tiers tiers by cost-score rank (tier
 *                        0 cheapest; explicit tiers via expert_tier; a single tier when all
 *                        costs are equal); pressure <= 0 keeps every tier, 0 < pressure < 1
 *                        drops the costliest tier, pressure >= 1 (or throttled) the two
 *                        costliest, never leaving fewer than k experts; dropped experts get
 *                        exclusion_bias. Level 2: base cost biases among the kept experts.
 *                        Power is the last batch window's (tmoe_router_update) where known.
 *                        Under a budget, S is chosen within the kept tiers unless no such set
 *                        meets it; then among all experts (the budget wins; the exclusion
 *                        bias is one of the soft biases tmoe_set_bias_scale bounds).
 *                        Copies (expert_copy): the first step of pressure runs each copied
 *                        expert whose copy costs less energy at n than it does as its copy,
 *                        and, where one does, drops one tier fewer (warm: the copies; hot:
 *                        the copies and the costliest tier); tiers and level 2 then
 *                        rank the experts at their costs as run (a copy at its own). A copy
 *                        changes an expert's precision, not the routing: the budget does
 *                        not see it; its quality cost is the copy's (measured by eval).
 *  predictive_thermal    overshoot o = max(T_pred, T_now) - T*; when o > 0 the costly experts
 *                        are penalised: b_e = -max_bias min(1, o/dT) (s_e - min s)/(max s -
 *                        min s); it acts while T_now < T* as soon as T_pred > T*.
 *  multi_gpu_aware       per device d: pressure_d = clamp((T_d - (T* - dT))/dT, 0, 2) +
 *                        clamp((P_d - 0.9 P*)/(0.1 P*), 0, 2) + clamp(util_d, 0, 1) +
 *                        clamp(queue_d / queue_ref, 0, 2) (unknown terms 0); cost scores
 *                        include link_j_per_token for experts off the home device;
 *                        b_e = clamp(-0.5 max_bias (s_e - mean s)/(max s - min s)
 *                        - max_bias (pressure_dev(e) - min pressure) / max(1, spread), +-max_bias).
 * The load balancer's bias (and REINFORCE exploration noise) is added to any of them.
 *
 * Comparisons: what users would otherwise do (docs/strategies.md "Comparisons"). Each makes
 * the selection itself, per token, which biases cannot express: route them with
 * tmoe_router_route_explicit (tmoe_router_route refuses them). Scores are the logits plus
 * the load balancer's bias; p_t is the token's softmax over all E (unbiased); "the model's
 * weights" are p_t at the kept experts, divided by their sum when renorm (norm_topk_prob).
 * A token that keeps m < k experts fills slots m..k-1 with its first kept expert at weight 0.
 *  topk_minus_one        each token keeps its top k-1 (needs k >= 2), the model's weights.
 *  top_p                 each token keeps the shortest prefix (1..k) of its top-k whose sum
 *                        of p_t reaches top_p (all k when none does), the model's weights.
 *  expert_prune          the prune_experts least-used experts of the layer (by baseline
 *                        top-k on the profile of tmoe_router_fit_static, or the first batch;
 *                        ties prune the higher index) are never chosen; each token takes its
 *                        top-k among the rest (NAEE's static pruning), the model's weights
 *                        (p_t over all E).
 *  capacity              at most C = ceil(cap_factor T k / E) copies per expert; the
 *                        baseline top-k with the model's weights, then cap_overflow: drop
 *                        (Switch / GShard) takes copies in slot-major order (every token's
 *                        first choice, then every token's second, ...), in token order within
 *                        a slot, and drops those that find their expert full; the kept
 *                        copies keep their weights (not renormalised), a token whose every
 *                        copy was dropped keeps only the residual (its slots: its top-1 at
 *                        weight 0); next: token order, an overflowing copy moves to the best
 *                        expert with room the token has not chosen, weights renormalised over
 *                        the chosen when renorm. */
typedef enum {
    TMOE_ROUTE_BASELINE,
    TMOE_ROUTE_STATIC_OPTIMAL,
    TMOE_ROUTE_KERNEL_AWARE_TTHA,
    TMOE_ROUTE_HIERARCHICAL_ADAPTIVE,
    TMOE_ROUTE_PREDICTIVE_THERMAL,
    TMOE_ROUTE_MULTI_GPU_AWARE,
    TMOE_ROUTE_TOPK_MINUS_ONE, /* the comparisons, from here on */
    TMOE_ROUTE_TOP_P,
    TMOE_ROUTE_EXPERT_PRUNE,
    TMOE_ROUTE_CAPACITY,
    TMOE_ROUTE_STRATEGY_COUNT
} tmoe_route_strategy;
/* The six strategies come first; the comparisons are TMOE_ROUTE_FIRST_COMPARISON and after. */
#define TMOE_ROUTE_FIRST_COMPARISON TMOE_ROUTE_TOPK_MINUS_ONE
const char *tmoe_route_strategy_name(tmoe_route_strategy s);
int tmoe_route_strategy_parse(const char *name, tmoe_route_strategy *out);
/* 1 for the comparisons (explicit selections), else 0. */
int tmoe_route_strategy_is_comparison(tmoe_route_strategy s);

/* capacity: what happens to a copy whose expert is full. */
typedef enum { TMOE_OVERFLOW_DROP, TMOE_OVERFLOW_NEXT, TMOE_OVERFLOW_COUNT } tmoe_overflow;
const char *tmoe_overflow_name(tmoe_overflow o);
int tmoe_overflow_parse(const char *name, tmoe_overflow *out); /* "drop|next" */

typedef enum { TMOE_TTHA_GRAD_SURROGATE, TMOE_TTHA_GRAD_REINFORCE } tmoe_ttha_grad;
const char *tmoe_ttha_grad_name(tmoe_ttha_grad g);
int tmoe_ttha_grad_parse(const char *name, tmoe_ttha_grad *out);

typedef enum { TMOE_LR_CONSTANT, TMOE_LR_WARMUP_COSINE, TMOE_LR_STEP } tmoe_lr_schedule;
const char *tmoe_lr_schedule_name(tmoe_lr_schedule s);
int tmoe_lr_schedule_parse(const char *name, tmoe_lr_schedule *out);

typedef struct tmoe_router_config {
    tmoe_route_strategy strategy;
    int num_experts;        /* E, 1..TMOE_MAX_EXPERTS */
    int top_k;              /* 1..min(E, TMOE_MAX_TOPK) */
    int max_tokens;         /* largest T passed to route (buffers sized once) (default 4096) */
    double max_bias;        /* logit units; every strategy's own bias lies in [-max_bias, max_bias]
                               (hierarchical exclusion excepted) (default 2.0) */
    double cost_bias_scale; /* multiplies the base cost biases in kernel_aware_ttha (default 1) */
    double w_temp_cost; /* weight of temp impact vs energy in the expert cost score (default 1) */

    /* objective (TTHA loss, also the targets other strategies react to) */
    double w_power, w_temp, w_latency, w_throughput, w_fidelity;
    double power_target_w;  /* P*, W (default 400) */
    double temp_target_c;   /* T*, C (default 75) */
    double temp_band_c;     /* dT, C (default 5) */
    double latency_slack;   /* slack in latency_penalty (default 0.1) */
    double latency_base_ms; /* L_base; NAN = first observed latency */
    double throughput_base; /* Q_base, tokens/s; NAN = first observed throughput */
    double horizon_s;       /* prediction horizon, s (default 5) */

    /* TTHA adapter */
    int ttha_hidden;     /* hidden tanh units (default 32) */
    double lr;           /* peak learning rate (default 3e-3) */
    double weight_decay; /* decoupled (AdamW) (default 1e-4) */
    double adam_beta1, adam_beta2, adam_eps;
    tmoe_lr_schedule schedule; /* default warmup_cosine */
    int lr_warmup;             /* updates of linear warmup (default 20) */
    int lr_decay_steps;        /* cosine: updates to reach lr_min_ratio; step: period (10000) */
    double lr_min_ratio;       /* cosine floor / step factor gamma (default 0.1) */
    tmoe_ttha_grad grad_mode;  /* default surrogate */
    double surrogate_tau;      /* temperature of the soft counts (default 1) */
    double explore_sigma;      /* REINFORCE exploration std, logit units (default 0.1) */
    double baseline_decay;     /* REINFORCE moving-average baseline decay (default 0.9) */
    uint64_t seed;

    /* load balancer */
    int lb_enabled;         /* default 0 */
    double lb_step;         /* default 0.01 */
    double lb_max_abs;      /* |b_e| cap, 0 = none (default 0) */
    double capacity_factor; /* > 0: at most ceil(cf * T * k / E) copies per expert (the
                               router's selection_out; overflow goes to the next best expert
                               with room); 0 = off (default); needs observe_selection 0 */

    /* who selects */
    int observe_selection; /* 0 (default): route() selects and the load balancer counts that
                              selection. 1: the caller selects with the returned biases (the
                              engine's top-k) and reports what ran with tmoe_router_observe,
                              which updates the load balancer and gives the predicted energy;
                              route() then selects only when selection_out or
                              predicted_energy_out asks for it. */

    /* expert-set selection (every strategy but baseline; docs/strategies.md): the budget
       kind, and its value when the hardware is cool (base) and under full pressure; each
       strategy sets how far toward the tight end it goes (its "tightness" g in [0, 1]):
       tau = tau_base - (tau_base - tau_min) g, kl = kl_base + (kl_max - kl_base) g */
    tmoe_budget_kind budget; /* default kl; none = per-expert biases only */
    double tau_base;         /* default 0.95 */
    double tau_min;          /* default 0.7; 0 < tau_min <= tau_base <= 1 */
    double kl_base, kl_max;  /* nats (default 0.01, 0.03); 0 <= kl_base <= kl_max */
    double ttha_budget_gain; /* kernel_aware_ttha: g moves by gain x the per-batch error
                                max(w (P/P* - 1), (T - T*)/dT) after each update, w = the
                                batch's period / the running mean period (default 0.25) */

    /* static_optimal */
    double kl_bound; /* expected KL(unbiased || biased) budget of its biases, and the mean
                        set-selection KL its fitted tau may cost, nats (default 0.05) */

    /* hierarchical_adaptive */
    int num_tiers;          /* tiers by cost rank, tier 0 cheapest (default 3; at most E) */
    const int *expert_tier; /* (E) explicit tier per expert, or NULL for cost rank; borrowed
                               for create only (copied) */
    double exclusion_bias;  /* bias given to excluded tiers (default -30) */
    /* lower-precision copies: expert_copy (E) marks the experts the model also holds as a
       cheaper copy (NULL = none), copy_cost gives the copies' costs (its expert e is e's
       copy); both borrowed for create only (copied; copy_cost's ctx must outlive the
       router). hierarchical_adaptive and kernel_aware_ttha run copies
       (tmoe_router_last_copies). */
    const unsigned char *expert_copy;
    const tmoe_cost_provider *copy_cost;

    /* comparisons (tmoe_router_route_explicit) */
    double top_p;               /* top_p: probability mass each token keeps, (0, 1] (default 0.9) */
    int prune_experts;          /* expert_prune: experts pruned per layer, 0..E-k; -1 (default) =
                                   E / 4, at most E - k */
    double cap_factor;          /* capacity: C = ceil(cap_factor T k / E) copies per expert, > 0
                                   (default 1); unrelated to capacity_factor above */
    tmoe_overflow cap_overflow; /* capacity: drop (default) or next */

    /* multi_gpu_aware */
    int num_devices;          /* 1..TMOE_ROUTE_MAX_DEVICES (default 1) */
    const int *expert_device; /* (E) device of each expert, or NULL = expert e on e % N; copied */
    int home_device;          /* where the tokens live (default 0) */
    double link_j_per_token;  /* energy to move one token copy off and back, J (default 1e-4) */
    double queue_ref;         /* queue depth that counts as fully busy (default 256) */
} tmoe_router_config;

tmoe_router_config tmoe_router_config_default(void);

/* ---- router --------------------------------------------------------------------------- */

/* A router is used from one thread at a time. */
typedef struct tmoe_router tmoe_router;

/* Create a router. cost is copied (its ctx borrowed: it must outlive the router).
 * The thermal predictor, load balancer and TTHA adapter are owned by the router. */
int tmoe_router_create(const tmoe_router_config *cfg, const tmoe_cost_provider *cost,
                       tmoe_router **out, tmoe_error *err);
void tmoe_router_free(tmoe_router *r); /* NULL-safe */
const tmoe_router_config *tmoe_router_get_config(const tmoe_router *r);
/* The budget tightness g (0 base .. 1 tightest) of the router's last expert-set selection;
 * NAN when it made none (baseline, the comparisons, budget none) or when its budget is
 * fitted rather than moved (static_optimal). */
double tmoe_router_budget_tightness(const tmoe_router *r);

/* expert_prune: the same call counts each expert's uses by the unbiased top-k of the N
 * profile rows and prunes the prune_experts least used (ties prune the higher index);
 * *kl_out gets NAN. Other comparisons: TMOE_EINVAL.
 * static_optimal: fit the fixed biases from a workload profile: N sample logit rows (N, E)
 * and the batch size they stand for. Minimises the predicted energy of a batch of
 * tokens_per_batch tokens (soft counts, scaled from the sample) subject to mean KL(softmax(z)
 * || softmax(z + b)) <= kl_bound, |b_e| <= max_bias: for a multiplier lambda, projected
 * gradient descent (Adam steps, clipped) minimises J(b)/J(0) + lambda KL(b); bisection on
 * lambda (log scale) finds the smallest lambda whose solution meets the bound; biases that
 * buy no energy (equal costs) are left at zero. At most 256 evenly spaced rows are used.
 * If not called, the first routed batch is the profile (that call then takes much longer).
 * Returns the KL reached in *kl_out (may be NULL). */
int tmoe_router_fit_static(tmoe_router *r, const float *logits, int N, int tokens_per_batch,
                           double *kl_out, tmoe_error *err);

/* The expert set of the batch last routed: 1 and res / tau (either may be NULL) filled when
 * set selection ran (tau is the budget value used: tau, or kl_max for the kl budget), 0 when
 * it did not (baseline, budget none, or nothing routed yet). */
int tmoe_router_last_set(const tmoe_router *r, tmoe_set_result *res, double *budget_value);

/* The experts the batch last routed runs as their lower-precision copies: use_copy (E, may
 * be NULL) gets 1 for each; returns how many (0 without copies, before the first batch, and
 * for every strategy but hierarchical_adaptive and kernel_aware_ttha). The router's predicted
 * energy of that batch bills them at the copies' costs. */
int tmoe_router_last_copies(const tmoe_router *r, unsigned char *use_copy);

/* Route one batch. logits (T, E) fp32; unbiased_idx (T, k) may be NULL: the unbiased top-k
 * of these logits (tmoe_gate_topk without bias; only the experts matter, not the weights),
 * which kernel_aware_ttha reads as the current load, from a caller that computes it anyway;
 * NULL = the router computes it when the strategy needs it. Experts outside 0..E-1 are
 * TMOE_EINVAL. hw may be NULL (all unknown). Every strategy but baseline then chooses the
 * expert set S under its budget (tmoe_set_select) unless budget is none. Outputs (each may be
 * NULL): biases_out (E) the total selection bias (strategy + load balancer [+ exploration],
 * plus tmoe_set_exclusion_bias on the experts outside S); selection_out (T, k) chosen
 * experts per token, decreasing biased score, ties to the lower index (tmoe_gate_topk),
 * then the capacity limit if set; predicted_energy_out: tmoe_route_step_energy of that
 * selection's counts. Unless observe_selection is set, the load balancer counts that
 * selection. Never allocates. A comparison strategy is TMOE_EINVAL: it selects per token
 * (tmoe_router_route_explicit). */
int tmoe_router_route(tmoe_router *r, const float *logits, int T, const int32_t *unbiased_idx,
                      const tmoe_hw_state *hw, float *biases_out, int32_t *selection_out,
                      double *predicted_energy_out, tmoe_error *err);

/* Route one batch of a comparison strategy (TMOE_EINVAL for the others): the selection
 * itself, idx (T, k) experts and w (T, k) combine weights, padded as the strategy table
 * above says; renorm is the model's norm_topk_prob. logits, T and hw as for
 * tmoe_router_route (hw is not read by the comparisons). predicted_energy_out (may be NULL):
 * tmoe_route_step_energy of the selection's counts, copies at weight 0 (padded slots) left
 * out: the decoders do not run them.
 * Unless observe_selection, the load balancer counts the selection; with it, the caller
 * reports what ran with tmoe_router_observe. Never allocates. */
int tmoe_router_route_explicit(tmoe_router *r, const float *logits, int T, int renorm,
                               const tmoe_hw_state *hw, int32_t *idx, float *w,
                               double *predicted_energy_out, tmoe_error *err);
/* The experts expert_prune prunes: mask (E) gets 1 for a pruned expert. Returns 1 once
 * fitted (tmoe_router_fit_static or the first batch), 0 before, -1 for another strategy. */
int tmoe_router_pruned(const tmoe_router *r, unsigned char *mask);

/* observe_selection: report the selection that ran for the batch last routed, e.g. the
 * engine's tmoe_moe_metrics topk_idx / topk_w: idx (T, k) experts, w (T, k) combine weights
 * (NULL = 1/k), T the routed batch's tokens. The load balancer counts it, and
 * predicted_energy_j (may be NULL) gets tmoe_route_step_energy of its counts; a copy at
 * weight 0 (a padded slot) is not counted, as the decoders do not run it. Once per routed
 * batch, before the next route; TMOE_EINVAL without observe_selection, without a batch to
 * observe, for another T or an expert outside 0..E-1 (the router is left unchanged then).
 * Never allocates. */
int tmoe_router_observe(tmoe_router *r, const int32_t *idx, const float *w, int T,
                        double *predicted_energy_j, tmoe_error *err);

/* What was observed for the batch last routed. NAN = unknown (that loss term is skipped). */
typedef struct tmoe_route_obs {
    double power_w;    /* average board power over the batch period, W */
    double temp_c;     /* GPU temperature at its end, C */
    double latency_ms; /* MoE step latency, ms */
    double throughput; /* tokens/s */
    double period_s;   /* time the batch's energy is spread over (open loop: the arrival
                          interval; closed loop: its latency); NAN = latency_ms / 1000 */
    double dt_s;       /* time since the previous observation (thermal predictor) */
} tmoe_route_obs;
tmoe_route_obs tmoe_route_obs_unknown(void);

/* Every loss term of one TTHA update (DESIGN.md "Routing"). */
typedef struct tmoe_ttha_record {
    int64_t step;
    double power_loss, temp_loss, latency_penalty, throughput_bonus, fidelity, total;
    double lr, grad_norm; /* learning rate used; L2 norm of the parameter gradient */
    double pred_energy_j; /* surrogate's predicted batch energy */
    const float *biases;  /* (E) total biases of that batch; valid until the next
                             tmoe_router_update (the history moves when it grows) */
} tmoe_ttha_record;

/* Feed the observation of the batch last routed: updates the thermal predictor (power,
 * temperature, dt), and for kernel_aware_ttha takes one adapter step and appends a record
 * to the history. rec (may be NULL) receives the record (zeros + NAN when no step taken). */
int tmoe_router_update(tmoe_router *r, const tmoe_route_obs *obs, tmoe_ttha_record *rec,
                       tmoe_error *err);

/* TTHA history (one entry per update taken), read by the logger. */
int64_t tmoe_router_history_len(const tmoe_router *r);
int tmoe_router_history_get(const tmoe_router *r, int64_t i, tmoe_ttha_record *out);

tmoe_thermal_pred *tmoe_router_thermal_pred(tmoe_router *r); /* owned by the router */
tmoe_lb *tmoe_router_lb(tmoe_router *r);                     /* NULL when disabled */

/* TTHA adapter weights: binary file, header "TMOETTHA", format version, E, input size,
 * hidden size, parameter count, float64 parameters, trailer. Loading checks every field and
 * refuses a file made for another shape (TMOE_EFORMAT, saying what differs). The budget
 * tightness of kernel_aware_ttha is not in the file: a loaded router starts at its base
 * budget and moves it again from the observed power. */
int tmoe_router_ttha_save(const tmoe_router *r, const char *path, tmoe_error *err);
int tmoe_router_ttha_load(tmoe_router *r, const char *path, tmoe_error *err);

/* ---- functions shared with the harness and the tests ---------------------------------- */

/* The seed's energy loss ("compute_energy_loss", kept for comparison; predicted_energy_j is
 * tmoe_route_step_energy): sum over tokens t and chosen slots j of
 * prob[t, j] x energy_j of expert idx[t, j] at its token count in this selection (count of
 * copies). prob (T, k) are the routing probabilities (the combine weights); NULL = 1/k. */
int tmoe_route_energy_loss(const tmoe_cost_provider *p, const int32_t *idx, const float *prob,
                           int T, int k, int E, double *out, tmoe_error *err);

/* Base cost biases: per expert, the cost score s_e = ew_e / mean(ew) + w_temp * ti_e /
 * mean(ti), with ew_e = the marginal energy of a token (the secant of energy over
 * [max(1, n/2), max(that + 1, 3n/2)] tokens, n = `tokens`) and ti_e = temp impact at n. A
 * bias moves tokens between experts that run anyway (which experts run at all is the set
 * selection's business), so what it saves is the per-token cost: a q4 expert is cheaper to
 * run than an fp16 one but may cost more for each token it takes (dequantization);
 * the router passes the batch's expected tokens per expert, max(1, T k / E), the same for
 * every expert, so that the score ranks experts by what they cost and not by how popular
 * they are in this batch (popularity is the gate's and the load balancer's business).
 * b_e = -max_bias (s_e - mean s) / (max s - min s): max_bias from the costliest to the
 * cheapest, within [-max_bias, max_bias]; all zero when
 * max s - min s <= 1e-9 mean |s| (equal costs). A mean that is 0 drops its term. Experts
 * with mask[e] == 0 are left out (bias 0) when mask is not NULL. */
int tmoe_route_cost_biases(const tmoe_cost_provider *p, double tokens, int E, double max_bias,
                           double w_temp, const unsigned char *mask, double *bias, tmoe_error *err);

/* Mean over the T rows of KL(softmax(z) || softmax(z + b)); grad (E, may be NULL) gets its
 * exact gradient with respect to b. Computed in double. */
double tmoe_route_mean_kl(const float *logits, int T, int E, const double *b, double *grad);

/* The TTHA surrogate as a function of the total bias b (E), in double:
 *   S(b) = c_energy * E(b) + c_latency * L(b) + w_fidelity * meanKL(b),
 * E(b) = sum_e energy_e(n_e(b)), L(b) = sum_e latency_e(n_e(b)) (experts run one after
 * another), n_e(b) = count_scale sum_t k softmax((z_t + b)/tau)_e. The router folds the outer
 * derivatives of the loss terms, taken at the observed values, into c_energy (per joule)
 * and c_latency (per ms). grad (E) may be NULL. */
typedef struct tmoe_surrogate {
    tmoe_cost_provider cost;
    int top_k;
    double tau;
    double count_scale; /* > 0: soft counts are multiplied by it (1 for a batch, or
                           tokens_per_batch / N when the rows are a profile sample) */
    double c_energy, c_latency, w_fidelity;
} tmoe_surrogate;
int tmoe_route_surrogate(const tmoe_surrogate *s, const float *logits, int T, int E,
                         const double *b, double *loss, double *grad, double *energy_out,
                         double *latency_out, tmoe_error *err);

/* REINFORCE estimate of d loss / d b from one exploration: g_e = (loss - baseline) noise_e /
 * sigma^2, where noise ~ N(0, sigma^2) per expert was added to the biases when the batch ran
 * and loss was observed then. Its expectation over the noise is the gradient of the
 * Gaussian-smoothed loss, which tends to the gradient as sigma -> 0 (tests/test_route_grad.c
 * checks it against central finite differences). */
void tmoe_route_reinforce_grad(double loss, double baseline, const double *noise, int E,
                               double sigma, double *g);

/* TTHA MLP alone (for tests): in -> tanh hidden -> E outputs, bias = max_bias tanh(out).
 * Parameters are a flat float64 array (W1 (H, in), b1 (H), W2 (E, H), b2 (E)). */
typedef struct tmoe_ttha_mlp tmoe_ttha_mlp;
int tmoe_ttha_mlp_create(int in, int hidden, int E, double max_bias, uint64_t seed,
                         tmoe_ttha_mlp **out, tmoe_error *err);
void tmoe_ttha_mlp_free(tmoe_ttha_mlp *m); /* NULL-safe */
int tmoe_ttha_mlp_num_params(const tmoe_ttha_mlp *m);
double *tmoe_ttha_mlp_params(tmoe_ttha_mlp *m); /* (num_params), owned by m */
/* Forward x (in) -> bias (E); keeps the activations for the next backward. */
void tmoe_ttha_mlp_forward(tmoe_ttha_mlp *m, const double *x, double *bias);
/* Given dL/dbias (E) of the last forward, set grad (num_params) = dL/dparams. */
void tmoe_ttha_mlp_backward(tmoe_ttha_mlp *m, const double *dbias, double *grad);

#ifdef __cplusplus
}
#endif
#endif
