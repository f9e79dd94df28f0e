"""Checks for notebook 3, the invertible 1x1 convolution, dense and LU.

The student writes ``random_rotation(c)``, ``InvConv2d(num_channels)`` and
``InvConv2dLU(num_channels, weight=None)``; both classes expose ``calc_weight()``, the
effective ``C x C`` matrix. The LU layer may decompose with ``torch.linalg.lu`` or
``scipy.linalg.lu`` and invert by triangular solves or ``inverse``: only the behaviour is checked.
"""
from __future__ import annotations

from typing import Callable

import torch

from .common import _as_pair, _call, _close, _fail, _fmt, _ok, _quiet, check_flow_layer

__all__ = ["check_random_rotation", "check_invconv_dense", "check_invconv_lu", "check_invconv_lu_training"]


def _weight(layer, name: str) -> torch.Tensor:
    __tracebackhide__ = True
    w = _call(layer.calc_weight, what=f"{name}.calc_weight") if hasattr(layer, "calc_weight") else None
    if not torch.is_tensor(w) or w.dim() != 2 or w.shape[0] != w.shape[1]:
        _fail(name, "calc_weight() must return the effective C x C weight matrix")
    return w


def _orthogonal(w: torch.Tensor, tol: float) -> bool:
    eye = torch.eye(w.shape[0], dtype=torch.float64)
    w = w.detach().double()
    return bool(torch.allclose(w @ w.T, eye, atol=tol))


def _known_hw(h: int, w: int):
    npix = h * w

    def known(want):
        return [
            (want / npix, f"the log-det is H*W = {npix} times too small: the same C x C matrix acts on every one of the H*W pixels; multiply by H*W."),
            (want * npix, f"the log-det is H*W = {npix} times too large: multiply by H*W once."),
        ]

    return known


@_quiet
def check_random_rotation(fn: Callable, *, sizes: tuple = (1, 3, 16), seed: int = 0) -> None:
    """``random_rotation(c)``: a random orthogonal ``c x c`` matrix, different on each call."""
    __tracebackhide__ = True
    torch.manual_seed(seed)
    for c in sizes:
        q = _call(fn, c, what=f"random_rotation({c})")
        if not torch.is_tensor(q) or q.shape != (c, c):
            _fail("random_rotation", f"returned {getattr(q, 'shape', type(q).__name__)}, expected a ({c}, {c}) tensor")
        if not _orthogonal(q, 1e-5):
            err = float((q.detach().double() @ q.detach().double().T - torch.eye(c, dtype=torch.float64)).abs().max())
            _fail("random_rotation", f"Q Q^T differs from the identity by up to {err:.3g}: not orthogonal",
                  "take the Q of the QR decomposition of a random Gaussian matrix: torch.linalg.qr(torch.randn(c, c))[0].")
    if max(sizes) > 1:
        c = max(sizes)
        a, b = _call(fn, c, what="random_rotation"), _call(fn, c, what="random_rotation")
        if torch.allclose(a, b):
            _fail("random_rotation", "two calls returned the same matrix", "draw a new random matrix on each call.")
        if torch.allclose(a.abs(), torch.eye(c)):
            _fail("random_rotation", "returned a (signed) identity: orthogonal, but not a random rotation")
    _ok(f"random_rotation (sizes {', '.join(map(str, sizes))})")


