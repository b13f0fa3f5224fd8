"""Text-to-image latent diffusion: the offline CLIP tokenizer against the BPE algorithm, a tiny
StableDiffusionPipeline saved and loaded through the real ``from_pretrained``, bad sources
refused by name, and the guided sampler against ``StableDiffusionPipeline``."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline
from transformers import CLIPTokenizer

from pipeline.diffusion.guided import generate, inference_scheduler
from pipeline.diffusion.sampler import sample_generators
from pipeline.diffusion.text_to_image import (
    Conditioned,
    add_lora,
    build_text_to_image,
    encode_images,
    has_lora,
    load_text_to_image,
    prompt_embeddings,
    save_text_to_image,
)
from pipeline.diffusion.tokenizer import train_clip_tokenizer
from pipeline.errors import UserError
from pipeline.methods.contract import Batch
from pipeline.methods.losses import AutoencoderLoss, CaptionedDDPMLoss
from pipeline.methods.registry import REGISTRY, make_method
from pipeline.training.loop import BatchSource, step_direction, train
from pipeline.training.prompts import prompt_source
from tests.conftest import alpha_bar
from tests.test_methods import (  # noqa: F401 (fixtures)
    HYPERPARAMETERS,
    per_example_randomness,
    reference_direction,
    reference_terms,
)

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CAPTIONS = [f"a handwritten digit {d}" for d in DIGITS] * 20 + ["a red t-shirt on a white background"] * 30


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny pipeline for 16x16 RGB images (8x8x4 latents), its tokenizer learnt from CAPTIONS."""
    return build_text_to_image(CAPTIONS, resolution=16, seed=0, work=tmp_path_factory.mktemp("tiny"),
                               merges=200, vae_channels=[16, 32], unet_channels=[16, 32], text_dim=32)


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny-sd"
    save_text_to_image(tiny, path)
    return path


def clip_bpe(word: str, merges: list[tuple[str, str]]) -> list[str]:
    """CLIP's BPE of one lower-case ASCII word, written from the algorithm (Sennrich et al. 2016):
    the characters, the last marked as the word's end, and repeatedly the adjacent pair of lowest
    merge rank joined, until no pair is a merge."""
    rank = {pair: i for i, pair in enumerate(merges)}
    symbols = list(word[:-1]) + [word[-1] + "</w>"]
    while len(symbols) > 1:
        pairs = [(rank.get(pair, np.inf), i) for i, pair in enumerate(zip(symbols, symbols[1:]))]
        best, i = min(pairs)
        if best == np.inf:
            break
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def test_tokenizer_is_clip_bpe_of_the_learnt_merges(tmp_path):
    train_clip_tokenizer(CAPTIONS, tmp_path / "tok", merges=200)
    merges = [tuple(line.split()) for line in (tmp_path / "tok" / "merges.txt").read_text().splitlines()[1:]]
    vocab = json.loads((tmp_path / "tok" / "vocab.json").read_text())
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "tok")
    assert 0 < len(merges) <= 200 and len(vocab) == len(tokenizer)  # fewer when the captions run out of pairs
    assert vocab["a"] < 256 and 256 <= vocab["a</w>"] < 512 and vocab["<|endoftext|>"] == len(vocab) - 1
    for text in ["a handwritten digit seven", "A Red T-Shirt", "zebra quartz"]:  # the last one unseen
        words = text.lower().replace("-", " - ").split()
        expected = [token for word in words for token in clip_bpe(word, merges)]
        ids = tokenizer(text).input_ids
        assert tokenizer.convert_ids_to_tokens(ids) == ["<|startoftext|>", *expected, "<|endoftext|>"]
    assert len(tokenizer.tokenize("a handwritten digit seven")) == 4  # each seen word one token
    padded = tokenizer("seven", padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert len(padded) == 77 and padded[-1] == tokenizer.eos_token_id


def test_saved_model_loads_through_from_pretrained(tiny, saved):
    assert not list(saved.rglob("*.bin")) and len(list(saved.rglob("*.safetensors"))) == 3
    direct = StableDiffusionPipeline.from_pretrained(saved)  # diffusers' own path, nothing of ours
    loaded = load_text_to_image(saved)
    for name in ("unet", "vae", "text_encoder"):
        original = getattr(tiny, name).state_dict()
        for pipe in (direct, loaded):
            copy = getattr(pipe, name).state_dict()
            assert copy.keys() == original.keys()
            assert all(torch.equal(copy[k], original[k]) for k in original)
    assert loaded.tokenizer("a handwritten digit two").input_ids == tiny.tokenizer("a handwritten digit two").input_ids
    assert not any(p.requires_grad for part in (loaded.vae, loaded.text_encoder) for p in part.parameters())
    assert all(p.requires_grad for p in loaded.unet.parameters())


def test_lora_saved_merged_and_as_adapters(saved, tmp_path):
    pipe = load_text_to_image(saved)
    z, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 700])
    c = prompt_embeddings(pipe, ["a handwritten digit one", "a red t-shirt"])
    with torch.no_grad():
        before = pipe.unet(z, t, encoder_hidden_states=c).sample
        add_lora(pipe.unet, rank=4, alpha=8)
        assert torch.equal(pipe.unet(z, t, encoder_hidden_states=c).sample, before)  # B = 0: unchanged
        trainable = [name for name, p in pipe.unet.named_parameters() if p.requires_grad]
        assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
        for name, p in pipe.unet.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.1)  # as if trained
        adapted = pipe.unet(z, t, encoder_hidden_states=c).sample
        save_text_to_image(pipe, tmp_path / "lora-run")
        merged = load_text_to_image(tmp_path / "lora-run")  # a plain pipeline, the adapters merged
        assert not has_lora(merged.unet)
        torch.testing.assert_close(merged.unet(z, t, encoder_hidden_states=c).sample, adapted, rtol=1e-4, atol=1e-5)
        base = load_text_to_image(saved)
        base.load_lora_weights(tmp_path / "lora-run" / "lora")
        torch.testing.assert_close(base.unet(z, t, encoder_hidden_states=c).sample, adapted, rtol=1e-4, atol=1e-5)
    assert (adapted - before).abs().max() > 1e-2


