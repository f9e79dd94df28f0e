"""Checks for notebook 3, the invertible 1x1 convolution, dense and LU.

The student writes ``random_rotation(c)``, ``InvConv2d(num_channels)`` and
``InvConv2dLU(num_channels, weight=None)``; both classes expose ``calc_weight()``, the
effective ``C x C`` matrix. The LU layer may decompose with ``torch.linalg.lu`` or
``scipy.linalg.lu``, mask with multiplications or ``torch.tril``/``torch.triu``, and invert by
triangular solves or ``inverse``: only the behaviour is checked, and the structure the spec
fixes (P and sign(s) buffers, L and U triangular whatever the optimizer does, a log-det that
does not factorise W).

``strict=True`` (the hidden tests) adds properties the visible checks leave out: the spread of
``random_rotation``'s entries; a ``state_dict`` round trip into a freshly built layer; forward
and inverse that follow the parameters after an optimizer step; and the sign of det W through
large optimizer steps.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .common import as_pair, build, call, call_pair, check, check_flow_layer, check_inverse_shape, close, fail, fmt, ok, perturb

__all__ = ["check_random_rotation", "check_invconv_dense", "check_invconv_lu", "check_invconv_lu_training"]


# --- shared helpers ----------------------------------------------------------------------------


def _weight(layer, name: str) -> torch.Tensor:
    __tracebackhide__ = True
    w = call(layer.calc_weight, what=f"{name}.calc_weight") if hasattr(layer, "calc_weight") else None
    if not torch.is_tensor(w) or w.dim() != 2 or w.shape[0] != w.shape[1]:
        fail(name, "calc_weight() must return the effective C x C weight matrix")
    return w


def _orthogonal(w: torch.Tensor, tol: float) -> bool:
    eye = torch.eye(w.shape[0], dtype=torch.float64)
    w = w.detach().double()
    return bool(torch.allclose(w @ w.T, eye, atol=tol))


def _known_hw(h: int, w: int):
    npix = h * w

    def known(want):
        return [
            (want / npix, f"the log-det is H*W = {npix} times too small: the same C x C matrix acts on every one of the H*W pixels; multiply by H*W."),
            (want * npix, f"the log-det is H*W = {npix} times too large: multiply by H*W once."),
        ]

    return known


def _check_plain_tensors(layer: nn.Module, name: str) -> None:
    """Fixed tensors kept as plain attributes: ``.to(dtype)``, ``.double()``, ``.cuda()`` and
    ``state_dict()`` do not see them. Checked before anything that converts the layer."""
    __tracebackhide__ = True
    plain = [f"{prefix + '.' if prefix else ''}{k}" for prefix, m in layer.named_modules()
             for k, v in vars(m).items() if torch.is_tensor(v) and not isinstance(v, nn.Parameter)]
    if plain:
        fail(name, f"{', '.join('self.' + p for p in plain)} {'is a plain tensor attribute' if len(plain) == 1 else 'are plain tensor attributes'}, "
                   "neither a parameter nor a buffer: layer.double(), layer.to(device) and state_dict() skip "
                   "them, so the layer breaks in float64 or on a GPU, and a reloaded model loses them",
             "fixed tensors (P, sign(s), the masks, the identity) must be registered with "
             "self.register_buffer(name, tensor): saved and moved with the layer, never trained.")


def _new_layer(cls, args: tuple, name: str, dtype) -> nn.Module:
    """The student's layer, checked for plain tensor attributes before it is converted to ``dtype``."""
    __tracebackhide__ = True
    layer = build(cls, *args, name=name, module=True)
    _check_plain_tensors(layer, name)
    return call(lambda: layer.to(dtype), what=f"{name}.to({dtype})")


def _square_param(layer) -> nn.Parameter | None:
    squares = [p for p in layer.parameters() if p.dim() == 2 and p.shape[0] == p.shape[1]]
    return squares[0] if len(squares) == 1 else None


