/* The decoder LM in a run (tmoe_run_config.model_dir): a Hugging Face checkpoint scores
 * windows of real text while one router per MoE layer (same configuration, own state) sets
 * that layer's selection biases from the route hook; quality is the next-token NLL under
 * the strategy and under baseline routing on the same tokens; on the simulated GPU the
 * time and energy are those of experts of the chosen production shape running the trained
 * model's selections (docs/harness.md "The decoder LM"). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thermoe/cost.h"
#include "exp/runner_internal.h"

/* ---- expert shape -------------------------------------------------------------------- */
int tmoe_expert_shape_parse(const char *s, tmoe_expert_shape *out, tmoe_error *err) {
    if (s && !strcmp(s, "trained")) {
        *out = (tmoe_expert_shape){TMOE_SHAPE_TRAINED, 0, 0};
        return TMOE_OK;
    }
    if (s && !strcmp(s, "mixtral")) {
        *out = (tmoe_expert_shape){TMOE_SHAPE_MIXTRAL, 4096, 14336};
        return TMOE_OK;
    }
    char *end;
    long d = s ? strtol(s, &end, 10) : 0, f = 0;
    if (s && end != s && *end == 'x') {
        char *e2;
        f = strtol(end + 1, &e2, 10);
        if (e2 != end + 1 && !*e2 && d > 0 && f > 0 && d <= (1 << 20) && f <= (1 << 20)) {
            *out = (tmoe_expert_shape){TMOE_SHAPE_CUSTOM, (int)d, (int)f};
            return TMOE_OK;
        }
    }
    return tmoe_errorf(err, TMOE_EINVAL,
                       "expert shape '%s': expected trained, mixtral (4096x14336) or DxF "
                       "(d_model x expert size, e.g. 1024x2816, each 1..%d)",
                       s ? s : "", 1 << 20);
}

void tmoe_expert_shape_format(const tmoe_expert_shape *s, char *buf, size_t n) {
    const char *name = s->kind == TMOE_SHAPE_TRAINED   ? "trained "
                       : s->kind == TMOE_SHAPE_MIXTRAL ? "mixtral "
                                                       : "";
    if (s->d_model > 0)
        snprintf(buf, n, "%s%dx%d", name, s->d_model, s->d_ff);
    else
        snprintf(buf, n, "trained");
}

const char *run_backend_name(const run_ctx *r) {
    if (r->lm) return r->lm->gpu ? "cuda" : "cpu";
    return r->eng ? tmoe_engine_backend_name(r->eng) : "";
}

void run_energy_shape(const run_ctx *r, char *buf, size_t n) {
    if (r->lm) {
        snprintf(buf, n, "%s", r->lm->shape_text);
        return;
    }
    /* the random block: the simulated GPU bills the cost model's shape, a real GPU runs the
     * block's own */
    tmoe_cost_meta cm = r->cm ? tmoe_cost_get_meta(r->cm) : (tmoe_cost_meta){0};
    if (r->sim && cm.d_model > 0)
        snprintf(buf, n, "%dx%d", cm.d_model, cm.d_ff);
    else if (r->sim)
        snprintf(buf, n, "the cost model's (unknown)");
    else
        snprintf(buf, n, "%dx%d", r->blk_cfg.d_model, r->blk_cfg.d_ff);
}

/* ---- set-up ------------------------------------------------------------------------- */
int run_lm_config(run_ctx *r, tmoe_error *err) {
    const tmoe_run_config *c = &r->cfg;
    run_lm *lm = tmoe_calloc(1, sizeof *lm, err);
    if (!lm) return TMOE_ENOMEM;
    r->lm = lm;
    tmoe_lm_config mc;
    int rc = tmoe_lm_config_read(c->model_dir, &mc, err);
    if (rc) return tmoe_error_prefix(err, rc, "model %s", c->model_dir);
    if (mc.num_experts > TMOE_MAX_EXPERTS || mc.top_k > TMOE_MAX_TOPK)
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "model %s: %d experts, top-%d: runs take at most %d, top-%d",
                           c->model_dir, mc.num_experts, mc.top_k, TMOE_MAX_EXPERTS, TMOE_MAX_TOPK);
    if (c->ep)
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "--expert-parallel runs the random block only (--model random)");
    /* one type per expert: the list's length (block.num_experts) against the model's */
    if (c->block.expert_types && c->block.num_experts != mc.num_experts)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "--expert-type lists %d types, one per expert, but model %s has %d "
                           "experts",
                           c->block.num_experts, c->model_dir, mc.num_experts);
    /* lower-precision copies: the listed experts (or all) against the model's */
    for (int e = 0; c->copy_given && e < TMOE_MAX_EXPERTS; e++) {
        if (!(c->copy_all ? e < mc.num_experts : c->copy[e])) continue;
        if (e >= mc.num_experts)
            return tmoe_errorf(err, TMOE_EINVAL,
                               "--expert-copy: expert %d, but model %s has %d experts (0..%d)", e,
                               c->model_dir, mc.num_experts, mc.num_experts - 1);
        lm->copy[e] = 1;
        lm->n_copy++;
    }
    r->blk_cfg.num_experts = mc.num_experts;
    r->blk_cfg.top_k = mc.top_k;
    r->blk_cfg.renormalize = mc.norm_topk_prob;
    lm->etype = c->block.expert_type;
    lm->decode = c->lm_decode;
    lm->shape = c->expert_shape;
    if (lm->shape.kind == TMOE_SHAPE_TRAINED)
        lm->shape.d_model = mc.d_model, lm->shape.d_ff = mc.d_ff_expert;
    for (int l = 0, i = 0; l < mc.n_layers; l++) lm->moe_index[l] = mc.moe_layer[l] ? i++ : -1;
    lm->n_moe = tmoe_lm_num_moe_layers(&mc);
    if (lm->n_moe < 1)
        return tmoe_errorf(err, TMOE_EINVAL, "model %s has no MoE layer: nothing to route",
                           c->model_dir);
    return TMOE_OK;
}

