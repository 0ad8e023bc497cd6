"""Pyro's JIT-compiled ELBOs, compiled once per model instead of once per step.

``pyro.infer.JitTrace_ELBO`` and ``JitTraceMeanField_ELBO`` trace the ELBO (model and guide
included) with ``torch.jit.trace`` through ``pyro.ops.jit.trace``, so a step runs one graph
with no Python or poutine overhead. In Pyro 1.9.2 they recompile far too often for a loop like ours:

- ``JitTraceMeanField_ELBO.differentiable_loss`` looks for ``self._loss_and_surrogate_loss`` but
  stores ``self._differentiable_loss``, so it builds and traces a new graph on every call;
- both key their graphs on ``id(model)``; ``vae.model`` is a new bound-method object each time
  it is read, so the key changes whenever CPython hands out a new address (and the closure
  keeps the first model it saw in any case);
- a traced graph freezes every Python number it read, such as beta, so a KL warm-up would
  silently stop at the beta of the first step.

``CompiledELBO`` keeps one Pyro ``CompiledFunction`` per (model, guide, argument shapes and
dtypes, keyword arguments) and feeds the model's ``beta`` in as a graph input. The loss value and
gradients equal the uncompiled estimator's draw for draw (the random state is restored after
tracing, which runs the model three times). Calls made with Pyro's validation on
run uncompiled, so its checks still run (the training loop validates its first step).
"""

import functools
import warnings

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled
from pyro.ops.jit import _hashable_args_kwargs

_EAGER = object()  # a key whose graph could not be traced: run uncompiled


def _ident(fn):
    """A stable identity for a function or bound method (``vae.model`` is a new object each time)."""
    owner = getattr(fn, "__self__", None)
    return (getattr(fn, "__func__", fn), id(owner) if owner is not None else None)


def _signature(args):
    return tuple((tuple(a.shape), a.dtype, a.device) if torch.is_tensor(a) else a for a in args)


class _ParamsGone(Exception):
    pass


def _run(compiled, args, beta):
    """Call a traced ``pyro.ops.jit.CompiledFunction`` with the current values of its parameters.

    What ``CompiledFunction.__call__`` does after its first call, minus the ``pyro.param`` effect
    calls and the trace watching for new parameters (a traced graph runs no Python, so none can
    appear): about 0.4 ms a step here."""
    store = pyro.get_param_store()._params  # name -> unconstrained tensor, the graph's inputs
    try:
        params = [store[name] for name in compiled._param_names]
    except KeyError:
        raise _ParamsGone from None
    (graph,) = compiled.compiled.values()
    return graph(*params, *args, beta)


class LossFromDifferentiable:
    """``loss`` and ``loss_and_grads`` from ``differentiable_loss``, whose value is the loss estimate."""

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


class CompiledELBO(LossFromDifferentiable):
    """Mixin before a Pyro ELBO class: its ``differentiable_loss`` compiled once per model/guide/shape."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("ignore_jit_warnings", True)
        super().__init__(*args, **kwargs)
        self._graphs = {}

    def _particle(self, model_trace, guide_trace):
        """(loss value, surrogate loss) of one particle, both tensors (no ``.item()`` under tracing)."""
        raise NotImplementedError

    def _traced_loss(self, model, guide, kwargs, owner, *args):
        *args, beta = args
        if owner is not None:
            owner.beta = beta  # beta enters the graph as an input, not a constant
        return self._eager_loss(model, guide, *args, **kwargs)

    def _compile(self, model, guide, kwargs, owner):
        fn = functools.partial(self._traced_loss, model, guide, kwargs, owner)
        return pyro.ops.jit.trace(fn, ignore_warnings=self.ignore_jit_warnings, jit_options=dict(self.jit_options or {}))

    def differentiable_loss(self, model, guide, *args, **kwargs):
        if is_validation_enabled() or torch._C._get_tracing_state():
            return self._eager_loss(model, guide, *args, **kwargs)
        owner = getattr(guide, "__self__", None)
        owner = owner if isinstance(getattr(owner, "beta", None), (int, float)) else None
        key = (_ident(model), _ident(guide), _signature(args), _hashable_args_kwargs((), kwargs))
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._graphs[key] = self._compile(model, guide, kwargs, owner)
        if graph is _EAGER:
            return self._eager_loss(model, guide, *args, **kwargs)
        beta = owner.beta if owner is not None else 1.0
        x = next((a for a in args if torch.is_tensor(a)), None)
        beta_t = torch.tensor(float(beta), device=None if x is None else x.device)
        rng = None if graph.compiled else pyro.util.get_rng_state()
        try:
            # run the traced graph as recorded: the graph executor's autodiff pass would replace
            # ATen's backward kernels with slower symbolic ones (softplus: 5 passes instead of 1)
            with torch.jit.optimized_execution(False):
                if graph.compiled:
                    return _run(graph, args, beta_t)
                # tracing runs the model three times; put the random state back afterwards, so the
                # compiled step draws exactly what the uncompiled one would (resumed runs stay exact)
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*torch.jit.trace.* is deprecated")
                    graph(*args, beta_t)
                pyro.util.set_rng_state(rng)
                return _run(graph, args, beta_t)
        except _ParamsGone:  # the param store was cleared: trace again, which registers them anew
            del self._graphs[key]
            return self.differentiable_loss(model, guide, *args, **kwargs)
        except Exception as e:  # a model torch.jit.trace cannot follow: say so once, then run uncompiled
            if graph.compiled:  # it had compiled: a real error, not a tracing limit
                raise
            warnings.warn(f"{type(self).__name__}: could not compile this model ({type(e).__name__}: {e}); "
                          "running it uncompiled", RuntimeWarning, stacklevel=2)
            self._graphs[key] = _EAGER
            pyro.util.set_rng_state(rng)
            return self._eager_loss(model, guide, *args, **kwargs)
        finally:
            if owner is not None:
                owner.beta = beta

    def _eager_loss(self, model, guide, *args, **kwargs):
        """The loss, uncompiled: its value is the estimate, its gradient the estimator's."""
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            value, surrogate = self._particle(model_trace, guide_trace)
            loss = loss + (value + (surrogate - surrogate.detach())) / self.num_particles
        return loss


class JitTraceELBO(CompiledELBO, Trace_ELBO):
    """Trace_ELBO, compiled: log p(x, z) - log q(z|x) at z ~ q, score-function terms where needed."""

    def _particle(self, model_trace, guide_trace):
        _, surrogate = Trace_ELBO._differentiable_loss_particle(self, model_trace, guide_trace)
        elbo = sum(s["log_prob_sum"] for s in model_trace.nodes.values() if s["type"] == "sample")
        elbo = elbo - sum(s["log_prob_sum"] for s in guide_trace.nodes.values() if s["type"] == "sample")
        return -elbo.detach(), surrogate


class JitTraceMeanFieldELBO(CompiledELBO, TraceMeanField_ELBO):
    """TraceMeanField_ELBO, compiled: E_q log p(x|z) - KL(q || p), the KL in closed form where known."""

    def _particle(self, model_trace, guide_trace):
        _, surrogate = TraceMeanField_ELBO._differentiable_loss_particle(self, model_trace, guide_trace)
        return surrogate.detach(), surrogate
