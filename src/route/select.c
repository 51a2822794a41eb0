/* Expert-set selection: per batch, the set S of experts whose predicted step energy is
 * lowest under a quality budget (tau, top1 or kl); exact over the subsets of the batch's
 * unbiased top-k experts when that is cheap, Wolsey's greedy cover otherwise (contracts and
 * guarantees in thermoe/route.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "route/route_internal.h"
#include "thermoe/model.h"

#define UMAX TMOE_SET_EXACT_MAX_U

struct tmoe_set_selector {
    int E, k, max_tokens;
    int32_t *idx;  /* (T, k) unbiased top-k */
    float *w;      /* (T, k) its probabilities, renormalised over the top-k */
    double *ptop;  /* (T) full-softmax mass of the top-k */
    double *tot;   /* (T) sum of w over the top-k, in slot order */
    double *cov;   /* (T) greedy: mass of the top-k covered so far */
    int32_t *inv;  /* (T k) greedy: the top-k slots t k + j of each expert, expert by expert */
    float *pfull;  /* (T, E) full softmax */
    uint8_t *ord;  /* (T, UMAX) exact path: U positions by decreasing biased score */
    int32_t *sidx; /* (T, k) a selection within a set */
    double *ctab;  /* (UMAX, max_tokens + 1) exact path: energy of expert U[u] at n tokens,
                      NAN until asked (each count's cost is evaluated once per call) */
    /* exact path, kl budget: every subset's routing at once (grown on demand) */
    int32_t *cntm; /* (2^|U|, |U|) tokens of each member */
    double *psm;   /* (2^|U|, T) each token's full-softmax mass of its selection */
    uint8_t *topm; /* (2^|U|, k) one token's selection in the subset, by rank */
    size_t cap_cnt, cap_ps, cap_top;
    /* the figures of the routing of the set the last tmoe_set_select chose, where it filled
     * a result (sel_valid) */
    struct route_figs {
        double energy;   /* the step's predicted energy, J */
        double kl;       /* mean ln(P_t(topk) / P_t(routed)) */
        double min_kept; /* smallest share of a token's top-k mass inside the set */
        double rshare;   /* smallest share of a token's top-k mass its routed experts hold */
        int top1;        /* every token runs its top-1 */
    } sel;
    int sel_valid;
    /* the finite range of the logits the last tmoe_set_select read (z_ok), for the exclusion
     * bias of the calls that follow it on the same logits */
    float zlo, zhi;
    int z_ok;
};
typedef struct route_figs route_figs;

int tmoe_set_selector_create(int E, int k, int max_tokens, tmoe_set_selector **out,
                             tmoe_error *err) {
    *out = NULL;
    if (E < 1 || E > TMOE_MAX_EXPERTS || k < 1 || k > E || k > TMOE_MAX_TOPK || max_tokens < 1)
        return tmoe_errorf(err, TMOE_EINVAL,
                           "set selector: E = %d (1..%d), k = %d (1..min(E, %d)), max_tokens = %d "
                           "(>= 1)",
                           E, TMOE_MAX_EXPERTS, k, TMOE_MAX_TOPK, max_tokens);
    tmoe_set_selector *s = tmoe_calloc(1, sizeof *s, err);
    if (!s) return TMOE_ENOMEM;
    s->E = E;
    s->k = k;
    s->max_tokens = max_tokens;
    size_t T = (size_t)max_tokens, TK = T * (size_t)k;
    s->idx = tmoe_malloc(sizeof(int32_t) * TK, err);
    s->w = tmoe_malloc(sizeof(float) * TK, err);
    s->ptop = tmoe_malloc(sizeof(double) * T, err);
    s->tot = tmoe_malloc(sizeof(double) * T, err);
    s->cov = tmoe_malloc(sizeof(double) * T, err);
    s->inv = tmoe_malloc(sizeof(int32_t) * TK, err);
    s->pfull = tmoe_malloc(sizeof(float) * T * (size_t)E, err);
    s->ord = tmoe_malloc(T * UMAX, err);
    s->sidx = tmoe_malloc(sizeof(int32_t) * TK, err);
    s->ctab = tmoe_malloc(sizeof(double) * UMAX * (T + 1), err);
    if (!s->idx || !s->w || !s->ptop || !s->tot || !s->cov || !s->inv || !s->pfull || !s->ord ||
        !s->sidx || !s->ctab) {
        tmoe_set_selector_free(s);
        return TMOE_ENOMEM;
    }
    *out = s;
    return TMOE_OK;
}

void tmoe_set_selector_free(tmoe_set_selector *s) {
    if (!s) return;
    free(s->idx);
    free(s->w);
    free(s->ptop);
    free(s->tot);
    free(s->cov);
    free(s->inv);
    free(s->pfull);
    free(s->ord);
    free(s->sidx);
    free(s->ctab);
    free(s->cntm);
    free(s->psm);
    free(s->topm);
    free(s);
}

/* The finite logits' range in float compares (NaN and inf fail both tests; lo > hi when none
 * is finite): branch-free min / max instructions, where fmin / fmax are library calls. */
static void logits_range(const float *logits, size_t n, float *lo, float *hi) {
    float flo = INFINITY, fhi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        float v = logits[i];
        int fin = v > -INFINITY && v < INFINITY;
        float a = fin ? v : INFINITY, b = fin ? v : -INFINITY;
        flo = a < flo ? a : flo;
        fhi = b > fhi ? b : fhi;
    }
    *lo = flo;
    *hi = fhi;
}