/* The route hook of every forward (see lm_pass). */
static int lm_route(void *user, int layer, const float *logits, int T, int E,
                    tmoe_lm_route_out *out, tmoe_error *err);

/* The expert shape against what can bill or measure it. */
static int check_shape(run_ctx *r, tmoe_error *err) {
    run_lm *lm = r->lm;
    char want[64];
    tmoe_expert_shape_format(&lm->shape, want, sizeof want);
    if (!r->sim) {
        /* NVML: the GPU measures the kernels that ran: on the CUDA backend production-shape
         * experts run beside the trained model's own (create_runner); the CPU backend runs
         * only the trained model's */
        tmoe_backend_kind k;
        int rc = tmoe_backend_resolve(r->cfg.backend, &k, err);
        if (rc) return rc;
        if (lm->shape.kind != TMOE_SHAPE_TRAINED && k != TMOE_BACKEND_CUDA) {
            if (r->cfg.expert_shape_given)
                return tmoe_errorf(
                    err, TMOE_ENOTSUP,
                    "--expert-shape %s with real telemetry runs production-size experts on "
                    "the CUDA backend (--backend cuda); use --expert-shape trained, or "
                    "--telemetry sim",
                    want);
            lm->shape =
                (tmoe_expert_shape){TMOE_SHAPE_TRAINED, lm->m->cfg.d_model, lm->m->cfg.d_ff_expert};
            tmoe_log(TMOE_LOG_INFO,
                     "expert shape: trained (%dx%d): on the CPU backend the GPU's energy is "
                     "the trained model's own work (docs/harness.md)",
                     lm->shape.d_model, lm->shape.d_ff);
        }
    } else {
        tmoe_cost_meta cm = tmoe_cost_get_meta(r->cm);
        if (cm.d_model != lm->shape.d_model || cm.d_ff != lm->shape.d_ff)
            return tmoe_errorf(
                err, TMOE_EINVAL,
                "--expert-shape %s: the simulated GPU bills experts from the cost model %s, "
                "measured at %dx%d%s; profile one at %dx%d (thermoe profile --d-model %d "
                "--d-ff %d) and pass it with --kernel-cost-model-json, or choose "
                "--expert-shape %dx%d",
                want, r->cost_path, cm.d_model, cm.d_ff, cm.d_model ? "" : " (unknown)",
                lm->shape.d_model, lm->shape.d_ff, lm->shape.d_model, lm->shape.d_ff, cm.d_model,
                cm.d_ff);
    }
    return TMOE_OK;
}

static int create_runner(run_ctx *r, int max_seqs, int max_len, tmoe_error *err) {
    run_lm *lm = r->lm;
    tmoe_backend_kind k;
    int rc0 = tmoe_backend_resolve(r->cfg.backend, &k, err);
    if (rc0) return rc0;
    if (k == TMOE_BACKEND_CUDA && r->blk_cfg.expert_types)
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "one type per expert (--expert-type with a list) runs the decoder LM "
                           "on the CPU: use --backend cpu");
    if (k == TMOE_BACKEND_CUDA) {
        tmoe_cuda_lm_config cc = {.device_id = r->cfg.device_id,
                                  .max_tokens = r->max_tokens,
                                  .max_seqs = max_seqs,
                                  .max_len = max_len,
                                  .use_graphs = 0,
                                  .route = lm_route,
                                  .route_user = r};
        if (!r->sim && lm->shape.kind != TMOE_SHAPE_TRAINED) {
            cc.shadow_d_model = lm->shape.d_model;
            cc.shadow_d_ff = lm->shape.d_ff;
            cc.shadow_type = lm->etype;
            cc.shadow_group = r->cfg.block.group_size;
        }
        int rc = tmoe_cuda_lm_create(lm->m, &cc, &lm->gpu, err);
        if (!rc && cc.shadow_d_model > 0)
            tmoe_log(TMOE_LOG_INFO,
                     "expert shape %s: %d set(s) of %d %s experts (%.2f GB) run each MoE "
                     "layer's selections beside the trained model's (docs/harness.md)",
                     lm->shape_text, tmoe_cuda_lm_shadow_sets(lm->gpu), lm->m->cfg.num_experts,
                     tmoe_etype_name(lm->etype), (double)tmoe_cuda_lm_shadow_bytes(lm->gpu) / 1e9);
        return rc;
    }
    tmoe_cpu_lm_config cc = {
        .max_tokens = r->max_tokens, .impl = r->cfg.impl, .route = lm_route, .route_user = r};
    int rc = tmoe_kv_cache_create(&lm->m->cfg, max_seqs, max_len, &lm->kv, err);
    if (!rc) rc = tmoe_cpu_lm_create(lm->m, &cc, &lm->cpu, err);
    return rc;
}

