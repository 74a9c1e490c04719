"""The toy autoencoder recipe: shapes that give the transformer an 8x8 token grid, and its measurements."""

import torch

from motionguide.backbones import WanBackbone
from motionguide.testing import tiny_wan_transformer
from motionguide.toy.vae_recipe import build_toy_vae, psnr, render_pool, to_tensor


def test_toy_vae_latents_give_an_8x8_token_grid_per_frame():
    vae = build_toy_vae().eval()
    frames, masks = render_pool(1, seed=3)
    assert frames.shape == (1, 17, 64, 64, 3) and masks.any()
    with torch.no_grad():
        z = vae.encode(to_tensor(frames)).latent_dist.mode()
    assert z.shape == (1, 8, 5, 16, 16)
    backbone = WanBackbone(tiny_wan_transformer(in_channels=8), vae=vae)
    assert backbone.token_grid(z.shape).as_tuple() == (5, 8, 8)
    assert backbone.pixels_per_token == 8
    assert backbone.latent_shape(17, 64, 64) == (5, 16, 16)


def test_psnr_known_values():
    x = torch.zeros(1, 3, 2, 4, 4)
    y = x + 0.2  # mse 0.04 on a peak-to-peak range of 2 -> 10 log10(4 / 0.04) = 20 dB
    assert abs(psnr(y, x) - 20.0) < 1e-4
    mask = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    mask[..., 0, 0] = True
    y2 = x.clone()
    y2[..., 0, 0] = 0.02  # error only on masked pixels: masked PSNR 40 dB, overall much higher
    assert abs(psnr(y2, x, mask) - 40.0) < 1e-3 and psnr(y2, x) > 50
