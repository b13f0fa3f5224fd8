"""Per-step wall time of every unlearning method, side by side in one run, and how the compute
options (``compute.precision``, ``channels_last``, ``compile``) change one method's.

The default model (params.yaml: UNet and resolution) and each method's own batch size and
hyperparameters, on synthetic images; rounds interleave the methods and the options so that
drift of the machine hits all alike. Prints seconds per optimizer step (median over rounds),
steps per second, and the ratio to naive deletion's step; then, for ``--method``, steps per second
under each option and the speed-up over fp32. Expected shape: SISS close to one forward + one
backward (~1x naive), SISS without IS and EraseDiff about two (two forward passes), ReTrack about
two (a forget and a retain batch, in one UNet call). ``retrack (2 calls)`` is ReTrack as the
reference code runs it, one UNet call per batch: the baseline of the one-call form, side by side.
An option whose ``torch.compile`` fails (no C++ compiler, no Triton) is reported and left out.

    python benchmarks/step_time.py [--params params.yaml] [--rounds 5] [--steps 3] [--method naive]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from variants import VARIANTS, try_variants

from pipeline.diffusion.models import build_scheduler, build_unet, device, noise_levels
from pipeline.methods.contract import Losses
from pipeline.methods.losses import ReTrack, ddpm_loss, forget_timesteps, gaussian_like
from pipeline.methods.registry import REGISTRY, make_method
from pipeline.params.validation import load_params
from pipeline.training.loop import BatchSource, train


def synthetic_source(params: dict, n: int = 1024, forget: int = 64, k: int = 10) -> BatchSource:
    rng = np.random.default_rng(0)
    shape = (params["data"]["channels"], params["data"]["resolution"], params["data"]["resolution"])
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    forget_rows = np.arange(n - forget, n)
    neighbours = rng.integers(0, n - forget, size=(forget, k))
    return BatchSource(images, np.arange(n - forget), forget_rows, np.arange(forget), neighbours)


class TwoCallReTrack(ReTrack):
    """ReTrack with one UNet call on the forget batch and one on the retain batch, the reference
    code's form (the same draws, in the same order, as :class:`ReTrack`)."""

    def __call__(self, net, batch):
        a = batch.forget
        t, eps = forget_timesteps(self.scheduler, self.forget_filter, a), gaussian_like(a)
        gamma, sigma = noise_levels(self.scheduler, t)
        a_t = gamma * a + sigma * eps
        unlearn = self.unlearn_loss(net(a_t, t).sample, a_t, t, batch.neighbours)
        return Losses({"loss": self.lam * unlearn + (1 - self.lam) * ddpm_loss(net, self.scheduler, batch.retain)})


BASELINES = {"retrack (2 calls)": ("retrack", TwoCallReTrack)}  # row: (its params' method, its class)


def build(name: str, params: dict):
    """The method of a row: a registered method, or a baseline of :data:`BASELINES`."""
    method, baseline = BASELINES.get(name, (name, None))
    cfg, scheduler = params["methods"][method], build_scheduler(params)
    return make_method(method, cfg, scheduler) if baseline is None else baseline(scheduler, cfg["lam"])


def seconds_per_step(params: dict, name: str, source: BatchSource, steps: int, **options) -> float:
    cfg = params["methods"][BASELINES.get(name, (name,))[0]]
    torch.manual_seed(0)
    unet = build_unet(params).to(device())
    method = build(name, params)
    start = time.perf_counter()
    train(unet, method, source, steps=steps, batch_size=cfg["batch_size"], lr=cfg["lr"], seed=0,
          accumulate=cfg.get("accumulate", 1), desc=name, **options)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def warm_up(params: dict, names: list[str], method: str, source: BatchSource) -> tuple[dict, dict]:
    """One step of each method and of ``method`` under each option (allocator, kernels,
    compilation); return the options that ran, and those that failed with the reason."""
    for name in names:
        seconds_per_step(params, name, source, 1)
    return try_variants(VARIANTS, lambda options: seconds_per_step(params, method, source, 1, **options))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per method per round")
    parser.add_argument("--method", default="naive", help="the method timed under each compute option")
    args = parser.parse_args()
    params = load_params(args.params)
    names = [n for n in REGISTRY if n in params["methods"]] + list(BASELINES)
    source = synthetic_source(params)
    options, failed = warm_up(params, names, args.method, source)
    times = {name: [] for name in names}
    option_times = {option: [] for option in options}
    for _ in range(args.rounds):
        for name in names:
            times[name].append(seconds_per_step(params, name, source, args.steps))
        for option, kwargs in options.items():
            option_times[option].append(seconds_per_step(params, args.method, source, args.steps, **kwargs))
    base = statistics.median(times["naive"])
    print(f"device: {device()}, torch threads: {torch.get_num_threads()}, "
          f"{args.rounds} rounds x {args.steps} steps, batch sizes from {args.params}")
    print(f"{'method':<18} {'batch':>5} {'s/step':>8} {'steps/s':>8} {'ratio to naive':>15}")
    for name in names:
        median = statistics.median(times[name])
        batch = params["methods"][BASELINES.get(name, (name,))[0]]["batch_size"]
        print(f"{name:<18} {batch:>5} {median:>8.3f} {1 / median:>8.2f} {median / base:>15.2f}")
    fp32 = statistics.median(times[args.method])
    print(f"\n{args.method} under the compute options")
    print(f"{'option':<30} {'s/step':>8} {'steps/s':>8} {'speed-up':>9}")
    print(f"{'fp32':<30} {fp32:>8.3f} {1 / fp32:>8.2f} {1:>9.2f}")
    for option, values in option_times.items():
        median = statistics.median(values)
        print(f"{option:<30} {median:>8.3f} {1 / median:>8.2f} {fp32 / median:>9.2f}")
    for option, reason in failed.items():
        print(f"{option:<30} failed: {reason}")


if __name__ == "__main__":
    main()
