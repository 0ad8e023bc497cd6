"""The device paths, on every device this machine has: the CPU always, a CUDA GPU where one is present (the
``cuda`` cases are skipped, with the reason, on a machine without one; run them with ``pytest -m cuda`` where a
GPU is). Each check is the same on both, so the CPU run proves the check and the GPU run the CUDA path: training
and a resume equal to an uninterrupted run (CUDA's RNG state in the checkpoint), evaluation, and bf16."""

import math

import pytest
import torch

from pyro_vae import evaluate, load_checkpoint, train
from pyro_vae.training.folder import read_metrics

from ..conftest import small_config

QUIET = dict(progress=False, log=lambda s: None)
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)"),
        ],
    ),
]


def strip(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.mark.parametrize("device", DEVICES)
def test_a_resumed_run_equals_an_uninterrupted_one_on_the_device(device, tmp_path, synthetic):
    """Two epochs straight, or one then a resume: the same metrics and weights, so the device's RNG (dynamic
    binarisation, z draws) is saved and restored with the checkpoint."""
    cfg = small_config("train.epochs=2", f"device={device}")
    train(cfg, tmp_path / "straight", data=synthetic, **QUIET)
    train(small_config("train.epochs=1", f"device={device}"), tmp_path / "resumed", data=synthetic, **QUIET)
    state = load_checkpoint(tmp_path / "resumed")
    assert (state.get("cuda_rng") is not None) == (device == "cuda")
    train(cfg, tmp_path / "resumed", resume=True, data=synthetic, **QUIET)
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "resumed")
    assert all(v.device.type == "cpu" for v in a["model"].values())  # a checkpoint loads on any machine
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert strip(read_metrics(tmp_path / "straight" / "metrics.jsonl")[0]) == strip(
        read_metrics(tmp_path / "resumed" / "metrics.jsonl")[0]
    )


@pytest.mark.parametrize("device", DEVICES)
def test_training_on_the_device_learns_and_evaluates_there(device, tmp_path, synthetic):
    vae, history = train(small_config("train.epochs=5", f"device={device}"), tmp_path, data=synthetic, **QUIET)
    assert next(vae.parameters()).device.type == device
    assert history[-1]["test_elbo"] > history[0]["test_elbo"] + 1.0  # learning, by a margin noise does not reach
    r = evaluate(vae, synthetic.test[:100].to(device), iwae_samples=20)
    assert math.isfinite(r["log_px"]) and r["log_px"] < 0 and r["rate"] > 0


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_trains_near_fp32_on_the_device(device, tmp_path, synthetic):
    """train.precision = "bf16": the same run as fp32 but for bf16's rounding (8 bits of mantissa); the weights
    stay fp32."""
    runs = {
        p: train(
            small_config("train.epochs=2", f"device={device}", f"train.precision={p}"),
            tmp_path / p,
            data=synthetic,
            **QUIET,
        )
        for p in ("fp32", "bf16")
    }
    (vae, bf16), (_, fp32) = runs["bf16"], runs["fp32"]
    assert all(p.dtype == torch.float32 for p in vae.parameters())
    for a, b in zip(bf16, fp32):
        assert math.isfinite(a["test_elbo"]) and abs(a["test_elbo"] - b["test_elbo"]) < 0.02 * abs(b["test_elbo"])
