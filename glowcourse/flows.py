"""Reference implementations of Glow's layers, for the notebooks that build on them.

Notebook 5 assembles Glow from these rather than from a student's earlier answers, so a
mistake in notebook 2 does not sink notebook 5. They follow the course convention (and
rosinality's glow-pytorch): ``forward(x) -> (y, logdet)`` and ``inverse(y) -> (x, logdet)``,
``logdet`` per sample, shape ``(B,)``, images NCHW.

Where the code departs from the paper it says so.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ActNorm", "random_rotation", "InvConv2d", "InvConv2dLU", "ZeroConv2d", "coupling_net",
    "AdditiveCoupling", "AffineCoupling", "squeeze", "unsqueeze", "gaussian_log_prob", "Split",
    "Permute", "FlowStep", "Glow",
]


class ActNorm(nn.Module):
    """Per-channel affine ``y = scale * (x + loc)`` with data-dependent initialisation (Glow, 3.1).

    On the first batch, ``loc = -mean`` and ``scale = 1 / std`` per channel, so that batch
    comes out with mean 0 and std 1; afterwards both are ordinary parameters. The
    ``initialized`` flag is a registered buffer, so it travels in the ``state_dict`` and a
    reloaded model does not re-initialise on its first batch. log-det: ``H * W * sum(log|scale|)``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.scale = nn.Parameter(torch.ones(1, num_channels, 1, 1))
        self.eps = eps
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)  # (C, B*H*W)
        self.loc.copy_(-flat.mean(1).view(1, -1, 1, 1))
        self.scale.copy_(1 / (flat.std(1).view(1, -1, 1, 1) + self.eps))
        self.initialized.fill_(True)

    def forward(self, x):
        # Under torch.compile the flag is not read: a tensor in an `if` would split the compiled
        # graph at every ActNorm. The fast path (glowcourse.training) compiles initialised models only.
        if not torch.compiler.is_compiling() and not self.initialized:
            self.initialize(x)
        _, _, h, w = x.shape
        logdet = h * w * torch.log(self.scale.abs()).sum()
        return self.scale * (x + self.loc), logdet.expand(x.shape[0])

    def inverse(self, y):
        _, _, h, w = y.shape
        logdet = -h * w * torch.log(self.scale.abs()).sum()
        return y / self.scale - self.loc, logdet.expand(y.shape[0])


