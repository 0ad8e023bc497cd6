"""Families with a class label: the conditional VAE (cvae), semi-supervised M2 (m2), and the discrete
estimators on them (enumerate, score_function, relaxed)."""

import json
import math

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch

import pyro_vae
from pyro_vae import build_elbo, build_vae
from pyro_vae.cli import main
from pyro_vae.config.build import StepInputs
from pyro_vae.errors import ConfigError, DataError, UsageError
from pyro_vae.evaluation.metrics import classification, evaluate
from pyro_vae.evaluation.plots import plot_run
from pyro_vae.infer.estimators import ESTIMATORS, RelaxedELBO, check_compatible
from pyro_vae.models.vae import join
from pyro_vae.studies.compare import compare
from pyro_vae.training.step import split_inputs

from ..conftest import small_config
from .test_gmvae import classifier_gradients

K = 10  # classes of the model (the synthetic data use 4 of them)
quiet = dict(progress=False, log=lambda *a: None)


def m2(synthetic, *overrides):
    cfg = small_config("model.kind=m2", f"model.components={K}", "data.labels=40", *overrides)
    return cfg, build_vae(cfg, synthetic.data_shape)


# -- M2: the two programs --------------------------------------------------------------------
def test_m2_sites_plates_and_scales(synthetic):
    _, vae = m2(synthetic, "train.labelled_weight=1")  # the joint likelihood: each point counted once
    x, xs, ys = synthetic.example_batch(6), synthetic.train[10:14], synthetic.train_labels[10:14]
    args = dict(num_data=100, xs=xs, ys=ys, num_labelled=40)
    guide = poutine.trace(vae.guide).get_trace(x, **args)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x, **args)
    sites = [n for n, s in model.nodes.items() if s["type"] == "sample" and n not in ("data", "labelled")]
    assert sites == ["y", "z", "x", "labelled_y", "labelled_z", "labelled_x", "aux"]
    assert [n for n, s in guide.nodes.items() if s["type"] == "sample" and n not in ("data", "labelled")] == [
        "y",
        "z",
        "labelled_z",
    ]
    assert not model.nodes["y"]["is_observed"] and model.nodes["labelled_y"]["is_observed"]
    assert torch.equal(model.nodes["labelled_y"]["value"].argmax(-1), ys)
    assert model.nodes["x"]["scale"] == pytest.approx(100 / 6) and model.nodes["labelled_x"]["scale"] == pytest.approx(
        10
    )
    # the auxiliary term: aux_loss * log q(y|x) of the labelled points
    log_q = torch.log_softmax(vae.classifier(vae.encode(xs)), -1)[torch.arange(4), ys]
    assert torch.allclose(model.nodes["aux"]["fn"].log_prob(torch.zeros(4)), 46.0 * log_q)


def test_m2_labelled_weight_scales_the_labelled_elbo_but_not_the_auxiliary_term(synthetic):
    _, vae = m2(synthetic, "train.labelled_weight=7.5")
    x, xs, ys = synthetic.example_batch(6), synthetic.train[10:14], synthetic.train_labels[10:14]
    args = dict(num_data=100, xs=xs, ys=ys, num_labelled=40)
    guide = poutine.trace(vae.guide).get_trace(x, **args)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x, **args)
    for trace, names in ((model, ("labelled_y", "labelled_z", "labelled_x")), (guide, ("labelled_z",))):
        assert [trace.nodes[n]["scale"] for n in names] == pytest.approx([10 * 7.5] * len(names))
    assert model.nodes["aux"]["scale"] == pytest.approx(10)  # N_l / n_l alone: the classifier's weight is aux_loss
    assert model.nodes["x"]["scale"] == guide.nodes["z"]["scale"] == pytest.approx(100 / 6)  # the unlabelled: as before
    with pytest.raises(ConfigError, match="labelled_weight"):
        m2(synthetic, "train.labelled_weight=-1")
    # 0: balanced, N_u / N_l = 100 / 40, so the labelled batch weighs what the unlabelled one does
    _, balanced = m2(synthetic, "train.labelled_weight=0")
    guide = poutine.trace(balanced.guide).get_trace(x, **args)
    model = poutine.trace(poutine.replay(balanced.model, trace=guide)).get_trace(x, **args)
    assert model.nodes["labelled_x"]["scale"] == guide.nodes["labelled_z"]["scale"] == pytest.approx(10 * 100 / 40)
    labelled_only = poutine.trace(balanced.model).get_trace(xs=xs, ys=ys, num_labelled=40)
    assert labelled_only.nodes["labelled_x"]["scale"] == pytest.approx(10)  # no unlabelled points: weight 1


