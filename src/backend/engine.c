/* Engine: picks a backend from the registry (registry.c) and forwards each step to it. */
#include "backend/backend_internal.h"

#include "thermoe/ep.h"

#include <math.h>
#include <stdlib.h>

void tmoe_op_ms_add(double op_ms[TMOE_OP_COUNT], tmoe_op op, double ms) {
    op_ms[op] = isnan(op_ms[op]) ? ms : op_ms[op] + ms;
}

struct tmoe_engine {
    const tmoe_backend_vt *vt;
    void *st;
    const tmoe_block *blk;
    tmoe_engine_config cfg;
    int T;      /* tokens of the current batch, 0 before begin */
    int routed; /* moe ran for the current batch */
    double begin_ms[TMOE_OP_COUNT];
};

tmoe_engine_config tmoe_engine_config_default(void) {
    tmoe_engine_config c = {
        .backend = TMOE_BACKEND_AUTO,
        .device_id = 0,
        .max_tokens = 64,
        .impl = TMOE_IMPL_FUSED,
        .use_graphs = 1,
        .bias_in_weights = 0,
        .ep_overlap_min_copies = 16384, /* measured on 2 x H100: pays at 16384, not 4096 */
    };
    return c;
}

double tmoe_engine_tokens_per_active(int T, int k, int E) {
    if (T <= 0 || k <= 0 || E <= 0) return 0.0;
    if (k >= E) return (double)T;
    /* expected experts with tokens: each token misses a given expert with probability 1 - k/E */
    double active = (double)E * (1.0 - pow(1.0 - (double)k / E, (double)T));
    return active > 0.0 ? (double)T * k / active : 0.0;
}

tmoe_impl tmoe_engine_choose_impl(const tmoe_engine_config *cfg, tmoe_etype t,
                                  double tokens_per_active) {
    if (!cfg->impl_auto || !tmoe_etype_is_quant(t) || (unsigned)t >= TMOE_ET_COUNT ||
        cfg->unfused_from[t] <= 0)
        return cfg->impl;
    return tokens_per_active >= cfg->unfused_from[t] ? TMOE_IMPL_UNFUSED : TMOE_IMPL_FUSED;
}

int tmoe_engine_create(const tmoe_block *blk, const tmoe_engine_config *cfg, tmoe_engine **out,
                       tmoe_error *err) {
    *out = NULL;
    if (cfg->max_tokens <= 0)
        return tmoe_errorf(err, TMOE_EINVAL, "max_tokens = %d: must be positive", cfg->max_tokens);
    if ((unsigned)cfg->impl >= TMOE_IMPL_COUNT)
        return tmoe_errorf(err, TMOE_EINVAL, "unknown impl %d", (int)cfg->impl);
    for (int t = 0; t < TMOE_ET_COUNT; t++)
        if (cfg->unfused_from[t] < 0)
            return tmoe_errorf(err, TMOE_EINVAL, "unfused_from[%s] = %d: must be >= 0 (0: never)",
                               tmoe_etype_name((tmoe_etype)t), cfg->unfused_from[t]);
    tmoe_backend_kind k = cfg->backend;
    if (k == TMOE_BACKEND_AUTO) {
        tmoe_error why = {0};
        k = TMOE_BACKEND_CPU;
        if (tmoe_backend_probe(TMOE_BACKEND_CUDA, &why) == TMOE_OK) {
            k = TMOE_BACKEND_CUDA;
            tmoe_log(TMOE_LOG_INFO, "backend auto: cuda (a CUDA device answered)");
        } else {
            tmoe_log(TMOE_LOG_INFO, "backend auto: cpu (%s)", why.msg);
        }
    } else {
        int rc = tmoe_backend_probe(k, err);
        if (rc) return rc;
    }
    const tmoe_backend_entry *b = tmoe_backend_entry_of(k);
    const tmoe_backend_vt *vt = b->engine;
    if (cfg->ep && tmoe_ep_size(cfg->ep) > 1) {
        vt = b->engine_ep;
        if (!vt)
            return tmoe_errorf(err, TMOE_ENOTSUP, "expert parallelism over %d processes on %s: %s",
                               tmoe_ep_size(cfg->ep), b->name, b->ep_missing);
    }
    tmoe_engine *e = tmoe_calloc(1, sizeof *e, err);
    if (!e) return TMOE_ENOMEM;
    e->vt = vt;
    e->blk = blk;
    e->cfg = *cfg;
    e->cfg.backend = k;
    int rc = e->vt->create(blk, &e->cfg, &e->st, err);
    if (rc) {
        const char *name = e->vt->name;
        free(e);
        return tmoe_error_prefix(err, rc, "%s backend", name);
    }
    *out = e;
    return TMOE_OK;
}

