"""Bad input never loses work (issue 18): a folder of realistic bad inputs and bad arguments, built here.

Every case ends in exactly one of two outcomes, and the test says which:
  - a recorded skip: the clip is left out with its category and a reason naming it (in `dataset.skipped`, and in
    a training run's `<output_dir>/skipped_clips.json`), and every other clip is kept;
  - a one-line error naming the item and the fix (exit code 2 from the command), raised before any model loads
    (the pipeline loaders are replaced by ones that fail the test if called).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from motionguide.data import VideoDataset
from motionguide.toy import make_dataset

REPO = Path(__file__).resolve().parent.parent
TOY_MODEL = REPO / "assets" / "toy-model"
LAYOUTS = ("folder", "jsonl", "csv", "lists")
GOOD = ("good_a", "good_b")


# ---------------------------------------------------------------------------------------------- the bad folder
@pytest.fixture(scope="module")
def source_clips(tmp_path_factory) -> list[Path]:
    root = make_dataset(tmp_path_factory.mktemp("source") / "toy", num_clips=2, seed=3, progress=False)
    return sorted((root / "videos").glob("*.mp4"))


def _videos(videos: Path, clips: list[Path]) -> None:
    """Good videos good_a / good_b, and the bad ones: truncated, zero bytes, not a video."""
    videos.mkdir(parents=True, exist_ok=True)
    shutil.copy(clips[0], videos / "good_a.mp4")
    shutil.copy(clips[1], videos / "good_b.mp4")
    data = clips[0].read_bytes()
    (videos / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (videos / "zero_bytes.mp4").write_bytes(b"")
    (videos / "not_a_video.mp4").write_text("this is a text file, not a video\n")
    for name in ("bad_utf8", "empty_caption", "outside", "wrong_type", "caption_list", "no_caption_key",
                 "short_row", "no_caption_file"):
        shutil.copy(clips[1], videos / f"{name}.mp4")


CAPTION = "a red circle moves right"
BAD_UTF8 = b"a red \xff\xfe circle moves right"

# (layout, case, skip category): the clip of `case` is skipped with that category, every good clip is kept
CASES = [
    *[(layout, case, category) for layout in LAYOUTS for case, category in (
        ("truncated", "corrupt"), ("zero_bytes", "empty"), ("not_a_video", "corrupt"),
        ("bad_utf8", "bad_caption"), ("empty_caption", "missing_caption"))],
    ("folder", "no_caption_file", "missing_caption"),
    *[(layout, case, category) for layout in ("jsonl", "csv", "lists") for case, category in (
        ("missing_video", "missing_file"), ("outside", "missing_file"), ("no_video_path", "missing_file"))],
    ("jsonl", "wrong_type", "bad_row"), ("jsonl", "caption_list", "bad_row"), ("jsonl", "no_caption_key",
                                                                                "missing_caption"),
    ("jsonl", "not_json", "bad_row"), ("jsonl", "json_list", "bad_row"),
    ("csv", "short_row", "missing_caption"),
]


def build_bad_folder(root: Path, layout: str, clips: list[Path]) -> Path:
    """A dataset folder in `layout` holding two good clips and one clip per bad case of CASES."""
    videos = root / "videos" if layout != "folder" else root
    _videos(videos, clips)
    if layout == "folder":
        for name in ("good_a", "good_b", "truncated", "zero_bytes", "not_a_video"):
            (root / f"{name}.txt").write_text(CAPTION)
        (root / "bad_utf8.txt").write_bytes(BAD_UTF8)
        (root / "empty_caption.txt").write_text("  \n")
        for name in ("outside", "wrong_type", "caption_list", "no_caption_key", "short_row"):
            (root / f"{name}.mp4").unlink()
        return root
    # rows as (id, video path, caption bytes); None leaves the cell out
    rows: list[tuple[str, str | None, bytes | None]] = [
        *[(name, f"videos/{name}.mp4", CAPTION.encode()) for name in ("good_a", "truncated", "zero_bytes",
                                                                      "not_a_video")],
        ("bad_utf8", "videos/bad_utf8.mp4", BAD_UTF8),
        ("empty_caption", "videos/empty_caption.mp4", b" "),
        ("missing_video", "videos/never_written.mp4", CAPTION.encode()),
        ("outside", "../not_there.mp4", CAPTION.encode()),  # a path may leave the folder; this one is missing
        ("no_video_path", "", CAPTION.encode()),
        ("good_b", "videos/good_b.mp4", CAPTION.encode()),
    ]
    if layout == "jsonl":
        lines = [b'{"id": "%s", "file_name": "%s", "text": "%s"}' % (i.encode(), p.encode(), c)
                 for i, p, c in rows]
        lines += [b'{"id": "wrong_type", "file_name": 5, "text": "a ball"}',
                  b'{"id": "caption_list", "file_name": "videos/caption_list.mp4", "text": ["a", "ball"]}',
                  b'{"id": "no_caption_key", "file_name": "videos/no_caption_key.mp4"}',
                  b'{"id": "not_json", "file_name": "videos/good_a.mp4", "text": "a ball"',  # cut short
                  b'["a JSON list", "not an object"]']
        (root / "metadata.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    elif layout == "csv":
        lines = [b"id,file_name,text"] + [b'%s,%s,"%s"' % (i.encode(), p.encode(), c) for i, p, c in rows]
        lines += [b"short_row,videos/short_row.mp4"]
        (root / "metadata.csv").write_bytes(b"\n".join(lines) + b"\n")
    else:  # lists: ids come from the video paths
        (root / "videos.txt").write_text("".join(f"{p}\n" for _, p, _ in rows))
        (root / "prompts.txt").write_bytes(b"".join(c + b"\n" for _, _, c in rows))
    return root


def clip_id(layout: str, case: str) -> str:
    """The id the layout gives the clip of `case` (the lists layout derives it from the video path)."""
    if layout == "jsonl" and case in ("not_json", "json_list"):  # no id can be read: the line names the row
        return {"not_json": "metadata.jsonl line 14", "json_list": "metadata.jsonl line 15"}[case]
    if layout != "lists":
        return case
    return {"missing_video": "videos/never_written", "outside": "../not_there",
            "no_video_path": "videos.txt line 9"}.get(case, f"videos/{case}")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, source_clips) -> dict[str, VideoDataset]:
    """One VideoDataset per layout, over its bad folder (built once: probing is the slow part)."""
    made = {}
    for layout in LAYOUTS:
        root = build_bad_folder(tmp_path_factory.mktemp(layout) / "data", layout, source_clips)
        made[layout] = VideoDataset(root, num_frames=9, height=32, width=32)
    return made


@pytest.mark.parametrize("layout,case,category", CASES)
def test_one_bad_clip_is_one_recorded_skip_with_its_reason(datasets, layout, case, category):
    dataset = datasets[layout]
    wanted = clip_id(layout, case)
    skips = [s for s in dataset.skipped if s.clip_id == wanted]
    assert len(skips) == 1, f"{wanted}: {dataset.skipped}"
    assert skips[0].category == category, skips[0]
    reason = skips[0].reason
    assert "\n" not in reason and reason.strip()
    if category == "bad_caption":  # names the file (and the line) holding the bytes, and the fix
        assert "not valid UTF-8" in reason and "re-save it as UTF-8" in reason
        assert {"folder": "bad_utf8.txt", "jsonl": "metadata.jsonl line 5", "csv": "metadata.csv line 6",
                "lists": "prompts.txt line 5"}[layout] in reason
    if category == "bad_row":  # names the row and the column
        assert {"wrong_type": "metadata.jsonl line 11: file_name must be a video path (text), got 5",
                "caption_list": "metadata.jsonl line 12: text must be text, got ['a', 'ball']",
                "not_json": "metadata.jsonl line 14: not valid JSON",
                "json_list": "metadata.jsonl line 15: expected a JSON object, got list"}[case] in reason


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_good_clip_is_kept_next_to_the_bad_ones(datasets, layout):
    dataset = datasets[layout]
    assert sorted(dataset.ids) == sorted(clip_id(layout, case) for case in GOOD)
    expected = sorted(clip_id(l, c) for l, c, _ in CASES if l == layout)
    assert sorted(s.clip_id for s in dataset.skipped) == expected
    assert sum(dataset.skip_counts.values()) == len(expected)


# ---------------------------------------------------------------------------------------------- no model loads
@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a pipeline fails the test: every case below must stop before it."""
    import diffusers

    import motionguide.loading

    def refuse(*args, **kwargs):
        raise AssertionError(f"a model was loaded: {args[:1]}")

    monkeypatch.setattr(motionguide.loading, "load_pipeline", refuse)
    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", classmethod(refuse))


