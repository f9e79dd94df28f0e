"""Checks for notebook 6, Glow in practice.

They run the student's functions on a tiny reference Glow (``glowcourse.flows.Glow``, 8x8
images, parameters moved away from the init), so they take a second and need no trained
model. Images in *model space* are dequantized values minus 0.5, in ``[-0.5, 0.5)``.

What each check tests is a property any correct answer has, whatever order it draws its
random numbers in: the figure is the mean over *images* (the inputs put a short, different
last batch where a mean of batch means differs); samples, encoded back, have latents spread by
exactly the temperature; interpolations and attribute moves are straight lines in every
level's latent; the caller's tensors are left as they were. A cause is named only where the
numbers match what that mistake gives, recomputed here.

The training checks (``check_train_step``, ``check_checkpoint``) use a still smaller Glow on
4x4 images. The training step runs under plain SGD, whose update is the learning rate times the
gradient it was given, so the update shows which gradient was applied (clipped or not, with the
previous step's left in ``.grad`` or not); the checkpoint is tested by what it is for: a fresh
model, optimizer and generators that load it continue the saved run bit for bit.
"""
from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path
from typing import Callable

import torch

from ..data import dequantize
from ..density import bits_per_dim
from ..flows import Glow, squeeze
from .common import call, check, fail, ok, perturb

__all__ = ["check_evaluate_bpd", "check_train_step", "check_checkpoint", "check_sample_images", "check_interpolate",
           "check_manipulate", "tiny_glow"]

N_BINS = 17  # grey levels of the digits-like images the checks use
IMAGE_SIZE = 8  # their height and width
LN_2 = math.log(2)  # nats per bit


def tiny_glow(seed: int = 0, image_size: int = IMAGE_SIZE, in_channels: int = 1) -> Glow:
    """A small Glow with ActNorm initialised on digits-like data and every parameter moved."""
    torch.manual_seed(seed)
    model = Glow(in_channels, K=1, L=2, hidden=8, image_size=image_size)
    images = torch.randint(0, N_BINS, (64, in_channels, image_size, image_size), dtype=torch.uint8)
    with torch.no_grad():
        model(dequantize(images, N_BINS) - 0.5)  # ActNorm's data-dependent init
    perturb(model, 0.05)
    return model


def _narrow_glow(seed: int = 0) -> Glow:
    """``tiny_glow`` whose last inverse step (the image-side ActNorm) shrinks its output 20x, so
    that samples at temperatures up to 1 stay well inside model space: nothing is clamped, and
    each sample can be encoded back to the exact latents it was decoded from."""
    model = tiny_glow(seed)
    with torch.no_grad():
        model.levels[0][0].actnorm.scale.mul_(20)
    return model


def _latents(model, x):
    with torch.no_grad():
        return [z.detach() for z in model(x)[0]]


@torch.no_grad()
def _standardised(model: Glow, x: torch.Tensor) -> list[torch.Tensor]:
    """Every level's latent of ``x`` in units of its prior: ``(z - mean) / sd``, where the split
    priors' mean and sd are those given the kept half (Glow's split2d), as in sampling."""
    out = []
    for i, steps in enumerate(model.levels):
        x = squeeze(x)
        for step in steps:
            x, _ = step(x)
        if i < len(model.splits):
            x_a, z, _ = model.splits[i](x)
            mean, log_sd = model.splits[i].prior_params(x_a)
            out.append((z - mean) / torch.exp(log_sd))
            x = x_a
    out.append((x - model.prior_mean) / torch.exp(model.prior_log_sd))
    return out


def _rms(tensors) -> float:
    flat = torch.cat([t.flatten() for t in tensors]).double()
    return float(flat.pow(2).mean().sqrt())


def _digits(n: int, seed: int, channels: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, N_BINS, (n, channels, IMAGE_SIZE, IMAGE_SIZE), generator=g).to(torch.uint8)


def _max_diff(a, b) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


def _changed(before: list[torch.Tensor], after: list) -> bool:
    return any(not torch.is_tensor(a) or a.shape != b.shape or not torch.equal(a.detach(), b) for b, a in zip(before, after))


# -- Exercise 1: evaluate_bpd ------------------------------------------------------------


