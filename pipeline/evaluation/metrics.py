"""The metrics of one model: how much of the forget set a model still holds, and what forgetting cost.

From the model's samples:

- Forget reproduction (the "% T-shirt" of the SISS/ReTrack MNIST protocol): the share of samples
  whose L2 distance, in [0, 1] pixel space, to some distinct forget image a_j is below tau_j. The
  protocol's tau = 10 over 784 pixels sits at 0.87 of the T-shirt's distance to its nearest MNIST
  digit (11.49), so by default tau_j = 0.87 * d(a_j, nearest retain image)
  (``metrics.threshold.rule: relative``); ``absolute`` sets tau directly. The JSON says which.
- Nearest-neighbour memorization: the share of samples whose nearest distinct training image is a
  forget image and lies much closer than the second nearest, d_1 < ``ratio`` * d_2 (a relative
  distance test like that of training-data extraction, Carlini et al. 2023; identical copies count
  as one image, or the test could never pass for a duplicated image).
- Quality: FID and IS (:mod:`pipeline.evaluation.quality`) of the samples that are not forget
  reproductions, as in the reference protocol.

From the model itself, for each distinct forget image: its NLL in bits/dim by the probability-flow
ODE (:mod:`pipeline.evaluation.likelihood`), the memorization probe at t = 250 with pixel and embedding
similarity and the normalized SSCD (:mod:`pipeline.evaluation.probes`, :mod:`pipeline.evaluation.copydetect`), and the
loss-based membership attack's AUC against held-out images. Cost: the wall time, steps and peak
memory that the model's training or unlearning job recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import torch

from pipeline.data.sets import group_identical, retain_rows
from pipeline.diffusion.images import to_float
from pipeline.evaluation.copydetect import Embedding, classifier_embedding, normalized_sscd, sscd_embedding
from pipeline.evaluation.likelihood import ProbabilityFlowNLL
from pipeline.evaluation.probes import denoising_losses, membership_auc, reconstruct
from pipeline.evaluation.quality import flat_float, quality
from pipeline.search.neighbours import exact_search, temporary_vectors


def thresholds(cfg: dict, nearest_retain: np.ndarray) -> tuple[np.ndarray, str]:
    """tau_j for each distinct forget image, and a sentence saying how it was derived."""
    if cfg["rule"] == "absolute":
        return np.full(len(nearest_retain), cfg["value"], dtype=np.float64), (
            f"absolute: L2 < {cfg['value']} in [0, 1] pixel space")
    return cfg["value"] * nearest_retain.astype(np.float64), (
        f"relative: L2 < {cfg['value']} x (L2 distance from the forget image to its nearest retain image), "
        "in [0, 1] pixel space; 0.87 = 10 / 11.49 reproduces the MNIST T-shirt protocol's threshold")


def nearest_retain_distance(images: np.ndarray, forget: dict) -> np.ndarray:
    """For each distinct forget image, the L2 distance in [0, 1] pixel space to its nearest retain image."""
    with temporary_vectors(images[retain_rows(len(images), forget["rows"])]) as retain:
        _, dist = exact_search(retain, flat_float(to_float(images[forget["distinct"]])), 1)
    return dist[:, 0]


def reproduction(samples: np.ndarray, forget_images: np.ndarray, tau: np.ndarray) -> dict:
    """Which samples lie within tau_j of forget image j, for any j.

    ``samples`` (N, C, H, W) and ``forget_images`` (m, C, H, W) in [0, 1].
    """
    sq = faiss.pairwise_distances(flat_float(samples), flat_float(forget_images))
    dist = np.sqrt(np.maximum(sq, 0))  # (N, m)
    within = dist < tau[None, :]
    hits = within.any(axis=1)
    return {
        "hits": hits,
        "rate": float(hits.mean()),
        "count": int(hits.sum()),
        "per_image_count": within.sum(axis=0).astype(int).tolist(),
        "per_image_closest": dist.min(axis=0).tolist(),
    }


def reference_images(params: dict, images: np.ndarray, forget_rows: np.ndarray) -> np.ndarray:
    """A seeded subset of ``metrics.quality.n_reference`` retain images, [0, 1] floats."""
    rows = retain_rows(len(images), forget_rows)
    n = min(params["metrics"]["quality"]["n_reference"], len(rows))
    rows = np.sort(np.random.default_rng(0).choice(rows, n, replace=False))
    return to_float(images[rows])


def nn_memorization(samples: np.ndarray, images: np.ndarray, forget: dict, ratio: float) -> dict:
    """Samples whose nearest distinct training image is a forget image, at d_1 < ratio * d_2."""
    group, first = group_identical(images)
    is_forget = np.isin(np.arange(len(first)), group[forget["rows"]])
    with temporary_vectors(images[first]) as distinct:
        pos, dist = exact_search(distinct, flat_float(samples), 2)
    hits = is_forget[pos[:, 0]] & (dist[:, 0] < ratio * dist[:, 1])
    return {"rate": float(hits.mean()), "count": int(hits.sum()), "ratio": ratio,
            "description": "nearest distinct training image is a forget image and d1 < ratio x d2"}


def evaluate_samples(params: dict, samples: np.ndarray, train: dict, forget: dict,
                     classifier: torch.nn.Module | None) -> dict:
    """Forget reproduction, nearest-neighbour memorization and quality of a model's samples."""
    cfg = params["metrics"]
    images = train["images"]
    forget_images = to_float(images[forget["distinct"]])
    nearest_retain = nearest_retain_distance(images, forget)
    tau, rule = thresholds(cfg["threshold"], nearest_retain)
    rep = reproduction(samples, forget_images, tau)
    kept = samples[~rep["hits"]]
    reference = reference_images(params, images, forget["rows"])
    figures = quality(kept, reference, cfg["quality"], classifier)
    return {
        "n_samples": len(samples),
        "forget_reproduction": {
            "rate": rep["rate"],
            "count": rep["count"],
            "threshold": {**cfg["threshold"], "derivation": rule},
            "per_image": [
                {"row": int(row), "threshold": float(t), "nearest_retain_distance": float(d),
                 "reproduced": c, "closest_sample_distance": float(m)}
                for row, t, d, c, m in zip(forget["distinct"], tau, nearest_retain,
                                           rep["per_image_count"], rep["per_image_closest"])
            ],
        },
        "nn_memorization": nn_memorization(samples, images, forget, cfg["memorization"]["ratio"]),
        "quality": {**figures, "description": figures["description"] + "; forget reproductions left out",
                    "n_samples_used": int(len(kept))},
    }


