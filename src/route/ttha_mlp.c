/* The TTHA adapter's network: input -> tanh hidden layer -> E outputs bounded by
 * max_bias * tanh, with its exact backward pass, and the AdamW optimiser that trains it.
 * Everything is double precision so gradients can be checked against finite differences. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "route/route_internal.h"

int tmoe_ttha_mlp_create(int in, int hidden, int E, double max_bias, uint64_t seed,
                         tmoe_ttha_mlp **out, tmoe_error *err) {
    *out = NULL;
    if (in < 1 || hidden < 1 || E < 1 || hidden > 4096 || in > 1 << 16 || !(max_bias > 0.0))
        return tmoe_errorf(err, TMOE_EINVAL,
                           "TTHA network: input %d, hidden %d, outputs %d must be >= 1 (hidden "
                           "<= 4096) and max_bias %g > 0",
                           in, hidden, E, max_bias);
    tmoe_ttha_mlp *m = tmoe_calloc(1, sizeof *m, err);
    if (!m) return TMOE_ENOMEM;
    m->in = in;
    m->hidden = hidden;
    m->E = E;
    m->max_bias = max_bias;
    m->np = hidden * in + hidden + E * hidden + E;
    m->p = tmoe_calloc((size_t)m->np + (size_t)in + 2 * (size_t)hidden + (size_t)E, sizeof(double),
                       err);
    if (!m->p) {
        free(m);
        return TMOE_ENOMEM;
    }
    m->x = m->p + m->np;
    m->h = m->x + in;
    m->dh = m->h + hidden;
    m->to = m->dh + hidden;
    /* W1 ~ U(+-1/sqrt(in)); the output layer starts small so the first biases are ~0. */
    tmoe_rng r;
    tmoe_rng_seed_stream(&r, seed, 0x77a);
    double s1 = 1.0 / sqrt((double)in), s2 = 0.01 / sqrt((double)hidden);
    for (int i = 0; i < hidden * in; i++) m->p[i] = s1 * (2.0 * tmoe_rng_uniform(&r) - 1.0);
    double *w2 = m->p + hidden * in + hidden;
    for (int i = 0; i < E * hidden; i++) w2[i] = s2 * (2.0 * tmoe_rng_uniform(&r) - 1.0);
    *out = m;
    return TMOE_OK;
}

void tmoe_ttha_mlp_free(tmoe_ttha_mlp *m) {
    if (!m) return;
    free(m->p);
    free(m);
}

int tmoe_ttha_mlp_num_params(const tmoe_ttha_mlp *m) {
    return m->np;
}
double *tmoe_ttha_mlp_params(tmoe_ttha_mlp *m) {
    return m->p;
}

void tmoe_ttha_mlp_forward(tmoe_ttha_mlp *m, const double *x, double *bias) {
    int in = m->in, H = m->hidden;
    const double *W1 = m->p, *b1 = W1 + H * in, *W2 = b1 + H, *b2 = W2 + m->E * H;
    memcpy(m->x, x, sizeof(double) * (size_t)in);
    for (int j = 0; j < H; j++) {
        double a = b1[j];
        for (int i = 0; i < in; i++) a += W1[j * in + i] * x[i];
        m->h[j] = tanh(a);
    }
    for (int e = 0; e < m->E; e++) {
        double o = b2[e];
        for (int j = 0; j < H; j++) o += W2[e * H + j] * m->h[j];
        m->to[e] = tanh(o);
        bias[e] = m->max_bias * m->to[e];
    }
}

void tmoe_ttha_mlp_backward(tmoe_ttha_mlp *m, const double *dbias, double *grad) {
    int in = m->in, H = m->hidden;
    const double *W2 = m->p + H * in + H;
    double *gW1 = grad, *gb1 = gW1 + H * in, *gW2 = gb1 + H, *gb2 = gW2 + m->E * H;
    memset(m->dh, 0, sizeof(double) * (size_t)H);
    for (int e = 0; e < m->E; e++) {
        double d = dbias[e] * m->max_bias * (1.0 - m->to[e] * m->to[e]);
        gb2[e] = d;
        for (int j = 0; j < H; j++) {
            gW2[e * H + j] = d * m->h[j];
            m->dh[j] += W2[e * H + j] * d;
        }
    }
    for (int j = 0; j < H; j++) {
        double d = m->dh[j] * (1.0 - m->h[j] * m->h[j]);
        gb1[j] = d;
        for (int i = 0; i < in; i++) gW1[j * in + i] = d * m->x[i];
    }
}

int tmoe_adam_init(tmoe_adam *a, int n, tmoe_error *err) {
    a->n = n;
    a->t = 0;
    a->m = tmoe_calloc(2 * (size_t)n, sizeof(double), err);
    if (!a->m) return TMOE_ENOMEM;
    a->v = a->m + n;
    return TMOE_OK;
}

void tmoe_adam_free(tmoe_adam *a) {
    free(a->m);
    a->m = a->v = NULL;
}

void tmoe_adam_step(tmoe_adam *a, double *p, const double *g, double lr, double beta1, double beta2,
                    double eps, double weight_decay) {
    a->t++;
    /* p -= lr (m/c1 / (sqrt(v/c2) + eps) + wd p), with the bias corrections hoisted */
    double c1 = 1.0 - pow(beta1, (double)a->t), rc2 = 1.0 / sqrt(1.0 - pow(beta2, (double)a->t));
    double step = lr / c1, decay = 1.0 - lr * weight_decay;
    for (int i = 0; i < a->n; i++) {
        double m = a->m[i] = beta1 * a->m[i] + (1.0 - beta1) * g[i];
        double v = a->v[i] = beta2 * a->v[i] + (1.0 - beta2) * g[i] * g[i];
        p[i] = decay * p[i] - step * m / (sqrt(v) * rc2 + eps);
    }
}
