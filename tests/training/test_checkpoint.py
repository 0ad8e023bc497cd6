import pytest
import torch

from pyro_vae import CheckpointError, build_vae, load_checkpoint, save_checkpoint
from pyro_vae.training.checkpoint import restore_module

from ..conftest import small_config


def test_corrupt_foreign_and_missing_checkpoints(tmp_path, small_vae):
    good = tmp_path / "checkpoint.pt"
    save_checkpoint(good, model=small_vae.state_dict(), config={}, epoch=1)
    assert load_checkpoint(tmp_path)["epoch"] == 1  # a folder means its checkpoint.pt
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_checkpoint(tmp_path / "trunc.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a pyro-vae checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "pyro-vae-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.pt")


def test_other_architecture_names_the_shapes(small_vae, synthetic):
    other = build_vae(small_config("model.latent_dim=6"), synthetic.data_shape)
    with pytest.raises(
        CheckpointError,
        match=r"another architecture: posterior.linear.weight: checkpoint \(12, 64\) vs model \(8, 64\)",
    ):
        restore_module(small_vae, other.state_dict())


def test_atomic_write_leaves_no_temporary_files(tmp_path, small_vae):
    save_checkpoint(tmp_path / "checkpoint.pt", model=small_vae.state_dict())
    save_checkpoint(tmp_path / "checkpoint.pt", model=small_vae.state_dict())
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
