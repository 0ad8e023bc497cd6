"""The estimator comparison study: one model per estimator and seed, every estimator of a seed from the same
initial weights and data order, all on one budget (steps, epochs or seconds of training); then test ELBO,
log p(x), gap, rate, distortion, active units, and gradient variance/SNR for the encoder and the decoder at
the trained parameters, as mean +- standard error over seeds, and each estimator's paired difference from a
reference estimator (``studies.statistics``).

A study folder holds ``study.json`` (what was asked), one run folder per (estimator, seed),
``LABEL/seed-S``, each with its ``evaluation.json`` beside its checkpoint, and the report made from them. The
same command run again continues the study where it stopped (finished runs are not trained or evaluated
again); ``report(folder)`` (``compare --report DIR``) rewrites the tables and figures from what is there.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyro
import torch

from ..aliases import Config, Log, PathLike
from ..config.build import StepInputs, build_elbo, build_vae, load_config_data
from ..config.load import apply_overrides, parse_value, split_top_level
from ..config.plugins import load_plugins
from ..config.validate import validate
from ..devices import resolve_device
from ..errors import ConfigError, TrainingInterrupted, UsageError
from ..evaluation.generation import is_sample_column, study_columns
from ..evaluation.metrics import classification, clustering, evaluate
from ..evaluation.plots import study_figures
from ..evaluation.representation import FACTOR_COLUMNS, SURGERY_COLUMNS, representation_columns
from ..files import atomic_write_text, check_folder_target, check_path, folder_name, make_folder
from ..infer.diagnostics import gradient_snr
from ..infer.estimators import ESTIMATORS
from ..training.folder import RunFolder, checkpoint_digest
from ..training.runner import train
from ..work import check_logpx_work
from . import statistics

#: named variants beyond the estimator kinds: score-function gradients for z need a non-reparameterised posterior
VARIANTS = {
    "score_function_z": {"train.elbo": {"kind": "tracegraph"}, "model.posterior.reparameterized": False},
    "score_function_z_baseline": {
        "train.elbo": {"kind": "tracegraph"},
        "model.posterior.reparameterized": False,
        "model.posterior.baseline": "decaying_avg",
    },
}

#: a run's numbers, each reported as mean and standard error over seeds
METRICS = [
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
#: metrics only some models have (a discrete component: clustering against the labels; a classifier: accuracy;
#: one factorised latent site: the ELBO surgery; labels that are factors of variation: MIG and DCI)
EXTRA_METRICS = ["cluster_accuracy", "accuracy", *SURGERY_COLUMNS, *FACTOR_COLUMNS]
COLUMNS = ["estimator", "seeds", "steps", "train_seconds"] + [c for m in METRICS for c in (m, m + "_se")]
#: paired differences from the reference: by seed and test point where each point has its value, else by seed
PAIRED_BY_POINT = {"test_elbo": "elbo", "log_px": "log_px", "gap": "gap"}
PAIRED_BY_SEED = ["rate", "distortion", "seconds_per_epoch"]
#: what the study writes beside its runs' folders
STUDY = "study.json"
STUDY_FILES = (
    STUDY,
    "compare.csv",
    "compare_runs.csv",
    "compare_paired.csv",
    "compare.md",
    "compare.json",
    "elbo_vs_steps.png",
    "elbo_vs_time.png",
    "snr.png",
)
#: each run's evaluation, beside its checkpoint
EVALUATION = "evaluation.json"
#: the kinds of budget (``parse_budget``; ``budget_overrides`` says which config keys each sets)
BUDGETS = ("steps", "epochs", "seconds")


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


def parse_budget(text: str | None) -> tuple[str, float] | None:
    """``steps:N``, ``epochs:E`` or ``seconds:T`` -> (kind, amount); None: the config's train.epochs."""
    if text is None or text == "":
        return None
    kind, _, amount = str(text).partition(":")
    hint = "give --budget steps:N, epochs:E or seconds:T (e.g. seconds:60), the same for every estimator"
    if kind.strip() not in BUDGETS:
        raise ConfigError(f"unknown budget {text!r}: {hint}")
    try:
        value = float(amount) if kind.strip() == "seconds" else int(amount)
    except ValueError:
        raise ConfigError(f"the budget {text!r} needs a number after the colon: {hint}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"the budget {text!r} must be positive: {hint}")
    return kind.strip(), value


def budget_overrides(budget: tuple[str, float] | None, steps_per_epoch: int) -> dict[str, Any]:
    """The config keys that put every run on ``budget``: steps (train.max_steps, and the epochs they need),
    epochs (train.epochs) or seconds of training (train.max_seconds; train.epochs stays the cap)."""
    if budget is None:
        return {"train.max_steps": 0, "train.max_seconds": 0.0}
    kind, amount = budget
    if kind == "steps":
        return {
            "train.max_steps": int(amount),
            "train.epochs": -(-int(amount) // steps_per_epoch),
            "train.max_seconds": 0.0,
        }
    if kind == "epochs":
        return {"train.epochs": int(amount), "train.max_steps": 0, "train.max_seconds": 0.0}
    return {"train.max_seconds": float(amount), "train.max_steps": 0}


def describe_budget(budget, cfg):
    if budget is None:
        return f"epochs:{cfg['train']['epochs']} (train.epochs)"
    kind, amount = budget
    return f"{kind}:{amount:g}" + (f" (at most {cfg['train']['epochs']} epochs)" if kind == "seconds" else "")


def run_folder(out: PathLike, label: str, seed: int) -> Path:
    """The run folder of ``label`` trained from ``seed`` inside the study folder ``out``."""
    return Path(out) / label / f"seed-{seed}"


def compare(
    cfg: Config,
    estimators: str | Sequence[Any],
    out: PathLike,
    *,
    seeds: int = 1,
    reference: str | None = None,
    budget: str | None = None,
    jobs: int = 1,
    snr_samples: int = 20,
    progress: bool = True,
    log: Log = print,
    data: Any = None,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Run the study: each estimator from ``seeds`` seeds (cfg's seed, seed + 1, ...), every estimator of a
    seed from the same initial weights and batch order, on one ``budget`` (``steps:N``, ``epochs:E``,
    ``seconds:T``; default: train.epochs); ``jobs`` runs at once in separate processes, the CPU threads split
    between them. Writes ``out``/compare.csv, compare_runs.csv, compare_paired.csv, compare.md, compare.json
    and figures; returns one row per estimator (each metric's mean, and ``METRIC_se``, its standard error).
    Run again, it continues where it stopped; ``overwrite`` trains every run anew."""
    out = Path(check_path(out, "the study's folder (--out)", "give the study a folder of its own", ConfigError))
    specs = parse_estimators(estimators)
    reference = _check_reference(reference, list(specs))
    n_seeds = _count("seeds", seeds, 1)
    jobs = _count("jobs", jobs, 1)
    parsed_budget = parse_budget(budget)
    seed_list = [cfg["seed"] + i for i in range(n_seeds)]
    if seed_list[-1] > 2**32 - 1:
        raise ConfigError(f"seeds {seed_list[0]} .. {seed_list[-1]} pass the largest seed, 2**32 - 1: lower seed")
    check_folder_target(out)
    data = (data if data is not None else load_config_data(cfg)).to(resolve_device(cfg["device"]))  # loaded once
    steps_per_epoch = data.num_batches(cfg["data"]["batch_size"])
    base = budget_overrides(parsed_budget, steps_per_epoch)
    runs = {  # all checked up front
        (label, seed): validate(apply_overrides(cfg, {**o, **base, "seed": seed}))
        for label, o in specs.items()
        for seed in seed_list
    }
    for c in runs.values():  # work that cannot finish is refused before the first estimator trains
        check_logpx_work(
            build_vae(c, data.data_shape), data.test.shape[0], c["eval"]["iwae_samples"], "eval.iwae_samples"
        )
    make_folder(out)
    manifest = {
        "estimators": list(specs),
        "specs": {label: runs[(label, seed_list[0])]["train"]["elbo"] for label in specs},
        "seeds": seed_list,
        "reference": reference,
        "budget": describe_budget(parsed_budget, cfg),
        "dataset": cfg["data"]["dataset"],
        "iwae_samples": cfg["eval"]["iwae_samples"],
        "steps_per_epoch": steps_per_epoch,
    }
    atomic_write_text(out / STUDY, json.dumps(manifest, indent=1))
    tasks = [(label, seed, c) for (label, seed), c in runs.items()]
    options = dict(snr_samples=snr_samples, overwrite=overwrite, steps_per_epoch=steps_per_epoch)
    try:
        if jobs == 1:
            for label, seed, c in tasks:
                log(f"== {label}, seed {seed}: {json.dumps(c['train']['elbo'])}")
                run_one(c, run_folder(out, label, seed), label, data, progress=progress, log=log, **options)
        else:
            _run_parallel(tasks, out, data, jobs, log, options)
    except TrainingInterrupted as e:
        raise TrainingInterrupted(
            f"{e}; or run the same compare command again: it continues every run of the study"
        ) from None
    return report(out, log=log)


def _count(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_reference(reference, labels):
    if reference is None:
        return labels[0]
    if reference not in labels:
        raise ConfigError(f"--reference {reference!r} is not one of the estimators compared: {', '.join(labels)}")
    return reference


def _identity(c):
    """What a run's evaluation depends on: its config (budget and seed included) as canonical text."""
    return json.dumps(c, sort_keys=True, default=str)


def _cached(folder, c, snr_samples):
    """The run's saved evaluation if it still describes its checkpoint, config and SNR samples; else None."""
    try:
        saved = json.loads((Path(folder) / EVALUATION).read_text())
    except (OSError, ValueError):
        return None
    same = (
        isinstance(saved, dict)
        and saved.get("identity") == _identity(c)
        and saved.get("snr_samples") == snr_samples
        and saved.get("checkpoint_sha256") == checkpoint_digest(folder)
    )
    return saved if same else None


def run_one(c, folder, label, data, *, snr_samples, overwrite, steps_per_epoch, progress=False, log=print):
    """Train (or continue) and evaluate one run of the study; its evaluation is written beside its checkpoint
    (``EVALUATION``) and returned. A run whose saved evaluation still describes it is not touched."""
    folder = Path(folder)
    if not overwrite and (saved := _cached(folder, c, snr_samples)) is not None:
        log(f"   {folder}: evaluated already")
        return saved
    resume = not overwrite and RunFolder(folder).holds_run()  # a study that stopped: continue its runs
    vae, history = train(c, folder, resume=resume, overwrite=overwrite, progress=progress, data=data, log=log)
    digest = checkpoint_digest(folder)  # what the evaluation (and a fitted sampler) belongs to
    torch.manual_seed(c["seed"])
    r = evaluate(
        vae,
        data.test,
        iwae_samples=c["eval"]["iwae_samples"],
        batch_size=c["eval"]["batch_size"],
        progress=progress,
        labels=data.test_labels,
        per_point=True,
    )
    pyro.clear_param_store()
    prepared = vae.adapt_data(data)  # the data as the family trains on them (m2: labels hidden)
    inputs = StepInputs.from_config(vae, prepared, c).example(c["data"]["batch_size"])
    snr = gradient_snr(vae, build_elbo(c), inputs, num_data=prepared.num_train, num_samples=snr_samples)
    full = [h for h in history if not h.get("partial")]
    steps = len(full) * steps_per_epoch + sum(h["partial"] for h in history if h.get("partial"))
    seconds = sum(h["seconds"] for h in history)
    metrics = {
        "seconds_per_epoch": seconds * steps_per_epoch / max(steps, 1),
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
        **clustering(vae, data.test, data.test_labels, c["eval"]["batch_size"]),  # models with a discrete component
        **classification(vae, data.test, data.test_labels, c["eval"]["batch_size"]),  # models with a classifier
        **representation_columns(vae, data, c),  # ELBO surgery; MIG and DCI where the labels are factors
        **study_columns(vae, data, c, folder=folder, key=digest, progress=progress, log=log),
    }
    result = {
        "estimator": label,
        "seed": c["seed"],
        "steps": steps,
        "train_seconds": seconds,
        "steps_per_epoch": steps_per_epoch,
        "metrics": metrics,
        "per_point": {"elbo": r["elbo_per_point"], "log_px": r["log_px_per_point"]},
        "history": history,
        "snr_samples": snr_samples,
        "identity": _identity(c),
        "checkpoint_sha256": digest,
    }
    atomic_write_text(folder / EVALUATION, json.dumps(result))
    return result


_WORKER: dict[str, Any] = {}


def _init_worker(threads, data):
    torch.set_num_threads(threads)
    _WORKER["data"] = data  # the study's data, handed to each process once


def _work(label, seed, c, folder, options):
    load_plugins(c["plugins"])  # a fresh process: the kinds plugins register
    data = _WORKER["data"]
    prefix = f"[{label} seed {seed}] "
    run_one(c, folder, label, data, progress=False, log=lambda s: print(prefix + str(s), flush=True), **options)
    return label, seed


def _run_parallel(tasks, out, data, jobs, log, options):
    """The runs in ``jobs`` processes (spawned: no state shared), each with CPU threads // jobs threads."""
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    threads = max(1, (os.cpu_count() or 1) // jobs)
    log(f"{len(tasks)} runs in {jobs} processes of {threads} thread(s) each")
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads, data),
    )
    try:
        futures = [
            pool.submit(_work, label, seed, c, run_folder(out, label, seed), options) for label, seed, c in tasks
        ]
        wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            if f.done() and f.exception() is not None:
                raise f.exception()
        for f in futures:
            label, seed = f.result()
            log(f"== {label}, seed {seed}: done")
    except KeyboardInterrupt:
        raise TrainingInterrupted("interrupted: each run saved a checkpoint at its step") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- the report ---------------------------------------------------------------------------------------
def report(out: PathLike, *, reference: str | None = None, log: Log = print) -> list[dict[str, Any]]:
    """Write the tables and figures of the study in ``out`` from the evaluations its runs hold (runs not yet
    evaluated are left out and named); ``reference``: pair against this estimator instead of the study's.
    Returns one row per estimator."""
    out = Path(out)
    try:
        manifest = json.loads((out / STUDY).read_text())
    except FileNotFoundError:
        raise UsageError(
            f"{out} holds no study ({STUDY} is missing): run pyro-vae compare --out {out} --estimators ... first"
        ) from None
    except ValueError as e:
        raise UsageError(f"{out / STUDY} is damaged ({e}): run the compare command again to rewrite it") from None
    if reference is not None:
        manifest["reference"] = _check_reference(reference, manifest["estimators"])
    results: dict[str, list[dict[str, Any]]] = {}
    missing = []
    for label in manifest["estimators"]:
        for seed in manifest["seeds"]:
            try:
                r = json.loads((run_folder(out, label, seed) / EVALUATION).read_text())
            except (OSError, ValueError):
                missing.append(f"{label} seed {seed}")
                continue
            results.setdefault(label, []).append(r)
    if missing:
        log(f"not evaluated yet, left out of the report: {', '.join(missing)}")
    if not results:
        raise UsageError(f"no run of the study in {out} has been evaluated yet: run the compare command to train them")
    rows = [_summary(label, rs) for label, rs in results.items()]
    reference = manifest["reference"] if manifest["reference"] in results else next(iter(results))
    paired = _paired(results, reference)
    _write(out, manifest, rows, results, paired, reference)
    return rows


def _extra(dicts):
    """The metrics beyond ``METRICS`` that every one of ``dicts`` holds: ``EXTRA_METRICS``, then the sample
    quality per sampler (``eval.samples``)."""
    names = EXTRA_METRICS + [k for k in dicts[0] if is_sample_column(k)] if dicts else []
    return [m for m in names if all(m in d for d in dicts)]


def _summary(label, results):
    row: dict[str, Any] = {"estimator": label, "seeds": len(results)}
    row["steps"] = statistics.mean_se([r["steps"] for r in results])[0]
    row["train_seconds"] = statistics.mean_se([r["train_seconds"] for r in results])[0]
    for m in METRICS + _extra([r["metrics"] for r in results]):
        row[m], row[m + "_se"] = statistics.mean_se([r["metrics"][m] for r in results])
    return row


def _per_point(result, name):
    p = result["per_point"]
    if name == "gap":
        return torch.tensor(p["log_px"], dtype=torch.float64) - torch.tensor(p["elbo"], dtype=torch.float64)
    return torch.tensor(p[name], dtype=torch.float64)


def _paired(results, reference):
    """Each estimator's difference from ``reference``, paired by seed (and by test point where it can be)."""
    base = {r["seed"]: r for r in results[reference]}
    rows = []
    others = [label for label in results if label != reference]
    for label in others:
        mine = {r["seed"]: r for r in results[label]}
        seeds = [s for s in mine if s in base]
        if not seeds:
            continue
        for metric, name in PAIRED_BY_POINT.items():
            a = torch.stack([_per_point(mine[s], name) for s in seeds])
            b = torch.stack([_per_point(base[s], name) for s in seeds])
            rows.append(
                {
                    "estimator": label,
                    "metric": metric,
                    "paired_by": "seed and test point",
                    **statistics.paired_by_seed_and_point(a, b),
                }
            )
        for metric in PAIRED_BY_SEED:
            test = statistics.paired_by_seed(
                [mine[s]["metrics"][metric] for s in seeds], [base[s]["metrics"][metric] for s in seeds]
            )
            rows.append({"estimator": label, "metric": metric, "paired_by": "seed", **test})
    for row in rows:
        row["seeds"] = len([s for s in {r["seed"] for r in results[row["estimator"]]} if s in base])
        row["distinguishable"] = statistics.distinguishable(row["p"], len(others))
    return rows


def _fmt(v):
    if isinstance(v, str) or isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "-"
    return f"{v:.3g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-2) else f"{v:.2f}"


def _pm(mean, se):
    return _fmt(mean) if math.isnan(se) else f"{_fmt(mean)} ± {_fmt(se)}"


def _write(out, manifest, rows, results, paired, reference):
    extra = _extra(rows)
    columns = COLUMNS + [c for m in extra for c in (m, m + "_se")]
    with open(out / "compare.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with open(out / "compare_runs.csv", "w", newline="") as f:
        names = ["estimator", "seed", "steps", "train_seconds", *METRICS, *extra]
        w = csv.DictWriter(f, fieldnames=names, extrasaction="ignore")
        w.writeheader()
        for rs in results.values():
            w.writerows(
                {**{k: r[k] for k in ("estimator", "seed", "steps", "train_seconds")}, **r["metrics"]} for r in rs
            )
    with open(out / "compare_paired.csv", "w", newline="") as f:
        names = ["estimator", "metric", "paired_by", "seeds", "mean", "se", "df", "p", "distinguishable"]
        w = csv.DictWriter(f, fieldnames=names)
        w.writeheader()
        w.writerows(paired)
    histories = {label: [r["history"] for r in rs] for label, rs in results.items()}
    summary = {"study": manifest, "rows": rows, "paired": paired, "histories": histories}
    (out / "compare.json").write_text(json.dumps(summary, indent=1))
    seeds = manifest["seeds"]
    others = len(rows) - 1
    # the markdown table: the metrics less the gradient variances (in the csv), time last
    shown = [m for m in METRICS[1:] if not m.endswith("_grad_var")] + [METRICS[0], *extra]
    lines = [
        f"# ELBO estimators compared: {manifest['dataset']}, budget {manifest['budget']}, "
        f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))})",
        "",
        "For each seed, every estimator starts from the same initial weights and sees the same batches; seeds",
        "differ in both. Nats per test point, mean ± standard error over seeds (one seed: no error shown);",
        f"log p(x) with K = {manifest['iwae_samples']} importance samples; gap = log p(x) - ELBO (an estimate of",
        "KL(q || p(z|x))); gradient SNR: median over coordinates of |mean| / std of minibatch gradients at the",
        "trained parameters.",
        "",
        "| estimator | seeds | steps | " + " | ".join(shown) + " |",
        "|" + "---|" * (3 + len(shown)),
    ]
    lines += [
        f"| {r['estimator']} | {r['seeds']} | {r['steps']:.0f} | "
        + " | ".join(_pm(r[m], r[m + '_se']) for m in shown)
        + " |"
        for r in rows
    ]
    if paired:
        metrics = list(PAIRED_BY_POINT) + PAIRED_BY_SEED
        lines += [
            "",
            f"## Paired differences from {reference}",
            "",
            f"Estimator minus {reference}, mean ± standard error. Test ELBO, log p(x) and gap are paired by seed and",
            "by test point (two-way: seed-to-seed and point-to-point variation both in the error; one seed:",
            "points only); the others by seed. * : distinguishable from zero, two-sided t test at family-wise",
            f"level {statistics.LEVEL} over the {others} estimator(s) compared (Bonferroni: p < {statistics.LEVEL / max(others, 1):.3g}).",
            "",
            "| estimator | " + " | ".join(f"Δ {m}" for m in metrics) + " |",
            "|" + "---|" * (1 + len(metrics)),
        ]
        by = {(p["estimator"], p["metric"]): p for p in paired}
        for label in [r["estimator"] for r in rows if r["estimator"] != reference]:
            cells = []
            for m in metrics:
                p = by.get((label, m))
                cells.append("-" if p is None else _pm(p["mean"], p["se"]) + (" *" if p["distinguishable"] else ""))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    study_figures(rows, results, out)
