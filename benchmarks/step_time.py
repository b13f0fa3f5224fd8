"""Per-step wall time of every unlearning method, side by side in one run.

The default model (params.yaml: UNet and resolution) and each method's own batch size and
hyperparameters, on synthetic images; rounds interleave the methods so that drift of the
machine hits all alike. Prints seconds per optimizer step (median over rounds) and the ratio
to naive deletion's step. Expected shape: SISS close to one forward + one backward (~1x naive),
SISS without IS and EraseDiff about two (two forward passes), ReTrack about two (a forget and
a retain batch).

    python benchmarks/step_time.py [--params params.yaml] [--rounds 5] [--steps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from pipeline.config import load_params
from pipeline.methods import REGISTRY, make_method
from pipeline.models import build_scheduler, build_unet, device
from pipeline.training import BatchSource, train


def synthetic_source(params: dict, n: int = 1024, forget: int = 64, k: int = 10) -> BatchSource:
    rng = np.random.default_rng(0)
    shape = (params["data"]["channels"], params["data"]["resolution"], params["data"]["resolution"])
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    forget_rows = np.arange(n - forget, n)
    neighbours = rng.integers(0, n - forget, size=(forget, k))
    return BatchSource(images, np.arange(n - forget), forget_rows, np.arange(forget), neighbours)


def seconds_per_step(params: dict, name: str, source: BatchSource, steps: int) -> float:
    cfg = params["methods"][name]
    torch.manual_seed(0)
    unet = build_unet(params).to(device())
    method = make_method(name, cfg, build_scheduler(params))
    start = time.perf_counter()
    train(unet, method, source, steps=steps, batch_size=cfg["batch_size"], lr=cfg["lr"], seed=0,
          accumulate=cfg.get("accumulate", 1), desc=name)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per method per round")
    args = parser.parse_args()
    params = load_params(args.params)
    names = [n for n in REGISTRY if n in params["methods"]]
    source = synthetic_source(params)
    for name in names:  # warm-up: allocator, kernels
        seconds_per_step(params, name, source, 1)
    times = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            times[name].append(seconds_per_step(params, name, source, args.steps))
    base = statistics.median(times["naive"])
    print(f"device: {device()}, torch threads: {torch.get_num_threads()}, "
          f"{args.rounds} rounds x {args.steps} steps, batch sizes from {args.params}")
    print(f"{'method':<12} {'batch':>5} {'s/step':>8} {'ratio to naive':>15}")
    for name in names:
        median = statistics.median(times[name])
        print(f"{name:<12} {params['methods'][name]['batch_size']:>5} {median:>8.3f} {median / base:>15.2f}")


if __name__ == "__main__":
    main()