def test_pickled_weights_are_refused(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    with pytest.raises(UserError, match="pickled.*safetensors"):
        load_text_to_image(tmp_path / "pickled")


@pytest.mark.parametrize("source, message", [
    ("CompVis/stable-diffusion-v1-4", "offline: only a copy already in the Hub cache"),
    ("no/such/dir", "no such directory, and not a Hub id"),
])
def test_unloadable_sources_are_named(source, message, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(UserError, match=message) as error:
        load_text_to_image(source)
    assert source in str(error.value)


def test_prompt_embeddings_and_latents(tiny):
    c = prompt_embeddings(tiny, ["a handwritten digit one", ""])
    assert c.shape == (2, 77, 32) and not torch.equal(c[0], c[1])
    x = torch.rand(2, 3, 16, 16)
    z = encode_images(tiny.vae, x, torch.Generator().manual_seed(0))
    mean = tiny.vae.encode(x * 2 - 1).latent_dist.mean * tiny.vae.config.scaling_factor
    assert z.shape == (2, 4, 8, 8) and not torch.equal(z, mean)
    assert torch.equal(z, encode_images(tiny.vae, x, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_generations_equal_stable_diffusion_pipeline(tiny, kind, one_torch_thread):
    prompts = ["a handwritten digit seven", "a red t-shirt on a white background", "a handwritten digit one"]
    ours = generate(tiny, prompts, seed=3, steps=4, guidance=7.5, scheduler=kind, batch_size=2, first=5)
    reference = StableDiffusionPipeline(**{**tiny.components, "scheduler": inference_scheduler(tiny, kind, 4)})
    theirs = reference(prompts, num_inference_steps=4, guidance_scale=7.5, output_type="np",
                       generator=sample_generators(3, range(5, 8))).images
    assert ours.images.shape == (3, 3, 16, 16) and ours.latents.shape == (3, 4, 8, 8)
    np.testing.assert_allclose(ours.images, theirs.transpose(0, 3, 1, 2), atol=1e-5)
    alone = generate(tiny, prompts[2:], seed=3, steps=4, guidance=7.5, scheduler=kind, first=7)
    np.testing.assert_allclose(alone.latents[0], ours.latents[2], atol=1e-5)  # whatever the batch


def test_unknown_scheduler_is_refused(tiny):
    with pytest.raises(UserError, match="scheduler 'euler'"):
        generate(tiny, ["a handwritten digit one"], seed=0, steps=2, scheduler="euler")


class LinearConditionalNet(torch.nn.Module):
    """A stand-in for eps_theta(z, t, c) with UNet2DConditionModel's keyword:
    out = w z + b t / 1000 + k mean(c)."""

    def __init__(self):
        super().__init__()
        self.w, self.b, self.k = (torch.nn.Parameter(torch.tensor(v)) for v in (0.7, -0.3, 0.2))

    def forward(self, z, t, encoder_hidden_states):
        shift = self.b * (t.float() / 1000) + self.k * encoder_hidden_states.mean((1, 2))
        return SimpleNamespace(sample=self.w * z + shift.view(-1, 1, 1, 1))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_conditional_loss_and_direction_match_the_definitions(scheduler, per_example_randomness, name):  # noqa: F811
    """Each method on 4-channel latents with a prompt embedding c on every term: its terms and
    update equal the definitions (tests/test_methods.py) with eps_theta(z, t, c) in place of eps_theta(z, t)."""
    torch.manual_seed(1)
    z, a, nb = torch.randn(4, 4, 3, 3), torch.randn(4, 4, 3, 3), torch.randn(4, 3, 4, 3, 3)
    c = torch.randn(77, 8) + 0.5
    hp = HYPERPARAMETERS[name]
    direction, record = step_direction(Conditioned(LinearConditionalNet(), c), make_method(name, hp, scheduler),
                                       [Batch(retain=z, forget=a, neighbours=nb)])
    net = LinearConditionalNet()

    def eps_theta(x, t):
        return net.w * x + (net.b * (t.float() / 1000) + net.k * c.mean()).view(-1, 1, 1, 1)

    terms = reference_terms(name, net, z, a, nb, hp, scheduler, eps_theta)
    for term, value in terms.items():
        assert record[term] == pytest.approx(value.item(), rel=1e-4), term
    torch.testing.assert_close(direction, reference_direction(name, terms, net, hp), rtol=1e-4, atol=1e-6)
    assert direction[2].abs() > 0  # the prompt's term moves too


def test_conditioned_unet_is_the_unet_on_the_prompt(tiny):
    c = prompt_embeddings(tiny, ["a handwritten digit one", "a handwritten digit two"])
    z, t = torch.randn(3, 4, 8, 8), torch.tensor([10, 500, 999])
    with torch.no_grad():
        ours = Conditioned(tiny.unet, c[0])(z, t).sample
        direct = tiny.unet(z, t, encoder_hidden_states=c[:1].expand(3, -1, -1)).sample
        other = Conditioned(tiny.unet, c[1])(z, t).sample
    assert torch.equal(ours, direct) and not torch.allclose(ours, other)


def test_prompt_source_draws_latents_and_their_nearest_retain_latents(rng):
    forget, retain = rng.normal(size=(3, 4, 2, 2)), rng.normal(size=(7, 4, 2, 2))
    source = prompt_source(forget, retain, k=2)
    for i in range(3):
        distances = ((retain - forget[i]) ** 2).reshape(7, -1).sum(1)
        assert source.neighbours[i].tolist() == [3 + j for j in np.argsort(distances)[:2]]  # rows after A's
    batch = source.draw(("forget", "retain"), 5, torch.device("cpu"))
    assert batch.forget.shape == (5, 4, 2, 2) and batch.neighbours.shape == (5, 2, 4, 2, 2)
    stored = [torch.from_numpy(v.astype(np.float32)) for v in (*forget, *retain)]
    assert all(any(torch.equal(z, v) for v in stored[3:]) for z in batch.retain)  # latents as they are
    with pytest.raises(UserError, match="found 0 memorized"):
        prompt_source(forget[:0], retain, k=2)


# SISS's Stable Diffusion setting samples only t = 999 (methods.md): the forget filter's hard window,
# here with a low-pass of the forget residual on the 8 x 8 latents too
SISS_AT_999 = {"time": {"window": [999, 999], "soft": None}, "frequency": {"radius": 2, "radius_at_T": None}}


@pytest.mark.parametrize("name, lora, filters", [("retrack", False, {}), ("siss", True, {}), ("erasediff", False, {}),
                                                 ("siss", False, SISS_AT_999)])
def test_a_prompt_is_unlearnt_through_the_training_loop(saved, name, lora, filters, one_torch_thread):
    pipe = load_text_to_image(saved)
    generations = generate(pipe, ["a red t-shirt on a white background"] * 6, seed=0, steps=3)
    source = prompt_source(generations.latents[:2], generations.latents[2:], k=2)
    if lora:
        add_lora(pipe.unet, rank=4, alpha=4)
    before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters() if p.requires_grad}
    method = make_method(name, {**HYPERPARAMETERS[name], **filters}, DDPMScheduler.from_config(pipe.scheduler.config))
    assert method.forget_filter.describe()["window"] == (filters["time"]["window"] if filters else None)
    c = prompt_embeddings(pipe, ["a red t shirt on a white background"])[0]
    _, log = train(Conditioned(pipe.unet, c), method, source, steps=2, batch_size=2, lr=1e-3, seed=0)
    moved = {n for n, p in pipe.unet.named_parameters() if n in before and not torch.equal(p, before[n])}
    assert log.count("\n") == 3 and "nan" not in log
    assert moved and (not lora or all("lora_" in n for n in before)) and len(moved) > len(before) // 2


def test_captioned_ddpm_loss_matches_formula(scheduler):
    z, text, empty = torch.randn(6, 4, 3, 3), torch.randn(6, 77, 8), torch.randn(1, 77, 8)
    torch.manual_seed(2)
    losses = CaptionedDDPMLoss(scheduler, empty, p_uncond=0.5)(LinearConditionalNet(), Batch(retain=z, text=text))
    torch.manual_seed(2)  # the same draws, in the documented order: t, eps, then the dropped captions
    t = torch.randint(0, 1000, (6,))
    eps = torch.randn_like(z)
    drop = torch.rand(6) < 0.5
    assert 0 < drop.sum() < 6
    expected = 0.0
    for b in range(6):
        ab = float(alpha_bar(int(t[b])))
        c = empty[0] if drop[b] else text[b]
        pred = 0.7 * (ab ** 0.5 * z[b] + (1 - ab) ** 0.5 * eps[b]) - 0.3 * t[b] / 1000 + 0.2 * c.mean()
        expected += ((pred - eps[b]) ** 2).sum().item() / 6
    assert losses.terms["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert losses.stats["uncond_share"] == pytest.approx(drop.float().mean().item())


def test_autoencoder_loss_matches_formula(tiny):
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.manual_seed(4)
    losses = AutoencoderLoss(kl_weight=0.01)(tiny.vae, Batch(retain=x))
    torch.manual_seed(4)
    with torch.no_grad():
        mean, logvar = tiny.vae.quant_conv(tiny.vae.encoder(x)).chunk(2, dim=1)
        logvar = logvar.clamp(-30, 20)  # as diffusers' DiagonalGaussianDistribution
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        reconstruction = ((tiny.vae.decode(z).sample - x) ** 2).flatten(1).sum(1)
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).flatten(1).sum(1)
    assert losses.terms["loss"].item() == pytest.approx((reconstruction + 0.01 * kl).mean().item(), rel=1e-5)
    assert losses.stats["kl"] == pytest.approx(kl.mean().item(), rel=1e-5)


def test_captioned_batches_bring_their_captions_embeddings():
    images = np.arange(12, dtype=np.uint8).reshape(12, 1, 1, 1).repeat(2, axis=2)  # row i: pixels i
    captions, text = np.arange(12) % 3, torch.randn(3, 77, 4)
    source = BatchSource(images, retain_rows=np.arange(12), captions=captions, text=text)
    batch = source.draw(("retain",), 20, torch.device("cpu"))
    rows = torch.round((batch.retain[:, 0, 0, 0] + 1) / 2 * 255).long()
    assert torch.equal(batch.text, text[torch.from_numpy(captions)[rows]])


def test_a_text_to_image_model_pretrains_through_the_training_loop(saved, one_torch_thread):
    pipe = load_text_to_image(saved)
    captions = ["a handwritten digit one", "a red t-shirt on a white background"]
    images = (np.random.default_rng(0).random((8, 3, 16, 16)) * 255).astype(np.uint8)
    before = [p.detach().clone() for p in pipe.vae.parameters()]
    pipe.vae.requires_grad_(True)
    _, log = train(pipe.vae, AutoencoderLoss(), BatchSource(images, np.arange(8)), steps=2, batch_size=4,
                   lr=1e-3, seed=0)
    assert "reconstruction" in log and not all(torch.equal(a, b) for a, b in zip(before, pipe.vae.parameters()))
    latents = encode_images(pipe.vae, torch.from_numpy(images) / 255.0).numpy()
    source = BatchSource(latents, np.arange(8), captions=np.arange(8) % 2, text=prompt_embeddings(pipe, captions))
    method = CaptionedDDPMLoss(DDPMScheduler.from_config(pipe.scheduler.config), prompt_embeddings(pipe, [""]))
    _, log = train(pipe.unet, method, source, steps=2, batch_size=4, lr=1e-3, seed=0)
    assert log.count("\n") == 3 and "nan" not in log


@pytest.mark.parametrize("train, lora, checkpointing", [("full", None, False), ("lora", {"rank": 2, "alpha": 4}, True)])
def test_the_unet_trains_whole_or_through_lora_adapters_as_params_say(tmp_path, train, lora, checkpointing):
    from pipeline.training.prompts import trainable_unet

    pipe = build_text_to_image(CAPTIONS, resolution=16, seed=0, work=tmp_path, merges=50, vae_channels=[16, 32],
                               unet_channels=[16, 32], text_dim=32)
    unet = trainable_unet(pipe, {"train": train, "lora": lora, "gradient_checkpointing": checkpointing})
    trained = {name for name, p in unet.named_parameters() if p.requires_grad}
    if train == "full":
        assert len(trained) == len(list(unet.parameters()))
    else:
        assert trained and all("lora_" in name for name in trained)
    assert unet.is_gradient_checkpointing == checkpointing
    assert not any(p.requires_grad for p in [*pipe.vae.parameters(), *pipe.text_encoder.parameters()])
