"""Every family against the same math hand-written in PyTorch: training steps and log p(x).

    PYRO_VAE_DATA=../shared/data python benchmarks/families.py [--steps 200] [--only vae,gmvae] [--memory] [--repeats 3]

Each row builds pyro-vae's model from its config (``build_run``: what ``pyro-vae train`` trains) and a
hand-written peer: a copy of the same networks with the same initial weights (so the arithmetic of the
networks is the same), the objective written out as tensors (the enumerated sum over a discrete latent as a
batched tensor, the same number of particles, the KL in closed form where pyro-vae's estimator takes it so)
and ``torch.optim.Adam(fused=True)``. Both sides train on the same batches, in blocks of 10 steps that take
turns (``throughput.py``'s interleaving: a slow spell of the machine hits both alike); each figure is the
median step time. Printed per row: images/s of each side, the ratio pyro-vae / hand-written (>= 1: pyro-vae
is as fast), and the path pyro-vae's step took (one compiled graph, or Pyro's eager trace).

``--eval``: log p(x) with K = 1000 importance samples on 200 test points (cifar: K = 100 on 100), ``evaluate``'s ``iwae_log_px``
against a hand-written importance sampler of the same model (same ratio rule).
``--check``: before timing, each row's two objectives on one batch, averaged over 30 draws (nats per point,
with their Monte Carlo standard errors): the two sides must compute the same number.
``--memory``: each side's peak resident memory over 20 steps, measured in a fresh process per side
(the growth of the process's high-water mark, ``ru_maxrss``, past building the model and data).

Rows (MNIST 28x28 unless said): vae (the default), iwae K = 5, cvae, m2 (enumeration over the 10 classes,
3000 labels), gmvae (enumeration, 10 components), hierarchical (Burda's 2-layer network), flow (the default
VAE with a 2-layer IAF posterior), full_normal (a full-covariance posterior), cifar (examples/configs/
cifar10.toml's residual conv VAE with discretized_logistic, on random 8-bit 32x32 colour images: speed does
not depend on the pictures).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F

import pyro_vae
from pyro_vae.config.build import build_run, load_config_data
from pyro_vae.data.memory import Data
from pyro_vae.evaluation.metrics import iwae_log_px
from pyro_vae.training.loop import epoch_generator
from pyro_vae.training.step import svi_step

ROOT = Path(__file__).resolve().parents[1]
LOG_2PI = math.log(2 * math.pi)

#: row -> config overrides (the family's own defaults fill in the rest, e.g. its estimator)
ROWS = {
    "vae": [],
    "iwae": ["train.elbo.kind=iwae", "train.elbo.num_particles=5"],
    "cvae": ["model.kind=cvae"],
    "m2": ["model.kind=m2", "data.labels=3000"],
    "gmvae": ["model.kind=gmvae"],
    "hierarchical": [
        "model.kind=hierarchical",
        "model.latent_dim=100",
        "model.encoder={kind='mlp', hidden=[200, 200], activation='tanh'}",
        "model.decoder={kind='mlp', hidden=[200, 200], activation='tanh'}",
        "model.layers=[{latent_dim=50, hidden=[100, 100], activation='tanh'}]",
    ],
    "flow": ["model.posterior={kind='flow', layers=2}"],
    "full_normal": ["model.posterior.kind=full_normal"],
    "cifar": [],  # examples/configs/cifar10.toml, see build()
}


# -- the hand-written side: plain tensors -----------------------------------------------------------
def bernoulli(logits, x):
    """log p(x|z) of a Bernoulli per pixel with these logits, summed over each image."""
    x = x.flatten(1)
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def discretized_logistic(out, x):
    """log P(x|z) of 8-bit pixels, a discretised logistic per pixel (Salimans et al. 2017), summed."""
    loc, raw = out.reshape(*out.shape[:-1], 2, *x.shape[1:]).unbind(-4)
    scale, h = F.softplus(raw) + 1e-3, 0.5 / 255
    plus, minus = (x - loc + h) / scale, (x - loc - h) / scale
    left = (plus + minus) < 0
    log_hi = F.logsigmoid(torch.where(left, plus, -minus))
    log_lo = F.logsigmoid(torch.where(left, minus, -plus))
    mid = log_hi + torch.log(-torch.expm1((log_lo - log_hi).clamp(max=-1e-7)))
    lp = torch.where(x < h, F.logsigmoid(plus), torch.where(x > 1 - h, F.logsigmoid(-minus), mid))
    return lp.flatten(-3).sum(-1)


def diag(head, h):
    """(loc, scale) of a diagonal normal head (``nn.posteriors.DiagonalNormal``) on features h."""
    loc, raw = head.linear(h).chunk(2, -1)
    return loc, F.softplus(raw) + head.min_scale


def normal_lp(z, loc, scale):
    return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * LOG_2PI).sum(-1)


def std_lp(z):
    return (-0.5 * z**2 - 0.5 * LOG_2PI).sum(-1)


def analytic_kl(loc, scale):
    return 0.5 * (loc**2 + scale**2 - 2 * scale.log() - 1).sum(-1)


def onehot(y, k, like):
    return F.one_hot(y, k).to(like.dtype)


def cat(a, b):
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(*shape, -1), b.expand(*shape, -1)], -1)


class Hand:
    """A family's math written out: ``loss(**inputs)`` (the negative objective summed over the data set's
    scale, as pyro-vae's estimator computes it) and ``log_w(x, K)``, (K, n) importance log-weights."""

    def __init__(self, vae, num_data, likelihood=bernoulli, particles=1):
        self.m, self.n_data, self.lik, self.K = vae, num_data, likelihood, particles

    def scale(self, x):
        return self.n_data / x.shape[0]


