"""Glow from scratch: the helpers that notebooks, tests and the grader share.

- ``glowcourse.data``: the embedded digits and MNIST subset, full MNIST where torchvision can
  download it, and dequantization;
- ``glowcourse.density``: the standard normal, bits/dim, and the brute-force log|det J| that
  every check uses as ground truth;
- ``glowcourse.flows``: reference implementations of Glow's layers (ActNorm, 1x1 conv dense
  and LU), which later notebooks build on;
- ``glowcourse.training``: the fast path, ``fast_log_prob``: the same model, compiled;
- ``glowcourse.checks``: the check functions the notebooks' test cells call;
- ``glowcourse.plotting``: density and image-grid plots;
- ``glowcourse.runtime``: seeds, and whether nbgrader is grading (or the tests run a notebook short);
- ``glowcourse.hints``: in a notebook, a ``NameError`` says which cell to run (registered on import).
"""
from .data import ImageData, dequantize, load_digits, load_mnist, load_mnist_subset
from .flows import ActNorm, InvConv2d, InvConv2dLU, random_rotation
from .density import bits_per_dim, jacobian_logdet, standard_normal_log_prob
from .plotting import density_grid, plot_density_2d, show_images
from .runtime import is_grading, is_short_run, seed_everything
from . import hints

hints.install()

__version__ = "0.1.0"

__all__ = [
    "ImageData",
    "load_digits",
    "load_mnist",
    "load_mnist_subset",
    "dequantize",
    "standard_normal_log_prob",
    "jacobian_logdet",
    "bits_per_dim",
    "ActNorm",
    "InvConv2d",
    "InvConv2dLU",
    "random_rotation",
    "density_grid",
    "plot_density_2d",
    "show_images",
    "seed_everything",
    "is_grading",
    "is_short_run",
]
