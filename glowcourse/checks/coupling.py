"""Checks for notebook 4, affine coupling.

The student writes ``ZeroConv2d(in_channels, out_channels)``, ``AdditiveCoupling(in_channels,
hidden)`` and ``AffineCoupling(in_channels, hidden)``. The first half of the channels
conditions, the second half is transformed (the course's convention, rosinality's too); the
coupling network is the given ``coupling_net``, stored as ``self.net``.

The spec's formulas are checked at *non-zero* parameters, where they differ from their
look-alikes (at the zero init every coupling is the identity, whatever its formula):
``ZeroConv2d(x) = conv3x3(x) * exp(3 * scale)``; additive ``y_b = x_b + NN(x_a)``; affine
``y_b = (x_b + t) * s`` with ``h, t = NN(x_a).chunk(2, 1)`` and ``s = sigmoid(h + 2) / sigmoid(2)``,
all computed from the student's own parameters and network output.

``strict=True`` (the hidden tests) adds: the ZeroConv2d's gradient for every parameter; the
additive formula; and an inverse that works on its own (no forward call before it, or one on
other data: sampling calls only the inverse).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..density import jacobian_logdet
from .common import (as_pair, build, call, call_pair, check, check_flow_layer, check_inverse_shape, check_logdet_shape, close,
                     fail, fmt, match, ok, perturb)

__all__ = ["check_zero_conv", "check_additive_coupling", "check_affine_coupling"]

SIGMOID_2 = 1 / (1 + math.exp(-2))


# --- exercise 1: ZeroConv2d --------------------------------------------------------------------


def _zero_conv_parts(conv: nn.Module, cin: int, cout: int, name: str):
    """(weight, bias or None, scale) of the student's ZeroConv2d, found by what they are."""
    __tracebackhide__ = True
    convs = [m for m in conv.modules() if isinstance(m, nn.Conv2d)]
    params = dict(conv.named_parameters())
    if len(convs) == 1:
        weight, bias = convs[0].weight, convs[0].bias
    elif not convs:
        four = [p for p in params.values() if p.dim() == 4 and tuple(p.shape[:2]) == (cout, cin)]
        if not four:
            four = [p for p in params.values() if p.dim() == 4 and tuple(p.shape) != (1, cout, 1, 1)]
        if len(four) != 1:
            fail(name, f"found {len(four)} 4-D weight tensors and no nn.Conv2d; the spec's ZeroConv2d holds one 3x3 "
                       "convolution (nn.Conv2d(in_channels, out_channels, 3, padding=1))")
        weight = four[0]
        biases = [p for k, p in params.items() if "bias" in k.split(".")[-1] and p.dim() == 1]
        bias = biases[0] if len(biases) == 1 else None
    else:
        fail(name, f"holds {len(convs)} convolutions; the spec's ZeroConv2d is one 3x3 convolution and a scale")
    if tuple(weight.shape[:2]) != (cout, cin):
        fail(name, f"the convolution's weight has shape {tuple(weight.shape)}: it maps {weight.shape[1]} channels to "
                   f"{weight.shape[0]}, expected {cin} -> {cout}",
             "build it as nn.Conv2d(in_channels, out_channels, 3, padding=1): input channels first.")
    if tuple(weight.shape[2:]) != (3, 3):
        k = "x".join(map(str, weight.shape[2:]))
        fail(name, f"the convolution is {k}, its weight has shape {tuple(weight.shape)}; the spec's is 3x3",
             f"a {k} kernel is not the spec's: ZeroConv2d is a 3x3 convolution with padding=1, "
             "nn.Conv2d(in_channels, out_channels, 3, padding=1), which sees each pixel's neighbours.")
    taken = {id(weight)} | ({id(bias)} if bias is not None else set())
    others = [(k, p) for k, p in params.items() if id(p) not in taken]
    if not others:
        fail(name, "there is no learned scale parameter: the output must be conv(x) * exp(3 * scale)",
             "the spec multiplies the convolution by exp(3 * scale), with scale = nn.Parameter(torch.zeros(1, out_channels, 1, 1)): "
             "a learned factor per output channel, 1 at init, that lets the network grow its output quickly.")
    if len(others) > 1:
        fail(name, f"besides the convolution it has the parameters {', '.join(k for k, _ in others)}; the spec has one, "
                   "the scale of shape (1, out_channels, 1, 1)")
    k, scale = others[0]
    if scale.numel() != cout or tuple(scale.shape) not in ((1, cout, 1, 1), (cout, 1, 1)):
        fail(name, f"the scale parameter {k} has shape {tuple(scale.shape)}, expected (1, {cout}, 1, 1): one factor per output channel",
             f"a tensor of shape {tuple(scale.shape)} does not line up with the channels of a (B, C, H, W) output "
             f"(a ({cout},) tensor multiplies along the width); use shape (1, out_channels, 1, 1)."
             if scale.numel() == cout else
             "create it as nn.Parameter(torch.zeros(1, out_channels, 1, 1)).")
    return weight, bias, scale


