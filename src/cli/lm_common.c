/* Shared pieces of the LM subcommands: model flags, loading, the architecture summary and
 * the per-layer routing hook (cli_lm.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_lm.h"
#include "thermoe/cost.h"

cli_lm_opts cli_lm_opts_default(void) {
    cli_lm_opts o = {.model = NULL,
                     .load = tmoe_lm_load_opts_default(),
                     .impl = TMOE_IMPL_FUSED,
                     .backend = TMOE_BACKEND_AUTO};
    return o;
}

int cli_lm_flag(const char *cmd, int code, const char *arg, cli_lm_opts *o) {
    long v;
    switch (code) {
    case CLI_LM_MODEL: o->model = arg; return 0;
    case CLI_LM_EXPERT_TYPE:
        if (strcmp(arg, "fp32") == 0) {
            o->load.experts_f32 = 1;
            return 0;
        }
        o->load.experts_f32 = 0;
        o->load.n_types = 0;
        if (strchr(arg, ',')) /* one type per expert; its count is checked at load */
            return cli_expert_type_list(cmd, arg, o->load.types, &o->load.n_types) ? 2 : 0;
        if (tmoe_etype_parse(arg, &o->load.expert_type))
            return cli_usage_fail(
                cmd, "--expert-type: unknown type '%s' (expected fp32, fp16, bf16, q4 or q2)", arg);
        return 0;
    case CLI_LM_GROUP:
        if (cli_int(cmd, "group-size", arg, 1, 1 << 20, &v)) return 2;
        o->load.group_size = (int)v;
        return 0;
    case CLI_LM_IMPL:
        if (tmoe_impl_parse(arg, &o->impl))
            return cli_usage_fail(cmd, "--impl: unknown impl '%s' (expected fused or unfused)",
                                  arg);
        return 0;
    case CLI_LM_BACKEND: return cli_backend_flag(cmd, arg, &o->backend) ? 2 : 0;
    case CLI_LM_ACT8: return cli_act8_flag(cmd, arg, &o->load.act8) ? 2 : 0;
    default: return -1;
    }
}

void cli_lm_help(const cli_lm_opts *d) {
    printf("model:\n"
           "  --model DIR        Hugging Face model directory: config.json and model.safetensors\n"
           "                     or model.safetensors.index.json + shards (required;\n"
           "                     mixtral, olmoe, qwen2_moe, qwen3_moe; docs/models.md)\n"
           "  --expert-type T    experts as fp32 (the reference numerics), fp16, bf16 (a bf16\n"
           "                     checkpoint's expert tensors kept bit for bit; cpu backend\n"
           "                     only for now), q4 or q2 (quantized at load) (default %s);\n"
           "                     or one type per expert, fp16 / q4 / q2 (fp16,q4,...: as\n"
           "                     many as the model has experts, every MoE layer alike;\n"
           "                     cpu backend)\n"
           "  --group-size G     q4/q2 group along the input dim; must divide hidden_size and\n"
           "                     the expert size (default %d)\n"
           "  --impl I           q4/q2 experts: fused or unfused (default %s)\n"
           "  --expert-activations A  q4/q2 experts, fused: fp16, or int8 (quantized per\n"
           "                     block of 32 values; integer dot products on the GPU at one\n"
           "                     token an expert, the fp16 mma above; every linear on the\n"
           "                     CPU) (default %s)\n"
           "  --backend B        auto, cpu or cuda (default %s; auto: cuda when a CUDA device\n"
           "                     answers, else cpu)\n",
           d->load.experts_f32 ? "fp32" : tmoe_etype_name(d->load.expert_type), d->load.group_size,
           tmoe_impl_name(d->impl), d->load.act8 ? "int8" : "fp16",
           tmoe_backend_kind_name(d->backend));
}

int cli_lm_load(const char *cmd, const cli_lm_opts *o, tmoe_lm **out) {
    *out = NULL;
    if (!o->model)
        return cli_usage_fail(cmd, "--model DIR is required (a Hugging Face model directory)");
    tmoe_error err = {0};
    if (tmoe_lm_load(o->model, &o->load, out, &err)) return cli_fail_err(cmd, &err);
    return 0;
}

