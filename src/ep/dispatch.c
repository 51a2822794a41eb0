/* Expert placement and the per-batch dispatch plan of expert parallelism (see
 * include/thermoe/ep.h). Counting sorts only: every order is stable, so the plan is a
 * function of the routing alone and the grouped rows of one rank match the single-device
 * permute exactly. */
#include "thermoe/ep.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const place_names[TMOE_PLACE_COUNT] = {"round_robin", "file"};

const char *tmoe_placement_kind_name(tmoe_placement_kind k) {
    return (unsigned)k < TMOE_PLACE_COUNT ? place_names[k] : "unknown";
}

int tmoe_placement_kind_parse(const char *s, tmoe_placement_kind *out) {
    for (int i = 0; i < TMOE_PLACE_COUNT; i++)
        if (!strcmp(s, place_names[i])) {
            *out = (tmoe_placement_kind)i;
            return TMOE_OK;
        }
    return TMOE_EINVAL;
}

static int check_sizes(int E, int N, tmoe_error *err) {
    if (E < 1 || E > TMOE_MAX_EXPERTS)
        return tmoe_errorf(err, TMOE_EINVAL, "placement: %d experts (expected 1..%d)", E,
                           TMOE_MAX_EXPERTS);
    if (N < 1 || N > TMOE_DISPATCH_MAX_DEVICES)
        return tmoe_errorf(err, TMOE_EINVAL, "placement: %d devices (expected 1..%d)", N,
                           TMOE_DISPATCH_MAX_DEVICES);
    return TMOE_OK;
}

int tmoe_placement_from_array(const int32_t *dev, int E, int N, tmoe_placement *out,
                              tmoe_error *err) {
    int rc = check_sizes(E, N, err);
    if (rc) return rc;
    memset(out, 0, sizeof *out);
    out->num_experts = E;
    out->num_devices = N;
    int32_t per[TMOE_DISPATCH_MAX_DEVICES] = {0};
    for (int e = 0; e < E; e++) {
        if (dev[e] < 0 || dev[e] >= N)
            return tmoe_errorf(err, TMOE_EINVAL,
                               "placement: expert %d on device %d (expected 0..%d)", e, (int)dev[e],
                               N - 1);
        out->device[e] = dev[e];
        out->local[e] = per[dev[e]]++;
    }
    out->first[0] = 0;
    for (int d = 0; d < N; d++) out->first[d + 1] = out->first[d] + per[d];
    for (int e = 0; e < E; e++) out->by_device[out->first[dev[e]] + out->local[e]] = e;
    return TMOE_OK;
}

int tmoe_placement_round_robin(int E, int N, tmoe_placement *out, tmoe_error *err) {
    int rc = check_sizes(E, N, err);
    if (rc) return rc;
    int32_t dev[TMOE_MAX_EXPERTS];
    for (int e = 0; e < E; e++) dev[e] = e % N;
    return tmoe_placement_from_array(dev, E, N, out, err);
}

/* Next integer token of line s (advances *s); 0 ok, 1 none left, -1 not an integer. */
static int next_int(const char **s, long *v) {
    const char *p = *s;
    while (*p == ' ' || *p == '\t' || *p == '\r') p++;
    if (!*p || *p == '#' || *p == '\n') {
        *s = p;
        return 1;
    }
    char *end;
    errno = 0;
    *v = strtol(p, &end, 10);
    if (end == p || errno || (*end && !isspace((unsigned char)*end) && *end != '#')) return -1;
    *s = end;
    return 0;
}