@contextlib.contextmanager
def _randomised(*params):
    """Set the given parameters to random values for a moment."""
    params = [p for p in params if p is not None]
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p in params:
                p.copy_(0.3 * torch.randn_like(p))
        yield
    finally:
        with torch.no_grad():
            for p, v in zip(params, saved):
                p.copy_(v)


def _zero_conv_formula(x, weight, bias, scale):
    return F.conv2d(x, weight, bias, padding=1) * torch.exp(3 * scale.reshape(1, -1, 1, 1))


@check
def check_zero_conv(cls: type, *, in_channels: int = 3, out_channels: int = 4, hw: tuple = (5, 6), seed: int = 0,
                    strict: bool = False) -> None:
    """Outputs exactly zero at init, keeps the spatial size, computes ``conv3x3(x) * exp(3 * scale)``
    at non-zero parameters, and can learn. ``strict``: every parameter's gradient, scale included."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "ZeroConv2d")
    conv = build(cls, in_channels, out_channels, name=name, module=True)
    weight, bias, scale = _zero_conv_parts(conv, in_channels, out_channels, name)
    x = torch.randn(2, in_channels, *hw)
    y = call(conv, x, what=f"{name}.forward")
    if not torch.is_tensor(y) or y.shape != (2, out_channels, *hw):
        shape = tuple(getattr(y, "shape", ()))
        cause = ("the convolution has no padding, so a 3x3 kernel trims a pixel on each side: padding=1 keeps height and width."
                 if shape == (2, out_channels, hw[0] - 2, hw[1] - 2) else None)
        fail(name, f"output shape {shape}, expected {(2, out_channels, *hw)}", cause)
    if y.abs().max() != 0:
        nonzero = [what for what, p in (("weight", weight), ("bias", bias)) if p is not None and bool(p.detach().abs().max() > 0)]
        fail(name, f"the output at init is not zero (up to {float(y.detach().abs().max()):.3g})",
             f"the convolution's {' and '.join(nonzero)} {'is' if len(nonzero) == 1 else 'are'} not zero at init: "
             "initialise weight and bias to zero (nn.init.zeros_), so that the coupling starts as the identity."
             if nonzero else None)

    # The formula, at random non-zero parameters (put back afterwards).
    with _randomised(weight, bias, scale), torch.no_grad():
        got = call(conv, x, what=f"{name}.forward")
        pw, pb, ps = weight.detach().clone(), None if bias is None else bias.detach().clone(), scale.detach().clone()
    conv_x = F.conv2d(x, pw, pb, padding=1)
    want = conv_x * torch.exp(3 * ps.reshape(1, -1, 1, 1))
    if not torch.allclose(got, want, atol=1e-5, rtol=1e-4):
        s = ps.detach().reshape(1, -1, 1, 1)
        padded = [(F.conv2d(F.pad(x, (1, 1, 1, 1), mode=m), pw, pb) * torch.exp(3 * s),
                   f"the convolution pads with '{m}'; the spec pads with zeros (nn.Conv2d's default padding_mode).")
                  for m in ("reflect", "replicate", "circular")]
        cause = match(got, [
            (conv_x * torch.exp(s), "the factor is exp(scale); the spec's is exp(3 * scale), which lets the scale grow three times faster."),
            (conv_x * s, "the output is multiplied by scale itself, not by exp(3 * scale): at init scale = 0, so the output "
                         "and every gradient would be 0, and the layer could never learn."),
            (conv_x, "the learned factor is missing: the output must be multiplied by exp(3 * scale)."),
            (conv_x * torch.exp(-3 * s), "the factor is exp(-3 * scale); the spec's is exp(3 * scale)."),
            (conv_x * 3 * torch.exp(s), "the factor is 3 * exp(scale); the spec's is exp(3 * scale)."),
        ] + padded, rtol=1e-5, atol=1e-5)
        fail(f"{name}.forward", f"with weight, bias and scale set to random values, the output differs from "
                                f"conv3x3(x, padding=1) * exp(3 * scale) by up to {float((got - want).abs().max()):.3g}", cause)
    y = call(conv, x, what=f"{name}.forward")  # at init again, after the parameters were put back
    (y * torch.randn_like(y)).sum().backward()  # linear in y: y**2 would give zero gradients at y = 0
    if not any(p.grad is not None and p.grad.abs().sum() > 0 for p in conv.parameters()):
        frozen = [k for k, p in conv.named_parameters() if not p.requires_grad]
        fail(name, "no parameter receives a gradient at init: it could never learn",
             f"{', '.join(frozen)} {'does' if len(frozen) == 1 else 'do'} not require gradients: zero the weights, but keep "
             "them trainable parameters." if frozen else None)

    if strict:
        _check_zero_conv_gradients(conv, x, in_channels, out_channels, name)
    ok(f"{name} ({in_channels} -> {out_channels} channels)")


def _check_zero_conv_gradients(conv, x, cin, cout, name) -> None:
    """At non-zero parameters, the gradient for every parameter (the scale too) is the formula's."""
    __tracebackhide__ = True
    parts = [p for p in _zero_conv_parts(conv, cin, cout, name) if p is not None]
    r = torch.randn(x.shape[0], cout, *x.shape[2:])
    with _randomised(*parts):
        out = call(conv, x, what=f"{name}.forward")
        got = torch.autograd.grad((out * r).sum(), parts, allow_unused=True) if out.requires_grad else [None] * len(parts)
        parts = [p.detach().clone() for p in parts]
    ref = [p.detach().clone().requires_grad_(True) for p in parts]
    weight, bias, scale = (ref[0], ref[1], ref[2]) if len(ref) == 3 else (ref[0], None, ref[1])
    want = torch.autograd.grad((_zero_conv_formula(x, weight, bias, scale) * r).sum(), ref)
    for which, g, w in zip(("weight", "bias", "scale") if len(ref) == 3 else ("weight", "scale"), got, want):
        if g is None or not torch.allclose(g, w, atol=1e-4, rtol=1e-3):
            fail(f"{name} gradients", f"at non-zero parameters the gradient with respect to the {which} is "
                                      f"{'missing' if g is None else 'not'} the one of conv3x3(x) * exp(3 * scale): "
                                      "training would not follow the spec's formula (a .detach() or .data somewhere?)")


