"""Checks for notebook 1, change of variables.

Each check tests the exercise's *spec* on inputs the notebook does not show: flat batches
``(B, D)`` and image batches ``(B, C, H, W)``, parameters away from their zero init, a second
call with the same input. A failure says what differs; a "Likely cause" is named only where the
numbers match what that mistake gives (the check recomputes the mistake's value to be sure).
``strict=True`` (the hidden tests) adds a property the visible check does not test.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..density import LOG_2PI, bits_per_dim as _bits_per_dim, standard_normal_log_prob
from ..flows import gaussian_log_prob
from .common import (CheckFailed, as_pair, build, call, call_pair, check, check_flow_layer, check_logdet_shape, close, explain,
                     fail, fmt, match, ok)

__all__ = ["check_affine_flow", "check_compose", "check_brute_force_logdet", "check_flow_log_prob", "check_dequantize", "check_bits_per_dim"]


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _try(fn: Callable, *args):
    """``(result, None)`` or ``(None, the exception)``: for checks that diagnose a crash."""
    try:
        return fn(*args), None
    except Exception as err:  # noqa: BLE001
        return None, err


def _tensors(out) -> list:
    return [t for t in (out if isinstance(out, (tuple, list)) else [out]) if torch.is_tensor(t)]


def _twice(fn: Callable, args: tuple, what: str):
    """Call ``fn(*args)`` twice: the input tensors must come back unchanged, and the two calls
    must agree. Returns the first call's result."""
    __tracebackhide__ = True
    before = [a.detach().clone() if torch.is_tensor(a) else None for a in args]
    first = call(fn, *args, what=what)
    for i, (a, b) in enumerate(zip(args, before)):
        if b is not None and not torch.equal(a.detach(), b):
            fail(what, f"changed its input tensor (argument {i + 1}) in place; the caller's tensor now holds other values",
                 "an in-place operation on the input (`*=`, `+=`, `.mul_()`, `x[...] = ...`): compute a new tensor instead.")
    second = call(fn, *args, what=what)
    a, b = _tensors(first), _tensors(second)
    if len(a) != len(b) or any(u.shape != v.shape or not torch.equal(u.detach(), v.detach()) for u, v in zip(a, b)):
        fail(what, "two calls with the same input gave different results; the answer must depend on the input only")
    return first


def _float_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ---------------------------------------------------------------------------------------------
# Test layers (any per-sample shape: flat (B, D) or images (B, C, H, W))


class _Affine(nn.Module):
    """Test layer: elementwise affine with fixed random parameters of the per-sample shape."""

    def __init__(self, shape, dtype: torch.dtype, scale: float = 0.6):
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.log_scale = nn.Parameter(scale * torch.randn(shape, dtype=dtype))
        self.shift = nn.Parameter(torch.randn(shape, dtype=dtype))

    def forward(self, x):
        return x * self.log_scale.exp() + self.shift, self.log_scale.sum().expand(x.shape[0])

    def inverse(self, y):
        return (y - self.shift) * (-self.log_scale).exp(), (-self.log_scale.sum()).expand(y.shape[0])


class _Tanh(nn.Module):
    """Test layer: ``y = x + a tanh(x)``, ``a`` in (0, 1): a log-det that differs between samples."""

    def __init__(self, dtype: torch.dtype, a: float = 0.5):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=dtype))

    def _logdet(self, x):
        return torch.log1p(self.a / torch.cosh(x) ** 2).flatten(1).sum(1)

    def forward(self, x):
        return x + self.a * torch.tanh(x), self._logdet(x)

    def inverse(self, y):
        x = y.detach().clone()
        with torch.no_grad():
            for _ in range(80):  # x = y - a tanh(x) is a contraction with factor a < 1
                x = y - self.a * torch.tanh(x)
        return x, -self._logdet(x)