int run_lm_init(run_ctx *r, tmoe_error *err) {
    run_lm *lm = r->lm;
    const tmoe_run_config *c = &r->cfg;
    const char *tpath = c->tokens_path ? c->tokens_path : tmoe_run_default_tokens();
    int rc = tmoe_tokens_read(tpath, &lm->tok, err);
    if (rc) return tmoe_error_prefix(err, rc, "the run's text");
    tmoe_lm_load_opts lo = tmoe_lm_load_opts_default();
    lo.experts_f32 = 0;
    lo.expert_type = lm->etype;
    if (r->blk_cfg.expert_types) {
        lo.n_types = r->blk_cfg.num_experts;
        memcpy(lo.types, r->blk_cfg.expert_types, sizeof(tmoe_etype) * (size_t)lo.n_types);
    }
    lo.group_size = c->block.group_size;
    lo.act8 = c->act8;
    lo.n_copy = lm->n_copy;
    memcpy(lo.copy, lm->copy, sizeof lo.copy);
    lo.copy_type = c->copy_type;
    rc = tmoe_lm_load(c->model_dir, &lo, &lm->m, err);
    if (rc) return tmoe_error_prefix(err, rc, "loading model %s", c->model_dir);
    const tmoe_lm_config *mc = &lm->m->cfg;
    if (lm->tok.vocab_size != mc->vocab_size)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "token file %s has a vocabulary of %d (header[3]) but model %s has "
                           "vocab_size %d: the text was tokenized for another model (make its "
                           "token file with tools/tokenize.py --model %s)",
                           tpath, lm->tok.vocab_size, c->model_dir, mc->vocab_size, c->model_dir);
    if ((rc = tmoe_text_open(tpath, &lm->tok, &lm->text, err))) return rc;
    if ((rc = check_shape(r, err))) return rc;
    tmoe_expert_shape_format(&lm->shape, lm->shape_text, sizeof lm->shape_text);
    int max_seqs = 1, max_len = 1;
    for (int w = 0; w < TMOE_WL_COUNT; w++) {
        if (!c->workloads[w]) continue;
        if (r->wl[w].n_seqs > max_seqs) max_seqs = r->wl[w].n_seqs;
        if (r->wl[w].seq_len > max_len) max_len = r->wl[w].seq_len;
    }
    if (lm->kv_seqs > 0) max_seqs = lm->kv_seqs; /* the serving replay's cache */
    if (lm->kv_len > 0) max_len = lm->kv_len;
    if (max_len < 2)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "--seq-len: windows of %d token score nothing (at least 2)", max_len);
    if (max_len > mc->max_positions)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "windows of %d tokens (--seq-len, doubled by high_complexity) exceed "
                           "model %s's max_position_embeddings %d",
                           max_len, c->model_dir, mc->max_positions);
    if ((rc = create_runner(r, max_seqs, max_len, err)))
        return tmoe_error_prefix(err, rc, "starting the decoder LM");
    size_t T = (size_t)r->max_tokens, V = (size_t)mc->vocab_size, E = (size_t)mc->num_experts;
    size_t k = (size_t)mc->top_k, nm = (size_t)lm->n_moe;
    lm->ids = tmoe_malloc(sizeof(uint32_t) * T, err);
    lm->logits = tmoe_malloc(sizeof(float) * T * V, err);
    lm->logits0 = tmoe_malloc(sizeof(float) * T * V, err);
    lm->nll = tmoe_malloc(sizeof(double) * (size_t)max_len, err);
    lm->bias = tmoe_calloc(nm * E, sizeof(float), err);
    lm->idx = tmoe_malloc(sizeof(int32_t) * T * k, err);
    lm->idx0 = tmoe_malloc(sizeof(int32_t) * T * k, err);
    lm->w = tmoe_malloc(sizeof(float) * T * k, err);
    lm->counts = tmoe_calloc(nm * E, sizeof(int32_t), err);
    lm->step_counts = tmoe_calloc((size_t)max_len * nm * E, sizeof(int32_t), err);
    lm->sum_counts = tmoe_calloc(nm * E, sizeof(int32_t), err);
    lm->step_ids = tmoe_malloc(sizeof(uint32_t) * (size_t)max_seqs, err);
    lm->step_logits = tmoe_malloc(sizeof(float) * (size_t)max_seqs * V, err);
    lm->use_copy = tmoe_calloc(nm * E, 1, err);
    lm->step_use_copy = tmoe_calloc((size_t)max_len * nm * E, 1, err);
    if (!lm->ids || !lm->logits || !lm->logits0 || !lm->nll || !lm->bias || !lm->idx || !lm->idx0 ||
        !lm->w || !lm->counts || !lm->step_counts || !lm->sum_counts || !lm->step_ids ||
        !lm->step_logits || !lm->use_copy || !lm->step_use_copy)
        return TMOE_ENOMEM;
    /* the routers' expert costs: the cost model at every token count */
    tmoe_etype types[TMOE_MAX_EXPERTS];
    for (size_t e = 0; e < E; e++) types[e] = tmoe_block_expert_type(&r->blk_cfg, (int)e);
    rc = tmoe_cost_table_create(r->cm, types, (int)E, c->impl, r->max_tokens, &r->cost_tab, err);
    if (rc) return rc;
    r->provider = tmoe_cost_table_provider(r->cost_tab);
    if (lm->n_copy) { /* the copies' costs, expert e standing for e's copy */
        for (size_t e = 0; e < E; e++) types[e] = c->copy_type;
        rc =
            tmoe_cost_table_create(r->cm, types, (int)E, c->impl, r->max_tokens, &r->copy_tab, err);
        if (rc) return tmoe_error_prefix(err, rc, "the copies' costs");
        r->copy_provider = tmoe_cost_table_provider(r->copy_tab);
    }
    return TMOE_OK;
}

