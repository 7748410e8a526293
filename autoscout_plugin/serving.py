"""Inference tuning, the framework-free half: request mixes, latency statistics, objectives, SLO
selection, the Pareto front, options and the result. `integrations/inference.py` runs the trials.

Example (selection and the front on hand-made measurements):
    >>> trials = [{"config": {"batch_size": b}, "metrics": m} for b, m in [
    ...     (1, {"tokens_per_s": 100.0, "latency_p50_s": 0.10, "latency_p99_s": 0.12}),
    ...     (4, {"tokens_per_s": 300.0, "latency_p50_s": 0.20, "latency_p99_s": 0.25}),
    ...     (8, {"tokens_per_s": 280.0, "latency_p50_s": 0.40, "latency_p99_s": 0.50})]]
    >>> [t["config"]["batch_size"] for t in pareto_front(trials)]
    [1, 4]
    >>> select(trials, "throughput", slo_p99_s=0.2).trial["config"]
    {'batch_size': 1}
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from . import validate

OBJECTIVES = ("throughput", "latency_p50", "latency_p99", "cost", "pareto")
INFERENCE_KNOBS = ("batch_size", "max_batch_tokens", "precision", "compile", "kv_cache", "attn_implementation",
                   "num_threads", "tp")


# ------------------------------------------------------------------ requests
Lengths = int | tuple[int, int] | Sequence[int]


def _draw(spec: Lengths, rng: random.Random, name: str) -> int:
    if isinstance(spec, bool):
        raise ValueError(f"{name} must be an int, a (low, high) range or a list of ints, got {spec!r}")
    if isinstance(spec, int):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2:
        return rng.randint(spec[0], spec[1])
    return rng.choice(list(spec))


def _check_lengths(spec: Any, name: str, minimum: int) -> None:
    values = [spec] if isinstance(spec, int) and not isinstance(spec, bool) else (
        list(spec) if isinstance(spec, (list, tuple)) else None)
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < minimum for v in values):
        raise ValueError(f"{name} must be an int >= {minimum}, a (low, high) range or a list of such ints, "
                         f"got {spec!r}")
    if isinstance(spec, tuple) and len(spec) == 2 and spec[0] > spec[1]:
        raise ValueError(f"{name} range {spec!r} has low > high")


@dataclass(frozen=True)
class RequestMix:
    """A synthetic workload: `n` requests with prompt and output lengths drawn from the given
    distributions (a fixed int, a `(low, high)` uniform range, or a list to choose from), seeded.

    Example:
        >>> mix = RequestMix(n=4, prompt_len=(8, 16), output_len=8, seed=1)
        >>> [out for _, out in mix.requests()], all(8 <= p <= 16 for p, _ in mix.requests())
        ([8, 8, 8, 8], True)
    """

    n: int = 100
    prompt_len: Lengths = 64
    output_len: Lengths = 32
    seed: int = 0

    def __post_init__(self) -> None:
        validate.integer("n", self.n, low=1, high=100_000, hint="the number of requests in the mix")
        _check_lengths(self.prompt_len, "prompt_len", 1)
        _check_lengths(self.output_len, "output_len", 1)

    def requests(self) -> list[tuple[int, int]]:
        """(prompt length, output length) per request, the same list every call."""
        rng = random.Random(self.seed)
        return [(_draw(self.prompt_len, rng, "prompt_len"), _draw(self.output_len, rng, "output_len"))
                for _ in range(self.n)]


def batches(requests: Sequence[tuple[int, int]], batch_size: int, max_batch_tokens: int | None = None,
            ) -> list[list[int]]:
    """Request indices grouped in arrival order: at most `batch_size` requests, and (when given) at
    most `max_batch_tokens` padded tokens (`requests x (longest prompt + longest output)`) per batch.

    Example:
        >>> batches([(10, 5), (10, 5), (30, 5), (10, 5)], 4, max_batch_tokens=60)
        [[0, 1], [2], [3]]
    """
    out: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i, (prompt, output) in enumerate(requests):
        size = max(longest, prompt + output)
        full = len(current) >= batch_size
        too_long = bool(max_batch_tokens) and (len(current) + 1) * size > (max_batch_tokens or 0)
        if current and (full or too_long):
            out.append(current)
            current, size = [], prompt + output
        current.append(i)
        longest = size
    if current:
        out.append(current)
    return out


# ------------------------------------------------------------------ statistics and objectives
def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) by linear interpolation between order statistics (numpy's default).

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile(list(range(1, 101)), 99)
        (2.5, 99.01)
    """
    if not values:
        raise ValueError("no values to take a percentile of")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def cost_per_million_tokens(tokens_per_s: float, price_per_hour: float) -> float:
    """Dollars per million generated tokens at `price_per_hour` for the machine.

    Example: 1,000 tokens/s on a $3.60/h machine: $1 per million tokens.
        >>> cost_per_million_tokens(1000.0, 3.6)
        1.0
    """
    if tokens_per_s <= 0:
        return math.inf
    return price_per_hour / 3600.0 / tokens_per_s * 1e6


