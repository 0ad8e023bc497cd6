"""Nothing destroyed, nothing silent (issue 28), one test per class of failure, each over the whole class:
- an output path never replaces a file a run needs, nor the input the command reads;
- a name that becomes a folder (a compare label, a sweep's run) stays one folder inside its study, or is refused;
- a run's config.toml edited by hand is applied on resume by the resume rules, or refused: never rewritten;
- a path the file system cannot hold is one clear error at the edge, from every command that takes one;
- sizes and weights read from a file are checked before they are used;
- the Python API refuses a bad data shape or data path with our errors.
"""

import hashlib
import os
import re
import shutil
import tomllib
from pathlib import Path

import pytest
import tomli_w
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_vae import (
    CheckpointError,
    ConfigError,
    DataError,
    PyroVAEError,
    build_vae,
    compare,
    load_config,
    load_data,
    load_model,
    load_run,
    sweep,
    train,
)
from pyro_vae.cli import main
from pyro_vae.config.validate import DEFAULTS, flatten
from pyro_vae.errors import UsageError
from pyro_vae.files import folder_name
from pyro_vae.studies.compare import STUDY_FILES, parse_estimators
from pyro_vae.training.folder import NEEDED

FIXTURES = Path(__file__).resolve().parent / "fixtures"
QUIET = dict(progress=False, log=lambda s: None)
SMALL = ["--set", "data.dataset=synthetic", "--set", "model.latent_dim=2", "--set", "train.epochs=1", "--quiet"]


