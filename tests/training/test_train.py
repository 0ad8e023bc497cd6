import json
import math

import pytest
import torch

from pyro_vae import RunExistsError, TrainingError, evaluate, load_run, train
from pyro_vae.config.build import prepare

from ..conftest import small_config


def test_loss_decreases_over_a_few_hundred_steps(synthetic):
    cfg = small_config("train.elbo.kind=trace", "train.optimizer.lr=3e-3")
    data, vae, elbo, opt = prepare(cfg, synthetic)
    losses = []
    g = torch.Generator().manual_seed(0)
    for _ in range(8):  # 8 epochs x 40 batches = 320 steps
        for x in data.batches(50, g):
            opt.zero_grad()
            losses.append(elbo.loss_and_grads(vae.model, vae.guide, x, num_data=data.num_train) / data.num_train)
            opt.step()
    losses = torch.tensor(losses)
    assert torch.isfinite(losses).all()
    first, last = losses[:40], losses[-40:]
    # the drop must exceed the noise of the two window means many times over
    se = (first.var() / 40 + last.var() / 40).sqrt()
    assert first.mean() - last.mean() > 5 * se
    assert first.mean() - last.mean() > 3.0  # nats per data point


def test_run_folder_and_checkpoint_round_trip(tmp_path, synthetic):
    out = tmp_path / "run"
    vae, history = train(small_config("train.epochs=2"), out, progress=False, data=synthetic, log=lambda s: None)
    assert [h["epoch"] for h in history] == [1, 2]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines == history
    assert set(lines[0]) == {"epoch", "train_loss", "test_elbo", "test_bits_per_dim", "beta", "seconds"}
    d = 64 * math.log(2)  # bernoulli on 8x8 binary images: bits/dim = -ELBO / (64 ln 2)
    assert all(r["test_bits_per_dim"] == pytest.approx(-r["test_elbo"] / d) for r in lines)
    assert (out / "config.toml").exists() and (out / "samples.png").exists()
    torch.manual_seed(5)
    before = evaluate(vae, synthetic.test, iwae_samples=10)
    cfg, loaded, data = load_run(out)
    torch.manual_seed(5)
    assert evaluate(loaded, data.test, iwae_samples=10) == before
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and state["format"] == "pyro-vae-checkpoint"


def test_resume_equals_uninterrupted(tmp_path, synthetic):
    quiet = dict(progress=False, data=synthetic, log=lambda s: None)
    _, full = train(small_config("train.epochs=3"), tmp_path / "a", **quiet)
    train(small_config("train.epochs=1"), tmp_path / "b", **quiet)
    _, rest = train(small_config("train.epochs=3"), tmp_path / "b", resume=True, **quiet)
    resumed = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(resumed) == strip(full)


def test_existing_run_is_not_overwritten(tmp_path, synthetic):
    quiet = dict(progress=False, data=synthetic, log=lambda s: None)
    train(small_config(), tmp_path, **quiet)
    metrics = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(RunExistsError, match="--resume .*--overwrite"):
        train(small_config(), tmp_path, **quiet)
    assert (tmp_path / "metrics.jsonl").read_text() == metrics
    train(small_config(), tmp_path, overwrite=True, **quiet)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_non_finite_loss_stops_with_a_clear_error(tmp_path, synthetic):
    cfg = small_config("train.optimizer.lr=1e30", "train.epochs=3")
    with pytest.raises(TrainingError, match=r"epoch \d+, step \d+.*learning rate"):
        train(cfg, tmp_path, progress=False, data=synthetic, log=lambda s: None)


def test_same_seed_same_metrics(tmp_path, synthetic):
    quiet = dict(progress=False, data=synthetic, log=lambda s: None)
    _, a = train(small_config("train.epochs=2"), tmp_path / "a", **quiet)
    _, b = train(small_config("train.epochs=2"), tmp_path / "b", **quiet)
    _, c = train(small_config("train.epochs=2", "seed=1"), tmp_path / "c", **quiet)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(a) == strip(b) and strip(a) != strip(c)
