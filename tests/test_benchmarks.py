"""The family benchmark compares like with like: each row's hand-written objective is pyro-vae's."""

import math
import sys

import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import families  # noqa: E402


@pytest.mark.parametrize("row", list(families.ROWS))
def test_each_hand_written_objective_equals_pyro_vaes(row, synthetic):
    """Both losses on one batch, averaged over draws, agree within 4 Monte Carlo standard errors (on small data:
    the synthetic 8x8 images, or 64 random colour images for the CIFAR row)."""
    extra = ["data.labels=100"] if row == "m2" else []
    colour = families.colour_data(16, 4) if row == "cifar" else None
    cfg, parts = families.build(
        row, synthetic, extra + [f"data.batch_size={8 if row == 'cifar' else 32}"], colour=colour
    )
    _, _, hand = families.sides(row, cfg, parts)
    (a, ea), (b, eb) = families.agreement(cfg, parts, hand, draws=8 if row == "cifar" else 20)
    assert math.isfinite(a) and abs(a - b) < 4 * math.hypot(ea, eb) + 1e-6 * abs(a)
