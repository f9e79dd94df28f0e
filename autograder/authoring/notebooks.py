"""Run solution notebooks with nbclient and keep them reviewable.

Outputs stay (self-learners read them); what changes on every run and says nothing
(execution timestamps, widget state, editor metadata) goes.
"""
from __future__ import annotations

import os
from pathlib import Path

# nbformat and nbclient are imported where they are used: the command line reads
# SOLUTION_CELL_TIMEOUT to build its --help, which should not wait for them.

CELL_METADATA_KEEP = ("nbgrader", "tags", "deletable", "editable")
SOLUTION_CELL_TIMEOUT = 600  # seconds per cell of a solution notebook, whose training cells run in full


def tidy(notebook) -> None:
    """Drop volatile metadata in place: per-cell execution times, Colab/VS Code extras."""
    notebook.metadata = {k: v for k, v in notebook.metadata.items() if k in ("kernelspec", "language_info")}
    if "language_info" in notebook.metadata:
        notebook.metadata["language_info"] = {"name": notebook.metadata["language_info"].get("name", "python")}
    for cell in notebook.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in CELL_METADATA_KEEP}


def execute(path: Path, *, timeout: int = SOLUTION_CELL_TIMEOUT, env: dict | None = None):
    """Execute ``path`` in its own folder with a fresh kernel; return the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        NotebookClient(notebook, kernel_name="python3", timeout=timeout,
                       extra_arguments=["--IPKernelApp.log_level=ERROR"],
                       resources={"metadata": {"path": str(Path(path).parent)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return notebook


def execute_solution(path: Path, *, timeout: int = SOLUTION_CELL_TIMEOUT) -> None:
    """Execute a solution notebook in place, outputs kept, metadata tidied."""
    import nbformat

    env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    os.environ.pop("NBGRADER_EXECUTION", None)  # the full run, training included
    notebook = execute(path, timeout=timeout, env=env)
    tidy(notebook)
    nbformat.write(notebook, path)