const char *cli_lm_type_text(const tmoe_lm *m, char *buf, size_t n) {
    if (m->opts.experts_f32) return "fp32";
    if (m->opts.n_types <= 0) return tmoe_etype_name(m->opts.expert_type);
    size_t used = 0;
    buf[0] = 0;
    for (int e = 0; e < m->opts.n_types && used < n; e++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", e ? "," : "",
                                 tmoe_etype_name(m->opts.types[e]));
    return buf;
}

static const char *qk_norm_name(tmoe_qk_norm q) {
    return q == TMOE_QK_NORM_WHOLE      ? "RMSNorm over the whole q / k projection"
           : q == TMOE_QK_NORM_PER_HEAD ? "RMSNorm per head"
                                        : "none";
}

static void print_layers(FILE *f, const tmoe_lm_config *c) {
    fprintf(f, "layers       %d:", c->n_layers);
    for (int l = 0; l < c->n_layers && l < 64; l++) fputs(c->moe_layer[l] ? " M" : " D", f);
    fprintf(f, "%s  (M = MoE, D = dense MLP)\n", c->n_layers > 64 ? " ..." : "");
}

void cli_lm_print_info(FILE *f, const char *dir, const tmoe_lm *m) {
    char tbuf[8 * TMOE_MAX_EXPERTS];
    const tmoe_lm_config *c = &m->cfg;
    tmoe_lm_sizes s = tmoe_lm_sizes_of(m);
    fprintf(f, "model        %s\n", dir);
    fprintf(f, "family       %s; checkpoint %s, %d shard%s, %.2f MB of tensors\n",
            tmoe_lm_family_name(c->family), m->dtype, m->shards, m->shards == 1 ? "" : "s",
            (double)m->file_bytes / 1e6);
    fprintf(f, "vocabulary   %d; hidden %d; LM head %s\n", c->vocab_size, c->d_model,
            c->tie_embeddings ? "tied to the embedding" : "separate");
    print_layers(f, c);
    fprintf(f, "attention    %d heads, %d KV heads (GQA %d), head_dim %d; RoPE theta %g%s\n",
            c->n_heads, c->n_kv_heads, c->n_heads / c->n_kv_heads, c->head_dim, c->rope_theta,
            c->sliding_window ? "; sliding window" : "");
    if (c->sliding_window) fprintf(f, "             window %d positions\n", c->sliding_window);
    fprintf(f, "             q/k norm: %s; biases: %s%s; max positions %d\n",
            qk_norm_name(c->qk_norm), c->qkv_bias ? "q, k, v" : "none", c->o_bias ? ", o" : "",
            c->max_positions);
    if (c->clip_qkv > 0.0f) fprintf(f, "             q, k, v clipped to +-%g\n", c->clip_qkv);
    fprintf(f, "MoE          %d experts, top-%d, %s; expert size %d; experts loaded as %s\n",
            c->num_experts, c->top_k,
            c->norm_topk_prob ? "top-k weights renormalised" : "top-k weights not renormalised",
            c->d_ff_expert, cli_lm_type_text(m, tbuf, sizeof tbuf));
    if (c->d_ff_shared)
        fprintf(f, "             shared expert of size %d, scaled by sigmoid(shared_expert_gate)\n",
                c->d_ff_shared);
    if (tmoe_lm_num_moe_layers(c) < c->n_layers) fprintf(f, "dense MLP    size %d\n", c->d_ff);
    fprintf(f, "parameters   %.4g M in all, %.4g M active per token, %.4g M in experts\n",
            (double)s.params / 1e6, (double)s.active_params / 1e6, (double)s.expert_params / 1e6);
    fprintf(f, "memory       %.4g MB of weights as loaded\n", s.weight_bytes / 1e6);
    fprintf(f,
            "per token    %.4g MB of weights read (top-%d experts, as loaded) + %.4g KB of KV "
            "cache (fp32)\n",
            s.active_bytes / 1e6, c->top_k, s.kv_bytes_per_token / 1e3);
}

