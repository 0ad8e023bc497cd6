"""Optimisers by name: plain ``torch.optim`` classes over the VAE's parameters.

One torch optimiser steps all parameters at once (``pyro.optim.Adam`` keeps one per
parameter); gradients come from the Pyro estimator (``elbo.loss_and_grads``). Adam and AdamW
use torch's fused kernels by default (one pass over each parameter, on the CPU as on CUDA;
about 1 ms less per MNIST step here than the per-tensor loop torch picks by default).
"""

import torch

from ..checks import number, positive
from ..errors import ConfigError
from ..registry import Registry

#: the optimisers by their config name (``train.optimizer``)
OPTIMIZERS = Registry("train.optimizer", context=("params",))


def _lr(lr):
    return positive("train.optimizer.lr", lr, hint=": try --set train.optimizer.lr=1e-3")


def _fused(params, fused):
    """torch's fused kernel where it has one for these parameters (floating point, on the CPU or CUDA)."""
    if not isinstance(fused, bool):
        raise ConfigError(f"train.optimizer.fused must be true or false, got {fused!r}")
    return fused and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


@OPTIMIZERS.register("adam")
def adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, fused=True):
    params = list(params)
    return torch.optim.Adam(
        params, lr=_lr(lr), betas=tuple(betas), eps=eps, weight_decay=weight_decay, fused=_fused(params, fused) or None
    )


@OPTIMIZERS.register("adamw")
def adamw(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, fused=True):
    params = list(params)
    return torch.optim.AdamW(
        params, lr=_lr(lr), betas=tuple(betas), eps=eps, weight_decay=weight_decay, fused=_fused(params, fused) or None
    )


@OPTIMIZERS.register("sgd")
def sgd(params, lr=1e-2, momentum=0.0, nesterov=False, weight_decay=0.0):
    return torch.optim.SGD(params, lr=_lr(lr), momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


# -- learning-rate schedules (train.lr_schedule) ---------------------------------------------
#: the learning-rate schedules by their config name (``train.lr_schedule``)
LR_SCHEDULES = Registry("train.lr_schedule", context=("optimizer", "steps_per_epoch", "total_epochs"))
EVERY = ("step", "epoch")


class LRSchedule:
    """A ``torch.optim.lr_scheduler`` stepped after every optimiser step or at every epoch end;
    its state goes into the checkpoint, so a resumed run continues the schedule exactly."""

    def __init__(self, scheduler, every):
        if every not in EVERY:
            raise ConfigError(f"train.lr_schedule.every must be \"step\" or \"epoch\", got {every!r}")
        self.scheduler, self.every = scheduler, every

    def after(self, unit):
        if unit == self.every:
            self.scheduler.step()

    def state_dict(self):
        return self.scheduler.state_dict()

    def load_state_dict(self, state):
        self.scheduler.load_state_dict(state)


def _units(every, steps_per_epoch, epochs):
    """How many times a schedule stepped every ``every`` is stepped over ``epochs`` epochs."""
    return max(1, round(epochs * (steps_per_epoch if every == "step" else 1)))


@LR_SCHEDULES.register("none")
def no_schedule(optimizer, steps_per_epoch, total_epochs):
    return None


@LR_SCHEDULES.register("step")
def step_schedule(optimizer, steps_per_epoch, total_epochs, epochs=10.0, gamma=0.5, every="epoch"):
    """lr * gamma^floor(t / T), T = ``epochs`` epochs (StepLR)."""
    size = _units(every, steps_per_epoch, positive("train.lr_schedule.epochs", epochs))
    gamma = number("train.lr_schedule.gamma", gamma, low=0, high=1, strict=True)
    return LRSchedule(torch.optim.lr_scheduler.StepLR(optimizer, step_size=size, gamma=gamma), every)


@LR_SCHEDULES.register("exponential")
def exponential_schedule(optimizer, steps_per_epoch, total_epochs, gamma=0.9, every="epoch"):
    """lr * gamma^t, t counted in ``every`` units (ExponentialLR)."""
    gamma = number("train.lr_schedule.gamma", gamma, low=0, high=1, strict=True)
    return LRSchedule(torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma), every)


@LR_SCHEDULES.register("cosine")
def cosine_schedule(optimizer, steps_per_epoch, total_epochs, min_lr=0.0, every="step"):
    """Cosine annealing from lr to ``min_lr`` over the whole run (CosineAnnealingLR)."""
    min_lr = number("train.lr_schedule.min_lr", min_lr, low=0)
    lr = min(group["lr"] for group in optimizer.param_groups)
    if min_lr > lr:
        raise ConfigError(
            f"train.lr_schedule.min_lr = {min_lr:g} is above the learning rate {lr:g}: cosine annealing would "
            "raise the rate over the run; set min_lr below train.optimizer.lr"
        )
    t_max = _units(every, steps_per_epoch, total_epochs)
    return LRSchedule(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=min_lr), every)


@LR_SCHEDULES.register("burda")
def burda_schedule(optimizer, steps_per_epoch, total_epochs, stages=8, every="step"):
    """Burda et al. 2016's schedule, fitted to the run: stage i = 0..stages-1 takes a 3^i share of it at
    lr * 10^(-i / (stages - 1)). With 8 stages and 3280 epochs that is the paper's 3^i epochs at
    1e-3 * 10^(-i/7); a shorter run keeps the same shape, cut proportionally."""
    stages = positive("train.lr_schedule.stages", stages, integer=True)
    total = _units(every, steps_per_epoch, total_epochs)
    shares = [3**i for i in range(stages)]
    ends = [total * sum(shares[: i + 1]) / sum(shares) for i in range(stages)]
    decay = 1.0 / max(1, stages - 1)

    def factor(t):
        stage = next((i for i, end in enumerate(ends) if t < end), stages - 1)
        return 10.0 ** (-stage * decay)

    return LRSchedule(torch.optim.lr_scheduler.LambdaLR(optimizer, factor), every)
