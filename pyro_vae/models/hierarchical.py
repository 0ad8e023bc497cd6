"""Several stochastic layers (``model.kind = "hierarchical"``; Burda et al. 2016, sec. 5).

Model  p(z_L) p(z_{L-1}|z_L) ... p(z_1|z_2) p(x|z_1);   guide  q(z_1|x) q(z_2|z_1) ... q(z_L|z_{L-1}).

z_1 is the usual latent (``model.latent_dim``, ``model.posterior`` on the encoder's features,
``model.decoder`` from it to x); each table of ``model.layers`` adds one layer above it,
``{latent_dim, hidden, activation}``: an MLP z_{l-1} -> q(z_l|z_{l-1}) in the guide and an MLP
z_l -> p(z_{l-1}|z_l) in the model, both diagonal normals. ``model.prior`` is p(z_L). Every layer is
a ``pyro.sample`` site ("z1", "z2", ...) in the data plate, so the estimators see an ordinary
model/guide pair: log w = log p(x|z_1) + sum_l log p(z_l|z_{l+1}) - sum_l log q(z_l|z_{l-1}).
Burda's two-layer MNIST network is latent_dim = 100, encoder/decoder hidden = [200, 200], layers =
[{latent_dim = 50, hidden = [100, 100]}], tanh throughout.
"""

import pyro
import torch
from torch import nn

from ..checks import positive
from ..errors import ConfigError
from ..nn.networks import _activation, _check_hidden, mlp
from ..nn.posteriors import DiagonalNormal
from .vae import FAMILIES, VAE, posterior_mean

#: draws of the chain below behind each layer's E_q[z_l] (active units): noise var / 100 against the 0.01 threshold
MEAN_DRAWS = 100

#: the keys of one ``model.layers`` table, with their defaults
LAYER_KEYS = {"latent_dim": None, "hidden": [100, 100], "activation": "tanh"}