def _one_line_error(capsys, code: int) -> str:
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert code == 2, out.err[-2000:]
    assert len(lines) == 1, out.err[-2000:]
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def train_config(tmp_path, source_clips) -> Path:
    """configs/toy.yaml with everything under tmp_path and a real (bad-folder) dataset; no tracker."""
    config = yaml.safe_load((REPO / "configs" / "toy.yaml").read_text())
    data = build_bad_folder(tmp_path / "data", "jsonl", source_clips)
    config.update(pretrained_model_name_or_path=str(TOY_MODEL), output_dir=str(tmp_path / "out"),
                  data_root=str(data), latent_cache_dir=str(tmp_path / "cache"), report_to="none")
    config["method_options"]["motive"]["queries"] = str(tmp_path / "queries")
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _in_the_way(tmp_path: Path) -> Path:
    (tmp_path / "a_file").write_text("in the way")
    return tmp_path / "a_file"


# (flags, what the one line must say): every one stops before the model loads
TRAIN_CASES = [
    (["--height", "50"], r"command line: height=50 is not a multiple of 8, .*; use 48 or 56"),
    (["--buckets", "17x64x60"], r"command line: buckets \(17, 64, 60\) width=60 is not a multiple of 8"),
    (["--validation_height", "36"], r"command line: validation_height=36 is not a multiple of 16, which the "
                                    r"diffusers pipeline of .* asks of the validation samples; use 32 or 48"),
    (["--lr_scheduler", "cosine_with_warmpu"], r"command line: lr_scheduler='cosine_with_warmpu' is not a diffusers "
                                               r"scheduler. Did you mean 'cosine_with_restarts'|command line: lr_sch"),
    (["--checkpointing_steps", "-5"], r"command line: checkpointing_steps=-5 must be >= 0"),
    (["--checkpointing_limit", "0"], r"command line: checkpointing_limit=0 must be >= 1"),
    (["--logging_steps", "0"], r"command line: logging_steps=0 must be >= 1"),
    (["--validation_num_frames", "18"], r"command line: validation_num_frames=18 must be 4k\+1"),
    (["--validation_guidance_scale", "nan"], r"command line: validation_guidance_scale must be a number or none"),
    (["--learning_rate", "nan"], r"command line: learning_rate must be a number, got 'nan'"),
    (["--num_frames", "18"], r"command line: num_frames=18 must be 4k\+1"),
    (["--train_steps", "ten"], r"command line: train_steps must be an integer, got 'ten'"),
    (["--motion_loss_weight", "0.5"], r"command line: motion_loss_weight=0.5 must be a finite number >= 1"),
    (["--mixed_precision", "fp8"], r"command line: mixed_precision must be one of 'no', 'fp16', 'bf16'"),
    (["--lr_schedulr", "constant"], r"command line: unknown key 'lr_schedulr'. Did you mean 'lr_scheduler'"),
    (["--curation", "randm"], r"--curation 'randm': no such curation. Did you mean 'random'"),
    (["--monitor", "imap", "--method_options", "{imap: {evry: 5}}"],
     r"method_options.imap: unknown key 'evry'. Did you mean 'every'\? Valid keys: .*num_probes"),
    (["--curation", "motive", "--method_options", "{motive: {fracton: 0.1}}"],
     r"method_options.motive: unknown key 'fracton'. Did you mean 'fraction'"),
    (["--output_dir", "{file}"], r"output_dir .*a_file is a file; pick another folder"),
    (["--output_dir", "{file}/run"], r"output_dir .*a_file/run cannot be made: .*a_file is a file"),
    (["--data_root", "{tmp}/data-typo"], r"command line: --data_root .*data-typo does not exist. .*--create_data"),
    (["--data_root", "{file}"], r"data_root .*a_file is a file, not a folder"),
    # found by a new user (issue 18's last pass): each stops before the model too
    (["--seed", "-1"], r"command line: seed=-1 must be in 0..4294967295"),
    (["--output_dir", ""], r"command line: output_dir='' must name a folder"),
    (["--guidance", "correspondance"], r"command line: --guidance 'correspondance': no such guidance"),
    (["--latent_cache_dir", "{file}/cache"], r"latent_cache_dir .*a_file/cache cannot be made: .*a_file is a file"),
    (["--pretrained_model_name_or_path", "{tmp}/data-typo"], r"pretrained_model_name_or_path .*data-typo: no such folder"),
    (["--pretrained_model_name_or_path", "{tmp}/empty"], r"pretrained_model_name_or_path .*empty: no model_index.json in"),
    (["--data_root", "{tmp}/empty"], r"empty: found no metadata.jsonl, metadata.csv"),
    (["--data_root", "{tmp}/header_only"], r"metadata.csv has a header but no rows"),
    (["--data_root", "{tmp}/all_missing"], r"VideoDataset .*all_missing: no usable clips \(1 listed, skipped: "
                                           r"missing_file=1\)"),
    (["--num_frames", "81"], r"VideoDataset .*: no usable clips \(\d+ listed, skipped: .*too_short=\d+.*lower "
                             r"num_frames"),
    (["--curation", "motive", "--method_options", "{motive: {queries: {tmp}/nowhere, queries_recipe: null}}"],
     r"method_options.motive.queries .*nowhere: no such folder"),
    (["--curation", "motive", "--method_options", "{motive: {fraction: 2}}"],
     r"method_options.motive: fraction must be in \(0, 1\], got 2"),
    (["--monitor", "imap", "--method_options", "{imap: {every: 0}}"],
     r"method_options.imap.every: expected a positive integer, got 0"),
    (["--target_modules", "[]"], r"command line: target_modules=\[\] names no module"),
]


