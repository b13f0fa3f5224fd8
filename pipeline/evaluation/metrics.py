"""The metrics of one model: how much of the forget set a model still holds, and what forgetting cost.

From the model's samples: forget reproduction and nearest-neighbour memorization
(:mod:`pipeline.evaluation.memorization`), and the quality, FID and IS
(:mod:`pipeline.evaluation.quality`), of the samples that are not forget reproductions, as in the
reference protocol.

From the model itself, for each distinct forget image: its NLL in bits/dim by the probability-flow
ODE (:mod:`pipeline.evaluation.likelihood`), the memorization probe at t = 250 with pixel and embedding
similarity and the normalized SSCD (:mod:`pipeline.evaluation.probes`, :mod:`pipeline.evaluation.copydetect`), and the
loss-based membership attack's AUC against held-out images. Cost: the wall time, steps and peak
memory that the model's training or unlearning job recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pipeline.data.sets import retain_rows
from pipeline.diffusion.images import to_float
from pipeline.evaluation.copydetect import Embedding, classifier_embedding, normalized_sscd, sscd_embedding
from pipeline.evaluation.likelihood import ProbabilityFlowNLL
from pipeline.evaluation.memorization import nearest_retain_distance, nn_memorization, reproduction, thresholds
from pipeline.evaluation.probes import denoising_losses, membership_auc, reconstruct
from pipeline.evaluation.quality import quality


def reference_images(params: dict, images: np.ndarray, forget_rows: np.ndarray) -> np.ndarray:
    """A seeded subset of ``metrics.quality.n_reference`` retain images, [0, 1] floats."""
    rows = retain_rows(len(images), forget_rows)
    n = min(params["metrics"]["quality"]["n_reference"], len(rows))
    rows = np.sort(np.random.default_rng(0).choice(rows, n, replace=False))
    return to_float(images[rows])


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
                       "nonmember_loss": float(nonmembers.mean()), "nonmember_losses": nonmembers.tolist()},
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