class _Mix(nn.Module):
    """Test layer: mixes dimension 1 with a random well-conditioned ``W`` (a 1x1 convolution on
    images); log-det ``(D / C) log|det W|``."""

    def __init__(self, dim: int, dtype: torch.dtype):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))
        w = q @ torch.diag(torch.linspace(0.5, 2.0, dim, dtype=torch.float64)) + 0.3 * torch.tril(torch.randn(dim, dim, dtype=torch.float64), -1)
        self.weight = nn.Parameter(w.to(dtype))

    def _logdet(self, x):
        return (x[0].numel() // x.shape[1]) * torch.linalg.slogdet(self.weight).logabsdet.expand(x.shape[0])

    def forward(self, x):
        return torch.einsum("oc,bc...->bo...", self.weight, x), self._logdet(x)

    def inverse(self, y):
        return torch.einsum("oc,bc...->bo...", torch.linalg.inv(self.weight), y), -self._logdet(y)


class _Chain(nn.Module):
    """The reference composition the checks compare against (and a test flow)."""

    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        total = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            total = total + ld
        return x, total

    def inverse(self, y):
        total = y.new_zeros(y.shape[0])
        for layer in reversed(self.layers):
            y, ld = layer.inverse(y)
            total = total + ld
        return y, total


# ---------------------------------------------------------------------------------------------
# Exercise 1: the elementwise affine flow


@check
def check_affine_flow(cls: type, *, dim: int = 3, batch: int = 5, seed: int = 0, dtype: torch.dtype = torch.float64,
                      strict: bool = False) -> None:
    """``ElementwiseAffine``: ``y = x * exp(log_scale) + shift``, log-det ``sum(log_scale)``.

    ``strict``: the gradient of ``-log p(x)`` (through the output and the log-det) with respect
    to both parameters is the spec's, so maximum likelihood trains the layer correctly.
    """
    __tracebackhide__ = True
    name = cls.__name__
    layer = build(cls, dim, name=name)
    for p in ("log_scale", "shift"):
        if not isinstance(getattr(layer, p, None), nn.Parameter):
            fail(name, f"has no nn.Parameter named {p!r}", "keep the given __init__, which creates log_scale and shift.")
    layer = layer.to(dtype)
    with torch.no_grad():  # random parameters: an identity layer passes nothing
        layer.log_scale.copy_(0.7 * torch.randn(dim, dtype=dtype))
        layer.shift.copy_(torch.randn(dim, dtype=dtype))
    x = torch.randn(batch, dim, dtype=dtype)
    s, t = layer.log_scale.detach().clone(), layer.shift.detach().clone()
    rtol, atol = (1e-5, 1e-6) if dtype == torch.float32 else (1e-9, 1e-10)

    # The spec's map, at non-zero parameters, before the generic flow properties.
    y, _ = as_pair(_twice(layer, (x,), f"{name}.forward"), f"{name}.forward")
    want_y = x * s.exp() + t
    if y.shape == x.shape and not close(y, want_y, rtol=rtol, atol=atol):
        fail(f"{name}.forward", f"output {fmt(y)} but x * exp(log_scale) + shift is {fmt(want_y)}", match(y, [
            (x * s + t, "the scale is exp(log_scale), not log_scale itself: y = x * exp(log_scale) + shift."),
            ((x + t) * s.exp(), "the shift is added before scaling; the spec adds it after: y = x * exp(log_scale) + shift."),
            (x * (-s).exp() + t, "forward scales by exp(-log_scale), the inverse's factor; forward multiplies by exp(log_scale)."),
        ], rtol=rtol, atol=atol))
    x_back, _ = as_pair(_twice(layer.inverse, (want_y,), f"{name}.inverse"), f"{name}.inverse")
    if x_back.shape == x.shape and not close(x_back, x, rtol=1e-4, atol=1e-5):
        err = float((x_back.detach() - x).abs().max())
        fail(f"{name}.inverse", f"inverse(x * exp(log_scale) + shift) differs from x by up to {err:.3g}", match(x_back, [
            (want_y * (-s).exp() - t, "the inverse divides by exp(log_scale) first and then subtracts the shift; undo the operations "
                                      "in reverse order: subtract the shift first, then divide: x = (y - shift) * exp(-log_scale)."),
            ((want_y - t) * s.exp(), "the inverse multiplies by exp(log_scale) again; it must divide by it: x = (y - shift) * exp(-log_scale)."),
            (want_y - t, "the inverse subtracts the shift but does not undo the scale: x = (y - shift) * exp(-log_scale)."),
        ], rtol=1e-4, atol=1e-5))

    def known(want):
        return [
            ((-s.sum()).expand(batch), "forward's log-det has the wrong sign: the map multiplies by exp(log_scale), so its log-det is "
                                       "+sum(log_scale) (the inverse's is minus that)."),
            (s.exp().sum().expand(batch), "the log-det is sum(exp(log_scale)): it is sum(log_scale), the log of the scale."),
            (s.exp().prod().expand(batch), "that is det J itself; return its log, sum(log_scale)."),
        ]

    check_flow_layer(layer, x, name=name, known_mistakes=known)
    if strict:
        _check_nll_gradient(layer, x, name, lambda v: v * layer.log_scale.exp() + layer.shift, lambda v: layer.log_scale.sum().expand(v.shape[0]))
    ok(f"{name} (dim={dim}, batch={batch}, {_float_name(dtype)})")


def _check_nll_gradient(layer: nn.Module, x: torch.Tensor, name: str, ref_y: Callable, ref_logdet: Callable) -> None:
    """The gradient of ``-log N(y; 0, I) - logdet`` w.r.t. the layer's parameters equals the
    spec's (computed from ``ref_y``/``ref_logdet`` on the same parameter tensors)."""
    __tracebackhide__ = True
    params = [(n, p) for n, p in layer.named_parameters() if p.requires_grad]
    tensors = [p for _, p in params]
    y, logdet = call_pair(layer, x, what=f"{name}.forward")
    loss = (0.5 * y.square().flatten(1).sum(1) - logdet).sum()
    got = torch.autograd.grad(loss, tensors, allow_unused=True) if loss.requires_grad else [None] * len(tensors)
    ref = (0.5 * ref_y(x).square().flatten(1).sum(1) - ref_logdet(x)).sum()
    want = torch.autograd.grad(ref, tensors, allow_unused=True)
    tol = dict(rtol=1e-4, atol=1e-4) if x.dtype == torch.float32 else dict(rtol=1e-7, atol=1e-8)
    wrong = [n for (n, p), g, w in zip(params, got, want)
             if not torch.allclose(torch.zeros_like(p) if g is None else g, torch.zeros_like(p) if w is None else w, **tol)]
    if wrong:
        fail(f"{name}.forward", f"the gradient of -log p(x) with respect to {', '.join(wrong)} differs from the spec's map; "
             "maximum-likelihood training would not follow the right direction")


# ---------------------------------------------------------------------------------------------
# Exercise 2: composing flows


@check
def check_compose(cls: type, *, dim: int = 2, batch: int = 4, seed: int = 0, dtype: torch.dtype = torch.float64,
                  image: tuple = (2, 2, 4), strict: bool = False) -> None:
    """``Compose(layers)``: apply in order, log-dets add; inverse in reverse order.

    Checked on a flat batch ``(B, dim)`` and on an image batch ``(B, *image)`` whose first layer
    has a log-det that differs between samples. ``strict``: an empty ``Compose`` is the identity
    (log-det 0 per sample), and a ``Compose`` nested in a ``Compose`` is a flow like any other.
    """
    __tracebackhide__ = True
    name = cls.__name__
    flat_layers = [_Affine(dim, dtype), _Mix(dim, dtype), _Affine(dim, dtype)]
    x = torch.randn(batch, dim, dtype=dtype)
    _check_composition(cls, flat_layers, x, name, f"a flat batch {tuple(x.shape)}", None)

    img_layers = [_Tanh(dtype), _Mix(image[0], dtype), _Affine(image, dtype)]
    xi = torch.randn(batch, *image, dtype=dtype)
    _check_composition(cls, img_layers, xi, name, f"an image batch {tuple(xi.shape)}", flat_ok=True)

    if strict:
        empty = build(cls, [], name=name)
        y, logdet = call_pair(empty, x, what=f"{name}([]).forward")
        if not torch.is_tensor(logdet) or logdet.shape != (batch,) or not torch.equal(y, x) or bool(logdet.abs().max() > 0):
            fail(f"{name}([])", f"a composition of no layers should return its input and a log-det of zeros of shape ({batch},), "
                 f"got a log-det of shape {tuple(logdet.shape)}")
        torch.manual_seed(seed + 1)
        inner = call(cls, [_Tanh(dtype), _Affine(image, dtype)], what=f"{name}(layers)")
        _check_composition(cls, [inner, _Mix(image[0], dtype)], xi, name, "a Compose nested in a Compose", flat_ok=True)
    ok(f"{name} of {len(flat_layers)} layers on flat {tuple(x.shape)} and image {tuple(xi.shape)} batches")


def _check_composition(cls, layers, x, name, where, flat_ok):
    __tracebackhide__ = True
    ref = _Chain(layers)
    flow = call(cls, layers, what=f"{name}(layers)")
    with torch.no_grad():
        want_y, want_ld = ref(x)
        partial = [x]
        for layer in layers:
            partial.append(layer(partial[-1])[0])
        lds = [layer(h)[1] for layer, h in zip(layers, partial)]
    out, err = _try(flow, x)
    if err is not None:
        if flat_ok and "size of tensor" in str(err):
            fail(f"{name}.forward", f"on {where}: raised {type(err).__name__}: {err}. It works on flat batches, and every layer "
                 f"returns a log-det of shape ({x.shape[0]},)",
                 f"the running total of log-dets is shaped like part of x, which fits flat batches only: start it as one zero "
                 f"per sample, torch.zeros(x.shape[0]).")
        call(flow, x, what=f"{name}.forward on {where}")
    y, logdet = as_pair(out, f"{name}.forward")
    if y.shape == x.shape and not close(y, want_y, rtol=1e-6, atol=1e-8):
        with torch.no_grad():
            backwards = x
            for layer in reversed(layers):
                backwards = layer(backwards)[0]
        cause = match(y, [(backwards, "forward applied the layers last to first, in reverse order; apply them in the order "
                                      "of self.layers (and the inverse in reverse)."),
                          (partial[-2], "the last layer was not applied."),
                          (layers[-1](x)[0].detach(), "each layer was applied to the original x: feed each layer's output into the next.")],
                      rtol=1e-6, atol=1e-8)
        fail(f"{name}.forward", f"on {where}: the output differs from applying the layers in order, by up to "
             f"{float((y.detach() - want_y).abs().max()):.3g}", cause)
    if flat_ok and logdet.shape != (x.shape[0],) and logdet.numel() > 1 and logdet.shape[0] == x.shape[0]:
        fail(f"{name}.forward", f"on {where}: logdet has shape {tuple(logdet.shape)}, expected ({x.shape[0]},); every layer "
             f"returns shape ({x.shape[0]},)",
             "the running total of log-dets is shaped like part of x: start it as one zero per sample, torch.zeros(x.shape[0]).")
    # The inverse: run it on the true output, before the generic checks, to name its mistakes.
    back, err = _try(flow.inverse, want_y)
    if err is None and isinstance(back, (tuple, list)) and len(back) == 2 and torch.is_tensor(back[0]) and back[0].shape == x.shape:
        x_back, ld_inv = back
        if not close(x_back, x, rtol=1e-4, atol=1e-6):
            with torch.no_grad():
                same_order = want_y
                for layer in layers:
                    same_order = layer.inverse(same_order)[0]
            cause = match(x_back, [(same_order, "inverse applies the layers' inverses in forward order; undo the last layer "
                                                "first (iterate over reversed(self.layers)).")], rtol=1e-6, atol=1e-8)
            fail(f"{name}.inverse", f"on {where}: inverse(forward(x)) differs from x by up to "
                 f"{float((x_back.detach() - x).abs().max()):.3g}", cause)
        if torch.is_tensor(ld_inv) and ld_inv.shape == want_ld.shape and not close(ld_inv, -want_ld, rtol=1e-6, atol=1e-8):
            cause = match(ld_inv, [(want_ld, "the inverse subtracts the layers' inverse log-dets; each layer's inverse already "
                                             "returns minus its forward log-det, so add them, as in forward.")], rtol=1e-6, atol=1e-8)
            fail(f"{name}.inverse", f"on {where}: logdet {fmt(ld_inv)}, expected minus the forward's, {fmt(-want_ld)}", cause)

    def known(want):
        out = [(lds[-1], "only the last layer's log-det survives: add each layer's log-det to a running total (logdet = logdet + ld)."),
               (lds[0], "only the first layer's log-det is counted: add every layer's log-det.")]
        for i in range(len(lds)):
            out.append((sum(p for j, p in enumerate(lds) if j != i), f"the log-det of layer {i} is missing from the total: every layer's log-det must be added."))
        return out

    # A compose is a flow: invertible, log-det against the brute force, its gradient, per sample.
    try:
        check_flow_layer(flow, x, name=name, known_mistakes=known)
    except CheckFailed as err:  # say on which batch
        head, _, rest = str(err).partition(": ")
        raise CheckFailed(f"{head}: on {where}: {rest}") from None
    _twice(flow, (x,), f"{name}.forward")


# ---------------------------------------------------------------------------------------------
# Exercise 3: the brute-force log-determinant


@check
def check_brute_force_logdet(fn: Callable, *, batch: int = 3, seed: int = 0, strict: bool = False) -> None:
    """``brute_force_logdet(f, x)``: per-sample log|det df/dx| from autograd and slogdet.

    Three maps: linear with a negative determinant, elementwise nonlinear (a log-det that
    differs between samples), and an image map ``(B, 2, 3, 3)``; the input comes back unchanged.
    ``strict``: determinants that under- and overflow float64 (D = 128, scales 1e-3 and 1e3),
    where only a log-determinant computed without the determinant itself is finite.
    """
    __tracebackhide__ = True
    what = "brute_force_logdet"
    d = 4
    a = torch.randn(d, d, dtype=torch.float64)
    if torch.linalg.det(a) > 0:  # a negative determinant: only its absolute value has a log
        a[0] = -a[0]
    cases = []
    x = torch.randn(batch, d, dtype=torch.float64)
    cases.append(("a linear map with a negative determinant", lambda v: v @ a.T, x,
                  torch.linalg.slogdet(a).logabsdet.expand(batch).clone(), "neg"))
    x = torch.randn(batch, d, dtype=torch.float64)
    cases.append(("an elementwise map x + 0.5 tanh(x)", lambda v: v + 0.5 * torch.tanh(v), x,
                  torch.log1p(0.5 / torch.cosh(x) ** 2).sum(1), "flat"))
    w = torch.randn(2, 2, dtype=torch.float64)
    if torch.linalg.det(w) < 0:  # positive here, so that only the first map tells log(det) from log|det|
        w[0] = -w[0]
    xi = torch.randn(batch, 2, 3, 3, dtype=torch.float64)
    pre = lambda v: v + 0.5 * torch.tanh(v)  # noqa: E731
    cases.append(("an image map (B, 2, 3, 3): tanh, then a 1x1 convolution", lambda v: torch.einsum("oc,bchw->bohw", w, pre(v)), xi,
                  9 * torch.linalg.slogdet(w).logabsdet + torch.log1p(0.5 / torch.cosh(xi) ** 2).flatten(1).sum(1), "image"))
    if strict:
        xs = torch.randn(2, 2, 8, 8, dtype=torch.float64)
        for k in (1e-3, 1e3):
            cases.append((f"the map {k:g} * x on (B, 2, 8, 8), |det J| = {k:g}^128 (beyond float64)", lambda v, k=k: k * v, xs,
                          torch.full((2,), 128 * math.log(k), dtype=torch.float64), "scale"))

    results = []
    for label, f, x, want, kind in cases:
        x_in = x.clone()
        got, err = _try(fn, f, x_in)
        if err is None and not torch.equal(x_in.detach(), x):
            fail(what, f"changed its input x in place on {label}", "an in-place operation on x: compute new tensors instead.")
        results.append((label, got, err, want, kind))

    def fine(r):
        _, got, err, want, _ = r
        return err is None and torch.is_tensor(got) and got.shape == want.shape and close(got, want, rtol=1e-6, atol=1e-8)

    flat_fine = all(fine(r) for r in results if r[4] in ("neg", "flat"))
    for label, got, err, want, kind in results:
        n = want.shape[0]
        if err is not None:
            if kind == "image" and flat_fine:
                fail(what, f"works on flat maps but on {label} raised {type(err).__name__}: {err}",
                     f"flatten each sample to a vector of D = C*H*W = 18 numbers, so that its Jacobian is a D x D matrix, before slogdet.")
            call(fn, f, x.clone(), what=f"{what} on {label}")
        if not torch.is_tensor(got):
            fail(what, f"returned {type(got).__name__} on {label}, expected a tensor of shape ({n},)")
        if got.shape != want.shape:
            if kind == "image" and flat_fine:
                fail(what, f"on {label}: got shape {tuple(got.shape)}, expected ({n},); the flat maps are right",
                     f"the Jacobian of one image sample has shape (2, 3, 3, 2, 3, 3): flatten it to a D x D matrix, "
                     f"D = C*H*W = 18, before slogdet.")
            if got.numel() == 1 and close(got.reshape(()), want.sum(), rtol=1e-6, atol=1e-8):
                fail(what, f"on {label}: got one number, {fmt(got)}, expected one per sample, shape ({n},); it equals the sum of "
                     f"the per-sample log-dets",
                     "that is the log-det of the Jacobian of the whole batch at once (block-diagonal, so the samples' log-dets "
                     "add up): take the Jacobian of one sample at a time.")
            check_logdet_shape(got, n, f"{what} on {label}")
        if torch.isnan(got).any():
            if kind == "neg" and all(fine(r) for r in results if r[4] in ("flat", "image")):
                fail(what, f"NaN on {label}; the maps with a positive determinant are right",
                     "log of a negative determinant: use torch.linalg.slogdet(J).logabsdet, which is log|det J|.")
            fail(what, f"NaN on {label}")
        if kind == "scale" and not torch.isfinite(got).all() and all(fine(r) for r in results if r[4] != "scale"):
            fail(what, f"on {label}: got {fmt(got)}, expected {fmt(want)}",
                 "the determinant itself under- or overflows float64 before its log is taken: use "
                 "torch.linalg.slogdet(J).logabsdet, which never forms det J.")
        if not close(got, want, rtol=1e-6, atol=1e-8):
            known = [(torch.linalg.slogdet(a).sign.expand(n), "that is slogdet's sign; the log|det| is its second output, .logabsdet."),
                     (want.sum().expand(n), "every sample got the log-det of the whole batch's Jacobian: take the Jacobian of one sample at a time.")]
            cause = match(got, [(v, c) for v, c in known], rtol=1e-6, atol=1e-8) if kind == "neg" else match(got, known[1:], rtol=1e-6, atol=1e-8)
            fail(what, f"on {label}: got {fmt(got)}, expected {fmt(want)}", cause)
    ok(f"{what} ({len(cases)} maps, batch={batch})")


# ---------------------------------------------------------------------------------------------
# Exercise 4: the log-likelihood under a flow


@check
def check_flow_log_prob(fn: Callable, *, dim: int = 3, batch: int = 6, image: tuple = (3, 2, 5), seed: int = 0,
                        dtype: torch.dtype = torch.float64, strict: bool = False) -> None:
    """``flow_log_prob(flow, x) = log N(f(x); 0, I) + log|det df/dx|`` per sample.

    On flat latents ``(B, dim)`` (a flow with a closed-form answer) and image latents
    ``(B, *image)`` (a flow whose log-det differs between samples); a second call gives the same
    and leaves ``x`` as it was. ``strict``: ``log p(x)`` is differentiable with respect to the
    flow's parameters, with the spec's gradient (the next cell trains on it).
    """
    __tracebackhide__ = True
    what = "flow_log_prob"
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-6, atol=1e-8)
    # Flat: the flow z = (x - mu) / sigma turns N(mu, sigma^2) into N(0, I), a closed-form answer.
    mu, log_sigma = torch.randn(dim, dtype=dtype), 0.5 * torch.randn(dim, dtype=dtype)
    flow = _Affine(dim, dtype)
    with torch.no_grad():
        flow.log_scale.copy_(-log_sigma)
        flow.shift.copy_(-mu * (-log_sigma).exp())
    x = mu + log_sigma.exp() * torch.randn(batch, dim, dtype=dtype)
    want = gaussian_log_prob(x, mu, log_sigma)
    got = call(fn, flow, x, what=what)
    _log_prob_verdict(got, want, flow, x, what, "flat latents", tol)

    # Images: (B, C, H, W) latents, log-det per sample.
    torch.manual_seed(seed + 1)
    c, h, w = image
    img_flow = _Chain([_Tanh(dtype), _Affine(image, dtype, scale=0.3)])
    xi = torch.randn(batch, c, h, w, dtype=dtype)
    with torch.no_grad():
        z, ld = img_flow(xi)
        want_i = standard_normal_log_prob(z) + ld
    got_i, err = _try(fn, img_flow, xi.clone())
    if err is not None:
        if "size of tensor" in str(err) and f"({batch})" in str(err):
            fail(what, f"works on flat latents (B, D) but on image latents {tuple(xi.shape)} raised {type(err).__name__}: {err}",
                 f"log N(z; 0, I) was not reduced to one number per sample before the log-det (shape ({batch},)) was added: "
                 f"sum over every dimension of a sample, (C, H, W) for images, e.g. `.flatten(1).sum(1)`; `.sum(1)` sums the channels only.")
        call(fn, img_flow, xi.clone(), what=f"{what} on image latents {tuple(xi.shape)}")
    _log_prob_verdict(got_i, want_i, img_flow, xi, what, f"image latents {tuple(xi.shape)}", tol)
    _twice(lambda v: fn(img_flow, v), (xi,), what)

    if strict:
        params = list(img_flow.parameters())
        value = call(fn, img_flow, xi, what=what)
        got_g = torch.autograd.grad(value.sum(), params, allow_unused=True) if value.requires_grad else [None] * len(params)
        z, ld = img_flow(xi)
        want_g = torch.autograd.grad((standard_normal_log_prob(z) + ld).sum(), params)
        gtol = dict(rtol=1e-3, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-7, atol=1e-8)
        for g, wg in zip(got_g, want_g):
            if g is None or not bool(g.abs().max() > 0):
                fail(what, "log p(x) has the right value but no gradient with respect to the flow's parameters; training on it "
                     "would not change the flow",
                     "the value was computed from detached numbers (`.detach()`, `.item()`, `.data`, numpy) or under torch.no_grad().")
            if not torch.allclose(g, wg, **gtol):
                fail(what, "the gradient of log p(x) with respect to the flow's parameters differs from the spec's formula's")
    ok(f"{what} (flat latents ({batch}, {dim}) and image latents {tuple(xi.shape)}, {_float_name(dtype)})")


