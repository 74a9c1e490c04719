"""A dependency-free line chart (PIL only) for reports: loss curves and monitor scalars."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from PIL import Image, ImageDraw

_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def line_chart(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str = "",
               size: tuple[int, int] = (480, 240)) -> Image.Image:
    """One line per name: (xs, ys). Axes span all finite points; min and max are written on the axes."""
    width, height = size
    left, right, top, bottom = 48, 12, 22, 28
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    points = [(float(x), float(y)) for xs, ys in series.values() for x, y in zip(xs, ys)
              if math.isfinite(float(x)) and math.isfinite(float(y))]
    draw.text((left, 4), title, fill=(0, 0, 0))
    draw.rectangle([left, top, width - right, height - bottom], outline=(160, 160, 160))
    if not points:
        draw.text((left + 8, top + 8), "no data", fill=(0, 0, 0))
        return image
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-9)

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (width - left - right),
                height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom))

    for index, (name, (xs, ys)) in enumerate(series.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        line = [at(float(x), float(y)) for x, y in zip(xs, ys) if math.isfinite(float(x)) and math.isfinite(float(y))]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        elif line:
            draw.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2], fill=colour)
        draw.text((width - right - 140, top + 4 + 12 * index), name, fill=colour)
    draw.text((2, top), f"{y1:.3g}", fill=(0, 0, 0))
    draw.text((2, height - bottom - 10), f"{y0:.3g}", fill=(0, 0, 0))
    draw.text((left, height - bottom + 4), f"{x0:g}", fill=(0, 0, 0))
    draw.text((width - right - 40, height - bottom + 4), f"{x1:g}", fill=(0, 0, 0))
    return image
