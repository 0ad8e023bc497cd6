"""Several stochastic layers (model.kind = "hierarchical"): structure, every estimator, and the
two-layer linear-Gaussian chain, whose log p(x) and posterior are closed form (pyro_vae.models.linear_gaussian)."""

import math

import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae import ESTIMATORS, ConfigError, build_elbo, build_optimizer, build_vae, load_config
from pyro_vae.evaluation.metrics import evaluate, iwae_log_px
from pyro_vae.infer.estimators import check_compatible
from pyro_vae.models.linear_gaussian import (
    constant_scales,
    exact_chain_log_px,
    linear_chain_settings,
    sample_data,
    set_exact_chain_posterior,
)

from ..conftest import small_config

TWO_LAYERS = ("model.kind=hierarchical", "model.layers=[{latent_dim = 3, hidden = [16]}]")


def chain(*overrides):
    return small_config(*TWO_LAYERS, *overrides)


def test_sites_plates_and_scales(synthetic):
    cfg = small_config("model.kind=hierarchical", "model.layers=[{latent_dim = 3, hidden = [16]}, {latent_dim = 2}]")
    vae = build_vae(cfg, synthetic.data_shape)
    x = synthetic.example_batch(5)
    guide = poutine.trace(vae.guide).get_trace(x, num_data=100)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x, num_data=100)
    latent = lambda tr: [n for n, s in tr.nodes.items() if s["type"] == "sample" and n != "data"]  # noqa: E731
    assert latent(guide) == ["z1", "z2", "z3"]  # x -> z1 -> z2 -> z3
    assert latent(model) == ["z3", "z2", "z1", "x"]  # z3 -> z2 -> z1 -> x
    for tr in (guide, model):
        for name in latent(tr):
            site = tr.nodes[name]
            assert [f.name for f in site["cond_indep_stack"]] == ["data"]
            assert site["scale"] == pytest.approx(100 / 5)
    assert [guide.nodes[f"z{i}"]["value"].shape[-1] for i in (1, 2, 3)] == [4, 3, 2]
    assert model.nodes["z3"]["fn"].batch_shape == (5,)  # the top prior: model.prior on z_L
    # the model's z1 depends on z2: p(z1|z2), not a fixed prior
    z2 = guide.nodes["z2"]["value"]
    assert torch.allclose(model.nodes["z1"]["fn"].base_dist.loc, vae.down[0](z2).base_dist.loc)
    assert vae.sample(3).shape == (3, *synthetic.data_shape)


@pytest.mark.parametrize("kind", sorted(set(ESTIMATORS) - {"meanfield", "jit_meanfield", "beta_tc"}))  # refuse chains
def test_every_estimator_trains_a_chain(kind, synthetic):
    spec = {"kind": kind}
    if kind in ("iwae", "renyi", "dreg", "tail_adaptive", "pyro_renyi"):
        spec["num_particles"] = 3
    cfg = chain()
    cfg["train"]["elbo"] = spec
    vae = build_vae(cfg, synthetic.data_shape)
    elbo = build_elbo(cfg)
    x = synthetic.example_batch(20)
    check_compatible(elbo, vae.model, vae.guide, x, num_data=100)
    opt = build_optimizer(cfg, vae.parameters())
    before = [p.detach().clone() for p in vae.up.parameters()]
    for _ in range(2):
        opt.zero_grad()
        with pyro.validation_enabled(False):
            loss = elbo.loss_and_grads(vae.model, vae.guide, x, num_data=100)
        assert math.isfinite(loss) and loss > 0
        opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, vae.up.parameters()))  # q(z2|z1) learns


@pytest.mark.parametrize("kind", ["meanfield", "jit_meanfield"])
def test_closed_form_kl_estimators_refuse_dependent_layers(kind, synthetic):
    vae = build_vae(chain(), synthetic.data_shape)
    with pytest.raises(ConfigError, match="mean-field guide; this guide draws z1, z2 in another order"):
        check_compatible(ESTIMATORS.build({"kind": kind}), vae.model, vae.guide, synthetic.example_batch(2))


def test_the_default_estimator_of_a_chain_is_a_monte_carlo_one():
    assert chain()["train"]["elbo"]["kind"] == "jit_trace"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("model.kind=hierarchical",), "needs at least one layer above z_1"),
        (("model.layers=[{latent_dim = 3}]",), "use model.kind = \"hierarchical\""),
        ((*TWO_LAYERS[:1], "model.layers=[{hidden = [3]}]"), "needs a latent_dim"),
        ((*TWO_LAYERS[:1], "model.layers=[{latent_dim = 3, width = 4}]"), "unknown key.*width"),
        ((*TWO_LAYERS[:1], "model.layers=[{latent_dim = 0}]"), "latent_dim"),
        ((*TWO_LAYERS[:1], "model.layers=[3]"), "must be a table"),
        ((*TWO_LAYERS, "model.prior.kind=vamp"), "another prior"),
    ],
)
def test_bad_layers_are_refused(overrides, message, synthetic):
    with pytest.raises(ConfigError, match=message):
        build_vae(small_config(*overrides), synthetic.data_shape)