def digest(folder):
    """Every file of a folder and its bytes' hash: what must not change (the lock a command takes aside)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture
def run(tmp_path):
    """A copy of a finished run folder (written by an earlier pyro-vae; 1 epoch of a tiny model)."""
    folder = tmp_path / "run"
    shutil.copytree(FIXTURES / "run_v0", folder)
    return folder


def refused(capsys, argv, pattern):
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), (argv, err)


# -- 1. an output path that would destroy an input -------------------------------------------
def test_no_output_replaces_a_file_a_run_needs_or_the_input_being_read(run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(run, other)
    model = tmp_path / "model.pt"
    assert main(["export", str(run), str(model)]) == 0
    capsys.readouterr()
    before = {f: digest(f) for f in (run, other)}, model.read_bytes()
    for name in NEEDED:  # every file a later command reads, in this run and in another
        for folder in (run, other):
            refused(capsys, ["export", str(run), str(folder / name)], "would destroy the run")
    refused(capsys, ["export", str(model), str(model)], "which this command reads: writing there would destroy")
    (tmp_path / "exp").mkdir()
    config = tmp_path / "exp" / "config.toml"
    config.write_text('seed = 1\n[data]\ndataset = "synthetic"\n')
    refused(
        capsys,
        ["train", "--config", str(config), "--out", str(config.parent), "--quiet"],
        "which this command reads.*outside the run's --out",
    )
    assert ({f: digest(f) for f in (run, other)}, model.read_bytes()) == before
    assert config.read_text() == 'seed = 1\n[data]\ndataset = "synthetic"\n'


# -- 2. names that become paths ------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(["a", ".", "/", "\x00", "\udcff", " ", "-", "é"]), max_size=12)
    | st.sampled_from(["", ".", "..", "../escape", "a/../..", "x" * 256, "é" * 128, *STUDY_FILES])
)
def test_a_name_is_one_folder_inside_its_folder_or_refused(name):
    try:
        safe = folder_name(name, "the label", STUDY_FILES)
    except UsageError as e:
        assert "the label" in str(e)
        return
    base = "/study"
    assert os.path.dirname(os.path.normpath(os.path.join(base, safe))) == base and safe not in STUDY_FILES
    assert len(safe.encode("utf-8")) <= 255


def test_study_labels_sweep_runs_and_run_folders_cannot_leave_their_folder(tmp_path):
    cfg = load_config(overrides=["data.dataset=synthetic", "train.epochs=1"])
    for label in ["../escape", "", ".", "a/b", "compare.csv", "x" * 300]:
        with pytest.raises(ConfigError, match="--estimators label"):
            parse_estimators(f"{label}=trace" if label else "=trace")
        with pytest.raises(ConfigError):
            compare(cfg, f"{label}=trace", tmp_path / "study", **QUIET)
    with pytest.raises(ConfigError, match="a sweep run's folder"):
        sweep(None, ["data.dataset=synthetic", f"train.beta=1.{'0' * 260}1,2"], tmp_path / "sweep", **QUIET)
    for bad in ("", "x" * 300):
        with pytest.raises(ConfigError, match="train.out"):
            load_config(overrides={"train.out": bad})
        with pytest.raises(ConfigError, match="study's folder"):
            compare(cfg, "trace", bad, **QUIET)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing was written anywhere


# -- 3. an edit that is silently undone ----------------------------------------------------------
def edit(run, **sections):
    cfg = tomllib.loads((run / "config.toml").read_text())
    for section, values in sections.items():
        cfg[section].update(values)
    (run / "config.toml").write_text(tomli_w.dumps(cfg))
    return (run / "config.toml").read_text()


def test_resume_applies_an_edited_config_by_the_resume_rules(run, capsys):
    edit(run, train={"epochs": 2, "optimizer": {"kind": "adam", "lr": 5e-4}})
    edited = tomllib.loads((run / "config.toml").read_text())
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "train.epochs: 1 -> 2" in out and "train.optimizer.lr: 0.001 -> 0.0005" in out
    saved = tomllib.loads((run / "config.toml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["train"]["optimizer"]["lr"] == 5e-4
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 2
    edited["train"]["out"] = str(run)  # the run folder is where it is now (this copy)
    # the file holds the user's edits and nothing else changed; a key pyro-vae gained since the run was written
    # is added at its default
    old, new, defaults = flatten(edited), flatten(saved), flatten(DEFAULTS)
    assert set(old) <= set(new) and all(new[k] == old[k] for k in old)
    assert all(new[k] == defaults[k] for k in set(new) - set(old)), set(new) - set(old)


def test_an_edit_resume_cannot_apply_or_that_a_given_config_would_undo_is_refused_and_kept(run, capsys):
    before = digest(run)
    text = edit(run, model={"latent_dim": 3})
    refused(capsys, ["train", "--resume", str(run), "--quiet"], r"cannot change on resume: model.latent_dim \(2 -> 3\)")
    assert (run / "config.toml").read_text() == text
    text = edit(run, model={"latent_dim": 2}, train={"epochs": 3})
    cfg = load_config(FIXTURES / "run_v0" / "config.toml")  # the checkpoint's config: epochs = 1
    cfg["train"]["epochs"] = 1
    with pytest.raises(ConfigError, match=r"was edited since the last checkpoint \(train.epochs \(1 -> 3\)\).*undo"):
        train(cfg, run, resume=True, **QUIET)
    assert (run / "config.toml").read_text() == text
    (run / "config.toml").write_text("[train\nepochs = 2\n")
    refused(capsys, ["train", "--resume", str(run), "--quiet"], "was edited into a config that cannot be read")
    assert (run / "config.toml").read_text() == "[train\nepochs = 2\n"
    assert {k: v for k, v in digest(run).items() if k != "config.toml"} == {
        k: v for k, v in before.items() if k != "config.toml"
    }


# -- 4. paths the code never expected --------------------------------------------------------------
BAD_PATHS = {
    "a name over the limit": "n" * 300,
    "bytes that are not UTF-8": os.fsdecode(b"caf\xe9"),
    "a path over the limit": "/".join(["d" * 200] * 25),
}


@pytest.mark.parametrize("what", list(BAD_PATHS))
def test_every_command_refuses_a_path_the_file_system_cannot_hold_in_one_line(what, run, tmp_path, capsys):
    bad = str(tmp_path / BAD_PATHS[what]) if not BAD_PATHS[what].startswith("/") else "/tmp/" + BAD_PATHS[what]
    commands = [
        ["train", *SMALL, "--out", bad],
        ["train", *SMALL, "--set", f"train.out={bad}"],
        ["export", str(run), bad + ".pt"],
        ["sample", str(run), "--out", bad + ".png"],
        ["plot", str(run), "--out", bad],
        ["compare", *SMALL, "--estimators", "trace", "--out", bad],
        ["sweep", *SMALL, "--set", "train.beta=1,2", "--out", bad],
    ]
    before = digest(run)
    for argv in commands:
        refused(capsys, argv, "UTF-8|limit|cannot")
    assert digest(run) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# -- 5. loaded files trusted too far -----------------------------------------------------------------
def damaged_copies(run, tmp_path, damage):
    """An exported model file and the run's checkpoint, each changed by ``damage(state)``: [(source, its name)]."""
    model = torch.load(FIXTURES / "model_v0.pt", weights_only=True)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    for s in (model, state):
        damage(s)
    torch.save(model, tmp_path / "model.pt")
    torch.save(state, run / "checkpoint.pt")
    return [(tmp_path / "model.pt", "model.pt"), (run, "checkpoint.pt")]


