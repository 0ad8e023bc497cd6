"""Post-hoc latent samplers: where to draw z from once a VAE is trained.

Samples from the prior p(z) land where the prior has mass, but the decoder learnt from codes of the
aggregate posterior q(z) = (1/N) sum_i q(z|x_i), which rarely fills the prior (holes between the
classes, dimensions the rate left unused). A post-hoc sampler is a density fitted by maximum
likelihood to codes z_i ~ q(z|x_i) of the training set (one draw per point: a sample of q(z)), then
sampled instead of the prior, with no retraining (pythae's ``GaussianMixtureSampler`` and
``MAFSampler`` do the same, on the posterior means):

- ``prior``: the model's own p(z), fitted to nothing (the baseline);
- ``gmm``: a full-covariance Gaussian mixture sum_k pi_k N(mu_k, Sigma_k) fitted by EM, its number of
  components the one of ``CANDIDATES`` (up to ``max_components``) with the least BIC =
  -2 log L + p log N (p = free parameters; BIC is consistent for the number of components of a mixture),
  the candidates tried in increasing order until BIC has risen twice in a row past its least, on a
  random 20,000 of the codes (then the chosen mixture is fitted to them all);
- ``flow``: a RealNVP-style flow (Pyro's ``affine_coupling`` layers, the halves swapped between layers)
  on the standardised codes, fitted by Adam on log q(z) with a held-out tenth for early stopping.

A sampler is an ``nn.Module`` whose ``distribution()`` is a ``pyro.distributions`` distribution over
z (event dim 1); ``save``/``load_sampler`` keep it as tensors only (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn
from tqdm.auto import tqdm

from ..checks import number, positive
from ..errors import CheckpointError, UsageError
from ..files import atomic_write
from ..registry import Registry

#: post-hoc latent samplers by name (``pyro-vae sample --sampler``, ``eval.samplers``)
SAMPLERS = Registry("eval.samplers")


def check_posthoc(vae):
    """Refuse a model whose z is not one latent site drawn by the plain VAE's ``prior_latents`` from
    ``q``: a fitted q(z) stands in for p(z) only where p(z) is the whole prior of the decoder's input."""
    from ..models.vae import VAE

    family = type(vae)
    if not isinstance(vae, VAE) or family.prior_latents is not VAE.prior_latents or family.q is not VAE.q:
        raise UsageError(
            f"post-hoc samplers fit the codes of one latent z ~ q(z|x); a {getattr(vae, 'name', family.__name__)!r} "
            f"model ({family.__name__}) draws other latents too (labels, components, layers): use --sampler prior"
        )


@torch.no_grad()
def latent_codes(vae, x, batch_size=1000, generator=None):
    """One code z_i ~ q(z|x_i) per point of ``x`` (n, latent_dim): a sample of the aggregate posterior q(z)."""
    check_posthoc(vae)
    out = []
    for i in range(0, x.shape[0], batch_size):
        q = vae.q(x[i : i + batch_size])
        base = q.base_dist if isinstance(q, dist.Independent) else q
        # a normal's draw with our generator, so a fit is reproducible whatever else ran
        if isinstance(base, dist.Normal):
            eps = torch.randn(base.loc.shape, generator=generator, dtype=base.loc.dtype).to(base.loc.device)
            out.append(base.loc + base.scale * eps)
        else:
            out.append(q.sample())
    return torch.cat(out).reshape(x.shape[0], -1).float()


class LatentSampler(nn.Module):
    """A density over z fitted to codes: ``fit(codes)``, then ``distribution()``, ``log_prob(z)`` and
    ``sample(n)``. ``params()`` are the constructor's arguments, saved beside the tensors."""

    kind = "base"

    def __init__(self, latent_dim):
        super().__init__()
        self.latent_dim = latent_dim
        self.fit_info = {}

    def params(self):
        return {"latent_dim": self.latent_dim}

    def fit(self, codes, seed=0, progress=False):
        return self

    def distribution(self):
        raise NotImplementedError

    def log_prob(self, z):
        """log density of each row of ``z`` (n,)."""
        return self.distribution().log_prob(z)

    @torch.no_grad()
    def sample(self, n):
        """n draws z (n, latent_dim)."""
        return self.distribution().sample((n,))

    def _check_codes(self, codes):
        if codes.dim() != 2 or codes.shape[1] != self.latent_dim:
            raise UsageError(f"codes must have shape (n, {self.latent_dim}), got {tuple(codes.shape)}")
        if not torch.isfinite(codes).all():
            raise UsageError("the codes hold NaN or infinite values: the model's encoder diverged; retrain it")
        return codes.double()


