"""Gradient diagnostics: variance and signal-to-noise ratio of an estimator's gradient.

At fixed parameters, M independent gradient estimates g_1..g_M (each a full minibatch
gradient) give per-coordinate mean and standard deviation; SNR = |mean| / std (Rainforth et
al. 2018), reported separately for the guide's (encoder) and the model's (decoder) parameters.
"""

import pyro
import torch


def gradient_samples(vae, elbo, x, num_data=None, num_samples=100):
    """(M, P_encoder), (M, P_decoder): M gradient estimates at the current parameters, flattened.
    ``x``: a batch, or a dict of the model's keyword arguments (``config.build.StepInputs``)."""
    inputs = x if isinstance(x, dict) else {"x": x}
    phi, theta = vae.guide_parameters(), vae.model_parameters()
    enc, dec = [], []
    with pyro.validation_enabled(False):
        for _ in range(num_samples):
            for p in vae.parameters():
                p.grad = None
            elbo.loss_and_grads(vae.model, vae.guide, num_data=num_data, **inputs)
            flat = lambda ps: torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in ps])  # noqa: E731
            enc.append(flat(phi))
            dec.append(flat(theta))
    for p in vae.parameters():
        p.grad = None
    return torch.stack(enc), torch.stack(dec)


def summarize(g):
    """Mean per-coordinate variance, and the median over coordinates of |mean| / std."""
    mean, std = g.mean(0), g.std(0)
    keep = std > 0
    snr = (mean.abs()[keep] / std[keep]).median().item() if keep.any() else float("inf")
    return {"variance": g.var(0).mean().item(), "snr": snr}


def gradient_snr(vae, elbo, x, num_data=None, num_samples=100):
    """{"encoder": {"variance", "snr"}, "decoder": {...}} at the current parameters."""
    enc, dec = gradient_samples(vae, elbo, x, num_data, num_samples)
    return {"encoder": summarize(enc), "decoder": summarize(dec)}
