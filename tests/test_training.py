"""The fast path computes what the plain model computes; the split priors' rate is a learning
rate under Adam; the benchmark script runs."""
import importlib.util
from pathlib import Path

import pytest
import torch

from glowcourse.flows import Glow, Split, ZeroConv2d
from glowcourse.training import fast_log_prob

ROOT = Path(__file__).resolve().parents[1]


def initialised_glow(dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    model = Glow(1, K=2, L=2, hidden=8, image_size=8, **kw).to(dtype)
    x = torch.rand(6, 1, 8, 8, dtype=dtype) - 0.5
    with torch.no_grad():
        model(x)  # ActNorm's data-dependent init
        for p in model.parameters():  # away from the zero init: every layer and prior does something
            p.add_(0.05 * torch.randn_like(p))
    return model, x


def grads(model, log_prob, x):
    model.zero_grad()
    log_prob(x).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_path_without_compile_is_the_model_float64(channels_last):
    model, x = initialised_glow()
    want, want_grads = model(x)[1].detach(), grads(model, lambda v: model(v)[1], x)
    fast = fast_log_prob(model, compile=False, channels_last=channels_last)
    torch.testing.assert_close(fast(x), want, rtol=1e-12, atol=1e-10)
    for name, g in grads(model, fast, x).items():
        torch.testing.assert_close(g, want_grads[name], rtol=1e-10, atol=1e-10, msg=name)


def test_fast_path_autocast_keeps_log_prob_float32_and_close():
    model, x = initialised_glow(torch.float32)
    want = model(x)[1].detach()
    out = fast_log_prob(model, compile=False, autocast=torch.bfloat16)(x)
    assert out.dtype == torch.float32
    # bfloat16 convolutions: about 3 significant digits per value, and log p(x) sums over 64 of them
    torch.testing.assert_close(out, want, rtol=2e-2, atol=0.5)
    assert not torch.equal(out, want)  # autocast did take effect


def test_fast_path_refuses_uninitialised_actnorm():
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="ActNorm layers are not initialised"):
        fast_log_prob(Glow(1, K=1, L=2, hidden=4, image_size=4), compile=False)


@pytest.mark.slow
def test_fast_path_compiled_matches_the_model_and_its_gradients():
    model, x = initialised_glow(torch.float32)
    want, want_grads = model(x)[1].detach(), grads(model, lambda v: model(v)[1], x)
    fast = fast_log_prob(model)
    torch.testing.assert_close(fast(x), want, rtol=1e-4, atol=1e-3)
    for name, g in grads(model, fast, x).items():
        torch.testing.assert_close(g, want_grads[name], rtol=1e-3, atol=1e-3, msg=name)
    # A trained step later (parameters changed in place) the compiled code sees the new values.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.1)
    torch.testing.assert_close(fast(x), model(x)[1].detach(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_zeroconv_rate_is_a_learning_rate_under_adam(rate):
    """ZeroConv2d(rate=r) at learning rate lr trains exactly like ZeroConv2d(rate=1) at r * lr
    (Adam's step does not depend on the gradient's scale): the claim Split's prior rests on."""
    torch.manual_seed(0)
    x, target = torch.randn(8, 3, 5, 5, dtype=torch.float64), torch.randn(8, 4, 5, 5, dtype=torch.float64)
    slow, plain = ZeroConv2d(3, 4, rate=rate).double(), ZeroConv2d(3, 4).double()
    opt_slow = torch.optim.Adam(slow.parameters(), lr=1e-2, eps=1e-16)
    opt_plain = torch.optim.Adam(plain.parameters(), lr=rate * 1e-2, eps=1e-16)
    for _ in range(25):
        for layer, opt in ((slow, opt_slow), (plain, opt_plain)):
            opt.zero_grad()
            (layer(x) - target).square().mean().backward()
            opt.step()
    assert plain(x).abs().max() > 0.05  # it did learn
    torch.testing.assert_close(slow(x), plain(x), rtol=1e-8, atol=1e-10)


def test_split_prior_rate_defaults_and_reaches_the_prior():
    torch.manual_seed(0)
    assert Split(4).prior.rate == 0.1
    assert all(s.prior.rate == 1.0 for s in Glow(1, 1, 3, 4, image_size=8, prior_rate=1.0).splits)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    split = Split(4, prior_rate=0.25).double()
    mean, log_sd = split.prior_params(x[:, :2])
    assert mean.abs().max() == 0 and log_sd.abs().max() == 0  # starts as N(0, I) at any rate
    with torch.no_grad():
        split.prior.conv.bias.fill_(1.0)
        split.prior.scale.fill_(1.0)
    torch.testing.assert_close(split.prior_params(x[:, :2])[0], torch.full_like(mean, 0.25 * torch.e ** 0.75))


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_glow", ROOT / "scripts" / "bench_glow.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_runs_and_reports_every_model_it_can_build(capsys):
    bench = load_bench()
    results = bench.main(["--models", "course,per-channel", "--steps", "3", "--K", "1", "--hidden", "8", "--warmup", "2"])
    assert [r["name"] for r in results] == ["course Glow", "course Glow, per-channel priors"]
    for r in results:
        assert r["steps"] == 3 and 0 < r["test_bpd"] < 12 and r["images_per_s"] > 0
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "course,peer"])
    assert "unknown model 'peer'" in capsys.readouterr().err


