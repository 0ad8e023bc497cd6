import math

import pyro
import pytest
import torch

from pyro_vae import ESTIMATORS, ConfigError, build_elbo, build_optimizer, build_vae, evaluate, load_data
from pyro_vae.infer.estimators import check_compatible

from ..conftest import small_config

SPECS = [
    {"kind": "trace"},
    {"kind": "trace", "num_particles": 3},
    {"kind": "trace", "num_particles": 3, "vectorize_particles": False},
    {"kind": "jit_trace"},
    {"kind": "meanfield"},
    {"kind": "jit_meanfield"},
    {"kind": "tracegraph"},
    {"kind": "renyi", "alpha": 0.5, "num_particles": 3},
    {"kind": "renyi", "alpha": 0.9, "num_particles": 3},
    {"kind": "iwae", "num_particles": 3},
    {"kind": "tail_adaptive", "num_particles": 3},
    {"kind": "pyro_renyi", "alpha": 0.0, "num_particles": 3},
    {"kind": "stl"},
    {"kind": "stl", "num_particles": 3},
    {"kind": "dreg", "num_particles": 3},
    {"kind": "beta_tc"},
]


@pytest.fixture(scope="module")
def one_batch():
    """50 statically binarised points, and the best log-likelihood any model that ignores z can give them: the
    product of their own pixel frequencies (in nats per point)."""
    x = load_data("synthetic", binarize="static").train[:50]
    p = x.mean(0).clamp(1e-6, 1 - 1e-6)
    return x, (x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1).mean().item()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_every_estimator_trains(spec, one_batch):
    """100 steps on one batch take the ELBO 5 nats per point above what a model that ignores z can reach on that
    batch: encoder and decoder both learn (they reach 9 to 11; with the encoder's gradient cut, below 0)."""
    x, ignoring_z = one_batch
    cfg = small_config("train.optimizer.lr=1e-2")
    cfg["train"]["elbo"] = spec
    pyro.set_rng_seed(0)
    vae = build_vae(cfg, x.shape[1:])
    elbo = build_elbo(cfg)
    check_compatible(elbo, vae.model, vae.guide, x[:2])
    opt = build_optimizer(cfg, vae.parameters())
    for _ in range(100):
        opt.zero_grad()
        loss = elbo.loss_and_grads(vae.model, vae.guide, x, num_data=50)
        assert math.isfinite(loss)
        opt.step()
    torch.manual_seed(0)
    assert evaluate(vae, x, iwae_samples=0, progress=False)["elbo"] > ignoring_z + 5.0


@pytest.mark.parametrize("kind", ["iwae", "renyi", "tail_adaptive", "dreg", "pyro_renyi"])
def test_multi_particle_estimators_refuse_one_particle(kind):
    with pytest.raises(ConfigError, match="num_particles >= 2"):
        ESTIMATORS.build({"kind": kind, "num_particles": 1})


def test_bad_estimator_settings():
    with pytest.raises(ConfigError, match="use kind = \"trace\""):
        ESTIMATORS.build({"kind": "renyi", "alpha": 1.0})
    with pytest.raises(ConfigError, match="vectorize_particles = true"):
        ESTIMATORS.build({"kind": "tail_adaptive", "vectorize_particles": False})
    with pytest.raises(ConfigError, match=">= 1"):
        ESTIMATORS.build({"kind": "trace", "num_particles": 0})
    with pytest.raises(ConfigError, match="valid kinds: .*iwae.*meanfield.*trace"):
        ESTIMATORS.build({"kind": "elbo"})
    with pytest.raises(ConfigError, match="valid parameters: alpha, num_particles"):
        ESTIMATORS.build({"kind": "renyi", "beta": 2})


def test_meanfield_and_trace_agree_in_expectation(small_vae, synthetic):
    """Analytic-KL and Monte Carlo-KL estimators estimate the same ELBO: means agree within MC error."""
    x = synthetic.example_batch(20)
    trace = ESTIMATORS.build({"kind": "trace"})
    meanfield = ESTIMATORS.build({"kind": "meanfield"})
    with torch.no_grad(), pyro.validation_enabled(False):
        a = torch.tensor([trace.loss(small_vae.model, small_vae.guide, x) for _ in range(400)])
        b = torch.tensor([meanfield.loss(small_vae.model, small_vae.guide, x) for _ in range(400)])
    se = (a.var() / 400 + b.var() / 400).sqrt()
    assert abs(a.mean() - b.mean()) < 4 * se
    assert b.var() < a.var()  # the closed-form KL removes variance


def test_tail_adaptive_reports_the_elbo_of_its_particles(synthetic, small_vae):
    """Its loss value is the K-particle ELBO estimate: the same expectation as Trace_ELBO's loss
    (it was once divided by K twice). Means over 40 draws each, within 5 standard errors."""
    x = synthetic.example_batch(20)
    draws = {}
    for kind in ("trace", "tail_adaptive"):
        elbo = ESTIMATORS.build({"kind": kind, "num_particles": 3})
        values = []
        for seed in range(40):
            pyro.set_rng_seed(seed)
            small_vae.zero_grad()
            values.append(elbo.loss_and_grads(small_vae.model, small_vae.guide, x, num_data=100))
        draws[kind] = torch.tensor(values)
    se = math.sqrt(sum(v.var() / len(v) for v in draws.values()))
    assert abs(draws["trace"].mean() - draws["tail_adaptive"].mean()) < 5 * se
