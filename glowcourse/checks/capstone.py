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
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..data import dequantize
from ..density import bits_per_dim
from ..flows import Glow, squeeze
from .common import call, check, fail, ok, perturb

__all__ = ["check_evaluate_bpd", "check_sample_images", "check_interpolate", "check_manipulate", "tiny_glow"]

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


# -- Exercise 2: sample_images ------------------------------------------------------------


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


# -- Exercise 3: interpolate ----------------------------------------------------------------


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


# -- Exercise 4: class_direction and manipulate --------------------------------------------


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
