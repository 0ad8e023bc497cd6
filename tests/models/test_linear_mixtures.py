"""gmvae, m2 and cvae against ground truth: their linear-Gaussian versions (``models.linear_mixtures``), where
log p(x), p(c|x) and p(z|x, c) are closed form. Both sides of every bound are checked where the truth is known."""

import math

import pyro
import pytest
import torch

from pyro_vae import ESTIMATORS, build_vae, evaluate, load_config
from pyro_vae.models.linear_mixtures import (
    exact_component_posterior,
    exact_log_px,
    linear_mixture_settings,
    set_exact_posteriors,
)

D = 6


def make(kind, seed=0, n=40, **settings):
    """The linear model of ``kind`` with decoder weights drawn at scale 1, its exact posteriors, and n points
    drawn from it (with their labels); ``settings``: more config settings."""
    torch.manual_seed(seed)
    vae = build_vae(load_config(overrides={**linear_mixture_settings(kind), **settings}), (D,))
    with torch.no_grad():
        vae.decoder.net[0].weight.normal_()
        if kind == "gmvae":
            vae.prior.locs.mul_(2.0)  # components apart, so that p(c|x) is far from uniform
    set_exact_posteriors(vae)
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        if kind == "gmvae":
            return vae, vae.model(num_samples=n), None
        y = torch.arange(n) % vae.classes
        z = torch.randn(n, vae.latent_dim)
        return vae, vae.likelihood(vae.decode(z, y)).sample(), y


def assert_elbo_is(vae, x, value, **labels):
    """The ELBO's estimate (its reconstruction term by Monte Carlo) equals ``value`` within four standard errors
    of the mean of 8 repeats of 2000 draws each, which is under 0.1 nats."""
    with torch.no_grad():
        draws = torch.tensor([evaluate(vae, x, iwae_samples=0, elbo_samples=2000, **labels)["elbo"] for _ in range(8)])
    error = draws.std().item() / math.sqrt(len(draws))
    assert abs(draws.mean().item() - value) < 4 * error + 1e-4 and 4 * error < 0.1, (draws, value)


@pytest.mark.parametrize("kind", ["gmvae", "m2"])
def test_with_the_exact_posteriors_the_bounds_equal_log_px(kind):
    """q(c|x) = p(c|x) and q(z|x, c) = p(z|x, c): every importance weight is p(x), so log p(x) at any K and the
    ELBO equal the exact marginal, from both sides."""
    vae, x, _ = make(kind)
    with torch.no_grad():
        truth = exact_log_px(vae, x)
        q_c = torch.softmax(vae.classifier(vae.encode(x)), -1)
        torch.testing.assert_close(q_c, exact_component_posterior(vae, x), rtol=0, atol=1e-4)
        for k in (1, 50):
            r = evaluate(vae, x, iwae_samples=k, per_point=True)
            torch.testing.assert_close(torch.tensor(r["log_px_per_point"]), truth, rtol=0, atol=2e-3)
    assert_elbo_is(vae, x, truth.mean().item())


@pytest.mark.parametrize("kind", ["gmvae", "m2"])
def test_log_px_sums_the_discrete_latent_whatever_q_c_says(kind):
    """q(c|x) put on a wrong component for every point (logits rolled by one): a draw of the mixture q(z|x) would
    never visit the right one and log p(x) would fall far below the truth; summing c out exactly keeps it
    exact. The ELBO, which does weigh the components by q(c|x), falls far below."""
    vae, x, _ = make(kind)
    with torch.no_grad():
        truth = exact_log_px(vae, x)
        p_c = exact_component_posterior(vae, x)
        rows = vae.classifier.weight.clone(), vae.classifier.bias.clone()
        vae.classifier.weight.copy_(rows[0].roll(1, 0))
        vae.classifier.bias.copy_(rows[1].roll(1, 0))
        wrong = torch.softmax(vae.classifier(vae.encode(x)), -1)
        assert ((wrong * p_c).sum(-1) < 0.5).float().mean() > 0.5  # q(c|x) misses p(c|x) for most points
        r = evaluate(vae, x, iwae_samples=20, per_point=True)
    torch.testing.assert_close(torch.tensor(r["log_px_per_point"]), truth, rtol=0, atol=2e-3)
    assert r["elbo"] < truth.mean().item() - 1.0