/* ---- where the decoder runs ------------------------------------------------------- */
int cli_lm_exec_create(const tmoe_lm *m, const cli_lm_opts *o, int max_tokens, int max_seqs,
                       int max_len, tmoe_lm_route_fn route, void *route_user, cli_lm_exec *x,
                       tmoe_error *err) {
    memset(x, 0, sizeof *x);
    tmoe_backend_kind k;
    int rc0 = tmoe_backend_resolve(o->backend, &k, err);
    if (rc0) return rc0;
    x->kind = k;
    if (k == TMOE_BACKEND_CUDA) {
        tmoe_cuda_lm_config cc = {.device_id = 0,
                                  .max_tokens = max_tokens,
                                  .max_seqs = max_seqs,
                                  .max_len = max_len,
                                  .use_graphs = route == NULL,
                                  .route = route,
                                  .route_user = route_user};
        return tmoe_cuda_lm_create(m, &cc, &x->gpu, err);
    }
    tmoe_cpu_lm_config cc = {
        .max_tokens = max_tokens, .impl = o->impl, .route = route, .route_user = route_user};
    int rc = tmoe_kv_cache_create(&m->cfg, max_seqs, max_len, &x->kv, err);
    if (!rc) rc = tmoe_cpu_lm_create(m, &cc, &x->cpu, err);
    return rc;
}

void cli_lm_exec_free(cli_lm_exec *x) {
    tmoe_cpu_lm_free(x->cpu);
    tmoe_kv_cache_free(x->kv);
    tmoe_cuda_lm_free(x->gpu);
    memset(x, 0, sizeof *x);
}

int cli_lm_exec_open(cli_lm_exec *x, int *slot, tmoe_error *err) {
    return x->gpu ? tmoe_cuda_lm_seq_open(x->gpu, slot, err) : tmoe_kv_seq_open(x->kv, slot, err);
}

void cli_lm_exec_close(cli_lm_exec *x, int slot) {
    if (x->gpu)
        tmoe_cuda_lm_seq_close(x->gpu, slot);
    else
        tmoe_kv_seq_close(x->kv, slot);
}

int cli_lm_exec_forward(cli_lm_exec *x, const tmoe_lm_batch *b, float *logits, tmoe_error *err) {
    return x->gpu ? tmoe_cuda_lm_forward(x->gpu, b, logits, err)
                  : tmoe_cpu_lm_forward(x->cpu, x->kv, b, logits, err);
}

/* ---- routing ------------------------------------------------------------------------- */
struct cli_lm_route {
    int n_layers, max_tokens;
    int renorm;            /* the model's norm_topk_prob (the comparisons' weights) */
    tmoe_router **routers; /* (n_layers), NULL for dense layers */
    tmoe_expert_cost *tab[TMOE_ET_COUNT]; /* per type: (max_tokens + 1) one expert's cost at k
                                             tokens (NULL: no expert of that type) */
    tmoe_etype types[TMOE_MAX_EXPERTS];   /* expert e's type */
    int32_t *sel;                         /* (max_tokens, top_k) */
};

/* Cost of an expert at a real token count: linear between the table's integer counts,
 * n x cost(1) below one token. */
static int tab_cost(void *ctx, int expert, double n, tmoe_expert_cost *out, tmoe_error *err) {
    const cli_lm_route *r = ctx;
    (void)err;
    const tmoe_expert_cost *tab = r->tab[r->types[expert]];
    if (n < 0.0) n = 0.0;
    if (n > r->max_tokens) n = r->max_tokens;
    int k = (int)floor(n);
    if (k < 1) {
        out->energy_j = n * tab[1].energy_j;
        out->latency_ms = n * tab[1].latency_ms;
        out->temp_impact_c_per_s = n * tab[1].temp_impact_c_per_s;
        return TMOE_OK;
    }
    int k1 = k < r->max_tokens ? k + 1 : k;
    double f = n - k;
    out->energy_j = tab[k].energy_j + f * (tab[k1].energy_j - tab[k].energy_j);
    out->latency_ms = tab[k].latency_ms + f * (tab[k1].latency_ms - tab[k].latency_ms);
    out->temp_impact_c_per_s =
        tab[k].temp_impact_c_per_s + f * (tab[k1].temp_impact_c_per_s - tab[k].temp_impact_c_per_s);
    return TMOE_OK;
}

