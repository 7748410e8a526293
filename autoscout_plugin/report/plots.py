"""SVG plots for the reports: axes with readable ticks that never collapse to a point, reference lines,
bands and legends, written as inline SVG so that a report stays one self-contained file that opens
offline (no plotting library, no script).

Every plot is an `<svg class="plot">` with `data-title` and its numeric axes' ranges in `data-x-min`,
`data-x-max`, `data-y-min`, `data-y-max`; tick labels are `text.xtick` / `text.ytick`. The report's
browser test reads them to check that no axis is degenerate.

Example:
    >>> nice_axis([10.2, 10.2]).ticks[0] < 10.2 < nice_axis([10.2, 10.2]).ticks[-1]
    True
    >>> svg = Chart("Best so far", "trial", "samples/s").line([1, 2], [3.0, 4.0], label="best").render()
    >>> 'class="plot"' in svg and 'data-y-min="' in svg
    True
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

WIDTH, HEIGHT = 560, 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 62, 16, 46, 46
COLORS = {"blue": "#1f77b4", "red": "#d62728", "green": "#2ca02c", "grey": "#8c8c8c", "black": "#222",
          "orange": "#ff7f0e", "band": "#9ecae1"}


@dataclass(frozen=True, slots=True)
class Axis:
    """A numeric axis: its range and tick values (at least two, distinct)."""

    lo: float
    hi: float
    ticks: tuple[float, ...]

    def label(self, value: float) -> str:
        return fmt(value, self.ticks)


def fmt(value: float, ticks: Sequence[float] = ()) -> str:
    """A tick's text with as many digits as the tick spacing needs (`10`, `10.5`, `0.25`, `1.2e+06`)."""
    step = min((abs(b - a) for a, b in zip(ticks, ticks[1:]) if b != a), default=abs(value) or 1.0)
    if abs(value) >= 1e5 or 0 < abs(value) < 1e-3 or step < 1e-3:
        top = max((abs(t) for t in ticks), default=abs(value)) or step
        digits = max(2, min(15, math.floor(math.log10(top)) - math.floor(math.log10(step)) + 1))
        return f"{value:.{digits}g}"
    decimals = 0
    while decimals < 6 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
        decimals += 1
    text = f"{value:.{decimals}f}"
    return "0" if text.strip("-0.") == "" else text


