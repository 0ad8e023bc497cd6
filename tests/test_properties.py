"""Random data and configs, in two strategies. Valid by construction (any prior, posterior, likelihood, network
and estimator of a plain VAE, on data that suits the likelihood): every example builds and takes a training step
with a finite loss and finite gradients. Broken on purpose (a valid example with one thing wrong): every example
is refused with our own error, whose message names what is wrong."""

import math
import re

import numpy as np
import pyro
import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from pyro_vae import ESTIMATORS, LIKELIHOODS, POSTERIORS, PRIORS, PyroVAEError, load_config
from pyro_vae.config.build import prepare

#: the estimators of a continuous z (the others sum or relax a discrete latent, which a plain VAE has none of)
CONTINUOUS = [
    "trace",
    "jit_trace",
    "meanfield",
    "jit_meanfield",
    "tracegraph",
    "score_function",
    "renyi",
    "iwae",
    "pyro_renyi",
    "stl",
    "dreg",
    "tail_adaptive",
    "beta_tc",
]
#: a likelihood's data: 8-bit grey levels in [0, 1] suit them all but bernoulli, which needs 0/1 (or binarising)
GREY_OK = {"continuous_bernoulli", "gaussian", "laplace", "discretized_logistic"}
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def test_the_strategies_cover_every_registered_kind():
    assert set(CONTINUOUS) <= set(ESTIMATORS) and set(ESTIMATORS) - set(CONTINUOUS) == {
        "relaxed",
        "enumerate",
        "jit_enumerate",
    }
    assert GREY_OK | {"bernoulli"} == set(LIKELIHOODS)


def min_particles(kind):
    """The fewest particles the estimator ``kind`` takes (IWAE, Renyi, DReG: 2; with 1 they are the ELBO)."""
    try:
        ESTIMATORS.build({"kind": kind, "num_particles": 1})
        return 1
    except PyroVAEError:
        return 2