# --- exercises 2 and 3: the couplings ----------------------------------------------------------


def _net_output(layer, x_a: torch.Tensor, channels: int):
    net = getattr(layer, "net", None)
    if not callable(net):
        return None
    try:
        with torch.no_grad():
            out = net(x_a)
    except Exception:  # noqa: BLE001
        return None
    if not torch.is_tensor(out) or out.shape[0] != x_a.shape[0] or out.shape[1] != channels or out.shape[2:] != x_a.shape[2:]:
        return None
    return out


def _scale(h):
    return torch.sigmoid(h + 2) / SIGMOID_2


_IN_PLACE = ("x.chunk(2, 1) (or slicing) gives views that share memory with x: `x_b += ...`, `x_b *= ...` or `.mul_()` "
             "writes into the caller's tensor (a second call, or the check, then sees changed data), and autograd refuses "
             "it on chunk's views. Compute the new half as a new tensor: y_b = x_b + ... in place of x_b += ....")


def _check_untouched(x, x_in, what: str) -> None:
    __tracebackhide__ = True
    if not torch.equal(x, x_in):
        fail(what, "changed its input tensor in place: after the call, the caller's x holds other values", _IN_PLACE)


def _call_flow(fn, x, what: str):
    """Call forward or inverse on ``x``; an in-place update of the input is named, whether autograd
    refuses it (chunk's views) or it silently overwrites the caller's tensor."""
    __tracebackhide__ = True
    x_in = x.clone()
    try:
        out = fn(x)
    except NotImplementedError:
        call(fn, x, what=what)  # the usual "not implemented" message
    except Exception as err:  # noqa: BLE001
        text = str(err).replace("-", "").lower()
        if "inplace" in text:
            fail(what, f"raised {type(err).__name__}: {str(err).splitlines()[0]}", _IN_PLACE)
        fail(what, f"raised {type(err).__name__}: {err}")
    _check_untouched(x, x_in, what)
    return as_pair(out, what)


