"""Families with a class label y beside z: the conditional VAE (``cvae``) and Kingma et al.'s
semi-supervised M2 (``m2``). y enters the decoder p(x|z, y) and the posterior q(z|x, y) as a
one-hot vector concatenated to their inputs; z keeps the prior/posterior/likelihood catalogue.

- ``cvae``: p(x|y) = int p(z) p(x|z, y) dz, guide q(z|x, y); every training point carries its label,
  evaluation bounds log p(x|y). Generation for a label: ``poutine.condition`` on the model's y site.
- ``m2``: p(y) p(z) p(x|z, y) with p(y) uniform; y is observed where labelled and latent where not,
  guide q(y|x) q(z|x, y) with the classifier q(y|x) on the encoder's features. Per point
  labelled:   L(x, y) = E_q(z|x,y)[log p(x|z,y) + log p(y) + log p(z) - log q(z|x,y)] + a log q(y|x),
  unlabelled: U(x) = sum_y q(y|x) [L(x, y) - log q(y|x)] (exact with ``train.elbo.kind = "enumerate"``),
  with a = ``train.aux_loss`` the auxiliary classification weight (Kingma et al. 2014, eq. 9).
  Each step sees a batch of unlabelled points (plate "data", scaled N_u / n) and a batch of the
  labelled ones (plate "labelled", scaled N_l / n_l), so the objective is the sum over the data set,
  sum_u U(x) + w sum_l L(x, y) + a sum_l log q(y|x), with w = ``train.labelled_weight`` (1: the joint
  likelihood; larger w makes the decoder use y where labels are few, which is what the unlabelled
  term needs to teach the classifier).
"""

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine

from ..errors import ConfigError, DataError
from ..nn.networks import Linear
from .vae import FAMILIES, VAE, KLWeight, _check_beta, _check_count, draw, join, posterior_mean, rate


