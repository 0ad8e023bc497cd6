"""The training loop over built objects: epochs of SVI steps (``step``), the test ELBO and a checkpoint
at each epoch's end, progress, callbacks, and a status that says how the run ended.

``Loop`` is handed what ``config.build`` made (data, VAE, estimator, optimiser, schedules) and a locked
run folder (``folder``); its config is the run's record (config.toml and the checkpoint) and where it
reads its few settings (seed, batch size, epochs, beta, clipping, early stopping). The first step runs
with Pyro's validation on, later ones without it, so the hot loop pays no checking cost. The
checkpoint is written before the metrics, so it is the source of truth for the epoch reached.
"""

import math
import signal
import threading
import time

import pyro
import torch
from tqdm.auto import tqdm

from ..config.load import dump_toml
from ..errors import PyroVAEError, TrainingError, TrainingInterrupted
from ..evaluation.metrics import bits_per_dim, classification
from ..evaluation.plots import class_rows, save_grid
from ..models.vae import rate
from . import distributed
from .callbacks import RunInfo
from .checkpoint import restore_module, save_checkpoint
from .folder import CHECKPOINT, CONFIG, METRICS, SAMPLES, read_metrics
from .monitor import DivergenceMonitor
from .resume import restore_optimizer
from .step import accumulated_step, split_inputs


class _Interrupts:
    """While training, SIGINT (Ctrl-C) and SIGTERM set a flag that the loop reads after each step,
    so it can save a checkpoint at a clean step boundary; a second signal stops at once. A signal the
    process ignores (``nohup``, a background job of a script) stays ignored, as other command-line
    tools leave it; whatever handler was there before is put back afterwards."""

    def __enter__(self):
        self.signal, self._previous = None, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def epoch_generator(seed, epoch, device):
    """The generator of epoch ``epoch``'s batch order (and dynamic binarisation): a function of seed and epoch."""
    return torch.Generator(device).manual_seed(seed * 1_000_003 + epoch)


def early_stop(history, patience):
    """The record of the best test ELBO if none of the last ``patience`` epochs improved on it, else None."""
    if not patience or len(history) <= patience:
        return None
    best = max(history, key=lambda r: r["test_elbo"])
    return best if history[-1]["epoch"] - best["epoch"] >= patience else None


def _nan_message(loss, epoch, step, folder, has_checkpoint, lr):
    where = f"the loss became {loss} at epoch {epoch}, step {step}"
    causes = (
        "Usual causes: a learning rate too high (train.optimizer.lr), a likelihood scale too small, "
        "or unbinarised data under a bernoulli likelihood"
    )
    if has_checkpoint:
        return (
            f"{where}; the last good checkpoint ({folder.file(CHECKPOINT)}) is kept: continue from it with a "
            f"lower learning rate, pyro-vae train --resume {folder} --set train.optimizer.lr={lr / 10:g}. {causes}"
        )
    return (
        f"{where}, before the first epoch ended, so there is no checkpoint to go back to; run the same command "
        f"again with a lower learning rate (e.g. --set train.optimizer.lr={lr / 10:g}): the folder {folder} "
        f"holds no run and is reused. {causes}"
    )


