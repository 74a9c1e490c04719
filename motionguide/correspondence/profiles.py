"""Finding the layer profile a correspondence method runs with, with errors that say how to get one."""

from __future__ import annotations

import copy
import os

from ..backbones import LayerProfile, VideoBackbone, load_profile
from ..errors import ConfigError


def resolve_profile(backbone: VideoBackbone, profile: str | os.PathLike | LayerProfile | None,
                    purpose: str) -> LayerProfile:
    """`profile` as given (name, YAML path or LayerProfile) or the backbone's shipped default, checked against
    the model. `purpose` names what needs it, for the error message."""
    if profile is None:
        try:
            return backbone.default_profile()
        except ConfigError as exc:
            raise ConfigError(
                f"{purpose} needs a layer profile and none ships for this model ({exc}). Run "
                "`motionguide analyze-layers` for it, or pass --profile PATH (a YAML LayerProfile)"
            ) from None
    if not isinstance(profile, LayerProfile):
        profile = load_profile(profile)
    return profile.check_compatible(backbone)


def default_tracking_timestep(backbone: VideoBackbone, profile: LayerProfile) -> float:
    """The profile's tracking step turned into a transformer timestep with the model's own scheduler."""
    if profile.tracking is None:
        raise ConfigError(f"profile {profile.name!r} has no `tracking` section; pass block= and timestep=")
    if backbone.scheduler is None or not hasattr(backbone.scheduler, "set_timesteps"):
        raise ValueError("no scheduler attached to turn the profile's tracking step into a timestep; pass timestep=")
    scheduler = copy.deepcopy(backbone.scheduler)
    scheduler.set_timesteps(profile.tracking.num_inference_steps)
    return float(scheduler.timesteps[profile.tracking.step])
