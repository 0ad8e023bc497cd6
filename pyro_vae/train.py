"""The SVI loop: Pyro estimator gradients, a torch optimiser, checkpoints, progress, metrics.

Each step is what ``pyro.infer.SVI.step`` does, ``elbo.loss_and_grads(model, guide, x)`` then
an optimiser step, with one ``torch.optim`` optimiser over the VAE's parameters. The
first step runs with Pyro's validation on (shapes, supports, model/guide agreement);
later steps run without it, so the hot loop pays no checking cost. The run folder (lock,
status, checkpoint as the source of truth, metrics reconciled to it) is ``run.py``'s.
"""

import copy
import math
import os
import signal
import threading
import time

import pyro
import torch
from tqdm.auto import tqdm

from . import distributed
from .builder import build_beta_schedules, build_lr_schedule, prepare, step_inputs
from .callbacks import RunInfo, build_loggers
from .checkpoint import restore_module, save_checkpoint
from .config import dump_toml, validate
from .data import TORCHVISION_DATASETS, Data, resolve_root
from .errors import CheckpointError, PyroVAEError, TrainingError, TrainingInterrupted
from .evaluate import bits_per_dim, classification, rate, shared_test_elbo
from .monitor import DivergenceMonitor
from .plots import save_grid
from .run import (CHECKPOINT, CONFIG, METRICS, SAMPLES, RunFolder, default_out, read_metrics, resume_changes,
                  saved_config)


def svi_step(model, guide, elbo, optimizer, *args, validate=False, max_grad_norm=0.0, **kwargs):
    """One SVI step, ``pyro.infer.SVI.step``'s arithmetic: ``elbo.loss_and_grads(model, guide, *args,
    **kwargs)`` fills the gradients, one ``torch.optim`` step applies them. Any model/guide pair and
    any ``pyro.infer.ELBO`` work (the optimiser must hold their parameters). Pyro's validation runs
    only if asked (the loop asks on its first step); ``max_grad_norm > 0`` clips the gradients'
    total norm to it. Returns the loss; a non-finite loss is not applied."""
    return accumulated_step(model, guide, elbo, optimizer, [args], validate=validate, max_grad_norm=max_grad_norm,
                            **kwargs)[0]


def accumulated_step(model, guide, elbo, optimizer, parts, seeds=None, average=None, stop=False, validate=False,
                     max_grad_norm=0.0, **kwargs):
    """One SVI step over micro-batches: ``elbo.loss_and_grads`` on each tuple of arguments in
    ``parts`` (with ``torch.manual_seed(seeds[i])`` first, if given) accumulates the gradients;
    ``average(loss, stop)`` (a ``distributed.GradientAverager``) averages them and the loss over the
    micro-batches of every rank; then one optimiser step. A part that is a dict is passed as keyword
    arguments. Returns (loss, stop: any rank's flag)."""
    optimizer.zero_grad(set_to_none=True)
    loss = 0.0
    for i, part in enumerate(parts):
        args, extra = ((), part) if isinstance(part, dict) else (part, {})
        if seeds is not None:
            torch.manual_seed(seeds[i])
        with pyro.validation_enabled(validate):
            loss += elbo.loss_and_grads(model, guide, *args, **extra, **kwargs)
    if average is not None:
        loss, stop = average(loss, stop)
    if math.isfinite(loss):
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_grad_norm)
        optimizer.step()
    return loss, stop


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


def split_inputs(inputs, parts):
    """Keyword arguments for ``parts`` micro-batches: every tensor cut into ``parts`` pieces along its
    first dimension (as even as its length allows), other values repeated."""
    pieces = {k: v.tensor_split(parts) if torch.is_tensor(v) else [v] * parts for k, v in inputs.items()}
    return [{k: v[i] for k, v in pieces.items()} for i in range(parts)]


def _epoch_generator(seed, epoch, device):
    return torch.Generator(device).manual_seed(seed * 1_000_003 + epoch)


