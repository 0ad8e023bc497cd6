"""The compiled (JIT) estimators: one graph per model, beta as an input, draw-for-draw equal to eager."""

import itertools
import warnings

import pyro
import pytest
import torch

from pyro_vae import build_elbo, build_optimizer, build_vae
from pyro_vae.training.step import svi_step

from ..conftest import small_config
from ..nn.test_catalogue import LIKELIHOOD_SPECS, POSTERIOR_SPECS, PRIOR_SPECS, grey, pyro_value  # noqa: F401

PAIRS = [("jit_meanfield", "meanfield"), ("jit_trace", "trace")]


def loss_and_grads(elbo, vae, x, seed, model=None, beta=1.0):
    pyro.set_rng_seed(seed)
    loss = elbo.differentiable_loss(model or vae.model, vae.guide, x, num_data=1000, beta=beta)
    return loss.detach(), torch.autograd.grad(loss, list(vae.parameters()), allow_unused=True)


def assert_same(elbo, eager, vae, x, seed, beta=1.0):
    a, ga = loss_and_grads(elbo, vae, x, seed, beta=beta)
    b, gb = loss_and_grads(eager, vae, x, seed, beta=beta)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-3)
    for u, v in zip(ga, gb):
        if u is None or v is None:
            assert u is None and v is None
        else:
            torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("jit,plain", PAIRS)
def test_compiled_equals_eager_draw_for_draw_for_every_beta(jit, plain, synthetic):
    vae = build_vae(small_config(), synthetic.data_shape)
    elbo, eager = (
        build_elbo(small_config(f"train.elbo.kind={jit}")),
        build_elbo(small_config(f"train.elbo.kind={plain}")),
    )
    x = synthetic.example_batch(32)
    with pyro.validation_enabled(False):
        for seed, beta in enumerate([1.0, 0.25, 3.0, 0.0, 1.0]):
            assert_same(elbo, eager, vae, x, seed, beta)
    assert len(elbo._graphs) == 1  # beta is a graph input: one graph serves every value


def test_beta_changes_the_compiled_loss(synthetic):
    """A warm-up must reach the graph: the loss at beta = 0.5 differs from the loss at beta = 1."""
    vae = build_vae(small_config(), synthetic.data_shape)
    elbo = build_elbo(small_config("train.elbo.kind=jit_meanfield"))
    x = synthetic.example_batch(32)
    with pyro.validation_enabled(False):
        losses = []
        for beta in (1.0, 0.5):
            losses.append(loss_and_grads(elbo, vae, x, seed=0, beta=beta)[0])
    assert losses[1] < losses[0] - 1.0  # the KL term, halved


def test_one_graph_for_a_whole_run(synthetic):
    """``vae.model`` is a new bound method each step; Pyro keys on its id and would recompile."""
    cfg = small_config()
    vae = build_vae(cfg, synthetic.data_shape)
    elbo, opt = build_elbo(cfg), build_optimizer(cfg, vae.parameters())
    assert cfg["train"]["elbo"]["kind"] == "jit_meanfield"  # the default is the compiled estimator
    g = torch.Generator().manual_seed(0)
    losses = [
        svi_step(vae.model, vae.guide, elbo, opt, x, synthetic.num_train, validate=i == 0)
        for i, x in enumerate(synthetic.batches(50, g))
    ]
    assert len(losses) > 5 and all(torch.isfinite(torch.tensor(losses)))
    assert len(elbo._graphs) == 1
    assert sum(losses[-3:]) < sum(losses[:3])


def test_validated_calls_run_uncompiled(small_vae, synthetic):
    elbo = build_elbo(small_config())
    with pyro.validation_enabled(True):
        elbo.loss_and_grads(small_vae.model, small_vae.guide, synthetic.example_batch(10))
    assert not elbo._graphs


