"""Pictures for reports: frame grids, overlays, track drawings, line charts."""

from .grid import frame_grid, save_png
from .plot import line_chart

__all__ = ["frame_grid", "line_chart", "save_png"]
