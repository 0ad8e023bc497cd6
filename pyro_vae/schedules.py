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

from .errors import ConfigError
from .registry import Registry

SCHEDULES = Registry("train.kl_warmup")


@SCHEDULES.register("none")
class Constant:
    def __init__(self, steps_per_epoch, total_steps):
        pass

    def __call__(self, step):
        return 1.0


@SCHEDULES.register("linear")
class LinearWarmup:
    def __init__(self, steps_per_epoch, total_steps, epochs=10):
        if not isinstance(epochs, (int, float)) or isinstance(epochs, bool) or epochs <= 0:
            raise ConfigError(f"train.kl_warmup.epochs must be a positive number, got {epochs!r}")
        self.steps = max(1, round(epochs * steps_per_epoch))

    def __call__(self, step):
        return min(1.0, (step + 1) / self.steps)


@SCHEDULES.register("cyclical")
class CyclicalWarmup:
    def __init__(self, steps_per_epoch, total_steps, cycles=4, ratio=0.5):
        if not isinstance(cycles, int) or isinstance(cycles, bool) or cycles < 1:
            raise ConfigError(f"train.kl_warmup.cycles must be an integer >= 1, got {cycles!r}")
        if not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise ConfigError(f"train.kl_warmup.ratio must be in (0, 1], got {ratio!r}")
        self.period = total_steps / cycles
        self.ratio = float(ratio)

    def __call__(self, step):
        tau = (step % self.period) / self.period
        return min(1.0, tau / self.ratio)


class DualAscent:
    """beta <- clip(beta * exp(lr * (rate - target)), 1e-3, 1e3)."""

    def __init__(self, target, lr=0.01, update_every=10, beta=1.0):
        if not (isinstance(target, (int, float)) and target > 0 and math.isfinite(target)):
            raise ConfigError(f"train.target_rate must be a positive number of nats, got {target!r}")
        self.target, self.lr, self.update_every, self.beta = float(target), float(lr), int(update_every), float(beta)

    def update(self, rate):
        """One dual step, in log space so that no rate can overflow it."""
        log_beta = math.log(self.beta) + self.lr * (rate - self.target)
        self.beta = math.exp(min(math.log(1e3), max(math.log(1e-3), log_beta)))
        return self.beta
