"""Peak resident memory of a default ``pyro-vae train`` run (MNIST, the default config).

    PYRO_VAE_DATA=../shared/data python benchmarks/memory.py [--epochs 1] [--set KEY=VALUE ...]

Runs ``pyro-vae train`` in a child process exactly as a user would (into a temporary folder),
then reads the child's peak resident set size from the kernel (``getrusage(RUSAGE_CHILDREN)``)
and prints it with its ratio to the 1.5 GiB budget. One epoch reaches the peak: the data, the
model, the optimiser and the per-epoch evaluation are all in place by its end.
"""

import argparse
import resource
import subprocess
import sys
import tempfile
import time

BUDGET_GIB = 1.5


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="further config overrides")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "-m",
            "pyro_vae.cli",
            "train",
            "--out",
            f"{out}/run",
            "--quiet",
            "--set",
            f"train.epochs={args.epochs}",
            *(a for kv in args.set for a in ("--set", kv)),
        ]
        print(" ".join(cmd[2:]))
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # kB on Linux
    print(f"{seconds:.0f} s; peak RSS of the training process: {peak:.2f} GiB")
    print(f"=> peak RSS / budget: {peak / BUDGET_GIB:.2f} (target <= 1.0, budget {BUDGET_GIB} GiB)")


if __name__ == "__main__":
    main()
