"""The ``pyro-vae`` command line: train, evaluate, sample, compare, sweep, plot.

Every failure the user can cause ends in one line, ``pyro-vae CMD: error: ...``, and exit
status 2 (argument errors included); warnings are one line each, ``pyro-vae CMD: warning: ...``.
"""

import argparse
import json
import sys
import warnings
from pathlib import Path

from .checks import describe
from .errors import PyroVAEError, PyroVAEWarning, TrainingInterrupted, UsageError


def _with_plugins(cfg, args):
    """The config with the --import plugins recorded, so every later command on the run imports them."""
    from .config.validate import validate

    extra = [p for p in args.plugins if p not in cfg["plugins"]]
    return validate({**cfg, "plugins": cfg["plugins"] + extra}) if extra else cfg


def _train(args):
    from .config.load import apply_overrides, load_config
    from .config.validate import validate
    from .files import check_folder_target
    from .training.distributed import init
    from .training.folder import CHECKPOINT, RUN_FILES, RunFolder, check_output_file, default_out
    from .training.load import saved_config
    from .training.resume import edited_config
    from .training.runner import train

    if args.resume:
        given = [
            flag
            for flag, value in (("--out", args.out), ("--config", args.config), ("--overwrite", args.overwrite))
            if value
        ]
        if given:
            raise UsageError(
                f"--resume continues the run in {args.resume} with its own config and folder, so "
                f"{' and '.join(given)} cannot go with it: change settings with --set, or start a new "
                "run without --resume"
            )
        folder = RunFolder(args.resume)  # every rank reads the config (several machines: a shared file system)
        saved = saved_config(folder.load_checkpoint()["config"], folder.file(CHECKPOINT))
        base = edited_config(folder, saved) or saved  # config.toml edited by hand: its edits apply, by the same rules
        cfg = _with_plugins(validate(apply_overrides(base, args.set)), args)
        train(cfg, args.resume, resume=True, progress=not args.quiet)
        return
    cfg = _with_plugins(load_config(args.config, args.set), args)
    world = init(cfg["device"])
    out = world.broadcast(args.out or default_out(cfg))  # one folder, though the ranks' clocks differ
    if args.config:  # the run replaces these files: never the config file it was started from
        for name in RUN_FILES:
            check_output_file(
                Path(out) / name,
                inputs=[args.config],
                guard_run=False,
                hint="keep the config file outside the run's --out folder",
            )
    check_folder_target(out)  # a path the file system cannot hold is refused here, before it is printed
    cfg["train"]["out"] = str(out)
    if world.is_main:
        print(f"training into {out}" + (f" ({world.size} ranks)" if world.distributed else ""))
    train(cfg, out, overwrite=args.overwrite, progress=not args.quiet)


