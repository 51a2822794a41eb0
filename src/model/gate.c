/* Gating: top-k expert selection and combine weights from gate logits, the one definition
 * every backend's reference, the router and the experiment runner use (see
 * include/thermoe/model.h for the contract). */
#include <math.h>

#include "thermoe/model.h"

/* A gate score or weight logit as gate_topk uses it: NaN counts as -inf. */
static float nan_as_neg_inf(float v) {
    return isnan(v) ? -INFINITY : v;
}

void tmoe_gate_topk(const float *logits, const float *bias, int T, int E, int k, int renorm,
                    int bias_in_weights, int32_t *idx, float *w) {
    TMOE_ASSERT(k >= 1 && k <= E && k <= TMOE_MAX_TOPK && E <= TMOE_MAX_EXPERTS);
    for (int t = 0; t < T; t++) {
        const float *z = logits + (size_t)t * E;
        unsigned char taken[TMOE_MAX_EXPERTS] = {0};
        int32_t *ti = idx + (size_t)t * k;
        for (int j = 0; j < k; j++) {
            /* best stays a valid index (0 until an untaken expert is seen; k <= E leaves one
             * for every j), so no path writes outside taken */
            int best = 0, found = 0;
            float bs = -INFINITY;
            for (int e = 0; e < E; e++) {
                if (taken[e]) continue;
                float s = nan_as_neg_inf(z[e] + (bias ? bias[e] : 0.0f));
                if (!found || s > bs) { /* strict: ties keep the lower index */
                    best = e;
                    bs = s;
                    found = 1;
                }
            }
            TMOE_ASSERT(found);
            taken[best] = 1;
            ti[j] = best;
        }
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
