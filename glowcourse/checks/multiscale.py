"""Checks for notebook 5, the multi-scale architecture.

The student writes ``squeeze(x)`` / ``unsqueeze(x)``, ``Split(channels)`` (with the given
``prior_params``), ``FlowStep(channels, hidden)`` (with the given ``actnorm``, ``invconv`` and
``coupling``) and ``Glow(in_channels, K, L, hidden, image_size)`` (with the given ``levels``,
``splits``, ``prior_mean`` and ``prior_log_sd``): ``forward(x) -> (zs, log_prob)``,
``inverse(zs)`` and ``sample(n, temperature)``.

Models are checked on what they compute, not on which modules they hold: a flow step against
its own three layers applied in order; a Glow against the brute force (the autograd Jacobian of
``x -> zs`` plus the log-density of every latent under the model's *own* learned priors, which
the check moves away from their standard-normal init), against autograd of that brute force
for the gradient, and its samples against those priors at each level.

Each check takes ``strict=True`` in the hidden tests: a property the visible call does not test
(gradients and channel slices for squeeze; decoding with a given ``z`` and a second temperature
for a split; the inverse at points forward never produced for a flow step and a Glow; a second
temperature for a Glow).
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import math
from typing import Callable

import torch
from torch import nn

from ..density import LOG_2PI, jacobian_logdet, standard_normal_log_prob
from ..flows import gaussian_log_prob
from .common import (build, call, call_pair, check, check_flow_layer, check_flow_shape, check_inverse_shape, check_logdet_shape,
                     close, explain, fail, fmt, ok, perturb)

__all__ = ["check_squeeze", "check_split", "check_flow_step", "check_glow"]



def _shape(t) -> str:
    return str(tuple(t.shape)) if torch.is_tensor(t) else type(t).__name__


# --------------------------------------------------------------------------------------------
# Squeeze


def _pixels(shape):
    """Batch, row and column index of every element of an NCHW tensor of ``shape``."""
    b, _, h, w = shape
    return (torch.arange(b).view(-1, 1, 1, 1).expand(shape), torch.arange(h).view(1, 1, -1, 1).expand(shape),
            torch.arange(w).view(1, 1, 1, -1).expand(shape))


def _unravel(flat: torch.Tensor, shape):
    _, c, h, w = shape
    return flat // (c * h * w), flat // (h * w) % c, flat // w % h, flat % w


@check
def check_squeeze(squeeze: Callable, unsqueeze: Callable, *, channels: int = 3, hw: tuple = (4, 6), batch: int = 2,
                  strict: bool = False) -> None:
    """Squeeze is a local permutation (each output pixel holds exactly its 2x2 block), the same
    at every pixel; unsqueeze undoes it. Any consistent channel order is accepted.
    ``strict``: also gradients through both, float32, and a channel slice as input."""
    __tracebackhide__ = True
    h, w = hw
    x = torch.arange(batch * channels * h * w, dtype=torch.float64).reshape(batch, channels, h, w)
    x_copy = x.clone()
    y = call(squeeze, x, what="squeeze")
    want_shape = (batch, 4 * channels, h // 2, w // 2)
    if not torch.is_tensor(y) or y.shape != want_shape:
        fail("squeeze", f"output shape {_shape(y)}, expected {want_shape}")
    if not torch.equal(x, x_copy):
        fail("squeeze", "squeeze changed its input in place", "work on a view or a copy; never write into x.")
    # Where did each output value come from? (b, c, i, j) of the input, decoded from its index.
    src_b, src_c, src_i, src_j = _unravel(y.long(), x.shape)
    bi, oi, oj = _pixels(y.shape)
    if sorted(y.long().flatten().tolist()) != list(range(x.numel())):
        fail("squeeze", "some input values are repeated or lost: a squeeze only moves values")
    if not (src_b == bi).all():
        fail("squeeze", "values moved between samples of the batch")
    if not ((src_i // 2 == oi).all() and (src_j // 2 == oj).all()):
        plain = torch.equal(y, x.reshape(want_shape))
        fail("squeeze", "an output pixel (i, j) holds values from outside its 2x2 input block (2i..2i+1, 2j..2j+1)",
             "a plain reshape to (B, 4C, H/2, W/2) cuts the image into strips: view as (B, C, H/2, 2, W/2, 2) and "
             "move the two 2s next to C before merging." if plain else None)
    key = src_c * 4 + (src_i % 2) * 2 + (src_j % 2)  # which (channel, di, dj) each output holds
    if not (key == key[:1, :, :1, :1]).all():
        fail("squeeze", "the channel order differs between pixels: a squeeze applies the same arrangement everywhere")

    back = call(unsqueeze, y.clone(), what="unsqueeze")
    if not torch.is_tensor(back) or back.shape != x.shape:
        fail("unsqueeze", f"unsqueeze(squeeze(x)) has shape {_shape(back)}, expected {tuple(x.shape)}")
    if not torch.equal(back, x):
        _unsqueeze_failure(back, x, y)
    z = torch.randn(*want_shape, dtype=torch.float64)
    if not torch.equal(call(squeeze, call(unsqueeze, z, what="unsqueeze"), what="squeeze"), z):
        fail("unsqueeze", "squeeze(unsqueeze(z)) is not z")
    if strict:
        _squeeze_strict(squeeze, unsqueeze, channels, hw, batch)
    ok(f"squeeze / unsqueeze ({channels}x{h}x{w})")


def _unsqueeze_failure(back: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
    """unsqueeze(squeeze(x)) != x, squeeze being a correct local squeeze: say how unsqueeze moves values."""
    __tracebackhide__ = True
    n = x.numel()
    values = back.long().flatten()
    if not torch.equal(back, back.round()) or sorted(values.tolist()) != list(range(n)):
        fail("unsqueeze", "unsqueeze(squeeze(x)) is not x: some values are repeated, lost or changed")
    where = torch.empty(n, dtype=torch.long)
    where[y.long().flatten()] = torch.arange(n)  # where[v]: flat position in y of value v
    sb, _, si, sj = _unravel(where[values].view(back.shape), y.shape)  # the position in y each output came from
    bi, oi, oj = _pixels(back.shape)
    if not (sb == bi).all():
        fail("unsqueeze", "unsqueeze moves values between samples of the batch")
    if not ((si == oi // 2).all() and (sj == oj // 2).all()):
        fail("unsqueeze", "unsqueeze(squeeze(x)) is not x: unsqueeze sends the channels of one pixel outside that "
             "pixel's 2x2 output block",
             "unsqueeze is not local: a plain reshape, or a permute that puts the axes in another order, spreads a "
             "pixel's channels over the image; each 2 must end up right after its spatial axis, (B, C, H, 2, W, 2).")
    fail("unsqueeze", "unsqueeze(squeeze(x)) is not x: each 2x2 block comes from the right pixel, but its values "
         "are in the wrong places",
         "unsqueeze uses another channel order than squeeze: its view and permute must undo squeeze's exactly.")


def _squeeze_strict(squeeze, unsqueeze, channels, hw, batch) -> None:
    __tracebackhide__ = True
    h, w = hw
    torch.manual_seed(1)
    # A channel slice (not contiguous), as the next level of Glow gets it after a split; float32.
    full = torch.randn(batch, 2 * channels, h, w)
    part = full[:, :channels]
    y = call(squeeze, part, what="squeeze (of a channel slice)")
    if not torch.is_tensor(y) or y.dtype != torch.float32:
        fail("squeeze", f"squeeze of a float32 input returned {getattr(y, 'dtype', type(y).__name__)}: a squeeze keeps the dtype")
    if not torch.equal(y, call(squeeze, part.contiguous(), what="squeeze")):
        fail("squeeze", "squeeze of a channel slice x[:, :C] differs from squeeze of a contiguous copy of it")
    # Differentiable: a permutation's Jacobian is orthogonal, so the gradient of <squeeze(x), v> is unsqueeze(v).
    xg = torch.randn(batch, channels, h, w, dtype=torch.float64, requires_grad=True)
    out = call(squeeze, xg, what="squeeze")
    v = torch.randn_like(out.detach())
    if not out.requires_grad:
        fail("squeeze", "squeeze's output carries no gradient, so nothing before it could train",
             "build it with torch operations on x (view, permute, reshape), not through numpy, .tolist() or a new tensor.")
    (grad,) = torch.autograd.grad((out * v).sum(), xg)
    if not torch.allclose(grad, unsqueeze(v)):
        fail("squeeze", "the gradient through squeeze is not unsqueeze of the incoming gradient: squeeze is not a plain permutation for autograd")
    zg = torch.randn(batch, 4 * channels, h // 2, w // 2, dtype=torch.float64, requires_grad=True)
    out = call(unsqueeze, zg, what="unsqueeze")
    if not out.requires_grad:
        fail("unsqueeze", "unsqueeze's output carries no gradient",
             "build it with torch operations on x (view, permute, reshape), not through numpy, .tolist() or a new tensor.")
    v = torch.randn_like(out.detach())
    (grad,) = torch.autograd.grad((out * v).sum(), zg)
    if not torch.allclose(grad, squeeze(v)):
        fail("unsqueeze", "the gradient through unsqueeze is not squeeze of the incoming gradient")


# --------------------------------------------------------------------------------------------
# Split


def _split_samples(split, x_a, temperature, n, name, channels):
    """``n`` draws of z for every sample of ``x_a`` at ``temperature``: (n, B, C/2, H, W)."""
    __tracebackhide__ = True
    many = x_a.repeat(n, 1, 1, 1)
    what = f"{name}.inverse(x_a, None, {temperature})"
    out = call(split.inverse, many, None, temperature, what=what)
    want = (many.shape[0], channels, *x_a.shape[2:])
    if not torch.is_tensor(out) or out.shape != want:
        fail(what, f"returned shape {_shape(out)}, expected {want}")
    return out[:, x_a.shape[1]:].detach().reshape(n, *x_a.shape[:1], -1, *x_a.shape[2:])


def _split_spread_cause(z, sd, temperature) -> str | None:
    """Which wrong formula the per-element spread of ``z`` (n draws) fits, if any."""
    raw = z.std(0)
    log_sd = sd.log()
    candidates = [
        (sd, "the temperature is ignored: z = mean + temperature * exp(log_sd) * noise."),
        (torch.full_like(sd, temperature), "the noise is not scaled by the prior's standard deviation exp(log_sd): "
                                           "z = mean + temperature * exp(log_sd) * noise."),
        (temperature * log_sd.abs(), "log_sd was used as the standard deviation; the standard deviation is exp(log_sd)."),
        (temperature * sd**2, "the noise was scaled by the variance exp(2 log_sd), not the standard deviation exp(log_sd)."),
    ]
    for value, cause in candidates:
        if float(((raw - value).abs() / value.clamp_min(1e-3)).median()) < 0.1 and \
                float(((temperature * sd - value).abs() / (temperature * sd).clamp_min(1e-3)).median()) > 0.3:
            return cause
    return None


@check
def check_split(cls: type, *, channels: int = 4, batch: int = 3, hw: tuple = (2, 3), seed: int = 0,
                dtype: torch.dtype = torch.float64, strict: bool = False) -> None:
    """Split: x_a and z are the two halves; log_p is log N(z; prior_params(x_a)), with its
    gradient; the inverse rebuilds x, or samples z at a temperature (0 gives the prior mean).
    ``strict``: also a given z at temperature 0 and a second temperature."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "Split")
    split = build(cls, channels, name=name, dtype=dtype)
    perturb(split, 0.3)  # a prior that has learned something: mean and log-std depend on x_a
    x = torch.randn(batch, channels, *hw, dtype=dtype)
    half = channels // 2
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    out = call(split, x, what=f"{name}.forward")
    if not (isinstance(out, (tuple, list)) and len(out) == 3 and all(torch.is_tensor(t) for t in out)):
        fail(f"{name}.forward", "must return three tensors (x_a, z, log_p)")
    x_a, z, log_p = out
    if not (x_a.shape == z.shape == x[:, :half].shape and torch.equal(x_a, x[:, :half]) and torch.equal(z, x[:, half:])):
        swapped = x_a.shape == z.shape == x[:, :half].shape and torch.equal(x_a, x[:, half:]) and torch.equal(z, x[:, :half])
        fail(f"{name}.forward", f"x_a must be the first half of the channels and z the second (got shapes {_shape(x_a)} "
             f"and {_shape(z)} from {tuple(x.shape)})",
             "the halves are swapped: x_a, z = x.chunk(2, 1) (x_a first)." if swapped else None)
    if log_p.shape != (batch,):
        fail(f"{name}.forward", f"log_p has shape {tuple(log_p.shape)}, expected ({batch},)",
             "sum the log-density over all dimensions except the batch." if log_p.shape[:1] == (batch,) else None)
    mean, log_sd = call(split.prior_params, x[:, :half], what=f"{name}.prior_params")
    want = gaussian_log_prob(x[:, half:], mean, log_sd).detach()
    if not close(log_p.detach(), want, **tol):
        zero_mean, zero_log_sd = split.prior_params(torch.zeros_like(x[:, :half]))
        zb = x[:, half:]
        known = [
            (gaussian_log_prob(zb, zero_mean, zero_log_sd), "the prior ignores the conditioning half: compute mean and log-std with self.prior_params(x_a)."),
            (standard_normal_log_prob(zb), "z was scored under N(0, I); the prior is N(mean, exp(log_sd)^2) from prior_params(x_a)."),
            (gaussian_log_prob(zb, mean, log_sd.exp()), "exp(log_sd) was passed where the log-std goes: gaussian_log_prob(z, mean, log_sd) takes log_sd itself."),
            (want + log_sd.flatten(1).sum(1), "the -log_sd term of the Gaussian log-density is missing."),
            (want + 0.5 * LOG_2PI * zb[0].numel(), "the constant -1/2 log(2 pi) per dimension is missing."),
        ]
        fail(f"{name}.forward", f"log_p {fmt(log_p)}, but log N(z; mean, sd) with the prior of x_a is {fmt(want)}",
             explain(log_p, want, [(v.detach(), c) for v, c in known]))
    _split_gradient(split, x, name, tol)

    # inverse: rebuild x from (x_a, z); sample at temperature 0 -> the prior mean
    back = call(split.inverse, x_a.detach(), z.detach(), what=f"{name}.inverse(x_a, z)")
    if not torch.is_tensor(back) or back.shape != x.shape or not torch.equal(back, x):
        swapped = torch.is_tensor(back) and back.shape == x.shape and torch.equal(back, torch.cat([x[:, half:], x[:, :half]], 1))
        fail(f"{name}.inverse", f"inverse(x_a, z) must return torch.cat([x_a, z], 1) (shape {tuple(x.shape)}), got {_shape(back)}",
             "z was put before x_a: torch.cat([x_a, z], 1)." if swapped else None)
    x_a = x_a.detach()
    mean, sd = mean.detach(), log_sd.detach().exp()
    torch.manual_seed(seed + 1)
    cold = _split_samples(split, x_a, 0.0, 200, name, channels)
    if not torch.allclose(cold, mean.expand_as(cold), atol=1e-6):
        cause = _split_spread_cause(cold, sd, 0.0)
        if cause is None and cold.abs().max() < 1e-9 and mean.abs().max() > 1e-3:
            cause = "z was drawn without the prior mean: z = mean + temperature * exp(log_sd) * noise."
        fail(f"{name}.inverse", "at temperature 0 the sampled z must be the prior mean, prior_params(x_a)[0]; "
             f"it differs by up to {float((cold - mean).abs().max()):.3g}", cause)
    temperatures = (0.5, 1.3) if strict else (0.5,)
    for t in temperatures:
        hot = _split_samples(split, x_a, t, 2000, name, channels)
        u = (hot - mean) / sd  # in the prior's own standardised coordinates
        se = t / math.sqrt(u.numel())  # standard error of the mean; the std's is that / sqrt(2)
        if abs(float(u.std()) - t) > max(0.04 * max(t, 1.0), 6 * se) or abs(float(u.mean())) > max(0.04, 6 * se):
            fail(f"{name}.inverse", f"at temperature {t} the sampled z has {float(u.std()):.3g} prior standard deviations "
                 f"of spread around {float(u.mean()):.3g} (in units of the prior's), expected {t} around 0",
                 _split_spread_cause(hot, sd, t))
    if strict:  # decoding: a given z is used as it is, whatever the temperature
        back = call(split.inverse, x_a, z.detach(), 0.0, what=f"{name}.inverse(x_a, z, 0.0)")
        if not torch.is_tensor(back) or back.shape != x.shape or not torch.equal(back, x):
            fail(f"{name}.inverse", "inverse(x_a, z, temperature=0) must return torch.cat([x_a, z], 1): "
                 "a given z is decoded as it is; the temperature only matters when z is drawn")
    ok(f"{name} (C={channels}, {hw[0]}x{hw[1]})")


