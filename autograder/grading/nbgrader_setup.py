"""nbgrader as the grader runs it: its autograde and feedback steps, with the course's additions.

``grading_api`` is ``course.nbgrader_api`` (``nbgrader_config.py``, folders overridden) with:

- autograde's steps as nbgrader's, ``Execute`` replaced by ``GuardedExecute`` (``execute.py``:
  the kernel in the sandbox, under the run's limits, with tamper probes);
- feedback's steps as nbgrader's, with ``ScrubHiddenTracebacks`` (``feedback.py``) and
  ``ClearHiddenTests`` added, so the hidden tests stay out of the HTML: their code, and the
  lines that tracebacks quote from them; and with ``NameTestCells`` and the course's template
  (nbgrader's feedback page, ``feedback.TEMPLATES``), whose summary names each check's exercise
  and says where hidden checks' details are withheld.
"""
from __future__ import annotations

from pathlib import Path

import nbgrader
from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, ClearHiddenTests, GetGrades, IgnorePattern,
                                    LimitOutput, SaveAutoGrades)
from traitlets.config import Config

from .. import course
from .execute import GuardedExecute
from .feedback import TEMPLATES, CourseFeedbackExporter, NameTestCells, ScrubHiddenTracebacks
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
        NameTestCells,
        ScrubHiddenTracebacks,
        ClearHiddenTests,
        CSSHTMLHeaderPreprocessor,
    ]
    # The course's feedback page extends nbgrader's: nbgrader's templates must stay findable.
    config.GenerateFeedback.exporter_class = CourseFeedbackExporter
    config.CourseFeedbackExporter.template_name = "course_feedback"
    config.CourseFeedbackExporter.template_file = "course_feedback.html.j2"
    config.CourseFeedbackExporter.extra_template_basedirs = [
        str(TEMPLATES), str(Path(nbgrader.__file__).parent / "server_extensions" / "formgrader" / "templates")]
    return config


def grading_api(work: Path, feedback: Path, limits: Limits):
    """An ``NbGraderAPI`` that grades in ``work`` (release, submitted, autograded, gradebook.db)
    and writes feedback into ``feedback``."""
    return course.nbgrader_api(release=work / "release", submitted=work / "submitted", autograded=work / "autograded",
                               feedback=feedback, db=work / "gradebook.db", config=grading_config(limits))
