"""Instructor tools for *Glow from scratch*: ``python -m autograder <command>`` from the repo root.

Commands: ``release``, ``grade``, ``selfcheck``, ``demo`` (see ``python -m autograder -h``).
"""