def _split_gradient(split, x, name, tol) -> None:
    """The gradient of log_p with respect to x (both halves) and the prior's parameters."""
    __tracebackhide__ = True
    half = x.shape[1] // 2
    params = [(n, p) for n, p in split.named_parameters() if p.requires_grad]
    xg = x.clone().requires_grad_(True)
    tensors = [xg] + [p for _, p in params]
    log_p = call(split, xg, what=f"{name}.forward")[2]
    mean, log_sd = split.prior_params(xg[:, :half])
    want = torch.autograd.grad(gaussian_log_prob(xg[:, half:], mean, log_sd).sum(), tensors, allow_unused=True)
    got = torch.autograd.grad(log_p.sum(), tensors, allow_unused=True) if log_p.requires_grad else [None] * len(tensors)
    got = [torch.zeros_like(t) if g is None else g for g, t in zip(got, tensors)]
    want = [torch.zeros_like(t) if g is None else g for g, t in zip(want, tensors)]
    parts = [("x_a", got[0][:, :half], want[0][:, :half]), ("z", got[0][:, half:], want[0][:, half:])]
    parts += [(n, g, w) for (n, _), g, w in zip(params, got[1:], want[1:])]
    wrong = [(n, g, w) for n, g, w in parts if not torch.allclose(g, w, **tol)]
    if not wrong:
        return
    names = [n for n, _, _ in wrong]
    if all(float(g.abs().max()) == 0 for _, g, _ in wrong):
        if names == ["x_a"]:
            cause = ("x_a was detached (or prior_params ran under torch.no_grad()) before computing the prior: "
                     "the flow steps before the split learn through it.")
        elif "x_a" not in names and "z" not in names:
            cause = "the prior's mean and log-std were detached or computed under torch.no_grad(): the prior must learn."
        else:
            cause = "log_p was computed from detached numbers (.detach(), .data, .item() or numpy)."
        fail(f"{name}.forward", f"log_p has the right value but no gradient with respect to {', '.join(names)}", cause)
    fail(f"{name}.forward", f"the gradient of log_p with respect to {', '.join(names)} differs from autograd of "
         "log N(z; prior_params(x_a))")


