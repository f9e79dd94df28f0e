"""Notebooks 1 and 2: the checks test what the spec allows (image latents, several channels, a
second call, a negative scale, an optimizer built before ActNorm's first batch), name a cause
only where the numbers prove it, hidden (strict) parts test more."""
import re

import pytest
import torch
from torch import nn

from autograder.catalogues import report
from glowcourse import checks, flows
from glowcourse.density import standard_normal_log_prob
from test_checks import ActNormLogScale  # a correct ActNorm written independently

# ---------------------------------------------------------------------------------------------
# Notebook 1


def log_prob_flatten(flow, x):
    z, logdet = flow(x)
    return (-0.5 * z**2 - 0.9189385332046727).flatten(1).sum(1) + logdet


def cause_of(err) -> str:
    return report.likely_cause(str(err.value))


def test_log_prob_is_checked_on_image_latents():
    checks.check_flow_log_prob(log_prob_flatten, strict=True)
    checks.check_flow_log_prob(log_prob_flatten, dim=2, batch=3, image=(4, 1, 3), seed=2, dtype=torch.float32, strict=True)

    def sum_dim1(flow, x):  # right for flat latents
        z, logdet = flow(x)
        return (-0.5 * z**2 - 0.9189385332046727).sum(1) + logdet

    with pytest.raises(checks.CheckFailed, match="image latents") as err:
        checks.check_flow_log_prob(sum_dim1)
    assert ".flatten(1).sum(1)" in cause_of(err)

    def constant_without_channels(flow, x):  # D = H*W: right for flat latents and one channel
        z, logdet = flow(x)
        d = z[0, 0].numel() if z.dim() == 4 else z.shape[1]
        return (-0.5 * z**2).flatten(1).sum(1) - 0.5 * d * 1.8378770664093453 + logdet

    with pytest.raises(checks.CheckFailed) as err:
        checks.check_flow_log_prob(constant_without_channels)
    assert "without the channels" in cause_of(err)


def test_log_prob_strict_needs_a_gradient():
    def detached(flow, x):
        return log_prob_flatten(flow, x).detach()

    checks.check_flow_log_prob(detached)  # the visible check looks at values only
    with pytest.raises(checks.CheckFailed, match="no gradient"):
        checks.check_flow_log_prob(detached, strict=True)


def test_bits_per_dim_uses_its_argument_and_leaves_its_input():
    def hardcoded(log_prob, n_dims, n_bins):
        return (-log_prob + 64 * torch.log(torch.tensor(float(n_bins)))) / (64 * torch.log(torch.tensor(2.0)))

    with pytest.raises(checks.CheckFailed) as err:
        checks.check_bits_per_dim(hardcoded)  # D = 48: a 3-channel 4x4 image
    assert "not the n_dims argument" in cause_of(err)

    def in_place(log_prob, n_dims, n_bins):
        log_prob.neg_()
        return (log_prob + n_dims * torch.log(torch.tensor(float(n_bins), dtype=log_prob.dtype))) / (n_dims * 0.6931471805599453)

    with pytest.raises(checks.CheckFailed, match="in place"):
        checks.check_bits_per_dim(in_place)
    with pytest.raises(checks.CheckFailed, match="differentiable"):
        checks.check_bits_per_dim(lambda lp, d, n: ((-lp + d * torch.log(torch.tensor(float(n), dtype=lp.dtype))) / (d * 0.6931471805599453)).detach(),
                                  strict=True)


def test_compose_is_checked_on_images_and_in_order():
    class ReversedCompose(nn.Module):  # a flow, but not the composition asked for
        def __init__(self, layers):
            super().__init__()
            self.layers = nn.ModuleList(layers)

        def forward(self, x):
            logdet = torch.zeros(x.shape[0], dtype=x.dtype)
            for layer in reversed(self.layers):
                x, ld = layer(x)
                logdet = logdet + ld
            return x, logdet

        def inverse(self, y):
            logdet = torch.zeros(y.shape[0], dtype=y.dtype)
            for layer in self.layers:
                y, ld = layer.inverse(y)
                logdet = logdet + ld
            return y, logdet

    with pytest.raises(checks.CheckFailed) as err:
        checks.check_compose(ReversedCompose)
    assert "reverse order" in cause_of(err)


