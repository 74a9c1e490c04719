"""Training data layer: layouts, frame sampling, bad-input skipping, buckets, and the latent cache."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from motionguide.backbones import backbone_for
from motionguide.errors import ConfigError, MotionGuideError
from motionguide.testing import tiny_cogvideox_pipeline, tiny_wan_pipeline
from motionguide.toy import make_dataset
from motionguide.data import (
    Bucket,
    BucketBatchSampler,
    CachedLatentDataset,
    EmptyDatasetError,
    LatentCache,
    VideoDataset,
    assign_bucket,
)
from motionguide.identity import cache_fields, cache_key
from motionguide.video import VideoReadError, read_video, write_video


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "toy", num_clips=4, seed=5, progress=False)


@pytest.fixture(scope="module")
def wan_pipe():
    return tiny_wan_pipeline()


def _rows(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _captions_by_file(dataset: VideoDataset) -> dict[str, str]:
    return {e.path.name: e.caption for e in dataset.entries}


# ---------------------------------------------------------------------------------------------- layouts
def test_all_layouts_read_the_same_clips_and_captions(toy_root, tmp_path):
    rows = _rows(toy_root)
    csv_root = tmp_path / "csv"
    shutil.copytree(toy_root / "videos", csv_root / "videos")
    shutil.copy(toy_root / "metadata.csv", csv_root)
    folder_root = tmp_path / "folder"
    lists_root = tmp_path / "lists"
    folder_root.mkdir()
    shutil.copytree(toy_root / "videos", lists_root / "videos")
    for row in rows:
        name = Path(row["file_name"]).name
        shutil.copy(toy_root / row["file_name"], folder_root / name)
        (folder_root / name).with_suffix(".txt").write_text(row["text"] + "\n")
    (lists_root / "prompts.txt").write_text("".join(r["text"] + "\n" for r in rows))
    (lists_root / "videos.txt").write_text("".join(r["file_name"] + "\n" for r in rows))

    datasets = {root: VideoDataset(root, num_frames=9, height=32, width=32)
                for root in (toy_root, csv_root, folder_root, lists_root)}
    assert [d.layout for d in datasets.values()] == ["jsonl", "csv", "folder", "lists"]
    expected = {Path(r["file_name"]).name: r["text"] for r in rows}
    for dataset in datasets.values():
        assert _captions_by_file(dataset) == expected
        assert not dataset.skipped
    assert datasets[toy_root].ids == datasets[csv_root].ids == [r["id"] for r in rows]
    assert datasets[folder_root].ids == [Path(r["file_name"]).stem for r in rows]
    first = [d[0]["pixels"] for d in datasets.values()]
    for pixels in first[1:]:
        assert torch.equal(pixels, first[0])


def test_missing_column_names_file_column_and_existing_columns(toy_root):
    with pytest.raises(ConfigError) as info:
        VideoDataset(toy_root, caption_column="prompt", validate=False)
    message = str(info.value)
    assert "metadata.jsonl" in message and "'prompt'" in message and "'text'" in message and "'file_name'" in message
    with pytest.raises(ConfigError, match="id column 'clip_name'"):
        VideoDataset(toy_root, id_column="clip_name", validate=False)


def test_empty_folder_says_which_layouts_are_expected(tmp_path):
    with pytest.raises(ConfigError, match="metadata.jsonl, metadata.csv"):
        VideoDataset(tmp_path)


# ---------------------------------------------------------------------------------------------- frames
def test_frames_are_vae_layout_in_unit_range_and_exact(toy_root):
    dataset = VideoDataset(toy_root)  # 17 frames, 64x64: the clip's own size, so no resampling
    item = dataset[1]
    assert set(item) == {"id", "caption", "path", "pixels"}
    pixels = item["pixels"]
    assert pixels.shape == (3, 17, 64, 64) and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1
    frames = torch.from_numpy(read_video(item["path"])).permute(3, 0, 1, 2).float()
    torch.testing.assert_close(pixels, frames / 127.5 - 1)


def test_frame_stride_takes_every_other_frame(toy_root):
    dataset = VideoDataset(toy_root, num_frames=9, frame_stride=2)
    pixels = dataset[0]["pixels"]
    assert pixels.shape == (3, 9, 64, 64)
    frames = torch.from_numpy(read_video(dataset.entries[0].path)[0:17:2]).permute(3, 0, 1, 2).float()
    torch.testing.assert_close(pixels, frames / 127.5 - 1)
    with pytest.raises(ConfigError, match="13 or 17"):
        VideoDataset(toy_root, num_frames=16)


def _three_band_video(path: Path, frames: int = 9) -> None:
    """48 high x 96 wide: red left quarter, green middle half, blue right quarter."""
    image = np.zeros((48, 96, 3), np.uint8)
    image[:, :24, 0] = 255
    image[:, 24:72, 1] = 255
    image[:, 72:, 2] = 255
    write_video(path, np.repeat(image[None], frames, axis=0))


def test_center_crop_keeps_aspect_and_resize_stretches(tmp_path):
    _three_band_video(tmp_path / "wide.mp4")
    (tmp_path / "wide.txt").write_text("a wide clip")
    crop = VideoDataset(tmp_path, num_frames=9, height=32, width=32, resize_mode="center_crop")[0]["pixels"]
    stretch = VideoDataset(tmp_path, num_frames=9, height=32, width=32, resize_mode="resize")[0]["pixels"]
    assert crop.shape == stretch.shape == (3, 9, 32, 32)
    red, green = crop[0].mean(), crop[1].mean()
    assert red < -0.9 and green > 0.9  # only the green middle survives the centre crop
    assert stretch[0, :, :, :4].mean() > 0.9 and stretch[2, :, :, -4:].mean() > 0.9  # bands squeezed in
    with pytest.raises(ConfigError, match="center_crop, resize"):
        VideoDataset(tmp_path, num_frames=9, resize_mode="crop")


# ---------------------------------------------------------------------------------------------- bad input
@pytest.fixture
def messy_root(toy_root, tmp_path) -> Path:
    root = tmp_path / "messy"
    shutil.copytree(toy_root / "videos", root / "videos")
    rows = _rows(toy_root)
    (root / "videos" / "zero.mp4").write_bytes(b"")
    (root / "videos" / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    write_video(root / "videos" / "short.mp4", np.full((5, 32, 32, 3), 128, np.uint8))
    bad = {"zero": "videos/zero.mp4", "noise": "videos/noise.mp4", "short": "videos/short.mp4",
           "gone": "videos/gone.mp4", "silent": rows[0]["file_name"]}
    rows += [{"file_name": path, "text": "" if clip == "silent" else "a red circle", "id": clip}
             for clip, path in bad.items()]
    _write_jsonl(root / "metadata.jsonl", rows)
    return root


def test_bad_clips_are_skipped_with_their_reason(messy_root, caplog):
    with caplog.at_level(logging.WARNING, logger="motionguide.data.dataset"):
        dataset = VideoDataset(messy_root)
    category = {s.clip_id: s.category for s in dataset.skipped}
    assert category == {"zero": "empty", "noise": "corrupt", "short": "too_short", "gone": "missing_file",
                        "silent": "missing_caption"}
    assert dict(dataset.skip_counts) == {c: 1 for c in category.values()}
    assert "too short: 5 frames, need 17" in next(s.reason for s in dataset.skipped if s.clip_id == "short")
    assert len([r for r in caplog.records if "skipped 5" in r.getMessage()]) == 1
    assert len(dataset) == 4 and dataset.safe_indices() == [0, 1, 2, 3]
    assert all(dataset[i]["pixels"].shape == (3, 17, 64, 64) for i in range(len(dataset)))


def test_unvalidated_bad_clip_raises_naming_the_file_and_safe_indices_skip_it(messy_root):
    dataset = VideoDataset(messy_root, validate=False)  # no probing: only the empty caption is dropped
    assert len(dataset) == 8
    noise = dataset.ids.index("noise")
    with pytest.raises(VideoReadError, match="noise.mp4"):
        dataset[noise]
    assert noise in dataset.failed
    good = dataset.safe_indices()
    assert [dataset.ids[i] for i in good] == dataset.ids[:4]


def test_dataset_with_no_good_clip_names_root_and_counts(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "a.txt").write_text("a red circle")
    (tmp_path / "b.mp4").write_bytes(b"not a video")
    (tmp_path / "b.txt").write_text("a blue square")
    with pytest.raises(EmptyDatasetError) as info:
        VideoDataset(tmp_path)
    assert str(tmp_path) in str(info.value) and "corrupt=1, empty=1" in str(info.value)


# ---------------------------------------------------------------------------------------------- buckets
def test_assign_bucket_picks_the_largest_fitting_bucket():
    buckets = [Bucket(17, 64, 64), Bucket(9, 64, 64), Bucket(17, 32, 64), Bucket(33, 64, 64)]
    assert assign_bucket(20, 480, 480, buckets) == Bucket(17, 64, 64)
    assert assign_bucket(40, 480, 480, buckets) == Bucket(33, 64, 64)
    assert assign_bucket(12, 480, 480, buckets) == Bucket(9, 64, 64)
    assert assign_bucket(20, 240, 480, buckets) == Bucket(17, 32, 64)
    assert assign_bucket(12, 240, 480, buckets) == Bucket(9, 64, 64)  # only length fits
    assert assign_bucket(20, 480, 480, buckets, frame_stride=2) == Bucket(9, 64, 64)
    assert assign_bucket(5, 480, 480, buckets) is None


def _labels() -> list[Bucket]:
    sizes = [Bucket(17, 64, 64), Bucket(17, 32, 64), Bucket(9, 32, 32)]
    return [sizes[i % 3] if i % 5 else sizes[0] for i in range(23)]


def test_batch_sampler_never_mixes_buckets_and_is_seeded():
    labels = _labels()
    sampler = BucketBatchSampler(labels, batch_size=3, seed=7)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(labels)))
    assert all(len({labels[i] for i in b}) == 1 for b in batches)
    assert batches == list(BucketBatchSampler(labels, batch_size=3, seed=7))
    assert batches != list(BucketBatchSampler(labels, batch_size=3, seed=8))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    dropped = list(BucketBatchSampler(labels, batch_size=3, seed=7, drop_last=True))
    assert all(len(b) == 3 for b in dropped) and len(dropped) == len(BucketBatchSampler(labels, 3, 7, True))


def test_single_bucket_is_a_seeded_shuffled_batch_sampler():
    sampler = BucketBatchSampler([Bucket(17, 64, 64)] * 10, batch_size=4, seed=3)
    batches = list(sampler)
    flat = [i for b in batches for i in b]
    assert [len(b) for b in batches] == [4, 4, 2] and sorted(flat) == list(range(10)) and flat != list(range(10))
    assert batches == [flat[0:4], flat[4:8], flat[8:10]]


def test_batch_sampler_resumes_exactly_where_it_stopped():
    labels = _labels()
    reference = BucketBatchSampler(labels, batch_size=3, seed=1)
    uninterrupted = []
    for epoch in range(3):
        reference.set_epoch(epoch)
        uninterrupted += list(reference)

    first = BucketBatchSampler(labels, batch_size=3, seed=1)
    seen = []
    first.set_epoch(0)
    seen += list(first)
    first.set_epoch(1)
    iterator = iter(first)
    seen += [next(iterator) for _ in range(4)]
    state = json.loads(json.dumps(first.state_dict()))  # survives a checkpoint file

    resumed = BucketBatchSampler(labels, batch_size=3, seed=1)
    resumed.load_state_dict(state)
    for epoch in range(resumed.epoch, 3):
        resumed.set_epoch(epoch)
        seen += list(resumed)
    assert seen == uninterrupted

    finished = BucketBatchSampler(labels, batch_size=3, seed=1)
    list(finished)
    assert finished.state_dict()["epoch"] == 1 and finished.state_dict()["position"] == 0
    with pytest.raises(ConfigError, match="batch_size"):
        BucketBatchSampler(labels, batch_size=4, seed=1).load_state_dict(state)


def test_bucketed_dataset_serves_each_clip_at_its_bucket(toy_root, tmp_path):
    wide = make_dataset(tmp_path / "wide", num_clips=2, seed=1, progress=False, height=32, width=64)
    root = tmp_path / "mixed"
    root.mkdir()
    for source, prefix in ((toy_root, "square"), (wide, "wide")):
        for row in _rows(source):
            shutil.copy(source / row["file_name"], root / f"{prefix}_{row['id']}.mp4")
            (root / f"{prefix}_{row['id']}.txt").write_text(row["text"])
    buckets = [Bucket(17, 32, 32), Bucket(9, 32, 64)]
    dataset = VideoDataset(root, buckets=buckets)
    assert [b for b in dataset.bucket_of_index] == [buckets[0]] * 4 + [buckets[1]] * 2
    for batch in BucketBatchSampler(dataset.bucket_of_index, batch_size=2, seed=0):
        shapes = {tuple(dataset[i]["pixels"].shape) for i in batch}
        assert len(shapes) == 1
    assert dataset[5]["pixels"].shape == (3, 9, 32, 64)


# ---------------------------------------------------------------------------------------------- cache
class _CountingEncode:
    """Wraps a VAE's encode to count calls (and optionally interrupt after some)."""

    def __init__(self, vae, stop_after: int | None = None):
        self.vae, self.original, self.calls, self.stop_after = vae, vae.encode, 0, stop_after
        vae.encode = self

    def __call__(self, *args, **kwargs):
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        return self.original(*args, **kwargs)

    def restore(self):
        self.vae.encode = self.original


