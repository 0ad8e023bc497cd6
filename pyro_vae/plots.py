"""Figures: image grids through torchvision."""

import math

import torchvision


def is_image_shape(data_shape):
    return len(data_shape) == 3 and data_shape[0] in (1, 3)


def save_grid(images, path, nrow=None):
    """Save (n, C, H, W) images in [0, 1] as one PNG grid; returns False for non-image data."""
    if not is_image_shape(tuple(images.shape[1:])):
        return False
    nrow = nrow or int(math.ceil(math.sqrt(images.shape[0])))
    torchvision.utils.save_image(images.detach().cpu().clamp(0, 1), path, nrow=nrow, padding=2, pad_value=1.0)
    return True


def comparison_figures(rows, histories, out):
    """elbo_vs_epoch.png, elbo_vs_time.png and snr.png for the estimator study."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, xkey, xlabel in (("elbo_vs_epoch", "epoch", "epoch"), ("elbo_vs_time", "time", "wall time (s)")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, hist in histories.items():
            xs = [h["epoch"] for h in hist] if xkey == "epoch" else list(_cumsum(h["seconds"] for h in hist))
            ax.plot(xs, [h["test_elbo"] for h in hist], marker="o", label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test ELBO (nats per point)")
        ax.set_title(f"test ELBO against {xlabel}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=120)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.9), 4))
    labels = [r["estimator"] for r in rows]
    idx = range(len(rows))
    ax.bar([i - 0.2 for i in idx], [r["encoder_snr"] for r in rows], width=0.4, label="encoder (guide)")
    ax.bar([i + 0.2 for i in idx], [r["decoder_snr"] for r in rows], width=0.4, label="decoder (model)")
    ax.set_xticks(list(idx), labels, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("gradient SNR, median |mean| / std")
    ax.set_title("gradient signal-to-noise ratio at the trained parameters")
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
