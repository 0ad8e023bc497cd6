"""Compare ELBO estimators on the same model, data, initial weights and number of steps.

    PYRO_VAE_DATA=../shared/data python examples/compare_estimators.py [--epochs 2] [--quick]

--quick runs on the small synthetic data set in seconds. The same study from the shell:
    pyro-vae compare --set train.epochs=2 --estimators trace,meanfield,score_function_z,iwae,dreg,stl,renyi
"""

import argparse
import os

import pyro_vae
from pyro_vae import compare

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--epochs", type=int, default=2)
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
estimators = "trace,meanfield,score_function_z,iwae,dreg,stl,renyi"
rows = compare(cfg, estimators, args.out, overwrite=True)

print(f"\n{'estimator':16s} {'ELBO':>8s} {'log p(x)':>9s} {'gap':>6s} {'enc SNR':>8s} {'dec SNR':>8s} {'s/epoch':>8s}")
for r in rows:
    print(
        f"{r['estimator']:16s} {r['test_elbo']:8.2f} {r['log_px']:9.2f} {r['gap']:6.2f} "
        f"{r['encoder_snr']:8.3f} {r['decoder_snr']:8.3f} {r['seconds_per_epoch']:8.1f}"
    )
print(f"\nfull table: {args.out}/compare.md; figures: elbo_vs_epoch.png, elbo_vs_time.png, snr.png")
