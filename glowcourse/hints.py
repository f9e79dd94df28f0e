"""What a student sees under a ``NameError``: the error, and which cell to run.

A check cell run before its exercise, or after a runtime restart, fails with a bare
``NameError: name 'ActNorm' is not defined``. Importing ``glowcourse`` in an IPython kernel
(the setup cell, the imports cell, the first line of every check cell) registers
``show_name_error`` for ``NameError`` with IPython's ``set_custom_exc``: it shows the usual
traceback, unchanged, as the same error output (nbgrader still scores the cell 0), with one
more entry, a hint that says only what is known:

- a name a course exercise defines: which exercise (its heading and ``grade_id``); the
  notebook is the one whose checks the cell calls, or, where the cell calls none, the hint
  is worded "if this is notebook N";
- any other name read by the cell itself (not inside a function it calls): run the cell above
  that defines it;
- a name missing inside a function (a typo in the student's own code, say): no hint.

Each hint ends with what to do after a runtime restart: run the notebook from the top. Other
exceptions, ``UnboundLocalError`` among them, are shown exactly as IPython shows them. The
grader's kernels import glowcourse before their shell exists; its tamper probe's snapshot, taken
before the first cell, calls ``install()`` (``autograder/grading/probe.py``).
"""
from __future__ import annotations

import inspect
import re
import sys
import types

__all__ = ["EXERCISES", "CHECK_MODULES", "name_error_hint", "show_name_error", "install"]

# notebook -> ((exercise grade_id, the heading above it, the names its cell defines), ...);
# tests/test_checks_nb12.py derives the same table from solutions/.
EXERCISES: dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    "01_change_of_variables": (
        ("affine_flow", "1.2 An elementwise affine flow", ("ElementwiseAffine",)),
        ("compose_flows", "1.3 Composing flows", ("Compose",)),
        ("brute_force_logdet", "1.4 The brute-force log-determinant", ("brute_force_logdet",)),
        ("flow_log_prob", "1.5 The log-likelihood of data under a flow", ("flow_log_prob",)),
        ("dequantize", "1.6 Dequantization and bits per dimension", ("dequantize",)),
        ("bits_per_dim", "1.6 Dequantization and bits per dimension", ("bits_per_dim",)),
    ),
    "02_actnorm": (
        ("actnorm", "2.2 The layer", ("ActNorm",)),
    ),
    "03_invertible_conv": (
        ("random_rotation", "3.1 Initialisation: a random rotation", ("random_rotation",)),
        ("invconv_dense", "3.2 The dense layer", ("InvConv2d",)),
        ("invconv_lu", "3.3 The LU layer", ("InvConv2dLU",)),
    ),
    "04_affine_coupling": (
        ("zero_conv", "4.1 Starting as the identity: the zero-initialised convolution", ("ZeroConv2d",)),
        ("additive_coupling", "4.2 Additive coupling", ("AdditiveCoupling",)),
        ("affine_coupling", "4.3 Affine coupling", ("AffineCoupling", "SIGMOID_2")),
    ),
    "05_multiscale": (
        ("squeeze", "5.1 Squeeze", ("squeeze", "unsqueeze")),
        ("split", "5.2 Split, with a learned prior", ("Split",)),
        ("flow_step", "5.3 The flow step", ("FlowStep",)),
        ("glow", "5.4 Glow", ("Glow",)),
    ),
    "06_glow_in_practice": (
        ("evaluate_bpd", "6.2 Measuring: bits per dimension on held-out data", ("evaluate_bpd",)),
        ("train_step", "6.3 Training", ("train_step",)),
        ("checkpoint", "6.3 Training", ("load_checkpoint", "save_checkpoint")),
        ("sample_images", "6.5 Samples at several temperatures", ("sample_images",)),
        ("interpolate", "6.6 Interpolating in the latent space", ("interpolate",)),
        ("manipulate", "6.7 Manipulating an attribute", ("class_direction", "manipulate")),
    ),
    "07_likelihood": (
        ("logit_transform", "7.1 The logit transform", ("logit_transform",)),
        ("pixel_space_bpd", "Which density is being reported?", ("pixel_space_bpd",)),
        ("variational_bpd", "7.2 Variational dequantization", ("variational_bpd",)),
        ("per_image_bpd", "7.3 What the likelihood says about other data", ("per_image_bpd",)),
    ),
}

# The module of glowcourse.checks that holds each notebook's checks.
CHECK_MODULES = {
    "change_of_variables": "01_change_of_variables",
    "actnorm": "02_actnorm",
    "invconv": "03_invertible_conv",
    "coupling": "04_affine_coupling",
    "multiscale": "05_multiscale",
    "capstone": "06_glow_in_practice",
    "likelihood": "07_likelihood",
}

