"""Text-to-image latent diffusion (Rombach et al. 2022): a diffusers ``StableDiffusionPipeline``,
how the workflow loads, builds and saves one, and the maps between images, prompts and latents.

A text-to-image model is a directory written by ``StableDiffusionPipeline.save_pretrained``
(weights as safetensors), so ``StableDiffusionPipeline.from_pretrained(path)`` loads it; the
starting model may also be a Hub id (``CompVis/stable-diffusion-v1-4``). Its parts:

- the UNet (``UNet2DConditionModel``), what unlearning trains: eps_theta(z_t, t, c), the noise in a
  latent z_t given a prompt's text embedding c, through cross-attention;
- the VAE (``AutoencoderKL``), frozen: an image x in [-1, 1] is the latent
  z = s * E(x), E(x) drawn from the encoder's Gaussian and s = ``scaling_factor`` (0.18215 for
  SD v1), which brings z to unit variance; x = D(z / s);
- the CLIP text encoder and its tokenizer, frozen: c = the encoder's last hidden states of the
  prompt's tokens, padded to 77 (77 x 768 for SD v1).

Without a download (an offline machine, the test suite), :func:`build_text_to_image` makes a
small model of the same architecture from configs, with a tokenizer learnt from the captions
(:mod:`pipeline.diffusion.tokenizer`).
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from pipeline.artifacts import atomic_path
from pipeline.diffusion.tokenizer import MAX_LENGTH, train_clip_tokenizer
from pipeline.errors import UserError

# Stable Diffusion v1's scheduler as its repository ships it (scheduler_config.json): PNDM on
# T = 1000 steps, betas linear in sqrt(beta) from 0.00085 to 0.012, epsilon prediction. Training
# uses only its alpha_bar_t; the samplers build DDIM or DDPM from this config.
SD_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
               "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "set_alpha_to_one": False,
               "skip_prk_steps": True, "steps_offset": 1}

# The UNet of CompVis/stable-diffusion-v1-4 (unet/config.json; its other keys are
# UNet2DConditionModel's defaults): 859.5 M parameters, 4 x 64 x 64 latents of 512 x 512 images,
# cross-attention on CLIP ViT-L/14's 77 x 768 text embeddings.
SD14_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2, "cross_attention_dim": 768, "attention_head_dim": 8,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
}

# A model small enough to train on 2 CPU cores: 4-channel latents at half the image's side (two
# VAE levels, one downsampling), a two-level UNet with cross-attention, a 2-layer CLIP text encoder.
TINY = {"vae_channels": [32, 64], "latent_channels": 4, "unet_channels": [32, 64], "layers_per_block": 1,
        "text_dim": 64, "text_layers": 2, "heads": 4, "merges": 2000, "norm_groups": 8}


def is_offline() -> bool:
    """Whether the Hugging Face Hub may not be reached (``HF_HUB_OFFLINE``, as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").upper() in {"1", "ON", "YES", "TRUE"}


def load_text_to_image(source: str | Path) -> StableDiffusionPipeline:
    """The pipeline at ``source``, a local directory or a Hub id, its weights from safetensors
    only (a pickled ``.bin`` checkpoint can run code when loaded), without a safety checker.
    Errors name ``source``: a missing directory, a Hub id while offline and not cached, a
    directory that is not a pipeline, weights that are not safetensors, a scheduler that does
    not predict the noise."""
    local = Path(source).exists()
    if not local and (str(source).startswith((".", "/")) or str(source).count("/") != 1):
        raise UserError(f"{source}: no such directory, and not a Hub id (owner/name)")
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            str(source), use_safetensors=True, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False, local_files_only=local or is_offline())
    except (OSError, ValueError, EnvironmentError) as exc:
        where = " (offline: only a copy already in the Hub cache can load)" if not local and is_offline() else ""
        raise UserError(f"{source}: not a loadable StableDiffusionPipeline with safetensors weights{where} "
                        f"({str(exc).splitlines()[0]})") from exc
    if pipe.scheduler.config.prediction_type != "epsilon":
        raise UserError(f"{source}: the scheduler predicts {pipe.scheduler.config.prediction_type!r}; "
                        "the unlearning losses need epsilon prediction")
    freeze(pipe)
    return pipe


def freeze(pipe: StableDiffusionPipeline) -> None:
    """The VAE and the text encoder in eval mode without gradients: only the UNet trains."""
    for part in (pipe.vae, pipe.text_encoder):
        part.requires_grad_(False).eval()


LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # the attention projections, as diffusers' LoRA scripts


def add_lora(unet: UNet2DConditionModel, rank: int, alpha: float) -> None:
    """LoRA adapters (Hu et al. 2022) on the UNet's attention projections, through peft
    (``unet.add_adapter``): each W x becomes W x + (alpha / rank) B A x with A (rank x in)
    Gaussian and B (out x rank) zero, so the model starts unchanged; only A and B train."""
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=LORA_TARGETS))


def has_lora(unet: UNet2DConditionModel) -> bool:
    return bool(getattr(unet, "peft_config", None))


def save_text_to_image(pipe: StableDiffusionPipeline, path: str | Path,
                       files: dict[str, str | Path] | None = None) -> None:
    """``save_pretrained`` (safetensors) into a temporary directory with ``files`` beside it (name:
    text to write, or a file or directory to move in, last), renamed to ``path`` when complete. A
    UNet with LoRA adapters is saved twice: merged into its weights (the pipeline that
    ``from_pretrained`` loads), and the adapters alone in ``lora/`` (diffusers' LoRA format:
    ``pipe.load_lora_weights(path / "lora")`` on the starting model gives the same UNet)."""
    with atomic_path(path, directory=True) as tmp:
        _save_pipeline(pipe, tmp)
        for name, content in (files or {}).items():
            if isinstance(content, Path):
                if content.exists():
                    shutil.move(content, tmp / name)
            else:
                (tmp / name).write_text(content)


