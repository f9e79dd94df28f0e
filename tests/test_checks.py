"""The checks: every correct answer passes, every catalogued mistake fails, with a reason.

Runs each notebook's exercises and checks in-process (autograder.catalogues.harness): seconds, not a
kernel per case. tests/test_grading.py repeats a sample of this through real nbgrader.
"""
import pytest
import torch
from torch import nn

from autograder import cells, course
from autograder.catalogues import harness, report, samples
from glowcourse import checks

NOTEBOOKS = course.notebooks()
MISTAKES = [(nb, m) for nb in NOTEBOOKS for m in samples.mistakes(nb.assignment)]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.name)
def test_solutions_pass_every_visible_and_hidden_check(nb):
    results = harness.run(nb)
    assert results, "no test cells found"
    for gid, outcome in results.items():
        assert outcome.visible is None and outcome.hidden is None, (gid, outcome)
        assert "\u2714" in outcome.output  # each check says it passed


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.name)
def test_blank_exercises_fail_every_check_saying_not_implemented(nb):
    results = harness.run(nb, cells.solutions(samples.blank(nb)))
    for gid, outcome in results.items():
        assert outcome.visible and "not implemented" in outcome.visible, (gid, outcome.visible)


@pytest.mark.parametrize("nb, mistake", MISTAKES, ids=[m["name"] for _, m in MISTAKES])
def test_each_catalogued_mistake_fails_its_hidden_and_visible_checks_with_a_cause(nb, mistake):
    results = harness.run(nb, cells.solutions(samples.with_mistake(samples.filled(nb), mistake)))
    targets = mistake.get("fails", [f"{mistake['cell']}_check"])
    for target in targets:
        assert results[target].hidden is not None, f"hidden checks of {target} accept the mistake {mistake['name']}"
        assert results[target].visible is not None, f"visible check of {target} accepts the mistake {mistake['name']}"
    assert "cause" in mistake, f"{mistake['name']}: give the catalogue entry a `cause`"
    message = results[targets[0]].visible
    if mistake["cause"]:
        assert mistake["cause"].lower() in report.likely_cause(message).lower(), (
            f"{mistake['name']}: the visible message should name the cause {mistake['cause']!r}:\n{message}")
    else:  # no specific cause can be told apart: the message must not guess one
        assert "Likely cause" not in message, f"{mistake['name']}: a guess is shown:\n{message}"
    others = {gid: o for gid, o in results.items() if gid not in targets and (o.visible or o.hidden)}
    assert not others, f"{mistake['name']} also failed {sorted(others)}: {others}"


VARIANTS = [(nb, v) for nb in NOTEBOOKS for v in samples.variants(nb.assignment)]


@pytest.mark.parametrize("nb, variant", VARIANTS, ids=[v["name"] for _, v in VARIANTS])
def test_each_catalogued_correct_variant_passes_every_check(nb, variant):
    results = harness.run(nb, cells.solutions(samples.with_mistake(samples.filled(nb), variant)))
    failed = {gid: o for gid, o in results.items() if o.visible or o.hidden}
    assert not failed, f"{variant['name']} refused: {failed}"


def test_every_exercise_has_at_least_three_catalogued_mistakes_and_only_exercises_have_them():
    per_cell = {}
    for nb, m in MISTAKES:
        per_cell[(nb.assignment, m["cell"])] = per_cell.get((nb.assignment, m["cell"]), 0) + 1
    exercises = {(nb.assignment, gid) for nb in NOTEBOOKS for gid in cells.solutions(samples.filled(nb))}
    assert set(per_cell) == exercises, (sorted(exercises - set(per_cell)), sorted(set(per_cell) - exercises))
    assert min(per_cell.values()) >= 3, {k: v for k, v in per_cell.items() if v < 3}