@FAMILIES.register("cvae")
class CVAE(VAE):
    """The conditional VAE (see the module docstring); ``classes``: the number of labels."""

    needs_labels = True
    conditional = True

    def __init__(self, encoder, posterior, decoder, likelihood, prior, data_shape, latent_dim, name="vae", classes=10):
        super().__init__(encoder, posterior, decoder, likelihood, prior, data_shape, latent_dim, name)
        self.classes = int(classes)

    @classmethod
    def posterior_inputs(cls, model_cfg):
        return model_cfg["components"]

    decoder_inputs = posterior_inputs

    config_options = {"classes": "model.components"}

    @classmethod
    def make_prior(cls, model_cfg, priors):
        prior = super().make_prior(model_cfg, priors)
        if prior.uses_encoder:
            raise ConfigError(
                f"model.prior = {model_cfg['prior']['kind']!r} is built from q(z|x), which here also "
                f"needs y: use another prior with model.kind = {model_cfg['kind']!r}"
            )
        return prior

    def adapt_data(self, data):
        if not data.has_train_labels or data.test_labels is None:
            raise DataError(
                f"model.kind = {type(self).__name__.lower()!r} trains on labelled data, but the dataset has no "
                "labels: use one with labels (mnist, an npz file with y_train and y_test, an image "
                "folder with one subfolder per class)"
            )
        self.onehot(data.test_labels)  # labels beyond model.components are refused before training
        if data.train_labels is not None:
            self.onehot(data.train_labels)
        return data

    def batch_inputs(self, batch):
        x, y = batch
        return {"x": x, "y": y}

    # -- labels ----------------------------------------------------------------------------
    def onehot(self, y):
        """Integer labels (n,) in [0, classes) as one-hot floats (n, classes); float input (one-hot or
        relaxed vectors, enumerated values) passes through."""
        if not torch.is_tensor(y):
            raise DataError(f"labels y must be a torch.Tensor of integers, got {type(y).__name__}")
        if y.is_floating_point():
            if y.shape[-1] != self.classes:
                raise DataError(
                    f"one-hot labels need {self.classes} entries in their last dimension, got {tuple(y.shape)}"
                )
            return y
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.classes):
            raise DataError(
                f"labels must lie in [0, {self.classes}) (model.components = {self.classes}), got values in "
                f"[{int(y.min())}, {int(y.max())}]: set model.components to the number of classes"
            )
        return F.one_hot(y.long(), self.classes).to(self.dtype)

    def p_y(self, n, device=None):
        """p(y) = uniform over the classes: batch (n,)."""
        return dist.OneHotCategorical(logits=torch.zeros(n, self.classes, device=device, dtype=self.dtype))

    def decode(self, z, y=None):
        """The decoder's raw outputs for z and the (one-hot) label y."""
        if y is None:
            raise DataError("this model's decoder needs the label y beside z")
        return self._run(self.decoder, join(z, self.onehot(y)))

    def q(self, x, y=None):
        """q(z|x, y)."""
        if y is None:
            raise DataError("q(z|x, y) needs the labels y: pass them (evaluate(..., labels=...))")
        return self.posterior(join(self.encode(x), self.onehot(y)))

    def _check_y(self, x, y):
        if y is not None and x is not None and y.shape[:1] != x.shape[:1]:
            raise DataError(f"{x.shape[0]} data points but labels of shape {tuple(y.shape)}: give one label per point")

    # -- the two Pyro programs ------------------------------------------------------------
    def model(self, x=None, y=None, num_data=None, num_samples=1, beta=1.0):
        """p(z) p(x|z, y), the z term weighted by ``beta``; y drawn from p(y) if not given (generation)."""
        self._register("decoder", "likelihood", "prior")
        _check_beta(beta)
        n, device = self._points_of(x, num_samples)
        self._check_y(x, y)
        with self._plate(n, num_data, device):
            y1h = pyro.sample("y", self.p_y(n, device)) if y is None else self.onehot(y)
            with KLWeight(beta):
                z = pyro.sample("z", self.prior(n))
            return pyro.sample("x", self.likelihood(self.decode(z, y1h)), obs=x)

    def guide(self, x=None, y=None, num_data=None, num_samples=1, beta=1.0):
        """q(z|x, y), weighted by ``beta``. Needs ``x`` and ``y``."""
        if x is None or y is None:
            raise DataError("the guide q(z|x, y) needs data x and their labels y")
        self.check_shape(x)
        self._check_y(x, y)
        _check_beta(beta)
        self._register("encoder", "posterior")
        with self._plate(x.shape[0], num_data, x.device):
            with KLWeight(beta):
                return pyro.sample("z", self.q(x, y))

    # -- evaluation and generation -------------------------------------------------------------
    def _labels(self, n, y, device):
        if y is None:
            return torch.arange(n, device=device) % self.classes
        y = torch.as_tensor(y, device=device).long()
        return y.expand(n) if y.dim() == 0 else y

    @torch.no_grad()
    def sample(self, n, mean=True, y=None):
        """n draws for labels ``y`` (an int, or n of them; default: the classes in turn): the model
        conditioned on y (``poutine.condition``), then E[x|z, y] or a draw x ~ p(x|z, y)."""
        _check_count(n, "n")
        device = next(self.parameters()).device
        y1h = self.onehot(self._labels(n, y, device))
        trace = poutine.trace(poutine.condition(self.model, data={"y": y1h})).get_trace(num_samples=n)
        out = self.decode(trace.nodes["z"]["value"], y1h)
        return self.likelihood.mean(out) if mean else self.likelihood(out).sample()

    @torch.no_grad()
    def decode_mean(self, z, y):
        """E[x|z, y] for z (..., latent_dim) and labels y broadcast against it."""
        return self.likelihood.mean(self.decode(z, y))

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        y = self.classify(x) if y is None and hasattr(self, "classify") else y
        return self.likelihood.mean(self.decode(posterior_mean(self.q(x, y)), y))


