"""Image datasets read from disk batch by batch: a folder of images, CIFAR-10, CelebA.

The training images stay on disk: each batch is read by a ``torch.utils.data.DataLoader``
(``data.workers`` worker processes, pinned memory for a GPU) over the indices of the run's
per-epoch permutation, so the order, and so exact resume, is a function of seed and epoch as on
the in-memory path. ``data.workers = "auto"`` reads in the training process on a CPU of fewer
than 4 threads (``resolve_workers``); with workers on a CPU, training takes torch's threads less
one per worker (at least one) while an epoch reads, as the workers decode on the same cores.

A file is read in one call; PNG files are decoded by libspng (``pyspng``) where that gives PIL's
pixels exactly (``spng_decodes``), everything else by PIL (a JPEG that will be made smaller at a
reduced scale, ``Draft``). Images are resized and centre-cropped to ``data.image_size`` (0: as
stored) and scaled to [0, 1] (8-bit levels k / 255); a batch at the stored size is decoded into one
array. The test images (at most ``data.test_size``, a fixed subset) are held in memory, as
evaluation reads them every epoch.
"""

import io
import os
import warnings

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import ConfigError, DataError, PyroVAEWarning
from .memory import DATASETS, TEST_BINARIZE_SEED, Data

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PIL modes read as grey (C = 1); any other is read as RGB
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_FIRST_READ = 1 << 16  # bytes: a file's first read, enough for most images without asking its size

try:
    import pyspng  # libspng: a small PNG decodes about 6x faster than by PIL
except ImportError:  # a platform without its wheel: PIL decodes every file
    pyspng = None


def spng_decodes(data, mode):
    """Whether ``data`` is a PNG that libspng decodes to ``mode`` ("L" or "RGB") with exactly the
    pixels of PIL's ``convert(mode)``: at most 8 bits a sample, and grey to grey or anything to RGB
    (PIL clips 16-bit levels and turns colour into grey by its luma formula; those go to PIL), and
    within PIL's decompression-bomb limit (a larger one goes to PIL, which refuses it)."""
    if pyspng is None or len(data) < 29 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return False
    pixels = int.from_bytes(data[16:20], "big") * int.from_bytes(data[20:24], "big")
    return (
        data[24] <= 8
        and (mode == "RGB" or data[25] == 0)
        and (Image.MAX_IMAGE_PIXELS is None or pixels <= Image.MAX_IMAGE_PIXELS)
    )


class Draft:
    """A transform of a PIL image not yet loaded that will be made ``size`` or larger on each side:
    a JPEG is then decoded by libjpeg at the smallest 1/2, 1/4 or 1/8 scale still that large (PIL's
    ``draft``, as its ``thumbnail`` does); any other image passes unchanged."""

    def __init__(self, size):
        self.size = (size, size)

    def __call__(self, im):
        im.draft(None, self.size)
        return im


def _transform(image_size, pil=True):
    """Resize (shorter side) and centre-crop to ``image_size`` (0: nothing), on PIL images (then to a
    uint8 tensor, with ``Draft`` first) or on tensors."""
    from torchvision import transforms

    steps = [transforms.Resize(image_size, antialias=True), transforms.CenterCrop(image_size)] if image_size else []
    if not pil:
        return transforms.Compose(steps)
    return transforms.Compose([*([Draft(image_size)] if image_size else []), *steps, transforms.PILToTensor()])