@pytest.mark.parametrize("flags,message", TRAIN_CASES, ids=[" ".join(f) for f, _ in TRAIN_CASES])
def test_a_bad_training_value_is_one_line_naming_it_before_any_model_loads(train_config, tmp_path, capsys,
                                                                           no_model_load, flags, message):
    import re

    from motionguide.training.cli import main

    file = _in_the_way(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "header_only").mkdir()
    (tmp_path / "header_only" / "metadata.csv").write_text("file_name,text\n")
    (tmp_path / "all_missing").mkdir()
    (tmp_path / "all_missing" / "metadata.jsonl").write_text('{"file_name": "gone.mp4", "text": "a ball"}\n')
    flags = [f.replace("{file}", str(file)).replace("{tmp}", str(tmp_path)) for f in flags]
    line = _one_line_error(capsys, main(["--config", str(train_config), *flags]))
    assert re.search(message, line), line
    assert not (tmp_path / "data-typo").exists()  # the typo'd path got no fresh toy dataset


def test_a_missing_data_root_without_a_recipe_is_named_before_any_model_loads(train_config, tmp_path, capsys,
                                                                              no_model_load):
    from motionguide.training.cli import main

    config = yaml.safe_load(train_config.read_text())
    config.update(data_root=str(tmp_path / "nowhere"), data_recipe=None)
    train_config.write_text(yaml.safe_dump(config))
    line = _one_line_error(capsys, main(["--config", str(train_config)]))
    assert f"data_root {tmp_path / 'nowhere'} does not exist; check the path" in line


@pytest.mark.parametrize("key,value,message", [
    ("learning_rate", float("nan"), "learning_rate=nan must be a finite number > 0"),
    ("validation_guidance_scale", float("nan"), "validation_guidance_scale=nan must be a finite number"),
    ("max_grad_norm", -1, "max_grad_norm=-1.0 must be a finite number > 0"),
    ("checkpointing_steps", -5, "checkpointing_steps=-5 must be >= 0 (0: never)"),
    ("motion_loss_weight", float("inf"), "motion_loss_weight=inf must be a finite number >= 1"),
])
def test_a_bad_value_in_the_yaml_file_is_blamed_on_the_file(train_config, capsys, no_model_load, key, value,
                                                           message):
    from motionguide.training.cli import main

    config = yaml.safe_load(train_config.read_text())
    config[key] = value
    train_config.write_text(yaml.safe_dump(config))
    line = _one_line_error(capsys, main(["--config", str(train_config)]))
    assert line.startswith(f"error: {train_config}: {message}"), line


def test_unparsable_yaml_is_one_line_naming_file_line_and_column(tmp_path, capsys, no_model_load):
    from motionguide.training.cli import main

    path = tmp_path / "broken.yaml"
    path.write_text("output_dir: out\nvalidation_prompts: [a, b\ntrain_steps: 3\n")
    line = _one_line_error(capsys, main(["--config", str(path)]))
    assert f"{path}: line 3, column" in line and "YAML syntax error" in line


