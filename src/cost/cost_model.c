/* The cost model in memory: sorted entries, log-token interpolation, expert sums,
 * compute_energy_loss and merging. The file format lives in cost_json.c, which builds on
 * this file; nothing here calls the file layer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cost/cost_internal.h"

tmoe_cost_meta tmoe__cost_meta_unknown(void) {
    tmoe_cost_meta m;
    memset(&m, 0, sizeof m);
    m.power_limit_w = NAN;
    m.idle_power_w = NAN;
    return m;
}

int tmoe_cost_create(tmoe_cost_model **out, tmoe_error *err) {
    *out = NULL;
    tmoe_cost_model *cm = tmoe_calloc(1, sizeof *cm, err);
    if (!cm) return TMOE_ENOMEM;
    cm->meta = tmoe__cost_meta_unknown();
    cm->extrap = TMOE_COST_EXTRAP_CLAMP;
    snprintf(cm->source, sizeof cm->source, "(memory)");
    *out = cm;
    return TMOE_OK;
}

static void entry_release(tmoe_cost_entry *e) {
    for (int i = 0; i < e->n_kernels; i++) free(e->kernels[i].name);
    free(e->kernels);
    e->kernels = NULL;
    e->n_kernels = 0;
}

void tmoe_cost_free(tmoe_cost_model *cm) {
    if (!cm) return;
    for (int i = 0; i < cm->n; i++) entry_release(&cm->entries[i]);
    free(cm->entries);
    free(cm);
}

void tmoe__cost_set_source(tmoe_cost_model *cm, const char *source) {
    snprintf(cm->source, sizeof cm->source, "%s", source ? source : "(memory)");
}

const char *tmoe_cost_source(const tmoe_cost_model *cm) {
    return cm->source;
}
tmoe_cost_meta tmoe_cost_get_meta(const tmoe_cost_model *cm) {
    return cm->meta;
}
void tmoe_cost_set_meta(tmoe_cost_model *cm, const tmoe_cost_meta *meta) {
    cm->meta = *meta;
}
void tmoe_cost_set_extrapolation(tmoe_cost_model *cm, tmoe_cost_extrap mode) {
    TMOE_ASSERT(mode == TMOE_COST_EXTRAP_CLAMP || mode == TMOE_COST_EXTRAP_LINEAR);
    cm->extrap = mode;
}
int tmoe_cost_count(const tmoe_cost_model *cm) {
    return cm->n;
}

const tmoe_cost_entry *tmoe_cost_entry_at(const tmoe_cost_model *cm, int i) {
    TMOE_ASSERT(i >= 0 && i < cm->n);
    return &cm->entries[i];
}

void tmoe_cost_set_ncu(tmoe_cost_model *cm, int i, double occupancy_pct, double dram_pct) {
    TMOE_ASSERT(i >= 0 && i < cm->n);
    cm->entries[i].has_ncu = 1;
    cm->entries[i].ncu_occupancy_pct = occupancy_pct;
    cm->entries[i].ncu_dram_pct = dram_pct;
}

/* ---- checks -------------------------------------------------------------------------- */

/* A value that may be unknown (NAN) but otherwise must be finite and >= lo. */
static int check_num(const char *field, double v, double lo, int required, tmoe_error *err) {
    if (isnan(v)) {
        if (required)
            return tmoe_errorf(err, TMOE_EFORMAT, "%s: expected a number, got NaN/null", field);
        return TMOE_OK;
    }
    if (!isfinite(v))
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: expected a finite number, got %g", field, v);
    if (v < lo)
        return tmoe_errorf(err, TMOE_EFORMAT, "%s: expected a number >= %g, got %g", field, lo, v);
    return TMOE_OK;
}

