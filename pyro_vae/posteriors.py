"""Posterior families q(z|x): heads from encoder features h to a distribution over z.

``posterior(h)`` has batch shape ``h.shape[:-1]`` and event shape (latent_dim,).
"""

import torch
import pyro.distributions as dist
from torch import nn
from torch.nn.functional import softplus

from .registry import Registry

POSTERIORS = Registry("model.posterior")


@POSTERIORS.register("diagonal_normal")
class DiagonalNormal(nn.Module):
    """q(z|x) = N(mu(h), diag sigma(h)^2), sampled as z = mu + sigma * eps; sigma = softplus(.) + 1e-6."""

    def __init__(self, in_features, latent_dim, min_scale=1e-6):
        super().__init__()
        self.latent_dim = latent_dim
        self.min_scale = float(min_scale)
        self.linear = nn.Linear(in_features, 2 * latent_dim)

    def forward(self, h):
        loc, raw = self.linear(h).chunk(2, dim=-1)
        return dist.Normal(loc, softplus(raw) + self.min_scale, validate_args=False).to_event(1)
