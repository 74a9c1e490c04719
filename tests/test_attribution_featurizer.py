"""Motive featurizer against an independent reference: the projection of torch.autograd.grad of the same loss."""

import pytest
import torch
from helpers import MatrixProjector

from motionguide.motive.featurizer import (CommonRandomness, GradientFeaturizer, motion_weighted_loss,
                                                select_parameters)
from motionguide.backbones import WanBackbone
from motionguide.errors import ConfigError
from motionguide.testing import tiny_wan_transformer


@pytest.fixture()
def backbone():
    return WanBackbone(tiny_wan_transformer())


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 3, 8, 8, generator=g), torch.randn(6, 32, generator=g)


def reference_feature(backbone, latents, embeds, mask, randomness, projector, scope="all"):
    params = [p for _, p in select_parameters(backbone.transformer, scope)]
    t = torch.tensor([randomness.timestep])
    noise = randomness.noise_for(latents.shape)[None]
    x0 = latents[None]
    pred = backbone.transformer(hidden_states=backbone.add_noise(x0, noise, t), timestep=t,
                                encoder_hidden_states=embeds[None], return_dict=False)[0]
    target = noise - x0  # flow-matching velocity, written out independently
    err = (pred - target).square().mean(dim=1)
    loss = (err * mask).mean() / 17 if mask is not None else err.mean() / 17
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    flat = torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])
    out = projector.project_full(flat)
    return out / out.norm(), flat.norm()


@pytest.mark.parametrize("streaming", [True, False])
def test_feature_equals_projection_of_autograd_gradient(backbone, streaming):
    latents, embeds = inputs()
    mask = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(3))
    randomness = CommonRandomness(timestep=751.0, seed=5)
    featurizer = GradientFeaturizer(backbone, lambda sizes: MatrixProjector(sizes, streaming=streaming), randomness)
    result = featurizer.featurize(latents, embeds, mask, num_pixel_frames=17)
    ref, ref_norm = reference_feature(backbone, latents, embeds, mask, randomness, featurizer.projector)
    torch.testing.assert_close(result.feature, ref, atol=1e-5, rtol=1e-4)
    assert abs(result.grad_norm - float(ref_norm)) < 1e-4 * float(ref_norm)
    assert not result.flags and abs(float(result.feature.norm()) - 1) < 1e-5
    # the model is left as it was: no gradients kept, requires_grad restored
    assert all(p.grad is None for p in backbone.transformer.parameters())
    assert all(p.requires_grad for p in backbone.transformer.parameters())


def test_mask_changes_the_feature_and_zero_mask_is_flagged_not_nan(backbone):
    latents, embeds = inputs(1)
    featurizer = GradientFeaturizer(backbone, lambda s: MatrixProjector(s), CommonRandomness())
    unweighted = featurizer.featurize(latents, embeds, None).feature
    weighted = featurizer.featurize(latents, embeds, torch.rand(3, 8, 8)).feature
    static = featurizer.featurize(latents, embeds, torch.zeros(3, 8, 8))
    assert not torch.allclose(unweighted, weighted)
    assert static.flags == ["zero_gradient"] and torch.count_nonzero(static.feature) == 0


def test_common_randomness_is_shared_across_instances():
    a, b = CommonRandomness(751.0, 7), CommonRandomness(751.0, 7)
    assert torch.equal(a.noise_for((16, 3, 8, 8)), b.noise_for((16, 3, 8, 8)))
    assert a.fingerprint((16, 3, 8, 8)) == b.fingerprint((16, 3, 8, 8))
    assert not torch.equal(a.noise_for((16, 3, 8, 8)), CommonRandomness(751.0, 8).noise_for((16, 3, 8, 8)))


def test_loss_and_scopes(backbone):
    pred, target = torch.randn(1, 4, 3, 2, 2), torch.randn(1, 4, 3, 2, 2)
    plain = motion_weighted_loss(pred, target, None)
    torch.testing.assert_close(motion_weighted_loss(pred, target, torch.ones(3, 2, 2)), plain)
    assert float(motion_weighted_loss(pred, target, torch.zeros(3, 2, 2))) == 0.0
    with pytest.raises(ValueError, match="latent grid"):
        motion_weighted_loss(pred, target, torch.ones(2, 2, 2))
    # temporal difference, written out: frame-to-frame change of the error, weighted by the larger mask value
    mask = torch.rand(3, 2, 2)
    err = pred - target
    change = torch.stack([(err[:, :, f + 1] - err[:, :, f]).square().mean(dim=1) for f in range(2)], dim=1)
    weight = torch.stack([torch.maximum(mask[f], mask[f + 1]) for f in range(2)])
    torch.testing.assert_close(motion_weighted_loss(pred, target, mask, 17, kind="temporal_difference"),
                               (change * weight).mean() / 17)
    same_error = target + torch.randn(1, 4, 1, 2, 2)  # one error repeated on every frame: nothing changes
    assert float(motion_weighted_loss(same_error.expand_as(target), target, None, kind="temporal_difference")) < 1e-12
    with pytest.raises(ConfigError, match="temporal_difference"):
        motion_weighted_loss(pred, target, None, kind="delta")
    with pytest.raises(ConfigError, match="no LoRA"):
        select_parameters(backbone.transformer, "lora")
    blocks = select_parameters(backbone.transformer, "blocks", [1])
    assert blocks and all(n.startswith("blocks.1.") for n, _ in blocks)


def test_batched_small_tensors_give_the_per_parameter_feature(backbone):
    """The default projector batches small gradients after backward: same feature as projecting the flat
    autograd gradient parameter by parameter."""
    from motionguide.motive import make_projector

    latents, embeds = inputs(2)
    randomness = CommonRandomness(timestep=751.0, seed=5)
    featurizer = GradientFeaturizer(
        backbone, lambda sizes: make_projector("fastfood_blockwise", sizes, dim=64, seed=1, block_size=4096),
        randomness)
    assert any(n <= 2**16 for n in featurizer.sizes)  # the batched path is exercised
    result = featurizer.featurize(latents, embeds, None, num_pixel_frames=17)
    ref, _ = reference_feature(backbone, latents, embeds, None, randomness, featurizer.projector)
    torch.testing.assert_close(result.feature, ref, atol=1e-5, rtol=1e-4)


def test_a_non_finite_gradient_is_skipped_with_its_reason(backbone):
    latents, embeds = inputs(3)
    featurizer = GradientFeaturizer(backbone, lambda s: MatrixProjector(s), CommonRandomness())
    weight = next(backbone.transformer.parameters())
    handle = weight.register_hook(lambda g: g * float("nan"))
    try:
        result = featurizer.featurize(latents, embeds, None)
    finally:
        handle.remove()
    assert result.feature is None and result.skip_reason == "non-finite gradient"
    assert result.flags == ["nonfinite_gradient"]
    assert all(p.grad is None for p in backbone.transformer.parameters())