@check
def check_evaluate_bpd(fn: Callable, *, n: int = 70, batch_size: int = 32, channels: int = 3, seed: int = 0,
                       strict: bool = False) -> None:
    """``evaluate_bpd(model, images, n_bins, batch_size, seed)``: the mean bits/dim over all
    images, with the dequantization noise from a generator seeded by ``seed``.

    The last batch is short (``n % batch_size`` images) and blank, so its bits/dim differ
    from the others': a mean of the batch means weighs those few images as much as a full
    batch and misses the figure clearly. ``strict`` (the hidden test) adds two properties:
    the figure does not depend on how the images are batched, and evaluating leaves torch's
    global random state alone (the training loop's data order must not depend on evaluation).
    """
    __tracebackhide__ = True
    what = "evaluate_bpd"
    model = tiny_glow(seed, in_channels=channels)
    images = _digits(n, seed + 1, channels=channels)
    tail = n % batch_size
    if tail:
        images[-tail:] = 0  # a short last batch of blank images
    images_before = images.clone()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    got = call(fn, model, images, N_BINS, batch_size, seed, what=what)
    rng_touched = not torch.equal(rng, torch.random.get_rng_state())
    try:
        got = float(got)
    except (TypeError, ValueError, RuntimeError):
        fail(what, f"must return one number (the mean bits/dim), got {type(got).__name__}"
             + (f" of shape {tuple(got.shape)}" if torch.is_tensor(got) else ""))
    if any(not torch.equal(before[k], v) for k, v in model.state_dict().items()):
        fail(what, "evaluating changed the model's parameters or buffers: evaluation must not train or re-initialise the model")
    if not torch.equal(images, images_before):
        fail(what, "the uint8 images passed in were changed in place; work on a converted copy")
    again = float(call(fn, model, images, N_BINS, batch_size, seed, what=what))
    if abs(again - got) > 1e-5:
        fail(what, f"two calls with the same model, images and seed gave {got:.5f} and {again:.5f}",
             "the dequantization noise is not drawn from a generator seeded with `seed` "
             "(torch.Generator().manual_seed(seed)), so the figure changes from call to call.")

    d, hw = images[0].numel(), images.shape[-1] * images.shape[-2]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        y = dequantize(images, N_BINS, g) - 0.5
        log_p = model(y)[1]
        per_image = bits_per_dim(log_p, d, N_BINS)
        want = float(per_image.mean())
        uncentred = float(bits_per_dim(model(y + 0.5)[1], d, N_BINS).mean())
    tol = 0.02  # other ways of drawing the same kind of noise move the figure by < 0.01 here
    if abs(got - want) <= tol:
        if strict:
            _evaluate_bpd_strict(fn, model, images, seed, want, tol, rng_touched)
        ok(f"{what} ({n} images of {channels}x{IMAGE_SIZE}x{IMAGE_SIZE}, batches of {batch_size})")
        return

    batch_means = [float(b.mean()) for b in per_image.split(batch_size)]
    known = [
        (uncentred, "the images were not centred: the model expects dequantized values minus 0.5, in [-0.5, 0.5)."),
        (want - math.log2(N_BINS), "the D log(n_bins) term is missing: bpd = (-log p(y) + D log n_bins) / (D ln 2), "
                                   "as glowcourse.bits_per_dim computes it."),
        (want * LN_2, "the result is in nats per dimension: divide by ln 2 for bits (glowcourse.bits_per_dim does)."),
        (sum(batch_means) / len(batch_means),
         f"the mean of the {len(batch_means)} batch means: the last batch holds only {tail} images, yet it counts as much "
         f"as a full batch of {batch_size}. Sum the per-image bits/dim over every batch and divide by the number of images."),
        (float(bits_per_dim(log_p, hw, N_BINS).mean()),
         f"D was counted without the channels: D = C*H*W = {d} here (images[0].numel()), not H*W = {hw}."),
        (float(bits_per_dim(log_p, d, 256).mean()), f"n_bins = 256 was used instead of the n_bins argument ({N_BINS} here)."),
        (float(per_image.sum()), "the sum over the images was returned, not the mean."),
    ]
    cause = next((c for v, c in known if abs(v - want) > 3 * tol and abs(got - v) <= tol), None)
    fail(what, f"got {got:.4f} bits/dim, expected {want:.4f} (+-{tol}): the mean over all {n} images of "
               f"bits_per_dim(model(dequantized - 0.5)[1], D, n_bins)", cause)


def _evaluate_bpd_strict(fn, model, images, seed, want, tol, rng_touched) -> None:
    __tracebackhide__ = True
    what = "evaluate_bpd"
    if rng_touched:
        fail(what, "evaluating changed torch's global random state; the training loop calls evaluate_bpd after every "
                   "epoch, so its data order and noise would then depend on the evaluation",
             "the global generator was seeded or drawn from inside evaluate_bpd (torch.manual_seed, or "
             "torch.rand without a generator): draw the noise from a torch.Generator of its own.")
    n = len(images)
    whole = float(call(fn, model, images, N_BINS, n, seed, what=what))
    small = float(call(fn, model, images, N_BINS, 7, seed, what=what))
    if abs(whole - small) > tol or abs(whole - want) > tol:
        fail(what, f"the figure depends on the batch size: {whole:.4f} with all {n} images in one batch, "
                   f"{small:.4f} in batches of 7; the mean over the images cannot")


# -- Exercise 4: sample_images ------------------------------------------------------------


