/* metadata.json of a run: configuration, device, telemetry source, commit, cost model
 * checksum, seeds, calibration and status; and the configuration fingerprint that --resume
 * checks. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "exp/runner_internal.h"

#define RUN_METADATA_MAX_BYTES ((size_t)16 << 20) /* a run's is a few KB */

static json_t *num(double v) {
    return isnan(v) || isinf(v) ? json_null() : json_real(v);
}

/* The decoder LM's part of the config: the checkpoint (model.lm), the text (tokens: its
 * checksum decides the rows, its path does not) and the domains. */
static void lm_json(const run_ctx *r, json_t *model, json_t *config) {
    const run_lm *lm = r->lm;
    char sum[32] = "";
    /* the random block's shape does not apply: the checkpoint's is in model.lm */
    static const char *const block_only[] = {"d_model", "n_heads", "d_ff", "act", "moe_only"};
    for (size_t i = 0; i < sizeof block_only / sizeof *block_only; i++)
        json_object_del(model, block_only[i]);
    json_t *m = json_pack("{s:s}", "dir", r->cfg.model_dir);
    if (lm && lm->m) {
        const tmoe_lm_config *c = &lm->m->cfg;
        json_object_set_new(m, "family", json_string(tmoe_lm_family_name(c->family)));
        json_object_set_new(m, "vocab_size", json_integer(c->vocab_size));
        json_object_set_new(m, "d_model", json_integer(c->d_model));
        json_object_set_new(m, "n_layers", json_integer(c->n_layers));
        json_object_set_new(m, "moe_layers", json_integer(lm->n_moe));
        json_object_set_new(m, "d_ff_expert", json_integer(c->d_ff_expert));
        json_object_set_new(m, "checkpoint_bytes", json_integer((json_int_t)lm->m->file_bytes));
        json_object_set_new(m, "checkpoint_dtype", json_string(lm->m->dtype));
    }
    if (lm && lm->gpu && tmoe_cuda_lm_shadow_sets(lm->gpu) > 0) {
        json_object_set_new(m, "production_expert_sets",
                            json_integer(tmoe_cuda_lm_shadow_sets(lm->gpu)));
        json_object_set_new(m, "production_expert_bytes",
                            json_integer((json_int_t)tmoe_cuda_lm_shadow_bytes(lm->gpu)));
    }
    json_object_set_new(model, "lm", m);
    json_object_set_new(config, "lm_steps", json_string(r->cfg.lm_decode ? "decode" : "prefill"));
    json_object_set_new(config, "expert_activations", json_string(r->cfg.act8 ? "int8" : "fp16"));
    json_t *cp = run_meta_copies(r); /* only where copies are held: fingerprints stay */
    if (cp) json_object_set_new(config, "expert_copies", cp);
    json_t *t = json_object();
    json_object_set_new(
        t, "path",
        json_string(r->cfg.tokens_path ? r->cfg.tokens_path : tmoe_run_default_tokens()));
    if (lm && lm->text.ids) {
        snprintf(sum, sizeof sum, "%016llx", (unsigned long long)lm->text.checksum);
        json_object_set_new(t, "fnv1a64", json_string(sum));
        json_object_set_new(t, "tokens", json_integer((json_int_t)lm->text.n));
        json_object_set_new(t, "domains_source", json_string(lm->text.source));
        json_t *d = json_array();
        for (int i = 0; i < lm->text.ndom; i++)
            json_array_append_new(d, json_pack("{s:s, s:I, s:I}", "name", lm->text.domain[i],
                                               "first", (json_int_t)lm->text.first[i], "end",
                                               (json_int_t)lm->text.end[i]));
        json_object_set_new(t, "domains", d);
        json_object_set_new(t, "calibration_every", json_integer(TMOE_TEXT_CALIB_EVERY));
    }
    json_object_set_new(config, "tokens", t);
}

json_t *run_meta_copies(const run_ctx *r) {
    const run_lm *lm = r->lm;
    if (!lm || !lm->n_copy) return NULL;
    json_t *ex = json_array();
    for (int e = 0; e < TMOE_MAX_EXPERTS; e++)
        if (lm->copy[e]) json_array_append_new(ex, json_integer(e));
    return json_pack("{s:s, s:o}", "type", tmoe_etype_name(r->cfg.copy_type), "experts", ex);
}

