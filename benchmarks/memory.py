"""Peak memory of each stage as the training set grows: the workflow run on N synthetic images, for
N in ``--sizes``, at CelebA-HQ's shape (3 x 256 x 256, an image folder of PNGs) and at the
default experiment's (MNIST digits at 1 x 16 x 16, ``data.source.limit`` = N).

Each N runs the real workflow (``snakemake --cores 2``, the repository's Snakefile) in a fresh
directory up to the report, with a few steps per stage: data, forget_set, knn, pretrain (2 steps),
unlearn (ReTrack, 2 steps), sample, metrics (FID on PCA features, copy detection with a small
TorchScript embedding made here), trajectory and report. While it runs, every stage's process
(this run's only: an environment variable marks its jobs) is sampled every 20 ms for its
anonymous resident memory (RssAnon in /proc: what the process itself holds and cannot page out;
pages of a memory-mapped file are left out, the kernel can drop them). Prints each stage's peak
per N and, last, for the stage that grows most, the ratio peak(largest N) / peak(smallest N).
Target: at most 1.5.

    python benchmarks/memory.py [--sizes 1000 5000 30000] [--shapes celebahq default] [--keep DIR]

Disk: at N = 30,000 CelebA-HQ-shaped images the folder, train.npz and the pixel index take about
20 GB, removed after each N (unless ``--keep``). Time on 2 CPU cores: about 30 minutes for the
CelebA-HQ shape (17 of them at N = 30,000), 4 for the default shape.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
STAGE = re.compile(r"pipeline\.stages\.(\w+)")
TOKEN = "MEMORY_BENCHMARK_RUN"  # set in the workflow's environment, inherited by its jobs
SHAPES = {"celebahq": {"resolution": 256, "channels": 3}, "default": {"resolution": 16, "channels": 1}}


def synthetic_folder(folder: Path, n: int, resolution: int, seed: int = 0) -> None:
    """n seeded smooth RGB images (8 x 8 colour noise, upsampled) as PNGs, ``00000.png`` ..."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in tqdm(range(n), desc="synthetic images", mininterval=10):
        small = Image.fromarray(rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8))
        small.resize((resolution, resolution), Image.BILINEAR).save(folder / f"{i:05d}.png", compress_level=1)


def embedding_file(path: Path) -> None:
    """A small TorchScript image embedding (average pooling to 4 x 4), as the copy-detection model."""
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())
    torch.jit.save(torch.jit.script(net), str(path))


def params_for(shape: str, n: int, work: Path) -> dict:
    """A few steps of every stage (pipeline/params/defaults.yaml fills in the rest)."""
    data = {**SHAPES[shape], "inject": [{"image": "tshirt", "copies": 10}], "heldout": 50, "seed": 0,
            "source": ({"kind": "folder", "path": str(work / "images"), "limit": None} if shape == "celebahq"
                       else {"kind": "mnist", "limit": n})}
    step = {"steps": 2, "batch_size": 2, "lr": 1.0e-4, "checkpoint_every": 2}
    return {
        "data": data,
        "model": {"source": "train", "unet": {"block_out_channels": [16, 16], "attention": [False, False],
                                              "layers_per_block": 1, "norm_num_groups": 8}},
        "compute": {"precision": "fp32", "resume_every": 1000},
        "pretrain": {"steps": 2, "batch_size": 2, "warmup_steps": 0},
        "forget": {"strategy": "injected"},
        "knn": {"k": 4, "space": "pixels", "batch_size": 64, "index": {"kind": "flat"}},
        "experiment": {"methods": ["retrack"], "seeds": [0], "retrain": False},
        "methods": {"retrack": {**step, "accumulate": 1}},
        "sampling": {"n": 8, "steps": 2, "batch_size": 8, "seed": 0},
        "metrics": {"quality": {"features": "pca", "n_reference": 50, "pca_dims": 4},
                    "copy_detection": {"sscd": str(work / "embedding.pt")},
                    "nll": {"rtol": 0.1, "atol": 0.1},
                    "membership": {"nonmembers": 10, "draws": 1},
                    "probe": {"steps": 2, "draws": 1},
                    "trajectory": {"samples": 8}},
        "attack": {"kinds": []},
    }


