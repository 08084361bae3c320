"""VAE fixtures: a tiny SDXL-architecture AutoencoderKL with re-randomised weights, encode /
posterior / decode outputs on non-square images, tiled encode and decode, and the full-size key list.

Writes tests/fixtures/vae/:
  tiny/config.json + tiny/diffusion_pytorch_model.safetensors
  outputs.safetensors
  keys_sdxl_base_1_0.json
"""

import numpy as np
import torch
from common import FIXTURES, key_shapes, rerandomise, save_tensors, write_json
from diffusers import AutoencoderKL

OUT = FIXTURES / "vae"

SDXL = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=0.13025,
    force_upcast=True,
)
TINY = dict(SDXL, block_out_channels=[8, 8, 16, 16], norm_num_groups=4, sample_size=32)


@torch.no_grad()
def main():
    torch.manual_seed(0)
    vae = AutoencoderKL(**TINY).eval()
    rerandomise(vae, 5)
    vae.save_pretrained(OUT / "tiny", safe_serialization=True)

    gen = torch.Generator().manual_seed(6)
    out = {}
    # Untiled: non-square images in [-1, 1].
    images = torch.rand(2, 3, 24, 40, generator=gen) * 2 - 1
    posterior = vae.encode(images).latent_dist
    noise = torch.randn(posterior.mean.shape, generator=gen)
    out["images"] = images
    out["moments"] = vae.quant_conv(vae.encoder(images))
    out["mean"] = posterior.mean
    out["logvar"] = posterior.logvar
    out["noise"] = noise
    out["sample"] = posterior.mean + posterior.std * noise
    z = torch.randn(2, 4, 3, 5, generator=gen)
    out["z"] = z
    out["decoded"] = vae.decode(z).sample
    # A real photo: scikit-image's astronaut, resized to 64 px (PIL bicubic), mapped to [-1, 1].
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((64, 64), Image.BICUBIC)
    photo = torch.from_numpy(np.asarray(photo).copy()).float()[None].permute(0, 3, 1, 2)
    photo = photo / 127.5 - 1
    out["photo"] = photo
    photo_posterior = vae.encode(photo).latent_dist
    out["photo.mean"] = photo_posterior.mean
    out["photo.reconstruction"] = vae.decode(photo_posterior.mean).sample
    # Tiled (sample_size 32: 4x4-latent tiles overlapping by a quarter).
    vae.enable_tiling()
    big = torch.rand(1, 3, 56, 72, generator=gen) * 2 - 1
    out["tiled.images"] = big
    out["tiled.mean"] = vae.encode(big).latent_dist.mean
    big_z = torch.randn(1, 4, 7, 9, generator=gen)
    out["tiled.z"] = big_z
    out["tiled.decoded"] = vae.decode(big_z).sample
    save_tensors(OUT / "outputs.safetensors", out)

    with torch.device("meta"):
        full = AutoencoderKL(**SDXL)
    write_json(OUT / "keys_sdxl_base_1_0.json", {"class": "AutoencoderKL", "diffusers": "0.42.1", "keys": key_shapes(full)})
    print("vae fixtures written to", OUT)


if __name__ == "__main__":
    main()