class HandVAE(Hand):
    """The default VAE under meanfield: E_q log p(x|z) - KL in closed form; ``particles`` > 1: the IWAE bound."""

    def loss(self, x, **_):
        m = self.m
        loc, scale = diag(m.posterior, m.encoder(x))
        if self.K == 1:
            z = loc + scale * torch.randn_like(loc)
            return -self.scale(x) * (self.lik(m.decoder(z), x) - analytic_kl(loc, scale)).sum()
        lw = self._log_w(x, loc, scale, self.K)
        return -self.scale(x) * (torch.logsumexp(lw, 0) - math.log(self.K)).sum()

    def _log_w(self, x, loc, scale, k):
        z = loc + scale * torch.randn(k, *loc.shape)
        return self.lik(self.m.decoder(z), x) + std_lp(z) - normal_lp(z, loc, scale)

    def log_w(self, x, k):
        return self._log_w(x, *diag(self.m.posterior, self.m.encoder(x)), k)


class HandFull(Hand):
    """Full covariance: z = mu + A eps, A lower-triangular; the KL by Monte Carlo (torch has no closed form
    against the prior's independent normal, so pyro-vae's meanfield samples it too)."""

    def _q(self, x):
        head = self.m.posterior
        L = head.latent_dim
        out = head.linear(self.m.encoder(x))
        loc, raw, below = out[..., :L], out[..., L : 2 * L], out[..., 2 * L :]
        tril = out.new_zeros(*out.shape[:-1], L, L)
        tril[..., head.rows, head.cols] = below
        diag_ = F.softplus(raw) + head.min_scale
        return loc, tril + torch.diag_embed(diag_), diag_

    def _log_w(self, x, k):
        loc, tril, d = self._q(x)
        eps = torch.randn(k, *loc.shape)
        z = loc + (tril @ eps.unsqueeze(-1)).squeeze(-1)
        log_q = std_lp(eps) - d.log().sum(-1)
        return self.lik(self.m.decoder(z), x) + std_lp(z) - log_q

    def loss(self, x, **_):
        return -self.scale(x) * self._log_w(x, 1).sum()

    def log_w(self, x, k):
        return self._log_w(x, k)


class HandFlow(Hand):
    """An IAF posterior: z_0 = mu + sigma eps, then per layer z <- m(z) + s(z) z (Pyro's affine autoregressive
    transform: log s clamped to [-5, 3]), the coordinates reversed between layers; KL by Monte Carlo."""

    def _log_w(self, x, k):
        m = self.m
        loc, scale = diag(m.posterior.base, m.encoder(x))
        eps = torch.randn(k, *loc.shape)
        z = loc + scale * eps
        log_q = normal_lp(z, loc, scale)
        flow = m.posterior.flow
        for i, t in enumerate(flow.flows):
            if i:
                z = z[..., flow.flip]
            mean, log_s = t.arn(z)
            log_s = log_s.clamp(-5.0, 3.0)
            z = mean + log_s.exp() * z
            log_q = log_q - log_s.sum(-1)
        return self.lik(m.decoder(z), x) + std_lp(z) - log_q

    def loss(self, x, **_):
        return -self.scale(x) * self._log_w(x, 1).sum()

    def log_w(self, x, k):
        return self._log_w(x, k)


