"""Data parallel throughput: 2 ranks x 1 thread (torchrun, gloo) against 1 process x 2 threads, on the
same machine, model (the default MLP VAE, jit_meanfield, Adam) and global batch (MNIST, 128).

    PYRO_VAE_DATA=../shared/data python benchmarks/distributed.py [--steps 300] [--nproc 2] [--rounds 3]

Each configuration trains ``--steps`` steps after a warm-up, as ``pyro-vae train`` does (the same
``accumulated_step``, data order and binarisation); the figure is images/s of the whole step.
Printed: the ratio 2 ranks / 1 process (aim >= 0.85 on a CPU), the share of a rank's step spent
in the gradient all-reduce (waiting for the other rank included), and the all-reduce alone after a
barrier, from which the best ratio this machine allows without overlapping it. The two configurations
run one after the other, never at once (they share the cores), alternated ``--rounds`` times.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def worker(steps, warmup, batch_size):
    import torch

    import pyro_vae
    from pyro_vae.config.build import prepare
    from pyro_vae.training import distributed
    from pyro_vae.training.loop import epoch_generator
    from pyro_vae.training.step import accumulated_step

    world = distributed.init("cpu")
    cfg = pyro_vae.load_config(overrides=[f"data.batch_size={batch_size}"])
    data, vae, elbo, opt = prepare(cfg)
    micro = distributed.micro_batches(cfg, world)
    average = distributed.GradientAverager(list(vae.parameters()), world, micro)
    reduce_seconds = [0.0]

    def timed_average(loss, stop):
        t0 = time.perf_counter()
        out = average(loss, stop)
        reduce_seconds[0] += time.perf_counter() - t0
        return out

    def batches():
        epoch = 0
        while True:
            epoch += 1
            share = {"part": (world.rank, world.size)} if world.distributed else {}
            yield from data.batches(batch_size, epoch_generator(0, epoch, torch.device("cpu")), **share)

    it = batches()
    mine = range(world.rank * micro // world.size, (world.rank + 1) * micro // world.size)
    t0 = None
    for step in range(warmup + steps):
        if step == warmup:
            reduce_seconds[0] = 0.0
            if world.distributed:
                torch.distributed.barrier()
            t0 = time.perf_counter()
        x = next(it)
        accumulated_step(
            vae.model,
            vae.guide,
            elbo,
            opt,
            [(xm,) for xm in x.split(batch_size // micro)],
            [distributed.stream_seed(0, step, m) for m in mine],
            timed_average,
            num_data=data.num_train,
            beta=1.0,
        )
    seconds = time.perf_counter() - t0
    bare = []  # the all-reduce alone: both ranks wait at a barrier first, so no rank waits for the other's step
    for _ in range(50 if world.distributed else 0):
        torch.distributed.barrier()
        t1 = time.perf_counter()
        torch.distributed.all_reduce(average.buffer)
        bare.append(time.perf_counter() - t1)
    if world.is_main:
        print(
            json.dumps(
                {
                    "ranks": world.size,
                    "threads": torch.get_num_threads(),
                    "images_per_s": steps * batch_size / seconds,
                    "ms_per_step": 1e3 * seconds / steps,
                    "reduce_share": reduce_seconds[0] / seconds,
                    "bare_reduce_ms": 1e3 * sorted(bare)[len(bare) // 2] if bare else 0.0,
                    "megabytes": average.buffer.numel() * average.buffer.element_size() / 1e6,
                }
            )
        )


def run(cmd, threads):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--nproc", type=int, default=2, help="ranks (each with one thread) against one process with as many threads"
    )
    p.add_argument(
        "--rounds", type=int, default=3, help="alternations of the two configurations (the median is reported)"
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    common = [
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--batch-size",
        str(args.batch_size),
        "--worker",
    ]
    if args.worker:
        return worker(args.steps, args.warmup, args.batch_size)
    me = os.path.abspath(__file__)
    ones, manys = [], []
    for _ in range(args.rounds):  # alternated, so a slow spell of the machine hits both alike
        ones.append(run([sys.executable, me, *common], threads=args.nproc))
        manys.append(
            run(
                [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    f"--nproc_per_node={args.nproc}",
                    me,
                    *common,
                ],
                threads=1,
            )
        )
    one, many = (sorted(rs, key=lambda r: r["ms_per_step"])[len(rs) // 2] for rs in (ones, manys))  # the medians
    if args.rounds > 1:
        print(
            "  per round, 2 ranks / 1 process: "
            + ", ".join(f"{m['images_per_s'] / o['images_per_s']:.2f}" for o, m in zip(ones, manys))
        )
    for r in (one, many):
        print(
            f"  {r['ranks']} rank(s) x {r['threads']} thread(s): {r['images_per_s']:9,.0f} images/s  "
            f"{r['ms_per_step']:6.2f} ms/step  all-reduce {100 * r['reduce_share']:4.1f} % of the step"
        )
    print(f"  => {args.nproc} ranks / 1 process: {many['images_per_s'] / one['images_per_s']:.2f} (aim >= 0.85)")
    compute = many["ms_per_step"] * (1 - many["reduce_share"])
    print(
        f"  the all-reduce of {many['megabytes']:.1f} MB alone (after a barrier): {many['bare_reduce_ms']:.2f} ms median; "
        f"a rank's step without it: {compute:.2f} ms; so with the reduce not overlapped, at best "
        f"{one['ms_per_step'] / (compute + many['bare_reduce_ms']):.2f} here"
    )


if __name__ == "__main__":
    main()
