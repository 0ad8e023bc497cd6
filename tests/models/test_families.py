"""What every family (``FAMILIES``) must do alike, checked over the whole registry: a family added
without an entry in ``SETTINGS`` fails here until it is given one."""

import pyro
import pytest
import torch

from pyro_vae import FAMILIES, build_elbo, build_vae, evaluate

from ..conftest import small_config

#: the settings each family needs beyond ``small_config``, and the estimators it trains with
SETTINGS = {
    "vae": ((), ("trace", "iwae")),
    "cvae": (("model.components=10",), ("trace", "enumerate")),
    "m2": (("model.components=10", "data.labels=40"), ("trace", "enumerate")),
    "gmvae": (("model.components=3",), ("trace", "enumerate")),
    "hierarchical": (("model.layers=[{latent_dim = 3, hidden = [16]}]",), ("trace", "iwae")),
}


def inputs(kind, data, n=8):
    x, y = data.example_batch(n).double(), data.train_labels[:n]
    return {"x": x, **({"y": y} if kind == "cvae" else {}),
            **({"xs": x, "ys": y, "num_labelled": n} if kind == "m2" else {})}


def test_every_family_has_settings():
    assert sorted(FAMILIES) == sorted(SETTINGS)


@pytest.mark.parametrize("kind", sorted(SETTINGS))
def test_every_family_computes_in_the_dtype_of_its_weights(kind, synthetic):
    """``vae.double()`` (as exactness checks use it) gives float64 losses, gradients and bounds: no constant
    the family makes (one-hot codes, uniform logits, the identity of components) stays float32."""
    overrides, estimators = SETTINGS[kind]
    vae = build_vae(small_config(f"model.kind={kind}", *overrides), synthetic.data_shape).double()
    assert vae.dtype == torch.float64
    for estimator in estimators:
        pyro.set_rng_seed(0)
        loss = build_elbo(small_config(f"train.elbo.kind={estimator}")).differentiable_loss(
            vae.model, vae.guide, num_data=100, **inputs(kind, synthetic))
        grads = torch.autograd.grad(loss, [p for p in vae.parameters()], allow_unused=True)
        assert loss.dtype == torch.float64 and torch.isfinite(loss), (kind, estimator)
        assert all(g is None or g.dtype == torch.float64 for g in grads)
    r = evaluate(vae, synthetic.test[:20].double(), iwae_samples=5, labels=synthetic.test_labels[:20],
                 progress=False)
    assert r["log_px"] >= r["elbo"] - 1e-6 and all(map(torch.isfinite, map(torch.tensor, (r["log_px"], r["elbo"]))))