def nice_axis(values: Sequence[float], *, zero: bool = False, integer: bool = False, target: int = 5) -> Axis:
    """An axis over `values` with round ticks (1, 2, 2.5 or 5 times a power of ten; whole numbers only
    with `integer`). Equal values get a range around them (±5%, or ±1 around 0), never a point; `zero`
    keeps 0 on the axis."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 1e-12 * max(abs(lo), abs(hi), 1.0):
        half = abs(lo) * 0.05 if abs(lo) > 1e-9 else 1.0
        lo, hi = lo - half, hi + half
    raw = (hi - lo) / max(target - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw and not (integer and m == 2.5))
    step = max(step, 1.0) if integer else step
    start, stop = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    stop = max(stop, start + step)  # a range far below one whole step (integer ticks) still spans one
    count = int(round((stop - start) / step))
    ticks = tuple(start + i * step for i in range(count + 1))
    return Axis(ticks[0], ticks[-1], ticks)


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


@dataclass
class Chart:
    """A plot with numeric x and y axes; add series, then `render()`.

    Series are drawn in the order added; each with a `label` gets a legend entry."""

    title: str
    xlabel: str
    ylabel: str
    caption: str = ""
    width: int = WIDTH
    height: int = HEIGHT
    zero_y: bool = False
    integer_x: bool = False
    _items: list[tuple[str, dict]] = field(default_factory=list)
    _xs: list[float] = field(default_factory=list)
    _ys: list[float] = field(default_factory=list)

    def line(self, xs: Sequence[float], ys: Sequence[float], *, label: str = "", color: str = "blue",
             step: bool = False, tips: Sequence[str] = ()) -> Chart:
        """A line through the points (`step`: a staircase, for best-so-far), with dots."""
        self._add("line", xs, ys, label=label, color=color, step=step, tips=list(tips))
        return self

    def points(self, xs: Sequence[float], ys: Sequence[float], *, label: str = "", color: str = "red",
               shape: str = "dot", tips: Sequence[str] = ()) -> Chart:
        """Markers: `dot`, `ring`, `square` or `cross`."""
        self._add("points", xs, ys, label=label, color=color, shape=shape, tips=list(tips))
        return self

    def hline(self, y: float, *, label: str = "", color: str = "black") -> Chart:
        """A dashed horizontal reference line."""
        self._items.append(("hline", {"y": y, "label": label, "color": color}))
        self._ys.append(y)
        return self

    def band(self, lo: float, hi: float, *, label: str = "", color: str = "band") -> Chart:
        """A shaded horizontal band from `lo` to `hi` (a noise band)."""
        self._items.append(("band", {"lo": lo, "hi": hi, "label": label, "color": color}))
        self._ys += [lo, hi]
        return self

    def diagonal(self, *, label: str = "y = x") -> Chart:
        """The y = x line over the shared range of both axes (predicted vs measured)."""
        self._items.append(("diagonal", {"label": label, "color": "grey"}))
        return self

    def _add(self, kind: str, xs: Sequence[float], ys: Sequence[float], **kw: object) -> None:
        if len(xs) != len(ys):
            raise ValueError(f"{len(xs)} x values for {len(ys)} y values")
        self._items.append((kind, {"xs": [float(x) for x in xs], "ys": [float(y) for y in ys], **kw}))
        self._xs += [float(x) for x in xs]
        self._ys += [float(y) for y in ys]

    @property
    def empty(self) -> bool:
        return not any(kind in ("line", "points") and data["xs"] for kind, data in self._items)

    def render(self) -> str:
        same = any(kind == "diagonal" for kind, _ in self._items)
        xvals, yvals = (self._xs + self._ys, self._xs + self._ys) if same else (self._xs, self._ys)
        xa, ya = nice_axis(xvals, integer=self.integer_x), nice_axis(yvals, zero=self.zero_y)
        x0, x1, y0, y1 = _LEFT, self.width - _RIGHT, self.height - _BOTTOM, _TOP

        def px(v: float) -> float:
            return x0 + (v - xa.lo) / (xa.hi - xa.lo) * (x1 - x0)

        def py(v: float) -> float:
            return y0 + (v - ya.lo) / (ya.hi - ya.lo) * (y1 - y0)

        out = _open(self, xa, ya)
        out += _grid(xa, ya, px, py, x0, x1, y0, y1, self.xlabel, self.ylabel, self.width, self.height)
        legend: list[tuple[str, str, str]] = []
        for kind, d in self._items:
            color = COLORS.get(d.get("color", ""), d.get("color", "#333"))
            if kind == "band":
                top, bottom = py(max(d["hi"], d["lo"])), py(min(d["hi"], d["lo"]))
                out.append(f'<rect x="{x0}" y="{top:.1f}" width="{x1 - x0}" height="{max(bottom - top, 1):.1f}"'
                           f' fill="{color}" fill-opacity="0.35"/>')
            elif kind == "hline":
                out.append(f'<line x1="{x0}" x2="{x1}" y1="{py(d["y"]):.1f}" y2="{py(d["y"]):.1f}" stroke="{color}"'
                           ' stroke-dasharray="6 4" stroke-width="1.5"/>')
            elif kind == "diagonal":
                lo, hi = max(xa.lo, ya.lo), min(xa.hi, ya.hi)
                out.append(f'<line x1="{px(lo):.1f}" y1="{py(lo):.1f}" x2="{px(hi):.1f}" y2="{py(hi):.1f}"'
                           f' stroke="{color}" stroke-dasharray="4 4"/>')
            elif kind == "line" and d["xs"]:
                pts = list(zip(map(px, d["xs"]), map(py, d["ys"])))
                if d["step"]:
                    path = [pts[0]]
                    for (_, ay), (bx, by) in zip(pts, pts[1:]):
                        path += [(bx, ay), (bx, by)]
                    pts_line = path
                else:
                    pts_line = pts
                out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                           + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts_line) + '"/>')
                out += [_marker("dot", x, y, color, tip) for (x, y), tip in _with_tips(pts, d["tips"])]
            elif kind == "points" and d["xs"]:
                pts = list(zip(map(px, d["xs"]), map(py, d["ys"])))
                out += [_marker(d["shape"], x, y, color, tip) for (x, y), tip in _with_tips(pts, d["tips"])]
            if d.get("label"):
                legend.append((kind if kind != "points" else d["shape"], color, d["label"]))
        if self.empty:
            out.append(f'<text x="{(x0 + x1) / 2}" y="{(y0 + y1) / 2}" text-anchor="middle" font-size="13"'
                       ' fill="#666">no successful measurement to plot</text>')
        out += _legend(legend, x0, self.width)
        out.append("</svg>")
        return _figure("\n".join(out), self.caption)


def _with_tips(pts: list[tuple[float, float]], tips: list[str]) -> list[tuple[tuple[float, float], str]]:
    return [(p, tips[i] if i < len(tips) else "") for i, p in enumerate(pts)]


def _marker(shape: str, x: float, y: float, color: str, tip: str) -> str:
    title = f"<title>{_esc(tip)}</title>" if tip else ""
    if shape == "ring":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="none" stroke="{color}" stroke-width="2">{title}</circle>'
    if shape == "square":
        return f'<rect x="{x - 4.5:.1f}" y="{y - 4.5:.1f}" width="9" height="9" fill="{color}">{title}</rect>'
    if shape == "cross":
        return (f'<path d="M{x - 4:.1f},{y - 4:.1f}L{x + 4:.1f},{y + 4:.1f}M{x - 4:.1f},{y + 4:.1f}L{x + 4:.1f},'
                f'{y - 4:.1f}" stroke="{color}" stroke-width="2">{title}</path>')
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}">{title}</circle>'


def _open(chart: Chart | Bars, xa: Axis | None, ya: Axis | None) -> list[str]:
    attrs = f'data-title="{_esc(chart.title)}"'
    for name, axis in (("x", xa), ("y", ya)):
        if axis is not None:
            attrs += f' data-{name}-min="{axis.lo:.6g}" data-{name}-max="{axis.hi:.6g}"'
    return [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {chart.width} {chart.height}"'
            f' role="img" {attrs}>', f"<title>{_esc(chart.title)}</title>",
            f'<text x="{chart.width / 2}" y="16" text-anchor="middle" font-size="14" font-weight="bold">'
            f"{_esc(chart.title)}</text>"]


def _grid(xa: Axis | None, ya: Axis | None, px, py, x0: float, x1: float, y0: float, y1: float,  # noqa: ANN001
          xlabel: str, ylabel: str, width: float, height: float) -> list[str]:
    out = []
    if xa is not None:
        for t in xa.ticks:
            out.append(f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{y1}" y2="{y0}" stroke="#eee"/>')
            out.append(f'<text class="xtick" x="{px(t):.1f}" y="{y0 + 15}" text-anchor="middle" font-size="11">'
                       f"{xa.label(t)}</text>")
    if ya is not None:
        for t in ya.ticks:
            out.append(f'<line x1="{x0}" x2="{x1}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>')
            out.append(f'<text class="ytick" x="{x0 - 6}" y="{py(t) + 4:.1f}" text-anchor="end" font-size="11">'
                       f"{ya.label(t)}</text>")
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#444"/>')
    out.append(f'<line x1="{x0}" y1="{y1}" x2="{x0}" y2="{y0}" stroke="#444"/>')
    out.append(f'<text x="{(x0 + x1) / 2}" y="{height - 8}" text-anchor="middle" font-size="12">{_esc(xlabel)}</text>')
    if ylabel:
        out.append(f'<text x="14" y="{(y0 + y1) / 2}" font-size="12" text-anchor="middle"'
                   f' transform="rotate(-90 14 {(y0 + y1) / 2})">{_esc(ylabel)}</text>')
    return out


def _legend(entries: list[tuple[str, str, str]], x0: float, width: float) -> list[str]:
    """Legend entries in a row (or two) under the title."""
    out, x, y = [], x0, 32
    for kind, color, label in entries:
        size = 26 + 6.4 * len(label)
        if x + size > width - 8 and x > x0:
            x, y = x0, y + 13
        if kind == "band":
            out.append(f'<rect x="{x}" y="{y - 8}" width="16" height="10" fill="{color}" fill-opacity="0.35"/>')
        elif kind in ("line", "hline", "diagonal"):
            dash = ' stroke-dasharray="5 3"' if kind != "line" else ""
            out.append(f'<line x1="{x}" x2="{x + 16}" y1="{y - 3}" y2="{y - 3}" stroke="{color}"'
                       f' stroke-width="2"{dash}/>')
        else:
            out.append(_marker(kind, x + 8, y - 3, color, ""))
        out.append(f'<text x="{x + 20}" y="{y + 1}" font-size="11">{_esc(label)}</text>')
        x += size
    return out


def _figure(svg: str, caption: str) -> str:
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure class="chart">{svg}{cap}</figure>'


@dataclass
class Bars:
    """Horizontal bars with a numeric x axis: importances (from 0) or effects (either side of 0)."""

    title: str
    xlabel: str
    labels: Sequence[str]
    values: Sequence[float]
    caption: str = ""
    tips: Sequence[str] = ()
    colors: Sequence[str] = ()
    width: int = WIDTH

    @property
    def height(self) -> int:
        return max(160, _TOP + _BOTTOM + 22 * len(self.labels))

    def render(self) -> str:
        labels = [str(label) for label in self.labels]
        left = min(230, 16 + 6.6 * max((len(label) for label in labels), default=4))
        xa = nice_axis(list(self.values), zero=True, target=5)
        x0, x1, y0, y1 = left, self.width - _RIGHT - 40, self.height - _BOTTOM, _TOP

        def px(v: float) -> float:
            return x0 + (v - xa.lo) / (xa.hi - xa.lo) * (x1 - x0)

        out = _open(self, xa, None)
        out += _grid(xa, None, px, None, x0, x1, y0, y1, self.xlabel, "", self.width, self.height)
        for i, (label, value) in enumerate(zip(labels, self.values)):
            y = y1 + 4 + 22 * i
            color = COLORS.get(self.colors[i], self.colors[i]) if i < len(self.colors) else COLORS["green"]
            start, end = sorted((px(0.0), px(value)))
            tip = self.tips[i] if i < len(self.tips) else f"{label}: {value:.3g}"
            out.append(f'<text class="ylabel" x="{x0 - 6}" y="{y + 12}" font-size="11" text-anchor="end">'
                       f"{_esc(label if len(label) <= 34 else label[:33] + '…')}<title>{_esc(label)}</title></text>")
            out.append(f'<rect x="{start:.1f}" y="{y}" width="{max(end - start, 1.5):.1f}" height="15" fill="{color}">'
                       f"<title>{_esc(tip)}</title></rect>")
            text_x = end + 4  # right of the bar; a negative bar ends at zero
            out.append(f'<text x="{text_x:.1f}" y="{y + 12}" font-size="10" text-anchor="start">'
                       f"{_esc(self._value_text(value))}</text>")
        if not labels:
            out.append(f'<text x="{(x0 + x1) / 2}" y="{(y0 + y1) / 2}" text-anchor="middle" font-size="13"'
                       ' fill="#666">nothing to show</text>')
        out.append("</svg>")
        return _figure("\n".join(out), self.caption)

    def _value_text(self, value: float) -> str:
        return f"{value:+.1f}%" if "%" in self.xlabel else f"{value:.2f}"


__all__ = ["Axis", "Bars", "Chart", "COLORS", "fmt", "nice_axis"]
