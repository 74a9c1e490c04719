"""Pictures for reports: frame grids, overlays, track drawings."""

from .grid import frame_grid, save_png

__all__ = ["frame_grid", "save_png"]