void run_lm_free(run_ctx *r) {
    run_lm *lm = r->lm;
    if (!lm) return;
    for (int i = 0; i < lm->n_moe; i++) tmoe_router_free(lm->routers[i]);
    tmoe_cpu_lm_free(lm->cpu);
    tmoe_kv_cache_free(lm->kv);
    tmoe_cuda_lm_free(lm->gpu);
    tmoe_lm_free(lm->m);
    tmoe_tokens_free(&lm->tok);
    free(lm->prof);
    free(lm->ids);
    free(lm->logits);
    free(lm->logits0);
    free(lm->nll);
    free(lm->bias);
    free(lm->idx);
    free(lm->idx0);
    free(lm->w);
    free(lm->counts);
    free(lm->step_counts);
    free(lm->sum_counts);
    free(lm->step_ids);
    free(lm->step_logits);
    free(lm->use_copy);
    free(lm->step_use_copy);
    free(lm);
    r->lm = NULL;
}

/* ---- one forward ---------------------------------------------------------------------- */
static int lm_route(void *user, int layer, const float *logits, int T, int E,
                    tmoe_lm_route_out *out, tmoe_error *err) {
    run_ctx *r = user;
    float *bias = out->bias;
    run_lm *lm = r->lm;
    int mi = lm->moe_index[layer], k = lm->m->cfg.top_k, renorm = lm->m->cfg.norm_topk_prob;
    if (mi < 0) return TMOE_OK;
    memset(lm->use_copy + (size_t)mi * E, 0, (size_t)E); /* set below where a router runs one */
    if (lm->pass == LM_PASS_BASELINE) return TMOE_OK;    /* no biases: baseline routing */
    if (lm->pass == LM_PASS_PROFILE) {
        if (lm->prof_fill[mi] + T > lm->prof_cap)
            return tmoe_errorf(err, TMOE_EINVAL, "internal: profile of %d rows is full",
                               lm->prof_cap);
        memcpy(lm->prof + ((size_t)mi * lm->prof_cap + (size_t)lm->prof_fill[mi]) * E, logits,
               sizeof(float) * (size_t)T * E);
        lm->prof_fill[mi] += T;
        return TMOE_OK;
    }
    tmoe_router *rt = lm->routers[mi];
    int64_t h0 = tmoe_now_ns();
    /* the unbiased selection: the router's current load and the agreement's reference */
    tmoe_gate_topk(logits, NULL, T, E, k, renorm, 0, lm->idx0, NULL);
    tmoe_route_strategy st = tmoe_router_get_config(rt)->strategy;
    int explicit_sel = tmoe_route_strategy_is_comparison(st);
    int rc =
        explicit_sel
            ? tmoe_router_route_explicit(rt, logits, T, renorm, &lm->hs, lm->idx, lm->w, NULL, err)
            : tmoe_router_route(rt, logits, T, lm->idx0, &lm->hs, bias, NULL, NULL, err);
    if (rc)
        return tmoe_error_prefix(err, rc, "router %s, layer %d", tmoe_route_strategy_name(st),
                                 layer);
    if (explicit_sel) { /* the decoder runs this selection as it is (padded slots at weight 0) */
        memcpy(out->idx, lm->idx, sizeof(int32_t) * (size_t)T * k);
        memcpy(out->w, lm->w, sizeof(float) * (size_t)T * k);
        out->selected = 1;
    } else { /* what the decoder runs with these biases (it selects through tmoe_gate_topk) */
        tmoe_gate_topk(logits, bias, T, E, k, renorm, 0, lm->idx, NULL);
    }
    double pe = NAN;
    /* the weights matter to what ran only where the router padded slots at weight 0 */
    rc = tmoe_router_observe(rt, lm->idx, explicit_sel ? lm->w : NULL, T, &pe, err);
    if (rc) return tmoe_error_prefix(err, rc, "router of layer %d", layer);
    lm->route_ms += (double)(tmoe_now_ns() - h0) / 1e6;
    lm->pred_energy_j += pe;
    double g = explicit_sel ? NAN : tmoe_router_budget_tightness(rt);
    if (isfinite(g)) lm->g_sum += g, lm->g_n++;
    /* agreement: a token's distinct experts (a padded slot repeats one) in its baseline top-k */
    long same = 0;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < k; i++) {
            int32_t e = lm->idx[t * k + i];
            int dup = 0, hit = 0;
            for (int j = 0; j < i; j++) dup |= lm->idx[t * k + j] == e;
            for (int j = 0; j < k && !dup; j++) hit |= lm->idx0[t * k + j] == e;
            same += hit;
        }
    lm->agree_sum += (double)same / ((double)T * k);
    lm->rc_layers++;
    int32_t *cnt = lm->counts + (size_t)mi * E;
    memset(cnt, 0, sizeof(int32_t) * (size_t)E);
    for (int i = 0; i < T * k; i++) /* a padded slot (weight 0) is not run by the decoders */
        if (!explicit_sel || lm->w[i] != 0.0f) cnt[lm->idx[i]]++;
    unsigned char *uc = lm->use_copy + (size_t)mi * E;
    if (lm->n_copy && tmoe_router_last_copies(rt, uc) > 0) {
        if (!out->use_copy)
            return tmoe_errorf(err, TMOE_ENOTSUP,
                               "layer %d: this decoder runs no lower-precision copies", layer);
        memcpy(out->use_copy, uc, (size_t)E);
    }
    for (int e = 0; e < E; e++) lm->copy_all += cnt[e], lm->copy_on += uc[e] ? cnt[e] : 0;
    memcpy(lm->bias + (size_t)mi * E, bias, sizeof(float) * (size_t)E);
    return TMOE_OK;
}

