"""Priors p(z): ``prior(n)`` returns a distribution with batch shape (n,) and event shape (latent_dim,).

Every prior offers ``log_prob`` and ``sample``, which is all the ELBO estimators need; the
Gaussian ones also have a closed-form KL against a diagonal-normal posterior (``meanfield``).
"""

import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn
from torch.nn.functional import softplus

from ..checks import positive
from ..registry import Registry
from .distributions import log_softmax, logsumexp
from .networks import AutoregressiveFlow
from .posteriors import DiagonalNormal

#: the priors p(z) by their config name (``model.prior``)
PRIORS = Registry("model.prior", context=("latent_dim",))


class Prior(nn.Module):
    """The base of priors. A subclass provides ``__init__(latent_dim, **params)`` (its keyword
    parameters are the kind's config parameters) and ``forward(n)``: p(z) for n data points, a Pyro
    distribution of batch shape (n,) and event shape (latent_dim,) (``self._iid(base, n)`` builds
    one from a per-dimension ``base``). Optional: ``size_per_point`` (numbers ``log_prob`` holds per
    z, for chunking), ``bind(vae)`` (called once the VAE is built) with ``uses_encoder = True`` for
    priors built from q(z|x) itself."""

    uses_encoder = False  # True for priors built from q(z|x) itself (VampPrior)

    def __init__(self, latent_dim):
        super().__init__()
        self.latent_dim = latent_dim

    @property
    def size_per_point(self):
        """How many numbers log_prob holds per z: evaluation sizes its chunks by it."""
        return self.latent_dim

    def bind(self, vae):
        """Called once the VAE is built; priors that need the encoder (VampPrior) keep it here."""

    def _iid(self, base, n):
        return base.expand((n, self.latent_dim)).to_event(1)


class UnitNormal(dist.Normal):
    """N(0, 1) as a type of its own, so that KL(q || N(0, 1)) dispatches to its short closed form."""


@torch.distributions.kl.register_kl(torch.distributions.Normal, UnitNormal)
def _kl_normal_unit(q, p):
    """KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1) / 2 - log s: seven operations where the general
    Normal-Normal form takes ten, on the default model's every step."""
    return 0.5 * (q.loc.pow(2) + q.scale.pow(2) - 1) - q.scale.log()


@PRIORS.register("standard_normal")
class StandardNormal(Prior):
    """p(z) = N(0, I)."""

    def __init__(self, latent_dim):
        super().__init__(latent_dim)
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self, n):
        return self._iid(UnitNormal(self.loc, self.scale, validate_args=False), n)


@PRIORS.register("learned_normal")
class LearnedNormal(Prior):
    """p(z) = N(m, diag s^2) with learnable m and s = softplus(r) (starting at N(0, I))."""

    def __init__(self, latent_dim):
        super().__init__(latent_dim)
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.raw_scale = nn.Parameter(torch.full((latent_dim,), 0.5413))  # softplus(0.5413) = 1

    def forward(self, n):
        return self._iid(dist.Normal(self.loc, softplus(self.raw_scale), validate_args=False), n)


@PRIORS.register("student_t")
class StudentT(Prior):
    """p(z) = prod_j StudentT(z_j; df, 0, 1): heavy tails for small ``df``."""

    def __init__(self, latent_dim, df=3.0):
        super().__init__(latent_dim)
        self.register_buffer("df", torch.tensor(positive("model.prior.df", df)))

    def forward(self, n):
        zero = torch.zeros((), device=self.df.device)
        return self._iid(dist.StudentT(self.df, zero, zero + 1, validate_args=False), n)


@PRIORS.register("laplace")
class Laplace(Prior):
    """p(z) = prod_j Laplace(z_j; 0, scale)."""

    def __init__(self, latent_dim, scale=1.0):
        super().__init__(latent_dim)
        self.register_buffer("scale", torch.tensor(positive("model.prior.scale", scale)))

    def forward(self, n):
        return self._iid(dist.Laplace(torch.zeros_like(self.scale), self.scale, validate_args=False), n)