/* metadata's "router": the routers' settings (flags and library-only), the comparisons'
 * settings only where a comparison runs (so that fingerprints of runs without one stay). */
json_t *run_meta_router(const tmoe_run_config *c) {
    const tmoe_router_config *rcfg = &c->router;
    json_t *router = json_pack(
        "{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:s, s:b, s:o, s:o}",
        "max_bias", num(rcfg->max_bias), "power_target_w", num(rcfg->power_target_w),
        "temp_target_c", num(rcfg->temp_target_c), "temp_band_c", num(rcfg->temp_band_c), "w_power",
        num(rcfg->w_power), "w_temp", num(rcfg->w_temp), "w_latency", num(rcfg->w_latency),
        "w_throughput", num(rcfg->w_throughput), "w_fidelity", num(rcfg->w_fidelity),
        "latency_slack", num(rcfg->latency_slack), "lr", num(rcfg->lr), "weight_decay",
        num(rcfg->weight_decay), "grad", tmoe_ttha_grad_name(rcfg->grad_mode), "load_balancer",
        c->load_balancer, "kl_bound", num(rcfg->kl_bound), "horizon_s", num(rcfg->horizon_s));
    /* the settings a library caller may change beyond the flags */
    static const struct {
        const char *name;
        size_t off;
    } more[] = {
#define RC_D(f) {#f, offsetof(tmoe_router_config, f)}
        RC_D(cost_bias_scale),  RC_D(w_temp_cost),     RC_D(adam_beta1),    RC_D(adam_beta2),
        RC_D(adam_eps),         RC_D(lr_min_ratio),    RC_D(surrogate_tau), RC_D(explore_sigma),
        RC_D(baseline_decay),   RC_D(lb_step),         RC_D(lb_max_abs),    RC_D(exclusion_bias),
        RC_D(link_j_per_token), RC_D(tau_base),        RC_D(tau_min),       RC_D(kl_base),
        RC_D(kl_max),           RC_D(ttha_budget_gain)
#undef RC_D
    };
    for (size_t i = 0; i < sizeof more / sizeof *more; i++)
        json_object_set_new(router, more[i].name,
                            num(*(const double *)((const char *)rcfg + more[i].off)));
    json_object_set_new(router, "ttha_hidden", json_integer(rcfg->ttha_hidden));
    json_object_set_new(router, "lr_schedule", json_string(tmoe_lr_schedule_name(rcfg->schedule)));
    json_object_set_new(router, "lr_warmup", json_integer(rcfg->lr_warmup));
    json_object_set_new(router, "lr_decay_steps", json_integer(rcfg->lr_decay_steps));
    json_object_set_new(router, "num_tiers", json_integer(rcfg->num_tiers));
    json_object_set_new(router, "budget", json_string(tmoe_budget_name(rcfg->budget)));
    json_object_set_new(router, "ttha_warm_start",
                        c->ttha_warm_start ? json_string(c->ttha_warm_start) : json_null());
    /* the comparisons' settings, in runs that have a comparison (so that the fingerprint of
     * a run without one stays what it was) */
    int ncmp = 0;
    for (int i = TMOE_ROUTE_FIRST_COMPARISON; i < TMOE_ROUTE_STRATEGY_COUNT; i++)
        ncmp += c->strategies[i] != 0;
    if (ncmp) {
        json_object_set_new(router, "top_p", num(rcfg->top_p));
        json_object_set_new(router, "prune_experts", json_integer(rcfg->prune_experts));
        json_object_set_new(router, "capacity_factor", num(rcfg->cap_factor));
        json_object_set_new(router, "capacity_overflow",
                            json_string(tmoe_overflow_name(rcfg->cap_overflow)));
    }
    return router;
}

/* metadata.json's "config": everything that decides the rows, as requested and as resolved
 * (the backend and telemetry source that answered, the placement's map, the cost model's
 * checksum, the one seed). The fingerprint is made from it. */
