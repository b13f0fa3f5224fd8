"""The verdict on a deletion request: for each model, did the forget images leave it?

Each model (the pretrained one, each unlearning run, the retrained reference) is judged image by
image against a baseline: the retrained model's figures for the same image when the experiment
has one (``experiment.retrain``), else what an image the model never saw gives. The rules
(``audit`` in params, defaults in pipeline/params/defaults.yaml):

- reproduction: the share of the model's samples within the reproduction threshold of the image
  (:mod:`pipeline.evaluation.metrics`) is at most max(the retrained model's share,
  ``max_reproduction``). 0.005, the default, is the rate below which the trajectory counts an
  image deleted (``metrics.trajectory.deleted_rate``);
- likelihood: the image's NLL (bits/dim) is at least the retrained model's less ``nll_margin``
  (default 1.0, a quarter of the 3.9 bits/dim between the pretrained and the retrained model on
  the default experiment); without a retrained model this rule does not apply;
- probe: the nSSCD of the image's t = 250 reconstruction is at most the retrained model's plus
  ``nsscd_margin`` (default 0.1), else at most ``max_nsscd`` (default 0.9): 1 is a copy;
- membership: the loss attack's AUC, forget images against held-out images, is at most
  max(the retrained model's AUC, 0.5) + ``auc_margin`` (default 0.25): 0.5 is an image like any
  held-out one; with few forget images the AUC moves in coarse steps.

A model PASSes when every rule that applies holds for every forget image it has been asked to
delete. With ``experiment.requests``, each request gets its own verdict, and a step of the
sequence (``retrack-s0-q1``) is judged only on the requests it has unlearned so far: a later
request's images are still training data then (the membership rule is computed on the judged
images alone). The verdict records
what it judged: the SHA-256 of each model's weights (``unet/diffusion_pytorch_model.safetensors``)
and of the training set, a digest of the params and of the code, and the cost of each unlearning
run beside that of retraining (the retrained model's, or the pretraining job's: the same recipe).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from pipeline.evaluation.probes import membership_auc
from pipeline.params.runs import REFERENCE_MODELS, Run
from pipeline.report.tables import forget_image_figures, markdown_table

WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def code_digest(package: Path) -> str:
    """SHA-256 over the package's source (every .py and .yaml file, by path, in path order)."""
    h = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.suffix in (".py", ".yaml")):
        h.update(path.relative_to(package).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def params_digest(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def judged_auc(metrics: dict, rows: set[int]) -> float:
    """The membership attack's AUC on the forget images ``rows`` alone (all of them: as measured)."""
    if rows >= {p["row"] for p in metrics["per_image"]}:
        return metrics["membership"]["auc"]
    losses = {p["row"]: p["membership_loss"] for p in metrics["per_image"]}
    nonmembers = np.asarray(metrics["membership"]["nonmember_losses"])
    return membership_auc(np.array([losses[row] for row in sorted(rows)]), nonmembers)


def judge(metrics: dict, reference: dict | None, cfg: dict, rows: set[int] | None = None) -> dict:
    """The verdict on one model (``metrics``: its metrics JSON) against the retrained model's
    metrics ``reference`` (None: the held-out baseline), by the rules of ``cfg`` (module doc), on
    the forget images ``rows`` (None: every one)."""
    ours, ref = forget_image_figures(metrics), forget_image_figures(reference) if reference else {}
    rows = set(ours) if rows is None else rows
    images = []
    for row, fig in ours.items():
        if row not in rows:
            continue
        base = ref.get(row)
        rules = {"reproduction": (fig["reproduction"], max(base["reproduction"] if base else 0.0,
                                                           cfg["max_reproduction"]), "<="),
                 "probe_nsscd": (fig["nsscd"], base["nsscd"] + cfg["nsscd_margin"] if base else cfg["max_nsscd"], "<=")}
        if base:
            rules["nll_bits_per_dim"] = (fig["nll_bits_per_dim"], base["nll_bits_per_dim"] - cfg["nll_margin"], ">=")
        checks = {name: {"value": value, "threshold": threshold, "rule": op,
                         "pass": bool(value <= threshold if op == "<=" else value >= threshold)}
                  for name, (value, threshold, op) in rules.items()}
        images.append({"row": row, "checks": checks, "pass": all(c["pass"] for c in checks.values())})
    auc = judged_auc(metrics, rows)
    auc_max = max(reference["membership"]["auc"] if reference else 0.5, 0.5) + cfg["auc_margin"]
    membership = {"value": auc, "threshold": auc_max, "rule": "<=", "pass": bool(auc <= auc_max)}
    return {"model": metrics["model"], "baseline": "retrained" if reference else "held-out",
            "images": images, "membership_auc": membership,
            "verdict": "PASS" if membership["pass"] and all(i["pass"] for i in images) else "FAIL"}


def deleted(model: str, n_requests: int) -> int:
    """How many of the requests ``model`` has been asked to delete: a step of the sequence its
    number, every other model all of them."""
    request = None if model in REFERENCE_MODELS else Run.parse(model).request
    return n_requests if request is None else request


def audit(metrics: list[dict], weights: dict[str, str], requests: list[dict], request_of: dict[int, int],
          digests: dict, cfg: dict) -> dict:
    """The verdict of every model (``metrics`` of each), ``weights`` the SHA-256 of each model's
    weights, ``requests`` what was asked (each request's id, date and size), ``request_of`` the
    request (its index) of each distinct forget image by row, ``digests`` of params, data and code."""
    by_name = {m["model"]: m for m in metrics}
    reference = by_name.get("retrained")
    models = []
    for m in metrics:
        asked = deleted(m["model"], len(requests))
        verdict = judge(m, reference if m["model"] != "retrained" else None, cfg,
                        {row for row, k in request_of.items() if k < asked})
        per_request = [{"id": q["id"], "verdict": "not yet requested" if k >= asked else
                        "PASS" if all(i["pass"] for i in verdict["images"] if request_of[i["row"]] == k) else "FAIL"}
                       for k, q in enumerate(requests)]
        models.append({**verdict, "requests": per_request, "weights_sha256": weights[m["model"]],
                       "cost_wall_time_s": None if m["model"] == "pretrained" else m["cost"]["wall_time_s"]})
    return {"requests": requests, "digests": digests, "rules": cfg, "before_sha256": weights["pretrained"],
            "retraining_wall_time_s": (reference or by_name["pretrained"])["cost"]["wall_time_s"],
            "retraining_cost_from": "retrained" if reference else "pretrained (the same recipe)", "models": models}


COLUMNS = {"reproduction": "reproduction", "nll_bits_per_dim": "NLL (bits/dim)", "probe_nsscd": "probe nSSCD"}


def worst_cell(images: list[dict], name: str) -> str:
    """A rule's worst case over the forget images: its figure, the rule and the threshold."""
    checks = [image["checks"][name] for image in images if name in image["checks"]]
    if not checks:
        return "n/a"
    c = min(checks, key=lambda c: (c["pass"], c["threshold"] - c["value"] if c["rule"] == "<=" else
                                   c["value"] - c["threshold"]))
    return f"{'ok' if c['pass'] else 'FAIL'} {c['value']:.3g} {c['rule']} {c['threshold']:.3g}"


def to_markdown(result: dict) -> str:
    """audit.md: the request, what was judged, and a line per model with each rule's worst case."""
    reqs, dig = result["requests"], result["digests"]
    baseline = "the retrained model" if result["retraining_cost_from"] == "retrained" else "held-out images"
    asked = "".join(f"- request {q['id']} ({q['date']}): {q['images']} forget image(s), {q['rows']} rows of the "
                    "training set\n" for q in reqs)
    head = (f"# Deletion audit: {'request ' + reqs[0]['id'] if len(reqs) == 1 else f'{len(reqs)} requests'}\n\n"
            f"{asked}\nBaseline: {baseline}.\n\n"
            f"- params digest `{dig['params']}`\n- training set (data/train.npz) SHA-256 `{dig['data']}`\n"
            f"- code digest `{dig['code']}`\n"
            f"- model before unlearning (pretrained) SHA-256 `{result['before_sha256']}`\n\n")
    body = []
    for m in result["models"]:
        auc = m["membership_auc"]
        cost = "–" if m["cost_wall_time_s"] is None else f"{m['cost_wall_time_s']:.1f} s"
        each = [q["verdict"] for q in m["requests"]] if len(reqs) > 1 else []
        body.append([m["model"], f"**{m['verdict']}**", *each, *(worst_cell(m["images"], name) for name in COLUMNS),
                     f"{'ok' if auc['pass'] else 'FAIL'} {auc['value']:.3g} <= {auc['threshold']:.3g}", cost,
                     f"`{m['weights_sha256'][:16]}…`"])
    per_request = [q["id"] for q in reqs] if len(reqs) > 1 else []
    table = markdown_table(["model", "verdict", *per_request, *COLUMNS.values(), "MIA AUC", "cost",
                            "weights SHA-256"], body)
    retrain = result["retraining_wall_time_s"]
    retrain = "unknown (a downloaded model)" if retrain is None else f"{retrain:.1f} s"
    return (head + table + f"\nRetraining costs {retrain} ({result['retraining_cost_from']}). Each cell: the worst "
            "forget image's figure, the rule and its threshold (pipeline/report/audit.py).\n")
