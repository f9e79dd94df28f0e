"""The shared package: data, densities, the ground-truth log-det, plots."""
import math

import matplotlib
import numpy as np
import pytest
import torch

import glowcourse
from glowcourse import bits_per_dim, dequantize, jacobian_logdet, standard_normal_log_prob

matplotlib.use("Agg")


def test_public_api_is_importable():
    for name in glowcourse.__all__:
        assert hasattr(glowcourse, name), name


@pytest.mark.parametrize(
    "loader, n, n_test, hw, n_bins",
    [(glowcourse.load_digits, 1797, 297, 8, 17), (glowcourse.load_mnist_subset, 5000, 1000, 28, 256)],
)
def test_embedded_data(loader, n, n_test, hw, n_bins):
    train, test, full = loader("train"), loader("test"), loader("all")
    assert len(train) + len(test) == len(full) == n and len(test) == n_test
    for d in (train, test):
        assert d.images.dtype == torch.uint8 and d.images.shape[1:] == (1, hw, hw)
        assert d.labels.dtype == torch.int64 and set(d.labels.unique().tolist()) == set(range(10))
        assert d.n_bins == n_bins and int(d.images.max()) == n_bins - 1 and d.n_dims == hw * hw
    # The split is a fixed partition: same every call, train and test disjoint, together everything.
    assert torch.equal(loader("test").images, test.images)
    rows = lambda d: {bytes(x.numpy()) + bytes([int(y)]) for x, y in zip(d.images, d.labels)}  # noqa: E731
    assert rows(train) | rows(test) == rows(full)
    with pytest.raises(ValueError, match="split"):
        loader("validation")


def test_load_mnist_falls_back_to_the_subset_without_torchvision_or_network(capsys):
    data = glowcourse.load_mnist("test", download=False)
    assert data.images.shape[1:] == (1, 28, 28) and data.n_bins == 256
    if data.name.startswith("mnist5k"):
        assert "embedded" in capsys.readouterr().out


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_dequantize_fills_each_bin_uniformly(dtype):
    torch.manual_seed(0)
    x = torch.randint(0, 17, (20000,)).to(dtype)
    y = dequantize(x, 17)
    frac = y.double() * 17 - x.double()
    assert y.dtype == torch.float32 and (y >= 0).all() and (y < 1).all()
    assert (frac >= -1e-5).all() and (frac < 1 + 1e-5).all()
    assert abs(frac.mean().item() - 0.5) < 0.01 and abs(frac.std().item() - 1 / math.sqrt(12)) < 0.01


def test_bits_per_dim_anchors():
    # A uniform density on [0,1)^D costs exactly log2(n_bins) bits per dimension.
    assert torch.allclose(bits_per_dim(torch.zeros(3), 64, 256), torch.full((3,), 8.0))
    # One nat of extra log-likelihood per dimension saves 1/ln 2 bits per dimension.
    lp = torch.tensor([64.0], dtype=torch.float64)
    assert torch.allclose(bits_per_dim(lp, 64, 17), torch.tensor([math.log2(17) - 1 / math.log(2)], dtype=torch.float64))


def test_standard_normal_log_prob_matches_torch():
    z = torch.randn(5, 2, 3, dtype=torch.float64)
    want = torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1)
    assert torch.allclose(standard_normal_log_prob(z), want, atol=1e-12)


@pytest.mark.parametrize("shape", [(4,), (2, 3, 3), (3, 2, 2)])
def test_jacobian_logdet_equals_slogdet_of_a_linear_map(shape):
    torch.manual_seed(1)
    d = int(np.prod(shape))
    a = torch.randn(d, d, dtype=torch.float64)
    f = lambda v: (v.flatten(1) @ a.T).reshape(v.shape)  # noqa: E731
    x = torch.randn(3, *shape, dtype=torch.float64)
    want = torch.linalg.slogdet(a).logabsdet.expand(3)
    assert torch.allclose(jacobian_logdet(f, x), want, atol=1e-10)


def test_jacobian_logdet_is_per_sample_and_accepts_layers():
    x = torch.randn(4, 3, dtype=torch.float64)
    layer = lambda v: (torch.sinh(v), None)  # noqa: E731  # a layer returns (y, logdet)
    want = torch.log(torch.cosh(x)).sum(1)
    assert torch.allclose(jacobian_logdet(layer, x), want, atol=1e-10)
    with pytest.raises(ValueError, match="bijection"):
        jacobian_logdet(lambda v: v[:, :2], x)


def test_plots_draw():
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2)
    xx, yy, p = glowcourse.density_grid(lambda pts: standard_normal_log_prob(pts), n=50)
    assert p.shape == (50, 50) and abs(p.sum() * (8 / 49) ** 2 - 1) < 0.01  # integrates to ~1
    glowcourse.plot_density_2d(lambda pts: standard_normal_log_prob(pts), a, n=20)
    glowcourse.show_images(glowcourse.load_digits("test").images[:10], b, nrow=5)
    assert len(b.images) == 1 and b.images[0].get_array().shape == (2 * 9 + 1, 5 * 9 + 1)
    plt.close(fig)


def test_is_grading_follows_nbgrader(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert not glowcourse.is_grading()
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert glowcourse.is_grading()