/* tmoe_set_exclusion_bias of logits whose finite range is [flo, fhi]. */
static float exclusion_of_range(float flo, float fhi, int E, const double *soft_bias,
                                double floor_bias) {
    double lo = flo, hi = fhi, bmax = 0.0;
    for (int e = 0; soft_bias && e < E; e++)
        if (isfinite(soft_bias[e])) bmax = fmax(bmax, fabs(soft_bias[e]));
    double x = floor_bias;
    if (lo <= hi) x = fmin(x, -(hi - lo + 2.0 * bmax + 1.0 + 1e-3 * (fabs(hi) + fabs(lo))));
    return (float)fmax(x, -1e30);
}

float tmoe_set_exclusion_bias(const float *logits, int T, int E, const double *soft_bias,
                              double floor_bias) {
    float lo, hi;
    logits_range(logits, (size_t)T * E, &lo, &hi);
    return exclusion_of_range(lo, hi, E, soft_bias, floor_bias);
}

float tmoe_set_selector_exclusion_bias(const tmoe_set_selector *s, const float *logits, int T,
                                       const double *soft_bias, double floor_bias) {
    if (!s->z_ok) return tmoe_set_exclusion_bias(logits, T, s->E, soft_bias, floor_bias);
    return exclusion_of_range(s->zlo, s->zhi, s->E, soft_bias, floor_bias);
}

int tmoe_route_step_energy(const tmoe_cost_provider *p, const int32_t *counts, int E, double *out,
                           tmoe_error *err) {
    double total = 0.0;
    for (int e = 0; e < E; e++) {
        if (counts[e] <= 0) continue;
        tmoe_expert_cost c;
        int rc = tmoe_route_cost_eval(p, e, counts[e], &c, NULL, err);
        if (rc) return rc;
        total += c.energy_j;
    }
    *out = total;
    return TMOE_OK;
}

/* Float biases for the engine's top-k within in_set: the soft bias inside, excl outside. */
static void set_biases(int E, const double *soft, const unsigned char *in_set, float excl,
                       float *fb) {
    for (int e = 0; e < E; e++) {
        float b = soft ? (float)soft[e] : 0.0f;
        fb[e] = in_set[e] ? b : b + excl;
    }
}

/* The figures of the routing in s->sidx (route_figs) for set in_set. */
static int routing_figures(const tmoe_set_selector *s, const tmoe_cost_provider *p, int T,
                           const unsigned char *in_set, route_figs *f, tmoe_error *err) {
    int E = s->E, k = s->k;
    int32_t counts[TMOE_MAX_EXPERTS] = {0};
    double klsum = 0.0, mk = 1.0, rs = 1.0;
    int top1 = 1;
    for (int t = 0; t < T; t++) {
        const int32_t *sel = s->sidx + (size_t)t * k, *top = s->idx + (size_t)t * k;
        double ps = 0.0, kept = 0.0, routed = 0.0;
        uint64_t run[TMOE_MAX_EXPERTS / 64] = {0}; /* the token's routed experts */
        for (int j = 0; j < k; j++) {
            int e = sel[j];
            counts[e]++;
            run[e >> 6] |= 1ull << (e & 63);
            ps += s->pfull[(size_t)t * E + e];
        }
        for (int j = 0; j < k; j++) {
            int x = top[j];
            if (in_set[x]) kept += s->w[(size_t)t * k + j];
            if ((run[x >> 6] >> (x & 63)) & 1u) routed += s->w[(size_t)t * k + j];
        }
        klsum += ps > 0.0 && s->ptop[t] > 0.0 ? log(s->ptop[t] / ps) : 0.0;
        if (s->tot[t] > 0.0) {
            mk = fmin(mk, kept / s->tot[t]);
            rs = fmin(rs, routed / s->tot[t]);
            top1 &= (int)((run[top[0] >> 6] >> (top[0] & 63)) & 1u);
        }
    }
    f->kl = klsum / T;
    f->min_kept = mk;
    f->rshare = rs;
    f->top1 = top1;
    return tmoe_route_step_energy(p, counts, E, &f->energy, err);
}

/* Does a routing with figures f meet budget b token by token (tau: every token's routed
 * experts hold a share >= tau of its top-k mass; top1: every token runs its top-1; kl: the
 * mean KL within the bound)? */
static int figs_meet(const tmoe_set_budget *b, const route_figs *f) {
    return b->kind == TMOE_BUDGET_KL     ? f->kl <= b->kl_max * (1.0 + 1e-9) + 1e-12
           : b->kind == TMOE_BUDGET_TOP1 ? f->top1
           : b->kind == TMOE_BUDGET_TAU  ? f->rshare >= b->tau * (1.0 - 1e-9)
                                         : 1;
}

/* Route every token to its top-k within in_set (tmoe_gate_topk, as the engine does) and
 * give that routing's figures. */
