"""ELBO estimators by name: one registry, Pyro's own ``pyro.infer`` estimators behind it.

Every entry takes ``num_particles`` (K) and ``vectorize_particles`` (default: on when K > 1,
so the K particles run as one batched pass) and returns a ``pyro.infer.ELBO``. Combinations
Pyro would refuse, or silently degrade, are refused here with a message before training.
"""

import torch
from pyro import infer

from .compiled import JitTraceELBO, JitTraceMeanFieldELBO
from .checks import positive
from .errors import ConfigError
from .objectives import DReG, RenyiBound, STL, detach_params
from .registry import Registry

ESTIMATORS = Registry("train.elbo")

#: estimators whose objective differs from the ELBO only with several particles
NEEDS_PARTICLES = {"renyi", "iwae", "tail_adaptive", "pyro_renyi", "dreg"}
#: the project's own objectives (``objectives.py``): always vectorised, reparameterised guides only
OURS = {"renyi", "iwae", "stl", "dreg"}


def _check_particles(name, num_particles):
    positive("train.elbo.num_particles", num_particles, integer=True)
    if name in NEEDS_PARTICLES and num_particles < 2:
        raise ConfigError(
            f"the {name!r} estimator needs num_particles >= 2 (with K = 1 it is the plain ELBO): "
            f"set train.elbo.num_particles, e.g. --set train.elbo.num_particles=5, or use kind = \"trace\""
        )


def _check_alpha(alpha):
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha == 1:
        raise ConfigError(
            f"train.elbo.alpha must be a number other than 1, got {alpha!r} "
            "(alpha = 1 is the ELBO itself: use kind = \"trace\")"
        )
    return float(alpha)


def _ours(cls, name, num_particles, **kwargs):
    _check_particles(name, num_particles)
    elbo = cls(num_particles=num_particles, **kwargs)
    elbo.name = name
    return elbo


def _make(cls, name, num_particles, vectorize_particles, **kwargs):
    _check_particles(name, num_particles)
    if vectorize_particles is None:
        vectorize_particles = num_particles > 1
    elbo = cls(num_particles=num_particles, vectorize_particles=bool(vectorize_particles),
               max_plate_nesting=1, **kwargs)
    elbo.name = name
    return elbo


def _pyro(cls, name, doc):
    def factory(num_particles=1, vectorize_particles=None):
        return _make(cls, name, num_particles, vectorize_particles)

    factory.__name__, factory.__doc__ = name, doc
    return ESTIMATORS.register(name)(factory)


for _name, _cls, _doc in (
    ("trace", infer.Trace_ELBO, "Trace_ELBO: reparameterised (pathwise) Monte Carlo ELBO, score function where needed."),
    ("jit_trace", JitTraceELBO, "Trace_ELBO compiled once with Pyro's JIT (compiled.py: Pyro's JitTrace_ELBO, fixed)."),
    ("meanfield", infer.TraceMeanField_ELBO,
     "TraceMeanField_ELBO: E_q log p(x|z) by Monte Carlo, KL(q || p) in closed form where known."),
    ("jit_meanfield", JitTraceMeanFieldELBO,
     "TraceMeanField_ELBO compiled once with Pyro's JIT (compiled.py: Pyro's JitTraceMeanField_ELBO, fixed)."),
    ("tracegraph", infer.TraceGraph_ELBO, "TraceGraph_ELBO: score-function terms Rao-Blackwellised by the dependency graph."),
):
    _pyro(_cls, _name, _doc)


@ESTIMATORS.register("renyi")
def renyi(alpha=0.5, num_particles=5):
    """The Renyi alpha bound per data point, (1/(1-alpha)) log mean_k w_k^(1-alpha) (ours: exact with minibatches)."""
    return _ours(RenyiBound, "renyi", num_particles, alpha=_check_alpha(alpha))


@ESTIMATORS.register("iwae")
def iwae(num_particles=5):
    """The importance-weighted bound log mean_k p(x, z_k) / q(z_k|x) per data point (Renyi, alpha = 0)."""
    return _ours(RenyiBound, "iwae", num_particles, alpha=0.0)


@ESTIMATORS.register("pyro_renyi")
def pyro_renyi(alpha=0.0, num_particles=5, vectorize_particles=None):
    """Pyro's RenyiELBO as it is: exact on full batches; with minibatches it scales log w by N/n
    inside the log-mean-exp (see objectives.py), so it is here for comparison only."""
    return _make(infer.RenyiELBO, "pyro_renyi", num_particles, vectorize_particles, alpha=_check_alpha(alpha))


@ESTIMATORS.register("stl")
def stl(num_particles=1):
    """Sticking the landing (Roeder et al. 2017): the ELBO without the score term of log q."""
    return _ours(STL, "stl", num_particles)


@ESTIMATORS.register("dreg")
def dreg(num_particles=5):
    """Doubly reparameterised IWAE gradients (Tucker et al. 2018); the loss is the IWAE bound."""
    return _ours(DReG, "dreg", num_particles)


class TailAdaptiveELBO(infer.TraceTailAdaptive_ELBO):
    """Pyro's tail-adaptive gradient, with a loss value: the K-particle ELBO estimate of the same
    draws (Pyro reports ``inf``, which would hide a diverging run)."""

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        _, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        log_w = sum(s["log_prob_sum"] for s in model_trace.nodes.values() if s["type"] == "sample")
        log_w = log_w - sum(s["log_prob_sum"] for s in guide_trace.nodes.values() if s["type"] == "sample")
        return -float(log_w.detach()) / self.num_particles, surrogate


@ESTIMATORS.register("tail_adaptive")
def tail_adaptive(num_particles=5, vectorize_particles=True, tail_adaptive_beta=-1.0):
    """TraceTailAdaptive_ELBO: adaptive f-divergence gradients (whole-batch particle ranking, as
    Pyro implements it); the loss value reported is the ELBO of the same particles."""
    if vectorize_particles is False:
        raise ConfigError("the 'tail_adaptive' estimator needs vectorize_particles = true (Pyro implements no other)")
    return _make(TailAdaptiveELBO, "tail_adaptive", num_particles, True,
                 tail_adaptive_beta=float(tail_adaptive_beta))


def check_compatible(elbo, vae):
    """Refuse, before training, an estimator that cannot work with this VAE."""
    p = next(vae.parameters())
    q = vae.q(torch.zeros(1, *vae.data_shape, device=p.device, dtype=p.dtype))
    if (elbo.name == "tail_adaptive" or elbo.name in OURS) and not q.has_rsample:
        raise ConfigError(
            f"the {elbo.name!r} estimator needs a reparameterised posterior (has_rsample); "
            f"this {type(vae.posterior).__name__} is not: use kind = \"trace\" or \"tracegraph\""
        )
    if getattr(elbo, "needs_detached_q", False):
        detach_params(q)  # refuses posteriors whose parameters live in modules (flows)
    if elbo.name == "dreg" and vae.prior.uses_encoder:
        raise ConfigError("the 'dreg' estimator needs a prior that does not share the encoder (not 'vamp'): "
                          "use kind = \"iwae\"")

