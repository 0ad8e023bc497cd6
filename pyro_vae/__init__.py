"""pyro-vae: variational autoencoders as Pyro model/guide pairs.

The package in layers, each importing only from the ones above it in this list (``tests/test_layers.py``):
the ground (``errors``, ``checks``, ``files``, ``registry``, ``work``, ``devices``); ``nn`` (components);
``data``; ``models`` (families); ``infer`` (estimators, optimisers; never ``models``); ``evaluation``;
``config`` (validate, load, plugins, build); ``training``; ``studies`` (compare, sweep); ``cli``.
This module re-exports the public API.
"""

from .errors import (CheckpointError, ConfigError, DataError, PyroVAEError, PyroVAEWarning, RunExistsError,
                     RunFolderError, RunLockedError, TrainingError, TrainingInterrupted, UsageError)
from .nn import DECODERS, ENCODERS, LIKELIHOODS, POSTERIORS, PRIORS, Decoder, Encoder, Likelihood, Posterior, Prior
from .data import DATASETS, Data, load_data
from .models import FAMILIES, VAE
from .infer import ESTIMATORS, LR_SCHEDULES, OPTIMIZERS, SCHEDULES, Schedule
from .evaluation import evaluate, iwae_log_px, test_elbo
from .config import DEFAULTS, apply_overrides, build_elbo, build_optimizer, build_vae, load_config, prepare, validate
from .config.build import load_config_data
from .training import (LOGGERS, Callback, RunFolder, load_checkpoint, load_model, load_run, save_checkpoint, svi_step,
                       train)
from .training.export import export_model
from .studies.compare import compare
from .studies.sweep import sweep

__version__ = "0.1.0"

__all__ = [
    "VAE", "FAMILIES", "train", "svi_step", "prepare", "load_run", "load_model", "export_model", "RunFolder",
    "evaluate", "iwae_log_px", "test_elbo", "compare", "sweep", "load_config", "apply_overrides", "validate",
    "build_vae", "build_elbo", "build_optimizer", "load_data", "load_config_data", "Data", "save_checkpoint",
    "load_checkpoint", "DEFAULTS", "PRIORS", "LIKELIHOODS", "POSTERIORS", "ENCODERS", "DECODERS", "ESTIMATORS",
    "OPTIMIZERS", "DATASETS", "SCHEDULES", "LR_SCHEDULES", "LOGGERS", "Prior", "Likelihood", "Posterior", "Encoder",
    "Decoder", "Schedule", "Callback", "PyroVAEError", "ConfigError", "DataError", "CheckpointError", "TrainingError",
    "RunExistsError", "TrainingInterrupted", "RunFolderError", "RunLockedError", "UsageError", "PyroVAEWarning",
]
