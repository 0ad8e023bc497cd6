"""Pyro's JIT-compiled ELBOs, compiled once per model instead of once per step.

``pyro.infer.JitTrace_ELBO`` and ``JitTraceMeanField_ELBO`` trace the ELBO (model and guide
included) with ``torch.jit.trace`` through ``pyro.ops.jit.trace``, so a step runs one graph
with no Python or poutine overhead. In Pyro 1.9.2 they recompile far too often for a loop like ours:

- ``JitTraceMeanField_ELBO.differentiable_loss`` looks for ``self._loss_and_surrogate_loss`` but
  stores ``self._differentiable_loss``, so it builds and traces a new graph on every call
  (``tests/infer/test_compiled.py`` fails the day Pyro fixes it, so this workaround can go);
- both key their graphs on ``id(model)``; ``vae.model`` is a new bound-method object each time
  it is read, so the key changes whenever CPython hands out a new address;
- a traced graph freezes every Python number it read, such as a KL weight ``beta``.

``CompiledELBO`` keeps one traced graph per (model, guide, argument shapes and
dtypes, the other arguments): tensor arguments are graph inputs, and so is every float keyword
argument (``beta=...``), passed as a 0-dim tensor, so a KL warm-up reaches the graph; ints,
strings and the like are constants of the graph. It works for any model/guide pair. The loss
value and gradients equal the uncompiled estimator's draw for draw (the random state is restored
after tracing, which runs the model twice). Calls made with Pyro's validation on run
uncompiled, so its checks still run (the training loop validates its first step).

The graphs are ``torch.jit.trace``d here, not by ``pyro.ops.jit.trace``: ``_Traced`` does what Pyro's
``CompiledFunction`` does (find the parameters with a ``param_only`` trace, make their unconstrained
tensors graph inputs, replay ``pyro.param`` values through ``poutine.replay``) on public Pyro API
only, and a later call feeds the param store's tensors straight in, with no effect calls (about
0.4 ms a step here). A model that ``torch.jit.trace`` cannot follow, or a torch without it, runs
uncompiled with one warning.

A training step (``loss_and_grads``) is one graph more: the tracer also records the backward pass
that ``torch.autograd.grad`` runs, so the step runs forward and backward in one interpreter call,
with no autograd graph built or walked, and adds the gradients to ``.grad`` as autograd would
(the default MNIST step: 1.04-1.08x hand-written PyTorch with fused Adam). A backward formula can
read a tensor made inside one traced op (``F.linear``'s W^T, hence ``networks.Linear``), which the
graph would replay as a constant; so the graph is checked once against autograd at moved
parameters, reordered data and another draw, and where torch refuses it or the check fails the
step runs the loss graph and ``backward()``, the same numbers. Hooks on parameters' gradients do
not run in a one-graph step: use the uncompiled estimator (``meanfield``, ``trace``) for them.
"""

import contextlib
import functools
import warnings

import pyro
import torch
from pyro import poutine
from pyro.infer.util import is_validation_enabled

_EAGER = object()  # a key whose graph could not be traced: run uncompiled


def _ident(fn):
    """A stable identity for a function or bound method (``vae.model`` is a new object each time)."""
    owner = getattr(fn, "__self__", None)
    return (getattr(fn, "__func__", fn), id(owner) if owner is not None else None)


def _is_input(value):
    """Tensors and floats enter a compiled graph as inputs; anything else is a constant of it."""
    return torch.is_tensor(value) or isinstance(value, float)


def _arg_key(value):
    """What a graph is specialised on for one argument: a tensor's shape, dtype and device; that it is
    a float (both inputs); anything else by its type and value (a constant of the graph)."""
    if isinstance(value, torch.Tensor):
        return value.shape, value.dtype, value.device
    if isinstance(value, float):
        return float
    return type(value), value


class _ParamsGone(Exception):
    pass


class _Uncompiled(Exception):
    """This call's graph cannot be traced (or, with gradients, failed its check): run it the other way."""


def _other(value):
    """Another valid input of the same kind, to check a graph on: the points in reverse order, a float moved."""
    if value.dim() == 0:
        return value * 0.5 + 0.25 if value.is_floating_point() else value
    return value.flip(0)


