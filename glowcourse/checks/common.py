"""What every check shares: the failure type, messages that name causes, and the
properties every flow layer must have."""
from __future__ import annotations

import functools
import math
import warnings
from typing import Callable, Iterable

import torch
from torch import nn

from ..density import jacobian_logdet

__all__ = ["CheckFailed", "check_flow_layer", "check_logdet_gradient"]


class CheckFailed(AssertionError):
    """A check found a property that does not hold; the message says which and why."""


def _quiet(check: Callable) -> Callable:
    """Run a check with warnings recorded, not printed, in a forked random state.

    Under nbgrader any stderr output in a test cell scores it 0, so a deprecation warning in
    torch or in the student's code must not cost a correct answer its points. Checks seed the
    generator to build their inputs; the fork restores the caller's (CPU) random state
    afterwards, whether the check passes or fails, so running a check cell does not change what
    the student's next cell draws.
    """

    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        __tracebackhide__ = True
        with warnings.catch_warnings(record=True), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("always")
            return check(*args, **kwargs)

    return wrapper


def _fail(what: str, detail: str, cause: str | None = None) -> None:
    __tracebackhide__ = True
    msg = f"{what}: {detail}"
    if cause:
        msg += f"\nLikely cause: {cause}"
    raise CheckFailed(msg)


def _ok(name: str) -> None:
    print(f"\u2714 {name}: all checks passed")


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=rtol, atol=atol))


def _fmt(t: torch.Tensor, n: int = 4) -> str:
    vals = [f"{v:.4g}" for v in t.detach().double().flatten()[:n].tolist()]
    return "[" + ", ".join(vals) + (", ...]" if t.numel() > n else "]")


def _explain(got: torch.Tensor, want: torch.Tensor, known: Iterable[tuple[torch.Tensor | float, str]] = ()) -> str | None:
    """Name the mistake whose numbers ``got`` matches, if any.

    ``known`` lists ``(what a mistake would give, its description)`` pairs specific to a check;
    the generic relations (sign, zero, summed over the batch, a constant factor) come after.
    """
    got, want = got.detach().double(), want.detach().double()
    if got.shape != want.shape:  # shapes first: a value comparison of other shapes proves nothing
        return None
    for value, cause in known:
        value = torch.as_tensor(value, dtype=torch.float64).expand_as(want)
        if _close(got, value, rtol=1e-4, atol=1e-5):
            return cause
    nonzero = bool(want.abs().min() > 1e-3)
    if nonzero and _close(got, -want, rtol=1e-4, atol=1e-5):
        return "the value has the opposite sign: check which direction adds and which subtracts the log-det."
    if nonzero and _close(got, torch.zeros_like(want)):
        return "the value is zero for every sample where it should not be: a term is missing."
    # The relations below are evidence only where the correct values differ between samples:
    # when every sample has the same value (a 1x1 convolution's log-det, say), any wrong
    # constant is "a constant factor" and "a constant offset" at once, and naming either would
    # be a guess.
    varies = want.numel() > 1 and float(want.max() - want.min()) > 1e-3 * max(float(want.abs().max()), 1.0)
    if not varies:
        return None
    if _close(got, want.sum().expand_as(want), rtol=1e-4, atol=1e-5):
        return "every sample got the sum over the whole batch: sum over the dimensions of one sample only (dim=1 onwards)."
    if nonzero:
        ratio = got / want
        r = float(ratio.mean())
        if _close(ratio, torch.full_like(ratio, r), rtol=1e-4, atol=1e-6) and abs(r) > 1e-6:
            return f"the value is {r:.4g} times the correct one for every sample: a constant factor is wrong or missing."
    offset = got - want
    if _close(offset, offset.mean().expand_as(want), rtol=1e-4, atol=1e-5):
        return f"the value is off by the same constant {float(offset.mean()):.4g} for every sample: a constant term is wrong or missing."
    return None


