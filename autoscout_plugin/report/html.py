"""The HTML reports: one self-contained page each (inline SVG plots from `plots`, a few lines of script
to sort the trial table), that opens offline.

A tuning report reads top down as a user asks: the verdict (`verdict.make_verdict`, the same sentence
the terminal prints and the JSON stores), what changed from their settings, every trial with one column
per knob, plots that keep measurements and the cost model's opinion apart, and a glossary.
"""

from __future__ import annotations

import html
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..failures import Exclusion
from ..trial import Fidelity, Trial
from .evidence import best_so_far, measured_effects, noise, prediction_error, varied_knobs
from .plots import Bars, Chart
from .result import TuneResult, status_label
from .verdict import Verdict, make_verdict, show

__all__ = ["best_so_far", "render_html", "render_inference_html", "report_paths", "write_inference_report",
           "write_report"]

_STYLE = """
.asr,.asr *{box-sizing:border-box}
.asr{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;padding:18px 24px;
 max-width:1260px;color:#222;line-height:1.4}
.asr h1{font-size:22px;margin:0 0 10px}.asr h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd}
.asr .verdict{font-size:17px;padding:12px 16px;border-radius:6px;margin:6px 0 12px}
.asr .verdict.applied,.asr .verdict.reused{background:#e8f5e9;border-left:6px solid #2e7d32}
.asr .verdict.kept{background:#f3f4f6;border-left:6px solid #6b7280}
.asr .facts{color:#555;font-size:13px;margin:4px 0}
.asr table{border-collapse:collapse;font-size:13px}
.asr td,.asr th{padding:3px 7px;border-bottom:1px solid #e5e5e5;text-align:left;vertical-align:top}
.asr th{background:#fafafa;font-weight:600}
.asr td.num,.asr th.num{text-align:right;font-variant-numeric:tabular-nums}
.asr .wrap{max-width:100%;overflow-x:auto}
.asr table.trials{width:100%;font-size:12px;table-layout:fixed}
.asr table.trials td,.asr table.trials th{padding:3px 5px}
.asr table.trials th{overflow-wrap:anywhere}
.asr table.trials td{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.asr table.trials th{cursor:pointer;user-select:none}
.asr table.trials th:hover{background:#eef}
.asr td.diff{background:#fff3c4;font-weight:600}
.asr td.bad{color:#b71c1c;font-weight:600}
.asr table.trials td.reason{color:#555}
.asr tr.chosen td:first-child{border-left:4px solid #2e7d32}
.asr tr.yours td:first-child{border-left:4px solid #555}
.asr .plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:14px}
.asr figure.chart{margin:0;border:1px solid #eee;border-radius:4px;padding:6px}
.asr figure.chart svg{width:100%;height:auto;display:block}
.asr figcaption{font-size:12px;color:#555;margin:4px 6px}
.asr dl.glossary{display:grid;grid-template-columns:max-content 1fr;gap:4px 14px;font-size:13px}
.asr dl.glossary dt{font-weight:600}.asr dl.glossary dd{margin:0}
"""


_SORT = """
document.querySelectorAll('.asr table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.title = 'sort by ' + th.textContent;
    th.addEventListener('click', function(){
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var up = th.dataset.dir !== 'up'; th.dataset.dir = up ? 'up' : 'down';
      function key(row){ var c = row.cells[col], v = c.dataset.v !== undefined ? c.dataset.v : c.textContent;
                         var n = parseFloat(v); return isNaN(n) ? v : n; }
      rows.sort(function(a, b){ var x = key(a), y = key(b);
        if (typeof x !== typeof y) { x = String(x); y = String(y); }
        return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1); });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
});
"""

