"""What a trained model generates, per latent sampler: images, and their quality against the test set.

``fitted_sampler`` fits a post-hoc sampler (``samplers``) to the training set's codes, or reads the one
already fitted in the run folder (``RUN/samplers/KIND.pt``) while it still belongs to the run's
checkpoint (its SHA-256 is saved with it). ``sample_quality`` draws n images per sampler in the form of
the data (x ~ p(x|z) where the data are binarised, as the test set is; else the means E[x|z]) and
measures them against n test images (``quality``), beside the floor: n training images, binarised
alike, against the same test images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..aliases import Log, PathLike
from ..checks import positive
from ..errors import UsageError
from .features import FEATURES, build_features, default_cache_dir
from .quality import features_of, quality

if TYPE_CHECKING:
    from ..data.memory import Data
    from ..models.vae import VAE
from .samplers import build_sampler, latent_codes, load_sampler, save_sampler

#: the folder of a run that holds its fitted samplers
SAMPLER_FOLDER = "samplers"


def fitted_sampler(kind, vae, data, folder=None, key=None, seed=0, progress=False, log=print):
    """The sampler ``kind`` for ``vae``: the prior as it is; another fitted to one code z ~ q(z|x) per
    training point (seeded), saved in ``folder/samplers`` with ``key`` (the checkpoint's digest), and
    read back from there while ``key`` and its parameters match."""
    sampler = build_sampler(kind, vae)
    if sampler.kind == "prior":
        return sampler
    path = Path(folder) / SAMPLER_FOLDER / f"{sampler.kind}.pt" if folder is not None else None
    if path is not None and path.exists():
        saved, blob = load_sampler(path)
        if blob.get("checkpoint_sha256") == key and blob.get("seed") == seed and _settings(saved) == _settings(sampler):
            return saved
        log(f"{path} was fitted to another checkpoint or with other settings: fitting it again")
    codes = latent_codes(vae, data.train, generator=torch.Generator().manual_seed(seed))
    sampler.fit(codes, seed=seed, progress=progress)
    log(f"fitted the {sampler.kind} sampler to {len(codes)} codes of q(z): {_describe(sampler.fit_info)}")
    if path is not None:
        path.parent.mkdir(exist_ok=True)
        save_sampler(sampler, path, checkpoint_sha256=key, seed=seed)
    return sampler


def _settings(sampler):
    """A sampler's parameters less what its fit chose (a mixture's number of components)."""
    return {k: v for k, v in sampler.params().items() if k != "components"}


def _describe(info):
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items() if k != "bic")


@torch.no_grad()
def generate(vae, sampler, n, seed=0, mean=True, batch_size=1000):
    """n images from z ~ ``sampler``: E[x|z] (``mean``) or x ~ p(x|z), shape (n, *data_shape)."""
    positive("n", n, integer=True, error=UsageError)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        out = []
        for i in range(0, n, batch_size):
            z = sampler.sample(min(batch_size, n - i)).to(vae.dtype)
            decoded = vae.decode(z)
            out.append(vae.likelihood.mean(decoded) if mean else vae.likelihood(decoded).sample())
    return torch.cat(out)


def check_request(vae, data, samplers, n, features):
    """Refuse, before any work, a sample-quality request that cannot run; returns the samplers as a list."""
    if isinstance(samplers, str):
        samplers = [s for s in samplers.split(",") if s]
    for s in samplers:
        build_sampler(s, vae)  # an unknown kind, a bad parameter, a model it cannot serve: refused here
    FEATURES.check(features)
    n = positive("n", n, integer=True, error=UsageError)
    if n > min(len(data.test), len(data.train)) or n < 10:
        raise UsageError(
            f"--samples {n}: the metrics compare n generated images with n test images and n training images, so n "
            f"must lie between 10 and {min(len(data.test), len(data.train))} for this dataset"
        )
    if len(vae.data_shape) != 3:
        raise UsageError(f"sample-quality metrics need images; this model's data have shape {vae.data_shape}")
    return list(samplers)


def sample_quality(
    vae: VAE,
    data: Data,
    samplers: str | Sequence[str | dict[str, Any]] = ("prior",),
    n: int = 10000,
    features: str | dict[str, Any] = "auto",
    folder: PathLike | None = None,
    key: str | None = None,
    cache_dir: PathLike | None = None,
    root: PathLike = "data",
    seed: int = 0,
    progress: bool = False,
    log: Log = print,
) -> dict[str, dict[str, Any]]:
    """{"floor": metrics, sampler: metrics, ...}: FID, KID, precision and recall of n images drawn
    through each sampler against n test images, in the features ``features`` names; the floor is n
    training images against the same test images."""
    samplers = check_request(vae, data, samplers, n, features)
    net = build_features(features, data, cache_dir or default_cache_dir(root), progress=progress, log=log)
    g = torch.Generator().manual_seed(seed)
    test = data.test[torch.randperm(len(data.test), generator=g)[:n]].float()
    # n training points as the model sees them (binarised by one draw where the data are), as the test set is
    train = next(iter(data.batches(n, torch.Generator(data.test.device).manual_seed(seed)))).float()
    real = features_of(net, test)
    out = {"floor": quality(real, features_of(net, train), seed=seed)}
    # like the data: draws x ~ p(x|z) where the data are binarised (the model's distribution is over binary
    # images, and so is the test set), else the means E[x|z]
    mean = data.binarize == "none"
    for s in samplers:
        sampler = fitted_sampler(s, vae, data, folder=folder, key=key, seed=seed, progress=progress, log=log)
        images = generate(vae, sampler, n, seed=seed, mean=mean)
        out[sampler.kind] = quality(real, features_of(net, images), seed=seed)
    out["features"] = {
        "kind": net.feature_kind,
        "test_accuracy": getattr(net, "test_accuracy", None),
        "n": n,
        "images": "E[x|z]" if mean else "x ~ p(x|z)",
    }
    return out


#: the sample-quality numbers a study reports per sampler, as columns ``METRIC_SAMPLER`` (``fid_gmm``)
COLUMNS = ("fid", "kid", "precision", "recall")


def configured(cfg, n=None, samplers=None, features=None):
    """``sample_quality``'s settings from a run's config (``eval.samples``, ``eval.samplers``,
    ``eval.features``, ``data.root``, ``seed``), each of ``n``, ``samplers``, ``features`` replacing its key."""
    e = cfg["eval"]
    return {
        "n": e["samples"] if n is None else n,
        "samplers": e["samplers"] if samplers is None else samplers,
        "features": e["features"] if features is None else features,
        "root": cfg["data"]["root"],
        "seed": cfg["seed"],
    }


def study_columns(vae, data, cfg, folder=None, key=None, progress=False, log=print):
    """``sample_quality`` as a study's flat columns (``fid_prior``, ``recall_gmm``, ``fid_floor``...), as the
    config's ``eval.samples``, ``eval.samplers`` and ``eval.features`` ask; {} when ``eval.samples`` is 0."""
    if not cfg["eval"]["samples"]:
        return {}
    result = sample_quality(vae, data, **configured(cfg), folder=folder, key=key, progress=progress, log=log)
    return {f"{m}_{name}": v[m] for name, v in result.items() if name != "features" for m in COLUMNS}


def is_sample_column(name):
    """Whether a study's column is one of ``study_columns``'."""
    metric, _, sampler = name.partition("_")
    return metric in COLUMNS and bool(sampler) and not sampler.endswith("se")
