"""beta-VAE and the rate-distortion trade-off: a short sweep over beta, then the figure.

    PYRO_VAE_DATA=../shared/data python examples/beta_vae.py [--epochs 2] [--betas 0.5,1,2,4]

Rate KL(q || p) falls and distortion -E log p(x|z) rises as beta grows. The same from the shell:
    pyro-vae sweep --set train.epochs=2 --set train.beta=0.5,1,2,4 --out runs/beta-sweep
"""

import argparse
import os

from pyro_vae import sweep

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--betas", default="0.5,1,2,4")
p.add_argument("--quick", action="store_true", help="synthetic data, small model")
p.add_argument("--out", default="runs/beta-example")
args = p.parse_args()

overrides = [
    f"train.epochs={args.epochs}",
    f"train.beta={args.betas}",
    f"data.root={os.environ.get('PYRO_VAE_DATA', 'data')}",
]
if args.quick:
    overrides += ["data.dataset=synthetic", "model.latent_dim=4", "data.batch_size=100"]
rows = sweep(None, overrides, args.out, overwrite=True)

print(f"\n{'beta':>6s} {'rate':>8s} {'distortion':>11s} {'-ELBO':>8s} {'active':>7s}")
for r in rows:
    print(
        f"{r['train.beta']:>6s} {r['rate']:8.2f} {r['distortion']:11.2f} {-r['test_elbo']:8.2f} {r['active_units']:7d}"
    )
print(f"\nfigure: {args.out}/rate_distortion.png (each run a point; dashed: R + D = -ELBO)")
