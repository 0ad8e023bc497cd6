"""pyro-vae: variational autoencoders as Pyro model/guide pairs.

The package in layers, each importing only from the ones above it in this list (``tests/test_layers.py``):
the ground (``errors``, ``checks``, ``files``, ``registry``, ``work``, ``devices``); ``nn`` (components);
``data``; ``models`` (families); ``infer`` (estimators, optimisers; never ``models``); ``evaluation``;
``config`` (validate, load, plugins, build); ``training``; ``studies`` (compare, sweep); ``cli``.
This module re-exports the public API, each name imported when first used.
"""

import importlib
import importlib.util
import sys

#: each public name and the module it lives in; imported on first use (PEP 562), so that
#: ``import pyro_vae.cli`` is quick and a Ctrl-C while torch loads reaches the command's handler
_EXPORTS = {
    **dict.fromkeys(
        [
            "CheckpointError",
            "ConfigError",
            "DataError",
            "PyroVAEError",
            "PyroVAEWarning",
            "RunExistsError",
            "RunFolderError",
            "RunLockedError",
            "TrainingError",
            "TrainingInterrupted",
            "UsageError",
        ],
        "errors",
    ),
    **dict.fromkeys(
        [
            "DECODERS",
            "ENCODERS",
            "LIKELIHOODS",
            "POSTERIORS",
            "PRIORS",
            "Decoder",
            "Encoder",
            "Likelihood",
            "Posterior",
            "Prior",
        ],
        "nn",
    ),
    **dict.fromkeys(["DATASETS", "Data", "load_data"], "data"),
    **dict.fromkeys(["FAMILIES", "VAE"], "models"),
    **dict.fromkeys(["ESTIMATORS", "LR_SCHEDULES", "OPTIMIZERS", "SCHEDULES", "Schedule"], "infer"),
    **dict.fromkeys(["FEATURES", "SAMPLERS", "evaluate", "iwae_log_px", "sample_quality", "test_elbo"], "evaluation"),
    **dict.fromkeys(
        [
            "DEFAULTS",
            "apply_overrides",
            "build_elbo",
            "build_optimizer",
            "build_vae",
            "load_config",
            "prepare",
            "validate",
        ],
        "config",
    ),
    "load_config_data": "config.build",
    **dict.fromkeys(
        [
            "LOGGERS",
            "Callback",
            "RunFolder",
            "load_checkpoint",
            "load_model",
            "load_run",
            "save_checkpoint",
            "svi_step",
            "train",
        ],
        "training",
    ),
    "export_model": "training.export",
    "compare": "studies.compare",
    "sweep": "studies.sweep",
}

__version__ = "0.1.0"

__all__ = list(_EXPORTS)


def __getattr__(name):
    """A public name from its module, or a subpackage (``pyro_vae.training``), imported on first use. A use from
    outside the package's own imports also imports the whole API, as ``import pyro_vae`` did before it was lazy,
    so ``pyro_vae.evaluation.plots`` and other submodules the API uses are there as they were; inside an import
    (``from .. import checks`` while ``config.build`` loads) only the name asked for is imported, never the
    modules still loading."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if not _loading():
        for module in dict.fromkeys(_EXPORTS.values()):
            importlib.import_module(f".{module}", __name__)
    globals()[name] = value
    return value


def _loading():
    """Whether a module of this package is part way through its import (its spec is marked initialising)."""
    return any(
        getattr(getattr(module, "__spec__", None), "_initializing", False)
        for key, module in list(sys.modules.items())
        if key.startswith(f"{__name__}.")
    )


def __dir__():
    return sorted({*globals(), *_EXPORTS})
