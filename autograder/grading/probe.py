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
   name that now points elsewhere. PyTorch itself rebinds one of them: the first
   ``torch.func.jacrev`` or ``torch.compile`` imports ``torch._dynamo``, which sets
   ``torch.manual_seed = torch._disable_dynamo(torch.manual_seed)``. Such a wrapper is accepted
   when every part of it is PyTorch's (``torch_wrapper`` below: its code object, by identity,
   is one a known torch wrapper factory held at the snapshot; it wraps exactly the recorded
   original); a student's own wrapper, even one copying ``__wrapped__`` and ``__module__``, is not.
2. **Behaviour.** Canaries that must fail do fail: ``torch.allclose(0, 1)`` is False,
   ``numpy.testing.assert_allclose(0, 1)`` raises, ``slogdet(diag(2, 3))`` is log 6, ``manual_seed`` seeds the
   generator, a check run on a broken layer raises ``CheckFailed``.
3. **Hooks.** No AST/input transformers, pre-run callbacks, custom exception handlers
   (``set_custom_exc``), trace or profile functions beyond
   those present at start.

The kernel-side code is ``_kernel_probe`` below, sent as source text (nothing the student can
import or patch ahead of time); it returns a list of problems, empty when all is well.
"""
from __future__ import annotations

import inspect

__all__ = ["snapshot_code", "probe_code", "references_code", "EXTRA_REFERENCES", "RESULT"]

RESULT = "__autograder_probe__"


def _kernel_probe(baseline):  # runs inside the student's kernel; must be self-contained
    import builtins
    import math
    import sys
    import types

    def codes(code):  # a code object and the ones nested in it
        yield code
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                yield from codes(const)

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
    # Functions with which PyTorch wraps one of the names above when a submodule is first imported.
    wrapper_factories = ["torch:_compile._disable_dynamo"]
    # IPython's shell from builtins, not from the student's namespace (where a cell can define its
    # own get_ipython returning a stand-in); the stand-in's id differs from the snapshot's anyway.
    get_shell = getattr(builtins, "get_ipython", None)
    shell = get_shell() if callable(get_shell) else None
    current = {}
    for name in names:
        try:
            current[name] = id(resolve(name))
        except Exception:  # a module the notebook has not imported yet
            pass
    if shell is not None:
        current["shell"] = id(shell)
        cls = type(shell)
        for meth in ("run_cell", "run_cell_async", "run_ast_nodes", "run_code", "showtraceback",
                     "_showtraceback", "showsyntaxerror", "transform_cell", "should_run_async"):
            current[f"shell.{meth}"] = id(getattr(cls, meth, None))
            if meth in vars(shell):
                current[f"shell.{meth} (instance)"] = id(vars(shell)[meth])
        current["shell.displayhook"] = id(shell.displayhook)
        # set_custom_exc: a handler that shows nothing turns every failed check into a pass
        current["shell.CustomTB"] = id(vars(shell).get("CustomTB"))
        current["#custom_exceptions"] = hash(tuple(id(c) for c in getattr(shell, "custom_exceptions", ())))
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
    for factory in wrapper_factories:  # the code objects of PyTorch's own wrappers (see torch_wrapper)
        try:
            for i, code in enumerate(codes(resolve(factory).__code__)):
                current[f"~{factory}#{i}"] = id(code)
        except Exception:  # another torch version: none to recognise
            pass
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

    def simple(value):  # data that cannot run code
        return value is None or isinstance(value, (bool, int, float, str, bytes))

    wrapper_codes = {value for name, value in baseline.items() if name.startswith("~")}

    def torch_wrapper(obj, original, depth=0):
        # PyTorch's own wrapper of the original: importing torch._dynamo (the first torch.func.jacrev
        # or torch.compile does) sets torch.manual_seed = torch._disable_dynamo(torch.manual_seed).
        # Accepted only when every part is PyTorch's: its code object is one that a known torch
        # wrapper factory held at the snapshot (by identity, so copying co_filename or __module__,
        # or defining a function inside a torch module later, does not pass), its globals are that
        # factory's module, its __wrapped__ chain reaches the original, and what it closes over is
        # the original (or such a wrapper of it) and plain data. A student's own wrapper fails.
        if id(obj) == original:
            return True
        if depth > 3 or type(obj) is not types.FunctionType or id(obj.__code__) not in wrapper_codes:
            return False
        module = sys.modules.get(obj.__globals__.get("__name__", ""))
        if module is None or obj.__globals__ is not vars(module):
            return False
        chain, link = [], obj
        while hasattr(link, "__wrapped__") and len(chain) < 8:
            link = link.__wrapped__
            chain.append(id(link))
        if original not in chain:
            return False
        try:
            held = [cell.cell_contents for cell in obj.__closure__ or ()]
        except ValueError:  # an empty cell
            return False
        held += list(obj.__defaults__ or ()) + list((obj.__kwdefaults__ or {}).values())
        wrapped = [h for h in held if not simple(h)]
        return bool(wrapped) and all(torch_wrapper(h, original, depth + 1) for h in wrapped)

    def replaced(name, value):
        if name.startswith(("#", "shell", "kernel.", "sys.")):
            return True
        try:
            return not torch_wrapper(resolve(name), value)
        except Exception:
            return True

    problems = []
    for name, value in baseline.items():
        if name.startswith("~"):  # a reference set, not something the checks call
            continue
        if name in current and current[name] != value and replaced(name, value):
            problems.append(f"{name} was replaced" if not name.startswith("#") else f"{name[1:]} changed")
        elif name not in current and not name.startswith("#"):
            problems.append(f"{name} was removed")
    for name in current:
        if name.endswith("(instance)") and name not in baseline:
            problems.append(f"{name.replace(' (instance)', '')} was overridden")

    def canary(label, tampered, what="no longer fails where it must"):
        try:
            if tampered():
                problems.append(f"{label} {what}")
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

        def unseeded():  # torch.manual_seed must seed the default generator (the student's state is restored)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1234)
                drawn = torch.rand(4, dtype=torch.float64)
            return not torch.equal(drawn, torch.rand(4, dtype=torch.float64, generator=torch.Generator().manual_seed(1234)))

        canary("torch.manual_seed", unseeded, "no longer seeds the random generator")
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


def _one_cell(program: str) -> str:
    """``program`` as a one-line cell: IPython transforms a cell line by line before running it,
    which for a probe's thousand lines and its baseline costs more than the probe itself."""
    return f"exec(compile({program!r}, '<autograder probe>', 'exec'))\n"


