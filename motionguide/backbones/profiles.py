"""`LayerProfile`: which blocks and steps each method uses on a given model, as versioned, checked YAML.

A profile says where DiffTrack tracking reads query-key matches, where correspondence guidance perturbs
attention (and in which part of the sampling trajectory), and which blocks / how many heads IMAP averages.
Values shipped for real models come from the papers' reference code (see each section's `source`);
`provisional: true` marks values not yet confirmed by `motionguide analyze-layers` on that model.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, unknown_key_message
from ..files import atomic_write_text

PROFILE_DIR = Path(__file__).parent / "profiles"
SCHEMA_VERSION = 1


#: descriptors a tracking profile may name (see `motionguide.correspondence.matching`)
TRACKING_DESCRIPTORS = ("qk", "qk_no_rope", "qk_mixed")
#: the descriptors that read q / k from before the rotary embedding
PRE_ROPE_DESCRIPTORS = ("qk_no_rope", "qk_mixed")
#: weight of the pre-RoPE logits in "qk_mixed" unless a profile or call says otherwise
DEFAULT_CONTENT_WEIGHT = 4.0


@dataclass
class TrackingProfile:
    """Block whose self-attention q/k give correspondences, read at one sampling step."""

    block: int
    step: int = -1  # index into a `num_inference_steps` schedule; -1 is the last (least noisy) step
    num_inference_steps: int = 50
    provisional: bool = False
    source: str = ""
    #: matching descriptor: "qk" (DiffTrack's, after RoPE), "qk_no_rope" (before the rotary embedding) or
    #: "qk_mixed" (both logits, the pre-RoPE one weighted by `content_weight`)
    descriptor: str = "qk"
    content_weight: float = DEFAULT_CONTENT_WEIGHT


@dataclass
class GuidanceProfile:
    """Correspondence guidance (CAG): blocks made frame-local in the perturbed pass, and when."""

    blocks: list[int]
    window: tuple[float, float] = (0.0, 1.0)  # fraction of the sampling steps [start, stop)
    scale: float = 1.0
    renormalize: bool = False  # DiffTrack's released results drop cross-frame mass without renormalising
    provisional: bool = False
    source: str = ""


@dataclass
class SaliencyProfile:
    """IMAP: blocks whose top-k frame-separable heads are averaged, and the re-noise step for real videos."""

    blocks: list[int]
    top_k: int
    renoise_step: int = 20
    num_inference_steps: int = 50
    provisional: bool = False
    source: str = ""


@dataclass
class LayerProfile:
    """Per-model layer choices: tracking, guidance and IMAP sections, with the architecture they fit."""

    name: str
    family: str
    num_blocks: int
    num_heads: int
    tracking: TrackingProfile | None = None
    guidance: GuidanceProfile | None = None
    imap: SaliencyProfile | None = None
    model: str = ""
    produced_by: dict[str, Any] = field(default_factory=dict)
    version: int = SCHEMA_VERSION

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict[str, Any]:
        """Plain dict for YAML: the guidance window as a list, absent sections left out."""
        out = dataclasses.asdict(self)
        if self.guidance is not None:
            out["guidance"]["window"] = list(self.guidance.window)
        return {k: v for k, v in out.items() if v is not None}

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temp file + rename) so a crash never leaves half a profile."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LayerProfile":
        """Read and validate a profile YAML; ConfigError if missing, malformed or invalid."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: layer profile not found")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        return cls.from_dict(data, where=str(path))

    @classmethod
    def from_dict(cls, data: Any, where: str = "<profile>") -> "LayerProfile":
        """Validate a parsed mapping into a profile; `where` names the source in errors."""
        return _parse_profile(data, where)

    # ------------------------------------------------------------------ checks
    def check_compatible(self, backbone: Any, where: str | None = None) -> "LayerProfile":
        """Refuse a profile written for another architecture (block or head counts differ)."""
        where = where or f"profile {self.name!r}"
        if self.family != backbone.family:
            raise ConfigError(f"{where}: written for family {self.family!r}, model is {backbone.family!r}")
        if self.num_blocks != backbone.num_blocks or self.num_heads != backbone.num_heads:
            raise ConfigError(
                f"{where}: written for {self.num_blocks} blocks x {self.num_heads} heads, the model has "
                f"{backbone.num_blocks} x {backbone.num_heads}; run `motionguide analyze-layers` for this model"
            )
        return self


