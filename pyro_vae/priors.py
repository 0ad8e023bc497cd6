"""Priors p(z): ``prior(n)`` returns a distribution with batch shape (n,) and event shape (latent_dim,)."""

import torch
import pyro.distributions as dist
from torch import nn

from .registry import Registry

PRIORS = Registry("model.prior")


class Prior(nn.Module):
    def __init__(self, latent_dim):
        super().__init__()
        self.latent_dim = latent_dim

    def bind(self, vae):
        """Called once the VAE is built; priors that need the encoder (VampPrior) keep it here."""


@PRIORS.register("standard_normal")
class StandardNormal(Prior):
    """p(z) = N(0, I)."""

    def __init__(self, latent_dim):
        super().__init__(latent_dim)
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self, n):
        return dist.Normal(self.loc, self.scale, validate_args=False).expand((n, self.latent_dim)).to_event(1)
