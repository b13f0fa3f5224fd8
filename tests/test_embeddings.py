"""pipeline.search.embeddings: the pixel, latent (VAE / VQ-VAE) and TorchScript encoders, and batched embedding."""

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DModel, VQModel

from pipeline.errors import UserError
from pipeline.search.embeddings import decode, embed, encoder, latent_encoder, pixels, torchscript_encoder

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.* is deprecated:DeprecationWarning")


def unit_images(rng, n=5, c=1, h=8, w=8):
    return torch.from_numpy(rng.random((n, c, h, w), dtype=np.float32))


# ---------------------------------------------------------------- pixels and embed


@pytest.mark.parametrize("batch_size", [1, 3, 4, 10, 64])
def test_embed_pixels_stores_the_uint8_pixels_which_decode_to_the_unit_interval(tmp_path, rng, batch_size):
    images = rng.integers(0, 256, size=(10, 1, 4, 3), dtype=np.uint8)
    images[0, 0, 0, 0], images[1, 0, 0, 0] = 0, 255
    out = tmp_path / "vectors.npy"
    vectors = embed(images, pixels, out, batch_size=batch_size)
    assert isinstance(vectors, np.memmap)
    assert not vectors.flags.writeable
    assert vectors.dtype == np.uint8 and vectors.shape == (10, 12)
    np.testing.assert_array_equal(vectors, images.reshape(10, -1))  # exact, a quarter of float32's bytes
    assert np.load(out).dtype == np.uint8
    unit = decode(vectors)
    assert unit.dtype == np.float32 and unit.min() == 0.0 and unit.max() == 1.0
    np.testing.assert_allclose(unit, images.reshape(10, -1).astype(np.float64) / 255.0, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError):
        vectors[0, 0] = 1


def test_decode_leaves_float_vectors_as_they_are(rng):
    vectors = rng.random((3, 4)).astype(np.float32)
    assert decode(vectors).dtype == np.float32
    np.testing.assert_array_equal(decode(vectors), vectors)


def test_embed_reads_the_rows_asked_for_from_a_memory_map(tmp_path, rng):
    images = rng.integers(0, 256, size=(7, 3, 2, 2), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    vectors = embed(mapped, pixels, tmp_path / "v.npy", batch_size=2)
    np.testing.assert_array_equal(vectors, images.reshape(7, -1))
    rows = np.array([1, 4, 5, 6])
    some = embed(mapped, lambda x: x.flatten(1) * 2, tmp_path / "w.npy", batch_size=3, rows=rows)
    np.testing.assert_allclose(some, images[rows].reshape(4, -1) / 255.0 * 2, rtol=1e-6)


def test_embed_with_a_custom_encoder_batches_in_order(tmp_path, rng):
    images = rng.integers(0, 256, size=(9, 1, 3, 3), dtype=np.uint8)

    def row_sums(batch):  # (B, 2): sum and max of each image
        flat = batch.flatten(1)
        return torch.stack([flat.sum(1), flat.max(1).values], 1)

    vectors = embed(images, row_sums, tmp_path / "v.npy", batch_size=4)
    x = images.reshape(9, -1) / 255.0
    np.testing.assert_allclose(vectors, np.stack([x.sum(1), x.max(1)], 1), rtol=1e-5)


def test_embed_no_images_is_user_error(tmp_path):
    with pytest.raises(UserError):
        embed(np.zeros((0, 1, 4, 4), dtype=np.uint8), pixels, tmp_path / "v.npy")


def test_pixels_encoder_flattens():
    x = torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2) / 24
    assert encoder("pixels", None) is pixels
    np.testing.assert_array_equal(pixels(x).numpy(), x.numpy().reshape(2, 12))


# ---------------------------------------------------------------- latent encoders


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=(8,),
                         down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                         latent_channels=2, norm_num_groups=8, sample_size=8).eval()


def tiny_vq() -> VQModel:
    torch.manual_seed(1)
    return VQModel(in_channels=1, out_channels=1, block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                   up_block_types=("UpDecoderBlock2D",), latent_channels=2, norm_num_groups=8, sample_size=8,
                   num_vq_embeddings=16).eval()


