"""Checks for notebook 2, ActNorm.

The student's class is ``ActNorm(num_channels)`` with parameters ``loc`` and ``scale`` of shape
``(1, C, 1, 1)``, ``y = scale * (x + loc)`` (or any equivalent per-channel affine map), and a
flag ``initialized``. The checks only use ``forward``, ``inverse``, ``parameters()``,
``state_dict()`` and the flag's name, so ``(x - b) / s``, log-scale parametrisations and
biased or unbiased std all pass.
"""
from __future__ import annotations

import torch
from torch import nn

from .common import _as_pair, _call, _check_logdet_shape, _fail, _fmt, _ok, _quiet, check_flow_layer

__all__ = ["check_actnorm_init", "check_actnorm_flow", "check_actnorm_state"]


def _channel_stats(y: torch.Tensor):
    flat = y.detach().double().transpose(0, 1).reshape(y.shape[1], -1)
    return flat.mean(1), flat.std(1, unbiased=False), flat.std(1, unbiased=True)


def _batch(batch: int, channels: int, hw: tuple[int, int], dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    std = 2.0 + 2.0 * torch.rand(channels, generator=g, dtype=dtype)  # std 2..4: variance and std differ
    mean = 3.0 * torch.randn(channels, generator=g, dtype=dtype)
    x = torch.randn(batch, channels, *hw, generator=g, dtype=dtype) * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)
    return x, mean, std


def _new(cls, channels, dtype):
    layer = _call(cls, channels, what=f"{getattr(cls, '__name__', 'ActNorm')}({channels})")
    return layer.to(dtype)


def _params_snapshot(layer: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in layer.named_parameters()}