def _call(fn: Callable, *args, what: str):
    __tracebackhide__ = True
    try:
        return fn(*args)
    except NotImplementedError as err:
        if str(err):  # PyTorch's own, e.g. an operation not defined for a dtype: not the blank exercise
            _fail(what, f"raised NotImplementedError: {err}")
        _fail(what, "not implemented yet (it raised NotImplementedError)", "replace `raise NotImplementedError()` with your code.")
    except CheckFailed:
        raise
    except Exception as err:  # the student's code crashed: say where, in words
        _fail(what, f"raised {type(err).__name__}: {err}")


def _as_pair(out, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    __tracebackhide__ = True
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        _fail(what, f"must return a pair (output, logdet), got {type(out).__name__}", "end with `return y, logdet`.")
    y, logdet = out
    if not torch.is_tensor(y) or not torch.is_tensor(logdet):
        _fail(what, "both the output and the logdet must be tensors")
    return y, logdet


def _check_logdet_shape(logdet: torch.Tensor, batch: int, what: str) -> None:
    __tracebackhide__ = True
    if logdet.shape == (batch,):
        return
    if logdet.numel() == 1:
        cause = f"a single number was returned: give one log-det per sample, shape ({batch},), e.g. `logdet.expand({batch})`."
    elif logdet.shape[:1] == (batch,):
        cause = "sum over every dimension except the batch dimension (e.g. `.flatten(1).sum(1)`)."
    else:
        cause = "the log-det is per sample: a tensor with one value for each element of the batch."
    _fail(what, f"logdet has shape {tuple(logdet.shape)}, expected ({batch},)", cause)


@_quiet
def check_flow_layer(
    layer: nn.Module,
    x: torch.Tensor,
    *,
    name: str = "layer",
    known_mistakes: Callable[[torch.Tensor], list] | None = None,
    inverse_cause: str | None = None,
    atol: float = 1e-6,
) -> None:
    """The properties every flow layer must have (COURSE.md, "What the autograder checks").

    ``forward(x) -> (y, logdet)`` with ``y`` shaped like ``x`` and ``logdet`` of shape ``(B,)``;
    ``inverse(forward(x)) == x``; ``logdet`` equals ``slogdet`` of the autograd Jacobian, per
    sample; the inverse's log-det is minus the forward's at the matching point.
    ``known_mistakes(want)`` may list ``(value, cause)`` pairs to name layer-specific mistakes.
    """
    __tracebackhide__ = True
    batch = x.shape[0]
    y, logdet = _as_pair(_call(layer, x, what=f"{name}.forward"), f"{name}.forward")
    if y.shape != x.shape:
        _fail(f"{name}.forward", f"output has shape {tuple(y.shape)}, input had {tuple(x.shape)}; a flow keeps the shape")
    _check_logdet_shape(logdet, batch, f"{name}.forward")
    if not (torch.isfinite(y).all() and torch.isfinite(logdet).all()):
        where = " and ".join(w for w, t in (("the output", y), ("the log-det", logdet)) if not torch.isfinite(t).all())
        _fail(f"{name}.forward", f"{where} contains inf or NaN on a finite input (a log of a negative number gives NaN, "
              "a log of zero -inf, a division by zero inf)")

    x_back, logdet_inv = _as_pair(_call(layer.inverse, y.detach(), what=f"{name}.inverse"), f"{name}.inverse")
    if x_back.shape != x.shape:
        _fail(f"{name}.inverse", f"output has shape {tuple(x_back.shape)}, expected {tuple(x.shape)}")
    if not torch.allclose(x_back, x, atol=max(atol, 1e-4 if x.dtype == torch.float32 else atol), rtol=1e-4):
        err = float((x_back.detach() - x).abs().max())
        _fail(f"{name}.inverse", f"inverse(forward(x)) differs from x by up to {err:.3g}",
              inverse_cause)
    _check_logdet_shape(logdet_inv, batch, f"{name}.inverse")

    # Samples are independent: one sample alone gives the same as within the batch.
    alone, alone_ld = _as_pair(_call(layer, x[:1].detach(), what=f"{name}.forward"), f"{name}.forward")
    tol_y = 1e-4 if x.dtype == torch.float32 else 1e-7
    if not (torch.allclose(alone, y[:1], atol=tol_y, rtol=tol_y) and torch.allclose(alone_ld, logdet[:1], atol=tol_y, rtol=tol_y)):
        _fail(f"{name}.forward", "a sample alone gives a different output or log-det than within its batch",
              "a flow treats each sample on its own; statistics of the batch (a re-initialisation on every call, "
              "batch-norm style) make log p(x) depend on the other samples.")

    want = jacobian_logdet(layer, x.detach()).to(logdet.dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if x.dtype == torch.float32 else dict(rtol=1e-6, atol=1e-7)
    if not torch.allclose(logdet, want, **tol):
        known = known_mistakes(want) if known_mistakes else []
        _fail(f"{name}.forward", f"logdet {_fmt(logdet)} but log|det J| from autograd + slogdet is {_fmt(want)}",
              _explain(logdet, want, known))
    if not torch.allclose(logdet_inv, -logdet.detach(), **tol):
        _fail(f"{name}.inverse", f"logdet {_fmt(logdet_inv)} should be minus the forward one at the matching point, {_fmt(-logdet)}",
              _explain(logdet_inv, -logdet.detach(), [(logdet.detach(), "the inverse returned the forward's log-det: negate it.")]))
    check_logdet_gradient(layer, x, name=name)


def check_logdet_gradient(layer: nn.Module, x: torch.Tensor, *, name: str = "layer") -> None:
    """Training follows the log-det's gradient, not its value: the gradient of ``sum(logdet)``
    with respect to every parameter must equal autograd's through the brute-force
    ``log|det J|`` (``jacobian_logdet(..., create_graph=True)``). A log-det computed from
    ``.data``, ``.detach()``, ``.item()`` or numpy has the right value and no gradient, so
    maximum likelihood silently ignores the volume term."""
    __tracebackhide__ = True
    params = [(n, p) for n, p in layer.named_parameters() if p.requires_grad]
    if not params:
        return
    tensors = [p for _, p in params]
    _, logdet = _as_pair(_call(layer, x.detach(), what=f"{name}.forward"), f"{name}.forward")
    if logdet.requires_grad:
        got = torch.autograd.grad(logdet.sum(), tensors, allow_unused=True)
    else:
        got = [None] * len(tensors)
    brute = jacobian_logdet(layer, x.detach(), create_graph=True)
    want = torch.autograd.grad(brute.sum(), tensors, allow_unused=True) if brute.requires_grad else [None] * len(tensors)
    tol = dict(rtol=1e-3, atol=1e-3) if x.dtype == torch.float32 else dict(rtol=1e-6, atol=1e-7)
    wrong, missing = [], []
    for (pname, p), g, w in zip(params, got, want):
        g = torch.zeros_like(p) if g is None else g
        w = torch.zeros_like(p) if w is None else w
        if not torch.allclose(g, w, **tol):
            (missing if not bool(g.abs().max() > 0) else wrong).append(pname)
    if missing and not wrong:
        _fail(f"{name}.forward", f"the log-det has the right value but no gradient with respect to {', '.join(missing)}, "
              "so training would ignore the log-det term",
              "the log-det was computed from detached numbers (`.data`, `.detach()`, `.item()`, `float()` or numpy): "
              "compute it from the parameters themselves.")
    if missing or wrong:
        _fail(f"{name}.forward", "the log-det has the right value, but its gradient with respect to "
              f"{', '.join(missing + wrong)} differs from autograd's through the brute-force log|det J|; "
              "training would follow the wrong direction")
