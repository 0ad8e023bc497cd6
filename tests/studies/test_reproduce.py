"""benchmarks/reproduce.py: the papers' settings become configs, runs resume, the table holds both columns."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from pyro_vae import load_config
from pyro_vae.infer.optim import burda_schedule

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduce.py"


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_burda_settings_are_the_papers(reproduce):
    cfg = load_config(overrides=reproduce.burda_overrides("iwae", 50, 2, 3280))
    assert cfg["data"]["batch_size"] == 20 and cfg["train"]["epochs"] == 3280
    assert cfg["train"]["optimizer"] == {"kind": "adam", "lr": 1e-3, "eps": 1e-4}
    assert cfg["model"]["kind"] == "hierarchical" and cfg["model"]["latent_dim"] == 100
    assert cfg["model"]["layers"] == [{"latent_dim": 50, "hidden": [100, 100], "activation": "tanh"}]
    assert cfg["model"]["encoder"]["hidden"] == [200, 200] and cfg["model"]["encoder"]["activation"] == "tanh"
    assert cfg["train"]["elbo"] == {"kind": "iwae", "num_particles": 50}
    one = load_config(overrides=reproduce.burda_overrides("iwae", 1, 1, 10))
    assert one["model"]["kind"] == "vae" and one["model"]["latent_dim"] == 50
    assert one["train"]["elbo"]["kind"] == "jit_trace"  # IWAE with k = 1 is the VAE


def test_the_burda_schedule_is_3_to_the_i_epochs_at_a_tenth_per_seven_stages():
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule = burda_schedule(opt, steps_per_epoch=1, total_epochs=3280, every="epoch")
    lrs = []
    for _ in range(3280):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.after("epoch")
    for i in range(8):
        start = sum(3**j for j in range(i))
        stage = lrs[start : start + 3**i]
        assert stage == pytest.approx([1e-3 * 10 ** (-i / 7)] * 3**i)


def test_a_small_reproduction_trains_evaluates_and_writes_the_table(reproduce, tmp_path, monkeypatch, capsys):
    argv = [
        "reproduce.py",
        "--model",
        "iwae",
        "--k",
        "2",
        "--layers",
        "1,2",
        "--budget-epochs",
        "1",
        "--eval-k",
        "5",
        "--test-points",
        "50",
        "--set",
        "data.dataset=synthetic",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    reproduce.main()
    table = (tmp_path / "burda2016.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| vae") or line.startswith("| iwae")]
    assert len(rows) == 2
    assert "| iwae | 2 | 2 | nan |" in table  # k = 2 is not in the paper
    results = [
        json.loads((tmp_path / f"burda2016-{m}-k2-l{n}" / "reproduce.json").read_text())
        for n in (1, 2)
        for m in ("iwae",)
    ]
    for r in results:
        assert r["log_px"] < 0 and r["log_px"] >= r["elbo"] - 1.0 and r["test_points"] == 50
    assert len(results[1]["active_units_per_layer"]) == 2
    for r in results:  # the kept per-image values are the ones the mean and its standard error come from
        images = torch.tensor(r["log_px_per_image"], dtype=torch.float64)
        assert images.numel() == 50 and images.mean().item() == pytest.approx(r["log_px"], rel=1e-6)
        assert r["log_px_se"] == pytest.approx((images.std() / 50**0.5).item(), rel=1e-6)
    assert "± " in rows[0] and "Paired with burda2016-iwae-k2-l1" in table and "- burda2016-iwae-k2-l2: " in table
    # a second call reuses the kept results: nothing trains again
    monkeypatch.setattr(reproduce.pyro_vae, "train", lambda *a, **k: pytest.fail("trained again"))
    reproduce.main()
    assert (tmp_path / "burda2016.md").read_text() == table
    # --run picks runs in a given order (the first is the one paired with): the same kept results
    monkeypatch.setattr(sys, "argv", argv + ["--run", "iwae:2:2", "--run", "iwae:2:1"])
    reproduce.main()
    picked = (tmp_path / "burda2016.md").read_text()
    assert picked.index("| iwae | 2 | 2 |") < picked.index("| iwae | 2 | 1 |")
    assert "Paired with burda2016-iwae-k2-l2" in picked
    for bad in (["--run", "iwae:2"], ["--run", "gan:1:1"], ["--run", "iwae:0:1"]):
        monkeypatch.setattr(sys, "argv", argv + bad)
        with pytest.raises(SystemExit):
            reproduce.main()


def test_vampprior_settings_and_the_warmup_share(reproduce):
    cfg = load_config(overrides=reproduce.vampprior_overrides("vamp", 1, 1, 2000))
    assert cfg["model"]["prior"] == {"kind": "vamp", "pseudo_inputs": 500} and cfg["model"]["latent_dim"] == 40
    assert cfg["train"]["kl_warmup"] == {"kind": "linear", "epochs": 100} and cfg["data"]["batch_size"] == 100
    cut = load_config(overrides=reproduce.vampprior_overrides("vae", 1, 1, 200))
    assert cut["train"]["kl_warmup"]["epochs"] == 10 and cut["model"]["prior"]["kind"] == "standard_normal"
    with pytest.raises(SystemExit, match="only --layers 1"):
        reproduce.vampprior_overrides("vamp", 1, 2, 200)


def test_the_paired_difference_is_the_mean_of_the_per_image_differences_with_its_standard_error(reproduce):
    base = [-90.0, -100.0, -110.0, -95.0]
    other = [-89.0, -98.0, -110.5, -94.5]  # differences of -log p(x): -1, -2, +0.5, -0.5
    rows = [("vae", 1, 1, "a", {"log_px_per_image": base}), ("iwae", 5, 2, "b", {"log_px_per_image": other})]
    line = reproduce.paired(rows)[-1]
    d = torch.tensor([-1.0, -2.0, 0.5, -0.5], dtype=torch.float64)
    assert line.startswith(f"- b: {d.mean().item():+.2f} ± {(d.std() / 2).item():.2f} nats")
    assert reproduce.paired(rows[:1]) == []
