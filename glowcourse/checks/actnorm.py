"""Checks for notebook 2, ActNorm.

The student's class is ``ActNorm(num_channels)`` with parameters ``loc`` and ``scale`` of shape
``(1, C, 1, 1)``, ``y = scale * (x + loc)`` (or any equivalent per-channel affine map), and a
flag ``initialized``. The checks only use ``forward``, ``inverse``, ``parameters()``,
``state_dict()`` and the flag's name, so ``(x - b) / s``, ``s * x + b``, log-scale
parametrisations and biased or unbiased std all pass. Where a message names a likely cause,
the check has recomputed what that mistake gives and found the student's numbers equal to it.
``strict=True`` (the hidden tests) adds a property the visible check does not test.
"""
from __future__ import annotations

import torch
from torch import nn

from .common import as_pair, build, call, call_pair, check, check_flow_layer, check_inverse_shape, check_logdet_shape, close, fail, fmt, ok

__all__ = ["check_actnorm_init", "check_actnorm_flow", "check_actnorm_state"]


def _channel_stats(y: torch.Tensor):
    flat = y.detach().double().transpose(0, 1).reshape(y.shape[1], -1)
    return flat.mean(1), flat.std(1, unbiased=False), flat.std(1, unbiased=True)


def _batch(batch: int, channels: int, hw: tuple[int, int], dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    std = 2.0 + 2.0 * torch.rand(channels, generator=g, dtype=dtype)  # std 2..4: variance and std differ
    mean = 3.0 * torch.randn(channels, generator=g, dtype=dtype)
    return torch.randn(batch, channels, *hw, generator=g, dtype=dtype) * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)


def _new(cls, channels, dtype):
    return build(cls, channels, name=getattr(cls, "__name__", "ActNorm"), dtype=dtype)


def _forward(layer, x, name, what):
    """The layer's forward on ``x`` as a checked pair."""
    return as_pair(call(layer, x, what=f"{name}.forward ({what})"), f"{name}.forward")


def _params_snapshot(layer: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in layer.named_parameters()}


def _close_per_channel(a, b) -> bool:
    """Per-channel statistics that agree to 0.1%."""
    return close(a, b, rtol=1e-3)


def _flag_value(layer):
    flag = getattr(layer, "initialized", None)
    if flag is None:
        return None
    try:
        return bool(flag)
    except Exception:  # noqa: BLE001
        return None


# ---------------------------------------------------------------------------------------------
# Data-dependent initialisation


