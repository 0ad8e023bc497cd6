"""The components: ``nn.Module``s that return ``pyro.distributions`` (priors p(z), likelihoods p(x|z),
posteriors q(z|x)), the encoder and decoder networks, and the distributions they share."""

from .distributions import SameShape, log_softmax, logsumexp
from .likelihoods import LIKELIHOODS, Likelihood
from .networks import DECODERS, ENCODERS, Decoder, Encoder
from .posteriors import POSTERIORS, Posterior
from .priors import PRIORS, Prior

__all__ = [
    "DECODERS",
    "ENCODERS",
    "LIKELIHOODS",
    "POSTERIORS",
    "PRIORS",
    "Decoder",
    "Encoder",
    "Likelihood",
    "Posterior",
    "Prior",
    "SameShape",
    "log_softmax",
    "logsumexp",
]
