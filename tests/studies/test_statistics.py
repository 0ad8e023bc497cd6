"""The statistics of a seeded study against closed forms, tables and simulation."""

import math

import pytest
import torch

from pyro_vae.studies.statistics import (
    distinguishable,
    mean_se,
    paired_by_seed,
    paired_by_seed_and_point,
    two_sided_p,
)


def test_mean_and_standard_error_over_seeds():
    assert mean_se([1.0, 2.0, 6.0]) == pytest.approx((3.0, math.sqrt(7.0) / math.sqrt(3)))
    mean, se = mean_se([4.0])
    assert mean == 4.0 and math.isnan(se)


def test_paired_by_seed_is_the_one_sample_t_test_of_the_differences():
    r = paired_by_seed([1.0, 2.0, 3.0], [0.5, 1.2, 2.9])  # d = 0.5, 0.8, 0.1
    assert r["mean"] == pytest.approx(1.4 / 3)
    assert r["se"] == pytest.approx(
        math.sqrt(((0.5 - 1.4 / 3) ** 2 + (0.8 - 1.4 / 3) ** 2 + (0.1 - 1.4 / 3) ** 2) / 2 / 3)
    )
    assert r["df"] == 2 and r["p"] == pytest.approx(0.14799, abs=1e-4)  # t = 2.3016 on 2 df


def test_the_two_way_standard_error_on_hand_made_numbers():
    """d = [[1, 2, 3], [2, 4, 3]]: grand mean 2.5, MS_seed = 1.5, MS_point = 1.5, MS_rest = 0.5, so
    SE^2 = [(1.5 - 0.5) + (1.5 - 0.5) + 0.5] / 6, tested on S - 1 = 1 degree of freedom."""
    a = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 3.0]])
    r = paired_by_seed_and_point(a + 7.0, torch.full_like(a, 7.0))
    assert r["mean"] == pytest.approx(2.5)
    assert r["se"] == pytest.approx(math.sqrt(2.5 / 6))
    assert r["df"] == 1 and r["p"] == pytest.approx(two_sided_p(2.5, math.sqrt(2.5 / 6), 1))
    # one seed: the paired standard error over points, sd / sqrt(n), on n - 1 degrees of freedom
    one = paired_by_seed_and_point(a[:1], torch.zeros(1, 3))
    assert one["se"] == pytest.approx(1.0 / math.sqrt(3)) and one["df"] == 2
    # a component estimated below zero counts as zero: here the seeds agree exactly (MS_seed = 0 < MS_rest)
    flat = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    r = paired_by_seed_and_point(flat, torch.zeros(2, 3))
    ms_rest = 4.0 / 2  # residuals +-1 in four cells
    assert r["se"] == pytest.approx(math.sqrt(ms_rest / 6))
    with pytest.raises(ValueError, match="seeds, points"):
        paired_by_seed_and_point(torch.zeros(3), torch.zeros(3))


def _simulate(S, n, sd_seed, sd_point, sd_rest, R, seed=0):
    """R studies with d_si = seed_s + point_i + e_si (mean 0): (estimated variances, share rejected at 5%)."""
    g = torch.Generator().manual_seed(seed)
    variances, rejected = [], 0
    for _ in range(R):
        d = (
            sd_seed * torch.randn(S, 1, generator=g)
            + sd_point * torch.randn(1, n, generator=g)
            + sd_rest * torch.randn(S, n, generator=g)
        )
        r = paired_by_seed_and_point(d, torch.zeros(S, n))
        variances.append(r["se"] ** 2)
        rejected += r["p"] < 0.05
    return torch.tensor(variances), rejected / R


def test_the_two_way_variance_is_unbiased_and_its_test_keeps_its_level_in_simulation():
    """Var(mean d) = s^2/S + p^2/n + e^2/(S n). Over R simulated studies the estimated variance averages to
    it within 4 Monte Carlo standard errors (above it where a component estimated below zero is often set to
    zero: the seeds' here, n s^2 < e^2); under a zero mean the t test rejects at 5% in 5% of studies
    (4 binomial standard errors) where seeds dominate, and in no more than that where points do."""
    R = 2000
    binomial = 4 * math.sqrt(0.05 * 0.95 / R)
    for S, n, sd_seed, sd_point, sd_rest, dominated_by_seeds, truncated in [
        (3, 50, 0.5, 1.0, 0.7, False, False),
        (3, 5000, 0.5, 1.0, 0.7, True, False),
        (5, 2000, 0.3, 1.0, 1.0, True, False),
        (2, 5000, 0.3, 1.0, 1.0, False, False),
        (3, 50, 0.05, 1.0, 0.7, False, True),
    ]:
        truth = sd_seed**2 / S + sd_point**2 / n + sd_rest**2 / (S * n)
        v, level = _simulate(S, n, sd_seed, sd_point, sd_rest, R)
        error = 4 * v.std().item() / math.sqrt(R)
        assert v.mean().item() > truth - error
        assert truncated or v.mean().item() < truth + error
        assert level < 0.05 + binomial
        if dominated_by_seeds:
            assert level > 0.05 - binomial


@pytest.mark.parametrize(
    "t, df, p",
    [
        (12.7062, 1, 0.05),
        (4.302653, 2, 0.05),
        (2.776445, 4, 0.05),
        (2.228139, 10, 0.05),
        (3.169273, 10, 0.01),
        (1.959964, 1e7, 0.05),
        (0.0, 5, 1.0),
    ],
)
def test_two_sided_p_values_agree_with_the_t_table(t, df, p):
    assert two_sided_p(t, 1.0, df) == pytest.approx(p, abs=2e-6)
    assert two_sided_p(-t, 1.0, df) == pytest.approx(p, abs=2e-6)


def test_bonferroni_marks_correct_for_the_rows_compared():
    assert distinguishable(0.02, 1) and not distinguishable(0.02, 3) and distinguishable(0.01, 3)
    assert not distinguishable(math.nan, 1)
    assert math.isnan(two_sided_p(1.0, math.nan, 2))