def test_a_cleared_param_store_recompiles(small_vae, synthetic):
    elbo = build_elbo(small_config())
    x = synthetic.example_batch(10)
    with pyro.validation_enabled(False):
        elbo.loss(small_vae.model, small_vae.guide, x)
        pyro.clear_param_store()
        assert torch.isfinite(torch.tensor(elbo.loss(small_vae.model, small_vae.guide, x)))
    assert len(elbo._graphs) == 1


def test_an_untraceable_model_runs_uncompiled_with_a_warning(small_vae, synthetic):
    def model(x, num_data=None, beta=1.0):
        if torch.jit.is_tracing():
            raise RuntimeError("no tracing here")
        return small_vae.model(x, num_data, beta=beta)

    elbo, eager = build_elbo(small_config()), build_elbo(small_config("train.elbo.kind=meanfield"))
    x = synthetic.example_batch(10)
    with pyro.validation_enabled(False):
        with pytest.warns(RuntimeWarning, match="could not compile.*no tracing here"):
            first = loss_and_grads(elbo, small_vae, x, 0, model)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once
            again = loss_and_grads(elbo, small_vae, x, 1, model)[0]
        assert first == loss_and_grads(eager, small_vae, x, 0, model)[0]
        assert again == loss_and_grads(eager, small_vae, x, 1, model)[0]


@pytest.mark.parametrize(
    "prior,likelihood,posterior", list(itertools.product(PRIOR_SPECS, LIKELIHOOD_SPECS, POSTERIOR_SPECS))
)
def test_every_combination_compiles_and_matches_eager(prior, likelihood, posterior, synthetic, grey):
    """The whole cross product (224 cases, about a minute): a traced backward wrong for one pairing of parts
    would give silently wrong gradients, and single swaps cannot see an interaction."""
    check_catalogue_case(prior, likelihood, posterior, synthetic, grey)


def check_catalogue_case(prior, likelihood, posterior, synthetic, grey):
    binary = pyro_value(likelihood)["kind"] == "bernoulli"
    data = synthetic if binary else grey
    cfg = small_config(f"model.prior={prior}", f"model.likelihood={likelihood}", f"model.posterior={posterior}")
    vae = build_vae(cfg, data.data_shape)
    x = data.example_batch(16)
    for jit, plain in PAIRS:
        elbo = build_elbo(small_config(f"train.elbo.kind={jit}"))
        eager = build_elbo(small_config(f"train.elbo.kind={plain}"))
        with pyro.validation_enabled(False), warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no fallback to eager
            loss_and_grads(elbo, vae, x, seed=0)  # compiles
            assert_same(elbo, eager, vae, x, seed=1)
            assert_same_step(
                elbo, eager, list(vae.parameters()), vae.model, vae.guide, x, seed=2
            )  # one graph or autograd
            assert_same_step(elbo, eager, list(vae.parameters()), vae.model, vae.guide, x, seed=3)
        assert len(elbo._graphs) == 2  # the loss; the training step


@pytest.mark.parametrize("spec", ["kind='iwae'", "kind='renyi', alpha=0.5", "kind='stl', num_particles=2"])
def test_our_particle_objectives_compile_and_match_eager(spec, small_vae, synthetic):
    elbo = build_elbo(small_config(f"train.elbo={{{spec}}}"))
    x = synthetic.example_batch(16)

    class Eager:
        differentiable_loss = elbo._eager_loss

        @staticmethod
        def loss_and_grads(*args, **kwargs):
            loss = elbo._eager_loss(*args, **kwargs)
            loss.backward()
            return loss.item()

    params = list(small_vae.parameters())
    with pyro.validation_enabled(False):
        loss_and_grads(elbo, small_vae, x, seed=0)  # compiles
        for seed, beta in ((1, 1.0), (2, 0.5)):
            assert_same(elbo, Eager, small_vae, x, seed, beta)
            assert_same_step(elbo, Eager, params, small_vae.model, small_vae.guide, x, seed, beta)
    assert len(elbo._graphs) == 2 and len(one_graph_steps(elbo)) == 1