def test_nine_in_ten_catalogued_mistakes_have_a_specific_cause():
    specific = [m["name"] for _, m in MISTAKES if m.get("cause")]
    assert len(specific) >= 0.9 * len(MISTAKES), sorted(m["name"] for _, m in MISTAKES if not m.get("cause"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.name)
def test_check_cells_leave_the_students_random_state_as_they_found_it(nb):
    results = harness.run(nb)
    changed = [gid for gid, outcome in results.items() if not outcome.rng_kept]
    assert not changed, f"these check cells change torch's global random state: {changed}"


# Correct answers that differ from the solutions must pass too.


class AffineViaDivision(nn.Module):
    """Same map written with division and torch.exp, log-det summed with a keepdim trick."""

    def __init__(self, dim):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        y = x / torch.exp(-self.log_scale) + self.shift
        return y, torch.ones_like(x).mul(self.log_scale).sum(dim=1)

    def inverse(self, y):
        return (y - self.shift) / torch.exp(self.log_scale), -(torch.ones_like(y) * self.log_scale).sum(-1)


def brute_force_with_jacrev(f, x):
    jac = torch.vmap(torch.func.jacrev(lambda v: f(v[None])[0]))(x)  # (B, *shape, *shape)
    d = x[0].numel()
    return torch.linalg.slogdet(jac.reshape(x.shape[0], d, d))[1]


def test_correct_variants_pass():
    checks.check_affine_flow(AffineViaDivision)
    checks.check_affine_flow(AffineViaDivision, dim=6, batch=9, seed=11, dtype=torch.float32)
    checks.check_brute_force_logdet(brute_force_with_jacrev)
    checks.check_brute_force_logdet(brute_force_with_jacrev, batch=5, seed=7)
    checks.check_dequantize(lambda x, n: (x.double() + torch.rand(x.shape, dtype=torch.float64)) / n)
    checks.check_bits_per_dim(lambda lp, d, n: -(lp / d - torch.log(torch.tensor(float(n), dtype=lp.dtype))) / torch.log(torch.tensor(2.0, dtype=lp.dtype)))


def test_check_messages_name_the_cause():
    with pytest.raises(checks.CheckFailed, match="(?s)dequantize.*n_bins - 1"):
        checks.check_dequantize(lambda x, n: (x.float() + torch.rand(x.shape)) / (n - 1))
    with pytest.raises(checks.CheckFailed, match="no noise"):
        checks.check_dequantize(lambda x, n: (x.float() + 0.5) / n)
    with pytest.raises(checks.CheckFailed, match="uniform"):
        checks.check_dequantize(lambda x, n: ((x.float() + 0.5 + 0.05 * torch.randn(x.shape)) / n))
    with pytest.raises(checks.CheckFailed, match="nats"):
        checks.check_bits_per_dim(lambda lp, d, n: (-lp + d * torch.log(torch.tensor(float(n)))) / d)
    with pytest.raises(checks.CheckFailed, match=r"shape \(\), expected \(3,\)|single number"):
        checks.check_brute_force_logdet(lambda f, x: torch.tensor(0.0))
    with pytest.raises(checks.CheckFailed, match="normalising constant"):
        checks.check_flow_log_prob(lambda flow, x: (lambda z, ld: (-0.5 * z**2).sum(1) + ld)(*flow(x)))


def test_checks_return_none_so_nbgrader_gives_full_points(capsys):
    # nbgrader reads a number returned by the last line of a test cell as partial credit.
    assert checks.check_bits_per_dim(lambda lp, d, n: (-lp + d * torch.log(torch.tensor(float(n), dtype=lp.dtype))) / (d * torch.log(torch.tensor(2.0, dtype=lp.dtype)))) is None
    assert "bits_per_dim" in capsys.readouterr().out


# Notebooks 2 and 3: the package's reference layers and other correct formulations pass.

from glowcourse import flows  # noqa: E402


class ActNormLogScale(nn.Module):
    """(x - b) * exp(-log_s): a log-scale parametrisation, biased std, a uint8 flag."""

    def __init__(self, num_channels):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.log_s = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))

    def forward(self, x):
        if self.initialized.item() == 0:
            with torch.no_grad():
                self.b.copy_(x.mean(dim=(0, 2, 3), keepdim=True))
                self.log_s.copy_(torch.log(x.std(dim=(0, 2, 3), keepdim=True, unbiased=False) + 1e-6))
                self.initialized.fill_(1)
        hw = x.shape[2] * x.shape[3]
        return (x - self.b) * torch.exp(-self.log_s), (-hw * self.log_s.sum()).repeat(x.shape[0])

    def inverse(self, y):
        hw = y.shape[2] * y.shape[3]
        return y * torch.exp(self.log_s) + self.b, (hw * self.log_s.sum()).repeat(y.shape[0])