def notebook_namespace(path, grade_ids, defines=()):
    """Run, in order, the first code cell (the imports) of a solution notebook and the code cells
    with one of ``grade_ids`` (given code and solutions) or defining a function of ``defines``,
    found by their metadata and content rather than by index, so that added cells do not move them."""
    import nbformat

    from autograder import cells as nbcells

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    chosen = [code[0]] + [c for c in code[1:] if nbcells.grade_id(c) in grade_ids
                          or any(c.source.startswith(f"def {name}(") for name in defines)]
    found = {nbcells.grade_id(c) for c in chosen} | {n for n in defines for c in chosen if c.source.startswith(f"def {n}(")}
    assert set(grade_ids) | set(defines) <= found, sorted(set(grade_ids) | set(defines) - found)
    ns = {}
    for c in chosen:
        exec(compile(c.source, f"{path.name}[{c.get('id', '?')}]", "exec"), ns)
    return ns


@pytest.mark.slow
def test_capstone_train_fast_path_follows_the_plain_loop(tmp_path, monkeypatch):
    """Chapter 6's ``train(..., fast=True)`` (the GPU branch's default) trains the same model as
    the plain loop: one epoch of a small Glow on the digits, short last batch included, with a
    checkpoint that a resumed plain run continues from."""
    monkeypatch.chdir(tmp_path)
    path = ROOT / "solutions" / "06_glow_in_practice" / "glow_in_practice.ipynb"
    # imports, setup, evaluate_bpd, the training step, the checkpoint functions, train
    ns = notebook_namespace(path, ["given_setup", "evaluate_bpd", "train_step", "checkpoint"], defines=["train"])
    assert len(ns["train_data"]) % 64, "the digits' last batch should be short, to exercise a second shape"
    histories = {}
    for fast in (False, True):
        torch.manual_seed(0)
        model = Glow(1, K=2, L=3, hidden=16, image_size=8)
        histories[fast] = ns["train"](model, ns["train_data"], ns["test_data"], epochs=1, seed=0, verbose=False,
                                      fast=fast, checkpoint=tmp_path / f"fast{fast}.pt")
    plain, fast = histories[False][0], histories[True][0]
    assert abs(plain["train"] - fast["train"]) < 1e-3 and abs(plain["test"] - fast["test"]) < 1e-3, (plain, fast)
    torch.manual_seed(0)
    resumed = ns["train"](Glow(1, K=2, L=3, hidden=16, image_size=8), ns["train_data"], ns["test_data"], epochs=2,
                          seed=0, verbose=False, checkpoint=tmp_path / "fastTrue.pt", resume=True)
    assert len(resumed) == 2 and resumed[0] == histories[True][0] and resumed[1]["test"] < plain["test"]


def test_checks_perturb_a_slow_prior_as_far_as_a_rate_one_prior():
    """The checks move a model's parameters to look trained; a prior learning at rate 0.1 must
    come out the same prior as at rate 1, or the checks would test a nearly flat one."""
    from glowcourse.checks.common import perturb

    x_a = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    priors = []
    for rate in (1.0, 0.1):
        split = Split(4, prior_rate=rate).double()
        torch.manual_seed(0)
        perturb(split, 0.3)
        priors.append(split.prior_params(x_a))
    for a, b in zip(*priors):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert priors[0][1].std() > 0.3  # the log-std really varies with x_a


def test_capstone_train_with_the_exercises_is_the_plain_loop(tmp_path):
    """Chapter 6's ``train`` calls the student's ``train_step``, ``save_checkpoint`` and
    ``load_checkpoint``; with the solutions it trains exactly as the loop written out in one
    piece (the loop before those exercises), and a run resumed from its checkpoint continues it."""
    path = ROOT / "solutions" / "06_glow_in_practice" / "glow_in_practice.ipynb"
    ns = notebook_namespace(path, ["given_setup", "evaluate_bpd", "train_step", "checkpoint"], defines=["train"])
    import math

    import glowcourse

    class Subset:  # 150 training images, batches of 64: a short last batch
        def __init__(self, data, n):
            self.images, self.n_bins, self.n_dims = data.images[:n], data.n_bins, data.n_dims

        def __len__(self):
            return len(self.images)

    train_data, test_data = Subset(ns["train_data"], 150), Subset(ns["test_data"], 40)
    to_model = ns["to_model"]

    def written_out(model, epochs, lr=1e-3, warmup=5, clip=200.0, seed=0):
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        order, noise = torch.Generator().manual_seed(2 * seed), torch.Generator().manual_seed(2 * seed + 1)
        with torch.no_grad():
            model(to_model(train_data.images[:512], train_data.n_bins, noise))
        losses = []
        for epoch in range(epochs):
            for i, batch in enumerate(torch.randperm(len(train_data), generator=order).split(64)):
                step = epoch * math.ceil(len(train_data) / 64) + i + 1
                for group in optimizer.param_groups:
                    group["lr"] = lr * min(1.0, step / warmup)
                x = to_model(train_data.images[batch], train_data.n_bins, noise)
                loss = glowcourse.bits_per_dim(model(x)[1], train_data.n_dims, train_data.n_bins).mean()
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                optimizer.step()
                losses.append(loss.item())
        return losses

    def glow():
        torch.manual_seed(0)
        return Glow(1, K=1, L=3, hidden=8, image_size=8)

    reference = glow()
    written_out(reference, epochs=2)
    model = glow()
    history = ns["train"](model, train_data, test_data, epochs=1, batch_size=64, warmup=5, seed=0, verbose=False,
                          checkpoint=tmp_path / "ckpt.pt")
    assert len(history) == 1 and set(history[0]) == {"epoch", "train", "test", "images_per_s"}
    resumed = glow()
    history = ns["train"](resumed, train_data, test_data, epochs=2, batch_size=64, warmup=5, seed=0, verbose=False,
                          checkpoint=tmp_path / "ckpt.pt", resume=True)
    assert len(history) == 2
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
