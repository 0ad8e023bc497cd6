"""Images read from disk (image_folder, cifar10, celeba), residual conv nets, bits per dimension."""

import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import pyro_vae
from pyro_vae.data import Data, load_data
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.nn.networks import ResNetDecoder, ResNetEncoder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_images(folder, n, shape, classes=0, seed=0, prefix=""):
    """n random 8-bit images of shape (H, W) grey or (H, W, 3) RGB, flat or in class subfolders."""
    rng = np.random.default_rng(seed)
    arrays = []
    for i in range(n):
        a = (rng.random(shape) * 255).astype(np.uint8)
        sub = os.path.join(folder, f"class{i % classes}") if classes else folder
        os.makedirs(sub, exist_ok=True)
        Image.fromarray(a).save(os.path.join(sub, f"{prefix}{i:04d}.png"))
        arrays.append(a)
    return arrays


def run_cli(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "pyro_vae", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_image_folder_trains_end_to_end_and_evaluates(tmp_path):
    write_images(tmp_path / "pngs", 120, (8, 8), classes=3)
    sets = [
        "data.dataset=image_folder",
        "data.path=pngs",
        "data.batch_size=16",
        "train.epochs=2",
        "model.latent_dim=4",
        "data.workers=1",
    ]
    r = run_cli(tmp_path, "train", *[a for s in sets for a in ("--set", s)], "--out", "run", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "bits/dim" in r.stdout  # bernoulli on dynamically binarised images: a mass, so bits/dim
    lines = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2] and all(np.isfinite(m["test_bits_per_dim"]) for m in lines)
    r = run_cli(tmp_path, "evaluate", "run", "--iwae-samples", "5", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert 0 < result["bits_per_dim"] <= result["elbo_bits_per_dim"] + 0.05


def test_the_cifar10_config_trains_an_epoch_on_a_cifar_shaped_folder(tmp_path):
    write_images(tmp_path / "cifar", 140, (32, 32, 3))
    r = run_cli(
        tmp_path,
        "train",
        "--config",
        os.path.join(ROOT, "examples/configs/cifar10.toml"),
        "--set",
        "data.dataset=image_folder",
        "--set",
        "data.path=cifar",
        "--set",
        "train.epochs=1",
        "--out",
        "run",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    (line,) = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    # uniform noise images: a discretized logistic can do no better than 8 bits per dimension
    assert 7.5 < line["test_bits_per_dim"] < 20
    assert f"({line['test_bits_per_dim']:.3f} bits/dim)" in r.stdout
    cfg = pyro_vae.load_config(os.path.join(tmp_path, "run/config.toml"))
    assert cfg["model"]["encoder"]["kind"] == "resnet" and cfg["data"]["binarize"] == "none"


@pytest.mark.parametrize("start", [0, 3])
def test_streamed_batches_equal_the_in_memory_ones_draw_for_draw(tmp_path, start):
    """The loader's order is the run's permutation: the same points and binarisation draws as the
    in-memory path, for a whole epoch, from the middle of one (resume), and for a rank's slice."""
    arrays = write_images(tmp_path / "flat", 50, (8, 8))
    streamed = load_data("image_folder", path=str(tmp_path / "flat"), binarize="dynamic", workers=0)
    files = sorted(os.listdir(tmp_path / "flat"))
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(0)).tolist()  # the held-out split
    order = [int(files[i][:4]) for i in perm[5:]]
    x = torch.from_numpy(np.stack([arrays[i] for i in order])).float().div(255).unsqueeze(1)
    memory = Data(x, streamed.test, binarize="dynamic")
    for part in [(0, 1), (1, 2)]:
        g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
        state = None
        if start:
            for _ in zip(range(start), memory.batches(8, g1, part=part)):
                pass
            state = g1.get_state()
            g1 = torch.Generator().manual_seed(7)
        a = list(memory.batches(8, g1, start, state, part=part))
        b = list(streamed.batches(8, g2, start, state, part=part))
        assert len(a) == len(b) == 5 - start
        for xa, xb in zip(a, b):
            assert xa.shape == xb.shape == (8 // part[1], 1, 8, 8)
            assert torch.equal(xa, xb)


def test_image_folder_errors_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="needs data.path"):
        load_data("image_folder")
    with pytest.raises(DataError, match="not a folder"):
        load_data("image_folder", path=str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds 0 image"):
        load_data("image_folder", path=str(tmp_path / "empty"))
    write_images(tmp_path / "mixed", 10, (8, 8))
    write_images(tmp_path / "mixed", 10, (16, 16), seed=1, prefix="big")  # two sizes in one folder
    with pytest.raises(DataError, match=r"is \d+x\d+ but .* is \d+x\d+: set data.image_size"):
        data = load_data("image_folder", path=str(tmp_path / "mixed"), binarize="none", workers=0)
        list(data.batches(8, torch.Generator().manual_seed(0)))
    data = load_data("image_folder", path=str(tmp_path / "mixed"), binarize="none", workers=0, image_size=4)
    assert data.data_shape == (1, 4, 4) and data.test.shape[1:] == (1, 4, 4)
    with pytest.raises(ConfigError, match="cannot be binarised once"):
        load_data("image_folder", path=str(tmp_path / "mixed"), binarize="static")
    with pytest.raises(ConfigError, match="leave data.image_size = 0"):
        load_data("synthetic", image_size=16)
    for name, hint in [("cifar10", "cifar-10-batches-py"), ("celeba", "img_align_celeba")]:
        with pytest.raises(DataError, match=hint):
            load_data(name, root=str(tmp_path), binarize="none")


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_or_truncated_image_is_named_in_a_clear_error(tmp_path, workers):
    write_images(tmp_path / "imgs", 20, (8, 8))
    names = sorted(os.listdir(tmp_path / "imgs"))
    whole = (tmp_path / "imgs" / names[3]).read_bytes()
    (tmp_path / "imgs" / names[3]).write_bytes(whole[: len(whole) // 2])  # truncated mid-stream
    (tmp_path / "imgs" / names[5]).write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image")  # a PNG signature only
    bomb = bytearray(whole)  # an 8x8 PNG whose header claims 100,000 x 100,000 pixels
    bomb[16:24] = (100_000).to_bytes(4, "big") * 2
    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")
    (tmp_path / "imgs" / names[7]).write_bytes(bytes(bomb))
    data = load_data("image_folder", path=str(tmp_path / "imgs"), binarize="none", workers=workers, test_size=1)
    with pytest.raises(Exception, match=r"cannot read the image .*\.png .*remove or replace it") as e:
        list(data.batches(6, torch.Generator().manual_seed(0)))
    assert isinstance(e.value, DataError) or "DataError" in str(e.value)  # a worker's error comes back as text
    from pyro_vae.data.images import ImageFiles

    every = ImageFiles([str(tmp_path / "imgs" / n) for n in names], None, image_size=0)
    for k in (3, 5, 7):  # each bad file, read alone, is named (the bomb by PIL's limit, never allocated)
        with pytest.raises(DataError, match=rf"cannot read the image .*{names[k]} .*remove or replace it"):
            every._pixels(k)


def test_image_folder_with_train_and_test_subfolders_uses_them(tmp_path):
    write_images(tmp_path / "split/train", 30, (8, 8, 3), classes=2)
    write_images(tmp_path / "split/test", 7, (8, 8, 3), classes=2, seed=1)
    data = load_data("image_folder", path=str(tmp_path / "split"), binarize="none", workers=0)
    assert data.num_train == 30 and data.test.shape == (7, 3, 8, 8)
    assert data.test_labels.tolist() == [0, 0, 0, 0, 1, 1, 1]  # class folders in sorted order
    assert 0 <= data.test.min() and data.test.max() <= 1
    assert torch.equal((data.test * 255).round(), data.test * 255)  # 8-bit levels


def interlaced_png(a):
    """PNG bytes of an 8-bit grey (H, W) or RGB (H, W, 3) array in Adam7 interlace (PIL writes none)."""
    import struct

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    h, w = a.shape[:2]
    rows = b""
    for x0, y0, dx, dy in [
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ]:
        sub = a[y0::dy, x0::dx]
        if sub.size:
            rows += b"".join(b"\0" + r.tobytes() for r in sub)  # filter type 0 on every row
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2 if a.ndim == 3 else 0, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("decoder", ["libspng", "PIL"])
@pytest.mark.parametrize("run_mode", ["L", "RGB"])
def test_every_png_flavour_and_jpeg_decode_to_what_pil_gives(tmp_path, run_mode, decoder, monkeypatch):
    """Decoding from the file's bytes gives what PIL's ``convert`` to the run's mode gives, for every
    kind of file (8-bit grey and RGB, palette, alpha, transparency, 16 bits, 1 and 4 bits, interlaced,
    gamma and significant-bits chunks, over 64 KiB, JPEG), whether libspng decodes the PNG files it can or PIL decodes them all."""
    from PIL import PngImagePlugin

    from pyro_vae.data import images
    from pyro_vae.data.images import ImageFiles

    if decoder == "PIL":
        monkeypatch.setattr(images, "pyspng", None)
    rng = np.random.default_rng(0)
    grey = (rng.random((9, 7)) * 255).astype(np.uint8)
    rgb = (rng.random((9, 7, 3)) * 255).astype(np.uint8)
    images_ = {
        "grey.png": Image.fromarray(grey),
        "rgb.png": Image.fromarray(rgb),
        "palette.png": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=7),
        "palette4.png": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
        "la.png": Image.fromarray(grey).convert("LA"),
        "rgba.png": Image.fromarray(rgb).convert("RGBA"),
        "bits16.png": Image.fromarray(grey.astype(np.uint16) * 257),
        "bit1.png": Image.fromarray(grey > 127),
        "jpeg.jpg": Image.fromarray(rgb),
    }
    files = []
    for name, im in images_.items():
        im.save(tmp_path / name, **({"bits": 4} if name == "palette4.png" else {}))
        files.append(str(tmp_path / name))
    grey_trns = Image.fromarray(grey)
    grey_trns.info["transparency"] = int(grey[0, 0])
    grey_trns.save(tmp_path / "grey_trns.png", transparency=int(grey[0, 0]))
    big = (rng.random((160, 160, 3)) * 255).astype(np.uint8)  # noise: the file is over 64 KiB
    Image.fromarray(big).save(tmp_path / "big.png")
    assert os.path.getsize(tmp_path / "big.png") > 1 << 16
    (tmp_path / "adam7_grey.png").write_bytes(interlaced_png(grey))
    (tmp_path / "adam7_rgb.png").write_bytes(interlaced_png(rgb))
    Image.fromarray(rgb).save(tmp_path / "rgb_trns.png", transparency=(1, 2, 3))
    for name, a in (("gamma_grey.png", grey), ("gamma_rgb.png", rgb)):  # gamma and significant bits: not applied
        info = PngImagePlugin.PngInfo()
        info.add(b"gAMA", (100000).to_bytes(4, "big"))
        info.add(b"sBIT", bytes([5] * (a.ndim * 2 - 1)))
        Image.fromarray(a).save(tmp_path / name, pnginfo=info)
    files += [
        str(tmp_path / n)
        for n in (
            "grey_trns.png",
            "big.png",
            "adam7_grey.png",
            "adam7_rgb.png",
            "rgb_trns.png",
            "gamma_grey.png",
            "gamma_rgb.png",
        )
    ]
    first = files[0] if run_mode == "L" else files[1]
    data = ImageFiles([first] + files, None, image_size=0)
    assert data.mode == run_mode
    calls = []
    if decoder == "libspng":
        monkeypatch.setattr(
            images.pyspng, "load", lambda b, format, load=images.pyspng.load: calls.append(1) or load(b, format=format)
        )
    for i, f in enumerate(data.files):
        with Image.open(f) as im:
            want = np.asarray(im.convert(run_mode))
        want = torch.from_numpy(want.copy())
        want = want.unsqueeze(0) if want.dim() == 2 else want.permute(2, 0, 1)
        got = data._decode(i)
        assert got.dtype == torch.uint8 and torch.equal(got, want), f
    if decoder == "libspng":  # grey PNGs at 8 bits or fewer in an L run; every PNG of 8 bits or fewer in an RGB run
        assert len(calls) == (6 if run_mode == "L" else 15), len(calls)


def test_a_batch_read_whole_equals_its_images_read_one_by_one_and_threads_come_back(tmp_path):
    from pyro_vae.data.images import Batch, ImageFiles, collate

    write_images(tmp_path / "rgb", 12, (6, 5, 3), classes=3)
    data = load_data("image_folder", path=str(tmp_path / "rgb"), binarize="none", workers=1)
    files = data.source
    assert isinstance(files, ImageFiles) and files.shape == (3, 6, 5)
    idx = [7, 0, 3, 3, 9]
    x, y = collate(files.__getitems__(idx))
    assert x.dtype == torch.uint8 and x.shape == (5, 3, 6, 5) and x.is_contiguous()
    assert torch.equal(x, torch.stack([files[i][0] for i in idx])) and y.tolist() == [files[i][1] for i in idx]
    assert isinstance(files.__getitems__(idx), Batch)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        it = data.batches(4, torch.Generator().manual_seed(0))
        next(it)
        assert torch.get_num_threads() == 1  # one worker decodes: training keeps the other thread
        it.close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("size", [32, 64])
def test_resnet_networks_map_images_to_features_and_back(size):
    enc, dec = (
        ResNetEncoder((3, size, size), widths=[8, 16], blocks=2),
        ResNetDecoder(6, 2 * 3 * size * size, (3, size, size), widths=[8, 16]),
    )
    x = torch.rand(2, 5, 3, size, size)
    assert enc(x).shape == (2, 5, 256)
    assert dec(torch.randn(2, 5, 6)).shape == (2, 5, 2 * 3 * size * size)
    with pytest.raises(ConfigError, match="divisible by 8"):
        ResNetEncoder((3, 36, 36), widths=[8, 16, 32])


def test_auto_workers_read_in_the_training_process_on_a_small_cpu_and_use_the_cores_on_a_gpu(tmp_path, monkeypatch):
    from pyro_vae.config.load import apply_overrides
    from pyro_vae.config.validate import validate
    from pyro_vae.data.images import resolve_workers

    before = torch.get_num_threads()
    try:
        for threads, want in [(1, 0), (2, 0), (3, 0), (4, 1), (8, 2)]:
            torch.set_num_threads(threads)
            assert resolve_workers("auto", "cpu") == want
        torch.set_num_threads(2)  # "auto" on 2 threads: no worker, so training keeps both threads
        write_images(tmp_path / "imgs", 20, (8, 8))
        data = load_data("image_folder", path=str(tmp_path / "imgs"), binarize="none", test_size=1)
        assert data.workers == "auto"
        it = data.batches(4, torch.Generator().manual_seed(0))
        next(it)
        assert torch.get_num_threads() == 2
        it.close()
    finally:
        torch.set_num_threads(before)
    assert resolve_workers(3, "cpu") == 3 and resolve_workers(0, "cuda") == 0  # a number is taken as given
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert resolve_workers("auto", "cuda") == 8  # the cores less one, at most 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: 4 ranks share the machine's 16 cores
    assert resolve_workers("auto", torch.device("cuda", 1)) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert resolve_workers("auto", "mps") == 1
    # the config takes "auto" (the default) or a count, and says so when given anything else
    assert validate({})["data"]["workers"] == "auto"
    assert validate(apply_overrides({}, ["data.workers=auto"]))["data"]["workers"] == "auto"
    assert validate(apply_overrides({}, ["data.workers=3"]))["data"]["workers"] == 3
    for bad in ["Auto", "-1", "2.5", "true", "300"]:
        with pytest.raises(ConfigError, match=r'data.workers must be "auto" or an integer from 0 to 256'):
            validate(apply_overrides({}, [f"data.workers={bad}"]))


def test_a_large_jpeg_to_be_resized_is_decoded_at_a_reduced_scale_close_to_the_full_decode(tmp_path):
    """With data.image_size, a 1024x768 JPEG is decoded by libjpeg at 1/8 scale (128x96, still at least
    64 on both sides) and then resized: within a level or two of resizing the full decode, and a PNG
    or a JPEG kept at its size is decoded whole."""
    from torchvision import transforms

    from pyro_vae.data.images import ImageFiles

    rng = np.random.default_rng(0)
    smooth = Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).resize((1024, 768), Image.BICUBIC)
    photo = np.clip(np.asarray(smooth, dtype=float) + rng.normal(0, 8, (768, 1024, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=90)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    files = [str(tmp_path / "photo.jpg"), str(tmp_path / "photo.png")]
    resized, whole = ImageFiles(files, None, image_size=64), ImageFiles(files, None, image_size=0)
    assert resized._pixels(0).shape == (96, 128, 3) and resized._pixels(1).shape == (768, 1024, 3)
    assert whole._pixels(0).shape == (768, 1024, 3)
    full = transforms.Compose([transforms.Resize(64, antialias=True), transforms.CenterCrop(64)])(whole._decode(0))
    got = resized[0][0]
    assert got.shape == full.shape == (3, 64, 64) and got.dtype == torch.uint8
    diff = (got.float() - full.float()).abs()
    assert diff.mean() < 2.0 and diff.max() < 16  # levels of 255: another antialiased downscale, not another image
    # the torchvision datasets (celeba) open a JPEG lazily and hand it to the transform: the same reduced scale
    from pyro_vae.data.images import _transform

    im = Image.open(tmp_path / "photo.jpg")
    via_torchvision = _transform(64)(im)
    assert im.size == (128, 96) and via_torchvision.shape == (3, 64, 64)
    assert (via_torchvision.float() - full.float()).abs().mean() < 2.0
    im = Image.open(tmp_path / "photo.png")
    assert _transform(64)(im).shape == (3, 64, 64) and im.size == (1024, 768)  # a PNG is decoded whole
