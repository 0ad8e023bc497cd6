"""KL weight: beta(t) = train.beta * warmup(t), and the constrained (target-rate) mode.

Warm-up schedules (``train.kl_warmup``), as functions of the global step t (0-based) out of T steps:
- ``none``: 1.
- ``linear`` (``epochs``): min(1, (t + 1) / (epochs * steps_per_epoch)).
- ``cyclical`` (``cycles``, ``ratio``; Fu et al. 2019): T is cut into ``cycles`` equal cycles; with
  tau the position in the current cycle in [0, 1), the weight is tau / ratio while tau < ratio, then 1.

Constrained mode (``train.target_rate = delta``): maximise E_q log p(x|z) subject to KL(q || p) <= delta
by dual ascent on the multiplier, beta <- beta * exp(lr * (rate - delta)), clipped to [1e-3, 1e3],
with the rate measured on the training batch every ``update_every`` steps.
"""

import math

from ..checks import number, positive
from ..registry import Registry

#: the KL warm-up schedules by their config name (``train.kl_warmup``)
SCHEDULES = Registry("train.kl_warmup", context=("steps_per_epoch", "total_steps"))


class Schedule:
    """The base of KL warm-up schedules. A subclass provides ``__init__(steps_per_epoch, total_steps, **params)``
    and ``__call__(step)``: the multiplier of ``train.beta`` at the 0-based global step, a number >= 0."""

    def __init__(self, steps_per_epoch, total_steps):
        pass

    def __call__(self, step):
        raise NotImplementedError


@SCHEDULES.register("none")
class Constant(Schedule):
    def __init__(self, steps_per_epoch, total_steps):
        pass

    def __call__(self, step):
        return 1.0


@SCHEDULES.register("linear")
class LinearWarmup(Schedule):
    def __init__(self, steps_per_epoch, total_steps, epochs=10):
        epochs = positive("train.kl_warmup.epochs", epochs)
        self.steps = max(1, round(epochs * steps_per_epoch))

    def __call__(self, step):
        return min(1.0, (step + 1) / self.steps)


@SCHEDULES.register("cyclical")
class CyclicalWarmup(Schedule):
    def __init__(self, steps_per_epoch, total_steps, cycles=4, ratio=0.5):
        cycles = positive("train.kl_warmup.cycles", cycles, integer=True)
        self.ratio = number("train.kl_warmup.ratio", ratio, low=0, high=1, strict=True)
        self.period = total_steps / cycles

    def __call__(self, step):
        tau = (step % self.period) / self.period
        return min(1.0, tau / self.ratio)


class DualAscent:
    """beta <- clip(beta * exp(lr * (rate - target)), 1e-3, 1e3)."""

    def __init__(self, target, lr=0.01, update_every=10, beta=1.0):
        self.target = positive("train.target_rate", target, hint=" (nats)")
        self.lr, self.update_every, self.beta = positive("train.beta_lr", lr), int(update_every), float(beta)

    def update(self, rate):
        """One dual step, in log space so that no rate can overflow it."""
        log_beta = math.log(self.beta) + self.lr * (rate - self.target)
        self.beta = math.exp(min(math.log(1e3), max(math.log(1e-3), log_beta)))
        return self.beta