def test_logsumexp_by_logaddexp_equals_torchs():
    """distributions.logsumexp (a logaddexp tree where a gradient follows, whose backward reads its
    inputs only) and log_softmax: torch's values and gradients, for any K, along any dim, with -inf."""
    from pyro_vae.nn.distributions import log_softmax, logsumexp

    for k in (1, 2, 3, 5, 8, 13):
        x = (torch.randn(k, 7, dtype=torch.float64) * 30).requires_grad_()
        if k > 1:  # a point whose first particle has weight 0
            with torch.no_grad():
                x[0, 0] = -float("inf")
        w = torch.randn(7, dtype=torch.float64)
        for dim in (0, -2):
            ours, theirs = logsumexp(x, dim), torch.logsumexp(x, dim)
            assert ours.grad_fn.name() != theirs.grad_fn.name()  # the tree, not torch's op
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(
                torch.autograd.grad((ours * w).sum(), x)[0], torch.autograd.grad((theirs * w).sum(), x)[0]
            )
        y = torch.randn(4, k, dtype=torch.float64, requires_grad=True)
        torch.testing.assert_close(logsumexp(y, 1), torch.logsumexp(y, 1))
        v = torch.randn(4, k, dtype=torch.float64)
        ours, theirs = log_softmax(y, -1), torch.log_softmax(y, -1)
        torch.testing.assert_close(ours, theirs)
        torch.testing.assert_close(
            torch.autograd.grad((ours * v).sum(), y)[0], torch.autograd.grad((theirs * v).sum(), y)[0]
        )
        with torch.no_grad():  # no gradient to come: torch's own kernel
            assert torch.equal(logsumexp(y, 1), torch.logsumexp(y, 1))


def test_pyro_still_recompiles_jit_meanfield_on_every_call(small_vae, synthetic):
    """The workaround in compiled.py exists because Pyro's JitTraceMeanField_ELBO traces a new graph
    on every call. When this test fails, Pyro has fixed it: remove the workaround."""
    runs = []

    def model(x, num_data=None):
        runs.append(1)
        return small_vae.model(x, num_data)

    elbo = pyro.infer.JitTraceMeanField_ELBO(ignore_jit_warnings=True)
    x = synthetic.example_batch(8)
    with pyro.validation_enabled(False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        elbo.differentiable_loss(model, small_vae.guide, x)
        after_first = len(runs)
        elbo.differentiable_loss(model, small_vae.guide, x)
    assert len(runs) > after_first, "Pyro fixed JitTraceMeanField_ELBO's recompilation: remove compiled.py's workaround"


def test_a_torch_without_jit_trace_falls_back_to_eager_with_one_warning(small_vae, synthetic, monkeypatch):
    """The day torch.jit.trace goes (it is deprecated), the default estimator must run uncompiled."""

    def gone(*args, **kwargs):
        raise RuntimeError("torch.jit.trace was removed")

    monkeypatch.setattr(torch.jit, "trace", gone)
    elbo, eager = build_elbo(small_config()), build_elbo(small_config("train.elbo.kind=meanfield"))
    x = synthetic.example_batch(10)
    with pyro.validation_enabled(False):
        with pytest.warns(RuntimeWarning, match="could not compile.*torch.jit.trace was removed"):
            first = loss_and_grads(elbo, small_vae, x, 0)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            again = loss_and_grads(elbo, small_vae, x, 1)[0]
    assert first == loss_and_grads(eager, small_vae, x, 0)[0] and again == loss_and_grads(eager, small_vae, x, 1)[0]


def test_the_compiled_path_reads_no_private_name_of_pyro_or_torch():
    """compiled.py stands on public API: no ``pyro.x._y``/``torch._x`` names, no private attributes
    of Pyro's objects (the ELBO methods a subclass overrides are Pyro's documented extension points)."""
    import ast

    import pyro_vae.infer.compiled as compiled

    tree = ast.parse(open(compiled.__file__).read())
    private = [
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ]
    assert private == [], private
    imported = [
        a.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for a in node.names
        if a.name.startswith("_") or "._" in a.name
    ]
    assert imported == []


def test_float_arguments_are_graph_inputs_and_other_values_constants(small_vae, synthetic):
    """Positional or keyword, a float enters the graph (one graph for every value); an int is a constant."""
    elbo, eager = build_elbo(small_config()), build_elbo(small_config("train.elbo.kind=meanfield"))
    x = synthetic.example_batch(10)

    def model(x, num_data, beta):
        return small_vae.model(x, num_data, beta=beta)

    def guide(x, num_data, beta):
        return small_vae.guide(x, num_data, beta=beta)

    with pyro.validation_enabled(False):
        for seed, (num_data, beta) in enumerate([(100, 1.0), (100, 0.5), (100, 2.0), (200, 0.5)]):
            pyro.set_rng_seed(seed)
            a = elbo.differentiable_loss(model, guide, x, num_data, beta)
            pyro.set_rng_seed(seed)
            b = eager.differentiable_loss(model, guide, x, num_data, beta)
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-3)
    assert len(elbo._graphs) == 2  # one per num_data, none per beta


