"""Every bad input the command line or a public function can be given ends in one of our errors,
with one line that names paths plainly and says what to do: never a raw traceback."""

import io
import json
import warnings
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_vae import ConfigError, DataError, PyroVAEError, evaluate, load_config, save_checkpoint
from pyro_vae.cli import main
from pyro_vae.data import load_data
from pyro_vae.errors import PyroVAEWarning

SMALL = ["--set", "data.dataset=synthetic", "--set", "model.latent_dim=2", "--set", "train.epochs=1", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adv") / "run"
    assert main(["train", *SMALL, "--set", "eval.iwae_samples=5", "--out", str(folder)]) == 0
    return folder


def one_line_error(capsys, argv, code=2):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: " in err, err
    assert "Traceback" not in err and "PosixPath" not in err
    return err


def test_command_line_errors(tmp_path, run, capsys):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "latin1.toml").write_bytes("seed = 1 # caf\xe9".encode("latin-1"))
    cases = [
        (["train", *SMALL, "--out", str(tmp_path / "afile")], "is a file, not a folder"),
        (["train", *SMALL, "--config", str(tmp_path)], "is a folder: give a .toml file"),
        (["train", *SMALL, "--config", str(tmp_path / "latin1.toml")], "is not UTF-8 text"),
        (["train", *SMALL, "--set", "seed=-1"], "seed must be an integer from 0 to 4,294,967,295"),
        (["train", *SMALL, "--set", f"seed={2**32}"], "seed must be"),
        (["evaluate", str(run), "--iwae-samples", "-5"], "--iwae-samples: must be an integer >= 0"),
        (["evaluate", str(run), "--iwae-samples", str(10**12)], "would take about .* days.*lower --iwae-samples"),
        (["sample", str(run), "--n", "0"], "--n: must be an integer from 1 to"),
        (["sample", str(run), "--out", str(tmp_path / "s.txt")], "give a file ending in .png"),
        (["sample", str(run), "--out", str(tmp_path)], "is a folder: give a file name"),
        (
            ["compare", *SMALL, "--estimators", "trace", "--snr-samples", "0"],
            "--snr-samples: must be an integer from 2",
        ),
        (["train", *SMALL, "--set", "train.elbo.num_particles=1000000000000"], "needs about .* GiB.*num_particles"),
        (["train", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["evaluate"], "required: run"),
        (["evaluate", str(tmp_path / "nothing")], "no run folder at"),
    ]
    for argv, message in cases:
        err = one_line_error(capsys, argv)
        assert __import__("re").search(message, err), (argv, err)
    assert list(tmp_path.iterdir()) and not (tmp_path / "s.txt").exists()


def test_sample_creates_the_folder_and_draws_without_the_training_set(run, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setattr(
        sys.modules["pyro_vae.config.build"], "load_config_data", lambda cfg: pytest.fail("sample loaded data")
    )
    out = tmp_path / "new" / "folder" / "grid.png"
    assert main(["sample", str(run), "--n", "9", "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and f"wrote {out}" in capsys.readouterr().out


def test_sample_draws_x_by_default_and_means_with_mean(run):
    from pyro_vae.training.load import load_model

    _, vae = load_model(run)
    torch.manual_seed(0)
    draws = vae.sample(200, mean=False)
    torch.manual_seed(0)
    means = vae.sample(200, mean=True)
    assert set(draws.unique().tolist()) <= {0.0, 1.0}  # bernoulli draws are binary
    assert ((means > 0) & (means < 1)).all()
    assert abs(draws.mean().item() - means.mean().item()) < 4 * 0.5 / (draws.numel() ** 0.5) + 0.01


def test_plot_skips_a_damaged_metrics_line_with_a_warning(run, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in ("checkpoint.pt", "config.toml"):
        (copy / f).write_bytes((run / f).read_bytes())
    (copy / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text() + '{"epoch": 2, "train_lo\n')
    assert main(["plot", str(copy)]) == 0
    captured = capsys.readouterr()
    assert "pyro-vae plot: warning: skipped 1 damaged line(s)" in captured.err and "line 2" in captured.err
    assert "learning_curves.png" in captured.out


def test_evaluate_prints_kl_per_dimension(run, capsys):
    assert main(["evaluate", str(run), "--iwae-samples", "0"]) == 0
    out = capsys.readouterr().out
    assert "KL per latent dimension" in out and "z_1:" in out and "z_2:" in out and "log p(x)" not in out


def test_a_checkpoint_that_lacks_keys(run, tmp_path, capsys):
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    for key in ("model", "config", "epoch"):
        damaged = {k: v for k, v in state.items() if k != key}
        folder = tmp_path / key
        folder.mkdir()
        save_checkpoint(
            folder / "checkpoint.pt", **{k: v for k, v in damaged.items() if k not in ("format", "version")}
        )
        for argv in (["evaluate", str(folder)], ["sample", str(folder)], ["train", "--resume", str(folder)]):
            err = one_line_error(capsys, argv)
            assert f"without a valid {key}" in err and "retrain" in err


def test_truncated_mnist_is_corrupt_not_missing(tmp_path):
    from pathlib import Path

    raw = Path(__file__).resolve().parents[2] / "shared" / "data" / "MNIST" / "raw"
    if not raw.is_dir():
        pytest.skip("no MNIST files beside the checkout")
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    for f in raw.iterdir():
        data = f.read_bytes()
        (tmp_path / "MNIST" / "raw" / f.name).write_bytes(data[: len(data) // 2] if "train-images" in f.name else data)
    with pytest.raises(DataError, match=r"MNIST/raw are truncated or corrupt .*download again"):
        load_data("mnist", root=str(tmp_path), download=False)


# -- npz files ------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_channel_last_images_are_transposed_and_said(tmp_path, channels):
    x = np.random.default_rng(0).random((20, 6, 5, channels)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    with pytest.warns(
        PyroVAEWarning, match=rf"channel-last .*C = {channels}: transposed to .*\(20, {channels}, 6, 5\)"
    ):
        d = load_data("npz", path=str(tmp_path / "d.npz"), binarize="none")
    assert d.data_shape == (channels, 6, 5)
    x_all = torch.cat([d.train, d.test])
    assert sorted(x_all.permute(0, 2, 3, 1).reshape(20, -1).sum(1).tolist()) == pytest.approx(
        sorted(torch.from_numpy(x).reshape(20, -1).sum(1).tolist())
    )


def test_channel_first_images_are_left_alone(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 3, 8, 3), np.float32))  # C = 3 first and last: torch's layout wins
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_data("npz", path=str(tmp_path / "d.npz"), binarize="none").data_shape == (3, 8, 3)


def test_npz_members_that_are_not_arrays(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((10, 4), np.float32))
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("notes.txt", "hello")  # ignored: never read
    assert load_data("npz", path=str(path), binarize="none").data_shape == (4,)
    with zipfile.ZipFile(tmp_path / "e.npz", "w") as z:
        z.writestr("x", b"not a .npy file")
    with pytest.raises(DataError, match=r"member 'x' of .*e.npz is not a .npy array"):
        load_data("npz", path=str(tmp_path / "e.npz"))
    for y, message in (
        (np.zeros((10, 2)), "one label per data point"),
        (np.array(["a"] * 10), "must be integers"),
        (np.full(10, 0.5), "must be integers"),
    ):
        np.savez(path, x=np.zeros((10, 4), np.float32), y=y)
        with pytest.raises(DataError, match=message):
            load_data("npz", path=str(path), binarize="none")


# -- public functions -----------------------------------------------------------------------
def test_public_functions_refuse_empty_batches_zero_sizes_and_wrong_types(small_vae):
    x = torch.zeros(3, 1, 8, 8)
    for bad, message in (
        (torch.zeros(0, 1, 8, 8), "no data points"),
        (np.zeros((3, 1, 8, 8)), "must be a torch.Tensor"),
        ([[0.0]], "must be a torch.Tensor"),
        (torch.zeros(3, 1, 8, 8, dtype=torch.long), "floating"),
    ):
        for f in (lambda v: evaluate(small_vae, v), small_vae.model, small_vae.guide):
            with pytest.raises(DataError, match=message):
                f(bad)
    for kwargs, message in (
        ({"iwae_samples": -1}, "iwae_samples must be an integer >= 0"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"elbo_samples": 1.5}, "elbo_samples must be"),
    ):
        with pytest.raises(PyroVAEError, match=message):
            evaluate(small_vae, x, **kwargs)
    for n in (0, -3, 2.5, True):
        with pytest.raises(DataError, match="n must be an integer >= 1"):
            small_vae.sample(n)
    with pytest.raises(DataError, match="num_data must be an integer >= 1"):
        small_vae.model(x, num_data=0)
    with pytest.raises(ConfigError, match="overrides must be a list of 'key=value' strings"):
        load_config(overrides="train.epochs=1")
    with pytest.raises(ConfigError, match="overrides must be a list"):
        load_config(overrides=[("train.epochs", 1)])
    with pytest.raises(ConfigError, match="the config path must be a file name"):
        load_config(3)


def test_a_model_too_large_to_allocate_is_a_config_error(tmp_path):
    from pyro_vae import train

    with pytest.raises(ConfigError, match="does not fit in memory.*lower model.latent_dim"):
        train(
            load_config(overrides=["data.dataset=synthetic", "model.decoder.hidden=[4000000000]"]),
            tmp_path / "r",
            progress=False,
            log=lambda s: None,
        )
    assert not (tmp_path / "r").exists()


def test_log_px_work_is_announced_above_an_hour(small_vae):
    from pyro_vae.work import LOGPX_RATE, per_point

    k = int(2 * 3600 * LOGPX_RATE / (100 * per_point(small_vae)))
    with pytest.warns(PyroVAEWarning, match="about 2.0 hours"):
        from pyro_vae.work import check_logpx_work

        check_logpx_work(small_vae, 100, k)


# -- the fuzz -------------------------------------------------------------------------------
SETS = [
    "train.epochs=1",
    "train.epochs=0",
    "seed=-1",
    "seed=3",
    "model.latent_dim=0",
    "model.latent_dim=2",
    "train.optimizer.lr=-1",
    "train.optimizer.lr=1e-2",
    "train.elbo.kind=iwae",
    "train.elbo.kind=nope",
    "train.elbo.num_particles=0",
    "train.elbo.num_particles=100000000000",
    "data.batch_size=0",
    "data.batch_size=9999",
    "data.binarize=maybe",
    "eval.iwae_samples=-3",
    "device=tpu",
    "bogus=1",
    "x",
    "model.prior.kind=vamp",
    "model.likelihood.kind=gaussian",
    "data.dataset=npz",
    "train.beta=nan",
    "train.kl_warmup={kind='linear', epochs=-1}",
    "model.encoder.hidden=[]",
    "model.encoder.hidden=[-4]",
    "data.path='\udcff.npz'",
    f"data.path='{'p' * 300}.npz'",
    "data.path=''",
    "train.out=''",
    "train.out='..'",
    "train.out='a/../../b'",
    f"train.out='{'o' * 300}'",
    "data.root='\udcff'",
]
#: names a file system may not hold: over 255 bytes, a byte that is not UTF-8 (as Python passes it), empty, dots
ODD_NAMES = ["n" * 300, "\udcff", "", ".", "..", "a\nb", "-"]
VALUES = ["0", "-5", "1", "3", "1000000000000", "abc", "", "nan", "x.png", "x.txt", "/", "\x00", "--quiet"]
FLAGS = {
    "train": ["--set", "--out", "--config", "--resume", "--overwrite", "--quiet"],
    "evaluate": ["--iwae-samples", "--json"],
    "sample": ["--n", "--out", "--seed", "--mean"],
    "compare": ["--set", "--estimators", "--snr-samples", "--out", "--quiet"],
    "sweep": ["--set", "--iwae-samples", "--out", "--quiet"],
    "plot": ["--out"],
    "export": ["--import"],
}


@st.composite
def argv(draw, run, scratch):
    command = draw(st.sampled_from(sorted(FLAGS)))
    args = [command]
    if command in ("evaluate", "sample", "plot", "export"):
        args.append(
            draw(
                st.sampled_from(
                    [
                        str(run),
                        str(scratch / "none"),
                        str(scratch),
                        "/",
                        str(scratch / "f.txt"),
                        *(str(scratch / name) for name in ODD_NAMES),
                    ]
                )
            )
        )
    if command == "export":
        args.append(
            str(scratch / draw(st.sampled_from(["m.pt", "m.safetensors", "sub/m.pt", "f.txt", ".", "cfg.toml/x"])))
        )
    else:
        args += [*SMALL, "--out", str(scratch / f"out{draw(st.integers(0, 3))}")]
    for _ in range(draw(st.integers(0, 4))):
        flag = draw(st.sampled_from(FLAGS[command]))
        args.append(flag)
        if flag == "--set":
            args.append(draw(st.sampled_from(SETS)))
        elif flag == "--import":
            args.append(draw(st.sampled_from(["no_such_module", "json", str(scratch / "f.txt"), "x.py", ""])))
        elif flag in ("--out", "--resume", "--config"):
            name = draw(st.sampled_from(["out0", "out1", "f.png", "f.txt", "cfg.toml", "none", *ODD_NAMES]))
            args.append(str(scratch / name) if name else name)
        elif flag == "--estimators":
            args.append(
                draw(
                    st.sampled_from(
                        [
                            "trace",
                            "iwae,dreg",
                            "nope",
                            "",
                            "a={kind='renyi', alpha=-1}",
                            "../up={kind='trace'}",
                            "={kind='trace'}",
                            "a/b={kind='iwae'}",
                            f"{'l' * 300}={{kind='trace'}}",
                            "\udcff={kind='trace'}",
                            "trace,trace",
                        ]
                    )
                )
            )
        elif flag not in ("--overwrite", "--quiet", "--json", "--mean"):
            args.append(draw(st.sampled_from(VALUES)))
    return args


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "cfg.toml").write_text("[train]\nepochs = 1\n")
    (folder / "f.txt").write_text("not a config")
    return folder


#: the environment a command reads: torchrun's variables (none here lets a rank wait for others), the data root, the
#: rendezvous timeout
ENVIRONMENT = {
    "WORLD_SIZE": ["0", "two", "", "2", "-1"],
    "RANK": ["5", "-1", "x", "0"],
    "LOCAL_RANK": ["-2", "y", "0"],
    "MASTER_PORT": ["0", "70000", "p"],
    "PYRO_VAE_DATA": ["", "/", "\udcff", "d" * 300],
    "PYRO_VAE_RENDEZVOUS_TIMEOUT": ["0", "-3", "soon", "nan"],
}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_the_command_line(run, scratch, capsys, monkeypatch, data):
    args = data.draw(argv(run, scratch))
    env = data.draw(st.dictionaries(st.sampled_from(sorted(ENVIRONMENT)), st.just(None), max_size=3))
    env = {name: data.draw(st.sampled_from(ENVIRONMENT[name])) for name in env}
    if "WORLD_SIZE" not in env:  # a rank with a consistent world would wait for the others
        env = {k: v for k, v in env.items() if k not in ("RANK", "LOCAL_RANK", "MASTER_PORT")}
    with monkeypatch.context() as m:
        for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            m.delenv(name, raising=False)
        for name, value in env.items():
            m.setenv(name, value)
        code = main(args)
    captured = capsys.readouterr()
    assert code in (0, 2), (args, env, captured.err)
    if code == 2:
        lines = [line for line in captured.err.splitlines() if "warning:" not in line]
        assert len(lines) == 1 and lines[0].startswith("pyro-vae") and "error: " in lines[0], (args, env, captured.err)
    assert "Traceback" not in captured.err


MEMBERS = st.sampled_from(["x", "y", "x_test", "y_test", "other"])


@st.composite
def member(draw):
    kind = draw(st.sampled_from(["float", "uint8", "int", "bool", "str", "raw", "object", "4d-last", "empty"]))
    n = draw(st.integers(0, 30))
    make = {
        "float": lambda: np.random.default_rng(n).random((n, 4, 4)).astype(np.float32),
        "uint8": lambda: np.full((n, 1, 4, 4), 200, np.uint8),
        "int": lambda: np.arange(n, dtype=np.int64),
        "bool": lambda: np.ones((n, 3), bool),
        "str": lambda: np.array(["ab"] * n),
        "raw": lambda: b"\x93NUMPY garbage",
        "object": lambda: np.array([None] * n, dtype=object),
        "4d-last": lambda: np.random.default_rng(n).random((n, 4, 4, 3)).astype(np.float32),
        "empty": lambda: np.zeros((0,)),
    }
    return make[kind]()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    members=st.dictionaries(MEMBERS, member(), max_size=4),
    likelihood=st.sampled_from(["bernoulli", "gaussian"]),
    binarize=st.sampled_from(["none", "dynamic"]),
)
def test_fuzz_npz_members_through_the_command_line(tmp_path_factory, capsys, members, likelihood, binarize):
    folder = tmp_path_factory.mktemp("npz")
    path = folder / "d.npz"
    with zipfile.ZipFile(path, "w") as z:
        for name, value in members.items():
            if isinstance(value, bytes):
                z.writestr(name + ".npy", value)
            else:
                buffer = io.BytesIO()
                np.save(buffer, value, allow_pickle=True)
                z.writestr(name + ".npy", buffer.getvalue())
    args = [
        "train",
        "--quiet",
        "--out",
        str(folder / "run"),
        "--set",
        "data.dataset=npz",
        "--set",
        f"data.path={path}",
        "--set",
        "train.epochs=1",
        "--set",
        "data.batch_size=4",
        "--set",
        "model.latent_dim=2",
        "--set",
        f"model.likelihood.kind={likelihood}",
        "--set",
        f"data.binarize={binarize}",
    ]
    code = main(args)
    captured = capsys.readouterr()
    assert code in (0, 2), captured.err
    if code == 2:
        lines = [line for line in captured.err.splitlines() if "warning:" not in line]
        assert len(lines) == 1 and lines[0].startswith("pyro-vae train: error: "), captured.err
    else:
        assert json.loads((folder / "run" / "status.json").read_text())["state"] == "finished"
