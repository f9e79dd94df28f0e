"""Plot helpers the notebooks share: densities on a grid and grids of images.

They take a log-density *function* (a batch of points -> log p per point), so the same helper
draws a closed-form density, a flow's density, or a histogram's comparison.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

__all__ = ["density_grid", "plot_density_2d", "show_images", "plot_squeeze", "plot_multiscale"]


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


def plot_squeeze(squeeze: Callable[[torch.Tensor], torch.Tensor], axes, size: int = 4):
    """Draw what ``squeeze`` does to one ``size x size`` channel: the image with its pixels
    numbered and each 2x2 block in its own colour, then the ``4`` output channels of
    ``size/2 x size/2`` pixels, each pixel numbered and coloured as the input pixel it holds.
    ``axes``: ``1 + 4`` matplotlib axes."""
    x = torch.arange(size * size, dtype=torch.float64).reshape(1, 1, size, size)
    y = squeeze(x)[0]  # (4, size/2, size/2)
    block = (torch.arange(size)[:, None] // 2) * (size // 2) + torch.arange(size)[None, :] // 2
    colours = block.flatten().double() / max(1, int(block.max()))  # pixel number -> its block's colour

    def panel(ax, values, title):
        values = values.long()
        ax.imshow(colours[values].numpy(), cmap="Pastel1", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(values.numpy()):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)

    panel(axes[0], x[0, 0], f"input: 1 x {size} x {size}")
    for c in range(4):
        panel(axes[1 + c], y[c], f"output channel {c}")
    return axes


def plot_multiscale(ax, in_channels: int = 1, image_size: int = 8, L: int = 3, K: int = 8):
    """Draw Glow's multi-scale architecture (figure 2b of the paper) for an input of shape
    ``(in_channels, image_size, image_size)`` and ``L`` levels: each level squeezes, runs ``K``
    flow steps and (but the last) splits half of the channels off as a latent, with the shapes
    along the way."""
    c, s = in_channels, image_size
    boxes = [(f"x\n{c}x{s}x{s}", "white")]
    latents = []
    for level in range(L):
        c, s = 4 * c, s // 2
        boxes.append((f"squeeze\n{c}x{s}x{s}", "#dde8f7"))
        boxes.append((f"{K} flow steps\n{c}x{s}x{s}", "#cfe8cf"))
        if level < L - 1:
            c //= 2
            boxes.append((f"split\nkeep {c}x{s}x{s}", "#f7e3c9"))
            latents.append((len(boxes) - 1, f"z{level + 1}\n{c}x{s}x{s}"))
    latents.append((len(boxes) - 1, f"z{L} (top)\n{c}x{s}x{s}"))
    for i, (text, colour) in enumerate(boxes):
        ax.text(i, 0, text, ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round", facecolor=colour, edgecolor="grey"))
        if i:
            ax.annotate("", xy=(i - 0.42, 0), xytext=(i - 0.58, 0), arrowprops=dict(arrowstyle="->"))
    for i, text in latents:
        ax.annotate("", xy=(i, -0.62), xytext=(i, -0.22), arrowprops=dict(arrowstyle="->", color="C3"))
        ax.text(i, -0.85, text, ha="center", va="center", fontsize=8, color="C3",
                bbox=dict(boxstyle="round", facecolor="#fbe5e5", edgecolor="C3"))
    ax.set_xlim(-0.6, len(boxes) - 0.4)
    ax.set_ylim(-1.1, 0.3)
    ax.axis("off")
    return ax