static json_t *run_config_json(const run_ctx *r) {
    const tmoe_run_config *c = &r->cfg;
    char sum[32];
    snprintf(sum, sizeof sum, "%016llx", (unsigned long long)r->cost_sum);
    json_t *strat = json_array(), *wls = json_array();
    for (int i = 0; i < TMOE_ROUTE_STRATEGY_COUNT; i++)
        if (c->strategies[i])
            json_array_append_new(strat,
                                  json_string(tmoe_route_strategy_name((tmoe_route_strategy)i)));
    for (int i = 0; i < TMOE_WL_COUNT; i++)
        if (c->workloads[i])
            json_array_append_new(wls, json_string(tmoe_workload_name((tmoe_workload_kind)i)));
    json_t *router = run_meta_router(c);
    json_t *config = json_pack(
        "{s:o, s:o, s:i, s:i, s:i, s:i, s:i, s:i, s:o, s:o, s:i, s:s, s:s, s:i, s:s, s:s, s:i}",
        "strategies", strat, "workloads", wls, "repeats", c->repeats, "num_samples_per_workload",
        c->num_samples, "epochs", c->epochs, "warmup_batches", c->warmup_batches, "trace_batches",
        c->trace_batches, "fidelity_every", c->fidelity_every, "arrival_rate_tokens_s",
        c->arrival_rate > 0 ? json_real(c->arrival_rate) : json_null(), "cooldown_s",
        json_real(c->cooldown_s), "batch_size", c->batch_size, "backend",
        tmoe_backend_kind_name(c->backend), "impl", tmoe_impl_name(c->impl), "device_id",
        c->device_id, "telemetry", tmoe_telemetry_kind_name(c->telemetry), "cost_model",
        r->cost_path, "sim_devices", c->sim_devices);
    if (config) json_object_set_new(config, "warmup_steady_s", json_real(c->steady_s));
    if (config)
        json_object_set_new(config, "energy_counter_ms", json_integer(c->energy_counter_ms));
    if (!config) {
        json_decref(router);
        return NULL;
    }
    json_object_set_new(config, "seed", json_integer((json_int_t)c->seed));
    json_object_set_new(config, "backend_used", json_string(run_backend_name(r)));
    json_object_set_new(config, "telemetry_source",
                        json_string(r->tel ? tmoe_telemetry_source_name(r->tel) : ""));
    json_object_set_new(config, "telemetry_devices", json_integer(r->ndev));
    json_object_set_new(config, "cost_model_checksum", json_string(sum));
    json_t *from = json_object();
    for (int t = 0; t < TMOE_ET_COUNT; t++)
        if (r->unfused_from[t] > 0)
            json_object_set_new(from, tmoe_etype_name((tmoe_etype)t),
                                json_integer(r->unfused_from[t]));
    json_object_set_new(config, "impl_choice",
                        json_pack("{s:s, s:s, s:o}", "rule",
                                  r->impl_rule ? r->impl_rule : "configured", "why", r->impl_why,
                                  "unfused_from_tokens_per_expert", from));
    json_object_set_new(config, "router", router);
    json_object_set_new(config, "first_repeat", json_integer(c->repeat_first));
    json_t *place = json_array();
    for (int e = 0; e < r->placement.num_experts; e++)
        json_array_append_new(place, json_integer(r->placement.device[e]));
    json_object_set_new(config, "placement",
                        json_pack("{s:s, s:o}", "source",
                                  c->placement_file ? c->placement_file : "round_robin",
                                  "expert_device", place));
    json_t *ep = json_pack("{s:i, s:i}", "rank", r->rank, "ranks", r->ranks);
    tmoe_ep_stats es;
    tmoe_error e2 = {0};
    if (r->eng && tmoe_engine_ep_stats(r->eng, &es, &e2) == TMOE_OK) {
        json_object_set_new(ep, "link_gbps", json_real(es.link_gbps));
        json_object_set_new(ep, "bytes_per_copy", json_real(es.bytes_per_copy));
    }
    json_object_set_new(config, "expert_parallel", ep);
    json_t *types = json_array();
    for (int e = 0; e < r->blk_cfg.num_experts; e++)
        json_array_append_new(types,
                              json_string(tmoe_etype_name(tmoe_block_expert_type(&r->blk_cfg, e))));
    json_t *model =
        json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:s, s:b, s:b}", "d_model",
                  r->blk_cfg.d_model, "n_heads", r->blk_cfg.n_heads, "d_ff", r->blk_cfg.d_ff,
                  "num_experts", r->blk_cfg.num_experts, "top_k", r->blk_cfg.top_k, "group_size",
                  r->blk_cfg.group_size, "seq_len", r->blk_cfg.seq_len, "expert_type",
                  r->blk_cfg.expert_types ? "mixed" : tmoe_etype_name(r->blk_cfg.expert_type),
                  "act", tmoe_act_name(r->blk_cfg.act), "renormalize", r->blk_cfg.renormalize,
                  "moe_only", c->moe_only);
    json_object_set_new(model, "expert_types", types);
    json_object_set_new(model, "weights_seed", json_integer((json_int_t)r->blk_cfg.seed));
    json_object_set_new(model, "kind", json_string(r->cfg.model_dir ? "lm" : "random_block"));
    if (r->cfg.model_dir) lm_json(r, model, config);
    char shape[96];
    run_energy_shape(r, shape, sizeof shape);
    json_object_set_new(config, "energy_expert_shape", json_string(shape));
    json_object_set_new(config, "model", model);
    return config;
}

