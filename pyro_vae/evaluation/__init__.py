"""Measuring a model: test ELBO, log p(x), rate, distortion, active units, accuracy (``metrics``); what the
rate is made of (``surgery``) and how its codes line up with known factors (``disentanglement``), both as
study columns (``representation``); what it
generates, through post-hoc latent samplers (``samplers``) and sample-quality metrics (``quality``, in the
space of a feature network, ``features``; both together: ``generation``); and the figures (``plots``)."""

from .features import FEATURES
from .generation import sample_quality
from .metrics import evaluate, iwae_log_px, test_elbo
from .samplers import SAMPLERS

__all__ = ["FEATURES", "SAMPLERS", "evaluate", "iwae_log_px", "sample_quality", "test_elbo"]