int run_lm_engine_step(run_lm *lm, const tmoe_lm_batch *b, float *logits, tmoe_error *err) {
    return lm->gpu ? tmoe_cuda_lm_forward(lm->gpu, b, logits, err)
                   : tmoe_cpu_lm_forward(lm->cpu, lm->kv, b, logits, err);
}

int run_lm_seq_open(run_lm *lm, int *slot, tmoe_error *err) {
    return lm->gpu ? tmoe_cuda_lm_seq_open(lm->gpu, slot, err)
                   : tmoe_kv_seq_open(lm->kv, slot, err);
}

void run_lm_seq_close(run_lm *lm, int slot) {
    if (lm->gpu)
        tmoe_cuda_lm_seq_close(lm->gpu, slot);
    else
        tmoe_kv_seq_close(lm->kv, slot);
}

/* After a strategy step: the selections the hooks computed must be the ones the decoder ran;
 * keep them as step `s`. */
int run_lm_step_done(run_lm *lm, int s, tmoe_error *err) {
    int E = lm->m->cfg.num_experts;
    size_t n = (size_t)lm->n_moe * E;
    const int32_t *ran =
        lm->gpu ? tmoe_cuda_lm_expert_counts(lm->gpu) : tmoe_cpu_lm_expert_counts(lm->cpu);
    const int32_t *ran_copy = lm->cpu ? tmoe_cpu_lm_copy_counts(lm->cpu) : NULL;
    for (int l = 0; ran && l < lm->m->cfg.n_layers; l++) {
        int mi = lm->moe_index[l];
        for (int e = 0; mi >= 0 && e < E; e++) {
            int32_t want = lm->counts[(size_t)mi * E + e];
            if (ran[(size_t)l * E + e] != want)
                return tmoe_errorf(err, TMOE_EINVAL,
                                   "internal: step %d, layer %d expert %d ran %d token copies, "
                                   "the router's selection has %d",
                                   s, l, e, ran[(size_t)l * E + e], want);
            int32_t want_c = lm->use_copy[(size_t)mi * E + e] ? want : 0;
            if (ran_copy && ran_copy[(size_t)l * E + e] != want_c)
                return tmoe_errorf(err, TMOE_EINVAL,
                                   "internal: step %d, layer %d expert %d's copy ran %d token "
                                   "copies, the router asked for %d",
                                   s, l, e, ran_copy[(size_t)l * E + e], want_c);
        }
    }
    if (s == 0) memset(lm->sum_counts, 0, sizeof(int32_t) * n); /* a new forward */
    memcpy(lm->step_counts + (size_t)s * n, lm->counts, sizeof(int32_t) * n);
    memcpy(lm->step_use_copy + (size_t)s * n, lm->use_copy, n);
    for (size_t i = 0; i < n; i++) lm->sum_counts[i] += lm->counts[i];
    lm->nsteps = s + 1;
    return TMOE_OK;
}

double run_lm_active_experts(const run_lm *lm) {
    int E = lm->m->cfg.num_experts;
    long active = 0;
    for (size_t i = 0; i < (size_t)lm->nsteps * lm->n_moe * E; i++)
        active += lm->step_counts[i] > 0;
    return lm->nsteps && lm->n_moe ? (double)active / lm->nsteps / lm->n_moe : NAN;
}

/* Run the batch in lm->ids (nseq windows of seq_len) into logits (T, V): one forward of every
 * window (prefill), or seq_len steps of one position per window (decode), each step through
 * the route hooks on its own. */
static int lm_forward(run_ctx *r, float *logits, tmoe_error *err) {
    run_lm *lm = r->lm;
    int32_t slots[4 * 4096], n_new[4 * 4096];
    int n = lm->nseq, L = lm->seq_len, rc = TMOE_OK, opened = 0;
    size_t V = (size_t)lm->m->cfg.vocab_size;
    if (n > (int)(sizeof slots / sizeof *slots))
        return tmoe_errorf(err, TMOE_EINVAL, "%d sequences in a batch: at most %zu", n,
                           sizeof slots / sizeof *slots);
    int strategy = lm->pass == LM_PASS_STRATEGY;
    for (; opened < n && !rc; opened++) {
        rc = run_lm_seq_open(lm, &slots[opened], err);
        n_new[opened] = lm->decode ? 1 : L;
        if (rc) break;
    }
    if (!rc && !lm->decode) {
        tmoe_lm_batch b = {n, slots, n_new, lm->ids, 1};
        rc = run_lm_engine_step(lm, &b, logits, err);
        if (!rc && strategy) rc = run_lm_step_done(lm, 0, err);
    }
    for (int t = 0; lm->decode && !rc && t < L; t++) {
        for (int s = 0; s < n; s++) lm->step_ids[s] = lm->ids[(size_t)s * L + t];
        tmoe_lm_batch b = {n, slots, n_new, lm->step_ids, 0};
        rc = run_lm_engine_step(lm, &b, lm->step_logits, err);
        for (int s = 0; s < n && !rc; s++)
            memcpy(logits + ((size_t)s * L + t) * V, lm->step_logits + (size_t)s * V,
                   sizeof(float) * V);
        if (!rc && strategy) rc = run_lm_step_done(lm, t, err);
    }
    for (int i = 0; i < opened; i++) run_lm_seq_close(lm, slots[i]);
    return rc;
}