def _evaluate(args):
    from .evaluation.metrics import classification, clustering, evaluate
    from .evaluation.representation import representation_columns
    from .training.load import load_run

    cfg, vae, data = load_run(args.run)
    k = args.iwae_samples if args.iwae_samples is not None else cfg["eval"]["iwae_samples"]
    samples = _quality_settings(args, cfg)
    if samples["n"]:  # a request that cannot run is refused before the long evaluation
        from .evaluation.generation import check_request

        check_request(vae, data, samples["samplers"], samples["n"], samples["features"])
    result = evaluate(
        vae,
        data.test,
        iwae_samples=k,
        batch_size=cfg["eval"]["batch_size"],
        progress=not args.json,
        labels=data.test_labels,
    )
    result.update(clustering(vae, data.test, data.test_labels, cfg["eval"]["batch_size"]))
    result.update(classification(vae, data.test, data.test_labels, cfg["eval"]["batch_size"]))
    if args.surgery is not None:
        cfg["eval"]["surgery"] = args.surgery
    result.update(representation_columns(vae, data, cfg))
    if samples["n"]:
        result["samples"] = _sample_quality(args, vae, data, samples, quiet=args.json)
    if args.json:
        print(json.dumps(result))
        return
    names = {
        "elbo": "test ELBO",
        "log_px": f"log p(x) (K={k})",
        "rate": "rate KL(q||p)",
        "distortion": "distortion -E log p(x|z)",
        "active_units": "active units",
        "cluster_accuracy": "cluster accuracy",
        "accuracy": "test accuracy q(y|x)",
        "bits_per_dim": "bits/dim from log p(x)",
        "elbo_bits_per_dim": "bits/dim from the ELBO",
        "mutual_information": "I(x; z) (ELBO surgery)",
        "marginal_kl": "KL(q(z) || p(z))",
        "total_correlation": "  total correlation",
        "dimensionwise_kl": "  dimension-wise KL",
        "mig": "MIG",
        "dci_disentanglement": "DCI disentanglement",
        "dci_completeness": "DCI completeness",
        "dci_informativeness": "DCI informativeness",
        "factor_vae": "FactorVAE score",
    }
    for key, label in names.items():
        if key in result:
            v = result[key]
            se = f"  ± {result['log_px_se']:.3f} (standard error over the test points)" if key == "log_px" else ""
            print(f"{label:28s} {v:10.3f}{se}" if isinstance(v, float) else f"{label:28s} {v:10d}")
    if "rate_per_layer" in result:
        print("per stochastic layer (z_l: rate in nats, active units):")
        for layer, (r, a) in enumerate(zip(result["rate_per_layer"], result["active_units_per_layer"]), start=1):
            print(f"  z_{layer}: {r:8.3f}  {a:4d}")
    if "kl_per_dim" in result:
        per_dim = sorted(enumerate(result["kl_per_dim"], start=1), key=lambda jv: -jv[1])
        print("KL per latent dimension, largest first (z_j: nats):")
        for i in range(0, len(per_dim), 8):
            print("  " + "  ".join(f"z_{j}: {v:.3f}" for j, v in per_dim[i : i + 8]))
    if "samples" in result:
        _print_quality(result["samples"])
    print(
        "(nats per data point; bits/dim per pixel and channel)"
        if "elbo_bits_per_dim" in result
        else "(nats per data point)"
    )


def _quality_settings(args, cfg):
    """The sample-quality settings of ``evaluate``: the run's config, with --samples, --samplers, --features."""
    from .evaluation.generation import configured

    samplers = [s for s in args.samplers.split(",") if s] if args.samplers else None
    return configured(cfg, n=args.samples, samplers=samplers, features=args.features)


def _sample_quality(args, vae, data, settings, quiet=False):
    from .evaluation.generation import sample_quality
    from .training.folder import checkpoint_digest

    return sample_quality(
        vae,
        data,
        **settings,
        folder=args.run,
        key=checkpoint_digest(args.run),
        progress=not quiet,
        log=(lambda *a, **k: None) if quiet else print,
    )


def _print_quality(q):
    f = q["features"]
    acc = f" (test accuracy {f['test_accuracy']:.4f})" if f.get("test_accuracy") is not None else ""
    print(
        f"sample quality: {f['n']} images {f['images']} per sampler against {f['n']} test images, "
        f"{f['kind']} features{acc}"
    )
    print(f"  {'sampler':10s} {'FID':>9s} {'KID':>9s} {'precision':>10s} {'recall':>8s}")
    for name, m in q.items():
        if name != "features":
            print(f"  {name:10s} {m['fid']:9.3f} {m['kid']:9.4f} {m['precision']:10.3f} {m['recall']:8.3f}")
    print(
        "  (floor: training images against the same test images; lower FID/KID and higher precision/recall are better)"
    )


