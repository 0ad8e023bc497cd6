"""Every prior x likelihood x posterior in the catalogue builds, traces and trains."""

import itertools
import math

import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae import LIKELIHOODS, POSTERIORS, PRIORS, ConfigError, build_elbo, build_optimizer, build_vae, load_data
from pyro_vae.nn.likelihoods import DiscretizedLogistic

from ..conftest import small_config

PRIOR_SPECS = [
    "{kind='standard_normal'}",
    "{kind='learned_normal'}",
    "{kind='mixture', components=3}",
    "{kind='vamp', pseudo_inputs=5}",
    "{kind='flow', layers=2}",
    "{kind='student_t', df=4.0}",
    "{kind='laplace'}",
]
LIKELIHOOD_SPECS = [
    "{kind='bernoulli'}",
    "{kind='continuous_bernoulli'}",
    "{kind='gaussian', scale=0.2}",
    "{kind='gaussian', scale='learned'}",
    "{kind='gaussian', scale='decoder'}",
    "{kind='laplace', scale=0.2}",
    "{kind='laplace', scale='learned'}",
    "{kind='discretized_logistic'}",
]
POSTERIOR_SPECS = [
    "{kind='diagonal_normal'}",
    "{kind='full_normal'}",
    "{kind='flow', layers=2}",
    "{kind='flow', layers=2, conditional=true}",
]


def test_the_catalogue_is_complete():
    """The lists above cover every registered kind, so a new kind cannot go untested."""
    for registry, specs in ((PRIORS, PRIOR_SPECS), (LIKELIHOODS, LIKELIHOOD_SPECS), (POSTERIORS, POSTERIOR_SPECS)):
        assert {pyro_value(s)["kind"] for s in specs} == set(registry.names())


def pyro_value(spec):
    from pyro_vae.config.load import parse_value

    return parse_value(spec)


@pytest.fixture(scope="module")
def grey():
    return load_data("synthetic", binarize="none")


@pytest.fixture(scope="module")
def binary():
    return load_data("synthetic", binarize="static")


@pytest.mark.parametrize(
    "prior, likelihood, posterior", list(itertools.product(PRIOR_SPECS, LIKELIHOOD_SPECS, POSTERIOR_SPECS))
)
def test_combination_traces_and_trains(prior, likelihood, posterior, grey, binary):
    data = binary if "'bernoulli'" in likelihood else grey
    cfg = small_config(
        f"model.prior={prior}",
        f"model.likelihood={likelihood}",
        f"model.posterior={posterior}",
        "train.elbo.kind=trace",
        "train.optimizer.lr=1e-2",
    )
    torch.manual_seed(0)
    vae = build_vae(cfg, data.data_shape)
    x = data.train[:128]
    vae.likelihood.check_data(x)
    # trace shapes and finite log-probs
    guide_tr = poutine.trace(vae.guide).get_trace(x, num_data=1000)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x, num_data=1000)
    for tr in (model_tr, guide_tr):
        tr.compute_log_prob()
        z = tr.nodes["z"]
        assert z["value"].shape == (128, 4) and z["fn"].event_shape == (4,) and z["log_prob"].shape == (128,)
        assert torch.isfinite(z["log_prob"]).all()
    assert model_tr.nodes["x"]["fn"].event_shape == (1, 8, 8)
    assert torch.isfinite(model_tr.nodes["x"]["log_prob"]).all()
    assert vae.model(num_samples=3).shape == (3, 1, 8, 8)
    # 20 SVI steps: finite and decreasing
    elbo, opt = build_elbo(cfg), build_optimizer(cfg, vae.parameters())
    losses = []
    for step in range(20):
        opt.zero_grad()
        with pyro.validation_enabled(step == 0):
            losses.append(elbo.loss_and_grads(vae.model, vae.guide, x) / 128)
        opt.step()
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses


def _kl_mc(q, p, samples=20000):
    z = q.rsample((samples,))
    d = q.log_prob(z) - p.log_prob(z)
    return d.mean(0), d.std(0) / math.sqrt(samples)


@pytest.mark.parametrize("prior", ["{kind='standard_normal'}", "{kind='learned_normal'}"])
def test_analytic_kl_matches_monte_carlo(prior, grey):
    cfg = small_config(f"model.prior={prior}", "model.likelihood={kind='gaussian'}")
    vae = build_vae(cfg, grey.data_shape)
    with torch.no_grad():
        if prior.endswith("'learned_normal'}"):  # move the prior away from N(0, I)
            vae.prior.loc.fill_(0.3)
            vae.prior.raw_scale.fill_(-0.5)
        x = grey.train[:8]
        q, p = vae.q(x), vae.prior(8)
        analytic = torch.distributions.kl_divergence(q, p)
        mc, se = _kl_mc(q, p)
    assert (analytic - mc).abs().max() < 4 * se.max()


