"""Random arrays and configs: every outcome is a working step or one of our own errors."""

import math

import numpy as np
import pyro
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pyro_vae import PyroVAEError, load_config
from pyro_vae.config.build import prepare

DTYPES = st.sampled_from([np.uint8, np.float32, np.float64, np.int64, np.int8, np.bool_, np.complex64, np.dtype("U3")])
SHAPES = hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6)


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(DTYPES))
    shape = draw(SHAPES)
    if dtype.kind == "f":
        elements = st.floats(-2, 2, width=dtype.itemsize * 8) | st.sampled_from([0.0, 1.0, np.nan, np.inf])
        return draw(hnp.arrays(dtype, shape, elements=elements))
    return draw(hnp.arrays(dtype, shape))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=arrays(), with_test=st.booleans(), binarize=st.sampled_from(["none", "dynamic", "static"]),
       likelihood=st.sampled_from(["bernoulli", "continuous_bernoulli", "gaussian", "discretized_logistic"]),
       batch_size=st.integers(1, 40), latent_dim=st.integers(-1, 3), elbo=st.sampled_from(["trace", "iwae", "meanfield"]),
       particles=st.integers(0, 3), encoder=st.sampled_from(["mlp", "conv"]))
def test_random_npz_and_config(tmp_path_factory, x, with_test, binarize, likelihood, batch_size, latent_dim,
                               elbo, particles, encoder):
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    np.savez(path, x=x, **({"x_test": x[:2]} if with_test else {}))
    pyro.clear_param_store()
    try:
        cfg = load_config(overrides=[
            "data.dataset=npz", f"data.path='{path}'", f"data.binarize={binarize}", f"data.batch_size={batch_size}",
            f"model.latent_dim={latent_dim}", f"model.likelihood.kind={likelihood}", f"model.encoder.kind={encoder}",
            f"model.decoder.kind={encoder}", f"train.elbo={{kind='{elbo}', num_particles={particles}}}",
        ])
        data, vae, estimator, opt = prepare(cfg)
        xb = next(data.batches(batch_size, __import__("torch").Generator().manual_seed(0)))
        with pyro.validation_enabled(True):
            loss = estimator.loss_and_grads(vae.model, vae.guide, xb, num_data=data.num_train)
    except PyroVAEError:
        return
    assert math.isfinite(loss)