def _sample(args):
    import torch

    from .evaluation.plots import check_image_path, save_grid
    from .training.folder import check_output_file
    from .training.load import load_model

    run = Path(args.run)
    name = "samples.png" if args.sampler == "prior" else f"samples-{args.sampler}.png"  # beside the prior's grid
    default = run.with_name(f"{run.stem}-{name}") if run.is_file() else run / name
    out = check_image_path(check_output_file(args.out or str(default), inputs=[args.run]))
    cfg, vae = load_model(args.run)
    torch.manual_seed(args.seed)
    what = "E[x|z]" if args.mean else "x ~ p(x|z)"
    if args.sampler != "prior":
        images = _posthoc_samples(args, cfg, vae)
        what = what.replace("p(z)", args.sampler)
        if not save_grid(images, out, title=f"{args.n} draws {what}, z ~ {args.sampler} fitted to q(z)"):
            raise PyroVAEError(f"data of shape {vae.data_shape} are not images; nothing to draw")
        print(f"wrote {out}")
        return
    if args.label is not None:
        images = vae.sample(args.n, mean=args.mean, y=args.label)
        what = what.replace("z]", f"z, y={args.label}]").replace("z)", f"z, y={args.label})")
    else:
        images = vae.sample(args.n, mean=args.mean)
    if not save_grid(images, out, title=f"{args.n} draws {what}, z ~ p(z)"):
        raise PyroVAEError(f"data of shape {vae.data_shape} are not images; nothing to draw")
    print(f"wrote {out}")


def _posthoc_samples(args, cfg, vae):
    """Images from z drawn by a post-hoc sampler fitted to the run's q(z) (read from the run if fitted already)."""
    import torch

    from .config.build import load_config_data
    from .evaluation.generation import fitted_sampler, generate
    from .training.folder import checkpoint_digest

    if Path(args.run).is_file():
        raise UsageError("a post-hoc sampler is fitted to a run's training data: give the run folder, not a model file")
    if args.label is not None:
        raise UsageError("--label draws from the model conditioned on y; post-hoc samplers fit q(z) alone: drop one")
    sampler = fitted_sampler(
        args.sampler,
        vae,
        _LazyData(lambda: load_config_data(cfg)),
        folder=args.run,
        key=checkpoint_digest(args.run),
        seed=cfg["seed"],
        progress=True,
    )
    with torch.no_grad():
        return generate(vae, sampler, args.n, seed=args.seed, mean=args.mean)


class _LazyData:
    """The run's data, loaded only if a sampler must be fitted (a fitted one is read from the run)."""

    def __init__(self, load):
        self._load, self._data = load, None

    def __getattr__(self, name):
        if self._data is None:
            self._data = self._load()
        return getattr(self._data, name)


def _compare(args):
    from .config.load import load_config
    from .studies.compare import compare, report
    from .training.folder import default_out

    if args.report is not None:
        report(args.report, reference=args.reference)
        out = args.report
    else:
        if not args.estimators:
            raise UsageError("compare needs --estimators (e.g. --estimators trace,iwae,dreg), or --report DIR")
        cfg = _with_plugins(load_config(args.config, args.set), args)
        out = args.out or default_out(cfg).replace(cfg["data"]["dataset"], "compare-" + cfg["data"]["dataset"], 1)
        print(f"comparing into {out}")
        compare(
            cfg,
            args.estimators,
            out,
            seeds=args.seeds,
            reference=args.reference,
            budget=args.budget,
            jobs=args.jobs,
            snr_samples=args.snr_samples,
            progress=not args.quiet,
            overwrite=args.overwrite,
        )
    print()
    print((Path(out) / "compare.md").read_text())
    print(
        f"wrote {out}/compare.csv, compare_runs.csv, compare_paired.csv, compare.md, elbo_vs_steps.png, "
        "elbo_vs_time.png, snr.png"
    )


def _sweep(args):
    from .studies.sweep import sweep

    out = args.out or "runs/sweep"
    recorded = [f"plugins={json.dumps(args.plugins)}"] if args.plugins else []  # each run records them
    rows = sweep(
        args.config,
        args.set + recorded,
        out,
        iwae_samples=args.iwae_samples,
        progress=not args.quiet,
        overwrite=args.overwrite,
        seeds=args.seeds,
    )
    keys = [k for k in rows[0] if k not in ("run", "folder")]
    print("\n" + " | ".join(["run", *keys]))
    for r in rows:
        print(" | ".join([r["run"], *(f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys)]))
    figures = [name for name in ("rate_distortion.png", "disentanglement.png") if (Path(out) / name).exists()]
    print(f"wrote {out}/sweep.csv and " + " and ".join(f"{out}/{name}" for name in figures))


