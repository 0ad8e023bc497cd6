"""The SVI loop: Pyro estimator gradients, a torch optimiser, checkpoints, progress, metrics.

Each step is what ``pyro.infer.SVI.step`` does, ``elbo.loss_and_grads(model, guide, x)`` then
an optimiser step, with one ``torch.optim`` optimiser over the VAE's parameters. The
first step runs with Pyro's validation on (shapes, supports, model/guide agreement);
later steps run without it, so the hot loop pays no checking cost.
"""

import copy
import json
import math
import os
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, restore_module, save_checkpoint
from .config import build_elbo, build_optimizer, build_vae, dump_toml, resolve_device
from .data import TORCHVISION_DATASETS, load_data, resolve_root
from .errors import DataError, RunExistsError, TrainingError, TrainingInterrupted
from .estimators import check_compatible
from .evaluate import rate, test_elbo
from .schedules import SCHEDULES, DualAscent
from .plots import save_grid


def default_out(cfg):
    out = cfg["train"]["out"]
    if "NAME" in out:
        out = out.replace("NAME", f"{cfg['data']['dataset']}-{datetime.now():%Y%m%d-%H%M%S}")
    return out


def load_config_data(cfg):
    """The dataset ``cfg['data']`` describes, binarised as it says."""
    d = cfg["data"]
    return load_data(d["dataset"], d["root"], d["path"], d["binarize"], d["download"], cfg["seed"])


def prepare(cfg, data=None):
    """Load data and build the VAE, estimator and optimiser; refuse bad combinations up front."""
    pyro.set_rng_seed(cfg["seed"])
    device = resolve_device(cfg["device"])
    d = cfg["data"]
    data = (data if data is not None else load_config_data(cfg)).to(device)
    if d["batch_size"] > data.num_train:
        raise DataError(
            f"data.batch_size = {d['batch_size']} is larger than the training set ({data.num_train} points): "
            f"lower it, e.g. --set data.batch_size={max(1, data.num_train // 4)}"
        )
    vae = build_vae(cfg, data.data_shape)
    vae.likelihood.check_data(data.example_batch())
    vae.likelihood.check_data(data.test)
    if data.binarize == "none":
        vae.likelihood.check_data(data.train)
    elbo = build_elbo(cfg)
    check_compatible(elbo, vae)
    optimizer = build_optimizer(cfg, vae.parameters())
    return data, vae, elbo, optimizer


def svi_step(vae, elbo, optimizer, x, num_data, validate=False):
    """One SVI step, ``pyro.infer.SVI.step``'s arithmetic: ``elbo.loss_and_grads(model, guide, x)``
    fills the gradients, one optimiser step applies them. Pyro's validation runs only if asked
    (the loop asks on its first step). Returns the loss; a non-finite loss is not applied."""
    optimizer.zero_grad(set_to_none=True)
    with pyro.validation_enabled(validate):
        loss = elbo.loss_and_grads(vae.model, vae.guide, x, num_data=num_data)
    if math.isfinite(loss):
        optimizer.step()
    return loss


class _Interrupts:
    """While training, SIGINT (Ctrl-C) and SIGTERM set a flag that the loop reads after each step,
    so it can save a checkpoint at a clean step boundary; a second signal stops at once."""

    def __enter__(self):
        self.signal, self._previous = None, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _epoch_generator(seed, epoch, device):
    return torch.Generator(device).manual_seed(seed * 1_000_003 + epoch)


