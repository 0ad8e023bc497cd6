"""``shapes``: dSprites' factor grid (Matthey et al. 2017), rendered on the fly as binary images.

Five factors of variation, every combination once: shape (square, ellipse, heart), scale (6 values
from 0.5 to 1), orientation (40 angles from 0 to 2 pi), x and y position (32 values each from 0 to
1): 3 x 6 x 40 x 32 x 32 = 737,280 images. Point i of the grid has the factor levels of i written in
mixed radix (shape slowest, y fastest), as dSprites' ``latents_classes`` are ordered, and its label is
that row of levels, (5,) integers. An image is rendered when read, deterministically: a pixel is on
where its centre lies inside the shape, whose centre sits at 0.2 + 0.6 x position of the image width
(y downwards) and whose size is 0.12 x scale of it. ``data.image_size`` sets the side (0: 64, as
dSprites; 32 or 16 for CPU runs; at least 16). The test set is a fixed random ``data.test_size`` of the
combinations and the training set the rest, so one pass over both yields every combination once.

``data.path`` to dSprites' own ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` reads its images
instead (``imgs``, 64 x 64, with ``latents_classes``: colour, then the five factors above in the same
order); its points split as the rendered grid's do (a point is a test point where its combination is).
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError
from .images import Batch, _finish
from .memory import DATASETS

#: the factors of variation, and how many values each takes
FACTORS = ("shape", "scale", "orientation", "x", "y")
LEVELS = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
#: the split's seed: the same test combinations in every run
SPLIT_SEED = 20170401


def factor_values(levels):
    """The factors' values at integer ``levels`` (..., 5): shape index, scale, angle (radians), x, y."""
    levels = levels.double()
    return torch.stack(
        [
            levels[..., 0],
            0.5 + 0.5 * levels[..., 1] / (LEVELS[1] - 1),
            2 * math.pi * levels[..., 2] / (LEVELS[2] - 1),
            levels[..., 3] / (LEVELS[3] - 1),
            levels[..., 4] / (LEVELS[4] - 1),
        ],
        -1,
    )


def levels_of(index):
    """The factor levels (n, 5) of grid points ``index`` (n,): mixed radix, the last factor fastest."""
    out = []
    index = index.clone()
    for size in reversed(LEVELS):
        out.append(index % size)
        index = index // size
    return torch.stack(out[::-1], -1)


def render(levels, size=64):
    """Binary images (n, 1, size, size), uint8 0/255, of the grid points with factor ``levels`` (n, 5)."""
    v = factor_values(levels)
    centre = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    py, px = torch.meshgrid(centre, centre, indexing="ij")  # pixel centres, y downwards
    cx, cy = (0.2 + 0.6 * v[:, 3])[:, None, None], (0.2 + 0.6 * v[:, 4])[:, None, None]
    radius = (0.12 * v[:, 1])[:, None, None]
    cos, sin = torch.cos(v[:, 2])[:, None, None], torch.sin(v[:, 2])[:, None, None]
    dx, dy = px[None] - cx, py[None] - cy
    u = (cos * dx + sin * dy) / radius  # the pixel in the shape's own frame, rotated back by its angle
    w = (-sin * dx + cos * dy) / radius
    shape = levels[:, 0][:, None, None]
    square = torch.maximum(u.abs(), w.abs()) <= 1
    ellipse = u.pow(2) + (w / 0.5).pow(2) <= 1
    hu, hw = u * 1.2, -w * 1.2 + 0.25  # the heart's lobes upwards, centred on its area
    heart = (hu.pow(2) + hw.pow(2) - 1).pow(3) - hu.pow(2) * hw.pow(3) <= 0
    inside = torch.where(shape == 0, square, torch.where(shape == 1, ellipse, heart))
    return inside.to(torch.uint8).mul_(255).unsqueeze(1)