def _export(args):
    from .training.export import export_model

    n = export_model(args.run, args.file)
    print(f"wrote {args.file}: {n:,} weights and the config that builds them (load with pyro_vae.load_model)")


def _plot(args):
    from .evaluation.metrics import evaluate
    from .evaluation.plots import is_image_shape, plot_run, traversals
    from .files import make_folder
    from .training.folder import METRICS, read_metrics
    from .training.load import load_run

    cfg, vae, data = load_run(args.run)
    history, damaged = read_metrics(Path(args.run) / METRICS)
    if damaged:
        warnings.warn(
            PyroVAEWarning(
                f"skipped {len(damaged)} damaged line(s) of {Path(args.run) / METRICS} "
                f"(line {', '.join(map(str, damaged[:5]))}{', ...' if len(damaged) > 5 else ''})"
            )
        )
    history = [h for h in history if all(isinstance(h.get(k), (int, float)) for k in ("train_loss", "test_elbo"))]
    if not history:
        raise PyroVAEError(f"{Path(args.run) / METRICS} holds no finished epoch to plot")
    r = evaluate(
        vae, data.test[:2000], iwae_samples=0, labels=None if data.test_labels is None else data.test_labels[:2000]
    )
    out = Path(args.out or Path(args.run) / "figures")
    if args.traversals:
        if not is_image_shape(vae.data_shape) or hasattr(vae, "classes"):
            raise UsageError(
                "--traversals draws images decoded from z alone: not for m2 or cvae, or data that are not images"
            )
        make_folder(out, "choose another --out")
        traversals(vae, data, out / "traversals.png", r.get("kl_per_dim"))
        print(f"wrote {out / 'traversals.png'}")
        return
    for name in plot_run(vae, data, history, out, r.get("kl_per_dim")):
        print(f"wrote {out / name}")