@FAMILIES.register("m2")
class M2(CVAE):
    """Kingma et al.'s M2 (see the module docstring): a classifier q(y|x) on the encoder's features,
    ``aux_loss`` the weight of -log q(y|x) per labelled point."""

    #: where the config names none: the discrete latent summed out exactly, and the grey levels of the
    #: images as Pyro's SS-VAE reads them (Bernoulli cross-entropy; the classifier sees the whole image,
    #: not a binarised draw of it: 0.952 against 0.946 test accuracy with 3000 labels after 30 epochs)
    config_defaults = {
        "train": {"elbo": {"kind": "jit_enumerate", "num_particles": 1}},
        "data": {"binarize": "none"},
        "model": {"likelihood": {"kind": "bernoulli", "allow_grey": True}},
    }

    needs_labels = False  # the training batches are the unlabelled points; the labelled come beside them
    conditional = False  # evaluation sums y out: bounds on log p(x)

    def __init__(
        self,
        encoder,
        posterior,
        decoder,
        likelihood,
        prior,
        data_shape,
        latent_dim,
        name="vae",
        classes=10,
        aux_loss=0.0,
        labelled_weight=1.0,
        labels=0,
        label_seed=0,
    ):
        super().__init__(encoder, posterior, decoder, likelihood, prior, data_shape, latent_dim, name, classes)
        self.labels, self.label_seed = int(labels), int(label_seed)  # data.labels points labelled, chosen by seed
        self.aux_loss = float(aux_loss)
        self.labelled_weight = float(labelled_weight)
        self.classifier = Linear(encoder.out_features, self.classes)

    config_options = {
        "classes": "model.components",
        "aux_loss": "train.aux_loss",
        "labelled_weight": "train.labelled_weight",
        "labels": "data.labels",
        "label_seed": "seed",
    }
    config_keys = ("data.labelled_batch",)  # read by the step's inputs (config.build.StepInputs)

    def adapt_data(self, data):
        n = self.labels
        if not n:
            raise ConfigError(
                "model.kind = \"m2\" is semi-supervised: set data.labels to the number of labelled "
                "training points, e.g. --set data.labels=3000"
            )
        data = super().adapt_data(data)
        return data.semi_supervised(n, self.label_seed)

    def batch_inputs(self, batch):
        return {"x": batch}

    # -- the two Pyro programs ------------------------------------------------------------
    def _points(self, prefix, x, y, n, beta, device):
        """p(y) p(z) p(x|z, y) for the points of the plate inside which it runs (sites prefix + y, z, x)."""
        with KLWeight(beta if y is None else 1.0):  # a latent y's term belongs to the rate
            y1h = pyro.sample(prefix + "y", self.p_y(n, device), obs=None if y is None else self.onehot(y))
        with KLWeight(beta):
            z = pyro.sample(prefix + "z", self.prior(n))
        return pyro.sample(prefix + "x", self.likelihood(self.decode(z, y1h)), obs=x)

    def model(self, x=None, y=None, num_data=None, num_samples=1, beta=1.0, xs=None, ys=None, num_labelled=None):
        """Plate "data": points ``x`` (labels ``y`` where given, else y latent; ``x=None``: generate
        ``num_samples``); plate "labelled": the labelled batch ``xs, ys`` of ``num_labelled`` points,
        with the auxiliary term ``aux_loss * log q(ys|xs)``."""
        self._register("decoder", "likelihood", "prior", "encoder", "classifier")
        _check_beta(beta)
        self._check_labelled(xs, ys)
        out = None
        if x is not None or xs is None:
            n, device = self._points_of(x, num_samples)
            self._check_y(x, y)
            with self._plate(n, num_data, device):
                out = self._points("", x, y, n, beta, device)
        if xs is not None:
            with self._labelled_plate(xs, num_labelled):
                with poutine.scale(scale=self._labelled_weight(x, num_data, xs, num_labelled)):
                    self._points("labelled_", xs, ys, xs.shape[0], beta, xs.device)
                if self.aux_loss:
                    log_q = self.q_y(self.encode(xs)).log_prob(self.onehot(ys))
                    pyro.factor("aux", self.aux_loss * log_q)
        return out

    def guide(self, x=None, y=None, num_data=None, num_samples=1, beta=1.0, xs=None, ys=None, num_labelled=None):
        """q(y|x) q(z|x, y) on plate "data" (y given: q(z|x, y) alone), q(z|xs, ys) on plate "labelled"."""
        if x is None and xs is None:
            raise DataError("the guide q(y, z|x) needs data x (or a labelled batch xs, ys)")
        _check_beta(beta)
        self._check_labelled(xs, ys)
        self._register("encoder", "classifier", "posterior")
        if x is not None:
            self.check_shape(x)
            self._check_y(x, y)
            with self._plate(x.shape[0], num_data, x.device):
                h = self.encode(x)
                with KLWeight(beta):
                    y1h = self.onehot(y) if y is not None else pyro.sample("y", self.q_y(h))
                    pyro.sample("z", self.posterior(join(h, y1h)))
        if xs is not None:
            with (
                self._labelled_plate(xs, num_labelled),
                poutine.scale(scale=self._labelled_weight(x, num_data, xs, num_labelled)),
            ):
                with KLWeight(beta):
                    pyro.sample("labelled_z", self.posterior(join(self.encode(xs), self.onehot(ys))))

    def _labelled_weight(self, x, num_data, xs, num_labelled):
        """w: ``labelled_weight``, or where it is 0 ("balanced") N_u / N_l, so that the labelled points
        together weigh as much as the unlabelled ones (1 in a call without unlabelled points)."""
        if self.labelled_weight:
            return self.labelled_weight
        if x is None:
            return 1.0
        return (num_data or x.shape[0]) / (num_labelled or xs.shape[0])

    def _labelled_plate(self, xs, num_labelled):
        n = xs.shape[0]
        if num_labelled is None or num_labelled == n:
            return pyro.plate("labelled", n)
        return pyro.plate("labelled", size=num_labelled, subsample=torch.arange(n, device=xs.device))

    def _check_labelled(self, xs, ys):
        if (xs is None) != (ys is None):
            raise DataError("a labelled batch needs both xs and ys")
        if xs is not None:
            self.check_shape(xs)
            self._check_y(xs, ys)

    # -- classification, evaluation: y summed out -----------------------------------------------
    def q_y(self, h):
        """q(y|x) from the encoder's features h: one-hot, batch h.shape[:-1]."""
        return dist.OneHotCategorical(logits=self.classifier(h))

    @torch.no_grad()
    def classify(self, x):
        """argmax_y q(y|x): integer labels (n,)."""
        return self.classifier(self.encode(x)).argmax(-1)

    def q(self, x, y=None):
        """q(z|x, y) if y is given, else q(z|x) = sum_y q(y|x) q(z|x, y), a mixture: batch (n,)."""
        if y is not None:
            return super().q(x, y)
        h = self.encode(x)
        every = torch.eye(self.classes, device=h.device, dtype=h.dtype)  # (K, K): one row per label
        comp = self.posterior(join(h.unsqueeze(-2), every))  # batch (n, K)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.classifier(h)), comp)

    def elbo_terms(self, x, num_samples=1, y=None):
        """The ELBO of log p(x) with y summed exactly: distortion -sum_y q(y|x) E log p(x|z, y), rate
        KL(q(y|x) || p(y)) + sum_y q(y|x) KL(q(z|x, y) || p(z))."""
        if y is not None:
            return super().elbo_terms(x, num_samples, y)
        h = self.encode(x)
        qy = dist.Categorical(logits=self.classifier(h))
        w = qy.probs.transpose(0, 1)  # (K, n)
        every = torch.eye(self.classes, device=h.device, dtype=h.dtype).unsqueeze(1)  # (K, 1, K)
        qz = self.posterior(join(h, every))  # batch (K, n)
        z = draw(qz, num_samples)
        log_px = self.likelihood(self.decode(z, every)).log_prob(x).mean(0)  # (K, n)
        uniform = dist.Categorical(logits=torch.zeros(self.classes, device=h.device, dtype=h.dtype))
        rate_y = torch.distributions.kl_divergence(qy, uniform)
        return {
            "distortion": -(w * log_px).sum(0),
            "rate": rate_y + (w * rate(self, x, qz)).sum(0),
            "mean": (w.unsqueeze(-1) * posterior_mean(qz)).sum(0),
            "kl_per_dim": None,
        }

    def log_weights(self, x, num_samples, q=None, y=None):
        """log p(x|z, y), log p(z) + log p(y), log q(z|x, y) + log q(y|x) at y ~ q(y|x), z ~ q(z|x, y)."""
        if y is not None:
            return super().log_weights(x, num_samples, y=y)
        h = self.encode(x)
        qy = self.q_y(h)
        y1h = qy.sample((num_samples,))  # (K, n, classes)
        qz = self.posterior(join(h, y1h))
        z = qz.rsample()
        log_p = self.prior(x.shape[0]).log_prob(z) - math.log(self.classes)
        return self.likelihood(self.decode(z, y1h)).log_prob(x), log_p, qz.log_prob(z) + qy.log_prob(y1h)

    @property
    def decodes_per_sample(self):
        return self.classes

    def log_importance_weights(self, x, num_samples, q=None, y=None):
        """Without labels, y summed out exactly: each draw takes one z_y ~ q(z|x, y) for every label y, and
        w = sum_y p(y) p(x|z_y, y) p(z_y) / q(z_y|x, y), an unbiased estimate of p(x) that visits every label
        whatever q(y|x) says. With labels, log p(x, z|y) - log q(z|x, y)."""
        if y is not None:
            return super().log_importance_weights(x, num_samples, y=y)
        h = self.encode(x)
        every = torch.eye(self.classes, device=h.device, dtype=h.dtype).unsqueeze(1)  # (Y, 1, Y)
        qz = self.posterior(join(h, every))  # batch (Y, n)
        z = qz.sample((num_samples,))  # (K, Y, n, latent_dim)
        log_w = (
            self.likelihood(self.decode(z, every)).log_prob(x)
            + self.prior(x.shape[0]).log_prob(z)
            - qz.log_prob(z)
            - math.log(self.classes)
        )  # (K, Y, n): p(y) uniform
        return torch.logsumexp(log_w, dim=1)

    def guide_parameters(self):
        return [*self.encoder.parameters(), *self.classifier.parameters(), *self.posterior.parameters()]