GLOSSARY = {
    "samples/s": "Training samples per second over the measured steps, after the warm-up steps (higher is better).",
    "F2 (short profile)": "A trial: a few real training steps under one config, timed after a warm-up.",
    "F3 (confirmation)": "The best candidates re-run in rounds interleaved with your own settings (A, B, A, B, "
                         "…); each round gives a paired ratio, so a load burst on the machine hits both sides.",
    "paired ratio": "The candidate's speed over your settings' speed measured in the same round; the verdict "
                    "uses their geometric mean, and the spread is the lowest and highest round.",
    "predicted": "What the search expected the trial to measure before running it (cost model plus the "
                 "surrogates fitted on the trials so far).",
    "cost s": "Wall seconds the trial took: start-up, warm-up, compilation and the measured steps.",
    "status": "ok, or the failure's class: unsupported (fails the same way every time for that setting), oom, "
              "timeout, nan, transient (retried once) or crash (anything else).",
    "noise band": "How far measurements that should agree (your settings measured twice, the paired rounds) "
                  "were apart in this run; differences inside it are not evidence.",
    "measured effect": "Two trials that differ in one knob only: the change in speed from one value to the other.",
    "model's prior": "The cost model's own ranking of the knobs (share of the predicted variance): an "
                     "opinion, not a measurement.",
}


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _readable(value: Any) -> str:
    """A note's value for people: a mapping as `k = v` pairs, a list comma-separated."""
    if isinstance(value, dict):
        return ", ".join(f"{k} = {show(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(show(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return show(value)


def _header(name: str) -> str:
    """A column name that may wrap after an underscore or a slash, never inside a word."""
    return _e(name).replace("_", "_<wbr>").replace("/", "/<wbr>")


def _colgroup(head: Sequence[str], widths: dict[str, float]) -> str:
    """Column widths (percent) for a fixed-layout table: the named columns get theirs, the knob columns
    share the rest equally, so a table of many knobs still fits the page (long values are cut with an
    ellipsis and shown whole on hover)."""
    rest = [h for h in head if h not in widths]
    share = max(100.0 - sum(widths[h] for h in head if h in widths), 5.0 * len(rest)) / max(len(rest), 1)
    return "<colgroup>" + "".join(f"<col style='width:{widths.get(h, share):.2f}%'>" for h in head) + "</colgroup>"


def _table_head(head: Sequence[str], numeric: set[str], widths: dict[str, float]) -> str:
    """The opening of a sortable trials table, up to its open `<tbody>`."""
    return ("<div class='wrap'><table class='trials sortable'>" + _colgroup(head, widths) + "<thead><tr>"
            + "".join(f"<th class='{'num' if h in numeric else ''}'>{_header(h)}</th>" for h in head)
            + "</tr></thead><tbody>")


def _changes_table(verdict: Verdict) -> str:
    rows = [f"<tr><td>{_e(c.knob)}</td><td>{_e(show(c.yours))}</td><td><b>{_e(show(c.applied))}</b></td>"
            f"<td>{'follows from the tuned knobs' if c.follows else 'tuned'}</td></tr>" for c in verdict.changes]
    rows += [f"<tr><td>{_e(c.knob)}</td><td>{_e(show(c.yours))}</td><td>{_e(show(c.applied))}</td>"
             "<td>recommended for your next launch, not applied</td></tr>" for c in verdict.recommended]
    rows += [f"<tr><td>{_e(k)}</td><td>{_e(show(v))}</td><td>{_e(show(v))}</td><td>pinned by {_e(by)}</td></tr>"
             for k, v, by in verdict.pinned]
    if not rows:
        return "<p>Nothing changed: the main run uses your own settings.</p>"
    return ("<div class='wrap'><table class='changes'><thead><tr><th>knob</th><th>your value</th>"
            f"<th>applied</th><th>why</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def _reason(trial: Trial) -> str:
    if trial.ok:
        return "cut short: fewer steps measured" if trial.metrics.get("cut_short") else ""
    text = (trial.error or trial.status).strip().splitlines()
    first = text[0] if text else trial.status
    return first + (f" (blames {', '.join(trial.blame)})" if trial.blame else "")


def _trials_table(result: TuneResult, chosen: dict[str, Any] | None) -> str:
    yours = result.baseline_config or {}
    varied = sorted(varied_knobs(result))
    all_knobs = sorted({k for t in result.trials for k in t.config})
    same = [k for k in all_knobs if k not in varied]
    head = ["#", "fidelity", "status", *varied, "samples/s", "predicted", "cost s", "reason"]
    numeric = {"#", "samples/s", "predicted", "cost s"}
    widths = {"#": 3, "fidelity": 6, "status": 8, "samples/s": 7, "predicted": 7.5, "cost s": 4.5,
              "reason": 16 if any(not t.ok for t in result.trials) else 9}
    out = [_table_head(head, numeric, widths)]
    for t in result.trials:
        cls = "chosen" if chosen is not None and t.config == chosen else ("yours" if t.config == yours else "")
        cells = [f"<td class='num' data-v='{t.number}'>{t.number}</td>",
                 f"<td>{_e(t.fidelity.value)}</td>",
                 f"<td class='{'' if t.ok else 'bad'}'>{_e(status_label(t))}</td>"]
        for k in varied:
            value = show(t.config.get(k))
            differs = yours and t.config.get(k) != yours.get(k)
            tip = f" title='{_e(value)} (your value: {_e(show(yours.get(k)))})'" if differs else f" title='{_e(value)}'"
            cells.append(f"<td class='{'diff' if differs else ''}'{tip}>{_e(value)}</td>")
        value = f"{t.value:.2f}" if t.value is not None else "-"
        pred = f"{t.predicted:.2f}" if t.predicted is not None else "-"
        reason = _reason(t)
        cells += [f"<td class='num' data-v='{t.value if t.value is not None else -1}'>{value}</td>",
                  f"<td class='num' data-v='{t.predicted if t.predicted is not None else -1}'>{pred}</td>",
                  f"<td class='num' data-v='{t.cost_s:.3f}'>{t.cost_s:.1f}</td>",
                  f"<td class='reason' title='{_e(t.error or reason)}'>{_e(reason)}</td>"]
        out.append(f"<tr class='{cls}'>{''.join(cells)}</tr>")
    out.append("</tbody></table></div>")
    legend = ("<p class='facts'>Highlighted cells differ from your settings (hover for your value); the row"
              " with a green edge is the applied config, a grey edge your own. Click a column to sort.</p>")
    constant = ""
    if same and result.trials:
        first = result.trials[0].config
        constant = ("<p class='facts'>Same in every trial: "
                    + ", ".join(f"{_e(k)} = {_e(show(first.get(k)))}" for k in same) + ".</p>")
    return legend + constant + "".join(out)


def _plots(result: TuneResult, verdict: Verdict) -> list[str]:
    numbers, seconds, best = best_so_far(result)
    base, band = result.baseline_value, noise(result)
    f2 = [(i, t) for i, t in enumerate(result.trials, 1) if t.ok and t.value is not None and t.fidelity != Fidelity.F3]
    f3 = [(i, t) for i, t in enumerate(result.trials, 1) if t.ok and t.value is not None and t.fidelity == Fidelity.F3]
    spent = list(itertools.accumulate(t.cost_s for t in result.trials))
    pairs = [p for p in result.paired if p.ratios]
    if verdict.basis == "paired" and verdict.speedup:
        how = ("The verdict uses the paired confirmation instead (F3 rings, compared round by round): "
               f"{verdict.speedup:.2f}x.")
    elif pairs:
        how = ("The verdict uses the paired confirmation instead (F3 rings, compared round by round): the best"
               f" candidate ran {max(p.ratio for p in pairs):.2f}x your settings.")
    else:
        how = "The verdict compares the mean short-profile speeds."
    band_text = (f" The band is this run's noise, ±{band * 100:.1f}% around your settings." if band is not None
                 else " Nothing was measured twice, so this run has no noise estimate.")
    charts = []
    for xlabel, xs, at in (("trial", numbers, lambda i: float(i)), ("profiling seconds", seconds,
                                                                     lambda i: spent[i - 1])):
        chart = Chart(f"Best so far by {xlabel}", xlabel, "samples/s", integer_x=xlabel == "trial",
                      caption=f"Best short-profile (F2) speed after each trial; grey dots are each trial. {how}"
                      + (band_text if base else ""))
        if base and band is not None:
            chart.band(max(0.0, base * (1 - band)), base * (1 + band), label="noise band")
        if base:
            chart.hline(base, label="your settings")
        chart.points([at(i) for i, _ in f2], [t.value for _, t in f2], color="grey", label="trial",
                     tips=[f"trial {t.number}: {t.value:.2f} samples/s" for _, t in f2])
        if f3:
            chart.points([at(i) for i, _ in f3], [t.value for _, t in f3], color="orange", shape="ring",
                         label="confirmation (F3)", tips=[f"trial {t.number} (F3): {t.value:.2f}" for _, t in f3])
        chart.line(xs, best, step=True, label="best so far", tips=[f"{v:.2f} samples/s" for v in best])
        charts.append(chart.render())

    effects = measured_effects(result)
    charts.append(Bars(
        "Measured effects (two trials, one knob apart)", "change in samples/s (%)",
        [e.label for e in effects], [(e.ratio - 1.0) * 100 for e in effects],
        colors=["green" if e.ratio >= 1 else "red" for e in effects],
        tips=[f"{e.label}: {e.ratio:.2f}x (trials " + ", ".join(f"{a} and {b}" for a, b in e.pairs) + ")"
              for e in effects],
        caption="Measured: each bar compares successful trials whose configs differ in that knob alone (the"
                " geometric mean where several pairs show the same change)."
        if effects else "No two successful trials differ in exactly one knob, so no effect was measured directly.",
    ).render())

    varied = varied_knobs(result)
    prior = sorted(result.importances.items(), key=lambda kv: -kv[1])
    charts.append(Bars(
        "The cost model's prior (not measured)", "share of predicted variance",
        [k + ("" if k in varied else " (never varied)") for k, _ in prior], [v for _, v in prior],
        colors=["grey"] * len(prior),
        caption="The model's opinion of which knobs matter, before and beside the measurements. Knobs marked"
                " 'never varied' kept one value in every trial: nothing measured them.").render())

    pairs = [(t.predicted, t.value, t.number) for t in result.trials
             if t.ok and t.value is not None and t.predicted is not None]
    error, count = prediction_error(result)
    chart = Chart("Predicted vs measured", "predicted samples/s", "measured samples/s",
                  caption=(f"Median error of the predictions: {error * 100:.0f}% over {count} trials. Points on the"
                           " dashed line were predicted exactly." if error is not None else
                           "No successful trial had a prediction (the first trials run before the model is fitted)."))
    chart.diagonal(label="predicted = measured")
    chart.points([p for p, _, _ in pairs], [m for _, m, _ in pairs], color="red", label="trial",
                 tips=[f"trial {n}: predicted {p:.2f}, measured {m:.2f}" for p, m, n in pairs])
    charts.append(chart.render())
    return charts


def _job_time(net: dict[str, Any] | None) -> str:
    """The job's end time against the user's settings alone: the estimate at the decision and, once the main
    run has finished, what it was (`Tuning.finish`)."""
    if not net:
        return ""
    lines = [f"Estimate at the decision: {net['sentence']}."] if net.get("sentence") else []
    done = net.get("realised")
    if done:
        lines.append(f"Realised: {done['tuning_s']:.0f} s of tuning + {done['main_run_s']:.0f} s of the main run"
                     f" ({done['steps']} steps), against about {done['default_run_s']:.0f} s with your settings"
                     f" alone: {done['net']:.2f}x, tuning included.")
    items = "".join(f"<li>{_e(line)}</li>" for line in lines)
    return f"<h2>Job time, tuning included</h2><ul class='job'>{items}</ul>" if items else ""


def _details(result: TuneResult, notes: dict[str, Any]) -> str:
    rows = [("trials", str(result.n_trials)), ("profiling seconds", f"{result.tuning_s:.1f}"),
            ("wall seconds of tuning", f"{result.wall_s:.1f}"), ("stopped because", result.stop_reason or "-")]
    if result.fingerprint:
        rows.append(("workload fingerprint", result.fingerprint))
    if result.derived:
        rows.append(("follows from the winner", _readable(result.derived)))
    skip = {"applied", "pinned", "verdict", "trials", "tuning_s", "speedup", "recommended", "report_files", "net"}
    rows += [(k.replace("_", " "), _readable(v)) for k, v in notes.items() if k not in skip]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    excluded = "".join(f"<li><b>{_e(Exclusion.from_json(ex).describe())}</b>: {_e(ex['reason'])}</li>"
                       for ex in result.exclusions)
    if excluded:
        excluded = f"<h2>Excluded after an unsupported failure</h2><ul>{excluded}</ul>"
    return f"{excluded}<h2>Run details</h2><div class='wrap'><table class='details'>{body}</table></div>"


def _glossary(terms: dict[str, str]) -> str:
    return ("<h2>Glossary</h2><dl class='glossary'>"
            + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in terms.items()) + "</dl>")


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style></head><body><main class='asr'>{body}</main>"
            f"<script>{_SORT}</script></body></html>")