int run_lm_fill(run_ctx *r, const run_combo *c, int sample, batch_out *o, tmoe_error *err) {
    run_lm *lm = r->lm;
    const tmoe_workload *w = &r->wl[c->wl];
    lm->nseq = w->n_seqs;
    lm->seq_len = w->seq_len;
    o->tokens = w->tokens;
    /* each repeat scores windows of its own (repeat 0 those of the workload's seed), so the
     * repeats, the unit of the perplexity change, are independent samples of the text as
     * well as of the hardware; every strategy of a repeat sees the same windows */
    tmoe_workload wr = *w;
    if (c->repeat > 0) wr.seed = w->seed + (uint64_t)c->repeat * 0x9e3779b97f4a7c15ull;
    return tmoe_text_batch(&wr, &lm->text, sample, r->cfg.num_samples, 0, lm->ids, err);
}

int run_lm_forward(run_ctx *r, const run_combo *c, batch_out *o, tmoe_error *err) {
    run_lm *lm = r->lm;
    (void)c;
    int rc = run_update_finish(r, err); /* the previous batch's update and row */
    if (rc) return rc;
    lm->hs = run_hw_snapshot(r, r->cfg.router.horizon_s);
    lm->pass = LM_PASS_STRATEGY;
    lm->T = o->tokens;
    lm->route_ms = lm->pred_energy_j = lm->agree_sum = lm->g_sum = 0.0;
    lm->rc_layers = lm->g_n = 0;
    lm->copy_on = lm->copy_all = 0;
    int E = lm->m->cfg.num_experts;
    memset(lm->bias, 0, sizeof(float) * (size_t)lm->n_moe * E);
    int64_t m0 = tmoe_monitor_now_ns(r->mon); /* the run's one clock (the trace's) */
    int64_t t0 = tmoe_now_ns();
    rc = lm_forward(r, lm->logits, err);
    if (rc) return rc;
    double step_ms = (double)(tmoe_now_ns() - t0) / 1e6;
    if (lm->rc_layers != lm->n_moe * lm->nsteps)
        return tmoe_errorf(err, TMOE_EINVAL, "internal: %d of %d MoE layer steps were routed",
                           lm->rc_layers, lm->n_moe * lm->nsteps);
    tmoe_moe_metrics_reset(&o->m);
    o->m.tokens = o->tokens;
    o->m.num_experts = E;
    o->m.top_k = lm->m->cfg.top_k;
    for (int mi = 0; mi < lm->n_moe; mi++)
        for (int e = 0; e < E; e++) o->m.tokens_per_expert[e] += lm->sum_counts[(size_t)mi * E + e];
    o->m.step_ms = step_ms;
    o->m.predicted_energy_j = lm->pred_energy_j;
    o->pred_energy_j = lm->pred_energy_j;
    o->router_ms = lm->route_ms;
    o->observe_ms = 0.0; /* inside route_ms: the hooks observe as they route */
    o->host_ts_us = (double)(m0 - r->t0_ns) / 1e3;
    o->bias = lm->bias;
    o->bias_n = lm->n_moe * E;
    o->layer_counts = lm->sum_counts;
    o->topk_agreement = lm->agree_sum / lm->rc_layers;
    o->budget_g = lm->g_n ? lm->g_sum / lm->g_n : NAN;
    o->active_experts = run_lm_active_experts(lm);
    o->copy_share = lm->n_copy && lm->copy_all ? (double)lm->copy_on / (double)lm->copy_all : NAN;
    return TMOE_OK;
}

