"""The Python API in a few lines: build a VAE, train it with Pyro's SVI, estimate log p(x).

PYRO_VAE_DATA=../shared/data python examples/mnist_vae.py [--epochs 2]
python examples/mnist_vae.py --quick          # synthetic data, seconds
"""

import argparse
import os

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO

import pyro_vae

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--quick", action="store_true", help="synthetic data, small model")
p.add_argument("--out", default="samples.png", help="the figure of samples")
args = p.parse_args()

cfg = pyro_vae.load_config()  # the defaults: MLP 784-400-50, Bernoulli
dataset = "synthetic" if args.quick else "mnist"
data = pyro_vae.load_data(dataset, root=os.environ.get("PYRO_VAE_DATA", "data"), binarize="dynamic")
vae = pyro_vae.build_vae(cfg, data.data_shape)  # encoder, decoder, prior, likelihood, posterior

pyro.clear_param_store()
svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
for epoch in range(args.epochs):
    total = 0.0
    for x in data.batches(128, torch.Generator().manual_seed(epoch)):
        total += svi.step(x, num_data=data.num_train)  # -ELBO, scaled to the whole data set
    print(f"epoch {epoch + 1}: train -ELBO {total / (data.num_train // 128) / data.num_train:.2f} nats")

x = data.test[:1000]
result = pyro_vae.evaluate(vae, x, iwae_samples=100)
print(
    f"test ELBO {result['elbo']:.2f}, log p(x) (K=100) {result['log_px']:.2f}, "
    f"rate {result['rate']:.2f}, distortion {result['distortion']:.2f}"
)
pyro_vae.evaluation.plots.save_grid(vae.sample(64), args.out)
print(f"wrote {args.out}")