@st.composite
def valid_examples(draw):
    """(config overrides, arrays for the npz file): a plain VAE any way it may be built, data that suits it."""
    network = draw(st.sampled_from(["mlp", "conv", "resnet"]))
    if network == "mlp":
        shape = draw(
            st.sampled_from([(draw(st.integers(1, 12)),), (1, draw(st.integers(1, 5)), draw(st.integers(1, 5)))])
        )
    else:
        shape = (draw(st.sampled_from([1, 3])), 4 * draw(st.integers(1, 2)), 4 * draw(st.integers(1, 2)))
    n = draw(st.integers(2, 24))
    likelihood = draw(st.sampled_from(sorted(LIKELIHOODS)))
    binarize = draw(st.sampled_from(["none", "dynamic", "static"]))
    binary = likelihood == "bernoulli" and binarize == "none"
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.integers(0, 2, (n, *shape)) * 255 if binary else rng.integers(0, 256, (n, *shape))).astype(np.uint8)
    prior, posterior = draw(st.sampled_from(sorted(PRIORS))), draw(st.sampled_from(sorted(POSTERIORS)))
    with_test = draw(st.booleans())
    n_train = n if with_test else n - max(1, n // 10)  # without test points, a tenth is held out
    # DReG's doubly reparameterised guide gradient needs a prior that does not share the encoder (VampPrior does);
    # beta_tc, a posterior that factorises and batches of 2 points or more
    refused = {"dreg"} if prior == "vamp" else set()
    refused |= {"beta_tc"} if posterior != "diagonal_normal" or n_train < 2 else set()
    estimator = draw(st.sampled_from([e for e in CONTINUOUS if e not in refused]))
    particles = draw(st.integers(min_particles(estimator), 3))
    nets = {"mlp": {"hidden": [8]}, "conv": {"channels": 4, "hidden": 8}, "resnet": {"widths": [4, 8], "hidden": 8}}
    overrides = {
        "data.dataset": "npz",
        "data.binarize": binarize,
        "data.batch_size": draw(st.integers(2 if estimator == "beta_tc" else 1, n_train)),
        # an autoregressive flow needs two dimensions
        "model.latent_dim": draw(st.integers(2 if "flow" in (prior, posterior) else 1, 4)),
        "model.likelihood.kind": likelihood,
        "model.prior.kind": prior,
        "model.posterior.kind": posterior,
        "model.encoder": {"kind": network, **nets[network]},
        "model.decoder": {"kind": network, **nets[network]},
        "train.elbo": {"kind": estimator, "num_particles": particles},
    }
    arrays = {"x": x}
    if with_test:
        arrays["x_test"] = x[: draw(st.integers(1, n))]
    return overrides, arrays


def step(tmp_path_factory, overrides, arrays):
    """One training step of the example: (loss, [gradients])."""
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    np.savez(path, **arrays)
    note(f"overrides: {overrides}; arrays: { ({k: (a.dtype, a.shape) for k, a in arrays.items()}) }")
    pyro.clear_param_store()
    torch.manual_seed(0)
    data, vae, estimator, _ = prepare(load_config(overrides={**overrides, "data.path": str(path)}))
    xb = next(data.batches(overrides["data.batch_size"], torch.Generator().manual_seed(0)))
    with pyro.validation_enabled(True):
        loss = estimator.loss_and_grads(vae.model, vae.guide, xb, num_data=data.num_train)
    return loss, [p.grad for p in vae.parameters() if p.grad is not None]


@SETTINGS
@given(example=valid_examples())
def test_every_valid_example_takes_a_finite_training_step(tmp_path_factory, example):
    loss, grads = step(tmp_path_factory, *example)
    assert math.isfinite(loss)
    assert grads and all(torch.isfinite(g).all() for g in grads)


#: one thing wrong with a valid example: (what, how to break (overrides, arrays) in place, what the message names)
def _set(key, value):
    return lambda o, a: o.__setitem__(key, value)


def _particles(n):
    return lambda o, a: o.__setitem__("train.elbo", {**o["train.elbo"], "num_particles": n})


def _array(change):
    return lambda o, a: a.__setitem__("x", change(a["x"]))


def _grey_for(kind):
    def breaks(o, a):
        o.update({"model.likelihood.kind": kind, "data.binarize": "none", "data.batch_size": 1})
        a["x"] = np.full_like(a["x"], 100)  # grey everywhere
        if kind != "bernoulli":
            a["x"] = a["x"].astype(np.float32) * 1.5 / 100  # and above 1
        a.pop("x_test", None)

    return breaks


BREAKS = {
    "no latent": (_set("model.latent_dim", 0), r"model\.latent_dim"),
    "negative latent": (_set("model.latent_dim", -2), r"model\.latent_dim"),
    "no particles": (_particles(0), r"num_particles"),
    "a zero batch": (_set("data.batch_size", 0), r"data\.batch_size"),
    "an unknown estimator": (_set("train.elbo", {"kind": "tracee"}), r"unknown kind 'tracee'.*did you mean 'trace'"),
    "an unknown prior": (_set("model.prior.kind", "gauss"), r"model\.prior.*unknown kind 'gauss'"),
    "a likelihood option it has not": (_set("model.likelihood", {"kind": "bernoulli", "scale": 2.0}), r"scale"),
    "NaN in the data": (
        _array(lambda x: np.where(np.arange(x.size).reshape(x.shape) == 0, np.nan, x / 255.0)),
        r"NaN or Inf",
    ),
    "complex data": (_array(lambda x: x.astype(np.complex64)), r"dtype complex64"),
    "text data": (_array(lambda x: x.astype("U3")), r"dtype <U3"),
    "one data point": (
        lambda o, a: (a.__setitem__("x", a["x"][:1]), a.pop("x_test", None)),
        r"1 data point.*need at least 2",
    ),
    "empty data points": (_array(lambda x: x.reshape(len(x), -1)[:, :0]), r"each data point is empty"),
    "grey data for bernoulli": (_grey_for("bernoulli"), r"binary data.*data\.binarize"),
    "data above 1 for continuous_bernoulli": (_grey_for("continuous_bernoulli"), r"needs data in \[0, 1\]"),
    "data above 1 for discretized_logistic": (_grey_for("discretized_logistic"), r"needs data in \[0, 1\]"),
    "a conv network on flat data": (
        lambda o, a: (
            o.update({"model.encoder": {"kind": "conv"}, "data.batch_size": 1}),
            a.__setitem__("x", a["x"].reshape(len(a["x"]), -1)),
            a.pop("x_test", None),
        ),
        r"divisible by 4.*mlp",
    ),
    "test points of another shape": (
        lambda o, a: a.__setitem__("x_test", a["x"].reshape(len(a["x"]), -1)[:, :1]),
        r"test'? points have shape \(\d+,\) but",
    ),
}


@settings(SETTINGS, max_examples=150)
@given(example=valid_examples(), broken=st.sampled_from(sorted(BREAKS)))
def test_every_broken_example_is_refused_naming_what_is_wrong(tmp_path_factory, example, broken):
    overrides, arrays = example
    breaks, message = BREAKS[broken]
    breaks(overrides, arrays)
    if broken == "test points of another shape" and arrays["x"].reshape(len(arrays["x"]), -1).shape[1] == 1:
        arrays["x_test"] = np.zeros((1, 2), np.uint8)  # another shape than one number per point
    note(f"broken: {broken}")
    with pytest.raises(PyroVAEError) as caught:
        step(tmp_path_factory, overrides, arrays)
    assert re.search(message, str(caught.value), re.S), (broken, str(caught.value))
