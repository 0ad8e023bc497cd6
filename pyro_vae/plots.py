"""Figures: image grids through torchvision."""

import math

import torchvision


def is_image_shape(data_shape):
    return len(data_shape) == 3 and data_shape[0] in (1, 3)


def save_grid(images, path, nrow=None):
    """Save (n, C, H, W) images in [0, 1] as one PNG grid; returns False for non-image data."""
    if not is_image_shape(tuple(images.shape[1:])):
        return False
    nrow = nrow or int(math.ceil(math.sqrt(images.shape[0])))
    torchvision.utils.save_image(images.detach().cpu().clamp(0, 1), path, nrow=nrow, padding=2, pad_value=1.0)
    return True
