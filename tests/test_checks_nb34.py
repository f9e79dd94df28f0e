"""Notebooks 3 and 4: what the hidden (``strict``) checks add, and the causes the visible ones name.

The catalogue tests (tests/test_checks.py) run every catalogued mistake through the notebook
and need it to fail the visible check too. The answers here pass the visible checks and fail
only a property the hidden ones add, or they test a message in isolation. The course's
reference layers (glowcourse.flows) are correct answers and pass every check, hidden ones
included: reusing them is for the grader to flag, not for a check to fail.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import glowcourse
from glowcourse import checks, flows
from glowcourse.checks.common import CheckFailed

from autograder.catalogues import report


def cause_of(err) -> str:
    return report.likely_cause(str(err.value))


# --- random_rotation ---------------------------------------------------------------------------


def haar(c):
    q, r = torch.linalg.qr(torch.randn(c, c))
    return q * torch.sign(torch.diagonal(r))


def near_identity(c):
    a = 0.1 * torch.randn(c, c)
    return torch.linalg.matrix_exp(a - a.T)


def reflection(c):
    v = torch.randn(c, 1)
    v = v / v.norm()
    return torch.eye(c) - 2 * v @ v.T


def block_diagonal(c):
    return torch.block_diag(haar(c // 2), haar(c - c // 2))


@pytest.mark.parametrize("fn", [haar, lambda c: torch.linalg.qr(torch.randn(c, c))[0],
                                lambda c: torch.nn.init.orthogonal_(torch.empty(c, c))])
def test_random_rotations_pass_visible_and_hidden(fn):
    checks.check_random_rotation(fn)
    checks.check_random_rotation(fn, sizes=(2, 7, 64), seed=3, strict=True)


@pytest.mark.parametrize("fn", [near_identity, reflection, block_diagonal])
def test_orthogonal_matrices_that_do_not_spread_fail_only_the_hidden_check(fn):
    checks.check_random_rotation(fn)
    with pytest.raises(CheckFailed, match="mean square of an entry|permutation matrix"):
        checks.check_random_rotation(fn, sizes=(2, 7, 64), seed=3, strict=True)


def test_permutation_says_why_it_is_not_a_random_rotation():
    with pytest.raises(CheckFailed, match="permutation matrix. It is orthogonal") as err:
        checks.check_random_rotation(lambda c: torch.eye(c)[torch.randperm(c)])
    assert "torch.linalg.qr" in cause_of(err)


def test_a_seeded_generator_is_told_apart_from_a_reseed():
    with pytest.raises(CheckFailed, match="same matrix") as err:
        checks.check_random_rotation(lambda c: torch.linalg.qr(torch.randn(c, c, generator=torch.Generator().manual_seed(0)))[0])
    assert "manual_seed (it resets" not in cause_of(err) and "global random state" in cause_of(err)


def test_the_reference_and_a_wrapper_of_it_pass_the_hidden_check():
    # The reference is a correct answer: the checks pass it (the grader flags it for the instructor).
    checks.check_random_rotation(flows.random_rotation, strict=True)
    g = {"glowcourse": glowcourse}
    exec("def wrapped(c):\n    return glowcourse.random_rotation(c)", g)
    checks.check_random_rotation(g["wrapped"], strict=True)


# --- the dense and LU layers -------------------------------------------------------------------


class Dense(nn.Module):
    def __init__(self, num_channels):
        super().__init__()
        self.weight = nn.Parameter(haar(num_channels))

    def calc_weight(self):
        return self.weight

    def forward(self, x):
        h, w = x.shape[2:]
        return F.conv2d(x, self.weight[:, :, None, None]), (h * w * torch.linalg.slogdet(self.weight)[1]).expand(x.shape[0])

    def inverse(self, y):
        h, w = y.shape[2:]
        return F.conv2d(y, torch.linalg.inv(self.weight)[:, :, None, None]), (-h * w * torch.linalg.slogdet(self.weight)[1]).expand(y.shape[0])


class DenseCachedInverse(Dense):
    """Computes W^-1 on the first inverse call and keeps it: stale once training moves W."""

    def inverse(self, y):
        if not hasattr(self, "_w_inv"):
            self._w_inv = torch.linalg.inv(self.weight.detach())
        h, w = y.shape[2:]
        return F.conv2d(y, self._w_inv.to(y.dtype)[:, :, None, None]), (-h * w * torch.linalg.slogdet(self.weight)[1]).expand(y.shape[0])


class LU(nn.Module):
    persistent = True

    def __init__(self, num_channels, weight=None):
        super().__init__()
        w = haar(num_channels) if weight is None else weight.clone()
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("p", p, persistent=self.persistent)
        self.register_buffer("sign_s", torch.sign(s), persistent=self.persistent)
        self.register_buffer("l_mask", torch.tril(torch.ones_like(w), -1))
        self.register_buffer("eye", torch.eye(num_channels, dtype=w.dtype))
        self.w_l = nn.Parameter(lower)
        self.w_u = nn.Parameter(torch.triu(upper, 1))
        self._init_scale(s)

    def _init_scale(self, s):
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def diag(self):
        return self.sign_s * torch.exp(self.log_s)

    def log_abs_s(self):
        return self.log_s

    def calc_weight(self):
        return self.p @ (self.w_l * self.l_mask + self.eye) @ (self.w_u * self.l_mask.T + torch.diag(self.diag()))

    def forward(self, x):
        h, w = x.shape[2:]
        return F.conv2d(x, self.calc_weight()[:, :, None, None]), (h * w * self.log_abs_s().sum()).expand(x.shape[0])

    def inverse(self, y):
        h, w = y.shape[2:]
        return F.conv2d(y, torch.linalg.inv(self.calc_weight())[:, :, None, None]), (-h * w * self.log_abs_s().sum()).expand(y.shape[0])


class LUNonPersistent(LU):
    """P and sign(s) buffers left out of the state_dict: a reloaded layer keeps its own P."""

    persistent = False


class LULearnsS(LU):
    """Learns s itself: a correct flow at every point, but s can cross 0, and det W with it."""

    def _init_scale(self, s):
        self.s = nn.Parameter(s.clone())

    def diag(self):
        return self.s

    def log_abs_s(self):
        return torch.log(self.s.abs())


def test_correct_layers_pass_visible_and_hidden():
    checks.check_invconv_dense(Dense)
    checks.check_invconv_dense(Dense, channels=5, batch=3, hw=(3, 2), seed=4, strict=True)
    checks.check_invconv_lu(LU)
    checks.check_invconv_lu(LU, channels=6, batch=3, hw=(3, 2), seed=7, strict=True)
    checks.check_invconv_lu_training(LU, channels=8, steps=10, seed=9, strict=True)


def test_a_cached_inverse_fails_only_the_hidden_check():
    checks.check_invconv_dense(DenseCachedInverse)
    with pytest.raises(CheckFailed, match="earlier call"):
        checks.check_invconv_dense(DenseCachedInverse, channels=5, batch=3, hw=(3, 2), seed=4, strict=True)


def test_buffers_left_out_of_the_state_dict_fail_only_the_hidden_check():
    checks.check_invconv_lu(LUNonPersistent)
    with pytest.raises(CheckFailed, match="state_dict"):
        checks.check_invconv_lu(LUNonPersistent, channels=6, batch=3, hw=(3, 2), seed=7, strict=True)


def test_a_learned_s_that_crosses_zero_fails_only_the_hidden_check():
    checks.check_invconv_lu(LULearnsS)
    checks.check_invconv_lu_training(LULearnsS)
    with pytest.raises(CheckFailed, match="changed sign"):
        checks.check_invconv_lu_training(LULearnsS, channels=8, steps=10, seed=9, strict=True)


def test_reference_layers_subclasses_and_wrappers_pass_the_hidden_checks():
    # The reference is a correct answer: the checks pass it (the grader flags it for the instructor).
    checks.check_invconv_dense(flows.InvConv2d, strict=True)
    checks.check_invconv_lu(flows.InvConv2dLU, strict=True)
    checks.check_invconv_lu_training(flows.InvConv2dLU, strict=True)

    class Sub(flows.InvConv2dLU):
        pass

    checks.check_invconv_lu(Sub, strict=True)

    class Wrapper(nn.Module):
        def __init__(self, num_channels, weight=None):
            super().__init__()
            self.inner = flows.InvConv2dLU(num_channels, weight)

        def calc_weight(self):
            return self.inner.calc_weight()

        def forward(self, x):
            return self.inner(x)

        def inverse(self, y):
            return self.inner.inverse(y)

    checks.check_invconv_lu(Wrapper, strict=True)


def test_lu_diagnoses_name_the_cause():
    class PlainAttributes(LU):
        def __init__(self, num_channels, weight=None):
            super().__init__(num_channels, weight)
            p = self.p
            del self._buffers["p"]
            self.p = p

    with pytest.raises(CheckFailed, match="plain tensor attribute") as err:
        checks.check_invconv_lu(PlainAttributes)
    assert "register_buffer" in cause_of(err)

    class NoMasks(LU):
        def calc_weight(self):
            return self.p @ self.w_l @ (self.w_u + torch.diag(self.diag()))  # right at init, not once trained

    with pytest.raises(CheckFailed) as err:
        checks.check_invconv_lu(NoMasks)
    assert "mask is missing" in cause_of(err)


# --- ZeroConv2d ---------------------------------------------------------------------------------


ZeroConv = flows.ZeroConv2d  # the base of the variants below


class ZeroConvDetachedScale(ZeroConv):
    def forward(self, x):
        return self.conv(x) * torch.exp(3 * self.scale.detach())


def test_zero_conv_scale_without_gradient_fails_only_the_hidden_check():
    checks.check_zero_conv(ZeroConv)
    checks.check_zero_conv(ZeroConv, in_channels=2, out_channels=6, hw=(3, 4), seed=1, strict=True)
    checks.check_zero_conv(ZeroConvDetachedScale)
    with pytest.raises(CheckFailed, match="gradient with respect to the scale"):
        checks.check_zero_conv(ZeroConvDetachedScale, in_channels=2, out_channels=6, hw=(3, 4), seed=1, strict=True)


def test_zero_conv_scale_vector_is_caught_even_where_it_would_broadcast():
    class Vector(ZeroConv):
        def __init__(self, in_channels, out_channels):
            super().__init__(in_channels, out_channels)
            self.scale = nn.Parameter(torch.zeros(out_channels))

    with pytest.raises(CheckFailed, match=r"shape \(4,\)"):
        checks.check_zero_conv(Vector, hw=(5, 4))  # width 4 == out_channels: it would broadcast silently


# --- couplings ----------------------------------------------------------------------------------


def net(in_channels, hidden, out_channels):
    first, middle = nn.Conv2d(in_channels, hidden, 3, padding=1), nn.Conv2d(hidden, hidden, 1)
    return nn.Sequential(first, nn.ReLU(), middle, nn.ReLU(), ZeroConv(hidden, out_channels))


class Additive(nn.Module):
    sign = 1.0

    def __init__(self, in_channels, hidden=512):
        super().__init__()
        self.net = net(in_channels // 2, hidden, in_channels - in_channels // 2)

    def forward(self, x):
        x_a, x_b = x.chunk(2, 1)
        return torch.cat([x_a, x_b + self.sign * self.net(x_a)], 1), x.new_zeros(x.shape[0])

    def inverse(self, y):
        y_a, y_b = y.chunk(2, 1)
        return torch.cat([y_a, y_b - self.sign * self.net(y_a)], 1), y.new_zeros(y.shape[0])


class AdditiveSubtracts(Additive):
    """y_b = x_b - NN(x_a): a valid flow, not the course's formula."""

    sign = -1.0


