"""The two ways to get saliency maps: from a real video's latents (one forward) or while sampling.

- Real video (`saliency_for_latents`): clean normalised latents are re-noised to one fixed timestep with seeded
  noise, then ONE conditional, gradient-free forward captures the text attention at the IMAP blocks.
- Generated video (`saliency_while_sampling`): the stock pipeline runs unchanged; the conditional branch is
  captured at every step (or a window of steps) and the maps are averaged over those steps.
"""

from __future__ import annotations

import copy
import inspect
import re
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

import torch

from ..attention import AttentionController
from ..attention.capture import AttentionCapture
from ..backbones import (LayerProfile, SaliencyProfile, VideoBackbone, backbone_for, condition_kwargs, load_profile,
                         move_condition)
from ..errors import ConfigError
from .imap import SaliencyAccumulator
from .maps import KINDS, SaliencyMaps
from .words import word_token_positions

__all__ = [
    "saliency_for_latents",
    "saliency_while_sampling",
    "resolve_imap_settings",
    "fallback_imap_settings",
    "default_renoise_timestep",
    "real_slot_count",
    "eval_mode",
    "encode_clip",
    "DEFAULT_TIMESTEP",
]

#: mid-level noise used when no profile / scheduler says otherwise (t = 400 of 1000)
DEFAULT_TIMESTEP = 400.0

ProfileLike = LayerProfile | SaliencyProfile | str | Iterable[int] | None


def _as_backbone(model: Any) -> VideoBackbone:
    return model if isinstance(model, VideoBackbone) else backbone_for(model)


_BLOCK_TEXT = re.compile(r"\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*")


def _block_list(items: Iterable[Any]) -> list[int]:
    """Blocks from ints and "first-last" strings (as YAML configs write them, e.g. [4, "10-23"])."""
    blocks: list[int] = []
    for item in items:
        if isinstance(item, str) and "-" in item:
            lo, _, hi = item.partition("-")
            try:
                blocks.extend(range(int(lo), int(hi) + 1))
            except ValueError:
                raise ConfigError(f"bad block range {item!r}; write 'first-last', e.g. '5-19'") from None
        else:
            try:
                blocks.append(int(item))
            except (TypeError, ValueError):
                raise ConfigError(f"bad block {item!r}; use integers or 'first-last' ranges") from None
    return blocks