class HandCVAE(Hand):
    """log p(x|y): q(z|x, y) on [features, onehot(y)], the decoder on [z, onehot(y)]; KL in closed form."""

    def loss(self, x, y, **_):
        m = self.m
        y1 = onehot(y, m.classes, x)
        loc, scale = diag(m.posterior, cat(m.encoder(x), y1))
        z = loc + scale * torch.randn_like(loc)
        return -self.scale(x) * (self.lik(m.decoder(cat(z, y1)), x) - analytic_kl(loc, scale)).sum()

    def log_w(self, x, k, y=None):
        m = self.m
        y1 = onehot(y, m.classes, x)
        loc, scale = diag(m.posterior, cat(m.encoder(x), y1))
        z = loc + scale * torch.randn(k, *loc.shape)
        return self.lik(m.decoder(cat(z, y1)), x) + std_lp(z) - normal_lp(z, loc, scale)


class HandGMVAE(Hand):
    """p(c) p(z|c) p(x|z), q(c|x) q(z|x, c); the ELBO's sum over c written as a batched tensor over the C
    components (TraceEnum_ELBO's enumeration: one z draw per component, the z terms by Monte Carlo)."""

    def _parts(self, x):
        m = self.m
        h = m.encoder(x)
        C = m.components
        every = torch.eye(C, dtype=x.dtype).unsqueeze(1)  # (C, 1, C)
        loc, scale = diag(m.posterior, cat(h, every))  # (C, n, L)
        ploc, pscale = m.prior.locs.unsqueeze(1), F.softplus(m.prior.raw_scales).unsqueeze(1) + 1e-4  # (C, 1, L)
        return h, loc, scale, ploc, pscale, C

    def loss(self, x, **_):
        m = self.m
        h, loc, scale, ploc, pscale, C = self._parts(x)
        log_qc = torch.log_softmax(m.classifier(h), -1)  # (n, C)
        z = loc + scale * torch.randn_like(loc)
        bound = self.lik(m.decoder(z), x) + normal_lp(z, ploc, pscale) - normal_lp(z, loc, scale)  # (C, n)
        elbo = (log_qc.exp() * (bound.T - math.log(C) - log_qc)).sum(-1)
        return -self.scale(x) * elbo.sum()

    def log_w(self, x, k):
        """c summed out as pyro-vae's evaluation does: one z_c ~ q(z|x, c) per component in each draw,
        w = sum_c p(c) p(x|z_c) p(z_c|c) / q(z_c|x, c)."""
        m = self.m
        h, loc, scale, ploc, pscale, C = self._parts(x)
        z = loc + scale * torch.randn(k, *loc.shape)  # (k, C, n, L)
        lw = self.lik(m.decoder(z), x) + normal_lp(z, ploc, pscale) - normal_lp(z, loc, scale)
        return torch.logsumexp(lw, 1) - math.log(C)