def test_brute_force_strict_needs_slogdet_stability():
    def via_det(f, x):
        out = []
        for i in range(x.shape[0]):
            xi = x[i : i + 1]
            jac = torch.autograd.functional.jacobian(lambda v: f(v.reshape(xi.shape)).reshape(-1), xi.reshape(-1))
            out.append(torch.linalg.det(jac).abs().log())
        return torch.stack(out)

    checks.check_brute_force_logdet(via_det)  # fine on small, well-scaled maps
    with pytest.raises(checks.CheckFailed) as err:
        checks.check_brute_force_logdet(via_det, strict=True)
    assert "slogdet" in cause_of(err)


def test_dequantize_strict_needs_independent_noise():
    def one_draw_per_image(x, n_bins):
        x = x.float()
        u = torch.rand(x.shape[0], *([1] * (x.dim() - 1)))
        return (x + u) / n_bins

    checks.check_dequantize(one_draw_per_image)  # the marginal of each element is uniform
    with pytest.raises(checks.CheckFailed, match="correlated"):
        checks.check_dequantize(one_draw_per_image, strict=True)


@pytest.mark.parametrize("strict", [False, True], ids=["visible", "strict"])
@pytest.mark.parametrize("make", [
    lambda strict: checks.check_bits_per_dim(__import__("glowcourse").bits_per_dim, strict=strict),
    lambda strict: checks.check_dequantize(lambda x, n: __import__("glowcourse").dequantize(x, n), strict=strict),
    lambda strict: checks.check_flow_log_prob(lambda flow, x: (lambda z, ld: standard_normal_log_prob(z) + ld)(*flow(x)), strict=strict),
    lambda strict: checks.check_brute_force_logdet(__import__("glowcourse").jacobian_logdet, strict=strict),
], ids=["bits_per_dim", "dequantize", "standard_normal_log_prob", "jacobian_logdet"])
def test_answers_that_run_the_packages_reference_pass_the_checks(make, strict):
    # Correct values pass; that the answer reuses the course's own version is the grader's
    # note for the instructor (autograder/probe.py), not a check failure.
    make(strict)


def test_a_crash_inside_torch_is_not_reported_as_a_blank_exercise():
    with pytest.raises(checks.CheckFailed) as err:
        checks.check_dequantize(lambda x, n: (x + torch.rand_like(x)) / n)  # rand_like of an integer tensor
    assert "not implemented yet" not in str(err.value) and "convert x to float" in cause_of(err)


# ---------------------------------------------------------------------------------------------
# Notebook 2


class ActNormPaperForm(nn.Module):
    """The paper's y = s * x + b with b = -mean / std, its init through `.data`."""

    def __init__(self, num_channels):
        super().__init__()
        self.s = nn.Parameter(torch.ones(1, num_channels, 1, 1))
        self.b = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x):
        if not self.initialized:
            mean, std = x.mean(dim=(0, 2, 3), keepdim=True), x.std(dim=(0, 2, 3), keepdim=True)
            self.s.data = 1 / (std + 1e-6)
            self.b.data = -mean / (std + 1e-6)
            self.initialized.fill_(True)
        h, w = x.shape[-2:]
        return self.s * x + self.b, (h * w * self.s.abs().log().sum()).expand(x.shape[0])

    def inverse(self, y):
        h, w = y.shape[-2:]
        return (y - self.b) / self.s, (-h * w * self.s.abs().log().sum()).expand(y.shape[0])


@pytest.mark.parametrize("cls", [ActNormLogScale, ActNormPaperForm], ids=["log-scale", "paper-form"])
def test_other_correct_actnorms_pass_visible_and_strict(cls):
    for dtype in (torch.float64, torch.float32):
        checks.check_actnorm_init(cls, dtype=dtype)
        checks.check_actnorm_flow(cls, dtype=dtype)
        checks.check_actnorm_state(cls, dtype=dtype)
    for seed in range(3):
        checks.check_actnorm_init(cls, channels=5, batch=2, hw=(3, 5), seed=seed, dtype=torch.float32, strict=True)
        checks.check_actnorm_flow(cls, channels=4, batch=3, hw=(3, 2), seed=seed, strict=True)
        checks.check_actnorm_state(cls, channels=6, batch=4, hw=(2, 2), seed=seed, strict=True)


def test_the_reference_actnorm_and_a_subclass_of_it_pass():
    # Reusing the course's ActNorm is the grader's note for the instructor, not a check failure.
    for cls in (flows.ActNorm, type("ActNorm", (flows.ActNorm,), {})):
        checks.check_actnorm_init(cls, strict=True)
        checks.check_actnorm_flow(cls, strict=True)
        checks.check_actnorm_state(cls, strict=True)