def test_full_normal_kl_against_the_closed_form(grey):
    """KL(N(m, S) || N(0, I)) = 1/2 (tr S + m^T m - L - log det S); S = A A^T, A from the encoder."""
    vae = build_vae(small_config("model.posterior={kind='full_normal'}"), grey.data_shape)
    with torch.no_grad():
        vae.posterior.linear.weight.normal_(0, 0.3)  # a non-diagonal A
        q, p = vae.q(grey.train[:8]), vae.prior(8)
        A = q.scale_tril
        assert (A.tril(-1).abs() > 0).any()
        S = A @ A.transpose(-1, -2)
        closed = 0.5 * (S.diagonal(dim1=-2, dim2=-1).sum(-1) + (q.loc**2).sum(-1) - 4 - torch.logdet(S))
        mc, se = _kl_mc(q, p)
        torch.testing.assert_close(
            q.rsample((200000,)).var(0).mean(0), S.diagonal(dim1=-2, dim2=-1).mean(0), rtol=0.02, atol=0.0
        )
    assert (closed - mc).abs().max() < 4 * se.max()


def test_laplace_likelihood_is_l1(grey):
    """-log Laplace(x; mu, b) = ||x - mu||_1 / b + D log(2 b)."""
    vae = build_vae(small_config("model.likelihood={kind='laplace', scale=0.25}"), grey.data_shape)
    x, out = grey.train[:5], torch.randn(5, 64)
    nll = -vae.likelihood(out).log_prob(x)
    torch.testing.assert_close(
        nll, (x.flatten(1) - out).abs().sum(-1) / 0.25 + 64 * math.log(0.5), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("loc, scale", [(0.5, 0.1), (0.0, 0.01), (1.0, 0.3), (0.2, 1e-3), (3.0, 0.05), (-2.0, 2.0)])
def test_discretized_logistic_is_a_distribution_on_256_levels(loc, scale):
    levels = torch.arange(256.0) / 255
    d = DiscretizedLogistic(torch.full((256,), loc), torch.full((256,), scale))
    logp = d.log_prob(levels)
    assert torch.isfinite(logp).all()
    assert abs(float(logp.exp().sum()) - 1.0) < 1e-4
    # agrees with the float64 CDF difference wherever that is accurate
    F = lambda t: torch.sigmoid(t.double())  # noqa: E731
    h = 0.5 / 255
    p64 = F((levels + h - loc) / scale) - F((levels - h - loc) / scale)
    p64[0], p64[-1] = F((levels[0] + h - loc) / scale), 1 - F((levels[-1] - h - loc) / scale)
    ok = p64 > 1e-6
    torch.testing.assert_close(logp.double()[ok], p64[ok].log(), rtol=1e-4, atol=1e-4)
    s = d.sample((1000,))
    assert set((s * 255).round().unique().tolist()) <= set(range(256))


def test_vamp_prior_is_the_mixture_of_pseudo_posteriors(grey):
    vae = build_vae(small_config("model.prior={kind='vamp', pseudo_inputs=6}"), grey.data_shape)
    names = list(vae.state_dict())
    assert "prior.pseudo" in names and not any(
        n.startswith("prior.encoder") or n.startswith("prior._vae") for n in names
    )
    z = torch.randn(10, 4)
    q = vae.q(vae.prior.pseudo)  # batch (6,)
    expected = torch.logsumexp(q.log_prob(z.unsqueeze(1)), dim=1) - math.log(6)
    torch.testing.assert_close(vae.prior(10).log_prob(z), expected)


def test_single_component_mixture_is_a_normal(grey):
    vae = build_vae(small_config("model.prior={kind='mixture', components=1}"), grey.data_shape)
    z = torch.randn(7, 4)
    normal = torch.distributions.Normal(vae.prior.locs[0], torch.nn.functional.softplus(vae.prior.raw_scales[0]))
    torch.testing.assert_close(vae.prior(7).log_prob(z), normal.log_prob(z).sum(-1))


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("model.prior={kind='mixture', components=0}", "components must be an integer >= 1"),
        ("model.prior={kind='student_t', df=-1.0}", "df must be a positive number"),
        ("model.likelihood={kind='gaussian', scale='big'}", "positive number, \"learned\" or \"decoder\""),
        ("model.likelihood={kind='gaussian', sigma=1.0}", "valid parameters: scale, min_scale"),
        ("model.posterior={kind='flow', layers=0}", "layers must be an integer >= 1"),
        ("model.posterior={kind='full_rank'}", "valid kinds: diagonal_normal, flow, full_normal"),
    ],
)
def test_bad_component_settings(override, pattern, grey):
    with pytest.raises(ConfigError, match=pattern):
        build_vae(small_config(override), grey.data_shape)