class ProvisionalProfileWarning(UserWarning):
    """A provisional layer-profile section (not produced by `motionguide analyze-layers` on that model) is driving
    tracking or guidance."""


def warn_if_provisional(profile: LayerProfile, section: str, purpose: str) -> None:
    """Warn (once per profile, section and place) when `profile.<section>` is provisional and is about to drive
    `purpose` ("tracking", "correspondence guidance"), naming the command that replaces it.

    Provisional values are guesses (e.g. the relative depth of another model's published layers): a run on them
    works but may read or perturb the wrong blocks, so the user should know and have the remedy in hand.
    """
    values = getattr(profile, section, None)
    if values is None or not values.provisional:
        return
    model = profile.model or "MODEL"
    warnings.warn(
        f"layer profile {profile.name!r}: the {section} section driving {purpose} is provisional "
        f"({values.source or 'not analysed on this model'}). Run `motionguide analyze-layers --model {model} "
        f"--data CLIPS --out {profile.name}.yaml` and pass --profile {profile.name}.yaml (profile=) to replace it",
        ProvisionalProfileWarning, stacklevel=3,
    )


# ---------------------------------------------------------------------- parsing and validation
_SECTIONS = {"tracking": TrackingProfile, "guidance": GuidanceProfile, "imap": SaliencyProfile}
_TOP_KEYS = {f.name for f in dataclasses.fields(LayerProfile)}


def _parse_blocks(value: Any, where: str, num_blocks: int) -> list[int]:
    """Blocks as a list of ints and "a-b" inclusive ranges; each must lie in 0..num_blocks-1."""
    items = value if isinstance(value, list) else [value]
    blocks: list[int] = []
    for item in items:
        if isinstance(item, bool):
            raise ConfigError(f"{where}: block {item!r} is not an integer")
        if isinstance(item, int):
            blocks.append(item)
        elif isinstance(item, str) and "-" in item:
            lo, _, hi = item.partition("-")
            try:
                blocks.extend(range(int(lo), int(hi) + 1))
            except ValueError:
                raise ConfigError(f"{where}: bad block range {item!r}; write 'first-last', e.g. '5-19'") from None
        else:
            raise ConfigError(f"{where}: bad block {item!r}; use integers or 'first-last' ranges")
    if not blocks:
        raise ConfigError(f"{where}: no blocks given")
    for b in blocks:
        if not 0 <= b < num_blocks:
            raise ConfigError(f"{where}: block {b} is out of range; valid range is 0..{num_blocks - 1}")
    return sorted(dict.fromkeys(blocks))


