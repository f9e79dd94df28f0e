"""Can the instructor trust a row? Correct answers built on PyTorch's own machinery (torch.func,
torch.compile, torch.distributions) get full marks through the real grader and are never
called tampering; a student's own wrapper of what the checks use still is; an answer that is
(or wraps) the course package's own version of its exercise gets a note in grades.csv."""
import json
import subprocess
import sys
import textwrap

import nbformat
import pytest

from autograder import cells, course
from autograder.catalogues import hostile, samples
from autograder.grading import probe
from autograder.grading.execute import defined_names, exercise_names
from autograder.grading.limits import Limits
from autograder.grading.run import grade

# torch.compile's first use imports torch internals that warn about their own deprecated parts.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script_method:DeprecationWarning")

NB1 = course.Notebook("01_change_of_variables", "change_of_variables")
NB3 = course.Notebook("03_invertible_conv", "invertible_conv")
NOTE = "course's own answer"


# --- 1. PyTorch's own wrappers are not tampering; a student's are ------------------------------

ATTACKS = textwrap.dedent('''
    import functools, json, sys, types
    sys.path.insert(0, {root!r})
    from autograder.grading import probe
    import torch

    def run(baseline=None):
        ns = {{}}
        exec(probe.snapshot_code() if baseline is None else probe.probe_code(baseline), ns)
        return ns[probe.RESULT]

    base = run()  # before torch._dynamo is imported, as in a fresh kernel
    original = torch.manual_seed
    out = {{}}
    torch.func.jacrev(lambda v: v * 2)(torch.randn(3))
    out["jacrev"] = run(base)
    torch.compile(lambda v: v + 1, backend="eager")(torch.randn(2))
    torch.distributions.Normal(0.0, 1.0).log_prob(torch.zeros(2))
    out["compile, distributions"] = run(base)
    dynamo = torch.manual_seed
    assert dynamo is not original and dynamo.__wrapped__ is original  # what made the false positive

    @functools.wraps(dynamo)
    def mine(seed):
        return dynamo(seed)

    torch.manual_seed = mine
    out["functools.wraps"] = run(base)
    import torch._compile as tc
    source = "def make(fn):\\n    def inner(*a, **k):\\n        return None\\n    inner.__wrapped__ = fn\\n    return inner\\n"
    copy = dict(vars(tc))
    exec(compile(source, tc.__file__, "exec"), copy)  # torch's file name and module name, copied
    torch.manual_seed = copy["make"](original)
    out["copied co_filename and globals"] = run(base)
    exec(compile(source, tc.__file__, "exec"), vars(tc))  # defined inside torch._compile itself
    torch.manual_seed = tc.make(original)
    out["defined in a torch module"] = run(base)
    cells = tuple(types.CellType((lambda *a: None) if n == "fn" else True) for n in dynamo.__code__.co_freevars)
    forged = types.FunctionType(dynamo.__code__, vars(tc), "manual_seed", None, cells)
    forged.__wrapped__ = original
    torch.manual_seed = forged
    out["torch's code, another closure"] = run(base)
    torch.manual_seed = torch._disable_dynamo(original)
    out["torch's wrapper of the original, rebuilt"] = run(base)
    torch.manual_seed = dynamo
    saved = getattr(original, "__dynamo_disable")
    setattr(original, "__dynamo_disable", lambda s: None)
    out["__dynamo_disable replaced"] = run(base)
    setattr(original, "__dynamo_disable", saved)
    out["restored"] = run(base)
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def attacks():
    # A fresh process: this one may have imported torch._dynamo already.
    proc = subprocess.run([sys.executable, "-c", ATTACKS.format(root=str(course.ROOT))],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["jacrev", "compile, distributions", "torch's wrapper of the original, rebuilt", "restored"])
def test_pytorchs_own_wrapper_of_manual_seed_is_accepted(attacks, case):
    assert attacks[case] == []


@pytest.mark.parametrize("case", ["functools.wraps", "copied co_filename and globals", "defined in a torch module",
                                  "torch's code, another closure"])
def test_a_students_wrapper_of_manual_seed_is_caught(attacks, case):
    assert "torch:manual_seed was replaced" in attacks[case]


def test_a_replaced_dynamo_disable_is_caught_by_the_seed_canary(attacks):
    assert attacks["__dynamo_disable replaced"] == ["torch.manual_seed no longer seeds the random generator"]


# --- 2. Reference answers: what is noted and what is not (in-process) --------------------------

PRELUDE = "import functools, math\nimport torch\nfrom torch import nn\nimport glowcourse\n"

FLAGGED = {
    "subclass": ("InvConv2dLU", "class InvConv2dLU(glowcourse.flows.InvConv2dLU):\n    pass",
                 "InvConv2dLU subclasses glowcourse.flows.InvConv2dLU"),
    "alias": ("InvConv2dLU", "from glowcourse.flows import InvConv2dLU", "InvConv2dLU is glowcourse.flows.InvConv2dLU"),
    "function calling it": ("bits_per_dim", "def bits_per_dim(lp, d, n):\n    return glowcourse.bits_per_dim(lp, d, n)",
                            "bits_per_dim calls glowcourse.density.bits_per_dim"),
    "import inside": ("bits_per_dim", "def bits_per_dim(lp, d, n):\n    from glowcourse.density import bits_per_dim as b\n"
                      "    return b(lp, d, n)", "calls glowcourse.density.bits_per_dim"),
    "module imported inside": ("bits_per_dim", "def bits_per_dim(lp, d, n):\n    import glowcourse.density as g\n"
                               "    return g.bits_per_dim(lp, d, n)", "calls glowcourse.density.bits_per_dim"),
    "through a helper": ("bits_per_dim", "_b = glowcourse.density.bits_per_dim\n\ndef helper(*a):\n    return _b(*a)\n\n"
                         "def bits_per_dim(lp, d, n):\n    return helper(lp, d, n)", "glowcourse.density.bits_per_dim"),
    "closure": ("bits_per_dim", "def make(f):\n    return lambda *a: f(*a)\n\nbits_per_dim = make(glowcourse.bits_per_dim)",
                "glowcourse.density.bits_per_dim"),
    "partial": ("bits_per_dim", "bits_per_dim = functools.partial(glowcourse.bits_per_dim)", "glowcourse.density.bits_per_dim"),
    "torch.compile of it": ("bits_per_dim", "bits_per_dim = torch.compile(glowcourse.bits_per_dim)", "glowcourse.density.bits_per_dim"),
    "looked up by name": ("bits_per_dim", "def bits_per_dim(*a):\n    return getattr(glowcourse, 'bits_per_dim')(*a)",
                          "looks up glowcourse.density.bits_per_dim by name"),
    "held inside": ("InvConv2dLU", "class InvConv2dLU(nn.Module):\n    def __init__(self, c):\n        super().__init__()\n"
                    "        self.m = glowcourse.flows.InvConv2dLU(c)\n\n    def forward(self, x):\n        return self.m(x)",
                    "calls glowcourse.flows.InvConv2dLU"),
    "a copied method": ("ActNorm", "class ActNorm(nn.Module):\n    forward = glowcourse.flows.ActNorm.forward",
                        "uses glowcourse.flows.ActNorm.forward"),
    "a copied code object": ("bits_per_dim", "def bits_per_dim(a, b, c):\n    pass\n\n"
                             "bits_per_dim.__code__ = glowcourse.bits_per_dim.__code__", "has the code of glowcourse.density.bits_per_dim"),
    "a decorated method's code": ("Glow", "def sample(self, n):\n    pass\n\nsample.__code__ = glowcourse.flows.Glow.sample.__wrapped__.__code__\n\n"
                                  "class Glow(nn.Module):\n    sample = sample", "has the code of glowcourse.flows.Glow.sample"),
    "named otherwise: jacobian_logdet": ("brute_force_logdet", "brute_force_logdet = glowcourse.jacobian_logdet",
                                         "is glowcourse.density.jacobian_logdet"),
    "named otherwise: standard_normal_log_prob": ("flow_log_prob", "def flow_log_prob(flow, x):\n    z, ld = flow(x)\n"
                                                  "    return glowcourse.standard_normal_log_prob(z) + ld",
                                                  "calls glowcourse.density.standard_normal_log_prob"),
    "a metaclass making it": ("InvConv2dLU", "class Make(type):\n    def __call__(cls, *a):\n"
                              "        return glowcourse.flows.InvConv2dLU(*a)\n\n"
                              "class InvConv2dLU(nn.Module, metaclass=Make):\n    pass", "calls glowcourse.flows.InvConv2dLU"),
    "the checks' own test layer": ("ElementwiseAffine", "from glowcourse.checks.change_of_variables import _Affine\n\n"
                                   "class ElementwiseAffine(_Affine):\n    pass", "subclasses glowcourse.checks.change_of_variables._Affine"),
}

NOT_FLAGGED = {
    "own bits_per_dim": ("bits_per_dim", "def bits_per_dim(lp, d, n):\n    return (-lp + d * math.log(n)) / (d * math.log(2))"),
    "own, torch.compile'd": ("bits_per_dim", "@torch.compile\ndef bits_per_dim(lp, d, n):\n"
                             "    return (-lp + d * math.log(n)) / (d * math.log(2))"),
    "FlowStep from the reference layers": ("FlowStep", "from glowcourse.flows import ActNorm, AffineCoupling, InvConv2dLU\n\n"
                                           "class FlowStep(nn.Module):\n    def __init__(self, c, hidden=8):\n        super().__init__()\n"
                                           "        self.a, self.b, self.c = ActNorm(c), InvConv2dLU(c), AffineCoupling(c, hidden)\n"),
    "evaluate_bpd with glowcourse.bits_per_dim": ("evaluate_bpd", "def evaluate_bpd(model, x, n_bins):\n"
                                                  "    return glowcourse.bits_per_dim(model(x)[1], x[0].numel(), n_bins).mean()"),
    "a torch.no_grad method": ("Glow", "class Glow(nn.Module):\n    @torch.no_grad()\n    def sample(self, n):\n        return n"),
    "getattr of its own": ("ActNorm", "class ActNorm(nn.Module):\n    def forward(self, x):\n        return getattr(self, 'inverse')(x)"),
}

EXERCISE_OF = {"InvConv2dLU": "invconv_lu", "bits_per_dim": "bits_per_dim", "ActNorm": "actnorm", "Glow": "glow",
               "brute_force_logdet": "brute_force_logdet", "flow_log_prob": "flow_log_prob", "ElementwiseAffine": "affine_flow",
               "FlowStep": "flow_step", "evaluate_bpd": "evaluate_bpd"}


def references(name: str, source: str) -> list[str]:
    ns = {"__name__": "__main__"}
    exec(compile(PRELUDE + source, "<cell>", "exec"), ns)
    return probe._kernel_references([name], probe.EXTRA_REFERENCES.get(EXERCISE_OF[name], []), user=ns)


@pytest.mark.parametrize("case", sorted(FLAGGED))
def test_an_answer_that_is_or_wraps_the_reference_is_noted(case):
    name, source, words = FLAGGED[case]
    found = references(name, source)
    assert len(found) == 1 and found[0].startswith(name + " ") and words in found[0], found


@pytest.mark.parametrize("case", sorted(NOT_FLAGGED))
def test_an_answer_of_its_own_is_not_noted(case):
    assert references(*NOT_FLAGGED[case]) == []


def _solution_namespaces():
    """Every notebook's imports, solution and given cells, run in-process (as the harness does)."""
    for nb in course.notebooks():
        notebook = nbformat.read(nb.source, 4).cells
        ns = {"__name__": "__main__"}
        first = next(c for c in notebook if c.cell_type == "code")
        exec(compile(first.source, "<cell>", "exec"), ns)
        for c in notebook:
            if c.cell_type == "code" and cells.meta(c) and not cells.is_grade(c):  # solution and given cells
                exec(compile(cells.strip_solution_markers(c.source), "<cell>", "exec"), ns)
        yield nb, ns


def glowcourse_modules():
    return [m for n, m in list(sys.modules.items()) if m is not None and (n == "glowcourse" or n.startswith("glowcourse."))]


def probe_resolve(dotted: str):
    module, attr = dotted.split(":")
    return getattr(sys.modules[module], attr)


def test_course_solutions_get_no_note_and_the_references_they_would_be(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")  # skip training in given cells
    import glowcourse.checks.change_of_variables  # noqa: F401 (where one extra reference lives)

    with_reference = {}
    for nb, ns in _solution_namespaces():
        for gid, names in exercise_names(nb.assignment).items():
            extra = probe.EXTRA_REFERENCES.get(gid, [])
            assert probe._kernel_references(list(names), extra, user=ns) == [], (nb.assignment, gid)
            # The same exercise answered by the reference (derived by name, or from the table).
            for name in names:
                refs = [getattr(m, name) for m in glowcourse_modules() if callable(getattr(m, name, None))]
                refs += [probe_resolve(d) for d in extra]
                for ref in refs:
                    found = probe._kernel_references([name], extra, user={**ns, name: ref})
                    assert found and found[0].startswith(f"{name} is "), (gid, name, found)
                    with_reference.setdefault(gid, set()).add(name)
    # Every exercise with a version in the package is covered; notebook 6's have none.
    assert set(with_reference) == {
        "affine_flow", "brute_force_logdet", "flow_log_prob", "dequantize", "bits_per_dim", "actnorm",
        "random_rotation", "invconv_dense", "invconv_lu", "zero_conv", "additive_coupling", "affine_coupling",
        "squeeze", "split", "flow_step", "glow"}
    assert with_reference["squeeze"] == {"squeeze", "unsqueeze"}


def test_defined_names_of_a_cell():
    assert defined_names("import x.y as z\nfrom a import b\nA, (B, C) = 1, (2, 3)\nclass D: pass\n"
                         "def e(): pass\nf: int = 1\nA = 2") == ["z", "b", "A", "B", "C", "D", "e", "f"]
    assert defined_names("def broken(:") == []


# --- 3. Through the real grader: correct variants, reference answers, a wrapped manual_seed ----

def _packed_variants(nb):
    """All catalogued variants of ``nb`` in as few submissions as possible (one variant per cell
    each), those that torch.compile together, so that inductor starts once."""
    groups: list[list[dict]] = []
    for v in sorted(samples.variants(nb.assignment), key=lambda v: "torch.compile" not in v.get("source", "")):
        for g in groups:
            if v["cell"] not in {x["cell"] for x in g}:
                g.append(v)
                break
        else:
            groups.append([v])
    return groups


def _patched(nb, cell: str, source: str):
    return samples.with_mistake(samples.filled(nb), {"name": cell, "cell": cell, "source": source})


@pytest.fixture(scope="module")
def graded(tmp_path_factory):  # 8 notebooks: about 2 minutes on a loaded 2-core machine
    root = tmp_path_factory.mktemp("trust")
    subs = root / "submissions"
    packed = _packed_variants(NB1)
    for i, group in enumerate(packed):
        notebook = samples.filled(NB1)
        for v in group:
            notebook = samples.with_mistake(notebook, v)
        samples.write(notebook, subs / f"variants-{i}" / NB1.assignment / f"{NB1.name}.ipynb")
    samples.write(_patched(NB3, "invconv_lu", "import glowcourse\n\n\nclass InvConv2dLU(glowcourse.flows.InvConv2dLU):\n    pass\n"),
                  subs / "subclass-lu" / NB3.assignment / f"{NB3.name}.ipynb")
    samples.write(_patched(NB1, "bits_per_dim", "def bits_per_dim(log_prob, n_dims, n_bins):\n"
                           "    return glowcourse.bits_per_dim(log_prob, n_dims, n_bins)\n"),
                  subs / "wraps-bpd" / NB1.assignment / f"{NB1.name}.ipynb")
    case = {c.name: c for c in hostile.cases()}["h_wrap_manual_seed"]
    (subs / case.name / NB1.assignment).mkdir(parents=True)
    (subs / case.name / NB1.assignment / f"{NB1.name}.ipynb").write_bytes(case.make())
    rows = grade(subs, root / "out", limits=Limits(cell_timeout=300))
    return {(r.student, r.assignment): r for r in rows}, packed


@pytest.mark.slow
def test_every_correct_variant_of_notebook_1_gets_full_marks_through_the_real_grader(graded):
    rows, packed = graded
    names = {v["name"] for g in packed for v in g}
    assert {"brute-jacrev-vmap", "brute-jacrev-loop", "brute-jacfwd-vmap", "log-prob-functional-call",
            "log-prob-independent-normal", "log-prob-multivariate-normal", "bpd-compiled"} <= names
    for i, group in enumerate(packed):
        row = rows[(f"variants-{i}", NB1.assignment)]
        assert (row.score, row.status) == (row.max_score, "ok"), ([v["name"] for v in group], row)
        assert NOTE not in row.notes, row


@pytest.mark.slow
def test_answers_that_are_the_reference_get_a_note_and_keep_their_status(graded):
    rows, _ = graded
    lu = rows[("subclass-lu", NB3.assignment)]
    assert lu.status == "ok"
    assert lu.notes.startswith(f"{NOTE}: invconv_lu: InvConv2dLU subclasses glowcourse.flows.InvConv2dLU"), lu
    bpd = rows[("wraps-bpd", NB1.assignment)]
    assert bpd.status == "ok"
    assert bpd.notes.startswith(f"{NOTE}: bits_per_dim: bits_per_dim calls glowcourse.density.bits_per_dim"), bpd
    assert bpd.notes.count(NOTE) == 1 and lu.notes.count(NOTE) == 1  # only the exercise that is the reference
    # flag, don't fail: the reference is a correct answer, so the score stands for the instructor to decide
    assert lu.score == lu.max_score and bpd.score == bpd.max_score, (lu, bpd)
    # (the correct students with no note are the variants above)


@pytest.mark.slow
def test_a_students_wrapper_of_manual_seed_is_still_tampering_through_the_real_grader(graded):
    rows, _ = graded
    row = rows[("h_wrap_manual_seed", NB1.assignment)]
    assert row.score == 0 and row.status.startswith("tampering detected: torch:manual_seed was replaced"), row


# --- 4. A probe that cannot start is the grader's problem, not tampering -------------------------

def test_a_snapshot_that_fails_before_any_student_cell_is_an_error_not_tampering(tmp_path, monkeypatch):
    """The tamper snapshot runs before the first cell: if it fails, no student code can be the
    cause, so the row must not accuse the student; the checks are not run, and the status says
    to grade again."""
    monkeypatch.setattr(probe, "snapshot_code", lambda: "raise RuntimeError('no snapshot')")
    subs = tmp_path / "subs"
    samples.write(samples.filled(NB1), subs / "alice" / NB1.assignment / f"{NB1.name}.ipynb")
    [row] = grade(subs, tmp_path / "out", limits=Limits(cell_timeout=60))  # one worker: this process
    assert row.status.startswith("error: the tamper probe's snapshot failed before any student cell ran"), row
    assert "tampering" not in row.status and row.score == 0
