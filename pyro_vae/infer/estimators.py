"""ELBO estimators by name: one registry, Pyro's own ``pyro.infer`` estimators behind it.

Every entry takes ``num_particles`` (K) and ``vectorize_particles`` (default: on when K > 1,
so the K particles run as one batched pass) and returns a ``pyro.infer.ELBO``. Combinations
Pyro would refuse, or silently degrade, are refused here with a message before training.

**Capabilities, not names.** An estimator class says what it needs in class attributes, and
``check_compatible`` reads them from any ``pyro.infer.ELBO`` (a user's subclass included):

- ``min_particles``: the K below which it is not the estimator it claims (2 for IWAE, Renyi, DReG,
  tail-adaptive; default 1);
- ``requires_rsample``: every guide sample site must be reparameterised (default False);
- ``needs_detached_q``: it evaluates log q with the guide's parameters held fixed (``ParticleObjective``
  does so for any reparameterised guide: a distribution's own parameters detached, or, for layered
  guides and flows, the guide run again at the detached draws; default False);
- ``relaxes``: the discrete distributions it replaces by continuous relaxations (``relaxed``); any
  other discrete guide site is refused;
- ``allows_shared_params``: the model may use parameters the guide registered (default True;
  False for DReG, whose phi/theta split is the guide's/the model's parameters);
- ``mean_field``: it takes KL(q(z_s) || p(z_s)) in closed form site by site, which needs a guide whose
  latents do not depend on each other (default: True for ``TraceMeanField_ELBO`` and subclasses).
  As Pyro's own check does, a guide that draws its latents in another order than the model
  (a chain x -> z_1 -> z_2 against z_2 -> z_1 -> x) is refused;
- ``check_traces(model_trace, guide_trace, latents)``: a method for any other condition, raising
  ``ConfigError`` (beta_tc: one latent site whose posterior factorises);
- ``min_batch``: the fewest data points a batch may have (default 1; beta_tc: 2);
- ``beta_weighs``: what the KL weight ``train.beta`` multiplies, in words (default "the KL"; beta_tc:
  the total correlation alone, which no rate target or warm-up can steer).

**Which way each bound points** (for a reparameterised guide, per data point, K particles):
ELBO (trace, meanfield, stl, tracegraph) <= IWAE_K (iwae, dreg's loss) <= log p(x), IWAE_K rising
with K; Renyi alpha in [0, 1) lies between the ELBO (alpha -> 1) and IWAE (alpha = 0), and
alpha > 1 below the ELBO, all lower bounds; alpha < 0 gives an *upper* bound as K -> infinity and
no bound for finite K, so it is refused here (Li & Turner 2016). Tail-adaptive (Wang et al. 2018) changes the gradient,
not the objective; its loss is the ELBO of its particles.
"""

import pyro.distributions as dist
import torch
from pyro import infer, poutine
from pyro.poutine.messenger import Messenger

from ..checks import number, positive
from ..errors import ConfigError
from ..registry import Registry
from .compiled import CompiledELBO
from .objectives import (
    STL,
    BetaTC,
    DReG,
    JitTraceELBO,
    JitTraceMeanFieldELBO,
    LossFromDifferentiable,
    RenyiBound,
    TailAdaptiveELBO,
    trace_params,
)

#: the ELBO estimators by their config name (``train.elbo``)
ESTIMATORS = Registry("train.elbo", context=())


def _check_particles(cls, name, num_particles):
    positive("train.elbo.num_particles", num_particles, integer=True)
    if num_particles < getattr(cls, "min_particles", 1):
        raise ConfigError(
            f"the {name!r} estimator needs num_particles >= {cls.min_particles} (with K = 1 it is the plain ELBO): "
            f"set train.elbo.num_particles, e.g. --set train.elbo.num_particles=5, or use kind = \"trace\""
        )


def _check_alpha(alpha):
    alpha = number("train.elbo.alpha", alpha, low=0)  # alpha < 0: no lower bound (see the module docstring)
    if alpha == 1:
        raise ConfigError("train.elbo.alpha must not be 1, the ELBO itself: use kind = \"trace\"")
    return alpha


def _ours(cls, name, num_particles, **kwargs):
    _check_particles(cls, name, num_particles)
    return cls(num_particles=num_particles, **kwargs)


def _make(cls, name, num_particles, vectorize_particles, **kwargs):
    _check_particles(cls, name, num_particles)
    if vectorize_particles is None:
        vectorize_particles = num_particles > 1
    return cls(
        num_particles=num_particles, vectorize_particles=bool(vectorize_particles), max_plate_nesting=1, **kwargs
    )


