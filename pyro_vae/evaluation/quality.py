"""Sample quality: how far generated images lie from real ones, in a feature network's space.

With features a_i of n real images and b_j of m generated ones:

- FID (Heusel et al. 2017): ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), the Frechet distance of
  the two Gaussians with the sets' means and covariances (torchmetrics' ``FrechetInceptionDistance``);
  0 for identical sets; biased upward for small sets, so compare FIDs of equal n only.
- KID (Binkowski et al. 2018): the unbiased MMD^2 with the kernel (a.b / F + 1)^3, averaged over random
  subsets (torchmetrics' ``KernelInceptionDistance``), with the spread over subsets; unbiased, so ~0
  (possibly below) for sets from one distribution.
- precision and recall (Kynkaanniemi et al. 2019): each set's manifold is the union of balls around
  its points reaching their k-th nearest neighbour (k = 3); precision is the share of generated
  points inside the real manifold (are samples realistic?), recall the share of real points inside
  the generated one (is the data's variety covered?).

``floor``: the same numbers between the test set and a training subset of the same size, the value a
perfect generator would get at this n (no model reaches 0 with finite sets).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..errors import UsageError

#: the neighbour whose distance is a point's radius in precision/recall
K_NEAREST = 3


class _Given(nn.Module):
    """The identity on precomputed features: torchmetrics' metrics run on features computed once."""

    def __init__(self, num_features):
        super().__init__()
        self.num_features = num_features

    def forward(self, x):
        return x


@torch.no_grad()
def features_of(net, images, batch_size=500):
    """``net``'s features of ``images`` (n, C, H, W) in [0, 1], batch by batch: (n, F) float64."""
    if images.dim() != 4:
        raise UsageError(f"sample-quality features need images (n, C, H, W), got shape {tuple(images.shape)}")
    out = [net(images[i : i + batch_size].float()).double().cpu() for i in range(0, len(images), batch_size)]
    f = torch.cat(out)
    if not torch.isfinite(f).all():
        raise UsageError("the feature network returned NaN or infinite features: check the images' range ([0, 1])")
    return f


def frechet_distance(a, b):
    """FID between feature sets a (n, F) and b (m, F), each of at least 2 points."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check_pair(a, b, 2)
    fid = FrechetInceptionDistance(feature=_Given(a.shape[1])).double()
    fid.update(a, real=True)
    fid.update(b, real=False)
    return max(float(fid.compute()), 0.0)  # the matrix square root's rounding can dip below 0


def kernel_distance(a, b, subsets=100, subset_size=1000, seed=0):
    """KID between feature sets a and b: (mean over subsets, standard deviation over subsets)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    _check_pair(a, b, 2)
    size = min(subset_size, len(a), len(b))
    with warnings.catch_warnings():  # "will save all extracted features": they are ours, already in memory
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=_Given(a.shape[1]), subsets=subsets, subset_size=size)
    kid.update(a.float(), real=True)
    kid.update(b.float(), real=False)
    with torch.random.fork_rng():  # torchmetrics draws its subsets from the global generator
        torch.manual_seed(seed)
        mean, std = kid.compute()
    return float(mean), float(std)


def _radii(x, k, chunk=2048):
    """Distance from each row of x to its k-th nearest other row."""
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i : i + chunk], x)
        out.append(d.kthvalue(k + 1, dim=1).values)  # the first is the point itself, at 0
    return torch.cat(out)


def _inside(points, centres, radii, chunk=2048):
    """Whether each point lies within radius of some centre."""
    out = []
    for i in range(0, len(points), chunk):
        d = torch.cdist(points[i : i + chunk], centres)
        out.append((d <= radii[None]).any(1))
    return torch.cat(out)


def precision_recall(real, fake, k=K_NEAREST):
    """(precision, recall) of Kynkaanniemi et al. 2019 with k-nearest-neighbour balls."""
    _check_pair(real, fake, k + 1)
    real, fake = real.double(), fake.double()
    precision = _inside(fake, real, _radii(real, k)).double().mean()
    recall = _inside(real, fake, _radii(fake, k)).double().mean()
    return float(precision), float(recall)


def _check_pair(a, b, least):
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise UsageError(f"feature sets must be (n, F) with the same F, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(len(a), len(b)) < least:
        raise UsageError(f"sample-quality metrics need at least {least} points per set, got {len(a)} and {len(b)}")


def quality(real, fake, seed=0):
    """FID, KID (and its spread over subsets), precision and recall between feature sets ``real`` and ``fake``."""
    kid, kid_std = kernel_distance(real, fake, seed=seed)
    precision, recall = precision_recall(real, fake)
    return {
        "fid": frechet_distance(real, fake),
        "kid": kid,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
    }
