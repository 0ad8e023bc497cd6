"""MIG and DCI on codes whose answer is known: the factors themselves score ~1, a rotation of them scores low;
the mutual information and the Lasso against closed forms."""

import math

import pytest
import torch

from pyro_vae.errors import UsageError
from pyro_vae.evaluation.disentanglement import dci, factor_vae_score, lasso, mig, mutual_information

LEVELS = (3, 6, 10, 8, 8)  # dSprites' grid, thinned: shape, scale, orientation, x, y


def grid_factors(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(levels, (n,), generator=g) for levels in LEVELS], 1)


def factor_codes(factors, noise_dims=3, seed=1):
    """Each factor in a code of its own (scaled to unit range, a little noise), then pure-noise codes."""
    g = torch.Generator().manual_seed(seed)
    scaled = factors.double() / torch.tensor(LEVELS, dtype=torch.float64)
    scaled = scaled + 0.001 * torch.randn(scaled.shape, generator=g, dtype=torch.float64)
    return torch.cat([scaled, torch.randn(len(factors), noise_dims, generator=g, dtype=torch.float64)], 1)


def rotation(d, seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


def test_mutual_information_closed_forms():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(6, (20000,), generator=g)
    h = -sum(p * math.log(p) for p in (torch.bincount(a).double() / len(a)).tolist())
    assert mutual_information(a, a) == pytest.approx(h, rel=1e-9)
    b = torch.randint(4, (20000,), generator=g)
    # independent labels: the plug-in estimate's bias, (6 - 1)(4 - 1) / (2n) nats, bounds it
    assert 0 <= mutual_information(a, b) < 4 * 15 / (2 * 20000)
    assert mutual_information(a, a % 2) == pytest.approx(math.log(2), abs=1e-3)  # a determines a mod 2: I = H(a mod 2)


def test_the_factors_themselves_score_about_one():
    factors = grid_factors(5000, 0)
    codes = factor_codes(factors)
    score, info = mig(codes, factors)
    assert score > 0.98 and info.shape == (8, 5)
    d = dci(codes, factors)
    assert d["disentanglement"] > 0.95 and d["completeness"] > 0.95 and d["informativeness"] > 0.95
    assert d["importance"].shape == (8, 5) and d["importance"][5:].sum() < 1e-3 * d["importance"].sum()


def test_a_rotation_of_the_factors_scores_low_yet_stays_informative():
    factors = grid_factors(5000, 0)
    codes = factor_codes(factors, noise_dims=0)
    mixed = codes @ rotation(5, 3)
    score, _ = mig(mixed, factors)
    d = dci(mixed, factors)
    assert score < 0.3 and d["disentanglement"] < 0.5 and d["completeness"] < 0.5
    assert d["informativeness"] > 0.95  # a rotation loses nothing a linear probe can read


def test_one_code_for_two_factors_is_disentangled_badly_and_incomplete_for_neither():
    """Factors 0 and 1 summed into one code, the rest one code each: MIG drops for those two factors only."""
    factors = grid_factors(5000, 1)
    codes = factor_codes(factors, noise_dims=0)
    merged = torch.cat([codes[:, :1] + codes[:, 1:2], codes[:, 2:]], 1)
    score, _ = mig(merged, factors)
    assert 0.3 < score < 0.95


def test_the_factor_vae_score_on_known_codes():
    """The factors themselves: every vote is right (1.0). Codes that know nothing: the classifier guesses, about
    1/K = 0.2 (500 held-out votes: s.e. 0.018). A rotation lies between; collapsed codes take no part (0)."""
    factors = grid_factors(5000, 0)
    assert factor_vae_score(factor_codes(factors), factors) == 1.0
    g = torch.Generator().manual_seed(5)
    assert (
        abs(factor_vae_score(torch.randn(5000, 6, generator=g, dtype=torch.float64), factors) - 0.2) < 4 * 0.018 + 0.05
    )
    mixed = factor_vae_score(factor_codes(factors, noise_dims=0) @ rotation(5, 3), factors)
    assert 0.3 < mixed < 0.9
    assert factor_vae_score(factor_codes(factors) * 0.01, factors) == 0.0


def test_lasso_without_penalty_is_least_squares():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=g, dtype=torch.float64)
    x = (x - x.mean(0)) / x.std(0)
    y = x @ torch.randn(5, 2, generator=g, dtype=torch.float64) + 0.1 * torch.randn(
        400, 2, generator=g, dtype=torch.float64
    )
    y = y - y.mean(0)
    torch.testing.assert_close(
        lasso(x, y, alpha=0.0, iterations=2000), torch.linalg.lstsq(x, y).solution, atol=1e-5, rtol=1e-5
    )
    assert (lasso(x, y, alpha=10.0) == 0).all()  # a penalty above every correlation zeroes every weight


def test_bad_inputs_are_refused():
    with pytest.raises(UsageError, match="same points"):
        mig(torch.zeros(20, 3), torch.zeros(19, 2, dtype=torch.long))
    with pytest.raises(UsageError, match="constant"):
        dci(torch.randn(20, 3), torch.zeros(20, 2, dtype=torch.long))
    with pytest.raises(UsageError, match="NaN"):
        mig(torch.full((20, 3), float("nan")), torch.zeros(20, 2, dtype=torch.long))
