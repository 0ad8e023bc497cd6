"""Post-hoc latent samplers: the mixture's EM and BIC, the flow's fit, both beating the prior on held-out
codes of a trained model, saved as tensors, refit when the checkpoint changes, refused where they do not apply."""

import math

import pyro
import pytest
import torch

from pyro_vae import build_vae
from pyro_vae.errors import CheckpointError, ConfigError, UsageError
from pyro_vae.evaluation.generation import fitted_sampler, generate
from pyro_vae.evaluation.samplers import (
    FlowSampler,
    GaussianMixtureSampler,
    PriorSampler,
    build_sampler,
    latent_codes,
    load_sampler,
    save_sampler,
)

from ..conftest import small_config

CENTRES = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 5.0]], dtype=torch.float64)


def clusters(n, seed):
    """n points from each of three Gaussians (scales 1 and 0.5) around ``CENTRES``."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat(
        [c + torch.randn(n, 2, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.5]) for c in CENTRES]
    )


def test_one_component_is_the_maximum_likelihood_gaussian():
    """EM with K = 1 converges to the sample mean and (biased) sample covariance: its log-likelihood is
    the closed form -n/2 (d log 2 pi + log det S + d)."""
    z = clusters(200, 0)
    gmm = GaussianMixtureSampler(2, components=1).fit(z)
    n, d = z.shape
    cov = torch.cov(z.T, correction=0)
    closed = -n / 2 * (d * math.log(2 * math.pi) + torch.logdet(cov).item() + d)
    assert gmm.fit_info["log_likelihood_per_code"] * n == pytest.approx(closed, rel=1e-6)
    torch.testing.assert_close(gmm.loc[0].double(), z.mean(0), rtol=1e-5, atol=1e-5)


def test_bic_finds_the_three_clusters_and_the_fit_beats_the_prior_on_held_out_points():
    gmm = GaussianMixtureSampler(2, max_components=12).fit(clusters(300, 0))
    assert gmm.fit_info["components"] == 3
    held = clusters(200, 1).float()
    prior = torch.distributions.Normal(0.0, 1.0).log_prob(held).sum(-1)
    assert gmm.log_prob(held).mean() > prior.mean() + 3  # nats per point
    torch.testing.assert_close(
        gmm.loc[gmm.loc[:, 0].argsort()].double(), CENTRES[CENTRES[:, 0].argsort()], atol=0.15, rtol=0
    )


def test_the_flow_fits_a_curved_density_and_survives_save_and_load(tmp_path):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(4000, 2, generator=g)
    banana = torch.stack([u[:, 0], u[:, 1] * 0.3 + 0.5 * u[:, 0] ** 2 - 1], 1)  # a curved, non-Gaussian density
    flow = FlowSampler(2, layers=4, hidden=32, steps=600, batch_size=256).fit(banana[:3000])
    held = banana[3000:]
    gaussian = torch.distributions.MultivariateNormal(banana[:3000].mean(0), torch.cov(banana[:3000].T))
    with torch.no_grad():
        assert flow.log_prob(held).mean() > gaussian.log_prob(held).mean() + 0.2
        save_sampler(flow, tmp_path / "flow.pt", checkpoint_sha256="abc")
        again, blob = load_sampler(tmp_path / "flow.pt")
        torch.testing.assert_close(again.log_prob(held), flow.log_prob(held))
    assert blob["checkpoint_sha256"] == "abc" and blob["fit"]["best_step"] > 0
    torch.manual_seed(0)
    assert again.sample(7).shape == (7, 2)


@pytest.fixture(scope="module")
def trained(synthetic_module):
    """A small VAE trained a few epochs on the synthetic set (latent 4)."""
    from pyro_vae import build_elbo, build_optimizer
    from pyro_vae.training.step import svi_step

    pyro.clear_param_store()
    cfg = small_config()
    pyro.set_rng_seed(0)
    vae = build_vae(cfg, synthetic_module.data_shape)
    elbo, opt = build_elbo(cfg), build_optimizer(cfg, vae.parameters())
    for epoch in range(15):
        for batch in synthetic_module.batches(50, torch.Generator().manual_seed(epoch)):
            svi_step(vae.model, vae.guide, elbo, opt, batch, num_data=synthetic_module.num_train)
    return vae


@pytest.fixture(scope="module")
def synthetic_module():
    from pyro_vae import load_data

    return load_data("synthetic", binarize="dynamic")


def held_out_gain(kind, trained, data):
    """log q_fit(z) - log p(z) at codes z ~ q(z|x) of the test points, the sampler fitted to the training codes."""
    train_codes = latent_codes(trained, data.train, generator=torch.Generator().manual_seed(0))
    test_codes = latent_codes(trained, data.test, generator=torch.Generator().manual_seed(1))
    sampler = build_sampler(kind, trained).fit(train_codes)
    with torch.no_grad():
        diff = sampler.log_prob(test_codes) - build_sampler("prior", trained).log_prob(test_codes)
    return diff.mean(), diff.std() / math.sqrt(len(diff))


def test_the_mixture_beats_the_prior_on_held_out_codes_of_a_trained_model(trained, synthetic_module):
    """Codes z ~ q(z|x) of test points are likelier under the mixture fitted to the training codes than under
    p(z): the aggregate posterior is not the prior (0.20 nats per code here, 5 standard errors or more)."""
    gain, se = held_out_gain("gmm", trained, synthetic_module)
    assert gain > 5 * se


def test_the_flow_is_no_worse_than_the_prior_on_held_out_codes(trained, synthetic_module):
    """This small model's q(z) lies close to N(0, I) (the mixture gains 0.2 nats): the flow, which starts at
    the codes' diagonal Gaussian and keeps its best held-out state, must not fall below the prior by more
    than 3 standard errors."""
    gain, se = held_out_gain({"kind": "flow", "layers": 4, "hidden": 32, "steps": 500}, trained, synthetic_module)
    assert gain > -3 * se


def test_the_prior_sampler_draws_from_the_models_prior(trained):
    prior = build_sampler("prior", trained)
    assert isinstance(prior, PriorSampler)
    torch.manual_seed(0)
    z = prior.sample(5000)
    assert z.shape == (5000, trained.latent_dim)
    assert abs(float(z.mean())) < 4 / math.sqrt(z.numel()) and abs(float(z.var()) - 1) < 0.05
    torch.testing.assert_close(prior.log_prob(z[:3]), torch.distributions.Normal(0.0, 1.0).log_prob(z[:3]).sum(-1))


def test_fitted_samplers_are_kept_in_the_run_and_refit_for_another_checkpoint(trained, synthetic_module, tmp_path):
    lines = []
    first = fitted_sampler("gmm", trained, synthetic_module, folder=tmp_path, key="k1", log=lines.append)
    assert (tmp_path / "samplers" / "gmm.pt").exists() and any("fitted the gmm sampler" in x for x in lines)
    lines.clear()
    again = fitted_sampler("gmm", trained, synthetic_module, folder=tmp_path, key="k1", log=lines.append)
    assert lines == [] and torch.equal(again.loc, first.loc)  # read back, not fitted again
    fitted_sampler("gmm", trained, synthetic_module, folder=tmp_path, key="k2", log=lines.append)
    assert any("another checkpoint" in x for x in lines)
    images = generate(trained, again, 9, seed=3)
    assert images.shape == (9, *trained.data_shape) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert torch.equal(images, generate(trained, again, 9, seed=3))  # seeded


def test_a_damaged_sampler_file_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "gmm.pt").write_bytes(b"not a sampler")
    with pytest.raises(CheckpointError, match="delete it"):
        load_sampler(tmp_path / "gmm.pt")


@pytest.mark.parametrize(
    "overrides",
    [
        ("model.kind=gmvae",),
        ("model.kind=m2", "model.components=10"),
        ("model.kind=hierarchical", "model.layers=[{latent_dim = 3, hidden = [16]}]"),
    ],
)
def test_families_with_other_latents_are_refused(overrides, synthetic_module):
    vae = build_vae(small_config(*overrides), synthetic_module.data_shape)
    with pytest.raises(UsageError, match="--sampler prior"):
        build_sampler("gmm", vae)


def test_bad_sampler_settings_are_refused(trained):
    with pytest.raises(ConfigError, match="unknown kind 'gmmm'"):
        build_sampler("gmmm", trained)
    with pytest.raises(ConfigError, match="max_components"):
        build_sampler({"kind": "gmm", "max_components": 0}, trained)
    with pytest.raises(UsageError, match="2 or more dimensions"):
        FlowSampler(1)
    with pytest.raises(UsageError, match="NaN"):
        GaussianMixtureSampler(2).fit(torch.tensor([[0.0, float("nan")]] * 50))
