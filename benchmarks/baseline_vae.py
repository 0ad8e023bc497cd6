"""A hand-written PyTorch VAE, the same architecture, data and budget as pyro-vae's default.

MLP 784-400-50 (softplus), Bernoulli likelihood (BCE with logits), analytic KL to N(0, I),
diagonal Gaussian q with scale softplus(.) + 1e-6, Adam 1e-3, batch 128, dynamic
binarisation, the same data order and the same fixed binarised test set as pyro-vae.

    PYRO_VAE_DATA=../shared/data python benchmarks/baseline_vae.py [--epochs 1]

trains both (interleaved per epoch) and prints their test ELBOs and images/s. ``--kl mc --set
train.elbo.kind=trace`` compares the Monte Carlo KL versions of both.
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

import pyro_vae
from pyro_vae.config.build import prepare
from pyro_vae.training.loop import epoch_generator


class HandVAE(nn.Module):
    def __init__(self, d=784, h=400, latent=50, kl="analytic"):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d, h), nn.Softplus(), nn.Linear(h, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, h), nn.Softplus(), nn.Linear(h, d))
        self.kl = kl

    def loss(self, x):
        """Negative ELBO summed over the batch: BCE(x, decoder(z)) + KL(q || N(0, I)),
        the KL in closed form (``kl="analytic"``) or as log q(z) - log p(z) at the sample (``"mc"``)."""
        x = x.flatten(1)
        loc, raw = self.enc(x).chunk(2, -1)
        scale = F.softplus(raw) + 1e-6
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        bce = F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="sum")
        if self.kl == "analytic":
            kl = 0.5 * (loc.pow(2) + scale.pow(2) - 2 * scale.log() - 1).sum()
        else:  # log N(z; loc, scale) - log N(z; 0, 1), the constants cancel
            kl = (-0.5 * eps.pow(2) - scale.log() + 0.5 * z.pow(2)).sum()
        return bce + kl


def train_epoch(model, opt, data, batch_size, epoch, seed):
    t0 = time.perf_counter()
    n = 0
    for x in data.batches(batch_size, epoch_generator(seed, epoch, torch.device("cpu"))):
        opt.zero_grad(set_to_none=True)
        loss = model.loss(x)
        loss.backward()
        opt.step()
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


@torch.no_grad()
def test_elbo(model, x):
    kl, model.kl = model.kl, "analytic"  # evaluate as pyro-vae does: MC distortion + closed-form rate
    elbo = -sum(model.loss(xb).item() for xb in x.split(1000)) / x.shape[0]
    model.kl = kl
    return elbo


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--kl",
        choices=["analytic", "mc"],
        default="analytic",
        help="the hand-written KL term: closed form (like meanfield) or Monte Carlo (like trace)",
    )
    p.add_argument("--set", action="append", default=[], help="config overrides for the pyro-vae side")
    args = p.parse_args()
    cfg = pyro_vae.load_config(overrides=[f"train.epochs={args.epochs}", f"seed={args.seed}", *args.set])
    data, vae, elbo, opt = prepare(cfg)
    torch.manual_seed(args.seed)
    hand = HandVAE(kl=args.kl)
    hand_opt = torch.optim.Adam(hand.parameters(), lr=1e-3)
    import pyro

    pyro.clear_param_store()
    for epoch in range(1, args.epochs + 1):
        ips_hand = train_epoch(hand, hand_opt, data, 128, epoch, args.seed)
        t0 = time.perf_counter()
        n = 0
        for x in data.batches(128, epoch_generator(args.seed, epoch, torch.device("cpu"))):
            opt.zero_grad(set_to_none=True)
            with pyro.validation_enabled(False):
                elbo.loss_and_grads(vae.model, vae.guide, x, num_data=data.num_train)
            opt.step()
            n += x.shape[0]
        ips_pyro = n / (time.perf_counter() - t0)
        print(
            f"epoch {epoch}: hand-written {ips_hand:,.0f} images/s, pyro-vae {ips_pyro:,.0f} images/s "
            f"(ratio {ips_pyro / ips_hand:.2f})"
        )
    e_hand, e_pyro = test_elbo(hand, data.test), pyro_vae.test_elbo(vae, data.test)
    print(
        f"test ELBO after {args.epochs} epoch(s): hand-written {e_hand:.2f}, pyro-vae {e_pyro:.2f} "
        f"(difference {e_pyro - e_hand:+.2f} nats)"
    )


if __name__ == "__main__":
    main()
