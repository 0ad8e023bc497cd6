"""The linear-Gaussian VAE (probabilistic PCA), whose log p(x) and posterior are closed form.

    z ~ N(0, I_L),  x | z ~ N(W z + b, s^2 I_D)  =>  x ~ N(b, W W^T + s^2 I),
    p(z|x) = N(S W^T (x - b) / s^2, S),  S = (I + W^T W / s^2)^-1.

It is an ordinary pyro-vae model (``linear_gaussian_settings`` as a config, ``linear_gaussian_vae`` built
from its parts): no hidden layers, a gaussian likelihood with fixed scale; with a ``full_normal`` guide the
exact posterior is representable.
"""

import torch
from torch.distributions import MultivariateNormal
from torch.nn.functional import softplus

from ..errors import ConfigError
from ..nn.likelihoods import LIKELIHOODS, GaussianLikelihood
from ..nn.networks import DECODERS, ENCODERS
from ..nn.posteriors import POSTERIORS, FullNormal
from ..nn.priors import PRIORS, StandardNormal
from .vae import VAE


def linear_gaussian_settings(latent_dim=2, scale=0.5, posterior="full_normal"):
    """This model as config settings on the synthetic data ({dotted key: value}, for
    ``load_config(overrides=...)``): no hidden layers, a gaussian likelihood of fixed ``scale``."""
    return {
        "data.dataset": "synthetic",
        "data.binarize": "none",
        "model.latent_dim": latent_dim,
        "model.encoder": {"kind": "mlp", "hidden": []},
        "model.decoder": {"kind": "mlp", "hidden": []},
        "model.likelihood": {"kind": "gaussian", "scale": float(scale)},
        "model.posterior": {"kind": posterior},
    }


def linear_gaussian_vae(data_dim, latent_dim=2, scale=0.5, posterior="full_normal", **posterior_params):
    """The VAE of ``linear_gaussian_settings`` for ``data_dim``-dimensional data, built from its parts
    (in the builder's order); ``posterior_params``: the posterior's options (``reparameterized``, ...)."""
    shape = (data_dim,)
    likelihood = LIKELIHOODS.build({"kind": "gaussian", "scale": float(scale)}, data_shape=shape)
    encoder = ENCODERS.build({"kind": "mlp", "hidden": []}, data_shape=shape)
    posterior = POSTERIORS.build(
        {"kind": posterior, **posterior_params}, in_features=encoder.out_features, latent_dim=latent_dim
    )
    decoder = DECODERS.build(
        {"kind": "mlp", "hidden": []},
        latent_dim=latent_dim,
        out_features=likelihood.params_per_element * data_dim,
        data_shape=shape,
    )
    prior = PRIORS.build({"kind": "standard_normal"}, latent_dim=latent_dim)
    return VAE(encoder, posterior, decoder, likelihood, prior, shape, latent_dim)


def _parts(vae):
    layers = list(vae.decoder.net)
    if (
        len(layers) != 1
        or type(vae.likelihood) is not GaussianLikelihood
        or vae.likelihood.mode != "fixed"
        or type(vae.prior) is not StandardNormal
    ):
        raise ConfigError(
            "the closed forms need a linear decoder, a fixed-scale gaussian likelihood and a "
            "standard_normal prior (see linear_gaussian_settings)"
        )
    return layers[0].weight, layers[0].bias, vae.likelihood.fixed_scale


def exact_log_px(vae, x):
    """log N(x; b, W W^T + s^2 I) per data point."""
    W, b, s = _parts(vae)
    cov = W @ W.T + s**2 * torch.eye(W.shape[0], dtype=W.dtype)
    return MultivariateNormal(b, covariance_matrix=cov).log_prob(x.flatten(1))


def exact_posterior(vae, x):
    """p(z|x) = N(S W^T (x - b) / s^2, S)."""
    W, b, s = _parts(vae)
    S = torch.linalg.inv(torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W / s**2)
    return MultivariateNormal((x.flatten(1) - b) @ (S @ W.T / s**2).T, covariance_matrix=S)


