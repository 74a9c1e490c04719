"""The one place that names motionguide's built-in methods, and the registry type every method slot uses.

The training loop and the sampler look methods up by name (`--curation motive`, `--monitor imap`,
`--guidance correspondence`) and never import a method package themselves: a registry imports the module
that registers a built-in name the first time that name is asked for, so loading the trainer does not load
every method, and a method package may depend on the training layer without a cycle. User code adds its own
with `CURATIONS.register("mine")(MyCuration)`.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, TypeVar

from .errors import ConfigError, closest_names

T = TypeVar("T")

__all__ = ["Registry", "CURATIONS", "MONITORS", "GUIDANCES", "DATA_RECIPES"]


class Registry(Generic[T]):
    """Named factories of one kind (curation, monitor, guidance, data recipe).

    `builtins` maps each built-in name to the module whose import registers it; "none" (the off switch) is
    accepted by :meth:`get_or_none` and listed first by :meth:`names` when `off_name` is set.
    """

    def __init__(self, kind: str, flag: str, builtins: dict[str, str], off_name: str | None = "none"):
        self.kind = kind
        self.flag = flag
        self.builtins = dict(builtins)
        self.off_name = off_name
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers `obj` under `name` (a later registration replaces an earlier one)."""
        if not name or name == self.off_name:
            raise ValueError(f"{name!r} cannot name a {self.kind}")

        def wrap(obj: T) -> T:
            self._entries[name] = obj
            return obj

        return wrap

    def _load(self, name: str) -> None:
        module = self.builtins.get(name)
        if module is not None and name not in self._entries:
            importlib.import_module(module)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self.builtins)

    def names(self) -> list[str]:
        """Every accepted name: the off switch first (when there is one), then the others sorted."""
        names = sorted(set(self._entries) | set(self.builtins))
        return ([self.off_name] if self.off_name else []) + names

    def check(self, name: str) -> str:
        """`name` if it is registered (or the off switch); a ConfigError with the closest names otherwise.

        Checking does not import the method, so a config can be validated before anything heavy loads."""
        if name == self.off_name or name in self:
            return name
        valid = self.names()
        close = closest_names(str(name), valid)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{self.flag} {name!r}: no such {self.kind}.{hint} Registered: {', '.join(valid)}")

    def get(self, name: str) -> T:
        """The factory registered under `name` (importing its built-in module on first use)."""
        self.check(name)
        if name == self.off_name:
            raise ConfigError(f"{self.flag} {name!r} switches the {self.kind} off; there is nothing to build")
        self._load(name)
        if name not in self._entries:  # pragma: no cover - a built-in module that forgot to register
            raise ConfigError(f"{self.flag} {name!r}: {self.builtins[name]} did not register it")
        return self._entries[name]

    def build(self, name: str, **options: Any) -> Any:
        """`get(name)(**options)`."""
        return self.get(name)(**options)

    def build_or_none(self, name: str | None, **options: Any) -> Any:
        """`build(name, **options)`, or None for the off switch, "" or None."""
        if name in (None, "", self.off_name):
            return None
        return self.build(name, **options)


#: `--curation`: which cached clips the fine-tuning loop samples, with which weights
CURATIONS: Registry[Any] = Registry("curation", "--curation", {
    "random": "motionguide.training.curations",
    "motive": "motionguide.motive.curation",
})

#: `--monitor`: callbacks that watch the fine-tune (maps, metrics) without changing it
MONITORS: Registry[Any] = Registry("monitor", "--monitor", {
    "imap": "motionguide.saliency.monitor",
}, off_name=None)

#: `--guidance`: how the sampler (and validation) calls a stock pipeline
GUIDANCES: Registry[Any] = Registry("guidance", "--guidance", {
    "correspondence": "motionguide.correspondence.guidance",
})

#: `data_recipe`: how to create a dataset folder that does not exist yet (the toy world's generator)
DATA_RECIPES: Registry[Any] = Registry("data recipe", "data_recipe", {
    "toy": "motionguide.toy.recipes",
    "toy_turn_pool": "motionguide.toy.recipes",
    "toy_turn_queries": "motionguide.toy.recipes",
}, off_name=None)


def check_recipe_options(spec: Any, where: str) -> None:
    """A data recipe spec ({name: toy, num_clips: 8, ...}) names a registered recipe and only options it takes.
    Why: the recipe runs when its folder is first needed, after the model has loaded; a misspelt option would
    fail there as a TypeError."""
    import inspect

    from .errors import ConfigError, unknown_key_message

    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        return  # the callers report a spec that is not a mapping with a name
    DATA_RECIPES.check(spec["name"])
    recipe = DATA_RECIPES.get(spec["name"])
    options = {k: v for k, v in spec.items() if k != "name"}
    check = getattr(recipe, "check", None)
    if check is not None:  # the recipe's own check of its options (names and values), creating nothing
        try:
            check(options)
        except ConfigError as exc:
            text = str(exc)  # the recipe names itself ("data_recipe (toy): ...")
            raise ConfigError(text if text.startswith(where.split(".")[0]) else f"{where}: {text}") from None
        return
    parameters = inspect.signature(recipe).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    named = [n for n, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL][1:]  # 1st: folder
    for key in options:
        if key not in named:
            raise ConfigError(unknown_key_message(key, named, where))
