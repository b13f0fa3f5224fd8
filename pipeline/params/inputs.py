"""What an experiment needs from outside the workflow, decided by its params alone.
"""

from __future__ import annotations


def external_files(params: dict) -> dict[str, list[str]]:
    """The files an experiment reads that no stage writes, by what they are: the image folder
    (``base``), forget images injected from files, the encoder of a latent or embedding k-NN
    space, the SSCD model and the Inception weights, each when params name one. The rules declare
    them as inputs, so that a missing one stops the run before any job starts."""
    data, metrics = params["data"], params["metrics"]
    return {
        "base": [data["source"]["path"]] if data["source"]["kind"] == "folder" else [],
        "forget_images": [item["image"] for item in data["inject"]
                          if item["image"] != "tshirt" and not item["image"].startswith("torchvision:")],
        "encoder": [params["knn"]["encoder"]] if params["knn"]["space"] != "pixels" else [],
        "sscd": [metrics["copy_detection"]["sscd"]] if metrics["copy_detection"].get("sscd") else [],
        "inception": [metrics["quality"]["inception_weights"]] if metrics["quality"].get("inception_weights") else [],
    }


def needs_classifier(params: dict) -> bool:
    """The digit classifier gives the quality features, or the copy-detection fallback."""
    metrics = params["metrics"]
    return metrics["quality"]["features"] == "classifier" or not metrics["copy_detection"].get("sscd")
