"""The shapes dataset: dSprites' factor grid, each combination once per pass, images that match their factors."""

import math

import pytest
import torch

from pyro_vae import load_data
from pyro_vae.data.shapes import LEVELS, Shapes, factor_values, levels_of, render, split
from pyro_vae.errors import ConfigError, DataError


def test_every_combination_once_per_pass():
    n = math.prod(LEVELS)
    assert n == 737_280
    train, test = split(10000)
    assert len(test) == 10000 and len(train) + len(test) == n
    assert torch.equal(torch.cat([train, test]).sort().values, torch.arange(n))  # each once, none twice
    levels = levels_of(torch.arange(n))
    assert levels.unique(dim=0).shape[0] == n  # the labels of the grid are every combination
    for k, size in enumerate(LEVELS):
        assert torch.equal(levels[:, k].unique(), torch.arange(size))
    assert torch.equal(levels_of(torch.tensor([1])), torch.tensor([[0, 0, 0, 0, 1]]))  # y fastest, as dSprites


def test_rendering_is_deterministic_and_batches_equal_items():
    data = Shapes(32, torch.tensor([5, 77_777, 500_000]))
    x, y = data.__getitems__([0, 1, 2])
    assert x.dtype == torch.uint8 and x.shape == (3, 1, 32, 32) and set(x.unique().tolist()) <= {0, 255}
    for i in range(3):
        xi, yi = data[i]
        assert torch.equal(xi, x[i]) and torch.equal(yi, y[i])


def moments(image):
    """Area, centroid and the angle of the principal axis of a binary image (1, S, S)."""
    m = image[0].double() / 255
    s = m.shape[0]
    c = (torch.arange(s, dtype=torch.float64) + 0.5) / s
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    area = m.sum()
    cx, cy = (m * xx).sum() / area, (m * yy).sum() / area
    mxx, myy, mxy = (m * (xx - cx) ** 2).sum(), (m * (yy - cy) ** 2).sum(), (m * (xx - cx) * (yy - cy)).sum()
    return area / s**2, cx, cy, 0.5 * math.atan2(2 * mxy, mxx - myy)


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_images_match_their_factors(shape):
    """Centroid at 0.2 + 0.6 position (the heart's a little off its centre), area growing as scale^2, and
    the ellipse's long axis along its angle (mod pi)."""
    g = torch.Generator().manual_seed(shape)
    levels = torch.stack([torch.full((40,), shape)] + [torch.randint(n, (40,), generator=g) for n in LEVELS[1:]], 1)
    images = render(levels, 64)
    v = factor_values(levels)
    for image, value in zip(images, v):
        area, cx, cy, angle = moments(image)
        assert float(cx) == pytest.approx(0.2 + 0.6 * float(value[3]), abs=0.02 if shape < 2 else 0.04)
        assert float(cy) == pytest.approx(0.2 + 0.6 * float(value[4]), abs=0.02 if shape < 2 else 0.04)
        if shape == 1:
            diff = (angle - float(value[2])) % math.pi
            assert min(diff, math.pi - diff) < 0.1
    small, large = [levels[0].clone() for _ in range(2)]
    small[1], large[1] = 0, 5
    a_small, a_large = (moments(render(lv[None], 64)[0])[0] for lv in (small, large))
    assert float(a_large / a_small) == pytest.approx(4.0, rel=0.1)  # scale 1 against 0.5: four times the area


def test_load_data_streams_shapes_with_their_factors():
    data = load_data("shapes", image_size=16, test_size=200, binarize="none")
    assert data.data_shape == (1, 16, 16) and data.num_train == 737_280 - 200
    assert data.test.shape == (200, 1, 16, 16) and data.test_labels.shape == (200, 5)
    x, y = next(data.batches(32, torch.Generator().manual_seed(0), labels=True))
    assert x.shape == (32, 1, 16, 16) and y.shape == (32, 5) and float(x.max()) == 1.0
    with pytest.raises(ConfigError, match="at least 16"):
        load_data("shapes", image_size=8)


def test_dsprites_own_npz_is_read_and_split_as_the_grid(tmp_path):
    """A file laid out as dSprites' (imgs 0/1 (n, 64, 64), latents_classes (n, 6) with colour first), here 400 grid
    points, 40 of them of the test combinations: the labels are the files', the images its own, and a point is
    a test point exactly where its combination is one of the rendered grid's."""
    import numpy as np

    _, test = split(10000)
    g = torch.Generator().manual_seed(3)
    index = torch.cat(
        [test[torch.randperm(len(test), generator=g)[:40]], torch.randint(0, 737_280, (360,), generator=g)]
    )
    index = index[~torch.isin(index, test) | (torch.arange(400) < 40)]
    levels = levels_of(index)
    images = (render(levels, 64)[:, 0] // 255).numpy()
    classes = torch.cat([torch.zeros(len(index), 1, dtype=torch.long), levels], 1).numpy()
    path = tmp_path / "dsprites.npz"
    np.savez_compressed(path, imgs=images, latents_classes=classes, latents_values=classes.astype(float))
    data = load_data("shapes", path=path, test_size=10000, binarize="none")
    assert data.test.shape == (40, 1, 64, 64) and data.num_train == len(index) - 40
    assert torch.equal(data.test_labels, levels[:40])  # the file's order is kept within each split
    assert torch.equal(data.test, render(levels[:40], 64).float() / 255)
    x, y = next(data.batches(8, torch.Generator().manual_seed(0), labels=True))
    assert torch.equal(x, render(y, 64).float() / 255)
    with pytest.raises(ConfigError, match="64 x 64"):
        load_data("shapes", path=path, image_size=32)
    np.savez(tmp_path / "other.npz", imgs=images)
    with pytest.raises(DataError, match="no latents_classes"):
        load_data("shapes", path=tmp_path / "other.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_data("shapes", path=tmp_path / "broken.npz")