class HandM2(Hand):
    """Kingma et al.'s M2: unlabelled U(x) = sum_y q(y|x)[L(x, y) - log q(y|x)] with the sum over the 10 classes
    as a batched tensor, labelled w L(xs, ys) + a log q(ys|xs); L's z terms by Monte Carlo (enumeration)."""

    def _L(self, h, x, y1):
        m = self.m
        loc, scale = diag(m.posterior, cat(h, y1))
        z = loc + scale * torch.randn_like(loc)
        lp = self.lik(m.decoder(cat(z, y1)), x) + std_lp(z) - normal_lp(z, loc, scale)
        return lp - math.log(m.classes)

    def loss(self, x, xs, ys, num_labelled, **_):
        m = self.m
        C = m.classes
        h = m.encoder(x)
        log_qy = torch.log_softmax(m.classifier(h), -1)  # (n, C)
        every = torch.eye(C, dtype=x.dtype).unsqueeze(1)  # (C, 1, C)
        u = (log_qy.exp() * (self._L(h, x, every).T - log_qy)).sum(-1)
        hs = m.encoder(xs)
        w = m._labelled_weight(x, self.n_data, xs, num_labelled) * num_labelled / xs.shape[0]
        labelled = self._L(hs, xs, onehot(ys, C, xs))
        aux = m.aux_loss * torch.log_softmax(m.classifier(hs), -1).gather(-1, ys[:, None]).squeeze(-1)
        return -(self.scale(x) * u.sum() + w * labelled.sum() + num_labelled / xs.shape[0] * aux.sum())

    def log_w(self, x, k):
        """y summed out as pyro-vae's evaluation does: one z_y ~ q(z|x, y) per label in each draw,
        w = sum_y p(y) p(x|z_y, y) p(z_y) / q(z_y|x, y)."""
        m = self.m
        C = m.classes
        every = torch.eye(C, dtype=x.dtype).unsqueeze(1)  # (C, 1, C)
        loc, scale = diag(m.posterior, cat(m.encoder(x), every))  # (C, n, L)
        z = loc + scale * torch.randn(k, *loc.shape)  # (k, C, n, L)
        lw = self.lik(m.decoder(cat(z, every)), x) + std_lp(z) - normal_lp(z, loc, scale)
        return torch.logsumexp(lw, 1) - math.log(C)


class HandHierarchical(Hand):
    """Burda's 2-layer chain: q(z1|x) q(z2|z1), p(z2) p(z1|z2) p(x|z1), every term by Monte Carlo (trace)."""

    def _log_w(self, x, k):
        m = self.m
        loc, scale = diag(m.posterior, m.encoder(x))
        z1 = loc + scale * torch.randn(k, *loc.shape)
        log_q = normal_lp(z1, loc, scale)
        zs, log_p = [z1], 0.0
        for up in m.up:
            uloc, uscale = diag(up.head, up.net(zs[-1]))
            zs.append(uloc + uscale * torch.randn_like(uloc))
            log_q = log_q + normal_lp(zs[-1], uloc, uscale)
        for down, z, above in zip(m.down, zs, zs[1:]):
            dloc, dscale = diag(down.head, down.net(above))
            log_p = log_p + normal_lp(z, dloc, dscale)
        return self.lik(m.decoder(z1), x) + log_p + std_lp(zs[-1]) - log_q

    def loss(self, x, **_):
        return -self.scale(x) * self._log_w(x, 1).sum()

    def log_w(self, x, k):
        return self._log_w(x, k)


HANDS = {
    "vae": HandVAE,
    "iwae": HandVAE,
    "cvae": HandCVAE,
    "m2": HandM2,
    "gmvae": HandGMVAE,
    "hierarchical": HandHierarchical,
    "flow": HandFlow,
    "full_normal": HandFull,
    "cifar": HandVAE,
}


# -- building both sides --------------------------------------------------------------------------
def colour_data(n_train=5000, n_test=500, seed=0):
    """Random 8-bit 3x32x32 images: the shape and value set of CIFAR-10, which speed alone depends on."""
    g = torch.Generator().manual_seed(seed)
    make = lambda n: torch.randint(0, 256, (n, 3, 32, 32), generator=g).float() / 255  # noqa: E731
    return Data(make(n_train), make(n_test), None, None, "none")


def build(row, mnist, extra=(), colour=None):
    """(cfg, parts) of a row: pyro-vae's run, built as ``pyro-vae train`` builds it (``extra``: more overrides)."""
    if row == "cifar":
        cfg = pyro_vae.load_config(ROOT / "examples/configs/cifar10.toml", list(extra))
        data = colour if colour is not None else colour_data()
    else:
        cfg = pyro_vae.load_config(overrides=[*ROWS[row], *extra])
        data = mnist
    pyro.clear_param_store()
    parts = build_run(cfg, data)
    parts.vae.name = f"{row}"
    return cfg, parts


class Side:
    """One side of a row: its step on the row's shared batch stream, its step times."""

    def __init__(self, name, step, inputs, batch_size):
        self.name, self.step, self.inputs, self.batch_size = name, step, inputs, batch_size
        self.seconds = []

    def run(self, steps):
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step(next(self.inputs))
        return (time.perf_counter() - t0) / steps

    @property
    def images_per_second(self):
        return self.batch_size / statistics.median(self.seconds)


