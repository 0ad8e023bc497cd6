"""Likelihoods p(x|z): modules turning decoder outputs into distributions over the data.

Each likelihood says how many decoder outputs it needs per data element
(``params_per_element``), builds a distribution whose event shape is the data shape, and
checks that data lie in its support before training starts (``check_data``).
"""

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits, logsigmoid, softplus

from ..checks import number, positive
from ..errors import ConfigError, DataError
from ..registry import Registry
from .distributions import SameShape

#: the likelihoods p(x|z) by their config name (``model.likelihood``)
LIKELIHOODS = Registry("model.likelihood", context=("data_shape",))


class Likelihood(nn.Module):
    """The base of likelihoods. A subclass provides ``__init__(data_shape, **params)`` and
    ``forward(out)``: from the decoder's raw output (..., params_per_element * prod(data_shape)) to
    p(x|z), a Pyro distribution with event shape ``data_shape`` (``self.split(out)`` cuts ``out``
    into ``params_per_element`` tensors of that shape). Optional: ``params_per_element`` (default 1),
    ``mean(out)`` (E[x|z] for figures; default the distribution's mean), ``check_data(x)``
    (raise ``DataError`` naming the fix for data outside the support; default: finite), and
    ``discrete`` (True if p(x|z) is a probability mass over the data's levels, so -log p(x) in bits
    per dimension is a code length; default False: a density)."""

    params_per_element = 1
    discrete = False

    def __init__(self, data_shape):
        super().__init__()
        self.data_shape = tuple(data_shape)

    def split(self, out):
        """(..., k * D) decoder output -> k tensors of shape (..., *data_shape)."""
        batch = out.shape[:-1]
        if self.params_per_element == 1:  # a reshape alone: unbind's backward would copy the gradient
            return (out.reshape(*batch, *self.data_shape),)
        return out.reshape(*batch, self.params_per_element, *self.data_shape).unbind(len(batch))

    def forward(self, out):
        raise NotImplementedError

    def mean(self, out):
        """E[x|z], used for sample grids and reconstructions."""
        return self(out).mean

    def check_data(self, x):
        """Raise DataError naming the fix if ``x`` lies outside this likelihood's support."""
        if not torch.isfinite(x).all():
            raise DataError("the data contain NaN or Inf values: clean the dataset before training")

    def _check_unit_interval(self, x, name):
        if x.min() < 0 or x.max() > 1:
            raise DataError(
                f"the {name} likelihood needs data in [0, 1], but the data lie in "
                f"[{float(x.min()):.3g}, {float(x.max()):.3g}]: rescale the data or use kind = \"gaussian\""
            )


class Bernoulli(SameShape, dist.Bernoulli):
    """dist.Bernoulli(logits=...) with its logits kept as they are (``SameShape``)."""

    def __init__(self, logits, validate_args=None):
        if self._init_params(validate_args, logits=logits):
            self._param = logits
        else:
            super().__init__(logits=logits, validate_args=validate_args)


class IndependentBernoulli(SameShape, dist.Independent):
    """Bernoulli(logits) over a whole data point: log p(x) = sum_d x_d l_d - sum_d softplus(l_d).

    Two reductions instead of Bernoulli.log_prob's elementwise cross-entropy tensor and its sum:
    about 30 % less time on the likelihood, the largest elementwise cost of a step or of log p(x).
    Where x is broadcast against more logits (K particles, the values of an enumerated latent), torch's
    fused ``binary_cross_entropy_with_logits`` on x expanded is 6 % faster forward and backward than
    the product with x broadcast (measured on 10 x 128 x 784 logits), so that form is taken there.
    """

    def log_prob(self, value):
        if self._validate_args:
            self.base_dist._validate_sample(value)
        logits, n = self.base_dist.logits, self.reinterpreted_batch_ndims
        if value.shape != logits.shape and torch.broadcast_shapes(value.shape, logits.shape) == logits.shape:
            # x broadcast over particles or enumerated values: the fused kernel (x larger than the logits: below)
            ce = binary_cross_entropy_with_logits(logits, value.expand_as(logits), reduction="none")
            return -ce.flatten(-n).sum(-1)
        return (logits * value).flatten(-n).sum(-1) - softplus(logits).flatten(-n).sum(-1)


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(Likelihood):
    """x_i ~ Bernoulli(sigmoid(logit_i)); -log p(x|z) is the binary cross-entropy."""

    def __init__(self, data_shape, allow_grey=False):
        super().__init__(data_shape)
        self.allow_grey = bool(allow_grey)
        self.discrete = not self.allow_grey

    def forward(self, out):
        (logits,) = self.split(out)
        return IndependentBernoulli(Bernoulli(logits, validate_args=False), len(self.data_shape))

    def check_data(self, x):
        super().check_data(x)
        if self.allow_grey:
            return self._check_unit_interval(x, "bernoulli")
        if not ((x == 0) | (x == 1)).all():
            raise DataError(
                "the bernoulli likelihood needs binary data, but this data has grey levels. "
                "Binarise it (--set data.binarize=dynamic or static), or use "
                "--set model.likelihood.kind=continuous_bernoulli for data in [0, 1], "
                "or set model.likelihood.allow_grey = true to use cross-entropy on grey levels "
                "(then log p(x) is not a normalised likelihood)"
            )


