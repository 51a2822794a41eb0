/* Internal pieces of the routing module shared between its source files. */
#ifndef THERMOE_ROUTE_INTERNAL_H
#define THERMOE_ROUTE_INTERNAL_H

#include "thermoe/route.h"

struct tmoe_ttha_mlp {
    int in, hidden, E, np;
    double max_bias;
    double *p;          /* (np) W1 (H, in), b1 (H), W2 (E, H), b2 (E) */
    double *x, *h, *to; /* last forward: input (in), hidden tanh (H), tanh(output) (E) */
    double *dh;         /* (H) backward scratch */
};

/* AdamW state over n parameters. */
typedef struct tmoe_adam {
    int n;
    int64_t t;
    double *m, *v; /* (n) each */
} tmoe_adam;
int tmoe_adam_init(tmoe_adam *a, int n, tmoe_error *err);
void tmoe_adam_free(tmoe_adam *a);
/* One decoupled-weight-decay Adam step on p with gradient g at learning rate lr. */
void tmoe_adam_step(tmoe_adam *a, double *p, const double *g, double lr, double beta1, double beta2,
                    double eps, double weight_decay);

/* Cost score per expert (see tmoe_route_cost_biases): with marginal, the energy of one more
 * token at `tokens` (what a bias that moves tokens between running experts changes); else the
 * energy per token there, fixed cost included (what running the expert at all costs: for
 * ranking whole experts). extra_j (E, may be NULL) is added to the energy per token (link
 * energy). Masked-out experts get 0. */
int tmoe_route_cost_scores(const tmoe_cost_provider *p, double tokens, int E, double w_temp,
                           int marginal, const unsigned char *mask, const double *extra_j,
                           double *s, tmoe_error *err);
/* Mean, min and max of the scores over the mask; 0 when they are all equal (to 1e-9). */
int tmoe_route_scores_spread(const double *s, int E, const unsigned char *mask, double *mean,
                             double *lo, double *hi);

/* tmoe_set_exclusion_bias for the logits the last tmoe_set_select on s read, from the range
 * that call kept (it scans logits (T, s's E) where no selection has kept one): a route call
 * needs it three times for the same logits. */
float tmoe_set_selector_exclusion_bias(const tmoe_set_selector *s, const float *logits, int T,
                                       const double *soft_bias, double floor_bias);

#endif