class InvConvLUScipy(nn.Module):
    """LU from scipy.linalg.lu, inverse by triangular solves instead of inv()."""

    def __init__(self, num_channels, weight=None):
        super().__init__()
        import scipy.linalg

        w = flows.random_rotation(num_channels) if weight is None else weight.clone()
        p, lower, upper = (torch.from_numpy(a).to(w.dtype) for a in scipy.linalg.lu(w.double().numpy()))
        self.register_buffer("perm", p)
        self.register_buffer("signs", torch.sign(torch.diagonal(upper)))
        self.register_buffer("lower_mask", torch.tril(torch.ones_like(w), -1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(upper)
        self.logabs = nn.Parameter(torch.diagonal(upper).abs().log())

    def factors(self):
        eye = torch.eye(self.perm.shape[0], dtype=self.lower.dtype)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.signs * self.logabs.exp())
        return lower, upper

    def calc_weight(self):
        lower, upper = self.factors()
        return self.perm @ lower @ upper

    def forward(self, x):
        b, c, h, w = x.shape
        y = torch.einsum("oc,bchw->bohw", self.calc_weight(), x)
        return y, (h * w * self.logabs.sum()).expand(b)

    def inverse(self, y):
        b, c, h, w = y.shape
        lower, upper = self.factors()
        cols = (self.perm.T @ y.permute(1, 0, 2, 3).reshape(c, -1))
        cols = torch.linalg.solve_triangular(lower, cols, upper=False, unitriangular=True)
        cols = torch.linalg.solve_triangular(upper, cols, upper=True)
        return cols.reshape(c, b, h, w).permute(1, 0, 2, 3), (-h * w * self.logabs.sum()).expand(b)


@pytest.mark.parametrize("cls", [flows.ActNorm, ActNormLogScale])
def test_actnorm_variants_pass(cls):
    for dtype in (torch.float64, torch.float32):
        checks.check_actnorm_init(cls, dtype=dtype)
        checks.check_actnorm_init(cls, channels=5, batch=2, hw=(3, 5), seed=3, dtype=dtype)
        checks.check_actnorm_flow(cls, dtype=dtype)
        checks.check_actnorm_state(cls, dtype=dtype)


@pytest.mark.parametrize("cls", [flows.InvConv2dLU, InvConvLUScipy])
def test_lu_variants_pass(cls):
    checks.check_invconv_lu(cls)
    checks.check_invconv_lu(cls, channels=6, batch=3, hw=(3, 2), seed=7)
    checks.check_invconv_lu(cls, channels=3, seed=8, dtype=torch.float32)
    checks.check_invconv_lu_training(cls, channels=8, steps=10, seed=9)


def test_dense_reference_passes():
    checks.check_random_rotation(flows.random_rotation, sizes=(2, 7, 64), seed=3)
    checks.check_invconv_dense(flows.InvConv2d)
    checks.check_invconv_dense(flows.InvConv2d, channels=2, batch=1, hw=(2, 2), seed=5, dtype=torch.float32)


# Notebooks 4 and 5.


def squeeze_spatial_major(x):
    """Another consistent channel order: channel (2 di + dj) * C + c."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze_spatial_major(x):
    b, c4, h, w = x.shape
    return x.view(b, 2, 2, c4 // 4, h, w).permute(0, 3, 4, 1, 5, 2).reshape(b, c4 // 4, 2 * h, 2 * w)


def squeeze_pixel_unshuffle(x):
    return torch.nn.functional.pixel_unshuffle(x, 2)


def unsqueeze_pixel_shuffle(x):
    return torch.nn.functional.pixel_shuffle(x, 2)


class SplitWithDistributions(flows.Split):
    """The same split written with torch.distributions."""

    def forward(self, x):
        x_a, z = x.chunk(2, 1)
        mean, log_sd = self.prior_params(x_a)
        return x_a, z, torch.distributions.Normal(mean, log_sd.exp()).log_prob(z).sum(dim=(1, 2, 3))

    def inverse(self, x_a, z=None, temperature=1.0):
        if z is None:
            mean, log_sd = self.prior_params(x_a)
            z = torch.distributions.Normal(mean, temperature * log_sd.exp() + 1e-30).sample() if temperature > 0 else mean
        return torch.cat([x_a, z], 1)


@pytest.mark.parametrize("pair", [(flows.squeeze, flows.unsqueeze), (squeeze_spatial_major, unsqueeze_spatial_major),
                                  (squeeze_pixel_unshuffle, unsqueeze_pixel_shuffle)], ids=["reference", "spatial-major", "pixel-shuffle"])
def test_squeeze_variants_pass(pair):
    checks.check_squeeze(*pair)
    checks.check_squeeze(*pair, channels=5, hw=(6, 4), batch=3)


def test_coupling_and_multiscale_references_pass():
    checks.check_zero_conv(flows.ZeroConv2d)
    checks.check_additive_coupling(flows.AdditiveCoupling)
    checks.check_affine_coupling(flows.AffineCoupling)
    checks.check_affine_coupling(flows.AffineCoupling, channels=6, hw=(3, 2), seed=4, dtype=torch.float32)
    for split in (flows.Split, SplitWithDistributions):
        checks.check_split(split)
        checks.check_split(split, channels=6, batch=2, hw=(3, 3), seed=3)
    checks.check_flow_step(flows.FlowStep)
    checks.check_glow(flows.Glow)
    checks.check_glow(flows.Glow, K=1, L=3, image_size=8, batch=2, seed=6)


# Notebook 6: other correct ways to write the capstone's functions.


@torch.no_grad()
def evaluate_all_at_once(model, images, n_bins, batch_size=256, seed=0):
    import glowcourse

    y = glowcourse.dequantize(images, n_bins, torch.Generator().manual_seed(seed)) - 0.5
    return glowcourse.bits_per_dim(model(y)[1], images[0].numel(), n_bins).mean()  # a 0-d tensor is fine


@torch.no_grad()
def interpolate_with_lerp(model, x1, x2, steps):
    z1, z2 = model(x1)[0], model(x2)[0]
    ts = torch.linspace(0, 1, steps)
    return torch.cat([model.inverse([torch.lerp(a, b, float(t)) for a, b in zip(z1, z2)]) for t in ts])


@torch.no_grad()
def direction_without_batch_dim(model, x, labels, a, b):
    return [z[labels == a].mean(0) - z[labels == b].mean(0) for z in model(x)[0]]


@torch.no_grad()
def manipulate_by_levels(model, x, direction, scale):
    zs = model(x)[0]
    return model.inverse([z + scale * d.reshape(1, *z.shape[1:]) for z, d in zip(zs, direction)])


def test_capstone_variants_pass():
    checks.check_evaluate_bpd(evaluate_all_at_once)
    checks.check_evaluate_bpd(evaluate_all_at_once, n=130, batch_size=50, seed=3)
    checks.check_interpolate(interpolate_with_lerp)
    checks.check_interpolate(interpolate_with_lerp, steps=9, seed=6)
    checks.check_sample_images(lambda model, n, t: torch.clamp(model.sample(n, temperature=t) + 0.5, min=0.0, max=1.0))
    checks.check_manipulate(direction_without_batch_dim, manipulate_by_levels)


def test_report_command_prints_the_catalogue(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "report.txt"
    proc = subprocess.run([sys.executable, "-m", "autograder", "report", "--assignment", "02_actnorm", "--out", str(out)],
                          cwd=course.ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ms = [m for m in samples.mistakes("02_actnorm") if m["cell"] == "actnorm"]
    vs = [v for v in samples.variants("02_actnorm") if v["cell"] == "actnorm"]
    n, k = len(ms), len(vs)
    named = sum(bool(m.get("cause")) for m in ms)
    # the terminal: a summary row per exercise, lines that fit it; stderr: where the run is
    assert ["02", "actnorm", *map(str, (n, n, n, named, k, k))] in [line.split() for line in proc.stdout.splitlines()]
    assert "missed or refused" not in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines() if str(out) not in line) <= 100
    assert f"[report {n + k}/{n + k}] 02_actnorm actnorm: variant {vs[-1]['name']}" in proc.stderr
    # the file: the whole report, with the messages a student sees
    text = out.read_text()
    assert (f"actnorm: mistakes {n} (hidden caught {n}, visible caught {n}, cause named {named}); "
            f"variants {k} (accepted {k})") in text, text[-3000:]
    assert text.count("Likely cause") >= named and str(out) in proc.stdout


# The log-det's gradient: training follows it, so a detached log-det is a wrong answer.

GRADIENT_LAYERS = ["ActNorm", "InvConv2d", "InvConv2dLU", "AffineCoupling", "FlowStep"]


def _trained_looking(cls_name, detach):
    from test_flows import make  # an initialised layer with moved parameters, and its input

    class Layer(getattr(flows, cls_name)):
        def forward(self, x):
            y, logdet = super().forward(x)
            return y, (logdet.detach() if detach else logdet)

    return make(Layer, 4)


@pytest.mark.parametrize("cls_name", GRADIENT_LAYERS)
def test_logdet_gradient_matches_the_brute_force_for_the_reference_layers(cls_name):
    layer, x = _trained_looking(cls_name, detach=False)
    checks.check_logdet_gradient(layer, x, name=cls_name)


@pytest.mark.parametrize("cls_name", GRADIENT_LAYERS)
def test_a_detached_logdet_fails_with_its_cause(cls_name):
    layer, x = _trained_looking(cls_name, detach=True)
    with pytest.raises(checks.CheckFailed, match="no gradient") as err:
        checks.check_flow_layer(layer, x, name=cls_name)
    assert "detached" in report.likely_cause(str(err.value))