@pytest.mark.parametrize("jit,plain", PAIRS)
def test_bf16_networks_compile_draw_for_draw_and_stay_near_fp32(jit, plain, synthetic):
    """train.precision = "bf16": the encoder and decoder bodies under autocast (the heads, prior and
    likelihood in float32). The compiled graph replays the casts (equal to eager); the loss moves by
    bf16's rounding only (8 bits of mantissa: well under 1 % of the loss here)."""
    vae = build_vae(small_config(), synthetic.data_shape)
    elbo, eager = (
        build_elbo(small_config(f"train.elbo.kind={jit}")),
        build_elbo(small_config(f"train.elbo.kind={plain}")),
    )
    x = synthetic.example_batch(32)
    with pyro.validation_enabled(False):
        full = loss_and_grads(eager, vae, x, 0)[0]
        vae.precision = torch.bfloat16
        assert vae.encode(x).dtype == torch.float32 and vae.q(x).mean.dtype == torch.float32
        assert_same(elbo, eager, vae, x, 0)
        assert_same_step(elbo, eager, list(vae.parameters()), vae.model, vae.guide, x, 1)
        half = loss_and_grads(eager, vae, x, 0)[0]
    assert half != full and abs(half - full) < 0.01 * abs(full)


def test_same_shape_distributions_keep_torchs_semantics():
    """posteriors.Normal and likelihoods.Bernoulli skip broadcast_tensors and a same-shape expand, and
    otherwise behave as torch's: expand to a larger shape, broadcasting parameters, numbers."""
    import pyro.distributions as dist

    from pyro_vae.nn.likelihoods import Bernoulli, IndependentBernoulli
    from pyro_vae.nn.posteriors import Normal

    loc, scale, logits = torch.randn(4, 3), torch.rand(4, 3) + 0.1, torch.randn(4, 3)
    for ours, theirs in (
        (Normal(loc, scale), dist.Normal(loc, scale)),
        (Bernoulli(logits), dist.Bernoulli(logits=logits)),
        (IndependentBernoulli(Bernoulli(logits), 1), dist.Bernoulli(logits=logits).to_event(1)),
    ):
        assert ours.expand(ours.batch_shape) is ours
        big = ours.expand((2, *ours.batch_shape))
        assert type(big) is type(ours) and big.batch_shape == theirs.expand((2, *theirs.batch_shape)).batch_shape
        x = theirs.sample((2,))
        torch.testing.assert_close(big.log_prob(x), theirs.log_prob(x))
        torch.testing.assert_close(ours.mean, theirs.mean)
    assert Normal(loc, scale).loc is loc  # kept as given, no broadcast view
    wide = Normal(torch.zeros(3), torch.tensor(2.0))  # shapes that need broadcasting: torch's path
    assert wide.batch_shape == (3,) and torch.equal(wide.scale, torch.full((3,), 2.0))
    assert Normal(0.0, 1.0).batch_shape == () and Bernoulli(0.5).batch_shape == ()