@check
def check_sample_images(fn: Callable, *, n: int = 64, seed: int = 0, temperatures: tuple = (0.5, 1.0),
                        strict: bool = False) -> None:
    """``sample_images(model, n, temperature)``: ``n`` samples as images in [0, 1].

    Temperature 0 gives the decoded prior means (plus 0.5); at temperature ``T`` the samples,
    encoded back, have latents whose spread around the prior means is ``T`` prior standard
    deviations at every level (Glow scales the prior's *standard deviation* by T). The spread
    is measured on a model whose samples need no clamping, so it holds for any correct way of
    drawing them. ``strict`` (the hidden test) adds: each level separately, the latents centred
    on the prior means, and the n samples of one call independent of each other.
    """
    __tracebackhide__ = True
    what = "sample_images"
    model = tiny_glow(seed)
    out = call(fn, model, n, 0.7, what=f"{what}(model, {n}, 0.7)")
    if not torch.is_tensor(out) or out.shape != (n, 1, IMAGE_SIZE, IMAGE_SIZE):
        fail(what, f"returned {tuple(getattr(out, 'shape', ()))}, expected ({n}, 1, {IMAGE_SIZE}, {IMAGE_SIZE})")

    means = model.sample(n, 0.0)  # deterministic: every latent at its prior mean
    a = call(fn, model, n, 0.0, what=f"{what}(model, {n}, 0)").detach()
    b = call(fn, model, n, 0.0, what=f"{what}(model, {n}, 0)").detach()
    if not torch.allclose(a, b, atol=1e-5):
        cause = None
        narrow = _narrow_glow(seed)
        c = call(fn, narrow, n, 0.0, what=f"{what}(model, {n}, 0)").detach()
        if c.min() > 0 and c.max() < 1 and abs(_rms(_standardised(narrow, c - 0.5)) - 1) < 0.1:
            cause = ("the temperature is ignored: asked for temperature 0, the samples have the spread of temperature 1. "
                     "Pass it on: model.sample(n, temperature).")
        fail(what, "two calls at temperature 0 returned different images; at temperature 0 every latent is its "
                   "prior mean, so the images are fixed", cause)
    want = (means + 0.5).clamp(0, 1)
    if not torch.allclose(a, want, atol=1e-4):
        known = [
            (means.clamp(0, 1), "the samples were not shifted back: model space is [-0.5, 0.5), so add 0.5 before clamping to [0, 1]."),
            ((means + 1).clamp(0, 1), "1 was added instead of 0.5: model space is [-0.5, 0.5), so add 0.5, then clamp to [0, 1]."),
            (means, "the model-space samples were returned as they are: add 0.5, then clamp to [0, 1]."),
        ]
        cause = next((c for v, c in known if torch.allclose(a, v, atol=1e-4)), None)
        fail(what, f"at temperature 0 the images are not the decoded prior means plus 0.5 (they differ by up to {_max_diff(a, want):.3g})", cause)

    for t in (0.7, 1.0):
        out = call(fn, model, n, t, what=f"{what}(model, {n}, {t})").detach()
        if out.min() < 0 or out.max() > 1:
            fail(what, f"at temperature {t} the values span [{float(out.min()):.3g}, {float(out.max()):.3g}]; images must lie in [0, 1]",
                 "the clamp to [0, 1] is missing: the temperature-0 images (which need none) were right, but samples at "
                 "higher temperature leave [-0.5, 0.5) in model space; clamp after adding 0.5.")

    narrow = _narrow_glow(seed)
    for t in temperatures:
        out = call(fn, narrow, n, t, what=f"{what}(model, {n}, {t})").detach()
        if not torch.is_tensor(out) or out.shape != (n, 1, IMAGE_SIZE, IMAGE_SIZE) or not (out.min() > 0 and out.max() < 1):
            fail(what, f"at temperature {t}, on a model whose samples all lie well inside (0, 1), some returned values are "
                       "0, 1 or outside: the images were changed beyond adding 0.5")
        eps = _standardised(narrow, out - 0.5)
        rms = _rms(eps)
        if abs(rms - t) > 0.1 * t + 0.01:
            cause = None
            if 0 < t < 1 and abs(rms - math.sqrt(t)) < 0.1 * math.sqrt(t):
                cause = (f"the temperature was put on the variance: {rms:.3f} is sqrt({t}) = {math.sqrt(t):.3f}. Glow multiplies "
                         f"the prior's standard deviation by T (sd -> T sd, variance -> T^2 var), so pass T itself to model.sample.")
            elif 0 < t < 1 and abs(rms - t * t) < 0.1 * t * t + 0.01:
                cause = f"the temperature was applied twice: {rms:.3f} is {t}^2 = {t * t:.3f}. Multiply the standard deviation by T once."
            elif t != 1 and abs(rms - 1) < 0.1:
                cause = "the temperature is ignored: the latents have the spread of temperature 1. Pass it on: model.sample(n, temperature)."
            fail(what, f"at temperature {t} the samples' latents (encoded back; every level, in units of its prior's standard "
                       f"deviation around its mean) have a spread (RMS) of {rms:.3f}, expected {t}: Glow's temperature T "
                       "scales the prior's standard deviation by T", cause)
        if strict:
            _sample_images_strict(eps, out, t)

    c = call(fn, model, n, 1.0, what=what)
    d = call(fn, model, n, 1.0, what=what)
    if torch.allclose(c, d):
        fail(what, "two calls at temperature 1 returned the same images: each call must draw new latents",
             "the noise comes from a generator re-seeded on every call (torch.manual_seed, or a seeded "
             "torch.Generator, inside sample_images).")
    ok(f"{what} (n={n}, temperatures 0, {', '.join(str(t) for t in temperatures)}, 0.7, 1)")


def _sample_images_strict(eps: list[torch.Tensor], out: torch.Tensor, t: float) -> None:
    __tracebackhide__ = True
    what = "sample_images"
    for level, e in enumerate(eps):
        rms = _rms([e])
        if abs(rms - t) > 0.15 * t + 0.01:
            fail(what, f"at temperature {t} the latents of level {level} have a spread of {rms:.3f} prior standard "
                       f"deviations, expected {t}: the temperature applies to every level's prior, the split priors too")
    if t > 0:
        flat = out.flatten(1)
        if len(torch.unique(flat, dim=0)) < len(flat):
            fail(what, f"at temperature {t} some of the {len(flat)} samples of one call are identical: each sample needs its own latents")
        mean = float(torch.cat([e.flatten() for e in eps]).mean())
        if abs(mean) > 0.1 * t:
            fail(what, f"at temperature {t} the latents sit {mean:.3f} prior standard deviations off their prior means "
                       "on average, expected 0: the noise must be centred (a standard normal)")


# -- Exercise 5: interpolate ----------------------------------------------------------------


@check
def check_interpolate(fn: Callable, *, steps: int = 5, seed: int = 0, channels: int = 1, strict: bool = False) -> None:
    """``interpolate(model, x1, x2, steps)``: the decoded points ``(1 - t) z1 + t z2`` for
    ``t = linspace(0, 1, steps)``, in every level's latent. ``strict`` (the hidden test) adds
    that the path from x2 to x1 is the same path reversed."""
    __tracebackhide__ = True
    what = "interpolate"
    model = tiny_glow(seed, in_channels=channels)
    x = dequantize(_digits(2, seed + 2, channels=channels), N_BINS, torch.Generator().manual_seed(seed)) - 0.5
    x1, x2 = x[:1].clone(), x[1:].clone()
    out = call(fn, model, x1, x2, steps, what=what)
    if not torch.is_tensor(out) or out.shape != (steps, channels, IMAGE_SIZE, IMAGE_SIZE):
        fail(what, f"returned {tuple(getattr(out, 'shape', ()))}, expected ({steps}, {channels}, {IMAGE_SIZE}, {IMAGE_SIZE})")
    if not (torch.equal(x1, x[:1]) and torch.equal(x2, x[1:])):
        fail(what, "x1 or x2 was changed in place; the caller's images must stay as they were")
    out = out.detach()
    z1, z2 = _latents(model, x1), _latents(model, x2)
    t = torch.linspace(0, 1, steps).view(-1, 1, 1, 1)
    with torch.no_grad():
        want = model.inverse([(1 - t) * a + t * b for a, b in zip(z1, z2)])
    if not torch.allclose(out, want, atol=1e-4):
        detail, cause = _path_detail(model, out, x1, x2, z1, z2, want, steps)
        fail(what, "the images are not the decoded points (1 - t) z1 + t z2, t = linspace(0, 1, steps), of every level's "
                   f"latent: {detail}", cause)
    if strict:
        back = call(fn, model, x2.clone(), x1.clone(), steps, what=what)
        if not torch.is_tensor(back) or back.shape != out.shape or not torch.allclose(back.detach().flip(0), out, atol=1e-4):
            fail(what, "interpolate(x2, x1) is not interpolate(x1, x2) in reverse order: the straight line between two "
                       "latents is the same path whichever end it starts from")
    ok(f"{what} ({steps} steps, {channels} channel{'s' if channels > 1 else ''})")