# --------------------------------------------------------------------------------------------
# Flow step

_PART_WORDS = ("ActNorm", "the 1x1 convolution", "the coupling")


def _step_parts(step, name) -> list:
    __tracebackhide__ = True
    parts = []
    for attr, word, kinds in (("actnorm", "ActNorm", ("ActNorm",)), ("invconv", "1x1 convolution", ("InvConv", "Permute")),
                              ("coupling", "coupling", ("Coupling",))):
        part = getattr(step, attr, None)
        if not isinstance(part, nn.Module):
            found = [m for _, m in step.named_children() if any(k in type(m).__name__ for k in kinds)]
            part = found[0] if len(found) == 1 else None
        if part is None or not hasattr(part, "inverse"):
            fail(name, f"could not find the step's {word} (self.{attr}); children: "
                 f"{[type(m).__name__ for m in step.children()]}", "keep the given constructor: self.actnorm, self.invconv, self.coupling.")
        parts.append(part)
    return parts


def _run_parts(parts, plan, h):
    """Apply ``plan``, a sequence of (part index, inverse?) to ``h``: (output, summed log-det)."""
    total = 0
    for k, inverse in plan:
        h, ld = parts[k].inverse(h) if inverse else parts[k](h)
        total = total + ld
    return h, total


def _describe(plan) -> str:
    return " -> ".join(("self.actnorm", "self.invconv", "self.coupling")[k] + (".inverse" if inverse else "") for k, inverse in plan)


