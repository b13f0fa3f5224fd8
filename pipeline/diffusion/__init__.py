"""Layer 3, diffusion: the diffusers UNet and DDPM scheduler, their on-disk format, the sampler, images."""