void cli_lm_route_free(cli_lm_route *r) {
    if (!r) return;
    if (r->routers)
        for (int l = 0; l < r->n_layers; l++) tmoe_router_free(r->routers[l]);
    free(r->routers);
    for (int t = 0; t < TMOE_ET_COUNT; t++) free(r->tab[t]);
    free(r->sel);
    free(r);
}

static int fill_table(cli_lm_route *r, const tmoe_lm *m, const char *cost_model, tmoe_impl impl,
                      tmoe_error *err) {
    tmoe_cost_model *cm = NULL;
    int rc = tmoe_cost_load(cost_model, &cm, err);
    if (rc) return rc;
    /* fp32 experts have no cost-model entries: they are costed as fp16; one table a type */
    for (int e = 0; e < m->cfg.num_experts && rc == TMOE_OK; e++) {
        tmoe_etype t = m->opts.experts_f32 ? TMOE_ET_FP16 : tmoe_lm_expert_type(&m->opts, e);
        r->types[e] = t;
        if (r->tab[t]) continue;
        r->tab[t] = tmoe_calloc((size_t)r->max_tokens + 1, sizeof *r->tab[t], err);
        if (!r->tab[t]) rc = TMOE_ENOMEM;
        for (int k = 1; k <= r->max_tokens && rc == TMOE_OK; k++) {
            tmoe_cost_value v;
            rc = tmoe_cost_expert(cm, t, impl, k, &v, err);
            r->tab[t][k] = (tmoe_expert_cost){v.energy_j, v.latency_ms, v.temp_impact_c_per_s};
        }
    }
    tmoe_cost_free(cm);
    return rc;
}

int cli_lm_route_create(const tmoe_lm *m, tmoe_route_strategy s, const char *cost_model,
                        tmoe_impl impl, int max_tokens, cli_lm_route **out, tmoe_error *err) {
    *out = NULL;
    const tmoe_lm_config *c = &m->cfg;
    if (s == TMOE_ROUTE_STATIC_OPTIMAL)
        return tmoe_errorf(err, TMOE_ENOTSUP,
                           "static_optimal needs a workload profile to fit "
                           "its biases: not supported by eval yet");
    cli_lm_route *r = tmoe_calloc(1, sizeof *r, err);
    if (!r) return TMOE_ENOMEM;
    r->n_layers = c->n_layers;
    r->max_tokens = max_tokens;
    r->renorm = c->norm_topk_prob;
    r->routers = tmoe_calloc((size_t)c->n_layers, sizeof *r->routers, err);
    r->sel = tmoe_malloc(sizeof(int32_t) * (size_t)max_tokens * c->top_k, err);
    int rc = r->routers && r->sel ? TMOE_OK : TMOE_ENOMEM;
    if (rc == TMOE_OK) rc = fill_table(r, m, cost_model, impl, err);
    tmoe_cost_provider p = {.expert_cost = tab_cost, .expert_cost_deriv = NULL, .ctx = r};
    for (int l = 0; rc == TMOE_OK && l < c->n_layers; l++) {
        if (!c->moe_layer[l]) continue;
        tmoe_router_config rc_ = tmoe_router_config_default();
        rc_.strategy = s;
        rc_.num_experts = c->num_experts;
        rc_.top_k = c->top_k;
        rc_.max_tokens = max_tokens;
        rc_.seed = (uint64_t)l;
        rc = tmoe_router_create(&rc_, &p, &r->routers[l], err);
        if (rc) rc = tmoe_error_prefix(err, rc, "router of layer %d", l);
    }
    if (rc) {
        cli_lm_route_free(r);
        return rc;
    }
    *out = r;
    return TMOE_OK;
}

int cli_lm_route_fn(void *user, int layer, const float *logits, int T, int E,
                    tmoe_lm_route_out *out, tmoe_error *err) {
    cli_lm_route *r = user;
    (void)E;
    tmoe_router *rt = r->routers[layer];
    if (!rt) return TMOE_OK;
    if (tmoe_route_strategy_is_comparison(tmoe_router_get_config(rt)->strategy)) {
        int rc =
            tmoe_router_route_explicit(rt, logits, T, r->renorm, NULL, out->idx, out->w, NULL, err);
        out->selected = rc == TMOE_OK;
        return rc;
    }
    return tmoe_router_route(rt, logits, T, NULL, NULL, out->bias, r->sel, NULL, err);
}
