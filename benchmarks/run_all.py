"""Regenerate every benchmark result, then the README tables that quote them."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
# In dependency order: the toy model's quality first, then the layer analysis that ships its profile (CAG uses it).
SCRIPTS = [
    "attention_footprint.py",
    "instrument_overhead.py",
    "toy_model_quality.py",
    "teach_turn_base.py",
    ["difftrack_analysis.py", "--ship"],
    "difftrack_tracking.py",
    "difftrack_generated.py",
    "difftrack_rope_diagnostic.py",
    "cag_quality.py",
    "cag_sweep.py",
    "guidance_cost.py",
    "imap_localization.py",
    "imap_monitor_cost.py",
    "imap_training_monitor.py",
    "motive_defects.py",
    "motive_finetune.py",
    "motive_ablations.py",
    "attribution_cost.py",
    "motive_ranks.py",
    "train_overhead.py",
    "real_arch_stages.py",
    "main_job.py",
]


def main() -> None:
    for entry in SCRIPTS:
        script, *args = [entry] if isinstance(entry, str) else entry
        print(f">> {script} {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, str(HERE / script), *args], check=True, cwd=HERE)
    subprocess.run([sys.executable, str(HERE / "update_readme.py")], check=True, cwd=HERE)


if __name__ == "__main__":
    main()