int tmoe_placement_parse(const char *text, const char *name, int E, int N, tmoe_placement *out,
                         tmoe_error *err) {
    int rc = check_sizes(E, N, err);
    if (rc) return rc;
    int32_t dev[TMOE_MAX_EXPERTS], seen_line[TMOE_MAX_EXPERTS];
    for (int e = 0; e < E; e++) seen_line[e] = 0;
    int line = 0;
    for (const char *p = text; *p;) {
        line++;
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char buf[512];
        if (len >= sizeof buf)
            return tmoe_errorf(err, TMOE_EFORMAT,
                               "%s:%d: line too long (expected \"expert device\")", name, line);
        memcpy(buf, p, len);
        buf[len] = '\0';
        p += len + (nl ? 1 : 0);
        const char *s = buf;
        long ex, dv, extra;
        int r1 = next_int(&s, &ex);
        if (r1 == 1) continue; /* blank or comment */
        int r2 = r1 ? -1 : next_int(&s, &dv);
        if (r1 || r2)
            return tmoe_errorf(err, TMOE_EFORMAT,
                               "%s:%d: expected \"expert device\" (two integers), got '%s'", name,
                               line, buf);
        if (next_int(&s, &extra) != 1)
            return tmoe_errorf(err, TMOE_EFORMAT,
                               "%s:%d: expected \"expert device\", got extra text '%s'", name, line,
                               s);
        if (ex < 0 || ex >= E)
            return tmoe_errorf(err, TMOE_EFORMAT,
                               "%s:%d: expert %ld out of range (the model has %d experts: 0..%d)",
                               name, line, ex, E, E - 1);
        if (dv < 0 || dv >= N)
            return tmoe_errorf(err, TMOE_EFORMAT,
                               "%s:%d: device %ld out of range (%d devices: 0..%d)", name, line, dv,
                               N, N - 1);
        if (seen_line[ex])
            return tmoe_errorf(err, TMOE_EFORMAT,
                               "%s:%d: expert %ld placed twice (first at line %d)", name, line, ex,
                               (int)seen_line[ex]);
        seen_line[ex] = line;
        dev[ex] = (int32_t)dv;
    }
    for (int e = 0; e < E; e++)
        if (!seen_line[e])
            return tmoe_errorf(err, TMOE_EFORMAT,
                               "%s:%d: expert %d is not placed (every expert 0..%d needs a line)",
                               name, line, e, E - 1);
    return tmoe_placement_from_array(dev, E, N, out, err);
}

int tmoe_placement_load(const char *path, int E, int N, tmoe_placement *out, tmoe_error *err) {
    /* a regular file of at most 16 MiB: a FIFO or a device is refused at once */
    size_t n = 0;
    char *text = tmoe_file_read_all(path, (size_t)16 << 20, &n, err);
    if (!text) return tmoe_error_prefix(err, TMOE_EIO, "placement file");
    int rc = strlen(text) != n ? tmoe_errorf(err, TMOE_EFORMAT, "%s: contains a NUL byte", path)
                               : tmoe_placement_parse(text, path, E, N, out, err);
    free(text);
    return rc;
}

/* Written to a temporary file and renamed over path: a crash or a full disk leaves the
 * previous placement, never a torn file. */
int tmoe_placement_save(const tmoe_placement *pl, const char *path, tmoe_error *err) {
    tmoe_atomic_file af;
    int rc = tmoe_atomic_open(&af, path, err);
    if (rc) return rc;
    int bad = fprintf(af.f, "# expert device (%d experts on %d devices)\n", pl->num_experts,
                      pl->num_devices) < 0;
    for (int e = 0; e < pl->num_experts && !bad; e++)
        bad = fprintf(af.f, "%d %d\n", e, (int)pl->device[e]) < 0;
    if (bad) {
        tmoe_atomic_abort(&af);
        return tmoe_errorf(err, TMOE_EIO, "cannot write %s: %s; left unchanged", path,
                           strerror(errno));
    }
    return tmoe_atomic_commit(&af, err);
}

/* ---- dispatch plan ------------------------------------------------------------------- */

struct tmoe_dispatch {
    tmoe_placement pl;
    int rank, max_tokens, k;
    int T, planned_send, planned_recv;
    /* send side */
    int32_t send_counts[TMOE_DISPATCH_MAX_DEVICES];
    int32_t send_displs[TMOE_DISPATCH_MAX_DEVICES + 1];
    int32_t expert_counts[TMOE_MAX_EXPERTS]; /* by_device order */
    int32_t *src, *pos;                      /* (max_tokens * k) */
    /* receive side */
    int L, rows, cap_rows;
    int32_t recv_counts[TMOE_DISPATCH_MAX_DEVICES];
    int32_t recv_displs[TMOE_DISPATCH_MAX_DEVICES + 1];
    int32_t *cnt; /* (N, L) copy of the count exchange */
    int32_t lcounts[TMOE_MAX_EXPERTS], loffsets[TMOE_MAX_EXPERTS + 1];
    int32_t *to_grouped, *from_grouped; /* (cap_rows) */
};

