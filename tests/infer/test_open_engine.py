"""The engine is model-agnostic: a user's own model/guide pair (not a VAE) and a user's own
``pyro.infer.ELBO`` subclass train through ``train.svi_step``; estimators declare what they need
(capabilities), and ``check_compatible`` reads them for any estimator."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch import nn

from pyro_vae import ESTIMATORS, ConfigError, build_vae, svi_step
from pyro_vae.infer.estimators import check_compatible

from ..conftest import small_config


class LinearGaussian(nn.Module):
    """z ~ N(0, 1), x ~ N(w z, 1): log p(x) = log N(x; 0, w^2 + 1), maximised at w^2 + 1 = E[x^2]."""

    def __init__(self):
        super().__init__()
        self.decoder = nn.ParameterDict({"w": nn.Parameter(torch.tensor(0.3))})
        self.encoder = nn.ParameterDict(
            {
                "a": nn.Parameter(torch.tensor(0.0)),  # q(z|x) = N(a x, s^2)
                "log_s": nn.Parameter(torch.tensor(0.0)),
            }
        )

    @property
    def w(self):
        return self.decoder["w"]

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(self.w * z, 1.0), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.encoder["a"] * x, self.encoder["log_s"].exp()))


class AnnealedELBO(Trace_ELBO):
    """A user's own estimator: Trace_ELBO with its loss halved (so the optimum is the same)."""

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs) * 0.5
        loss.backward()
        return loss.item()


@pytest.mark.parametrize(
    "elbo",
    [
        Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1),
        AnnealedELBO(),
        ESTIMATORS.build({"kind": "jit_meanfield"}),
        ESTIMATORS.build({"kind": "iwae", "num_particles": 4}),
    ],
)
def test_a_user_model_and_estimator_train_through_svi_step(elbo):
    torch.manual_seed(0)
    x = 2.0 * torch.randn(2000)  # E[x^2] = 4, so the maximum-likelihood w^2 = 3
    m = LinearGaussian()
    optimizer = torch.optim.Adam(m.parameters(), lr=0.05)
    losses = [
        svi_step(m.model, m.guide, elbo, optimizer, x[i % 20 * 100 : (i % 20 + 1) * 100], validate=i == 0)
        for i in range(600)
    ]
    assert all(math.isfinite(v) for v in losses)
    assert abs(m.w.item() ** 2 - 3.0) < 0.6  # Monte Carlo error of a few hundred noisy steps: generous but real
    assert sum(losses[-50:]) < sum(losses[:50])


class NeedsReparam(Trace_ELBO):
    requires_rsample = True


class NoSharing(Trace_ELBO):
    allows_shared_params = False


def test_capabilities_of_a_user_estimator_are_checked(synthetic):
    x = synthetic.example_batch(4)
    score = build_vae(
        small_config("model.posterior={kind='diagonal_normal', reparameterized=false}"), synthetic.data_shape
    )
    with pytest.raises(ConfigError, match="NeedsReparam estimator needs a reparameterised guide.*site 'z'"):
        check_compatible(NeedsReparam(), score.model, score.guide, x)
    vamp = build_vae(small_config("model.prior={kind='vamp', pseudo_inputs=5}"), synthetic.data_shape)
    with pytest.raises(ConfigError, match="NoSharing estimator needs a model that does not share parameters"):
        check_compatible(NoSharing(), vamp.model, vamp.guide, x)
    check_compatible(NoSharing(), score.model, score.guide, x)  # nothing shared: accepted
    with pytest.raises(ConfigError, match="DReG estimator needs a model that does not share"):
        check_compatible(ESTIMATORS.build({"kind": "dreg"}), vamp.model, vamp.guide, x)


@pytest.mark.parametrize("alpha", [-0.5, float("nan"), True])
def test_renyi_alpha_below_zero_is_not_a_lower_bound_and_is_refused(alpha):
    for kind in ("renyi", "pyro_renyi"):
        with pytest.raises(ConfigError, match="train.elbo.alpha must be a number >= 0"):
            ESTIMATORS.build({"kind": kind, "alpha": alpha})
