"""The Gaussian-mixture VAE (``model.kind = "gmvae"``): a discrete component c beside z.

Model p(c) p(z|c) p(x|z): c ~ Categorical(1/K) (fixed: learned weights collapse onto one
component), z | c ~ N(mu_c, diag sigma_c^2) (mu, sigma learned), x | z ~ the likelihood.
Guide q(c|x) q(z|x, c): a classifier head on the encoder's features, the posterior head on
[features, onehot(c)]. Per data point

    ELBO = E_q(c|x) E_q(z|x,c) [log p(x|z) + log p(z|c) + log p(c) - log q(z|x,c) - log q(c|x)],

with ``train.elbo.kind = "enumerate"`` (TraceEnum_ELBO) the expectation over c is the exact sum
over the K components, computed in one batched pass. Unlike the plain VAE's ``mixture`` prior,
which integrates c inside log p(z) under a c-free guide, this model infers c: q(c|x) clusters
the data, and ``assign`` gives the model's own MAP component by ``pyro.infer.infer_discrete``.

The ELBO trains q(z|x, c) with weight q(c|x): a component the classifier has put aside for a point is not
trained there, its bound L_c(x) = E_q(z|x,c)[log p(x|z) + log p(z|c) - log q(z|x,c)] stays poor, and q(c|x)
stays on a wrong component for many steps. ``component_fit = a`` (``model.component_fit``) adds per point

    a * [sum_c r_c log q(c|x) + mean_c L_c(x)],   r = softmax(log p(c) + L(x)), held fixed,

the cross-entropy of q(c|x) to the posterior the component bounds imply, and every component's bound with
equal weight. Both terms are stationary where the guide is exact (q(c|x) = r = p(c|x), each q(z|x, c) =
p(z|x, c)), so the optimum is the ELBO's; on the exact linear mixture it cuts the points on a wrong component
after 300 steps from a third to a few in a hundred (``tests/models/test_linear_mixtures.py``). It costs one more
pass of the decoder per component. The training loss
then includes the term; evaluation reports the ELBO alone.
"""

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import config_enumerate, infer_discrete
from torch import nn

from ..errors import ConfigError, DataError
from ..nn.networks import Linear
from ..nn.priors import Prior
from .vae import FAMILIES, VAE, KLWeight, _check_beta, join


def onehot(c, k, dtype):
    """Component indices as one-hot vectors (..., k) of ``dtype`` (the model's: float64 under ``.double()``);
    vectors (one-hot, or relaxed by the ``relaxed`` estimator) pass through."""
    return c if c.is_floating_point() else F.one_hot(c, k).to(dtype)


class MixtureOfGaussians(Prior):
    """p(c) = uniform over the K components, p(z|c) = N(loc_c, diag scale_c^2) learned; the
    means start spread (N(0, I) draws) so the components can separate. As a prior module its
    ``forward(n)`` is the marginal p(z), for evaluation."""

    def __init__(self, latent_dim, components=10):
        super().__init__(latent_dim)
        # p(c) uniform, fixed: learned weights let one component take every point (the rich get richer)
        self.register_buffer("logits", torch.zeros(components))
        self.locs = nn.Parameter(torch.randn(components, latent_dim))
        self.raw_scales = nn.Parameter(torch.zeros(components, latent_dim))

    def p_c(self, n):
        """p(c): batch (n,)."""
        return dist.Categorical(logits=self.logits.expand(n, -1))

    def p_z(self, c):
        """p(z|c) for component indices c of any shape, or one-hot (relaxed) vectors (..., K):
        batch the indices' shape, event (latent_dim,)."""
        c = onehot(c, len(self.logits), self.locs.dtype)
        return dist.Normal(c @ self.locs, F.softplus(c @ self.raw_scales) + 1e-4).to_event(1)

    @property
    def size_per_point(self):
        return self.latent_dim * len(self.logits)

    def forward(self, n):
        """p(z) = sum_c p(c) p(z|c): batch (n,), event (latent_dim,)."""
        comp = dist.Normal(self.locs, F.softplus(self.raw_scales) + 1e-4).to_event(1).expand([n, len(self.logits)])
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits.expand(n, -1)), comp)


