"""The project's own objectives, ``pyro.infer.ELBO`` subclasses for any model/guide pair with one latent plate.

All of them work per data point on K vectorised particles: log w_ik = log p(x_i, z_ik) - log q(z_ik|x_i)
(beta-weighted like every estimator), and take the data plate's subsampling scale N/n *outside*
the per-point bound. Pyro's ``RenyiELBO`` scales log w by N/n before its log-mean-exp, which with
minibatches computes (n/N) log mean_k exp((N/n) log w_k) -> max_k log w_k, not the IWAE bound.

- ``RenyiBound``: (1/(1-alpha)) log (1/K) sum_k w_k^(1-alpha); alpha = 0 is IWAE (Burda et al. 2016).
- ``STL``: "sticking the landing" (Roeder et al. 2017): the ELBO, with log q evaluated at detached
  variational parameters, so only the pathwise term remains (zero variance at the exact posterior).
- ``BetaTC``: beta-TCVAE (Chen et al. 2018), the ELBO with the total correlation of q(z) weighted by beta alone.
- ``DReG``: doubly reparameterised IWAE gradients (Tucker et al. 2018): decoder sum_k w~_k grad log w_k,
  encoder sum_k w~_k^2 (d log w_k / d z_k)(d z_k / d phi), w~ the normalised weights.
"""

import copy
import math
from typing import NamedTuple, Optional

import pyro
import torch
from pyro import poutine
from pyro.distributions.torch import Independent
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO, TraceTailAdaptive_ELBO
from pyro.infer.enum import get_importance_trace
from pyro.poutine.util import prune_subsample_sites

from ..errors import ConfigError
from ..nn.distributions import logsumexp
from .aggregate import aggregate_log_prob, factorised
from .compiled import CompiledELBO


class LossFromDifferentiable:
    """``loss`` and ``loss_and_grads`` from ``differentiable_loss``, whose value is the loss estimate."""

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


def detach_params(d):
    """The same distribution with its parameters detached (its samples keep their own graph)."""
    if isinstance(d, Independent):
        return Independent(detach_params(d.base_dist), d.reinterpreted_batch_ndims, validate_args=False)
    held = [v for v in vars(d).values() if not isinstance(v, torch.Size)]
    if any(isinstance(v, (torch.distributions.Distribution, torch.nn.Module, list, tuple)) for v in held):
        raise ConfigError(
            f"cannot detach the parameters of {type(d).__name__} (a flow's parameters live in its "
            "transforms): use a diagonal_normal or full_normal posterior"
        )
    new = copy.copy(d)
    for k, v in vars(d).items():
        if torch.is_tensor(v):
            setattr(new, k, v.detach())
    return new


def trace_params(trace):
    """The parameters a program registered (``pyro.param``/``pyro.module``) in one trace, as leaf tensors."""
    params = {}
    for site in trace.nodes.values():
        if site["type"] == "param":
            leaf = getattr(site["value"], "unconstrained", None)
            p = leaf() if callable(leaf) else site["value"]
            params[id(p)] = p
    return list(params.values())


class Weights(NamedTuple):
    log_p: torch.Tensor
    log_q: torch.Tensor
    log_q_det: Optional[torch.Tensor]
    z: torch.Tensor
    scale: float
    model_params: list
    guide_params: list
    guide_sites: list