class DiagonalNormalMixture(dist.TorchDistribution):
    """sum_k w_k N(z; m_k, diag s_k^2), all K component densities in two matrix products:
    sum_j (z_j - m_kj)^2 / s_kj^2 = (z^2) . (1/s_k^2) - 2 z . (m_k/s_k^2) + sum_j m_kj^2/s_kj^2,
    in float64 (the expansion cancels); ``MixtureSameFamily`` would build (points, K, L) tensors."""

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, logits, locs, scales, batch_shape=torch.Size(), validate_args=False):
        self.logits, self.locs, self.scales = logits, locs, scales
        super().__init__(torch.Size(batch_shape), locs.shape[-1:], validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return DiagonalNormalMixture(self.logits, self.locs, self.scales, batch_shape)

    def log_prob(self, z):
        z = z.expand(torch.broadcast_shapes(z.shape, self.batch_shape + self.event_shape))
        L = z.shape[-1]
        locs, prec = self.locs.double(), self.scales.double().pow(-2)
        flat = z.reshape(-1, L).double()
        quad = flat.pow(2) @ prec.T - 2 * flat @ (locs * prec).T + (locs.pow(2) * prec).sum(-1)
        log_comp = -0.5 * quad - self.scales.double().log().sum(-1) - 0.5 * L * math.log(2 * math.pi)
        log_p = logsumexp(log_comp + log_softmax(self.logits.double(), -1), dim=-1)
        return log_p.to(z.dtype).reshape(z.shape[:-1])

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            k = dist.Categorical(logits=self.logits).sample(shape[:-1])
            return torch.normal(self.locs[k], self.scales[k])


@PRIORS.register("mixture")
class Mixture(Prior):
    """p(z) = sum_k pi_k N(z; m_k, diag s_k^2), ``components`` learnable diagonal Gaussians (MixtureSameFamily)."""

    def __init__(self, latent_dim, components=10):
        super().__init__(latent_dim)
        k = positive("model.prior.components", components, integer=True)
        self.logits = nn.Parameter(torch.zeros(k))
        self.locs = nn.Parameter(torch.randn(k, latent_dim))
        self.raw_scales = nn.Parameter(torch.full((k, latent_dim), 0.5413))

    @property
    def size_per_point(self):
        return self.logits.numel()

    def forward(self, n):
        return DiagonalNormalMixture(self.logits, self.locs, softplus(self.raw_scales), (n,))


@PRIORS.register("vamp")
class VampPrior(Prior):
    """VampPrior (Tomczak & Welling 2018): p(z) = (1/K) sum_k q(z | u_k), with ``pseudo_inputs``
    learnable inputs u_k fed through the VAE's own encoder and posterior head."""

    uses_encoder = True

    def __init__(self, latent_dim, pseudo_inputs=500):
        super().__init__(latent_dim)
        self.num_pseudo = positive("model.prior.pseudo_inputs", pseudo_inputs, integer=True)

    @property
    def size_per_point(self):
        return self.num_pseudo * (1 if isinstance(self._vae.posterior, DiagonalNormal) else self.latent_dim)

    def bind(self, vae):
        object.__setattr__(self, "_vae", vae)  # a reference, not a submodule: no parameter is stored twice
        g = torch.Generator().manual_seed(0)
        self.pseudo = nn.Parameter(torch.rand(self.num_pseudo, *vae.data_shape, generator=g) * 0.2 + 0.4)

    def forward(self, n):
        comp = self._vae.q(self.pseudo)  # batch (K,), event (latent_dim,)
        uniform = torch.zeros(self.num_pseudo, device=self.pseudo.device)
        if isinstance(self._vae.posterior, DiagonalNormal):
            return DiagonalNormalMixture(uniform, comp.base_dist.loc, comp.base_dist.scale, (n,))
        return dist.MixtureSameFamily(dist.Categorical(logits=uniform), comp, validate_args=False).expand((n,))


@PRIORS.register("flow")
class FlowPrior(Prior):
    """p(z) = N(0, I) pushed through ``layers`` affine autoregressive transforms (a MAF):
    log p(z) = log N(f(z); 0, I) + log |det df/dz| costs one network pass per layer."""

    def __init__(self, latent_dim, layers=2, hidden=None):
        super().__init__(latent_dim)
        self.flow = AutoregressiveFlow(latent_dim, layers, hidden)
        self.register_buffer("loc", torch.zeros(latent_dim))

    def forward(self, n):
        base = self._iid(dist.Normal(self.loc, torch.ones_like(self.loc), validate_args=False), n)
        # inverted layers: log p(z) in one pass per layer; sampling (rare) is the sequential direction
        return dist.TransformedDistribution(base, self.flow.transforms(inverse=True), validate_args=False)