@FAMILIES.register("gmvae")
class GMVAE(VAE):
    """A VAE with a discrete component c (see the module docstring): ``prior`` is a
    ``MixtureOfGaussians``, the posterior head takes ``encoder.out_features + components`` inputs."""

    #: the estimator when the config names none: the discrete latent summed out exactly
    config_defaults = {"train": {"elbo": {"kind": "jit_enumerate", "num_particles": 1}}}

    def __init__(
        self, encoder, posterior, decoder, likelihood, prior, data_shape, latent_dim, name="vae", component_fit=0.0
    ):
        if not isinstance(prior, MixtureOfGaussians):
            raise TypeError("a GMVAE's prior is a MixtureOfGaussians")
        super().__init__(encoder, posterior, decoder, likelihood, prior, data_shape, latent_dim, name)
        self.components = len(prior.logits)
        self.classifier = Linear(encoder.out_features, self.components)
        self.component_fit = float(component_fit)

    config_options = {"component_fit": "model.component_fit"}
    config_keys = ("model.components",)  # read by make_prior

    @classmethod
    def posterior_inputs(cls, model_cfg):
        return model_cfg["components"]

    @classmethod
    def make_prior(cls, model_cfg, priors):
        if model_cfg["prior"]["kind"] != "standard_normal":
            raise ConfigError(
                f"model.kind = \"gmvae\" has its own prior, a learned mixture of model.components "
                f"Gaussians; leave model.prior at its default (got {model_cfg['prior']['kind']!r})"
            )
        return MixtureOfGaussians(model_cfg["latent_dim"], components=model_cfg["components"])

    def model(self, x=None, num_data=None, num_samples=1, beta=1.0):
        """p(c) p(z|c) p(x|z), the c and z terms weighted by ``beta``."""
        self._register("decoder", "likelihood", "prior")
        _check_beta(beta)
        n, device = self._points_of(x, num_samples)
        with self._plate(n, num_data, device):
            with KLWeight(beta):
                c = pyro.sample("c", self.prior.p_c(n))
                z = pyro.sample("z", self.prior.p_z(c))
            if self.component_fit and x is not None:
                self._register("encoder", "classifier", "posterior")
                pyro.factor("component_fit", self.component_fit * self.component_fit_term(x))
            return pyro.sample("x", self.likelihood(self.decode(z)), obs=x)

    def component_bounds(self, x):
        """L_c(x) = log p(x|z_c) + log p(z_c|c) - log q(z_c|x, c) at one draw z_c ~ q(z|x, c) (reparameterised)
        for every component c: (n, C)."""
        return self._component_log_weights(x, ()).T

    def _component_log_weights(self, x, sample_shape):
        """log p(x|z_c) + log p(z_c|c) - log q(z_c|x, c) at draws z_c ~ q(z|x, c) of ``sample_shape`` for every
        component c: (*sample_shape, C, n)."""
        h = self.encode(x)
        every = torch.eye(self.components, device=h.device, dtype=h.dtype).unsqueeze(1)  # (C, 1, C)
        qz = self.posterior(join(h, every))  # batch (C, n)
        z = qz.rsample(sample_shape)
        c = torch.arange(self.components, device=h.device).unsqueeze(-1).expand(-1, x.shape[0])  # (C, n)
        return self.likelihood(self.decode(z)).log_prob(x) + self.prior.p_z(c).log_prob(z) - qz.log_prob(z)

    def component_fit_term(self, x):
        """sum_c r_c log q(c|x) + mean_c L_c(x) per point, r = softmax(log p(c) + L(x)) held fixed (see the
        module docstring): (n,)."""
        bounds = self.component_bounds(x)
        target = torch.softmax(bounds.detach() + self.prior.p_c(1).logits, -1)
        log_q = torch.log_softmax(self.classifier(self.encode(x)), -1)
        return (target * log_q).sum(-1) + bounds.mean(-1)

    def guide(self, x=None, num_data=None, num_samples=1, beta=1.0):
        """q(c|x) q(z|x, c), weighted by ``beta``. Needs ``x``."""
        if x is None:
            raise DataError("the guide q(c, z|x) needs data x")
        self.check_shape(x)
        _check_beta(beta)
        self._register("encoder", "classifier", "posterior")
        with self._plate(x.shape[0], num_data, x.device):
            h = self.encode(x)
            with KLWeight(beta):
                c = pyro.sample("c", dist.Categorical(logits=self.classifier(h)))
                return pyro.sample("z", self.posterior(join(h, onehot(c, self.components, h.dtype))))

    # -- evaluation: c summed out --------------------------------------------------------------
    def q_c(self, x):
        """q(c|x): batch (n,)."""
        return dist.Categorical(logits=self.classifier(self.encode(x)))

    def q(self, x, y=None):
        """q(z|x) = sum_c q(c|x) q(z|x, c), a mixture: batch (n,), event (latent_dim,)."""
        h = self.encode(x)
        every = torch.eye(self.components, device=h.device, dtype=h.dtype)  # (K, K): one row per component
        comp = self.posterior(join(h.unsqueeze(-2), every))  # batch (n, K)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.classifier(h)), comp)

    def log_weights(self, x, num_samples, q=None, y=None):
        q = self.q(x) if q is None else q
        z = q.sample((num_samples,))  # a mixture has no rsample; evaluation needs none
        return self.likelihood(self.decode(z)).log_prob(x), self.prior(x.shape[0]).log_prob(z), q.log_prob(z)

    @property
    def decodes_per_sample(self):
        return self.components

    def log_importance_weights(self, x, num_samples, q=None, y=None):
        """c summed out exactly: each draw takes one z_c ~ q(z|x, c) for every component c and weighs them
        together, w = sum_c p(c) p(x|z_c) p(z_c|c) / q(z_c|x, c), an unbiased estimate of p(x) that visits every
        component whatever q(c|x) says (a draw of the mixture q(z|x) misses a component q(c|x) gives no mass).
        ``q`` is unused: the components' posteriors are computed here."""
        log_pc = self.prior.p_c(1).logits.reshape(-1, 1)  # (C, 1): log p(c), normalised
        return torch.logsumexp(log_pc + self._component_log_weights(x, (num_samples,)), dim=1)  # (K, n)

    @torch.no_grad()
    def assign(self, x):
        """The model's MAP component of each point given its posterior mean z: argmax_c p(c) p(z|c),
        by ``infer_discrete`` (temperature 0) on the model with z fixed."""
        z = self.q(x).mean
        conditioned = poutine.condition(self.model, data={"z": z})
        map_model = infer_discrete(config_enumerate(conditioned, "parallel"), first_available_dim=-2, temperature=0)
        trace = poutine.trace(map_model).get_trace(x)
        return trace.nodes["c"]["value"]

    def guide_parameters(self):
        return [*self.encoder.parameters(), *self.classifier.parameters(), *self.posterior.parameters()]