int tmoe__cost_check_entry(const tmoe_cost_entry *e, tmoe_error *err) {
    if ((unsigned)e->op >= TMOE_OP_COUNT)
        return tmoe_errorf(err, TMOE_EFORMAT, "op: out of range (%d)", (int)e->op);
    if ((unsigned)e->expert_type >= TMOE_ET_COUNT)
        return tmoe_errorf(err, TMOE_EFORMAT, "expert_type: out of range (%d)",
                           (int)e->expert_type);
    if ((unsigned)e->impl >= TMOE_IMPL_COUNT)
        return tmoe_errorf(err, TMOE_EFORMAT, "impl: out of range (%d)", (int)e->impl);
    if (e->tokens < 1)
        return tmoe_errorf(err, TMOE_EFORMAT, "tokens: expected an integer >= 1, got %d",
                           e->tokens);
    int rc;
    if ((rc = check_num("latency_ms.median", e->latency_median_ms, 0, 1, err))) return rc;
    if ((rc = check_num("latency_ms.p90", e->latency_p90_ms, 0, 0, err))) return rc;
    if ((rc = check_num("energy_j.board", e->energy_board_j, 0, 0, err))) return rc;
    if ((rc = check_num("energy_j.dynamic", e->energy_dynamic_j, -INFINITY, 0, err))) return rc;
    if (!isnan(e->energy_dynamic_j) && !isnan(e->energy_board_j) &&
        e->energy_dynamic_j > e->energy_board_j)
        return tmoe_errorf(err, TMOE_EFORMAT, "energy_j.dynamic: %g exceeds energy_j.board %g",
                           e->energy_dynamic_j, e->energy_board_j);
    if ((rc = check_num("avg_power_w", e->avg_power_w, 0, 0, err))) return rc;
    if ((rc = check_num("temp_impact_c_per_s", e->temp_impact_c_per_s, -INFINITY, 0, err)))
        return rc;
    if (e->samples < 0)
        return tmoe_errorf(err, TMOE_EFORMAT, "samples: expected an integer >= 0, got %lld",
                           (long long)e->samples);
    if (e->n_kernels < 0 || (e->n_kernels > 0 && !e->kernels))
        return tmoe_errorf(err, TMOE_EFORMAT, "kernels: bad count %d", e->n_kernels);
    for (int i = 0; i < e->n_kernels; i++) {
        char f[64];
        if (!e->kernels[i].name || !e->kernels[i].name[0])
            return tmoe_errorf(err, TMOE_EFORMAT, "kernels[%d].name: expected a non-empty string",
                               i);
        if (e->kernels[i].count < 0)
            return tmoe_errorf(err, TMOE_EFORMAT,
                               "kernels[%d].count: expected an integer >= 0, got %lld", i,
                               (long long)e->kernels[i].count);
        snprintf(f, sizeof f, "kernels[%d].ms", i);
        if ((rc = check_num(f, e->kernels[i].ms, 0, 0, err))) return rc;
    }
    if (e->has_ncu) {
        if ((rc = check_num("ncu.achieved_occupancy_pct", e->ncu_occupancy_pct, 0, 0, err)))
            return rc;
        if ((rc = check_num("ncu.dram_throughput_pct", e->ncu_dram_pct, 0, 0, err))) return rc;
    }
    return TMOE_OK;
}

/* ---- sorted storage ------------------------------------------------------------------ */

static int key_cmp(tmoe_op op, tmoe_etype et, tmoe_impl impl, const tmoe_cost_entry *b) {
    if (op != b->op) return op < b->op ? -1 : 1;
    if (et != b->expert_type) return et < b->expert_type ? -1 : 1;
    if (impl != b->impl) return impl < b->impl ? -1 : 1;
    return 0;
}

static int full_cmp(const tmoe_cost_entry *a, const tmoe_cost_entry *b) {
    int c = key_cmp(a->op, a->expert_type, a->impl, b);
    if (c) return c;
    return a->tokens < b->tokens ? -1 : a->tokens > b->tokens;
}