def test_the_default_graph_has_no_distribution_bookkeeping_ops(small_vae, synthetic):
    """The compiled default step holds the model's arithmetic only: no expand, broadcast_tensors or
    unbind from distributions and plates (each a backward node; unbind's backward copies the gradient)."""
    elbo = build_elbo(small_config())
    with pyro.validation_enabled(False):
        elbo.differentiable_loss(small_vae.model, small_vae.guide, synthetic.example_batch(8), num_data=100, beta=1.0)
    (graph,) = elbo._graphs.values()
    ops = {node.kind() for node in graph.graph.graph.nodes()}
    assert "aten::addmm" in ops and "aten::softplus" in ops
    assert not ops & {"aten::expand", "aten::broadcast_tensors", "aten::unbind"}, ops


def test_a_constant_beta_reuses_one_input_tensor(small_vae, synthetic):
    """A float argument becomes a 0-dim tensor input once per value, not once per step."""
    elbo = build_elbo(small_config())
    x = synthetic.example_batch(8)
    with pyro.validation_enabled(False):
        for beta in (1.0, 1.0, 0.5, 1.0):
            elbo.differentiable_loss(small_vae.model, small_vae.guide, x, num_data=100, beta=beta)
        assert sorted(k[0] for k in elbo._scalars) == [0.5, 1.0]
        for i in range(40):  # an annealed beta: the cache stays small
            elbo.differentiable_loss(small_vae.model, small_vae.guide, x, num_data=100, beta=i / 40)
    assert 0 < len(elbo._scalars) <= 17 and (39 / 40, torch.device("cpu")) in elbo._scalars


def step_grads(elbo, params, model, guide, x, seed, beta=1.0):
    """``elbo.loss_and_grads`` as the training loop calls it: (loss, every parameter's .grad)."""
    for p in params:
        p.grad = None
    pyro.set_rng_seed(seed)
    loss = elbo.loss_and_grads(model, guide, x, num_data=1000, beta=beta)
    return loss, [None if p.grad is None else p.grad.clone() for p in params]


def assert_same_step(elbo, eager, params, model, guide, x, seed, beta=1.0):
    a, ga = step_grads(elbo, params, model, guide, x, seed, beta)
    b, gb = step_grads(eager, params, model, guide, x, seed, beta)
    assert a == pytest.approx(b, rel=1e-6, abs=1e-3)
    for u, v in zip(ga, gb):
        assert (u is None) == (v is None)
        if u is not None:
            torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-4)


def one_graph_steps(elbo):
    """The compiled steps whose graph holds the backward pass too (not fallen back to autograd)."""
    from pyro_vae.infer.compiled import _EAGER

    return [k for k, g in elbo._graphs.items() if k[0] and g is not _EAGER]


@pytest.mark.parametrize("jit,plain", PAIRS)
def test_the_training_step_is_one_graph_equal_to_eager_autograd(jit, plain, synthetic):
    """loss_and_grads runs forward and backward as one traced graph: the loss and every gradient equal
    Pyro's eager estimator draw for draw, at every beta, and gradients accumulate as autograd's do."""
    vae = build_vae(small_config(), synthetic.data_shape)
    params = list(vae.parameters())
    elbo, eager = (
        build_elbo(small_config(f"train.elbo.kind={jit}")),
        build_elbo(small_config(f"train.elbo.kind={plain}")),
    )
    x = synthetic.example_batch(32)
    with pyro.validation_enabled(False):
        for seed, beta in enumerate([1.0, 0.25, 0.0, 1.0]):
            assert_same_step(elbo, eager, params, vae.model, vae.guide, x, seed, beta)
        assert len(one_graph_steps(elbo)) == 1
        for e in (elbo, eager):  # two calls without zero_grad: the gradients add up
            for p in params:
                p.grad = None
            pyro.set_rng_seed(7)
            e.loss_and_grads(vae.model, vae.guide, x, num_data=1000)
            e.loss_and_grads(vae.model, vae.guide, x, num_data=1000)
            e.total = [p.grad.clone() for p in params]
    for u, v in zip(elbo.total, eager.total):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-4)


