"""The HTML report: one self-contained page with inline SVG plots (no plotting library needed).

Plots: best-so-far by trial and by profiling seconds, knob importance, predicted vs measured.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..failures import Exclusion
from .result import TuneResult, format_config, status_label

_W, _H, _PAD = 420, 240, 40


def _scale(values: Sequence[float], lo_px: float, hi_px: float) -> list[float]:
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return [lo_px + (v - lo) / span * (hi_px - lo_px) for v in values]


def _axes(title: str, xlabel: str, ylabel: str, xs: Sequence[float], ys: Sequence[float]) -> list[str]:
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" role="img">',
           f"<title>{html.escape(title)}</title>",
           f'<text x="{_W / 2}" y="14" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
           f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - 10}" y2="{_H - _PAD}" stroke="black"/>',
           f'<line x1="{_PAD}" y1="24" x2="{_PAD}" y2="{_H - _PAD}" stroke="black"/>',
           f'<text x="{_W / 2}" y="{_H - 8}" text-anchor="middle" font-size="11">{html.escape(xlabel)}</text>',
           f'<text x="12" y="{_H / 2}" font-size="11" transform="rotate(-90 12 {_H / 2})"'
           f' text-anchor="middle">{html.escape(ylabel)}</text>']
    if xs and ys:
        for value, y in ((min(ys), _H - _PAD), (max(ys), 24)):
            out.append(f'<text x="{_PAD - 3}" y="{y + 4}" font-size="9" text-anchor="end">{value:.3g}</text>')
        for value, x in ((min(xs), _PAD), (max(xs), _W - 10)):
            out.append(f'<text x="{x}" y="{_H - _PAD + 12}" font-size="9" text-anchor="middle">{value:.3g}</text>')
    return out


def line_plot(title: str, xlabel: str, ylabel: str, xs: Sequence[float], ys: Sequence[float]) -> str:
    """A step line of `ys` against `xs` as an SVG element."""
    out = _axes(title, xlabel, ylabel, xs, ys)
    if xs:
        px = _scale(list(xs) + [min(xs)], _PAD, _W - 10)[: len(xs)]
        py = _scale(ys, _H - _PAD, 24)
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(px, py))
        out.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{points}"/>')
        out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#1f77b4"/>' for x, y in zip(px, py)]
    out.append("</svg>")
    return "\n".join(out)


def scatter_plot(title: str, xlabel: str, ylabel: str, xs: Sequence[float], ys: Sequence[float]) -> str:
    """Points with the y = x diagonal (for predicted vs measured)."""
    both = list(xs) + list(ys)
    out = _axes(title, xlabel, ylabel, both, both)
    if xs:
        px = _scale(list(xs) + list(ys), _PAD, _W - 10)[: len(xs)]
        py = _scale(list(ys) + list(xs), _H - _PAD, 24)[: len(ys)]
        out.append(f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - 10}" y2="24" stroke="#aaa" stroke-dasharray="4"/>')
        out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#d62728"/>' for x, y in zip(px, py)]
    out.append("</svg>")
    return "\n".join(out)


def bar_plot(title: str, labels: Sequence[str], values: Sequence[float]) -> str:
    """Horizontal bars (knob importance)."""
    height = max(_H, 30 + 22 * len(labels))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" role="img">',
           f"<title>{html.escape(title)}</title>",
           f'<text x="{_W / 2}" y="14" text-anchor="middle" font-size="13">{html.escape(title)}</text>']
    top = max(values, default=0.0) or 1.0
    for i, (label, value) in enumerate(zip(labels, values)):
        y = 26 + 22 * i
        width = max(1.0, value / top * (_W - 190))
        out.append(f'<text x="150" y="{y + 13}" font-size="11" text-anchor="end">{html.escape(label)}</text>')
        out.append(f'<rect x="155" y="{y}" width="{width:.1f}" height="16" fill="#2ca02c"/>')
        out.append(f'<text x="{160 + width:.1f}" y="{y + 13}" font-size="10">{value:.2f}</text>')
    out.append("</svg>")
    return "\n".join(out)


def best_so_far(result: TuneResult) -> tuple[list[float], list[float], list[float]]:
    """(trial numbers, cumulative profiling seconds, best value so far) over the successful trials."""
    numbers, seconds, best = [], [], []
    spent, top = 0.0, None
    for i, trial in enumerate(result.trials, 1):
        spent += trial.cost_s
        if trial.ok and trial.value is not None:
            top = trial.value if top is None else max(top, trial.value)
        if top is not None:
            numbers.append(float(i))
            seconds.append(spent)
            best.append(top)
    return numbers, seconds, best


def render_html(result: TuneResult, *, title: str = "AutoScout report", notes: dict[str, Any] | None = None) -> str:
    """The report page for `result`; `notes` (pinned/tuned/applied knobs, recommendations) is shown as a list."""
    numbers, seconds, best = best_so_far(result)
    predicted = [(t.predicted, t.value) for t in result.trials
                 if t.ok and t.value is not None and t.predicted is not None]
    importances = sorted(result.importances.items(), key=lambda kv: -kv[1])
    rows = []
    for t in result.trials:
        value = f"{t.value:.2f}" if t.value is not None else "-"
        pred = f"{t.predicted:.2f}" if t.predicted is not None else "-"
        rows.append(f"<tr><td>{t.number}</td><td>{t.fidelity.value}</td><td>{html.escape(status_label(t))}</td>"
                    f"<td>{value}</td><td>{pred}</td><td>{t.cost_s:.1f}</td>"
                    f"<td><code>{html.escape(format_config(t.config))}</code></td>"
                    f"<td>{html.escape(t.error or '')}</td></tr>")
    items = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(json.dumps(v, default=str))}</li>"
                    for k, v in (notes or {}).items())
    excluded = "".join(f"<li><b>{html.escape(Exclusion.from_json(ex).describe())}</b>: {html.escape(ex['reason'])}</li>"
                       for ex in result.exclusions)
    if excluded:
        items += f"<li><b>excluded after an unsupported failure</b><ul>{excluded}</ul></li>"
    plots = [line_plot("Best so far by trial", "trial", "samples/s", numbers, best),
             line_plot("Best so far by profiling seconds", "seconds", "samples/s", seconds, best),
             bar_plot("Knob importance", [k for k, _ in importances], [v for _, v in importances]),
             scatter_plot("Predicted vs measured", "predicted samples/s", "measured samples/s",
                          [p for p, _ in predicted], [m for _, m in predicted])]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
            "svg{margin:6px;border:1px solid #eee}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><pre>{html.escape(result.table())}</pre><ul>{items}</ul>"
            f"<div>{''.join(plots)}</div>"
            "<h2>Trials</h2><table><tr><th>#</th><th>fidelity</th><th>status (failure class)</th><th>samples/s</th>"
            f"<th>predicted</th><th>cost s</th><th>config</th><th>error</th></tr>{''.join(rows)}</table>"
            "</body></html>")


def report_paths(path: str | Path) -> tuple[Path, Path]:
    """The JSON and HTML files of report `path`: `.json`/`.html` appended, or put in place of a `.json`
    or `.html` ending; any other dot is part of the name.

    Example:
        >>> [p.name for p in report_paths("runs/lr_0.001")] + [p.name for p in report_paths("exp.html")]
        ['lr_0.001.json', 'lr_0.001.html', 'exp.json', 'exp.html']
    """
    base = Path(path)
    name = base.name[:-5] if base.suffix in (".json", ".html") else base.name
    return base.with_name(f"{name}.json"), base.with_name(f"{name}.html")


def write_report(result: TuneResult, path: str | Path, *, notes: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write the report's JSON and HTML files (`report_paths(path)`)."""
    json_path, html_path = report_paths(path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    data = result.to_json()
    data["notes"] = notes or {}
    json_path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    html_path.write_text(render_html(result, notes=notes), encoding="utf-8")
    return json_path, html_path


def front_plot(title: str, points: Sequence[tuple[float, float, str]]) -> str:
    """p99 latency (x) against throughput (y): grey measured configs, the front joined in blue, the
    default as a black square and the choice as a red ring; `points` are (x, y, kind) with kind
    `trial`, `front`, `default` or `chosen`."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    out = _axes(title, "p99 latency per request (ms)", "tokens/s", xs, ys)
    if points:
        px, py = _scale(xs, _PAD, _W - 10), _scale(ys, _H - _PAD, 24)
        front = sorted((x, y) for x, y, (_, _, kind) in zip(px, py, points) if kind == "front")
        if front:
            line = " ".join(f"{x:.1f},{y:.1f}" for x, y in front)
            out.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{line}"/>')
        for x, y, (_, _, kind) in zip(px, py, points):
            if kind == "default":
                out.append(f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" fill="black"/>')
            elif kind == "chosen":
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="7" fill="none" stroke="#d62728" stroke-width="2"/>')
            else:
                color = "#1f77b4" if kind == "front" else "#999"
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}"/>')
    out.append("</svg>")
    return "\n".join(out)


def write_inference_report(result: Any, path: str | Path) -> tuple[Path, Path]:
    """`PATH.json` and `PATH.html` for a `serving.InferenceResult`: the table and the latency/throughput
    front."""
    json_path, html_path = report_paths(path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    front_ids = {id(t) for t in result.front}
    points = []
    for t in result.ok_trials:
        kind = "front" if id(t) in front_ids else "trial"
        points.append((t["metrics"]["latency_p99_s"] * 1e3, t["metrics"]["tokens_per_s"], kind))
    for t, kind in ((result.default, "default"), (result.selection.trial, "chosen")):
        if t is not None and t.get("status") == "ok":
            points.append((t["metrics"]["latency_p99_s"] * 1e3, t["metrics"]["tokens_per_s"], kind))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>AutoScout inference report</title>"
            "<style>body{font-family:sans-serif;margin:2em}svg{margin:6px;border:1px solid #eee}</style></head><body>"
            f"<h1>AutoScout inference report</h1><pre>{html.escape(result.table())}</pre>"
            f"<div>{front_plot('Latency / throughput front', points)}</div></body></html>")
    json_path.write_text(json.dumps(result.to_json(), indent=2, default=str), encoding="utf-8")
    html_path.write_text(page, encoding="utf-8")
    return json_path, html_path