class ImageFiles(Dataset):
    """Image files as uint8 tensors (C, H, W): grey (C = 1) if the first image is grey, else RGB
    (C = 3), every image converted to that mode; label i for files in the i-th class subfolder.
    Any format PIL reads; PNG mostly by libspng (see the module docstring)."""

    def __init__(self, files, labels, image_size):
        self.files, self.labels = list(files), labels
        self.resize = _transform(image_size, pil=False)
        self.draft = Draft(image_size) if image_size else None  # a JPEG to be resized: decoded at a reduced scale
        self.shape, self.reference = None, self.files[0]
        try:
            with Image.open(self.files[0]) as im:
                self.mode = "L" if im.mode in GREY_MODES else "RGB"
            self.warned = False
        except (OSError, Image.DecompressionBombError) as e:
            raise DataError(f"cannot read the image {self.files[0]} ({e})") from None
        self.shape = tuple(self[0][0].shape)

    def __len__(self):
        return len(self.files)

    def _bytes(self, i):
        """File i's bytes: one read of up to 64 KiB (an image's size is rarely asked of the file
        system: it costs as much as the read), then the rest if there is more."""
        try:
            fd = os.open(self.files[i], os.O_RDONLY)
            try:
                data = os.read(fd, _FIRST_READ)
                if len(data) == _FIRST_READ:
                    data += os.read(fd, max(1, os.fstat(fd).st_size - _FIRST_READ))
                    while len(more := os.read(fd, 1 << 20)):  # a file that grew since fstat
                        data += more
                return data
            finally:
                os.close(fd)
        except OSError as e:
            raise DataError(f"cannot read the image {self.files[i]} ({e}): remove or replace it") from None

    def _pixels(self, i):
        """File i's pixels, (H, W, C) uint8 in the run's mode: by libspng where it decodes the file as
        PIL would (``spng_decodes``), otherwise by PIL, which also reports a damaged file."""
        data = self._bytes(i)
        if spng_decodes(data, self.mode):
            try:
                a = pyspng.load(data, format=self.mode)
                return a.reshape(a.shape[0], a.shape[1], -1)
            except Exception:  # noqa: BLE001 -- whatever libspng refuses, PIL decodes or explains
                pass
        try:
            im = Image.open(io.BytesIO(data), formats=("PNG",) if data[:8] == PNG_SIGNATURE else None)
            if self.draft is not None:
                self.draft(im)
            im.load()
        except (OSError, Image.DecompressionBombError) as e:
            raise DataError(f"cannot read the image {self.files[i]} ({e}): remove or replace it") from None
        if self.mode == "L" and im.mode not in GREY_MODES and not self.warned:  # colour read as grey: say so, once
            self.warned = True
            warnings.warn(
                PyroVAEWarning(
                    f"the image {self.files[i]} is in colour ({im.mode}) but {self.reference}, the first, is grey, so the "
                    "run reads every image as grey and this one loses its colours: convert the grey images to RGB "
                    "(or the colour ones to grey) to choose"
                ),
                stacklevel=2,
            )
        im = im if im.mode == self.mode else im.convert(self.mode)
        return np.frombuffer(im.tobytes(), dtype=np.uint8).reshape(im.size[1], im.size[0], -1)

    def _decode(self, i):
        return torch.from_numpy(self._pixels(i).copy()).permute(2, 0, 1)  # (C, H, W)

    def _check(self, i, shape):
        if self.shape is not None and tuple(shape) != self.shape:
            raise DataError(
                f"the image {self.files[i]} is {shape[2]}x{shape[1]} but {self.reference} is "
                f"{self.shape[2]}x{self.shape[1]}: set data.image_size to resize and centre-crop them all"
            )

    def __getitem__(self, i):
        x = self.resize(self._decode(i))
        self._check(i, x.shape)
        return x, (self.labels[i] if self.labels is not None else -1)

    def __getitems__(self, indices):
        """A whole batch, as the DataLoader asks for it: ``Batch(x, y)`` with x (N, C, H, W) uint8. At
        the stored size every image's bytes go straight into one array (no tensor per image, no collate)."""
        if self.resize.transforms or self.shape is None:
            xs, ys = zip(*(self[i] for i in indices))
            return Batch(torch.stack(xs), torch.as_tensor(ys))
        c, h, w = self.shape
        out, pixels = np.empty((len(indices), h, w, c), dtype=np.uint8), self._pixels
        for k, i in enumerate(indices):
            a = pixels(i)
            if a.shape != (h, w, c):
                self._check(i, (a.shape[2], *a.shape[:2]))
            out[k] = a
        y = [self.labels[i] for i in indices] if self.labels is not None else [-1] * len(indices)
        return Batch(torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), torch.as_tensor(y))


class Batch(tuple):
    """(x, y) of a batch that a dataset's ``__getitems__`` made whole: ``collate`` passes it through."""

    def __new__(cls, x, y):
        return super().__new__(cls, (x, y))

    def __getnewargs__(self):  # from a worker process by pickle
        return tuple(self)


