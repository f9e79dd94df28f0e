"""Checks for notebook 7, What a likelihood tells you.

Four exercises: the logit transform and its log-det (against the autograd Jacobian, in
float64), the bits/dim of a logit-space model in pixel space, the variational-dequantization
bound, and the per-image bits/dim of a set of images.

The last two call the student's function with a ``log_prob`` and, for the bound, a dequantizer
of the check's own, both of which record what they were given and what they returned. The
expected value is then recomputed from those records, so any correct answer passes whatever
order it draws its random numbers in; a cause is named only where the recorded inputs or the
returned numbers match what that mistake gives, recomputed here.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..density import bits_per_dim, jacobian_logdet, standard_normal_log_prob
from .common import as_pair, call, check, check_logdet_shape, explain, fail, fmt, ok, perturb

__all__ = ["check_logit_transform", "check_pixel_space_bpd", "check_variational_bpd", "check_per_image_bpd"]

LN_2 = math.log(2)


def _as_tensor(out, what: str, batch: int) -> torch.Tensor:
    """The per-sample result of ``what``: a tensor of shape ``(batch,)``."""
    __tracebackhide__ = True
    if not torch.is_tensor(out):
        fail(what, f"must return a tensor with one value per image, shape ({batch},), got {type(out).__name__}",
             "a single number was returned (a mean or a .item()): return one value per image." if isinstance(out, (int, float)) else None)
    if out.shape != (batch,):
        cause = (f"a single number was returned, the mean or sum over the batch: return one value per image, shape ({batch},)."
                 if out.numel() == 1 else None)
        fail(what, f"returned shape {tuple(out.shape)}, expected ({batch},), one value per image", cause)
    if not torch.isfinite(out).all():
        fail(what, f"returned inf or NaN: {fmt(out)}")
    return out


# -- Exercise 1: logit_transform ------------------------------------------------------------


def _logit_reference(y: torch.Tensor, alpha: float):
    s = alpha + (1 - 2 * alpha) * y
    x = torch.log(s) - torch.log1p(-s)
    logdet = (math.log(1 - 2 * alpha) - torch.log(s) - torch.log1p(-s)).flatten(1).sum(1)
    return x, logdet


@check
def check_logit_transform(fn: Callable, *, shape: tuple = (4, 1, 3, 3), alpha: float = 0.05, seed: int = 0,
                          strict: bool = False) -> None:
    """``logit_transform(y, alpha) -> (x, logdet)``: ``x = logit(alpha + (1 - 2 alpha) y)``
    elementwise, and ``logdet`` = log|det dx/dy| per sample, equal to the autograd Jacobian's
    (float64). A second ``alpha`` must change the result. ``strict`` (hidden) adds: ``y`` with
    exact 0s (a level-0 pixel with no noise) still gives finite values, and float32 stays float32.
    """
    __tracebackhide__ = True
    what = "logit_transform"
    y = torch.rand(shape, dtype=torch.float64)
    x, logdet = as_pair(call(fn, y, alpha, what=what), what)
    if x.shape != y.shape:
        fail(what, f"x has shape {tuple(x.shape)}, y had {tuple(y.shape)}: the transform is elementwise")
    check_logdet_shape(logdet, shape[0], what)
    want_x, want_ld = _logit_reference(y, alpha)
    if not torch.allclose(x.double(), want_x, rtol=1e-6, atol=1e-7):
        known = [
            (torch.logit(y), f"y went into the logit without the squash: first map y to alpha + (1 - 2 alpha) y, "
                             f"in [{alpha}, {1 - alpha}), so that y = 0 does not give -inf."),
            (torch.logit(y, eps=alpha), "torch.logit(y, eps=alpha) clamps y to [alpha, 1 - alpha]; it does not squash it. "
                                        "Squash: s = alpha + (1 - 2 alpha) y, then logit(s)."),
            (torch.sigmoid(alpha + (1 - 2 * alpha) * y), "the sigmoid was applied, the inverse of the logit."),
        ]
        cause = next((c for v, c in known if torch.allclose(x.double(), v, rtol=1e-6, atol=1e-7)), None)
        fail(what, f"x = {fmt(x)}, expected logit(alpha + (1 - 2 alpha) y) = {fmt(want_x)} (alpha = {alpha})", cause)
    brute = jacobian_logdet(lambda v: _logit_reference(v, alpha)[0], y)
    if not torch.allclose(logdet.double(), brute, rtol=1e-6, atol=1e-6):
        d = y[0].numel()
        known = [
            (brute - d * math.log(1 - 2 * alpha), "the factor (1 - 2 alpha) of the squash is missing: d x / d y = "
                                                  "(1 - 2 alpha) / (s (1 - s)), so each dimension adds log(1 - 2 alpha)."),
            (-brute, "this is the log-det of the inverse map (the sigmoid): the logit stretches, its log-det is "
                     "log(1 - 2 alpha) - log s - log(1 - s) per dimension, positive."),
            (brute / d, "the log-det was averaged over the dimensions: sum over every dimension of a sample."),
            ((-(torch.log(y) + torch.log1p(-y))).flatten(1).sum(1),
             "the log-det was computed at y, without the squash: log|dx/dy| = log(1 - 2 alpha) - log s - log(1 - s) "
             "with s = alpha + (1 - 2 alpha) y."),
        ]
        fail(what, f"logdet {fmt(logdet)} but log|det J| from autograd + slogdet is {fmt(brute)}",
             explain(logdet.double(), brute, known))
    other = 0.1 if abs(alpha - 0.1) > 1e-9 else 0.05
    x2, ld2 = as_pair(call(fn, y, other, what=f"{what}(y, alpha={other})"), what)
    want_x2, want_ld2 = _logit_reference(y, other)
    if not (torch.allclose(x2.double(), want_x2, rtol=1e-6, atol=1e-7) and torch.allclose(ld2.double(), want_ld2, rtol=1e-6, atol=1e-6)):
        ignored = torch.allclose(x2.double(), want_x, rtol=1e-6, atol=1e-7)
        fail(what, f"with alpha = {other}: x = {fmt(x2)}, logdet = {fmt(ld2)}; expected {fmt(want_x2)}, {fmt(want_ld2)}",
             f"the alpha argument is ignored: the result is the one for alpha = {alpha}; use alpha, not a number written in."
             if ignored else None)
    if strict:
        y0 = torch.rand(shape)
        y0.view(-1)[:: 3] = 0.0
        x0, ld0 = as_pair(call(fn, y0, alpha, what=what), what)
        if x0.dtype != torch.float32 or ld0.dtype != torch.float32:
            fail(what, f"float32 input gave {x0.dtype} and {ld0.dtype}: keep the dtype of y")
        if not (torch.isfinite(x0).all() and torch.isfinite(ld0).all()):
            fail(what, "y with exact zeros (level 0 with no noise) gave inf or NaN; the squash keeps logit's input inside (0, 1)")
        wx, wl = _logit_reference(y0.double(), alpha)
        if not (torch.allclose(x0.double(), wx, rtol=1e-4, atol=1e-4) and torch.allclose(ld0.double(), wl, rtol=1e-4, atol=1e-3)):
            fail(what, f"on float32 y with exact zeros: x = {fmt(x0)}, logdet = {fmt(ld0)}; expected {fmt(wx)}, {fmt(wl)}")
    ok(f"{what} ({'x'.join(map(str, shape))}, alpha = {alpha})")


# -- Exercise 2: pixel_space_bpd -----------------------------------------------------------


@check
def check_pixel_space_bpd(fn: Callable, *, batch: int = 5, n_dims: int = 64, n_bins: int = 17, seed: int = 0,
                          strict: bool = False) -> None:
    """``pixel_space_bpd(log_prob_logit, logdet, n_dims, n_bins)``: bits/dim of the pixels from
    ``log p(logit(y))`` and the transform's log-det: ``bits_per_dim(log_prob_logit + logdet, D, n_bins)``,
    per sample. ``strict`` (hidden) adds: the result carries the gradient of both inputs."""
    __tracebackhide__ = True
    what = "pixel_space_bpd"
    lp = -n_dims * (1.0 + torch.rand(batch, dtype=torch.float64))  # log p in logit space: a few nats per dimension
    ld = n_dims * (0.5 + torch.rand(batch, dtype=torch.float64))  # the logit's log-det: positive
    got = _as_tensor(call(fn, lp.clone(), ld.clone(), n_dims, n_bins, what=what), what, batch)
    want = bits_per_dim(lp + ld, n_dims, n_bins)
    if not torch.allclose(got.double(), want, rtol=1e-6, atol=1e-7):
        known = [
            (bits_per_dim(lp, n_dims, n_bins), "the transform's log-det is missing: this is the logit-space figure. "
                                               "log p(y) = log p(logit(y)) + log|det d logit / dy|."),
            (bits_per_dim(lp - ld, n_dims, n_bins), "the log-det was subtracted: log p(y) = log p(x) + logdet, "
                                                    "with logdet = log|det dx/dy| of the logit transform, added."),
            (bits_per_dim(lp + ld, n_dims, n_bins) - math.log2(n_bins), "the D log n_bins term is missing: "
                                                                       "bpd = (-log p(y) + D log n_bins) / (D ln 2)."),
            (bits_per_dim(lp + ld, n_dims, n_bins) * LN_2, "the result is in nats per dimension: divide by ln 2 for bits."),
            (-(lp + ld) / (n_dims * LN_2), "the D log n_bins term is missing: bpd = (-log p(y) + D log n_bins) / (D ln 2)."),
        ]
        fail(what, f"got {fmt(got)}, expected {fmt(want)} = bits_per_dim(log_prob_logit + logdet, D, n_bins)",
             explain(got.double(), want, known))
    if strict:
        a, b = lp.clone().requires_grad_(), ld.clone().requires_grad_()
        out = call(fn, a, b, n_dims, n_bins, what=what)
        if not (torch.is_tensor(out) and out.requires_grad):
            fail(what, "the result carries no gradient: training minimises this figure, so compute it with torch operations")
        ga, gb = torch.autograd.grad(out.sum(), (a, b), allow_unused=True)
        want_g = torch.full_like(lp, -1 / (n_dims * LN_2))
        if ga is None or gb is None or not (torch.allclose(ga, want_g) and torch.allclose(gb, want_g)):
            fail(what, "the gradient with respect to log_prob_logit or logdet is not -1 / (D ln 2) per sample")
    ok(f"{what} ({batch} samples, D = {n_dims}, {n_bins} levels)")


# -- Exercise 3: variational_bpd -------------------------------------------------------------


class _Dequantizer(nn.Module):
    """A conditional logistic on a sigmoid, like the notebook's: u = sigmoid(mu + exp(log_s) eps),
    eps ~ Logistic(0, 1), (mu, log_s) from a 3x3 convolution of the image. Records each call."""

    def __init__(self, channels: int, n_bins: int):
        super().__init__()
        self.n_bins = n_bins
        self.net = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, images):
        x = images.to(self.net.weight.dtype) / (self.n_bins - 1) - 0.5
        mu, log_s = self.net(x).chunk(2, 1)
        eps = torch.logit(torch.rand_like(mu).clamp(1e-6, 1 - 1e-6))
        h = mu + log_s.exp() * eps
        u = torch.sigmoid(h)
        log_q = (F.logsigmoid(eps) + F.logsigmoid(-eps) - log_s - F.logsigmoid(h) - F.logsigmoid(-h)).flatten(1).sum(1)
        self.calls.append((u, log_q))
        return u, log_q


class _Density:
    """A smooth density on [0, 1)^D that records the points it is asked about (graph kept)."""

    def __init__(self):
        self.inputs: list[torch.Tensor] = []

    @staticmethod
    def log_prob(y: torch.Tensor) -> torch.Tensor:
        z = (y - 0.4) / 0.3
        flat = z.flatten(1)
        return standard_normal_log_prob(z) - flat.shape[1] * math.log(0.3) + 0.3 * (flat[:, :1] * flat).sum(1) / flat.shape[1]

    def __call__(self, y):
        if not torch.is_tensor(y):
            fail("log_prob", f"was called with a {type(y).__name__}, not a tensor of images")
        self.inputs.append(y)
        return self.log_prob(y)


def _in_bins(y: torch.Tensor, x: torch.Tensor, n_bins: int) -> bool:
    """Whether every ``y`` is a dequantization ``(x + u) / n_bins`` of its level, u in [0, 1]
    (float rounding allowed)."""
    u = y.double() * n_bins - x.double()
    return bool(((u >= -1e-4) & (u <= 1 + 1e-4)).all())


def _recorded(density: _Density, what: str, n: int) -> torch.Tensor:
    __tracebackhide__ = True
    if not density.inputs:
        fail(what, "log_prob was never called: the bound and the bits/dim need log p(y) of the dequantized images")
    ys = torch.cat([y.reshape(len(y), -1) for y in density.inputs])
    if len(ys) != n:
        fail(what, f"log_prob was called on {len(ys)} images in all, for {n} images: call it once per image")
    return ys


@check
def check_variational_bpd(fn: Callable, *, batch: int = 6, channels: int = 1, size: int = 4, n_bins: int = 17,
                          seed: int = 0, strict: bool = False) -> None:
    """``variational_bpd(log_prob, dequantizer, images, n_bins)``: per image, the bits/dim of the
    variational bound, ``bits_per_dim(log p((x + u) / n_bins) - log q(u | x), D, n_bins)`` with
    ``(u, log q) = dequantizer(images)`` drawn once. Its gradient with respect to the
    dequantizer's parameters must be the bound's: through ``u`` (reparameterised) and ``log q``.
    ``strict`` (hidden) runs with other shapes and levels and checks a second call draws anew."""
    __tracebackhide__ = True
    what = "variational_bpd"
    images = torch.randint(0, n_bins, (batch, channels, size, size), dtype=torch.uint8)
    images_before = images.clone()
    deq = _Dequantizer(channels, n_bins)
    perturb(deq, 0.3)
    density = _Density()
    got = _as_tensor(call(fn, density, deq, images, n_bins, what=what), what, batch)
    if not torch.equal(images, images_before):
        fail(what, "the uint8 images passed in were changed in place; work on a converted copy")
    if len(deq.calls) != 1:
        fail(what, f"the dequantizer was called {len(deq.calls)} times; call it once: u and log q(u|x) belong to one draw",
             "the dequantizer was not used: the noise must be its u, and the bound subtracts its log q(u|x)."
             if not deq.calls else None)
    u, log_q = deq.calls[0]
    ys = _recorded(density, what, batch)
    x = images.to(u.dtype)
    want_y = ((x + u) / n_bins).reshape(batch, -1)
    if not torch.allclose(ys.detach().double(), want_y.detach().double(), rtol=1e-5, atol=1e-6):
        yd = ys.detach().double()
        known = [
            ((x + u).reshape(batch, -1), "log_prob was given x + u: divide by n_bins, y = (x + u) / n_bins is in [0, 1)."),
            (want_y - 0.5, "log_prob was given centred values: here log_prob takes y = (x + u) / n_bins in [0, 1)."),
            ((x / n_bins).reshape(batch, -1), "the noise u was not added: y = (x + u) / n_bins."),
        ]
        cause = next((c for v, c in known if torch.allclose(yd, v.detach().double(), rtol=1e-5, atol=1e-6)), None)
        if cause is None:
            inside = _in_bins(yd, x.reshape(batch, -1), n_bins)
            if inside:
                cause = ("the noise in y is not the dequantizer's u (uniform noise, or a second draw?): "
                         "y = (x + u) / n_bins with (u, log q) = dequantizer(images).")
        fail(what, f"log_prob was called on {fmt(ys)}, expected (x + u) / n_bins = {fmt(want_y)}", cause)
    lp = _Density.log_prob(want_y)
    d = images[0].numel()
    want = bits_per_dim(lp - log_q, d, n_bins)
    if not torch.allclose(got.detach().double(), want.detach().double(), rtol=1e-5, atol=1e-5):
        known = [
            (bits_per_dim(lp, d, n_bins), "log q(u|x) is missing: with noise from q the bound is "
                                          "E_q[log p(y) - log q(u|x)] - D log n_bins; only for uniform noise is log q = 0."),
            (bits_per_dim(lp + log_q, d, n_bins), "the sign of log q(u|x) is wrong: the bound subtracts it, "
                                                  "log P(x) >= E_q[log p(x + u) - log q(u|x)]."),
            (want - math.log2(n_bins), "the D log n_bins term is missing: bpd = (-log p(y) + log q + D log n_bins) / (D ln 2)."),
            (want * LN_2, "the result is in nats per dimension: divide by ln 2 for bits."),
            (bits_per_dim(lp - log_q, size * size, n_bins), f"D was counted without the channels: D = C*H*W = {d}."),
        ]
        fail(what, f"got {fmt(got)}, expected {fmt(want)} = bits_per_dim(log_prob(y) - log_q, D, n_bins)",
             explain(got.detach().double(), want.detach().double(), known))
    params = [p for p in deq.parameters()]
    if not got.requires_grad:
        fail(what, "the bound carries no gradient to the dequantizer's parameters, so q(u|x) could not be trained",
             "it was computed under torch.no_grad() or from detached numbers: the bound must stay differentiable.")
    g_got = torch.autograd.grad(got.sum(), params, retain_graph=True, allow_unused=True)
    g_want = torch.autograd.grad(want.sum(), params, retain_graph=True)
    if any(a is None or not torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(g_got, g_want)):
        detached = bits_per_dim(_Density.log_prob(want_y.detach()) - log_q, d, n_bins)
        g_det = torch.autograd.grad(detached.sum(), params, retain_graph=True)
        same = all(a is not None and torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(g_got, g_det))
        fail(what, "the bound has the right value, but its gradient with respect to the dequantizer's parameters differs "
                   "from the bound's; training q would follow the wrong direction",
             "u was detached: the gradient must flow through u = sigmoid(mu + s eps) into the dequantizer "
             "(the reparameterisation), not only through log q." if same else None)
    if strict:
        again = _as_tensor(call(fn, _Density(), deq, images, n_bins, what=what), what, batch)
        if torch.allclose(again.detach(), got.detach()):
            fail(what, "a second call gave the same values: each call draws new noise from the dequantizer")
    ok(f"{what} ({batch} images of {channels}x{size}x{size}, {n_bins} levels)")


# -- Exercise 4: per_image_bpd ---------------------------------------------------------------


@check
def check_per_image_bpd(fn: Callable, *, n: int = 50, channels: int = 2, size: int = 4, n_bins: int = 9,
                        batch_size: int = 16, seed: int = 0, strict: bool = False) -> None:
    """``per_image_bpd(log_prob, images, n_bins, batch_size, seed)``: the bits/dim of each image,
    shape ``(N,)``, in the images' order, under uniform dequantization with noise from a
    generator seeded by ``seed``: the same seed gives the same figures, torch's global random
    state is left alone. The noise is read back from the points ``log_prob`` was given, so any
    order of drawing it passes. ``strict`` (hidden): other sizes, and another seed, other noise."""
    __tracebackhide__ = True
    what = "per_image_bpd"
    images = torch.randint(0, n_bins, (n, channels, size, size), dtype=torch.uint8)
    torch.rand(7)  # the global state now differs from a freshly seeded one, which a student's seeding would reset it to
    images_before = images.clone()
    density = _Density()
    rng = torch.random.get_rng_state()
    with torch.no_grad():
        got = call(fn, density, images, n_bins, batch_size, seed, what=what)
    rng_touched = not torch.equal(rng, torch.random.get_rng_state())
    got = _as_tensor(got, what, n)
    if not torch.equal(images, images_before):
        fail(what, "the uint8 images passed in were changed in place; work on a converted copy")
    ys = _recorded(density, what, n).detach().double()
    x = images.reshape(n, -1).double()
    if not _in_bins(ys, x, n_bins):
        known = [((ys + 0.5), "log_prob was given centred values: here it takes y = (x + u) / n_bins in [0, 1).")]
        known += [(ys * b / n_bins, f"the images were dequantized with {b} levels, not the n_bins argument ({n_bins} here).")
                  for b in (17, 256) if b != n_bins]
        cause = next((c for v, c in known if _in_bins(v, x, n_bins)), None)
        if cause is None and _in_bins(ys.sort(0).values, x.sort(0).values, n_bins):
            cause = "the images were reordered: return the bits/dim in the order of the images."
        fail(what, f"log_prob was given {fmt(ys)}, which is not a dequantization (x + u) / n_bins, u in [0, 1), "
                   f"of the images {fmt(x)}", cause)
    u = ys * n_bins - x
    if float(u.std()) < 0.05:
        fail(what, f"every level got the same offset inside its bin (u = {float(u.mean()):.3f} everywhere): there is no noise",
             "no dequantization noise: add u ~ U[0, 1) to each level before dividing by n_bins (glowcourse.dequantize).")
    if abs(float(u.mean()) - 0.5) > 0.05 or abs(float(u.std()) - 12 ** -0.5) > 0.05:
        fail(what, f"the noise inside the bins has mean {float(u.mean()):.3f} and sd {float(u.std()):.3f}; "
                   f"uniform noise has 0.5 and {12 ** -0.5:.3f}")
    d, hw = images[0].numel(), size * size
    lp = _Density.log_prob(ys)
    want = bits_per_dim(lp, d, n_bins)
    if not torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5):
        batch_means = torch.cat([b.mean().expand(len(b)) for b in want.split(batch_size)])
        known = [
            (batch_means, "each image got the mean of its batch: return every image's own bits/dim."),
            (bits_per_dim(lp, hw, n_bins), f"D was counted without the channels: D = C*H*W = {d} here (images[0].numel())."),
            (want * LN_2, "the result is in nats per dimension: divide by ln 2 for bits."),
        ]
        known += [(bits_per_dim(lp, d, b), f"n_bins = {b} was written in instead of the n_bins argument ({n_bins} here).")
                  for b in (17, 256) if b != n_bins]
        fail(what, f"got {fmt(got)}, expected {fmt(want)}: bits_per_dim(log_prob(y), D, n_bins) of each image",
             explain(got.double(), want, known))
    density2 = _Density()
    with torch.no_grad():
        again = _as_tensor(call(fn, density2, images, n_bins, batch_size, seed, what=what), what, n)
    if not torch.allclose(again.double(), got.double(), rtol=1e-6, atol=1e-6):
        fail(what, f"two calls with the same images and seed gave {fmt(got)} and {fmt(again)}",
             "the noise is not drawn from a generator seeded with `seed` (torch.Generator().manual_seed(seed)), "
             "so the figures change from call to call.")
    if rng_touched:
        fail(what, "scoring changed torch's global random state: the noise must come from a generator of its own",
             "the global generator was seeded or drawn from (torch.manual_seed, or torch.rand without a generator): "
             "use torch.Generator().manual_seed(seed).")
    if strict:
        with torch.no_grad():
            other = _as_tensor(call(fn, _Density(), images, n_bins, batch_size, seed + 1, what=what), what, n)
        if torch.allclose(other.double(), got.double()):
            fail(what, "another seed gave the same figures: the seed argument is ignored")
    ok(f"{what} ({n} images of {channels}x{size}x{size}, {n_bins} levels, batches of {batch_size})")
