"""A memorized prompt's generations split into the memorized (A) and the rest (X): planted
near-copies of one image found by k-means and by similarity to the reference; new generations
classified by the prompt's rule, and the per-prompt figures against their definitions."""

import numpy as np
import pytest

from pipeline.data.generations import kmeans_split, reference_split
from pipeline.errors import UserError
from pipeline.evaluation.prompts import first_mitigated, prompt_figures


@pytest.fixture
def planted(rng):
    """32 generations in [-1, 1] of 3x16x16: rows 3, 7, ... (every fourth from 3) near-copies of one
    image (noise of std 0.05), the others independent smooth images; and the copied image."""
    def smooth(n):
        coarse = rng.uniform(-1, 1, size=(n, 3, 4, 4))
        return np.repeat(np.repeat(coarse, 4, axis=2), 4, axis=3)

    image = smooth(1)[0]
    generations = smooth(32)
    copies = np.arange(3, 32, 4)
    generations[copies] = np.clip(image + rng.normal(0, 0.05, size=(len(copies), *image.shape)), -1, 1)
    memorized = np.zeros(32, bool)
    memorized[copies] = True
    return generations.astype(np.float32), image.astype(np.float32), memorized


def test_kmeans_finds_the_planted_copies(planted):
    generations, _, memorized = planted
    split = kmeans_split(generations, seed=0)
    np.testing.assert_array_equal(split.memorized, memorized)
    copies_spread = np.mean((generations[memorized] - generations[memorized].mean(0)) ** 2)
    assert split.spread[0] == pytest.approx(copies_spread, rel=1e-3) and split.spread[1] > 10 * split.spread[0]
    np.testing.assert_array_equal(kmeans_split(generations, seed=1).memorized, memorized)  # not a lucky seed


def test_reference_similarity_finds_the_planted_copies(planted):
    generations, image, memorized = planted
    split = reference_split(generations, image, threshold=0.9)
    np.testing.assert_array_equal(split.memorized, memorized)
    x, ref = generations.reshape(32, -1).astype(np.float64), image.ravel().astype(np.float64)
    cosine = [v @ ref / np.sqrt((v @ v) * (ref @ ref)) for v in x]
    np.testing.assert_allclose(split.similarity, cosine, rtol=1e-5)


def test_kmeans_needs_two_generations():
    with pytest.raises(UserError, match="at least 2 generations"):
        kmeans_split(np.zeros((1, 4)))


def test_new_generations_classified_by_the_prompts_rule(planted, rng):
    generations, image, memorized = planted
    fresh = np.concatenate([image + rng.normal(0, 0.05, size=(3, *image.shape)), generations[~memorized][:5]])
    expected = np.array([True] * 3 + [False] * 5)
    by_kmeans = kmeans_split(generations, seed=0)
    np.testing.assert_array_equal(by_kmeans.classify(fresh), expected)
    centroid_a, centroid_x = generations[memorized].mean(0).ravel(), generations[~memorized].mean(0).ravel()
    np.testing.assert_allclose(by_kmeans.centroids, [centroid_a, centroid_x], atol=1e-4)
    np.testing.assert_array_equal(reference_split(generations, image, 0.9).classify(fresh), expected)


def test_prompt_figures_from_the_definitions(planted, rng):
    generations, image, memorized = planted
    split = kmeans_split(generations, seed=0)
    fresh = np.concatenate([image + rng.normal(0, 0.05, size=(2, *image.shape)), generations[~memorized][:6]])
    embed = rng.normal(size=(8, 5))  # any embedding: the figures follow the formulas
    memorized_embed = rng.normal(size=(4, 5))
    figures = prompt_figures(split, fresh, embed, memorized_embed, threshold=0.3)
    q = [max(e @ m / np.linalg.norm(e) / np.linalg.norm(m) for m in memorized_embed) for e in embed]
    assert figures == pytest.approx({"memorized_share": 2 / 8, "similarity_mean": np.mean(q),
                                     "similarity_max": max(q), "copy_share": np.mean(np.array(q) >= 0.3),
                                     "mitigated": 0.0})
    assert prompt_figures(split, fresh[2:], embed[2:], memorized_embed, 0.3)["mitigated"] == 1.0
    assert first_mitigated([10, 20, 30], [0.0, 1.0, 1.0]) == 20 and first_mitigated([10], [0.0]) is None