def test_m2_enumerated_elbo_is_the_explicit_sum_over_the_ten_labels(synthetic):
    """-TraceEnum loss = sum_y q(y|x) [log p(y) + log p(z_y) + log p(x|z_y, y) - log q(y|x) - log q(z_y|x, y)]
    over the 10 values of y, with the same z_y draws (one rsample of all 10 at once, as parallel enumeration makes)."""
    _, vae = m2(synthetic)
    x = synthetic.example_batch(8)
    elbo = build_elbo(small_config("train.elbo.kind=enumerate"))
    with pyro.validation_enabled(False):
        pyro.set_rng_seed(3)
        enumerated = -elbo.differentiable_loss(vae.model, vae.guide, x, num_data=8)
    pyro.set_rng_seed(3)
    with torch.no_grad():
        h = vae.encode(x)
        log_qy = torch.log_softmax(vae.classifier(h), -1).T  # (K, 8)
        every = torch.eye(K).reshape(K, 1, K)
        q_z = vae.posterior(join(h, every))  # batch (K, 8)
        z = q_z.rsample()
        terms = (
            -math.log(K)
            + vae.prior(8).log_prob(z)
            + vae.likelihood(vae.decode(z, every)).log_prob(x)
            - log_qy
            - q_z.log_prob(z)
        )
        explicit = (log_qy.exp() * terms).sum()
    assert torch.allclose(enumerated.detach(), explicit, rtol=1e-5)
    assert not torch.allclose(explicit, terms[0].sum(), rtol=1e-5)  # all ten values count, at the same tolerance


def test_m2_enumeration_has_lower_gradient_variance_than_reinforce_and_the_same_mean(synthetic):
    _, vae = m2(synthetic)
    x = synthetic.example_batch(32)
    seeds = range(60)
    enum = classifier_gradients(vae, build_elbo(small_config("train.elbo.kind=enumerate")), x, seeds)
    sf = classifier_gradients(vae, build_elbo(small_config("train.elbo.kind=score_function")), x, seeds)
    assert enum.var(0).sum() < sf.var(0).sum() / 10
    direction = enum.mean(0) / enum.mean(0).norm()
    se = ((sf @ direction).std() + (enum @ direction).std()) / math.sqrt(len(seeds))
    assert abs((sf.mean(0) - enum.mean(0)) @ direction) < 4 * se


def test_m2_evaluation_sums_y_exactly(synthetic):
    """evaluate's ELBO (y summed in closed form, z by Monte Carlo) agrees with the enumerated training
    loss in expectation; log p(x) (y and z importance-sampled) lies above it."""
    _, vae = m2(synthetic)
    x = synthetic.test[:20]
    elbo = build_elbo(small_config("train.elbo.kind=enumerate"))
    with torch.no_grad(), pyro.validation_enabled(False):
        losses = torch.tensor([elbo.loss(vae.model, vae.guide, x, num_data=20) / 20 for _ in range(100)])
        terms = [vae.elbo_terms(x) for _ in range(100)]
    ours = torch.stack([-(t["distortion"] + t["rate"]).mean() for t in terms])
    se = math.sqrt(losses.var() / 100 + ours.var() / 100)
    assert abs(-losses.mean() - ours.mean()) < 4 * se
    r = evaluate(vae, x, iwae_samples=200)
    assert r["log_px"] > r["elbo"] and r["rate"] > 0 and "accuracy" not in r


# -- M2: the data ----------------------------------------------------------------------------
def test_labelled_points_are_balanced_fixed_by_seed_and_left_out_of_the_unlabelled(synthetic):
    d = synthetic.semi_supervised(42, seed=5)
    xs, ys = d.labelled
    assert len(ys) == 42 and d.num_train == synthetic.num_train - 42
    assert sorted(torch.bincount(ys).tolist()) == [10, 10, 11, 11]  # as even as 42 over 4 classes allows
    again = synthetic.semi_supervised(42, seed=5)
    assert torch.equal(again.labelled[0], xs) and not torch.equal(synthetic.semi_supervised(42, seed=6).labelled[0], xs)
    rows = {tuple(r.tolist()) for r in d.train.flatten(1)}
    assert not any(tuple(r.tolist()) in rows for r in xs.flatten(1))
    assert d.train_labels is None  # the unlabelled points' labels are hidden