def exact_elbo(vae, x, beta=1.0):
    """The ELBO of each point in closed form, for the guide's q = N(m, C), with its KL term weighted by ``beta``:
    E_q log p(x|z) = -D/2 log(2 pi s^2) - (||x - W m - b||^2 + tr(W C W^T)) / (2 s^2),
    KL(q || N(0, I)) = 1/2 (tr C + m^T m - L - log det C). Differentiable in every parameter."""
    W, b, s = _parts(vae)
    m, C = _moments(vae.q(x))
    D, L = W.shape
    resid = x.flatten(1) - m @ W.T - b
    trace_WCW = torch.einsum("ij,njk,ik->n", W, C, W)
    expected_ll = -0.5 * D * torch.log(2 * torch.pi * s**2) - ((resid**2).sum(-1) + trace_WCW) / (2 * s**2)
    kl = 0.5 * (C.diagonal(dim1=-2, dim2=-1).sum(-1) + (m**2).sum(-1) - L - torch.logdet(C))
    return expected_ll - beta * kl


def exact_renyi_bound(vae, x, alpha):
    """The Renyi bound of each point, L_alpha = 1/(1-alpha) log E_q (p(x, z) / q(z|x))^(1-alpha)
    = log p(x) - D_alpha(q || p(z|x)) (Li & Turner 2016), in closed form for Gaussians (Gil et al. 2013):
    D_alpha = alpha/2 d^T S_a^-1 d - 1/(2 (alpha - 1)) log(det S_a / (det C^(1-alpha) det S^alpha)),
    S_a = alpha S + (1 - alpha) C, d = m - mu, for q = N(m, C), p(z|x) = N(mu, S); S_a must be positive
    definite (it is for alpha in [0, 1]). alpha -> 1 gives the ELBO, alpha = 0 log p(x)."""
    if alpha == 1:
        return exact_elbo(vae, x)
    m, C = _moments(vae.q(x))
    p = exact_posterior(vae, x)
    mu, S = p.loc, p.covariance_matrix
    S_a = alpha * S + (1 - alpha) * C
    d = (m - mu).unsqueeze(-1)
    quad = (d.transpose(-1, -2) @ torch.linalg.solve(S_a, d)).squeeze(-1).squeeze(-1)
    divergence = alpha / 2 * quad - (torch.logdet(S_a) - (1 - alpha) * torch.logdet(C) - alpha * torch.logdet(S)) / (
        2 * (alpha - 1)
    )
    return exact_log_px(vae, x) - divergence


def _moments(q):
    """(mean, covariance) of a Gaussian guide's q(z|x): a full_normal, or a diagonal one."""
    if isinstance(q, torch.distributions.Independent):
        return q.base_dist.loc, torch.diag_embed(q.base_dist.scale**2)
    return q.loc, q.covariance_matrix


@torch.no_grad()
def set_exact_posterior(vae):
    """Make a ``full_normal`` guide equal to p(z|x) for every x: loc = A x + c, scale_tril = chol(S)."""
    L = vae.latent_dim
    _set_gaussian_posterior(vae, torch.zeros(L), torch.eye(L), "set_exact_posterior")


def _set_gaussian_posterior(vae, m, C, who):
    """Set a ``full_normal`` q(z|x) on an identity encoder to p(z|x) for the prior p(z) = N(m, C) and the
    linear-Gaussian p(x|z): S = (C^-1 + W^T W / s^2)^-1, loc = S (C^-1 m + W^T (x - b) / s^2) = A x + c."""
    post = vae.posterior
    if type(post) is not FullNormal or list(vae.encoder.net):
        raise ConfigError(f"{who} needs an identity encoder (hidden = []) and a full_normal posterior")
    W, b, s = _parts(vae)
    L = W.shape[1]
    Ci = torch.linalg.inv(C)
    S = torch.linalg.inv(Ci + W.T @ W / s**2)
    A = S @ W.T / s**2
    chol = torch.linalg.cholesky(S)
    post.linear.weight.zero_()
    post.linear.bias.zero_()
    post.linear.weight[:L] = A
    post.linear.bias[:L] = S @ (Ci @ m) - A @ b
    post.linear.bias[L : 2 * L] = _softplus_inverse(chol.diagonal() - post.min_scale)
    post.linear.bias[2 * L :] = chol[post.rows, post.cols]


@torch.no_grad()
def sample_data(vae, n, seed=0):
    """n points from the model itself."""
    torch.manual_seed(seed)
    return vae.model(num_samples=n)


