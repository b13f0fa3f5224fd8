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
from pipeline.evaluation.copydetect import sscd_embedding
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


def split_embedding(cfg: dict):
    """The copy-detection embedding that ``text_to_image.split`` (``cfg``) runs on ([0, 1] image
    tensors -> vectors), or None for pixels (:func:`pipeline.data.generations.generation_vectors`)."""
    return sscd_embedding(cfg["sscd"]).embed if cfg["space"] == "sscd" else None


def plausibility(vectors: np.ndarray, retain_vectors: np.ndarray) -> float:
    """The quality fallback when no CLIP model is named: mean_i max_{x in X} s(v_i, x), how close
    each generation comes to one of the starting model's non-memorized generations X of the
    prompt (what a mitigated prompt should produce instead; in [-1, 1]). A broken model (noise, a
    blank image) scores low; it is not CLIP-IQA and not comparable with it."""
    return float(cosine(vectors, retain_vectors).max(axis=1).mean())


def pair_similarity(before: np.ndarray, after: np.ndarray) -> float:
    """mean_i s(b_i, a_i) of paired generations (the same prompt and seed) before and after
    unlearning: 1 when a prompt outside the forget set still produces what it produced."""
    return float(np.diag(cosine(before, after)).mean())


class ProjectedCLIP:
    """A transformers CLIPModel whose ``get_image_features`` and ``get_text_features`` return the
    projected embeddings themselves, as torchmetrics 1.9 expects: transformers 5 returns them as
    the ``pooler_output`` of a model output."""

    def __init__(self, model):
        self.model, self.config = model, model.config

    def to(self, device):
        self.model.to(device)
        return self

    def get_image_features(self, *args, **kwargs):
        return self.model.get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs):
        return self.model.get_text_features(*args, **kwargs).pooler_output


def clip_score(images: np.ndarray, prompts: list[str], path: str) -> float:
    """The CLIP score (Hessel et al. 2021) of [0, 1] images (N, C, H, W) and their prompts,
    mean_i 100 max(0, cos(E_img(x_i), E_text(p_i))), by torchmetrics with the CLIP model and
    processor of the local transformers directory ``path`` (its weights cannot be downloaded here)."""
    import torch
    from torchmetrics.multimodal.clip_score import CLIPScore
    from transformers import CLIPModel, CLIPProcessor

    metric = CLIPScore(model_name_or_path=lambda: (ProjectedCLIP(CLIPModel.from_pretrained(path)),
                                                   CLIPProcessor.from_pretrained(path)))
    pixels = torch.from_numpy(np.round(np.asarray(images) * 255).astype(np.uint8))
    metric.update(pixels.repeat(1, 3, 1, 1) if pixels.shape[1] == 1 else pixels, prompts)
    return float(metric.compute())
