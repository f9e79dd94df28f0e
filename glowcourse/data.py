"""Image data for the course, loaded with no network.

Two small data sets ship inside the package (see ``data/README.md`` for their sources and
licences): the 8x8 digits (17 grey levels) and a 5,000-image MNIST subset (256 levels).
Full MNIST comes from torchvision where it is installed and can download (Colab).

Every loader returns an :class:`ImageData`: uint8 images in NCHW layout, integer labels and
the number of grey levels ``n_bins``, which dequantization and bits/dim need
(``y = (x + u) / n_bins`` and ``bpd = (-log p(y) + D log n_bins) / (D ln 2)``, notebook 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

__all__ = ["ImageData", "load_digits", "load_mnist_subset", "load_mnist", "dequantize"]

SPLITS = ("train", "test", "all")


@dataclass(frozen=True)
class ImageData:
    """A labelled image set: ``images`` uint8 ``(N, 1, H, W)``, ``labels`` int64 ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor
    n_bins: int
    name: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def n_dims(self) -> int:
        """D, the number of dimensions of one image (C * H * W)."""
        return int(np.prod(self.images.shape[1:]))


def _load_npz(filename: str) -> tuple[np.ndarray, np.ndarray]:
    with resources.files("glowcourse").joinpath("data", filename).open("rb") as fh:
        with np.load(fh) as npz:
            return npz["images"], npz["labels"]


def _split(images: np.ndarray, labels: np.ndarray, split: str, n_test: int, name: str, n_bins: int) -> ImageData:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    # A fixed permutation: the same held-out images on every machine and every run.
    order = np.random.default_rng(0).permutation(len(images))
    idx = {"train": order[n_test:], "test": order[:n_test], "all": np.arange(len(images))}[split]
    return ImageData(
        images=torch.from_numpy(np.ascontiguousarray(images[idx][:, None])),
        labels=torch.from_numpy(labels[idx].astype(np.int64)),
        n_bins=n_bins,
        name=f"{name}/{split}",
    )


def load_digits(split: str = "train") -> ImageData:
    """The 1,797 8x8 digits, levels 0..16 (``n_bins = 17``); 297 held out as ``"test"``."""
    images, labels = _load_npz("digits.npz")
    return _split(images, labels, split, n_test=297, name="digits", n_bins=17)


def load_mnist_subset(split: str = "train") -> ImageData:
    """The embedded 5,000-image MNIST subset (28x28, ``n_bins = 256``); 1,000 held out as ``"test"``."""
    images, labels = _load_npz("mnist5k.npz")
    return _split(images, labels, split, n_test=1000, name="mnist5k", n_bins=256)


def load_mnist(split: str = "train", root: str = "~/.cache/glowcourse", download: bool = True) -> ImageData:
    """Full MNIST (60,000 / 10,000) through torchvision when it can; else the embedded subset.

    Falls back, with a printed note, when torchvision is missing or the download fails
    (no network), so a notebook using it runs everywhere.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    try:
        import os

        from torchvision.datasets import MNIST

        ds = MNIST(os.path.expanduser(root), train=(split == "train"), download=download)
        return ImageData(ds.data[:, None].contiguous(), ds.targets.long(), n_bins=256, name=f"mnist/{split}")
    except Exception as err:  # ImportError, URLError, RuntimeError("Dataset not found")...
        print(f"Full MNIST unavailable ({type(err).__name__}); using the embedded 5,000-image subset.")
        return load_mnist_subset(split)


def dequantize(x: torch.Tensor, n_bins: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantization, ``y = (x + u) / n_bins`` with ``u ~ U[0, 1)`` (Glow, section 5).

    ``x`` holds integer levels ``0 .. n_bins - 1``; ``y`` is float32 in ``[0, 1)``. A density
    on ``y`` lower-bounds the discrete log-likelihood of ``x`` (Theis et al., 2016).
    """
    x = x.to(torch.float32)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + u) / n_bins