static int eval_set(tmoe_set_selector *s, const tmoe_cost_provider *p, const float *z, int T,
                    const double *soft, const unsigned char *in_set, float excl, route_figs *f,
                    tmoe_error *err) {
    int E = s->E, k = s->k;
    float fb[TMOE_MAX_EXPERTS];
    set_biases(E, soft, in_set, excl, fb);
    int zero = 1; /* the set's experts unbiased; the others' bias (soft + excl) is negative */
    for (int e = 0; e < E && zero; e++) zero = in_set[e] ? fb[e] == 0.0f : fb[e] <= 0.0f;
    if (!zero) {
        tmoe_gate_topk(z, fb, T, E, k, 1, 0, s->sidx, NULL); /* the indices are all it needs */
    } else {
        /* a token whose whole top-k lies in the set keeps it, in its order: the set's experts
         * keep their scores (+0) and the others' only fall, so gate_topk would return that
         * list; the other tokens take the pass */
        for (int t = 0; t < T; t++) {
            const int32_t *ti = s->idx + (size_t)t * k;
            int32_t *si = s->sidx + (size_t)t * k;
            int all = 1;
            for (int j = 0; j < k && all; j++) all = in_set[ti[j]];
            if (all)
                memcpy(si, ti, sizeof(int32_t) * (size_t)k);
            else
                tmoe_gate_topk(z + (size_t)t * E, fb, 1, E, k, 1, 0, si, NULL);
        }
    }
    return routing_figures(s, p, T, in_set, f, err);
}

/* The last sets eval_set evaluated in one selection, so that the result does not route a
 * set again (the same function on the same inputs: the same figures). */
typedef struct {
    int n;
    unsigned char set[2][TMOE_MAX_EXPERTS];
    route_figs figs[2];
} eval_memo;

static int eval_memo_set(tmoe_set_selector *s, const tmoe_cost_provider *p, const float *z, int T,
                         const double *soft, const unsigned char *in_set, float excl, eval_memo *m,
                         route_figs *f, tmoe_error *err) {
    int E = s->E, i;
    for (i = 0; i < m->n; i++)
        if (!memcmp(m->set[i], in_set, (size_t)E)) break;
    if (i == m->n) {
        i = m->n < 2 ? m->n++ : 1;
        int rc = eval_set(s, p, z, T, soft, in_set, excl, &m->figs[i], err);
        if (rc) {
            m->n = i; /* this entry holds nothing */
            return rc;
        }
        memcpy(m->set[i], in_set, (size_t)E);
    }
    *f = m->figs[i];
    return TMOE_OK;
}

static int popcount32(uint32_t m) {
    int n = 0;
    for (; m; m &= m - 1) n++;
    return n;
}

/* *buf holds at least n elements of size sz (grown, contents not kept). */
static int grow(void **buf, size_t *cap, size_t n, size_t sz, tmoe_error *err) {
    if (n <= *cap) return TMOE_OK;
    void *p = tmoe_malloc(n * sz, err);
    if (!p) return TMOE_ENOMEM;
    free(*buf);
    *buf = p;
    *cap = n;
    return TMOE_OK;
}

/* Energy of the routing with member counts cnt (|U| of them): each count's cost once a call
 * (s->ctab), summed over the members in U order. */
static int subset_energy(tmoe_set_selector *s, const tmoe_cost_provider *p, int T, const int *ulist,
                         int nu, const int32_t *cnt, double *out, tmoe_error *err) {
    double en = 0.0;
    for (int u = 0; u < nu; u++) {
        if (!cnt[u]) continue;
        double *cv = s->ctab + (size_t)u * (T + 1) + cnt[u];
        if (isnan(*cv)) {
            tmoe_expert_cost c;
            int rc = tmoe_route_cost_eval(p, ulist[u], cnt[u], &c, NULL, err);
            if (rc) return rc;
            *cv = c.energy_j;
        }
        en += *cv;
    }
    *out = en;
    return TMOE_OK;
}

/* The kl budget's tables over the subsets m of U that hold the needed experts (must), the
 * others never being feasible: per token, the selection of m (its k members of lowest rank
 * in the token's order) from that of m without its lowest free member, in O(k) a subset,
 * from must's own (its members in the token's order); the member counts and each token's
 * selected mass of the subsets the search may take (allowed by cand, at least k members).
 * The same selections and sums, in the same order, as routing each subset on its own. */
static int kl_tables(tmoe_set_selector *s, int T, const int *ulist, int nu, uint32_t cand,
                     uint32_t must, tmoe_error *err) {
    int E = s->E, k = s->k;
    size_t M = (size_t)1 << nu;
    uint32_t free_m = (uint32_t)(M - 1) & ~must;
    int rc = grow((void **)&s->cntm, &s->cap_cnt, M * nu, sizeof(int32_t), err);
    if (!rc) rc = grow((void **)&s->psm, &s->cap_ps, M * T, sizeof(double), err);
    if (!rc) rc = grow((void **)&s->topm, &s->cap_top, M * k, 1, err);
    if (rc) return rc;
    memset(s->cntm, 0, sizeof(int32_t) * M * nu);
    for (int t = 0; t < T; t++) {
        const uint8_t *o = s->ord + (size_t)t * UMAX;
        uint8_t rank[UMAX];
        for (int j = 0; j < nu; j++) rank[o[j]] = (uint8_t)j;
        for (uint32_t f = 0;; f = (f - free_m) & free_m) { /* the free parts, increasing */
            uint32_t m = must | f;
            uint8_t *tm = s->topm + (size_t)m * k;
            int w = 0;
            if (!f) { /* must: its first k members in the token's order */
                for (int j = 0; j < nu && w < k; j++)
                    if ((must >> o[j]) & 1u) tm[w++] = o[j];
            } else {
                uint32_t mp = must | (f & (f - 1)); /* m without its lowest free member b */
                uint8_t b = (uint8_t)__builtin_ctz(f);
                const uint8_t *tp = s->topm + (size_t)mp * k;
                int np = popcount32(mp), i = 0;
                if (np > k) np = k;
                while (i < np && w < k && rank[tp[i]] < rank[b]) tm[w++] = tp[i++];
                if (w < k) tm[w++] = b;
                while (i < np && w < k) tm[w++] = tp[i++];
            }
            if (!(m & ~cand) && w >= k) {
                int32_t *c = s->cntm + (size_t)m * nu;
                double ps = 0.0;
                for (int j = 0; j < k; j++) {
                    c[tm[j]]++;
                    ps += s->pfull[(size_t)t * E + ulist[tm[j]]];
                }
                s->psm[(size_t)m * T + t] = ps;
            }
            if (f == free_m) break;
        }
    }
    return TMOE_OK;
}