def _check_out(out, overwrite):
    if out.exists() and any((out / f).exists() for f in ("checkpoint.pt", "metrics.jsonl", "config.toml")):
        if not overwrite:
            raise RunExistsError(
                f"{str(out)!r} already holds a run; continue it with --resume {out}, "
                "choose another --out, or pass --overwrite to replace it"
            )
        for f in ("checkpoint.pt", "metrics.jsonl", "config.toml", "samples.png"):
            (out / f).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def train(cfg, out=None, *, resume=False, overwrite=False, progress=True, data=None, log=print):
    """Train the VAE ``cfg`` describes; write the run folder ``out``. Returns (vae, history).

    With ``resume=True``, ``out`` must hold a run: its checkpoint (model, optimiser, RNG states,
    epoch and step) is restored and training continues to ``cfg['train']['epochs']``; on the CPU
    the result equals an uninterrupted run's exactly. SIGINT or SIGTERM saves a checkpoint at
    the current step and raises ``TrainingInterrupted``.
    """
    out = Path(out or default_out(cfg))
    cfg = copy.deepcopy(cfg)
    # the run remembers where its data came from (PYRO_VAE_DATA included), so evaluate finds it
    if cfg["data"]["dataset"] in TORCHVISION_DATASETS:
        cfg["data"]["root"] = os.path.abspath(resolve_root(cfg["data"]["root"]))
    state = None
    if resume:
        state = load_checkpoint(out / "checkpoint.pt")
    else:
        _check_out(out, overwrite)
    data, vae, elbo, optimizer = prepare(cfg, data)
    device = next(vae.parameters()).device
    start, partial = 0, None
    num_data, batch_size = data.num_train, cfg["data"]["batch_size"]
    steps = data.num_batches(batch_size)
    epochs = cfg["train"]["epochs"]
    t = cfg["train"]
    warmup = SCHEDULES.build(t["kl_warmup"], steps_per_epoch=steps, total_steps=steps * epochs)
    dual = DualAscent(t["target_rate"], t["beta_lr"], beta=t["beta"]) if t["target_rate"] > 0 else None
    if state is not None:
        restore_module(vae, state["model"], str(out / "checkpoint.pt"))
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start, partial = state["epoch"], state.get("partial")
        if dual is not None and state.get("dual_beta") is not None:
            dual.beta = state["dual_beta"]
    else:
        (out / "config.toml").write_text(dump_toml(cfg))
    pyro.clear_param_store()  # the param store must hold this VAE's parameters only
    history = []

    def checkpoint(epoch, partial=None):
        save_checkpoint(out / "checkpoint.pt", config=cfg, epoch=epoch, partial=partial, model=vae.state_dict(),
                        optimizer=optimizer.state_dict(), rng=torch.get_rng_state(),
                        dual_beta=None if dual is None else dual.beta)

    if start >= epochs:
        log(f"{out}: already trained {start} of {epochs} epochs; raise train.epochs to continue")
    with _Interrupts() as interrupts:
        for epoch in range(start + 1, epochs + 1):
            g = _epoch_generator(cfg["seed"], epoch, device)
            first, total, seconds, g_state, beta_sum = 0, 0.0, 0.0, None, 0.0
            if partial is not None and partial["epoch"] == epoch:  # resume inside this epoch
                first, total, seconds, g_state = partial["step"], partial["total"], partial["seconds"], partial["generator"]
                beta_sum = partial["beta_sum"]
            t0 = time.perf_counter()
            bar = tqdm(data.batches(batch_size, g, first, g_state), total=steps, initial=first,
                       desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False, mininterval=0.5, unit="batch")
            for step, x in enumerate(bar, start=first):
                global_step = (epoch - 1) * steps + step
                vae.beta = (dual.beta if dual is not None else t["beta"]) * warmup(global_step)
                beta_sum += vae.beta
                loss = svi_step(vae, elbo, optimizer, x, num_data, validate=epoch == 1 and step == 0)
                if not math.isfinite(loss):
                    raise TrainingError(
                        f"the loss became {loss} at epoch {epoch}, step {step + 1}; the last good checkpoint "
                        f"({out / 'checkpoint.pt'}) is kept. Usual causes: a learning rate too high "
                        "(train.optimizer.lr), a likelihood scale too small, or unbinarised data under a "
                        "bernoulli likelihood"
                    )
                total += loss
                if dual is not None and global_step % dual.update_every == 0:
                    with torch.no_grad():
                        dual.update(rate(vae, x).mean().item())
                if interrupts.signal:
                    seconds += time.perf_counter() - t0
                    checkpoint(epoch - 1, {"epoch": epoch, "step": step + 1, "total": total, "beta_sum": beta_sum,
                                           "seconds": seconds, "generator": g.get_state()})
                    raise TrainingInterrupted(
                        f"{interrupts.signal} at epoch {epoch}, step {step + 1} of {steps}: saved a checkpoint "
                        f"at this step. Continue with: pyro-vae train --resume {out}"
                    )
                if step % 50 == 0:
                    bar.set_postfix(loss=f"{loss / num_data:.2f}")
            seconds += time.perf_counter() - t0
            record = {
                "epoch": epoch,
                "train_loss": total / steps / num_data,
                "test_elbo": test_elbo(vae, data.test),
                "beta": beta_sum / steps,
                "seconds": seconds,
            }
            history.append(record)
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            checkpoint(epoch)
            log(f"epoch {epoch:3d}  train loss {record['train_loss']:9.3f}  test ELBO {record['test_elbo']:9.3f}  "
                f"({seconds:.1f} s, {steps * batch_size / seconds:,.0f} images/s)")
    if save_grid(vae.sample(64), out / "samples.png", nrow=8):
        log(f"wrote {out / 'samples.png'}")
    return vae, history


def load_run(run_dir, data=None):
    """Rebuild a trained VAE and its data from a run folder: returns (cfg, vae, data)."""
    state = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    cfg = state["config"]
    from .config import validate

    cfg = validate(cfg)
    data, vae, _, _ = prepare(cfg, data)
    restore_module(vae, state["model"], str(Path(run_dir) / "checkpoint.pt"))
    return cfg, vae, data
