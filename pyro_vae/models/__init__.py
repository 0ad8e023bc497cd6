"""The model families (``model.kind``), each one Pyro model and one guide: the VAE and its subclasses
(cvae and m2, gmvae, hierarchical), and the linear-Gaussian VAE whose numbers are closed form.
Each family registers itself in ``FAMILIES`` in its own module; importing this package imports them all."""

from . import conditional, gmvae, hierarchical, linear_gaussian  # noqa: F401  (register their families)
from .vae import FAMILIES, VAE, posterior_mean

__all__ = ["FAMILIES", "VAE", "posterior_mean"]