def refused_on_load(sources, pattern):
    for source, named in sources:
        with pytest.raises(CheckpointError, match=pattern) as e:
            load_model(source)
        assert named in str(e.value)


DAMAGES = {
    "huge data shape": lambda s: s.update(data_shape=[1, 10**7, 10**7]),
    "negative size": lambda s: s.update(data_shape=[1, -4, 4]),
    "nan weights": lambda s: s["model"][sorted(s["model"])[0]].fill_(float("nan")),
    "inf weights": lambda s: s["model"][sorted(s["model"])[0]].fill_(float("inf")),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_model_file_or_checkpoint_is_checked_before_use(damage, run, tmp_path):
    refused_on_load(damaged_copies(run, tmp_path, DAMAGES[damage]), "data shape|NaN or infinite")


# -- 11. the Python API's own errors -------------------------------------------------------------------
def test_build_vae_and_load_data_refuse_bad_arguments_with_our_errors():
    assert build_vae({}, (1, 8, 8)).data_shape == (1, 8, 8)  # an empty config is the defaults
    for shape in [(), (0,), (-3, 4), (1, 2, 3, 4, 5), "28", (1, 10**6, 10**6), (2.5,)]:
        with pytest.raises(DataError, match="data_shape"):
            build_vae({}, shape)
    for kwargs in [dict(root=3), dict(root=""), dict(path=b"x.npz", dataset="npz"), dict(path=["x"], dataset="npz")]:
        with pytest.raises(PyroVAEError, match="data (root|path)"):
            load_data(**{"dataset": "synthetic", **kwargs})


# -- 7. settings that contradict each other --------------------------------------------------------------
def test_relations_between_keys_and_stated_ranges_are_enforced(synthetic):
    for lr, min_lr in ((1e-3, 1e-2), (1e-4, 2e-4)):
        with pytest.raises(ConfigError, match="min_lr .* is above the learning rate"):
            load_config(overrides={"train.optimizer.lr": lr, "train.lr_schedule": {"kind": "cosine", "min_lr": min_lr}})
    load_config(overrides={"train.lr_schedule": {"kind": "cosine", "min_lr": 1e-3}})  # equal: constant, allowed
    classes = len(synthetic.train_labels.unique())
    for n in (1, classes - 1, synthetic.num_train):
        with pytest.raises(DataError, match=f"must number between {classes} and"):
            synthetic.semi_supervised(n, 0)
    labelled = synthetic.semi_supervised(classes, 0).labelled[1]
    assert sorted(labelled.tolist()) == sorted(
        synthetic.train_labels.unique().tolist()
    )  # the least it states: one of each


# -- 6. distributed settings without a rendezvous -----------------------------------------------------------
VALUES = st.sampled_from(["0", "1", "2", "3", "5", "-1", "two", "", "65536", "29500"])


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT"]), VALUES
    ).filter(lambda env: "WORLD_SIZE" in env),
    st.booleans(),
)
def test_torchruns_variables_are_consistent_or_named(env, with_addr):
    from pyro_vae.training.distributed import RendezvousError, check_environment

    names = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    saved = {k: os.environ.pop(k, None) for k in names}
    os.environ.update({**env, **({"MASTER_ADDR": "127.0.0.1"} if with_addr else {})})
    try:
        rank, size = check_environment()
        assert 0 <= rank < size and (size == 1 or (with_addr and 0 < int(env["MASTER_PORT"]) < 65536))
        assert int(env.get("LOCAL_RANK", "0")) >= 0
    except RendezvousError as e:
        assert any(name in str(e) for name in names) and "torchrun" in str(e)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_rank_alone_stops_at_the_rendezvous_timeout_with_its_variables_named(rank, tmp_path):
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "WORLD_SIZE": "2",
        "RANK": rank,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "PYRO_VAE_RENDEZVOUS_TIMEOUT": "2",
    }
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pyro_vae", "train", *SMALL, "--out", str(tmp_path / "run")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and time.monotonic() - start < 60
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert f"rank {rank} of WORLD_SIZE = 2" in done.stderr and f"127.0.0.1:{port} within 2 s" in done.stderr
    assert not (tmp_path / "run").exists()


