"""Training from image files on disk against training from memory: MNIST's 60,000 training images
written as PNG files, read back batch by batch by a DataLoader (``data.dataset = "image_folder"``),
against the in-memory MNIST tensor, with the default model and loop (batch 128, jit_meanfield).

    PYRO_VAE_DATA=../shared/data python benchmarks/dataloader.py [--workers 2] [--steps 300] [--folder DIR]

The PNG folder is written once (to ``--folder``, default a temporary folder) and reused if it is
there. The two variants take turns in blocks of 10 steps (``throughput.measure``), so a slow spell of
the machine hits both; the DataLoader keeps its worker processes and prefetched batches between
blocks, as in an epoch. Printed: images/s of each and the ratio (target >= 0.7).
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import measure, pyro_variant  # noqa: E402

import pyro_vae  # noqa: E402
from pyro_vae.builder import load_config_data  # noqa: E402
from pyro_vae.data import load_data  # noqa: E402


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


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
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
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads for training, {args.workers} DataLoader "
              f"workers, batch {cfg['data']['batch_size']}, {args.steps} timed steps per variant, interleaved\n")
        vs = [pyro_variant("in memory", memory), pyro_variant(f"PNG files, {args.workers} workers", streamed)]
        measure(vs, args.steps)
        for v in vs:
            print(f"  {v.name:24s} {v.images_per_second:9,.0f} images/s  {v.ms_per_step:6.2f} ms/step")
        print(f"  => PNG files / in memory: {vs[1].images_per_second / vs[0].images_per_second:.2f} (target >= 0.7)")


if __name__ == "__main__":
    main()