/* Sum of wu over the members of subset m. */
static double kept_share(const double *wu, int nu, uint32_t m) {
    double kept = 0.0;
    for (int u = 0; u < nu; u++)
        if ((m >> u) & 1u) kept += wu[u];
    return kept;
}

/* Exact: every subset of the nu experts of U (allowed by cand) with at least k members that
 * holds the needed experts (must). */
static int select_exact(tmoe_set_selector *s, const tmoe_cost_provider *p, const float *z, int T,
                        const tmoe_set_budget *b, const double *soft, const int *ulist, int nu,
                        const int *uid, uint32_t cand, uint32_t must, uint32_t *best_out,
                        tmoe_error *err) {
    int E = s->E, k = s->k;
    *best_out = 0;
    if (must & ~cand) return TMOE_OK; /* a needed expert is not allowed: no set meets it */
    /* per token: its top-k as U bits, and U by decreasing biased score (ties lower index) */
    for (int t = 0; t < T; t++) {
        const float *zt = z + (size_t)t * E;
        uint8_t *o = s->ord + (size_t)t * UMAX;
        float sc[UMAX];
        for (int u = 0; u < nu; u++) {
            float v = zt[ulist[u]] + (soft ? (float)soft[ulist[u]] : 0.0f);
            sc[u] = isnan(v) ? -INFINITY : v;
            int j = u;
            while (j > 0 && sc[o[j - 1]] < sc[u]) { /* stable: equal scores keep U order */
                o[j] = o[j - 1];
                j--;
            }
            o[j] = (uint8_t)u;
        }
    }
    for (int u = 0; u < nu; u++)
        for (int n = 0; n <= T; n++) s->ctab[(size_t)u * (T + 1) + n] = NAN;
    uint32_t best = 0;
    double best_e = INFINITY, best_kept = -1.0;
    /* the tie-break's kept top-k probability of a subset: the sum of its members' shares */
    double wu[UMAX] = {0};
    for (int i = 0; i < T * k; i++) wu[uid[s->idx[i]]] += s->w[i];
    if (b->kind == TMOE_BUDGET_KL) {
        /* no feasibility test prunes a subset before its routing here: the routings of all
         * subsets come from kl_tables; the kept share and the logs of the KL only for a
         * subset that would win */
        int rc = kl_tables(s, T, ulist, nu, cand, must, err);
        if (rc) return rc;
        for (uint32_t m = 1; m < (1u << nu); m++) {
            if ((m & ~cand) || (m & must) != must || popcount32(m) < k) continue;
            double en;
            if ((rc = subset_energy(s, p, T, ulist, nu, s->cntm + (size_t)m * nu, &en, err)))
                return rc;
            if (en > best_e) continue;
            double kept = kept_share(wu, nu, m);
            if (en == best_e && !(kept > best_kept)) continue;
            const double *ps = s->psm + (size_t)m * T;
            double klsum = 0.0, lim = b->kl_max * T; /* terms >= 0: stop past the bound */
            for (int t = 0; t < T && klsum <= lim; t++)
                if (ps[t] > 0.0 && s->ptop[t] > 0.0) klsum += log(s->ptop[t] / ps[t]);
            if (klsum / T > b->kl_max) continue;
            best = m;
            best_e = en;
            best_kept = kept;
        }
        *best_out = best;
        return TMOE_OK;
    }
    int first_bad = 0; /* the token that failed last: checked first */
    for (uint32_t m = 1; m < (1u << nu); m++) {
        if ((m & ~cand) || (m & must) != must || popcount32(m) < k) continue;
        /* feasibility of tau / top1 */
        int ok = 1;
        if (b->kind == TMOE_BUDGET_TAU || b->kind == TMOE_BUDGET_TOP1) {
            for (int i = 0; i < T && ok; i++) {
                int t = i == 0 ? first_bad : i == first_bad ? 0 : i;
                const int32_t *ti = s->idx + (size_t)t * k;
                if (b->kind == TMOE_BUDGET_TOP1) {
                    ok = (m >> uid[ti[0]]) & 1u;
                } else {
                    double kept = 0.0;
                    for (int j = 0; j < k; j++)
                        if ((m >> uid[ti[j]]) & 1u) kept += s->w[(size_t)t * k + j];
                    ok = kept >= b->tau * s->tot[t];
                }
                if (!ok) first_bad = t;
            }
            if (!ok) continue;
        }
        /* the routing within the subset: each token's first k of U in its order */
        int32_t cnt[UMAX] = {0};
        for (int t = 0; t < T; t++) {
            const uint8_t *o = s->ord + (size_t)t * UMAX;
            for (int j = 0, got = 0; j < nu && got < k; j++)
                if ((m >> o[j]) & 1u) {
                    cnt[o[j]]++;
                    got++;
                }
        }
        double en;
        int rc = subset_energy(s, p, T, ulist, nu, cnt, &en, err);
        if (rc) return rc;
        double kept = kept_share(wu, nu, m);
        if (!(en < best_e || (en == best_e && kept > best_kept))) continue;
        best = m;
        best_e = en;
        best_kept = kept;
    }
    *best_out = best; /* 0 when no subset meets the budget */
    return TMOE_OK;
}