def _check_init(layer, x, name, affine, half, dtype):
    __tracebackhide__ = True
    y, logdet = _call_flow(layer, x, f"{name}.forward")
    if y.shape != x.shape:
        fail(f"{name}.forward", f"output shape {tuple(y.shape)}, input {tuple(x.shape)}; a flow keeps the shape")
    check_logdet_shape(logdet, x.shape[0], f"{name}.forward")
    tol = 1e-5 if dtype == torch.float32 else 1e-6  # a scale constant computed in float32 is fine
    n_b = x[0, half:].numel()
    if not torch.allclose(y, x, atol=tol, rtol=0):
        x_b, y_b = x[:, half:].double(), y[:, half:].detach().double()
        out = _net_output(layer, x[:, :half], (2 if affine else 1) * (x.shape[1] - half))
        big = x_b.abs() > 0.1
        ratio = (y_b[big] / x_b[big]) if bool(big.any()) else torch.ones(1, dtype=torch.float64)
        constant = bool((ratio - ratio.mean()).abs().max() < 1e-4)
        cause = None
        if out is not None and bool(out.abs().max() > 0):
            cause = ("the coupling network does not output zero at init: its last layer must be the zero-initialised "
                     "ZeroConv2d, so that a fresh coupling is the identity.")
        elif affine and constant and abs(float(ratio.mean()) - SIGMOID_2) < 1e-4:
            cause = "at h = 0, sigmoid(h + 2) = sigmoid(2) = 0.88: divide by sigmoid(2), s = sigmoid(h + 2) / sigmoid(2), so that the scale is exactly 1."
        elif affine and constant and abs(float(ratio.mean()) - 0.5) < 1e-4:
            cause = "at h = 0, sigmoid(h) = 0.5: the course's scale is s = sigmoid(h + 2) / sigmoid(2), exactly 1 at h = 0."
        elif affine and constant:
            cause = f"a fresh layer multiplies x_b by {float(ratio.mean()):.4g}: with h = t = 0 the scale must be exactly 1."
        fail(f"{name} init", f"a fresh layer is not the identity: the output differs from the input by up to "
                             f"{float((y - x).detach().abs().max()):.3g}", cause)
    if not torch.allclose(logdet, torch.zeros_like(logdet), atol=tol * n_b):
        cause = None
        if close(logdet, torch.full_like(logdet, float(n_b)), rtol=1e-5, atol=1e-5):
            cause = (f"the log-det sums s itself: at init s = 1 for each of the {n_b} transformed entries, so the sum is {n_b}; "
                     "the log-det is sum(log s), 0 at init.")
        fail(f"{name} init", f"a fresh layer is the identity, but its log-det is {fmt(logdet)}, not 0", cause)