/* Keys of the config that do not decide the rows: where the cost model and the placement
 * map were read from (their contents count: cost_model_checksum, placement.expert_device)
 * and the measured link of expert parallelism. */
static int fingerprint_skips(const char *key) {
    static const char *const skip[] = {"cost_model", "placement.source", "tokens.path",
                                       "expert_parallel.link_gbps",
                                       "expert_parallel.bytes_per_copy"};
    for (size_t i = 0; i < sizeof skip / sizeof *skip; i++)
        if (!strcmp(key, skip[i])) return 1;
    return 0;
}

/* One value as text: reals in the fewest digits that read back exactly, arrays as comma
 * lists. */
static void value_text(json_t *v, char *buf, size_t n) {
    if (json_is_array(v)) {
        size_t i, len = 0;
        json_t *x;
        buf[0] = '\0';
        json_array_foreach(v, i, x) {
            if (len + 1 >= n) break;
            if (i) buf[len++] = ',', buf[len] = '\0';
            value_text(x, buf + len, n - len);
            len += strlen(buf + len);
        }
    } else if (json_is_string(v)) {
        snprintf(buf, n, "%s", json_string_value(v));
    } else if (json_is_integer(v)) {
        snprintf(buf, n, "%lld", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        snprintf(buf, n, "%.15g", d);
        if (strtod(buf, NULL) != d) snprintf(buf, n, "%.17g", d);
    } else if (json_is_boolean(v)) {
        snprintf(buf, n, "%s", json_is_true(v) ? "true" : "false");
    } else {
        snprintf(buf, n, "null");
    }
}

static void flatten(json_t *obj, const char *prefix, json_t *out) {
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        char key[256], text[4096];
        snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", k);
        if (fingerprint_skips(key)) continue;
        if (json_is_object(v)) {
            flatten(v, key, out);
            continue;
        }
        value_text(v, text, sizeof text);
        json_object_set_new(out, key, json_string(text));
    }
}

json_t *run_fingerprint(const run_ctx *r) {
    json_t *config = run_config_json(r);
    if (!config) return NULL;
    json_t *fp = json_object();
    flatten(config, "", fp);
    json_decref(config);
    return fp;
}

int run_fingerprint_diff(json_t *was, json_t *now, char *buf, size_t n) {
    int count = 0;
    size_t len = 0;
    buf[0] = '\0';
    const char *k;
    json_t *v;
    /* the keys of now in order, then those only the old run had */
    for (int pass = 0; pass < 2; pass++) {
        json_t *a = pass ? was : now, *b = pass ? now : was;
        json_object_foreach(a, k, v) {
            json_t *o = json_object_get(b, k);
            if (pass && o) continue;
            const char *vs = json_string_value(v), *os = o ? json_string_value(o) : NULL;
            if (os && vs && !strcmp(os, vs)) continue;
            const char *old = pass ? vs : os, *cur = pass ? NULL : vs;
            if (len < n)
                len +=
                    (size_t)snprintf(buf + len, n - len, "%s%s was %s, now %s", count ? "; " : "",
                                     k, old ? old : "(not recorded)", cur ? cur : "(not recorded)");
            count++;
        }
    }
    return count;
}

/* metadata.json's "host": where the run ran (hostname, the Slurm job if any), so that logs of
 * several machines and jobs can be told apart and joined with the scheduler's records. */