def test_a_data_recipe_still_creates_the_folder_the_config_file_names(train_config, tmp_path):
    from motionguide.training.config import TrainConfig

    made = tmp_path / "made-by-recipe"
    config = yaml.safe_load(train_config.read_text())
    config["data_root"] = str(made)
    train_config.write_text(yaml.safe_dump(config))
    assert TrainConfig.load(train_config).data_root == str(made)  # the file's own data_root: allowed
    other = tmp_path / "other"
    assert TrainConfig.load(train_config, ["--data_root", str(other), "--create_data"]).create_data


# ---------------------------------------------------------------------------------------------- text files
def test_a_prompts_file_with_a_bad_byte_is_one_line_naming_file_and_line(tmp_path, capsys, no_model_load):
    from motionguide.sampling.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"a ball moves right\n\na ball \xff moves left\n")
    line = _one_line_error(capsys, main(["--model", str(TOY_MODEL), "--prompts_file", str(prompts),
                                         "--out", str(tmp_path / "out")]))
    assert f"--prompts_file {prompts} line 3: byte 8 of the line is not valid UTF-8; re-save" in line


def test_curate_names_a_query_clip_whose_caption_is_not_utf8_before_any_model_loads(tmp_path, capsys,
                                                                                     source_clips, no_model_load):
    from motionguide.cli import main

    data = build_bad_folder(tmp_path / "data", "jsonl", source_clips)
    queries = tmp_path / "queries"
    queries.mkdir()
    shutil.copy(source_clips[0], queries / "q1.mp4")
    (queries / "q1.txt").write_text(CAPTION)
    shutil.copy(source_clips[1], queries / "q2.mp4")
    (queries / "q2.txt").write_bytes(BAD_UTF8)
    line = _one_line_error(capsys, main(["curate", "--model", str(TOY_MODEL), "--data", str(data), "--queries",
                                         str(queries), "--out", str(tmp_path / "out"), "--num_frames", "9"]))
    assert f"queries {queries}: 1 of 2 query clips are unusable" in line
    assert "q2.txt (byte 7) holds bytes that are not valid UTF-8; re-save it as UTF-8" in line


CURATE_CASES = [
    (["--data", "{tmp}/nowhere"], r"dataset folder .*nowhere does not exist"),
    (["--queries", "{file}"], r"dataset folder .*a_file is a file, not a folder"),
    (["--num_frames", "18"], r"num_frames=18 is not 4k\+1"),
    (["--fraction", "2"], r"fraction"),
    (["--params", "blocks", "--blocks", "2,99"], r"--blocks 2,99: block 99 does not exist; the model has \d+ blocks"),
    (["--lora", "{file}"], r"lora=.*a_file: .*a_file is not a readable safetensors file"),
    (["--lora", "{tmp}"], r"lora=.*: no \.safetensors file in this folder"),
]


@pytest.mark.parametrize("flags,message", CURATE_CASES, ids=[" ".join(f) for f, _ in CURATE_CASES])
def test_a_bad_curate_value_is_one_line_naming_it_before_any_model_loads(tmp_path, capsys, source_clips,
                                                                         no_model_load, flags, message):
    import re

    from motionguide.cli import main

    data = build_bad_folder(tmp_path / "data", "folder", source_clips)
    file = _in_the_way(tmp_path)
    base = {"--model": str(TOY_MODEL), "--data": str(data), "--queries": str(data), "--out": str(tmp_path / "out"),
            "--num_frames": "9"}
    given = dict(zip(flags[::2], [f.replace("{file}", str(file)).replace("{tmp}", str(tmp_path))
                                  for f in flags[1::2]]))
    argv = ["curate"] + [token for key, value in {**base, **given}.items() for token in (key, value)]
    line = _one_line_error(capsys, main(argv))
    assert re.search(message, line), line


def _good_clips(folder: Path, source_clips: list[Path]) -> Path:
    folder.mkdir(parents=True)
    for i, clip in enumerate(source_clips):
        shutil.copy(clip, folder / f"clip{i}.mp4")
        (folder / f"clip{i}.txt").write_text(CAPTION)
    return folder


def _one_error_line_after_a_load(capsys, code: int) -> str:
    err = capsys.readouterr().err  # the model loaded (its progress bars): one error line, no traceback
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def test_curate_with_a_safetensors_file_that_is_no_lora_is_one_line_naming_it(tmp_path, capsys, source_clips):
    import torch
    from safetensors.torch import save_file

    from motionguide.cli import main

    save_file({"foo.weight": torch.zeros(2, 2)}, str(tmp_path / "not_a_lora.safetensors"))
    data = _good_clips(tmp_path / "data", source_clips)
    argv = ["curate", "--model", str(TOY_MODEL), "--data", str(data), "--queries", str(data), "--out",
            str(tmp_path / "out"), "--num_frames", "9", "--lora", str(tmp_path / "not_a_lora.safetensors")]
    line = _one_error_line_after_a_load(capsys, main(argv))
    assert line.startswith(f"error: lora={tmp_path / 'not_a_lora.safetensors'}: not a LoRA this model can load")


def test_curate_blocks_the_config_files_cannot_count_are_checked_after_the_load_before_any_featurization(
        tmp_path, capsys, source_clips, monkeypatch):
    """A family whose config files do not tell the block count: the loaded model does, before any clip."""
    import motionguide.motive.attributor as attributor
    from motionguide.cli import main

    monkeypatch.setattr(attributor, "block_count_of", lambda model: None)

    def refuse(*args, **kwargs):
        raise AssertionError("featurization started")

    monkeypatch.setattr(attributor.Motive, "prepare", refuse)
    data = _good_clips(tmp_path / "data", source_clips)  # the query set must be usable to get this far
    argv = ["curate", "--model", str(TOY_MODEL), "--data", str(data), "--queries", str(data), "--out",
            str(tmp_path / "out"), "--num_frames", "9", "--params", "blocks", "--blocks", "0,99"]
    assert _one_error_line_after_a_load(capsys, main(argv)) == "error: --blocks 0,99: block 99 does not exist; the model has 6 blocks, numbered 0-5"