def stream(cfg, parts):
    """The training steps' keyword arguments, epoch after epoch, as the loop forms them."""
    data, vae = parts.data, parts.vae
    epoch, step = 0, 0
    while True:
        epoch += 1
        g = epoch_generator(cfg["seed"], epoch, torch.device("cpu"))
        for batch in data.batches(cfg["data"]["batch_size"], g, labels=vae.needs_labels):
            yield parts.inputs(batch, step)
            step += 1


def sides(row, cfg, parts):
    vae, elbo, opt = parts.vae, parts.elbo, parts.optimizer
    n = parts.data.num_train

    def pyro_step(inputs):
        svi_step(vae.model, vae.guide, elbo, opt, num_data=n, beta=1.0, **inputs)

    hand_model = copy.deepcopy(vae)  # the same networks and initial weights
    lik = discretized_logistic if row == "cifar" else bernoulli
    particles = cfg["train"]["elbo"].get("num_particles", 1) if row == "iwae" else 1
    hand = HANDS[row](hand_model, n, lik, particles)
    hand_opt = torch.optim.Adam(hand_model.parameters(), lr=cfg["train"]["optimizer"]["lr"], fused=True)

    def hand_step(inputs):
        hand_opt.zero_grad(set_to_none=True)
        hand.loss(**inputs).backward()
        hand_opt.step()

    b = cfg["data"]["batch_size"]
    return (
        Side("pyro-vae", pyro_step, stream(cfg, parts), b),
        Side("hand-written", hand_step, stream(cfg, parts), b),
        hand,
    )


def agreement(cfg, parts, hand, draws=30):
    inputs = next(stream(cfg, parts))
    n, vae = parts.data.num_train, parts.vae
    out = []
    with torch.no_grad():
        for f in (
            lambda: parts.elbo.loss(vae.model, vae.guide, num_data=n, beta=1.0, **inputs),
            lambda: hand.loss(**inputs).item(),
        ):
            v = torch.tensor([float(f()) for _ in range(draws)]) / n
            out.append((v.mean().item(), (v.std() / math.sqrt(draws)).item()))
    return out


