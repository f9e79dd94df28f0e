"""Checks for notebook 5, the multi-scale architecture.

The student writes ``squeeze(x)`` / ``unsqueeze(x)``, ``Split(channels)`` (with the given
``prior_params``), ``FlowStep(channels, hidden)`` and ``Glow(in_channels, K, L, hidden,
image_size)`` with ``forward(x) -> (zs, log_prob)``, ``inverse(zs)`` and ``sample(n, temperature)``.
The priors' parameters have "prior" in their names (given code), which lets the Glow check
leave them at their standard-normal init while it perturbs everything else.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..density import jacobian_logdet, standard_normal_log_prob
from .common import _as_pair, _call, _close, _explain, _fail, _fmt, _ok, _quiet, check_flow_layer

__all__ = ["check_squeeze", "check_split", "check_flow_step", "check_glow"]


@_quiet
def check_squeeze(squeeze: Callable, unsqueeze: Callable, *, channels: int = 3, hw: tuple = (4, 6), batch: int = 2) -> None:
    """Squeeze is a local permutation (each output pixel holds exactly its 2x2 block), the same
    at every pixel; unsqueeze undoes it. Any consistent channel order is accepted."""
    __tracebackhide__ = True
    h, w = hw
    x = torch.arange(batch * channels * h * w, dtype=torch.float64).reshape(batch, channels, h, w)
    y = _call(squeeze, x.clone(), what="squeeze")
    if not torch.is_tensor(y) or y.shape != (batch, 4 * channels, h // 2, w // 2):
        _fail("squeeze", f"output shape {tuple(getattr(y, 'shape', ()))}, expected {(batch, 4 * channels, h // 2, w // 2)}")
    # Where did each output value come from? (b, c, i, j) of the input, decoded from its index.
    idx = y.long()
    src_b = idx // (channels * h * w)
    src_c = idx // (h * w) % channels
    src_i, src_j = idx // w % h, idx % w
    bi = torch.arange(batch).view(-1, 1, 1, 1)
    oi = torch.arange(h // 2).view(1, 1, -1, 1)
    oj = torch.arange(w // 2).view(1, 1, 1, -1)
    if not (src_b == bi).all():
        _fail("squeeze", "values moved between samples of the batch")
    if not ((src_i // 2 == oi).all() and (src_j // 2 == oj).all()):
        _fail("squeeze", "an output pixel (i, j) holds values from outside its 2x2 input block (2i..2i+1, 2j..2j+1)",
              "a squeeze must be local: reshape to (B, C, H/2, 2, W/2, 2) and move the two 2s next to C before merging; "
              "a plain reshape to (B, 4C, H/2, W/2) mixes distant pixels.")
    key = src_c * 4 + (src_i % 2) * 2 + (src_j % 2)  # which (channel, di, dj) each output holds
    if not (key == key[:1, :, :1, :1]).all():
        _fail("squeeze", "the channel order differs between pixels: a squeeze applies the same arrangement everywhere")
    if sorted(key[0, :, 0, 0].tolist()) != list(range(4 * channels)):
        _fail("squeeze", "some values of a 2x2 block are repeated or lost")
    back = _call(unsqueeze, y.clone(), what="unsqueeze")
    if not torch.is_tensor(back) or back.shape != x.shape or not torch.equal(back, x):
        _fail("unsqueeze", "unsqueeze(squeeze(x)) is not x", "unsqueeze must undo squeeze's reshape and permute exactly, in reverse order.")
    z = torch.randn(batch, 4 * channels, h // 2, w // 2, dtype=torch.float64)
    if not torch.equal(_call(squeeze, _call(unsqueeze, z, what="unsqueeze"), what="squeeze"), z):
        _fail("unsqueeze", "squeeze(unsqueeze(z)) is not z")
    _ok(f"squeeze / unsqueeze ({channels}x{h}x{w})")


@_quiet
def check_split(cls: type, *, channels: int = 4, batch: int = 3, hw: tuple = (2, 3), seed: int = 0,
                dtype: torch.dtype = torch.float64) -> None:
    """Split: the log-likelihood of z under the prior conditioned on x_a; temperature 0 gives the mean."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "Split")
    torch.manual_seed(seed)
    split = _call(cls, channels, what=f"{name}({channels})").to(dtype)
    with torch.no_grad():  # a prior that has learned something: mean and log-std depend on x_a
        for p in split.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(batch, channels, *hw, dtype=dtype)
    half = channels // 2
    out = _call(split, x, what=f"{name}.forward")
    if not (isinstance(out, (tuple, list)) and len(out) == 3):
        _fail(f"{name}.forward", "must return (x_a, z, log_p)")
    x_a, z, log_p = out
    if not (torch.equal(x_a, x[:, :half]) and torch.equal(z, x[:, half:])):
        _fail(f"{name}.forward", "x_a must be the first half of the channels and z the second", "x_a, z = x.chunk(2, 1).")
    if log_p.shape != (batch,):
        _fail(f"{name}.forward", f"log_p has shape {tuple(log_p.shape)}, expected ({batch},)", "sum the log-density over all dimensions except the batch.")
    mean, log_sd = split.prior_params(x[:, :half])
    want = torch.distributions.Normal(mean, log_sd.exp()).log_prob(x[:, half:]).flatten(1).sum(1).detach()
    if not _close(log_p.detach(), want, rtol=1e-6, atol=1e-6):
        unconditional_mean, unconditional_log_sd = split.prior_params(torch.zeros_like(x[:, :half]))
        ignored = torch.distributions.Normal(unconditional_mean, unconditional_log_sd.exp()).log_prob(x[:, half:]).flatten(1).sum(1).detach()
        standard = standard_normal_log_prob(x[:, half:]).detach()
        known = [
            (ignored, "the prior ignores the conditioning half: compute mean and log-std with self.prior_params(x_a)."),
            (standard, "z was scored under N(0, I); the prior is N(mean, exp(log_sd)^2) from prior_params(x_a)."),
            (want + (log_sd.flatten(1).sum(1)).detach(), "the -log_sd term of the Gaussian log-density is missing."),
            (want + 0.5 * math.log(2 * math.pi) * z[0].numel(), "the constant -1/2 log(2 pi) per dimension is missing."),
        ]
        _fail(f"{name}.forward", f"log_p {_fmt(log_p)}, but log N(z; mean, sd) with the prior of x_a is {_fmt(want)}", _explain(log_p, want, known))
    # inverse: rebuild x from (x_a, z); sample at temperature 0 -> the prior mean
    back = _call(split.inverse, x_a, z, what=f"{name}.inverse")
    if not torch.equal(back, x):
        _fail(f"{name}.inverse", "inverse(x_a, z) must return torch.cat([x_a, z], 1)")
    cold = _call(split.inverse, x_a, None, 0.0, what=f"{name}.inverse(x_a, None, temperature=0)")
    if not torch.allclose(cold[:, half:], mean.detach(), atol=1e-6):
        _fail(f"{name}.inverse", "at temperature 0 the sampled z must be the prior mean",
              "sample z = mean + temperature * exp(log_sd) * noise, with mean and log_sd from prior_params(x_a).")
    torch.manual_seed(seed + 1)
    many = x_a.repeat(2000, 1, 1, 1)
    hot = _call(split.inverse, many, None, 0.5, what=f"{name}.inverse(x_a, None, temperature=0.5)")[:, half:]
    m_many, ls_many = split.prior_params(many)
    ratio = float(((hot - m_many) / ls_many.exp()).std())
    if abs(ratio - 0.5) > 0.03:
        _fail(f"{name}.inverse", f"at temperature 0.5 the sampled z has {ratio:.3g} prior standard deviations of spread, expected 0.5",
              "the temperature multiplies the standard deviation: z = mean + T * exp(log_sd) * noise.")
    _ok(f"{name} (C={channels}, {hw[0]}x{hw[1]})")


