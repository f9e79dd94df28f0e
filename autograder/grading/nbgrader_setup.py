"""nbgrader as the grader runs it: its autograde and feedback steps, with the course's additions.

``grading_api`` is ``course.nbgrader_api`` (``nbgrader_config.py``, folders overridden) with:

- autograde's steps as nbgrader's, ``Execute`` replaced by ``GuardedExecute`` (``execute.py``:
  the kernel in the sandbox, under the run's limits, with tamper probes);
- feedback's steps as nbgrader's, with ``ScrubHiddenTracebacks`` (``feedback.py``) and
  ``ClearHiddenTests`` added, so the hidden tests stay out of the HTML: their code, and the
  lines that tracebacks quote from them.
"""
from __future__ import annotations

from pathlib import Path

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, ClearHiddenTests, GetGrades, IgnorePattern,
                                    LimitOutput, SaveAutoGrades)
from traitlets.config import Config

from .. import course
from .execute import GuardedExecute
from .feedback import ScrubHiddenTracebacks
from .limits import Limits

__all__ = ["grading_config", "grading_api"]


def grading_config(limits: Limits) -> Config:
    """The configuration grading adds to ``nbgrader_config.py``."""
    config = Config()
    config.Execute.timeout = limits.cell_timeout
    config.Autograde.autograde_preprocessors = [
        GuardedExecute,
        IgnorePattern,
        ClearMetadataPreprocessor,
        LimitOutput,
        SaveAutoGrades,
        AssignLatePenalties,
        CheckCellMetadata,
    ]
    config.SandboxKernelManager.limits = limits
    config.GuardedExecute.shutdown_kernel = "immediate"  # the notebook is done: no need to wait for a clean exit
    config.GenerateFeedback.preprocessors = [
        GetGrades,
        ScrubHiddenTracebacks,
        ClearHiddenTests,
        CSSHTMLHeaderPreprocessor,
    ]
    return config


def grading_api(work: Path, feedback: Path, limits: Limits):
    """An ``NbGraderAPI`` that grades in ``work`` (release, submitted, autograded, gradebook.db)
    and writes feedback into ``feedback``."""
    return course.nbgrader_api(release=work / "release", submitted=work / "submitted", autograded=work / "autograded",
                               feedback=feedback, db=work / "gradebook.db", config=grading_config(limits))