def _check_inverse(layer, x, name: str, w: torch.Tensor) -> None:
    """inverse(forward(x)) == x, and when it is not, which matrix the inverse convolved with."""
    __tracebackhide__ = True
    y, _ = call_pair(layer, x, what=f"{name}.forward")
    x_back, _ = call_pair(layer.inverse, y.detach(), what=f"{name}.inverse")
    check_inverse_shape(x_back, x, f"{name}.inverse")
    tol = 1e-4 if x.dtype == torch.float32 else 1e-6
    if torch.allclose(x_back, x, atol=tol, rtol=tol):
        return
    w = w.detach().to(y.dtype)
    conv = lambda m: F.conv2d(y.detach(), m[:, :, None, None])  # noqa: E731
    inv = torch.linalg.inv(w)
    hypotheses = [
        (conv(w), "the inverse convolves with W itself; it must convolve with W^-1 (torch.linalg.inv(W))."),
        (conv(w.T), "the inverse convolves with W^T, which is W^-1 only while W is orthogonal (at init); "
                    "training moves W away from orthogonal: use torch.linalg.inv(W)."),
        (conv(inv.T), "the inverse convolves with the transpose of W^-1: F.conv2d takes the weight as "
                      "[out_channels, in_channels], so pass torch.linalg.inv(W) itself."),
    ]
    cause = next((c for v, c in hypotheses if torch.allclose(x_back.detach(), v, atol=tol, rtol=tol)), None)
    err = float((x_back.detach() - x).abs().max())
    fail(f"{name}.inverse", f"inverse(forward(x)) differs from x by up to {err:.3g} (W moved away from its init)", cause)


# --- exercise 1: random_rotation ---------------------------------------------------------------


def _draws(fn, c: int, n: int) -> torch.Tensor:
    __tracebackhide__ = True
    return torch.stack([call(fn, c, what=f"random_rotation({c})").detach().double() for _ in range(n)])


@check
def check_random_rotation(fn: Callable, *, sizes: tuple = (1, 3, 16), seed: int = 0, strict: bool = False) -> None:
    """``random_rotation(c)``: a random orthogonal ``c x c`` matrix from the QR decomposition of a
    Gaussian matrix: orthogonal, new on every call, not a (signed) permutation, and with no
    preferred direction. ``strict``: every entry has the spread of a random rotation's."""
    __tracebackhide__ = True
    for c in sorted(sizes, reverse=True):  # the largest first: the shape of a wrong answer shows there
        q = call(fn, c, what=f"random_rotation({c})")
        if not torch.is_tensor(q) or q.shape != (c, c):
            fail("random_rotation", f"returned {tuple(q.shape) if torch.is_tensor(q) else type(q).__name__}, expected a ({c}, {c}) tensor")
        if not q.is_floating_point():
            fail("random_rotation", f"returned a {q.dtype} tensor; a rotation has real entries (a floating-point tensor)")
        qd = q.detach().double()
        if not _orthogonal(qd, 1e-5):
            err = float((qd @ qd.T - torch.eye(c, dtype=torch.float64)).abs().max())
            norms = qd.norm(dim=0)
            if c > 1 and bool((torch.tril(qd, -1).abs() < 1e-12).all()):
                cause = "the matrix is upper triangular: that is R, the second factor of the QR decomposition; return Q, the first."
            elif not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
                cause = (f"its columns have lengths {norms.min():.3g} to {norms.max():.3g}, not 1: a matrix of random numbers is not "
                         "orthogonal; take the Q of its QR decomposition, torch.linalg.qr(torch.randn(c, c)).")
            else:
                cause = None
            fail("random_rotation", f"at c = {c}, Q Q^T differs from the identity by up to {err:.3g}: not orthogonal", cause)
        if c > 1 and bool(((qd.abs() < 1e-6) | ((qd.abs() - 1).abs() < 1e-6)).all()):
            fail("random_rotation", f"at c = {c}, every entry is 0, 1 or -1: a (signed) permutation matrix. It is orthogonal, "
                                    "but it only reorders (and flips) the channels; a random rotation mixes every channel "
                                    "into every other, and its entries spread around 0",
                 "a permutation such as torch.eye(c)[torch.randperm(c)] is not a random rotation: take the Q of the QR "
                 "decomposition of a Gaussian matrix, torch.linalg.qr(torch.randn(c, c)).")
    c = max(sizes)
    if c > 1:
        torch.manual_seed(seed + 101)
        a = call(fn, c, what="random_rotation").detach().clone()
        after_a = torch.random.get_rng_state()
        torch.manual_seed(seed + 202)
        b = call(fn, c, what="random_rotation").detach().clone()
        after_b = torch.random.get_rng_state()
        if torch.allclose(a, b):
            if torch.equal(after_a, after_b):
                cause = ("the function calls torch.manual_seed (it resets torch's random state: the state after it is the same "
                         "whatever it was before): draw from the global random state, and let the caller seed.")
            else:
                cause = ("the matrix does not come from torch's global random state (a fixed generator, a seeded "
                         "torch.Generator, or a constant matrix?): draw it with torch.randn.")
            fail("random_rotation", "two calls from different random states returned the same matrix", cause)
    _check_direction(fn, seed)
    if strict:
        _check_spread(fn, seed)
    ok(f"random_rotation (sizes {', '.join(map(str, sizes))})")