static json_t *host_json(void) {
    char name[256] = "";
    if (gethostname(name, sizeof name - 1) != 0 || !name[0]) snprintf(name, sizeof name, "unknown");
    json_t *h = json_pack("{s:s}", "hostname", name);
    static const struct {
        const char *key, *env;
    } slurm[] = {{"slurm_job_id", "SLURM_JOB_ID"},
                 {"slurm_array_job_id", "SLURM_ARRAY_JOB_ID"},
                 {"slurm_array_task_id", "SLURM_ARRAY_TASK_ID"}};
    for (size_t i = 0; h && i < sizeof slurm / sizeof *slurm; i++) {
        const char *v = getenv(slurm[i].env);
        json_object_set_new(h, slurm[i].key, v && *v ? json_string(v) : json_null());
    }
    return h;
}

/* The device's provenance beyond name and power limit: driver and CUDA versions,
 * persistence mode and application clocks (NVML; "simulated" on the simulated GPU). */
static void device_more(const run_ctx *r, json_t *dev) {
    const tmoe_device_info *d = &r->dev_info;
    int sim = r->sim != NULL;
    const char *driver = d->driver[0] ? d->driver : r->dev_driver;
    json_object_set_new(dev, "driver", json_string(sim ? "simulated" : driver));
    json_object_set_new(dev, "cuda_driver_version",
                        json_string(sim                 ? "simulated"
                                    : d->cuda_driver[0] ? d->cuda_driver
                                                        : "unknown"));
#ifdef THERMOE_CUDA_TOOLKIT_VERSION
    const char *rt = THERMOE_CUDA_TOOLKIT_VERSION;
#else
    const char *rt = "not built with CUDA";
#endif
    json_object_set_new(dev, "cuda_runtime_version", json_string(rt));
    json_object_set_new(dev, "persistence_mode",
                        json_string(sim                        ? "simulated"
                                    : d->persistence_mode == 1 ? "enabled"
                                    : d->persistence_mode == 0 ? "disabled"
                                                               : "unknown"));
    json_object_set_new(dev, "applications_clock_sm_mhz", num(d->app_sm_clock_mhz));
    json_object_set_new(dev, "applications_clock_mem_mhz", num(d->app_mem_clock_mhz));
    json_object_set_new(dev, "slowdown_temp_c", num(d->slowdown_temp_c));
    json_object_set_new(dev, "shutdown_temp_c", num(d->shutdown_temp_c));
}