@pytest.mark.parametrize("flags", [["--block", "99"], ["--block=-1"]])
def test_track_with_a_block_the_model_does_not_have_is_one_line_before_any_model_loads(tmp_path, capsys,
                                                                                   source_clips, no_model_load,
                                                                                   flags):
    from motionguide.cli import main

    argv = ["track", "--model", str(TOY_MODEL), "--video", str(source_clips[0]), "--timestep", "50", "--out",
            str(tmp_path / "tracks.npz"), *flags]
    line = _one_line_error(capsys, main(argv))
    assert "does not exist; the model has" in line and "--block" in line


def test_analyze_layers_with_a_block_the_model_does_not_have_is_one_line_before_any_model_loads(
        tmp_path, capsys, source_clips, no_model_load):
    from motionguide.cli import main

    argv = ["analyze-layers", "--model", str(TOY_MODEL), "--data", str(tmp_path), "--blocks", "0-40", "--out",
            str(tmp_path / "p.yaml")]
    line = _one_line_error(capsys, main(argv))
    assert "--blocks 0,1," in line and "does not exist; the model has" in line


# ---------------------------------------------------------------------------------------------- a training run
def test_training_writes_which_clips_it_skipped_and_why_into_the_output_folder(tmp_path, source_clips,
                                                                              monkeypatch):
    """Every dataset skip, and a clip that probes well but fails to decode when the latent cache encodes it."""
    from motionguide.data.dataset import _read_error
    from motionguide.testing import tiny_wan_pipeline
    from motionguide.training.config import TrainConfig
    from motionguide.training.loop import Trainer

    tiny_wan_pipeline().save_pretrained(tmp_path / "model")
    data = build_bad_folder(tmp_path / "data", "jsonl", source_clips)
    with (data / "metadata.jsonl").open("ab") as metadata:
        metadata.write(json.dumps({"id": "fails_to_decode", "file_name": "videos/good_a.mp4", "text": CAPTION})
                       .encode() + b"\n")
    decode = VideoDataset._decode

    def failing_decode(self, entry):
        if entry.clip_id == "fails_to_decode":
            raise _read_error(f"cannot decode clip {entry.clip_id!r}: truncated stream", "corrupt")
        return decode(self, entry)

    monkeypatch.setattr(VideoDataset, "_decode", failing_decode)
    cfg = TrainConfig(pretrained_model_name_or_path=str(tmp_path / "model"), output_dir=str(tmp_path / "out"),
                      data_root=str(data), latent_cache_dir=str(tmp_path / "cache"), train_steps=1,
                      train_batch_size=1, num_frames=9, height=32, width=32, checkpointing_steps=0,
                      report_to="none", rank=2, lora_alpha=2, max_sequence_length=16)
    summary = Trainer(cfg).run()
    expected = {clip_id("jsonl", c): category for l, c, category in CASES if l == "jsonl"}
    expected["fails_to_decode"] = "encode_failed"
    written = json.loads((tmp_path / "out" / "skipped_clips.json").read_text())
    assert {c["clip_id"]: c["category"] for c in written["clips"]} == expected
    assert all(c["reason"] and c["stage"] == ("latent_cache" if c["clip_id"] == "fails_to_decode" else "dataset")
               for c in written["clips"])
    assert "truncated stream" in next(c["reason"] for c in written["clips"] if c["clip_id"] == "fails_to_decode")
    on_disk = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    for report in (summary["data"], on_disk["data"]):
        assert report["kept"] == len(GOOD) and report["skipped"] == len(expected)
        assert report["listed"] == len(GOOD) + len(expected) and report["skipped_file"] == "skipped_clips.json"
        assert report["skipped_by_category"]["encode_failed"] == 1
        assert sum(report["skipped_by_category"].values()) == len(expected)