class Shapes(Dataset):
    """The grid points ``indices`` (default: all 737,280) as (uint8 image (1, S, S), levels (5,))."""

    def __init__(self, size=64, indices=None):
        self.size = int(size)
        self.indices = torch.arange(math.prod(LEVELS)) if indices is None else indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        levels = levels_of(self.indices[i : i + 1])
        return render(levels, self.size)[0], levels[0]

    def __getitems__(self, rows):  # a whole batch rendered at once
        levels = levels_of(self.indices[torch.as_tensor(rows, dtype=torch.long)])
        return Batch(render(levels, self.size), levels)


def grid_index(levels):
    """The grid point (n,) of factor ``levels`` (n, 5): ``levels_of``'s inverse."""
    index = torch.zeros(levels.shape[0], dtype=torch.long)
    for k, size in enumerate(LEVELS):
        index = index * size + levels[:, k].long()
    return index


class DSprites(Dataset):
    """dSprites' own images (n, 64, 64) of 0/1 and their factor levels (n, 5), at rows ``rows``."""

    def __init__(self, images, levels, rows):
        self.images, self.levels, self.rows = images, levels, rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.__getitems__([i])[0][0], self.levels[self.rows[i]]

    def __getitems__(self, rows):
        r = self.rows[torch.as_tensor(rows, dtype=torch.long)]
        return Batch(self.images[r].mul(255).unsqueeze(1), self.levels[r])


#: the arrays of dSprites' .npz that are read
NPZ_KEYS = ("imgs", "latents_classes")


def read_dsprites(path):
    """(images (n, 64, 64) uint8 0/1, levels (n, 5)) from dSprites' .npz, checked; ``DataError`` says what is wrong."""
    import numpy as np

    try:
        with np.load(path) as f:
            missing = [k for k in NPZ_KEYS if k not in f.files]
            if missing:
                raise DataError(
                    f"{path} has no {', '.join(missing)}: data.path must be dSprites' "
                    "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz (or leave it empty to render the grid)"
                )
            images, classes = torch.from_numpy(f["imgs"]), torch.from_numpy(f["latents_classes"])
    except (OSError, ValueError) as e:
        raise DataError(
            f"cannot read {path} as a .npz file ({e}): give dSprites' .npz, or leave data.path empty"
        ) from None
    if images.dim() != 3 or images.shape[1:] != (64, 64) or classes.shape != (images.shape[0], 6):
        raise DataError(
            f"{path}: imgs {tuple(images.shape)} and latents_classes {tuple(classes.shape)} are not dSprites' "
            "(n, 64, 64) and (n, 6)"
        )
    levels = classes[:, 1:].long()
    if ((levels < 0) | (levels >= torch.tensor(LEVELS))).any() or images.max() > 1:
        raise DataError(f"{path}: factor levels outside dSprites' grid {LEVELS}, or pixels other than 0 and 1")
    return images.to(torch.uint8), levels


def split(test_size):
    """(training indices, test indices) of the grid: a fixed random ``test_size`` of it is the test set."""
    n = math.prod(LEVELS)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    test_size = min(test_size or 10000, n // 2)
    return order[test_size:].sort().values, order[:test_size].sort().values


def load_shapes(root, path, download, image_size=0, workers="auto", test_size=10000, binarize="none", seed=0):
    """dSprites' factor grid rendered on the fly (see the module); labels are the factor levels (n, 5)."""
    size = image_size or 64
    if size < 16:
        raise ConfigError(f"data.image_size = {size}: shapes need at least 16 pixels a side (0: 64, as dSprites)")
    train, test = split(test_size)
    if path:
        if size != 64:
            raise ConfigError(f"dSprites' .npz holds 64 x 64 images: leave data.image_size at 0 or 64, not {size}")
        images, levels = read_dsprites(path)
        is_test = torch.isin(grid_index(levels), test)
        rows = torch.arange(len(levels))
        return _finish(
            DSprites(images, levels, rows[~is_test]),
            DSprites(images, levels, rows[is_test]),
            f"dSprites ({path})",
            binarize,
            workers,
            0,
        )
    return _finish(Shapes(size, train), Shapes(size, test), "'shapes'", binarize, workers, test_size)


load_shapes.streamed = True
DATASETS.register("shapes")(load_shapes)