def test_a_split_survives_its_npz_arrays(planted, tmp_path):
    from pipeline.artifacts import load_npz, save_npz
    from pipeline.data.generations import SPLIT_KEYS, Split

    generations, image, _ = planted
    for split in (kmeans_split(generations, seed=0), reference_split(generations, image, 0.9)):
        save_npz(tmp_path / "split.npz", **split.arrays())
        back = Split.from_arrays(load_npz(tmp_path / "split.npz", SPLIT_KEYS))
        np.testing.assert_array_equal(back.memorized, split.memorized)
        np.testing.assert_array_equal(back.classify(generations), split.classify(generations))


def test_pixel_vectors_are_centred_so_their_cosine_is_the_pixel_correlation(rng):
    from pipeline.data.generations import generation_vectors

    images = rng.uniform(0, 1, size=(2, 1, 8, 8)).astype(np.float32)
    a, b = generation_vectors(images)
    cosine = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    assert cosine == pytest.approx(np.corrcoef(images[0].ravel(), images[1].ravel())[0, 1], rel=1e-5)


def test_plausibility_and_pair_similarity_match_their_formulas(rng):
    from pipeline.evaluation.prompts import pair_similarity, plausibility

    new, retain, before = rng.normal(size=(5, 7)), rng.normal(size=(4, 7)), rng.normal(size=(5, 7))
    cos = lambda u, v: u @ v / np.linalg.norm(u) / np.linalg.norm(v)  # noqa: E731
    assert plausibility(new, retain) == pytest.approx(np.mean([max(cos(g, x) for x in retain) for g in new]), rel=1e-5)
    assert pair_similarity(before, new) == pytest.approx(np.mean([cos(b, g) for b, g in zip(before, new)]), rel=1e-5)
    assert pair_similarity(new, new) == pytest.approx(1.0, rel=1e-6)


def test_clip_score_of_a_local_clip_model_matches_its_formula(tmp_path, rng):
    """CLIP score = mean_i 100 max(0, cos(E_img(x_i), E_text(p_i))), torchmetrics with a tiny CLIP
    model saved locally (the real weights cannot be downloaded here)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from pipeline.diffusion.tokenizer import train_clip_tokenizer
    from pipeline.evaluation.prompts import clip_score

    prompts = ["a handwritten digit seven", "a handwritten digit three"]
    train_clip_tokenizer(prompts * 10, tmp_path / "tok", 50)
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "tok")
    torch.manual_seed(0)
    config = CLIPConfig(text_config={"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32,
                                     "num_hidden_layers": 1, "num_attention_heads": 2, "projection_dim": 8,
                                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                                     "pad_token_id": tokenizer.pad_token_id},
                        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
                                       "projection_dim": 8},
                        projection_dim=8)
    model = CLIPModel(config).eval()
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    model.save_pretrained(tmp_path / "clip")
    processor.save_pretrained(tmp_path / "clip")
    images = rng.uniform(0, 1, size=(2, 1, 16, 16)).astype(np.float32)
    pixels = np.round(images * 255).astype(np.uint8).repeat(3, axis=1)
    with torch.no_grad():
        inputs = processor(text=prompts, images=list(torch.from_numpy(pixels)), return_tensors="pt", padding=True)
        img = model.get_image_features(pixel_values=inputs["pixel_values"])
        txt = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    img, txt = [getattr(f, "pooler_output", f) for f in (img, txt)]
    expected = (100 * torch.nn.functional.cosine_similarity(img, txt).clamp(min=0)).mean().item()
    assert clip_score(images, prompts, str(tmp_path / "clip")) == pytest.approx(expected, rel=1e-4)