def test_a_resumed_fine_tune_shows_each_redone_step_once_in_tensorboard(tmp_path, source_clips):
    """The first run logs steps 1-3 and checkpoints at 2; resuming from it redoes step 3. TensorBoard must show
    step 3 once (the resumed run's), not twice."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from motionguide.testing import tiny_wan_pipeline
    from motionguide.training.config import TrainConfig
    from motionguide.training.loop import Trainer

    tiny_wan_pipeline().save_pretrained(tmp_path / "model")
    make_dataset(tmp_path / "data", num_clips=2, seed=1, progress=False, num_frames=9)
    common = dict(pretrained_model_name_or_path=str(tmp_path / "model"), output_dir=str(tmp_path / "out"),
                  data_root=str(tmp_path / "data"), latent_cache_dir=str(tmp_path / "cache"), train_steps=3,
                  train_batch_size=1, num_frames=9, height=32, width=32, checkpointing_steps=2,
                  checkpointing_limit=None, report_to="tensorboard", logging_steps=1, rank=2, lora_alpha=2,
                  max_sequence_length=16, learning_rate=1e-2, lr_scheduler="constant")
    Trainer(TrainConfig(**common)).run()
    resumed = Trainer(TrainConfig(**common, resume_from_checkpoint="latest")).run()
    runs = [p.parent for p in (tmp_path / "out" / "logs").rglob("events.out.tfevents.*")]
    log_dir = max(set(runs), key=runs.count)  # the folder both runs logged their scalars into
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == [1, 2, 3]
    assert events.Scalars("train/loss")[-1].value == pytest.approx(resumed["losses"][3])


@pytest.mark.parametrize("family", ["wan", "cogvideox", "hunyuanvideo"])
def test_the_pixel_multiple_read_from_config_files_is_the_loaded_backbones(tmp_path, family):
    """`pixel_multiple_of(folder)` reads only config files; it must agree with the loaded adapter's
    `pixels_per_token` (VAE factor x patch), including for a VAE that is not the default 8x."""
    from motionguide.backbones import backbone_for
    from motionguide.testing import tiny_cogvideox_pipeline, tiny_hunyuan_video_pipeline, tiny_wan_pipeline
    from motionguide.training.preflight import pixel_multiple_of

    pipe = {"wan": tiny_wan_pipeline, "cogvideox": tiny_cogvideox_pipeline,
            "hunyuanvideo": tiny_hunyuan_video_pipeline}[family]()
    pipe.save_pretrained(tmp_path / "model")
    for path in (tmp_path / "model").rglob("*.safetensors"):
        path.unlink()  # the check must not need the weights
    assert pixel_multiple_of(tmp_path / "model") == backbone_for(pipe).pixels_per_token
    assert pixel_multiple_of(tmp_path / "nowhere") is None  # unknown offline: the check is left to diffusers


@pytest.mark.parametrize("family", ["wan", "cogvideox", "hunyuanvideo"])
def test_the_block_count_read_from_config_files_is_the_loaded_backbones(tmp_path, family):
    """`block_count_of(folder)` reads only config files (HunyuanVideo: dual- plus single-stream blocks, one
    index list); it must agree with the loaded adapter's `num_blocks`."""
    from motionguide.arg_checks import block_count_of
    from motionguide.backbones import backbone_for
    from motionguide.testing import tiny_cogvideox_pipeline, tiny_hunyuan_video_pipeline, tiny_wan_pipeline

    make = {"wan": lambda: tiny_wan_pipeline(num_layers=3), "cogvideox": lambda: tiny_cogvideox_pipeline(num_layers=3),
            "hunyuanvideo": lambda: tiny_hunyuan_video_pipeline(num_layers=1, num_single_layers=2)}[family]
    pipe = make()
    pipe.save_pretrained(tmp_path / "model")
    for path in (tmp_path / "model").rglob("*.safetensors"):
        path.unlink()  # the check must not need the weights
    assert block_count_of(tmp_path / "model") == backbone_for(pipe).num_blocks == 3
    assert block_count_of(tmp_path / "nowhere") is None  # unknown offline: checked after the load instead


def test_generate_names_a_garbage_lora_file_before_the_model_loads(tmp_path, capsys, no_model_load):
    from motionguide.sampling.cli import main as generate_main

    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "pytorch_lora_weights.safetensors").write_bytes(b"not a safetensors header")
    code = generate_main(["--model", str(TOY_MODEL), "--lora", str(lora), "--prompt", "a red circle moves left",
                          "--out", str(tmp_path / "out")])
    line = _one_line_error(capsys, code)
    assert "pytorch_lora_weights.safetensors" in line and "not a readable safetensors file" in line


# ---------------------------------------------------------------------------------------------- issue 18, last pass
# Cases a new user found after the suite above: each class of failure has its parametrised test here.
YAML_CASES = [  # (what the file holds instead of its last key, what the one line must say)
    (b"", r"the file sets nothing \(empty or only comments\)"),
    (b"# only a comment\n", r"the file sets nothing"),
    (b"- a\n- b\n", r"a training config is a YAML mapping of flags"),
    (b"train_steps: 5\ntrain_steps: 7\n", r"key 'train_steps' appears twice \(lines \d+ and \d+\); keep one"),
    (b"tracker_name: caf\xe9\n", r"line \d+: byte \d+ is not valid UTF-8; re-save the file as UTF-8"),
    (b"lr_scheduler: [constant]\n", r"lr_scheduler must be a single value, got \['constant'\]"),
    (b"output_dir: {a: 1}\n", r"output_dir must be a single value, got \{'a': 1\}"),
    (b"target_modules: {to_q: 1}\n", r"target_modules must be a list or a string, got \{'to_q': 1\}"),
    (b"validation_seeds: 0,x\n", r"validation_seeds must be a list of integers, got \['0', 'x'\]"),
    (b"data_root: nowhere-yet\ndata_recipe: {name: toy, num_clipz: 3, seed: 0}\n",
     r"data_recipe \(toy\): unknown key 'num_clipz'. Did you mean 'num_clips'"),
]


@pytest.mark.parametrize("text,message", YAML_CASES, ids=[repr(t[:24]) for t, _ in YAML_CASES])
def test_a_config_file_that_is_empty_repeats_a_key_or_holds_the_wrong_type_is_one_line_naming_it(
        train_config, tmp_path, capsys, no_model_load, text, message):
    import re

    from motionguide.training.cli import main

    if text in (b"", b"# only a comment\n", b"- a\n- b\n"):
        whole = text
    else:  # the good config without the keys the case sets, then the case's own lines
        config = yaml.safe_load(train_config.read_text())
        for line in text.decode("utf-8", errors="replace").splitlines():
            config.pop(line.partition(":")[0], None)
        whole = yaml.safe_dump(config, sort_keys=False).encode() + text
    train_config.write_bytes(whole)
    line = _one_line_error(capsys, main(["--config", str(train_config)]))
    assert line.startswith(f"error: {train_config}"), line  # blamed on the file, never on the command line
    assert re.search(message, line), line
    assert not (tmp_path / "nowhere-yet").exists()


def test_a_config_file_that_is_a_folder_is_named(tmp_path, capsys, no_model_load):
    from motionguide.training.cli import main

    line = _one_line_error(capsys, main(["--config", str(tmp_path)]))
    assert "a folder, not a config file" in line


def test_a_single_validation_prompt_in_the_yaml_file_is_one_prompt_commas_and_all(train_config):
    from motionguide.training.config import TrainConfig

    config = yaml.safe_load(train_config.read_text())
    config["validation_prompts"] = "a dog, running left"
    train_config.write_text(yaml.safe_dump(config))
    assert TrainConfig.load(train_config).validation_prompts == ["a dog, running left"]