@_quiet
def check_actnorm_init(cls: type, *, channels: int = 3, batch: int = 16, hw: tuple = (4, 4), seed: int = 0,
                       dtype: torch.dtype = torch.float64) -> None:
    """First batch: per-channel output mean 0 and std 1; a second batch does not re-initialise."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "ActNorm")
    torch.manual_seed(seed)
    layer = _new(cls, channels, dtype)
    x, _, std_in = _batch(batch, channels, hw, dtype, seed)
    y, _ = _as_pair(_call(layer, x, what=f"{name}.forward (first batch)"), f"{name}.forward")
    if y.shape != x.shape:
        _fail(f"{name}.forward", f"output shape {tuple(y.shape)}, input {tuple(x.shape)}")
    mean, std_b, std_u = _channel_stats(y)
    if not torch.isfinite(y).all():
        _fail(f"{name} init", "the first batch's output contains inf or NaN")
    if (mean.abs() > 1e-5).any():
        per_sample = y.detach().double().flatten(2).mean(2)
        cause = "the statistics are per channel, over the batch, height and width: mean over dims (0, 2, 3)."
        if (per_sample.abs() < 1e-5).all():
            cause = "the mean was taken per sample; ActNorm's statistics are per channel over the whole batch (dims 0, 2, 3)."
        _fail(f"{name} init", f"per-channel output mean after the first batch is {_fmt(mean)}, expected 0", cause)
    ok_std = ((std_b - 1).abs() < 1e-4).all() or ((std_u - 1).abs() < 1e-4).all()
    if not ok_std:
        cause = "the scale must make each channel's std 1: scale = 1 / std."
        if torch.allclose(std_u, 1 / std_in.double(), rtol=0.3) and not torch.allclose(std_u, torch.ones_like(std_u), rtol=0.3):
            cause = "the output std is about 1/std: the scale was set from the variance; use 1 / std (the square root)."
        elif torch.allclose(std_u, std_in.double(), rtol=0.3):
            cause = "the output keeps the input's spread: the scale was not set (or not applied)."
        _fail(f"{name} init", f"per-channel output std after the first batch is {_fmt(std_u)}, expected 1", cause)
    params = [p for p in layer.parameters()]
    if len(params) < 2:
        _fail(f"{name} init", f"has {len(params)} parameter(s); loc and scale must stay nn.Parameters after init",
              "update them in place, e.g. `with torch.no_grad(): self.loc.copy_(...)`.")

    before = _params_snapshot(layer)
    x2, _, _ = _batch(batch, channels, hw, dtype, seed + 1000)
    x2 = 0.5 * x2 + 1.0  # other statistics
    _call(layer, x2, what=f"{name}.forward (second batch)")
    after = _params_snapshot(layer)
    changed = [k for k in before if not torch.equal(before[k], after.get(k, before[k]))]
    if changed:
        _fail(f"{name} init", f"the second batch changed {', '.join(changed)}: the layer initialised again",
              "initialise only when the flag says it has not happened yet, and set the flag after initialising.")
    _ok(f"{name} init (C={channels}, batch={batch}, {hw[0]}x{hw[1]})")


@_quiet
def check_actnorm_flow(cls: type, *, channels: int = 3, batch: int = 4, hw: tuple = (2, 3), seed: int = 0,
                       dtype: torch.dtype = torch.float64) -> None:
    """After init, ActNorm is a flow layer: inverse, log-det ``H*W*sum(log|s|)``, batch 1, constant channel, gradients."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "ActNorm")
    torch.manual_seed(seed)
    layer = _new(cls, channels, dtype)
    x, _, _ = _batch(batch, channels, hw, dtype, seed)
    _call(layer, x, what=f"{name}.forward (first batch)")
    with torch.no_grad():  # random parameters, as after some training
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    h, w = hw
    npix = h * w

    def known(want):
        return [
            (want / npix, f"the log-det is H*W = {npix} times too small: the per-channel scale acts on all H*W pixels of its channel; multiply by H*W."),
            (want / h, f"the log-det is missing a factor W = {w}: multiply by H*W, the number of pixels."),
            (want / w, f"the log-det is missing a factor H = {h}: multiply by H*W, the number of pixels."),
            (want * npix, f"the log-det is H*W = {npix} times too large: multiply by H*W once."),
        ]

    check_flow_layer(layer, x, name=name, known_mistakes=known,
                     inverse_cause="inverse undoes forward in reverse order: for y = s * (x + b), x = y / s - b.")

    # Batch size 1 (why not batch norm: Glow trains with one image per GPU).
    single = _new(cls, channels, dtype)
    x1, _, _ = _batch(1, channels, (4, 4), dtype, seed + 1)
    y1, ld1 = _as_pair(_call(single, x1, what=f"{name}.forward with batch size 1"), f"{name}.forward")
    _check_logdet_shape(ld1, 1, f"{name}.forward with batch size 1")
    if not (torch.isfinite(y1).all() and torch.isfinite(ld1).all()):
        _fail(f"{name}.forward", "batch size 1 gives inf or NaN", "take the statistics over the batch, height and width together (dims 0, 2, 3).")

    # A constant channel (a dead pixel, a padded border): std 0 must not give inf or NaN.
    const = _new(cls, channels, dtype)
    xc, _, _ = _batch(batch, channels, (3, 3), dtype, seed + 2)
    xc[:, 0] = 5.0
    yc, ldc = _as_pair(_call(const, xc, what=f"{name}.forward on a constant channel"), f"{name}.forward")
    if not (torch.isfinite(yc).all() and torch.isfinite(ldc).all()):
        _fail(f"{name}.forward", "a constant channel (std 0) gives inf or NaN", "add a small eps to the std before dividing: scale = 1 / (std + 1e-6).")

    # Gradients reach every parameter.
    layer.zero_grad()
    y, logdet = layer(x)
    (y.square().mean() - logdet.mean()).backward()
    missing = [k for k, p in layer.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    if missing:
        _fail(f"{name}.forward", f"no gradient reaches {', '.join(missing)}",
              "compute the output and log-det from the parameters themselves (no .detach(), .data or torch.no_grad() in forward).")
    _ok(f"{name} as a flow layer (C={channels}, {h}x{w}, batch {batch} and 1, constant channel)")


@_quiet
def check_actnorm_state(cls: type, *, channels: int = 3, batch: int = 8, hw: tuple = (3, 3), seed: int = 0,
                        dtype: torch.dtype = torch.float64) -> None:
    """The ``initialized`` flag is a buffer: saved in the state_dict, restored, not a parameter."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "ActNorm")
    torch.manual_seed(seed)
    layer = _new(cls, channels, dtype)
    if "initialized" in dict(layer.named_parameters()):
        _fail(name, "the initialized flag is an nn.Parameter; an optimizer would try to train it",
              "register it as a buffer: self.register_buffer('initialized', torch.tensor(False)).")
    x, _, _ = _batch(batch, channels, hw, dtype, seed)
    _call(layer, x, what=f"{name}.forward")
    state = layer.state_dict()
    if not any(k.split(".")[-1] == "initialized" for k in state):
        _fail(name, f"the state_dict has no 'initialized' entry (it has {sorted(state)})",
              "a plain Python attribute is not saved: register the flag with self.register_buffer('initialized', torch.tensor(False)).")
    if not bool(state["initialized"]):
        _fail(name, "after the first batch the saved flag still says not initialised", "set the flag when initialising: self.initialized.fill_(True).")

    fresh = _new(cls, channels, dtype)
    try:
        fresh.load_state_dict(state)
    except Exception as err:
        _fail(name, f"load_state_dict into a fresh {name} failed: {err}")
    x2, _, _ = _batch(batch, channels, hw, dtype, seed + 7)
    x2 = 0.3 * x2 - 2.0
    with torch.no_grad():
        want, want_ld = layer(x2)
        got, got_ld = _as_pair(_call(fresh, x2, what=f"reloaded {name}.forward"), f"{name}.forward")
    if not (torch.allclose(got, want) and torch.allclose(got_ld, want_ld)):
        _fail(name, "a reloaded layer gives different outputs from the original on the same batch",
              "the reloaded layer initialised again on its first batch: the flag must be a registered buffer so load_state_dict restores it.")
    _ok(f"{name} state_dict round trip (flag saved and restored)")
