"""What a toy clip contains: objects, background, camera and planted defect, validated on creation."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from motionguide.toy.vocab import (
    BACKGROUNDS, COLORS, DEFECTS, DIRECTIONS, MOTIONS, SHAPES, SPEEDS, check_name, turn_name,
)

__all__ = ["ObjectSpec", "ClipSpec"]


@dataclass(frozen=True)
class ObjectSpec:
    """One shape. It moves on the frames f in [motion_start, motion_stop) (f >= 1), i.e. between frame
    f-1 and f, by `speed` px/frame in direction `motion`; `motion_stop=None` means until the clip ends.
    `start_xy` is the centre (x, y) at frame 0 in pixels, pixel centres at integer coordinates.

    A turn ("moves right then left"): with `turn_motion` set, the object moves `motion` on the moving frames
    before `turn_frame` and `turn_motion` from `turn_frame` on (same speed), so its position on frame
    `turn_frame - 1` is the apex. Both are None for a straight motion (and then left out of `ClipSpec.to_dict`,
    so specs written before turns existed read and serialise unchanged)."""

    shape: str
    color: str
    motion: str
    speed: str = "normal"
    radius: float = 7.0
    start_xy: tuple[float, float] = (32.0, 32.0)
    motion_start: int = 0
    motion_stop: int | None = None
    turn_motion: str | None = None
    turn_frame: int | None = None

    def __post_init__(self) -> None:
        check_name("shape", self.shape, SHAPES)
        check_name("color", self.color, COLORS)
        check_name("motion", self.motion, MOTIONS)
        check_name("speed", self.speed, SPEEDS)
        if not (self.radius > 0 and math.isfinite(self.radius)):
            raise ValueError(f"radius must be a positive number of pixels, got {self.radius!r}")
        if len(self.start_xy) != 2:
            raise ValueError(f"start_xy must be (x, y), got {self.start_xy!r}")
        object.__setattr__(self, "start_xy", (float(self.start_xy[0]), float(self.start_xy[1])))
        if self.motion_start < 0:
            raise ValueError(f"motion_start must be >= 0, got {self.motion_start}")
        if self.motion_stop is not None and self.motion_stop <= self.motion_start:
            raise ValueError(f"motion_stop ({self.motion_stop}) must be > motion_start ({self.motion_start}) "
                             "or None for 'until the end'")
        if (self.turn_motion is None) != (self.turn_frame is None):
            raise ValueError("a turn needs both turn_motion and turn_frame (or neither for a straight motion), got "
                             f"turn_motion={self.turn_motion!r}, turn_frame={self.turn_frame!r}")
        if self.turn_motion is not None:
            if self.motion == "still":
                raise ValueError(f"a 'still' object cannot turn {self.turn_motion!r}; give it a motion first")
            check_name("turn_motion", self.turn_motion, [m for m in MOTIONS if m not in ("still", self.motion)])
            if int(self.turn_frame) != self.turn_frame:
                raise ValueError(f"turn_frame must be a frame index, got {self.turn_frame!r}")
            object.__setattr__(self, "turn_frame", int(self.turn_frame))
            first_moving = max(1, self.motion_start)
            before_stop = self.motion_stop is None or self.turn_frame < self.motion_stop
            if not (first_moving < self.turn_frame and before_stop):
                raise ValueError(f"turn_frame {self.turn_frame} must leave moving frames on both sides: after frame "
                                 f"{first_moving} and before motion_stop ({self.motion_stop})")

    @property
    def speed_px(self) -> float:
        """Intended speed in px/frame while moving (0 for "still")."""
        return 0.0 if self.motion == "still" else SPEEDS[self.speed]

    @property
    def velocity(self) -> tuple[float, float]:
        """Intended (vx, vy) in px/frame while moving, image coordinates (y down)."""
        ux, uy = DIRECTIONS[self.motion]
        return (ux * self.speed_px, uy * self.speed_px)

    @property
    def motion_name(self) -> str:
        """The caption's motion phrase: `motion`, or e.g. "right then left" for a turn."""
        return self.motion if self.turn_motion is None else turn_name(self.motion, self.turn_motion)

    def frame_velocities(self, num_frames: int) -> np.ndarray:
        """float [F, 2]: intended (vx, vy) between frame f-1 and f on the moving frames, 0 elsewhere (a turn
        switches direction on `turn_frame`)."""
        moving = self.moving_frames(num_frames)[:, None]
        if self.turn_motion is None:
            return moving * np.asarray(self.velocity, dtype=np.float64)[None, :]
        ux, uy = DIRECTIONS[self.turn_motion]
        after = np.asarray((ux * self.speed_px, uy * self.speed_px), dtype=np.float64)
        before = np.asarray(self.velocity, dtype=np.float64)
        turned = (np.arange(num_frames) >= self.turn_frame)[:, None]
        return moving * np.where(turned, after[None, :], before[None, :])

    def moving_frames(self, num_frames: int) -> np.ndarray:
        """bool [F]: does the object move (as intended) between frame f-1 and f; frame 0 is False."""
        frames = np.arange(num_frames)
        stop = num_frames if self.motion_stop is None else self.motion_stop
        moving = (frames >= max(1, self.motion_start)) & (frames < stop)
        return moving if self.motion != "still" else np.zeros(num_frames, dtype=bool)


