"""What every family (``FAMILIES``) must do alike, checked over the whole registry: a family added
without an entry in ``SETTINGS`` fails here until it is given one."""

import pyro
import pytest
import torch

from pyro_vae import FAMILIES, build_elbo, build_optimizer, build_vae, evaluate, load_data

from ..conftest import small_config

#: the settings each family needs beyond ``small_config``, and the estimators it trains with
SETTINGS = {
    "vae": ((), ("trace", "iwae")),
    "cvae": (("model.components=10",), ("trace", "enumerate")),
    "m2": (
        ("model.components=10", "data.labels=40"),
        ("trace", "enumerate", "jit_enumerate", "score_function", "relaxed"),
    ),
    "gmvae": (("model.components=3",), ("trace", "jit_enumerate", "score_function", "tracegraph")),
    "hierarchical": (("model.layers=[{latent_dim = 3, hidden = [16]}]",), ("trace", "iwae")),
}


def ignoring_z(x, groups=None):
    """The best log-likelihood of ``x`` (nats per point) by a model that ignores z: independent pixels at their
    own frequencies, within each group (a cvae's label, which its decoder is given) if ``groups`` is given."""
    groups = torch.zeros(len(x), dtype=torch.long) if groups is None else groups
    total = 0.0
    for g in groups.unique():
        part = x[groups == g]
        p = part.mean(0).clamp(1e-6, 1 - 1e-6)
        total += (part * p.log() + (1 - part) * (1 - p).log()).sum().item()
    return total / len(x)


@pytest.mark.parametrize(
    "kind, estimator", [(k, e) for k, (_, estimators) in sorted(SETTINGS.items()) for e in estimators]
)
def test_every_family_trains_with_its_estimators(kind, estimator):
    """200 steps on one batch of 50 points take the bound 4 nats per point above what a model that ignores z can
    reach on it (for cvae: given the labels): the encoder and decoder both learn. (They reach 6 to 16; with the
    encoder's gradient cut, -4 to 0.1.)"""
    data = load_data("synthetic", binarize="static")
    x, y = data.train[:50], data.train_labels[:50]
    overrides, _ = SETTINGS[kind]
    cfg = small_config(f"model.kind={kind}", *overrides, f"train.elbo.kind={estimator}", "train.optimizer.lr=1e-2")
    pyro.set_rng_seed(0)
    vae = build_vae(cfg, data.data_shape)
    optimizer = build_optimizer(cfg, vae.parameters())
    elbo = build_elbo(cfg)
    batch = {
        "x": x,
        **({"y": y} if kind == "cvae" else {}),
        **({"xs": x[:20], "ys": y[:20], "num_labelled": 20} if kind == "m2" else {}),
    }
    for _ in range(200):
        optimizer.zero_grad()
        elbo.loss_and_grads(vae.model, vae.guide, num_data=50, **batch)
        optimizer.step()
    torch.manual_seed(0)
    bound = evaluate(vae, x, iwae_samples=0, labels=y, progress=False)["elbo"]
    baseline = ignoring_z(x, y if kind == "cvae" else None)
    assert bound > baseline + 4.0, (bound, baseline)


def inputs(kind, data, n=8):
    x, y = data.example_batch(n).double(), data.train_labels[:n]
    return {
        "x": x,
        **({"y": y} if kind == "cvae" else {}),
        **({"xs": x, "ys": y, "num_labelled": n} if kind == "m2" else {}),
    }


def test_every_family_has_settings():
    assert sorted(FAMILIES) == sorted(SETTINGS)


@pytest.mark.parametrize("kind", sorted(SETTINGS))
def test_every_family_computes_in_the_dtype_of_its_weights(kind, synthetic):
    """``vae.double()`` (as exactness checks use it) gives float64 losses, gradients and bounds: no constant
    the family makes (one-hot codes, uniform logits, the identity of components) stays float32."""
    overrides, estimators = SETTINGS[kind]
    vae = build_vae(small_config(f"model.kind={kind}", *overrides), synthetic.data_shape).double()
    assert vae.dtype == torch.float64
    for estimator in estimators[:2]:  # the score-function estimators have no differentiable loss
        pyro.set_rng_seed(0)
        loss = build_elbo(small_config(f"train.elbo.kind={estimator}")).differentiable_loss(
            vae.model, vae.guide, num_data=100, **inputs(kind, synthetic)
        )
        grads = torch.autograd.grad(loss, [p for p in vae.parameters()], allow_unused=True)
        assert loss.dtype == torch.float64 and torch.isfinite(loss), (kind, estimator)
        assert all(g is None or g.dtype == torch.float64 for g in grads)
    r = evaluate(vae, synthetic.test[:20].double(), iwae_samples=5, labels=synthetic.test_labels[:20], progress=False)
    assert r["log_px"] >= r["elbo"] - 1e-6 and all(map(torch.isfinite, map(torch.tensor, (r["log_px"], r["elbo"]))))