def test_evaluate_reports_each_layer(synthetic):
    vae = build_vae(chain(), synthetic.data_shape)
    r = evaluate(vae, synthetic.test[:60], iwae_samples=10, batch_size=25)
    assert len(r["rate_per_layer"]) == len(r["active_units_per_layer"]) == 2
    assert sum(r["rate_per_layer"]) == pytest.approx(r["rate"], rel=1e-5)
    assert r["active_units"] == sum(r["active_units_per_layer"])
    assert r["elbo"] == pytest.approx(-(r["rate"] + r["distortion"]))


# -- the linear-Gaussian chain: closed forms ----------------------------------------------------
@pytest.fixture
def linear_chain():
    torch.manual_seed(0)
    vae = build_vae(load_config(overrides=linear_chain_settings((2, 1))), (4,))
    constant_scales(vae)
    return vae, sample_data(vae, 200)


def test_iwae_rises_toward_the_closed_form_log_px(linear_chain):
    """IWAE_K <= IWAE_2K <= log p(x) in expectation (Burda et al. 2016, thm 1), tending to it as K grows:
    a random guide's estimates, 10 repeats each, increase with K by more than 3 standard errors and stay
    below the exact value."""
    vae, x = linear_chain
    exact = exact_chain_log_px(vae, x).mean().item()
    means, ses = [], []
    with torch.no_grad():
        for k in (1, 10, 100, 1000):
            runs = torch.stack([iwae_log_px(vae, x, k).mean() for _ in range(10)])
            means.append(runs.mean().item())
            ses.append(runs.std().item() / math.sqrt(len(runs)))
    for a, b, sa, sb in zip(means, means[1:], ses, ses[1:]):
        assert b - a > 3 * math.hypot(sa, sb)
    assert means[-1] < exact + 3 * ses[-1]
    assert exact - means[-1] < (exact - means[0]) / 5  # most of the way there at K = 1000


def test_at_the_exact_posterior_every_weight_is_the_marginal_likelihood(linear_chain):
    vae, x = linear_chain
    set_exact_chain_posterior(vae)
    exact = exact_chain_log_px(vae, x)
    with torch.no_grad():
        log_px_z, log_p, log_q = vae.log_weights(x, 7)
        assert torch.allclose(log_px_z + log_p - log_q, exact.expand(7, -1), atol=1e-4)
        assert torch.allclose(iwae_log_px(vae, x, 50), exact, atol=1e-4)
        r = evaluate(vae, x, iwae_samples=5, batch_size=100)
    assert r["elbo"] == pytest.approx(exact.mean().item(), abs=1e-3)  # the ELBO is tight


@pytest.mark.parametrize("kind", ["stl", "dreg"])
def test_pathwise_estimators_vanish_at_the_exact_posterior_through_every_layer(kind, linear_chain):
    """STL's and DReG's guide gradients are zero at the exact posterior (log w is constant in z). With
    layers, log q(z_2|z_1)'s parameters depend on z_1: only the guide's parameters may be held fixed,
    not the distribution's (which leaves a gradient of about 10 here); Trace_ELBO's is far from zero."""
    vae, x = linear_chain
    set_exact_chain_posterior(vae)

    def guide_gradient(spec):
        vae.zero_grad()
        ESTIMATORS.build(spec).loss_and_grads(vae.model, vae.guide, x, num_data=200)
        return torch.cat([p.grad.flatten() for p in vae.guide_parameters() if p.grad is not None])

    assert guide_gradient({"kind": kind, "num_particles": 3}).abs().max() < 1e-2
    assert guide_gradient({"kind": "trace"}).abs().max() > 1.0


@pytest.mark.parametrize("spec", ["kind='jit_trace'", "kind='iwae', num_particles=3", "kind='stl', num_particles=2"])
def test_a_chain_compiles_and_matches_eager_draw_for_draw(spec, synthetic):
    """The compiled estimators on two layers (stl: with the guide run again inside the graph)."""
    from ..infer.test_compiled import assert_same, loss_and_grads

    vae = build_vae(chain(), synthetic.data_shape)
    elbo = build_elbo(small_config(f"train.elbo={{{spec}}}"))
    eager = build_elbo(small_config("train.elbo.kind=trace")) if "jit_trace" in spec else None

    class Eager:
        differentiable_loss = elbo._eager_loss

    x = synthetic.example_batch(16)
    with pyro.validation_enabled(False):
        loss_and_grads(elbo, vae, x, seed=0)  # compiles
        for seed, beta in ((1, 1.0), (2, 0.5)):
            assert_same(elbo, eager or Eager, vae, x, seed, beta)
    assert len(elbo._graphs) == 1
