"""Correspondence guidance and IMAP saliency on bf16 pipelines (how GPU users run them), and saliency while
sampling from precomputed prompt embeddings."""

import pytest
import torch

from motionguide.attention import AttentionController
from motionguide.backbones import backbone_for
from motionguide.correspondence import correspondence_guided
from motionguide.loading import PipelinePlacement, load_pipeline
from motionguide.saliency import saliency_while_sampling
from motionguide.testing import tiny_cogvideox_pipeline, tiny_wan_pipeline

PIPE_KW = dict(num_frames=9, height=16, width=16, num_inference_steps=2, output_type="latent")
PROMPT = "a red circle moves left"


@pytest.fixture(scope="module")
def saved_pipes(tmp_path_factory):
    """Tiny pipeline folders, loaded the way users load a model (so the modules diffusers keeps in fp32 do)."""
    root = tmp_path_factory.mktemp("bf16")
    tiny_wan_pipeline().save_pretrained(root / "wan")
    tiny_cogvideox_pipeline(rotary=True).save_pretrained(root / "cog")
    return root


def _load(folder, dtype):
    return load_pipeline(folder, PipelinePlacement(dtype=dtype, device="cpu"))


@pytest.fixture(scope="module")
def bf16_pipes(saved_pipes):
    return {name: _load(saved_pipes / name, torch.bfloat16) for name in ("wan", "cog")}


def _record_model_outputs(pipe):
    seen, step = [], pipe.scheduler.step

    def recording(model_output, timestep, sample, *args, **kwargs):
        seen.append((model_output.clone(), timestep, sample.clone()))
        return step(model_output, timestep, sample, *args, **kwargs)

    pipe.scheduler.step = recording
    return seen


def _bf16_reference(pipe, latents, t, cond, uncond, w, s):
    """eps_u + w (eps_c' - eps_u) with eps_c' = eps_c + (s / w or s) (eps_c - eps_ptb): separate bf16 passes,
    the guidance term in fp32 and rounded to bf16 as the guided transformer does, CFG as each stock pipeline does
    it (Wan in the model's dtype, CogVideoX in fp32)."""
    backbone = backbone_for(pipe)
    x = backbone.from_transformer_layout(latents).to(torch.bfloat16)
    tt = t.reshape(1)
    with torch.no_grad():
        v_c = backbone.predict(x, tt, cond)
        with AttentionController(pipe).frame_local(blocks=[1], renormalize=False):
            v_ptb = backbone.predict(x, tt, cond)
        factor = s / w if w > 1 else s
        guided = (v_c.float() + factor * (v_c.float() - v_ptb.float())).to(torch.bfloat16)
        if w > 1:
            v_u = backbone.predict(x, tt, uncond)
            if backbone.family == "cogvideox":
                guided, v_u = guided.float(), v_u.float()
            guided = v_u + w * (guided - v_u)
    return backbone.to_transformer_layout(guided)


@pytest.mark.parametrize("which, w", [("wan", 1.0), ("wan", 5.0), ("cog", 1.0), ("cog", 6.0)])
def test_guided_noise_prediction_in_bf16_is_the_three_pass_formula(bf16_pipes, which, w):
    pipe = bf16_pipes[which]
    backbone = backbone_for(pipe)
    cond, uncond = backbone.encode_prompt([PROMPT], 16), backbone.encode_prompt([""], 16)
    assert cond.dtype == torch.bfloat16
    seen = _record_model_outputs(pipe)
    try:
        with correspondence_guided(pipe, scale=0.7, blocks=[1], window=(0.0, 1.0), renormalize=False) as proxy:
            pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=w,
                 generator=torch.Generator().manual_seed(0), **PIPE_KW)
    finally:
        del pipe.scheduler.step
    assert proxy.perturbed_calls == 2 and len(seen) == 2
    for guided, t, latents in seen:
        assert torch.isfinite(guided).all()
        reference = _bf16_reference(pipe, latents, t, cond, uncond, w, 0.7)
        if which == "cog" and w > 1:  # CogVideoX batches [uncond; cond]: bf16 matmuls of batch 2 round apart
            torch.testing.assert_close(guided.float(), reference.float(), atol=0.05, rtol=0.02)
        else:
            assert torch.equal(guided.float(), reference.float())