def collate(items):
    from torch.utils.data import default_collate

    return items if isinstance(items, Batch) else default_collate(items)


class _Images(Dataset):
    """A torchvision dataset's images as uint8 tensors, whatever its targets."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x, (y if isinstance(y, int) else -1)


def resolve_workers(workers, device):
    """``data.workers`` as a count: an integer as given; "auto" on a CPU is a quarter of torch's
    threads, so none below 4: decoding then runs in the training process between steps, which on 2
    cores was never slower than workers beside training (about 0.70 of the in-memory speed against
    0.47-0.71, ``benchmarks/dataloader.py``); on a GPU it is the cores this process may use (its
    share of the machine's under torchrun) less one, at most 8."""
    if workers != "auto":
        return workers
    if torch.device(device).type == "cpu":
        return torch.get_num_threads() // 4
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))) - 1))


class StreamedData(Data):
    """``Data`` whose training points are read from disk batch by batch (see the module docstring)."""

    def __init__(self, source, test, test_labels=None, binarize="none", workers="auto", device=None):
        x0 = source[0][0]
        super().__init__(train=None, test=test, train_labels=None, test_labels=test_labels, binarize=binarize)
        self.source, self.workers = source, workers
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self._shape = tuple(x0.shape)

    @property
    def data_shape(self):
        return self._shape

    @property
    def num_train(self):
        return len(self.source)

    @property
    def has_train_labels(self):  # the source's items carry labels whenever its test images do
        return self.test_labels is not None

    def semi_supervised(self, num_labels, seed):
        raise DataError(
            "semi-supervised training (m2) keeps its data in memory; images read from disk are not "
            "supported yet: use an in-memory dataset (mnist, npz)"
        )

    def to(self, device):
        test_labels = None if self.test_labels is None else self.test_labels.to(device)
        return StreamedData(self.source, self.test.to(device), test_labels, self.binarize, self.workers, device)

    def _load(self, rows, labels=False):
        if not rows:
            return
        workers = resolve_workers(self.workers, self.device)
        loader = DataLoader(
            self.source,
            batch_sampler=[r.tolist() for r in rows],
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if workers else None,
        )
        threads = torch.get_num_threads()
        share = workers and self.device.type == "cpu" and threads > 1
        if share:  # the workers decode on the same cores: training takes the rest, not all of them
            torch.set_num_threads(max(1, threads - workers))
        try:
            for x, y in loader:
                yield x.to(self.device, non_blocking=True).float().div_(255), y.to(self.device) if labels else None
        finally:
            if share:
                torch.set_num_threads(threads)

    def example_labels(self, n=256):
        if not self.has_train_labels:
            return None
        labels = [self.source[i][1] for i in range(min(n, self.num_train))]
        return (torch.stack(labels) if torch.is_tensor(labels[0]) else torch.as_tensor(labels)).to(self.device)

    def example_batch(self, n=256):
        n = min(n, self.num_train)
        x = torch.stack([self.source[i][0] for i in range(n)]).to(self.device).float().div_(255)
        if self.binarize == "dynamic":
            x = torch.bernoulli(x, generator=torch.Generator(x.device).manual_seed(0))
        return x


def _in_memory(dataset, test_size, what):
    """The first ``test_size`` points (all if 0) of a dataset as a float tensor in [0, 1], and labels."""
    n = len(dataset) if not test_size else min(test_size, len(dataset))
    if n == 0:
        raise DataError(f"the test set of {what} is empty")
    xs, ys = [], []
    for x, y in DataLoader(Subset(dataset, range(n)), batch_size=500, collate_fn=collate):
        xs.append(x.float().div_(255))
        ys.append(y)
    y = torch.cat(ys)
    return torch.cat(xs), (None if (y < 0).all() else y)


