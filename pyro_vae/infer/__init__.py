"""Inference, model-agnostic (nothing here imports ``models``): ELBO estimators by name (Pyro's and the
project's objectives, compiled steps), gradient diagnostics, KL-weight schedules, optimisers and
learning-rate schedules."""

from .estimators import ESTIMATORS, check_compatible
from .optim import LR_SCHEDULES, OPTIMIZERS
from .schedules import SCHEDULES, Schedule

__all__ = ["ESTIMATORS", "LR_SCHEDULES", "OPTIMIZERS", "SCHEDULES", "Schedule", "check_compatible"]
