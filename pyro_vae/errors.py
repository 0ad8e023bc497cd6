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


class RunFolderError(PyroVAEError, OSError):
    """A run folder cannot be created, written or read (a file in the way, no permission, ...)."""


class RunLockedError(RunFolderError):
    """Another process holds the run folder's lock: one writer per run folder."""


class UsageError(PyroVAEError, ValueError):
    """A command-line argument or a function argument is invalid."""


class PyroVAEWarning(UserWarning):
    """Something worth knowing that does not stop the work (a transposed array, a diverging loss, ...)."""