def _require_int(value: Any, where: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{where}: {value} is out of range; valid range is {lo}..{hi}")
    return value


def _parse_section(name: str, data: Any, where: str, num_blocks: int, num_heads: int):
    cls = _SECTIONS[name]
    here = f"{where}: {name}"
    if not isinstance(data, dict):
        raise ConfigError(f"{here}: expected a mapping")
    valid = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in valid:
            raise ConfigError(unknown_key_message(key, valid, f"{where}: section {name!r}"))
    values = dict(data)
    if "block" in values:
        values["block"] = _require_int(values["block"], f"{here}.block", 0, num_blocks - 1)
    if "blocks" in values:
        values["blocks"] = _parse_blocks(values["blocks"], f"{here}.blocks", num_blocks)
    if "top_k" in values:
        values["top_k"] = _require_int(values["top_k"], f"{here}.top_k", 1, num_heads)
    for key in ("num_inference_steps",):
        if key in values:
            values[key] = _require_int(values[key], f"{here}.{key}", 1)
    steps = values.get("num_inference_steps", 50)
    if "step" in values:
        values["step"] = _require_int(values["step"], f"{here}.step", -steps, steps - 1)
    if "renoise_step" in values:
        values["renoise_step"] = _require_int(values["renoise_step"], f"{here}.renoise_step", 0, steps - 1)
    if "window" in values:
        w = values["window"]
        ok = isinstance(w, (list, tuple)) and len(w) == 2 and all(isinstance(x, (int, float)) for x in w)
        if not ok or not (0.0 <= w[0] < w[1] <= 1.0):
            raise ConfigError(
                f"{here}.window: {w!r} is not a valid timestep window; give [start, stop] as fractions of the "
                "sampling steps with 0 <= start < stop <= 1 (e.g. [0.0, 1.0] for all steps)"
            )
        values["window"] = (float(w[0]), float(w[1]))
    if "descriptor" in values and values["descriptor"] not in TRACKING_DESCRIPTORS:
        raise ConfigError(f"{here}.descriptor: {values['descriptor']!r} is not a tracking descriptor; use one of "
                          f"{', '.join(TRACKING_DESCRIPTORS)}")
    if "content_weight" in values and not (isinstance(values["content_weight"], (int, float))
                                           and values["content_weight"] > 0):
        raise ConfigError(f"{here}.content_weight: expected a positive number, got {values['content_weight']!r}")
    if "scale" in values and not isinstance(values["scale"], (int, float)):
        raise ConfigError(f"{here}.scale: expected a number, got {values['scale']!r}")
    try:
        return cls(**values)
    except TypeError as exc:
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in values]
        raise ConfigError(f"{here}: missing required key(s) {', '.join(missing)}") from exc


def _parse_profile(data: Any, where: str) -> LayerProfile:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a layer profile is a YAML mapping")
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(unknown_key_message(key, _TOP_KEYS, where))
    for key in ("name", "family", "num_blocks", "num_heads"):
        if key not in data:
            raise ConfigError(f"{where}: missing required key {key!r}")
    version = data.get("version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ConfigError(f"{where}: version {version!r} is not supported (this library reads {SCHEMA_VERSION})")
    num_blocks = _require_int(data["num_blocks"], f"{where}: num_blocks", 1)
    num_heads = _require_int(data["num_heads"], f"{where}: num_heads", 1)
    sections = {
        name: _parse_section(name, data[name], where, num_blocks, num_heads)
        for name in _SECTIONS
        if data.get(name) is not None
    }
    return LayerProfile(
        name=str(data["name"]),
        family=str(data["family"]),
        num_blocks=num_blocks,
        num_heads=num_heads,
        model=str(data.get("model", "")),
        produced_by=dict(data.get("produced_by") or {}),
        version=version,
        **sections,
    )


# ---------------------------------------------------------------------- shipped profiles
def shipped_profiles() -> dict[str, Path]:
    """Profiles that ship with the library, by name."""
    return {p.stem: p for p in sorted(PROFILE_DIR.glob("*.yaml"))}


def load_profile(name_or_path: str | os.PathLike) -> LayerProfile:
    """A shipped profile by name (e.g. "cogvideox-2b") or a profile file by path."""
    shipped = shipped_profiles()
    if str(name_or_path) in shipped:
        return LayerProfile.load(shipped[str(name_or_path)])
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return LayerProfile.load(path)
    raise ConfigError(
        f"no layer profile {str(name_or_path)!r}: give a YAML path or one of {', '.join(shipped) or '(none)'}"
    )


def default_profile_for(backbone: Any) -> LayerProfile:
    """The shipped profile with the backbone's family, block and head counts."""
    for path in shipped_profiles().values():
        profile = LayerProfile.load(path)
        if (profile.family, profile.num_blocks, profile.num_heads) == (
            backbone.family,
            backbone.num_blocks,
            backbone.num_heads,
        ):
            return profile
    raise ConfigError(
        f"no shipped layer profile for {backbone.family} with {backbone.num_blocks} blocks x "
        f"{backbone.num_heads} heads; pass --profile PATH or create one with `motionguide analyze-layers`"
    )