def _which_plan(parts, h, got, candidates, tol):
    """The first candidate plan whose output is ``got`` (each on copies of the parts)."""
    for plan in candidates:
        try:
            with torch.no_grad():
                out, _ = _run_parts(copy.deepcopy(parts), plan, h)
        except Exception:  # noqa: BLE001 (a plan that cannot run is not the one)
            continue
        if out.shape == got.shape and torch.allclose(out, got, **tol):
            return plan
    return None


def _orders(inverse: bool):
    return [tuple((k, inverse) for k in p) for r in (3, 2, 1) for p in itertools.permutations(range(3), r)]


def _forward_cause(plan) -> str:
    used = [k for k, _ in plan]
    missing = [_PART_WORDS[k] for k in range(3) if k not in used]
    if missing:
        return (f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} never applied: forward applies ActNorm, "
                "then the 1x1 convolution, then the coupling.")
    return f"the layers are applied in another order ({_describe(plan)}): ActNorm, then the 1x1 convolution, then the coupling."


def _inverse_cause(plan) -> str:
    used = [k for k, _ in plan]
    forwards = [_PART_WORDS[k] for k, inverse in plan if not inverse]
    if forwards:
        return (f"the inverse calls the forward method of {' and '.join(forwards)}, which applies the layer again: "
                "call its .inverse(y).")
    missing = [_PART_WORDS[k] for k in range(3) if k not in used]
    if missing:
        return f"the inverse never undoes {' and '.join(missing)}: undo all three, coupling first, ActNorm last."
    return (f"the inverse undoes the layers in another order ({_describe(plan)}): undo them last-first, the coupling, "
            "then the 1x1 convolution, then ActNorm.")


def _check_step_composition(step, parts, x, name, tol, *, at: str) -> None:
    """forward(x) is ActNorm -> 1x1 conv -> coupling of x (log-dets added), and inverse(y) is
    coupling.inverse -> 1x1 conv.inverse -> ActNorm.inverse of y, for y = forward(x) (``at``
    says which y)."""
    __tracebackhide__ = True
    batch = x.shape[0]
    forward_plan = ((0, False), (1, False), (2, False))
    with torch.no_grad():
        y, ld = call_pair(step, x, what=f"{name}.forward")
        check_flow_shape(y, x, f"{name}.forward")
        check_logdet_shape(ld, batch, f"{name}.forward")
        want_y, want_ld = call(_run_parts, parts, forward_plan, x, what=f"{name}'s layers, applied one by one")
        if not torch.allclose(y, want_y, **tol):
            plan = _which_plan(parts, x, y, [p for p in _orders(False) if p != forward_plan], tol)
            fail(f"{name}.forward", f"the output is not self.actnorm -> self.invconv -> self.coupling applied to x, the "
                 f"step's own layers in order (it differs by up to {float((y - want_y).abs().max()):.3g})"
                 + (f"; it is {_describe(plan)}" if plan else ""), _forward_cause(plan) if plan else None)
        if not torch.allclose(ld, want_ld, **tol):
            lds = [_run_parts(parts, [(k, False)], h)[1] for k, h in zip(range(3), _inputs(parts, x))]
            known = [(want_ld - lds[k], f"the log-det of {_PART_WORDS[k]} is missing from the step's total: add all three.")
                     for k in range(3)]
            known += [(lds[k], f"the log-det is {_PART_WORDS[k]}'s only: add all three.") for k in range(3)]
            fail(f"{name}.forward", f"logdet {fmt(ld)}, but the step's three layers' log-dets add up to {fmt(want_ld)}",
                 explain(ld, want_ld, known))

        y = y if at == "output" else 0.8 * torch.randn_like(x)
        x_back, ld_inv = call_pair(step.inverse, y, what=f"{name}.inverse")
        check_inverse_shape(x_back, x, f"{name}.inverse")
        check_logdet_shape(ld_inv, batch, f"{name}.inverse")
        inverse_plan = ((2, True), (1, True), (0, True))
        want_x, want_ldi = call(_run_parts, parts, inverse_plan, y, what=f"{name}'s layers, undone one by one")
        where = "forward's output" if at == "output" else "a point forward did not produce"
        if not torch.allclose(x_back, want_x, **tol):
            candidates = [p for p in _orders(True) if p != inverse_plan]
            candidates += [tuple((k, k != j) for k in (2, 1, 0)) for j in range(3)] + [((2, False), (1, False), (0, False))]
            plan = _which_plan(parts, y, x_back, candidates, tol)
            cached = at != "output" and torch.allclose(x_back, x, **tol)
            fail(f"{name}.inverse", f"at {where}, the inverse is not self.coupling.inverse -> self.invconv.inverse -> "
                 f"self.actnorm.inverse, the step's own layers undone last-first (it differs by up to "
                 f"{float((x_back - want_x).abs().max()):.3g})" + (f"; it is {_describe(plan)}" if plan else ""),
                 _inverse_cause(plan) if plan else
                 ("the inverse returned the last input of forward, not the inverse of its own argument." if cached else None))
        if not torch.allclose(ld_inv, want_ldi, **tol):
            lds = [_run_parts(parts, [(k, True)], h)[1] for k, h in zip((2, 1, 0), _inputs(parts, y, inverse=True))]
            lds = dict(zip((2, 1, 0), lds))
            known = [(-want_ldi, "the inverse's log-det has the wrong sign: the layers' inverse methods already return "
                                 "minus their forward log-dets, so add them as they are.")]
            known += [(want_ldi - lds[k], f"the inverse log-det of {_PART_WORDS[k]} is missing from the total: add all three.")
                      for k in range(3)]
            fail(f"{name}.inverse", f"at {where}, logdet {fmt(ld_inv)}, but the three layers' inverse log-dets add up to "
                 f"{fmt(want_ldi)}", explain(ld_inv, want_ldi, known))
        if at != "output":
            again, _ = call_pair(step, x_back, what=f"{name}.forward")
            if not torch.allclose(again, y, **tol):
                fail(f"{name}.inverse", f"forward(inverse(y)) differs from y by up to {float((again - y).abs().max()):.3g}")


