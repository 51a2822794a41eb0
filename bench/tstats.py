"""Student t quantiles for the bench tables' intervals (standard library only): two-sided
95% quantiles for df 1..30 (beyond 30: 1.96), and a mean with its 95% t interval."""
import math
import statistics

T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def tq(df):
    """the two-sided 95% t quantile at df degrees of freedom (NaN below 1)"""
    if df < 1:
        return math.nan
    return T975[min(int(df), 30) - 1] if df <= 30 else 1.96


def mean_ci(xs):
    """(mean, half-width of its 95% t interval); half-width NaN with fewer than 2 values"""
    m = statistics.mean(xs)
    if len(xs) < 2:
        return m, math.nan
    return m, tq(len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
