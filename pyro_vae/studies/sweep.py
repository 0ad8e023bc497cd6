"""``pyro-vae sweep``: one run per value (or combination of values) of any config keys, then
``sweep.csv``, a rate-distortion figure and, on data whose labels are factors of variation (``shapes``),
``disentanglement.png``: MIG, DCI, distortion, I(x; z) and total correlation against the first swept key.

``--set train.beta=0.5,1,2`` sweeps; a value with one element is fixed. Commas inside [...] or
{...} belong to the value (``model.encoder.hidden=[256,128]`` is one value).

A sweep continues where it stopped: run the same command again and each run folder that holds a
run is resumed (a finished one is only evaluated); ``overwrite`` trains every run anew.

``seeds=N`` trains each combination from N seeds (the config's seed, seed + 1, ...), in ``seed-S`` folders
inside the combination's, and reports each number as the mean over seeds with ``NAME_se``, its standard
error (``studies.statistics.mean_se``).
"""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..aliases import Log, PathLike
from ..config.build import build_vae, load_config_data
from ..config.load import load_config, split_top_level
from ..errors import ConfigError, TrainingInterrupted
from ..evaluation.generation import study_columns
from ..evaluation.metrics import evaluate
from ..evaluation.plots import factor_figure, rate_distortion_figure
from ..evaluation.representation import FACTOR_COLUMNS, representation_columns
from ..files import check_folder_target, check_path, folder_name, make_folder
from ..training.folder import RunFolder, checkpoint_digest
from ..training.runner import train
from ..work import check_logpx_work
from .statistics import mean_se


def parse_sweep(overrides):
    """``key=v1,v2`` strings -> (fixed overrides, {key: [values as text]}) with the swept keys in order."""
    fixed, swept = [], {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set needs key=value, got {item!r}")
        key, text = item.split("=", 1)
        values = [v for v in split_top_level(text) if v]
        if not values:
            raise ConfigError(f"--set {key}= has no value")
        if len(values) == 1:
            fixed.append(item)
        else:
            if key.strip() in swept:
                raise ConfigError(f"--set sweeps {key.strip()!r} twice")
            swept[key.strip()] = values
    return fixed, swept


#: what the sweep writes beside its runs' folders
SWEEP_FILES = ("sweep.csv", "rate_distortion.png", "disentanglement.png")


def _folder(combo):
    """A run's folder name inside the sweep's: key=value pairs (last part of each key), refused if unsafe."""
    name = "_".join(f"{k.split('.')[-1]}={v}" for k, v in combo.items()).replace(os.sep, "-")
    return folder_name(name, "a sweep run's folder", SWEEP_FILES, "shorten the swept values", ConfigError)


def sweep(
    config_path: PathLike | None,
    overrides: Sequence[str],
    out: PathLike,
    *,
    iwae_samples: int = 0,
    progress: bool = True,
    log: Log = print,
    overwrite: bool = False,
    data: Any = None,
    seeds: int = 1,
) -> list[dict[str, Any]]:
    """Train and evaluate every combination (from ``seeds`` seeds each); write sweep.csv and
    rate_distortion.png. Returns the rows, one per combination."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be an integer >= 1, got {seeds!r}")
    fixed, swept = parse_sweep(overrides)
    if not swept:
        raise ConfigError("nothing to sweep: give a key several values, e.g. --set train.beta=0.5,1,2,4")
    out = Path(check_path(out, "the study's folder (--out)", "give the study a folder of its own", ConfigError))
    combos = [dict(zip(swept, values)) for values in itertools.product(*swept.values())]
    configs = [
        load_config(config_path, fixed + [f"{k}={v}" for k, v in c.items()]) for c in combos
    ]  # all checked first
    folders = [out / _folder(c) for c in combos]
    if seeds > 1:  # each combination from several seeds: one run folder per seed inside its folder
        seeded = [
            (combo, {**cfg, "seed": cfg["seed"] + i}, folder / f"seed-{cfg['seed'] + i}")
            for combo, cfg, folder in zip(combos, configs, folders)
            for i in range(seeds)
        ]
        combos, configs, folders = [s[0] for s in seeded], [s[1] for s in seeded], [s[2] for s in seeded]
        if max(c["seed"] for c in configs) > 2**32 - 1:
            raise ConfigError("the seeds pass the largest seed, 2**32 - 1: lower seed")
    check_folder_target(out)
    if data is None and not any(k.startswith("data.") for k in swept):
        data = load_config_data(configs[0])
    if iwae_samples and data is not None:  # work that cannot finish is refused before the first run trains
        for cfg in configs:
            check_logpx_work(build_vae(cfg, data.data_shape), data.test.shape[0], iwae_samples)
    rows = []
    for combo, cfg, folder in zip(combos, configs, folders):
        label = ",".join(f"{k}={v}" for k, v in combo.items())
        log(f"== {label}" + (f", seed {cfg['seed']}" if seeds > 1 else ""))
        resume = not overwrite and RunFolder(folder).holds_run()  # a sweep that stopped: continue its runs
        try:
            vae, history = train(cfg, folder, resume=resume, overwrite=overwrite, progress=progress, data=data, log=log)
        except TrainingInterrupted as e:
            raise TrainingInterrupted(
                f"{e}; or run the same sweep command again: it continues every run of the sweep"
            ) from None
        torch.manual_seed(cfg["seed"])
        run_data = data if data is not None else load_config_data(cfg)  # a swept data key: this run's own
        test = run_data.test.to(next(vae.parameters()).device)
        r = evaluate(vae, test, iwae_samples=iwae_samples, batch_size=cfg["eval"]["batch_size"])
        rows.append(
            {
                "run": label,
                **combo,
                "test_elbo": r["elbo"],
                "rate": r["rate"],
                "distortion": r["distortion"],
                "active_units": r["active_units"],
                **({"log_px": r["log_px"]} if iwae_samples else {}),
                **representation_columns(vae, run_data, cfg),
                **study_columns(vae, run_data, cfg, folder=folder, key=checkpoint_digest(folder), log=log),
                "folder": folder.name if seeds == 1 else folder.parent.name,
            }
        )
    if seeds > 1:
        rows = _over_seeds(rows, seeds)
    make_folder(out)
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    rate_distortion_figure(rows, out / "rate_distortion.png")
    if all(c in rows[0] for c in FACTOR_COLUMNS):  # data with factors of variation: what beta does to them
        factor_figure(rows, list(swept), out / "disentanglement.png")
    return rows


def _over_seeds(rows, seeds):
    """One row per combination from its ``seeds`` consecutive rows: each number's mean and ``NAME_se``."""
    out = []
    for i in range(0, len(rows), seeds):
        group = rows[i : i + seeds]
        row: dict[str, Any] = {}
        for k, v in group[0].items():
            if isinstance(v, float) or k == "active_units":
                row[k], row[k + "_se"] = mean_se([g[k] for g in group])
            else:
                row[k] = v
        row["seeds"] = seeds
        out.append(row)
    return out
