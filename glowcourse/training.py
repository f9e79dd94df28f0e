"""The fast path of a Glow's training step: the same model, computed faster.

The notebooks train the plain model, ``model(x)[1]`` (``log p(x)``), because it is the one to
read. :func:`fast_log_prob` returns a function that computes the same ``log p(x)`` for the same
model and parameters, with the choices a practitioner makes for speed:

- ``torch.compile`` (on by default): the whole forward pass, and through AOTAutograd its backward,
  becomes one graph with fused element-wise kernels. A Glow is many small operations (every flow
  step is an ActNorm, a 1x1 convolution, a coupling and their log-dets), so on a GPU the time
  goes into launching kernels, which fusion and ``mode="reduce-overhead"`` (CUDA graphs) remove.
  The first call compiles (tens of seconds to minutes); later calls reuse the compiled code.
- ``channels_last``: the convolutions' inputs and weights in NHWC layout, which cuDNN and
  oneDNN prefer for convolutions.
- ``autocast``: the convolutions in ``bfloat16`` (or ``float16``), everything that enters a
  log-determinant or a log-density in ``float32``: the coupling computes its scale and
  ``log s`` in the input's precision (``glowcourse.flows.AffineCoupling``), ActNorm and the LU
  convolution take their log-dets from float32 parameters, and the result is returned in float32.

What the model computes does not change: the fast path is an option of the same code, and its
``log p(x)`` equals the plain one's to float32 rounding (without autocast; the tests compare
them, and their gradients). Each LU 1x1 convolution builds its weight ``W = P L (U + diag(s))``
once per call, that is once per training step.

Requirements: every ActNorm must be initialised (run the model once on a batch first): the
data-dependent initialisation is a Python ``if`` that a compiled graph does not contain.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .flows import ActNorm

__all__ = ["fast_log_prob"]


def fast_log_prob(model: nn.Module, *, compile: bool = True, channels_last: bool = False,
                  autocast: torch.dtype | None = None, mode: str | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> log p(x)`` per sample for a Glow whose ``forward`` returns ``(zs, log_prob)``.

    ``compile``: ``torch.compile`` the forward (and so its backward); ``mode`` is passed on
    (``"reduce-overhead"`` adds CUDA graphs on a GPU). ``channels_last``: converts the model's
    4-D parameters once, and each input. ``autocast``: a dtype for ``torch.autocast`` on the
    model's device (``torch.bfloat16`` on a GPU); ``None`` keeps full precision.
    Raises ``RuntimeError`` if an ActNorm has not been initialised.
    """
    pending = [name for name, m in model.named_modules() if isinstance(m, ActNorm) and not bool(m.initialized)]
    if pending:
        raise RuntimeError(f"{len(pending)} ActNorm layers are not initialised yet (the first is {pending[0]!r}): "
                           "run the model once on a batch (under torch.no_grad()) before fast_log_prob")
    device_type = next(model.parameters()).device.type
    if channels_last:
        model.to(memory_format=torch.channels_last)

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if autocast is None:
            return model(x)[1]
        with torch.autocast(device_type, dtype=autocast):
            return model(x)[1].float()

    return torch.compile(log_prob, mode=mode) if compile else log_prob
