"""Training throughput: pyro-vae's default loop against a hand-written PyTorch VAE, and the
estimators against each other, on MNIST with the default model (MLP 784-400-50, softplus,
Bernoulli likelihood, batch 128, Adam 1e-3).

    PYRO_VAE_DATA=../shared/data python benchmarks/throughput.py [--steps 300] [--only loop] [--device cuda]

Every variant trains its own copy of the model on the same batches (data order and dynamic
binarisation included in the time). The variants take turns in blocks of 10 steps, the order
rotating every round, so a slow spell of the machine (this one drifts by 30 % over minutes)
hits them all alike, while each block still runs with its own weights in cache; each figure
is the median over the ``--steps`` timed steps (30 blocks of each variant by default),
reported as images/s. Nothing else should run
meanwhile: two processes on two cores slow each other down several times over.

Variants:
  hand-written     eager PyTorch: analytic KL, BCE with logits, torch.optim.Adam as it comes
  hand + fused     the same with Adam(fused=True): what the optimiser alone is worth
  hand + compile   the same, fused, with the loss through torch.compile (inductor): the fastest peer
  pyro-vae         ``pyro_vae.svi_step`` with the default config: what ``pyro-vae train`` runs
  stock SVI        pyro.infer.SVI(Trace_ELBO(), pyro.optim.Adam) on the same model and guide
  <estimator>      svi_step with train.elbo.kind = <estimator> (K=5 for iwae)

Printed ratios: pyro-vae / hand-written images/s (target >= 1), each jit_* estimator / its
plain version (target >= 1), and the K=5 IWAE step time / a single-particle step time (the
default jit_meanfield, and the eager meanfield and trace; target <= 2.5).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_vae import HandVAE  # noqa: E402

import pyro_vae  # noqa: E402
from pyro_vae.config.build import prepare  # noqa: E402
from pyro_vae.training.loop import epoch_generator  # noqa: E402
from pyro_vae.training.step import svi_step  # noqa: E402


def batches(data, batch_size, seed):
    """The training batches of epoch 1, 2, ... for ever, exactly as ``pyro-vae train`` forms them."""
    epoch = 0
    while True:
        epoch += 1
        yield from data.batches(batch_size, epoch_generator(seed, epoch, data.test.device))


def _sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class Variant:
    def __init__(self, name, step, data, batch_size, seed):
        self.name, self.step = name, step
        self.batches = batches(data, batch_size, seed)
        self.batch_size = batch_size
        self.seconds = []

    def run(self, steps=1):
        """Time ``steps`` steps; one entry per step (the block's mean) in ``self.seconds``."""
        _sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step(next(self.batches))
        _sync()  # a GPU runs behind the Python loop: wait for it
        return (time.perf_counter() - t0) / steps

    @property
    def ms_per_step(self):
        return 1e3 * statistics.median(self.seconds)

    @property
    def images_per_second(self):
        return self.batch_size / statistics.median(self.seconds)


def hand_variant(name, data, cfg, fused, compile=False):
    torch.manual_seed(cfg["seed"])
    model = HandVAE(d=data.train[0].numel(), latent=cfg["model"]["latent_dim"]).to(data.train.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["train"]["optimizer"]["lr"], fused=fused or None)
    loss_fn = torch.compile(model.loss) if compile else model.loss

    def step(x):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x)
        loss.backward()
        opt.step()

    return Variant(name, step, data, cfg["data"]["batch_size"], cfg["seed"])


def pyro_variant(name, data, overrides=(), compile=None):
    """svi_step as ``pyro-vae train`` runs it; ``compile="networks"`` puts the encoder and decoder through
    torch.compile, ``compile="step"`` the whole loss (Pyro's poutines included) with the optimiser step."""
    cfg = pyro_vae.load_config(overrides=[f"device={data.test.device}", *overrides])
    _, vae, elbo, opt = prepare(cfg, data)
    vae.name = name  # one parameter namespace per variant in Pyro's global param store
    num_data = data.num_train
    if compile == "networks":
        vae.encoder, vae.decoder = torch.compile(vae.encoder), torch.compile(vae.decoder)

    def loss(x, beta):
        return elbo.differentiable_loss(vae.model, vae.guide, x, num_data=num_data, beta=beta)

    compiled_loss = torch.compile(loss)

    def step(x):
        if compile == "step":
            opt.zero_grad(set_to_none=True)
            with pyro.validation_enabled(False):
                compiled_loss(x, torch.tensor(1.0)).backward()
            opt.step()
        else:
            svi_step(vae.model, vae.guide, elbo, opt, x, num_data=num_data, beta=1.0)  # as pyro-vae train calls it

    return Variant(name, step, data, cfg["data"]["batch_size"], cfg["seed"])


