"""pipeline.evaluation.copydetect: SSCD preprocessing and loading, cosine similarity, and the properties that
the normalized SSCD must have."""

import numpy as np
import pytest
import torch

from pipeline.errors import UserError
from pipeline.evaluation import copydetect
from pipeline.evaluation.copydetect import (
    classifier_embedding,
    normalized_sscd,
    sscd_embedding,
    sscd_preprocess,
)
from pipeline.search.embeddings import cosine


def test_cosine_matches_formula_and_zero_vectors_score_zero(rng):
    a, b = rng.normal(size=(3, 5)), rng.normal(size=(4, 5))
    want = [[x @ y / np.linalg.norm(x) / np.linalg.norm(y) for y in b] for x in a]
    np.testing.assert_allclose(cosine(a, b), want)
    assert cosine(np.zeros((1, 5)), b).tolist() == [[0.0] * 4]


@pytest.fixture
def scene(rng):
    """A forget image x, its 5 nearest retain images (x blended with others), unrelated images of
    the same distribution, and a fixed random linear embedding of the centred pixels (like SSCD's
    descriptors, unrelated images have similarity near 0)."""
    d = 256
    x = rng.uniform(0, 1, d)
    neighbours = np.stack([(0.3 + 0.05 * i) * x + (0.7 - 0.05 * i) * rng.uniform(0, 1, d) for i in range(5)])
    unrelated = rng.uniform(0, 1, (50, d))
    projection = rng.normal(size=(d, 128))
    return {"x": x, "neighbours": neighbours, "unrelated": unrelated,
            "embed": lambda v: (np.atleast_2d(v) - 0.5) @ projection}


def score(scene, recon, scale=1.0):
    e = scene["embed"]
    return normalized_sscd(scale * e(recon), scale * e(scene["x"])[0], scale * e(scene["neighbours"]),
                           scale * e(scene["unrelated"]))


def test_a_copy_scores_as_not_forgotten(scene):
    assert score(scene, scene["x"])["nsscd"] == pytest.approx([1.0])


def test_replacement_by_a_retain_image_scores_its_similarity_to_x_above_chance(scene):
    out = score(scene, scene["neighbours"])
    b = out["chance"]
    e = scene["embed"]
    s = cosine(e(scene["neighbours"]), e(scene["x"]))[:, 0]
    np.testing.assert_allclose(out["plausibility"], 1.0)
    np.testing.assert_allclose(out["nsscd"], np.clip((s - b) / (1 - b), 0, 1))
    assert out["neighbour_similarity"] == pytest.approx(s.max())
    assert out["nsscd"].max() < 0.9


def test_noise_blank_and_destroyed_images_do_not_score_as_forgetting(scene, rng):
    forgetting = score(scene, scene["neighbours"])["nsscd"]  # x replaced by one of its retain neighbours
    x = scene["x"]
    broken = {
        "noise": rng.uniform(0, 1, (16, 256)),
        "blank": np.zeros((1, 256)),
        "grey": np.full((1, 256), 0.6),
        "shuffled pixels of x": np.stack([rng.permutation(x) for _ in range(16)]),
        "x under heavy noise": np.clip(x + rng.normal(0, 0.5, (16, 256)), 0, 1),
    }
    for name, images in broken.items():
        nsscd = score(scene, images)["nsscd"]
        assert nsscd.mean() > forgetting.mean() + 0.15, name
        assert nsscd.mean() > forgetting.max(), name


def test_nsscd_is_invariant_to_the_embeddings_scale(scene, rng):
    recon = np.concatenate([scene["neighbours"], rng.uniform(0, 1, (3, 256))])
    np.testing.assert_allclose(score(scene, recon, scale=1.0)["nsscd"], score(scene, recon, scale=37.5)["nsscd"])


def test_sscd_preprocess_resizes_repeats_grey_and_normalizes():
    out = sscd_preprocess(torch.full((2, 1, 16, 16), 0.5))
    assert out.shape == (2, 3, 288, 288)
    want = (0.5 - torch.tensor(copydetect.IMAGENET_MEAN)) / torch.tensor(copydetect.IMAGENET_STD)
    torch.testing.assert_close(out[:, :, 100, 200], want.expand(2, 3))


class Descriptor(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_sscd_embedding_from_a_torchscript_file(tmp_path):
    path = tmp_path / "sscd.pt"
    torch.jit.script(Descriptor()).save(str(path))
    embedding = sscd_embedding(path)
    assert not embedding.fallback and "SSCD" in embedding.describe() and "fallback" not in embedding.describe()
    assert embedding.embed(torch.rand(2, 1, 8, 8)).shape == (2, 3)


def test_missing_sscd_file_names_the_key(tmp_path):
    with pytest.raises(UserError, match=r"metrics\.copy_detection\.sscd"):
        sscd_embedding(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torchscript")
    with pytest.raises(UserError, match="not a TorchScript file"):
        sscd_embedding(bad)


def test_the_fallback_is_labelled_as_such():
    class Net(torch.nn.Module):
        def features(self, x):
            return x.flatten(1)[:, :4]

    embedding = classifier_embedding(Net())
    assert embedding.fallback and "fallback" in embedding.describe()
    assert embedding.embed(torch.rand(3, 1, 4, 4)).shape == (3, 4)
