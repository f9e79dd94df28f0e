"""Grading a class: submissions in, ``grades.csv`` and feedback out (``python -m autograder grade``).

- ``limits.py``: the limits student code runs under (one frozen object, every default);
- ``collect.py``: find the submissions in a folder or an LMS zip;
- ``repair.py``: rebuild a mangled notebook on the released one;
- ``nbgrader_setup.py``: nbgrader's autograde and feedback steps with the course's additions;
- ``execute.py``: ``GuardedExecute``, the sandboxed, tamper-probed execution;
- ``sandbox.py``: the bubblewrap kernel; ``probe.py``: the code the probes run in it;
- ``feedback.py``: the hidden tests kept out of the feedback's tracebacks;
- ``grader.py``: one submission in, one row out;
- ``run.py``: ``grade``, the whole run (shards, workers); ``results.py``: rows, ``grades.csv``;
  ``shards.py``: a class split over machines, and the merge.
"""
