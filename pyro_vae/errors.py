"""The project's own error types: each message says what went wrong and what to do."""


class PyroVAEError(Exception):
    """Base class of every error pyro-vae raises on purpose."""


class ConfigError(PyroVAEError, ValueError):
    """A config value, section, key or ``kind`` is invalid."""


class DataError(PyroVAEError, ValueError):
    """A dataset is missing, malformed, or does not fit the model."""


class CheckpointError(PyroVAEError):
    """A checkpoint is missing, corrupt, not ours, or from another architecture."""


class TrainingError(PyroVAEError, RuntimeError):
    """Training cannot go on (for example a non-finite loss)."""


class RunExistsError(PyroVAEError, FileExistsError):
    """A run folder already holds a run and would be overwritten."""


class TrainingInterrupted(PyroVAEError, KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after a checkpoint was saved at the current step."""
