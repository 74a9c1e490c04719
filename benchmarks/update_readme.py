"""Copy benchmarks/results/<name>.md into README.md between `<!-- bench:<name> -->` and `<!-- /bench:<name> -->`."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for md in sorted(RESULTS.glob("*.md")):
        name = md.stem
        pattern = re.compile(rf"(<!-- bench:{re.escape(name)} -->\n).*?(<!-- /bench:{re.escape(name)} -->)", re.S)
        text, n = pattern.subn(lambda m: m.group(1) + md.read_text() + m.group(2), text)
        print(f"{name}: {'updated' if n else 'no marker in README'}")
    readme.write_text(text)


if __name__ == "__main__":
    main()
