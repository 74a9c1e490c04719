"""The demo path at reduced size, and the console entry points a user runs."""

import json
import subprocess
import sys

from motionguide.cli import main


def test_quick_demo_writes_a_report_with_real_numbers(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--quick"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "![toy clips](toy_grid.png)" in report and (tmp_path / "toy_grid.png").stat().st_size > 1000
    stats = json.loads((tmp_path / "report.json").read_text())
    assert stats["instruments"]["bit_identical_with_capture"] is True
    assert stats["instruments"]["bit_identical_after_removal"] is True
    assert stats["instruments"]["captures"] == 2 * 2 * 2  # steps x blocks x (self, text)
    assert stats["instruments"]["frame_local_mean_abs_change"] > 0
    assert stats["toy"]["clips"] == 4
    assert "32,760" in report and "17,776" in report


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