def _run_config(cfg, out):
    """The config as the run records it: its folder, and its data root as an absolute path (the
    environment variable PYRO_VAE_DATA included), so evaluate finds the data from anywhere."""
    cfg = copy.deepcopy(cfg)
    if cfg["data"]["dataset"] in TORCHVISION_DATASETS:
        cfg["data"]["root"] = os.path.abspath(resolve_root(cfg["data"]["root"]))
    cfg["train"]["out"] = str(out)
    return cfg


def _restore_optimizer(optimizer, saved, lr_schedule=None, saved_schedule=None):
    """Load the optimiser's saved state (moments, step counts) and the schedule's position, but keep
    this config's hyperparameters (lr, betas, weight decay, ...), so a learning rate changed on resume
    is the one used: as the new base of a schedule, which keeps its position (lr = new base x the
    schedule's factor)."""
    fresh = [{k: v for k, v in g.items() if k not in ("params", "initial_lr")} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(saved)
        if lr_schedule is not None and saved_schedule is not None:
            lr_schedule.load_state_dict(saved_schedule)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"the checkpoint's optimiser state does not fit this optimiser ({e}); "
                              "start a new run") from None
    for i, (group, hyper) in enumerate(zip(optimizer.param_groups, fresh)):
        base = group.get("initial_lr", group["lr"])
        factor = group["lr"] / base if base else 1.0
        group.update(hyper)
        group["lr"] = hyper["lr"] * factor
        if "initial_lr" in group:
            group["initial_lr"] = hyper["lr"]
            lr_schedule.scheduler.base_lrs[i] = hyper["lr"]


def early_stop(history, patience):
    """The record of the best test ELBO if none of the last ``patience`` epochs improved on it, else None."""
    if not patience or len(history) <= patience:
        return None
    best = max(history, key=lambda r: r["test_elbo"])
    return best if history[-1]["epoch"] - best["epoch"] >= patience else None


def _nan_message(loss, epoch, step, folder, has_checkpoint, lr):
    where = f"the loss became {loss} at epoch {epoch}, step {step}"
    causes = ("Usual causes: a learning rate too high (train.optimizer.lr), a likelihood scale too small, "
              "or unbinarised data under a bernoulli likelihood")
    if has_checkpoint:
        return (f"{where}; the last good checkpoint ({folder.file(CHECKPOINT)}) is kept: continue from it with a "
                f"lower learning rate, pyro-vae train --resume {folder} --set train.optimizer.lr={lr / 10:g}. {causes}")
    return (f"{where}, before the first epoch ended, so there is no checkpoint to go back to; run the same command "
            f"again with a lower learning rate (e.g. --set train.optimizer.lr={lr / 10:g}): the folder {folder} "
            f"holds no run and is reused. {causes}")


def train(cfg, out=None, *, resume=False, overwrite=False, progress=True, data=None, log=print, vae=None, elbo=None,
          optimizer=None, callbacks=()):
    """Train the VAE ``cfg`` describes; write the run folder ``out``. Returns (vae, history).

    The folder is locked for the whole run (one writer), its ``status.json`` says what happened,
    and each epoch end writes the checkpoint first, then ``metrics.jsonl`` (both atomically).
    With ``resume=True``, ``out`` must hold a run: its checkpoint (model, optimiser, RNG states,
    epoch and step) is restored, changed settings are applied or refused (``run.resume_changes``)
    and training continues to ``cfg['train']['epochs']``; on the CPU the result equals an
    uninterrupted run's exactly. SIGINT or SIGTERM saves a checkpoint at the current step and
    raises ``TrainingInterrupted``.

    ``data``, ``vae``, ``elbo`` and ``optimizer``, when given, replace what the config would build
    (the run still checks them, checkpoints them and resumes them: pass the same parts on resume).
    ``callbacks`` (``callbacks.Callback``) are called with every step and epoch record, after the
    loggers ``train.loggers`` names.

    Under ``torchrun`` every rank calls ``train`` with the same arguments; they train one model
    (``distributed``: each rank computes its share of every batch, gradients are averaged) and
    rank 0 alone writes the run folder and runs the loggers and callbacks.
    """
    cfg = validate(cfg)
    world = distributed.init(cfg["device"])
    if not world.is_main:  # rank 0 alone speaks and writes; the others learn its decisions by broadcast
        log, progress, callbacks = _silent, False, ()
    folder = RunFolder(world.broadcast(str(out or default_out(cfg))))
    cfg = _run_config(cfg, folder)
    if data is not None and not isinstance(data, Data):  # a torch Dataset or DataLoader: no name loads it again
        cfg["data"]["dataset"] = "given"
    try:
        state = world.on_main(lambda: _open_folder(folder, cfg, resume, overwrite, log))
        prepared = prepare(cfg, data, vae, elbo, optimizer)
        if not resume:  # the folder is made only now: a failed start leaves none behind
            world.on_main(lambda: (folder.acquire(), folder.start_new(overwrite)) and None)
        callbacks = [*build_loggers(cfg["train"]["loggers"]), *callbacks] if world.is_main else []
        return _train(cfg, folder, state, *prepared, progress=progress, log=log, callbacks=callbacks, world=world)
    finally:
        if world.is_main:
            folder.release(remove_if_unused=True)