def _log_prob_verdict(got, want, flow, x, what, where, tol):
    __tracebackhide__ = True
    n = want.shape[0]
    if not torch.is_tensor(got):
        fail(what, f"returned {type(got).__name__} on {where}, expected a tensor of shape ({n},)")
    if got.shape != want.shape:
        if got.numel() == 1:
            fail(what, f"on {where}: returned a single number, expected one log-density per sample, shape ({n},)",
                 "a sum or mean over the whole batch: sum over the dimensions of each sample only (dim 1 onwards).")
        check_logdet_shape(got, n, f"{what} on {where}")
    if close(got, want, **tol):
        return
    with torch.no_grad():
        z, ld = flow(x)
    base = standard_normal_log_prob(z)
    d = z[0].numel()
    known = [
        (base - ld, "the log-det was subtracted; for the density of x it is added: log p(x) = log p(z) + log|det dz/dx|."),
        (base, "the log-det term is missing: log p(x) = log p(z) + log|det dz/dx|."),
        (want + 0.5 * d * LOG_2PI, "the Gaussian's normalising constant -D/2 log(2 pi) is missing."),
        ((-0.5 * z**2).flatten(1).sum(1), "both the log-det and the constant -D/2 log(2 pi) are missing."),
        (want + 0.5 * (d - 1) * LOG_2PI, f"the constant -1/2 log(2 pi) was counted once per sample; it comes once per dimension: "
                                         f"-D/2 log(2 pi) with D = {d}."),
        (base / d + ld, "log N(z; 0, I) was averaged over the dimensions; it is their sum."),
        (base + ld.sum(), "every sample got the log-det of the whole batch: add each sample's own log-det."),
        (base.sum() + ld, "every sample got the base log-density of the whole batch: sum over the dimensions of each sample only."),
    ]
    if z.dim() == 4:
        c, h, w = z.shape[1:]
        known += [
            (want + 0.5 * (d - c) * LOG_2PI, f"the constant -D/2 log(2 pi) used D = {c}, the channels (z.shape[1]); "
                                             f"D counts every dimension of a sample, C*H*W = {d}."),
            (want + 0.5 * (d - h * w) * LOG_2PI, f"the constant -D/2 log(2 pi) used D = H*W = {h * w}, without the channels; "
                                                 f"D counts every dimension of a sample, C*H*W = {d}."),
        ]
    cause = match(got, known, rtol=1e-6, atol=1e-6)
    fail(what, f"on {where}: got {fmt(got)}, expected {fmt(want)}", cause)


