"""Watching the training loss for divergence that is not (yet) NaN.

The running level is an exponential moving average of the loss per data point,
m_t = m_{t-1} + (loss_t - m_{t-1}) / span. The run has diverged when the level rises
above the best level seen so far by more than ``factor * max(|best|, floor)`` nats: with the
defaults, a level of 300 after a best of 100, where healthy training (KL warm-up included) moves
the level by tens of nats. A warning says so once per run; training goes on.
"""

import warnings

from .errors import PyroVAEWarning


class DivergenceWarning(PyroVAEWarning):
    """The training loss has risen far above its best running level."""


class DivergenceMonitor:
    def __init__(self, span=50, factor=2.0, floor=10.0, warmup=None):
        self.span, self.factor, self.floor = span, factor, floor
        self.warmup = span if warmup is None else warmup  # steps before the level counts
        self.level, self.best, self.steps, self.warned = None, None, 0, False

    def update(self, loss, where=""):
        """Feed the loss per data point of one step; returns True the first time divergence is seen."""
        self.steps += 1
        self.level = loss if self.level is None else self.level + (loss - self.level) / self.span
        if self.steps < self.warmup:
            return False
        self.best = self.level if self.best is None else min(self.best, self.level)
        if self.warned or self.level <= self.best + self.factor * max(abs(self.best), self.floor):
            return False
        self.warned = True
        warnings.warn(DivergenceWarning(
            f"the training loss is diverging{where}: its running level is {self.level:.4g} nats per point, "
            f"against a best of {self.best:.4g}. Lower train.optimizer.lr (resume from the last checkpoint "
            "with --set train.optimizer.lr=...), or check the likelihood's scale"), stacklevel=2)
        return True
