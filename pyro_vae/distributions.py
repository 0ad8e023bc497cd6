"""Distributions that add no operations of their own to a step's graph.

torch's distributions broadcast their parameters in ``__init__`` (``broadcast_tensors``, even for
parameters of one shape) and Pyro's plates ``expand`` every site's distribution to the plate's
batch shape (an ``expand`` per parameter, even to the shape it has). Each is a view in the forward
pass and a node in the backward pass, on every step. ``SameShape`` skips both where the shapes
already agree, which on the default model is every step; other shapes take torch's own path.
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
        if _instance is None and torch.Size(batch_shape) == self.batch_shape:
            return self
        if _instance is None:  # torch's expand refuses a subclass with its own __init__ unless given the instance
            _instance = type(self).__new__(type(self))
        return super().expand(batch_shape, _instance)