def _patched(**methods):
    return type("ActNorm", (flows.ActNorm,), methods)


def test_actnorm_parameters_must_stay_the_same_objects():
    def initialize(self, x):
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)
        self.loc = nn.Parameter(-flat.mean(1).view(1, -1, 1, 1))
        self.scale = nn.Parameter(1 / (flat.std(1).view(1, -1, 1, 1) + self.eps))
        self.initialized.fill_(True)

    cls = _patched(initialize=torch.no_grad()(initialize))
    checks.check_actnorm_flow(cls)  # as a flow it is fine
    with pytest.raises(checks.CheckFailed, match="optimizer") as err:
        checks.check_actnorm_init(cls)
    assert "new nn.Parameter" in cause_of(err)


def test_actnorm_negative_scale_names_log_abs():
    def forward(self, x):
        if not self.initialized:
            self.initialize(x)
        h, w = x.shape[-2:]
        return self.scale * (x + self.loc), (h * w * torch.log(self.scale).sum()).expand(x.shape[0])

    cls = _patched(forward=forward)
    with pytest.raises(checks.CheckFailed, match="negative") as err:
        checks.check_actnorm_flow(cls)
    assert "log|scale|" in cause_of(err) and "mask" not in str(err.value)


def test_actnorm_logdet_gradient_goes_through_the_flow_check():
    def forward(self, x):
        if not self.initialized:
            self.initialize(x)
        h, w = x.shape[-2:]
        return self.scale * (x + self.loc), (h * w * torch.log(self.scale.data.abs()).sum()).expand(x.shape[0])

    with pytest.raises(checks.CheckFailed, match="no gradient") as err:
        checks.check_actnorm_flow(_patched(forward=forward))
    assert "detached" in cause_of(err)


def test_actnorm_strict_flow_reads_hw_from_each_input():
    def forward(self, x):
        if not self.initialized:
            self.initialize(x)
            self.hw = x.shape[2] * x.shape[3]
        return self.scale * (x + self.loc), (self.hw * torch.log(self.scale.abs()).sum()).expand(x.shape[0])

    def inverse(self, y):
        return y / self.scale - self.loc, (-self.hw * torch.log(self.scale.abs()).sum()).expand(y.shape[0])

    cls = _patched(forward=forward, inverse=inverse)
    checks.check_actnorm_flow(cls)
    with pytest.raises(checks.CheckFailed, match="images after an init"):
        checks.check_actnorm_flow(cls, strict=True)


def test_actnorm_causes_are_not_guessed_for_an_unrelated_bug():
    def initialize(self, x):  # a scale from the max: neither the variance, nor the mean image, nor ...
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)
        self.loc.copy_(-flat.mean(1).view(1, -1, 1, 1))
        self.scale.copy_(1 / flat.abs().max(1).values.view(1, -1, 1, 1))
        self.initialized.fill_(True)

    with pytest.raises(checks.CheckFailed, match="std") as err:
        checks.check_actnorm_init(_patched(initialize=torch.no_grad()(initialize)))
    assert "Likely cause" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# Speed and the student's random state


def test_visible_checks_leave_the_random_state():
    import math

    class Affine(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.log_scale = nn.Parameter(torch.zeros(dim))
            self.shift = nn.Parameter(torch.zeros(dim))

        def forward(self, x):
            return x * self.log_scale.exp() + self.shift, self.log_scale.sum().expand(x.shape[0])

        def inverse(self, y):
            return (y - self.shift) * (-self.log_scale).exp(), -self.log_scale.sum().expand(y.shape[0])

    def brute(f, x):
        return torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(
            lambda v: f(v.reshape(x[i : i + 1].shape)).reshape(-1), x[i].reshape(-1))).logabsdet for i in range(x.shape[0])])

    state = torch.random.get_rng_state()
    checks.check_affine_flow(Affine)
    checks.check_brute_force_logdet(brute)
    checks.check_flow_log_prob(log_prob_flatten)
    checks.check_dequantize(lambda x, n: (x.float() + torch.rand(x.shape)) / n)
    checks.check_bits_per_dim(lambda lp, d, n: (-lp + d * math.log(n)) / (d * math.log(2)))
    checks.check_actnorm_init(ActNormLogScale)
    checks.check_actnorm_flow(ActNormLogScale)
    checks.check_actnorm_state(ActNormLogScale)
    assert torch.equal(state, torch.random.get_rng_state())


