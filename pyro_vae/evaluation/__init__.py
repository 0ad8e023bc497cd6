"""Measuring a model: test ELBO, log p(x), rate, distortion, active units, accuracy (``metrics``), and the
figures (``plots``)."""

from .metrics import evaluate, iwae_log_px, test_elbo

__all__ = ["evaluate", "iwae_log_px", "test_elbo"]
