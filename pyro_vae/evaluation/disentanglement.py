"""Disentanglement of codes against known factors of variation: MIG and DCI.

``codes`` are (n, D) posterior means E_q[z|x_i]; ``factors`` are (n, K) the values of the K generative
factors of each point (integers: a factor's levels, as dSprites' grid gives them).

- MIG, the mutual information gap (Chen et al. 2018): (1/K) sum_k (I(z_a; v_k) - I(z_b; v_k)) / H(v_k),
  z_a and z_b the two codes most informative about factor v_k. Each code is discretised into ``bins``
  equal-width bins over its range and the mutual information is the plug-in estimate from the joint
  histogram (as disentanglement_lib computes it; biased upward by about (bins - 1)(levels - 1) / (2n) nats).
  1: each factor lives in one code alone; 0: no code stands out.
- DCI (Eastwood & Williams 2018) from an importance matrix R (D x K): R[d, k] = |w[d, k]|, the weights of
  a Lasso regression of each standardised factor on the standardised codes (their original choice; a
  linear probe, so a factor the codes hold non-linearly, such as an orientation on a circle, looks less
  informative than it is). With P[d, k] = R[d, k] / sum_k R[d, k], disentanglement is
  sum_d rho[d] (1 - H_K(P[d, :])) (rho[d] = sum_k R[d, k] / sum R, entropy in base K); completeness is
  (1/K) sum_k (1 - H_D(R[:, k] / sum_d R[d, k])); informativeness is the mean held-out R^2 of the
  regressions (1: the codes determine the factors linearly).
- The FactorVAE score (Kim & Mnih 2018): fix one factor at a value, take ``batch`` points that share it, and
  vote for the code (each divided by its standard deviation over all points) whose variance over them is
  least; a majority-vote classifier from codes to factors, fitted on ``train_votes`` votes, scores its
  accuracy on ``eval_votes`` others. Codes whose variance is below 0.05 (collapsed) take no part. 1: fixing
  a factor fixes a code of its own; 1/K: nothing to tell. The points come from the given set itself.
"""

from __future__ import annotations

import math

import torch

from ..errors import UsageError


def _check(codes, factors):
    if codes.dim() != 2 or factors.dim() != 2 or len(codes) != len(factors):
        raise UsageError(
            f"codes (n, D) and factors (n, K) of the same points are needed, got {tuple(codes.shape)} and "
            f"{tuple(factors.shape)}"
        )
    if len(codes) < 10:
        raise UsageError(f"disentanglement metrics need at least 10 points, got {len(codes)}")
    if not torch.isfinite(codes).all():
        raise UsageError("the codes hold NaN or infinite values: the model's encoder diverged")
    return codes.double(), factors


def _discretise(x, bins):
    """Each column of x cut into ``bins`` equal-width bins over its range: integer codes (n, D)."""
    lo, hi = x.min(0).values, x.max(0).values
    width = (hi - lo).clamp_min(1e-12) / bins
    return ((x - lo) / width).floor().clamp(0, bins - 1).long()


def _levels(v):
    """A factor's values as 0 .. L-1 (its distinct values in order)."""
    return torch.unique(v, return_inverse=True)[1]


def _entropy(labels):
    p = torch.bincount(labels).double()
    p = p[p > 0] / len(labels)
    return float(-(p * p.log()).sum())


def mutual_information(a, b):
    """Plug-in I(a; b) in nats of two integer label vectors, from their joint histogram."""
    a, b = _levels(a), _levels(b)
    na, nb = int(a.max()) + 1, int(b.max()) + 1
    joint = torch.bincount(a * nb + b, minlength=na * nb).double().reshape(na, nb) / len(a)
    pa, pb = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    nz = joint > 0
    return float((joint[nz] * (joint[nz].log() - (pa @ pb)[nz].log())).sum())


def mig(codes, factors, bins=20):
    """The mutual information gap, and the (D, K) matrix of I(z_d; v_k) in nats."""
    codes, factors = _check(codes, factors)
    if codes.shape[1] < 2:
        raise UsageError("MIG compares the two most informative codes: it needs at least 2 latent dimensions")
    z = _discretise(codes, bins)
    info = torch.tensor(
        [[mutual_information(z[:, d], factors[:, k]) for k in range(factors.shape[1])] for d in range(z.shape[1])]
    )
    gaps = []
    for k in range(factors.shape[1]):
        h = _entropy(_levels(factors[:, k]))
        if h == 0:
            continue  # a factor that never varies carries no information to share
        top = info[:, k].sort(descending=True).values
        gaps.append(float(top[0] - top[1]) / h)
    if not gaps:
        raise UsageError("every factor is constant over these points: MIG is undefined")
    return sum(gaps) / len(gaps), info