@_quiet
def check_invconv_dense(cls: type, *, channels: int = 3, batch: int = 2, hw: tuple = (2, 3), seed: int = 0,
                        dtype: torch.dtype = torch.float64) -> None:
    """Dense 1x1 conv: orthogonal at init, invertible, log-det ``H*W*log|det W|``, also at C = 64."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "InvConv2d")
    torch.manual_seed(seed)
    layer = _call(cls, channels, what=f"{name}({channels})").to(dtype)
    w0 = _weight(layer, name)
    if not _orthogonal(w0, 1e-5):
        _fail(f"{name} init", "the weight is not orthogonal at init", "initialise it with random_rotation(num_channels).")
    with torch.no_grad():  # away from orthogonal, where log|det W| = 0 would hide mistakes
        for p in layer.parameters():
            p.add_(0.4 * torch.randn_like(p))
    x = torch.randn(batch, channels, *hw, dtype=dtype)
    check_flow_layer(layer, x, name=name, known_mistakes=_known_hw(*hw),
                     inverse_cause="the inverse convolves with W^-1 (torch.linalg.inv(W)), not with W or W^T (W is orthogonal only at init).")
    _check_big(cls, name, dtype, seed)
    _ok(f"{name} (C={channels}, {hw[0]}x{hw[1]}; and C=64)")


def _check_big(cls, name, dtype, seed, channels: int = 64, hw=(2, 2)):
    """At C = 64 the autograd Jacobian is too big to be quick: compare with slogdet of calc_weight()."""
    __tracebackhide__ = True
    torch.manual_seed(seed + 1)
    layer = _call(cls, channels, what=f"{name}({channels})").to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, channels, *hw, dtype=dtype)
    y, logdet = _as_pair(_call(layer, x, what=f"{name}.forward at C={channels}"), f"{name}.forward")
    w = _weight(layer, name).detach()
    want = hw[0] * hw[1] * torch.linalg.slogdet(w.double()).logabsdet
    if not _close(logdet.detach(), want.expand(2).to(logdet.dtype), rtol=1e-5, atol=1e-5):
        _fail(f"{name}.forward", f"at C={channels}, logdet {_fmt(logdet)} but H*W*log|det W| from slogdet is {float(want):.6g}")
    y_ref = torch.einsum("oc,bchw->bohw", w.to(x.dtype), x)
    if not torch.allclose(y, y_ref, atol=1e-5, rtol=1e-5):
        _fail(f"{name}.forward", f"at C={channels}, the output is not the 1x1 convolution with calc_weight()")


def _lu_suspects(layer) -> list[str]:
    """Parameters that look like P (a permutation matrix) or sign(s) (a vector of +-1)."""
    out = []
    for k, p in layer.named_parameters():
        v = p.detach()
        if v.dim() == 2 and v.shape[0] == v.shape[1] and v.shape[0] > 1 and bool(((v == 0) | (v == 1)).all()) \
                and bool((v.sum(0) == 1).all()) and bool((v.sum(1) == 1).all()):
            out.append(f"{k} (a permutation matrix: P)")
        elif v.dim() == 1 and v.numel() > 1 and bool((v.abs() == 1).all()) and bool((v < 0).any()):
            out.append(f"{k} (all +-1: sign(s))")
    return out


@_quiet
def check_invconv_lu(cls: type, *, channels: int = 4, batch: int = 2, hw: tuple = (2, 3), seed: int = 0,
                     dtype: torch.dtype = torch.float64) -> None:
    """LU 1x1 conv: ``calc_weight()`` equals the init weight; a flow layer; P and sign(s) buffers."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "InvConv2dLU")
    torch.manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(channels, channels))
    if channels > 1:
        q[:, 0] = -q[:, 0]  # a fixed det sign of -1: sign(s) has a -1 somewhere
    layer = _call(cls, channels, q.clone(), what=f"{name}({channels}, weight)").to(dtype)
    suspects = _lu_suspects(layer)
    if suspects:
        _fail(name, f"{', '.join(suspects)} is a parameter; the optimizer would change it",
              "P and sign(s) are fixed: register them with self.register_buffer(...), not nn.Parameter.")
    w = _weight(layer, name)
    if not torch.allclose(w.detach().double(), q.double(), atol=1e-5):
        _fail(f"{name} init", f"calc_weight() differs from the weight it was built from by up to {float((w.detach().double() - q.double()).abs().max()):.3g}",
              "with W = P L U from the LU decomposition, calc_weight() must give P @ (L + I) @ (U + diag(s)) back; check the masks and the diagonal.")
    default = _call(cls, channels, what=f"{name}({channels})")
    if not _orthogonal(_weight(default, name), 1e-5):
        _fail(f"{name} init", "without a weight argument, the init is not orthogonal", "decompose random_rotation(num_channels) when no weight is given.")
    with torch.no_grad():  # every entry moves, the masked ones too: the masks must keep L and U triangular
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(batch, channels, *hw, dtype=dtype)

    def known(want):
        npix = hw[0] * hw[1]
        out = _known_hw(*hw)(want)
        vectors = [p.detach() for p in layer.parameters() if p.dim() == 1 and p.numel() == channels]
        signs = [b.detach() for b in layer.buffers() if b.dim() == 1 and b.numel() == channels] + [torch.ones(channels, dtype=dtype)]
        for v in vectors:  # if v holds log|s|: the mistakes that use s itself
            for sign in signs:
                out.append((npix * (sign * v.exp()).sum(), "the log-det sums s itself; it is H*W*sum(log|s|), the log of the absolute value."))
        return out

    check_flow_layer(layer, x, name=name, known_mistakes=known,
                     inverse_cause="the inverse convolves with the inverse of calc_weight().")
    _check_big(cls, name, dtype, seed)
    _ok(f"{name} (C={channels}, {hw[0]}x{hw[1]}; and C=64)")


@_quiet
def check_invconv_lu_training(cls: type, *, channels: int = 5, steps: int = 5, hw: tuple = (2, 2), seed: int = 0,
                              dtype: torch.dtype = torch.float64) -> None:
    """After optimizer steps with random gradients the LU structure still holds."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "InvConv2dLU")
    torch.manual_seed(seed)
    layer = _call(cls, channels, what=f"{name}({channels})").to(dtype)
    buffers_before = {k: b.clone() for k, b in layer.named_buffers()}
    opt = torch.optim.SGD(layer.parameters(), lr=0.05)
    x = torch.randn(3, channels, *hw, dtype=dtype)
    for _ in range(steps):
        y, logdet = _as_pair(_call(layer, x, what=f"{name}.forward"), f"{name}.forward")
        opt.zero_grad()
        (y.square().mean() - logdet.mean()).backward()  # the graph must support backward
        for p in layer.parameters():  # then random gradients on every entry, masked ones included
            p.grad = torch.randn_like(p)
        opt.step()
    for k, b in buffers_before.items():
        if not torch.equal(b, dict(layer.named_buffers())[k]):
            _fail(name, f"training changed the buffer {k}")
    with torch.no_grad():
        _, logdet = layer(x)
    w = _weight(layer, name).detach().double()
    want = hw[0] * hw[1] * torch.linalg.slogdet(w).logabsdet
    if not _close(logdet, want.expand(3).to(logdet.dtype), rtol=1e-6, atol=1e-6):
        _fail(name, f"after {steps} optimizer steps the log-det is {_fmt(logdet)} but H*W*log|det calc_weight()| is {float(want):.6g}",
              "L and U lost their triangular shape: multiply the learned L and U by masks (strictly lower / strictly upper) in calc_weight().")
    check_flow_layer(layer, x, name=f"{name} after training")
    _ok(f"{name} keeps its LU structure through {steps} optimizer steps")