/* The experts of U that every feasible set holds: e is needed when no set without it meets
 * the budget. Every smaller set then misses one of them and breaks the budget too, so the
 * exact search visits supersets of the needed experts only, and where all the allowed
 * experts of U are needed they are the only feasible set and no search runs (at decode
 * batches of 32 and more tokens over 8 experts the top-1 experts alone cover all of them).
 * tau / top1: e is needed when dropping it alone, with the rest of U kept, breaks some
 * token's kept share (which only falls as the set shrinks); the test sums it as the search
 * does. kl: for any set S without e, a token's selected mass (whatever soft biases choose)
 * is at most the top-k mass of U without e (its k most probable there), so its KL term is at
 * least log(ptop / that mass); except that the search counts a token whose selection has no
 * mass at all as 0, which S can force when U without e holds k experts of zero mass for that
 * token: such a token's bound is 0. e is needed when the mean of the bounds passes the bound
 * by a relative 1e-9, so that a subset the search would find feasible at the bound is never
 * skipped. need[u] for every u of U. */
static void needed(const tmoe_set_selector *s, const float *z, int T, const tmoe_set_budget *b,
                   const int *uid, const int *ulist, int nu, unsigned char *need) {
    int k = s->k, E = s->E;
    memset(need, 0, (size_t)nu);
    if (b->kind == TMOE_BUDGET_KL) {
        if (nu <= k) { /* no subset of U with k members but U */
            memset(need, 1, (size_t)nu);
        } else {
            double klsum[TMOE_MAX_EXPERTS] = {0};
            for (int t = 0; t < T; t++) {
                const int32_t *ti = s->idx + (size_t)t * k;
                const float *zt = z + (size_t)t * E, *pt = s->pfull + (size_t)t * E;
                if (!(s->ptop[t] > 0.0)) continue; /* the search counts it as 0 */
                /* the token's next expert of U after its top-k (U by decreasing score, NaN as
                 * -inf, ties to the lower index), and its experts of U without mass */
                unsigned char in_top[TMOE_MAX_EXPERTS] = {0};
                for (int j = 0; j < k; j++) in_top[ti[j]] = 1;
                int nx = -1, zero = 0;
                float nxs = -INFINITY;
                for (int u = 0; u < nu; u++) {
                    int e = ulist[u];
                    float sc = isnan(zt[e]) ? -INFINITY : zt[e];
                    zero += pt[e] == 0.0f;
                    if (!in_top[e] && (nx < 0 || sc > nxs)) nx = e, nxs = sc;
                }
                for (int j = 0; j < k; j++) { /* a top-k expert dropped; others leave it alone */
                    if (zero - (pt[ti[j]] == 0.0f) >= k) continue;
                    double ps = 0.0;
                    for (int i = 0; i < k; i++)
                        if (i != j) ps += pt[ti[i]];
                    ps += pt[nx];
                    if (ps > 0.0) klsum[uid[ti[j]]] += log(s->ptop[t] / ps);
                }
            }
            for (int u = 0; u < nu; u++) need[u] = klsum[u] / T > b->kl_max * (1.0 + 1e-9) + 1e-12;
        }
    } else if (b->kind == TMOE_BUDGET_TAU || b->kind == TMOE_BUDGET_TOP1) {
        for (int t = 0; t < T; t++) {
            const int32_t *ti = s->idx + (size_t)t * k;
            const float *wt = s->w + (size_t)t * k;
            if (b->kind == TMOE_BUDGET_TOP1) {
                need[uid[ti[0]]] = 1;
                continue;
            }
            for (int j = 0; j < k; j++) {
                double kept = 0.0; /* the others' share, summed in slot order as the search */
                for (int i = 0; i < k; i++)
                    if (i != j) kept += wt[i];
                if (!(kept >= b->tau * s->tot[t])) need[uid[ti[j]]] = 1;
            }
        }
    }
}

/* The greedy's candidates: a max-heap of experts by an upper bound of their gain per unit of
 * fixed cost, the lower index first among equal bounds. */
typedef struct {
    int n, e[TMOE_MAX_EXPERTS];
    double r[TMOE_MAX_EXPERTS];
} cand_heap;

static int heap_above(const cand_heap *h, int a, int b) {
    return h->r[a] > h->r[b] || (h->r[a] == h->r[b] && h->e[a] < h->e[b]);
}

static void heap_swap(cand_heap *h, int a, int b) {
    int e = h->e[a];
    double r = h->r[a];
    h->e[a] = h->e[b], h->r[a] = h->r[b];
    h->e[b] = e, h->r[b] = r;
}

static void heap_push(cand_heap *h, int e, double r) {
    int i = h->n++;
    h->e[i] = e, h->r[i] = r;
    for (; i > 0 && heap_above(h, i, (i - 1) / 2); i = (i - 1) / 2) heap_swap(h, i, (i - 1) / 2);
}

static void heap_pop(cand_heap *h) {
    h->n--;
    h->e[0] = h->e[h->n], h->r[0] = h->r[h->n];
    for (int i = 0;;) {
        int c = 2 * i + 1, m = i;
        if (c < h->n && heap_above(h, c, m)) m = c;
        if (c + 1 < h->n && heap_above(h, c + 1, m)) m = c + 1;
        if (m == i) break;
        heap_swap(h, i, m);
        i = m;
    }
}

