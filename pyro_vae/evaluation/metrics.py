"""Evaluation, in nats per data point.

- ELBO = -(distortion + rate), distortion = -E_q log p(x|z) (Monte Carlo), rate = KL(q(z|x) || p(z))
  (closed form where torch knows it, else Monte Carlo).
- log p(x) ~= log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x): the importance-sampled estimate
  (a lower bound in expectation that tightens as K grows), computed per data point as a
  log-mean-exp and chunked over K so large K fits in memory.
- Active units (Burda et al. 2016): dimensions u with Cov_x(E_q[z_u]) > 0.01.
- Several stochastic layers (``hierarchical``): the rate's share per layer, E_q[log q(z_l|z_{l-1}) -
  log p(z_l|z_{l+1})] (``rate_per_layer``, summing to the rate), and ``active_units_per_layer``.
- KL per latent dimension, where q and p factorise over dimensions (sums to the rate).
- Cluster accuracy (models with a discrete component, ``gmvae``): each cluster takes the label most
  of its points carry; the share of points whose cluster's label is theirs.
- Accuracy (families with a classifier q(y|x), ``m2``): the share of points whose argmax_y q(y|x) is their label.
- Families conditioned on labels (``cvae``) report bounds on log p(x|y) and need the labels.
- Bits per dimension, -log p(x) / (D ln 2) (CIFAR-10's unit), where p(x|z) is a mass over the
  data's levels (bernoulli on binary data, discretized_logistic on 8-bit images): ``bits_per_dim``
  from the log p(x) estimate, ``elbo_bits_per_dim`` from the ELBO (an upper bound).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from ..models.vae import VAE
from ..checks import number
from ..errors import UsageError
from ..work import check_logpx_work
from ..work import per_point as numbers_per_point

#: how many numbers (decoder outputs, prior terms) one chunk of log p(x) work may hold: 2^22
#: float32 = 16 MB per tensor, so a chunk's tensors stay in the CPU's last-level cache. Measured
#: on MNIST (K = 5000, batches of 500): 2^22 runs 1.7x faster than 2^26 (benchmarks/loglik.py)
CHUNK_ELEMENTS = 1 << 22


def _batches(x, batch_size):
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size]


@torch.no_grad()
def iwae_log_px(vae: VAE, x: torch.Tensor, num_samples: int, y: torch.Tensor | None = None) -> torch.Tensor:
    """log p(x) estimate per data point, with ``num_samples`` importance samples from q(z|x)
    (log p(x|y) with q(z|x, y) for a family conditioned on labels ``y``): log mean_k w_k with the family's
    ``log_importance_weights``. A discrete latent (gmvae's c, m2's unlabelled y) is summed out exactly in each
    w_k, so the estimate visits every component whatever q(c|x) says.

    The encoder runs once; the samples go through the decoder in chunks of about
    ``CHUNK_ELEMENTS`` numbers (images split too, if one sample of them all is larger), and the
    log-mean-exp is accumulated chunk by chunk, so memory stays flat in K."""
    n = x.shape[0]
    per_point = numbers_per_point(vae) * vae.decodes_per_sample
    if n > 1 and n * per_point > CHUNK_ELEMENTS:
        size = max(1, CHUNK_ELEMENTS // per_point)
        ys = [None] * len(x.split(size)) if y is None else y.split(size)
        return torch.cat([iwae_log_px(vae, xb, num_samples, yb) for xb, yb in zip(x.split(size), ys)])
    labels = {} if y is None else {"y": y}
    q = vae.q(x, **labels)
    chunk = max(1, min(num_samples, CHUNK_ELEMENTS // (n * per_point)))
    total: torch.Tensor | None = None
    for start in range(0, num_samples, chunk):
        part = torch.logsumexp(vae.log_importance_weights(x, min(chunk, num_samples - start), q=q, **labels), dim=0)
        total = part if total is None else torch.logaddexp(total, part)
    assert total is not None  # num_samples >= 1
    return total - math.log(num_samples)


def _labels_for(vae, x, labels):
    """The labels evaluation passes to a family conditioned on them (cvae); None for the others."""
    if not getattr(vae, "conditional", False):
        return None
    if labels is None:
        raise UsageError("this model is conditioned on labels (its bound is on log p(x|y)): pass the test labels")
    labels = torch.as_tensor(labels, device=x.device).long()
    if labels.shape != x.shape[:1]:
        raise UsageError(f"{x.shape[0]} data points but {tuple(labels.shape)} labels: give one label per point")
    return labels


@torch.no_grad()
def evaluate(
    vae: VAE,
    x: torch.Tensor,
    iwae_samples: int = 1000,
    batch_size: int = 500,
    elbo_samples: int = 1,
    progress: bool = False,
    labels: torch.Tensor | None = None,
    per_point: bool = False,
) -> dict[str, Any]:
    """Test ELBO, log p(x) (skipped if ``iwae_samples`` is 0) with ``log_px_se``, its standard error over
    the points (sd / sqrt(n)), rate, distortion, active units. ``labels``: the points' labels, needed by
    families conditioned on them (cvae: log p(x|y)). ``per_point=True`` adds ``elbo_per_point`` and
    ``log_px_per_point`` (lists), so two models scored on the same points can be compared pairwise."""
    vae.check_shape(x)
    for name, value, low in (
        ("iwae_samples", iwae_samples, 0),
        ("batch_size", batch_size, 1),
        ("elbo_samples", elbo_samples, 1),
    ):
        number(name, value, integer=True, low=low, error=UsageError)
    if iwae_samples:
        check_logpx_work(vae, x.shape[0], iwae_samples)
    y = _labels_for(vae, x, labels)
    sums = {"elbo": 0.0, "rate": 0.0, "distortion": 0.0}
    means, per_dim, layer_rates, layer_means, log_px, elbos = [], [], [], [], [], []
    for i, xb in enumerate(tqdm(list(_batches(x, batch_size)), desc="evaluate", disable=not progress, leave=False)):
        yb = None if y is None else y[i * batch_size : (i + 1) * batch_size]
        t = vae.elbo_terms(xb, elbo_samples, **({} if yb is None else {"y": yb}))
        sums["distortion"] += t["distortion"].sum().item()
        sums["rate"] += t["rate"].sum().item()
        sums["elbo"] -= (t["distortion"] + t["rate"]).sum().item()
        if per_point:
            elbos.append(-(t["distortion"] + t["rate"]).double())
        if iwae_samples:
            log_px.append(iwae_log_px(vae, xb, iwae_samples, yb).double())
        means.append(t["mean"])
        if t.get("layer_rates") is not None:  # several stochastic layers: each one's share of the rate
            layer_rates.append(torch.stack([r.sum() for r in t["layer_rates"]]))
            layer_means.append(t["layer_means"])
        kd = t["kl_per_dim"]
        per_dim.append(None if kd is None else kd.sum(0))
    n = x.shape[0]
    result: dict[str, Any] = {k: v / n for k, v in sums.items()}
    if per_point:
        result["elbo_per_point"] = torch.cat(elbos).tolist()
    if iwae_samples:
        points = torch.cat(log_px)
        result.update(log_px=points.mean().item(), log_px_se=standard_error(points), iwae_samples=iwae_samples)
        if per_point:
            result["log_px_per_point"] = points.tolist()
    result.update(bits_per_dim(vae, result))
    mu = torch.cat(means)
    result["active_units"] = int((mu.var(0) > 0.01).sum()) if n > 1 else 0
    if layer_rates:
        result["rate_per_layer"] = (torch.stack(layer_rates).sum(0) / n).tolist()
        result["active_units_per_layer"] = [
            int((torch.cat(m).var(0) > 0.01).sum()) if n > 1 else 0 for m in zip(*layer_means)
        ]
    if per_dim and per_dim[0] is not None:
        result["kl_per_dim"] = (torch.stack([d for d in per_dim if d is not None]).sum(0) / n).tolist()
    return result


def standard_error(values):
    """The standard error of the mean of ``values`` (a 1-d tensor): sd / sqrt(n); nan for one value."""
    return (values.std() / math.sqrt(values.numel())).item() if values.numel() > 1 else math.nan


def bits_per_dim(vae, result):
    """{"elbo_bits_per_dim", "bits_per_dim"} from a result's nats per data point, for likelihoods
    that are masses over the data's levels (``likelihood.discrete``); {} for densities."""
    if not getattr(vae.likelihood, "discrete", False):
        return {}
    scale = 1.0 / (math.prod(vae.data_shape) * math.log(2))
    out = {"elbo_bits_per_dim": -result["elbo"] * scale}
    if "log_px" in result:
        out["bits_per_dim"] = -result["log_px"] * scale
    return out