def _standardise(x):
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-12)


def lasso(x, y, alpha=0.01, iterations=500):
    """min_w (1/2n) |y - x w|^2 + alpha |w|_1 by cyclic coordinate descent (x, y standardised): (D, K) weights."""
    n, d = x.shape
    w = torch.zeros(d, y.shape[1], dtype=x.dtype)
    col_sq = (x * x).sum(0) / n
    residual = y.clone()
    for _ in range(iterations):
        largest = 0.0
        for j in range(d):
            old = w[j].clone()
            rho = x[:, j] @ residual / n + col_sq[j] * old
            new = torch.sign(rho) * (rho.abs() - alpha).clamp_min(0) / col_sq[j].clamp_min(1e-12)
            if not torch.equal(new, old):
                residual -= x[:, j : j + 1] * (new - old)[None]
                w[j] = new
                largest = max(largest, float((new - old).abs().max()))
        if largest < 1e-6:
            break
    return w


def dci(codes, factors, alpha=0.01, train_fraction=0.8, seed=0):
    """{"disentanglement", "completeness", "informativeness", "importance"} from Lasso probes (see the module)."""
    codes, factors = _check(codes, factors)
    keep = [k for k in range(factors.shape[1]) if factors[:, k].unique().numel() > 1]
    if not keep:
        raise UsageError("every factor is constant over these points: DCI is undefined")
    z = _standardise(codes)
    v = _standardise(factors[:, keep].double())
    order = torch.randperm(len(z), generator=torch.Generator().manual_seed(seed))
    cut = int(len(z) * train_fraction)
    train, test = order[:cut], order[cut:]
    w = lasso(z[train], v[train], alpha)
    r = w.abs()
    d, k = r.shape
    total = r.sum()
    if total == 0:
        return {"disentanglement": 0.0, "completeness": 0.0, "informativeness": 0.0, "importance": r}
    by_code = r / r.sum(1, keepdim=True).clamp_min(1e-12)
    h_code = -(by_code * by_code.clamp_min(1e-30).log()).sum(1) / math.log(k) if k > 1 else torch.zeros(d)
    rho = r.sum(1) / total
    by_factor = r / r.sum(0, keepdim=True).clamp_min(1e-12)
    h_factor = -(by_factor * by_factor.clamp_min(1e-30).log()).sum(0) / math.log(d) if d > 1 else torch.zeros(k)
    h_factor = torch.where(r.sum(0) > 0, h_factor, torch.ones_like(h_factor))  # no code holds it: completeness 0
    residual = v[test] - z[test] @ w
    r2 = 1 - residual.pow(2).mean(0) / v[test].var(0, correction=0).clamp_min(1e-12)
    return {
        "disentanglement": float((rho * (1 - h_code)).sum()),
        "completeness": float((1 - h_factor).mean()),
        "informativeness": float(r2.clamp(min=0).mean()),
        "importance": r,
    }


def factor_vae_score(codes, factors, batch=64, train_votes=1000, eval_votes=500, seed=0):
    """The FactorVAE metric's accuracy (see the module) from the points themselves."""
    codes, factors = _check(codes, factors)
    keep = [k for k in range(factors.shape[1]) if factors[:, k].unique().numel() > 1]
    if not keep:
        raise UsageError("every factor is constant over these points: the FactorVAE score is undefined")
    spread = codes.var(0)
    active = spread > 0.05
    if not active.any():
        return 0.0
    z = codes[:, active] / spread[active].sqrt()
    g = torch.Generator().manual_seed(seed)

    def votes(count):
        out = torch.zeros(count, 2, dtype=torch.long)
        for v in range(count):
            k = keep[int(torch.randint(len(keep), (1,), generator=g))]
            anchor = int(torch.randint(len(z), (1,), generator=g))  # a value of factor k, as often as it occurs
            members = (factors[:, k] == factors[anchor, k]).nonzero().squeeze(1)
            chosen = members[torch.randint(len(members), (batch,), generator=g)]
            out[v] = torch.tensor([int(z[chosen].var(0).argmin()), k])
        return out

    train, held = votes(train_votes), votes(eval_votes)
    counts = torch.zeros(z.shape[1], factors.shape[1], dtype=torch.long)
    counts.index_put_((train[:, 0], train[:, 1]), torch.ones(len(train), dtype=torch.long), accumulate=True)
    classifier = counts.argmax(1)  # each code's majority factor
    return float((classifier[held[:, 0]] == held[:, 1]).double().mean())