def _int_in(low, high=None, hint=""):
    """An argparse type: an integer in [low, high]."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {describe(True, low, high)}, got {value}{hint}")
        return value

    return parse


def _path(text):
    """An argparse type: a path the file system can hold (``files.check_path``), checked once, here at the edge."""
    from .files import check_path

    try:
        return check_path(text, "the path", "choose another")
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument raises UsageError (one line, exit 2) instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def _run_args(
    parser,
    out_help,
    set_metavar="KEY=VALUE",
    set_help="override a config key (repeatable)",
    config_help="a TOML config file",
    overwrite_help="replace runs already in --out",
):
    """The arguments of the commands that train: --config, --set, --out, --overwrite, --quiet."""
    parser.add_argument("--config", type=_path, help=config_help)
    parser.add_argument("--set", action="append", default=[], metavar=set_metavar, help=set_help)
    parser.add_argument("--out", type=_path, help=out_help)
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _import_arg(parser, dest):
    parser.add_argument(
        "--import",
        dest=dest,
        action="append",
        default=[],
        metavar="MODULE",
        help="import a plugin module (or .py file) that registers kinds; repeatable; "
        "recorded in the run, so later commands on it import it again",
    )


def make_parser():
    p = _Parser(prog="pyro-vae", description="Variational autoencoders the Pyro way.")
    _import_arg(p, "imports_before")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a VAE and write a run folder")
    _run_args(
        t,
        "the run folder (default: train.out, runs/DATASET-TIME)",
        set_help="override a config key, e.g. --set train.epochs=1 (repeatable)",
        config_help="a TOML config file (every key has a default)",
        overwrite_help="replace a run already in --out",
    )
    t.add_argument("--resume", metavar="DIR", type=_path, help="continue the run in DIR from its checkpoint")
    _import_arg(t, "imports_after")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="test ELBO, log p(x), rate, distortion, active units")
    e.add_argument("run", type=_path, help="a run folder")
    e.add_argument(
        "--iwae-samples",
        type=_int_in(0),
        metavar="K",
        help="importance samples K for log p(x); 0 skips it (default: eval.iwae_samples)",
    )
    e.add_argument(
        "--surgery",
        type=_int_in(0),
        metavar="N",
        help="test points of the ELBO surgery: I(x; z), total correlation, dimension-wise KL (default: eval.surgery; "
        "0: off)",
    )
    e.add_argument(
        "--samples",
        type=_int_in(0),
        metavar="N",
        help="also measure sample quality (FID, KID, precision, recall) on N generated images per sampler against "
        "N test images, beside the floor (default: eval.samples; 0: off)",
    )
    e.add_argument(
        "--samplers",
        metavar="LIST",
        help="comma-separated latent samplers for --samples: prior, gmm, flow (default: eval.samplers)",
    )
    e.add_argument("--features", metavar="KIND", help="feature network: auto, classifier, inception, or a plugin's")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    _import_arg(e, "imports_after")
    e.set_defaults(func=_evaluate)

    s = sub.add_parser("sample", help="draw x ~ p(z) p(x|z) and save an image grid")
    s.add_argument("run", type=_path, help="a run folder, or a model file from pyro-vae export")
    s.add_argument("--n", type=_int_in(1, MAX_SAMPLES), default=64, help="number of samples (default 64)")
    s.add_argument(
        "--out", type=_path, help="image file, .png/.jpg/.pdf/... (default: RUN/samples.png); its folder is created"
    )
    s.add_argument("--mean", action="store_true", help="draw the means E[x|z] instead of samples x ~ p(x|z)")
    s.add_argument(
        "--sampler",
        default="prior",
        help="where z comes from: prior (p(z)), or gmm / flow, fitted to the training codes z ~ q(z|x) "
        "once and kept in RUN/samplers; their grid defaults to RUN/samples-SAMPLER.png (default prior)",
    )
    s.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0, help="random seed (default 0)")
    s.add_argument(
        "--label",
        type=_int_in(0, 10_000),
        default=None,
        help="draw for this label only: the model conditioned on y (cvae, m2)",
    )
    _import_arg(s, "imports_after")
    s.set_defaults(func=_sample)
    c = sub.add_parser("compare", help="train one model per ELBO estimator and compare them")
    _run_args(c, "the study folder (a run folder per estimator and seed inside, LABEL/seed-S; run again: it continues)")
    c.add_argument(
        "--estimators",
        help="comma-separated kinds (trace,meanfield,iwae,dreg,stl,...), the variants score_function_z "
        "and score_function_z_baseline, or label={kind='renyi', alpha=0.5, num_particles=5}",
    )
    c.add_argument(
        "--snr-samples",
        type=_int_in(2, 10_000),
        default=20,
        help="gradient estimates for the variance/SNR columns (at least 2; default 20)",
    )
    c.add_argument(
        "--seeds",
        type=_int_in(1, 1000),
        default=1,
        help="train each estimator from N seeds (seed, seed + 1, ...): mean +- standard error and paired "
        "differences over them (default 1)",
    )
    c.add_argument(
        "--reference",
        metavar="LABEL",
        help="the estimator the others are compared with, pair by pair (default: the first)",
    )
    c.add_argument(
        "--budget",
        metavar="KIND:AMOUNT",
        help="the same budget for every run: steps:N, epochs:E or seconds:T of training (default: train.epochs)",
    )
    c.add_argument("--jobs", type=_int_in(1, 256), default=1, help="runs at once, in separate processes (default 1)")
    c.add_argument(
        "--report",
        type=_path,
        metavar="DIR",
        help="only rewrite the tables and figures of the study in DIR from the runs it holds",
    )
    _import_arg(c, "imports_after")
    c.set_defaults(func=_compare)
    w = sub.add_parser(
        "sweep", help="one run per value of swept config keys, then sweep.csv and a rate-distortion figure"
    )
    _run_args(
        w,
        "the sweep folder (default runs/sweep)",
        set_metavar="KEY=V1,V2,...",
        set_help="a key with several comma-separated values is swept (the product of all swept keys)",
    )
    w.add_argument(
        "--iwae-samples",
        type=_int_in(0),
        default=0,
        metavar="K",
        help="also estimate log p(x) with K samples (default 0: skip)",
    )
    w.add_argument(
        "--seeds",
        type=_int_in(1, 1000),
        default=1,
        help="train each combination from N seeds: each number as mean and standard error (default 1)",
    )
    _import_arg(w, "imports_after")
    w.set_defaults(func=_sweep)

    x = sub.add_parser("export", help="write a run's trained model to one file (weights + config) for sharing")
    x.add_argument("run", type=_path, help="a run folder")
    x.add_argument(
        "file", type=_path, help="FILE.safetensors (pip install safetensors), or any other name for a torch file"
    )
    _import_arg(x, "imports_after")
    x.set_defaults(func=_export)

    f = sub.add_parser("plot", help="figures of a finished run: curves, reconstructions, samples, traversals")
    f.add_argument("run", type=_path, help="a run folder")
    f.add_argument("--out", type=_path, help="folder for the PNG files (default RUN/figures)")
    f.add_argument(
        "--traversals",
        action="store_true",
        help="only the latent traversals: a row per active z_j, moved over its prior's range, the others fixed",
    )
    _import_arg(f, "imports_after")
    f.set_defaults(func=_plot)
    return p


def _speaks(error):
    """Under torchrun, rank 0 says what all ranks would (a config error, an interruption); another rank
    speaks only of its own failures, once it has joined the others."""
    from .training.distributed import RankZeroError, RendezvousError, check_environment, launched, world

    if not launched() or isinstance(error, RendezvousError):  # a rank's own variables, or finding the others
        return True
    w = world()
    if not w.distributed:  # it failed before joining the others: every rank fails alike, rank 0 says it
        try:
            return check_environment()[0] == 0
        except RendezvousError:  # no consistent world, so no rank 0 to speak for this one
            return True
    return w.is_main or not isinstance(error, (RankZeroError, TrainingInterrupted))


def _rank_prefix():
    from .training.distributed import world

    w = world()
    return f"[rank {w.rank}] " if w.distributed and not w.is_main else ""


def _one_line(text):
    return " ".join(str(text).split())


def main(argv=None):
    command = "pyro-vae"
    try:
        with warnings.catch_warnings():

            def show(message, category, filename, lineno, file=None, line=None):
                """Every warning as one line: ours as it is, another library's with its kind and origin."""
                if issubclass(category, PyroVAEWarning):
                    print(f"{command}: warning: {_one_line(message)}", file=sys.stderr)
                else:
                    parts = Path(filename).parts  # the library: the folder under site-packages, else the file
                    origin = (
                        parts[parts.index("site-packages") + 1]
                        if "site-packages" in parts[:-1]
                        else Path(filename).stem
                    )
                    print(
                        f"{command}: warning ({category.__name__} from {origin}): {_one_line(message)}", file=sys.stderr
                    )

            warnings.showwarning = show
            warnings.simplefilter("default", PyroVAEWarning)  # ours say what was skipped or changed: they reach
            # the user whatever filters PYTHONWARNINGS or -W set for other libraries' warnings
            args = make_parser().parse_args(argv)
            command = f"pyro-vae {args.command}"
            from .config.plugins import load_entry_points, load_plugins

            load_entry_points()
            args.plugins = load_plugins(args.imports_before + args.imports_after)
            args.func(args)
    except TrainingInterrupted as e:
        if _speaks(e):
            print(f"{_rank_prefix()}{command}: interrupted: {_one_line(e)}", file=sys.stderr)
        return 130
    except PyroVAEError as e:
        if _speaks(e):
            print(f"{_rank_prefix()}{command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else 0
    return 0


#: the largest sample grid: 100 x 100 images
MAX_SAMPLES = 10_000


if __name__ == "__main__":
    sys.exit(main())