int tmoe_dispatch_create(const tmoe_placement *pl, int rank, int max_tokens, int top_k,
                         tmoe_dispatch **out, tmoe_error *err) {
    *out = NULL;
    int rc = check_sizes(pl->num_experts, pl->num_devices, err);
    if (rc) return rc;
    if (rank < 0 || rank >= pl->num_devices)
        return tmoe_errorf(err, TMOE_EINVAL, "dispatch: rank %d (expected 0..%d)", rank,
                           pl->num_devices - 1);
    if (top_k < 1 || top_k > pl->num_experts || top_k > TMOE_MAX_TOPK)
        return tmoe_errorf(err, TMOE_EINVAL, "dispatch: top_k %d (expected 1..%d)", top_k,
                           pl->num_experts < TMOE_MAX_TOPK ? pl->num_experts : TMOE_MAX_TOPK);
    /* a rank receives at most every rank's whole batch */
    if (max_tokens < 1 || (long long)max_tokens * top_k * pl->num_devices > INT_MAX / 2)
        return tmoe_errorf(err, TMOE_EINVAL, "dispatch: max_tokens %d too large for %d x %d copies",
                           max_tokens, top_k, pl->num_devices);
    tmoe_dispatch *d = tmoe_calloc(1, sizeof *d, err);
    if (!d) return TMOE_ENOMEM;
    d->pl = *pl;
    d->rank = rank;
    d->max_tokens = max_tokens;
    d->k = top_k;
    d->L = pl->first[rank + 1] - pl->first[rank];
    d->cap_rows = max_tokens * top_k * pl->num_devices;
    size_t copies = (size_t)max_tokens * top_k;
    d->src = tmoe_malloc(sizeof(int32_t) * copies, err);
    d->pos = d->src ? tmoe_malloc(sizeof(int32_t) * copies, err) : NULL;
    d->cnt = d->pos
                 ? tmoe_malloc(sizeof(int32_t) * (size_t)pl->num_devices * (d->L ? d->L : 1), err)
                 : NULL;
    d->to_grouped = d->cnt ? tmoe_malloc(sizeof(int32_t) * (size_t)d->cap_rows, err) : NULL;
    d->from_grouped =
        d->to_grouped ? tmoe_malloc(sizeof(int32_t) * (size_t)d->cap_rows, err) : NULL;
    if (!d->from_grouped) {
        tmoe_dispatch_free(d);
        return TMOE_ENOMEM;
    }
    *out = d;
    return TMOE_OK;
}

void tmoe_dispatch_free(tmoe_dispatch *d) {
    if (!d) return;
    free(d->src);
    free(d->pos);
    free(d->cnt);
    free(d->to_grouped);
    free(d->from_grouped);
    free(d);
}

const tmoe_placement *tmoe_dispatch_placement(const tmoe_dispatch *d) {
    return &d->pl;
}

int tmoe_dispatch_plan_send(tmoe_dispatch *d, const int32_t *idx, int T, tmoe_error *err) {
    const tmoe_placement *pl = &d->pl;
    int E = pl->num_experts, N = pl->num_devices, k = d->k;
    d->planned_send = 0;
    if (T < 0 || T > d->max_tokens)
        return tmoe_errorf(err, TMOE_EINVAL, "dispatch: %d tokens (expected 0..%d)", T,
                           d->max_tokens);
    int32_t per_expert[TMOE_MAX_EXPERTS] = {0};
    for (int i = 0; i < T * k; i++) {
        if (idx[i] < 0 || idx[i] >= E)
            return tmoe_errorf(err, TMOE_EINVAL,
                               "dispatch: token %d slot %d routed to expert %d "
                               "(expected 0..%d)",
                               i / k, i % k, (int)idx[i], E - 1);
        per_expert[idx[i]]++;
    }
    /* send rows ordered by (device, local expert) = by_device order, then (token, slot) */
    int32_t fill[TMOE_MAX_EXPERTS];
    int32_t off = 0;
    for (int i = 0; i < E; i++) {
        int e = pl->by_device[i];
        d->expert_counts[i] = per_expert[e];
        fill[e] = off;
        off += per_expert[e];
    }
    for (int dv = 0; dv < N; dv++) {
        int32_t s = 0;
        for (int i = pl->first[dv]; i < pl->first[dv + 1]; i++) s += d->expert_counts[i];
        d->send_counts[dv] = s;
    }
    d->send_displs[0] = 0;
    for (int dv = 0; dv < N; dv++) d->send_displs[dv + 1] = d->send_displs[dv] + d->send_counts[dv];
    for (int i = 0; i < T * k; i++) {
        int32_t p = fill[idx[i]]++;
        d->src[p] = i;
        d->pos[i] = p;
    }
    d->T = T;
    d->planned_send = 1;
    return TMOE_OK;
}