class ParticleObjective(LossFromDifferentiable, ELBO):
    """Per-point log weights from K vectorised particles; see the module docstring."""

    requires_rsample = True
    needs_detached_q = False

    def __init__(self, num_particles=1, **kwargs):
        super().__init__(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1, **kwargs)

    def _get_trace(self, model, guide, args, kwargs):
        return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)

    def log_weights(self, model, guide, *args, **kwargs):
        """``Weights``: log p, log q, log q at detached parameters (or None): (K, n) tensors; the z
        site's value; N/n; and the parameters each program registered (from the traces)."""
        ((model_trace, guide_trace),) = self._get_traces(model, guide, args, kwargs)
        sites = [s for tr in (model_trace, guide_trace) for s in tr.nodes.values() if s["type"] == "sample"]
        common = set.intersection(*(set(s["cond_indep_stack"]) for s in sites))
        scale = math.prod(f.full_size / f.size for f in common if f.full_size)
        log_p = sum(s["log_prob"] for s in model_trace.nodes.values() if s["type"] == "sample") / scale
        guide_sites = [s for s in guide_trace.nodes.values() if s["type"] == "sample"]
        for s in guide_sites:
            if not s["fn"].has_rsample:
                raise ConfigError(
                    f"the {type(self).__name__} estimator needs a reparameterised posterior; "
                    "use kind = \"tracegraph\" for score-function gradients"
                )
        log_q = sum(s["log_prob"] for s in guide_sites) / scale
        log_q_det = None
        if self.needs_detached_q:
            log_q_det = self._log_q_fixed_params(guide, guide_sites, log_q, scale, args, kwargs)
        # (K, n); Pyro adds the particle dimension only when K > 1
        shape = (self.num_particles, -1)
        log_q_det = None if log_q_det is None else log_q_det.reshape(shape)
        return Weights(
            log_p.reshape(shape),
            log_q.reshape(shape),
            log_q_det,
            guide_sites[0]["value"],
            scale,
            trace_params(model_trace),
            trace_params(guide_trace),
            guide_sites,
        )

    def _log_q_fixed_params(self, guide, guide_sites, log_q, scale, args, kwargs):
        """log q(z; phi) whose gradient is the pathwise part only, d log q / dz * dz / dphi.

        One latent site whose distribution holds its parameters: the site's distribution with them
        detached. Otherwise (several layers, where q(z_2|z_1)'s parameters depend on z_1 through
        phi *and* through the draw; flows, whose parameters live in modules): the total derivative
        less the partial one at fixed z, log q - log q(z-bar) + log q(z-bar).detach(), with log q(z-bar)
        from the guide run again at the drawn values detached."""
        if len(guide_sites) == 1:
            (s,) = guide_sites
            try:
                return detach_params(s["fn"]).log_prob(s["value"]) * s["scale"] / scale
            except ConfigError:
                pass
        fixed = {s["name"]: s["value"].detach() for s in guide_sites}
        program = poutine.condition(guide, data=fixed)
        if self.vectorize_particles and self.num_particles > 1:  # the same outer plate as the traced guide
            program = pyro.plate("num_particles_vectorized", self.num_particles, dim=-self.max_plate_nesting)(program)
        trace = prune_subsample_sites(poutine.trace(program).get_trace(*args, **kwargs))
        trace.compute_log_prob()
        at_fixed_z = sum(trace.nodes[s["name"]]["log_prob"] for s in guide_sites) / scale
        return log_q - at_fixed_z + at_fixed_z.detach()


class RenyiBound(CompiledELBO, ParticleObjective):
    """-(N/n) sum_i (1/(1-alpha)) log (1/K) sum_k w_ik^(1-alpha); differentiating it gives the
    reparameterised Renyi/IWAE gradient (weights softmax_k((1-alpha) log w_ik)). Compiled
    (``compiled.py``) like the default estimator."""

    min_particles = 2

    def __init__(self, alpha=0.0, num_particles=5):
        super().__init__(num_particles)
        self.alpha = float(alpha)

    def _eager_loss(self, model, guide, *args, **kwargs):
        w = self.log_weights(model, guide, *args, **kwargs)
        a = 1.0 - self.alpha
        bound = (logsumexp(a * (w.log_p - w.log_q), dim=0) - math.log(self.num_particles)) / a
        return -w.scale * bound.sum()


class STL(CompiledELBO, ParticleObjective):
    """The ELBO (K-particle average) whose gradient drops the score term of log q(z|x). Compiled."""

    needs_detached_q = True

    def _eager_loss(self, model, guide, *args, **kwargs):
        w = self.log_weights(model, guide, *args, **kwargs)
        return -w.scale * (w.log_p - w.log_q_det).mean(0).sum()


class BetaTC(CompiledELBO, ParticleObjective):
    """beta-TCVAE (Chen et al. 2018): the ELBO with the total correlation of the aggregate posterior
    weighted by beta and the rest of the KL (mutual information, dimension-wise KL) by 1,

        -(N/n) sum_i mean_k [log p(x_i, z_ik) - log q(z_ik|x_i) - (beta - 1) TC^(z_ik)],

    TC^(z) = log q^(z) - sum_d log q^(z_d), q^ the batch's stratified estimate of q(z) (``aggregate.py``).
    ``beta`` is the training loop's KL weight (``train.beta``), here the TC's alone; the programs run
    at beta = 1. Needs one reparameterised latent site whose posterior factorises over dimensions
    (``check_traces``), batches of at least 2 points. Compiled."""

    requires_rsample = True
    beta_weighs = "the total correlation alone"
    min_batch = 2

    def check_traces(self, model_trace, guide_trace, latents):
        if len(latents) != 1:
            raise ConfigError(
                f"the beta_tc estimator needs one latent site, this guide draws {len(latents)} "
                f"({', '.join(s['name'] for s in latents)}): use a one-layer family (vae, iwae, cvae)"
            )
        factorised(latents[0]["fn"], "the beta_tc estimator")

    def total_correlation(self, w):
        """TC^ at each particle's code: (K, n)."""
        (site,) = w.guide_sites
        z = site["value"]
        n = z.shape[-2]  # the data plate's: its full size N (subsampled), or n
        num_data = next((f.full_size for f in site["cond_indep_stack"] if f.size == n and f.full_size), n)
        log_qz, log_qz_dims = aggregate_log_prob(factorised(site["fn"], "the beta_tc estimator"), z, num_data)
        return (log_qz - log_qz_dims.sum(-1)).reshape(self.num_particles, -1)

    def _eager_loss(self, model, guide, *args, beta=1.0, **kwargs):
        w = self.log_weights(model, guide, *args, beta=1.0, **kwargs)
        tc = self.total_correlation(w)
        return -w.scale * (w.log_p - w.log_q - (beta - 1) * tc).mean(0).sum()