def cluster_accuracy(clusters, labels):
    """The share of points whose cluster's majority label is their own label (the usual score of an
    unsupervised clustering against classes; 1/num_classes or better for any clustering)."""
    clusters, labels = torch.as_tensor(clusters).long().cpu(), torch.as_tensor(labels).long().cpu()
    if clusters.shape != labels.shape or clusters.dim() != 1 or clusters.numel() == 0:
        raise UsageError(
            f"cluster_accuracy needs two equal 1-D label tensors, got {tuple(clusters.shape)} and {tuple(labels.shape)}"
        )
    labels = labels - labels.min()
    counts = torch.zeros(int(clusters.max()) + 1, int(labels.max()) + 1)
    counts.index_put_((clusters, labels), torch.ones(len(labels)), accumulate=True)
    return counts.max(1).values.sum().item() / len(labels)


@torch.no_grad()
def clustering(vae, x, labels, batch_size=500):
    """{"cluster_accuracy"} of ``vae.assign`` (the model's MAP component, by infer_discrete) against
    ``labels``, for models with a discrete component; {} for others or without labels."""
    if labels is None or not hasattr(vae, "assign"):
        return {}
    clusters = torch.cat([vae.assign(xb) for xb in _batches(x, batch_size)])
    return {"cluster_accuracy": cluster_accuracy(clusters, labels[: x.shape[0]])}


@torch.no_grad()
def classification(vae, x, labels, batch_size=500):
    """{"accuracy"} of the model's classifier q(y|x) (argmax) against ``labels``, for families that
    have one (m2); {} for others or without labels."""
    if labels is None or not hasattr(vae, "classify"):
        return {}
    predicted = torch.cat([vae.classify(xb) for xb in _batches(x, batch_size)])
    return {"accuracy": (predicted == labels[: x.shape[0]].to(predicted.device)).float().mean().item()}


@torch.no_grad()
def test_elbo(vae: VAE, x: torch.Tensor, batch_size: int = 1000, labels: torch.Tensor | None = None) -> float:
    """The single-sample test ELBO in nats per data point (what training reports each epoch)."""
    return evaluate(vae, x, iwae_samples=0, batch_size=batch_size, labels=labels)["elbo"]
