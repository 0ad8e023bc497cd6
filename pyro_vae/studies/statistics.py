"""The statistics of a seeded study: means with standard errors over seeds, paired differences and their
tests.

- Over seeds: mean and standard error sd / sqrt(S) (nan for one seed).
- Paired by seed: d_s = a_s - b_s, the same statistics of the d_s, t-tested with S - 1 degrees of freedom.
- Paired by seed and by test point (a two-way crossed design, d_si = a_si - b_si for seed s and point i):
  Var(mean d) = sigma_seed^2 / S + sigma_point^2 / n + sigma_rest^2 / (S n), each component estimated from
  the mean squares, MS_seed = n sum_s (d_s. - d..)^2 / (S - 1), MS_point = S sum_i (d_.i - d..)^2 / (n - 1),
  MS_rest = sum (d_si - d_s. - d_.i + d..)^2 / ((S - 1)(n - 1)), as
  SE^2 = [max(MS_seed - MS_rest, 0) + max(MS_point - MS_rest, 0) + MS_rest] / (S n)
  (negative components set to 0), tested on S - 1 degrees of freedom: exact where seed-to-seed variation
  dominates (the usual case: thousands of test points, a few seeds), conservative where it does not.
  Satterthwaite's degrees of freedom, computed from the same mean squares, are liberal with few seeds
  (7% rejections at a 5% level for 3 seeds in ``tests/studies/test_statistics.py``'s simulation).
  One seed: SE^2 = MS_point / n, the paired standard error over points on n - 1 degrees of freedom
  (seed-to-seed variation is then not estimated).
- Tests are two-sided t tests; ``distinguishable`` corrects for the rows compared (Bonferroni).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

#: the family-wise level of the marks in a study's table of paired differences
LEVEL = 0.05


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error sd / sqrt(S)) of ``values``; the standard error is nan for one value."""
    v = torch.as_tensor(list(values), dtype=torch.float64)
    se = (v.std() / math.sqrt(v.numel())).item() if v.numel() > 1 else math.nan
    return v.mean().item(), se


def paired_by_seed(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """{mean, se, df, p} of the per-seed differences a_s - b_s (se, p nan for one seed)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need as many of each: {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    mean, se = mean_se(d)
    return {"mean": mean, "se": se, "df": len(d) - 1, "p": two_sided_p(mean, se, len(d) - 1)}


def paired_by_seed_and_point(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """{mean, se, df, p} of the mean difference of two (seeds, points) tables paired cell by cell (the
    module's two-way formula)."""
    d = torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)
    if d.dim() != 2 or d.shape[1] < 2:
        raise ValueError(f"paired differences need a (seeds, points) table with 2 or more points, got {tuple(d.shape)}")
    s, n = d.shape
    grand = d.mean()
    seed_means, point_means = d.mean(1), d.mean(0)
    ms_point = s * ((point_means - grand) ** 2).sum().item() / (n - 1)
    if s == 1:
        var, df = ms_point / n, n - 1
    else:
        ms_seed = n * ((seed_means - grand) ** 2).sum().item() / (s - 1)
        rest = d - seed_means[:, None] - point_means[None, :] + grand
        ms_rest = (rest**2).sum().item() / ((s - 1) * (n - 1))
        var = (max(ms_seed - ms_rest, 0.0) + max(ms_point - ms_rest, 0.0) + ms_rest) / (s * n)
        df = s - 1  # the seeds limit what is known: t on S - 1 df (conservative where the points' share is large)
    mean, se = grand.item(), math.sqrt(max(var, 0.0))
    return {"mean": mean, "se": se, "df": df, "p": two_sided_p(mean, se, df)}


def two_sided_p(mean: float, se: float, df: float) -> float:
    """P(|T| >= |mean / se|) for T ~ Student's t with ``df`` degrees of freedom; nan if it cannot be told."""
    if not (se > 0 and df > 0) or math.isnan(mean):
        return 0.0 if se == 0 and df > 0 and mean != 0 else math.nan
    t = mean / se
    return regularized_beta(df / (df + t * t), df / 2, 0.5)


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularised incomplete beta function (continued fraction, Numerical Recipes 6.4)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(x, a, b) / a
    return 1.0 - front * _beta_fraction(1 - x, b, a) / b


def _beta_fraction(x, a, b, steps=300, eps=1e-15):
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, steps + 1):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def distinguishable(p: float, rows: int, level: float = LEVEL) -> bool:
    """Whether a difference with p-value ``p`` is distinguishable from zero at family-wise ``level`` over
    ``rows`` differences (Bonferroni: p < level / rows)."""
    return not math.isnan(p) and p < level / max(rows, 1)
