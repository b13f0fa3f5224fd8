"""The spaces in which images are compared: pixels, a VAE's latent space, or a feature embedding.

An *encoder* maps a batch of images, float32 (B, C, H, W) in [0, 1], to vectors (B, D):

- ``pixels``: the flattened image, so L2 distances are those of [0, 1] pixel space;
- ``latent``: the mean of a diffusers ``AutoencoderKL`` posterior, or a ``VQModel``'s latents
  before quantization, flattened: the space a latent diffusion model works in. The encoder is
  loaded from a VAE directory, or from a pipeline directory with a ``vae`` / ``vqvae`` sub-folder;
- ``embedding``: a TorchScript module (``torch.jit.save``), called on [0, 1] images; it must do its
  own resizing and normalization (e.g. an SSCD copy-detection model wrapped with its transform).

:func:`embed` encodes a data set in batches into a memory-mapped ``.npy`` file, so that memory
stays bounded by one batch however large the data set is. Pixel vectors are stored as the uint8
pixels themselves: exact, and a quarter of float32's bytes for a search to read (CelebA-HQ at
256 x 256: 5.9 GB instead of 23.6 GB); :func:`decode` turns stored vectors into [0, 1] floats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from pipeline.errors import UserError

Encoder = Callable[[torch.Tensor], torch.Tensor]


def pixels(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1)


def _load_vae(path: Path):
    from diffusers import AutoencoderKL, VQModel

    for cls, sub in ((AutoencoderKL, "vae"), (VQModel, "vqvae"), (AutoencoderKL, None), (VQModel, None)):
        folder = path / sub if sub else path
        config = folder / "config.json"
        if config.is_file() and f'"{cls.__name__}"' in config.read_text():
            return cls.from_pretrained(str(folder)).eval()
    raise UserError(f"{path}: no diffusers AutoencoderKL or VQModel here or in its vae/ or vqvae/ sub-folder "
                    "(knn.encoder)")


def latent_encoder(path: str | Path) -> Encoder:
    """E(x) = mean of q(z | x) (AutoencoderKL) or the unquantized latents (VQModel), flattened;
    the VAE sees 2x - 1 as diffusers models do."""
    vae = _load_vae(Path(path))

    @torch.no_grad()
    def encode(images: torch.Tensor) -> torch.Tensor:
        out = vae.encode(2 * images - 1)
        latents = out.latent_dist.mean if hasattr(out, "latent_dist") else out.latents
        return latents.flatten(1)

    return encode


def load_torchscript(path: str | Path, missing: str) -> torch.jit.ScriptModule:
    """A TorchScript module in eval mode; ``missing``: what the error says a missing file should be."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {missing}")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except RuntimeError as exc:
        raise UserError(f"{path}: not a TorchScript file ({exc})") from exc


def torchscript_encoder(path: str | Path) -> Encoder:
    module = load_torchscript(path, "embedding model not found (knn.encoder: a TorchScript file)")

    @torch.no_grad()
    def encode(images: torch.Tensor) -> torch.Tensor:
        return module(images).flatten(1)

    return encode


def encoder(space: str, path: str | Path | None) -> Encoder:
    """The encoder of ``knn.space`` (``knn.encoder`` is the VAE or TorchScript file it needs)."""
    if space == "pixels":
        return pixels
    if path is None:
        raise UserError(f"knn.encoder: required for knn.space {space!r}")
    return latent_encoder(path) if space == "latent" else torchscript_encoder(path)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of the rows of a (N, D) and b (M, D), (N, M); 0 for a zero vector."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    return (a / np.where(na > 0, na, 1)) @ (b / np.where(nb > 0, nb, 1)).T


def decode(vectors: np.ndarray) -> np.ndarray:
    """Stored vectors as float32: uint8 pixel vectors divided by 255 (the [0, 1] pixels,
    bit for bit as the images' own conversion), any other as they are."""
    if vectors.dtype == np.uint8:
        return vectors.astype(np.float32) / 255.0
    return np.asarray(vectors, dtype=np.float32)


def embed(images, encode: Encoder, out: str | Path, batch_size: int = 256, desc: str = "embed",
          rows: np.ndarray | None = None) -> np.ndarray:
    """Encode uint8 images (N, C, H, W) (an array or a memory map), or the ``rows`` of them, in
    batches into ``out`` (.npy), and return it memory-mapped read-only: float32 (N, D), or for
    :func:`pixels` the uint8 pixels (N, C*H*W) (:func:`decode`)."""
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    if not len(rows):
        raise UserError("no images to encode")
    out_array = None
    with torch.inference_mode():
        for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch", mininterval=5):
            batch = np.asarray(images[rows[start:start + batch_size]])
            if encode is pixels:
                vectors = batch.reshape(len(batch), -1)
            else:
                vectors = encode(torch.from_numpy(batch.astype(np.float32) / 255.0)).float().numpy()
            if out_array is None:
                out_array = np.lib.format.open_memmap(out, mode="w+", dtype=vectors.dtype,
                                                      shape=(len(rows), vectors.shape[1]))
            out_array[start:start + len(vectors)] = vectors
    out_array.flush()
    del out_array
    return np.load(out, mmap_mode="r")
