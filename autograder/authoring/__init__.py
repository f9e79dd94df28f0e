"""Changing the course: ``release.py`` (course/ from solutions/), ``notebooks.py`` (run the
solutions, tidy their metadata), ``book.py`` (the self-learners' site) and ``selfcheck.py``
(solutions full marks, releases zero, through the real grader)."""