def copy_detection(embedding: Embedding, originals: torch.Tensor, recon: torch.Tensor, neighbours: torch.Tensor,
                   unrelated: torch.Tensor) -> list[dict]:
    """Per forget image: embedding similarity of its reconstructions and their nSSCD.
    ``originals`` (m, C, H, W), ``recon`` (m, R, C, H, W), ``neighbours`` (m, K, C, H, W) and
    ``unrelated`` (U, C, H, W), all in [0, 1]."""
    unrelated_emb = embedding.embed(unrelated).numpy()
    out = []
    for x, r, n in zip(originals, recon, neighbours):
        score = normalized_sscd(embedding.embed(r).numpy(), embedding.embed(x[None]).numpy()[0],
                                embedding.embed(n).numpy(), unrelated_emb)
        out.append({"similarity": float(score["similarity"].mean()), "nsscd": float(score["nsscd"].mean()),
                    "plausibility": float(score["plausibility"].mean()), "chance": score["chance"],
                    "neighbour_similarity": score["neighbour_similarity"]})
    return out


def evaluate_model(params: dict, unet, scheduler, train: dict, forget: dict, knn: dict, heldout: dict,
                   embedding: Embedding) -> tuple[dict, dict]:
    """NLL, memorization probe, copy detection and membership attack of each distinct forget
    image; returns the figures and the probe's images ([0, 1])."""
    cfg = params["metrics"]
    originals = torch.from_numpy(to_float(train["images"][forget["distinct"]]))
    x = originals * 2 - 1
    nll = ProbabilityFlowNLL(**{k: cfg["nll"][k] for k in ("rtol", "atol", "eps", "seed")})(unet, scheduler, x)
    noised, recon = reconstruct(unet, scheduler, x, **cfg["probe"])
    noised, recon = (noised + 1) / 2, (recon + 1) / 2
    pixel_l2 = (recon - originals[:, None]).flatten(2).norm(dim=2).mean(1)
    n_unrelated = min(cfg["membership"]["nonmembers"], len(heldout["images"]))
    unrelated = torch.from_numpy(to_float(heldout["images"][:n_unrelated]))
    neighbours = torch.from_numpy(to_float(train["images"][knn["neighbours"]]))
    copies = copy_detection(embedding, originals, recon, neighbours, unrelated)
    members = denoising_losses(unet, scheduler, x, cfg["membership"]["draws"], cfg["membership"]["seed"])
    nonmembers = denoising_losses(unet, scheduler, unrelated * 2 - 1, cfg["membership"]["draws"],
                                  cfg["membership"]["seed"])
    per_image = [{"row": int(row), "nll_bits_per_dim": float(b), "probe_pixel_l2": float(d), **c,
                  "membership_loss": float(loss)}
                 for row, b, d, c, loss in zip(forget["distinct"], nll["bits_per_dim"], pixel_l2, copies, members)]
    figures = {
        "nll": {"bits_per_dim": float(np.mean(nll["bits_per_dim"])), "nfe": nll["nfe"],
                "description": "probability-flow ODE (RK45), Hutchinson trace, +7 bits/dim offset for [-1, 1] data"},
        "probe": {"t": cfg["probe"]["t"], "pixel_l2": float(pixel_l2.mean()),
                  "similarity": float(np.mean([c["similarity"] for c in copies])),
                  "nsscd": float(np.mean([c["nsscd"] for c in copies])), "embedding": embedding.describe(),
                  "fallback": embedding.fallback},
        "membership": {"auc": membership_auc(members, nonmembers), "members": len(members),
                       "nonmembers": len(nonmembers), "member_loss": float(members.mean()),
                       "nonmember_loss": float(nonmembers.mean())},
        "per_image": per_image,
    }
    return figures, {"noised": noised.numpy(), "reconstructions": recon.numpy()}


def cost(model_dir: str | Path) -> dict:
    """What the job that made the model recorded in ``cost.json`` (wall time, steps, peak memory);
    nulls for a downloaded model."""
    path = Path(model_dir) / "cost.json"
    if not path.is_file():
        return {"wall_time_s": None, "steps": None, "peak_rss_mib": None, "peak_cuda_mib": None}
    return json.loads(path.read_text())


def embedding_for(params: dict, classifier: torch.nn.Module | None) -> Embedding:
    sscd = params["metrics"]["copy_detection"].get("sscd")
    return sscd_embedding(sscd) if sscd else classifier_embedding(classifier)