# -- 10. quiet exits and noise -------------------------------------------------------------------------------
def test_a_plugin_that_exits_and_another_librarys_warning_are_one_line_each(tmp_path, capsys, monkeypatch):
    (tmp_path / "script_like.py").write_text("import sys\nsys.exit(3)\n")
    refused(capsys, ["--import", str(tmp_path / "script_like.py"), "train", *SMALL], r"called sys.exit\(3\)")
    (tmp_path / "noisy.py").write_text(
        "import warnings\nwarnings.warn('a library speaks', DeprecationWarning)\n"
        "import numpy as np\nnp.float32(1e38) * np.float32(1e38)\n"
    )
    import warnings

    with warnings.catch_warnings():  # Python's default filters, whatever PYTHONWARNINGS the suite runs under
        warnings.resetwarnings()
        warnings.simplefilter("default")
        assert (
            main(["--import", str(tmp_path / "noisy.py"), "evaluate", str(FIXTURES / "run_v0"), "--iwae-samples", "2"])
            == 0
        )
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "warning" in line]
    assert lines and all(re.match(r"pyro-vae evaluate: warning( \(\w+ from [\w.]+\))?: ", line) for line in lines), err
    assert "overflow" in err and "np.float32" not in err  # the message, not the source line


CTRL_C_IN_IMPORT = """
import sys
import pyro_vae.cli
assert "torch" not in sys.modules, "import pyro_vae.cli loads torch: a Ctrl-C in that wait would be a traceback"

class CtrlC:  # Ctrl-C pressed while torch is being imported, the longest wait of a command's start
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt
sys.meta_path.insert(0, CtrlC())
sys.exit(pyro_vae.cli.main(sys.argv[1:]))
"""


