"""The shipped toy model loads offline with the stock WanPipeline and follows a prompt."""

import json
from pathlib import Path

import numpy as np
import torch

from motionguide.metrics import toy_prompt_adherence
from motionguide.sampling import SamplingSettings

MODEL = Path(__file__).resolve().parent.parent / "assets" / "toy-model"


def test_toy_model_ships_with_its_card_reports_and_defaults():
    for name in ("model_index.json", "README.md", "training_report.json", "vae_report.json",
                 "sampling_defaults.json"):
        assert (MODEL / name).is_file(), name
    size = sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file())
    assert size < 30e6
    assert SamplingSettings.for_model(MODEL).max_sequence_length == 16
    held = json.loads((MODEL / "training_report.json").read_text())["heldout_combinations"]
    assert len(held) >= 20


def test_toy_model_generates_the_prompted_object():
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(MODEL)
    pipe.set_progress_bar_config(disable=True)
    settings = SamplingSettings.for_model(MODEL)
    frames = pipe("a red circle moves right", num_frames=17, height=64, width=64, num_inference_steps=20,
                  guidance_scale=settings.cfg, max_sequence_length=settings.max_sequence_length, output_type="np",
                  generator=torch.Generator().manual_seed(0)).frames[0]
    assert frames.shape == (17, 64, 64, 3) and np.isfinite(frames).all()
    video = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    result = toy_prompt_adherence(video, "a red circle moves right", token_px=8)[0]
    assert result.presence >= 0.8  # the red object is there in (almost) every frame


def test_caption_edits():
    from motionguide.toy.diagnostics import edit_caption

    assert edit_caption("a red circle moves up-left quickly", "motion swapped") == "a red circle moves down-right quickly"
    assert edit_caption("a yellow square moves left", "colour swapped") != "a yellow square moves left"
    assert edit_caption("a red circle moves left", "empty caption") == ""


def test_caption_sensitivity_shows_the_model_reads_colour_from_text():
    """The diagnostic's own ground truth: a wrong colour word costs the shipped model loss (it learned colour),
    and every edit is scored on the same clips and noise (so the true caption is scored twice identically)."""
    from diffusers import WanPipeline

    from motionguide.toy.diagnostics import caption_sensitivity

    pipe = WanPipeline.from_pretrained(MODEL)
    result = caption_sensitivity(pipe, num_clips=6, sigmas=(0.8,))
    loss = {edit: values[0] for edit, values in result["loss"].items()}
    assert result["clips"] == 6 and set(loss) == {"true caption", "motion swapped", "colour swapped", "empty caption"}
    assert loss["colour swapped"] > loss["true caption"] * 1.2
    again = caption_sensitivity(pipe, num_clips=6, sigmas=(0.8,))
    assert again["loss"]["true caption"] == result["loss"]["true caption"]