@LIKELIHOODS.register("continuous_bernoulli")
class ContinuousBernoulliLikelihood(Likelihood):
    """x_i ~ ContinuousBernoulli(sigmoid(logit_i)) on [0, 1]: the cross-entropy plus its normaliser
    log C(lambda) (Loaiza-Ganem & Cunningham 2019), a proper density for grey levels."""

    def forward(self, out):
        (logits,) = self.split(out)
        return dist.ContinuousBernoulli(logits=logits, validate_args=False).to_event(len(self.data_shape))

    def check_data(self, x):
        super().check_data(x)
        self._check_unit_interval(x, "continuous_bernoulli")


class _ScaledLikelihood(Likelihood):
    """A location family with scale b: a fixed number, ``"learned"`` (one learnable b per data
    element, shared by all data points) or ``"decoder"`` (the decoder outputs b for each point)."""

    family = None

    def __init__(self, data_shape, scale=1.0, min_scale=1e-3):
        super().__init__(data_shape)
        self.min_scale = number("model.likelihood.min_scale", min_scale, low=0)
        self.mode = scale if isinstance(scale, str) else "fixed"
        if self.mode == "fixed":
            scale = positive("model.likelihood.scale", scale, hint=' (or "learned", or "decoder")')
            self.register_buffer("fixed_scale", torch.tensor(scale))
        elif self.mode == "learned":
            self.raw_scale = nn.Parameter(torch.zeros(self.data_shape))
        elif self.mode == "decoder":
            self.params_per_element = 2
        else:
            raise ConfigError(
                f"model.likelihood.scale must be a positive number, \"learned\" or \"decoder\", got {scale!r}"
            )

    def forward(self, out):
        parts = self.split(out)
        loc = parts[0]
        if self.mode == "fixed":
            scale = self.fixed_scale.expand_as(loc)
        elif self.mode == "learned":
            scale = (softplus(self.raw_scale) + self.min_scale).expand_as(loc)
        else:
            scale = softplus(parts[1]) + self.min_scale
        return self.family(loc, scale, validate_args=False).to_event(len(self.data_shape))


@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(_ScaledLikelihood):
    """x_i ~ N(mu_i, b^2): -log p(x|z) = ||x - mu||^2 / (2 b^2) + D log(b sqrt(2 pi)), MSE for fixed b."""

    family = dist.Normal


@LIKELIHOODS.register("laplace")
class LaplaceLikelihood(_ScaledLikelihood):
    """x_i ~ Laplace(mu_i, b): -log p(x|z) = ||x - mu||_1 / b + D log(2 b), the L1 loss for fixed b."""

    family = dist.Laplace


class DiscretizedLogistic(dist.TorchDistribution):
    """Pixels x in {0, 1/255, ..., 1}: P(x) = F((x + h - mu)/s) - F((x - h - mu)/s), F the logistic
    CDF, h = 1/510, with the two edge bins reaching to -inf and +inf (Salimans et al. 2017)."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.unit_interval
    half_bin = 0.5 / 255

    def __init__(self, loc, scale, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return DiscretizedLogistic(self.loc.expand(batch_shape), self.scale.expand(batch_shape))

    @property
    def mean(self):
        return self.loc.clamp(0, 1)

    def log_prob(self, x):
        plus = (x - self.loc + self.half_bin) / self.scale
        minus = (x - self.loc - self.half_bin) / self.scale
        # log(F(plus) - F(minus)) without cancellation: as a difference of CDFs left of the
        # centre, of survival functions (F(-t) = 1 - F(t)) right of it
        left = (plus + minus) < 0
        log_hi = logsigmoid(torch.where(left, plus, -minus))
        log_lo = logsigmoid(torch.where(left, minus, -plus))
        log_mid = log_hi + torch.log(-torch.expm1((log_lo - log_hi).clamp(max=-1e-7)))
        edge_lo, edge_hi = logsigmoid(plus), logsigmoid(-minus)  # the bins reaching to -inf and +inf
        return torch.where(x < self.half_bin, edge_lo, torch.where(x > 1 - self.half_bin, edge_hi, log_mid))

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            x = self.loc.expand(shape) + self.scale.expand(shape) * (torch.log(u) - torch.log1p(-u))
            return (x * 255).round().clamp(0, 255) / 255


@LIKELIHOODS.register("discretized_logistic")
class DiscretizedLogisticLikelihood(Likelihood):
    """8-bit pixels: a discretised logistic per pixel, location and scale from the decoder, so
    log p(x) is a true discrete log-likelihood of grey-level images (binarize = "none")."""

    params_per_element = 2
    discrete = True

    def __init__(self, data_shape, min_scale=1e-3):
        super().__init__(data_shape)
        self.min_scale = number("model.likelihood.min_scale", min_scale, low=0)

    def forward(self, out):
        loc, raw = self.split(out)
        return DiscretizedLogistic(loc, softplus(raw) + self.min_scale).to_event(len(self.data_shape))

    def check_data(self, x):
        super().check_data(x)
        self._check_unit_interval(x, "discretized_logistic")
        if not torch.allclose(x * 255, (x * 255).round(), atol=1e-4):
            raise DataError(
                "the discretized_logistic likelihood needs 8-bit pixels (multiples of 1/255); "
                "use data.binarize = \"none\" with uint8 or MNIST-style data, or kind = \"gaussian\""
            )