@_quiet
def check_flow_step(cls: type, *, channels: int = 4, batch: int = 3, hw: tuple = (2, 2), seed: int = 0,
                    dtype: torch.dtype = torch.float64, hidden: int = 8) -> None:
    """A flow step (ActNorm, 1x1 conv, coupling) is a flow layer whose log-det sums its parts'."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "FlowStep")
    torch.manual_seed(seed)
    step = _call(cls, channels, hidden, what=f"{name}({channels}, {hidden})").to(dtype)
    x = 2 * torch.randn(batch, channels, *hw, dtype=dtype) + 1
    _call(step, x, what=f"{name}.forward")  # ActNorm's data-dependent init
    with torch.no_grad():
        for p in step.parameters():
            p.add_(0.2 * torch.randn_like(p))
    def known(want):
        # Run the step's parts one by one: if they make up its output, name a missing part's log-det.
        h, parts = x, []
        try:
            with torch.no_grad():
                for part_name, part in step.named_children():
                    h, ld = part(h)
                    parts.append((part_name, ld))
        except Exception:
            return []
        total = sum(ld for _, ld in parts)
        return [(total - ld, f"the log-det of {part_name} is missing from the step's total: add all three.") for part_name, ld in parts]

    check_flow_layer(step, x, name=name, known_mistakes=known,
                     inverse_cause="the inverse undoes the three layers in reverse order: coupling, then 1x1 conv, then ActNorm.")
    kinds = {type(m).__name__ for m in step.modules()}
    if not any("ActNorm" in k for k in kinds) or not any("Conv2d" in k and "Zero" not in k and k != "Conv2d" for k in kinds):
        _fail(name, f"a flow step holds an ActNorm, an invertible 1x1 convolution and a coupling; found {sorted(kinds)}")
    _ok(f"{name} (C={channels}, {hw[0]}x{hw[1]})")


@_quiet
def check_glow(cls: type, *, K: int = 2, L: int = 2, image_size: int = 4, batch: int = 2, seed: int = 0,
               hidden: int = 8, dtype: torch.dtype = torch.float64) -> None:
    """The whole model: latent shapes, encode-decode, total log-likelihood against the brute-force
    Jacobian plus the base density, sampling shapes and temperature."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "Glow")
    torch.manual_seed(seed)
    model = _call(cls, 1, K, L, hidden, image_size, what=f"{name}(1, K={K}, L={L}, hidden={hidden}, image_size={image_size})").to(dtype)
    x = 0.3 * torch.randn(batch, 1, image_size, image_size, dtype=dtype)
    out = _call(model, x, what=f"{name}.forward")
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        _fail(f"{name}.forward", "must return (zs, log_prob)")
    zs, log_prob = out
    if not isinstance(zs, (list, tuple)) or len(zs) != L:
        _fail(f"{name}.forward", f"expected a list of {L} latents (one per split, then the top), got {type(zs).__name__} of length {len(zs) if isinstance(zs, (list, tuple)) else '?'}",
              "append each split's z, then the top level's output, to zs.")
    if sum(z[0].numel() for z in zs) != image_size * image_size:
        _fail(f"{name}.forward", f"the latents hold {sum(z[0].numel() for z in zs)} numbers per sample, the image {image_size * image_size}: a flow keeps every dimension")
    if log_prob.shape != (batch,):
        _fail(f"{name}.forward", f"log_prob has shape {tuple(log_prob.shape)}, expected ({batch},)")
    with torch.no_grad():  # a trained-looking model; the priors stay standard normal (see module docstring)
        for pname, p in model.named_parameters():
            if "prior" not in pname:
                p.add_(0.1 * torch.randn_like(p))
    zs, log_prob = model(x)
    back = _call(model.inverse, [z.detach() for z in zs], what=f"{name}.inverse")
    if not torch.is_tensor(back) or back.shape != x.shape or not torch.allclose(back, x, atol=1e-6):
        err = float((back - x).abs().max()) if torch.is_tensor(back) and back.shape == x.shape else float("nan")
        _fail(f"{name}.inverse", f"inverse(forward(x)) differs from x (by up to {err:.3g})",
              "inverse must use every latent: at each level, rebuild x from the kept half and that level's z (split.inverse(x, zs[i])), never a fresh sample.")

    def flat_latents(v):
        return torch.cat([z.flatten(1) for z in model(v)[0]], 1)

    want = (standard_normal_log_prob(flat_latents(x)) + jacobian_logdet(flat_latents, x)).detach()
    if not _close(log_prob.detach(), want, rtol=1e-6, atol=1e-6):
        with torch.no_grad():
            split_terms = sum(standard_normal_log_prob(z) for z in zs[:-1]) if len(zs) > 1 else torch.zeros_like(want)
        known = [
            (want - split_terms, "the log-likelihood of the split-off latents is missing: add each split's log_p."),
            (want - standard_normal_log_prob(zs[-1]).detach(), "the top latent's prior log-density is missing."),
        ]
        _fail(f"{name}.forward", f"log p(x) {_fmt(log_prob)}, but the brute force (Jacobian of x -> all latents, plus the "
              f"standard normal density of the latents) gives {_fmt(want)}", _explain(log_prob, want, known))
    samples = _call(model.sample, 3, 0.7, what=f"{name}.sample(3, 0.7)")
    if not torch.is_tensor(samples) or samples.shape != (3, 1, image_size, image_size):
        _fail(f"{name}.sample", f"sample(3) has shape {tuple(getattr(samples, 'shape', ()))}, expected (3, 1, {image_size}, {image_size})")
    cold = [z.detach() for z in model(_call(model.sample, 4, 0.0, what=f"{name}.sample(4, 0.0)"))[0]]
    if max(float(z.abs().max()) for z in cold) > 1e-4:
        _fail(f"{name}.sample", "at temperature 0 every latent should be its prior mean (0 here)",
              "scale the prior's standard deviation by the temperature, at the top and in every split.")
    torch.manual_seed(seed + 1)
    warm = torch.cat([z.detach().flatten(1) for z in model(_call(model.sample, 400, 0.5, what=f"{name}.sample(400, 0.5)"))[0]], 1)
    if abs(float(warm.std()) - 0.5) > 0.05:
        _fail(f"{name}.sample", f"at temperature 0.5 the latents have std {float(warm.std()):.3g}, expected 0.5",
              "the temperature multiplies the prior's standard deviation, at the top and in every split.")
    _ok(f"{name} (K={K}, L={L}, {image_size}x{image_size})")