def test_ctrl_c_while_the_command_starts_is_one_line(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_IN_IMPORT, "train", *SMALL, "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr == "pyro-vae train: interrupted\n"
    assert not (tmp_path / "r").exists()


def test_messages_say_what_is_wrong(tmp_path):
    import io
    import zipfile

    import numpy as np

    member = io.BytesIO()
    np.save(member, np.random.rand(50, 4, 4))
    with zipfile.ZipFile(tmp_path / "cut.npz", "w") as z:  # a zip whose array lost its last bytes
        z.writestr("x.npy", member.getvalue()[:-200])
    with pytest.raises(DataError, match="damaged or truncated") as e:
        load_data("npz", path=str(tmp_path / "cut.npz"))
    assert "pickle" not in str(e.value)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(PyroVAEError) as e:
        train(load_config(overrides=["data.dataset=synthetic"]), tmp_path / "afile", **QUIET)
    assert str(e.value).count(str(tmp_path / "afile")) == 1


# -- 8. documented features that work as documented -----------------------------------------------------------
def test_loggers_take_tables_as_documented(tmp_path):
    cfg = load_config(
        overrides={
            "train.loggers": [
                {"kind": "csv"},
                {"kind": "wandb", "project": "p", "every": 5},
                "mlflow",
                {"kind": "tensorboard", "every": 3},
            ]
        }
    )
    assert cfg["train"]["loggers"][1] == {"kind": "wandb", "project": "p", "every": 5}
    for bad, message in (
        ({"kind": "wandb", "team": "x"}, "unknown parameter.*team"),
        ({"every": 3}, "needs a 'kind'"),
        (3, "a table like"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(overrides={"train.loggers": [bad]})
    cfg = load_config(overrides={"data.dataset": "synthetic", "train.epochs": 1, "train.loggers": [{"kind": "csv"}]})
    train(cfg, tmp_path / "run", **QUIET)
    assert (tmp_path / "run" / "metrics.csv").read_text().startswith("epoch,")


def test_a_run_whose_checkpoint_is_gone_says_so_on_every_path(run, capsys):
    (run / "checkpoint.pt").unlink()
    for argv in (["evaluate", str(run)], ["train", "--resume", str(run), "--quiet"], ["sample", str(run)]):
        refused(capsys, argv, r"metrics of 1 epoch\(s\) but its checkpoint.pt is gone.*--overwrite")
    refused(capsys, ["train", *SMALL, "--out", str(run)], "whose checkpoint.pt is gone.*--overwrite")
    assert main(["train", *SMALL, "--out", str(run), "--overwrite"]) == 0  # the way out the messages give


def test_a_stopped_sweep_continues_when_run_again(tmp_path):
    args = (None, ["data.dataset=synthetic", "model.latent_dim=2", "train.epochs=1", "train.beta=0.5,2"], tmp_path)
    said = []
    sweep(*args, progress=False, log=said.append)
    first = digest(tmp_path / "beta=0.5")
    (tmp_path / "beta=2" / "checkpoint.pt").unlink()  # as if killed in its first epoch: a failed start
    (tmp_path / "beta=2" / "metrics.jsonl").unlink()
    said.clear()
    rows = sweep(*args, progress=False, log=said.append)
    assert any("already trained 1 of 1 epochs" in s for s in said)  # the finished run: resumed, not retrained
    assert digest(tmp_path / "beta=0.5")["checkpoint.pt"] == first["checkpoint.pt"]
    assert [r["run"] for r in rows] == ["train.beta=0.5", "train.beta=2"] and (tmp_path / "sweep.csv").exists()


def test_an_image_folder_of_grey_and_colour_images_says_what_it_reads(tmp_path):
    import warnings

    import numpy as np
    from PIL import Image

    from pyro_vae.data.images import ImageFiles
    from pyro_vae.errors import PyroVAEWarning

    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(tmp_path / "b.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = ImageFiles([str(tmp_path / "a.png"), str(tmp_path / "b.png")], None, image_size=0)
        files[1], files[1]
    said = [str(w.message) for w in caught if issubclass(w.category, PyroVAEWarning)]
    assert len(said) == 1 and "b.png is in colour" in said[0] and "a.png, the first, is grey" in said[0]


@pytest.mark.parametrize("key, value", [("latent_dim", 10**9), ("decoder", {"kind": "mlp", "hidden": [10**10]})])
def test_a_file_whose_config_would_build_a_huge_model_is_refused_before_building(key, value, run, tmp_path):
    sources = damaged_copies(run, tmp_path, lambda s: s["config"]["model"].update({key: value}))
    refused_on_load(sources, "weights that its own config does not build")
    with pytest.raises(CheckpointError, match="weights that its own config does not build"):
        load_run(run)
