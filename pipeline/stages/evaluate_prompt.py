"""Stage evaluate_prompt: whether a text-to-image model still reproduces its memorized prompts, its
quality, and whether the prompts outside the forget set still give what they gave.

On fresh generations (``text_to_image.evaluation``: n per prompt, seeded, its own scheduler and
steps) of the caption and, separately, of the modified prompt, for each prompt evaluated (every
prompt for the starting model, ``--model pretrained``; a run's own prompt for a run):

- the figures of :func:`pipeline.evaluation.prompts.prompt_figures`: the memorized share by the
  prompt's own classifier (its split, from ``--generations``), similarity to a memorized
  generation of the starting model (mean, max, share above ``copy_threshold``), mitigated or not;
- quality: the CLIP score with the CLIP model ``evaluation.clip`` names, else the labelled
  fallback :func:`pipeline.evaluation.prompts.plausibility`;
- for a run with checkpoints, the caption's memorized share at each, and the first step at which
  the prompt is mitigated (the final model counting as step ``steps``).

The control prompts (``evaluation.controls``) are generated with the same seeds by every model:
the starting model writes its generations' vectors (``--controls-out``) and, as the level of two
different images of a control prompt, the mean similarity of its generations from consecutive
seeds; a run gives the mean similarity of its generations to the starting model's, pair by pair
(``--controls``). A run's record also holds its
cost (``cost.json``: wall time, peak memory) and its ``unlearn.json``. Outputs: ``--out`` (.json)
and ``--samples`` (.npz: the caption's fresh generations, uint8, under each prompt's name).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from diffusers import UNet2DConditionModel

from pipeline.artifacts import load_json, load_npz, save_json, save_npz, setup_logging
from pipeline.data.generations import SPLIT_KEYS, Split, generation_vectors
from pipeline.data.prompts import read_prompts
from pipeline.diffusion.guided import generate
from pipeline.diffusion.images import to_uint8
from pipeline.diffusion.models import device
from pipeline.diffusion.text_to_image import load_text_to_image
from pipeline.errors import UserError
from pipeline.evaluation.prompts import (
    clip_score,
    first_mitigated,
    pair_similarity,
    plausibility,
    prompt_figures,
    split_embedding,
)
from pipeline.params.runs import Run
from pipeline.params.validation import load_params
from pipeline.stages.command import cli, stage_args


class Evaluator:
    """Generates and scores as ``text_to_image.evaluation`` says."""

    def __init__(self, params: dict):
        self.cfg = params["text_to_image"]["evaluation"]
        self.precision = params["compute"]["precision"]
        self.embed = split_embedding(params["text_to_image"]["split"])

    def generations(self, pipe, prompt: str) -> np.ndarray:
        cfg = self.cfg
        return generate(pipe, [prompt] * cfg["n"], cfg["seed"], cfg["steps"], cfg["guidance"], cfg["scheduler"],
                        cfg["batch_size"], self.precision).images

    def figures(self, pipe, prompt: str, split: Split, vectors: np.ndarray) -> tuple[dict, np.ndarray]:
        """The figures of ``prompt``'s fresh generations against the prompt's split and the
        starting model's generations' ``vectors``, and the generations."""
        images = self.generations(pipe, prompt)
        new = generation_vectors(images, self.embed)
        out = prompt_figures(split, new, new, vectors[split.memorized], self.cfg["copy_threshold"])
        if self.cfg["clip"]:
            out["clip_score"] = clip_score(images, [prompt] * len(images), self.cfg["clip"])
        else:
            out["plausibility"] = plausibility(new, vectors[~split.memorized])
        return out, images


def read_split(generations: str) -> tuple[Split, np.ndarray]:
    """A prompt's split and the vectors of the starting model's generations it was made on."""
    arrays = load_npz(generations, ("vectors", *SPLIT_KEYS))
    return Split.from_arrays(arrays), arrays["vectors"]


def evaluate_prompt(evaluator: Evaluator, pipe, prompt, split: Split, vectors: np.ndarray) -> tuple[dict, np.ndarray]:
    """The prompt's figures (module doc) and its caption's fresh generations."""
    caption, images = evaluator.figures(pipe, prompt.caption, split, vectors)
    modified, _ = evaluator.figures(pipe, prompt.modified, split, vectors)
    return {"caption": caption, "modified": modified,
            "generations": {"memorized": int(split.memorized.sum()), "other": int((~split.memorized).sum())}}, images


def checkpoint_steps(evaluator: Evaluator, pipe, model: Path, prompt, split: Split, final: dict, steps: int) -> dict:
    """The caption's memorized share at each checkpoint of the run and at its end, and the first
    step at which the prompt is mitigated (None if never)."""
    unet, points = pipe.unet, []
    for folder in sorted((model / "checkpoints").glob("step-*")):
        pipe.unet = UNet2DConditionModel.from_pretrained(folder).to(unet.device).eval()
        vectors = generation_vectors(evaluator.generations(pipe, prompt.caption), evaluator.embed)
        memorized = split.classify(vectors)
        points.append({"step": int(folder.name.split("-")[1]), "memorized_share": float(memorized.mean()),
                       "mitigated": float(not memorized.any())})
    pipe.unet = unet
    points.append({"step": steps, "memorized_share": final["memorized_share"], "mitigated": final["mitigated"]})
    return {"checkpoints": points,
            "first_mitigated_step": first_mitigated([p["step"] for p in points], [p["mitigated"] for p in points])}


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "model", "out", "samples", optional=("controls", "controls-out"),
                      many=("generations",))
    params = load_params(args.params)
    prompts = read_prompts(params["text_to_image"]["prompts"])
    model = Path(args.model)
    run = None if model.name == "pretrained" else Run.parse(model.name)
    evaluated = prompts if run is None else [prompts[run.image]]
    if len(args.generations) != len(evaluated):
        raise UserError(f"--generations: one file per prompt evaluated ({len(evaluated)}), got {len(args.generations)}")
    if (run is None) != (args.controls_out is not None):
        raise UserError("--controls-out is the starting model's (--model .../pretrained), --controls a run's")
    log = setup_logging(args.log)
    evaluator = Evaluator(params)
    pipe = load_text_to_image(model).to(device())
    pixels = "pixels, each image centred (the cosine is their correlation)"
    record = {"model": model.name, "embedding": "SSCD" if evaluator.embed else pixels,
              "quality": "clip_score" if evaluator.cfg["clip"] else "plausibility (fallback: no CLIP model named)",
              "prompts": {}}
    images, splits = {}, [read_split(path) for path in args.generations]
    for prompt, (split, vectors) in zip(evaluated, splits):
        record["prompts"][prompt.name], images[prompt.name] = evaluate_prompt(evaluator, pipe, prompt, split, vectors)
        log.info("%s on %s: %s", model.name, prompt.name, record["prompts"][prompt.name]["caption"])
    if run is not None:
        summary = load_json(model / "unlearn.json")
        final = record["prompts"][prompts[run.image].name]
        final.update(checkpoint_steps(evaluator, pipe, model, prompts[run.image], splits[0][0], final["caption"],
                                      summary["hyperparameters"]["steps"]))
        record.update(run=summary, cost=load_json(model / "cost.json"))
    controls = params["text_to_image"]["evaluation"]["controls"]
    vectors = np.stack([generation_vectors(evaluator.generations(pipe, c), evaluator.embed) for c in controls]) \
        if controls else np.zeros((0, 0, 0), np.float32)
    if run is None:  # what "changed" means: two generations of a control prompt from different seeds
        record["controls_other_seed"] = {c: pair_similarity(v[:-1], v[1:]) for c, v in zip(controls, vectors)}
        save_npz(args.controls_out, vectors=vectors)
    elif controls:
        before = load_npz(args.controls, ("vectors",))["vectors"]
        record["controls"] = {c: pair_similarity(b, a) for c, b, a in zip(controls, before, vectors)}
    save_npz(args.samples, **{name: to_uint8(x) for name, x in images.items()})
    save_json(args.out, record)


if __name__ == "__main__":
    main()