def _path_detail(model, out, x1, x2, z1, z2, want, steps) -> tuple[str, str | None]:
    """(what differs, the likely cause if the numbers match a known mistake)."""
    t = torch.linspace(0, 1, steps).view(-1, 1, 1, 1)
    if steps > 2 and torch.allclose(out, (1 - t) * x1 + t * x2, atol=1e-5):
        return ("they are a blend of the two images' pixels",
                "the images were blended in pixel space: encode both, interpolate their latents, decode with model.inverse.")
    for shifted, cause in (((want + 0.5).clamp(0, 1), "the result was mapped to [0, 1] (+0.5): return model space, like x1 and x2."),
                           (want + 0.5, "0.5 was added to the result: return model space, like x1 and x2.")):
        if torch.allclose(out, shifted, atol=1e-4):
            return "they are shifted by 0.5", cause
    zo = _latents(model, out)
    fits = []  # per level: (estimated t for each step, whether the points lie on the line)
    for a, b, o in zip(z1, z2, zo):
        dz = (b - a).flatten(1)
        that = ((o - a).flatten(1) * dz).sum(1) / dz.pow(2).sum(1)
        on_line = torch.allclose(o, a + that.view(-1, 1, 1, 1) * (b - a), atol=1e-3)
        fits.append((that, on_line))
    lin = torch.linspace(0, 1, steps)
    if all(on for _, on in fits):
        if all(torch.allclose(th, lin, atol=1e-3) for th, _ in fits[-1:]):
            fixed = [i for i, (th, _) in enumerate(fits) if torch.allclose(th, torch.zeros_like(th), atol=1e-3)]
            if fixed and len(fixed) + 1 == len(fits):
                return (f"the latents of level{'s' if len(fixed) > 1 else ''} {', '.join(map(str, fixed))} stay at x1's while the top moves",
                        "only the top level's latent was interpolated; the split-off latents kept x1's. Interpolate every level (all of zs).")
        ths = [th for th, _ in fits]
        if all(torch.allclose(th, ths[0], atol=1e-3) for th in ths):
            weights = ", ".join(f"{v:.3g}" for v in ths[0].tolist())
            for other, cause in ((torch.arange(steps) / steps, "t = arange(steps) / steps stops short of 1, so the last image is not x2: "
                                                               "use torch.linspace(0, 1, steps)."),
                                 (lin.flip(0), "the path runs from x2 to x1: t = 0 must give x1 and t = 1 x2."),
                                 (torch.linspace(0, 1, steps + 2)[1:-1], "the end points were left out: t = linspace(0, 1, steps) includes 0 and 1.")):
                if torch.allclose(ths[0], other.to(ths[0].dtype), atol=1e-3):
                    return f"the points lie on the line, but at t = [{weights}]", cause
            return f"the points lie on the line, but at t = [{weights}], not [{', '.join(f'{v:.3g}' for v in lin.tolist())}]", None
    off = [i for i, (a, b, o) in enumerate(zip(z1, z2, zo)) if not torch.allclose(o, (1 - t) * a + t * b, atol=1e-3)]
    return f"the latents of level{'s' if len(off) > 1 else ''} {', '.join(map(str, off))} are off the line", None


# -- Exercise 6: class_direction and manipulate --------------------------------------------