def fallback_imap_settings(backbone: VideoBackbone) -> tuple[list[int], int]:
    """For models without a shipped profile: the middle half of the blocks and k = max(1, heads // 4)."""
    n = backbone.num_blocks
    start = n // 4
    return list(range(start, start + max(1, n // 2))), max(1, backbone.num_heads // 4)


def resolve_imap_settings(backbone: VideoBackbone, profile_or_blocks: ProfileLike = None,
                          top_k: int | None = None) -> tuple[list[int], int, SaliencyProfile | None]:
    """(blocks, top_k, profile section) from a profile, a profile name / path, a block list, or the defaults."""
    section: SaliencyProfile | None = None
    if profile_or_blocks is None:
        try:
            section = backbone.default_profile().imap
        except ConfigError:
            section = None
        blocks, k = (section.blocks, section.top_k) if section is not None else fallback_imap_settings(backbone)
    else:
        if isinstance(profile_or_blocks, str) and _BLOCK_TEXT.fullmatch(profile_or_blocks):
            profile_or_blocks = profile_or_blocks.split(",")
        if isinstance(profile_or_blocks, str):
            profile_or_blocks = load_profile(profile_or_blocks)
        if isinstance(profile_or_blocks, LayerProfile):
            profile_or_blocks.check_compatible(backbone)
            if profile_or_blocks.imap is None:
                raise ConfigError(f"profile {profile_or_blocks.name!r} has no 'imap' section; add one or pass blocks")
            profile_or_blocks = profile_or_blocks.imap
        if isinstance(profile_or_blocks, SaliencyProfile):
            section = profile_or_blocks
            blocks, k = list(section.blocks), section.top_k
        else:
            blocks = [backbone.check_block(b) for b in _block_list(profile_or_blocks)]
            if not blocks:
                raise ValueError("no blocks given; pass e.g. blocks=[5, 6, 7] or None for the model's profile")
            k = fallback_imap_settings(backbone)[1]
    k = k if top_k is None else top_k
    if not 1 <= k <= backbone.num_heads:
        raise ValueError(f"top_k={k} must lie in 1..{backbone.num_heads} (heads per layer of this model)")
    return sorted(set(blocks)), k, section


def default_renoise_timestep(backbone: VideoBackbone, section: SaliencyProfile | None) -> float:
    """The reference's re-noise level: the profile's `renoise_step` of a `num_inference_steps` schedule of the
    model's own scheduler (e.g. Wan-1.3B: step 20 of 50, sigma ~ 0.82). Without both: t = 400."""
    if section is None or backbone.scheduler is None or not hasattr(backbone.scheduler, "set_timesteps"):
        return DEFAULT_TIMESTEP
    scheduler = copy.deepcopy(backbone.scheduler)  # set_timesteps mutates; leave the pipeline's one alone
    try:
        scheduler.set_timesteps(section.num_inference_steps)
    except (TypeError, ValueError):  # e.g. dynamic shifting that needs the sequence length
        return DEFAULT_TIMESTEP
    return float(scheduler.timesteps[section.renoise_step])


def real_slot_count(tokenizer, prompt: str, num_slots: int) -> int:
    """Real text slots of a prompt: its tokens including the end token, capped at the embedding length."""
    return max(2, min(len(tokenizer(prompt, add_special_tokens=True)["input_ids"]), num_slots))


def pipeline_default(pipeline_class: type, name: str) -> Any:
    """A keyword default of a pipeline's `__call__` (e.g. max_sequence_length: Wan 512, CogVideoX 226)."""
    parameter = inspect.signature(pipeline_class.__call__).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise ValueError(f"{pipeline_class.__name__} has no default for {name!r}; pass {name}= explicitly")
    return parameter.default


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then each submodule's own previous mode back (a probe must not change
    training, including submodules a trainer deliberately keeps in eval mode)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _model_device_dtype(transformer: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(transformer.parameters())
    return parameter.device, getattr(transformer, "dtype", parameter.dtype)


def _check_tokenizer(backbone: VideoBackbone) -> Any:
    if backbone.tokenizer is None:
        raise ValueError("word alignment needs the tokenizer: build the backbone from the pipeline "
                         "(backbone_for(pipe)) or pass tokenizer= to backbone_for")
    return backbone.tokenizer


def _latents_batch(latents: torch.Tensor) -> torch.Tensor:
    if latents.ndim == 4:
        return latents[None]
    if latents.ndim == 5 and latents.shape[0] == 1:
        return latents
    raise ValueError(f"latents must be one clip, [C, F', h, w] or [1, C, F', h, w] (VAE layout); got "
                     f"{tuple(latents.shape)}; call once per clip")


def saliency_for_latents(
    backbone: Any,
    latents_normalised: torch.Tensor,
    prompt: str,
    words: Sequence[str],
    profile_or_blocks: ProfileLike = None,
    top_k: int | None = None,
    timestep: float | None = None,
    seed: int = 0,
    *,
    prompt_embeds: torch.Tensor | None = None,
    max_sequence_length: int | None = None,
    real_slots_only: bool = False,
    subtokens: str = "first",
    kinds: Sequence[str] = KINDS,
    noise: torch.Tensor | None = None,
    condition: dict[str, torch.Tensor] | None = None,
) -> SaliencyMaps:
    """Real-video saliency: re-noise clean normalised latents at `timestep` and run one conditional forward.

    backbone: a `VideoBackbone` or a pipeline. latents_normalised: [C, F', h, w] in VAE layout, already
    normalised (`backbone.normalize_latents`; the reference skips this for Wan, a known bug). timestep: 0..1000
    scale; None uses the profile's re-noise step. prompt_embeds: [1, T, D] or [T, D] to skip the text encoder.
    real_slots_only: z-score over the prompt's real tokens (+ end token) instead of all T padded slots.
    noise: fixed noise of the latents' shape (default: `torch.randn` seeded with `seed`).
    condition: an image-to-video model's conditioning image, `backbone.encode_condition(first_frame, num_frames)`
        (one clip: batch axis of 1); required there, refused for text-to-video.
    """
    backbone = _as_backbone(backbone)
    condition = backbone.check_condition(condition)
    tokenizer = _check_tokenizer(backbone)
    blocks, k, section = resolve_imap_settings(backbone, profile_or_blocks, top_k)
    t_value = default_renoise_timestep(backbone, section) if timestep is None else float(timestep)
    backbone = backbone.for_timestep(t_value)  # a two-expert model (Wan2.2 A14B): the expert that runs t
    latents = _latents_batch(latents_normalised)
    device, dtype = _model_device_dtype(backbone.transformer)
    with torch.no_grad():
        if prompt_embeds is None:
            length = max_sequence_length or pipeline_default(backbone.pipeline_class, "max_sequence_length")
            prompt_embeds = backbone.encode_prompt([prompt], length)  # on the text encoder's device
        embeds = prompt_embeds if prompt_embeds.ndim == 3 else prompt_embeds[None]
        num_slots = embeds.shape[1]
        positions = word_token_positions(tokenizer, prompt, words, subtokens=subtokens, max_slots=num_slots)
        real_slots = real_slot_count(tokenizer, prompt, num_slots) if real_slots_only else None
        if noise is None:
            noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(int(seed)))
        noise = noise.reshape(latents.shape)
        t = torch.full((1,), t_value, device=device)
        noisy = backbone.add_noise(latents.to(device, torch.float32), noise.to(device, torch.float32), t)
        accumulator = SaliencyAccumulator(positions, blocks, k, real_slots=real_slots, kinds=kinds)
        controller = AttentionController(backbone)
        with eval_mode(backbone.transformer), controller.capture(accumulator, blocks=blocks, attention="text"):
            backbone.predict(noisy.to(dtype), t, embeds.to(device, dtype),
                             **condition_kwargs(move_condition(condition, device, dtype)))
    return accumulator.result()


def window_steps(window: tuple[float, float], num_inference_steps: int) -> set[int]:
    """Step indices i with start <= i / n < stop (the same convention as guidance windows)."""
    start, stop = window
    if not 0.0 <= start < stop <= 1.0:
        raise ValueError(f"steps_window {window!r}: give (start, stop) fractions of the sampling steps with "
                         "0 <= start < stop <= 1, e.g. (0.5, 1.0) for the second half")
    steps = {i for i in range(num_inference_steps) if start <= i / num_inference_steps < stop}
    if not steps:
        raise ValueError(f"steps_window {window!r} holds none of the {num_inference_steps} steps; widen it")
    return steps


class _StepFilter:
    """Passes captures of chosen steps to the accumulator. Steps come from the pipeline's cache context, or,
    where a pipeline sets none (CogVideoX), from the order of conditional forwards (one per step)."""

    def __init__(self, consumer: SaliencyAccumulator, steps: set[int] | None):
        self.consumer, self.steps = consumer, steps
        self._forward_order: dict[int, int] = {}

    def __call__(self, capture: AttentionCapture) -> None:
        info = capture.info
        step = info.step_index
        if step is None:
            step = self._forward_order.setdefault(info.forward_id, len(self._forward_order))
        if self.steps is None or step in self.steps:
            self.consumer(capture, step=step)


def saliency_while_sampling(
    pipe: Any,
    prompt: str,
    words: Sequence[str],
    blocks: ProfileLike = None,
    top_k: int | None = None,
    steps_window: tuple[float, float] | None = None,
    *,
    prompt_embeds: torch.Tensor | None = None,
    real_slots_only: bool = False,
    subtokens: str = "first",
    kinds: Sequence[str] = KINDS,
    **pipe_kwargs: Any,
) -> tuple[SaliencyMaps, Any]:
    """Generated-video saliency: call `pipe(prompt=prompt, **pipe_kwargs)` and average maps over the sampling
    steps.

    blocks: block list, profile, or None for the model's profile. steps_window: (start, stop) fractions of the
    steps to average (None: all steps, as the reference). prompt_embeds: [1, T, D] or [T, D] embeddings of
    `prompt` computed beforehand (e.g. a training cache's); the pipeline then gets them instead of the text
    (the stock pipelines refuse both), and `prompt` only places the words among the T slots. Only the
    conditional branch is captured; the pipeline's output is unchanged and returned as the second value.
    """
    if not isinstance(prompt, str):
        raise ValueError("saliency_while_sampling takes one prompt (a string); loop over prompts for several")
    if pipe_kwargs.get("num_videos_per_prompt", 1) != 1:
        raise ValueError("saliency_while_sampling needs num_videos_per_prompt=1 (maps are per video)")
    if prompt_embeds is not None:
        prompt_embeds = prompt_embeds if prompt_embeds.ndim == 3 else prompt_embeds[None]
        if prompt_embeds.ndim != 3 or prompt_embeds.shape[0] != 1:
            raise ValueError(f"prompt_embeds must be one prompt's, [1, T, D] or [T, D]; got "
                             f"{tuple(prompt_embeds.shape)}")
    backbone = _as_backbone(pipe)
    tokenizer = _check_tokenizer(backbone)
    block_list, k, _ = resolve_imap_settings(backbone, blocks, top_k)
    pipeline_class = type(pipe)
    if prompt_embeds is not None:
        num_slots = prompt_embeds.shape[1]
    else:
        num_slots = pipe_kwargs.get("max_sequence_length") or pipeline_default(pipeline_class, "max_sequence_length")
    positions = word_token_positions(tokenizer, prompt, words, subtokens=subtokens, max_slots=num_slots)
    real_slots = real_slot_count(tokenizer, prompt, num_slots) if real_slots_only else None
    steps = None
    if steps_window is not None:
        n = pipe_kwargs.get("num_inference_steps") or pipeline_default(pipeline_class, "num_inference_steps")
        steps = window_steps(steps_window, int(n))
    accumulator = SaliencyAccumulator(positions, block_list, k, real_slots=real_slots, kinds=kinds)
    controller = AttentionController(backbone)
    with controller.capture(_StepFilter(accumulator, steps), blocks=block_list, attention="text"):
        if prompt_embeds is None:
            output = pipe(prompt=prompt, **pipe_kwargs)
        else:
            output = pipe(prompt_embeds=prompt_embeds, **pipe_kwargs)
    return accumulator.result(), output


def encode_clip(backbone: Any, pixels: torch.Tensor, sample: bool = False, seed: int = 0) -> torch.Tensor:
    """Pixels [3, F, H, W] in [-1, 1] -> normalised latents [C, F', h, w] (the scale the model was trained on).

    sample: a seeded posterior draw as the reference does; default the posterior mode (deterministic).
    """
    backbone = _as_backbone(backbone)
    vae = backbone.vae
    if vae is None:
        raise ValueError("encoding a video needs the VAE; build the backbone from the full pipeline")
    if pixels.ndim != 4 or pixels.shape[0] != 3:
        raise ValueError(f"pixels must be [3, F, H, W] in [-1, 1], got shape {tuple(pixels.shape)}")
    with torch.no_grad():
        posterior = vae.encode(pixels[None].to(vae.device, vae.dtype)).latent_dist
        if sample:
            noise = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(int(seed)))
            latents = posterior.mean + posterior.std * noise.to(posterior.mean.device, posterior.mean.dtype)
        else:
            latents = posterior.mode()
    return backbone.normalize_latents(latents.float())[0]
