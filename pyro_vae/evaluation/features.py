"""Feature networks for sample-quality metrics: images -> vectors in which distances mean something.

FID, KID and precision/recall compare two sets of images through a network's features (Heusel et al.
2017 use Inception-v3's pool features). Inception was trained on ImageNet photographs; on 28 x 28 digits
its features say little, and its weights are a download. So:

- ``classifier``: a small convolutional classifier of the dataset's own labels, trained once on its
  training set (``train_classifier``) and cached beside the data (``cached_classifier``: the weights,
  with a JSON record of their SHA-256, the data's fingerprint and the test accuracy); its features
  are the 128 activations before the last layer. Deterministic: the same data and seed give the same
  network. Needs labelled data.
- ``inception``: Inception-v3's 2048 pool features (torchmetrics' ``NoTrainInceptionV3``, from
  ``torch-fidelity``), only from weights already on disk: ``PYRO_VAE_INCEPTION_WEIGHTS`` names the
  file (``pt_inception-2015-12-05-6726825d.pth``); nothing is downloaded.
- any ``nn.Module`` a plugin registers in ``FEATURES``: built as ``cls(data, cache_dir)``, its
  ``forward`` maps images (n, C, H, W) in [0, 1] to features (n, F).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..errors import DataError, UsageError
from ..files import atomic_write, atomic_write_text
from ..registry import Registry

#: feature networks of the sample-quality metrics by name (``eval.features``)
FEATURES = Registry("eval.features", context=("data", "cache_dir", "progress", "log"))

#: the environment variable that names Inception-v3's weights file
INCEPTION_ENV = "PYRO_VAE_INCEPTION_WEIGHTS"

#: the classifier's architecture and training recipe; a change makes every cache entry stale
CLASSIFIER_VERSION = 1

#: below this test accuracy a classifier's features are refused (they would not separate the classes)
MIN_ACCURACY = 0.9


class Classifier(nn.Module):
    """conv(32, 3x3, stride 2) - conv(64, 3x3, stride 2) - linear(128) - linear(classes), ReLUs; any
    image size of at least 8 x 8. ``forward`` returns the 128 features; ``logits`` the class scores."""

    def __init__(self, data_shape, classes):
        super().__init__()
        c, h, w = data_shape
        self.data_shape, self.classes = tuple(data_shape), int(classes)
        self.conv1 = nn.Conv2d(c, 32, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.fc = nn.Linear(64 * ((h + 3) // 4) * ((w + 3) // 4), 128)
        self.out = nn.Linear(128, classes)
        self.num_features = 128

    def forward(self, x):
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        return F.relu(self.fc(h.flatten(1)))

    def logits(self, x):
        return self.out(self(x))


def fingerprint(*tensors):
    """SHA-256 of the tensors' shapes and bytes: which data a cached network was trained on."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def accuracy(net, x, y, batch_size=1000):
    right = sum(
        int((net.logits(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
        for i in range(0, len(x), batch_size)
    )
    return right / len(x)


def train_classifier(data, epochs=3, batch_size=128, lr=2e-3, seed=0, progress=True):
    """A ``Classifier`` of ``data``'s labels (Adam, ``epochs`` passes, the learning rate decayed to 0 by
    a cosine), and its accuracy on the test set."""
    if data.train is None:
        raise DataError(
            "the classifier features train on a dataset held in memory; this one is read from disk batch by batch: "
            "set eval.features to \"inception\" or a plugin's"
        )
    if data.train_labels is None or data.test_labels is None:
        raise DataError(
            "the classifier features need a dataset with labels (mnist, an npz file with y_train and y_test, an "
            "image folder of classes): set eval.features = \"inception\" or register a feature network"
        )
    if data.train_labels.dim() != 1:
        raise DataError(
            f"the classifier features need one class label per point; this dataset's labels have shape "
            f"{tuple(data.train_labels.shape[1:])} per point (factors): set eval.features to \"inception\" or a plugin's"
        )
    x, y = data.train.float(), data.train_labels.long()
    classes = int(max(y.max(), data.test_labels.max())) + 1
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = Classifier(x.shape[1:], classes)
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * max(1, len(x) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    bar = tqdm(total=steps, desc="feature classifier", disable=not progress, leave=False)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - batch_size + 1 if len(x) >= batch_size else 1, batch_size):
            idx = order[i : i + batch_size]
            loss = F.cross_entropy(net.logits(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    net.eval()
    return net, accuracy(net, data.test.float(), data.test_labels.long())


def default_cache_dir(root):
    """Beside the data (``ROOT/pyro-vae-features``) where that folder can be written, else the user's cache."""
    beside = Path(root) / "pyro-vae-features"
    try:
        beside.mkdir(parents=True, exist_ok=True)
        probe = beside / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
        return beside
    except OSError:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "pyro-vae" / "features"


def cached_classifier(data, cache_dir, epochs=3, seed=0, progress=True, log=print):
    """The feature classifier of ``data``, trained once and kept in ``cache_dir`` as
    ``classifier-<data fingerprint>.pt`` (tensors only) and a ``.json`` record: the file's SHA-256, the
    data's fingerprint, the test accuracy. A file whose checksum differs is refused, not replaced."""
    key = fingerprint(data.train, data.train_labels, data.test, data.test_labels)[:20]
    name = f"classifier-v{CLASSIFIER_VERSION}-{key}-e{epochs}-s{seed}"
    cache_dir = Path(cache_dir)
    weights, record = cache_dir / f"{name}.pt", cache_dir / f"{name}.json"
    if weights.exists() and record.exists():
        info = json.loads(record.read_text())
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        if digest != info.get("sha256"):
            raise DataError(
                f"the cached feature classifier {weights} does not match its checksum in {record.name} (a damaged or "
                "edited file): delete both files and it is trained again"
            )
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net = Classifier(tuple(info["data_shape"]), info["classes"])
        net.load_state_dict(state)
        net.eval()
        net.test_accuracy = info["test_accuracy"]
        return net
    log(f"training the feature classifier once ({epochs} epochs on {len(data.train)} images); cached in {cache_dir}")
    t0 = time.perf_counter()
    net, acc = train_classifier(data, epochs=epochs, seed=seed, progress=progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(weights, lambda f: torch.save(net.state_dict(), f))
    info = {
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "data_fingerprint": key,
        "data_shape": list(net.data_shape),
        "classes": net.classes,
        "test_accuracy": acc,
        "epochs": epochs,
        "seed": seed,
        "seconds": round(time.perf_counter() - t0, 1),
        "version": CLASSIFIER_VERSION,
    }
    atomic_write_text(record, json.dumps(info, indent=2) + "\n")
    log(f"feature classifier: test accuracy {acc:.4f} ({info['seconds']} s)")
    net.test_accuracy = acc
    return net


@FEATURES.register("classifier")
def classifier_features(data, cache_dir, epochs=3, seed=0, min_accuracy=MIN_ACCURACY, progress=True, log=print):
    """The dataset's own classifier (trained once, cached); refused below ``min_accuracy`` test accuracy."""
    net = cached_classifier(data, cache_dir, epochs=epochs, seed=seed, progress=progress, log=log)
    if net.test_accuracy < min_accuracy:
        raise DataError(
            f"the feature classifier reaches only {net.test_accuracy:.3f} test accuracy (< {min_accuracy}): its features "
            "would not tell the classes apart. Train it longer (eval.features = {kind = \"classifier\", epochs = 10}) "
            "or use other features"
        )
    net.feature_kind = "classifier"
    return net


class _Inception(nn.Module):
    """Inception-v3's pool features of images in [0, 1] (torchmetrics' NoTrainInceptionV3, weights from disk)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.num_features = net, 2048

    def forward(self, x):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net((x.clamp(0, 1) * 255).round().to(torch.uint8)).reshape(x.shape[0], -1)


@FEATURES.register("inception")
def inception_features(data=None, cache_dir=None, weights=""):
    """Inception-v3 pool features from a weights file on disk (``weights`` or $PYRO_VAE_INCEPTION_WEIGHTS)."""
    path = weights or os.environ.get(INCEPTION_ENV)
    how = (
        f"download pt_inception-2015-12-05-6726825d.pth (torch-fidelity's Inception-v3 weights) on a machine with "
        f"network access, then set {INCEPTION_ENV}=/path/to/it (or eval.features = {{kind = \"inception\", weights = "
        "\"...\"}}); or use eval.features = \"classifier\" on labelled data"
    )
    if not path or not Path(path).is_file():
        raise UsageError(f"Inception features need their weights on disk, and {path or 'none'} was given: {how}")
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as e:  # torch-fidelity missing
        raise UsageError(f"Inception features need torch-fidelity (pip install torch-fidelity): {e}") from None
    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=path)
    out = _Inception(net).eval()
    out.feature_kind = "inception"
    return out


@FEATURES.register("auto")
def auto_features(data, cache_dir, progress=True, log=print):
    """``classifier`` on data with labels, else ``inception``."""
    if data.train_labels is not None and data.test_labels is not None:
        return classifier_features(data, cache_dir, progress=progress, log=log)
    return inception_features(data, cache_dir)


def build_features(spec, data, cache_dir, progress=True, log=print):
    """The feature network ``spec`` names (a kind of ``FEATURES`` or a table ``{kind = ..., ...}``)."""
    kind, params = FEATURES.check(spec)
    fn = FEATURES.get(kind)
    extra = {k: v for k, v in (("progress", progress), ("log", log)) if k in FEATURES.params(kind)}
    net = fn(data=data, cache_dir=cache_dir, **extra, **params)
    if not isinstance(net, nn.Module):
        raise UsageError(
            f"eval.features {kind!r} built a {type(net).__name__}, not an nn.Module mapping images to features"
        )
    if not hasattr(net, "feature_kind"):  # "auto" names the network it chose
        net.feature_kind = kind
    return net.eval()