def _close(got, expected):
    return got.shape == expected.shape and torch.allclose(
        got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()) if expected.numel() else 0.0
    )


class _Traced:
    """``fn(*inputs)`` (a loss reading Pyro parameters) as one ``torch.jit.trace`` graph whose inputs
    are the parameters' unconstrained tensors, then ``inputs``. ``trace`` records it (running ``fn``
    twice: once to find the parameters, once under the tracer); a call runs the graph with the
    param store's current tensors.

    With ``grads``, the graph returns (loss, d loss / d theta for each parameter the loss uses): the
    tracer records the backward pass that ``torch.autograd.grad`` runs, so a step is one graph with
    no autograd bookkeeping. A backward formula that reads a tensor made inside a composite op
    (``F.linear``'s W^T) would replay a stale copy of it, so the traced graph is checked once against
    the eager function at moved parameters, other inputs and another draw."""

    def __init__(self, fn, ignore_warnings=True, jit_options=None, keyword_inputs=(), grads=False):
        self.fn, self.ignore_warnings, self.jit_options = fn, ignore_warnings, dict(jit_options or {})
        self.keyword_inputs = keyword_inputs  # the float keyword arguments that follow ``inputs``, by name
        self.grads = grads
        self.names, self.graph, self.wrt = None, None, None  # wrt: the parameters (indices) the gradients are for

    def _function(self, names):
        def with_params(*params_and_inputs):
            # pyro.param transforms the store's tensor, which is the graph input, and every
            # pyro.param call inside fn replays these values
            constrained = {name: pyro.param(name) for name in names}
            loss = poutine.replay(self.fn, params=constrained)(*params_and_inputs[len(names) :])
            if not self.grads:
                return loss
            params = params_and_inputs[: len(names)]
            wrt = [i for i, p in enumerate(params) if p.requires_grad]
            if not wrt or not loss.requires_grad:
                raise _Uncompiled("no parameter to differentiate")
            grads = torch.autograd.grad(loss, [params[i] for i in wrt], allow_unused=True)
            self.wrt = [i for i, g in zip(wrt, grads) if g is not None]
            return (loss.detach(), *(g for g in grads if g is not None))

        return pyro.util.ignore_jit_warnings()(with_params) if self.ignore_warnings else with_params

    def trace(self, *inputs):
        with poutine.block(), poutine.trace(param_only=True) as capture:
            self.fn(*inputs)
        names = sorted(capture.trace.nodes)
        params = tuple(pyro.param(name).unconstrained() for name in names)
        fn = self._function(names)
        options = {"check_trace": False, **self.jit_options}
        options.pop("time_compilation", None)  # Pyro's own option, not torch's
        with pyro.validation_enabled(False), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.trace.* is deprecated")
            self.graph = torch.jit.trace(fn, params + tuple(inputs), **options)
            if self.grads:
                self._check(fn, params, inputs)
        self.names = names

    def _check(self, fn, params, inputs):
        """Raise ``_Uncompiled`` unless the graph equals ``fn`` at other values of everything it reads."""
        if not any(a.dim() and a.shape[0] > 1 for a in inputs):  # nothing to reorder: the data are unchecked
            raise _Uncompiled("a batch of one point")
        others = [_other(a) for a in inputs]
        saved, rng = [p.detach().clone() for p in params], pyro.util.get_rng_state()
        noise = torch.Generator().manual_seed(0)
        try:
            with torch.no_grad():
                for p in params:
                    step = torch.randn(p.shape, generator=noise, dtype=p.dtype).to(p.device)
                    p.add_(step * 0.01 * (p.abs().mean() + 1e-3))
            state = pyro.util.get_rng_state()
            expected = fn(*params, *others)
            pyro.util.set_rng_state(state)
            with torch.no_grad():
                got = self.graph(*params, *others)
        finally:
            with torch.no_grad():
                for p, value in zip(params, saved):
                    p.copy_(value)
            pyro.util.set_rng_state(rng)
        if len(got) != len(expected) or not all(_close(a, b) for a, b in zip(got, expected)):
            raise _Uncompiled("the traced backward pass differs from autograd's")

    def params(self):
        store = dict(pyro.get_param_store().named_parameters())  # name -> unconstrained tensor
        try:
            return [store[name] for name in self.names]
        except KeyError:
            raise _ParamsGone from None


