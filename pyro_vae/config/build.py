"""From a validated config to objects: the VAE, the estimator, the optimiser, the beta schedules,
and ``prepare``, which loads the data and refuses bad combinations before any training."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyro
import torch

from ..aliases import Config

if TYPE_CHECKING:
    from ..models.vae import VAE
from .. import checks
from ..data.memory import Data, from_torch, load_data
from ..devices import resolve_device
from ..errors import ConfigError, DataError
from ..infer.estimators import ESTIMATORS, check_compatible
from ..infer.optim import LR_SCHEDULES, OPTIMIZERS
from ..infer.schedules import SCHEDULES, DualAscent
from ..models.vae import FAMILIES
from ..nn.likelihoods import LIKELIHOODS
from ..nn.networks import DECODERS, ENCODERS
from ..nn.posteriors import POSTERIORS
from ..nn.priors import PRIORS
from ..work import check_step_memory
from .validate import validate

#: the dtype the encoder and decoder bodies run in under autocast, by ``train.precision`` (None: float32)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def build_vae(cfg: Config, data_shape: Sequence[int]) -> VAE:
    """The VAE the config describes (``model.kind``: the family), for data points of shape ``data_shape``."""
    cfg = validate(cfg)  # a full config (about a millisecond): a partial or empty one gets its defaults
    return _build_vae(cfg, checks.data_shape("data_shape", data_shape, DataError)).to(resolve_device(cfg["device"]))


def vae_shapes(cfg, data_shape):
    """{name: shape} of the state of the VAE ``build_vae`` would build, found without allocating it (on torch's
    meta device), so a config read from a file is checked against the file's weights before anything is built;
    None where a part cannot be built there."""
    cfg = validate(cfg)
    try:
        with torch.device("meta"):
            vae = _build_vae(cfg, checks.data_shape("data_shape", data_shape, DataError))
    except (RuntimeError, NotImplementedError, TypeError, ValueError):  # a part that computes on its weights
        return None
    return {name: tuple(t.shape) for name, t in vae.state_dict().items()}


def _build_vae(cfg, data_shape):
    m = cfg["model"]
    family = FAMILIES.get(m["kind"])
    if m["layers"] and "layers" not in inspect.signature(family).parameters:
        raise ConfigError(
            f"model.layers stacks stochastic layers above z, which model.kind = {m['kind']!r} does not "
            "have: use model.kind = \"hierarchical\""
        )
    latent_dim = m["latent_dim"]
    likelihood = LIKELIHOODS.build(m["likelihood"], data_shape=data_shape)
    encoder = ENCODERS.build(m["encoder"], data_shape=data_shape)
    posterior = POSTERIORS.build(
        m["posterior"], in_features=encoder.out_features + family.posterior_inputs(m), latent_dim=latent_dim
    )
    out_features = likelihood.params_per_element * math.prod(data_shape)
    decoder = DECODERS.build(
        m["decoder"], latent_dim=latent_dim + family.decoder_inputs(m), out_features=out_features, data_shape=data_shape
    )
    prior = family.make_prior(m, PRIORS)
    options = {arg: _lookup(cfg, key) for arg, key in family.config_options.items()}
    return family(encoder, posterior, decoder, likelihood, prior, data_shape, latent_dim, **options)


def _lookup(cfg, key):
    """The value at a dotted config key ("model.components")."""
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def build_elbo(cfg: Config) -> pyro.infer.ELBO:
    return ESTIMATORS.build(cfg["train"]["elbo"])


def build_optimizer(cfg: Config, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    return OPTIMIZERS.build(cfg["train"]["optimizer"], params=params)


def build_lr_schedule(cfg, optimizer, steps_per_epoch):
    """The ``train.lr_schedule`` over this optimiser (``optim.LRSchedule``), or None."""
    return LR_SCHEDULES.build(
        cfg["train"]["lr_schedule"],
        optimizer=optimizer,
        steps_per_epoch=steps_per_epoch,
        total_epochs=cfg["train"]["epochs"],
    )


def build_beta_schedules(cfg, steps_per_epoch):
    """(warm-up, dual ascent or None): beta at a step is ``(dual.beta or train.beta) * warmup(step)``."""
    t = cfg["train"]
    warmup = SCHEDULES.build(t["kl_warmup"], steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * t["epochs"])
    dual = DualAscent(t["target_rate"], t["beta_lr"], beta=t["beta"]) if t["target_rate"] > 0 else None
    return warmup, dual


def load_config_data(cfg: Config) -> Data:
    """The dataset ``cfg['data']`` describes, binarised as it says."""
    d = cfg["data"]
    return load_data(
        d["dataset"],
        d["root"],
        d["path"],
        d["binarize"],
        d["download"],
        cfg["seed"],
        d["image_size"],
        d["workers"],
        d["test_size"],
    )


@dataclass(frozen=True)
class StepInputs:
    """The keyword arguments of model and guide for a training batch (from ``data.batches``) at a global
    step: the family's reading of the batch, and for a semi-supervised run the labelled batch beside it
    (``xs``, ``ys``, ``num_labelled``: ``labelled_batch`` of the labelled points, in an order ``seed`` fixes)."""

    vae: torch.nn.Module
    data: Data
    labelled_batch: int = 0
    seed: int = 0

    @classmethod
    def from_config(cls, vae, data, cfg):
        """``data.labelled_batch`` labelled points per step (0: ``data.batch_size``), at most all of them."""
        d = cfg["data"]
        size = min(d["labelled_batch"] or d["batch_size"], data.labelled[0].shape[0]) if data.labelled else 0
        return cls(vae, data, size, cfg["seed"])

    def __call__(self, batch, step, part=(0, 1)):
        inputs = self.vae.batch_inputs(batch)
        if self.data.labelled is not None:
            xs, ys = self.data.labelled_batch(step, self.labelled_batch, self.seed, part)
            inputs.update(xs=xs, ys=ys, num_labelled=self.data.labelled[0].shape[0])
        return inputs

    def example(self, n=2):
        """The inputs for the first ``n`` training points, for checks before training."""
        x = self.data.example_batch(n)
        return self((x, self.data.example_labels(n)) if self.vae.needs_labels else x, 0)


@dataclass
class Parts:
    """What a training run is made of, built from its config by ``build_run``: the data as the family trains
    on them, the VAE, the estimator, the optimiser, the schedules (KL warm-up, dual ascent or None, learning
    rate or None) and the step's inputs."""

    data: Data
    vae: torch.nn.Module
    elbo: object
    optimizer: torch.optim.Optimizer
    warmup: object
    dual: object
    lr_schedule: object
    inputs: StepInputs


