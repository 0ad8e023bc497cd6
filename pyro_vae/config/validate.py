"""The config: nested dicts of plain values, every key with a default (``DEFAULTS``), and ``validate``.

An unknown section, key or ``kind`` is a ``ConfigError`` listing the valid choices; so is a value of
the wrong type or outside its bounds. The kinds of a key are read from its registry
(``registry.for_key``), so this module imports none of the layers that define them.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch

from ..aliases import Config
from ..checks import describe, number
from ..errors import ConfigError, PyroVAEWarning
from ..files import check_path
from ..registry import component_registries, for_key
from .plugins import load_plugins

#: every config key with its default: the config a run gets when it sets nothing
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "device": "cpu",
    "plugins": [],
    "data": {
        "dataset": "mnist",
        "root": "data",
        "path": "",
        "binarize": "dynamic",
        "batch_size": 128,
        "download": True,
        "image_size": 0,
        "workers": "auto",
        "test_size": 10000,
        "labels": 0,
        "labelled_batch": 0,
    },
    "model": {
        "kind": "vae",
        "components": 10,
        "component_fit": 0.0,
        "latent_dim": 50,
        "encoder": {"kind": "mlp", "hidden": [400]},
        "decoder": {"kind": "mlp", "hidden": [400]},
        "prior": {"kind": "standard_normal"},
        "likelihood": {"kind": "bernoulli"},
        "posterior": {"kind": "diagonal_normal"},
        "layers": [],
    },
    "train": {
        "elbo": {"kind": "jit_meanfield", "num_particles": 1},
        "epochs": 10,
        "optimizer": {"kind": "adam", "lr": 1e-3},
        "beta": 1.0,
        "kl_warmup": {"kind": "none"},
        "target_rate": 0.0,
        "beta_lr": 0.01,
        "lr_schedule": {"kind": "none"},
        "grad_clip": 0.0,
        "micro_batches": 0,
        "precision": "fp32",
        "aux_loss": 46.0,
        "labelled_weight": 0.0,
        "early_stop": 0,
        "max_steps": 0,
        "max_seconds": 0.0,
        "loggers": [],
        "out": "runs/NAME",
    },
    "eval": {
        "iwae_samples": 1000,
        "batch_size": 500,
        "surgery": 2000,
        "samples": 0,
        "samplers": ["prior"],
        "features": {"kind": "auto"},
    },
}


#: one line of meaning per key (a component key: its table), for ``config.reference`` and the documentation;
#: ``tests/config/test_reference.py`` checks that every key of ``DEFAULTS`` has one
HELP = {
    "seed": "the seed of every random draw (weights, batches, binarisation, z); 0 .. 2**32 - 1",
    "device": "\"cpu\", \"cuda\" (\"cuda:N\"; under torchrun each rank's own GPU) or \"mps\"",
    "plugins": "modules or .py files that register kinds (priors, likelihoods, estimators, families...)",
    "data.dataset": "the dataset: in memory, or read from disk",
    "data.root": "the folder that holds the datasets (PYRO_VAE_DATA replaces this default)",
    "data.path": "the .npz file for \"npz\", the folder of images for \"image_folder\"",
    "data.binarize": "none | dynamic (a new Bernoulli draw of each pixel every epoch) | static (one draw, fixed)",
    "data.batch_size": "data points per training step",
    "data.download": "let torchvision download a missing dataset (the MNIST family)",
    "data.image_size": "images read from disk: resize and centre-crop to this (0: as stored)",
    "data.workers": "DataLoader processes reading images from disk (auto: CPU threads // 4, GPU cores - 1)",
    "data.test_size": "test images of a dataset read from disk held in memory (0: all)",
    "data.labels": "m2: labelled training points, balanced over the classes, chosen by the seed",
    "data.labelled_batch": "m2: labelled points seen beside each batch (0: data.batch_size)",
    "model.kind": "the model family",
    "model.components": "gmvae: mixture components; cvae, m2: classes",
    "model.component_fit": "gmvae: weight of the term that trains q(c|x) towards the posterior the component "
    "bounds imply and every q(z|x, c) alike (0: off)",
    "model.latent_dim": "dimensions of z (of z_1 for hierarchical)",
    "model.encoder": "the network from x to the posterior's features",
    "model.decoder": "the network from z to the likelihood's parameters",
    "model.prior": "p(z)",
    "model.likelihood": "p(x|z)",
    "model.posterior": "q(z|x)",
    "model.layers": "hierarchical: layers above z_1, e.g. [{latent_dim = 50, hidden = [100, 100], activation = "
    "\"tanh\"}]",
    "train.elbo": "the ELBO estimator",
    "train.epochs": "passes over the training set",
    "train.optimizer": "the torch.optim optimiser",
    "train.beta": "the KL weight, applied with poutine.scale on the latent sites of model and guide (beta_tc: the "
    "weight of the total correlation alone)",
    "train.kl_warmup": "a schedule multiplying beta per step",
    "train.target_rate": "> 0: constrained mode, beta by dual ascent so that the rate meets this (nats)",
    "train.beta_lr": "the dual ascent's step size on log beta",
    "train.lr_schedule": "a torch.optim.lr_scheduler stepped every step or epoch, its state in the checkpoint",
    "train.grad_clip": "> 0: clip the gradients' total norm to this",
    "train.micro_batches": "each batch in this many micro-batches (0: one per torchrun rank)",
    "train.precision": "fp32 | bf16: encoder and decoder under autocast (GPUs; slower on a CPU)",
    "train.aux_loss": "m2: weight of -log q(y|x) per labelled point (Pyro's SS-VAE value)",
    "train.labelled_weight": "m2: weight of a labelled point's ELBO; 0: balanced, N_unlabelled / N_labelled; "
    "1: the joint likelihood",
    "train.early_stop": "> 0: stop after this many epochs without a better test ELBO",
    "train.max_steps": "> 0: a budget, stop after this many optimiser steps in all (inside an epoch too; 0: off)",
    "train.max_seconds": "> 0: a budget, stop at the first step that ends after this many seconds of training "
    "(the loop's clock: steps and batches, not evaluation; 0: off)",
    "train.loggers": "\"csv\", \"tensorboard\", \"wandb\", \"mlflow\", or tables: { kind = \"wandb\", project = "
    "\"p\" }",
    "train.out": "the run folder; NAME becomes DATASET-DATE-TIME",
    "eval.iwae_samples": "importance samples K of the log p(x) estimate",
    "eval.batch_size": "data points per evaluation batch",
    "eval.surgery": "test points whose codes the ELBO surgery averages over (mutual information, total correlation, "
    "dimension-wise KL; q(z) from the whole test set), for models with one factorised latent site (0: off)",
    "eval.samples": "> 0: also measure sample quality (FID, KID, precision, recall) on this many generated images "
    "per sampler against as many test images (0: off)",
    "eval.samplers": "the latent samplers of the sample-quality metrics: \"prior\", \"gmm\", \"flow\" (post-hoc, "
    "fitted to q(z))",
    "eval.features": "the feature network of the sample-quality metrics",
}

#: keys that only some families read (each family's ``reads()``); set for another family, they warn
FAMILY_KEYS = (
    "model.components",
    "model.component_fit",
    "train.aux_loss",
    "train.labelled_weight",
    "data.labels",
    "data.labelled_batch",
)

#: value checks beyond the type: ``checks.number`` arguments
_BOUNDS = {
    "seed": dict(integer=True, low=0, high=2**32 - 1),
    "data.batch_size": dict(integer=True, low=1),
    "data.image_size": dict(integer=True, low=0, high=4096, hint=" (pixels; 0: as stored)"),
    "data.workers": dict(integer=True, low=0, high=256, hint=" (DataLoader worker processes for data read from disk)"),
    "data.test_size": dict(integer=True, low=0, hint=" (test images held in memory; 0: all)"),
    "model.latent_dim": dict(integer=True, low=1),
    "data.labels": dict(integer=True, low=0, hint=" (m2: labelled training points, balanced over the classes)"),
    "data.labelled_batch": dict(integer=True, low=0, hint=" (m2: labelled points per step; 0: data.batch_size)"),
    "model.components": dict(integer=True, low=2, high=10_000, hint=" (gmvae: mixture components; cvae, m2: classes)"),
    "model.component_fit": dict(
        low=0, hint=" (gmvae: weight of the component-fit term that trains q(c|x) and every q(z|x, c); 0: off)"
    ),
    "train.epochs": dict(integer=True, low=1),
    "train.beta": dict(low=0),
    "train.target_rate": dict(low=0, hint=" (nats; 0: off)"),
    "train.beta_lr": dict(low=0, strict=True),
    "train.aux_loss": dict(low=0, hint=" (m2: weight of -log q(y|x) per labelled point)"),
    "train.labelled_weight": dict(
        low=0,
        hint=" (m2: weight of a labelled point's ELBO; 1: the joint likelihood; "
        "0: balanced, N_unlabelled / N_labelled)",
    ),
    "train.grad_clip": dict(low=0, hint=" (the largest gradient norm; 0: off)"),
    "train.micro_batches": dict(integer=True, low=0, hint=" (micro-batches per batch; 0: one per rank)"),
    "train.early_stop": dict(integer=True, low=0, hint=" (epochs without a better test ELBO; 0: off)"),
    "train.max_steps": dict(integer=True, low=0, hint=" (optimiser steps in all; 0: no step budget)"),
    "train.max_seconds": dict(low=0, hint=" (seconds of training in all; 0: no time budget)"),
    "eval.iwae_samples": dict(integer=True, low=1),
    "eval.batch_size": dict(integer=True, low=1),
    "eval.surgery": dict(integer=True, low=0, hint=" (test points; 0: no ELBO surgery)"),
    "eval.samples": dict(integer=True, low=0, hint=" (generated images per sampler; 0: no sample-quality metrics)"),
}
#: integer keys that also take one word (a default worked out at run time): key -> the word
_OR_WORD = {"data.workers": "auto"}
#: keys that hold a path: text a file system can hold (``files.check_path``); the empty ones allowed mean "none"
_PATHS = {"data.root": False, "data.path": True, "train.out": False}
#: keys with a fixed set of values
_CHOICES = {"data.binarize": ("none", "dynamic", "static"), "train.precision": ("fp32", "bf16")}

_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}


def _check_type(key, value, default):
    kind = type(default)
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ConfigError(f"{key} must be {_TYPE_NAMES.get(kind, kind.__name__)}, got {value!r}")
    return float(value) if kind is float else value


def _number_or_word(key, value):
    bounds = _BOUNDS[key]
    try:
        return number(key, value, **bounds)
    except ConfigError:
        what = describe(
            bounds.get("integer", False), bounds.get("low"), bounds.get("high"), bounds.get("strict", False)
        )
        raise ConfigError(
            f"{key} must be \"{_OR_WORD[key]}\" or {what}, got {value!r}{bounds.get('hint', '')}"
        ) from None


def validate(cfg: Config) -> Config:
    """Check keys, types, bounds and every component ``kind``; return a full config with defaults."""
    out = copy.deepcopy(DEFAULTS)
    registries = component_registries()
    if not isinstance(cfg, dict):
        raise ConfigError(f"a config is a table of sections, got {cfg!r}")

    def merge(dst, src, prefix):
        for key, value in src.items():
            dotted = f"{prefix}{key}"
            if key not in dst:
                valid = ", ".join(dst)
                raise ConfigError(f"unknown {'key' if prefix else 'section or key'} {dotted!r}; valid: {valid}")
            if dotted in registries:
                registries[dotted].check(value)
                dst[key] = dict(value) if isinstance(value, dict) else {"kind": value}
            elif isinstance(dst[key], dict):
                if not isinstance(value, dict):
                    raise ConfigError(f"{dotted} is a section; write [{dotted}] with keys {', '.join(dst[key])}")
                merge(dst[key], value, dotted + ".")
            elif dotted in _OR_WORD:  # the word, or a number within the key's bounds
                dst[key] = value if value == _OR_WORD[dotted] else _number_or_word(dotted, value)
            else:
                dst[key] = _check_type(dotted, value, dst[key])
                if dotted in _BOUNDS:
                    number(dotted, dst[key], **_BOUNDS[dotted])
                if dotted in _PATHS and (dst[key] or not _PATHS[dotted]):
                    check_path(dst[key], dotted, "give a folder or file name a file system can hold", ConfigError)
                if dotted in _CHOICES and dst[key] not in _CHOICES[dotted]:
                    raise ConfigError(f"{dotted} must be one of {', '.join(_CHOICES[dotted])}, got {value!r}")

    plugins = cfg.get("plugins", [])
    if not isinstance(plugins, list):
        raise ConfigError(f"plugins must be a list of module names or .py files, got {plugins!r}")
    cfg = {**cfg, "plugins": load_plugins(plugins)}  # imported first: they register the kinds read below
    model_section = cfg.get("model", {})
    family = for_key("model.kind").get(
        model_section.get("kind", out["model"]["kind"]) if isinstance(model_section, dict) else out["model"]["kind"]
    )
    # a family's own defaults (m2: enumeration, grey levels) lie between ours and the user's config
    merge(out, family.config_defaults, "")
    baseline = flatten(out)
    merge(out, cfg, "")
    _warn_ignored(out, baseline, family)
    elbo = registries["train.elbo"].build(out["train"]["elbo"])  # cheap; catches particle counts, alpha, ...
    registries["train.kl_warmup"].build(out["train"]["kl_warmup"], steps_per_epoch=1, total_steps=1)
    lr = out["train"]["optimizer"].get("lr", 1.0)  # the schedule's parameters are checked against the real lr
    usable = isinstance(lr, (int, float)) and not isinstance(lr, bool) and 0 < lr < float("inf")  # else its own error
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=float(lr) if usable else 1.0)
    registries["train.lr_schedule"].build(
        out["train"]["lr_schedule"], optimizer=probe, steps_per_epoch=1, total_epochs=out["train"]["epochs"]
    )
    if out["train"]["target_rate"] > 0 and out["train"]["kl_warmup"]["kind"] != "none":
        raise ConfigError("train.target_rate sets beta itself: leave train.kl_warmup at { kind = \"none\" }")
    if out["data"]["batch_size"] < getattr(elbo, "min_batch", 1):  # beta_tc: q(z) from the batch's other points
        raise ConfigError(
            f"the {out['train']['elbo']['kind']!r} estimator needs data.batch_size >= {elbo.min_batch}, got "
            f"{out['data']['batch_size']}"
        )
    beta_weighs = getattr(elbo, "beta_weighs", "the KL")  # what train.beta multiplies (beta_tc: the TC alone)
    if beta_weighs != "the KL" and (out["train"]["target_rate"] > 0 or out["train"]["kl_warmup"]["kind"] != "none"):
        raise ConfigError(
            f"with train.elbo.kind = {out['train']['elbo']['kind']!r}, train.beta weighs {beta_weighs}, so a rate "
            "target or a KL warm-up has no meaning: set train.target_rate = 0 and train.kl_warmup = { kind = \"none\" }"
        )
    for_key("data.dataset").get(out["data"]["dataset"])
    for spec in out["eval"]["samplers"]:  # names, or tables {kind = "flow", steps = 1000}
        for_key("eval.samplers").check(spec, context=("latent_dim", "prior"))
    if getattr(family, "check_config", None) is not None:  # a family's own keys (hierarchical: model.layers)
        family.check_config(out["model"])
    for spec in out["train"]["loggers"]:  # a name, or a table with its options: { kind = "wandb", project = "p" }
        for_key("train.loggers").check(spec)
    if out["device"] not in ("cpu", "mps") and not out["device"].startswith("cuda"):
        raise ConfigError(f"device must be \"cpu\", \"cuda\" (or \"cuda:N\") or \"mps\", got {out['device']!r}")
    return out


#: the ignored-key warnings already given in this process: a config is validated several times on its way
#: (load, overrides, train), and each is said once
_WARNED: set[str] = set()


def _warn_ignored(out, baseline, family):
    """Warn, once, of each family-specific key set away from its default for a family that does not read it."""
    kind, values = out["model"]["kind"], flatten(out)
    readers = for_key("model.kind")
    for key in FAMILY_KEYS:
        if key not in family.reads() and values[key] != baseline[key]:
            who = ", ".join(n for n in readers.names() if key in readers.get(n).reads())
            message = (
                f"{key} = {values[key]!r} has no effect with model.kind = {kind!r}; only {who} read it: "
                "remove it, or choose that model.kind"
            )
            if message not in _WARNED:
                _WARNED.add(message)
                warnings.warn(message, PyroVAEWarning, stacklevel=3)


def flatten(cfg, prefix=""):
    """A nested config as {"section.key": value}."""
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
