"""Benchmark: the course's Glow (plain and fast path) against normflows' Glow, in one run.

Every model: 1x28x28 MNIST (the embedded 5,000-image subset: 4,000 train, 1,000 test), L = 2
levels of K steps (ActNorm, LU 1x1 convolution, affine coupling with a sigmoid scale, zero
initialised last layer), ``hidden`` channels in the coupling networks; Adam with the same
learning rate, warm-up and gradient clipping, the same batches (one data order and one
dequantization noise stream per seed), the same budget: ``--steps`` steps, or ``--seconds`` of
training each. Reports the test bits/dim (uniform dequantization, seeded) and the training
throughput in images/s.

The models, one row each:

- ``course``: the model notebooks 5 and 6 teach (``glowcourse.flows.Glow``: split priors
  conditioned on the kept half, Glow's ``split2d``, learning at ``--prior-rate`` of the rate);
- ``fast``: the same model through ``glowcourse.training.fast_log_prob`` (``torch.compile`` and
  ``channels_last``; bfloat16 convolutions with ``--autocast bf16``), optionally with a larger
  batch and a matched learning rate (``--fast-batch-size``, ``--fast-lr``). Compilation happens on a
  forward and backward pass before the clock starts (no parameter changes); its time is printed;
- ``per-channel``: the course's model with per-channel split priors (``conditional_prior=False``),
  the peer's kind of prior;
- ``normflows``: normflows' ``MultiscaleFlow`` Glow (per-channel priors, ``GlowBase``), built as in
  its documentation's Glow example; skipped with a message when normflows is not installed.

    pip install normflows           # once; it takes the installed torch
    python scripts/bench_glow.py                                   # CPU, 600 steps, seed 0
    python scripts/bench_glow.py --seeds 3 --models course,per-channel,normflows
    python scripts/bench_glow.py --device cuda --seconds 120 --fast-batch-size 256 --fast-lr 2e-3
"""
import argparse
import copy
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import glowcourse  # noqa: E402
from glowcourse.flows import Glow  # noqa: E402
from glowcourse.training import fast_log_prob  # noqa: E402

MODELS = ("course", "fast", "per-channel", "normflows")


