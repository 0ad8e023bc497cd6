"""The linear-Gaussian VAE, where log p(x), the posterior and the ELBO are closed form."""

import math

import pyro
import pytest
import torch

from pyro_vae import ESTIMATORS
from pyro_vae.infer.diagnostics import gradient_samples, summarize
from pyro_vae.models.linear_gaussian import (
    exact_elbo,
    exact_log_px,
    exact_posterior,
    linear_gaussian_vae,
    sample_data,
    set_exact_posterior,
)


def make(posterior="full_normal", perturb=0.3, seed=0, **posterior_params):
    torch.manual_seed(seed)
    vae = linear_gaussian_vae(6, 2, 0.5, posterior, **posterior_params)
    with torch.no_grad():
        vae.decoder.net[0].weight.normal_()
    x = sample_data(vae, 20, seed)
    if posterior == "full_normal":
        set_exact_posterior(vae)
    with torch.no_grad():
        for p in vae.posterior.parameters():
            p.add_(perturb * torch.randn_like(p))
    return vae, x


def test_exact_posterior_makes_the_elbo_equal_log_px():
    """log p(x) = ELBO + KL(q || p(z|x)): with q = p(z|x), every log weight equals log p(x)."""
    vae, x = make(perturb=0.0)
    log_px = exact_log_px(vae, x)
    with torch.no_grad():
        log_px_z, log_pz, log_qz = vae.log_weights(x, 500)
    torch.testing.assert_close(log_px_z + log_pz - log_qz, log_px.expand(500, -1), rtol=0, atol=1e-4)
    torch.testing.assert_close(exact_elbo(vae, x), log_px, rtol=0, atol=1e-4)
    p, q = exact_posterior(vae, x), vae.q(x)
    torch.testing.assert_close(q.loc, p.loc, rtol=0, atol=1e-5)
    torch.testing.assert_close(q.covariance_matrix, p.covariance_matrix, rtol=0, atol=1e-5)


@pytest.mark.parametrize("posterior", ["diagonal_normal", "full_normal"])
def test_elbo_is_below_log_px_for_other_guides(posterior):
    vae, x = make(posterior)
    log_px, elbo = exact_log_px(vae, x), exact_elbo(vae, x)
    assert (elbo < log_px).all()
    with torch.no_grad():  # the Monte Carlo ELBO agrees with the closed form
        a, b, c = vae.log_weights(x, 4000)
        lw = a + b - c
    se = lw.std(0) / math.sqrt(4000)
    assert ((lw.mean(0) - elbo).abs() < 4 * se).all()


def test_iwae_rises_with_k_towards_log_px():
    vae, x = make("full_normal", perturb=0.1)
    log_px = exact_log_px(vae, x)
    torch.manual_seed(1)
    with torch.no_grad():
        bounds = {}
        for k in (1, 10, 100, 1000):
            est = []
            for _ in range(20):
                a, b, c = vae.log_weights(x, k)
                est.append(torch.logsumexp(a + b - c, 0) - math.log(k))
            bounds[k] = torch.stack(est)  # (20 repeats, 20 points)
    means = [bounds[k].mean().item() for k in (1, 10, 100, 1000)]
    se = [bounds[k].mean(1).std().item() / math.sqrt(20) for k in (1, 10, 100, 1000)]
    assert all(b - a > 3 * math.hypot(sa, sb) for a, b, sa, sb in zip(means, means[1:], se, se[1:]))
    gap_1, gap_1000 = log_px.mean() - means[0], log_px.mean() - means[-1]
    assert gap_1000 < 0.1 * gap_1 and gap_1000 > -3 * se[-1]  # closes in on log p(x), never above it


def exact_gradient(vae, x):
    for p in vae.parameters():
        p.grad = None
    (-exact_elbo(vae, x).sum()).backward()
    g = (
        torch.cat([p.grad.flatten() for p in vae.guide_parameters()]),
        torch.cat([p.grad.flatten() for p in vae.model_parameters()]),
    )
    for p in vae.parameters():
        p.grad = None
    return g


@pytest.mark.parametrize(
    "kind, posterior, params",
    [
        ("trace", "full_normal", {}),
        ("meanfield", "diagonal_normal", {}),
        ("stl", "full_normal", {}),
        ("tracegraph", "diagonal_normal", {"reparameterized": False}),
    ],
)
def test_unbiased_gradients_agree_with_the_exact_gradient(kind, posterior, params):
    vae, x = make(posterior, **params)
    exact_enc, exact_dec = exact_gradient(vae, x)
    pyro.clear_param_store()
    m = 300 if kind != "tracegraph" else 1000  # the score function needs more samples (z-scores use m)
    enc, dec = gradient_samples(vae, ESTIMATORS.build({"kind": kind}), x, num_samples=m)
    for g, exact in ((enc, exact_enc), (dec, exact_dec)):
        z = (g.mean(0) - exact).abs() / (g.std(0) / math.sqrt(m) + 1e-6)
        assert z.max() < 5, (kind, z.max())


