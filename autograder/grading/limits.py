"""The limits student code runs under while it is graded: one object, one name and one default each.

``python -m autograder grade`` builds a :class:`Limits` from its flags (``--timeout``,
``--notebook-timeout``, ``--memory-mb``, ``--workers``, ``--no-sandbox``); the grading run hands
it to nbgrader's execution (the per-cell timeout) and to the sandboxed kernel (the rest).
``nbgrader_config.py`` reads the per-cell default from here, so plain ``nbgrader autograde``
and ``python -m autograder grade`` agree. The object is frozen: a different limit is a new
object (``dataclasses.replace``), never a change to someone else's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """How student code is run (see ``sandbox.py``): per cell, per notebook, per grading run."""

    sandbox: bool = True          # run each kernel in bubblewrap (False: as the grading user)
    cell_timeout: int = 60        # seconds per cell; a cell that needs a minute is an infinite loop
    notebook_timeout: int = 300   # wall-clock seconds per notebook: the kernel is killed after
    memory_mb: int = 6144         # address space of a kernel (MiB); torch alone maps about 1.5 GB
    cpu_s: int = 600              # CPU seconds of a kernel
    processes: int = 128          # processes and threads of a kernel (one kernel runs about 10)
    workers: int = 1              # submissions graded at once, each in its own process
    threads: int = 0              # torch/OpenMP threads per kernel; 0: the cores shared among the workers
    warm: bool = True             # fork sandboxed kernels from a warm template (warm.py); False: start each afresh

    def __post_init__(self):
        if self.workers < 1:  # `--workers 0` grades one at a time, as it always has
            object.__setattr__(self, "workers", 1)

    def kernel_threads(self) -> int:
        """torch/OpenMP threads of one kernel: ``threads``, or the machine's cores divided among the workers."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.workers)