class DReG(ParticleObjective):
    """Loss value: the IWAE bound; gradients: DReG for the guide's parameters, IWAE for the model's."""

    needs_detached_q = True
    min_particles = 2
    allows_shared_params = False

    def differentiable_loss(self, model, guide, *args, **kwargs):
        raise NotImplementedError("DReG is a gradient estimator: use loss_and_grads (its loss is the IWAE bound)")

    def loss_and_grads(self, model, guide, *args, **kwargs):
        log_p, log_q, log_q_det, _, scale, model_params, guide_params, _ = self.log_weights(
            model, guide, *args, **kwargs
        )
        log_w = log_p - log_q_det  # the value of log w, with q's parameters cut from the graph
        w = torch.softmax(log_w.detach(), dim=0)
        bound = torch.logsumexp(log_w.detach(), dim=0) - math.log(self.num_particles)
        # phi and theta from the traces: what the guide registered, and what only the model did
        phi = [p for p in guide_params if p.requires_grad]
        shared = {id(p) for p in phi}
        if any(id(p) in shared for p in model_params):
            raise ConfigError(
                "the 'dreg' estimator needs a model that does not share parameters with the guide "
                "(a VampPrior shares the encoder): use kind = \"iwae\""
            )
        theta = [p for p in model_params if p.requires_grad]
        # the model's parameters: sum_k w_k grad log p(x, z_k) (z does not depend on them)
        g_theta = torch.autograd.grad(-scale * (w * log_p).sum(), theta, retain_graph=True, allow_unused=True)
        # the guide's parameters: sum_k w_k^2 d log w_k / d phi through z only (log q's parameters detached)
        g_phi = torch.autograd.grad(-scale * (w.pow(2) * log_w).sum(), phi, allow_unused=True)
        for p, g in zip(theta + phi, g_theta + g_phi):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
        return -scale * bound.sum().item()


class TailAdaptiveELBO(TraceTailAdaptive_ELBO):
    """Pyro's tail-adaptive gradient (Wang et al. 2018), with a loss value: the K-particle ELBO
    estimate of the same draws (Pyro reports ``inf``, which would hide a diverging run)."""

    min_particles = 2
    requires_rsample = True

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        _, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        log_w = sum(s["log_prob_sum"] for s in model_trace.nodes.values() if s["type"] == "sample")
        log_w = log_w - sum(s["log_prob_sum"] for s in guide_trace.nodes.values() if s["type"] == "sample")
        # the K vectorised particles are one trace: their sum; Trace_ELBO.loss_and_grads divides by K
        return -float(log_w.detach()), surrogate


class JitTraceELBO(CompiledELBO, LossFromDifferentiable, Trace_ELBO):
    """Trace_ELBO, compiled: log p(x, z) - log q(z|x) at z ~ q, score-function terms where needed."""

    def _particle(self, model_trace, guide_trace):
        _, surrogate = Trace_ELBO._differentiable_loss_particle(self, model_trace, guide_trace)
        elbo = sum(s["log_prob_sum"] for s in model_trace.nodes.values() if s["type"] == "sample")
        elbo = elbo - sum(s["log_prob_sum"] for s in guide_trace.nodes.values() if s["type"] == "sample")
        return -elbo.detach(), surrogate


class JitTraceMeanFieldELBO(CompiledELBO, LossFromDifferentiable, TraceMeanField_ELBO):
    """TraceMeanField_ELBO, compiled: E_q log p(x|z) - KL(q || p), the KL in closed form where known."""

    def _particle(self, model_trace, guide_trace):
        _, surrogate = TraceMeanField_ELBO._differentiable_loss_particle(self, model_trace, guide_trace)
        return None, surrogate  # no score-function terms: the surrogate is the loss
