"""Swap the prior, likelihood and posterior with one line each, and compare on MNIST.

    PYRO_VAE_DATA=../shared/data python examples/swap_prior_likelihood.py [--epochs 2] [--iwae-samples 200]
    python examples/swap_prior_likelihood.py --quick          # synthetic data, seconds

Trains three VAEs that differ only in their components and prints test ELBO and log p(x).
"""

import argparse
import os
import tempfile

import torch

import pyro_vae

CONFIGS = {
    "standard_normal + bernoulli": ["model.prior={kind='standard_normal'}"],
    "vamp(500) + bernoulli": ["model.prior={kind='vamp', pseudo_inputs=500}"],
    "flow prior + full_normal q": ["model.prior={kind='flow', layers=2}", "model.posterior={kind='full_normal'}"],
}

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--iwae-samples", type=int, default=200)
p.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
p.add_argument("--quick", action="store_true", help="synthetic data, small model")
args = p.parse_args()

root = os.environ.get("PYRO_VAE_DATA", "data")
data = pyro_vae.load_data("synthetic" if args.quick else "mnist", root=root, binarize="dynamic")
quick = ["model.latent_dim=4", "data.batch_size=100", "model.prior.pseudo_inputs=20"] if args.quick else []
rows = []
with tempfile.TemporaryDirectory() as tmp:
    for name, overrides in CONFIGS.items():
        cfg = pyro_vae.load_config(
            overrides=[
                f"train.epochs={args.epochs}",
                f"data.root={root}",
                *overrides,
                *(q for q in quick if "pseudo_inputs" not in q or "vamp" in name),
            ]
        )
        out = os.path.join(args.out or tmp, name.replace(" ", "").replace("+", "_"))
        print(f"== {name}")
        vae, history = pyro_vae.train(cfg, out, data=data, progress=not args.quick)
        torch.manual_seed(0)
        r = pyro_vae.evaluate(vae, data.test, iwae_samples=args.iwae_samples, progress=not args.quick)
        rows.append((name, r, sum(h["seconds"] for h in history) / len(history)))

print(f"\n{'model':30s} {'test ELBO':>10s} {'log p(x)':>10s} {'rate':>7s} {'distortion':>10s} {'s/epoch':>8s}")
for name, r, sec in rows:
    print(f"{name:30s} {r['elbo']:10.2f} {r['log_px']:10.2f} {r['rate']:7.2f} {r['distortion']:10.2f} {sec:8.1f}")
print(f"(nats per test image; log p(x) with K = {args.iwae_samples} importance samples)")
