"""Published MNIST numbers, one command: train with a paper's settings, evaluate with its protocol, and
write a table beside the paper's own column.

    PYRO_VAE_DATA=../shared/data python benchmarks/reproduce.py --paper burda2016 \\
        --model vae,iwae --k 1,5,50 --layers 1,2 [--budget-epochs E] [--eval-k 5000] [--test-points N]
    PYRO_VAE_DATA=../shared/data python benchmarks/reproduce.py --run vae:1:1 --run iwae:5:2 --budget-epochs 100

Papers (dynamically binarised MNIST, 60,000 training and 10,000 test images, -log p(x) in nats):

- ``burda2016`` (Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, Table 1): tanh MLPs,
  one stochastic layer 784-200-200-50 or two 784-200-200-100-100-100-50, Bernoulli p(x|z); batch 20,
  Adam (eps 1e-4), 3^i epochs at lr 1e-3 * 10^(-i/7) for i = 0..7 (3280 epochs); the VAE objective with
  k samples (``jit_trace``, k particles) or the IWAE bound with k samples (``iwae``); test log p(x) by
  importance sampling with k = 5000.
- ``vampprior2018`` (Tomczak & Welling, VAE with a VampPrior, Table 2): one stochastic layer of 40,
  MLPs 300-300, batch 100, Adam lr 5e-4, KL warm-up over 100 epochs, K = 500 pseudo-inputs;
  ``--model vae`` is the standard normal prior, ``--model vamp`` the VampPrior. (The paper trains up to
  2000 epochs with early stopping and gated MLP units; here the units are plain softplus MLPs
  and ``--budget-epochs`` sets the length; its default is 2000.)

``--budget-epochs E`` cuts the schedule proportionally (Burda: the 3^i stages keep their shares of E;
VampPrior: the warm-up keeps its 1/20 share). Each run trains into ``--out/<paper>-<model>-k<k>-l<layers>``
and resumes there if interrupted; its evaluation is kept in ``reproduce.json`` beside it, so a second
call only writes the table again. The table goes to ``--out/<paper>.md`` and is printed.
"""

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

import pyro_vae
from pyro_vae.evaluation.metrics import evaluate, standard_error
from pyro_vae.training.load import load_run

#: the papers' -log p(x) (and active units) on dynamically binarised MNIST, k = 5000
PAPERS = {
    "burda2016": {
        "title": "Burda et al. 2016, Importance Weighted Autoencoders, Table 1",
        "full_epochs": 3280,
        # (model, k, layers): (NLL, active units as "layer 1 + layer 2")
        "numbers": {
            ("vae", 1, 1): (86.76, "19"),
            ("vae", 5, 1): (86.47, "20"),
            ("vae", 50, 1): (86.35, "20"),
            ("iwae", 1, 1): (86.76, "19"),
            ("iwae", 5, 1): (85.54, "22"),
            ("iwae", 50, 1): (84.78, "25"),
            ("vae", 1, 2): (85.33, "16+5"),
            ("vae", 5, 2): (85.01, "17+5"),
            ("vae", 50, 2): (84.78, "17+5"),
            ("iwae", 1, 2): (85.33, "16+5"),
            ("iwae", 5, 2): (83.89, "21+5"),
            ("iwae", 50, 2): (82.90, "26+7"),
        },
        "models": ("vae", "iwae"),
    },
    "vampprior2018": {
        "title": "Tomczak & Welling 2018, VAE with a VampPrior, Table 2 (VAE, L = 1)",
        "full_epochs": 2000,
        "numbers": {("vae", 1, 1): (88.56, ""), ("vamp", 1, 1): (85.57, "")},
        "models": ("vae", "vamp"),
    },
}


