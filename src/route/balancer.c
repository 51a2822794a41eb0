/* ExpertLoadBalancer: a per-expert selection bias nudged after every batch by
 * step * sign(mean load - load_e), optionally capped in magnitude. */
#include "thermoe/route.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/model.h"

struct tmoe_lb {
    int E;
    double step, max_abs;
    double b[TMOE_MAX_EXPERTS];
};

int tmoe_lb_create(int num_experts, double step, double max_abs, tmoe_lb **out, tmoe_error *err) {
    *out = NULL;
    if (num_experts < 1 || num_experts > TMOE_MAX_EXPERTS || !(step >= 0.0) || !(max_abs >= 0.0))
        return tmoe_errorf(err, TMOE_EINVAL,
                           "load balancer: experts %d must be in 1..%d, step %g and cap %g >= 0",
                           num_experts, TMOE_MAX_EXPERTS, step, max_abs);
    tmoe_lb *lb = tmoe_calloc(1, sizeof *lb, err);
    if (!lb) return TMOE_ENOMEM;
    lb->E = num_experts;
    lb->step = step;
    lb->max_abs = max_abs;
    *out = lb;
    return TMOE_OK;
}

void tmoe_lb_free(tmoe_lb *lb) {
    free(lb);
}

void tmoe_lb_update(tmoe_lb *lb, const int32_t *counts) {
    double mean = 0.0;
    for (int e = 0; e < lb->E; e++) mean += counts[e];
    mean /= lb->E;
    for (int e = 0; e < lb->E; e++) {
        double d = mean - counts[e];
        lb->b[e] += lb->step * (d > 0.0 ? 1.0 : d < 0.0 ? -1.0 : 0.0);
        if (lb->max_abs > 0.0) lb->b[e] = fmax(-lb->max_abs, fmin(lb->max_abs, lb->b[e]));
    }
}

const double *tmoe_lb_bias(const tmoe_lb *lb) {
    return lb->b;
}

void tmoe_lb_reset(tmoe_lb *lb) {
    memset(lb->b, 0, sizeof lb->b);
}