def _inputs(parts, h, inverse: bool = False):
    """The input each part sees in the correct order (forward, or last-first for the inverse)."""
    seen = []
    for k in ((2, 1, 0) if inverse else (0, 1, 2)):
        seen.append(h)
        h, _ = parts[k].inverse(h) if inverse else parts[k](h)
    return seen


@check
def check_flow_step(cls: type, *, channels: int = 4, batch: int = 3, hw: tuple = (2, 2), seed: int = 0,
                    dtype: torch.dtype = torch.float64, hidden: int = 8, strict: bool = False) -> None:
    """A flow step computes ActNorm -> 1x1 conv -> coupling with its own layers (outputs and
    log-dets), undoes them last-first, and is a flow layer (check_flow_layer: invertible,
    log-det against autograd, per sample, its gradient). ``strict``: also the inverse at points
    forward never produced."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "FlowStep")
    step = build(cls, channels, hidden, name=name, dtype=dtype)
    parts = _step_parts(step, name)
    x = 2 * torch.randn(batch, channels, *hw, dtype=dtype) + 1
    with torch.no_grad():
        call(step, x, what=f"{name}.forward")  # ActNorm's data-dependent init
        for part in parts:  # a part forward skipped is initialised here, so the comparisons below are fair
            if hasattr(part, "initialized") and not bool(part.initialized):
                part(x)
    perturb(step, 0.2)
    tol = dict(rtol=1e-7, atol=1e-8) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    _check_step_composition(step, parts, x, name, tol, at="output")
    if strict:
        torch.manual_seed(seed + 1)
        _check_step_composition(step, parts, x, name, tol, at="fresh")
    check_flow_layer(step, x, name=name)
    ok(f"{name} (C={channels}, {hw[0]}x{hw[1]})")


# --------------------------------------------------------------------------------------------
# Glow


def _latent_shapes(in_channels: int, L: int, size: int, batch: int) -> list[tuple]:
    """zs of a Glow: one per split (level 1's first), then the top."""
    shapes, c, s = [], in_channels, size
    for level in range(L):
        c, s = 4 * c, s // 2
        if level < L - 1:
            shapes.append((batch, c // 2, s, s))
            c //= 2
    shapes.append((batch, c, s, s))
    return shapes


@contextlib.contextmanager
def _traced(module: nn.Module, method: str, record: Callable):
    """Within the block, each call of ``module.<method>`` first calls ``record(args, kwargs)``,
    which returns a list, then appends the method's result to that list. The wrapper is an
    instance attribute, so ``module(x)`` and ``module.forward(x)`` both pass through it."""
    original = getattr(module, method)
    had = method in module.__dict__

    def wrapper(*args, **kwargs):
        entry = record(args, kwargs)
        out = original(*args, **kwargs)
        entry.append(out)
        return out

    object.__setattr__(module, method, wrapper)
    try:
        yield
    finally:
        if had:
            object.__setattr__(module, method, original)
        else:
            object.__delattr__(module, method)


@contextlib.contextmanager
def _trace_all(pairs):
    with contextlib.ExitStack() as stack:
        for module, method, record in pairs:
            stack.enter_context(_traced(module, method, record))
        yield


class _Glow:
    """The given parts of the student's Glow the checks use, found once."""

    def __init__(self, model, name):
        __tracebackhide__ = True
        missing = [a for a in ("levels", "splits", "prior_mean", "prior_log_sd") if not hasattr(model, a)]
        if missing:
            fail(name, f"the model has no {', '.join(missing)}", "keep the given constructor (self.levels, self.splits, "
                 "self.prior_mean and self.prior_log_sd): the check reads the model's priors from them.")
        self.model, self.name = model, name
        self.splits = list(model.splits)
        self.levels = [list(level) for level in model.levels]

    def encode(self, x):
        """(zs, log_prob, [(x_a, z, log_p) of each split, first call]) of forward(x)."""
        __tracebackhide__ = True
        calls: list[list] = [[] for _ in self.splits]

        def recorder(i):
            def record(args, kwargs):
                entry = []
                calls[i].append(entry)
                return entry
            return record

        steps: dict = {}

        def step_recorder(key):
            def record(args, kwargs):
                entry = []
                steps.setdefault(key, entry)
                return entry
            return record

        pairs = [(s, "forward", recorder(i)) for i, s in enumerate(self.splits)]
        pairs += [(s, "forward", step_recorder((lv, k))) for lv, level in enumerate(self.levels) for k, s in enumerate(level)]
        with _trace_all(pairs):
            out = call(self.model, x, what=f"{self.name}.forward")
        # The sum of the log-dets the steps returned (None if a step was not called), to tell a
        # wrong step from a wrong Glow.
        outs = [e[0] if e else None for e in steps.values()]
        complete = len(outs) == sum(len(level) for level in self.levels) and all(isinstance(o, (tuple, list)) and len(o) == 2 for o in outs)
        self.step_logdet = sum(o[1] for o in outs) if complete and outs else None
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            fail(f"{self.name}.forward", f"must return (zs, log_prob), got {type(out).__name__}")
        zs, log_prob = out
        if not isinstance(zs, (list, tuple)) or not all(torch.is_tensor(z) for z in zs) or not torch.is_tensor(log_prob):
            fail(f"{self.name}.forward", "must return (zs, log_prob): a list of latent tensors and a tensor")
        for i, c in enumerate(calls):
            if not c or not c[0]:
                fail(f"{self.name}.forward", f"forward never calls self.splits[{i}], so latent zs[{i}] is not scored by "
                     "that split's learned prior", "x, z, log_p = self.splits[i](x) at the end of every level but the last.")
            out = c[0][0]
            if not (isinstance(out, (tuple, list)) and len(out) == 3):
                fail(f"{self.name}.forward", f"self.splits[{i}] returned {type(out).__name__}, expected (x_a, z, log_p)")
        return list(zs), log_prob, [c[0][0] for c in calls]

    def prior_terms(self, zs, split_out):
        """log-density of each latent under the model's own priors: [split terms..., top]."""
        __tracebackhide__ = True
        terms = []
        for i, split in enumerate(self.splits):
            mean, log_sd = call(split.prior_params, split_out[i][0], what=f"{self.name}.splits[{i}].prior_params")
            terms.append(gaussian_log_prob(zs[i], mean, log_sd))
        terms.append(gaussian_log_prob(zs[-1], self.model.prior_mean, self.model.prior_log_sd))
        return terms

    def priors(self, split_out):
        """(mean, sd) of each latent's prior, split_out from encoding the latents' image."""
        out = []
        for i, split in enumerate(self.splits):
            mean, log_sd = split.prior_params(split_out[i][0])
            out.append((mean.detach(), log_sd.detach().exp()))
        out.append((self.model.prior_mean.detach(), self.model.prior_log_sd.detach().exp()))
        return out

    def inverse_tracers(self, events: list) -> list:
        """Tracers for every step's and split's inverse: ("step", level, k, [out]) and
        ("split", i, (x_a, z, temperature), [out]) appended to ``events`` in call order."""

        def step_record(level, k):
            def record(args, kwargs):
                entry: list = []
                events.append(("step", level, k, entry))
                return entry
            return record

        def split_record(i):
            def record(args, kwargs):
                x_a = kwargs.get("x_a", args[0] if args else None)
                z = kwargs.get("z", args[1] if len(args) > 1 else None)
                t = kwargs.get("temperature", args[2] if len(args) > 2 else "default")
                entry: list = []
                events.append(("split", i, (x_a, z, t), entry))
                return entry
            return record

        pairs = [(s, "inverse", step_record(level, k)) for level, steps in enumerate(self.levels) for k, s in enumerate(steps)]
        return pairs + [(s, "inverse", split_record(i)) for i, s in enumerate(self.splits)]

    def decode(self, zs):
        """(x or None, the error or None, the traced calls) of inverse(zs)."""
        __tracebackhide__ = True
        events: list = []
        with _trace_all(self.inverse_tracers(events)):
            try:
                return self.model.inverse(list(zs)), None, events
            except NotImplementedError:
                fail(f"{self.name}.inverse", "not implemented yet (it raised NotImplementedError)",
                     "replace `raise NotImplementedError()` with your code.")
            except Exception as err:  # noqa: BLE001 (diagnosed by the caller)
                return None, err, events


def _decode_cause(g: _Glow, zs, events) -> str | None:
    """What the traced calls of inverse(zs) (or of sample, zs None) show went wrong, if anything."""
    for kind, i, *rest in events:
        if kind != "split":
            continue
        z = rest[0][1]
        if zs is None:
            continue
        if z is None:
            return (f"self.splits[{i}].inverse was called without its latent, so it drew a fresh one: pass zs[{i}], "
                    "self.splits[i].inverse(x, zs[i]); inverse must use every latent, never a fresh sample.")
        if not (torch.is_tensor(z) and z.shape == zs[i].shape and torch.equal(z, zs[i])):
            j = next((j for j, zj in enumerate(zs) if torch.is_tensor(z) and z.shape == zj.shape and torch.equal(z, zj)), None)
            if j is not None:
                return (f"self.splits[{i}].inverse was given zs[{j}]: zs lists the latents in forward's order, so zs[i] belongs to "
                        "split i (zs[0] to the first level) whichever way inverse walks the levels.")
    for level, steps in enumerate(g.levels):
        order = [k for kind, lv, k, *_ in events if kind == "step" and lv == level]
        want = list(reversed(range(len(steps))))
        if len(steps) > 1 and order == list(range(len(steps))):
            return (f"the inverse undoes the steps of self.levels[{level}] in forward's order {order}: undo them last-first, "
                    "for step in reversed(self.levels[i]).")
        if order and sorted(order) != sorted(want):
            return (f"the inverse undoes steps {order} of self.levels[{level}]; it must undo each of its {len(steps)} steps "
                    "once, last-first.")
    return None


def _parts_cause(g: _Glow, x) -> str | None:
    """Whether a split or a flow step of the model fails to undo itself on what it saw in forward(x)."""
    seen: dict = {}

    def recorder(key):
        def record(args, kwargs):
            entry = [args[0] if args else None]
            seen.setdefault(key, entry)
            return entry
        return record

    pairs = [(s, "forward", recorder(("split", i))) for i, s in enumerate(g.splits)]
    pairs += [(s, "forward", recorder(("step", lv, k))) for lv, steps in enumerate(g.levels) for k, s in enumerate(steps)]
    try:
        with torch.no_grad(), _trace_all(pairs):
            g.model(x)
        for key, (h, out) in seen.items():
            if key[0] == "split":
                i = key[1]
                x_a, z, _ = out
                half = h.shape[1] // 2
                if not (torch.equal(x_a, h[:, :half]) and torch.equal(z, h[:, half:])):
                    return f"self.splits[{i}] does not return the first half of its input as x_a and the second as z (see the Split check)."
                if not torch.allclose(g.splits[i].inverse(x_a, z), h, atol=1e-6):
                    return f"self.splits[{i}].inverse(x_a, z) does not rebuild the split's input (see the Split check)."
            else:
                _, lv, k = key
                step = g.levels[lv][k]
                if not torch.allclose(step.inverse(out[0])[0], h, atol=1e-6):
                    return f"self.levels[{lv}][{k}].inverse does not undo its forward: see the FlowStep check."
    except Exception:  # noqa: BLE001 (no evidence either way)
        return None
    return None


def _draw(g: _Glow, n, temperature, shape, name):
    """(sample(n, temperature), the traced inverse calls), with a word on a dtype clash."""
    __tracebackhide__ = True
    what = f"{name}.sample({n}, {temperature})"
    events: list = []
    try:
        with _trace_all(g.inverse_tracers(events)):
            s = g.model.sample(n, temperature)
    except NotImplementedError:
        fail(what, "not implemented yet (it raised NotImplementedError)", "replace `raise NotImplementedError()` with your code.")
    except Exception as err:  # noqa: BLE001
        text = str(err)
        dtype_clash = "double" in text.lower() and "float" in text.lower()
        fail(what, f"raised {type(err).__name__}: {text}",
             "part of sample works in float32 while this model is float64: make the noise like the prior's parameters, "
             "e.g. torch.randn_like(mean) or dtype=self.prior_mean.dtype." if dtype_clash else None)
    if not torch.is_tensor(s) or s.shape != (n, *shape):
        fail(f"{name}.sample", f"sample({n}) has shape {_shape(s)}, expected {(n, *shape)}")
    return s, events


def _level_names(n_splits):
    return [f"the latent of self.splits[{i}] (zs[{i}])" for i in range(n_splits)] + ["the top latent (zs[-1])"]


def _check_temperature(g: _Glow, temperature, n, shape, name) -> None:
    """Samples at ``temperature``, encoded back: every latent is its prior's mean plus
    ``temperature`` prior standard deviations of spread (0: exactly the mean)."""
    __tracebackhide__ = True
    s, events = _draw(g, n, temperature, shape, name)
    with torch.no_grad():
        zs, _, split_out = g.encode(s.detach())
        priors = g.priors(split_out)
    # What each split drew inside sample (first call): it must be what forward finds again.
    drawn = {}
    for kind, i, args, out in events:
        if kind == "split" and i not in drawn and out and torch.is_tensor(out[0]) and torch.is_tensor(args[0]):
            drawn[i] = (args, out[0][:, args[0].shape[1]:].detach())
    for i, (args, z_drawn) in sorted(drawn.items()):
        if z_drawn.shape != zs[i].shape or not torch.allclose(z_drawn, zs[i].detach(), atol=1e-6, rtol=1e-6):
            fail(f"{name}.sample", f"forward(sample(...)) does not give back the latent that self.splits[{i}] drew inside "
                 "sample: sample decodes the latents differently from inverse", _decode_cause(g, None, events))
    names = _level_names(len(g.splits))
    for i, (z, (mean, sd), level) in enumerate(zip(zs, priors, names)):
        z = z.detach()
        u = (z - mean) / sd  # in the prior's own standardised coordinates
        not_standard = float((sd - 1).abs().mean()) > 0.1 or float(mean.abs().mean()) > 0.1  # N(0, I) noise would show
        top = i == len(zs) - 1
        # Sample asked split i for a draw (z=None) at this temperature: a wrong draw is the split's doing.
        asked = not top and i in drawn and drawn[i][0][1] is None and drawn[i][0][2] == temperature
        blame = (f"sample asks self.splits[{i}].inverse(x, None, {temperature}) for z, as it should, but the split's "
                 "draw does not follow its prior at that temperature: see the Split check.")
        where = ("the top latent: x = mean + temperature * exp(self.prior_log_sd) * noise" if top else
                 "every split: self.splits[i].inverse(x, None, temperature)")
        learned = ("the learned top prior, N(prior_mean, exp(prior_log_sd)^2)" if top else
                   "the split's learned prior (let the split draw it: self.splits[i].inverse(x, None, temperature))")
        if temperature == 0:
            err = float((z - mean).abs().max())
            if err < 1e-5:
                continue
            if asked:
                cause = blame
            elif float(z.abs().max()) < 1e-9 and float(mean.abs().max()) > 1e-3:
                cause = f"{level} is 0 at temperature 0, not its prior's mean: it was drawn from N(0, T^2 I) instead of {learned}."
            elif abs(float(u.std()) - 1) < 0.25:
                cause = f"{level} still has its prior's full spread at temperature 0: apply the temperature to {where}."
            else:
                cause = None
            fail(f"{name}.sample", f"at temperature 0 every latent must be its prior's mean; {level} differs from it by up to {err:.3g}", cause)
        spread, centre = float(u.std()), float(u.mean())
        se = temperature / math.sqrt(u.numel())  # standard error of the mean; the std's is that / sqrt(2)
        if abs(spread - temperature) <= max(0.05 * max(temperature, 1.0), 6 * se) and abs(centre) <= max(0.05, 6 * se):
            continue
        cause = None
        if asked:
            cause = blame
        elif not_standard and abs(float(z.std()) - temperature) < 0.05 * max(temperature, 1.0) and abs(float(z.mean())) < 0.05:
            cause = f"{level} was drawn as temperature * N(0, I) noise, not from {learned}."
        elif abs(spread - 1) < 0.05:
            cause = f"{level} has its prior's full spread whatever the temperature: apply the temperature to {where}."
        fail(f"{name}.sample", f"at temperature {temperature}, {level} has {spread:.3g} prior standard deviations of "
             f"spread around {centre:.3g} (in units of its prior's), expected {temperature} around 0", cause)


@check
def check_glow(cls: type, *, K: int = 2, L: int = 3, image_size: int = 8, batch: int = 2, seed: int = 0,
               hidden: int = 8, in_channels: int = 1, dtype: torch.dtype = torch.float64, strict: bool = False) -> None:
    """The whole model, with learned priors (moved from their init): latent shapes and order;
    log p(x) against the brute force (the autograd Jacobian of x -> all latents plus each
    latent's log-density under the model's own priors) and its gradient against autograd of
    that; encode-decode; samples at temperature 0 and 0.5 against each level's prior.
    ``strict``: also decoding latents forward never produced, and temperature 1."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "Glow")
    model = build(cls, in_channels, K, L, hidden, image_size, name=name, dtype=dtype,
                  what=f"{name}({in_channels}, K={K}, L={L}, hidden={hidden}, image_size={image_size})")
    g = _Glow(model, name)
    image = (in_channels, image_size, image_size)
    x = 0.3 * torch.randn(batch, *image, dtype=dtype)
    g.encode(0.3 * torch.randn(32, *image, dtype=dtype))  # ActNorm's data-dependent init, on a batch large enough
    zs, log_prob, _ = g.encode(x)
    shapes = _latent_shapes(in_channels, L, image_size, batch)
    got = [tuple(z.shape) for z in zs]
    if got != shapes:
        cause = None
        if len(got) == len(shapes) and got[-1] == shapes[-1] and got[:-1] == shapes[:-1][::-1]:
            cause = ("the split latents are in reverse order: append each split's z as it comes (level 1's first), "
                     "then the top level's output.")
        elif got == shapes[::-1]:
            cause = "the latents are listed top first: append each split's z as it comes (level 1's first), the top last."
        elif len(got) != len(shapes):
            cause = "zs holds one latent per split, then the top level's output: L latents in all."
        fail(f"{name}.forward", f"zs has shapes {got}, expected {shapes} (one per split, level 1's first, then the top)", cause)
    if log_prob.shape != (batch,):
        fail(f"{name}.forward", f"log_prob has shape {tuple(log_prob.shape)}, expected ({batch},)")

    torch.manual_seed(seed + 1)
    perturb(model, _trained_scale)  # a trained-looking model, its priors included

    # log p(x) against the brute force with the model's own priors, and its gradient.
    zs, log_prob, split_out = g.encode(x)
    steps_ld = None if g.step_logdet is None else g.step_logdet.detach()
    own_split = [out[2] for out in split_out]
    terms = g.prior_terms(zs, split_out)

    def flat_latents(v):
        return torch.cat([z.flatten(1) for z in g.encode(v)[0]], 1)

    jac = jacobian_logdet(flat_latents, x, create_graph=True)
    want = sum(terms) + jac
    if not close(log_prob.detach(), want.detach(), rtol=1e-6, atol=1e-6):
        t = [v.detach() for v in terms]
        w, j = want.detach(), jac.detach()
        split_sum = sum(t[:-1]) if len(t) > 1 else torch.zeros_like(w)
        own = sum(out[2].detach() for out in split_out) if split_out else torch.zeros_like(w)
        known = []
        if not close(own, split_sum, rtol=1e-6, atol=1e-6):
            known.append((w - split_sum + own, "the splits' log_p are wrong: see the Split check."))
        if steps_ld is not None and not close(steps_ld, j, rtol=1e-6, atol=1e-6):
            known.append((w - j + steps_ld, "the flow steps' log-dets are wrong: see the FlowStep check."))
        known += [
            (w - split_sum, "the log-likelihood of the split-off latents is missing: add the log_p each split returns."),
            (w - split_sum + sum(standard_normal_log_prob(z.detach()) for z in zs[:-1]),
             "the split-off latents were scored under N(0, I): their prior is the split's learned, conditional one "
             "(add the log_p each split returns)."),
            (w - t[-1], "the top latent's prior log-density is missing: add gaussian_log_prob(z, self.prior_mean, self.prior_log_sd)."),
            (w - t[-1] + standard_normal_log_prob(zs[-1].detach()),
             "the top latent was scored under N(0, I), not under its learned prior N(prior_mean, exp(prior_log_sd)^2)."),
            (w - j, "the flow steps' log-dets are missing: add every step's log-det to log p(x)."),
            (w - 2 * j, "the steps' log-dets were subtracted: log p(x) = log p(zs) + the sum of the log-dets."),
        ]
        fail(f"{name}.forward", f"log p(x) {fmt(log_prob)}, but the brute force (log|det| of the Jacobian of x -> all "
             f"latents, plus each latent's log-density under the model's own priors) gives {fmt(w)}",
             explain(log_prob, w, known))
    _glow_gradient(model, log_prob, [("the split latents' prior log-densities", sum(terms[:-1])),
                                     ("the top prior's log-density", terms[-1]), ("the steps' log-dets", jac)], name,
                   own_split=sum(own_split) if own_split else None)

    # Decoding: inverse(forward(x)) is x.
    zs = [z.detach() for z in zs]
    back, err, events = g.decode(zs)
    if err is not None or not torch.is_tensor(back) or back.shape != x.shape or not torch.allclose(back, x, atol=1e-6):
        cause = _decode_cause(g, zs, events)
        if err is not None:
            fail(f"{name}.inverse", f"inverse(zs) raised {type(err).__name__}: {err}", cause)
        if not torch.is_tensor(back) or back.shape != x.shape:
            fail(f"{name}.inverse", f"inverse(zs) returned {_shape(back)}, expected shape {tuple(x.shape)}", cause)
        if cause is None:
            cause = _parts_cause(g, x)
        if cause is None:
            again, _, _ = g.decode(zs)
            if torch.is_tensor(again) and again.shape == back.shape and not torch.allclose(again, back):
                cause = "inverse(zs) is random (two calls differ): it draws latents instead of using the given zs."
        fail(f"{name}.inverse", f"inverse(forward(x)) differs from x by up to {float((back - x).abs().max()):.3g}", cause)
    if strict:  # latents forward never produced: forward(inverse(zs)) is zs
        fresh = [0.7 * torch.randn(*s, dtype=dtype) for s in shapes]
        out, err, events = g.decode(fresh)
        if err is not None or not torch.is_tensor(out) or out.shape != x.shape:
            fail(f"{name}.inverse", "inverse of latents forward did not produce "
                 + (f"raised {type(err).__name__}: {err}" if err is not None else f"returned {_shape(out)}, expected {tuple(x.shape)}"),
                 _decode_cause(g, fresh, events))
        with torch.no_grad():
            again = g.encode(out)[0]
        bad = [i for i, (a, b) in enumerate(zip(again, fresh)) if not torch.allclose(a, b, atol=1e-6)]
        if bad:
            cause = _decode_cause(g, fresh, events)
            if cause is None and torch.allclose(out, x):
                cause = "inverse returned the last input of forward, not the decoding of the zs it was given."
            fail(f"{name}.inverse", f"forward(inverse(zs)) differs from zs (at zs{bad}) for latents forward did not produce", cause)

    # Sampling against the learned priors, at every level.
    _draw(g, 3, 0.7, image, name)  # the shape
    torch.manual_seed(seed + 2)
    _check_temperature(g, 0.0, 50, image, name)
    for t in ((0.5, 1.0) if strict else (0.5,)):
        _check_temperature(g, t, 400, image, name)
    ok(f"{name} (K={K}, L={L}, {in_channels}x{image_size}x{image_size})")


def _trained_scale(pname: str) -> float:
    """How far ``check_glow`` moves the parameter ``pname``: the priors' means and log-stds
    clearly away from 0, but the split priors' weights gently (a prior that grows with x_a
    compounds, level after level, into samples too large to decode)."""
    if pname in ("prior_mean", "prior_log_sd") or ("prior" in pname and pname.endswith("bias")):
        return 0.3
    return 0.04 if "prior" in pname else 0.05


def _glow_gradient(model, log_prob, pieces, name, own_split=None) -> None:
    """Training follows the gradient of log p(x): against autograd of the brute force, for
    every parameter (the priors' included). ``pieces``: the brute force's terms, named (the
    split latents' prior, the top prior, the log-det), to tell which one lost its gradient."""
    __tracebackhide__ = True
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    tensors = [p for _, p in params]

    def grads(value):
        if not (torch.is_tensor(value) and value.requires_grad):
            return [torch.zeros_like(p) for p in tensors]
        out = torch.autograd.grad(value.sum(), tensors, allow_unused=True, retain_graph=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(out, tensors)]

    def flat(gs):
        return torch.cat([g.flatten() for g in gs])

    got = flat(grads(log_prob))
    parts = {word: flat(grads(value)) for word, value in pieces}
    want = sum(parts.values())
    tol = dict(rtol=1e-5, atol=1e-7)
    if torch.allclose(got, want, **tol):
        return
    offsets = [0] + list(itertools.accumulate(p.numel() for p in tensors))
    bad = [pname for (pname, _), a, b in zip(params, offsets, offsets[1:]) if not torch.allclose(got[a:b], want[a:b], **tol)]
    names = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
    cause = None
    if own_split is not None:
        split_word = pieces[0][0]
        own = flat(grads(own_split))
        if not torch.allclose(own, parts[split_word], **tol) and torch.allclose(got, want - parts[split_word] + own, **tol):
            cause = "the gradient of the splits' log_p is wrong: see the Split check."
    for r in range(1, len(parts) if cause is None else 0):
        for lost in itertools.combinations(parts, r):
            if torch.allclose(got, want - sum(parts[w] for w in lost), **tol):
                cause = (f"no gradient flows through {' and '.join(lost)}: detached (.detach(), .data, .item() or "
                         "numpy) or computed under torch.no_grad() before being added to log p(x).")
                break
        if cause:
            break
    fail(f"{name}.forward", f"log p(x) has the right value, but its gradient with respect to {names} differs from "
         "autograd of the brute force, so training would follow the wrong direction", cause)