def _program(baseline) -> str:
    # Everything runs inside one function, so no name (torch, numpy, ...) leaks into the
    # student's namespace and hides a missing import; only RESULT is left there.
    return _one_cell(inspect.getsource(_kernel_probe)
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


# ---------------------------------------------------------------------------------------------
# Reference answers. ``glowcourse`` ships a working version of most exercises (notebook 5 builds
# on them; the checks compare against some). An answer that *is* the course's own version, or
# wraps it (subclasses it, or its code reaches it), passes every check; the grader keeps the
# score but writes a note the instructor sees in grades.csv.
#
# The reference of an exercise is every object of a ``glowcourse`` module (the checks included)
# named like what the exercise's solution cell defines (``InvConv2dLU`` ->
# ``glowcourse.flows.InvConv2dLU``), and the few below, which have other names.
EXTRA_REFERENCES = {
    "affine_flow": ["glowcourse.checks.change_of_variables:_Affine"],         # the checks' test layer
    "brute_force_logdet": ["glowcourse.density:jacobian_logdet"],             # "the same function" (notebook 1)
    "flow_log_prob": ["glowcourse.density:standard_normal_log_prob"],         # "but write it yourself here"
}


def _kernel_references(names, extra, user=None):  # runs inside the student's kernel; self-contained
    """How each object ``user[name]`` is, or reaches, the course's own answer (a list of notes)."""
    import dis
    import functools
    import inspect
    import os
    import sys
    import types

    if user is None:
        import builtins
        get_shell = getattr(builtins, "get_ipython", None)  # not a get_ipython the student defined
        user = get_shell().user_ns if callable(get_shell) else vars(sys.modules["__main__"])
    refs, ref_codes, top = {}, {}, []  # id -> what it is ("glowcourse.flows.InvConv2dLU")

    def label(obj, fallback):
        module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        return f"{module}.{name}" if isinstance(module, str) and isinstance(name, str) else fallback

    def add(obj, fallback):
        if obj is None or isinstance(obj, (types.ModuleType, bool, int, float, str)) or id(obj) in refs:
            return
        refs[id(obj)] = what = label(obj, fallback)
        top.append(what)
        members = list(vars(obj).items()) if isinstance(obj, type) else [("", obj)]
        for attr, member in members:
            todo = [member, getattr(member, "__func__", None), getattr(member, "fget", None),
                    getattr(member, "fset", None)]
            while todo:
                f = todo.pop()
                if not isinstance(f, types.FunctionType) or (id(f) in refs and f is not obj):
                    continue
                refs.setdefault(id(f), f"{what}.{attr}" if attr else what)
                # The code object only where glowcourse wrote it: not a decorator's (torch.no_grad's) inner code.
                if str(f.__globals__.get("__name__", "")).startswith("glowcourse"):
                    ref_codes.setdefault(id(f.__code__), refs[id(f)])
                todo.append(getattr(f, "__wrapped__", None))

    for modname, module in list(sys.modules.items()):
        if module is not None and (modname == "glowcourse" or modname.startswith("glowcourse.")):
            for name in names:
                add(vars(module).get(name), f"{modname}.{name}")
    for dotted in extra:
        modname, _, attr = dotted.partition(":")
        module = sys.modules.get(modname)
        if module is not None:
            add(vars(module).get(attr), f"{modname}.{attr}")
    if not refs:
        return []

    roots = [os.path.realpath(p) + os.sep for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}]
    glowcourse = sys.modules.get("glowcourse")
    if glowcourse is not None and getattr(glowcourse, "__file__", None):
        roots.append(os.path.realpath(os.path.dirname(glowcourse.__file__)) + os.sep)

    def students(obj):  # defined by the student (a cell, or a file of their own), not a library
        modname = getattr(obj, "__module__", None)
        if modname == "__main__" or (isinstance(obj, types.FunctionType) and obj.__globals__ is user):
            return True
        module = sys.modules.get(modname) if isinstance(modname, str) else None
        path = getattr(module, "__file__", None)
        return module is not None and bool(path) and not os.path.realpath(path).startswith(tuple(roots))

    lookups = {"getattr", "eval", "exec", "__import__", "import_module", "vars", "globals", "compile"}
    ref_strings = {s: what for what in top for s in (what, what.rsplit(".", 1)[-1])}
    found, seen, budget = [], set(), [3000]

    def hit(obj, how):
        if id(obj) in refs:
            found.append(f"{how} {refs[id(obj)]}")
            return True
        if not isinstance(obj, type) and id(type(obj)) in refs:
            found.append(f"{how} an instance of {refs[id(type(obj))]}")
            return True
        return False

    def attr_of(obj, name):
        if isinstance(obj, (types.ModuleType, type)):
            try:  # no module __getattr__, no descriptors: nothing of the student's runs here
                return inspect.getattr_static(obj, name)
            except AttributeError:
                return None
        return None

    def walk(code, space, cells):  # what a function's code names: globals, closures, imports, attributes
        local, builtin = dict(cells), space.get("__builtins__", {})
        builtin = vars(builtin) if isinstance(builtin, types.ModuleType) else builtin
        current = importing = last_const = None
        strings, loads = set(), set()
        for ins in dis.get_instructions(code):
            op, arg = ins.opname, ins.argval
            if op in ("CACHE", "EXTENDED_ARG", "PRECALL", "NOP", "RESUME", "PUSH_NULL", "COPY_FREE_VARS"):
                continue
            value = None
            if op in ("LOAD_GLOBAL", "LOAD_NAME"):
                loads.add(arg)
                value = space[arg] if arg in space else builtin.get(arg)
            elif op in ("LOAD_DEREF", "LOAD_CLOSURE", "LOAD_CLASSDEREF", "LOAD_FAST", "LOAD_FAST_CHECK"):
                value = local.get(arg)
            elif op in ("LOAD_ATTR", "LOAD_METHOD"):
                loads.add(arg)
                value = attr_of(current, arg)
            elif op == "IMPORT_NAME":  # `import a.b` gives a; `from a.b import c` gives a.b
                importing = value = sys.modules.get(arg if last_const else arg.split(".")[0])
            elif op == "IMPORT_FROM":
                loads.add(arg)
                value = attr_of(importing, arg)
            elif op.startswith("STORE_") and isinstance(arg, str) and current is not None:
                local[arg] = current
            elif op == "LOAD_CONST":
                if isinstance(arg, str):
                    strings.add(arg)
                elif isinstance(arg, types.CodeType):
                    yield from walk(arg, space, local)
            last_const = arg if op == "LOAD_CONST" else None
            current = value
            if value is not None:
                yield value
        if loads & lookups:  # getattr(glowcourse.flows, "InvConv2dLU"), eval("glowcourse...")
            for text in strings:
                named = [r for r in ref_strings if r in text] if "glowcourse" in text else (
                    [text] if text in ref_strings else [])
                if named:
                    found.append(f"looks up {ref_strings[named[0]]} by name")

    def visit(obj, depth=0):
        if obj is None or id(obj) in seen or depth > 12 or budget[0] <= 0:
            return
        seen.add(id(obj))
        budget[0] -= 1
        if hit(obj, "is" if depth == 0 else "uses"):
            return
        try:  # functools.wraps, lru_cache, torch.compile: the function inside
            visit(inspect.getattr_static(obj, "__wrapped__"), depth + 1)
        except AttributeError:
            pass
        if found:
            return
        if isinstance(obj, type):
            for base in obj.__mro__[1:]:
                if id(base) in refs:
                    found.append(f"subclasses {refs[id(base)]}")
                    return
            for cls in obj.__mro__:
                if students(cls):
                    for member in list(vars(cls).values()):
                        visit(member, depth + 1)
            if students(type(obj)):  # a metaclass of the student's (its __call__ makes the instances)
                visit(type(obj), depth + 1)
        elif isinstance(obj, types.FunctionType):
            if id(obj.__code__) in ref_codes:
                found.append(f"has the code of {ref_codes[id(obj.__code__)]}")
                return
            if not students(obj):
                return
            try:
                cells = {n: c.cell_contents for n, c in zip(obj.__code__.co_freevars, obj.__closure__ or ())}
            except ValueError:  # an empty cell
                cells = {}
            for held in [*cells.values(), *(obj.__defaults__ or ()), *(obj.__kwdefaults__ or {}).values()]:
                visit(held, depth + 1)
            for value in walk(obj.__code__, obj.__globals__, cells):
                if found or hit(value, "calls" if callable(value) else "uses"):
                    return
                if isinstance(value, (type, types.FunctionType, functools.partial, types.MethodType)):
                    visit(value, depth + 1)
        elif isinstance(obj, (staticmethod, classmethod, types.MethodType)):
            visit(obj.__func__, depth)
        elif isinstance(obj, property):
            for f in (obj.fget, obj.fset, obj.fdel):
                visit(f, depth)
        elif isinstance(obj, (functools.partial, functools.partialmethod)):
            for part in (obj.func, *obj.args, *(obj.keywords or {}).values()):
                visit(part, depth + 1)
        elif callable(obj) and students(type(obj)):  # an instance of the student's class, called
            visit(type(obj), depth + 1)

    notes = []
    for name in names:
        if name in user:
            found.clear()
            seen.clear()
            try:
                visit(user[name])
            except Exception:  # an object that defies inspection: no note rather than no grade
                pass
            if found:
                notes.append(f"{name} {found[0]}")
    return notes


def references_code(names: list[str], extra: list[str] = ()) -> str:
    """Kernel code whose user expression ``RESULT`` lists how the objects ``names`` (what one
    exercise defines) are or reach the course's own answer; empty when they do not."""
    return _one_cell(inspect.getsource(_kernel_references)
                     + f"{RESULT} = _kernel_references({list(names)!r}, {list(extra)!r})\n"
                     + "del _kernel_references\n")