@dataclass(frozen=True)
class ClipSpec:
    """A whole clip. `camera_pan` is the image-space shift (dx, dy) px/frame of the entire scene
    (background and objects); `defect` is planted on `objects[defect_object]` and never changes the
    caption; `seed` drives the background texture and the defect's randomness."""

    objects: tuple[ObjectSpec, ...]
    background: str = "plain"
    camera_pan: tuple[float, float] | None = None
    defect: str | None = None
    num_frames: int = 17
    height: int = 64
    width: int = 64
    seed: int = 0
    defect_object: int = 0

    def __post_init__(self) -> None:
        objects = tuple(self.objects)
        if not objects or not all(isinstance(o, ObjectSpec) for o in objects):
            raise ValueError("objects must be a non-empty sequence of ObjectSpec")
        object.__setattr__(self, "objects", objects)
        check_name("background", self.background, BACKGROUNDS)
        if self.defect is not None:
            check_name("defect", self.defect, DEFECTS)
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {self.num_frames}")
        if self.height < 8 or self.width < 8:
            raise ValueError(f"height and width must be >= 8 px, got {self.height}x{self.width}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        if self.camera_pan is not None:
            if len(self.camera_pan) != 2:
                raise ValueError(f"camera_pan must be (dx, dy) px/frame or None, got {self.camera_pan!r}")
            object.__setattr__(self, "camera_pan", (float(self.camera_pan[0]), float(self.camera_pan[1])))
        for index, obj in enumerate(objects):
            if obj.motion != "still" and not obj.moving_frames(self.num_frames).any():
                window = f"[{obj.motion_start}, {obj.motion_stop})"
                raise ValueError(f"object {index} moves {obj.motion!r} but its motion window {window} "
                                 f"holds none of frames 1..{self.num_frames - 1}")
            if obj.turn_frame is not None and obj.turn_frame >= self.num_frames:
                raise ValueError(f"object {index} turns on frame {obj.turn_frame}, but the clip ends on frame "
                                 f"{self.num_frames - 1}; turn earlier or use more frames")
        if not 0 <= self.defect_object < len(objects):
            raise ValueError(f"defect_object {self.defect_object} is not an index into {len(objects)} objects")
        if self.defect == "camera_pan" and self.camera_pan is None:
            raise ValueError("defect 'camera_pan' needs camera_pan=(dx, dy) px/frame")
        if self.defect in ("static", "reversed") and objects[self.defect_object].motion == "still":
            raise ValueError(f"defect {self.defect!r} needs a moving object, but object "
                             f"{self.defect_object} is captioned 'still'")

    @property
    def pan(self) -> tuple[float, float]:
        """camera_pan with None read as no pan."""
        return self.camera_pan if self.camera_pan is not None else (0.0, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ClipSpec.from_dict inverts it. Straight objects carry no turn keys."""
        data = asdict(self)
        for obj in data["objects"]:
            if obj["turn_motion"] is None and obj["turn_frame"] is None:
                del obj["turn_motion"], obj["turn_frame"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClipSpec":
        """Rebuild a spec from `to_dict()` output (lists back to tuples, objects to ObjectSpec)."""
        data = dict(data)
        data["objects"] = tuple(ObjectSpec(**{**o, "start_xy": tuple(o["start_xy"])}) for o in data["objects"])
        if data.get("camera_pan") is not None:
            data["camera_pan"] = tuple(data["camera_pan"])
        return cls(**data)