int run_write_metadata(run_ctx *r, const char *status, const char *reason, tmoe_error *err) {
    const tmoe_run_config *c = &r->cfg;
    char ended[40] = "", sum[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ended, sizeof ended, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(sum, sizeof sum, "%016llx", (unsigned long long)r->cost_sum);
    json_t *calib = json_object();
    for (int i = 0; i < TMOE_WL_COUNT; i++) {
        if (!c->workloads[i]) continue;
        const tmoe_workload *w = &r->wl[i];
        json_object_set_new(calib, tmoe_workload_name((tmoe_workload_kind)i),
                            json_pack("{s:i, s:i, s:o, s:o}", "tokens", w->tokens, "seq_len",
                                      w->seq_len, "base_latency_ms", num(r->base_latency_ms[i]),
                                      "base_throughput_tokens_s", num(r->base_throughput[i])));
    }
    json_t *config = run_config_json(r), *fp = run_fingerprint(r);
    if (!config || !fp) {
        json_decref(calib);
        json_decref(config);
        json_decref(fp);
        return tmoe_errorf(err, TMOE_ENOMEM, "internal: metadata JSON could not be built");
    }
    tmoe_cost_meta cmeta = tmoe_cost_get_meta(r->cm);
    json_t *root = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:{s:s, s:s, s:s, s:o, s:s}, "
        "s:{s:s, s:s, s:b, s:i}, s:{s:s, s:s, s:s, s:{s:i, s:i, s:i}}, s:{s:I, s:I}, s:o, s:I}",
        "schema", "thermoe.run/1", "run_id", r->run_id, "status", status, "start_time", r->started,
        "end_time", ended, "git_commit", THERMOE_GIT_SHA, "thermoe_version", TMOE_VERSION,
        "fingerprint", fp, "command", c->argv_line ? json_string(c->argv_line) : json_null(),
        "config", config, "device", "name", r->dev_info.name, "uuid", r->dev_info.uuid, "pci_id",
        r->dev_info.pci_id, "power_limit_w", num(r->dev_info.power_limit_w), "driver",
        r->dev_driver, "telemetry", "source", tmoe_telemetry_source_name(r->tel), "choice",
        tmoe_telemetry_choice(r->tel), "simulated", r->sim != NULL, "devices", r->ndev,
        "cost_model", "path", r->cost_path, "checksum", sum, "device", cmeta.device_name, "shape",
        "d_model", cmeta.d_model, "d_ff", cmeta.d_ff, "group_size", cmeta.group_size, "seeds",
        "seed", (json_int_t)c->seed, "weights_seed", (json_int_t)r->blk_cfg.seed, "calibration",
        calib, "batches_logged", (json_int_t)(r->log ? tmoe_runlog_rows(r->log) : r->rows_logged));
    if (!root) return tmoe_errorf(err, TMOE_EINVAL, "internal: metadata JSON could not be built");
    json_object_set_new(root, "backend", json_string(run_backend_name(r)));
    device_more(r, json_object_get(root, "device"));
    json_object_set_new(root, "host", host_json());
    if (reason) json_object_set_new(root, "error", json_string(reason));
    json_t *tel = json_object_get(root, "telemetry");
    json_object_set_new(tel, "devices_found", json_integer(r->ndev_found));
    json_object_set_new(tel, "devices_ignored", json_integer(r->ndev_found - r->ndev));
    json_t *faults =
        json_pack("{s:I, s:o, s:o}", "count", (json_int_t)r->tel_faults, "first",
                  r->tel_faults ? json_pack("{s:i, s:s, s:s, s:i}", "repeat", r->fault_combo.repeat,
                                            "workload", tmoe_workload_name(r->fault_combo.wl),
                                            "strategy", tmoe_route_strategy_name(r->fault_combo.st),
                                            "batch_idx", r->fault_batch)
                                : json_null(),
                  "reason", r->tel_faults ? json_string(r->fault_reason) : json_null());
    json_object_set_new(root, "telemetry_faults", faults);
    /* whole or not at all: a full disk leaves the previous metadata.json, never a torn one */
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", r->dir, TMOE_RUNLOG_METADATA);
    tmoe_atomic_file af;
    int rc = tmoe_atomic_open(&af, path, err);
    if (rc == TMOE_OK) {
        if (json_dumpf(root, af.f, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0 ||
            fputc('\n', af.f) == EOF) {
            int e = errno;
            tmoe_atomic_abort(&af);
            rc = tmoe_errorf(err, TMOE_EIO, "%s: write failed: %s (left unchanged)", path,
                             e ? strerror(e) : "write error");
        } else {
            rc = tmoe_atomic_commit(&af, err);
        }
    }
    json_decref(root);
    return rc;
}

int run_read_metadata(const char *dir, char *run_id, size_t n, json_t **fingerprint,
                      tmoe_error *err) {
    *fingerprint = NULL;
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", dir, TMOE_RUNLOG_METADATA);
    size_t len = 0;
    char *text = tmoe_file_read_all(path, RUN_METADATA_MAX_BYTES, &len, err);
    if (!text)
        return tmoe_error_prefix(err, TMOE_EIO, "reading the metadata of run directory %s", dir);
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    free(text);
    if (!root)
        return tmoe_errorf(err, TMOE_EFORMAT, "%s:%d:%d: %s (is %s a run directory?)", path,
                           je.line, je.column, je.text, dir);
    const char *id = json_string_value(json_object_get(root, "run_id"));
    json_t *fp = json_object_get(root, "fingerprint");
    int rc = TMOE_OK;
    if (!id || !fp)
        rc = tmoe_errorf(err, TMOE_EFORMAT, "%s: no run_id or fingerprint", path);
    else if (!json_is_object(fp))
        rc = tmoe_errorf(err, TMOE_EFORMAT,
                         "%s: the fingerprint is in an older form that does not record the whole "
                         "configuration, so a resumed run could not be checked against it: "
                         "start a new run with another --out",
                         path);
    else {
        snprintf(run_id, n, "%s", id);
        *fingerprint = json_incref(fp);
    }
    json_decref(root);
    return rc;
}