def _check_formula(layer, x, y, name, affine, half) -> None:
    """y_b from the spec's formula, computed from the layer's own network output."""
    __tracebackhide__ = True
    c_b = x.shape[1] - half
    x_a, x_b, y_b = x[:, :half], x[:, half:], y[:, half:].detach()
    out = _net_output(layer, x_a, 2 * c_b if affine else c_b)
    if out is None:
        return  # no self.net to read: the flow checks still test the behaviour
    tol = 1e-4 if x.dtype == torch.float32 else 1e-6  # a constant such as sigmoid(2) computed in float32 is fine
    if not affine:
        want = x_b + out
        if torch.allclose(y_b, want, atol=tol, rtol=tol):
            return
        cause = match(y_b, [(x_b - out, "forward subtracts NN(x_a); the course's additive coupling adds it, "
                                         "y_b = x_b + NN(x_a) (and the inverse subtracts).")], rtol=tol, atol=tol)
        fail(f"{name}.forward", f"y_b differs from x_b + NN(x_a) (NN = self.net, at non-zero parameters) by up to "
                                f"{float((y_b - want).abs().max()):.3g}", cause)
        return
    h, t = out.chunk(2, 1)
    s = _scale(h)
    want = (x_b + t) * s
    if torch.allclose(y_b, want, atol=tol, rtol=tol):
        return
    cause = match(y_b, [
        ((x_b + t) * torch.exp(h), "y_b = (x_b + t) * exp(h): the paper's scale s = exp(h) (table 1). This course uses "
                                   "s = sigmoid(h + 2) / sigmoid(2), bounded above by 1/sigmoid(2) = 1.14, so no coupling can blow activations up."),
        (x_b * s + t, "y_b = x_b * s + t: scale first, then shift. The course's coupling (Glow's code) shifts first, then "
                      "scales: y_b = (x_b + t) * s; the inverse is x_b = y_b / s - t."),
        (x_b * torch.exp(h) + t, "y_b = x_b * exp(h) + t: RealNVP's form. The course's coupling is y_b = (x_b + t) * s with "
                                 "s = sigmoid(h + 2) / sigmoid(2)."),
        ((x_b + h) * _scale(t), "the two halves of NN's output are swapped: the course takes h, t = self.net(x_a).chunk(2, 1), "
                                "the scale's input h first."),
        ((x_b + t) * torch.sigmoid(h + 2), "s = sigmoid(h + 2) is not divided by sigmoid(2): s = sigmoid(h + 2) / sigmoid(2)."),
        ((x_b + t) * torch.sigmoid(h), "s = sigmoid(h); the course's scale is s = sigmoid(h + 2) / sigmoid(2)."),
        ((x_b - t) * s, "t is subtracted: y_b = (x_b + t) * s."),
        ((x_b + t) / s, "x_b + t is divided by s; forward multiplies: y_b = (x_b + t) * s (the inverse divides)."),
    ], rtol=tol, atol=tol)
    fail(f"{name}.forward", "y_b differs from the course's formula (x_b + t) * s, with h, t = self.net(x_a).chunk(2, 1) and "
                            f"s = sigmoid(h + 2) / sigmoid(2), at non-zero parameters, by up to {float((y_b - want).abs().max()):.3g}",
         cause)