def test_actnorm_init_must_not_change_the_batch_in_place():
    def initialize(self, x):
        x -= x.mean(dim=(0, 2, 3), keepdim=True)  # the caller's batch is centred too
        self.loc.zero_()
        self.scale.copy_(1 / (x.std(dim=(0, 2, 3), keepdim=True) + self.eps))
        self.initialized.fill_(True)

    with pytest.raises(checks.CheckFailed, match="in place") as err:
        checks.check_actnorm_init(_patched(initialize=torch.no_grad()(initialize)))
    assert "in-place operation" in cause_of(err)


def test_actnorm_checks_do_not_import_dynamo():
    # torch.optim's first use imports torch._dynamo (seconds on a CPU, and it rewraps torch.manual_seed
    # in the student's kernel); the init check steps its own SGD instead.
    import subprocess
    import sys

    code = ("import sys, torch\nfrom glowcourse import checks, flows\n"
            "checks.check_actnorm_init(flows.ActNorm)\n"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("False"), out.stdout + out.stderr


def test_a_failed_check_shows_its_message_and_cause_and_no_frames_in_a_kernel(tmp_path):
    """What a student sees under a failed check cell (and nbgrader keeps for the feedback): the
    message and the likely cause; no frame of glowcourse/checks, no chained exception, no path."""
    import nbformat
    from nbclient import NotebookClient

    cells = ["import math\nfrom glowcourse import checks",
             "def bits_per_dim(log_prob, n_dims, n_bins):\n    return -log_prob / (n_dims * math.log(2))  # the bins' term missing\n"
             "checks.check_bits_per_dim(bits_per_dim)",
             "def bits_per_dim(log_prob, n_dims, n_bins):\n    return log_prob / 0 + {}[n_bins]  # crashes\n"
             "checks.check_bits_per_dim(bits_per_dim)"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, kernel_name="python3", timeout=120, allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    for cell, expect in ((nb.cells[1], "Likely cause"), (nb.cells[2], "raised KeyError")):
        (error,) = [o for o in cell.outputs if o.output_type == "error"]
        text = "\n".join(error.traceback)
        assert error.ename == "CheckFailed" and "bits_per_dim" in text and expect in text, text
        assert "glowcourse" not in text and "Traceback" not in text and "above exception" not in text, text
        assert not re.search(r"(^|\s)/\w", text), text  # no path of the machine that ran it


# ---------------------------------------------------------------------------------------------
# A check cell run too early: what the student sees


IMPORT_LINE = "from glowcourse import checks  # ModuleNotFoundError?"


def run_cells(tmp_path, sources, setup="pass"):
    """The cells' outputs after running them in order in a real kernel (errors allowed)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in [setup, *sources]])
    NotebookClient(nb, kernel_name="python3", timeout=120, allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb.cells[1:]


def error_of(cell):
    (error,) = [o for o in cell.outputs if o.output_type == "error"]
    return error, re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error.traceback))


def released_test_cells(assignment):
    import nbformat

    from autograder import cells, course

    (nb,) = course.notebooks(assignment)
    return [c for c in nbformat.read(nb.release, 4).cells if cells.is_test(c)]


def test_every_check_cell_starts_with_the_import_and_its_hint():
    """A check cell run first in a fresh runtime fails on its first line, whose comment (shown
    in the traceback) says to run the setup cell; one line, in the source and the release."""
    import nbformat

    from autograder import cells, course

    for nb in course.notebooks():
        for path in (nb.source, nb.release):
            for cell in (c for c in nbformat.read(path, 4).cells if cells.is_test(c)):
                first, *rest = cell.source.splitlines()
                assert first.startswith(IMPORT_LINE) and "setup" in first, (path, first)
                assert not any(IMPORT_LINE in line for line in rest), path


def test_exercise_table_matches_the_solutions():
    """The NameError hint's table (exercise, heading, names it defines) is what solutions/ says."""
    import ast

    import nbformat

    from autograder import cells, course
    from glowcourse import hints

    derived = {}
    for nb in course.notebooks():
        heading, found = None, []
        for cell in nbformat.read(nb.source, 4).cells:
            if cell.cell_type == "markdown" and re.search(r"^#+ ", cell.source, re.M):
                heading = re.findall(r"^#+ (.+)$", cell.source, re.M)[-1].strip()
            elif cells.is_solution(cell):
                tree = ast.parse(cells.strip_solution_markers(cell.source))
                names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
                names |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
                found.append((cells.grade_id(cell), heading, tuple(sorted(names))))
        derived[nb.assignment] = tuple(found)
    assert {a: tuple((g, t, tuple(sorted(n))) for g, t, n in ex) for a, ex in hints.EXERCISES.items()} == derived
    modules = {f.__module__.rsplit(".", 1)[-1] for f in vars(checks).values() if callable(f) and f.__name__.startswith("check_")}
    assert set(hints.CHECK_MODULES) == modules - {"common"} and set(hints.CHECK_MODULES.values()) == set(derived)


def test_name_error_hint_says_only_what_is_known():
    """An exercise's name: which exercise (definite when the cell's checks name the notebook,
    conditional otherwise); another name read by the cell: run the cells above; a name missing
    inside a function: no hint. Every hint says what to do after a runtime restart."""
    from glowcourse.hints import name_error_hint

    hint = name_error_hint("ActNorm", ["02_actnorm"])
    assert '"2.2 The layer"' in hint and "`actnorm`" in hint and "Run before" in hint
    assert "notebook 5" not in name_error_hint("ActNorm", ["05_multiscale"]) and "cell above" in name_error_hint("ActNorm", ["05_multiscale"])
    assert "If this is notebook 2" in name_error_hint("ActNorm") and "Otherwise" in name_error_hint("ActNorm")
    assert "If a cell above defines `lgdet`" in name_error_hint("lgdet")
    assert name_error_hint("lgdet", in_cell=False) is None
    assert "If this is notebook 5" in name_error_hint("FlowStep", in_cell=False)


def test_a_check_cell_before_its_exercise_says_which_cell_to_run_and_still_fails(tmp_path):
    """After a runtime restart (glowcourse installed, nothing run) the released check cell, run
    alone, fails with the NameError of its exercise's class and a hint naming the exercise;
    it stays an error output (nbgrader scores it 0). A typo inside a function gets no hint,
    an UnboundLocalError is IPython's own."""
    from nbgrader.utils import determine_grade

    check = released_test_cells("02_actnorm")[0]
    typo = "def f():\n    return lgdet\nf()"
    unbound = "def g():\n    y = y + 1\ng()"
    cells = run_cells(tmp_path, [check.source, typo, unbound])
    error, text = error_of(cells[0])
    assert error.ename == "NameError" and error.evalue == "name 'ActNorm' is not defined", text
    assert "checks.check_actnorm_init(ActNorm)" in text and "NameError: name 'ActNorm' is not defined" in text
    assert '"2.2 The layer" (grade_id `actnorm`)' in text and "Runtime > Run before" in text, text
    cells[0].metadata = check.metadata
    assert determine_grade(cells[0], log=None) == (0, check.metadata.nbgrader.points)
    for cell, ename in ((cells[1], "NameError"), (cells[2], "UnboundLocalError")):
        error, text = error_of(cell)
        assert error.ename == ename and "Hint" not in text and "Run before" not in text, text


def test_a_check_cell_in_a_fresh_runtime_points_to_the_setup_cell(tmp_path):
    """In a fresh Colab runtime glowcourse is not installed yet: the check cell's first line
    fails, and the traceback quotes it with its comment."""
    block = ("import sys\n"
             "class NoGlowcourse:  # a fresh runtime: the package is not installed\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name.split('.')[0] == 'glowcourse':\n"
             "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
             "sys.meta_path.insert(0, NoGlowcourse())")
    check = released_test_cells("01_change_of_variables")[0]
    (cell,) = run_cells(tmp_path, [check.source], setup=block)
    error, text = error_of(cell)
    assert error.ename == "ModuleNotFoundError" and "glowcourse" in error.evalue, text
    assert "Run the first code cell (setup) before this one." in text, text


def test_name_error_hint_finds_the_cell_as_ipython_7_names_it():
    """IPython 7 (Colab's) compiles a cell as "<cell line: 0>", not "<module>": the cell is found
    by being module-level code run in the user's namespace, whatever its name."""
    import types

    from glowcourse.hints import hint_for

    shell = types.SimpleNamespace(user_ns={"checks": checks})
    code = compile("checks.check_actnorm_init(ActNorm)", "<ipython-input-1-0>", "exec").replace(co_name="<cell line: 0>")
    with pytest.raises(NameError) as err:
        exec(code, shell.user_ns)
    hint = hint_for(shell, err.type, err.value, err.tb)
    assert hint and '"2.2 The layer"' in hint
    assert hint_for(shell, UnboundLocalError, UnboundLocalError("x"), err.tb) is None
