"""Figures: image grids through torchvision (titled and labelled with matplotlib), curves with matplotlib."""

import math
import os

import torch
import torchvision

from ..errors import UsageError
from ..files import make_folder
from ..models.vae import posterior_mean

#: file types both PIL and matplotlib write
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".tif", ".tiff", ".webp")
#: small images are upscaled (nearest neighbour) to at least this many pixels a side
MIN_IMAGE_SIDE = 64


def is_image_shape(data_shape):
    return len(data_shape) == 3 and data_shape[0] in (1, 3, 4)


def check_image_path(path):
    """Refuse a file name whose type cannot hold an image grid; create its folder."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UsageError(f"{path} is a folder: give a file name, e.g. {os.path.join(path, 'samples.png')}")
    if not path.lower().endswith(IMAGE_SUFFIXES):
        raise UsageError(f"cannot write an image grid to {path}: give a file ending in {', '.join(IMAGE_SUFFIXES)}")
    if os.path.dirname(path):
        make_folder(os.path.dirname(path), "choose another --out")
    return path


def save_grid(images, path, nrow=None, title=None, row_labels=None):
    """Save (n, C, H, W) images in [0, 1] as one grid of ``nrow`` per row; returns False for non-image
    data. Images smaller than ``MIN_IMAGE_SIDE`` are upscaled; ``title`` and ``row_labels`` (one
    per row, repeating) are drawn with matplotlib."""
    if not is_image_shape(tuple(images.shape[1:])):
        return False
    path = check_image_path(path)
    images = images.detach().cpu().float().clamp(0, 1)[:, :3]  # RGBA: the colours
    nrow = nrow or int(math.ceil(math.sqrt(images.shape[0])))
    scale = max(1, math.ceil(MIN_IMAGE_SIDE / max(images.shape[-2:])))
    if scale > 1:
        images = images.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    pad = 2 * scale
    grid = torchvision.utils.make_grid(images, nrow=nrow, padding=pad, pad_value=1.0)
    if title is None and row_labels is None:
        torchvision.utils.save_image(grid, path)
        return True
    plt = _plt()
    dpi, (h, w) = 100, grid.shape[-2:]
    left = 1.3 if row_labels else 0.1
    fig = plt.figure(figsize=(w / dpi + left + 0.1, h / dpi + (0.5 if title else 0.1)), dpi=dpi)
    ax = fig.add_axes(
        [
            left / fig.get_figwidth(),
            0.05 / fig.get_figheight(),
            w / dpi / fig.get_figwidth(),
            h / dpi / fig.get_figheight(),
        ]
    )
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    if row_labels:
        rows = math.ceil(images.shape[0] / nrow)
        side = images.shape[-2] + pad
        ax.set_yticks(
            [pad + side * r + images.shape[-2] / 2 for r in range(rows)],
            [row_labels[r % len(row_labels)] for r in range(rows)],
            fontsize=9,
        )
        ax.tick_params(length=0)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.1 / fig.get_figheight(), va="top")
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return True


def curve(history, steps_per_epoch):
    """(steps, seconds, test ELBO) at each record of a run's history (a budget's stop inside an epoch included)."""
    points, seconds = [], 0.0
    for h in history:
        seconds += h["seconds"]
        steps = (h["epoch"] - 1) * steps_per_epoch + h["partial"] if h.get("partial") else h["epoch"] * steps_per_epoch
        points.append((steps, seconds, h["test_elbo"]))
    return points


def _band(runs):
    """Per record index (up to the shortest run): the mean of each column over runs and the standard error
    of the last (seeds as replicates)."""
    length = min(len(r) for r in runs)
    t = torch.tensor([r[:length] for r in runs], dtype=torch.float64)  # (seeds, records, 3)
    mean = t.mean(0)
    se = t[..., 2].std(0) / math.sqrt(t.shape[0]) if t.shape[0] > 1 else torch.zeros(length, dtype=torch.float64)
    return mean, se


def study_figures(rows, results, out):
    """elbo_vs_steps.png and elbo_vs_time.png (test ELBO, mean over seeds with a +- 1 standard error band; the
    final log p(x) as a marker with its error bar) and snr.png (mean with error bars) for the estimator study.
    ``results``: {label: [run evaluations, one per seed]}."""
    plt = _plt()
    for name, column, xlabel in (("elbo_vs_steps", 0, "optimiser steps"), ("elbo_vs_time", 1, "training time (s)")):
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for i, (label, runs) in enumerate(results.items()):
            mean, se = _band([curve(r["history"], r["steps_per_epoch"]) for r in runs])
            colour = f"C{i % 10}"
            x, y = mean[:, column].numpy(), mean[:, 2].numpy()
            ax.plot(x, y, marker="o", markersize=3, color=colour, label=label)
            ax.fill_between(x, y - se.numpy(), y + se.numpy(), color=colour, alpha=0.2, linewidth=0)
            log_px = torch.tensor([r["metrics"]["log_px"] for r in runs], dtype=torch.float64)
            err = (log_px.std() / math.sqrt(len(runs))).item() if len(runs) > 1 else 0.0
            nudge = (i - (len(results) - 1) / 2) * 0.01 * (x[-1] - x[0] if len(x) > 1 else 1.0)  # bars side by side
            ax.errorbar([x[-1] + nudge], [log_px.mean().item()], yerr=[err], marker="D", color=colour, capsize=3)
        ax.plot([], [], "D", color="grey", label="log p(x), end of training")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("nats per test point")
        ax.set_title(f"test ELBO against {xlabel} (band: ±1 s.e. over seeds)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=120)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.9), 4))
    labels = [r["estimator"] for r in rows]
    idx = range(len(rows))
    for offset, part, what in ((-0.2, "encoder", "encoder (guide)"), (0.2, "decoder", "decoder (model)")):
        errors = [0.0 if math.isnan(r[f"{part}_snr_se"]) else r[f"{part}_snr_se"] for r in rows]
        ax.bar(
            [i + offset for i in idx], [r[f"{part}_snr"] for r in rows], width=0.4, yerr=errors, capsize=3, label=what
        )
    ax.set_xticks(list(idx), labels, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("gradient SNR, median |mean| / std")
    ax.set_title("gradient signal-to-noise ratio at the trained parameters (±1 s.e. over seeds)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "snr.png", dpi=120)
    plt.close(fig)


def _cumsum(values):
    total = 0.0
    for v in values:
        total += v
        yield total


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rate_distortion_figure(rows, path):
    """Each run a labelled point (rate, distortion), with +- 1 standard error bars where rows are means over seeds;
    dashed lines R + D = -ELBO for the best and worst run."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    rates, dists = [r["rate"] for r in rows], [r["distortion"] for r in rows]
    ax.scatter(rates, dists, zorder=3)
    if all("rate_se" in r for r in rows):  # several seeds: +- 1 standard error both ways
        ax.errorbar(
            rates,
            dists,
            xerr=[r["rate_se"] for r in rows],
            yerr=[r["distortion_se"] for r in rows],
            fmt="none",
            capsize=3,
        )
    for r in rows:
        ax.annotate(r["run"], (r["rate"], r["distortion"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    lo, hi = min(rates) * 0.8, max(rates) * 1.2 + 1e-9
    for r, style in ((max(rows, key=lambda r: r["test_elbo"]), "--"), (min(rows, key=lambda r: r["test_elbo"]), ":")):
        c = -r["test_elbo"]
        ax.plot([lo, hi], [c - lo, c - hi], style, color="grey", label=f"R + D = {c:.1f} ({r['run']})")
    ax.set_xlabel("rate KL(q(z|x) || p(z)) (nats)")
    ax.set_ylabel("distortion -E_q log p(x|z) (nats)")
    ax.set_title("rate-distortion, test set")
    ax.set_xlim(lo, hi)
    ax.set_ylim(min(dists) - 0.1 * (max(dists) - min(dists) + 1), max(dists) + 0.1 * (max(dists) - min(dists) + 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def factor_figure(rows, swept, path):
    """Three panels against the first swept key with numeric values (else the runs in order), one line per
    value of the other swept keys: MIG, DCI disentanglement and the FactorVAE score; distortion; I(x; z) and total correlation
    (where the rows have them). +- 1 standard error bars where rows are means over seeds."""
    plt = _plt()
    key = next((k for k in swept if all(_number(r[k]) is not None for r in rows)), None)
    xs = [_number(r[key]) if key else i for i, r in enumerate(rows)]
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(", ".join(f"{k.split('.')[-1]}={r[k]}" for k in swept if k != key), []).append(i)
    panels = [
        (("mig", "MIG"), ("dci_disentanglement", "DCI disentanglement"), ("factor_vae", "FactorVAE score")),
        (("distortion", "distortion -E log p(x|z)"),),
        (("mutual_information", "I(x; z)"), ("total_correlation", "total correlation")),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, metrics in zip(axes, panels):
        for (metric, name), style in zip(metrics, ("-o", "--s", ":^")):
            if not all(metric in r for r in rows):
                continue
            for label, idx in groups.items():
                idx = sorted(idx, key=lambda i: xs[i])
                ys = [rows[i][metric] for i in idx]
                err = [rows[i][metric + "_se"] for i in idx] if all(metric + "_se" in rows[i] for i in idx) else None
                ax.errorbar([xs[i] for i in idx], ys, yerr=err, fmt=style, capsize=3, label=f"{name} {label}".strip())
        ax.set_xlabel(key or "run")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        if key and min(xs) > 0 and max(xs) / min(xs) >= 4:
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(set(xs)), [f"{v:g}" for v in sorted(set(xs))])
    axes[0].set_ylabel("score (1: disentangled)")
    axes[1].set_ylabel("nats per test point")
    axes[2].set_ylabel("nats per test point")
    fig.suptitle("what the codes hold, test set")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def learning_curves(history, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss (-ELBO, beta-weighted)")
    ax.plot(epochs, [-h["test_elbo"] for h in history], marker="s", label="test -ELBO")
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("nats per data point")
    ax.set_title("learning curves")
    ax.grid(alpha=0.3)
    if any(abs(h.get("beta", 1.0) - 1.0) > 1e-12 for h in history):
        ax2 = ax.twinx()
        ax2.plot(epochs, [h["beta"] for h in history], color="grey", linestyle="--", label="beta (mean over epoch)")
        ax2.set_ylabel("beta")
        ax2.legend(loc="center right", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


#: a dimension is active when its posterior mean varies over the data: Cov_x(E_q[z_j|x]) > this (Burda et al. 2016)
ACTIVE = 0.01


@torch.no_grad()
def traversal_codes(vae, x, kl_per_dim=None, steps=11, max_rows=32):
    """(z (rows, steps, D), the dimensions j of the rows, how many are active): for each active z_j (posterior
    means varying over ``x``: variance > ``ACTIVE``), largest KL first, at most ``max_rows``, z_j over its prior's
    central 98% (the 1% and 99% quantiles of 20,000 prior draws; for a layered model, whose p(z_1) is not a
    distribution of its own, of the posterior means), the others at the first point's posterior mean."""
    means = torch.cat([posterior_mean(vae.q(xb)).flatten(1) for xb in x.split(500)])
    active = [j for j in range(means.shape[1]) if means.shape[0] > 1 and float(means[:, j].var()) > ACTIVE]
    order = sorted(active, key=lambda j: -(kl_per_dim[j] if kl_per_dim else float(means[:, j].var())))[:max_rows]
    order = order or [0]  # a collapsed posterior: the first dimension, flat, rather than nothing
    with torch.random.fork_rng():
        torch.manual_seed(0)
        draws = vae.prior(1).sample((20000,)).reshape(20000, -1)
    draws = draws if draws.shape[1] == means.shape[1] else means
    low, high = draws.quantile(0.01, dim=0), draws.quantile(0.99, dim=0)
    z = means[0].repeat(len(order), steps, 1)
    fractions = torch.linspace(0, 1, steps, device=z.device)
    for row, j in enumerate(order):
        z[row, :, j] = low[j] + fractions * (high[j] - low[j])
    return z, order, len(active)


def traversals(vae, data, path, kl_per_dim=None, steps=11, max_rows=32, points=2000):
    """Latent traversals (``traversal_codes`` of the first ``points`` test points) decoded to E[x|z], one row each."""
    z, order, active = traversal_codes(vae, data.test[:points], kl_per_dim, steps, max_rows)
    with torch.no_grad():
        images = vae.likelihood.mean(vae.decoder(z)).reshape(-1, *vae.data_shape)
    save_grid(
        images,
        path,
        nrow=steps,
        title=f"latent traversals: {active} active z_j over the prior's 1%-99% range, largest KL first",
        row_labels=[f"z_{j + 1}" for j in order],
    )


def plot_run(vae, data, history, out, kl_per_dim=None, n=8):
    """The figures of a finished run, written into ``out``; returns the file names."""
    import torch

    make_folder(out, "choose another --out")
    written = []
    learning_curves(history, out / "learning_curves.png")
    written.append("learning_curves.png")
    if not is_image_shape(vae.data_shape):
        return written
    if hasattr(vae, "classes"):  # a family with labels: its own figures
        return written + label_figures(vae, data, out)
    cols = min(n, data.test.shape[0])  # rows of ``cols`` test points: up to n // 2 of them, as many as there are
    x = data.test[: max(1, min(n // 2, data.test.shape[0] // cols)) * cols]
    with torch.no_grad():
        recon = vae.reconstruct(x)
        rows = torch.stack([x.reshape(-1, cols, *vae.data_shape), recon.reshape(-1, cols, *vae.data_shape)], 1)
        save_grid(
            rows.reshape(-1, *vae.data_shape),
            out / "reconstructions.png",
            nrow=cols,  # inputs, then theirs
            title="test inputs and their reconstructions E[x | z = E_q[z|x]]",
            row_labels=["input", "reconstruction"],
        )
        torch.manual_seed(0)
        save_grid(vae.sample(n * n), out / "prior_samples.png", nrow=n, title="E[x|z], z ~ p(z)")
        written += ["reconstructions.png", "prior_samples.png"]
        traversals(vae, data, out / "traversals.png", kl_per_dim)
        written.append("traversals.png")
        if vae.latent_dim == 2:
            written += _latent_2d(vae, data, out)
    return written


def class_rows(vae, columns=8, seed=0):
    """E[x|z, y] with one row per class y and one column per z ~ p(z) (drawn with ``seed``), the same z
    down each column: what the label changes with the style held fixed. Shape (classes * columns, ...)."""
    import torch

    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        z = vae.prior(columns).sample()
        y = torch.eye(vae.classes, device=z.device).unsqueeze(1)  # (K, 1, K)
        return vae.decode_mean(z, y).reshape(-1, *vae.data_shape)


def style_transfer(vae, x, y):
    """Row i: the test image x_i, then E[x|z_i, y'] for every label y', with z_i = E_q[z|x_i, y_i] (the
    image's style under its own label). Shape (n * (classes + 1), *data_shape)."""
    import torch

    with torch.no_grad():
        z = posterior_mean(vae.q(x, y))  # (n, L)
        every = torch.eye(vae.classes, device=z.device).unsqueeze(1)  # (K, 1, K)
        out = vae.decode_mean(z, every).transpose(0, 1)  # (n, K, ...)
        return torch.cat([x.unsqueeze(1), out], 1).reshape(-1, *vae.data_shape)


def label_figures(vae, data, out, n=8):
    """class_rows.png and style_transfer.png for the families with labels (cvae, m2)."""
    save_grid(
        class_rows(vae, n),
        out / "class_rows.png",
        nrow=n,
        row_labels=[f"y = {c}" for c in range(vae.classes)],
        title="E[x|z, y]: one row per label, the same z down each column",
    )
    written = ["class_rows.png"]
    if data.test_labels is not None:
        x, y = data.test[:n], data.test_labels[:n]
        save_grid(
            style_transfer(vae, x, y),
            out / "style_transfer.png",
            nrow=vae.classes + 1,
            title="input, then its z with y = 0, 1, ...",
        )
        written.append("style_transfer.png")
    return written


def _latent_2d(vae, data, out):
    import torch

    plt = _plt()
    x = data.test[:5000]
    mu = torch.cat([posterior_mean(vae.q(b)) for b in x.split(500)]).cpu()
    fig, ax = plt.subplots(figsize=(6, 5))
    labels = data.test_labels[:5000].cpu() if data.test_labels is not None else None
    if labels is None:
        ax.scatter(mu[:, 0], mu[:, 1], s=3)
    else:  # classes are categories: one colour and one legend entry each, not a colour scale
        cmap = plt.get_cmap("tab10" if labels.unique().numel() <= 10 else "tab20")
        for i, c in enumerate(labels.unique().tolist()):
            keep = labels == c
            ax.scatter(mu[keep, 0], mu[keep, 1], s=3, color=cmap(i % cmap.N), label=str(c))
        ax.legend(title="label", markerscale=4, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_xlabel("E_q[z_1]")
    ax.set_ylabel("E_q[z_2]")
    ax.set_title("posterior means of test points")
    fig.tight_layout()
    fig.savefig(out / "latent_scatter.png", dpi=120)
    plt.close(fig)
    # the decoded manifold: a grid of z at the standard normal's quantiles
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, 15))
    z = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), -1).reshape(-1, 2).to(mu.dtype)
    z = z.to(next(vae.parameters()).device)
    save_grid(
        vae.likelihood.mean(vae.decoder(z)),
        out / "manifold.png",
        nrow=15,
        title="decoded E[x|z] over a grid of z at N(0, 1) quantiles",
    )
    return ["latent_scatter.png", "manifold.png"]