/* Wolsey's greedy cover of f(S) = sum_t min(tau tot_t, mass of topk(t) in S) over the
 * allowed experts, by gain per unit of fixed cost; order (E) gets the experts in the order
 * added, *n_out how many. top1 is tau = 1 over each token's first slot only.
 * Lazy: an expert's gain only falls as tokens are covered (each token's need falls, and so
 * does every term, in floating point too), so a gain computed in an earlier round bounds it
 * from above. Each round refreshes the best bounds until no stale one can beat or tie the best
 * fresh gain; each gain is summed over the expert's own slots in token order, the arithmetic
 * of a full pass, so the choice (the largest ratio, the lower index on a tie) is the one a
 * full pass over every token would make, at a cost of the slots of the experts refreshed. */
static double cover_gain(const tmoe_set_selector *s, int e, const int *off, tmoe_budget_kind kind,
                         double tau) {
    double g = 0.0;
    for (int i = off[e]; i < off[e + 1]; i++) {
        int slot = s->inv[i], t = slot / s->k;
        double need =
            (kind == TMOE_BUDGET_TOP1 ? s->w[(size_t)t * s->k] : tau * s->tot[t]) - s->cov[t];
        if (need > 0.0) g += fmin(need, s->w[slot]);
    }
    return g;
}

static void greedy_cover(tmoe_set_selector *s, int T, tmoe_budget_kind kind, double tau,
                         const unsigned char *allowed, const double *fixed, unsigned char *in_set,
                         int *order, int *n_out) {
    int E = s->E, k = s->k, kk = kind == TMOE_BUDGET_TOP1 ? 1 : k;
    int n = 0;
    for (int e = 0; e < E; e++)
        if (in_set[e]) order[n++] = e;
    int off[TMOE_MAX_EXPERTS + 1] = {0};
    for (int t = 0; t < T; t++) {
        double c = 0.0;
        for (int j = 0; j < kk; j++) {
            int e = s->idx[(size_t)t * k + j];
            off[e + 1]++;
            if (in_set[e]) c += s->w[(size_t)t * k + j];
        }
        s->cov[t] = c;
    }
    for (int e = 0; e < E; e++) off[e + 1] += off[e];
    int fill[TMOE_MAX_EXPERTS];
    memcpy(fill, off, sizeof(int) * E);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < kk; j++) s->inv[fill[s->idx[(size_t)t * k + j]]++] = t * k + j;
    cand_heap h;
    h.n = 0;
    for (int e = 0; e < E; e++)
        if (!in_set[e] && allowed[e] && off[e + 1] > off[e]) heap_push(&h, e, INFINITY);
    for (;;) {
        int best = -1;
        double br = 0.0;
        while (h.n > 0) {
            int e = h.e[0];
            double ub = h.r[0];
            if (best >= 0 && (ub < br || (ub == br && e > best))) break; /* cannot beat best */
            heap_pop(&h);
            double g = cover_gain(s, e, off, kind, tau);
            if (!(g > 0.0)) continue; /* and never again */
            double r = g / fixed[e];
            if (best < 0 || r > br || (r == br && e < best)) {
                if (best >= 0) heap_push(&h, best, br);
                best = e;
                br = r;
            } else {
                heap_push(&h, e, r);
            }
        }
        if (best < 0) break;
        in_set[best] = 1;
        order[n++] = best;
        for (int i = off[best]; i < off[best + 1]; i++) {
            int slot = s->inv[i];
            s->cov[slot / k] += s->w[slot];
        }
    }
    *n_out = n;
}

