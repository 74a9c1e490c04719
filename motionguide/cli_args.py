"""One command-line dialect for every entry point: snake_case flags with kebab aliases, one index-list parser,
one error policy.

Every `motionguide` subcommand, `train/finetune.py` and `sample/generate.py` build their parsers from
:class:`ArgumentParser`, so `--max_sequence_length` and `--max-sequence-length` are the same flag everywhere, and
`--help` shows each flag's type, default and choices. Entry points return through :func:`run_command`, so a
user error is one line on stderr and exit code 2, whichever command raised it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import types
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

    def error(self, message: str) -> None:  # type: ignore[override]
        """A bad flag (`--steps nan`, an unknown choice) as one line and exit code 2, like every other user
        error; argparse's default prints the whole usage block (dozens of lines) before it."""
        sys.stderr.write(f"{self.prog}: error: {message}; see {self.prog} --help\n")
        raise SystemExit(2)

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
    release_process_group(exit_code=code)
    return code


def release_process_group(exit_code: int = 0) -> None:
    """Destroy the default torch.distributed group, if this process has one, once a command has done its work.

    Why: a gloo (or NCCL) group left to interpreter exit can abort the finished process ("terminate called
    without an active exception", exit -6) after every file was written, and the launcher then reports the
    whole run as failed. Destroying is not enough when a module imported after init_process_group captured
    the group in a default argument (see `_forget_captured_groups`): those copies are reset too. Only after
    success: after an error another rank may still sit in a collective. If gloo threads survive even that (a
    DeepSpeed engine keeps its groups alive), a launched rank skips interpreter teardown, see
    `_exit_without_teardown_if_groups_linger`; `exit_code` is the code it then exits with."""
    dist = sys.modules.get("torch.distributed")  # a command that never imported torch has no group
    if dist is None or not dist.is_available():
        return
    had_group = dist.is_initialized()
    if had_group:
        dist.destroy_process_group()
    # in a launched rank the group may be gone already (`Accelerator.end_training` destroys it), its copies not
    launched = os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1")
    if had_group or launched:
        _forget_captured_groups(dist)
    if launched:
        _exit_without_teardown_if_groups_linger(exit_code)


def lingering_gloo_threads() -> list[str]:
    """Names of this process's native gloo threads (gloo_tcp_loop, pt_gloo_runloop); [] where /proc is missing."""
    tasks = "/proc/self/task"
    if not os.path.isdir(tasks):
        return []
    names = []
    for task in os.listdir(tasks):
        try:
            with open(os.path.join(tasks, task, "comm")) as handle:
                names.append(handle.read().strip())
        except OSError:  # the thread ended meanwhile
            continue
    return sorted(name for name in names if "gloo" in name)


def _exit_without_teardown_if_groups_linger(exit_code: int) -> None:
    """In a launched rank whose gloo threads outlive the released group, end the process at exit with os._exit
    once every atexit handler (loggers, trackers) has run, instead of letting interpreter teardown free them.

    Why: DeepSpeed's engine outlives a run (its hook closures are reachable only from C++ autograd nodes, which
    gc cannot collect; deepspeedai/DeepSpeed#5674) and holds its gloo groups, whose worker threads then meet
    interpreter teardown and now and then abort the finished rank ("terminate called without an active
    exception", exit -6) after every file was written. Only after success, and only in a launched rank
    (WORLD_SIZE > 1), so a test process or a single run keeps its normal exit."""
    if not lingering_gloo_threads():
        return
    import atexit

    def finish() -> None:
        atexit.unregister(finish)
        atexit._run_exitfuncs()  # the handlers registered before this one (they would run after it)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)

    atexit.register(finish)


def _forget_captured_groups(dist: Any) -> int:
    """Reset every function default (module functions and class methods of every loaded module) that still holds
    a destroyed process group to None, the value those functions read as "the default group"; returns how many
    functions it changed.

    Why: a default argument is evaluated when its module is imported. torch/distributed/nn/functional.py
    (`group=group.WORLD`, re-exported by torch.distributed.nn and torch.distributed._shard) and DeepSpeed's
    deepspeed/comm/torch.py (`TorchBackend.barrier(group=GroupMember.WORLD)`) are imported lazily, after the
    group exists (DDP's constructor imports torch._dynamo, which imports the former). Their defaults then keep
    the gloo group and its worker threads alive past destroy_process_group until interpreter teardown, where
    freeing it now and then aborts the finished rank ("terminate called without an active exception", exit
    -6). Imported before init_process_group, the same defaults are None: this restores that."""

    def is_group(value: Any) -> bool:
        return issubclass(type(value), dist.ProcessGroup)  # type(): isinstance reads __class__, which can warn

    def forget(func: Any) -> int:
        func = getattr(func, "__func__", func) if type(func) in (staticmethod, classmethod) else func
        if type(func) is not types.FunctionType:
            return 0
        changed = 0
        if any(is_group(d) for d in func.__defaults__ or ()):
            func.__defaults__ = tuple(None if is_group(d) else d for d in func.__defaults__)
            changed = 1
        if any(is_group(d) for d in (func.__kwdefaults__ or {}).values()):
            func.__kwdefaults__ = {k: None if is_group(d) else d for k, d in func.__kwdefaults__.items()}
            changed = 1
        return changed

    changed = 0
    for name, module in list(sys.modules.items()):
        if not issubclass(type(module), types.ModuleType):  # sys.modules may hold None or other objects
            continue
        namespace = vars(module)
        for value in list(namespace.values()):
            if type(value) is types.FunctionType:
                changed += forget(value)
            elif issubclass(type(value), type) and vars(value).get("__module__") == name:  # its own classes
                changed += sum(forget(member) for member in list(vars(value).values()))
    return changed
