"""Instructor tools for *Glow from scratch*: ``python -m autograder <command>`` from the repo root.

Commands: ``release``, ``grade``, ``merge``, ``selfcheck``, ``hostile``, ``demo``, ``execute``,
``report``, ``book`` (see ``python -m autograder -h``). The package, by audience:

- ``grading/``: grading a class (an instructor): find and repair submissions, run them through
  nbgrader in the sandbox with tamper probes, write ``grades.csv`` and feedback;
- ``authoring/``: changing the course (its authors): release, execute solutions, the book,
  ``selfcheck``;
- ``catalogues/``: what the checks and the grader are tested against: sample submissions,
  typical mistakes and correct variants, the hostile catalogue, the report;
- shared: ``course.py`` (where things are, an nbgrader API pointed at them) and ``cells.py``
  (nbgrader's cell conventions: solution, test and locked cells, the markers in them).
"""
