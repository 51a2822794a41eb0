/* Cost providers (see include/thermoe/cost.h): expert costs from a cost model, tabulated at
 * every integer token count and linear in between, and the analytic provider of the tests
 * and benchmarks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/cost.h"

/* ---- tables over a cost model --------------------------------------------------------- */

/* The routers ask for expert costs many times a batch (features, soft-count surrogate and
 * its derivative). The cost model's lookup (op sequence, log-token interpolation) is done
 * once per expert type and integer token count into a table. */
struct tmoe_cost_table {
    int num_experts, max_tokens;
    tmoe_etype *types;                    /* (num_experts) */
    tmoe_expert_cost *tab[TMOE_ET_COUNT]; /* (max_tokens + 1) per used type; [0] = 0 */
};

int tmoe_cost_table_create(const tmoe_cost_model *cm, const tmoe_etype *types, int num_experts,
                           tmoe_impl impl, int max_tokens, tmoe_cost_table **out, tmoe_error *err) {
    *out = NULL;
    if (num_experts < 1 || num_experts > TMOE_COST_MAX_EXPERTS || max_tokens < 1)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "cost table: %d experts (1..%d) and max_tokens %d (>= 1)", num_experts,
                           TMOE_COST_MAX_EXPERTS, max_tokens);
    for (int e = 0; e < num_experts; e++)
        if ((unsigned)types[e] >= TMOE_ET_COUNT)
            return tmoe_errorf(err, TMOE_EINVAL, "cost table: expert %d has type %d", e,
                               (int)types[e]);
    tmoe_cost_table *t = tmoe_calloc(1, sizeof *t, err);
    if (!t) return TMOE_ENOMEM;
    t->num_experts = num_experts;
    t->max_tokens = max_tokens;
    t->types = tmoe_malloc(sizeof *t->types * (size_t)num_experts, err);
    if (!t->types) {
        tmoe_cost_table_free(t);
        return TMOE_ENOMEM;
    }
    memcpy(t->types, types, sizeof *t->types * (size_t)num_experts);
    for (int ty = 0; ty < TMOE_ET_COUNT; ty++) {
        int used = 0;
        for (int e = 0; e < num_experts; e++) used |= types[e] == (tmoe_etype)ty;
        if (!used) continue;
        t->tab[ty] = tmoe_calloc((size_t)max_tokens + 1, sizeof *t->tab[ty], err);
        if (!t->tab[ty]) {
            tmoe_cost_table_free(t);
            return TMOE_ENOMEM;
        }
        for (int k = 1; k <= max_tokens; k++) {
            tmoe_cost_value v;
            int rc = tmoe_cost_expert(cm, (tmoe_etype)ty, impl, k, &v, err);
            if (rc) {
                tmoe_cost_table_free(t);
                return rc;
            }
            t->tab[ty][k] = (tmoe_expert_cost){v.energy_j, v.latency_ms, v.temp_impact_c_per_s};
        }
    }
    *out = t;
    return TMOE_OK;
}

void tmoe_cost_table_free(tmoe_cost_table *t) {
    if (!t) return;
    for (int ty = 0; ty < TMOE_ET_COUNT; ty++) free(t->tab[ty]);
    free(t->types);
    free(t);
}

int tmoe_cost_table_num_experts(const tmoe_cost_table *t) {
    return t->num_experts;
}
int tmoe_cost_table_max_tokens(const tmoe_cost_table *t) {
    return t->max_tokens;
}

/* The expert's table and the segment [lo, lo + 1] that holds n (the last segment beyond the
 * table's end); NULL + TMOE_EINVAL for a bad expert or token count. */
static const tmoe_expert_cost *segment(const tmoe_cost_table *t, int expert, double n, int *lo,
                                       tmoe_error *err) {
    if (expert < 0 || expert >= t->num_experts || !(n >= 0.0)) {
        tmoe_errorf(err, TMOE_EINVAL, "expert %d of %d: token count %g", expert, t->num_experts, n);
        return NULL;
    }
    int max = t->max_tokens;
    *lo = n <= 0.0 ? 0 : n >= max ? max - 1 : (int)n;
    return t->tab[t->types[expert]];
}

static int table_cost(void *ctx, int expert, double n, tmoe_expert_cost *out, tmoe_error *err) {
    int k;
    const tmoe_expert_cost *tab = segment(ctx, expert, n, &k, err);
    if (!tab) return TMOE_EINVAL;
    double f = n - k;
    const tmoe_expert_cost *a = &tab[k], *b = &tab[k + 1];
    out->energy_j = a->energy_j + f * (b->energy_j - a->energy_j);
    out->latency_ms = a->latency_ms + f * (b->latency_ms - a->latency_ms);
    out->temp_impact_c_per_s =
        a->temp_impact_c_per_s + f * (b->temp_impact_c_per_s - a->temp_impact_c_per_s);
    return TMOE_OK;
}

static int table_deriv(void *ctx, int expert, double n, tmoe_expert_cost *d, tmoe_error *err) {
    int k;
    const tmoe_expert_cost *tab = segment(ctx, expert, n, &k, err);
    if (!tab) return TMOE_EINVAL;
    d->energy_j = tab[k + 1].energy_j - tab[k].energy_j;
    d->latency_ms = tab[k + 1].latency_ms - tab[k].latency_ms;
    d->temp_impact_c_per_s = tab[k + 1].temp_impact_c_per_s - tab[k].temp_impact_c_per_s;
    return TMOE_OK;
}

tmoe_cost_provider tmoe_cost_table_provider(const tmoe_cost_table *t) {
    tmoe_cost_provider p = {table_cost, table_deriv, (void *)t};
    return p;
}

/* ---- analytic provider ---------------------------------------------------------------- */

static double arr(const double *a, int e) {
    return a ? a[e] : 0.0;
}

static int analytic_cost(void *ctx, int e, double n, tmoe_expert_cost *out, tmoe_error *err) {
    const tmoe_analytic_cost *c = ctx;
    if (e < 0 || e >= c->num_experts || !(n >= 0.0))
        return tmoe_errorf(err, TMOE_EINVAL, "analytic cost: expert %d of %d at %g tokens", e,
                           c->num_experts, n);
    double l = log1p(n);
    out->energy_j = arr(c->e_fixed, e) + arr(c->e_per_token, e) * n + arr(c->e_curve, e) * l;
    out->latency_ms = arr(c->l_fixed, e) + arr(c->l_per_token, e) * n + arr(c->l_curve, e) * l;
    out->temp_impact_c_per_s =
        arr(c->t_fixed, e) + arr(c->t_per_token, e) * n + arr(c->t_curve, e) * l;
    return TMOE_OK;
}

static int analytic_deriv(void *ctx, int e, double n, tmoe_expert_cost *d, tmoe_error *err) {
    const tmoe_analytic_cost *c = ctx;
    if (e < 0 || e >= c->num_experts || !(n >= 0.0))
        return tmoe_errorf(err, TMOE_EINVAL, "analytic cost: expert %d of %d at %g tokens", e,
                           c->num_experts, n);
    double dl = 1.0 / (1.0 + n);
    d->energy_j = arr(c->e_per_token, e) + arr(c->e_curve, e) * dl;
    d->latency_ms = arr(c->l_per_token, e) + arr(c->l_curve, e) * dl;
    d->temp_impact_c_per_s = arr(c->t_per_token, e) + arr(c->t_curve, e) * dl;
    return TMOE_OK;
}

tmoe_cost_provider tmoe_cost_analytic_provider(const tmoe_analytic_cost *c) {
    tmoe_cost_provider p = {analytic_cost, analytic_deriv, (void *)c};
    return p;
}
