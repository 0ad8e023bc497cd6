"""Optimisers by name: plain ``torch.optim`` classes over the VAE's parameters.

One torch optimiser steps all parameters at once (``pyro.optim.Adam`` keeps one per
parameter); gradients come from the Pyro estimator (``elbo.loss_and_grads``).
"""

import math

import torch

from .errors import ConfigError
from .registry import Registry

OPTIMIZERS = Registry("train.optimizer")


def _lr(lr):
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"train.optimizer.lr must be a positive number, got {lr!r}: try --set train.optimizer.lr=1e-3")
    return float(lr)


@OPTIMIZERS.register("adam")
def adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    return torch.optim.Adam(params, lr=_lr(lr), betas=tuple(betas), eps=eps, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    return torch.optim.AdamW(params, lr=_lr(lr), betas=tuple(betas), eps=eps, weight_decay=weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(params, lr=1e-2, momentum=0.0, nesterov=False, weight_decay=0.0):
    return torch.optim.SGD(params, lr=_lr(lr), momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