def build_run(cfg, data=None, vae=None, elbo=None, optimizer=None):
    """``prepare``'s parts with the schedules and step inputs a run trains with (``Parts``)."""
    data, vae, elbo, optimizer = prepare(cfg, data, vae, elbo, optimizer)
    steps = data.num_batches(cfg["data"]["batch_size"])
    warmup, dual = build_beta_schedules(cfg, steps)
    return Parts(
        data,
        vae,
        elbo,
        optimizer,
        warmup,
        dual,
        build_lr_schedule(cfg, optimizer, steps),
        StepInputs.from_config(vae, data, cfg),
    )


def prepare(
    cfg: Config,
    data: Any = None,
    vae: VAE | None = None,
    elbo: pyro.infer.ELBO | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[Data, VAE, pyro.infer.ELBO, torch.optim.Optimizer]:
    """Load data and build the VAE, estimator and optimiser (each part given replaces the one the
    config would build); refuse bad combinations up front: data outside the likelihood's support,
    an estimator the model cannot use, a training step that cannot fit in memory, an architecture
    too large to allocate."""
    pyro.set_rng_seed(cfg["seed"])
    device = resolve_device(cfg["device"])
    d = cfg["data"]
    if data is None:
        data = load_config_data(cfg)
    elif not isinstance(data, Data):  # a torch Dataset or DataLoader, or a (train, test) pair of them
        train, test = data if isinstance(data, tuple) else (data, None)
        data = from_torch(train, test, d["binarize"], cfg["seed"])
    data = data.to(device)
    try:
        vae = build_vae(cfg, data.data_shape) if vae is None else vae.to(device)
    except (RuntimeError, MemoryError) as e:
        if "alloc" not in str(e).lower() and not isinstance(e, MemoryError):
            raise
        raise ConfigError(
            f"the model does not fit in memory ({str(e).splitlines()[0][:120]}): lower "
            "model.latent_dim or the hidden sizes"
        ) from None
    data = vae.adapt_data(data)  # a family's view of the data (m2: labels hidden but data.labels)
    if d["batch_size"] > data.num_train:
        raise DataError(
            f"data.batch_size = {d['batch_size']} is larger than the training set ({data.num_train} points): "
            f"lower it, e.g. --set data.batch_size={max(1, data.num_train // 4)}"
        )
    vae.precision = PRECISIONS[cfg["train"]["precision"]]
    vae.likelihood.check_data(data.example_batch())
    vae.likelihood.check_data(data.test)
    if data.binarize == "none" and data.train is not None:  # images from disk: 8-bit levels, as the test set
        vae.likelihood.check_data(data.train)
    vae.check_shape(data.example_batch(2))
    elbo = build_elbo(cfg) if elbo is None else elbo
    check_compatible(
        elbo, vae.model, vae.guide, num_data=data.num_train, **StepInputs.from_config(vae, data, cfg).example(2)
    )
    check_step_memory(vae, d["batch_size"], getattr(elbo, "num_particles", 1))
    optimizer = build_optimizer(cfg, vae.parameters()) if optimizer is None else optimizer
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not any(id(p) in held for p in vae.parameters()):
        raise ConfigError("the optimizer given holds none of the VAE's parameters: build it from vae.parameters()")
    return data, vae, elbo, optimizer
