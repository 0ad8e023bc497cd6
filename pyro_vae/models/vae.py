"""The VAE: a Pyro ``model`` (decoder: p(z) p(x|z)) and ``guide`` (encoder: q(z|x)) pair.

ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) = -(distortion + rate) <= log p(x).
``beta`` is an argument of both programs (not state of the VAE): log p(z) and log q(z|x) are
scaled by it (a scale messenger on the ``z`` site in both), so every estimator optimises
-E_q log p(x|z) + beta * KL. A float or a 0-dim tensor, so a compiled loss takes it as an input.
Each program registers its own parts with ``pyro.module``: the model the decoder, likelihood and
prior, the guide the encoder and posterior head; a prior built from the encoder (VampPrior)
registers the encoder in the model too, so the sharing is visible in the traces.
"""

import math

import pyro
import torch
from pyro.params import param_with_module_name
from pyro.poutine.messenger import Messenger
from torch import nn
from torch.distributions import kl_divergence

from ..checks import number, positive
from ..errors import DataError
from ..registry import Registry

#: the model families by their config name (``model.kind``), each one Pyro model and one guide (VAE subclasses)
FAMILIES = Registry("model.kind")


def posterior_mean(q, num_samples=64):
    """E_q[z]: closed form where the family has one (Gaussians), else a Monte Carlo mean (flows)."""
    try:
        return q.mean
    except NotImplementedError:
        return q.sample((num_samples,)).mean(0)


def draw(q, n):
    """n draws from q: reparameterised where q can (gradients flow), plain samples otherwise (mixtures)."""
    return q.rsample((n,)) if q.has_rsample else q.sample((n,))


def rate(vae, x, q=None, num_samples=16):
    """KL(q(z|x) || p(z)) per data point: closed form if torch has it, else a Monte Carlo estimate."""
    q = vae.q(x) if q is None else q
    p = vae.prior(x.shape[0])
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        z = draw(q, num_samples)
        return (q.log_prob(z) - p.log_prob(z)).mean(0)


def kl_per_dim(vae, x, q=None):
    """KL(q(z_j|x) || p(z_j)) for each latent dimension j, shape (n, L), where both factorise into
    Normals (diagonal_normal with a standard or learned normal prior); None otherwise."""
    q = vae.q(x) if q is None else q
    p = vae.prior(x.shape[0])
    qb, pb = getattr(q, "base_dist", None), getattr(p, "base_dist", None)
    if not (isinstance(qb, torch.distributions.Normal) and isinstance(pb, torch.distributions.Normal)):
        return None
    return kl_divergence(qb, pb)


def join(a, b):
    """[a, b] along the last dimension, their leading dimensions broadcast together (features and a
    one-hot label, z and a label; enumerated labels carry extra leading dimensions)."""
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(*shape, a.shape[-1]), b.expand(*shape, b.shape[-1])], -1)


class KLWeight(Messenger):
    """Multiply the log-density of the sample sites inside by ``beta`` >= 0: ``poutine.scale``,
    but allowing 0 (beta = 0, or the first step of a cyclical warm-up, drops the KL term)."""

    def __init__(self, beta):
        super().__init__()
        self.beta = beta

    def _process_message(self, msg):
        msg["scale"] = self.beta * msg["scale"]


def _check_beta(beta):
    if not torch.is_tensor(beta):
        number("beta", beta, low=0, error=DataError)


def _check_count(n, what):
    positive(what, n, integer=True, error=DataError)