def _check_direction(fn, seed: int, c: int = 16, n: int = 200) -> None:
    """A random rotation has no preferred direction: for the unit vector u = (1, ..., 1)/sqrt(c),
    u . q_j (q_j a column) has mean square 1/c, as for any fixed unit vector. Insensitive to the
    signs of the columns, so Q straight from QR (without the sign fix) passes."""
    __tracebackhide__ = True
    torch.manual_seed(seed + 7)
    qs = _draws(fn, c, n)
    u = torch.full((c,), c ** -0.5, dtype=torch.float64)
    along = torch.einsum("i,nij->nj", u, qs)
    m = (c * along**2).mean(0)  # 1 for every column of a random rotation
    j = int(m.argmax())
    if float(m[j]) > 2.5:
        same_sign = float(((qs[:, :, j] > 0).all(1) | (qs[:, :, j] < 0).all(1)).double().mean())
        cause = None
        if same_sign > 0.9:
            cause = (f"in {100 * same_sign:.0f}% of the draws every entry of column {j} has the same sign, as for the QR "
                     "decomposition of a matrix with positive entries: draw the matrix with torch.randn (standard normal), "
                     "not torch.rand (uniform on [0, 1)).")
        fail("random_rotation", f"over {n} draws at c = {c}, column {j} leans towards the direction (1, ..., 1): its mean "
                                f"squared component along it is {float(m[j]) / c:.3g}, against 1/c = {1 / c:.3g} for a random "
                                "rotation, which has no preferred direction", cause)


def _check_spread(fn, seed: int, c: int = 16, n: int = 200) -> None:
    """Every entry of a random rotation has mean square 1/c: each output channel draws on every
    input channel alike. Near-identity rotations, reflections and block-diagonal matrices fail."""
    __tracebackhide__ = True
    torch.manual_seed(seed + 13)
    qs = _draws(fn, c, n)
    m = (c * qs**2).mean(0)  # 1 for every entry of a random rotation
    if float(m.max()) > 2.0 or float(m.min()) < 0.4:
        diag = float(torch.diagonal(m).mean())
        where = ("the diagonal entries are large (a matrix close to the identity, or to a reflection I - 2vv^T)"
                 if diag > 2.0 else "some entries are (nearly) always 0 (a block-diagonal matrix?)" if float(m.min()) < 0.4
                 else "some entries are much larger than the others")
        fail("random_rotation", f"over {n} draws at c = {c}, the mean square of an entry ranges from {float(m.min()) / c:.3g} to "
                                f"{float(m.max()) / c:.3g}; for a random rotation every entry has mean square 1/c = {1 / c:.3g}: "
                                f"{where}. A random rotation mixes every channel into every other alike: take the Q of "
                                "the QR decomposition of a Gaussian matrix")


# --- exercise 2: the dense layer ---------------------------------------------------------------