def _finish(train, test, what, binarize, workers, test_size):
    if binarize == "static":
        raise ConfigError(
            f"dataset {what} is read from disk batch by batch, so it cannot be binarised once "
            "for the whole run: use data.binarize = \"dynamic\" or \"none\""
        )
    if len(train) == 0:
        raise DataError(f"the training set of {what} is empty")
    x_test, y_test = _in_memory(test, test_size, what)
    if binarize == "dynamic":
        x_test = torch.bernoulli(x_test, generator=torch.Generator().manual_seed(TEST_BINARIZE_SEED))
    return StreamedData(train, x_test, y_test, binarize, workers)


def _image_files(folder):
    """(files, labels or None) of a folder: one subfolder per class (torchvision's ImageFolder
    layout, labels by sorted subfolder name) or flat (no labels)."""
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    is_image = lambda name: name.lower().endswith(IMAGE_EXTENSIONS)  # noqa: E731
    if classes:
        files, labels = [], []
        for i, c in enumerate(classes):
            for root, _, names in sorted(os.walk(os.path.join(folder, c))):
                found = sorted(os.path.join(root, n) for n in names if is_image(n))
                files += found
                labels += [i] * len(found)
        return files, labels
    return [e.path for e in entries if e.is_file() and is_image(e.name)], None


def load_image_folder(root, path, download, image_size=0, workers="auto", test_size=10000, binarize="none", seed=0):
    """``data.path``: a folder of images, flat or one subfolder per class; with ``train/`` and
    ``test/`` subfolders those are the splits, otherwise a fixed 10% of the images is the test set."""
    if not path:
        raise DataError("data.dataset = \"image_folder\" needs data.path, the folder of images: --set data.path=DIR")
    if not os.path.isdir(path):
        raise DataError(f"data.path {path} is not a folder of images")
    splits = [os.path.join(path, s) for s in ("train", "test")]
    if all(os.path.isdir(s) for s in splits):
        (files, labels), (test_files, test_labels) = _image_files(splits[0]), _image_files(splits[1])
    else:
        files, labels = _image_files(path)
        if len(files) < 2:
            raise DataError(
                f"{path} holds {len(files)} image(s) ({', '.join(IMAGE_EXTENSIONS)}); need at least 2 "
                "to hold out a test set"
            )
        perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(0)).tolist()
        n_test = max(1, len(files) // 10)
        pick = lambda seq, idx: None if seq is None else [seq[i] for i in idx]  # noqa: E731
        test_files, test_labels = pick(files, perm[:n_test]), pick(labels, perm[:n_test])
        files, labels = pick(files, perm[n_test:]), pick(labels, perm[n_test:])
    if not files or not test_files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}'s training or test split")
    train = ImageFiles(files, labels, image_size)
    test = ImageFiles(test_files, test_labels, image_size)
    test.mode, test.shape, test.reference = train.mode, train.shape, train.reference  # one mode and size for both
    return _finish(train, test, repr(path), binarize, workers, test_size)


def _torchvision(name, make, files):
    def load(root, path, download, image_size=0, workers="auto", test_size=10000, binarize="none", seed=0):
        try:
            train, test = (_Images(make(root, split, _transform(image_size))) for split in (True, False))
        except (RuntimeError, OSError) as e:
            raise DataError(
                f"{name} was not found or is incomplete under {os.path.abspath(root)} ({str(e).splitlines()[0][:100]}). "
                f"Put {files} there (torchvision's layout), or point data.root (or {'PYRO_VAE_DATA'}) at the folder "
                "that holds them; pyro-vae does not download these itself"
            ) from None
        return _finish(train, test, name, binarize, workers, test_size)

    load.streamed = True
    return load


def _cifar10(root, train, transform):
    from torchvision.datasets import CIFAR10

    return CIFAR10(root, train=train, transform=transform, download=False)


def _celeba(root, train, transform):
    from torchvision.datasets import CelebA

    return CelebA(root, split="train" if train else "test", target_type=[], transform=transform, download=False)


load_image_folder.streamed = True
DATASETS.register("image_folder")(load_image_folder)
DATASETS.register("cifar10")(
    _torchvision(
        "CIFAR-10", _cifar10, "cifar-10-batches-py/ (from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz)"
    )
)
DATASETS.register("celeba")(
    _torchvision(
        "CelebA", _celeba, "celeba/ with img_align_celeba/ and list_eval_partition.txt (torchvision's CelebA layout)"
    )
)
