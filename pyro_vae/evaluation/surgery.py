"""ELBO surgery: what the rate is made of (Hoffman & Johnson 2016; Chen et al. 2018).

With the data set's N points as the data distribution and q(z) = (1/N) sum_n q(z|x_n) the aggregate
posterior, the average rate splits exactly as

    E_x KL(q(z|x) || p(z)) = I(x; z) + KL(q(z) || p(z)),
    KL(q(z) || p(z)) = TC + sum_j KL(q(z_j) || p(z_j)),

I(x; z) = E[log q(z|x) - log q(z)] the mutual information between a point's index and its code,
TC = E[log q(z) - sum_j log q(z_j)] the total correlation of q(z), and the dimension-wise KL
E[sum_j log q(z_j) - log p(z_j)] (expectations over n and z ~ q(z|x_n)).

The estimator is the stratified one of ``infer/aggregate.py`` (what beta-TCVAE trains on), taken to
all n given points: log q(z) at a code of point i is log [(1/N) q(z|x_i) + (N-1)/(N(n-1)) sum_{j != i}
q(z|x_j)], in chunks. With ``num_data`` N = n (the default) the n points are the data distribution and
each term is a Monte Carlo average of exact quantities of it (I(x; z) is then at most log N). As an
estimate of a population's values it is biased by the finite n: on a 2-d linear-Gaussian model with
n = 4000 (10 data sets, ``tests/evaluation/test_surgery.py``), I(x; z) came out 0.007 +- 0.005 nats below
its closed form and the total correlation 0.0024 +- 0.0002 above (the mixture of n Gaussians is not quite
Gaussian); both shrink as n grows. With N > n the n points stand for a uniform sample of N (a test set
for its data set): q(z) is then estimated without bias and log q(z) biased low (Jensen), so I(x; z) is
biased high, and no longer bounded by log n. Needs q(z|x) and p(z) that factorise over dimensions
(diagonal normal posterior; standard-normal, learned-normal, Laplace or Student-t prior).
"""

from __future__ import annotations

import torch

from ..errors import UsageError
from ..infer.aggregate import aggregate_log_prob, factorised


@torch.no_grad()
def surgery(q, prior, num_samples=1, num_data=None, points=None, chunk=None, generator_seed=0):
    """The rate's parts (nats per point) for posteriors ``q`` (batch n, event D; one per data point) and a
    factorised ``prior`` (batch 1 or n), the n points standing for ``num_data`` (default n): rate,
    mutual_information, marginal_kl, total_correlation, dimensionwise_kl; rate = mutual_information +
    marginal_kl, marginal_kl = total_correlation + dimensionwise_kl (up to float rounding: all five from
    the same draws). ``points``: average over the codes of the first this many points only (default all n;
    q(z) is still the mixture over all n), for a cost of points x n x D instead of n x n x D."""
    qf = factorised(q, "ELBO surgery", UsageError)
    pf = factorised(prior, "ELBO surgery", UsageError)
    n = qf.batch_shape[0]
    if n < 2:
        raise UsageError("ELBO surgery needs at least 2 data points (q(z) is their mixture)")
    num_data = n if num_data is None else num_data
    if num_data < n:
        raise UsageError(f"num_data = {num_data} is fewer than the {n} points given: give N >= n, or leave it out")
    m = n if points is None else min(points, n)
    if m < 1:
        raise UsageError(f"points = {points}: average over at least 1 point's codes")
    with torch.random.fork_rng():
        torch.manual_seed(generator_seed)
        every = qf.sample((num_samples,))  # (S, n, D)
    own = qf.log_prob(every).sum(-1)[:, :m]  # log q(z|x_i) at its own codes, (S, m)
    z = every[:, :m]
    log_p_dims = pf.log_prob(z)  # (S, m, D)
    chunk = chunk or max(1, 2**22 // (num_samples * n * z.shape[-1]))  # codes at a time: about 16 MB of log q
    log_qz, log_qz_dims = aggregate_log_prob(qf, z, num_data, chunk)
    log_pz = log_p_dims.sum(-1)
    mean = lambda t: float(t.mean())  # noqa: E731
    return {
        "rate": mean(own - log_pz),
        "mutual_information": mean(own - log_qz),
        "marginal_kl": mean(log_qz - log_pz),
        "total_correlation": mean(log_qz - log_qz_dims.sum(-1)),
        "dimensionwise_kl": mean((log_qz_dims - log_p_dims).sum(-1)),
    }


def model_surgery(vae, x, num_samples=1, num_data=None, points=None, generator_seed=0):
    """``surgery`` of a model's posteriors at the points ``x`` (standing for ``num_data``) and its prior."""
    return surgery(
        vae.q(x), vae.prior(1), num_samples=num_samples, num_data=num_data, points=points, generator_seed=generator_seed
    )