tmoe_dispatch_send tmoe_dispatch_send_plan(const tmoe_dispatch *d) {
    TMOE_ASSERT(d->planned_send);
    tmoe_dispatch_send s = {.tokens = d->T,
                            .top_k = d->k,
                            .num_devices = d->pl.num_devices,
                            .counts = d->send_counts,
                            .displs = d->send_displs,
                            .src = d->src,
                            .pos = d->pos,
                            .expert_counts = d->expert_counts};
    return s;
}

/* plan_recv on counts rows of `stride` entries (the first L of each are the counts). */
static int plan_recv_rows(tmoe_dispatch *d, const int32_t *counts, size_t stride, tmoe_error *err) {
    int N = d->pl.num_devices, L = d->L;
    d->planned_recv = 0;
    long long total = 0;
    for (int s = 0; s < N; s++) {
        long long from_s = 0;
        for (int l = 0; l < L; l++) {
            int32_t c = counts[(size_t)s * stride + l];
            if (c < 0)
                return tmoe_errorf(err, TMOE_EINVAL,
                                   "dispatch: rank %d gets %d rows from rank %d for "
                                   "local expert %d",
                                   d->rank, (int)c, s, l);
            from_s += c;
        }
        if (from_s > (long long)d->max_tokens * d->k)
            return tmoe_errorf(err, TMOE_EINVAL,
                               "dispatch: rank %d gets %lld rows from rank %d "
                               "(a rank sends at most max_tokens x top_k = %d)",
                               d->rank, from_s, s, d->max_tokens * d->k);
        total += from_s;
    }
    TMOE_ASSERT(total <= d->cap_rows);
    for (int q = 0; q < N && L; q++)
        memcpy(d->cnt + (size_t)q * L, counts + (size_t)q * stride, sizeof(int32_t) * (size_t)L);
    for (int l = 0; l < L; l++) d->lcounts[l] = 0;
    d->recv_displs[0] = 0;
    for (int s = 0; s < N; s++) {
        int32_t r = 0;
        for (int l = 0; l < L; l++) {
            r += counts[(size_t)s * stride + l];
            d->lcounts[l] += counts[(size_t)s * stride + l];
        }
        d->recv_counts[s] = r;
        d->recv_displs[s + 1] = d->recv_displs[s] + r;
    }
    d->loffsets[0] = 0;
    for (int l = 0; l < L; l++) d->loffsets[l + 1] = d->loffsets[l] + d->lcounts[l];
    /* receive order (source, local expert, row); grouped order (local expert, source, row) */
    int32_t fill[TMOE_MAX_EXPERTS];
    memcpy(fill, d->loffsets, sizeof(int32_t) * (size_t)L);
    int32_t i = 0;
    for (int s = 0; s < N; s++)
        for (int l = 0; l < L; l++)
            for (int32_t c = 0; c < counts[(size_t)s * stride + l]; c++, i++) {
                int32_t g = fill[l]++;
                d->to_grouped[i] = g;
                d->from_grouped[g] = i;
            }
    d->rows = (int)total;
    d->planned_recv = 1;
    return TMOE_OK;
}

int tmoe_dispatch_plan_recv(tmoe_dispatch *d, const int32_t *counts, tmoe_error *err) {
    return plan_recv_rows(d, counts, (size_t)d->L, err);
}

size_t tmoe_dispatch_payload_offset(const tmoe_placement *pl, int q) {
    return (size_t)pl->first[q] + (size_t)q;
}

void tmoe_dispatch_pack_payload(const tmoe_dispatch *d, int32_t *pay) {
    TMOE_ASSERT(d->planned_send);
    for (int q = 0; q < d->pl.num_devices; q++) {
        int a = d->pl.first[q], n = d->pl.first[q + 1] - a;
        int32_t *p = pay + tmoe_dispatch_payload_offset(&d->pl, q);
        memcpy(p, d->expert_counts + a, sizeof(int32_t) * (size_t)n);
        p[n] = d->T * d->k;
    }
}

