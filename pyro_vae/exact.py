"""The linear-Gaussian VAE (probabilistic PCA), whose log p(x) and posterior are closed form.

    z ~ N(0, I_L),  x | z ~ N(W z + b, s^2 I_D)  =>  x ~ N(b, W W^T + s^2 I),
    p(z|x) = N(S W^T (x - b) / s^2, S),  S = (I + W^T W / s^2)^-1.

It is an ordinary pyro-vae config (``linear_gaussian_config``): no hidden layers, a gaussian
likelihood with fixed scale; with a ``full_normal`` guide the exact posterior is representable.
"""

import torch
from torch.distributions import MultivariateNormal

from .builder import build_vae
from .config import load_config
from .errors import ConfigError


def linear_gaussian_config(latent_dim=2, scale=0.5, posterior="full_normal", overrides=()):
    return load_config(overrides=[
        "data.dataset=synthetic", "data.binarize=none", f"model.latent_dim={latent_dim}",
        "model.encoder={kind='mlp', hidden=[]}", "model.decoder={kind='mlp', hidden=[]}",
        f"model.likelihood={{kind='gaussian', scale={float(scale)}}}", f"model.posterior={{kind='{posterior}'}}",
        *overrides,
    ])


def linear_gaussian_vae(data_dim, latent_dim=2, scale=0.5, posterior="full_normal", overrides=()):
    return build_vae(linear_gaussian_config(latent_dim, scale, posterior, overrides), (data_dim,))


def _parts(vae):
    layers = list(vae.decoder.net)
    if len(layers) != 1 or type(vae.likelihood).__name__ != "GaussianLikelihood" or vae.likelihood.mode != "fixed" \
            or type(vae.prior).__name__ != "StandardNormal":
        raise ConfigError("the closed forms need a linear decoder, a fixed-scale gaussian likelihood and a "
                          "standard_normal prior (see linear_gaussian_config)")
    return layers[0].weight, layers[0].bias, vae.likelihood.fixed_scale


def exact_log_px(vae, x):
    """log N(x; b, W W^T + s^2 I) per data point."""
    W, b, s = _parts(vae)
    cov = W @ W.T + s ** 2 * torch.eye(W.shape[0], dtype=W.dtype)
    return MultivariateNormal(b, covariance_matrix=cov).log_prob(x.flatten(1))


def exact_posterior(vae, x):
    """p(z|x) = N(S W^T (x - b) / s^2, S)."""
    W, b, s = _parts(vae)
    S = torch.linalg.inv(torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W / s ** 2)
    return MultivariateNormal((x.flatten(1) - b) @ (S @ W.T / s ** 2).T, covariance_matrix=S)


def exact_elbo(vae, x):
    """The ELBO of each point in closed form, for the guide's q = N(m, C):
    E_q log p(x|z) = -D/2 log(2 pi s^2) - (||x - W m - b||^2 + tr(W C W^T)) / (2 s^2),
    KL(q || N(0, I)) = 1/2 (tr C + m^T m - L - log det C). Differentiable in every parameter."""
    W, b, s = _parts(vae)
    q = vae.q(x)
    if isinstance(q, torch.distributions.Independent):
        m, C = q.base_dist.loc, torch.diag_embed(q.base_dist.scale ** 2)
    else:
        m, C = q.loc, q.covariance_matrix
    D, L = W.shape
    resid = x.flatten(1) - m @ W.T - b
    trace_WCW = torch.einsum("ij,njk,ik->n", W, C, W)
    expected_ll = -0.5 * D * torch.log(2 * torch.pi * s ** 2) - ((resid ** 2).sum(-1) + trace_WCW) / (2 * s ** 2)
    kl = 0.5 * (C.diagonal(dim1=-2, dim2=-1).sum(-1) + (m ** 2).sum(-1) - L - torch.logdet(C))
    return expected_ll - kl


@torch.no_grad()
def set_exact_posterior(vae):
    """Make a ``full_normal`` guide equal to p(z|x) for every x: loc = A x + c, scale_tril = chol(S)."""
    post = vae.posterior
    if type(post).__name__ != "FullNormal" or list(vae.encoder.net):
        raise ConfigError("set_exact_posterior needs an identity encoder (hidden = []) and a full_normal posterior")
    W, b, s = _parts(vae)
    L = W.shape[1]
    S = torch.linalg.inv(torch.eye(L, dtype=W.dtype) + W.T @ W / s ** 2)
    A = S @ W.T / s ** 2
    chol = torch.linalg.cholesky(S)
    post.linear.weight.zero_()
    post.linear.bias.zero_()
    post.linear.weight[:L] = A
    post.linear.bias[:L] = -A @ b
    diag = chol.diagonal() - post.min_scale
    post.linear.bias[L:2 * L] = diag + torch.log(-torch.expm1(-diag))  # softplus^-1
    post.linear.bias[2 * L:] = chol[post.rows, post.cols]


@torch.no_grad()
def sample_data(vae, n, seed=0):
    """n points from the model itself."""
    torch.manual_seed(seed)
    return vae.model(num_samples=n)