@check
def check_manipulate(class_direction: Callable, manipulate: Callable, *, n: int = 40, seed: int = 0, strict: bool = False) -> None:
    """``class_direction`` is the mean latent of class a minus class b, per level; ``manipulate``
    adds ``scale`` times it to the images' latents and decodes, leaving the caller's images and
    direction as they were (it is called again and again with the same direction).
    ``strict`` (the hidden test) adds: the direction does not depend on the order of the
    images; moving by s1 and then by s2 is moving by s1 + s2; each image moves on its own."""
    __tracebackhide__ = True
    model = tiny_glow(seed)
    x = dequantize(_digits(n, seed + 3), N_BINS, torch.Generator().manual_seed(seed)) - 0.5
    labels = torch.arange(n) % 3
    x_in, labels_in = x.clone(), labels.clone()
    direction = call(class_direction, model, x_in, labels_in, 0, 2, what="class_direction(model, x, labels, 0, 2)")
    if not (torch.equal(x_in, x) and torch.equal(labels_in, labels)):
        fail("class_direction", "x or labels was changed in place; the caller's tensors must stay as they were")
    zs = _latents(model, x)
    if not isinstance(direction, (list, tuple)) or len(direction) != len(zs):
        fail("class_direction", f"must return a list with one tensor per latent level ({len(zs)}), got {type(direction).__name__}"
             + (f" of length {len(direction)}" if isinstance(direction, (list, tuple)) else ""))
    a_mask, b_mask = labels == 0, labels == 2
    for level, (d, z) in enumerate(zip(direction, zs)):
        want = z[a_mask].mean(0, keepdim=True) - z[b_mask].mean(0, keepdim=True)
        if not torch.is_tensor(d) or d.numel() != want.numel():
            fail("class_direction", f"level {level}: shape {tuple(getattr(d, 'shape', ()))}, expected {tuple(want.shape)} (one latent)")
        d = d.detach().reshape(want.shape)  # with or without the batch dimension of 1: both broadcast
        if not torch.allclose(d, want, atol=1e-4):
            mean_a = z[a_mask].mean(0, keepdim=True)
            known = [
                (-want, "the sign is reversed: this is class b minus class a; the direction from b to a is mean(z | a) - mean(z | b)."),
                (torch.zeros_like(want), f"level {level} is all zeros: take the difference of the class means at every level, not only the first."),
                (mean_a, "class b's mean latent was not subtracted."),
                (mean_a - z[~a_mask].mean(0, keepdim=True), "class b's mean was taken over every image outside class a: use only the images labelled b."),
                (mean_a - z.mean(0, keepdim=True), "the mean of all images was subtracted, not that of class b."),
            ]
            cause = next((c for v, c in known if torch.allclose(d, v, atol=1e-4)), None)
            fail("class_direction", f"level {level} differs from mean(z | class 0) - mean(z | class 2) by up to {_max_diff(d, want):.3g}", cause)

    saved = [d.detach().clone() for d in direction]
    x0 = x[:4].clone()

    def apply(images, scale):
        __tracebackhide__ = True
        images_in = images.clone()
        out = call(manipulate, model, images_in, direction, scale, what=f"manipulate(..., scale={scale})")
        if _changed(saved, direction):
            now = [dd.detach() for dd in direction]
            scaled = all(nd.shape == s.shape and torch.allclose(nd, s * scale, atol=1e-6) for nd, s in zip(now, saved))
            fail("manipulate", f"the caller's direction changed during manipulate(..., scale={scale}): every later call then "
                               "moves the images by a different amount",
                 ("the direction was scaled in place (d *= scale, or d.mul_(scale)): " if scaled else
                  "the direction was modified in place: ") + "compute z + scale * d as a new tensor.")
        if not torch.equal(images_in, images):
            fail("manipulate", "the images passed in were changed in place; the caller's images must stay as they were")
        if not torch.is_tensor(out) or out.shape != images.shape:
            fail("manipulate", f"returned {tuple(getattr(out, 'shape', ()))}, expected {tuple(images.shape)} (the moved images)")
        return out.detach()

    same = apply(x0, 0.0)
    if not torch.allclose(same, x0, atol=1e-4):
        cause = None
        if torch.allclose(same, (x0 + 0.5).clamp(0, 1), atol=1e-4) or torch.allclose(same, x0 + 0.5, atol=1e-4):
            cause = "0.5 was added to the result: return model space, like the images passed in."
        fail("manipulate", f"with scale 0 the images must come back unchanged; they differ by up to {_max_diff(same, x0):.3g}", cause)
    scale = 1.5
    moved = apply(x0, scale)
    z0, zm = _latents(model, x0), _latents(model, moved)
    for level, (a, m, d) in enumerate(zip(z0, zm, saved)):
        d = d.reshape(1, *a.shape[1:])
        if not torch.allclose(m, a + scale * d, atol=1e-3):
            known = [
                (a, f"level {level}'s latent was not moved: add scale * direction to the latent of every level, not only the top."),
                (a + d, "the scale was ignored: the latents moved by the direction itself, not by scale times it."),
                (a - scale * d, "the direction was subtracted: the latents must move by + scale * direction."),
            ]
            cause = next((c for v, c in known if torch.allclose(m, v, atol=1e-3)), None)
            fail("manipulate", f"the latents of level {level} did not move by scale * direction (scale {scale}); "
                               f"they are off by up to {_max_diff(m, a + scale * d):.3g}", cause)
    again = apply(x0, scale)
    if not torch.allclose(again, moved, atol=1e-5):
        fail("manipulate", "a second call with the same images, direction and scale returned other images")

    if strict:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 11))
        shuffled = call(class_direction, model, x[perm].clone(), labels[perm].clone(), 0, 2, what="class_direction")
        if not isinstance(shuffled, (list, tuple)) or len(shuffled) != len(saved) or not all(
                torch.is_tensor(s) and s.numel() == d.numel() and torch.allclose(s.detach().reshape(d.shape), d, atol=1e-4)
                for s, d in zip(shuffled, saved)):
            fail("class_direction", "shuffling the images (with their labels) changed the direction: a mean over each class "
                                    "does not depend on the order of the images")
        steps = apply(apply(x0, 0.5), 1.0)
        if not torch.allclose(steps, moved, atol=2e-3):
            fail("manipulate", f"moving by 0.5 and then by 1.0 differs from moving by 1.5 (by up to {_max_diff(steps, moved):.3g}): "
                               "adding to the latents of an exact bijection composes")
        alone = apply(x0[1:2], scale)
        if not torch.allclose(alone, moved[1:2], atol=1e-4):
            fail("manipulate", "an image moved alone comes out differently than within a batch: each image moves on its own")
    ok("class_direction and manipulate")


# -- Exercise 2: train_step -------------------------------------------------------------------

STEP_SIZE = 4  # the training checks' images are 4x4: a Glow step costs milliseconds


def _step_batch(seed: int, channels: int, n: int = 16) -> torch.Tensor:
    """A batch in model space, float64 so that an update can be compared to the last bit."""
    g = torch.Generator().manual_seed(seed + 20)
    images = torch.randint(0, N_BINS, (n, channels, STEP_SIZE, STEP_SIZE), generator=g).to(torch.uint8)
    return (dequantize(images, N_BINS, g) - 0.5).double()


def _grads(model, x) -> tuple[float, list[torch.Tensor]]:
    """The mean bits/dim of ``x`` and its gradient with respect to every parameter, on a copy."""
    ref = copy.deepcopy(model)
    loss = bits_per_dim(ref(x)[1], x[0].numel(), N_BINS).mean()
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    return float(loss), [g.detach() for g in grads]


def _norm(tensors) -> float:
    return float(torch.sqrt(sum(t.double().pow(2).sum() for t in tensors)))


