"""beta-VAE: KL warm-up schedules, the dual update of the constrained mode, sweeps and figures."""

import csv
import json
import math

import pytest
import torch

from pyro_vae import ConfigError, evaluate, load_run, train
from pyro_vae.cli import main
from pyro_vae.infer.schedules import SCHEDULES, DualAscent
from pyro_vae.models.vae import kl_per_dim, rate
from pyro_vae.studies.sweep import parse_sweep, sweep

from ..conftest import small_config

QUIET = dict(progress=False, log=lambda s: None)


def test_linear_warmup_values_per_step():
    s = SCHEDULES.build({"kind": "linear", "epochs": 2}, steps_per_epoch=5, total_steps=30)
    assert [s(t) for t in range(12)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.0, 1.0])


def test_cyclical_warmup_values_per_step():
    """Fu et al. 2019: 2 cycles of 10 steps, rising over the first half of each."""
    s = SCHEDULES.build({"kind": "cyclical", "cycles": 2, "ratio": 0.5}, steps_per_epoch=5, total_steps=20)
    assert [s(t) for t in range(20)] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1, 1, 1, 1, 1] * 2)
    assert SCHEDULES.build({"kind": "none"}, steps_per_epoch=5, total_steps=20)(7) == 1.0
    with pytest.raises(ConfigError, match=r"ratio must be a number in \(0, 1\]"):
        SCHEDULES.build({"kind": "cyclical", "ratio": 0}, steps_per_epoch=5, total_steps=20)


def test_dual_update():
    """beta <- beta * exp(lr * (rate - target)), clipped to [1e-3, 1e3]."""
    d = DualAscent(target=10.0, lr=0.1, beta=1.0)
    assert d.update(20.0) == pytest.approx(math.e)
    assert d.update(10.0) == pytest.approx(math.e)  # at the target it stays
    assert d.update(0.0) == pytest.approx(1.0)
    assert d.update(1e6) == pytest.approx(1e3) and DualAscent(5.0, 0.1).update(-1e6) == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="target_rate must be a positive"):
        DualAscent(0.0)


def test_metrics_record_the_beta_of_each_epoch(tmp_path, synthetic):
    cfg = small_config("train.epochs=3", "train.beta=2.0", "train.kl_warmup={kind='linear', epochs=2}")
    _, history = train(cfg, tmp_path, data=synthetic, **QUIET)
    S = synthetic.num_train // 50
    assert [h["beta"] for h in history] == pytest.approx([2 * (S + 1) / (4 * S), 2 * (3 * S + 1) / (4 * S), 2.0])


def test_constrained_mode_moves_the_rate_to_the_target(tmp_path, synthetic):
    cfg = small_config("train.epochs=8")
    free, _ = train(cfg, tmp_path / "free", data=synthetic, **QUIET)
    free_rate = evaluate(free, synthetic.test, iwae_samples=0)["rate"]
    target = free_rate / 2
    cfg = small_config("train.epochs=8", f"train.target_rate={target}", "train.beta_lr=0.3")
    held, history = train(cfg, tmp_path / "held", data=synthetic, **QUIET)
    held_rate = evaluate(held, synthetic.test, iwae_samples=0)["rate"]
    assert history[-1]["beta"] > 1.0  # the multiplier rose to push the rate down
    assert held_rate < 0.75 * free_rate
    assert abs(held_rate - target) < 0.25 * target, (free_rate, held_rate, target)
    assert load_run(tmp_path / "held")[1] is not None


def test_schedule_errors():
    with pytest.raises(ConfigError, match="leave train.kl_warmup"):
        small_config("train.target_rate=5.0", "train.kl_warmup={kind='linear', epochs=1}")
    with pytest.raises(ConfigError, match="valid kinds: cyclical, linear, none"):
        small_config("train.kl_warmup.kind=sigmoid")


def test_kl_per_dim_sums_to_the_rate(small_vae, synthetic):
    x = synthetic.test[:50]
    torch.testing.assert_close(kl_per_dim(small_vae, x).sum(-1), rate(small_vae, x))
    r = evaluate(small_vae, x, iwae_samples=0)
    assert sum(r["kl_per_dim"]) == pytest.approx(r["rate"], rel=1e-5)


def test_parse_sweep():
    fixed, swept = parse_sweep(
        [
            "train.beta=0.5,1,2",
            "model.encoder.hidden=[256,128]",
            "train.epochs=1",
            "model.prior={kind='mixture', components=3}",
            "seed=0,1",
        ]
    )
    assert fixed == ["model.encoder.hidden=[256,128]", "train.epochs=1", "model.prior={kind='mixture', components=3}"]
    assert swept == {"train.beta": ["0.5", "1", "2"], "seed": ["0", "1"]}
    with pytest.raises(ConfigError, match="key=value"):
        parse_sweep(["train.beta"])
    with pytest.raises(ConfigError, match="twice"):
        parse_sweep(["seed=0,1", "seed=2,3"])


