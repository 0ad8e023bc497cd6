"""Discrete latents: the Gaussian-mixture VAE (model.kind = "gmvae"), its component c summed out by
enumeration, or estimated by score-function gradients; clustering by infer_discrete."""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch

import pyro_vae
from pyro_vae import build_elbo, build_vae
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation.metrics import cluster_accuracy, clustering, evaluate
from pyro_vae.infer.estimators import ESTIMATORS, check_compatible
from pyro_vae.models.vae import join

from ..conftest import small_config

K = 10


def gmvae(synthetic, *overrides):
    cfg = small_config("model.kind=gmvae", f"model.components={K}", *overrides)
    return cfg, build_vae(cfg, synthetic.data_shape)


def test_gmvae_sites_model_and_guide(synthetic):
    _, vae = gmvae(synthetic)
    x = synthetic.example_batch(6)
    guide = poutine.trace(vae.guide).get_trace(x, num_data=100)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x, num_data=100)
    assert type(guide.nodes["c"]["fn"]).__name__ == "Categorical" and guide.nodes["c"]["value"].shape == (6,)
    assert guide.nodes["z"]["value"].shape == (6, 4)
    assert [n for n, s in model.nodes.items() if s["type"] == "sample" and n != "data"] == ["c", "z", "x"]
    assert model.nodes["x"]["is_observed"]
    q = vae.q(x)  # c summed out: a mixture over the K components
    assert q.batch_shape == (6,) and q.event_shape == (4,)
    assert torch.allclose(q.mixture_distribution.probs.sum(-1), torch.ones(6))


def test_the_enumerated_elbo_is_the_explicit_sum_over_the_components(synthetic):
    """-TraceEnum loss = sum_c q(c|x) [log p(c) + log p(z_c|c) + log p(x|z_c) - log q(c|x) - log q(z_c|x,c)]
    with the same z_c draws (one rsample of all K at once, as parallel enumeration makes)."""
    _, vae = gmvae(synthetic)
    x = synthetic.example_batch(8)
    elbo = build_elbo(small_config("train.elbo.kind=enumerate"))
    with pyro.validation_enabled(False):
        pyro.set_rng_seed(1)
        enumerated = -elbo.differentiable_loss(vae.model, vae.guide, x, num_data=8)
    pyro.set_rng_seed(1)
    with torch.no_grad():
        h = vae.encode(x)
        q_c = torch.distributions.Categorical(logits=vae.classifier(h))
        c = torch.arange(K).reshape(K, 1)  # the enumerated values, as Pyro lays them out
        q_z = vae.posterior(join(h, torch.eye(K).reshape(K, 1, K)))  # batch (K, 8)
        z = q_z.rsample()
        p = vae.prior
        log_c = p.p_c(8).log_prob(c) - q_c.log_prob(c)  # (K, 8)
        terms = log_c + p.p_z(c).log_prob(z) + vae.likelihood(vae.decode(z)).log_prob(x) - q_z.log_prob(z)
        explicit = (q_c.probs.T * terms).sum()
    assert torch.allclose(enumerated.detach(), explicit, rtol=1e-5)
    # and the sum is over all K values: one value of c alone gives another number
    assert not torch.allclose(explicit, terms[0].sum(), rtol=1e-3)


def classifier_gradients(vae, elbo, x, seeds):
    grads = []
    for seed in seeds:
        pyro.set_rng_seed(seed)
        vae.zero_grad()
        with pyro.validation_enabled(False):
            elbo.loss_and_grads(vae.model, vae.guide, x, num_data=x.shape[0])
        grads.append(vae.classifier.weight.grad.flatten().clone())
    return torch.stack(grads)


def test_enumeration_has_lower_gradient_variance_than_reinforce(synthetic):
    """The gradient of the ELBO with respect to q(c|x)'s parameters: enumeration sums c out (noise from z
    only), score-function estimates it from one draw of c; both unbiased, the first far less noisy."""
    _, vae = gmvae(synthetic)
    x = synthetic.example_batch(32)
    seeds = range(60)
    enum = classifier_gradients(vae, build_elbo(small_config("train.elbo.kind=enumerate")), x, seeds)
    sf = classifier_gradients(vae, build_elbo(small_config("train.elbo.kind=score_function")), x, seeds)
    plain = classifier_gradients(vae, build_elbo(small_config("train.elbo.kind=trace")), x, seeds)
    var = {name: g.var(0).sum().item() for name, g in (("enum", enum), ("sf", sf), ("trace", plain))}
    assert var["enum"] < var["sf"] / 10 and var["enum"] < var["trace"] / 10, var
    # unbiased alike: the mean score-function gradient agrees with enumeration's, within its Monte Carlo error
    mean_enum, mean_sf = enum.mean(0), sf.mean(0)
    direction = mean_enum / mean_enum.norm()
    se = (sf @ direction).std() / math.sqrt(len(seeds)) + (enum @ direction).std() / math.sqrt(len(seeds))
    assert abs((mean_sf - mean_enum) @ direction) < 4 * se


