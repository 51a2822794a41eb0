/* Gating: top-k expert selection and combine weights from gate logits, the one definition
 * every backend's reference, the router and the experiment runner use (see
 * include/thermoe/model.h for the contract). */
#include <math.h>

#include "thermoe/model.h"

/* A gate score or weight logit as gate_topk uses it: NaN counts as -inf. */
static float nan_as_neg_inf(float v) {
    return isnan(v) ? -INFINITY : v;
}

/* Expert e with score s into the ordered list (bs, ti) at slot p, moved up past every
 * strictly smaller score. */
static void topk_insert(float *bs, int32_t *ti, int p, float s, int e) {
    while (p > 0 && bs[p - 1] < s) {
        bs[p] = bs[p - 1];
        ti[p] = ti[p - 1];
        p--;
    }
    bs[p] = s;
    ti[p] = e;
}

void tmoe_gate_topk(const float *logits, const float *bias, int T, int E, int k, int renorm,
                    int bias_in_weights, int32_t *idx, float *w) {
    TMOE_ASSERT(k >= 1 && k <= E && k <= TMOE_MAX_TOPK && E <= TMOE_MAX_EXPERTS);
    for (int t = 0; t < T; t++) {
        const float *z = logits + (size_t)t * E;
        int32_t *ti = idx + (size_t)t * k;
        /* one pass over the experts keeping the best k in order of (score desc, index asc):
         * a later expert enters only with a strictly larger score than the one it passes, so
         * ties keep the lower index; the first k experts fill the list whatever their scores
         * (NaN and -inf included), as the lowest indices among equal -inf ones */
        float bs[TMOE_MAX_TOPK];
        for (int e = 0; e < k; e++)
            topk_insert(bs, ti, e, nan_as_neg_inf(z[e] + (bias ? bias[e] : 0.0f)), e);
        /* the rest enter above the k-th score, kept in a register: a NaN fails the test as
         * the -inf it counts as would */
        float kth = bs[k - 1];
        for (int e = k; e < E; e++) {
            float s = z[e] + (bias ? bias[e] : 0.0f);
            if (!(s > kth)) continue;
            topk_insert(bs, ti, k - 1, s, e);
            kth = bs[k - 1];
        }
        if (!w) continue; /* the indices alone */
        /* softmax over all E of the (un)biased logits, then pick; a NaN or -inf logit has
         * probability 0, and with no probability at all (every logit NaN or -inf) the weights
         * are 0 rather than 0/0 */
        float mx = -INFINITY;
        for (int e = 0; e < E; e++) {
            float s = nan_as_neg_inf(z[e] + (bias && bias_in_weights ? bias[e] : 0.0f));
            if (s > mx) mx = s;
        }
        double den = 0.0, chosen = 0.0;
        for (int e = 0; e < E; e++) {
            float s = nan_as_neg_inf(z[e] + (bias && bias_in_weights ? bias[e] : 0.0f));
            if (s > -INFINITY) den += exp((double)s - mx);
        }
        float *tw = w + (size_t)t * k;
        for (int j = 0; j < k; j++) {
            int e = ti[j];
            float s = nan_as_neg_inf(z[e] + (bias && bias_in_weights ? bias[e] : 0.0f));
            double p = s > -INFINITY ? exp((double)s - mx) : 0.0;
            tw[j] = (float)p;
            chosen += p;
        }
        double norm = renorm ? chosen : den;
        for (int j = 0; j < k; j++) tw[j] = norm > 0.0 ? (float)(tw[j] / norm) : 0.0f;
    }
}