class Sampler:
    """Peak RssAnon (MiB) of every pipeline stage process whose environment holds ``token``
    (``NAME=value``: the workflow run's own jobs, not another run's on the same machine), polled
    from /proc."""

    def __init__(self, token: str, interval: float = 0.02):
        self.token, self.interval, self.peak = token.encode(), interval, defaultdict(float)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.done.is_set():
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit():
                    self.poll(proc)
            time.sleep(self.interval)

    def poll(self, proc: Path) -> None:
        try:
            match = STAGE.search((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            if not match or self.token not in (proc / "environ").read_bytes():
                return
            anon = next(int(line.split()[1]) for line in (proc / "status").read_text().splitlines()
                        if line.startswith("RssAnon:"))
        except (OSError, StopIteration):
            return  # the process ended meanwhile
        self.peak[match[1]] = max(self.peak[match[1]], anon / 1024)

    def __enter__(self) -> "Sampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def measure(shape: str, n: int, work: Path) -> dict[str, float]:
    """Run the workflow on n images of ``shape`` in ``work``; each stage's peak RssAnon (MiB)."""
    work.mkdir(parents=True)
    if shape == "celebahq":
        synthetic_folder(work / "images", n, SHAPES[shape]["resolution"])
    else:
        (work / "data" / "raw").mkdir(parents=True)
        shutil.copy(ROOT / "data" / "raw" / "mnist.npz", work / "data" / "raw" / "mnist.npz")
    embedding_file(work / "embedding.pt")
    (work / "params.yaml").write_text(yaml.safe_dump(params_for(shape, n, work)))
    start, run_id = time.perf_counter(), uuid.uuid4().hex
    with Sampler(f"{TOKEN}={run_id}") as sampler:
        run = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "report",
                              "--directory", str(work), "--cores", "2", "--quiet", "all"],
                             cwd=ROOT, capture_output=True, text=True, env={**os.environ, TOKEN: run_id})
    if run.returncode:
        sys.exit(f"the workflow failed in {work}:\n{run.stderr[-5000:]}")
    print(f"  {shape}, N = {n}: workflow {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return dict(sampler.peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 30000])
    parser.add_argument("--shapes", nargs="+", default=["celebahq", "default"], choices=list(SHAPES))
    parser.add_argument("--keep", type=Path, help="keep each run's directory under this folder")
    args = parser.parse_args()
    for shape in args.shapes:
        peaks = {}
        for n in args.sizes:
            base = args.keep or Path(tempfile.mkdtemp(prefix="memory-", dir=ROOT / "benchmarks"))
            work = base / f"{shape}-{n}"
            try:
                peaks[n] = measure(shape, n, work)
            finally:
                if not args.keep:
                    shutil.rmtree(base, ignore_errors=True)
        report(shape, peaks)


def report(shape: str, peaks: dict[int, dict[str, float]]) -> None:
    sizes = sorted(peaks)
    stages = sorted(set().union(*peaks.values()))
    dims = SHAPES[shape]
    print(f"## Peak anonymous memory (RssAnon, MiB) per stage, {shape} shape "
          f"({dims['channels']} x {dims['resolution']} x {dims['resolution']})\n")
    print("| stage | " + " | ".join(f"N = {n:,}" for n in sizes) + f" | ratio {sizes[-1]:,} / {sizes[0]:,} |")
    print("|---" * (len(sizes) + 2) + "|")
    ratios = {}
    for stage in stages:
        row = [peaks[n].get(stage) for n in sizes]
        ratios[stage] = row[-1] / row[0] if row[0] and row[-1] else float("nan")
        cells = " | ".join("–" if v is None else f"{v:,.0f}" for v in row)
        print(f"| {stage} | {cells} | {ratios[stage]:.2f} |")
    data_mib = {n: n * dims["channels"] * dims["resolution"] ** 2 / 2**20 for n in sizes}
    print("| (the training images, uint8) | " + " | ".join(f"{data_mib[n]:,.1f}" for n in sizes) +
          f" | {data_mib[sizes[-1]] / data_mib[sizes[0]]:.0f} |")
    worst = max(ratios, key=lambda s: -1 if np.isnan(ratios[s]) else ratios[s])
    print(f"\nworst stage: {worst}, peak({sizes[-1]:,}) / peak({sizes[0]:,}) = {ratios[worst]:.2f} (target <= 1.5)\n")


if __name__ == "__main__":
    main()