int run_lm_bill(run_ctx *r, const batch_out *o, batch_hw *hw, tmoe_error *err) {
    run_lm *lm = r->lm;
    int nd = r->ndev > 0 ? r->ndev : 1, E = lm->m->cfg.num_experts;
    /* each engine step on its own: decode steps of nseq tokens, or the one prefill forward */
    int T = lm->decode ? lm->nseq : o->tokens;
    double tot_busy[TMOE_ROUTE_MAX_DEVICES] = {0}, tot_dyn[TMOE_ROUTE_MAX_DEVICES] = {0};
    for (int op = 0; op < TMOE_OP_COUNT; op++) hw->op_ms[op] = NAN;
    for (int e = 0; e < E; e++) hw->expert_ms[e] = 0.0;
    /* the MoE layer's own ops; attention, norms, embedding and LM head are not billed */
    static const tmoe_op moe_ops[] = {TMOE_OP_GATE_LINEAR, TMOE_OP_GATE_TOPK, TMOE_OP_PERMUTE,
                                      TMOE_OP_COMBINE};
    double lat = 0.0;
    for (int st = 0; st < lm->nsteps; st++)
        for (int mi = 0; mi < lm->n_moe; mi++) {
            const int32_t *cnt = lm->step_counts + ((size_t)st * lm->n_moe + mi) * E;
            const unsigned char *uc = lm->step_use_copy + ((size_t)st * lm->n_moe + mi) * E;
            double busy[TMOE_ROUTE_MAX_DEVICES] = {0}, dyn[TMOE_ROUTE_MAX_DEVICES] = {0};
            for (size_t i = 0; i < sizeof moe_ops / sizeof *moe_ops; i++) {
                tmoe_op op = moe_ops[i];
                if (!r->billed[op]) continue;
                tmoe_cost_value v;
                int rc = tmoe_cost_lookup(r->cm, op, TMOE_ET_FP16, TMOE_IMPL_FUSED, T, &v, err);
                if (rc) return rc;
                busy[0] += v.latency_ms;
                dyn[0] += v.energy_dynamic_j;
                hw->op_ms[op] = isnan(hw->op_ms[op]) ? v.latency_ms : hw->op_ms[op] + v.latency_ms;
            }
            for (int e = 0; e < E; e++) {
                int n = cnt[e], dev = r->placement.device[e];
                if (n == 0) continue;
                tmoe_etype t = uc[e] ? r->cfg.copy_type : tmoe_block_expert_type(&r->blk_cfg, e);
                int rc = run_bill_expert(r, e, t, r->cfg.impl, n, &busy[dev], &dyn[dev], hw, err);
                if (rc) return rc;
            }
            /* the layers run one after another: each waits for every device of the one before */
            double layer = 0.0;
            for (int d = 0; d < nd; d++) {
                if (busy[d] <= 0.0) continue;
                int rc = tmoe_meter_bill(r->meter, d, busy[d] / 1e3, fmax(dyn[d], 0.0), 0.85);
                if (rc)
                    return tmoe_errorf(err, rc, "device %d: %.3g ms of work could not be billed", d,
                                       busy[d]);
                tot_busy[d] += busy[d] / 1e3;
                tot_dyn[d] += fmax(dyn[d], 0.0);
                if (busy[d] > layer) layer = busy[d];
            }
            tmoe_meter_sync(r->meter);
            lat += layer;
        }
    for (int d = 0; d < nd; d++) r->bill_busy_s[d] = tot_busy[d], r->bill_dyn_j[d] = tot_dyn[d];
    hw->latency_ms = lat;
    return TMOE_OK;
}

/* Mean next-token NLL of the batch's windows under logits (T, V). */
static double batch_nll(run_lm *lm, const float *logits, int *scored) {
    int L = lm->seq_len, V = lm->m->cfg.vocab_size;
    double sum = 0.0;
    for (int s = 0; s < lm->nseq; s++) {
        tmoe_lm_nll(logits + (size_t)s * L * V, lm->ids + (size_t)s * L + 1, L - 1, V, lm->nll);
        for (int t = 0; t < L - 1; t++) sum += lm->nll[t];
    }
    *scored = lm->nseq * (L - 1);
    return sum / *scored;
}

int run_lm_quality(run_ctx *r, const run_combo *c, batch_out *o, tmoe_error *err) {
    run_lm *lm = r->lm;
    o->nll = batch_nll(lm, lm->logits, &o->tokens_scored);
    /* plain baseline: the forward that ran is baseline routing, so nll_baseline = nll. On real
     * hardware the next batch's energy window opens right after this, so plain baseline still
     * runs the same second forward and the same host work on its logits as every other
     * strategy: the power that forward's tail and the idle gap of that work leave in the next
     * window are the same for all (docs/harness.md). Its nll_baseline and rel_error are then
     * measured too: equal to nll and 0 where the forward is deterministic. */
    int plain = c->st == TMOE_ROUTE_BASELINE && !r->cfg.load_balancer;
    if (plain && r->sim) {
        o->nll_base = o->nll;
        o->rel_error = 0.0;
        return TMOE_OK;
    }
    lm->pass = LM_PASS_BASELINE;
    int rc = lm_forward(r, lm->logits0, err);
    lm->pass = LM_PASS_STRATEGY;
    if (rc) return tmoe_error_prefix(err, rc, "baseline forward");
    int scored;
    o->nll_base = batch_nll(lm, lm->logits0, &scored);
    size_t n = (size_t)o->tokens * lm->m->cfg.vocab_size;
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)lm->logits[i] - lm->logits0[i];
        num += d * d;
        den += (double)lm->logits0[i] * lm->logits0[i];
    }
    o->rel_error = den > 0.0 ? sqrt(num / den) : (num > 0.0 ? INFINITY : 0.0);
    return TMOE_OK;
}

/* ---- routers --------------------------------------------------------------------------- */
/* static_optimal: each layer's biases fitted on the gate logits of calibration windows
 * (slots never scored) of the workload, run with baseline routing; expert_prune counts each
 * layer's expert uses on the same windows (tmoe_router_fit_static does either). */
