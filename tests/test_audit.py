"""The verdict on a deletion request (pipeline/report/audit.py): a model that still holds the image
FAILs, the retrained model PASSes, each rule against its threshold, and the stage's outputs."""

import json

import numpy as np
import pytest
import yaml

from pipeline.artifacts import save_json, save_npz
from pipeline.diffusion.models import save_model
from pipeline.params.validation import defaults
from pipeline.report.audit import audit, code_digest, judge, sha256_file, to_markdown
from pipeline.stages import audit as audit_stage
from tests.conftest import ROOT

RULES = defaults()["audit"]


NONMEMBERS = [1.0, 2.0, 3.0, 4.0]  # the held-out images' losses in the membership attack


def metrics(model, reproduced=(0, 0), nll=(6.0, 6.0), nsscd=(0.7, 0.7), auc=0.2, wall=10.0, n=1000, loss=(5.0, 5.0)):
    """A metrics JSON as the metrics stage writes it, for two forget images (rows 3 and 8)."""
    return {"model": model, "n_samples": n,
            "forget_reproduction": {"per_image": [{"row": r, "reproduced": c} for r, c in zip((3, 8), reproduced)]},
            "per_image": [{"row": r, "nll_bits_per_dim": v, "nsscd": s, "membership_loss": x}
                          for r, v, s, x in zip((3, 8), nll, nsscd, loss)],
            "membership": {"auc": auc, "nonmember_losses": NONMEMBERS}, "cost": {"wall_time_s": wall}}


ONE_REQUEST = [{"id": "req-7", "date": "2026-12-01", "images": 2, "rows": 530}]
BOTH_IN_IT = {3: 0, 8: 0}  # both forget images belong to the one request


RETRAINED = metrics("retrained", wall=480.0)
MEMORIZING = metrics("naive-s0", reproduced=(42, 0), nll=(2.3, 6.1), nsscd=(0.999, 0.7), auc=1.0)


def test_a_model_that_still_reproduces_the_image_fails_every_rule_it_breaks():
    verdict = judge(MEMORIZING, RETRAINED, RULES)
    assert verdict["verdict"] == "FAIL" and verdict["baseline"] == "retrained"
    first, second = verdict["images"]
    assert not first["pass"] and second["pass"]
    assert {k: c["pass"] for k, c in first["checks"].items()} == {
        "reproduction": False, "probe_nsscd": False, "nll_bits_per_dim": False}
    assert first["checks"]["reproduction"]["value"] == 0.042 and first["checks"]["reproduction"]["threshold"] == 0.005
    assert first["checks"]["nll_bits_per_dim"]["threshold"] == pytest.approx(6.0 - RULES["nll_margin"])
    assert not verdict["membership_auc"]["pass"] and verdict["membership_auc"]["threshold"] == 0.75


def test_the_retrained_model_passes_against_held_out_images():
    verdict = judge(RETRAINED, None, RULES)
    assert verdict["verdict"] == "PASS" and verdict["baseline"] == "held-out"
    assert "nll_bits_per_dim" not in verdict["images"][0]["checks"]  # no reference: the rule does not apply
    assert verdict["images"][0]["checks"]["probe_nsscd"]["threshold"] == RULES["max_nsscd"]


@pytest.mark.parametrize("change, rule", [
    ({"reproduced": (5, 0)}, None),  # 0.5 %: at the threshold
    ({"reproduced": (6, 0)}, "reproduction"),
    ({"nll": (5.0, 6.0)}, None),  # exactly the margin below
    ({"nll": (4.9, 6.0)}, "nll_bits_per_dim"),
    ({"nsscd": (0.79, 0.7)}, None),
    ({"nsscd": (0.81, 0.7)}, "probe_nsscd"),
    ({"auc": 0.75}, None),
    ({"auc": 0.76}, "membership"),
])
def test_each_rule_at_its_threshold(change, rule):
    verdict = judge(metrics("retrack-s0", **change), RETRAINED, RULES)
    failed = [name for image in verdict["images"] for name, c in image["checks"].items() if not c["pass"]]
    failed += [] if verdict["membership_auc"]["pass"] else ["membership"]
    assert failed == ([rule] if rule else []) and verdict["verdict"] == ("FAIL" if rule else "PASS")


def test_audit_records_hashes_costs_and_renders_one_line_per_model():
    models = [metrics("pretrained", reproduced=(42, 0), auc=1.0, wall=470.0), MEMORIZING,
              metrics("retrack-s0"), RETRAINED]
    weights = {m["model"]: f"{i:064x}" for i, m in enumerate(models)}
    result = audit(models, weights, ONE_REQUEST, BOTH_IN_IT, {"params": "p", "data": "d", "code": "c"}, RULES)
    assert [(m["model"], m["verdict"]) for m in result["models"]] == [
        ("pretrained", "FAIL"), ("naive-s0", "FAIL"), ("retrack-s0", "PASS"), ("retrained", "PASS")]
    assert result["before_sha256"] == weights["pretrained"] and result["retraining_wall_time_s"] == 480.0
    assert result["models"][0]["cost_wall_time_s"] is None and result["models"][2]["cost_wall_time_s"] == 10.0
    text = to_markdown(result)
    assert "# Deletion audit: request req-7\n" in text and "Retraining costs 480.0 s (retrained)" in text
    assert "- request req-7 (2026-12-01): 2 forget image(s), 530 rows of the training set" in text
    assert "| naive-s0 | **FAIL** | FAIL 0.042 <= 0.005 |" in text
    assert text.count("**PASS**") == 2


