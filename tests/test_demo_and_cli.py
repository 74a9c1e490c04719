"""The demo path at reduced size, and the console entry points a user runs."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from motionguide.cli import main
from motionguide.video import read_video


@pytest.mark.slow
def test_quick_demo_runs_the_main_job_and_writes_a_report(tmp_path):
    """The demo path at a reduced size: the same commands (accelerate launch of the fine-tune with Motive and
    the IMAP monitor, three sampling runs), then a report whose numbers and pictures are real."""
    assert main(["demo", "--out", str(tmp_path), "--quick"]) == 0
    stats = json.loads((tmp_path / "report.json").read_text())
    assert [c["step"] for c in stats["commands"]] == ["fine-tune", "sample: base", "sample: finetuned", "sample: guided"]
    assert "accelerate" in stats["commands"][0]["command"] and "--curation motive" in stats["commands"][0]["command"]
    curation = stats["curation"]
    assert curation["pool"] == 12 and curation["kept"] == 3 and curation["queries"] == 2
    assert 0 <= curation["defect_share_kept"] <= 1 and 0 < curation["defect_share_pool"] < 1
    assert stats["training"]["steps"] == 4 and stats["training"]["clips"] == 3
    assert stats["training"]["imap_probes_logged"] == 2  # every 2 of 4 steps
    for name in ("base", "finetuned", "guided"):
        summary = stats["samples"][name]
        assert summary["videos"] == 2
        assert 0 <= summary["direction_accuracy"] <= 1 and np.isfinite(summary["smoothness"])
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
