"""Encoder and decoder networks.

An encoder maps data ``x`` of shape ``(..., *data_shape)`` to features ``(..., out_features)``;
a posterior head (``posteriors.py``) turns the features into q(z|x). A decoder maps
``z`` of shape ``(..., latent_dim)`` to ``(..., out_features)`` raw outputs, which a
likelihood (``likelihoods.py``) turns into p(x|z). Any number of leading batch dimensions
is allowed, so vectorised particles (a leading K axis) just work.
"""

import math

import pyro.distributions.transforms as T
import torch
from torch import nn

from ..checks import positive
from ..errors import ConfigError, DataError
from ..registry import Registry

#: the encoders by their config name (``model.encoder``)
ENCODERS = Registry("model.encoder", context=("data_shape",))
#: the decoders by their config name (``model.decoder``)
DECODERS = Registry("model.decoder", context=("latent_dim", "out_features", "data_shape"))


class ReLU(nn.Threshold):
    """max(x, 0) as ``threshold(x, 0, 0)``: nn.ReLU's values and gradients (0 at x = 0), but its backward
    reads x, not the output, so a compiled step can hold the backward pass (``compiled.py``)."""

    def __init__(self):
        super().__init__(0.0, 0.0)


_ACTIVATIONS = {"softplus": nn.Softplus, "relu": ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU}


def _activation(name):
    if name not in _ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; valid: {', '.join(sorted(_ACTIVATIONS))}")
    return _ACTIVATIONS[name]


def _check_hidden(hidden):
    if isinstance(hidden, int):
        hidden = [hidden]
    if not isinstance(hidden, (list, tuple)):
        raise ConfigError(f"'hidden' must be a list of positive integers ([] for none), got {hidden!r}")
    return [positive("each 'hidden' size", h, integer=True) for h in hidden]


class Linear(nn.Linear):
    """y = x W^T + b, nn.Linear's parameters and numbers, written as ``addmm`` on x flattened to two
    dimensions. ``F.linear`` makes W^T inside one traced op, so a traced backward would read a
    tensor the tracer never saw; here every tensor the backward reads is recorded, and a compiled
    step can hold the backward pass too (``compiled.py``)."""

    def forward(self, x):
        flat = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
        y = torch.mm(flat, self.weight.t()) if self.bias is None else torch.addmm(self.bias, flat, self.weight.t())
        return y if x.dim() == 2 else y.reshape(*x.shape[:-1], y.shape[-1])


def mlp(sizes, activation, final_activation):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(_activation(activation)())
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """The base of encoders. A subclass provides ``__init__(data_shape, **params)``, sets
    ``out_features``, and maps x of shape (..., *data_shape) to features (..., out_features)."""

    out_features = None

    def forward(self, x):
        raise NotImplementedError


class Decoder(nn.Module):
    """The base of decoders. A subclass provides ``__init__(latent_dim, out_features, data_shape, **params)``
    and maps z of shape (..., latent_dim) to raw likelihood parameters (..., out_features), where
    out_features = likelihood.params_per_element * prod(data_shape)."""

    def forward(self, z):
        raise NotImplementedError


@ENCODERS.register("mlp")
class MLPEncoder(Encoder):
    """h = act(W_k ... act(W_1 flatten(x))): features for the posterior head."""

    def __init__(self, data_shape, hidden=(400,), activation="softplus"):
        super().__init__()
        self.data_shape = tuple(data_shape)
        hidden = _check_hidden(hidden)
        self.out_features = hidden[-1] if hidden else math.prod(self.data_shape)
        self.net = mlp([math.prod(self.data_shape), *hidden], activation, final_activation=True)

    def forward(self, x):
        return self.net(x.reshape(*x.shape[: x.dim() - len(self.data_shape)], -1))