# ---------------------------------------------------------------------------------------------
# Exercise 5: dequantization


@check
def check_dequantize(fn: Callable, *, n_bins: int = 17, shape: tuple = (500, 1, 2, 2), dtype: torch.dtype = torch.int64, seed: int = 0,
                     strict: bool = False) -> None:
    """``dequantize(x, n_bins)``: ``(x + u) / n_bins``, ``u ~ U[0, 1)``, so each level fills its bin.

    ``strict``: the noise is independent between the elements of a sample (not one draw per
    image or per channel), and uniform within each level.
    """
    __tracebackhide__ = True
    what = "dequantize"
    x = torch.randint(0, n_bins, shape).to(dtype)
    x[0].fill_(n_bins - 1)
    x[1].zero_()
    x_before = x.clone()
    y, err = _try(fn, x, n_bins)
    if isinstance(err, NotImplementedError) and "not implemented for" in str(err):
        fail(what, f"on an integer ({_float_name(dtype)}) input raised NotImplementedError: {err}",
             "an operation that needs floating point (torch.rand_like) was applied to the integer input: convert x to float first.")
    if err is not None:
        call(fn, x.clone(), n_bins, what=f"{what} on {_float_name(dtype)} input")
    if not torch.equal(x, x_before):
        fail(what, "the input tensor was modified in place", "an in-place operation on x: compute a new tensor; do not write into x.")
    if not torch.is_tensor(y) or not y.is_floating_point():
        fail(what, f"must return a floating-point tensor, got {getattr(y, 'dtype', type(y).__name__)}", "convert x to float before adding noise.")
    if y.shape != x.shape:
        fail(what, f"output shape {tuple(y.shape)}, input {tuple(x.shape)}")
    y = y.detach()
    frac = (y.double() * n_bins - x.double())  # where in its bin each value landed: must be U[0, 1)
    if frac.min() < -1e-5 or frac.max() >= 1 + 1e-5:
        lo, hi = float(frac.min()), float(frac.max())
        by_max = y.double() * (n_bins - 1) - x.double()  # the noise, if y = (x + u) / (n_bins - 1)
        cause = None
        if float(by_max.min()) > -1e-5 and float(by_max.max()) < 1 + 1e-5 and float(by_max.std()) > 0.2:
            cause = (f"y = (x + u) / (n_bins - 1): divide by n_bins = {n_bins}, the number of levels, not by n_bins - 1 "
                     "(the largest level), so that every value stays in [0, 1).")
        fail(what, f"y * n_bins - x should lie in [0, 1), it spans [{lo:.3g}, {hi:.3g}]", cause)
    if float(y.max()) >= 1.0 or float(y.min()) < 0.0:
        fail(what, "dequantized values must lie in [0, 1)")
    if float(frac.std()) < 1e-3:
        fail(what, f"no noise: every value sits at the same place in its bin ({float(frac.mean()):.3g})",
             "add uniform noise u ~ U[0, 1) (torch.rand_like on a float tensor) before dividing.")
    n = frac.numel()
    mean_tol, std = 5 / math.sqrt(12 * n), float(frac.std())
    if abs(float(frac.mean()) - 0.5) > mean_tol + 1e-3 or abs(std - 1 / math.sqrt(12)) > 0.03:
        fail(what, f"the noise has mean {float(frac.mean()):.3g} and std {std:.3g}; U[0,1) has 0.5 and {1 / math.sqrt(12):.3g}",
             "the noise u must be uniform on [0, 1): torch.rand / torch.rand_like.")
    y2 = call(fn, x, n_bins, what=what)
    if torch.equal(y, y2):
        fail(what, "two calls gave identical outputs: the noise is the same every time",
             "draw fresh noise on every call (no torch.manual_seed inside the function).")
    if strict:
        flat = frac.reshape(frac.shape[0], -1)
        if flat.shape[1] > 1 and flat.shape[0] > 20:
            r = torch.corrcoef(flat[:, :2].T)[0, 1]
            if abs(float(r)) > 6 / math.sqrt(flat.shape[0]):
                fail(what, f"the noise of two elements of the same sample is correlated (r = {float(r):.2f}); each element needs "
                     "its own independent draw",
                     "one noise value per sample (or per channel) was broadcast over its elements: draw noise of x's full shape.")
        for level in (0, n_bins - 1):
            sel = frac[x == level]
            if sel.numel() > 50 and abs(float(sel.mean()) - 0.5) > 6 / math.sqrt(12 * sel.numel()):
                fail(what, f"the values of level {level} are not spread uniformly over its bin (mean position {float(sel.mean()):.3g}, expected 0.5)")
    ok(f"{what} (n_bins={n_bins}, {_float_name(dtype)} input of shape {tuple(shape)})")