RESTART = ("After a runtime restart nothing is defined: run the notebook from the top "
           "(Jupyter: Run > Run All Above Selected Cell; Colab: Runtime > Run before).")


def _number(notebook: str) -> int:
    return int(notebook.split("_", 1)[0])


def name_error_hint(name: str, notebooks: list[str] | tuple[str, ...] = (), in_cell: bool = True) -> str | None:
    """The hint for ``NameError: name '<name>' is not defined``, or None when nothing useful is
    known. ``notebooks``: the notebooks whose checks the failing cell calls (empty when it calls
    none); ``in_cell``: the cell's own code read the name (not a function it called)."""
    known = [n for n in notebooks if n in EXERCISES]
    search = known or list(EXERCISES)
    defining = [(nb, gid, title) for nb in search for gid, title, names in EXERCISES[nb] if name in names]
    if defining and known:
        nb, gid, title = defining[0]
        said = (f"`{name}` is defined by the exercise \"{title}\" (grade_id `{gid}`) above: "
                "run that cell (it must run without an error and keep the name), then this one.")
    elif defining:
        said = " ".join(f"If this is notebook {_number(nb)}, `{name}` is defined by its exercise \"{title}\" "
                        f"(grade_id `{gid}`): run that cell first." for nb, gid, title in defining)
        said += f" Otherwise run the cell above that defines `{name}`."
    elif in_cell and known:
        said = f"`{name}` is defined by a cell above this one that has not run: run the cells above."
    elif in_cell:
        said = f"If a cell above defines `{name}`, run it first."
    else:
        return None
    return f"Hint: {said}\n{RESTART}"


def _missing_name(value: BaseException) -> str | None:
    name = getattr(value, "name", None)  # Python 3.10+
    if isinstance(name, str) and name:
        return name
    found = re.match(r"name '([^']+)' is not defined", str(value))
    return found.group(1) if found else None


def _frames(tb):
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _notebooks_called(code: types.CodeType) -> list[str]:
    """The notebooks whose checks ``code`` (a cell) names."""
    found = []
    checks = sys.modules.get("glowcourse.checks")
    for attr in code.co_names:
        fn = getattr(checks, attr, None) if attr.startswith("check_") else None
        module = getattr(fn, "__module__", "") or ""
        nb = CHECK_MODULES.get(module.rsplit(".", 1)[-1])
        if nb and nb not in found:
            found.append(nb)
    return found


def hint_for(shell, etype, value, tb) -> str | None:
    """The hint for the exception IPython caught, or None (not a plain NameError, nothing known)."""
    if etype is not NameError:
        return None
    name = _missing_name(value)
    if name is None:
        return None
    frames = list(_frames(tb))
    user = getattr(shell, "user_ns", None)
    # The cell's own code: module-level code (no CO_NEWLOCALS; IPython 7 renames it "<cell line: 0>")
    # run in the user's namespace.
    cell = next((f for f in frames if f.f_globals is user and not f.f_code.co_flags & inspect.CO_NEWLOCALS), None)
    if cell is None:
        return None
    return name_error_hint(name, _notebooks_called(cell.f_code), in_cell=frames[-1] is cell)


def show_name_error(shell, etype, value, tb, tb_offset=None):
    """IPython's custom exception handler: the traceback IPython would show, as the same error
    output, with the hint as its last entry. Returns None (IPython ignores what a handler
    returns)."""
    try:
        hint = hint_for(shell, etype, value, tb)
    except Exception:  # a hint is a courtesy: never let it hide the error
        hint = None
    if hint is None:
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return None
    try:
        etype, value, tb = shell._get_exc_info((etype, value, tb))  # sys.last_* for %tb and %debug
        stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
    except Exception:
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return None
    shell._showtraceback(etype, value, list(stb) + [hint])
    if getattr(shell, "call_pdb", False):
        shell.debugger(force=True)
    return None


def install() -> bool:
    """Register ``show_name_error`` for ``NameError`` in the running IPython shell, if any and if
    no other custom handler is set; True when it is registered (now or before)."""
    ipython = sys.modules.get("IPython")  # not loaded: not in IPython, nothing to do
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if shell is None or not hasattr(shell, "set_custom_exc"):
        return False
    current = getattr(shell, "custom_exceptions", ())
    if current == (NameError,):
        return True
    if current:
        return False
    shell.set_custom_exc((NameError,), show_name_error)
    return True
