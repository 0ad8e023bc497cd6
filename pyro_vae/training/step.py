"""One SVI step: what ``pyro.infer.SVI.step`` does, ``elbo.loss_and_grads(model, guide, ...)`` then an
optimiser step, with one ``torch.optim`` optimiser over the model's parameters; over micro-batches,
their gradients accumulated (and averaged over torchrun's ranks) before the one optimiser step."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import torch


def svi_step(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    elbo: pyro.infer.ELBO,
    optimizer: torch.optim.Optimizer,
    *args: Any,
    validate: bool = False,
    max_grad_norm: float = 0.0,
    **kwargs: Any,
) -> float:
    """One SVI step, ``pyro.infer.SVI.step``'s arithmetic: ``elbo.loss_and_grads(model, guide, *args,
    **kwargs)`` fills the gradients, one ``torch.optim`` step applies them. Any model/guide pair and
    any ``pyro.infer.ELBO`` work (the optimiser must hold their parameters). Pyro's validation runs
    only if asked (the loop asks on its first step); ``max_grad_norm > 0`` clips the gradients'
    total norm to it. Returns the loss; a non-finite loss is not applied."""
    return accumulated_step(
        model, guide, elbo, optimizer, [args], validate=validate, max_grad_norm=max_grad_norm, **kwargs
    )[0]


def accumulated_step(
    model,
    guide,
    elbo,
    optimizer,
    parts,
    seeds=None,
    average=None,
    stop=False,
    validate=False,
    max_grad_norm=0.0,
    **kwargs,
):
    """One SVI step over micro-batches: ``elbo.loss_and_grads`` on each tuple of arguments in
    ``parts`` (with ``torch.manual_seed(seeds[i])`` first, if given) accumulates the gradients;
    ``average(loss, stop)`` (a ``distributed.GradientAverager``) averages them and the loss over the
    micro-batches of every rank; then one optimiser step. A part that is a dict is passed as keyword
    arguments. Returns (loss, stop: any rank's flag)."""
    optimizer.zero_grad(set_to_none=True)
    loss = 0.0
    for i, part in enumerate(parts):
        args, extra = ((), part) if isinstance(part, dict) else (part, {})
        if seeds is not None:
            torch.manual_seed(seeds[i])
        with pyro.validation_enabled(validate):
            loss += elbo.loss_and_grads(model, guide, *args, **extra, **kwargs)
    if average is not None:
        loss, stop = average(loss, stop)
    if math.isfinite(loss):
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_grad_norm)
        optimizer.step()
    return loss, stop


def split_inputs(inputs, parts):
    """Keyword arguments for ``parts`` micro-batches: every tensor cut into ``parts`` pieces along its
    first dimension (as even as its length allows), other values repeated."""
    pieces = {k: v.tensor_split(parts) if torch.is_tensor(v) else [v] * parts for k, v in inputs.items()}
    return [{k: v[i] for k, v in pieces.items()} for i in range(parts)]