def test_likelihood_supports(grey):
    from pyro_vae import DataError

    x = grey.train[:4]
    dl = build_vae(small_config("model.likelihood={kind='discretized_logistic'}"), grey.data_shape).likelihood
    dl.check_data(x)
    with pytest.raises(DataError, match="8-bit"):
        dl.check_data(x + 0.001)
    cb = build_vae(small_config("model.likelihood={kind='continuous_bernoulli'}"), grey.data_shape).likelihood
    with pytest.raises(DataError, match=r"needs data in \[0, 1\]"):
        cb.check_data(x - 1)


@pytest.mark.parametrize("prior, posterior", list(itertools.product(PRIOR_SPECS, POSTERIOR_SPECS)))
def test_meanfield_falls_back_to_monte_carlo_kl(prior, posterior, binary):
    """The default estimator uses the closed-form KL where torch has one, Monte Carlo elsewhere."""
    cfg = small_config(f"model.prior={prior}", f"model.posterior={posterior}")
    vae = build_vae(cfg, binary.data_shape)
    elbo, x = build_elbo(cfg), binary.train[:64]
    with pyro.validation_enabled(False):
        losses = torch.tensor([elbo.loss(vae.model, vae.guide, x) for _ in range(100)])
        trace = pyro.infer.Trace_ELBO(max_plate_nesting=1)
        mc = torch.tensor([trace.loss(vae.model, vae.guide, x) for _ in range(100)])
    assert torch.isfinite(losses).all()
    se = (losses.var() / 100 + mc.var() / 100).sqrt()
    assert abs(losses.mean() - mc.mean()) < 4 * se  # the same ELBO in expectation


@pytest.mark.parametrize("scale", [1.0, 0.1, 0.01])
def test_diagonal_normal_mixture_matches_mixture_same_family(scale):
    from pyro_vae.nn.priors import DiagonalNormalMixture

    g = torch.Generator().manual_seed(0)
    logits, locs = torch.randn(7, generator=g), torch.randn(7, 5, generator=g)
    scales = scale * torch.rand(7, 5, generator=g).add(0.5)
    ours = DiagonalNormalMixture(logits, locs, scales, (3,))
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=logits),
        torch.distributions.Independent(torch.distributions.Normal(locs, scales), 1),
    ).expand((3,))
    z = locs[torch.randint(7, (4, 3), generator=g)] + scale * torch.randn(4, 3, 5, generator=g)
    torch.testing.assert_close(ours.log_prob(z), ref.log_prob(z), rtol=1e-5, atol=1e-4)
    s = ours.sample((2000,))
    assert s.shape == (2000, 3, 5)
    torch.testing.assert_close(s.mean((0, 1)), (logits.softmax(0)[:, None] * locs).sum(0), rtol=0, atol=0.1)


@pytest.mark.parametrize("conditional", [False, True])
def test_a_conditional_iaf_depends_on_x_through_its_flow(conditional):
    """With the base q0(z|x) made the same for every x (its weights zeroed), a shared IAF gives one q for
    all x, a conditional IAF (Kingma et al. 2016) a different q per x: log q of the same z differs."""
    from pyro_vae.nn.posteriors import FlowPosterior

    torch.manual_seed(0)
    post = FlowPosterior(in_features=6, latent_dim=3, layers=2, conditional=conditional)
    with torch.no_grad():
        post.base.linear.weight.zero_()
    h = torch.randn(2, 6)
    q = post(h)
    z = torch.randn(5, 1, 3).expand(5, 2, 3).clone()  # the same z for both x, not the flow's own samples
    log_q = q.log_prob(z)
    assert log_q.shape == (5, 2) and torch.isfinite(log_q).all()
    assert torch.allclose(log_q[:, 0], log_q[:, 1]) != conditional
    # sampling and density agree in shape with particles in front; the density of its samples is finite
    draws = q.rsample((4,))
    assert draws.shape == (4, 2, 3) and torch.isfinite(q.log_prob(draws)).all()
    # the conditioned nets are trained through the context
    q.log_prob(z).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in post.flow.parameters())


