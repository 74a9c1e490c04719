"""One command-line dialect for every entry point: snake_case flags with kebab aliases, one index-list parser,
one error policy.

Every `motionguide` subcommand, `train/finetune.py` and `sample/generate.py` build their parsers from
:class:`ArgumentParser`, so `--max_sequence_length` and `--max-sequence-length` are the same flag everywhere, and
`--help` shows each flag's type, default and choices. Entry points return through :func:`run_command`, so a
user error is one line on stderr and exit code 2, whichever command raised it.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Callable, Sequence

__all__ = ["ArgumentParser", "HelpFormatter", "add_subcommand", "index_list", "parse_index_list", "run_command",
           "USER_ERRORS"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help lines that end with the flag's type and default (choices already show in the metavar)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.help is argparse.SUPPRESS or not action.option_strings:
            return text
        extras = []
        kind = getattr(action.type, "__name__", None)
        if action.type is None and action.nargs != 0:
            kind = "str"  # argparse's own conversion of a value-taking option without a type
        if kind and kind != "<lambda>" and "type:" not in text:
            extras.append(f"type: {kind}")
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            extras.append("flag")
        elif "default" not in text and action.default is not argparse.SUPPRESS:
            extras.append(f"default: {action.default!r}" if action.default is not None else "default: unset")
        return f"{text} ({'; '.join(extras)})" if extras else text


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose snake_case long flags also answer to their kebab spelling.

    `add_argument("--max_sequence_length")` registers `--max-sequence-length` too (same destination); the help
    lists both. Sub-parsers made from it are of this class as well.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:
        return super().add_argument(*_with_aliases(names), **kwargs)

    def add_argument_group(self, *args: Any, **kwargs: Any) -> argparse._ArgumentGroup:
        group = super().add_argument_group(*args, **kwargs)
        plain = group.add_argument
        group.add_argument = lambda *names, **kw: plain(*_with_aliases(names), **kw)  # type: ignore[method-assign]
        return group

    def add_mutually_exclusive_group(self, **kwargs: Any) -> argparse._MutuallyExclusiveGroup:
        group = super().add_mutually_exclusive_group(**kwargs)
        plain = group.add_argument
        group.add_argument = lambda *names, **kw: plain(*_with_aliases(names), **kw)  # type: ignore[method-assign]
        return group


def add_subcommand(subparsers: argparse._SubParsersAction, name: str, **kwargs: Any) -> ArgumentParser:
    """`subparsers.add_parser(name, **kwargs)` in this dialect even when the parent is a plain argparse parser
    (a command module registered on someone else's CLI still answers to both spellings and shows its help)."""
    parser = subparsers.add_parser(name, **kwargs)
    if not isinstance(parser, ArgumentParser):
        # ArgumentParser only overrides methods and keeps no state of its own, so the instance can take its class
        parser.__class__ = ArgumentParser
        if "formatter_class" not in kwargs:
            parser.formatter_class = HelpFormatter
    return parser


def _with_aliases(names: Sequence[str]) -> list[str]:
    """The given option strings plus the kebab (or snake) spelling of each long one, without duplicates."""
    out = list(names)
    for name in names:
        if name.startswith("--"):
            body = name[2:]
            for other in (body.replace("_", "-"), body.replace("-", "_")):
                alias = f"--{other}"
                if alias not in out:
                    out.append(alias)
    return out


_INDEX_ITEM = re.compile(r"^(-?\d+)(?:-(-?\d+))?$")


def parse_index_list(text: str | Sequence[int] | int, what: str = "blocks") -> list[int]:
    """'0-3,7,-1' -> [0, 1, 2, 3, 7, -1]: integers and inclusive 'first-last' ranges, comma separated.

    Lists and single integers pass through (YAML gives those). A ValueError names the flag and shows the syntax.

    >>> parse_index_list("10-12,14")
    [10, 11, 12, 14]
    """
    if isinstance(text, int) and not isinstance(text, bool):
        return [text]
    if not isinstance(text, str):
        values = list(text)
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return values
        text = ",".join(str(v) for v in values)
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        match = _INDEX_ITEM.match(part)
        if part and not match:
            out = []
            break
        if match:
            first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
            if last < first:
                out = []
                break
            out.extend(range(first, last + 1))
    if not out:
        raise ValueError(f"--{what} {text!r}: write integers and first-last ranges separated by commas, e.g. '0-3,7'")
    return out


def index_list(what: str = "blocks") -> Callable[[str], list[int]]:
    """An argparse `type=` that reads '10-12,14' with :func:`parse_index_list` (its help says "type: index_list")."""

    def parse(text: str) -> list[int]:
        try:
            return parse_index_list(text, what)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "index_list"
    return parse


def _user_errors() -> tuple[type[BaseException], ...]:
    from .errors import MotionGuideError

    return (MotionGuideError, ValueError, FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            PermissionError)


#: the exception types reported as one-line user errors (exit code 2) rather than tracebacks
USER_ERRORS = _user_errors()


def run_command(func: Callable[..., Any], *args: Any, prefix: str = "error") -> int:
    """`func(*args)` as an exit code: its return value (0 when None), or 2 with one line on stderr for a user
    error (a bad flag value, a missing file, a config mistake). Programming errors keep their traceback."""
    try:
        code = int(func(*args) or 0)
    except USER_ERRORS as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return 2
    release_process_group()
    return code


def release_process_group() -> None:
    """Destroy the default torch.distributed group, if this process has one, once a command has done its work.

    Why: a gloo (or NCCL) group left to interpreter exit can abort the finished process ("terminate called
    without an active exception", exit -6) after every file was written, and the launcher then reports the
    whole run as failed. Only after success: after an error another rank may still sit in a collective."""
    dist = sys.modules.get("torch.distributed")  # a command that never imported torch has no group
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
