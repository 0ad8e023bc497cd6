import json

from pyro_vae.cli import main

ARGS = [
    "--set",
    "data.dataset=synthetic",
    "--set",
    "model.latent_dim=3",
    "--set",
    "data.batch_size=100",
    "--set",
    "model.encoder.hidden=[32]",
    "--set",
    "model.decoder.hidden=[32]",
]


def test_train_evaluate_sample(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *ARGS, "--set", "train.epochs=2", "--out", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "epoch   2" in out and "test ELBO" in out
    assert {p.name for p in run.iterdir()} == {
        "config.toml",
        "metrics.jsonl",
        "checkpoint.pt",
        "samples.png",
        "status.json",
        ".lock",
    }

    assert main(["evaluate", str(run), "--iwae-samples", "16", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["iwae_samples"] == 16 and result["log_px"] > result["elbo"] - 1.0

    assert main(["sample", str(run), "--n", "9", "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").stat().st_size > 0

    # resume to 3 epochs, with the config stored in the run
    assert main(["train", "--resume", str(run), "--set", "train.epochs=3", "--quiet"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["train", "--set", "train.elbo.kind=nope", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-vae train: error: train.elbo: unknown kind 'nope'") and "valid kinds" in err
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "no run folder at" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