def random_rotation(c: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random orthogonal ``c x c`` matrix (Glow's 1x1 convolution init): QR of a Gaussian matrix."""
    q, r = torch.linalg.qr(torch.randn(c, c, generator=generator))
    return q * torch.sign(torch.diagonal(r))  # signs fixed: Haar-distributed


class InvConv2d(nn.Module):
    """Invertible 1x1 convolution with a dense ``C x C`` weight (Glow, 3.2).

    log-det ``H * W * log|det W|``, which costs O(C^3) per call.
    """

    def __init__(self, num_channels: int, weight: torch.Tensor | None = None):
        super().__init__()
        w = random_rotation(num_channels) if weight is None else weight.clone()
        self.weight = nn.Parameter(w)

    def calc_weight(self) -> torch.Tensor:
        return self.weight

    def forward(self, x):
        _, _, h, w = x.shape
        logdet = h * w * torch.linalg.slogdet(self.weight).logabsdet
        return F.conv2d(x, self.weight[:, :, None, None]), logdet.expand(x.shape[0])

    def inverse(self, y):
        _, _, h, w = y.shape
        logdet = -h * w * torch.linalg.slogdet(self.weight).logabsdet
        return F.conv2d(y, torch.linalg.inv(self.weight)[:, :, None, None]), logdet.expand(y.shape[0])


class InvConv2dLU(nn.Module):
    """Invertible 1x1 convolution in the LU form ``W = P L (U + diag(s))`` (Glow, 3.2).

    ``P`` (a permutation) and ``sign(s)`` are fixed buffers; ``L`` (unit lower triangular),
    ``U`` (strictly upper) and ``log|s|`` are learned. Masks keep L and U triangular whatever
    the optimizer does. log-det ``H * W * sum(log|s|)``: O(C). Since ``sign(s)`` is fixed and
    ``|s| = exp(log|s|) > 0``, W can never become singular.
    """

    def __init__(self, num_channels: int, weight: torch.Tensor | None = None):
        super().__init__()
        w = random_rotation(num_channels) if weight is None else weight.clone()
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("l_mask", torch.tril(torch.ones_like(w), -1))
        self.register_buffer("eye", torch.eye(num_channels, dtype=w.dtype))
        self.w_l = nn.Parameter(lower)
        self.w_u = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def calc_weight(self) -> torch.Tensor:
        lower = self.w_l * self.l_mask + self.eye
        upper = self.w_u * self.l_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper

    def forward(self, x):
        _, _, h, w = x.shape
        logdet = h * w * self.log_s.sum()
        return F.conv2d(x, self.calc_weight()[:, :, None, None]), logdet.expand(x.shape[0])

    def inverse(self, y):
        _, _, h, w = y.shape
        logdet = -h * w * self.log_s.sum()
        return F.conv2d(y, torch.linalg.inv(self.calc_weight())[:, :, None, None]), logdet.expand(y.shape[0])


class ZeroConv2d(nn.Module):
    """A 3x3 convolution that starts at exactly zero, with a learned per-channel output scale.

    Glow's ``Conv2dZeros``: weights and bias are zero-initialised so a coupling network (or a
    split prior) starts by outputting 0, and the output is multiplied by ``exp(3 * scale)``
    (``scale`` also starting at 0) so the network can grow its output quickly once training
    starts. *Departure*: zero padding; Glow and rosinality pad with ones.

    ``rate`` (1 in Glow) multiplies every parameter where it enters:
    ``rate * conv(x) * exp(3 * rate * scale)``. With Adam, which moves each parameter by about
    the learning rate whatever the size of its gradient, the layer then learns at ``rate`` times
    the learning rate; at initialisation it outputs 0 whatever the rate. :class:`Split` uses
    ``rate=0.1`` for its prior (see there why).
    """

    def __init__(self, in_channels: int, out_channels: int, rate: float = 1.0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.scale = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.rate = rate

    def forward(self, x):
        return self.rate * self.conv(x) * torch.exp(3 * self.rate * self.scale)


def coupling_net(in_channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    """The coupling network NN(): conv 3x3, ReLU, conv 1x1, ReLU, zero-initialised conv 3x3.

    As in rosinality's glow-pytorch the first two convolutions start from N(0, 0.05^2) weights
    (Glow puts an ActNorm after each instead). The last is a :class:`ZeroConv2d`.
    """
    first = nn.Conv2d(in_channels, hidden, 3, padding=1)
    middle = nn.Conv2d(hidden, hidden, 1)
    for conv in (first, middle):
        nn.init.normal_(conv.weight, 0.0, 0.05)
        nn.init.zeros_(conv.bias)
    return nn.Sequential(first, nn.ReLU(), middle, nn.ReLU(), ZeroConv2d(hidden, out_channels))


SIGMOID_2 = 1 / (1 + math.exp(-2))  # sigmoid(2)


def _halves(x: torch.Tensor):
    """(first C//2 channels, the rest): the same as x.chunk(2, 1) for the even C Glow uses."""
    c = x.shape[1] // 2
    return x[:, :c], x[:, c:]


class AdditiveCoupling(nn.Module):
    """``y_a = x_a``, ``y_b = x_b + NN(x_a)`` (NICE; Glow's "additive" ablation). log-det 0."""

    def __init__(self, in_channels: int, hidden: int = 512):
        super().__init__()
        self.net = coupling_net(in_channels // 2, hidden, in_channels - in_channels // 2)

    def forward(self, x):
        x_a, x_b = _halves(x)
        return torch.cat([x_a, x_b + self.net(x_a)], 1), x.new_zeros(x.shape[0])

    def inverse(self, y):
        y_a, y_b = _halves(y)
        return torch.cat([y_a, y_b - self.net(y_a)], 1), y.new_zeros(y.shape[0])


class AffineCoupling(nn.Module):
    """``y_a = x_a``, ``y_b = (x_b + t) * s`` with ``(h, t) = NN(x_a)`` (Glow, 3.3).

    The scale: the paper writes ``s = exp(h)``; Glow's code and rosinality's use
    ``s = sigmoid(h + 2)``, bounded in (0, 1), which keeps deep stacks from blowing up. Here
    ``s = sigmoid(h + 2) / sigmoid(2)``: the same bounded, smooth scale, divided by a
    constant so that the zero-initialised last layer (h = t = 0) gives exactly the identity,
    as the paper's text says it should (with plain ``sigmoid(h + 2)`` a fresh coupling would
    scale ``x_b`` by 0.88). log-det ``sum(log s)`` over the transformed half; the shift adds nothing.
    """

    def __init__(self, in_channels: int, hidden: int = 512):
        super().__init__()
        self.net = coupling_net(in_channels // 2, hidden, 2 * (in_channels - in_channels // 2))

    def _scale_shift(self, x_a):
        h, t = self.net(x_a).chunk(2, 1)
        # Under autocast (glowcourse.training) the network's output may be bfloat16; the scale
        # and its log, which enter the log-det, are computed in the input's precision.
        return torch.sigmoid(h.to(x_a.dtype) + 2) / SIGMOID_2, t

    def forward(self, x):
        x_a, x_b = _halves(x)
        s, t = self._scale_shift(x_a)
        return torch.cat([x_a, (x_b + t) * s], 1), torch.log(s).flatten(1).sum(1)

    def inverse(self, y):
        y_a, y_b = _halves(y)
        s, t = self._scale_shift(y_a)
        return torch.cat([y_a, y_b / s - t], 1), -torch.log(s).flatten(1).sum(1)


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """Space to depth, factor 2: ``(B, C, H, W) -> (B, 4C, H/2, W/2)``; each 2x2 block becomes
    4 channels of one pixel (channel ``4c + 2di + dj`` holds ``x[c, 2i + di, 2j + dj]``)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """Depth to space, the inverse of :func:`squeeze`."""
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, 2 * h, 2 * w)


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, log_sd: torch.Tensor) -> torch.Tensor:
    """``log N(z; mean, exp(log_sd)^2)`` per sample, summed over all but the batch dimension."""
    return (-0.5 * math.log(2 * math.pi) - log_sd - 0.5 * (z - mean) ** 2 * torch.exp(-2 * log_sd)).flatten(1).sum(1)


class Split(nn.Module):
    """Factor out half of the channels with a learned prior (Glow, figure 2).

    ``forward(x) -> (x_a, z, log_p)``: ``x_a`` (the first half) goes on through the next level;
    ``z`` (the second half) is a latent with a Gaussian prior. By default (Glow's ``split2d``)
    the prior's mean and log-std come from a zero-initialised convolution of ``x_a``, so it
    starts as the standard normal. With ``conditional=False`` they are per-channel parameters
    instead, multiplied by 3 where they enter, to learn quickly (normflows' ``GlowBase``; RealNVP's
    factored-out latents). ``inverse(x_a, z=None, temperature=1)`` rebuilds ``x``, sampling ``z``
    from the prior at the given temperature when it is not given.

    *Departure*: the conditional prior learns at ``prior_rate = 0.1`` of the learning rate
    (:class:`ZeroConv2d`'s ``rate``; Glow: 1). Where the kept half nearly determines the split-off
    one (an image's flat background), a conditional prior can shrink its standard deviation
    fast; at full rate it does so before the flow steps below have learned their part, and the
    gradient it sends back, ``(z - mean) / sd^2``, grows as ``sd`` shrinks. In the course's
    benchmark (``scripts/bench_glow.py``, 600 steps, 3 seeds) the slower prior ended at 2.440 test
    bits/dim against 2.542 at Glow's rate and 2.475 with per-channel priors.
    ``prior_rate=1.0`` gives Glow's ``split2d``.
    """

    def __init__(self, channels: int, conditional: bool = True, prior_rate: float = 0.1):
        super().__init__()
        out = channels - channels // 2
        self.conditional = conditional
        if conditional:
            self.prior = ZeroConv2d(channels // 2, 2 * out, rate=prior_rate)
        else:
            self.prior_mean = nn.Parameter(torch.zeros(1, out, 1, 1))
            self.prior_log_sd = nn.Parameter(torch.zeros(1, out, 1, 1))

    def prior_params(self, x_a):
        if not self.conditional:
            shape = (x_a.shape[0], self.prior_mean.shape[1], *x_a.shape[2:])
            return (3 * self.prior_mean).expand(shape), (3 * self.prior_log_sd).expand(shape)
        mean, log_sd = self.prior(x_a).chunk(2, 1)
        return mean, log_sd

    def forward(self, x):
        x_a, z = _halves(x)
        mean, log_sd = self.prior_params(x_a)
        return x_a, z, gaussian_log_prob(z, mean, log_sd)

    def inverse(self, x_a, z=None, temperature: float = 1.0):
        if z is None:
            mean, log_sd = self.prior_params(x_a)
            z = mean + temperature * torch.exp(log_sd) * torch.randn_like(mean)
        return torch.cat([x_a, z], 1)


class Permute(nn.Module):
    """A fixed channel permutation, RealNVP's alternative to the 1x1 convolution: ``"reverse"``
    flips the channel order, ``"shuffle"`` draws a random order once. log-det 0."""

    def __init__(self, channels: int, kind: str = "reverse"):
        super().__init__()
        if kind not in ("reverse", "shuffle"):
            raise ValueError(f"kind must be 'reverse' or 'shuffle', got {kind!r}")
        perm = torch.arange(channels).flip(0) if kind == "reverse" else torch.randperm(channels)
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward(self, x):
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, y):
        return y[:, self.inverse_perm], y.new_zeros(y.shape[0])


PERMUTATIONS = ("lu", "dense", "reverse", "shuffle")


class FlowStep(nn.Module):
    """One step of flow: ActNorm, a channel mixing, a coupling (Glow, figure 2a).

    ``permutation``: ``"lu"`` (the 1x1 convolution in LU form, Glow's default), ``"dense"``,
    or RealNVP's fixed ``"reverse"`` / ``"shuffle"``; ``affine=False`` gives additive coupling.
    These are the choices the paper's figure 3 compares.
    """

    def __init__(self, channels: int, hidden: int = 512, affine: bool = True, permutation: str = "lu"):
        super().__init__()
        if permutation not in PERMUTATIONS:
            raise ValueError(f"permutation must be one of {PERMUTATIONS}, got {permutation!r}")
        self.actnorm = ActNorm(channels)
        self.invconv = {"lu": InvConv2dLU, "dense": InvConv2d}[permutation](channels) if permutation in ("lu", "dense") \
            else Permute(channels, permutation)
        self.coupling = (AffineCoupling if affine else AdditiveCoupling)(channels, hidden)

    def forward(self, x):
        x, ld1 = self.actnorm(x)
        x, ld2 = self.invconv(x)
        x, ld3 = self.coupling(x)
        return x, ld1 + ld2 + ld3

    def inverse(self, y):
        y, ld3 = self.coupling.inverse(y)
        y, ld2 = self.invconv.inverse(y)
        y, ld1 = self.actnorm.inverse(y)
        return y, ld1 + ld2 + ld3


class Glow(nn.Module):
    """The multi-scale Glow of figure 2b: L levels of squeeze, K flow steps, split.

    ``forward(x) -> (zs, log_prob)``: the latents of every level (the split-off halves, then
    the top) and ``log p(x)`` per sample, the priors' log-densities plus every step's log-det.
    ``inverse(zs) -> x`` and ``sample(n, temperature) -> x``. ``x`` is expected centred,
    e.g. dequantized values minus 0.5 (a translation: log-det 0).
    """

    def __init__(self, in_channels: int, K: int, L: int, hidden: int = 512, image_size: int = 32,
                 affine: bool = True, permutation: str = "lu", conditional_prior: bool = True,
                 prior_rate: float = 0.1):
        super().__init__()
        self.levels = nn.ModuleList()
        self.splits = nn.ModuleList()
        c = in_channels
        for level in range(L):
            c *= 4
            self.levels.append(nn.ModuleList([FlowStep(c, hidden, affine, permutation) for _ in range(K)]))
            if level < L - 1:
                self.splits.append(Split(c, conditional_prior, prior_rate))
                c //= 2
        self.top_shape = (c, image_size // 2**L, image_size // 2**L)
        self.prior_mean = nn.Parameter(torch.zeros(1, c, 1, 1))  # the top level's learned prior
        self.prior_log_sd = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x):
        zs, log_p = [], 0.0
        logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i, steps in enumerate(self.levels):
            x = squeeze(x)
            for step in steps:
                x, ld = step(x)
                logdet = logdet + ld
            if i < len(self.splits):
                x, z, lp = self.splits[i](x)
                zs.append(z)
                log_p = log_p + lp
        zs.append(x)
        log_p = log_p + gaussian_log_prob(x, self.prior_mean, self.prior_log_sd)
        return zs, log_p + logdet

    def inverse(self, zs):
        x = zs[-1]
        for i in reversed(range(len(self.levels))):
            if i < len(self.splits):
                x = self.splits[i].inverse(x, zs[i])
            for step in reversed(self.levels[i]):
                x, _ = step.inverse(x)
            x = unsqueeze(x)
        return x

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0):
        mean = self.prior_mean.expand(n, *self.top_shape)
        x = mean + temperature * torch.exp(self.prior_log_sd) * torch.randn_like(mean)
        for i in reversed(range(len(self.levels))):
            if i < len(self.splits):
                x = self.splits[i].inverse(x, None, temperature)
            for step in reversed(self.levels[i]):
                x, _ = step.inverse(x)
            x = unsqueeze(x)
        return x