def test_the_labelled_stream_visits_each_point_once_per_pass_and_is_a_function_of_the_step(synthetic):
    d = synthetic.semi_supervised(40, seed=0)
    d.binarize = "none"
    seen = torch.cat([d.labelled_batch(step, 8, seed=0)[1] for step in range(5)])  # one pass: 5 x 8 = 40
    assert torch.equal(torch.bincount(seen), torch.bincount(d.labelled[1]))
    a, b = d.labelled_batch(7, 8, seed=0), d.labelled_batch(7, 8, seed=0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    halves = [d.labelled_batch(7, 8, seed=0, part=(k, 2)) for k in range(2)]
    assert torch.equal(torch.cat([h[1] for h in halves]), a[1])


def test_split_inputs_cuts_tensors_and_repeats_the_rest():
    parts = split_inputs({"x": torch.arange(6), "xs": torch.arange(4), "num_labelled": 40}, 2)
    assert [p["x"].tolist() for p in parts] == [[0, 1, 2], [3, 4, 5]]
    assert [p["xs"].tolist() for p in parts] == [[0, 1], [2, 3]] and all(p["num_labelled"] == 40 for p in parts)


def test_m2_refusals(synthetic, tmp_path):
    cfg = small_config("model.kind=m2", "model.components=4")
    with pytest.raises(ConfigError, match="set data.labels to the number of labelled training points"):
        pyro_vae.train(cfg, tmp_path / "a", data=synthetic, **quiet)
    with pytest.raises(DataError, match="between 4 and 1999"):
        pyro_vae.train(
            small_config("model.kind=m2", "model.components=4", "data.labels=2000"),
            tmp_path / "b",
            data=synthetic,
            **quiet,
        )
    with pytest.raises(DataError, match=r"labels must lie in \[0, 3\).*set model.components"):
        pyro_vae.train(
            small_config("model.kind=m2", "model.components=3", "data.labels=40"),
            tmp_path / "c",
            data=synthetic,
            **quiet,
        )
    np.savez(tmp_path / "nolabels.npz", x=synthetic.train.numpy()[:200], x_test=synthetic.test.numpy()[:50])
    with pytest.raises(DataError, match="no labels"):
        pyro_vae.train(
            small_config(
                "model.kind=m2", "data.labels=40", "data.dataset=npz", f"data.path='{tmp_path / 'nolabels.npz'}'"
            ),
            tmp_path / "d",
            **quiet,
        )
    with pytest.raises(ConfigError, match="DReG estimator needs a reparameterised guide, but site 'y'.*\"relaxed\""):
        pyro_vae.train(
            small_config("model.kind=m2", "model.components=4", "data.labels=40", "train.elbo.kind=dreg"),
            tmp_path / "e",
            data=synthetic,
            **quiet,
        )


@pytest.mark.parametrize("kind", ["enumerate", "score_function", "relaxed"])
def test_m2_trains_and_reports_accuracy(kind, synthetic, tmp_path):
    cfg = small_config(
        "model.kind=m2", "model.components=4", "data.labels=40", f"train.elbo.kind={kind}", "train.epochs=3"
    )
    vae, history = pyro_vae.train(cfg, tmp_path / kind, data=synthetic, **quiet)
    assert all(math.isfinite(h["test_elbo"]) and 0 <= h["test_accuracy"] <= 1 for h in history)
    assert history[-1]["test_accuracy"] > 0.5  # 4 classes: chance is 0.25
    assert classification(vae, synthetic.test, synthetic.test_labels)["accuracy"] == history[-1]["test_accuracy"]
    assert (tmp_path / kind / "samples.png").exists()


def test_m2_resume_equals_an_uninterrupted_run(synthetic, tmp_path):
    """The labelled stream is a function of seed and step, so resume is exact (here with two micro-batches a
    step, each with its share of both batches, as two torchrun ranks would have)."""
    cfg = small_config(
        "model.kind=m2",
        "model.components=4",
        "data.labels=40",
        "train.elbo.kind=enumerate",
        "train.epochs=2",
        "data.labelled_batch=16",
        "train.micro_batches=2",
    )
    straight, _ = pyro_vae.train(cfg, tmp_path / "straight", data=synthetic, **quiet)
    pyro_vae.train({**cfg, "train": {**cfg["train"], "epochs": 1}}, tmp_path / "resumed", data=synthetic, **quiet)
    resumed, _ = pyro_vae.train(cfg, tmp_path / "resumed", resume=True, data=synthetic, **quiet)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_run_saved_before_labelled_weight_reads_back_with_the_weight_it_trained_with():
    from pyro_vae.training.load import saved_config

    cfg = small_config("model.kind=m2", "data.labels=40")
    assert cfg["train"]["labelled_weight"] == 0.0  # new runs: balanced
    old = {**cfg, "train": {k: v for k, v in cfg["train"].items() if k != "labelled_weight"}}
    assert saved_config(old, "old.pt")["train"]["labelled_weight"] == 1.0  # the joint likelihood it trained with
    assert saved_config(cfg, "new.pt")["train"]["labelled_weight"] == 0.0
    assert "labelled_weight" not in old["train"]  # the caller's dict is left as it was


# -- CVAE --------------------------------------------------------------------------------------
def cvae(synthetic, *overrides):
    cfg = small_config("model.kind=cvae", "model.components=4", *overrides)
    return cfg, build_vae(cfg, synthetic.data_shape)


def test_cvae_conditions_on_y_and_generates_by_poutine_condition(synthetic):
    _, vae = cvae(synthetic)
    x, y = synthetic.example_batch(6), synthetic.train_labels[:6]
    guide = poutine.trace(vae.guide).get_trace(x, y, num_data=100)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x, y, num_data=100)
    assert [n for n, s in model.nodes.items() if s["type"] == "sample" and n != "data"] == ["z", "x"]  # y is given
    generated = poutine.trace(vae.model).get_trace(num_samples=5)
    assert generated.nodes["y"]["value"].shape == (5, 4)  # without y, the model draws it
    # sample(y=2) is the model conditioned on y = 2: the same z draws decoded with that label
    torch.manual_seed(4)
    drawn = vae.sample(5, y=2)
    torch.manual_seed(4)
    z = vae.prior(5).sample()
    assert torch.allclose(drawn, vae.decode_mean(z, torch.full((5,), 2)))
    assert not torch.allclose(drawn, vae.decode_mean(z, torch.full((5,), 1)))
    with pytest.raises(DataError, match=r"labels must lie in \[0, 4\)"):
        vae.sample(3, y=7)


