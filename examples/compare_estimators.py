"""Compare ELBO estimators honestly: the same model and data, every estimator of a seed from the same initial
weights and batches, several seeds, one budget; mean +- standard error over seeds and each estimator's paired
difference from the first.

    PYRO_VAE_DATA=../shared/data python examples/compare_estimators.py [--epochs 2] [--seeds 3] [--quick]

--quick runs on the small synthetic data set in seconds. The same study from the shell:
    pyro-vae compare --set train.epochs=2 --seeds 3 --estimators trace,iwae,dreg,stl
Equal time instead of equal steps: --budget seconds:60. Run the same command again after a stop: it continues.
"""

import argparse
import os

import pyro_vae
from pyro_vae import compare

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--seeds", type=int, default=3)
p.add_argument("--quick", action="store_true", help="synthetic data, small model")
p.add_argument("--out", default="runs/compare-example")
args = p.parse_args()

overrides = [
    f"train.epochs={args.epochs}",
    f"data.root={os.environ.get('PYRO_VAE_DATA', 'data')}",
    "eval.iwae_samples=500",
]
if args.quick:
    overrides += ["data.dataset=synthetic", "model.latent_dim=4", "data.batch_size=100", "eval.iwae_samples=100"]
cfg = pyro_vae.load_config(overrides=overrides)
estimators = "trace,score_function_z,iwae,dreg,stl"
rows = compare(cfg, estimators, args.out, seeds=args.seeds, overwrite=True)


def pm(row, key):
    return f"{row[key]:8.2f} ± {row[key + '_se']:4.2f}"


print(f"\n{'estimator':16s} {'ELBO':>15s} {'log p(x)':>15s} {'gap':>15s} {'enc SNR':>8s} {'s/epoch':>8s}")
for r in rows:
    print(
        f"{r['estimator']:16s} {pm(r, 'test_elbo')} {pm(r, 'log_px')} {pm(r, 'gap')} "
        f"{r['encoder_snr']:8.3f} {r['seconds_per_epoch']:8.1f}"
    )
print(
    f"\nfull table and paired differences: {args.out}/compare.md; figures: elbo_vs_steps.png, elbo_vs_time.png, snr.png"
)
