"""Distributions that add no operations of their own to a step's graph.

torch's distributions broadcast their parameters in ``__init__`` (``broadcast_tensors``, even for
parameters of one shape) and Pyro's plates ``expand`` every site's distribution to the plate's
batch shape (an ``expand`` per parameter, even to the shape it has). Each is a view in the forward
pass and a node in the backward pass, on every step. ``SameShape`` skips both where the shapes
already agree, which on the default model is every step; other shapes take torch's own path.
``logsumexp`` and ``log_softmax`` compute what torch's do with a backward pass that a traced
backward can follow (see ``compiled.py``).
"""

import torch


class SameShape:
    """Mixin before a torch distribution class: ``expand`` to the batch shape it has returns the
    distribution itself; ``_init_params(**params)`` sets tensor parameters of one shape as they are
    (no ``broadcast_tensors``) and returns False where they need torch's broadcasting."""

    def _init_params(self, validate_args, **params):
        values = list(params.values())
        if not all(isinstance(v, torch.Tensor) for v in values) or any(v.shape != values[0].shape for v in values):
            return False
        for name, value in params.items():
            setattr(self, name, value)
        torch.distributions.Distribution.__init__(self, values[0].shape, validate_args=validate_args)
        return True

    def expand(self, batch_shape, _instance=None):
        if _instance is None:
            if torch.Size(batch_shape) == self.batch_shape:
                return self
            _instance = type(self).__new__(
                type(self)
            )  # torch's expand refuses a subclass with its own __init__ otherwise
        return super().expand(batch_shape, _instance)


def logsumexp(x, dim=0):
    """log sum_k exp(x_k) along ``dim``. With a gradient to come, as a tree of ``torch.logaddexp``
    (ceil(log2 K) steps), whose backward reads only its inputs: torch.logsumexp's backward reads its
    output, which a traced backward cannot follow (a compiled step would not be one graph). Without
    one, torch.logsumexp (one kernel)."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return torch.logsumexp(x, dim)
    x = x.movedim(dim, 0)
    while x.shape[0] > 1:
        half = x.shape[0] // 2
        pairs = torch.logaddexp(x[:half], x[half : 2 * half])
        x = torch.cat([pairs, x[2 * half :]]) if x.shape[0] % 2 else pairs
    return x[0]


def log_softmax(x, dim=-1):
    """x - log sum exp x along ``dim``: torch's log_softmax, whose backward reads its output, made of ``logsumexp``."""
    return x - logsumexp(x, dim).unsqueeze(dim)