def render_html(result: TuneResult, *, title: str = "AutoScout report", notes: dict[str, Any] | None = None,
                verdict: Verdict | None = None) -> str:
    """The report page for `result`; `notes` are `Tuning.conclude`'s (applied, pinned and why, ...)."""
    notes = dict(notes or {})
    verdict = verdict or make_verdict(result, notes)
    applied = notes["applied"] if "applied" in notes else result.best_config
    chosen = {k: v for k, v in applied.items() if k not in result.derived} if applied else None
    effort = (f"{result.n_trials} trials, {result.tuning_s:.0f} s of profiling"
              + (f", {result.wall_s:.0f} s of tuning in all" if result.wall_s else ""))
    body = (f"<h1>{_e(title)}</h1>"
            f"<p id='verdict' class='verdict {_e(verdict.decision)}'>{_e(verdict.sentence)}</p>"
            f"<p class='facts'>{_e(effort)}.</p>{_job_time(notes.get('net'))}"
            f"<h2>What changed</h2>{_changes_table(verdict)}"
            f"<h2>Trials</h2>{_trials_table(result, chosen if verdict.decision != 'kept' else None)}"
            f"<h2>Plots</h2><div class='plots'>{''.join(_plots(result, verdict))}</div>"
            f"{_details(result, notes)}{_glossary(GLOSSARY)}")
    return _page(title, body)


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