def test_a_traced_backward_that_would_replay_a_stale_tensor_is_refused(synthetic):
    """nn.Linear on a 3-d input flattens it inside one traced op, so its weight gradient reads a tensor
    the tracer never saw and would replay the first batch's copy: the check at other values refuses the
    one-graph step (without it the gradients are wrong on the next batch), and the step falls back to the
    forward graph and autograd, equal to eager."""
    from pyro_vae.infer import compiled
    from pyro_vae.nn.networks import Linear

    d, latent = synthetic.data_shape[-1] * synthetic.data_shape[-2], 3
    enc, dec = torch.nn.Linear(d, 2 * latent), Linear(latent, d)

    def model(x, num_data, beta=1.0):
        pyro.module("stale_dec", dec)
        with pyro.plate("data", num_data, subsample=torch.arange(x.shape[0])):
            z = pyro.sample("z", pyro.distributions.Normal(0.0, 1.0).expand([x.shape[0], latent]).to_event(1))
            logits = dec(z)
            pyro.sample("x", pyro.distributions.Bernoulli(logits=logits).to_event(1), obs=x.reshape(x.shape[0], -1))

    def guide(x, num_data, beta=1.0):
        pyro.module("stale_enc", enc)
        with pyro.plate("data", num_data, subsample=torch.arange(x.shape[0])):
            loc, raw = enc(x.reshape(1, x.shape[0], -1))[0].chunk(2, -1)  # a 3-d input to F.linear
            pyro.sample("z", pyro.distributions.Normal(loc, torch.nn.functional.softplus(raw) + 1e-3).to_event(1))

    params = list(enc.parameters()) + list(dec.parameters())
    first, second = synthetic.example_batch(16), synthetic.example_batch(32)[16:]
    eager = build_elbo(small_config("train.elbo.kind=meanfield"))
    with pyro.validation_enabled(False), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the forward graph compiles: no warning
        elbo = build_elbo(small_config())
        for x, seed in ((first, 0), (second, 1)):
            assert_same_step(elbo, eager, params, model, guide, x, seed)
        assert one_graph_steps(elbo) == []
        assert elbo.step_path == "compiled loss + autograd backward (the traced backward pass differs from autograd's)"

        unchecked = build_elbo(small_config())
        original = compiled._Traced._check
        compiled._Traced._check = lambda *a: None
        try:
            step_grads(unchecked, params, model, guide, first, 0)
            _, wrong = step_grads(unchecked, params, model, guide, second, 1)
        finally:
            compiled._Traced._check = original
        _, right = step_grads(eager, params, model, guide, second, 1)
        assert len(one_graph_steps(unchecked)) == 1
        assert not torch.allclose(wrong[0], right[0], rtol=1e-3, atol=1e-3)  # the encoder's weight


def test_relu_networks_step_as_one_graph_with_nn_relus_numbers(synthetic):
    """networks.ReLU is threshold(x, 0, 0): nn.ReLU's values and gradients (0 at exactly 0), with a
    backward that reads its input, so a relu MLP's compiled step is one graph, equal to eager."""
    from pyro_vae.nn.networks import ReLU

    x = torch.tensor([-1.0, 0.0, 0.0, 2.0, -0.0, 3.5], requires_grad=True)
    ours, theirs = ReLU()(x), torch.nn.ReLU()(x)
    assert torch.equal(ours, theirs)
    assert torch.equal(torch.autograd.grad(ours.sum(), x)[0], torch.autograd.grad(theirs.sum(), x)[0])
    cfg = small_config("model.encoder.activation='relu'", "model.decoder.activation='relu'")
    vae = build_vae(cfg, synthetic.data_shape)
    elbo, eager = build_elbo(small_config()), build_elbo(small_config("train.elbo.kind=meanfield"))
    x = synthetic.example_batch(16)
    with pyro.validation_enabled(False):
        for seed in (0, 1):
            assert_same_step(elbo, eager, list(vae.parameters()), vae.model, vae.guide, x, seed)
    assert len(one_graph_steps(elbo)) == 1 and elbo.step_path == "one graph (forward and backward)"


