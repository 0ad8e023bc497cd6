"""Likelihoods p(x|z): modules turning decoder outputs into distributions over the data.

Each likelihood says how many decoder outputs it needs per data element
(``params_per_element``), builds a distribution whose event shape is the data shape, and
checks that data lie in its support before training starts (``check_data``).
"""

import torch
import pyro.distributions as dist
from torch import nn

from .errors import DataError
from .registry import Registry

LIKELIHOODS = Registry("model.likelihood")


class Likelihood(nn.Module):
    params_per_element = 1

    def __init__(self, data_shape):
        super().__init__()
        self.data_shape = tuple(data_shape)

    def split(self, out):
        """(..., k * D) decoder output -> k tensors of shape (..., *data_shape)."""
        batch = out.shape[:-1]
        parts = out.reshape(*batch, self.params_per_element, *self.data_shape).unbind(len(batch))
        return parts

    def forward(self, out):
        raise NotImplementedError

    def mean(self, out):
        """E[x|z], used for sample grids and reconstructions."""
        return self(out).mean

    def check_data(self, x):
        """Raise DataError naming the fix if ``x`` lies outside this likelihood's support."""
        if not torch.isfinite(x).all():
            raise DataError("the data contain NaN or Inf values: clean the dataset before training")


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(Likelihood):
    """x_i ~ Bernoulli(sigmoid(logit_i)); -log p(x|z) is the binary cross-entropy."""

    def __init__(self, data_shape, allow_grey=False):
        super().__init__(data_shape)
        self.allow_grey = bool(allow_grey)

    def forward(self, out):
        (logits,) = self.split(out)
        return dist.Bernoulli(logits=logits, validate_args=False).to_event(len(self.data_shape))

    def check_data(self, x):
        super().check_data(x)
        if self.allow_grey:
            if x.min() < 0 or x.max() > 1:
                raise DataError("the bernoulli likelihood needs data in [0, 1]; rescale the data")
            return
        if not ((x == 0) | (x == 1)).all():
            raise DataError(
                "the bernoulli likelihood needs binary data, but this data has grey levels. "
                "Binarise it (--set data.binarize=dynamic or static), or use "
                "--set model.likelihood.kind=continuous_bernoulli for data in [0, 1], "
                "or set model.likelihood.allow_grey = true to use cross-entropy on grey levels "
                "(then log p(x) is not a normalised likelihood)"
            )


@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(Likelihood):
    """x_i ~ N(mu_i, scale^2): -log p(x|z) = ||x - mu||^2 / (2 scale^2) + D log(scale sqrt(2 pi))."""

    def __init__(self, data_shape, scale=1.0):
        super().__init__(data_shape)
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, out):
        (loc,) = self.split(out)
        return dist.Normal(loc, self.scale.expand_as(loc), validate_args=False).to_event(len(self.data_shape))