static int fit_static(run_ctx *r, tmoe_workload_kind wk, tmoe_error *err) {
    run_lm *lm = r->lm;
    const tmoe_workload *w = &r->wl[wk];
    int nprof = r->cfg.num_samples < 4 ? r->cfg.num_samples : 4, E = lm->m->cfg.num_experts;
    int cap = nprof * w->tokens;
    if (cap > lm->prof_cap) {
        free(lm->prof);
        lm->prof = tmoe_malloc(sizeof(float) * (size_t)lm->n_moe * cap * E, err);
        if (!lm->prof) return TMOE_ENOMEM;
        lm->prof_cap = cap;
    }
    lm->prof_rows = 0;
    memset(lm->prof_fill, 0, sizeof lm->prof_fill);
    lm->pass = LM_PASS_PROFILE;
    lm->nseq = w->n_seqs;
    lm->seq_len = w->seq_len;
    int rc = TMOE_OK;
    for (int i = 0; i < nprof && !rc; i++) {
        rc = tmoe_text_batch(w, &lm->text, i, nprof, 1, lm->ids, err);
        if (!rc) rc = lm_forward(r, lm->logits0, err);
    }
    lm->prof_rows = lm->prof_fill[0];
    lm->pass = LM_PASS_STRATEGY;
    int batch = lm->decode ? w->n_seqs : w->tokens; /* what one routing decision sees */
    for (int mi = 0; mi < lm->n_moe && !rc; mi++) {
        double kl = NAN;
        rc = tmoe_router_fit_static(lm->routers[mi], lm->prof + (size_t)mi * lm->prof_cap * E,
                                    lm->prof_rows, batch, &kl, err);
        if (!rc && !isnan(kl))
            tmoe_log(TMOE_LOG_INFO, "static_optimal on %s, MoE layer %d: expected KL %.4g nats",
                     tmoe_workload_name(wk), mi, kl);
    }
    return rc ? tmoe_error_prefix(err, rc, "fitting on the calibration windows") : TMOE_OK;
}

int run_lm_make_routers(run_ctx *r, tmoe_route_strategy st, tmoe_workload_kind wl, uint64_t seed,
                        tmoe_error *err) {
    run_lm *lm = r->lm;
    for (int i = 0; i < lm->n_moe; i++) {
        tmoe_router_free(lm->routers[i]);
        lm->routers[i] = NULL;
    }
    tmoe_router_config rc = r->cfg.router;
    rc.strategy = st;
    rc.num_experts = lm->m->cfg.num_experts;
    rc.top_k = lm->m->cfg.top_k;
    rc.max_tokens = r->max_tokens;
    rc.latency_base_ms = r->base_latency_ms[wl];
    rc.throughput_base = r->base_throughput[wl];
    rc.num_devices = r->ndev;
    rc.expert_device = r->expert_dev;
    rc.lb_enabled = r->cfg.load_balancer;
    rc.observe_selection = 1; /* the hook selects and reports it */
    if (lm->n_copy) {
        rc.expert_copy = lm->copy;
        rc.copy_cost = &r->copy_provider;
    }
    for (int i = 0; i < lm->n_moe; i++) {
        rc.seed = seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(i + 1)); /* each layer its own */
        int c = tmoe_router_create(&rc, &r->provider, &lm->routers[i], err);
        if (c)
            return tmoe_error_prefix(err, c, "creating router %s for MoE layer %d",
                                     tmoe_route_strategy_name(st), i);
        if (st == TMOE_ROUTE_KERNEL_AWARE_TTHA && r->cfg.ttha_warm_start) {
            c = tmoe_router_ttha_load(lm->routers[i], r->cfg.ttha_warm_start, err);
            if (c) return tmoe_error_prefix(err, c, "TTHA warm start, MoE layer %d", i);
        }
    }
    return st == TMOE_ROUTE_STATIC_OPTIMAL || st == TMOE_ROUTE_EXPERT_PRUNE ? fit_static(r, wl, err)
                                                                            : TMOE_OK;
}

int run_router_update(run_ctx *r, const tmoe_route_obs *obs, tmoe_ttha_record *rec,
                      tmoe_error *err) {
    if (!r->lm) return tmoe_router_update(r->router, obs, rec, err);
    run_lm *lm = r->lm;
    tmoe_ttha_record sum = {0};
    for (int i = 0; i < lm->n_moe; i++) {
        tmoe_ttha_record one;
        int rc = tmoe_router_update(lm->routers[i], obs, &one, err);
        if (rc) return tmoe_error_prefix(err, rc, "MoE layer %d", i);
        sum.step = one.step;
        sum.power_loss += one.power_loss;
        sum.temp_loss += one.temp_loss;
        sum.latency_penalty += one.latency_penalty;
        sum.throughput_bonus += one.throughput_bonus;
        sum.fidelity += one.fidelity;
        sum.total += one.total;
        sum.lr += one.lr;
        sum.grad_norm += one.grad_norm;
        sum.pred_energy_j += one.pred_energy_j;
    }
    double n = lm->n_moe;
    *rec = (tmoe_ttha_record){.step = sum.step,
                              .power_loss = sum.power_loss / n,
                              .temp_loss = sum.temp_loss / n,
                              .latency_penalty = sum.latency_penalty / n,
                              .throughput_bonus = sum.throughput_bonus / n,
                              .fidelity = sum.fidelity / n,
                              .total = sum.total / n,
                              .lr = sum.lr / n,
                              .grad_norm = sum.grad_norm / n,
                              .pred_energy_j = sum.pred_energy_j / n,
                              .biases = NULL};
    return TMOE_OK;
}