def test_a_run_says_how_its_compiled_steps_ran(synthetic, tmp_path):
    """After its first epoch a run says whether its steps ran as one graph, or why not (tanh saves its
    output for its backward pass, which the tracer refuses); an estimator that has not stepped says nothing."""
    from pyro_vae.training.runner import train

    assert build_elbo(small_config()).step_path is None
    for activation, want in [
        ("softplus", "jit_meanfield steps ran as one graph (forward and backward)"),
        (
            "tanh",
            "jit_meanfield steps ran as compiled loss + autograd backward (a backward "
            "formula reads a tensor made inside an op, such as tanh's output",
        ),
    ]:
        lines = []
        cfg = small_config(
            "train.epochs=2", f"model.encoder.activation='{activation}'", f"model.decoder.activation='{activation}'"
        )
        train(cfg, tmp_path / activation, progress=False, data=synthetic, log=lines.append)
        said = [line for line in lines if "steps ran as" in line]
        assert len(said) == 1 and said[0].strip().startswith(want), lines
        assert lines.index(said[0]) == 1 + next(i for i, line in enumerate(lines) if line.startswith("epoch   1"))


@pytest.mark.parametrize("family", ["m2", "gmvae"])
def test_compiled_enumeration_equals_traceenum_draw_for_draw(family, synthetic):
    """jit_enumerate (the families' default) takes the same steps as Pyro's TraceEnum_ELBO: the
    loss and every gradient, draw for draw, on the training step's own inputs (m2: labelled and
    unlabelled parts), with the enumerated sum compiled into the graph; and its loss value too."""
    from pyro_vae.config.build import StepInputs

    overrides = ("model.kind=m2", "model.components=10", "data.labels=40") if family == "m2" else ("model.kind=gmvae",)
    cfg = small_config(*overrides)
    assert cfg["train"]["elbo"]["kind"] == "jit_enumerate"
    pyro.clear_param_store()
    vae = build_vae(cfg, synthetic.data_shape)
    data = vae.adapt_data(synthetic) if hasattr(vae, "adapt_data") else synthetic
    inputs = StepInputs.from_config(vae, data, cfg)(data.train[:40], 0)
    elbo, eager = build_elbo(cfg), build_elbo(small_config(*overrides, "train.elbo.kind=enumerate"))
    params = list(vae.parameters())

    def step(e, seed):
        for p in params:
            p.grad = None
        pyro.set_rng_seed(seed)
        loss = e.loss_and_grads(vae.model, vae.guide, **inputs)
        return loss, [None if p.grad is None else p.grad.clone() for p in params]

    with pyro.validation_enabled(False):
        for seed in range(3):
            (a, ga), (b, gb) = step(elbo, seed), step(eager, seed)
            assert a == pytest.approx(b, rel=1e-6, abs=1e-3)
            assert sum(g is not None for g in ga) > 0
            for u, v in zip(ga, gb):
                assert (u is None) == (v is None)
                if u is not None:
                    torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-4)
            pyro.set_rng_seed(seed)
            value = elbo.loss(vae.model, vae.guide, **inputs)
            pyro.set_rng_seed(seed)
            assert value == pytest.approx(eager.loss(vae.model, vae.guide, **inputs), rel=1e-6, abs=1e-3)
    from pyro_vae.infer.compiled import _Traced

    assert any(isinstance(g, _Traced) and not k[0] for k, g in elbo._graphs.items())  # the loss was compiled
    assert elbo.step_path.startswith("compiled loss")  # see docs/guide/speed.md: einsum's backward