def stock_svi_variant(name, data):
    cfg = pyro_vae.load_config(overrides=[f"device={data.test.device}"])
    _, vae, _, _ = prepare(cfg, data)
    vae.name = name
    svi = pyro.infer.SVI(
        vae.model, vae.guide, pyro.optim.Adam({"lr": cfg["train"]["optimizer"]["lr"]}), pyro.infer.Trace_ELBO()
    )
    num_data = data.num_train

    def step(x):
        svi.step(x, num_data=num_data)

    return Variant(name, step, data, cfg["data"]["batch_size"], cfg["seed"])


def measure(variants, steps, block=10, warmup=20):
    for v in variants:  # first-step validation, JIT compilation, allocator, caches
        v.run(warmup)
    report = max(block, steps // 5)
    for i in range(0, steps, block):
        shift = (i // block) % len(variants)
        for v in variants[shift:] + variants[:shift]:
            v.seconds += [v.run(block)] * block
        if (i + block) % report == 0:
            print(
                f"  {i + 1}/{steps} steps: "
                + ", ".join(f"{v.name} {v.images_per_second:,.0f}" for v in variants)
                + " images/s",
                flush=True,
            )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300, help="timed steps per variant (the median is reported)")
    p.add_argument("--only", choices=["loop", "estimators"], help="run one of the two comparisons")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for the pyro-vae variant (e.g. train.optimizer.fused=false)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile'd hand-written peer")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (every variant runs there)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = pyro_vae.load_config(overrides=[f"device={args.device}"])
    from pyro_vae.config.build import load_config_data

    data = load_config_data(cfg).to(args.device)
    pyro.clear_param_store()
    where = (
        torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else f"{torch.get_num_threads()} threads"
    )
    print(
        f"torch {torch.__version__}, pyro {pyro.__version__}, {where}; "
        f"MNIST, batch {cfg['data']['batch_size']}, {args.steps} timed steps per variant, interleaved\n"
    )

    if args.only in (None, "loop"):
        print("1. the default training loop against a hand-written PyTorch VAE")
        vs = [
            hand_variant("hand-written", data, cfg, fused=False),
            pyro_variant("pyro-vae", data, args.set),
            hand_variant("hand + fused", data, cfg, fused=True),
            stock_svi_variant("stock SVI", data),
        ]
        if not args.no_compile:
            vs.append(hand_variant("hand + compile", data, cfg, fused=True, compile=True))
        measure(vs, args.steps)
        base = vs[0].images_per_second
        for v in vs:
            print(
                f"  {v.name:14s} {v.images_per_second:9,.0f} images/s  {v.ms_per_step:6.2f} ms/step  "
                f"ratio to hand-written {v.images_per_second / base:.2f}"
            )
        print(f"  => pyro-vae / hand-written: {vs[1].images_per_second / base:.2f} (target >= 1.0)")
        print(
            f"  => pyro-vae / hand + fused Adam: {vs[1].images_per_second / vs[2].images_per_second:.2f} (target >= 1.0)"
        )
        if not args.no_compile:
            print(
                f"  => pyro-vae / hand + fused + torch.compile: {vs[1].images_per_second / vs[4].images_per_second:.2f}"
            )
        print()

    if args.only in (None, "estimators"):
        print("2. the estimators (same model, data and optimiser)")
        kinds = {
            "trace": [],
            "jit_trace": [],
            "meanfield": [],
            "jit_meanfield": [],
            "iwae (K=5)": ["train.elbo.kind=iwae", "train.elbo.num_particles=5"],
        }
        vs = [pyro_variant(k, data, o or [f"train.elbo.kind={k}"]) for k, o in kinds.items()]
        if not args.no_compile:
            vs += [
                pyro_variant("meanfield, torch.compile'd networks", data, ["train.elbo.kind=meanfield"], "networks"),
                pyro_variant("meanfield, torch.compile'd step", data, ["train.elbo.kind=meanfield"], "step"),
            ]
        measure(vs, args.steps)
        by = {v.name: v for v in vs}
        ms = {k: v.ms_per_step for k, v in by.items()}
        for k, v in by.items():
            print(f"  {k:36s} {v.images_per_second:9,.0f} images/s  {ms[k]:6.2f} ms/step")
        for jit, plain in (("jit_trace", "trace"), ("jit_meanfield", "meanfield")):
            print(
                f"  => {jit} / {plain}: {by[jit].images_per_second / by[plain].images_per_second:.2f} (target >= 1.0)"
            )
        if not args.no_compile:
            for k in ("meanfield, torch.compile'd networks", "meanfield, torch.compile'd step"):
                print(
                    f"  => {k} / meanfield: {by[k].images_per_second / by['meanfield'].images_per_second:.2f}; "
                    f"jit_meanfield / it: {by['jit_meanfield'].images_per_second / by[k].images_per_second:.2f}"
                )
        for single in ("jit_meanfield", "meanfield", "trace"):
            print(f"  => iwae K=5 step / {single} step: {ms['iwae (K=5)'] / ms[single]:.2f} (target <= 2.5)")


if __name__ == "__main__":
    main()
