"""Independent reference computations for the attention tests (written from the equations, not the processors)."""

from __future__ import annotations

import math

import torch


def wan_inputs(transformer, frames=3, size=8, text_len=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = transformer.config
    hidden = torch.randn(1, cfg.in_channels, frames, size, size, generator=g)
    text = torch.randn(1, text_len, cfg.text_dim, generator=g)
    return dict(hidden_states=hidden, timestep=torch.tensor([500]), encoder_hidden_states=text, return_dict=False)


def hunyuan_inputs(transformer, frames=3, size=8, text_len=6, valid=4, seed=0):
    """HunyuanVideo's call: `valid` real prompt slots then padding (masked out of every key), the pooled CLIP
    prompt and the embedded guidance scale (x 1000, as the pipeline passes it)."""
    g = torch.Generator().manual_seed(seed)
    cfg = transformer.config
    return dict(hidden_states=torch.randn(1, cfg.in_channels, frames, size, size, generator=g),
                timestep=torch.tensor([500.0]),
                encoder_hidden_states=torch.randn(1, text_len, cfg.text_embed_dim, generator=g),
                encoder_attention_mask=(torch.arange(text_len) < valid).long()[None],
                pooled_projections=torch.randn(1, cfg.pooled_projection_dim, generator=g),
                guidance=torch.tensor([6000.0]), return_dict=False)


def cog_inputs(transformer, frames=3, size=8, text_len=None, seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    cfg = transformer.config
    text_len = text_len or cfg.max_text_seq_length  # sin-cos position tables cover exactly this many slots
    hidden = torch.randn(batch, frames, cfg.in_channels, size, size, generator=g)
    text = torch.randn(batch, text_len, cfg.text_embed_dim, generator=g)
    return dict(hidden_states=hidden, timestep=torch.tensor([500] * batch), encoder_hidden_states=text,
                return_dict=False)


def cog_rotary(transformer, frames, size):
    """3D RoPE for a CogVideoX latent of `frames` x `size` x `size`, as the pipeline builds it."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    cfg = transformer.config
    gh = gw = size // cfg.patch_size
    return get_3d_rotary_pos_embed(
        embed_dim=cfg.attention_head_dim, crops_coords=((0, 0), (gh, gw)), grid_size=(gh, gw),
        temporal_size=frames, device=torch.device("cpu"),
    )


def rope_interleaved_complex(x, cos, sin):
    """Rotate consecutive channel pairs (x0 + i x1) by the angle whose cos/sin are given per channel pair.

    x: [B, S, H, D]; cos/sin: [1, S, 1, D] with each pair's value repeated (Wan's layout).
    """
    pairs = torch.complex(x[..., 0::2].double(), x[..., 1::2].double())
    rot = torch.complex(cos[..., 0::2].double(), sin[..., 0::2].double())
    y = pairs * rot
    return torch.stack([y.real, y.imag], dim=-1).flatten(-2).float()


def dense_attention(q, k, v, mask=None, renormalize=True):
    """softmax(q k^T / sqrt(d)) v on [B, H, S, D] in float64, with an optional boolean [Sq, Sk] mask.

    renormalize=False: the softmax runs over all keys and masked probabilities are then zeroed.
    """
    q, k, v = q.double(), k.double(), v.double()
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is None:
        return (logits.softmax(-1) @ v).float()
    if renormalize:
        probs = logits.masked_fill(~mask, float("-inf")).softmax(-1)
    else:
        probs = logits.softmax(-1) * mask
    return (probs @ v).float()


def frame_local_mask(text_len, frames, per_frame):
    """Boolean [S, S]: video rows see text + own frame; text rows see everything."""
    s = text_len + frames * per_frame
    frame_of = torch.full((s,), -1)
    frame_of[text_len:] = torch.arange(frames).repeat_interleave(per_frame)
    mask = frame_of[:, None] == frame_of[None, :]
    mask[:, :text_len] = True
    mask[:text_len, :] = True
    return mask


def torchrun_two_ranks(*args) -> list[str]:
    """`python -m torch.distributed.run` with two local ranks. `--standalone` lets the rendezvous take a free port
    itself (a port chosen by the test and released before torchrun binds it can be taken in between)."""
    import sys

    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *map(str, args)]


def tensorboard_tags(log_dir) -> dict[str, set]:
    """The scalar and image tags of every TensorBoard event file under `log_dir`."""
    from pathlib import Path

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = {"scalars": set(), "images": set()}
    for path in Path(log_dir).rglob("events.out.tfevents.*"):
        events = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0})
        events.Reload()
        for kind in tags:
            tags[kind] |= set(events.Tags()[kind])
    return tags


def training_workspace(tmp_path_factory, name: str, num_clips: int, seed: int, pipeline=None):
    """A folder the training tests fine-tune in: a tiny pipeline saved as `model/` (`pipeline()`, default the tiny
    Wan2.1 one) and a toy dataset of `num_clips` clips drawn with `seed` as `data/`."""
    from motionguide.testing import tiny_wan_pipeline
    from motionguide.toy import make_dataset

    root = tmp_path_factory.mktemp(name)
    (pipeline or tiny_wan_pipeline)().save_pretrained(root / "model")
    make_dataset(root / "data", num_clips=num_clips, seed=seed, progress=False)
    return root


def train_config(root, out: str, settings: dict, overrides: dict):
    """A `TrainConfig` on a :func:`training_workspace` (its model, data and latent cache; output in `root/out`)
    with the test's `settings`, then `overrides`."""
    from motionguide.training.config import TrainConfig

    values = dict(pretrained_model_name_or_path=str(root / "model"), output_dir=str(root / out),
                  data_root=str(root / "data"), latent_cache_dir=str(root / "cache"), **settings)
    values.update(overrides)
    return TrainConfig(**values)


class MatrixProjector:
    """A dense seeded matrix split per parameter, for featurizer tests: the reference multiplies the same matrix
    (test-local, so it is independent of the library's projectors)."""

    def __init__(self, sizes, dim=16, seed=0, streaming=True, name="matrix"):
        g = torch.Generator().manual_seed(seed)
        self.matrix = torch.randn(dim, sum(sizes), generator=g)
        self.offsets = [0]
        for n in sizes[:-1]:
            self.offsets.append(self.offsets[-1] + n)
        self.sizes, self.dim, self.streaming, self.name = list(sizes), dim, streaming, name

    def describe(self):
        return {"name": self.name, "dim": self.dim}

    def project_parameter(self, index, flat):
        o = self.offsets[index]
        return self.matrix[:, o:o + flat.numel()] @ flat

    def project_full(self, flat):
        return self.matrix @ flat
