"""Whether a text-to-image model still reproduces a memorized prompt's image: the per-prompt
figures of the SISS and ReTrack protocols (methods.md, Stable Diffusion), on fresh seeded
generations of the prompt (and, separately, of its modified prompt).

For generations g_1..g_M of one prompt, A the memorized generations of the starting model (the
prompt's forget set), e(.) a copy-detection embedding and s the cosine similarity:

- ``memorized_share``: the share of g_i that the prompt's own rule calls memorized
  (:meth:`pipeline.data.generations.Split.classify`: the k-means of the starting model's
  generations, or similarity to the reference image), the references' measure;
- ``similarity_mean``, ``similarity_max``: of q_i = max_{a in A} s(e(g_i), e(a)), how close each
  generation comes to any memorized one;
- ``copy_share``: the share of g_i with q_i >= ``threshold`` (a copy by the detector);
- ``mitigated``: no generation is memorized by the prompt's rule (1.0 or 0.0), the criterion the
  SISS paper's headline counts ("nearly 90 %" of prompts mitigated).

Over a run's checkpoints, :func:`first_mitigated` gives the first step at which a prompt is
mitigated; the mean of ``mitigated`` over prompts is the share of prompts mitigated.
"""

from __future__ import annotations

import numpy as np

from pipeline.data.generations import Split
from pipeline.search.embeddings import cosine


def prompt_figures(split: Split, vectors: np.ndarray, embeddings: np.ndarray, memorized_embeddings: np.ndarray,
                   threshold: float) -> dict[str, float]:
    """The figures of the module doc for M generations: ``vectors`` (M, D) as the prompt's rule
    sees them (as the split was made), ``embeddings`` (M, E) and ``memorized_embeddings`` (|A|, E)
    their copy-detection embeddings and A's."""
    memorized = split.classify(vectors)
    q = cosine(embeddings, memorized_embeddings).max(axis=1)
    return {"memorized_share": float(memorized.mean()), "similarity_mean": float(q.mean()),
            "similarity_max": float(q.max()), "copy_share": float((q >= threshold).mean()),
            "mitigated": float(not memorized.any())}


def first_mitigated(steps: list[int], mitigated: list[float]) -> int | None:
    """The first of ``steps`` (in order) whose checkpoint is mitigated, or None if none is."""
    return next((step for step, done in zip(steps, mitigated) if done), None)
