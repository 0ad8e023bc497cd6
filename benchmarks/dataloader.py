"""Training from image files on disk against training from memory: MNIST's 60,000 training images
written as PNG files, read back batch by batch by a DataLoader (``data.dataset = "image_folder"``),
against the in-memory MNIST tensor, with the default model and loop (batch 128, jit_meanfield).

    PYRO_VAE_DATA=../shared/data python benchmarks/dataloader.py [--workers auto] [--rounds 2] [--folder DIR]

The PNG folder is written once (to ``--folder``, default a temporary folder) and reused if it is
there. Each round trains one whole epoch from memory, then one whole epoch from the PNG files (its
DataLoader's start-up included, as in a run), each variant with its own model; the figure of each
is its best round. Whole epochs, not interleaved blocks of steps: a DataLoader's workers decode
ahead in the background, so they would steal the other variant's time between blocks. Printed:
images/s of each and the ratio (target >= 0.7).
"""

import argparse
import tempfile
import time
from pathlib import Path

import pyro
import torch

import pyro_vae
from pyro_vae.config.build import load_config_data, prepare
from pyro_vae.data import load_data
from pyro_vae.data.images import pyspng, resolve_workers
from pyro_vae.training.loop import epoch_generator
from pyro_vae.training.step import svi_step


def write_pngs(x, y, folder):
    """Each image as folder/<label>/<index>.png (8-bit grey), unless the folder is already complete."""
    from PIL import Image

    done = folder / "complete"
    if done.exists():
        return
    for label in range(10):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
    pixels = (x[:, 0] * 255).round().to(torch.uint8).numpy()
    for i, (a, label) in enumerate(zip(pixels, y.tolist())):
        Image.fromarray(a).save(folder / str(label) / f"{i:05d}.png")
    done.write_text("")


def epoch(data, cfg, name, epoch_number):
    """Images/s of one training epoch of a fresh default model on ``data``, as ``pyro-vae train`` runs it."""
    pyro.clear_param_store()
    _, vae, elbo, opt = prepare(cfg, data)
    vae.name = name  # one parameter namespace per variant in Pyro's global param store
    batch_size, n = cfg["data"]["batch_size"], 0
    t0 = time.perf_counter()
    for x in data.batches(batch_size, epoch_generator(cfg["seed"], epoch_number, "cpu")):
        svi_step(vae.model, vae.guide, elbo, opt, x, num_data=data.num_train, beta=1.0)
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="epochs of each variant, alternating")
    p.add_argument(
        "--workers",
        type=lambda v: v if v == "auto" else int(v),
        default="auto",
        help="DataLoader worker processes, or auto (data.workers' default: none on a CPU of under 4 threads)",
    )
    p.add_argument("--folder", default=None, help="where the PNG files go (kept); default: a temporary folder")
    args = p.parse_args()
    cfg = pyro_vae.load_config()
    grey = load_data(cfg["data"]["dataset"], cfg["data"]["root"], binarize="none")  # the 8-bit levels, to write
    memory = load_config_data(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder or tmp)
        print(f"writing {grey.num_train:,} PNG files to {folder} ...", flush=True)
        write_pngs(grey.train, grey.train_labels, folder / "train")
        write_pngs(grey.test, grey.test_labels, folder / "test")
        streamed = load_data("image_folder", path=str(folder), binarize="dynamic", workers=args.workers)
        threads, workers = torch.get_num_threads(), resolve_workers(args.workers, "cpu")
        decoder = "libspng (pyspng)" if pyspng is not None else "PIL"
        print(
            f"torch {torch.__version__}, {threads} threads ({max(1, threads - workers) if workers else threads}"
            f" while reading PNG files), {workers} DataLoader workers (--workers {args.workers}), PNG decoded by "
            f"{decoder}, batch {cfg['data']['batch_size']}, {args.rounds} rounds of one epoch each\n"
        )
        best = {"in memory": 0.0, "PNG files": 0.0}
        for r in range(1, args.rounds + 1):
            for name, data in (("in memory", memory), ("PNG files", streamed)):
                speed = epoch(data, cfg, name, r)
                best[name] = max(best[name], speed)
                print(f"  round {r}: {name:10s} {speed:9,.0f} images/s", flush=True)
        print()
        for name, speed in best.items():
            print(f"  {name:10s} {speed:9,.0f} images/s (best round)")
        print(f"  => PNG files / in memory: {best['PNG files'] / best['in memory']:.2f} (target >= 0.7)")


if __name__ == "__main__":
    main()
