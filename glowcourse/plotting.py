"""Plot helpers the notebooks share: densities on a grid and grids of images.

They take a log-density *function* (a batch of points -> log p per point), so the same helper
draws a closed-form density, a flow's density, or a histogram's comparison.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

__all__ = ["density_grid", "plot_density_2d", "show_images"]


def density_grid(log_prob: Callable[[torch.Tensor], torch.Tensor], xlim=(-4, 4), ylim=(-4, 4), n: int = 120):
    """Evaluate ``exp(log_prob)`` on an ``n x n`` grid; returns ``(xx, yy, density)`` as NumPy arrays."""
    xs = torch.linspace(*xlim, n)  # the default dtype (float32), like the models it evaluates
    ys = torch.linspace(*ylim, n)
    xx, yy = torch.meshgrid(xs, ys, indexing="xy")
    with torch.no_grad():
        lp = log_prob(torch.stack([xx.flatten(), yy.flatten()], 1))
    return xx.numpy(), yy.numpy(), lp.exp().reshape(n, n).double().numpy()


def plot_density_2d(log_prob, ax, xlim=(-4, 4), ylim=(-4, 4), n: int = 120, title: str | None = None, cmap: str = "viridis"):
    """Draw a 2-D density as an image on ``ax``."""
    xx, yy, p = density_grid(log_prob, xlim, ylim, n)
    ax.pcolormesh(xx, yy, p, shading="auto", cmap=cmap)
    ax.set_aspect("equal")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    return ax


def show_images(images: torch.Tensor, ax, nrow: int = 8, title: str | None = None, pad: int = 1):
    """Tile a batch ``(N, 1, H, W)`` (values in [0, 1] or integer levels) into one grey image on ``ax``."""
    imgs = images.detach().float().cpu()
    if imgs.dim() == 3:
        imgs = imgs[:, None]
    if imgs.max() > 1:
        imgs = imgs / imgs.max()
    n, _, h, w = imgs.shape
    ncol = min(nrow, n)
    nrows = int(np.ceil(n / ncol))
    canvas = np.zeros((nrows * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncol)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = imgs[i, 0].clamp(0, 1).numpy()
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return ax
