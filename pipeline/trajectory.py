"""Stage 7b, trajectory: forgetting and quality over the steps of an unlearning run.

For a run, each checkpoint that ``checkpoint_every`` left under ``checkpoints/step-NNNNNN/`` and
the final model; for the pretrained model, step 0 alone. Each gets ``metrics.trajectory.samples``
samples, drawn as the sample stage draws them (``sampling.steps``, the same seed, so every point
starts from the same noise), and the forget reproduction and quality of :mod:`pipeline.metrics`.
The report draws these as report/steps.png and takes the deletion step from them: the first step
from which forget reproduction stays at or below ``metrics.trajectory.deleted_rate``.

Output: a CSV with step, forget_reproduction_pct, forget_reproduced, n_samples, fid.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from pipeline.artifacts import save_text, setup_logging, to_csv
from pipeline.classifier import load_classifier
from pipeline.config import cli, load_params, stage_args
from pipeline.data import forget_of, load_forget_set, load_training_set
from pipeline.metrics import evaluate_samples
from pipeline.models import compute_settings, device, load_model
from pipeline.quality import check_setup
from pipeline.sampling import sample


def points(model_dir: Path) -> list[tuple[int, Path]]:
    """(step, model directory) of each checkpoint and the final model; step 0 for a model that
    was not unlearned (no ``unlearn.json``)."""
    summary = model_dir / "unlearn.json"
    if not summary.is_file():
        return [(0, model_dir)]
    checkpoints = sorted((model_dir / "checkpoints").glob("step-*"))
    final = json.loads(summary.read_text())["hyperparameters"]["steps"]
    return [(int(c.name.split("-")[1]), c) for c in checkpoints] + [(final, model_dir)]


def trajectory(params: dict, model_dir: Path, train: dict, forget: dict, classifier) -> list[dict]:
    cfg = params["sampling"]
    rows = []
    for step, path in tqdm(points(model_dir), desc="checkpoints", unit="model"):
        unet, scheduler = load_model(path)
        samples = sample(unet.to(device()).eval(), scheduler, params["metrics"]["trajectory"]["samples"], cfg["steps"],
                         cfg["batch_size"], cfg["seed"], **compute_settings(params))
        result = evaluate_samples(params, samples, train, forget, classifier)
        rep = result["forget_reproduction"]
        rows.append({"step": step, "forget_reproduction_pct": round(100 * rep["rate"], 3),
                     "forget_reproduced": rep["count"], "n_samples": len(samples),
                     "fid": round(result["quality"]["fid"], 4)})
    return rows


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "model", "model-name", "data", "forget", "out", optional=("classifier",))
    params = load_params(args.params)
    check_setup(params["metrics"]["quality"], has_classifier=bool(args.classifier))
    log = setup_logging(args.log)
    classifier = load_classifier(args.classifier) if args.classifier else None
    forget, _ = forget_of(args.model_name, load_forget_set(args.forget))
    rows = trajectory(params, Path(args.model), load_training_set(args.data), forget, classifier)
    save_text(args.out, to_csv(rows))
    log.info("%s: forget reproduction over steps %s", args.model,
             ", ".join(f"{r['step']}: {r['forget_reproduction_pct']} %" for r in rows))


if __name__ == "__main__":
    main()