def measure(pair, steps, block=10, warmup=20):
    for s in pair:
        s.run(warmup)
    for i in range(0, steps, block):
        for s in pair if (i // block) % 2 == 0 else pair[::-1]:
            s.seconds += [s.run(block)] * block


def path(parts):
    return getattr(parts.elbo, "step_path", None) or f"eager ({type(parts.elbo).__name__})"


@torch.no_grad()
def eval_ratio(row, cfg, parts, hand, k=1000, points=200, repeats=1):
    """(pyro-vae s, hand-written s, their log p(x) means) for log p(x) with K samples on ``points`` test points."""
    vae, data = parts.vae, parts.data
    x = data.test[:points]
    y = {"y": data.test_labels[:points]} if vae.conditional else {}
    hand_labels = {"y": data.test_labels[:points]} if row == "cvae" else {}

    def hand_log_px():
        out = []
        for xb, i in zip(x.split(100), range(0, points, 100)):
            lab = {"y": hand_labels["y"][i : i + 100]} if hand_labels else {}
            total = None
            for c in range(0, k, 100):
                part = torch.logsumexp(hand.log_w(xb, min(100, k - c), **lab), 0)
                total = part if total is None else torch.logaddexp(total, part)
            out.append(total - math.log(k))
        return torch.cat(out)

    times = {"pyro": [], "hand": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        a = iwae_log_px(vae, x, k, **y)
        times["pyro"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = hand_log_px()
        times["hand"].append(time.perf_counter() - t0)
    return statistics.median(times["pyro"]), statistics.median(times["hand"]), a.mean().item(), b.mean().item()


def _status_kb(field):
    """A field of /proc/self/status in kB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def peak_memory(row, side, steps=20):
    """Run in a fresh process: how far resident memory rises above its level after building the model and
    the data, at its highest over ``steps`` steps (MB). The high-water mark is reset first (Linux:
    ``/proc/self/clear_refs``), so the data's loading, whose transient peak is larger, does not hide it."""
    mnist = None if row == "cifar" else load_config_data(pyro_vae.load_config())
    cfg, parts = build(row, mnist)
    pair = sides(row, cfg, parts)
    s = pair[0] if side == "pyro-vae" else pair[1]
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS now
    before = _status_kb("VmRSS")
    s.run(steps)
    return (_status_kb("VmHWM") - before) / 1024


def median_row(lines):
    """One row over repeated runs: the median of each figure (the ratio's own median, not a ratio of
    medians), the lowest and highest ratio, the first run's other entries."""
    out = dict(lines[0])
    for key in ("pyro", "hand", "ratio"):
        out[key] = statistics.median(line[key] for line in lines)
    out["low"], out["high"] = min(line["ratio"] for line in lines), max(line["ratio"] for line in lines)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200, help="timed steps per side and row (the median is reported)")
    p.add_argument("--only", help="comma-separated rows (default: all): " + ", ".join(ROWS))
    p.add_argument("--eval", action="store_true", help="also time log p(x) with K = 1000")
    p.add_argument("--check", action="store_true", help="first show that both sides compute the same objective")
    p.add_argument("--memory", action="store_true", help="also measure each side's peak memory (fresh processes)")
    p.add_argument("--repeats", type=int, default=1, help="whole interleaved runs; the table gives each row's median")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--memory-of", nargs=2, metavar=("ROW", "SIDE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_of:
        print(json.dumps(peak_memory(*args.memory_of)))
        return
    rows = args.only.split(",") if args.only else list(ROWS)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(ROWS)}")
    print(
        f"torch {torch.__version__}, pyro {pyro.__version__}, {torch.get_num_threads()} threads; {args.steps} timed steps"
    )
    mnist = load_config_data(pyro_vae.load_config()) if any(r != "cifar" for r in rows) else None
    table = []
    for repeat, row in ((r, row) for r in range(args.repeats) for row in rows):
        cfg, parts = build(row, mnist)
        pyro_side, hand_side, hand = sides(row, cfg, parts)
        if args.check:
            (a, ea), (b, eb) = agreement(cfg, parts, hand)
            print(f"{row:13s} objective: pyro-vae {a:.3f} +- {ea:.3f}, hand-written {b:.3f} +- {eb:.3f} nats per point")
        measure([pyro_side, hand_side], args.steps)
        ratio = pyro_side.images_per_second / hand_side.images_per_second
        line = {
            "row": row,
            "pyro": pyro_side.images_per_second,
            "hand": hand_side.images_per_second,
            "ratio": ratio,
            "path": path(parts),
        }
        if args.eval and repeat == 0:
            tp, th, lp, lh = eval_ratio(row, cfg, parts, hand, **({"k": 100, "points": 100} if row == "cifar" else {}))
            line.update(eval_ratio=th / tp, eval_pyro_s=tp, eval_hand_s=th, log_px_pyro=lp, log_px_hand=lh)
        if args.memory and repeat == 0:
            for side in ("pyro-vae", "hand-written"):
                out = subprocess.run(
                    [sys.executable, __file__, "--memory-of", row, side], capture_output=True, text=True, check=True
                )
                line[f"mem_{side}"] = json.loads(out.stdout.strip().splitlines()[-1])
        table.append(line)
        extra = f"  log p(x) K=1000: ratio {line['eval_ratio']:.2f}" if "eval_ratio" in line else ""
        print(
            f"{row:13s} pyro-vae {line['pyro']:8,.0f}  hand-written {line['hand']:8,.0f} images/s  "
            f"ratio {ratio:.2f}  [{line['path']}]{extra}",
            flush=True,
        )
    table = [median_row([r for r in table if r["row"] == row]) for row in rows]
    print(
        "\n| row | pyro-vae images/s | hand-written images/s | ratio | step path |"
        + (" log p(x) ratio |" if args.eval else "")
        + (" peak MB (pyro / hand) |" if args.memory else "")
    )
    print("|---|---|---|---|---|" + ("---|" if args.eval else "") + ("---|" if args.memory else ""))
    for r in table:
        ratio = f"{r['ratio']:.2f}" + (f" ({r['low']:.2f}-{r['high']:.2f})" if args.repeats > 1 else "")
        cells = [r["row"], f"{r['pyro']:,.0f}", f"{r['hand']:,.0f}", ratio, r["path"]]
        if args.eval:
            cells.append(f"{r['eval_ratio']:.2f}")
        if args.memory:
            cells.append(f"{r['mem_pyro-vae']:.0f} / {r['mem_hand-written']:.0f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