def _check_inverse(layer, x, y, name, affine, half) -> None:
    __tracebackhide__ = True
    y = y.detach()
    x_back, _ = _call_flow(layer.inverse, y, f"{name}.inverse")
    check_inverse_shape(x_back, x, f"{name}.inverse")
    tol = 1e-4 if x.dtype == torch.float32 else 1e-7
    if torch.allclose(x_back, x, atol=tol, rtol=tol):
        return
    c_b = x.shape[1] - half
    y_a, y_b = y[:, :half], y[:, half:]
    out = _net_output(layer, y_a, 2 * c_b if affine else c_b)
    cause = None
    if not torch.allclose(x_back[:, :half], x[:, :half], atol=tol, rtol=tol):
        cause = "the inverse changes the first half: y_a = x_a passes through unchanged both ways."
    elif out is not None and affine:
        h, t = out.chunk(2, 1)
        s = _scale(h)
        cause = match(x_back[:, half:], [
            ((y_b - t) / s, "the inverse subtracts t before dividing by s: forward adds t, then multiplies by s, so the "
                            "inverse undoes them in reverse order, x_b = y_b / s - t."),
            (y_b * s - t, "the inverse multiplies by s; it must divide: x_b = y_b / s - t."),
            (y_b / s + t, "the inverse adds t; it must subtract it: x_b = y_b / s - t."),
        ], rtol=tol, atol=tol)
    elif out is not None:
        cause = match(x_back[:, half:], [
            (y_b + out, "the inverse adds NN(y_a) again; it must subtract it: x_b = y_b - NN(y_a)."),
        ], rtol=tol, atol=tol)
    if cause is None:  # right straight after forward(x), wrong otherwise: the inverse reuses what forward stored
        _call_flow(layer, x.detach().clone(), f"{name}.forward")
        again, _ = _call_flow(layer.inverse, y.clone(), f"{name}.inverse")
        if torch.allclose(again, x, atol=tol, rtol=tol):
            cause = ("the inverse reuses values stored by the last forward call (s, t or NN's output): here forward had last run "
                     "on other data, and sampling calls the inverse alone. Compute them in the inverse from y_a = x_a.")
    err = float((x_back.detach() - x).abs().max())
    fail(f"{name}.inverse", f"inverse(forward(x)) differs from x by up to {err:.3g}", cause)


def _affine_known(layer, x, half):
    def known(want):
        out = _net_output(layer, x[:, :half], 2 * (x.shape[1] - half))
        if out is None:
            return []
        h, t = out.chunk(2, 1)
        s = _scale(h)
        per = lambda v: v.flatten(1).sum(1)  # noqa: E731
        return [
            (want + per(t), "the shift t entered the log-det; only the scale changes volume: log-det = sum(log s)."),
            (per(s), "the log-det sums s itself; it is the sum of log s."),
            (per(h), "the log-det sums h; with s = sigmoid(h + 2) / sigmoid(2) it is the sum of log s (h is log s only for s = exp(h))."),
            (per(torch.log(torch.sigmoid(h + 2))), "the log-det sums log sigmoid(h + 2), but the output is scaled by "
                                                   "sigmoid(h + 2) / sigmoid(2): subtract log sigmoid(2) for each entry."),
        ]

    return known


def _check_coupling(cls, name, channels, batch, hw, seed, dtype, hidden, affine, strict):
    __tracebackhide__ = True
    layer = build(cls, channels, hidden, name=name, dtype=dtype, module=True)
    x = torch.randn(batch, channels, *hw, dtype=dtype)
    half = channels // 2

    # Identity at init: the last layer of NN() is zero.
    _check_init(layer, x, name, affine, half, dtype)

    perturb(layer, 0.3)
    y, _ = _call_flow(layer, x, f"{name}.forward")
    y = y.detach()
    if not torch.equal(y[:, :half], x[:, :half]):
        fail(f"{name}.forward", "the first half of the channels changed; it conditions the coupling and must pass through unchanged",
             "split with x_a, x_b = x.chunk(2, 1), transform only x_b, and return torch.cat([x_a, y_b], 1).")
    if torch.allclose(y[:, half:], x[:, half:], atol=1e-6):
        fail(f"{name}.forward", "after training-like changes to the parameters the second half is still unchanged: the coupling does nothing")
    if affine or strict:
        _check_formula(layer, x, y, name, affine, half)

    # The Jacobian on one small sample: identity block, zero cross block (so its log-det is the
    # log-det of the transformed block alone).
    x1 = x[:1]
    jac = torch.autograd.functional.jacobian(lambda v: as_pair(layer(v), name)[0], x1).reshape(x1.numel(), x1.numel())
    n_a = half * hw[0] * hw[1]
    if not torch.allclose(jac[:n_a, :n_a], torch.eye(n_a, dtype=dtype)) or jac[:n_a, n_a:].abs().max() > 0:
        fail(f"{name}.forward", "d y_a / d x must be [I, 0]: the conditioning half depends only on itself, unchanged")

    _check_inverse(layer, x, y, name, affine, half)
    check_flow_layer(layer, x, name=name, known_mistakes=_affine_known(layer, x, half) if affine else None,
                     inverse_cause=("undo forward in reverse order: forward adds t then multiplies by s, so the inverse divides by s, then subtracts t."
                                    if affine else "the inverse subtracts NN(y_a) from y_b."))
    if strict:
        _check_inverse_alone(cls, layer, x, y, name, seed, (channels, hidden), dtype)
    return layer


