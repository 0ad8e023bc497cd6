"""The linear-Gaussian versions of the families with a discrete latent, where log p(x), p(c|x) and p(z|x, c)
are closed form (the ground truth of their checks):

    gmvae:  c ~ uniform(C), z | c ~ N(mu_c, S_c), x | z ~ N(W z + b, s^2 I)
            =>  p(x|c) = N(W mu_c + b, W S_c W^T + s^2 I),  p(x) = mean_c p(x|c);
    cvae, m2:  y ~ uniform(Y), z ~ N(0, I), x | z, y ~ N(W_z z + W_y e_y + b, s^2 I)
            =>  p(x|y) = N(W_y e_y + b, W_z W_z^T + s^2 I),  p(x) = mean_y p(x|y).

Each is an ordinary pyro-vae model with no hidden layers and a gaussian likelihood of fixed scale
(``linear_mixture_settings``). With a ``full_normal`` posterior and components of equal scales, the guide can
equal the exact posterior (``set_exact_posteriors``): q(z|x, c) = p(z|x, c), and q(c|x) = p(c|x), which is then
a softmax of a linear function of x.
"""

import math

import torch
from torch.distributions import MultivariateNormal
from torch.nn.functional import softplus

from ..errors import ConfigError
from ..nn.likelihoods import GaussianLikelihood
from ..nn.posteriors import FullNormal
from .conditional import CVAE
from .gmvae import GMVAE
from .linear_gaussian import _softplus_inverse


def linear_mixture_settings(kind, components=3, latent_dim=2, scale=0.5):
    """``model.kind = kind`` (gmvae, cvae, m2) with linear parts, as config settings ({dotted key: value})."""
    return {
        "model.kind": kind,
        "model.components": components,
        "model.latent_dim": latent_dim,
        "data.binarize": "none",
        "model.encoder": {"kind": "mlp", "hidden": []},
        "model.decoder": {"kind": "mlp", "hidden": []},
        "model.posterior": {"kind": "full_normal"},
        "model.likelihood": {"kind": "gaussian", "scale": float(scale)},
    }


def _decoder(vae):
    layers = list(vae.decoder.net)
    if len(layers) != 1 or type(vae.likelihood) is not GaussianLikelihood or vae.likelihood.mode != "fixed":
        raise ConfigError(
            "the closed forms need a linear decoder and a fixed-scale gaussian likelihood (see linear_mixture_settings)"
        )
    return layers[0].weight, layers[0].bias, vae.likelihood.fixed_scale


def component_marginals(vae):
    """(means (C, D), covariances (C, D, D)) of p(x|c) for each value c of the discrete latent."""
    W, b, s = _decoder(vae)
    D = W.shape[0]
    noise = s**2 * torch.eye(D, dtype=W.dtype)
    if isinstance(vae, GMVAE):
        scales = softplus(vae.prior.raw_scales) + 1e-4  # (C, L)
        means = vae.prior.locs @ W.T + b
        covs = torch.stack([W @ torch.diag(sc**2) @ W.T for sc in scales]) + noise
        return means, covs
    if isinstance(vae, CVAE):
        L = vae.latent_dim
        Wz, Wy = W[:, :L], W[:, L:]
        return Wy.T + b, (Wz @ Wz.T + noise).expand(vae.classes, D, D)
    raise ConfigError(f"closed forms for gmvae, cvae and m2 only, not {type(vae).__name__}")


def exact_log_px(vae, x, y=None):
    """log p(x) = log mean_c p(x|c) per point; log p(x|y) for given labels ``y`` (cvae's bound)."""
    means, covs = component_marginals(vae)
    per_component = MultivariateNormal(means, covariance_matrix=covs).log_prob(x.flatten(1).unsqueeze(-2))  # (n, C)
    if y is not None:
        return per_component.gather(-1, y.long().unsqueeze(-1)).squeeze(-1)
    return torch.logsumexp(per_component, -1) - math.log(means.shape[0])


def exact_component_posterior(vae, x):
    """p(c|x): (n, C) probabilities."""
    means, covs = component_marginals(vae)
    return torch.softmax(MultivariateNormal(means, covariance_matrix=covs).log_prob(x.flatten(1).unsqueeze(-2)), -1)


@torch.no_grad()
def set_exact_posteriors(vae):
    """q(z|x, c) = p(z|x, c) for every c, and (gmvae, m2) q(c|x) = p(c|x): a ``full_normal`` posterior on
    [x, e_c] and a linear classifier can hold them exactly when the components share one scale (gmvae: the
    prior's scales are made equal to the first component's here)."""
    post = vae.posterior
    if type(post) is not FullNormal or list(vae.encoder.net):
        raise ConfigError(
            "set_exact_posteriors needs a full_normal posterior on an encoder with no hidden layers "
            "(see linear_mixture_settings)"
        )
    W, b, s = _decoder(vae)
    L = vae.latent_dim
    D = W.shape[0]
    if isinstance(vae, GMVAE):
        vae.prior.raw_scales.copy_(vae.prior.raw_scales[:1].expand_as(vae.prior.raw_scales))
        C_inv = torch.diag(1 / (softplus(vae.prior.raw_scales[0]) + 1e-4) ** 2)
        S = torch.linalg.inv(C_inv + W.T @ W / s**2)
        A = S @ W.T / s**2
        shift = S @ C_inv @ vae.prior.locs.T  # (L, C): loc = A (x - b) + S C^-1 mu_c
        log_prior = torch.full((vae.components,), -math.log(vae.components), dtype=W.dtype)
    else:
        Wz, Wy = W[:, :L], W[:, L:]
        S = torch.linalg.inv(torch.eye(L, dtype=W.dtype) + Wz.T @ Wz / s**2)
        A = S @ Wz.T / s**2
        shift = -A @ Wy  # (L, Y): loc = A (x - W_y e_y - b)
        log_prior = torch.full((vae.classes,), -math.log(vae.classes), dtype=W.dtype)
    chol = torch.linalg.cholesky(S)
    post.linear.weight.zero_()
    post.linear.bias.zero_()
    post.linear.weight[:L, :D] = A
    post.linear.weight[:L, D:] = shift
    post.linear.bias[:L] = -A @ b
    post.linear.bias[L : 2 * L] = _softplus_inverse(chol.diagonal() - post.min_scale)
    post.linear.bias[2 * L :] = chol[post.rows, post.cols]
    classifier = getattr(vae, "classifier", None)
    if classifier is not None:  # log p(c|x) = m_c^T Sx^-1 x - m_c^T Sx^-1 m_c / 2 + log p(c) + const
        means, covs = component_marginals(vae)
        precision_means = torch.linalg.solve(covs[0], means.T).T  # (C, D)
        classifier.weight.copy_(precision_means)
        classifier.bias.copy_(-0.5 * (precision_means * means).sum(-1) + log_prior)
