"""Checks for notebook 6, Glow in practice.

They run the student's functions on a tiny reference Glow (``glowcourse.flows.Glow``, 8x8
images, parameters moved away from the init), so they take a second and need no trained
model. Images in *model space* are dequantized values minus 0.5, in ``[-0.5, 0.5)``.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..data import dequantize
from ..density import bits_per_dim
from ..flows import Glow
from .common import _call, _explain, _fail, _ok, _quiet

__all__ = ["check_evaluate_bpd", "check_sample_images", "check_interpolate", "check_manipulate", "tiny_glow"]


def tiny_glow(seed: int = 0, image_size: int = 8) -> Glow:
    """A small Glow with ActNorm initialised on digits-like data and every parameter moved."""
    torch.manual_seed(seed)
    model = Glow(1, K=1, L=2, hidden=8, image_size=image_size)
    images = torch.randint(0, 17, (64, 1, image_size, image_size), dtype=torch.uint8)
    with torch.no_grad():
        model(dequantize(images, 17) - 0.5)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _latents(model, x):
    with torch.no_grad():
        return [z.detach() for z in model(x)[0]]


def _digits(n: int, seed: int, image_size: int = 8):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 17, (n, 1, image_size, image_size), generator=g).to(torch.uint8)


@_quiet
def check_evaluate_bpd(fn: Callable, *, n: int = 200, batch_size: int = 64, seed: int = 0) -> None:
    """``evaluate_bpd(model, images, n_bins, batch_size, seed)``: mean test bits/dim, deterministic."""
    __tracebackhide__ = True
    what = "evaluate_bpd"
    model = tiny_glow(seed)
    images = _digits(n, seed + 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = _call(fn, model, images, 17, batch_size, seed, what=what)
    try:
        got = float(got)
    except (TypeError, ValueError):
        _fail(what, f"must return one number (the mean bits/dim), got {type(got).__name__}")
    if any(not torch.equal(before[k], v) for k, v in model.state_dict().items()):
        _fail(what, "evaluating changed the model's parameters or buffers", "evaluate under torch.no_grad(), without an optimizer step.")
    with torch.no_grad():
        y = dequantize(images, 17, torch.Generator().manual_seed(seed)) - 0.5
        want = float(bits_per_dim(model(y)[1], 64, 17).mean())
        uncentred = float(bits_per_dim(model(y + 0.5)[1], 64, 17).mean())
    if abs(got - want) > 0.01:
        known = [
            (torch.tensor(uncentred), "the images were not centred: the model expects dequantized values minus 0.5."),
            (torch.tensor(want - torch.log2(torch.tensor(17.0)).item()), "the log2(n_bins) per dimension is missing: use glowcourse.bits_per_dim."),
            (torch.tensor(want * 0.6931471805599453), "the result is in nats per dimension, not bits."),
        ]
        _fail(what, f"got {got:.4f} bits/dim, expected {want:.4f} (+-0.01 for the dequantization noise)",
              _explain(torch.tensor([got]), torch.tensor([want]), [(k.reshape(1), c) for k, c in known])
              or "dequantize with a generator seeded by `seed`, subtract 0.5, take model(x)[1], convert with glowcourse.bits_per_dim, average over all images.")
    again = float(_call(fn, model, images, 17, batch_size, seed, what=what))
    if abs(again - got) > 1e-5:
        _fail(what, f"two calls with the same seed gave {got:.5f} and {again:.5f}",
              "draw the dequantization noise from torch.Generator().manual_seed(seed), so a test figure is reproducible.")
    _ok(f"{what} ({n} images, batches of {batch_size})")


@_quiet
def check_sample_images(fn: Callable, *, n: int = 6, seed: int = 0) -> None:
    """``sample_images(model, n, temperature)``: images in [0, 1]; temperature 0 is deterministic."""
    __tracebackhide__ = True
    what = "sample_images"
    model = tiny_glow(seed)
    for t in (0.0, 0.7):
        out = _call(fn, model, n, t, what=f"{what}(model, {n}, {t})")
        if not torch.is_tensor(out) or out.shape != (n, 1, 8, 8):
            _fail(what, f"returned {tuple(getattr(out, 'shape', ()))}, expected ({n}, 1, 8, 8)")
        if out.min() < 0 or out.max() > 1:
            _fail(what, f"values span [{float(out.min()):.3g}, {float(out.max()):.3g}]; images must lie in [0, 1]",
                  "model space is [-0.5, 0.5): add 0.5 to the samples, then clamp to [0, 1].")
    a, b = _call(fn, model, n, 0.0, what=what), _call(fn, model, n, 0.0, what=what)
    want = (model.sample(n, 0.0) + 0.5).clamp(0, 1)
    if not torch.allclose(a, b, atol=1e-5):
        _fail(what, "two calls at temperature 0 differ: at temperature 0 every sample is the decoded prior means",
              "pass the temperature on to model.sample(n, temperature).")
    if not torch.allclose(a, want, atol=1e-4):
        cause = "map model space [-0.5, 0.5) back to images: add 0.5, then clamp to [0, 1]."
        if torch.allclose(a, (want - 0.5).clamp(0, 1), atol=1e-4):
            cause = "the samples were not shifted back: model space is [-0.5, 0.5), so add 0.5 before clamping to [0, 1]."
        _fail(what, "at temperature 0 the images are not the decoded prior means plus 0.5", cause)
    c, d = _call(fn, model, n, 1.0, what=what), _call(fn, model, n, 1.0, what=what)
    if torch.allclose(c, d):
        _fail(what, "two calls at temperature 1 returned the same images")
    _ok(f"{what} (n={n}, temperatures 0, 0.7, 1)")


@_quiet
def check_interpolate(fn: Callable, *, steps: int = 5, seed: int = 0) -> None:
    """``interpolate(model, x1, x2, steps)``: a straight line in every latent, decoded."""
    __tracebackhide__ = True
    what = "interpolate"
    model = tiny_glow(seed)
    x = dequantize(_digits(2, seed + 2), 17, torch.Generator().manual_seed(seed)) - 0.5
    x1, x2 = x[:1], x[1:]
    out = _call(fn, model, x1, x2, steps, what=what)
    if not torch.is_tensor(out) or out.shape != (steps, 1, 8, 8):
        _fail(what, f"returned {tuple(getattr(out, 'shape', ()))}, expected ({steps}, 1, 8, 8)")
    out = out.detach()
    if not (torch.allclose(out[0], x1[0], atol=1e-4) and torch.allclose(out[-1], x2[0], atol=1e-4)):
        _fail(what, "the first and last images must be x1 and x2 themselves",
              "encode both, interpolate with weights t = 0 ... 1 (torch.linspace(0, 1, steps)), decode.")
    z1, z2, zo = _latents(model, x1), _latents(model, x2), _latents(model, out)
    t = torch.linspace(0, 1, steps).view(-1, 1, 1, 1)
    for level, (a, b, o) in enumerate(zip(z1, z2, zo)):
        if not torch.allclose(o, (1 - t) * a + t * b, atol=1e-3):
            _fail(what, f"the latents of level {level} do not move on the straight line (1 - t) z1 + t z2",
                  "interpolate every level's latent (all of zs, not only the top), then decode with model.inverse.")
    _ok(f"{what} ({steps} steps)")


@_quiet
def check_manipulate(class_direction: Callable, manipulate: Callable, *, n: int = 40, seed: int = 0) -> None:
    """``class_direction`` is the mean latent of class a minus class b, per level; ``manipulate``
    adds ``scale`` times it to an image's latents and decodes."""
    __tracebackhide__ = True
    model = tiny_glow(seed)
    x = dequantize(_digits(n, seed + 3), 17, torch.Generator().manual_seed(seed)) - 0.5
    labels = torch.arange(n) % 3
    direction = _call(class_direction, model, x, labels, 0, 2, what="class_direction(model, x, labels, 0, 2)")
    zs = _latents(model, x)
    if not isinstance(direction, (list, tuple)) or len(direction) != len(zs):
        _fail("class_direction", f"must return a list with one tensor per latent level ({len(zs)}), got {type(direction).__name__}")
    for level, (d, z) in enumerate(zip(direction, zs)):
        want = z[labels == 0].mean(0, keepdim=True) - z[labels == 2].mean(0, keepdim=True)
        if not torch.is_tensor(d) or d.numel() != want.numel():
            _fail("class_direction", f"level {level}: shape {tuple(getattr(d, 'shape', ()))}, expected {tuple(want.shape)} (one latent)")
        d = d.reshape(want.shape)  # with or without the batch dimension of 1: both broadcast
        if not torch.allclose(d.detach(), want, atol=1e-4):
            cause = "the sign is reversed: class a minus class b." if torch.allclose(d.detach(), -want, atol=1e-4) else \
                "average the latents of the images of class a, and of class b, over the batch; subtract."
            _fail("class_direction", f"level {level} differs from mean(z | class 0) - mean(z | class 2)", cause)
    x0 = x[:2]
    same = _call(manipulate, model, x0, direction, 0.0, what="manipulate(..., scale=0)")
    if not torch.is_tensor(same) or same.shape != x0.shape or not torch.allclose(same.detach(), x0, atol=1e-4):
        _fail("manipulate", "with scale 0 the images must come back unchanged", "encode, add scale * direction to every level's latent, decode.")
    moved = _call(manipulate, model, x0, direction, 1.5, what="manipulate(..., scale=1.5)").detach()
    for level, (zm, z, d) in enumerate(zip(_latents(model, moved), _latents(model, x0), direction)):
        if not torch.allclose(zm, z + 1.5 * d.detach().reshape(1, *z.shape[1:]), atol=1e-3):
            _fail("manipulate", f"the latents of level {level} did not move by scale * direction",
                  "add scale * direction[i] to zs[i] for every level i, then model.inverse(zs).")
    _ok("class_direction and manipulate")