def layer_specs(layers):
    """Check the ``model.layers`` list (at least one layer); return full tables."""
    if not isinstance(layers, list):
        raise ConfigError(
            f"model.layers must be a list of tables like {{ latent_dim = 50, hidden = [100, 100] }}, got {layers!r}"
        )
    out = []
    for i, spec in enumerate(layers):
        where = f"model.layers[{i}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a table like {{ latent_dim = 50, hidden = [100, 100] }}, got {spec!r}")
        unknown = sorted(set(spec) - set(LAYER_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(LAYER_KEYS)}")
        if "latent_dim" not in spec:
            raise ConfigError(f"{where} needs a latent_dim (the size of z_{i + 2})")
        full = {**LAYER_KEYS, **spec}
        full["latent_dim"] = positive(f"{where}.latent_dim", full["latent_dim"], integer=True)
        full["hidden"] = _check_hidden(full["hidden"])
        _activation(full["activation"])
        out.append(full)
    if not out:
        raise ConfigError(
            "model.kind = \"hierarchical\" needs at least one layer above z_1: "
            "--set 'model.layers=[{latent_dim = 50, hidden = [100, 100]}]'"
        )
    return out


class GaussianLayer(nn.Module):
    """A conditional diagonal normal: u (..., in_features) -> MLP -> N(mu(u), diag sigma(u)^2) on out_features."""

    def __init__(self, in_features, out_features, hidden, activation):
        super().__init__()
        self.net = mlp([in_features, *hidden], activation, final_activation=True) if hidden else nn.Identity()
        self.head = DiagonalNormal(hidden[-1] if hidden else in_features, out_features)

    def forward(self, u):
        return self.head(self.net(u))


@FAMILIES.register("hierarchical")
class Hierarchical(VAE):
    """A chain of stochastic layers (see the module docstring). ``up[l]``: q(z_{l+2}|z_{l+1});
    ``down[l]``: p(z_{l+1}|z_{l+2}); ``prior``: p(z_L)."""

    #: an estimator with the KL in closed form (meanfield) is wrong for dependent layers: trace it
    config_defaults = {"train": {"elbo": {"kind": "jit_trace", "num_particles": 1}}}

    @staticmethod
    def check_config(model):
        """``validate``'s check of this family's own keys (the ``[model]`` table)."""
        layer_specs(model["layers"])

    def __init__(self, encoder, posterior, decoder, likelihood, prior, data_shape, latent_dim, name="vae", layers=()):
        super().__init__(encoder, posterior, decoder, likelihood, prior, data_shape, latent_dim, name)
        layers = layer_specs(list(layers))
        dims = [self.latent_dim] + [spec["latent_dim"] for spec in layers]
        self.dims = dims
        self.up = nn.ModuleList(
            GaussianLayer(a, b, s["hidden"], s["activation"]) for a, b, s in zip(dims, dims[1:], layers)
        )
        self.down = nn.ModuleList(
            GaussianLayer(b, a, s["hidden"], s["activation"]) for a, b, s in zip(dims, dims[1:], layers)
        )

    config_options = {"layers": "model.layers"}

    @classmethod
    def make_prior(cls, model_cfg, priors):
        layers = layer_specs(model_cfg["layers"])
        prior = priors.build(model_cfg["prior"], latent_dim=layers[-1]["latent_dim"])
        if prior.uses_encoder:
            raise ConfigError(
                f"model.prior = {model_cfg['prior']['kind']!r} is built from q(z|x), which here is "
                "q(z_1|x), not a distribution of the top layer: use another prior"
            )
        return prior

    @property
    def sites(self):
        return [f"z{i + 1}" for i in range(len(self.dims))]

    # -- the latent sites of the two Pyro programs (VAE.model and VAE.guide around them) -------------
    def prior_latents(self, n):
        """z_L ~ p(z_L), then z_{l-1} ~ p(z_{l-1}|z_l) down to z_1, which the decoder takes."""
        self._register("down")
        names = self.sites
        z = pyro.sample(names[-1], self.prior(n))
        for name, layer in zip(reversed(names[:-1]), reversed(self.down)):
            z = pyro.sample(name, layer(z))
        return z

    def posterior_latents(self, x):
        """z_1 ~ q(z_1|x), then z_l ~ q(z_l|z_{l-1}) up to z_L."""
        self._register("up")
        names = self.sites
        z = pyro.sample(names[0], self.q(x), infer=dict(getattr(self.posterior, "infer", {})))
        for name, layer in zip(names[1:], self.up):
            z = pyro.sample(name, layer(z))
        return z

    # -- evaluation and generation -----------------------------------------------------------
    def _chain(self, q1, num_samples):
        """(zs, log q per layer, log p per layer) at z_1 ~ q1, z_l ~ q(z_l|z_{l-1}); each (num_samples, n)."""
        zs = [q1.rsample((num_samples,))]
        log_q = [q1.log_prob(zs[0])]
        for layer in self.up:
            q = layer(zs[-1])
            zs.append(q.rsample())
            log_q.append(q.log_prob(zs[-1]))
        log_p = [down(z_above).log_prob(z) for down, z, z_above in zip(self.down, zs, zs[1:])]
        log_p.append(self.prior(q1.batch_shape[0]).log_prob(zs[-1]))
        return zs, log_q, log_p

    def log_weights(self, x, num_samples, q=None, y=None):
        """log p(x|z_1), log p(z_1..L) = log p(z_L) + sum log p(z_l|z_{l+1}), log q(z_1..L|x): (num_samples, n)."""
        q = self.q(x) if q is None else q
        zs, log_q, log_p = self._chain(q, num_samples)
        return self.likelihood(self.decode(zs[0])).log_prob(x), sum(log_p), sum(log_q)

    def elbo_terms(self, x, num_samples=1, y=None):
        """Distortion -E_q log p(x|z_1); rate E_q[log q(z|x) - log p(z)] (Monte Carlo) and its share per
        layer, E_q[log q(z_l|z_{l-1}) - log p(z_l|z_{l+1})]; per layer E_q[z_l] (active units)."""
        q1 = self.q(x)
        zs, log_q, log_p = self._chain(q1, num_samples)
        layer_rates = [(a - b).mean(0) for a, b in zip(log_q, log_p)]
        means = self.layer_means(q1)
        distortion = -self.likelihood(self.decode(zs[0])).log_prob(x).mean(0)
        return {
            "distortion": distortion,
            "rate": sum(layer_rates),
            "mean": torch.cat(means, -1),
            "kl_per_dim": None,
            "layer_rates": layer_rates,
            "layer_means": means,
        }

    @torch.no_grad()
    def layer_means(self, q1, draws=MEAN_DRAWS):
        """E_q[z_l] per layer, (n, d_l) each: E_q[z_1] from q(z_1|x); above, E_q[z_l] = E_q[mu_l(z_{l-1})]
        over ``draws`` draws of the chain below (its Monte Carlo noise adds var/draws to Cov_x)."""
        means = [posterior_mean(q1)]
        z = q1.sample((draws,))
        for layer in self.up:
            q = layer(z)
            means.append(q.mean.mean(0))
            z = q.sample()
        return means

    def guide_parameters(self):
        return [*super().guide_parameters(), *self.up.parameters()]