def test_cvae_trains_and_evaluates_log_p_x_given_y(synthetic, tmp_path):
    cfg = small_config("model.kind=cvae", "model.components=4", "train.epochs=2")
    vae, history = pyro_vae.train(cfg, tmp_path / "run", data=synthetic, **quiet)
    assert all(math.isfinite(h["test_elbo"]) for h in history) and "test_accuracy" not in history[-1]
    r = evaluate(vae, synthetic.test[:100], iwae_samples=50, labels=synthetic.test_labels[:100])
    assert r["log_px"] > r["elbo"] - 0.5 and r["rate"] > 0
    with pytest.raises(UsageError, match="pass the test labels"):
        evaluate(vae, synthetic.test[:10], iwae_samples=0)
    written = plot_run(vae, synthetic, history, tmp_path / "figures")
    assert {"class_rows.png", "style_transfer.png"} <= set(written)


def test_cvae_refuses_a_prior_built_from_the_encoder(synthetic):
    with pytest.raises(ConfigError, match="also needs y"):
        cvae(synthetic, "model.prior.kind=vamp")


def test_sample_label_on_the_command_line(synthetic, tmp_path, capsys):
    cfg = small_config("model.kind=cvae", "model.components=4")
    pyro_vae.train(cfg, tmp_path / "cvae", data=synthetic, **quiet)
    main(["sample", str(tmp_path / "cvae"), "--label", "3", "--n", "8", "--out", str(tmp_path / "three.png")])
    assert (tmp_path / "three.png").exists()
    pyro_vae.train(small_config(), tmp_path / "vae", data=synthetic, **quiet)
    assert main(["sample", str(tmp_path / "vae"), "--label", "3"]) != 0
    assert "--label needs model.kind" in capsys.readouterr().err


# -- the relaxed estimator -------------------------------------------------------------------
def test_relaxed_replaces_categorical_sites_and_anneals_its_temperature(synthetic):
    _, vae = m2(synthetic)
    elbo = ESTIMATORS.build({"kind": "relaxed", "temperature": 2.0, "final_temperature": 0.5, "anneal_steps": 100})
    assert isinstance(elbo, RelaxedELBO)
    for step, tau in ((0, 2.0), (50, 1.0), (100, 0.5), (1000, 0.5)):
        elbo.set_step(step)
        assert elbo.temperature == pytest.approx(tau)
    x = synthetic.example_batch(5)
    trace = poutine.trace(elbo._relaxed(vae.guide)).get_trace(x, num_data=10)
    fn = trace.nodes["y"]["fn"]
    assert type(fn).__name__ == "RelaxedOneHotCategorical" and float(fn.temperature) == pytest.approx(0.5)
    value = trace.nodes["y"]["value"]
    assert torch.allclose(value.sum(-1), torch.ones(5)) and ((value > 0) & (value < 1)).all()  # a point of the simplex
    vae.zero_grad()
    elbo.loss_and_grads(vae.model, vae.guide, x, num_data=10)
    g = vae.classifier.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0  # pathwise through the relaxed y