@SAMPLERS.register("prior")
class PriorSampler(LatentSampler):
    """The model's prior p(z) itself: the baseline, fitted to nothing."""

    kind = "prior"

    def __init__(self, latent_dim, prior=None):
        super().__init__(latent_dim)
        self.prior = prior

    def distribution(self):
        if self.prior is None:
            raise UsageError("the prior sampler needs the model's prior: build it with PriorSampler(dim, vae.prior)")
        return _Rows(self.prior(1))


class _Rows(dist.TorchDistribution):
    """A distribution over rows z (n, D) from a prior built for one point (batch shape (1,))."""

    arg_constraints = {}

    def __init__(self, one):
        self.one = one
        super().__init__(torch.Size(), one.event_shape, validate_args=False)

    def sample(self, sample_shape=torch.Size()):
        return self.one.sample(sample_shape).squeeze(-2)

    def log_prob(self, z):
        return self.one.log_prob(z.unsqueeze(-2)).squeeze(-1)


#: numbers of components a fitted mixture may take (the least BIC wins)
CANDIDATES = (1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64)


@SAMPLERS.register("gmm")
class GaussianMixtureSampler(LatentSampler):
    """sum_k pi_k N(mu_k, Sigma_k), full covariances, fitted by EM to every code; K = argmin BIC over
    ``CANDIDATES`` up to ``max_components``, on a random ``selection_codes`` of the codes (or exactly
    ``components``, if set)."""

    kind = "gmm"

    def __init__(
        self, latent_dim, max_components=32, components=0, iterations=100, tolerance=1e-3, selection_codes=20000
    ):
        super().__init__(latent_dim)
        self.selection_codes = positive("selection_codes", selection_codes, integer=True)
        self.max_components = positive("max_components", max_components, integer=True)
        self.components = number("components", components, integer=True, low=0)
        self.iterations = positive("iterations", iterations, integer=True)
        self.tolerance = number("tolerance", tolerance, low=0)
        k = self.components or 1
        self.register_buffer("logits", torch.zeros(k))
        self.register_buffer("loc", torch.zeros(k, latent_dim))
        self.register_buffer("scale_tril", torch.eye(latent_dim).expand(k, -1, -1).clone())

    def params(self):
        return {
            "latent_dim": self.latent_dim,
            "max_components": self.max_components,
            "components": int(self.logits.shape[0]),  # what the fit chose: load rebuilds exactly this
            "iterations": self.iterations,
            "tolerance": self.tolerance,
            "selection_codes": self.selection_codes,
        }

    def distribution(self):
        return dist.MixtureSameFamily(
            dist.Categorical(logits=self.logits), dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril)
        )

    def fit(self, codes, seed=0, progress=False):
        z = self._check_codes(codes)
        n, d = z.shape
        g = torch.Generator().manual_seed(seed)
        self.fit_info = {}
        chosen = self.components or self._select(z, g, progress)
        logits, loc, tril, loglik = _em(z, chosen, self.iterations, self.tolerance, g)
        self.logits, self.loc, self.scale_tril = logits.float(), loc.float(), tril.float()
        self.fit_info = {**self.fit_info, "components": chosen, "log_likelihood_per_code": loglik / n}
        return self

    def _select(self, z, g, progress):
        """The number of components with the least BIC, on at most ``selection_codes`` of the codes."""
        if len(z) > self.selection_codes:
            z = z[torch.randperm(len(z), generator=g)[: self.selection_codes]]
        n, d = z.shape
        candidates = [k for k in CANDIDATES if k <= self.max_components and k * (d + 1) * 5 <= n] or [1]
        best, scores = None, {}
        worse = 0  # candidates in a row whose BIC is above the best so far
        for k in tqdm(candidates, desc="gmm: components by BIC", disable=not progress, leave=False):
            loglik = _em(z, k, self.iterations, self.tolerance, g)[3]
            p = (k - 1) + k * d + k * d * (d + 1) // 2
            bic = -2 * loglik + p * math.log(n)
            scores[k] = bic
            if best is None or bic < best[0]:
                best, worse = (bic, k), 0
            else:
                worse += 1
                if worse == 2:  # BIC rose twice past its least: larger mixtures only add parameters
                    break
        self.fit_info = {"bic": scores, "bic_codes": n}
        return best[1]


