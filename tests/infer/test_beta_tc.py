"""beta-TCVAE and the stratified estimate of the aggregate posterior it trains on."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_vae import ConfigError, build_elbo, build_vae, load_config
from pyro_vae.infer.aggregate import aggregate_log_prob, stratified_log_weights
from pyro_vae.infer.estimators import check_compatible

from ..conftest import small_config


def brute_force(loc, scale, z):
    """log q(z_i) = log (1/N) sum_j q(z_i|x_j) and its marginals, for codes z (n, D) of all N = n points."""
    lp = dist.Normal(loc[None], scale[None]).log_prob(z[:, None])  # (i, j, D)
    n = loc.shape[0]
    return lp.sum(-1).logsumexp(1) - math.log(n), lp.logsumexp(1) - math.log(n)


def test_the_estimate_is_exact_on_the_whole_data_set():
    g = torch.Generator().manual_seed(0)
    loc, scale = torch.randn(40, 3, generator=g), torch.rand(40, 3, generator=g) + 0.3
    z = loc + scale * torch.randn(40, 3, generator=g)
    joint, marginal = aggregate_log_prob(dist.Normal(loc, scale), z, num_data=40, chunk=7)
    want_joint, want_marginal = brute_force(loc, scale, z)
    torch.testing.assert_close(joint, want_joint)
    torch.testing.assert_close(marginal, want_marginal)


def test_the_estimate_of_q_z_is_unbiased_over_random_batches():
    """N = 30 points, batches of n = 5 holding point 0 and 4 others drawn uniformly: the mean of q^(z_0) over
    20,000 batches is within 4 standard errors of the exact q(z_0) = (1/N) sum_m q(z_0|x_m) (and each q^(z_0d))."""
    g = torch.Generator().manual_seed(1)
    n_data, n, batches = 30, 5, 20000
    loc, scale = torch.randn(n_data, 2, generator=g), torch.rand(n_data, 2, generator=g) + 0.5
    z0 = loc[0] + 0.3
    others = torch.rand(batches, n_data - 1, generator=g).argsort(1)[:, : n - 1] + 1  # 4 of points 1..29
    index = torch.cat([torch.zeros(batches, 1, dtype=torch.long), others], 1)  # (B, n), point 0 first
    z = loc[index] + 0.1  # the batch's codes; only point 0's is read below
    z[:, 0] = z0
    joint, marginal = aggregate_log_prob(dist.Normal(loc[index], scale[index]), z, num_data=n_data)
    exact = dist.Normal(loc, scale).log_prob(z0)  # (N, D)
    for estimate, truth in (
        (joint[:, 0].exp(), exact.sum(-1).exp().mean()),
        (marginal[:, 0, 0].exp(), exact[:, 0].exp().mean()),
        (marginal[:, 0, 1].exp(), exact[:, 1].exp().mean()),
    ):
        se = estimate.std() / math.sqrt(batches)
        assert abs(float(estimate.mean() - truth)) < 4 * float(se)
        assert float(se) < 0.05 * float(truth)  # a test that can fail: the error bar is small


def test_the_weights():
    w = stratified_log_weights(4, 10).exp()
    assert torch.allclose(w.diagonal(), torch.full((4,), 0.1))
    assert torch.allclose(w.sum(1), torch.ones(4))  # 1/N + (n-1) (N-1)/(N(n-1)) = 1
    assert torch.allclose(stratified_log_weights(5, 5).exp(), torch.full((5, 5), 0.2))
    for n, n_data in ((1, 10), (6, 5)):
        with pytest.raises(ConfigError, match="at least 2"):
            stratified_log_weights(n, n_data)


def _loss(elbo, vae, x, seed, beta, num_data):
    pyro.set_rng_seed(seed)
    loss = elbo.differentiable_loss(vae.model, vae.guide, x, num_data=num_data, beta=beta)
    return loss, torch.autograd.grad(loss, list(vae.parameters()))


def test_beta_tc_is_the_elbo_less_beta_minus_1_times_the_total_correlation(synthetic):
    """On a whole data set (n = N): the loss at beta is Trace_ELBO's loss of the same draws plus (beta - 1)
    times the sum over points of log q(z) - sum_d log q(z_d), from the brute-force mixture of the n posteriors;
    at beta = 1 the gradients are Trace_ELBO's too."""
    vae = build_vae(small_config(), synthetic.data_shape)
    x = synthetic.example_batch(32)
    tc_elbo = build_elbo(small_config("train.elbo.kind=beta_tc"))
    trace = build_elbo(small_config("train.elbo.kind=trace"))
    with pyro.validation_enabled(False):
        plain, g_plain = _loss(trace, vae, x, 3, 1.0, 32)
        at_1, g_1 = _loss(tc_elbo, vae, x, 3, 1.0, 32)
        at_4, _ = _loss(tc_elbo, vae, x, 3, 4.0, 32)
    torch.testing.assert_close(at_1, plain)
    for a, b in zip(g_1, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    pyro.set_rng_seed(3)
    z = poutine.trace(vae.guide).get_trace(x, num_data=32).nodes["z"]["value"]
    q = vae.q(x).base_dist
    joint, marginal = brute_force(q.loc.detach(), q.scale.detach(), z.detach())
    tc = float((joint - marginal.sum(-1)).sum())
    assert float(at_4 - at_1) == pytest.approx(3 * tc, rel=1e-4, abs=1e-3)
    assert tc > 0.01  # the check has something to measure


def test_compiled_equals_uncompiled_with_particles(synthetic):
    vae = build_vae(small_config(), synthetic.data_shape)
    x = synthetic.example_batch(20)
    elbo = build_elbo(small_config("train.elbo={kind='beta_tc', num_particles=3}"))
    with pyro.validation_enabled(True):  # uncompiled
        eager, g_eager = _loss(elbo, vae, x, 5, 2.5, 1000)
    with pyro.validation_enabled(False):
        compiled, g_compiled = _loss(elbo, vae, x, 5, 2.5, 1000)
        again, _ = _loss(elbo, vae, x, 5, 0.5, 1000)
    torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-3)
    for a, b in zip(g_compiled, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    assert len(elbo._graphs) == 1 and float(again) != float(compiled)  # beta is an input of the one graph


def test_refusals(synthetic):
    x = synthetic.example_batch(4)
    elbo = build_elbo(small_config("train.elbo.kind=beta_tc"))
    layered = build_vae(small_config("model.kind=hierarchical", "model.layers=[{latent_dim=2}]"), synthetic.data_shape)
    with pytest.raises(ConfigError, match="one latent site"):
        check_compatible(elbo, layered.model, layered.guide, x)
    full = build_vae(small_config("model.posterior={kind='full_normal'}"), synthetic.data_shape)
    with pytest.raises(ConfigError, match="factorise"):
        check_compatible(elbo, full.model, full.guide, x)
    for setting in ("train.target_rate=20", "train.kl_warmup={kind='linear', epochs=1}"):
        with pytest.raises(ConfigError, match="total correlation alone"):
            load_config(None, ["train.elbo.kind=beta_tc", setting])
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        load_config(None, ["train.elbo.kind=beta_tc", "data.batch_size=1"])