def test_without_a_retrained_model_pretraining_stands_for_the_cost_of_retraining():
    result = audit([metrics("pretrained", wall=470.0), metrics("retrack-s0")], {"pretrained": "a", "retrack-s0": "b"},
                   [{"id": "x", "date": "–", "images": 2, "rows": 2}], BOTH_IN_IT,
                   {"params": "", "data": "", "code": ""}, RULES)
    assert result["retraining_wall_time_s"] == 470.0 and result["models"][1]["baseline"] == "held-out"
    assert "pretrained (the same recipe)" in to_markdown(result)


def test_a_step_of_a_sequence_is_judged_on_the_requests_it_has_unlearned_so_far():
    """Row 3 is request 1's image, row 8 request 2's. After step 1, row 8 is still training data: its
    reproduction and its membership do not count. After step 2, row 3 came back: request 1 FAILs."""
    requests = [{"id": "q1", "date": "d1", "images": 1, "rows": 1}, {"id": "q2", "date": "d2", "images": 1, "rows": 1}]
    step1 = metrics("naive-s0-q1", reproduced=(0, 40), nll=(6.0, 2.0), auc=0.75, loss=(2.5, 0.1))
    step2 = metrics("naive-s0-q2", reproduced=(30, 0), loss=(0.1, 5.0))
    result = audit([metrics("pretrained", wall=470.0), step1, step2, RETRAINED], {m: m for m in (
        "pretrained", "naive-s0-q1", "naive-s0-q2", "retrained")}, requests, {3: 0, 8: 1}, {"params": "", "data": "",
                                                                                       "code": ""}, RULES)
    by = {m["model"]: m for m in result["models"]}
    assert by["naive-s0-q1"]["verdict"] == "PASS" and [i["row"] for i in by["naive-s0-q1"]["images"]] == [3]
    assert [q["verdict"] for q in by["naive-s0-q1"]["requests"]] == ["PASS", "not yet requested"]
    assert by["naive-s0-q1"]["membership_auc"]["value"] == 0.5  # loss 2.5 ranks between the held-out losses
    assert by["naive-s0-q2"]["verdict"] == "FAIL"
    assert [q["verdict"] for q in by["naive-s0-q2"]["requests"]] == ["FAIL", "PASS"]
    assert by["naive-s0-q2"]["membership_auc"]["value"] == 0.2  # every image judged: the AUC as measured
    assert [q["verdict"] for q in by["retrained"]["requests"]] == ["PASS", "PASS"]
    text = to_markdown(result)
    assert "# Deletion audit: 2 requests" in text and "| model | verdict | q1 | q2 |" in text
    assert "| naive-s0-q1 | **PASS** | PASS | not yet requested |" in text


def test_the_stage_writes_the_verdict_with_the_hashes_of_what_it_judged(tmp_path, params, unet, scheduler):
    save_model(tmp_path / "models/pretrained", unet, scheduler)
    save_model(tmp_path / "models/retrack-s0", unet, scheduler)
    save_json(tmp_path / "pretrained.json", metrics("pretrained", wall=5.0))
    save_json(tmp_path / "retrack-s0.json", metrics("retrack-s0"))
    save_npz(tmp_path / "train.npz", images=np.zeros((4, 1, 8, 8), dtype=np.uint8))
    save_npz(tmp_path / "forget.npz", rows=np.array([3, 8]), group=np.array([0, 1]), distinct=np.array([3, 8]),
             request=np.array([0, 0]))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    audit_stage.main(["--params", str(tmp_path / "params.yaml"), "--metrics", str(tmp_path / "pretrained.json"),
                      str(tmp_path / "retrack-s0.json"), "--models", str(tmp_path / "models/pretrained"),
                      str(tmp_path / "models/retrack-s0"), "--data", str(tmp_path / "train.npz"), "--forget",
                      str(tmp_path / "forget.npz"), "--out", str(tmp_path / "audit.json"), "--md",
                      str(tmp_path / "audit.md")])
    result = json.loads((tmp_path / "audit.json").read_text())
    weights = sha256_file(tmp_path / "models/pretrained/unet/diffusion_pytorch_model.safetensors")
    assert result["before_sha256"] == weights and result["models"][1]["weights_sha256"] == weights
    assert result["requests"] == [{"id": "forget.strategy injected", "date": "–", "images": 2, "rows": 2}]
    assert result["digests"]["data"] == sha256_file(tmp_path / "train.npz")
    assert result["digests"]["code"] == code_digest(ROOT / "pipeline")
    assert "request forget.strategy injected" in (tmp_path / "audit.md").read_text()