int tmoe_set_select(tmoe_set_selector *s, const tmoe_cost_provider *p, const float *z, int T,
                    const tmoe_set_budget *b, const double *soft, const unsigned char *cand,
                    unsigned char *in_set, tmoe_set_result *res, tmoe_error *err) {
    int E = s->E, k = s->k, rc;
    s->sel_valid = s->z_ok = 0;
    if (T < 1 || T > s->max_tokens)
        return tmoe_errorf(err, TMOE_EINVAL, "set selection: %d tokens, expected 1..%d", T,
                           s->max_tokens);
    if ((unsigned)b->kind >= TMOE_BUDGET_COUNT || !(b->tau > 0.0 && b->tau <= 1.0) ||
        !(b->kl_max >= 0.0))
        return tmoe_errorf(err, TMOE_EINVAL,
                           "set selection: budget %d (0..%d), tau %g (in (0, 1]), kl_max %g "
                           "(>= 0)",
                           b->kind, TMOE_BUDGET_COUNT - 1, b->tau, b->kl_max);
    /* unbiased top-k and the full softmax of every token; the top-k weights, renormalised,
     * from the same exponentials and in the same arithmetic as tmoe_gate_topk (one pass of
     * exp instead of two), except where a logit is +inf (mx not finite): gate_topk's own */
    tmoe_gate_topk(z, NULL, T, E, k, 1, 0, s->idx, NULL);
    for (int t = 0; t < T; t++) {
        const float *zt = z + (size_t)t * E;
        float *pt = s->pfull + (size_t)t * E;
        int32_t *ti = s->idx + (size_t)t * k;
        float *wt = s->w + (size_t)t * k;
        double mx = -INFINITY, sum = 0.0, top = 0.0, tot = 0.0;
        for (int e = 0; e < E; e++)
            if (zt[e] > mx) mx = zt[e];
        double v[TMOE_MAX_EXPERTS];
        for (int e = 0; e < E; e++) {
            v[e] = isfinite(mx) && zt[e] > -INFINITY ? exp((double)zt[e] - mx) : 0.0;
            sum += v[e];
        }
        for (int e = 0; e < E; e++) /* through float, as before */
            pt[e] = sum > 0.0 ? (float)((float)v[e] / sum) : 0.0f;
        if (mx != INFINITY) {
            double chosen = 0.0;
            for (int j = 0; j < k; j++) {
                wt[j] = (float)v[ti[j]];
                chosen += v[ti[j]];
            }
            for (int j = 0; j < k; j++) wt[j] = chosen > 0.0 ? (float)(wt[j] / chosen) : 0.0f;
        } else {
            tmoe_gate_topk(zt, NULL, 1, E, k, 1, 0, ti, wt);
        }
        for (int j = 0; j < k; j++) {
            top += pt[ti[j]];
            tot += wt[j];
        }
        s->ptop[t] = top;
        s->tot[t] = tot;
    }
    /* U, the allowed part of it, topped up to k by total probability */
    unsigned char inu[TMOE_MAX_EXPERTS] = {0}, allowed[TMOE_MAX_EXPERTS] = {0};
    double mass[TMOE_MAX_EXPERTS] = {0};
    for (int i = 0; i < T * k; i++) {
        inu[s->idx[i]] = 1;
        mass[s->idx[i]] += s->w[i];
    }
    int nu = 0, na = 0, ulist[TMOE_MAX_EXPERTS], uid[TMOE_MAX_EXPERTS];
    for (int e = 0; e < E; e++) {
        uid[e] = -1;
        if (!inu[e]) continue;
        uid[e] = nu;
        ulist[nu++] = e;
        allowed[e] = !cand || cand[e];
        na += allowed[e];
    }
    while (na < k) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (inu[e] && !allowed[e] && (best < 0 || mass[e] > mass[best])) best = e;
        TMOE_ASSERT(best >= 0); /* |U| >= k */
        allowed[best] = 1;
        na++;
    }
    logits_range(z, (size_t)T * E, &s->zlo, &s->zhi);
    s->z_ok = 1;
    float excl = exclusion_of_range(s->zlo, s->zhi, E, soft, -30.0);
    eval_memo memo;
    memo.n = 0;
    int exact = 0;
    /* the experts every feasible set holds; all the allowed ones: no search */
    unsigned char need[TMOE_MAX_EXPERTS];
    needed(s, z, T, b, uid, ulist, nu, need);
    int all_need = 1;
    for (int u = 0; u < nu; u++)
        if (allowed[ulist[u]] && !need[u]) all_need = 0;
    memset(in_set, 0, (size_t)E);
    if (b->kind == TMOE_BUDGET_NONE) {
        for (int e = 0; e < E; e++) in_set[e] = 1;
    } else if (all_need) {
        for (int u = 0; u < nu; u++) in_set[ulist[u]] = allowed[ulist[u]];
        exact = 1; /* the one set the budget allows */
    } else if (nu <= UMAX && ((double)(1u << nu) * T <= TMOE_SET_EXACT_WORK)) {
        uint32_t cmask = 0, must = 0, m = 0;
        for (int u = 0; u < nu; u++) {
            if (allowed[ulist[u]]) cmask |= 1u << u;
            if (need[u]) must |= 1u << u;
        }
        rc = select_exact(s, p, z, T, b, soft, ulist, nu, uid, cmask, must, &m, err);
        if (rc) return rc;
        if (!m) m = cmask; /* nothing allowed meets the budget: every allowed expert */
        for (int u = 0; u < nu; u++) in_set[ulist[u]] = (m >> u) & 1u;
        exact = 1;
    } else {
        double fixed[TMOE_MAX_EXPERTS];
        for (int e = 0; e < E; e++) {
            fixed[e] = 1.0;
            if (!allowed[e]) continue;
            tmoe_expert_cost c, dc;
            if ((rc = tmoe_route_cost_eval(p, e, 1.0, &c, &dc, err))) return rc;
            fixed[e] = fmax(1e-12, c.energy_j - dc.energy_j);
        }
        int order[TMOE_MAX_EXPERTS], n = 0;
        if (b->kind == TMOE_BUDGET_KL) {
            greedy_cover(s, T, TMOE_BUDGET_TAU, 1.0, allowed, fixed, in_set, order, &n);
            /* the shortest prefix of that order (>= k) whose KL meets the bound */
            int lo = k < n ? k : n, hi = n;
            while (lo < hi) {
                int mid = (lo + hi) / 2;
                memset(in_set, 0, (size_t)E);
                for (int i = 0; i < mid; i++) in_set[order[i]] = 1;
                route_figs f;
                if ((rc = eval_set(s, p, z, T, soft, in_set, excl, &f, err))) return rc;
                if (f.kl <= b->kl_max)
                    hi = mid;
                else
                    lo = mid + 1;
            }
            memset(in_set, 0, (size_t)E);
            for (int i = 0; i < lo; i++) in_set[order[i]] = 1;
        } else {
            greedy_cover(s, T, b->kind, b->tau, allowed, fixed, in_set, order, &n);
        }
        if (n < k) /* at least k: go on covering the whole top-k mass */
            greedy_cover(s, T, TMOE_BUDGET_TAU, 1.0, allowed, fixed, in_set, order, &n);
        for (int e = 0, m = n; e < E && m < k; e++) /* an allowed expert no gain can add */
            if (allowed[e] && !in_set[e]) {
                in_set[e] = 1;
                m++;
            }
        /* the greedy minimises fixed costs; where per-token costs make its set dearer than
         * every allowed expert of U (which meets tau and top1 always), that is taken */
        unsigned char ua[TMOE_MAX_EXPERTS];
        for (int e = 0; e < E; e++) ua[e] = inu[e] && allowed[e];
        route_figs fs, fu;
        if ((rc = eval_memo_set(s, p, z, T, soft, in_set, excl, &memo, &fs, err)) ||
            (rc = eval_memo_set(s, p, z, T, soft, ua, excl, &memo, &fu, err)))
            return rc;
        if (fu.energy < fs.energy && (b->kind != TMOE_BUDGET_KL || fu.kl <= b->kl_max))
            memcpy(in_set, ua, (size_t)E);
    }
    if (!res) return TMOE_OK;
    memset(res, 0, sizeof *res);
    res->union_size = nu;
    res->exact = exact;
    res->bias_scale = 1.0;
    for (int e = 0; e < E; e++)
        if (in_set[e]) {
            res->size++;
            res->mask[e >> 6] |= 1ull << (e & 63);
        }
    if ((rc = eval_memo_set(s, p, z, T, soft, in_set, excl, &memo, &s->sel, err))) return rc;
    s->sel_valid = 1;
    res->energy_j = s->sel.energy;
    res->kl = s->sel.kl;
    res->min_kept = s->sel.min_kept;
    res->meets = figs_meet(b, &s->sel);
    /* S is U: the memo's figures, the same routing */
    route_figs fu;
    if ((rc = eval_memo_set(s, p, z, T, soft, inu, excl, &memo, &fu, err))) return rc;
    res->energy_u_j = fu.energy;
    return TMOE_OK;
}