@FAMILIES.register("vae")
class VAE(nn.Module):
    """Holds encoder, decoder, prior, likelihood and posterior; ``model``/``guide`` are Pyro programs.

    Args:
        encoder: x (..., *data_shape) -> features (..., encoder.out_features)
        posterior: features -> q(z|x), event shape (latent_dim,)
        decoder: z (..., latent_dim) -> raw outputs (..., params_per_element * prod(data_shape))
        likelihood: raw outputs -> p(x|z), event shape data_shape
        prior: n -> p(z), batch shape (n,), event shape (latent_dim,)
        name: the prefix under which ``pyro.module`` registers the parts ("vae.decoder", ...)
    """

    def __init__(self, encoder, posterior, decoder, likelihood, prior, data_shape, latent_dim, name="vae"):
        super().__init__()
        self.encoder, self.posterior = encoder, posterior
        self.decoder, self.likelihood, self.prior = decoder, likelihood, prior
        self.data_shape = tuple(data_shape)
        self.latent_dim = int(latent_dim)
        self.name = name
        self.precision = None  # or torch.bfloat16: the encoder and decoder bodies run under autocast
        prior.bind(self)

    # -- what the builder and the loop ask of a family ------------------------------------------
    #: training batches carry labels y (``Data.batches(labels=True)``)
    needs_labels = False
    #: evaluation needs the labels: its bound is on log p(x|y) (cvae)
    conditional = False
    #: config values (nested like the config) this family trains with where the user's config sets none
    #: of its own: a layer between the defaults of ``config.DEFAULTS`` and the user's file and ``--set``
    config_defaults = {}
    #: the constructor's keyword arguments beyond the parts, each with the config key it is read from
    #: (``{"classes": "model.components"}``): a family says what it takes and never reads the config itself
    config_options = {}
    #: config keys this family reads beyond ``config_options`` (gmvae: ``model.components``, through its prior)
    config_keys = ()

    @classmethod
    def reads(cls):
        """Every config key this family reads: its ``config_options``' and its ``config_keys``. One of the
        family-specific keys (``config.validate.FAMILY_KEYS``) outside these has no effect, and ``validate`` warns."""
        return {*cls.config_options.values(), *cls.config_keys}

    @classmethod
    def posterior_inputs(cls, model_cfg):
        """Inputs the posterior head takes beyond the encoder's features."""
        return 0

    @classmethod
    def decoder_inputs(cls, model_cfg):
        """Inputs the decoder takes beyond z."""
        return 0

    def adapt_data(self, data):
        """The data as this family trains on them (checked; M2 hides all labels but ``data.labels``)."""
        return data

    def batch_inputs(self, batch):
        """The keyword arguments of ``model``/``guide`` for one training batch from ``Data.batches``."""
        return {"x": batch}

    @classmethod
    def make_prior(cls, model_cfg, priors):
        """The prior module for ``model_cfg`` (the ``model`` config section), from the prior registry."""
        return priors.build(model_cfg["prior"], latent_dim=model_cfg["latent_dim"])

    # -- the two Pyro programs ------------------------------------------------------------
    def _plate(self, n, num_data, device):
        """The data plate: ``num_data`` points, of which this batch holds ``n``, so log-likelihood
        terms are scaled by num_data / n. The batch comes from outside, so the plate is handed it
        as its subsample (``plate(subsample_size=n)`` would draw randperm(num_data) every step, only
        to index data it is not given)."""
        if num_data is not None:
            _check_count(num_data, "num_data")
        if num_data is None or num_data == n:
            return pyro.plate("data", n)
        return pyro.plate("data", size=num_data, subsample=torch.arange(n, device=device))

    def _points_of(self, x, num_samples):
        """(n, device) of the model's data plate: the points of ``x``, or ``num_samples`` to generate; checked."""
        if x is None:
            _check_count(num_samples, "num_samples")
            return num_samples, None
        self.check_shape(x)
        return x.shape[0], x.device

    def _register(self, *parts):
        """``pyro.module`` for each part, after dropping what Pyro's param store holds under the part's names for
        another module (an earlier VAE of the same name, in a notebook): else the trace would name those stale
        tensors, and SVI or an estimator that differentiates by the trace's parameters would train them, not this
        VAE, without a word."""
        store = pyro.get_param_store()
        for part in parts:
            name, module = f"{self.name}.{part}", getattr(self, part)
            for param_name, value in module.named_parameters():
                full = param_with_module_name(name, param_name)
                if full in store._params and store._params[full] is not value:
                    del store[full]
            pyro.module(name, module)

    def model(self, x=None, num_data=None, num_samples=1, beta=1.0):
        """p(z) p(x|z), the prior term weighted by ``beta``. With ``x=None`` it generates ``num_samples`` points."""
        self._register("decoder", "likelihood", "prior", *(("encoder", "posterior") if self.prior.uses_encoder else ()))
        _check_beta(beta)
        n, device = self._points_of(x, num_samples)
        with self._plate(n, num_data, device):
            with KLWeight(beta):
                z = self.prior_latents(n)
            return pyro.sample("x", self.likelihood(self.decode(z)), obs=x)

    def guide(self, x=None, num_data=None, num_samples=1, beta=1.0):
        """q(z|x), amortised by the encoder, weighted by ``beta``. Needs ``x``."""
        if x is None:
            raise DataError("the guide q(z|x) needs data x")
        self.check_shape(x)
        _check_beta(beta)
        self._register("encoder", "posterior")
        with self._plate(x.shape[0], num_data, x.device):
            with KLWeight(beta):
                return self.posterior_latents(x)

    def prior_latents(self, n):
        """The model's latent sites for ``n`` points, inside its data plate: z ~ p(z); returns the decoder's input."""
        return pyro.sample("z", self.prior(n))

    def posterior_latents(self, x):
        """The guide's latent sites for the points ``x``, inside its data plate: z ~ q(z|x)."""
        return pyro.sample("z", self.q(x), infer=dict(getattr(self.posterior, "infer", {})))

    # -- direct access, for evaluation and figures -----------------------------------------
    def check_shape(self, x):
        """Refuse what is not a batch of data points of this model's shape."""
        if not torch.is_tensor(x):
            raise DataError(
                f"x must be a torch.Tensor of shape (batch, {', '.join(map(str, self.data_shape))}), "
                f"got {type(x).__name__}: convert it with torch.as_tensor(x, dtype=torch.float32)"
            )
        if x.dim() == 0 or x.shape[0] == 0:
            raise DataError(f"x holds no data points (shape {tuple(x.shape)}): give a batch of at least one")
        if not x.is_floating_point():
            raise DataError(f"x has dtype {x.dtype}; the model takes floating-point data: use x.float()")
        if x.shape[1:] != self.data_shape:
            raise DataError(
                f"data of shape {tuple(x.shape[1:])} per point do not fit this model, which was "
                f"built for {self.data_shape}: rebuild the model for this data (or reshape the data)"
            )

    def encode(self, x):
        """The encoder's features, in float32 (the body in ``precision`` under autocast, if set)."""
        return self._run(self.encoder, x)

    def decode(self, z, y=None):
        """The decoder's raw outputs, in float32: the likelihood, prior and posterior always see float32.
        (``y``: the label, for the families conditioned on one.)"""
        return self._run(self.decoder, z)

    def _run(self, net, inputs):
        if self.precision is None:
            return net(inputs)
        with torch.autocast(inputs.device.type, dtype=self.precision):
            out = net(inputs)
        return out.float()

    def q(self, x, y=None):
        """q(z|x) (``y``: labels, for the families conditioned on them)."""
        return self.posterior(self.encode(x))

    def elbo_terms(self, x, num_samples=1, y=None):
        """Per data point: distortion -E_q log p(x|z), rate KL(q || p), the posterior mean of z (for
        active units) and the KL per latent dimension (or None); ELBO = -(distortion + rate)."""
        q = self.q(x, y)
        z = draw(q, num_samples)
        distortion = -self.likelihood(self.decode(z, y)).log_prob(x).mean(0)
        return {
            "distortion": distortion,
            "rate": rate(self, x, q),
            "mean": posterior_mean(q),
            "kl_per_dim": kl_per_dim(self, x, q),
        }

    def log_weights(self, x, num_samples, q=None, y=None):
        """log p(x|z), log p(z), log q(z|x) at z ~ q(z|x): three tensors of shape (num_samples, n), beta = 1.
        ``q``: q(z|x) if already computed; ``y``: labels, for the families conditioned on them."""
        q = self.q(x, y) if q is None else q
        z = q.rsample((num_samples,))
        return self.likelihood(self.decode(z, y)).log_prob(x), self.prior(x.shape[0]).log_prob(z), q.log_prob(z)

    #: the decoder runs per importance sample of ``log_importance_weights`` (a family that sums out a discrete
    #: latent: one per value)
    decodes_per_sample = 1

    def log_importance_weights(self, x, num_samples, q=None, y=None):
        """log w = log p(x, z) - log q(z|x) at ``num_samples`` draws z ~ q(z|x): (num_samples, n). The mean of w is
        an unbiased estimate of p(x) (of p(x|y) given labels ``y``), so log mean w is a bound that rises to log p(x)."""
        log_px_z, log_pz, log_qz = self.log_weights(x, num_samples, q, y)
        return log_px_z + log_pz - log_qz

    @torch.no_grad()
    def sample(self, n, mean=True, y=None):
        """n draws z ~ p(z) (``prior_latents``: down a chain of layers), then E[x|z] (``mean=True``) or a draw
        x ~ p(x|z): shape (n, *data_shape)."""
        _check_count(n, "n")
        if y is not None:
            raise DataError("this model has no labels to condition on: --label needs model.kind = \"cvae\" or \"m2\"")
        z = self.prior_latents(n)
        out = self.decode(z)
        return self.likelihood.mean(out) if mean else self.likelihood(out).sample()

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        """E[x|z] at z = E_q[z]."""
        return self.likelihood.mean(self.decode(posterior_mean(self.q(x))))

    def guide_parameters(self):
        """phi: the parameters of q(z|x) (encoder and posterior head)."""
        return [*self.encoder.parameters(), *self.posterior.parameters()]

    def model_parameters(self):
        """theta: the parameters of p(z) p(x|z) (decoder, likelihood, prior) not shared with the guide."""
        phi = {id(p) for p in self.guide_parameters()}
        return [p for p in self.parameters() if id(p) not in phi]

    @property
    def dtype(self):
        """The floating-point type of the weights (float64 after ``.double()``): constants a family makes
        (one-hot codes, uniform logits) take it."""
        return next(self.parameters()).dtype

    @property
    def num_inputs(self):
        return math.prod(self.data_shape)
