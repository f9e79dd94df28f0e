"""Checks for notebook 4, affine coupling.

The student writes ``ZeroConv2d(in_channels, out_channels)``, ``AdditiveCoupling(in_channels,
hidden)`` and ``AffineCoupling(in_channels, hidden)``. The first half of the channels
conditions, the second half is transformed (the course's convention, rosinality's too).
"""
from __future__ import annotations

import torch

from ..density import jacobian_logdet
from .common import _as_pair, _call, _fail, _fmt, _ok, _quiet, check_flow_layer

__all__ = ["check_zero_conv", "check_additive_coupling", "check_affine_coupling"]


def _perturb(layer, scale: float = 0.3) -> None:
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(scale * torch.randn_like(p))


@_quiet
def check_zero_conv(cls: type, *, in_channels: int = 3, out_channels: int = 4, hw: tuple = (5, 4), seed: int = 0) -> None:
    """Outputs exactly zero at init, keeps the spatial size, and can learn (gradients reach it)."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "ZeroConv2d")
    torch.manual_seed(seed)
    conv = _call(cls, in_channels, out_channels, what=f"{name}({in_channels}, {out_channels})")
    x = torch.randn(2, in_channels, *hw)
    y = _call(conv, x, what=f"{name}.forward")
    if not torch.is_tensor(y) or y.shape != (2, out_channels, *hw):
        _fail(name, f"output shape {tuple(getattr(y, 'shape', ()))}, expected {(2, out_channels, *hw)}",
              "a 3x3 convolution with padding=1 keeps height and width.")
    if y.abs().max() != 0:
        _fail(name, f"the output at init is not zero (up to {float(y.detach().abs().max()):.3g})",
              "initialise the convolution's weight and bias to zero (nn.init.zeros_), so the coupling starts as the identity.")
    (y * torch.randn_like(y)).sum().backward()  # linear in y: y**2 would give zero gradients at y = 0
    if not any(p.grad is not None and p.grad.abs().sum() > 0 for p in conv.parameters()):
        _fail(name, "no parameter receives a gradient at init: it could never learn",
              "zero the weights, but keep them trainable parameters (and do not multiply the output by a constant 0).")
    _ok(f"{name} ({in_channels} -> {out_channels} channels)")


def _check_coupling(cls, name, channels, batch, hw, seed, dtype, hidden, affine):
    __tracebackhide__ = True
    torch.manual_seed(seed)
    layer = _call(cls, channels, hidden, what=f"{name}({channels}, {hidden})")
    layer = layer.to(dtype)
    x = torch.randn(batch, channels, *hw, dtype=dtype)
    half = channels // 2

    # Identity at init: the last layer of NN() is zero.
    y, logdet = _as_pair(_call(layer, x, what=f"{name}.forward"), f"{name}.forward")
    if y.shape != x.shape:
        _fail(f"{name}.forward", f"output shape {tuple(y.shape)}, input {tuple(x.shape)}")
    tol = 1e-5 if dtype == torch.float32 else 1e-6  # a scale constant computed in float32 is fine
    if not torch.allclose(y, x, atol=tol, rtol=0) or not torch.allclose(logdet, torch.zeros_like(logdet), atol=tol * x[0].numel()):
        cause = "zero-initialise the last layer of the coupling network (use ZeroConv2d), so that each coupling starts as the identity."
        if affine and torch.allclose(y[:, half:], x[:, half:] * torch.sigmoid(torch.tensor(2.0, dtype=dtype)), atol=1e-5):
            cause = "at h = 0 the scale must be exactly 1: use s = sigmoid(h + 2) / sigmoid(2)."
        _fail(f"{name} init", f"a fresh layer is not the identity (output off by up to {float((y - x).detach().abs().max()):.3g}, "
              f"log-det {_fmt(logdet)})", cause)

    _perturb(layer)
    with torch.no_grad():
        y, _ = layer(x)
    if not torch.equal(y[:, :half], x[:, :half]):
        _fail(f"{name}.forward", "the first half of the channels changed; it conditions the coupling and must pass through unchanged",
              "split with x_a, x_b = x.chunk(2, 1), transform only x_b, and return torch.cat([x_a, y_b], 1).")
    if torch.allclose(y[:, half:], x[:, half:], atol=1e-6):
        _fail(f"{name}.forward", "after training-like changes to the parameters the second half is still unchanged: the coupling does nothing")

    # The Jacobian on one small sample: identity block, zero cross block (so its log-det is the
    # log-det of the transformed block alone).
    x1 = x[:1]
    jac = torch.autograd.functional.jacobian(lambda v: _as_pair(layer(v), name)[0], x1).reshape(x1.numel(), x1.numel())
    n_a = half * hw[0] * hw[1]
    if not torch.allclose(jac[:n_a, :n_a], torch.eye(n_a, dtype=dtype)) or jac[:n_a, n_a:].abs().max() > 0:
        _fail(f"{name}.forward", "d y_a / d x must be [I, 0]: the conditioning half depends only on itself, unchanged")

    known = None
    if affine:
        def known(want):
            net_out = None
            for attr in ("net", "nn", "network"):
                if hasattr(layer, attr):
                    with torch.no_grad():
                        net_out = getattr(layer, attr)(x[:, :half])
                    break
            if net_out is None or net_out.shape[1] != 2 * (channels - half):
                return []
            _, t = net_out.chunk(2, 1)
            return [(want + t.flatten(1).sum(1), "the shift t entered the log-det; only the scale changes volume: log-det = sum(log s).")]

    check_flow_layer(layer, x, name=name, known_mistakes=known,
                     inverse_cause=("undo forward in reverse order: forward adds t then multiplies by s, so the inverse divides by s, then subtracts t."
                                    if affine else "the inverse subtracts NN(y_a) from y_b."))
    return layer


@_quiet
def check_additive_coupling(cls: type, *, channels: int = 4, batch: int = 2, hw: tuple = (2, 2), seed: int = 0,
                            dtype: torch.dtype = torch.float64, hidden: int = 8) -> None:
    """``y_b = x_b + NN(x_a)``: identity at init, invertible, log-det 0, first half unchanged."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "AdditiveCoupling")
    _check_coupling(cls, name, channels, batch, hw, seed, dtype, hidden, affine=False)
    _ok(f"{name} (C={channels}, {hw[0]}x{hw[1]})")


@_quiet
def check_affine_coupling(cls: type, *, channels: int = 4, batch: int = 2, hw: tuple = (2, 2), seed: int = 0,
                          dtype: torch.dtype = torch.float64, hidden: int = 8) -> None:
    """``y_b = (x_b + t) * s``: identity at init, invertible, log-det ``sum(log s)``, triangular Jacobian."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "AffineCoupling")
    layer = _check_coupling(cls, name, channels, batch, hw, seed, dtype, hidden, affine=True)
    # The log-det must follow the data: a coupling whose log-det is the same for every sample is not affine.
    x = torch.randn(4, channels, *hw, dtype=dtype)
    ld = jacobian_logdet(layer, x)
    if float(ld.std()) < 1e-6:
        _fail(name, "the log-det does not depend on the input: the scale s must come from NN(x_a)")
    _ok(f"{name} (C={channels}, {hw[0]}x{hw[1]})")