/* First index whose entry is >= e (in full order). */
static int lower_bound(const tmoe_cost_model *cm, const tmoe_cost_entry *e) {
    int lo = 0, hi = cm->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (full_cmp(&cm->entries[mid], e) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int entry_copy(tmoe_cost_entry *dst, const tmoe_cost_entry *src, tmoe_error *err) {
    *dst = *src;
    dst->kernels = NULL;
    dst->n_kernels = 0;
    if (src->n_kernels == 0) return TMOE_OK;
    dst->kernels = tmoe_calloc((size_t)src->n_kernels, sizeof *dst->kernels, err);
    if (!dst->kernels) return TMOE_ENOMEM;
    for (int i = 0; i < src->n_kernels; i++) {
        dst->kernels[i] = src->kernels[i];
        dst->kernels[i].name = strdup(src->kernels[i].name);
        if (!dst->kernels[i].name) {
            dst->n_kernels = i;
            entry_release(dst);
            return tmoe_errorf(err, TMOE_ENOMEM, "out of memory copying a kernel name");
        }
    }
    dst->n_kernels = src->n_kernels;
    return TMOE_OK;
}

int tmoe__cost_insert(tmoe_cost_model *cm, const tmoe_cost_entry *e, int *replaced,
                      tmoe_error *err) {
    if (replaced) *replaced = 0;
    tmoe_cost_entry copy;
    int rc = entry_copy(&copy, e, err);
    if (rc) return rc;
    int pos = lower_bound(cm, e);
    if (pos < cm->n && full_cmp(&cm->entries[pos], e) == 0) {
        entry_release(&cm->entries[pos]);
        cm->entries[pos] = copy;
        if (replaced) *replaced = 1;
        return TMOE_OK;
    }
    if (cm->n == cm->cap) {
        int ncap = cm->cap ? cm->cap * 2 : 64;
        tmoe_cost_entry *p = realloc(cm->entries, (size_t)ncap * sizeof *p);
        if (!p) {
            entry_release(&copy);
            return tmoe_errorf(err, TMOE_ENOMEM,
                               "out of memory growing the cost model to %d entries", ncap);
        }
        cm->entries = p;
        cm->cap = ncap;
    }
    memmove(&cm->entries[pos + 1], &cm->entries[pos], (size_t)(cm->n - pos) * sizeof *cm->entries);
    cm->entries[pos] = copy;
    cm->n++;
    return TMOE_OK;
}

int tmoe_cost_add(tmoe_cost_model *cm, const tmoe_cost_entry *e, tmoe_error *err) {
    int rc = tmoe__cost_check_entry(e, err);
    if (rc)
        return tmoe_error_prefix(err, rc, "cost entry %s/%s/%s tokens %d", tmoe_op_name(e->op),
                                 tmoe_etype_name(e->expert_type), tmoe_impl_name(e->impl),
                                 e->tokens);
    int replaced = 0;
    rc = tmoe__cost_insert(cm, e, &replaced, err);
    if (rc == TMOE_OK && replaced)
        tmoe_log(TMOE_LOG_INFO, "cost model: replaced %s/%s/%s tokens %d", tmoe_op_name(e->op),
                 tmoe_etype_name(e->expert_type), tmoe_impl_name(e->impl), e->tokens);
    return rc;
}

/* ---- lookups ------------------------------------------------------------------------- */

/* Append "op/type/impl (tokens a-b)" for every key the model has, truncated to fit. */
static void list_keys(const tmoe_cost_model *cm, char *buf, size_t cap) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < cm->n;) {
        const tmoe_cost_entry *a = &cm->entries[i];
        int j = i;
        while (j + 1 < cm->n && key_cmp(a->op, a->expert_type, a->impl, &cm->entries[j + 1]) == 0)
            j++;
        int w = snprintf(buf + used, cap - used, "%s%s/%s/%s (tokens %d-%d)", used ? ", " : "",
                         tmoe_op_name(a->op), tmoe_etype_name(a->expert_type),
                         tmoe_impl_name(a->impl), a->tokens, cm->entries[j].tokens);
        if (w < 0 || (size_t)w >= cap - used) {
            if (cap > 5) memcpy(buf + cap - 5, "...", 4);
            return;
        }
        used += (size_t)w;
        i = j + 1;
    }
    if (!used) snprintf(buf, cap, "no entries at all");
}