def test_sweep_over_beta(tmp_path, synthetic):
    overrides = [
        "data.dataset=synthetic",
        "data.batch_size=50",
        "model.latent_dim=4",
        "model.encoder.hidden=[64]",
        "model.decoder.hidden=[64]",
        "train.epochs=3",
        "train.beta=0.25,4",
    ]
    rows = sweep(None, overrides, tmp_path, data=synthetic, **QUIET)
    assert [r["run"] for r in rows] == ["train.beta=0.25", "train.beta=4"]
    assert rows[1]["rate"] < rows[0]["rate"] and rows[1]["distortion"] > rows[0]["distortion"]
    with open(tmp_path / "sweep.csv") as f:
        assert [r["train.beta"] for r in csv.DictReader(f)] == ["0.25", "4"]
    assert (tmp_path / "rate_distortion.png").stat().st_size > 5000
    with pytest.raises(ConfigError, match="nothing to sweep"):
        sweep(None, ["train.beta=1"], tmp_path / "none", data=synthetic, **QUIET)
    # from two seeds: seed 0 is the run above, seed 1 another; each number their mean, with its standard error
    seeded = sweep(None, overrides, tmp_path / "seeds", data=synthetic, seeds=2, **QUIET)
    assert (tmp_path / "seeds/beta=4/seed-1/checkpoint.pt").exists()
    for one, two in zip(rows, seeded):
        other = evaluate(load_run(tmp_path / "seeds" / one["folder"] / "seed-1")[1], synthetic.test, iwae_samples=0)
        assert two["seeds"] == 2 and two["rate_se"] > 0
        assert two["rate"] == pytest.approx((one["rate"] + other["rate"]) / 2, rel=1e-3, abs=1e-3)


def test_plot_command_writes_every_figure(tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "--set",
        "data.dataset=synthetic",
        "--set",
        "model.latent_dim=2",
        "--set",
        "data.batch_size=100",
        "--set",
        "train.epochs=1",
        "--out",
        str(run),
        "--quiet",
    ]
    assert main(["train", *args]) == 0
    assert main(["plot", str(run)]) == 0
    names = {p.name for p in (run / "figures").iterdir()}
    assert names == {
        "learning_curves.png",
        "reconstructions.png",
        "prior_samples.png",
        "traversals.png",
        "latent_scatter.png",
        "manifold.png",
    }
    assert all((run / "figures" / n).stat().st_size > 500 for n in names)
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["beta"] == 1.0


@pytest.mark.parametrize("kind", ["trace", "jit_meanfield", "iwae"])
@pytest.mark.parametrize("schedule", ["train.beta=0.0", "train.kl_warmup={kind='cyclical', cycles=2}"])
def test_a_kl_weight_of_zero_trains_with_every_estimator(tmp_path, synthetic, kind, schedule):
    """beta = 0 (set, or the first step of a cyclical warm-up) drops the KL term; Pyro's poutine.scale
    refuses a scale of 0, so the programs weight z with their own messenger."""
    _, history = train(
        small_config(f"train.elbo.kind={kind}", schedule), tmp_path, data=synthetic, progress=False, log=lambda s: None
    )
    assert math.isfinite(history[0]["train_loss"])


@pytest.mark.parametrize(
    "kind", ["trace", "jit_trace", "meanfield", "jit_meanfield", "tracegraph", "stl", "iwae", "renyi", "dreg"]
)
def test_at_beta_zero_the_kl_term_has_no_gradient(synthetic, kind):
    """beta = 0 removes log p(z) - log q(z|x) from the objective: a learned prior (here a mixture) gets a gradient
    of exactly zero, while the decoder's is not zero."""
    from pyro_vae import ESTIMATORS, build_vae

    cfg = small_config("model.prior={kind='mixture', components=3}")
    vae = build_vae(cfg, synthetic.data_shape)
    spec = {"kind": kind, **({"num_particles": 3} if kind in ("iwae", "renyi", "dreg") else {})}
    for beta, zero in ((0.0, True), (0.5, False)):
        for p in vae.parameters():
            p.grad = None
        ESTIMATORS.build(spec).loss_and_grads(
            vae.model, vae.guide, synthetic.example_batch(20), num_data=100, beta=beta
        )
        prior = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in vae.prior.parameters()]
        )
        assert (prior.abs().max() == 0) == zero, (beta, prior.abs().max())
        assert any(p.grad is not None and p.grad.abs().max() > 0 for p in vae.decoder.parameters())


def test_a_cyclical_warm_up_trains_its_first_step_at_beta_zero(tmp_path, synthetic):
    """The loop's beta at each step is the schedule's: 0 at the first step of each cycle, rising to 1."""
    from pyro_vae import Callback

    class Betas(Callback):
        def __init__(self):
            self.seen = []

        def on_step(self, run, epoch, step, global_step, loss, beta):
            self.seen.append(beta)

    betas = Betas()
    cfg = small_config("train.epochs=2", "train.kl_warmup={kind='cyclical', cycles=2, ratio=0.5}")
    train(cfg, tmp_path, data=synthetic, callbacks=[betas], **QUIET)
    steps = len(betas.seen)  # 2 epochs of 40 steps: 2 cycles of 40, rising over the first 20 of each
    schedule = SCHEDULES.build(cfg["train"]["kl_warmup"], steps_per_epoch=steps // 2, total_steps=steps)
    assert betas.seen[0] == 0.0 and betas.seen[steps // 2] == 0.0 and max(betas.seen) == 1.0
    assert betas.seen == pytest.approx([schedule(t) for t in range(steps)])
