"""What the checks and the grader are tested against.

- ``samples.py``: sample submissions built from the course (filled, blank, with a catalogued
  mistake or variant; the demo class); ``mistakes/`` and ``variants/`` hold the catalogues;
- ``harness.py``: a notebook's exercises and checks run in-process, without nbgrader;
- ``report.py``: per exercise, the mistakes caught and the variants accepted;
- ``hostile.py``: mangled, broken and hostile submissions, each with the row it must get.
"""