@check
def check_invconv_dense(cls: type, *, channels: int = 3, batch: int = 2, hw: tuple = (2, 3), seed: int = 0,
                        dtype: torch.dtype = torch.float64, strict: bool = False) -> None:
    """Dense 1x1 conv: orthogonal at init, invertible, log-det ``H*W*log|det W|`` (also at
    C = 64 and with det W < 0). ``strict``: a ``state_dict`` round trip into a fresh layer; forward
    and inverse follow the parameters after an optimizer step."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "InvConv2d")
    layer = _new_layer(cls, (channels,), name, dtype)
    w0 = _weight(layer, name)
    if not _orthogonal(w0, 1e-5):
        fail(f"{name} init", "the weight is not orthogonal at init", "initialise it with random_rotation(num_channels).")
    perturb(layer, 0.4)  # away from orthogonal, where log|det W| = 0 would hide mistakes
    square = _square_param(layer)
    with torch.no_grad():
        if square is not None and torch.linalg.det(_weight(layer, name).double()) > 0:
            square[0].neg_()  # det W < 0: log(det W) is NaN there, log|det W| is not
    x = torch.randn(batch, channels, *hw, dtype=dtype)
    _check_inverse(layer, x, name, _weight(layer, name))
    w = _weight(layer, name).detach().double()
    sign, logabs = torch.linalg.slogdet(w)

    def known(want):
        npix = hw[0] * hw[1]
        return _known_hw(*hw)(want) + [
            (npix * sign, "the log-det is H*W times the sign of det W: torch.linalg.slogdet returns (sign, logabsdet); "
                          "take .logabsdet (or [1]), not [0]."),
            (npix * logabs.exp(), "the log-det uses |det W| itself; it is the log: H*W*log|det W|."),
        ]

    if sign < 0:  # the one place log(det W) and log|det W| part ways: a NaN here names its cause
        out = call(layer, x, what=f"{name}.forward")
        if isinstance(out, (tuple, list)) and len(out) == 2 and torch.is_tensor(out[1]) and torch.isnan(out[1]).any() \
                and torch.is_tensor(out[0]) and torch.isfinite(out[0]).all():
            fail(f"{name}.forward", f"the log-det is NaN for a weight with det W = {float(torch.linalg.det(w)):.3g} < 0",
                 "the log of a negative determinant is NaN: the log-det is H*W*log|det W|, with the absolute value "
                 "(torch.linalg.slogdet(W).logabsdet).")
    check_flow_layer(layer, x, name=name, known_mistakes=known,
                     inverse_cause="the inverse convolves with W^-1 (torch.linalg.inv(W)), not with W or W^T (W is orthogonal only at init).")
    _check_big(cls, name, dtype, seed)
    if strict:
        _check_state_dict(cls, (channels,), layer, x, name, dtype)
        _check_after_update(layer, x, name, dtype)
    ok(f"{name} (C={channels}, {hw[0]}x{hw[1]}; and C=64)")


def _check_big(cls, name, dtype, seed, channels: int = 64, hw=(2, 2)):
    """At C = 64 the autograd Jacobian is too big to be quick: compare with slogdet of calc_weight()."""
    __tracebackhide__ = True
    torch.manual_seed(seed + 1)
    layer = _new_layer(cls, (channels,), name, dtype)
    perturb(layer, 0.05)
    x = torch.randn(2, channels, *hw, dtype=dtype)
    y, logdet = as_pair(call(layer, x, what=f"{name}.forward at C={channels}"), f"{name}.forward")
    w = _weight(layer, name).detach()
    want = hw[0] * hw[1] * torch.linalg.slogdet(w.double()).logabsdet
    tol = 1e-3 if dtype == torch.float32 else 1e-5
    if logdet.shape != (2,) or not close(logdet.detach(), want.expand(2).to(logdet.dtype), rtol=tol, atol=tol):
        fail(f"{name}.forward", f"at C={channels}, logdet {fmt(logdet)} but H*W*log|det W| from slogdet is {float(want):.6g}")
    y_ref = torch.einsum("oc,bchw->bohw", w.to(x.dtype), x)
    if not torch.allclose(y, y_ref, atol=tol, rtol=tol):
        fail(f"{name}.forward", f"at C={channels}, the output is not the 1x1 convolution with calc_weight()")


def _check_after_update(layer, x, name, dtype) -> None:
    """Training changes the parameters between calls: forward and inverse must use the current
    weight (nothing cached from an earlier call)."""
    __tracebackhide__ = True
    with torch.no_grad():
        y, _ = call_pair(layer, x, what=f"{name}.forward")
        call(layer.inverse, y, what=f"{name}.inverse")
        perturb(layer, 0.1)  # an optimizer step
        y, ld = call_pair(layer, x, what=f"{name}.forward")
        xb, _ = call_pair(layer.inverse, y, what=f"{name}.inverse")
        w = _weight(layer, name).detach()
    tol = 1e-4 if dtype == torch.float32 else 1e-7
    if not torch.allclose(y, torch.einsum("oc,bchw->bohw", w.to(x.dtype), x), atol=tol, rtol=tol):
        fail(f"{name}.forward", "after the parameters changed (an optimizer step), forward is no longer the convolution "
                                "with calc_weight(): it uses a weight computed in an earlier call")
    if not torch.allclose(xb, x, atol=tol, rtol=tol):
        fail(f"{name}.inverse", "after the parameters changed (an optimizer step), inverse(forward(x)) is no longer x: the "
                                "inverse uses W^-1 computed in an earlier call; compute it from the current weight")


def _check_state_dict(cls, args, layer, x, name, dtype) -> None:
    """A fresh layer (another random init) that loads the state_dict computes the same map."""
    __tracebackhide__ = True
    torch.manual_seed(12345)
    fresh = _new_layer(cls, args, name, dtype)
    try:
        fresh.load_state_dict(layer.state_dict())
    except Exception as err:  # noqa: BLE001
        fail(f"{name} state_dict", f"a fresh layer cannot load a trained layer's state_dict: {type(err).__name__}: {err}")
    with torch.no_grad():
        y, ld = call_pair(layer, x, what=f"{name}.forward")
        y2, ld2 = call_pair(fresh, x, what=f"{name}.forward")
        xb, _ = call_pair(fresh.inverse, y, what=f"{name}.inverse")
    tol = 1e-5 if dtype == torch.float32 else 1e-9
    if not (torch.allclose(y, y2, atol=tol, rtol=tol) and torch.allclose(ld, ld2, atol=tol, rtol=tol)):
        fail(f"{name} state_dict", "a freshly built layer that loaded a trained layer's state_dict computes a different "
                                   "forward: part of what the layer computes with is not in its state_dict (a plain "
                                   "attribute, or something computed once in __init__)")
    if not torch.allclose(xb, x, atol=max(tol, 1e-4 if dtype == torch.float32 else 1e-7), rtol=1e-4):
        fail(f"{name} state_dict", "after load_state_dict, inverse(forward(x)) is not x: the inverse uses something "
                                   "computed in __init__ (a cached W^-1?) instead of the current weight")


# --- exercise 3: the LU layer ------------------------------------------------------------------


def _lu_suspects(layer) -> list[str]:
    """Parameters that look like P (a permutation matrix), sign(s) (a vector of +-1) or a mask."""
    out = []
    for k, p in layer.named_parameters():
        v = p.detach()
        if v.dim() == 2 and v.shape[0] == v.shape[1] and v.shape[0] > 1 and bool(((v == 0) | (v == 1)).all()):
            if bool((v.sum(0) == 1).all()) and bool((v.sum(1) == 1).all()):
                out.append(f"{k} (a permutation matrix: P)")
            elif bool((torch.tril(v, -1) == v).all()) or bool((torch.triu(v, 1) == v).all()):
                out.append(f"{k} (zeros and ones: a mask)")
        elif v.dim() == 1 and v.numel() > 1 and bool((v.abs() == 1).all()) and bool((v < 0).any()):
            out.append(f"{k} (all +-1: sign(s))")
    return out


_ZONES = {"below": lambda n: torch.tril(torch.ones(n, n), -1), "on": lambda n: torch.eye(n), "above": lambda n: torch.triu(torch.ones(n, n), 1)}


def _zones(layer, name: str) -> dict[str, set[str]]:
    """For each square parameter: which of its zones (below / on / above the diagonal) change
    calc_weight() when they change. Spec: w_l only below (L = I + masked w_l), w_u only above."""
    __tracebackhide__ = True
    with torch.no_grad():  # on the layer itself, each entry put back (a deepcopy fails on a layer that keeps non-leaf tensors)
        base = _weight(layer, name).detach().clone()
        out = {}
        for k, p in layer.named_parameters():
            if p.dim() != 2 or p.shape[0] != p.shape[1] or p.shape[0] < 2:
                continue
            seen = set()
            for zone, mask in _ZONES.items():
                keep = p.detach().clone()
                try:
                    p.add_(0.1 * mask(p.shape[0]).to(p) * (1 + torch.rand_like(p)))
                    if not torch.allclose(_weight(layer, name).detach(), base, atol=1e-10, rtol=0):
                        seen.add(zone)
                finally:
                    p.copy_(keep)
            out[k] = seen
    return out


def _mask_cause(layer, name: str, got=None, want=None, npix: int = 1) -> str | None:
    """The masks' part in a wrong weight or log-det, tested: a square parameter whose every entry
    reaches calc_weight() is unmasked; one whose diagonal and lower part do (and whose diagonal
    accounts for the log-det's error) is an L with a learned diagonal."""
    zones = _zones(layer, name)
    for k, seen in zones.items():
        if seen == {"below", "on", "above"}:
            return (f"calc_weight() changes when any entry of {k} changes, on and across the diagonal too: the mask is missing. "
                    "The optimizer updates every entry of the learned matrices; only masks keep L unit lower-triangular "
                    "(learned entries strictly below the diagonal, ones on it) and U strictly upper-triangular "
                    "(learned entries strictly above), so that log|det W| = sum(log|s|) stays true.")
    if got is not None:
        for k, p in layer.named_parameters():
            if zones.get(k) == {"below", "on"}:
                extra = npix * torch.log(torch.diagonal(p.detach()).double().abs()).sum()
                if close(want.double() - got.double(), extra.expand_as(want), rtol=1e-4, atol=1e-5):
                    return (f"the diagonal of {k} is learned (its mask keeps the diagonal), so L is not unit lower-triangular "
                            "and det L is not 1: mask strictly below the diagonal and add the identity, L = I + w_l * mask.")
    return None


class _Factorised(Exception):
    pass


@contextlib.contextmanager
def _no_factorisation():
    """Make the functions that factorise a matrix or take its determinant raise, for a moment."""
    targets = [(torch.linalg, n) for n in ("slogdet", "det", "lu", "lu_factor", "lu_factor_ex", "qr", "eig", "eigvals",
                                           "svd", "svdvals", "cholesky", "inv", "inv_ex", "solve", "matrix_norm", "cond")]
    targets += [(torch, n) for n in ("slogdet", "det", "logdet", "inverse", "lu", "svd", "qr")]
    targets += [(torch.Tensor, n) for n in ("det", "slogdet", "logdet", "inverse", "lu", "svd", "qr")]
    saved = []
    for owner, n in targets:
        if hasattr(owner, n):
            # (owner, name, the object in owner's own namespace or None when inherited)
            saved.append((owner, n, vars(owner).get(n)))

            def stub(*args, _n=n, **kwargs):
                raise _Factorised(_n)

            setattr(owner, n, stub)
    try:
        yield
    finally:
        for owner, n, own in reversed(saved):
            if own is None:
                with contextlib.suppress(AttributeError):
                    delattr(owner, n)  # inherited (a method of torch._C.TensorBase): inherit it again
            else:
                setattr(owner, n, own)


def _check_logdet_is_cheap(layer, x, name: str) -> None:
    """The point of the LU form: forward's log-det is H*W*sum(log|s|), O(C), with no determinant
    or factorisation of W (the log-det's value alone cannot tell)."""
    __tracebackhide__ = True
    try:
        with _no_factorisation(), torch.no_grad():
            layer(x)
    except _Factorised as err:
        fail(f"{name}.forward", f"forward calls {err} on the weight: that costs O(C^3), the cost the LU form exists to avoid",
             f"the log-det of W = P L (U + diag(s)) is H*W*sum(log|s|), read off the learned log|s| in O(C); "
             f"drop the {err} call from forward.")
    except Exception:  # noqa: BLE001  (anything else is the flow checks' business)
        pass


@check
def check_invconv_lu(cls: type, *, channels: int = 4, batch: int = 2, hw: tuple = (2, 3), seed: int = 0,
                     dtype: torch.dtype = torch.float64, strict: bool = False) -> None:
    """LU 1x1 conv: P and sign(s) buffers; ``calc_weight()`` equals the weight it was built from;
    L and U stay triangular when every entry moves; a flow layer; a log-det that does not
    factorise W. ``strict``: a ``state_dict`` round trip into a fresh layer; forward and inverse
    follow the parameters after an optimizer step."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "InvConv2dLU")
    q, _ = torch.linalg.qr(torch.randn(channels, channels))
    if channels > 1:
        q[:, 0] = -q[:, 0]  # a fixed det sign of -1: sign(s) has a -1 somewhere
    layer = _new_layer(cls, (channels, q.clone()), name, dtype)
    suspects = _lu_suspects(layer)
    if suspects:
        fail(name, f"{', '.join(suspects)} is a parameter; the optimizer would change it",
             "P, sign(s) and the masks are fixed: register them with self.register_buffer(...), not nn.Parameter.")
    w = _weight(layer, name)
    if not torch.allclose(w.detach().double(), q.double(), atol=1e-5):
        fail(f"{name} init", f"calc_weight() differs from the weight it was built from by up to {float((w.detach().double() - q.double()).abs().max()):.3g}",
             _init_cause(layer, name, q.double(), w.detach().double()))
    default = build(cls, channels, name=name)
    if not _orthogonal(_weight(default, name), 1e-5):
        fail(f"{name} init", "without a weight argument, the init is not orthogonal", "decompose random_rotation(num_channels) when no weight is given.")
    perturb(layer, 0.3)  # every entry moves, the masked ones too: the masks must keep L and U triangular
    x = torch.randn(batch, channels, *hw, dtype=dtype)
    _check_inverse(layer, x, name, _weight(layer, name))
    npix = hw[0] * hw[1]

    def known(want):
        got = as_pair(layer(x), name)[1].detach()
        mask = _mask_cause(layer, name, got, want, npix)
        out = [(got, mask)] if mask else []
        out += _known_hw(*hw)(want)
        vectors = [p.detach() for p in layer.parameters() if p.dim() == 1 and p.numel() == channels]
        signs = [b.detach() for b in layer.buffers() if b.dim() == 1 and b.numel() == channels] + [torch.ones(channels, dtype=dtype)]
        for v in vectors:  # if v holds log|s|: the mistakes that use s itself
            for sign in signs:
                out.append((npix * (sign * v.exp()).sum(), "the log-det sums s itself; it is H*W*sum(log|s|), the log of the absolute value."))
        return out

    check_flow_layer(layer, x, name=name, known_mistakes=known,
                     inverse_cause="the inverse convolves with the inverse of calc_weight().")
    _check_logdet_is_cheap(layer, x, name)
    _check_big(cls, name, dtype, seed)
    if strict:
        _check_state_dict(cls, (channels,), layer, x, name, dtype)
        _check_after_update(layer, x, name, dtype)
    ok(f"{name} (C={channels}, {hw[0]}x{hw[1]}; and C=64)")


def _init_cause(layer, name: str, q: torch.Tensor, w: torch.Tensor) -> str | None:
    """Why calc_weight() at init is not the weight the layer was built from: each hypothesis is
    recomputed from the decomposition of that weight and compared."""
    mask = _mask_cause(layer, name)
    if mask:
        return mask
    p, lower, upper = torch.linalg.lu(q)
    s = torch.diagonal(upper)
    u0 = torch.triu(upper, 1)
    eye = torch.eye(q.shape[0], dtype=q.dtype)
    hypotheses = [
        (p @ lower @ (u0 + torch.diag(s.abs())), "the signs of s are lost: the diagonal of U is sign(s) * exp(log|s|), "
                                                 "with sign(s) kept as a buffer; exp(log|s|) alone is |s|."),
        (p @ (lower - eye) @ upper, "L has zeros on its diagonal: L is unit lower-triangular, the masked learned part plus the identity."),
        (p @ lower @ (upper + torch.diag(s)), "the diagonal of U counts s twice: the learned U is strictly upper-triangular, and diag(s) is added to it."),
        (p.T @ lower @ upper, "P is applied transposed: W = P L U with P as the decomposition returns it."),
        (lower @ upper, "P is missing: W = P L U."),
    ]
    return next((c for v, c in hypotheses if torch.allclose(w, v, atol=1e-5)), None)


@check
def check_invconv_lu_training(cls: type, *, channels: int = 5, steps: int = 5, hw: tuple = (2, 2), seed: int = 0,
                              dtype: torch.dtype = torch.float64, strict: bool = False) -> None:
    """After optimizer steps with random gradients the LU structure still holds (buffers unchanged,
    log-det = H*W*log|det W|). ``strict``: large steps never change the sign of det W."""
    __tracebackhide__ = True
    name = getattr(cls, "__name__", "InvConv2dLU")
    layer = _new_layer(cls, (channels,), name, dtype)
    buffers_before = {k: b.clone() for k, b in layer.named_buffers()}
    opt = torch.optim.SGD(layer.parameters(), lr=0.05)
    x = torch.randn(3, channels, *hw, dtype=dtype)
    for _ in range(steps):
        y, logdet = call_pair(layer, x, what=f"{name}.forward")
        opt.zero_grad()
        call(lambda: (y.square().mean() - logdet.mean()).backward(), what=f"backward through {name}")  # the graph must support backward
        for p in layer.parameters():  # then random gradients on every entry, masked ones included
            p.grad = torch.randn_like(p)
        opt.step()
    for k, b in buffers_before.items():
        if not torch.equal(b, dict(layer.named_buffers())[k]):
            fail(name, f"training changed the buffer {k}")
    with torch.no_grad():
        _, logdet = call_pair(layer, x, what=f"{name}.forward")
    w = _weight(layer, name).detach().double()
    want = (hw[0] * hw[1] * torch.linalg.slogdet(w).logabsdet).expand(3)
    if logdet.shape != (3,) or not close(logdet, want.to(logdet.dtype), rtol=1e-6, atol=1e-6):
        cause = _mask_cause(layer, name, logdet.detach(), want, hw[0] * hw[1]) if logdet.shape == (3,) else None
        fail(name, f"after {steps} optimizer steps the log-det is {fmt(logdet)} but H*W*log|det calc_weight()| is {float(want[0]):.6g}", cause)
    check_flow_layer(layer, x, name=f"{name} after training")
    if strict:
        _check_det_sign(cls, name, channels, dtype, seed)
    ok(f"{name} keeps its LU structure through {steps} optimizer steps")


def _check_det_sign(cls, name, channels, dtype, seed, steps: int = 20, lr: float = 0.5) -> None:
    """The LU form cannot cross det W = 0: sign(s) is fixed and |s| = exp(log|s|) > 0, so even
    large steps keep the sign of det W (a learned s itself could cross 0)."""
    __tracebackhide__ = True
    torch.manual_seed(seed + 5)
    layer = _new_layer(cls, (channels,), name, dtype)
    sign0 = torch.linalg.slogdet(_weight(layer, name).detach().double()).sign
    opt = torch.optim.SGD(layer.parameters(), lr=lr)
    for step in range(steps):
        for p in layer.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
        sign = torch.linalg.slogdet(_weight(layer, name).detach().double()).sign
        if sign != sign0:
            fail(name, f"after {step + 1} large optimizer steps det W changed sign ({int(sign0)} -> {int(sign)}), so it passed "
                       "through 0, where W has no inverse. The LU form cannot: sign(s) is a fixed buffer and "
                       "|s| = exp(log|s|) > 0; learn log|s|, not s.")
