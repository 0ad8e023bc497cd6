"""The ``pyro-vae`` command line: train, evaluate, sample."""

import argparse
import json
import sys
from pathlib import Path

from .errors import PyroVAEError, TrainingInterrupted


def _train(args):
    from .checkpoint import load_checkpoint
    from .config import apply_overrides, load_config, validate
    from .train import default_out, train

    if args.resume:
        cfg = load_checkpoint(Path(args.resume) / "checkpoint.pt")["config"]
        cfg = validate(apply_overrides(validate(cfg), args.set))
        train(cfg, args.resume, resume=True, progress=not args.quiet)
        return
    cfg = load_config(args.config, args.set)
    out = args.out or default_out(cfg)
    cfg["train"]["out"] = str(out)
    print(f"training into {out}")
    train(cfg, out, overwrite=args.overwrite, progress=not args.quiet)


def _evaluate(args):
    from .evaluate import evaluate
    from .train import load_run

    cfg, vae, data = load_run(args.run)
    k = args.iwae_samples if args.iwae_samples is not None else cfg["eval"]["iwae_samples"]
    result = evaluate(vae, data.test, iwae_samples=k, batch_size=cfg["eval"]["batch_size"], progress=not args.json)
    if args.json:
        print(json.dumps(result))
        return
    names = {"elbo": "test ELBO", "log_px": f"log p(x) (K={k})", "rate": "rate KL(q||p)",
             "distortion": "distortion -E log p(x|z)", "active_units": "active units"}
    for key, label in names.items():
        if key in result:
            v = result[key]
            print(f"{label:28s} {v:10.3f}" if isinstance(v, float) else f"{label:28s} {v:10d}")
    print("(nats per data point)")


def _sample(args):
    import torch

    from .plots import save_grid
    from .train import load_run

    cfg, vae, _ = load_run(args.run)
    torch.manual_seed(args.seed)
    out = args.out or str(Path(args.run) / "samples.png")
    if not save_grid(vae.sample(args.n), out):
        raise PyroVAEError(f"data of shape {vae.data_shape} are not images; nothing to draw")
    print(f"wrote {out}")


def _compare(args):
    from .compare import compare
    from .config import load_config
    from .train import default_out

    cfg = load_config(args.config, args.set)
    out = args.out or default_out(cfg).replace(cfg["data"]["dataset"], "compare-" + cfg["data"]["dataset"], 1)
    print(f"comparing into {out}")
    rows = compare(cfg, args.estimators, out, snr_samples=args.snr_samples, progress=not args.quiet,
                   overwrite=args.overwrite)
    print()
    print((Path(out) / "compare.md").read_text())
    print(f"wrote {out}/compare.csv, compare.md, elbo_vs_epoch.png, elbo_vs_time.png, snr.png")
    return rows


def _sweep(args):
    from .sweep import sweep

    out = args.out or "runs/sweep"
    rows = sweep(args.config, args.set, out, iwae_samples=args.iwae_samples, progress=not args.quiet,
                 overwrite=args.overwrite)
    keys = [k for k in rows[0] if k not in ("run", "folder")]
    print("\n" + " | ".join(["run", *keys]))
    for r in rows:
        print(" | ".join([r["run"], *(f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys)]))
    print(f"wrote {out}/sweep.csv and {out}/rate_distortion.png")


def _plot(args):
    import json as _json

    from .evaluate import evaluate
    from .plots import plot_run
    from .train import load_run

    cfg, vae, data = load_run(args.run)
    history = [_json.loads(line) for line in (Path(args.run) / "metrics.jsonl").read_text().splitlines()]
    r = evaluate(vae, data.test[:2000], iwae_samples=0)
    out = Path(args.out or Path(args.run) / "figures")
    for name in plot_run(vae, data, history, out, r.get("kl_per_dim")):
        print(f"wrote {out / name}")


def _run_args(parser, out_help, set_metavar="KEY=VALUE", set_help="override a config key (repeatable)",
              config_help="a TOML config file", overwrite_help="replace runs already in --out"):
    """The arguments of the commands that train: --config, --set, --out, --overwrite, --quiet."""
    parser.add_argument("--config", help=config_help)
    parser.add_argument("--set", action="append", default=[], metavar=set_metavar, help=set_help)
    parser.add_argument("--out", help=out_help)
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def make_parser():
    p = argparse.ArgumentParser(prog="pyro-vae", description="Variational autoencoders the Pyro way.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a VAE and write a run folder")
    _run_args(t, "the run folder (default: train.out, runs/DATASET-TIME)",
              set_help="override a config key, e.g. --set train.epochs=1 (repeatable)",
              config_help="a TOML config file (every key has a default)", overwrite_help="replace a run already in --out")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="test ELBO, log p(x), rate, distortion, active units")
    e.add_argument("run", help="a run folder")
    e.add_argument("--iwae-samples", type=int, help="importance samples K for log p(x) (default: eval.iwae_samples)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_evaluate)

    s = sub.add_parser("sample", help="draw x ~ p(z) p(x|z) and save an image grid")
    s.add_argument("run", help="a run folder")
    s.add_argument("--n", type=int, default=64, help="number of samples")
    s.add_argument("--out", help="PNG file (default: RUN/samples.png)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_sample)
    c = sub.add_parser("compare", help="train one model per ELBO estimator and compare them")
    _run_args(c, "the study folder (one run folder per estimator inside)")
    c.add_argument("--estimators", required=True,
                   help="comma-separated kinds (trace,meanfield,iwae,dreg,stl,...), the variants score_function "
                        "and score_function_baseline, or label={kind='renyi', alpha=0.5, num_particles=5}")
    c.add_argument("--snr-samples", type=int, default=20, help="gradient estimates for the variance/SNR columns")
    c.set_defaults(func=_compare)
    w = sub.add_parser("sweep", help="one run per value of swept config keys, then sweep.csv and a rate-distortion figure")
    _run_args(w, "the sweep folder (default runs/sweep)", set_metavar="KEY=V1,V2,...",
              set_help="a key with several comma-separated values is swept (the product of all swept keys)")
    w.add_argument("--iwae-samples", type=int, default=0, help="also estimate log p(x) with K samples")
    w.set_defaults(func=_sweep)

    f = sub.add_parser("plot", help="figures of a finished run: curves, reconstructions, samples, traversals")
    f.add_argument("run", help="a run folder")
    f.add_argument("--out", help="folder for the PNG files (default RUN/figures)")
    f.set_defaults(func=_plot)
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    try:
        args.func(args)
    except TrainingInterrupted as e:
        print(f"pyro-vae {args.command}: interrupted: {e}", file=sys.stderr)
        return 130
    except PyroVAEError as e:
        print(f"pyro-vae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