def write_report(result: TuneResult, path: str | Path, *, notes: dict[str, Any] | None = None,
                 verdict: Verdict | None = None) -> tuple[Path, Path]:
    """Write the report's JSON and HTML files (`report_paths(path)`); both carry the same verdict."""
    json_path, html_path = report_paths(path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    notes = dict(notes or {})
    verdict = verdict or make_verdict(result, notes)
    data = result.to_json()
    data["notes"] = {k: v for k, v in notes.items() if k != "verdict"}
    data["verdict"] = verdict.to_json()
    json_path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    html_path.write_text(render_html(result, notes=notes, verdict=verdict), encoding="utf-8")
    return json_path, html_path


# ------------------------------------------------------------------ inference
INFERENCE_GLOSSARY = {
    "tokens/s": "Generated (or processed) tokens per second over the request mix, all requests together.",
    "p50 / p99 latency": "The median and the 99th-percentile time of one request, in milliseconds (lower is "
                         "better).",
    "front": "The configs that no other config beats on both throughput and p99 latency at once.",
    "objective": "What the choice optimises: throughput, latency, a latency limit (slo) or the pareto knee "
                 "(the best geometric mean of both gains over the default).",
    "agreement": "Where a config keeps the precision, the share of greedy outputs identical to the default's.",
}


def _front_chart(result: Any) -> str:
    front_ids = {id(t) for t in result.front}
    chart = Chart("Latency / throughput front", "p99 latency per request (ms)", "tokens/s",
                  caption="Up and to the left is better. Blue: the front (no config beats these on both); grey: "
                          "the other configs; black square: the default; red ring: the choice.")
    ok = result.ok_trials
    others = [t for t in ok if id(t) not in front_ids]
    front = sorted((t for t in ok if id(t) in front_ids), key=lambda t: t["metrics"]["latency_p99_s"])

    def xy(ts: Sequence[dict[str, Any]]) -> tuple[list[float], list[float], list[str]]:
        return ([t["metrics"]["latency_p99_s"] * 1e3 for t in ts], [t["metrics"]["tokens_per_s"] for t in ts],
                [f"trial {t.get('number', '?')}: " + ", ".join(f"{k}={show(v)}" for k, v in t["config"].items())
                 for t in ts])

    xs, ys, tips = xy(others)
    chart.points(xs, ys, color="grey", label="config", tips=tips)
    xs, ys, tips = xy(front)
    chart.line(xs, ys, color="blue", label="front", tips=tips)
    for t, label, shape, color in ((result.default, "default", "square", "black"),
                                   (result.selection.trial, "choice", "ring", "red")):
        if t is not None and t.get("status") == "ok":
            xs, ys, tips = xy([t])
            chart.points(xs, ys, color=color, shape=shape, label=label, tips=tips)
    return chart.render()


def _inference_table(result: Any) -> str:
    front_ids = {id(t) for t in result.front}
    chosen = result.selection.trial
    default = result.default
    knobs = sorted({k for t in result.trials for k in t["config"]})
    base = default["config"] if default else {}
    head = ["#", "chosen", "front", "status", *knobs, "tokens/s", "p50 ms", "p99 ms", "memory MB", "reason"]
    numeric = {"#", "tokens/s", "p50 ms", "p99 ms", "memory MB"}
    rows = []
    for i, t in enumerate(result.trials):
        m = t.get("metrics") or {}
        ok = t["status"] == "ok"
        cells = [f"<td class='num' data-v='{i}'>{t.get('number', i)}</td>",
                 f"<td>{'yes' if t is chosen else ''}</td>", f"<td>{'yes' if id(t) in front_ids else ''}</td>",
                 f"<td class='{'' if ok else 'bad'}'>{_e(t['status'])}</td>"]
        for k in knobs:
            differs = t["config"].get(k) != base.get(k)
            value = _e(show(t["config"].get(k)))
            cells.append(f"<td class='{'diff' if differs else ''}' title='{value}'>{value}</td>")
        for key, scale, digits in (("tokens_per_s", 1, 1), ("latency_p50_s", 1e3, 1), ("latency_p99_s", 1e3, 1),
                                   ("peak_mem_mb", 1, 0)):
            value = m.get(key) if ok else None
            text = f"{value * scale:.{digits}f}" if value is not None else "-"
            cells.append(f"<td class='num' data-v='{value * scale if value is not None else -1}'>{text}</td>")
        reason = (t.get("error") or "").strip().splitlines()
        cells.append(f"<td class='reason' title='{_e(t.get('error') or '')}'>{_e(reason[0] if reason else '')}</td>")
        cls = "chosen" if t is chosen else ("yours" if t is default else "")
        rows.append(f"<tr class='{cls}'>{''.join(cells)}</tr>")
    widths = {"#": 3, "chosen": 5, "front": 4.5, "status": 5, "tokens/s": 6.5, "p50 ms": 5.5, "p99 ms": 5.5,
              "memory MB": 6.5, "reason": 14 if any(t["status"] != "ok" for t in result.trials) else 6}
    return ("<p class='facts'>Highlighted cells differ from the default. Click a column to sort.</p>"
            + _table_head(head, numeric, widths) + f"{''.join(rows)}</tbody></table></div>")


def render_inference_html(result: Any) -> str:
    """The page for a `serving.InferenceResult`: its verdict, the front, the trials."""
    sentence = result.verdict()
    decision = "applied" if result.best_config is not None and result.selection.trial is not result.default \
        else "kept"
    body = (f"<h1>AutoScout inference report</h1><p id='verdict' class='verdict {decision}'>{_e(sentence)}</p>"
            f"<p class='facts'>{len(result.trials)} trials in {result.tuning_s:.0f} s; objective "
            f"{_e(result.objective)}; {_e(result.selection.reason)}</p>"
            f"<h2>Plots</h2><div class='plots'>{_front_chart(result)}</div>"
            f"<h2>Trials</h2>{_inference_table(result)}{_glossary(INFERENCE_GLOSSARY)}")
    return _page("AutoScout inference report", body)


def write_inference_report(result: Any, path: str | Path) -> tuple[Path, Path]:
    """`PATH.json` and `PATH.html` for a `serving.InferenceResult`, with the same verdict."""
    json_path, html_path = report_paths(path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result.to_json(), indent=2, default=str), encoding="utf-8")
    html_path.write_text(render_inference_html(result), encoding="utf-8")
    return json_path, html_path
