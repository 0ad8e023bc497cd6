import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae import ESTIMATORS, DataError, build_vae

from ..conftest import small_config


def traces(vae, x, num_data=None, **kwargs):
    guide_tr = poutine.trace(vae.guide).get_trace(x, num_data=num_data, **kwargs)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x, num_data=num_data, **kwargs)
    return model_tr, guide_tr


def test_trace_shapes(small_vae, synthetic):
    x = synthetic.example_batch(10)
    model_tr, guide_tr = traces(small_vae, x, num_data=1000)
    model_tr.compute_log_prob()
    guide_tr.compute_log_prob()
    z, xs = model_tr.nodes["z"], model_tr.nodes["x"]
    assert z["value"].shape == (10, 4) and z["fn"].event_shape == (4,) and z["fn"].batch_shape == (10,)
    assert xs["fn"].event_shape == (1, 8, 8) and xs["fn"].batch_shape == (10,) and xs["is_observed"]
    assert guide_tr.nodes["z"]["fn"].batch_shape == (10,)
    for tr in (model_tr, guide_tr):
        for site in tr.nodes.values():
            if site["type"] == "sample" and site["name"] != "data":
                assert site["log_prob"].shape == (10,)
                assert torch.isfinite(site["log_prob"]).all()
    # the subsampling scale: 1000 data points, a batch of 10
    assert model_tr.nodes["x"]["scale"] == pytest.approx(100.0)
    # the guide's sample is the model's z
    assert torch.equal(model_tr.nodes["z"]["value"], guide_tr.nodes["z"]["value"])


def test_model_generates_without_data(small_vae):
    x = small_vae.model(num_samples=7)
    assert x.shape == (7, 1, 8, 8)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert small_vae.sample(5).shape == (5, 1, 8, 8)


@pytest.mark.parametrize("beta", [0.25, 0.0, 3.0])
def test_beta_scales_z_in_both_programs(synthetic, beta):
    vae = build_vae(small_config(), synthetic.data_shape)
    model_tr, guide_tr = traces(vae, synthetic.example_batch(6), beta=beta)
    assert model_tr.nodes["z"]["scale"] == beta and guide_tr.nodes["z"]["scale"] == beta
    assert model_tr.nodes["x"]["scale"] == 1.0
    with pytest.raises(DataError, match="beta must be a number >= 0"):
        traces(vae, synthetic.example_batch(6), beta=-1.0)


def test_each_program_registers_its_own_parts(synthetic):
    vae = build_vae(small_config(), synthetic.data_shape)
    model_tr, guide_tr = traces(vae, synthetic.example_batch(3))
    registered = lambda tr: {n.split("$$$")[0] for n, s in tr.nodes.items() if s["type"] == "param"}  # noqa: E731
    assert registered(guide_tr) == {"vae.encoder", "vae.posterior"}
    assert registered(model_tr) == {"vae.decoder"}  # a standard normal prior and bernoulli have no parameters
    vamp = build_vae(small_config("model.prior={kind='vamp', pseudo_inputs=5}"), synthetic.data_shape)
    model_tr, _ = traces(vamp, synthetic.example_batch(3))
    assert registered(model_tr) == {"vae.decoder", "vae.prior", "vae.encoder", "vae.posterior"}  # shared: explicit


def test_log_weights_match_the_pyro_traces(small_vae, synthetic):
    """VAE.log_weights (used by evaluation) computes exactly what the model/guide traces do."""
    x = synthetic.example_batch(5)
    torch.manual_seed(3)
    log_px_z, log_pz, log_qz = small_vae.log_weights(x, 1)
    torch.manual_seed(3)
    model_tr, guide_tr = traces(small_vae, x)
    model_tr.compute_log_prob()
    guide_tr.compute_log_prob()
    torch.testing.assert_close(log_px_z[0], model_tr.nodes["x"]["log_prob"])
    torch.testing.assert_close(log_pz[0], model_tr.nodes["z"]["log_prob"])
    torch.testing.assert_close(log_qz[0], guide_tr.nodes["z"]["log_prob"])


@pytest.mark.parametrize("kind", ["trace", "iwae"])
def test_vectorized_particles_broadcast(small_vae, synthetic, kind):
    elbo = ESTIMATORS.build({"kind": kind, "num_particles": 3})
    assert elbo.vectorize_particles
    loss = elbo.loss(small_vae.model, small_vae.guide, synthetic.example_batch(8), num_data=100)
    assert torch.isfinite(torch.tensor(loss))


def test_wrong_data_shape_is_refused(small_vae):
    with pytest.raises(DataError, match="rebuild the model"):
        small_vae.check_shape(torch.zeros(3, 1, 32, 32))


def test_guide_needs_data(small_vae):
    with pytest.raises(DataError, match="needs data"):
        small_vae.guide()


def test_svi_works_with_stock_pyro(small_vae, synthetic):
    """The model/guide pair is an ordinary Pyro pair: stock SVI with pyro.optim trains it."""
    svi = pyro.infer.SVI(small_vae.model, small_vae.guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    x = synthetic.example_batch(100)
    losses = [svi.step(x) for _ in range(60)]
    assert sum(losses[-10:]) < sum(losses[:10])
    assert len(pyro.get_param_store()) == len(list(small_vae.parameters()))


@pytest.mark.parametrize("kind", ["svi", "dreg"])
def test_a_second_vae_of_the_same_name_trains_without_clearing_the_param_store(synthetic, kind):
    """Pyro's param store keeps the first VAE's tensors under the names "vae.decoder$$$..."; a second VAE built
    in the same session must still be the one that trains (SVI and DReG take the parameters from the trace)."""
    from pyro.infer import SVI, Trace_ELBO

    first = build_vae(small_config(), synthetic.data_shape)
    x = synthetic.example_batch(50)
    pyro.infer.Trace_ELBO().loss(first.model, first.guide, x)  # the store now holds first's parameters
    second = build_vae(small_config(), synthetic.data_shape)
    before = {name: p.detach().clone() for name, p in second.named_parameters()}
    kept = {name: p.detach().clone() for name, p in first.named_parameters()}
    if kind == "svi":
        svi = SVI(second.model, second.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
        for _ in range(5):
            svi.step(x, num_data=synthetic.num_train)
    else:
        optimizer = torch.optim.Adam(second.parameters(), lr=1e-2)
        for _ in range(5):
            optimizer.zero_grad()
            ESTIMATORS.build({"kind": "dreg", "num_particles": 3}).loss_and_grads(second.model, second.guide, x)
            optimizer.step()
    assert all(not torch.equal(p, before[name]) for name, p in second.named_parameters())
    assert all(torch.equal(p, kept[name]) for name, p in first.named_parameters())