@check
def check_actnorm_init(cls: type, *, channels: int = 3, batch: int = 16, hw: tuple = (4, 4), seed: int = 0,
                       dtype: torch.dtype = torch.float64, strict: bool = False) -> None:
    """First batch: per-channel output mean 0 and std 1; a second batch does not re-initialise;
    the parameters stay the same objects, so an optimizer created before the first batch (as
    notebook 6 creates it) trains them.

    ``strict``: the statistics stay exact for a first batch far from zero (channel means around
    1e3, std 0.5, in float32), where ``E[x^2] - E[x]^2`` loses every digit.
    """
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "ActNorm")
    layer = _new(cls, channels, dtype)
    before_init = dict(layer.named_parameters())  # what an optimizer created now would hold
    x = _batch(batch, channels, hw, dtype, seed)
    x_before = x.clone()
    _init_statistics(layer, x, name, "the first batch")
    if not torch.equal(x, x_before):
        fail(f"{name} init", "the first batch was changed in place; the caller's tensor now holds other values",
             "an in-place operation on the input (`x -= ...`, `x.sub_()`): compute new tensors instead.")

    params = [p for p in layer.parameters()]
    if len(params) < 2:
        fail(f"{name} init", f"has {len(params)} parameter(s) after the first batch; loc and scale must stay nn.Parameters",
             "update them in place, e.g. `with torch.no_grad(): self.loc.copy_(...)`.")
    after_init = dict(layer.named_parameters())
    replaced = [k for k, p in before_init.items() if after_init.get(k) is not p]
    if replaced:
        fail(f"{name} init", f"after the first batch, {', '.join(replaced)} {'is a new object' if len(replaced) == 1 else 'are new objects'}: "
             "an optimizer created before the first batch (as notebook 6 creates it) still holds the old tensors and would "
             "train tensors the layer no longer uses",
             "the init assigns a new nn.Parameter (self.loc = nn.Parameter(...)); update the existing parameters in place: "
             "`with torch.no_grad(): self.loc.copy_(...)`.")

    # A second batch with other statistics must not re-initialise.
    flag = _flag_value(layer)
    before = _params_snapshot(layer)
    x2 = _batch(batch, channels, hw, dtype, seed + 1000)
    x2 = 0.5 * x2 + 1.0  # other statistics
    y2, _ = _forward(layer, x2, name, "second batch")
    after = _params_snapshot(layer)
    changed = [k for k in before if not torch.equal(before[k], after.get(k, before[k]))]
    if changed:
        if flag is False:
            cause = "the flag still says not initialised after the first batch: set it when initialising (self.initialized.fill_(True))."
        elif flag is True:
            cause = "forward initialises on every call although the flag is set: initialise only while it says not yet (`if not self.initialized:`)."
        else:
            cause = None
        fail(f"{name} init", f"the second batch changed {', '.join(changed)}: the layer initialised again", cause)

    # Training: a step of SGD on the tensors an optimizer built before the first batch holds
    # (written out: torch.optim's first use imports torch._dynamo, seconds on a CPU).
    if not before_init:
        fail(f"{name} init", "before the first batch the layer has no parameters, so an optimizer created then (as notebook 6 "
             "creates it) has nothing to train", "create loc and scale in __init__ (as given) and fill them in place at init.")
    held = list(before_init.values())
    y2, logdet2 = _forward(layer, x2, name, "second batch")
    loss = 0.5 * y2.square().mean() - logdet2.mean() / y2[0].numel()
    grads = torch.autograd.grad(loss, held, allow_unused=True) if loss.requires_grad else [None] * len(held)
    with torch.no_grad():
        for p, g in zip(held, grads):
            if g is not None:
                p.sub_(0.05 * g)
        y3, _ = _forward(layer, x2, name, "after an optimizer step")
    if torch.equal(y3, y2.detach()):
        fail(f"{name} init", "an optimizer created before the first batch took a step and the layer's output did not change: "
             "forward does not use the parameters that optimizer holds")

    if strict:
        far = _new(cls, channels, torch.float32)
        g = torch.Generator().manual_seed(seed + 2000)
        xf = (1e3 * (1 + torch.rand(channels, generator=g)).view(1, -1, 1, 1)
              + 0.5 * torch.randn(batch, channels, *hw, generator=g)).float()
        _init_statistics(far, xf, name, "a first batch far from zero (means ~1e3, std 0.5, float32)", tol=2e-3, mean_tol=2e-3)
    ok(f"{name} init (C={channels}, batch={batch}, {hw[0]}x{hw[1]})")


def _init_statistics(layer, x, name, what, tol=1e-4, mean_tol=1e-5):
    """The first batch comes out with mean 0 and std 1 per channel; name the mistake if the
    numbers match one."""
    __tracebackhide__ = True
    y, _ = _forward(layer, x, name, what)
    if y.shape != x.shape:
        fail(f"{name}.forward", f"output shape {tuple(y.shape)}, input {tuple(x.shape)}")
    if not torch.isfinite(y).all():
        fail(f"{name} init", f"the output of {what} contains inf or NaN")
    mean, std_b, std_u = _channel_stats(y)
    xd = x.double()
    mean_x, std_xb, std_xu = _channel_stats(xd)
    yd = y.detach().double()
    if (mean.abs() > mean_tol).any():
        cause = None
        if (yd.flatten(2).mean(2).abs() < 1e-5).all():
            cause = "the mean was taken per sample; ActNorm's statistics are per channel over the whole batch (dims 0, 2, 3)."
        elif abs(float(yd.mean())) < 1e-6:
            cause = "one mean was taken over all channels together; ActNorm removes each channel's own mean (dims 0, 2, 3)."
        elif _close_per_channel(mean / std_u, mean_x / std_xu):
            cause = "the mean was not removed: set loc = -mean per channel at init, and apply it, y = scale * (x + loc)."
        elif _close_per_channel(mean / std_u, 2 * mean_x / std_xu):
            cause = "loc was set to +mean; it is minus the mean, so that x + loc has mean 0."
        elif _close_per_channel(mean, mean_x * (std_u / std_xu - 1)):
            cause = ("the offset was added after scaling, y = scale * x + loc with loc = -mean; with the offset first, "
                     "y = scale * (x + loc); with it last, it must be -mean / std.")
        fail(f"{name} init", f"per-channel output mean after {what} is {fmt(mean)}, expected 0", cause)
    ok_std = ((std_b - 1).abs() < tol).all() or ((std_u - 1).abs() < tol).all()
    if not ok_std:
        cause = None
        flat_mean_image = xd.mean(0).reshape(x.shape[1], -1)
        all_b, all_u = xd.std(unbiased=False), xd.std(unbiased=True)
        for sx in (std_xb, std_xu):
            if _close_per_channel(std_u * sx, torch.ones_like(sx)) or _close_per_channel(std_b * sx, torch.ones_like(sx)):
                cause = "the output std is 1/std per channel: the scale was set from the variance; use 1 / std (its square root)."
            elif _close_per_channel(std_u, sx * sx) or _close_per_channel(std_b, sx * sx):
                cause = "the scale was set to std; it is 1 / std, so that the output std is 1."
        if cause is None:
            for mi in (flat_mean_image.std(1, unbiased=False), flat_mean_image.std(1, unbiased=True)):
                if _close_per_channel(std_u, std_xu / mi) or _close_per_channel(std_b, std_xb / mi):
                    cause = ("the scale matches 1 / std of the batch's mean image: the statistics must be taken over the batch, "
                             "height and width together (dims 0, 2, 3), not over the pixels of the mean image.")
        if cause is None:
            for sa in (all_b, all_u):
                if _close_per_channel(std_u, std_xu / sa) or _close_per_channel(std_b, std_xb / sa):
                    cause = "one std was taken over all channels together; ActNorm scales each channel by its own std (per channel, dims 0, 2, 3)."
        if cause is None and (_close_per_channel(std_u, std_xu) or _close_per_channel(std_b, std_xb)):
            cause = "the output keeps the input's spread: the scale was not set (or not applied)."
        fail(f"{name} init", f"per-channel output std after {what} is {fmt(std_u)}, expected 1", cause)
    return y