# ---------------------------------------------------------------------------------------------
# Exercise 6: bits per dimension


@check
def check_bits_per_dim(fn: Callable, *, n_dims: int = 48, n_bins: int = 17, batch: int = 5, seed: int = 0,
                       strict: bool = False) -> None:
    """``bits_per_dim(log_prob, n_dims, n_bins) = (-log_prob + D log n_bins) / (D ln 2)``, per sample.

    The default ``n_dims = 48`` is a 3-channel 4x4 image; ``log_prob`` comes back unchanged and a
    second call agrees. ``strict``: bits/dim is differentiable in ``log_prob`` with slope
    ``-1 / (D ln 2)`` (training minimises it).
    """
    __tracebackhide__ = True
    what = "bits_per_dim"
    uniform = call(fn, torch.zeros(batch, dtype=torch.float64), n_dims, n_bins, what=what)
    log_prob = -n_dims * (1.0 + torch.rand(batch, dtype=torch.float64))
    got = _twice(fn, (log_prob, n_dims, n_bins), what)
    want = _bits_per_dim(log_prob, n_dims, n_bins)
    for value in (uniform, got):
        if not torch.is_tensor(value):
            fail(what, f"returned {type(value).__name__}, expected a tensor of shape ({batch},)")
        check_logdet_shape(value, batch, what)
    if not close(got, want, rtol=1e-6, atol=1e-8):
        nll_bits = -log_prob / (n_dims * math.log(2))
        known = [
            (nll_bits, f"the D log n_bins term is missing: the density of y = (x+u)/n_bins lives on [0,1)^D, and "
                       f"rescaling to the integer grid costs log2(n_bins) = {math.log2(n_bins):.4g} bits per dimension."),
            (want * math.log(2), "the result is in nats per dimension: divide by ln 2 to get bits."),
            (want * n_dims, "the result is per image, not per dimension: divide by D."),
            ((log_prob + n_dims * math.log(n_bins)) / (n_dims * math.log(2)), "the sign of log_prob is wrong: bits/dim uses the negative log-likelihood."),
        ]
        for d in (64, 784):
            if d != n_dims:
                known.append((_bits_per_dim(log_prob, d, n_bins), f"the result uses D = {d}, not the n_dims argument ({n_dims} here): "
                                                                  "use n_dims, whatever the images' size."))
        fail(what, f"with n_dims={n_dims}, n_bins={n_bins}: got {fmt(got)}, expected {fmt(want)}", explain(got, want, known))
    if not close(uniform, torch.full((batch,), math.log2(n_bins), dtype=torch.float64)):
        fail(what, f"a uniform density on [0,1)^D (log p = 0) should cost exactly log2(n_bins) = {math.log2(n_bins):.4g} bits/dim, got {fmt(uniform)}")
    if strict:
        lp = log_prob.clone().requires_grad_(True)
        out = call(fn, lp, n_dims, n_bins, what=what)
        slope = -1 / (n_dims * math.log(2))
        grad = torch.autograd.grad(out.sum(), lp, allow_unused=True)[0] if out.requires_grad else None
        if grad is None or not close(grad, torch.full_like(grad, slope), rtol=1e-6, atol=1e-9):
            fail(what, f"bits/dim must be differentiable in log_prob with slope -1/(D ln 2) = {slope:.4g} (training minimises it); "
                 f"got {'no gradient' if grad is None else fmt(grad)}")
    ok(f"{what} (D={n_dims}, n_bins={n_bins})")
