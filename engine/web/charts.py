"""The console's charts: line, bar and histogram as server-side SVG (no script, no network).

Each chart returns `markupsafe.Markup` to drop into a template.  Every label is escaped; every
point or bar carries a `<title>` (the browser's hover text); the `<svg>` has `role="img"` and
an `aria-label`.  No `style` attribute (the console's Content-Security-Policy forbids inline
styles): colours are presentation attributes and classes that static/app.css may restyle.  A
chart with nothing to draw says so instead of drawing empty axes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 44
PALETTE = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b7791f", "#c53030")
NO_DATA = "No data for this period"


@dataclass(frozen=True, slots=True)
class Frame:
    """A chart's outer size and its plot area (SVG user units)."""

    width: int = WIDTH
    height: int = HEIGHT

    @property
    def plot_width(self) -> float:
        return self.width - LEFT - RIGHT

    @property
    def plot_height(self) -> float:
        return self.height - TOP - BOTTOM

    def y(self, value: float, top: float) -> float:
        """The SVG y of a value on an axis from 0 to `top`."""
        return TOP + self.plot_height * (1 - (value / top if top else 0))


def nice_top(value: float) -> float:
    """The y axis's top: the smallest 1, 2, 2.5 or 5 times a power of ten at or above `value`."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


DEFAULT_FRAME = Frame()


def _number(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))


def _open(frame: Frame, title: str, kind: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{kind}" role="img" '
            f'aria-label="{escape(title)}" viewBox="0 0 {frame.width} {frame.height}" '
            f'width="{frame.width}" height="{frame.height}"><title>{escape(title)}</title>')


def _empty(frame: Frame, title: str, kind: str, message: str) -> Markup:
    return Markup(_open(frame, title, kind)
                  + f'<text class="chart-empty" x="{frame.width / 2:g}" '
                  f'y="{frame.height / 2:g}" text-anchor="middle">{escape(message)}</text>'
                  "</svg>")


def _axes(frame: Frame, top: float, x_label: str, y_label: str) -> str:
    """The y axis with ticks at 0, ¼ … top (grid lines), the x axis, and both axis labels."""
    parts = []
    for i in range(5):
        value = top * i / 4
        y = frame.y(value, top)
        parts.append(f'<line class="chart-grid" x1="{LEFT}" x2="{frame.width - RIGHT}" '
                     f'y1="{y:g}" y2="{y:g}" stroke="#e2e8f0"/>'
                     f'<text class="chart-tick" x="{LEFT - 4}" y="{y + 4:g}" '
                     f'text-anchor="end" font-size="10">{_number(round(value, 2))}</text>')
    bottom = frame.height - BOTTOM
    parts.append(f'<line class="chart-axis" x1="{LEFT}" x2="{frame.width - RIGHT}" '
                 f'y1="{bottom}" y2="{bottom}" stroke="#4a5568"/>'
                 f'<line class="chart-axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{bottom}" '
                 f'stroke="#4a5568"/>')
    parts.append(f'<text class="chart-label chart-x-label" x="{LEFT + frame.plot_width / 2:g}" '
                 f'y="{frame.height - 4}" text-anchor="middle" font-size="11">'
                 f'{escape(x_label)}</text>')
    mid = TOP + frame.plot_height / 2
    parts.append(f'<text class="chart-label chart-y-label" x="12" y="{mid:g}" '
                 f'text-anchor="middle" font-size="11" transform="rotate(-90 12 {mid:g})">'
                 f'{escape(y_label)}</text>')
    return "".join(parts)


def _x_tick(frame: Frame, x: float, label: str) -> str:
    return (f'<text class="chart-tick chart-x-tick" x="{x:g}" y="{frame.height - BOTTOM + 14}" '
            f'text-anchor="middle" font-size="10">{escape(label)}</text>')


def _bars(frame: Frame, bars: Sequence[tuple[str, float]], top: float, gap: float,
          unit: str) -> str:
    slot = frame.plot_width / len(bars)
    every = max(1, math.ceil(len(bars) / 12))  # at most ~12 x labels, so they never overlap
    parts = []
    for i, (label, value) in enumerate(bars):
        x, y = LEFT + i * slot + gap / 2, frame.y(value, top)
        height = frame.height - BOTTOM - y
        parts.append(f'<rect class="chart-bar" x="{x:g}" y="{y:g}" width="{slot - gap:g}" '
                     f'height="{height:g}" fill="{PALETTE[0]}"><title>{escape(label)}: '
                     f'{_number(value)}{escape(unit)}</title></rect>')
        if i % every == 0:
            parts.append(_x_tick(frame, LEFT + (i + 0.5) * slot, label))
    return "".join(parts)


def bar_chart(bars: Sequence[tuple[str, float]], *, title: str, x_label: str = "",
              y_label: str = "", unit: str = "", top: float | None = None,
              frame: Frame = DEFAULT_FRAME) -> Markup:
    """Bars of `(label, value)` (values ≥ 0), from 0 up to `top` (default: a round number at or
    above the largest value)."""
    if not bars:
        return _empty(frame, title, "bar", NO_DATA)
    axis_top = top if top is not None else nice_top(max(value for _, value in bars))
    slot = frame.plot_width / len(bars)
    return Markup(_open(frame, title, "bar") + _axes(frame, axis_top, x_label, y_label)
                  + _bars(frame, bars, axis_top, min(8.0, slot * 0.2), unit) + "</svg>")


def buckets(values: Sequence[float], edges: Sequence[float]) -> list[tuple[str, float]]:
    """Counts of `values` in `[edges[i], edges[i+1])`, labelled `a–b`, then a last open bucket
    `≥ last edge`; values below the first edge count in the first bucket."""
    counts = [0] * len(edges)
    for value in values:
        index = max(0, sum(1 for edge in edges if value >= edge) - 1)
        counts[index] += 1
    labels = [f"{_number(a)}–{_number(b)}" for a, b in zip(edges, edges[1:], strict=False)]
    labels.append(f"≥ {_number(edges[-1])}")
    return list(zip(labels, [float(c) for c in counts], strict=True))


def histogram(values_or_buckets: Sequence[float] | Sequence[tuple[str, float]], *, title: str,
              edges: Sequence[float] = (0, 7, 14, 28, 56, 90), x_label: str = "",
              y_label: str = "count", frame: Frame = DEFAULT_FRAME) -> Markup:
    """A histogram: either raw values (bucketed by `edges`) or ready `(label, count)` buckets;
    adjacent bars without gaps."""
    if not values_or_buckets:
        return _empty(frame, title, "histogram", NO_DATA)
    counted: list[tuple[str, float]] = []
    raw: list[float] = []
    for item in values_or_buckets:
        if isinstance(item, tuple):
            counted.append((str(item[0]), float(item[1])))
        else:
            raw.append(float(item))
    if raw:
        counted = buckets(raw, edges)
    axis_top = max(4.0, nice_top(max(count for _, count in counted)))  # whole-number ticks
    return Markup(_open(frame, title, "histogram") + _axes(frame, axis_top, x_label, y_label)
                  + _bars(frame, counted, axis_top, 1.0, "") + "</svg>")


def _line(frame: Frame, name: str, points: Sequence[tuple[str, float | None]], top: float,
          colour: str, unit: str) -> str:
    slot = frame.plot_width / max(1, len(points) - 1)
    coords = [(LEFT + i * slot if len(points) > 1 else LEFT + frame.plot_width / 2,
               frame.y(value, top), label, value)
              for i, (label, value) in enumerate(points) if value is not None]
    path = " ".join(f"{x:g},{y:g}" for x, y, _, _ in coords)
    parts = [f'<polyline class="chart-line" points="{path}" fill="none" stroke="{colour}" '
             f'stroke-width="2"><title>{escape(name)}</title></polyline>']
    parts.extend(f'<circle class="chart-point" cx="{x:g}" cy="{y:g}" r="3" fill="{colour}">'
                 f'<title>{escape(name)} {escape(label)}: {_number(value)}{escape(unit)}'
                 f'</title></circle>' for x, y, label, value in coords)
    return "".join(parts)


def line_chart(series: Mapping[str, Sequence[tuple[str, float | None]]], *, title: str,
               x_label: str = "", y_label: str = "", unit: str = "", top: float | None = None,
               frame: Frame = DEFAULT_FRAME) -> Markup:
    """Lines, one per named series of `(x label, value)` points (None: a gap, no point); the x
    labels are the first series'.  More than one series gets a legend."""
    values = [v for points in series.values() for _, v in points if v is not None]
    if not values:
        return _empty(frame, title, "line", NO_DATA)
    axis_top = top if top is not None else nice_top(max(values))
    first = next(iter(series.values()))
    slot = frame.plot_width / max(1, len(first) - 1)
    every = max(1, math.ceil(len(first) / 12))
    parts = [_open(frame, title, "line"), _axes(frame, axis_top, x_label, y_label)]
    parts.extend(_x_tick(frame, LEFT + i * slot if len(first) > 1 else
                         LEFT + frame.plot_width / 2, label)
                 for i, (label, _) in enumerate(first) if i % every == 0)
    for n, (name, points) in enumerate(series.items()):
        colour = PALETTE[n % len(PALETTE)]
        parts.append(_line(frame, name, points, axis_top, colour, unit))
        if len(series) > 1:
            parts.append(f'<text class="chart-legend" x="{LEFT + 8 + 120 * n}" y="{TOP + 10}" '
                         f'font-size="11" fill="{colour}">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