@pytest.fixture
def counting(wan_pipe):
    wrappers = []

    def make(stop_after=None):
        wrappers.append(_CountingEncode(wan_pipe.vae, stop_after))
        return wrappers[-1]

    yield make
    for wrapper in reversed(wrappers):
        wrapper.restore()


def test_cache_matches_independent_encoding_and_is_reused(toy_root, wan_pipe, tmp_path, counting):
    backbone = backbone_for(wan_pipe)
    dataset = VideoDataset(toy_root, num_frames=9, height=32, width=32)
    cache = LatentCache.for_dataset(tmp_path / "cache", dataset, backbone, max_sequence_length=16)
    calls = counting()
    report = cache.build(dataset, backbone, max_sequence_length=16, progress=False)
    assert calls.calls == 4 and sorted(report.encoded) == dataset.ids

    calls.calls = 0
    again = LatentCache.for_dataset(tmp_path / "cache", dataset, backbone, max_sequence_length=16)
    report = again.build(dataset, backbone, max_sequence_length=16, progress=False)
    assert calls.calls == 0 and not report.encoded and sorted(report.reused) == dataset.ids

    cached = CachedLatentDataset(again)
    assert cached.ids == sorted(dataset.ids)
    item = cached[cached.ids.index(dataset.ids[2])]
    pixels = dataset[2]["pixels"][None]
    with torch.no_grad():
        expected = backbone.normalize_latents(calls.original(pixels).latent_dist.mode())[0]
        embeds, _ = wan_pipe.encode_prompt(dataset[2]["caption"], do_classifier_free_guidance=False,
                                           max_sequence_length=16)
        empty, _ = wan_pipe.encode_prompt("", do_classifier_free_guidance=False, max_sequence_length=16)
    assert item["latents"].shape == (16, 3, 4, 4) and item["latents"].dtype == torch.float32
    torch.testing.assert_close(item["latents"], expected)
    torch.testing.assert_close(item["prompt_embeds"], embeds[0])
    torch.testing.assert_close(again.empty_prompt_embeds(), empty[0])
    manifest = json.loads((cache.dir / "manifest.json").read_text())
    assert manifest["counts"] == {"ok": 4, "failed": 0} and manifest["fields"]["max_sequence_length"] == 16
    assert manifest["clips"][dataset.ids[0]]["caption"] == dataset.entries[0].caption
    assert sorted(p.name for p in cache.dir.glob("*.safetensors")) == sorted(
        [f"{i}.safetensors" for i in dataset.ids] + ["_empty_prompt.safetensors"])

    other = LatentCache.for_dataset(tmp_path / "cache", dataset, backbone, max_sequence_length=8)
    assert other.dir != cache.dir and other.dir.parent == cache.dir.parent
    with pytest.raises(ConfigError, match="max_sequence_length"):
        LatentCache(tmp_path / "cache", cache.key).build(dataset, backbone, max_sequence_length=8, progress=False)