class PyroRenyiELBO(infer.RenyiELBO):
    """Pyro's RenyiELBO, unchanged but for the capability it needs."""

    min_particles = 2


def _pyro(cls, name, doc):
    def factory(num_particles=1, vectorize_particles=None):
        return _make(cls, name, num_particles, vectorize_particles)

    factory.__name__, factory.__doc__ = name, doc
    return ESTIMATORS.register(name)(factory)


for _name, _cls, _doc in (
    (
        "trace",
        infer.Trace_ELBO,
        "Trace_ELBO: reparameterised (pathwise) Monte Carlo ELBO, score function where needed.",
    ),
    (
        "jit_trace",
        JitTraceELBO,
        "Trace_ELBO traced once (compiled.py): the loss, and the training step's forward and backward, each one graph.",
    ),
    (
        "meanfield",
        infer.TraceMeanField_ELBO,
        "TraceMeanField_ELBO: E_q log p(x|z) by Monte Carlo, KL(q || p) in closed form where known.",
    ),
    (
        "jit_meanfield",
        JitTraceMeanFieldELBO,
        "TraceMeanField_ELBO traced once (compiled.py): the loss, and the training step's forward and backward, each one graph.",
    ),
    (
        "tracegraph",
        infer.TraceGraph_ELBO,
        "TraceGraph_ELBO: score-function terms Rao-Blackwellised by the dependency graph.",
    ),
):
    _pyro(_cls, _name, _doc)