@DECODERS.register("mlp")
class MLPDecoder(Decoder):
    """out = W_k act(... act(W_1 z)): raw likelihood parameters, flattened."""

    def __init__(self, latent_dim, out_features, data_shape=None, hidden=(400,), activation="softplus"):
        super().__init__()
        hidden = _check_hidden(hidden)
        self.net = mlp([latent_dim, *hidden, out_features], activation, final_activation=False)

    def forward(self, z):
        return self.net(z)


def _conv_shape(data_shape):
    if len(data_shape) != 3 or data_shape[1] % 4 or data_shape[2] % 4:
        raise ConfigError(
            f"the conv networks need (channels, height, width) data with height and width "
            f"divisible by 4; this data has shape {tuple(data_shape)}: use kind = \"mlp\""
        )
    return data_shape


@ENCODERS.register("conv")
class ConvEncoder(Encoder):
    """Two stride-2 convolutions (channels c, 2c), then a dense layer of ``hidden`` units."""

    def __init__(self, data_shape, channels=32, hidden=256, activation="relu"):
        super().__init__()
        c, h, w = self.data_shape = _conv_shape(tuple(data_shape))
        act = _activation(activation)
        self.net = nn.Sequential(
            nn.Conv2d(c, channels, 4, 2, 1),
            act(),
            nn.Conv2d(channels, 2 * channels, 4, 2, 1),
            act(),
            nn.Flatten(),
            Linear(2 * channels * (h // 4) * (w // 4), hidden),
            act(),
        )
        self.out_features = hidden

    def forward(self, x):
        batch = x.shape[:-3]
        return self.net(x.reshape(-1, *self.data_shape)).reshape(*batch, -1)


@DECODERS.register("conv")
class ConvDecoder(Decoder):
    """Mirror of the conv encoder: dense, then two stride-2 transposed convolutions."""

    def __init__(self, latent_dim, out_features, data_shape, channels=32, hidden=256, activation="relu"):
        super().__init__()
        c, h, w = _conv_shape(tuple(data_shape))
        self.out_channels = out_features // (h * w)
        self.grid = (2 * channels, h // 4, w // 4)
        act = _activation(activation)
        self.dense = nn.Sequential(Linear(latent_dim, hidden), act(), Linear(hidden, math.prod(self.grid)), act())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(2 * channels, channels, 4, 2, 1),
            act(),
            nn.ConvTranspose2d(channels, self.out_channels, 4, 2, 1),
        )

    def forward(self, z):
        batch = z.shape[:-1]
        out = self.deconv(self.dense(z).reshape(-1, *self.grid))
        return out.reshape(*batch, -1)


class ResidualBlock(nn.Module):
    """x + conv3x3(act(conv3x3(act(x)))): a pre-activation residual block at constant width."""

    def __init__(self, width, activation):
        super().__init__()
        act = _activation(activation)
        self.net = nn.Sequential(act(), nn.Conv2d(width, width, 3, 1, 1), act(), nn.Conv2d(width, width, 3, 1, 1))

    def forward(self, x):
        return x + self.net(x)


def _stages(data_shape, widths, blocks):
    widths = _check_hidden(widths)
    if not widths:
        raise ConfigError("a resnet needs at least one width (model.encoder.widths = [32, 64, 128])")
    positive("resnet blocks", blocks, integer=True)
    if len(data_shape) != 3:
        raise ConfigError(
            f"the resnet networks need (channels, height, width) images; this data has shape "
            f"{tuple(data_shape)}: use kind = \"mlp\""
        )
    c, h, w = data_shape
    f = 2 ** len(widths)
    if h % f or w % f:
        raise ConfigError(
            f"{len(widths)} resnet stages halve the image {len(widths)} times, so height and width must "
            f"be divisible by {f}; this data is {h}x{w}: use fewer widths or set data.image_size"
        )
    return widths, (widths[-1], h // f, w // f)


@ENCODERS.register("resnet")
class ResNetEncoder(Encoder):
    """A residual conv net: a 3x3 stem, then per width ``blocks`` residual blocks and a stride-2
    convolution to the next width (each stage halves the image), then a dense layer of ``hidden``."""

    def __init__(self, data_shape, widths=(32, 64, 128), blocks=1, hidden=256, activation="elu"):
        super().__init__()
        self.data_shape = tuple(data_shape)
        widths, grid = _stages(self.data_shape, widths, blocks)
        layers = [nn.Conv2d(self.data_shape[0], widths[0], 3, 1, 1)]
        for i, width in enumerate(widths):
            layers += [ResidualBlock(width, activation) for _ in range(blocks)]
            layers.append(nn.Conv2d(width, widths[min(i + 1, len(widths) - 1)], 4, 2, 1))
        act = _activation(activation)
        self.net = nn.Sequential(*layers, act(), nn.Flatten(), Linear(math.prod(grid), hidden), act())
        self.out_features = hidden

    def forward(self, x):
        batch = x.shape[:-3]
        return self.net(x.reshape(-1, *self.data_shape)).reshape(*batch, -1)


@DECODERS.register("resnet")
class ResNetDecoder(Decoder):
    """The resnet encoder's mirror: dense to the smallest grid, then per width (widest first) a
    stride-2 transposed convolution and ``blocks`` residual blocks, then a 3x3 convolution to the
    likelihood's parameters per pixel."""

    def __init__(
        self, latent_dim, out_features, data_shape, widths=(32, 64, 128), blocks=1, hidden=256, activation="elu"
    ):
        super().__init__()
        widths, self.grid = _stages(tuple(data_shape), widths, blocks)
        c, h, w = data_shape
        act = _activation(activation)
        self.dense = nn.Sequential(Linear(latent_dim, hidden), act(), Linear(hidden, math.prod(self.grid)))
        layers = []
        for i, width in reversed(list(enumerate(widths))):
            layers.append(nn.ConvTranspose2d(widths[min(i + 1, len(widths) - 1)], width, 4, 2, 1))
            layers += [ResidualBlock(width, activation) for _ in range(blocks)]
        self.net = nn.Sequential(*layers, act(), nn.Conv2d(widths[0], out_features // (h * w), 3, 1, 1))

    def forward(self, z):
        batch = z.shape[:-1]
        return self.net(self.dense(z).reshape(-1, *self.grid)).reshape(*batch, -1)


class AutoregressiveFlow(nn.Module):
    """``layers`` affine autoregressive transforms with the coordinates reversed between layers;
    ``transforms()`` lists them for ``TransformedDistribution`` (``inverse=True``: each one inverted).
    With ``context_dim`` > 0 each autoregressive net also sees a context vector (Kingma et al. 2016's
    IAF conditioned on the encoder's features h): ``transforms(context=h)``."""

    def __init__(self, latent_dim, layers=2, hidden=None, context_dim=0):
        super().__init__()
        if latent_dim < 2:
            raise ConfigError("a flow needs latent_dim >= 2 (an autoregressive flow on one dimension is affine)")
        positive("flow layers", layers, integer=True)
        hidden = [hidden or 3 * latent_dim + 1]
        self.context_dim = int(context_dim)
        if self.context_dim:
            make = lambda: T.conditional_affine_autoregressive(latent_dim, self.context_dim, hidden_dims=hidden)  # noqa: E731
        else:
            make = lambda: T.affine_autoregressive(latent_dim, hidden_dims=hidden)  # noqa: E731
        self.flows = nn.ModuleList(make() for _ in range(layers))
        self.register_buffer("flip", torch.arange(latent_dim - 1, -1, -1))

    def transforms(self, inverse=False, context=None):
        if self.context_dim and context is None:
            raise DataError("this flow is conditioned on a context: pass transforms(context=h)")
        out = []
        for i, flow in enumerate(self.flows):
            if i:
                out.append(T.Permute(self.flip))
            flow = flow.condition(context) if self.context_dim else flow
            out.append(flow.inv if inverse else flow)
        return out