def objective_value(metrics: dict[str, float], objective: str, *, baseline: dict[str, float] | None = None,
                    slo_p99_s: float | None = None, memory_cap_mb: float | None = None) -> float:
    """The scalar the search maximises: tokens/s (throughput, cost: cost is price / throughput),
    1 / latency, or for `pareto` the geometric mean of the throughput and p99 gains over the baseline.
    A violated SLO or memory cap divides the value steeply (the search then steers away; the final
    choice uses the exact constraints)."""
    tps, p50, p99 = metrics["tokens_per_s"], metrics["latency_p50_s"], metrics["latency_p99_s"]
    if objective in ("throughput", "cost"):
        value = tps
    elif objective == "latency_p50":
        value = 1.0 / p50
    elif objective == "latency_p99":
        value = 1.0 / p99
    else:
        base = baseline or metrics
        value = math.sqrt(tps / base["tokens_per_s"] * base["latency_p99_s"] / p99)
    if slo_p99_s is not None and p99 > slo_p99_s:
        value *= (slo_p99_s / p99) ** 4
    mem = metrics.get("peak_mem_mb")
    if memory_cap_mb is not None and mem is not None and mem > memory_cap_mb:
        value *= (memory_cap_mb / mem) ** 4
    return value


def _dominates(a: dict[str, float], b: dict[str, float]) -> bool:
    better_or_equal = a["tokens_per_s"] >= b["tokens_per_s"] and a["latency_p99_s"] <= b["latency_p99_s"]
    strictly = a["tokens_per_s"] > b["tokens_per_s"] or a["latency_p99_s"] < b["latency_p99_s"]
    return better_or_equal and strictly


