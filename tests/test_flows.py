"""The reference layers, tested the way zuko tests flows: parametrized over layers, float64,
the autograd Jacobian against the layer's log-det, inverses, save/load round trips."""
import io

import pytest
import torch

from glowcourse import ActNorm, InvConv2d, InvConv2dLU, jacobian_logdet, random_rotation
from glowcourse.flows import AdditiveCoupling, AffineCoupling, FlowStep, Glow, Permute, squeeze, unsqueeze

LAYERS = [ActNorm, InvConv2d, InvConv2dLU, AdditiveCoupling, AffineCoupling, FlowStep, Permute]


def make(cls, c=3, seed=0):
    torch.manual_seed(seed)
    layer = cls(c).double()
    x = 2 * torch.randn(4, c, 2, 3, dtype=torch.float64) + 1
    layer(x)  # ActNorm's data-dependent init
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return layer, x


@pytest.mark.parametrize("cls", LAYERS)
def test_logdet_equals_slogdet_of_the_autograd_jacobian(cls):
    layer, x = make(cls)
    y, logdet = layer(x)
    assert logdet.shape == (4,)
    torch.testing.assert_close(logdet, jacobian_logdet(layer, x), rtol=1e-9, atol=1e-9)
    x_back, logdet_inv = layer.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(logdet_inv, -logdet, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logdet_inv, jacobian_logdet(layer.inverse, y), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("cls", LAYERS)
def test_state_dict_round_trip(cls):
    layer, x = make(cls)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    fresh = cls(3).double()
    fresh.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    x2 = 5 * torch.randn(2, 3, 2, 3, dtype=torch.float64)  # other statistics: no re-init allowed
    for a, b in zip(layer(x2), fresh(x2)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("cls", [c for c in LAYERS if c is not Permute])
def test_gradients_reach_every_parameter(cls):
    layer, x = make(cls)
    y, logdet = layer(x)
    (y.square().mean() - logdet.mean()).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_lu_init_matches_its_dense_weight_and_fixed_parts_are_buffers():
    w = random_rotation(5).double()
    lu = InvConv2dLU(5, weight=w).double()
    torch.testing.assert_close(lu.calc_weight(), w, rtol=1e-12, atol=1e-12)
    assert {"p", "sign_s"} <= {k for k, _ in lu.named_buffers()}
    assert not {"p", "sign_s"} & {k for k, _ in lu.named_parameters()}
    q = random_rotation(64).double()
    torch.testing.assert_close(q @ q.T, torch.eye(64, dtype=torch.float64), rtol=0, atol=1e-6)


def test_squeeze_is_a_local_permutation_and_unsqueeze_its_inverse():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float64).reshape(2, 3, 4, 6)
    y = squeeze(x)
    assert y.shape == (2, 12, 2, 3)
    torch.testing.assert_close(y, torch.nn.functional.pixel_unshuffle(x, 2), rtol=0, atol=0)
    torch.testing.assert_close(unsqueeze(y), x, rtol=0, atol=0)


@pytest.mark.parametrize("conditional", [True, False])
@pytest.mark.parametrize("permutation, affine", [("lu", True), ("dense", False), ("reverse", True), ("shuffle", False)])
def test_glow_log_prob_is_the_change_of_variables_with_its_priors(conditional, permutation, affine):
    torch.manual_seed(0)
    model = Glow(1, K=2, L=2, hidden=8, image_size=4, affine=affine, permutation=permutation,
                 conditional_prior=conditional).double()
    x = 0.3 * torch.randn(3, 1, 4, 4, dtype=torch.float64)
    model(x)
    with torch.no_grad():
        for p in model.parameters():  # priors too: log p must use the conditional priors
            p.add_(0.1 * torch.randn_like(p))
    zs, log_prob = model(x)
    # Standardise every latent with its prior: then x -> eps is a flow onto N(0, I).
    def eps(v):
        zs = model(v)[0]
        # each split's prior conditions on the kept half, which the level above's inverse rebuilds
        cur = zs[-1]
        std = [(cur - model.prior_mean) / model.prior_log_sd.exp()]
        for i in reversed(range(len(model.splits))):
            for step in reversed(model.levels[i + 1]):
                cur, _ = step.inverse(cur)
            cur = unsqueeze(cur)
            mean, log_sd = model.splits[i].prior_params(cur)
            std.append((zs[i] - mean) / log_sd.exp())
            cur = model.splits[i].inverse(cur, zs[i])
        return torch.cat([s.flatten(1) for s in std], 1)

    from glowcourse import standard_normal_log_prob

    want = standard_normal_log_prob(eps(x)) + jacobian_logdet(eps, x)
    torch.testing.assert_close(log_prob, want, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(model.inverse(zs), x, rtol=1e-9, atol=1e-9)
