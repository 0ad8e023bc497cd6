"""The estimator comparison study: one model per estimator, same initial weights, same data order,
same number of gradient steps; then test ELBO, log p(x), gap, rate, distortion, active units,
and gradient variance/SNR for the encoder and the decoder at the trained parameters.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyro
import torch

from ..aliases import Config, Log, PathLike
from ..config.build import StepInputs, build_elbo, build_vae, load_config_data
from ..config.load import apply_overrides, parse_value, split_top_level
from ..config.validate import validate
from ..devices import resolve_device
from ..errors import ConfigError
from ..evaluation.metrics import classification, clustering, evaluate
from ..evaluation.plots import comparison_figures
from ..files import check_folder_target, check_path, folder_name, make_folder
from ..infer.diagnostics import gradient_snr
from ..infer.estimators import ESTIMATORS
from ..training.runner import train
from ..work import check_logpx_work

#: named variants beyond the estimator kinds: score-function gradients for z need a non-reparameterised posterior
VARIANTS = {
    "score_function_z": {"train.elbo": {"kind": "tracegraph"}, "model.posterior.reparameterized": False},
    "score_function_z_baseline": {
        "train.elbo": {"kind": "tracegraph"},
        "model.posterior.reparameterized": False,
        "model.posterior.baseline": "decaying_avg",
    },
}

COLUMNS = [
    "estimator",
    "seconds_per_epoch",
    "test_elbo",
    "log_px",
    "gap",
    "rate",
    "distortion",
    "active_units",
    "encoder_grad_var",
    "encoder_snr",
    "decoder_grad_var",
    "decoder_snr",
]
#: columns only some models have (a discrete component: clustering against the labels; a classifier: accuracy)
EXTRA_COLUMNS = ["cluster_accuracy", "accuracy"]
#: what the study writes beside its runs' folders
STUDY_FILES = ("compare.csv", "compare.md", "compare.json", "elbo_vs_epoch.png", "elbo_vs_time.png", "snr.png")


def parse_estimators(text):
    """``trace,iwae,dreg`` or ``label={kind='renyi', alpha=0.5}`` entries, comma-separated at the top level;
    also the variants ``score_function_z`` and ``score_function_z_baseline`` (z itself by score function). Returns {label: overrides}."""
    out = {}
    for entry in (e for e in split_top_level(text) if e):
        label, _, spec = entry.partition("=")
        label = folder_name(
            label.strip(),
            "the --estimators label",
            STUDY_FILES,
            "each label names the run's folder inside --out: use letters, digits, - and _",
            ConfigError,
        )
        if spec:
            value = parse_value(spec.strip())
            overrides = {"train.elbo": value if isinstance(value, dict) else {"kind": value}}
        elif label in VARIANTS:
            overrides = VARIANTS[label]
        else:
            ESTIMATORS.get(label)  # unknown kind: the error lists the valid ones
            overrides = {"train.elbo": {"kind": label}}
        if label in out:
            raise ConfigError(f"--estimators names {label!r} twice")
        out[label] = overrides
    if not out:
        raise ConfigError("--estimators needs at least one estimator, e.g. --estimators trace,iwae,dreg")
    return out


def compare(
    cfg: Config,
    estimators: str | Sequence[Any],
    out: PathLike,
    *,
    snr_samples: int = 20,
    progress: bool = True,
    log: Log = print,
    data: Any = None,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Run the study; write ``out``/compare.csv, compare.md, compare.json and figures. Returns the rows."""
    out = Path(check_path(out, "the study's folder (--out)", "give the study a folder of its own", ConfigError))
    runs = {
        label: validate(apply_overrides(cfg, o)) for label, o in parse_estimators(estimators).items()
    }  # all checked up front
    check_folder_target(out)
    data = (data if data is not None else load_config_data(cfg)).to(resolve_device(cfg["device"]))  # loaded once
    for c in runs.values():  # work that cannot finish is refused before the first estimator trains
        check_logpx_work(
            build_vae(c, data.data_shape), data.test.shape[0], c["eval"]["iwae_samples"], "eval.iwae_samples"
        )
    rows, histories = [], {}
    for label, c in runs.items():
        log(f"== {label}: {json.dumps(c['train']['elbo'])}")
        vae, history = train(c, out / label, overwrite=overwrite, progress=progress, data=data, log=log)
        histories[label] = history
        torch.manual_seed(c["seed"])
        r = evaluate(
            vae,
            data.test,
            iwae_samples=c["eval"]["iwae_samples"],
            batch_size=c["eval"]["batch_size"],
            progress=progress,
            labels=data.test_labels,
        )
        pyro.clear_param_store()
        prepared = vae.adapt_data(data)  # the data as the family trains on them (m2: labels hidden)
        inputs = StepInputs.from_config(vae, prepared, c).example(c["data"]["batch_size"])
        snr = gradient_snr(vae, build_elbo(c), inputs, num_data=prepared.num_train, num_samples=snr_samples)
        rows.append(
            {
                "estimator": label,
                "seconds_per_epoch": sum(h["seconds"] for h in history) / len(history),
                "test_elbo": r["elbo"],
                "log_px": r["log_px"],
                "gap": r["log_px"] - r["elbo"],
                "rate": r["rate"],
                "distortion": r["distortion"],
                "active_units": r["active_units"],
                "encoder_grad_var": snr["encoder"]["variance"],
                "encoder_snr": snr["encoder"]["snr"],
                "decoder_grad_var": snr["decoder"]["variance"],
                "decoder_snr": snr["decoder"]["snr"],
                **clustering(
                    vae, data.test, data.test_labels, c["eval"]["batch_size"]
                ),  # models with a discrete component
                **classification(vae, data.test, data.test_labels, c["eval"]["batch_size"]),  # models with a classifier
            }
        )
    write_report(rows, histories, out, cfg)
    return rows


def _fmt(v):
    if isinstance(v, str) or isinstance(v, int):
        return str(v)
    return f"{v:.3g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-2) else f"{v:.2f}"


def write_report(rows, histories, out, cfg):
    make_folder(out)
    columns = COLUMNS + [c for c in EXTRA_COLUMNS if all(c in r for r in rows)]
    with open(out / "compare.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (out / "compare.json").write_text(json.dumps({"rows": rows, "histories": histories}, indent=1))
    lines = [
        f"# ELBO estimators compared: {cfg['data']['dataset']}, {cfg['train']['epochs']} epoch(s), seed {cfg['seed']}",
        "",
        "Same initial weights, data order and number of gradient steps for every estimator. Nats per test",
        f"point; log p(x) with K = {cfg['eval']['iwae_samples']} importance samples; gap = log p(x) - ELBO",
        "(an estimate of KL(q || p(z|x))); gradient variance (mean over coordinates) and SNR",
        "(median over coordinates of |mean| / std) at the trained parameters, per minibatch gradient.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in columns) + " |" for r in rows]
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    comparison_figures(rows, histories, out)