static const char *const budget_names[TMOE_BUDGET_COUNT] = {"none", "tau", "top1", "kl"};

const char *tmoe_budget_name(tmoe_budget_kind b) {
    return (unsigned)b < TMOE_BUDGET_COUNT ? budget_names[b] : "?";
}

int tmoe_budget_parse(const char *name, tmoe_budget_kind *out) {
    for (int i = 0; i < TMOE_BUDGET_COUNT; i++)
        if (name && strcmp(name, budget_names[i]) == 0) {
            *out = (tmoe_budget_kind)i;
            return TMOE_OK;
        }
    return TMOE_EINVAL;
}

int tmoe_set_bias_scale(tmoe_set_selector *s, const tmoe_cost_provider *p, const float *logits,
                        int T, const tmoe_set_budget *b, const double *soft_bias,
                        const unsigned char *in_set, double *scale, tmoe_set_result *res,
                        tmoe_error *err) {
    int E = s->E, k = s->k;
    if (T < 1 || T > s->max_tokens)
        return tmoe_errorf(err, TMOE_EINVAL, "bias scale: %d tokens, expected 1..%d", T,
                           s->max_tokens);
    float excl = tmoe_set_selector_exclusion_bias(s, logits, T, soft_bias, -30.0);
    double a = 1.0, sa[TMOE_MAX_EXPERTS];
    float fb[TMOE_MAX_EXPERTS];
    int any = 0;
    for (int e = 0; soft_bias && e < E; e++) any |= soft_bias[e] != 0.0;
        /* rung i of the ladder: 2^-i for i < 7, 0 at 7 (S's own routing, which meets the budget
         * wherever S does). Rung 0 first; where it misses, bisection between a rung that misses
         * and one that meets (the budget need not be monotone in the scale, so this finds a
         * rung that meets next to a larger one that misses: three more passes, not seven) */
#define LADDER 7
    route_figs at_hi; /* the figures of rung hi, where the bisection evaluated it */
    int have_hi = 0;
    if (any && b->kind != TMOE_BUDGET_NONE) {
        int lo = -1, hi = LADDER; /* lo misses (-1: not yet tried), hi meets */
        /* rung 0: the routing tmoe_set_select evaluated for its result, where it did */
        if (s->sel_valid) {
            if (figs_meet(b, &s->sel))
                hi = 0;
            else
                lo = 0;
        }
        for (int i = lo < 0 && hi > 0 ? 0 : (lo + hi) / 2; hi - lo > 1; i = (lo + hi) / 2) {
            a = ldexp(1.0, -i);
            for (int e = 0; e < E; e++) sa[e] = a * soft_bias[e];
            set_biases(E, sa, in_set, excl, fb);
            tmoe_gate_topk(logits, fb, T, E, k, 1, 0, s->sidx, NULL);
            route_figs f;
            int rc = routing_figures(s, p, T, in_set, &f, err);
            if (rc) return rc;
            if (figs_meet(b, &f)) {
                hi = i;
                at_hi = f;
                have_hi = 1;
            } else {
                lo = i;
            }
        }
        a = hi == LADDER ? 0.0 : ldexp(1.0, -hi);
    }
#undef LADDER
    *scale = any ? a : 1.0;
    if (!res) return TMOE_OK;
    res->bias_scale = *scale;
    if (*scale == 1.0) return TMOE_OK; /* tmoe_set_select's figures are those of this routing */
    if (!have_hi) {                    /* scale 0: route at it */
        for (int e = 0; e < E; e++) sa[e] = *scale * soft_bias[e];
        int rc = eval_set(s, p, logits, T, sa, in_set, excl, &at_hi, err);
        if (rc) return rc;
    }
    res->energy_j = at_hi.energy;
    res->kl = at_hi.kl;
    res->meets = figs_meet(b, &at_hi);
    return TMOE_OK;
}