def _em(z, k, iterations, tolerance, g):
    """EM for a k-component full-covariance Gaussian mixture on z (n, d), float64, from a k-means++ start;
    stops when the mean log-likelihood per code rises by less than ``tolerance`` (scikit-learn's rule).
    Returns (logits, loc, scale_tril, total log-likelihood)."""
    n, d = z.shape
    ridge = 1e-6 * z.var(0).mean().clamp_min(1e-12) * torch.eye(d, dtype=z.dtype)
    centres = [z[torch.randint(n, (1,), generator=g)].squeeze(0)]
    for _ in range(1, k):  # k-means++: each next centre drawn with probability ~ squared distance
        d2 = torch.cdist(z, torch.stack(centres)).pow(2).min(1).values
        centres.append(z[torch.multinomial(d2 / d2.sum(), 1, generator=g)].squeeze(0))
    resp = torch.nn.functional.one_hot(torch.cdist(z, torch.stack(centres)).argmin(1), k).to(z.dtype).T  # (k, n)
    previous = -math.inf
    for _ in range(iterations):
        # M step: weights, means, covariances from the responsibilities
        nk = resp.sum(1) + 1e-10
        loc = (resp @ z) / nk[:, None]
        # one (d, n) x (n, d) product per component: no (k, n, d) tensor (3x faster at k = 16, n = 60000)
        second = torch.stack([(z.T * r) @ z for r in resp]) / nk[:, None, None]
        cov = second - loc[:, :, None] * loc[:, None, :] + ridge
        tril = torch.linalg.cholesky(cov)
        logits = nk.log() - math.log(n)
        # E step: log pi_k + log N(z | mu_k, L_k L_k^T), |L_k^-1 (z - mu_k)|^2 by one product per component
        inverse = torch.linalg.solve_triangular(tril, torch.eye(d, dtype=z.dtype).expand(k, d, d), upper=False)
        maha = torch.stack([(z @ a.T - a @ m).pow(2).sum(1) for a, m in zip(inverse, loc)])  # (k, n)
        logdet = tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        log_joint = logits[:, None] - 0.5 * maha - logdet[:, None] - 0.5 * d * math.log(2 * math.pi)
        norm = log_joint.logsumexp(0)
        loglik = float(norm.sum())
        resp = (log_joint - norm).exp()
        if (loglik - previous) / n < tolerance:
            break
        previous = loglik
    return logits, loc, tril, loglik


