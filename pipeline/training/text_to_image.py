"""Pretraining a text-to-image latent diffusion model offline, as Stable Diffusion was trained
(Rombach et al. 2022): the VAE, then the UNet on its latents with the captions.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler
from tqdm import tqdm

from pipeline.diffusion.images import to_float
from pipeline.diffusion.models import compute_settings, device
from pipeline.diffusion.text_to_image import build_text_to_image, encode_images, prompt_embeddings
from pipeline.methods.losses import AutoencoderLoss, CaptionedDDPMLoss
from pipeline.training.loop import BatchSource, train


def pretrain_text_to_image(params: dict, images: np.ndarray, captions: list[str], caption_rows: np.ndarray, log,
                           resume: Path | None = None):
    """A fresh text-to-image model of ``text_to_image.model``'s sizes, trained as Stable Diffusion
    was (Rombach et al. 2022), in two stages on the whole training set:

    1. the VAE with the autoencoder loss (:class:`~pipeline.methods.losses.AutoencoderLoss`);
    2. its scaling factor s set to 1 / std of the latents E(x) of the training set (as SD's
       0.18215 was chosen), so that z = s E(x) has unit variance;
    3. the UNet with the captioned DDPM loss on z (one draw of E(x) per image) and each row's
       caption (``caption_rows``, indices into ``captions``), the captions dropped for the empty
       prompt with probability ``p_uncond`` (classifier-free guidance), keeping the EMA weights.

    The text encoder stays at its random initialisation: its embeddings of the few distinct
    captions are distinct, which is all the UNet's cross-attention needs to tell them apart.
    Returns the pipeline and the two training logs."""
    cfg, compute = params["text_to_image"], params["compute"]
    data, seed = params["data"], cfg["pretrain"]["seed"]
    with tempfile.TemporaryDirectory() as work:
        pipe = build_text_to_image(captions, data["resolution"], data["channels"], seed, work, **cfg["model"])
    rows = np.arange(len(images))
    vae_cfg, unet_cfg = cfg["pretrain"]["vae"], cfg["pretrain"]["unet"]
    log.info("text-to-image model: VAE %.2f M, UNet %.2f M parameters; %d images, %d captions",
             n_params(pipe.vae) / 1e6, n_params(pipe.unet) / 1e6, len(images), len(captions))
    pipe.vae.requires_grad_(True)
    vae, vae_log = train(pipe.vae.to(device()), AutoencoderLoss(vae_cfg["kl_weight"]), BatchSource(images, rows),
                         steps=vae_cfg["steps"], batch_size=vae_cfg["batch_size"], lr=vae_cfg["lr"], seed=seed,
                         **compute_settings(params), resume=resume and resume / "vae",
                         resume_every=compute["resume_every"], resume_key={"objective": "vae", **vae_cfg},
                         desc="pretrain vae", log=log)
    pipe.vae = vae.requires_grad_(False).eval()
    latents = latents_of(pipe.vae, images, seed)
    scale = 1 / float(latents.std())
    pipe.vae.register_to_config(scaling_factor=scale)
    log.info("VAE scaling factor 1 / std(E(x)) = %.4f", scale)
    method = CaptionedDDPMLoss(DDPMScheduler.from_config(pipe.scheduler.config),
                               prompt_embeddings(pipe, [""]), unet_cfg["p_uncond"])
    source = BatchSource(latents * scale, rows, captions=caption_rows, text=prompt_embeddings(pipe, captions))
    pipe.unet.requires_grad_(True)
    unet, unet_log = train(pipe.unet.to(device()), method, source, steps=unet_cfg["steps"],
                           batch_size=unet_cfg["batch_size"], lr=unet_cfg["lr"], seed=seed,
                           warmup_steps=unet_cfg["warmup_steps"], ema_decay=unet_cfg["ema_decay"],
                           **compute_settings(params), resume=resume and resume / "unet",
                           resume_every=compute["resume_every"],
                           resume_key={"objective": "captioned ddpm", **unet_cfg, "scaling_factor": scale},
                           desc="pretrain unet", log=log)
    pipe.unet = unet.requires_grad_(False).eval()
    return pipe.to("cpu"), vae_log, unet_log


def latents_of(vae, images: np.ndarray, seed: int, block: int = 512) -> np.ndarray:
    """E(x) of every image (uint8 rows, read a block at a time), unscaled, one seeded draw each."""
    generator = torch.Generator(vae.device).manual_seed(seed)
    out = [encode_images(vae, torch.from_numpy(to_float(np.asarray(images[i:i + block]))), generator).cpu()
           / vae.config.scaling_factor
           for i in tqdm(range(0, len(images), block), desc="encode", unit="block", mininterval=5)]
    return torch.cat(out).numpy()


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
