"""Posterior families q(z|x): heads from encoder features h to a distribution over z.

``posterior(h)`` has batch shape ``h.shape[:-1]`` and event shape (latent_dim,).
"""

import math

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions.utils import _standard_normal
from torch.nn.functional import softplus

from ..checks import number
from ..errors import ConfigError
from ..registry import Registry
from .distributions import SameShape
from .networks import AutoregressiveFlow, Linear

#: the posteriors q(z|x) by their config name (``model.posterior``)
POSTERIORS = Registry("model.posterior", context=("in_features", "latent_dim"))


class Normal(SameShape, dist.Normal):
    """dist.Normal drawing eps with one ``torch.randn``: torch's Normal, under ``torch.jit.trace``,
    records zeros, ones and normal(zeros, ones) for it (the same numbers, three ops and two buffers
    on every compiled step); loc and scale of one shape are kept as they are (``SameShape``)."""

    def __init__(self, loc, scale, validate_args=None):
        if not self._init_params(validate_args, loc=loc, scale=scale):
            super().__init__(loc, scale, validate_args=validate_args)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        return self.loc + torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device) * self.scale


class ScoreFunctionNormal(dist.Normal):
    """A Normal whose samples are not reparameterised: estimators fall back to the score function."""

    has_rsample = False


class ScoreFunctionMultivariateNormal(dist.MultivariateNormal):
    has_rsample = False


class CholeskyNormal(dist.MultivariateNormal):
    """N(loc, L L^T), sampled as z = loc + L eps, whose log-density at its own latest draw reads eps:
    log q(z) = -|eps|^2 / 2 - sum_i log L_ii - (D/2) log 2 pi, with no triangular solve forward or
    backward (at any other value, or at its draw for a copy with detached parameters, it solves as
    torch does). The draws, values and gradients equal ``MultivariateNormal``'s."""

    _draw_z = _draw_eps = None

    def rsample(self, sample_shape=torch.Size()):
        eps = _standard_normal(self._extended_shape(sample_shape), dtype=self.loc.dtype, device=self.loc.device)
        # L eps as a product and a sum: a traced step's backward then reads only tensors the trace made
        # (matmul reshapes its operands inside itself, and its backward would replay a stale eps)
        z = self.loc + (self._unbroadcasted_scale_tril * eps.unsqueeze(-2)).sum(-1)
        self._draw_z, self._draw_eps = z, eps
        return z

    def log_prob(self, value):
        if value is not self._draw_z:
            return super().log_prob(value)
        half_log_det = self._unbroadcasted_scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return -0.5 * (self._event_shape[0] * math.log(2 * math.pi) + self._draw_eps.pow(2).sum(-1)) - half_log_det


def _infer(reparameterized, baseline):
    """The guide's ``infer`` dict: a decaying-average baseline for score-function gradients (TraceGraph_ELBO)."""
    if baseline not in (None, "", "none", "decaying_avg"):
        raise ConfigError(f"model.posterior.baseline must be \"none\" or \"decaying_avg\", got {baseline!r}")
    if baseline == "decaying_avg":
        if reparameterized:
            raise ConfigError("a baseline only matters for score-function gradients: set reparameterized = false")
        return {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.95}}
    return {}


class Posterior(nn.Module):
    """The base of posterior families. A subclass provides ``__init__(in_features, latent_dim, **params)``
    (its keyword parameters are the kind's config parameters) and ``forward(h)``: from encoder
    features h of shape (..., in_features) to q(z|x), a Pyro distribution of batch shape
    ``h.shape[:-1]`` and event shape (latent_dim,). An optional ``infer`` dict goes to the guide's
    ``z`` site (e.g. a baseline for score-function gradients)."""

    infer = {}

    def forward(self, h):
        raise NotImplementedError