# ---------------------------------------------------------------------------------------------
# ActNorm as a flow layer


def _affine_fit(layer, x):
    """Per-channel ``(s, o)`` of the map ``y = s * x + o`` the layer applies (least squares)."""
    with torch.no_grad():
        y, _ = layer(x)
    xd, yd = x.double().transpose(0, 1).flatten(1), y.double().transpose(0, 1).flatten(1)
    xc, yc = xd - xd.mean(1, keepdim=True), yd - yd.mean(1, keepdim=True)
    s = (xc * yc).sum(1) / (xc * xc).sum(1)
    o = yd.mean(1) - s * xd.mean(1)
    return s, o


def _scale_parameter(layer, x):
    """The parameter that holds the per-channel scale itself (or its reciprocal), if any: the
    one a sign change makes negative. None for a log-scale parametrisation."""
    s, _ = _affine_fit(layer, x)
    for pname, p in layer.named_parameters():
        if p.numel() == s.numel():
            v = p.detach().double().reshape(-1)
            if torch.allclose(v, s, rtol=1e-5) or torch.allclose(1 / v, s, rtol=1e-5):
                return pname, p
    return None, None


@check
def check_actnorm_flow(cls: type, *, channels: int = 3, batch: int = 4, hw: tuple = (2, 3), seed: int = 0,
                       dtype: torch.dtype = torch.float64, strict: bool = False) -> None:
    """After init, ActNorm is a flow layer: inverse, log-det ``H*W*sum(log|s|)`` and its
    gradient, a negative scale (training can push s through 0), batch 1, a constant channel,
    gradients reaching every parameter.

    ``strict``: after the init on ``H x W`` images, the layer is also a flow on images of another
    size (the log-det reads ``H*W`` from its input, not from the first batch).
    """
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "ActNorm")
    layer = _new(cls, channels, dtype)
    x = _batch(batch, channels, hw, dtype, seed)
    _forward(layer, x, name, "first batch")
    scale_name, scale_param = _scale_parameter(layer, x)
    with torch.no_grad():  # random parameters, as after some training; a scale held directly stays positive
        for pname, p in layer.named_parameters():
            if p is scale_param:
                p.mul_(torch.exp(0.3 * torch.randn_like(p)))
            else:
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

    _check_inverse(layer, x, name)
    check_flow_layer(layer, x, name=name, known_mistakes=known)

    # Training can carry a scale through 0: the log-det is log|s|, and the layer stays a flow.
    if scale_param is not None:
        with torch.no_grad():
            scale_param.view(-1)[0].neg_()
        y_neg, ld_neg = as_pair(call(layer, x, what=f"{name}.forward with a negative scale"), f"{name}.forward")
        if torch.isfinite(y_neg).all() and not torch.isfinite(ld_neg).all():
            fail(f"{name}.forward", f"with channel 0's {scale_name} made negative (training can carry a scale through 0) the "
                 f"log-det is {fmt(ld_neg)}; with all scales positive it was right",
                 "the log of a negative scale is NaN: the log-det is H*W*sum(log|scale|), torch.log(scale.abs()).")
        _check_inverse(layer, x, name)
        check_flow_layer(layer, x, name=f"{name} with a negative scale", known_mistakes=known)

    # Batch size 1 (why not batch norm: Glow trains with one image per GPU).
    single = _new(cls, channels, dtype)
    x1 = _batch(1, channels, (4, 4), dtype, seed + 1)
    y1, ld1 = as_pair(call(single, x1, what=f"{name}.forward with batch size 1"), f"{name}.forward")
    check_logdet_shape(ld1, 1, f"{name}.forward with batch size 1")
    if not (torch.isfinite(y1).all() and torch.isfinite(ld1).all()):
        fail(f"{name}.forward", "a first batch of one image gives inf or NaN; its statistics over height and width are well defined")

    # A constant channel (a dead pixel, a padded border): std 0 must not give inf or NaN.
    const = _new(cls, channels, dtype)
    xc = _batch(batch, channels, (3, 3), dtype, seed + 2)
    xc[:, 0] = 5.0
    yc, ldc = as_pair(call(const, xc, what=f"{name}.forward on a constant channel"), f"{name}.forward")
    if not (torch.isfinite(yc).all() and torch.isfinite(ldc).all()):
        others_fine = yc.shape == xc.shape and bool(torch.isfinite(yc[:, 1:]).all())
        fail(f"{name}.forward", "a first batch with a constant channel (std 0) gives inf or NaN"
             + ("; the other channels are finite" if others_fine else ""),
             "1 / std divides by zero: add a small eps to the std before dividing, scale = 1 / (std + eps)." if others_fine else None)

    # Gradients reach every parameter.
    layer.zero_grad()
    y, logdet = layer(x)
    (y.square().mean() - logdet.mean()).backward()
    missing = [k for k, p in layer.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    if missing:
        fail(f"{name}.forward", f"no gradient reaches {', '.join(missing)}",
             "compute the output and log-det from the parameters themselves (no .detach(), .data or torch.no_grad() in forward).")

    if strict:
        xo = _batch(2, channels, (h + 2, w + 1), dtype, seed + 3)
        check_flow_layer(layer, xo, name=f"{name} on {h + 2}x{w + 1} images after an init on {h}x{w}",
                         known_mistakes=lambda want: [(want * npix / ((h + 2) * (w + 1)),
                                                       f"the log-det uses H*W = {npix} of the first batch; read H and W from the input of each call.")])
    ok(f"{name} as a flow layer (C={channels}, {h}x{w}, a negative scale, batch {batch} and 1, constant channel)")


def _check_inverse(layer, x, name):
    """inverse(forward(x)) == x, with the likely cause when the inverse matches a known slip."""
    __tracebackhide__ = True
    s, o = _affine_fit(layer, x)
    with torch.no_grad():
        y, _ = call_pair(layer, x, what=f"{name}.forward")
        back, _ = call_pair(layer.inverse, y, what=f"{name}.inverse")
    check_inverse_shape(back, x, f"{name}.inverse")
    tol = dict(rtol=1e-4, atol=1e-4) if x.dtype == torch.float32 else dict(rtol=1e-7, atol=1e-8)
    if torch.allclose(back, x, **tol):
        return
    sv, ov = s.view(1, -1, 1, 1), o.view(1, -1, 1, 1)
    yd = y.double()
    loc = ov / sv  # y = scale * (x + loc)
    candidates = [
        ((yd - loc) / sv, "inverse subtracts loc before dividing by scale; undo forward's steps in reverse order: x = y / scale - loc."),
        (yd / sv + loc, "inverse adds loc; forward added it, so the inverse subtracts it: x = y / scale - loc."),
        (yd * sv - loc, "inverse multiplies by scale; it must divide by it: x = y / scale - loc."),
    ]
    cause = next((c for v, c in candidates if torch.allclose(back.double(), v, rtol=1e-5, atol=1e-6)), None)
    err = float((back.double() - x.double()).abs().max())
    fail(f"{name}.inverse", f"inverse(forward(x)) differs from x by up to {err:.3g}", cause)


# ---------------------------------------------------------------------------------------------
# The flag and the state_dict


@check
def check_actnorm_state(cls: type, *, channels: int = 3, batch: int = 8, hw: tuple = (3, 3), seed: int = 0,
                        dtype: torch.dtype = torch.float64, strict: bool = False) -> None:
    """The ``initialized`` flag is a buffer: saved in the state_dict, restored, not a parameter.

    ``strict``: the flag is honoured both ways (loading an uninitialised layer's state makes the
    layer initialise on its next batch) and survives a dtype change (``.float()``).
    """
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "ActNorm")
    layer = _new(cls, channels, dtype)
    if "initialized" in dict(layer.named_parameters()):
        fail(name, "the initialized flag is an nn.Parameter; an optimizer would try to train it",
             "register it as a buffer: self.register_buffer('initialized', torch.tensor(False)).")
    x = _batch(batch, channels, hw, dtype, seed)
    _forward(layer, x, name, "first batch")
    state = layer.state_dict()
    if not any(k.split(".")[-1] == "initialized" for k in state):
        flag = getattr(layer, "initialized", None)
        if flag is not None and not torch.is_tensor(flag):
            cause = ("the flag is a plain Python attribute, which the state_dict does not save: register it with "
                     "self.register_buffer('initialized', torch.tensor(False)).")
        elif torch.is_tensor(flag) and "initialized" in dict(layer.named_buffers()):
            cause = "the buffer was registered with persistent=False, which leaves it out of the state_dict: drop that argument."
        elif torch.is_tensor(flag):
            cause = ("the flag is a tensor assigned as a plain attribute, not registered: use "
                     "self.register_buffer('initialized', torch.tensor(False)).")
        else:
            cause = None
        fail(name, f"the state_dict has no 'initialized' entry (it has {sorted(state)})", cause)
    if not bool(state["initialized"]):
        fail(name, "after the first batch the saved flag still says not initialised", "set the flag when initialising: self.initialized.fill_(True).")

    fresh = _new(cls, channels, dtype)
    try:
        fresh.load_state_dict(state)
    except Exception as err:  # noqa: BLE001
        fail(name, f"load_state_dict into a fresh {name} failed: {err}")
    x2 = _batch(batch, channels, hw, dtype, seed + 7)
    x2 = 0.3 * x2 - 2.0
    with torch.no_grad():
        want, want_ld = layer(x2)
        got, got_ld = as_pair(call(fresh, x2, what=f"reloaded {name}.forward"), f"{name}.forward")
    if not (torch.allclose(got, want) and torch.allclose(got_ld, want_ld)):
        with torch.no_grad():  # what a layer that sees x2 as its first batch gives
            first, _ = call_pair(_new(cls, channels, dtype), x2, what=f"{name}.forward")
        cause = None
        if torch.allclose(got, first):
            cause = ("the reloaded layer initialised again on its first batch although the saved flag says it was initialised: "
                     "forward must read the registered buffer, which load_state_dict restores.")
        fail(name, "a reloaded layer gives different outputs from the original on the same batch", cause)

    if strict:
        # An uninitialised state loaded into an initialised layer: the next batch initialises it.
        blank = _new(cls, channels, dtype)
        used = _new(cls, channels, dtype)
        _forward(used, x, name, "first batch")
        try:
            used.load_state_dict(blank.state_dict())
        except Exception as err:  # noqa: BLE001
            fail(name, f"loading an uninitialised {name}'s state_dict failed: {err}")
        with torch.no_grad():
            y_used, _ = call_pair(used, x2, what=f"{name}.forward")
            first, _ = call_pair(_new(cls, channels, dtype), x2, what=f"{name}.forward")
        if not torch.allclose(y_used, first):
            fail(name, "after loading the state of a layer that was never initialised, the next batch should initialise it, "
                 "as it does a new layer; it did not: the flag in the state_dict was not honoured")
        # A dtype change keeps the flag.
        converted = layer.float()
        if not _flag_value(converted):
            fail(name, "after .float() the layer's flag says not initialised; the flag must survive a dtype change")
        with torch.no_grad():
            y_conv, _ = as_pair(call(converted, x2.float(), what=f"{name}.forward after .float()"), f"{name}.forward")
        if not torch.allclose(y_conv.double(), want.double(), rtol=1e-4, atol=1e-4):
            fail(name, "after .float() the layer gives other outputs than before on the same batch: it initialised again")
    ok(f"{name} state_dict round trip (flag saved and restored)")
