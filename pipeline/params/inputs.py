"""What an experiment needs from outside the workflow, decided by its params alone.
"""

from __future__ import annotations

from pathlib import Path

# the data.inject images drawn by the code, not read from a file (pipeline.data.sources.DRAWN)
DRAWN_IMAGES = ("tshirt", "trousers")


def external_inputs(params: dict) -> list[tuple[str, str, str]]:
    """The files an experiment reads that no stage writes, as (kind, key, path): the image folder
    (``base``), forget images injected from files, a deletion request, the encoder of a latent or embedding k-NN
    space, the SSCD model and the Inception weights, each when params name one."""
    data, metrics = params["data"], params["metrics"]
    files = [("base", "data.source.path", data["source"]["path"])] if data["source"]["kind"] == "folder" else []
    files += [("forget_images", f"data.inject[{i}].image", item["image"]) for i, item in enumerate(data["inject"])
              if item["image"] not in DRAWN_IMAGES and not item["image"].startswith("torchvision:")]
    if params["forget"]["request"]["file"] and params["forget"]["strategy"] == "request":
        files.append(("request", "forget.request.file", params["forget"]["request"]["file"]))
    files += [("request", f"experiment.requests[{i}]", path) for i, path in enumerate(params["experiment"]["requests"])]
    if params["knn"]["space"] != "pixels":
        files.append(("encoder", "knn.encoder", params["knn"]["encoder"]))
    if metrics["copy_detection"].get("sscd"):
        files.append(("sscd", "metrics.copy_detection.sscd", metrics["copy_detection"]["sscd"]))
    if metrics["quality"].get("inception_weights"):
        files.append(("inception", "metrics.quality.inception_weights", metrics["quality"]["inception_weights"]))
    return files + text_to_image_inputs(params)


def text_to_image_inputs(params: dict) -> list[tuple[str, str, str]]:
    """A text-to-image experiment's files from outside: the prompts file, the SSCD model its split
    runs on, the CLIP model of its quality score, each when params name one."""
    if params["model"]["kind"] != "text_to_image":
        return []
    cfg = params["text_to_image"]
    named = [("prompts", "text_to_image.prompts", cfg["prompts"]),
             ("sscd", "text_to_image.split.sscd", cfg["split"]["sscd"]),
             ("clip", "text_to_image.evaluation.clip", cfg["evaluation"]["clip"])]
    return [item for item in named if item[2]]


def external_files(params: dict) -> dict[str, list[str]]:
    """The paths of :func:`external_inputs` by kind. The rules declare them as inputs."""
    kinds = ("base", "forget_images", "request", "encoder", "sscd", "inception", "prompts", "clip")
    return {kind: [path for k, _, path in external_inputs(params) if k == kind] for kind in kinds}


def missing_inputs(params: dict, workdir: Path) -> list[str]:
    """One message per file of :func:`external_inputs` that does not exist (relative paths from
    ``workdir``), naming its key. The workflow checks this before it plans anything: Snakemake
    would otherwise keep the outputs made from a file that is gone, as long as they exist."""
    return [f"{key}: {path}: no such file or directory" for _, key, path in external_inputs(params)
            if not (workdir / path).exists()]


def needs_classifier(params: dict) -> bool:
    """The digit classifier gives the quality features, or the copy-detection fallback."""
    metrics = params["metrics"]
    return metrics["quality"]["features"] == "classifier" or not metrics["copy_detection"].get("sscd")