@pytest.mark.parametrize("kind", ["enumerate", "score_function", "trace", "tracegraph"])
def test_gmvae_trains_with_the_discrete_estimators(kind, synthetic, tmp_path):
    cfg = small_config("model.kind=gmvae", "model.components=4", f"train.elbo.kind={kind}", "train.epochs=2")
    vae, history = pyro_vae.train(cfg, tmp_path / kind, data=synthetic, progress=False, log=lambda *a: None)
    assert all(math.isfinite(h["test_elbo"]) for h in history)  # learning: test_families (each estimator)
    r = evaluate(vae, synthetic.test, iwae_samples=10)
    assert r["log_px"] >= r["elbo"] - 1.0 and r["rate"] >= 0


def test_estimators_that_need_a_reparameterised_guide_refuse_the_discrete_site(synthetic):
    cfg, vae = gmvae(synthetic)
    x = synthetic.example_batch(4)
    for kind in ["meanfield", "jit_meanfield", "iwae", "dreg", "stl"]:
        with pytest.raises(
            ConfigError, match="site 'c' draws from Categorical without rsample: use kind = \"enumerate\""
        ):
            check_compatible(ESTIMATORS.build({"kind": kind}), vae.model, vae.guide, x, num_data=100)


def test_gmvae_has_its_own_prior_and_needs_two_components(synthetic):
    with pytest.raises(ConfigError, match="has its own prior"):
        gmvae(synthetic, "model.prior.kind=vamp")
    with pytest.raises(ConfigError, match="model.components"):
        small_config("model.kind=gmvae", "model.components=1")
    with pytest.raises(ConfigError, match="valid kinds: cvae, gmvae, hierarchical, m2, vae"):
        small_config("model.kind=m3")


def test_assign_is_the_models_map_component_by_infer_discrete(synthetic):
    _, vae = gmvae(synthetic)
    x = synthetic.example_batch(20)
    c = vae.assign(x)
    with torch.no_grad():
        z = vae.q(x).mean
        p = vae.prior
        every = torch.arange(K).reshape(K, 1)
        direct = (p.p_c(1).log_prob(every) + p.p_z(every).log_prob(z)).argmax(0)
    assert torch.equal(c, direct)


def test_cluster_accuracy_scores_a_clustering_against_labels(synthetic):
    assert cluster_accuracy([0, 0, 1, 1], [3, 3, 5, 5]) == 1.0
    assert cluster_accuracy([0, 0, 0, 0], [3, 3, 5, 5]) == 0.5  # one cluster: the majority share
    assert cluster_accuracy([0, 1, 2, 3], [3, 3, 5, 5]) == 1.0  # a cluster per point is trivially pure
    _, vae = gmvae(synthetic)
    score = clustering(vae, synthetic.test, synthetic.test_labels)["cluster_accuracy"]
    majority = torch.bincount(synthetic.test_labels).max().item() / len(synthetic.test_labels)
    assert majority <= score <= 1.0
    assert clustering(build_vae(small_config(), synthetic.data_shape), synthetic.test, synthetic.test_labels) == {}


def test_compare_runs_the_discrete_estimators_on_gmvae(synthetic, tmp_path):
    from pyro_vae.studies.compare import compare

    cfg = small_config("model.kind=gmvae", "model.components=4", "train.epochs=2", "eval.iwae_samples=10")
    rows = compare(
        cfg,
        "enumerate,score_function,trace",
        tmp_path / "study",
        snr_samples=5,
        progress=False,
        log=lambda *a: None,
        data=synthetic,
    )
    assert [r["estimator"] for r in rows] == ["enumerate", "score_function", "trace"]
    assert all(0 < r["cluster_accuracy"] <= 1 for r in rows)
    table = (tmp_path / "study/compare.md").read_text()
    assert "cluster_accuracy" in next(line for line in table.splitlines() if line.startswith("| estimator"))
    # the encoder (q(c|x) included) gradient: enumeration is the least noisy
    var = {r["estimator"]: r["encoder_grad_var"] for r in rows}
    assert var["enumerate"] < var["score_function"] < var["trace"]


def test_component_fit_trains_from_the_config_and_refuses_a_negative_weight(synthetic, tmp_path):
    cfg = small_config("model.kind=gmvae", "model.components=3", "model.component_fit=1.0", "train.epochs=1")
    vae, history = pyro_vae.train(cfg, tmp_path, data=synthetic, progress=False, log=lambda *a: None)
    assert vae.component_fit == 1.0 and math.isfinite(history[0]["test_elbo"])
    with pytest.raises(ConfigError, match=r"model\.component_fit.*>= 0"):
        small_config("model.kind=gmvae", "model.component_fit=-1")
