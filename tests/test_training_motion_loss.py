"""`motion_loss_weight`: the loop weights its loss with Motive's motion mask, cached beside the latents."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import train_config, training_workspace

from motionguide.training import loop as loop_module
from motionguide.training.loop import Trainer


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return training_workspace(tmp_path_factory, "motionloss", num_clips=3, seed=2)


def config(root: Path, out: str, **overrides):
    return train_config(root, out, dict(train_steps=2, train_batch_size=2, checkpointing_steps=0, report_to="none",
                                        rank=4, lora_alpha=8, max_sequence_length=16, learning_rate=1e-2,
                                        lr_scheduler="constant", caption_dropout=0.0), overrides)


def _cache_dirs(root: Path) -> set[str]:
    return {p.name for p in (root / "cache").iterdir() if p.is_dir()}


def test_weight_one_keeps_the_plain_loss_and_the_old_cache_key(workspace):
    plain = Trainer(config(workspace, "plain")).run()
    before = _cache_dirs(workspace)
    again = Trainer(config(workspace, "one", motion_loss_weight=1.0)).run()
    assert again["losses"] == plain["losses"]
    assert _cache_dirs(workspace) == before  # same key: an existing cache stays valid
    from safetensors import safe_open

    for path in (workspace / "cache" / next(iter(before))).glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            assert "motion_mask" not in handle.keys()


def test_on_the_cache_holds_motives_mask_and_the_loss_is_the_weighted_mean(workspace, monkeypatch):
    from diffusers import DiffusionPipeline

    from motionguide.backbones import backbone_for
    from motionguide.data import LatentCache, VideoDataset
    from motionguide.data.dataset import dataset_options
    from motionguide.video import pixels_to_uint8
    from motionguide.motive.masks import MotionMasker, motion_mask

    seen = []
    real_loss, real_stack = loop_module.motion_weighted_loss, loop_module._stack_cached_clips

    def grab_loss(pred, target, mask, weight):
        loss = real_loss(pred, target, mask, weight)
        seen.append({"pred": pred.detach().double(), "target": target.detach().double(), "mask": mask.clone(),
                     "weight": weight, "loss": loss.item()})
        return loss

    def grab_ids(items):
        batch = real_stack(items)
        batch["ids"] = [it["id"] for it in items]
        seen.append({"ids": batch["ids"]})
        return batch

    monkeypatch.setattr(loop_module, "motion_weighted_loss", grab_loss)
    monkeypatch.setattr(loop_module, "_stack_cached_clips", grab_ids)
    cfg = config(workspace, "weighted", motion_loss_weight=5.0, gradient_accumulation_steps=2)
    before = _cache_dirs(workspace)
    summary = Trainer(cfg).run()
    new = _cache_dirs(workspace) - before
    assert len(new) == 1, "the option on gets its own cache key"

    # The cached mask of every clip is Motive's mask of the same frames, to the bit.
    backbone = backbone_for(DiffusionPipeline.from_pretrained(workspace / "model"))
    dataset = VideoDataset(cfg.data_root, **dataset_options(cfg))
    cache = LatentCache.for_dataset(cfg.latent_cache_dir, dataset, backbone, cfg.max_sequence_length,
                                    motion_mask=MotionMasker().describe())
    assert cache.dir.name in new
    masks = {}
    for i, clip_id in enumerate(dataset.ids):
        cached = cache.load(clip_id)
        motive = motion_mask(pixels_to_uint8(dataset[i]["pixels"]), backbone).latent
        assert cached["motion_mask"].shape == cached["latents"].shape[1:]
        torch.testing.assert_close(cached["motion_mask"], motive, rtol=0, atol=0)
        masks[clip_id] = cached["motion_mask"].double()
    assert any(m.max() > 0.5 for m in masks.values()) and all(m.mean() < 0.5 for m in masks.values())

    # Each micro-batch's loss = float64 reference: per clip sum(w * e) / sum(w), w = 1 + 4 * cached mask.
    ids = [s["ids"] for s in seen if "ids" in s]
    calls = [s for s in seen if "loss" in s]
    assert len(calls) == cfg.train_steps * cfg.gradient_accumulation_steps
    for batch_ids, call in zip(ids, calls):
        mask = torch.stack([masks[i] for i in batch_ids])
        torch.testing.assert_close(call["mask"].double(), mask, rtol=0, atol=0)
        error = (call["pred"] - call["target"]) ** 2  # [B, C, F', h, w]
        w = 1.0 + 4.0 * mask[:, None]
        reference = np.mean([float((w[b].expand_as(error[b]) * error[b]).sum() / w[b].expand_as(error[b]).sum())
                             for b in range(len(batch_ids))])
        assert call["loss"] == pytest.approx(reference, rel=1e-5)
        assert abs(reference - float(error.mean())) > 1e-6  # the weighting changes the loss
    steps = cfg.gradient_accumulation_steps
    for step, loss in summary["losses"].items():
        assert loss == pytest.approx(np.mean([c["loss"] for c in calls[(step - 1) * steps:step * steps]]))


def test_a_uniform_error_gives_the_plain_loss_whatever_the_mask():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 4, 3, 5, 5, generator=g)
    mask = torch.rand(2, 3, 5, 5, generator=g)
    loss = loop_module.motion_weighted_loss(pred, pred + 0.5, mask, 7.0)
    assert loss.item() == pytest.approx(0.25, rel=1e-6)
    with pytest.raises(ValueError, match="does not match the latents"):
        loop_module.motion_weighted_loss(pred, pred, mask[:, 1:], 7.0)


def _cogvideox_2b():
    from motionguide.testing import tiny_cogvideox_pipeline

    return tiny_cogvideox_pipeline()


@pytest.mark.parametrize("name,make_pipe,frames,size,given", [
    ("cogvideox-2b.yaml", "_cogvideox_2b", 9, 32, 0),
    ("wan2.2-ti2v-5b.yaml", "tiny_wan22_ti2v_pipeline", 9, 64, 0),
    ("wan2.2-ti2v-5b.yaml", "tiny_wan22_ti2v_i2v_pipeline", 9, 64, 1),  # image-to-video: latent 0 is the image
    ("wan2.2-t2v-a14b.yaml", "tiny_wan22_a14b_pipeline", 9, 32, 0),  # two experts through the router
    ("hunyuanvideo.yaml", "tiny_hunyuan_video_pipeline", 9, 32, 0),
])
def test_every_family_weights_its_own_latent_grid(tmp_path, monkeypatch, name, make_pipe, frames, size, given):
    import motionguide.testing as testing
    from motionguide.toy import make_dataset
    from motionguide.training.config import TrainConfig

    make = globals()[make_pipe] if make_pipe.startswith("_") else getattr(testing, make_pipe)
    make().save_pretrained(tmp_path / "model")
    make_dataset(tmp_path / "data", num_clips=2, seed=3, progress=False)
    shapes = []
    real_loss = loop_module.motion_weighted_loss

    def grab_loss(pred, target, mask, weight):
        shapes.append((tuple(pred.shape), tuple(mask.shape), weight))
        return real_loss(pred, target, mask, weight)

    monkeypatch.setattr(loop_module, "motion_weighted_loss", grab_loss)
    cfg = TrainConfig.load(Path(__file__).resolve().parent.parent / "configs" / name, [
        "--pretrained_model_name_or_path", str(tmp_path / "model"), "--output_dir", str(tmp_path / "out"),
        "--data_root", str(tmp_path / "data"), "--latent_cache_dir", str(tmp_path / "cache"),
        "--num_frames", str(frames), "--height", str(size), "--width", str(size), "--max_sequence_length", "16",
        "--train_steps", "1", "--report_to", "none", "--validation_prompts", "", "--mixed_precision", "no",
        "--checkpointing_steps", "0", "--gradient_accumulation_steps", "2", "--motion_loss_weight", "5",
    ])
    summary = Trainer(cfg).run()
    assert summary["steps"] == 1 and np.isfinite(summary["losses"][1])
    assert len(shapes) == 2 and all(w == 5.0 for _, _, w in shapes)
    from safetensors.torch import load_file

    clip = load_file(str(next(p for p in (tmp_path / "cache").rglob("*.safetensors") if p.name[0] != "_")))
    assert clip["motion_mask"].shape == clip["latents"].shape[1:]
    for pred_shape, mask_shape, _ in shapes:
        assert mask_shape[1:] == pred_shape[2:]
        assert mask_shape[1] == clip["latents"].shape[1] - given


@pytest.mark.slow
def test_two_ddp_ranks_cache_every_mask_and_stay_in_sync(workspace):
    """DDP with gradient accumulation: each rank caches its share of the clips with their masks (rank 0 adopts
    the other's files), and the weighted loss keeps the ranks' weights identical."""
    import json
    import os
    import subprocess

    import yaml
    from helpers import torchrun_two_ranks
    from safetensors import safe_open

    repo = Path(__file__).resolve().parent.parent
    cfg = config(workspace, "ddp-weighted", train_steps=2, train_batch_size=1, learning_rate=1e-3,
                 gradient_accumulation_steps=2, motion_loss_weight=5.0, latent_cache_dir=str(workspace / "ddp-cache"))
    path = workspace / "ddp-weighted.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    out = workspace / "ddp-weighted.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(torchrun_two_ranks(repo / "tests" / "jobs" / "finetune_sync.py", path, out), cwd=repo,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["max_rank_difference"] == 0.0 and result["changed_from_init"] > 0
    (folder,) = [p for p in (workspace / "ddp-cache").iterdir() if p.is_dir()]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["fields"]["motion_mask"]["use"] and len(manifest["clips"]) == 3
    for record in manifest["clips"].values():
        assert record["status"] == "ok"
        with safe_open(str(folder / record["file"]), framework="pt") as handle:
            assert "motion_mask" in handle.keys()
