"""What a model's codes hold, as study columns: the rate's parts (ELBO surgery, ``surgery.py``) and, where
the data's labels are factors of variation (one column per factor, as ``shapes`` gives them), MIG and DCI
of the posterior means against them, and the FactorVAE score (``disentanglement.py``).

The surgery takes the test set as the data distribution (Hoffman & Johnson's choice, for their training set):
q(z) is the mixture of the posteriors of all n test points, exactly, and the parts are averaged over the codes
of the first ``eval.surgery`` of them. Each part is then a Monte Carlo estimate of an exact quantity of the
test set's empirical distribution, and I(x; z) <= log n: a model whose rate exceeds log n nats has I(x; z)
near log n and the rest of its rate in KL(q(z) || p(z)), because a mixture of n sharp posteriors is far from
p(z). As an estimate for the whole data set (N > n points), I(x; z) is biased low and KL(q(z) || p(z)) and
the total correlation high; the stratified estimate with N (``surgery(..., num_data=N)``) errs the other way,
so the two bracket it. Both move towards it as ``data.test_size`` grows. It applies
to models with one latent site whose posterior and prior factorise over dimensions; other models get no
columns, as clustering and classification do for models without their parts.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import DataError, UsageError
from ..models.vae import posterior_mean
from .disentanglement import dci, factor_vae_score, mig
from .surgery import model_surgery

#: the columns, in the order tables show them
SURGERY_COLUMNS = ("mutual_information", "total_correlation", "dimensionwise_kl", "marginal_kl")
FACTOR_COLUMNS = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "factor_vae")


def _one_factorised_site(vae, x):
    """Whether the model draws one latent site, whose posterior and prior factorise (surgery's condition)."""
    from pyro import poutine
    from pyro.poutine.util import site_is_subsample

    from ..infer.aggregate import factorised

    try:
        with torch.no_grad(), poutine.block():
            trace = poutine.trace(vae.guide).get_trace(x[:2], num_data=2)
        latents = [
            s
            for s in trace.nodes.values()
            if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
        ]
        if len(latents) != 1:
            return False
        factorised(vae.q(x[:2]), "", UsageError)
        factorised(vae.prior(1), "", UsageError)
    except (UsageError, DataError):  # a mixture, a flow, a family that needs labels
        return False
    return True


@torch.no_grad()
def surgery_columns(vae: Any, x: torch.Tensor, points: int = 2000, seed: int = 0) -> dict[str, float]:
    """{column: nats} of ``SURGERY_COLUMNS`` at the codes of the first ``points`` of ``x``, q(z) the mixture over
    all of ``x`` (the data distribution); {} where the model does not qualify or ``points`` is 0."""
    if points == 0 or x.shape[0] < 2 or not _one_factorised_site(vae, x):
        return {}
    r = model_surgery(vae, x, points=points, generator_seed=seed)
    return {k: r[k] for k in SURGERY_COLUMNS}


def factor_labels(labels: torch.Tensor | None) -> torch.Tensor | None:
    """The labels as factors of variation (n, K >= 2), or None where they are not (no labels, one class label)."""
    return labels if labels is not None and labels.dim() == 2 and labels.shape[1] >= 2 else None


@torch.no_grad()
def factor_columns(vae: Any, x: torch.Tensor, labels: torch.Tensor | None, batch_size: int = 500) -> dict[str, float]:
    """{"mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "factor_vae"} of the posterior means of
    ``x`` against factor ``labels`` (n, K); {} where the labels are not factors or the model has no q(z|x)."""
    factors = factor_labels(labels)
    if factors is None:
        return {}
    try:
        codes = torch.cat([posterior_mean(vae.q(xb)).flatten(1) for xb in x.split(batch_size)]).cpu()
    except DataError:  # a family that needs labels for q(z|x, y)
        return {}
    score, _ = mig(codes, factors[: len(codes)].cpu())
    d = dci(codes, factors[: len(codes)].cpu())
    return {
        "mig": score,
        "dci_disentanglement": d["disentanglement"],
        "dci_completeness": d["completeness"],
        "dci_informativeness": d["informativeness"],
        "factor_vae": factor_vae_score(codes, factors[: len(codes)].cpu()),
    }


def representation_columns(vae: Any, data: Any, cfg: dict) -> dict[str, float]:
    """Both: the surgery at the codes of ``eval.surgery`` test points, the test set the data distribution, and
    the factor metrics on the whole test set."""
    test = data.test.to(next(vae.parameters()).device)
    return {
        **surgery_columns(vae, test, cfg["eval"]["surgery"], cfg["seed"]),
        **factor_columns(vae, test, data.test_labels, cfg["eval"]["batch_size"]),
    }