def test_imap_on_a_bf16_pipeline_equals_the_equations_on_its_bf16_attention(saved_pipes):
    """The IMAP capture on a bf16 Wan: head choice (CHI), IMAP and GramCol maps equal the float64 equations
    applied to the bf16 queries, keys and outputs that the layer computed (test_saliency's references)."""
    from test_saliency import _recorder, reference_layer_maps

    from motionguide.saliency import saliency_for_latents
    from motionguide.saliency.words import word_token_positions

    pipe = _load(saved_pipes / "wan", torch.bfloat16)
    backbone = backbone_for(pipe)
    latents = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    words = ["circle", "left"]
    maps = saliency_for_latents(pipe, latents, PROMPT, words, profile_or_blocks=[1], top_k=1, timestep=400, seed=2,
                                max_sequence_length=16)
    for kind in maps.kinds:
        assert torch.isfinite(maps.maps[kind]).all()

    t = torch.tensor([400.0])
    noise = torch.randn((1, *latents.shape), generator=torch.Generator().manual_seed(2))
    records = []
    with torch.no_grad():
        embeds = backbone.encode_prompt([PROMPT], 16)
        noisy = backbone.add_noise(latents[None], noise, t).to(torch.bfloat16)
        with AttentionController(backbone).capture(_recorder(records), blocks=[1], attention="text"):
            backbone.predict(noisy, t, embeds)
    (rec,) = records
    assert rec["query"].dtype == torch.bfloat16
    positions = [p[0] for p in word_token_positions(pipe.tokenizer, PROMPT, words, max_slots=16).values()]
    q, k, out = (rec[name][0].float() for name in ("query", "key", "output"))  # exact: bf16 values in fp32
    imap, _, chosen = reference_layer_maps(q, k, out, rec["grid"], positions, top_k=1)
    assert maps.selected_heads[1] == chosen
    # the accumulator upcasts to fp32 (gramcol.py); its rounding, scaled by the z-score, stays within 5e-3
    torch.testing.assert_close(maps.maps["imap"], imap.float(), atol=5e-3, rtol=5e-3)


def test_saliency_while_sampling_takes_precomputed_prompt_embeddings():
    """The stock pipeline refuses a prompt and embeddings together; with `prompt_embeds` the prompt only places
    the words, and the maps and video equal those of the same prompt given as text."""
    pipe = tiny_wan_pipeline()
    kw = dict(PIPE_KW, num_frames=9, height=32, width=32, max_sequence_length=16)  # also the negative prompt's
    from_text, video = saliency_while_sampling(pipe, PROMPT, ["circle", "moves"], blocks=[0, 1], top_k=1,
                                               generator=torch.Generator().manual_seed(0), **kw)
    with torch.no_grad():  # as inside the pipeline call (the text encoder's kernels differ with autograd on)
        embeds = backbone_for(pipe).encode_prompt([PROMPT], 16)
    for given in (embeds, embeds[0]):
        from_embeds, video_again = saliency_while_sampling(
            pipe, PROMPT, ["circle", "moves"], blocks=[0, 1], top_k=1, prompt_embeds=given,
            generator=torch.Generator().manual_seed(0), **kw)
        assert torch.equal(video_again.frames, video.frames)
        for kind in from_text.kinds:
            assert torch.equal(from_embeds.maps[kind], from_text.maps[kind])
    with pytest.raises(ValueError, match="one prompt's"):
        saliency_while_sampling(pipe, PROMPT, ["circle"], prompt_embeds=torch.cat([embeds, embeds]), **kw)