def burda_overrides(model, k, layers, epochs):
    tanh = ", activation = 'tanh'"
    out = [
        "data.batch_size=20",
        f"train.epochs={epochs}",
        "train.optimizer={kind = 'adam', lr = 1e-3, eps = 1e-4}",
        "train.lr_schedule={kind = 'burda', stages = 8}",
        f"model.encoder={{kind = 'mlp', hidden = [200, 200]{tanh}}}",
        f"model.decoder={{kind = 'mlp', hidden = [200, 200]{tanh}}}",
    ]
    if layers == 1:
        out.append("model.latent_dim=50")
    else:
        out += [
            "model.kind=hierarchical",
            "model.latent_dim=100",
            f"model.layers=[{{latent_dim = 50, hidden = [100, 100]{tanh}}}]",
        ]
    if model == "iwae" and k > 1:
        out.append(f"train.elbo={{kind = 'iwae', num_particles = {k}}}")
    else:  # the VAE objective, k samples averaged (IWAE with k = 1 is the VAE)
        out.append(f"train.elbo={{kind = 'jit_trace', num_particles = {k}}}")
    return out


def vampprior_overrides(model, k, layers, epochs):
    if layers != 1:
        raise SystemExit("vampprior2018: only --layers 1 (the paper's HVAE is a different two-layer model)")
    warmup = max(1, round(epochs * 100 / 2000))
    out = [
        "data.batch_size=100",
        f"train.epochs={epochs}",
        "train.optimizer={kind = 'adam', lr = 5e-4}",
        f"train.kl_warmup={{kind = 'linear', epochs = {warmup}}}",
        "model.latent_dim=40",
        "model.encoder={kind = 'mlp', hidden = [300, 300]}",
        "model.decoder={kind = 'mlp', hidden = [300, 300]}",
        f"train.elbo={{kind = 'jit_trace', num_particles = {k}}}",
    ]
    if model == "vamp":
        out.append("model.prior={kind = 'vamp', pseudo_inputs = 500}")
    return out


OVERRIDES = {"burda2016": burda_overrides, "vampprior2018": vampprior_overrides}


def run_one(paper, model, k, layers, epochs, args):
    name = f"{paper}-{model}-k{k}-l{layers}"
    out = Path(args.out) / name
    overrides = [
        f"data.root={os.environ.get('PYRO_VAE_DATA', 'data')}",
        "data.binarize=dynamic",
        f"seed={args.seed}",
        f"eval.iwae_samples={args.eval_k}",
        *OVERRIDES[paper](model, k, layers, epochs),
        *args.set,
    ]
    cfg = pyro_vae.load_config(overrides=overrides)
    kept = out / "reproduce.json"
    protocol = {"eval_k": args.eval_k, "test_points": args.test_points, "epochs": epochs}
    if kept.exists():
        result = json.loads(kept.read_text())
        if result.get("protocol") == protocol and "log_px_per_image" in result:
            return name, result
    resume = (out / "checkpoint.pt").exists()  # a finished run is not trained again, only evaluated
    pyro_vae.train(
        cfg, str(out), resume=resume, progress=not args.quiet, log=(lambda *a, **kw: None) if args.quiet else print
    )
    # the training time of every epoch, across interruptions and resumes
    train_seconds = sum(
        json.loads(line).get("seconds") or 0.0
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    )
    cfg, vae, data = load_run(str(out))
    x = data.test[: args.test_points or None]
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    r = evaluate(
        vae, x, iwae_samples=args.eval_k, batch_size=cfg["eval"]["batch_size"], progress=not args.quiet, per_point=True
    )
    result = {
        "protocol": protocol,
        "log_px": r["log_px"],
        "log_px_se": r["log_px_se"],
        "log_px_per_image": r["log_px_per_point"],
        "elbo": r["elbo"],
        "active_units": r["active_units"],
        "active_units_per_layer": r.get("active_units_per_layer", [r["active_units"]]),
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - t0,
        "test_points": x.shape[0],
    }
    kept.write_text(json.dumps(result, indent=1))
    return name, result


