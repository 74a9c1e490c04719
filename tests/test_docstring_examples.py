"""Every `>>>` example in the package's docstrings runs and prints what it shows (doctest).

Examples that need a model build a tiny random one with `motionguide.testing`; examples that cannot run offline
in seconds are written as plain indented code, without `>>>`, and are not collected here.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest
import torch

PACKAGE = Path(__file__).resolve().parent.parent / "motionguide"


def modules_with_examples() -> list[str]:
    """Dotted names of the package's modules whose source holds a `>>>` prompt."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ">>>" in path.read_text(encoding="utf-8"):
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = modules_with_examples()


def test_the_examples_are_found():
    assert {"motionguide.cli_args", "motionguide.correspondence.guider"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    assert tests, f"{name} holds '>>>' outside any docstring doctest can find"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    with torch.random.fork_rng():  # tiny models seed the global generator; keep other tests' randomness as it was
        for test in tests:
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (report above)"