@POSTERIORS.register("diagonal_normal")
class DiagonalNormal(Posterior):
    """q(z|x) = N(mu(h), diag sigma(h)^2), sampled as z = mu + sigma * eps; sigma = softplus(.) + min_scale.
    ``reparameterized = false`` hides the reparameterisation, so estimators use the score function
    E[f(z) grad log q(z)] (with ``baseline = "decaying_avg"`` under tracegraph)."""

    def __init__(self, in_features, latent_dim, min_scale=1e-6, reparameterized=True, baseline="none"):
        super().__init__()
        self.latent_dim = latent_dim
        self.min_scale = number("model.posterior.min_scale", min_scale, low=0)
        self.linear = Linear(in_features, 2 * latent_dim)
        self.family = Normal if reparameterized else ScoreFunctionNormal
        self.infer = _infer(reparameterized, baseline)

    def forward(self, h):
        loc, raw = self.linear(h).chunk(2, dim=-1)
        return self.family(loc, softplus(raw) + self.min_scale, validate_args=False).to_event(1)


@POSTERIORS.register("full_normal")
class FullNormal(Posterior):
    """q(z|x) = N(mu(h), A A^T), sampled as z = mu + A eps, with A lower-triangular from the encoder:
    diagonal softplus(.) + min_scale, the L(L-1)/2 entries below it unconstrained."""

    def __init__(self, in_features, latent_dim, min_scale=1e-6, reparameterized=True, baseline="none"):
        super().__init__()
        self.latent_dim = latent_dim
        self.min_scale = number("model.posterior.min_scale", min_scale, low=0)
        self.family = CholeskyNormal if reparameterized else ScoreFunctionMultivariateNormal
        self.infer = _infer(reparameterized, baseline)
        self.linear = Linear(in_features, 2 * latent_dim + latent_dim * (latent_dim - 1) // 2)
        nn.init.zeros_(self.linear.weight[2 * latent_dim :])  # start near the diagonal case
        nn.init.zeros_(self.linear.bias[2 * latent_dim :])
        self.register_buffer("rows", torch.tril_indices(latent_dim, latent_dim, -1)[0])
        self.register_buffer("cols", torch.tril_indices(latent_dim, latent_dim, -1)[1])

    def forward(self, h):
        L = self.latent_dim
        out = self.linear(h)
        loc, raw_diag, below = out[..., :L], out[..., L : 2 * L], out[..., 2 * L :]
        tril = out.new_zeros(*out.shape[:-1], L, L)
        tril[..., self.rows, self.cols] = below
        tril = tril + torch.diag_embed(softplus(raw_diag) + self.min_scale)
        return self.family(loc, scale_tril=tril, validate_args=False)


class ContextFlow(dist.TransformedDistribution):
    """A flow whose transforms are conditioned on a context of batch shape ``batch_shape``: a value
    that only broadcasts against it (a mixture's (n, 1, L) against K components) is expanded first,
    since the conditioned networks need the value and the context of the same leading shape."""

    def log_prob(self, value):
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        if value.shape[:-1] != shape:  # not the flow's own draw (whose inverse is cached): expand it
            value = value.expand(*shape, value.shape[-1])
        return super().log_prob(value)


@POSTERIORS.register("flow")
class FlowPosterior(Posterior):
    """q(z|x): a diagonal normal N(mu(h), diag sigma(h)^2) refined by ``layers`` inverse autoregressive
    transforms (Kingma et al. 2016), z_t = m_t(z_{t-1}) + s_t(z_{t-1}) * z_{t-1}; sampling and the
    density of its own samples each cost one pass per layer. ``conditional = false``: the IAF weights
    are shared by all x; ``true``: each autoregressive net also sees the encoder's features h,
    m_t(z_{t-1}, h), s_t(z_{t-1}, h), as in the paper."""

    def __init__(self, in_features, latent_dim, layers=2, hidden=None, min_scale=1e-6, conditional=False):
        super().__init__()
        if not isinstance(conditional, bool):
            raise ConfigError(f"model.posterior.conditional must be true or false, got {conditional!r}")
        self.conditional = conditional
        self.flow = AutoregressiveFlow(latent_dim, layers, hidden, context_dim=in_features if conditional else 0)
        self.base = DiagonalNormal(in_features, latent_dim, min_scale)

    def forward(self, h):
        if self.conditional:
            return ContextFlow(self.base(h), self.flow.transforms(context=h), validate_args=False)
        return dist.TransformedDistribution(self.base(h), self.flow.transforms(), validate_args=False)
