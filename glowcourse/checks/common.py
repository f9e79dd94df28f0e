"""What every check shares: the ``@check`` decorator, the failure type, the helpers that run the
student's code and word the messages, and the properties every flow layer must have."""
from __future__ import annotations

import functools
import inspect
import warnings
from typing import Callable, Iterable

import torch
from torch import nn

from ..density import jacobian_logdet

__all__ = ["CheckFailed", "check", "fail", "ok", "close", "match", "fmt", "explain", "call", "call_pair", "build", "as_pair",
           "check_flow_shape", "check_inverse_shape", "check_logdet_shape", "perturb", "check_flow_layer", "check_logdet_gradient"]


class CheckFailed(AssertionError):
    """A check found a property that does not hold; the message says which and why."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for a failed check in place of a traceback, in Jupyter, Colab and
        nbgrader's feedback alike: the message and its likely cause. The frames of the checks'
        own code, the exception that led to the message and the paths of the machine that ran
        it say nothing to a student. (IPython looks this method up by name.)"""
        return [f"{type(self).__name__}: {self}"]


# ---------------------------------------------------------------------------------------------
# The decorator


def check(run: Callable) -> Callable:
    """Make ``run`` a check. Around the check's own tests, the wrapper
    - records warnings instead of printing them: nbgrader scores a test cell with any stderr
      output 0, and a deprecation warning must not cost a correct answer its points;
    - forks torch's CPU random state, so the caller's comes back afterwards, pass or fail;
    - seeds torch's generator with the check's ``seed`` (when it takes one), so the check
      builds the same inputs on every run.
    The wrapper hides its frame from tracebacks; the check hides its own with
    ``__tracebackhide__ = True``: IPython and pytest read it from each frame's locals, which a
    decorator cannot set."""
    seed = inspect.signature(run).parameters.get("seed")  # None when the check takes no seed

    @functools.wraps(run)
    def wrapper(*args, **kwargs):
        __tracebackhide__ = True
        with warnings.catch_warnings(record=True), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("always")
            if seed is not None:
                torch.manual_seed(kwargs.get("seed", seed.default))
            return run(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------------------------------------
# Ending a check, comparing numbers


def fail(what: str, detail: str, cause: str | None = None) -> None:
    """Raise ``CheckFailed`` with ``"what: detail"``, and the likely cause on a line of its own."""
    __tracebackhide__ = True
    msg = f"{what}: {detail}"
    if cause:
        msg += f"\nLikely cause: {cause}"
    raise CheckFailed(msg)


def ok(name: str) -> None:
    """Print the one line a check prints when everything holds."""
    print(f"\u2714 {name}: all checks passed")


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """Same shape and close in float64 (``torch.allclose`` broadcasts, which proves nothing)."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=rtol, atol=atol))


def match(got: torch.Tensor, candidates, rtol: float = 1e-5, atol: float = 1e-7) -> str | None:
    """The description of the first ``(value, description)`` candidate that ``got`` equals
    (``close``), else None: how a check names a mistake whose numbers it recomputed."""
    for value, cause in candidates:
        if close(got, value, rtol=rtol, atol=atol):
            return cause
    return None


def fmt(t: torch.Tensor, n: int = 4) -> str:
    """The first ``n`` values of ``t`` to 4 significant digits, for a message."""
    vals = [f"{v:.4g}" for v in t.detach().double().flatten()[:n].tolist()]
    return "[" + ", ".join(vals) + (", ...]" if t.numel() > n else "]")


def explain(got: torch.Tensor, want: torch.Tensor, known: Iterable[tuple[torch.Tensor | float, str]] = ()) -> str | None:
    """Name the mistake whose numbers ``got`` matches, if any.

    ``known`` lists ``(what a mistake would give, its description)`` pairs specific to a check;
    the generic relations (sign, zero, summed over the batch, a constant factor) come after.
    """
    got, want = got.detach().double(), want.detach().double()
    if got.shape != want.shape:  # shapes first: a value comparison of other shapes proves nothing
        return None
    for value, cause in known:
        value = torch.as_tensor(value, dtype=torch.float64).expand_as(want)
        if close(got, value, rtol=1e-4, atol=1e-5):
            return cause
    nonzero = bool(want.abs().min() > 1e-3)
    if nonzero and close(got, -want, rtol=1e-4, atol=1e-5):
        return "the value has the opposite sign: check which direction adds and which subtracts the log-det."
    if nonzero and close(got, torch.zeros_like(want)):
        return "the value is zero for every sample where it should not be: a term is missing."
    # The relations below are evidence only where the correct values differ between samples:
    # when every sample has the same value (a 1x1 convolution's log-det, say), any wrong
    # constant is "a constant factor" and "a constant offset" at once, and naming either would
    # be a guess.
    varies = want.numel() > 1 and float(want.max() - want.min()) > 1e-3 * max(float(want.abs().max()), 1.0)
    if not varies:
        return None
    if close(got, want.sum().expand_as(want), rtol=1e-4, atol=1e-5):
        return "every sample got the sum over the whole batch: sum over the dimensions of one sample only (dim=1 onwards)."
    if nonzero:
        ratio = got / want
        r = float(ratio.mean())
        if close(ratio, torch.full_like(ratio, r), rtol=1e-4, atol=1e-6) and abs(r) > 1e-6:
            return f"the value is {r:.4g} times the correct one for every sample: a constant factor is wrong or missing."
    offset = got - want
    if close(offset, offset.mean().expand_as(want), rtol=1e-4, atol=1e-5):
        return f"the value is off by the same constant {float(offset.mean()):.4g} for every sample: a constant term is wrong or missing."
    return None


# ---------------------------------------------------------------------------------------------
# Running the student's code, and what it must return


def call(fn: Callable, *args, what: str):
    """``fn(*args)``; a blank exercise or a crash fails the check with a message that says so
    (``what`` names the call)."""
    __tracebackhide__ = True
    try:
        return fn(*args)
    except NotImplementedError as err:
        if str(err):  # PyTorch's own, e.g. an operation not defined for a dtype: not the blank exercise
            fail(what, f"raised NotImplementedError: {err}")
        fail(what, "not implemented yet (it raised NotImplementedError)", "replace `raise NotImplementedError()` with your code.")
    except CheckFailed:
        raise
    except Exception as err:  # the student's code crashed: say where, in words
        fail(what, f"raised {type(err).__name__}: {err}")


def call_pair(fn: Callable, *args, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``call`` of a flow's forward or inverse, whose result must be a pair of tensors."""
    __tracebackhide__ = True
    return as_pair(call(fn, *args, what=what), what)


def build(cls: Callable, *args, name: str, dtype: torch.dtype | None = None, module: bool = False, what: str | None = None):
    """The student's ``cls(*args)`` (a ``call``, named ``what``, by default ``Name(arg, ...)``
    with a tensor argument shown as ``weight``), then converted to ``dtype`` if one is given.
    ``module=True`` first fails the check if the result is not an ``nn.Module``."""
    __tracebackhide__ = True
    what = what or f"{name}({', '.join('weight' if torch.is_tensor(a) else str(a) for a in args)})"
    obj = call(cls, *args, what=what)
    if module and not isinstance(obj, nn.Module):
        fail(name, f"{name}(...) returned {type(obj).__name__}, not an nn.Module")
    return obj if dtype is None else obj.to(dtype)


def as_pair(out, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``out`` as ``(output, logdet)``: a flow layer returns a pair of tensors."""
    __tracebackhide__ = True
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        fail(what, f"must return a pair (output, logdet), got {type(out).__name__}", "end with `return y, logdet`.")
    y, logdet = out
    if not torch.is_tensor(y) or not torch.is_tensor(logdet):
        fail(what, "both the output and the logdet must be tensors")
    return y, logdet


def check_flow_shape(y: torch.Tensor, x: torch.Tensor, what: str) -> None:
    """A flow's forward keeps the shape of its input."""
    __tracebackhide__ = True
    if y.shape != x.shape:
        fail(what, f"output has shape {tuple(y.shape)}, input had {tuple(x.shape)}; a flow keeps the shape")


def check_inverse_shape(x_back: torch.Tensor, x: torch.Tensor, what: str) -> None:
    """A flow's inverse gives back the shape of the forward's input."""
    __tracebackhide__ = True
    if x_back.shape != x.shape:
        fail(what, f"output has shape {tuple(x_back.shape)}, expected {tuple(x.shape)}")


def check_logdet_shape(logdet: torch.Tensor, batch: int, what: str) -> None:
    """One log-det per sample, shape ``(batch,)``; the cause names how a wrong shape comes about."""
    __tracebackhide__ = True
    if logdet.shape == (batch,):
        return
    if logdet.numel() == 1:
        cause = f"a single number was returned: give one log-det per sample, shape ({batch},), e.g. `logdet.expand({batch})`."
    elif logdet.shape[:1] == (batch,):
        cause = "sum over every dimension except the batch dimension (e.g. `.flatten(1).sum(1)`)."
    else:
        cause = "the log-det is per sample: a tensor with one value for each element of the batch."
    fail(what, f"logdet has shape {tuple(logdet.shape)}, expected ({batch},)", cause)


def perturb(module: nn.Module, scale: float | Callable[[str], float]) -> None:
    """Add ``scale`` (a number, or a function of the parameter's name) times standard-normal noise
    to every parameter of ``module``, in place: a layer at its init (often the identity) hides
    mistakes a trained one shows. The noise comes from torch's global generator, which the check
    has seeded: one ``randn_like`` per parameter, in ``named_parameters()`` order.

    A parameter inside a module with a ``rate`` (``glowcourse.flows.ZeroConv2d(rate=r)``, which
    multiplies its parameters by ``r`` where they enter) gets ``1 / r`` times the noise, so the
    layer's output moves as far as a rate-1 layer's would: the check sees the same prior
    whatever rate it learns at."""
    rates = {}
    for mname, m in module.named_modules():
        rate = getattr(m, "rate", None)
        if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0:
            rates.update({pname: float(rate) for pname, _ in m.named_parameters(prefix=mname)})
    with torch.no_grad():
        for pname, p in module.named_parameters():
            s = scale(pname) if callable(scale) else scale
            p.add_(s / rates.get(pname, 1.0) * torch.randn_like(p))


# ---------------------------------------------------------------------------------------------
# The properties every flow layer must have


@check
def check_flow_layer(
    layer: nn.Module,
    x: torch.Tensor,
    *,
    name: str = "layer",
    known_mistakes: Callable[[torch.Tensor], list] | None = None,
    inverse_cause: str | None = None,
    atol: float = 1e-6,
) -> None:
    """The properties every flow layer must have.

    ``forward(x) -> (y, logdet)`` with ``y`` shaped like ``x`` and ``logdet`` of shape ``(B,)``;
    ``inverse(forward(x)) == x``; ``logdet`` equals ``slogdet`` of the autograd Jacobian, per
    sample; the inverse's log-det is minus the forward's at the matching point.
    ``known_mistakes(want)`` may list ``(value, cause)`` pairs to name layer-specific mistakes.
    """
    __tracebackhide__ = True
    batch = x.shape[0]
    y, logdet = call_pair(layer, x, what=f"{name}.forward")
    check_flow_shape(y, x, f"{name}.forward")
    check_logdet_shape(logdet, batch, f"{name}.forward")
    if not (torch.isfinite(y).all() and torch.isfinite(logdet).all()):
        where = " and ".join(w for w, t in (("the output", y), ("the log-det", logdet)) if not torch.isfinite(t).all())
        fail(f"{name}.forward", f"{where} contains inf or NaN on a finite input (a log of a negative number gives NaN, "
             "a log of zero -inf, a division by zero inf)")

    x_back, logdet_inv = call_pair(layer.inverse, y.detach(), what=f"{name}.inverse")
    check_inverse_shape(x_back, x, f"{name}.inverse")
    if not torch.allclose(x_back, x, atol=max(atol, 1e-4 if x.dtype == torch.float32 else atol), rtol=1e-4):
        err = float((x_back.detach() - x).abs().max())
        fail(f"{name}.inverse", f"inverse(forward(x)) differs from x by up to {err:.3g}",
             inverse_cause)
    check_logdet_shape(logdet_inv, batch, f"{name}.inverse")

    # Samples are independent: one sample alone gives the same as within the batch.
    alone, alone_ld = call_pair(layer, x[:1].detach(), what=f"{name}.forward")
    tol_y = 1e-4 if x.dtype == torch.float32 else 1e-7
    if not (torch.allclose(alone, y[:1], atol=tol_y, rtol=tol_y) and torch.allclose(alone_ld, logdet[:1], atol=tol_y, rtol=tol_y)):
        fail(f"{name}.forward", "a sample alone gives a different output or log-det than within its batch",
             "a flow treats each sample on its own; statistics of the batch (a re-initialisation on every call, "
             "batch-norm style) make log p(x) depend on the other samples.")

    want = jacobian_logdet(layer, x.detach()).to(logdet.dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if x.dtype == torch.float32 else dict(rtol=1e-6, atol=1e-7)
    if not torch.allclose(logdet, want, **tol):
        known = known_mistakes(want) if known_mistakes else []
        fail(f"{name}.forward", f"logdet {fmt(logdet)} but log|det J| from autograd + slogdet is {fmt(want)}",
             explain(logdet, want, known))
    if not torch.allclose(logdet_inv, -logdet.detach(), **tol):
        fail(f"{name}.inverse", f"logdet {fmt(logdet_inv)} should be minus the forward one at the matching point, {fmt(-logdet)}",
             explain(logdet_inv, -logdet.detach(), [(logdet.detach(), "the inverse returned the forward's log-det: negate it.")]))
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
    _, logdet = call_pair(layer, x.detach(), what=f"{name}.forward")
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
        fail(f"{name}.forward", f"the log-det has the right value but no gradient with respect to {', '.join(missing)}, "
             "so training would ignore the log-det term",
             "the log-det was computed from detached numbers (`.data`, `.detach()`, `.item()`, `float()` or numpy): "
             "compute it from the parameters themselves.")
    if missing or wrong:
        fail(f"{name}.forward", "the log-det has the right value, but its gradient with respect to "
             f"{', '.join(missing + wrong)} differs from autograd's through the brute-force log|det J|; "
             "training would follow the wrong direction")
