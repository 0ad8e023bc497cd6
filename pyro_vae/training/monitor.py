"""Watching the training loss for divergence that is not (yet) NaN.

The running level is an exponential moving average of the loss per data point,
m_t = m_{t-1} + (loss_t - m_{t-1}) / span, starting at the first loss (the model at its
initialisation, a natural scale). The run has diverged when the level rises above the best level
seen so far (the initial one included) by more than ``factor * max(|best|, floor)`` nats: with
the defaults, a level of 300 after a best of 100, where healthy training (KL warm-up included)
moves the level by tens of nats, and one bad batch moves it by a fiftieth of its loss. A warning
says so once per run (not in the first ``warmup`` steps); training goes on.
"""

import warnings

from ..errors import PyroVAEWarning


class DivergenceWarning(PyroVAEWarning):
    """The training loss has risen far above its best running level."""


class DivergenceMonitor:
    def __init__(self, span=50, factor=2.0, floor=10.0, warmup=5):
        self.span, self.factor, self.floor, self.warmup = span, factor, floor, warmup
        self.level, self.best, self.steps, self.warned = None, None, 0, False

    def update(self, loss, where=""):
        """Feed the loss per data point of one step; returns True the first time divergence is seen."""
        self.steps += 1
        self.level = loss if self.level is None else self.level + (loss - self.level) / self.span
        self.best = self.level if self.best is None else min(self.best, self.level)
        if (
            self.steps < self.warmup
            or self.warned
            or self.level <= self.best + self.factor * max(abs(self.best), self.floor)
        ):
            return False
        self.warned = True
        warnings.warn(
            DivergenceWarning(
                f"the training loss is diverging{where}: its running level is {self.level:.4g} nats per point, "
                f"against a best of {self.best:.4g}. Lower train.optimizer.lr (resume from the last checkpoint "
                "with --set train.optimizer.lr=...), or check the likelihood's scale"
            ),
            stacklevel=2,
        )
        return True
