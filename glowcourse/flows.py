"""Reference implementations of Glow's layers, for the notebooks that build on them.

Notebook 5 assembles Glow from these rather than from a student's earlier answers, so a
mistake in notebook 2 does not sink notebook 5. They follow the course convention (and
rosinality's glow-pytorch): ``forward(x) -> (y, logdet)`` and ``inverse(y) -> (x, logdet)``,
``logdet`` per sample, shape ``(B,)``, images NCHW.

Where the code departs from the paper it says so.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ActNorm", "random_rotation", "InvConv2d", "InvConv2dLU"]


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
        if not self.initialized:
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