class Loop:
    """Trains the ``parts`` (``config.build.Parts``: data, VAE, estimator, optimiser, schedules) of the run
    ``cfg`` describes into the run folder ``folder`` (locked by the caller)."""

    def __init__(self, cfg, folder, parts, *, world=distributed.World(), callbacks=(), log=print, progress=True):
        self.cfg, self.folder, self.inputs = cfg, folder, parts.inputs
        data, vae = self.data, self.vae = parts.data, parts.vae
        self.elbo, self.optimizer = parts.elbo, parts.optimizer
        self.warmup, self.dual, self.lr_schedule = parts.warmup, parts.dual, parts.lr_schedule
        self.world, self.main, self.callbacks, self.log, self.progress = world, world.is_main, callbacks, log, progress
        self.device = next(vae.parameters()).device
        self.num_data, self.batch_size = data.num_train, cfg["data"]["batch_size"]
        self.steps, self.epochs = data.num_batches(self.batch_size), cfg["train"]["epochs"]
        self.max_steps, self.max_seconds = cfg["train"]["max_steps"], cfg["train"]["max_seconds"]
        micro = distributed.micro_batches(cfg, world)
        self.micro = micro
        self.mine = range(world.rank * micro // world.size, (world.rank + 1) * micro // world.size)  # this rank's share
        self.start, self.partial, self.history = 0, None, []
        self.saved_epoch = 0  # the epoch the checkpoint on disk holds, for the final status
        self.monitor = DivergenceMonitor()
        self.info = None

    def restore(self, state):
        """Continue from a checkpoint ``state`` (read by ``runner``): weights, optimiser, random state,
        position (epoch, step), dual ascent's beta and the history, with metrics.jsonl reconciled to it."""
        folder, log = self.folder, self.log
        restore_module(self.vae, state["model"], str(folder.file(CHECKPOINT)))
        restore_optimizer(self.optimizer, state["optimizer"], self.lr_schedule, state.get("lr_schedule"))
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.start, self.partial = state["epoch"], state.get("partial")
        self.saved_epoch = self.start
        if self.dual is not None and state.get("dual_beta") is not None:
            self.dual.beta = state["dual_beta"]
        saved = state.get("history")
        if not isinstance(saved, list):  # a checkpoint from before the history was kept
            saved = read_metrics(folder.file(METRICS))[0] if self.main else []
        at = None if self.partial is None else (self.partial["epoch"], self.partial["step"])
        self.history = [  # the finished epochs', and a budget stop's record of the step the checkpoint holds
            r
            for r in saved
            if isinstance(r, dict) and (r.get("epoch", 0) <= self.start or (r.get("epoch"), r.get("partial")) == at)
        ]
        message = folder.reconcile(self.history, self.start) if self.main else None
        if message:
            log(message)
        step = self.partial["step"] if self.partial is not None else 0
        log(
            f"resuming {folder} at epoch {self.start + 1}, step {step} of {self.steps} (training to epoch {self.epochs})"
        )
        for key, old, new in state["changes"]:
            log(f"  {key}: {old!r} -> {new!r}")

    def run(self):
        """Train to ``train.epochs`` (or an early stop); returns the history of epoch records."""
        folder, log, world = self.folder, self.log, self.world
        world.same_parameters(self.vae)
        if world.distributed:
            log(
                f"{world.size} ranks, {self.micro} micro-batches of {self.batch_size // self.micro} per batch of "
                f"{self.batch_size}"
            )
        if self.main:
            folder.write_text(CONFIG, dump_toml(self.cfg))
            folder.write_status("running", epoch=self.start, epochs=self.epochs)
        pyro.clear_param_store()  # the param store must hold this VAE's parameters only
        first = self.start * self.steps + (self.partial["step"] if self.partial is not None else 0)
        self.info = RunInfo(folder, self.cfg, self.vae, self.data, first, self.history)
        self.average = distributed.GradientAverager(
            [p for g in self.optimizer.param_groups for p in g["params"]], world, self.micro
        )
        stopped, last = self._stop_before_start()
        try:
            for c in self.callbacks:
                c.on_train_start(self.info)
            with _Interrupts() as interrupts:
                for epoch in range(self.start + 1, last + 1):
                    stopped = self._end_epoch(epoch, *self._epoch(epoch, interrupts))
                    self.partial = None  # the epoch a checkpoint stopped inside is behind us
                    stopped = stopped or (self._budget_spent() if epoch < last else None)
                    if stopped:
                        break
            if self.main and save_grid(_samples(self.vae), folder.file(SAMPLES), nrow=8):
                log(f"wrote {folder.file(SAMPLES)}")
        except TrainingInterrupted as e:
            self._final_status("interrupted", str(e))
            raise
        except KeyboardInterrupt:
            self._final_status(
                "interrupted",
                "stopped by a second signal without a checkpoint at that step; "
                f"resume from the last epoch's with pyro-vae train --resume {folder}",
            )
            raise
        except Exception as e:
            self._final_status("failed", str(e) if isinstance(e, PyroVAEError) else f"{type(e).__name__}: {e}")
            raise
        self._final_status("finished", stopped or f"trained {self.epochs} epochs")
        for c in self.callbacks:
            c.on_train_end(self.info, self.history)
        return self.history

    def _trained(self, step_in_epoch=0, seconds_in_epoch=0.0):
        """(steps, seconds) trained: the finished epochs' (from their records) plus ``step_in_epoch`` steps
        and ``seconds_in_epoch`` seconds of the epoch after them."""
        done = [h for h in self.history if not h.get("partial")]
        epochs = max([self.start, *(h["epoch"] for h in done)])
        return epochs * self.steps + step_in_epoch, sum(h["seconds"] for h in done) + seconds_in_epoch

    def _budget_spent(self, steps=None, seconds=None):
        """Why the budget (``train.max_steps``, ``train.max_seconds``) allows no further step, or None."""
        if steps is None:
            p = self.partial
            steps, seconds = self._trained(p["step"], p["seconds"]) if p is not None else self._trained()
        if self.max_steps and steps >= self.max_steps:
            return f"stopped at the step budget: {steps} steps (train.max_steps = {self.max_steps})"
        if self.max_seconds and seconds >= self.max_seconds:
            return (
                f"stopped at the time budget: {seconds:.2f} s of training in {steps} steps "
                f"(train.max_seconds = {self.max_seconds:g})"
            )
        return None

    def _stop_before_start(self):
        """(why no epoch is left, the last epoch to train): a finished or early-stopped run trains no further."""
        spent = self._budget_spent() if self.start < self.epochs else None
        if spent:
            self.log(f"{self.folder}: already {spent}; raise it to continue")
            return spent, self.start
        if self.start >= self.epochs:
            self.log(
                f"{self.folder}: already trained {self.start} of {self.epochs} epochs; raise train.epochs to continue"
            )
        best = early_stop(self.history, self.cfg["train"]["early_stop"])
        if best is not None and self.start < self.epochs and self.partial is None:
            stopped = (
                f"stopped early at epoch {self.start}: no better test ELBO than epoch {best['epoch']}'s for "
                f"{self.start - best['epoch']} epochs; raise train.early_stop (or set it to 0) to train on"
            )
            self.log(stopped)
            return stopped, self.start
        return None, self.epochs

    def _epoch(self, epoch, interrupts):
        """The steps of epoch ``epoch`` (from the saved step of an interrupted one): (loss sum, seconds, beta sum,
        None; or where the budget ran out inside it, the position to checkpoint there). A signal saves a
        checkpoint at the step it arrived in and raises TrainingInterrupted."""
        world, p = self.world, self.partial
        self.history = [h for h in self.history if h["epoch"] < epoch]  # a budget stop's record inside it is stale
        before_steps, before_seconds = self._trained()
        g = epoch_generator(self.cfg["seed"], epoch, self.device)
        first, total, seconds, g_state, beta_sum = 0, 0.0, 0.0, None, 0.0
        if p is not None and p["epoch"] == epoch:  # resume inside this epoch
            first, total, seconds, g_state, beta_sum = (
                p["step"],
                p["total"],
                p["seconds"],
                p["generator"],
                p["beta_sum"],
            )
        t0 = time.perf_counter()
        share = {"part": (world.rank, world.size)} if world.distributed else {}  # a rank's slice of each batch
        labels = {"labels": True} if self.vae.needs_labels else {}  # (x, y) pairs for the families with labels
        bar = tqdm(
            self.data.batches(self.batch_size, g, first, g_state, **labels, **share),
            total=self.steps,
            initial=first,
            desc=f"epoch {epoch}/{self.epochs}",
            disable=not self.progress,
            leave=False,
            mininterval=0.5,
            unit="batch",
        )

        def position():  # where the epoch stands after the current step: a checkpoint's place to continue from
            return {
                "epoch": epoch,
                "step": step + 1,
                "total": total,
                "beta_sum": beta_sum,
                "seconds": seconds + time.perf_counter() - t0,
                "generator": g.get_state(),
            }

        for step, batch in enumerate(bar, start=first):
            loss, beta, stop = self._step(epoch, step, batch, share, interrupts)
            total, beta_sum = total + loss, beta_sum + beta
            if stop or (not world.distributed and interrupts.signal):
                self._checkpoint(epoch - 1, position())
                raise TrainingInterrupted(
                    f"{interrupts.signal or 'a signal to another rank'} at epoch {epoch}, step {step + 1} of "
                    f"{self.steps}: saved a checkpoint at this step. Continue with: pyro-vae train --resume {self.folder}"
                )
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss / self.num_data:.2f}")
            if self.max_steps or self.max_seconds:  # the budget is judged after every step, on the same clock
                at = position()
                if self._budget_spent(before_steps + at["step"], before_seconds + at["seconds"]):
                    bar.close()
                    return total, at["seconds"], beta_sum, at
        return total, seconds + time.perf_counter() - t0, beta_sum, None

    def _step(self, epoch, step, batch, share, interrupts):
        """One optimiser step on batch ``step`` of ``epoch``: (loss, beta, stop: a rank was signalled)."""
        t, vae, n = self.cfg["train"], self.vae, self.num_data
        global_step = (epoch - 1) * self.steps + step
        beta = (self.dual.beta if self.dual is not None else t["beta"]) * self.warmup(global_step)
        inputs = self.inputs(batch, global_step, **share)
        if hasattr(self.elbo, "set_step"):  # estimators with a schedule (relaxed: the temperature)
            self.elbo.set_step(global_step)
        loss, stop = accumulated_step(
            vae.model,
            vae.guide,
            self.elbo,
            self.optimizer,
            split_inputs(inputs, len(self.mine)),
            [distributed.stream_seed(self.cfg["seed"], global_step, m) for m in self.mine],
            self.average,
            stop=interrupts.signal is not None,
            validate=epoch == 1 and step == 0,
            max_grad_norm=t["grad_clip"],
            num_data=n,
            beta=beta,
        )
        if not math.isfinite(loss):
            raise TrainingError(
                _nan_message(
                    loss,
                    epoch,
                    step + 1,
                    self.folder,
                    self.saved_epoch > 0 or self.partial is not None,
                    self.optimizer.param_groups[0]["lr"],
                )
            )
        if self.lr_schedule is not None:
            self.lr_schedule.after("step")
        self.monitor.update(loss / n, f" at epoch {epoch}, step {step + 1}")
        for c in self.callbacks:
            c.on_step(self.info, epoch, step + 1, global_step + 1, loss / n, beta)
        if self.dual is not None and global_step % self.dual.update_every == 0:
            with torch.no_grad():
                mean_rate = rate(vae, inputs["x"], vae.q(inputs["x"], inputs.get("y"))).mean().item()
            self.dual.update(self.world.all_sum([mean_rate])[0] / self.world.size)
        return loss, beta, stop

    def _end_epoch(self, epoch, total, seconds, beta_sum, position=None):
        """Evaluate, then write the checkpoint, metrics and status; returns why the run stops early, or None.
        ``position``: the budget ran out inside the epoch; the record (``partial``: its steps) and a checkpoint
        at that position are written, so a larger budget continues from there."""
        taken = self.steps if position is None else position["step"]
        vae, data = self.vae, self.data
        given = {"labels": data.test_labels} if vae.conditional else {}  # cvae: bounds on log p(x|y)
        rng = torch.get_rng_state()  # evaluation draws must not move training's random stream
        record = {
            "epoch": epoch,
            "train_loss": total / taken / self.num_data,
            "test_elbo": distributed.shared_test_elbo(vae, data.test, self.world, self.cfg["seed"], **given),
        }
        record.update({f"test_{k}": v for k, v in classification(vae, data.test, data.test_labels).items()})
        if getattr(vae.likelihood, "discrete", False):
            record["test_bits_per_dim"] = bits_per_dim(vae, {"elbo": record["test_elbo"]})["elbo_bits_per_dim"]
        if position is not None:
            torch.set_rng_state(rng)
            return self._end_inside_epoch(epoch, {**record, "partial": taken}, position)
        self.history.append({**record, "beta": beta_sum / self.steps, "seconds": seconds})
        if self.lr_schedule is not None:
            self.lr_schedule.after("epoch")
        self._checkpoint(epoch)  # the checkpoint first: it is the source of truth; metrics.jsonl is reconciled to it
        if self.main:
            self.folder.write_metrics(self.history)
            self.folder.write_status("running", epoch=epoch, epochs=self.epochs)
        for c in self.callbacks:
            c.on_epoch_end(self.info, self.history[-1])
        best = early_stop(self.history, self.cfg["train"]["early_stop"])
        if best is not None and epoch < self.epochs:
            stopped = (
                f"stopped early after epoch {epoch}: the test ELBO has not improved on epoch "
                f"{best['epoch']}'s ({best['test_elbo']:.3f}) for {epoch - best['epoch']} epochs"
            )
            self.log(stopped)
            return stopped
        self._report(epoch, seconds)
        return None

    def _end_inside_epoch(self, epoch, record, position):
        """The budget ran out at ``position`` (step ``record['partial']``) of ``epoch``: its record, a checkpoint there."""
        taken, seconds = position["step"], position["seconds"]
        self.history.append({**record, "beta": position["beta_sum"] / taken, "seconds": seconds})
        self._checkpoint(epoch - 1, position)
        if self.main:
            self.folder.write_metrics(self.history)
        for c in self.callbacks:
            c.on_epoch_end(self.info, self.history[-1])
        stopped = self._budget_spent(*self._trained(taken, seconds))
        self.log(
            f"epoch {epoch:3d}  step {taken} of {self.steps}  train loss {record['train_loss']:9.3f}  "
            f"test ELBO {record['test_elbo']:9.3f}  ({seconds:.1f} s)"
        )
        self.log(stopped)
        return stopped

    def _report(self, epoch, seconds):
        r = self.history[-1]
        bpd = f" ({r['test_bits_per_dim']:.3f} bits/dim)" if "test_bits_per_dim" in r else ""
        bpd += f"  test accuracy {r['test_accuracy']:.4f}" if "test_accuracy" in r else ""
        self.log(
            f"epoch {epoch:3d}  train loss {r['train_loss']:9.3f}  test ELBO {r['test_elbo']:9.3f}{bpd}  "
            f"({seconds:.1f} s, {self.steps * self.batch_size / seconds:,.0f} images/s)"
        )
        if epoch == self.start + 1 and getattr(self.elbo, "step_path", None):  # compiled estimators: how they ran
            self.log(f"  {self.cfg['train']['elbo']['kind']} steps ran as {self.elbo.step_path}")

    def _checkpoint(self, epoch, partial=None):
        self.saved_epoch = epoch
        if not self.main:
            return
        device, dual, lr_schedule = self.device, self.dual, self.lr_schedule
        save_checkpoint(
            self.folder.file(CHECKPOINT),
            config=self.cfg,
            epoch=epoch,
            partial=partial,
            model=self.vae.state_dict(),
            optimizer=self.optimizer.state_dict(),
            rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            dual_beta=None if dual is None else dual.beta,
            history=self.history,
            lr_schedule=None if lr_schedule is None else lr_schedule.state_dict(),
            data_shape=list(self.data.data_shape),
        )

    def _final_status(self, state, message):
        """Record how the run ended and the epoch its checkpoint holds; never let that hide the error that ended it."""
        if not self.main:
            return
        try:
            self.folder.write_status(state, message=message, epoch=self.saved_epoch)
        except Exception:
            pass


def _samples(vae):
    """What samples.png shows: 64 draws from the model, or for a family with labels one row per label."""
    if hasattr(vae, "classes"):
        return class_rows(vae, 8)
    return vae.sample(64)