static double lerp(double a, double b, double w) {
    return a + w * (b - a);
}

int tmoe_cost_lookup(const tmoe_cost_model *cm, tmoe_op op, tmoe_etype et, tmoe_impl impl,
                     double tokens, tmoe_cost_value *out, tmoe_error *err) {
    memset(out, 0, sizeof *out);
    if (!(tokens >= 1.0) || !isfinite(tokens))
        return tmoe_errorf(err, TMOE_EINVAL, "cost lookup: tokens must be >= 1, got %g", tokens);
    tmoe_cost_entry probe = {.op = op, .expert_type = et, .impl = impl, .tokens = 0};
    int first = lower_bound(cm, &probe);
    int last = first;
    while (last < cm->n && key_cmp(op, et, impl, &cm->entries[last]) == 0) last++;
    if (last == first && et == TMOE_ET_BF16) /* the bytes and the kernel shape of fp16 */
        return tmoe_cost_lookup(cm, op, TMOE_ET_FP16, impl, tokens, out, err);
    if (last == first) {
        char have[700];
        list_keys(cm, have, sizeof have);
        return tmoe_errorf(err, TMOE_EINVAL, "%s: no cost entry for %s/%s/%s; it has: %s",
                           cm->source, tmoe_op_name(op), tmoe_etype_name(et), tmoe_impl_name(impl),
                           have);
    }
    const tmoe_cost_entry *e = cm->entries;
    int lo, hi; /* segment [lo, hi] used */
    int extrap = 0;
    if (tokens <= e[first].tokens) {
        lo = first;
        hi = first + 1 < last ? first + 1 : first;
        extrap = tokens < e[first].tokens;
    } else if (tokens >= e[last - 1].tokens) {
        hi = last - 1;
        lo = hi - 1 >= first ? hi - 1 : hi;
        extrap = tokens > e[last - 1].tokens;
    } else {
        lo = first;
        while (e[lo + 1].tokens < tokens) lo++;
        hi = lo + 1;
    }
    double w;
    if (extrap && cm->extrap == TMOE_COST_EXTRAP_CLAMP) {
        lo = hi = tokens < e[first].tokens ? first : last - 1;
        w = 0.0;
    } else if (lo == hi) {
        w = 0.0;
    } else {
        w = (log(tokens) - log((double)e[lo].tokens)) /
            (log((double)e[hi].tokens) - log((double)e[lo].tokens));
    }
    if (!extrap && tokens == e[lo].tokens) { /* exact hit: report the one point used */
        hi = lo;
        w = 0.0;
    } else if (!extrap && tokens == e[hi].tokens) {
        lo = hi;
        w = 0.0;
    }
    const tmoe_cost_entry *a = &e[lo], *b = &e[hi];
    out->latency_ms = fmax(0.0, lerp(a->latency_median_ms, b->latency_median_ms, w));
    out->latency_p90_ms = fmax(0.0, lerp(a->latency_p90_ms, b->latency_p90_ms, w));
    out->energy_j = fmax(0.0, lerp(a->energy_board_j, b->energy_board_j, w));
    out->energy_dynamic_j = lerp(a->energy_dynamic_j, b->energy_dynamic_j, w);
    out->avg_power_w = fmax(0.0, lerp(a->avg_power_w, b->avg_power_w, w));
    out->temp_impact_c_per_s = lerp(a->temp_impact_c_per_s, b->temp_impact_c_per_s, w);
    /* fmax drops a NAN operand; keep unknown values unknown */
    if (isnan(lerp(a->latency_p90_ms, b->latency_p90_ms, w))) out->latency_p90_ms = NAN;
    if (isnan(lerp(a->energy_board_j, b->energy_board_j, w))) out->energy_j = NAN;
    if (isnan(lerp(a->avg_power_w, b->avg_power_w, w))) out->avg_power_w = NAN;
    out->extrapolated = extrap;
    out->lo_tokens = a->tokens;
    out->hi_tokens = b->tokens;
    return TMOE_OK;
}