def pareto_front(trials: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trials no other trial beats on both throughput (higher) and p99 latency (lower), sorted by
    latency; each trial is a dict with `metrics` holding `tokens_per_s` and `latency_p99_s`."""
    front = [t for t in trials if not any(_dominates(o["metrics"], t["metrics"]) for o in trials if o is not t)]
    return sorted(front, key=lambda t: (t["metrics"]["latency_p99_s"], -t["metrics"]["tokens_per_s"]))


@dataclass(frozen=True)
class Selection:
    """The chosen trial, or None with the reason when no trial meets the constraints."""

    trial: dict[str, Any] | None
    reason: str
    closest: dict[str, Any] | None = None
    """When nothing is feasible: the trial nearest to the SLO (lowest p99 within the memory cap)."""


def select(trials: Sequence[dict[str, Any]], objective: str, *, slo_p99_s: float | None = None,
           memory_cap_mb: float | None = None, price_per_hour: float | None = None) -> Selection:
    """The best measured trial for `objective` among those meeting the p99 SLO and the memory cap."""
    if not trials:
        return Selection(None, "no trial ran successfully")

    def fits_memory(t: dict[str, Any]) -> bool:
        mem = t["metrics"].get("peak_mem_mb")
        return memory_cap_mb is None or mem is None or mem <= memory_cap_mb

    feasible = [t for t in trials if fits_memory(t)
                and (slo_p99_s is None or t["metrics"]["latency_p99_s"] <= slo_p99_s)]
    if not feasible:
        in_memory = [t for t in trials if fits_memory(t)] or list(trials)
        closest = min(in_memory, key=lambda t: t["metrics"]["latency_p99_s"])
        parts = []
        if slo_p99_s is not None:
            parts.append(f"the p99 SLO of {slo_p99_s * 1e3:.1f} ms (the fastest measured p99 is "
                         f"{closest['metrics']['latency_p99_s'] * 1e3:.1f} ms)")
        if memory_cap_mb is not None and not any(fits_memory(t) for t in trials):
            parts.append(f"the memory cap of {memory_cap_mb:.0f} MB")
        return Selection(None, "no measured configuration meets " + " and ".join(parts)
                         + "; relax the constraint or allow more knobs/hardware", closest)
    key = {"throughput": lambda t: t["metrics"]["tokens_per_s"], "cost": lambda t: t["metrics"]["tokens_per_s"],
           "latency_p50": lambda t: -t["metrics"]["latency_p50_s"],
           "latency_p99": lambda t: -t["metrics"]["latency_p99_s"]}.get(objective)
    if key is None:  # pareto: the front's knee, the best geometric mean of both normalised gains
        best_tps = max(t["metrics"]["tokens_per_s"] for t in feasible)
        best_p99 = min(t["metrics"]["latency_p99_s"] for t in feasible)
        key = lambda t: math.sqrt(t["metrics"]["tokens_per_s"] / best_tps * best_p99 / t["metrics"]["latency_p99_s"])  # noqa: E731
    best = max(feasible, key=key)
    note = f"best {objective} of {len(feasible)} feasible of {len(trials)} measured configurations"
    if price_per_hour:
        note += f" (${cost_per_million_tokens(best['metrics']['tokens_per_s'], price_per_hour):.3f} per M tokens)"
    return Selection(best, note)


# ------------------------------------------------------------------ options
_PIN_CHOICES = {"precision": ("32-true", "bf16-true", "16-true"), "kv_cache": ("dynamic", "static"),
                "compile": ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")}
"""The values an inference pin of these knobs can take (other knobs: a positive int, or an implementation name)."""


def _check_pin(name: str, value: Any) -> None:
    label = f"pin[{name!r}]"
    if name in _PIN_CHOICES:
        validate.choice(label, value, _PIN_CHOICES[name])
    elif name == "attn_implementation":
        validate.non_empty_str(label, value, hint="an attention implementation such as sdpa or eager")
    else:
        validate.integer(label, value, low=1, hint=f"{name} is a positive integer")


@dataclass(frozen=True, kw_only=True)
class InferenceOptions(validate.KeywordOptions):
    """Validated options of `tune_inference`; bad values fail here, before any trial.

    Example:
        >>> InferenceOptions(objective="latency_p99", slo_p99_s=0.5).objective
        'latency_p99'
    """

    EXAMPLE: ClassVar[str] = "objective='latency_p99'"

    objective: str = "throughput"
    slo_p99_s: float | None = None
    """Maximise the objective subject to p99 latency per request <= this many seconds."""
    memory_cap_mb: float | None = None
    price_per_hour: float | None = None
    """Machine price, for `objective="cost"` (dollars per million tokens)."""
    max_trials: int = 12
    max_seconds: float | None = None
    include: tuple[str, ...] | None = None
    """Knobs to search (default: those that apply to the model and machine)."""
    pin: dict[str, Any] = field(default_factory=dict)
    check_outputs: bool = True
    """Compare greedy outputs against the default config where the change is exact (same precision)."""
    min_agreement: float = 0.98
    """Share of generated tokens that must match the reference; below it the trial is rejected."""
    warmup_batches: int = 1
    trial_timeout_s: float = 300.0
    seed: int = 0
    report: str | None = None
    """Write `<report>.json` and `<report>.html` (the latency/throughput front)."""
    progress: bool = True


    def __post_init__(self) -> None:
        if not isinstance(self.objective, str) or self.objective not in OBJECTIVES:
            raise ValueError(f"objective {self.objective!r} is unknown; use one of {', '.join(OBJECTIVES)}")
        hints = {"slo_p99_s": "the p99 latency limit per request in seconds, or None for no SLO",
                 "memory_cap_mb": "a memory cap in megabytes, or None", "price_per_hour": "dollars per hour, or None",
                 "max_seconds": "a tuning budget in seconds, or None"}
        for name, hint in hints.items():
            validate.positive_number(name, getattr(self, name), optional=True, requirement="a positive number",
                                     hint=hint)
        validate.positive_number("trial_timeout_s", self.trial_timeout_s, high=validate.MAX_TIMEOUT_S,
                                 requirement=f"a positive number of seconds (at most {validate.MAX_TIMEOUT_S:g})",
                                 hint="seconds before a trial is stopped")
        if self.objective == "cost" and not self.price_per_hour:
            raise ValueError("objective='cost' needs price_per_hour (the machine's price in dollars per hour)")
        validate.integer("max_trials", self.max_trials, low=1, requirement="an int >= 1",
                         hint="the number of configurations to measure")
        validate.fraction("min_agreement", self.min_agreement, requirement="in (0, 1]",
                          hint="the share of generated tokens that must match the default config's, e.g. 0.98")
        validate.integer("warmup_batches", self.warmup_batches, low=0, requirement="an int >= 0",
                         hint="batches run before timing")
        if self.include is not None:
            object.__setattr__(self, "include", validate.knob_names(
                "include", self.include, known=INFERENCE_KNOBS,
                unknown_message=lambda k: f"unknown inference knob {k!r}; the knobs are {', '.join(INFERENCE_KNOBS)}"))
        validate.mapping("pin", self.pin, hint="e.g. pin={'batch_size': 8}")
        object.__setattr__(self, "pin", dict(self.pin))
        for name, value in self.pin.items():
            if name not in INFERENCE_KNOBS:
                raise ValueError(f"unknown inference knob {name!r}; the knobs are {', '.join(INFERENCE_KNOBS)}")
            _check_pin(name, value)
        both = set(self.include or ()) & set(self.pin)
        if both:
            raise ValueError(f"knob {sorted(both)[0]!r} is both pinned and listed as tunable; choose one")
        validate.boolean("check_outputs", self.check_outputs)
        validate.boolean("progress", self.progress)
        validate.seed("seed", self.seed)
        validate.path("report", self.report, optional=True, hint="PATH.json and PATH.html are written, or None")

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ------------------------------------------------------------------ result
_SAME = 0.005
"""Measured values within 0.5% of each other are reported as the same."""
_METRIC_WORDS = {"tokens_per_s": ("throughput", "tok/s", 1.0), "latency_p50_s": ("p50 latency", "ms", 1e3),
                 "latency_p99_s": ("p99 latency", "ms", 1e3)}
"""Per metric: its name in a sentence, the unit shown and the factor from the stored unit to it."""


def _figure(x: float) -> str:
    """A measured value to three significant figures, without exponent notation: 512, 12.3, 0.281."""
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def _config_text(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items()) or "the default settings"


def _change(chosen: float, base: float, metric: str) -> str:
    """Which way `metric` moved from `base` to `chosen`, and by what factor (always >= 1).

    Example:
        >>> _change(0.052, 0.104, "latency_p99_s"), _change(150.0, 300.0, "tokens_per_s"), _change(1.004, 1.0, "x")
        ('2.00x shorter', '2.00x less', 'same')
    """
    ratio = chosen / base
    if abs(ratio - 1.0) <= _SAME:
        return "same"
    more, less = ("more", "less") if metric == "tokens_per_s" else ("longer", "shorter")
    return f"{ratio:.2f}x {more}" if ratio > 1 else f"{1 / ratio:.2f}x {less}"


@dataclass
class InferenceResult:
    """What `tune_inference` found: every trial, the default's figures, the choice and the front.

    `trials` are dicts with `config`, `status`, `metrics` (`tokens_per_s`, `latency_p50_s`,
    `latency_p99_s`, `peak_mem_mb`, `agreement`), `cost_s` and `error`.
    """

    objective: str
    trials: list[dict[str, Any]]
    default: dict[str, Any] | None
    selection: Selection
    front: list[dict[str, Any]]
    options: dict[str, Any] = field(default_factory=dict)
    tuning_s: float = 0.0
    kind: str = "generate"
    """`generate` (a Hugging Face causal LM) or `forward` (a plain module)."""

    @property
    def best_config(self) -> dict[str, Any] | None:
        return None if self.selection.trial is None else dict(self.selection.trial["config"])

    @property
    def ok_trials(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["status"] == "ok"]

    def speedup(self, metric: str = "tokens_per_s") -> float | None:
        """The choice over the default on `metric` (>1 is better, for latencies too)."""
        if self.selection.trial is None or self.default is None or self.default["status"] != "ok":
            return None
        chosen, base = self.selection.trial["metrics"][metric], self.default["metrics"][metric]
        return chosen / base if metric == "tokens_per_s" else base / chosen

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `model.generate` that the choice needs (the KV-cache kind)."""
        config = self.best_config or {}
        return {"cache_implementation": "static"} if config.get("kv_cache") == "static" else {}

    def comparison(self, metric: str) -> str | None:
        """The choice against the default on `metric` (`tokens_per_s`, `latency_p50_s`, `latency_p99_s`) in
        measured values and words that say which way it moved; None when either was not measured.

        Example:
            >>> def trial(tps, p99): return {"config": {}, "status": "ok", "metrics": {"tokens_per_s": tps,
            ...                              "latency_p50_s": p99, "latency_p99_s": p99}}
            >>> chosen, default = trial(512.0, 0.281), trial(300.0, 0.104)
            >>> r = InferenceResult("pareto", [default, chosen], default, Selection(chosen, ""), [])
            >>> r.comparison("tokens_per_s")
            'throughput: 512 tok/s vs 300 tok/s for the default (1.71x more)'
            >>> r.comparison("latency_p99_s")
            'p99 latency: 281 ms vs 104 ms for the default (2.70x longer)'
        """
        pair = self._measured(metric)
        if pair is None:
            return None
        chosen, base = pair
        name, unit, scale = _METRIC_WORDS[metric]
        return (f"{name}: {_figure(chosen * scale)} {unit} vs {_figure(base * scale)} {unit} for the default "
                f"({_change(chosen, base, metric)})")

    def verdict(self) -> str:
        """One sentence: what was chosen (or that nothing was, or that the default stays) and why, with the
        figures against the default. A pure function of the result: the terminal summary's first line and
        the report's headline both show it.

        Example:
            >>> def trial(b, tps, p99): return {"config": {"batch_size": b}, "status": "ok", "metrics": {
            ...     "tokens_per_s": tps, "latency_p50_s": p99, "latency_p99_s": p99}}
            >>> default, chosen = trial(1, 300.0, 0.104), trial(8, 512.0, 0.281)
            >>> print(InferenceResult("pareto", [default, chosen], default, Selection(chosen, ""), [],
            ...                       tuning_s=42.0).verdict())  # doctest: +NORMALIZE_WHITESPACE
            Chose batch_size 1 → 8 (objective pareto): throughput 1.71x the default's, p99 latency 281 ms vs 104 ms
            (2.70x longer), in 2 trials / 42 s.
        """
        budget = f"in {len(self.trials)} trial{'s' if len(self.trials) != 1 else ''} / {_seconds(self.tuning_s)}"
        chosen = self.selection.trial
        if chosen is None:
            reason = self.selection.reason.rstrip(". ")
            return f"No choice: {reason} ({budget})."
        goal = self._goal()
        default_ok = self.default is not None and self.default.get("status") == "ok"
        if self._kept_default():
            others = len(self.ok_trials) - 1
            beaten = (f"none of the {others} other measured configuration{'s' if others != 1 else ''} did better"
                      if others > 0 else "no other configuration was measured successfully")
            return (f"Kept the default settings: {_config_text(chosen['config'])} ({goal}): {beaten}, "
                    f"{budget}.")
        base = self.default["config"] if self.default is not None else {}
        moved = [f"{k} {base[k]} → {v}" for k, v in chosen["config"].items() if k in base and base[k] != v]
        head = f"Chose {', '.join(moved) if moved else _config_text(chosen['config'])} ({goal})"
        if not default_ok:
            why = ("the default settings were not measured" if self.default is None
                   else f"the default settings failed ({self.default.get('status')})")
            m = chosen["metrics"]
            return (f"{head}: throughput {_figure(m['tokens_per_s'])} tok/s, p99 latency "
                    f"{_figure(m['latency_p99_s'] * 1e3)} ms; {why}, so there is nothing to compare with, "
                    f"{budget}.")
        parts = []
        tps = self._measured("tokens_per_s")
        if tps is not None:
            ratio = tps[0] / tps[1]
            parts.append("throughput the same as the default's" if abs(ratio - 1.0) <= _SAME
                         else f"throughput {ratio:.2f}x the default's")
        latencies = ("latency_p50_s", "latency_p99_s") if self.objective == "latency_p50" else ("latency_p99_s",)
        for metric in latencies:
            pair = self._measured(metric)
            if pair is not None:
                parts.append(f"{_METRIC_WORDS[metric][0]} {_figure(pair[0] * 1e3)} ms vs {_figure(pair[1] * 1e3)} ms "
                             f"({_change(pair[0], pair[1], metric)})")
        return f"{head}: {', '.join(parts) or 'no figures to compare with the default'}, {budget}."

    def _kept_default(self) -> bool:
        """The choice is the default settings (measured successfully)."""
        chosen, default = self.selection.trial, self.default
        return (chosen is not None and default is not None and default.get("status") == "ok"
                and dict(chosen["config"]) == dict(default["config"]))

    def _measured(self, metric: str) -> tuple[float, float] | None:
        """(the choice's, the default's) value of `metric`, when both were measured."""
        if self.selection.trial is None or self.default is None or self.default.get("status") != "ok":
            return None
        chosen, base = self.selection.trial["metrics"].get(metric), self.default["metrics"].get(metric)
        if chosen is None or base is None or base <= 0 or chosen <= 0:
            return None
        return float(chosen), float(base)

    def _goal(self) -> str:
        goal = [f"objective {self.objective}"]
        if self.options.get("slo_p99_s"):
            goal.append(f"p99 SLO {_figure(self.options['slo_p99_s'] * 1e3)} ms")
        if self.options.get("memory_cap_mb"):
            goal.append(f"memory cap {self.options['memory_cap_mb']:.0f} MB")
        return ", ".join(goal)

    def table(self) -> str:
        """The terminal summary: the verdict, one row per trial (marks: chosen, on the front), the choice
        against the default, and the selection's note."""
        lines = [self.verdict(),
                 f"AutoScout inference ({self.objective}): {len(self.trials)} trials in {self.tuning_s:.1f} s",
                 f"{'':4}{'config':70} {'status':8} {'tok/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'mem MB':>8}"]
        chosen = self.selection.trial
        front = {id(t) for t in self.front}
        for t in self.trials:
            m = t.get("metrics") or {}
            marks = ("*" if t is chosen else " ") + " " + ("f" if id(t) in front else " ")
            cfg = ", ".join(f"{k}={v}" for k, v in t["config"].items())
            if t["status"] == "ok":
                figures = (f"{m['tokens_per_s']:9.1f} {m['latency_p50_s'] * 1e3:8.1f} "
                           f"{m['latency_p99_s'] * 1e3:8.1f} {m.get('peak_mem_mb', float('nan')):8.0f}")
            else:
                figures = f"  {t.get('error') or ''}"[:60]
            lines.append(f"{marks} {cfg[:70]:70} {t['status']:8} {figures}")
        lines.append("marks: * chosen (first column), f on the latency/throughput front (second column: no other "
                     "trial beats it on both tok/s and p99)")
        if chosen is not None:
            if not self._kept_default():  # the default against itself says nothing; the verdict says it was kept
                lines += [c for c in map(self.comparison, ("tokens_per_s", "latency_p99_s")) if c is not None]
            lines.append(self.selection.reason)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"objective": self.objective, "kind": self.kind, "tuning_s": self.tuning_s, "options": self.options,
                "default": self.default, "chosen": self.selection.trial, "reason": self.selection.reason,
                "closest": self.selection.closest, "front": self.front, "trials": self.trials,
                "verdict": self.verdict(), "speedup_tokens_per_s": self.speedup("tokens_per_s"),
                "speedup_latency_p99": self.speedup("latency_p99_s")}