@SAMPLERS.register("flow")
class FlowSampler(LatentSampler):
    """z = m + s * f(u), u ~ N(0, I): ``layers`` affine coupling layers f (RealNVP; Pyro's ``affine_coupling``
    with ``hidden`` units), the halves of z swapped between layers, m and s the codes' mean and scale;
    fitted by Adam on log q(z), kept at the best held-out log-likelihood (checked every 100 steps; step 0,
    the diagonal Gaussian every layer starts as, included)."""

    kind = "flow"

    def __init__(self, latent_dim, layers=6, hidden=128, steps=4000, batch_size=512, lr=1e-3):
        super().__init__(latent_dim)
        if latent_dim < 2:
            raise UsageError(
                "the flow sampler needs a latent of 2 or more dimensions (coupling layers split z): use gmm"
            )
        self.layers = positive("layers", layers, integer=True)
        self.hidden = positive("hidden", hidden, integer=True)
        self.steps = positive("steps", steps, integer=True)
        self.batch_size = positive("batch_size", batch_size, integer=True)
        self.lr = positive("lr", lr)
        self.couplings = nn.ModuleList(
            T.affine_coupling(latent_dim, hidden_dims=[hidden, hidden]) for _ in range(layers)
        )
        self.register_buffer("shift", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def params(self):
        return {k: getattr(self, k) for k in ("latent_dim", "layers", "hidden", "steps", "batch_size", "lr")}

    def distribution(self):
        d = self.latent_dim
        swap = T.Permute(torch.arange(d - 1, -1, -1, device=self.shift.device))
        parts = []
        for i, c in enumerate(self.couplings):
            parts += [c] if i == 0 else [swap, c]
        parts.append(T.AffineTransform(self.shift, self.scale, event_dim=1))
        base = dist.Normal(torch.zeros(d, device=self.shift.device), 1.0).to_event(1)
        return dist.TransformedDistribution(base, parts)

    def fit(self, codes, seed=0, progress=False):
        z = self._check_codes(codes).float()
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for c in self.couplings:  # a fresh start of every layer, from the seed
                for m in c.modules():
                    if isinstance(m, nn.Linear):
                        m.reset_parameters()
                last = [m for m in c.modules() if isinstance(m, nn.Linear)][-1]
                nn.init.zeros_(last.weight)  # each layer starts as the identity (as Glow's do): the fit starts
                nn.init.zeros_(last.bias)  # at the codes' moment-matched diagonal Gaussian and only improves on it
        order = torch.randperm(z.shape[0], generator=g)
        held = max(1, z.shape[0] // 10)
        valid, train = z[order[:held]], z[order[held:]]
        self.shift.copy_(train.mean(0))
        self.scale.copy_(train.std(0).clamp_min(1e-6))
        optimizer = torch.optim.Adam(self.couplings.parameters(), lr=self.lr)
        with torch.no_grad():
            start = float(self.log_prob(valid).mean())
        best = (start, {k: v.clone() for k, v in self.state_dict().items()}, 0)
        bar = tqdm(range(self.steps), desc="flow: fitting q(z)", disable=not progress, leave=False)
        for step in bar:
            batch = train[torch.randint(train.shape[0], (min(self.batch_size, train.shape[0]),), generator=g)]
            loss = -self.log_prob(batch).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if (step + 1) % 100 == 0 or step + 1 == self.steps:
                with torch.no_grad():
                    score = float(self.log_prob(valid).mean())
                if score > best[0]:
                    best = (score, {k: v.clone() for k, v in self.state_dict().items()}, step + 1)
                bar.set_postfix(held_out=f"{score:.3f}")
        if not math.isfinite(best[0]):
            raise UsageError("the flow's fit diverged (no finite held-out log-likelihood): lower its lr")
        self.load_state_dict(best[1])
        self.fit_info = {"held_out_log_likelihood_per_code": best[0], "best_step": best[2]}
        return self


def build_sampler(kind, vae, **params):
    """The sampler ``kind`` (a name of ``SAMPLERS``, or a table ``{kind = ..., param = ...}``) for ``vae``'s latent."""
    spec = {"kind": kind, **params} if isinstance(kind, str) else dict(kind)
    name, options = SAMPLERS.check(spec, context=("latent_dim", "prior"))
    cls = SAMPLERS.get(name)
    if cls is PriorSampler:
        return PriorSampler(vae.latent_dim, vae.prior)
    check_posthoc(vae)
    return cls(vae.latent_dim, **options)


def save_sampler(sampler, path, **meta):
    """The sampler as tensors and plain values (``load_sampler`` reads it with ``weights_only=True``)."""
    blob = {
        "kind": sampler.kind,
        "params": sampler.params(),
        "state": {k: v.detach().cpu() for k, v in sampler.state_dict().items()},
        "fit": _plain(sampler.fit_info),
        **meta,
    }
    atomic_write(Path(path), lambda f: torch.save(blob, f))


def load_sampler(path):
    """(sampler, the saved entries) from ``save_sampler``'s file; a damaged file is refused with what to do."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        cls = SAMPLERS.get(blob["kind"])
        sampler = cls(**blob["params"])
        sampler.load_state_dict(blob["state"])
    except Exception as e:
        raise CheckpointError(
            f"{path} is not a readable sampler file ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            "delete it and it is fitted again"
        ) from e
    sampler.fit_info = blob.get("fit", {})
    return sampler, blob


def _plain(value):
    """A fit's record as values ``weights_only`` loading accepts (dicts, lists, numbers, strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if torch.is_tensor(value):
        return value.tolist()
    return value