def _clipped(grads, clip: float) -> list[torch.Tensor]:
    """What ``torch.nn.utils.clip_grad_norm_(params, clip)`` leaves: scaled down to norm ``clip``
    when the norm is larger, otherwise unchanged."""
    coef = min(1.0, clip / (_norm(grads) + 1e-6))
    return [g * coef for g in grads]


def _updates_match(deltas, grads, lr: float) -> bool:
    """Plain SGD moved every parameter by ``-lr * grad``."""
    return all(d.shape == g.shape and torch.allclose(d, -lr * g, rtol=1e-5, atol=1e-9) for d, g in zip(deltas, grads))


def _sgd_step(fn, *, seed: int, channels: int, step: int, warmup: int, lr: float, clip_factor: float,
              stale: bool, two_groups: bool) -> None:
    """One call of ``fn`` with plain SGD, whose update ``-lr_t * grad`` shows which gradient was applied."""
    __tracebackhide__ = True
    what = "train_step"
    model = tiny_glow(seed, image_size=STEP_SIZE, in_channels=channels).double()
    x = _step_batch(seed, channels)
    want_loss, grads = _grads(model, x)
    clip = clip_factor * _norm(grads)  # < 1: the clipping binds; > 1: it must leave the gradient alone
    params = list(model.parameters())
    groups = [{"params": params[: len(params) // 2]}, {"params": params[len(params) // 2:]}] if two_groups else params
    initial_lr = 0.7  # what the optimizer was built with: neither lr nor the warmed-up rate
    optimizer = torch.optim.SGD(groups, lr=initial_lr)
    torch.manual_seed(seed + 5)
    stale_grads = [torch.randn_like(g) * _norm(grads) / math.sqrt(sum(g.numel() for g in grads)) for g in grads]
    if stale:  # what the previous step of a training loop leaves in .grad
        for p, s in zip(params, stale_grads):
            p.grad = s.clone()
    before = [p.detach().clone() for p in params]
    calls = []

    def model_log_prob(v):
        calls.append(1)
        return model(v)[1]

    args = f"step={step}, lr={lr}, warmup={warmup}, clip={clip:.3g}"
    got = call(lambda: fn(model_log_prob, model, optimizer, x, N_BINS, step=step, lr=lr, warmup=warmup, clip=clip),
               what=f"{what}(..., {args})")

    if torch.is_tensor(got):
        fail(what, f"returned a tensor{' that holds the graph' if got.requires_grad else ''}, not a Python float",
             "return loss.item(): the loop adds the losses up over an epoch, and a tensor would keep every step's graph.")
    if not isinstance(got, (float, int)) or isinstance(got, bool):
        fail(what, f"must return the batch's mean bits/dim as a float, got {type(got).__name__}",
             "end with `return loss.item()`." if got is None else None)
    if not calls:
        fail(what, "the model_log_prob passed in was never called",
             "the loss was computed from model(x) directly: compute it from model_log_prob(x), the function the loop "
             "trains through (with fast=True, the compiled fast path).")

    want_lr = lr * min(1.0, step / warmup)
    lrs = [float(g["lr"]) for g in optimizer.param_groups]
    if not all(abs(v - want_lr) <= 1e-12 * max(1.0, want_lr) for v in lrs):
        cause = None
        if all(v == initial_lr for v in lrs):
            cause = ("the learning rate was not set, so there is no warm-up: the optimizer kept the rate it was built with. "
                     "Set group['lr'] = lr * min(1, step / warmup) in every param group.")
        elif abs(lrs[0] - want_lr) <= 1e-12 and all(v == initial_lr for v in lrs[1:]):
            cause = "only the first param group's rate was set: loop over optimizer.param_groups and set each group's 'lr'."
        elif all(abs(v - lr) <= 1e-12 for v in lrs) and step < warmup:
            cause = f"the full rate at step {step} of a {warmup}-step warm-up: the warm-up is missing (lr * min(1, step / warmup))."
        elif all(abs(v - lr * step / warmup) <= 1e-12 for v in lrs) and step > warmup:
            cause = (f"the rate keeps growing after the warm-up ({lr} * {step} / {warmup}): it must stop at lr, "
                     "lr * min(1, step / warmup).")
        elif all(abs(v - lr * min(1.0, (step + 1) / warmup)) <= 1e-12 for v in lrs):
            cause = "the warm-up is one step ahead ((step + 1) / warmup): step counts from 1, and step / warmup is the fraction."
        fail(what, f"at {args} the param groups' learning rates are {lrs}, expected {want_lr:.6g} = lr * min(1, step / warmup) "
                   "in every group", cause)

    if abs(float(got) - want_loss) > 1e-6 * max(1.0, abs(want_loss)):
        with torch.no_grad():
            after = float(bits_per_dim(model(x)[1], x[0].numel(), N_BINS).mean())
        known = [
            (after, "the loss was computed again after optimizer.step(), on the updated model: return the loss of the "
                    "batch before the update, the one that was backpropagated (loss.item())."),
            (want_loss * len(x), "the sum over the batch was returned: the loss is the batch's mean bits/dim."),
            (want_loss * LN_2, "the loss is in nats per dimension: glowcourse.bits_per_dim gives bits."),
        ]
        cause = next((c for v, c in known if abs(v - want_loss) > 1e-4 and abs(float(got) - v) <= 1e-6 * max(1.0, abs(v))), None)
        fail(what, f"returned {float(got):.6f}, expected the batch's mean bits/dim before the update, {want_loss:.6f}", cause)

    deltas = [p.detach() - b for p, b in zip(params, before)]
    applied = _clipped(grads, clip)
    if not _updates_match(deltas, applied, want_lr):
        after_grad = [p.grad for p in params]
        summed = [g + s for g, s in zip(grads, stale_grads)]
        known = []
        if stale:
            known.append((_clipped(summed, clip), "the gradients were not zeroed: this step's were added to the previous "
                                                  "step's, still in .grad. Call optimizer.zero_grad() before loss.backward()."))
        if clip_factor < 1:
            clipped_late = all(g is not None for g in after_grad) and abs(_norm(after_grad) - clip) < 1e-4 * clip
            known.append((grads, "the gradients were clipped after optimizer.step(), so the update used them unclipped: "
                                 "clip between loss.backward() and optimizer.step()." if clipped_late else
                                 "the gradient was not clipped: call torch.nn.utils.clip_grad_norm_(model.parameters(), clip) "
                                 "between loss.backward() and optimizer.step()."))
            known.append(([g.clamp(-clip, clip) for g in grads],
                          "each gradient element was clipped at clip (clip_grad_value_): clip the norm of all the "
                          "gradients together, torch.nn.utils.clip_grad_norm_."))
            known.append(([_clipped([g], clip)[0] for g in grads],
                          "each parameter's gradient was clipped on its own: clip the norm of all the gradients together, "
                          "in one call of clip_grad_norm_(model.parameters(), clip)."))
        else:
            known.append(([g * clip / _norm(grads) for g in grads],
                          "the gradient was scaled to norm clip although its norm was below: clipping only scales down, "
                          "by min(1, clip / norm)."))
        if all(float(d.abs().max()) == 0 for d in deltas):
            known_zero = ("the parameters did not move: optimizer.step() was not called, or the gradients were zeroed "
                          "between loss.backward() and optimizer.step().")
            fail(what, "after the step every parameter is where it was", known_zero)
        cause = next((c for gs, c in known if _updates_match(deltas, gs, want_lr)), None)
        norm = f"{_norm(grads):.4g}, clip {clip:.4g}"
        fail(what, f"with plain SGD at rate {want_lr:.4g} the parameters moved by -rate * g for a gradient g other than the "
                   f"batch's mean bits/dim gradient clipped to norm clip (its norm {norm})", cause)


@check
def check_train_step(fn: Callable, *, seed: int = 0, channels: int = 1, strict: bool = False) -> None:
    """``train_step(model_log_prob, model, optimizer, x, n_bins, *, step, lr, warmup, clip)``:
    one step of maximum likelihood on the batch ``x``, returning its mean bits/dim before the
    update as a float.

    Through plain SGD (whose update is ``-rate * gradient``, so the update shows which gradient
    was applied), with gradients left over from a previous step in ``.grad`` and two param
    groups: every group's rate is ``lr * min(1, step / warmup)``, during the warm-up and after
    it; the loss comes from ``model_log_prob``; the returned figure is the batch's mean bits/dim
    before the update; the update is the gradient of that figure with its norm clipped at
    ``clip``. Then a few steps of Adam lower the loss of a batch. ``strict`` (the hidden test)
    adds: a gradient whose norm is below ``clip`` is applied as it is, and the last step of the
    warm-up runs at the full rate.
    """
    __tracebackhide__ = True
    what = "train_step"
    _sgd_step(fn, seed=seed, channels=channels, step=3, warmup=10, lr=0.1, clip_factor=0.5, stale=True, two_groups=True)
    _sgd_step(fn, seed=seed + 1, channels=channels, step=15, warmup=10, lr=0.05, clip_factor=0.3, stale=True, two_groups=True)
    if strict:
        _sgd_step(fn, seed=seed + 2, channels=channels, step=8, warmup=8, lr=0.2, clip_factor=3.0, stale=True, two_groups=False)

    model = tiny_glow(seed, image_size=STEP_SIZE, in_channels=channels).double()
    x = _step_batch(seed + 3, channels, n=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = [float(call(lambda: fn(lambda v: model(v)[1], model, optimizer, x, N_BINS, step=i + 1, lr=1e-2, warmup=2,
                                    clip=100.0), what=what)) for i in range(6)]
    if not losses[-1] < losses[0] - 0.01:
        fail(what, f"six steps of Adam on one batch did not lower its loss: {', '.join(f'{v:.4f}' for v in losses)} bits/dim")
    ok(f"{what} (warm-up, clipping, the loss before the update; {len(losses)} Adam steps: "
       f"{losses[0]:.3f} -> {losses[-1]:.3f} bits/dim)")


# -- Exercise 3: save_checkpoint and load_checkpoint -------------------------------------------


def _reference_step(model, optimizer, x, step: int, lr: float = 1e-2, warmup: int = 4, clip: float = 50.0) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr * min(1.0, step / warmup)
    loss = bits_per_dim(model(x)[1], x[0].numel(), N_BINS).mean()
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item()


class _Run:
    """A small training run as 6.3's loop does it: a Glow, Adam, and the two generators."""

    def __init__(self, seed: int, channels: int, images: torch.Tensor, initialise: bool):
        torch.manual_seed(seed)
        self.model = Glow(channels, K=1, L=2, hidden=8, image_size=STEP_SIZE)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-2)
        self.order = torch.Generator().manual_seed(2 * seed)
        self.noise = torch.Generator().manual_seed(2 * seed + 1)
        self.images, self.history, self.steps = images, [], 0
        if initialise:  # data-dependent ActNorm init, as train does
            with torch.no_grad():
                self.model(dequantize(images, N_BINS, self.noise) - 0.5)

    def train(self, n: int) -> None:
        total = 0.0
        for _ in range(n):
            self.steps += 1
            batch = torch.randperm(len(self.images), generator=self.order)[:8]
            x = dequantize(self.images[batch], N_BINS, self.noise) - 0.5
            total += _reference_step(self.model, self.optimizer, x, self.steps)
        self.history.append(dict(epoch=len(self.history) + 1, train=total / n, steps=self.steps))

    def state(self) -> dict:
        return dict(model={k: v.detach().clone() for k, v in self.model.state_dict().items()},
                    optimizer=copy.deepcopy(self.optimizer.state_dict()),
                    order=self.order.get_state(), noise=self.noise.get_state())


def _differing(a: dict, b: dict) -> list[str]:
    return [k for k in a if k not in b or a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]


def _optimizer_differs(got: dict, want: dict) -> bool:
    if len(got["state"]) != len(want["state"]) or set(got["state"]) != set(want["state"]):
        return True
    for k, s in want["state"].items():
        for name, v in s.items():
            w = got["state"][k].get(name)
            if w is None or (torch.is_tensor(v) and not torch.equal(torch.as_tensor(w), v)) or (not torch.is_tensor(v) and w != v):
                return True
    return False


def _compare_state(what: str, run: _Run, want: dict, fresh: dict, when: str) -> None:
    """``run`` holds exactly the state ``want``; a mismatch is explained against ``fresh``, what
    the run held before loading."""
    __tracebackhide__ = True
    got = run.state()
    params = {n for n, _ in run.model.named_parameters()}
    wrong = _differing(want["model"], got["model"])
    if wrong:
        wrong_params = [k for k in wrong if k in params]
        cause = None
        if not wrong_params:
            flags = [k for k in wrong if k.endswith("initialized")]
            cause = ("only the parameters were saved or restored; the model's buffers were lost"
                     + (", among them the ActNorm `initialized` flags, so a resumed model would re-initialise ActNorm on "
                        "its first batch" if flags else "") +
                     ". Save model.state_dict() (parameters and buffers) and load it with model.load_state_dict.")
        elif not _differing(fresh["model"], got["model"]):
            cause = "the model's state was not restored: model.load_state_dict(saved['model'])."
        fail(what, f"{when}, the model differs from the one that was saved in {len(wrong)} of its state_dict entries "
                   f"({', '.join(wrong[:3])}{', ...' if len(wrong) > 3 else ''})", cause)
    if _optimizer_differs(got["optimizer"], want["optimizer"]):
        cause = None
        if not got["optimizer"]["state"]:
            cause = ("the optimizer's state was not saved or not restored: Adam keeps running averages of the gradients and "
                     "a step count, and a resumed run without them takes different steps. Save optimizer.state_dict() "
                     "and restore it with optimizer.load_state_dict.")
        fail(what, f"{when}, the optimizer's state (Adam's moments and step counts) differs from the saved one", cause)
    for name in ("order", "noise"):
        if not torch.equal(got[name], want[name]):
            other = "noise" if name == "order" else "order"
            cause = None
            if torch.equal(got[name], want[other]):
                cause = f"the two generators' states were swapped: `{name}` got the state saved from `{other}`."
            elif torch.equal(got[name], fresh[name]):
                cause = (f"the `{name}` generator was not restored: it still draws what a fresh run draws. Save "
                         f"{name}.get_state() and restore it with {name}.set_state(...).")
            fail(what, f"{when}, the `{name}` generator's state is not the saved one, so a resumed run would draw "
                       f"{'other batches' if name == 'order' else 'other dequantization noise'}", cause)


@check
def check_checkpoint(save_checkpoint: Callable, load_checkpoint: Callable, *, seed: int = 0, channels: int = 1,
                     steps: tuple[int, int] = (3, 2), strict: bool = False) -> None:
    """``save_checkpoint(path, model, optimizer, history, order, noise)`` and
    ``load_checkpoint(path, model, optimizer, order, noise) -> history``: a run resumed from a
    checkpoint continues exactly where the saved one stopped.

    A small run trains ``steps[0]`` steps, saves, and trains ``steps[1]`` more. A *fresh* model
    (other initial parameters, ActNorm not yet initialised), a fresh Adam and freshly seeded
    generators load the checkpoint: they must then hold the saved model (parameters and
    buffers, the ActNorm flags among them), optimizer state and generator states, the saved
    history must come back, and ``steps[1]`` more steps must give the first run's parameters
    bit for bit. ``strict`` (the hidden test) adds: saving leaves the run as it was, and loading
    into the first run itself, after it moved on, takes it back to the checkpoint.
    """
    __tracebackhide__ = True
    what = "save_checkpoint / load_checkpoint"
    g = torch.Generator().manual_seed(seed + 30)
    images = torch.randint(0, N_BINS, (40, channels, STEP_SIZE, STEP_SIZE), generator=g).to(torch.uint8)
    first = _Run(seed, channels, images, initialise=True)
    first.train(steps[0])
    saved = first.state()
    history = copy.deepcopy(first.history)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "glow.pt"
        call(lambda: save_checkpoint(path, first.model, first.optimizer, first.history, first.order, first.noise),
             what="save_checkpoint(path, model, optimizer, history, order, noise)")
        if strict:
            _compare_state("save_checkpoint", first, saved, saved, "after saving (which must leave the run as it was)")
        if not path.exists():
            fail("save_checkpoint", "no file was written at the path it was given")
        first.train(steps[1])
        final = first.state()

        second = _Run(seed + 1000, channels, images, initialise=False)
        fresh = second.state()
        got = call(lambda: load_checkpoint(path, second.model, second.optimizer, second.order, second.noise),
                   what="load_checkpoint(path, model, optimizer, order, noise)")
        if got is None:
            fail("load_checkpoint", "returned None, not the saved history",
                 "end with `return saved['history']` (or however the history was stored): the loop continues from it.")
        if got != history:
            fail("load_checkpoint", f"returned {str(got)[:120]}, not the saved history {str(history)[:120]}",
                 "the history was not saved or not returned: save it with the rest and return it." if got == [] else None)
        _compare_state(what, second, saved, fresh, "after loading into a fresh model, optimizer and generators")
        second.steps = steps[0]
        second.train(steps[1])
        if _differing(final["model"], second.state()["model"]):
            fail(what, f"after loading, {steps[1]} more steps did not give the parameters the saved run reached with the same "
                       "steps: the resumed run does not continue where the saved one stopped")
        if strict:
            call(lambda: load_checkpoint(path, first.model, first.optimizer, first.order, first.noise),
                 what="load_checkpoint(path, model, optimizer, order, noise)")
            _compare_state(what, first, saved, final, "after loading into the run that saved it, once it had moved on")
    ok(f"{what} (saved after {steps[0]} steps, resumed for {steps[1]}: the same parameters bit for bit)")
