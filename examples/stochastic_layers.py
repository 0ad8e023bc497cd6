"""Two stochastic layers (Burda et al. 2016): z2 -> z1 -> x, trained with the IWAE bound, next to the
one-layer VAE of the same budget; test log p(x), the rate and the active units of each layer.

    PYRO_VAE_DATA=../shared/data python examples/stochastic_layers.py [--epochs 10] [--k 5]
    python examples/stochastic_layers.py --quick          # synthetic data, seconds

The same from the shell (and the paper's whole protocol: benchmarks/reproduce.py):
    pyro-vae train --set model.kind=hierarchical --set model.latent_dim=100 \\
      --set "model.layers=[{latent_dim=50, hidden=[100, 100], activation='tanh'}]" \\
      --set "train.elbo={kind='iwae', num_particles=5}"
    pyro-vae evaluate runs/DIR                            # per layer: rate and active units
"""

import argparse
import os

import pyro_vae

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--k", type=int, default=5, help="importance samples of the two-layer model's IWAE bound")
p.add_argument("--quick", action="store_true", help="synthetic data, small model")
p.add_argument("--out", default="runs/stochastic-layers-example")
args = p.parse_args()

tanh = "activation='tanh'"
common = [
    f"train.epochs={args.epochs}",
    f"data.root={os.environ.get('PYRO_VAE_DATA', 'data')}",
    f"model.encoder={{kind='mlp', hidden=[200, 200], {tanh}}}",
    f"model.decoder={{kind='mlp', hidden=[200, 200], {tanh}}}",
]
models = {
    "one layer, VAE": ["model.latent_dim=50", "train.elbo.kind=jit_trace"],
    f"two layers, IWAE k={args.k}": [
        "model.kind=hierarchical",
        "model.latent_dim=100",
        f"model.layers=[{{latent_dim=50, hidden=[100, 100], {tanh}}}]",
        f"train.elbo={{kind='iwae', num_particles={args.k}}}",
    ],
}
iwae_samples = 1000
if args.quick:
    common += ["data.dataset=synthetic", f"train.epochs={min(args.epochs, 2)}"]
    iwae_samples = 50

results = {}
for i, (name, overrides) in enumerate(models.items()):
    cfg = pyro_vae.load_config(overrides=common + overrides)
    out = f"{args.out}/{i}"
    pyro_vae.train(cfg, out, overwrite=True)
    _, vae, data = pyro_vae.load_run(out)
    results[name] = pyro_vae.evaluate(vae, data.test, iwae_samples=iwae_samples)

print(f"\n{'model':22s} {'log p(x)':>9s} {'ELBO':>8s}  rate per layer      active units per layer")
for name, r in results.items():
    rates = r.get("rate_per_layer", [r["rate"]])
    units = r.get("active_units_per_layer", [r["active_units"]])
    print(
        f"{name:22s} {r['log_px']:9.2f} {r['elbo']:8.2f}  {' + '.join(f'{v:.1f}' for v in rates):18s}  "
        f"{' + '.join(map(str, units))}"
    )
print(f"(log p(x) with K = {iwae_samples} importance samples; nats per image)")