def _silent(*args, **kwargs):
    pass


def _open_folder(folder, cfg, resume, overwrite, log):
    """Lock a run's folder and read its checkpoint back (``resume``), or check that a new run may go there."""
    if resume:
        folder.acquire(create=False)
        return _resume_state(folder, cfg, log)
    folder.check_target()
    if folder.holds_run() and not overwrite:
        raise folder.exists_error()  # before any data is loaded
    return None


def _resume_state(folder, cfg, log):
    removed = folder.clean_temps()
    if removed:
        log(f"removed {removed} temporary file(s) a killed writer left in {folder}")
    state = folder.load_checkpoint()
    saved = saved_config(state["config"], folder.file(CHECKPOINT))
    changes = resume_changes(saved, cfg, mid_epoch=state.get("partial") is not None)
    state["changes"] = changes
    return state


def _train(cfg, folder, state, data, vae, elbo, optimizer, *, progress, log, callbacks, world=distributed.World()):
    device = next(vae.parameters()).device
    start, partial = 0, None
    num_data, batch_size = data.num_train, cfg["data"]["batch_size"]
    steps = data.num_batches(batch_size)
    t = cfg["train"]
    epochs = t["epochs"]
    micro = distributed.micro_batches(cfg, world)
    mine = range(world.rank * micro // world.size, (world.rank + 1) * micro // world.size)  # this rank's micro-batches
    warmup, dual = build_beta_schedules(cfg, steps)
    lr_schedule = build_lr_schedule(cfg, optimizer, steps)
    history = []
    main = world.is_main
    if state is not None:
        restore_module(vae, state["model"], str(folder.file(CHECKPOINT)))
        _restore_optimizer(optimizer, state["optimizer"], lr_schedule, state.get("lr_schedule"))
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        start, partial = state["epoch"], state.get("partial")
        if dual is not None and state.get("dual_beta") is not None:
            dual.beta = state["dual_beta"]
        saved_history = state.get("history")
        if not isinstance(saved_history, list):  # a checkpoint from before the history was kept
            saved_history = read_metrics(folder.file(METRICS))[0] if main else []
        history = [r for r in saved_history if isinstance(r, dict) and r.get("epoch", 0) <= start]
        message = folder.reconcile(history, start) if main else None
        if message:
            log(message)
        step = partial["step"] if partial is not None else 0
        log(f"resuming {folder} at epoch {start + 1}, step {step} of {steps} (training to epoch {epochs})")
        for key, old, new in state["changes"]:
            log(f"  {key}: {old!r} -> {new!r}")
    world.same_parameters(vae)
    if world.distributed:
        log(f"{world.size} ranks, {micro} micro-batches of {batch_size // micro} per batch of {batch_size}")
    if main:
        folder.write_text(CONFIG, dump_toml(cfg))
        folder.write_status("running", epoch=start, epochs=epochs)
    pyro.clear_param_store()  # the param store must hold this VAE's parameters only
    run = RunInfo(folder, cfg, vae, data, start * steps + (partial["step"] if partial is not None else 0))
    monitor = DivergenceMonitor()
    average = distributed.GradientAverager([p for g in optimizer.param_groups for p in g["params"]], world, micro)

    saved_epoch = start  # the epoch the checkpoint on disk holds, for the final status

    def checkpoint(epoch, partial=None):
        nonlocal saved_epoch
        saved_epoch = epoch
        if not main:
            return
        save_checkpoint(folder.file(CHECKPOINT), config=cfg, epoch=epoch, partial=partial, model=vae.state_dict(),
                        optimizer=optimizer.state_dict(), rng=torch.get_rng_state(),
                        cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                        dual_beta=None if dual is None else dual.beta, history=history,
                        lr_schedule=None if lr_schedule is None else lr_schedule.state_dict(),
                        data_shape=list(data.data_shape))

    stopped = None
    if start >= epochs:
        log(f"{folder}: already trained {start} of {epochs} epochs; raise train.epochs to continue")
    last = epochs
    best = early_stop(history, t["early_stop"])
    if best is not None and start < epochs and partial is None:
        stopped = (f"stopped early at epoch {start}: no better test ELBO than epoch {best['epoch']}'s for "
                   f"{start - best['epoch']} epochs; raise train.early_stop (or set it to 0) to train on")
        log(stopped)
        last = start
    try:
        for c in callbacks:
            c.on_train_start(run)
        with _Interrupts() as interrupts:
            for epoch in range(start + 1, last + 1):
                g = _epoch_generator(cfg["seed"], epoch, device)
                first, total, seconds, g_state, beta_sum = 0, 0.0, 0.0, None, 0.0
                if partial is not None and partial["epoch"] == epoch:  # resume inside this epoch
                    first, total, seconds, g_state = partial["step"], partial["total"], partial["seconds"], partial["generator"]
                    beta_sum = partial["beta_sum"]
                t0 = time.perf_counter()
                share = {"part": (world.rank, world.size)} if world.distributed else {}  # a rank's slice of each batch
                labels = {"labels": True} if vae.needs_labels else {}  # (x, y) pairs for the families with labels
                bar = tqdm(data.batches(batch_size, g, first, g_state, **labels, **share), total=steps,
                           initial=first, desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False,
                           mininterval=0.5, unit="batch")
                for step, batch in enumerate(bar, start=first):
                    global_step = (epoch - 1) * steps + step
                    beta = (dual.beta if dual is not None else t["beta"]) * warmup(global_step)
                    beta_sum += beta
                    inputs = step_inputs(vae, data, cfg, batch, global_step, **share)
                    if hasattr(elbo, "set_step"):  # estimators with a schedule (relaxed: the temperature)
                        elbo.set_step(global_step)
                    loss, stop = accumulated_step(
                        vae.model, vae.guide, elbo, optimizer, split_inputs(inputs, len(mine)),
                        [distributed.stream_seed(cfg["seed"], global_step, m) for m in mine], average,
                        stop=interrupts.signal is not None, validate=epoch == 1 and step == 0,
                        max_grad_norm=t["grad_clip"], num_data=num_data, beta=beta)
                    if not math.isfinite(loss):
                        raise TrainingError(_nan_message(loss, epoch, step + 1, folder, saved_epoch > 0 or partial is not None,
                                                         optimizer.param_groups[0]["lr"]))
                    total += loss
                    if lr_schedule is not None:
                        lr_schedule.after("step")
                    monitor.update(loss / num_data, f" at epoch {epoch}, step {step + 1}")
                    for c in callbacks:
                        c.on_step(run, epoch, step + 1, global_step + 1, loss / num_data, beta)
                    if dual is not None and global_step % dual.update_every == 0:
                        with torch.no_grad():
                            dual.update(world.all_sum([rate(vae, inputs["x"], vae.q(inputs["x"], inputs.get("y"))).mean().item()])[0]
                                        / world.size)
                    if stop or (not world.distributed and interrupts.signal):
                        seconds += time.perf_counter() - t0
                        checkpoint(epoch - 1, {"epoch": epoch, "step": step + 1, "total": total, "beta_sum": beta_sum,
                                               "seconds": seconds, "generator": g.get_state()})
                        raise TrainingInterrupted(
                            f"{interrupts.signal or 'a signal to another rank'} at epoch {epoch}, step {step + 1} of "
                            f"{steps}: saved a checkpoint at this step. Continue with: pyro-vae train --resume {folder}"
                        )
                    if step % 50 == 0:
                        bar.set_postfix(loss=f"{loss / num_data:.2f}")
                seconds += time.perf_counter() - t0
                given = {"labels": data.test_labels} if vae.conditional else {}  # cvae: bounds on log p(x|y)
                record = {"epoch": epoch, "train_loss": total / steps / num_data,
                          "test_elbo": shared_test_elbo(vae, data.test, world, cfg["seed"], **given)}
                record.update({f"test_{k}": v for k, v in classification(vae, data.test, data.test_labels).items()})
                if getattr(vae.likelihood, "discrete", False):
                    record["test_bits_per_dim"] = bits_per_dim(vae, {"elbo": record["test_elbo"]})["elbo_bits_per_dim"]
                history.append({**record, "beta": beta_sum / steps, "seconds": seconds})
                if lr_schedule is not None:
                    lr_schedule.after("epoch")
                # the checkpoint first: it is the source of truth; metrics.jsonl is reconciled to it on resume
                checkpoint(epoch)
                if main:
                    folder.write_metrics(history)
                    folder.write_status("running", epoch=epoch, epochs=epochs)
                for c in callbacks:
                    c.on_epoch_end(run, history[-1])
                best = early_stop(history, t["early_stop"])
                if best is not None and epoch < epochs:
                    stopped = (f"stopped early after epoch {epoch}: the test ELBO has not improved on epoch "
                               f"{best['epoch']}'s ({best['test_elbo']:.3f}) for {epoch - best['epoch']} epochs")
                    log(stopped)
                    break
                r = history[-1]
                bpd = f" ({r['test_bits_per_dim']:.3f} bits/dim)" if "test_bits_per_dim" in r else ""
                bpd += f"  test accuracy {r['test_accuracy']:.4f}" if "test_accuracy" in r else ""
                log(f"epoch {epoch:3d}  train loss {r['train_loss']:9.3f}  test ELBO {r['test_elbo']:9.3f}{bpd}  "
                    f"({seconds:.1f} s, {steps * batch_size / seconds:,.0f} images/s)")
                if epoch == start + 1 and getattr(elbo, "step_path", None):  # compiled estimators: how they ran
                    log(f"  {t['elbo']['kind']} steps ran as {elbo.step_path}")
        if main and save_grid(_samples(vae), folder.file(SAMPLES), nrow=8):
            log(f"wrote {folder.file(SAMPLES)}")
    except TrainingInterrupted as e:
        _final_status(folder, "interrupted", str(e), saved_epoch, main)
        raise
    except KeyboardInterrupt:
        _final_status(folder, "interrupted", "stopped by a second signal without a checkpoint at that step; "
                      f"resume from the last epoch's with pyro-vae train --resume {folder}", saved_epoch, main)
        raise
    except Exception as e:
        _final_status(folder, "failed", str(e) if isinstance(e, PyroVAEError) else f"{type(e).__name__}: {e}",
                      saved_epoch, main)
        raise
    _final_status(folder, "finished", stopped or f"trained {epochs} epochs", saved_epoch, main)
    for c in callbacks:
        c.on_train_end(run, history)
    return vae, history


def _samples(vae):
    """What samples.png shows: 64 draws from the model, or for a family with labels one row per label."""
    if hasattr(vae, "classes"):
        from .plots import class_rows

        return class_rows(vae, 8)
    return vae.sample(64)


def _final_status(folder, state, message, epoch, main=True):
    """Record how the run ended and the epoch its checkpoint holds; never let that hide the error that ended it."""
    if not main:
        return
    try:
        folder.write_status(state, message=message, epoch=epoch)
    except Exception:
        pass