int tmoe_dispatch_plan_recv_payload(tmoe_dispatch *d, const int32_t *pay, long *copies,
                                    tmoe_error *err) {
    size_t stride = (size_t)d->L + 1;
    if (copies) {
        *copies = 0;
        for (int q = 0; q < d->pl.num_devices; q++) *copies += pay[(size_t)q * stride + d->L];
    }
    return plan_recv_rows(d, pay, stride, err);
}

tmoe_dispatch_recv tmoe_dispatch_recv_plan(const tmoe_dispatch *d) {
    TMOE_ASSERT(d->planned_recv);
    tmoe_dispatch_recv r = {.rank = d->rank,
                            .num_devices = d->pl.num_devices,
                            .num_local = d->L,
                            .experts = d->pl.by_device + d->pl.first[d->rank],
                            .counts = d->recv_counts,
                            .displs = d->recv_displs,
                            .rows = d->rows,
                            .expert_counts = d->lcounts,
                            .expert_offsets = d->loffsets,
                            .to_grouped = d->to_grouped,
                            .from_grouped = d->from_grouped};
    return r;
}

void tmoe_dispatch_pack(const tmoe_dispatch *d, const void *x, size_t row_bytes, void *send) {
    TMOE_ASSERT(d->planned_send);
    const uint8_t *in = x;
    uint8_t *o = send;
    for (int i = 0; i < d->T * d->k; i++)
        memcpy(o + (size_t)i * row_bytes, in + (size_t)(d->src[i] / d->k) * row_bytes, row_bytes);
}

void tmoe_dispatch_group(const tmoe_dispatch *d, const void *recv, size_t row_bytes,
                         void *grouped) {
    TMOE_ASSERT(d->planned_recv);
    const uint8_t *in = recv;
    uint8_t *o = grouped;
    for (int i = 0; i < d->rows; i++)
        memcpy(o + (size_t)d->to_grouped[i] * row_bytes, in + (size_t)i * row_bytes, row_bytes);
}

void tmoe_dispatch_ungroup(const tmoe_dispatch *d, const void *grouped, size_t row_bytes,
                           void *ret) {
    TMOE_ASSERT(d->planned_recv);
    const uint8_t *in = grouped;
    uint8_t *o = ret;
    for (int i = 0; i < d->rows; i++)
        memcpy(o + (size_t)i * row_bytes, in + (size_t)d->to_grouped[i] * row_bytes, row_bytes);
}

void tmoe_dispatch_send_slice(const tmoe_dispatch *d, int q, int j, int32_t *first, int32_t *n) {
    TMOE_ASSERT(d->planned_send && q >= 0 && q < d->pl.num_devices && j >= 0);
    const int32_t *c = d->expert_counts + d->pl.first[q];
    int32_t off = d->send_displs[q];
    *first = off;
    *n = 0;
    if (j >= d->pl.first[q + 1] - d->pl.first[q]) return;
    for (int i = 0; i < j; i++) off += c[i];
    *first = off;
    *n = c[j];
}

void tmoe_dispatch_recv_slice(const tmoe_dispatch *d, int q, int j, int32_t *first, int32_t *n) {
    TMOE_ASSERT(d->planned_recv && q >= 0 && q < d->pl.num_devices && j >= 0);
    const int32_t *c = d->cnt + (size_t)q * d->L;
    int32_t off = d->recv_displs[q];
    *first = off;
    *n = 0;
    if (j >= d->L) return;
    for (int i = 0; i < j; i++) off += c[i];
    *first = off;
    *n = c[j];
}

int tmoe_placement_for_ranks(const tmoe_placement *given, int num_experts, int num_ranks,
                             tmoe_placement *out, tmoe_error *err) {
    if (!given) return tmoe_placement_round_robin(num_experts, num_ranks, out, err);
    if (given->num_experts != num_experts || given->num_devices != num_ranks)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "placement of %d experts on %d devices for a block of %d experts "
                           "over %d ranks",
                           given->num_experts, given->num_devices, num_experts, num_ranks);
    *out = *given;
    return TMOE_OK;
}
