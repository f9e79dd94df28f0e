"""Benchmark: the course's Glow against normflows' Glow, same data, configuration and budget.

Both models: 1x28x28 MNIST (the embedded 5,000-image subset: 4,000 train, 1,000 test), L = 2
levels of K steps (ActNorm, LU 1x1 convolution, affine coupling with a sigmoid scale, zero
initialised last layer), `hidden` channels in the coupling networks, Adam with the same
learning rate and warm-up, the same batches, the same number of steps, gradient clipping.
Reports the test bits/dim (uniform dequantization, seeded) and the training throughput.

The split priors: normflows' are learned per-channel Gaussians (``GlowBase``); the course's
default conditions them on the kept half (Glow's ``split2d``). The script trains the course's
model both ways: with per-channel priors it is the same configuration as the peer's.

    pip install normflows           # once; it takes the installed torch
    python scripts/bench_glow.py [--steps 300] [--K 8] [--hidden 64] [--device cpu|cuda] [--clip 50] [--prior-lr 1] [--seeds 1]
"""
import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import glowcourse  # noqa: E402
from glowcourse.flows import Glow  # noqa: E402


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
    """One training / evaluation interface for both models: log p(y) of dequantized images y in [0, 1)."""

    def __init__(self, name, model, log_prob):
        self.name, self.model, self.log_prob = name, model, log_prob


def runners(K, L, hidden, device, seed=0):
    out = []
    for conditional in (False, True):
        torch.manual_seed(seed)
        course = Glow(1, K, L, hidden, image_size=28, conditional_prior=conditional).to(device)
        name = "course Glow, " + ("conditional priors" if conditional else "per-channel priors")
        out.append(Runner(name, course, lambda y, m=course: m(y - 0.5)[1]))
    try:
        torch.manual_seed(seed)
        peer = normflows_glow(K, L, hidden).to(device)
        out.append(Runner("normflows MultiscaleFlow (Glow)", peer, lambda y: peer.log_prob(y, None)))
    except ImportError:
        print("normflows is not installed (pip install normflows): benchmarking the course's model only")
    return out


def bpd(log_prob, n_dims=784, n_bins=256):
    return glowcourse.bits_per_dim(log_prob, n_dims, n_bins)


@torch.no_grad()
def evaluate(runner, images, device, batch_size=250):
    g = torch.Generator().manual_seed(0)
    total = 0.0
    for batch in images.split(batch_size):
        y = glowcourse.dequantize(batch, 256, g).to(device)
        total += bpd(runner.log_prob(y)).sum().item()
    return total / len(images)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--K", type=int, default=8)
    parser.add_argument("--L", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--clip", type=float, default=50.0, help="gradient-norm clipping threshold")
    parser.add_argument("--prior-lr", type=float, default=1.0,
                        help="learning rate of the course models' split priors, as a fraction of --lr")
    parser.add_argument("--seeds", type=int, default=1, help="train each model with seeds 0..N-1 and report mean +- sd")
    args = parser.parse_args()
    train, test = glowcourse.load_mnist_subset("train"), glowcourse.load_mnist_subset("test")
    print(f"data: {train.name} ({len(train)}) / {test.name} ({len(test)}); K={args.K} L={args.L} hidden={args.hidden} "
          f"batch={args.batch_size} steps={args.steps} lr={args.lr} prior-lr={args.prior_lr:g} clip={args.clip:g} device={args.device} torch={torch.__version__} threads={torch.get_num_threads()}")
    results = []
    for seed in range(args.seeds):
        results += run_seed(args, train, test, seed)
    if args.seeds > 1:
        print(f"\nover seeds 0..{args.seeds - 1} (clip {args.clip:g}):")
        for name in dict.fromkeys(r[0] for r in results):
            vals = torch.tensor([r[2] for r in results if r[0] == name])
            speed = torch.tensor([r[3] for r in results if r[0] == name])
            print(f"{name:34s} test {vals.mean():.3f} +- {vals.std():.3f} bits/dim  {speed.mean():7.1f} images/s  "
                  f"({', '.join(f'{v:.3f}' for v in vals.tolist())})")
    return results


def run_seed(args, train, test, seed):
    """Train every model once: model initialisation, data order and dequantization noise from
    ``seed`` (seed 0 reproduces the single-seed figures of earlier versions of this script)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(train), generator=g) for _ in range(math.ceil(args.steps * args.batch_size / len(train)) + 1)])
    results = []
    for runner in runners(args.K, args.L, args.hidden, args.device, seed):
        params = sum(p.numel() for p in runner.model.parameters())
        # The split priors' parameters (the course's models) may learn at a fraction of the rate.
        named = list(runner.model.named_parameters())
        prior = [p for n, p in named if n.startswith("splits.")]
        rest = [p for n, p in named if not n.startswith("splits.")]
        groups = [{"params": rest, "scale": 1.0}] + ([{"params": prior, "scale": args.prior_lr}] if prior else [])
        optimizer = torch.optim.Adam(groups, lr=args.lr)
        with torch.no_grad():  # data-dependent ActNorm initialisation on the same first batch
            runner.log_prob(glowcourse.dequantize(train.images[order[:256]], 256, torch.Generator().manual_seed(1 + 1000 * seed)).to(args.device))
        noise = torch.Generator().manual_seed(2 + 1000 * seed)
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for step in range(args.steps):
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            y = glowcourse.dequantize(train.images[idx], 256, noise).to(args.device)
            for group in optimizer.param_groups:
                group["lr"] = group["scale"] * args.lr * min(1.0, (step + 1) / 100)
            loss = bpd(runner.log_prob(y)).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(runner.model.parameters(), args.clip)
            optimizer.step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        test_bpd = evaluate(runner, test.images, args.device)
        results.append((runner.name, params, test_bpd, args.steps * args.batch_size / seconds, seconds))
        print(f"seed {seed}  {runner.name:34s} params {params:8d}  test {test_bpd:.3f} bits/dim  "
              f"{args.steps * args.batch_size / seconds:7.1f} images/s  ({seconds:.0f} s, last train batch {loss.item():.3f})", flush=True)
    return results

if __name__ == "__main__":
    main()