@pytest.fixture
def no_work(monkeypatch, no_model_load):
    """The toy recipes render clips and read a VAE as their first work: both fail the test here."""
    import diffusers

    import motionguide.toy.vae_recipe as vae_recipe

    def refuse(*args, **kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr(vae_recipe, "render_pool", refuse)
    monkeypatch.setattr(diffusers.ModelMixin, "from_pretrained", classmethod(refuse))


def _command_cases(tmp_path: Path, clip: Path) -> dict[str, list[str]]:
    model = str(TOY_MODEL)
    return {
        "track": ["track", "--model", model, "--video", str(clip), "--out", str(tmp_path / "t.npz")],
        "saliency": ["saliency", "--model", model, "--prompt", "a red circle moves left", "--out",
                     str(tmp_path / "maps")],
        "analyze-layers": ["analyze-layers", "--model", model, "--data", str(clip.parent), "--tracks",
                           str(tmp_path / "tracks.npz"), "--out", str(tmp_path / "p.yaml")],
        "curate": ["curate", "--model", model, "--data", str(clip.parent), "--queries", str(clip.parent), "--out",
                   str(tmp_path / "c"), "--num_frames", "9", "--height", "32", "--width", "32"],
        "make-dataset": ["toy", "make-dataset", "--out", str(tmp_path / "toy"), "--num_clips", "2", "--no_progress"],
        "make-turn-pool": ["toy", "make-turn-pool", "--out", str(tmp_path / "pool"), "--num_clips", "20",
                           "--no_progress"],
        "train-vae": ["toy", "train-vae", "--out", str(tmp_path / "vae")],
        "train-model": ["toy", "train-model", "--vae", f"{model}/vae", "--out", str(tmp_path / "tm")],
        "demo": ["demo", "--quick", "--out", str(tmp_path / "demo")],
    }


# (command, extra flags, what the one line must say): numbers that are NaN, negative or zero, values the model
# cannot take (a frame count or size, a block), paths that are missing or blocked, names that are misspelt
COMMAND_CASES = [
    ("track", ["--temperature", "0"], "--temperature 0.0: must be a finite number > 0"),
    ("track", ["--content_weight", "nan"], "--content_weight nan: must be a finite number > 0"),
    ("track", ["--points", "1000,1000"], "--points: query point (1000, 1000) is not inside the 64x64 video frame"),
    ("track", ["--points", "nan,3"], "--points: query point (nan, 3) is not inside"),
    ("track", ["--gt", "{file}"], "--gt {file}: not a readable npz"),
    ("track", ["--gt", "{tmp}/none.npz"], "--gt {tmp}/none.npz: no such file"),
    ("track", ["--profile", "{tmp}/none.yaml"], "--profile {tmp}/none.yaml: "),
    ("track", ["--grid", "nan"], "motionguide track: error: argument --grid: invalid int value: 'nan'; see"),
    ("saliency", ["--num_frames", "18"], "--num_frames 18: this model's VAE takes 4k+1 frames; use 17 or 21"),
    ("saliency", ["--height", "50"], "--height 50: not a multiple of 16"),
    ("saliency", ["--blocks", "0,99"], "--blocks 0,99: block 99 does not exist; the model has 6 blocks"),
    ("saliency", ["--window", "0.8", "0.2"], "--window 0.8 0.2: give START STOP fractions"),
    ("saliency", ["--window", "nan", "1"], "--window nan 1: give START STOP fractions"),
    ("saliency", ["--words", "elephant"], "--words: word 'elephant' is not in the prompt"),
    ("saliency", ["--lora", "{tmp}/no-lora"], "--lora {tmp}/no-lora: no such folder or file"),
    ("saliency", ["--lora", "{file}"], "is not a readable safetensors file"),
    ("saliency", ["--video", "{one_frame}"], "has 1 frames, fewer than --num_frames"),
    ("saliency", ["--seed", str(2**70)], "a seed must be an integer in"),
    ("analyze-layers", ["--max_clips", "0"], "--max_clips 0: must be at least 1"),
    ("analyze-layers", ["--threshold_px", "nan"], "--threshold_px nan: must be a finite number > 0"),
    ("analyze-layers", ["--steps", "0,99", "--num_inference_steps", "10"], "--steps 0,99: step 99 does not exist"),
    ("analyze-layers", ["--content_weight", "-1"], "--content_weight -1.0: must be a finite number > 0"),
    ("curate", ["--timestep", "nan"], "timestep must be a noise level in 0..1000, got nan"),
    ("curate", ["--dim", "0"], "dim must be >= 1, got 0"),
    ("curate", ["--flush_every", "0"], "flush_every must be >= 1, got 0"),
    ("curate", ["--max_sequence_length", "0"], "max_sequence_length must be >= 1"),
    ("curate", ["--blocks", "1,2"], "--blocks 1,2 only acts with --params blocks (now --params all)"),
    ("curate", ["--params", "blocks"], "--params blocks needs --blocks"),
    ("curate", ["--height", "50"], "height=50 is not a multiple of 8"),
    ("curate", ["--target_fps", "inf"], "target_fps must be > 0"),
    ("curate", ["--projector_cache_mb", "inf"], "projector_cache_mb must be 'auto' or a number of MiB >= 0"),
    ("curate", ["--out", "{file}/c"], "--out {file}/c: {file} is a file, not a folder"),
    ("curate", ["--latent_cache_dir", "{file}"], "--latent_cache_dir {file}: {file} is a file, not a folder"),
    ("curate", ["--model", "{tmp}"], "--model {tmp}: no model_index.json in this folder"),
    ("make-dataset", ["--fps", "0"], "fps must be >= 1, got 0"),
    ("make-dataset", ["--height", "0"], "height must be >= 16 pixels, got 0"),
    ("make-dataset", ["--partial_motion_rate", "nan"], "partial_motion_rate must be in [0, 1], got nan"),
    ("make-dataset", ["--out", "{file}/toy"], "out_dir {file}/toy: {file} is a file, not a folder"),
    ("make-turn-pool", ["--mislabeled_per_turn", "nan"], "mislabeled_per_turn must be >= 0, got nan"),
    ("train-vae", ["--clip_batch", "0"], "--clip_batch must be at least 1"),
    ("train-vae", ["--object_weight", "nan"], "--object_weight nan: must be a finite number > 0"),
    ("train-vae", ["--init_from", "{tmp}/none"], "--init_from {tmp}/none: no such folder"),
    ("train-vae", ["--out", "{file}"], "--out {file}: {file} is a file, not a folder"),
    ("train-model", ["--learning_rate", "nan"], "--learning_rate nan: must be a finite number > 0"),
    ("train-model", ["--train_steps", "0"], "--train_steps 0: must be at least 1"),
    ("demo", ["--out", "{file}"], "--out {file}: {file} is a file, not a folder"),
    ("demo", ["--model", "{tmp}/none"], "--model {tmp}/none: no such folder"),
    ("demo", ["--config", "{dup}"], "{dup}: line 2, column 1: YAML syntax error: key 'a' appears twice"),
    ("train-model", ["--partial_motion_rate", "2"], "--partial_motion_rate 2.0: must be a finite number in [0, 1]"),
]


@pytest.mark.parametrize("command,flags,message", COMMAND_CASES,
                         ids=[f"{c} {' '.join(f)}" for c, f, _ in COMMAND_CASES])
def test_a_bad_value_of_a_method_or_toy_command_is_one_line_before_any_model_loads_or_work(
        tmp_path, capsys, source_clips, no_work, command, flags, message):
    import numpy as np

    from motionguide.cli import main
    from motionguide.video import write_video

    data = _good_clips(tmp_path / "data", source_clips)
    np.savez(tmp_path / "tracks.npz", tracks=np.zeros((4, 9, 2), np.float32), visibility=np.ones((4, 9), bool))
    write_video(tmp_path / "one_frame.mp4", np.zeros((1, 32, 32, 3), np.uint8))
    file = _in_the_way(tmp_path)
    (tmp_path / "dup.yaml").write_text("a: 1\na: 2\n")
    fill = {"{file}": str(file), "{tmp}": str(tmp_path), "{one_frame}": str(tmp_path / "one_frame.mp4"),
            "{dup}": str(tmp_path / "dup.yaml")}

    def filled(text: str) -> str:
        for key, value in fill.items():
            text = text.replace(key, value)
        return text

    clip = sorted(data.glob("*.mp4"))[0]
    args = _command_cases(tmp_path, clip, )[command] + [filled(f) for f in flags]
    (tmp_path / "data" / "tracks.npz").unlink(missing_ok=True)
    if command == "analyze-layers":  # one clip, so one tracks file serves it
        for extra in sorted(data.glob("*.mp4"))[1:]:
            extra.unlink()
    try:
        code = main(args)
    except SystemExit as exit_info:  # argparse's own errors exit here; one line all the same
        code = exit_info.code
    line = _one_line_error(capsys, code) if not message.startswith("motionguide ") else None
    if line is None:
        err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
        assert code == 2 and len(err) == 1, err
        line = err[0]
    assert filled(message) in line, line


def test_a_hub_id_that_cannot_be_loaded_is_one_line_naming_it(monkeypatch):
    """diffusers reports a misspelt, private or uncached hub id as an OSError with a traceback."""
    import diffusers

    from motionguide.errors import ConfigError
    from motionguide.loading import load_pipeline

    def not_cached(*args, **kwargs):
        raise OSError("Cannot load model someone/typo: the model is not fully cached locally")

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", classmethod(not_cached))
    with pytest.raises(ConfigError, match=r"model someone/typo: cannot be loaded \(Cannot load model .*\); check"):
        load_pipeline("someone/typo")


def test_a_misspelt_lora_target_module_stops_right_after_the_load_before_the_latent_cache(
        tmp_path, source_clips, monkeypatch):
    from motionguide.data import LatentCache
    from motionguide.errors import ConfigError
    from motionguide.training.config import TrainConfig
    from motionguide.training.loop import Trainer

    def refuse(*args, **kwargs):
        raise AssertionError("the latent cache was built")

    monkeypatch.setattr(LatentCache, "build", refuse)
    data = _good_clips(tmp_path / "data", source_clips)
    cfg = TrainConfig(pretrained_model_name_or_path=str(TOY_MODEL), output_dir=str(tmp_path / "out"),
                      data_root=str(data), latent_cache_dir=str(tmp_path / "cache"), train_steps=1, num_frames=9,
                      height=32, width=32, report_to="none", target_modules=["to_qq"])
    with pytest.raises(ConfigError, match=r"target_modules=\['to_qq'\] matched no layer of WanTransformer3DModel. "
                                          r"Linear layer names it has: .*to_q"):
        Trainer(cfg).run()


def test_a_video_decord_refuses_is_read_with_pyav_before_it_is_called_corrupt(tmp_path):
    """decord fails on some valid files (48x34 frames); with the reader left to auto, PyAV reads them."""
    import numpy as np

    from motionguide.video import read_video, write_video

    frames = np.random.default_rng(0).integers(0, 256, size=(5, 34, 48, 3), dtype=np.uint8)
    write_video(tmp_path / "odd.mp4", frames)
    assert read_video(tmp_path / "odd.mp4").shape == (5, 34, 48, 3)


@pytest.mark.parametrize("argv", [
    ["--model", str(TOY_MODEL), "--prompt", "a", "--steps", "nan"],
    ["--model", str(TOY_MODEL), "--prompt", "a", "--dtype", "fp8"],
])
def test_an_argument_argparse_refuses_is_one_line_too(argv, capsys, no_model_load):
    from motionguide.sampling.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("sample/generate.py: error: argument --") and err[0].endswith("--help")