class CompiledELBO:
    """Mixin before an ELBO class: its ``differentiable_loss`` compiled once per model/guide/shape,
    and its ``loss_and_grads`` as one graph of the forward and backward pass (else, for a model
    whose backward cannot be traced, ``differentiable_loss(...).backward()``). The class provides
    ``_eager_loss``, or ``_particle`` (one particle's value and surrogate) for Pyro's ELBOs, whose
    particles come from ``_get_traces``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("ignore_jit_warnings", True)
        super().__init__(*args, **kwargs)
        self._graphs, self._scalars = {}, {}
        self._steps = {}  # how compiled training steps ran (in words) -> why not as one graph (None: it was)

    @property
    def step_path(self):
        """How this estimator's training steps ran, in words (None before a compiled step): "one graph
        (forward and backward)", or "compiled loss + autograd backward (why)", or "uncompiled (why)"."""
        if not self._steps:
            return None
        return "; ".join(kind + (f" ({why})" if why else "") for kind, why in self._steps.items())

    def _scalar(self, value, device):
        """A float as a 0-dim tensor graph input; the same tensor again for the same value (a constant
        beta makes no new tensor each step)."""
        if torch.is_tensor(value):
            return value
        key = (value, device)
        tensor = self._scalars.get(key)
        if tensor is None:
            if len(self._scalars) > 16:  # an annealed beta: a new value every step
                self._scalars.clear()
            tensor = self._scalars[key] = torch.tensor(value, device=device)
        return tensor

    def _particle(self, model_trace, guide_trace):
        """(loss value, surrogate loss) of one particle, tensors (no ``.item()`` under tracing); value None:
        the surrogate's value is the loss (no score-function terms), so the graph carries no detach arithmetic."""
        raise NotImplementedError

    def _traced_loss(self, model, guide, layout, constants, fixed, names, *inputs):
        """The eager loss with the arguments put back: ``inputs`` are the tensor and float positional
        arguments (``layout`` says where each goes), then the float keyword arguments ``names``."""
        inputs, constants = iter(inputs), iter(constants)
        args = [next(inputs) if is_input else next(constants) for is_input in layout]
        return self._eager_loss(model, guide, *args, **fixed, **dict(zip(names, inputs)))

    def _graph(self, model, guide, args, kwargs, grads):
        """(key, graph) for this call, the graph made (untraced) on first sight; None: run it uncompiled."""
        if is_validation_enabled() or torch.jit.is_tracing():
            return None
        try:
            key = (
                grads,
                _ident(model),
                _ident(guide),
                tuple(map(_arg_key, args)),
                tuple(sorted((k, _arg_key(v)) for k, v in kwargs.items())),
            )
            graph = self._graphs.get(key)
        except TypeError:  # an argument that cannot be a key (a list, a dict): nothing to compile against
            return None
        if graph is None:
            layout = tuple(_is_input(a) for a in args)
            constants = tuple(a for a in args if not _is_input(a))
            names = tuple(sorted(k for k, v in kwargs.items() if _is_input(v)))
            fixed = {k: v for k, v in kwargs.items() if k not in names}
            fn = functools.partial(self._traced_loss, model, guide, layout, constants, fixed, names)
            graph = self._graphs[key] = _Traced(fn, self.ignore_jit_warnings, self.jit_options, names, grads)
        return None if graph is _EAGER else (key, graph)

    def _run(self, key, graph, args, kwargs):
        """(the graph's outputs, the parameters it read); raises ``_Uncompiled`` if it cannot be traced."""
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
        inputs = [a if isinstance(a, torch.Tensor) else self._scalar(a, device) for a in args if _is_input(a)]
        inputs += [self._scalar(kwargs[k], device) for k in graph.keyword_inputs]
        first = graph.graph is None
        rng = pyro.util.get_rng_state() if first else None
        try:
            # run the traced graph as recorded: the graph executor's autodiff pass would replace
            # ATen's backward kernels with slower symbolic ones (softplus: 5 passes instead of 1)
            with torch.jit.optimized_execution(False):
                if first:
                    # tracing runs the model twice; put the random state back afterwards, so the
                    # compiled step draws exactly what the uncompiled one would (resumed runs stay exact)
                    graph.trace(*inputs)
                    pyro.util.set_rng_state(rng)
                params = graph.params()
                # a step's gradients are outputs of its graph: no autograd graph to record
                with torch.no_grad() if graph.grads else contextlib.nullcontext():
                    return graph.graph(*params, *inputs), params
        except _ParamsGone:  # the param store was cleared: trace again, which registers them anew
            del self._graphs[key]
            raise
        except Exception as e:  # a model torch.jit.trace cannot follow, or a torch without it
            if not first:  # it had compiled: a real error, not a tracing limit
                raise
            if not graph.grads:  # the one-graph step falls back to this graph and autograd, silently
                warnings.warn(
                    f"{type(self).__name__}: could not compile this model ({type(e).__name__}: {e}); "
                    "running it uncompiled",
                    RuntimeWarning,
                    stacklevel=3,
                )
            self._graphs[key] = _EAGER
            pyro.util.set_rng_state(rng)
            raise _Uncompiled from e

    def differentiable_loss(self, model, guide, *args, **kwargs):
        found = self._graph(model, guide, args, kwargs, grads=False)
        if found is not None:
            try:
                return self._run(*found, args, kwargs)[0]
            except _ParamsGone:
                return self.differentiable_loss(model, guide, *args, **kwargs)
            except _Uncompiled:
                pass
        return self._eager_loss(model, guide, *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """The loss; its gradients added to the parameters' ``.grad``, as ``loss.backward()`` would."""
        found, refused = self._graph(model, guide, args, kwargs, grads=True), None
        if found is not None:
            try:
                (loss, *grads), params = self._run(*found, args, kwargs)
            except _ParamsGone:
                return self.loss_and_grads(model, guide, *args, **kwargs)
            except _Uncompiled as e:  # refused for good (the key is now _EAGER): this happens once
                refused = _reason(e)
            else:
                _accumulate([params[i] for i in found[1].wrt], grads, [a for a in args if isinstance(a, torch.Tensor)])
                self._steps.setdefault("one graph (forward and backward)", None)
                return loss.item()
        loss = super().loss_and_grads(model, guide, *args, **kwargs)
        if refused is not None:
            compiled = isinstance(self._graphs.get((False, *found[0][1:])), _Traced)
            self._steps.setdefault("compiled loss + autograd backward" if compiled else "uncompiled", refused)
        return loss

    def _eager_loss(self, model, guide, *args, **kwargs):
        """The loss, uncompiled: its value is the estimate, its gradient the estimator's."""
        loss = None
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            value, surrogate = self._particle(model_trace, guide_trace)
            particle = surrogate if value is None else value + (surrogate - surrogate.detach())
            loss = particle if loss is None else loss + particle
        return loss if self.num_particles == 1 else loss / self.num_particles


#: torch's refusals of a traced backward pass, in words
_REFUSALS = {
    "Cannot insert a Tensor that requires grad as a constant": "a backward formula reads a tensor made inside an op, such as tanh's output, F.linear's weight transpose or einsum's reshaped operands",
    "unsupported argument type in the JIT tracer": "the tracer cannot record this backward pass (convolutions)",
}


def _reason(e):
    """Why a graph was refused, in a few words: our own reason, a known refusal of torch's in words,
    or torch's first line."""
    cause = e.__cause__ if e.__cause__ is not None else e
    if isinstance(cause, _Uncompiled):
        return str(cause) or "refused"
    line = (str(cause).strip().splitlines() or [""])[0]
    known = [words for text, words in _REFUSALS.items() if text in line]
    return known[0] if known else f"{type(cause).__name__}: {line[:120]}{'...' if len(line) > 120 else ''}"


def _accumulate(params, grads, inputs=()):
    """p.grad += g as autograd's AccumulateGrad does it: g itself where p has no gradient yet (a copy
    in p's layout if its strides differ, or if a parameter, an input or another gradient holds its memory)."""
    held = {t.untyped_storage().data_ptr() for t in (*params, *inputs)}
    for p, g in zip(params, grads):
        if g.stride() != p.stride() or g.untyped_storage().data_ptr() in held:
            g = torch.empty_like(p).copy_(g)
        held.add(g.untyped_storage().data_ptr())
        if p.grad is None:
            p.grad = g
        else:
            p.grad.add_(g)