int tmoe_cost_crossover(const tmoe_cost_model *cm, tmoe_etype et, tmoe_impl from, tmoe_impl to,
                        int max_tokens, int *n, tmoe_error *err) {
    *n = 0;
    if (max_tokens < 1)
        return tmoe_errorf(err, TMOE_EINVAL, "crossover: max_tokens = %d: must be >= 1",
                           max_tokens);
    /* walk down from max_tokens while `to` stays faster: the last such count is the answer */
    for (int t = max_tokens; t >= 1; t--) {
        tmoe_cost_value vf, vt;
        int rc = tmoe_cost_expert(cm, et, from, t, &vf, err);
        if (!rc) rc = tmoe_cost_expert(cm, et, to, t, &vt, err);
        if (rc)
            return tmoe_error_prefix(err, rc, "crossover of %s experts, %s -> %s",
                                     tmoe_etype_name(et), tmoe_impl_name(from), tmoe_impl_name(to));
        if (!(vt.latency_ms < vf.latency_ms)) break;
        *n = t;
    }
    return TMOE_OK;
}

int tmoe_cost_expert(const tmoe_cost_model *cm, tmoe_etype et, tmoe_impl impl, double tokens,
                     tmoe_cost_value *out, tmoe_error *err) {
    memset(out, 0, sizeof *out);
    if (tokens == 0.0) return TMOE_OK;
    tmoe_op seq[4];
    int n = tmoe_expert_op_sequence(et, impl, seq);
    for (int i = 0; i < n; i++) {
        tmoe_cost_value v;
        int rc = tmoe_cost_lookup(cm, seq[i], et, impl, tokens, &v, err);
        if (rc) return rc;
        out->latency_ms += v.latency_ms;
        out->latency_p90_ms += v.latency_p90_ms;
        out->energy_j += v.energy_j;
        out->energy_dynamic_j += v.energy_dynamic_j;
        out->temp_impact_c_per_s += v.temp_impact_c_per_s;
        out->extrapolated |= v.extrapolated;
        if (i == 0 || v.lo_tokens < out->lo_tokens) out->lo_tokens = v.lo_tokens;
        if (v.hi_tokens > out->hi_tokens) out->hi_tokens = v.hi_tokens;
    }
    out->avg_power_w = out->latency_ms > 0 ? out->energy_j / (out->latency_ms * 1e-3) : NAN;
    return TMOE_OK;
}

