"""Densities and the ground truth for log-determinants.

:func:`jacobian_logdet` is the brute-force log|det J| that notebook 1 has students write and
that every later check compares a layer's ``logdet`` against: the autograd Jacobian of one
sample, flattened to ``D x D``, then ``slogdet``. It costs O(D) backward passes and O(D^3)
for the determinant, so it is for small inputs (D up to a few hundred), which is all a
check needs.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["standard_normal_log_prob", "jacobian_logdet", "bits_per_dim"]

LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` per sample: sums over every dimension but the first."""
    return (-0.5 * (z**2 + LOG_2PI)).flatten(1).sum(1)


def _first(out):
    # Layers return (y, logdet); plain functions return y.
    return out[0] if isinstance(out, (tuple, list)) else out


def jacobian_logdet(f: Callable, x: torch.Tensor, *, create_graph: bool = False) -> torch.Tensor:
    """Per-sample ``log|det df/dx|`` by autograd and ``slogdet``, shape ``(B,)``.

    ``f`` maps a batch ``(B, ...)`` to a batch of the same size ``(B, ...)``, returning ``y`` or
    ``(y, logdet)``. Each sample is pushed through ``f`` alone (a batch of one), so layers
    must not mix samples, which no flow layer may. With ``create_graph=True`` the result is
    differentiable with respect to ``f``'s parameters: the ground truth for the gradient that
    training takes through a layer's log-det.
    """
    out = []
    for i in range(x.shape[0]):
        xi = x[i : i + 1].detach()
        shape = xi.shape

        def g(v: torch.Tensor) -> torch.Tensor:
            return _first(f(v.reshape(shape))).reshape(-1)

        jac = torch.autograd.functional.jacobian(g, xi.reshape(-1), create_graph=create_graph)
        if jac.shape[0] != jac.shape[1]:
            raise ValueError(f"f changes the number of dimensions ({jac.shape[1]} -> {jac.shape[0]}): not a bijection")
        out.append(torch.linalg.slogdet(jac).logabsdet)
    return torch.stack(out)


def bits_per_dim(log_prob: torch.Tensor, n_dims: int, n_bins: int) -> torch.Tensor:
    """Bits per dimension of discrete data from the density of its dequantized version.

    ``log_prob`` is ``log p(y)`` in nats for ``y = (x + u) / n_bins`` in ``[0, 1)^D``. Scaling
    by ``1 / n_bins`` per dimension adds ``D log n_bins`` to ``-log p``; then nats -> bits and
    per dimension: ``bpd = (-log p(y) + D log n_bins) / (D ln 2)``.
    """
    return (-log_prob + n_dims * math.log(n_bins)) / (n_dims * math.log(2))
