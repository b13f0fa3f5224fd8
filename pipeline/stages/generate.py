"""Stage generate: one memorized prompt's forget and retain sets, from the starting model's own
generations of it (methods.md, Stable Diffusion; :mod:`pipeline.data.generations`).

The starting text-to-image model (``--model``) generates ``text_to_image.generation.n`` images of
the prompt ``--prompt`` (its name in the prompts file), each seeded from (seed, its index), with
classifier-free guidance. The generations are told apart, memorized (A) or not (X): by a 2-cluster
k-means as the references do, or by similarity to the prompt's reference image when the prompts
file gives one, on pixels or SSCD embeddings (``text_to_image.split``).

Outputs: ``--out`` (.npz: ``images`` uint8, ``latents`` float32 z_0, ``vectors`` the split's,
and the split, :meth:`pipeline.data.generations.Split.arrays`), ``--table`` (.csv: one row per
generation, memorized or not, its squared distance to each centroid or similarity to the
reference), ``--png`` (the memorized generations beside the others), as ``data/forget.*`` are for
a pixel-space model.
"""

from __future__ import annotations

import numpy as np

from pipeline.artifacts import save_npz, save_text, setup_logging, to_csv
from pipeline.data.generations import generation_vectors, kmeans_split, reference_split
from pipeline.data.prompts import prompt_named, read_prompts
from pipeline.data.sources import forget_image
from pipeline.diffusion.guided import generate
from pipeline.diffusion.images import save_labelled_grid, to_uint8
from pipeline.diffusion.models import device
from pipeline.diffusion.text_to_image import load_text_to_image
from pipeline.evaluation.prompts import split_embedding
from pipeline.params.validation import load_params
from pipeline.stages.command import cli, stage_args

SHOWN = 16  # generations of each side in the picture


@cli
def main(argv: list[str] | None = None) -> None:
    args = stage_args(argv, __doc__, "model", "prompt", "out", "table", "png")
    params = load_params(args.params)
    prompt = prompt_named(read_prompts(params["text_to_image"]["prompts"]), args.prompt)
    log = setup_logging(args.log)
    embed = split_embedding(params["text_to_image"]["split"])
    pipe = load_text_to_image(args.model).to(device())
    cfg = params["text_to_image"]["generation"]
    generations = generate(pipe, [prompt.caption] * cfg["n"], cfg["seed"], cfg["steps"], cfg["guidance"],
                           cfg["scheduler"], cfg["batch_size"], params["compute"]["precision"])
    vectors = generation_vectors(generations.images, embed)
    if prompt.image is None:
        split = kmeans_split(vectors, seed=cfg["seed"], redo=params["text_to_image"]["split"]["redo"])
    else:
        size, channels = generations.images.shape[-1], generations.images.shape[1]
        reference = forget_image(str(prompt.image), size, channels)[None] / 255.0
        split = reference_split(vectors, generation_vectors(reference, embed)[0],
                                params["text_to_image"]["split"]["threshold"])
    save_npz(args.out, images=to_uint8(generations.images), latents=generations.latents, vectors=vectors,
             **split.arrays())
    save_text(args.table, to_csv(table_rows(split, vectors)))
    picture(args.png, prompt.caption, generations.images, split.memorized)
    log.info("%s: %d of %d generations memorized (spread %.4g against %.4g)", prompt.name, split.memorized.sum(),
             len(vectors), *split.spread)


def table_rows(split, vectors: np.ndarray) -> list[dict]:
    """One row per generation: memorized or not, and what decided it."""
    rows = []
    for i, memorized in enumerate(split.memorized):
        row = {"generation": i, "memorized": bool(memorized)}
        if split.centroids is not None:
            row.update({f"sq_distance_{side}": float(((vectors[i] - c) ** 2).mean())
                        for side, c in zip(("A", "X"), split.centroids)})
        else:
            row["similarity"] = float(split.similarity[i])
        rows.append(row)
    return rows


def picture(path: str, caption: str, images: np.ndarray, memorized: np.ndarray) -> None:
    """Up to SHOWN memorized generations (top row) above up to SHOWN others (blank tiles pad)."""
    sides = [images[memorized][:SHOWN], images[~memorized][:SHOWN]]
    padded = [np.concatenate([s, np.zeros((SHOWN - len(s), *images.shape[1:]), images.dtype)]) for s in sides]
    save_labelled_grid(path, np.concatenate(padded), SHOWN,
                       [f"memorized (A): {memorized.sum()}", f"other (X): {(~memorized).sum()}"],
                       f'"{caption}": {len(images)} generations', "first generations of each side")


if __name__ == "__main__":
    main()