def test_stl_has_zero_variance_at_the_exact_posterior():
    vae, x = make(perturb=0.0)
    pyro.clear_param_store()
    stl, _ = gradient_samples(vae, ESTIMATORS.build({"kind": "stl"}), x, num_samples=20)
    trace, _ = gradient_samples(vae, ESTIMATORS.build({"kind": "trace"}), x, num_samples=20)
    assert stl.abs().max() < 1e-3  # every sample: zero gradient for the guide
    assert trace.std(0).max() > 1.0  # the full-gradient estimator is noisy there


def test_score_function_variance_and_baseline():
    """REINFORCE is unbiased but far noisier than the pathwise gradient; the baseline reduces it."""
    vae, x = make("diagonal_normal")
    pyro.clear_param_store()
    path, _ = gradient_samples(vae, ESTIMATORS.build({"kind": "trace"}), x, num_samples=200)
    vae_sf, _ = make("diagonal_normal", reparameterized=False)
    sf, _ = gradient_samples(vae_sf, ESTIMATORS.build({"kind": "tracegraph"}), x, num_samples=200)
    assert summarize(sf)["variance"] > 10 * summarize(path)["variance"]
    vae_bl, _ = make("diagonal_normal", reparameterized=False, baseline="decaying_avg")
    pyro.clear_param_store()
    bl, _ = gradient_samples(vae_bl, ESTIMATORS.build({"kind": "tracegraph"}), x, num_samples=400)
    bl = bl[200:]  # once the decaying average has settled
    assert summarize(bl)["variance"] < 0.5 * summarize(sf)["variance"]


def test_dreg_snr_grows_with_k_and_beats_iwae():
    """Near the optimum (Rainforth et al. 2018; Tucker et al. 2018): DReG's encoder SNR grows with K."""
    vae, x = make(perturb=0.01)
    snr = {}
    for kind in ("iwae", "dreg"):
        for k in (10, 1000):
            pyro.clear_param_store()
            enc, _ = gradient_samples(vae, ESTIMATORS.build({"kind": kind, "num_particles": k}), x, num_samples=100)
            snr[kind, k] = summarize(enc)["snr"]
    assert snr["dreg", 1000] > 2 * snr["dreg", 10]
    assert snr["dreg", 1000] > 20 * snr["iwae", 1000]
    # DReG's advantage over IWAE grows with K
    assert snr["dreg", 1000] / snr["iwae", 1000] > 2 * snr["dreg", 10] / snr["iwae", 10]


def test_dreg_and_iwae_estimate_the_same_gradient():
    vae, x = make(perturb=0.05)
    pyro.clear_param_store()
    a, ad = gradient_samples(vae, ESTIMATORS.build({"kind": "iwae", "num_particles": 10}), x, num_samples=300)
    b, bd = gradient_samples(vae, ESTIMATORS.build({"kind": "dreg", "num_particles": 10}), x, num_samples=300)
    for g1, g2 in ((a, b), (ad, bd)):
        se = ((g1.var(0) + g2.var(0)) / 300).sqrt() + 1e-6
        assert ((g1.mean(0) - g2.mean(0)).abs() / se).max() < 5


def test_our_iwae_equals_pyro_renyi_on_full_batches_and_stays_per_point_with_minibatches():
    """Same seeds, same draws: without subsampling both give the IWAE bound; with N/n = 100 ours is
    100 times the per-point bound, Pyro's the tempered (1/s) log mean exp(s log w) >= it (power means)."""
    vae, x = make("diagonal_normal")
    ours, pyros = (
        ESTIMATORS.build({"kind": "iwae", "num_particles": 5}),
        ESTIMATORS.build({"kind": "pyro_renyi", "num_particles": 5}),
    )

    def loss(estimator, seed, **kw):
        torch.manual_seed(seed)
        with torch.no_grad():
            return estimator.loss(vae.model, vae.guide, x, **kw)

    for seed in range(5):
        full = loss(ours, seed)
        assert loss(pyros, seed) == pytest.approx(full, rel=1e-5)
        assert loss(ours, seed, num_data=2000) == pytest.approx(100 * full, rel=1e-5)
        assert loss(pyros, seed, num_data=2000) < 100 * full - 1.0