void tmoe_engine_free(tmoe_engine *e) {
    if (!e) return;
    if (e->st) e->vt->destroy(e->st);
    free(e);
}

const char *tmoe_engine_backend_name(const tmoe_engine *e) {
    return e->vt->name;
}
const tmoe_block *tmoe_engine_block(const tmoe_engine *e) {
    return e->blk;
}

int tmoe_engine_begin(tmoe_engine *e, const float *x, int T, int moe_only, tmoe_error *err) {
    if (T < 1 || T > e->cfg.max_tokens)
        return tmoe_errorf(err, TMOE_EINVAL, "batch of %d tokens: must be 1..%d (max_tokens)", T,
                           e->cfg.max_tokens);
    for (int o = 0; o < TMOE_OP_COUNT; o++) e->begin_ms[o] = NAN;
    e->T = 0;
    e->routed = 0;
    int rc = e->vt->begin(e->st, x, T, moe_only, e->begin_ms, err);
    if (rc) return rc;
    e->T = T;
    return TMOE_OK;
}

int tmoe_engine_logits(tmoe_engine *e, float *logits, tmoe_error *err) {
    if (!e->T) return tmoe_errorf(err, TMOE_EINVAL, "logits requested before begin");
    return e->vt->logits(e->st, logits, err);
}

int tmoe_engine_moe(tmoe_engine *e, const float *bias, tmoe_moe_metrics *m, tmoe_error *err) {
    if (!e->T) return tmoe_errorf(err, TMOE_EINVAL, "moe step requested before begin");
    tmoe_moe_metrics local = {0};
    if (!m) m = &local;
    tmoe_moe_metrics_reset(m);
    m->tokens = e->T;
    m->num_experts = e->blk->moe.num_experts;
    m->top_k = e->blk->moe.top_k;
    int rc = e->vt->moe(e->st, bias, m, err);
    if (rc) return rc;
    for (int o = 0; o < TMOE_OP_COUNT; o++)
        if (!isnan(e->begin_ms[o])) tmoe_op_ms_add(m->op_ms, (tmoe_op)o, e->begin_ms[o]);
    e->routed = 1;
    return TMOE_OK;
}

int tmoe_engine_output(tmoe_engine *e, float *y, tmoe_error *err) {
    if (!e->routed) return tmoe_errorf(err, TMOE_EINVAL, "output requested before the moe step");
    return e->vt->output(e->st, y, err);
}

int tmoe_engine_forward(tmoe_engine *e, const float *x, int T, int moe_only, const float *bias,
                        float *y, tmoe_moe_metrics *m, tmoe_error *err) {
    int rc = tmoe_engine_begin(e, x, T, moe_only, err);
    if (!rc) rc = tmoe_engine_moe(e, bias, m, err);
    if (!rc) rc = tmoe_engine_output(e, y, err);
    return rc;
}

int tmoe_engine_ep_stats(const tmoe_engine *e, tmoe_ep_stats *out, tmoe_error *err) {
    if (!e->vt->ep_stats)
        return tmoe_errorf(err, TMOE_ENOTSUP, "the %s engine is not expert-parallel", e->vt->name);
    return e->vt->ep_stats(e->st, out);
}
