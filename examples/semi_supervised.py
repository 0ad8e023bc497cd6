"""Semi-supervised MNIST with Kingma et al.'s M2 (Pyro's SS-VAE): a classifier q(y|x) learned from a
few labelled digits and many unlabelled ones, y summed out by enumeration where it is not observed.

    PYRO_VAE_DATA=../shared/data python examples/semi_supervised.py [--labels 3000] [--epochs 30]
    python examples/semi_supervised.py --quick          # synthetic data, seconds

The same from the shell:
    pyro-vae train --set model.kind=m2 --set data.labels=3000   # enumeration and grey levels: m2's defaults
    pyro-vae evaluate runs/DIR                          # test ELBO, log p(x), test accuracy
    pyro-vae sample runs/DIR --label 7                  # sevens: the model conditioned on y = 7
    pyro-vae plot runs/DIR                              # class_rows.png, style_transfer.png
"""

import argparse
import os
from pathlib import Path

import pyro_vae
from pyro_vae.evaluation.metrics import classification
from pyro_vae.evaluation.plots import label_figures

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--labels", type=int, default=3000, help="labelled training points, balanced over the digits")
p.add_argument("--epochs", type=int, default=30)
p.add_argument("--estimator", default="enumerate", help="enumerate | score_function | relaxed")
p.add_argument("--quick", action="store_true", help="synthetic data, small model")
p.add_argument("--out", default="runs/semi-supervised-example")
args = p.parse_args()

overrides = [
    "model.kind=m2",
    f"data.labels={args.labels}",
    f"train.elbo.kind={args.estimator}",
    f"train.epochs={args.epochs}",
    f"data.root={os.environ.get('PYRO_VAE_DATA', 'data')}",
]
if args.quick:
    overrides += [
        "data.dataset=synthetic",
        "model.components=4",
        "model.latent_dim=4",
        "data.batch_size=50",
        f"data.labels={min(args.labels, 40)}",
        f"train.epochs={min(args.epochs, 3)}",
    ]
cfg = pyro_vae.load_config(overrides=overrides)
vae, history = pyro_vae.train(cfg, args.out, overwrite=True)

_, vae, data = pyro_vae.load_run(args.out)
accuracy = classification(vae, data.test, data.test_labels)["accuracy"]
print(
    f"\ntest accuracy of q(y|x) with {cfg['data']['labels']} labels: {accuracy:.4f} "
    f"(error {100 * (1 - accuracy):.2f}%) after {len(history)} epochs"
)
for name in label_figures(vae, data, Path(args.out)):
    print(f"wrote {args.out}/{name}")
