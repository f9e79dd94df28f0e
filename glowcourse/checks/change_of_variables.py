"""Checks for notebook 1, change of variables."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..density import LOG_2PI, bits_per_dim as _bits_per_dim, standard_normal_log_prob
from .common import _as_pair, _call, _check_logdet_shape, _close, _explain, _fail, _fmt, _ok, _quiet, check_flow_layer

__all__ = ["check_affine_flow", "check_compose", "check_brute_force_logdet", "check_flow_log_prob", "check_dequantize", "check_bits_per_dim"]

@_quiet
def check_affine_flow(cls: type, *, dim: int = 3, batch: int = 5, seed: int = 0, dtype: torch.dtype = torch.float64) -> None:
    """``ElementwiseAffine``: ``y = x * exp(log_scale) + shift``, log-det ``sum(log_scale)``."""
    __tracebackhide__ = True
    torch.manual_seed(seed)
    layer = _call(cls, dim, what=f"{cls.__name__}({dim})")
    for p in ("log_scale", "shift"):
        if not isinstance(getattr(layer, p, None), nn.Parameter):
            _fail(cls.__name__, f"has no nn.Parameter named {p!r}", "keep the given __init__, which creates log_scale and shift.")
    layer = layer.to(dtype)
    with torch.no_grad():  # random parameters: an identity layer passes nothing
        layer.log_scale.copy_(0.7 * torch.randn(dim, dtype=dtype))
        layer.shift.copy_(torch.randn(dim, dtype=dtype))
    x = torch.randn(batch, dim, dtype=dtype)
    s = layer.log_scale.detach()

    def known(want):
        return [
            (s.exp().sum().expand(batch), "the log-det is sum(exp(log_scale)): it is sum(log_scale), the log of the scale."),
            (s.exp().prod().expand(batch), "that is det J itself; return its log, sum(log_scale)."),
        ]

    check_flow_layer(
        layer, x, name=cls.__name__, known_mistakes=known,
        inverse_cause="undo the operations in reverse order: subtract the shift first, then divide by exp(log_scale).",
    )
    _ok(f"{cls.__name__} (dim={dim}, batch={batch}, {str(dtype).replace('torch.', '')})")


class _Affine(nn.Module):
    """Test layer: elementwise affine with fixed random parameters."""

    def __init__(self, dim: int, dtype: torch.dtype, scale: float = 0.6):
        super().__init__()
        self.log_scale = nn.Parameter(scale * torch.randn(dim, dtype=dtype))
        self.shift = nn.Parameter(torch.randn(dim, dtype=dtype))

    def forward(self, x):
        return x * self.log_scale.exp() + self.shift, self.log_scale.sum().expand(x.shape[0])

    def inverse(self, y):
        return (y - self.shift) * (-self.log_scale).exp(), (-self.log_scale.sum()).expand(y.shape[0])


class _Mix(nn.Module):
    """Test layer: ``y = x @ W^T`` with a random well-conditioned ``W``; log-det ``log|det W|``."""

    def __init__(self, dim: int, dtype: torch.dtype):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))
        w = q @ torch.diag(torch.linspace(0.5, 2.0, dim, dtype=torch.float64)) + 0.3 * torch.tril(torch.randn(dim, dim, dtype=torch.float64), -1)
        self.weight = nn.Parameter(w.to(dtype))

    def forward(self, x):
        return x @ self.weight.T, torch.linalg.slogdet(self.weight).logabsdet.expand(x.shape[0])

    def inverse(self, y):
        return torch.linalg.solve(self.weight, y.T).T, (-torch.linalg.slogdet(self.weight).logabsdet).expand(y.shape[0])


@_quiet
def check_compose(cls: type, *, dim: int = 2, batch: int = 4, seed: int = 0, dtype: torch.dtype = torch.float64) -> None:
    """``Compose(layers)``: apply in order, log-dets add; inverse in reverse order."""
    __tracebackhide__ = True
    torch.manual_seed(seed)
    layers = [_Affine(dim, dtype), _Mix(dim, dtype), _Affine(dim, dtype)]
    flow = _call(cls, layers, what=f"{cls.__name__}(layers)")
    x = torch.randn(batch, dim, dtype=dtype)
    with torch.no_grad():
        parts, h = [], x
        for layer in layers:
            h, ld = layer(h)
            parts.append(ld)
        inv_same_order = h
        for layer in layers:
            inv_same_order = layer.inverse(inv_same_order)[0]

    def known(want):
        out = [(parts[-1], "only the last layer's log-det survives: add each layer's log-det to a running total (logdet = logdet + ld)."),
               (parts[0], "only the first layer's log-det is counted: add every layer's log-det.")]
        for i in range(len(parts)):
            out.append((sum(p for j, p in enumerate(parts) if j != i), f"the log-det of layer {i} is missing from the total: every layer's log-det must be added."))
        return out

    with torch.no_grad():
        y, _ = _as_pair(_call(flow, x, what=f"{cls.__name__}.forward"), f"{cls.__name__}.forward")
        back, _ = _as_pair(_call(flow.inverse, y, what=f"{cls.__name__}.inverse"), f"{cls.__name__}.inverse")
    inverse_cause = "inverse must apply each layer's inverse in reverse order (last layer first)."
    if _close(back, inv_same_order, rtol=1e-6, atol=1e-8) and not _close(back, x, rtol=1e-4, atol=1e-5):
        inverse_cause = "inverse applies the layers' inverses in forward order; undo the last layer first (iterate over reversed(self.layers))."
    check_flow_layer(flow, x, name=cls.__name__, known_mistakes=known, inverse_cause=inverse_cause)
    _ok(f"{cls.__name__} of {len(layers)} layers (dim={dim}, batch={batch})")


@_quiet
def check_brute_force_logdet(fn: Callable, *, batch: int = 3, seed: int = 0) -> None:
    """``brute_force_logdet(f, x)``: per-sample log|det df/dx| from autograd and slogdet."""
    __tracebackhide__ = True
    torch.manual_seed(seed)
    what = "brute_force_logdet"
    d = 4
    a = torch.randn(d, d, dtype=torch.float64)
    if torch.linalg.det(a) > 0:  # a negative determinant: only its absolute value has a log
        a[0] = -a[0]
    cases = []
    x = torch.randn(batch, d, dtype=torch.float64)
    cases.append(("a linear map with a negative determinant", lambda v: v @ a.T, x,
                  torch.linalg.slogdet(a).logabsdet.expand(batch)))
    x = torch.randn(batch, d, dtype=torch.float64)
    cases.append(("an elementwise map x + 0.5 tanh(x)", lambda v: v + 0.5 * torch.tanh(v), x,
                  torch.log1p(0.5 / torch.cosh(x) ** 2).sum(1)))
    w = torch.randn(2, 2, dtype=torch.float64)
    xi = torch.randn(batch, 2, 3, 3, dtype=torch.float64)
    pre = lambda v: v + 0.5 * torch.tanh(v)  # noqa: E731
    cases.append(("an image map (B, 2, 3, 3): tanh, then a 1x1 convolution", lambda v: torch.einsum("oc,bchw->bohw", w, pre(v)), xi,
                  9 * torch.linalg.slogdet(w).logabsdet + torch.log1p(0.5 / torch.cosh(xi) ** 2).flatten(1).sum(1)))
    for label, f, x, want in cases:
        got = _call(fn, f, x.clone(), what=what)
        if not torch.is_tensor(got):
            _fail(what, f"returned {type(got).__name__}, expected a tensor of shape ({batch},)")
        _check_logdet_shape(got, batch, f"{what} on {label}")
        if torch.isnan(got).any():
            _fail(what, f"NaN on {label}", "log of a negative determinant: use torch.linalg.slogdet(J).logabsdet, which is log|det J|.")
        if not _close(got, want, rtol=1e-6, atol=1e-8):
            known = [(torch.linalg.slogdet(a).sign.expand(batch), "that is slogdet's sign; the log|det| is its second output, .logabsdet.")]
            _fail(what, f"on {label}: got {_fmt(got)}, expected {_fmt(want)}", _explain(got, want, known)
                  or "take the Jacobian of one sample at a time, flatten it to a D x D matrix, then slogdet.")
    _ok(f"{what} ({len(cases)} maps, batch={batch})")


@_quiet
def check_flow_log_prob(fn: Callable, *, dim: int = 3, batch: int = 6, seed: int = 0) -> None:
    """``flow_log_prob(flow, x) = log N(f(x); 0, I) + log|det df/dx|`` per sample."""
    __tracebackhide__ = True
    torch.manual_seed(seed)
    what = "flow_log_prob"
    # The flow z = (x - mu) / sigma turns N(mu, sigma^2) into N(0, I): the answer is known in closed form.
    mu, log_sigma = torch.randn(dim, dtype=torch.float64), 0.5 * torch.randn(dim, dtype=torch.float64)
    flow = _Affine(dim, torch.float64)
    with torch.no_grad():
        flow.log_scale.copy_(-log_sigma)
        flow.shift.copy_(-mu * (-log_sigma).exp())
    x = mu + log_sigma.exp() * torch.randn(batch, dim, dtype=torch.float64)
    want = torch.distributions.Normal(mu, log_sigma.exp()).log_prob(x).sum(1)
    got = _call(fn, flow, x, what=what)
    if not torch.is_tensor(got):
        _fail(what, f"returned {type(got).__name__}, expected a tensor of shape ({batch},)")
    _check_logdet_shape(got, batch, what)
    if not _close(got, want, rtol=1e-6, atol=1e-8):
        z, ld = flow(x)
        base = standard_normal_log_prob(z).detach()
        known = [
            (base - ld.detach(), "the log-det was subtracted; for the density of x it is added: log p(x) = log p(z) + log|det dz/dx|."),
            (base, "the log-det term is missing: log p(x) = log p(z) + log|det dz/dx|."),
            (want + 0.5 * dim * LOG_2PI, "the Gaussian's normalising constant -D/2 log(2 pi) is missing."),
            ((-0.5 * z**2).sum(1).detach(), "both the log-det and the constant -D/2 log(2 pi) are missing."),
        ]
        _fail(what, f"got {_fmt(got)}, expected {_fmt(want)}", _explain(got, want, known))
    _ok(f"{what} (dim={dim}, batch={batch})")


@_quiet
def check_dequantize(fn: Callable, *, n_bins: int = 17, shape: tuple = (500, 1, 2, 2), dtype: torch.dtype = torch.int64, seed: int = 0) -> None:
    """``dequantize(x, n_bins)``: ``(x + u) / n_bins``, ``u ~ U[0, 1)``, so each level fills its bin."""
    __tracebackhide__ = True
    torch.manual_seed(seed)
    what = "dequantize"
    x = torch.randint(0, n_bins, shape).to(dtype)
    x[0].fill_(n_bins - 1)
    x[1].zero_()
    x_before = x.clone()
    y = _call(fn, x, n_bins, what=f"{what} on {str(dtype).replace('torch.', '')} input")
    if not torch.equal(x, x_before):
        _fail(what, "the input tensor was modified in place", "compute a new tensor; do not write into x.")
    if not torch.is_tensor(y) or not y.is_floating_point():
        _fail(what, f"must return a floating-point tensor, got {getattr(y, 'dtype', type(y).__name__)}", "convert x to float before adding noise.")
    if y.shape != x.shape:
        _fail(what, f"output shape {tuple(y.shape)}, input {tuple(x.shape)}")
    y = y.detach()
    frac = (y.double() * n_bins - x.double())  # where in its bin each value landed: must be U[0, 1)
    if frac.min() < -1e-5 or frac.max() >= 1 + 1e-5:
        lo, hi = float(frac.min()), float(frac.max())
        cause = None
        if abs(float(((y.double() * (n_bins - 1)) - x.double()).min())) < 1e-4 or hi > 1:
            cause = (f"values fall outside their bin [x/n_bins, (x+1)/n_bins): divide by n_bins = {n_bins}, "
                     "not by n_bins - 1 (the largest level), and use noise in [0, 1).")
        _fail(what, f"y * n_bins - x should lie in [0, 1), it spans [{lo:.3g}, {hi:.3g}]", cause)
    if float(y.max()) >= 1.0 or float(y.min()) < 0.0:
        _fail(what, "dequantized values must lie in [0, 1)")
    if float(frac.std()) < 1e-3:
        _fail(what, f"no noise: every value sits at the same place in its bin ({float(frac.mean()):.3g})",
              "add uniform noise u ~ U[0, 1) (torch.rand_like on a float tensor) before dividing.")
    n = frac.numel()
    mean_tol, std = 5 / math.sqrt(12 * n), float(frac.std())
    if abs(float(frac.mean()) - 0.5) > mean_tol + 1e-3 or abs(std - 1 / math.sqrt(12)) > 0.03:
        _fail(what, f"the noise has mean {float(frac.mean()):.3g} and std {std:.3g}; U[0,1) has 0.5 and {1 / math.sqrt(12):.3g}",
              "the noise must be uniform on [0, 1): torch.rand, not torch.randn.")
    y2 = _call(fn, x, n_bins, what=what)
    if torch.equal(y, y2):
        _fail(what, "two calls gave identical outputs", "draw fresh noise on every call.")
    _ok(f"{what} (n_bins={n_bins}, {str(dtype).replace('torch.', '')} input of shape {tuple(shape)})")


@_quiet
def check_bits_per_dim(fn: Callable, *, n_dims: int = 64, n_bins: int = 17, batch: int = 5, seed: int = 0) -> None:
    """``bits_per_dim(log_prob, n_dims, n_bins) = (-log_prob + D log n_bins) / (D ln 2)``, per sample."""
    __tracebackhide__ = True
    torch.manual_seed(seed)
    what = "bits_per_dim"
    uniform = _call(fn, torch.zeros(batch, dtype=torch.float64), n_dims, n_bins, what=what)
    log_prob = -n_dims * (1.0 + torch.rand(batch, dtype=torch.float64))
    got = _call(fn, log_prob.clone(), n_dims, n_bins, what=what)
    want = _bits_per_dim(log_prob, n_dims, n_bins)
    for value in (uniform, got):
        if not torch.is_tensor(value):
            _fail(what, f"returned {type(value).__name__}, expected a tensor of shape ({batch},)")
        _check_logdet_shape(value, batch, what)
    if not _close(got, want, rtol=1e-6, atol=1e-8):
        nll_bits = -log_prob / (n_dims * math.log(2))
        known = [
            (nll_bits, f"the D log n_bins term is missing: the density of y = (x+u)/n_bins lives on [0,1)^D, and "
                       f"rescaling to the integer grid costs log2(n_bins) = {math.log2(n_bins):.4g} bits per dimension."),
            (want * math.log(2), "the result is in nats per dimension: divide by ln 2 to get bits."),
            (want * n_dims, "the result is per image, not per dimension: divide by D."),
            ((log_prob + n_dims * math.log(n_bins)) / (n_dims * math.log(2)), "the sign of log_prob is wrong: bits/dim uses the negative log-likelihood."),
        ]
        _fail(what, f"got {_fmt(got)}, expected {_fmt(want)}", _explain(got, want, known))
    if not _close(uniform, torch.full((batch,), math.log2(n_bins), dtype=torch.float64)):
        _fail(what, f"a uniform density on [0,1)^D (log p = 0) should cost exactly log2(n_bins) = {math.log2(n_bins):.4g} bits/dim, got {_fmt(uniform)}")
    _ok(f"{what} (D={n_dims}, n_bins={n_bins})")