SIGMOID_2 = 1 / (1 + math.exp(-2))


class Affine(nn.Module):
    def __init__(self, in_channels, hidden=512):
        super().__init__()
        self.net = net(in_channels // 2, hidden, 2 * (in_channels - in_channels // 2))

    def scale_shift(self, x_a):
        h, t = self.net(x_a).chunk(2, 1)
        return torch.sigmoid(h + 2) / SIGMOID_2, t

    def forward(self, x):
        x_a, x_b = x.chunk(2, 1)
        s, t = self.scale_shift(x_a)
        return torch.cat([x_a, (x_b + t) * s], 1), torch.log(s).flatten(1).sum(1)

    def inverse(self, y):
        y_a, y_b = y.chunk(2, 1)
        s, t = self.scale_shift(y_a)
        return torch.cat([y_a, y_b / s - t], 1), -torch.log(s).flatten(1).sum(1)


class AffineReusesForward(Affine):
    """The inverse reuses s and t stored by the last forward call."""

    def forward(self, x):
        x_a, x_b = x.chunk(2, 1)
        self._s, self._t = self.scale_shift(x_a)
        return torch.cat([x_a, (x_b + self._t) * self._s], 1), torch.log(self._s).flatten(1).sum(1)

    def inverse(self, y):
        y_a, y_b = y.chunk(2, 1)
        return torch.cat([y_a, y_b / self._s - self._t], 1), -torch.log(self._s).flatten(1).sum(1)


def test_correct_couplings_pass_visible_and_hidden():
    checks.check_additive_coupling(Additive)
    checks.check_additive_coupling(Additive, channels=6, batch=3, hw=(3, 2), seed=2, strict=True)
    checks.check_affine_coupling(Affine)
    checks.check_affine_coupling(Affine, channels=6, batch=3, hw=(3, 2), seed=4, strict=True)
    checks.check_affine_coupling(Affine, channels=2, batch=1, hw=(1, 1), seed=5, dtype=torch.float32, strict=True)


def test_additive_formula_is_a_hidden_property():
    checks.check_additive_coupling(AdditiveSubtracts)
    with pytest.raises(CheckFailed, match=r"x_b \+ NN\(x_a\)") as err:
        checks.check_additive_coupling(AdditiveSubtracts, channels=6, batch=3, hw=(3, 2), seed=2, strict=True)
    assert "subtracts" in cause_of(err)


def test_an_inverse_that_reuses_forward_values_is_named():
    with pytest.raises(CheckFailed) as err:
        checks.check_affine_coupling(AffineReusesForward)
    assert "reuses values stored by the last forward call" in cause_of(err)


class LazyCentre(nn.Module):
    """Data-dependent init (ActNorm-style) kept in a plain attribute, not in the state_dict."""

    def forward(self, x):
        if not hasattr(self, "_mean"):
            self._mean = x.detach().mean()
        return x - self._mean


class AffineLazyNet(Affine):
    """The network is fixed by its first call, whichever it is, and a reloaded layer forgets it:
    an inverse run first (sampling from a reloaded model) computes another map."""

    def __init__(self, in_channels, hidden=512):
        super().__init__(in_channels, hidden)
        self.net = nn.Sequential(LazyCentre(), self.net)


def test_an_inverse_that_needs_a_forward_first_fails_only_the_hidden_check():
    checks.check_affine_coupling(AffineLazyNet)
    with pytest.raises(CheckFailed, match="has not run forward does not invert"):
        checks.check_affine_coupling(AffineLazyNet, channels=6, batch=3, hw=(3, 2), seed=4, strict=True)


def test_reference_couplings_pass_the_hidden_checks():
    # The reference is a correct answer: the checks pass it (the grader flags it for the instructor).
    checks.check_zero_conv(flows.ZeroConv2d, strict=True)
    checks.check_additive_coupling(flows.AdditiveCoupling, strict=True)
    checks.check_affine_coupling(flows.AffineCoupling, strict=True)

    class Delegates(Affine):
        _scale_shift = flows.AffineCoupling._scale_shift

        def forward(self, x):
            return flows.AffineCoupling.forward(self, x)

    checks.check_affine_coupling(Delegates, strict=True)


@pytest.mark.parametrize("scale, cause", [
    ("torch.exp(h)", "exp(h)"),
    ("torch.sigmoid(h + 2)", "divide by sigmoid(2)"),
])
def test_affine_scale_mistakes_name_the_formula(scale, cause):
    class Wrong(Affine):
        def scale_shift(self, x_a):
            h, t = self.net(x_a).chunk(2, 1)
            return eval(scale), t

    with pytest.raises(CheckFailed) as err:
        checks.check_affine_coupling(Wrong)
    assert cause in cause_of(err)


def test_a_log_det_that_sums_s_is_told_so_not_to_zero_initialise():
    class SumsS(Affine):
        def forward(self, x):
            y, _ = super().forward(x)
            s, _ = self.scale_shift(x.chunk(2, 1)[0])
            return y, s.flatten(1).sum(1)

    with pytest.raises(CheckFailed) as err:
        checks.check_affine_coupling(SumsS)
    assert "sums s itself" in cause_of(err) and "ZeroConv2d" not in cause_of(err)
