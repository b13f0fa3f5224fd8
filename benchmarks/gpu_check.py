"""GPU check: the figures the project has not measured yet, in one run of at most 8 minutes on one
NVIDIA H100/H200, with nothing downloaded (random weights: the speed of a UNet does not depend on them).

1. Sampler against DDPMPipeline: images per second of ``diffusers.DDPMPipeline`` and of
   :func:`pipeline.diffusion.sampler.sample` in fp32 and in compile + bf16 + channels_last, on the
   architectures of the CIFAR-10 and CelebA-HQ benchmarks (DDPM, 50 steps), the ratio to the pipeline
   (the target is 3x), and the largest difference between the pipeline's images and the fp32
   sampler's from the same noise (the sampler is meant to give the pipeline's images).
2. One training step per unlearning method (:mod:`pipeline.methods.registry`, default
   hyperparameters) on the CIFAR-10 architecture, batch 128 of synthetic images, through
   :func:`pipeline.training.loop.train`: seconds per step in fp32 eager and in compile + bf16 +
   channels_last, and peak GPU memory; and one step of the Stable Diffusion v1.4 UNet (bf16 autocast,
   gradient checkpointing, AdamW), the model a latent-space (text-to-image) benchmark would unlearn in.
3. Exact neighbour search: faiss ``IndexFlatL2`` on the CPU and, with a faiss GPU build, on the GPU,
   against an exact float64 numpy search: time, and whether the neighbour lists agree.

Each item prints a progress line; the table is rewritten after each section, so a run stopped by a
time limit keeps what it measured. A compiled variant that fails (no Triton, no C++ compiler) is
reported with the reason, and none starts after :data:`COMPILE_CUTOFF_S` seconds (to stay in budget).

``--dry`` runs the same code on the CPU with tiny versions of the three architectures, a few steps
and torch.compile off (compiling on a CPU takes minutes): it checks the logic (the fp32 sampler gives
the pipeline's images to the bit, faiss finds numpy's neighbours), not the speed.

    python benchmarks/gpu_check.py [--dry] [--out docs/benchmarks/gpu_check_table.md] [--rounds 2]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import diffusers
import faiss
import numpy as np
import torch
from diffusers import DDPMPipeline, UNet2DConditionModel, UNet2DModel
from sampling_speed import pipeline_images, synchronize, timed
from step_time import synthetic_source
from variants import VARIANTS, try_variants

from pipeline.diffusion.models import autocast, build_scheduler, device, noise_levels
from pipeline.diffusion.sampler import sample
from pipeline.diffusion.text_to_image import SD14_UNET
from pipeline.diffusion.tokenizer import MAX_LENGTH
from pipeline.methods.registry import REGISTRY, make_method
from pipeline.params.validation import defaults
from pipeline.search.neighbours import gpus
from pipeline.training.loop import train

# Architectures from the models' public Hub configs (config.json; unet/config.json for SD), rebuilt
# here with random weights. Verified in 2026-12 against copies of those files found by a search of
# stored Hub pages (mirrors and fine-tunes whose _name_or_path is the Hub id; the Hub itself was not
# reached): every key below. The parameter counts, 35.7 M (cifar10), 113.7 M (celebahq) and 859.5 M
# (SD v1.4, pipeline.diffusion.text_to_image.SD14_UNET), match docs/benchmarks.md and the SD v1 UNet's
# published ~860 M. The two DDPM UNets also set freq_shift 1, flip_sin_to_cos false, downsample_padding 0
# and norm_eps 1e-6 (not diffusers' defaults).
DDPM_HUB_KEYS = {"freq_shift": 1, "flip_sin_to_cos": False, "downsample_padding": 0, "norm_eps": 1e-6}
CIFAR10 = {  # google/ddpm-cifar10-32
    "sample_size": 32, "in_channels": 3, "out_channels": 3, "block_out_channels": (128, 256, 256, 256),
    "layers_per_block": 2, "norm_num_groups": 32, **DDPM_HUB_KEYS,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
}
CELEBAHQ = {  # google/ddpm-ema-celebahq-256
    "sample_size": 256, "in_channels": 3, "out_channels": 3, "block_out_channels": (128, 128, 256, 256, 512, 512),
    "layers_per_block": 2, "norm_num_groups": 32, **DDPM_HUB_KEYS,
    "down_block_types": ("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
}

METHODS = list(REGISTRY)
TARGET = 3.0  # the sampler's target speed-up over DDPMPipeline (docs/benchmarks/sampling_speed.md)
COMPILE_CUTOFF_S = 300  # no compiled variant starts later: compiling a UNet may take 1-2 min (estimate)
K, QUERIES = 10, 100


@dataclass(frozen=True)
class Setup:
    """What a run measures: the device, the architectures and the sizes (full, or tiny for --dry)."""

    dev: torch.device
    dry: bool
    rounds: int
    steps: int  # DDPM inference steps of the sampler
    sample_batch: dict[str, int]  # images per measurement, per architecture
    train_batch: int
    vectors: tuple[int, int]  # exact search: number and dimension of the vectors
    models: dict[str, dict]

    @property
    def fast(self) -> str:
        """The fast variant of :data:`variants.VARIANTS`: compile + bf16 + channels_last (compile off in --dry)."""
        return "bf16 + channels_last" if self.dry else "compile + bf16 + channels_last"


def tiny(config: dict) -> dict:
    """``config`` shrunk for --dry: the same blocks and levels, 8-16 channels, one layer per block,
    the smallest size the levels allow (1x1 at the deepest), small cross-attention."""
    levels = len(config["block_out_channels"])
    cross = {"cross_attention_dim": 16, "attention_head_dim": 2} if "cross_attention_dim" in config else {}
    return {**config, **cross, "block_out_channels": (8,) + (16,) * (levels - 1), "layers_per_block": 1,
            "norm_num_groups": 4, "sample_size": 2 ** (levels - 1)}


def setup(dry: bool, rounds: int) -> Setup:
    models = {"cifar10-32": CIFAR10, "celebahq-256": CELEBAHQ, "sd-v1.4": SD14_UNET}
    if dry:
        torch.set_num_threads(1)  # tiny models are slower with more threads, and the machine may be shared
        faiss.omp_set_num_threads(1)
        return Setup(dev=torch.device("cpu"), dry=True, rounds=rounds, steps=4,
                     sample_batch={"cifar10-32": 3, "celebahq-256": 2}, train_batch=4, vectors=(2000, 64),
                     models={name: tiny(config) for name, config in models.items()})
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device; run with --dry to check the logic on the CPU")
    return Setup(dev=device(), dry=False, rounds=rounds, steps=50, sample_batch={"cifar10-32": 128, "celebahq-256": 8},
                 train_batch=128, vectors=(100_000, 768), models=models)


class Clock:
    """Seconds since the start, and a progress line per item."""

    def __init__(self):
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def say(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {message}", flush=True)


def attempt(name: str, options: dict, run, clock: Clock):
    """``run(options)``'s result and None, or None and why not: 'failed: ' and the reason
    (:func:`variants.try_variants`'s wording), or 'skipped: ' for a compiled variant after :data:`COMPILE_CUTOFF_S`."""
    if options.get("compile") and clock.elapsed() > COMPILE_CUTOFF_S:
        return None, f"skipped: past {COMPILE_CUTOFF_S} s of the 8 min budget"
    result = []
    _, failed = try_variants({name: options}, lambda o: result.append(run(o)))
    return (result[0], None) if result else (None, f"failed: {failed[name]}")


def build(cls, config: dict, dev: torch.device):
    """A model of ``config`` with seeded random weights, initialised on ``dev`` directly."""
    torch.manual_seed(0)
    with dev:
        return cls(**config)


def ddpm_scheduler():
    """The project's DDPM scheduler: T = 1000, linear betas 1e-4 -> 0.02, epsilon prediction."""
    return build_scheduler({"model": {"num_train_timesteps": 1000}})


def peak_memory(dev: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f}" if dev.type == "cuda" else "n/a (cpu)"


def reset_memory(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# 1. Sampler against DDPMPipeline


def sampler_section(s: Setup, clock: Clock) -> list[list[str]]:
    return [row for name in ("cifar10-32", "celebahq-256") for row in sampler_rows(name, s, clock)]


def sampler_rows(name: str, s: Setup, clock: Clock) -> list[list[str]]:
    """One architecture: the pipeline, the fp32 sampler and the fast one, interleaved round by round
    as benchmarks/sampling_speed.py does (the same seed: the same noise); images/s of the median round."""
    unet, scheduler, batch = build(UNet2DModel, s.models[name], s.dev).eval(), ddpm_scheduler(), s.sample_batch[name]
    pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    clock.say(f"sampler {name}: warm-up, batch {batch}")
    pipeline_images(pipe, batch, 2)
    variants, why_not = {}, {}
    for variant, options in {"fp32": {}, s.fast: VARIANTS[s.fast]}.items():  # warm-up: 2 steps
        _, why_not[variant] = attempt(variant, options, lambda o: sample(unet, scheduler, batch, 2, batch, 0, **o),
                                      clock)
        if why_not[variant] is None:
            variants[variant] = options
    seconds, difference = {"DDPMPipeline": [], **{v: [] for v in variants}}, 0.0
    for r in range(s.rounds):
        clock.say(f"sampler {name}: round {r + 1}/{s.rounds}")
        took, reference = timed(lambda: pipeline_images(pipe, batch, s.steps))
        seconds["DDPMPipeline"].append(took)
        for variant, options in variants.items():
            took, images = timed(lambda: sample(unet, scheduler, batch, s.steps, batch, 0, **options))
            seconds[variant].append(took)
            if variant == "fp32":
                difference = max(difference, float(np.abs(images - reference).max()))
    return sampler_table(name, s, seconds, why_not, difference)


def sampler_table(name: str, s: Setup, seconds: dict, why_not: dict, difference: float) -> list[list[str]]:
    """The rows of one architecture: images/s from the median round, the ratio to the pipeline's,
    the fp32 difference, and whether the fast variant meets the target; a variant that did not run
    says why."""
    batch = s.sample_batch[name]
    base = batch / statistics.median(seconds["DDPMPipeline"])
    rows = []
    for variant in ("DDPMPipeline", "fp32", s.fast):
        label = variant if variant == "DDPMPipeline" else f"sampler, {variant}"
        if why_not.get(variant):
            rows.append([name, label, f"{batch} x {s.steps}", why_not[variant], "—", "—", "—"])
            continue
        rate = batch / statistics.median(seconds[variant])
        diff = f"{difference:.2e}" if variant == "fp32" else "—"
        target = ("yes" if rate / base >= TARGET else "no") if variant == s.fast else "—"
        rows.append([name, label, f"{batch} x {s.steps}", f"{rate:.2f}", f"{rate / base:.2f}", diff, target])
    return rows


# 2. One training step


def step_rows(s: Setup, clock: Clock) -> list[list[str]]:
    return [*method_rows(s, clock), sd_row(s, clock)]


def method_rows(s: Setup, clock: Clock) -> list[list[str]]:
    """Every method on one CIFAR-10-architecture UNet (reused, so that a compiled graph is compiled
    once for all methods of one batch shape), in fp32 eager and in the fast variant."""
    config = s.models["cifar10-32"]
    unet = build(UNet2DModel, config, s.dev)
    scheduler = ddpm_scheduler()
    source = synthetic_source({"data": {"channels": config["in_channels"], "resolution": config["sample_size"]}})
    rows = []
    for method in METHODS:
        for variant, options in {"fp32 eager": {}, s.fast: VARIANTS[s.fast]}.items():
            clock.say(f"train {method}: {variant}")
            reset_memory(s.dev)
            per_step, reason = attempt(variant, options,
                                       lambda o: seconds_per_step(unet, method, scheduler, source, s, o), clock)
            figures = [f"{per_step:.4f}", peak_memory(s.dev)] if reason is None else [reason, "—"]
            rows.append(["cifar10-32", method, str(s.train_batch), variant, *figures])
    return rows


def seconds_per_step(unet, method: str, scheduler, source, s: Setup, options: dict) -> float:
    """``method``'s default hyperparameters at batch ``s.train_batch``: 1 + rounds steps of
    :func:`pipeline.training.loop.train`, timed from the end of the first (allocation, compilation)
    to the end of the last, through train's per-step ``on_checkpoint`` call."""
    cfg = {**defaults()["methods"][method], "batch_size": s.train_batch}
    marks = []

    def mark(step, net):
        synchronize()
        marks.append(time.perf_counter())

    train(unet, make_method(method, cfg, scheduler), source, steps=1 + s.rounds, batch_size=cfg["batch_size"],
          lr=cfg["lr"], seed=0, betas=tuple(cfg["betas"]), weight_decay=cfg["weight_decay"], eps=cfg["eps"],
          accumulate=cfg.get("accumulate", 1), checkpoint_every=1, on_checkpoint=mark, desc=method, **options)
    synchronize()
    return (time.perf_counter() - marks[0]) / s.rounds


def sd_row(s: Setup, clock: Clock) -> list[str]:
    """One AdamW step of the SD v1.4 UNet (860 M parameters, fp32 weights) on a batch of one 4x64x64
    latent with a random 77x768 text embedding: the DDPM loss under bf16 autocast, with gradient
    checkpointing, as a latent-space unlearning run would fine-tune it. The noise schedule is the
    project's (SD's own, scaled_linear, costs the same). Seconds per step (median of rounds after
    one warm-up) and peak memory."""
    config = s.models["sd-v1.4"]
    clock.say("train sd-v1.4: bf16 autocast + gradient checkpointing")
    reset_memory(s.dev)
    unet = build(UNet2DConditionModel, config, s.dev).train()
    unet.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    scheduler = ddpm_scheduler()
    size = config["sample_size"]
    latents = torch.randn(1, config["in_channels"], size, size, device=s.dev)
    text = torch.randn(1, MAX_LENGTH, config["cross_attention_dim"], device=s.dev)
    times = []
    for _ in range(1 + s.rounds):
        synchronize()
        start = time.perf_counter()
        t = torch.randint(0, scheduler.config.num_train_timesteps, (1,), device=s.dev)
        eps = torch.randn_like(latents)
        gamma, sigma = noise_levels(scheduler, t)
        with autocast("bf16", s.dev):
            pred = unet(gamma * latents + sigma * eps, t, encoder_hidden_states=text).sample
        torch.nn.functional.mse_loss(pred.float(), eps).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize()
        times.append(time.perf_counter() - start)
    return ["sd-v1.4", "DDPM loss, AdamW", "1", "bf16 autocast + gradient checkpointing",
            f"{statistics.median(times[1:]):.4f}", peak_memory(s.dev)]


# 3. Exact neighbour search


def search_rows(s: Setup, clock: Clock) -> list[list[str]]:
    """K = 10 nearest of 100 queries among random float32 vectors: faiss on the CPU (the reference),
    on the GPU when faiss is a GPU build, and an exact float64 numpy search."""
    rng = np.random.default_rng(0)
    n, dim = s.vectors
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    queries = rng.standard_normal((QUERIES, dim), dtype=np.float32)
    size, shape = f"{n} x {dim}", f"{QUERIES} x {K}"
    index = faiss.IndexFlatL2(dim)
    index.add(vectors)
    clock.say("search: faiss CPU")
    cpu_time, (cpu_d, cpu_i) = best_of(s.rounds, lambda: index.search(queries, K))
    rows = [["faiss IndexFlatL2, CPU", size, shape, f"{cpu_time:.4f}", "(reference)"]]
    if gpus():
        clock.say("search: faiss GPU")
        gpu_index = faiss.index_cpu_to_all_gpus(index)
        gpu_time, (gpu_d, gpu_i) = best_of(s.rounds, lambda: gpu_index.search(queries, K))
        rows.append(["faiss IndexFlatL2, GPU", size, shape, f"{gpu_time:.4f}", agreement(gpu_i, gpu_d, cpu_i, cpu_d)])
    else:
        rows.append(["faiss IndexFlatL2, GPU", size, shape, "faiss-gpu not installed", "—"])
    clock.say("search: numpy exact")
    np_time, (np_d, np_i) = best_of(s.rounds, lambda: exact_numpy(vectors, queries))
    rows.append(["numpy exact, float64", size, shape, f"{np_time:.4f}", agreement(np_i, np_d, cpu_i, cpu_d)])
    return rows


def best_of(rounds: int, run):
    """The fastest of ``rounds`` timed calls after one warm-up, and the result."""
    result, times = run(), []
    for _ in range(rounds):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def exact_numpy(vectors: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared L2 distances and positions of the K nearest vectors of each query, nearest first, in float64."""
    x, q = vectors.astype(np.float64), queries.astype(np.float64)
    sq = (q**2).sum(1)[:, None] - 2 * q @ x.T + (x**2).sum(1)[None, :]
    nearest = np.argpartition(sq, K, axis=1)[:, :K]
    order = np.argsort(np.take_along_axis(sq, nearest, 1), axis=1)
    nearest = np.take_along_axis(nearest, order, 1)
    return np.take_along_axis(sq, nearest, 1), nearest


def agreement(found: np.ndarray, found_d: np.ndarray, reference: np.ndarray, reference_d: np.ndarray) -> str:
    """'yes' when the neighbour lists are equal; 'yes, ties aside' when they differ only where
    distances agree to 1e-4 (near-ties in another order); else 'no'."""
    differ = int((found != reference).any(1).sum())
    if differ == 0:
        return "yes"
    if np.allclose(found_d, reference_d, rtol=1e-4):
        return f"yes, ties aside ({differ} of {len(found)} lists reordered)"
    return f"no ({differ} of {len(found)} lists differ)"


# The table


SECTIONS = [
    ("1. Sampler against DDPMPipeline",
     ["model", "sampler", "batch x steps", "images/s", "ratio to DDPMPipeline",
      "max abs difference to DDPMPipeline (fp32)", f"target >= {TARGET:g}x met"], sampler_section),
    ("2. One training step", ["model", "method", "batch", "compute", "s/step", "peak GPU memory (GiB)"], step_rows),
    ("3. Exact neighbour search, K = 10",
     ["search", "vectors", "queries x K", "seconds", "same neighbours as faiss CPU"], search_rows),
]


def markdown(columns: list[str], rows: list[list[str]]) -> str:
    lines = [columns, ["---"] * len(columns), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def header(s: Setup, clock: Clock, done: int) -> str:
    name = torch.cuda.get_device_name(s.dev) if s.dev.type == "cuda" else "cpu"
    kind = ("yes: tiny models on the CPU, a few steps, torch.compile off; checks the logic, not a measurement"
            if s.dry else "no")
    status = "complete" if done == len(SECTIONS) else f"sections 1-{done} of {len(SECTIONS)} so far"
    return (f"GPU check, {datetime.date.today()}: device {name}; torch {torch.__version__}, diffusers "
            f"{diffusers.__version__}, faiss {faiss.__version__}; dry run: {kind}; {s.rounds} rounds; "
            f"{clock.elapsed():.0f} s, {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry", action="store_true", help="tiny models on the CPU: check the logic in seconds")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/gpu_check_table.md"))
    parser.add_argument("--rounds", type=int, default=2, help="timed repetitions of each item, after one warm-up")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    s, clock = setup(args.dry, args.rounds), Clock()
    tables = []
    for title, columns, rows in SECTIONS:
        tables.append(f"## {title}\n\n{markdown(columns, rows(s, clock))}")
        text = "\n\n".join([header(s, clock, len(tables)), *tables]) + "\n"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    clock.say(f"wrote {args.out}")
    print(text)


if __name__ == "__main__":
    main()