def test_cache_key_is_stable_and_sensitive(toy_root, wan_pipe):
    backbone = backbone_for(wan_pipe)
    dataset = VideoDataset(toy_root, num_frames=9, height=32, width=32, validate=False)
    fields = cache_fields(dataset, backbone, 16)
    assert cache_key(**fields) == cache_key(**dict(reversed(list(fields.items()))))
    assert len(cache_key(**fields)) == 16
    changed = {**fields, "frame_stride": 2}
    assert cache_key(**changed) != cache_key(**fields)
    other_weights = backbone_for(tiny_wan_pipeline(seed=1))
    assert cache_fields(dataset, other_weights, 16)["model_hash"] != fields["model_hash"]


def test_interrupted_build_encodes_only_the_rest(toy_root, wan_pipe, tmp_path, counting):
    backbone = backbone_for(wan_pipe)
    grow_root = tmp_path / "grow"  # one dataset folder that gains clips: first two, then all four
    rows = [{**r, "file_name": os.path.relpath(toy_root / r["file_name"], grow_root)} for r in _rows(toy_root)]
    _write_jsonl(grow_root / "metadata.jsonl", rows[:2])
    subset = VideoDataset(grow_root, num_frames=9, height=32, width=32)
    root = tmp_path / "cache"
    calls = counting()
    LatentCache.for_dataset(root, subset, backbone, 16).build(subset, backbone, 16, progress=False)
    assert calls.calls == 2
    _write_jsonl(grow_root / "metadata.jsonl", rows)
    grown = VideoDataset(grow_root, num_frames=9, height=32, width=32)
    report = LatentCache.for_dataset(root, grown, backbone, 16).build(grown, backbone, 16, progress=False)
    assert calls.calls == 4 and sorted(report.encoded) == grown.ids[2:] and sorted(report.reused) == grown.ids[:2]
    full = VideoDataset(toy_root, num_frames=9, height=32, width=32)

    # a hard stop in the middle of a build, with the manifest lost: the clip files are adopted
    root2 = tmp_path / "cache2"
    stopper = counting(stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        LatentCache.for_dataset(root2, full, backbone, 16).build(full, backbone, 16, progress=False)
    cache = LatentCache.for_dataset(root2, full, backbone, 16)
    assert len(cache.ids) == 3
    (cache.dir / "manifest.json").unlink()
    stopper.stop_after, stopper.calls = None, 0
    report = LatentCache.for_dataset(root2, full, backbone, 16).build(full, backbone, 16, progress=False)
    assert stopper.calls == 1 and len(report.reused) == 3 and len(report.encoded) == 1


def test_failing_clip_is_recorded_and_skipped(messy_root, wan_pipe, tmp_path, counting):
    backbone = backbone_for(wan_pipe)
    dataset = VideoDataset(messy_root, num_frames=9, height=32, width=32, validate=False)
    cache = LatentCache.for_dataset(tmp_path / "cache", dataset, backbone, 16)
    report = cache.build(dataset, backbone, 16, progress=False, batch_size=2)
    assert sorted(report.failed) == ["gone", "noise", "short", "zero"]
    manifest = json.loads((cache.dir / "manifest.json").read_text())
    assert manifest["counts"] == {"ok": 4, "failed": 4}
    assert manifest["clips"]["noise"]["status"] == "failed" and "noise.mp4" in manifest["clips"]["noise"]["reason"]
    assert "too short" in manifest["clips"]["short"]["reason"]
    assert CachedLatentDataset(cache).ids == sorted(dataset.ids[:4])
    calls = counting()
    report = cache.build(dataset, backbone, 16, progress=False)
    assert calls.calls == 0 and len(report.failed) == 4 and len(report.reused) == 4


def test_cache_works_for_cogvideox(toy_root, tmp_path):
    pipe = tiny_cogvideox_pipeline()
    backbone = backbone_for(pipe)
    dataset = VideoDataset(toy_root, num_frames=9, height=32, width=32)
    cache = LatentCache.for_dataset(tmp_path / "cache", dataset, backbone, 16)
    cache.build(dataset, backbone, 16, progress=False, batch_size=2)
    item = CachedLatentDataset(cache)[0]
    index = dataset.ids.index(item["id"])
    with torch.no_grad():
        mode = pipe.vae.encode(dataset[index]["pixels"][None]).latent_dist.mode()
        embeds, _ = pipe.encode_prompt(dataset[index]["caption"], do_classifier_free_guidance=False,
                                       max_sequence_length=16)
    torch.testing.assert_close(item["latents"], mode[0] * pipe.vae.config.scaling_factor, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(item["prompt_embeds"], embeds[0])
    assert cache.fields["family"] == "cogvideox" and item["latents"].shape == (4, 3, 4, 4)
    assert CachedLatentDataset(cache).bucket_of_index == [Bucket(9, 32, 32)] * 4

    drawn = [LatentCache.for_dataset(tmp_path / name, dataset, backbone, 16, sample=True) for name in ("s1", "s2")]
    for cache_ in drawn:
        cache_.build(dataset, backbone, 16, progress=False, sample=True, batch_size=1 + (cache_ is drawn[1]))
    first, second = (CachedLatentDataset(c)[0]["latents"] for c in drawn)
    torch.testing.assert_close(first, second)  # one seeded draw per clip, whatever the batch
    assert drawn[0].key != cache.key and not torch.allclose(first, item["latents"])


def test_model_side_failure_stops_the_build_and_is_retried(toy_root, wan_pipe, tmp_path):
    backbone = backbone_for(wan_pipe)
    dataset = VideoDataset(toy_root, num_frames=9, height=32, width=32)
    cache = LatentCache.for_dataset(tmp_path / "cache", dataset, backbone, 16)
    original = wan_pipe.vae.encode
    wan_pipe.vae.encode = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("device lost"))
    try:
        with pytest.raises(MotionGuideError, match="every clip failed to encode.*device lost"):
            cache.build(dataset, backbone, 16, progress=False)
    finally:
        wan_pipe.vae.encode = original
    assert json.loads((cache.dir / "manifest.json").read_text())["counts"]["failed"] == 4
    report = cache.build(dataset, backbone, 16, progress=False)  # not bad data: retried
    assert len(report.encoded) == 4 and not report.failed


def test_two_datasets_with_colliding_ids_never_share_a_cache_folder(toy_root, wan_pipe, tmp_path):
    """Toy datasets all number their clips clip_00000...: one cache root must keep them apart."""
    other = make_dataset(tmp_path / "other", num_clips=2, seed=77, progress=False)
    backbone = backbone_for(wan_pipe)
    first = VideoDataset(toy_root, num_frames=9, height=32, width=32)
    second = VideoDataset(other, num_frames=9, height=32, width=32)
    caches = [LatentCache.for_dataset(tmp_path / "cache", ds, backbone, 16) for ds in (first, second)]
    assert caches[0].dir != caches[1].dir
    for cache, ds in zip(caches, (first, second)):
        cache.build(ds, backbone, 16, progress=False)
    assert set(caches[0].ids) & set(caches[1].ids) == {"clip_00000", "clip_00001"}
    assert not torch.equal(caches[0].load("clip_00000")["latents"], caches[1].load("clip_00000")["latents"])


def test_older_import_paths_name_the_same_objects():
    """`motionguide.training` re-exports the data layer and the identity keys from their new homes."""
    import motionguide.data
    import motionguide.identity
    import motionguide.training

    for name in motionguide.data.__all__:
        if name in motionguide.training.__all__:
            assert getattr(motionguide.training, name) is getattr(motionguide.data, name), name
    for name in ("cache_key", "cache_fields", "model_identity", "CACHE_FORMAT_VERSION"):
        assert getattr(motionguide.training, name) is getattr(motionguide.identity, name), name


def test_one_stable_json_for_cache_keys_and_the_feature_store():
    """The feature store and the latent cache hash through the same function: same text for the same content,
    key order and numpy / torch scalars included, NaN refused unless a cache key allows it."""
    import numpy as np

    from motionguide.motive import store
    from motionguide.identity import key_json, stable_json

    assert store.stable_json is stable_json
    value = {"b": np.float32(0.5), "a": [1, 2], "dtype": torch.float16, "path": Path("x/y")}
    assert stable_json(value) == '{"a":[1,2],"b":0.5,"dtype":"torch.float16","path":"x/y"}'
    assert stable_json(dict(reversed(list(value.items())))) == stable_json(value)
    with pytest.raises(ValueError):
        stable_json({"x": float("nan")})
    assert key_json({"x": float("nan")}) == '{"x":NaN}'
    with pytest.raises(ConfigError, match="JSON-like"):
        key_json({"x": object()})
