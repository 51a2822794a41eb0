/* Order statistics shared by every module: the type-7 percentile of sorted data and the
 * qsort comparator of doubles (see include/thermoe/core.h). */
#include <math.h>

#include "thermoe/core.h"

double tmoe_percentile_sorted(const double *sorted, int n, double p) {
    TMOE_ASSERT(n >= 1 && p >= 0.0 && p <= 100.0);
    double h = (n - 1) * p / 100.0;
    int lo = (int)floor(h);
    if (lo >= n - 1) return sorted[n - 1];
    return sorted[lo] + (h - lo) * (sorted[lo + 1] - sorted[lo]);
}

int tmoe_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    if (isnan(x) || isnan(y)) return isnan(x) - isnan(y);
    return (x > y) - (x < y);
}