def test_the_standard_normal_priors_kl_is_the_general_normal_kl():
    """KL(q || N(0, I)) by its short form (what meanfield uses on the default model) equals torch's
    Normal-Normal closed form, and the Monte Carlo mean of log q - log p (its definition)."""
    import pyro.distributions as dist

    torch.manual_seed(0)
    prior = PRIORS.build({"kind": "standard_normal"}, latent_dim=3)(4)
    q = dist.Normal(torch.randn(4, 3), torch.rand(4, 3) + 0.2).to_event(1)
    short = torch.distributions.kl_divergence(q, prior)
    general = torch.distributions.kl_divergence(q, dist.Normal(torch.zeros(4, 3), torch.ones(4, 3)).to_event(1))
    assert short.shape == (4,) and torch.allclose(short, general, rtol=1e-6, atol=1e-6)
    z = q.sample((200_000,))
    log_ratio = q.log_prob(z) - prior.log_prob(z)
    se = log_ratio.std(0) / math.sqrt(z.shape[0])
    assert ((log_ratio.mean(0) - short).abs() < 5 * se).all()


def test_the_posteriors_normal_draws_what_torchs_normal_draws():
    """posteriors.Normal samples eps with one randn: the same numbers as dist.Normal, eager and traced."""
    import pyro.distributions as dist

    from pyro_vae.nn.posteriors import Normal

    loc, scale = torch.randn(5, 3), torch.rand(5, 3) + 0.1
    for shape in ((), (4,)):
        torch.manual_seed(3)
        ours = Normal(loc, scale).rsample(shape)
        torch.manual_seed(3)
        assert torch.equal(ours, dist.Normal(loc, scale).rsample(shape))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notice
        traced = torch.jit.trace(lambda m, s: Normal(m, s).rsample(), (loc, scale), check_trace=False)
    torch.manual_seed(4)
    a = traced(loc, scale)
    torch.manual_seed(4)
    assert torch.equal(a, dist.Normal(loc, scale).rsample())


def test_the_full_normal_reads_eps_at_its_draw_and_equals_torchs_multivariate_normal():
    """CholeskyNormal draws what MultivariateNormal draws; log q at its own draw, from eps, equals torch's
    solve, with the same gradients for the lower-triangular factor and the mean; another value is solved."""
    import pyro.distributions as dist

    from pyro_vae.nn.posteriors import CholeskyNormal

    torch.manual_seed(0)
    loc = torch.randn(5, 4, requires_grad=True)
    tril = (torch.randn(5, 4, 4).tril(-1) + torch.diag_embed(torch.rand(5, 4) + 0.5)).requires_grad_()
    out = []
    for family in (CholeskyNormal, dist.MultivariateNormal):
        torch.manual_seed(1)
        q = family(loc, scale_tril=tril)
        z = q.rsample((3,))
        lp = q.log_prob(z)
        grads = torch.autograd.grad(lp.sum() + z.pow(2).sum(), [loc, tril])
        out.append((z, lp, grads[0], grads[1].tril(), q.log_prob(z.detach() + 0.1)))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_full_normal_training_step_is_one_graph(synthetic):
    from ..infer.test_compiled import assert_same_step, one_graph_steps

    cfg = small_config("model.posterior={kind='full_normal'}")
    vae = build_vae(cfg, synthetic.data_shape)
    elbo, eager = build_elbo(cfg), build_elbo(small_config("train.elbo.kind=meanfield"))
    x = synthetic.example_batch(32)
    with pyro.validation_enabled(False):
        for seed in range(3):
            assert_same_step(elbo, eager, list(vae.parameters()), vae.model, vae.guide, x, seed)
    assert len(one_graph_steps(elbo)) == 1 and elbo.step_path == "one graph (forward and backward)"


@pytest.mark.parametrize("x_shape", [(3, 4, 6), (4, 6), (6,)])
def test_the_bernoulli_likelihood_equals_torchs_whatever_broadcasts(x_shape):
    """x broadcast against more logits (the fused cross-entropy), the same shape (two reductions), or x larger
    than the logits: each equals torch's Bernoulli summed over the event."""
    import pyro.distributions as dist

    from pyro_vae.nn.likelihoods import Bernoulli, IndependentBernoulli

    torch.manual_seed(0)
    logits = torch.randn(4, 6)
    x = (torch.rand(x_shape) < 0.5).float()
    got = IndependentBernoulli(Bernoulli(logits, validate_args=False), 1).log_prob(x)
    torch.testing.assert_close(got, dist.Bernoulli(logits=logits).to_event(1).log_prob(x))
