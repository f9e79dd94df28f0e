"""Tamper probes: small checks the grader runs inside the student's kernel before each test cell.

Student code and the tests share one Python process, so a student can replace what the tests
rely on: ``torch.allclose = lambda *a, **k: True``, a no-op ``check_actnorm``, an IPython AST
transformer that strips ``assert`` statements, a patched ``showtraceback``. No in-process
check is unbeatable (a determined student who reverse-engineers these probes can hide from
them), but each probe here is cheap and together they catch every tampering the course's
catalogue tries (``tests/test_hostile.py``):

1. **Identity.** Right after the kernel starts, before any student cell, ``snapshot()`` records
   ``id()`` of the functions the checks use (torch, numpy, math, builtins, IPython's execution
   machinery, every function of ``glowcourse.checks`` and its code object). The ids travel to
   the grader, outside the sandbox; each later probe receives them as literals and reports any
   name that now points elsewhere.
2. **Behaviour.** Canaries that must fail do fail: ``torch.allclose(0, 1)`` is False,
   ``assert_close`` raises, ``slogdet(diag(2, 3))`` is log 6, a check run on a broken layer
   raises ``CheckFailed``.
3. **Hooks.** No AST/input transformers, pre-run callbacks, trace or profile functions beyond
   those present at start.

The kernel-side code is ``_kernel_probe`` below, sent as source text (nothing the student can
import or patch ahead of time); it returns a list of problems, empty when all is well.
"""
from __future__ import annotations

import inspect

__all__ = ["snapshot_code", "probe_code", "RESULT"]

RESULT = "__autograder_probe__"


