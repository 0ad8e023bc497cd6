import importlib
import math

import pyro
import pytest
import torch

from pyro_vae import build_vae, evaluate, iwae_log_px
from pyro_vae.models.vae import rate

from ..conftest import small_config


def test_rate_is_the_closed_form_gaussian_kl(small_vae, synthetic):
    """KL(N(mu, sigma^2) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - ln sigma_j^2 - 1)."""
    x = synthetic.example_batch(16)
    q = small_vae.q(x)
    mu, sigma = q.base_dist.loc, q.base_dist.scale
    expected = 0.5 * (mu**2 + sigma**2 - torch.log(sigma**2) - 1).sum(-1)
    torch.testing.assert_close(rate(small_vae, x), expected, rtol=1e-5, atol=1e-5)


def test_iwae_bounds(small_vae, synthetic):
    """E[log p_K(x)] >= ELBO, rises with K; with K = 1 it is the ELBO (within Monte Carlo error)."""
    x = synthetic.test[:200]
    torch.manual_seed(0)
    with torch.no_grad():
        log_px_z, log_pz, log_qz = small_vae.log_weights(x, 1000)
        log_w = log_px_z + log_pz - log_qz  # (1000, 200)
        elbo = log_w.mean(0)  # per point, 1000 samples: small MC error
        k1 = iwae_log_px(small_vae, x, 1)
        k5 = iwae_log_px(small_vae, x, 5)
        k500 = iwae_log_px(small_vae, x, 500)
    n = x.shape[0]
    diff = k5 - elbo
    assert diff.mean() > 4 * diff.std() / math.sqrt(n)  # IWAE(5) above the ELBO
    diff = k500 - k5
    assert diff.mean() > 4 * diff.std() / math.sqrt(n)  # and rising with K
    diff = k1 - elbo
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(n)  # K = 1 is the ELBO


def test_evaluate_reports_consistent_numbers(small_vae, synthetic):
    torch.manual_seed(0)
    r = evaluate(small_vae, synthetic.test, iwae_samples=20, batch_size=128)
    assert set(r) == {
        "elbo",
        "log_px",
        "log_px_se",
        "rate",
        "distortion",
        "active_units",
        "iwae_samples",
        "kl_per_dim",
        "bits_per_dim",
        "elbo_bits_per_dim",
    }
    d = math.prod(synthetic.data_shape)  # bernoulli: a mass over {0, 1}, so bits/dim is -log2 p(x) / D
    assert r["bits_per_dim"] == pytest.approx(-r["log_px"] / (d * math.log(2)))
    assert r["elbo_bits_per_dim"] >= r["bits_per_dim"] - 0.05  # the ELBO bound is the longer code (MC noise aside)
    assert len(r["kl_per_dim"]) == 4 and min(r["kl_per_dim"]) >= 0
    assert math.isclose(r["elbo"], -(r["rate"] + r["distortion"]), rel_tol=1e-6)
    assert r["rate"] >= 0 and r["distortion"] >= 0  # Bernoulli: -log p(x|z) >= 0
    assert 0 <= r["active_units"] <= 4
    assert all(math.isfinite(v) for v in r.values() if not isinstance(v, list))
    torch.manual_seed(0)  # the same draws, batch by batch: the per-point values behind the mean and its error
    points = evaluate(small_vae, synthetic.test, iwae_samples=20, batch_size=128, per_point=True)["log_px_per_point"]
    points = torch.tensor(points, dtype=torch.float64)
    assert points.numel() == synthetic.test.shape[0] and (points <= 0).all()
    assert points.mean().item() == pytest.approx(r["log_px"], rel=1e-6)
    assert r["log_px_se"] == pytest.approx((points.std() / math.sqrt(points.numel())).item(), rel=1e-6)
    assert 0 < r["log_px_se"] < points.std().item() / 10


def test_iwae_chunking_is_exact(small_vae, monkeypatch):
    """Chunks of 7 samples combine to exactly log mean_k w_k over all 64 samples."""
    ev = importlib.import_module("pyro_vae.evaluation.metrics")
    log_w = torch.randn(64, 30, generator=torch.Generator().manual_seed(0)) * 20
    drawn = []

    def fake_log_weights(x, k, q=None, y=None):  # hands out the fixed log weights, k at a time
        start = sum(drawn)
        drawn.append(k)
        return log_w[start : start + k], torch.zeros(k, 30), torch.zeros(k, 30)

    monkeypatch.setattr(small_vae, "log_weights", fake_log_weights)
    monkeypatch.setattr(ev, "CHUNK_ELEMENTS", 30 * (64 + 4) * 7)  # 30 points, 64 pixels, 4 latents: 7 samples a chunk
    got = iwae_log_px(small_vae, torch.zeros(30, 1, 8, 8), 64)
    assert drawn == [7] * 9 + [1]
    torch.testing.assert_close(got, torch.logsumexp(log_w, 0) - math.log(64), rtol=1e-6, atol=1e-5)


def test_iwae_splits_images_when_one_sample_of_all_is_too_big(small_vae, synthetic, monkeypatch):
    """With room for 4 data points per chunk, 10 points go in batches of 4, 4, 2, each point keeping its estimate."""
    ev = importlib.import_module("pyro_vae.evaluation.metrics")
    x = synthetic.test[:10]
    monkeypatch.setattr(ev, "CHUNK_ELEMENTS", 4 * (64 + 4))
    pyro.set_rng_seed(3)
    by_hand = torch.cat([iwae_log_px(small_vae, xb, 5) for xb in x.split(4)])
    seen = []
    encode = small_vae.q
    monkeypatch.setattr(small_vae, "q", lambda xb: seen.append(xb.shape[0]) or encode(xb))
    pyro.set_rng_seed(3)
    split = iwae_log_px(small_vae, x, 5)
    assert seen == [4, 4, 2]
    torch.testing.assert_close(split, by_hand)  # the same draws, in the same order, for the same points


def test_gaussian_likelihood_is_mse(synthetic):
    """-log N(x; mu, s^2 I) = ||x - mu||^2 / (2 s^2) + D log(s sqrt(2 pi))."""
    vae = build_vae(small_config("model.likelihood={kind='gaussian', scale=0.1}"), synthetic.data_shape)
    x = synthetic.train[:5]
    out = torch.randn(5, 64)
    nll = -vae.likelihood(out).log_prob(x)
    mse = ((x.flatten(1) - out) ** 2).sum(-1)
    expected = mse / (2 * 0.1**2) + 64 * math.log(0.1 * math.sqrt(2 * math.pi))
    torch.testing.assert_close(nll, expected, rtol=1e-5, atol=1e-5)
