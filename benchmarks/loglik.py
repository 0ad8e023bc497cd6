"""Importance-sampled log p(x) at scale: K = 5000 samples for each of the 10,000 MNIST test images.

    PYRO_VAE_DATA=../shared/data python benchmarks/loglik.py [--run runs/DIR] [--samples 5000] [--images 10000]

Times ``pyro_vae.iwae_log_px`` (what ``pyro-vae evaluate`` runs), over the test set in
``eval.batch_size`` batches, and prints:
  - seconds, and log p(x) in nats per image;
  - the decoder's achieved GFLOP/s: 2 (L H + H D) multiply-adds per (image, sample) for the
    default MLP decoder L-H-D, divided by the whole run's time (encoder, sampling, likelihood
    and log-mean-exp included);
  - the matmul GFLOP/s torch reaches on this machine, measured in the same run (the best of a
    square 2048^3 product and the decoder's own largest product), and the ratio (target >= 0.5);
  - the peak resident memory of the process (target <= 2 GiB).

Without ``--run`` the model is the default one, untrained: the cost does not depend on the weights.
"""

import argparse
import resource
import time

import torch

import pyro_vae
from pyro_vae.config.build import load_config_data, prepare
from pyro_vae.evaluation.metrics import iwae_log_px
from pyro_vae.training.load import load_run


def matmul_gflops(m, k, n, seconds=2.0):
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9


def decoder_flops(vae):
    """Multiply-adds x 2 of one decoder pass (the Linear layers), per sample."""
    return 2 * sum(m.in_features * m.out_features for m in vae.decoder.modules() if isinstance(m, torch.nn.Linear))


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="a run folder (default: the default model, untrained)")
    p.add_argument("--samples", type=int, default=5000, help="importance samples K per image")
    p.add_argument("--images", type=int, default=10000, help="how many test images")
    args = p.parse_args(argv)
    if args.run:
        cfg, vae, data = load_run(args.run)
    else:
        cfg = pyro_vae.load_config()
        data, vae, _, _ = prepare(cfg, load_config_data(cfg))
    x = data.test[: args.images]
    batch = cfg["eval"]["batch_size"]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {x.shape[0]} images x K = {args.samples}, "
        f"batches of {batch}; peak RSS before: {peak_rss_gib():.2f} GiB"
    )
    largest = max(
        (m for m in vae.decoder.modules() if isinstance(m, torch.nn.Linear)),
        key=lambda m: m.in_features * m.out_features,
    )
    ref_before = max(matmul_gflops(2048, 2048, 2048), matmul_gflops(4096, largest.in_features, largest.out_features))
    t0 = time.perf_counter()
    total, done = 0.0, 0
    report = max(1, x.shape[0] // batch // 10)
    with torch.no_grad():
        for i, xb in enumerate(x.split(batch)):
            total += iwae_log_px(vae, xb, args.samples).sum().item()
            done += xb.shape[0]
            if (i + 1) % report == 0:
                print(f"  {done} images, {time.perf_counter() - t0:.0f} s", flush=True)
    seconds = time.perf_counter() - t0
    ref_after = max(matmul_gflops(2048, 2048, 2048), matmul_gflops(4096, largest.in_features, largest.out_features))
    ref = max(ref_before, ref_after)
    flops = decoder_flops(vae) * args.samples * x.shape[0]
    achieved = flops / seconds / 1e9
    print(f"log p(x) ~= {total / x.shape[0]:.3f} nats per image (K = {args.samples})")
    print(f"seconds: {seconds:.1f}  ({x.shape[0] * args.samples / seconds / 1e6:.2f} M samples/s)")
    print(f"decoder work: {flops / 1e12:.2f} TFLOP, achieved {achieved:.1f} GFLOP/s")
    print(f"torch matmul on this machine: {ref:.1f} GFLOP/s (before {ref_before:.1f}, after {ref_after:.1f})")
    print(f"=> achieved / matmul: {achieved / ref:.2f} (target >= 0.5)")
    print(f"=> peak RSS: {peak_rss_gib():.2f} GiB (target <= 2)")


if __name__ == "__main__":
    main()