class EnumerateELBO(infer.TraceEnum_ELBO):
    """TraceEnum_ELBO with every discrete guide site enumerated in parallel (``config_enumerate``
    applied to the guide): expectations over discrete latents are exact sums, the continuous ones
    Monte Carlo. For any model/guide pair; without discrete sites it is the plain ELBO."""

    def _enumerated(self, guide):
        return infer.config_enumerate(guide, "parallel")

    def loss(self, model, guide, *args, **kwargs):
        return super().loss(model, self._enumerated(guide), *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return super().differentiable_loss(model, self._enumerated(guide), *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        return super().loss_and_grads(model, self._enumerated(guide), *args, **kwargs)


class JitEnumerateELBO(CompiledELBO, LossFromDifferentiable, EnumerateELBO):
    """``EnumerateELBO`` traced once (``compiled.py``): the exact sum over the enumerated discrete
    latents, contracted by TraceEnum_ELBO while tracing, is a batched tensor expression in one graph,
    and a training step runs its forward and backward pass as one graph; the same numbers, draw for draw."""

    def _eager_loss(self, model, guide, *args, **kwargs):
        # TraceEnum_ELBO refuses a loss without a gradient, and ``loss`` runs this under no_grad
        with torch.enable_grad():
            return EnumerateELBO.differentiable_loss(self, model, guide, *args, **kwargs)


class ScoreFunctionELBO(infer.TraceGraph_ELBO):
    """REINFORCE for the guide's non-reparameterised sites (TraceGraph_ELBO: each score term
    Rao-Blackwellised to its downstream costs) with a decaying-average baseline of those costs
    (``baseline_beta``) subtracted to cut the variance; reparameterised sites use the pathwise gradient."""

    def __init__(self, baseline_beta=0.9, **kwargs):
        super().__init__(**kwargs)
        self.baseline = {"use_decaying_avg_baseline": True, "baseline_beta": baseline_beta}

    def _with_baselines(self, guide):
        def config(site):
            fn = site["fn"]
            return {"baseline": dict(self.baseline)} if site["type"] == "sample" and not fn.has_rsample else {}

        return poutine.infer_config(guide, config)

    def loss(self, model, guide, *args, **kwargs):
        return super().loss(model, self._with_baselines(guide), *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        return super().loss_and_grads(model, self._with_baselines(guide), *args, **kwargs)


class Relax(Messenger):
    """Replace every unobserved Categorical / OneHotCategorical site by the RelaxedOneHotCategorical
    (Concrete) of the same logits at ``temperature`` (``straight_through``: the hard one-hot value
    forward, the relaxed gradient backward). Values become (relaxed) one-hot vectors."""

    def __init__(self, temperature, straight_through=False):
        super().__init__()
        self.temperature, self.straight_through = temperature, straight_through

    def _pyro_sample(self, msg):
        fn = msg["fn"]
        if msg["is_observed"] or not isinstance(fn, RELAXABLE):
            return
        cls = dist.RelaxedOneHotCategoricalStraightThrough if self.straight_through else dist.RelaxedOneHotCategorical
        msg["fn"] = cls(
            torch.tensor(self.temperature, dtype=fn.logits.dtype, device=fn.logits.device), logits=fn.logits
        )


#: the discrete distributions ``relaxed`` knows how to relax
RELAXABLE = (dist.Categorical, dist.OneHotCategorical)


class RelaxedELBO(infer.Trace_ELBO):
    """Continuous relaxation of the discrete latents (Gumbel-softmax, Jang et al. 2017; Concrete,
    Maddison et al. 2017): in model and guide alike, each Categorical site becomes a
    RelaxedOneHotCategorical at temperature tau, so the pathwise gradient flows through it. The
    objective is the ELBO of the relaxed model (not a bound on the discrete one; it tends to it as
    tau -> 0, where its gradient's variance grows). tau anneals geometrically from ``temperature`` to
    ``final_temperature`` over ``anneal_steps`` steps (the loop calls ``set_step``)."""

    requires_rsample = False
    relaxes = RELAXABLE

    def __init__(self, temperature=1.0, final_temperature=0.5, anneal_steps=10000, straight_through=False, **kwargs):
        super().__init__(**kwargs)
        self.initial, self.final, self.anneal_steps = temperature, final_temperature, anneal_steps
        self.straight_through = straight_through
        self.step = 0

    def set_step(self, step):
        self.step = step

    @property
    def temperature(self):
        """tau at the current step: initial * (final / initial) ** min(1, step / anneal_steps)."""
        done = min(1.0, self.step / self.anneal_steps) if self.anneal_steps else 1.0
        return self.initial * (self.final / self.initial) ** done

    def _relaxed(self, program):
        return Relax(self.temperature, self.straight_through)(program)

    def loss(self, model, guide, *args, **kwargs):
        return super().loss(self._relaxed(model), self._relaxed(guide), *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return super().differentiable_loss(self._relaxed(model), self._relaxed(guide), *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        return super().loss_and_grads(self._relaxed(model), self._relaxed(guide), *args, **kwargs)


@ESTIMATORS.register("relaxed")
def relaxed(num_particles=1, temperature=1.0, final_temperature=0.5, anneal_steps=10000, straight_through=False):
    """Gumbel-softmax / Concrete relaxation of Categorical latents, temperature annealed (see RelaxedELBO)."""
    number("train.elbo.temperature", temperature, low=0, strict=True)
    number("train.elbo.final_temperature", final_temperature, low=0, strict=True)
    number("train.elbo.anneal_steps", anneal_steps, integer=True, low=0)
    if not isinstance(straight_through, bool):
        raise ConfigError(f"train.elbo.straight_through must be true or false, got {straight_through!r}")
    return _make(
        RelaxedELBO,
        "relaxed",
        num_particles,
        None,
        temperature=float(temperature),
        final_temperature=float(final_temperature),
        anneal_steps=int(anneal_steps),
        straight_through=straight_through,
    )


@ESTIMATORS.register("enumerate")
def enumerate_(num_particles=1, vectorize_particles=None):
    """TraceEnum_ELBO: discrete latents summed out exactly (parallel enumeration), the rest Monte Carlo."""
    return _make(EnumerateELBO, "enumerate", num_particles, vectorize_particles, strict_enumeration_warning=False)


@ESTIMATORS.register("jit_enumerate")
def jit_enumerate(num_particles=1, vectorize_particles=None):
    """TraceEnum_ELBO compiled (compiled.py): the enumerated sum and the training step, each one graph."""
    return _make(
        JitEnumerateELBO, "jit_enumerate", num_particles, vectorize_particles, strict_enumeration_warning=False
    )


@ESTIMATORS.register("score_function")
def score_function(num_particles=1, baseline_beta=0.9):
    """Score-function (REINFORCE) gradients for discrete latents, with a decaying-average baseline."""
    number("train.elbo.baseline_beta", baseline_beta, low=0, high=1, strict=True)
    _check_particles(ScoreFunctionELBO, "score_function", num_particles)
    return ScoreFunctionELBO(baseline_beta=float(baseline_beta), num_particles=num_particles, max_plate_nesting=1)


@ESTIMATORS.register("renyi")
def renyi(alpha=0.5, num_particles=5):
    """The Renyi alpha bound (Li & Turner 2016) per data point, (1/(1-alpha)) log mean_k w_k^(1-alpha),
    a lower bound on log p(x) for alpha in [0, 1) (ours: exact with minibatches)."""
    return _ours(RenyiBound, "renyi", num_particles, alpha=_check_alpha(alpha))


@ESTIMATORS.register("iwae")
def iwae(num_particles=5):
    """The importance-weighted bound log mean_k p(x, z_k) / q(z_k|x) per data point (Renyi, alpha = 0)."""
    return _ours(RenyiBound, "iwae", num_particles, alpha=0.0)


@ESTIMATORS.register("pyro_renyi")
def pyro_renyi(alpha=0.0, num_particles=5, vectorize_particles=None):
    """Pyro's RenyiELBO as it is: exact on full batches; with minibatches it scales log w by N/n
    inside the log-mean-exp (see objectives.py), so it is here for comparison only."""
    return _make(PyroRenyiELBO, "pyro_renyi", num_particles, vectorize_particles, alpha=_check_alpha(alpha))


@ESTIMATORS.register("stl")
def stl(num_particles=1):
    """Sticking the landing (Roeder et al. 2017): the ELBO without the score term of log q."""
    return _ours(STL, "stl", num_particles)


@ESTIMATORS.register("dreg")
def dreg(num_particles=5):
    """Doubly reparameterised IWAE gradients (Tucker et al. 2018); the loss is the IWAE bound."""
    return _ours(DReG, "dreg", num_particles)


@ESTIMATORS.register("beta_tc")
def beta_tc(num_particles=1):
    """beta-TCVAE (Chen et al. 2018): train.beta weights the total correlation of q(z) alone, estimated
    on each batch by stratified sampling (aggregate.py); the mutual information and dimension-wise KL keep weight 1."""
    return _ours(BetaTC, "beta_tc", num_particles)


@ESTIMATORS.register("tail_adaptive")
def tail_adaptive(num_particles=5, vectorize_particles=True, tail_adaptive_beta=-1.0):
    """TraceTailAdaptive_ELBO (Wang et al. 2018): adaptive f-divergence gradients (whole-batch particle
    ranking, as Pyro implements it); the loss value reported is the ELBO of the same particles."""
    if vectorize_particles is False:
        raise ConfigError("the 'tail_adaptive' estimator needs vectorize_particles = true (Pyro implements no other)")
    return _make(TailAdaptiveELBO, "tail_adaptive", num_particles, True, tail_adaptive_beta=float(tail_adaptive_beta))


def check_compatible(elbo, model, guide, *args, **kwargs):
    """Refuse, before training, an estimator that cannot work with this model/guide pair: read the
    estimator's capabilities (see the module docstring) against one trace of each program."""
    from pyro.poutine.util import site_is_subsample

    name = type(elbo).__name__
    with torch.no_grad(), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    latents = [
        s
        for s in guide_trace.nodes.values()
        if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
    ]
    if getattr(elbo, "requires_rsample", isinstance(elbo, infer.TraceMeanField_ELBO)):  # Pyro's, as it documents
        for s in latents:
            if not s["fn"].has_rsample:
                raise ConfigError(
                    f"the {name} estimator needs a reparameterised guide, but site {s['name']!r} draws from "
                    f"{type(s['fn']).__name__} without rsample: use kind = \"enumerate\" (a discrete site summed exactly), "
                    "\"score_function\", \"relaxed\", \"trace\" or \"tracegraph\""
                )
    relaxes = getattr(elbo, "relaxes", None)
    if relaxes:
        for s in latents:
            if not s["fn"].has_rsample and not isinstance(s["fn"], relaxes):
                raise ConfigError(
                    f"the {name} estimator relaxes Categorical sites, but site {s['name']!r} draws from "
                    f"{type(s['fn']).__name__}: use kind = \"score_function\" or \"trace\""
                )
    if getattr(elbo, "mean_field", isinstance(elbo, infer.TraceMeanField_ELBO)):
        order = [s["name"] for s in latents]
        in_model = [n for n, s in model_trace.nodes.items() if n in set(order) and s["type"] == "sample"]
        if len(order) > 1 and in_model != order:
            raise ConfigError(
                f"the {name} estimator takes the KL in closed form site by site, which needs a mean-field "
                f"guide; this guide draws {', '.join(order)} in another order than the model "
                f"({', '.join(in_model)}), so its latents depend on each other: use kind = \"trace\", "
                "\"jit_trace\", \"iwae\" or another Monte Carlo estimator"
            )
    check = getattr(elbo, "check_traces", None)  # an estimator's own condition on the programs
    if check is not None:
        check(model_trace, guide_trace, latents)
    if not getattr(elbo, "allows_shared_params", True):
        guide_params = {id(p) for p in trace_params(guide_trace)}
        if any(id(p) in guide_params for p in trace_params(model_trace)):
            raise ConfigError(
                f"the {name} estimator needs a model that does not share parameters with the guide "
                "(the VampPrior shares the encoder): use kind = \"iwae\""
            )