@pytest.mark.parametrize("kind", ["gmvae", "m2"])
def test_log_px_of_an_imperfect_guide_is_below_the_truth_and_closes_in_with_k(kind):
    """A perturbed guide (every posterior weight moved by 0.01 sd): E[log p_K] rises with K towards log p(x) and
    never above it, and K = 3000 closes nine tenths of K = 1's gap (two-sided, Monte Carlo errors from 8 repeats);
    K = 1 is above the ELBO: log sum_c p(c) w_c >= sum_c q(c|x) log(p(c) w_c / q(c|x)) by Jensen."""
    vae, x, _ = make(kind)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in vae.posterior.parameters():
            p.add_(0.01 * torch.randn_like(p))
        truth = exact_log_px(vae, x).mean().item()
        est = {}
        for k in (1, 100, 3000):
            draws = torch.tensor([evaluate(vae, x, iwae_samples=k)["log_px"] for _ in range(8)])
            est[k] = (draws.mean().item(), draws.std().item() / math.sqrt(8) + 1e-4)
        elbo = evaluate(vae, x, iwae_samples=0, elbo_samples=200)["elbo"]
    (m1, s1), (m100, s100), (m3000, s3000) = est[1], est[100], est[3000]
    assert elbo < m1 + 4 * s1 and m1 < m100 - 4 * math.hypot(s1, s100) and m100 <= m3000 + 4 * math.hypot(s100, s3000)
    assert m3000 < truth + 4 * s3000 and truth - m3000 < 0.1 * (truth - m1)


def test_cvae_log_px_given_y_equals_the_truth():
    """cvae's bound is on log p(x|y): with the exact q(z|x, y) it is exact at any K, and the ELBO too."""
    vae, x, y = make("cvae")
    with torch.no_grad():
        truth = exact_log_px(vae, x, y)
        r = evaluate(vae, x, iwae_samples=10, labels=y, per_point=True)
    torch.testing.assert_close(torch.tensor(r["log_px_per_point"]), truth, rtol=0, atol=2e-3)
    assert_elbo_is(vae, x, truth.mean().item(), labels=y)


@pytest.mark.parametrize("fit", [0.0, 1.0])
def test_gmvae_guide_training_finds_the_component_posterior(fit):
    """The decoder and prior fixed at the truth, the guide (classifier and posterior) trained from scratch by SVI
    with the enumerated ELBO, and model.component_fit = ``fit``. The ELBO alone leaves a third of the points
    whose component is clear (p(c|x) > 0.9) on a wrong one for the first 400 steps (a q(z|x, c) is trained only
    where q(c|x) puts mass); the component-fit term brings that under 6 % by step 300. Either way, after 1000 steps under 3 % are
    wrong and the ELBO is within 0.15 nats of log p(x), which the exact guide reaches (a full-normal posterior can
    hold it)."""
    vae, x, _ = make("gmvae", n=200, **{"model.component_fit": fit})
    with torch.no_grad():
        truth = exact_log_px(vae, x).mean().item()
        p_c = exact_component_posterior(vae, x)
    clear = p_c.max(-1).values > 0.9
    torch.manual_seed(3)
    for module in [*vae.posterior.modules(), *vae.classifier.modules()]:
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for p in [*vae.decoder.parameters(), *vae.prior.parameters()]:
        p.requires_grad_(False)
    pyro.set_rng_seed(3)
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), ESTIMATORS.build({"kind": "enumerate"}))

    def wrong():
        with torch.no_grad():
            q_c = vae.classifier(vae.encode(x))
        return (q_c.argmax(-1) != p_c.argmax(-1))[clear].float().mean().item()

    for step in range(1, 1001):
        svi.step(x, num_data=len(x))
        if step == 300:
            early = wrong()
    elbo = evaluate(vae, x, iwae_samples=0, elbo_samples=50)["elbo"]
    assert clear.float().mean() > 0.5
    assert early > 0.2 if not fit else early < 0.06
    assert wrong() < 0.03
    assert truth - 0.15 < elbo < truth + 0.05
