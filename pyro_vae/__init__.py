"""pyro-vae: variational autoencoders as Pyro model/guide pairs."""

from .checkpoint import load_checkpoint, save_checkpoint
from .builder import build_elbo, build_optimizer, build_vae, prepare
from .config import DEFAULTS, load_config, validate
from .data import DATASETS, Data, load_data
from .errors import (CheckpointError, ConfigError, DataError, PyroVAEError, PyroVAEWarning, RunExistsError,
                     RunFolderError, RunLockedError, TrainingError, TrainingInterrupted, UsageError)
from .callbacks import LOGGERS, Callback
from .estimators import ESTIMATORS
from .evaluate import evaluate, iwae_log_px, test_elbo
from .likelihoods import LIKELIHOODS, Likelihood
from .model import VAE
from .networks import DECODERS, ENCODERS, Decoder, Encoder
from .optim import LR_SCHEDULES, OPTIMIZERS
from .schedules import SCHEDULES, Schedule
from .posteriors import POSTERIORS, Posterior
from .priors import PRIORS, Prior
from .run import RunFolder
from .run import load_model, load_run
from .train import svi_step, train

__version__ = "0.1.0"

__all__ = [
    "VAE", "train", "svi_step", "prepare", "load_run", "load_model", "RunFolder", "evaluate", "iwae_log_px", "test_elbo", "load_config", "validate",
    "build_vae", "build_elbo", "build_optimizer", "load_data", "Data", "save_checkpoint", "load_checkpoint",
    "DEFAULTS", "PRIORS", "LIKELIHOODS", "POSTERIORS", "ENCODERS", "DECODERS", "ESTIMATORS", "OPTIMIZERS",
    "DATASETS", "SCHEDULES", "LR_SCHEDULES", "LOGGERS", "Prior", "Likelihood", "Posterior", "Encoder", "Decoder",
    "Schedule", "Callback", "PyroVAEError", "ConfigError", "DataError", "CheckpointError", "TrainingError", "RunExistsError",
    "TrainingInterrupted", "RunFolderError", "RunLockedError", "UsageError", "PyroVAEWarning",
]
