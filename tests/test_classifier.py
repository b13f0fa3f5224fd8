import json
import logging

import numpy as np
import pytest
import torch
import yaml

from pipeline.artifacts import save_npz
from pipeline.errors import UserError
from pipeline.evaluation import classifier
from pipeline.evaluation.classifier import DigitClassifier, accuracy, load_classifier, save_classifier, train_classifier
from pipeline.stages import classifier as classifier_stage
from pipeline.stages.classifier import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = {"steps": 60, "batch_size": 32, "lr": 3e-3, "seed": 0}
LOG = logging.getLogger("test")


def patterns(rng, per_class):
    """Three classes of 8x8 grey images, a horizontal band, a vertical band and a diagonal, under
    uniform noise; uint8 (3 per_class, 1, 8, 8) and their labels."""
    base = np.zeros((3, 8, 8))
    base[0, 2:4, :] = 1
    base[1, :, 5:7] = 1
    base[2][np.eye(8, dtype=bool)] = 1
    labels = np.repeat(np.arange(3), per_class)
    images = 170 * base[labels] + rng.integers(0, 80, size=(len(labels), 8, 8))
    return images.astype(np.uint8)[:, None], labels.astype(np.int64)


def test_classifier_shapes_for_any_resolution_and_channels():
    for channels, size in ((1, 8), (1, 16), (3, 32)):
        model = DigitClassifier(channels, 7)
        x = torch.rand(5, channels, size, size)
        assert model.features(x).shape == (5, classifier.FEATURES) and model(x).shape == (5, 7)


def test_training_separates_patterns(rng):
    images, labels = patterns(rng, 30)
    model = train_classifier(images, labels, CFG, LOG)
    assert not model.training and model.classes == 3
    test_images, test_labels = patterns(rng, 50)
    assert accuracy(model, test_images, test_labels, batch_size=64) == 1.0


def test_same_seed_same_weights(rng):
    images, labels = patterns(rng, 10)
    cfg = {**CFG, "steps": 5}
    a, b = (train_classifier(images, labels, cfg, LOG).state_dict() for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = train_classifier(images, labels, {**cfg, "seed": 1}, LOG).state_dict()
    assert not torch.equal(a["head.weight"], c["head.weight"])


def test_save_load_round_trip(tmp_path, rng):
    images, labels = patterns(rng, 10)
    model = train_classifier(images, labels, {**CFG, "steps": 5}, LOG, classes=4)
    save_classifier(tmp_path / "classifier.pt", model)
    loaded = load_classifier(tmp_path / "classifier.pt")
    assert not loaded.training and (loaded.channels, loaded.classes) == (1, 4)
    x = torch.from_numpy(images.astype(np.float32) / 255)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert [p.name for p in tmp_path.iterdir()] == ["classifier.pt"]  # no temporary file left


def test_load_classifier_names_a_missing_or_corrupt_file(tmp_path):
    with pytest.raises(UserError, match="absent.pt: classifier not found"):
        load_classifier(tmp_path / "absent.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="bad.pt: not a readable classifier"):
        load_classifier(tmp_path / "bad.pt")


def write_inputs(tmp_path, params, rng, labels_of_base=None, heldout_labels=True):
    """train.npz: 45 pattern images (row 0 also in the forget set), then 5 injected copies of one
    image (label -1, the rest of the forget set); heldout.npz: 30 fresh pattern images."""
    images, labels = patterns(rng, 15)
    if labels_of_base is not None:
        labels[:] = labels_of_base
    injected = np.full((5, 1, 8, 8), 255, dtype=np.uint8)
    save_npz(tmp_path / "train.npz", images=np.concatenate([images, injected]),
             labels=np.r_[labels, np.full(5, -1)], injected=np.r_[np.full(45, -1), np.zeros(5)].astype(np.int64),
             names=np.array([f"mnist-train-{i:05d}" for i in range(45)] + ["tshirt"] * 5))
    save_npz(tmp_path / "forget.npz", rows=np.r_[0, np.arange(45, 50)], group=np.r_[0, np.ones(5)].astype(np.int64),
             distinct=np.array([0, 45]), request=np.zeros(2))
    test_images, test_labels = patterns(rng, 10)
    save_npz(tmp_path / "heldout.npz", images=test_images, labels=test_labels if heldout_labels else -test_labels - 1,
             names=np.array([f"mnist-test-{i:05d}" for i in range(30)]))
    params["metrics"]["classifier"] = CFG
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


def argv(tmp_path):
    return ["--params", str(tmp_path / "params.yaml"), "--data", str(tmp_path / "train.npz"),
            "--forget", str(tmp_path / "forget.npz"), "--heldout", str(tmp_path / "heldout.npz"),
            "--out", str(tmp_path / "models" / "classifier.pt"), "--metrics-out", str(tmp_path / "classifier.json"),
            "--log", str(tmp_path / "classifier.log")]


@pytest.fixture
def cpu(monkeypatch):
    """The stage on the CPU, without taking every core (pipeline.diffusion.models.device would)."""
    monkeypatch.setattr(classifier_stage, "device", lambda: torch.device("cpu"))


def test_cli_writes_classifier_and_report(tmp_path, params, rng, cpu):
    write_inputs(tmp_path, params, rng)
    main(argv(tmp_path))
    model = load_classifier(tmp_path / "models" / "classifier.pt")
    assert model.classes == 3
    report = json.loads((tmp_path / "classifier.json").read_text())
    assert report["test_accuracy"] == 1.0 and report["n_test"] == 30
    assert report["n_train"] == 44 and report["classes"] == 3 and report["steps"] == CFG["steps"]
    assert report["classes_without_training_images"] == [] and report["wall_time_s"] >= 0
    assert "test accuracy 100.00 %" in (tmp_path / "classifier.log").read_text()


def test_cli_unlabelled_heldout_reports_no_accuracy(tmp_path, params, rng, cpu):
    write_inputs(tmp_path, params, rng, heldout_labels=False)
    main(argv(tmp_path))
    report = json.loads((tmp_path / "classifier.json").read_text())
    assert report["test_accuracy"] is None and report["n_test"] == 0 and "no labels" in report["reason"]


def test_cli_unlabelled_retain_set_exits_2(tmp_path, params, rng, capsys, cpu):
    write_inputs(tmp_path, params, rng, labels_of_base=-1)
    with pytest.raises(SystemExit) as info:
        main(argv(tmp_path))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: metrics.quality.features: 'classifier' needs labelled retain images" in err
    assert "'pca' or 'inception'" in err
    assert not (tmp_path / "models").exists() and not (tmp_path / "classifier.json").exists()