def test_latent_encoder_is_posterior_mean_of_autoencoder_kl(tmp_path, rng):
    vae = tiny_vae()
    vae.save_pretrained(tmp_path / "vae")
    x = unit_images(rng)
    with torch.no_grad():
        want = vae.encode(2 * x - 1).latent_dist.mean.flatten(1)
    assert want.shape == (5, 2 * 8 * 8)
    got = latent_encoder(tmp_path / "vae")(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # not the encoding of x itself (the VAE sees 2x - 1)
    with torch.no_grad():
        assert not torch.allclose(got, vae.encode(x).latent_dist.mean.flatten(1), atol=1e-4)


def test_latent_encoder_from_pipeline_folder(tmp_path, rng):
    vae = tiny_vae()
    vae.save_pretrained(tmp_path / "pipe" / "vae")
    x = unit_images(rng, n=3)
    with torch.no_grad():
        want = vae.encode(2 * x - 1).latent_dist.mean.flatten(1)
    torch.testing.assert_close(latent_encoder(str(tmp_path / "pipe"))(x), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(encoder("latent", tmp_path / "pipe")(x), want, rtol=1e-5, atol=1e-6)


def test_latent_encoder_of_vq_model_is_unquantized_latents(tmp_path, rng):
    vq = tiny_vq()
    vq.save_pretrained(tmp_path / "pipe" / "vqvae")
    x = unit_images(rng, n=4)
    with torch.no_grad():
        want = vq.encode(2 * x - 1).latents.flatten(1)
    assert want.shape == (4, 2 * 8 * 8)
    torch.testing.assert_close(latent_encoder(tmp_path / "pipe")(x), want, rtol=1e-5, atol=1e-6)


def test_embed_with_latent_encoder(tmp_path, rng):
    vae = tiny_vae()
    vae.save_pretrained(tmp_path / "vae")
    images = rng.integers(0, 256, size=(5, 1, 8, 8), dtype=np.uint8)
    vectors = embed(images, encoder("latent", tmp_path / "vae"), tmp_path / "v.npy", batch_size=2)
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    with torch.no_grad():
        want = vae.encode(2 * x - 1).latent_dist.mean.flatten(1).numpy()
    np.testing.assert_allclose(vectors, want, rtol=1e-4, atol=1e-5)


def test_latent_encoder_without_vae_names_key(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"knn\.encoder"):
        latent_encoder(tmp_path / "empty")
    # a diffusers model that is not a VAE
    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8), norm_num_groups=8,
                down_block_types=("DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D")).save_pretrained(tmp_path / "unet")
    with pytest.raises(UserError, match=r"knn\.encoder"):
        latent_encoder(tmp_path / "unet")
    with pytest.raises(UserError, match=r"knn\.encoder"):
        latent_encoder(tmp_path / "missing")


@pytest.mark.parametrize("space", ["latent", "embedding"])
def test_encoder_without_path_names_key(space):
    with pytest.raises(UserError, match=r"knn\.encoder"):
        encoder(space, None)


# ---------------------------------------------------------------- TorchScript embeddings


class LinearMap(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(64, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class Pool(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 2) * 3 - 1  # (B, C, H/2, W/2): the encoder flattens it


def test_torchscript_encoder_applies_scripted_linear_map(tmp_path, rng):
    torch.manual_seed(0)
    module = LinearMap().eval()
    torch.jit.save(torch.jit.script(module), str(tmp_path / "embed.pt"))
    x = unit_images(rng)
    with torch.no_grad():
        want = x.flatten(1) @ module.linear.weight.T + module.linear.bias
    got = torchscript_encoder(tmp_path / "embed.pt")(x)
    assert got.shape == (5, 5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(encoder("embedding", str(tmp_path / "embed.pt"))(x), want, rtol=1e-5, atol=1e-6)


def test_torchscript_encoder_flattens_traced_module_output(tmp_path, rng):
    x = unit_images(rng, n=3, c=2)
    torch.jit.save(torch.jit.trace(Pool(), x), str(tmp_path / "pool.pt"))
    got = torchscript_encoder(tmp_path / "pool.pt")(x)
    want = x.numpy().reshape(3, 2, 4, 2, 4, 2).mean(axis=(3, 5)) * 3 - 1
    assert got.shape == (3, 2 * 4 * 4)
    np.testing.assert_allclose(got.numpy(), want.reshape(3, -1), rtol=1e-5, atol=1e-6)


def test_torchscript_encoder_missing_or_invalid_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        torchscript_encoder(tmp_path / "missing.pt")
    with pytest.raises(UserError, match="not found"):
        torchscript_encoder(tmp_path)  # a directory is not a TorchScript file
    (tmp_path / "garbage.pt").write_bytes(b"not a TorchScript archive")
    with pytest.raises(UserError, match="TorchScript"):
        torchscript_encoder(tmp_path / "garbage.pt")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "state_dict.pt")  # a zip, but not TorchScript
    with pytest.raises(UserError, match="TorchScript"):
        torchscript_encoder(tmp_path / "state_dict.pt")