# -- two or more stochastic layers: the linear-Gaussian chain ----------------------------------
def linear_chain_settings(latent_dims=(2, 1), scale=0.5):
    """``hierarchical`` with linear layers, as config settings: z_L ~ N(0, I), z_{l-1} | z_l ~ N(A_l z_l + c_l,
    diag s_l^2), x | z_1 ~ N(W z_1 + b, s^2 I); q(z_1|x) full_normal on x, q(z_l|z_{l-1}) linear."""
    first, *rest = latent_dims
    return {
        **linear_gaussian_settings(first, scale, "full_normal"),
        "model.kind": "hierarchical",
        "model.layers": [{"latent_dim": d, "hidden": []} for d in rest],
    }


def _layer(layer, what):
    """(A, c, s) of a linear GaussianLayer with constant scales: u -> N(A u + c, diag s^2)."""
    head = layer.head
    if not isinstance(layer.net, torch.nn.Identity):
        raise ConfigError(f"the closed forms need linear layers (hidden = []) in {what}")
    d = head.latent_dim
    if head.linear.weight[d:].abs().max() > 0:
        raise ConfigError(
            f"the closed forms need constant scales in {what}: zero the scale rows of its weight (constant_scales)"
        )
    return head.linear.weight[:d], head.linear.bias[:d], softplus(head.linear.bias[d:]) + head.min_scale


@torch.no_grad()
def constant_scales(vae):
    """Zero the weights of every layer's scale output, so each p(z_{l-1}|z_l) and q(z_l|z_{l-1}) has a fixed scale."""
    for layer in [*vae.up, *vae.down]:
        layer.head.linear.weight[layer.head.latent_dim :] = 0


def chain_prior_of_z1(vae):
    """p(z_1) = N(m, C), propagated down the chain from p(z_L) = N(0, I)."""
    if type(vae.prior) is not StandardNormal:
        raise ConfigError("the closed forms need a standard_normal prior on the top layer")
    top = vae.dims[-1]
    m, C = torch.zeros(top), torch.eye(top)
    for i, layer in reversed(list(enumerate(vae.down))):
        A, c, s = _layer(layer, f"down[{i}]")
        m, C = A @ m + c, A @ C @ A.T + torch.diag(s**2)
    return m, C


def exact_chain_log_px(vae, x):
    """log N(x; W m + b, W C W^T + s^2 I) with p(z_1) = N(m, C): the chain's marginal likelihood."""
    W, b, s = _parts(vae)
    m, C = chain_prior_of_z1(vae)
    cov = W @ C @ W.T + s**2 * torch.eye(W.shape[0], dtype=W.dtype)
    return MultivariateNormal(W @ m + b, covariance_matrix=cov).log_prob(x.flatten(1))


@torch.no_grad()
def set_exact_chain_posterior(vae):
    """Make the guide the exact posterior of a two-layer linear chain whose top layer has one dimension:
    q(z_1|x) = p(z_1|x) (full_normal), q(z_2|z_1) = p(z_2|z_1) (x is independent of z_2 given z_1)."""
    if len(vae.up) != 1 or vae.dims[-1] != 1:
        raise ConfigError(
            "set_exact_chain_posterior needs two layers and a one-dimensional top layer "
            "(a diagonal q(z_2|z_1) is then exact)"
        )
    _set_gaussian_posterior(vae, *chain_prior_of_z1(vae), "set_exact_chain_posterior")
    # p(z_2|z_1) with p(z_2) = N(0, 1), z_1 | z_2 ~ N(A z_2 + c, diag s1^2): precision 1 + A^T A / s1^2
    A, c, s1 = _layer(vae.down[0], "down[0]")
    v = 1.0 / (1.0 + (A[:, 0] ** 2 / s1**2).sum())
    gain = v * A[:, 0] / s1**2  # E[z_2|z_1] = gain . (z_1 - c)
    head = vae.up[0].head
    head.linear.weight.zero_()
    head.linear.weight[0] = gain
    head.linear.bias[0] = -gain @ c
    head.linear.bias[1] = _softplus_inverse(v.sqrt() - head.min_scale)


def _softplus_inverse(y):
    return y + torch.log(-torch.expm1(-y))
