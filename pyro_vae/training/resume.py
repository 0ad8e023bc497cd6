"""Resuming a run: which settings may change, and the optimiser's state under the new settings.

A setting changed on resume is applied (learning rate, epochs, beta schedule, estimator, ...) or
refused with the reason (architecture, data, seed, optimiser kind, batch size inside an interrupted
epoch): ``resume_changes``. A run's ``config.toml`` edited by hand is such a change too
(``edited_config``): the command line resumes from the file, and a config given that would undo
an edit is refused (``check_edits_kept``), so an edit is never rewritten silently.
"""

from ..config.load import load_config
from ..config.validate import flatten
from ..errors import CheckpointError, ConfigError
from .folder import CHECKPOINT, CONFIG
from .load import saved_config

APPLY, REFUSE, BETWEEN_EPOCHS = "apply", "refuse", "between epochs"
#: (dotted key or section, rule, why); the first entry that names the key or a section above it decides
RESUME_RULES = [
    ("train.lr_schedule", REFUSE, "the schedule's position and state belong to the run"),
    ("train.grad_clip", APPLY, "from the next step"),
    ("train.precision", APPLY, "the networks' arithmetic from the next step (the weights stay float32)"),
    ("train.micro_batches", APPLY, "the next steps' random streams follow the new count"),
    ("train.early_stop", APPLY, "judged on the whole history"),
    ("train.aux_loss", APPLY, "the auxiliary classification weight from the next step"),
    ("train.labelled_weight", APPLY, "the labelled points' weight from the next step"),
    ("train.optimizer.kind", REFUSE, "the optimiser's saved state (e.g. Adam's moments) belongs to the old kind"),
    ("train.optimizer", APPLY, "applied to the optimiser from the next step"),
    ("train.epochs", APPLY, "training continues to the new count"),
    ("train.max_steps", APPLY, "the budget counts the steps already trained"),
    ("train.max_seconds", APPLY, "the budget counts the seconds already trained"),
    ("train.beta", APPLY, "the KL weight from the next step"),
    ("train.kl_warmup", APPLY, "the schedule from the next step"),
    ("train.target_rate", APPLY, "constrained mode from the next step"),
    ("train.beta_lr", APPLY, "constrained mode from the next step"),
    ("train.loggers", APPLY, "loggers only read what the loop reports"),
    ("train.elbo", APPLY, "estimators hold no state: the new one trains from the next step"),
    ("train.out", APPLY, "the run folder is where it is now"),
    ("plugins", APPLY, "modules imported before the config is read"),
    ("eval", APPLY, "evaluation settings"),
    ("device", APPLY, "weights, optimiser state and data move to the new device"),
    ("data.root", APPLY, "where the same dataset is found"),
    ("data.download", APPLY, "whether a missing dataset may be downloaded"),
    ("data.workers", APPLY, "how many processes read the images"),
    ("data.labelled_batch", APPLY, "the labelled points seen beside the next steps' batches"),
    ("data.batch_size", BETWEEN_EPOCHS, "the interrupted epoch's batches were cut at the old size"),
    ("seed", REFUSE, "the seed fixes the run's data order and every random draw"),
    ("data", REFUSE, "a run trains on one dataset, binarised one way"),
    ("model", REFUSE, "the checkpoint's weights belong to the saved architecture"),
]


def _rule(key):
    for name, rule, why in RESUME_RULES:
        if key == name or key.startswith(name + "."):
            return rule, why
    return REFUSE, "it cannot change inside a run"


def resume_changes(saved, cfg, mid_epoch):
    """The settings ``cfg`` changes from the checkpoint's ``saved`` config, as (key, old, new) lines
    to apply; raises ConfigError naming every refused change and why (``mid_epoch``: the checkpoint
    was saved inside an epoch)."""
    old, new = flatten(saved), flatten(cfg)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    applied, refused = [], []
    for key in changed:
        rule, why = _rule(key)
        line = (key, old.get(key, "(unset)"), new.get(key, "(unset)"))
        if rule == APPLY or (rule == BETWEEN_EPOCHS and not mid_epoch):
            applied.append(line)
        else:
            when = " inside an interrupted epoch" if rule == BETWEEN_EPOCHS else ""
            refused.append(f"{key} ({line[1]!r} -> {line[2]!r}){when}: {why}")
    if refused:
        hint = (
            "resume once without it and change it after the epoch ends"
            if all("interrupted epoch" in r for r in refused)
            else "start a new run with --out for that (a run keeps its architecture, data and seed)"
        )
        raise ConfigError("cannot change on resume: " + "; ".join(refused) + f". {hint[0].upper()}{hint[1:]}")
    return [line for line in applied if line[0] != "train.out"]


def restore_optimizer(optimizer, saved, lr_schedule=None, saved_schedule=None):
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
        raise CheckpointError(
            f"the checkpoint's optimiser state does not fit this optimiser ({e}); start a new run"
        ) from None
    for i, (group, hyper) in enumerate(zip(optimizer.param_groups, fresh)):
        base = group.get("initial_lr", group["lr"])
        factor = group["lr"] / base if base else 1.0
        group.update(hyper)
        group["lr"] = hyper["lr"] * factor
        if "initial_lr" in group:
            group["initial_lr"] = hyper["lr"]
            lr_schedule.scheduler.base_lrs[i] = hyper["lr"]


def edited_config(folder, saved):
    """The run's config.toml, validated, if it was edited since the checkpoint (its values differ from the
    checkpoint's config ``saved``); None if it was not (or is gone). A ConfigError for a file that is no
    longer a config: it is left as it is."""
    path = folder.file(CONFIG)
    if not path.is_file():
        return None
    try:
        cfg = load_config(path)
    except ConfigError as e:
        raise ConfigError(
            f"{path} was edited into a config that cannot be read ({e}); fix it, or delete it to resume "
            "with the checkpoint's own config"
        ) from None
    return cfg if _differ(saved, cfg) else None


def _differ(a, b):
    """The dotted keys whose values differ between two configs (the run folder's place aside: it moves)."""
    a, b = flatten(a), flatten(b)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k != "train.out")


def check_edits_kept(folder, saved, edited, cfg):
    """Refuse to resume with ``cfg`` where it would undo an edit of config.toml (``edited``): a key the file
    changes from the checkpoint's config ``saved`` that ``cfg`` leaves at the checkpoint's value."""
    old, new, given = flatten(saved), flatten(edited), flatten(cfg)
    undone = [
        f"{k} ({old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r})"
        for k in _differ(saved, edited)
        if given.get(k) == old.get(k)
    ]
    if undone:
        raise ConfigError(
            f"{folder.file(CONFIG)} was edited since the last checkpoint ({'; '.join(undone)}), and the "
            "config given to resume would undo it: resume from the file (pyro-vae train --resume does; "
            f"in Python, pass pyro_vae.load_config({str(folder.file(CONFIG))!r})), or undo the edit"
        )


def open_run(folder, cfg, resume, overwrite, log):
    """Lock a run's folder and read its checkpoint back, with the changes ``cfg`` makes (``resume``), or check
    that a new run may go there (None)."""
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
    edited = edited_config(folder, saved)
    if edited is not None:
        check_edits_kept(folder, saved, edited, cfg)
    changes = resume_changes(saved, cfg, mid_epoch=state.get("partial") is not None)
    state["changes"] = changes
    return state