def normflows_glow(K: int, L: int, hidden: int, shape=(1, 28, 28)):
    """normflows' multiscale Glow, built as in its documentation's Glow example."""
    import normflows as nf

    c, h, w = shape
    q0, merges, flows = [], [], []
    for i in range(L):
        level = [nf.flows.GlowBlock(c * 2 ** (L + 1 - i), hidden, split_mode="channel", scale=True) for _ in range(K)]
        level += [nf.flows.Squeeze()]
        flows += [level]
        if i > 0:
            merges += [nf.flows.Merge()]
            latent_shape = (c * 2 ** (L - i), h // 2 ** (L - i), w // 2 ** (L - i))
        else:
            latent_shape = (c * 2 ** (L + 1), h // 2**L, w // 2**L)
        q0 += [nf.distributions.GlowBase(latent_shape)]
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)


class Runner:
    """One model under test: ``log_prob(y)`` of dequantized images ``y`` in [0, 1) for training,
    ``eval_log_prob`` for evaluation (the plain model: no recompilation for the short last batch),
    and the batch size and learning rate it trains with."""

    def __init__(self, name, model, log_prob, batch_size, lr, eval_log_prob=None):
        self.name, self.model, self.log_prob = name, model, log_prob
        self.eval_log_prob = eval_log_prob or log_prob
        self.batch_size, self.lr = batch_size, lr
        self.compile_seconds = None


def course_model(args, seed, conditional=True):
    torch.manual_seed(seed)
    return Glow(1, args.K, args.L, args.hidden, image_size=28, conditional_prior=conditional,
                prior_rate=args.prior_rate).to(args.device)


def make_runner(kind, args, seed):
    """The runner of one model kind, or None (with a message) when it cannot be built here."""
    if kind == "course":
        m = course_model(args, seed)
        return Runner("course Glow", m, lambda y: m(y - 0.5)[1], args.batch_size, args.lr)
    if kind == "per-channel":
        m = course_model(args, seed, conditional=False)
        return Runner("course Glow, per-channel priors", m, lambda y: m(y - 0.5)[1], args.batch_size, args.lr)
    if kind == "fast":
        m = course_model(args, seed)  # the same initial parameters as "course"
        batch_size = args.fast_batch_size or args.batch_size
        return Runner("course Glow, fast path", m, None, batch_size, args.fast_lr or args.lr,
                      eval_log_prob=lambda y: m(y - 0.5)[1])
    if kind == "normflows":
        try:
            torch.manual_seed(seed)
            peer = normflows_glow(args.K, args.L, args.hidden).to(args.device)
        except ImportError:
            print("normflows is not installed (pip install normflows): its row is left out")
            return None
        return Runner("normflows Glow", peer, lambda y: peer.log_prob(y, None), args.batch_size, args.lr)
    raise ValueError(f"unknown model {kind!r}; choose from {', '.join(MODELS)}")


def bpd(log_prob, n_dims=784, n_bins=256):
    return glowcourse.bits_per_dim(log_prob, n_dims, n_bins)


@torch.no_grad()
def evaluate(runner, images, device, batch_size=250):
    g = torch.Generator().manual_seed(0)
    total = 0.0
    for batch in images.split(batch_size):
        y = glowcourse.dequantize(batch, 256, g).to(device)
        total += bpd(runner.eval_log_prob(y)).sum().item()
    return total / len(images)


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="course,fast,normflows",
                        help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--steps", type=int, default=600, help="training steps per model (unless --seconds)")
    parser.add_argument("--seconds", type=float, default=None, help="train each model for this wall-clock time instead")
    parser.add_argument("--K", type=int, default=8)
    parser.add_argument("--L", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100, help="linear learning-rate warm-up, in steps")
    parser.add_argument("--clip", type=float, default=200.0,
                        help="gradient-norm clipping threshold (at 50 it shrank nearly every step of these models)")
    parser.add_argument("--prior-rate", type=float, default=0.1,
                        help="the course model's conditional priors learn at this fraction of the rate (1: Glow's split2d)")
    parser.add_argument("--fast-batch-size", type=int, default=None, help="the fast path's batch (default: --batch-size)")
    parser.add_argument("--fast-lr", type=float, default=None, help="the fast path's learning rate (default: --lr)")
    parser.add_argument("--autocast", choices=("none", "bf16"), default="none",
                        help="the fast path's convolutions in bfloat16 (log-dets stay float32)")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode of the fast path (e.g. reduce-overhead)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seeds", type=int, default=1, help="train each model with seeds 0..N-1 and report mean +- sd")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in args.models:
        if m not in MODELS:
            parser.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    return args


def main(argv=None):
    args = parse_args(argv)
    train, test = glowcourse.load_mnist_subset("train"), glowcourse.load_mnist_subset("test")
    budget = f"{args.seconds:g} s each" if args.seconds else f"{args.steps} steps"
    print(f"data: {train.name} ({len(train)}) / {test.name} ({len(test)}); K={args.K} L={args.L} hidden={args.hidden} "
          f"batch={args.batch_size} lr={args.lr:g} warmup={args.warmup} clip={args.clip:g} prior-rate={args.prior_rate:g} "
          f"budget={budget} device={args.device} torch={torch.__version__} threads={torch.get_num_threads()}", flush=True)
    results = []
    for seed in range(args.seeds):
        results += run_seed(args, train, test, seed)
    if args.seeds > 1:
        print(f"\nover seeds 0..{args.seeds - 1}:")
        for name in dict.fromkeys(r["name"] for r in results):
            vals = torch.tensor([r["test_bpd"] for r in results if r["name"] == name])
            speed = torch.tensor([r["images_per_s"] for r in results if r["name"] == name])
            print(f"{name:32s} test {vals.mean():.3f} +- {vals.std():.3f} bits/dim  {speed.mean():7.1f} images/s  "
                  f"({', '.join(f'{v:.3f}' for v in vals.tolist())})")
    return results


def fast_path(runner, args, first_batch):
    """Build the fast path's log_prob and compile it on one forward and backward pass (the
    gradients are discarded: the parameters do not change)."""
    compiled = fast_log_prob(runner.model, compile=True, channels_last=True,
                             autocast=torch.bfloat16 if args.autocast == "bf16" else None, mode=args.compile_mode)
    runner.log_prob = lambda y: compiled(y - 0.5)
    sync(args.device)
    start = time.perf_counter()
    bpd(runner.log_prob(first_batch)).mean().backward()
    runner.model.zero_grad(set_to_none=True)
    sync(args.device)
    runner.compile_seconds = time.perf_counter() - start


def run_seed(args, train, test, seed):
    """Train every model once: model initialisation, data order and dequantization noise from
    ``seed``. Every model draws its batches from the same order, in its own batch size."""
    g = torch.Generator().manual_seed(seed)
    biggest = max(args.batch_size, args.fast_batch_size or 0)
    n_orders = math.ceil((args.steps if not args.seconds else 20_000) * biggest / len(train)) + 1
    order = torch.cat([torch.randperm(len(train), generator=g) for _ in range(n_orders)])
    results = []
    for kind in args.models:
        runner = make_runner(kind, args, seed)
        if runner is None:
            continue
        params = sum(p.numel() for p in runner.model.parameters())
        optimizer = torch.optim.Adam(runner.model.parameters(), lr=runner.lr)
        init = glowcourse.dequantize(train.images[order[:256]], 256, torch.Generator().manual_seed(1 + 1000 * seed)).to(args.device)
        with torch.no_grad():  # data-dependent ActNorm initialisation on the same first batch
            (runner.eval_log_prob if kind == "fast" else runner.log_prob)(init)
        if kind == "fast":
            fast_path(runner, args, init[:runner.batch_size])
        noise = torch.Generator().manual_seed(2 + 1000 * seed)
        sync(args.device)
        start = time.perf_counter()
        step = 0
        while (time.perf_counter() - start < args.seconds) if args.seconds else step < args.steps:
            idx = order[step * runner.batch_size:(step + 1) * runner.batch_size]
            if len(idx) < runner.batch_size:
                break
            y = glowcourse.dequantize(train.images[idx], 256, noise).to(args.device)
            for group in optimizer.param_groups:
                group["lr"] = runner.lr * min(1.0, (step + 1) / args.warmup)
            loss = bpd(runner.log_prob(y)).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(runner.model.parameters(), args.clip)
            optimizer.step()
            step += 1
            if args.seconds and step % 20 == 0:  # the clock sees the device's work, not only its queue
                sync(args.device)
        sync(args.device)
        seconds = time.perf_counter() - start
        result = dict(name=runner.name, seed=seed, params=params, steps=step, batch_size=runner.batch_size,
                      test_bpd=evaluate(runner, test.images, args.device), seconds=seconds,
                      images_per_s=step * runner.batch_size / seconds, compile_seconds=runner.compile_seconds)
        results.append(result)
        extra = f", compiled in {runner.compile_seconds:.0f} s first" if runner.compile_seconds is not None else ""
        print(f"seed {seed}  {runner.name:32s} params {params:7d}  test {result['test_bpd']:.3f} bits/dim  "
              f"{result['images_per_s']:7.1f} images/s  ({step} steps of {runner.batch_size} in {seconds:.0f} s{extra}; "
              f"last train batch {loss.item():.3f})", flush=True)
    return results


if __name__ == "__main__":
    main()
