"""Datasets as in-memory tensors in [0, 1], shape (N, *data_shape), and binarisation.

Sources (``data.dataset``): the torchvision MNIST family, a user ``.npz`` file, or a small
generated ``synthetic`` set. Binarisation (``data.binarize``): ``none``; ``static`` (one
Bernoulli draw per pixel, fixed for the run); ``dynamic`` (a fresh draw x ~ Bernoulli(grey)
every time a training batch is formed). The test set of a binarised run is binarised once,
with a fixed seed, so every run and every estimator is evaluated on the same binary images.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from ..aliases import PathLike
from ..errors import ConfigError, DataError, PyroVAEWarning
from ..files import check_path
from ..registry import Registry

#: the datasets by their config name (``data.dataset``)
DATASETS = Registry("data.dataset")
BINARIZE = ("none", "dynamic", "static")
DEFAULT_ROOT = "data"
TEST_BINARIZE_SEED = 20171
ENV_ROOT = "PYRO_VAE_DATA"


def resolve_root(root):
    """``data.root``; the environment variable PYRO_VAE_DATA replaces the default "data"."""
    if root == DEFAULT_ROOT and os.environ.get(ENV_ROOT):
        return os.environ[ENV_ROOT]
    return root


@dataclass
class Data:
    train: torch.Tensor
    test: torch.Tensor
    train_labels: Optional[torch.Tensor] = None
    test_labels: Optional[torch.Tensor] = None
    binarize: str = "none"
    #: the labelled points (x, y) of a semi-supervised run (``semi_supervised``); ``train`` then holds the others
    labelled: Optional[tuple] = None

    @property
    def data_shape(self):
        return tuple(self.train.shape[1:])

    @property
    def num_train(self):
        return self.train.shape[0]

    @property
    def has_train_labels(self):
        return self.train_labels is not None

    def to(self, device):
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        labelled = None if self.labelled is None else tuple(map(move, self.labelled))
        return Data(
            move(self.train), move(self.test), move(self.train_labels), move(self.test_labels), self.binarize, labelled
        )

    def batches(self, batch_size, generator, start=0, generator_state=None, part=(0, 1), labels=False):
        """Shuffled training batches (the last incomplete one is dropped), binarised if dynamic
        (x = 1[u < grey], u uniform). The generator fixes the order and the draws; ``start`` and
        ``generator_state`` (read with ``generator.get_state()`` after batch ``start``) continue an
        interrupted pass exactly. ``part = (k, n)`` yields only the k-th of n equal slices of each
        batch (a rank's share), with the same points and draws as that slice of the whole batch.
        ``labels=True`` yields pairs (x, y) of the points and their labels."""
        if labels and not self.has_train_labels:
            raise DataError(
                "this model trains on labelled data, but the dataset has no training labels: "
                "use a dataset with labels (mnist, an npz file with y_train, an image folder of classes)"
            )
        perm = torch.randperm(self.num_train, generator=generator, device=generator.device)
        if generator_state is not None:
            generator.set_state(generator_state)
        k, n = part
        lo, hi = k * batch_size // n, (k + 1) * batch_size // n
        rows = [perm[i * batch_size : (i + 1) * batch_size][lo:hi] for i in range(start, self.num_batches(batch_size))]
        for x, y in self._load(rows, labels):
            if self.binarize == "dynamic":
                u = torch.rand(
                    (batch_size, *self.data_shape), generator=generator, device=generator.device, dtype=x.dtype
                )
                x = u[lo:hi].lt_(x)  # 1[u < grey] in place: a quarter of torch.bernoulli's time
            yield (x, y) if labels else x

    def _load(self, rows, labels=False):
        """(points, labels or None) at each list of indices ``rows`` (in memory: indexing)."""
        for idx in rows:
            yield self.train[idx], self.train_labels[idx] if labels else None

    # -- semi-supervised runs --------------------------------------------------------------------
    def semi_supervised(self, num_labels, seed):
        """This data with ``num_labels`` training points labelled (balanced over the classes, as even
        as the count allows; chosen by ``seed``) in ``labelled`` and the rest, labels hidden, in ``train``."""
        y = self.train_labels
        if y is None:
            raise DataError(
                "a semi-supervised model needs a dataset with training labels (mnist, an npz file "
                "with y_train, an image folder of classes)"
            )
        classes = y.unique()
        if not len(classes) <= num_labels < self.num_train:  # at least one labelled point of every class
            raise DataError(
                f"data.labels = {num_labels}: the labelled points must number between {len(classes)} "
                f"and {self.num_train - 1} (the training set holds {self.num_train} points)"
            )
        g = torch.Generator().manual_seed(seed)
        chosen = []
        for i, c in enumerate(classes.tolist()):
            want = num_labels // len(classes) + (i < num_labels % len(classes))
            members = (y == c).nonzero().flatten().cpu()
            if want > len(members):
                raise DataError(
                    f"data.labels = {num_labels} asks for {want} labelled points of class {c}, "
                    f"which has {len(members)}: lower data.labels"
                )
            chosen.append(members[torch.randperm(len(members), generator=g)[:want]])
        keep = torch.zeros(self.num_train, dtype=torch.bool)
        keep[torch.cat(chosen)] = True
        keep = keep.to(self.train.device)
        return Data(self.train[~keep], self.test, None, self.test_labels, self.binarize, (self.train[keep], y[keep]))

    def labelled_batch(self, step, size, seed, part=(0, 1)):
        """The labelled points (x, y) a semi-supervised run sees beside training batch ``step``: the
        labelled set in a fresh order each pass (a function of seed and pass), ``size`` points per step,
        binarised as the training batches; ``part`` as in ``batches``."""
        x_all, y_all = self.labelled
        n = x_all.shape[0]
        positions = torch.arange(step * size, (step + 1) * size)
        passes = positions // n
        order = {
            int(p): torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + 7919 * int(p) + 1))
            for p in passes.unique()
        }
        idx = torch.stack([order[int(p)][int(i)] for p, i in zip(passes, positions % n)]).to(x_all.device)
        k, m = part
        lo, hi = k * size // m, (k + 1) * size // m
        x, y = x_all[idx], y_all[idx]
        if self.binarize == "dynamic":
            g = torch.Generator(x.device).manual_seed(seed * 1_000_003 + step * 2 + 1)
            x = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype).lt_(x)
        return x[lo:hi], y[lo:hi]

    def num_batches(self, batch_size):
        return self.num_train // batch_size

    def example_labels(self, n=256):
        """The labels of ``example_batch(n)`` (None without training labels)."""
        return None if self.train_labels is None else self.train_labels[:n]

    def example_batch(self, n=256):
        """A training batch as the model will see it, for support checks."""
        x = self.train[:n]
        if self.binarize == "dynamic":
            x = torch.bernoulli(x, generator=torch.Generator(x.device).manual_seed(0))
        return x


def _binarize(x, seed):
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))


def load_data(
    dataset: str = "mnist",
    root: PathLike = DEFAULT_ROOT,
    path: PathLike = "",
    binarize: str = "dynamic",
    download: bool = True,
    seed: int = 0,
    image_size: int = 0,
    workers: int | str = "auto",
    test_size: int = 10000,
) -> Data:
    """Load a dataset by name and apply the binarisation; see the module docstring. Datasets read
    from disk batch by batch (``images``: image_folder, cifar10, celeba) also take ``image_size``,
    ``workers`` and ``test_size``."""
    loader: Any = DATASETS.get(dataset)
    _check_binarize(binarize)
    root = check_path(resolve_root(root), "the data root", "give the folder that holds the dataset", DataError)
    if path != "":
        path = check_path(path, "the data path", "give the dataset's file", DataError)
    if getattr(loader, "streamed", False):
        return loader(
            root=root,
            path=path,
            download=download,
            image_size=image_size,
            workers=workers,
            test_size=test_size,
            binarize=binarize,
            seed=seed,
        )
    if image_size:
        raise ConfigError(
            f"data.image_size resizes images read from disk (image_folder, cifar10, celeba); "
            f"dataset {dataset!r} is held in memory at its own size: leave data.image_size = 0"
        )
    train, train_y, test, test_y = loader(root=root, path=path, download=download)
    return _finish(train, train_y, test, test_y, repr(dataset), binarize, seed)


def _check_binarize(binarize):
    if binarize not in BINARIZE:
        raise ConfigError(f"data.binarize must be one of {', '.join(BINARIZE)}, got {binarize!r}")


def _finish(train, train_y, test, test_y, what, binarize, seed):
    """Check the arrays and binarise as asked: the ``Data`` of a run."""
    for name, x in (("training", train), ("test", test)):
        if x.shape[0] == 0:
            raise DataError(f"the {name} set of dataset {what} is empty: check data.path / data.root")
        if not torch.isfinite(x).all():
            raise DataError(f"the {name} set of dataset {what} contains NaN or Inf values: clean it first")
    if binarize != "none":
        if train.min() < 0 or train.max() > 1 or test.min() < 0 or test.max() > 1:
            raise DataError(
                f"binarisation draws x ~ Bernoulli(value), so it needs values in [0, 1], but dataset "
                f"{what} has values in [{float(min(train.min(), test.min())):.3g}, "
                f"{float(max(train.max(), test.max())):.3g}]: rescale the data or set data.binarize = \"none\""
            )
        test = _binarize(test, TEST_BINARIZE_SEED)
        if binarize == "static":
            train = _binarize(train, seed)
    return Data(train, test, train_y, test_y, binarize)


def _gather(source, what):
    """All the points of a torch ``Dataset`` or ``DataLoader`` (items x or (x, y, ...)) as tensors (x, y or None)."""
    from torch.utils.data import DataLoader, Dataset

    if isinstance(source, Dataset):
        source = DataLoader(source, batch_size=256, shuffle=False)
    xs, ys = [], []
    try:
        for item in source:
            x, y = (item[0], item[1] if len(item) > 1 else None) if isinstance(item, (tuple, list)) else (item, None)
            if not torch.is_tensor(x):
                raise DataError(f"the {what} yields {type(x).__name__} items: yield tensors x or tuples (x, y)")
            xs.append(x.float())
            ys.append(y if torch.is_tensor(y) else None)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"reading the {what} failed ({type(e).__name__}: {e})") from None
    if not xs:
        raise DataError(f"the {what} is empty")
    x = torch.cat(xs)
    y = torch.cat(ys).long() if all(t is not None for t in ys) else None
    return x.unsqueeze(1) if x.dim() == 3 else x, y


def from_torch(train, test=None, binarize="dynamic", seed=0):
    """``Data`` from a torch ``Dataset`` or ``DataLoader`` of the training points (and optionally one of
    test points; otherwise a fixed 10% of the training points is held out), gathered into memory,
    checked and binarised as ``load_data`` does."""
    _check_binarize(binarize)
    x, y = _gather(train, "training data")
    if test is not None:
        xt, yt = _gather(test, "test data")
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(f"test points have shape {tuple(xt.shape[1:])} but training points {tuple(x.shape[1:])}")
    else:
        if x.shape[0] < 2:
            raise DataError("the training data hold fewer than 2 points: need at least 2 to hold out a test set")
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
        n_test = max(1, x.shape[0] // 10)
        xt, yt = x[perm[:n_test]], None if y is None else y[perm[:n_test]]
        x, y = x[perm[n_test:]], None if y is None else y[perm[n_test:]]
    return _finish(x, y, xt, yt, "given", binarize, seed)


# -- torchvision's MNIST family ------------------------------------------------------------
def _torchvision(cls_name):
    def load(root, path, download):
        import torchvision

        cls = getattr(torchvision.datasets, cls_name)
        splits = []
        for train in (True, False):
            try:
                ds = cls(root, train=train, download=False)
            except RuntimeError as e:
                if "not found" not in str(e).lower():  # the files are there but cannot be read
                    raise DataError(_corrupt(cls_name, root, e)) from None
                if not download:
                    raise DataError(_missing(cls_name, root)) from None
                try:
                    ds = cls(root, train=train, download=True)
                except Exception as e:  # no network, a proxy, a full disk...
                    raise DataError(
                        _missing(cls_name, root) + f" (the download failed: {str(e).splitlines()[0]})"
                    ) from None
            except (OSError, ValueError) as e:
                raise DataError(_corrupt(cls_name, root, e)) from None
            splits += [ds.data.unsqueeze(1).float().div_(255), ds.targets.clone()]
        return splits

    return load


def _corrupt(cls_name, root, e):
    return (
        f"the {cls_name} files under {os.path.join(os.path.abspath(root), cls_name, 'raw')} are truncated or "
        f"corrupt ({str(e).splitlines()[0][:100]}): delete them and download again, or copy intact IDX files there"
    )


def _missing(cls_name, root):
    return (
        f"{cls_name} was not found under {os.path.abspath(root)} and could not be downloaded. "
        f"Point pyro-vae at a folder holding {cls_name}/raw/ with the IDX files: set the environment "
        f"variable {ENV_ROOT}=/path/to/data, or pass --set data.root=/path/to/data"
    )


TORCHVISION_DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
for _name, _cls in TORCHVISION_DATASETS.items():
    DATASETS.register(_name)(_torchvision(_cls))


# -- user arrays ------------------------------------------------------------------------------
def _as_images(a, what):
    if a.dtype == np.uint8:
        t = torch.from_numpy(a.astype(np.float32) / 255.0)
    elif a.dtype == np.bool_ or (np.issubdtype(a.dtype, np.number) and not np.issubdtype(a.dtype, np.complexfloating)):
        t = torch.from_numpy(a.astype(np.float32))
    else:
        raise DataError(f"array {what!r} has dtype {a.dtype}; give numbers (uint8 0..255, or floats in [0, 1])")
    if t.dim() < 2:
        raise DataError(f"array {what!r} must have shape (N, ...) with one row per data point, got {tuple(t.shape)}")
    if 0 in t.shape[1:]:
        raise DataError(f"array {what!r} has shape {tuple(t.shape)}: each data point is empty")
    if t.dim() == 3:  # (N, H, W) grey images
        t = t.unsqueeze(1)
    if t.dim() == 4 and t.shape[-1] in CHANNELS and t.shape[1] not in CHANNELS:
        # (N, H, W, C), the layout of numpy, PIL and torchvision's CIFAR: torch wants (N, C, H, W)
        warnings.warn(
            PyroVAEWarning(
                f"array {what!r} of shape {tuple(t.shape)} reads as channel-last images (N, H, W, C) with C = "
                f"{t.shape[-1]}: transposed to (N, C, H, W) = {tuple(t.permute(0, 3, 1, 2).shape)}"
            ),
            stacklevel=3,
        )
        t = t.permute(0, 3, 1, 2).contiguous()
    return t


def _labels(a, what, n, path):
    """Class labels: a 1-D integer array with one entry per data point."""
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        if not (np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a))):
            raise DataError(f"array {what!r} in {path} holds class labels, which must be integers; got dtype {a.dtype}")
    if a.ndim != 1 or a.shape[0] != n:
        raise DataError(f"array {what!r} in {path} has shape {a.shape}: give one label per data point, shape ({n},)")
    if np.any(np.abs(a) > 2**62):
        raise DataError(f"array {what!r} in {path} holds labels too large for an integer")
    return torch.from_numpy(a.astype(np.int64))


#: the members of a user's .npz that are read
NPZ_MEMBERS = ("x", "y", "x_test", "y_test")
#: channel counts of images: grey, RGB, RGBA
CHANNELS = (1, 3, 4)


@DATASETS.register("npz")
def load_npz(root, path, download):
    """A user's ``.npz``: array ``x`` (N, D), (N, H, W) or (N, C, H, W), optional ``y``;
    optional ``x_test``/``y_test``, otherwise a fixed 10% of ``x`` is held out for testing."""
    if not path:
        raise DataError("data.dataset = \"npz\" needs data.path, the .npz file: --set data.path=FILE.npz")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DataError(f"data.path {path} is a folder: give the .npz file")
    if os.path.exists(path) and not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a readable .npz file (not a zip archive); save arrays with np.savez")
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as f:
            for k in NPZ_MEMBERS:  # only the arrays we use: other members are never read
                if k in f.files:
                    arrays[k] = f[k]
                    if not isinstance(arrays[k], np.ndarray):  # a member that is not a .npy file
                        raise DataError(f"member {k!r} of {path} is not a .npy array; save arrays with np.savez")
            names = f.files
    except FileNotFoundError:
        raise DataError(f"data.path {path} does not exist") from None
    except DataError:
        raise
    except ValueError as e:
        if "pickle" in str(e):  # object arrays need pickle, which we refuse
            raise DataError(
                f"cannot read {path} without pickle ({e}); save plain numeric arrays with np.savez"
            ) from None
        raise DataError(f"{path} is damaged or truncated ({e}): save it again with np.savez") from None
    except Exception as e:
        raise DataError(f"{path} is not a readable .npz file ({type(e).__name__}: {e})") from None
    if "x" not in arrays:
        raise DataError(
            f"{path} has no array named 'x' (it has: {', '.join(names) or 'none'}); save it with np.savez(path, x=...)"
        )
    x = _as_images(arrays["x"], "x")
    y = _labels(arrays["y"], "y", x.shape[0], path) if "y" in arrays else None
    if "y_test" in arrays and "x_test" not in arrays:
        raise DataError(f"{path} has 'y_test' but no 'x_test': save both, or neither")
    if "x_test" in arrays:
        xt = _as_images(arrays["x_test"], "x_test")
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(f"'x_test' points have shape {tuple(xt.shape[1:])} but 'x' points {tuple(x.shape[1:])}")
        yt = _labels(arrays["y_test"], "y_test", xt.shape[0], path) if "y_test" in arrays else None
        return x, y, xt, yt
    if x.shape[0] == 0:
        raise DataError(f"array 'x' in {path} is empty (0 data points)")
    if x.shape[0] < 2:
        raise DataError(f"{path} holds {x.shape[0]} data point(s); need at least 2 to hold out a test set")
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    n_test = max(1, x.shape[0] // 10)
    test, train = perm[:n_test], perm[n_test:]
    return x[train], None if y is None else y[train], x[test], None if y is None else y[test]


# -- data given from Python ------------------------------------------------------------------
@DATASETS.register("given", hidden=True)
def load_given(root, path, download):
    """The record of a run trained on a torch Dataset or DataLoader handed to ``train``: it cannot be
    loaded by name, so later commands need the data again."""
    raise DataError(
        "this run was trained on a Dataset or DataLoader given from Python, which no name can load: "
        "pass it again, e.g. pyro_vae.load_run(DIR, data=...) or pyro_vae.train(..., data=..., resume=True)"
    )


# -- synthetic -------------------------------------------------------------------------------
@DATASETS.register("synthetic")
def load_synthetic(root, path, download, num_train=2000, num_test=500):
    """8x8 grey images from a fixed random 2-D latent model: x = sigmoid(3 W2 tanh(W1 z + b1)),
    rounded to 8 bits like real images. Small and generated, so tests and demos need no files;
    labels are the quadrant of z."""
    g = torch.Generator().manual_seed(1234)
    w1, b1, w2 = torch.randn(2, 32, generator=g), torch.randn(32, generator=g), torch.randn(32, 64, generator=g)
    z = torch.randn(num_train + num_test, 2, generator=g)
    x = torch.sigmoid(3 * torch.tanh(z @ w1 + b1) @ w2 / 32**0.5).reshape(-1, 1, 8, 8)
    x = (x * 255).round() / 255
    y = (z[:, 0] > 0).long() * 2 + (z[:, 1] > 0).long()
    return x[:num_train], y[:num_train], x[num_train:], y[num_train:]