def _check_inverse_alone(cls, layer, x, y, name, seed, args, dtype) -> None:
    """Sampling calls only the inverse: it must compute everything from its own input and the
    layer's state_dict, with no forward call before it, or after a forward call on other data."""
    __tracebackhide__ = True
    tol = 1e-4 if x.dtype == torch.float32 else 1e-7
    torch.manual_seed(seed + 99)
    x2 = torch.randn_like(x)
    fresh = build(cls, *args, name=name, dtype=dtype)  # never runs forward
    call(lambda: fresh.load_state_dict(layer.state_dict()), what=f"{name}.load_state_dict")
    with torch.no_grad():
        y2, _ = call_pair(layer, x2, what=f"{name}.forward")
        x_alone, _ = as_pair(call(fresh.inverse, y2.clone(), what=f"{name}.inverse on a layer that never ran forward"), f"{name}.inverse")
        if not torch.allclose(x_alone, x2, atol=tol, rtol=tol):
            fail(f"{name}.inverse", "a layer that loaded the state_dict and has not run forward does not invert: its inverse(y) "
                                    "differs from the x that gave y. Sampling calls only the inverse: it must compute s and t "
                                    "from y_a and the layer's parameters and buffers alone, not from values a forward call stored")
        x_after, _ = call_pair(layer.inverse, y.clone(), what=f"{name}.inverse")
    if not torch.allclose(x_after, x, atol=tol, rtol=tol):
        fail(f"{name}.inverse", "after a forward call on other data, inverse(y) no longer returns x: the inverse reuses values "
                                "that forward stored (s or t of the last forward call); compute them from y_a = x_a")


@check
def check_additive_coupling(cls: type, *, channels: int = 4, batch: int = 2, hw: tuple = (2, 3), seed: int = 0,
                            dtype: torch.dtype = torch.float64, hidden: int = 8, strict: bool = False) -> None:
    """``y_b = x_b + NN(x_a)``: identity at init, invertible, log-det 0, first half unchanged, input
    untouched. ``strict``: the formula from ``self.net`` at non-zero parameters; an inverse that
    works on its own."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "AdditiveCoupling")
    _check_coupling(cls, name, channels, batch, hw, seed, dtype, hidden, affine=False, strict=strict)
    ok(f"{name} (C={channels}, {hw[0]}x{hw[1]})")


@check
def check_affine_coupling(cls: type, *, channels: int = 4, batch: int = 2, hw: tuple = (2, 3), seed: int = 0,
                          dtype: torch.dtype = torch.float64, hidden: int = 8, strict: bool = False) -> None:
    """``y_b = (x_b + t) * s``, ``s = sigmoid(h + 2) / sigmoid(2)``: identity at init, the formula at
    non-zero parameters, invertible, log-det ``sum(log s)``, triangular Jacobian, input untouched.
    ``strict``: an inverse that works on its own."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "AffineCoupling")
    layer = _check_coupling(cls, name, channels, batch, hw, seed, dtype, hidden, affine=True, strict=strict)
    # The log-det must follow the data: a coupling whose log-det is the same for every sample is not affine.
    x = torch.randn(4, channels, *hw, dtype=dtype)
    ld = jacobian_logdet(layer, x)
    if float(ld.std()) < 1e-6:
        fail(name, "the log-det does not depend on the input: the scale s must come from NN(x_a)")
    ok(f"{name} (C={channels}, {hw[0]}x{hw[1]})")