int tmoe_cost_energy_loss(const tmoe_cost_model *cm, int n_tokens, int k, const int32_t *expert_ids,
                          const float *probs, int n_experts, const tmoe_etype *expert_types,
                          tmoe_impl impl, double *loss_j, tmoe_error *err) {
    *loss_j = 0.0;
    if (n_tokens < 0 || k < 1 || n_experts < 1 || n_experts > TMOE_COST_MAX_EXPERTS)
        return tmoe_errorf(
            err, TMOE_EINVAL,
            "energy loss: need n_tokens >= 0, k >= 1, 1 <= n_experts <= %d (got %d, %d, %d)",
            TMOE_COST_MAX_EXPERTS, n_tokens, k, n_experts);
    int32_t counts[TMOE_COST_MAX_EXPERTS];
    double energy[TMOE_COST_MAX_EXPERTS];
    memset(counts, 0, (size_t)n_experts * sizeof *counts);
    for (int64_t i = 0; i < (int64_t)n_tokens * k; i++) {
        int32_t id = expert_ids[i];
        if (id < 0) continue;
        if (id >= n_experts)
            return tmoe_errorf(err, TMOE_EINVAL,
                               "energy loss: expert id %d at choice %lld is >= n_experts %d", id,
                               (long long)i, n_experts);
        counts[id]++;
    }
    for (int x = 0; x < n_experts; x++) {
        energy[x] = 0.0;
        if (!counts[x]) continue;
        tmoe_cost_value v;
        int rc = tmoe_cost_expert(cm, expert_types[x], impl, counts[x], &v, err);
        if (rc) return tmoe_error_prefix(err, rc, "energy loss: expert %d", x);
        if (isnan(v.energy_j))
            return tmoe_errorf(
                err, TMOE_EINVAL,
                "energy loss: expert %d (%s/%s): %s has no board energy for its ops; profile "
                "them with power telemetry",
                x, tmoe_etype_name(expert_types[x]), tmoe_impl_name(impl), cm->source);
        energy[x] = v.energy_j;
    }
    double sum = 0.0;
    for (int64_t i = 0; i < (int64_t)n_tokens * k; i++)
        if (expert_ids[i] >= 0) sum += (double)probs[i] * energy[expert_ids[i]];
    *loss_j = sum;
    return TMOE_OK;
}

/* ---- merging ------------------------------------------------------------------------- */

static void meta_fill(tmoe_cost_meta *d, const tmoe_cost_meta *s) {
#define FILL_STR(f)                                                                                \
    if (!d->f[0]) memcpy(d->f, s->f, sizeof d->f)
    FILL_STR(device_name);
    FILL_STR(device_uuid);
    FILL_STR(device_driver);
    FILL_STR(device_telemetry);
    FILL_STR(created);
    FILL_STR(tool);
#undef FILL_STR
    if (isnan(d->power_limit_w)) d->power_limit_w = s->power_limit_w;
    if (isnan(d->idle_power_w)) d->idle_power_w = s->idle_power_w;
    if (!d->d_model && !d->d_ff && !d->group_size) {
        d->d_model = s->d_model;
        d->d_ff = s->d_ff;
        d->group_size = s->group_size;
    }
}

int tmoe_cost_merge(tmoe_cost_model *dst, const tmoe_cost_model *src, tmoe_error *err) {
    const tmoe_cost_meta *a = &dst->meta, *b = &src->meta;
    int a_shape = a->d_model || a->d_ff || a->group_size,
        b_shape = b->d_model || b->d_ff || b->group_size;
    if (a_shape && b_shape &&
        (a->d_model != b->d_model || a->d_ff != b->d_ff || a->group_size != b->group_size))
        return tmoe_errorf(
            err, TMOE_EINVAL,
            "cannot merge %s (shape d_model %d, d_ff %d, group %d) into %s (shape %d, %d, %d): "
            "costs measured at different shapes",
            src->source, b->d_model, b->d_ff, b->group_size, dst->source, a->d_model, a->d_ff,
            a->group_size);
    if (a->device_name[0] && b->device_name[0] && strcmp(a->device_name, b->device_name) != 0)
        tmoe_log(TMOE_LOG_WARN, "merging costs from device '%s' (%s) with device '%s' (%s)",
                 b->device_name, src->source, a->device_name, dst->source);
    meta_fill(&dst->meta, &src->meta);
    for (int i = 0; i < src->n; i++) {
        const tmoe_cost_entry *e = &src->entries[i];
        int replaced = 0;
        int rc = tmoe__cost_insert(dst, e, &replaced, err);
        if (rc) return rc;
        if (replaced)
            tmoe_log(TMOE_LOG_INFO, "merge: %s/%s/%s tokens %d from %s replaces the earlier entry",
                     tmoe_op_name(e->op), tmoe_etype_name(e->expert_type), tmoe_impl_name(e->impl),
                     e->tokens, src->source);
    }
    return TMOE_OK;
}
