"""Regenerate every benchmark result, then the README tables that quote them."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = ["attention_footprint.py", "instrument_overhead.py"]


def main() -> None:
    for script in SCRIPTS:
        print(f">> {script}", flush=True)
        subprocess.run([sys.executable, str(HERE / script)], check=True, cwd=HERE)
    subprocess.run([sys.executable, str(HERE / "update_readme.py")], check=True, cwd=HERE)


if __name__ == "__main__":
    main()