def _kernel_probe(baseline):  # runs inside the student's kernel; must be self-contained
    import builtins
    import math
    import sys

    def resolve(dotted):  # "torch:linalg.slogdet" -> the object; KeyError if torch is not loaded
        module, attrs = dotted.split(":")
        obj = sys.modules[module]
        for attr in attrs.split("."):
            obj = getattr(obj, attr)
        return obj

    names = ["builtins:abs", "builtins:all", "builtins:any", "builtins:isinstance", "builtins:len",
             "builtins:float", "builtins:round", "builtins:max", "builtins:min", "builtins:getattr",
             "builtins:__import__", "builtins:AssertionError", "builtins:print", "builtins:exec",
             "math:isclose", "math:log",
             "torch:allclose", "torch:isclose", "torch:equal", "torch:testing.assert_close", "torch:det",
             "torch:logdet", "torch:slogdet", "torch:linalg.slogdet", "torch:linalg.det", "torch:isfinite",
             "torch:autograd.functional.jacobian", "torch:autograd.grad", "torch:func.jacrev", "torch:func.vmap",
             "torch:manual_seed", "torch:randn", "torch:randn_like", "torch:rand", "torch:no_grad",
             "torch:Tensor.allclose", "torch:Tensor.__eq__", "torch:Tensor.__bool__", "torch:Tensor.item",
             "torch:Tensor.abs", "torch:Tensor.max", "torch:Tensor.all", "torch:Tensor.any", "torch:Tensor.sum",
             "torch:Tensor.mean", "torch:Tensor.std", "torch:Tensor.__sub__", "torch:Tensor.tolist",
             "torch:nn.Module.__call__", "torch:nn.Module._call_impl", "torch:nn.Module.state_dict",
             "torch:nn.Module.load_state_dict", "torch:_C._VariableFunctions.allclose",
             "numpy:allclose", "numpy:isclose", "numpy:array_equal", "numpy:testing.assert_allclose",
             "numpy:testing.assert_array_equal", "numpy:linalg.slogdet", "numpy:linalg.det"]
    shell = None
    try:
        shell = get_ipython()  # noqa: F821 (IPython's builtin)
    except NameError:
        pass
    current = {}
    for name in names:
        try:
            current[name] = id(resolve(name))
        except Exception:  # a module the notebook has not imported yet
            pass
    if shell is not None:
        cls = type(shell)
        for meth in ("run_cell", "run_cell_async", "run_ast_nodes", "run_code", "showtraceback",
                     "_showtraceback", "showsyntaxerror", "transform_cell", "should_run_async"):
            current[f"shell.{meth}"] = id(getattr(cls, meth, None))
            if meth in vars(shell):
                current[f"shell.{meth} (instance)"] = id(vars(shell)[meth])
        current["shell.displayhook"] = id(shell.displayhook)
        kernel = getattr(shell, "kernel", None)
        if kernel is not None:
            for meth in ("do_execute", "execute_request", "send_response"):
                current[f"kernel.{meth}"] = id(getattr(type(kernel), meth, None))
                if meth in vars(kernel):
                    current[f"kernel.{meth} (instance)"] = id(vars(kernel)[meth])
            current["kernel.session.send"] = id(getattr(type(kernel.session), "send", None))
            if "send" in vars(kernel.session):
                current["kernel.session.send (instance)"] = id(vars(kernel.session)["send"])
        current["#ast_transformers"] = len(shell.ast_transformers)
        current["#input_transformers_post"] = len(shell.input_transformers_post)
        manager = shell.input_transformer_manager
        current["#cleanup_transforms"] = len(manager.cleanup_transforms)
        current["#line_transforms"] = len(manager.line_transforms)
        current["#token_transformers"] = len(getattr(manager, "token_transformers", []))
        for event in ("pre_run_cell", "pre_execute"):
            current[f"#{event} callbacks"] = len(shell.events.callbacks.get(event, []))
    current["sys.gettrace"] = 0 if sys.gettrace() is None else 1
    current["sys.getprofile"] = 0 if sys.getprofile() is None else 1
    for modname, module in list(sys.modules.items()):
        if modname == "glowcourse.checks" or modname.startswith("glowcourse.checks."):
            for attr, value in list(vars(module).items()):
                if attr.startswith("__"):
                    continue
                current[f"{modname}:{attr}"] = id(value)
                code = getattr(value, "__code__", None)
                if code is not None:
                    current[f"{modname}:{attr}.__code__"] = id(code)
    if baseline is None:
        return current

    problems = []
    for name, value in baseline.items():
        if name in current and current[name] != value:
            problems.append(f"{name} was replaced" if not name.startswith("#") else f"{name[1:]} changed")
        elif name not in current and not name.startswith("#"):
            problems.append(f"{name} was removed")
    for name in current:
        if name.endswith("(instance)") and name not in baseline:
            problems.append(f"{name.replace(' (instance)', '')} was overridden")

    def canary(label, tampered):
        try:
            if tampered():
                problems.append(f"{label} no longer fails where it must")
        except Exception:
            pass

    def passes(f):  # True when f() does not raise
        try:
            f()
        except Exception:
            return False
        return True

    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        zero, one = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
        canary("torch.allclose", lambda: torch.allclose(zero, one) is not False)
        canary("torch.isclose", lambda: bool(torch.isclose(zero, one).any()))
        canary("torch.equal", lambda: torch.equal(zero, one) is not False)
        # (no assert_close canary: its first call imports torch.distributed, 0.8 s; its identity is checked)
        canary("torch.linalg.slogdet", lambda: abs(float(torch.linalg.slogdet(
            torch.diag(torch.tensor([2.0, 3.0], dtype=torch.float64)))[1]) - math.log(6.0)) > 1e-9)
        canary("tensor comparison", lambda: bool((zero == one).any()) or bool((zero - one).abs().max() < 0.5))
    if "numpy" in sys.modules:
        np = sys.modules["numpy"]
        canary("numpy.allclose", lambda: bool(np.allclose(0.0, 1.0)))
        canary("numpy.testing.assert_allclose", lambda: passes(lambda: np.testing.assert_allclose(0.0, 1.0)))
    canary("math.isclose", lambda: math.isclose(0.0, 1.0))
    canary("assert", lambda: passes(lambda: builtins.exec(compile("assert 0 == 1", "<probe>", "exec"), {})))
    common = sys.modules.get("glowcourse.checks.common")
    if common is not None and "torch" in sys.modules:
        torch = sys.modules["torch"]

        class Broken(torch.nn.Module):  # invertible, but its log-det is wrong by a constant
            def forward(self, x):
                return 2 * x, torch.zeros(x.shape[0], dtype=x.dtype)

            def inverse(self, y):
                return y / 2, torch.zeros(y.shape[0], dtype=y.dtype)

        x = torch.randn(2, 2, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        canary("glowcourse.checks.common.check_flow_layer",
               lambda: passes(lambda: common.check_flow_layer(Broken(), x, name="probe")))
    return problems


def _program(baseline) -> str:
    # Everything runs inside one function, so no name (torch, numpy, ...) leaks into the
    # student's namespace and hides a missing import; only RESULT is left there.
    return (inspect.getsource(_kernel_probe)
            + "def _autograder_run(baseline):\n"
            + "    if baseline is None:  # the snapshot: load what the tests rely on, untouched\n"
            + "        import importlib, pkgutil, torch, numpy, glowcourse.checks\n"
            + "        for m in pkgutil.iter_modules(glowcourse.checks.__path__):\n"
            + "            importlib.import_module('glowcourse.checks.' + m.name)\n"
            + "    return _kernel_probe(baseline)\n"
            + f"{RESULT} = _autograder_run({baseline!r})\n"
            + "del _kernel_probe, _autograder_run\n")


def snapshot_code() -> str:
    """Kernel code whose user expression ``RESULT`` is the baseline dict (run before any cell)."""
    return _program(None)


def probe_code(baseline: dict) -> str:
    """Kernel code whose user expression ``RESULT`` is the list of problems found."""
    return _program(dict(baseline))
