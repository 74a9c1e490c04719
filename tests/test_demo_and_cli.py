"""The demo path at reduced size, and the console entry points a user runs: one dialect (both spellings of every
flag, per-flag help with type and default) and one error policy for every command and both scripts."""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from motionguide.cli import build_parser, main
from motionguide.video import read_video

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_demo_runs_the_main_job_and_writes_a_report(tmp_path):
    """The demo path at a reduced size: the same commands (accelerate launch of the fine-tune with Motive and
    the IMAP monitor, three sampling runs), then a report whose numbers and pictures are real."""
    assert main(["demo", "--out", str(tmp_path), "--quick", "--story", "straight"]) == 0
    stats = json.loads((tmp_path / "report.json").read_text())
    assert [c["step"] for c in stats["commands"]] == ["fine-tune", "sample: base", "sample: finetuned", "sample: guided"]
    assert "accelerate" in stats["commands"][0]["command"] and "--curation motive" in stats["commands"][0]["command"]
    curation = stats["curation"]
    assert curation["pool"] == 12 and curation["kept"] == 3 and curation["queries"] == 2
    # the reported shares are the toy world's labels of exactly the clips the selection names
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "data" / "toy-train" / "metadata.jsonl").read_text()
                                    .splitlines())}
    selection = json.loads((tmp_path / "finetune" / "motive" / "selection.json").read_text())
    assert len(selection["selected_ids"]) == 3 and sorted(selection["train_ids"]) == sorted(rows)
    defective = {i for i, r in rows.items() if r.get("defect") not in (None, "", "none")}
    assert 0 < len(defective) < 12  # defect_rate 0.25 planted some, not all
    assert curation["defect_share_pool"] == len(defective) / 12
    assert curation["defect_share_kept"] == len(defective & set(selection["selected_ids"])) / 3
    assert stats["training"]["steps"] == 4 and stats["training"]["clips"] == 3
    assert stats["training"]["imap_probes_logged"] == 2  # every 2 of 4 steps
    from diffusers import DiffusionPipeline

    from motionguide.backbones import backbone_for
    from motionguide.metrics import flow_warp_smoothness, toy_prompt_adherence

    token_px = backbone_for(DiffusionPipeline.from_pretrained(REPO / "assets" / "toy-model")).pixels_per_token
    for name in ("base", "finetuned", "guided"):
        summary = stats["samples"][name]
        listing = json.loads((tmp_path / "samples" / name / "samples.json").read_text())
        assert summary["videos"] == len(listing) == 2
        videos = [read_video(tmp_path / "samples" / name / entry["file"]) for entry in listing]
        correct = [bool(toy_prompt_adherence(v, e["prompt"], token_px=float(token_px))[0].direction_correct)
                   for v, e in zip(videos, listing)]
        assert summary["direction_accuracy"] == sum(correct) / len(correct)
        assert summary["smoothness"] == pytest.approx(float(np.mean([flow_warp_smoothness(v) for v in videos])))
    report = (tmp_path / "report.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(pictures) >= 5
    for picture in pictures:
        assert (tmp_path / picture).stat().st_size > 500, picture
    # the LoRA and the guidance really change the videos (same prompts and seeds)
    frames = {name: read_video(tmp_path / "samples" / name / "000_seed0.mp4").astype(int) for name in
              ("base", "finetuned", "guided")}
    assert np.abs(frames["finetuned"] - frames["base"]).max() > 0
    assert np.abs(frames["guided"] - frames["finetuned"]).max() > 0


@pytest.mark.slow
def test_quick_turn_demo_reports_numbers_that_match_the_truth_table_and_the_videos(tmp_path):
    """The turn story at a reduced size: the base model's turn success is recounted from its videos, and every
    selection's precision / recall from the pool's truth table (Motive's and random's from the files the two
    fine-tunes wrote, the keyword filter's from the captions); a rerun of the same folder reuses every step."""
    from motionguide.metrics.turns import toy_turn_adherence

    assert main(["demo", "--out", str(tmp_path), "--quick"]) == 0
    stats = json.loads((tmp_path / "report.json").read_text())
    assert [c["step"] for c in stats["commands"]] == [
        "turn pool", "sample: base", "fine-tune: Motive top 10%", "fine-tune: random 10%", "sample: random",
        "sample: curated", "sample: guided"]
    tune = stats["commands"][2]["command"]
    assert "accelerate" in tune and "--curation motive" in tune and "--monitor imap" in tune
    pool = tmp_path / "data" / "toy-turn-pool"
    truth = json.loads((pool / "truth.json").read_text())
    clean = {r["id"] for r in truth if r["clean_turn"]}
    assert len(truth) == 40 and clean and stats["pool"]["clean_turns"] == len(clean)
    # the selections, read from what the fine-tunes wrote and from the captions a user would filter
    motive = json.loads((tmp_path / "finetune" / "motive" / "selection.json").read_text())["selected_ids"]
    indices = json.loads((tmp_path / "finetune-random" / "curation.json").read_text())["indices"]
    random_ids = [sorted(r["id"] for r in truth)[i] for i in indices]
    captions = {json.loads(line)["id"]: json.loads(line)["text"] for line in
                (pool / "metadata.jsonl").read_text().splitlines()}
    keyword = [i for i, text in captions.items() if re.search(r"\bthen (up|down|left|right)\b", text)]
    for name, ids in (("Motive top 10%", motive), ("caption-keyword filter", keyword), ("random 10%", random_ids)):
        reported = stats["selection"][name]
        assert sorted(stats["selections"][name]) == sorted(ids), name
        assert reported["selected"] == len(ids) and reported["clean_turns"] == len(set(ids) & clean)
        assert reported["precision"] == pytest.approx(len(set(ids) & clean) / len(ids))
        assert reported["recall"] == pytest.approx(len(set(ids) & clean) / len(clean))
    assert len(motive) == len(random_ids) == 4  # 10% of 40
    # the base model's turn success, recounted from its videos
    listing = json.loads((tmp_path / "samples" / "base" / "samples.json").read_text())
    hits = [toy_turn_adherence(read_video(tmp_path / "samples" / "base" / e["file"]), e["prompt"])[0].success
            for e in listing]
    assert stats["samples"]["base"]["videos"] == len(listing) == 2
    assert stats["samples"]["base"]["successes"] == sum(hits)
    report = (tmp_path / "report.md").read_text()
    assert f"Base model turn success: **{sum(hits)}/2" in report
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert {"report_samples.png", "report_trajectories.png", "report_imap_then.png"} <= set(pictures)
    for picture in pictures:
        assert (tmp_path / picture).stat().st_size > 500, picture
    # the monitor mapped "then" and one second direction on probe clips captioned with that turn
    assert stats["imap"]["words"][0] == "then" and len(stats["imap"]["history"]) == 2
    for probe in stats["imap"]["probes"]:
        assert f"then {stats['imap']['words'][1]}" in probe["caption"]
    # a rerun (as after an interruption) reuses every finished step and reports the same numbers
    assert main(["demo", "--out", str(tmp_path), "--quick"]) == 0
    again = json.loads((tmp_path / "report.json").read_text())
    assert all(c.get("skipped") for c in again["commands"])
    assert again["selection"] == stats["selection"]
    assert {k: v["successes"] for k, v in again["samples"].items()} == {k: v["successes"] for k, v in
                                                                       stats["samples"].items()}


def test_demo_outside_a_checkout_says_how_to_get_the_toy_model_before_any_work(tmp_path, monkeypatch, capsys):
    """A plain install ships neither the toy model nor the configs: one line on what to do, nothing created."""
    import motionguide.demo as demo
    from motionguide.errors import ConfigError

    monkeypatch.setattr(demo, "ROOT", tmp_path / "site-packages")  # an empty folder where the checkout would be
    (tmp_path / "site-packages").mkdir()
    assert main(["demo", "--out", str(tmp_path / "out"), "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: the demo found no source checkout")
    assert "clone the motionguide repository" in err and "--model PIPELINE_DIR --config CONFIG.yaml" in err
    assert not (tmp_path / "out").exists()
    # given both, it runs the installed package's entry modules from the current folder instead of the scripts
    config = tmp_path / "toy.yaml"
    config.write_text((REPO / "configs" / "toy.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    inputs = demo.resolve_inputs(model=str(REPO / "assets" / "toy-model"), config=config)
    assert inputs.finetune == ("-m", "motionguide.training.cli") and inputs.sample == ("-m", "motionguide.sampling.cli")
    assert inputs.workdir == tmp_path and inputs.config == config
    with pytest.raises(ConfigError, match="--config .*missing.yaml: no such file"):
        demo.resolve_inputs(model="m", config=tmp_path / "missing.yaml")


def test_demo_in_the_checkout_finds_the_toy_model_config_and_scripts():
    from motionguide.demo import resolve_inputs

    inputs = resolve_inputs()  # the default story teaches a turn
    assert Path(inputs.model) == REPO / "assets" / "toy-model" and inputs.config == REPO / "configs" / "toy-turn.yaml"
    assert resolve_inputs(story="straight").config == REPO / "configs" / "toy.yaml"
    assert inputs.workdir == REPO and inputs.finetune == ("train/finetune.py",)
    assert inputs.sample == ("sample/generate.py",)
    assert subprocess.run([sys.executable, "-m", "motionguide.training.cli", "--help"], capture_output=True,
                          cwd=REPO).returncode == 0


def test_profiles_and_shapes_commands(capsys, tmp_path):
    assert main(["profiles", "list"]) == 0
    assert "wan2.1-t2v-1.3b" in capsys.readouterr().out
    assert main(["profiles", "check", "cogvideox-2b"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfamily: wan\nnum_blocks: 4\nnum_heads: 2\nimap: {blocks: [9], top_k: 1}\n")
    assert main(["profiles", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "imap.blocks" in err and "0..3" in err


def test_console_script_help_runs():
    proc = subprocess.run([sys.executable, "-m", "motionguide.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "shapes" in proc.stdout and "toy" in proc.stdout


def test_line_chart_draws_each_series_in_its_colour():
    from motionguide.viz import line_chart

    image = np.asarray(line_chart({"loss": ([0, 1, 2, 3], [1.0, 0.5, 0.25, 0.2]), "other": ([0, 3], [0.2, 1.0])}))
    assert image.shape == (240, 480, 3)
    first = (image == np.array([31, 119, 180], np.uint8)).all(axis=-1)
    second = (image == np.array([214, 39, 40], np.uint8)).all(axis=-1)
    assert first.sum() > 100 and second.sum() > 100
    # the first series falls: its leftmost drawn pixels sit above (smaller y) its rightmost ones
    ys, xs = np.nonzero(first[:, :320])  # left of the legend
    assert ys[xs < xs.min() + 5].mean() < ys[xs > xs.max() - 5].mean()
    empty = np.asarray(line_chart({}, "nothing"))
    assert empty.shape == (240, 480, 3)


# ---------------------------------------------------------------------- one dialect for every command
def _commands():
    """(name, parser) for every command a user runs: each `motionguide` subcommand (nested ones too), the
    standalone toy CLI, and both scripts."""
    from motionguide.sampling.cli import build_parser as sample_parser
    from motionguide.toy.cli import build_parser as toy_parser
    from motionguide.training.cli import build_help_parser

    found = [("train/finetune.py", build_help_parser()), ("sample/generate.py", sample_parser())]

    def walk(prefix, parser):
        found.append((prefix, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(f"{prefix} {name}", sub)

    walk("motionguide", build_parser())
    walk("python -m motionguide.toy.cli", toy_parser())
    return found


COMMANDS = _commands()


def _options(parser):
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def _converted_elsewhere(name, parser):
    """`curate` is converted to this dialect on the Motive branch; until that merges its old flags may lack help."""
    func = parser._defaults.get("func")
    return name.endswith(" curate") and getattr(func, "__module__", "") == "motionguide.attribution.cli"


def _help_entries(parser) -> dict[str, str]:
    """Each option's help entry as printed by --help (its lines joined), keyed by its first option string."""
    entries: dict[str, str] = {}
    current = None
    for line in parser.format_help().splitlines():
        match = re.match(r"^  (-{1,2}[\w-]+)", line)
        if match:
            current = match[1]
            entries[current] = line.strip()
        elif current and line.startswith("    ") and line.strip():
            entries[current] += " " + line.strip()
        elif not line.strip() or not line.startswith(" "):
            current = None
    return entries


@pytest.mark.parametrize("name,parser", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_flag_shows_its_help_type_and_default(name, parser, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    entries = _help_entries(parser)
    missing = []
    for action in _options(parser):
        entry = entries.get(action.option_strings[0], "")
        shows_default = "default" in entry or (action.required and "required" in entry)
        ok = bool(action.help) and (("type:" in entry and shows_default) or "(flag)" in entry)
        if not ok:
            missing.append(f"{action.option_strings[0]}: {entry!r}")
    if missing and _converted_elsewhere(name, parser):
        pytest.xfail("curate is converted on the Motive branch")
    assert not missing, f"{name}: " + "; ".join(missing)


@pytest.mark.parametrize("name,parser", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_flag_answers_to_both_spellings(name, parser):
    for action in _options(parser):
        for option in (o for o in action.option_strings if o.startswith("--")):
            body = option[2:].rstrip("+")
            for spelling in (f"--{body.replace('-', '_')}", f"--{body.replace('_', '-')}"):
                assert parser._option_string_actions.get(spelling) is action, f"{name}: {spelling}"


def test_block_lists_read_the_same_everywhere():
    """One index-list parser: `--blocks 10-12,14` means the same on every command that takes blocks."""
    from motionguide.cli_args import parse_index_list
    from motionguide.correspondence.cli import parse_index_list as correspondence_parse

    assert correspondence_parse is parse_index_list
    parser = build_parser()
    args = parser.parse_args(["saliency", "--model", "m", "--prompt", "p", "--blocks", "10-12,14"])
    assert args.blocks == [10, 11, 12, 14]
    args = parser.parse_args(["toy", "make-dataset", "--out", "o", "--num_clips", "1", "--objects", "1-3"])
    assert args.objects == [1, 2, 3]
    args = parser.parse_args(["toy", "make-dataset", "--out", "o", "--num-clips", "1", "--motions", "right,left"])
    assert args.motions == ["right", "left"]  # motions are checked against the motions, not the defects
    with pytest.raises(SystemExit):
        parser.parse_args(["saliency", "--model", "m", "--prompt", "p", "--blocks", "12-10"])


def test_user_errors_are_one_line_on_stderr_with_exit_code_2(tmp_path, capsys):
    from motionguide.sampling.cli import main as sample_main
    from motionguide.toy.cli import main as toy_main
    from motionguide.training.cli import main as train_main

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("train_steps: [1\n")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    runs = [
        lambda: main(["profiles", "show"]),
        lambda: main(["profiles", "check", str(tmp_path / "missing.yaml")]),
        lambda: sample_main(["--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "s")]),
        lambda: train_main(["--config", str(bad_yaml)]),
        lambda: toy_main(["make-dataset", "--out", str(tmp_path / "full"), "--num_clips", "1", "--no_progress"]),
    ]
    for run in runs:
        assert run() == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("error: "), err