def test_relaxed_refuses_a_discrete_site_it_cannot_relax(synthetic):
    cfg = small_config("model.posterior.reparameterized=false")
    vae = build_vae(cfg, synthetic.data_shape)
    with pytest.raises(ConfigError, match="relaxes Categorical sites, but site 'z' draws from"):
        check_compatible(
            ESTIMATORS.build({"kind": "relaxed"}), vae.model, vae.guide, synthetic.example_batch(2), num_data=10
        )
    with pytest.raises(ConfigError, match="final_temperature"):
        ESTIMATORS.build({"kind": "relaxed", "final_temperature": 0})


def test_compare_on_m2_reports_accuracy(synthetic, tmp_path):
    cfg = small_config("model.kind=m2", "model.components=4", "data.labels=40")
    rows = compare(
        cfg,
        "enumerate,score_function,relaxed",
        tmp_path / "study",
        snr_samples=3,
        data=synthetic,
        progress=False,
        log=lambda *a: None,
    )
    assert [r["estimator"] for r in rows] == ["enumerate", "score_function", "relaxed"]
    assert all(0 <= r["accuracy"] <= 1 and math.isfinite(r["encoder_grad_var"]) for r in rows)
    header = (tmp_path / "study" / "compare.csv").read_text().splitlines()[0]
    assert header.endswith(",accuracy,accuracy_se")
    assert json.loads((tmp_path / "study" / "compare.json").read_text())["rows"][0]["accuracy"] == rows[0]["accuracy"]


def test_step_inputs_of_a_semi_supervised_run(synthetic):
    cfg, vae = m2(synthetic, "data.labelled_batch=6")
    data = vae.adapt_data(synthetic)
    inputs = StepInputs.from_config(vae, data, cfg)(data.train[:10], 3)
    assert set(inputs) == {"x", "xs", "ys", "num_labelled"}
    assert inputs["xs"].shape[0] == 6 and inputs["num_labelled"] == 40


def test_families_with_a_discrete_latent_default_to_enumeration():
    assert small_config("model.kind=m2")["train"]["elbo"]["kind"] == "jit_enumerate"  # compiled enumeration
    assert small_config("model.kind=gmvae")["train"]["elbo"]["kind"] == "jit_enumerate"
    assert small_config("model.kind=cvae")["train"]["elbo"]["kind"] == "jit_meanfield"  # no discrete latent
    assert small_config("model.kind=m2", "train.elbo.kind=relaxed")["train"]["elbo"]["kind"] == "relaxed"


def test_a_familys_defaults_fill_only_what_the_user_leaves_unset(tmp_path):
    m2_cfg = pyro_vae.load_config(overrides=["model.kind=m2", "data.labels=3000"])
    assert m2_cfg["data"]["binarize"] == "none"  # grey levels, as Pyro's SS-VAE reads MNIST
    assert m2_cfg["model"]["likelihood"] == {"kind": "bernoulli", "allow_grey": True}
    # a value the user names wins, even where it equals the global default
    named = pyro_vae.load_config(
        overrides=[
            "model.kind=m2",
            "data.labels=3000",
            "data.binarize=dynamic",
            "train.elbo.kind=jit_meanfield",
            "model.likelihood.kind=bernoulli",
        ]
    )
    assert named["data"]["binarize"] == "dynamic" and named["train"]["elbo"]["kind"] == "jit_meanfield"
    assert named["model"]["likelihood"] == {"kind": "bernoulli"}
    # a file's family, changed on the command line: nothing of the first family's defaults stays
    path = tmp_path / "m2.toml"
    path.write_text('[model]\nkind = "m2"\n[data]\nlabels = 100\n')
    assert pyro_vae.load_config(path)["data"]["binarize"] == "none"
    vae_cfg = pyro_vae.load_config(path, ["model.kind=vae"])
    assert vae_cfg["data"]["binarize"] == "dynamic" and vae_cfg["train"]["elbo"]["kind"] == "jit_meanfield"
    assert vae_cfg["data"]["labels"] == 100  # what the file names stays
    # a complete config (a run's config.toml) is taken as it is: resume sees what was trained
    full = pyro_vae.config.validate({**m2_cfg, "data": {**m2_cfg["data"], "binarize": "static"}})
    assert full["data"]["binarize"] == "static"