def _save_pipeline(pipe: StableDiffusionPipeline, tmp: Path) -> None:
    if has_lora(pipe.unet):
        adapters = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
        StableDiffusionPipeline.save_lora_weights(  # with the LoraConfig, for its alpha / rank
            tmp / "lora", unet_lora_layers=adapters,
            unet_lora_adapter_metadata=pipe.unet.peft_config["default"].to_dict())
    pipe = StableDiffusionPipeline(**{**pipe.components, "unet": merged_unet(pipe.unet)}, requires_safety_checker=False)
    pipe.save_pretrained(tmp, safe_serialization=True)


def merged_unet(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """The UNet itself, or with LoRA adapters a copy with them merged into its weights."""
    if not has_lora(unet):
        return unet
    merged = copy.deepcopy(unet)
    merged.fuse_lora()
    merged.unload_lora()
    return merged


def build_text_to_image(captions: list[str], resolution: int, channels: int = 3, seed: int = 0,
                        work: str | Path | None = None, **sizes) -> StableDiffusionPipeline:
    """A randomly initialised pipeline of Stable Diffusion's architecture at ``TINY``'s sizes
    (overridden by ``sizes``) for ``resolution``-pixel images of ``channels`` channels, its
    tokenizer learnt from ``captions`` (in ``work``, a directory kept for it, or a temporary one),
    the weights drawn from ``seed``, and SD v1's scheduler (``SD_SCHEDULE``)."""
    cfg = {**TINY, **sizes}
    unknown = set(sizes) - set(TINY)
    if unknown:
        raise UserError(f"tiny text-to-image model: unknown sizes {sorted(unknown)}; expected some of {sorted(TINY)}")
    tokenizer = _tokenizer(captions, cfg["merges"], work)
    torch.manual_seed(seed)
    levels = len(cfg["vae_channels"])
    vae = AutoencoderKL(in_channels=channels, out_channels=channels, latent_channels=cfg["latent_channels"],
                        block_out_channels=tuple(cfg["vae_channels"]), layers_per_block=cfg["layers_per_block"],
                        down_block_types=("DownEncoderBlock2D",) * levels,
                        up_block_types=("UpDecoderBlock2D",) * levels,
                        norm_num_groups=cfg["norm_groups"], sample_size=resolution)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cfg["text_dim"], intermediate_size=4 * cfg["text_dim"],
        num_hidden_layers=cfg["text_layers"], num_attention_heads=cfg["heads"], max_position_embeddings=MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    n = len(cfg["unet_channels"])
    unet = UNet2DConditionModel(
        sample_size=resolution // 2 ** (levels - 1), in_channels=cfg["latent_channels"],
        out_channels=cfg["latent_channels"], block_out_channels=tuple(cfg["unet_channels"]),
        layers_per_block=cfg["layers_per_block"], cross_attention_dim=cfg["text_dim"],
        attention_head_dim=cfg["heads"], norm_num_groups=cfg["norm_groups"],
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=PNDMScheduler(**SD_SCHEDULE), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    freeze(pipe)
    return pipe


def _tokenizer(captions: list[str], merges: int, work: str | Path | None) -> CLIPTokenizer:
    if work is None:
        with tempfile.TemporaryDirectory() as tmp:
            return _tokenizer(captions, merges, tmp)
    train_clip_tokenizer(captions, Path(work) / "tokenizer", merges)
    return CLIPTokenizer.from_pretrained(Path(work) / "tokenizer")


def prompt_embeddings(pipe: StableDiffusionPipeline, prompts: list[str]) -> torch.Tensor:
    """c for each prompt, (len(prompts), 77, D): the text encoder's last hidden states of its
    tokens padded (with the end token) or truncated to the tokenizer's length, on the text
    encoder's device, as ``StableDiffusionPipeline.encode_prompt`` computes them (no clip skip)."""
    tokens = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                            truncation=True, return_tensors="pt")
    device = pipe.text_encoder.device
    mask = tokens.attention_mask.to(device) if getattr(pipe.text_encoder.config, "use_attention_mask", False) else None
    with torch.no_grad():
        return pipe.text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]


def encode_images(vae: AutoencoderKL, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = s * E(x) for images in [0, 1], (N, C, H, W): a draw from the encoder's Gaussian (as the
    reference codes take ``latent_dist.sample()``), seeded by ``generator``."""
    with torch.no_grad():
        dist = vae.encode(images.to(vae.device, vae.dtype) * 2 - 1).latent_dist
        return dist.sample(generator) * vae.config.scaling_factor


def decode_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """x = D(z / s), as images in [0, 1] (N, C, H, W), float32."""
    with torch.no_grad():
        images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    return (images.float() / 2 + 0.5).clamp(0, 1)


class Conditioned(torch.nn.Module):
    """eps_theta(z_t, t, c) of a ``UNet2DConditionModel`` for one prompt embedding c (77, D),
    called as the losses call an unconditional UNet, ``net(z_t, t).sample``: every method of
    :mod:`pipeline.methods.losses` trains a text-to-image UNet unchanged, in latent space, with c
    on each of its terms. The reference codes condition both the forget and the retain term on
    the modified prompt's embedding, without the empty prompt (methods.md, Stable Diffusion)."""

    def __init__(self, unet: UNet2DConditionModel, embedding: torch.Tensor):
        super().__init__()
        self.unet = unet
        self.register_buffer("embedding", embedding.reshape(1, *embedding.shape[-2:]), persistent=False)

    def forward(self, z: torch.Tensor, t: torch.Tensor):
        return self.unet(z, t, encoder_hidden_states=self.embedding.expand(len(z), -1, -1))
