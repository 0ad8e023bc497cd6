"""Write your own prior and likelihood, register them, and use them like the built-in kinds.

As a plugin of the command line (the run records it, so evaluate/sample/plot/--resume find it):

    pyro-vae --import examples/custom_components.py train --set data.dataset=synthetic \\
        --set model.prior.kind=scaled_normal --set model.likelihood.kind=student_t \\
        --set data.binarize=none --set train.epochs=2 --out runs/custom
    pyro-vae evaluate runs/custom          # no --import needed: the run knows its plugins

Or from Python: ``python examples/custom_components.py``.
"""

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from pyro_vae import LIKELIHOODS, PRIORS, Likelihood, Prior


@PRIORS.register("scaled_normal")
class ScaledNormal(Prior):
    """p(z) = N(0, s^2 I) with one learned scale s (a prior that adapts its width to the data).

    The contract of a prior: ``__init__(latent_dim, **config parameters)``; ``forward(n)`` returns a
    distribution of batch shape (n,) and event shape (latent_dim,)."""

    def __init__(self, latent_dim, init_scale=1.0):
        super().__init__(latent_dim)
        self.raw_scale = nn.Parameter(torch.tensor(float(init_scale)).expm1().log())  # softplus^-1

    def forward(self, n):
        return self._iid(dist.Normal(torch.zeros_like(self.raw_scale), softplus(self.raw_scale)), n)


@LIKELIHOODS.register("student_t")
class StudentTLikelihood(Likelihood):
    """p(x|z) = prod_d StudentT(x_d; df, mu_d(z), b): a Gaussian with heavy tails, robust to outlier pixels.

    The contract of a likelihood: ``__init__(data_shape, **config parameters)``; ``params_per_element``
    decoder outputs per data element; ``forward(out)`` maps the decoder's (..., k * D) output to a
    distribution with event shape ``data_shape``; ``mean(out)`` is E[x|z] for figures; ``check_data(x)``
    raises ``DataError`` for data outside the support."""

    def __init__(self, data_shape, df=4.0, scale=0.1):
        super().__init__(data_shape)
        self.df, self.scale = float(df), float(scale)

    def forward(self, out):
        (loc,) = self.split(out)
        return dist.StudentT(self.df, loc, self.scale).to_event(len(self.data_shape))

    def mean(self, out):
        return self.split(out)[0]


if __name__ == "__main__":
    import tempfile

    import pyro_vae

    cfg = pyro_vae.load_config(
        overrides=[
            "data.dataset=synthetic",
            "data.binarize=none",
            "train.epochs=2",
            "train.elbo.kind=meanfield",
            "model.prior.kind=scaled_normal",
            "model.likelihood.kind=student_t",
        ]
    )
    with tempfile.TemporaryDirectory() as out:
        vae, history = pyro_vae.train(cfg, out)
        print(
            f"learned prior scale: {softplus(vae.prior.raw_scale).item():.3f}; "
            f"test ELBO {history[-1]['test_elbo']:.2f} nats"
        )