def table(paper, rows, budget):
    spec = PAPERS[paper]
    lines = [
        f"# {spec['title']}",
        "",
        f"Ours: {budget} epochs of the paper's {spec['full_epochs']} (schedule cut proportionally), "
        f"test -log p(x) with k = {rows[0][4]['protocol']['eval_k']} importance samples on "
        f"{rows[0][4]['test_points']} test images. Paper: the full schedule, k = 5000, 10,000 images.",
        "",
        "| model | k | layers | paper -log p(x) | ours -log p(x) | ours -ELBO | paper active units | ours active units "
        "| train min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, k, layers, _, r in rows:
        nll, au = spec["numbers"].get((model, k, layers), (math.nan, ""))
        ours_au = "+".join(str(a) for a in r["active_units_per_layer"])
        lines.append(
            f"| {model} | {k} | {layers} | {nll:.2f} | {-r['log_px']:.2f} ± {r['log_px_se']:.2f} | "
            f"{-r['elbo']:.2f} | {au} | {ours_au} | {r['train_seconds'] / 60:.1f} |"
        )
    lines += ["", "± is the standard error over the test images."] + paired(rows)
    return "\n".join(lines) + "\n"


def paired(rows):
    """Each row against the first, image by image: the mean of -log p(x) differences and its standard
    error (the same images score both, so the difference is far more certain than either number)."""
    if len(rows) < 2:
        return []
    base_name, base = rows[0][3], torch.tensor(rows[0][4]["log_px_per_image"], dtype=torch.float64)
    out = [
        "",
        f"Paired with {base_name} on the same images (-log p(x) of the row minus the first's; negative: better):",
        "",
    ]
    for *_, name, r in rows[1:]:
        d = -(torch.tensor(r["log_px_per_image"], dtype=torch.float64) - base)
        se = standard_error(d)
        out.append(
            f"- {name}: {d.mean().item():+.2f} ± {se:.2f} nats ({abs(d.mean().item()) / se:.1f} standard errors)"
        )
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paper", choices=sorted(PAPERS), default="burda2016")
    p.add_argument("--model", default="vae,iwae", help="comma-separated: burda2016 vae,iwae; vampprior2018 vae,vamp")
    p.add_argument("--k", default="1,5,50", help="comma-separated sample counts of the training objective")
    p.add_argument("--layers", default="1,2", help="comma-separated numbers of stochastic layers (1, 2)")
    p.add_argument("--budget-epochs", type=int, default=0, help="train this many epochs (0: the paper's full schedule)")
    p.add_argument("--eval-k", type=int, default=5000, help="importance samples for the test log p(x) (paper: 5000)")
    p.add_argument("--test-points", type=int, default=0, help="evaluate on the first N test images (0: all 10,000)")
    p.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="MODEL:K:LAYERS",
        help="one run, e.g. --run vae:1:1 --run iwae:5:2 (repeatable; instead of the cross product of "
        "--model, --k and --layers); the first is the one the others are paired with",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], help="one more config override, e.g. device=cuda")
    p.add_argument("--out", default="runs/reproduce")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    spec = PAPERS[args.paper]
    models = args.model.split(",")
    try:
        ks = [int(v) for v in args.k.split(",")]
        layer_counts = [int(v) for v in args.layers.split(",")]
        combos = [(m, k, n) for n in layer_counts for m in models for k in ks]
        if args.run:
            combos = [(m, int(k), int(n)) for m, k, n in (r.split(":") for r in args.run)]
    except ValueError:
        p.error("--k and --layers take comma-separated integers, --run takes MODEL:K:LAYERS (e.g. iwae:5:2)")
    for m, k, n in combos:
        if m not in spec["models"]:
            p.error(f"--paper {args.paper} knows the models {', '.join(spec['models'])}, not {m!r}")
        if k < 1 or n not in (1, 2):
            p.error("sample counts k must be >= 1 and layers 1 or 2")
    epochs = args.budget_epochs or spec["full_epochs"]
    rows = []
    for model, k, layers in combos:
        name, result = run_one(args.paper, model, k, layers, epochs, args)
        rows.append((model, k, layers, name, result))
        print(
            f"{name}: -log p(x) = {-result['log_px']:.2f}, -ELBO = {-result['elbo']:.2f}, "
            f"active units {result['active_units_per_layer']}"
        )
    text = table(args.paper, rows, epochs)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.paper}.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
